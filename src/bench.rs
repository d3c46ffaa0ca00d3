//! `selfheal bench`: measured speeds and loop outcomes, for
//! docs/benchmarks.md. Run it in release mode on an idle machine.

use std::{hint::black_box, sync::Arc, time::Instant};

use selfheal_brain::detect::{Detector, DetectorConfig, Direction};
use selfheal_bus::{
    IndicatorBatch, Layer, Limits, LocalTransport, Sample, WIRE_VERSION, decode, encode,
};
use selfheal_sim::Scenario;

/// Streaming detector: samples per second on one core.
pub fn detector_throughput() -> f64 {
    let cfg = DetectorConfig::default();
    let series = 1_000usize;
    let per = 2_000usize;
    let mut dets: Vec<Detector> = (0..series).map(|_| Detector::new(Direction::Up)).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let t = Instant::now();
    for i in 0..per {
        for d in dets.iter_mut() {
            // xorshift noise around 100.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 100.0 + (x % 1000) as f64 / 100.0;
            black_box(d.update(i as i64 * 1000, v, &cfg));
        }
    }
    (series * per) as f64 / t.elapsed().as_secs_f64()
}

/// Indicator batch decode + validation: samples per second.
pub fn decode_throughput() -> f64 {
    let now = 1_700_000_000_000i64;
    let batch = IndicatorBatch {
        v: WIRE_VERSION,
        source: "agent-1".into(),
        seq: 1,
        layer: Layer::System,
        idc: "idc1".into(),
        service: "payment-engine".into(),
        samples: (0..100)
            .map(|i| Sample {
                scene: None,
                link: None,
                instance: Some(format!("payment-engine-{}", i % 4)),
                metric: ["cpu", "error_rate", "latency_p99_ms"][i % 3].into(),
                labels: Default::default(),
                ts: now,
                value: i as f64 * 0.5,
            })
            .collect(),
    };
    let bytes = encode(&batch);
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(decode::<IndicatorBatch>(&bytes, &Limits::default(), now).ok());
    }
    (n * 100) as f64 / t.elapsed().as_secs_f64()
}

/// Runs the loop over `seeds` seeds of the degradation scenario and the
/// control scenario; prints one row per run.
pub async fn loops(seeds: u64, speed: f64) -> anyhow::Result<()> {
    println!(
        "| scenario | seed | MTTD s | MTTR s (brain) | back within SLO s (platform) | actions | failed payments |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (base, name) in [
        (Scenario::channel_degradation(), "channel_degradation"),
        (Scenario::control(), "control"),
    ] {
        for seed in 0..seeds {
            let dir = tempfile::tempdir()?;
            let mut sc = base.clone();
            sc.seed = 1000 + seed;
            let mut opts = crate::loop_options(sc, dir.path(), speed);
            if name == "control" {
                opts.stop_after_outcome = None;
            }
            let out = crate::run_loop(Arc::new(LocalTransport::default()), opts, |_| {}).await?;
            let s = |v: Option<i64>| v.map_or("-".into(), |m| format!("{:.1}", m as f64 / 1000.0));
            println!(
                "| {name} | {} | {} | {} | {} | {} | {:.0} |",
                1000 + seed,
                s(out.mttd_ms()),
                s(out.mttr_ms()),
                s(out.truth.ttr_ms()),
                out.executed_actions(),
                out.truth.failed
            );
        }
    }
    Ok(())
}
