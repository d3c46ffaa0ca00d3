//! `selfheal demo`: runs the whole loop in one process and heals a fault
//! live.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Use this NATS server instead of the in-process bus.
    #[arg(long)]
    pub nats: Option<String>,
    /// Platform seconds per wall second.
    #[arg(long, default_value_t = 10.0)]
    pub speed: f64,
    /// Scenario file (default: the shipped bank-channel degradation).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Where to keep the store (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Record actions without sending them.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        nats: url,
        speed,
        scenario: sc,
        data_dir,
        dry_run,
    } = args;
    check_speed(speed)?;
    let topo = topology(None)?;
    let sc = scenario(sc.as_ref(), &topo)?;
    let tmp = tempfile::tempdir()?;
    let dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let bus: Bus = match &url {
        Some(u) => nats(u, "selfheal-demo").await?,
        None => Arc::new(LocalTransport::default()),
    };
    let mut opts = selfheal::loop_options(sc, &dir, speed);
    opts.brain.guard.dry_run = dry_run;
    let _ = std::fs::remove_file(&opts.brain.store);
    run_loop(bus, opts, url.is_some()).await
}

use selfheal::{LoopOptions, TimelineEntry};

async fn run_loop(bus: Bus, opts: LoopOptions, over_nats: bool) -> anyhow::Result<()> {
    let name = opts.scenario.name.clone();
    let store = opts.brain.store.clone();
    println!(
        "selfheal demo: scenario {name}, {}x real time, {} bus, store {}",
        opts.speed,
        if over_nats { "NATS" } else { "in-process" },
        store.display()
    );
    println!(
        "{:>9}  {:<8}  {:<14}  what happened",
        "time", "who", "event"
    );
    let mut t0 = None;
    let out = selfheal::run_loop(bus, opts, |e: &TimelineEntry| {
        let start = *t0.get_or_insert(e.ts);
        println!(
            "{:>8.1}s  {:<8}  {:<14}  {}",
            (e.ts - start) as f64 / 1000.0,
            e.source,
            e.kind,
            e.text
        );
    })
    .await?;
    println!();
    println!("summary");
    let secs =
        |ms: Option<i64>| ms.map_or("-".to_string(), |m| format!("{:.1}s", m as f64 / 1000.0));
    println!(
        "  MTTD (fault → incident opened):        {}",
        secs(out.mttd_ms())
    );
    println!(
        "  MTTR (fault → recovery verified):      {}",
        secs(out.mttr_ms())
    );
    println!(
        "  platform back within SLO after fault:  {}",
        secs(out.truth.ttr_ms())
    );
    println!(
        "  incidents: {}, actions executed: {}",
        out.incidents.len(),
        out.executed_actions()
    );
    println!(
        "  payments: {:.0} attempted, {:.0} failed ({:.3}%)",
        out.truth.attempted,
        out.truth.failed,
        100.0 * out.truth.failed / out.truth.attempted.max(1.0)
    );
    for (k, v) in &out.truth.scene_success {
        println!("  {k}: success rate {:.2}% over the last 10 s", v * 100.0);
    }
    let has_fault = !out.truth.faults.is_empty();
    if has_fault && out.truth.recovered_ms.is_none() {
        gate!("the fault was not healed");
    }
    if !has_fault && out.executed_actions() > 0 {
        gate!("actions were executed on a run without a fault");
    }
    println!(
        "  healed: {}",
        if has_fault { "yes" } else { "nothing to heal" }
    );
    Ok(())
}
