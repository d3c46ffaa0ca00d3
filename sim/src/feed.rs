//! What the simulated platform exchanges on the bus. These are the
//! platform's own interfaces (its exporters and its control API), which an
//! agent collects from and actuates through; the brain never reads them.

use serde::{Deserialize, Serialize};

use selfheal_bus::{ActionKind, ChangeKind, Layer};

/// One exported measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameSample {
    /// Layer.
    pub layer: Layer,
    /// IDC.
    pub idc: String,
    /// Service (for infra samples: the service whose host it is).
    pub service: String,
    /// Scene, for per-scene business indicators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    /// Link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Instance (or host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// Per-key request counts of one service and dimension in one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotKeys {
    /// IDC.
    pub idc: String,
    /// Service.
    pub service: String,
    /// `item`, `client_ip`, `account`, `order`.
    pub dimension: String,
    /// Requests in the tick, all keys.
    pub total: u64,
    /// Every key counted this tick, heaviest first (the agent finds the
    /// heavy hitters with its sketch).
    pub top: Vec<(String, u64)>,
}

/// A change to the platform, as its deploy and config systems announce it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Change id.
    pub id: String,
    /// Service changed.
    pub service: String,
    /// Kind.
    pub kind: ChangeKind,
    /// Who made it.
    pub author: String,
    /// What it was.
    pub description: String,
}

/// Everything the platform exported in one tick, on `<p>.sim.feed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Tick number from the start of the run.
    pub tick: u64,
    /// Platform time, ms since the epoch.
    pub ts: i64,
    /// Measurements.
    pub samples: Vec<FrameSample>,
    /// Hot-key counts.
    #[serde(default)]
    pub hot: Vec<HotKeys>,
    /// Changes that took effect this tick.
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// A control command, request/reply on `<p>.sim.ctl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The idempotency key of the action behind it.
    pub key: String,
    /// What to do.
    pub kind: ActionKind,
    /// On what.
    pub target: String,
    /// Parameters, as in the action request.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The platform's answer to a [`Command`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    /// Whether it was applied.
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
    /// Platform time when it was applied, ms since the epoch.
    pub ts: i64,
}

/// A ground-truth event, on `<p>.sim.event`, for timelines and drills.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimEvent {
    /// Platform time, ms since the epoch.
    pub ts: i64,
    /// `started`, `fault_start`, `fault_end`, `event`, `action_applied`,
    /// `recovered`, `finished`.
    pub kind: String,
    /// One line for people.
    pub detail: String,
}
