//! `selfheal record` and `selfheal train`: recorded indicator data in the
//! long CSV form (`timestamp,service,instance,layer,metric,value`), and the
//! multivariate per-service models fitted on it.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use selfheal_brain::detect::{
    hysteresis::{Edge, Hysteresis},
    model::ModelThresholds,
};
use selfheal_bus::{Topology, time::parse_timestamp};
use selfheal_models::{FitConfig, Means, ModelError, ModelSet, ServiceModel};
use selfheal_sim::{Platform, Scenario};

/// Platform time of the first tick of a recording, ms.
pub const RECORD_START_MS: i64 = 1_700_000_000_000;

/// Runs `scenario` on the platform alone (no agent, no brain: nothing is
/// repaired) and writes `metrics.csv`, `changes.jsonl` and `hotkeys.csv`
/// into `out` (the replay format, docs/replay.md).
/// Returns the rows written.
pub fn record(topology: &Topology, scenario: &Scenario, out: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The recording is replayable as it stands: the topology goes with it.
    std::fs::write(
        out.join("topology.toml"),
        toml::to_string(topology).context("writing the topology as TOML")?,
    )
    .context("creating topology.toml")?;
    let mut metrics = std::io::BufWriter::new(
        std::fs::File::create(out.join("metrics.csv")).context("creating metrics.csv")?,
    );
    let mut changes = std::io::BufWriter::new(
        std::fs::File::create(out.join("changes.jsonl")).context("creating changes.jsonl")?,
    );
    let mut hot = std::io::BufWriter::new(
        std::fs::File::create(out.join("hotkeys.csv")).context("creating hotkeys.csv")?,
    );
    writeln!(
        metrics,
        "timestamp,service,instance,layer,metric,value,idc,scene,link"
    )?;
    writeln!(hot, "timestamp,service,idc,dimension,total,key,count")?;
    let mut p = Platform::new(topology.clone(), scenario, RECORD_START_MS);
    let ticks = scenario.duration_s * 1000 / scenario.tick_ms.max(1);
    let mut rows = 0;
    for _ in 0..ticks {
        let (frame, _) = p.step();
        for s in &frame.samples {
            writeln!(
                metrics,
                "{},{},{},{},{},{},{},{},{}",
                frame.ts,
                s.service,
                s.instance.as_deref().unwrap_or(""),
                s.layer.as_str(),
                s.metric,
                s.value,
                s.idc,
                s.scene.as_deref().unwrap_or(""),
                s.link.as_deref().unwrap_or("")
            )?;
            rows += 1;
        }
        for h in &frame.hot {
            for (key, count) in &h.top {
                writeln!(
                    hot,
                    "{},{},{},{},{},{key},{count}",
                    frame.ts, h.service, h.idc, h.dimension, h.total
                )?;
            }
        }
        for c in &frame.changes {
            let line = serde_json::json!({
                "ts": frame.ts,
                "id": c.id,
                "service": c.service,
                "kind": c.kind,
                "author": c.author,
                "description": c.description,
            });
            writeln!(changes, "{line}")?;
        }
    }
    metrics.flush()?;
    changes.flush()?;
    hot.flush()?;
    Ok(rows)
}

/// Per-service indicator vectors by time, from a long-form metrics CSV.
pub type History = BTreeMap<String, BTreeMap<i64, BTreeMap<String, f64>>>;

/// Reads `metrics.csv` (long form). Every malformed row is an error that
/// names its line.
pub fn read_history(path: &Path) -> anyhow::Result<History> {
    let mut rd = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
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
            "{}:1: needs the columns timestamp, service, metric and value (instance and layer are optional)",
            path.display()
        );
    };
    let mut by_time: BTreeMap<(String, i64), Means> = BTreeMap::new();
    for (i, rec) in rd.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{}:{line}", path.display()))?;
        let field = |c: usize| rec.get(c).unwrap_or("").trim();
        let ts = parse_timestamp(field(t)).with_context(|| {
            format!(
                "{}:{line}: unreadable timestamp {:?}",
                path.display(),
                field(t)
            )
        })?;
        let service = field(s);
        let metric = field(m);
        if service.is_empty() || metric.is_empty() {
            bail!(
                "{}:{line}: service and metric must not be empty",
                path.display()
            );
        }
        let value: f64 = field(v).parse().map_err(|_| {
            anyhow::anyhow!(
                "{}:{line}: value {:?} is not a number",
                path.display(),
                field(v)
            )
        })?;
        by_time
            .entry((service.to_string(), ts))
            .or_default()
            .add(metric, value);
    }
    let mut out: History = BTreeMap::new();
    for ((service, ts), means) in by_time {
        out.entry(service).or_default().insert(ts, means.means());
    }
    Ok(out)
}

/// When `model` raises an alarm over one service's `times` (the brain's
/// rule, [`ModelThresholds`]): the times, ms, at which it opens.
pub fn alarms(
    model: &ServiceModel,
    times: &BTreeMap<i64, BTreeMap<String, f64>>,
    th: &ModelThresholds,
) -> Vec<i64> {
    let mut state = Hysteresis::default();
    times
        .iter()
        .filter_map(|(ts, metrics)| {
            let score = model
                .vector(|f| metrics.get(f).copied())
                .map_or(0.0, |v| model.score(&v));
            match th.step(&mut state, *ts, score)? {
                Edge::Opened { .. } => Some(*ts),
                Edge::Closed => None,
            }
        })
        .collect()
}

/// What `train` did.
#[derive(Debug)]
pub struct TrainReport {
    /// Model files written.
    pub written: Vec<PathBuf>,
    /// Services with no model, and why.
    pub skipped: Vec<ModelError>,
}

/// Fits one model per service on the history in each `from/metrics.csv`
/// (or `from` itself when it is a file; several recordings add up) and
/// writes them to `out`. The features of a service are the metrics it
/// reports at 95 % of its times or more.
pub fn train(from: &[PathBuf], out: &Path, cfg: &FitConfig) -> anyhow::Result<TrainReport> {
    let mut history: BTreeMap<String, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for f in from {
        let file = if f.is_dir() {
            f.join("metrics.csv")
        } else {
            f.clone()
        };
        for (service, times) in read_history(&file)? {
            history
                .entry(service)
                .or_default()
                .extend(times.into_values());
        }
    }
    let mut set = ModelSet::default();
    let mut skipped = Vec::new();
    for (service, times) in &history {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for m in times {
            for k in m.keys() {
                *seen.entry(k).or_default() += 1;
            }
        }
        let features: Vec<String> = seen
            .iter()
            .filter(|(_, n)| **n * 100 >= times.len() * 95)
            .map(|(k, _)| k.to_string())
            .collect();
        let rows: Vec<Vec<f64>> = times
            .iter()
            .filter_map(|m| features.iter().map(|f| m.get(f).copied()).collect())
            .collect();
        match ServiceModel::fit(service, &features, &rows, cfg) {
            Ok(m) => {
                set.models.insert(service.clone(), m);
            }
            Err(e) => skipped.push(e),
        }
    }
    if set.is_empty() {
        let why: Vec<String> = skipped.iter().map(|e| e.to_string()).collect();
        bail!("no model could be fitted:\n{}", why.join("\n"));
    }
    let written = set
        .save_dir(out)
        .with_context(|| format!("writing models to {}", out.display()))?;
    Ok(TrainReport { written, skipped })
}
