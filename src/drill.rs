//! Drills: run scenarios through the whole loop in lockstep on the virtual
//! clock and score what the brain did against the platform's ground truth.

use anyhow::Context;
use selfheal_bus::{LocalTransport, Topology};
use selfheal_sim::Scenario;
use serde::Serialize;

use crate::{LoopOutcome, drill_options, run_loop};

/// Pass marks, from the command line. Unset marks are not checked.
#[derive(Clone, Debug, Default)]
pub struct Thresholds {
    /// Longest acceptable time to detect, s.
    pub max_ttd_s: Option<f64>,
    /// Longest acceptable time to recover (back within SLO), s.
    pub max_ttr_s: Option<f64>,
    /// The top diagnosis must be right.
    pub require_diagnosis: bool,
    /// The executed actions must include the expected cure.
    pub require_cure: bool,
    /// Most harmful actions accepted.
    pub max_harmful: Option<usize>,
}

/// The score of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrillResult {
    /// Scenario name.
    pub name: String,
    /// Whether it is a control run.
    pub control: bool,
    /// Time from the first fault to the first incident, s.
    pub ttd_s: Option<f64>,
    /// Time from the first fault to back within SLO, s.
    pub ttr_s: Option<f64>,
    /// Expected causes the brain named right (top cause and target of an
    /// incident), out of `expected`.
    pub diagnosed: usize,
    /// Expected causes among the top three hypotheses of an incident.
    pub top3: usize,
    /// Incidents whose top cause blames the expected change (deploy or
    /// config push) of the expected service.
    pub change_tp: usize,
    /// Incidents whose top cause blames a change that is not the fault.
    pub change_fp: usize,
    /// Expected bad changes no incident blamed.
    pub change_fn: usize,
    /// Time from the first incident opening to its first hypothesis, s.
    pub tth_s: Option<f64>,
    /// Expected cures that were executed, out of `expected`.
    pub cured: usize,
    /// Expected diagnoses and cures.
    pub expected: usize,
    /// Incidents opened before any fault (false alarms).
    pub false_alarms: usize,
    /// Incidents.
    pub incidents: usize,
    /// Actions the platform applied.
    pub actions: usize,
    /// Harmful actions: any on a control run; any that increased loss.
    pub harmful: usize,
    /// Business loss: failed, throttled and degraded payments.
    pub loss: f64,
    /// Payments attempted.
    pub attempted: f64,
    /// Which pass marks it missed.
    pub failures: Vec<String>,
}

impl DrillResult {
    /// Whether it met every pass mark.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Scores one run.
pub fn score(s: &Scenario, topo: &Topology, out: &LoopOutcome, th: &Thresholds) -> DrillResult {
    let t = &out.truth;
    let fault_start = t.faults.first().map(|f| f.start_ms);
    let after: Vec<_> = out
        .incidents
        .iter()
        .filter(|i| fault_start.is_some_and(|f| i.opened_ts >= f))
        .collect();
    let false_alarms = out
        .incidents
        .iter()
        .filter(|i| fault_start.is_none_or(|f| i.opened_ts < f))
        .count();
    let secs = |ms: i64| ms as f64 / 1000.0;
    let ttd_s =
        fault_start.and_then(|f| after.iter().map(|i| i.opened_ts).min().map(|o| secs(o - f)));
    let ttr_s = t.ttr_ms().map(secs);
    let diagnosed = s
        .expect
        .iter()
        .filter(|e| {
            after.iter().any(|i| {
                i.cause.as_deref() == Some(e.cause.as_str())
                    && i.target.as_deref() == Some(e.target.as_str())
            })
        })
        .count();
    let top3 = s
        .expect
        .iter()
        .filter(|e| {
            after.iter().any(|i| {
                out.hypotheses.get(&i.id).is_some_and(|h| {
                    h.iter()
                        .take(3)
                        .any(|x| x.cause == e.cause && x.target == e.target)
                })
            })
        })
        .count();
    let is_change = |c: &str| matches!(c, "bad_deploy" | "config_mistake" | "bad_change");
    let mut blamed: Vec<(&str, &str)> = out
        .incidents
        .iter()
        .filter_map(|i| Some((i.cause.as_deref()?, i.target.as_deref()?)))
        .filter(|(c, _)| is_change(c))
        .collect();
    blamed.sort_unstable();
    blamed.dedup();
    let bad_changes: Vec<_> = s.expect.iter().filter(|e| is_change(&e.cause)).collect();
    let right = |c: &str, t: &str| bad_changes.iter().any(|e| e.cause == c && e.target == t);
    let change_tp = blamed.iter().filter(|(c, t)| right(c, t)).count();
    let change_fp = blamed.len() - change_tp;
    let change_fn = bad_changes
        .iter()
        .filter(|e| !blamed.contains(&(e.cause.as_str(), e.target.as_str())))
        .count();
    let tth_s = after
        .first()
        .and_then(|i| out.diagnosed_ts.get(&i.id).map(|d| secs(d - i.opened_ts)));
    let cured = s
        .expect
        .iter()
        .filter(|e| t.actions.iter().any(|a| a.kind.as_str() == e.action))
        .count();
    let harmful = if s.is_control() {
        t.actions.len()
    } else {
        selfheal_sim::platform::harmful_actions(topo, s, out.start_ms, t)
            .into_iter()
            .filter(|h| *h)
            .count()
    };
    let mut failures = Vec::new();
    if !s.is_control() {
        if let Some(max) = th.max_ttd_s {
            if ttd_s.is_none_or(|x| x > max) {
                failures.push(format!(
                    "time to detect {} > {max}s",
                    ttd_s.map_or("never".into(), |x| format!("{x:.1}s"))
                ));
            }
        }
        if let Some(max) = th.max_ttr_s {
            if ttr_s.is_none_or(|x| x > max) {
                failures.push(format!(
                    "time to recover {} > {max}s",
                    ttr_s.map_or("never".into(), |x| format!("{x:.1}s"))
                ));
            }
        }
        if th.require_diagnosis && diagnosed < s.expect.len() {
            failures.push(format!("diagnosis {diagnosed}/{}", s.expect.len()));
        }
        if th.require_cure && cured < s.expect.len() {
            failures.push(format!("cure {cured}/{}", s.expect.len()));
        }
    }
    if let Some(max) = th.max_harmful {
        if harmful > max {
            failures.push(format!("{harmful} harmful action(s) > {max}"));
        }
    }
    DrillResult {
        name: s.name.clone(),
        control: s.is_control(),
        ttd_s,
        ttr_s,
        diagnosed,
        top3,
        change_tp,
        change_fp,
        change_fn,
        tth_s,
        cured,
        expected: s.expect.len(),
        false_alarms,
        incidents: out.incidents.len(),
        actions: t.actions.len(),
        harmful,
        loss: t.loss(),
        attempted: t.attempted,
        failures,
    }
}

/// Runs one scenario in lockstep on the in-process bus and scores it.
pub async fn drill(
    s: &Scenario,
    speed: Option<f64>,
    th: &Thresholds,
) -> anyhow::Result<DrillResult> {
    drill_with(s, speed, th, &crate::paths::playbooks()).await
}

/// [`drill`] with the playbooks of `playbooks` (a directory).
pub async fn drill_with(
    s: &Scenario,
    speed: Option<f64>,
    th: &Thresholds,
    playbooks: &std::path::Path,
) -> anyhow::Result<DrillResult> {
    let dir = tempfile::tempdir()?;
    let mut opts = drill_options(s.clone(), dir.path());
    opts.brain.playbooks = playbooks.to_path_buf();
    if let Some(x) = speed {
        opts.speed = x;
    }
    let topo = opts.topology.clone();
    let out = run_loop(std::sync::Arc::new(LocalTransport::default()), opts, |_| {}).await?;
    Ok(score(s, &topo, &out, th))
}

/// Reads and checks scenario files; every problem of every file at once.
pub fn load(files: &[std::path::PathBuf], topo: &Topology) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display())) {
            Ok(text) => match Scenario::parse(&text, topo) {
                Ok(s) => out.push(s),
                Err(e) => problems.push(format!("{}:\n  {}", f.display(), e.replace('\n', "\n  "))),
            },
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        anyhow::bail!("{}", problems.join("\n"))
    }
}

/// The shipped scenario files, sorted.
pub fn shipped() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(crate::paths::scenarios())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The results as a Markdown table.
pub fn table(results: &[DrillResult]) -> String {
    let mut out = String::from(
        "| scenario | TTD s | TTR s | diagnosis | cure | incidents | false alarms | actions | harmful | loss % | pass |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let s = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in results {
        let frac = |n: usize| {
            if r.control {
                "-".to_string()
            } else {
                format!("{n}/{}", r.expected)
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |\n",
            r.name,
            s(r.ttd_s),
            s(r.ttr_s),
            frac(r.diagnosed),
            frac(r.cured),
            r.incidents,
            r.false_alarms,
            r.actions,
            r.harmful,
            100.0 * r.loss / r.attempted.max(1.0),
            if r.passed() {
                "yes".to_string()
            } else {
                format!("no: {}", r.failures.join("; "))
            }
        ));
    }
    out
}

/// The diagnosis figures over `results`: top-1 and top-3 accuracy of the
/// root cause (kind and target), precision and recall of blaming a change,
/// and the time from an incident opening to its first hypothesis.
pub fn diagnosis_summary(results: &[DrillResult]) -> String {
    let sum = |f: fn(&DrillResult) -> usize| results.iter().map(f).sum::<usize>();
    let expected = sum(|r| r.expected);
    let pct = |n: usize, d: usize| {
        if d == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * n as f64 / d as f64)
        }
    };
    let (tp, fp, fneg) = (
        sum(|r| r.change_tp),
        sum(|r| r.change_fp),
        sum(|r| r.change_fn),
    );
    let mut tth: Vec<f64> = results.iter().filter_map(|r| r.tth_s).collect();
    tth.sort_by(f64::total_cmp);
    let median = tth.get(tth.len() / 2).copied();
    format!(
        "root cause: top-1 {}/{expected} ({}), top-3 {}/{expected} ({})\n\
         change blame: precision {} ({tp} right, {fp} wrong), recall {} ({fneg} missed)\n\
         first hypothesis after the incident opened: median {}, max {}\n",
        sum(|r| r.diagnosed),
        pct(sum(|r| r.diagnosed), expected),
        sum(|r| r.top3),
        pct(sum(|r| r.top3), expected),
        pct(tp, tp + fp),
        pct(tp, tp + fneg),
        median.map_or("-".into(), |m| format!("{m:.1} s")),
        tth.last().map_or("-".into(), |m| format!("{m:.1} s")),
    )
}

/// A playbook rehearsed on the simulator scenario of its fault class.
#[derive(Clone, Debug)]
pub struct Rehearsal {
    /// Playbook.
    pub playbook: String,
    /// Scenario.
    pub scenario: String,
    /// The drill's score; `None` when not run.
    pub result: Option<DrillResult>,
    /// Why it was not run.
    pub skipped: Option<String>,
}

impl Rehearsal {
    /// Whether it ran and met every mark: the expected cure executed, the
    /// platform back within SLO, no harmful action.
    pub fn passed(&self) -> bool {
        self.result.as_ref().is_some_and(DrillResult::passed)
    }
}

/// Runs every shipped single-fault scenario whose expected cause one of
/// `names` handles, with the playbooks of `dir` loaded in `rt`, through the
/// whole loop. A playbook that needs a person's approval is not run (no
/// one approves in a rehearsal).
pub async fn rehearse(
    rt: &selfheal_brain::playbook::Runtime,
    names: &[String],
    dir: &std::path::Path,
    topo: &Topology,
) -> anyhow::Result<Vec<Rehearsal>> {
    rehearse_at(rt, names, dir, topo, 1.0).await
}

/// [`rehearse`] with every scenario's demand multiplied by `peak` (a big
/// sale's expected peak: the patrol's rehearsals).
pub async fn rehearse_at(
    rt: &selfheal_brain::playbook::Runtime,
    names: &[String],
    dir: &std::path::Path,
    topo: &Topology,
    peak: f64,
) -> anyhow::Result<Vec<Rehearsal>> {
    use selfheal_brain::playbook::Approval;
    let scenarios = load(&shipped(), topo)?;
    let th = Thresholds {
        require_cure: true,
        max_harmful: Some(0),
        ..Thresholds::default()
    };
    let mut out = Vec::new();
    for s in scenarios.iter().filter(|s| s.expect.len() == 1) {
        let cause = &s.expect[0].cause;
        let Some(pb) = rt.for_cause(cause) else {
            continue;
        };
        if !names.contains(&pb.name) {
            continue;
        }
        let mut r = Rehearsal {
            playbook: pb.name.clone(),
            scenario: s.name.clone(),
            result: None,
            skipped: None,
        };
        if pb.meta.approval != Approval::Auto {
            r.skipped = Some(format!(
                "approval policy {:?}: a person decides",
                pb.meta.approval
            ));
        } else {
            let mut s = s.clone();
            s.traffic.multiplier *= peak;
            let mut d = drill_with(&s, None, &th, dir).await?;
            if d.ttr_s.is_none() {
                d.failures.push("the platform never recovered".into());
            }
            r.result = Some(d);
        }
        out.push(r);
    }
    Ok(out)
}
