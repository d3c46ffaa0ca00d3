//! The pipeline after detection, owned by one task: correlate → diagnose →
//! decide → act → verify → store. It runs on event time (the watermark of
//! the indicators), so it behaves the same at any simulation speed.

use std::{sync::Arc, time::Duration};

use selfheal_bus::{
    Bus, IncidentEvent, IncidentState, SeriesKey, Subjects, Topology, WIRE_VERSION, publish_msg,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    act::{Admission, Gateway, Intent},
    correlate::Correlator,
    detect::{AnomalyEvent, Detected},
    diagnose,
    incident::{Checkpoint, Due, Failure, Incident, Judged, Terminal},
    playbook::{Approval, IncidentFacts, OnFailure, Runtime, Step},
    stats::{BrainStats, Fault},
    store::{ActionState, Store},
    verify,
};

mod approve;
mod ha;

pub use ha::Cluster;

pub use crate::act::ActionResult;
pub use crate::act::approvals::OnCall;

/// Everything the engine owns.
pub struct Engine {
    pub(crate) bus: Bus,
    pub(crate) subjects: Subjects,
    pub(crate) topology: Arc<Topology>,
    pub(crate) store: Arc<Store>,
    pub(crate) runtime: Runtime,
    /// The one way out for actions: guards, write-ahead, actuators.
    pub(crate) gateway: Gateway,
    pub(crate) stats: Arc<BrainStats>,
    pub(crate) correlator: Correlator,
    pub(crate) context: crate::context::Context,
    /// The revision of each unfinished incident last checkpointed.
    pub(crate) saved: std::collections::HashMap<String, u64>,
    /// Active/standby with other brains (`[ha]`): the lease, and where
    /// the engine's state is replicated. `None`: this engine acts alone.
    pub(crate) cluster: Option<Cluster>,
    /// Where the playbooks are, watched for changes (hot reload).
    pub(crate) playbook_dir: std::path::PathBuf,
    /// Indicators fed ahead of the engine ([`crate::BrainConfig::fed_ahead`]):
    /// what falls due at a mark's time waits for a later mark.
    pub(crate) fed_ahead: bool,
    /// The diagnosis rules.
    pub(crate) rules: diagnose::Rules,
    /// On-call approvals, when configured.
    pub(crate) approvals: Option<crate::act::approvals::Approvals>,
    /// Recent samples of every series, for localization.
    pub(crate) recent: Arc<crate::recent::Recent>,
    /// The metric class table.
    pub(crate) classes: Arc<crate::detect::MetricClasses>,
    /// The reconciliation checks a playbook may require (`[[reconcile]]`).
    pub(crate) reconcile: Vec<crate::reconcile::ReconcileCheck>,
    /// The changed services' symptoms, watched for the change horizon.
    pub(crate) watch: crate::correlate::watch::ChangeWatch,
}

/// What the engine listens to besides anomalies and the watermark.
pub struct Inputs {
    /// Actuators' answers.
    pub results: mpsc::Receiver<ActionResult>,
    /// Changes, hot keys, announcements.
    pub contexts: mpsc::Receiver<crate::context::ContextMsg>,
    /// People's decisions on approvals, from the API.
    pub decisions: mpsc::Receiver<crate::act::approval::Decide>,
    /// Alerts from an existing monitoring (Alertmanager).
    pub alerts: mpsc::Receiver<crate::alert::Alert>,
    /// A driver's word that its input ended (see [`InputEnd`]).
    pub ended: mpsc::Receiver<InputEnd>,
}

/// A driver's word that its input ended at `at` (a replay's last
/// instant): that time is whole, nothing after it will come. The engine
/// files what was detected at it, ends the gathering of evidence of
/// every incident still gathering, so that each is diagnosed on what it
/// holds, and answers on `done`.
#[derive(Debug)]
pub struct InputEnd {
    /// The input's last time, ms.
    pub at: i64,
    /// Told once it is taken.
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// Least similarity of a past incident's symptoms to be listed.
const SIMILAR_MIN: f64 = 0.3;

/// How often the playbook files are looked at for changes (wall clock).
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Resource classes whose series, bad alone, are judged again once they
/// have had the time to show whether they hold far out.
const HELD_CLASSES: [&str; 4] = ["cpu", "memory", "disk", "saturation"];
/// How long a resource series must stay bad alone before it is judged, ms,
/// and in sampling steps (the longer): a pod pinned at its limit for half
/// a minute of 1-second data, for five samples of 1-minute data.
const HOLD_MS: i64 = 30_000;
/// See [`HOLD_MS`].
const HOLD_STEPS: i64 = 5;
/// The robust move (in deviations, as localization measures them) that
/// three quarters of a held series' samples must reach.
const HELD_MOVE: f64 = 10.0;
/// The multiple of its level before that a held series' median must
/// reach: a very steady series a tenth up is far out of its history and
/// of no concern to anyone.
const HELD_RATIO: f64 = 1.5;
/// A latency group without call edges is judged this long after it
/// formed, or [`CONFIRM_STEPS`] sampling steps when they are longer
/// ([`crate::correlate::Correlator::confirm_latency`]). With a call graph,
/// a latency alone of a series scraped less often than it is sampled is
/// judged [`CONFIRM_STEPS`] scrapes after it went bad
/// ([`crate::correlate::Correlator::on_anomaly_seen`]).
const CONFIRM_MS: i64 = 10_000;
/// Errors or success of a scraped series count once their failures held
/// at this many times those before (errors up by half: a wandering error
/// count visits a fifth more now and then).
const FAILURES_RISE: f64 = 1.5;

/// How closely (absolute correlation over their recent samples) another
/// service's unflagged latency must follow a judged latency to agree with
/// it ([`crate::correlate::Correlator::promote_confirmed_with`]).
const QUIET_FOLLOWS: f64 = 0.7;

/// See [`CONFIRM_MS`].
const CONFIRM_STEPS: i64 = 3;

/// The order anomalies are filed in: by time, and at one time what is bad
/// either way (traffic) first, so that a symptom is judged knowing the
/// load that came with it.
fn in_order(a: &AnomalyEvent, b: &AnomalyEvent) -> std::cmp::Ordering {
    let either = |e: &AnomalyEvent| e.direction != crate::detect::Direction::Both;
    (a.ts, either(a), a.onset, &a.key, a.kind as u8).cmp(&(
        b.ts,
        either(b),
        b.onset,
        &b.key,
        b.kind as u8,
    ))
}

impl Engine {
    /// Runs until `stop` fires or the detection stream ends.
    ///
    /// Event time moves with the shards' marks: once every shard has
    /// passed a time, the anomalies up to it are taken in a fixed order
    /// (time, onset, series), with the incidents advanced at each time, so
    /// the same input gives the same incidents whatever the interleaving
    /// of the shards and the load of the machine.
    pub async fn run(
        mut self,
        mut detected: mpsc::Receiver<Detected>,
        inputs: Inputs,
        shards: usize,
        stop: CancellationToken,
    ) {
        let Inputs {
            mut results,
            mut contexts,
            mut decisions,
            mut alerts,
            mut ended,
        } = inputs;
        let mut now = 0;
        let mut marks = vec![i64::MIN; shards.max(1)];
        let mut pending: Vec<AnomalyEvent> = Vec::new();
        let (mut answers, mut transitions, mut filed) = (0u64, 0u64, 0u64);
        let mut standing = self.cluster.as_ref().map(|c| c.lease.watch());
        self.restore_changes().await;
        if self.cluster.is_none() {
            self.stats
                .engine_leading
                .store(1, std::sync::atomic::Ordering::Relaxed);
            self.resume().await;
        }
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reload.tick().await;
        loop {
            // Fed ahead, detection moves time: what falls due is taken up
            // by `take` once every sample of its time is in, not here.
            let mut timed = false;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = reload.tick() => {
                    self.reload_playbooks();
                    continue;
                }
                Ok(()) = ha::changed(&mut standing) => {
                    self.on_standing(&mut standing, now).await;
                }
                Some(r) = results.recv() => {
                    if self.leading() {
                        self.on_result(r, now).await;
                    }
                    answers += 1;
                }
                Some(d) = decisions.recv() => {
                    if self.leading() {
                        self.on_decide(d, now).await;
                    } else {
                        let _ = d.reply.send(crate::act::approval::Decided {
                            status: crate::act::approval::DecisionStatus::Unavailable,
                            state: "unknown".into(),
                            message: "this brain stands by: the brain that leads decides (its selfheal_brain_engine_leading is 1)".into(),
                            dispatched: None,
                        });
                    }
                }
                Some(a) = alerts.recv(), if self.leading() => {
                    // A symptom at the engine's time: it opens or joins an
                    // incident like an anomaly of a business error series.
                    let ev = a.anomaly(now);
                    info!(series = %ev.key, firing = a.firing, summary = %a.summary, "alert");
                    self.on_anomaly(&ev).await;
                }
                Some(end) = ended.recv() => {
                    if self.leading() {
                        self.end_of_input(&mut pending, now, end.at).await;
                    }
                    now = now.max(end.at);
                    let _ = end.done.send(());
                }
                Some(c) = contexts.recv() => {
                    // Fed ahead, a change or hot key comes at a barrier
                    // (everything before it in): what fell due before it
                    // is done first, without it.
                    if self.fed_ahead && self.leading() {
                        self.advance(now).await;
                    }
                    match c {
                        crate::context::ContextMsg::Announce(a) => self.learn(&a),
                        // Into the store first: a restarted brain still
                        // knows it. A notice sent again is filed once.
                        crate::context::ContextMsg::Change(change) => {
                            if !self.context.knows(&change) {
                                self.write("change", |db| db.record_change(&change).map(drop));
                                self.watch_change(&change);
                                self.context.record(crate::context::ContextMsg::Change(change));
                            }
                        }
                        other => self.context.record(other),
                    }
                    filed += 1;
                }
                d = detected.recv() => {
                    timed = true;
                    match d {
                        None => break,
                        Some(Detected::Anomaly(ev)) => {
                            pending.push(*ev);
                            transitions += 1;
                        }
                        Some(Detected::Mark { shard, ts, .. }) => {
                            if let Some(m) = marks.get_mut(shard) {
                                *m = (*m).max(ts);
                            }
                            let low = marks.iter().copied().min().unwrap_or(i64::MIN);
                            if low > now {
                                if self.leading() {
                                    self.take(&mut pending, now, low).await;
                                } else {
                                    // A standby keeps time, not incidents.
                                    pending.retain(|e| e.ts >= low);
                                }
                                now = low;
                            }
                        }
                    }
                }
            }
            // Fed ahead, a mark at `now` says every sample before `now` is
            // in, not every sample at it (more batches of that time may
            // come): what falls due at `now` waits for the next mark.
            if self.leading() && !(timed && self.fed_ahead) {
                self.advance(now).await;
            }
            // Published only after the steps that follow, so that a
            // lockstep driver never sees a gap between an answer and the
            // action it leads to.
            use std::sync::atomic::Ordering::SeqCst;
            self.stats.engine_now.store(now, SeqCst);
            self.stats
                .actions_answered
                .fetch_add(std::mem::take(&mut answers), SeqCst);
            self.stats
                .transitions_handled
                .fetch_add(std::mem::take(&mut transitions), SeqCst);
            self.stats
                .contexts_handled
                .fetch_add(std::mem::take(&mut filed), SeqCst);
            self.stats.progress.notify_waiters();
        }
    }

    /// Files the pending anomalies before `until` in a fixed order and
    /// moves the incidents through every time in between at which
    /// something happens: each anomaly's time, and each incident's deadline
    /// (end of evidence gathering, of a verification window, of an
    /// approver's time). So a driver may hand over many instants at once
    /// and the incidents still move as they would instant by instant.
    /// Anomalies at `until` itself wait: more batches of that time may
    /// still come (one per service and layer), and a time is judged whole.
    async fn take(&mut self, pending: &mut Vec<AnomalyEvent>, from: i64, until: i64) {
        if self.fed_ahead {
            // What fell due at `from` itself, now that all of that time
            // is in.
            self.advance(from).await;
        }
        let mut due: Vec<AnomalyEvent>;
        (due, *pending) = std::mem::take(pending)
            .into_iter()
            .partition(|e| e.ts < until);
        due.sort_by(in_order);
        let mut due = std::collections::VecDeque::from(due);
        let mut cur = from;
        loop {
            // The samples of the changed services' symptoms (their
            // samples before `until` are all in) are read at their own
            // time, as the anomalies are.
            let next_watched = (!self.watch.is_empty())
                .then(|| self.watch.next_time(&self.recent, until))
                .flatten();
            let next_ev = match (due.front().map(|e| e.ts), next_watched) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next_dl = self.next_deadline(cur, until);
            match (next_ev, next_dl) {
                (None, None) => break,
                // What falls due at a time comes before the anomalies of
                // that time, as it does instant by instant (`advance(from)`
                // above): how many instants a mark spans changes nothing.
                (Some(t), dl) if dl.is_none_or(|d| t < d) => {
                    if next_watched == Some(t) {
                        let found = self.watched(t.saturating_add(1));
                        if !found.is_empty() {
                            let mut all = Vec::from(std::mem::take(&mut due));
                            all.extend(found);
                            all.sort_by(in_order);
                            due = all.into();
                        }
                    }
                    // A time at which the watch read samples and found
                    // nothing moves nothing.
                    let mut filed = false;
                    while due.front().is_some_and(|e| e.ts == t) {
                        if let Some(ev) = due.pop_front() {
                            self.on_anomaly(&ev).await;
                            filed = true;
                        }
                    }
                    if filed {
                        cur = cur.max(t);
                        self.advance(cur).await;
                    }
                }
                (_, Some(d)) => {
                    cur = d;
                    self.advance(cur).await;
                }
                _ => break,
            }
        }
    }

    /// The input ended at `at` ([`InputEnd`]): files what is pending up to
    /// and with `at`, which no later mark will, and diagnoses every
    /// incident still gathering evidence on what it holds. What waits to
    /// be judged once it held, later than `at`, stays unjudged: that time
    /// never came.
    async fn end_of_input(&mut self, pending: &mut Vec<AnomalyEvent>, now: i64, at: i64) {
        let at = at.max(now);
        self.take(pending, now, at.saturating_add(1)).await;
        for inc in &mut self.correlator.incidents {
            inc.stop_collecting(at);
        }
        self.advance(at).await;
    }

    /// The earliest incident deadline after `after` and before `before`.
    fn next_deadline(&self, after: i64, before: i64) -> Option<i64> {
        let held = self.correlator.next_hold(after, before);
        self.correlator
            .incidents
            .iter()
            .filter_map(Incident::deadline)
            .filter(|d| *d > after && *d < before)
            .chain(held)
            .min()
    }

    /// Keeps the topology current from an agent's announcement
    /// ([`crate::context::learn`]).
    fn learn(&mut self, a: &selfheal_bus::Announcement) {
        if crate::context::learn(Arc::make_mut(&mut self.topology), a) {
            BrainStats::bump(&self.stats.topology_updates);
            info!(agent = %a.agent, idc = %a.idc, services = a.services.len(), "topology updated from an announcement");
        }
    }

    /// Hot reload of the playbooks: a good set is swapped in, a broken one
    /// refused (the running set stays) and counted.
    fn reload_playbooks(&mut self) {
        match self.runtime.reload_if_changed(&self.playbook_dir) {
            Ok(None) => {}
            Ok(Some(n)) => {
                BrainStats::bump(&self.stats.playbook_reloads);
                info!(playbooks = n, "playbooks reloaded");
            }
            Err(errs) => {
                let errors: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                self.stats.fault(Fault::ReloadRefused { errors: &errors });
            }
        }
    }

    /// A store write whose failure leaves nothing else to do but say so:
    /// off the async workers, logged and counted when it fails.
    fn write(&self, what: &str, f: impl FnOnce(&Store) -> crate::store::Result<()>) {
        self.store.write_logged(&self.stats, what, f);
    }

    /// A store call whose answer the engine needs, off the async workers.
    fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        self.store.blocking(f)
    }

    /// A read the restart cannot do without: tried a few times (the store
    /// may be busy), then the failure is counted and logged as what it
    /// leaves undone, never taken for "nothing there".
    async fn read_at_restart<T>(
        &self,
        what: &str,
        undone: &str,
        read: impl Fn() -> crate::store::Result<Vec<T>>,
    ) -> Vec<T> {
        let r = crate::act::retry(
            Duration::from_millis(100),
            4,
            |_| {},
            |attempt| {
                let r = crate::blocking::run(&read);
                async move {
                    match r {
                        Ok(v) => crate::act::Attempt::Done(v),
                        Err(e) => {
                            warn!(error = %e, what, attempt = attempt + 1, "store read at restart failed");
                            crate::act::Attempt::Again(e)
                        }
                    }
                }
            },
        )
        .await;
        match r {
            Ok((v, _)) => v,
            Err(g) => {
                self.stats.fault(Fault::StoreRead {
                    what,
                    undone,
                    error: &g.error,
                    kind: &g.error.kind(),
                });
                Vec::new()
            }
        }
    }

    /// Files an incident's event on its timeline and publishes it.
    async fn publish(&self, i: usize, ts: i64, state: IncidentState, summary: String) {
        let inc = &self.correlator.incidents[i];
        let summary = crate::mask::mask_owned(summary);
        info!(incident = %inc.id, state = ?state, %summary, "incident");
        let kind = format!("{state:?}").to_lowercase();
        self.write("timeline", |db| db.timeline(&inc.id, ts, &kind, &summary));
        let ev = IncidentEvent {
            v: WIRE_VERSION,
            id: inc.id.clone(),
            ts,
            state,
            service: inc.service.clone(),
            summary,
        };
        if let Err(e) = publish_msg(&self.bus, &self.subjects.incident(&inc.id), &ev).await {
            warn!(error = %e, "incident event not published");
        }
    }

    /// Whether the traffic where `ev` happened (its service, IDC and
    /// scene) rose since the anomaly's onset, by the series' own history.
    fn load_rising(&self, ev: &AnomalyEvent) -> bool {
        if ev.kind != crate::detect::AnomalyKind::Start || &*ev.class != "latency" {
            return false;
        }
        let k = &ev.key;
        let classes = &self.classes;
        self.recent.scan(|all| {
            all.filter(|(o, _)| {
                o.service == k.service
                    && o.idc == k.idc
                    && o.scene == k.scene
                    && o.instance == k.instance
            })
            .filter(|(o, _)| &*classes.classify(&o.metric).name == "traffic")
            .any(|(_, h)| {
                diagnose::localize::robust_score(h, ev.onset, ev.ts, crate::detect::Direction::Up)
                    .is_some_and(|z| z >= diagnose::localize::MOVED)
            })
        })
    }

    /// Whether any traffic series held up since `onset`, as its history
    /// shows at `now` (moved, and by a fifth or more): a resource busier
    /// while demand rose is busy with that demand, wherever it enters (a
    /// database's pool fills with its callers' requests, which it does not
    /// count itself).
    fn traffic_rising(&self, onset: i64, now: i64) -> bool {
        let classes = &self.classes;
        self.recent.scan(|all| {
            all.filter(|(o, _)| &*classes.classify(&o.metric).name == "traffic")
                .any(|(_, h)| {
                    diagnose::localize::held(h, onset, now, crate::detect::Direction::Up)
                        .is_some_and(|(z, ratio)| {
                            z >= diagnose::localize::MOVED && ratio >= crate::correlate::SURGE
                        })
                })
        })
    }

    /// Starts watching a changed service's symptoms against their
    /// samples before the change, for the change horizon after it.
    /// What it learnt of them is filed first: a brain restarted within
    /// the horizon goes on watching ([`Engine::restore_changes`]).
    fn watch_change(&mut self, change: &selfheal_bus::ChangeEvent) {
        let saved = self.watch.watch(
            change,
            &self.recent,
            &self.classes,
            diagnose::change_lookback_ms,
        );
        let body = (!saved.is_empty())
            .then(|| serde_json::to_string(&saved))
            .transpose();
        match body {
            Ok(body) => self.write("change watch", |db| {
                db.save_change_watches(&change.service, change.ts, body.as_deref())
            }),
            Err(e) => warn!(service = %change.service, error = %e, "change watch not encoded"),
        }
    }

    /// What the watched series show before `until`
    /// ([`crate::correlate::watch`]): a latency held worse after its
    /// service's change is not its doing inside a planned window, nor
    /// under rising demand.
    fn watched(&mut self, until: i64) -> Vec<AnomalyEvent> {
        let recent = self.recent.clone();
        let mut watch = std::mem::take(&mut self.watch);
        watch.drop_known(|service, change, since| {
            self.correlator.incident_on_since(service, change)
                || self
                    .correlator
                    .fault_began_between(change, since.unwrap_or(i64::MAX))
        });
        let found = watch.step(&recent, until, |ev| {
            // The detector's own find of it goes on as it is.
            let flagged = self.correlator.is_anomalous(&ev.key);
            let planned = self
                .correlator
                .discipline
                .planned_at(ev.onset, &ev.key.service);
            let loaded = &*ev.class == "latency" && self.traffic_rising(ev.onset, ev.ts);
            !(flagged || planned || loaded)
        });
        self.watch = watch;
        for ev in &found {
            if ev.kind == crate::detect::AnomalyKind::Start {
                BrainStats::bump(&self.stats.held_after_change);
            }
        }
        found
    }

    async fn on_anomaly(&mut self, ev: &AnomalyEvent) {
        let load = self.load_rising(ev);
        if ev.kind == crate::detect::AnomalyKind::Start && &*ev.class == "latency" {
            let recent = &self.recent;
            self.correlator.retain_traffic_up(|k| recent.kept(k));
        }
        tracing::debug!(key = %ev.key, kind = ?ev.kind, ts = ev.ts, class = %ev.class, score = ev.score, value = ev.value, baseline = ev.baseline, novel = ev.novel, load, "anomaly transition");
        // A series scraped less often than it is sampled is judged after
        // a few scrapes, not samples: its errors or success always, its
        // latency with a call graph (without one, every latency group is
        // judged once it held).
        let quality = crate::incident::is_quality(&ev.class);
        let held_every = (ev.kind == crate::detect::AnomalyKind::Start
            && ev.after_change.is_none()
            && (quality || (self.correlator.discipline.has_graph && &*ev.class == "latency")))
            .then(|| self.recent.scrape_of(&ev.key, ev.onset))
            .flatten()
            // Errors or success: when their place's series are scraped
            // too (an error count that is zero but now and then repeats
            // itself as well).
            .filter(|_| !quality || self.recent.scrape_of_place(&ev.key, ev.onset).is_some())
            .map(|scrape| CONFIRM_STEPS * scrape);
        let filed = self.correlator.on_anomaly_seen(ev, load, held_every);
        self.stats.set_anomalous(
            &ev.key.service,
            self.correlator.anomalous_on(&ev.key.service) as u64,
        );
        let Some((i, new)) = filed else {
            if ev.kind == crate::detect::AnomalyKind::Start
                && ev.novel
                && ev.direction == crate::detect::Direction::Up
                && HELD_CLASSES.contains(&&*ev.class)
            {
                // A resource gone bad alone, beyond anything it had done
                // (a host that runs its batch at 95 % now and then has
                // been there before): judged again once it has had the
                // time to show whether it holds.
                let step = self.recent.step_of([&ev.key], ev.ts);
                let at = ev.onset + HOLD_MS.max(HOLD_STEPS * step);
                self.correlator.hold(&ev.key, at);
            }
            if ev.kind == crate::detect::AnomalyKind::Start && &*ev.class == "latency" {
                // A series held between scrapes shows whether it holds
                // over scrapes, not samples: one scrape that caught a
                // burst repeats it until the next.
                let sampled = self.recent.step_of([&ev.key], ev.ts);
                let step = self.recent.scrape_of(&ev.key, ev.onset).unwrap_or(sampled);
                // Its service changed within the change horizon before it
                // went bad: a suspect already.
                let horizon = diagnose::change_lookback_ms(sampled);
                if !self
                    .context
                    .changes(
                        &ev.key.service,
                        ev.onset - horizon,
                        ev.onset + diagnose::CHANGE_LOOKAHEAD_MS,
                    )
                    .is_empty()
                {
                    self.correlator.note_change(&ev.key);
                }
                let every = CONFIRM_MS.max(CONFIRM_STEPS * step);
                self.correlator.confirm_latency(ev.ts + every, every);
            }
            return;
        };
        self.correlator.incidents[i].detector_saw(&ev.key);
        if new {
            let summary = format!(
                "anomaly on {}: {:.4} against a baseline of {:.4} (onset {} ms before detection)",
                ev.key,
                ev.value,
                ev.baseline,
                ev.ts - ev.onset
            );
            self.opened(i, ev.ts, summary).await;
        } else {
            let inc = &self.correlator.incidents[i];
            let what = match ev.kind {
                crate::detect::AnomalyKind::Start => "anomaly",
                crate::detect::AnomalyKind::End => "cleared",
            };
            self.write("timeline", |db| {
                db.timeline(&inc.id, ev.ts, what, &ev.key.to_string())
            });
        }
    }

    /// Files an incident the correlator just opened and tells the world.
    async fn opened(&mut self, i: usize, ts: i64, summary: String) {
        let inc = &self.correlator.incidents[i];
        self.write("incident", |db| {
            db.open_incident(&inc.id, &inc.service, inc.onset, inc.opened, &summary)
        });
        // Counted once the store has it: whoever reads the count then
        // finds the incident.
        BrainStats::bump(&self.stats.incidents);
        self.publish(i, ts, IncidentState::Opened, summary).await;
    }

    /// Opens an incident on each resource signal that held far out until
    /// its time was up (see [`crate::correlate::Correlator::promote_held`]):
    /// at least three quarters of its samples since its onset
    /// [`HELD_MOVE`] robust deviations or more beyond its level before, and
    /// their median [`HELD_RATIO`] times that level or more.
    async fn promote_held(&mut self, now: i64) {
        let recent = self.recent.clone();
        let mut summary = String::new();
        let loaded: std::collections::BTreeSet<SeriesKey> = self
            .correlator
            .holds_due(now)
            .into_iter()
            .filter(|(_, onset)| self.traffic_rising(*onset, now))
            .map(|(k, _)| k)
            .collect();
        while let Some(i) = self.correlator.promote_held(now, |k, e| {
            if loaded.contains(k) {
                return false;
            }
            recent.with_history(k, |h| {
                let Some(h) = h else { return false };
                let (z, ratio) = match diagnose::localize::held(
                    h,
                    e.onset,
                    now,
                    crate::detect::Direction::Up,
                ) {
                    Some(held) => held,
                    // Judged again after its onset left the samples a
                    // score reads: against the level it left.
                    None => match diagnose::localize::held_above(h, now, e.baseline) {
                        Some(r) => (HELD_MOVE, r),
                        None => return false,
                    },
                };
                let held = z >= HELD_MOVE && ratio >= HELD_RATIO;
                if held {
                    summary = format!(
                        "{k} held at {ratio:.1} times its level for {:.0} s ({z:.0} robust deviations or more)",
                        (now - e.onset) as f64 / 1000.0
                    );
                }
                held
            })
        }) {
            self.opened(i, now, std::mem::take(&mut summary)).await;
        }
    }

    /// Opens an incident on a latency group without call edges, or a
    /// scraped latency with them, that held until its time was up (see
    /// [`crate::correlate::Correlator::promote_confirmed`]): each series
    /// [`diagnose::localize::MOVED`] robust deviations or more beyond its
    /// level before at least three quarters of the time since its onset,
    /// with no traffic rising under it.
    async fn promote_confirmed(&mut self, now: i64) {
        let Some(first) = self.correlator.confirms_due(now) else {
            return;
        };
        // Latency under rising demand is the demand.
        let loaded = self.traffic_rising(first, now);
        let recent = self.recent.clone();
        let mut held_at: Vec<(SeriesKey, f64)> = Vec::new();
        let classes = self.classes.clone();
        // Other services' latency series that held with a judged latency
        // since its onset and follow it, though no detector flagged them
        // (a callee's delay diluted on its callers).
        let mut quiet_at: Vec<(SeriesKey, f64)> = Vec::new();
        let quiet = |k: &SeriesKey, onset: i64| -> Vec<(SeriesKey, f64)> {
            if loaded {
                return Vec::new();
            }
            let found = recent.scan(|all| {
                let mut mine = None;
                let mut with: Vec<(&SeriesKey, &crate::recent::History, f64)> = Vec::new();
                for (o, h) in all {
                    if o == k {
                        mine = Some(h);
                        continue;
                    }
                    if o.service == k.service || &*classes.classify(&o.metric).name != "latency" {
                        continue;
                    }
                    if let Some((z, ratio)) =
                        diagnose::localize::held(h, onset, now, crate::detect::Direction::Up)
                        && z >= diagnose::localize::MOVED
                        && ratio > 1.0
                    {
                        with.push((o, h, ratio));
                    }
                }
                let Some(mine) = mine else {
                    return Vec::new();
                };
                let mut v: Vec<(SeriesKey, f64)> = with
                    .into_iter()
                    .filter(|(_, h, _)| {
                        diagnose::localize::correlation(mine, h, now) >= QUIET_FOLLOWS
                    })
                    .map(|(o, _, r)| (o.clone(), r))
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            });
            quiet_at.extend(found.iter().cloned());
            found
        };
        let opened = self.correlator.promote_confirmed_with(
            now,
            |k, e| {
                // Errors or success of a scraped series: held when they stayed
                // bad over the scrapes since, the failures up by half or more,
                // load or not.
                if crate::incident::is_quality(&e.class) {
                    let (z, times) = recent.with_history(k, |h| {
                        diagnose::localize::held_failures(h?, e.onset, now, e.direction)
                    })?;
                    if z >= diagnose::localize::MOVED && times >= FAILURES_RISE {
                        held_at.push((k.clone(), z));
                        return Some(z);
                    }
                    return None;
                }
                if loaded {
                    return None;
                }
                let ratio = recent.with_history(k, |h| {
                    let h = h?;
                    match diagnose::localize::held(h, e.onset, now, crate::detect::Direction::Up) {
                        Some((z, ratio)) => (z >= diagnose::localize::MOVED).then_some(ratio),
                        None => diagnose::localize::held_above(h, now, e.baseline),
                    }
                })?;
                held_at.push((k.clone(), ratio));
                Some(ratio)
            },
            quiet,
        );
        let Some(i) = opened else { return };
        held_at.sort_by(|a, b| b.1.total_cmp(&a.1));
        let quality = held_at
            .iter()
            .filter(|(k, _)| crate::incident::is_quality(&self.classes.classify(&k.metric).name))
            .map(|(k, z)| format!("{k} ({z:.0} robust deviations)"))
            .collect::<Vec<_>>();
        if !quality.is_empty() {
            let summary = format!(
                "errors or success held over several scrapes: {}",
                quality.join(", ")
            );
            self.opened(i, now, summary).await;
            return;
        }
        let levels = |v: &[(SeriesKey, f64)], n: usize| {
            v.iter()
                .take(n)
                .map(|(k, r)| format!("{k} at {r:.1} times its level"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let summary = format!(
            "latency held in {} series {}: {}",
            held_at.len(),
            if self.correlator.discipline.has_graph {
                "with call edges"
            } else {
                "without call edges"
            },
            levels(&held_at, 4)
        );
        // Each series once (a later judgment may have read it again).
        quiet_at.sort_by(|a, b| a.0.cmp(&b.0));
        quiet_at.dedup_by(|a, b| a.0 == b.0);
        quiet_at.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let summary = if quiet_at.is_empty() {
            summary
        } else {
            format!("{summary}; with it, unflagged: {}", levels(&quiet_at, 3))
        };
        self.opened(i, now, summary).await;
    }

    /// After a restart, leading or not: the changes filed before it back
    /// in the context (the newest of each service, as many as it holds),
    /// so that a bad change made before the restart is still blamed and
    /// its author still listed on an approval; and the watch after each
    /// service's latest change ([`Engine::watch_change`]) from what it had
    /// learnt of the series before the change (those samples went with the
    /// process), reading every sample since the change that comes in. A
    /// watch past its horizon ends at its first sample.
    async fn restore_changes(&mut self) {
        let store = self.store.clone();
        let watches = self
            .read_at_restart(
                "change watches",
                "the watches after changes made before the restart are not taken back: a service a little worse after its deploy is not paged by them",
                || store.change_watches(),
            )
            .await;
        let mut n = 0;
        for (service, _, body) in watches {
            match serde_json::from_str::<Vec<crate::correlate::watch::Saved>>(&body) {
                Ok(saved) => {
                    n += saved.len();
                    self.watch.restore(saved);
                }
                Err(e) => self.stats.fault(Fault::StoreRead {
                    what: "change watches",
                    undone: &format!("the watch after {service}'s change is not taken back"),
                    error: &e,
                    kind: &"unreadable",
                }),
            }
        }
        if n > 0 {
            info!(series = n, "watches after changes taken back");
        }
        let store = self.store.clone();
        let changes = self
            .read_at_restart(
                "changes",
                "changes filed before the restart are not weighed: none is blamed, no author is listed on an approval",
                || store.recent_changes(crate::context::CHANGES_PER_SERVICE),
            )
            .await;
        let n = changes.len();
        for c in changes {
            self.context.record(crate::context::ContextMsg::Change(c));
        }
        if n > 0 {
            info!(changes = n, "changes filed before the restart restored");
        }
    }

    /// After a restart: the gateway re-sends every action written ahead
    /// and never answered, under its own key, and seeds the cooldown; the
    /// approvals left waiting are expired; an incident cut off mid-way is
    /// restored from its checkpoint ([`Engine::restore`]), or goes to a
    /// person when it has none.
    async fn resume(&mut self) {
        if let Err(error) = self.gateway.resume() {
            self.stats.fault(Fault::StoreRead {
                what: "actions",
                undone: "nothing resumed: unanswered actions not re-sent",
                error: &error,
                kind: &error.kind(),
            });
            return;
        }
        let store = self.store.clone();
        let incidents = self
            .read_at_restart(
                "incidents",
                "incidents cut off mid-playbook are neither resumed nor escalated",
                || store.incidents(),
            )
            .await;
        let store = self.store.clone();
        let actions: std::collections::HashMap<String, String> = self
            .read_at_restart(
                "actions",
                "the outcome of actions sent before the restart is unknown",
                || store.actions(),
            )
            .await
            .into_iter()
            .map(|a| (a.id, a.state))
            .collect();
        // The approvals restored incidents still wait for.
        let mut kept = std::collections::HashSet::new();
        for inc in incidents {
            // A finished incident stays as it ended; any other was cut off.
            if Terminal::from_stored(&inc.state).is_some() {
                continue;
            }
            let why = match self.read(|db| db.run_of(&inc.id)) {
                Ok(Some(json)) => match serde_json::from_str::<Checkpoint>(&json) {
                    Ok(c) => {
                        if let Some(a) = self.restore(c, &actions).await {
                            kept.insert(a);
                        }
                        continue;
                    }
                    Err(e) => format!("its checkpoint is unreadable ({e})"),
                },
                Ok(None) => "no checkpoint of it was saved".to_string(),
                Err(e) => format!("its checkpoint could not be read ({e})"),
            };
            BrainStats::bump(&self.stats.escalated);
            self.write("incident", |db| {
                db.close_incident(&inc.id, Terminal::Escalated.as_str(), None)
            });
            self.write("timeline", |db| db.timeline(
                    &inc.id,
                    inc.opened_ts,
                    "escalated",
                    &format!("the brain restarted mid-incident and {why}: unanswered actions were re-sent under their keys, nothing further is done automatically; a person must check"),
                ),
            );
        }
        // Any other approval left waiting belongs to no incident that goes
        // on: nobody can act on it any more.
        let store = self.store.clone();
        let waiting = self
            .read_at_restart(
                "approvals",
                "approvals left waiting are not expired",
                || store.approvals(Some("waiting")),
            )
            .await;
        for a in waiting.into_iter().filter(|a| !kept.contains(&a.id)) {
            self.write("approval", |db| {
                db.close_approval(
                    &a.id,
                    "expired",
                    a.deadline_ts,
                    "the brain restarted and the incident it was for did not go on; nothing was done",
                )
            });
            self.replicate_approval(&a.id).await;
        }
    }

    /// Brings an unfinished incident back from its checkpoint. The action
    /// of the step at its cursor may have gone out after the checkpoint was
    /// saved: the store knows it under its key (`<incident>-s<step>`), and
    /// its outcome there decides: still pending, the plan waits for the
    /// answer to the re-sent action; applied, the plan moves past it;
    /// failed or refused, a person decides. Waiting for a person's
    /// approval still open, it goes on waiting (the same links work, the
    /// deadline is the approval's); approved meanwhile, the plan goes on;
    /// rejected, expired or gone, a person decides. Otherwise it waits
    /// until its symptoms are judged on fresh samples ([`Due::Resume`]).
    /// Returns the approval it still waits for, if any.
    async fn restore(
        &mut self,
        c: Checkpoint,
        actions: &std::collections::HashMap<String, String>,
    ) -> Option<String> {
        use crate::incident::Wait;
        let saved = c.saved;
        let mut inc = Incident::restore(c);
        let run = inc.run();
        let at_cursor = format!("{}-s{}", inc.id, run.cursor());
        let mut trouble = None;
        let mut waits_for = None;
        if let Some(Wait::Approval { id, .. }) = run.wait() {
            let id = id.clone();
            match self.read(|db| db.approval(&id)) {
                Ok(Some(a)) if a.state == "waiting" => {
                    inc.await_approval(id.clone(), a.deadline_ts);
                    waits_for = Some(id);
                }
                Ok(Some(a)) if a.state == "approved" => inc.approve(),
                Ok(Some(a)) => {
                    trouble = Some(format!("its approval {id} was {} meanwhile", a.state))
                }
                Ok(None) => trouble = Some(format!("its approval {id} is not in the store")),
                Err(e) => trouble = Some(format!("its approval {id} could not be read ({e})")),
            }
        }
        let run = inc.run();
        let sent = match run.wait() {
            Some(Wait::Reply(a)) => Some(a.clone()),
            Some(Wait::Approval { .. }) => None,
            _ => (matches!(run.plan().get(run.cursor()), Some(Step::Act(_)))
                && actions.contains_key(&at_cursor))
            .then_some(at_cursor),
        };
        if let Some(a) = sent {
            match actions.get(&a).map(String::as_str) {
                Some("pending") => inc.await_reply(a),
                Some("applied" | "duplicate") => {
                    inc.await_reply(a.clone());
                    inc.reply(&a, true);
                }
                state => {
                    trouble = Some(format!(
                        "its action {a} is {} in the store",
                        state.unwrap_or("missing")
                    ))
                }
            }
        }
        BrainStats::bump(&self.stats.incidents_restored);
        info!(incident = %inc.id, step = inc.run().cursor(), "restart: incident restored from its checkpoint");
        self.saved.insert(inc.id.clone(), inc.revision());
        self.correlator.incidents.push(inc);
        let i = self.correlator.incidents.len() - 1;
        if let Some(why) = trouble {
            self.escalate(
                i,
                saved,
                format!("the brain restarted mid-playbook and {why}; a person must check"),
            )
            .await;
            return None;
        }
        self.write("timeline", |db| {
            db.timeline(
                &self.correlator.incidents[i].id,
                saved,
                "restored",
                match waits_for {
                    Some(_) => "the brain restarted: restored from its checkpoint; it still waits for the approval asked before (the same links work)",
                    None => "the brain restarted: restored from its checkpoint; its plan goes on once fresh samples show the symptoms persist",
                },
            )
        });
        waits_for
    }

    async fn on_result(&mut self, r: ActionResult, now: i64) {
        let (state, reason) = self.gateway.answered(&r);
        self.replicate_action(&r.action).await;
        // (An action re-sent at restart belongs to no live incident.)
        let Some(i) = self
            .correlator
            .incidents
            .iter()
            .position(|x| x.id == r.incident)
        else {
            return;
        };
        let applied = matches!(state, ActionState::Applied | ActionState::Duplicate);
        if !self.correlator.incidents[i].reply(&r.action, applied) {
            return;
        }
        if applied {
            self.publish(
                i,
                now,
                IncidentState::Acting,
                format!("action {} applied: {reason}", r.action),
            )
            .await;
        } else {
            BrainStats::bump(&self.stats.actions_failed);
            self.escalate(
                i,
                now,
                format!("action {} {}: {reason}", r.action, state.as_str()),
            )
            .await;
        }
    }

    /// A verification failed, or the plan ran out of steps unhealed: when
    /// the playbook says `on_failure: "revert"`, the undo of each reversible
    /// action it applied is appended to the plan, newest first, followed by
    /// the escalation; the undo steps pass the guards and the write-ahead
    /// like any other. Otherwise, or when nothing can be undone, escalate
    /// now. Returns whether the incident may move again.
    async fn failed(&mut self, i: usize, now: i64, why: String) -> bool {
        let revert = self.correlator.incidents[i]
            .run()
            .playbook()
            .is_some_and(|name| {
                self.runtime
                    .playbooks()
                    .iter()
                    .any(|p| p.name == name && p.meta.on_failure == OnFailure::Revert)
            });
        match self.correlator.incidents[i].fail(&why, revert) {
            Failure::Escalate(reason) => {
                self.escalate(i, now, reason).await;
                false
            }
            Failure::Revert => {
                self.publish(
                    i,
                    now,
                    IncidentState::Acting,
                    format!("{why}: reverting the playbook's actions"),
                )
                .await;
                true
            }
        }
    }

    /// Records what incident `i` cost until `end` (the continuity
    /// report's business impact), from the business series kept.
    fn measure_impact(&self, i: usize, end: i64) {
        let inc = &self.correlator.incidents[i];
        if let Some(m) = crate::kpi::payments_lost(
            &self.recent,
            &self.classes,
            inc.evidence.keys(),
            &inc.id,
            inc.onset,
            end,
        ) {
            self.write("impact", |db| db.record_impact(&m));
        }
    }

    async fn escalate(&mut self, i: usize, now: i64, why: String) {
        BrainStats::bump(&self.stats.escalated);
        self.measure_impact(i, now);
        self.correlator.incidents[i].close(Terminal::Escalated);
        let inc = &self.correlator.incidents[i];
        self.write("incident", |db| {
            db.close_incident(&inc.id, Terminal::Escalated.as_str(), None)
        });
        self.replicate_closed(i, Terminal::Escalated, None).await;
        self.publish(
            i,
            now,
            IncidentState::Escalated,
            format!("escalated to on-call: {why}"),
        )
        .await;
    }

    /// The reconciliation checks incident `i`'s playbook requires.
    fn reconcile_checks(&self, i: usize) -> Vec<crate::reconcile::ReconcileCheck> {
        let Some(name) = self.correlator.incidents[i].run().playbook() else {
            return Vec::new();
        };
        let wanted = self
            .runtime
            .playbooks()
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.meta.reconcile.clone())
            .unwrap_or_default();
        self.reconcile
            .iter()
            .filter(|c| wanted.contains(&c.name))
            .cloned()
            .collect()
    }

    /// Whether recovered incident `i` may close: its playbook requires no
    /// reconciliation, or its checks ran and agree. The first call starts
    /// the wait for the checks; a mismatch escalates it with the numbers.
    /// Returns the time its symptoms cleared when it may close.
    async fn reconciled(&mut self, i: usize, now: i64) -> Option<i64> {
        let mut checks = self.reconcile_checks(i);
        if checks.is_empty() {
            return Some(now);
        }
        let (recovered, until) = match self.correlator.incidents[i].reconciling() {
            None => {
                // A check whose indicators were never seen cannot hold the
                // incident: said once, and not waited for.
                let id = self.correlator.incidents[i].id.clone();
                let (can, cannot): (Vec<_>, Vec<_>) = checks
                    .into_iter()
                    .partition(|c| crate::reconcile::checkable(&self.recent, c));
                for c in &cannot {
                    let line =
                        crate::reconcile::run(&self.recent, c, now, now).describe(c, now, now);
                    self.write("timeline", |db| db.timeline(&id, now, "reconciled", &line));
                }
                checks = can;
                if checks.is_empty() {
                    return Some(now);
                }
                let settle = checks.iter().map(|c| c.settle_s).max().unwrap_or(0) * 1000;
                self.correlator.incidents[i].await_reconcile(now, now + settle);
                let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                let id = self.correlator.incidents[i].id.clone();
                self.write("timeline", |db| {
                    db.timeline(
                        &id,
                        now,
                        "reconciling",
                        &format!(
                            "symptoms cleared; the business flow is reconciled ({}) in {} s before the incident closes",
                            names.join(", "),
                            settle / 1000
                        ),
                    )
                });
                return None;
            }
            Some(w) => w,
        };
        if now < until {
            return None;
        }
        checks.retain(|c| crate::reconcile::checkable(&self.recent, c));
        let inc = &self.correlator.incidents[i];
        let (id, from) = (inc.id.clone(), inc.onset);
        let mut bad = Vec::new();
        for c in &checks {
            let o = crate::reconcile::run(&self.recent, c, from, until);
            let line = o.describe(c, from, until);
            info!(incident = %id, %line, "reconciliation");
            self.write("timeline", |db| {
                db.timeline(
                    &id,
                    now,
                    if o.agrees { "reconciled" } else { "mismatch" },
                    &line,
                )
            });
            if !o.agrees {
                bad.push(line);
            }
        }
        if bad.is_empty() {
            return Some(recovered);
        }
        BrainStats::bump(&self.stats.reconcile_mismatches);
        self.escalate(
            i,
            now,
            format!(
                "the symptoms cleared but the business flow is not consistent: {}",
                bad.join("; ")
            ),
        )
        .await;
        None
    }

    async fn finish(&mut self, i: usize, now: i64, t: Terminal) {
        let mut recovered = None;
        if t == Terminal::Recovered {
            match self.reconciled(i, now).await {
                Some(at) => recovered = Some(at),
                None => return,
            }
        }
        self.measure_impact(i, recovered.unwrap_or(now));
        let inc = &mut self.correlator.incidents[i];
        inc.close(t);
        let inc = &self.correlator.incidents[i];
        self.write("incident", |db| {
            db.close_incident(&inc.id, t.as_str(), recovered)
        });
        self.replicate_closed(i, t, recovered).await;
        let inc = &self.correlator.incidents[i];
        if t != Terminal::Recovered {
            self.publish(
                i,
                now,
                IncidentState::Closed,
                format!("closed: {}", t.as_str()),
            )
            .await;
            return;
        }
        BrainStats::bump(&self.stats.recovered);
        if let Some(known) = inc.lesson(now) {
            self.write("knowledge", |db| db.remember(&known));
        }
        // (After a reconciliation, the symptoms cleared before `now`.)
        let summary = format!(
            "recovered: symptoms cleared {:.1}s after onset, {} action(s) applied",
            (recovered.unwrap_or(now) - inc.onset) as f64 / 1000.0,
            inc.run().applied()
        );
        self.publish(i, now, IncidentState::Recovered, summary)
            .await;
    }

    async fn advance(&mut self, now: i64) {
        self.promote_held(now).await;
        self.promote_confirmed(now).await;
        let recent = self.recent.clone();
        for inc in &mut self.correlator.incidents {
            if inc.judged_by_value() {
                inc.rejudge(now, |k, saved| recent.values_between(k, saved, now));
            }
        }
        for i in 0..self.correlator.incidents.len() {
            // Each incident may take several steps in one call (act → wait).
            for _ in 0..16 {
                if !self.step(i, now).await {
                    break;
                }
            }
        }
        self.checkpoint(now).await;
        self.correlator.prune(now);
    }

    /// Saves the checkpoint of every unfinished incident that changed
    /// since its last one (a finished incident's is dropped with its
    /// terminal state).
    async fn checkpoint(&mut self, now: i64) {
        let mut saved = std::mem::take(&mut self.saved);
        let mut out = Vec::new();
        for inc in &self.correlator.incidents {
            if saved.get(&inc.id) == Some(&inc.revision()) {
                continue;
            }
            let Some(c) = inc.checkpoint(now) else {
                saved.remove(&inc.id);
                continue;
            };
            match serde_json::to_string(&c) {
                Ok(json) => {
                    self.write("checkpoint", |db| db.save_run(&inc.id, &json, now));
                    saved.insert(inc.id.clone(), inc.revision());
                    out.push((inc.id.clone(), json));
                }
                Err(e) => warn!(incident = %inc.id, error = %e, "checkpoint not encoded"),
            }
        }
        self.saved = saved;
        for (id, json) in out {
            self.replicate(&format!("{}{id}", ha::RUN), json.into())
                .await;
        }
    }

    /// Moves incident `i` one step: asks it what it needs and routes that
    /// to the stage that owns it. Returns whether it may move again.
    async fn step(&mut self, i: usize, now: i64) -> bool {
        match self.correlator.incidents[i].due(now) {
            Due::Nothing => false,
            Due::Close(t) => {
                self.finish(i, now, t).await;
                false
            }
            Due::Diagnose => {
                self.diagnose_and_decide(i, now).await;
                true
            }
            Due::Withdraw(id) => {
                self.withdraw(i, &id, now).await;
                false
            }
            Due::ApprovalExpired(id) => self.approval_timed_out(i, &id, now).await,
            Due::Judge {
                check,
                started,
                deadline,
            } => {
                let inc = &mut self.correlator.incidents[i];
                let outcome = verify::check(&check, started, deadline, now, inc);
                match inc.judged(&check, outcome) {
                    Judged::Pending => false,
                    Judged::Next => true,
                    Judged::Failed(why) => {
                        self.failed(i, now, format!("verification failed: {why}"))
                            .await
                    }
                }
            }
            Due::OutOfSteps => {
                self.failed(
                    i,
                    now,
                    "the playbook ran out of steps before the symptoms cleared".into(),
                )
                .await
            }
            Due::Step(step) => self.run_step(i, now, step).await,
            Due::Resume => self.resume_plan(i, now).await,
            Due::Unjudged => {
                self.escalate(
                    i,
                    now,
                    format!(
                        "the brain restarted mid-playbook and no fresh sample of the symptoms came within {} s: whether the fault persists is unknown; a person must check",
                        crate::incident::RESUME_WAIT_MS / 1000
                    ),
                )
                .await;
                false
            }
        }
    }

    /// Incident `i` was restored after a restart and its symptoms persist:
    /// the plan goes on from its cursor if the playbook, run again on the
    /// same facts with today's playbooks and topology, plans the same;
    /// otherwise the plan can no longer be trusted and a person decides.
    async fn resume_plan(&mut self, i: usize, now: i64) -> bool {
        let inc = &self.correlator.incidents[i];
        let run = inc.run();
        let trusted = if run.reverting() {
            // Undoing what was applied is planned from the applied
            // actions themselves.
            Ok(())
        } else {
            let pb = run
                .playbook()
                .and_then(|name| self.runtime.playbooks().iter().find(|p| p.name == name));
            match (pb, run.facts()) {
                (None, _) => Err(format!(
                    "playbook {} is no longer loaded",
                    run.playbook().unwrap_or("?")
                )),
                (_, None) => Err("the facts its plan was made from were not saved".into()),
                (Some(pb), Some(facts)) => {
                    match crate::blocking::run(|| self.runtime.plan(pb, facts)) {
                        Ok(p) if p == run.plan() => Ok(()),
                        Ok(_) => Err(format!(
                            "playbook {} now plans differently for the same facts",
                            pb.name
                        )),
                        Err(e) => Err(format!("playbook {} failed: {e}", pb.name)),
                    }
                }
            }
        };
        if let Err(why) = trusted {
            self.escalate(
                i,
                now,
                format!("the brain restarted mid-playbook and the plan can no longer be trusted: {why}; a person must check"),
            )
            .await;
            return false;
        }
        let inc = &mut self.correlator.incidents[i];
        inc.confirm();
        let still: Vec<String> = inc
            .symptoms()
            .iter()
            .filter(|k| inc.evidence[**k].active)
            .map(|k| k.to_string())
            .collect();
        let (cursor, steps) = (inc.run().cursor(), inc.run().plan().len());
        self.publish(
            i,
            now,
            IncidentState::Acting,
            format!(
                "resumed after a restart at step {} of {steps}: the symptoms persist ({})",
                cursor + 1,
                still.join(", ")
            ),
        )
        .await;
        true
    }

    async fn diagnose_and_decide(&mut self, i: usize, now: i64) {
        // The knowledge base: resolved incidents that looked like this one.
        let signature = self.correlator.incidents[i].signature();
        let similar = self
            .read(|db| db.similar(&signature, SIMILAR_MIN, 3))
            .unwrap_or_else(|e| {
                error!(error = %e, "knowledge base unreadable; diagnosing without it");
                Vec::new()
            });
        let measured = {
            let inc = &self.correlator.incidents[i];
            // What is known for sure at `now`: the samples before it (more
            // batches of `now` itself may still be on their way).
            let now = now - 1;
            let (topo, classes) = (&self.topology, &self.classes);
            diagnose::Measured {
                candidates: self
                    .recent
                    .scan(|h| diagnose::localize::localize(inc, topo, h, classes, now)),
                step_ms: self.recent.step_of(inc.evidence.keys(), now),
                scrape_ms: self
                    .recent
                    .scrape_of_all(inc.evidence.keys(), now)
                    .unwrap_or(0),
            }
        };
        // The rules are Rhai, with a time budget: off the async workers.
        let (hyps, failed) = crate::blocking::run(|| {
            self.rules.diagnose(
                &self.correlator.incidents[i],
                &self.topology,
                &self.context,
                &similar,
                &measured,
            )
        });
        for e in &failed {
            self.stats.fault(Fault::Rule {
                error: &e.to_string(),
            });
        }
        let ranked: Vec<_> = hyps
            .iter()
            .map(|h| {
                (
                    h.cause.clone(),
                    h.target.clone(),
                    h.confidence,
                    h.evidence.clone(),
                )
            })
            .collect();
        let id = self.correlator.incidents[i].id.clone();
        self.write("hypotheses", |db| db.set_hypotheses(&id, &ranked));
        let top = hyps[0].clone();
        if let Some(s) = self.correlator.incidents[i].symptoms().first() {
            self.write("series", |db| db.set_incident_series(&id, &s.to_string()));
        }
        self.correlator.incidents[i].hypotheses = hyps;
        self.publish(
            i,
            now,
            IncidentState::Diagnosed,
            format!(
                "diagnosis: {} on {} (confidence {:.0}%): {}{}",
                top.cause,
                top.target,
                top.confidence * 100.0,
                top.evidence.join("; "),
                similar
                    .iter()
                    .map(|(s, k)| format!(
                        "; like {} ({:.0}% alike): {} on {}, healed by {}",
                        k.incident,
                        s * 100.0,
                        k.cause,
                        k.target,
                        k.healed_by
                    ))
                    .collect::<String>()
            ),
        )
        .await;
        let Some(pb) = self.runtime.for_cause(&top.cause).cloned() else {
            self.escalate(i, now, format!("no playbook handles {}", top.cause))
                .await;
            return;
        };
        let inc = &self.correlator.incidents[i];
        let facts = IncidentFacts {
            id: inc.id.clone(),
            cause: top.cause.clone(),
            target: top.target.clone(),
            at: top.at.clone(),
            service: inc.service.clone(),
            confidence: top.confidence,
            symptoms: inc.symptoms().iter().map(|k| k.to_string()).collect(),
        };
        let plan = match crate::blocking::run(|| self.runtime.plan(&pb, &facts)) {
            Ok(p) => p,
            Err(e) => {
                self.stats.fault(Fault::Playbook {
                    name: &pb.name,
                    error: &e.to_string(),
                });
                self.escalate(i, now, format!("playbook {} failed", pb.name))
                    .await;
                return;
            }
        };
        let acts = plan.iter().any(|s| matches!(s, Step::Act(_)));
        self.correlator.incidents[i].begin(pb.name.clone(), plan, facts);
        if pb.meta.approval == Approval::DryRun {
            self.record_dry_run(i, now).await;
            return;
        }
        let mut why = Vec::new();
        if pb.meta.approval == Approval::Approval {
            why.push(format!(
                "playbook {} ({} risk) needs a person's approval",
                pb.name,
                pb.meta.risk.as_str()
            ));
        }
        if let Some(ap) = &self.approvals {
            if top.confidence < ap.cfg().min_confidence {
                why.push(format!(
                    "the diagnosis is {:.0}% confident, below the {:.0}% automation needs",
                    top.confidence * 100.0,
                    ap.cfg().min_confidence * 100.0
                ));
            }
            if let Some(f) = self.gateway.guards().frozen(now) {
                why.push(format!("change freeze: {f}"));
            }
        }
        if why.is_empty() || !acts {
            return;
        }
        if self.approvals.is_some() {
            self.request_approval(i, now, &pb, why).await;
        } else if pb.meta.approval == Approval::Approval {
            self.escalate(i, now, why.join("; ")).await;
        }
    }

    /// Records every action of incident `i`'s plan as a dry run, and
    /// closes it.
    async fn record_dry_run(&mut self, i: usize, now: i64) {
        let inc = &self.correlator.incidents[i];
        let run = inc.run();
        for (n, step) in run.plan().iter().enumerate() {
            if let Step::Act(a) = step {
                let intent = Intent {
                    incident: &inc.id,
                    playbook: run.playbook().unwrap_or_default(),
                    step: n,
                    action: a,
                    approved: run.approved(),
                };
                self.gateway.dry_run(&intent, now);
            }
        }
        self.finish(i, now, Terminal::DryRun).await;
    }

    /// Carries out `step`, the one at incident `i`'s cursor.
    async fn run_step(&mut self, i: usize, now: i64, step: Step) -> bool {
        let a = match step {
            Step::Escalate(why) => {
                self.escalate(i, now, why).await;
                return false;
            }
            Step::Verify { check, window_ms } => {
                self.correlator.incidents[i].await_verdict(check, now, window_ms);
                return true;
            }
            Step::Act(a) => a,
        };
        // The run is saved before its action is written ahead: after a
        // crash, the action at the saved cursor is found under its key.
        self.checkpoint(now).await;
        let inc = &self.correlator.incidents[i];
        let run = inc.run();
        let intent = Intent {
            incident: &inc.id,
            playbook: run.playbook().unwrap_or_default(),
            step: run.cursor(),
            action: &a,
            approved: run.approved(),
        };
        let ready = match self.gateway.admit(&intent, now) {
            Admission::Ready(r) => r,
            Admission::Refused(why) => {
                self.escalate(i, now, format!("action refused: {why}"))
                    .await;
                return false;
            }
            Admission::DryRun => {
                self.record_dry_run(i, now).await;
                return false;
            }
            Admission::NotWritten(_) => {
                self.escalate(
                    i,
                    now,
                    "the store refused the action; nothing was sent".into(),
                )
                .await;
                return false;
            }
        };
        self.publish(
            i,
            now,
            IncidentState::Acting,
            format!(
                "action {}: {} {} {}",
                ready.id(),
                a.kind.as_str(),
                a.target,
                ready.params()
            ),
        )
        .await;
        self.correlator.incidents[i].await_reply(ready.id().to_string());
        self.replicate_action(ready.id()).await;
        if !self.leading() {
            // The lease lapsed meanwhile: the action stays written ahead,
            // and whoever leads now sends it under its key.
            warn!(action = %ready.id(), "lease lapsed before sending; left to the new leader");
            return false;
        }
        self.gateway.dispatch(ready);
        false
    }
}
