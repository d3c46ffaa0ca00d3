//! Guards every action must pass: kill switch, dry-run, change freeze,
//! per-target cooldown across incidents, a cap on actions in flight, and a
//! blast-radius budget over a sliding window.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::playbook::PlannedAction;

/// A period during which automation may not act on its own (a big sale,
/// a release freeze): its actions wait for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    /// Start, `YYYY-MM-DD HH:MM[:SS]` UTC (or epoch seconds/ms).
    pub from: String,
    /// End, same format.
    pub to: String,
    /// Why, shown to the person who decides.
    pub reason: String,
}

/// Guard configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Record actions but never send them.
    #[serde(default)]
    pub dry_run: bool,
    /// While this file exists, no action is sent (`selfheal kill-switch`).
    #[serde(default)]
    pub kill_switch_file: Option<PathBuf>,
    /// Least time between actions on one target by different incidents, s.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: u64,
    /// Most actions in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Change freezes: automatic actions inside one need a person.
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// Window of the blast-radius budget, s.
    #[serde(default = "default_blast_window_s")]
    pub blast_window_s: u64,
    /// Most distinct targets automation may touch in the window.
    #[serde(default = "default_max_targets")]
    pub max_targets_per_window: usize,
    /// Most traffic automation may move in the window, in whole links'
    /// worth: each shifted link counts at the largest share it sent away in
    /// the window (1.0 is one full failover).
    #[serde(default = "default_max_shifted")]
    pub max_shifted_per_window: f64,
}

const fn default_cooldown_s() -> u64 {
    300
}
const fn default_max_in_flight() -> usize {
    4
}
const fn default_blast_window_s() -> u64 {
    600
}
const fn default_max_targets() -> usize {
    4
}
const fn default_max_shifted() -> f64 {
    2.0
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            dry_run: false,
            kill_switch_file: None,
            cooldown_s: default_cooldown_s(),
            max_in_flight: default_max_in_flight(),
            freeze: Vec::new(),
            blast_window_s: default_blast_window_s(),
            max_targets_per_window: default_max_targets(),
            max_shifted_per_window: default_max_shifted(),
        }
    }
}

impl GuardConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_in_flight == 0 {
            p.push("guard.max_in_flight: must be at least 1".into());
        }
        if self.max_targets_per_window == 0 {
            p.push("guard.max_targets_per_window: must be at least 1".into());
        }
        if !(self.max_shifted_per_window > 0.0 && self.max_shifted_per_window.is_finite()) {
            p.push("guard.max_shifted_per_window: must be > 0".into());
        }
        for (i, f) in self.freeze.iter().enumerate() {
            match (parse_timestamp(&f.from), parse_timestamp(&f.to)) {
                (Some(a), Some(b)) if a < b => {}
                (Some(_), Some(_)) => {
                    p.push(format!("guard.freeze[{i}]: `from` must be before `to`"))
                }
                (None, _) => p.push(format!(
                    "guard.freeze[{i}].from: {:?} is not `YYYY-MM-DD HH:MM[:SS]`",
                    f.from
                )),
                (_, None) => p.push(format!(
                    "guard.freeze[{i}].to: {:?} is not `YYYY-MM-DD HH:MM[:SS]`",
                    f.to
                )),
            }
        }
        p
    }
}

use selfheal_bus::time::parse_timestamp;

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
    /// Freeze windows, ms, with their reasons.
    freeze: Vec<(i64, i64, String)>,
    last: HashMap<String, (String, i64)>,
    in_flight: usize,
    /// Actions sent in the blast window: (time, target, traffic moved).
    recent: VecDeque<(i64, String, f64)>,
}

/// Traffic an action moves, in whole links' worth.
fn shifted(a: &PlannedAction) -> f64 {
    a.params
        .get("fraction")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}

impl Guards {
    /// Guards with `cfg` (validated: unreadable freeze windows are ignored).
    pub fn new(cfg: GuardConfig) -> Self {
        let freeze = cfg
            .freeze
            .iter()
            .filter_map(|f| {
                Some((
                    parse_timestamp(&f.from)?,
                    parse_timestamp(&f.to)?,
                    f.reason.clone(),
                ))
            })
            .collect();
        Guards {
            cfg,
            freeze,
            last: HashMap::new(),
            in_flight: 0,
            recent: VecDeque::new(),
        }
    }

    /// Decides on `action` by `incident` at event time `now`.
    pub fn check(&self, incident: &str, action: &PlannedAction, now: i64) -> Verdict {
        self.check_with(incident, action, now, false)
    }

    /// The change freeze in force at `now`, by its reason.
    pub fn frozen(&self, now: i64) -> Option<&str> {
        self.freeze
            .iter()
            .find(|(a, b, _)| (*a..*b).contains(&now))
            .map(|(_, _, why)| why.as_str())
    }

    /// [`Guards::check`], for a plan a person approved when `approved`: a
    /// change freeze does not hold it (every other guard does).
    pub fn check_with(
        &self,
        incident: &str,
        action: &PlannedAction,
        now: i64,
        approved: bool,
    ) -> Verdict {
        let target = action.target.as_str();
        if let Some(f) = &self.cfg.kill_switch_file
            && f.exists()
        {
            return Verdict::Refuse(format!("kill switch engaged ({})", f.display()));
        }
        if self.cfg.dry_run {
            return Verdict::DryRun;
        }
        if !approved && let Some(why) = self.frozen(now) {
            return Verdict::Refuse(format!(
                "change freeze ({why}): automatic actions need a person's approval"
            ));
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
        let since = now - (self.cfg.blast_window_s * 1000) as i64;
        let window: Vec<_> = self.recent.iter().filter(|(t, _, _)| *t > since).collect();
        let mut targets: Vec<&str> = window.iter().map(|(_, t, _)| t.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.contains(&target) && targets.len() >= self.cfg.max_targets_per_window {
            return Verdict::Refuse(format!(
                "blast radius: automation already touched {} targets in {}s ({}); {target} would exceed the budget of {}",
                targets.len(),
                self.cfg.blast_window_s,
                targets.join(", "),
                self.cfg.max_targets_per_window
            ));
        }
        // A shift sets the share of a link's traffic sent away, so a link
        // counts once, at its largest share in the window.
        let mut share: HashMap<&str, f64> = HashMap::new();
        for (_, t, f) in &window {
            let e = share.entry(t.as_str()).or_default();
            *e = e.max(*f);
        }
        let moved: f64 = share.values().sum();
        let more = shifted(action);
        let before = share.get(target).copied().unwrap_or(0.0);
        let after = moved - before + before.max(more);
        if more > 0.0 && after > self.cfg.max_shifted_per_window + 1e-9 {
            return Verdict::Refuse(format!(
                "blast radius: automation already moved {moved:.2} links' worth of traffic in {}s; shifting {more:.2} of {target} would exceed the budget of {:.2}",
                self.cfg.blast_window_s, self.cfg.max_shifted_per_window
            ));
        }
        Verdict::Allow
    }

    /// Notes `action` sent by `incident`.
    pub fn sent(&mut self, incident: &str, action: &PlannedAction, now: i64) {
        self.last
            .insert(action.target.clone(), (incident.to_string(), now));
        self.in_flight += 1;
        let since = now - (self.cfg.blast_window_s * 1000) as i64;
        while self.recent.front().is_some_and(|(t, _, _)| *t <= since) {
            self.recent.pop_front();
        }
        self.recent
            .push_back((now, action.target.clone(), shifted(action)));
    }

    /// Notes an action found in the store at start (sent, or about to be,
    /// by an earlier run), so that the cooldown spans a restart.
    pub fn seed(&mut self, incident: &str, target: &str, ts: i64) {
        let newer = self.last.get(target).is_none_or(|(_, at)| *at <= ts);
        if newer {
            self.last
                .insert(target.to_string(), (incident.to_string(), ts));
        }
    }

    /// Notes an action re-sent at start (it counts as in flight).
    pub fn resent(&mut self) {
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
    use selfheal_bus::ActionKind;

    pub(super) fn act(target: &str, fraction: Option<f64>) -> PlannedAction {
        let mut params = std::collections::BTreeMap::new();
        if let Some(f) = fraction {
            params.insert("fraction".into(), serde_json::Value::from(f));
        }
        PlannedAction {
            kind: if fraction.is_some() {
                ActionKind::ShiftTraffic
            } else {
                ActionKind::Restart
            },
            service: "channel-router".into(),
            target: target.into(),
            params,
        }
    }

    fn refused(v: Verdict, why: &str) -> bool {
        matches!(v, Verdict::Refuse(r) if r.contains(why))
    }

    #[test]
    fn cooldown_dry_run_kill_switch_and_cap() {
        let mut g = Guards::new(GuardConfig {
            cooldown_s: 60,
            max_in_flight: 1,
            ..GuardConfig::default()
        });
        let a = act("bank-a", None);
        assert_eq!(g.check("a", &a, 0), Verdict::Allow);
        g.sent("a", &a, 0);
        assert!(refused(g.check("b", &act("bank-c", None), 1), "in flight"));
        g.answered();
        assert_eq!(
            g.check("a", &a, 1_000),
            Verdict::Allow,
            "its own incident steps on"
        );
        assert!(refused(g.check("b", &a, 59_000), "cooldown"));
        assert_eq!(g.check("b", &a, 60_000), Verdict::Allow);

        let dir = tempfile::tempdir().unwrap();
        let kill = dir.path().join("KILL");
        let g = Guards::new(GuardConfig {
            kill_switch_file: Some(kill.clone()),
            ..GuardConfig::default()
        });
        assert_eq!(g.check("a", &a, 0), Verdict::Allow);
        std::fs::write(&kill, "").unwrap();
        assert!(refused(g.check("a", &a, 0), "kill switch"));
        let g = Guards::new(GuardConfig {
            dry_run: true,
            ..GuardConfig::default()
        });
        assert_eq!(g.check("a", &a, 0), Verdict::DryRun);
    }

    #[test]
    fn a_change_freeze_sends_actions_to_a_person() {
        let cfg = GuardConfig {
            freeze: vec![FreezeWindow {
                from: "2026-11-10 16:00".into(),
                to: "2026-11-12 02:00".into(),
                reason: "Singles' Day".into(),
            }],
            ..GuardConfig::default()
        };
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let g = Guards::new(cfg);
        let at = |s: &str| parse_timestamp(s).unwrap();
        let a = act("bank-a", Some(0.5));
        assert_eq!(g.check("i", &a, at("2026-11-10 15:59:59")), Verdict::Allow);
        assert!(refused(
            g.check("i", &a, at("2026-11-11 09:00")),
            "change freeze (Singles' Day)"
        ));
        assert_eq!(g.check("i", &a, at("2026-11-12 02:00")), Verdict::Allow);
    }

    #[test]
    fn the_blast_radius_budget_caps_targets_and_traffic_moved_per_window() {
        let mut g = Guards::new(GuardConfig {
            cooldown_s: 0,
            max_in_flight: 100,
            blast_window_s: 600,
            max_targets_per_window: 2,
            max_shifted_per_window: 1.0,
            ..GuardConfig::default()
        });
        // A stepped failover of one link (1/8, 1/2, all) counts once, as 1.0.
        for (t, f) in [(0, 0.125), (5_000, 0.5), (10_000, 1.0)] {
            let a = act("bank-a", Some(f));
            assert_eq!(g.check("i", &a, t), Verdict::Allow, "at {t}");
            g.sent("i", &a, t);
        }
        // Any more traffic moved in the window is over budget.
        assert!(refused(
            g.check("j", &act("bank-b", Some(0.1)), 20_000),
            "moved 1.00"
        ));
        // A second target (no traffic) fits; a third does not.
        let r = act("payment-engine-idc1-2", None);
        assert_eq!(g.check("j", &r, 20_000), Verdict::Allow);
        g.sent("j", &r, 20_000);
        assert!(refused(
            g.check("k", &act("cashier-idc1-1", None), 30_000),
            "touched 2 targets"
        ));
        // The window slides: ten minutes later the budget is back.
        assert_eq!(
            g.check("k", &act("cashier-idc1-1", None), 620_001),
            Verdict::Allow
        );
        assert_eq!(
            g.check("k", &act("bank-b", Some(1.0)), 620_001),
            Verdict::Allow
        );
    }

    #[test]
    fn bad_guard_settings_are_named() {
        let cfg = GuardConfig {
            max_in_flight: 0,
            max_shifted_per_window: f64::NAN,
            freeze: vec![
                FreezeWindow {
                    from: "soon".into(),
                    to: "2026-01-01 00:00".into(),
                    reason: "x".into(),
                },
                FreezeWindow {
                    from: "2026-01-02 00:00".into(),
                    to: "2026-01-01 00:00".into(),
                    reason: "y".into(),
                },
            ],
            ..GuardConfig::default()
        };
        let p = cfg.validate().join("\n");
        for key in [
            "guard.max_in_flight",
            "guard.max_shifted_per_window",
            "guard.freeze[0].from",
            "guard.freeze[1]: `from` must be before `to`",
        ] {
            assert!(p.contains(key), "{key} missing in {p}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One attempt: (incident, target, fraction moved, seconds after the
    /// previous attempt, answered before it).
    fn attempts() -> impl Strategy<Value = Vec<(u8, u8, Option<f64>, u16, bool)>> {
        proptest::collection::vec(
            (
                0u8..4,
                0u8..8,
                proptest::option::of(0.0f64..1.0),
                0u16..400,
                any::<bool>(),
            ),
            1..60,
        )
    }

    fn action(target: u8, fraction: Option<f64>) -> PlannedAction {
        super::tests::act(&format!("t{target}"), fraction)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the sequence, what the guards allow keeps every
        /// budget: no more targets or traffic in a window than configured,
        /// no target acted on by two incidents within the cooldown, never
        /// more actions in flight than the cap.
        #[test]
        fn allowed_actions_keep_every_budget(seq in attempts(), max_targets in 1usize..5, max_in_flight in 1usize..5) {
            let cfg = GuardConfig {
                max_targets_per_window: max_targets,
                max_in_flight,
                ..GuardConfig::default()
            };
            let (window, cool) = ((cfg.blast_window_s * 1000) as i64, (cfg.cooldown_s * 1000) as i64);
            let mut g = Guards::new(cfg.clone());
            let mut now = 0i64;
            let mut in_flight = 0usize;
            let mut allowed: Vec<(i64, u8, String, f64)> = Vec::new();
            for (inc, target, fraction, dt, answer) in seq {
                now += dt as i64 * 1000;
                if answer && in_flight > 0 {
                    g.answered();
                    in_flight -= 1;
                }
                let a = action(target, fraction);
                let incident = format!("inc-{inc}");
                if g.check(&incident, &a, now) == Verdict::Allow {
                    g.sent(&incident, &a, now);
                    in_flight += 1;
                    allowed.push((now, inc, a.target.clone(), fraction.unwrap_or(0.0)));
                }
                prop_assert!(in_flight <= max_in_flight, "in flight {in_flight}");
            }
            for (i, (t, inc, target, _)) in allowed.iter().enumerate() {
                let recent: Vec<_> = allowed[..=i].iter().filter(|x| x.0 > t - window).collect();
                let mut targets: Vec<&str> = recent.iter().map(|x| x.2.as_str()).collect();
                targets.sort_unstable();
                targets.dedup();
                prop_assert!(targets.len() <= max_targets, "targets {targets:?} at {t}");
                let mut moved = std::collections::HashMap::<&str, f64>::new();
                for x in &recent {
                    let e = moved.entry(x.2.as_str()).or_default();
                    *e = e.max(x.3);
                }
                let total: f64 = moved.values().sum();
                prop_assert!(total <= cfg.max_shifted_per_window + 1e-9, "moved {total}");
                for (t2, inc2, target2, _) in &allowed[..i] {
                    if target2 == target && inc2 != inc {
                        prop_assert!(t - t2 >= cool, "{target} by two incidents {}s apart", (t - t2) / 1000);
                    }
                }
            }
        }
    }
}
