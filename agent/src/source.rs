//! Where an agent's platform indicators come from: a [`Source`] hands the
//! agent [`Reading`]s, and the agent turns them into what it publishes —
//! indicator batches per layer, IDC and service, hot keys through its
//! heavy-hitter sketch, change events, announcements of what it sees.
//!
//! The simulator's telemetry export is one source (it lives with the
//! simulator, `selfheal_sim::edge`); an exporter scrape is another. The
//! agent knows none of them.

use async_trait::async_trait;
use selfheal_bus::{ChangeKind, Layer};

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// Layer.
    pub layer: Layer,
    /// IDC.
    pub idc: String,
    /// Service (for host samples: the service whose host it is).
    pub service: String,
    /// The business scene, for per-scene indicators.
    pub scene: Option<String>,
    /// The link (call chain).
    pub link: Option<String>,
    /// Instance or host.
    pub instance: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// Requests per key of one service and dimension (item, client, account,
/// order) over one reading's period: every key counted, the agent's
/// sketch finds the heavy ones.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyCounts {
    /// IDC.
    pub idc: String,
    /// Service.
    pub service: String,
    /// `item`, `client_ip`, `account`, `order`...
    pub dimension: String,
    /// Requests in the period, all keys.
    pub total: u64,
    /// Each key's count.
    pub counts: Vec<(String, u64)>,
}

/// A change that took effect (a deploy, a configuration push).
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeSeen {
    /// Its id.
    pub id: String,
    /// The service changed.
    pub service: String,
    /// Kind.
    pub kind: ChangeKind,
    /// Who made it.
    pub author: String,
    /// What it was.
    pub description: String,
}

/// What a source showed at one time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Platform time, ms since the epoch; the agent's clock follows it.
    pub ts: i64,
    /// An identity for a reading that may arrive twice (a resend after an
    /// outage): a repeat of one of the last few is skipped.
    pub key: Option<(u64, i64)>,
    /// Measurements.
    pub samples: Vec<Observed>,
    /// Key counts.
    pub keys: Vec<KeyCounts>,
    /// Changes that took effect.
    pub changes: Vec<ChangeSeen>,
}

/// What a source can go wrong with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A reading that could not be read (counted, skipped).
    #[error("unreadable reading: {0}")]
    Unreadable(String),
}

/// A source of readings.
#[async_trait]
pub trait Source: Send {
    /// The next reading; `None` when the source has ended.
    async fn next(&mut self) -> Option<Result<Reading, SourceError>>;
}
