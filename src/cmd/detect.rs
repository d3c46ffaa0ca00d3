//! `selfheal detect`: scores NAB-style CSV files (`timestamp,value`) with
//! the streaming detector the brain uses; writes
//! `timestamp,value,anomaly_score` at the same relative paths.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// A CSV file or a directory of them.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scored files.
    #[arg(long)]
    pub output: PathBuf,
    /// Detector configuration (TOML, the brain's `[detector]` keys).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        input,
        output,
        config,
    } = args;
    let cfg: selfheal_brain::detect::DetectorConfig = match config {
        Some(p) => read_toml(&p)?,
        None => Default::default(),
    };
    let problems = cfg.validate();
    if !problems.is_empty() {
        input!("invalid detector configuration:\n{}", problems.join("\n"));
    }
    let t = std::time::Instant::now();
    let (files, rows) = selfheal::detect::detect(&input, &output, &cfg)?;
    eprintln!(
        "scored {rows} points in {files} files in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
