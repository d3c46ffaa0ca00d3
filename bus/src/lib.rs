//! The selfheal wire contract.
//!
//! Everything that crosses a process boundary in selfheal is defined here, so
//! that the agent, the brain and the simulator agree on bytes without knowing
//! each other.
//!
//! # Layout
//! - [`actuate`]: the [`Actuator`](actuate::Actuator) trait everything
//!   that carries out an action implements, and its typed error.
//! - [`message`]: the typed messages (indicator batches, changes, hotspots,
//!   action requests and replies, incident events) and their validation rules.
//! - [`topology`]: the platform topology document (scenes, services,
//!   dependencies, backups, IDCs) shared by the simulator, agents and brain.
//! - [`subject`]: subject naming under a configurable prefix, and NATS
//!   wildcard matching.
//! - [`codec`]: bytes ⇄ typed messages: JSON encoding (and a compact
//!   binary one for indicator batches), size bound, version, finite values
//!   and timestamp skew checked on arrival.
//! - [`view`]: indicator batches read in place, their names borrowed from
//!   the received bytes.
//! - [`skim`]: a binary batch's times and values read where they lie, its
//!   names as encoded, for a receiver that recognises them.
//! - [`names`]: names as monitoring writes them mapped to wire-safe names.
//! - [`prom`]: Prometheus series (scraped or remote-written) turned into
//!   indicators: counters as rates, histograms as interval percentiles.
//! - [`lograte`]: rate-limited logging of per-message problems.
//! - [`ha`]: high availability over NATS JetStream: a leadership lease and
//!   replicated state in KV buckets.
//! - [`partition`]: which detection worker detects which series
//!   (partitions by service, membership in a KV bucket, warm-up replay).
//! - [`stream`]: indicators through a JetStream stream (acknowledged
//!   publishing, a durable consumer per brain).
//! - [`transport`]: the [`Transport`](transport::Transport) trait every bus
//!   implements, with [`nats`] (async-nats) and [`local`] (in-process)
//!   implementations.
#![deny(missing_docs)]

pub mod actuate;
pub mod codec;
pub mod ha;
pub mod local;
pub mod lograte;
pub mod message;
pub mod names;
pub mod nats;
pub mod partition;
pub mod prom;
pub mod skim;
pub mod stream;
pub mod subject;
pub mod time;
pub mod topology;
pub mod transport;
pub mod view;

pub use actuate::{ActError, ActErrorKind, Actuator};
/// The payload type of every message on the bus.
pub use bytes::Bytes;
pub use codec::{
    BINARY_MAGIC, DecodeError, DecodeErrorKind, EncodeError, Encoding, Limits, check, decode,
    decode_batch, decode_indicators, encode, encode_batch, wall_ms,
};
pub use local::LocalTransport;
pub use message::*;
pub use nats::NatsTransport;
pub use skim::{Skim, SkimSample};
pub use subject::Subjects;
pub use topology::Topology;
pub use transport::{Bus, BusError, BusErrorKind, Message, Subscription, Transport, publish_msg};
pub use view::{BatchView, SampleView};
