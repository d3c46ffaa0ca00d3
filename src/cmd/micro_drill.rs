//! `selfheal micro-drill`: drills generic root-cause localization on the
//! simulator's generic microservice world (random service graphs of 8-30
//! services, Kubernetes-style names; cpu_hog, memory_leak, network_delay,
//! packet_loss, error_returns) through replay.

use super::prelude::*;
use selfheal_sim::micro::{MicroFault, MicroShape};

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
    /// A rougher world for every scenario: wandering noise, spikes,
    /// missing samples, faults of random strength (see
    /// `selfheal_sim::micro::MicroScenario::rough`).
    #[arg(long)]
    pub rough: bool,
    /// Seconds between samples for every scenario (default: each
    /// scenario's own); the normal stretch and the fault keep their
    /// number of steps.
    #[arg(long)]
    pub step: Option<u64>,
    /// Write every recording wide, as root-cause benchmark suites export
    /// theirs: a column per service and metric (`cartservice_cpu`,
    /// `cartservice_latency-90`...), service totals only, no error series,
    /// scraped every 5 s (`selfheal_sim::micro::MicroShape::Wide`).
    /// `error_returns`, which nothing in that form shows, is left out.
    #[arg(long)]
    pub wide: bool,
    /// Write every recording in the other wide form benchmark suites
    /// ship: `_cpu`, `_mem`, `_latency` (the mean), `_load` and `_error`
    /// per service, and the time column again as `time.1`
    /// (`selfheal_sim::micro::MicroShape::WideLoad`). The error column
    /// shows error returns; the disk hog, which nothing in that form
    /// shows, is left out.
    #[arg(long, conflicts_with = "wide")]
    pub wide_load: bool,
    /// Change notices in every recording (`changes.jsonl`): healthy
    /// deploys close before each fault, of a service that calls the
    /// faulty one and of another, and one long before; with `--random N`,
    /// N more scenarios whose fault is a bad deploy. The report adds
    /// change blame: precision and recall.
    #[arg(long)]
    pub changes: bool,
    /// Write the traffic, errors, network and disk series of the pods
    /// form as the cumulative counters services expose, exported raw
    /// without `rate()` (`requests_total`, `errors_total`...; one service
    /// restarting a third of the way in), as replay reads counters
    /// (docs/replay.md).
    #[arg(long, conflicts_with_all = ["wide", "wide_load"])]
    pub counters: bool,
    /// Write each service's median latency and request rate of the pods
    /// form as a request timer's cumulative counters
    /// (`http_server_requests_seconds_count` and `_sum`, as Micrometer
    /// exposes a timer; one service restarting a third of the way in), as
    /// replay reads them (docs/replay.md).
    #[arg(long, conflicts_with_all = ["wide", "wide_load"])]
    pub timers: bool,
    /// Also write the service mesh's median latency of each call edge as
    /// its caller's and its callee's proxies report it
    /// (`metrics/source_50.csv`, `metrics/destination_50.csv`, a column
    /// `<caller>_<callee>` per edge, as Nezha ships them), beside the same
    /// metrics.
    #[arg(long, conflicts_with_all = ["wide", "wide_load"])]
    pub edge_latency: bool,
    /// Every scenario in a larger world: 31 to 64 services (the size of
    /// the largest benchmark applications, Train Ticket's 64), named
    /// `ts-<name>-service` as Train Ticket names its own.
    #[arg(long)]
    pub large: bool,
    /// Every fault on the entry service, the front end users call, rather
    /// than on a service it calls.
    #[arg(long)]
    pub at_entry: bool,
    /// Brain configuration (TOML); its store is replaced.
    #[arg(long)]
    pub config: Option<PathBuf>,
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
        rough,
        step,
        wide,
        wide_load,
        changes,
        counters,
        timers,
        edge_latency,
        large,
        at_entry,
        config,
    } = args;
    let cfg: BrainConfig = brain_config(config.as_ref())?;
    let scenarios = match random {
        Some(n) => {
            let mut v = selfheal_sim::micro::random(n, seed);
            if changes {
                v.extend(selfheal_sim::micro::random_bad_deploys(n, seed));
            }
            v
        }
        None => {
            let dir = selfheal::existing(dir);
            selfheal_sim::micro::load_dir(&dir).map_err(anyhow::Error::msg)?
        }
    };
    let scenarios: Vec<_> = scenarios
        .into_iter()
        // What the form cannot show is left out: error returns without an
        // error series, a disk hog without a disk one.
        .filter(|s| !(wide && s.fault == MicroFault::ErrorReturns))
        .filter(|s| !(wide_load && s.fault == MicroFault::DiskHog))
        .map(|mut s| {
            s.rough |= rough;
            s.changes |= changes;
            s.counters |= counters;
            s.timers |= timers;
            s.edge_latency |= edge_latency;
            s.at_entry |= at_entry;
            if large {
                s = s.larger();
            }
            if wide {
                s.shape = MicroShape::Wide;
            }
            if wide_load {
                s.shape = MicroShape::WideLoad;
            }
            match step {
                Some(step) => s.at_step(step),
                None => s,
            }
        })
        .collect();
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
