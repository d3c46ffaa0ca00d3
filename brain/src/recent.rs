//! The last minutes of each business indicator, kept so that a person
//! deciding on an approval sees the key indicator as a small chart. Only
//! business-layer series are kept (the scenes' success rates, latency and
//! volume), each as a ring of its last [`POINTS`] samples, and at most
//! [`MAX_SERIES`] of them.

use std::collections::{HashMap, VecDeque};

use selfheal_bus::{Layer, SeriesKey};

/// Samples kept per series.
pub const POINTS: usize = 600;
/// Series kept.
pub const MAX_SERIES: usize = 4096;

/// The rings, keyed by the series' text form.
#[derive(Debug, Default)]
pub struct Recent {
    series: std::sync::Mutex<HashMap<String, VecDeque<(i64, f64)>>>,
}

impl Recent {
    /// Files one sample (ignored unless business-layer).
    pub fn observe(&self, key: &SeriesKey, ts: i64, value: f64) {
        if key.layer != Layer::Business {
            return;
        }
        let mut m = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let name = key.to_string();
        if !m.contains_key(&name) && m.len() >= MAX_SERIES {
            return;
        }
        let ring = m.entry(name).or_default();
        if ring.back().is_some_and(|(t, _)| *t >= ts) {
            return;
        }
        if ring.len() == POINTS {
            ring.pop_front();
        }
        ring.push_back((ts, value));
    }

    /// The samples of `series` at or after `since`, oldest first.
    pub fn points(&self, series: &str, since: i64) -> Vec<(i64, f64)> {
        let m = self.series.lock().unwrap_or_else(|e| e.into_inner());
        m.get(series)
            .map(|r| r.iter().filter(|(t, _)| *t >= since).copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_keep_the_latest_business_samples_in_order() {
        let r = Recent::default();
        let key = |layer| SeriesKey {
            layer,
            idc: "idc-a".into(),
            service: "cashier".into(),
            scene: Some("checkout".into()),
            link: None,
            instance: None,
            metric: "success_rate".into(),
            labels: Default::default(),
        };
        for t in 0..(POINTS as i64 + 10) {
            r.observe(&key(Layer::Business), t * 1000, t as f64);
            r.observe(&key(Layer::System), t * 1000, t as f64);
        }
        r.observe(&key(Layer::Business), 5, -1.0);
        let name = key(Layer::Business).to_string();
        let p = r.points(&name, 0);
        assert_eq!(p.len(), POINTS);
        assert_eq!(p[0], (10_000, 10.0));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(r.points(&name, 600_000).len(), 10);
        assert!(r.points(&key(Layer::System).to_string(), 0).is_empty());
    }
}
