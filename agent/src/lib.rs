//! The edge agent: collects indicators, batches them, publishes them over the
//! bus (buffering while the bus is away), and executes the actions addressed
//! to the services it fronts. It never depends on the brain.
//!
//! # Layout
//! - [`config`]: the agent's TOML configuration.
//! - [`procfs`]: the host collector (CPU, memory, load from `/proc`).
//! - [`sim_feed`]: the simulator collector: platform telemetry frames turned
//!   into indicator batches.
//! - [`publisher`]: publishing with a bounded buffer across bus outages.
//! - [`sketch`]: the space-saving sketch that finds hot keys.
//! - [`actuator`]: request/reply action execution with idempotency keys.
//! - [`stats`]: the agent's own counters.
//! - [`run`]: wires them into a running agent ([`Agent::spawn`]).
#![deny(missing_docs)]

pub mod actuator;
pub mod config;
pub mod procfs;
pub mod publisher;
pub mod run;
pub mod sim_feed;
pub mod sketch;
pub mod stats;

pub use config::AgentConfig;
pub use run::{Agent, AgentHandle};
pub use stats::AgentStats;
