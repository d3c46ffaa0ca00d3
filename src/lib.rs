//! The `selfheal` program's wiring: the whole loop (simulator, agent,
//! brain) on one bus, used by `selfheal demo` and the end-to-end tests.
//!
//! # Layout
//! - [`run_loop`]: runs a scenario through sim → agent → bus → brain →
//!   agent → sim and reports what happened, with MTTD and MTTR.
//! - [`paths`]: where the shipped playbooks and topology are found.
//! - [`config_file`]: configuration files with every problem named at once.
//! - [`bench`]: the `selfheal bench` measurements.
//! - [`drill`]: scenario drills scored against ground truth.
//! - [`detect`]: the streaming detector over NAB-style CSV files.
//! - [`replay`]: the brain over recorded data.
//! - [`petshop`]: root-cause localization measured on the PetShop data set.
//! - [`micro`]: localization drilled on the simulator's generic
//!   microservice world.
//! - [`train`]: recording scenarios and fitting the per-service models.
//!
//! The `selfheal` binary (`src/main.rs`) only parses the command line; each
//! subcommand lives in its own module under `src/cmd/`, and every failure
//! ends in one error line with its causes and a documented exit code.
#![deny(missing_docs)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use selfheal_agent::{AgentConfig, AgentStats};
use selfheal_brain::{Brain, BrainConfig, BrainStats, store::Store};
use selfheal_bus::{
    Bus, IncidentEvent, IncidentState, Limits, Subjects, Topology, decode, wall_ms,
};
use selfheal_sim::{Scenario, SimNode, Speed, Truth, feed::SimEvent};

pub mod bench;
pub mod config_file;
pub mod detect;
pub mod drill;
pub mod ingest_bench;
pub mod micro;
pub mod paths;
pub mod patrol;
pub mod petshop;
pub mod replay;
pub mod stack_drill;
pub mod train;

/// One line of the live timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    /// Platform time, ms since the epoch.
    pub ts: i64,
    /// `platform` (ground truth) or `brain`.
    pub source: &'static str,
    /// Event kind (`fault_start`, `opened`, `diagnosed`, `acting`...).
    pub kind: String,
    /// One line for people.
    pub text: String,
}

/// How to run the loop.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The platform topology.
    pub topology: Topology,
    /// The topology file the brain is given, when it differs from the
    /// platform's (an out-of-date file); the platform's when `None`.
    pub brain_topology: Option<Topology>,
    /// Platform seconds per wall second.
    pub speed: f64,
    /// The brain's configuration (store path, playbooks, guards...).
    pub brain: BrainConfig,
    /// The agent's configuration.
    pub agent: AgentConfig,
    /// Subjects.
    pub subjects: Subjects,
    /// Stop this long (platform time) after the brain reports recovery or
    /// escalation; run the whole scenario when `None`.
    pub stop_after_outcome: Option<Duration>,
    /// Lockstep: the platform takes its next tick only once the agent and
    /// the brain have handled the last one completely (every sample
    /// detected, every anomaly correlated, every action answered). Runs are
    /// then deterministic per seed, and as fast as the pipeline allows
    /// (`speed` is an upper bound).
    pub lockstep: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct LoopOutcome {
    /// Ground truth from the platform.
    pub truth: Truth,
    /// Platform time of tick 0.
    pub start_ms: i64,
    /// The timeline, in arrival order.
    pub timeline: Vec<TimelineEntry>,
    /// Incidents in the store.
    pub incidents: Vec<selfheal_brain::store::IncidentRow>,
    /// Actions in the store.
    pub actions: Vec<selfheal_brain::store::ActionRow>,
    /// Each incident's ranked hypotheses, by incident id.
    pub hypotheses: std::collections::BTreeMap<String, Vec<selfheal_brain::store::HypothesisRow>>,
    /// When each incident was first diagnosed (platform time), by id.
    pub diagnosed_ts: std::collections::BTreeMap<String, i64>,
    /// The brain's counters.
    pub brain: Arc<BrainStats>,
    /// The agent's counters.
    pub agent: Arc<AgentStats>,
}

impl LoopOutcome {
    fn fault_start(&self) -> Option<i64> {
        self.truth.faults.first().map(|f| f.start_ms)
    }

    /// Time from the first fault to the first incident the brain opened.
    pub fn mttd_ms(&self) -> Option<i64> {
        let first = self.incidents.iter().map(|i| i.opened_ts).min()?;
        Some(first - self.fault_start()?)
    }

    /// Time from the first fault to the brain's verified recovery.
    pub fn mttr_ms(&self) -> Option<i64> {
        let rec = self.incidents.iter().filter_map(|i| i.recovered_ts).min()?;
        Some(rec - self.fault_start()?)
    }

    /// Actions that were really sent (not refused, not dry runs).
    pub fn executed_actions(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| !matches!(a.state.as_str(), "refused" | "dry_run"))
            .count()
    }
}

/// The bus connection of each component; over NATS each has its own, as
/// separate processes would.
#[derive(Clone)]
pub struct Buses {
    /// The simulator's.
    pub sim: Bus,
    /// The agent's.
    pub agent: Bus,
    /// The brain's.
    pub brain: Bus,
    /// The timeline observer's.
    pub observer: Bus,
}

impl Buses {
    /// One bus shared by every component.
    pub fn shared(bus: Bus) -> Self {
        Buses {
            sim: bus.clone(),
            agent: bus.clone(),
            brain: bus.clone(),
            observer: bus,
        }
    }
}

/// Runs `opts.scenario` through the whole loop on `bus`, calling
/// `on_event` for each timeline entry as it happens.
pub async fn run_loop(
    bus: Bus,
    opts: LoopOptions,
    on_event: impl FnMut(&TimelineEntry),
) -> anyhow::Result<LoopOutcome> {
    run_loop_on(Buses::shared(bus), opts, on_event).await
}

/// [`run_loop`] with one bus connection per component.
pub async fn run_loop_on(
    buses: Buses,
    opts: LoopOptions,
    mut on_event: impl FnMut(&TimelineEntry),
) -> anyhow::Result<LoopOutcome> {
    let subjects = opts.subjects.clone();
    let mut incidents_sub = buses.observer.subscribe(&subjects.all_incidents()).await?;
    let mut sim_sub = buses.observer.subscribe(&subjects.sim_event()).await?;
    let brain = Brain {
        config: opts.brain.clone(),
        bus: buses.brain.clone(),
        subjects: subjects.clone(),
        topology: opts
            .brain_topology
            .clone()
            .unwrap_or_else(|| opts.topology.clone()),
    }
    .spawn()
    .await
    .context("starting the brain")?;
    let agent =
        selfheal_sim::edge::agent(opts.agent.clone(), buses.agent.clone(), subjects.clone())
            .await
            .context("starting the agent")?
            .spawn()
            .await
            .context("starting the agent")?;
    // Every subscription is live before the platform starts.
    for bus in [&buses.brain, &buses.agent, &buses.observer] {
        bus.flush().await.context("syncing with the bus")?;
    }
    let start_ms = wall_ms();
    let (permits, lockstep) = if opts.lockstep {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let sim = SimNode {
        bus: buses.sim.clone(),
        subjects: subjects.clone(),
        topology: opts.topology.clone(),
        scenario: opts.scenario.clone(),
        speed: Speed::Times(opts.speed),
        start_ms,
        lockstep,
    }
    .spawn()
    .await
    .context("starting the simulator")?;
    let stepper = permits.map(|tx| {
        let ticks = sim.tick_counter();
        let (brain, agent) = (brain.stats.clone(), agent.stats.clone());
        let tick_ms = opts.scenario.tick_ms as i64;
        tokio::spawn(async move {
            for k in 1u64.. {
                if tx.send(()).await.is_err() {
                    break;
                }
                let ts = start_ms + k as i64 * tick_ms;
                let settled = || {
                    ticks.load(std::sync::atomic::Ordering::SeqCst) >= k
                        && AgentStats::get(&agent.frames) >= k
                        && BrainStats::get(&brain.batches) + brain.rejected_total()
                            >= AgentStats::get(&agent.indicator_batches)
                        && BrainStats::get(&brain.contexts_seen)
                            >= AgentStats::get(&agent.context_msgs)
                        && brain.settled(ts)
                };
                while !settled() {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
            }
        })
    });

    let mut timeline = Vec::new();
    let mut outcome_at: Option<i64> = None;
    let mut finished = false;
    let limits = Limits {
        max_skew_ms: i64::MAX / 2,
        ..Limits::default()
    };
    let paced = opts.scenario.duration_s as f64 / opts.speed.max(1e-3);
    let wall_limit =
        Duration::from_secs_f64(paced.max(opts.scenario.duration_s as f64 * 0.2) + 30.0);
    let deadline = tokio::time::Instant::now() + wall_limit;
    let mut check = tokio::time::interval(Duration::from_millis(20));
    while !finished {
        let entry = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = check.tick() => {
                if let (Some(grace), Some(at)) = (opts.stop_after_outcome, outcome_at) {
                    if sim.truth().now_ms >= at + grace.as_millis() as i64 {
                        sim.stop();
                    }
                }
                continue;
            }
            Some(m) = incidents_sub.next() => match decode::<IncidentEvent>(&m.payload, &limits, 0) {
                Ok(ev) => {
                    // Only an outcome after a fault began ends a run early.
                    let after_fault = sim.truth().faults.first().is_some_and(|f| ev.ts >= f.start_ms);
                    if after_fault && matches!(ev.state, IncidentState::Recovered | IncidentState::Escalated) {
                        outcome_at.get_or_insert(ev.ts);
                    }
                    let kind = format!("{:?}", ev.state).to_lowercase();
                    TimelineEntry { ts: ev.ts, source: "brain", kind, text: ev.summary }
                }
                Err(_) => continue,
            },
            Some(m) = sim_sub.next() => match serde_json::from_slice::<SimEvent>(&m.payload) {
                Ok(ev) => {
                    finished = ev.kind == "finished";
                    TimelineEntry { ts: ev.ts, source: "platform", kind: ev.kind, text: ev.detail }
                }
                Err(_) => continue,
            },
        };
        on_event(&entry);
        timeline.push(entry);
    }
    sim.stop();
    let truth = sim.finish().await;
    if let Some(s) = stepper {
        s.abort();
    }
    // Let in-flight answers land in the store before reading it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let agent_stats = agent.stats.clone();
    let brain_stats = brain.stats.clone();
    agent.shutdown().await;
    brain.shutdown().await;
    let store = Store::open(&opts.brain.store)?;
    let incidents = store.incidents()?;
    let mut hypotheses = std::collections::BTreeMap::new();
    let mut diagnosed_ts = std::collections::BTreeMap::new();
    for i in &incidents {
        hypotheses.insert(i.id.clone(), store.hypotheses(&i.id)?);
        if let Some((ts, _, _)) = store
            .timeline_of(&i.id)?
            .into_iter()
            .find(|(_, kind, _)| kind == "diagnosed")
        {
            diagnosed_ts.insert(i.id.clone(), ts);
        }
    }
    Ok(LoopOutcome {
        truth,
        start_ms,
        timeline,
        incidents,
        hypotheses,
        diagnosed_ts,
        actions: store.actions()?,
        brain: brain_stats,
        agent: agent_stats,
    })
}

/// A brain configuration for one run: store in `dir`, shipped playbooks.
pub fn brain_config_in(dir: &std::path::Path) -> BrainConfig {
    BrainConfig {
        store: dir.join("selfheal.db"),
        playbooks: paths::playbooks(),
        ..BrainConfig::default()
    }
}

/// Default loop options for `scenario`, storing in `dir`.
pub fn loop_options(scenario: Scenario, dir: &std::path::Path, speed: f64) -> LoopOptions {
    LoopOptions {
        scenario,
        topology: selfheal_sim::default_topology(),
        brain_topology: None,
        speed,
        brain: brain_config_in(dir),
        agent: AgentConfig::default(),
        subjects: Subjects::default(),
        stop_after_outcome: Some(Duration::from_secs(10)),
        lockstep: false,
    }
}

/// Options for a deterministic drill of `scenario`: lockstep, as fast as
/// the pipeline allows, the whole run, no host indicators (the machine
/// running the drill is not part of the simulated platform).
pub fn drill_options(scenario: Scenario, dir: &std::path::Path) -> LoopOptions {
    let mut o = loop_options(scenario, dir, 10_000.0);
    o.lockstep = true;
    o.stop_after_outcome = None;
    o.agent.host = false;
    o
}

/// Resolves a path relative to the working directory, falling back to the
/// source tree.
pub fn existing(p: PathBuf) -> PathBuf {
    if p.exists() {
        p
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
    }
}
