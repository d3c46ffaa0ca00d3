//! Detect: per-series streaming detectors, run by shard tasks that each own
//! the state of the series hashed to them.
//!
//! # Layout
//! - [`class`]: what a metric measures and which way is bad, from its name.
//! - [`streaming`]: the per-series detector.
//! - [`hysteresis`]: the open/close rule shared by the detectors.
//! - [`shard`]: the shard task, its anomaly events and its marks of
//!   progress in event time.
//! - [`model`]: the multivariate per-service stage (linfa models).
//! - [`offline`]: the detector over whole files (benchmarks).

pub mod class;
pub mod hysteresis;
pub mod model;
pub mod offline;
pub mod remote;
pub mod shard;
pub mod streaming;

pub use class::{ClassRule, MetricClass, MetricClasses};
pub use shard::{AnomalyEvent, AnomalyKind, Detected};
pub use streaming::{Detector, DetectorConfig, Direction, Scorer, Transition};
