//! Indicators through a JetStream stream: agents publish into it and keep
//! each batch until the stream acknowledges it
//! ([`Transport::publish_durable`](crate::Transport::publish_durable)); each
//! brain reads it through its own durable consumer, so that a brain that
//! was away, or a NATS node that died, costs no sample.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use tracing::warn;

use crate::transport::{BusError, Message, Subscription};

/// The stream's settings, shared by its writers and readers.
#[derive(Clone, Debug)]
pub struct IndicatorStream {
    /// Stream name.
    pub name: String,
    /// Subjects it holds (the indicator subjects, `<prefix>.ind.>`).
    pub subjects: String,
    /// Copies in the cluster (3 on a 3-node cluster).
    pub replicas: usize,
    /// How long indicators are kept: the longest absence of a brain that
    /// costs nothing.
    pub max_age: Duration,
}

/// Window within which a re-sent batch (same id) is stored once.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(120);

fn context(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(crate::ha::REQUEST_TIMEOUT);
    js
}

/// Creates the stream, or brings its settings up to date.
pub async fn ensure(client: &async_nats::Client, s: &IndicatorStream) -> Result<(), BusError> {
    context(client)
        .create_or_update_stream(stream::Config {
            name: s.name.clone(),
            subjects: vec![s.subjects.clone()],
            num_replicas: s.replicas.max(1),
            max_age: s.max_age,
            duplicate_window: DEDUP_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| BusError::Other(format!("JetStream stream {}: {e}", s.name)))
}

/// What the patrol reads of JetStream before an event.
#[derive(Clone, Debug, PartialEq)]
pub struct JetStreamHealth {
    /// The account's JetStream: streams and storage used.
    pub streams: usize,
    /// Per stream or bucket named: `None` when it does not exist.
    pub found: Vec<(String, Option<StreamState>)>,
}

/// One stream as JetStream reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamState {
    /// Messages held.
    pub messages: u64,
    /// Replicas configured.
    pub replicas: usize,
    /// Replicas current: the leader, and followers neither lagging nor
    /// offline.
    pub current: usize,
}

/// Inspects the account's JetStream and the streams and key-value buckets
/// named (a bucket `b` is the stream `KV_b`). Fails when JetStream is not
/// enabled or does not answer.
pub async fn inspect(
    client: &async_nats::Client,
    streams: &[String],
    buckets: &[String],
) -> Result<JetStreamHealth, BusError> {
    let js = context(client);
    let account = js
        .query_account()
        .await
        .map_err(|e| BusError::Other(format!("JetStream: {e}")))?;
    let mut found = Vec::new();
    let names = streams.iter().map(|s| (s.clone(), s.clone())).chain(
        buckets
            .iter()
            .map(|b| (format!("bucket {b}"), format!("KV_{b}"))),
    );
    for (label, name) in names {
        let got = match js.get_stream(&name).await {
            Ok(mut st) => {
                let info = st
                    .info()
                    .await
                    .map_err(|e| BusError::Other(format!("JetStream stream {name}: {e}")))?;
                let replicas = info.config.num_replicas.max(1);
                let current = match &info.cluster {
                    Some(c) => {
                        usize::from(c.leader.is_some())
                            + c.replicas
                                .iter()
                                .filter(|r| r.current && !r.offline)
                                .count()
                    }
                    None => 1,
                };
                Some(StreamState {
                    messages: info.state.messages,
                    replicas,
                    current,
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                None
            }
            Err(e) => return Err(BusError::Other(format!("JetStream stream {name}: {e}"))),
        };
        found.push((label, got));
    }
    Ok(JetStreamHealth {
        streams: account.streams,
        found,
    })
}

/// Reads the stream through the durable consumer `durable` (created when
/// missing: from new messages on; afterwards it goes on where it was
/// acknowledged). Each message is acknowledged as it is handed over.
pub async fn consume(
    client: &async_nats::Client,
    s: &IndicatorStream,
    durable: &str,
) -> Result<Subscription, BusError> {
    let err = |e: &dyn std::fmt::Display| {
        BusError::Other(format!("JetStream consumer {durable} on {}: {e}", s.name))
    };
    let st = context(client)
        .get_stream(&s.name)
        .await
        .map_err(|e| err(&e))?;
    let c: consumer::PullConsumer = st
        .get_or_create_consumer(
            durable,
            consumer::pull::Config {
                durable_name: Some(durable.to_string()),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(10),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err(&e))?;
    let messages = c.messages().await.map_err(|e| err(&e))?;
    let name = s.name.clone();
    // A message delivered again (its acknowledgement lost with a node)
    // has a stream sequence already seen and is skipped: each indicator
    // reaches the brain once. Redeliveries may come after later messages.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let stream = messages.filter_map(move |m| {
        let (name, seen) = (name.clone(), seen.clone());
        async move {
            match m {
                Ok(m) => {
                    if let Err(e) = m.ack().await {
                        warn!(stream = %name, error = %e, "indicator not acknowledged; it comes again");
                    }
                    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    if seq != 0 && !seen.lock().unwrap_or_else(|e| e.into_inner()).first(seq) {
                        return None;
                    }
                    Some(Message {
                        subject: m.subject.to_string(),
                        reply: None,
                        payload: m.payload.clone(),
                        seq,
                    })
                }
                Err(e) => {
                    warn!(stream = %name, error = %e, "indicator stream read failed; going on");
                    None
                }
            }
        }
    });
    Ok(Subscription::new(stream))
}

/// [`consume`] from the stream's next message on, whatever the durable
/// consumer `durable` had left (a detection worker: what it missed while
/// away, its partitions' new owners took).
pub async fn consume_from_now(
    client: &async_nats::Client,
    s: &IndicatorStream,
    durable: &str,
) -> Result<Subscription, BusError> {
    if let Ok(st) = context(client).get_stream(&s.name).await {
        // Absent is fine; any other failure shows in consume below.
        let _ = st.delete_consumer(durable).await;
    }
    consume(client, s, durable).await
}

/// Whether `v` may name a JetStream stream, consumer or KV bucket here:
/// 1-64 chars of `[A-Za-z0-9_-]`.
pub fn valid_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The stream sequences a consumer has handed over: every one up to
/// `floor`, and those above it in `above`.
#[derive(Debug, Default)]
struct Seen {
    floor: u64,
    above: std::collections::BTreeSet<u64>,
}

/// Most sequences kept above the floor: past this, the floor moves up (a
/// gap that old is a message the stream no longer has).
const MAX_ABOVE: usize = 1 << 20;

impl Seen {
    /// Whether `seq` is handed over for the first time (and notes it).
    fn first(&mut self, seq: u64) -> bool {
        if self.floor == 0 && self.above.is_empty() {
            // The first message: a consumer starts where it stood.
            self.floor = seq - 1;
        }
        if seq <= self.floor || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        while self.above.len() > MAX_ABOVE {
            if let Some(lowest) = self.above.pop_first() {
                self.floor = lowest;
            }
            while self.above.remove(&(self.floor + 1)) {
                self.floor += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn a_sequence_is_handed_over_once_even_redelivered_late() {
        let mut s = Seen::default();
        assert!(s.first(10));
        assert!(s.first(12), "11 lost in transit, 12 comes first");
        assert!(!s.first(12), "12 again");
        assert!(s.first(11), "11 redelivered late is new");
        assert!(!s.first(11) && !s.first(10));
        assert_eq!((s.floor, s.above.len()), (12, 0));
        assert!(s.first(13));
    }
}

/// The `[jetstream]` section of the agent's and the brain's
/// configuration: indicators go through a stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamConfig {
    /// Stream name.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Copies in the cluster (3 on a 3-node cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long indicators are kept, s.
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    /// (Brain only.) This brain's durable consumer: each brain of a group
    /// needs its own, kept across its restarts. Default: its `[ha]` holder,
    /// else `brain`.
    #[serde(default)]
    pub consumer: Option<String>,
}

fn default_stream() -> String {
    "SELFHEAL_INDICATORS".into()
}
const fn default_replicas() -> usize {
    1
}
const fn default_max_age_s() -> u64 {
    3_600
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            stream: default_stream(),
            replicas: default_replicas(),
            max_age_s: default_max_age_s(),
            consumer: None,
        }
    }
}

impl JetStreamConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let name = valid_name;
        if !name(&self.stream) {
            p.push("jetstream.stream: must be 1-64 chars of [A-Za-z0-9_-]".into());
        }
        if let Some(c) = &self.consumer
            && !name(c)
        {
            p.push("jetstream.consumer: must be 1-64 chars of [A-Za-z0-9_-]".into());
        }
        if !(1..=5).contains(&self.replicas) {
            p.push("jetstream.replicas: must be in 1..=5".into());
        }
        if !(60..=7 * 86_400).contains(&self.max_age_s) {
            p.push("jetstream.max_age_s: must be in 60..=604800".into());
        }
        p
    }

    /// The stream these settings describe, holding `subjects`.
    pub fn stream_of(&self, subjects: &crate::Subjects) -> IndicatorStream {
        IndicatorStream {
            name: self.stream.clone(),
            subjects: subjects.all_indicators(),
            replicas: self.replicas,
            max_age: Duration::from_secs(self.max_age_s),
        }
    }
}
