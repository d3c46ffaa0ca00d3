//! `selfheal brain`, `selfheal agent` and `selfheal sim` as separate
//! processes over a real nats-server: the loop heals the fault.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::NatsServer;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `selfheal ARGS` and waits until its log says `ready`; the log
/// goes on into `log`.
fn start(args: &[&str], ready: &str, log: std::path::PathBuf) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("selfheal starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    // Drain the log for the whole life of the process, so it never blocks.
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(log).unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            if line.contains(&ready) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{args:?} did not get ready"));
    Proc(child)
}

#[test]
fn separate_processes_heal_the_fault() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("brain.db");
    let cfg = dir.path().join("brain.toml");
    let playbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks");
    std::fs::write(
        &cfg,
        format!(
            "store = {:?}\nplaybooks = {:?}\n",
            db.display().to_string(),
            playbooks
        ),
    )
    .unwrap();
    let brain_log = dir.path().join("brain.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _brain = start(
        &[
            "brain",
            "--nats",
            &url,
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        "brain running",
        brain_log.clone(),
    );
    let _agent = start(
        &["agent", "--nats", &url],
        "agent running",
        dir.path().join("agent.log"),
    );

    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(["sim", "--nats", &url, "--speed", "50"])
        .stderr(Stdio::null())
        .output()
        .expect("the simulator runs");
    assert!(out.status.success());
    let truth: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the simulator prints its ground truth");
    let log = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        truth["recovered_ms"].is_i64(),
        "the platform recovered: {truth}\nbrain:\n{}\nagent:\n{}",
        log(&brain_log),
        log(&dir.path().join("agent.log"))
    );
    assert_eq!(truth["within_slo"], true);
    let applied = truth["actions"].as_array().unwrap();
    assert!(!applied.is_empty());

    // The brain's own metrics, over HTTP.
    let metrics = http_get(&listen, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("selfheal_brain_batches_total ") > 1000, "{metrics}");
    assert_eq!(
        count("selfheal_brain_actions_sent_total "),
        applied.len() as u64
    );
    assert_eq!(count("selfheal_brain_recovered_total "), 1);

    let conn = rusqlite::Connection::open(&db).unwrap();
    let (state, cause): (String, String) = conn
        .query_row(
            "SELECT state, cause FROM incidents ORDER BY opened_ts LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), cause.as_str()),
        ("recovered", "channel_degraded")
    );
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM actions WHERE state = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored as usize, applied.len());
}

/// Runs `selfheal ARGS` to completion; returns (success, stderr).
fn selfheal(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    let agent = [
        "agent",
        "--nats",
        "nats://127.0.0.1:1",
        "--config",
        cfg.to_str().unwrap(),
    ];
    std::fs::write(&cfg, "name = \"bad name\"\nbuffer_batches = 0\n").unwrap();
    let (ok, err) = selfheal(&agent);
    assert!(
        !ok && err.contains("name:") && err.contains("buffer_batches:"),
        "{err}"
    );

    std::fs::write(&cfg, "nmae = \"typo\"\n").unwrap();
    let (ok, err) = selfheal(&agent);
    assert!(!ok && err.contains("unknown field `nmae`"), "{err}");

    let sc = dir.path().join("s.toml");
    std::fs::write(
        &sc,
        "name='x'\nseed=1\nduration_s=10\n[[faults]]\nkind='channel_degradation'\ntarget='nowhere'\nstart_s=99\n",
    )
    .unwrap();
    let (ok, err) = selfheal(&["demo", "--scenario", sc.to_str().unwrap()]);
    assert!(
        !ok && err.contains("faults[0].target")
            && err.contains("faults[0].start_s")
            && err.contains("expect"),
        "{err}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn detect_scores_nab_style_files_at_the_same_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("cat")).unwrap();
    let mut csv = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if (300..310).contains(&i) {
            500.0
        } else {
            10.0 + (i % 7) as f64 * 0.1
        };
        csv.push_str(&format!("2014-01-01 00:{:02}:{:02},{v}\n", i / 60, i % 60));
    }
    std::fs::write(input.join("cat/series.csv"), &csv).unwrap();
    let output = dir.path().join("out");
    let (ok, err) = selfheal(&[
        "detect",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let scored = std::fs::read_to_string(output.join("cat/series.csv")).unwrap();
    let rows: Vec<&str> = scored.lines().collect();
    assert_eq!(rows[0], "timestamp,value,anomaly_score");
    assert_eq!(rows.len(), 401);
    let scores: Vec<f64> = rows[1..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(
        scores[300..305].iter().any(|s| *s > 0.5),
        "the jump is flagged"
    );
    assert!(
        scores[..300].iter().all(|s| *s < 0.5),
        "nothing before it is"
    );

    std::fs::write(input.join("cat/series.csv"), "time,v\n1,2\n").unwrap();
    let (ok, err) = selfheal(&[
        "detect",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("timestamp and value"), "{err}");
}

#[test]
fn kill_switch_cli_engages_reports_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let kill = dir.path().join("run/KILL");
    let cfg = dir.path().join("brain.toml");
    std::fs::write(
        &cfg,
        format!("[guard]\nkill_switch_file = {:?}\n", kill.to_str().unwrap()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let c = cfg.to_str().unwrap();
    let (ok, out, _) = run(&["kill-switch", "status", "--config", c]);
    assert!(ok && out.starts_with("released"), "{out}");
    let (ok, _, err) = run(&[
        "kill-switch",
        "on",
        "--config",
        c,
        "--reason",
        "bad release at 03:10",
    ]);
    assert!(ok && kill.exists(), "{err}");
    let (ok, out, _) = run(&["kill-switch", "status", "--config", c]);
    assert!(
        ok && out.contains("engaged") && out.contains("bad release at 03:10"),
        "{out}"
    );
    let (ok, _, _) = run(&["kill-switch", "off", "--config", c]);
    assert!(ok && !kill.exists());
    // No kill-switch file configured: a clear error, nothing done.
    std::fs::write(&cfg, "[guard]\ndry_run = true\n").unwrap();
    let (ok, _, err) = run(&["kill-switch", "on", "--config", c]);
    assert!(
        !ok && err.contains("guard.kill_switch_file is not set"),
        "{err}"
    );
}
