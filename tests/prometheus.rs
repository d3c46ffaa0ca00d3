//! Indicators from a real Prometheus (Debian's `prometheus`, installed by
//! the test command; `PROMETHEUS` names another binary):
//! - Prometheus scrapes the stack's payment service and remote-writes to
//!   the brain, whose indicators come out on the bus as an agent's would
//!   (rates, interval percentiles); a bad request is refused and counted;
//! - an agent scrapes the same service and Prometheus' own `/metrics` (a
//!   real Go exporter: counters, histograms, summaries).

mod common;

use std::{collections::BTreeSet, process::Command, sync::Arc, time::Duration};

use common::{eventually, free_port};
use selfheal_agent::{AgentConfig, config::Feed};
use selfheal_brain::{BrainConfig, api::hash_token, remote_write::RemoteWriteConfig};
use selfheal_bus::{Bus, IndicatorBatch, LocalTransport};
use selfheal_sim::stack::backend::{Backend, serve};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "remote-write-token-0123456789";

use common::Killed as Child;

fn prometheus(dir: &std::path::Path, target: &str, write_to: Option<String>) -> (Child, String) {
    let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let port = free_port();
    let mut cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n\
         scrape_configs:\n- job_name: pay\n  static_configs:\n  - targets: ['{target}']\n    labels:\n      idc: idc1\n"
    );
    if let Some(base) = write_to {
        // The integration guide's block, pointed at this brain.
        let token = dir.join("selfheal.token");
        std::fs::write(&token, TOKEN).unwrap();
        cfg.push_str(
            &common::doc_block("docs/integrations.md", "```yaml\nremote_write:")
                .replace("https://selfheal.example.com", &base)
                .replace(
                    "/etc/prometheus/selfheal.token",
                    &token.display().to_string(),
                )
                .replace("batch_send_deadline: 1s", "batch_send_deadline: 500ms"),
        );
    }
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, cfg).unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{bin} does not start ({e}); ./test.sh installs Debian's prometheus")
        });
    (Child(child), format!("127.0.0.1:{port}"))
}

/// An instance of the stack's payment service taking payments, a few a
/// second, until `stop`.
async fn paying(stop: CancellationToken) -> std::net::SocketAddr {
    let (addr, _) = serve(
        Backend::new("pay-1"),
        "127.0.0.1:0".parse().unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let http = selfheal_agent::probe::client().unwrap();
        while !stop.is_cancelled() {
            let _ = http.post(format!("http://{addr}/pay")).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    addr
}

/// (source, service, instance, metric) seen.
type Seen = std::sync::Mutex<BTreeSet<(String, String, String, String)>>;

/// Every (source, service, instance, metric) seen on the bus's indicator
/// subjects.
fn watch(mut sub: selfheal_bus::Subscription) -> Arc<Seen> {
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(b) = serde_json::from_slice::<IndicatorBatch>(&m.payload) {
                for x in b.samples {
                    s.lock().unwrap().insert((
                        b.source.clone(),
                        b.service.clone(),
                        x.instance.unwrap_or_default(),
                        x.metric,
                    ));
                }
            }
        }
    });
    seen
}

fn has(seen: &Seen, source: &str, service: &str, metric: &str) -> bool {
    seen.lock()
        .unwrap()
        .iter()
        .any(|(s, sv, _, m)| s == source && sv == service && m == metric)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_a_scraped_service_into_the_brain() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Bus = Arc::new(LocalTransport::default());
    let seen = watch(bus.subscribe("selfheal.ind.>").await.unwrap());
    let brain = common::brain_on(
        &bus,
        BrainConfig {
            store: dir.path().join("brain.db"),
            playbooks: selfheal::paths::playbooks(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            remote_write: Some(RemoteWriteConfig {
                token_sha256: hash_token(TOKEN),
                idc: "idc1".into(),
                max_series: 10_000,
            }),
            ..BrainConfig::default()
        },
    )
    .await;
    let api = brain.api_addr.unwrap();
    let stop = CancellationToken::new();
    let pay = paying(stop.clone()).await;
    let (_prom, _) = prometheus(dir.path(), &pay.to_string(), Some(format!("http://{api}")));
    let stats = brain.stats.clone();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eventually(
        "remote-written rates and percentiles of the payment service",
        Duration::from_secs(40),
        || {
            has(&seen, "remote_write", "pay", "payment_requests_per_s")
                && has(&seen, "remote_write", "pay", "payment_duration_seconds_p99")
                && has(&seen, "remote_write", "pay", "up")
        },
    )
    .await;
    assert!(n(&stats.remote_write_samples) > 0);
    // The instance is Prometheus' own label, made wire-safe.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(s, _, i, _)| s == "remote_write"
                && i == &format!("{pay}").replace(['.', ':'], "_")),
        "{:?}",
        seen.lock().unwrap()
    );

    // Refusals: a wrong token, then bodies that are not remote_write.
    let http = selfheal_brain::act::http::client().unwrap();
    let refused_before = n(&stats.remote_write_refused);
    let post = |token: &str, body: Vec<u8>| {
        http.post(format!("http://{api}/v1/write"))
            .bearer_auth(token)
            .header("content-encoding", "snappy")
            .body(body)
            .send()
    };
    assert_eq!(post("nope", vec![]).await.unwrap().status().as_u16(), 401);
    let r = post(TOKEN, b"not snappy".to_vec()).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("snappy"));
    assert_eq!(n(&stats.remote_write_refused), refused_before + 2);
    stop.cancel();
    brain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_scrapes_a_service_and_prometheus_itself() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Bus = Arc::new(LocalTransport::default());
    let seen = watch(bus.subscribe("selfheal.ind.>").await.unwrap());
    let stop = CancellationToken::new();
    let pay = paying(stop.clone()).await;
    let (_prom, prom) = prometheus(dir.path(), &pay.to_string(), None);
    let dead = free_port();
    let cfg: AgentConfig = toml::from_str(&format!(
        r#"
feed = "none"
host = false
actuate = false

[[scrape]]
name = "pay"
url = "http://{pay}/metrics"
instance = "pay-1"
interval_ms = 300
timeout_ms = 300

[[scrape]]
name = "prometheus"
url = "http://{prom}/metrics"
interval_ms = 500
timeout_ms = 500

[[scrape]]
name = "gone"
url = "http://127.0.0.1:{dead}/metrics"
interval_ms = 300
timeout_ms = 300
"#
    ))
    .unwrap();
    assert_eq!(cfg.validate(), Vec::<String>::new());
    assert_eq!(cfg.feed, Feed::None);
    let agent = common::agent_on(&bus, cfg).await;
    eventually(
        "the service's and Prometheus' own indicators",
        Duration::from_secs(30),
        || {
            has(&seen, "agent-1", "pay", "payment_requests_per_s")
                && has(&seen, "agent-1", "pay", "payment_duration_seconds_p50")
                && has(&seen, "agent-1", "pay", "process_cpu_milliseconds_per_s")
                // A Go exporter's counter and summary.
                && has(&seen, "agent-1", "prometheus", "prometheus_http_requests_per_s")
                && has(&seen, "agent-1", "prometheus", "go_gc_duration_seconds_p50")
                && has(&seen, "agent-1", "gone", "up")
        },
    )
    .await;
    let s = agent.stats.clone();
    assert!(
        selfheal_agent::AgentStats::get(&s.scrape_failures) >= 1,
        "the dead target"
    );
    assert!(selfheal_agent::AgentStats::get(&s.scrapes) >= 3);
    agent.shutdown().await;
    stop.cancel();
}
