//! `selfheal stack-drill` leaves nothing behind: interrupted (Ctrl-C) in
//! the middle of a run, or failing on a bad scenario, it stops every
//! process it started (nats-server, HAProxy, the payment service's
//! instances, the brain, the agent). The drill itself, healing each
//! scenario within its bar, runs in the test command (`./test.sh`) as a
//! step of its own: it takes minutes of wall-clock time.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn selfheal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_selfheal"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NATS_SERVER", common::nats_server_bin())
        .stdin(Stdio::null());
    c
}

fn alive(pid: u32) -> bool {
    // Not reaped yet counts as gone: a zombie runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Every pid the drill recorded (its children) and wrote in pid files (the
/// instances, restarted or not).
fn pids(dir: &Path) -> Vec<(String, u32)> {
    let mut v = Vec::new();
    for run in std::fs::read_dir(dir).unwrap() {
        let run = run.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(run.join("pids")) {
            for line in text.lines() {
                let (name, pid) = line.split_once(' ').unwrap();
                v.push((name.to_string(), pid.parse().unwrap()));
            }
        }
        for f in std::fs::read_dir(&run).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "pid") {
                let pid = std::fs::read_to_string(&f).unwrap().trim().parse().unwrap();
                v.push((f.display().to_string(), pid));
            }
        }
    }
    v
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn haproxy_present() -> bool {
    std::env::var_os("HAPROXY").is_some()
        || Path::new("/usr/sbin/haproxy").exists()
        || Command::new("haproxy").arg("-v").output().is_ok()
}

/// One stack at a time: two at once would race for ports and cores.
static ONE_STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ctrl_c_in_the_middle_stops_every_process_of_the_stack() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    assert!(haproxy_present(), "./test.sh installs Debian's haproxy");
    let work = tempfile::tempdir().unwrap();
    let runs = work.path().join("runs");
    let err = work.path().join("stderr");
    let mut drill = selfheal()
        .args([
            "stack-drill",
            "--scenario",
            "sim/stack/control.toml",
            "--workdir",
        ])
        .arg(&runs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Everything up: nats-server, HAProxy, three instances, brain, agent.
    let t = Instant::now();
    let up = |runs: &Path| {
        runs.exists()
            && pids(runs)
                .iter()
                .filter(|(n, _)| !n.ends_with(".pid"))
                .count()
                >= 7
    };
    while !up(&runs) {
        let said = || std::fs::read_to_string(&err).unwrap_or_default();
        if let Some(s) = drill.try_wait().unwrap() {
            panic!("the drill ended ({s}) before the stack was up:\n{}", said());
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the whole stack within 60 s:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let running = pids(&runs);
    assert!(running.iter().all(|(_, p)| alive(*p)), "{running:?}");
    Command::new("kill")
        .args(["-INT", &drill.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = drill.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the drill did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "an interrupted drill does not pass");
    wait_for("every process gone", Duration::from_secs(10), || {
        pids(&runs).iter().all(|(_, p)| !alive(*p))
    });
}

#[test]
fn a_failing_scenario_stops_every_process_and_keeps_the_logs() {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    assert!(haproxy_present(), "./test.sh installs Debian's haproxy");
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"no_such_instance\"\nwarmup_s = 10\n[fault]\nkind = \"crash\"\ntarget = \"pay-9\"\n",
    )
    .unwrap();
    let runs = work.path().join("runs");
    let out = selfheal()
        .args(["stack-drill", "--scenario"])
        .arg(&bad)
        .arg("--workdir")
        .arg(&runs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no instance pay-9"), "{err}");
    assert!(err.contains("logs in"), "{err}");
    let seen = pids(&runs);
    assert!(seen.len() >= 7, "{seen:?}");
    wait_for("every process gone", Duration::from_secs(10), || {
        seen.iter().all(|(_, p)| !alive(*p))
    });
    // A scenario the drill cannot read is refused before anything starts.
    std::fs::write(&bad, "name = \"x\"\nrate = 0.0\n").unwrap();
    let out = selfheal()
        .args(["stack-drill", "--scenario"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
