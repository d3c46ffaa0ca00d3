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
    let nats = selfheal_bus::NatsTransport::connect(&url, "selfheal-brain").await?;
    let ha = cfg.ha.clone();
    let subjects = Subjects::new(prefix);
    let indicators = match &cfg.jetstream {
        None => None,
        Some(js) => {
            let stream = js.stream_of(&subjects);
            until_ready(|| selfheal_bus::stream::ensure(nats.client(), &stream)).await?;
            let consumer = js
                .consumer
                .clone()
                .or_else(|| ha.as_ref().and_then(|h| h.holder.clone()))
                .unwrap_or_else(|| "brain".into());
            tracing::info!(stream = %stream.name, %consumer, "indicators read from the JetStream stream");
            Some(selfheal_bus::stream::consume(nats.client(), &stream, &consumer).await?)
        }
    };
    let brain = Brain {
        config: cfg,
        bus: Arc::new(nats.clone()),
        subjects,
        topology: topology(t.as_ref())?,
    };
    let bus = brain.bus.clone();
    let lease_stop = tokio_util::sync::CancellationToken::new();
    let (cluster, lease_task) = match ha {
        None => (None, None),
        Some(ha) => {
            let (c, task) = cluster(&nats, &ha, lease_stop.clone()).await?;
            (Some(c), Some(task))
        }
    };
    let h = brain.spawn_with(cluster, indicators).await?;
    // Subscriptions reach the server before anyone is told we run.
    bus.flush().await?;
    tracing::info!(%url, "brain running; Ctrl-C or SIGTERM stops it");
    stop_signal().await?;
    h.shutdown().await;
    // Given up only once the engine stopped: a standby takes over at once.
    lease_stop.cancel();
    if let Some(t) = lease_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("brain stopped");
    Ok(())
}

/// Opens the lease and the replicated state (`[ha]`) and starts holding
/// the lease.
async fn cluster(
    nats: &selfheal_bus::NatsTransport,
    ha: &selfheal_brain::config::HaConfig,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(selfheal_brain::engine::Cluster, tokio::task::JoinHandle<()>)> {
    use selfheal_bus::ha;
    let buckets = ha::HaBuckets {
        lease_bucket: ha.lease_bucket.clone(),
        state_bucket: ha.state_bucket.clone(),
        replicas: ha.replicas,
        ttl: std::time::Duration::from_millis(ha.lease_ttl_ms),
        state_max_age: std::time::Duration::from_secs(ha.state_keep_s),
    };
    let (lease_kv, replica) = until_ready(|| ha::open(nats.client(), &buckets)).await?;
    let holder = ha.holder.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "brain".into());
        format!("{host}-{}", std::process::id())
    });
    tracing::info!(%holder, bucket = %ha.lease_bucket, "active/standby: competing for the engine lease");
    let lease = ha::Lease::new(holder, buckets.ttl);
    let task = tokio::spawn(ha::hold(
        lease_kv,
        "engine".to_string(),
        lease.clone(),
        stop,
    ));
    Ok((
        selfheal_brain::engine::Cluster {
            lease,
            replica: Arc::new(replica),
        },
        task,
    ))
}
