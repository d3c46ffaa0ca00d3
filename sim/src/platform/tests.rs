//! The physics of each fault: its symptoms appear, its cure removes them,
//! a wrong cure does not; and runs are deterministic per seed.

use super::*;
use crate::{Scenario, default_topology};

fn scenario(kind: FaultKind, target: &str, key: Option<&str>) -> Scenario {
    Scenario {
        name: format!("{kind:?}"),
        description: String::new(),
        seed: 5,
        duration_s: 600,
        tick_ms: 1000,
        traffic: Traffic::default(),
        faults: vec![FaultSpec {
            kind,
            target: target.into(),
            start_s: 60,
            duration_s: None,
            key: key.map(str::to_string),
            magnitude: None,
            success: None,
            latency_ms: None,
            postings_lost: None,
        }],
        events: vec![],
        expect: vec![],
        ledger: false,
    }
}

fn cmd(kind: ActionKind, target: &str, params: &[(&str, serde_json::Value)]) -> Command {
    Command {
        key: format!("k-{}-{target}", kind.as_str()),
        kind,
        target: target.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

fn run(p: &mut Platform, ticks: u64) -> Frame {
    let mut last = None;
    for _ in 0..ticks {
        last = Some(p.step().0);
    }
    last.unwrap()
}

/// Runs the fault for 60 s, applies `cure`, runs 60 s more; returns
/// (breached before the cure, within SLO at the end, the truth).
fn trial(s: &Scenario, cure: &[Command]) -> (bool, bool, Truth) {
    let mut p = Platform::new(default_topology(), s, 1_700_000_000_000);
    run(&mut p, 55);
    assert!(p.truth().within_slo, "{}: healthy before the fault", s.name);
    run(&mut p, 65);
    let breached = !p.truth().within_slo;
    for c in cure {
        p.apply(c).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    }
    run(&mut p, 60);
    (breached, p.truth().within_slo, p.truth().clone())
}

#[test]
fn each_fault_hurts_its_cure_heals_and_a_wrong_cure_does_not() {
    use serde_json::json;
    let cases: Vec<(Scenario, Vec<Command>, Vec<Command>)> = vec![
        (
            scenario(FaultKind::BadDeploy, "payment-engine", None),
            vec![cmd(ActionKind::Rollback, "payment-engine", &[])],
            vec![cmd(ActionKind::Rollback, "cashier", &[])],
        ),
        (
            scenario(FaultKind::ConfigMistake, "accounting-core", None),
            vec![cmd(ActionKind::RevertConfig, "accounting-core", &[])],
            vec![cmd(ActionKind::RevertConfig, "acquiring", &[])],
        ),
        (
            scenario(FaultKind::HotItemSurge, "checkout", Some("item-9001")),
            vec![cmd(
                ActionKind::Throttle,
                "item-9001",
                &[("rate", json!(50.0))],
            )],
            vec![cmd(ActionKind::Restart, "cashier-idc1-1", &[])],
        ),
        (
            scenario(
                FaultKind::HotAccountContention,
                "accounting-core",
                Some("acct-7777"),
            ),
            vec![cmd(ActionKind::IsolateKey, "acct-7777", &[])],
            vec![cmd(ActionKind::IsolateKey, "acct-0001", &[])],
        ),
        (
            scenario(FaultKind::ChannelDegradation, "bank-a", None),
            vec![cmd(
                ActionKind::ShiftTraffic,
                "bank-a",
                &[("to", json!("bank-b")), ("fraction", json!(1.0))],
            )],
            vec![cmd(
                ActionKind::ShiftTraffic,
                "bank-b",
                &[("to", json!("bank-a")), ("fraction", json!(1.0))],
            )],
        ),
        (
            scenario(FaultKind::SlowDatabase, "database", None),
            vec![cmd(ActionKind::Degrade, "billpay", &[])],
            vec![cmd(ActionKind::Rollback, "accounting-core", &[])],
        ),
        (
            scenario(
                FaultKind::SaturatedHost,
                "payment-engine",
                Some("payment-engine-idc1-2"),
            ),
            vec![cmd(ActionKind::Restart, "payment-engine-idc1-2", &[])],
            vec![cmd(ActionKind::Restart, "payment-engine-idc2-1", &[])],
        ),
        (
            scenario(FaultKind::IdcNetworkFailure, "idc1", None),
            vec![cmd(
                ActionKind::ShiftTraffic,
                "idc1",
                &[("to", json!("idc2")), ("fraction", json!(1.0))],
            )],
            vec![cmd(
                ActionKind::ShiftTraffic,
                "bank-a",
                &[("to", json!("bank-b")), ("fraction", json!(1.0))],
            )],
        ),
        (
            scenario(FaultKind::AbusiveClient, "checkout", Some("203.0.113.9")),
            vec![cmd(ActionKind::BlockClient, "203.0.113.9", &[])],
            vec![cmd(ActionKind::BlockClient, "10.0.0.1", &[])],
        ),
        (
            scenario(FaultKind::RequestStorm, "checkout", Some("order-77")),
            vec![cmd(
                ActionKind::Throttle,
                "order-77",
                &[("rate", json!(1.0))],
            )],
            vec![cmd(ActionKind::Rollback, "payment-engine", &[])],
        ),
    ];
    assert_eq!(cases.len(), FaultKind::ALL.len());
    for (s, right, wrong) in &cases {
        let (breached, healed, truth) = trial(s, right);
        assert!(breached, "{}: the fault breaks the SLO", s.name);
        assert!(
            healed,
            "{}: the right cure heals: {:?}",
            s.name, truth.scene_success
        );
        // A slow database is mitigated (less load on it), not cured.
        let mitigation = s.faults[0].kind == FaultKind::SlowDatabase;
        assert_eq!(
            truth.faults[0].cured, !mitigation,
            "{}: the truth records the cure",
            s.name
        );
        assert!(truth.recovered_ms.is_some());
        let (_, healed, truth) = trial(s, wrong);
        assert!(
            !healed,
            "{}: a wrong cure does not heal: {:?}",
            s.name, truth.scene_success
        );
        assert!(!truth.faults[0].cured);
    }
}

#[test]
fn wrong_actions_cost_payments() {
    let mut healthy = Scenario::control();
    healthy.duration_s = 600;
    let mut p = Platform::new(default_topology(), &healthy, 0);
    run(&mut p, 60);
    p.apply(&cmd(
        ActionKind::Throttle,
        "checkout",
        &[("rate", serde_json::json!(100.0))],
    ))
    .unwrap();
    p.apply(&cmd(ActionKind::Degrade, "billpay", &[])).unwrap();
    run(&mut p, 30);
    let t = p.truth();
    assert!(
        t.dropped > 10_000.0,
        "throttling drops payments: {}",
        t.dropped
    );
    assert!(
        t.degraded_lost > 5_000.0,
        "degrading loses the scene's payments: {}",
        t.degraded_lost
    );
    let harm = harmful_actions(&default_topology(), &healthy, 0, t);
    assert_eq!(harm, vec![true, true], "both actions increased loss");

    // Failing over to an unhealthy backup makes it worse.
    let mut s = scenario(FaultKind::ChannelDegradation, "bank-a", None);
    s.faults.push(FaultSpec {
        target: "bank-b".into(),
        success: Some(0.3),
        ..s.faults[0].clone()
    });
    let mut p = Platform::new(default_topology(), &s, 0);
    run(&mut p, 90);
    let before = p.truth().scene_success["checkout"];
    p.apply(&cmd(
        ActionKind::ShiftTraffic,
        "bank-a",
        &[
            ("to", serde_json::json!("bank-b")),
            ("fraction", serde_json::json!(1.0)),
        ],
    ))
    .unwrap();
    run(&mut p, 20);
    assert!(
        p.truth().scene_success["checkout"] < before - 0.05,
        "{before} → {}",
        p.truth().scene_success["checkout"]
    );
}

#[test]
fn deterministic_per_seed_and_exports_every_layer() {
    let s = Scenario::channel_degradation();
    let frames = |s: &Scenario| {
        let mut p = Platform::new(default_topology(), s, 0);
        (0..120).map(|_| p.step().0).collect::<Vec<_>>()
    };
    let a = frames(&s);
    assert_eq!(a, frames(&s));
    let mut other = s.clone();
    other.seed += 1;
    assert_ne!(frames(&other)[..5], a[..5]);
    let f = &a[10];
    for layer in [Layer::Business, Layer::System, Layer::Infra] {
        assert!(f.samples.iter().any(|x| x.layer == layer), "{layer:?}");
    }
    for m in [
        "thread_pool_use",
        "gc_pause_ms",
        "conn_pool_use",
        "disk_io_mbps",
        "net_mbps",
        "mem_used",
    ] {
        assert!(f.samples.iter().any(|x| x.metric == m), "{m}");
    }
    assert!(f.samples.iter().all(|x| x.value.is_finite()));
    let dims: BTreeSet<&str> = f.hot.iter().map(|h| h.dimension.as_str()).collect();
    assert_eq!(
        dims,
        ["account", "client_ip", "item", "merchant", "order"].into()
    );
}

#[test]
fn changes_and_hot_keys_show_the_cause() {
    let s = scenario(FaultKind::BadDeploy, "payment-engine", None);
    let mut p = Platform::new(default_topology(), &s, 0);
    let changes: Vec<Change> = (0..70).flat_map(|_| p.step().0.changes).collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].service.as_str(), changes[0].kind),
        ("payment-engine", ChangeKind::Deploy)
    );

    let s = scenario(FaultKind::HotItemSurge, "checkout", Some("item-9001"));
    let mut p = Platform::new(default_topology(), &s, 0);
    let f = run(&mut p, 70);
    let items = f.hot.iter().find(|h| h.dimension == "item").unwrap();
    assert_eq!(items.top[0].0, "item-9001");
    assert!(items.top[0].1 as f64 > 0.5 * items.total as f64);
}

#[test]
fn replays_reproduce_a_run_and_judge_each_action() {
    let s = scenario(FaultKind::ChannelDegradation, "bank-a", None);
    let topo = default_topology();
    let mut p = Platform::new(topo.clone(), &s, 0);
    run(&mut p, 70);
    // A useless action first, then the cure.
    p.apply(&cmd(ActionKind::Restart, "cashier-idc1-1", &[]))
        .unwrap();
    run(&mut p, 5);
    p.apply(&cmd(
        ActionKind::ShiftTraffic,
        "bank-a",
        &[
            ("to", serde_json::json!("bank-b")),
            ("fraction", serde_json::json!(1.0)),
        ],
    ))
    .unwrap();
    run(&mut p, 60);
    let t = p.truth().clone();
    let all: Vec<&AppliedAction> = t.actions.iter().collect();
    let again = replay(&topo, &s, 0, t.loss_by_tick.len() as u64, &all);
    assert_eq!(
        again.loss_by_tick, t.loss_by_tick,
        "a replay with every action is the run itself"
    );
    assert_eq!(
        harmful_actions(&topo, &s, 0, &t),
        vec![true, false],
        "the restart hurt, the failover did not"
    );
}

#[test]
fn a_slow_downstream_slows_and_fills_everything_upstream() {
    let s = scenario(FaultKind::SlowDatabase, "database", None);
    let mut p = Platform::new(default_topology(), &s, 0);
    let metric = |f: &Frame, svc: &str, m: &str| {
        f.samples
            .iter()
            .find(|x| x.service == svc && x.metric == m && x.instance.is_none() && x.idc == "idc1")
            .map(|x| x.value)
            .unwrap()
    };
    let before = run(&mut p, 55);
    let after = run(&mut p, 20);
    for svc in ["accounting-core", "payment-engine", "cashier"] {
        let (l0, l1) = (
            metric(&before, svc, "latency_p99_ms"),
            metric(&after, svc, "latency_p99_ms"),
        );
        assert!(l1 > l0 * 1.5, "{svc} latency {l0} → {l1}");
        let (t0, t1) = (
            metric(&before, svc, "thread_pool_use"),
            metric(&after, svc, "thread_pool_use"),
        );
        assert!(t1 > t0 * 1.3, "{svc} thread pool {t0} → {t1}");
    }
    assert!(metric(&after, "accounting-core", "conn_pool_use") > 0.95);
}

#[test]
fn traffic_moved_off_a_saturated_instance_spares_its_users_until_restored() {
    let s = scenario(
        FaultKind::SaturatedHost,
        "payment-engine",
        Some("payment-engine-idc1-2"),
    );
    let mut p = Platform::new(default_topology(), &s, 0);
    let p99 = |f: &Frame| {
        f.samples
            .iter()
            .find(|x| {
                x.service == "payment-engine"
                    && x.metric == "latency_p99_ms"
                    && x.instance.is_none()
                    && x.idc == "idc1"
            })
            .map(|x| x.value)
            .unwrap()
    };
    let healthy = p99(&run(&mut p, 55));
    let hot = p99(&run(&mut p, 20));
    assert!(hot > 1.5 * healthy, "saturated: {healthy} → {hot}");
    // Without `to`, only a known instance may be drained.
    let drain = |target: &str, f: f64| {
        cmd(
            ActionKind::ShiftTraffic,
            target,
            &[("fraction", serde_json::json!(f))],
        )
    };
    assert!(p.apply(&drain("payment-engine", 1.0)).is_err(), "a service");
    assert!(p.apply(&drain("payment-engine-idc9-9", 1.0)).is_err());
    let half = p.apply(&drain("payment-engine-idc1-2", 0.5)).unwrap();
    assert!(half.contains("50.0%"), "{half}");
    let halfway = p99(&run(&mut p, 10));
    let mut all = drain("payment-engine-idc1-2", 1.0);
    all.key.push_str("-all");
    p.apply(&all).unwrap();
    let drained = p99(&run(&mut p, 10));
    assert!(
        drained < halfway && halfway < hot,
        "{hot} → {halfway} → {drained}"
    );
    assert!(drained < 1.2 * healthy, "{healthy} vs {drained}");
    assert!(
        p.truth().faults.iter().all(|f| !f.cured),
        "the host is still saturated: moved away from, not cured"
    );
    p.apply(&cmd(ActionKind::Restore, "payment-engine-idc1-2", &[]))
        .unwrap();
    let back = p99(&run(&mut p, 10));
    assert!(back > 1.5 * healthy, "restored onto the hot host: {back}");
}
