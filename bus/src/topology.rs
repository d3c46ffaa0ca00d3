//! The platform topology: IDCs, scenes, links, services, dependencies and
//! backups. The simulator builds its platform from it, the brain correlates
//! and chooses repairs with it. Documented in `docs/topology.md`.

use serde::{Deserialize, Serialize};

use crate::message::valid_name;

/// What role a service plays on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// An application service (cashier, payment engine, router...).
    App,
    /// An external bank or payment channel.
    Channel,
    /// A database.
    Database,
}

/// An IDC (data centre) and its share of traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idc {
    /// Name, used in subjects.
    pub name: String,
    /// Share of traffic it takes in normal operation, in (0,1].
    pub traffic_share: f64,
    /// The most transactions per second it takes (every scene), as its
    /// owners declare it; the patrol checks it against the expected peak
    /// and against taking the largest other IDC's traffic.
    #[serde(default)]
    pub capacity_tps: Option<f64>,
}

/// A business scene (checkout, bill pay, transfer...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scene {
    /// Name.
    pub name: String,
    /// The link its payments flow through.
    pub link: String,
    /// Normal transactions per second, whole platform.
    pub base_tps: f64,
    /// Success-rate objective (e.g. 0.99).
    pub slo_success: f64,
    /// Latency objective, ms: what a customer of the scene may wait. A
    /// latency of the scene or of a service on its link well under it (less
    /// than half) harms nobody, however far it is from its history.
    #[serde(default)]
    pub slo_latency_ms: Option<f64>,
    /// Whether the business needs it during an incident; a non-critical
    /// scene may be degraded to protect the others.
    #[serde(default = "default_true")]
    pub critical: bool,
}

const fn default_true() -> bool {
    true
}

/// A call chain, from the entry service to the channel router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Name.
    pub name: String,
    /// Services in call order; the last one routes to channels.
    pub services: Vec<String>,
}

/// A service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Name, used in subjects.
    pub name: String,
    /// Role.
    pub kind: ServiceKind,
    /// Services it calls.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The service that can take over its traffic.
    #[serde(default)]
    pub backup: Option<String>,
    /// Instances per IDC.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// For a channel: the share of the router's traffic it takes normally.
    #[serde(default)]
    pub share: Option<f64>,
    /// The most transactions per second it takes within its objectives
    /// (every instance and IDC; for a channel, the bank's agreed limit),
    /// as its owners declare it. The patrol checks it against the expected
    /// peak, and a backup's against its own peak plus its primary's.
    #[serde(default)]
    pub capacity_tps: Option<f64>,
}

const fn default_instances() -> u32 {
    2
}

/// The whole topology document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// IDCs.
    pub idcs: Vec<Idc>,
    /// Scenes.
    pub scenes: Vec<Scene>,
    /// Links.
    pub links: Vec<Link>,
    /// Services.
    pub services: Vec<Service>,
}

impl Topology {
    /// A topology of call edges (caller, callee) alone: every service an
    /// application with one instance, no IDC, scene or link. Repeated
    /// edges count once.
    pub fn from_edges(edges: impl IntoIterator<Item = (String, String)>) -> Topology {
        let mut deps: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (src, dst) in edges {
            deps.entry(dst.clone()).or_default();
            let d = deps.entry(src).or_default();
            if !d.contains(&dst) {
                d.push(dst);
            }
        }
        Topology {
            services: deps
                .into_iter()
                .map(|(name, depends_on)| Service {
                    name,
                    kind: ServiceKind::App,
                    depends_on,
                    backup: None,
                    instances: 1,
                    share: None,
                    capacity_tps: None,
                })
                .collect(),
            ..Topology::default()
        }
    }

    /// Normal transactions per second through each service, whole
    /// platform, from the scenes' `base_tps` along their links (a channel:
    /// its share of its router's). Services on no link are absent.
    pub fn base_load(&self) -> std::collections::BTreeMap<String, f64> {
        let mut load: std::collections::BTreeMap<String, f64> = Default::default();
        for sc in &self.scenes {
            if let Some(link) = self.links.iter().find(|l| l.name == sc.link) {
                for s in &link.services {
                    *load.entry(s.clone()).or_default() += sc.base_tps;
                }
            }
        }
        let n = self.channels().count().max(1) as f64;
        for c in self.channels() {
            if let Some(r) = self.router_of(&c.name).and_then(|r| load.get(r)).copied() {
                load.insert(c.name.clone(), r * c.share.unwrap_or(1.0 / n));
            }
        }
        load
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The declared backup of `name`.
    pub fn backup_of(&self, name: &str) -> Option<&str> {
        self.service(name)?.backup.as_deref()
    }

    /// The service that routes traffic to channel `channel` (the one that
    /// depends on it), which is where a traffic shift is executed.
    pub fn router_of(&self, channel: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.depends_on.iter().any(|d| d == channel))
            .map(|s| s.name.as_str())
    }

    /// Channels (primary first: those that are not anyone's backup).
    pub fn channels(&self) -> impl Iterator<Item = &Service> {
        self.services
            .iter()
            .filter(|s| s.kind == ServiceKind::Channel)
    }

    /// Checks the document and returns every problem found, not just the
    /// first one.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let known = |n: &str| self.service(n).is_some();
        if self.idcs.is_empty() {
            problems.push("idcs: at least one IDC is needed".to_string());
        }
        let share: f64 = self.idcs.iter().map(|i| i.traffic_share).sum();
        if !self.idcs.is_empty() && (share - 1.0).abs() > 1e-6 {
            problems.push(format!("idcs: traffic_share must add up to 1, not {share}"));
        }
        for (i, idc) in self.idcs.iter().enumerate() {
            if idc
                .capacity_tps
                .is_some_and(|c| !(c.is_finite() && c > 0.0))
            {
                problems.push(format!("idcs[{i}].capacity_tps: must be a positive number"));
            }
            if !valid_name(&idc.name) {
                problems.push(format!(
                    "idcs[{i}].name: {:?} is not a valid name",
                    idc.name
                ));
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            if !valid_name(&s.name) {
                problems.push(format!(
                    "services[{i}].name: {:?} is not a valid name",
                    s.name
                ));
            }
            for d in &s.depends_on {
                if !known(d) {
                    problems.push(format!("services[{i}].depends_on: unknown service {d:?}"));
                }
            }
            if let Some(b) = &s.backup {
                if !known(b) {
                    problems.push(format!("services[{i}].backup: unknown service {b:?}"));
                }
                if b == &s.name {
                    problems.push(format!(
                        "services[{i}].backup: a service cannot back itself up"
                    ));
                }
            }
            if s.capacity_tps.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                problems.push(format!(
                    "services[{i}].capacity_tps: must be a positive number"
                ));
            }
            if s.instances == 0 {
                problems.push(format!("services[{i}].instances: must be at least 1"));
            }
        }
        let shares: Vec<f64> = self.channels().filter_map(|c| c.share).collect();
        if !shares.is_empty()
            && (shares.iter().any(|s| !(*s >= 0.0 && *s <= 1.0))
                || (shares.iter().sum::<f64>() - 1.0).abs() > 1e-6)
        {
            problems
                .push("services: channel shares must each be in [0,1] and add up to 1".to_string());
        }
        for (i, l) in self.links.iter().enumerate() {
            if l.services.is_empty() {
                problems.push(format!("links[{i}].services: empty"));
            }
            for s in &l.services {
                if !known(s) {
                    problems.push(format!("links[{i}].services: unknown service {s:?}"));
                }
            }
        }
        for (i, sc) in self.scenes.iter().enumerate() {
            if !valid_name(&sc.name) {
                problems.push(format!(
                    "scenes[{i}].name: {:?} is not a valid name",
                    sc.name
                ));
            }
            if !self.links.iter().any(|l| l.name == sc.link) {
                problems.push(format!("scenes[{i}].link: unknown link {:?}", sc.link));
            }
            if !(sc.base_tps.is_finite() && sc.base_tps > 0.0) {
                problems.push(format!("scenes[{i}].base_tps: must be > 0"));
            }
            if !(sc.slo_success > 0.0 && sc.slo_success < 1.0) {
                problems.push(format!("scenes[{i}].slo_success: must be in (0,1)"));
            }
            if sc
                .slo_latency_ms
                .is_some_and(|ms| !(ms.is_finite() && ms > 0.0))
            {
                problems.push(format!(
                    "scenes[{i}].slo_latency_ms: must be a positive number of ms"
                ));
            }
        }
        problems
    }
}
