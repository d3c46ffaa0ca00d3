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
                    let _ = node.bus.publish(&feed, bytes.into()).await;
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
    emit(
        &node.bus,
        &events,
        platform.now_ms(),
        "finished",
        format!("run {} finished", s.name),
    )
    .await;
    platform.truth().clone()
}
