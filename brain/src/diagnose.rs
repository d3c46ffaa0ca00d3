//! Diagnose: turn an incident's evidence into ranked hypotheses, each with
//! a confidence and the evidence behind it.
//!
//! The walking skeleton knows one cause: a degraded channel, blamed when a
//! channel's own success rate or latency went bad, more so when it went
//! bad first. Rules in Rhai (`playbooks/diagnose/`) replace this later.

use selfheal_bus::{Topology, topology::ServiceKind};
use serde::Serialize;

use selfheal_bus::{ChangeKind, Layer};

use crate::{context::Context, correlate::Incident};

/// A candidate cause.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hypothesis {
    /// Cause kind (`channel_degraded`, `unknown`...).
    pub cause: String,
    /// What is blamed: a service, a key, an IDC.
    pub target: String,
    /// The service where the cause lives (for a key: the service it hits).
    pub at: String,
    /// Confidence in [0,1].
    pub confidence: f64,
    /// Why, for people.
    pub evidence: Vec<String>,
}

/// Ranks the causes of `inc`, best first; never empty.
pub fn diagnose(inc: &Incident, topo: &Topology, ctx: &Context) -> Vec<Hypothesis> {
    // The incident's onset is the earliest of its anomalies'.
    let first_onset = inc.onset;
    let mut out = Vec::new();
    for ch in topo
        .services
        .iter()
        .filter(|s| s.kind == ServiceKind::Channel)
    {
        let mine: Vec<_> = inc
            .evidence
            .iter()
            .filter(|(k, _)| k.service == ch.name)
            .collect();
        let mut score: f64 = 0.0;
        let mut evidence = Vec::new();
        for (k, e) in &mine {
            let w = match k.metric.as_str() {
                "success_rate" => 0.45,
                m if m.contains("latency") => 0.25,
                m if m.contains("error") => 0.25,
                _ => 0.0,
            };
            if w > 0.0 {
                score += w;
                evidence.push(format!(
                    "{k}: {:.4} against a baseline of {:.4}",
                    e.value, e.baseline
                ));
            }
        }
        if score == 0.0 {
            continue;
        }
        let onset = mine.iter().map(|(_, e)| e.onset).min().unwrap_or(i64::MAX);
        if onset <= first_onset {
            score += 0.3;
            evidence.push(format!("{} went bad first", ch.name));
        }
        out.push(Hypothesis {
            cause: "channel_degraded".into(),
            target: ch.name.clone(),
            at: ch.name.clone(),
            confidence: score.min(0.99),
            evidence,
        });
    }
    out.extend(change_hypotheses(inc, ctx));
    out.extend(hot_key_hypotheses(inc, ctx));
    out.extend(capacity_hypotheses(inc, topo));
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out.push(Hypothesis {
        cause: "unknown".into(),
        target: inc.service.clone(),
        at: inc.service.clone(),
        confidence: 0.1,
        evidence: vec![format!(
            "{} anomalous series, no rule matched",
            inc.evidence.len()
        )],
    });
    out
}

/// How far before the first anomaly a change is still a suspect, ms.
const CHANGE_LOOKBACK_MS: i64 = 10 * 60 * 1000;

/// A change shortly before the first anomaly, on a service whose own
/// indicators went bad, is a suspect: the closer in time, the stronger. A
/// change to a service that stayed healthy is not blamed.
fn change_hypotheses(inc: &Incident, ctx: &Context) -> Vec<Hypothesis> {
    // The incident's onset is the earliest of its anomalies'.
    let onset = inc.onset;
    let mut sick: Vec<&str> = inc
        .evidence
        .keys()
        .filter(|k| k.layer == Layer::System && k.scene.is_none())
        .map(|k| k.service.as_str())
        .collect();
    sick.sort_unstable();
    sick.dedup();
    let mut out = Vec::new();
    for service in sick {
        // The most recent change of the service is the suspect.
        if let Some(c) = ctx
            .changes(service, onset - CHANGE_LOOKBACK_MS, onset + 5_000)
            .first()
        {
            let before = (onset - c.ts).max(0);
            let recency = 1.0 - before as f64 / CHANGE_LOOKBACK_MS as f64;
            let cause = match c.kind {
                ChangeKind::Deploy => "bad_deploy",
                ChangeKind::Config => "config_mistake",
                ChangeKind::FeatureFlag | ChangeKind::Scaling => "bad_change",
            };
            out.push(Hypothesis {
                cause: cause.into(),
                target: service.to_string(),
                at: service.to_string(),
                confidence: 0.55 + 0.4 * recency,
                evidence: vec![format!(
                    "{:?} {} of {service} by {} ({}) {:.1}s before the first anomaly; {service}'s own indicators went bad",
                    c.kind,
                    c.id,
                    c.author,
                    c.description,
                    before as f64 / 1000.0
                )],
            });
        }
    }
    out
}

/// A key whose share of a service's requests jumped around the incident's
/// start: what kind of key says what kind of cause.
fn hot_key_hypotheses(inc: &Incident, ctx: &Context) -> Vec<Hypothesis> {
    // The incident's onset is the earliest of its anomalies'.
    let onset = inc.onset;
    let mut out: Vec<Hypothesis> = Vec::new();
    for j in ctx.hot_jumps() {
        if j.since > onset + 60_000 || out.iter().any(|h| h.target == j.key) {
            continue;
        }
        let cause = match j.dimension.as_str() {
            "item" => "hot_item",
            "client_ip" => "abusive_client",
            "order" => "request_storm",
            "account" => "hot_account",
            _ => continue,
        };
        out.push(Hypothesis {
            cause: cause.into(),
            target: j.key.clone(),
            at: j.service.clone(),
            confidence: (0.5 + 0.45 * j.share).min(0.95),
            evidence: vec![format!(
                "{} {} took {:.0}% of {}'s requests in {} (its heaviest key normally takes {:.1}%)",
                j.dimension,
                j.key,
                j.share * 100.0,
                j.service,
                j.idc,
                j.normal * 100.0
            )],
        });
    }
    out
}

/// Infrastructure causes read from the shape of the evidence:
/// - one instance pinned at full CPU while its siblings are not: a saturated
///   host;
/// - the database slower and the accounting core's connection pool nearly
///   full: a slow database;
/// - errors rising in several services of one IDC and in none of the other:
///   that IDC's network.
fn capacity_hypotheses(inc: &Incident, topo: &Topology) -> Vec<Hypothesis> {
    let mut out = Vec::new();
    let active = || inc.evidence.iter().filter(|(_, e)| e.active);
    let pinned: Vec<_> = active()
        .filter(|(k, e)| {
            k.layer == Layer::System && k.metric == "cpu" && e.value >= 0.95 && k.instance.is_some()
        })
        .collect();
    for (k, e) in &pinned {
        // Alone among its siblings: a host problem, not load.
        let siblings = pinned
            .iter()
            .filter(|(o, _)| o.service == k.service && o.idc == k.idc)
            .count();
        let instances = topo.service(&k.service).map_or(1, |s| s.instances);
        if siblings == 1
            && instances > 1
            && let Some(instance) = &k.instance
        {
            out.push(Hypothesis {
                cause: "host_saturated".into(),
                target: instance.clone(),
                at: k.service.clone(),
                confidence: 0.85,
                evidence: vec![format!(
                    "{k}: CPU at {:.0}% (normally {:.0}%)",
                    e.value * 100.0,
                    e.baseline * 100.0
                )],
            });
        }
    }
    let db_slow = active().find(|(k, _)| {
        topo.service(&k.service)
            .is_some_and(|s| s.kind == selfheal_bus::topology::ServiceKind::Database)
            && k.metric.contains("latency")
    });
    let pool_full = active().find(|(k, e)| k.metric == "conn_pool_use" && e.value >= 0.9);
    if let (Some((dk, de)), Some((pk, pe))) = (db_slow, pool_full) {
        out.push(Hypothesis {
            cause: "slow_database".into(),
            target: dk.service.clone(),
            at: dk.service.clone(),
            // Any overload fills the pool too: a more specific cause (a hot key)
            // outranks this one.
            confidence: 0.75,
            evidence: vec![
                format!(
                    "{dk}: {:.1} ms against a baseline of {:.1} ms",
                    de.value, de.baseline
                ),
                format!("{pk}: {:.0}% of the pool in use", pe.value * 100.0),
            ],
        });
    }
    for idc in &topo.idcs {
        let failing = |name: &str| -> Vec<&str> {
            let mut v: Vec<&str> = active()
                .filter(|(k, _)| {
                    k.idc == name
                        && k.layer == Layer::System
                        && k.metric == "error_rate"
                        && k.instance.is_none()
                })
                .map(|(k, _)| k.service.as_str())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let here = failing(&idc.name);
        let elsewhere = topo
            .idcs
            .iter()
            .filter(|o| o.name != idc.name)
            .map(|o| failing(&o.name).len())
            .sum::<usize>();
        if here.len() >= 3 && elsewhere == 0 {
            out.push(Hypothesis {
                cause: "idc_network".into(),
                target: idc.name.clone(),
                at: idc.name.clone(),
                confidence: 0.9,
                evidence: vec![format!(
                    "errors rose in {} services of {} ({}) and in none elsewhere",
                    here.len(),
                    idc.name,
                    here.join(", ")
                )],
            });
        }
    }
    out
}
