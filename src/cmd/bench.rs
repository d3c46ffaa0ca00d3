//! `selfheal bench`: measures speeds and loop outcomes (run with --release
//! on an idle machine).

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// One bench alone (without: the speeds and loop outcomes below).
    #[command(subcommand)]
    pub what: Option<What>,
    /// Seeds per scenario for the loop runs.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Platform seconds per wall second for the loop runs.
    #[arg(long, default_value_t = 100.0)]
    pub speed: f64,
}

/// A bench of its own.
#[derive(clap::Subcommand)]
pub enum What {
    /// The brain's ingest beside the raw NATS pipe on the same payloads,
    /// in the same run, and its memory per series.
    Ingest(IngestArgs),
}

/// `bench ingest`'s arguments.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// A running NATS server (default: start nats-server on a free
    /// loopback port: $NATS_SERVER, .venv-nats/bin/nats-server or PATH).
    #[arg(long)]
    pub nats: Option<String>,
    /// Distinct series published in the throughput runs (repeatable).
    #[arg(long, default_values_t = [10_000])]
    pub series: Vec<usize>,
    /// How the batches are encoded (repeatable: a run each).
    #[arg(long, value_enum, default_values_t = [WireEncoding::Json, WireEncoding::Binary])]
    pub encoding: Vec<WireEncoding>,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Runs (raw pipe, then brain) per series count and encoding, one
    /// after the other: with more than one, the median ratio is printed
    /// too, steadier while the machine's own speed moves. Each run is a
    /// record of its own in the JSON.
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Series counts for the memory steps (repeatable; 0 alone skips them).
    #[arg(long, default_values_t = [10_000, 100_000, 1_000_000])]
    pub memory: Vec<usize>,
    /// Write the results (JSON) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// An indicator batch encoding, as the command line names it.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum WireEncoding {
    /// JSON.
    Json,
    /// The compact binary encoding.
    Binary,
}

impl From<WireEncoding> for selfheal_bus::Encoding {
    fn from(e: WireEncoding) -> Self {
        match e {
            WireEncoding::Json => selfheal_bus::Encoding::Json,
            WireEncoding::Binary => selfheal_bus::Encoding::Binary,
        }
    }
}

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        input!("--seconds must be in (0, 600]");
    }
    if !(1..=20).contains(&a.pairs) {
        input!("--pairs must be in [1, 20]");
    }
    if a.series.iter().any(|n| *n == 0 || *n > 5_000_000) {
        input!("--series must be 1 to 5000000");
    }
    let mut steps: Vec<usize> = a.memory.into_iter().filter(|n| *n > 0).collect();
    steps.sort_unstable();
    steps.dedup();
    // A server of our own when none is given, stopped at the end.
    let mut own = selfheal_sim::stack::procs::Procs::default();
    let url = match a.nats {
        Some(u) => u,
        None => {
            let Some(bin) = find_program(
                "NATS_SERVER",
                Some(".venv-nats/bin/nats-server"),
                "nats-server",
                &[],
            ) else {
                input!(
                    "nats-server not found: give --nats, set NATS_SERVER, or run ./test.sh once (it installs it)"
                );
            };
            let port = selfheal_sim::stack::procs::free_port()?;
            let logs = tempfile::tempdir()?;
            let mut c = std::process::Command::new(bin);
            c.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            own.spawn("nats-server", c, logs.path())?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if !selfheal_sim::stack::procs::listening(addr, std::time::Duration::from_secs(10))
                .await
            {
                anyhow::bail!("nats-server is not listening on {addr}");
            }
            format!("nats://{addr}")
        }
    };
    let mut report = selfheal::ingest_bench::IngestReport {
        throughput: Vec::new(),
        memory: Vec::new(),
        detector_state_bytes: selfheal_brain::detect::Detector::STATE_BYTES,
        scorer_state_bytes: selfheal_brain::detect::Scorer::STATE_BYTES,
    };
    // Memory first, in a process that has not run anything yet.
    if !steps.is_empty() {
        report.memory = selfheal::ingest_bench::memory(&steps).await?;
        for m in &report.memory {
            println!(
                "memory, {} series: {:.0} MiB resident ({:.0} bytes a series all in){}",
                m.series,
                m.rss_bytes as f64 / 1048576.0,
                m.rss_per_series,
                m.bytes_per_series.map_or(String::new(), |b| format!(
                    ", {b:.0} bytes per series added"
                ))
            );
        }
    }
    for (n, enc) in a
        .series
        .iter()
        .flat_map(|n| a.encoding.iter().map(move |e| (*n, *e)))
    {
        let mut ratios = Vec::new();
        for _ in 0..a.pairs {
            let t = selfheal::ingest_bench::throughput(&url, n, a.seconds, enc.into()).await?;
            println!(
                "ingest, {:?}, {} bytes a batch, {} series, batches of {}: raw NATS pipe {:.2} M samples/s ({} of {} taken, {:.1} µs CPU a sample); brain {:.2} M samples/s ({} of {} taken, {:.1} µs CPU a sample); brain / pipe {:.2}",
                t.encoding,
                t.batch_bytes,
                t.series,
                t.batch_samples,
                t.raw_samples_per_s / 1e6,
                t.raw_taken,
                t.raw_published,
                t.raw_cpu_s * 1e6 / t.raw_taken.max(1) as f64,
                t.brain_samples_per_s / 1e6,
                t.brain_taken,
                t.brain_published,
                t.brain_cpu_s * 1e6 / t.brain_taken.max(1) as f64,
                t.ratio
            );
            ratios.push(t.ratio);
            report.throughput.push(t);
        }
        if ratios.len() > 1 {
            ratios.sort_by(f64::total_cmp);
            println!(
                "ingest, {enc:?}, {n} series: brain / pipe median {:.2} over {} runs (lowest {:.2}, highest {:.2})",
                ratios[ratios.len() / 2],
                ratios.len(),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
    }
    own.stop();
    if let Some(p) = a.json {
        write_json(&p, &report)?;
    }
    Ok(())
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { what, seeds, speed } = args;
    if let Some(What::Ingest(a)) = what {
        return ingest(a).await;
    }
    check_speed(speed)?;
    println!(
        "streaming detector: {} bytes of state per series in the brain, {} with the score of `selfheal detect` (throughput: cargo bench -p selfheal-brain --bench detector)",
        selfheal_brain::detect::Detector::STATE_BYTES,
        selfheal_brain::detect::Scorer::STATE_BYTES
    );
    let (p50, p99, max) = selfheal::bench::playbook_overhead(2000)?;
    println!(
        "playbook plan, per run (9 library playbooks x 2000): p50 {p50:.1} us, p99 {p99:.1} us, max {max:.0} us"
    );
    selfheal::bench::models_on_scenarios()?;
    let [owned, in_place, binary] = selfheal::bench::decode_throughput();
    println!(
        "indicator decode + validation: JSON {:.2} M samples/s, JSON in place {:.2}, binary in place {:.2}",
        owned / 1e6,
        in_place / 1e6,
        binary / 1e6
    );
    let page = selfheal_brain::api::oncall::PAGE;
    println!(
        "on-call page: {} bytes, one request (inline CSS and script, no external resource)",
        page.len()
    );
    let mut taps = selfheal::bench::tap_to_dispatch(5).await?;
    taps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let server: Vec<String> = taps.iter().map(|t| format!("{:.2}", t.0)).collect();
    let rtt: Vec<String> = taps.iter().map(|t| format!("{:.2}", t.1)).collect();
    println!(
        "on-call tap to action dispatched, 5 runs: server side {} ms; client round trip {} ms",
        server.join(" / "),
        rtt.join(" / ")
    );
    selfheal::bench::loops(seeds, speed).await
}
