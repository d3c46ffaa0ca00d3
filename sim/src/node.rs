//! Runs a [`Platform`] on a bus: one frame per tick on `<p>.sim.feed`,
//! commands served on `<p>.sim.ctl`, ground truth on `<p>.sim.event`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use selfheal_bus::{Bus, Subjects, Topology};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Scenario,
    feed::{Command, CommandReply, SimEvent},
    platform::{Platform, Truth},
};

/// How fast platform time runs against wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// `n` platform seconds per wall second.
    Times(f64),
}

impl Speed {
    fn tick_period(self, tick_ms: u64) -> Duration {
        let Speed::Times(x) = self;
        Duration::from_secs_f64(tick_ms as f64 / 1000.0 / x.max(1e-3))
    }
}

/// Largest control command accepted, bytes.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// A simulator ready to run on a bus.
pub struct SimNode {
    /// The bus.
    pub bus: Bus,
    /// Subjects.
    pub subjects: Subjects,
    /// Platform topology.
    pub topology: Topology,
    /// What to run.
    pub scenario: Scenario,
    /// How fast.
    pub speed: Speed,
    /// Platform time of tick 0, ms since the epoch.
    pub start_ms: i64,
    /// Lockstep: when set, each tick also waits for one permit from this
    /// channel, so a driver can let every component finish a tick before
    /// the next (deterministic drills). The run ends when it closes.
    pub lockstep: Option<tokio::sync::mpsc::Receiver<()>>,
}

/// A running simulator.
pub struct SimHandle {
    truth: Arc<Mutex<Truth>>,
    ticks: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
    join: JoinHandle<Truth>,
}

impl SimHandle {
    /// The ground truth so far.
    pub fn truth(&self) -> Truth {
        self.truth.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ticks published so far.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A shared view of [`ticks`](Self::ticks).
    pub fn tick_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.ticks.clone()
    }

    /// A token that stops the run early when cancelled.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the run early.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the end of the run and returns the final truth.
    pub async fn finish(self) -> Truth {
        match self.join.await {
            Ok(t) => t,
            Err(_) => self.truth.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

impl SimNode {
    /// Subscribes to the control subject and starts ticking.
    pub async fn spawn(self) -> Result<SimHandle, selfheal_bus::BusError> {
        let ctl = self.bus.subscribe(&self.subjects.sim_ctl()).await?;
        let truth = Arc::new(Mutex::new(Truth::default()));
        let stop = CancellationToken::new();
        let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let join = tokio::spawn(run(self, ctl, truth.clone(), stop.clone(), ticks.clone()));
        Ok(SimHandle {
            truth,
            ticks,
            stop,
            join,
        })
    }
}

async fn emit(bus: &Bus, subject: &str, ts: i64, kind: &str, detail: String) {
    info!(target: "selfheal::sim", kind, %detail, "platform event");
    let ev = SimEvent {
        ts,
        kind: kind.to_string(),
        detail,
    };
    if let Ok(bytes) = serde_json::to_vec(&ev) {
        let _ = bus.publish(subject, bytes.into()).await;
    }
}

/// Most bytes of feed frames kept while nobody takes them.
pub const FEED_BACKLOG_BYTES: usize = 64 << 20;
/// How long a finished run still tries to deliver what it kept.
pub const FEED_DRAIN: Duration = Duration::from_secs(30);

/// The telemetry export's own buffer. A frame that cannot go out (the bus
/// away) is kept, in order, up to [`FEED_BACKLOG_BYTES`] (the oldest
/// dropped and counted beyond); kept frames go out as requests and leave
/// the backlog only when a collector (the agent) confirms it has them,
/// since after an outage the simulator may be back on the bus before any
/// collector is. New frames wait behind the backlog.
///
/// A frame published just before the bus went away may have died with the
/// connection: the frames of the last [`RESEND_WINDOW`] are resent first
/// (the agent skips the ones it already has).
#[derive(Default)]
struct Backlog {
    frames: std::collections::VecDeque<bytes::Bytes>,
    bytes: usize,
    dropped: u64,
    recent: std::collections::VecDeque<(std::time::Instant, bytes::Bytes)>,
}

/// How far back frames are resent after a failed publish.
pub const RESEND_WINDOW: Duration = Duration::from_secs(2);

impl Backlog {
    async fn send(&mut self, bus: &Bus, subject: &str, frame: bytes::Bytes) {
        let now = std::time::Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RESEND_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.frames.is_empty() {
            if bus.publish(subject, frame.clone()).await.is_ok() {
                self.recent.push_back((now, frame));
                return;
            }
            // The bus just went away: what went out last may be lost too.
            for (_, f) in self.recent.drain(..).rev() {
                self.bytes += f.len();
                self.frames.push_front(f);
            }
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        while self.bytes > FEED_BACKLOG_BYTES
            && let Some(old) = self.frames.pop_front()
        {
            self.bytes -= old.len();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(target: "selfheal::sim", dropped = self.dropped, "feed backlog full, dropping the oldest frames");
            }
        }
        self.flush(bus, subject).await;
    }

    async fn flush(&mut self, bus: &Bus, subject: &str) {
        while let Some(f) = self.frames.front() {
            if !bus.is_connected()
                || bus
                    .request(subject, f.clone(), Duration::from_secs(2))
                    .await
                    .is_err()
            {
                return;
            }
            self.bytes -= f.len();
            self.frames.pop_front();
        }
    }
}

/// Waits for the next tick: the pace, and in lockstep a permit. `false`
/// when the lockstep driver is gone.
async fn next_tick(
    interval: &mut tokio::time::Interval,
    permits: &mut Option<tokio::sync::mpsc::Receiver<()>>,
) -> bool {
    interval.tick().await;
    match permits {
        Some(rx) => rx.recv().await.is_some(),
        None => true,
    }
}

async fn run(
    mut node: SimNode,
    mut ctl: selfheal_bus::Subscription,
    shared: Arc<Mutex<Truth>>,
    stop: CancellationToken,
    ticks_done: Arc<std::sync::atomic::AtomicU64>,
) -> Truth {
    let mut permits = node.lockstep.take();
    let s = &node.scenario;
    let mut platform = Platform::new(node.topology.clone(), s, node.start_ms);
    let ticks = s.duration_s * 1000 / s.tick_ms;
    let mut interval = tokio::time::interval(node.speed.tick_period(s.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (feed, events) = (node.subjects.sim_feed(), node.subjects.sim_event());
    let mut bad_commands = 0u64;
    let mut backlog = Backlog::default();
    emit(
        &node.bus,
        &events,
        node.start_ms,
        "started",
        format!("run {} started, seed {}", s.name, s.seed),
    )
    .await;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(msg) = ctl.next() => {
                let reply = if msg.payload.len() > MAX_COMMAND_BYTES {
                    Err("command too large".to_string())
                } else {
                    match serde_json::from_slice::<Command>(&msg.payload) {
                        Ok(cmd) => platform.apply(&cmd),
                        Err(e) => Err(format!("malformed command: {e}")),
                    }
                };
                let now = platform.now_ms();
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = platform.truth().clone();
                let answer = match reply {
                    Ok(detail) => {
                        emit(&node.bus, &events, now, "action_applied", detail.clone()).await;
                        CommandReply { ok: true, message: detail, ts: now }
                    }
                    Err(why) => {
                        bad_commands += 1;
                        warn!(target: "selfheal::sim", %why, bad_commands, "command refused");
                        CommandReply { ok: false, message: why, ts: now }
                    }
                };
                if let (Some(reply), Ok(bytes)) = (msg.reply, serde_json::to_vec(&answer)) {
                    let _ = node.bus.publish(&reply, bytes.into()).await;
                }
            }
            more = next_tick(&mut interval, &mut permits) => {
                if !more {
                    break;
                }
                let (frame, happened) = platform.step();
                if let Ok(bytes) = serde_json::to_vec(&frame) {
                    backlog.send(&node.bus, &feed, bytes.into()).await;
                }
                for (kind, detail) in happened {
                    emit(&node.bus, &events, frame.ts, &kind, detail).await;
                }
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = platform.truth().clone();
                ticks_done.store(frame.tick, std::sync::atomic::Ordering::SeqCst);
                if frame.tick >= ticks {
                    break;
                }
            }
        }
    }
    // What an outage kept is still delivered after the last tick.
    let drain_until = tokio::time::Instant::now() + FEED_DRAIN;
    while !backlog.frames.is_empty()
        && !stop.is_cancelled()
        && tokio::time::Instant::now() < drain_until
    {
        backlog.flush(&node.bus, &feed).await;
        if !backlog.frames.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if !backlog.frames.is_empty() || backlog.dropped > 0 {
        warn!(target: "selfheal::sim", undelivered = backlog.frames.len(), dropped = backlog.dropped, "feed frames lost to an outage");
    }
    emit(
        &node.bus,
        &events,
        platform.now_ms(),
        "finished",
        format!("run {} finished", s.name),
    )
    .await;
    // What was published last is still in the client's buffer: out with it
    // before the run's bus handle may be dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), node.bus.flush()).await;
    platform.truth().clone()
}
