//! Multivariate per-service models: trained by `selfheal train` on a
//! recorded normal run, loaded by the brain, scored on the simulator's
//! faults.

mod common;

use std::{path::Path, time::Duration};

use common::selfheal;
use selfheal::{drill_options, run_loop, train};
use selfheal_bus::LocalTransport;
use selfheal_models::ModelSet;
use selfheal_sim::{Scenario, default_topology};

fn scenario(text: &str) -> Scenario {
    Scenario::parse(text, &default_topology()).unwrap()
}

/// Half an hour of normal operation, another seed than any drill.
fn history() -> Scenario {
    scenario(
        "name = \"history\"\ndescription = \"normal operation\"\nseed = 4242\nduration_s = 1800\n",
    )
}

/// Records normal history and trains on it with the CLI.
fn trained(dir: &Path) -> ModelSet {
    let rec = dir.join("history");
    train::record(&default_topology(), &history(), &rec).unwrap();
    let models = dir.join("models");
    let (ok, _, err) = selfheal(&[
        "train",
        "--from",
        rec.to_str().unwrap(),
        "--out",
        models.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (set, errors) = ModelSet::load_dir(&models);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// When the brain's rule raises an alarm for `service` over a recorded
/// run, as seconds from the start.
fn alarms(set: &ModelSet, run: &Path, service: &str) -> Vec<i64> {
    let history = train::read_history(&run.join("metrics.csv")).unwrap();
    train::alarms(&set.models[service], &history[service], &Default::default())
        .into_iter()
        .map(|ts| (ts - train::RECORD_START_MS) / 1000)
        .collect()
}

#[test]
fn models_trained_on_normal_history_are_quiet_on_controls_and_see_faults() {
    let dir = tempfile::tempdir().unwrap();
    let set = trained(dir.path());
    assert!(
        set.models.contains_key("payment-engine"),
        "{:?}",
        set.models.keys()
    );
    assert!(set.models["payment-engine"].features.len() >= 4);

    // A control run (its own seed): no service raises an alarm.
    let control = dir.path().join("control");
    let text = std::fs::read_to_string(selfheal::paths::scenarios().join("control.toml")).unwrap();
    train::record(&default_topology(), &scenario(&text), &control).unwrap();
    for service in set.models.keys() {
        let a = alarms(&set, &control, service);
        assert!(
            a.is_empty(),
            "{service}: false alarms at {a:?} s on a control run"
        );
    }

    // A saturated host (from 90 s): the payment engine's indicators leave
    // their joint shape, seen within seconds.
    let fault = dir.path().join("fault");
    let text =
        std::fs::read_to_string(selfheal::paths::scenarios().join("saturated_host.toml")).unwrap();
    train::record(&default_topology(), &scenario(&text), &fault).unwrap();
    let a = alarms(&set, &fault, "payment-engine");
    let first = *a.first().expect("the saturated host is never seen");
    assert!((90..=100).contains(&first), "first alarm at {first} s");
}

#[test]
fn train_refuses_bad_history_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("metrics.csv");
    std::fs::write(
        &bad,
        "timestamp,service,instance,layer,metric,value\n1700000000,cashier,,system,cpu,0.5\n1700000001,cashier,,system,cpu,lots\n",
    )
    .unwrap();
    let (ok, _, err) = selfheal(&["train", "--from", bad.to_str().unwrap(), "--out", "unused"]);
    assert!(
        !ok && err.contains("metrics.csv:3") && err.contains("not a number"),
        "{err}"
    );
    std::fs::write(&bad, "when,what\n1,2\n").unwrap();
    let (ok, _, err) = selfheal(&["train", "--from", bad.to_str().unwrap(), "--out", "unused"]);
    assert!(!ok && err.contains("needs the columns"), "{err}");
    // Too little history for any model: said so, per service.
    std::fs::write(
        &bad,
        "timestamp,service,instance,layer,metric,value\n1700000000,cashier,,system,cpu,0.5\n1700000000,cashier,,system,error_rate,0.01\n",
    )
    .unwrap();
    let (ok, _, err) = selfheal(&["train", "--from", bad.to_str().unwrap(), "--out", "unused"]);
    assert!(!ok && err.contains("cashier: 1 rows of history"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brain_loads_models_and_still_heals_and_stays_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let set = trained(dir.path());
    // One broken file next to the good ones: refused and counted, the
    // rest load.
    std::fs::write(dir.path().join("models/broken.json"), "{ nope").unwrap();
    for (name, acts) in [("control.toml", false), ("saturated_host.toml", true)] {
        let text = std::fs::read_to_string(selfheal::paths::scenarios().join(name)).unwrap();
        let run_dir = dir.path().join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let mut opts = drill_options(scenario(&text), &run_dir);
        opts.brain.models = Some(dir.path().join("models"));
        let bus = std::sync::Arc::new(LocalTransport::default());
        let out = tokio::time::timeout(Duration::from_secs(120), run_loop(bus, opts, |_| {}))
            .await
            .expect("the run ends")
            .unwrap();
        let loaded = out
            .brain
            .models_loaded
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(loaded as usize, set.models.len());
        assert_eq!(
            out.brain
                .models_rejected
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        if acts {
            assert!(
                out.actions.iter().any(|a| a.kind == "restart"),
                "{name}: {:?}",
                out.actions
            );
            assert!(out.truth.recovered_ms.is_some(), "{name}: not recovered");
        } else {
            assert!(out.actions.is_empty(), "{name}: {:?}", out.actions);
        }
    }
}
