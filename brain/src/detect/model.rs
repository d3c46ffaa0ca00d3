//! The multivariate stage: per-service models (see `selfheal-models`)
//! score each service's indicator vector once per instant and report a
//! service whose indicators, taken together, left their usual shape.
//!
//! It runs inside ingest, on the samples as they are accepted: a service's
//! vector for one instant is complete when a sample of a later instant
//! arrives. Its anomalies go to the engine like any detector's, on the
//! series `<service>/model_score` of IDC `all`.

use std::collections::HashMap;

use selfheal_bus::{Layer, SeriesKey};
use selfheal_models::{ModelSet, Vectors};

use super::{AnomalyEvent, AnomalyKind, Direction};

/// Metric name of a model's anomalies.
pub const MODEL_METRIC: &str = "model_score";

/// Scores that open a model anomaly (a run of them) and close it.
#[derive(Clone, Copy, Debug)]
pub struct ModelThresholds {
    /// Score at or above which an instant is unusual.
    pub open: f64,
    /// Consecutive unusual instants that open an anomaly.
    pub open_run: u8,
    /// Consecutive usual instants (score below half of `open`) that close it.
    pub close_run: u8,
}

impl Default for ModelThresholds {
    fn default() -> Self {
        ModelThresholds {
            open: 0.75,
            open_run: 3,
            close_run: 5,
        }
    }
}

#[derive(Default)]
struct ServiceState {
    ts: i64,
    acc: Vectors,
    run: u8,
    onset: i64,
    anomalous: bool,
    last: f64,
}

/// The models and each modelled service's state.
pub struct ModelStage {
    set: ModelSet,
    th: ModelThresholds,
    state: HashMap<String, ServiceState>,
}

impl ModelStage {
    /// A stage over `set` (services without a model are ignored).
    pub fn new(set: ModelSet, th: ModelThresholds) -> Self {
        ModelStage {
            set,
            th,
            state: HashMap::new(),
        }
    }

    /// Services modelled.
    pub fn services(&self) -> usize {
        self.set.models.len()
    }

    /// The last score of `service` (0 before any).
    pub fn last_score(&self, service: &str) -> f64 {
        self.state.get(service).map_or(0.0, |s| s.last)
    }

    /// Takes one accepted sample; returns a transition when the service's
    /// previous instant, now complete, changed its state.
    pub fn observe(
        &mut self,
        service: &str,
        metric: &str,
        ts: i64,
        value: f64,
    ) -> Option<AnomalyEvent> {
        let model = self.set.models.get(service)?;
        let st = self.state.entry(service.to_string()).or_default();
        let mut out = None;
        if ts > st.ts && !st.acc.is_empty() {
            let means = st.acc.take().remove(service).unwrap_or_default();
            if let Some(v) = model.vector(&means) {
                let score = model.score(&v);
                st.last = score;
                out = Self::step(st, &self.th, service, score);
            }
        }
        if ts >= st.ts {
            st.ts = ts;
            st.acc.add(service, metric, value);
        }
        out
    }

    fn step(
        st: &mut ServiceState,
        th: &ModelThresholds,
        service: &str,
        score: f64,
    ) -> Option<AnomalyEvent> {
        let ts = st.ts;
        let event = |kind, onset, score| AnomalyEvent {
            key: SeriesKey {
                layer: Layer::System,
                idc: "all".into(),
                service: service.to_string(),
                scene: None,
                link: None,
                instance: None,
                metric: MODEL_METRIC.into(),
                labels: Default::default(),
            },
            ts,
            kind,
            onset,
            value: score,
            baseline: 0.0,
            score,
            direction: Direction::Up,
        };
        if st.anomalous {
            if score < th.open / 2.0 {
                st.run += 1;
                if st.run >= th.close_run {
                    st.anomalous = false;
                    st.run = 0;
                    return Some(event(AnomalyKind::End, ts, 0.0));
                }
            } else {
                st.run = 0;
            }
            return None;
        }
        if score >= th.open {
            if st.run == 0 {
                st.onset = ts;
            }
            st.run += 1;
            if st.run >= th.open_run {
                st.anomalous = true;
                st.run = 0;
                return Some(event(AnomalyKind::Start, st.onset, score));
            }
        } else {
            st.run = 0;
        }
        None
    }
}
