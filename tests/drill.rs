//! End-to-end drills: real sim, agent and brain in lockstep on the virtual
//! clock, scored against ground truth; deterministic per seed.

use std::{sync::Arc, time::Duration};

use selfheal::drill::{Thresholds, drill, score};
use selfheal_bus::LocalTransport;
use selfheal_sim::{Scenario, default_topology, platform::replay};

fn shipped(name: &str) -> Scenario {
    let path = format!("{}/sim/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    Scenario::parse(&std::fs::read_to_string(path).unwrap(), &default_topology()).unwrap()
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the drill ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_scenarios_scored() {
    let th = Thresholds {
        max_harmful: Some(0),
        ..Thresholds::default()
    };
    let healed = timed(drill(&shipped("channel_degradation"), None, &th))
        .await
        .unwrap();
    assert_eq!(
        (healed.diagnosed, healed.cured, healed.expected),
        (1, 1, 1),
        "{healed:?}"
    );
    assert!(
        healed.ttd_s.is_some_and(|t| t <= 5.0) && healed.ttr_s.is_some_and(|t| t <= 40.0),
        "{healed:?}"
    );
    assert_eq!((healed.harmful, healed.false_alarms), (0, 0), "{healed:?}");
    assert!(healed.passed());

    let control = timed(drill(&shipped("control_healthy_changes"), None, &th))
        .await
        .unwrap();
    assert!(control.control);
    assert_eq!(control.actions, 0, "{control:?}");
    assert!(control.passed());

    // A bad deploy: the change is blamed and rolled back.
    let strict = Thresholds {
        require_diagnosis: true,
        require_cure: true,
        max_ttr_s: Some(60.0),
        ..th
    };
    let rolled_back = timed(drill(&shipped("bad_deploy"), None, &strict))
        .await
        .unwrap();
    assert!(rolled_back.passed(), "{rolled_back:?}");
    assert_eq!(rolled_back.actions, 1);

    // A slow database: detected and diagnosed, but its cure (degrading a
    // scene) turns payments away, so its playbook waits for a person. The
    // drill says so, and the pass marks catch it.
    let unhealed = timed(drill(&shipped("slow_database"), None, &strict))
        .await
        .unwrap();
    assert!(unhealed.ttd_s.is_some(), "{unhealed:?}");
    assert_eq!(
        (unhealed.diagnosed, unhealed.cured, unhealed.harmful),
        (1, 0, 0),
        "{unhealed:?}"
    );
    assert!(
        !unhealed.passed() && unhealed.failures.iter().any(|f| f.starts_with("cure")),
        "{unhealed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_are_deterministic_and_match_the_platform_model() {
    let s = shipped("channel_degradation_during_peak");
    let run = || async {
        let dir = tempfile::tempdir().unwrap();
        let opts = selfheal::drill_options(s.clone(), dir.path());
        timed(selfheal::run_loop(
            Arc::new(LocalTransport::default()),
            opts,
            |_| {},
        ))
        .await
        .unwrap()
    };
    let (a, b) = (run().await, run().await);
    let th = Thresholds::default();
    let (ra, rb) = (
        score(&s, &default_topology(), &a, &th),
        score(&s, &default_topology(), &b, &th),
    );
    assert_eq!(ra, rb, "same scenario, same seed, same figures");
    assert_eq!(a.truth.loss_by_tick, b.truth.loss_by_tick);
    let ticks = |o: &selfheal::LoopOutcome| {
        o.truth
            .actions
            .iter()
            .map(|x| (x.tick, x.detail.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ticks(&a), ticks(&b));
    assert!(!a.truth.actions.is_empty());
    // What the live loop did is exactly what the model says those actions do.
    let all: Vec<_> = a.truth.actions.iter().collect();
    let again = replay(
        &default_topology(),
        &s,
        a.start_ms,
        a.truth.loss_by_tick.len() as u64,
        &all,
    );
    assert_eq!(again.loss_by_tick, a.truth.loss_by_tick);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_deploy_nearby_is_not_blamed_and_a_hot_key_is() {
    let th = Thresholds {
        require_diagnosis: true,
        max_harmful: Some(0),
        ..Thresholds::default()
    };
    for name in [
        "bad_deploy_near_healthy_deploy",
        "hot_item_surge",
        "abusive_client",
    ] {
        let r = timed(drill(&shipped(name), None, &th)).await.unwrap();
        assert!(r.passed(), "{name}: {r:?}");
    }
}

/// The diagnosis bar over the whole drill catalogue: the root cause (kind
/// and target) first, and among the top three, for at least 90 % of
/// expected faults each, and a bad change
/// blamed with precision and recall of at least 95 % (a healthy deploy near
/// an unrelated fault is not blamed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_meets_the_diagnosis_bar() {
    let topo = default_topology();
    let scenarios = selfheal::drill::load(&selfheal::drill::shipped(), &topo).unwrap();
    assert!(scenarios.len() >= 20);
    let mut results = Vec::new();
    for s in &scenarios {
        results.push(timed(drill(s, None, &Thresholds::default())).await.unwrap());
    }
    let sum = |f: fn(&selfheal::drill::DrillResult) -> usize| results.iter().map(f).sum::<usize>();
    let (expected, top1, top3) = (sum(|r| r.expected), sum(|r| r.diagnosed), sum(|r| r.top3));
    let summary = selfheal::drill::diagnosis_summary(&results);
    assert!(top1 as f64 >= 0.9 * expected as f64, "{summary}");
    // Among the top three: the same bar, counted on its own (a cause the
    // brain names third but not first still helps the person on call).
    assert!(top3 as f64 >= 0.9 * expected as f64, "{summary}");
    let (tp, fp, fneg) = (
        sum(|r| r.change_tp),
        sum(|r| r.change_fp),
        sum(|r| r.change_fn),
    );
    assert!(tp >= 3, "the catalogue has bad changes to blame: {summary}");
    assert!(tp as f64 >= 0.95 * (tp + fp) as f64, "precision: {summary}");
    assert!(tp as f64 >= 0.95 * (tp + fneg) as f64, "recall: {summary}");
    // A hypothesis within the evidence window (settle_s = 3) of opening.
    for r in results.iter().filter(|r| !r.control) {
        assert!(
            r.tth_s.is_some_and(|t| t <= 5.0),
            "{}: {:?}",
            r.name,
            r.tth_s
        );
    }
}
