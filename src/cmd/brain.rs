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
    /// What this process does: `all` (detect and act), `detect` (a
    /// detection worker for its share of the series) or `engine` (acts on
    /// what the workers find). `detect` and `engine` need `[jetstream]`;
    /// see docs/deploy.md.
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
}

/// A brain's part in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Detects and acts (one process, or active/standby with `[ha]`).
    All,
    /// Detects the series of its partitions and publishes what it finds.
    Detect,
    /// Correlates, diagnoses and acts on what detection workers find.
    Engine,
}

/// This process's default name in a group: `<hostname>-<pid>`, with
/// characters NATS names do not take replaced.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "brain".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// Runs it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        nats: url,
        config,
        topology: t,
        listen,
        prefix,
        role,
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
    if role != Role::All && cfg.jetstream.is_none() {
        input!(
            "--role {role:?} needs [jetstream] in the configuration: detection workers and their engine read the indicator stream (docs/deploy.md)"
        );
    }
    let nats = selfheal_bus::NatsTransport::connect(&url, "selfheal-brain").await?;
    let subjects = Subjects::new(prefix);
    if role == Role::Detect {
        return detect_worker(nats, cfg, subjects, topology(t.as_ref())?).await;
    }
    let ha = cfg.ha.clone();
    let holder = ha.as_ref().and_then(|h| h.holder.clone());
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
    let h = match (role, indicators) {
        (Role::Engine, Some(indicators)) => {
            let det = detected_stream(&brain.config, &brain.subjects);
            until_ready(|| selfheal_bus::stream::ensure(nats.client(), &det)).await?;
            let consumer = brain
                .config
                .jetstream
                .as_ref()
                .and_then(|j| j.consumer.clone())
                .or(holder)
                .unwrap_or_else(|| "brain".into());
            let detected =
                selfheal_bus::stream::consume(nats.client(), &det, &format!("{consumer}-det"))
                    .await?;
            tracing::info!(stream = %det.name, "findings read from detection workers");
            brain.spawn_engine(cluster, indicators, detected).await?
        }
        (_, indicators) => brain.spawn_with(cluster, indicators).await?,
    };
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
    let holder = ha.holder.clone().unwrap_or_else(default_name);
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

/// The detection stream: what workers find, read by every engine.
fn detected_stream(
    cfg: &BrainConfig,
    subjects: &Subjects,
) -> selfheal_bus::stream::IndicatorStream {
    let det = cfg.detection.clone().unwrap_or_default();
    selfheal_bus::stream::IndicatorStream {
        name: det.stream,
        subjects: subjects.all_detected(),
        replicas: det.replicas,
        max_age: std::time::Duration::from_secs(
            cfg.jetstream.as_ref().map_or(3_600, |j| j.max_age_s),
        ),
    }
}

/// `--role detect`: a detection worker. It lists itself among the workers,
/// follows which partitions are its own, reads the indicator stream from
/// now on (its missed share went to the others) and publishes what it
/// finds into the detection stream.
async fn detect_worker(
    nats: selfheal_bus::NatsTransport,
    cfg: BrainConfig,
    subjects: Subjects,
    topology: selfheal_bus::Topology,
) -> anyhow::Result<()> {
    use selfheal_bus::{partition, stream};
    let det = cfg.detection.clone().unwrap_or_default();
    let js = cfg.jetstream.clone().unwrap_or_default();
    let worker = det.worker.clone().unwrap_or_else(default_name);
    let indicators = js.stream_of(&subjects);
    let findings = detected_stream(&cfg, &subjects);
    until_ready(|| stream::ensure(nats.client(), &indicators)).await?;
    until_ready(|| stream::ensure(nats.client(), &findings)).await?;
    let ttl = std::time::Duration::from_millis(det.member_ttl_ms);
    let members = until_ready(|| {
        partition::open_members(nats.client(), &det.members_bucket, det.replicas, ttl)
    })
    .await?;
    let consumer = js.consumer.clone().unwrap_or_else(|| worker.clone());
    let sub = stream::consume_from_now(nats.client(), &indicators, &consumer).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (owned_tx, owned_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
    let heartbeat = tokio::spawn(partition::heartbeat(
        members.clone(),
        worker.clone(),
        ttl,
        stop.clone(),
    ));
    let follow = tokio::spawn(partition::follow(
        members,
        worker.clone(),
        det.partitions,
        ttl / 3,
        owned_tx,
        stop.clone(),
    ));
    let client = nats.client().clone();
    let replay: selfheal_brain::ingest::Replay = Arc::new(move |since, until| {
        let (client, s) = (client.clone(), indicators.clone());
        Box::pin(async move { partition::replay(&client, &s, since, until).await })
    });
    let outlet_bus: selfheal_bus::Bus = Arc::new(nats.clone().with_jetstream());
    let brain = Brain {
        bus: Arc::new(nats),
        subjects: subjects.clone(),
        topology,
        config: cfg,
    };
    let h = brain
        .spawn_detector(
            sub,
            selfheal_brain::ingest::Partitioned {
                partitions: det.partitions,
                owned: owned_rx.clone(),
                replay,
                warmup_ms: (det.warmup_s * 1000) as i64,
            },
            selfheal_brain::detect::remote::Outlet {
                bus: outlet_bus.clone(),
                subject: subjects.detected(&worker),
                worker: worker.clone(),
                owned: owned_rx,
            },
        )
        .await?;
    outlet_bus.flush().await?;
    tracing::info!(%worker, partitions = det.partitions, "detection worker running; Ctrl-C or SIGTERM stops it");
    stop_signal().await?;
    // Membership given up first, so that the partitions move at once.
    stop.cancel();
    for t in [heartbeat, follow] {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    h.shutdown().await;
    tracing::info!("detection worker stopped");
    Ok(())
}
