use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const MIN5: i64 = 300_000;

fn noisy(seed: u64, n: usize, level: f64, sd: f64) -> Vec<f64> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| level + sd * (r.r#gen::<f64>() - 0.5) * 3.46)
        .collect()
}

/// Feeds `xs` every five minutes from `t0`; returns the transitions and
/// the scores.
fn run(d: &mut Scorer, xs: &[f64], t0: i64) -> (Vec<(i64, Transition)>, Vec<f64>) {
    let cfg = DetectorConfig::default();
    let mut ev = Vec::new();
    let mut scores = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let ts = t0 + i as i64 * MIN5;
        if let Some(t) = d.update(ts, *x, &cfg) {
            ev.push((ts, t));
        }
        scores.push(d.last_score());
    }
    (ev, scores)
}

/// Index and value of the highest score at or after `from`.
fn peak(scores: &[f64], from: usize) -> (usize, f64) {
    scores[from..].iter().enumerate().fold(
        (0, f64::MIN),
        |b, (i, s)| if *s > b.1 { (i + from, *s) } else { b },
    )
}

#[test]
fn default_config_is_valid_and_bad_ones_are_named() {
    assert!(DetectorConfig::default().validate().is_empty());
    let bad = DetectorConfig {
        alpha: 2.0,
        record_mem: f64::NAN,
        open_run: 0,
        ..Default::default()
    };
    let p = bad.validate();
    assert!(p.iter().any(|m| m.contains("detector.alpha")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("detector.record_mem")), "{p:?}");
    assert!(p.iter().any(|m| m.contains("open_run")), "{p:?}");
}

#[test]
fn cold_start_and_noise_are_quiet() {
    let mut d = Scorer::new(Direction::Both);
    // A wild start is learned, not alarmed on.
    let (ev, s) = run(&mut d, &[0.0, 1.0, 0.0, 1.0, 0.5, 9.0, -3.0], 0);
    assert!(ev.is_empty() && s.iter().all(|v| *v == 0.0));
    let mut d = Scorer::new(Direction::Both);
    let (ev, s) = run(&mut d, &noisy(1, 5000, 100.0, 5.0), 0);
    assert!(ev.is_empty(), "{ev:?}");
    // Stationary noise: after a first day of learning nothing is a clear
    // peak (novel values stop once the extremes are known).
    assert!(peak(&s, 1000).1 < 0.9, "{:?}", peak(&s, 1000));
}

#[test]
fn spike_scores_one_clear_peak() {
    let mut xs = noisy(2, 3000, 50.0, 2.0);
    xs[2000] = 80.0;
    let mut d = Scorer::new(Direction::Both);
    let (ev, s) = run(&mut d, &xs, 0);
    let (at, top) = peak(&s, 500);
    assert_eq!(at, 2000);
    assert!(top >= 0.9, "{top}");
    // One peak, not a plateau: the next samples are quiet.
    assert!(
        s[2001..2010].iter().all(|v| *v < 0.5),
        "{:?}",
        &s[2001..2010]
    );
    // A single spike does not open an incident, and barely moves the level.
    assert!(ev.is_empty(), "{ev:?}");
    assert!((d.detector().baseline() - 50.0).abs() < 1.0);
}

#[test]
fn step_opens_with_onset_and_baseline_then_recovery_closes() {
    let mut d = Scorer::new(Direction::Down);
    let mut xs = noisy(3, 300, 0.997, 0.003);
    xs.extend(noisy(4, 50, 0.6, 0.02));
    xs.extend(noisy(5, 50, 0.996, 0.003));
    let (ev, s) = run(&mut d, &xs, 0);
    assert_eq!(ev.len(), 2, "{ev:?}");
    let (
        at,
        Transition::Start {
            onset,
            baseline,
            score,
            novel,
        },
    ) = ev[0]
    else {
        panic!("expected a start first: {ev:?}");
    };
    assert_eq!(onset, 300 * MIN5);
    assert_eq!(at, 302 * MIN5, "opens after open_run bad samples");
    assert!((baseline - 0.997).abs() < 0.002, "{baseline}");
    assert!(score > 0.9);
    assert!(novel, "far below anything the series had done");
    assert!(
        matches!(ev[1], (t, Transition::End { .. }) if t == 354 * MIN5),
        "{ev:?}"
    );
    assert_eq!(peak(&s, 100).0, 300, "the score peaks at the step");
}

#[test]
fn a_start_is_novel_only_the_first_time_a_series_goes_that_far() {
    let mut d = Scorer::new(Direction::Up);
    let mut xs = noisy(3, 300, 20.0, 1.0);
    xs.extend(noisy(4, 40, 90.0, 2.0));
    xs.extend(noisy(5, 300, 20.0, 1.0));
    xs.extend(noisy(6, 40, 90.0, 2.0));
    let (ev, _) = run(&mut d, &xs, 0);
    let novel: Vec<bool> = ev
        .iter()
        .filter_map(|(_, t)| match t {
            Transition::Start { novel, .. } => Some(*novel),
            Transition::End { .. } => None,
        })
        .collect();
    assert_eq!(novel, [true, false], "{ev:?}");
}

/// The `novel` flag of each start in `xs` (fed every five minutes).
fn starts_novel(dir: Direction, xs: &[f64]) -> Vec<bool> {
    let mut d = Scorer::new(dir);
    let (ev, _) = run(&mut d, xs, 0);
    ev.iter()
        .filter_map(|(_, t)| match t {
            Transition::Start { novel, .. } => Some(*novel),
            Transition::End { .. } => None,
        })
        .collect()
}

#[test]
fn a_lone_spike_hides_no_level_held_later_even_below_it() {
    // One sample at four times the level (a GC pause, a scrape that
    // caught a burst), then the series held at 2.7 times it: a level the
    // series never held, though it once touched more.
    let mut xs = noisy(3, 300, 20.0, 1.0);
    xs[200] = 80.0;
    xs.extend(noisy(4, 40, 54.0, 1.5));
    assert_eq!(starts_novel(Direction::Up, &xs), [true]);
    // A level it had held before (a batch that ran) is no news, spike or
    // not.
    let mut again = noisy(3, 300, 20.0, 1.0);
    again[100] = 80.0;
    again.extend(noisy(5, 40, 54.0, 1.5));
    again.extend(noisy(6, 300, 20.0, 1.0));
    again.extend(noisy(7, 40, 54.0, 1.5));
    assert_eq!(starts_novel(Direction::Up, &again), [true, false]);
}

#[test]
fn direction_matters() {
    // A success rate rising is not an incident, nor news.
    let mut d = Scorer::new(Direction::Down);
    let mut xs = noisy(6, 300, 0.95, 0.003);
    xs.extend(noisy(7, 50, 0.999, 0.0005));
    let (ev, s) = run(&mut d, &xs, 0);
    assert!(ev.is_empty(), "{ev:?}");
    assert!(peak(&s, 300).1 < 0.5, "{:?}", peak(&s, 300));
    // Latency rising is both.
    let mut d = Scorer::new(Direction::Up);
    let mut xs = noisy(8, 300, 200.0, 10.0);
    xs.extend(noisy(9, 20, 900.0, 10.0));
    let (ev, s) = run(&mut d, &xs, 0);
    assert!(matches!(ev[0].1, Transition::Start { .. }));
    assert!(peak(&s, 300).1 >= 0.9);
}

#[test]
fn slow_drift_out_of_range_is_caught_early_enough() {
    // Steady for two days, then a drift of 0.1 sd per sample.
    let mut xs = noisy(10, 600, 100.0, 1.0);
    let drift: Vec<f64> = noisy(15, 300, 100.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.1 * i as f64)
        .collect();
    xs.extend(drift);
    let mut d = Scorer::new(Direction::Up);
    let (_, s) = run(&mut d, &xs, 0);
    let first = s[600..].iter().position(|v| *v >= 0.9).map(|i| i + 600);
    let first = first.expect("the drift is never reported");
    // 3.5 sd above the level, the drift leaves what the series ever did.
    assert!(first < 640, "reported only at sample {first}");
}

/// A daily rhythm: high by day, low by night, five-minute samples.
fn daily(seed: u64, days: usize) -> Vec<f64> {
    let noise = noisy(seed, days * 288, 0.0, 2.0);
    (0..days * 288)
        .map(|i| {
            let h = (i % 288) as f64 / 12.0;
            100.0 + 60.0 * (std::f64::consts::PI * (h - 6.0) / 12.0).sin().max(-0.5) + noise[i]
        })
        .collect()
}

#[test]
fn seasonality_daily_peaks_are_not_news_but_a_day_level_at_night_is() {
    let xs = daily(11, 10);
    let mut d = Scorer::new(Direction::Both);
    let (_, s) = run(&mut d, &xs, 0);
    // After three days the rhythm is known: no value is novel.
    assert!(peak(&s, 3 * 288).1 < 0.9, "{:?}", peak(&s, 3 * 288));
    // A day-time level at night, reached gently (no jump, in range).
    let mut xs = xs;
    let night = 8 * 288 + 24; // 02:00 on day 9
    for (k, x) in xs[night..night + 48].iter_mut().enumerate() {
        *x += (k as f64 * 4.0).min(50.0);
    }
    let scores = |cfg: &DetectorConfig| {
        let mut d = Scorer::new(Direction::Both);
        xs.iter()
            .enumerate()
            .map(|(i, x)| {
                d.update(i as i64 * MIN5, *x, cfg);
                d.last_score()
            })
            .collect::<Vec<_>>()
    };
    let with = scores(&DetectorConfig::default());
    let without = scores(&DetectorConfig {
        day_weight: 0.0,
        ..Default::default()
    });
    let (at, top) = peak(&with[..night + 48], night);
    let (_, blind) = peak(&without[..night + 48], night);
    assert!(
        (night..night + 12).contains(&at),
        "reported at {at}, from {night}"
    );
    assert!(
        top > 2.0 * blind,
        "the time of day is what tells it: {top} vs {blind} without it"
    );
}

#[test]
fn level_shift_becomes_the_new_normal_for_the_score() {
    let mut xs = noisy(12, 1000, 10.0, 0.5);
    xs.extend(noisy(13, 3000, 30.0, 0.5));
    let mut d = Scorer::new(Direction::Both);
    let (_, s) = run(&mut d, &xs, 0);
    assert!(peak(&s, 999).0 < 1003);
    assert!(peak(&s, 1500).1 < 0.9, "the new level is still news");
}

#[test]
fn nan_infinity_and_gaps_are_skipped() {
    let mut xs = noisy(14, 400, 5.0, 0.2);
    xs[100] = f64::NAN;
    xs[101] = f64::INFINITY;
    xs[102] = f64::NEG_INFINITY;
    let cfg = DetectorConfig::default();
    let mut d = Scorer::new(Direction::Both);
    for (i, x) in xs.iter().enumerate() {
        // A gap of a week in the middle.
        let ts = i as i64 * MIN5 + if i > 200 { 7 * DAY_MS } else { 0 };
        d.update(ts, *x, &cfg);
        assert!((0.0..=1.0).contains(&d.last_score()));
        if !x.is_finite() {
            assert_eq!(d.last_score(), 0.0);
        }
    }
    assert!((d.detector().baseline() - 5.0).abs() < 0.2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_input_scores_in_unit_interval(
        xs in prop::collection::vec(
            prop_oneof![
                8 => -1e12f64..1e12,
                1 => Just(f64::NAN),
                1 => Just(f64::INFINITY),
                1 => Just(f64::NEG_INFINITY),
                1 => Just(f64::MAX),
                1 => Just(f64::MIN_POSITIVE),
                1 => Just(0.0),
            ],
            0..400,
        ),
        dt in prop::collection::vec(-1_000_000i64..100_000_000, 400),
        dir in prop_oneof![Just(Direction::Up), Just(Direction::Down), Just(Direction::Both)],
    ) {
        let cfg = DetectorConfig::default();
        let mut d = Scorer::new(dir);
        let mut ts = 1_700_000_000_000i64;
        for (x, step) in xs.iter().zip(&dt) {
            ts = ts.saturating_add(*step);
            if let Some(Transition::Start { score, .. }) = d.update(ts, *x, &cfg) {
                prop_assert!((0.0..=1.0).contains(&score));
            }
            let s = d.last_score();
            prop_assert!((0.0..=1.0).contains(&s), "score {s} for {x}");
        }
    }
}

/// Feeds `xs` every `step_ms` from 0; returns when the first anomaly
/// opened (ms), if one did.
fn first_open(xs: &[f64], step_ms: i64) -> Option<i64> {
    let cfg = DetectorConfig::default();
    let mut d = Scorer::new(Direction::Up);
    xs.iter().enumerate().find_map(|(i, x)| {
        let ts = i as i64 * step_ms;
        matches!(d.update(ts, *x, &cfg), Some(Transition::Start { .. })).then_some(ts)
    })
}

#[test]
fn a_fault_creeping_in_over_half_a_minute_of_one_second_samples_opens() {
    // Errors per second: 2 ± 0.25 for five minutes, then ramping to 10
    // over 30 s and staying there (a leak making a pod fail more and more).
    let base = noisy(7, 600, 2.0, 0.25);
    let ramp: Vec<f64> = base
        .iter()
        .enumerate()
        .map(|(i, x)| x + 8.0 * ((i as f64 - 300.0) / 30.0).clamp(0.0, 1.0))
        .collect();
    let at = first_open(&ramp, 1_000).expect("the creeping fault opens");
    assert!(
        (300_000..=330_000).contains(&at),
        "opened within the ramp, at {at} ms"
    );
    assert_eq!(first_open(&base, 1_000), None, "the noise alone is quiet");
    // With the baseline learning per sample alone (memory: 20 samples),
    // the same ramp is followed and never opens: the test catches a
    // return to it.
    let cfg = DetectorConfig {
        base_memory_s: 0.0,
        ..Default::default()
    };
    let mut d = Scorer::new(Direction::Up);
    let opened = ramp.iter().enumerate().any(|(i, x)| {
        matches!(
            d.update(i as i64 * 1_000, *x, &cfg),
            Some(Transition::Start { .. })
        )
    });
    assert!(!opened, "per-sample memory follows the ramp");
}

/// A success rate (%) of `n` requests a second, each succeeding with
/// probability `p`, then `after` from sample 600 on.
fn success_rate(seed: u64, n: u32, p: f64, after: f64) -> Vec<f64> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..900)
        .map(|i| {
            let p = if i >= 600 { after } else { p };
            let ok = (0..n).filter(|_| r.r#gen::<f64>() < p).count();
            100.0 * ok as f64 / f64::from(n)
        })
        .collect()
}

#[test]
fn a_success_rate_s_unit_is_its_failures() {
    let open = |xs: &[f64]| {
        let cfg = DetectorConfig::default();
        let mut d = Scorer::new(Direction::Down);
        xs.iter().enumerate().find_map(|(i, x)| {
            let ts = i as i64 * 1_000;
            matches!(d.update(ts, *x, &cfg), Some(Transition::Start { .. })).then_some(ts)
        })
    };
    // 3,000 payments a second at 99.9 %, then 99.5 %: failures five times
    // as many, 12 more failed payments a second. A unit of 0.2 % of the
    // level (0.2 points, twice the failures) read it as 1.6 deviations.
    let at = open(&success_rate(1, 3_000, 0.999, 0.995)).expect("the drop opens");
    assert!((600_000..=610_000).contains(&at), "opened at {at} ms");
    // The same volume and rate unchanged, and a ratio of a few requests
    // a second that never failed, then failed one in twenty for two
    // seconds: quiet.
    assert_eq!(open(&success_rate(2, 3_000, 0.999, 0.999)), None);
    let mut blip = vec![1.0; 900];
    blip[700] = 0.95;
    blip[701] = 0.95;
    assert_eq!(open(&blip), None);
}
