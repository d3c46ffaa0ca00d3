//! The edge agent: collects indicators, batches them, publishes them over the
//! bus (buffering while the bus is away), and executes the actions addressed
//! to the services it fronts. It never depends on the brain.
//!
//! # Layout
//! - [`config`]: the agent's TOML configuration.
//! - [`source`]: the [`source::Source`] trait platform indicators come
//!   through, and its readings (the simulator's export is one source, in
//!   the simulator crate).
//! - [`procfs`]: the host collector (CPU, memory, load from `/proc`).
//! - [`readings`]: readings turned into what is published: batches per
//!   layer, IDC and service, hot keys, changes, announcements.
//! - [`publisher`]: publishing with a bounded buffer across bus outages.
//! - [`sketch`]: the space-saving sketch that finds hot keys.
//! - [`executor`]: request/reply action execution, once per idempotency
//!   key, through the [`selfheal_bus::Actuator`]s the agent is given.
//! - [`process`]: the agent's own actuator for its host: restart an
//!   allow-listed unit through its configured command.
//! - [`haproxy`]: an actuator for HAProxy's runtime API: shift weight off
//!   a server in steps, drain it, ready it again.
//! - [`probe`]: dial tests of business endpoints, published as business
//!   indicators (`probe_success`, `probe_latency_ms`).
//! - [`stats`]: the agent's own counters.
//! - [`run`]: wires them into a running agent ([`Agent::spawn`]).
#![deny(missing_docs)]

pub mod config;
pub mod executor;
pub mod haproxy;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod publisher;
pub mod readings;
pub mod run;
pub mod scrape;
pub mod sketch;
pub mod source;
pub mod stats;

pub use config::AgentConfig;
pub use run::{Agent, AgentHandle};
pub use stats::AgentStats;

#[cfg(test)]
mod tests {
    /// The agent is the edge: it knows the wire contract and nothing of
    /// the brain or of the platform it fronts (those hand it sources and
    /// actuators).
    #[test]
    fn the_agent_depends_on_neither_the_brain_nor_the_simulator() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|d| d.split("\n[").next())
            .unwrap_or("");
        assert!(deps.contains("selfheal-bus"), "{deps}");
        for other in ["selfheal-brain", "selfheal-sim"] {
            assert!(!deps.contains(other), "the agent depends on {other}");
        }
    }

    #[tokio::test]
    async fn an_action_no_actuator_takes_is_refused_not_guessed() {
        let stats = std::sync::Arc::new(crate::AgentStats::default());
        let mut ex = crate::executor::Executor::new(Vec::new(), stats.clone());
        let req = selfheal_bus::ActionRequest {
            v: selfheal_bus::WIRE_VERSION,
            id: "inc-1-s0".into(),
            incident: "inc-1".into(),
            service: "cashier".into(),
            kind: selfheal_bus::ActionKind::Restart,
            target: "cashier-1".into(),
            params: Default::default(),
            ts: 1_000,
        };
        let r = ex.handle(&selfheal_bus::encode(&req).unwrap(), 1_000).await;
        assert_eq!(r.status, selfheal_bus::ActionStatus::Rejected);
        assert!(r.message.contains("no actuator"), "{}", r.message);
        assert_eq!(crate::AgentStats::get(&stats.actions_rejected), 1);
    }
}
