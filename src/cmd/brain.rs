//! `selfheal brain`: runs the brain alone, over NATS.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Brain configuration (TOML; see docs/configuration.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Platform topology (TOML; default: the simulator's).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Serve /healthz and /metrics here (overrides `listen` in the config).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Subject prefix.
    #[arg(long, default_value = "selfheal")]
    pub prefix: String,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        nats: url,
        config,
        topology: t,
        listen,
        prefix,
    } = args;
    let mut cfg: BrainConfig = brain_config(config.as_ref())?;
    if listen.is_some() {
        cfg.listen = listen;
    }
    // Every problem of the configuration, before anything is
    // reached for (with NATS down, the bus error would hide them).
    let problems = cfg.validate();
    if !problems.is_empty() {
        input!("invalid brain configuration:\n{}", problems.join("\n"));
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
