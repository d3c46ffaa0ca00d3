//! `selfheal record`: runs a scenario on the simulated platform alone
//! (nothing repairs it) and records its indicators as `metrics.csv` (long
//! form) and its changes as `changes.jsonl`.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario file (default: the shipped bank-channel degradation).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Platform topology (TOML; default: the shipped one).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Directory to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        scenario: sc,
        topology: t,
        out,
    } = args;
    let topo = topology(t.as_ref())?;
    let sc = scenario(sc.as_ref(), &topo)?;
    let rows = selfheal::train::record(&topo, &sc, &out)?;
    eprintln!(
        "recorded {rows} samples of {} ({} s) into {}",
        sc.name,
        sc.duration_s,
        out.display()
    );
    Ok(())
}
