//! `selfheal train`: fits a multivariate model per service on normal
//! history and writes them, one JSON file per service.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// A recorded directory (its `metrics.csv`) or a long-form CSV file;
    /// repeat to train on several.
    #[arg(long, required = true)]
    pub from: Vec<PathBuf>,
    /// Directory to write the models to.
    #[arg(long, default_value = "models")]
    pub out: PathBuf,
    /// Gaussian mixture components per service.
    #[arg(long, default_value_t = 3)]
    pub components: usize,
    /// Seed of the fit.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        from,
        out,
        components,
        seed,
    } = args;
    if !(1..=16).contains(&components) {
        input!("--components must be in 1..=16, not {components}");
    }
    let cfg = selfheal_models::FitConfig {
        components,
        seed,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let report = selfheal::train::train(&from, &out, &cfg)?;
    for e in &report.skipped {
        eprintln!("skipped {e}");
    }
    for p in &report.written {
        println!("{}", p.display());
    }
    eprintln!(
        "{} model(s) in {:.2} s",
        report.written.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
