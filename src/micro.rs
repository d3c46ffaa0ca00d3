//! `selfheal micro-drill`: generic root-cause localization drilled on the
//! simulator's generic microservice world ([`selfheal_sim::micro`]):
//! random service graphs, Kubernetes-style names, one fault each. Each
//! scenario's recording is replayed through the brain exactly as a user's
//! would be, and the first incident from the fault on is scored: top-1
//! when its best hypothesis (`unknown` left out) names the faulty service
//! or one of its pods, top-3 when one of the first three distinct targets
//! does, and whether the best names the fault's kind.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context;
use selfheal_brain::BrainConfig;
use selfheal_bus::names::wire_name;
use selfheal_sim::micro::{MicroScenario, generate};
use serde::Serialize;

/// One scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct MicroResult {
    /// Scenario.
    pub name: String,
    /// Fault kind.
    pub fault: &'static str,
    /// Services in its graph.
    pub services: usize,
    /// The faulty service (wire name).
    pub truth: String,
    /// Whether an incident opened from the fault on.
    pub detected: bool,
    /// Seconds from the fault to the incident.
    pub ttd_s: Option<f64>,
    /// The blamed targets, best first (at most 5).
    pub ranked: Vec<String>,
    /// 1-based rank of the truth among them.
    pub rank: Option<usize>,
    /// The best hypothesis' cause.
    pub cause: Option<String>,
    /// Incidents opened before the fault (false alarms).
    pub false_incidents: usize,
    /// Incidents opened from the fault on: one fault should page once.
    pub fault_incidents: usize,
    /// The service whose change the best hypothesis blames
    /// (`bad_deploy`, `config_mistake`, `bad_change`), if it blames one.
    pub blamed_change: Option<String>,
    /// Whether the fault came from a change (a bad deploy).
    pub from_change: bool,
}

/// The figures over a set of scenarios.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MicroScore {
    /// Scenarios.
    pub scenarios: usize,
    /// Detected.
    pub detected: usize,
    /// Top-1 share.
    pub top1: f64,
    /// Top-3 share.
    pub top3: f64,
    /// Share whose best hypothesis names the fault's kind.
    pub kind: f64,
    /// Incidents before any fault.
    pub false_incidents: usize,
    /// Incidents beyond the first from a fault on (the same fault paging
    /// again).
    pub repeat_incidents: usize,
    /// Faults that came from a change.
    pub bad_changes: usize,
    /// Incidents whose best hypothesis blames a change.
    pub changes_blamed: usize,
    /// Of those, the ones that blame the change the fault came from.
    pub changes_blamed_right: usize,
}

/// The whole drill.
#[derive(Clone, Debug, Serialize)]
pub struct MicroReport {
    /// Per fault kind.
    pub faults: BTreeMap<String, MicroScore>,
    /// Over every scenario.
    pub all: MicroScore,
    /// Every scenario.
    pub results: Vec<MicroResult>,
}

/// The causes that blame a change.
const CHANGE_CAUSES: [&str; 3] = ["bad_deploy", "config_mistake", "bad_change"];

/// Change blame over `s`: precision (the blamed changes that caused the
/// fault; `None` when none was blamed) and recall (the faults from a
/// change that were blamed on it; `None` without any).
pub fn change_blame(s: &MicroScore) -> (Option<f64>, Option<f64>) {
    let share = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    (
        share(s.changes_blamed_right, s.changes_blamed),
        share(s.changes_blamed_right, s.bad_changes),
    )
}

fn score<'a>(rs: impl Iterator<Item = &'a MicroResult>) -> MicroScore {
    let mut s = MicroScore::default();
    let (mut t1, mut t3, mut k) = (0, 0, 0);
    for r in rs {
        s.scenarios += 1;
        s.detected += usize::from(r.detected);
        s.false_incidents += r.false_incidents;
        s.repeat_incidents += r.fault_incidents.saturating_sub(1);
        t1 += usize::from(r.rank == Some(1));
        t3 += usize::from(r.rank.is_some_and(|x| x <= 3));
        k += usize::from(r.rank == Some(1) && r.cause.as_deref() == Some(r.fault));
        s.bad_changes += usize::from(r.from_change);
        s.changes_blamed += usize::from(r.blamed_change.is_some());
        s.changes_blamed_right +=
            usize::from(r.from_change && r.blamed_change.as_deref() == Some(&*r.truth));
    }
    let n = s.scenarios.max(1) as f64;
    s.top1 = t1 as f64 / n;
    s.top3 = t3 as f64 / n;
    s.kind = k as f64 / n;
    s
}

/// Runs every scenario through a brain of `cfg` (its store replaced), with
/// the call graph or without; the recordings are kept under `keep` when
/// given.
pub async fn drill(
    scenarios: &[MicroScenario],
    cfg: &BrainConfig,
    keep: Option<&std::path::Path>,
    graph: bool,
    mut progress: impl FnMut(&MicroResult),
) -> anyhow::Result<MicroReport> {
    let mut results = Vec::new();
    for sc in scenarios {
        let rec = generate(sc).map_err(anyhow::Error::msg)?;
        let tmp = tempfile::tempdir()?;
        let dir = match keep {
            Some(k) => k.join(&sc.name),
            None => tmp.path().join("rec"),
        };
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("truth.json"),
            serde_json::to_string_pretty(&rec.truth)? + "\n",
        )?;
        std::fs::write(dir.join("metrics.csv"), &rec.metrics)?;
        if graph {
            std::fs::write(dir.join("dependencies.csv"), &rec.dependencies)?;
        }
        if !rec.changes.is_empty() {
            std::fs::write(dir.join("changes.jsonl"), &rec.changes)?;
        }
        if let Some((source, destination)) = &rec.edge_latency {
            let m = dir.join("metrics");
            std::fs::create_dir_all(&m)?;
            std::fs::write(m.join("source_50.csv"), source)?;
            std::fs::write(m.join("destination_50.csv"), destination)?;
        }
        let recording = crate::replay::read(&dir).with_context(|| sc.name.clone())?;
        let mut c = cfg.clone();
        let scratch = crate::replay::scratch()?;
        c.store = scratch.path().join("replay.db");
        let incidents = crate::replay::run(recording, c).await?;
        let t = &rec.truth;
        let false_incidents = incidents
            .iter()
            .filter(|i| i.incident.opened_ts < t.start_ms)
            .count();
        let first = incidents
            .iter()
            .filter(|i| i.incident.opened_ts >= t.start_ms)
            .min_by_key(|i| i.incident.opened_ts);
        let truth = wire_name(&t.service);
        let pods: Vec<String> = t.pods.iter().map(|p| wire_name(p)).collect();
        let is_truth = |x: &str| x == truth || pods.iter().any(|p| p == x);
        let mut ranked: Vec<String> = Vec::new();
        let mut cause = None;
        if let Some(i) = first {
            for h in i.hypotheses.iter().filter(|h| h.cause != "unknown") {
                cause.get_or_insert_with(|| h.cause.clone());
                // A pod and its service are one place.
                let place = if pods.contains(&h.target) {
                    truth.clone()
                } else {
                    h.target.clone()
                };
                if !ranked.contains(&place) {
                    ranked.push(place);
                }
            }
        }
        let rank = ranked.iter().position(|x| is_truth(x)).map(|k| k + 1);
        let blamed_change = first
            .and_then(|i| i.hypotheses.iter().find(|h| h.cause != "unknown"))
            .filter(|h| CHANGE_CAUSES.contains(&h.cause.as_str()))
            .map(|h| {
                if pods.contains(&h.target) {
                    truth.clone()
                } else {
                    h.target.clone()
                }
            });
        let r = MicroResult {
            name: sc.name.clone(),
            fault: sc.fault.cause(),
            services: sc.services,
            truth,
            detected: first.is_some(),
            ttd_s: first.map(|i| (i.incident.opened_ts - t.start_ms) as f64 / 1000.0),
            ranked: ranked.into_iter().take(5).collect(),
            rank,
            cause,
            false_incidents,
            fault_incidents: incidents.len() - false_incidents,
            blamed_change,
            from_change: t.change.is_some(),
        };
        progress(&r);
        results.push(r);
    }
    let mut faults = BTreeMap::new();
    for f in results.iter().map(|r| r.fault) {
        faults
            .entry(f.to_string())
            .or_insert_with(|| score(results.iter().filter(|r| r.fault == f)));
    }
    Ok(MicroReport {
        faults,
        all: score(results.iter()),
        results,
    })
}

/// The report as a Markdown table.
pub fn markdown(r: &MicroReport) -> String {
    let mut s = String::from(
        "| fault | scenarios | detected | top-1 | top-3 | kind named | false incidents | repeat incidents |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let pct = |x: f64| format!("{:.0} %", 100.0 * x);
    for (name, sc) in r.faults.iter().chain([(&"all".to_string(), &r.all)]) {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            sc.scenarios,
            sc.detected,
            pct(sc.top1),
            pct(sc.top3),
            pct(sc.kind),
            sc.false_incidents,
            sc.repeat_incidents
        );
    }
    let a = &r.all;
    if a.bad_changes + a.changes_blamed > 0 {
        let (precision, recall) = change_blame(a);
        let pct = |x: Option<f64>| x.map_or("-".into(), pct);
        let _ = writeln!(
            s,
            "\nchange blame: precision {} ({} of {} blamed changes caused the fault), recall {} ({} of {} faults from a change)",
            pct(precision),
            a.changes_blamed_right,
            a.changes_blamed,
            pct(recall),
            a.changes_blamed_right,
            a.bad_changes
        );
    }
    s
}
