//! `selfheal drill`: runs scenarios through the whole loop on the virtual
//! clock, in lockstep, and scores them against the platform's ground truth.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Scenario files (default: every file in sim/scenarios).
    pub files: Vec<PathBuf>,
    /// Upper bound on platform seconds per wall second (default: as
    /// fast as the pipeline goes).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Fail a scenario whose time to detect is longer, s.
    #[arg(long)]
    pub max_ttd: Option<f64>,
    /// Fail a scenario whose time to recover is longer, s.
    #[arg(long)]
    pub max_ttr: Option<f64>,
    /// Fail a scenario whose top diagnosis is wrong.
    #[arg(long)]
    pub require_diagnosis: bool,
    /// Fail a scenario whose actions do not include the expected cure.
    #[arg(long)]
    pub require_cure: bool,
    /// Fail a scenario with more harmful actions than this.
    #[arg(long)]
    pub max_harmful: Option<usize>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        files,
        speed,
        json,
        max_ttd,
        max_ttr,
        require_diagnosis,
        require_cure,
        max_harmful,
    } = args;
    if let Some(x) = speed {
        check_speed(x)?;
    }
    let th = selfheal::drill::Thresholds {
        max_ttd_s: max_ttd,
        max_ttr_s: max_ttr,
        require_diagnosis,
        require_cure,
        max_harmful,
    };
    let files = if files.is_empty() {
        selfheal::drill::shipped()
    } else {
        files
    };
    let scenarios = selfheal::drill::load(&files, &topology(None)?)
        .map_err(|e| anyhow::Error::new(super::BadInput(format!("{e:#}"))))?;
    let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    for s in &scenarios {
        bar.set_message(s.name.clone());
        results.push(selfheal::drill::drill(s, speed, &th).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print!("{}", selfheal::drill::table(&results));
    print!("\n{}", selfheal::drill::diagnosis_summary(&results));
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        gate!(
            "{} of {} scenario(s) below the pass marks: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok(())
}
