//! A running agent: the collectors, the publisher and the actuator on one
//! bus, under one shutdown token.

use std::{sync::Arc, time::Duration};

use selfheal_bus::{Bus, BusError, IndicatorBatch, Layer, Sample, Subjects, WIRE_VERSION, wall_ms};
use selfheal_sim::feed::Frame;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    AgentConfig, AgentStats, actuator::Actuator, config::Feed, procfs::HostCollector,
    publisher::Publisher, sim_feed,
};

/// Largest feed frame accepted, bytes.
const MAX_FRAME_BYTES: usize = 4 << 20;

/// An agent ready to run.
pub struct Agent {
    /// Configuration.
    pub config: AgentConfig,
    /// The bus.
    pub bus: Bus,
    /// Subjects.
    pub subjects: Subjects,
}

/// A running agent.
pub struct AgentHandle {
    /// Its counters.
    pub stats: Arc<AgentStats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// Stops every task and waits for them (bounded).
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Agent {
    /// Subscribes and starts the agent's tasks.
    pub async fn spawn(self) -> Result<AgentHandle, BusError> {
        let stats = Arc::new(AgentStats::default());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        // The agent's clock: the platform time of the last frame when it
        // follows the simulator, the wall clock otherwise.
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(wall_ms()));
        let feed = match self.config.feed {
            Feed::Sim => Some(self.bus.subscribe(&self.subjects.sim_feed()).await?),
            Feed::None => None,
        };
        if self.config.actuate {
            let acts = self.bus.subscribe(&self.subjects.all_acts()).await?;
            let actuator = Actuator::new(
                self.bus.clone(),
                self.subjects.clone(),
                Duration::from_millis(self.config.actuate_timeout_ms),
                stats.clone(),
            );
            tasks.push(tokio::spawn(actuate(
                acts,
                actuator,
                self.bus.clone(),
                clock.clone(),
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(collect(
            self,
            feed,
            stats.clone(),
            clock,
            stop.clone(),
        )));
        Ok(AgentHandle { stats, stop, tasks })
    }
}

async fn actuate(
    mut acts: selfheal_bus::Subscription,
    mut actuator: Actuator,
    bus: Bus,
    clock: Arc<std::sync::atomic::AtomicI64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = acts.next() => {
                let Some(msg) = msg else { break };
                let now = clock.load(std::sync::atomic::Ordering::Relaxed);
                let answer = actuator.handle(&msg.payload, now).await;
                if let Some(reply) = msg.reply
                    && let Err(e) = selfheal_bus::publish_msg(&bus, &reply, &answer).await {
                        warn!(error = %e, "could not answer action request");
                    }
            }
        }
    }
}

/// Frames remembered to skip a resent one.
const RECENT_FRAMES: usize = 256;

async fn collect(
    agent: Agent,
    mut feed: Option<selfheal_bus::Subscription>,
    stats: Arc<AgentStats>,
    clock: Arc<std::sync::atomic::AtomicI64>,
    stop: CancellationToken,
) {
    let cfg = &agent.config;
    let mut publisher = Publisher::new(agent.bus.clone(), cfg.buffer_batches, stats.clone());
    let mut host = HostCollector::default();
    let hostname = host.hostname();
    let mut last_host: Option<std::time::Instant> = None;
    let mut seq = 0u64;
    let mut seen = sim_feed::Seen::default();
    // One line per bad frame would be a flood of its own; the count is exact.
    let bad_frame_log = selfheal_bus::lograte::LogGate::default();
    // The frames handled last: the simulator resends the ones it sent just
    // before an outage (they may have died with the connection).
    let mut recent_frames: std::collections::VecDeque<(u64, i64)> =
        std::collections::VecDeque::with_capacity(RECENT_FRAMES);
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    let host_period = Duration::from_millis(cfg.host_interval_ms.max(1));
    let mut host_tick = tokio::time::interval(host_period);
    loop {
        let frame_ts = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = async { feed.as_mut()?.next().await }, if feed.is_some() => {
                let Some(msg) = msg else { break };
                // A frame sent as a request is the simulator's backlog from
                // an outage: confirm it, it is ours to keep from here on.
                if let Some(reply) = &msg.reply {
                    let _ = agent.bus.publish(reply, bytes::Bytes::new()).await;
                }
                match (msg.payload.len() <= MAX_FRAME_BYTES).then(|| serde_json::from_slice::<Frame>(&msg.payload)) {
                    Some(Ok(frame)) if recent_frames.contains(&(frame.tick, frame.ts)) => {
                        AgentStats::bump(&stats.duplicate_frames);
                        continue;
                    }
                    Some(Ok(frame)) => {
                        if recent_frames.len() == RECENT_FRAMES {
                            recent_frames.pop_front();
                        }
                        recent_frames.push_back((frame.tick, frame.ts));
                        clock.store(frame.ts, std::sync::atomic::Ordering::Relaxed);
                        for b in sim_feed::batches(&frame, &cfg.name, &mut seq) {
                            let subject = agent.subjects.indicators(b.layer, &b.idc, &b.service);
                            AgentStats::bump(&stats.indicator_batches);
                            publisher.send_msg(subject, &b).await;
                        }
                        for h in sim_feed::hotspots(&frame) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.hot(&h.service), &h).await;
                        }
                        for c in sim_feed::changes(&frame) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.change(&c.service), &c).await;
                        }
                        for a in seen.observe(&frame, &cfg.name) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.announce(&format!("{}-{}", cfg.name, a.idc)), &a).await;
                        }
                        AgentStats::bump(&stats.frames);
                        frame.ts
                    }
                    _ => {
                        AgentStats::bump(&stats.bad_frames);
                        if bad_frame_log.allow().is_some() {
                            warn!(bad_frames = AgentStats::get(&stats.bad_frames), "unreadable feed frame dropped");
                        }
                        continue;
                    }
                }
            }
            _ = host_tick.tick(), if feed.is_none() => {
                let now = wall_ms();
                clock.store(now, std::sync::atomic::Ordering::Relaxed);
                now
            }
            _ = retry.tick() => {
                publisher.watch();
                if publisher.buffered() > 0 {
                    publisher.flush().await;
                }
                continue;
            }
        };
        if !cfg.host {
            continue;
        }
        // Read /proc at most once per host period of wall time and publish
        // only fresh readings (a stale value repeated would look like a flat
        // series to a detector); stamp them with the agent's clock so they
        // line up with the platform's.
        if last_host.is_some_and(|t| t.elapsed() < host_period) {
            continue;
        }
        last_host = Some(std::time::Instant::now());
        let host_values = match host.collect() {
            Ok(v) if !v.is_empty() => v,
            Ok(_) => continue,
            Err(e) => {
                AgentStats::bump(&stats.host_errors);
                warn!(error = %e, "host reading failed");
                continue;
            }
        };
        seq += 1;
        let batch = IndicatorBatch {
            v: WIRE_VERSION,
            source: cfg.name.clone(),
            seq,
            layer: Layer::Infra,
            idc: cfg.idc.clone(),
            service: "host".into(),
            samples: host_values
                .iter()
                .map(|(metric, value)| Sample {
                    scene: None,
                    link: None,
                    instance: Some(hostname.clone()),
                    metric: (*metric).to_string(),
                    labels: Default::default(),
                    ts: frame_ts,
                    value: *value,
                })
                .collect(),
        };
        let subject = agent.subjects.indicators(Layer::Infra, &cfg.idc, "host");
        publisher.send_msg(subject, &batch).await;
    }
}
