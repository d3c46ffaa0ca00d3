//! Throughput of the streaming detector, per core: one sample through one
//! series' state, over many series (as a shard sees them: transitions
//! only), and one long series scored sample by sample (as `selfheal
//! detect` sees it).
//!
//! `cargo bench -p selfheal-brain --bench detector`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use selfheal_brain::detect::{Detector, DetectorConfig, Direction, Scorer};

/// Deterministic noisy values with a daily rhythm and rare spikes.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 100.0;
            let day = (i as f64 * std::f64::consts::TAU / 288.0).sin() * 30.0;
            let spike = if x.is_multiple_of(997) { 200.0 } else { 0.0 };
            100.0 + day + noise + spike
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = DetectorConfig::default();
    let mut g = c.benchmark_group("detector");

    let series = 1_000usize;
    let per = 200usize;
    let data: Vec<Vec<f64>> = (0..series).map(|s| values(per, s as u64 + 1)).collect();
    g.throughput(Throughput::Elements((series * per) as u64));
    g.bench_function("1000 series x 200 samples", |b| {
        b.iter(|| {
            let mut dets: Vec<Detector> =
                (0..series).map(|_| Detector::new(Direction::Up)).collect();
            for i in 0..per {
                for (d, xs) in dets.iter_mut().zip(&data) {
                    black_box(d.update(i as i64 * 300_000, xs[i], &cfg));
                }
            }
            dets
        })
    });

    let long = values(20_000, 7);
    g.throughput(Throughput::Elements(long.len() as u64));
    g.bench_function("one series x 20000 samples", |b| {
        b.iter(|| {
            let mut d = Scorer::new(Direction::Both);
            for (i, x) in long.iter().enumerate() {
                d.update(i as i64 * 300_000, *x, &cfg);
                black_box(d.last_score());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
