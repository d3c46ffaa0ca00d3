//! Agent configuration (TOML).

use serde::{Deserialize, Serialize};

/// Where the agent's platform indicators come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feed {
    /// The simulator's telemetry export on `<p>.sim.feed`.
    Sim,
    /// None: only host indicators, on a wall-clock interval.
    None,
}

/// The agent's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name of this agent, the `source` of its batches.
    #[serde(default = "default_name")]
    pub name: String,
    /// The IDC this agent's host is in.
    #[serde(default = "default_idc")]
    pub idc: String,
    /// Where platform indicators come from.
    #[serde(default = "default_feed")]
    pub feed: Feed,
    /// Whether to collect the host's own CPU, memory and load.
    #[serde(default = "default_true")]
    pub host: bool,
    /// Least wall time between two host readings, ms.
    #[serde(default = "default_host_interval_ms")]
    pub host_interval_ms: u64,
    /// Batches kept while the bus is away; the oldest is dropped (and
    /// counted) beyond this.
    #[serde(default = "default_buffer_batches")]
    pub buffer_batches: usize,
    /// Whether to execute action requests (`<p>.act.*`).
    #[serde(default = "default_true")]
    pub actuate: bool,
    /// How long to wait for the platform to apply an action, ms.
    #[serde(default = "default_actuate_timeout_ms")]
    pub actuate_timeout_ms: u64,
    /// Units on this host the agent may restart, with their commands
    /// (`[[process]]`; none by default).
    #[serde(default)]
    pub process: Vec<crate::process::Unit>,
    /// HAProxy instances and the servers the agent may act on
    /// (`[[haproxy]]`; none by default).
    #[serde(default)]
    pub haproxy: Vec<crate::haproxy::HaproxyConfig>,
    /// Dial tests of business endpoints (`[[probe]]`; none by default).
    #[serde(default)]
    pub probe: Vec<crate::probe::Probe>,
    /// Prometheus endpoints to scrape (`[[scrape]]`; none by default).
    #[serde(default)]
    pub scrape: Vec<crate::scrape::Target>,
    /// Indicators through a JetStream stream (`[jetstream]`): each batch
    /// kept until the stream acknowledges it. Off when absent.
    #[serde(default)]
    pub jetstream: Option<selfheal_bus::stream::JetStreamConfig>,
    /// How indicator batches are written: `json` (the default) or
    /// `binary` (about a third of the bytes, read by the brain without
    /// copying a name; brains must be upgraded first, docs/deploy.md).
    #[serde(default)]
    pub encoding: selfheal_bus::Encoding,
}

fn default_name() -> String {
    "agent-1".into()
}
fn default_idc() -> String {
    "idc1".into()
}
const fn default_feed() -> Feed {
    Feed::Sim
}
const fn default_true() -> bool {
    true
}
const fn default_host_interval_ms() -> u64 {
    1000
}
const fn default_buffer_batches() -> usize {
    10_000
}
const fn default_actuate_timeout_ms() -> u64 {
    2000
}

impl Default for AgentConfig {
    fn default() -> Self {
        toml_defaults()
    }
}

fn toml_defaults() -> AgentConfig {
    AgentConfig {
        name: default_name(),
        idc: default_idc(),
        feed: default_feed(),
        host: true,
        host_interval_ms: default_host_interval_ms(),
        buffer_batches: default_buffer_batches(),
        actuate: true,
        actuate_timeout_ms: default_actuate_timeout_ms(),
        process: Vec::new(),
        haproxy: Vec::new(),
        probe: Vec::new(),
        scrape: Vec::new(),
        jetstream: None,
        encoding: selfheal_bus::Encoding::Json,
    }
}

impl AgentConfig {
    /// Every problem with this configuration, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !selfheal_bus::message::valid_name(&self.name) {
            p.push(format!(
                "name: {:?} must be 1-128 chars of [A-Za-z0-9_:/-]",
                self.name
            ));
        }
        if !selfheal_bus::message::valid_name(&self.idc) {
            p.push(format!(
                "idc: {:?} must be 1-128 chars of [A-Za-z0-9_:/-]",
                self.idc
            ));
        }
        if let Some(js) = &self.jetstream {
            p.extend(js.validate());
        }
        if self.buffer_batches == 0 {
            p.push("buffer_batches: must be at least 1".into());
        }
        if self.actuate_timeout_ms == 0 {
            p.push("actuate_timeout_ms: must be at least 1".into());
        }
        for (i, u) in self.process.iter().enumerate() {
            p.extend(u.validate(&format!("process[{i}]")));
        }
        for (i, h) in self.haproxy.iter().enumerate() {
            p.extend(h.validate(&format!("haproxy[{i}]")));
        }
        for (i, pr) in self.probe.iter().enumerate() {
            p.extend(pr.validate(&format!("probe[{i}]")));
        }
        for (i, t) in self.scrape.iter().enumerate() {
            p.extend(t.validate(&format!("scrape[{i}]")));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_integration_guide_s_agent_example_parses_and_is_valid() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/integrations.md"
        ))
        .unwrap();
        let block = doc
            .split("## Agent")
            .nth(1)
            .and_then(|s| s.split("```toml").nth(1))
            .and_then(|b| b.split("```").next())
            .unwrap();
        let cfg: AgentConfig = toml::from_str(block).unwrap();
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(
            (
                cfg.process.len(),
                cfg.haproxy[0].servers.len(),
                cfg.probe.len(),
                cfg.scrape.len()
            ),
            (1, 2, 1, 1)
        );
        assert_eq!(cfg.feed, Feed::None);
    }

    #[test]
    fn the_documented_agent_configuration_parses_and_is_valid() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .unwrap();
        let section = doc.split("## Agent").nth(1).unwrap();
        let section = section.split("\n## ").next().unwrap();
        let blocks: Vec<&str> = section
            .split("```toml")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 2, "the agent's keys, then [[haproxy]]");
        let h: AgentConfig = toml::from_str(blocks[1]).unwrap();
        assert_eq!(h.validate(), Vec::<String>::new());
        assert_eq!(h.haproxy[0].servers[0].backend, "pay");
        let cfg: AgentConfig = toml::from_str(blocks[0]).unwrap();
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(cfg.process.len(), 1);
        assert_eq!(cfg.probe.len(), 1);
        assert_eq!(cfg.probe[0].expect_body.as_deref(), Some("ok|accepted"));
        assert_eq!(cfg.process[0].restart[0], "/usr/bin/systemctl");
    }
}
