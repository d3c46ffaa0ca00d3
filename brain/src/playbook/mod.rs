//! Playbooks: Rhai scripts, compiled once, run in a sandbox, that plan a
//! repair as a list of steps (actions and verifications) through a
//! namespaced host API. The runtime executes the plan step by step in
//! [`act`](crate::act) and [`verify`](crate::verify).
//!
//! A playbook defines `fn meta()` (what it handles, risk, approval) and
//! `fn plan(incident)`. Host API:
//!
//! | function | step it adds |
//! | --- | --- |
//! | `traffic::shift(from, to, fraction)` | move `fraction` of `from`'s traffic to `to` |
//! | `traffic::throttle_key(service, key, rate)` | limit one key (item, order...) at `service` to `rate`/s |
//! | `traffic::block_client(service, client)` | block a client at `service` |
//! | `traffic::shift_idc(from, to, fraction)` | move `fraction` of IDC `from`'s traffic to IDC `to` |
//! | `service::rollback(service)` | roll `service` back to its previous version |
//! | `service::restart(service, instance)` | restart one instance |
//! | `scene::degrade(scene)` | turn a non-critical scene away (refused for a critical one) |
//! | `service::revert_config(service)` | revert `service`'s last configuration push |
//! | `accounts::isolate(service, account)` | isolate a hot account (its postings buffered) |
//! | `verify::healthy(service, window_s)` | `service` stays free of new anomalies for `window_s` |
//! | `verify::cleared(window_s)` | the incident's symptoms clear within `window_s` |
//! | `incident::escalate(reason)` | hand to a person |
//! | `topo::backup_of(service)` | (query) the declared backup, or `()` |
//! | `topo::router_of(channel)` | (query) the service routing to it, or `()` |

pub mod authoring;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rhai::{AST, Dynamic, EvalAltResult, ImmutableString, Map, Module, Scope};
use selfheal_bus::{ActionKind, Topology};
use serde::{Deserialize, Serialize};

/// A host function's result.
type Res<T> = Result<T, Box<EvalAltResult>>;

/// How risky a playbook is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Safe to repeat.
    Low,
    /// Changes traffic or capacity.
    Medium,
    /// Can lose payments if wrong.
    High,
    /// Can lose payments at scale (a whole IDC, every channel): two people
    /// approve it under the default on-call policy.
    Critical,
}

impl Risk {
    /// As written in `meta()`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

/// Who decides before a playbook acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// The brain acts.
    Auto,
    /// A person approves first.
    Approval,
    /// Never act; record what would be done.
    DryRun,
}

/// A playbook's declared metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Meta {
    /// Cause kinds it handles.
    pub handles: Vec<String>,
    /// Risk.
    pub risk: Risk,
    /// Approval policy.
    pub approval: Approval,
    /// Most distinct targets one plan may act on (its blast radius);
    /// `max_targets` in `meta()`, 1 when absent.
    pub max_targets: usize,
    /// The verify window `verify::cleared()` waits, s; `verify_s` in
    /// `meta()`, 60 when absent.
    pub verify_s: i64,
    /// What happens when a verification fails: `on_failure` in `meta()`.
    pub on_failure: OnFailure,
    /// Whether the plan may run when nobody decides on its approval in
    /// time and the on-call policy says `act`: `act_on_timeout` in
    /// `meta()`, false when absent.
    pub act_on_timeout: bool,
    /// The reconciliation checks (`[[reconcile]]` of the configuration, by
    /// name) that must pass after recovery before the incident closes:
    /// `reconcile` in `meta()`, none when absent.
    pub reconcile: Vec<String>,
}

/// What the brain does when a playbook's verification fails (a checked
/// service is not healthy, or the symptoms outlast the last step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Leave things as they are and hand the incident to a person.
    Escalate,
    /// Undo every reversible action the plan applied, newest first (a
    /// shift goes back to 0; a throttle, degrade, isolation or block is
    /// restored), then hand the incident to a person. A rollback, config
    /// revert or restart cannot be undone and is reported as such.
    Revert,
}

/// An action a plan asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// Kind.
    pub kind: ActionKind,
    /// The service whose actuator executes it.
    pub service: String,
    /// What it acts on.
    pub target: String,
    /// Parameters.
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
}

/// What a verification waits for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The service shows no new anomaly during the window.
    Healthy(String),
    /// The incident's symptoms clear within the window.
    Cleared,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Send an action.
    Act(PlannedAction),
    /// Wait and check.
    Verify {
        /// What.
        check: Check,
        /// How long, ms of event time.
        window_ms: i64,
    },
    /// Hand to a person.
    Escalate(String),
}

/// The facts a playbook sees about an incident.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentFacts {
    /// Id.
    pub id: String,
    /// Top cause kind.
    pub cause: String,
    /// What is blamed: a service, a key, an IDC.
    pub target: String,
    /// The service where the cause lives (for a key: the service it hits).
    pub at: String,
    /// Main service.
    pub service: String,
    /// Confidence of the cause.
    pub confidence: f64,
    /// Symptom series, as text.
    pub symptoms: Vec<String>,
}

/// A playbook error, with the file and line when known.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The file could not be read or compiled.
    #[error("{file}: {message}")]
    Compile {
        /// File.
        file: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// `meta()` is missing or says something invalid.
    #[error("{file}: meta(): {message}")]
    Meta {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The script failed while planning (including hitting a sandbox limit).
    #[error("{file}: plan(): {message}")]
    Run {
        /// File.
        file: String,
        /// What happened.
        message: String,
    },
}

/// A loaded playbook.
#[derive(Clone, Debug)]
pub struct Playbook {
    /// Name (file stem).
    pub name: String,
    /// Path.
    pub path: PathBuf,
    /// Metadata.
    pub meta: Meta,
    ast: AST,
}

pub use crate::sandbox::Limits;
use crate::sandbox::{Sandbox, lock};

/// The Rhai engine with the host API, and the loaded playbooks.
pub struct Runtime {
    sandbox: Sandbox,
    steps: Arc<Mutex<Vec<Step>>>,
    /// The running playbook's `verify_s`, for `verify::cleared()`.
    verify_s: Arc<Mutex<i64>>,
    playbooks: Vec<Playbook>,
    /// The files last loaded (or last refused): path, modified, length.
    seen: Vec<(PathBuf, Option<std::time::SystemTime>, u64)>,
}

/// What the playbook files under `dir` look like now.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).ok();
            let modified = m.as_ref().and_then(|m| m.modified().ok());
            let len = m.map_or(0, |m| m.len());
            (f, modified, len)
        })
        .collect()
}

fn err(msg: String) -> Box<EvalAltResult> {
    msg.into()
}

impl Runtime {
    /// A runtime whose scripts see `topology`.
    pub fn new(topology: Arc<Topology>, limits: Limits) -> Self {
        let steps: Arc<Mutex<Vec<Step>>> = Arc::default();
        let verify_s = Arc::new(Mutex::new(DEFAULT_VERIFY_S));
        let mut sandbox = Sandbox::new(limits, "playbook");
        let engine = &mut sandbox.engine;

        let mut traffic = Module::new();
        let (s, t) = (steps.clone(), topology.clone());
        registration("traffic", "shift").set_into_module(
            &mut traffic,
            move |from: ImmutableString, to: ImmutableString, fraction: f64| {
                for n in [&from, &to] {
                    if t.service(n).is_none() {
                        return Err(err(format!("traffic::shift: unknown service {n:?}")));
                    }
                }
                let router = t
                    .router_of(&from)
                    .ok_or_else(|| err(format!("traffic::shift: nothing routes to {from:?}")))?;
                let params = shift_params("traffic::shift", &from, &to, fraction)?;
                push_keyed(&s, &t, ActionKind::ShiftTraffic, router, &from, params)
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("traffic", "shift_instance").set_into_module(
            &mut traffic,
            move |service: ImmutableString, instance: ImmutableString, fraction: f64| {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(err(format!(
                        "traffic::shift_instance: fraction {fraction} is not in (0, 1]"
                    )));
                }
                let params = [("fraction".to_string(), serde_json::Value::from(fraction))].into();
                push_keyed(
                    &s,
                    &t,
                    ActionKind::ShiftTraffic,
                    &service,
                    &instance,
                    params,
                )
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("traffic", "throttle_key").set_into_module(
            &mut traffic,
            move |service: ImmutableString, key: ImmutableString, rate: f64| {
                if !(rate.is_finite() && rate >= 0.0) {
                    return Err(err(format!(
                        "traffic::throttle_key: rate {rate} is not >= 0"
                    )));
                }
                let params = [("rate".to_string(), serde_json::Value::from(rate))].into();
                push_keyed(&s, &t, ActionKind::Throttle, &service, &key, params)
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("traffic", "shift_idc").set_into_module(
            &mut traffic,
            move |from: ImmutableString, to: ImmutableString, fraction: f64| {
                for n in [&from, &to] {
                    if !t.idcs.iter().any(|i| i.name == n.as_str()) {
                        return Err(err(format!("traffic::shift_idc: unknown IDC {n:?}")));
                    }
                }
                // IDC traffic is steered where it enters: the first service of a link.
                let entry = t
                    .links
                    .first()
                    .and_then(|l| l.services.first())
                    .cloned()
                    .unwrap_or_default();
                let params = shift_params("traffic::shift_idc", &from, &to, fraction)?;
                push_keyed(&s, &t, ActionKind::ShiftTraffic, &entry, &from, params)
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("traffic", "block_client").set_into_module(
            &mut traffic,
            move |service: ImmutableString, client: ImmutableString| {
                push_keyed(
                    &s,
                    &t,
                    ActionKind::BlockClient,
                    &service,
                    &client,
                    Default::default(),
                )
            },
        );
        engine.register_static_module("traffic", traffic.into());

        let mut service = Module::new();
        let (s, t) = (steps.clone(), topology.clone());
        registration("service", "rollback").set_into_module(
            &mut service,
            move |name: ImmutableString| {
                push_keyed(
                    &s,
                    &t,
                    ActionKind::Rollback,
                    &name,
                    &name,
                    Default::default(),
                )
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("service", "revert_config").set_into_module(
            &mut service,
            move |name: ImmutableString| {
                push_keyed(
                    &s,
                    &t,
                    ActionKind::RevertConfig,
                    &name,
                    &name,
                    Default::default(),
                )
            },
        );
        let (s, t) = (steps.clone(), topology.clone());
        registration("service", "restart").set_into_module(
            &mut service,
            move |name: ImmutableString, instance: ImmutableString| {
                push_keyed(
                    &s,
                    &t,
                    ActionKind::Restart,
                    &name,
                    &instance,
                    Default::default(),
                )
            },
        );
        engine.register_static_module("service", service.into());

        let mut scene = Module::new();
        let (s, t) = (steps.clone(), topology.clone());
        registration("scene", "degrade").set_into_module(
            &mut scene,
            move |name: ImmutableString| {
                let sc = t
                    .scenes
                    .iter()
                    .find(|x| x.name == name.as_str())
                    .ok_or_else(|| err(format!("scene::degrade: unknown scene {name:?}")))?;
                if sc.critical {
                    return Err(err(format!(
                        "scene::degrade: {name} is critical and is never degraded by automation"
                    )));
                }
                let entry = t
                    .links
                    .iter()
                    .find(|l| l.name == sc.link)
                    .and_then(|l| l.services.first())
                    .cloned()
                    .unwrap_or_default();
                push_keyed(
                    &s,
                    &t,
                    ActionKind::Degrade,
                    &entry,
                    &name,
                    Default::default(),
                )
            },
        );
        engine.register_static_module("scene", scene.into());

        let mut accounts = Module::new();
        let (s, t) = (steps.clone(), topology.clone());
        registration("accounts", "isolate").set_into_module(
            &mut accounts,
            move |service: ImmutableString, account: ImmutableString| {
                push_keyed(
                    &s,
                    &t,
                    ActionKind::IsolateKey,
                    &service,
                    &account,
                    Default::default(),
                )
            },
        );
        engine.register_static_module("accounts", accounts.into());

        let mut verify = Module::new();
        let s = steps.clone();
        registration("verify", "healthy").set_into_module(
            &mut verify,
            move |service: ImmutableString, window_s: i64| -> Res<()> {
                let window_ms = window(window_s)?;
                lock(&s).push(Step::Verify {
                    check: Check::Healthy(service.to_string()),
                    window_ms,
                });
                Ok(())
            },
        );
        let s = steps.clone();
        registration("verify", "cleared").set_into_module(
            &mut verify,
            move |window_s: i64| -> Res<()> {
                let window_ms = window(window_s)?;
                lock(&s).push(Step::Verify {
                    check: Check::Cleared,
                    window_ms,
                });
                Ok(())
            },
        );
        let (s, v) = (steps.clone(), verify_s.clone());
        registration0("verify", "cleared").set_into_module(&mut verify, move || -> Res<()> {
            let window_ms = window(*lock(&v))?;
            lock(&s).push(Step::Verify {
                check: Check::Cleared,
                window_ms,
            });
            Ok(())
        });
        engine.register_static_module("verify", verify.into());

        let mut incident = Module::new();
        let s = steps.clone();
        registration("incident", "escalate").set_into_module(
            &mut incident,
            move |reason: ImmutableString| -> Res<()> {
                lock(&s).push(Step::Escalate(reason.to_string()));
                Ok(())
            },
        );
        engine.register_static_module("incident", incident.into());

        let mut topo = Module::new();
        let t = topology.clone();
        registration("topo", "backup_of").set_into_module(
            &mut topo,
            move |name: ImmutableString| -> Res<Dynamic> {
                Ok(t.backup_of(&name)
                    .map_or(Dynamic::UNIT, |b| Dynamic::from(b.to_string())))
            },
        );
        let t = topology.clone();
        registration("topo", "non_critical_scenes").set_into_module(
            &mut topo,
            move || -> Res<rhai::Array> {
                Ok(t.scenes
                    .iter()
                    .filter(|s| !s.critical)
                    .map(|s| Dynamic::from(s.name.clone()))
                    .collect::<rhai::Array>())
            },
        );
        let t = topology.clone();
        registration("topo", "other_idc").set_into_module(
            &mut topo,
            move |name: ImmutableString| -> Res<Dynamic> {
                Ok(t.idcs
                    .iter()
                    .find(|i| i.name != name.as_str())
                    .map_or(Dynamic::UNIT, |i| Dynamic::from(i.name.clone())))
            },
        );
        let t = topology.clone();
        registration("topo", "entry_service").set_into_module(
            &mut topo,
            move || -> Res<Dynamic> {
                Ok(t.links
                    .first()
                    .and_then(|l| l.services.first())
                    .map_or(Dynamic::UNIT, |s| Dynamic::from(s.clone())))
            },
        );
        let t = topology;
        registration("topo", "router_of").set_into_module(
            &mut topo,
            move |name: ImmutableString| -> Res<Dynamic> {
                Ok(t.router_of(&name)
                    .map_or(Dynamic::UNIT, |b| Dynamic::from(b.to_string())))
            },
        );
        engine.register_static_module("topo", topo.into());

        Runtime {
            sandbox,
            steps,
            verify_s,
            playbooks: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Hot reload: when a playbook under `dir` was added, changed or
    /// removed since the last load, compiles them all again and swaps them
    /// in if every one is good. A broken set is refused (the old one stays)
    /// and not retried until the files change again. `Ok(None)`: nothing
    /// changed.
    pub fn reload_if_changed(&mut self, dir: &Path) -> Result<Option<usize>, Vec<PlaybookError>> {
        let now = fingerprint(dir);
        if now == self.seen {
            return Ok(None);
        }
        self.seen = now;
        self.load_dir(dir).map(Some)
    }

    /// Compiles one playbook and reads its metadata.
    pub fn compile(&self, path: &Path) -> Result<Playbook, PlaybookError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PlaybookError::Compile {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let ast = self
            .sandbox
            .engine
            .compile(&text)
            .map_err(|e| PlaybookError::Compile {
                file: file.clone(),
                message: e.to_string(),
            })?;
        if let Some(message) = unknown_calls_message(&self.sandbox, &ast) {
            return Err(PlaybookError::Compile { file, message });
        }
        let has = |name: &str, arity: usize| {
            ast.iter_functions()
                .any(|f| f.name == name && f.params.len() == arity)
        };
        if !has("meta", 0) || !has("plan", 1) {
            return Err(PlaybookError::Meta {
                file,
                message: "a playbook defines fn meta() and fn plan(incident)".into(),
            });
        }
        let meta: Map = self
            .sandbox
            .guarded(|e| e.call_fn::<Map>(&mut Scope::new(), &ast, "meta", ()))
            .map_err(|e| PlaybookError::Meta {
                file: file.clone(),
                message: e.to_string(),
            })?;
        let meta = parse_meta(&meta).map_err(|message| PlaybookError::Meta {
            file: file.clone(),
            message,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Playbook {
            name,
            path: path.to_path_buf(),
            meta,
            ast,
        })
    }

    /// Loads every `*.rhai` under `dir` (recursively, except `diagnose/`
    /// rules). Returns every problem found, not just the first.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, Vec<PlaybookError>> {
        let mut files = Vec::new();
        collect(dir, &mut files);
        files.sort();
        let mut problems = Vec::new();
        let mut loaded = Vec::new();
        for f in files {
            match self.compile(&f) {
                Ok(p) => loaded.push(p),
                Err(e) => problems.push(e),
            }
        }
        self.seen = fingerprint(dir);
        if !problems.is_empty() {
            return Err(problems);
        }
        self.playbooks = loaded;
        Ok(self.playbooks.len())
    }

    /// The loaded playbooks.
    pub fn playbooks(&self) -> &[Playbook] {
        &self.playbooks
    }

    /// The first playbook handling `cause`.
    pub fn for_cause(&self, cause: &str) -> Option<&Playbook> {
        self.playbooks
            .iter()
            .find(|p| p.meta.handles.iter().any(|h| h == cause))
    }

    /// Runs `plan(incident)` in the sandbox and returns the steps.
    pub fn plan(&self, pb: &Playbook, facts: &IncidentFacts) -> Result<Vec<Step>, PlaybookError> {
        let mut m = Map::new();
        m.insert("id".into(), facts.id.clone().into());
        m.insert("cause".into(), facts.cause.clone().into());
        m.insert("target".into(), facts.target.clone().into());
        m.insert("at".into(), facts.at.clone().into());
        m.insert("service".into(), facts.service.clone().into());
        m.insert("confidence".into(), facts.confidence.into());
        m.insert(
            "symptoms".into(),
            facts
                .symptoms
                .iter()
                .cloned()
                .map(Dynamic::from)
                .collect::<rhai::Array>()
                .into(),
        );
        lock(&self.steps).clear();
        *lock(&self.verify_s) = pb.meta.verify_s;
        let r = self
            .sandbox
            .guarded(|e| e.call_fn::<Dynamic>(&mut Scope::new(), &pb.ast, "plan", (m,)));
        let steps = std::mem::take(&mut *lock(&self.steps));
        match r {
            Ok(_) => {
                let mut targets: Vec<&str> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::Act(a) => Some(a.target.as_str()),
                        _ => None,
                    })
                    .collect();
                targets.sort_unstable();
                targets.dedup();
                if targets.len() > pb.meta.max_targets {
                    return Err(PlaybookError::Run {
                        file: pb.path.display().to_string(),
                        message: format!(
                            "the plan acts on {} targets ({}), more than meta() allows (max_targets = {})",
                            targets.len(),
                            targets.join(", "),
                            pb.meta.max_targets
                        ),
                    });
                }
                Ok(steps)
            }
            Err(e) => {
                let message = self.sandbox.describe(*e);
                Err(PlaybookError::Run {
                    file: pb.path.display().to_string(),
                    message,
                })
            }
        }
    }
}

/// The kind that undoes `kind`, if any.
pub fn undo_kind(kind: ActionKind) -> Option<ActionKind> {
    match kind {
        ActionKind::ShiftTraffic => Some(ActionKind::ShiftTraffic),
        ActionKind::Throttle
        | ActionKind::Degrade
        | ActionKind::IsolateKey
        | ActionKind::BlockClient => Some(ActionKind::Restore),
        ActionKind::Restore
        | ActionKind::Rollback
        | ActionKind::RevertConfig
        | ActionKind::Restart => None,
    }
}

/// The action that undoes `a`: a shift set back to 0, anything else
/// limited or turned away restored.
pub fn undo(a: &PlannedAction) -> Option<PlannedAction> {
    let kind = undo_kind(a.kind)?;
    let mut params = std::collections::BTreeMap::new();
    if kind == ActionKind::ShiftTraffic {
        params = a.params.clone();
        params.insert("fraction".into(), serde_json::json!(0.0));
    }
    Some(PlannedAction {
        kind,
        service: a.service.clone(),
        target: a.target.clone(),
        params,
    })
}

/// What undoes `applied` (in the order applied): each reversible action
/// undone, newest first, once per target (a stepped shift or throttle is
/// undone once).
pub fn undo_plan<'a>(
    applied: impl DoubleEndedIterator<Item = &'a PlannedAction>,
) -> Vec<PlannedAction> {
    let mut out: Vec<PlannedAction> = Vec::new();
    for u in applied.rev().filter_map(undo) {
        if !out
            .iter()
            .any(|x| x.kind == u.kind && x.target == u.target && x.params == u.params)
        {
            out.push(u);
        }
    }
    out
}

/// The parameters of a traffic shift, with the fraction checked.
fn shift_params(
    who: &str,
    from: &str,
    to: &str,
    fraction: f64,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Box<EvalAltResult>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(err(format!("{who}: fraction {fraction} is not in (0,1]")));
    }
    Ok([
        ("from".to_string(), serde_json::Value::from(from)),
        ("to".to_string(), serde_json::Value::from(to)),
        ("fraction".to_string(), serde_json::Value::from(fraction)),
    ]
    .into())
}

/// Adds an action executed by `service`'s actuator on `target` (the service
/// itself, or a key it serves).
fn push_keyed(
    steps: &Mutex<Vec<Step>>,
    topo: &Topology,
    kind: ActionKind,
    service: &str,
    target: &str,
    params: std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<(), Box<EvalAltResult>> {
    if topo.service(service).is_none() {
        return Err(err(format!(
            "{}: unknown service {service:?}",
            kind.as_str()
        )));
    }
    if !selfheal_bus::message::valid_key(target) {
        return Err(err(format!(
            "{}: {target:?} is not a valid target",
            kind.as_str()
        )));
    }
    lock(steps).push(Step::Act(PlannedAction {
        kind,
        service: service.to_string(),
        target: target.to_string(),
        params,
    }));
    Ok(())
}

/// The verify window when `meta()` names none, s.
pub const DEFAULT_VERIFY_S: i64 = 60;

fn window(s: i64) -> Result<i64, Box<EvalAltResult>> {
    if (1..=3600).contains(&s) {
        Ok(s * 1000)
    } else {
        Err(err(format!("verify window {s}s is not in 1..=3600")))
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n != "diagnose" && n != "tests")
            {
                collect(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rhai")
            && !p.to_string_lossy().ends_with(".d.rhai")
        {
            // (`.d.rhai` files are editor definitions, not playbooks.)
            out.push(p);
        }
    }
}

fn parse_meta(m: &Map) -> Result<Meta, String> {
    let handles = m
        .get("handles")
        .and_then(|v| v.clone().into_typed_array::<ImmutableString>().ok())
        .ok_or("`handles` must be an array of cause kinds")?
        .into_iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    if handles.is_empty() {
        return Err("`handles` is empty".into());
    }
    let text = |k: &str| {
        m.get(k)
            .and_then(|v| v.clone().into_immutable_string().ok())
            .map(|s| s.to_string())
    };
    let risk = match text("risk").as_deref() {
        Some("low") => Risk::Low,
        Some("medium") => Risk::Medium,
        Some("high") => Risk::High,
        Some("critical") => Risk::Critical,
        other => {
            return Err(format!(
                "`risk` must be low, medium, high or critical, not {other:?}"
            ));
        }
    };
    let approval = match text("approval").as_deref() {
        Some("auto") => Approval::Auto,
        Some("approval") => Approval::Approval,
        Some("dry_run") => Approval::DryRun,
        other => {
            return Err(format!(
                "`approval` must be auto, approval or dry_run, not {other:?}"
            ));
        }
    };
    let max_targets = match m.get("max_targets") {
        None => 1,
        Some(v) => match v.as_int() {
            Ok(n) if n >= 1 => n as usize,
            _ => return Err(format!("`max_targets` must be an integer >= 1, not {v}")),
        },
    };
    let verify_s = match m.get("verify_s") {
        None => DEFAULT_VERIFY_S,
        Some(v) => match v.as_int() {
            Ok(n) if (1..=3600).contains(&n) => n,
            _ => {
                return Err(format!(
                    "`verify_s` must be an integer in 1..=3600, not {v}"
                ));
            }
        },
    };
    let on_failure = match text("on_failure").as_deref() {
        None | Some("escalate") => OnFailure::Escalate,
        Some("revert") => OnFailure::Revert,
        Some(other) => {
            return Err(format!(
                "`on_failure` must be escalate or revert, not {other:?}"
            ));
        }
    };
    let act_on_timeout = match m.get("act_on_timeout") {
        None => false,
        Some(v) => v
            .as_bool()
            .map_err(|_| format!("`act_on_timeout` must be true or false, not {v}"))?,
    };
    let reconcile = match m.get("reconcile") {
        None => Vec::new(),
        Some(v) => v
            .clone()
            .into_typed_array::<ImmutableString>()
            .map_err(|_| format!("`reconcile` must be an array of check names, not {v}"))?
            .into_iter()
            .map(|s| s.to_string())
            .collect(),
    };
    Ok(Meta {
        handles,
        risk,
        approval,
        max_targets,
        verify_s,
        on_failure,
        act_on_timeout,
        reconcile,
    })
}

#[cfg(test)]
mod tests;

/// The host API's documentation: (module, function, parameters and return
/// type, doc comment). Attached to each registered function as Rhai
/// metadata, from which `selfheal playbook docs` generates the reference.
pub const HOST_DOCS: &[(&str, &str, &[&str], &str)] = &[
    (
        "traffic",
        "shift",
        &["from: String", "to: String", "fraction: f64", "()"],
        "Sends `fraction` (0 < f ≤ 1) of the traffic bound for channel `from` to `to`, through the router in front of them. A set-point, not an increment: 0.125, then 0.5, then 1.0 is a stepped failover. Refused for an unknown service or a channel nothing routes to.",
    ),
    (
        "traffic",
        "shift_instance",
        &["service: String", "instance: String", "fraction: f64", "()"],
        "Moves `fraction` (0 < f ≤ 1) of `service`'s traffic off one of its instances, at the load balancer in front of it: its weight set to (1 - f); 1.0 drains it. A set-point: 0.5, then 1.0 is a stepped shift. Undone by setting it back to full weight.",
    ),
    (
        "traffic",
        "throttle_key",
        &["service: String", "key: String", "rate: f64", "()"],
        "Limits one key (item, order, merchant...) at `service` to `rate` requests per second (rate ≥ 0).",
    ),
    (
        "traffic",
        "shift_idc",
        &["from: String", "to: String", "fraction: f64", "()"],
        "Sends `fraction` (0 < f ≤ 1) of IDC `from`'s traffic to IDC `to`, where traffic enters the platform.",
    ),
    (
        "traffic",
        "block_client",
        &["service: String", "client: String", "()"],
        "Blocks one client (an IP or client id) at `service`.",
    ),
    (
        "service",
        "rollback",
        &["service: String", "()"],
        "Rolls `service` back to its previous version.",
    ),
    (
        "service",
        "revert_config",
        &["service: String", "()"],
        "Reverts `service`'s last configuration push.",
    ),
    (
        "service",
        "restart",
        &["service: String", "instance: String", "()"],
        "Restarts one instance of `service` (its connections are reset).",
    ),
    (
        "scene",
        "degrade",
        &["scene: String", "()"],
        "Turns a non-critical scene away to protect the others. Refused for a scene the topology marks critical.",
    ),
    (
        "accounts",
        "isolate",
        &["service: String", "account: String", "()"],
        "Isolates a hot account at `service`: its postings are buffered and applied in order, the rest flow.",
    ),
    (
        "verify",
        "healthy",
        &["service: String", "window_s: i64", "()"],
        "Waits `window_s` seconds (1..=3600) and checks that `service` shows no new anomaly; if it does, the plan stops and a person is called.",
    ),
    (
        "verify",
        "cleared",
        &["window_s: i64", "()"],
        "Waits up to `window_s` seconds (1..=3600) for the incident's symptoms to clear; the next step runs if they do not.",
    ),
    (
        "verify",
        "cleared",
        &["()"],
        "Waits up to the playbook's verify window (`verify_s` in `meta()`, 60 s when absent) for the incident's symptoms to clear; the next step runs if they do not.",
    ),
    (
        "incident",
        "escalate",
        &["reason: String", "()"],
        "Hands the incident to a person with `reason` and what was tried; the plan ends.",
    ),
    (
        "topo",
        "backup_of",
        &["service: String", "String or ()"],
        "The declared backup of `service` (a channel's backup channel), or `()`.",
    ),
    (
        "topo",
        "non_critical_scenes",
        &["Array of String"],
        "The scenes the topology does not mark critical.",
    ),
    (
        "topo",
        "other_idc",
        &["idc: String", "String or ()"],
        "Another IDC than `idc`, or `()` if there is none.",
    ),
    (
        "topo",
        "entry_service",
        &["String or ()"],
        "The service where traffic enters the platform.",
    ),
    (
        "topo",
        "router_of",
        &["channel: String", "String or ()"],
        "The service that routes traffic to `channel`, or `()`.",
    ),
];

/// The registration of `module::name`, with its documentation from
/// [`HOST_DOCS`] attached as metadata.
fn registration(ns: &str, name: &str) -> rhai::FuncRegistration {
    documented(ns, name, |_| true)
}

/// [`registration`] of the overload of `module::name` without arguments.
fn registration0(ns: &str, name: &str) -> rhai::FuncRegistration {
    documented(ns, name, |params| params.len() == 1)
}

fn documented(ns: &str, name: &str, overload: impl Fn(&[&str]) -> bool) -> rhai::FuncRegistration {
    let r = rhai::FuncRegistration::new(name.to_string());
    match HOST_DOCS
        .iter()
        .find(|(m, n, p, _)| *m == ns && *n == name && overload(p))
    {
        Some((_, _, params, doc)) => r
            .with_params_info(params.iter().copied())
            .with_comments([format!("/// {doc}")]),
        None => {
            debug_assert!(false, "{ns}::{name} has no entry in HOST_DOCS");
            r
        }
    }
}

/// One host function, as the engine reports it.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct HostFn {
    /// Module.
    pub module: String,
    /// Function.
    pub name: String,
    /// Parameters, `name: type`.
    pub params: Vec<String>,
    /// Return type.
    pub returns: String,
    /// Documentation.
    pub doc: String,
}

impl Runtime {
    /// `text` parsed by the playbook engine, nothing checked beyond syntax
    /// (for the authoring lints).
    pub fn parse(&self, text: &str) -> Result<rhai::AST, rhai::ParseError> {
        self.sandbox.engine.compile(text)
    }

    /// The host API, read back from the engine's function metadata.
    pub fn host_api(&self) -> Vec<HostFn> {
        let json = self
            .sandbox
            .engine
            .gen_fn_metadata_to_json(false)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let mut out = Vec::new();
        if let Some(mods) = v.get("modules").and_then(|m| m.as_object()) {
            for (module, m) in mods {
                for f in m
                    .get("functions")
                    .and_then(|f| f.as_array())
                    .into_iter()
                    .flatten()
                {
                    let s = |k: &str| f.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    let params = f
                        .get("params")
                        .and_then(|p| p.as_array())
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            let g = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("");
                            format!("{}: {}", g("name"), g("type"))
                        })
                        .collect();
                    let doc = f
                        .get("docComments")
                        .and_then(|d| d.as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l.as_str())
                        .map(|l| l.trim_start_matches("///").trim())
                        .collect::<Vec<_>>()
                        .join(" ");
                    out.push(HostFn {
                        module: module.clone(),
                        name: s("name"),
                        params,
                        returns: s("returnType"),
                        doc,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.module, &a.name).cmp(&(&b.module, &b.name)));
        out
    }
}

/// The refusal of a script that calls functions that exist nowhere (see
/// [`crate::sandbox::Sandbox::unknown_calls`]), as Rhai words a compile
/// error: each with its line.
pub(crate) fn unknown_calls_message(
    sandbox: &crate::sandbox::Sandbox,
    ast: &rhai::AST,
) -> Option<String> {
    let unknown = sandbox.unknown_calls(ast);
    (!unknown.is_empty()).then(|| {
        unknown
            .iter()
            .map(|(line, name)| format!("unknown function {name} (line {line}, position 1)"))
            .collect::<Vec<_>>()
            .join("; ")
    })
}
