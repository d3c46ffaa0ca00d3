//! `selfheal`: the command-line program. It parses the command line and
//! hands each subcommand to its module under `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

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
enum Cmd {
    /// Runs the whole loop in one process and heals a fault live.
    Demo(cmd::demo::Args),
    /// Runs scenarios through the whole loop on the virtual clock, in
    /// lockstep, and scores them against the platform's ground truth.
    Drill(cmd::drill::Args),
    /// Scores NAB-style CSV files (`timestamp,value`) with the streaming
    /// detector the brain uses; writes `timestamp,value,anomaly_score` at
    /// the same relative paths.
    Detect(cmd::detect::Args),
    /// Runs a scenario on the simulated platform alone (nothing repairs
    /// it) and records its indicators as `metrics.csv` (long form) and its
    /// changes as `changes.jsonl`.
    Record(cmd::record::Args),
    /// Reads a token on standard input and prints its SHA-256, for
    /// `change_token_sha256` (the token itself is never stored).
    HashToken,
    /// Runs the brain (same code, virtual clock, dry run) over recorded
    /// data and writes the incidents with their ranked hypotheses
    /// (docs/replay.md).
    Replay(cmd::replay::Args),
    /// Drills generic root-cause localization on the simulator's generic
    /// microservice world (random service graphs of 8-30 services,
    /// Kubernetes-style names; cpu_hog, memory_leak, network_delay,
    /// packet_loss, error_returns) through replay.
    MicroDrill(cmd::micro_drill::Args),
    /// Measures root-cause localization on the PetShop data set: converts
    /// each case to replay's format, replays it, and reports top-1 and
    /// top-3 per traffic scenario beside a random walk over the call graph.
    Petshop(cmd::petshop::Args),
    /// Fits a multivariate model per service on normal history and writes
    /// them, one JSON file per service.
    Train(cmd::train::Args),
    /// Tools for playbook authors.
    Playbook(cmd::playbook::Args),
    /// Checks or shows the store's audit log (every approval, rejection,
    /// action and refusal, each entry chained to the one before by an
    /// HMAC-SHA-256 under a key kept outside the store, its head anchored
    /// outside it): `verify` fails, naming the entries, if any was edited,
    /// removed, inserted, re-chained or truncated, or if an action row was
    /// edited.
    Audit(cmd::audit::Args),
    /// Copies the store into a new file, consistently, while a brain may be
    /// writing to it (SQLite online backup), checks the copy's integrity and
    /// says what it holds. The copy is one self-contained file.
    Backup(cmd::backup::Args),
    /// The continuity report from a store: share of incidents found by
    /// monitoring, time to detect, failover success and time, self-healing
    /// success, payments lost, time to diagnose, to respond and to recover.
    Kpi(cmd::kpi::Args),
    /// Inspects readiness before a big sale: store, guards, on-call,
    /// playbooks, capacity at the expected peak, every playbook rehearsed
    /// at that peak, the bus; each with a verdict, evidence and the fix.
    /// Exit code 0, 1 or 2: pass, warn or fail.
    Patrol(cmd::patrol::Args),
    /// Engages, releases or shows the brain's kill switch (the file named by
    /// `guard.kill_switch_file`): while engaged, no action is sent.
    KillSwitch(cmd::kill_switch::Args),
    /// Measures speeds and loop outcomes (run with --release on an idle machine).
    Bench(cmd::bench::Args),
    /// Runs the brain alone, over NATS.
    Brain(cmd::brain::Args),
    /// Runs an edge agent alone, over NATS.
    Agent(cmd::agent::Args),
    /// Runs the payment-platform simulator alone, over NATS.
    Sim(cmd::sim::Args),
    /// Heals faults on real processes: HAProxy in front of the stack's
    /// payment service, nats-server, a brain and an agent; measures MTTD
    /// and MTTR from the load generator's view (docs/stack-drill.md).
    StackDrill(cmd::stack_drill::Args),
    /// Runs one instance of the stack drill's payment service.
    #[command(hide = true)]
    StackBackend(cmd::stack_backend::Args),
}

/// Runs the command; on failure prints one clean error with its causes
/// and exits with the code its kind calls for (`cmd::exit`).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return std::process::ExitCode::from(cmd::exit::RUNTIME);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::from(cmd::exit::OK),
        Err(e) => {
            eprintln!("{}", cmd::describe(&e));
            std::process::ExitCode::from(cmd::exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let demo = matches!(
        cli.cmd,
        Cmd::Demo { .. }
            | Cmd::Bench { .. }
            | Cmd::Drill { .. }
            | Cmd::Playbook { .. }
            | Cmd::Replay { .. }
            | Cmd::Petshop { .. }
            | Cmd::MicroDrill { .. }
            | Cmd::StackDrill { .. }
            | Cmd::Patrol { .. }
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if demo { "error".into() } else { "info".into() }),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Demo(a) => cmd::demo::run(a).await,
        Cmd::Drill(a) => cmd::drill::run(a).await,
        Cmd::Detect(a) => cmd::detect::run(a).await,
        Cmd::Record(a) => cmd::record::run(a).await,
        Cmd::HashToken => cmd::hash_token::run().await,
        Cmd::Replay(a) => cmd::replay::run(a).await,
        Cmd::MicroDrill(a) => cmd::micro_drill::run(a).await,
        Cmd::Petshop(a) => cmd::petshop::run(a).await,
        Cmd::Train(a) => cmd::train::run(a).await,
        Cmd::Playbook(a) => cmd::playbook::run(a).await,
        Cmd::Audit(a) => cmd::audit::run(a).await,
        Cmd::Backup(a) => cmd::backup::run(a).await,
        Cmd::KillSwitch(a) => cmd::kill_switch::run(a).await,
        Cmd::Kpi(a) => cmd::kpi::run(a).await,
        Cmd::Patrol(a) => cmd::patrol::run(a).await,
        Cmd::Bench(a) => cmd::bench::run(a).await,
        Cmd::Brain(a) => cmd::brain::run(a).await,
        Cmd::Agent(a) => cmd::agent::run(a).await,
        Cmd::Sim(a) => cmd::sim::run(a).await,
        Cmd::StackDrill(a) => cmd::stack_drill::run(a).await,
        Cmd::StackBackend(a) => cmd::stack_backend::run(a).await,
    }
}
