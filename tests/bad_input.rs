//! Bad input on the indicator subjects is counted and dropped; the brain
//! keeps working. Over a real nats-server.

mod common;

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering, time::Duration};

use common::{NatsServer, eventually};
use selfheal_brain::{Brain, BrainConfig};
use selfheal_bus::{
    Bus, Encoding, IndicatorBatch, Layer, NatsTransport, Sample, Subjects, WIRE_VERSION, encode,
    encode_batch,
};

fn batch(ts: i64, value: f64) -> IndicatorBatch {
    IndicatorBatch {
        v: WIRE_VERSION,
        source: "test".into(),
        seq: 1,
        layer: Layer::Business,
        idc: "idc1".into(),
        service: "cashier".into(),
        samples: vec![Sample {
            scene: Some("checkout".into()),
            link: Some("payment".into()),
            instance: None,
            metric: "success_rate".into(),
            labels: BTreeMap::new(),
            ts,
            value,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_counted_and_dropped() {
    let nats = NatsServer::start();
    let brain_bus: Bus = Arc::new(NatsTransport::connect(&nats.url(), "brain").await.unwrap());
    let pub_bus: Bus = Arc::new(
        NatsTransport::connect(&nats.url(), "publisher")
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = BrainConfig {
        store: dir.path().join("s.db"),
        playbooks: selfheal::paths::playbooks(),
        max_message_bytes: 64 * 1024,
        settle_s: 1,
        ..BrainConfig::default()
    };
    let subjects = Subjects::default();
    let brain = Brain {
        config,
        bus: brain_bus.clone(),
        subjects: subjects.clone(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn()
    .await
    .unwrap();
    brain_bus.flush().await.unwrap();
    let stats = brain.stats.clone();
    let subject = subjects.indicators(Layer::Business, "idc1", "cashier");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;

    // One good batch sets the brain's clock.
    pub_bus
        .publish(&subject, encode(&batch(t0, 0.997)).unwrap())
        .await
        .unwrap();
    eventually("first batch", Duration::from_secs(10), || {
        stats.batches.load(Ordering::Relaxed) == 1
    })
    .await;

    let good = String::from_utf8(encode(&batch(t0, 0.997)).unwrap().to_vec()).unwrap();
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"\x00\xffgarbage".to_vec(), "malformed"),
        (
            "truncated",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "malformed",
        ),
        (
            "NaN written as null",
            good.replace("0.997", "null").into_bytes(),
            "malformed",
        ),
        (
            "unknown field",
            good.replace("\"seq\"", "\"evil\":1,\"seq\"").into_bytes(),
            "malformed",
        ),
        (
            "oversized",
            format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024)).into_bytes(),
            "too_large",
        ),
        (
            "future version",
            good.replace("\"v\":1", "\"v\":99").into_bytes(),
            "version",
        ),
        (
            "a day in the future",
            encode(&batch(t0 + 86_400_000, 0.99)).unwrap().to_vec(),
            "timestamp_skew",
        ),
        (
            "no samples",
            good.replace(
                &good[good.find("[").unwrap()..good.rfind("]").unwrap() + 1],
                "[]",
            )
            .into_bytes(),
            "empty",
        ),
        (
            "binary, truncated",
            encode_batch(&batch(t0, 0.99), Encoding::Binary).unwrap()[..20].to_vec(),
            "malformed",
        ),
        (
            "binary, NaN",
            encode_batch(&batch(t0, f64::NAN), Encoding::Binary)
                .unwrap()
                .to_vec(),
            "non_finite",
        ),
        (
            "binary, future version",
            encode_batch(
                &IndicatorBatch {
                    v: 99,
                    ..batch(t0, 0.99)
                },
                Encoding::Binary,
            )
            .unwrap()
            .to_vec(),
            "version",
        ),
    ];
    for (what, payload, _) in &bad {
        pub_bus
            .publish(&subject, payload.clone().into())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // Context messages are checked too.
    pub_bus
        .publish(&subjects.change("cashier"), b"{\"v\":1}".to_vec().into())
        .await
        .unwrap();
    pub_bus
        .publish(&subjects.hot("cashier"), b"not json".to_vec().into())
        .await
        .unwrap();
    // A valid batch on a subject that does not match its header.
    pub_bus
        .publish(
            &subjects.indicators(Layer::System, "idc9", "other"),
            encode(&batch(t0, 0.99)).unwrap(),
        )
        .await
        .unwrap();
    pub_bus.flush().await.unwrap();
    let expected = bad.len() as u64 + 3;
    eventually("every bad message counted", Duration::from_secs(10), || {
        stats.rejected_total() == expected
    })
    .await;
    for (what, _, reason) in &bad {
        assert!(
            stats.rejected_for(reason) >= 1,
            "{what} counted as {reason}"
        );
    }
    assert_eq!(stats.rejected_for("malformed"), 7);
    assert_eq!(stats.rejected_for("subject_mismatch"), 1);
    assert!(
        stats
            .render_prometheus()
            .contains("selfheal_brain_rejected_total{reason=\"too_large\"} 1")
    );

    // The brain keeps working: normal history, then a drop it detects,
    // the batches in JSON and binary by turns (one series, both read alike).
    for i in 1..=60 {
        let v = if i <= 50 {
            0.997 + 0.001 * ((i % 3) as f64 - 1.0)
        } else {
            0.6
        };
        let encoding = [Encoding::Json, Encoding::Binary][i as usize % 2];
        pub_bus
            .publish(
                &subject,
                encode_batch(&batch(t0 + i * 1000, v), encoding).unwrap(),
            )
            .await
            .unwrap();
    }
    pub_bus.flush().await.unwrap();
    eventually(
        "good batches after the bad ones",
        Duration::from_secs(10),
        || stats.batches.load(Ordering::Relaxed) == 61,
    )
    .await;
    eventually("the drop detected", Duration::from_secs(10), || {
        stats.anomalies.load(Ordering::Relaxed) >= 1
    })
    .await;
    eventually("an incident opened", Duration::from_secs(10), || {
        stats.incidents.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(stats.rejected_total(), expected);
    brain.shutdown().await;
}

/// Runs `selfheal ARGS` with backtraces asked for; returns (exit code,
/// stderr).
fn exit_of(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("selfheal runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_fails_with_one_clean_error_and_its_documented_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad_pb = dir.path().join("bad.rhai");
    std::fs::write(
        &bad_pb,
        "fn meta() { #{ handles: [\"x\"] } }\nfn plan(i) { nosuch::call(); }\n",
    )
    .unwrap();
    let no_switch = dir.path().join("brain.toml");
    std::fs::write(&no_switch, "").unwrap();
    let not_a_db = dir.path().join("store.db");
    std::fs::write(&not_a_db, vec![b'x'; 4096]).unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (args, code, says) in [
        (vec!["demo", "--speed", "0"], 2, "--speed must be"),
        (
            vec!["drill", "/nonexistent/scenario.toml"],
            2,
            "/nonexistent/scenario.toml",
        ),
        (
            vec![
                "kill-switch",
                "status",
                "--config",
                no_switch.to_str().unwrap(),
            ],
            2,
            "kill_switch_file is not set",
        ),
        (
            vec!["playbook", "check", bad_pb.to_str().unwrap()],
            1,
            "problem(s)",
        ),
        (
            vec![
                "backup",
                "--store",
                not_a_db.to_str().unwrap(),
                "--out",
                dir.path().join("copy.db").to_str().unwrap(),
            ],
            3,
            "error: ",
        ),
        (vec!["no-such-command"], 2, "unrecognized subcommand"),
    ] {
        let (got, err) = exit_of(&args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            !err.contains("backtrace") && !err.contains("panicked") && !err.contains("Error {"),
            "{args:?} printed a backtrace or a debug dump: {err}"
        );
        assert!(
            readme.contains(&format!("| {code} |")),
            "exit code {code} is not in the README's table"
        );
    }
}
