//! Detection partitions: which detection worker detects which series.
//!
//! A series belongs to the partition of its service (a fixed hash of the
//! name, so every process and every version agrees). Each partition goes
//! to one live worker by rendezvous hashing over the members listed in a
//! JetStream KV bucket: every worker computes the same owner from the same
//! list, and when a worker leaves only its partitions move.
//!
//! A worker lists itself under `detect.<worker>` and renews the entry
//! every third of the bucket's time to live; a worker that dies drops out
//! of the list when its entry lapses, one that stops deletes it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    stream::IndicatorStream,
    transport::{BusError, Message, Subscription},
};

/// Partitions unless configured otherwise: far more than workers, so that
/// a leaving worker's share spreads over the others.
pub const DEFAULT_PARTITIONS: u16 = 64;

/// FNV-1a over the parts, with a separator between them: fixed, unlike
/// the standard library's hasher, so that processes of different builds
/// agree.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // A final mix, so that near names spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The partition of `service` among `partitions`.
pub fn of_service(service: &str, partitions: u16) -> u16 {
    (fnv(&[service.as_bytes()]) % u64::from(partitions.max(1))) as u16
}

/// The service of an indicator subject (`<p>.ind.<layer>.<idc>.<service>`):
/// its last token. The batch inside is checked against its subject when
/// decoded.
pub fn service_of(subject: &str) -> Option<&str> {
    subject.rsplit('.').next().filter(|s| !s.is_empty())
}

/// The partition of the service of indicator subject `subject`.
pub fn of_subject(subject: &str, partitions: u16) -> Option<u16> {
    service_of(subject).map(|s| of_service(s, partitions))
}

/// The live member that detects `partition`, by rendezvous hashing.
pub fn owner(partition: u16, members: &[String]) -> Option<&str> {
    let p = partition.to_le_bytes();
    members
        .iter()
        .max_by_key(|m| (fnv(&[m.as_bytes(), &p]), m.as_str()))
        .map(String::as_str)
}

/// The partitions `me` detects while `members` are live.
pub fn owned(me: &str, members: &[String], partitions: u16) -> Vec<u16> {
    (0..partitions.max(1))
        .filter(|p| owner(*p, members) == Some(me))
        .collect()
}

/// The membership key of worker `name`.
fn member_key(name: &str) -> String {
    format!("detect.{name}")
}

/// Opens (creating when missing) the membership bucket, whose entries
/// live `ttl`.
pub async fn open_members(
    client: &async_nats::Client,
    bucket: &str,
    replicas: usize,
    ttl: Duration,
) -> Result<kv::Store, BusError> {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(crate::ha::REQUEST_TIMEOUT);
    js.create_or_update_key_value(kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas.max(1),
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::Other(format!("JetStream KV bucket {bucket}: {e}")))
}

/// Keeps `name` listed in `kv` (renewed every third of `ttl`) until `stop`
/// fires, then deletes its entry so that its partitions move at once.
pub async fn heartbeat(kv: kv::Store, name: String, ttl: Duration, stop: CancellationToken) {
    let key = member_key(&name);
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = kv.put(&key, name.clone().into()).await {
            warn!(key, error = %e, "membership not renewed; it lapses unless the next renewal comes in time");
        }
    }
    if let Err(e) = kv.delete(&key).await {
        warn!(key, error = %e, "membership not given up; it lapses on its own");
    }
}

/// The live workers, sorted.
pub async fn members(kv: &kv::Store) -> Result<Vec<String>, BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Other(format!("membership read: {e}"));
    let mut keys = kv.keys().await.map_err(|e| err(&e))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        if let Some(name) = k.map_err(|e| err(&e))?.strip_prefix("detect.") {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Follows the membership in `kv` every `every` until `stop` fires,
/// keeping in `tx` the partitions `me` owns among `partitions`. While the
/// list cannot be read, the last share is kept.
pub async fn follow(
    kv: kv::Store,
    me: String,
    partitions: u16,
    every: Duration,
    tx: tokio::sync::watch::Sender<std::sync::Arc<Vec<u16>>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<String>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut live = match members(&kv).await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "membership not read; the partitions stay as they are");
                continue;
            }
        };
        // This worker counts itself in before its own entry shows.
        if !live.contains(&me) {
            live.push(me.clone());
            live.sort();
        }
        if last.as_ref() == Some(&live) {
            continue;
        }
        let mine = owned(&me, &live, partitions);
        tracing::info!(worker = %me, members = ?live, owned = mine.len(), "partitions assigned");
        tx.send_replace(std::sync::Arc::new(mine));
        last = Some(live);
    }
}

/// Longest wait for the next message of a replay before it counts as
/// done (the stream had less than asked for).
const REPLAY_IDLE: Duration = Duration::from_secs(2);

/// The messages of stream `s` stored since `since_ms` (wall clock, ms
/// since the epoch) up to sequence `until` included, in order, for a
/// worker to warm its detectors up on partitions it has just been given.
/// Ends at `until`, or when nothing more comes for a while.
pub async fn replay(
    client: &async_nats::Client,
    s: &IndicatorStream,
    since_ms: i64,
    until: u64,
) -> Result<Subscription, BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Other(format!("replay of {}: {e}", s.name));
    let mut js = jetstream::new(client.clone());
    js.set_timeout(crate::ha::REQUEST_TIMEOUT);
    let st = js.get_stream(&s.name).await.map_err(|e| err(&e))?;
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
            .map_err(|e| err(&e))?;
    let c = st
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    let messages = c.messages().await.map_err(|e| err(&e))?;
    let stream = futures::stream::unfold(Some(messages), move |state| async move {
        let mut messages = state?;
        let m = match tokio::time::timeout(REPLAY_IDLE, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                warn!(error = %e, "replay read failed; the warm-up stops here");
                return None;
            }
            Ok(None) | Err(_) => return None,
        };
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        if seq > until {
            return None;
        }
        let msg = Message {
            subject: m.subject.to_string(),
            reply: None,
            payload: m.payload.clone(),
            seq,
        };
        Some((msg, (seq < until).then_some(messages)))
    });
    Ok(Subscription::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}")).collect()
    }

    #[test]
    fn every_partition_has_one_owner_and_the_share_is_even() {
        let m = names(4);
        let mut count = std::collections::BTreeMap::new();
        for p in 0..DEFAULT_PARTITIONS {
            *count.entry(owner(p, &m).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(count.values().sum::<i32>(), 64);
        assert!(count.values().all(|c| (8..=24).contains(c)), "{count:?}");
        let shares: usize = m.iter().map(|w| owned(w, &m, 64).len()).sum();
        assert_eq!(shares, 64, "each partition on exactly one worker");
    }

    #[test]
    fn a_leaving_worker_moves_only_its_own_partitions() {
        let all = names(3);
        let left: Vec<String> = all.iter().filter(|w| *w != "worker-1").cloned().collect();
        for p in 0..DEFAULT_PARTITIONS {
            let before = owner(p, &all).unwrap();
            let after = owner(p, &left).unwrap();
            if before != "worker-1" {
                assert_eq!(
                    before, after,
                    "partition {p} moved though its worker stayed"
                );
            } else {
                assert_ne!(after, "worker-1");
            }
        }
        assert_eq!(owner(3, &[]), None);
    }

    #[test]
    fn a_service_has_a_fixed_partition() {
        // Fixed across builds: a changed hash would split a rolling upgrade.
        let pinned = [("channel-router", 31), ("cashier", 35), ("bank-a", 36)];
        for (s, p) in pinned {
            assert_eq!(of_service(s, 64), p, "{s}");
        }
        let spread: std::collections::BTreeSet<u16> = (0..200)
            .map(|i| of_service(&format!("svc-{i}"), 64))
            .collect();
        assert!(spread.len() > 50, "{}", spread.len());
        assert_eq!(service_of("selfheal.ind.app.idc1.cashier"), Some("cashier"));
        assert_eq!(service_of("selfheal.ind.app.idc1."), None);
    }
}
