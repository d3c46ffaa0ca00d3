//! The reliability suite: the attacks and faults a probe of a running brain
//! found it did not hold, replayed against a brain over a real nats-server
//! on loopback, each bounded in time and count. Figures in
//! docs/benchmarks.md, "Reliability".

mod common;

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering, time::Duration};

use common::{NatsServer, eventually};
use selfheal_brain::{Brain, BrainConfig, BrainHandle, api::hash_token};
use selfheal_bus::{
    Bus, IndicatorBatch, Layer, NatsTransport, Sample, Subjects, WIRE_VERSION, encode, wall_ms,
};

const TOKEN: &str = "ci-s3cret";

/// A brain over `nats`, listening on a free loopback port, the change
/// webhook on; `tweak` adjusts its configuration.
async fn brain(
    nats: &NatsServer,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut BrainConfig),
) -> (BrainHandle, Bus) {
    let bus: Bus = Arc::new(NatsTransport::connect(&nats.url(), "brain").await.unwrap());
    let mut config = BrainConfig {
        store: dir.join("brain.db"),
        playbooks: selfheal::paths::playbooks(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        change_token_sha256: Some(hash_token(TOKEN)),
        ..BrainConfig::default()
    };
    tweak(&mut config);
    let handle = Brain {
        config,
        bus: bus.clone(),
        subjects: Subjects::default(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn()
    .await
    .unwrap();
    (handle, bus)
}

fn batch(source: &str, service: &str, instance: Option<String>, ts: i64) -> IndicatorBatch {
    IndicatorBatch {
        v: WIRE_VERSION,
        source: source.into(),
        seq: 1,
        layer: Layer::System,
        idc: "idc1".into(),
        service: service.into(),
        samples: vec![Sample {
            scene: None,
            link: None,
            instance,
            metric: "cpu".into(),
            labels: BTreeMap::new(),
            ts,
            value: 0.3,
        }],
    }
}

async fn post_change(addr: std::net::SocketAddr, body: &str) -> (u16, String) {
    let res = selfheal_brain::act::http::client()
        .unwrap()
        .post(format!("http://{addr}/v1/changes"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Finding 1: notices answered 202 were then refused by the brain's own
/// intake (no author; a timestamp far off) and never reached diagnosis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_notice_answered_202_is_filed_and_one_the_intake_would_refuse_is_a_400() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (brain, _bus) = brain(&nats, dir.path(), |_| {}).await;
    let addr = brain.api_addr.unwrap();
    let now = wall_ms();
    let accepted = [
        // No author: documented as optional.
        r#"{"id": "chg-1", "service": "payment-engine", "kind": "deploy"}"#.to_string(),
        format!(
            r#"{{"ts": {now}, "id": "deploy.2026.7", "service": "cashier", "kind": "config", "description": "limits"}}"#
        ),
    ];
    for body in &accepted {
        let (status, text) = post_change(addr, body).await;
        assert_eq!(status, 202, "{body}: {text}");
    }
    for (body, says) in [
        (
            r#"{"ts": 1000, "id": "chg-2", "service": "cashier", "kind": "deploy", "author": "dev"}"#,
            "timestamp_skew",
        ),
        (
            r#"{"ts": 99999999999999, "id": "chg-3", "service": "cashier", "kind": "deploy", "author": "dev"}"#,
            "timestamp_skew",
        ),
    ] {
        let (status, text) = post_change(addr, body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(says), "{text}");
        let _: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
    }
    let stats = brain.stats.clone();
    eventually(
        "both accepted notices filed",
        Duration::from_secs(10),
        || stats.contexts.load(Ordering::Relaxed) == 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.rejected_total(), 0, "the intake refused nothing");
    brain.shutdown().await;
}
