//! Scenario files: what a run looks like and what a good brain should do.
//! Format: docs/scenarios.md.

use serde::{Deserialize, Serialize};

use selfheal_bus::{Topology, topology::ServiceKind};

/// The fault catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A deploy that makes a service fail (cure: roll it back).
    BadDeploy,
    /// A configuration push that makes a service slow and fail (cure: revert it).
    ConfigMistake,
    /// A surge of traffic on one item of a scene (cure: throttle that item).
    HotItemSurge,
    /// Lock contention on one hot account in the accounting core (cure: isolate it).
    HotAccountContention,
    /// A bank channel declines and slows (cure: fail over to its backup, in steps).
    ChannelDegradation,
    /// The database slows and the accounting core's connection pool runs dry
    /// (cure: degrade a non-critical scene, or throttle).
    SlowDatabase,
    /// One instance's host is saturated (cure: restart or move the instance).
    SaturatedHost,
    /// An IDC's network fails (cure: shift its traffic to the other IDC).
    IdcNetworkFailure,
    /// One client floods a scene with bad requests (cure: block it).
    AbusiveClient,
    /// Duplicate, concurrent requests for one key (cure: throttle that key).
    RequestStorm,
}

impl FaultKind {
    /// Every fault kind.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::BadDeploy,
        FaultKind::ConfigMistake,
        FaultKind::HotItemSurge,
        FaultKind::HotAccountContention,
        FaultKind::ChannelDegradation,
        FaultKind::SlowDatabase,
        FaultKind::SaturatedHost,
        FaultKind::IdcNetworkFailure,
        FaultKind::AbusiveClient,
        FaultKind::RequestStorm,
    ];

    /// How strong it is unless the scenario says otherwise.
    pub const fn default_magnitude(self) -> f64 {
        match self {
            FaultKind::BadDeploy => 0.25,
            FaultKind::ConfigMistake => 6.0,
            FaultKind::HotItemSurge => 4.0,
            FaultKind::HotAccountContention => 5.0,
            FaultKind::ChannelDegradation => 0.55,
            FaultKind::SlowDatabase => 8.0,
            FaultKind::SaturatedHost => 10.0,
            FaultKind::IdcNetworkFailure => 0.5,
            FaultKind::AbusiveClient => 1.0,
            FaultKind::RequestStorm => 1.5,
        }
    }

    /// Whether the fault needs a `key` (item, account, client, order, instance).
    pub const fn needs_key(self) -> bool {
        matches!(
            self,
            FaultKind::HotItemSurge
                | FaultKind::HotAccountContention
                | FaultKind::SaturatedHost
                | FaultKind::AbusiveClient
                | FaultKind::RequestStorm
        )
    }
}

/// One fault to inject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What kind.
    pub kind: FaultKind,
    /// Where: a service (deploy, config, host, channel, database, account
    /// contention), a scene (surge, abuse, storm) or an IDC (network).
    pub target: String,
    /// Seconds after the start of the run.
    pub start_s: u64,
    /// How long it lasts if nobody intervenes; forever when absent.
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// The hot item, account, client IP or order key; the instance for a
    /// saturated host.
    #[serde(default)]
    pub key: Option<String>,
    /// Strength; each kind has a default (see docs/scenarios.md).
    #[serde(default)]
    pub magnitude: Option<f64>,
    /// Channel degradation: success rate of the degraded channel.
    #[serde(default)]
    pub success: Option<f64>,
    /// Channel degradation: its p99 latency, ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Channel degradation: the share of the payments the channel accepts
    /// while degraded whose posting never reaches the ledger (the bank
    /// answered, its callback was lost). Seen in the scenes' counters
    /// when the scenario publishes them (`ledger = true`).
    #[serde(default)]
    pub postings_lost: Option<f64>,
}

impl FaultSpec {
    /// The magnitude in force.
    pub fn magnitude(&self) -> f64 {
        self.magnitude.unwrap_or(self.kind.default_magnitude())
    }
}

/// Benign events: a good brain leaves them alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Planned traffic peak (a sale): demand × `multiplier`.
    PlannedPeak,
    /// A deploy that changes nothing visible.
    HealthyDeploy,
    /// A feature flag flip that changes nothing visible.
    FeatureFlag,
    /// The nightly batch: the database is a little slower for a while.
    NightlyBatch,
}

/// One benign event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// What kind.
    pub kind: EventKind,
    /// Seconds after the start of the run.
    pub start_s: u64,
    /// How long (peaks, batches).
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// The service (deploys, flags).
    #[serde(default)]
    pub target: Option<String>,
    /// Demand multiplier (peaks).
    #[serde(default)]
    pub multiplier: Option<f64>,
}

/// The traffic profile of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Demand multiplier over the whole run (a big-sale day is > 1).
    #[serde(default = "one")]
    pub multiplier: f64,
    /// Relative noise of demand per tick.
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Hour of the day the run starts at, for daily seasonality.
    #[serde(default = "default_hour")]
    pub start_hour: f64,
}

const fn one() -> f64 {
    1.0
}
const fn default_noise() -> f64 {
    0.02
}
const fn default_hour() -> f64 {
    14.0
}
const fn default_tick_ms() -> u64 {
    1000
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            multiplier: 1.0,
            noise: default_noise(),
            start_hour: default_hour(),
        }
    }
}

/// What a drill expects the brain to conclude and do, for one fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The cause kind of the top hypothesis.
    pub cause: String,
    /// The service (or scene, IDC) it blames.
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
    /// What it tests, for people.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw of the run.
    pub seed: u64,
    /// Length of the run in platform seconds.
    pub duration_s: u64,
    /// Platform time per tick, ms.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Traffic profile.
    #[serde(default)]
    pub traffic: Traffic,
    /// Faults to inject.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Benign events.
    #[serde(default)]
    pub events: Vec<EventSpec>,
    /// Expected diagnosis and cure, one per fault; empty on control runs.
    #[serde(default)]
    pub expect: Vec<Expect>,
    /// Whether each scene also publishes its business counters, per
    /// second: `payments_accepted` and `ledger_postings` (for the brain's
    /// reconciliation after repair). Off by default.
    #[serde(default)]
    pub ledger: bool,
}

impl Scenario {
    /// Whether it is a control run (no fault).
    pub fn is_control(&self) -> bool {
        self.faults.is_empty()
    }

    /// Parses a scenario and checks it, reporting every problem at once,
    /// each with its key.
    pub fn parse(text: &str, topology: &Topology) -> Result<Self, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let problems = s.validate(topology);
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Every problem with the scenario.
    pub fn validate(&self, topo: &Topology) -> Vec<String> {
        let mut p = Vec::new();
        if self.duration_s == 0 {
            p.push("duration_s: must be > 0".to_string());
        }
        if self.tick_ms == 0 || self.tick_ms > 60_000 {
            p.push("tick_ms: must be in 1..=60000".to_string());
        }
        if !(self.traffic.multiplier > 0.0 && self.traffic.multiplier <= 10.0) {
            p.push("traffic.multiplier: must be in (0,10]".into());
        }
        if !(0.0..=0.5).contains(&self.traffic.noise) {
            p.push("traffic.noise: must be in [0,0.5]".into());
        }
        if !(0.0..24.0).contains(&self.traffic.start_hour) {
            p.push("traffic.start_hour: must be in [0,24)".into());
        }
        let svc = |n: &str| topo.service(n);
        let scene = |n: &str| topo.scenes.iter().any(|s| s.name == n);
        let idc = |n: &str| topo.idcs.iter().any(|s| s.name == n);
        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("faults[{i}]");
            let target_ok = match f.kind {
                FaultKind::ChannelDegradation => {
                    svc(&f.target).is_some_and(|s| s.kind == ServiceKind::Channel)
                }
                FaultKind::SlowDatabase => {
                    svc(&f.target).is_some_and(|s| s.kind == ServiceKind::Database)
                }
                FaultKind::HotItemSurge | FaultKind::AbusiveClient | FaultKind::RequestStorm => {
                    scene(&f.target)
                }
                FaultKind::IdcNetworkFailure => idc(&f.target),
                _ => svc(&f.target).is_some_and(|s| s.kind == ServiceKind::App),
            };
            if !target_ok {
                p.push(format!(
                    "{at}.target: {:?} is not a valid target for {:?}",
                    f.target, f.kind
                ));
            }
            if f.start_s >= self.duration_s {
                p.push(format!("{at}.start_s: after the end of the run"));
            }
            if f.kind.needs_key()
                && f.key
                    .as_deref()
                    .is_none_or(|k| !selfheal_bus::message::valid_key(k))
            {
                p.push(format!(
                    "{at}.key: {:?} needs a key of [A-Za-z0-9_:/.@-]",
                    f.kind
                ));
            }
            if let Some(m) = f.magnitude
                && !(m.is_finite() && m > 0.0)
            {
                p.push(format!("{at}.magnitude: must be > 0"));
            }
            if let Some(s) = f.success
                && !(0.0..=1.0).contains(&s)
            {
                p.push(format!("{at}.success: must be in [0,1]"));
            }
            if let Some(l) = f.latency_ms
                && !(l.is_finite() && l > 0.0)
            {
                p.push(format!("{at}.latency_ms: must be > 0"));
            }
            if let Some(x) = f.postings_lost
                && (!(0.0..=1.0).contains(&x) || f.kind != FaultKind::ChannelDegradation)
            {
                p.push(format!(
                    "{at}.postings_lost: a share in [0,1], for a channel_degradation"
                ));
            }
        }
        for (i, e) in self.events.iter().enumerate() {
            let at = format!("events[{i}]");
            if e.start_s >= self.duration_s {
                p.push(format!("{at}.start_s: after the end of the run"));
            }
            match e.kind {
                EventKind::PlannedPeak => {
                    if e.multiplier.is_none_or(|m| !(m > 0.0 && m <= 5.0)) {
                        p.push(format!(
                            "{at}.multiplier: a planned peak needs one in (0,5]"
                        ));
                    }
                }
                EventKind::HealthyDeploy | EventKind::FeatureFlag => {
                    if e.target.as_deref().is_none_or(|t| svc(t).is_none()) {
                        p.push(format!("{at}.target: needs a known service"));
                    }
                }
                EventKind::NightlyBatch => {}
            }
        }
        if !self.faults.is_empty() && self.expect.is_empty() {
            p.push("expect: a run with faults says what a good brain concludes and does".into());
        }
        if self.faults.is_empty() && !self.expect.is_empty() {
            p.push("expect: a control run expects nothing".into());
        }
        p
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
    fn every_shipped_scenario_parses_and_the_catalogue_is_covered() {
        let topo = crate::default_topology();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut kinds = std::collections::BTreeSet::new();
        let (mut n, mut control, mut overlapping) = (0, 0, 0);
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            // (`micro/` holds the generic world's scenarios.)
            if path.extension().is_none_or(|x| x != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let s =
                Scenario::parse(&text, &topo).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
            control += s.is_control() as usize;
            overlapping += (s.faults.len() > 1) as usize;
            kinds.extend(s.faults.iter().map(|f| f.kind));
        }
        assert!(n >= 20, "{n} scenarios");
        assert!(control >= 5, "{control} control runs");
        assert!(overlapping >= 2, "{overlapping} with overlapping faults");
        assert_eq!(
            kinds.len(),
            FaultKind::ALL.len(),
            "every fault class is covered: {kinds:?}"
        );
    }

    #[test]
    fn a_bad_file_gives_every_error_at_once() {
        let topo = crate::default_topology();
        let bad = "name='x'\nseed=1\nduration_s=10\n[traffic]\nnoise=0.9\n\
                   [[faults]]\nkind='channel_degradation'\ntarget='cashier'\nstart_s=20\nsuccess=2.0\n\
                   [[faults]]\nkind='hot_item_surge'\ntarget='checkout'\nstart_s=1\n\
                   [[events]]\nkind='planned_peak'\nstart_s=1\n";
        let err = Scenario::parse(bad, &topo).unwrap_err();
        for key in [
            "traffic.noise",
            "faults[0].target",
            "faults[0].start_s",
            "faults[0].success",
            "faults[1].key",
            "events[0].multiplier",
            "expect",
        ] {
            assert!(err.contains(key), "{key} missing from:\n{err}");
        }
        let err = Scenario::parse("name='x'\nseed=1\nduration_s=10\nbogus=1", &topo).unwrap_err();
        assert!(err.contains("bogus"), "{err}");
    }
}
