//! The shipped rules (`playbooks/diagnose/`) on fixture incidents: one per
//! hypothesis kind, and what must not be blamed.

use std::collections::BTreeMap;

use selfheal_bus::{ChangeEvent, HotspotReport, KeyCount, SeriesKey, WIRE_VERSION};

use super::*;
use crate::{context::ContextMsg, incident::Evidence};

const T0: i64 = 1_700_000_000_000;

fn topo() -> Topology {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/topology.toml"))
            .unwrap();
    toml::from_str(&text).unwrap()
}

fn rules() -> Rules {
    let mut r = Rules::new(Limits::default());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../playbooks/diagnose");
    assert!(r.load_dir(Path::new(dir)).unwrap() >= 5);
    r
}

/// `(layer, idc, service, instance, metric, value, baseline, onset offset s)`.
type Series<'a> = (
    Layer,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    f64,
    f64,
    i64,
);

fn incident(series: &[Series]) -> Incident {
    let mut evidence = BTreeMap::new();
    for (layer, idc, service, instance, metric, value, baseline, at) in series {
        let key = SeriesKey::new(*layer, *idc, *service, *metric).with_instance(*instance);
        let direction = if metric.contains("success") {
            Direction::Down
        } else {
            Direction::Up
        };
        evidence.insert(
            key,
            Evidence {
                active: true,
                onset: T0 + at * 1000,
                detected: T0 + at * 1000 + 2000,
                value: *value,
                baseline: *baseline,
                score: 1.0,
                direction,
                class: crate::detect::MetricClasses::shipped()
                    .classify(metric)
                    .name,
                harmless: false,
            },
        );
    }
    let onset = evidence.values().map(|e| e.onset).min().unwrap_or(T0);
    Incident::open(
        "inc-1".into(),
        "cashier".into(),
        onset,
        onset + 2000,
        evidence,
        onset + 5000,
    )
}

fn change(ctx: &mut Context, id: &str, service: &str, kind: ChangeKind, at_s: i64) {
    ctx.record(ContextMsg::Change(ChangeEvent {
        v: WIRE_VERSION,
        id: id.into(),
        service: service.into(),
        kind,
        ts: T0 + at_s * 1000,
        author: "dev-alice".into(),
        description: "v2".into(),
    }));
}

/// Ten normal reports (heaviest key 2 %), then `key` takes `share`.
fn hot(ctx: &mut Context, service: &str, dimension: &str, key: &str, share: f64) {
    for n in 0..11 {
        let top = if n < 10 {
            ("k-normal", 20)
        } else {
            (key, (share * 1000.0) as u64)
        };
        ctx.record(ContextMsg::Hot(HotspotReport {
            v: WIRE_VERSION,
            service: service.into(),
            idc: "idc1".into(),
            ts: T0 - 10_000 + n * 1000,
            dimension: dimension.into(),
            total: 1000,
            top: vec![KeyCount {
                key: top.0.into(),
                count: top.1,
            }],
        }));
    }
}

fn top(h: &[Hypothesis]) -> (&str, &str) {
    (h[0].cause.as_str(), h[0].target.as_str())
}

use Layer::{Business, System};

#[test]
fn a_degraded_channel_that_went_bad_first() {
    let inc = incident(&[
        (
            Business,
            "idc1",
            "bank-a",
            None,
            "success_rate",
            0.55,
            0.998,
            0,
        ),
        (
            Business,
            "idc1",
            "bank-a",
            None,
            "latency_p99_ms",
            900.0,
            120.0,
            0,
        ),
        (
            System,
            "idc1",
            "channel-router",
            None,
            "latency_ms",
            300.0,
            50.0,
            2,
        ),
    ]);
    let (h, errs) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &Default::default());
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(top(&h), ("channel_degraded", "bank-a"));
    assert!((h[0].confidence - 0.99).abs() < 1e-9, "{h:?}");
    assert!(h[0].evidence.iter().any(|e| e == "bank-a went bad first"));
    assert_eq!(h.last().unwrap().cause, "unknown");
}

/// At a sale's peak a flash-sale item drives the banks past their
/// capacity: the channel went bad first, but its traffic had risen by
/// half and more with the item's surge: the item comes first, the channel
/// far behind (a failover would only move the load onto the backup).
#[test]
fn a_channel_overloaded_by_demand_is_not_taken_for_a_degraded_one() {
    let series = |tps: f64| {
        incident(&[
            (Business, "idc1", "bank-a", None, "tps", tps, 400.0, 0),
            (
                Business,
                "idc1",
                "bank-a",
                None,
                "success_rate",
                0.86,
                0.998,
                0,
            ),
            (
                Business,
                "idc1",
                "bank-a",
                None,
                "latency_p99_ms",
                700.0,
                120.0,
                1,
            ),
            (
                System,
                "idc1",
                "cashier",
                None,
                "latency_ms",
                400.0,
                80.0,
                2,
            ),
        ])
    };
    let mut ctx = Context::default();
    hot(&mut ctx, "cashier", "item", "item-9001", 0.6);
    let (h, errs) = rules().diagnose(&series(1000.0), &topo(), &ctx, &[], &Default::default());
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(top(&h), ("hot_item", "item-9001"), "{h:?}");
    let channel = h.iter().find(|x| x.cause == "channel_degraded").unwrap();
    assert!(channel.confidence < 0.5, "{h:?}");
    assert!(
        channel
            .evidence
            .iter()
            .any(|e| e.contains("traffic rose 150%")),
        "{channel:?}"
    );
    // Its traffic as usual: degraded, first.
    let (h, _) = rules().diagnose(&series(420.0), &topo(), &ctx, &[], &Default::default());
    assert_eq!(top(&h), ("channel_degraded", "bank-a"), "{h:?}");
    // A peak of ordinary demand (no key jumped): degraded, first.
    let (h, _) = rules().diagnose(
        &series(1000.0),
        &topo(),
        &Context::default(),
        &[],
        &Default::default(),
    );
    assert_eq!(top(&h), ("channel_degraded", "bank-a"), "{h:?}");
}

#[test]
fn a_bad_deploy_is_blamed_and_a_healthy_one_nearby_is_not() {
    let inc = incident(&[
        (
            System,
            "idc1",
            "payment-engine",
            None,
            "error_rate",
            0.25,
            0.001,
            0,
        ),
        (
            Business,
            "idc1",
            "cashier",
            None,
            "success_rate",
            0.78,
            0.997,
            1,
        ),
    ]);
    let mut ctx = Context::default();
    change(
        &mut ctx,
        "chg-bad",
        "payment-engine",
        ChangeKind::Deploy,
        -30,
    );
    // Closer in time, but its service stayed healthy.
    change(&mut ctx, "chg-ok", "acquiring", ChangeKind::Deploy, -5);
    let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &Default::default());
    assert_eq!(top(&h), ("bad_deploy", "payment-engine"));
    assert!(h[0].evidence[0].contains("chg-bad") && h[0].evidence[0].contains("30.0s before"));
    assert!(!h.iter().any(|x| x.target == "acquiring"), "{h:?}");
    // Recency: the same deploy ten minutes earlier is a weaker suspect; older
    // than the look-back, not one at all.
    let mut old = Context::default();
    change(
        &mut old,
        "chg-bad",
        "payment-engine",
        ChangeKind::Deploy,
        -500,
    );
    let (h2, _) = rules().diagnose(&inc, &topo(), &old, &[], &Default::default());
    assert!(h2[0].cause == "bad_deploy" && h2[0].confidence < h[0].confidence);
    let mut older = Context::default();
    change(
        &mut older,
        "chg-bad",
        "payment-engine",
        ChangeKind::Deploy,
        -700,
    );
    let (h3, _) = rules().diagnose(&inc, &topo(), &older, &[], &Default::default());
    assert!(!h3.iter().any(|x| x.cause == "bad_deploy"), "{h3:?}");
}

#[test]
fn a_caller_deployed_before_its_callee_failed_is_not_blamed() {
    // accounting-core slows; payment-engine, which calls it, slows with
    // it, and was deployed a minute before.
    let latency = |service, at| (System, "idc1", service, None, "latency_ms", 300.0, 20.0, at);
    let inc = incident(&[latency("accounting-core", 0), latency("payment-engine", 0)]);
    let mut ctx = Context::default();
    change(
        &mut ctx,
        "chg-ok",
        "payment-engine",
        ChangeKind::Deploy,
        -60,
    );
    let candidate = |service: &str, score, explains: &[&str]| localize::Candidate {
        service: service.into(),
        instance: None,
        score,
        magnitude: 20.0,
        coverage: 0.5,
        first_s: Some(0.0),
        explains: explains.iter().map(|s| s.to_string()).collect(),
        callee_magnitude: 0.0,
        outrun_by: Vec::new(),
        comove: 0.5,
        fault: "network_delay",
        moved: Vec::new(),
    };
    let own_best = || Measured {
        candidates: vec![candidate("payment-engine", 0.8, &[])],
        ..Default::default()
    };
    let blamed = |measured: &Measured| {
        let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], measured);
        h.iter().any(|x| x.cause == "bad_deploy")
    };
    // What it calls went bad first: a victim, whatever the localization.
    let later = incident(&[latency("accounting-core", 0), latency("payment-engine", 3)]);
    for measured in [Measured::default(), own_best()] {
        let (h, _) = rules().diagnose(&later, &topo(), &ctx, &[], &measured);
        assert!(!h.iter().any(|x| x.cause == "bad_deploy"), "{h:?}");
    }
    // The localization puts the callee first, and the caller reaches it:
    // a victim, however close its deploy.
    let callee_first = Measured {
        candidates: vec![
            candidate("accounting-core", 0.8, &["payment-engine"]),
            candidate("payment-engine", 0.75, &[]),
        ],
        ..Default::default()
    };
    assert!(!blamed(&callee_first));
    // Without call edges a caller and its callee look alike: second is
    // not enough.
    let mut flat = topo();
    for s in &mut flat.services {
        s.depends_on.clear();
    }
    let unexplained = Measured {
        candidates: vec![
            candidate("accounting-core", 0.8, &[]),
            candidate("payment-engine", 0.75, &[]),
        ],
        ..Default::default()
    };
    let (h, _) = rules().diagnose(&inc, &flat, &ctx, &[], &unexplained);
    assert!(!h.iter().any(|x| x.cause == "bad_deploy"), "{h:?}");
    // Unless what ranks above it is noise: never flagged, and short of a
    // clear move (in a world of hundreds of series some wander 2.9
    // deviations out). Flagged, or moved clearly, it may be the fault.
    let weak = |first_s, magnitude| {
        let mut above = candidate("accounting-core", 0.8, &[]);
        above.first_s = first_s;
        above.magnitude = magnitude;
        let mut own = candidate("payment-engine", 0.75, &[]);
        own.magnitude = 1.8;
        Measured {
            candidates: vec![above, own],
            ..Default::default()
        }
    };
    let flat_blamed = |measured: &Measured| {
        let (h, _) = rules().diagnose(&inc, &flat, &ctx, &[], measured);
        h.iter().any(|x| x.cause == "bad_deploy")
    };
    assert!(flat_blamed(&weak(None, 2.9)));
    assert!(!flat_blamed(&weak(Some(0.0), 2.9)));
    assert!(!flat_blamed(&weak(None, localize::MOVED)));
    // With the graph, second at nearly the best's score, and nothing it
    // calls above it: the change decides.
    let close = Measured {
        candidates: vec![
            candidate("channel-router", 0.8, &[]),
            candidate("payment-engine", 0.75, &[]),
        ],
        ..Default::default()
    };
    assert!(blamed(&close));
    // Its own best candidate, or nothing scored: blamed, as ever.
    assert!(blamed(&own_best()) && blamed(&Measured::default()));
    // Far below the best: not blamed.
    let far = Measured {
        candidates: vec![
            candidate("channel-router", 0.8, &[]),
            candidate("payment-engine", 0.3, &[]),
        ],
        ..Default::default()
    };
    assert!(!blamed(&far));
    // Its callee's latency went bad with its own and rose more times
    // over: a caller's latency is its own work plus its wait on the
    // callee, so this is the callee's, thinned out up the calls. A victim,
    // even as the localization's best. Its own rise the larger: blamed.
    let slow = |service, ms| (System, "idc1", service, None, "latency_ms", ms, 20.0, 0);
    for (callee_ms, caller_ms, blame) in [(300.0, 200.0, false), (200.0, 300.0, true)] {
        let inc = incident(&[
            slow("accounting-core", callee_ms),
            slow("payment-engine", caller_ms),
        ]);
        let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &own_best());
        assert_eq!(h.iter().any(|x| x.cause == "bad_deploy"), blame, "{h:?}");
    }
    // Without a graph, the localization's reading of the same: a service
    // it is taken to call rose clearly more times over (`outrun_by`),
    // its latency gone bad with the changed service's. Its errors alone
    // do not say so (a caller whose errors were rarer before fails more
    // times over than the callee failing it).
    let mut outrun = candidate("payment-engine", 0.8, &[]);
    outrun.outrun_by = vec!["accounting-core".into()];
    let outrun = Measured {
        candidates: vec![outrun],
        ..Default::default()
    };
    let errors = |service| (System, "idc1", service, None, "error_rate", 0.3, 0.01, 0);
    for (inc, blame) in [
        (&inc, false),
        (
            &incident(&[errors("accounting-core"), errors("payment-engine")]),
            true,
        ),
    ] {
        let (h, _) = rules().diagnose(inc, &flat, &ctx, &[], &outrun);
        assert_eq!(h.iter().any(|x| x.cause == "bad_deploy"), blame, "{h:?}");
    }
}

#[test]
fn a_change_is_timed_by_its_own_services_first_anomaly() {
    // A lone signal elsewhere opened the incident two minutes before
    // payment-engine failed; it was deployed in between.
    deployed_before_its_errors_broke((System, "idc1", "acquiring", None, "tps", 900.0, 500.0, 0));
}

#[test]
fn a_resource_drifting_before_a_deploy_does_not_date_the_fault() {
    // payment-engine's CPU crept up with its traffic from the onset; it was
    // deployed a minute later, and its errors broke a minute after that.
    deployed_before_its_errors_broke((System, "idc1", "payment-engine", None, "cpu", 0.6, 0.5, 0));
}

/// `first` went bad at the onset; payment-engine was deployed 60 s later
/// and its errors broke at 120 s: the deploy is blamed, timed by the
/// errors, and a deploy after them (a rollback, a fix) is no suspect.
fn deployed_before_its_errors_broke(first: Series) {
    let inc = incident(&[
        first,
        (
            System,
            "idc1",
            "payment-engine",
            None,
            "error_rate",
            0.25,
            0.001,
            120,
        ),
    ]);
    for (id, at, blamed) in [("chg-bad", 60, true), ("chg-fix", 130, false)] {
        let mut ctx = Context::default();
        change(&mut ctx, id, "payment-engine", ChangeKind::Deploy, at);
        let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &Default::default());
        if blamed {
            assert_eq!(top(&h), ("bad_deploy", "payment-engine"), "{h:?}");
            assert!(
                h[0].evidence[0].contains("60.0s before its first anomaly"),
                "{h:?}"
            );
        } else {
            assert!(!h.iter().any(|x| x.cause == "bad_deploy"), "{h:?}");
        }
    }
}

#[test]
fn a_config_push_and_other_changes_name_their_kind() {
    let inc = incident(&[(
        System,
        "idc1",
        "accounting-core",
        None,
        "error_rate",
        0.2,
        0.001,
        0,
    )]);
    for (kind, cause) in [
        (ChangeKind::Config, "config_mistake"),
        (ChangeKind::FeatureFlag, "bad_change"),
        (ChangeKind::Scaling, "bad_change"),
    ] {
        let mut ctx = Context::default();
        change(&mut ctx, "chg-1", "accounting-core", kind, -10);
        let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &Default::default());
        assert_eq!(top(&h), (cause, "accounting-core"));
    }
}

#[test]
fn hot_keys_name_their_cause_by_dimension() {
    let inc = incident(&[(
        System,
        "idc1",
        "cashier",
        None,
        "latency_ms",
        400.0,
        80.0,
        0,
    )]);
    for (dim, cause) in [
        ("item", "hot_item"),
        ("client_ip", "abusive_client"),
        ("order", "request_storm"),
        ("account", "hot_account"),
    ] {
        let mut ctx = Context::default();
        hot(&mut ctx, "cashier", dim, "key-1", 0.6);
        let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &Default::default());
        assert_eq!(top(&h), (cause, "key-1"), "{dim}");
        assert_eq!(h[0].at, "cashier");
        assert!((h[0].confidence - 0.77).abs() < 1e-9, "{h:?}");
    }
    // A dimension no rule knows is not blamed.
    let mut ctx = Context::default();
    hot(&mut ctx, "cashier", "merchant", "m-1", 0.6);
    let (h, _) = rules().diagnose(&inc, &topo(), &ctx, &[], &Default::default());
    assert!(!h.iter().any(|x| x.target == "m-1"), "{h:?}");
}

#[test]
fn a_host_pinned_alone_a_slow_database_and_an_idc_outage() {
    let inc = incident(&[(
        System,
        "idc1",
        "payment-engine",
        Some("payment-engine-idc1-2"),
        "cpu",
        0.98,
        0.36,
        0,
    )]);
    let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &Default::default());
    assert_eq!(top(&h), ("host_saturated", "payment-engine-idc1-2"));
    // Every sibling pinned too: load, not the host.
    let all = incident(&[
        (
            System,
            "idc1",
            "payment-engine",
            Some("payment-engine-idc1-1"),
            "cpu",
            0.98,
            0.36,
            0,
        ),
        (
            System,
            "idc1",
            "payment-engine",
            Some("payment-engine-idc1-2"),
            "cpu",
            0.98,
            0.36,
            0,
        ),
    ]);
    let (h, _) = rules().diagnose(&all, &topo(), &Context::default(), &[], &Default::default());
    assert!(!h.iter().any(|x| x.cause == "host_saturated"), "{h:?}");

    let db = incident(&[
        (System, "idc1", "database", None, "latency_ms", 40.0, 4.0, 0),
        (
            System,
            "idc1",
            "accounting-core",
            None,
            "conn_pool_use",
            0.97,
            0.3,
            1,
        ),
    ]);
    let (h, _) = rules().diagnose(&db, &topo(), &Context::default(), &[], &Default::default());
    assert_eq!(top(&h), ("slow_database", "database"));
    assert_eq!(h[0].evidence.len(), 2);

    let mut series = Vec::new();
    for s in ["cashier", "payment-engine", "accounting-core"] {
        series.push((System, "idc1", s, None, "error_rate", 0.9, 0.001, 0));
    }
    let (h, _) = rules().diagnose(
        &incident(&series),
        &topo(),
        &Context::default(),
        &[],
        &Default::default(),
    );
    assert_eq!(top(&h), ("idc_network", "idc1"));
    assert!(h[0].evidence[0].contains("accounting-core, cashier, payment-engine"));
    // The same errors in both IDCs are not one IDC's network.
    series.push((System, "idc2", "cashier", None, "error_rate", 0.9, 0.001, 0));
    let (h, _) = rules().diagnose(
        &incident(&series),
        &topo(),
        &Context::default(),
        &[],
        &Default::default(),
    );
    assert!(!h.iter().any(|x| x.cause == "idc_network"), "{h:?}");
}

#[test]
fn a_dependency_that_went_bad_before_its_callers() {
    let inc = incident(&[
        (
            System,
            "idc1",
            "accounting-core",
            None,
            "latency_ms",
            300.0,
            20.0,
            0,
        ),
        (
            System,
            "idc1",
            "payment-engine",
            None,
            "latency_ms",
            500.0,
            60.0,
            3,
        ),
    ]);
    let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &Default::default());
    let d = h
        .iter()
        .find(|x| x.cause == "dependency_degraded")
        .unwrap_or_else(|| panic!("{h:?}"));
    assert_eq!(d.target, "accounting-core");
    assert!(d.evidence[0].contains("payment-engine"), "{d:?}");
    // Named by its own fingerprint, when the localization read one.
    let candidate = |service: &str, fault| localize::Candidate {
        service: service.into(),
        instance: None,
        score: 0.5,
        magnitude: 20.0,
        coverage: 0.5,
        first_s: Some(0.0),
        explains: Vec::new(),
        callee_magnitude: 0.0,
        outrun_by: Vec::new(),
        comove: 0.5,
        fault,
        moved: Vec::new(),
    };
    for (fault, named) in [
        ("memory_leak", "memory_leak"),
        ("service_degraded", "dependency_degraded"),
    ] {
        let measured = Measured {
            candidates: vec![candidate("accounting-core", fault)],
            ..Default::default()
        };
        let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &measured);
        let first = h
            .iter()
            .find(|x| x.target == "accounting-core")
            .unwrap_or_else(|| panic!("{h:?}"));
        assert_eq!(first.cause, named, "{h:?}");
        assert!(
            first.evidence.iter().any(|e| e.contains("went bad first")),
            "{h:?}"
        );
    }
    // A blip the localization does not see move (its median up a tenth
    // for a few seconds, short of the bar against its own history) is not
    // where the fault started, however early it came.
    let mut blip = candidate("accounting-core", "service_degraded");
    blip.magnitude = 1.2;
    let mut caller = candidate("payment-engine", "network_delay");
    caller.magnitude = 12.0;
    let measured = Measured {
        candidates: vec![caller, blip],
        ..Default::default()
    };
    let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &measured);
    assert!(!h.iter().any(|x| x.cause == "dependency_degraded"), "{h:?}");
}

#[test]
fn which_went_first_is_read_no_finer_than_a_scrape() {
    // The database's own service slowed first, but its caller's scrape
    // caught it 3 s before its own did; the caller's caller 8 s after.
    let latency = |service, at| (System, "idc1", service, None, "latency_ms", 300.0, 20.0, at);
    let inc = incident(&[
        latency("payment-engine", 0),
        latency("accounting-core", 3),
        latency("acquiring", 8),
    ]);
    let named = |measured: &Measured| {
        let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], measured);
        h.into_iter()
            .filter(|x| x.cause == "dependency_degraded")
            .map(|x| x.target)
            .collect::<Vec<_>>()
    };
    // Sampled as it came, every second: the order stands.
    let fresh = Measured {
        step_ms: 1000,
        ..Default::default()
    };
    assert_eq!(named(&fresh), ["payment-engine"]);
    // Scraped every 5 s: what it calls went bad with it.
    let scraped = Measured {
        step_ms: 1000,
        scrape_ms: 5000,
        ..Default::default()
    };
    assert!(named(&scraped).is_empty());
}

#[test]
fn a_failing_rule_is_skipped_and_named_and_adjust_moves_confidence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a_add.rhai"),
        r#"fn rule(i) { hypothesis::add("hot_item", "k", "cashier", 0.6, ["share jumped"]); }"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b_adjust.rhai"),
        r#"fn rule(i) { hypothesis::adjust("hot_item", "k", 0.2, "seen in both IDCs"); hypothesis::adjust("hot_item", "k", 5.0, "capped"); }"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("c_loop.rhai"), "fn rule(i) { loop {} }").unwrap();
    std::fs::write(
        dir.path().join("d_bad.rhai"),
        r#"fn rule(i) { hypothesis::add("x", "y", "z", 0.9, []); throw "broken rule"; }"#,
    )
    .unwrap();
    let mut r = Rules::new(Limits::default());
    assert_eq!(r.load_dir(dir.path()).unwrap(), 4);
    let inc = incident(&[(System, "idc1", "cashier", None, "latency_ms", 1.0, 0.0, 0)]);
    let (h, errs) = r.diagnose(&inc, &topo(), &Context::default(), &[], &Default::default());
    assert_eq!(top(&h), ("hot_item", "k"));
    assert!((h[0].confidence - 0.99).abs() < 1e-9, "clamped: {h:?}");
    assert_eq!(
        h[0].evidence,
        ["share jumped", "seen in both IDCs", "capped"]
    );
    let names: Vec<&str> = errs.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(names, ["c_loop", "d_bad"]);
    assert!(errs[1].message.contains("broken rule"));
    assert!(
        !h.iter().any(|x| x.cause == "x"),
        "a failed rule adds nothing"
    );

    // Load errors name the file; nothing is swapped in.
    std::fs::write(dir.path().join("e_norule.rhai"), "fn other() {}").unwrap();
    std::fs::write(dir.path().join("f_syntax.rhai"), "fn rule(i) { let = ; }").unwrap();
    let errs = r.load_dir(dir.path()).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].to_string().contains("e_norule.rhai")
            && errs[0].message.contains("fn rule(incident)")
    );
    assert_eq!(r.names().len(), 4);
}

#[test]
fn one_slow_instance_is_named_even_when_a_sibling_is_a_little_slower() {
    let slow = |sibling: Option<bool>| {
        let mut series = vec![(
            System,
            "idc1",
            "payment-engine",
            Some("payment-engine-idc1-3"),
            "latency_ms",
            400.0,
            4.0,
            0,
        )];
        if sibling.is_some() {
            series.push((
                System,
                "idc1",
                "payment-engine",
                Some("payment-engine-idc1-2"),
                "latency_ms",
                9.0,
                5.0,
                0,
            ));
        }
        let mut inc = incident(&series);
        if let Some(harmless) = sibling {
            for (k, e) in inc.evidence.iter_mut() {
                if k.instance.as_deref() == Some("payment-engine-idc1-2") {
                    e.harmless = harmless;
                }
            }
        }
        let (h, _) = rules().diagnose(&inc, &topo(), &Context::default(), &[], &Default::default());
        h.iter()
            .any(|x| x.cause == "instance_slow" && x.target == "payment-engine-idc1-3")
    };
    assert!(slow(None), "alone among its siblings");
    // A sibling 9 ms slow under a 250 ms objective (the load shifted onto
    // it) harms nobody: the slowness is still that instance's.
    assert!(slow(Some(true)));
    // A sibling slow in earnest: the slowness is shared, not the instance's.
    assert!(!slow(Some(false)));
}
