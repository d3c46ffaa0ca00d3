//! `selfheal kpi`: the continuity report from a store — the share of
//! incidents found by monitoring, time to detect, failover success and
//! time, self-healing success, payments lost, time to diagnose, to respond
//! and to recover (`selfheal_brain::kpi`, docs/kpi.md).

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The store (SQLite file).
    #[arg(long, default_value = "selfheal.db")]
    pub store: PathBuf,
    /// The period: incidents opened within this long before `--until`
    /// (`30d`, `12h`, `90m`, `3600s`).
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// The period's end: `YYYY-MM-DD[ HH:MM[:SS]]` (UTC), RFC 3339, epoch
    /// seconds or milliseconds, or `latest` (the last incident's opening,
    /// for a store of a replay or a drill); default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Write the whole report as JSON (every incident's figures too).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Write the headline figures as CSV (`figure,value,unit,n`).
    #[arg(long)]
    pub csv: bool,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let period = match selfheal_brain::kpi::parse_period(&args.since) {
        Ok(p) => p,
        Err(e) => input!("--since: {e}"),
    };
    if !args.store.exists() {
        input!("no store at {}", args.store.display());
    }
    let store = selfheal_brain::store::Store::open(&args.store)
        .with_context(|| format!("opening {}", args.store.display()))?;
    let until = match args.until.as_deref() {
        None => selfheal_bus::wall_ms(),
        Some("latest") => {
            let all = store.continuity_facts(i64::MIN, i64::MAX)?;
            all.last()
                .map_or(selfheal_bus::wall_ms(), |f| f.opened_ts + 1)
        }
        Some(t) => match selfheal_bus::time::parse_timestamp(t) {
            Some(ms) => ms,
            None => input!(
                "--until: {t:?} is not a time (YYYY-MM-DD HH:MM, RFC 3339, epoch, or latest)"
            ),
        },
    };
    let since = until - period;
    let facts = store.continuity_facts(since, until)?;
    let k = selfheal_brain::kpi::Continuity::of(&facts, since, until);
    let out = if args.json {
        serde_json::to_string_pretty(&k)? + "\n"
    } else if args.csv {
        k.csv()
    } else {
        text(&k)
    };
    // A reader that stops early (`| head`) is not an error.
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The report for people.
fn text(k: &selfheal_brain::kpi::Continuity) -> String {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
    let d = |x: &selfheal_brain::kpi::Durations| match (x.median_s, x.p90_s) {
        (Some(m), Some(p)) => format!("median {m:.1} s, p90 {p:.1} s (n = {})", x.n),
        _ => "-".to_string(),
    };
    format!(
        "incidents: {} ({} found by monitoring, {} reported by people)\n\
         found by monitoring: {}\n\
         time to detect: {}\n\
         failover: {} of {} succeeded ({}); time {}\n\
         self-healing: {} of {} healed ({})\n\
         payments lost: {:.0} of {:.0} attempted (n = {}){}\n\
         time to diagnose: {}\n\
         time to respond: {}\n\
         time to recover: {}\n",
        k.incidents,
        k.found_by_monitoring,
        k.reported_by_people,
        pct(k.found_by_monitoring_share),
        d(&k.time_to_detect),
        k.failovers_succeeded,
        k.failovers,
        pct(k.failover_success_rate),
        d(&k.failover_time),
        k.healed,
        k.healing_attempted,
        pct(k.self_healing_success_rate),
        k.payments_lost,
        k.payments_attempted,
        k.impact_measured,
        if k.impact_partial > 0 {
            format!(
                " ({} measured over part of their window: a lower bound)",
                k.impact_partial
            )
        } else {
            String::new()
        },
        d(&k.time_to_diagnose),
        d(&k.time_to_respond),
        d(&k.time_to_recover),
    )
}
