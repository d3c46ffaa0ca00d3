//! `selfheal patrol`: the inspections before a big sale — store, guards,
//! on-call, playbooks, capacity at the expected peak, every playbook
//! rehearsed at that peak, the bus — each with a verdict, its evidence and
//! the fix (`selfheal::patrol`, docs/patrol.md). Exit code 0, 1 or 2 for
//! pass, warn or fail, so that a release pipeline can gate on it.

use super::prelude::*;
use selfheal::patrol::{Plan, Verdict};

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The brain's configuration (TOML) to inspect; default: the shipped
    /// defaults, as `selfheal brain` would start.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The topology (default: the simulator's payment platform).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// When the event begins: `YYYY-MM-DD HH:MM` (UTC), RFC 3339 or epoch.
    #[arg(long)]
    pub event: Option<String>,
    /// How long it lasts, hours.
    #[arg(long, default_value_t = 24.0)]
    pub hours: f64,
    /// The expected peak, × normal demand.
    #[arg(long, default_value_t = 1.0)]
    pub peak: f64,
    /// A rehearsal must heal within this, s.
    #[arg(long, default_value_t = 60.0)]
    pub mttr_target: f64,
    /// A NATS server the deployment uses, to check it answers.
    #[arg(long)]
    pub nats: Option<String>,
    /// Skip the simulator (capacity at the peak and the rehearsals).
    #[arg(long)]
    pub no_sim: bool,
    /// A recording of a normal day (replay's format, docs/replay.md) the
    /// brain must stay quiet on.
    #[arg(long)]
    pub normal_day: Option<PathBuf>,
    /// A running brain's HTTP API (`http://host:port`), to read its
    /// counters.
    #[arg(long)]
    pub brain: Option<String>,
    /// Models older than this many days are stale.
    #[arg(long, default_value_t = 30.0)]
    pub models_max_age_days: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Keep patrolling this often (`1h`, `30m`, `10s`) until the event
    /// begins, posting to the on-call channels when a verdict changes.
    #[arg(long)]
    pub every: Option<String>,
    /// With `--every`: stop after this many rounds.
    #[arg(long)]
    pub rounds: Option<u32>,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(args.peak > 0.0 && args.peak <= 10.0) {
        input!(
            "--peak {}: a multiplier of normal demand in (0, 10]",
            args.peak
        );
    }
    if !(args.hours > 0.0 && args.hours <= 24.0 * 31.0) {
        input!("--hours {}: from a moment to a month", args.hours);
    }
    if !(args.mttr_target.is_finite() && args.mttr_target > 0.0) {
        input!("--mttr-target must be > 0");
    }
    let event = match args.event.as_deref() {
        None => None,
        Some(t) => match selfheal_bus::time::parse_timestamp(t) {
            Some(ms) => Some((ms, ms + (args.hours * 3_600_000.0) as i64)),
            None => input!("--event {t:?}: not a time (YYYY-MM-DD HH:MM UTC, RFC 3339 or epoch)"),
        },
    };
    let brain = brain_config(args.config.as_ref())?;
    let problems = brain.validate();
    if !problems.is_empty() {
        input!("invalid brain configuration:\n{}", problems.join("\n"));
    }
    let plan = Plan {
        brain,
        topology: topology(args.topology.as_ref())?,
        event,
        peak: args.peak,
        mttr_target_s: args.mttr_target,
        nats: args.nats.clone(),
        simulate: !args.no_sim,
        normal_day: args.normal_day.clone(),
        brain_url: args.brain.clone(),
        models_max_age_days: args.models_max_age_days,
    };
    let every = match args.every.as_deref().map(selfheal_brain::kpi::parse_period) {
        None => None,
        Some(Ok(ms)) => Some(std::time::Duration::from_millis(ms as u64)),
        Some(Err(e)) => input!("--every: {e}"),
    };
    if args.rounds == Some(0) {
        input!("--rounds must be at least 1");
    }
    let mut last: Option<selfheal::patrol::Report> = None;
    let mut round = 0u32;
    let report = loop {
        round += 1;
        let report = one_round(&plan, &args).await?;
        if let Some(before) = &last {
            let changed = selfheal::patrol::changes(before, &report);
            if !changed.is_empty() {
                println!("round {round}: {} verdict(s) changed", changed.len());
                for c in &changed {
                    println!("  {c}");
                }
                for failed in selfheal::patrol::announce(&plan, &changed).await {
                    eprintln!("warning: the change was not posted to {failed}");
                }
            }
        }
        let Some(every) = every else {
            break report;
        };
        let next = selfheal_bus::wall_ms() + every.as_millis() as i64;
        let event_started = plan.event.is_some_and(|(from, _)| next >= from);
        if event_started || args.rounds.is_some_and(|n| round >= n) {
            break report;
        }
        println!(
            "round {round} done: {}; the next in {}",
            verdict_word(report.verdict),
            args.every.as_deref().unwrap_or("")
        );
        last = Some(report);
        tokio::time::sleep(every).await;
    };
    let count = |v: Verdict| report.checks.iter().filter(|c| c.verdict == v).count();
    let summary = format!(
        "{} pass, {} warn, {} fail",
        count(Verdict::Pass),
        count(Verdict::Warn),
        count(Verdict::Fail)
    );
    match report.verdict {
        Verdict::Pass => {
            println!("ready: {summary}");
            Ok(())
        }
        Verdict::Warn => gate!("ready with warnings: {summary}"),
        Verdict::Fail => Err(anyhow::Error::new(super::NotReady(format!(
            "not ready: {summary}"
        )))),
    }
}

/// One patrol: run with a spinner, printed, written where asked.
async fn one_round(plan: &Plan, args: &Args) -> anyhow::Result<selfheal::patrol::Report> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} patrolling: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = selfheal::patrol::patrol(plan, |step| bar.set_message(step.to_string())).await;
    bar.finish_and_clear();
    let report = report?;
    for c in &report.checks {
        let v = verdict_word(c.verdict);
        println!("{v} {} · {}: {}", c.area, c.name, c.evidence);
        if !c.fix.is_empty() {
            println!("     fix: {}", c.fix);
        }
    }
    if let Some(p) = &args.json {
        write_json(p, &report)?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, selfheal::patrol::html(&report))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(report)
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
    }
}
