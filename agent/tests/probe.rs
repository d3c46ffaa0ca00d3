//! Dial tests against a real HTTP server: a healthy endpoint, a failing
//! one, a slow one, one that answers 200 with an error page; and through a
//! running agent, their results published as business indicators.

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use selfheal_agent::{
    Agent, AgentConfig,
    config::Feed,
    probe::{Dialer, Probe, client},
};
use selfheal_bus::{Bus, IndicatorBatch, Layer, LocalTransport, Subjects};

async fn server() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "payment accepted" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route("/wrong", get(|| async { "something went wrong" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn probe(name: &str, url: String) -> Probe {
    Probe {
        name: name.into(),
        service: "cashier".into(),
        url,
        method: "GET".into(),
        body: None,
        expect_status: 200,
        expect_body: Some("accepted".into()),
        timeout_ms: 300,
        interval_ms: 300,
    }
}

#[tokio::test]
async fn a_dial_judges_status_body_and_time() {
    let base = server().await;
    let c = client().unwrap();
    let ok = Dialer::new(probe("pay", format!("{base}/ok")))
        .unwrap()
        .dial(&c)
        .await;
    assert!(ok.ok, "{ok:?}");
    assert!(ok.latency_ms > 0.0 && ok.latency_ms < 300.0, "{ok:?}");
    for (path, says) in [
        ("/fail", "HTTP 500"),
        ("/wrong", "does not match"),
        ("/slow", "no answer in 300 ms"),
    ] {
        let d = Dialer::new(probe("pay", format!("{base}{path}")))
            .unwrap()
            .dial(&c)
            .await;
        assert!(!d.ok, "{path}: {d:?}");
        assert!(
            d.why.as_deref().unwrap_or("").contains(says),
            "{path}: {d:?}"
        );
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let d = Dialer::new(probe("pay", format!("http://{closed}/")))
        .unwrap()
        .dial(&c)
        .await;
    assert!(!d.ok);
    // Bad probes are named.
    let mut bad = probe("pay", "ftp://x".into());
    bad.expect_body = Some("(".into());
    bad.interval_ms = 10;
    assert_eq!(
        bad.validate("probe[0]").len(),
        3,
        "{:?}",
        bad.validate("probe[0]")
    );
}

#[tokio::test]
async fn an_agent_publishes_each_dial_as_business_indicators() {
    let base = server().await;
    let bus: Bus = Arc::new(LocalTransport::default());
    let subjects = Subjects::default();
    let mut sub = bus
        .subscribe(&subjects.indicators(Layer::Business, "idc1", "cashier"))
        .await
        .unwrap();
    let config = AgentConfig {
        feed: Feed::None,
        host: false,
        actuate: false,
        probe: vec![
            probe("pay-page", format!("{base}/ok")),
            probe("refund-page", format!("{base}/fail")),
        ],
        ..AgentConfig::default()
    };
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let agent = Agent {
        config,
        bus: bus.clone(),
        subjects,
        source: None,
        actuators: Vec::new(),
    }
    .spawn()
    .await
    .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await else {
            break;
        };
        let b: IndicatorBatch = serde_json::from_slice(&m.payload).unwrap();
        let scene = b.samples[0].scene.clone().unwrap();
        let value = |metric: &str| {
            b.samples
                .iter()
                .find(|s| s.metric == metric)
                .map(|s| s.value)
                .unwrap()
        };
        assert!(value("probe_latency_ms") >= 0.0);
        seen.insert(scene, value("probe_success"));
    }
    assert_eq!(seen.get("pay-page"), Some(&1.0), "{seen:?}");
    assert_eq!(seen.get("refund-page"), Some(&0.0), "{seen:?}");
    assert!(selfheal_agent::AgentStats::get(&agent.stats.probe_failures) >= 1);
    agent.shutdown().await;
}
