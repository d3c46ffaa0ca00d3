//! Ingest: subscribe to indicator batches, decode and validate each one
//! (a bad message is counted and dropped, never fatal), route samples to
//! shards by series hash, and advance the event-time watermark.

use std::{hash::BuildHasher, sync::Arc};

use selfheal_bus::{IndicatorBatch, Limits, SeriesKey, Subjects, Subscription, decode, wall_ms};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    detect::{Detected, model::ModelStage, shard::ShardBatch},
    stats::BrainStats,
};

/// Where accepted samples go.
pub struct Routes {
    /// The detector shards, by series hash.
    pub shards: Vec<mpsc::Sender<ShardBatch>>,
    /// The multivariate stage and where its anomalies go, when models
    /// are loaded.
    pub models: Option<(ModelStage, mpsc::Sender<Detected>)>,
    /// The last minutes of business indicators, for people's charts.
    pub recent: Arc<crate::recent::Recent>,
    /// Which series are taken (caps in all, per source, per service).
    pub admission: crate::admit::Admission,
}

/// Runs until `stop` fires or the subscription ends; the bus answers
/// batches sent as requests (acknowledgements).
pub async fn run(
    mut sub: Subscription,
    (bus, subjects): (selfheal_bus::Bus, Subjects),
    routes: Routes,
    watermark: watch::Sender<i64>,
    limits: Limits,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    let Routes {
        shards,
        mut models,
        recent,
        mut admission,
    } = routes;
    // A fixed hasher: a series lands on the same shard in every run.
    let hasher =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let n = shards.len().max(1);
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        acknowledge(&bus, &msg).await;
        let wm = *watermark.borrow();
        let now = clock_now(wm);
        let mut batch: IndicatorBatch = match decode(&msg.payload, &limits, now) {
            Ok(b) => b,
            Err(e) => {
                stats.reject_decode(e.kind());
                if let Some(held) = stats.reject_log.allow() {
                    warn!(subject = %msg.subject, reason = e.kind().reason(), error = %e, held_back = held, "indicator batch rejected");
                }
                stats.progress.notify_waiters();
                continue;
            }
        };
        if msg.subject != subjects.indicators(batch.layer, &batch.idc, &batch.service) {
            stats.reject("subject_mismatch");
            if let Some(held) = stats.reject_log.allow() {
                warn!(subject = %msg.subject, held_back = held, "indicator batch on the wrong subject rejected");
            }
            stats.progress.notify_waiters();
            continue;
        }
        BrainStats::bump(&stats.batches);
        stats.samples.fetch_add(
            batch.samples.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let each = batch.samples.len() / n + 1;
        let mut routed: Vec<ShardBatch> = (0..n)
            .map(|_| ShardBatch {
                samples: Vec::with_capacity(each),
                mark: 0,
            })
            .collect();
        let mut max_ts = wm;
        let mut refused = 0u64;
        for s in std::mem::take(&mut batch.samples) {
            let (key, ts, value) = SeriesKey::take(&batch, s);
            let id = hasher.hash_one(&key);
            max_ts = max_ts.max(ts);
            if admission
                .admit(id, &batch.source, &batch.service, ts)
                .is_err()
            {
                refused += 1;
                continue;
            }
            if let Some((stage, tx)) = models.as_mut()
                && let Some(ev) = stage.observe(&batch.service, &key.metric, ts, value)
            {
                if ev.kind == crate::detect::AnomalyKind::Start {
                    BrainStats::bump(&stats.anomalies);
                }
                BrainStats::bump(&stats.transitions);
                if tx.send(Detected::Anomaly(Box::new(ev))).await.is_err() {
                    return;
                }
            }
            routed[(id % n as u64) as usize]
                .samples
                .push((key, ts, value));
        }
        recent.observe_all(
            routed
                .iter()
                .flat_map(|b| b.samples.iter().map(|(k, ts, v)| (k, *ts, *v))),
        );
        if refused > 0
            && let Some(total) = stats.refuse_series(&batch.source, refused)
        {
            raise_series_cap(&bus, &subjects, &batch.source, total, max_ts).await;
        }
        admission.sweep(max_ts);
        // Every shard hears when the watermark moves, even one with no
        // sample of this batch, so the engine knows how far all have come.
        let moved = max_ts > wm;
        for (tx, mut b) in shards.iter().zip(routed) {
            if b.samples.is_empty() && !moved {
                continue;
            }
            b.mark = max_ts;
            if tx.send(b).await.is_err() {
                return;
            }
        }
        stats.progress.notify_waiters();
        watermark.send_if_modified(|w| {
            let moved = max_ts > *w;
            *w = (*w).max(max_ts);
            moved
        });
    }
}

/// The context subscriptions: changes, hot keys, announcements.
pub struct ContextSubs {
    /// `<prefix>.change.*`.
    pub changes: Subscription,
    /// `<prefix>.hot.*`.
    pub hot: Subscription,
    /// `<prefix>.announce.*`.
    pub announce: Subscription,
}

/// Decodes change events, hotspot reports and announcements (each rejected
/// one counted) and hands them to the engine, until `stop` fires.
pub async fn run_context(
    subs: ContextSubs,
    bus: selfheal_bus::Bus,
    tx: mpsc::Sender<crate::context::ContextMsg>,
    watermark: watch::Receiver<i64>,
    limits: Limits,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    use crate::context::ContextMsg;
    let ContextSubs {
        mut changes,
        mut hot,
        mut announce,
    } = subs;
    loop {
        let (msg, kind) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            m = changes.next() => match m { Some(m) => (m, 0), None => break },
            m = hot.next() => match m { Some(m) => (m, 1), None => break },
            m = announce.next() => match m { Some(m) => (m, 2), None => break },
        };
        acknowledge(&bus, &msg).await;
        let now = clock_now(*watermark.borrow());
        let decoded = match kind {
            0 => decode::<selfheal_bus::ChangeEvent>(&msg.payload, &limits, now)
                .map(ContextMsg::Change),
            1 => decode::<selfheal_bus::HotspotReport>(&msg.payload, &limits, now)
                .map(ContextMsg::Hot),
            _ => decode::<selfheal_bus::Announcement>(&msg.payload, &limits, now)
                .map(ContextMsg::Announce),
        };
        BrainStats::bump(&stats.contexts_seen);
        match decoded {
            Ok(m) => {
                BrainStats::bump(&stats.contexts);
                if tx.send(m).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                stats.reject_decode(e.kind());
                if let Some(held) = stats.reject_log.allow() {
                    warn!(subject = %msg.subject, reason = e.kind().reason(), error = %e, held_back = held, "context message rejected");
                }
            }
        }
    }
}

/// The clock context messages are checked against: the brain's event-time
/// watermark once indicators have moved it, the wall clock before.
pub(crate) fn clock_now(watermark: i64) -> i64 {
    if watermark > 0 { watermark } else { wall_ms() }
}

/// Answers a message sent as a request — a sender delivering what it kept
/// through an outage, which keeps it until the brain confirms — with an
/// empty reply: the brain has it (taken or, if bad, counted and dropped:
/// resending would not make it good).
async fn acknowledge(bus: &selfheal_bus::Bus, msg: &selfheal_bus::Message) {
    if let Some(reply) = &msg.reply
        && let Err(e) = bus.publish(reply, bytes::Bytes::new()).await
    {
        tracing::debug!(error = %e, "acknowledgement not sent; the sender will send again");
    }
}

/// A finding of its own: a source has new series refused over a cap (a
/// label taking a new value per request, a misconfigured exporter). Logged
/// and published on `<prefix>.finding.series_cap` for whoever watches the
/// brain's inputs; counted per source in `/metrics`.
async fn raise_series_cap(
    bus: &selfheal_bus::Bus,
    subjects: &Subjects,
    source: &str,
    refused: u64,
    ts: i64,
) {
    warn!(
        source,
        refused, "a source is over its series cap: its new series are refused (finding)"
    );
    let finding = serde_json::json!({
        "kind": "series_cap",
        "source": source,
        "refused": refused,
        "ts": ts,
        "detail": format!("{source} keeps creating new series; {refused} samples of new series refused so far"),
    });
    let subject = format!("{}.finding.series_cap", subjects.prefix());
    if let Err(e) = bus.publish(&subject, finding.to_string().into()).await {
        tracing::debug!(error = %e, "finding not published");
    }
}
