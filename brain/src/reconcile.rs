//! Reconciliation after repair: an incident closes only when the business
//! flow is consistent again.
//!
//! A check (`[[reconcile]]` in the configuration) names two indicators
//! that must agree over the fault's window — payments the gateway
//! accepted against the ledger's postings, by default. A playbook lists
//! the checks its repair must pass (`reconcile: [..]` in `meta()`). Once
//! the symptoms have cleared after its actions, the brain waits
//! `settle_s` (the postings of the last payments land), then sums each
//! side over the window, from the incident's onset to the end of the
//! wait: every business series of that metric (any scene, service or IDC;
//! a rate per second, multiplied by each sample's interval). The result
//! goes on the incident's timeline with the numbers; a mismatch hands the
//! incident to a person. A check whose indicators the brain has never seen
//! is recorded as not checked, and does not hold the incident.

use selfheal_bus::{Layer, SeriesKey};
use serde::{Deserialize, Serialize};

use crate::recent::Recent;

/// One check (`[[reconcile]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileCheck {
    /// Its name, as playbooks list it.
    pub name: String,
    /// The metric of one side (e.g. `payments_accepted`).
    pub left: String,
    /// The metric of the other (e.g. `ledger_postings`).
    pub right: String,
    /// The largest difference that still agrees, as a share of the left
    /// side.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// The largest difference that still agrees in any case, in units of
    /// the indicators (counts).
    #[serde(default = "default_min_abs")]
    pub min_abs: f64,
    /// How long after recovery the two sides may take to agree, s.
    #[serde(default = "default_settle_s")]
    pub settle_s: i64,
}

const fn default_tolerance() -> f64 {
    0.001
}
const fn default_min_abs() -> f64 {
    1.0
}
const fn default_settle_s() -> i64 {
    30
}

impl ReconcileCheck {
    /// The shipped check: payments accepted against ledger postings.
    pub fn payments_vs_ledger() -> Self {
        ReconcileCheck {
            name: "payments_vs_ledger".into(),
            left: "payments_accepted".into(),
            right: "ledger_postings".into(),
            tolerance: default_tolerance(),
            min_abs: default_min_abs(),
            settle_s: default_settle_s(),
        }
    }

    /// Its problems, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let at = |k: &str| format!("reconcile {:?}: {k}", self.name);
        if self.name.trim().is_empty() {
            p.push("reconcile: a check needs a name".into());
        }
        if self.left.trim().is_empty() || self.right.trim().is_empty() || self.left == self.right {
            p.push(at("left and right name two different metrics"));
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            p.push(at("tolerance must be in 0..1 (a share of the left side)"));
        }
        if !(self.min_abs >= 0.0 && self.min_abs.is_finite()) {
            p.push(at("min_abs must be a count >= 0"));
        }
        if !(0..=3600).contains(&self.settle_s) {
            p.push(at("settle_s must be in 0..=3600"));
        }
        p
    }
}

/// The shipped checks.
pub fn shipped() -> Vec<ReconcileCheck> {
    vec![ReconcileCheck::payments_vs_ledger()]
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The check.
    pub check: String,
    /// The left side's total over the window.
    pub left: f64,
    /// The right side's.
    pub right: f64,
    /// Series summed on each side.
    pub series: (usize, usize),
    /// Whether the kept samples covered the whole window.
    pub complete: bool,
    /// Whether the two sides agree within the tolerance.
    pub agrees: bool,
    /// Whether it could be checked at all (both sides seen).
    pub checked: bool,
}

impl Outcome {
    /// One line for the timeline and for a person.
    pub fn describe(&self, c: &ReconcileCheck, from: i64, to: i64) -> String {
        if !self.checked {
            return format!(
                "reconciliation {}: not checked, no business series named {} and {} were seen",
                c.name, c.left, c.right
            );
        }
        let diff = self.left - self.right;
        let share = if self.left.abs() > 0.0 {
            100.0 * diff / self.left
        } else {
            0.0
        };
        format!(
            "reconciliation {}: {} {:.0} vs {} {:.0} over {:.0} s from the onset ({diff:+.0}, {share:+.2} %; tolerance {:.2} % or {:.0}){}: {}",
            c.name,
            c.left,
            self.left,
            c.right,
            self.right,
            (to - from) as f64 / 1000.0,
            100.0 * c.tolerance,
            c.min_abs,
            if self.complete {
                ""
            } else {
                " (samples kept cover part of the window only)"
            },
            if self.agrees {
                "consistent"
            } else {
                "MISMATCH"
            }
        )
    }
}

/// Whether both of `c`'s indicators are among the business series kept.
pub fn checkable(recent: &Recent, c: &ReconcileCheck) -> bool {
    recent.scan(|all| {
        let (mut l, mut r) = (false, false);
        for (k, _) in all.filter(|(k, _)| k.layer == Layer::Business) {
            l |= k.metric == c.left;
            r |= k.metric == c.right;
        }
        l && r
    })
}

/// Runs check `c` over `from..=to` (ms) on the business series kept.
pub fn run(recent: &Recent, c: &ReconcileCheck, from: i64, to: i64) -> Outcome {
    let keys = |metric: &str| -> Vec<SeriesKey> {
        let mut v: Vec<SeriesKey> = recent.scan(|all| {
            all.filter(|(k, _)| k.layer == Layer::Business && k.metric == metric)
                .map(|(k, _)| k.clone())
                .collect()
        });
        v.sort();
        v
    };
    let (l, r) = (keys(&c.left), keys(&c.right));
    let mut complete = true;
    let mut total = |ks: &[SeriesKey]| -> f64 {
        let mut sum = 0.0;
        for k in ks {
            let pts = recent.points(&k.to_string(), i64::MIN);
            if pts.first().is_none_or(|(t, _)| *t > from) {
                complete = false;
            }
            let mut prev = pts.iter().rev().find(|(t, _)| *t < from).map(|(t, _)| *t);
            for &(t, v) in pts.iter().filter(|(t, _)| *t >= from && *t <= to) {
                let dt = prev.map_or(0.0, |p| (t - p) as f64 / 1000.0);
                prev = Some(t);
                sum += v.max(0.0) * dt;
            }
        }
        sum
    };
    let (left, right) = (total(&l), total(&r));
    let checked = !l.is_empty() && !r.is_empty();
    let agrees = !checked || (left - right).abs() <= (c.tolerance * left.abs()).max(c.min_abs);
    Outcome {
        check: c.name.clone(),
        left,
        right,
        series: (l.len(), r.len()),
        complete,
        agrees,
        checked,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key(metric: &str, scene: &str) -> Arc<SeriesKey> {
        Arc::new(
            SeriesKey::new(Layer::Business, "idc-a", "gateway", metric).with_scene(Some(scene)),
        )
    }

    #[test]
    fn payments_and_postings_agree_or_the_difference_is_told() {
        let r = Recent::default();
        let c = ReconcileCheck::payments_vs_ledger();
        let (pa, pl, ra, rl) = (
            key("payments_accepted", "pay"),
            key("ledger_postings", "pay"),
            key("payments_accepted", "refund"),
            key("ledger_postings", "refund"),
        );
        // 100 a second on pay, 10 on refund; between 30 s and 40 s the
        // ledger misses 20 % of pay's postings.
        for s in 0..100i64 {
            let t = s * 1000;
            let lost = if (30..40).contains(&s) { 0.2 } else { 0.0 };
            r.observe(1, &pa, t, 100.0);
            r.observe(2, &pl, t, 100.0 * (1.0 - lost));
            r.observe(3, &ra, t, 10.0);
            r.observe(4, &rl, t, 10.0);
        }
        let o = run(&r, &c, 20_000, 60_000);
        assert!(o.checked && o.complete);
        assert_eq!(o.series, (2, 2));
        // 41 samples of 1 s at 110 a second; 10 × 20 missing.
        assert!((o.left - 4510.0).abs() < 1e-6, "{o:?}");
        assert!((o.left - o.right - 200.0).abs() < 1e-6, "{o:?}");
        assert!(!o.agrees);
        let line = o.describe(&c, 20_000, 60_000);
        assert!(
            line.contains("payments_accepted 4510 vs ledger_postings 4310"),
            "{line}"
        );
        assert!(line.ends_with("MISMATCH"), "{line}");
        // After the gap, they agree.
        let o = run(&r, &c, 50_000, 90_000);
        assert!(o.agrees, "{o:?}");
        assert!(o.describe(&c, 50_000, 90_000).ends_with("consistent"));
        // Indicators never seen: not checked, not holding anything.
        let other = ReconcileCheck {
            name: "orders_vs_invoices".into(),
            left: "orders".into(),
            right: "invoices".into(),
            ..c.clone()
        };
        assert!(checkable(&r, &c));
        assert!(!checkable(&r, &other));
        let o = run(&r, &other, 0, 90_000);
        assert!(!o.checked && o.agrees);
        assert!(o.describe(&other, 0, 90_000).contains("not checked"));
        // A window older than the samples kept is said to be partial.
        assert!(!run(&r, &c, -5_000, 10_000).complete);
    }

    #[test]
    fn a_bad_check_is_refused_with_its_key() {
        let mut c = ReconcileCheck::payments_vs_ledger();
        assert!(c.validate().is_empty());
        c.right = c.left.clone();
        c.tolerance = 2.0;
        c.settle_s = -1;
        let p = c.validate().join("\n");
        assert!(p.contains("two different metrics"), "{p}");
        assert!(p.contains("tolerance"), "{p}");
        assert!(p.contains("settle_s"), "{p}");
    }
}
