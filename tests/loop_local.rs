//! The whole loop over the in-process bus (the embedded default).

use std::{sync::Arc, time::Duration};

use selfheal::{drill_options, run_loop};
use selfheal_bus::LocalTransport;
use selfheal_sim::Scenario;

/// MTTR bound for the bank-channel degradation, platform time: detection
/// (≈3 s), evidence (3 s), two 5-second probe steps, and the detector's
/// five clean samples.
const MTTR_BOUND_MS: i64 = 30_000;

async fn run(opts: selfheal::LoopOptions) -> selfheal::LoopOutcome {
    let bus = Arc::new(LocalTransport::default());
    tokio::time::timeout(Duration::from_secs(60), run_loop(bus, opts, |_| {}))
        .await
        .expect("the run ends")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_a_degraded_channel_over_the_in_process_bus() {
    let dir = tempfile::tempdir().unwrap();
    // Lockstep on the virtual clock: the figures do not depend on the load
    // of the machine running the test.
    let mut opts = drill_options(Scenario::channel_degradation(), dir.path());
    opts.stop_after_outcome = Some(Duration::from_secs(10));
    let out = run(opts).await;
    let mttd = out.mttd_ms().expect("detected");
    assert!((0..=5_000).contains(&mttd), "mttd {mttd}");
    let mttr = out.mttr_ms().expect("recovery verified");
    assert!(mttr <= MTTR_BOUND_MS, "mttr {mttr}");
    assert!(
        out.truth.recovered_ms.is_some(),
        "the platform is back within SLO"
    );
    assert!(out.truth.within_slo);
    assert_eq!(
        out.incidents.len(),
        1,
        "one problem, one incident: {:?}",
        out.incidents
    );
    assert_eq!(out.incidents[0].cause.as_deref(), Some("channel_degraded"));
    assert_eq!(out.incidents[0].target.as_deref(), Some("bank-a"));
    assert_eq!(out.incidents[0].state, "recovered");
    assert!(!out.actions.is_empty());
    for a in &out.actions {
        assert_eq!(
            (a.kind.as_str(), a.target.as_str(), a.state.as_str()),
            ("shift_traffic", "bank-a", "applied")
        );
    }
    // The platform applied exactly what the store holds, once each.
    let applied: Vec<&str> = out.truth.actions.iter().map(|a| a.key.as_str()).collect();
    let stored: Vec<&str> = out.actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(applied, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_run_executes_no_action() {
    let dir = tempfile::tempdir().unwrap();
    let opts = drill_options(Scenario::control(), dir.path());
    let out = run(opts).await;
    assert!(
        out.brain.samples.load(std::sync::atomic::Ordering::Relaxed) > 10_000,
        "the brain saw the whole run"
    );
    assert_eq!(out.executed_actions(), 0, "{:?}", out.actions);
    assert!(out.truth.actions.is_empty());
    assert!(
        out.incidents.is_empty(),
        "no false alarm: {:?}",
        out.incidents
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_but_never_sends() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = drill_options(Scenario::channel_degradation(), dir.path());
    opts.brain.guard.dry_run = true;
    opts.stop_after_outcome = Some(Duration::from_secs(5));
    let out = run(opts).await;
    assert!(out.mttd_ms().is_some());
    assert!(out.truth.actions.is_empty(), "nothing reached the platform");
    assert!(
        !out.actions.is_empty() && out.actions.iter().all(|a| a.state == "dry_run"),
        "{:?}",
        out.actions
    );
    assert!(out.truth.recovered_ms.is_none());
}

/// A playbook whose action does not help, for the slow database: throttle
/// an unrelated key, then expect the symptoms to clear within 10 s.
fn unhelpful_playbook(on_failure: &str) -> String {
    format!(
        r#"
fn meta() {{
    #{{ handles: ["slow_database"], risk: "low", approval: "auto",
        verify_s: 10, on_failure: "{on_failure}" }}
}}
fn plan(incident) {{
    traffic::throttle_key("cashier", "item-1", 50.0);
    verify::cleared();
}}
"#
    )
}

async fn run_unhelpful(on_failure: &str) -> selfheal::LoopOutcome {
    let dir = tempfile::tempdir().unwrap();
    let books = dir.path().join("playbooks");
    std::fs::create_dir(&books).unwrap();
    std::fs::write(books.join("unhelpful.rhai"), unhelpful_playbook(on_failure)).unwrap();
    // The shipped diagnosis rules, which live beside the playbooks.
    let rules = books.join("diagnose");
    std::fs::create_dir(&rules).unwrap();
    for e in std::fs::read_dir(selfheal::paths::playbooks().join("diagnose")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rhai") {
            std::fs::copy(&p, rules.join(p.file_name().unwrap())).unwrap();
        }
    }
    let topo = selfheal_sim::default_topology();
    let file = selfheal::paths::scenarios().join("slow_database.toml");
    let s = selfheal::drill::load(&[file], &topo).unwrap().remove(0);
    let mut opts = drill_options(s, dir.path());
    opts.brain.playbooks = books;
    opts.stop_after_outcome = Some(Duration::from_secs(5));
    run(opts).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_reverts_what_the_playbook_did_then_escalates() {
    let out = run_unhelpful("revert").await;
    let applied: Vec<(&str, &str)> = out
        .truth
        .actions
        .iter()
        .map(|a| (a.kind.as_str(), a.target.as_str()))
        .collect();
    assert_eq!(
        applied,
        [("throttle", "item-1"), ("restore", "item-1")],
        "the throttle is undone"
    );
    // Both went through the write-ahead, under distinct keys.
    let stored: Vec<(&str, &str)> = out
        .actions
        .iter()
        .map(|a| (a.kind.as_str(), a.state.as_str()))
        .collect();
    assert_eq!(stored, [("throttle", "applied"), ("restore", "applied")]);
    assert_eq!(out.incidents.len(), 1);
    assert_eq!(out.incidents[0].state, "escalated");
    let why = out
        .timeline
        .iter()
        .find(|e| e.kind == "escalated")
        .map(|e| e.text.clone())
        .unwrap_or_default();
    assert!(
        why.contains("verification failed")
            && why.contains("tried throttle item-1")
            && why.contains("reverted"),
        "{why}"
    );

    // Without `on_failure: "revert"` the throttle stays and a person decides.
    let out = run_unhelpful("escalate").await;
    assert_eq!(out.truth.actions.len(), 1, "{:?}", out.truth.actions);
    assert_eq!(out.incidents[0].state, "escalated");
}

/// An HTTP endpoint, as a deploy system would expose: it takes the
/// action's JSON, applies it through the platform's own actuator (on the
/// bus, behind it), and answers with the actuator's reply. Records the
/// idempotency keys it saw.
async fn deploy_endpoint(
    bus: selfheal_bus::Bus,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post};
    type Seen = Arc<std::sync::Mutex<Vec<String>>>;
    let seen: Seen = Arc::default();
    async fn apply(
        State((bus, seen)): State<(selfheal_bus::Bus, Seen)>,
        h: HeaderMap,
        body: Bytes,
    ) -> Bytes {
        let key = h
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        seen.lock().unwrap().push(key);
        let req: selfheal_bus::ActionRequest = serde_json::from_slice(&body).unwrap();
        let subject = selfheal_bus::Subjects::default().act(&req.service);
        bus.request(&subject, body, Duration::from_secs(5))
            .await
            .unwrap()
    }
    let app = axum::Router::new()
        .route("/deploy/actions", post(apply))
        .with_state((bus, seen.clone()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_routed_to_an_http_endpoint_heals_through_it() {
    let bus = Arc::new(LocalTransport::default());
    let (addr, seen) = deploy_endpoint(bus.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let topo = selfheal_sim::default_topology();
    let file = selfheal::paths::scenarios().join("bad_deploy.toml");
    let s = selfheal::drill::load(&[file], &topo).unwrap().remove(0);
    let mut opts = drill_options(s, dir.path());
    opts.brain.http_allow = vec![format!("http://{addr}/deploy/")];
    opts.brain.http_actuator = vec![selfheal_brain::act::http::HttpRoute {
        name: "deploy".into(),
        url: format!("http://{addr}/deploy/actions"),
        kinds: vec![selfheal_bus::ActionKind::Rollback],
        services: vec![],
        token_env: None,
        timeout_ms: 5000,
        retries: 2,
        backoff_ms: 50,
    }];
    opts.stop_after_outcome = Some(Duration::from_secs(5));
    let out = tokio::time::timeout(Duration::from_secs(60), run_loop(bus, opts, |_| {}))
        .await
        .expect("the run ends")
        .unwrap();
    let applied: Vec<(&str, &str)> = out
        .truth
        .actions
        .iter()
        .map(|a| (a.kind.as_str(), a.target.as_str()))
        .collect();
    assert_eq!(applied, [("rollback", "payment-engine")]);
    assert_eq!(out.actions.len(), 1);
    assert_eq!(out.actions[0].state, "applied");
    // It went through the endpoint, once, under the stored key.
    assert_eq!(*seen.lock().unwrap(), [out.actions[0].id.clone()]);
    assert_eq!(out.incidents[0].state, "recovered");
}

#[tokio::test]
async fn a_route_outside_the_allow_list_is_refused_by_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = selfheal::brain_config_in(dir.path());
    cfg.http_allow = vec!["https://deploy.example.com/api/".into()];
    cfg.http_actuator = vec![selfheal_brain::act::http::HttpRoute {
        name: "deploy".into(),
        url: "https://elsewhere.example.com/api/actions".into(),
        kinds: vec![selfheal_bus::ActionKind::Rollback],
        services: vec![],
        token_env: None,
        timeout_ms: 5000,
        retries: 2,
        backoff_ms: 50,
    }];
    let problems = cfg.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("http_actuator \"deploy\"") && p.contains("under no base URL")),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_incident_is_remembered_and_named_when_it_looks_alike_again() {
    let dir = tempfile::tempdir().unwrap();
    let topo = selfheal_sim::default_topology();
    let file = selfheal::paths::scenarios().join("bad_deploy.toml");
    let s = selfheal::drill::load(&[file], &topo).unwrap().remove(0);
    let run_once = || {
        let mut opts = drill_options(s.clone(), dir.path());
        opts.stop_after_outcome = Some(Duration::from_secs(5));
        run(opts)
    };
    let first = run_once().await;
    assert_eq!(first.incidents[0].state, "recovered");
    let first_id = first.incidents[0].id.clone();
    // The same fault again, on the same store.
    let second = run_once().await;
    let inc = second
        .incidents
        .iter()
        .find(|i| i.id != first_id)
        .expect("a new incident");
    let top = &second.hypotheses[&inc.id][0];
    assert_eq!(
        (top.cause.as_str(), top.target.as_str()),
        ("bad_deploy", "payment-engine")
    );
    assert!(
        top.evidence
            .iter()
            .any(|e| e.contains(&first_id) && e.contains("healed by rollback payment-engine")),
        "{:?} first {:?} second {:?}",
        top.evidence,
        first
            .incidents
            .iter()
            .map(|i| (&i.id, &i.state))
            .collect::<Vec<_>>(),
        second
            .incidents
            .iter()
            .map(|i| (&i.id, &i.state))
            .collect::<Vec<_>>()
    );
    assert!(top.evidence.iter().any(|e| e == "it happened before"));
}

/// The brain's topology file is out of date: it says the payment engine
/// runs one instance per IDC and knows no `acquiring` service. The agents
/// announce what they see, so one instance pinned among two is still a
/// saturated host, and the unknown service is learnt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_follows_what_agents_announce() {
    let dir = tempfile::tempdir().unwrap();
    let topo = selfheal_sim::default_topology();
    let file = selfheal::paths::scenarios().join("saturated_host.toml");
    let s = selfheal::drill::load(&[file], &topo).unwrap().remove(0);
    let mut stale = topo.clone();
    for svc in &mut stale.services {
        if svc.name == "payment-engine" {
            svc.instances = 1;
        }
    }
    stale.services.retain(|s| s.name != "acquiring");
    for s in &mut stale.services {
        s.depends_on.retain(|d| d != "acquiring");
    }
    for l in &mut stale.links {
        l.services.retain(|s| s != "acquiring");
    }
    let mut opts = drill_options(s, dir.path());
    opts.brain_topology = Some(stale);
    opts.stop_after_outcome = Some(Duration::from_secs(5));
    let out = run(opts).await;
    let inc = &out.incidents[0];
    assert_eq!(
        (inc.cause.as_deref(), inc.target.as_deref()),
        (Some("host_saturated"), Some("payment-engine-idc1-2"))
    );
    assert_eq!(inc.state, "recovered");
    assert!(
        out.brain
            .topology_updates
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}
