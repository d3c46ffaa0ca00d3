//! Ingest: subscribe to indicator batches, decode and validate each one
//! (a bad message is counted and dropped, never fatal), route samples to
//! shards by series hash, and advance the event-time watermark.

use std::sync::Arc;

use selfheal_bus::{Limits, Skim, Subjects, Subscription, decode, decode_batch, wall_ms};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    detect::{Detected, model::ModelStage, shard::ShardBatch},
    stats::BrainStats,
};

/// Where accepted samples go.
pub struct Routes {
    /// The detector shards, by series hash (none at an engine whose
    /// detection runs in workers).
    pub shards: Vec<mpsc::Sender<ShardBatch>>,
    /// The multivariate stage and where its anomalies go, when models
    /// are loaded.
    pub models: Option<(ModelStage, mpsc::Sender<Detected>)>,
    /// The last minutes of business indicators, for people's charts.
    pub recent: Arc<crate::recent::Recent>,
    /// Which series are taken (caps in all, per source, per service).
    pub admission: crate::admit::Admission,
    /// A detection worker's share of the series (see [`Partitioned`]).
    pub partitioned: Option<Partitioned>,
    /// At an engine whose detection runs in workers: after each message
    /// of the indicator stream, its sequence and the watermark then.
    pub progress: Option<mpsc::Sender<(u64, i64)>>,
}

/// The messages of the indicator stream since a wall-clock time (ms) up
/// to a sequence: a worker's warm-up on partitions it is given.
pub type Replay = Arc<
    dyn Fn(
            i64,
            u64,
        )
            -> futures::future::BoxFuture<'static, Result<Subscription, selfheal_bus::BusError>>
        + Send
        + Sync,
>;

/// A detection worker's share: only the series of the partitions it owns
/// are decoded and detected (the rest are passed over unread), and on
/// partitions it is given the detectors first learn the last
/// `warmup_ms` of their history, quietly.
pub struct Partitioned {
    /// Partitions in all.
    pub partitions: u16,
    /// The partitions this worker owns, as membership changes.
    pub owned: watch::Receiver<Arc<Vec<u16>>>,
    /// Reads the history for a warm-up.
    pub replay: Replay,
    /// How much history a warm-up reads, ms.
    pub warmup_ms: i64,
}

/// How long a passed-over message's sequence may wait before the shards
/// hear of it (so that the worker's progress moves without samples).
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// At most this many messages' samples go to the shards together.
const HOLD_MESSAGES: usize = 32;

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
        models,
        recent,
        admission,
        mut partitioned,
        progress,
    } = routes;
    let mut ingest = Ingest {
        shards,
        models,
        recent,
        admission,
        bus,
        subjects,
        watermark,
        limits,
        stats,
        by_seq: partitioned.is_some(),
        seen: Default::default(),
        held: Vec::new(),
        held_moved: false,
        held_msgs: 0,
        admitted: Vec::new(),
        values: Vec::new(),
    };
    let mut owned = vec![false; partitioned.as_ref().map_or(0, |p| p.partitions as usize)];
    // A passed-over sequence the shards have not heard of yet, and when
    // they must.
    let mut unmarked: Option<(u64, tokio::time::Instant)> = None;
    loop {
        // Messages already waiting join the shard batches being built,
        // which go once none waits (or enough are built): a shard and the
        // engine wake once for many messages, not once for each. The
        // shards see the same samples in the same order and their marks
        // only less often, which the engine's order does not depend on.
        let ready = if ingest.held_msgs > 0 && ingest.held_msgs < HOLD_MESSAGES {
            sub.try_next()
        } else {
            None
        };
        let msg = match ready {
            Some(Some(m)) => m,
            Some(None) => break,
            None => {
                if ingest.flush().await.is_err() {
                    return;
                }
                let flush_at = unmarked.map(|(_, at)| at);
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {
                        if let Some((seq, _)) = unmarked.take()
                            && ingest.mark(seq).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    m = sub.next() => match m { Some(m) => m, None => break },
                }
            }
        };
        if let Some(p) = partitioned.as_mut() {
            if p.owned.has_changed().unwrap_or(false) {
                let now: Arc<Vec<u16>> = p.owned.borrow_and_update().clone();
                let mut gained = vec![false; owned.len()];
                let mut any = false;
                for (i, o) in owned.iter_mut().enumerate() {
                    let has = now.contains(&(i as u16));
                    if has && !*o {
                        gained[i] = true;
                        any = true;
                    }
                    *o = has;
                }
                if any && msg.seq > 1 {
                    let Ok(()) = ingest.warm_up(p, &gained, msg.seq - 1).await else {
                        return;
                    };
                }
            }
            let mine = selfheal_bus::partition::of_subject(&msg.subject, p.partitions)
                .is_some_and(|i| owned[i as usize]);
            if !mine {
                BrainStats::bump(&ingest.stats.batches_passed_over);
                let at = unmarked.map_or_else(|| tokio::time::Instant::now() + MARK_EVERY, |u| u.1);
                unmarked = Some((msg.seq, at));
                continue;
            }
        }
        unmarked = None;
        if ingest.take(&msg, false).await.is_err() {
            return;
        }
        ingest.held_msgs += 1;
        if let Some(tx) = &progress {
            let wm = *ingest.watermark.borrow();
            if tx.send((msg.seq, wm)).await.is_err() {
                return;
            }
        }
    }
    let _ = ingest.flush().await;
}

/// The shard of series number `id` among `n`: `id % n` (a mask when `n`
/// is a power of two, as it is by default: no division per sample).
fn shard_of(id: u64, n: usize) -> usize {
    if n.is_power_of_two() {
        (id & (n as u64 - 1)) as usize
    } else {
        (id % n as u64) as usize
    }
}

/// The receiver gone: ingest stops.
struct Gone;

/// An indicator batch as ingest took it: read where it lies and answered
/// from its publisher's shape, or decoded in full.
enum Read<'a> {
    Skimmed(Skim<'a>, crate::admit::Shaped),
    Decoded(selfheal_bus::BatchView<'a>),
}

impl Read<'_> {
    /// Its source, sequence, layer, IDC and service.
    fn head(&self) -> (&str, u64, selfheal_bus::Layer, &str, &str) {
        match self {
            Read::Skimmed(sk, _) => (sk.source, sk.seq, sk.layer, sk.idc, sk.service),
            Read::Decoded(b) => (&b.source, b.seq, b.layer, &b.idc, &b.service),
        }
    }
}

/// Ingest's state between messages.
struct Ingest {
    shards: Vec<mpsc::Sender<ShardBatch>>,
    models: Option<(ModelStage, mpsc::Sender<Detected>)>,
    recent: Arc<crate::recent::Recent>,
    admission: crate::admit::Admission,
    bus: selfheal_bus::Bus,
    subjects: Subjects,
    watermark: watch::Sender<i64>,
    limits: Limits,
    stats: Arc<BrainStats>,
    /// A detection worker: its progress is the stream sequence, so every
    /// message moves every shard's mark.
    by_seq: bool,
    /// Which batches of each source were taken: one sent again is not.
    seen: crate::seen::Seen,
    /// Samples routed and not yet sent, per shard (see [`Ingest::flush`]).
    held: Vec<ShardBatch>,
    /// Whether the watermark (a worker: the sequence) moved since the
    /// last send: every shard then hears of it.
    held_moved: bool,
    /// Messages whose samples are held.
    held_msgs: usize,
    /// What admission answered for the batch being taken (kept to reuse).
    admitted: Vec<crate::admit::Admitted>,
    /// The time and value of each of its samples (kept to reuse).
    values: Vec<(i64, f64)>,
}

impl Ingest {
    /// Tells every shard that the stream is read up to `seq`.
    async fn mark(&mut self, seq: u64) -> Result<(), Gone> {
        self.flush().await?;
        let wm = *self.watermark.borrow();
        for tx in &self.shards {
            let b = ShardBatch {
                mark: wm,
                seq,
                ..ShardBatch::default()
            };
            tx.send(b).await.map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// Feeds the detectors the history of the `gained` partitions up to
    /// sequence `until`, quietly; then has the shards send each series'
    /// state at its end.
    async fn warm_up(&mut self, p: &Partitioned, gained: &[bool], until: u64) -> Result<(), Gone> {
        self.flush().await?;
        let started = std::time::Instant::now();
        let mut sub = match (p.replay)(wall_ms() - p.warmup_ms, until).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "no warm-up: the given partitions start cold");
                return Ok(());
            }
        };
        let (mut read, mut taken) = (0u64, 0u64);
        while let Some(m) = sub.next().await {
            read += 1;
            let mine = selfheal_bus::partition::of_subject(&m.subject, p.partitions)
                .is_some_and(|i| gained[i as usize]);
            if mine {
                taken += 1;
                self.take(&m, true).await?;
            }
        }
        self.mark(until).await?;
        BrainStats::bump(&self.stats.partitions_taken);
        let n = gained.iter().filter(|g| **g).count();
        tracing::info!(
            partitions = n,
            read,
            taken,
            ms = started.elapsed().as_millis() as u64,
            "partitions taken, detectors warmed up"
        );
        Ok(())
    }

    /// Decodes one indicator batch and routes its samples; `quiet` for a
    /// warm-up (see [`ShardBatch::quiet`]).
    async fn take(&mut self, msg: &selfheal_bus::Message, quiet: bool) -> Result<(), Gone> {
        let stats = self.stats.clone();
        let stats = &*stats;
        if !quiet {
            acknowledge(&self.bus, msg).await;
        }
        let wm = *self.watermark.borrow();
        let now = clock_now(wm);
        let limits = Limits {
            // A warm-up reads history: as old as the stream keeps.
            max_skew_ms: if quiet {
                i64::MAX / 4
            } else {
                self.limits.max_skew_ms
            },
            ..self.limits
        };
        // A binary batch like its publisher's last one is read where it
        // lies (see [`selfheal_bus::skim`]); any other, or one of a
        // service with a model (which needs each sample's metric), is
        // decoded in full. Both answer the same: the checks below run on
        // the same header, and admission the same numbers.
        let watches = |service: &str| {
            self.models
                .as_ref()
                .is_some_and(|(m, _)| m.watches(service))
        };
        let skimmed = Skim::read(&msg.payload, &limits, now)
            .filter(|sk| !watches(sk.service))
            .and_then(|sk| {
                let shaped = self
                    .admission
                    .skim(&sk, &mut self.admitted, &mut self.values)?;
                Some(Read::Skimmed(sk, shaped))
            });
        let read = match skimmed {
            Some(r) => r,
            None => match decode_batch(&msg.payload, &limits, now) {
                Ok(b) => Read::Decoded(b),
                Err(e) => {
                    if !quiet {
                        stats.reject_decode(e.kind());
                        if let Some(held) = stats.reject_log.allow() {
                            warn!(subject = %msg.subject, reason = e.kind().reason(), error = %e, held_back = held, "indicator batch rejected");
                        }
                        stats.progress.notify_waiters();
                    }
                    return Ok(());
                }
            },
        };
        let (source, seq, layer, idc, service) = read.head();
        if !self
            .subjects
            .is_indicators(&msg.subject, layer, idc, service)
        {
            if !quiet {
                stats.reject("subject_mismatch");
                if let Some(held) = stats.reject_log.allow() {
                    warn!(subject = %msg.subject, held_back = held, "indicator batch on the wrong subject rejected");
                }
                stats.progress.notify_waiters();
            }
            return Ok(());
        }
        if !quiet && !self.seen.take(source, seq, msg.reply.is_some()) {
            BrainStats::bump(&stats.duplicate_batches);
            stats.progress.notify_waiters();
            return Ok(());
        }
        let decoded = match &read {
            Read::Skimmed(_, shaped) => {
                self.admission.take_shaped(*shaped);
                if !quiet {
                    BrainStats::bump(&stats.batches_read_in_place);
                }
                None
            }
            Read::Decoded(b) => {
                self.admission.admit_all(b, &mut self.admitted);
                self.values.clear();
                self.values
                    .extend(b.samples.iter().map(|s| (s.ts, s.value)));
                Some(b)
            }
        };
        if !quiet {
            BrainStats::bump(&stats.batches);
            stats.samples.fetch_add(
                self.values.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        let n = self.shards.len().max(1);
        let (max_ts, refused, transitions) = self.route(layer, service, decoded, wm, quiet);
        for ev in transitions {
            if ev.kind == crate::detect::AnomalyKind::Start {
                BrainStats::bump(&stats.anomalies);
            }
            BrainStats::bump(&stats.transitions);
            if let Some((_, tx)) = &self.models {
                tx.send(Detected::Anomaly(Box::new(ev)))
                    .await
                    .map_err(|_| Gone)?;
            }
        }
        if refused > 0
            && !quiet
            && let Some(total) = stats.refuse_series(source, refused)
        {
            raise_series_cap(&self.bus, &self.subjects, source, total, max_ts).await;
        }
        if self.admission.sweep(max_ts) > 0 {
            let forgotten = self.admission.take_forgotten();
            self.recent.forget(&forgotten);
            for id in forgotten {
                self.held[shard_of(id, n)].forget.push(id);
            }
        }
        // Every shard hears when the watermark moves (a worker: the
        // sequence), even one with no sample of this batch, so the engine
        // knows how far all have come.
        self.held_moved |= !quiet && (max_ts > wm || self.by_seq);
        for b in self.held.iter_mut() {
            b.mark = max_ts;
            b.seq = msg.seq;
            b.quiet = quiet;
        }
        if quiet {
            // A warm-up's batches go one by one: never with others.
            self.flush().await?;
        }
        if !quiet {
            stats.progress.notify_waiters();
            self.watermark.send_if_modified(|w| {
                let moved = max_ts > *w;
                *w = (*w).max(max_ts);
                moved
            });
        }
        Ok(())
    }

    /// Hands each admitted sample of the batch being taken (`values`,
    /// `admitted`) to its shard's batch and files it in the recent rings;
    /// returns the latest time among them (at least `wm`), how many were
    /// refused, and the multivariate stage's transitions, for the caller
    /// to send. Nothing here waits: the loop's state stays in registers.
    fn route(
        &mut self,
        layer: selfheal_bus::Layer,
        service: &str,
        decoded: Option<&selfheal_bus::BatchView<'_>>,
        wm: i64,
        quiet: bool,
    ) -> (i64, u64, Vec<crate::detect::AnomalyEvent>) {
        let n = self.shards.len().max(1);
        if self.held.len() != n {
            self.held = (0..n).map(|_| ShardBatch::default()).collect();
        }
        let each = self.values.len() / n + 1;
        for b in &mut self.held {
            b.samples.reserve(each);
        }
        // Where this message's samples start in each shard's batch.
        let from: Vec<usize> = self.held.iter().map(|b| b.samples.len()).collect();
        let routed = &mut self.held;
        let mut max_ts = wm;
        let mut refused = 0u64;
        let mut transitions = Vec::new();
        for (i, (&(ts, value), a)) in self.values.iter().zip(self.admitted.drain(..)).enumerate() {
            if !quiet {
                max_ts = max_ts.max(ts);
            }
            let Ok((id, key)) = a else {
                refused += 1;
                continue;
            };
            if !quiet
                && let Some((stage, _)) = self.models.as_mut()
                && let Some(b) = decoded
                && let Some(ev) = stage.observe(service, &b.samples[i].metric, ts, value)
            {
                transitions.push(ev);
            }
            routed[shard_of(id, n)].samples.push((id, key, ts, value));
        }
        if !quiet {
            self.recent.observe_all(
                layer,
                routed.iter().zip(&from).flat_map(|(b, from)| {
                    b.samples[*from..]
                        .iter()
                        .map(|(id, k, ts, v)| (*id, k.as_ref(), *ts, *v))
                }),
            );
        }
        (max_ts, refused, transitions)
    }

    /// Sends each shard the samples held for it, with the mark and
    /// sequence of the last message taken; a shard with none hears only
    /// when the watermark moved.
    async fn flush(&mut self) -> Result<(), Gone> {
        let moved = std::mem::take(&mut self.held_moved);
        self.held_msgs = 0;
        for (tx, b) in self.shards.iter().zip(self.held.iter_mut()) {
            if b.samples.is_empty() && b.forget.is_empty() && !moved {
                continue;
            }
            let out = ShardBatch {
                samples: std::mem::take(&mut b.samples),
                forget: std::mem::take(&mut b.forget),
                mark: b.mark,
                seq: b.seq,
                quiet: b.quiet,
            };
            tx.send(out).await.map_err(|_| Gone)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use selfheal_bus::{IndicatorBatch, Layer, LocalTransport, Sample, WIRE_VERSION};

    use super::*;

    /// Runs ingest over `msgs` (subject, payload, whether it is sent as a
    /// request, as a sender delivering its buffer does) on the in-process
    /// bus until every one is taken or rejected; returns each shard's
    /// samples (series number, time, value) and the counters.
    async fn ingest_all(
        msgs: Vec<(String, bytes::Bytes, bool)>,
    ) -> (Vec<Vec<(u64, i64, f64)>>, Arc<BrainStats>) {
        let bus: selfheal_bus::Bus = Arc::new(LocalTransport::default());
        let subjects = Subjects::default();
        let sub = bus.subscribe(&subjects.all_indicators()).await.unwrap();
        let n = msgs.len() as u64;
        let shards: Vec<_> = (0..2).map(|_| mpsc::channel::<ShardBatch>(1024)).collect();
        let (txs, mut rxs): (Vec<_>, Vec<_>) = shards.into_iter().unzip();
        let stats = Arc::new(BrainStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            sub,
            (bus.clone(), subjects),
            Routes {
                shards: txs,
                models: None,
                recent: Arc::new(crate::recent::Recent::default()),
                admission: crate::admit::Admission::new(Default::default()),
                partitioned: None,
                progress: None,
            },
            watch::channel(0i64).0,
            Limits::default(),
            stats.clone(),
            stop.clone(),
        ));
        for (subject, bytes, request) in msgs {
            if request {
                let wait = std::time::Duration::from_secs(5);
                bus.request(&subject, bytes, wait).await.unwrap();
            } else {
                bus.publish(&subject, bytes).await.unwrap();
            }
        }
        let handled = |s: &BrainStats| {
            BrainStats::get(&s.batches) + BrainStats::get(&s.duplicate_batches) + s.rejected_total()
        };
        while handled(&stats) < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let mut out = vec![Vec::new(); 2];
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(b) = rx.try_recv() {
                out[i].extend(b.samples.iter().map(|s| (s.0, s.2, s.3)));
            }
        }
        (out, stats)
    }

    #[tokio::test]
    async fn a_binary_batch_read_where_it_lies_is_taken_as_if_decoded() {
        // Forty rounds of two agents' batches, as JSON and as binary: in
        // between, a batch with one series renamed, one with a value not
        // finite, one with a time far off, one on the wrong subject, one
        // sent twice. Binary batches like their publisher's last are read
        // in place; everything comes out as the decoded JSON does.
        let subjects = Subjects::default();
        let t0 = wall_ms();
        let mut rounds = Vec::new();
        for r in 0..40u64 {
            for agent in 0..2u64 {
                let service = format!("svc{agent}");
                let mut b = IndicatorBatch {
                    v: WIRE_VERSION,
                    source: format!("agent{agent}"),
                    seq: r + 1,
                    layer: Layer::System,
                    idc: "dc1".into(),
                    service: service.clone(),
                    samples: (0..10)
                        .map(|s| Sample {
                            scene: None,
                            link: None,
                            instance: Some(format!("pod{}", s % 3)),
                            metric: format!("m{s}"),
                            labels: if s == 4 {
                                [("zone".to_string(), "a".to_string())].into()
                            } else {
                                Default::default()
                            },
                            ts: t0 + r as i64 * 1000,
                            value: (r * 10 + s) as f64 + agent as f64 / 2.0,
                        })
                        .collect(),
                };
                let mut subject = subjects.indicators(Layer::System, "dc1", &service);
                match (r, agent) {
                    (10, 0) => b.samples[3].metric = "n3".into(),
                    (12, 1) => b.samples[7].value = f64::NAN,
                    (14, 0) => b.samples[0].ts = t0 - 3_600_000,
                    (16, 1) => subject = subjects.indicators(Layer::System, "dc1", "other"),
                    (18, 0) => b.seq = 18, // round 17's
                    _ => {}
                }
                // The sent-twice batch and the one it repeats as requests.
                rounds.push((subject, b, (17..=18).contains(&r) && agent == 0));
            }
        }
        let encoded = |e: selfheal_bus::Encoding| {
            rounds
                .iter()
                .map(|(s, b, req)| (s.clone(), selfheal_bus::encode_batch(b, e).unwrap(), *req))
                .collect::<Vec<_>>()
        };
        let (json, js) = ingest_all(encoded(selfheal_bus::Encoding::Json)).await;
        let (binary, bs) = ingest_all(encoded(selfheal_bus::Encoding::Binary)).await;
        assert_eq!(binary, json);
        assert_eq!(json.iter().map(Vec::len).sum::<usize>(), 76 * 10);
        for s in [&js, &bs] {
            assert_eq!(BrainStats::get(&s.batches), 76);
            assert_eq!(BrainStats::get(&s.duplicate_batches), 1);
            assert_eq!(s.rejected_total(), 3);
            assert_eq!(s.rejected_for("timestamp_skew"), 1);
            assert_eq!(s.rejected_for("subject_mismatch"), 1);
        }
        // (JSON writes a NaN as null: a malformed number there.)
        assert_eq!(bs.rejected_for("non_finite"), 1);
        assert_eq!(BrainStats::get(&js.batches_read_in_place), 0);
        // All but each agent's first batch, the renamed one and the one
        // after it (their names changed), and the rejected ones.
        assert!(
            BrainStats::get(&bs.batches_read_in_place) >= 70,
            "{}",
            BrainStats::get(&bs.batches_read_in_place)
        );
    }

    #[test]
    fn a_series_goes_to_the_shard_its_number_says() {
        for n in 1..=9usize {
            for id in (0..1_000u64).chain([u64::MAX - 1, u64::MAX]) {
                assert_eq!(shard_of(id, n), (id % n as u64) as usize, "{id} of {n}");
            }
        }
    }

    #[tokio::test]
    async fn messages_waiting_go_to_the_shards_together_in_order() {
        // Forty batches waiting when ingest starts: each shard is sent the
        // samples of many at once (one wake-up, one mark), every sample
        // in the order it came, the mark the last message's.
        let bus: selfheal_bus::Bus = Arc::new(LocalTransport::default());
        let subjects = Subjects::default();
        let sub = bus.subscribe(&subjects.all_indicators()).await.unwrap();
        let t0 = wall_ms();
        for m in 0..40u64 {
            let samples = (0..10)
                .map(|s| Sample {
                    scene: None,
                    link: None,
                    instance: None,
                    metric: format!("m{s}"),
                    labels: Default::default(),
                    ts: t0 + m as i64 * 1000,
                    value: (m * 10 + s) as f64,
                })
                .collect();
            let b = IndicatorBatch {
                v: WIRE_VERSION,
                source: "test".into(),
                seq: m + 1,
                layer: Layer::System,
                idc: "dc1".into(),
                service: "api".into(),
                samples,
            };
            let bytes = selfheal_bus::encode_batch(&b, selfheal_bus::Encoding::Binary).unwrap();
            bus.publish(&subjects.indicators(Layer::System, "dc1", "api"), bytes)
                .await
                .unwrap();
        }
        let (tx0, mut rx0) = mpsc::channel(64);
        let (tx1, mut rx1) = mpsc::channel(64);
        let (wm, _) = watch::channel(0i64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            sub,
            (bus.clone(), subjects),
            Routes {
                shards: vec![tx0, tx1],
                models: None,
                recent: Arc::new(crate::recent::Recent::default()),
                admission: crate::admit::Admission::new(Default::default()),
                partitioned: None,
                progress: None,
            },
            wm,
            Limits::default(),
            Arc::new(BrainStats::default()),
            stop.clone(),
        ));
        let (mut sent, mut values, mut mark) = (0, Vec::new(), 0);
        while values.len() < 400 {
            let b = tokio::select! {
                Some(b) = rx0.recv() => b,
                Some(b) = rx1.recv() => b,
            };
            sent += 1;
            mark = mark.max(b.mark);
            let vals: Vec<f64> = b.samples.iter().map(|s| s.3).collect();
            assert!(vals.is_sorted(), "in the order they came: {vals:?}");
            values.extend(vals);
        }
        stop.cancel();
        task.await.unwrap();
        values.sort_by(f64::total_cmp);
        assert_eq!(values, (0..400).map(f64::from).collect::<Vec<_>>());
        assert_eq!(mark, t0 + 39_000, "the last message's mark");
        assert!(sent <= 8, "{sent} batches to the shards for 40 messages");
    }
}
