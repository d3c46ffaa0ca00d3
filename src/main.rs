//! `selfheal`: the command-line program. It only wires the crates.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use selfheal_agent::{Agent, AgentConfig};
use selfheal_brain::{Brain, BrainConfig};
use selfheal_bus::{Bus, LocalTransport, NatsTransport, Subjects, Topology};
use selfheal_sim::{Scenario, SimNode, Speed};

#[derive(Parser)]
#[command(
    name = "selfheal",
    version,
    about = "Self-healing for high-volume transaction platforms"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum PlaybookCmd {
    /// Compiles and lints playbooks (default: every one under playbooks/):
    /// syntax, meta() and plan(incident), unknown host functions, wrong
    /// argument counts. Every problem as file:line.
    Check {
        /// Playbook files.
        files: Vec<PathBuf>,
    },
    /// Runs each playbook against its fixture incidents
    /// (playbooks/**/tests/*.toml) and shows the plan it makes; then
    /// rehearses it on the simulator scenario of its fault class, through
    /// the whole loop, and reports what it did.
    Test {
        /// Fixture files (default: every one under playbooks/).
        files: Vec<PathBuf>,
        /// Fixtures only; skip the simulator rehearsals.
        #[arg(long)]
        no_sim: bool,
    },
    /// Writes the host API reference, generated from the registered
    /// functions: Markdown and Rhai definitions for editors.
    Docs {
        /// Markdown reference.
        #[arg(long, default_value = "docs/playbook-api.md")]
        out: PathBuf,
        /// Rhai definitions.
        #[arg(long, default_value = "docs/playbook-api.d.rhai")]
        defs: PathBuf,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the whole loop in one process and heals a fault live.
    Demo {
        /// Use this NATS server instead of the in-process bus.
        #[arg(long)]
        nats: Option<String>,
        /// Platform seconds per wall second.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
        /// Scenario file (default: the shipped bank-channel degradation).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Where to keep the store (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Record actions without sending them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Runs scenarios through the whole loop on the virtual clock, in
    /// lockstep, and scores them against the platform's ground truth.
    Drill {
        /// Scenario files (default: every file in sim/scenarios).
        files: Vec<PathBuf>,
        /// Upper bound on platform seconds per wall second (default: as
        /// fast as the pipeline goes).
        #[arg(long)]
        speed: Option<f64>,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Fail a scenario whose time to detect is longer, s.
        #[arg(long)]
        max_ttd: Option<f64>,
        /// Fail a scenario whose time to recover is longer, s.
        #[arg(long)]
        max_ttr: Option<f64>,
        /// Fail a scenario whose top diagnosis is wrong.
        #[arg(long)]
        require_diagnosis: bool,
        /// Fail a scenario whose actions do not include the expected cure.
        #[arg(long)]
        require_cure: bool,
        /// Fail a scenario with more harmful actions than this.
        #[arg(long)]
        max_harmful: Option<usize>,
    },
    /// Scores NAB-style CSV files (`timestamp,value`) with the streaming
    /// detector the brain uses; writes `timestamp,value,anomaly_score` at
    /// the same relative paths.
    Detect {
        /// A CSV file or a directory of them.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the scored files.
        #[arg(long)]
        output: PathBuf,
        /// Detector configuration (TOML, the brain's `[detector]` keys).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Runs a scenario on the simulated platform alone (nothing repairs
    /// it) and records its indicators as `metrics.csv` (long form) and its
    /// changes as `changes.jsonl`.
    Record {
        /// Scenario file (default: the shipped bank-channel degradation).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Platform topology (TOML; default: the shipped one).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Directory to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Reads a token on standard input and prints its SHA-256, for
    /// `change_token_sha256` (the token itself is never stored).
    HashToken,
    /// Runs the brain (same code, virtual clock, dry run) over recorded
    /// data and writes the incidents with their ranked hypotheses
    /// (docs/replay.md).
    Replay {
        /// Directory with metrics.csv, topology.toml or dependencies.csv,
        /// and optionally changes.jsonl and hotkeys.csv.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the incidents (JSON; default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Brain configuration (TOML); its store is replaced by a temporary one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Refuse the recording at the first empty, NaN or infinite value
        /// (by default such a value is a gap: skipped and counted).
        #[arg(long)]
        strict: bool,
    },
    /// Drills generic root-cause localization on the simulator's generic
    /// microservice world (random service graphs of 8-30 services,
    /// Kubernetes-style names; cpu_hog, memory_leak, network_delay,
    /// packet_loss, error_returns) through replay.
    MicroDrill {
        /// Directory of micro-world scenarios.
        #[arg(long, default_value = "sim/scenarios/micro")]
        dir: PathBuf,
        /// Write the report (JSON) here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Fail (exit 1) when top-1 is below this share.
        #[arg(long)]
        min_top1: Option<f64>,
        /// Keep each scenario's recording (replay's format, with
        /// `truth.json`) under this directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Replay without the call graph (no `dependencies.csv`), as
        /// metrics-only recordings come.
        #[arg(long)]
        no_graph: bool,
    },
    /// Measures root-cause localization on the PetShop data set: converts
    /// each case to replay's format, replays it, and reports top-1 and
    /// top-3 per traffic scenario beside a random walk over the call graph.
    Petshop {
        /// The data set's `dataset/` directory (one folder per scenario).
        #[arg(long)]
        data: PathBuf,
        /// Only this scenario (`low_traffic`, `high_traffic`...).
        #[arg(long)]
        scenario: Option<String>,
        /// At most this many cases per scenario.
        #[arg(long)]
        limit: Option<usize>,
        /// Write the report (JSON) here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Brain configuration (TOML); its store is replaced.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Keep each case's converted recording (replay's format) under
        /// this directory, as `<scenario>/<split>/<issue>/`.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Fits a multivariate model per service on normal history and writes
    /// them, one JSON file per service.
    Train {
        /// A recorded directory (its `metrics.csv`) or a long-form CSV file;
        /// repeat to train on several.
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
        /// Directory to write the models to.
        #[arg(long, default_value = "models")]
        out: PathBuf,
        /// Gaussian mixture components per service.
        #[arg(long, default_value_t = 3)]
        components: usize,
        /// Seed of the fit.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Tools for playbook authors.
    Playbook {
        #[command(subcommand)]
        cmd: PlaybookCmd,
    },
    /// Checks or shows the store's audit log (every approval, rejection,
    /// action and refusal, each entry chained to the one before by an
    /// HMAC-SHA-256 under a key kept outside the store, its head anchored
    /// outside it): `verify` fails, naming the entries, if any was edited,
    /// removed, inserted, re-chained or truncated, or if an action row was
    /// edited.
    Audit {
        /// `verify` or `show`.
        #[arg(value_parser = ["verify", "show"])]
        what: String,
        /// The store (SQLite file).
        #[arg(long, default_value = "selfheal.db")]
        store: PathBuf,
        /// The audit key (default: beside the store, `<store>.audit-key`).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// The anchors (default: beside the store, `<store>.anchors`).
        #[arg(long)]
        anchors: Option<PathBuf>,
        /// With `show`: how many of the latest entries.
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    /// Copies the store into a new file, consistently, while a brain may be
    /// writing to it (SQLite online backup), checks the copy's integrity and
    /// says what it holds. The copy is one self-contained file.
    Backup {
        /// The store (SQLite file).
        #[arg(long, default_value = "selfheal.db")]
        store: PathBuf,
        /// The new file (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Engages, releases or shows the brain's kill switch (the file named by
    /// `guard.kill_switch_file`): while engaged, no action is sent.
    KillSwitch {
        /// on, off or status.
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        /// Brain configuration (TOML) naming the kill-switch file.
        #[arg(long)]
        config: PathBuf,
        /// Why (kept in the file, shown by `status`).
        #[arg(long, default_value = "engaged by hand")]
        reason: String,
    },
    /// Measures speeds and loop outcomes (run with --release on an idle machine).
    Bench {
        /// Seeds per scenario for the loop runs.
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Platform seconds per wall second for the loop runs.
        #[arg(long, default_value_t = 100.0)]
        speed: f64,
    },
    /// Runs the brain alone, over NATS.
    Brain {
        /// NATS server URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Brain configuration (TOML; see docs/configuration.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Platform topology (TOML; default: the simulator's).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Serve /healthz and /metrics here (overrides `listen` in the config).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Subject prefix.
        #[arg(long, default_value = "selfheal")]
        prefix: String,
    },
    /// Runs an edge agent alone, over NATS.
    Agent {
        /// NATS server URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Agent configuration (TOML; see docs/configuration.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Subject prefix.
        #[arg(long, default_value = "selfheal")]
        prefix: String,
    },
    /// Runs the payment-platform simulator alone, over NATS.
    Sim {
        /// NATS server URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Scenario file (default: the shipped bank-channel degradation).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Platform topology (TOML; default: the shipped one).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Platform seconds per wall second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Subject prefix.
        #[arg(long, default_value = "selfheal")]
        prefix: String,
    },
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    selfheal::config_file::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn topology(path: Option<&PathBuf>) -> anyhow::Result<Topology> {
    match path {
        None => Ok(selfheal_sim::default_topology()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            selfheal_sim::parse_topology(&text)
                .map_err(|e| anyhow::anyhow!("{}:\n{e}", p.display()))
        }
    }
}

fn scenario(path: Option<&PathBuf>, topo: &Topology) -> anyhow::Result<Scenario> {
    match path {
        None => Ok(Scenario::channel_degradation()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Scenario::parse(&text, topo).map_err(|e| anyhow::anyhow!("{}:\n{e}", p.display()))
        }
    }
}

async fn nats(url: &str, name: &str) -> anyhow::Result<Bus> {
    Ok(Arc::new(NatsTransport::connect(url, name).await?))
}

fn check_speed(speed: f64) -> anyhow::Result<()> {
    if !(speed.is_finite() && speed > 0.0 && speed <= 10_000.0) {
        bail!("--speed must be in (0, 10000], not {speed}");
    }
    Ok(())
}

/// Waits for Ctrl-C or, on Unix, SIGTERM (what a service manager or
/// `kill` sends): either one stops a process gracefully, its store
/// checkpointed and its buffers flushed.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let demo = matches!(
        cli.cmd,
        Cmd::Demo { .. }
            | Cmd::Bench { .. }
            | Cmd::Drill { .. }
            | Cmd::Playbook { .. }
            | Cmd::Replay { .. }
            | Cmd::Petshop { .. }
            | Cmd::MicroDrill { .. }
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if demo { "error".into() } else { "info".into() }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Demo {
            nats: url,
            speed,
            scenario: sc,
            data_dir,
            dry_run,
        } => {
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
            demo::run(bus, opts, url.is_some()).await
        }
        Cmd::Drill {
            files,
            speed,
            json,
            max_ttd,
            max_ttr,
            require_diagnosis,
            require_cure,
            max_harmful,
        } => {
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
            let scenarios = selfheal::drill::load(&files, &topology(None)?)?;
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
                bail!(
                    "{} of {} scenario(s) below the pass marks: {}",
                    failed.len(),
                    results.len(),
                    failed.join(", ")
                );
            }
            Ok(())
        }
        Cmd::Detect {
            input,
            output,
            config,
        } => {
            let cfg: selfheal_brain::detect::DetectorConfig = match config {
                Some(p) => read_toml(&p)?,
                None => Default::default(),
            };
            let problems = cfg.validate();
            if !problems.is_empty() {
                bail!("invalid detector configuration:\n{}", problems.join("\n"));
            }
            let t = std::time::Instant::now();
            let (files, rows) = selfheal::detect::detect(&input, &output, &cfg)?;
            eprintln!(
                "scored {rows} points in {files} files in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let token = token.trim_end_matches(['\r', '\n']);
            if token.len() < 16 {
                bail!("a token needs at least 16 characters");
            }
            println!("{}", selfheal_brain::api::hash_token(token));
            Ok(())
        }
        Cmd::MicroDrill {
            dir,
            json,
            min_top1,
            keep,
            no_graph,
        } => {
            let cfg = BrainConfig {
                playbooks: selfheal::paths::playbooks(),
                ..BrainConfig::default()
            };
            let dir = selfheal::existing(dir);
            let scenarios = selfheal_sim::micro::load_dir(&dir).map_err(anyhow::Error::msg)?;
            if scenarios.is_empty() {
                bail!("no scenario under {}", dir.display());
            }
            let t = std::time::Instant::now();
            let report =
                selfheal::micro::drill(&scenarios, &cfg, keep.as_deref(), !no_graph, |r| {
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
                bail!(
                    "top-1 {:.0} % is below the bar of {:.0} %",
                    100.0 * report.all.top1,
                    100.0 * min
                );
            }
            Ok(())
        }
        Cmd::Petshop {
            data,
            scenario,
            limit,
            json,
            config,
            keep,
        } => {
            let cfg: BrainConfig = match config {
                Some(p) => read_toml(&p)?,
                None => BrainConfig {
                    playbooks: selfheal::paths::playbooks(),
                    ..BrainConfig::default()
                },
            };
            let mut cases = selfheal::petshop::cases(&data)?;
            if let Some(s) = &scenario {
                cases.retain(|c| &c.scenario == s);
            }
            if let Some(n) = limit {
                let mut seen = std::collections::BTreeMap::<String, usize>::new();
                cases.retain(|c| {
                    let k = seen.entry(c.scenario.clone()).or_default();
                    *k += 1;
                    *k <= n
                });
            }
            if cases.is_empty() {
                bail!("no case found under {}", data.display());
            }
            let t = std::time::Instant::now();
            let report = selfheal::petshop::evaluate(&cases, &cfg, keep.as_deref(), |r| {
                eprintln!(
                    "{} {}: root cause {} ranked {} (given the symptom {}, random walk {}); blamed {}",
                    r.scenario,
                    r.case,
                    r.root_cause,
                    r.rank.map_or("-".into(), |k| k.to_string()),
                    r.given_symptom_rank.map_or("-".into(), |k| k.to_string()),
                    r.random_walk_rank.map_or("-".into(), |k| k.to_string()),
                    if r.detected { r.ranked.join(", ") } else { "nothing (no incident)".into() }
                );
            })
            .await?;
            print!("{}", selfheal::petshop::markdown(&report));
            eprintln!(
                "{} cases in {:.1} s",
                report.all.cases,
                t.elapsed().as_secs_f64()
            );
            if let Some(p) = json {
                write_json(&p, &report)?;
            }
            Ok(())
        }
        Cmd::Replay {
            dir,
            out,
            config,
            strict,
        } => {
            let mut cfg: BrainConfig = match config {
                Some(p) => read_toml(&p)?,
                None => BrainConfig {
                    playbooks: selfheal::paths::playbooks(),
                    ..BrainConfig::default()
                },
            };
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
            let t = std::time::Instant::now();
            let incidents = selfheal::replay::run_alone(rec, cfg).await?;
            let json = serde_json::to_string_pretty(&incidents)?;
            match out {
                Some(p) => std::fs::write(&p, json + "\n")
                    .with_context(|| format!("writing {}", p.display()))?,
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
        Cmd::Record {
            scenario: sc,
            topology: t,
            out,
        } => {
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
        Cmd::Train {
            from,
            out,
            components,
            seed,
        } => {
            if !(1..=16).contains(&components) {
                bail!("--components must be in 1..=16, not {components}");
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
        Cmd::Playbook { cmd } => {
            use selfheal_brain::playbook::{Limits, Runtime, authoring};
            let dir = selfheal::paths::playbooks();
            let topo = Arc::new(topology(None)?);
            let mut rt = Runtime::new(topo, Limits::default());
            match cmd {
                PlaybookCmd::Check { files } => {
                    let files = authoring::files(&files, &dir);
                    let findings = authoring::check(&rt, &files);
                    for f in &findings {
                        println!("{f}");
                    }
                    if !findings.is_empty() {
                        bail!(
                            "{} problem(s) in {} playbook(s)",
                            findings.len(),
                            files.len()
                        );
                    }
                    eprintln!("{} playbook(s) OK", files.len());
                }
                PlaybookCmd::Test { files, no_sim } => {
                    if let Err(errs) = rt.load_dir(&dir) {
                        for e in &errs {
                            println!("{e}");
                        }
                        bail!("{} playbook(s) do not load", errs.len());
                    }
                    let all = files.is_empty();
                    let files = if all {
                        authoring::fixtures(&dir)
                    } else {
                        files
                    };
                    let results = authoring::test(&rt, &files);
                    let mut failed = 0;
                    for r in &results {
                        let verdict = if r.failure.is_none() { "pass" } else { "FAIL" };
                        println!("{verdict} {} ({})", r.fixture.display(), r.playbook);
                        for s in &r.steps {
                            println!("     {s}");
                        }
                        if !r.revert.is_empty() {
                            println!("     on failure, undo: {}", r.revert.join("; "));
                        }
                        if let Some(why) = &r.failure {
                            failed += 1;
                            println!("     {why}");
                        }
                    }
                    let untested: Vec<&str> = rt
                        .playbooks()
                        .iter()
                        .filter(|p| !results.iter().any(|r| r.playbook == p.name))
                        .map(|p| p.name.as_str())
                        .collect();
                    if all && !untested.is_empty() {
                        println!("no fixture: {}", untested.join(", "));
                    }
                    let mut rehearsals = Vec::new();
                    if !no_sim {
                        let mut names: Vec<String> =
                            results.iter().map(|r| r.playbook.clone()).collect();
                        names.dedup();
                        let topo = topology(None)?;
                        rehearsals = selfheal::drill::rehearse(&rt, &names, &dir, &topo).await?;
                        for r in &rehearsals {
                            match (&r.result, &r.skipped) {
                                (Some(d), _) => {
                                    let verdict = if d.passed() { "pass" } else { "FAIL" };
                                    println!(
                                        "{verdict} sim {} ({}): {} action(s), cure {}/{}, recovered {}, {} harmful",
                                        r.scenario,
                                        r.playbook,
                                        d.actions,
                                        d.cured,
                                        d.expected,
                                        d.ttr_s.map_or("never".into(), |t| format!("in {t:.1} s")),
                                        d.harmful
                                    );
                                    for f in &d.failures {
                                        println!("     {f}");
                                    }
                                }
                                (None, why) => println!(
                                    "skip sim {} ({}): {}",
                                    r.scenario,
                                    r.playbook,
                                    why.as_deref().unwrap_or("")
                                ),
                            }
                        }
                    }
                    let sim_failed = rehearsals
                        .iter()
                        .filter(|r| r.result.is_some() && !r.passed())
                        .count();
                    if failed > 0 || sim_failed > 0 || results.is_empty() {
                        bail!(
                            "{failed} of {} fixture(s) and {sim_failed} of {} rehearsal(s) failed",
                            results.len(),
                            rehearsals.len()
                        );
                    }
                    eprintln!(
                        "{} fixture(s) and {} rehearsal(s) passed",
                        results.len(),
                        rehearsals.iter().filter(|r| r.passed()).count()
                    );
                }
                PlaybookCmd::Docs { out, defs } => {
                    let api = rt.host_api();
                    for (path, text) in [
                        (&out, authoring::markdown(&api)),
                        (&defs, authoring::definitions(&api)),
                    ] {
                        std::fs::write(path, text)
                            .with_context(|| format!("writing {}", path.display()))?;
                        println!("{}", path.display());
                    }
                }
            }
            Ok(())
        }
        Cmd::Audit {
            what,
            store,
            last,
            key_file,
            anchors,
        } => {
            if !store.exists() {
                anyhow::bail!("no store at {}", store.display());
            }
            let files = selfheal_brain::store::AuditFiles {
                key: key_file,
                anchors,
            };
            if what == "verify" {
                let r = selfheal_brain::store::audit::verify_with(&store, &files)
                    .with_context(|| format!("reading {}", store.display()))?;
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                if r.ok() {
                    println!(
                        "audit log intact: {} entries, each chained to the one before under the key; {} anchors and {} actions match",
                        r.rows, r.anchors, r.actions
                    );
                    return Ok(());
                }
                for p in &r.problems {
                    eprintln!("{p}");
                }
                anyhow::bail!(
                    "audit log broken: {} problem(s) in {} entries of {}",
                    r.problems.len(),
                    r.rows,
                    store.display()
                );
            }
            let s = selfheal_brain::store::Store::open_with(&store, &files)?;
            for r in s.audit_of("", last)? {
                println!(
                    "{:>6} {} {:<10} {:<20} {:<28} {}",
                    r.seq, r.ts_ms, r.actor, r.event, r.subject, r.detail
                );
            }
            Ok(())
        }
        Cmd::Backup { store, out } => {
            let r = selfheal_brain::store::backup(&store, &out)?;
            println!(
                "backed up {} to {}: {} bytes, {} incidents, {} actions, {} audit entries; integrity ok",
                store.display(),
                out.display(),
                r.bytes,
                r.incidents,
                r.actions,
                r.audit_entries
            );
            Ok(())
        }
        Cmd::KillSwitch {
            state,
            config,
            reason,
        } => {
            let cfg: BrainConfig = read_toml(&config)?;
            let Some(file) = cfg.guard.kill_switch_file else {
                bail!(
                    "{}: guard.kill_switch_file is not set, so there is no kill switch to turn",
                    config.display()
                );
            };
            match state.as_str() {
                "on" => {
                    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    let note = format!("{} at {} ms\n", reason.trim(), selfheal_bus::wall_ms());
                    std::fs::write(&file, note)
                        .with_context(|| format!("writing {}", file.display()))?;
                    println!(
                        "kill switch engaged ({}): no action will be sent",
                        file.display()
                    );
                }
                "off" => {
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("removing {}", file.display()));
                        }
                    }
                    println!("kill switch released ({})", file.display());
                }
                _ => match std::fs::read_to_string(&file) {
                    Ok(why) => println!("engaged ({}): {}", file.display(), why.trim()),
                    Err(_) => println!("released ({})", file.display()),
                },
            }
            Ok(())
        }
        Cmd::Bench { seeds, speed } => {
            check_speed(speed)?;
            println!(
                "streaming detector: {} bytes of state per series (throughput: cargo bench -p selfheal-brain --bench detector)",
                selfheal_brain::detect::Detector::STATE_BYTES
            );
            let (p50, p99, max) = selfheal::bench::playbook_overhead(2000)?;
            println!(
                "playbook plan, per run (9 library playbooks x 2000): p50 {p50:.1} us, p99 {p99:.1} us, max {max:.0} us"
            );
            selfheal::bench::models_on_scenarios()?;
            println!(
                "indicator decode + validation: {:.2} M samples/s",
                selfheal::bench::decode_throughput() / 1e6
            );
            let page = selfheal_brain::api::oncall::PAGE;
            println!(
                "on-call page: {} bytes, one request (inline CSS and script, no external resource)",
                page.len()
            );
            let mut taps = selfheal::bench::tap_to_dispatch(5).await?;
            taps.sort_by(|a, b| a.0.total_cmp(&b.0));
            let server: Vec<String> = taps.iter().map(|t| format!("{:.2}", t.0)).collect();
            let rtt: Vec<String> = taps.iter().map(|t| format!("{:.2}", t.1)).collect();
            println!(
                "on-call tap to action dispatched, 5 runs: server side {} ms; client round trip {} ms",
                server.join(" / "),
                rtt.join(" / ")
            );
            selfheal::bench::loops(seeds, speed).await
        }
        Cmd::Brain {
            nats: url,
            config,
            topology: t,
            listen,
            prefix,
        } => {
            let mut cfg: BrainConfig = match config {
                Some(p) => read_toml(&p)?,
                None => BrainConfig {
                    playbooks: selfheal::paths::playbooks(),
                    ..BrainConfig::default()
                },
            };
            if listen.is_some() {
                cfg.listen = listen;
            }
            // Every problem of the configuration, before anything is
            // reached for (with NATS down, the bus error would hide them).
            let problems = cfg.validate();
            if !problems.is_empty() {
                bail!("invalid brain configuration:\n{}", problems.join("\n"));
            }
            let brain = Brain {
                config: cfg,
                bus: nats(&url, "selfheal-brain").await?,
                subjects: Subjects::new(prefix),
                topology: topology(t.as_ref())?,
            };
            let bus = brain.bus.clone();
            let h = brain.spawn().await?;
            // Subscriptions reach the server before anyone is told we run.
            bus.flush().await?;
            tracing::info!(%url, "brain running; Ctrl-C or SIGTERM stops it");
            stop_signal().await?;
            h.shutdown().await;
            tracing::info!("brain stopped");
            Ok(())
        }
        Cmd::Agent {
            nats: url,
            config,
            prefix,
        } => {
            let cfg: AgentConfig = match config {
                Some(p) => read_toml(&p)?,
                None => AgentConfig::default(),
            };
            let problems = cfg.validate();
            if !problems.is_empty() {
                bail!("invalid agent configuration:\n{}", problems.join("\n"));
            }
            let agent = Agent {
                config: cfg,
                bus: nats(&url, "selfheal-agent").await?,
                subjects: Subjects::new(prefix),
            };
            let bus = agent.bus.clone();
            let h = agent.spawn().await?;
            bus.flush().await?;
            tracing::info!(%url, "agent running; Ctrl-C or SIGTERM stops it");
            stop_signal().await?;
            h.shutdown().await;
            Ok(())
        }
        Cmd::Sim {
            nats: url,
            scenario: sc,
            topology: t,
            speed,
            prefix,
        } => {
            check_speed(speed)?;
            let topo = topology(t.as_ref())?;
            let sc = scenario(sc.as_ref(), &topo)?;
            let start_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let node = SimNode {
                bus: nats(&url, "selfheal-sim").await?,
                subjects: Subjects::new(prefix),
                topology: topo,
                scenario: sc,
                speed: Speed::Times(speed),
                start_ms,
                lockstep: None,
            };
            let h = node.spawn().await?;
            let stop = h.stopper();
            tokio::spawn(async move {
                if stop_signal().await.is_ok() {
                    stop.cancel();
                }
            });
            let truth = h.finish().await;
            println!("{}", serde_json::to_string_pretty(&truth)?);
            Ok(())
        }
    }
}

mod demo {
    use super::*;
    use selfheal::{LoopOptions, TimelineEntry};

    pub async fn run(bus: Bus, opts: LoopOptions, over_nats: bool) -> anyhow::Result<()> {
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
            bail!("the fault was not healed");
        }
        if !has_fault && out.executed_actions() > 0 {
            bail!("actions were executed on a run without a fault");
        }
        println!(
            "  healed: {}",
            if has_fault { "yes" } else { "nothing to heal" }
        );
        Ok(())
    }
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
