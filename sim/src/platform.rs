//! The platform model: demand through scenes and links, services with
//! capacity and queues, channels, the database pool, faults, the effect of
//! actions (right and wrong ones), and the ground truth.
//!
//! Per tick and IDC: demand per scene (seasonality, profile, noise, plus any
//! surge, abuse or storm), admission (throttles, blocks, degraded scenes),
//! load per service, utilisation → queueing latency and overload errors,
//! fault effects, then success and latency along each scene's link.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use selfheal_bus::{ActionKind, ChangeKind, Layer, Topology, topology::ServiceKind};
use serde::Serialize;

use crate::{
    feed::{Change, Command, Frame, FrameSample, HotKeys},
    scenario::{EventKind, EventSpec, FaultKind, FaultSpec, Scenario, Traffic},
};

/// Utilisation a service runs at, under normal traffic at the daily peak.
const NORMAL_PEAK_UTIL: f64 = 0.4;
/// Connections in the accounting core's database pool, per IDC.
const POOL_SIZE: f64 = 32.0;
/// Normal database query time, ms.
const DB_MS: f64 = 5.0;
/// Ticks an instance is down while it restarts.
const RESTART_TICKS: u64 = 5;
/// Worker threads per instance.
const THREADS: f64 = 200.0;
/// Ticks in the SLO window.
const WINDOW_TICKS: usize = 10;

#[derive(Clone, Debug)]
struct Svc {
    name: String,
    kind: ServiceKind,
    instances: u32,
    /// Requests per second one instance takes at utilisation 1.
    cap: f64,
    lat: f64,
    err: f64,
}

#[derive(Clone, Debug)]
struct Chan {
    name: String,
    share: f64,
    success: f64,
    lat: f64,
    cap: f64,
}

#[derive(Clone, Debug)]
struct Active {
    spec: FaultSpec,
    start_ms: i64,
    cured: bool,
}

/// An action the platform applied, as recorded in the ground truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppliedAction {
    /// Platform time, ms.
    pub ts: i64,
    /// Tick it was applied before.
    pub tick: u64,
    /// Idempotency key.
    pub key: String,
    /// Kind.
    pub kind: ActionKind,
    /// Target.
    pub target: String,
    /// Its parameters.
    pub params: BTreeMap<String, serde_json::Value>,
    /// What it did.
    pub detail: String,
    /// Whether it cured a fault.
    pub cured: bool,
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
    /// End, platform ms: when it ended on its own or was cured.
    pub end_ms: Option<i64>,
    /// Whether an action cured it.
    pub cured: bool,
}

/// What really happened in a run, for scoring.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Truth {
    /// Faults, in order of start.
    pub faults: Vec<FaultWindow>,
    /// Actions applied, in order.
    pub actions: Vec<AppliedAction>,
    /// Legitimate payments attempted.
    pub attempted: f64,
    /// Payments that failed.
    pub failed: f64,
    /// Payments refused by a throttle.
    pub dropped: f64,
    /// Payments lost because their scene was degraded.
    pub degraded_lost: f64,
    /// Payments accepted whose ledger posting was lost (a fault's
    /// `postings_lost`): what reconciliation must find.
    pub postings_lost: f64,
    /// Abusive requests blocked (not a loss).
    pub blocked: f64,
    /// Business loss per tick (failed + dropped + degraded), for judging
    /// the effect of each action.
    pub loss_by_tick: Vec<f64>,
    /// When the platform was first back within SLO (every scene that is
    /// not degraded, over a 10-tick window) after a fault's breach.
    pub recovered_ms: Option<i64>,
    /// Whether it is within SLO now.
    pub within_slo: bool,
    /// Success rate of each scene over the last 10 ticks.
    pub scene_success: BTreeMap<String, f64>,
    /// Platform time of the last tick.
    pub now_ms: i64,
}

impl Truth {
    /// Time to recover from the first fault, ms.
    pub fn ttr_ms(&self) -> Option<i64> {
        Some(self.recovered_ms? - self.faults.first()?.start_ms)
    }

    /// Business loss, payments.
    pub fn loss(&self) -> f64 {
        self.failed + self.dropped + self.degraded_lost
    }

    /// Loss over the `n` ticks from tick `from`.
    pub fn loss_window(&self, from: u64, n: u64) -> f64 {
        self.loss_by_tick
            .iter()
            .skip(from as usize)
            .take(n as usize)
            .sum()
    }
}

/// The simulated payment platform.
pub struct Platform {
    topo: Topology,
    rng: Xoshiro256PlusPlus,
    start_ms: i64,
    tick_ms: u64,
    tick: u64,
    traffic: Traffic,
    svcs: Vec<Svc>,
    chans: Vec<Chan>,
    pending: VecDeque<FaultSpec>,
    active: Vec<Active>,
    events: VecDeque<EventSpec>,
    live_events: Vec<(EventSpec, i64)>,
    chan_shift: BTreeMap<(String, String), f64>,
    idc_shift: BTreeMap<(String, String), f64>,
    scene_throttle: BTreeMap<String, f64>,
    key_throttle: BTreeMap<String, f64>,
    blocked: BTreeSet<String>,
    isolated: BTreeSet<String>,
    degraded: BTreeSet<String>,
    restarting: BTreeMap<String, u64>,
    /// Instances with a share of their traffic moved to their siblings
    /// (a load balancer's weight lowered).
    drained: BTreeMap<String, f64>,
    window: BTreeMap<String, VecDeque<(f64, f64)>>,
    seen_breach: bool,
    next_change: u64,
    truth: Truth,
    /// Whether scenes publish their payments accepted and ledger postings.
    ledger: bool,
}

fn instance_name(svc: &str, idc: &str, k: u32) -> String {
    format!("{svc}-{idc}-{k}")
}

/// What every IDC of one tick shares, and what the tick gathers.
struct Tick {
    season: f64,
    peak: f64,
    batch: bool,
    idc_shares: Vec<f64>,
    split: Vec<f64>,
    scenes: Vec<selfheal_bus::topology::Scene>,
    idcs: Vec<selfheal_bus::topology::Idc>,
    links: Vec<selfheal_bus::topology::Link>,
    svcs: Vec<Svc>,
    chans: Vec<Chan>,
    /// Each channel's (success, latency) before load.
    chan_health: Vec<(f64, f64)>,
    /// Each channel's share of accepted payments whose posting is lost.
    chan_lost: Vec<f64>,
    samples: Vec<FrameSample>,
    hot: Vec<HotKeys>,
    /// Per scene: (attempts, successes), for the SLO.
    tick_att: BTreeMap<String, (f64, f64)>,
    /// Payments lost this tick.
    loss: f64,
}

/// One IDC's demand after admission.
#[derive(Default)]
struct Demand {
    admitted: BTreeMap<String, f64>,
    bad_requests: BTreeMap<String, f64>,
    storm_load: f64,
    item_counts: Vec<(String, u64)>,
    ip_counts: Vec<(String, u64)>,
    order_counts: Vec<(String, u64)>,
}

/// One service in one IDC, for its instances' indicators.
struct InstanceRow {
    svc: Svc,
    up: u32,
    /// The saturated instance and its latency factor.
    hot: Option<(String, f64)>,
    cpu: f64,
}

/// One IDC's services after load: (utilisation, own latency, error, cpu)
/// and load per service, the instances, the database pool's use.
struct Served {
    state: BTreeMap<String, (f64, f64, f64, f64)>,
    load: BTreeMap<String, f64>,
    instances: Vec<InstanceRow>,
    pool_use: f64,
}

impl Served {
    fn err(&self, name: &str) -> f64 {
        self.state.get(name).map_or(0.0, |x| x.2)
    }
    fn lat(&self, name: &str) -> f64 {
        self.state.get(name).map_or(0.0, |x| x.1)
    }
}

/// The payment channels as one IDC sees them.
struct Channels {
    /// Traffic this IDC sends to the channels.
    load: f64,
    /// Each channel's (success, latency) under that load.
    eff: Vec<(f64, f64)>,
    /// Success over the split.
    success: f64,
    /// The worst p99 of the channels in use.
    p99: f64,
}

impl Platform {
    /// The platform of `topo` running `scenario` from `start_ms`.
    pub fn new(topo: Topology, scenario: &Scenario, start_ms: i64) -> Self {
        // Normal load through each service, whole platform, at season 1.
        let mut load: BTreeMap<&str, f64> = BTreeMap::new();
        for sc in &topo.scenes {
            if let Some(link) = topo.links.iter().find(|l| l.name == sc.link) {
                for s in &link.services {
                    *load.entry(s).or_default() += sc.base_tps;
                }
            }
        }
        let total: f64 = topo.scenes.iter().map(|s| s.base_tps).sum();
        load.insert("database", *load.get("accounting-core").unwrap_or(&total));
        let peak = 1.3;
        let svcs = topo
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind != ServiceKind::Channel)
            .map(|(i, s)| {
                let l = load.get(s.name.as_str()).copied().unwrap_or(total);
                let per_idc_inst = s.instances.max(1) as f64 * topo.idcs.len().max(1) as f64;
                Svc {
                    name: s.name.clone(),
                    kind: s.kind,
                    instances: s.instances.max(1),
                    cap: l * peak / NORMAL_PEAK_UTIL / per_idc_inst,
                    lat: if s.kind == ServiceKind::Database {
                        DB_MS
                    } else {
                        10.0 + 3.0 * i as f64
                    },
                    err: 0.0002,
                }
            })
            .collect();
        let channels: Vec<_> = topo.channels().collect();
        let n = channels.len().max(1) as f64;
        let chans = channels
            .iter()
            .enumerate()
            .map(|(i, c)| Chan {
                name: c.name.clone(),
                share: c.share.unwrap_or(1.0 / n),
                success: 0.998 - 0.0007 * i as f64,
                lat: 120.0 + 10.0 * i as f64,
                cap: total * 2.0,
            })
            .collect();
        let mut faults = scenario.faults.clone();
        faults.sort_by_key(|f| f.start_s);
        let mut events = scenario.events.clone();
        events.sort_by_key(|e| e.start_s);
        Platform {
            rng: Xoshiro256PlusPlus::seed_from_u64(scenario.seed),
            start_ms,
            tick_ms: scenario.tick_ms,
            tick: 0,
            traffic: scenario.traffic.clone(),
            svcs,
            chans,
            pending: faults.into(),
            active: Vec::new(),
            events: events.into(),
            live_events: Vec::new(),
            chan_shift: BTreeMap::new(),
            idc_shift: BTreeMap::new(),
            scene_throttle: BTreeMap::new(),
            key_throttle: BTreeMap::new(),
            blocked: BTreeSet::new(),
            isolated: BTreeSet::new(),
            degraded: BTreeSet::new(),
            restarting: BTreeMap::new(),
            drained: BTreeMap::new(),
            window: BTreeMap::new(),
            seen_breach: false,
            next_change: 0,
            truth: Truth::default(),
            ledger: scenario.ledger,
            topo,
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
        Normal::new(0.0, sd.max(0.0))
            .map(|n| n.sample(&mut self.rng))
            .unwrap_or(0.0)
    }

    fn season(&self, ts_offset_ms: i64) -> f64 {
        let hours = self.traffic.start_hour + ts_offset_ms as f64 / 3_600_000.0;
        let phase = hours / 24.0 * std::f64::consts::TAU;
        1.0 + 0.3 * (phase - 2.0).sin()
    }

    fn fault(&self, kind: FaultKind) -> impl Iterator<Item = &FaultSpec> {
        self.active
            .iter()
            .filter(move |a| !a.cured && a.spec.kind == kind)
            .map(|a| &a.spec)
    }

    fn change(
        &mut self,
        service: &str,
        kind: ChangeKind,
        author: &str,
        description: String,
    ) -> Change {
        self.next_change += 1;
        Change {
            id: format!("chg-{}-{}", self.tick, self.next_change),
            service: service.to_string(),
            kind,
            author: author.to_string(),
            description,
        }
    }

    fn start_and_end(&mut self, events: &mut Vec<(String, String)>, changes: &mut Vec<Change>) {
        let now = self.now_ms();
        let elapsed_s = self.tick * self.tick_ms / 1000;
        while self.pending.front().is_some_and(|f| f.start_s <= elapsed_s) {
            let Some(f) = self.pending.pop_front() else {
                break;
            };
            let change = match f.kind {
                FaultKind::BadDeploy => Some(self.change(
                    &f.target,
                    ChangeKind::Deploy,
                    "dev-alice",
                    format!("{} v2.{}", f.target, self.tick),
                )),
                FaultKind::ConfigMistake => Some(self.change(
                    &f.target,
                    ChangeKind::Config,
                    "ops-bob",
                    format!("{} pool and timeout settings", f.target),
                )),
                _ => None,
            };
            changes.extend(change);
            events.push(("fault_start".into(), describe(&f)));
            self.truth.faults.push(FaultWindow {
                kind: f.kind,
                target: f.target.clone(),
                start_ms: now,
                end_ms: None,
                cured: false,
            });
            self.active.push(Active {
                spec: f,
                start_ms: now,
                cured: false,
            });
        }
        for i in 0..self.active.len() {
            let a = &self.active[i];
            if !a.cured
                && a.spec
                    .duration_s
                    .is_some_and(|d| now >= a.start_ms + (d * 1000) as i64)
            {
                self.active[i].cured = true;
                let target = self.active[i].spec.target.clone();
                self.end_window(i, now, false);
                events.push((
                    "fault_end".into(),
                    format!("{target} back to normal on its own"),
                ));
            }
        }
        while self.events.front().is_some_and(|e| e.start_s <= elapsed_s) {
            let Some(e) = self.events.pop_front() else {
                break;
            };
            let detail = match e.kind {
                EventKind::PlannedPeak => {
                    format!("planned peak: demand ×{}", e.multiplier.unwrap_or(1.0))
                }
                EventKind::HealthyDeploy => {
                    let t = e.target.clone().unwrap_or_default();
                    let c = self.change(
                        &t,
                        ChangeKind::Deploy,
                        "dev-carol",
                        format!("{t} v1.{} (healthy)", self.tick),
                    );
                    changes.push(c);
                    format!("healthy deploy of {t}")
                }
                EventKind::FeatureFlag => {
                    let t = e.target.clone().unwrap_or_default();
                    let c = self.change(
                        &t,
                        ChangeKind::FeatureFlag,
                        "pm-dave",
                        format!("{t}: new receipt layout"),
                    );
                    changes.push(c);
                    format!("feature flag flipped on {t}")
                }
                EventKind::NightlyBatch => "nightly batch started".to_string(),
            };
            events.push(("event".into(), detail));
            self.live_events.push((e, now));
        }
        self.live_events
            .retain(|(e, at)| e.duration_s.is_none_or(|d| now < at + (d * 1000) as i64));
        self.restarting.retain(|_, until| *until > self.tick);
    }

    fn end_window(&mut self, active_idx: usize, now: i64, cured: bool) {
        let (kind, target, start) = {
            let a = &self.active[active_idx];
            (a.spec.kind, a.spec.target.clone(), a.start_ms)
        };
        if let Some(w) = self
            .truth
            .faults
            .iter_mut()
            .find(|w| w.kind == kind && w.target == target && w.start_ms == start)
        {
            w.end_ms = Some(now);
            w.cured = cured;
        }
    }

    /// Share of traffic each IDC takes now.
    fn idc_shares(&self) -> Vec<f64> {
        let mut shares: Vec<f64> = self.topo.idcs.iter().map(|i| i.traffic_share).collect();
        for ((from, to), f) in &self.idc_shift {
            let (Some(a), Some(b)) = (
                self.topo.idcs.iter().position(|i| &i.name == from),
                self.topo.idcs.iter().position(|i| &i.name == to),
            ) else {
                continue;
            };
            let moved = self.topo.idcs[a].traffic_share * f;
            shares[a] -= moved;
            shares[b] += moved;
        }
        shares
    }

    /// Share of channel traffic each channel takes now.
    fn chan_split(&self) -> Vec<f64> {
        let mut split: Vec<f64> = self.chans.iter().map(|c| c.share).collect();
        for ((from, to), f) in &self.chan_shift {
            let (Some(a), Some(b)) = (
                self.chans.iter().position(|c| &c.name == from),
                self.chans.iter().position(|c| &c.name == to),
            ) else {
                continue;
            };
            let moved = self.chans[a].share * f;
            split[a] -= moved;
            split[b] += moved;
        }
        split
    }

    /// The extra demand of the active faults of `kind` on scene `sc` in an
    /// IDC taking `share` of the traffic: (key, requests per second).
    fn floods(
        &self,
        kind: FaultKind,
        sc: &selfheal_bus::topology::Scene,
        share: f64,
    ) -> Vec<(String, f64)> {
        self.fault(kind)
            .filter(|f| f.target == sc.name)
            .map(|f| {
                (
                    f.key.clone().unwrap_or_default(),
                    sc.base_tps * share * f.magnitude(),
                )
            })
            .collect()
    }

    fn throttle_key(&self, key: &str, demand: f64, share: f64) -> f64 {
        self.key_throttle
            .get(key)
            .map_or(demand, |r| demand.min(r * share))
    }

    /// Advances one tick: the platform's indicators, hot keys and changes
    /// for it, and what happened (fault starts and ends). Per IDC, in this
    /// order (the random draws follow it, so a scenario replays exactly):
    /// demand and admission, service load and state, channels, the scenes'
    /// business indicators, the channels' indicators, latency as callers
    /// see it, service and instance indicators, hot keys.
    pub fn step(&mut self) -> (Frame, Vec<(String, String)>) {
        let mut events = Vec::new();
        let mut changes = Vec::new();
        self.tick += 1;
        let ts = self.now_ms();
        self.start_and_end(&mut events, &mut changes);
        let mut t = self.begin_tick();
        for ii in 0..t.idcs.len() {
            let demand = self.admit_demand(&mut t, ii);
            let svc = self.serve(&t, ii, &demand);
            let ch = self.channels(&t, ii, &demand);
            self.report_scenes(&mut t, ii, &demand, &svc, &ch);
            self.report_channels(&mut t, ii, &ch);
            let incl = self.caller_latency(&t, &svc, &ch);
            self.report_services(&mut t, ii, &svc, &incl);
            self.report_hot_keys(&mut t, ii, demand);
        }
        self.account(ts, t.tick_att, t.loss, &mut events);
        (
            Frame {
                tick: self.tick,
                ts,
                samples: t.samples,
                hot: t.hot,
                changes,
            },
            events,
        )
    }

    /// What every IDC of this tick shares.
    fn begin_tick(&mut self) -> Tick {
        let ts = self.now_ms();
        let season = self.season(ts - self.start_ms);
        let peak: f64 = self
            .live_events
            .iter()
            .filter(|(e, _)| e.kind == EventKind::PlannedPeak)
            .map(|(e, _)| e.multiplier.unwrap_or(1.0))
            .product();
        let batch = self
            .live_events
            .iter()
            .any(|(e, _)| e.kind == EventKind::NightlyBatch);
        // Channel health (the same in both IDCs: channels are external).
        let chan_health: Vec<(f64, f64)> = self
            .chans
            .iter()
            .map(|c| {
                let degraded = self
                    .fault(FaultKind::ChannelDegradation)
                    .find(|f| f.target == c.name);
                match degraded {
                    Some(f) => (
                        f.success.unwrap_or(f.magnitude()),
                        f.latency_ms.unwrap_or(900.0),
                    ),
                    None => (c.success, c.lat),
                }
            })
            .collect();
        let chan_lost: Vec<f64> = self
            .chans
            .iter()
            .map(|c| {
                self.fault(FaultKind::ChannelDegradation)
                    .find(|f| f.target == c.name)
                    .and_then(|f| f.postings_lost)
                    .unwrap_or(0.0)
            })
            .collect();
        Tick {
            season,
            peak,
            batch,
            idc_shares: self.idc_shares(),
            split: self.chan_split(),
            scenes: self.topo.scenes.clone(),
            idcs: self.topo.idcs.clone(),
            links: self.topo.links.clone(),
            svcs: self.svcs.clone(),
            chans: self.chans.clone(),
            chan_health,
            chan_lost,
            samples: Vec::new(),
            hot: Vec::new(),
            tick_att: BTreeMap::new(),
            loss: 0.0,
        }
    }

    /// Demand and admission per scene in IDC `ii`: legitimate traffic,
    /// surges, abuse and storms, then blocks, throttles and degraded scenes.
    fn admit_demand(&mut self, t: &mut Tick, ii: usize) -> Demand {
        let share = t.idc_shares[ii];
        let mut d = Demand::default();
        for sc in &t.scenes {
            let noise = self.noise(self.traffic.noise);
            let legit = sc.base_tps
                * share
                * t.season
                * t.peak
                * self.traffic.multiplier
                * (1.0 + noise).max(0.0);
            let mut extra_ok = 0.0;
            let mut extra_bad = 0.0;
            for (key, dem) in self.floods(FaultKind::HotItemSurge, sc, share) {
                let admitted_item = self.throttle_key(&key, dem, share);
                self.truth.dropped += dem - admitted_item;
                t.loss += dem - admitted_item;
                extra_ok += admitted_item;
                d.item_counts.push((key, admitted_item as u64));
            }
            for (key, dem) in self.floods(FaultKind::AbusiveClient, sc, share) {
                if self.blocked.contains(&key) {
                    self.truth.blocked += dem;
                } else {
                    let a = self.throttle_key(&key, dem, share);
                    extra_bad += a;
                    d.ip_counts.push((key, a as u64));
                }
            }
            for (key, dem) in self.floods(FaultKind::RequestStorm, sc, share) {
                let a = self.throttle_key(&key, dem, share);
                d.storm_load += a;
                d.order_counts.push((key, a as u64));
            }
            self.truth.attempted += legit + extra_ok;
            let mut adm = legit + extra_ok;
            if self.degraded.contains(&sc.name) {
                self.truth.degraded_lost += adm;
                t.loss += adm;
                adm = 0.0;
                extra_bad = 0.0;
            } else if let Some(r) = self.scene_throttle.get(&sc.name) {
                let cap = r * share;
                if adm > cap {
                    self.truth.dropped += adm - cap;
                    t.loss += adm - cap;
                    adm = cap;
                }
            }
            d.admitted.insert(sc.name.clone(), adm);
            d.bad_requests.insert(sc.name.clone(), extra_bad);
        }
        d
    }

    /// Load, utilisation, latency and errors per service in IDC `ii`, the
    /// faults' effects included, and the accounting core's database pool.
    fn serve(&self, t: &Tick, ii: usize, d: &Demand) -> Served {
        let idc = &t.idcs[ii];
        // util, own latency, error, cpu
        let mut svc_state: BTreeMap<String, (f64, f64, f64, f64)> = BTreeMap::new();
        let mut svc_load: BTreeMap<String, f64> = BTreeMap::new();
        for sc in &t.scenes {
            let a = d.admitted[&sc.name] + d.bad_requests[&sc.name];
            if let Some(l) = t.links.iter().find(|l| l.name == sc.link) {
                for s in &l.services {
                    *svc_load.entry(s.clone()).or_default() += a;
                }
            }
        }
        let storm_load = d.storm_load;
        *svc_load.entry("payment-engine".into()).or_default() += storm_load;
        *svc_load.entry("accounting-core".into()).or_default() += storm_load;
        let acc_load = svc_load.get("accounting-core").copied().unwrap_or(0.0);
        svc_load.insert("database".into(), acc_load);
        let network = self
            .fault(FaultKind::IdcNetworkFailure)
            .find(|f| f.target == idc.name)
            .map(|f| f.magnitude());
        let mut instance_rows = Vec::new();
        for s in &t.svcs {
            let load = svc_load.get(&s.name).copied().unwrap_or(0.0);
            let mut down = 0u32;
            let mut drained = 0.0;
            let mut hot_inst: Option<(String, f64)> = None;
            let mut hot_share = 1.0;
            for k in 1..=s.instances {
                let inst = instance_name(&s.name, &idc.name, k);
                let away = self.drained.get(&inst).copied().unwrap_or(0.0);
                if self.restarting.contains_key(&inst) {
                    down += 1;
                } else {
                    drained += away;
                }
                if let Some(f) = self
                    .fault(FaultKind::SaturatedHost)
                    .find(|f| f.key.as_deref() == Some(&inst))
                {
                    // Its slowness reaches only the traffic it still takes.
                    hot_share = 1.0 - away;
                    hot_inst = Some((inst, 1.0 + (f.magnitude() - 1.0) * hot_share));
                }
            }
            let up = (s.instances - down.min(s.instances)) as f64;
            // Traffic moved off an instance goes to its siblings: the
            // service serves on the rest of its capacity.
            let capacity = ((up - drained).max(0.0) * s.cap).max(1e-9);
            let u = load / capacity;
            let mut lat = s.lat * (1.0 + 3.0 * u.min(1.5).powi(4));
            let mut err = s.err + if u > 1.0 { 1.0 - 1.0 / u } else { 0.0 };
            // A restart resets the connections of the instance going down:
            // some requests fail while clients reconnect.
            err += 0.1 * down as f64 / s.instances as f64;
            if self.fault(FaultKind::BadDeploy).any(|f| f.target == s.name) {
                err += self
                    .fault(FaultKind::BadDeploy)
                    .find(|f| f.target == s.name)
                    .map_or(0.0, |f| f.magnitude());
            }
            if let Some(f) = self
                .fault(FaultKind::ConfigMistake)
                .find(|f| f.target == s.name)
            {
                lat *= f.magnitude();
                err += 0.08;
            }
            if s.kind == ServiceKind::Database {
                if let Some(f) = self
                    .fault(FaultKind::SlowDatabase)
                    .find(|f| f.target == s.name)
                {
                    lat *= f.magnitude();
                }
                if t.batch {
                    lat *= 1.6;
                }
            }
            if s.name == "accounting-core" {
                let contention: Vec<(String, f64)> = self
                    .fault(FaultKind::HotAccountContention)
                    .map(|f| (f.key.clone().unwrap_or_default(), f.magnitude()))
                    .collect();
                for (key, m) in contention {
                    if !self.isolated.contains(&key) {
                        lat *= m;
                        err += 0.1;
                    }
                }
                if storm_load > 0.0 {
                    // Duplicate requests fight for the same idempotency lock.
                    err += (storm_load / (acc_load + 1.0)) * 0.3;
                    lat *= 1.0 + 2.0 * storm_load / (acc_load + 1.0);
                }
            }
            if let Some((_, m)) = &hot_inst {
                // One saturated instance: its share of requests is slow
                // and many time out; p99 is that instance's latency. Its
                // multiplier is already scaled by the traffic it still
                // takes (1 when all of it was moved away).
                lat *= m;
                err += 0.4 / up.max(1.0) * hot_share;
            }
            if let Some(n) = network {
                err += n;
                lat *= 3.0;
            }
            let cpu = (0.08 + 0.7 * u.min(1.3)).min(1.0);
            svc_state.insert(s.name.clone(), (u, lat, err.min(1.0), cpu));
            instance_rows.push(InstanceRow {
                svc: s.clone(),
                up: up as u32,
                hot: hot_inst,
                cpu,
            });
        }
        // The database pool of the accounting core.
        let db_lat = svc_state.get("database").map_or(DB_MS, |x| x.1);
        let pool_use = acc_load * db_lat / 1000.0 / POOL_SIZE;
        if let Some(st) = svc_state.get_mut("accounting-core") {
            st.1 += db_lat * (1.0 + pool_use.min(1.5).powi(4) * 4.0);
            if pool_use > 1.0 {
                st.2 = (st.2 + 1.0 - 1.0 / pool_use).min(1.0);
            }
        }
        Served {
            state: svc_state,
            load: svc_load,
            instances: instance_rows,
            pool_use,
        }
    }

    /// The payment channels as IDC `ii` sees them: load, success and p99.
    fn channels(&self, t: &Tick, ii: usize, d: &Demand) -> Channels {
        let share = t.idc_shares[ii];
        let load: f64 = t
            .scenes
            .iter()
            .filter(|sc| {
                t.links
                    .iter()
                    .any(|l| l.name == sc.link && l.services.iter().any(|s| s == "channel-router"))
            })
            .map(|sc| d.admitted[&sc.name])
            .sum();
        let eff: Vec<(f64, f64)> = t
            .chans
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (mut p, lat) = t.chan_health[i];
                let l = load * t.split[i] / share.max(1e-9);
                if l > c.cap {
                    p *= c.cap / l;
                }
                (p, lat)
            })
            .collect();
        let success: f64 = t.split.iter().zip(&eff).map(|(s, (p, _))| s * p).sum();
        let p99 = t
            .split
            .iter()
            .zip(&eff)
            .filter(|(s, _)| **s >= 0.01)
            .map(|(_, (_, l))| *l)
            .fold(0.0, f64::max);
        Channels {
            load,
            eff,
            success,
            p99,
        }
    }

    /// Each scene's success and latency along its link: the business
    /// indicators, the payments that failed, the SLO's attempts.
    fn report_scenes(&mut self, t: &mut Tick, ii: usize, d: &Demand, svc: &Served, ch: &Channels) {
        let idc = t.idcs[ii].name.clone();
        for sc in &t.scenes {
            let Some(link) = t.links.iter().find(|l| l.name == sc.link) else {
                continue;
            };
            let adm = d.admitted[&sc.name];
            let bad = d.bad_requests[&sc.name];
            let uses_chan = link.services.iter().any(|s| s == "channel-router");
            let mut p: f64 = link.services.iter().map(|s| 1.0 - svc.err(s)).product();
            if uses_chan {
                p *= ch.success;
            }
            let mut lat: f64 = link.services.iter().map(|s| svc.lat(s)).sum();
            if uses_chan {
                lat += ch.p99;
            }
            // Abusive requests (stolen cards) are mostly declined.
            let total = adm + bad;
            let ok = adm * p + bad * 0.3 * p;
            let rate_true = if total > 0.0 { ok / total } else { 1.0 };
            let sd = (rate_true * (1.0 - rate_true) / total.max(1.0)).sqrt();
            let rate = (rate_true + self.noise(sd)).clamp(0.0, 1.0);
            let lat = lat * (1.0 + self.noise(0.03));
            let failed_legit = adm * (1.0 - p);
            self.truth.failed += failed_legit;
            t.loss += failed_legit;
            if !self.degraded.contains(&sc.name) {
                let e = t.tick_att.entry(sc.name.clone()).or_default();
                e.0 += total;
                e.1 += total * rate;
            }
            // The books: payments accepted, and those the ledger posted
            // (short by what a channel accepted but never posted).
            let accepted = adm * p;
            let lost_share = if uses_chan {
                let via: Vec<f64> = t
                    .split
                    .iter()
                    .zip(&ch.eff)
                    .map(|(s, (q, _))| s * q)
                    .collect();
                let all: f64 = via.iter().sum();
                if all > 0.0 {
                    via.iter()
                        .zip(&t.chan_lost)
                        .map(|(v, l)| v * l)
                        .sum::<f64>()
                        / all
                } else {
                    0.0
                }
            } else {
                0.0
            };
            let unposted = accepted * lost_share;
            self.truth.postings_lost += unposted;
            if total > 0.0 {
                let entry = link.services.first().cloned().unwrap_or_default();
                let books = [
                    ("payments_accepted", accepted),
                    ("ledger_postings", accepted - unposted),
                ];
                let books = if self.ledger { &books[..] } else { &[] };
                for (metric, value) in [
                    ("tps", total),
                    ("success_rate", rate),
                    ("latency_p99_ms", lat),
                ]
                .iter()
                .chain(books)
                .copied()
                {
                    t.samples.push(FrameSample {
                        layer: Layer::Business,
                        idc: idc.clone(),
                        service: entry.clone(),
                        scene: Some(sc.name.clone()),
                        link: Some(sc.link.clone()),
                        instance: None,
                        metric: metric.into(),
                        value,
                    });
                }
            }
        }
    }

    /// Each channel's traffic, success and latency from IDC `ii`.
    fn report_channels(&mut self, t: &mut Tick, ii: usize, ch: &Channels) {
        let idc = t.idcs[ii].name.clone();
        for (i, c) in t.chans.iter().enumerate() {
            let tps = ch.load * t.split[i] * (1.0 + self.noise(0.02)).max(0.0);
            let mut metrics = vec![("tps", tps)];
            // Draw even when unused, so that the random stream does not
            // depend on the actions taken (counterfactual replays).
            let (z1, z2) = (self.noise(1.0), self.noise(1.0));
            if tps >= 1.0 {
                let (p, lat) = ch.eff[i];
                let sd = (p * (1.0 - p) / tps).sqrt();
                metrics.push(("success_rate", (p + z1 * sd).clamp(0.0, 1.0)));
                metrics.push(("latency_p99_ms", lat * (1.0 + 0.03 * z2)));
            }
            for (metric, value) in metrics {
                t.samples.push(FrameSample {
                    layer: Layer::Business,
                    idc: idc.clone(),
                    service: c.name.clone(),
                    scene: None,
                    link: None,
                    instance: None,
                    metric: metric.into(),
                    value,
                });
            }
        }
    }

    /// Latency seen by each service's callers, its downstream calls
    /// included: a slow dependency makes everything upstream slower and
    /// fills upstream thread pools (Little's law).
    fn caller_latency(&self, t: &Tick, svc: &Served, ch: &Channels) -> BTreeMap<String, f64> {
        let mut incl: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..t.svcs.len() {
            for s in &t.svcs {
                let deps = self
                    .topo
                    .service(&s.name)
                    .map(|x| x.depends_on.clone())
                    .unwrap_or_default();
                let mut down = 0.0f64;
                for d in &deps {
                    if t.chans.iter().any(|c| &c.name == d) {
                        down = down.max(ch.p99);
                    } else {
                        down = down.max(incl.get(d).copied().unwrap_or(0.0));
                    }
                }
                incl.insert(s.name.clone(), svc.lat(&s.name) + down);
            }
        }
        incl
    }

    /// Services', instances' and hosts' indicators in IDC `ii` (a
    /// restarting instance reports nothing).
    fn report_services(
        &mut self,
        t: &mut Tick,
        ii: usize,
        svc: &Served,
        incl: &BTreeMap<String, f64>,
    ) {
        let idc = t.idcs[ii].name.clone();
        for row in &svc.instances {
            let (s, up, hot_inst, cpu) = (&row.svc, row.up, &row.hot, row.cpu);
            let (u, _, err, _) = svc.state[&s.name];
            let lat_total = incl.get(&s.name).copied().unwrap_or(0.0);
            let load = svc.load.get(&s.name).copied().unwrap_or(0.0);
            let pool = (s.name == "accounting-core").then_some(svc.pool_use);
            let thread = (load * lat_total / 1000.0 / (up.max(1) as f64 * THREADS)).clamp(0.0, 1.0);
            let gc = 4.0 + 12.0 * u.min(1.5);
            let mut svc_metrics = vec![
                ("error_rate", (err + self.noise(0.0003)).clamp(0.0, 1.0)),
                ("latency_p99_ms", lat_total * (1.0 + self.noise(0.03))),
                (
                    "thread_pool_use",
                    (thread + self.noise(0.01)).clamp(0.0, 1.0),
                ),
            ];
            if let Some(p) = pool {
                svc_metrics.push((
                    "conn_pool_use",
                    (p.min(1.0) + self.noise(0.01)).clamp(0.0, 1.0),
                ));
            }
            for (metric, value) in svc_metrics {
                t.samples.push(FrameSample {
                    layer: Layer::System,
                    idc: idc.clone(),
                    service: s.name.clone(),
                    scene: None,
                    link: None,
                    instance: None,
                    metric: metric.into(),
                    value,
                });
            }
            for k in 1..=s.instances {
                let inst = instance_name(&s.name, &idc, k);
                let is_hot = hot_inst.as_ref().is_some_and(|(h, _)| h == &inst);
                let icpu = if is_hot { 0.99 } else { cpu };
                let ilat = if is_hot {
                    lat_total
                } else {
                    lat_total / hot_inst.as_ref().map_or(1.0, |(_, m)| *m)
                };
                // A saturated instance fails and queues its own share.
                let ierr = if is_hot { err + 0.4 } else { err };
                let ithread = if is_hot { 1.0 } else { thread };
                let values = [
                    (
                        Layer::System,
                        "cpu",
                        (icpu + self.noise(0.01)).clamp(0.0, 1.0),
                    ),
                    (
                        Layer::System,
                        "error_rate",
                        (ierr + self.noise(0.0005)).clamp(0.0, 1.0),
                    ),
                    (
                        Layer::System,
                        "thread_pool_use",
                        (ithread + self.noise(0.01)).clamp(0.0, 1.0),
                    ),
                    (
                        Layer::System,
                        "gc_pause_ms",
                        (gc * (1.0 + self.noise(0.05))).max(0.0),
                    ),
                    (
                        Layer::System,
                        "latency_p99_ms",
                        ilat * (1.0 + self.noise(0.03)),
                    ),
                    (
                        Layer::Infra,
                        "cpu",
                        (icpu * 0.9 + 0.05 + self.noise(0.01)).clamp(0.0, 1.0),
                    ),
                    (
                        Layer::Infra,
                        "mem_used",
                        (0.55 + 0.1 * u.min(1.0) + self.noise(0.005)).clamp(0.0, 1.0),
                    ),
                    (
                        Layer::Infra,
                        "disk_io_mbps",
                        (5.0 + 20.0 * u.min(1.5) * (1.0 + self.noise(0.05))).max(0.0),
                    ),
                    (
                        Layer::Infra,
                        "net_mbps",
                        (10.0 + 80.0 * u.min(1.5) * (1.0 + self.noise(0.03))).max(0.0),
                    ),
                ];
                // Drawn above either way; a restarting instance reports nothing.
                if self.restarting.contains_key(&inst) {
                    continue;
                }
                for (layer, metric, value) in values {
                    t.samples.push(FrameSample {
                        layer,
                        idc: idc.clone(),
                        service: s.name.clone(),
                        scene: None,
                        link: None,
                        instance: Some(inst.clone()),
                        metric: metric.into(),
                        value,
                    });
                }
            }
        }
    }

    /// Hot keys in IDC `ii`: a long tail of normal keys, plus whatever a
    /// fault adds.
    fn report_hot_keys(&mut self, t: &mut Tick, ii: usize, d: Demand) {
        let idc = t.idcs[ii].name.clone();
        let checkout = d.admitted.get("checkout").copied().unwrap_or(0.0);
        let all: f64 = d.admitted.values().sum();
        let mut items: Vec<(String, u64)> = (1..=5)
            .map(|k| {
                (
                    format!("item-{k}"),
                    (checkout * 0.05 / k as f64 * (1.0 + self.noise(0.05)).max(0.0)) as u64,
                )
            })
            .collect();
        items.extend(d.item_counts);
        let mut ips: Vec<(String, u64)> = (1..=5)
            .map(|k| {
                (
                    format!("10.0.{ii}.{k}"),
                    (all * 0.002 * (1.0 + self.noise(0.2)).max(0.0)) as u64,
                )
            })
            .collect();
        ips.extend(d.ip_counts);
        let merchants: Vec<(String, u64)> = (1..=5)
            .map(|k| {
                (
                    format!("merchant-{k:03}"),
                    (all * 0.06 / k as f64 * (1.0 + self.noise(0.05)).max(0.0)) as u64,
                )
            })
            .collect();
        let mut orders: Vec<(String, u64)> = (1..=5)
            .map(|k| (format!("order-{}-{k}", self.tick), 1))
            .collect();
        orders.extend(d.order_counts);
        let mut accounts: Vec<(String, u64)> = (1..=5)
            .map(|k| {
                (
                    format!("acct-{k:04}"),
                    (all * 0.01 / k as f64 * (1.0 + self.noise(0.05)).max(0.0)) as u64,
                )
            })
            .collect();
        let contention: Vec<String> = self
            .fault(FaultKind::HotAccountContention)
            .filter_map(|f| f.key.clone())
            .collect();
        for key in contention {
            accounts.push((key, (all * 0.3) as u64));
        }
        for (service, dimension, mut top, total) in [
            ("cashier", "item", items, checkout),
            (
                "cashier",
                "client_ip",
                ips,
                all + d.bad_requests.values().sum::<f64>(),
            ),
            ("cashier", "merchant", merchants, all),
            ("payment-engine", "order", orders, all + d.storm_load),
            ("accounting-core", "account", accounts, all),
        ] {
            // Every key counted; the agent's sketch finds the heavy ones.
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let total = (total.max(0.0) as u64).max(top.iter().map(|x| x.1).sum());
            t.hot.push(HotKeys {
                idc: idc.clone(),
                service: service.into(),
                dimension: dimension.into(),
                total,
                top,
            });
        }
    }

    fn account(
        &mut self,
        ts: i64,
        tick: BTreeMap<String, (f64, f64)>,
        loss: f64,
        events: &mut Vec<(String, String)>,
    ) {
        self.truth.loss_by_tick.push(loss);
        let mut within = true;
        for sc in &self.topo.scenes {
            let w = self.window.entry(sc.name.clone()).or_default();
            if let Some(x) = tick.get(&sc.name) {
                w.push_back(*x);
            } else {
                // A degraded scene is out of the SLO window.
                w.clear();
            }
            if w.len() > WINDOW_TICKS {
                w.pop_front();
            }
            let (a, o) = w
                .iter()
                .fold((0.0, 0.0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
            let rate = if a > 0.0 { o / a } else { 1.0 };
            self.truth.scene_success.insert(sc.name.clone(), rate);
            if a > 0.0 && rate < sc.slo_success {
                within = false;
            }
        }
        if !within && !self.truth.faults.is_empty() {
            self.seen_breach = true;
        }
        if within && self.seen_breach && self.truth.recovered_ms.is_none() {
            self.truth.recovered_ms = Some(ts);
            events.push(("recovered".into(), "every scene back within its SLO".into()));
        }
        self.truth.within_slo = within;
        self.truth.now_ms = ts;
    }

    fn cure(&mut self, pred: impl Fn(&Active) -> bool) -> bool {
        let now = self.now_ms();
        let mut cured = false;
        for i in 0..self.active.len() {
            if !self.active[i].cured && pred(&self.active[i]) {
                self.active[i].cured = true;
                self.end_window(i, now, true);
                cured = true;
            }
        }
        cured
    }

    /// Whether `name` is an instance of a service in an IDC.
    fn is_instance(&self, name: &str) -> bool {
        self.svcs.iter().any(|s| {
            self.topo
                .idcs
                .iter()
                .any(|i| (1..=s.instances).any(|k| instance_name(&s.name, &i.name, k) == name))
        })
    }

    /// Applies a control command and says what it did.
    pub fn apply(&mut self, cmd: &Command) -> Result<String, String> {
        let now = self.now_ms();
        if let Some(done) = self.truth.actions.iter().find(|a| a.key == cmd.key) {
            return Ok(format!("already applied at {}", done.ts));
        }
        let param_str = |k: &str| {
            cmd.params
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let param_f64 = |k: &str| cmd.params.get(k).and_then(|v| v.as_f64());
        let t = cmd.target.clone();
        let is_scene = self.topo.scenes.iter().any(|s| s.name == t);
        let is_service = self.topo.service(&t).is_some();
        let (detail, cured) = match cmd.kind {
            ActionKind::ShiftTraffic if param_str("to").is_none() && self.is_instance(&t) => {
                // Away from one instance to its siblings (its weight at
                // the load balancer lowered).
                let fraction = param_f64("fraction").ok_or("shift_traffic needs `fraction`")?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(format!("fraction {fraction} is not in [0,1]"));
                }
                self.drained.insert(t.clone(), fraction);
                (
                    format!(
                        "{:.1}% of {t}'s traffic now goes to its siblings",
                        fraction * 100.0
                    ),
                    false,
                )
            }
            ActionKind::ShiftTraffic => {
                let from = param_str("from").unwrap_or_else(|| t.clone());
                let to = param_str("to")
                    .ok_or("shift_traffic needs `to` (or a known instance as its target)")?;
                let fraction = param_f64("fraction").ok_or("shift_traffic needs `fraction`")?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(format!("fraction {fraction} is not in [0,1]"));
                }
                if from == to {
                    return Err("cannot shift traffic to itself".into());
                }
                let chan = |n: &str| self.chans.iter().any(|c| c.name == n);
                let idc = |n: &str| self.topo.idcs.iter().any(|i| i.name == n);
                if chan(&from) && chan(&to) {
                    self.chan_shift.insert((from.clone(), to.clone()), fraction);
                    // Moving (nearly) all of a degraded channel's traffic away cures it.
                    let c = fraction >= 0.99
                        && self.cure(|a| {
                            a.spec.kind == FaultKind::ChannelDegradation && a.spec.target == from
                        });
                    (
                        format!(
                            "{:.1}% of {from}'s traffic now goes to {to}",
                            fraction * 100.0
                        ),
                        c,
                    )
                } else if idc(&from) && idc(&to) {
                    self.idc_shift.insert((from.clone(), to.clone()), fraction);
                    let c = fraction >= 0.99
                        && self.cure(|a| {
                            a.spec.kind == FaultKind::IdcNetworkFailure && a.spec.target == from
                        });
                    (
                        format!(
                            "{:.1}% of {from}'s traffic now goes to {to}",
                            fraction * 100.0
                        ),
                        c,
                    )
                } else {
                    return Err(format!("{from} and {to} are not two channels or two IDCs"));
                }
            }
            ActionKind::Throttle => {
                let rate = param_f64("rate").ok_or("throttle needs `rate` (per second)")?;
                if !(rate.is_finite() && rate >= 0.0) {
                    return Err(format!("rate {rate} is not >= 0"));
                }
                if is_scene {
                    self.scene_throttle.insert(t.clone(), rate);
                    (format!("scene {t} limited to {rate:.0}/s"), false)
                } else if selfheal_bus::message::valid_key(&t) {
                    self.key_throttle.insert(t.clone(), rate);
                    // A limit well under the key's flood cures it.
                    let scenes = self.topo.scenes.clone();
                    let c = self.cure(|a| {
                        let flood = scenes
                            .iter()
                            .find(|s| s.name == a.spec.target)
                            .map_or(0.0, |s| s.base_tps * a.spec.magnitude());
                        matches!(
                            a.spec.kind,
                            FaultKind::HotItemSurge | FaultKind::RequestStorm
                        ) && a.spec.key.as_deref() == Some(&t)
                            && rate <= 0.1 * flood
                    });
                    // The key's traffic stays limited; the cure is the limit.
                    (format!("key {t} limited to {rate:.0}/s"), c)
                } else {
                    return Err(format!("unknown throttle target {t:?}"));
                }
            }
            ActionKind::Degrade => {
                if !is_scene {
                    return Err(format!("unknown scene {t:?}"));
                }
                self.degraded.insert(t.clone());
                (
                    format!("scene {t} degraded: its payments are turned away"),
                    false,
                )
            }
            ActionKind::Restore => {
                if self.is_instance(&t) {
                    let was = self.drained.remove(&t);
                    let detail = match was {
                        Some(f) => format!(
                            "{t} takes its full share again ({:.1}% was away)",
                            f * 100.0
                        ),
                        None => format!("{t} was not drained; nothing to restore"),
                    };
                    (detail, false)
                } else if is_scene {
                    self.degraded.remove(&t);
                    self.scene_throttle.remove(&t);
                    (format!("scene {t} restored"), false)
                } else if selfheal_bus::message::valid_key(&t) {
                    // A key, an account or a client: lift whatever limits it.
                    let lifted = [
                        self.key_throttle.remove(&t).map(|_| "throttle"),
                        self.isolated.remove(&t).then_some("isolation"),
                        self.blocked.remove(&t).then_some("block"),
                    ];
                    let lifted: Vec<&str> = lifted.into_iter().flatten().collect();
                    let detail = if lifted.is_empty() {
                        format!("{t} was not limited; nothing to restore")
                    } else {
                        format!("{t} restored ({} lifted)", lifted.join(", "))
                    };
                    (detail, false)
                } else {
                    return Err(format!("unknown restore target {t:?}"));
                }
            }
            ActionKind::Rollback => {
                if !is_service {
                    return Err(format!("unknown service {t:?}"));
                }
                let c = self.cure(|a| a.spec.kind == FaultKind::BadDeploy && a.spec.target == t);
                (format!("{t} rolled back to its previous version"), c)
            }
            ActionKind::RevertConfig => {
                if !is_service {
                    return Err(format!("unknown service {t:?}"));
                }
                let c =
                    self.cure(|a| a.spec.kind == FaultKind::ConfigMistake && a.spec.target == t);
                (format!("{t} configuration reverted"), c)
            }
            ActionKind::Restart => {
                if !self.is_instance(&t) {
                    return Err(format!("unknown instance {t:?}"));
                }
                self.restarting.insert(t.clone(), self.tick + RESTART_TICKS);
                let c = self.cure(|a| {
                    a.spec.kind == FaultKind::SaturatedHost && a.spec.key.as_deref() == Some(&t)
                });
                (format!("{t} restarting ({RESTART_TICKS} s)"), c)
            }
            ActionKind::IsolateKey => {
                self.isolated.insert(t.clone());
                let c = self.cure(|a| {
                    a.spec.kind == FaultKind::HotAccountContention
                        && a.spec.key.as_deref() == Some(&t)
                });
                (
                    format!("account {t} isolated: its postings are buffered"),
                    c,
                )
            }
            ActionKind::BlockClient => {
                self.blocked.insert(t.clone());
                let c = self.cure(|a| {
                    a.spec.kind == FaultKind::AbusiveClient && a.spec.key.as_deref() == Some(&t)
                });
                (format!("client {t} blocked"), c)
            }
        };
        self.truth.actions.push(AppliedAction {
            ts: now,
            tick: self.tick,
            key: cmd.key.clone(),
            kind: cmd.kind,
            target: cmd.target.clone(),
            params: cmd.params.clone(),
            detail: detail.clone(),
            cured,
        });
        Ok(detail)
    }
}

fn describe(f: &FaultSpec) -> String {
    let key = f.key.as_deref().unwrap_or("");
    match f.kind {
        FaultKind::ChannelDegradation => format!(
            "{} degraded: success {:.0}%, p99 {:.0} ms",
            f.target,
            f.success.unwrap_or(f.magnitude()) * 100.0,
            f.latency_ms.unwrap_or(900.0)
        ),
        FaultKind::BadDeploy => format!(
            "bad deploy of {}: {:.0}% of its requests fail",
            f.target,
            f.magnitude() * 100.0
        ),
        FaultKind::ConfigMistake => {
            format!("config mistake on {}: ×{} slower", f.target, f.magnitude())
        }
        FaultKind::HotItemSurge => format!("traffic surge on {key} in {}", f.target),
        FaultKind::HotAccountContention => {
            format!("lock contention on hot account {key} in {}", f.target)
        }
        FaultKind::SlowDatabase => format!(
            "{} ×{} slower; the connection pool fills",
            f.target,
            f.magnitude()
        ),
        FaultKind::SaturatedHost => format!("host of {key} saturated"),
        FaultKind::IdcNetworkFailure => format!("network failure in {}", f.target),
        FaultKind::AbusiveClient => format!("abusive client {key} floods {}", f.target),
        FaultKind::RequestStorm => format!("duplicate request storm on {key} in {}", f.target),
    }
}

/// Ticks over which an action's effect on loss is judged.
pub const HARM_WINDOW_TICKS: u64 = 30;

/// Replays `scenario` from `start_ms` for `ticks` ticks, applying each
/// action before the tick after the one it was recorded at, as the live run
/// did. The platform is deterministic, so with every action of a run this
/// reproduces its truth exactly; without one, it shows what that action did.
pub fn replay(
    topo: &Topology,
    scenario: &Scenario,
    start_ms: i64,
    ticks: u64,
    actions: &[&AppliedAction],
) -> Truth {
    let mut p = Platform::new(topo.clone(), scenario, start_ms);
    let mut next = 0;
    for _ in 0..ticks {
        while let Some(a) = actions.get(next).filter(|a| a.tick <= p.tick) {
            let cmd = Command {
                key: a.key.clone(),
                kind: a.kind,
                target: a.target.clone(),
                params: a.params.clone(),
            };
            let _ = p.apply(&cmd);
            next += 1;
        }
        p.step();
    }
    p.truth
}

/// For each action of a run, whether it made things worse: the loss over
/// the [`HARM_WINDOW_TICKS`] after it is higher than in a replay of the same
/// run without it, by more than 0.5 % and 10 payments (the replay draws the
/// same noise, so the difference is the action's own effect).
pub fn harmful_actions(
    topo: &Topology,
    scenario: &Scenario,
    start_ms: i64,
    truth: &Truth,
) -> Vec<bool> {
    let ticks = truth.loss_by_tick.len() as u64;
    (0..truth.actions.len())
        .map(|i| {
            let others: Vec<&AppliedAction> = truth
                .actions
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a)
                .collect();
            let without = replay(topo, scenario, start_ms, ticks, &others);
            let a = &truth.actions[i];
            let with_it = truth.loss_window(a.tick, HARM_WINDOW_TICKS);
            with_it > without.loss_window(a.tick, HARM_WINDOW_TICKS) * 1.005 + 10.0
        })
        .collect()
}

#[cfg(test)]
mod tests;
