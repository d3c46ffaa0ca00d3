//! High availability over NATS JetStream: a leadership lease held in a KV
//! bucket, and a replicated KV bucket for durable state.
//!
//! The lease is a key in a bucket whose entries live `ttl`: the holder
//! renews it every third of that with a compare-and-set on the revision it
//! last wrote, and everyone else tries to create it, which succeeds only
//! once it is gone (expired, or deleted by a holder stepping down). A holder
//! counts itself leader only until `ttl` minus a margin after the start of
//! its last successful renewal: the server wrote the key after that instant,
//! so the key outlives the holder's belief and two holders never both
//! believe they lead.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::transport::BusError;

/// Durable key-value state shared by the processes that may take over from
/// each other.
#[async_trait]
pub trait Replica: Send + Sync + 'static {
    /// Stores `value` under `key`; returns once the bus has it durably.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError>;
    /// Removes `key`.
    async fn delete(&self, key: &str) -> Result<(), BusError>;
    /// Every live key starting with `prefix`, with its value, in key order.
    async fn entries(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BusError>;
}

/// Where a process stands: leading in a term, or standing by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Someone else leads, or nobody yet.
    Standby,
    /// This process leads; the number grows with each term it wins.
    Leader(u64),
}

/// A leadership lease, as this process sees it.
#[derive(Debug)]
pub struct Lease {
    /// Who this process is (written as the key's value).
    pub holder: String,
    /// How long the key lives without renewal.
    pub ttl: Duration,
    start: Instant,
    /// Until when (ms since `start`) this process may act as leader.
    until_ms: AtomicI64,
    standing: watch::Sender<Standing>,
    /// Set by a leader that cannot lead after all: the lease is given up.
    resign: std::sync::atomic::AtomicBool,
}

/// Part of the ttl not counted on: renewal round trips, timer slack.
const MARGIN: Duration = Duration::from_millis(500);

impl Lease {
    /// A lease not held yet.
    pub fn new(holder: impl Into<String>, ttl: Duration) -> Arc<Self> {
        Arc::new(Lease {
            holder: holder.into(),
            ttl,
            start: Instant::now(),
            until_ms: AtomicI64::new(i64::MIN),
            standing: watch::channel(Standing::Standby).0,
            resign: Default::default(),
        })
    }

    /// A lease that is always held: a single process, nobody to take over.
    pub fn sole(holder: impl Into<String>) -> Arc<Self> {
        let l = Lease::new(holder, Duration::MAX);
        l.until_ms.store(i64::MAX, Ordering::SeqCst);
        l.standing.send_replace(Standing::Leader(1));
        l
    }

    fn elapsed_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// Whether this process may act as leader now.
    pub fn held(&self) -> bool {
        self.elapsed_ms() < self.until_ms.load(Ordering::SeqCst)
    }

    /// Where this process stands, and each change of it.
    pub fn watch(&self) -> watch::Receiver<Standing> {
        self.standing.subscribe()
    }

    /// Renewed at `at`: held until `at + ttl - margin`.
    fn renewed(&self, at: Instant) {
        let keep = self.ttl.saturating_sub(MARGIN);
        let until = at.duration_since(self.start) + keep;
        self.until_ms
            .store(until.as_millis() as i64, Ordering::SeqCst);
    }

    /// Gives the lease up now (a leader that finds it cannot lead): it
    /// stops counting as held at once, and the key is deleted at the next
    /// renewal so that another process takes over; this one waits a lease
    /// time before trying again.
    pub fn give_back(&self) {
        self.resign.store(true, Ordering::SeqCst);
        self.lost();
    }

    fn lost(&self) {
        self.until_ms.store(i64::MIN, Ordering::SeqCst);
        self.standing.send_replace(Standing::Standby);
    }
}

/// Keeps trying to hold `lease` as `key` in `kv` until `stop` fires, then
/// gives it up (the key deleted, so a standby takes over at once).
pub async fn hold(kv: kv::Store, key: String, lease: Arc<Lease>, stop: CancellationToken) {
    let every = lease.ttl / 3;
    let mut revision: Option<u64> = None;
    let mut term = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let at = Instant::now();
        let value = Bytes::from(lease.holder.clone());
        if lease.resign.swap(false, Ordering::SeqCst) {
            if revision.take().is_some()
                && let Err(e) = kv.delete(&key).await
            {
                warn!(key, error = %e, "lease not given back; it lapses on its own");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(lease.ttl) => {}
            }
            continue;
        }
        match revision {
            Some(r) => match kv.update(&key, value, r).await {
                Ok(r) => {
                    revision = Some(r);
                    lease.renewed(at);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    warn!(key, "leadership lost: someone else holds the lease");
                    revision = None;
                    lease.lost();
                }
                Err(e) => {
                    // Not renewed: it lapses on its own once its time is up.
                    warn!(key, error = %e, "lease renewal failed");
                    if !lease.held() {
                        warn!(key, "leadership lost: the lease lapsed");
                        revision = None;
                        lease.lost();
                    }
                }
            },
            None => match kv.create(&key, value).await {
                Ok(r) => {
                    revision = Some(r);
                    term += 1;
                    lease.renewed(at);
                    info!(key, holder = %lease.holder, term, "leadership won");
                    lease.standing.send_replace(Standing::Leader(term));
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => warn!(key, error = %e, "lease not taken"),
            },
        }
    }
    if revision.is_some() {
        lease.lost();
        if let Err(e) = kv.delete(&key).await {
            warn!(key, error = %e, "lease not given up; it lapses on its own");
        }
    }
}

/// The replicated state as a JetStream KV bucket.
#[derive(Clone)]
pub struct KvReplica {
    kv: kv::Store,
}

#[async_trait]
impl Replica for KvReplica {
    async fn put(&self, key: &str, value: Bytes) -> Result<(), BusError> {
        self.kv
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| BusError::Other(format!("replica put {key}: {e}")))
    }

    async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.kv
            .delete(key)
            .await
            .map_err(|e| BusError::Other(format!("replica delete {key}: {e}")))
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BusError> {
        let err = |e: &dyn std::fmt::Display| BusError::Other(format!("replica read: {e}"));
        let mut keys: Vec<String> = Vec::new();
        let mut stream = match self.kv.keys().await {
            Ok(s) => s,
            Err(e) => return Err(err(&e)),
        };
        while let Some(k) = stream.next().await {
            let k = k.map_err(|e| err(&e))?;
            if k.starts_with(prefix) {
                keys.push(k);
            }
        }
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = self.kv.get(k.as_str()).await.map_err(|e| err(&e))? {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// Longest wait for one JetStream request (a KV write, read or lease
/// renewal).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How the lease and the replicated state are kept.
#[derive(Clone, Debug)]
pub struct HaBuckets {
    /// The lease bucket (its entries live `ttl`).
    pub lease_bucket: String,
    /// The state bucket.
    pub state_bucket: String,
    /// Copies of each bucket in the cluster (1 on a single server, 3 on a
    /// 3-node cluster).
    pub replicas: usize,
    /// The lease's time to live.
    pub ttl: Duration,
    /// How long the state's entries are kept without a new write.
    pub state_max_age: Duration,
}

/// Opens (creating when missing) the lease and state buckets. Returns the
/// lease bucket and the replica.
pub async fn open(
    client: &async_nats::Client,
    b: &HaBuckets,
) -> Result<(kv::Store, KvReplica), BusError> {
    let mut js = jetstream::new(client.clone());
    // Every request of the lease and the state answers or fails within a
    // bound (the client itself waits forever): a cluster without quorum
    // must not stall the engine.
    js.set_timeout(REQUEST_TIMEOUT);
    let bucket = |name: &str, max_age: Duration| kv::Config {
        bucket: name.to_string(),
        history: 1,
        max_age,
        num_replicas: b.replicas.max(1),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let err = |name: &str, e: &dyn std::fmt::Display| {
        BusError::Other(format!("JetStream KV bucket {name}: {e}"))
    };
    let lease = js
        .create_or_update_key_value(bucket(&b.lease_bucket, b.ttl))
        .await
        .map_err(|e| err(&b.lease_bucket, &e))?;
    let state = js
        .create_or_update_key_value(bucket(&b.state_bucket, b.state_max_age))
        .await
        .map_err(|e| err(&b.state_bucket, &e))?;
    Ok((lease, KvReplica { kv: state }))
}
