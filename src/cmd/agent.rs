//! `selfheal agent`: runs an edge agent alone, over NATS.

use super::prelude::*;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// Agent configuration (TOML; see docs/configuration.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Subject prefix.
    #[arg(long, default_value = "selfheal")]
    pub prefix: String,
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        nats: url,
        config,
        prefix,
    } = args;
    let cfg: AgentConfig = match config {
        Some(p) => read_toml(&p)?,
        None => AgentConfig::default(),
    };
    let problems = cfg.validate();
    if !problems.is_empty() {
        input!("invalid agent configuration:\n{}", problems.join("\n"));
    }
    // The sources and actuators this build knows: the simulator's.
    let subjects = Subjects::new(prefix);
    let mut nats = selfheal_bus::NatsTransport::connect(&url, "selfheal-agent").await?;
    if let Some(js) = &cfg.jetstream {
        let stream = js.stream_of(&subjects);
        until_ready(|| selfheal_bus::stream::ensure(nats.client(), &stream)).await?;
        tracing::info!(stream = %stream.name, "indicators published to the JetStream stream, each kept until acknowledged");
        nats = nats.with_jetstream();
    }
    let agent = selfheal_sim::edge::agent(cfg, Arc::new(nats), subjects).await?;
    let bus = agent.bus.clone();
    let h = agent.spawn().await?;
    bus.flush().await?;
    tracing::info!(%url, "agent running; Ctrl-C or SIGTERM stops it");
    stop_signal().await?;
    h.shutdown().await;
    Ok(())
}
