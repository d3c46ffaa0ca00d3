//! A real stack to heal: a small payment service run as real processes
//! behind a real HAProxy, for `selfheal stack-drill`.
//!
//! # Layout
//! - [`backend`]: the payment service (HTTP, Prometheus metrics, fault
//!   admin endpoints).

pub mod backend;
