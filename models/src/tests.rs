use super::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn feats() -> Vec<String> {
    ["tps", "latency_p99_ms", "thread_pool_use", "cpu"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Normal history: load varies over a day; latency, pool and CPU follow it.
fn normal(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let load = 500.0 + 400.0 * (i as f64 / 200.0).sin() + 20.0 * r.r#gen::<f64>();
            let lat = 40.0 + 0.05 * load + 2.0 * r.r#gen::<f64>();
            let pool = 0.05 + 0.0005 * load + 0.02 * r.r#gen::<f64>();
            let cpu = 0.1 + 0.0006 * load + 0.02 * r.r#gen::<f64>();
            vec![load, lat, pool, cpu]
        })
        .collect()
}

#[test]
fn catches_a_correlated_shift_no_single_indicator_shows() {
    let rows = normal(3000, 1);
    let m = ServiceModel::fit("payment-engine", &feats(), &rows, &FitConfig::default()).unwrap();
    // Normal rows stay low.
    let fresh = normal(1000, 2);
    let high = fresh.iter().filter(|r| m.score(r) > 0.5).count();
    assert!(high <= 10, "{high} of 1000 normal rows scored above 0.5");
    // Light load, but latency, pool use and CPU of a heavy load: each value
    // lies well inside its own normal range.
    let odd = vec![
        200.0,
        40.0 + 0.05 * 800.0,
        0.05 + 0.0005 * 800.0,
        0.1 + 0.0006 * 800.0,
    ];
    for (j, v) in odd.iter().enumerate() {
        let (lo, hi) = rows
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r[j]), b.max(r[j])));
        assert!(
            *v > lo && *v < hi,
            "feature {j} is out of range, the test is void"
        );
    }
    assert!(m.score(&odd) > 0.8, "score {}", m.score(&odd));
    // Missing or broken values are as unusual as it gets, not a panic.
    assert_eq!(m.score(&[1.0, f64::NAN, 0.1, 0.2]), 1.0);
    assert_eq!(m.score(&[1.0]), 1.0);
}

#[test]
fn a_saved_model_loads_and_scores_identically() {
    let rows = normal(2000, 3);
    let m = ServiceModel::fit("cashier", &feats(), &rows, &FitConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut set = ModelSet::default();
    set.models.insert(m.service.clone(), m.clone());
    let written = set.save_dir(dir.path()).unwrap();
    assert_eq!(written, vec![dir.path().join("cashier.json")]);
    let (loaded, errors) = ModelSet::load_dir(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let back = &loaded.models["cashier"];
    assert_eq!(back, &m);
    for r in normal(300, 4)
        .iter()
        .chain([vec![1e6, 0.0, 1.0, 1.0]].iter())
    {
        assert_eq!(back.nll(r).to_bits(), m.nll(r).to_bits());
        assert_eq!(back.score(r).to_bits(), m.score(r).to_bits());
    }
}

#[test]
fn the_same_data_and_seed_fit_the_same_model() {
    let rows = normal(1500, 5);
    let a = ServiceModel::fit("s", &feats(), &rows, &FitConfig::default()).unwrap();
    let b = ServiceModel::fit("s", &feats(), &rows, &FitConfig::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn unusable_training_data_is_refused_with_the_reason() {
    let cfg = FitConfig::default();
    let e = ServiceModel::fit("s", &feats(), &normal(10, 6), &cfg).unwrap_err();
    assert!(
        e.to_string()
            .contains("10 rows of history, needs at least 80"),
        "{e}"
    );
    let mut rows = normal(500, 7);
    rows[42][1] = f64::NAN;
    let e = ServiceModel::fit("s", &feats(), &rows, &cfg).unwrap_err();
    assert!(e.to_string().contains("row 42"), "{e}");
    let e = ServiceModel::fit("s", &feats()[..1], &normal(500, 8), &cfg).unwrap_err();
    assert!(e.to_string().contains("at least 2 indicators"), "{e}");
    // A constant indicator is fine (it is regularised, not singular).
    let mut rows = normal(500, 9);
    for r in &mut rows {
        r[3] = 0.5;
    }
    let m = ServiceModel::fit("s", &feats(), &rows, &cfg).unwrap();
    assert!(m.score(&rows[10]) < 0.5);
}

#[test]
fn bad_model_files_are_named_and_the_rest_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let m = ServiceModel::fit("good", &feats(), &normal(1000, 10), &FitConfig::default()).unwrap();
    let mut set = ModelSet::default();
    set.models.insert("good".into(), m.clone());
    set.save_dir(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("broken.json"),
        "{\n \"version\": 1,\n oops }",
    )
    .unwrap();
    let mut wrong = serde_json::to_value(&m).unwrap();
    wrong["service"] = "wrong".into();
    wrong["scale"] = serde_json::json!([1.0]);
    std::fs::write(dir.path().join("wrong.json"), wrong.to_string()).unwrap();
    let (set, errors) = ModelSet::load_dir(dir.path());
    assert_eq!(set.models.keys().collect::<Vec<_>>(), vec!["good"]);
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].contains("broken.json: line 3"), "{text:?}");
    assert!(
        text[1].contains("wrong.json: features, center and scale"),
        "{text:?}"
    );
    // No directory: no models, no error (the brain runs without them).
    let (set, errors) = ModelSet::load_dir(&dir.path().join("none"));
    assert!(set.is_empty() && errors.is_empty());
}

#[test]
fn means_average_a_service_over_its_instances_and_reset_for_the_next_instant() {
    let mut m = Means::default();
    m.add("cpu", 0.2);
    m.add("cpu", 0.4);
    m.add("latency", 10.0);
    m.add("latency", f64::NAN);
    assert!((m.mean("cpu").unwrap() - 0.3).abs() < 1e-12);
    assert_eq!(m.mean("latency"), Some(10.0));
    assert_eq!(m.means().len(), 2);
    m.reset();
    assert!(m.is_empty());
    assert_eq!(m.mean("cpu"), None);
    m.add("cpu", 1.0);
    assert_eq!(m.mean("cpu"), Some(1.0));
    assert_eq!(m.means().keys().collect::<Vec<_>>(), vec!["cpu"]);
}
