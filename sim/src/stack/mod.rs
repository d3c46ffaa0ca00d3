//! A real stack to heal: a small payment service run as real processes
//! behind a real HAProxy, for `selfheal stack-drill`.
//!
//! # Layout
//! - [`backend`]: the payment service (HTTP, Prometheus metrics, fault
//!   admin endpoints).
//! - [`deploy`]: the deploy system: configuration pushes, change notices
//!   to the brain, `revert_config` as an HTTP actuator.
//! - [`load`]: the load generator and the customers' view of a fault.
//! - [`scenario`]: the scenario file (`sim/stack/*.toml`).
//! - [`procs`]: the processes a drill starts, stopped together.

pub mod backend;
pub mod deploy;
pub mod load;
pub mod procs;
pub mod scenario;

/// The stack's topology (`sim/stack/topology.toml`).
pub const TOPOLOGY: &str = include_str!("../../stack/topology.toml");
