use std::time::{Duration, Instant};

use super::*;

fn topo() -> Arc<Topology> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/topology.toml"))
            .unwrap();
    Arc::new(toml::from_str(&text).unwrap())
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn facts() -> IncidentFacts {
    IncidentFacts {
        id: "inc-1".into(),
        cause: "channel_degraded".into(),
        target: "bank-a".into(),
        ..Default::default()
    }
}

const META: &str =
    r#"fn meta() { #{ handles: ["channel_degraded"], risk: "medium", approval: "auto" } }"#;

#[test]
fn shipped_failover_plans_stepped_verified_shift() {
    let mut rt = Runtime::new(topo(), Limits::default());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../playbooks");
    assert!(rt.load_dir(Path::new(dir)).unwrap() >= 1);
    let pb = rt.for_cause("channel_degraded").unwrap();
    assert_eq!(pb.meta.approval, Approval::Auto);
    let steps = rt.plan(pb, &facts()).unwrap();
    let shifts: Vec<f64> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Act(a) => {
                assert_eq!(a.service, "channel-router");
                assert_eq!(a.params["to"], "bank-b");
                a.params["fraction"].as_f64()
            }
            _ => None,
        })
        .collect();
    assert!(
        shifts.len() >= 2 && shifts.windows(2).all(|w| w[0] < w[1]) && shifts.last() == Some(&1.0),
        "{shifts:?}"
    );
    assert!(matches!(
        steps.last(),
        Some(Step::Verify {
            check: Check::Cleared,
            ..
        })
    ));
    // A service without a declared backup: escalate instead of guessing.
    let steps = rt
        .plan(
            pb,
            &IncidentFacts {
                target: "cashier".into(),
                ..facts()
            },
        )
        .unwrap();
    assert!(matches!(steps.as_slice(), [Step::Escalate(_)]), "{steps:?}");
}

#[test]
fn runaway_scripts_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(
        topo(),
        Limits {
            max_operations: 10_000,
            budget: Duration::from_millis(200),
        },
    );
    let p = write(
        dir.path(),
        "loop.rhai",
        &format!("{META}\nfn plan(i) {{ loop {{ }} }}"),
    );
    let pb = rt.compile(&p).unwrap();
    let e = rt.plan(&pb, &facts()).unwrap_err().to_string();
    assert!(
        e.contains("loop.rhai") && e.to_lowercase().contains("too many operations"),
        "{e}"
    );

    let rt = Runtime::new(
        topo(),
        Limits {
            max_operations: 0,
            budget: Duration::from_millis(50),
        },
    );
    let pb = rt.compile(&p).unwrap();
    let t = Instant::now();
    let e = rt.plan(&pb, &facts()).unwrap_err().to_string();
    assert!(e.contains("budget"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));

    let p = write(
        dir.path(),
        "deep.rhai",
        &format!("{META}\nfn f(n) {{ f(n + 1) }}\nfn plan(i) {{ f(0) }}"),
    );
    assert!(rt.plan(&rt.compile(&p).unwrap(), &facts()).is_err());
}

#[test]
fn bad_scripts_are_refused_with_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(topo(), Limits::default());
    let e = rt
        .compile(&write(dir.path(), "syntax.rhai", "fn meta( {"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("syntax.rhai") && e.contains("line 1"), "{e}");
    let e = rt
        .compile(&write(dir.path(), "nometa.rhai", "fn plan(i) {}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("fn meta()"), "{e}");
    let bad_meta =
        r#"fn meta() { #{ handles: ["x"], risk: "extreme", approval: "auto" } } fn plan(i) {}"#;
    let e = rt
        .compile(&write(dir.path(), "badmeta.rhai", bad_meta))
        .unwrap_err()
        .to_string();
    assert!(e.contains("risk"), "{e}");
    let p = write(
        dir.path(),
        "badarg.rhai",
        &format!("{META}\nfn plan(i) {{ traffic::shift(\"bank-a\", \"bank-b\", 7.0); }}"),
    );
    let e = rt
        .plan(&rt.compile(&p).unwrap(), &facts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not in (0,1]"), "{e}");
    // No file access from scripts, and a call to a function that exists
    // nowhere is refused at load, like a compile error, with its line.
    for (name, call) in [
        ("io.rhai", "let f = open_file(\"/etc/passwd\");"),
        ("sys.rhai", "system(\"rm -rf /\");"),
        ("nuke.rhai", "service::nuke(\"ledger\");"),
    ] {
        let p = write(
            dir.path(),
            name,
            &format!("{META}\nfn plan(i) {{\n  {call}\n}}"),
        );
        let e = rt.compile(&p).unwrap_err().to_string();
        assert!(
            e.contains("unknown function") && e.contains("line 3"),
            "{name}: {e}"
        );
    }
    // Functions the script defines, closures and Rhai's own are known.
    let p = write(
        dir.path(),
        "own.rhai",
        &format!(
            "{META}\nfn half(x) {{ x / 2.0 }}\nfn plan(i) {{ let f = |x| x + 1; let n = f(1); let h = half(1.0); print(type_of(h)); [1, 2].len(); }}"
        ),
    );
    rt.compile(&p).unwrap();
}

#[test]
fn each_shipped_playbook_plans_its_cure() {
    let mut rt = Runtime::new(topo(), Limits::default());
    rt.load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../playbooks"
    )))
    .unwrap();
    let cases = [
        (
            "bad_deploy",
            "payment-engine",
            "payment-engine",
            ActionKind::Rollback,
            "payment-engine",
        ),
        (
            "config_mistake",
            "accounting-core",
            "accounting-core",
            ActionKind::RevertConfig,
            "accounting-core",
        ),
        (
            "hot_item",
            "item-9001",
            "cashier",
            ActionKind::Throttle,
            "cashier",
        ),
        (
            "request_storm",
            "order-77",
            "payment-engine",
            ActionKind::Throttle,
            "payment-engine",
        ),
        (
            "abusive_client",
            "203.0.113.9",
            "cashier",
            ActionKind::BlockClient,
            "cashier",
        ),
        (
            "hot_account",
            "acct-7777",
            "accounting-core",
            ActionKind::IsolateKey,
            "accounting-core",
        ),
        (
            "host_saturated",
            "payment-engine-idc1-2",
            "payment-engine",
            ActionKind::Restart,
            "payment-engine",
        ),
        (
            "idc_network",
            "idc1",
            "idc1",
            ActionKind::ShiftTraffic,
            "cashier",
        ),
    ];
    for (cause, target, at, kind, executor) in cases {
        let pb = rt
            .for_cause(cause)
            .unwrap_or_else(|| panic!("a playbook handles {cause}"));
        let facts = IncidentFacts {
            cause: cause.into(),
            target: target.into(),
            at: at.into(),
            ..facts()
        };
        let steps = rt.plan(pb, &facts).unwrap();
        let acts: Vec<&PlannedAction> = steps
            .iter()
            .filter_map(|s| if let Step::Act(a) = s { Some(a) } else { None })
            .collect();
        // Stepped playbooks act on the one target more than once.
        assert!(!acts.is_empty(), "{cause}: {steps:?}");
        assert!(
            acts.iter().all(|a| a.target == acts[0].target),
            "{cause}: {steps:?}"
        );
        assert_eq!(
            (
                acts[0].kind,
                acts[0].target.as_str(),
                acts[0].service.as_str()
            ),
            (kind, target, executor),
            "{cause}"
        );
        assert!(
            matches!(
                steps.last(),
                Some(Step::Verify {
                    check: Check::Cleared,
                    ..
                })
            ),
            "{cause}: verified"
        );
    }
    let storm = IncidentFacts {
        cause: "request_storm".into(),
        target: "order-77".into(),
        at: "payment-engine".into(),
        ..facts()
    };
    let steps = rt
        .plan(rt.for_cause("request_storm").unwrap(), &storm)
        .unwrap();
    // One request at a time in the end, after a looser first step.
    assert!(matches!(&steps[0], Step::Act(a) if a.params["rate"] == 4.0));
    assert!(matches!(&steps[2], Step::Act(a) if a.params["rate"] == 1.0));
    // Bad arguments are refused with a reason.
    let bad = IncidentFacts {
        cause: "bad_deploy".into(),
        target: "no-such-service".into(),
        ..facts()
    };
    let e = rt
        .plan(rt.for_cause("bad_deploy").unwrap(), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown service"), "{e}");
}

#[test]
fn degrading_sheds_only_non_critical_scenes_and_waits_for_a_person() {
    let mut rt = Runtime::new(topo(), Limits::default());
    rt.load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../playbooks"
    )))
    .unwrap();
    let pb = rt.for_cause("slow_database").unwrap();
    assert_eq!(pb.meta.approval, Approval::Approval);
    let facts = IncidentFacts {
        cause: "slow_database".into(),
        target: "database".into(),
        at: "database".into(),
        ..facts()
    };
    let steps = rt.plan(pb, &facts).unwrap();
    let degraded: Vec<&str> = steps
        .iter()
        .filter_map(|s| {
            if let Step::Act(a) = s {
                Some(a.target.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(degraded, ["billpay"], "only the non-critical scene");
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.rhai",
        &format!("{META}\nfn plan(i) {{ scene::degrade(\"checkout\"); }}"),
    );
    let e = rt
        .plan(&rt.compile(&p).unwrap(), &facts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("critical"), "{e}");
}

#[test]
fn the_host_api_is_documented_from_its_registrations() {
    let rt = Runtime::new(topo(), Limits::default());
    let api = rt.host_api();
    assert_eq!(api.len(), HOST_DOCS.len(), "{api:#?}");
    for (m, n, params, doc) in HOST_DOCS {
        // (Overloads differ in their number of parameters.)
        let f = api
            .iter()
            .find(|f| f.module == *m && f.name == *n && f.params.len() == params.len() - 1)
            .unwrap_or_else(|| panic!("{m}::{n} is documented but not registered"));
        assert_eq!(f.doc, *doc);
    }
    let shift = api.iter().find(|f| f.name == "shift").unwrap();
    assert_eq!(shift.params[2], "fraction: f64");
}

#[test]
fn hot_reload_swaps_good_changes_in_and_keeps_the_old_set_on_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let body = |fraction: &str| {
        format!(
            "{META}\nfn plan(i) {{ traffic::shift(i.target, \"bank-b\", {fraction}); verify::cleared(30); }}"
        )
    };
    let p = write(dir.path(), "failover.rhai", &body("0.5"));
    let mut rt = Runtime::new(topo(), Limits::default());
    assert_eq!(rt.load_dir(dir.path()).unwrap(), 1);
    assert_eq!(
        rt.reload_if_changed(dir.path()).unwrap(),
        None,
        "nothing changed"
    );
    let fraction = |rt: &Runtime| match &rt.plan(&rt.playbooks()[0], &facts()).unwrap()[0] {
        Step::Act(a) => a.params["fraction"].as_f64().unwrap(),
        s => panic!("{s:?}"),
    };
    assert_eq!(fraction(&rt), 0.5);

    std::fs::write(&p, body("0.125")).unwrap();
    assert_eq!(rt.reload_if_changed(dir.path()).unwrap(), Some(1));
    assert_eq!(fraction(&rt), 0.125, "the change is live");

    std::fs::write(&p, "fn meta() { oops").unwrap();
    let errs = rt.reload_if_changed(dir.path()).unwrap_err();
    assert!(errs[0].to_string().contains("failover.rhai"), "{errs:?}");
    assert_eq!(fraction(&rt), 0.125, "the running playbook stays");
    assert_eq!(
        rt.reload_if_changed(dir.path()).unwrap(),
        None,
        "not retried until changed"
    );

    std::fs::write(&p, body("1.0")).unwrap();
    assert_eq!(rt.reload_if_changed(dir.path()).unwrap(), Some(1));
    assert_eq!(fraction(&rt), 1.0);
}

#[test]
fn huge_strings_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(topo(), Limits::default());
    let p = write(
        dir.path(),
        "grow.rhai",
        &format!("{META}\nfn plan(i) {{ let s = \"xxxxxxxx\"; loop {{ s += s; }} }}"),
    );
    let e = rt
        .plan(&rt.compile(&p).unwrap(), &facts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("grow.rhai") && e.to_lowercase().contains("too large"),
        "{e}"
    );
}

#[test]
fn a_plan_may_not_act_on_more_targets_than_its_declared_blast_radius() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(topo(), Limits::default());
    let body = |max: &str| {
        format!(
            r#"fn meta() {{ #{{ handles: ["channel_degraded"], risk: "medium", approval: "auto"{max} }} }}
fn plan(i) {{ traffic::shift("bank-a", "bank-b", 0.5); traffic::shift("bank-c", "bank-b", 0.5); }}"#
        )
    };
    let p = write(dir.path(), "two.rhai", &body(""));
    let e = rt
        .plan(&rt.compile(&p).unwrap(), &facts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("acts on 2 targets (bank-a, bank-c)") && e.contains("max_targets = 1"),
        "{e}"
    );
    let p = write(dir.path(), "two.rhai", &body(", max_targets: 2"));
    assert_eq!(
        rt.plan(&rt.compile(&p).unwrap(), &facts()).unwrap().len(),
        2
    );
    let p = write(dir.path(), "two.rhai", &body(", max_targets: 0"));
    let e = rt.compile(&p).unwrap_err().to_string();
    assert!(e.contains("`max_targets` must be an integer >= 1"), "{e}");
}

#[test]
fn meta_declares_the_verify_window_and_what_happens_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::new(topo(), Limits::default());
    let body = |extra: &str| {
        format!(
            r#"fn meta() {{ #{{ handles: ["hot_item"], risk: "low", approval: "auto"{extra} }} }}
fn plan(i) {{ traffic::throttle_key("cashier", "item-1", 50.0); verify::cleared(); }}"#
        )
    };
    // Defaults: 60 s, escalate.
    let pb = rt.compile(&write(dir.path(), "a.rhai", &body(""))).unwrap();
    assert_eq!(
        (pb.meta.verify_s, pb.meta.on_failure),
        (60, OnFailure::Escalate)
    );
    let pb = rt
        .compile(&write(
            dir.path(),
            "b.rhai",
            &body(r#", verify_s: 20, on_failure: "revert""#),
        ))
        .unwrap();
    assert_eq!(
        (pb.meta.verify_s, pb.meta.on_failure),
        (20, OnFailure::Revert)
    );
    // `verify::cleared()` waits the declared window.
    let steps = rt.plan(&pb, &facts()).unwrap();
    assert_eq!(
        steps[1],
        Step::Verify {
            check: Check::Cleared,
            window_ms: 20_000
        }
    );
    for (extra, why) in [
        (r#", verify_s: 0"#, "verify_s"),
        (r#", verify_s: "soon""#, "verify_s"),
        (r#", on_failure: "retry""#, "on_failure"),
    ] {
        let e = rt
            .compile(&write(dir.path(), "c.rhai", &body(extra)))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{extra}: {e}");
    }
}

#[test]
fn undo_sets_a_shift_back_to_zero_restores_limits_and_leaves_the_rest() {
    let act = |kind: ActionKind, params: &[(&str, serde_json::Value)]| PlannedAction {
        kind,
        service: "svc".into(),
        target: "t".into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let shift = act(
        ActionKind::ShiftTraffic,
        &[("to", "b".into()), ("fraction", 0.5.into())],
    );
    let u = undo(&shift).unwrap();
    assert_eq!(
        (u.kind, &u.params["to"]),
        (ActionKind::ShiftTraffic, &"b".into())
    );
    assert_eq!(u.params["fraction"], 0.0);
    for k in [
        ActionKind::Throttle,
        ActionKind::Degrade,
        ActionKind::IsolateKey,
        ActionKind::BlockClient,
    ] {
        let u = undo(&act(k, &[("rate", 5.0.into())])).unwrap();
        assert_eq!((u.kind, u.target.as_str()), (ActionKind::Restore, "t"));
        assert!(u.params.is_empty());
    }
    for k in [
        ActionKind::Rollback,
        ActionKind::RevertConfig,
        ActionKind::Restart,
        ActionKind::Restore,
    ] {
        assert!(undo(&act(k, &[])).is_none(), "{k:?} cannot be undone");
    }
}
