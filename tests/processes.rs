//! `selfheal brain`, `selfheal agent` and `selfheal sim` as separate
//! processes over a real nats-server: the loop heals the fault.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{Killed as Proc, NatsServer, brain_config, selfheal, start, start_with};

#[test]
fn separate_processes_heal_the_fault() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let (db, cfg) = brain_config(dir.path());
    let brain_log = dir.path().join("brain.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut brain = start(
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
    drop(conn);

    // A consistent copy while the brain runs.
    let copy = dir.path().join("copy.db");
    let (ok, out, err) = selfheal(&[
        "backup",
        "--store",
        db.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("1 incidents") && out.contains("integrity ok"),
        "{out}{err}"
    );
    let (ok, _, err) = selfheal(&[
        "backup",
        "--store",
        db.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("never overwrites"), "{err}");
    // The key and the anchors stay where they are: the copy is checked
    // against them.
    let key = dir.path().join("brain.db.audit-key");
    let anchors = dir.path().join("brain.db.anchors");
    let (ok, out, err) = selfheal(&[
        "audit",
        "verify",
        "--store",
        copy.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
    ]);
    assert!(ok, "the copy's audit log verifies: {out}{err}");

    // SIGTERM stops the brain gracefully: the database file alone is then
    // the whole store (nothing left in the write-ahead log).
    let pid = brain.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = brain.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log(&brain_log));
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(&db, alone.path().join("brain.db")).unwrap();
    let conn = rusqlite::Connection::open(alone.path().join("brain.db")).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM actions WHERE state = 'applied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        n as usize,
        applied.len(),
        "the file alone holds every action"
    );
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
    let (ok, _, err) = selfheal(&agent);
    assert!(
        !ok && err.contains("name:") && err.contains("buffer_batches:"),
        "{err}"
    );

    std::fs::write(&cfg, "nmae = \"typo\"\n").unwrap();
    let (ok, _, err) = selfheal(&agent);
    assert!(!ok && err.contains("unknown field `nmae`"), "{err}");

    // The brain's file: every TOML problem at once, and the range checks
    // before the bus is reached for (NATS is down here).
    let bcfg = dir.path().join("brain.toml");
    let brain = [
        "brain",
        "--nats",
        "nats://127.0.0.1:1",
        "--config",
        bcfg.to_str().unwrap(),
    ];
    std::fs::write(&bcfg, "shards = \"two\"\nsettle_s = -1\nnmae = 1\n").unwrap();
    let (ok, _, err) = selfheal(&brain);
    assert!(
        !ok && err.contains("3 problems")
            && err.contains("shards:")
            && err.contains("settle_s:")
            && err.contains("unknown field `nmae`"),
        "{err}"
    );
    std::fs::write(&bcfg, "[http]\nmax_connections = 0\n[series]\nidle_s = 1\n").unwrap();
    let (ok, _, err) = selfheal(&brain);
    assert!(
        !ok && err.contains("http.max_connections") && err.contains("series.idle_s"),
        "{err}"
    );
    assert!(
        !err.contains("nats://"),
        "the bus is not reached for: {err}"
    );
    std::fs::write(
        &bcfg,
        "[ha]\nlease_ttl_ms = 10\nreplicas = 9\nlease_bucket = \"a.b\"\n[jetstream]\nconsumer = \"\"\nmax_age_s = 1\n",
    )
    .unwrap();
    let (ok, _, err) = selfheal(&brain);
    assert!(
        !ok && err.contains("ha.lease_ttl_ms")
            && err.contains("ha.replicas")
            && err.contains("ha.lease_bucket")
            && err.contains("jetstream.consumer")
            && err.contains("jetstream.max_age_s")
            && !err.contains("nats://"),
        "{err}"
    );
    std::fs::write(
        &bcfg,
        "[detection]\nworker = \"a.b\"\npartitions = 0\nmember_ttl_ms = 5\nwarmup_s = 999999\n",
    )
    .unwrap();
    let (ok, _, err) = selfheal(&brain);
    assert!(
        !ok && err.contains("detection.worker")
            && err.contains("detection.partitions")
            && err.contains("detection.member_ttl_ms")
            && err.contains("detection.warmup_s")
            && !err.contains("nats://"),
        "{err}"
    );
    // A worker or an engine of workers reads the indicator stream.
    std::fs::write(&bcfg, "[detection]\n").unwrap();
    let mut worker = brain.to_vec();
    worker.extend(["--role", "detect"]);
    let (ok, _, err) = selfheal(&worker);
    assert!(
        !ok && err.contains("--role") && err.contains("[jetstream]") && !err.contains("nats://"),
        "{err}"
    );

    let sc = dir.path().join("s.toml");
    std::fs::write(
        &sc,
        "name='x'\nseed=1\nduration_s=10\n[[faults]]\nkind='channel_degradation'\ntarget='nowhere'\nstart_s=99\n",
    )
    .unwrap();
    let (ok, _, err) = selfheal(&["demo", "--scenario", sc.to_str().unwrap()]);
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
    let (ok, _, err) = selfheal(&[
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
    let (ok, _, err) = selfheal(&[
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
    let c = cfg.to_str().unwrap();
    let (ok, out, _) = selfheal(&["kill-switch", "status", "--config", c]);
    assert!(ok && out.starts_with("released"), "{out}");
    let (ok, _, err) = selfheal(&[
        "kill-switch",
        "on",
        "--config",
        c,
        "--reason",
        "bad release at 03:10",
    ]);
    assert!(ok && kill.exists(), "{err}");
    let (ok, out, _) = selfheal(&["kill-switch", "status", "--config", c]);
    assert!(
        ok && out.contains("engaged") && out.contains("bad release at 03:10"),
        "{out}"
    );
    let (ok, _, _) = selfheal(&["kill-switch", "off", "--config", c]);
    assert!(ok && !kill.exists());
    // No kill-switch file configured: a clear error, nothing done.
    std::fs::write(&cfg, "[guard]\ndry_run = true\n").unwrap();
    let (ok, _, err) = selfheal(&["kill-switch", "on", "--config", c]);
    assert!(
        !ok && err.contains("guard.kill_switch_file is not set"),
        "{err}"
    );
}

/// The brain is killed (abort, as by `kill -9`) right after writing an
/// action ahead, or right after the actuator applied it, at the first,
/// second or third step of the bank-channel failover, then restarted on
/// the same store while the platform runs on: every action is applied
/// exactly once, the store ends with its true outcome, nothing stays
/// pending, the fault is not acted on again by a new incident, and the
/// cut-off playbook resumes at its next step and heals the fault.
#[test]
fn a_brain_killed_mid_playbook_resumes_it_without_duplicate_or_loss() {
    for (failpoint, final_state) in [
        ("after_record", "applied"),
        ("after_send", "duplicate"),
        ("after_send@2", "duplicate"),
        ("after_record@3", "applied"),
    ] {
        let nats = NatsServer::start();
        let url = nats.url();
        let dir = tempfile::tempdir().unwrap();
        let (db, cfg) = brain_config(dir.path());
        let brain_args = ["brain", "--nats", &url, "--config", cfg.to_str().unwrap()];
        let mut brain = start_with(
            &brain_args,
            &[("SELFHEAL_FAILPOINT", failpoint)],
            "brain running",
            dir.path().join("brain1.log"),
        );
        let _agent = start(
            &["agent", "--nats", &url],
            "agent running",
            dir.path().join("agent.log"),
        );
        let sim = Command::new(env!("CARGO_BIN_EXE_selfheal"))
            .args(["sim", "--nats", &url, "--speed", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the simulator runs");
        let sim = Proc(sim);

        // The brain dies at the chosen action.
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = brain.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "{failpoint}: the brain never got there"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{failpoint}: aborted");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let rows = |conn: &rusqlite::Connection| -> Vec<(String, String, String)> {
            let mut st = conn
                .prepare("SELECT id, state, target FROM actions ORDER BY recorded_at_us")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let before = rows(&conn);
        let last = before.last().cloned().expect("an action was written ahead");
        assert_eq!(
            last.1, "pending",
            "{failpoint}: written ahead, outcome unknown: {before:?}"
        );
        let key = last.0.clone();

        // Restarted on the same store, while the fault goes on.
        let brain2 = start(&brain_args, "brain running", dir.path().join("brain2.log"));
        let (truth, applied) = common::sim_truth(sim);
        drop(brain2);
        let logs = || {
            let log = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
            let mut st = conn
                .prepare("SELECT incident_id, ts, kind, detail FROM timeline ORDER BY seq")
                .unwrap();
            let timeline: Vec<String> = st
                .query_map([], |r| {
                    Ok(format!(
                        "{} {} {}: {}",
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            format!(
                "timeline:\n{}\nbrain2:\n{}",
                timeline.join("\n"),
                log("brain2.log")
            )
        };
        let mut once = applied.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(
            once.len(),
            applied.len(),
            "{failpoint}: every action was applied exactly once: {applied:?}"
        );
        assert!(applied.contains(&key), "{failpoint}: {applied:?}");
        let after = rows(&conn);
        assert!(
            after.iter().all(|(_, s, _)| s != "pending"),
            "{failpoint}: {after:?}"
        );
        assert_eq!(
            after.iter().find(|(id, _, _)| *id == key).unwrap().1,
            final_state,
            "{failpoint}: {after:?}"
        );
        // Every action applied was one of the first incident's plan: no
        // new incident acted on the same fault.
        let first: String = conn
            .query_row(
                "SELECT id FROM incidents ORDER BY opened_ts LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            after
                .iter()
                .filter(|(_, s, _)| s == "applied" || s == "duplicate")
                .all(|(id, _, _)| id.starts_with(&format!("{first}-s"))),
            "{failpoint}: {after:?}"
        );
        assert_eq!(
            applied.len(),
            after
                .iter()
                .filter(|(_, s, _)| s == "applied" || s == "duplicate")
                .count()
        );
        // The cut-off playbook went on and healed the fault.
        let state: String = conn
            .query_row("SELECT state FROM incidents WHERE id = ?1", [&first], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "recovered", "{failpoint}: {}", logs());
        assert!(
            truth["recovered_ms"].is_i64(),
            "{failpoint}: the platform recovered: {truth}\n{}",
            logs()
        );
        assert_eq!(
            applied.len(),
            3,
            "{failpoint}: the whole failover, 12.5 %, 50 %, 100 %: {applied:?}"
        );
    }
}
