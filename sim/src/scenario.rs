//! Scenario files: what a run looks like and what a good brain should do.

use serde::{Deserialize, Serialize};

/// The faults the platform can suffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A bank channel answers slowly and declines many payments.
    ChannelDegradation,
}

/// One fault to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What kind.
    pub kind: FaultKind,
    /// Which service (for a channel degradation: the channel).
    pub target: String,
    /// Seconds after the start of the run.
    pub start_s: u64,
    /// How long it lasts if nobody intervenes; forever when absent.
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// Success rate of the degraded channel.
    #[serde(default = "default_success")]
    pub success: f64,
    /// p99 latency of the degraded channel, ms.
    #[serde(default = "default_latency")]
    pub latency_ms: f64,
}

const fn default_success() -> f64 {
    0.55
}
const fn default_latency() -> f64 {
    900.0
}
const fn default_tick_ms() -> u64 {
    1000
}

/// What a drill expects the brain to conclude and do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The cause kind of the top hypothesis.
    pub cause: String,
    /// The service it blames.
    pub target: String,
    /// The action kind that cures it.
    pub action: String,
}

/// A scenario file (TOML; see docs/scenarios.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of every random draw of the run.
    pub seed: u64,
    /// Length of the run in platform seconds.
    pub duration_s: u64,
    /// Platform time per tick, ms.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Faults to inject.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Expected diagnosis and cure; absent on control runs.
    #[serde(default)]
    pub expect: Option<Expect>,
}

impl Scenario {
    /// Parses a scenario and checks it, reporting every problem at once.
    pub fn parse(text: &str, topology: &selfheal_bus::Topology) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        if s.duration_s == 0 {
            problems.push("duration_s: must be > 0".to_string());
        }
        if s.tick_ms == 0 || s.tick_ms > 60_000 {
            problems.push("tick_ms: must be in 1..=60000".to_string());
        }
        for (i, f) in s.faults.iter().enumerate() {
            match topology.service(&f.target) {
                None => problems.push(format!(
                    "faults[{i}].target: unknown service {:?}",
                    f.target
                )),
                Some(svc)
                    if f.kind == FaultKind::ChannelDegradation
                        && svc.kind != selfheal_bus::topology::ServiceKind::Channel =>
                {
                    problems.push(format!(
                        "faults[{i}].target: {:?} is not a channel",
                        f.target
                    ))
                }
                _ => {}
            }
            if f.start_s >= s.duration_s {
                problems.push(format!("faults[{i}].start_s: after the end of the run"));
            }
            if !(0.0..=1.0).contains(&f.success) {
                problems.push(format!("faults[{i}].success: must be in [0,1]"));
            }
            if !(f.latency_ms.is_finite() && f.latency_ms > 0.0) {
                problems.push(format!("faults[{i}].latency_ms: must be > 0"));
            }
        }
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The shipped bank-channel degradation scenario.
    pub fn channel_degradation() -> Self {
        Self::builtin(include_str!("../scenarios/channel_degradation.toml"))
    }

    /// The shipped control scenario (no fault).
    pub fn control() -> Self {
        Self::builtin(include_str!("../scenarios/control.toml"))
    }

    fn builtin(text: &str) -> Self {
        // Both embedded files are checked by a unit test.
        Scenario::parse(text, &crate::default_topology()).expect("embedded scenario is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_scenarios_parse_and_bad_ones_say_why() {
        assert_eq!(Scenario::channel_degradation().faults.len(), 1);
        assert!(Scenario::control().faults.is_empty());
        let bad = "name='x'\nseed=1\nduration_s=10\n[[faults]]\nkind='channel_degradation'\ntarget='cashier'\nstart_s=20\nsuccess=2.0";
        let err = Scenario::parse(bad, &crate::default_topology()).unwrap_err();
        assert!(
            err.contains("not a channel") && err.contains("start_s") && err.contains("success"),
            "{err}"
        );
        assert!(
            Scenario::parse(
                "name='x'\nseed=1\nduration_s=10\nbogus=1",
                &crate::default_topology()
            )
            .is_err()
        );
    }
}
