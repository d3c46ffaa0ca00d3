//! A running agent: its source and the host collector, the publisher and
//! the executor of its actuators on one bus, under one shutdown token.

use std::{sync::Arc, time::Duration};

use selfheal_bus::{
    Actuator, Bus, BusError, IndicatorBatch, Layer, Sample, Subjects, WIRE_VERSION, wall_ms,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    AgentConfig, AgentStats,
    executor::Executor,
    procfs::HostCollector,
    publisher::Publisher,
    readings,
    source::{Source, SourceError},
};

/// An agent ready to run.
pub struct Agent {
    /// Configuration.
    pub config: AgentConfig,
    /// The bus.
    pub bus: Bus,
    /// Subjects.
    pub subjects: Subjects,
    /// Where platform indicators come from (none: only the host's own,
    /// on a wall-clock interval).
    pub source: Option<Box<dyn Source>>,
    /// What carries out actions, tried in order (with `actuate` on).
    pub actuators: Vec<Arc<dyn Actuator>>,
}

/// The agent's clock: the platform time of the last frame when it follows
/// a source (the simulator's feed runs on its own clock), the wall clock
/// otherwise, read afresh each time.
struct Clock {
    follows_source: bool,
    platform: std::sync::atomic::AtomicI64,
}

impl Clock {
    fn new(follows_source: bool) -> Self {
        Clock {
            follows_source,
            platform: std::sync::atomic::AtomicI64::new(wall_ms()),
        }
    }

    fn now(&self) -> i64 {
        if self.follows_source {
            self.platform.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            wall_ms()
        }
    }

    fn follow(&self, ts: i64) {
        self.platform
            .store(ts, std::sync::atomic::Ordering::Relaxed);
    }
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

/// The actuators the agent brings itself, from its configuration (units
/// on its host it may restart); a platform adds its own after them.
pub fn own_actuators(cfg: &AgentConfig) -> Vec<Arc<dyn Actuator>> {
    let mut v: Vec<Arc<dyn Actuator>> = Vec::new();
    if !cfg.process.is_empty() {
        v.push(Arc::new(crate::process::ProcessActuator::new(
            cfg.process.clone(),
        )));
    }
    for h in &cfg.haproxy {
        v.push(Arc::new(crate::haproxy::HaproxyActuator::new(h.clone())));
    }
    v
}

impl Agent {
    /// Subscribes and starts the agent's tasks.
    pub async fn spawn(mut self) -> Result<AgentHandle, BusError> {
        let stats = Arc::new(AgentStats::default());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let source = self.source.take();
        let clock = Arc::new(Clock::new(source.is_some()));
        // Dial tests and scrapes run on their own clocks and hand their
        // batches to the collector, which numbers and publishes them with
        // everything else.
        let (gathered_tx, gathered_rx) = tokio::sync::mpsc::channel(64);
        if !self.config.probe.is_empty() || !self.config.scrape.is_empty() {
            let client = crate::probe::client().map_err(BusError::Other)?;
            let mut gatherers: Vec<Box<dyn Gather>> = Vec::new();
            for p in self.config.probe.clone() {
                gatherers.push(Box::new(
                    crate::probe::Dialer::new(p).map_err(BusError::Other)?,
                ));
            }
            for t in self.config.scrape.clone() {
                gatherers.push(Box::new(
                    crate::scrape::Scraper::new(t).map_err(BusError::Other)?,
                ));
            }
            for g in gatherers {
                tasks.push(tokio::spawn(gather_every(
                    g,
                    Gathering {
                        client: client.clone(),
                        idc: self.config.idc.clone(),
                        clock: clock.clone(),
                        stats: stats.clone(),
                    },
                    gathered_tx.clone(),
                    stop.clone(),
                )));
            }
        }
        drop(gathered_tx);
        if self.config.actuate {
            let acts = self.bus.subscribe(&self.subjects.all_acts()).await?;
            let executor = Executor::new(std::mem::take(&mut self.actuators), stats.clone());
            tasks.push(tokio::spawn(actuate(
                acts,
                executor,
                self.bus.clone(),
                clock.clone(),
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(collect(
            self,
            source,
            gathered_rx,
            stats.clone(),
            clock,
            stop.clone(),
        )));
        Ok(AgentHandle { stats, stop, tasks })
    }
}

async fn actuate(
    mut acts: selfheal_bus::Subscription,
    mut executor: Executor,
    bus: Bus,
    clock: Arc<Clock>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = acts.next() => {
                let Some(msg) = msg else { break };
                let now = clock.now();
                let answer = executor.handle(&msg.payload, now).await;
                if let Some(reply) = msg.reply
                    && let Err(e) = selfheal_bus::publish_msg(&bus, &reply, &answer).await {
                        warn!(error = %e, "could not answer action request");
                    }
            }
        }
    }
}

/// Readings remembered to skip a resent one.
const RECENT_READINGS: usize = 256;

/// The number before an agent's first batch: its start, in microseconds
/// since the epoch. An agent makes fewer than a batch a microsecond over
/// its life, so a restarted one numbers above all it sent before, and the
/// brain, which takes a source's batch of a number once, never mistakes
/// a new batch for one sent again.
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn collect(
    agent: Agent,
    mut source: Option<Box<dyn Source>>,
    mut gathered: tokio::sync::mpsc::Receiver<Vec<IndicatorBatch>>,
    stats: Arc<AgentStats>,
    clock: Arc<Clock>,
    stop: CancellationToken,
) {
    let cfg = &agent.config;
    let mut publisher = Publisher::new(agent.bus.clone(), cfg.buffer_batches, stats.clone())
        .durable_for(format!("{}.ind.", agent.subjects.prefix()))
        .encoding(cfg.encoding);
    let mut host = HostCollector::default();
    let hostname = host.hostname();
    let mut last_host: Option<std::time::Instant> = None;
    let mut seq = first_seq();
    let mut seen = readings::Seen::default();
    // One line per bad reading would be a flood of its own; the count is
    // exact.
    let bad_frame_log = selfheal_bus::lograte::LogGate::default();
    // The readings handled last: a source may resend the ones it sent just
    // before an outage (they may have died with the connection).
    let mut recent: std::collections::VecDeque<(u64, i64)> =
        std::collections::VecDeque::with_capacity(RECENT_READINGS);
    let has_source = source.is_some();
    let mut retry = tokio::time::interval(Duration::from_millis(100));
    let host_period = Duration::from_millis(cfg.host_interval_ms.max(1));
    let mut host_tick = tokio::time::interval(host_period);
    loop {
        let frame_ts = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = async { source.as_mut()?.next().await }, if has_source => {
                let Some(next) = next else { break };
                match next {
                    Ok(r) if r.key.is_some_and(|k| recent.contains(&k)) => {
                        AgentStats::bump(&stats.duplicate_frames);
                        continue;
                    }
                    Ok(r) => {
                        if let Some(k) = r.key {
                            if recent.len() == RECENT_READINGS {
                                recent.pop_front();
                            }
                            recent.push_back(k);
                        }
                        clock.follow(r.ts);
                        for b in readings::batches(&r, &cfg.name, &mut seq) {
                            let subject = agent.subjects.indicators(b.layer, &b.idc, &b.service);
                            AgentStats::bump(&stats.indicator_batches);
                            publisher.send_batch(subject, &b).await;
                        }
                        for h in readings::hotspots(&r) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.hot(&h.service), &h).await;
                        }
                        for c in readings::changes(&r) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.change(&c.service), &c).await;
                        }
                        for a in seen.observe(&r, &cfg.name) {
                            AgentStats::bump(&stats.context_msgs);
                            publisher.send_msg(agent.subjects.announce(&format!("{}-{}", cfg.name, a.idc)), &a).await;
                        }
                        AgentStats::bump(&stats.frames);
                        r.ts
                    }
                    Err(SourceError::Unreadable(why)) => {
                        AgentStats::bump(&stats.bad_frames);
                        if bad_frame_log.allow().is_some() {
                            warn!(bad_frames = AgentStats::get(&stats.bad_frames), %why, "unreadable reading dropped");
                        }
                        continue;
                    }
                }
            }
            _ = host_tick.tick(), if !has_source => {
                clock.now()
            }
            Some(batches) = gathered.recv() => {
                for mut b in batches {
                    seq += 1;
                    b.seq = seq;
                    b.source = cfg.name.clone();
                    AgentStats::bump(&stats.indicator_batches);
                    let subject = agent.subjects.indicators(b.layer, &b.idc, &b.service);
                    publisher.send_batch(subject, &b).await;
                }
                continue;
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
        AgentStats::bump(&stats.indicator_batches);
        publisher.send_batch(subject, &batch).await;
    }
}

/// What a timed gatherer works with.
struct Gathering {
    client: reqwest::Client,
    /// The agent's IDC.
    idc: String,
    clock: Arc<Clock>,
    stats: Arc<AgentStats>,
}

/// Something the agent gathers on its own interval of wall time: a dial
/// test, a scrape. Its batches are stamped with the agent's clock after
/// the gathering.
#[async_trait::async_trait]
trait Gather: Send {
    /// Time between two gatherings, ms.
    fn interval_ms(&self) -> u64;
    /// Gathers once; `failures` rate-limits the log of its failures.
    async fn gather(
        &mut self,
        g: &Gathering,
        failures: &selfheal_bus::lograte::LogGate,
    ) -> Vec<IndicatorBatch>;
}

#[async_trait::async_trait]
impl Gather for crate::probe::Dialer {
    fn interval_ms(&self) -> u64 {
        self.probe.interval_ms
    }

    async fn gather(
        &mut self,
        g: &Gathering,
        failures: &selfheal_bus::lograte::LogGate,
    ) -> Vec<IndicatorBatch> {
        let d = self.dial(&g.client).await;
        AgentStats::bump(&g.stats.probes);
        let p = &self.probe;
        if !d.ok {
            AgentStats::bump(&g.stats.probe_failures);
            if failures.allow().is_some() {
                warn!(probe = %p.name, url = %p.url, why = d.why.as_deref().unwrap_or(""), "dial test failed");
            }
        }
        vec![d.batch(p, &g.idc, g.clock.now())]
    }
}

#[async_trait::async_trait]
impl Gather for crate::scrape::Scraper {
    fn interval_ms(&self) -> u64 {
        self.target.interval_ms
    }

    async fn gather(
        &mut self,
        g: &Gathering,
        failures: &selfheal_bus::lograte::LogGate,
    ) -> Vec<IndicatorBatch> {
        let text = self.fetch(&g.client).await;
        AgentStats::bump(&g.stats.scrapes);
        let ts = g.clock.now();
        match text {
            Ok(text) => {
                let read = self.read(&text, ts, &g.idc);
                g.stats
                    .scrape_dropped
                    .fetch_add(read.dropped, std::sync::atomic::Ordering::Relaxed);
                read.batches
            }
            Err(why) => {
                AgentStats::bump(&g.stats.scrape_failures);
                if failures.allow().is_some() {
                    warn!(target = %self.target.name, url = %self.target.url, %why, "scrape failed");
                }
                self.up(false, ts, &g.idc).batches
            }
        }
    }
}

/// Runs `what` every `interval_ms` of wall time and hands its batches to
/// the collector, until `stop`.
async fn gather_every(
    mut what: Box<dyn Gather>,
    g: Gathering,
    out: tokio::sync::mpsc::Sender<Vec<IndicatorBatch>>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_millis(what.interval_ms()));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One line per failure would be a flood of its own; the counts are exact.
    let failures = selfheal_bus::lograte::LogGate::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        let batches = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            b = what.gather(&g, &failures) => b,
        };
        if !batches.is_empty() && out.send(batches).await.is_err() {
            break;
        }
    }
}
