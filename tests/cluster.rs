//! Faults of a high-availability deployment, against real processes: a
//! 3-node nats-server cluster on loopback ports (JetStream, 3 replicas),
//! two brains as active and standby engines (`[ha]`), an agent and the
//! simulator.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Killed, NatsCluster, brain_config_with, start, start_with};

/// Trials of the takeover test: `SELFHEAL_CLUSTER_TRIALS` (default 3:
/// each step once, after sending the 1st and 3rd action and after writing
/// the 2nd ahead, so the test command stays short; `docs/benchmarks.md`
/// has a 20-trial run over every kill point).
fn trials() -> usize {
    std::env::var("SELFHEAL_CLUSTER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// The kill point of trial `k`: in the order above, each step's two
/// points apart, so that 3 trials cover every step.
fn kill_point(k: usize) -> &'static str {
    const ORDER: [usize; 6] = [1, 2, 5, 0, 3, 4];
    KILL_POINTS[ORDER[k % ORDER.len()]]
}

/// Where the active engine dies: right after writing an action ahead, or
/// right after sending it, at each of the three steps of the bank-channel
/// failover (12.5 %, 50 %, 100 %).
const KILL_POINTS: [&str; 6] = [
    "after_record@1",
    "after_send@1",
    "after_record@2",
    "after_send@2",
    "after_record@3",
    "after_send@3",
];

/// What one takeover trial measured.
#[derive(Debug)]
struct Trial {
    kill_point: &'static str,
    /// From the active's death to the standby's takeover.
    takeover: Duration,
    /// Actions the platform applied, by key.
    applied: Vec<String>,
    recovered: bool,
    incident_state: String,
}

fn log_of(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Waits until `name`'s log in `dir` shows `line`; returns when it did.
fn wait_for_line(dir: &std::path::Path, name: &str, line: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if log_of(dir, name).contains(line) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never logged {line:?}:\n{}",
            log_of(dir, name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One cluster test at a time: each starts three nats-servers and a
/// loop, and the takeover times are measured on a machine not shared
/// with another cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn takeover_trial(kill_point: &'static str) -> Trial {
    let nats = NatsCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let ha =
        |holder: &str| format!("[ha]\nholder = \"{holder}\"\nreplicas = 3\nlease_ttl_ms = 3000\n");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let (_, a_cfg) = brain_config_with(&a_dir, &ha("brain-a"));
    let (b_db, b_cfg) = brain_config_with(&b_dir, &ha("brain-b"));
    // Each process reaches the cluster through a different node first.
    let urls = |first: usize| {
        (0..3)
            .map(|k| nats.url((first + k) % 3))
            .collect::<Vec<_>>()
            .join(",")
    };
    let (a_urls, b_urls, agent_urls) = (urls(0), urls(1), urls(2));
    let mut active = start_with(
        &[
            "brain",
            "--nats",
            &a_urls,
            "--config",
            a_cfg.to_str().unwrap(),
        ],
        &[("SELFHEAL_FAILPOINT", kill_point)],
        "brain running",
        dir.path().join("a.log"),
    );
    wait_for_line(
        dir.path(),
        "a.log",
        "leadership won",
        Duration::from_secs(30),
    );
    let _standby = start(
        &[
            "brain",
            "--nats",
            &b_urls,
            "--config",
            b_cfg.to_str().unwrap(),
        ],
        "brain running",
        dir.path().join("b.log"),
    );
    let _agent = start(
        &["agent", "--nats", &agent_urls],
        "agent running",
        dir.path().join("agent.log"),
    );
    let sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(["sim", "--nats", &nats.url(0), "--speed", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the simulator runs"),
    );

    // The active engine dies mid-playbook.
    let t0 = Instant::now();
    let died = loop {
        if let Some(s) = active.0.try_wait().unwrap() {
            assert!(!s.success(), "{kill_point}: aborted");
            break Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{kill_point}: the active engine never got there:\n{}",
            log_of(dir.path(), "a.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = wait_for_line(dir.path(), "b.log", "took over", Duration::from_secs(30));
    let takeover = took.saturating_duration_since(died);

    let (truth, applied) = common::sim_truth(sim);
    let conn = rusqlite::Connection::open(&b_db).unwrap();
    let incident_state: String = conn
        .query_row(
            "SELECT state FROM incidents ORDER BY opened_ts LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| format!("none ({e})"));
    let t = Trial {
        kill_point,
        takeover,
        applied,
        recovered: truth["recovered_ms"].is_i64(),
        incident_state,
    };
    let mut keys = t.applied.clone();
    keys.sort();
    keys.dedup();
    let ctx = || {
        format!(
            "{t:?}\nactive:\n{}\nstandby:\n{}",
            log_of(dir.path(), "a.log"),
            log_of(dir.path(), "b.log")
        )
    };
    assert_eq!(
        keys.len(),
        t.applied.len(),
        "an action applied twice: {}",
        ctx()
    );
    assert_eq!(
        t.applied.len(),
        3,
        "the whole failover, nothing lost: {}",
        ctx()
    );
    assert!(t.recovered, "the fault healed: {}", ctx());
    assert_eq!(t.incident_state, "recovered", "{}", ctx());
    assert!(
        t.takeover < Duration::from_secs(5),
        "the standby took over within 5 s: {}",
        ctx()
    );
    t
}

/// kill -9 of the active engine in the middle of the failover playbook,
/// at each step, before and after the action is sent: the standby takes
/// over within 5 s, no action is lost or applied twice, and the fault is
/// healed, every time.
#[test]
fn the_standby_engine_takes_over_a_playbook_cut_off_by_a_kill() {
    let _one = SERIAL.blocking_lock();
    let n = trials();
    let mut results = Vec::new();
    for k in 0..n {
        let t = takeover_trial(kill_point(k));
        println!(
            "trial {k}: killed {}, took over in {:.2} s, applied {:?}",
            t.kill_point,
            t.takeover.as_secs_f64(),
            t.applied
        );
        results.push(t);
    }
    let mut times: Vec<f64> = results.iter().map(|t| t.takeover.as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "takeover over {n} trials: median {:.2} s, max {:.2} s; applied twice 0, lost 0, healed {n}/{n}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// `buffer_batches` of the agent: enough for the outages below (32
/// batches a frame; a 60 s outage at 4x is 7,680, and the cluster takes a
/// few seconds after it to elect its leaders again).
const AGENT_BUFFER: usize = 20_000;

/// A brain, an agent and the simulator over a 3-node cluster, indicators
/// through a 3-replica JetStream stream: the agent keeps each batch until
/// the stream acknowledges it, the brain reads through its durable
/// consumer. The brain reaches the cluster through node 1, the agent and
/// the simulator (whose feed is the agent's input, not under test) through
/// node 0.
struct DurableLoop {
    brain: selfheal_brain::BrainHandle,
    agent: selfheal_agent::AgentHandle,
    sim: selfheal_sim::node::SimHandle,
    _dir: tempfile::TempDir,
}

/// Where the simulator's feed reaches the agent.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// Over NATS node 0, the agent's node.
    Nats,
    /// In process, beside the agent (the platform's own metrics pipeline,
    /// not under test): NATS carries only what the agent publishes and the
    /// brain's actions, so the agent's node may die.
    Local,
}

async fn durable_loop(
    nats: &NatsCluster,
    scenario: &str,
    speed: f64,
    duration_s: Option<u64>,
    feed: Feed,
) -> DurableLoop {
    use std::sync::Arc;

    use selfheal_bus::{Bus, NatsTransport, Subjects, stream};

    let dir = tempfile::tempdir().unwrap();
    let js = stream::JetStreamConfig {
        replicas: 3,
        ..Default::default()
    };
    let subjects = Subjects::default();
    let spec = js.stream_of(&subjects);
    let order = |first: usize| {
        (0..3)
            .map(|k| nats.url((first + k) % 3))
            .collect::<Vec<_>>()
            .join(",")
    };
    let brain_nats = NatsTransport::connect(&order(1), "brain").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = stream::ensure(brain_nats.client(), &spec).await {
        assert!(Instant::now() < deadline, "JetStream never got ready: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let sub = stream::consume(brain_nats.client(), &spec, "brain")
        .await
        .unwrap();
    let brain = selfheal_brain::Brain {
        config: selfheal_brain::BrainConfig {
            store: dir.path().join("brain.db"),
            playbooks: selfheal::paths::playbooks(),
            jetstream: Some(js.clone()),
            ..Default::default()
        },
        bus: Arc::new(brain_nats),
        subjects: subjects.clone(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn_with(None, Some(sub))
    .await
    .unwrap();
    let agent_cfg = selfheal_agent::AgentConfig {
        feed: selfheal_agent::config::Feed::Sim,
        host: false,
        buffer_batches: AGENT_BUFFER,
        jetstream: Some(js.clone()),
        // Binary batches through the stream, kept and re-sent like JSON.
        encoding: selfheal_bus::Encoding::Binary,
        ..Default::default()
    };
    let (agent_bus, sim_bus): (Bus, Bus) = match feed {
        Feed::Nats => {
            let a: Bus = Arc::new(
                NatsTransport::connect(&nats.url(0), "agent")
                    .await
                    .unwrap()
                    .with_jetstream(),
            );
            let s: Bus = Arc::new(NatsTransport::connect(&nats.url(0), "sim").await.unwrap());
            (a, s)
        }
        Feed::Local => (
            Arc::new(
                NatsTransport::connect(&order(0), "agent")
                    .await
                    .unwrap()
                    .with_jetstream(),
            ),
            Arc::new(selfheal_bus::LocalTransport::default()),
        ),
    };
    let agent = match feed {
        Feed::Nats => selfheal_sim::edge::agent(agent_cfg, agent_bus.clone(), subjects.clone())
            .await
            .unwrap(),
        Feed::Local => {
            let mut actuators = selfheal_agent::run::own_actuators(&agent_cfg);
            actuators.push(Arc::new(selfheal_sim::edge::SimControl::new(
                sim_bus.clone(),
                subjects.clone(),
                Duration::from_millis(agent_cfg.actuate_timeout_ms),
            )));
            selfheal_agent::Agent {
                config: agent_cfg,
                bus: agent_bus.clone(),
                subjects: subjects.clone(),
                source: Some(Box::new(
                    selfheal_sim::edge::SimSource::subscribe(sim_bus.clone(), &subjects)
                        .await
                        .unwrap(),
                )),
                actuators,
            }
        }
    }
    .spawn()
    .await
    .unwrap();
    agent_bus.flush().await.unwrap();
    let topology = selfheal_sim::default_topology();
    let mut scenario =
        selfheal::drill::load(&[selfheal::paths::scenarios().join(scenario)], &topology)
            .unwrap()
            .remove(0);
    if let Some(d) = duration_s {
        scenario.duration_s = d;
    }
    let sim = selfheal_sim::node::SimNode {
        bus: sim_bus,
        subjects,
        topology,
        scenario,
        speed: selfheal_sim::node::Speed::Times(speed),
        start_ms: selfheal_bus::wall_ms(),
        lockstep: None,
    }
    .spawn()
    .await
    .unwrap();
    DurableLoop {
        brain,
        agent,
        sim,
        _dir: dir,
    }
}

fn n(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

impl DurableLoop {
    /// Waits until `ok` holds of the brain's counters, failing with both
    /// sides' counts after `within`.
    async fn until(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&selfheal_brain::BrainStats) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !ok(&self.brain.stats) {
            let (a, b) = (&self.agent.stats, &self.brain.stats);
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: brain took {} batches, agent made {} (published {}, buffered {}), {} frames",
                n(&b.batches),
                n(&a.indicator_batches),
                n(&a.published),
                n(&a.buffered),
                n(&a.frames),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets the simulator finish, then checks that every frame reached the
    /// agent and every batch the agent made reached the brain, none
    /// dropped or refused, and no action was applied twice. Returns the
    /// ground truth and (batches delivered, batches buffered on the way).
    async fn finish(self) -> (selfheal_sim::platform::Truth, u64, u64) {
        let ticks = self.sim.tick_counter();
        let truth = self.sim.finish().await;
        let ticks = ticks.load(std::sync::atomic::Ordering::SeqCst);
        let (astats, bstats) = (self.agent.stats.clone(), self.brain.stats.clone());
        common::all_delivered(ticks, &astats, &bstats, Duration::from_secs(90)).await;
        assert_eq!(n(&astats.overflow_dropped), 0);
        assert_eq!(bstats.rejected_total(), 0, "no batch refused (none twice)");
        let mut keys: Vec<&String> = truth.actions.iter().map(|a| &a.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            truth.actions.len(),
            "an action applied twice: {:?}",
            truth.actions
        );
        let out = (truth, n(&bstats.batches), n(&astats.buffered));
        self.agent.shutdown().await;
        self.brain.shutdown().await;
        out
    }
}

/// The node the brain is connected to is killed in the middle of a
/// bank-channel fault, then another node holding a replica of the stream,
/// then the agent's own node: every batch the agent made reaches the
/// brain, and the fault is healed with every action applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_under_a_fault_costs_no_sample_and_no_action() {
    let _one = SERIAL.lock().await;
    let mut nats = NatsCluster::start();
    let l = durable_loop(&nats, "channel_degradation.toml", 10.0, None, Feed::Local).await;
    l.until("the fault detected", Duration::from_secs(120), |b| {
        n(&b.incidents) > 0
    })
    .await;
    // The brain's node dies as the brain diagnoses and acts.
    nats.kill(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.restart(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Then another node, holding a replica of the stream.
    nats.kill(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.restart(2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Then the agent's own node: it publishes on through the others.
    nats.kill(0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.restart(0);
    let (truth, delivered, buffered) = l.finish().await;
    let applied: Vec<&str> = truth.actions.iter().map(|a| a.key.as_str()).collect();
    assert!(truth.recovered_ms.is_some(), "the fault healed: {truth:?}");
    assert!(!applied.is_empty());
    eprintln!(
        "nats node kills: {delivered} batches delivered, all the agent made; {buffered} buffered until acknowledged; actions {applied:?}"
    );
}

/// Every node of the cluster stopped for 60 s under the simulator feed:
/// the agent keeps its batches (the stream cannot acknowledge them) and
/// delivers every one when the cluster is back, each stored once; the
/// brain misses none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nats_node_stopped_for_60_s_costs_no_sample() {
    let _one = SERIAL.lock().await;
    let mut nats = NatsCluster::start();
    // 340 platform seconds at 4x: 85 s of wall time, 60 of them without a bus.
    let l = durable_loop(&nats, "control.toml", 4.0, Some(340), Feed::Nats).await;
    l.until("the loop running", Duration::from_secs(30), |b| {
        n(&b.batches) > 100
    })
    .await;
    for i in 0..3 {
        nats.kill(i);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for i in 0..3 {
        nats.restart(i);
    }
    let (truth, delivered, buffered) = l.finish().await;
    assert!(truth.actions.is_empty(), "a control run: no action");
    assert!(buffered > 0, "the outage was felt: batches were kept");
    eprintln!(
        "every nats node stopped 60 s: {delivered} batches delivered, all the agent made; {buffered} kept until acknowledged"
    );
}

/// The lease itself, over a real nats-server: of two holders exactly one
/// leads; sampled every 5 ms, never both, not when the leader gives the
/// lease up (the other takes over at its next try) nor when the leader
/// freezes (its renewals stop: it stops counting itself leader before the
/// key lapses and the other takes over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_lease_has_one_holder_at_a_time() {
    use selfheal_bus::{NatsTransport, ha};
    use tokio_util::sync::CancellationToken;

    let _one = SERIAL.lock().await;
    let nats = common::NatsServer::start();
    let ttl = Duration::from_millis(1_500);
    let buckets = ha::HaBuckets {
        lease_bucket: "lease_test".into(),
        state_bucket: "state_test".into(),
        replicas: 1,
        ttl,
        state_max_age: Duration::from_secs(3_600),
    };
    let holder = |name: &'static str| {
        let (url, buckets) = (nats.url(), buckets.clone());
        async move {
            let bus = NatsTransport::connect(&url, name).await.unwrap();
            let (kv, _) = ha::open(bus.client(), &buckets).await.unwrap();
            let lease = ha::Lease::new(name, ttl);
            let stop = CancellationToken::new();
            let task = tokio::spawn(ha::hold(kv, "engine".into(), lease.clone(), stop.clone()));
            (lease, stop, task)
        }
    };
    let (a, a_stop, a_task) = holder("a").await;
    // `a` wins first: it tried first on an empty bucket.
    let t0 = Instant::now();
    while !a.held() {
        assert!(t0.elapsed() < Duration::from_secs(5), "nobody leads");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (b, b_stop, b_task) = holder("b").await;
    // Watches for overlap until `until` holds; returns when it did.
    let watch = |until: &dyn Fn() -> bool, within: Duration| {
        let t0 = Instant::now();
        loop {
            assert!(!(a.held() && b.held()), "two leaders at once");
            if until() {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < within, "no takeover in {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Three lease times with `a` leading: `b` never takes it.
    let steady = tokio::task::block_in_place(|| {
        watch(
            &|| Instant::now() >= t0 + 3 * ttl,
            3 * ttl + Duration::from_secs(5),
        )
    });
    assert!(a.held() && !b.held(), "after {steady:?}");
    // `a` gives it up (a graceful stop): `b` takes over at its next try.
    a_stop.cancel();
    let _ = a_task.await;
    let handover = tokio::task::block_in_place(|| watch(&|| b.held(), ttl * 2));
    assert!(
        handover < ttl,
        "a given-up lease is taken at the next try: {handover:?}"
    );
    // `a` comes back as standby; then `b` freezes (its task aborted, the
    // key left to lapse): `a` takes over only after `b` stopped leading.
    let (a, a_stop, a_task) = holder("a").await;
    std::thread::sleep(ttl);
    assert!(b.held() && !a.held());
    b_task.abort();
    let t_freeze = Instant::now();
    let mut b_stopped = None;
    let took = tokio::task::block_in_place(|| {
        let t0 = Instant::now();
        loop {
            if !b.held() && b_stopped.is_none() {
                b_stopped = Some(t_freeze.elapsed());
            }
            assert!(!(a.held() && b.held()), "two leaders at once");
            if a.held() {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < ttl * 4, "no takeover from a frozen leader");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let stopped = b_stopped.expect("the frozen leader stopped leading first");
    assert!(stopped < took, "{stopped:?} then {took:?}");
    assert!(
        took <= ttl * 3,
        "a frozen leader is replaced within about a lease time: {took:?}"
    );
    eprintln!(
        "lease {ttl:?}: given up, taken in {handover:?}; frozen leader stopped counting itself leader after {stopped:?}, replaced after {took:?}"
    );
    a_stop.cancel();
    b_stop.cancel();
    let _ = a_task.await;
}

/// Detection split over two worker processes (`--role detect`) and an
/// engine (`--role engine`), on the 3-node cluster, under the bank-channel
/// fault: the worker that detects the channel router is killed (`kill -9`)
/// shortly before the fault. Its partitions move to the other worker,
/// which warms their detectors up from the indicator stream and finds the
/// fault on the router's series within 10 s of the kill; the engine heals
/// it.
#[test]
fn a_killed_detection_worker_s_partitions_move_and_its_series_are_detected_again() {
    use selfheal_bus::partition;
    let _one = SERIAL.blocking_lock();
    let nats = NatsCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let js = "[jetstream]\nreplicas = 3\n";
    let det =
        |w: &str| format!("{js}consumer = \"{w}\"\n[detection]\nworker = \"{w}\"\nreplicas = 3\n");
    let workers = ["det-a", "det-b"];
    let mut procs = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let wdir = d.join(w);
        std::fs::create_dir_all(&wdir).unwrap();
        let (_, cfg) = brain_config_with(&wdir, &det(w));
        let urls = (0..3)
            .map(|k| nats.url((i + k) % 3))
            .collect::<Vec<_>>()
            .join(",");
        procs.push(start(
            &[
                "brain",
                "--role",
                "detect",
                "--nats",
                &urls,
                "--config",
                cfg.to_str().unwrap(),
            ],
            "detection worker running",
            d.join(format!("{w}.log")),
        ));
    }
    let edir = d.join("engine");
    std::fs::create_dir_all(&edir).unwrap();
    let (engine_db, engine_cfg) = brain_config_with(
        &edir,
        &format!("{js}consumer = \"engine\"\n[detection]\nreplicas = 3\n"),
    );
    let _engine = start(
        &[
            "brain",
            "--role",
            "engine",
            "--nats",
            &nats.urls(),
            "--config",
            engine_cfg.to_str().unwrap(),
        ],
        "brain running",
        d.join("engine.log"),
    );
    // The agent writes binary batches: the workers' warm-up replays and
    // their partitions read them as they read JSON.
    let agent_cfg = d.join("agent.toml");
    std::fs::write(&agent_cfg, format!("encoding = \"binary\"\n{js}")).unwrap();
    let _agent = start(
        &[
            "agent",
            "--nats",
            &nats.url(2),
            "--config",
            agent_cfg.to_str().unwrap(),
        ],
        "agent running",
        d.join("agent.log"),
    );
    // Both workers listed and sharing before the platform starts.
    for w in workers {
        wait_for_line(
            d,
            &format!("{w}.log"),
            "members=[\"det-a\", \"det-b\"]",
            Duration::from_secs(30),
        );
    }
    const SPEED: f64 = 10.0;
    let sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(["sim", "--nats", &nats.url(0), "--speed", &SPEED.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(d.join("sim.log")).unwrap())
            .spawn()
            .expect("the simulator runs"),
    );
    let started = Instant::now();
    let members: Vec<String> = workers.iter().map(|w| w.to_string()).collect();
    let router = partition::of_service("channel-router", partition::DEFAULT_PARTITIONS);
    let victim = partition::owner(router, &members).unwrap();
    let survivor = workers.iter().find(|w| **w != victim).unwrap();
    let vi = workers.iter().position(|w| *w == victim).unwrap();
    // The fault starts at platform second 90: the worker dies at 70.
    std::thread::sleep(Duration::from_secs_f64(70.0 / SPEED).saturating_sub(started.elapsed()));
    let before = log_of(d, &format!("{survivor}.log"));
    procs[vi].0.kill().unwrap();
    let killed = Instant::now();
    let ctx = || {
        format!(
            "victim {victim}:\n{}\nsurvivor {survivor}:\n{}\nengine:\n{}",
            log_of(d, &format!("{victim}.log")),
            log_of(d, &format!("{survivor}.log")),
            log_of(d, "engine.log")
        )
    };
    // The survivor takes the partitions and finds the fault on the
    // router's series. The clock runs from the kill, or from the fault's
    // first tick when the platform, slowed by a busy machine, makes it
    // later: what is measured is the move, not the platform's lag.
    let mut faulted = None;
    let found = loop {
        if faulted.is_none() && log_of(d, "sim.log").contains("fault_start") {
            faulted = Some(Instant::now());
        }
        let log = log_of(d, &format!("{survivor}.log"));
        let fresh = &log[before.len().min(log.len())..];
        if fresh
            .lines()
            .any(|l| l.contains("anomaly found") && l.contains("channel-router"))
        {
            break Instant::now();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "never found again: {}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let faulted = faulted
        .or_else(|| {
            log_of(d, "sim.log")
                .contains("fault_start")
                .then(Instant::now)
        })
        .unwrap_or_else(|| panic!("the simulator logged its fault: {}", log_of(d, "sim.log")));
    let again = found - killed.max(faulted);
    let fresh = log_of(d, &format!("{survivor}.log"))[before.len()..].to_string();
    assert!(
        fresh.contains("partitions taken"),
        "the partitions moved: {}",
        ctx()
    );
    let (truth, applied) = common::sim_truth(sim);
    assert!(
        truth["recovered_ms"].is_i64(),
        "the fault healed: {applied:?} {}",
        ctx()
    );
    let conn = rusqlite::Connection::open(&engine_db).unwrap();
    let incidents: i64 = conn
        .query_row("SELECT count(*) FROM incidents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(incidents, 1, "one fault, one incident: {}", ctx());
    let taken: Vec<&str> = fresh
        .lines()
        .filter(|l| l.contains("partitions taken"))
        .collect();
    println!(
        "worker {victim} killed: {survivor} found the fault on its series {:.2} s later \
         (the fault's first tick came {:.2} s after the kill); healed with {applied:?}; {taken:?}",
        again.as_secs_f64(),
        faulted.saturating_duration_since(killed).as_secs_f64()
    );
    assert!(
        again < Duration::from_secs(10),
        "found again within 10 s: {again:?} {}",
        ctx()
    );
}
