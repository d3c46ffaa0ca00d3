//! Diagnose: turn an incident's evidence into ranked hypotheses, each with
//! a confidence and the evidence behind it.
//!
//! The scoring is written as rules in Rhai (`playbooks/diagnose/*.rhai`),
//! which operators can read and change. Each rule file defines
//! `fn rule(incident)`: it receives the incident's facts (its anomalous
//! series with onsets and baselines, the changes around its start, the keys
//! whose share jumped, the topology) and calls `hypothesis::add` or
//! `hypothesis::adjust`. Rules run in file-name order in the playbooks'
//! sandbox; a rule that fails is skipped, named and counted, and the others
//! still run. See docs/diagnosis.md.
//!
//! # Layout
//! - this module: the rules' runtime, the facts they read and the
//!   hypotheses they make.
//! - [`localize`]: generic root-cause localization over any service graph,
//!   handed to the rules as `incident.candidates`.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use rhai::{AST, Array, Dynamic, ImmutableString, Map, Module, Scope};
use selfheal_bus::{ChangeKind, Layer, Topology, topology::ServiceKind};

pub mod localize;

pub use localize::Candidate;

use crate::{
    context::Context,
    detect::Direction,
    incident::Incident,
    sandbox::{Limits, Sandbox, lock},
    store::Known,
};

pub use crate::incident::Hypothesis;

/// How far before the first anomaly a change is still a suspect, at the
/// least, ms; on slower data the horizon is [`CHANGE_LOOKBACK_STEPS`]
/// sampling steps.
pub const CHANGE_LOOKBACK_MS: i64 = 10 * 60 * 1000;
/// The change horizon in sampling steps (20 one-minute samples: 20
/// minutes).
pub const CHANGE_LOOKBACK_STEPS: i64 = 20;

/// The change horizon for data sampled every `step_ms`.
pub fn change_lookback_ms(step_ms: i64) -> i64 {
    CHANGE_LOOKBACK_MS.max(CHANGE_LOOKBACK_STEPS.saturating_mul(step_ms.max(0)))
}

/// What the brain measured for a diagnosis beyond the incident itself.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// The localization's candidates, best first.
    pub candidates: Vec<Candidate>,
    /// The sampling step of the incident's series, ms (0: unknown).
    pub step_ms: i64,
    /// How often they take a new value, ms, when they are scraped less
    /// often than they are sampled (0: as often as they are sampled).
    pub scrape_ms: i64,
}
/// How long after the first anomaly a change is still listed, ms (clocks
/// of the change feed and of the indicators differ a little).
pub const CHANGE_LOOKAHEAD_MS: i64 = 5_000;
/// The most anomalous series a rule sees (the earliest first).
pub const MAX_SERIES: usize = 1000;
/// The highest confidence a rule may give.
const MAX_CONFIDENCE: f64 = 0.99;

type Adjustment = (String, String, f64, String);

/// The loaded rules and the engine they run in.
pub struct Rules {
    sandbox: Sandbox,
    added: Arc<Mutex<Vec<Hypothesis>>>,
    adjusted: Arc<Mutex<Vec<Adjustment>>>,
    rules: Vec<(String, AST)>,
}

/// A rule that could not be loaded or failed while running.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The rule (file stem).
    pub rule: String,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "diagnosis rule {}: {}", self.rule, self.message)
    }
}

fn clamp(c: f64) -> f64 {
    if c.is_finite() {
        c.clamp(0.0, MAX_CONFIDENCE)
    } else {
        0.0
    }
}

impl Rules {
    /// An engine with the rules' host functions and no rule loaded.
    pub fn new(limits: Limits) -> Self {
        let mut sandbox = Sandbox::new(limits, "diagnose");
        // Facts are bigger than a plan's inputs: up to MAX_SERIES series of
        // 14 fields each, plus changes, keys and the topology.
        sandbox.engine.set_max_array_size(MAX_SERIES * 2);
        sandbox.engine.set_max_map_size(MAX_SERIES * 16);
        // (Rhai counts the text of a whole map, nested, against this.)
        sandbox.engine.set_max_string_size(MAX_SERIES * 256);
        let added: Arc<Mutex<Vec<Hypothesis>>> = Arc::default();
        let adjusted: Arc<Mutex<Vec<Adjustment>>> = Arc::default();
        let mut m = Module::new();
        let a = added.clone();
        m.set_native_fn(
            "add",
            move |cause: ImmutableString,
                  target: ImmutableString,
                  at: ImmutableString,
                  confidence: f64,
                  evidence: Array| {
                if cause.is_empty() || target.is_empty() {
                    return Err("hypothesis::add: cause and target must not be empty".into());
                }
                lock(&a).push(Hypothesis {
                    cause: cause.to_string(),
                    target: target.to_string(),
                    at: at.to_string(),
                    confidence: clamp(confidence),
                    evidence: evidence.into_iter().map(|d| d.to_string()).collect(),
                });
                Ok(())
            },
        );
        let j = adjusted.clone();
        m.set_native_fn(
            "adjust",
            move |cause: ImmutableString,
                  target: ImmutableString,
                  delta: f64,
                  why: ImmutableString| {
                if !delta.is_finite() {
                    return Err("hypothesis::adjust: delta must be a number".into());
                }
                lock(&j).push((
                    cause.to_string(),
                    target.to_string(),
                    delta,
                    why.to_string(),
                ));
                Ok(())
            },
        );
        sandbox
            .engine
            .register_static_module("hypothesis", m.into());
        sandbox
            .engine
            .register_fn("fixed", |x: f64, digits: i64| -> String {
                format!("{x:.*}", digits.clamp(0, 9) as usize)
            })
            .register_fn("join", |a: Array, sep: ImmutableString| -> String {
                a.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(sep.as_str())
            });
        Rules {
            sandbox,
            added,
            adjusted,
            rules: Vec::new(),
        }
    }

    /// Compiles every `*.rhai` in `dir` (not below it); each must define
    /// `fn rule(incident)`. Every problem at once; nothing is swapped in
    /// unless all are good.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, Vec<RuleError>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_file()
                            && p.extension().is_some_and(|x| x == "rhai")
                            && !p.to_string_lossy().ends_with(".d.rhai")
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let rule = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let r = std::fs::read_to_string(&f)
                .map_err(|e| e.to_string())
                .and_then(|t| self.sandbox.engine.compile(&t).map_err(|e| e.to_string()))
                .and_then(
                    |ast| match crate::playbook::unknown_calls_message(&self.sandbox, &ast) {
                        Some(m) => Err(m),
                        None => Ok(ast),
                    },
                )
                .and_then(|ast| {
                    if ast
                        .iter_functions()
                        .any(|f| f.name == "rule" && f.params.len() == 1)
                    {
                        Ok(ast)
                    } else {
                        Err("a diagnosis rule defines fn rule(incident)".into())
                    }
                });
            match r {
                Ok(ast) => rules.push((rule, ast)),
                Err(message) => errors.push(RuleError {
                    rule: f.display().to_string(),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            self.rules = rules;
            Ok(self.rules.len())
        } else {
            Err(errors)
        }
    }

    /// The loaded rules' names, in the order they run.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Ranks the causes of `inc`, best first (never empty: `unknown` comes
    /// last), and the rules that failed.
    pub fn diagnose(
        &self,
        inc: &Incident,
        topo: &Topology,
        ctx: &Context,
        similar: &[(f64, Known)],
        measured: &Measured,
    ) -> (Vec<Hypothesis>, Vec<RuleError>) {
        let mut f = facts_with(inc, topo, ctx, measured.step_ms);
        if measured.scrape_ms > measured.step_ms {
            f.insert(
                "scrape_s".into(),
                Dynamic::from(measured.scrape_ms as f64 / 1000.0),
            );
        }
        f.insert(
            "candidates".into(),
            candidate_facts(&measured.candidates).into(),
        );
        let past: Array = similar
            .iter()
            .map(|(s, k)| {
                let mut m = Map::new();
                m.insert("incident".into(), text(&k.incident));
                m.insert("similarity".into(), Dynamic::from(*s));
                m.insert("cause".into(), text(&k.cause));
                m.insert("target".into(), text(&k.target));
                m.insert("healed_by".into(), text(&k.healed_by));
                m.into()
            })
            .collect();
        f.insert("similar".into(), past.into());
        self.run(f, &inc.service, inc.evidence.len())
    }

    /// Runs every rule on `facts` (as [`facts`] builds them).
    pub fn run(
        &self,
        facts: Map,
        service: &str,
        series: usize,
    ) -> (Vec<Hypothesis>, Vec<RuleError>) {
        lock(&self.added).clear();
        lock(&self.adjusted).clear();
        let mut errors = Vec::new();
        let mut out: Vec<Hypothesis> = Vec::new();
        let mut adjustments = Vec::new();
        for (name, ast) in &self.rules {
            let r = self.sandbox.guarded(|e| {
                e.call_fn::<Dynamic>(&mut Scope::new(), ast, "rule", (facts.clone(),))
            });
            let added = std::mem::take(&mut *lock(&self.added));
            let adjusted = std::mem::take(&mut *lock(&self.adjusted));
            if let Err(e) = r {
                // A failed rule adds nothing.
                errors.push(RuleError {
                    rule: name.clone(),
                    message: self.sandbox.describe(*e),
                });
                continue;
            }
            for h in added {
                match out
                    .iter_mut()
                    .find(|o| o.cause == h.cause && o.target == h.target)
                {
                    Some(o) => {
                        o.confidence = o.confidence.max(h.confidence);
                        for e in h.evidence {
                            if !o.evidence.contains(&e) {
                                o.evidence.push(e);
                            }
                        }
                    }
                    None => out.push(h),
                }
            }
            adjustments.extend(adjusted);
        }
        // Adjustments apply once every rule has added its hypotheses, so
        // that the order of the files does not matter.
        for (cause, target, delta, why) in adjustments {
            for o in out
                .iter_mut()
                .filter(|o| o.cause == cause && o.target == target)
            {
                o.confidence = clamp(o.confidence + delta);
                o.evidence.push(why.clone());
            }
        }
        out.retain(|h| h.confidence > 0.0);
        out.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.cause.cmp(&b.cause))
                .then_with(|| a.target.cmp(&b.target))
        });
        out.push(Hypothesis {
            cause: "unknown".into(),
            target: service.to_string(),
            at: service.to_string(),
            confidence: 0.1,
            evidence: vec![format!("{series} anomalous series, no rule matched")],
        });
        (out, errors)
    }
}

/// The localization's candidates as the rules see them (at most 10).
pub fn candidate_facts(candidates: &[Candidate]) -> Array {
    candidates
        .iter()
        .take(10)
        .map(|c| {
            let mut m = Map::new();
            m.insert("service".into(), text(&c.service));
            m.insert("instance".into(), opt(c.instance.as_deref()));
            m.insert("score".into(), Dynamic::from(c.score));
            m.insert("magnitude".into(), Dynamic::from(c.magnitude));
            m.insert(
                "moved_clearly".into(),
                Dynamic::from(c.magnitude >= localize::MOVED),
            );
            m.insert("coverage".into(), Dynamic::from(c.coverage));
            m.insert(
                "first_s".into(),
                c.first_s.map_or(Dynamic::UNIT, Dynamic::from),
            );
            m.insert(
                "explains".into(),
                c.explains.iter().map(|s| text(s)).collect::<Array>().into(),
            );
            m.insert("callee_magnitude".into(), Dynamic::from(c.callee_magnitude));
            m.insert(
                "outrun_by".into(),
                c.outrun_by
                    .iter()
                    .map(|s| text(s))
                    .collect::<Array>()
                    .into(),
            );
            m.insert("comove".into(), Dynamic::from(c.comove));
            m.insert("fault".into(), text(c.fault));
            m.insert(
                "moved".into(),
                c.moved
                    .iter()
                    .map(|(s, class, z)| text(&format!("{s} ({class}) moved {z:.1}")))
                    .collect::<Array>()
                    .into(),
            );
            m.into()
        })
        .collect()
}

fn text(s: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(s))
}

fn opt(s: Option<&str>) -> Dynamic {
    s.map_or(Dynamic::UNIT, text)
}

fn layer(l: Layer) -> &'static str {
    match l {
        Layer::Business => "business",
        Layer::System => "system",
        Layer::Infra => "infra",
    }
}

/// The facts a rule sees, as a Rhai map (documented in docs/diagnosis.md).
pub fn facts(inc: &Incident, topo: &Topology, ctx: &Context) -> Map {
    facts_with(inc, topo, ctx, 0)
}

/// [`facts`] for data sampled every `step_ms` (0: unknown), which sets
/// the change horizon.
pub fn facts_with(inc: &Incident, topo: &Topology, ctx: &Context, step_ms: i64) -> Map {
    let onset = inc.onset;
    let lookback = change_lookback_ms(step_ms);
    let secs = |ms: i64| (ms - onset) as f64 / 1000.0;
    let mut f = Map::new();
    f.insert("id".into(), text(&inc.id));
    f.insert("service".into(), text(&inc.service));
    f.insert("onset".into(), Dynamic::from(onset));
    f.insert("step_s".into(), Dynamic::from(step_ms as f64 / 1000.0));
    f.insert("scrape_s".into(), Dynamic::from(step_ms as f64 / 1000.0));
    f.insert("lookback_s".into(), Dynamic::from(lookback as f64 / 1000.0));
    let mut series: Vec<_> = inc.evidence.iter().collect();
    series.sort_by_key(|(_, e)| e.onset);
    series.truncate(MAX_SERIES);
    let evidence: Array = series
        .into_iter()
        .map(|(k, e)| {
            let mut m = Map::new();
            m.insert("series".into(), text(&k.to_string()));
            m.insert("layer".into(), text(layer(k.layer)));
            m.insert("idc".into(), text(&k.idc));
            m.insert("service".into(), text(&k.service));
            m.insert("scene".into(), opt(k.scene.as_deref()));
            m.insert("link".into(), opt(k.link.as_deref()));
            m.insert("instance".into(), opt(k.instance.as_deref()));
            m.insert("metric".into(), text(&k.metric));
            m.insert("value".into(), Dynamic::from(e.value));
            m.insert("baseline".into(), Dynamic::from(e.baseline));
            m.insert("onset".into(), Dynamic::from(e.onset));
            m.insert("after_s".into(), Dynamic::from(secs(e.onset)));
            m.insert("active".into(), Dynamic::from(e.active));
            m.insert("harmless".into(), Dynamic::from(e.harmless));
            let d = match e.direction {
                Direction::Up => "up",
                Direction::Down => "down",
                Direction::Both => "both",
            };
            m.insert("direction".into(), text(d));
            m.insert("class".into(), text(&e.class));
            m.into()
        })
        .collect();
    f.insert("evidence".into(), evidence.into());
    // Up to the last anomaly: a service whose own indicators went bad
    // after the incident's onset (a signal elsewhere opened it) may have
    // been changed in between.
    let last = inc.evidence.values().map(|e| e.onset).fold(onset, i64::max);
    let changes: Array = ctx
        .changes_between(onset - lookback, last + CHANGE_LOOKAHEAD_MS)
        .into_iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("id".into(), text(&c.id));
            let kind = match c.kind {
                ChangeKind::Deploy => "deploy",
                ChangeKind::Config => "config",
                ChangeKind::FeatureFlag => "feature_flag",
                ChangeKind::Scaling => "scaling",
            };
            m.insert("kind".into(), text(kind));
            m.insert("service".into(), text(&c.service));
            m.insert("author".into(), text(&c.author));
            m.insert("description".into(), text(&c.description));
            m.insert("before_s".into(), Dynamic::from(-secs(c.ts)));
            m.into()
        })
        .collect();
    f.insert("changes".into(), changes.into());
    let hot: Array = ctx
        .hot_jumps()
        .into_iter()
        .map(|j| {
            let mut m = Map::new();
            m.insert("dimension".into(), text(&j.dimension));
            m.insert("key".into(), text(&j.key));
            m.insert("service".into(), text(&j.service));
            m.insert("idc".into(), text(&j.idc));
            m.insert("share".into(), Dynamic::from(j.share));
            m.insert("normal".into(), Dynamic::from(j.normal));
            m.insert("since_s".into(), Dynamic::from(secs(j.since)));
            m.into()
        })
        .collect();
    f.insert("hot".into(), hot.into());
    let mut services = Map::new();
    for s in &topo.services {
        let mut m = Map::new();
        let kind = match s.kind {
            ServiceKind::App => "app",
            ServiceKind::Channel => "channel",
            ServiceKind::Database => "database",
        };
        m.insert("kind".into(), text(kind));
        m.insert("instances".into(), Dynamic::from(s.instances as i64));
        m.insert(
            "depends_on".into(),
            s.depends_on
                .iter()
                .map(|d| text(d))
                .collect::<Array>()
                .into(),
        );
        m.insert("backup".into(), opt(s.backup.as_deref()));
        services.insert(s.name.as_str().into(), m.into());
    }
    f.insert("services".into(), services.into());
    f.insert(
        "idcs".into(),
        topo.idcs
            .iter()
            .map(|i| text(&i.name))
            .collect::<Array>()
            .into(),
    );
    f
}

#[cfg(test)]
mod tests;
