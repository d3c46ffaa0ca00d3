//! Detect: per-series streaming detectors, run by shard tasks that each own
//! the state of the series hashed to them.

pub mod class;
pub mod hysteresis;
pub mod model;
pub mod offline;
pub mod shard;
pub mod streaming;

pub use class::{ClassRule, MetricClass, MetricClasses};
pub use shard::{AnomalyEvent, AnomalyKind, Detected};
pub use streaming::{Detector, DetectorConfig, Direction, Transition};
