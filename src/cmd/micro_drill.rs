//! `selfheal micro-drill`: drills generic root-cause localization on the
//! simulator's generic microservice world (random service graphs of 8-30
//! services, Kubernetes-style names; cpu_hog, memory_leak, network_delay,
//! packet_loss, error_returns) through replay.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of micro-world scenarios.
    #[arg(long, default_value = "sim/scenarios/micro")]
    pub dir: PathBuf,
    /// Write the report (JSON) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Fail (exit 1) when top-1 is below this share.
    #[arg(long)]
    pub min_top1: Option<f64>,
    /// Keep each scenario's recording (replay's format, with
    /// `truth.json`) under this directory.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Replay without the call graph (no `dependencies.csv`), as
    /// metrics-only recordings come.
    #[arg(long)]
    pub no_graph: bool,
    /// Instead of `--dir`: this many seeded random scenarios of each fault
    /// kind (graphs of 8-30 services), a wider drill than the catalogue.
    #[arg(long)]
    pub random: Option<usize>,
    /// The seed of `--random`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        dir,
        json,
        min_top1,
        keep,
        no_graph,
        random,
        seed,
    } = args;
    let cfg = BrainConfig {
        playbooks: selfheal::paths::playbooks(),
        ..BrainConfig::default()
    };
    let scenarios = match random {
        Some(n) => selfheal_sim::micro::random(n, seed),
        None => {
            let dir = selfheal::existing(dir);
            selfheal_sim::micro::load_dir(&dir).map_err(anyhow::Error::msg)?
        }
    };
    if scenarios.is_empty() {
        input!("no scenario to drill");
    }
    let t = std::time::Instant::now();
    let report = selfheal::micro::drill(&scenarios, &cfg, keep.as_deref(), !no_graph, |r| {
        eprintln!(
            "{} ({} services): {} ranked {} by {}; blamed {}",
            r.name,
            r.services,
            r.truth,
            r.rank.map_or("-".into(), |k| k.to_string()),
            r.cause.as_deref().unwrap_or("-"),
            r.ranked.join(", ")
        );
    })
    .await?;
    print!("{}", selfheal::micro::markdown(&report));
    eprintln!(
        "{} scenarios in {:.1} s",
        report.all.scenarios,
        t.elapsed().as_secs_f64()
    );
    if let Some(p) = json {
        write_json(&p, &report)?;
    }
    if let Some(min) = min_top1
        && report.all.top1 < min
    {
        gate!(
            "top-1 {:.0} % is below the bar of {:.0} %",
            100.0 * report.all.top1,
            100.0 * min
        );
    }
    Ok(())
}
