//! The platform model: traffic through scenes, links and channels; faults;
//! the effect of actions; and the ground truth.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use selfheal_bus::{
    ActionKind, Layer, Topology,
    topology::{Scene, ServiceKind},
};
use serde::Serialize;

use crate::{
    feed::{Command, Frame, FrameSample},
    scenario::{FaultKind, FaultSpec},
};

/// Normal health of one channel.
#[derive(Clone, Debug)]
struct Channel {
    name: String,
    base_success: f64,
    base_latency_ms: f64,
    /// Payments per second it can take before it starts declining.
    capacity_tps: f64,
    degraded: Option<(f64, f64)>,
}

/// Normal health of one application service.
#[derive(Clone, Debug)]
struct App {
    name: String,
    success: f64,
    latency_ms: f64,
    capacity_tps: f64,
}

/// An action the platform applied, as recorded in the ground truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppliedAction {
    /// Platform time, ms.
    pub ts: i64,
    /// Idempotency key.
    pub key: String,
    /// Kind.
    pub kind: ActionKind,
    /// Target.
    pub target: String,
    /// What it did.
    pub detail: String,
}

/// A fault as it happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultWindow {
    /// Kind.
    pub kind: FaultKind,
    /// Target.
    pub target: String,
    /// Start, platform ms.
    pub start_ms: i64,
    /// End, platform ms, if it ended on its own.
    pub end_ms: Option<i64>,
}

/// What really happened in a run, for scoring.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Truth {
    /// Faults, in order of start.
    pub faults: Vec<FaultWindow>,
    /// Actions applied, in order.
    pub actions: Vec<AppliedAction>,
    /// Payments attempted, whole run.
    pub attempted: f64,
    /// Payments failed, whole run (business loss).
    pub failed: f64,
    /// Payments failed while some scene was below its SLO.
    pub failed_in_breach: f64,
    /// When the platform was first back within SLO (every scene, over a
    /// 10-tick window) after the first fault began.
    pub recovered_ms: Option<i64>,
    /// Whether every scene is within SLO over the last 10 ticks.
    pub within_slo: bool,
    /// Scene success rate over the last 10 ticks, per scene.
    pub scene_success: BTreeMap<String, f64>,
    /// Platform time of the last tick.
    pub now_ms: i64,
}

impl Truth {
    /// Time to recover from the first fault, ms.
    pub fn ttr_ms(&self) -> Option<i64> {
        Some(self.recovered_ms? - self.faults.first()?.start_ms)
    }
}

/// The simulated payment platform.
pub struct Platform {
    topo: Topology,
    rng: Xoshiro256PlusPlus,
    start_ms: i64,
    tick_ms: u64,
    tick: u64,
    channels: Vec<Channel>,
    apps: Vec<App>,
    /// Share of `from`'s traffic routed to `to`, by (from, to).
    shifts: BTreeMap<(String, String), f64>,
    pending: Vec<FaultSpec>,
    active: Vec<(FaultSpec, i64)>,
    /// Per scene: (attempted, succeeded) of the last 10 ticks.
    window: BTreeMap<String, std::collections::VecDeque<(f64, f64)>>,
    seen_breach: bool,
    truth: Truth,
}

const WINDOW_TICKS: usize = 10;

impl Platform {
    /// A platform of `topo`, starting at `start_ms`, whose random draws all
    /// come from `seed`.
    pub fn new(
        topo: Topology,
        seed: u64,
        start_ms: i64,
        tick_ms: u64,
        faults: Vec<FaultSpec>,
    ) -> Self {
        let total_tps: f64 = topo.scenes.iter().map(|s| s.base_tps).sum();
        let mut channels = Vec::new();
        let mut apps = Vec::new();
        for (i, s) in topo.services.iter().enumerate() {
            match s.kind {
                ServiceKind::Channel => {
                    // Backups are a little slower and declare more capacity
                    // than the whole platform's peak, as a real backup must.
                    let backup = topo
                        .services
                        .iter()
                        .any(|o| o.backup.as_deref() == Some(&s.name));
                    channels.push(Channel {
                        name: s.name.clone(),
                        base_success: if backup { 0.9965 } else { 0.998 },
                        base_latency_ms: if backup { 140.0 } else { 120.0 },
                        capacity_tps: total_tps * 2.0,
                        degraded: None,
                    });
                }
                ServiceKind::App | ServiceKind::Database => apps.push(App {
                    name: s.name.clone(),
                    success: 0.9998,
                    latency_ms: 15.0 + 5.0 * i as f64,
                    capacity_tps: total_tps * 2.5,
                }),
            }
        }
        let mut pending = faults;
        pending.sort_by_key(|f| f.start_s);
        Platform {
            topo,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            start_ms,
            tick_ms,
            tick: 0,
            channels,
            apps,
            shifts: BTreeMap::new(),
            pending,
            active: Vec::new(),
            window: BTreeMap::new(),
            seen_breach: false,
            truth: Truth::default(),
        }
    }

    /// Platform time now, ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.start_ms + (self.tick * self.tick_ms) as i64
    }

    /// The ground truth so far.
    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    fn noise(&mut self, sd: f64) -> f64 {
        // sd is always finite and >= 0 here.
        Normal::new(0.0, sd.max(0.0))
            .map(|n| n.sample(&mut self.rng))
            .unwrap_or(0.0)
    }

    /// Daily seasonality: traffic peaks in the evening, is lowest at night.
    fn season(&self, ts: i64) -> f64 {
        let day = 86_400_000.0;
        let phase = (ts.rem_euclid(86_400_000) as f64) / day * std::f64::consts::TAU;
        1.0 + 0.3 * (phase - 2.0).sin()
    }

    fn start_and_end_faults(&mut self, events: &mut Vec<(String, String)>) {
        let now = self.now_ms();
        let elapsed_s = self.tick * self.tick_ms / 1000;
        while self.pending.first().is_some_and(|f| f.start_s <= elapsed_s) {
            let f = self.pending.remove(0);
            if let Some(ch) = self.channels.iter_mut().find(|c| c.name == f.target) {
                ch.degraded = Some((f.success, f.latency_ms));
            }
            events.push((
                "fault_start".into(),
                format!(
                    "{} degraded: success {:.0}%, p99 {:.0} ms",
                    f.target,
                    f.success * 100.0,
                    f.latency_ms
                ),
            ));
            self.truth.faults.push(FaultWindow {
                kind: f.kind,
                target: f.target.clone(),
                start_ms: now,
                end_ms: None,
            });
            self.active.push((f, now));
        }
        let mut ended = Vec::new();
        self.active.retain(|(f, started)| {
            let over = f
                .duration_s
                .is_some_and(|d| now >= started + (d * 1000) as i64);
            if over {
                ended.push(f.clone());
            }
            !over
        });
        for f in ended {
            if let Some(ch) = self.channels.iter_mut().find(|c| c.name == f.target) {
                ch.degraded = None;
            }
            if let Some(w) = self
                .truth
                .faults
                .iter_mut()
                .rev()
                .find(|w| w.target == f.target && w.end_ms.is_none())
            {
                w.end_ms = Some(now);
            }
            events.push((
                "fault_end".into(),
                format!("{} back to normal on its own", f.target),
            ));
        }
    }

    /// Where each primary channel's traffic goes: (channel, share of all
    /// channel traffic).
    fn channel_split(&self) -> Vec<(usize, f64)> {
        let primaries: Vec<&Channel> = self
            .channels
            .iter()
            .filter(|c| {
                !self
                    .topo
                    .services
                    .iter()
                    .any(|s| s.backup.as_deref() == Some(&c.name))
            })
            .collect();
        let each = 1.0 / primaries.len().max(1) as f64;
        let mut split = vec![0.0; self.channels.len()];
        for p in primaries {
            let pi = self
                .channels
                .iter()
                .position(|c| c.name == p.name)
                .unwrap_or(0);
            let mut kept = each;
            for ((from, to), share) in &self.shifts {
                if from == &p.name
                    && let Some(ti) = self.channels.iter().position(|c| &c.name == to)
                {
                    let moved = each * share;
                    split[ti] += moved;
                    kept -= moved;
                }
            }
            split[pi] += kept.max(0.0);
        }
        split.into_iter().enumerate().collect()
    }

    /// Advances one tick and returns what the platform exported, plus the
    /// ground-truth events of the tick.
    pub fn step(&mut self) -> (Frame, Vec<(String, String)>) {
        let mut events = Vec::new();
        self.tick += 1;
        let ts = self.now_ms();
        self.start_and_end_faults(&mut events);
        let split = self.channel_split();
        let season = self.season(ts);
        let mut samples = Vec::new();
        let scenes: Vec<Scene> = self.topo.scenes.clone();
        let idcs = self.topo.idcs.clone();
        let mut tick_attempted = BTreeMap::<String, (f64, f64)>::new();
        let total_tps: f64 = scenes.iter().map(|s| s.base_tps).sum::<f64>() * season;

        // Channel health this tick (overload declines payments).
        let chan_load: Vec<f64> = split.iter().map(|(_, share)| share * total_tps).collect();
        let chan_health: Vec<(f64, f64)> = self
            .channels
            .iter()
            .zip(&chan_load)
            .map(|(c, load)| {
                let (mut p, lat) = c.degraded.unwrap_or((c.base_success, c.base_latency_ms));
                if *load > c.capacity_tps {
                    p *= c.capacity_tps / load;
                }
                (p, lat)
            })
            .collect();
        let app_success: f64 = self.apps.iter().map(|a| a.success).product();
        let app_latency: f64 = self.apps.iter().map(|a| a.latency_ms).sum();
        let chan_success: f64 = split
            .iter()
            .map(|(i, share)| share * chan_health[*i].0)
            .sum();
        let chan_p99 = split
            .iter()
            .filter(|(_, share)| *share >= 0.01)
            .map(|(i, _)| chan_health[*i].1)
            .fold(0.0, f64::max);

        for idc in &idcs {
            for scene in &scenes {
                let tps = (scene.base_tps * idc.traffic_share * season * (1.0 + self.noise(0.02)))
                    .max(1.0);
                let p = (app_success * chan_success).clamp(0.0, 1.0);
                let sd = (p * (1.0 - p) / tps).sqrt();
                let success = (p + self.noise(sd)).clamp(0.0, 1.0);
                let latency = (app_latency + chan_p99) * (1.0 + self.noise(0.03));
                let e = tick_attempted.entry(scene.name.clone()).or_default();
                e.0 += tps;
                e.1 += tps * success;
                let entry = self
                    .topo
                    .links
                    .iter()
                    .find(|l| l.name == scene.link)
                    .and_then(|l| l.services.first());
                let service = entry.cloned().unwrap_or_else(|| scene.name.clone());
                for (metric, value) in [
                    ("tps", tps),
                    ("success_rate", success),
                    ("latency_p99_ms", latency),
                ] {
                    samples.push(FrameSample {
                        layer: Layer::Business,
                        idc: idc.name.clone(),
                        service: service.clone(),
                        scene: Some(scene.name.clone()),
                        link: Some(scene.link.clone()),
                        metric: metric.into(),
                        value,
                    });
                }
            }
            let idc_tps = total_tps * idc.traffic_share;
            for (i, share) in &split {
                let name = self.channels[*i].name.clone();
                let (p, lat) = chan_health[*i];
                let tps = (idc_tps * share * (1.0 + self.noise(0.02))).max(0.0);
                let mut metrics = vec![("tps", tps)];
                if tps >= 1.0 {
                    let sd = (p * (1.0 - p) / tps).sqrt();
                    metrics.push(("success_rate", (p + self.noise(sd)).clamp(0.0, 1.0)));
                    metrics.push(("latency_p99_ms", lat * (1.0 + self.noise(0.03))));
                }
                for (metric, value) in metrics {
                    samples.push(FrameSample {
                        layer: Layer::Business,
                        idc: idc.name.clone(),
                        service: name.clone(),
                        scene: None,
                        link: None,
                        metric: metric.into(),
                        value,
                    });
                }
            }
            // Application services: CPU from load; errors and latency include
            // everything downstream of them.
            let apps = self.apps.clone();
            for (k, a) in apps.iter().enumerate() {
                let downstream_success: f64 =
                    apps[k..].iter().map(|x| x.success).product::<f64>() * chan_success;
                let downstream_latency: f64 =
                    apps[k..].iter().map(|x| x.latency_ms).sum::<f64>() + chan_p99;
                let cpu =
                    (0.15 + 0.6 * idc_tps / a.capacity_tps + self.noise(0.01)).clamp(0.0, 1.0);
                let err = (1.0 - downstream_success + self.noise(0.0005)).clamp(0.0, 1.0);
                let lat = downstream_latency * (1.0 + self.noise(0.03));
                for (metric, value) in [("cpu", cpu), ("error_rate", err), ("latency_p99_ms", lat)]
                {
                    samples.push(FrameSample {
                        layer: Layer::System,
                        idc: idc.name.clone(),
                        service: a.name.clone(),
                        scene: None,
                        link: None,
                        metric: metric.into(),
                        value,
                    });
                }
            }
        }
        self.account(ts, tick_attempted, &mut events);
        (
            Frame {
                tick: self.tick,
                ts,
                samples,
            },
            events,
        )
    }

    fn account(
        &mut self,
        ts: i64,
        tick: BTreeMap<String, (f64, f64)>,
        events: &mut Vec<(String, String)>,
    ) {
        let mut all_within = true;
        let mut any_breach_now = false;
        for scene in &self.topo.scenes {
            let (att, ok) = tick.get(&scene.name).copied().unwrap_or((0.0, 0.0));
            self.truth.attempted += att;
            self.truth.failed += att - ok;
            let w = self.window.entry(scene.name.clone()).or_default();
            w.push_back((att, ok));
            if w.len() > WINDOW_TICKS {
                w.pop_front();
            }
            let (a, o) = w
                .iter()
                .fold((0.0, 0.0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
            let rate = if a > 0.0 { o / a } else { 1.0 };
            self.truth.scene_success.insert(scene.name.clone(), rate);
            if rate < scene.slo_success {
                all_within = false;
            }
            if att > 0.0 && ok / att < scene.slo_success {
                any_breach_now = true;
            }
        }
        if any_breach_now {
            self.truth.failed_in_breach += tick.values().map(|(a, o)| a - o).sum::<f64>();
        }
        if !all_within && !self.truth.faults.is_empty() {
            self.seen_breach = true;
        }
        // Only a recovery after a fault's breach counts.
        if all_within && self.seen_breach && self.truth.recovered_ms.is_none() {
            self.truth.recovered_ms = Some(ts);
            events.push(("recovered".into(), "every scene back within its SLO".into()));
        }
        self.truth.within_slo = all_within;
        self.truth.now_ms = ts;
    }

    /// Applies a control command and says what it did.
    pub fn apply(&mut self, cmd: &Command) -> Result<String, String> {
        let now = self.now_ms();
        if let Some(done) = self.truth.actions.iter().find(|a| a.key == cmd.key) {
            return Ok(format!("already applied at {}", done.ts));
        }
        let detail = match cmd.kind {
            ActionKind::ShiftTraffic => {
                let from = cmd
                    .params
                    .get("from")
                    .and_then(|v| v.as_str())
                    .unwrap_or(&cmd.target)
                    .to_string();
                let to = cmd
                    .params
                    .get("to")
                    .and_then(|v| v.as_str())
                    .ok_or("shift_traffic needs `to`")?
                    .to_string();
                let fraction = cmd
                    .params
                    .get("fraction")
                    .and_then(|v| v.as_f64())
                    .ok_or("shift_traffic needs `fraction`")?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(format!("fraction {fraction} is not in [0,1]"));
                }
                for n in [&from, &to] {
                    if !self.channels.iter().any(|c| &c.name == n) {
                        return Err(format!("unknown channel {n:?}"));
                    }
                }
                if from == to {
                    return Err("cannot shift a channel's traffic to itself".into());
                }
                self.shifts.insert((from.clone(), to.clone()), fraction);
                format!(
                    "{:.1}% of {from}'s traffic now goes to {to}",
                    fraction * 100.0
                )
            }
            other => {
                return Err(format!(
                    "{} is not supported by this platform",
                    other.as_str()
                ));
            }
        };
        self.truth.actions.push(AppliedAction {
            ts: now,
            key: cmd.key.clone(),
            kind: cmd.kind,
            target: cmd.target.clone(),
            detail: detail.clone(),
        });
        Ok(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scenario, default_topology};

    fn run(s: &Scenario, ticks: u64, shift_at: Option<u64>) -> (Platform, Vec<Frame>) {
        let mut p = Platform::new(
            default_topology(),
            s.seed,
            1_700_000_000_000,
            s.tick_ms,
            s.faults.clone(),
        );
        let mut frames = Vec::new();
        for t in 0..ticks {
            if Some(t) == shift_at {
                let cmd = Command {
                    key: "k1".into(),
                    kind: ActionKind::ShiftTraffic,
                    target: "bank-a".into(),
                    params: [
                        ("to".to_string(), "bank-b".into()),
                        ("fraction".to_string(), 1.0.into()),
                    ]
                    .into(),
                };
                p.apply(&cmd).unwrap();
                assert!(p.apply(&cmd).unwrap().starts_with("already applied"));
            }
            frames.push(p.step().0);
        }
        (p, frames)
    }

    fn success(f: &Frame, scene: &str) -> f64 {
        let v: Vec<f64> = f
            .samples
            .iter()
            .filter(|s| s.scene.as_deref() == Some(scene) && s.metric == "success_rate")
            .map(|s| s.value)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn deterministic_per_seed() {
        let s = Scenario::channel_degradation();
        let (_, a) = run(&s, 120, None);
        let (_, b) = run(&s, 120, None);
        assert_eq!(a, b);
        let mut other = s.clone();
        other.seed += 1;
        assert_ne!(run(&other, 5, None).1, a[..5].to_vec());
    }

    #[test]
    fn degradation_hurts_and_failover_cures() {
        let s = Scenario::channel_degradation();
        let (p, frames) = run(&s, 200, None);
        assert!(success(&frames[80], "checkout") > 0.99);
        assert!(success(&frames[120], "checkout") < 0.7);
        assert!(p.truth().recovered_ms.is_none());
        assert!(!p.truth().within_slo);

        let (p, frames) = run(&s, 200, Some(130));
        assert!(success(&frames[180], "checkout") > 0.985);
        let ttr = p.truth().ttr_ms().unwrap();
        assert!((40_000..=55_000).contains(&ttr), "ttr {ttr}");
        assert_eq!(p.truth().actions.len(), 1);
        assert!(p.truth().failed > 0.0);
    }

    #[test]
    fn control_stays_within_slo_and_bad_commands_are_refused() {
        let (mut p, _) = run(&Scenario::control(), 300, None);
        assert!(p.truth().within_slo);
        assert!(p.truth().recovered_ms.is_none());
        let mut cmd = Command {
            key: "x".into(),
            kind: ActionKind::ShiftTraffic,
            target: "bank-a".into(),
            params: Default::default(),
        };
        assert!(p.apply(&cmd).unwrap_err().contains("needs `to`"));
        cmd.params.insert("to".into(), "bank-zz".into());
        cmd.params.insert("fraction".into(), 0.5.into());
        assert!(p.apply(&cmd).unwrap_err().contains("unknown channel"));
        cmd.kind = ActionKind::Restart;
        assert!(p.apply(&cmd).unwrap_err().contains("not supported"));
        assert!(p.truth().actions.is_empty());
    }
}
