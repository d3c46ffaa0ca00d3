//! Detection in worker processes (`[detection]`): a worker's shards hand
//! their transitions to [`publish`], which sends them with the worker's
//! progress into the detection stream; at an engine, [`receive`] turns
//! the workers' batches back into what local shards would have handed
//! over.
//!
//! Progress is counted in sequences of the indicator stream, which every
//! worker and engine reads in the same order: a worker says "every
//! indicator of my partitions up to sequence S is looked at". The engine
//! reads the indicator stream too (for its recent window) and knows the
//! watermark at each sequence, so once every partition is covered up to S
//! its event time moves to the watermark at S, as it would with local
//! shards. A dead worker's partitions hold event time back until their
//! new owner reports.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use selfheal_bus::{AnomalyReport, Bus, DetectedBatch, Limits, Subscription, WIRE_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Direction,
    shard::{AnomalyEvent, AnomalyKind, Detected},
};
use crate::stats::BrainStats;

/// How often a worker publishes what it has (anomalies, progress).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Most anomalies in one published batch (well under the message size
/// bound).
const MAX_PER_BATCH: usize = 1_000;

/// Where a worker publishes.
pub struct Outlet {
    /// The bus (with JetStream: each batch acknowledged by the stream).
    pub bus: Bus,
    /// `<prefix>.det.<worker>`.
    pub subject: String,
    /// The worker's name.
    pub worker: String,
    /// The partitions it owns, as membership changes.
    pub owned: watch::Receiver<Arc<Vec<u16>>>,
}

fn report(ev: &AnomalyEvent) -> AnomalyReport {
    AnomalyReport {
        key: ev.key.clone(),
        ts: ev.ts,
        start: ev.kind == AnomalyKind::Start,
        onset: ev.onset,
        value: ev.value,
        baseline: ev.baseline,
        score: ev.score,
        direction: match ev.direction {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        }
        .into(),
        class: ev.class.to_string(),
        novel: ev.novel,
    }
}

fn event(r: AnomalyReport) -> AnomalyEvent {
    AnomalyEvent {
        key: r.key,
        ts: r.ts,
        kind: if r.start {
            AnomalyKind::Start
        } else {
            AnomalyKind::End
        },
        onset: r.onset,
        value: r.value,
        baseline: r.baseline,
        score: r.score,
        direction: match r.direction.as_str() {
            "up" => Direction::Up,
            "down" => Direction::Down,
            _ => Direction::Both,
        },
        class: r.class.into(),
        novel: r.novel,
        after_change: None,
    }
}

/// A worker's side: gathers its `shards` shards' transitions and marks and
/// publishes them every [`PUBLISH_EVERY`] until `stop` fires. A batch the
/// stream does not acknowledge is kept and sent again under the same id
/// (stored once), so no finding is lost while NATS is away.
pub async fn publish(
    mut rx: mpsc::Receiver<Detected>,
    shards: usize,
    mut out: Outlet,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    let mut marks = vec![0u64; shards.max(1)];
    let mut pending: VecDeque<AnomalyEvent> = VecDeque::new();
    let mut sent_upto = 0u64;
    let mut unsent: Option<(bytes::Bytes, String, u64)> = None;
    // Ids unique across this worker's lives (the stream's duplicate
    // window outlasts a restart).
    let life = selfheal_bus::wall_ms();
    let mut counter = 0u64;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled(), if !stopping => stopping = true,
            d = rx.recv() => match d {
                Some(Detected::Anomaly(ev)) => {
                    if ev.kind == AnomalyKind::Start {
                        info!(series = %ev.key, score = ev.score, "anomaly found");
                    }
                    pending.push_back(*ev);
                    continue;
                }
                Some(Detected::Mark { shard, seq, .. }) => {
                    if let Some(m) = marks.get_mut(shard) {
                        *m = (*m).max(seq);
                    }
                    continue;
                }
                None => stopping = true,
            },
            _ = tick.tick() => {}
        }
        // Send what is due: the kept batch first, then new ones.
        loop {
            if unsent.is_none() {
                let upto = marks.iter().copied().min().unwrap_or(0);
                if pending.is_empty() && upto <= sent_upto {
                    break;
                }
                let take = pending.len().min(MAX_PER_BATCH);
                let anomalies: Vec<AnomalyReport> =
                    pending.drain(..take).map(|e| report(&e)).collect();
                // Progress is claimed with the last of the anomalies
                // before it.
                let claim = if pending.is_empty() { upto } else { sent_upto };
                let batch = DetectedBatch {
                    v: WIRE_VERSION,
                    worker: out.worker.clone(),
                    partitions: out.owned.borrow_and_update().to_vec(),
                    upto: claim,
                    anomalies,
                };
                let bytes = match selfheal_bus::encode(&batch) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "detection batch not encodable; dropped");
                        continue;
                    }
                };
                counter += 1;
                unsent = Some((bytes, format!("{}-{life}-{counter}", out.worker), claim));
            }
            let Some((bytes, id, claim)) = unsent.as_ref() else {
                break;
            };
            match out
                .bus
                .publish_durable(&out.subject, bytes.clone(), id)
                .await
            {
                Ok(()) => {
                    BrainStats::bump(&stats.detected_published);
                    sent_upto = sent_upto.max(*claim);
                    unsent = None;
                }
                Err(e) => {
                    BrainStats::bump(&stats.detected_publish_failures);
                    if let Some(held) = stats.reject_log.allow() {
                        warn!(error = %e, held_back = held, "detection batch not stored yet; kept and sent again");
                    }
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Most (sequence, watermark) steps an engine remembers while no worker
/// reports; past it the oldest go (event time then waits for the next).
const MAX_STEPS: usize = 1 << 20;

/// The engine's side: reads the workers' batches from `detected` and the
/// engine's own ingest progress from `progress` (stream sequence,
/// watermark), and hands the engine anomalies and marks as one shard
/// (index 0) would, until `stop` fires.
pub async fn receive(
    mut detected: Subscription,
    mut progress: mpsc::Receiver<(u64, i64)>,
    tx: mpsc::Sender<Detected>,
    partitions: u16,
    limits: Limits,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    let mut covered = vec![0u64; partitions.max(1) as usize];
    let mut steps: VecDeque<(u64, i64)> = VecDeque::new();
    let (mut mark, mut mark_seq) = (i64::MIN, 0u64);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = progress.recv() => match p {
                Some((seq, wm)) => {
                    if steps.back().is_none_or(|b| b.1 < wm && b.0 < seq) {
                        steps.push_back((seq, wm));
                        if steps.len() > MAX_STEPS {
                            steps.pop_front();
                        }
                    }
                }
                None => return,
            },
            m = detected.next() => {
                let Some(m) = m else { return };
                let b: DetectedBatch = match selfheal_bus::decode(&m.payload, &limits, selfheal_bus::wall_ms()) {
                    Ok(b) => b,
                    Err(e) => {
                        stats.reject_decode(e.kind());
                        if let Some(held) = stats.reject_log.allow() {
                            warn!(subject = %m.subject, reason = e.kind().reason(), error = %e, held_back = held, "detection batch rejected");
                        }
                        continue;
                    }
                };
                for a in b.anomalies {
                    BrainStats::bump(&stats.remote_anomalies);
                    if a.start {
                        BrainStats::bump(&stats.anomalies);
                    }
                    BrainStats::bump(&stats.transitions);
                    if tx.send(Detected::Anomaly(Box::new(event(a)))).await.is_err() {
                        return;
                    }
                }
                for p in b.partitions {
                    if let Some(c) = covered.get_mut(p as usize) {
                        *c = (*c).max(b.upto);
                    } else if let Some(held) = stats.reject_log.allow() {
                        warn!(worker = %b.worker, partition = p, partitions, held_back = held, "a worker reports a partition this engine does not have: detection.partitions differ");
                    }
                }
            }
        }
        let low = covered.iter().copied().min().unwrap_or(0);
        let mut to = mark;
        while steps.front().is_some_and(|s| s.0 <= low) {
            if let Some((_, wm)) = steps.pop_front() {
                to = to.max(wm);
            }
        }
        if to > mark || low > mark_seq {
            mark = mark.max(to);
            mark_seq = low;
            if mark > i64::MIN
                && tx
                    .send(Detected::Mark {
                        shard: 0,
                        ts: mark,
                        seq: low,
                    })
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn event_time_moves_only_as_far_as_every_partition_is_covered() {
        let bus = Arc::new(selfheal_bus::LocalTransport::default());
        let sub = selfheal_bus::Transport::subscribe(&*bus, "selfheal.det.*")
            .await
            .unwrap();
        let (ptx, prx) = mpsc::channel(16);
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let limits = crate::BrainConfig::default().limits();
        let task = tokio::spawn(receive(
            sub,
            prx,
            tx,
            2,
            limits,
            Arc::default(),
            stop.clone(),
        ));
        for (seq, wm) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            ptx.send((seq, wm)).await.unwrap();
        }
        let send = |worker: &str, partitions: Vec<u16>, upto: u64| {
            let b = DetectedBatch {
                v: WIRE_VERSION,
                worker: worker.into(),
                partitions,
                upto,
                anomalies: vec![],
            };
            let bus = bus.clone();
            let subject = format!("selfheal.det.{worker}");
            async move {
                selfheal_bus::Transport::publish(&*bus, &subject, selfheal_bus::encode(&b).unwrap())
                    .await
                    .unwrap()
            }
        };
        send("a", vec![0], 3).await;
        // Partition 1 is not covered: no mark yet.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            rx.try_recv().is_err(),
            "event time moved with a partition uncovered"
        );
        send("b", vec![1], 2).await;
        match rx.recv().await {
            Some(Detected::Mark { ts, seq, .. }) => assert_eq!((ts, seq), (2_000, 2)),
            other => panic!("{other:?}"),
        }
        send("b", vec![1], 3).await;
        match rx.recv().await {
            Some(Detected::Mark { ts, .. }) => assert_eq!(ts, 3_000),
            other => panic!("{other:?}"),
        }
        stop.cancel();
        task.await.unwrap();
    }
}
