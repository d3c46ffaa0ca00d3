//! Alerts from a real Alertmanager (Debian's `prometheus-alertmanager`,
//! installed by the test command; `ALERTMANAGER` names another binary):
//! an alert posted to it reaches the brain through its webhook and opens
//! an incident; its resolution ends the symptom.

mod common;

use std::{process::Command, sync::Arc, time::Duration};

use common::{eventually, free_port};
use selfheal_agent::{AgentConfig, config::Feed};
use selfheal_brain::{BrainConfig, BrainStats, api::hash_token, store::Store};
use selfheal_bus::{Bus, LocalTransport};

const TOKEN: &str = "alertmanager-token-0123456789";

use common::Killed as Child;

fn alertmanager(dir: &std::path::Path, brain: std::net::SocketAddr) -> (Child, String) {
    let bin = std::env::var("ALERTMANAGER").unwrap_or_else(|_| "prometheus-alertmanager".into());
    let cfg = dir.join("alertmanager.yml");
    // The integration guide's receiver, pointed at this brain.
    let token = dir.join("selfheal.token");
    std::fs::write(&token, TOKEN).unwrap();
    let receivers = common::doc_block("docs/integrations.md", "```yaml\nreceivers:")
        .replace("https://selfheal.example.com", &format!("http://{brain}"))
        .replace(
            "/etc/alertmanager/selfheal.token",
            &token.display().to_string(),
        );
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: selfheal\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n{receivers}"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{bin} does not start ({e}); ./test.sh installs Debian's prometheus-alertmanager"
            )
        });
    (Child(child), format!("http://127.0.0.1:{port}"))
}

fn now_rfc3339(offset_s: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_alert_opens_an_incident_and_its_resolution_ends_the_symptom() {
    let dir = tempfile::tempdir().unwrap();
    let bus: Bus = Arc::new(LocalTransport::default());
    let store = dir.path().join("brain.db");
    let brain = common::brain_on(
        &bus,
        BrainConfig {
            store: store.clone(),
            playbooks: selfheal::paths::playbooks(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            alert_token_sha256: Some(hash_token(TOKEN)),
            ..BrainConfig::default()
        },
    )
    .await;
    // Something to keep the brain's clock moving: the host's own readings.
    let agent = common::agent_on(
        &bus,
        AgentConfig {
            feed: Feed::None,
            host: true,
            host_interval_ms: 200,
            actuate: false,
            ..AgentConfig::default()
        },
    )
    .await;
    let api = brain.api_addr.unwrap();
    let http = selfheal_brain::act::http::client().unwrap();

    // A wrong token is refused and counted.
    let r = http
        .post(format!("http://{api}/v1/alerts"))
        .bearer_auth("nope")
        .json(&serde_json::json!({ "alerts": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let (_am, am) = alertmanager(dir.path(), api);
    let alert = |ends: Option<String>| {
        let mut a = serde_json::json!({
            "labels": { "alertname": "PaymentErrors", "service": "cashier", "idc": "idc1", "scene": "checkout" },
            "annotations": { "summary": "5xx above 2% on checkout" },
            "startsAt": now_rfc3339(-5),
        });
        if let Some(e) = ends {
            a["endsAt"] = e.into();
        }
        serde_json::json!([a])
    };
    // Alertmanager may take a moment to listen.
    let post = |body: serde_json::Value| {
        let (http, am) = (http.clone(), am.clone());
        async move {
            for _ in 0..50 {
                if let Ok(r) = http
                    .post(format!("{am}/api/v2/alerts"))
                    .json(&body)
                    .send()
                    .await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("alertmanager did not take the alert");
        }
    };
    post(alert(None)).await;
    let stats: Arc<BrainStats> = brain.stats.clone();
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eventually(
        "the alert reaches the brain",
        Duration::from_secs(20),
        || n(&stats.alerts_received) >= 1 && n(&stats.incidents) >= 1,
    )
    .await;
    let incidents = Store::open(&store).unwrap().incidents().unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].service, "cashier");
    assert!(
        incidents[0].summary.contains("alert_PaymentErrors"),
        "{}",
        incidents[0].summary
    );

    // Resolved: the symptom's end reaches the incident's timeline.
    post(alert(Some(now_rfc3339(-1)))).await;
    eventually(
        "the resolution reaches the brain",
        Duration::from_secs(20),
        || n(&stats.alerts_received) >= 2,
    )
    .await;
    let id = incidents[0].id.clone();
    eventually("the symptom ends", Duration::from_secs(10), || {
        Store::open(&store)
            .unwrap()
            .timeline_of(&id)
            .unwrap()
            .iter()
            .any(|(_, kind, detail)| kind == "cleared" && detail.contains("alert_PaymentErrors"))
    })
    .await;
    assert_eq!(n(&stats.alerts_refused), 1, "the wrong token");
    agent.shutdown().await;
    brain.shutdown().await;
}
