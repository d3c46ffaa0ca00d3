//! Brain configuration (TOML).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    act::{GuardConfig, http::HttpRoute},
    detect::DetectorConfig,
};

/// The brain's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrainConfig {
    /// The SQLite store.
    #[serde(default = "default_store")]
    pub store: PathBuf,
    /// The audit chain's key (64 hex digits; made, mode 0600, when
    /// missing). Default: beside the store, `<store>.audit-key`. Kept where
    /// the store's readers cannot write, it makes a re-chained log show.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// Where signed anchors of the audit chain's head are appended.
    /// Default: beside the store, `<store>.anchors`.
    #[serde(default)]
    pub audit_anchor_file: Option<PathBuf>,
    /// How often the audit chain's head is anchored (when it moved), s.
    #[serde(default = "default_audit_anchor_every_s")]
    pub audit_anchor_every_s: u64,
    /// Where the playbooks are.
    #[serde(default = "default_playbooks")]
    pub playbooks: PathBuf,
    /// Detector shards (tasks).
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Evidence gathered after an incident opens, before diagnosis, s.
    #[serde(default = "default_settle_s")]
    pub settle_s: u64,
    /// Anomalies this close to an incident's last activity join it, s.
    #[serde(default = "default_window_s")]
    pub correlation_window_s: u64,
    /// How long to wait for an actuator's answer, ms.
    #[serde(default = "default_action_timeout_ms")]
    pub action_timeout_ms: u64,
    /// Largest accepted indicator message, bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Largest accepted distance of a timestamp from the brain's clock, s.
    #[serde(default = "default_max_skew_s")]
    pub max_skew_s: u64,
    /// Detector tuning.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Metric classes (`[[metric_class]]`), tried before the shipped table
    /// (see [`crate::detect::class`]): name patterns that give a metric
    /// its class and bad direction.
    #[serde(default)]
    pub metric_class: Vec<crate::detect::ClassRule>,
    /// `service:metric` patterns (`*` matches anything) of series that
    /// open an incident on their own, whatever their class (besides the
    /// business and entry services' success, errors and latency).
    #[serde(default)]
    pub symptoms: Vec<String>,
    /// Name patterns (`*` matches anything; case aside) of the entry
    /// services, for recordings and topologies that tell none: their
    /// errors and latency are symptoms. Default: the front ends and
    /// gateways ([`crate::correlate::shipped_entry_names`]); `[]` turns
    /// it off.
    #[serde(default = "crate::correlate::shipped_entry_names")]
    pub entry_services: Vec<String>,
    /// Planned windows of expected load (`[[planned]]`: a sale, a batch):
    /// latency rising inside one opens no incident; errors still do.
    #[serde(default)]
    pub planned: Vec<crate::correlate::Planned>,
    /// Reconciliation checks after repair (`[[reconcile]]`, see
    /// [`crate::reconcile`]): two indicators that must agree over a fault's
    /// window before its incident closes. A playbook lists the ones its
    /// repair must pass. Default: payments accepted against ledger
    /// postings (`payments_vs_ledger`).
    #[serde(default = "crate::reconcile::shipped")]
    pub reconcile: Vec<crate::reconcile::ReconcileCheck>,
    /// Action guards.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Where the HTTP API (`/healthz`, `/metrics`) listens; off when absent.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Refused API requests (401/403) one client address may make in a
    /// minute before it is turned away for the rest of it; 0 turns the
    /// limit off.
    #[serde(default = "default_refusals_per_minute")]
    pub refusals_per_minute: u32,
    /// Directory of per-service multivariate models (`selfheal train`),
    /// loaded at start (default `models`, relative to the working
    /// directory); the brain runs without them when it is missing or holds
    /// no model file.
    #[serde(default = "default_models")]
    pub models: Option<PathBuf>,
    /// Model score (0..1) at or above which a service's indicators, taken
    /// together, are unusual.
    #[serde(default = "default_model_open")]
    pub model_open: f64,
    /// Base URLs (ending in `/`) HTTP actions may be sent under; a route
    /// outside them is refused at start.
    #[serde(default)]
    pub http_allow: Vec<String>,
    /// Actions sent to HTTP endpoints instead of an edge actuator on the
    /// bus (`[[http_actuator]]`, see [`crate::act::http`]).
    #[serde(default)]
    pub http_actuator: Vec<HttpRoute>,
    /// Caps on distinct series, in all, per source and per service, and
    /// when an idle series is forgotten (`[series]`).
    #[serde(default)]
    pub series: crate::admit::SeriesLimits,
    /// Bounds of the HTTP API against slow or hostile clients (`[http]`).
    #[serde(default)]
    pub http: HttpLimits,
    /// SHA-256 (hex) of the bearer token the change webhook
    /// (`POST /v1/changes`) accepts; the webhook is off when absent.
    /// `selfheal hash-token` prints it. The token itself is never stored.
    #[serde(default)]
    pub change_token_sha256: Option<String>,
    /// SHA-256 (hex) of the bearer token Alertmanager's webhook sends to
    /// `POST /v1/alerts`; the endpoint is off without it.
    #[serde(default)]
    pub alert_token_sha256: Option<String>,
    /// Prometheus remote_write into `POST /v1/write` (`[remote_write]`);
    /// off when absent.
    #[serde(default)]
    pub remote_write: Option<crate::remote_write::RemoteWriteConfig>,
    /// Active/standby engines over NATS JetStream (`[ha]`); off when
    /// absent (one brain acts alone).
    #[serde(default)]
    pub ha: Option<HaConfig>,
    /// Indicators read from a JetStream stream through this brain's
    /// durable consumer (`[jetstream]`) rather than as they pass; off when
    /// absent.
    #[serde(default)]
    pub jetstream: Option<selfheal_bus::stream::JetStreamConfig>,
    /// Detection split over worker processes (`[detection]`, with
    /// `selfheal brain --role detect` and `--role engine`); unused by a
    /// brain that detects itself.
    #[serde(default)]
    pub detection: Option<DetectionConfig>,
    /// SHA-256 (hex) of the bearer token that may read and turn the kill
    /// switch over the API (`/v1/kill-switch`); off when absent.
    #[serde(default)]
    pub admin_token_sha256: Option<String>,
    /// On-call approvals from a phone (`[oncall]`): people, roles, the
    /// rota, links and notifications. Without it, a plan that needs a
    /// person is handed over (escalated) with nothing done.
    #[serde(default)]
    pub oncall: Option<crate::act::approval::OnCallConfig>,
    /// Indicators are fed ahead of the engine, a recording's instants
    /// streaming in while it works (`selfheal replay`): an event-time mark
    /// at a time then says only that every sample *before* it is in, so
    /// what falls due at that time waits for a later mark, and the result
    /// does not depend on how far ingest got meanwhile. Live and the
    /// lockstep drill (all of an instant in before it moves on) take it at
    /// the mark. Set by the program, not by a file.
    #[serde(skip)]
    pub fed_ahead: bool,
}

fn default_models() -> Option<PathBuf> {
    Some("models".into())
}

const fn default_model_open() -> f64 {
    0.75
}

fn default_refusals_per_minute() -> u32 {
    20
}

const fn default_audit_anchor_every_s() -> u64 {
    5
}

fn default_store() -> PathBuf {
    "selfheal.db".into()
}
fn default_playbooks() -> PathBuf {
    "playbooks".into()
}
const fn default_shards() -> usize {
    2
}
const fn default_settle_s() -> u64 {
    3
}
const fn default_window_s() -> u64 {
    120
}
const fn default_action_timeout_ms() -> u64 {
    3000
}
const fn default_max_message_bytes() -> usize {
    1 << 20
}
const fn default_max_skew_s() -> u64 {
    900
}

impl Default for BrainConfig {
    fn default() -> Self {
        BrainConfig {
            store: default_store(),
            audit_key_file: None,
            audit_anchor_file: None,
            audit_anchor_every_s: default_audit_anchor_every_s(),
            playbooks: default_playbooks(),
            shards: default_shards(),
            settle_s: default_settle_s(),
            correlation_window_s: default_window_s(),
            action_timeout_ms: default_action_timeout_ms(),
            max_message_bytes: default_max_message_bytes(),
            max_skew_s: default_max_skew_s(),
            detector: DetectorConfig::default(),
            metric_class: Vec::new(),
            symptoms: Vec::new(),
            entry_services: crate::correlate::shipped_entry_names(),
            planned: Vec::new(),
            reconcile: crate::reconcile::shipped(),
            guard: GuardConfig::default(),
            listen: None,
            refusals_per_minute: default_refusals_per_minute(),
            models: default_models(),
            model_open: default_model_open(),
            http_allow: Vec::new(),
            http_actuator: Vec::new(),
            http: HttpLimits::default(),
            series: crate::admit::SeriesLimits::default(),
            change_token_sha256: None,
            alert_token_sha256: None,
            remote_write: None,
            ha: None,
            jetstream: None,
            detection: None,
            admin_token_sha256: None,
            oncall: None,
            fed_ahead: false,
        }
    }
}

impl BrainConfig {
    /// Where the store's audit key and anchors are.
    pub fn audit_files(&self) -> crate::store::AuditFiles {
        crate::store::AuditFiles {
            key: self.audit_key_file.clone(),
            anchors: self.audit_anchor_file.clone(),
        }
    }

    /// The bounds every message is checked against on arrival.
    pub fn limits(&self) -> selfheal_bus::Limits {
        selfheal_bus::Limits {
            max_bytes: self.max_message_bytes,
            max_skew_ms: (self.max_skew_s * 1000) as i64,
            max_items: 10_000,
        }
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = self.detector.validate();
        if let Err(e) = crate::detect::MetricClasses::new(&self.metric_class) {
            p.extend(e);
        }
        if let Err(e) = crate::correlate::Discipline::new(
            &selfheal_bus::Topology::default(),
            &self.symptoms,
            &self.planned,
        ) {
            p.extend(e);
        }
        p.extend(self.http.validate());
        p.extend(self.series.validate());
        for (i, c) in self.reconcile.iter().enumerate() {
            p.extend(c.validate());
            if self.reconcile[..i].iter().any(|o| o.name == c.name) {
                p.push(format!("reconcile {:?}: defined twice", c.name));
            }
        }
        if let Some(ha) = &self.ha {
            p.extend(ha.validate());
        }
        if let Some(js) = &self.jetstream {
            p.extend(js.validate());
        }
        if let Some(d) = &self.detection {
            p.extend(d.validate());
        }
        if self.audit_anchor_every_s == 0 || self.audit_anchor_every_s > 3600 {
            p.push("audit_anchor_every_s: must be in 1..=3600".into());
        }
        if self.shards == 0 || self.shards > 256 {
            p.push("shards: must be in 1..=256".into());
        }
        if self.action_timeout_ms == 0 {
            p.push("action_timeout_ms: must be at least 1".into());
        }
        if self.max_message_bytes < 1024 {
            p.push("max_message_bytes: must be at least 1024".into());
        }
        if !(self.model_open > 0.0 && self.model_open < 1.0) {
            p.push("model_open: must be in (0,1)".into());
        }
        p.extend(self.guard.validate());
        if let Some(h) = &self.change_token_sha256
            && crate::secret::parse_sha256(h).is_none()
        {
            p.push("change_token_sha256: must be 64 hex digits (selfheal hash-token)".into());
        }
        if let Some(h) = &self.alert_token_sha256
            && crate::secret::parse_sha256(h).is_none()
        {
            p.push("alert_token_sha256: must be 64 hex digits (selfheal hash-token)".into());
        }
        if let Some(rw) = &self.remote_write {
            p.extend(rw.validate());
        }
        if let Some(h) = &self.admin_token_sha256 {
            if crate::secret::parse_sha256(h).is_none() {
                p.push("admin_token_sha256: must be 64 hex digits (selfheal hash-token)".into());
            }
            if self.guard.kill_switch_file.is_none() {
                p.push(
                    "admin_token_sha256: the API kill switch needs guard.kill_switch_file".into(),
                );
            }
        }
        if let Some(oc) = &self.oncall {
            p.extend(oc.validate());
            if self.listen.is_none() {
                p.push("oncall: needs listen (the page and the API)".into());
            }
        }
        p.extend(crate::act::http::validate(
            &self.http_actuator,
            &self.http_allow,
        ));
        p
    }
}

/// Bounds that keep a slow or hostile client from holding the API
/// (`[http]` in the brain's configuration).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Connections open at once; beyond, a new one is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one address, so that one client
    /// cannot take every slot (a load balancer's health check, a phone).
    pub max_connections_per_peer: usize,
    /// Time to send a request's headers, ms; also how long a kept-alive
    /// connection may sit idle.
    pub header_timeout_ms: u64,
    /// Time for a whole request, body included, and its answer, ms (408
    /// after).
    pub request_timeout_ms: u64,
    /// Age after which a connection is closed once its request is done, s.
    pub max_age_s: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            max_connections_per_peer: 128,
            header_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            max_age_s: 300,
        }
    }
}

impl HttpLimits {
    /// Every problem with these limits.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_connections == 0 || self.max_connections > 65_536 {
            p.push("http.max_connections: must be in 1..=65536".into());
        }
        if self.max_connections_per_peer == 0
            || self.max_connections_per_peer > self.max_connections
        {
            p.push("http.max_connections_per_peer: must be in 1..=max_connections".into());
        }
        for (name, v) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if !(100..=600_000).contains(&v) {
                p.push(format!("http.{name}: must be in 100..=600000"));
            }
        }
        if self.max_age_s == 0 {
            p.push("http.max_age_s: must be at least 1".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_configuration_parses_and_is_valid() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ))
        .unwrap();
        let block = doc
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let cfg: BrainConfig = toml::from_str(block).unwrap();
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(cfg.http_actuator.len(), 1);
        assert!(cfg.alert_token_sha256.is_some());
        assert_eq!(
            cfg.remote_write.as_ref().map(|r| r.idc.as_str()),
            Some("idc1")
        );
        assert_eq!(cfg.guard.freeze.len(), 1);
        // The documented entry names are the shipped ones.
        assert_eq!(cfg.entry_services, crate::correlate::shipped_entry_names());
        assert_eq!(
            cfg.detection
                .as_ref()
                .map(|d| (d.worker.as_deref(), d.replicas)),
            Some((Some("det-a"), 3))
        );
        let oc = cfg.oncall.unwrap();
        assert_eq!((oc.users.len(), oc.notify.len()), (2, 1));
        assert_eq!(
            oc.user("sre-carol").unwrap().role,
            crate::act::approval::Role::Admin
        );
    }
}

/// Active/standby engines (`[ha]`): every brain of a group ingests and
/// detects; the one holding the lease (a key in a JetStream KV bucket)
/// acts, and replicates its unfinished incidents and actions to a second
/// bucket, so that a standby taking over goes on where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// This brain's name in the lease (default `<hostname>-<pid>`).
    #[serde(default)]
    pub holder: Option<String>,
    /// How long the lease lives without renewal, ms: a dead leader is
    /// replaced after at most this (renewed every third of it).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// The lease's KV bucket.
    #[serde(default = "default_lease_bucket")]
    pub lease_bucket: String,
    /// The replicated state's KV bucket.
    #[serde(default = "default_state_bucket")]
    pub state_bucket: String,
    /// Copies of each bucket (3 on a 3-node NATS cluster).
    #[serde(default = "default_ha_replicas")]
    pub replicas: usize,
    /// How long replicated state is kept without a new write, s (an
    /// incident, an action's record, a closed incident's state).
    #[serde(default = "default_state_keep_s")]
    pub state_keep_s: u64,
}

const fn default_lease_ttl_ms() -> u64 {
    3_000
}
fn default_lease_bucket() -> String {
    "selfheal_lease".into()
}
fn default_state_bucket() -> String {
    "selfheal_engine".into()
}
const fn default_ha_replicas() -> usize {
    1
}
const fn default_state_keep_s() -> u64 {
    86_400
}

/// The `[detection]` section: detection split over worker processes, each
/// detecting the series of its partitions (by service) and publishing what
/// it finds into a JetStream stream the engines read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// This worker's name among the workers (default `<hostname>-<pid>`);
    /// 1-64 chars of `[A-Za-z0-9_-]`.
    #[serde(default)]
    pub worker: Option<String>,
    /// Partitions the services are hashed into; every worker and engine
    /// of a group must agree.
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// How long a worker's membership lives without renewal, ms: a dead
    /// worker's partitions move after at most this.
    #[serde(default = "default_member_ttl_ms")]
    pub member_ttl_ms: u64,
    /// The membership KV bucket.
    #[serde(default = "default_members_bucket")]
    pub members_bucket: String,
    /// The stream the workers publish their findings into.
    #[serde(default = "default_detected_stream")]
    pub stream: String,
    /// Copies of the bucket and the stream (3 on a 3-node NATS cluster).
    #[serde(default = "default_ha_replicas")]
    pub replicas: usize,
    /// History a worker's detectors learn from when given partitions, s
    /// (from the indicator stream; at most what it keeps).
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
}

const fn default_partitions() -> u16 {
    selfheal_bus::partition::DEFAULT_PARTITIONS
}
const fn default_member_ttl_ms() -> u64 {
    3_000
}
fn default_members_bucket() -> String {
    "selfheal_detect".into()
}
fn default_detected_stream() -> String {
    "SELFHEAL_DETECTED".into()
}
const fn default_warmup_s() -> u64 {
    600
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            worker: None,
            partitions: default_partitions(),
            member_ttl_ms: default_member_ttl_ms(),
            members_bucket: default_members_bucket(),
            stream: default_detected_stream(),
            replicas: default_ha_replicas(),
            warmup_s: default_warmup_s(),
        }
    }
}

impl DetectionConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let name = selfheal_bus::stream::valid_name;
        if let Some(w) = &self.worker
            && !name(w)
        {
            p.push("detection.worker: must be 1-64 chars of [A-Za-z0-9_-]".into());
        }
        if !(1..=4096).contains(&self.partitions) {
            p.push("detection.partitions: must be in 1..=4096".into());
        }
        if !(1_000..=60_000).contains(&self.member_ttl_ms) {
            p.push("detection.member_ttl_ms: must be in 1000..=60000".into());
        }
        if !name(&self.members_bucket) {
            p.push("detection.members_bucket: must be 1-64 chars of [A-Za-z0-9_-]".into());
        }
        if !name(&self.stream) {
            p.push("detection.stream: must be 1-64 chars of [A-Za-z0-9_-]".into());
        }
        if !(1..=5).contains(&self.replicas) {
            p.push("detection.replicas: must be in 1..=5".into());
        }
        if self.warmup_s > 86_400 {
            p.push("detection.warmup_s: must be at most 86400".into());
        }
        p
    }
}

impl HaConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1_000..=60_000).contains(&self.lease_ttl_ms) {
            p.push("ha.lease_ttl_ms: must be in 1000..=60000".into());
        }
        if !(1..=5).contains(&self.replicas) {
            p.push("ha.replicas: must be in 1..=5".into());
        }
        if self.state_keep_s < 3_600 {
            p.push("ha.state_keep_s: must be at least 3600".into());
        }
        let bucket = selfheal_bus::stream::valid_name;
        for (k, v) in [
            ("lease_bucket", &self.lease_bucket),
            ("state_bucket", &self.state_bucket),
        ] {
            if !bucket(v) {
                p.push(format!("ha.{k}: must be 1-64 chars of [A-Za-z0-9_-]"));
            }
        }
        if self.lease_bucket == self.state_bucket {
            p.push("ha.state_bucket: must differ from ha.lease_bucket".into());
        }
        if let Some(h) = &self.holder
            && (h.is_empty() || h.len() > 128)
        {
            p.push("ha.holder: must be 1-128 chars".into());
        }
        p
    }
}
