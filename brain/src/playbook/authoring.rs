//! Tools for playbook authors: `check` (compile and lint), `test` (run a
//! playbook against its fixture incidents) and `docs` (the host API
//! reference, generated from the registrations).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{HostFn, IncidentFacts, Runtime, Step, collect};

/// One problem, `file:line: message` (line 0: the whole file).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// File.
    pub file: PathBuf,
    /// Line, from 1; 0 when it concerns the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// The playbooks named, or every `*.rhai` under `dir` when none is.
pub fn files(named: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    if !named.is_empty() {
        return named.to_vec();
    }
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

/// Modules whose functions add an action step.
const ACTING: &[&str] = &["traffic", "service", "scene", "accounts"];

/// Lints on verification: the last action must be followed by a `verify`
/// step (else nothing checks that it worked), and a `verify` right after
/// `incident::escalate` in the same block never runs (the plan ends there).
fn verify_lints(text: &str, calls: &[(usize, String, String, usize)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let last_act = calls.iter().rev().find(|c| ACTING.contains(&c.1.as_str()));
    let last_verify = calls.iter().rev().find(|c| c.1 == "verify");
    if let Some(act) = last_act
        && last_verify.is_none_or(|v| v.0 < act.0)
    {
        out.push((
            act.0,
            format!(
                "{}::{} is the last action and nothing verifies it: follow it with verify::cleared()",
                act.1, act.2
            ),
        ));
    }
    let lines: Vec<&str> = text.lines().collect();
    for w in calls.windows(2) {
        let (esc, next) = (&w[0], &w[1]);
        if esc.1 == "incident" && esc.2 == "escalate" && next.1 == "verify" {
            let between = lines
                .get(esc.0 - 1..next.0.saturating_sub(1))
                .unwrap_or_default()
                .join("\n");
            if !between.contains('}') {
                out.push((
                    next.0,
                    format!(
                        "verify::{} can never run: incident::escalate (line {}) ends the plan",
                        next.2, esc.0
                    ),
                ));
            }
        }
    }
    out
}

/// The line of a Rhai message: its positions read "(line N, position M)".
fn line_of(msg: &str) -> usize {
    msg.split("(line ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Compiles each playbook (syntax, `meta()`, `plan(incident)`) and lints it:
/// every `module::function(...)` must be a host function called with its
/// number of arguments. Returns every finding.
pub fn check(rt: &Runtime, files: &[PathBuf]) -> Vec<Finding> {
    let api = rt.host_api();
    let mut out = Vec::new();
    for f in files {
        let finding = |line: usize, message: String| Finding {
            file: f.clone(),
            line,
            message,
        };
        if let Err(e) = rt.compile(f) {
            let text = e.to_string();
            let prefix = format!("{}: ", f.display());
            let msg = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
            if msg.starts_with("unknown function ") {
                // One finding per call; `module::name` calls are left to the
                // host-call lint below, which names what the module has.
                for part in msg.split("; ") {
                    let Some(rest) = part.strip_prefix("unknown function ") else {
                        continue;
                    };
                    let name = rest.split(' ').next().unwrap_or_default();
                    if name.contains("::") {
                        continue;
                    }
                    out.push(finding(
                        line_of(rest),
                        format!(
                            "unknown function {name}: neither a host function, one of Rhai's, nor defined in the script"
                        ),
                    ));
                }
            } else {
                out.push(finding(line_of(&msg), msg));
            }
        }
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        // Syntax errors are reported above; the lints need a parse.
        let Ok(ast) = rt.parse(&text) else {
            continue;
        };
        let calls = crate::sandbox::Sandbox::qualified_calls(&ast);
        for (line, message) in verify_lints(&text, &calls) {
            out.push(finding(line, message));
        }
        for (line, module, name, args) in calls {
            let same: Vec<&HostFn> = api
                .iter()
                .filter(|h| h.module == module && h.name == name)
                .collect();
            if same.is_empty() {
                let known: Vec<String> = api
                    .iter()
                    .filter(|h| h.module == module)
                    .map(|h| format!("{}::{}", h.module, h.name))
                    .collect();
                let hint = if known.is_empty() {
                    format!("there is no host module `{module}`")
                } else {
                    format!("`{module}` has {}", known.join(", "))
                };
                out.push(finding(
                    line,
                    format!("unknown host function {module}::{name} ({hint})"),
                ));
            } else if !same.iter().any(|h| h.params.len() == args) {
                let want: Vec<String> = same
                    .iter()
                    .map(|h| format!("{}::{}({})", module, name, h.params.join(", ")))
                    .collect();
                out.push(finding(
                    line,
                    format!(
                        "{module}::{name} called with {args} argument(s); it takes {}",
                        want.join(" or ")
                    ),
                ));
            }
        }
    }
    out
}

/// A fixture: an incident and the plan a playbook must make for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Playbook (file stem).
    pub playbook: String,
    /// What the test shows.
    #[serde(default)]
    pub description: String,
    /// The incident's facts.
    pub incident: FixtureIncident,
    /// The expected steps, in order, as [`describe`] writes them.
    pub expect: Vec<String>,
    /// The expected undo steps should every step run and the symptoms
    /// remain (`on_failure = "revert"`); not checked when absent.
    #[serde(default)]
    pub revert: Option<Vec<String>>,
}

/// The facts of a fixture incident.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureIncident {
    /// Cause kind.
    pub cause: String,
    /// What is blamed.
    pub target: String,
    /// Where the cause lives.
    #[serde(default)]
    pub at: String,
    /// Main service.
    #[serde(default)]
    pub service: String,
    /// Confidence.
    #[serde(default = "one")]
    pub confidence: f64,
}

fn one() -> f64 {
    1.0
}

/// One step, in a line: `act shift_traffic bank-a to=bank-b fraction=0.125`,
/// `verify healthy bank-b 10s`, `verify cleared 30s`, `escalate`.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Act(a) => {
            let mut s = format!("act {} {}", a.kind.as_str(), a.target);
            for (k, v) in &a.params {
                if k == "from" {
                    continue;
                }
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                s.push_str(&format!(" {k}={v}"));
            }
            s
        }
        Step::Verify { check, window_ms } => match check {
            super::Check::Healthy(svc) => format!("verify healthy {svc} {}s", window_ms / 1000),
            super::Check::Cleared => format!("verify cleared {}s", window_ms / 1000),
        },
        Step::Escalate(_) => "escalate".into(),
    }
}

/// The outcome of one fixture.
#[derive(Debug)]
pub struct TestResult {
    /// Fixture file.
    pub fixture: PathBuf,
    /// Playbook.
    pub playbook: String,
    /// The plan made, one line per step (empty if it failed).
    pub steps: Vec<String>,
    /// What the brain would undo, newest first, should the whole plan run
    /// and fail (empty unless `on_failure` is `revert`).
    pub revert: Vec<String>,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// Fixture files (`tests/*.toml`) under `dir`.
pub fn fixtures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml")
                && p.parent()
                    .and_then(|x| x.file_name())
                    .is_some_and(|n| n == "tests")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every fixture against the loaded playbooks of `rt`.
pub fn test(rt: &Runtime, fixture_files: &[PathBuf]) -> Vec<TestResult> {
    let mut out = Vec::new();
    for f in fixture_files {
        let mut r = TestResult {
            fixture: f.clone(),
            playbook: String::new(),
            steps: Vec::new(),
            revert: Vec::new(),
            failure: None,
        };
        let fx: Fixture = match std::fs::read_to_string(f)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(fx) => fx,
            Err(e) => {
                r.failure = Some(format!("unreadable fixture: {e}"));
                out.push(r);
                continue;
            }
        };
        r.playbook = fx.playbook.clone();
        let Some(pb) = rt.playbooks().iter().find(|p| p.name == fx.playbook) else {
            r.failure = Some(format!("no playbook named {}", fx.playbook));
            out.push(r);
            continue;
        };
        let facts = IncidentFacts {
            id: "fixture".into(),
            cause: fx.incident.cause.clone(),
            target: fx.incident.target.clone(),
            at: fx.incident.at.clone(),
            service: fx.incident.service.clone(),
            confidence: fx.incident.confidence,
            symptoms: Vec::new(),
        };
        if !pb.meta.handles.contains(&facts.cause) {
            r.failure = Some(format!(
                "{} does not handle cause {} (it handles {})",
                pb.name,
                facts.cause,
                pb.meta.handles.join(", ")
            ));
        }
        match rt.plan(pb, &facts) {
            Ok(steps) => {
                r.steps = steps.iter().map(describe).collect();
                if pb.meta.on_failure == super::OnFailure::Revert {
                    let acts = steps.iter().filter_map(|s| match s {
                        Step::Act(a) => Some(a),
                        _ => None,
                    });
                    r.revert = super::undo_plan(acts)
                        .into_iter()
                        .map(|a| describe(&Step::Act(a)))
                        .collect();
                }
                if r.failure.is_none() && r.steps != fx.expect {
                    r.failure = Some(format!(
                        "plan differs:\n  expected: {:?}\n  got:      {:?}",
                        fx.expect, r.steps
                    ));
                }
                if let Some(want) = &fx.revert
                    && r.failure.is_none()
                    && *want != r.revert
                {
                    r.failure = Some(format!(
                        "revert differs:\n  expected: {:?}\n  got:      {:?}",
                        want, r.revert
                    ));
                }
            }
            Err(e) => {
                r.failure.get_or_insert(e.to_string());
            }
        }
        out.push(r);
    }
    out
}

/// A function's return type (Rhai leaves `()` out).
fn returns(f: &HostFn) -> &str {
    if f.returns.is_empty() {
        "()"
    } else {
        &f.returns
    }
}

/// The host API reference, in Markdown.
pub fn markdown(api: &[HostFn]) -> String {
    let mut s = String::from(
        "# Playbook host API\n\nGenerated by `selfheal playbook docs` from the functions the brain registers; do not edit.\n\nA playbook defines `fn meta()` — `#{ handles: [cause kinds], risk: \"low\" | \"medium\" | \"high\" | \"critical\", approval: \"auto\" | \"approval\" | \"dry_run\", max_targets: n, verify_s: n, on_failure: \"escalate\" | \"revert\", act_on_timeout: bool, reconcile: [check names] }` (`max_targets`, its blast radius: the most distinct targets one plan may act on, 1 when absent; a plan that acts on more is refused. `verify_s`, the window `verify::cleared()` waits, 60 when absent. `on_failure`, what happens when a verification fails or the plan ends unhealed: `escalate` (the default) hands the incident to a person as it is; `revert` first undoes each reversible action applied, newest first and once per target — a shift set back to 0, a throttle, degrade, isolation or block restored; a rollback, config revert or restart cannot be undone — each undo passing the guards and the write-ahead like any action. `act_on_timeout`, whether the plan may run when nobody decides on its approval in time and the on-call policy says `act`, false when absent; `critical` risk needs two approvers under the default policy. `reconcile`, the checks of `[[reconcile]]` in the brain's configuration that must agree after recovery before the incident closes — e.g. `payments_vs_ledger`, payments accepted against ledger postings over the fault's window; a mismatch hands the incident to a person with the numbers; none when absent) — and `fn plan(incident)`, where `incident` is a map with `id`, `cause`, `target`, `at`, `service`, `confidence` and `symptoms`. The plan calls the functions below; each action or check becomes one step, executed in order by the brain after its guards.\n",
    );
    let mut module = "";
    for f in api {
        if f.module != module {
            module = &f.module;
            s.push_str(&format!("\n## `{module}`\n"));
        }
        s.push_str(&format!(
            "\n### `{}::{}({})` → {}\n\n{}\n",
            f.module,
            f.name,
            f.params.join(", "),
            returns(f),
            f.doc
        ));
    }
    s
}

/// The host API as Rhai definitions (`.d.rhai`) for editors.
pub fn definitions(api: &[HostFn]) -> String {
    let mut s = String::from(
        "// Generated by `selfheal playbook docs`; do not edit.\n// Host API of selfheal playbooks, for editors that read Rhai definitions.\n",
    );
    let mut module = "";
    for f in api {
        if f.module != module {
            module = &f.module;
            s.push_str(&format!("\nmodule {module};\n"));
        }
        s.push_str(&format!(
            "\n/// {}\nfn {}({}) -> {};\n",
            f.doc,
            f.name,
            f.params.join(", "),
            returns(f)
        ));
    }
    s
}
