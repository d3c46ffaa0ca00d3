//! `selfheal replay`: runs the brain (same code, virtual clock, dry run)
//! over recorded data and writes the incidents with their ranked hypotheses
//! (docs/replay.md).

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with metrics.csv (long, a row per pod or service, or
    /// wide) or a metrics/ directory of such CSV files, topology.toml or
    /// dependencies.csv, and optionally changes.jsonl and hotkeys.csv.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where to write the incidents (JSON; default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Brain configuration (TOML); its store is replaced by a temporary one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Refuse the recording at the first empty, NaN or infinite value
    /// (by default such a value is a gap: skipped and counted).
    #[arg(long)]
    pub strict: bool,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        dir,
        out,
        config,
        strict,
    } = args;
    let mut cfg: BrainConfig = brain_config(config.as_ref())?;
    let tmp = selfheal::replay::scratch()?;
    cfg.store = tmp.path().join("replay.db");
    let rec = selfheal::replay::read_with(&dir, selfheal::replay::ReadOptions { strict })?;
    let rows = rec.rows;
    if !rec.names.changed.is_empty() {
        eprintln!(
            "names mapped to wire-safe names ({}): {}",
            rec.names.changed.len(),
            rec.names
                .changed
                .iter()
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(g) = rec.gap_summary() {
        eprintln!("{g}");
    }
    if let Some(c) = rec.counters.summary() {
        eprintln!("{c}");
    }
    let t = std::time::Instant::now();
    let incidents = selfheal::replay::run_alone(rec, cfg).await?;
    let json = serde_json::to_string_pretty(&incidents)?;
    match out {
        Some(p) => {
            std::fs::write(&p, json + "\n").with_context(|| format!("writing {}", p.display()))?
        }
        None => println!("{json}"),
    }
    eprintln!(
        "replayed {rows} rows in {:.3} s: {} incident(s)",
        t.elapsed().as_secs_f64(),
        incidents.len()
    );
    for i in &incidents {
        eprintln!(
            "  {} opened {} {}: {} on {} ({:.0}%)",
            i.incident.id,
            i.incident.opened_ts,
            i.incident.state,
            i.incident.cause.as_deref().unwrap_or("-"),
            i.incident.target.as_deref().unwrap_or("-"),
            100.0 * i.incident.confidence.unwrap_or(0.0)
        );
    }
    Ok(())
}
