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
use selfheal_models::{Means, ModelSet};

use super::{
    AnomalyEvent, AnomalyKind, Direction,
    hysteresis::{Edge, Hysteresis},
};

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

impl ModelThresholds {
    /// Takes one instant's score into `state`.
    pub fn step(&self, state: &mut Hysteresis, ts: i64, score: f64) -> Option<Edge> {
        state.step(
            ts,
            score >= self.open,
            score < self.open / 2.0,
            self.open_run,
            self.close_run,
        )
    }
}

#[derive(Default)]
struct ServiceState {
    ts: i64,
    acc: Means,
    state: Hysteresis,
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

    /// Whether `service` has a model (its samples are to be observed).
    pub fn watches(&self, service: &str) -> bool {
        self.set.models.contains_key(service)
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
        if !self.state.contains_key(service) {
            self.state
                .insert(service.to_string(), ServiceState::default());
        }
        let st = self.state.get_mut(service)?;
        let mut out = None;
        if ts > st.ts && !st.acc.is_empty() {
            if let Some(v) = model.vector(|f| st.acc.mean(f)) {
                let score = model.score(&v);
                out = self
                    .th
                    .step(&mut st.state, st.ts, score)
                    .map(|edge| event(service, st.ts, edge, score));
            }
            st.acc.reset();
        }
        if ts >= st.ts {
            st.ts = ts;
            st.acc.add(metric, value);
        }
        out
    }
}

fn event(service: &str, ts: i64, edge: Edge, score: f64) -> AnomalyEvent {
    let (kind, onset, score) = match edge {
        Edge::Opened { onset } => (AnomalyKind::Start, onset, score),
        Edge::Closed => (AnomalyKind::End, ts, 0.0),
    };
    AnomalyEvent {
        key: SeriesKey::new(Layer::System, "all", service, MODEL_METRIC),
        ts,
        kind,
        onset,
        value: score,
        baseline: 0.0,
        score,
        direction: Direction::Up,
        class: "model".into(),
        novel: false,
        after_change: None,
    }
}
