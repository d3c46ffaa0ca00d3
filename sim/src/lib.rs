//! The system being healed: a payment platform in miniature.
//!
//! It emits the indicators real exporters would show an agent, accepts the
//! actions real actuators take, and records the ground truth a drill is
//! scored against. It runs on a virtual clock, deterministic per seed, as
//! fast as asked.
//!
//! # Layout
//! - [`scenario`]: the scenario file (seed, duration, faults, expectation).
//! - [`feed`]: what the platform exchanges on the bus: telemetry frames,
//!   control commands and replies, ground-truth events.
//! - [`platform`]: the model: traffic, channels, services, faults, the
//!   effect of actions, and the ground truth ([`platform::Truth`]).
//! - [`node`]: runs a platform on a bus under a virtual clock.
//! - [`edge`]: the simulator's side of an edge agent, as a vendor ships
//!   it: its telemetry export as an agent source, its control API as an
//!   actuator, and [`edge::agent`], an agent wired with both.
//! - [`stack`]: a real stack to heal: a payment service run as processes
//!   behind HAProxy, for the stack drill.
//! - [`micro`]: a generic microservice world (random service graphs,
//!   Kubernetes-style names, one fault each) written as recordings, for
//!   drilling localization on graphs it was not written for.
#![deny(missing_docs)]

pub mod edge;
pub mod feed;
pub mod micro;
pub mod node;
pub mod platform;
pub mod scenario;
pub mod stack;

pub use node::{SimHandle, SimNode, Speed};
pub use platform::{Platform, Truth};
pub use scenario::Scenario;

/// The default topology of the simulated platform (`sim/topology.toml`).
pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.toml");

/// Parses and validates a topology document, reporting every problem.
pub fn parse_topology(text: &str) -> Result<selfheal_bus::Topology, String> {
    let topo: selfheal_bus::Topology = toml::from_str(text).map_err(|e| e.to_string())?;
    let problems = topo.validate();
    if problems.is_empty() {
        Ok(topo)
    } else {
        Err(problems.join("\n"))
    }
}

/// The default topology, parsed.
pub fn default_topology() -> selfheal_bus::Topology {
    // The embedded file is checked by a unit test.
    parse_topology(DEFAULT_TOPOLOGY).expect("embedded topology is valid")
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_topology_is_valid() {
        let t = super::default_topology();
        assert_eq!(t.backup_of("bank-a"), Some("bank-b"));
        assert_eq!(t.router_of("bank-a"), Some("channel-router"));
        assert!(super::parse_topology("idcs = []\nscenes=[]\nlinks=[]\nservices=[]").is_err());
    }
}
