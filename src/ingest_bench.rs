//! `selfheal bench ingest`: how fast the brain takes indicators beside the
//! raw NATS pipe carrying the same payloads, in the same run, and what a
//! series costs it in memory.
//!
//! - **Raw pipe**: a publisher sends real indicator batches (JSON, as agents
//!   send them) as fast as it can for a while; a plain subscriber decodes
//!   and validates each one (the brain's own `decode`) and counts samples.
//! - **Brain**: the same publisher, the same payloads, into a brain (its
//!   ingest, series admission, detectors and correlation; a temporary
//!   store); what counts is the samples its detectors have seen.
//!
//! Both rates are samples a second from the first publish until the last
//! sample is taken (or the taker stops keeping up for a second). Messages
//! NATS drops for a slow consumer are counted as lost, not taken.
//!
//! - **Memory**: a brain on the in-process bus takes `N` series, a few
//!   samples each, for N in the steps asked; the process' resident memory
//!   after each step gives the bytes per series between steps.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use selfheal_brain::{Brain, BrainConfig};
use selfheal_bus::{
    Bus, Encoding, IndicatorBatch, Layer, Limits, LocalTransport, Sample, Subjects, WIRE_VERSION,
    decode_batch, encode_batch, wall_ms,
};
use serde::Serialize;

/// Samples in one batch, as an agent sends them.
pub const BATCH: usize = 100;
/// Batches the memory steps send before waiting for the brain to take
/// them.
const SLICE: usize = 1_000;
/// Series per service (under the brain's per-service cap).
const PER_SERVICE: usize = 5_000;

/// One throughput measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    /// Distinct series published.
    pub series: usize,
    /// Samples per batch.
    pub batch_samples: usize,
    /// Samples published.
    pub published: u64,
    /// Samples taken by the raw subscriber.
    pub raw_taken: u64,
    /// Raw pipe: samples decoded a second.
    pub raw_samples_per_s: f64,
    /// Samples the brain's detectors saw.
    pub brain_taken: u64,
    /// Brain: samples a second.
    pub brain_samples_per_s: f64,
    /// Brain ÷ raw pipe.
    pub ratio: f64,
    /// How the batches were encoded: `json` or `binary`.
    pub encoding: Encoding,
    /// Bytes of one batch of [`BATCH`] samples as published.
    pub batch_bytes: usize,
    /// Samples published in the raw pipe's run (`published` is the larger
    /// of the two runs).
    pub raw_published: u64,
    /// Samples published in the brain's run.
    pub brain_published: u64,
    /// CPU seconds this process spent in the raw pipe's run: the
    /// publisher and the subscriber (nats-server is another process).
    pub raw_cpu_s: f64,
    /// CPU seconds this process spent in the brain's run: the publisher
    /// and the brain.
    pub brain_cpu_s: f64,
    /// Whether the publisher made its batches once and only renumbered,
    /// retimed and revalued them each round (true since it does): before,
    /// it formatted every name of every sample each round, and on two
    /// cores the raw pipe measured mostly that.
    pub publisher_reuses_batches: bool,
    /// Batches the brain accepted in its run.
    pub brain_batches: u64,
    /// Of those, the ones it read where they lie, their names recognised
    /// by their bytes (binary batches like their publisher's last one),
    /// not decoded; 0 for JSON.
    pub brain_batches_read_in_place: u64,
}

/// Resident memory of the brain's process after it took `series` series.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryStep {
    /// Series taken.
    pub series: usize,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Bytes per series added since the step before (none for the first).
    pub bytes_per_series: Option<f64>,
    /// The whole resident set over the series: every fixed cost of the
    /// process (runtime, store, the capped recent rings) included.
    pub rss_per_series: f64,
}

/// What `bench ingest` writes (`--json`); fields are added, never renamed
/// or dropped.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    /// The throughput runs.
    pub throughput: Vec<Throughput>,
    /// The memory steps.
    pub memory: Vec<MemoryStep>,
    /// The streaming detector's own state per series in the brain, bytes.
    pub detector_state_bytes: usize,
    /// The same with the per-sample score's surprise channels (what
    /// `selfheal detect` keeps per series), bytes.
    pub scorer_state_bytes: usize,
}

/// The batches of one round, made as they are sent: every series once, at
/// `ts`.
fn round(
    series: usize,
    ts: i64,
    seq: &mut u64,
    encoding: Encoding,
) -> impl Iterator<Item = (String, selfheal_bus::Bytes)> + '_ {
    round_batches(series, ts, seq).map(move |(subject, b)| {
        (
            subject,
            encode_batch(&b, encoding).expect("a bench batch encodes"),
        )
    })
}

/// The batches of one round, unencoded, with their subjects.
fn round_batches(
    series: usize,
    ts: i64,
    seq: &mut u64,
) -> impl Iterator<Item = (String, IndicatorBatch)> + '_ {
    let subjects = Subjects::default();
    (0..series).step_by(BATCH).map(move |i| {
        let n = BATCH.min(series - i);
        let svc = format!("svc-{}", i / PER_SERVICE);
        *seq += 1;
        let b = IndicatorBatch {
            v: WIRE_VERSION,
            source: format!("bench-{}", i / PER_SERVICE),
            seq: *seq,
            layer: Layer::System,
            idc: "idc1".into(),
            service: svc.clone(),
            samples: (i..i + n)
                .map(|k| Sample {
                    scene: None,
                    link: None,
                    instance: Some(format!("i{}", k % PER_SERVICE / 10)),
                    metric: format!("m{}", k % 10),
                    labels: Default::default(),
                    ts,
                    value: value_at(k, ts),
                })
                .collect(),
        };
        (subjects.indicators(Layer::System, "idc1", &svc), b)
    })
}

/// Series `k`'s value at `ts`: a steady series with a little noise, no
/// anomaly.
fn value_at(k: usize, ts: i64) -> f64 {
    100.0 + ((k as i64 * 7919 + ts) % 13) as f64 * 0.1
}

/// Publishes rounds of `series` series as fast as it can for `secs`;
/// returns the samples published.
async fn publish(
    bus: &Bus,
    series: usize,
    secs: f64,
    start_ts: i64,
    encoding: Encoding,
) -> anyhow::Result<u64> {
    let t = Instant::now();
    let mut seq = 0;
    let mut published = 0u64;
    let mut ts = start_ts;
    // The batches are made once and only their sequence numbers, times and
    // values change from round to round, as an agent's do: what the bench
    // measures is the pipe and the brain, not the publisher's formatting
    // of names, which shares their two cores.
    let mut batches: Vec<(String, IndicatorBatch)> = round_batches(series, ts, &mut seq).collect();
    while t.elapsed().as_secs_f64() < secs {
        for (i, (subject, b)) in batches.iter_mut().enumerate() {
            seq += 1;
            b.seq = seq;
            for (j, s) in b.samples.iter_mut().enumerate() {
                s.ts = ts;
                s.value = value_at(i * BATCH + j, ts);
            }
            let payload = encode_batch(b, encoding).expect("a bench batch encodes");
            bus.publish(subject, payload).await?;
        }
        published += series as u64;
        // One millisecond of event time a round: the clock barely moves
        // however fast the rounds go (timestamps stay within the skew bound).
        ts += 1;
    }
    bus.flush().await?;
    Ok(published)
}

/// Waits until `taken` reaches `want` or stops moving for a second;
/// returns the instant of the last progress.
async fn drain(taken: &AtomicU64, want: u64) -> Instant {
    let mut last = taken.load(Ordering::Relaxed);
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = taken.load(Ordering::Relaxed);
        if now != last {
            (last, at) = (now, Instant::now());
        }
        if now >= want || at.elapsed() > Duration::from_secs(1) {
            return at;
        }
    }
}

/// The brain's configuration for a bench: a temporary store, series caps
/// out of the way, no models.
fn bench_config(store: std::path::PathBuf) -> BrainConfig {
    let mut cfg = BrainConfig {
        store,
        playbooks: crate::paths::playbooks(),
        models: None,
        ..BrainConfig::default()
    };
    cfg.series.max_total = 5_000_000;
    cfg.series.max_per_source = 5_000_000;
    cfg.series.max_per_service = 5_000_000;
    cfg
}

/// Measures the raw pipe and the brain over the NATS server at `url`,
/// the batches encoded as `encoding` says.
pub async fn throughput(
    url: &str,
    series: usize,
    secs: f64,
    encoding: Encoding,
) -> anyhow::Result<Throughput> {
    let bus: Bus = Arc::new(selfheal_bus::NatsTransport::connect(url, "bench-publisher").await?);
    let subjects = Subjects::default();

    // The raw pipe: decode and validate each batch, count its samples.
    let raw_bus: Bus = Arc::new(selfheal_bus::NatsTransport::connect(url, "bench-raw").await?);
    let mut sub = raw_bus.subscribe(&subjects.all_indicators()).await?;
    raw_bus.flush().await?;
    let raw = Arc::new(AtomicU64::new(0));
    let r = raw.clone();
    let reader = tokio::spawn(async move {
        let limits = Limits::default();
        while let Some(m) = sub.next().await {
            if let Ok(b) = decode_batch(&m.payload, &limits, wall_ms()) {
                r.fetch_add(b.samples.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let published = publish(&bus, series, secs, wall_ms(), encoding).await?;
    let end = drain(&raw, published).await;
    let raw_cpu_s = cpu_seconds() - cpu;
    let raw_taken = raw.load(Ordering::Relaxed);
    let raw_rate = raw_taken as f64 / end.duration_since(t).as_secs_f64();
    reader.abort();
    drop(raw_bus);

    // The brain.
    let dir = tempfile::tempdir()?;
    let brain_bus: Bus = Arc::new(selfheal_bus::NatsTransport::connect(url, "bench-brain").await?);
    let brain = Brain {
        config: bench_config(dir.path().join("bench.db")),
        bus: brain_bus.clone(),
        subjects: subjects.clone(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn()
    .await?;
    brain_bus.flush().await?;
    let stats = brain.stats.clone();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let published_b = publish(&bus, series, secs, wall_ms(), encoding).await?;
    let end = drain(&stats.samples_detected, published_b).await;
    let brain_cpu_s = cpu_seconds() - cpu;
    let brain_taken = stats.samples_detected.load(Ordering::Relaxed);
    let brain_batches = stats.batches.load(Ordering::Relaxed);
    let brain_batches_read_in_place = stats.batches_read_in_place.load(Ordering::Relaxed);
    let brain_rate = brain_taken as f64 / end.duration_since(t).as_secs_f64();
    brain.shutdown().await;
    Ok(Throughput {
        series,
        batch_samples: BATCH,
        published: published.max(published_b),
        raw_taken,
        raw_samples_per_s: raw_rate,
        brain_taken,
        brain_samples_per_s: brain_rate,
        ratio: brain_rate / raw_rate,
        encoding,
        batch_bytes: round(BATCH, wall_ms(), &mut 0, encoding)
            .next()
            .map_or(0, |(_, b)| b.len()),
        raw_published: published,
        brain_published: published_b,
        raw_cpu_s,
        brain_cpu_s,
        publisher_reuses_batches: true,
        brain_batches,
        brain_batches_read_in_place,
    })
}

/// CPU seconds this process has spent, every thread, user and system
/// (`/proc/self/stat`, in the kernel's clock ticks of 1/100 s).
pub fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command name, which may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resident set of this process, bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Feeds a brain on the in-process bus `steps` series counts in turn (each
/// series a few samples), and reads the resident memory after each.
pub async fn memory(steps: &[usize]) -> anyhow::Result<Vec<MemoryStep>> {
    let dir = tempfile::tempdir()?;
    let bus: Bus = Arc::new(LocalTransport::default());
    // Shards enough for every series to have a detector (each takes at
    // most MAX_SERIES_PER_SHARD): the figure is a detected series, all in.
    let most = steps.iter().copied().max().unwrap_or(0);
    let config = BrainConfig {
        shards: most
            .div_ceil(selfheal_brain::detect::shard::MAX_SERIES_PER_SHARD)
            .max(2),
        ..bench_config(dir.path().join("bench.db"))
    };
    let brain = Brain {
        config,
        bus: bus.clone(),
        subjects: Subjects::default(),
        topology: selfheal_sim::default_topology(),
    }
    .spawn()
    .await?;
    let stats = brain.stats.clone();
    let mut out: Vec<MemoryStep> = Vec::new();
    let start = wall_ms();
    let mut seq = 0;
    let mut fed = 0u64;
    for (step, &n) in steps.iter().enumerate() {
        // A few samples per series: past the first, the detector and the
        // recent ring hold state. Each step's samples come after the last
        // step's, so the series seen before take them too.
        // Sent in slices the brain takes before the next comes, as a
        // subscription's bounded queue would hand them over: what stays
        // resident is the brain's, not a backlog of this bench's payloads
        // freed a moment later.
        for r in 0..4 {
            let ts = start + 10 * step as i64 + r;
            for (i, (subject, payload)) in round(n, ts, &mut seq, Encoding::Json).enumerate() {
                bus.publish(&subject, payload).await?;
                fed += BATCH.min(n - i * BATCH) as u64;
                if (i + 1) % SLICE == 0 {
                    drain(&stats.samples_detected, fed).await;
                }
            }
        }
        drain(&stats.samples_detected, fed).await;
        let rss = rss_bytes();
        let per = out
            .last()
            .map(|p| (rss as f64 - p.rss_bytes as f64) / (n - p.series) as f64);
        out.push(MemoryStep {
            series: n,
            rss_bytes: rss,
            bytes_per_series: per,
            rss_per_series: rss as f64 / n.max(1) as f64,
        });
    }
    brain.shutdown().await;
    Ok(out)
}
