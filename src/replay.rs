//! `selfheal replay`: the brain (same code, virtual clock) over recorded
//! data, writing the incidents it opens with their ranked hypotheses.
//! Nothing is acted on: the brain runs in dry run. The format is in
//! docs/replay.md.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use selfheal_brain::{Brain, BrainConfig, stats::BrainStats, store::Store};
use selfheal_bus::{
    Bus, ChangeEvent, HotspotReport, IndicatorBatch, KeyCount, Layer, LocalTransport, Sample,
    Subjects, Topology, WIRE_VERSION, encode,
    time::parse_timestamp,
    topology::{Idc, Service, ServiceKind},
};
use serde::Serialize;

/// One timestamp's input.
#[derive(Default)]
struct Instant {
    batches: BTreeMap<(Layer, String, String), Vec<Sample>>,
    changes: Vec<ChangeEvent>,
    hot: BTreeMap<(String, String, String), HotspotReport>,
}

/// Everything read from a replay directory, by time.
pub struct Recording {
    by_time: BTreeMap<i64, Instant>,
    /// The topology (the file, or built from `dependencies.csv`).
    pub topology: Topology,
    /// Rows read from `metrics.csv`.
    pub rows: usize,
}

fn layer(s: &str) -> Option<Layer> {
    match s {
        "business" => Some(Layer::Business),
        "system" | "" => Some(Layer::System),
        "infra" => Some(Layer::Infra),
        _ => None,
    }
}

/// Reads `dir`: `metrics.csv`, `topology.toml` or `dependencies.csv`, and
/// the optional `changes.jsonl` and `hotkeys.csv`. Every malformed line is
/// an error naming its file and line.
pub fn read(dir: &Path) -> anyhow::Result<Recording> {
    let mut by_time: BTreeMap<i64, Instant> = BTreeMap::new();
    let path = dir.join("metrics.csv");
    let mut rd = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let headers = rd.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(t), Some(s), Some(m), Some(v)) = (
        col("timestamp"),
        col("service"),
        col("metric"),
        col("value"),
    ) else {
        bail!(
            "{}:1: needs the columns timestamp, service, metric and value (instance, layer, idc, scene and link are optional)",
            path.display()
        );
    };
    let (inst, lay, idc, scene, link) = (
        col("instance"),
        col("layer"),
        col("idc"),
        col("scene"),
        col("link"),
    );
    let mut rows = 0;
    let mut idcs = BTreeSet::new();
    let mut instances: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (i, rec) in rd.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}:{line}", path.display()))?;
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").trim();
        let at = |what: String| anyhow::anyhow!("{}:{line}: {what}", path.display());
        let ts = parse_timestamp(field(Some(t)))
            .ok_or_else(|| at(format!("unreadable timestamp {:?}", field(Some(t)))))?;
        let service = field(Some(s));
        let metric = field(Some(m));
        if service.is_empty() || metric.is_empty() {
            return Err(at("service and metric must not be empty".into()));
        }
        let value: f64 = field(Some(v))
            .parse()
            .map_err(|_| at(format!("value {:?} is not a number", field(Some(v)))))?;
        if !value.is_finite() {
            return Err(at(format!("value {value} is not finite")));
        }
        let l = layer(field(lay)).ok_or_else(|| {
            at(format!(
                "layer {:?} is not business, system or infra",
                field(lay)
            ))
        })?;
        let idc_name = match field(idc) {
            "" => "default",
            x => x,
        };
        idcs.insert(idc_name.to_string());
        let opt = |c: Option<usize>| Some(field(c)).filter(|x| !x.is_empty()).map(str::to_string);
        if let Some(i) = opt(inst) {
            instances
                .entry((service.to_string(), idc_name.to_string()))
                .or_default()
                .insert(i);
        }
        by_time
            .entry(ts)
            .or_default()
            .batches
            .entry((l, idc_name.to_string(), service.to_string()))
            .or_default()
            .push(Sample {
                scene: opt(scene),
                link: opt(link),
                instance: opt(inst),
                metric: metric.to_string(),
                labels: BTreeMap::new(),
                ts,
                value,
            });
        rows += 1;
    }
    if rows == 0 {
        bail!("{}: no rows", path.display());
    }
    let changes = dir.join("changes.jsonl");
    if changes.exists() {
        let text = std::fs::read_to_string(&changes)
            .with_context(|| format!("reading {}", changes.display()))?;
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let c = selfheal_bus::parse_change(l.as_bytes(), None)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", changes.display(), i + 1))?;
            by_time.entry(c.ts).or_default().changes.push(c);
        }
    }
    let hot = dir.join("hotkeys.csv");
    if hot.exists() {
        read_hot(&hot, &mut by_time)?;
    }
    let topology = if dir.join("topology.toml").exists() {
        let p = dir.join("topology.toml");
        let text = std::fs::read_to_string(&p)?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
    } else if dir.join("dependencies.csv").exists() {
        topology_from_edges(&dir.join("dependencies.csv"), &idcs, &instances)?
    } else {
        bail!(
            "{}: needs topology.toml (docs/topology.md) or dependencies.csv (source,target)",
            dir.display()
        );
    };
    Ok(Recording {
        by_time,
        topology,
        rows,
    })
}

fn read_hot(path: &PathBuf, by_time: &mut BTreeMap<i64, Instant>) -> anyhow::Result<()> {
    let mut rd = csv::Reader::from_path(path)?;
    for (i, rec) in rd
        .deserialize::<(String, String, String, String, u64, String, u64)>()
        .enumerate()
    {
        let (ts, service, idc, dimension, total, key, count) =
            rec.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 2))?;
        let ts = parse_timestamp(&ts).ok_or_else(|| {
            anyhow::anyhow!("{}:{}: unreadable timestamp {ts:?}", path.display(), i + 2)
        })?;
        by_time
            .entry(ts)
            .or_default()
            .hot
            .entry((service.clone(), idc.clone(), dimension.clone()))
            .or_insert_with(|| HotspotReport {
                v: WIRE_VERSION,
                service,
                idc,
                ts,
                dimension,
                total,
                top: Vec::new(),
            })
            .top
            .push(KeyCount { key, count });
    }
    Ok(())
}

/// A topology from call edges: every service an application, the IDCs and
/// instance counts seen in the metrics.
fn topology_from_edges(
    path: &Path,
    idcs: &BTreeSet<String>,
    instances: &BTreeMap<(String, String), BTreeSet<String>>,
) -> anyhow::Result<Topology> {
    let mut rd = csv::Reader::from_path(path)?;
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, rec) in rd.deserialize::<(String, String)>().enumerate() {
        let (src, dst) = rec.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 2))?;
        if src.trim().is_empty() || dst.trim().is_empty() {
            bail!(
                "{}:{}: source and target must not be empty",
                path.display(),
                i + 2
            );
        }
        deps.entry(dst.trim().to_string()).or_default();
        deps.entry(src.trim().to_string())
            .or_default()
            .push(dst.trim().to_string());
    }
    let services = deps
        .into_iter()
        .map(|(name, depends_on)| {
            let n = instances
                .iter()
                .filter(|((s, _), _)| *s == name)
                .map(|(_, v)| v.len())
                .max()
                .unwrap_or(1);
            Service {
                name,
                kind: ServiceKind::App,
                depends_on,
                backup: None,
                instances: n as u32,
                share: None,
            }
        })
        .collect();
    Ok(Topology {
        idcs: idcs
            .iter()
            .map(|name| Idc {
                name: name.clone(),
                traffic_share: 1.0 / idcs.len().max(1) as f64,
            })
            .collect(),
        scenes: Vec::new(),
        links: Vec::new(),
        services,
    })
}

/// One incident as replay reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayIncident {
    /// The stored incident.
    #[serde(flatten)]
    pub incident: selfheal_brain::store::IncidentRow,
    /// Its ranked hypotheses.
    pub hypotheses: Vec<selfheal_brain::store::HypothesisRow>,
    /// What happened, in order: (ts, kind, detail).
    pub timeline: Vec<(i64, String, String)>,
}

/// Runs the brain of `cfg` over `rec` in lockstep and returns its
/// incidents. The brain runs in dry run and accepts any timestamp.
pub async fn run(rec: Recording, mut cfg: BrainConfig) -> anyhow::Result<Vec<ReplayIncident>> {
    cfg.guard.dry_run = true;
    // Recorded time is any time: the skew check is for live traffic.
    cfg.max_skew_s = 100 * 365 * 24 * 3600;
    cfg.listen = None;
    let local = LocalTransport::default();
    let bus: Bus = Arc::new(local);
    let subjects = Subjects::default();
    let store_path = cfg.store.clone();
    let brain = Brain {
        config: cfg,
        bus: bus.clone(),
        subjects: subjects.clone(),
        topology: rec.topology,
    }
    .spawn()
    .await
    .context("starting the brain")?;
    bus.flush().await?;
    let stats = brain.stats.clone();
    let (mut batches, mut contexts) = (0u64, 0u64);
    let mut seq = 0;
    // The brain's clock moves with the indicators it has seen.
    let mut clock = i64::MIN;
    for (ts, inst) in rec.by_time {
        if !inst.batches.is_empty() {
            clock = ts;
        }
        for c in inst.changes {
            bus.publish(&subjects.change(&c.service), encode(&c))
                .await?;
            contexts += 1;
        }
        for (_, h) in inst.hot {
            bus.publish(&subjects.hot(&h.service), encode(&h)).await?;
            contexts += 1;
        }
        for ((layer, idc, service), samples) in inst.batches {
            seq += 1;
            let b = IndicatorBatch {
                v: WIRE_VERSION,
                source: "replay".into(),
                seq,
                layer,
                idc: idc.clone(),
                service: service.clone(),
                samples,
            };
            bus.publish(&subjects.indicators(layer, &idc, &service), encode(&b))
                .await?;
            batches += 1;
        }
        let settled = |s: &BrainStats| {
            BrainStats::get(&s.batches) + s.rejected_total() >= batches
                && BrainStats::get(&s.contexts_seen) >= contexts
                && s.settled(clock)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !settled(&stats) {
            if tokio::time::Instant::now() > deadline {
                bail!("the brain did not keep up at {ts}");
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
    brain.shutdown().await;
    let store = Store::open(&store_path)?;
    let mut out = Vec::new();
    for i in store.incidents()? {
        out.push(ReplayIncident {
            hypotheses: store.hypotheses(&i.id)?,
            timeline: store.timeline_of(&i.id)?,
            incident: i,
        });
    }
    Ok(out)
}
