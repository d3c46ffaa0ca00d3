//! The patrol robot: the inspections an SRE team does by hand before a big
//! sale, each with a verdict (pass, warn, fail), its evidence and the fix.
//!
//! * **store**: writable, its audit chain intact;
//! * **guards**: the kill switch engages and releases through the real
//!   guard (an on/off round trip), the change-freeze calendar covers the
//!   event, the blast-radius budget is set;
//! * **on-call**: someone can approve, two where a playbook needs two, and
//!   every notification channel answers a test message;
//! * **playbooks**: every playbook compiles;
//! * **capacity**: the platform (the simulator of the topology) at the
//!   expected peak on a healthy day — each scene's success against its
//!   objective — and what the brain does there (it should page nobody);
//! * **rehearsals**: every playbook rehearsed on its fault class's scenario
//!   at the peak, healing within the MTTR target (a failover at the peak
//!   also shows whether the backup takes its primary's peak traffic);
//! * **detection**: models trained recently; the brain quiet on a normal
//!   day's recording; no series refused by a running brain;
//! * **bus**: NATS reachable, when one is named.
//!
//! The report is JSON and one self-contained HTML page with SVG charts.

use std::{fmt::Write as _, path::Path, sync::Arc};

use selfheal_brain::{BrainConfig, playbook::Runtime, store::Store};
use selfheal_bus::{LocalTransport, Topology, time::parse_timestamp as parse_timestamp_ms};
use serde::Serialize;

use crate::drill::{Rehearsal, rehearse_at};

/// A verdict; the worst one is the patrol's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Ready.
    Pass,
    /// Ready, with something to look at.
    Warn,
    /// Not ready: fix it before the event.
    Fail,
}

/// One inspection.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Its area (`store`, `guards`, `oncall`, `playbooks`, `capacity`,
    /// `rehearsals`, `bus`).
    pub area: &'static str,
    /// What was inspected.
    pub name: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was seen.
    pub evidence: String,
    /// What to do (empty on a pass).
    pub fix: String,
}

/// One scene at the peak on a healthy day.
#[derive(Clone, Debug, Serialize)]
pub struct SceneAtPeak {
    /// The scene.
    pub scene: String,
    /// Its success rate over the run's last 10 s at the peak.
    pub success: f64,
    /// Its objective.
    pub slo: f64,
    /// Pass at or above the objective.
    pub verdict: Verdict,
}

/// One playbook rehearsed at the peak.
#[derive(Clone, Debug, Serialize)]
pub struct RehearsalAtPeak {
    /// The playbook.
    pub playbook: String,
    /// Its fault class's scenario.
    pub scenario: String,
    /// Fault to the platform back within its objective, s (`None`: never,
    /// or not run).
    pub mttr_s: Option<f64>,
    /// The target.
    pub target_s: f64,
    /// Its verdict.
    pub verdict: Verdict,
}

/// One declared capacity against its expected peak.
#[derive(Clone, Debug, Serialize)]
pub struct Headroom {
    /// What: a service, a channel, an IDC, or a backup taking its
    /// primary's traffic (`bank-b for bank-a`).
    pub what: String,
    /// Its declared capacity, transactions/s.
    pub capacity_tps: f64,
    /// The traffic it must take at the peak, transactions/s.
    pub expected_tps: f64,
    /// capacity / expected − 1 (0.25: a quarter to spare).
    pub headroom: f64,
    /// Pass from 20 % to spare, warn from 0, fail below.
    pub verdict: Verdict,
}

/// The whole patrol.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When it ran (wall clock, ms).
    pub at_ms: i64,
    /// The event's window, ms, when one was named.
    pub event: Option<(i64, i64)>,
    /// The expected peak, × normal demand.
    pub peak: f64,
    /// The MTTR target, s.
    pub mttr_target_s: f64,
    /// The worst verdict.
    pub verdict: Verdict,
    /// Every inspection, in order.
    pub checks: Vec<Check>,
    /// Each scene at the peak.
    pub scenes: Vec<SceneAtPeak>,
    /// Each rehearsal at the peak.
    pub rehearsals: Vec<RehearsalAtPeak>,
    /// Each declared capacity against the expected peak.
    pub headroom: Vec<Headroom>,
}

/// What to patrol.
pub struct Plan {
    /// The brain's configuration (store, playbooks, guards, on-call).
    pub brain: BrainConfig,
    /// The topology (the simulator is built from it).
    pub topology: Topology,
    /// The event's window, ms.
    pub event: Option<(i64, i64)>,
    /// The expected peak, × normal demand.
    pub peak: f64,
    /// The MTTR target, s.
    pub mttr_target_s: f64,
    /// A NATS server to reach, when the deployment uses one.
    pub nats: Option<String>,
    /// Run the simulator parts (capacity at the peak, rehearsals).
    pub simulate: bool,
    /// A recording of a normal day (replay's format) the brain must stay
    /// quiet on.
    pub normal_day: Option<std::path::PathBuf>,
    /// A running brain's HTTP API, to read its counters.
    pub brain_url: Option<String>,
    /// Models older than this many days are stale.
    pub models_max_age_days: f64,
}

fn check(
    area: &'static str,
    name: impl Into<String>,
    verdict: Verdict,
    evidence: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        area,
        name: name.into(),
        verdict,
        evidence: evidence.into(),
        fix: fix.into(),
    }
}

/// Runs every inspection of `plan`; `progress` hears each step's name
/// before it runs.
pub async fn patrol(plan: &Plan, mut progress: impl FnMut(&str)) -> anyhow::Result<Report> {
    let mut checks = Vec::new();
    progress("store");
    checks.extend(store_checks(&plan.brain));
    progress("guards");
    checks.extend(guard_checks(plan));
    progress("playbooks");
    let mut rt = Runtime::new(
        Arc::new(plan.topology.clone()),
        selfheal_brain::playbook::Limits::default(),
    );
    let loaded = rt.load_dir(&plan.brain.playbooks);
    match &loaded {
        Ok(n) => checks.push(check(
            "playbooks",
            "every playbook compiles",
            if *n > 0 { Verdict::Pass } else { Verdict::Fail },
            format!("{n} playbook(s) under {}", plan.brain.playbooks.display()),
            if *n > 0 {
                ""
            } else {
                "no playbook: nothing can heal"
            },
        )),
        Err(errs) => {
            for e in errs {
                checks.push(check(
                    "playbooks",
                    "a playbook compiles",
                    Verdict::Fail,
                    e.to_string(),
                    "fix the script (`selfheal playbook check`) before the event",
                ));
            }
        }
    }
    progress("on-call");
    checks.extend(oncall_checks(plan, loaded.is_ok().then_some(&rt)).await);
    progress("detection");
    // The normal day, read once: its busiest minute for the capacities,
    // then replayed to see the brain quiet on it.
    let day = plan.normal_day.as_ref().map(|d| crate::replay::read(d));
    let busiest = match &day {
        Some(Ok(rec)) => {
            let configured =
                selfheal_brain::detect::MetricClasses::new(&plan.brain.metric_class).ok();
            let classes = configured
                .as_ref()
                .unwrap_or(selfheal_brain::detect::MetricClasses::shipped());
            Some(rec.busiest_minute(|m| &*classes.classify(m).name == "traffic"))
        }
        _ => None,
    };
    checks.extend(detection_checks(plan, day).await);
    if let Some(url) = &plan.nats {
        progress("bus");
        checks.extend(
            match selfheal_bus::NatsTransport::connect(url, "selfheal-patrol").await {
                Ok(nats) => {
                    let mut v = vec![check(
                        "bus",
                        "NATS reachable",
                        Verdict::Pass,
                        format!("connected to {url}"),
                        "",
                    )];
                    v.extend(jetstream_checks(plan, &nats).await);
                    v
                }
                Err(e) => vec![check(
                    "bus",
                    "NATS reachable",
                    Verdict::Fail,
                    format!("{url}: {e}"),
                    "start the NATS servers, or fix the URL",
                )],
            },
        );
    }
    progress("declared capacities");
    let (c, headroom) = declared_capacity(plan, busiest.as_ref());
    checks.extend(c);
    let mut scenes = Vec::new();
    let mut rehearsals = Vec::new();
    if plan.simulate {
        progress("capacity at the peak");
        let (c, s) = capacity(plan).await?;
        checks.extend(c);
        scenes = s;
        if loaded.is_ok() {
            let names: Vec<String> = rt.playbooks().iter().map(|p| p.name.clone()).collect();
            progress("rehearsals at the peak");
            let done = rehearse_at(
                &rt,
                &names,
                &plan.brain.playbooks,
                &plan.topology,
                plan.peak,
            )
            .await?;
            let (c, r) = rehearsal_checks(plan, &done);
            checks.extend(c);
            rehearsals = r;
        }
    }
    let verdict = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Ok(Report {
        at_ms: selfheal_bus::wall_ms(),
        event: plan.event,
        peak: plan.peak,
        mttr_target_s: plan.mttr_target_s,
        verdict,
        checks,
        scenes,
        rehearsals,
        headroom,
    })
}

/// JetStream, where the configuration uses it (`[jetstream]`, `[ha]`):
/// enabled, and each stream and bucket there with every replica current.
async fn jetstream_checks(plan: &Plan, nats: &selfheal_bus::NatsTransport) -> Vec<Check> {
    let streams: Vec<String> = plan
        .brain
        .jetstream
        .iter()
        .map(|j| j.stream.clone())
        .collect();
    let buckets: Vec<String> = plan
        .brain
        .ha
        .iter()
        .flat_map(|h| [h.lease_bucket.clone(), h.state_bucket.clone()])
        .collect();
    if streams.is_empty() && buckets.is_empty() {
        return Vec::new();
    }
    let health = match selfheal_bus::stream::inspect(nats.client(), &streams, &buckets).await {
        Ok(h) => h,
        Err(e) => {
            return vec![check(
                "bus",
                "JetStream answers",
                Verdict::Fail,
                e.to_string(),
                "enable JetStream on every NATS server (`jetstream {}` in its configuration, or -js) and check the cluster has a meta leader",
            )];
        }
    };
    let mut out = vec![check(
        "bus",
        "JetStream answers",
        Verdict::Pass,
        format!("{} stream(s) in the account", health.streams),
        "",
    )];
    for (what, got) in health.found {
        out.push(match got {
            None => check(
                "bus",
                format!("JetStream {what}"),
                Verdict::Fail,
                format!("{what} does not exist: the brain has not started with this configuration, or it was deleted"),
                "start the brain (it creates its streams and buckets), or fix the names in [jetstream] and [ha]",
            ),
            Some(selfheal_bus::stream::StreamState {
                messages,
                replicas,
                current,
            }) if current < replicas => check(
                "bus",
                format!("JetStream {what}"),
                Verdict::Fail,
                format!("{current} of {replicas} replicas current ({messages} messages)"),
                "bring the lagging or offline NATS servers back before the event: one more loss could stop the stream",
            ),
            Some(selfheal_bus::stream::StreamState {
                messages, replicas, ..
            }) => check(
                "bus",
                format!("JetStream {what}"),
                Verdict::Pass,
                format!("{replicas} replica(s), all current; {messages} messages"),
                "",
            ),
        });
    }
    out
}

/// Spare capacity below this share of the expected peak is a warning.
const HEADROOM_WARN: f64 = 0.2;

/// Each declared capacity (`capacity_tps` of the topology's services,
/// channels and IDCs) against the traffic it must take at the peak: the
/// normal day's busiest minute (`--normal-day`), or else the scenes'
/// `base_tps`, × the peak; a backup against its own peak plus its
/// primary's; an IDC against its own plus the largest other IDC's.
fn declared_capacity(
    plan: &Plan,
    busiest: Option<&crate::replay::Busiest>,
) -> (Vec<Check>, Vec<Headroom>) {
    let topo = &plan.topology;
    let peak = plan.peak;
    let base = topo.base_load();
    let source = match (&plan.normal_day, busiest) {
        (Some(day), Some(_)) => format!("the busiest minute of {}", day.display()),
        _ => "the scenes' base_tps (name --normal-day for real traffic)".to_string(),
    };
    // Normal traffic through a service: its own series, or its scenes'
    // along their links, or (a channel) its share of its router's.
    let normal = |name: &str| -> Option<f64> {
        let Some(b) = busiest else {
            return base.get(name).copied();
        };
        if let Some(v) = b.service.get(name) {
            return Some(*v);
        }
        let scenes: f64 = topo
            .scenes
            .iter()
            .filter(|sc| {
                topo.links
                    .iter()
                    .any(|l| l.name == sc.link && l.services.iter().any(|x| x == name))
            })
            .filter_map(|sc| b.scene.get(&sc.name))
            .sum();
        if scenes > 0.0 {
            return Some(scenes);
        }
        base.get(name).copied()
    };
    let idc_normal = |name: &str| -> Option<f64> {
        if let Some(v) = busiest.and_then(|b| b.idc.get(name)) {
            return Some(*v);
        }
        let total: f64 = topo.scenes.iter().map(|s| s.base_tps).sum();
        let share = topo.idcs.iter().find(|i| i.name == name)?.traffic_share;
        Some(total * share)
    };
    // Each inspection, with its figures when it judged a declared capacity.
    let mut out: Vec<(Check, Option<Headroom>)> = Vec::new();
    let judge = |what: String, capacity: f64, expected: f64, how: String, fix: String| {
        let headroom = capacity / expected.max(1e-9) - 1.0;
        let verdict = if headroom >= HEADROOM_WARN {
            Verdict::Pass
        } else if headroom >= 0.0 {
            Verdict::Warn
        } else {
            Verdict::Fail
        };
        let c = check(
            "capacity",
            format!("{what} at ×{peak}"),
            verdict,
            format!(
                "declared {capacity:.0}/s against {expected:.0}/s expected ({how}): {:+.0} % headroom",
                100.0 * headroom
            ),
            if verdict == Verdict::Pass {
                String::new()
            } else {
                fix
            },
        );
        (
            c,
            Some(Headroom {
                what,
                capacity_tps: capacity,
                expected_tps: expected,
                headroom,
                verdict,
            }),
        )
    };
    let mut undeclared = Vec::new();
    for svc in &topo.services {
        let Some(n) = normal(&svc.name) else {
            continue;
        };
        let Some(cap) = svc.capacity_tps else {
            undeclared.push(svc.name.clone());
            continue;
        };
        out.push(judge(
            svc.name.clone(),
            cap,
            n * peak,
            format!("{n:.0}/s normal, from {source}, × {peak}"),
            format!(
                "add capacity to {} (instances, pool, the bank's limit) or plan to throttle or degrade before the event",
                svc.name
            ),
        ));
        // Its backup takes its traffic on top of its own.
        if let Some(b) = topo.backup_of(&svc.name) {
            let own = normal(b).unwrap_or(0.0);
            match topo.service(b).and_then(|x| x.capacity_tps) {
                Some(bcap) => out.push(judge(
                    format!("{b} taking {}'s traffic", svc.name),
                    bcap,
                    (own + n) * peak,
                    format!("its own {own:.0}/s and {}'s {n:.0}/s, × {peak}", svc.name),
                    format!(
                        "{b} cannot carry {}'s peak: raise its limit, or name a larger backup",
                        svc.name
                    ),
                )),
                None => out.push((
                    check(
                    "capacity",
                    format!("{b} taking {}'s traffic at ×{peak}", svc.name),
                    Verdict::Warn,
                    format!(
                        "{b} backs {} up but declares no capacity_tps: whether it can carry {:.0}/s at the peak is unknown",
                        svc.name,
                        (own + n) * peak
                    ),
                    format!("declare capacity_tps for {b} (docs/topology.md)"),
                    ),
                    None,
                )),
            }
        }
    }
    // An IDC: its own peak, and its own plus the largest other's (the
    // other one lost, its traffic failed over).
    for idc in &topo.idcs {
        let Some(n) = idc_normal(&idc.name) else {
            continue;
        };
        let Some(cap) = idc.capacity_tps else {
            undeclared.push(format!("IDC {}", idc.name));
            continue;
        };
        out.push(judge(
            format!("IDC {}", idc.name),
            cap,
            n * peak,
            format!("{n:.0}/s normal, from {source}, × {peak}"),
            format!("add capacity to IDC {} before the event", idc.name),
        ));
        let other = topo
            .idcs
            .iter()
            .filter(|o| o.name != idc.name)
            .filter_map(|o| idc_normal(&o.name).map(|v| (o.name.clone(), v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((o, v)) = other {
            out.push(judge(
                format!("IDC {} taking {o}'s traffic", idc.name),
                cap,
                (n + v) * peak,
                format!("its own {n:.0}/s and {o}'s {v:.0}/s, × {peak}"),
                format!(
                    "IDC {} cannot take {o}'s peak: add capacity, or plan to degrade non-critical scenes during an IDC failover",
                    idc.name
                ),
            ));
        }
    }
    let judged = out.iter().filter(|(_, h)| h.is_some()).count();
    let last = if undeclared.is_empty() {
        check(
            "capacity",
            "capacities declared",
            Verdict::Pass,
            format!(
                "every service, channel and IDC carrying traffic declares capacity_tps ({judged} checked)"
            ),
            "",
        )
    } else {
        check(
            "capacity",
            "capacities declared",
            Verdict::Warn,
            format!(
                "no capacity_tps for {}: their headroom at the peak is {}",
                undeclared.join(", "),
                if plan.simulate {
                    "known only from the simulator's ramp"
                } else {
                    "not checked"
                }
            ),
            "declare capacity_tps for each service, channel and IDC in the topology (docs/topology.md)",
        )
    };
    let (mut checks, rows): (Vec<Check>, Vec<Option<Headroom>>) = out.into_iter().unzip();
    checks.push(last);
    (checks, rows.into_iter().flatten().collect())
}

fn store_checks(cfg: &BrainConfig) -> Vec<Check> {
    let path = &cfg.store;
    if !path.exists() {
        return vec![check(
            "store",
            "store",
            Verdict::Warn,
            format!("no store at {} yet", path.display()),
            "start the brain once before the event: its first start creates the store",
        )];
    }
    let store = match Store::open_with(path, &cfg.audit_files()) {
        Ok(s) => s,
        Err(e) => {
            return vec![check(
                "store",
                "store opens",
                Verdict::Fail,
                format!("{}: {e}", path.display()),
                "restore it from the last backup (`selfheal backup`)",
            )];
        }
    };
    let mut out = vec![match store.check_writable() {
        Ok(()) => check(
            "store",
            "store writable",
            Verdict::Pass,
            format!("{} takes a write lock", path.display()),
            "",
        ),
        Err(e) => check(
            "store",
            "store writable",
            Verdict::Fail,
            format!("{}: {e}", path.display()),
            "free the disk, fix the file's permissions, or stop the process that holds it",
        ),
    }];
    out.push(match store.audit_verify() {
        Ok(r) if r.ok() => check(
            "store",
            "audit chain verifies",
            Verdict::Pass,
            format!("{} entries chained, {} anchors match", r.rows, r.anchors),
            "",
        ),
        Ok(r) => check(
            "store",
            "audit chain verifies",
            Verdict::Fail,
            r.problems.join("; "),
            "find who changed the log (`selfheal audit verify`), before the event",
        ),
        Err(e) => check(
            "store",
            "audit chain verifies",
            Verdict::Fail,
            e.to_string(),
            "check the audit key and anchors",
        ),
    });
    out
}

fn guard_checks(plan: &Plan) -> Vec<Check> {
    let g = &plan.brain.guard;
    let mut out = Vec::new();
    // The kill switch, through the guard itself: engaged, an action is
    // refused; released, it is not refused for that reason.
    out.push(match &g.kill_switch_file {
        None => check(
            "guards",
            "kill switch works",
            Verdict::Fail,
            "no guard.kill_switch_file: nothing stops the automation at once",
            "set guard.kill_switch_file",
        ),
        Some(f) if f.exists() => check(
            "guards",
            "kill switch works",
            Verdict::Warn,
            format!("engaged now ({}): no action will be sent", f.display()),
            "release it (`selfheal kill-switch off`) when the automation may act",
        ),
        Some(f) => kill_switch_round_trip(g, f),
    });
    // The change freeze over the event.
    if let Some((from, to)) = plan.event {
        let mut windows: Vec<(i64, i64)> = g
            .freeze
            .iter()
            .filter_map(|w| Some((parse_timestamp_ms(&w.from)?, parse_timestamp_ms(&w.to)?)))
            .collect();
        windows.sort_unstable();
        let mut covered_to = from;
        for (a, b) in windows {
            if a <= covered_to {
                covered_to = covered_to.max(b);
            }
        }
        out.push(if covered_to >= to {
            check(
                "guards",
                "change freeze covers the event",
                Verdict::Pass,
                "the freeze calendar covers the whole event: automatic actions there need a person",
                "",
            )
        } else {
            check(
                "guards",
                "change freeze covers the event",
                Verdict::Warn,
                if covered_to == from {
                    format!(
                        "no freeze window covers the event ({} to {})",
                        fmt_ms(from),
                        fmt_ms(to)
                    )
                } else {
                    format!(
                        "the event is frozen only until {} of {}",
                        fmt_ms(covered_to),
                        fmt_ms(to)
                    )
                },
                "add a guard.freeze window from the event's start to its end",
            )
        });
    }
    out.push(
        if g.max_targets_per_window > 0 && g.blast_window_s > 0 && g.max_shifted_per_window > 0.0 {
            check(
                "guards",
                "blast-radius budget set",
                Verdict::Pass,
                format!(
                    "at most {} target(s) and {} link(s) of traffic moved per {} s",
                    g.max_targets_per_window, g.max_shifted_per_window, g.blast_window_s
                ),
                "",
            )
        } else {
            check(
                "guards",
                "blast-radius budget set",
                Verdict::Fail,
                "the blast-radius budget is zero: every action would be refused",
                "set guard.max_targets_per_window, max_shifted_per_window and blast_window_s",
            )
        },
    );
    out
}

fn kill_switch_round_trip(g: &selfheal_brain::act::GuardConfig, f: &Path) -> Check {
    use selfheal_brain::act::guard::{Guards, Verdict as G};
    let action = selfheal_brain::playbook::PlannedAction {
        kind: selfheal_bus::ActionKind::Throttle,
        service: "patrol".into(),
        target: "patrol".into(),
        params: Default::default(),
    };
    let guards = Guards::new(g.clone());
    let now = selfheal_bus::wall_ms();
    let refused = |v: &G| matches!(v, G::Refuse(why) if why.contains("kill switch"));
    if let Err(e) = std::fs::write(f, "engaged by selfheal patrol (round trip)") {
        return check(
            "guards",
            "kill switch works",
            Verdict::Fail,
            format!("cannot engage {}: {e}", f.display()),
            "make the kill switch's directory writable by the people who must engage it",
        );
    }
    let on = guards.check_with("patrol", &action, now, true);
    let removed = std::fs::remove_file(f);
    let off = guards.check_with("patrol", &action, now, true);
    match (refused(&on), removed, refused(&off)) {
        (true, Ok(()), false) => check(
            "guards",
            "kill switch works",
            Verdict::Pass,
            format!(
                "engaged, an action was refused ({}); released, it was not",
                f.display()
            ),
            "",
        ),
        (_, Err(e), _) => check(
            "guards",
            "kill switch works",
            Verdict::Fail,
            format!("engaged but could not be released: {e}"),
            format!("remove {} by hand; fix its permissions", f.display()),
        ),
        (on, _, off) => check(
            "guards",
            "kill switch works",
            Verdict::Fail,
            format!("engaged: refused {on}; released: refused {off}"),
            "the guard does not read the file it is configured with: check guard.kill_switch_file",
        ),
    }
}

async fn oncall_checks(plan: &Plan, rt: Option<&Runtime>) -> Vec<Check> {
    use selfheal_brain::act::approval::Role;
    let Some(oc) = &plan.brain.oncall else {
        return vec![check(
            "oncall",
            "someone can approve",
            Verdict::Fail,
            "no [oncall]: a plan that needs a person waits for nobody",
            "configure [oncall] with a rota of approvers",
        )];
    };
    let mut out = Vec::new();
    let two_needed: Vec<String> = rt
        .map(|rt| {
            rt.playbooks()
                .iter()
                .filter(|p| p.meta.risk >= oc.two_approvers_from)
                .map(|p| p.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let need = if two_needed.is_empty() { 1 } else { 2 };
    let two = if two_needed.is_empty() {
        String::new()
    } else {
        format!("; two needed by {}", two_needed.join(", "))
    };
    let approvers_at = |ts: i64| -> Vec<String> {
        oc.on_call_at(ts)
            .into_iter()
            .filter(|n| oc.user(n).is_some_and(|u| u.role >= Role::Approver))
            .collect()
    };
    let (from, to) = plan.event.unwrap_or_else(|| {
        let now = selfheal_bus::wall_ms();
        (now, now + 1)
    });
    let gaps = rota_gaps(from, to, need, &approvers_at);
    out.push(if gaps.is_empty() {
        let fewest = approvers_at(from);
        check(
            "oncall",
            "approvers on call",
            Verdict::Pass,
            match plan.event {
                Some((a, b)) => format!(
                    "every minute from {} to {} UTC has {need} approver(s) or more on call (at the start: {}){two}",
                    fmt_ms(a),
                    fmt_ms(b),
                    fewest.join(", ")
                ),
                None => format!(
                    "{} approver(s) on call now ({}){two}; name --event to check its every hour",
                    fewest.len(),
                    fewest.join(", ")
                ),
            },
            "",
        )
    } else {
        let shown: Vec<String> = gaps
            .iter()
            .take(5)
            .map(|(a, b, n)| format!("{} to {} UTC: {n} of {need}", fmt_ms(*a), fmt_ms(*b)))
            .collect();
        check(
            "oncall",
            "approvers on call",
            Verdict::Fail,
            format!(
                "{} stretch(es) with too few approvers on call: {}{}{two}",
                gaps.len(),
                shown.join("; "),
                if gaps.len() > 5 { "; ..." } else { "" }
            ),
            "add an [[oncall.shift]] (or approvers to oncall.rota) for those hours",
        )
    });
    if oc.notify.is_empty() {
        out.push(check(
            "oncall",
            "notification channels",
            Verdict::Fail,
            "no [[oncall.notify]]: nobody hears of a plan waiting",
            "add the on-call chat or pager webhook",
        ));
    }
    let answers = post(
        oc,
        "selfheal patrol: a test message before the event; nothing to do",
    )
    .await;
    for (url, r) in answers {
        let host = url.split('?').next().unwrap_or_default().to_string();
        let name = format!("notification channel {host}");
        out.push(match r {
            Ok(status) => check(
                "oncall",
                name,
                Verdict::Pass,
                format!("answered a test message: {status}"),
                "",
            ),
            Err(why) => check(
                "oncall",
                name,
                Verdict::Fail,
                format!("did not take a test message: {why}"),
                "fix the webhook (its URL, its token, the chat's app) or the network path to it",
            ),
        });
    }
    out
}

async fn detection_checks(
    plan: &Plan,
    day: Option<anyhow::Result<crate::replay::Recording>>,
) -> Vec<Check> {
    let mut out = Vec::new();
    // Models: present, and fresh.
    let dir = plan.brain.models.clone();
    let files: Vec<(String, f64)> = dir
        .as_ref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| {
                    let age = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .map_or(f64::INFINITY, |d| d.as_secs_f64() / 86_400.0);
                    (e.file_name().to_string_lossy().into_owned(), age)
                })
                .collect()
        })
        .unwrap_or_default();
    let stale: Vec<String> = files
        .iter()
        .filter(|(_, age)| *age > plan.models_max_age_days)
        .map(|(n, age)| format!("{n} ({age:.0} days)"))
        .collect();
    out.push(if files.is_empty() {
        check(
            "detection",
            "models trained",
            Verdict::Warn,
            "no model: detection runs on the streaming detectors alone",
            "train the per-service models on a normal week (`selfheal train`)",
        )
    } else if stale.is_empty() {
        check(
            "detection",
            "models trained",
            Verdict::Pass,
            format!(
                "{} model(s), each trained within {} days",
                files.len(),
                plan.models_max_age_days
            ),
            "",
        )
    } else {
        check(
            "detection",
            "models trained",
            Verdict::Warn,
            format!(
                "older than {} days: {}",
                plan.models_max_age_days,
                stale.join(", ")
            ),
            "retrain them on recent normal traffic (`selfheal train`)",
        )
    });
    // Quiet on a normal day.
    if let (Some(day), Some(rec)) = (&plan.normal_day, day) {
        out.push(match quiet_day(plan, day, rec).await {
            Ok(c) => c,
            Err(e) => check(
                "detection",
                "quiet on a normal day",
                Verdict::Fail,
                format!("{} could not be replayed: {e:#}", day.display()),
                "fix the recording or the configuration it is replayed with",
            ),
        });
    }
    // A running brain: has it refused series?
    if let Some(url) = &plan.brain_url {
        let metrics = format!("{}/metrics", url.trim_end_matches('/'));
        let got = match selfheal_brain::act::http::client() {
            Ok(c) => match c.get(&metrics).send().await {
                Ok(r) if r.status().is_success() => r.text().await.map_err(|e| e.to_string()),
                Ok(r) => Err(format!("answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        match got {
            Err(why) => out.push(check(
                "detection",
                "the running brain",
                Verdict::Fail,
                format!("{metrics}: {why}"),
                "start the brain, or fix --brain",
            )),
            Ok(text) => {
                let value = |name: &str| -> f64 {
                    text.lines()
                        .filter(|l| l.split([' ', '{']).next() == Some(name))
                        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                        .sum()
                };
                out.extend(backups_now(plan, &metrics, &text));
                let learning = value("selfheal_brain_detectors_learning");
                out.push(if learning == 0.0 {
                    check(
                        "detection",
                        "detectors warmed up",
                        Verdict::Pass,
                        format!("{metrics}: no detector still in its cold start"),
                        "",
                    )
                } else {
                    check(
                        "detection",
                        "detectors warmed up",
                        Verdict::Warn,
                        format!("{metrics}: {learning:.0} series still learning (quiet until they have seen enough samples)"),
                        "let the brain see a normal day of every series before the event",
                    )
                });
                let refused = value("selfheal_brain_series_refused_total");
                out.push(if refused == 0.0 {
                    check(
                        "detection",
                        "no series refused",
                        Verdict::Pass,
                        format!("{metrics}: every series admitted"),
                        "",
                    )
                } else {
                    check(
                        "detection",
                        "no series refused",
                        Verdict::Warn,
                        format!("{metrics}: {refused:.0} series refused (over a [series] limit)"),
                        "raise the [series] limits, or find the source that floods new series (selfheal_brain_series_refused_by_source)",
                    )
                });
            }
        }
    }
    out
}

/// Each declared backup healthy now, as the running brain sees it: none
/// of its series anomalous (`selfheal_brain_service_anomalous_series` of
/// its `/metrics`, read from `text`).
fn backups_now(plan: &Plan, metrics: &str, text: &str) -> Vec<Check> {
    let anomalous = |service: &str| -> f64 {
        let label = format!("selfheal_brain_service_anomalous_series{{service=\"{service}\"}}");
        text.lines()
            .filter(|l| l.starts_with(&label))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let mut backups: Vec<(&str, &str)> = plan
        .topology
        .services
        .iter()
        .filter_map(|s| Some((s.backup.as_deref()?, s.name.as_str())))
        .collect();
    backups.sort_unstable();
    backups
        .into_iter()
        .map(|(b, primary)| {
            let n = anomalous(b);
            let name = format!("backup {b} (of {primary}) healthy now");
            if n == 0.0 {
                check(
                    "backups",
                    name,
                    Verdict::Pass,
                    format!("no series of {b} anomalous at {metrics}"),
                    "",
                )
            } else {
                check(
                    "backups",
                    name,
                    Verdict::Fail,
                    format!("{n:.0} series of {b} anomalous now at {metrics}"),
                    format!(
                        "a failover of {primary} would land on a sick {b}: find out why (the brain's incidents) and fix it, or name another backup, before the event"
                    ),
                )
            }
        })
        .collect()
}

/// The brain of `plan` replayed over `day`, a normal day: quiet or not.
async fn quiet_day(
    plan: &Plan,
    day: &Path,
    rec: anyhow::Result<crate::replay::Recording>,
) -> anyhow::Result<Check> {
    let rec = rec?;
    let rows = rec.rows;
    let hours = rec
        .span()
        .map_or(0.0, |(a, b)| (b - a) as f64 / 3_600_000.0);
    let mut cfg = plan.brain.clone();
    let scratch = crate::replay::scratch()?;
    cfg.store = scratch.path().join("replay.db");
    cfg.oncall = None;
    cfg.listen = None;
    cfg.ha = None;
    cfg.jetstream = None;
    cfg.detection = None;
    let incidents = crate::replay::run_alone(rec, cfg).await?;
    Ok(if incidents.is_empty() {
        check(
            "detection",
            "quiet on a normal day",
            Verdict::Pass,
            format!(
                "{rows} samples over {hours:.1} h of {}: no incident",
                day.display()
            ),
            "",
        )
    } else {
        let first: Vec<String> = incidents
            .iter()
            .take(3)
            .map(|i| format!("{} at {}", i.incident.service, fmt_ms(i.incident.opened_ts)))
            .collect();
        check(
            "detection",
            "quiet on a normal day",
            Verdict::Fail,
            format!(
                "{} incident(s) over {hours:.1} h of a normal day ({}): {}",
                incidents.len(),
                day.display(),
                first.join("; ")
            ),
            "declare the day's planned peaks and batches ([[planned]]), or retrain the models, before the event",
        )
    })
}

/// Posts `text` to every notification channel of `oc`: each channel's
/// URL and its answer (the status, or why it failed).
async fn post(
    oc: &selfheal_brain::act::approval::OnCallConfig,
    text: &str,
) -> Vec<(String, Result<String, String>)> {
    let client = match selfheal_brain::act::http::client() {
        Ok(c) => c,
        Err(e) => {
            return oc
                .notify
                .iter()
                .map(|t| (t.url.clone(), Err(e.clone())))
                .collect();
        }
    };
    let body = serde_json::json!({ "text": text, "patrol": true });
    let mut out = Vec::new();
    for t in &oc.notify {
        let r = client
            .post(&t.url)
            .timeout(std::time::Duration::from_millis(t.timeout_ms.max(1)))
            .json(&body)
            .send()
            .await;
        out.push((
            t.url.clone(),
            match r {
                Ok(res) if res.status().is_success() => Ok(res.status().to_string()),
                Ok(res) => Err(format!("answered {}", res.status())),
                Err(e) => Err(format!("no answer: {e}")),
            },
        ));
    }
    out
}

/// The inspections whose verdict changed from `before` to `now` (new
/// ones count as changed from nothing, vanished ones are named): one line
/// each.
pub fn changes(before: &Report, now: &Report) -> Vec<String> {
    let name = |v: Option<Verdict>| match v {
        None => "(none)",
        Some(Verdict::Pass) => "pass",
        Some(Verdict::Warn) => "warn",
        Some(Verdict::Fail) => "fail",
    };
    let mut out = Vec::new();
    for c in &now.checks {
        let was = before
            .checks
            .iter()
            .find(|b| b.area == c.area && b.name == c.name)
            .map(|b| b.verdict);
        if was != Some(c.verdict) {
            out.push(format!(
                "{} · {}: {} → {} ({})",
                c.area,
                c.name,
                name(was),
                name(Some(c.verdict)),
                c.evidence
            ));
        }
    }
    for b in &before.checks {
        if !now
            .checks
            .iter()
            .any(|c| c.area == b.area && c.name == b.name)
        {
            out.push(format!(
                "{} · {}: {} → (gone)",
                b.area,
                b.name,
                name(Some(b.verdict))
            ));
        }
    }
    out
}

/// Tells the on-call channels of `plan` what changed since the last
/// patrol; returns the channels that did not take it, with why.
pub async fn announce(plan: &Plan, lines: &[String]) -> Vec<String> {
    let Some(oc) = &plan.brain.oncall else {
        return Vec::new();
    };
    let text = format!(
        "selfheal patrol: {} inspection(s) changed verdict\n{}",
        lines.len(),
        lines.join("\n")
    );
    post(oc, &text)
        .await
        .into_iter()
        .filter_map(|(url, r)| r.err().map(|why| format!("{url}: {why}")))
        .collect()
}

/// The platform at the peak on a healthy day: the control scenario with
/// its demand × the peak, through the whole loop.
async fn capacity(plan: &Plan) -> anyhow::Result<(Vec<Check>, Vec<SceneAtPeak>)> {
    let path = crate::paths::scenarios().join("control.toml");
    let mut s = selfheal_sim::Scenario::parse(&std::fs::read_to_string(&path)?, &plan.topology)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    s.traffic.multiplier *= plan.peak;
    let dir = tempfile::tempdir()?;
    let mut opts = crate::drill_options(s, dir.path());
    opts.topology = plan.topology.clone();
    opts.brain.playbooks = plan.brain.playbooks.clone();
    opts.brain.planned = plan.brain.planned.clone();
    opts.brain.symptoms = plan.brain.symptoms.clone();
    let out = crate::run_loop(Arc::new(LocalTransport::default()), opts, |_| {}).await?;
    let mut checks = Vec::new();
    let mut scenes = Vec::new();
    for sc in &plan.topology.scenes {
        let success = out
            .truth
            .scene_success
            .get(&sc.name)
            .copied()
            .unwrap_or(0.0);
        let verdict = if success >= sc.slo_success {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        checks.push(check(
            "capacity",
            format!("scene {} at ×{}", sc.name, plan.peak),
            verdict,
            format!(
                "success {:.2} % at ×{} ({:.0} payments/s) against its objective {:.2} %",
                100.0 * success,
                plan.peak,
                sc.base_tps * plan.peak,
                100.0 * sc.slo_success
            ),
            if verdict == Verdict::Pass {
                String::new()
            } else {
                format!(
                    "add capacity along link {} (or plan to degrade non-critical scenes) before the event",
                    sc.link
                )
            },
        ));
        scenes.push(SceneAtPeak {
            scene: sc.name.clone(),
            success,
            slo: sc.slo_success,
            verdict,
        });
    }
    let quiet = out.incidents.is_empty() && out.truth.actions.is_empty();
    checks.push(check(
        "capacity",
        format!("the brain at ×{} on a healthy day", plan.peak),
        if quiet { Verdict::Pass } else { Verdict::Warn },
        format!(
            "{} incident(s) opened, {} action(s) applied",
            out.incidents.len(),
            out.truth.actions.len()
        ),
        if quiet {
            ""
        } else {
            "declare the event as a [[planned]] window, so that its load pages nobody"
        },
    ));
    Ok((checks, scenes))
}

fn rehearsal_checks(plan: &Plan, done: &[Rehearsal]) -> (Vec<Check>, Vec<RehearsalAtPeak>) {
    let mut checks = Vec::new();
    let mut figures = Vec::new();
    for r in done {
        let (verdict, evidence, fix, mttr) = match (&r.result, &r.skipped) {
            (Some(d), _) => {
                let mttr = d.ttr_s;
                if !d.passed() {
                    (
                        Verdict::Fail,
                        format!("at ×{}: {}", plan.peak, d.failures.join("; ")),
                        "the playbook does not heal its fault at the peak: run it by hand on the simulator (`selfheal playbook test`) and look at its steps, its targets' capacity and backups".to_string(),
                        mttr,
                    )
                } else if mttr.is_some_and(|t| t > plan.mttr_target_s) {
                    (
                        Verdict::Warn,
                        format!(
                            "healed at ×{} in {:.1} s, over the {:.0} s target",
                            plan.peak,
                            mttr.unwrap_or_default(),
                            plan.mttr_target_s
                        ),
                        "shorten its verification windows or steps".to_string(),
                        mttr,
                    )
                } else {
                    (
                        Verdict::Pass,
                        format!(
                            "healed at ×{} in {:.1} s, {} action(s), nothing harmful",
                            plan.peak,
                            mttr.unwrap_or_default(),
                            d.actions
                        ),
                        String::new(),
                        mttr,
                    )
                }
            }
            (None, why) => (
                Verdict::Warn,
                format!("not rehearsed: {}", why.as_deref().unwrap_or("skipped")),
                "rehearse it with the on-call approver before the event".to_string(),
                None,
            ),
        };
        checks.push(check(
            "rehearsals",
            format!("{} on {}", r.playbook, r.scenario),
            verdict,
            evidence,
            fix,
        ));
        figures.push(RehearsalAtPeak {
            playbook: r.playbook.clone(),
            scenario: r.scenario.clone(),
            mttr_s: mttr,
            target_s: plan.mttr_target_s,
            verdict,
        });
    }
    (checks, figures)
}

/// The stretches of `[from, to)` (ms) with fewer than `need` approvers
/// on call, minute by minute: (start, end, how many there were). A window
/// longer than 92 days is checked over its first 92.
fn rota_gaps(
    from: i64,
    to: i64,
    need: usize,
    approvers_at: &dyn Fn(i64) -> Vec<String>,
) -> Vec<(i64, i64, usize)> {
    const MINUTE: i64 = 60_000;
    let to = to.min(from + 92 * 24 * 60 * MINUTE);
    let mut gaps: Vec<(i64, i64, usize)> = Vec::new();
    let mut t = from;
    while t < to {
        let n = approvers_at(t).len();
        let next = (t + MINUTE).min(to);
        if n < need {
            match gaps.last_mut() {
                Some((_, end, m)) if *end == t && *m == n => *end = next,
                _ => gaps.push((t, next, n)),
            }
        }
        t = next;
    }
    gaps
}

fn fmt_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_else(|_| ms.to_string())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar: its label, value, the value as written beside it, the
/// reference (drawn as a tick) and the verdict (its colour).
type Bar = (String, f64, String, f64, Verdict);

/// Horizontal bars, one row each.
fn bars(rows: &[Bar], lo: f64) -> String {
    let hi = rows
        .iter()
        .flat_map(|r| [r.1, r.3])
        .fold(lo + 1e-9, f64::max);
    // Each row: its label above, its bar below (readable at phone width);
    // a desk shows the chart at most 640 px wide.
    let h = 34 * rows.len().max(1) + 4;
    let mut svg = format!(
        "<svg viewBox=\"0 0 400 {h}\" style=\"max-width:640px\" width=\"100%\" role=\"img\">"
    );
    let x = |v: f64| 320.0 * ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    for (i, (label, v, text, reference, verdict)) in rows.iter().enumerate() {
        let y = 4 + 34 * i;
        let colour = match verdict {
            Verdict::Pass => "#1a7f37",
            Verdict::Warn => "#b58100",
            Verdict::Fail => "#c62828",
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"0\" y=\"{}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#1c1e21\" stroke-width=\"2\"/><text x=\"326\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 11,
            esc(label),
            y + 15,
            x(*v).max(1.0),
            x(*reference),
            x(*reference),
            y + 13,
            y + 31,
            y + 27,
            esc(text)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The report as one self-contained HTML page (inline CSS, SVG charts, no
/// script), readable on a phone and a desk.
pub fn html(r: &Report) -> String {
    let verdict = |v: Verdict| match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
    };
    let mut rows = String::new();
    for c in &r.checks {
        let _ = write!(
            rows,
            "<tr class=\"{v}\"><td>{}</td><td>{}</td><td><b>{v}</b></td><td>{}</td><td>{}</td></tr>",
            esc(c.area),
            esc(&c.name),
            esc(&c.evidence),
            esc(&c.fix),
            v = verdict(c.verdict)
        );
    }
    let scenes: Vec<Bar> = r
        .scenes
        .iter()
        .map(|s| {
            let v = 100.0 * s.success;
            (
                s.scene.clone(),
                v,
                format!("{v:.2} %"),
                100.0 * s.slo,
                s.verdict,
            )
        })
        .collect();
    let lo = scenes
        .iter()
        .map(|s| s.1.min(s.3))
        .fold(100.0, f64::min)
        .min(99.0)
        - 1.0;
    let rehearsals: Vec<Bar> = r
        .rehearsals
        .iter()
        .map(|x| {
            let text = match (x.mttr_s, x.verdict) {
                (Some(t), _) => format!("{t:.1} s"),
                (None, Verdict::Warn) => "not run".into(),
                (None, _) => "never".into(),
            };
            (
                x.scenario.clone(),
                x.mttr_s.unwrap_or(0.0),
                text,
                x.target_s,
                x.verdict,
            )
        })
        .collect();
    let headroom: Vec<Bar> = r
        .headroom
        .iter()
        .map(|h| {
            (
                h.what.clone(),
                h.expected_tps,
                format!("{:+.0} %", 100.0 * h.headroom),
                h.capacity_tps,
                h.verdict,
            )
        })
        .collect();
    let headroom_section = if headroom.is_empty() {
        String::new()
    } else {
        format!(
            "<section><h2>Traffic expected at the peak (bar) against the declared capacity (tick), per second</h2>{}</section>",
            bars(&headroom, 0.0)
        )
    };
    let event = r
        .event
        .map(|(a, b)| format!("event {} to {} UTC", fmt_ms(a), fmt_ms(b)))
        .unwrap_or_else(|| "no event named".into());
    let count = |v: Verdict| r.checks.iter().filter(|c| c.verdict == v).count();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>selfheal patrol: {v}</title><style>\
*{{box-sizing:border-box}}body{{margin:0;font:15px/1.4 system-ui,sans-serif;background:#f4f5f7;color:#1c1e21;overflow-wrap:anywhere}}\
header{{background:#1c1e21;color:#fff;padding:12px 16px}}main{{padding:12px;max-width:1000px;margin:0 auto}}\
section{{background:#fff;border-radius:12px;padding:12px 14px;margin:0 0 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}}\
h2{{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#65676b;margin:0 0 6px}}\
.big{{font-size:28px;font-weight:700}}.pass b,.big.pass{{color:#1a7f37}}.warn b,.big.warn{{color:#b58100}}.fail b,.big.fail{{color:#c62828}}\
table{{width:100%;border-collapse:collapse;font-size:14px}}td,th{{text-align:left;vertical-align:top;padding:6px;border-bottom:1px solid #e4e6eb}}\
td:nth-child(-n+3),th{{overflow-wrap:normal;white-space:nowrap}}\
@media (max-width:640px){{table,tbody,tr,td{{display:block}}thead{{display:none}}tr{{padding:6px 0;border-bottom:1px solid #e4e6eb}}td,td:nth-child(-n+3){{border:0;padding:2px 0;white-space:normal;overflow-wrap:anywhere}}}}\
</style></head><body><header><b>selfheal patrol</b></header><main>\
<section><div class=\"big {v}\">{v}</div><p>{pass} pass, {warn} warn, {fail} fail · peak ×{peak} · MTTR target {target:.0} s · {event} · run {at} UTC</p></section>\
{headroom_section}<section><h2>Each scene's success at the peak (bar) against its objective (tick), %</h2>{scene_svg}</section>\
<section><h2>Time to recover at the peak per rehearsal, by scenario (bar), against the target (tick), s</h2>{rehearsal_svg}</section>\
<section><h2>Inspections</h2><table><thead><tr><th>area</th><th>inspection</th><th>verdict</th><th>evidence</th><th>fix</th></tr></thead><tbody>{rows}</tbody></table></section>\
</main></body></html>\n",
        v = verdict(r.verdict),
        pass = count(Verdict::Pass),
        warn = count(Verdict::Warn),
        fail = count(Verdict::Fail),
        peak = r.peak,
        target = r.mttr_target_s,
        at = fmt_ms(r.at_ms),
        scene_svg = if scenes.is_empty() {
            "<p>not simulated</p>".into()
        } else {
            bars(&scenes, lo)
        },
        rehearsal_svg = if rehearsals.is_empty() {
            "<p>none rehearsed</p>".into()
        } else {
            bars(&rehearsals, 0.0)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Declares `capacity_tps` for the services named.
    fn declare(topo: &mut Topology, caps: &[(&str, f64)]) {
        for (name, cap) in caps {
            topo.services
                .iter_mut()
                .find(|s| s.name == *name)
                .unwrap()
                .capacity_tps = Some(*cap);
        }
    }

    fn plan(topology: Topology, normal_day: Option<std::path::PathBuf>) -> Plan {
        Plan {
            brain: BrainConfig::default(),
            topology,
            event: None,
            peak: 1.5,
            mttr_target_s: 60.0,
            nats: None,
            simulate: false,
            normal_day,
            brain_url: None,
            models_max_age_days: 7.0,
        }
    }

    #[test]
    fn declared_capacities_against_the_peak_a_backup_and_an_idc_lost() {
        // 1,300 payments/s normally, half in each IDC; 1,100/s through the
        // channel router (transfers do not go to a bank), of which the
        // banks take 50, 30 and 20 %.
        let mut topo = selfheal_sim::default_topology();
        declare(&mut topo, &[("bank-a", 1_200.0), ("bank-b", 1_000.0)]);
        topo.idcs[0].capacity_tps = Some(1_500.0);
        let (checks, rows) = declared_capacity(&plan(topo, None), None);
        let row = |what: &str| {
            rows.iter()
                .find(|h| h.what == what)
                .unwrap_or_else(|| panic!("{what}: {rows:?}"))
        };
        // bank-a: 550/s × 1.5 = 825/s against 1,200: 45 % to spare.
        let a = row("bank-a");
        assert!((a.expected_tps - 825.0).abs() < 1e-6, "{a:?}");
        assert!((a.headroom - (1_200.0 / 825.0 - 1.0)).abs() < 1e-9);
        assert_eq!(a.verdict, Verdict::Pass);
        // bank-b taking bank-a's: (330 + 550) × 1.5 = 1,320/s against 1,000.
        let b = row("bank-b taking bank-a's traffic");
        assert!((b.expected_tps - 1_320.0).abs() < 1e-6, "{b:?}");
        assert_eq!(b.verdict, Verdict::Fail);
        // bank-b's own peak: 495/s against 1,000; bank-c backs bank-b up
        // with no declared capacity: a warning.
        assert_eq!(row("bank-b").verdict, Verdict::Pass);
        let c = checks
            .iter()
            .find(|c| c.name.starts_with("bank-c taking bank-b's"))
            .unwrap();
        assert_eq!(c.verdict, Verdict::Warn);
        // IDC idc1: 975/s alone (pass), 1,950/s with idc2's (fail).
        assert_eq!(row("IDC idc1").verdict, Verdict::Pass);
        let lost = row("IDC idc1 taking idc2's traffic");
        assert!((lost.expected_tps - 1_950.0).abs() < 1e-6);
        assert_eq!(lost.verdict, Verdict::Fail);
        // Each failing one says what to do; the rest are named undeclared.
        assert!(
            checks
                .iter()
                .all(|c| c.verdict == Verdict::Pass || !c.fix.is_empty())
        );
        let undeclared = checks
            .iter()
            .find(|c| c.name == "capacities declared")
            .unwrap();
        assert_eq!(undeclared.verdict, Verdict::Warn);
        assert!(
            undeclared.evidence.contains("cashier") && undeclared.evidence.contains("IDC idc2")
        );
        assert!(!undeclared.evidence.contains("bank-a"));
        // Warn between 0 and 20 % to spare.
        let mut topo = selfheal_sim::default_topology();
        declare(&mut topo, &[("bank-a", 900.0)]);
        let (_, rows) = declared_capacity(&plan(topo, None), None);
        assert_eq!(rows[0].verdict, Verdict::Warn, "{rows:?}");
    }

    #[test]
    fn a_sick_backup_fails_the_patrol() {
        // What a running brain exports while bank-b has two anomalous
        // series and bank-c had one that cleared.
        let stats = selfheal_brain::stats::BrainStats::default();
        stats.set_anomalous("bank-b", 2);
        stats.set_anomalous("bank-c", 1);
        stats.set_anomalous("bank-c", 0);
        stats.set_anomalous("cashier", 0);
        let text = stats.render_prometheus();
        assert!(
            text.contains("selfheal_brain_service_anomalous_series{service=\"bank-b\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("service=\"cashier\""),
            "never anomalous: not listed"
        );
        let checks = backups_now(
            &plan(selfheal_sim::default_topology(), None),
            "http://brain/metrics",
            &text,
        );
        let verdict = |b: &str| {
            checks
                .iter()
                .find(|c| c.name.starts_with(&format!("backup {b} ")))
                .unwrap()
                .verdict
        };
        assert_eq!(checks.len(), 3);
        assert_eq!(verdict("bank-b"), Verdict::Fail);
        assert_eq!(verdict("bank-c"), Verdict::Pass);
        assert_eq!(verdict("bank-a"), Verdict::Pass);
        assert!(
            checks
                .iter()
                .any(|c| c.evidence.contains("2 series of bank-b anomalous now"))
        );
    }

    #[test]
    fn the_normal_days_busiest_minute_is_the_traffic_to_expect() {
        // Two minutes: checkout at 100/s then 160/s through the cashier,
        // bank-a's own series at 50/s then 90/s.
        let dir = tempfile::tempdir().unwrap();
        let mut csv =
            String::from("timestamp,service,instance,layer,metric,value,idc,scene,link\n");
        for s in 0..120 {
            let ts = 1_700_000_000_000i64 + s * 1_000;
            let (tps, bank) = if s < 60 { (100.0, 50.0) } else { (160.0, 90.0) };
            csv.push_str(&format!(
                "{ts},cashier,,business,tps,{},idc1,checkout,card\n",
                tps / 2.0
            ));
            csv.push_str(&format!(
                "{ts},cashier,,business,tps,{},idc2,checkout,card\n",
                tps / 2.0
            ));
            csv.push_str(&format!("{ts},bank-a,,business,tps,{bank},idc1,,\n"));
            csv.push_str(&format!(
                "{ts},cashier,,business,success_rate,0.99,idc1,checkout,card\n"
            ));
        }
        std::fs::write(dir.path().join("metrics.csv"), csv).unwrap();
        let mut topo = selfheal_sim::default_topology();
        declare(&mut topo, &[("cashier", 300.0), ("bank-a", 100.0)]);
        let busiest = crate::replay::read(dir.path())
            .unwrap()
            .busiest_minute(|m| m == "tps");
        let (checks, rows) =
            declared_capacity(&plan(topo, Some(dir.path().to_path_buf())), Some(&busiest));
        let row = |what: &str| rows.iter().find(|h| h.what == what).unwrap();
        // The cashier: checkout's busiest minute, 160/s (its other scenes
        // absent from the day) × 1.5 = 240/s.
        assert!(
            (row("cashier").expected_tps - 240.0).abs() < 1e-6,
            "{rows:?}"
        );
        // bank-a: its own series, 90/s × 1.5 = 135/s against 100: fail.
        assert!((row("bank-a").expected_tps - 135.0).abs() < 1e-6);
        assert_eq!(row("bank-a").verdict, Verdict::Fail);
        assert!(
            checks[0].evidence.contains("the busiest minute of"),
            "{:?}",
            checks[0]
        );
    }
}
