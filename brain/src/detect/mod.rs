//! Detect: per-series streaming detectors, run by shard tasks that each own
//! the state of the series hashed to them.
//!
//! The detector here is the robust baseline of the walking skeleton: an
//! exponentially weighted mean and absolute deviation, learned from
//! winsorised values, frozen while a series is anomalous, and direction-aware.

pub mod baseline;
pub mod offline;
pub mod shard;

pub use baseline::{Detector, DetectorConfig, Direction, Transition};
pub use shard::{AnomalyEvent, AnomalyKind};
