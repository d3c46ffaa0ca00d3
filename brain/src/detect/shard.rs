//! A shard task: owns the detectors of the series hashed to it (no shared
//! locks on the hot path) and emits anomaly transitions.

use std::sync::Arc;

use selfheal_bus::SeriesKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Detector, DetectorConfig, Direction, MetricClass, MetricClasses, Transition};
use crate::{admit::SeriesNames, stats::BrainStats};

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
    /// For a start: whether a sample of the run that opened it went
    /// beyond everything the series had done.
    pub novel: bool,
    /// Found by the watch after a change of its service
    /// ([`crate::correlate::watch`]): the change's time, ms. Such a start
    /// held after the change and is a symptom.
    pub after_change: Option<i64>,
}

/// Samples for one shard, and the event-time watermark ingest had reached
/// once it routed them.
#[derive(Clone, Debug, Default)]
pub struct ShardBatch {
    /// (series number, its key, ts, value); see [`crate::admit`]. The key
    /// comes with a series' first sample only: a shard keeps it from then
    /// on, and nothing is counted up and down per sample across threads.
    pub samples: Vec<(u64, Option<Arc<SeriesNames>>, i64, f64)>,
    /// Series admission forgot (idle): their detectors go. A shard forgets
    /// a series only so, so a series admission knows has its detector.
    pub forget: Vec<u64>,
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

/// One series' detector and what goes with it.
struct Slot {
    id: u64,
    det: Detector,
    class: MetricClass,
    /// Its last sample's time.
    last: i64,
    key: Arc<SeriesNames>,
}

/// A shard's series, packed in a vector and found by number through a
/// small index: a hash table of the slots themselves would leave about
/// as much memory again empty between them (at its load factor, every
/// page of the large entries is touched). The slots are in the order
/// their series first came, and agents send their series in the same
/// order at every round: the slot after the last one found is tried
/// first, so a round walks the slots in memory order.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    index: hashbrown::HashMap<u64, u32>,
    /// The slot after the last one found.
    next: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn find(&mut self, id: u64) -> Option<usize> {
        let i = match self.slots.get(self.next) {
            Some(s) if s.id == id => self.next,
            _ => *self.index.get(&id)? as usize,
        };
        self.next = i + 1;
        Some(i)
    }

    fn at(&mut self, i: usize) -> &mut Slot {
        &mut self.slots[i]
    }

    fn add(&mut self, s: Slot) -> &mut Slot {
        let i = self.slots.len();
        self.index.insert(s.id, i as u32);
        self.slots.push(s);
        self.next = i + 1;
        &mut self.slots[i]
    }

    /// Drops the slots of `ids` (the last one moves into each gap);
    /// returns how many of them were still learning.
    fn forget(&mut self, ids: &[u64], cfg: &DetectorConfig) -> u64 {
        let mut learning = 0;
        for id in ids {
            let Some(i) = self.index.remove(id) else {
                continue;
            };
            let gone = self.slots.swap_remove(i as usize);
            learning += u64::from(gone.det.learning(cfg));
            if let Some(moved) = self.slots.get(i as usize) {
                self.index.insert(moved.id, i);
            }
        }
        if self.slots.capacity() > 2 * self.slots.len() + 64 {
            self.slots.shrink_to_fit();
            self.index.shrink_to_fit();
        }
        learning
    }
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
    cfg: DetectorConfig,
    classes: Arc<MetricClasses>,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    let mut series = Slots::default();
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
            let Slot {
                det,
                class,
                last,
                key,
                ..
            } = match (series.find(id), key) {
                (Some(i), _) => series.at(i),
                (None, Some(key)) if series.len() < MAX_SERIES_PER_SHARD => {
                    let class = classes.classify(key.metric());
                    stats
                        .detectors_learning
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    series.add(Slot {
                        id,
                        det: Detector::new(class.direction),
                        class,
                        last: i64::MIN,
                        key,
                    })
                }
                // Over the cap when it came (its key not kept), or then.
                (None, _) => {
                    BrainStats::bump(&stats.series_refused);
                    continue;
                }
            };
            if batch.quiet && ts <= *last {
                continue;
            }
            *last = (*last).max(ts);
            let direction = class.direction;
            let learning = det.learning(&cfg);
            let update = det.update(ts, value, &cfg);
            if learning && !det.learning(&cfg) {
                stats
                    .detectors_learning
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            let ev = match update {
                None => continue,
                Some(Transition::Start {
                    onset,
                    baseline,
                    score,
                    novel,
                }) => {
                    if !batch.quiet {
                        BrainStats::bump(&stats.anomalies);
                    }
                    AnomalyEvent {
                        key: key.key(),
                        ts,
                        kind: AnomalyKind::Start,
                        onset,
                        value,
                        baseline,
                        score,
                        direction,
                        class: class.name.clone(),
                        novel,
                        after_change: None,
                    }
                }
                Some(Transition::End { baseline }) => AnomalyEvent {
                    key: key.key(),
                    ts,
                    kind: AnomalyKind::End,
                    onset: ts,
                    value,
                    baseline,
                    score: 0.0,
                    direction,
                    class: class.name.clone(),
                    novel: false,
                    after_change: None,
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
        if !batch.forget.is_empty() {
            let learning = series.forget(&batch.forget, &cfg);
            stats
                .detectors_learning
                .fetch_sub(learning, std::sync::atomic::Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_found_by_number_after_others_go() {
        let classes = MetricClasses::new(&[]).unwrap();
        let mut s = Slots::default();
        for id in 0..10u64 {
            let key = Arc::new(SeriesNames::of(&SeriesKey::new(
                selfheal_bus::Layer::System,
                "idc1",
                "svc",
                format!("m{id}"),
            )));
            let class = classes.classify(key.metric());
            s.add(Slot {
                id,
                det: Detector::new(class.direction),
                class,
                last: id as i64,
                key,
            });
        }
        let gone: Vec<u64> = (0..10).filter(|i| i % 3 != 0).collect();
        // Six fresh detectors, all still learning; forgetting one twice or
        // one never seen changes nothing.
        assert_eq!(s.forget(&gone, &DetectorConfig::default()), 6);
        assert_eq!(s.forget(&[1, 99], &DetectorConfig::default()), 0);
        assert_eq!(s.len(), 4);
        // In order, backwards and in order again: the next slot in line
        // is tried first and must never be taken for another's.
        for id in (0..10u64).chain((0..10).rev()).chain(0..10) {
            match s.find(id) {
                Some(i) => {
                    assert_eq!(id % 3, 0);
                    assert_eq!(s.at(i).id, id);
                    assert_eq!(s.at(i).key.metric(), format!("m{id}"));
                }
                None => assert_ne!(id % 3, 0),
            }
        }
    }
}
