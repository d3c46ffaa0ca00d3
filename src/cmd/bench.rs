//! `selfheal bench`: measures speeds and loop outcomes (run with --release
//! on an idle machine).

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Seeds per scenario for the loop runs.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Platform seconds per wall second for the loop runs.
    #[arg(long, default_value_t = 100.0)]
    pub speed: f64,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args { seeds, speed } = args;
    check_speed(speed)?;
    println!(
        "streaming detector: {} bytes of state per series (throughput: cargo bench -p selfheal-brain --bench detector)",
        selfheal_brain::detect::Detector::STATE_BYTES
    );
    let (p50, p99, max) = selfheal::bench::playbook_overhead(2000)?;
    println!(
        "playbook plan, per run (9 library playbooks x 2000): p50 {p50:.1} us, p99 {p99:.1} us, max {max:.0} us"
    );
    selfheal::bench::models_on_scenarios()?;
    println!(
        "indicator decode + validation: {:.2} M samples/s",
        selfheal::bench::decode_throughput() / 1e6
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
