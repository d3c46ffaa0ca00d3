//! A stack drill scenario (`sim/stack/*.toml`): the load, when the fault
//! comes, what it is, and what healing it should take.

use serde::{Deserialize, Serialize};

/// One scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackScenario {
    /// Its name.
    pub name: String,
    /// What it rehearses.
    #[serde(default)]
    pub description: String,
    /// Payments a second through the load balancer.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// A payment slower than this, ms, failed in the customer's eyes.
    #[serde(default = "default_slo_ms")]
    pub slo_ms: u64,
    /// Healthy load before the fault (the detectors learn it), s.
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
    /// How long after the fault the drill waits for healing, s (a control
    /// run lasts this long after its warm-up).
    #[serde(default = "default_heal_within_s")]
    pub heal_within_s: u64,
    /// How long every payment must succeed for the fault to count as
    /// healed, s.
    #[serde(default = "default_settle_s")]
    pub settle_s: u64,
    /// The fault (none: a control run).
    #[serde(default)]
    pub fault: Option<StackFault>,
    /// What healing it takes.
    #[serde(default)]
    pub expect: Expect,
}

/// A fault to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StackFault {
    /// `target` fails a `share` of its payments.
    Errors {
        /// The instance.
        target: String,
        /// Share failing, 0 to 1.
        share: f64,
    },
    /// `target` answers `ms` later.
    Latency {
        /// The instance.
        target: String,
        /// Extra wait, ms.
        ms: u64,
    },
    /// `target` burns `ms` of CPU per payment.
    Burn {
        /// The instance.
        target: String,
        /// CPU per payment, ms.
        ms: u64,
    },
    /// `target`'s process exits.
    Crash {
        /// The instance.
        target: String,
    },
    /// The deploy system pushes a configuration that does not work to
    /// every instance (and tells the brain, as it does of every push).
    BadConfig {
        /// The pushed version.
        version: i64,
    },
}

/// What healing a scenario should take.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The kind of the action that heals it (`shift_traffic`, `restart`,
    /// `revert_config`...); none for a control run.
    #[serde(default)]
    pub action: Option<String>,
    /// The most seconds, wall clock, from the fault to the customers'
    /// recovery.
    #[serde(default = "default_mttr_s")]
    pub mttr_s: f64,
}

const fn default_rate() -> f64 {
    40.0
}
const fn default_slo_ms() -> u64 {
    250
}
const fn default_warmup_s() -> u64 {
    30
}
const fn default_heal_within_s() -> u64 {
    60
}
const fn default_settle_s() -> u64 {
    10
}
const fn default_mttr_s() -> f64 {
    30.0
}

impl StackScenario {
    /// Parses and checks one scenario.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s: StackScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut p = Vec::new();
        if !(1.0..=500.0).contains(&s.rate) {
            p.push("rate: must be 1 to 500 payments a second".to_string());
        }
        if s.warmup_s < 10 {
            p.push("warmup_s: must be at least 10 (the detectors learn first)".into());
        }
        if s.settle_s == 0 || s.settle_s >= s.heal_within_s {
            p.push("settle_s: must be at least 1 and under heal_within_s".into());
        }
        if let Some(StackFault::Errors { share, .. }) = &s.fault
            && !(0.0..=1.0).contains(share)
        {
            p.push("fault.share: must be in [0, 1]".into());
        }
        if s.fault.is_none() && s.expect.action.is_some() {
            p.push("expect.action: a control run expects no action".into());
        }
        if p.is_empty() {
            Ok(s)
        } else {
            Err(p.join("; "))
        }
    }

    /// The instance the fault is in, when it is in one.
    pub fn target(&self) -> Option<&str> {
        match self.fault.as_ref()? {
            StackFault::Errors { target, .. }
            | StackFault::Latency { target, .. }
            | StackFault::Burn { target, .. }
            | StackFault::Crash { target } => Some(target),
            StackFault::BadConfig { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shipped_scenario_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/stack");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml")
                && p.file_name().unwrap() != "topology.toml"
            {
                let text = std::fs::read_to_string(&p).unwrap();
                super::StackScenario::parse(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "{n} scenarios");
        assert!(super::StackScenario::parse("name = \"x\"\nrate = 0.0").is_err());
    }
}
