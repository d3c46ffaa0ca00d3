//! `selfheal bench ingest` runs end to end on a real nats-server (its own,
//! on a free loopback port) and writes every figure it prints. Its numbers
//! belong in docs/benchmarks.md, measured in release on an idle machine;
//! here only that they are measured.

mod common;

#[test]
fn bench_ingest_measures_the_pipe_the_brain_and_memory() {
    let nats = common::nats_server_bin();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("ingest.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args([
            "bench",
            "ingest",
            "--series",
            "2000",
            "--seconds",
            "0.5",
            "--pairs",
            "2",
            "--memory",
            "1000",
            "--memory",
            "5000",
            "--json",
        ])
        .arg(&json)
        .env("NATS_SERVER", nats)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Two runs for each of the two encodings, and their median ratio.
    assert_eq!(r["throughput"].as_array().unwrap().len(), 4, "{r}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("brain / pipe median").count(), 2, "{stdout}");
    let t = &r["throughput"][0];
    assert_eq!(t["series"], 2000);
    for k in ["raw_samples_per_s", "brain_samples_per_s", "ratio"] {
        assert!(t[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    // Core NATS may drop for a slow consumer: what was taken is counted,
    // never more than what was sent.
    let (taken, sent) = (
        t["raw_taken"].as_u64().unwrap(),
        t["published"].as_u64().unwrap(),
    );
    assert!(taken > 0 && taken <= sent, "{r}");
    // JSON batches are decoded; binary ones like their publisher's last
    // are read where they lie: all but each publisher's first few.
    for t in r["throughput"].as_array().unwrap() {
        let (all, in_place) = (
            t["brain_batches"].as_u64().unwrap(),
            t["brain_batches_read_in_place"].as_u64().unwrap(),
        );
        match t["encoding"].as_str().unwrap() {
            "json" => assert_eq!(in_place, 0, "{t}"),
            _ => assert!(all > 0 && in_place * 10 >= all * 9, "{t}"),
        }
    }
    let m = r["memory"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{r}");
    assert!(m[1]["bytes_per_series"].as_f64().is_some(), "{r}");
    assert!(m[1]["rss_per_series"].as_f64().unwrap() > 0.0, "{r}");
    // The brain keeps transitions only; the score's channels are
    // `selfheal detect`'s.
    let (det, scorer) = (
        r["detector_state_bytes"].as_u64().unwrap(),
        r["scorer_state_bytes"].as_u64().unwrap(),
    );
    assert!(det <= 128 && scorer > det, "{r}");
    // A wrong argument is refused before anything starts.
    let (ok, _, err) = common::selfheal(&["bench", "ingest", "--seconds", "0"]);
    assert!(!ok && err.contains("--seconds"), "{err}");
    let (ok, _, err) = common::selfheal(&["bench", "ingest", "--pairs", "0"]);
    assert!(!ok && err.contains("--pairs"), "{err}");
}
