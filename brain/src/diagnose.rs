//! Diagnose: turn an incident's evidence into ranked hypotheses, each with
//! a confidence and the evidence behind it.
//!
//! The walking skeleton knows one cause: a degraded channel, blamed when a
//! channel's own success rate or latency went bad, more so when it went
//! bad first. Rules in Rhai (`playbooks/diagnose/`) replace this later.

use selfheal_bus::{Topology, topology::ServiceKind};
use serde::Serialize;

use crate::correlate::Incident;

/// A candidate cause.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hypothesis {
    /// Cause kind (`channel_degraded`, `unknown`...).
    pub cause: String,
    /// Blamed service.
    pub target: String,
    /// Confidence in [0,1].
    pub confidence: f64,
    /// Why, for people.
    pub evidence: Vec<String>,
}

/// Ranks the causes of `inc`, best first; never empty.
pub fn diagnose(inc: &Incident, topo: &Topology) -> Vec<Hypothesis> {
    let first_onset = inc
        .evidence
        .values()
        .map(|e| e.onset)
        .min()
        .unwrap_or(inc.onset);
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
            confidence: score.min(0.99),
            evidence,
        });
    }
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out.push(Hypothesis {
        cause: "unknown".into(),
        target: inc.service.clone(),
        confidence: 0.1,
        evidence: vec![format!(
            "{} anomalous series, no rule matched",
            inc.evidence.len()
        )],
    });
    out
}
