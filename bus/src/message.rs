//! Typed wire messages and the rules each must satisfy on arrival.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The wire version this build writes and the only one it accepts.
pub const WIRE_VERSION: u16 = 1;

/// Longest name (service, metric, label, key...) accepted on the wire.
pub const MAX_NAME_LEN: usize = 128;
/// Most labels one sample may carry.
pub const MAX_LABELS: usize = 8;

/// The layer an indicator belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Business indicators: TPS, success rate, latency of scenes and channels.
    Business,
    /// Service indicators: CPU, error rate, latency per service and instance.
    System,
    /// Host and network indicators.
    Infra,
}

impl Layer {
    /// The subject token of this layer.
    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::Business => "business",
            Layer::System => "system",
            Layer::Infra => "infra",
        }
    }
}

/// One observation of one series inside an [`IndicatorBatch`]; the batch
/// header carries the layer, IDC and service shared by all its samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The business scene (e.g. `checkout`), when the series is per scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    /// The link (call chain) the series belongs to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The instance, for per-instance series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Metric name, e.g. `success_rate`, `latency_p99_ms`, `tps`.
    pub metric: String,
    /// Bounded extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Timestamp in milliseconds since the Unix epoch.
    pub ts: i64,
    /// The value; must be finite.
    pub value: f64,
}

/// A batch of samples of one layer, IDC and service, published on
/// `<prefix>.ind.<layer>.<idc>.<service>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorBatch {
    /// Wire version.
    pub v: u16,
    /// The publishing agent.
    pub source: String,
    /// Per-source sequence number, rising (across restarts too, for the
    /// agent): a batch sent again after an outage is taken once by it. 0
    /// means unnumbered (never checked).
    pub seq: u64,
    /// Layer of every sample.
    pub layer: Layer,
    /// IDC of every sample.
    pub idc: String,
    /// Service of every sample.
    pub service: String,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// The identity of one series: layer, scope, metric and labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Layer.
    pub layer: Layer,
    /// IDC.
    pub idc: String,
    /// Service.
    pub service: String,
    /// Scene, when per scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    /// Link, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Instance, when per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    /// The key of `metric` of `service` in `idc` on `layer`: no scene, link,
    /// instance or labels (add them with [`SeriesKey::with_scene`],
    /// [`SeriesKey::with_link`], [`SeriesKey::with_instance`]).
    pub fn new(
        layer: Layer,
        idc: impl Into<String>,
        service: impl Into<String>,
        metric: impl Into<String>,
    ) -> Self {
        SeriesKey {
            layer,
            idc: idc.into(),
            service: service.into(),
            scene: None,
            link: None,
            instance: None,
            metric: metric.into(),
            labels: BTreeMap::new(),
        }
    }

    /// This key per scene `scene` (none for `None`).
    pub fn with_scene(self, scene: Option<impl Into<String>>) -> Self {
        SeriesKey {
            scene: scene.map(Into::into),
            ..self
        }
    }

    /// This key on link `link` (none for `None`).
    pub fn with_link(self, link: Option<impl Into<String>>) -> Self {
        SeriesKey {
            link: link.map(Into::into),
            ..self
        }
    }

    /// This key per instance `instance` (none for `None`).
    pub fn with_instance(self, instance: Option<impl Into<String>>) -> Self {
        SeriesKey {
            instance: instance.map(Into::into),
            ..self
        }
    }

    /// The key of `sample` inside `batch`.
    pub fn of(batch: &IndicatorBatch, sample: &Sample) -> Self {
        SeriesKey {
            layer: batch.layer,
            idc: batch.idc.clone(),
            service: batch.service.clone(),
            scene: sample.scene.clone(),
            link: sample.link.clone(),
            instance: sample.instance.clone(),
            metric: sample.metric.clone(),
            labels: sample.labels.clone(),
        }
    }
}

impl std::fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.layer.as_str(), self.idc, self.service)?;
        if let Some(scene) = &self.scene {
            write!(f, "/scene={scene}")?;
        }
        if let Some(instance) = &self.instance {
            write!(f, "/{instance}")?;
        }
        write!(f, ":{}", self.metric)?;
        for (k, v) in &self.labels {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// What kind of change a [`ChangeEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new version of a service was deployed.
    Deploy,
    /// A configuration push.
    Config,
    /// A feature flag flip.
    FeatureFlag,
    /// Instances added or removed.
    Scaling,
}

/// A change to the platform, published on `<prefix>.change.<service>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    /// Wire version.
    pub v: u16,
    /// Unique id of the change (e.g. the deploy id).
    pub id: String,
    /// The changed service.
    pub service: String,
    /// Kind of change.
    pub kind: ChangeKind,
    /// When it took effect, ms since the epoch.
    pub ts: i64,
    /// Who made it.
    pub author: String,
    /// Free text: version, diff summary.
    #[serde(default)]
    pub description: String,
}

/// One key and its count in a [`HotspotReport`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCount {
    /// The key (merchant id, account, item, client IP...).
    pub key: String,
    /// Requests seen for it in the period.
    pub count: u64,
}

/// Top keys of one dimension of one service, published on
/// `<prefix>.hot.<service>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotspotReport {
    /// Wire version.
    pub v: u16,
    /// The reporting service.
    pub service: String,
    /// IDC.
    pub idc: String,
    /// End of the period, ms since the epoch.
    pub ts: i64,
    /// The dimension: `merchant`, `account`, `item`, `client_ip`.
    pub dimension: String,
    /// Requests seen in the period, all keys.
    pub total: u64,
    /// The heaviest keys, heaviest first.
    pub top: Vec<KeyCount>,
}

/// What an action does. Parameters are in [`ActionRequest::params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Move a share of traffic from one channel or IDC to another
    /// (`from`, `to`, `fraction` in [0,1] of `from`'s traffic).
    ShiftTraffic,
    /// Limit a scene, service or key to a rate (`rate` per second).
    Throttle,
    /// Turn off a non-critical feature or scene.
    Degrade,
    /// Undo a degrade, or a throttle, isolation or block of a key, account
    /// or client.
    Restore,
    /// Roll a service back to its previous version (`change` id).
    Rollback,
    /// Revert a configuration push (`change` id).
    RevertConfig,
    /// Restart an instance.
    Restart,
    /// Isolate a hot key or account.
    IsolateKey,
    /// Block a client.
    BlockClient,
}

impl ActionKind {
    /// The snake_case name, as on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::ShiftTraffic => "shift_traffic",
            ActionKind::Throttle => "throttle",
            ActionKind::Degrade => "degrade",
            ActionKind::Restore => "restore",
            ActionKind::Rollback => "rollback",
            ActionKind::RevertConfig => "revert_config",
            ActionKind::Restart => "restart",
            ActionKind::IsolateKey => "isolate_key",
            ActionKind::BlockClient => "block_client",
        }
    }
}

/// A request to an edge actuator, sent request/reply on
/// `<prefix>.act.<service>`. `id` is the idempotency key: an actuator that
/// sees the same id twice applies it once and answers the second time with
/// [`ActionStatus::Duplicate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Wire version.
    pub v: u16,
    /// Idempotency key.
    pub id: String,
    /// The incident this action serves.
    pub incident: String,
    /// The service whose actuator executes it.
    pub service: String,
    /// What to do.
    pub kind: ActionKind,
    /// What it acts on (a channel, a scene, a key...).
    pub target: String,
    /// Kind-specific parameters.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// When the brain issued it, ms since the epoch.
    pub ts: i64,
}

/// How an actuator disposed of an [`ActionRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Applied now.
    Applied,
    /// Already applied under the same idempotency key; not applied again.
    Duplicate,
    /// Refused (unknown target, unsupported kind, bad parameters).
    Rejected,
    /// Tried and failed.
    Failed,
}

/// The actuator's answer to an [`ActionRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionReply {
    /// Wire version.
    pub v: u16,
    /// The request's idempotency key.
    pub id: String,
    /// Outcome.
    pub status: ActionStatus,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// When it was applied (platform time), ms since the epoch.
    pub ts: i64,
}

/// Lifecycle stage of an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// First anomaly seen, incident opened.
    Opened,
    /// A cause was diagnosed.
    Diagnosed,
    /// An action was sent (or refused, or recorded as dry run).
    Acting,
    /// The plan waits for a person's approval.
    AwaitingApproval,
    /// Symptoms cleared after action.
    Recovered,
    /// Handed to a person.
    Escalated,
    /// Closed.
    Closed,
}

/// An incident lifecycle event, published on `<prefix>.incident.<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentEvent {
    /// Wire version.
    pub v: u16,
    /// Incident id.
    pub id: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// New state.
    pub state: IncidentState,
    /// The main service involved.
    pub service: String,
    /// One line for people.
    pub summary: String,
}

/// Why a message failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// A value is NaN or infinite.
    NonFinite,
    /// A timestamp is outside the skew bound.
    Skew,
    /// A name is empty, too long or has characters not allowed.
    BadName,
    /// Too many samples, labels or keys.
    TooMany,
    /// Empty where something is required.
    Empty,
    /// A parameter is out of range.
    OutOfRange,
}

impl Invalid {
    /// A short reason, used as a bounded metric label.
    pub const fn reason(self) -> &'static str {
        match self {
            Invalid::NonFinite => "non_finite",
            Invalid::Skew => "timestamp_skew",
            Invalid::BadName => "bad_name",
            Invalid::TooMany => "too_many",
            Invalid::Empty => "empty",
            Invalid::OutOfRange => "out_of_range",
        }
    }
}

/// Bounds used while validating, set by the receiver.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The receiver's notion of now, ms since the epoch.
    pub now_ms: i64,
    /// Largest accepted distance of a timestamp from `now_ms`, both ways.
    pub max_skew_ms: i64,
    /// Most samples (or keys) in one message.
    pub max_items: usize,
}

/// A message that can be checked after it was decoded.
pub trait Validate {
    /// Checks the message against `bounds`.
    fn validate(&self, bounds: &Bounds) -> Result<(), Invalid>;
}

/// A name usable as a subject token and a label: 1..=128 chars of
/// `[A-Za-z0-9_:/-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'/'))
}

/// A key or action target (hot item, account, client IP, instance): 1..=128
/// chars of `[A-Za-z0-9_:/.@-]`. Unlike a name it may hold dots, and it never
/// goes into a subject.
pub fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'/' | b'.' | b'@')
        })
}

fn name(s: &str) -> Result<(), Invalid> {
    if valid_name(s) {
        Ok(())
    } else {
        Err(Invalid::BadName)
    }
}

/// A series' own names: its metric, its optional scene, link and
/// instance, and its bounded labels.
fn series_names<'s>(
    metric: &str,
    optional: [Option<&str>; 3],
    labels: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
) -> Result<(), Invalid> {
    name(metric)?;
    for o in optional.into_iter().flatten() {
        name(o)?;
    }
    if labels.len() > MAX_LABELS {
        return Err(Invalid::TooMany);
    }
    for (k, v) in labels {
        name(k)?;
        name(v)?;
    }
    Ok(())
}

pub(crate) fn ts(t: i64, b: &Bounds) -> Result<(), Invalid> {
    if (t - b.now_ms).abs() <= b.max_skew_ms {
        Ok(())
    } else {
        Err(Invalid::Skew)
    }
}

impl Validate for IndicatorBatch {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        batch_rules(
            [&self.source, &self.idc, &self.service],
            self.samples.len(),
            self.samples.iter().map(|s| {
                (
                    s.value,
                    s.ts,
                    s.metric.as_str(),
                    [s.scene.as_deref(), s.link.as_deref(), s.instance.as_deref()],
                    s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
            }),
            b,
        )
    }
}

/// One sample as [`batch_rules`] reads it: value, timestamp, metric,
/// scene, link and instance, labels.
pub(crate) type SampleNames<'s, L> = (f64, i64, &'s str, [Option<&'s str>; 3], L);

/// The rules of an indicator batch, owned or viewed in place: its names,
/// at least one sample and at most `max_items`, each finite, on time and
/// well named.
pub(crate) fn batch_rules<'s, L>(
    names: [&str; 3],
    len: usize,
    samples: impl Iterator<Item = SampleNames<'s, L>>,
    b: &Bounds,
) -> Result<(), Invalid>
where
    L: ExactSizeIterator<Item = (&'s str, &'s str)>,
{
    for n in names {
        name(n)?;
    }
    if len == 0 {
        return Err(Invalid::Empty);
    }
    if len > b.max_items {
        return Err(Invalid::TooMany);
    }
    for (value, t, metric, optional, labels) in samples {
        if !value.is_finite() {
            return Err(Invalid::NonFinite);
        }
        ts(t, b)?;
        series_names(metric, optional, labels)?;
    }
    Ok(())
}

/// Longest change author, in bytes.
pub const MAX_AUTHOR_LEN: usize = 256;
/// Longest change description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// The one set of checks on a change notice, whoever sends it: an agent on
/// the bus or a CI/CD system through the webhook (which applies it with the
/// same clock before answering, so that an accepted notice is filed). The id
/// never goes into a subject, so it may hold dots; the author and the
/// description are optional.
impl Validate for ChangeEvent {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        if !valid_key(&self.id) {
            return Err(Invalid::BadName);
        }
        name(&self.service)?;
        ts(self.ts, b)?;
        if self.author.len() > MAX_AUTHOR_LEN || self.author.chars().any(char::is_control) {
            return Err(Invalid::BadName);
        }
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(Invalid::TooMany);
        }
        Ok(())
    }
}

impl Validate for HotspotReport {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        name(&self.service)?;
        name(&self.idc)?;
        name(&self.dimension)?;
        ts(self.ts, b)?;
        if self.top.len() > b.max_items {
            return Err(Invalid::TooMany);
        }
        for k in &self.top {
            if k.key.is_empty() || k.key.len() > MAX_NAME_LEN {
                return Err(Invalid::BadName);
            }
            if k.count > self.total {
                return Err(Invalid::OutOfRange);
            }
        }
        Ok(())
    }
}

impl Validate for ActionRequest {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        name(&self.id)?;
        name(&self.incident)?;
        name(&self.service)?;
        if !valid_key(&self.target) {
            return Err(Invalid::BadName);
        }
        ts(self.ts, b)?;
        if self.params.len() > 16 {
            return Err(Invalid::TooMany);
        }
        for v in self.params.values() {
            if v.as_f64().is_some_and(|f| !f.is_finite()) {
                return Err(Invalid::NonFinite);
            }
        }
        Ok(())
    }
}

impl Validate for ActionReply {
    fn validate(&self, _b: &Bounds) -> Result<(), Invalid> {
        name(&self.id)?;
        if self.message.len() > 4096 {
            return Err(Invalid::TooMany);
        }
        Ok(())
    }
}

impl Validate for IncidentEvent {
    fn validate(&self, _b: &Bounds) -> Result<(), Invalid> {
        name(&self.id)?;
        name(&self.service)?;
        Ok(())
    }
}

/// A message that carries a wire version.
pub trait Versioned {
    /// The message's version field.
    fn version(&self) -> u16;
}

macro_rules! versioned {
    ($($t:ty),*) => { $(impl Versioned for $t { fn version(&self) -> u16 { self.v } })* };
}
versioned!(
    IndicatorBatch,
    ChangeEvent,
    HotspotReport,
    ActionRequest,
    ActionReply,
    IncidentEvent,
    Announcement,
    DetectedBatch
);

/// What an agent sees of the platform, published on
/// `<prefix>.announce.<agent>` when it changes and periodically: the
/// services it reports for in its IDC, with their instances. The brain's
/// view of services, instances and IDCs follows these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// Wire version.
    pub v: u16,
    /// The agent.
    pub agent: String,
    /// Its IDC.
    pub idc: String,
    /// When, ms since the epoch.
    pub ts: i64,
    /// The services it sees.
    pub services: Vec<AnnouncedService>,
}

/// One service an agent sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncedService {
    /// Name.
    pub name: String,
    /// Its instances in the agent's IDC.
    #[serde(default)]
    pub instances: Vec<String>,
}

/// What a detection worker found, published on `<prefix>.det.<worker>`
/// into the detection stream: anomaly transitions of the series of its
/// partitions, and how far it has read the indicator stream for them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectedBatch {
    /// Wire version.
    pub v: u16,
    /// The worker.
    pub worker: String,
    /// The partitions it detects (see `partition`).
    pub partitions: Vec<u16>,
    /// Every indicator of those partitions up to this sequence of the
    /// indicator stream has been looked at, its transitions in this batch
    /// or an earlier one.
    pub upto: u64,
    /// Transitions, in the order found.
    #[serde(default)]
    pub anomalies: Vec<AnomalyReport>,
}

/// One anomaly transition of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyReport {
    /// The series.
    pub key: SeriesKey,
    /// Time of the sample that caused it, ms since the epoch.
    pub ts: i64,
    /// `true` when the series became anomalous, `false` when it is back.
    pub start: bool,
    /// First bad sample (a start), or `ts` (an end).
    pub onset: i64,
    /// The sample's value.
    pub value: f64,
    /// The baseline it was compared with.
    pub baseline: f64,
    /// Score in [0, 1].
    pub score: f64,
    /// Which way is bad: `up`, `down` or `both`.
    pub direction: String,
    /// What the series measures (`errors`, `latency`, `cpu`...).
    pub class: String,
    /// For a start: whether a sample of the run that opened it went
    /// beyond everything the series had done (absent: no).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub novel: bool,
}

impl Validate for DetectedBatch {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        name(&self.worker)?;
        if self.partitions.len() > u16::MAX as usize || self.anomalies.len() > b.max_items {
            return Err(Invalid::TooMany);
        }
        for a in &self.anomalies {
            if ![a.value, a.baseline, a.score].iter().all(|v| v.is_finite()) {
                return Err(Invalid::NonFinite);
            }
            let k = &a.key;
            name(&k.idc)?;
            name(&k.service)?;
            series_names(
                &k.metric,
                [k.scene.as_deref(), k.link.as_deref(), k.instance.as_deref()],
                k.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
            if !matches!(a.direction.as_str(), "up" | "down" | "both") {
                return Err(Invalid::OutOfRange);
            }
            name(&a.class)?;
        }
        Ok(())
    }
}

impl Validate for Announcement {
    fn validate(&self, b: &Bounds) -> Result<(), Invalid> {
        name(&self.agent)?;
        name(&self.idc)?;
        ts(self.ts, b)?;
        if self.services.len() > b.max_items {
            return Err(Invalid::TooMany);
        }
        for s in &self.services {
            name(&s.name)?;
            if s.instances.len() > 4096 {
                return Err(Invalid::TooMany);
            }
            if !s.instances.iter().all(|i| valid_key(i)) {
                return Err(Invalid::BadName);
            }
        }
        Ok(())
    }
}

/// A change as a CI/CD system reports it (the change webhook's body and a
/// line of a replay's `changes.jsonl`): `{"ts": .., "id": .., "service":
/// .., "kind": "deploy" | "config" | "feature_flag" | "scaling", "author":
/// .., "description": ..}`. `ts` is epoch seconds or milliseconds (a number
/// or a string) and may be left out when `now` is given; `author` and
/// `description` are optional. The service may be named any way: a name
/// the wire does not take is mapped ([`crate::names::wire_name`]).
pub fn parse_change(json: &[u8], now: Option<i64>) -> Result<ChangeEvent, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Notice {
        #[serde(default)]
        ts: Option<serde_json::Value>,
        id: String,
        service: String,
        kind: ChangeKind,
        #[serde(default)]
        author: String,
        #[serde(default)]
        description: String,
    }
    let n: Notice = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let ts = match (&n.ts, now) {
        (Some(serde_json::Value::Number(x)), _) => crate::time::parse_timestamp(&x.to_string()),
        (Some(serde_json::Value::String(s)), _) => crate::time::parse_timestamp(s),
        (None, Some(now)) => Some(now),
        _ => None,
    }
    .ok_or_else(|| match &n.ts {
        Some(v) => format!("unreadable ts {v}"),
        None => "ts is missing".to_string(),
    })?;
    if !valid_key(&n.id) {
        return Err(format!(
            "id {:?} must be 1..=128 chars of [A-Za-z0-9_:/.@-]",
            n.id
        ));
    }
    // A service is named as its monitoring names it; the wire takes the
    // same mapping replay applies (`cart.svc` is `cart_svc`).
    let service = n.service.trim();
    if service.is_empty() {
        return Err("service must not be empty".into());
    }
    let service = crate::names::wire_name(service);
    if n.author.len() > MAX_AUTHOR_LEN || n.description.len() > MAX_DESCRIPTION_LEN {
        return Err(format!(
            "author ({MAX_AUTHOR_LEN}) or description ({MAX_DESCRIPTION_LEN} bytes) too long"
        ));
    }
    if n.author.chars().any(char::is_control) {
        return Err("author must not hold control characters".into());
    }
    Ok(ChangeEvent {
        v: WIRE_VERSION,
        id: n.id,
        service,
        kind: n.kind,
        ts,
        author: n.author,
        description: n.description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(value: f64, ts: i64) -> IndicatorBatch {
        IndicatorBatch {
            v: WIRE_VERSION,
            source: "agent-1".into(),
            seq: 1,
            layer: Layer::Business,
            idc: "idc1".into(),
            service: "cashier".into(),
            samples: vec![Sample {
                scene: Some("checkout".into()),
                link: None,
                instance: None,
                metric: "success_rate".into(),
                labels: BTreeMap::new(),
                ts,
                value,
            }],
        }
    }

    const B: Bounds = Bounds {
        now_ms: 1_000_000,
        max_skew_ms: 1_000,
        max_items: 10,
    };

    #[test]
    fn rejects_non_finite_skew_and_names() {
        assert_eq!(batch(0.99, 1_000_000).validate(&B), Ok(()));
        assert_eq!(
            batch(f64::NAN, 1_000_000).validate(&B),
            Err(Invalid::NonFinite)
        );
        assert_eq!(
            batch(f64::INFINITY, 1_000_000).validate(&B),
            Err(Invalid::NonFinite)
        );
        assert_eq!(batch(0.99, 1_002_000).validate(&B), Err(Invalid::Skew));
        assert_eq!(batch(0.99, 998_000).validate(&B), Err(Invalid::Skew));
        let mut b = batch(0.99, 1_000_000);
        b.service = "cash ier".into();
        assert_eq!(b.validate(&B), Err(Invalid::BadName));
        b.service = "cashier".into();
        b.samples.clear();
        assert_eq!(b.validate(&B), Err(Invalid::Empty));
        b.samples = (0..11)
            .map(|_| batch(1.0, 1_000_000).samples[0].clone())
            .collect();
        assert_eq!(b.validate(&B), Err(Invalid::TooMany));
    }

    #[test]
    fn series_key_display_is_readable() {
        let b = batch(0.99, 0);
        let k = SeriesKey::of(&b, &b.samples[0]);
        assert_eq!(
            k.to_string(),
            "business/idc1/cashier/scene=checkout:success_rate"
        );
    }
}
