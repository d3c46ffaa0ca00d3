//! A shard task: owns the detectors of the series hashed to it (no shared
//! locks on the hot path) and emits anomaly transitions.

use std::sync::Arc;

use selfheal_bus::SeriesKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Detector, DetectorConfig, Direction, MetricClass, MetricClasses, Transition};
use crate::stats::BrainStats;

/// Which transition an [`AnomalyEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyKind {
    /// The series became anomalous.
    Start,
    /// The series is back to normal.
    End,
}

/// An anomaly transition of one series.
#[derive(Clone, Debug)]
pub struct AnomalyEvent {
    /// The series.
    pub key: SeriesKey,
    /// Time of the sample that caused the transition.
    pub ts: i64,
    /// Start or end.
    pub kind: AnomalyKind,
    /// First bad sample (for a start), or `ts` (for an end).
    pub onset: i64,
    /// The sample's value.
    pub value: f64,
    /// The baseline it is compared with.
    pub baseline: f64,
    /// Score in [0,1] (0 for an end).
    pub score: f64,
    /// The series' bad direction.
    pub direction: Direction,
    /// What the series measures (`errors`, `latency`, `cpu`...).
    pub class: std::sync::Arc<str>,
}

/// Samples for one shard, and the event-time watermark ingest had reached
/// once it routed them.
#[derive(Clone, Debug, Default)]
pub struct ShardBatch {
    /// (series number, its key, ts, value); see [`crate::admit`].
    pub samples: Vec<(u64, Arc<SeriesKey>, i64, f64)>,
    /// The watermark after this batch, ms.
    pub mark: i64,
    /// The indicator stream's sequence of the message the samples came
    /// in, when read from one (a detection worker's progress), else 0.
    pub seq: u64,
    /// A warm-up: the detectors learn from these samples (older than any
    /// seen, skipped) and hold their transitions back; the next batch
    /// that is not quiet first sends, per series, the last one held,
    /// which is the series' state at the end of the warm-up.
    pub quiet: bool,
}

/// What detection hands the engine: anomaly transitions, and each shard's
/// progress in event time. Once every shard has passed a time, every
/// anomaly from samples up to it has arrived, so the engine can take them
/// in a fixed order whatever the shards' interleaving.
#[derive(Clone, Debug)]
pub enum Detected {
    /// An anomaly transition.
    Anomaly(Box<AnomalyEvent>),
    /// Shard `shard` has handled every sample routed before watermark `ts`.
    Mark {
        /// The shard's index.
        shard: usize,
        /// The watermark, ms.
        ts: i64,
        /// The indicator stream's sequence handled up to (see
        /// [`ShardBatch::seq`]).
        seq: u64,
    },
}

/// Series one shard tracks at most; new series beyond it are counted and
/// ignored, so a flood of label values cannot exhaust memory.
pub const MAX_SERIES_PER_SHARD: usize = 200_000;

/// Runs shard `index` until its input closes or `stop` fires.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    index: usize,
    mut rx: mpsc::Receiver<ShardBatch>,
    tx: mpsc::Sender<Detected>,
    (cfg, idle_ms): (DetectorConfig, i64),
    classes: Arc<MetricClasses>,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    // By series number: a cheap hash, no key comparison.
    let mut series: hashbrown::HashMap<u64, (Detector, MetricClass, i64, Arc<SeriesKey>)> =
        hashbrown::HashMap::new();
    let mut swept_at = i64::MIN;
    let mut held: std::collections::BTreeMap<SeriesKey, AnomalyEvent> = Default::default();
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            b = rx.recv() => match b { Some(b) => b, None => break },
        };
        let n = batch.samples.len() as u64;
        if !batch.quiet {
            for (_, ev) in std::mem::take(&mut held) {
                BrainStats::bump(&stats.transitions);
                if tx.send(Detected::Anomaly(Box::new(ev))).await.is_err() {
                    return;
                }
            }
        }
        for (id, key, ts, value) in batch.samples {
            let (det, class, last, key) = match series.get_mut(&id) {
                Some(d) => d,
                None => {
                    if series.len() >= MAX_SERIES_PER_SHARD {
                        BrainStats::bump(&stats.series_refused);
                        continue;
                    }
                    let class = classes.classify(&key.metric);
                    series
                        .entry(id)
                        .or_insert_with(|| (Detector::new(class.direction), class, i64::MIN, key))
                }
            };
            if batch.quiet && ts <= *last {
                continue;
            }
            *last = (*last).max(ts);
            let (direction, class) = (class.direction, class.name.clone());
            let ev = match det.update(ts, value, &cfg) {
                None => continue,
                Some(Transition::Start {
                    onset,
                    baseline,
                    score,
                }) => {
                    if !batch.quiet {
                        BrainStats::bump(&stats.anomalies);
                    }
                    AnomalyEvent {
                        key: SeriesKey::clone(key),
                        ts,
                        kind: AnomalyKind::Start,
                        onset,
                        value,
                        baseline,
                        score,
                        direction,
                        class,
                    }
                }
                Some(Transition::End { baseline }) => AnomalyEvent {
                    key: SeriesKey::clone(key),
                    ts,
                    kind: AnomalyKind::End,
                    onset: ts,
                    value,
                    baseline,
                    score: 0.0,
                    direction,
                    class,
                },
            };
            if batch.quiet {
                held.insert(ev.key.clone(), ev);
                continue;
            }
            BrainStats::bump(&stats.transitions);
            if tx.send(Detected::Anomaly(Box::new(ev))).await.is_err() {
                warn!("engine gone, shard stopping");
                return;
            }
        }
        // Series idle for the idle time are forgotten (ingest forgets them
        // too, and gives their slots back); a quarter of it between sweeps.
        if swept_at == i64::MIN || batch.mark >= swept_at + idle_ms / 4 {
            swept_at = batch.mark;
            series.retain(|_, (_, _, last, _)| *last >= batch.mark - idle_ms);
        }
        stats
            .samples_detected
            .fetch_add(n, std::sync::atomic::Ordering::Release);
        if tx
            .send(Detected::Mark {
                shard: index,
                ts: batch.mark,
                seq: batch.seq,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
