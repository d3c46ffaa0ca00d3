//! `selfheal replay`: recorded data through the brain on a virtual clock.

mod common;

use std::{fmt::Write, sync::Arc, time::Duration};

use common::selfheal;
use selfheal::{drill_options, run_loop};
use selfheal_bus::LocalTransport;

fn incidents(path: &std::path::Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_sim_run_replays_to_the_live_incident() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let scenario = selfheal::paths::scenarios().join("bad_deploy.toml");
    let (ok, _, err) = selfheal(&[
        "record",
        "--scenario",
        scenario.to_str().unwrap(),
        "--out",
        rec.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    std::fs::copy(
        selfheal::paths::scenarios().join("../topology.toml"),
        rec.join("topology.toml"),
    )
    .unwrap();
    let out = dir.path().join("incidents.json");
    let (ok, _, err) = selfheal(&[
        "replay",
        "--dir",
        rec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let replayed = incidents(&out);
    assert_eq!(replayed.len(), 1, "{replayed:#?}");
    let r = &replayed[0];
    let h = r["hypotheses"].as_array().unwrap();
    assert_eq!(
        (h[0]["cause"].as_str(), h[0]["target"].as_str()),
        (Some("bad_deploy"), Some("payment-engine"))
    );
    assert!(h.len() >= 2 && h.last().unwrap()["cause"] == "unknown");
    assert_eq!(r["state"], "dry_run", "replay never acts");

    // The live run of the same scenario opens the same incident at the same
    // platform time.
    let topo = selfheal_sim::default_topology();
    let s = selfheal::drill::load(&[scenario], &topo).unwrap().remove(0);
    let live_dir = tempfile::tempdir().unwrap();
    let mut opts = drill_options(s, live_dir.path());
    opts.stop_after_outcome = Some(Duration::from_secs(5));
    let live = tokio::time::timeout(
        Duration::from_secs(60),
        run_loop(Arc::new(LocalTransport::default()), opts, |_| {}),
    )
    .await
    .unwrap()
    .unwrap();
    let first = &live.incidents[0];
    assert_eq!(
        (first.cause.as_deref(), first.target.as_deref()),
        (Some("bad_deploy"), Some("payment-engine"))
    );
    let replay_at = r["opened_ts"].as_i64().unwrap() - selfheal::train::RECORD_START_MS;
    let live_at = first.opened_ts - live.start_ms;
    assert_eq!(replay_at, live_at, "opened at the same platform second");
}

/// One-minute data exported from some other monitoring: two services, call
/// edges only, timestamps in seconds with jitter, two hours of normal
/// history, then the database slows right after its deploy.
#[test]
fn minute_data_with_call_edges_and_a_deploy_is_diagnosed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = 1_760_000_000i64;
    let mut csv = String::from("timestamp,service,instance,metric,value\n");
    for m in 0..140i64 {
        let ts = t0 + m * 60 + (m % 3); // an irregular step
        let wobble = ((m * 7919) % 13) as f64 / 13.0;
        let bad = m >= 120;
        let db = if bad { 95.0 } else { 4.0 + wobble };
        let api = if bad { 480.0 } else { 60.0 + 4.0 * wobble };
        let err = if bad { 0.2 } else { 0.001 + wobble / 1000.0 };
        writeln!(csv, "{ts},ledger-db,,latency_ms,{db}").unwrap();
        writeln!(csv, "{ts},ledger-db,,error_rate,{err}").unwrap();
        writeln!(csv, "{},api,,latency_ms,{api}", ts + 1).unwrap();
    }
    std::fs::write(d.join("metrics.csv"), csv).unwrap();
    std::fs::write(d.join("dependencies.csv"), "source,target\napi,ledger-db\n").unwrap();
    std::fs::write(
        d.join("changes.jsonl"),
        format!(
            "{{\"ts\":{},\"id\":\"chg-7\",\"service\":\"ledger-db\",\"kind\":\"deploy\",\"author\":\"dba-bob\",\"description\":\"index rebuild\"}}\n\
             {{\"ts\":{},\"id\":\"chg-8\",\"service\":\"api\",\"kind\":\"config\",\"author\":\"dev-eve\"}}\n",
            (t0 + 119 * 60) * 1000,
            t0 + 30 * 60
        ),
    )
    .unwrap();
    let out = d.join("incidents.json");
    let (ok, _, err) = selfheal(&[
        "replay",
        "--dir",
        d.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let inc = incidents(&out);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let h = &inc[0]["hypotheses"][0];
    assert_eq!(h["cause"], "bad_deploy", "{inc:#?}");
    assert_eq!(h["target"], "ledger-db");
    assert!(h["evidence"][0].as_str().unwrap().contains("chg-7"));
    let opened = inc[0]["opened_ts"].as_i64().unwrap();
    assert!(
        opened >= (t0 + 120 * 60) * 1000 && opened <= (t0 + 125 * 60) * 1000,
        "opened {opened}"
    );
}

#[test]
fn malformed_replay_input_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = || {
        let (ok, out, err) = selfheal(&["replay", "--dir", d.to_str().unwrap()]);
        assert!(!ok, "{out}");
        err
    };
    std::fs::write(d.join("dependencies.csv"), "source,target\na,b\n").unwrap();
    for (csv, want) in [
        (
            "timestamp,service,metric,value\n1,a,cpu,0.5\nyesterday,a,cpu,0.5\n",
            "metrics.csv:3: unreadable timestamp",
        ),
        (
            "timestamp,service,metric,value\n1,a,cpu,lots\n",
            "metrics.csv:2: value \"lots\" is not a number",
        ),
        (
            "timestamp,service,layer,metric,value\n1,a,kernel,cpu,1\n",
            "metrics.csv:2: layer \"kernel\"",
        ),
        (
            "timestamp,service,metric,value\n1,,cpu,1\n",
            "metrics.csv:2: service and metric must not be empty",
        ),
        (
            "time,svc,value\n1,a,1\n",
            "metrics.csv:1: needs the columns",
        ),
    ] {
        std::fs::write(d.join("metrics.csv"), csv).unwrap();
        let err = run();
        assert!(err.contains(want), "{want}: {err}");
    }
    std::fs::write(
        d.join("metrics.csv"),
        "timestamp,service,metric,value\n1,a,cpu,1\n",
    )
    .unwrap();
    std::fs::write(
        d.join("changes.jsonl"),
        "{\"ts\":1,\"id\":\"c\",\"service\":\"a\",\"kind\":\"deploy\"}\n{\"ts\":1,\"id\":\"c\",\"service\":\"a\",\"kind\":\"rewrite\"}\n",
    )
    .unwrap();
    assert!(run().contains("changes.jsonl:2:"));
    std::fs::remove_file(d.join("changes.jsonl")).unwrap();
    std::fs::remove_file(d.join("dependencies.csv")).unwrap();
    assert!(run().contains("needs topology.toml"));
}
