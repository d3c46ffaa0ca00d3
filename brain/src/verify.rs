//! Verify: after an action, watch the symptoms (or the backup's health)
//! within a window of event time.

pub use crate::incident::Outcome;
use crate::{incident::Incident, playbook::Check};

/// Evaluates `check`, begun at `started`, ending at `deadline`, at `now`.
pub fn check(check: &Check, started: i64, deadline: i64, now: i64, inc: &Incident) -> Outcome {
    match check {
        Check::Healthy(service) => {
            // Only quality going the bad way counts: more traffic on a backup
            // is the intended effect of a shift, not a sickness.
            let sick = inc.evidence.iter().find(|(k, e)| {
                &k.service == service
                    && e.active
                    && e.onset >= started
                    && e.direction != crate::detect::Direction::Both
                    && !e.harmless
            });
            if let Some((k, e)) = sick {
                Outcome::Failed(format!("{service} turned anomalous: {k} at {:.4}", e.value))
            } else if now >= deadline {
                Outcome::Passed
            } else {
                Outcome::Pending
            }
        }
        Check::Cleared => {
            if inc.cleared() {
                Outcome::Passed
            } else if now >= deadline {
                let left = inc
                    .symptoms()
                    .iter()
                    .filter(|k| inc.evidence[**k].active)
                    .count();
                Outcome::Failed(format!(
                    "{left} symptom series still anomalous after {}s",
                    (deadline - started) / 1000
                ))
            } else {
                Outcome::Pending
            }
        }
    }
}
