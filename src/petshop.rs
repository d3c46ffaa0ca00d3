//! `selfheal petshop`: root-cause localization measured on the PetShop
//! data set (a real microservice application's metrics with injected
//! issues and their root cause; CC-BY-4.0, see its README).
//!
//! Each case is converted to replay's format ([`convert`]) and replayed
//! through the brain, exactly as a user's recording would be, twice: with
//! the scenario's normal stretch in front as recorded, and levelled to the
//! case ([`Seam`]); the first
//! incident the brain opens in the case's window is scored: top-1 when its
//! best hypothesis names the root-cause component, top-3 when one of its
//! three best (distinct components, `unknown` left out) does. A
//! random walk over the call graph, computed here from the same metrics,
//! is the baseline.
//!
//! The data set's layout: per traffic scenario, `graph.csv` (an adjacency
//! matrix, row calls column), `noissue/metrics.csv` (a long normal
//! stretch, for two of the four scenarios) and `{train,test}/issue_N/`
//! with `metrics.csv` (three header rows: component, metric, statistic;
//! then `unix_timestamp, value…`, 5-minute steps, empty cells missing) and
//! `target.json` (`root_cause.node`, the symptom `target`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use selfheal_brain::BrainConfig;
use selfheal_bus::names::wire_name;
use serde::Serialize;

/// One case of the data set.
#[derive(Clone, Debug)]
pub struct Case {
    /// `low_traffic`, `high_traffic`, `temporal_traffic1`...
    pub scenario: String,
    /// `test/issue_3`...
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// A wide metrics file: timestamps and, per column, (component, metric
/// name, values).
struct Wide {
    ts: Vec<i64>,
    cols: Vec<(String, String, Vec<Option<f64>>)>,
}

fn read_wide(path: &Path) -> anyhow::Result<Wide> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for r in rd.records() {
        rows.push(r.with_context(|| format!("reading {}", path.display()))?);
    }
    if rows.len() < 4 {
        bail!("{}: needs three header rows and data", path.display());
    }
    let (comp, metric, stat) = (&rows[0], &rows[1], &rows[2]);
    let n = comp.len();
    let mut cols: Vec<(String, String, Vec<Option<f64>>)> = (1..n)
        .map(|j| {
            let m = format!(
                "{}_{}",
                metric.get(j).unwrap_or("").trim(),
                stat.get(j).unwrap_or("").trim().to_lowercase()
            );
            (comp[j].trim().to_string(), m, Vec::new())
        })
        .collect();
    let mut ts = Vec::new();
    for (i, r) in rows.iter().enumerate().skip(3) {
        let Ok(t) = r.get(0).unwrap_or("").trim().parse::<f64>() else {
            continue; // the `unix_timestamp` label row
        };
        ts.push(t as i64);
        for (j, col) in cols.iter_mut().enumerate() {
            let cell = r.get(j + 1).unwrap_or("").trim();
            let v = if cell.is_empty() {
                None
            } else {
                Some(
                    cell.parse::<f64>()
                        .with_context(|| format!("{}:{}: value {cell:?}", path.display(), i + 1))?,
                )
            };
            col.2.push(v);
        }
    }
    Ok(Wide { ts, cols })
}

/// How the normal stretch is laid in front of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seam {
    /// As it was recorded: months away from the case, at other levels
    /// (a load balancer's availability 100 there, 0 in every case), so
    /// the case's first sample is a jump in many series at once.
    AsRecorded,
    /// Levelled: each series shifted so that its median over the stretch
    /// meets the case's first sample (always before the fault: the
    /// operator's symptom comes after the second), as it would be had the
    /// brain watched right up to the case. Its variability is kept.
    Levelled,
}

/// Writes `case` in replay's format into `out`: `metrics.csv` (long
/// form, names as the monitoring wrote them; a missing value is an empty
/// cell, which replay takes as a gap) and `dependencies.csv` from the
/// call graph. When the scenario ships a normal stretch (`noissue/`), it
/// is laid in front of the case as history, shifted in time to end one
/// step before the case begins, so that the detectors have learnt what
/// normal looks like, as recorded or levelled ([`Seam`]). Returns the
/// case's first timestamp (s).
pub fn convert(case: &Case, out: &Path, seam: Seam) -> anyhow::Result<i64> {
    std::fs::create_dir_all(out)?;
    let scenario_dir = case
        .dir
        .parent()
        .and_then(Path::parent)
        .context("a case lies in <scenario>/<split>/<issue>")?;
    let metrics = read_wide(&case.dir.join("metrics.csv"))?;
    let Some(&start) = metrics.ts.first() else {
        bail!("{}: no data rows", case.dir.display());
    };
    let mut csv = String::from("timestamp,service,metric,value\n");
    let normal = scenario_dir.join("noissue/metrics.csv");
    if normal.exists() {
        let mut h = read_wide(&normal)?;
        if seam == Seam::Levelled {
            level(&mut h, &metrics);
        }
        if let (Some(&last), Some(&first)) = (h.ts.last(), h.ts.first()) {
            let step = if h.ts.len() > 1 {
                (last - first) / (h.ts.len() as i64 - 1)
            } else {
                300
            };
            write_long(&mut csv, &h, start - step - last);
        }
    }
    write_long(&mut csv, &metrics, 0);
    std::fs::write(out.join("metrics.csv"), csv)?;
    write_dependencies(&scenario_dir.join("graph.csv"), out)?;
    Ok(start)
}

/// Shifts each series of `history` so that its median meets `case`'s
/// first sample of the same series (series missing either way are left
/// as they are).
fn level(history: &mut Wide, case: &Wide) {
    let first: BTreeMap<(&str, &str), f64> = case
        .cols
        .iter()
        .filter_map(|(c, m, v)| Some(((c.as_str(), m.as_str()), (*v.first()?)?)))
        .collect();
    for (c, m, vals) in &mut history.cols {
        let Some(&to) = first.get(&(c.as_str(), m.as_str())) else {
            continue;
        };
        let seen: Vec<f64> = vals.iter().flatten().copied().collect();
        if seen.is_empty() {
            continue;
        }
        let by = to - selfheal_brain::diagnose::localize::median(seen);
        for v in vals.iter_mut().flatten() {
            *v += by;
        }
    }
}

/// A CSV field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Appends `w` to `csv` in replay's long form, shifted by `shift` s; a
/// missing value is an empty cell (a gap).
fn write_long(csv: &mut String, w: &Wide, shift: i64) {
    for (i, t) in w.ts.iter().enumerate() {
        for (comp, metric, vals) in &w.cols {
            let v = vals[i].map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(csv, "{},{},{},{v}", t + shift, field(comp), metric);
        }
    }
}

/// Writes the adjacency matrix `graph` as replay's `dependencies.csv` in
/// `out`.
fn write_dependencies(graph: &Path, out: &Path) -> anyhow::Result<()> {
    let mut deps = String::from("source,target\n");
    for (a, b) in &graph_edges(graph)? {
        let _ = writeln!(deps, "{},{}", field(a), field(b));
    }
    std::fs::write(out.join("dependencies.csv"), deps)?;
    Ok(())
}

/// The call edges of an adjacency matrix (row calls column).
pub fn graph_edges(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut rows = rd.records();
    let header = rows.next().context("graph.csv is empty")??;
    let names: Vec<String> = header
        .iter()
        .skip(1)
        .map(|s| s.trim().to_string())
        .collect();
    let mut edges = Vec::new();
    for r in rows {
        let r = r?;
        let from = r.get(0).unwrap_or("").trim().to_string();
        for (j, cell) in r.iter().skip(1).enumerate() {
            if cell.trim().parse::<f64>().is_ok_and(|v| v > 0.0)
                && let Some(to) = names.get(j)
                && *to != from
            {
                edges.push((from.clone(), to.clone()));
            }
        }
    }
    Ok(edges)
}

/// Every case under `data`, by scenario and name.
pub fn cases(data: &Path) -> anyhow::Result<Vec<Case>> {
    let mut out = Vec::new();
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(data)
        .with_context(|| format!("reading {}", data.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("graph.csv").exists())
        .collect();
    scenarios.sort();
    for s in scenarios {
        let scenario = s
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for split in ["train", "test"] {
            let Ok(rd) = std::fs::read_dir(s.join(split)) else {
                continue;
            };
            let mut issues: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("target.json").exists())
                .collect();
            issues.sort_by_key(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.trim_start_matches("issue_").parse::<u32>().ok())
                    .unwrap_or(u32::MAX)
            });
            for dir in issues {
                let name = format!(
                    "{split}/{}",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                );
                out.push(Case {
                    scenario: scenario.clone(),
                    name,
                    dir,
                });
            }
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct Target {
    target: Symptom,
    root_cause: RootCause,
}
#[derive(serde::Deserialize)]
struct Symptom {
    node: String,
    timestamp: i64,
    metric: String,
    agg: String,
}
#[derive(serde::Deserialize)]
struct RootCause {
    node: String,
}

/// One case's result.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    /// Scenario.
    pub scenario: String,
    /// Case.
    pub case: String,
    /// The injected root cause (as the data set names it).
    pub root_cause: String,
    /// Whether the brain opened an incident in the case's window.
    pub detected: bool,
    /// The components the brain blamed, best first (wire names).
    pub ranked: Vec<String>,
    /// 1-based rank of the root cause in `ranked` (`None`: not there).
    pub rank: Option<usize>,
    /// [`CaseResult::detected`], its normal stretch levelled
    /// ([`Seam::Levelled`]).
    pub levelled_detected: bool,
    /// [`CaseResult::ranked`], its normal stretch levelled.
    pub levelled_ranked: Vec<String>,
    /// [`CaseResult::rank`], its normal stretch levelled.
    pub levelled_rank: Option<usize>,
    /// 1-based rank of the root cause by the random-walk baseline.
    pub random_walk_rank: Option<usize>,
    /// 1-based rank of the root cause by the brain's diagnosis given the
    /// operator's symptom and its time ([`given_symptom`]).
    pub given_symptom_rank: Option<usize>,
    /// The components blamed given the operator's symptom, best first
    /// (the data set's names; the first five).
    pub given_symptom_ranked: Vec<String>,
}

/// Top-1 and top-3 shares of one group of cases.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Score {
    /// Cases.
    pub cases: usize,
    /// Cases with an incident in the window.
    pub detected: usize,
    /// Root cause ranked first by the brain, share of cases.
    pub top1: f64,
    /// Root cause in the brain's first three, share of cases.
    pub top3: f64,
    /// Cases with an incident in the window, the normal stretch levelled
    /// ([`Seam::Levelled`]).
    pub levelled_detected: usize,
    /// Top-1, the normal stretch levelled.
    pub levelled_top1: f64,
    /// Top-3, the normal stretch levelled.
    pub levelled_top3: f64,
    /// The random-walk baseline's top-1.
    pub random_walk_top1: f64,
    /// The random-walk baseline's top-3.
    pub random_walk_top3: f64,
    /// Top-1 of the diagnosis given the symptom.
    pub given_symptom_top1: f64,
    /// Top-3 of the diagnosis given the symptom.
    pub given_symptom_top3: f64,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Per scenario.
    pub scenarios: BTreeMap<String, Score>,
    /// Over every case.
    pub all: Score,
    /// Every case.
    pub cases: Vec<CaseResult>,
    /// False incidents on each scenario's normal stretch (`noissue/`),
    /// replayed alone, for the scenarios that ship one.
    pub normal: BTreeMap<String, Normal>,
}

/// Incidents opened on a healthy recording: every one is false.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Normal {
    /// Incidents opened.
    pub incidents: usize,
    /// Components with series in it.
    pub components: usize,
    /// Its length, days.
    pub days: f64,
    /// Incidents per component per day (the bar is 1).
    pub per_component_day: f64,
}

/// Replays `scenario_dir`'s normal stretch (`noissue/metrics.csv`) alone
/// through a brain of `cfg`, with the scenario's call graph, and counts the
/// incidents it opens. `None` when the scenario ships none. The recording
/// is kept in `keep` when given.
pub async fn normal_stretch(
    scenario_dir: &Path,
    cfg: &BrainConfig,
    keep: Option<&Path>,
) -> anyhow::Result<Option<Normal>> {
    let path = scenario_dir.join("noissue/metrics.csv");
    if !path.exists() {
        return Ok(None);
    }
    let w = read_wide(&path)?;
    let (Some(&first), Some(&last)) = (w.ts.first(), w.ts.last()) else {
        return Ok(None);
    };
    let tmp = tempfile::tempdir()?;
    let dir = keep.map_or_else(|| tmp.path().join("rec"), Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("timestamp,service,metric,value\n");
    write_long(&mut csv, &w, 0);
    std::fs::write(dir.join("metrics.csv"), csv)?;
    write_dependencies(&scenario_dir.join("graph.csv"), &dir)?;
    let rec = crate::replay::read(&dir)?;
    let mut c = cfg.clone();
    let scratch = crate::replay::scratch()?;
    c.store = scratch.path().join("replay.db");
    let incidents = crate::replay::run(rec, c).await?.len();
    let components = w
        .cols
        .iter()
        .map(|(c, _, _)| c.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let days = (last - first) as f64 / 86_400.0;
    Ok(Some(Normal {
        incidents,
        components,
        days,
        per_component_day: incidents as f64 / (components.max(1) as f64 * days.max(1e-9)),
    }))
}

fn score<'a>(rs: impl Iterator<Item = &'a CaseResult>) -> Score {
    let mut s = Score::default();
    let (mut t1, mut t3, mut r1, mut r3, mut g1, mut g3) = (0, 0, 0, 0, 0, 0);
    let (mut l1, mut l3) = (0, 0);
    for r in rs {
        s.cases += 1;
        s.detected += usize::from(r.detected);
        t1 += usize::from(r.rank == Some(1));
        t3 += usize::from(r.rank.is_some_and(|k| k <= 3));
        s.levelled_detected += usize::from(r.levelled_detected);
        l1 += usize::from(r.levelled_rank == Some(1));
        l3 += usize::from(r.levelled_rank.is_some_and(|k| k <= 3));
        r1 += usize::from(r.random_walk_rank == Some(1));
        r3 += usize::from(r.random_walk_rank.is_some_and(|k| k <= 3));
        g1 += usize::from(r.given_symptom_rank == Some(1));
        g3 += usize::from(r.given_symptom_rank.is_some_and(|k| k <= 3));
    }
    let n = s.cases.max(1) as f64;
    s.top1 = t1 as f64 / n;
    s.top3 = t3 as f64 / n;
    s.levelled_top1 = l1 as f64 / n;
    s.levelled_top3 = l3 as f64 / n;
    s.random_walk_top1 = r1 as f64 / n;
    s.random_walk_top3 = r3 as f64 / n;
    s.given_symptom_top1 = g1 as f64 / n;
    s.given_symptom_top3 = g3 as f64 / n;
    s
}

/// Replays each case through a brain of `cfg` (its store replaced) and
/// scores it; the converted recordings are kept under `keep` when given. `progress` hears each case as it is done.
pub async fn evaluate(
    cases: &[Case],
    cfg: &BrainConfig,
    keep: Option<&Path>,
    mut progress: impl FnMut(&CaseResult),
) -> anyhow::Result<Report> {
    let mut results = Vec::new();
    let mut rules = selfheal_brain::diagnose::Rules::new(Default::default());
    rules
        .load_dir(&cfg.playbooks.join("diagnose"))
        .map_err(|e| anyhow::anyhow!("diagnosis rules: {e:?}"))?;
    for case in cases {
        let target: Target = serde_json::from_str(
            &std::fs::read_to_string(case.dir.join("target.json"))
                .with_context(|| format!("reading {}", case.dir.display()))?,
        )?;
        let (detected, ranked) = replay_case(case, cfg, keep, Seam::AsRecorded).await?;
        let (levelled_detected, levelled_ranked) = replay_case(
            case,
            cfg,
            keep.map(|k| k.join("levelled")).as_deref(),
            Seam::Levelled,
        )
        .await?;
        let rc = wire_name(&target.root_cause.node);
        let rank = ranked.iter().position(|s| *s == rc).map(|k| k + 1);
        let levelled_rank = levelled_ranked.iter().position(|s| *s == rc).map(|k| k + 1);
        let walk = random_walk(case, &target)?;
        let random_walk_rank = walk
            .iter()
            .position(|s| *s == target.root_cause.node)
            .map(|k| k + 1);
        let given = given_symptom(case, &target, target.target.timestamp, &rules)?;
        let given_symptom_rank = given
            .iter()
            .position(|s| *s == target.root_cause.node)
            .map(|k| k + 1);
        let r = CaseResult {
            scenario: case.scenario.clone(),
            case: case.name.clone(),
            root_cause: target.root_cause.node.clone(),
            detected,
            ranked: ranked.into_iter().take(5).collect(),
            rank,
            levelled_detected,
            levelled_ranked: levelled_ranked.into_iter().take(5).collect(),
            levelled_rank,
            random_walk_rank,
            given_symptom_rank,
            given_symptom_ranked: given.into_iter().take(5).collect(),
        };
        progress(&r);
        results.push(r);
    }
    let mut scenarios = BTreeMap::new();
    for s in results.iter().map(|r| r.scenario.clone()) {
        scenarios
            .entry(s.clone())
            .or_insert_with(|| score(results.iter().filter(|r| r.scenario == s)));
    }
    let mut normal = BTreeMap::new();
    for case in cases {
        if normal.contains_key(&case.scenario) {
            continue;
        }
        if let Some(dir) = case.dir.parent().and_then(Path::parent)
            && let Some(n) = normal_stretch(
                dir,
                cfg,
                keep.map(|k| k.join("noissue").join(&case.scenario))
                    .as_deref(),
            )
            .await?
        {
            normal.insert(case.scenario.clone(), n);
        }
    }
    Ok(Report {
        scenarios,
        all: score(results.iter()),
        cases: results,
        normal,
    })
}

/// Converts `case` with its normal stretch laid in front by `seam`,
/// replays it through a brain of `cfg` (its store replaced) and returns
/// whether an incident opened in the case's window and, for the first
/// that did, the components its hypotheses blame, best first (`unknown`
/// left out). The recording is kept under `keep` when given.
async fn replay_case(
    case: &Case,
    cfg: &BrainConfig,
    keep: Option<&Path>,
    seam: Seam,
) -> anyhow::Result<(bool, Vec<String>)> {
    let tmp = tempfile::tempdir()?;
    let dir = match keep {
        Some(k) => k.join(&case.scenario).join(&case.name),
        None => tmp.path().join("rec"),
    };
    let start = convert(case, &dir, seam)?;
    let rec = crate::replay::read(&dir)?;
    let mut c = cfg.clone();
    let scratch = crate::replay::scratch()?;
    c.store = scratch.path().join("replay.db");
    let incidents = crate::replay::run(rec, c).await?;
    let first = incidents
        .iter()
        .filter(|i| i.incident.opened_ts >= start * 1000)
        .min_by_key(|i| i.incident.opened_ts);
    let mut ranked: Vec<String> = Vec::new();
    if let Some(i) = first {
        for h in &i.hypotheses {
            if h.cause != "unknown" && !ranked.contains(&h.target) {
                ranked.push(h.target.clone());
            }
        }
    }
    Ok((first.is_some(), ranked))
}

fn pearson(a: &[Option<f64>], b: &[Option<f64>]) -> f64 {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
        .collect();
    selfheal_brain::diagnose::localize::pearson(&pairs)
}

/// The baseline: a random walk over the call graph from the symptom's
/// component (the walk of the random-walk methods in the literature, as the
/// data set's own evaluation runs it). From a node the walker steps to a
/// component it calls, or back to a caller (at 0.3 of the weight), or
/// stays (at its own weight), each weighted by how strongly that
/// component's series of the symptom's metric correlate with the symptom
/// over the case; it restarts at the symptom with probability 0.15. The
/// components are ranked by the walk's long-run visits (power iteration,
/// deterministic).
pub fn random_walk(case: &Case, target: &impl TargetLike) -> anyhow::Result<Vec<String>> {
    let scenario_dir = case
        .dir
        .parent()
        .and_then(Path::parent)
        .context("a case lies in <scenario>/<split>/<issue>")?;
    let edges = graph_edges(&scenario_dir.join("graph.csv"))?;
    let w = read_wide(&case.dir.join("metrics.csv"))?;
    let (sym_node, sym_metric) = target.symptom();
    let series = |node: &str| -> Option<&Vec<Option<f64>>> {
        w.cols
            .iter()
            .find(|(c, m, _)| c == node && *m == sym_metric)
            .map(|(_, _, v)| v)
    };
    let Some(sym) = series(&sym_node) else {
        return Ok(Vec::new());
    };
    let mut nodes: Vec<String> = edges
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .chain([sym_node.clone()])
        .collect();
    nodes.sort();
    nodes.dedup();
    let idx: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let corr: Vec<f64> = nodes
        .iter()
        .map(|n| series(n).map_or(0.0, |s| pearson(s, sym).abs()) + 0.01)
        .collect();
    let n = nodes.len();
    let mut out: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (a, b) in &edges {
        let (i, j) = (idx[a.as_str()], idx[b.as_str()]);
        out[i].push((j, corr[j]));
        out[j].push((i, 0.3 * corr[i]));
    }
    for (i, o) in out.iter_mut().enumerate() {
        o.push((i, corr[i]));
    }
    let start = idx[sym_node.as_str()];
    let mut p = vec![0.0; n];
    p[start] = 1.0;
    for _ in 0..200 {
        let mut next = vec![0.0; n];
        next[start] += 0.15;
        for (i, o) in out.iter().enumerate() {
            let total: f64 = o.iter().map(|x| x.1).sum();
            for (j, wt) in o {
                next[*j] += 0.85 * p[i] * wt / total;
            }
        }
        p = next;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| {
        p[*b]
            .total_cmp(&p[*a])
            .then_with(|| nodes[*a].cmp(&nodes[*b]))
    });
    Ok(order.into_iter().map(|i| nodes[i].clone()).collect())
}

/// The brain's diagnosis given the operator's symptom, as the data set's
/// own protocol poses the question: an incident is opened on the symptom
/// series at the first step at or after the symptom's time, every series
/// of the case (behind the scenario's normal stretch, when there is one)
/// is the recent history, and the shipped diagnosis rules rank the causes
/// over the localization's candidates. Returns the blamed components,
/// best first.
pub fn given_symptom(
    case: &Case,
    target: &impl TargetLike,
    symptom_ts: i64,
    rules: &selfheal_brain::diagnose::Rules,
) -> anyhow::Result<Vec<String>> {
    use selfheal_brain::{
        correlate::Correlator,
        detect::{AnomalyEvent, AnomalyKind, MetricClasses},
        diagnose::localize::localize,
        recent::{HISTORY_POINTS, History},
    };
    use selfheal_bus::{Layer, SeriesKey};
    let scenario_dir = case
        .dir
        .parent()
        .and_then(Path::parent)
        .context("a case lies in <scenario>/<split>/<issue>")?;
    let w = read_wide(&case.dir.join("metrics.csv"))?;
    let normal = scenario_dir.join("noissue/metrics.csv");
    let h = if normal.exists() {
        Some(read_wide(&normal)?)
    } else {
        None
    };
    let key =
        |service: &str, metric: &str| SeriesKey::new(Layer::System, "default", service, metric);
    let step = 300_000;
    let start = w.ts.first().copied().unwrap_or(0) * 1000;
    let mut history: Vec<(SeriesKey, History)> = Vec::new();
    for (comp, metric, vals) in &w.cols {
        let mut ring: History = History::new();
        if let Some(h) = &h
            && let Some((_, _, hv)) = h.cols.iter().find(|(c, m, _)| c == comp && m == metric)
        {
            let n = hv.len();
            for (i, v) in hv.iter().enumerate() {
                if let Some(v) = v {
                    ring.push_back((start - (n - i) as i64 * step, *v as f32));
                }
            }
        }
        for (t, v) in w.ts.iter().zip(vals) {
            if let Some(v) = v {
                ring.push_back((t * 1000, *v as f32));
            }
        }
        while ring.len() > HISTORY_POINTS {
            ring.pop_front();
        }
        history.push((key(comp, metric), ring));
    }
    let onset =
        w.ts.iter()
            .map(|t| t * 1000)
            .find(|t| *t >= symptom_ts * 1000)
            .unwrap_or(start);
    let (sym_node, sym_metric) = target.symptom();
    let classes = MetricClasses::shipped();
    let class = classes.classify(&sym_metric);
    let mut correlator = Correlator::new(i64::MAX / 4, 0);
    // The operator's symptom opens the incident, whatever its layer.
    correlator.discipline.entries.insert(sym_node.clone());
    correlator.on_anomaly(&AnomalyEvent {
        key: key(&sym_node, &sym_metric),
        ts: onset,
        kind: AnomalyKind::Start,
        onset,
        value: 0.0,
        baseline: 0.0,
        score: 1.0,
        direction: class.direction,
        class: class.name,
        novel: false,
        after_change: None,
    });
    let inc = correlator.incidents.remove(0);
    let topo = selfheal_bus::Topology::from_edges(graph_edges(&scenario_dir.join("graph.csv"))?);
    let candidates = localize(
        &inc,
        &topo,
        history.iter().map(|(k, v)| (k, v)),
        classes,
        i64::MAX,
    );
    let (hyps, _) = rules.diagnose(
        &inc,
        &topo,
        &selfheal_brain::context::Context::default(),
        &[],
        &selfheal_brain::diagnose::Measured {
            candidates,
            step_ms: step,
            scrape_ms: 0,
        },
    );
    let mut ranked = Vec::new();
    for h in hyps {
        if h.cause != "unknown" && !ranked.contains(&h.at) {
            ranked.push(h.at);
        }
    }
    Ok(ranked)
}

/// What the random walk needs of a case's target.
pub trait TargetLike {
    /// The symptom's component and metric column name.
    fn symptom(&self) -> (String, String);
}

impl TargetLike for Target {
    fn symptom(&self) -> (String, String) {
        (
            self.target.node.clone(),
            format!("{}_{}", self.target.metric, self.target.agg.to_lowercase()),
        )
    }
}

/// The report as Markdown tables.
pub fn markdown(r: &Report) -> String {
    let mut s = String::from(
        "| scenario | cases | replay: detected | replay: top-1 | replay: top-3 | levelled: detected | levelled: top-1 | levelled: top-3 | given the symptom: top-1 | given the symptom: top-3 | random walk top-1 | random walk top-3 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let pct = |x: f64| format!("{:.0} %", 100.0 * x);
    for (name, sc) in r.scenarios.iter().chain([(&"all".to_string(), &r.all)]) {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.cases,
            sc.detected,
            pct(sc.top1),
            pct(sc.top3),
            sc.levelled_detected,
            pct(sc.levelled_top1),
            pct(sc.levelled_top3),
            pct(sc.given_symptom_top1),
            pct(sc.given_symptom_top3),
            pct(sc.random_walk_top1),
            pct(sc.random_walk_top3)
        );
    }
    if !r.normal.is_empty() {
        s.push_str("\n| normal stretch | components | days | false incidents | per component per day |\n| --- | --- | --- | --- | --- |\n");
        for (name, n) in &r.normal {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.1} | {} | {:.3} |",
                n.components, n.days, n.incidents, n.per_component_day
            );
        }
    }
    s
}
