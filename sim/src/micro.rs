//! A generic microservice world, beside the payment platform: a seeded
//! random service graph of 8–30 services, each with two or three pods,
//! reporting Kubernetes-style indicators under the names such exporters
//! use (`CpuUsage(m)`, `MemoryUsage(Mi)`, `PodSuccessRate(%)`,
//! `LatencyP99`...), and one injected fault: `cpu_hog`, `memory_leak` or
//! `disk_hog` on one pod, `network_delay`, `packet_loss` or
//! `error_returns` on a service, or a `bad_deploy` of a service; with
//! `changes`, the change notices around it (healthy deploys, the bad one).
//!
//! Latency and errors propagate up the call graph the way they do in such
//! systems: a caller's latency includes its callees' (weighted by how often
//! it calls them), and a callee's errors fail a share of its callers'
//! requests. A hog or a leak slows its pod, and through it the service.
//!
//! The world writes what `selfheal replay` reads (`metrics.csv` in long
//! form, `dependencies.csv`) and the truth to score against, so that
//! localization is drilled on graphs and names it was not written for.

use std::{collections::BTreeMap, fmt::Write as _};

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// The fault kinds of the generic world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroFault {
    /// One pod's CPU pinned at its limit: that pod slows.
    CpuHog,
    /// One pod's memory grows until it thrashes: that pod slows.
    MemoryLeak,
    /// Every call to the service takes longer.
    NetworkDelay,
    /// Packets to the service are lost: retransmissions slow it and some
    /// requests fail.
    PacketLoss,
    /// The service returns errors.
    ErrorReturns,
    /// One pod writes to its disk flat out (a runaway log, a stress
    /// test): its disk traffic soars and it slows a little on I/O wait;
    /// its resource is the main trace.
    DiskHog,
    /// A deploy of the service breaks it some time later: the new version
    /// returns errors, or is slower and hungrier for CPU on every pod. The
    /// deploy is in the recording's change notices (needs `changes`).
    BadDeploy,
}

impl MicroFault {
    /// The cause name diagnosis should give it.
    pub const fn cause(self) -> &'static str {
        match self {
            MicroFault::CpuHog => "cpu_hog",
            MicroFault::MemoryLeak => "memory_leak",
            MicroFault::NetworkDelay => "network_delay",
            MicroFault::PacketLoss => "packet_loss",
            MicroFault::ErrorReturns => "error_returns",
            MicroFault::DiskHog => "disk_saturation",
            MicroFault::BadDeploy => "bad_deploy",
        }
    }

    /// Whether it hits one pod rather than the whole service.
    pub const fn on_pod(self) -> bool {
        matches!(
            self,
            MicroFault::CpuHog | MicroFault::MemoryLeak | MicroFault::DiskHog
        )
    }
}

/// A scenario of the generic world (`sim/scenarios/micro/*.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MicroScenario {
    /// Name.
    pub name: String,
    /// Seed of the graph, the traffic and the fault's target.
    pub seed: u64,
    /// Services (8..=64; a world of more than 30 is named as Train Ticket
    /// names its own, `ts-<name>-service`).
    pub services: usize,
    /// The fault.
    pub fault: MicroFault,
    /// Seconds of normal operation before the fault.
    #[serde(default = "default_start")]
    pub start_s: u64,
    /// Seconds the recording lasts.
    #[serde(default = "default_duration")]
    pub duration_s: u64,
    /// Seconds between samples.
    #[serde(default = "default_step")]
    pub step_s: u64,
    /// A rougher world, closer to what real exporters write: noise that
    /// wanders (about a minute of memory) on top of the per-sample noise,
    /// one-sample spikes (a GC pause, a scrape that caught a burst), 1 %
    /// of the samples missing, and the fault at a random strength from a
    /// quarter of the default to the default.
    #[serde(default)]
    pub rough: bool,
    /// How the recording is written: per pod under exporter names (the
    /// default) or wide, as benchmark suites export theirs.
    #[serde(default)]
    pub shape: MicroShape,
    /// Whether the recording carries change notices (`changes.jsonl`):
    /// healthy deploys around the fault — one of a service that calls the
    /// faulty one and one of another service shortly before it, one long
    /// before — and, for [`MicroFault::BadDeploy`], the deploy that breaks
    /// it. They draw from a stream of their own: the metrics of a seed are
    /// the same with them or without.
    #[serde(default)]
    pub changes: bool,
    /// Whether the pods form writes its traffic, errors, network and disk
    /// series as the cumulative counters services expose, exported raw
    /// without `rate()` (`requests_total`, `errors_total`,
    /// `network_receive_bytes_total`, `network_transmit_bytes_total`,
    /// `fs_write_bytes_total`), the last service's restarting a third of
    /// the way in (its counts back to zero). The metrics are otherwise the
    /// same.
    #[serde(default)]
    pub counters: bool,
    /// Whether the pods form writes each service's median latency and
    /// request rate as a request timer's cumulative counters, as
    /// Micrometer exposes a timer without percentiles and a Prometheus
    /// export without `rate()` leaves them:
    /// `http_server_requests_seconds_count` (the requests served) and
    /// `http_server_requests_seconds_sum` (the seconds they took), the
    /// last service's restarting a third of the way in. Its mean latency is
    /// the sum over the count (the median read the same draw). The metrics
    /// are otherwise the same.
    #[serde(default)]
    pub timers: bool,
    /// Whether the fault hits the entry service, the front end users call,
    /// rather than a service it calls: no caller then shows it, and its
    /// delay adds to a latency already the sum of its callees'.
    #[serde(default)]
    pub at_entry: bool,
    /// Whether the recording also carries the service mesh's median
    /// latency of each call edge, as its caller's and its callee's proxies
    /// report it: `metrics/source_50.csv` and `metrics/destination_50.csv`,
    /// a `time` and a `timestamp` column and one column
    /// `<caller>_<callee>` per edge ([`MicroRecording::edge_latency`]), as
    /// Nezha and MicroRCA ship them. They draw from a stream of their own:
    /// the metrics of a seed are the same with them or without.
    #[serde(default)]
    pub edge_latency: bool,
}

impl MicroScenario {
    /// The same scenario sampled every `step` seconds: the normal stretch
    /// and the fault keep their number of steps.
    pub fn at_step(mut self, step: u64) -> Self {
        let k = step as f64 / self.step_s.max(1) as f64;
        self.start_s = (self.start_s as f64 * k).round() as u64;
        self.duration_s = (self.duration_s as f64 * k).round() as u64;
        self.step_s = step;
        self
    }

    /// The same scenario in a larger world: 31 to 64 services (the size
    /// of the largest benchmark applications), drawn from its seed, named
    /// as Train Ticket names its own. Everything else is drawn as before
    /// from the same seed, in a different graph.
    pub fn larger(mut self) -> Self {
        let extra = (LARGE_NAMES.len() - NAMES.len()) as u64;
        self.services = NAMES.len() + 1 + (self.seed % extra) as usize;
        self
    }
}

/// How a generic world's recording is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MicroShape {
    /// Long form: per service `LatencyP50`, `LatencyP99`,
    /// `PodSuccessRate(%)`, `RequestsPerSecond`, `ErrorsPerSecond`; per pod
    /// `CpuUsage(m)`, `MemoryUsage(Mi)`, network, retransmissions and disk
    /// writes.
    #[default]
    Pods,
    /// One wide `metrics.csv`, a `time` column and a column per service
    /// and metric, as root-cause benchmark suites export theirs:
    /// `<service>_cpu` (cores), `_mem` (bytes), `_diskio` (bytes/s),
    /// `_latency-50` and `_latency-90` (s), `_workload` (requests/s).
    /// Service totals only (a pod's fault is diluted by its siblings), no
    /// error or success series, and every series scraped every 5 s (held
    /// between scrapes at finer steps, each at its own phase).
    Wide,
    /// The other wide export benchmark suites ship (their second
    /// monitoring pipeline): `<service>_cpu`, `_mem`, `_latency` (the
    /// mean, s), `_load` (requests/s) and `_error` (errors/s), scraped
    /// every 5 s as [`MicroShape::Wide`], and the time column written
    /// again at the end (`time.1`, as a data frame re-read and written
    /// again leaves it).
    WideLoad,
}

impl MicroShape {
    /// Whether it is one of the wide forms.
    pub fn is_wide(self) -> bool {
        matches!(self, MicroShape::Wide | MicroShape::WideLoad)
    }
}

const fn default_start() -> u64 {
    300
}
const fn default_duration() -> u64 {
    420
}
const fn default_step() -> u64 {
    1
}

/// What was injected, to score against.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MicroTruth {
    /// The faulty service.
    pub service: String,
    /// The faulty pod, for pod faults.
    pub pod: Option<String>,
    /// The fault.
    pub fault: MicroFault,
    /// When it began, ms.
    pub start_ms: i64,
    /// Every pod of the faulty service.
    pub pods: Vec<String>,
    /// The change notice that caused the fault ([`MicroFault::BadDeploy`]).
    pub change: Option<String>,
    /// The healthy change notices, which no diagnosis should blame.
    pub healthy_changes: Vec<String>,
}

/// A generated recording.
pub struct MicroRecording {
    /// `metrics.csv`: `timestamp,service,instance,metric,value`.
    pub metrics: String,
    /// `dependencies.csv`: `source,target`.
    pub dependencies: String,
    /// `changes.jsonl` (empty without `changes`).
    pub changes: String,
    /// The truth.
    pub truth: MicroTruth,
    /// Samples in `metrics.csv` (its rows in long form).
    pub rows: usize,
    /// With [`MicroScenario::edge_latency`]: `source_50.csv` and
    /// `destination_50.csv`, the median latency of each call edge (s) as
    /// the caller's and the callee's proxies report it.
    pub edge_latency: Option<(String, String)>,
}

const NAMES: [&str; 30] = [
    "frontend",
    "checkout",
    "cart",
    "catalog",
    "payment",
    "shipping",
    "currency",
    "email",
    "recommend",
    "ad",
    "user",
    "order",
    "inventory",
    "search",
    "review",
    "auth",
    "session",
    "pricing",
    "tax",
    "fraud",
    "ledger",
    "notify",
    "media",
    "profile",
    "wishlist",
    "coupon",
    "quote",
    "geo",
    "rating",
    "audit",
];

/// The services of a world larger than [`NAMES`] holds (31 to 64, the
/// size of the largest benchmark applications), named as Train Ticket
/// names its own: `ts-<name>-service`, hyphens inside a service's name.
const LARGE_NAMES: [&str; 64] = [
    "ui-dashboard",
    "auth",
    "user",
    "verification-code",
    "station",
    "train",
    "config",
    "security",
    "execute",
    "contacts",
    "order",
    "order-other",
    "travel",
    "travel2",
    "preserve",
    "preserve-other",
    "basic",
    "ticketinfo",
    "price",
    "notification",
    "inside-payment",
    "payment",
    "rebook",
    "cancel",
    "assurance",
    "seat",
    "travel-plan",
    "route",
    "route-plan",
    "food",
    "food-map",
    "station-food",
    "train-food",
    "consign",
    "consign-price",
    "admin-basic-info",
    "admin-order",
    "admin-route",
    "admin-travel",
    "admin-user",
    "news",
    "voucher",
    "delivery",
    "wait-order",
    "avatar",
    "gateway",
    "ticket-office",
    "cart",
    "coupon",
    "invoice",
    "refund",
    "ledger",
    "audit",
    "search",
    "schedule",
    "platform",
    "luggage",
    "insurance",
    "loyalty",
    "geo",
    "rating",
    "media",
    "report",
    "pricing-rule",
];

/// The epoch of every recording, s.
pub const START_S: i64 = 1_760_000_000;

struct Svc {
    name: String,
    callees: Vec<(usize, f64)>,
    pods: Vec<String>,
    own_ms: f64,
    own_err: f64,
    cpu_m: f64,
    mem_mi: f64,
    /// Disk writes per pod at 100 requests a second, bytes/s.
    disk_bps: f64,
}

/// What a rough world adds to each value it writes (see
/// [`MicroScenario::rough`]); one wandering state per series, in the
/// order the series are written at every step.
struct Roughness {
    on: bool,
    /// Per-step persistence of the wandering noise.
    phi: f64,
    wander: Vec<f64>,
    slot: usize,
}

/// How a series' samples misbehave in a rough world.
#[derive(Clone, Copy, PartialEq)]
enum Spiky {
    /// Latency, CPU, network, error counts: an occasional sample far
    /// above the rest.
    Yes,
    /// Memory, ratios: only the wandering and the gaps.
    No,
}

impl Roughness {
    /// `v` as a rough world writes it (`None`: a missing sample); `sd` is
    /// the series' own per-sample noise, which sets how far it wanders.
    fn apply(
        &mut self,
        v: f64,
        sd: f64,
        spiky: Spiky,
        rng: &mut Xoshiro256PlusPlus,
        noise: &Normal<f64>,
    ) -> Option<f64> {
        if !self.on {
            return Some(v);
        }
        if self.slot == self.wander.len() {
            self.wander.push(noise.sample(rng));
        }
        let w = &mut self.wander[self.slot];
        self.slot += 1;
        *w = self.phi * *w + (1.0 - self.phi * self.phi).sqrt() * noise.sample(rng);
        let mut out = v * (1.0 + 2.0 * sd * *w).max(0.0);
        if spiky == Spiky::Yes && rng.gen_bool(0.003) {
            out *= rng.gen_range(1.5..4.0);
        }
        (!rng.gen_bool(0.01)).then_some(out)
    }
}

/// Generates `sc`'s recording. Every number is drawn from `sc.seed`: the
/// same scenario gives the same bytes.
pub fn generate(sc: &MicroScenario) -> Result<MicroRecording, String> {
    if !(8..=LARGE_NAMES.len()).contains(&sc.services) {
        return Err(format!(
            "{}: services must be 8..={}",
            sc.name,
            LARGE_NAMES.len()
        ));
    }
    if sc.step_s == 0 || sc.start_s >= sc.duration_s || sc.start_s < 60 * sc.step_s {
        return Err(format!(
            "{}: needs step_s > 0 and at least 60 steps of normal operation before start_s < duration_s",
            sc.name
        ));
    }
    if sc.fault == MicroFault::BadDeploy && !sc.changes {
        return Err(format!(
            "{}: a bad_deploy needs changes = true (its deploy is a change notice)",
            sc.name
        ));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(sc.seed);
    let large = sc.services > NAMES.len();
    let mut names: Vec<&str> = if large {
        LARGE_NAMES.to_vec()
    } else {
        NAMES.to_vec()
    };
    names[1..].shuffle(&mut rng);
    let mut svcs: Vec<Svc> = Vec::new();
    for (i, n) in names.iter().take(sc.services).enumerate() {
        let name = if large {
            format!("ts-{n}-service")
        } else {
            format!("{n}service")
        };
        let hash: u32 = rng.r#gen();
        let pods = (0..rng.gen_range(2..=3))
            .map(|k| format!("{name}-{:08x}-{k}", hash))
            .collect();
        svcs.push(Svc {
            name,
            callees: Vec::new(),
            pods,
            own_ms: rng.gen_range(3.0..25.0),
            own_err: rng.gen_range(0.0005..0.003),
            cpu_m: rng.gen_range(80.0..400.0),
            mem_mi: rng.gen_range(120.0..900.0),
            disk_bps: 0.0,
        });
        // Every service but the first is called by one or two earlier ones.
        if i > 0 {
            for _ in 0..rng.gen_range(1..=2) {
                let caller = rng.gen_range(0..i);
                if !svcs[caller].callees.iter().any(|(c, _)| *c == i) {
                    let share = rng.gen_range(0.3..1.0);
                    svcs[caller].callees.push((i, share));
                }
            }
        }
    }
    let drawn = rng.gen_range(1..svcs.len());
    let target = if sc.at_entry { 0 } else { drawn };
    let pod = rng.gen_range(0..svcs[target].pods.len());
    // A rough world's fault comes at a random strength.
    let strength = if sc.rough {
        rng.gen_range(0.25..1.0)
    } else {
        1.0
    };
    let mut rough = Roughness {
        on: sc.rough,
        phi: (-(sc.step_s as f64) / 60.0).exp(),
        wander: Vec::new(),
        slot: 0,
    };
    // The disk series draw from a stream of their own, so that adding
    // them left every other series of a seed as it was.
    let mut disk_rng = Xoshiro256PlusPlus::seed_from_u64(sc.seed ^ 0xd15c);
    for s in &mut svcs {
        s.disk_bps = disk_rng.gen_range(20_000.0..400_000.0);
    }
    let mut disk_rough = Roughness {
        on: sc.rough,
        phi: rough.phi,
        wander: Vec::new(),
        slot: 0,
    };
    let n = svcs.len();
    let notices = if sc.changes {
        Notices::draw(sc, &svcs, target)
    } else {
        Notices::default()
    };
    // Each service's share of the entry traffic.
    let mut reach = vec![0.0; n];
    reach[0] = 1.0;
    for i in 0..n {
        for (c, share) in svcs[i].callees.clone() {
            reach[c] += reach[i] * share;
        }
    }
    let noise = Normal::new(0.0, 1.0).map_err(|e| e.to_string())?;
    let mut csv = String::from("timestamp,service,instance,metric,value\n");
    let mut wide = sc.shape.is_wide().then(|| Wide::new(sc, &svcs));
    let mut rows = 0;
    let steps = sc.duration_s / sc.step_s;
    let fault_step = sc.start_s / sc.step_s;
    let mut leak = 0.0;
    // The mesh's latency per call edge, from a stream of its own.
    let edges: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| svcs[i].callees.iter().map(move |(c, _)| (i, *c)))
        .collect();
    let mut edge_rng = Xoshiro256PlusPlus::seed_from_u64(sc.seed ^ 0x0ed9_e1a7);
    let mut edge_csv = sc.edge_latency.then(|| {
        let header: Vec<String> = edges
            .iter()
            .map(|(a, b)| format!("{}_{}", svcs[*a].name, svcs[*b].name))
            .collect();
        let h = format!("time,timestamp,{}\n", header.join(","));
        (h.clone(), h)
    });
    // The counters' counts so far, by (service, pod, counter).
    let mut totals: Option<Counts> =
        (sc.counters && sc.shape == MicroShape::Pods).then(Counts::new);
    // The request timers' counts and sums so far, by service.
    let mut timers: Option<BTreeMap<String, (f64, f64)>> =
        (sc.timers && sc.shape == MicroShape::Pods).then(BTreeMap::new);
    for k in 0..steps {
        let ts = START_S + (k * sc.step_s) as i64;
        if k == steps / 3
            && let Some(last) = svcs.last()
        {
            // The last service restarts: its counts start over.
            if let Some(t) = totals.as_mut() {
                t.retain(|(svc, _, _), _| *svc != last.name);
            }
            if let Some(t) = timers.as_mut() {
                t.remove(&last.name);
            }
        }
        rough.slot = 0;
        disk_rough.slot = 0;
        let on = k >= fault_step;
        let since = if on { (k - fault_step) * sc.step_s } else { 0 } as f64;
        let entry_rps = 200.0
            * (1.0 + 0.1 * ((k as f64) / 600.0).sin())
            * (1.0 + 0.02 * noise.sample(&mut rng));
        // Per service, bottom-up (callees have higher indices): its own
        // latency and error rate, then with its callees'.
        let mut lat = vec![0.0; n];
        let mut tail = vec![0.0; n];
        let mut err = vec![0.0; n];
        let mut pod_slow: Vec<Vec<f64>> = svcs.iter().map(|s| vec![1.0; s.pods.len()]).collect();
        if on && target < n {
            match sc.fault {
                // A pinned CPU queues that pod's requests.
                MicroFault::CpuHog => pod_slow[target][pod] = 1.0 + 7.0 * strength,
                // A leak slows the pod as it swaps and collects, until
                // requests time out on it.
                MicroFault::MemoryLeak => {
                    leak = (since / 30.0).min(1.0);
                    pod_slow[target][pod] = 1.0 + 15.0 * strength * leak;
                }
                // I/O wait slows the pod a little.
                MicroFault::DiskHog => pod_slow[target][pod] = 1.0 + 0.5 * strength,
                _ => {}
            }
        }
        for i in (0..n).rev() {
            let s = &svcs[i];
            let pods = pod_slow[i].len() as f64;
            let slow: f64 = pod_slow[i].iter().sum::<f64>() / pods;
            let worst = pod_slow[i].iter().copied().fold(1.0, f64::max);
            let mut own = s.own_ms * slow;
            let mut own_tail = s.own_ms * worst;
            // A slow pod times out a share of its own requests.
            let mut e = s.own_err + 0.01 * (worst - 1.0) / pods;
            if on && i == target {
                match sc.fault {
                    MicroFault::NetworkDelay => {
                        own += 120.0 * strength;
                        own_tail += 120.0 * strength;
                    }
                    MicroFault::PacketLoss => {
                        own += 60.0 * strength;
                        own_tail += 200.0 * strength;
                        e += 0.04 * strength;
                    }
                    MicroFault::ErrorReturns => e += 0.15 * strength,
                    MicroFault::BadDeploy if notices.slower => {
                        own += 80.0 * strength;
                        own_tail += 80.0 * strength;
                    }
                    MicroFault::BadDeploy => e += 0.15 * strength,
                    _ => {}
                }
            }
            let mut l = own;
            let mut lt = own_tail;
            let mut ok = 1.0 - e;
            for (c, share) in &s.callees {
                l += share * lat[*c];
                lt += share * tail[*c];
                ok *= 1.0 - share * err[*c];
            }
            lat[i] = l;
            tail[i] = lt.max(l);
            err[i] = (1.0 - ok).clamp(0.0, 1.0);
        }
        if let Some((src, dst)) = edge_csv.as_mut() {
            // A call's median is about 0.6 of the callee's mean (ms → s);
            // the caller's proxy adds the hop.
            // As Go prints a time, the way these files come.
            let time = format!(
                "{} +0000 UTC m=+0.1",
                selfheal_bus::time::format_utc(ts).unwrap_or_default()
            );
            let _ = write!(src, "{time},{ts}");
            let _ = write!(dst, "{time},{}", ts + 1);
            for (_, c) in &edges {
                let med = lat[*c] * 0.6 / 1000.0;
                let _ = write!(
                    src,
                    ",{:.6}",
                    (med + 0.0005) * (1.0 + 0.04 * noise.sample(&mut edge_rng))
                );
                let _ = write!(
                    dst,
                    ",{:.6}",
                    med * (1.0 + 0.04 * noise.sample(&mut edge_rng))
                );
            }
            src.push('\n');
            dst.push('\n');
        }
        for (i, s) in svcs.iter().enumerate() {
            let rps = entry_rps * reach[i];
            let l = lat[i] * (1.0 + 0.04 * noise.sample(&mut rng));
            let e = (err[i] * (1.0 + 0.1 * noise.sample(&mut rng))).clamp(0.0, 1.0);
            let p99 = tail[i] * 1.8 * (1.0 + 0.05 * noise.sample(&mut rng));
            let served = rps * (1.0 + 0.02 * noise.sample(&mut rng));
            if let Some(w) = wide.as_mut() {
                w.service(l, p99, served, rps * e);
            }
            use Spiky::{No, Yes};
            let svc_rows: [(&str, f64, f64, Spiky); 5] = [
                ("LatencyP50", l * 0.6, 0.04, Yes),
                ("LatencyP99", p99, 0.05, Yes),
                ("PodSuccessRate(%)", 100.0 * (1.0 - e), 0.0, No),
                ("RequestsPerSecond", served, 0.02, No),
                ("ErrorsPerSecond", rps * e, 0.1, Yes),
            ];
            // What the timer reads of this step: the median as read, the
            // requests as read (or as served, unread: the count goes on).
            let (mut median, mut requests) = (None, served);
            for (m, v, sd, spiky) in svc_rows {
                let read = rough.apply(v, sd, spiky, &mut rng, &noise);
                if timers.is_some() && m == "LatencyP50" {
                    median = read;
                    continue;
                }
                if timers.is_some() && m == "RequestsPerSecond" {
                    requests = read.unwrap_or(v).max(0.0);
                    continue;
                }
                let w = counted(totals.as_mut(), sc.step_s, (&s.name, "", m), v, read);
                write_sample(&mut csv, ts, &s.name, "", w.0, w.1);
                rows += 1;
            }
            if let Some(t) = timers.as_mut() {
                let (count, sum) = t.entry(s.name.clone()).or_default();
                let n = requests * sc.step_s as f64;
                // The mean is the median over 0.6; in seconds.
                *count += n;
                *sum += n * median.unwrap_or(l * 0.6) / 0.6 / 1e3;
                for (m, v) in [
                    ("http_server_requests_seconds_count", *count),
                    ("http_server_requests_seconds_sum", *sum),
                ] {
                    write_sample(&mut csv, ts, &s.name, "", m, median.map(|_| v));
                    rows += 1;
                }
            }
            let per_pod = rps / s.pods.len() as f64;
            for (p, name) in s.pods.iter().enumerate() {
                let hog = on && i == target && p == pod;
                // A slower new version burns more CPU on every pod.
                let hungry =
                    if on && i == target && sc.fault == MicroFault::BadDeploy && notices.slower {
                        1.0 + strength
                    } else {
                        1.0
                    };
                let cpu = if hog && sc.fault == MicroFault::CpuHog {
                    1000.0
                } else {
                    s.cpu_m * (0.6 + 0.4 * per_pod / 100.0).min(3.0) * hungry
                } * (1.0 + 0.03 * noise.sample(&mut rng));
                let mem = if hog && sc.fault == MicroFault::MemoryLeak {
                    s.mem_mi * (1.0 + 2.0 * leak)
                } else {
                    s.mem_mi
                } * (1.0 + 0.01 * noise.sample(&mut rng));
                let lost = if on && i == target && sc.fault == MicroFault::PacketLoss {
                    0.05 * strength
                } else {
                    0.0005
                };
                let pod_rows: [(&str, f64, f64, Spiky); 5] = [
                    ("CpuUsage(m)", cpu, 0.03, Yes),
                    ("MemoryUsage(Mi)", mem, 0.01, No),
                    (
                        "NetworkReceiveBytes",
                        per_pod * 2048.0 * (1.0 + 0.03 * noise.sample(&mut rng)),
                        0.03,
                        Yes,
                    ),
                    (
                        "NetworkTransmitBytes",
                        per_pod * 4096.0 * (1.0 + 0.03 * noise.sample(&mut rng)),
                        0.03,
                        Yes,
                    ),
                    (
                        "TcpRetransRatio",
                        lost * (1.0 + 0.1 * noise.sample(&mut rng).abs()),
                        0.1,
                        Yes,
                    ),
                ];
                for (m, v, sd, spiky) in pod_rows {
                    let read = rough.apply(v, sd, spiky, &mut rng, &noise);
                    let w = counted(totals.as_mut(), sc.step_s, (&s.name, name, m), v, read);
                    write_sample(&mut csv, ts, &s.name, name, w.0, w.1);
                    rows += 1;
                }
                let disk = s.disk_bps
                    * (0.8 + 0.2 * per_pod / 100.0)
                    * if hog && sc.fault == MicroFault::DiskHog {
                        1.0 + 20.0 * strength
                    } else {
                        1.0
                    }
                    * (1.0 + 0.05 * noise.sample(&mut disk_rng));
                let read = disk_rough.apply(disk, 0.05, Spiky::Yes, &mut disk_rng, &noise);
                let w = counted(
                    totals.as_mut(),
                    sc.step_s,
                    (&s.name, name, "FsWriteBytes"),
                    disk,
                    read,
                );
                write_sample(&mut csv, ts, &s.name, name, w.0, w.1);
                rows += 1;
                if let Some(w) = wide.as_mut() {
                    w.pod(cpu, mem, disk);
                }
            }
        }
        if let Some(w) = wide.as_mut() {
            w.row(ts, &noise);
        }
    }
    let (metrics, rows) = match wide {
        Some(w) => (w.csv, w.rows),
        None => (csv, rows),
    };
    let mut deps = String::from("source,target\n");
    for s in &svcs {
        for (c, _) in &s.callees {
            let _ = writeln!(deps, "{},{}", s.name, svcs[*c].name);
        }
    }
    let t = &svcs[target];
    Ok(MicroRecording {
        metrics,
        dependencies: deps,
        changes: notices.jsonl,
        rows,
        edge_latency: edge_csv,
        truth: MicroTruth {
            service: t.name.clone(),
            pod: sc.fault.on_pod().then(|| t.pods[pod].clone()),
            fault: sc.fault,
            start_ms: (START_S + sc.start_s as i64) * 1000,
            pods: t.pods.clone(),
            change: notices.bad,
            healthy_changes: notices.healthy,
        },
    })
}

/// A scenario's change notices ([`MicroScenario::changes`]).
#[derive(Default)]
struct Notices {
    /// `changes.jsonl`, oldest first.
    jsonl: String,
    /// The id of the deploy that breaks the faulty service.
    bad: Option<String>,
    /// The ids of the healthy ones.
    healthy: Vec<String>,
    /// Whether the bad version is slower (else it returns errors).
    slower: bool,
}

impl Notices {
    /// The notices of `sc`, whose fault hits `svcs[target]`, from a
    /// stream of their own. A deploy's effect comes up to 15 steps or
    /// 7.5 minutes after it, whichever is longer (a KPI breaking as
    /// traffic reaches the new pods, a cache warming down); healthy
    /// deploys of a caller of the faulty service and of another service
    /// come as close before the fault, one more long before it.
    fn draw(sc: &MicroScenario, svcs: &[Svc], target: usize) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(sc.seed ^ 0x00de_910e);
        let step = sc.step_s as f64;
        let start = START_S as f64 + sc.start_s as f64;
        // The first deploy after the detectors have learnt (60 steps).
        let earliest = START_S as f64 + 60.0 * step;
        let within = (15.0 * step).max(450.0);
        let within = within.min(start - earliest);
        let near = |rng: &mut Xoshiro256PlusPlus| start - rng.gen_range(0.0..within);
        let callers: Vec<usize> = (0..svcs.len())
            .filter(|i| svcs[*i].callees.iter().any(|(c, _)| *c == target))
            .collect();
        let mut planned: Vec<(f64, usize, bool)> = Vec::new();
        // The wide form has no error series: a version returning errors
        // would show nothing there.
        let slower = rng.gen_bool(0.5) | (sc.shape == MicroShape::Wide);
        if sc.fault == MicroFault::BadDeploy {
            planned.push((near(&mut rng), target, true));
        }
        if let Some(c) = callers.choose(&mut rng) {
            planned.push((near(&mut rng), *c, false));
        }
        let others: Vec<usize> = (0..svcs.len())
            .filter(|i| *i != target && !callers.contains(i))
            .collect();
        if let Some(o) = others.choose(&mut rng) {
            planned.push((near(&mut rng), *o, false));
        }
        // Long before: more than twice the horizon of any change rule.
        let long_before = start - 2.0 * (20.0 * step).max(600.0);
        if long_before > earliest
            && let Some(o) = others.choose(&mut rng)
        {
            planned.push((rng.gen_range(earliest..long_before), *o, false));
        }
        planned.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out = Notices {
            slower,
            ..Notices::default()
        };
        for (k, (ts, svc, bad)) in planned.into_iter().enumerate() {
            let id = format!("chg-{}", k + 1);
            let name = &svcs[svc].name;
            let _ = writeln!(
                out.jsonl,
                "{{\"ts\":{},\"id\":\"{id}\",\"service\":\"{name}\",\"kind\":\"deploy\",\"author\":\"ci\",\"description\":\"{name} v{}.{}\"}}",
                ts.round() as i64,
                rng.gen_range(1..9),
                rng.gen_range(0..40),
            );
            if bad {
                out.bad = Some(id);
            } else {
                out.healthy.push(id);
            }
        }
        out
    }
}

/// The wide forms of a recording ([`MicroShape::Wide`],
/// [`MicroShape::WideLoad`]), built a step at a time from the same values
/// the long form writes; its roughness and scrape phases draw from a
/// stream of their own.
struct Wide {
    csv: String,
    rows: usize,
    /// The columns written, per service: indices into [`Wide::VALUES`].
    cols: &'static [usize],
    /// The time again at the end of each row (`time.1`).
    time_again: bool,
    /// This step's totals, per service, as [`Wide::VALUES`] lists them.
    now: Vec<[f64; 8]>,
    /// The last scraped value of each column, and its scrape phase.
    held: Vec<Option<f64>>,
    phase: Vec<u64>,
    /// Steps between scrapes.
    every: u64,
    step: u64,
    rough: Roughness,
    rng: Xoshiro256PlusPlus,
}

impl Wide {
    /// Every value a wide form may write: its column name, its noise and
    /// whether it spikes.
    const VALUES: [(&'static str, f64, Spiky); 8] = [
        ("cpu", 0.03, Spiky::Yes),        // cores
        ("mem", 0.01, Spiky::No),         // bytes
        ("diskio", 0.05, Spiky::Yes),     // bytes/s
        ("latency-50", 0.04, Spiky::Yes), // s
        ("latency-90", 0.05, Spiky::Yes), // s
        ("workload", 0.02, Spiky::No),    // requests/s
        ("latency", 0.04, Spiky::Yes),    // the mean, s
        ("error", 0.1, Spiky::Yes),       // errors/s
    ];
    /// The loaded pipeline's request load: the workload, named so.
    const LOAD: usize = 8;

    fn new(sc: &MicroScenario, svcs: &[Svc]) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(sc.seed ^ 0x3d1de);
        let every = 5u64.div_ceil(sc.step_s).max(1);
        let (cols, time_again): (&'static [usize], bool) = match sc.shape {
            MicroShape::WideLoad => (&[0, 1, 6, Self::LOAD, 7], true),
            _ => (&[0, 1, 2, 3, 4, 5], false),
        };
        let n = svcs.len() * cols.len();
        let mut csv = String::from("time");
        for s in svcs {
            for &c in cols {
                let m = if c == Self::LOAD {
                    "load"
                } else {
                    Self::VALUES[c].0
                };
                let _ = write!(csv, ",{}_{m}", s.name);
            }
        }
        if time_again {
            csv.push_str(",time.1");
        }
        csv.push('\n');
        Wide {
            csv,
            rows: 0,
            cols,
            time_again,
            now: Vec::with_capacity(svcs.len()),
            held: vec![None; n],
            phase: (0..n).map(|_| rng.gen_range(0..every)).collect(),
            every,
            step: 0,
            rough: Roughness {
                on: sc.rough,
                phi: (-(sc.step_s as f64) / 60.0).exp(),
                wander: Vec::new(),
                slot: 0,
            },
            rng,
        }
    }

    /// A service's latency (mean, ms), p99 (ms), requests served and
    /// errors (per second); its pods follow.
    fn service(&mut self, mean_ms: f64, p99_ms: f64, served: f64, errors: f64) {
        let p90 = mean_ms + 0.6 * (p99_ms - mean_ms).max(0.0);
        self.now.push([
            0.0,
            0.0,
            0.0,
            mean_ms * 0.6 / 1e3,
            p90 / 1e3,
            served,
            mean_ms / 1e3,
            errors,
        ]);
    }

    /// A pod of the last service: CPU (millicores), memory (MiB), disk
    /// writes (bytes/s).
    fn pod(&mut self, cpu_m: f64, mem_mi: f64, disk: f64) {
        if let Some(t) = self.now.last_mut() {
            t[0] += cpu_m / 1e3;
            t[1] += mem_mi * 1_048_576.0;
            t[2] += disk;
        }
    }

    fn row(&mut self, ts: i64, noise: &Normal<f64>) {
        self.rough.slot = 0;
        let _ = write!(self.csv, "{ts}");
        let mut col = 0;
        for totals in std::mem::take(&mut self.now) {
            for &c in self.cols {
                let c = if c == Self::LOAD { 5 } else { c };
                let (_, sd, spiky) = Self::VALUES[c];
                let v = self.rough.apply(totals[c], sd, spiky, &mut self.rng, noise);
                if (self.step + self.phase[col]).is_multiple_of(self.every) {
                    self.held[col] = v;
                }
                let _ = match self.held[col] {
                    Some(v) => write!(self.csv, ",{v:.6}"),
                    None => write!(self.csv, ","),
                };
                col += 1;
                self.rows += 1;
            }
        }
        if self.time_again {
            let _ = write!(self.csv, ",{ts}");
        }
        self.csv.push('\n');
        self.step += 1;
    }
}

/// A counter's count so far, by (service, pod, counter name).
type Counts = BTreeMap<(String, String, &'static str), f64>;

/// The counter a pods-form rate is exposed as, when it is one.
fn counter_of(metric: &str) -> Option<&'static str> {
    match metric {
        "RequestsPerSecond" => Some("requests_total"),
        "ErrorsPerSecond" => Some("errors_total"),
        "NetworkReceiveBytes" => Some("network_receive_bytes_total"),
        "NetworkTransmitBytes" => Some("network_transmit_bytes_total"),
        "FsWriteBytes" => Some("fs_write_bytes_total"),
        _ => None,
    }
}

/// What to write for a sample: as it is, or, with `totals` and a rate
/// that is a counter, the counter's count after this step (the rate as
/// read, or when the reading is missing the rate itself: the count goes
/// on while nobody looks; the reading stays missing).
fn counted<'a>(
    totals: Option<&mut Counts>,
    step_s: u64,
    (service, pod, metric): (&str, &str, &'a str),
    rate: f64,
    read: Option<f64>,
) -> (&'a str, Option<f64>) {
    match (totals, counter_of(metric)) {
        (Some(t), Some(name)) => {
            let c = t
                .entry((service.to_string(), pod.to_string(), name))
                .or_default();
            *c += read.unwrap_or(rate).max(0.0) * step_s as f64;
            (name, read.map(|_| *c))
        }
        _ => (metric, read),
    }
}

/// One row of `metrics.csv`; a missing sample is written as an empty
/// value, as exporters leave it.
fn write_sample(csv: &mut String, ts: i64, service: &str, pod: &str, metric: &str, v: Option<f64>) {
    let _ = match v {
        Some(v) => writeln!(csv, "{ts},{service},{pod},{metric},{v:.5}"),
        None => writeln!(csv, "{ts},{service},{pod},{metric},"),
    };
}

/// The scenarios of a directory (`*.toml`), by file name; every bad file
/// reported.
pub fn load_dir(dir: &std::path::Path) -> Result<Vec<MicroScenario>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str::<MicroScenario>(&t).map_err(|e| e.to_string()))
        {
            Ok(s) => out.push(s),
            Err(e) => problems.push(format!("{}: {e}", f.display())),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("\n"))
    }
}

/// `per_fault` scenarios of each fault kind, with graphs of 8-30 services
/// and seeds drawn from `seed`: a wider drill than the shipped catalogue,
/// the same for the same seed.
pub fn random(per_fault: usize, seed: u64) -> Vec<MicroScenario> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let faults = [
        MicroFault::CpuHog,
        MicroFault::MemoryLeak,
        MicroFault::NetworkDelay,
        MicroFault::PacketLoss,
        MicroFault::ErrorReturns,
        MicroFault::DiskHog,
    ];
    let mut out = Vec::new();
    for fault in faults {
        for i in 0..per_fault {
            out.push(MicroScenario {
                name: format!("{}_r{i}", fault.cause()),
                seed: rng.gen_range(1..1_000_000),
                services: rng.gen_range(8..=30),
                fault,
                start_s: default_start(),
                duration_s: default_duration(),
                step_s: default_step(),
                rough: false,
                shape: MicroShape::Pods,
                changes: false,
                counters: false,
                timers: false,
                edge_latency: false,
                at_entry: false,
            });
        }
    }
    out
}

/// `n` seeded random [`MicroFault::BadDeploy`] scenarios (with their
/// change notices), drawn from `seed` apart from [`random`]'s: adding them
/// to a drill leaves its other scenarios as they were.
pub fn random_bad_deploys(n: usize, seed: u64) -> Vec<MicroScenario> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xbad_de91);
    (0..n)
        .map(|i| MicroScenario {
            name: format!("bad_deploy_r{i}"),
            seed: rng.gen_range(1..1_000_000),
            services: rng.gen_range(8..=30),
            fault: MicroFault::BadDeploy,
            start_s: default_start(),
            duration_s: default_duration(),
            step_s: default_step(),
            rough: false,
            shape: MicroShape::Pods,
            changes: true,
            counters: false,
            timers: false,
            edge_latency: false,
            at_entry: false,
        })
        .collect()
}

/// Per fault kind, how many scenarios.
pub fn by_fault(s: &[MicroScenario]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for x in s {
        *m.entry(x.fault.cause()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn sc(fault: MicroFault, seed: u64) -> MicroScenario {
        MicroScenario {
            name: "t".into(),
            seed,
            services: 12,
            fault,
            start_s: 120,
            duration_s: 180,
            step_s: 1,
            rough: false,
            shape: MicroShape::Pods,
            changes: false,
            counters: false,
            timers: false,
            edge_latency: false,
            at_entry: false,
        }
    }

    #[test]
    fn the_mesh_s_edge_latency_comes_beside_the_same_metrics_and_shows_the_fault() {
        let mut with = sc(MicroFault::NetworkDelay, 7);
        with.edge_latency = true;
        let a = generate(&with).unwrap();
        let b = generate(&sc(MicroFault::NetworkDelay, 7)).unwrap();
        assert_eq!(a.metrics, b.metrics, "a stream of their own");
        assert!(b.edge_latency.is_none());
        let (src, dst) = a.edge_latency.unwrap();
        let edges = a.dependencies.lines().count() - 1;
        for f in [&src, &dst] {
            let header: Vec<&str> = f.lines().next().unwrap().split(',').collect();
            assert_eq!(&header[..2], ["time", "timestamp"]);
            assert_eq!(header.len(), 2 + edges);
            assert_eq!(f.lines().count(), 1 + 180, "a row a step");
            assert!(f.lines().nth(1).unwrap().contains(" +0000 UTC m=+"));
        }
        // The calls to the delayed service are slower from the fault on,
        // as both ends see them; the caller's end a little more.
        let t = &a.truth.service;
        let header: Vec<&str> = src.lines().next().unwrap().split(',').collect();
        let col = header
            .iter()
            .position(|h| h.ends_with(&format!("_{t}")))
            .expect("the faulty service is called");
        let mean = |f: &str, after: bool| {
            let v: Vec<f64> = f
                .lines()
                .skip(1)
                .enumerate()
                .filter(|(i, _)| (*i >= 120) == after)
                .map(|(_, l)| l.split(',').nth(col).unwrap().parse::<f64>().unwrap())
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(&src, true) > 2.0 * mean(&src, false));
        assert!(mean(&dst, true) > 2.0 * mean(&dst, false));
        assert!(mean(&src, false) > mean(&dst, false));
    }

    /// The mean of the samples of `rec` whose row contains `needle` (a
    /// series: `,<service>,,<metric>,` or `,<pod>,<metric>,`), from the
    /// fault on or before it.
    fn mean_of(rec: &MicroRecording, needle: &str, after: bool) -> f64 {
        let v: Vec<f64> = rec
            .metrics
            .lines()
            .filter(|l| l.contains(needle))
            .filter(|l| {
                let ts: i64 = l.split(',').next().unwrap().parse().unwrap();
                (ts * 1000 >= rec.truth.start_ms) == after
            })
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn a_world_is_the_same_for_a_seed_and_its_fault_shows_where_it_is() {
        let a = generate(&sc(MicroFault::NetworkDelay, 5)).unwrap();
        let b = generate(&sc(MicroFault::NetworkDelay, 5)).unwrap();
        assert_eq!(a.metrics, b.metrics);
        let c = generate(&sc(MicroFault::NetworkDelay, 6)).unwrap();
        assert_ne!(a.metrics, c.metrics);
        assert_eq!(a.rows, a.metrics.lines().count() - 1);
        // The faulty service's p99 is far higher after the start.
        let p99 = |after| mean_of(&a, &format!(",{},,LatencyP99,", a.truth.service), after);
        assert!(
            p99(true) > p99(false) + 150.0,
            "{} {}",
            p99(true),
            p99(false)
        );
        let hog = generate(&sc(MicroFault::CpuHog, 5)).unwrap();
        assert!(hog.truth.pod.is_some());
        // A disk hog: its pod writes many times what it did.
        let disk = generate(&sc(MicroFault::DiskHog, 5)).unwrap();
        let pod = disk.truth.pod.clone().unwrap();
        let writes = |after| mean_of(&disk, &format!(",{pod},FsWriteBytes,"), after);
        assert!(writes(true) > 10.0 * writes(false));
        assert!(
            generate(&MicroScenario {
                services: 65,
                ..sc(MicroFault::CpuHog, 1)
            })
            .is_err()
        );
    }

    #[test]
    fn a_rough_world_misses_samples_wanders_and_is_still_seeded() {
        let smooth = generate(&sc(MicroFault::CpuHog, 5)).unwrap();
        let rough_sc = MicroScenario {
            rough: true,
            ..sc(MicroFault::CpuHog, 5)
        };
        let a = generate(&rough_sc).unwrap();
        assert_eq!(a.metrics, generate(&rough_sc).unwrap().metrics);
        assert_eq!(a.rows, smooth.rows, "the same series and instants");
        let gaps = |m: &str| m.lines().filter(|l| l.ends_with(',')).count();
        assert_eq!(gaps(&smooth.metrics), 0);
        let share = gaps(&a.metrics) as f64 / a.rows as f64;
        assert!((0.005..0.02).contains(&share), "{share}");
        // Wandering noise: a series' neighbouring samples (the entry's
        // first pod's memory, flat but for its noise) are alike far more
        // often than independent noise would make them.
        let series = |m: &str| -> Vec<f64> {
            m.lines()
                .filter(|l| l.contains(",frontendservice,") && l.contains("-0,MemoryUsage(Mi),"))
                .filter_map(|l| l.rsplit(',').next()?.parse().ok())
                .collect()
        };
        let lag1 = |v: &[f64]| {
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
            v.windows(2)
                .map(|w| (w[0] - mean) * (w[1] - mean))
                .sum::<f64>()
                / var
        };
        assert!(lag1(&series(&a.metrics)) > lag1(&series(&smooth.metrics)) + 0.2);
    }

    #[test]
    fn a_wide_recording_has_a_column_per_service_and_metric_scraped_every_5_s() {
        let w = generate(&MicroScenario {
            shape: MicroShape::Wide,
            rough: true,
            ..sc(MicroFault::CpuHog, 5)
        })
        .unwrap();
        let mut lines = w.metrics.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header[0], "time");
        assert_eq!(header.len(), 1 + 12 * 6);
        let col = |name: String| header.iter().position(|h| *h == name).unwrap();
        let cpu = col(format!("{}_cpu", w.truth.service));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 180);
        assert!(rows.iter().all(|r| r.len() == header.len()));
        assert_eq!(w.rows, 180 * 12 * 6);
        // Held between scrapes: a column changes at most every 5 s.
        let changes = rows.windows(2).filter(|p| p[0][cpu] != p[1][cpu]).count();
        assert!((20..=36).contains(&changes), "{changes}");
        // The hog shows in its service's total CPU.
        let mean = |after: bool| -> f64 {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| (r[0].parse::<i64>().unwrap() * 1000 >= w.truth.start_ms) == after)
                .filter_map(|r| r[cpu].parse().ok())
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            mean(true) > mean(false) + 0.1,
            "{} {}",
            mean(true),
            mean(false)
        );
        // The same for a seed, and the long form is as it was.
        assert_eq!(
            w.metrics,
            generate(&MicroScenario {
                shape: MicroShape::Wide,
                rough: true,
                ..sc(MicroFault::CpuHog, 5)
            })
            .unwrap()
            .metrics
        );
    }

    #[test]
    fn the_loaded_wide_form_has_mean_latency_load_and_errors_and_the_time_again() {
        let w = generate(&MicroScenario {
            shape: MicroShape::WideLoad,
            ..sc(MicroFault::ErrorReturns, 5)
        })
        .unwrap();
        let mut lines = w.metrics.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header[0], "time");
        assert_eq!(header.len(), 1 + 12 * 5 + 1);
        assert_eq!(header.last(), Some(&"time.1"));
        let col = |m: &str| {
            let name = format!("{}_{m}", w.truth.service);
            header.iter().position(|h| *h == name).unwrap()
        };
        let (errors, load) = (col("error"), col("load"));
        assert!(header.contains(&&*format!("{}_latency", w.truth.service)));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 180);
        assert!(
            rows.iter()
                .all(|r| r.len() == header.len() && r[0] == r[61])
        );
        assert_eq!(w.rows, 180 * 12 * 5);
        // The faulty service's errors rise; its load does not move.
        let mean = |c: usize, after: bool| -> f64 {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| {
                    (r[0].parse::<i64>().unwrap() * 1000 >= w.truth.start_ms + 10_000) == after
                })
                .filter_map(|r| r[c].parse().ok())
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(errors, true) > 3.0 * mean(errors, false));
        assert!((mean(load, true) / mean(load, false) - 1.0).abs() < 0.1);
    }

    #[test]
    fn counters_count_what_the_rates_said_and_leave_the_rest_alone() {
        let plain = generate(&MicroScenario {
            rough: true,
            ..sc(MicroFault::ErrorReturns, 3)
        })
        .unwrap();
        let counted = generate(&MicroScenario {
            rough: true,
            counters: true,
            edge_latency: false,
            ..sc(MicroFault::ErrorReturns, 3)
        })
        .unwrap();
        let rows = |m: &str| -> Vec<Vec<String>> {
            m.lines()
                .skip(1)
                .map(|l| l.split(',').map(String::from).collect())
                .collect()
        };
        let (a, b) = (rows(&plain.metrics), rows(&counted.metrics));
        assert_eq!(a.len(), b.len());
        let mut last: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
        let (mut checked, mut resets) = (0, 0);
        for (x, y) in a.iter().zip(&b) {
            let Some(name) = counter_of(&x[3]) else {
                assert_eq!(x, y, "not a counter: as it was");
                continue;
            };
            assert_eq!((&x[..3], y[3].as_str()), (&y[..3], name));
            // Missing where the rate was missing.
            assert_eq!(x[4].is_empty(), y[4].is_empty());
            let Ok(count) = y[4].parse::<f64>() else {
                continue;
            };
            let ts: i64 = y[0].parse().unwrap();
            let key = (format!("{}/{}", y[1], y[2]), name.to_string());
            if let Some((t0, c0)) = last.insert(key, (ts, count)) {
                if count < c0 {
                    resets += 1;
                } else if ts == t0 + 1 {
                    // One step on: the count grew by the rate as read.
                    let rate: f64 = x[4].parse().unwrap();
                    assert!(
                        (count - c0 - rate).abs() <= 1e-4 * rate.max(1.0),
                        "{x:?} {y:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        assert!(resets >= 1, "the last service restarted");
        assert_eq!(counted.truth, plain.truth);
    }

    #[test]
    fn timers_count_the_requests_read_and_sum_what_they_took() {
        let plain = generate(&MicroScenario {
            rough: true,
            ..sc(MicroFault::NetworkDelay, 4)
        })
        .unwrap();
        let timed = generate(&MicroScenario {
            rough: true,
            timers: true,
            ..sc(MicroFault::NetworkDelay, 4)
        })
        .unwrap();
        let timer = |m: &str| m.starts_with("http_server_requests_seconds_");
        let replaced = |m: &str| m == "LatencyP50" || m == "RequestsPerSecond";
        let rows = |m: &str, skip: &dyn Fn(&str) -> bool| -> Vec<Vec<String>> {
            m.lines()
                .skip(1)
                .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
                .filter(|r| !skip(&r[3]))
                .collect()
        };
        // Everything else as it was.
        assert_eq!(
            rows(&plain.metrics, &replaced),
            rows(&timed.metrics, &timer)
        );
        // Per (time, service): the median and requests as read, and the
        // timer's count and sum.
        let mut read: BTreeMap<(String, String), [Option<f64>; 4]> = BTreeMap::new();
        for (m, at) in [(&plain.metrics, 0), (&timed.metrics, 2)] {
            for r in rows(m, &|_| false) {
                let k = match r[3].as_str() {
                    "LatencyP50" | "http_server_requests_seconds_count" => at,
                    "RequestsPerSecond" | "http_server_requests_seconds_sum" => at + 1,
                    _ => continue,
                };
                read.entry((r[0].clone(), r[1].clone())).or_default()[k] = r[4].parse().ok();
            }
        }
        let mut last: BTreeMap<String, (i64, f64, f64)> = BTreeMap::new();
        let (mut checked, mut resets) = (0, 0);
        for ((t, svc), [median, rps, count, sum]) in &read {
            let (Some(count), Some(sum)) = (count, sum) else {
                assert!(median.is_none(), "missing where the median was");
                continue;
            };
            let ts: i64 = t.parse().unwrap();
            if let Some((t0, c0, s0)) = last.insert(svc.clone(), (ts, *count, *sum)) {
                if *count < c0 {
                    resets += 1;
                } else if ts == t0 + 1
                    && let (Some(median), Some(rps)) = (median, rps)
                {
                    assert!((count - c0 - rps).abs() <= 1e-3 * rps.max(1.0), "{t} {svc}");
                    let mean_s = (sum - s0) / (count - c0);
                    assert!(
                        (mean_s - median / 0.6 / 1e3).abs() <= 1e-3 * mean_s,
                        "{t} {svc}: {mean_s} against {median}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
        assert!(resets >= 1, "the last service restarted");
        assert_eq!(timed.truth, plain.truth);
    }

    #[test]
    fn change_notices_leave_the_metrics_alone_and_a_bad_deploy_breaks_its_service() {
        let plain = generate(&sc(MicroFault::CpuHog, 5)).unwrap();
        assert!(plain.changes.is_empty());
        let with = generate(&MicroScenario {
            changes: true,
            counters: false,
            timers: false,
            edge_latency: false,
            at_entry: false,
            ..sc(MicroFault::CpuHog, 5)
        })
        .unwrap();
        assert_eq!(with.metrics, plain.metrics, "a stream of their own");
        let notices: Vec<serde_json::Value> = with
            .changes
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(notices.len(), with.truth.healthy_changes.len());
        assert!(with.truth.change.is_none() && notices.len() >= 2);
        // One of them deploys a caller of the faulty service shortly
        // before the fault.
        let start = with.truth.start_ms / 1000;
        let callers: Vec<&str> = with
            .dependencies
            .lines()
            .filter_map(|l| l.split_once(','))
            .filter(|(_, callee)| *callee == with.truth.service)
            .map(|(caller, _)| caller)
            .collect();
        assert!(notices.iter().any(|n| {
            let ts = n["ts"].as_i64().unwrap();
            callers.contains(&n["service"].as_str().unwrap()) && ts <= start && ts > start - 450
        }));
        assert!(
            generate(&sc(MicroFault::BadDeploy, 5)).is_err(),
            "its deploy is a notice"
        );
        // A bad deploy: its notice comes before the fault, and the
        // service fails or slows from then on.
        for seed in 1..=6 {
            let bad = generate(&MicroScenario {
                changes: true,
                counters: false,
                timers: false,
                edge_latency: false,
                at_entry: false,
                ..sc(MicroFault::BadDeploy, seed)
            })
            .unwrap();
            let id = bad.truth.change.clone().unwrap();
            let notice: serde_json::Value = bad
                .changes
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|n| n["id"] == id.as_str())
                .unwrap();
            assert_eq!(notice["service"], bad.truth.service.as_str());
            assert!(notice["ts"].as_i64().unwrap() * 1000 <= bad.truth.start_ms);
            let mean = |metric: &str, after| {
                mean_of(&bad, &format!(",{},,{metric},", bad.truth.service), after)
            };
            let slower = mean("LatencyP50", true) > 1.5 * mean("LatencyP50", false);
            let failing = mean("ErrorsPerSecond", true) > 5.0 * mean("ErrorsPerSecond", false);
            assert!(slower || failing, "seed {seed}");
        }
    }

    #[test]
    fn random_scenarios_are_seeded_and_cover_every_fault() {
        let a = random(3, 9);
        assert_eq!(a, random(3, 9), "the same for the same seed");
        assert_ne!(a, random(3, 10));
        assert_eq!(a.len(), 18);
        assert_eq!(by_fault(&a).len(), 6);
        assert!(by_fault(&a).values().all(|n| *n == 3));
        assert!(a.iter().all(|s| (8..=30).contains(&s.services)));
        for s in &a {
            generate(s).unwrap();
        }
        // A larger world: 31 to 64 services, Train Ticket's names.
        for s in a.into_iter().map(MicroScenario::larger) {
            assert!((31..=64).contains(&s.services), "{}", s.services);
            let rec = generate(&s).unwrap();
            let named: BTreeSet<&str> = rec
                .metrics
                .lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(1))
                .collect();
            assert_eq!(named.len(), s.services);
            assert!(
                named
                    .iter()
                    .all(|n| n.starts_with("ts-") && n.ends_with("-service"))
            );
        }
    }
}
