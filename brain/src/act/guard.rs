//! Guards every action must pass: kill switch, dry-run, per-target cooldown
//! across incidents, and a cap on actions in flight.

use std::{collections::HashMap, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Guard configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Record actions but never send them.
    #[serde(default)]
    pub dry_run: bool,
    /// While this file exists, no action is sent.
    #[serde(default)]
    pub kill_switch_file: Option<PathBuf>,
    /// Least time between actions on one target by different incidents, s.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: u64,
    /// Most actions in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

const fn default_cooldown_s() -> u64 {
    300
}
const fn default_max_in_flight() -> usize {
    4
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            dry_run: false,
            kill_switch_file: None,
            cooldown_s: default_cooldown_s(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

/// A guard's decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Send it.
    Allow,
    /// Record it, do not send it.
    DryRun,
    /// Do not send it, for this reason.
    Refuse(String),
}

/// Guard state.
pub struct Guards {
    cfg: GuardConfig,
    last: HashMap<String, (String, i64)>,
    in_flight: usize,
}

impl Guards {
    /// Guards with `cfg`.
    pub fn new(cfg: GuardConfig) -> Self {
        Guards {
            cfg,
            last: HashMap::new(),
            in_flight: 0,
        }
    }

    /// Decides on an action by `incident` on `target` at event time `now`.
    pub fn check(&self, incident: &str, target: &str, now: i64) -> Verdict {
        if let Some(f) = &self.cfg.kill_switch_file
            && f.exists()
        {
            return Verdict::Refuse(format!("kill switch engaged ({})", f.display()));
        }
        if self.cfg.dry_run {
            return Verdict::DryRun;
        }
        if let Some((by, at)) = self.last.get(target) {
            let cool = (self.cfg.cooldown_s * 1000) as i64;
            if by != incident && now - at < cool {
                return Verdict::Refuse(format!(
                    "cooldown: {target} was acted on by {by} {}s ago (cooldown {}s)",
                    (now - at) / 1000,
                    self.cfg.cooldown_s
                ));
            }
        }
        if self.in_flight >= self.cfg.max_in_flight {
            return Verdict::Refuse(format!("{} actions already in flight", self.in_flight));
        }
        Verdict::Allow
    }

    /// Notes an action sent.
    pub fn sent(&mut self, incident: &str, target: &str, now: i64) {
        self.last
            .insert(target.to_string(), (incident.to_string(), now));
        self.in_flight += 1;
    }

    /// Notes an action answered.
    pub fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_dry_run_kill_switch_and_cap() {
        let mut g = Guards::new(GuardConfig {
            cooldown_s: 60,
            max_in_flight: 1,
            ..GuardConfig::default()
        });
        assert_eq!(g.check("a", "bank-a", 0), Verdict::Allow);
        g.sent("a", "bank-a", 0);
        assert!(matches!(g.check("b", "bank-c", 1), Verdict::Refuse(r) if r.contains("in flight")));
        g.answered();
        assert_eq!(
            g.check("a", "bank-a", 1_000),
            Verdict::Allow,
            "its own incident steps on"
        );
        assert!(
            matches!(g.check("b", "bank-a", 59_000), Verdict::Refuse(r) if r.contains("cooldown"))
        );
        assert_eq!(g.check("b", "bank-a", 60_000), Verdict::Allow);

        let dir = tempfile::tempdir().unwrap();
        let kill = dir.path().join("KILL");
        let g = Guards::new(GuardConfig {
            kill_switch_file: Some(kill.clone()),
            ..GuardConfig::default()
        });
        assert_eq!(g.check("a", "x", 0), Verdict::Allow);
        std::fs::write(&kill, "").unwrap();
        assert!(matches!(g.check("a", "x", 0), Verdict::Refuse(r) if r.contains("kill switch")));
        let g = Guards::new(GuardConfig {
            dry_run: true,
            ..GuardConfig::default()
        });
        assert_eq!(g.check("a", "x", 0), Verdict::DryRun);
    }
}
