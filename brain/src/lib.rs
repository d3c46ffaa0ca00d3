//! The selfheal brain: a library first; the `selfheal` binary only wires it.
//!
//! Data flows one way: bus → [`ingest`] → [`detect`] → [`correlate`] →
//! [`diagnose`] → decide ([`playbook`] metadata) → [`act`] → [`verify`] →
//! [`store`]. The stages after detection run in one task ([`engine`]) on
//! event time.
//!
//! # Layout
//! In the order data flows; a module uses only those before it (checked
//! by `tests/layers.rs`), the engine routes between them, the API sits on
//! top.
//! - [`config`]: the brain's TOML configuration.
//! - [`ingest`]: subscribe, decode, validate, acknowledge what was sent as
//!   a request, route samples to shards.
//! - [`admit`]: series admission (caps in all, per source, per service) and
//!   the eviction of idle series.
//! - [`detect`]: per-series streaming detectors in shard tasks.
//! - [`remote_write`]: Prometheus remote_write decoded and turned into
//!   indicators, published on the bus like an agent's.
//! - [`alert`]: alerts from an existing monitoring (Alertmanager) as
//!   anomalies: firing opens or joins an incident, resolved ends it.
//! - [`recent`]: recent samples of every series (charts, localization).
//! - [`incident`]: an incident and its state machine (collecting, running
//!   its plan, done in a typed terminal state); what it needs at a time
//!   ([`incident::Due`]).
//! - [`correlate`]: anomalies grouped into incidents, and what may open
//!   one (symptoms, agreeing groups; the rest kept as signals).
//! - [`context`]: recent changes and hot keys the diagnosis weighs.
//! - [`diagnose`]: ranked hypotheses with evidence; generic localization.
//! - [`playbook`]: the sandboxed Rhai runtime and host API.
//! - [`act`]: the action gateway (guards → write-ahead → dispatch →
//!   result) over the [`selfheal_bus::Actuator`] trait; on-call
//!   approvals and notices.
//! - [`verify`]: checks after an action.
//! - [`store`]: the SQLite store (write-ahead of actions; the keyed,
//!   anchored audit chain; checkpoint and online backup; paged queries).
//! - [`blocking`]: SQLite and Rhai work kept off the async workers.
//! - [`engine`]: the task that routes events between the stages above; it
//!   decides nothing itself.
//! - [`stats`]: the brain's own counters (Prometheus text).
//! - [`secret`]: tokens and digests (hashing, hex, constant-time compare).
//! - [`mask`], [`sandbox`]: personal data masked in evidence; the Rhai
//!   engine's limits.
//! - [`api`]: the HTTP API (`/healthz`, `/metrics`, changes, on-call),
//!   served with header and request deadlines and connection caps.
#![deny(missing_docs)]

pub mod act;
pub mod admit;
pub mod alert;
pub mod api;
pub mod blocking;
pub mod config;
pub mod context;
pub mod correlate;
pub mod detect;
pub mod diagnose;
pub mod engine;
pub mod incident;
pub mod ingest;
pub mod kpi;
pub mod mask;
pub mod playbook;
pub mod recent;
pub mod reconcile;
pub mod remote_write;
pub mod sandbox;
pub mod secret;
pub mod seen;
pub mod stats;
pub mod store;
pub mod verify;

use std::{sync::Arc, time::Duration};

use selfheal_bus::{Bus, Subjects, Topology};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::BrainConfig;
pub use stats::BrainStats;

/// Why the brain could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (every problem listed).
    #[error("invalid brain configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// Playbooks failed to load (every problem listed).
    #[error("playbooks failed to load:\n{}", .0.join("\n"))]
    Playbooks(Vec<String>),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The bus refused a subscription.
    #[error(transparent)]
    Bus(#[from] selfheal_bus::BusError),
}

/// Anchors the audit chain's head outside the store every `every` (when it
/// moved): a signed line in the anchor file, and the same on the bus for a
/// subscriber elsewhere to keep.
async fn anchor_audit(
    store: Arc<store::Store>,
    bus: (Bus, String),
    every: Duration,
    stats: Arc<BrainStats>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.anchor()).await {
            Ok(Ok(Some(a))) => {
                BrainStats::bump(&stats.audit_anchors);
                if let Err(e) = selfheal_bus::publish_msg(&bus.0, &bus.1, &a).await {
                    tracing::warn!(error = %e, "audit anchor not published on the bus; the file has it");
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => stats.fault(stats::Fault::Anchor { error: &error }),
            Err(e) => tracing::error!(error = %e, "audit anchor task failed"),
        }
    }
}

/// Every log window, one line for the rejection lines held back in it
/// (see [`selfheal_bus::lograte`]).
async fn summarize_rejections(stats: Arc<BrainStats>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(selfheal_bus::lograte::LOG_WINDOW);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(line) = stats.rejection_summary() {
            warn!("{line}");
        }
    }
}

/// Starts `n` detector shards sending to `tx`; returns their inputs.
fn spawn_shards(
    cfg: &BrainConfig,
    n: usize,
    (tx, classes, stats, stop): (
        &mpsc::Sender<detect::Detected>,
        &Arc<detect::MetricClasses>,
        &Arc<BrainStats>,
        &CancellationToken,
    ),
    tasks: &mut Vec<JoinHandle<()>>,
) -> Vec<mpsc::Sender<detect::shard::ShardBatch>> {
    (0..n)
        .map(|index| {
            let (shard_tx, rx) = mpsc::channel(1024);
            tasks.push(tokio::spawn(detect::shard::run(
                index,
                rx,
                tx.clone(),
                cfg.detector.clone(),
                classes.clone(),
                stats.clone(),
                stop.clone(),
            )));
            shard_tx
        })
        .collect()
}

/// What a start-up thread returned; a panic there is a refusal to start.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, StartError>>) -> Result<T, StartError> {
    h.join().unwrap_or_else(|_| {
        Err(StartError::Playbooks(vec![
            "compiling the scripts panicked".to_string(),
        ]))
    })
}

/// A brain ready to start.
pub struct Brain {
    /// Configuration.
    pub config: BrainConfig,
    /// The bus.
    pub bus: Bus,
    /// Subjects.
    pub subjects: Subjects,
    /// The platform's topology.
    pub topology: Topology,
}

/// A running brain.
pub struct BrainHandle {
    /// Its counters.
    pub stats: Arc<BrainStats>,
    /// Where its HTTP API listens, when it does.
    pub api_addr: Option<std::net::SocketAddr>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// None at a detection worker, which keeps no store.
    store: Option<Arc<store::Store>>,
    /// To the engine: the input ended (none at a detection worker).
    ended: Option<mpsc::Sender<engine::InputEnd>>,
}

impl BrainHandle {
    /// Tells the engine that its input ended at `at` (ms; a replay's last
    /// instant) and waits until it has taken that: what was detected at
    /// `at` is filed, which otherwise waits for a later time that will not
    /// come, and every incident still gathering evidence is diagnosed on
    /// what it holds (see [`engine::InputEnd`]). Call it once everything
    /// sent has been detected. Nothing at a detection worker.
    pub async fn end_input(&self, at: i64) {
        let Some(tx) = &self.ended else {
            return;
        };
        let (done, told) = tokio::sync::oneshot::channel();
        if tx.send(engine::InputEnd { at, done }).await.is_ok() {
            let _ = told.await;
        }
    }

    /// Stops every task and waits for them (bounded), then checkpoints the
    /// store so that its database file alone holds everything (a copy of
    /// that file after a graceful stop is the whole store).
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let Some(store) = self.store else {
            return;
        };
        let last = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || last.anchor()).await {
            tracing::warn!(error = %e, "audit anchor at shutdown failed");
        }
        match tokio::task::spawn_blocking(move || store.checkpoint()).await {
            Ok(Ok(pages)) => tracing::info!(pages, "store checkpointed"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "store checkpoint at shutdown failed; the write-ahead log keeps the data")
            }
            Err(e) => tracing::warn!(error = %e, "store checkpoint at shutdown did not run"),
        }
    }
}

impl Brain {
    /// Loads playbooks, opens the store, subscribes and starts the tasks.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use selfheal_brain::{Brain, BrainConfig};
    /// let brain = Brain {
    ///     config: BrainConfig::default(),
    ///     bus: Arc::new(selfheal_bus::LocalTransport::default()),
    ///     subjects: selfheal_bus::Subjects::default(),
    ///     topology: toml::from_str(&std::fs::read_to_string("sim/topology.toml")?)?,
    /// };
    /// let handle = brain.spawn().await?;
    /// handle.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn spawn(self) -> Result<BrainHandle, StartError> {
        self.spawn_with(None, None).await
    }

    /// [`Brain::spawn`] as one of a group of brains (`[ha]`): only the one
    /// holding `cluster`'s lease acts; see [`engine::Cluster`]. With
    /// `indicators`, the indicators are read from it (a JetStream
    /// consumer, see [`selfheal_bus::stream`]) rather than subscribed to
    /// on the bus.
    pub async fn spawn_with(
        self,
        cluster: Option<engine::Cluster>,
        indicators: Option<selfheal_bus::Subscription>,
    ) -> Result<BrainHandle, StartError> {
        self.start(cluster, indicators, None).await
    }

    /// [`Brain::spawn_with`] as an engine whose detection runs in worker
    /// processes (`--role engine`): the workers' findings are read from
    /// `detected` (the detection stream, see [`detect::remote`]); the
    /// indicators, read from `indicators` (the indicator stream), only
    /// keep the recent window and the clock.
    pub async fn spawn_engine(
        self,
        cluster: Option<engine::Cluster>,
        indicators: selfheal_bus::Subscription,
        detected: selfheal_bus::Subscription,
    ) -> Result<BrainHandle, StartError> {
        self.start(cluster, Some(indicators), Some(detected)).await
    }

    /// A detection worker (`--role detect`): decodes and detects only the
    /// series of the partitions it owns (`share`), and publishes what it
    /// finds through `outlet`. It keeps no store and acts on nothing; its
    /// API, when it listens, serves `/healthz` and `/metrics`.
    pub async fn spawn_detector(
        self,
        indicators: selfheal_bus::Subscription,
        share: ingest::Partitioned,
        outlet: detect::remote::Outlet,
    ) -> Result<BrainHandle, StartError> {
        let cfg = self.config;
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let stats = Arc::new(BrainStats::default());
        let stop = CancellationToken::new();
        let (detected_tx, detected_rx) = mpsc::channel(4096);
        let classes =
            Arc::new(detect::MetricClasses::new(&cfg.metric_class).map_err(StartError::Config)?);
        let mut tasks = Vec::new();
        let shard_txs = spawn_shards(
            &cfg,
            cfg.shards,
            (&detected_tx, &classes, &stats, &stop),
            &mut tasks,
        );
        drop(detected_tx);
        tasks.push(tokio::spawn(detect::remote::publish(
            detected_rx,
            cfg.shards,
            outlet,
            stats.clone(),
            stop.clone(),
        )));
        let limits = cfg.limits();
        let (wm_tx, _) = watch::channel(0i64);
        tasks.push(tokio::spawn(ingest::run(
            indicators,
            (self.bus.clone(), self.subjects.clone()),
            ingest::Routes {
                shards: shard_txs,
                models: None,
                recent: Arc::new(recent::Recent::default()),
                admission: admit::Admission::new(cfg.series),
                partitioned: Some(share),
                progress: None,
            },
            wm_tx,
            limits,
            stats.clone(),
            stop.clone(),
        )));
        let mut api_addr = None;
        if let Some(addr) = cfg.listen {
            let (bound, join) = api::serve_with(
                addr,
                api::ApiState::stats_only(stats.clone(), cfg.refusals_per_minute),
                stop.clone(),
                cfg.http,
            )
            .await
            .map_err(|e| StartError::Config(vec![format!("listen: cannot bind {addr}: {e}")]))?;
            api_addr = Some(bound);
            tasks.push(join);
        }
        tasks.push(tokio::spawn(summarize_rejections(
            stats.clone(),
            stop.clone(),
        )));
        Ok(BrainHandle {
            stats,
            stop,
            tasks,
            api_addr,
            store: None,
            ended: None,
        })
    }

    async fn start(
        self,
        cluster: Option<engine::Cluster>,
        indicators: Option<selfheal_bus::Subscription>,
        detected: Option<selfheal_bus::Subscription>,
    ) -> Result<BrainHandle, StartError> {
        let cfg = self.config;
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(StartError::Config(problems));
        }
        let topology = Arc::new(self.topology);
        // Compiling the playbooks, compiling the rules and opening the
        // store are independent and take milliseconds each: side by side.
        let (runtime, rules, store) = std::thread::scope(|scope| {
            let runtime = scope.spawn(|| {
                let mut runtime =
                    playbook::Runtime::new(topology.clone(), playbook::Limits::default());
                runtime.load_dir(&cfg.playbooks).map_err(|errs| {
                    StartError::Playbooks(errs.iter().map(|e| e.to_string()).collect())
                })?;
                Ok::<_, StartError>(runtime)
            });
            let rules = scope.spawn(|| {
                let mut rules = diagnose::Rules::new(playbook::Limits::default());
                rules
                    .load_dir(&cfg.playbooks.join("diagnose"))
                    .map_err(|errs| {
                        StartError::Playbooks(errs.iter().map(|e| e.to_string()).collect())
                    })?;
                Ok::<_, StartError>(rules)
            });
            let store = store::Store::open_with(&cfg.store, &cfg.audit_files());
            (joined(runtime), joined(rules), store)
        });
        let (runtime, rules, store) = (runtime?, rules?, Arc::new(store?));
        if runtime.playbooks().is_empty() {
            return Err(StartError::Playbooks(vec![format!(
                "no playbook found under {}",
                cfg.playbooks.display()
            )]));
        }
        // A playbook's reconciliation must be one the configuration defines.
        let undefined: Vec<String> = runtime
            .playbooks()
            .iter()
            .flat_map(|p| p.meta.reconcile.iter().map(move |r| (p, r)))
            .filter(|(_, r)| !cfg.reconcile.iter().any(|c| &c.name == *r))
            .map(|(p, r)| {
                format!(
                    "{}: reconcile check {r:?} is not defined under [[reconcile]] in the configuration",
                    p.path.display()
                )
            })
            .collect();
        if !undefined.is_empty() {
            return Err(StartError::Playbooks(undefined));
        }
        if rules.names().is_empty() {
            warn!(dir = %cfg.playbooks.join("diagnose").display(), "no diagnosis rule found: every incident will be diagnosed unknown and handed to a person");
        }
        // On-call: the link key must be there before anything starts.
        let oncall = match &cfg.oncall {
            None => None,
            Some(oc) => {
                let key = act::approval::LinkKey::from_env(&oc.link_key_env)
                    .map_err(|e| StartError::Config(vec![e]))?;
                Some((Arc::new(oc.clone()), key))
            }
        };
        let recent = Arc::new(recent::Recent::default());
        let (decisions_tx, decisions_rx) = mpsc::channel(64);
        let (alerts_tx, alerts_rx) = mpsc::channel(256);
        let (ended_tx, ended_rx) = mpsc::channel(1);
        let stats = Arc::new(BrainStats::default());
        let stop = CancellationToken::new();
        let sub = match indicators {
            Some(s) => s,
            None => self.bus.subscribe(&self.subjects.all_indicators()).await?,
        };
        let changes_sub = self.bus.subscribe(&self.subjects.all_changes()).await?;
        let hot_sub = self
            .bus
            .subscribe(&format!("{}.hot.*", self.subjects.prefix()))
            .await?;
        let announce_sub = self.bus.subscribe(&self.subjects.all_announce()).await?;
        let (context_tx, context_rx) = mpsc::channel(4096);

        let (anomaly_tx, anomaly_rx) = mpsc::channel(4096);
        let models = match &cfg.models {
            None => None,
            Some(dir) => {
                let (set, errors) = selfheal_models::ModelSet::load_dir(dir);
                for e in &errors {
                    stats.fault(stats::Fault::Model {
                        error: &e.to_string(),
                    });
                }
                stats.models_loaded.store(
                    set.models.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                info!(dir = %dir.display(), models = set.models.len(), "multivariate models loaded");
                (!set.is_empty()).then(|| {
                    let th = detect::model::ModelThresholds {
                        open: cfg.model_open,
                        ..Default::default()
                    };
                    (detect::model::ModelStage::new(set, th), anomaly_tx.clone())
                })
            }
        };
        let http = if cfg.http_actuator.is_empty() {
            None
        } else {
            let client = act::http::client().map_err(|e| StartError::Config(vec![e]))?;
            Some((client, Arc::new(cfg.http_actuator.clone())))
        };
        let (results_tx, results_rx) = mpsc::channel(256);
        let (wm_tx, wm_rx) = watch::channel(0i64);
        let mut tasks = Vec::new();
        let classes =
            Arc::new(detect::MetricClasses::new(&cfg.metric_class).map_err(StartError::Config)?);
        let local_shards = if detected.is_some() { 0 } else { cfg.shards };
        let shard_txs = spawn_shards(
            &cfg,
            local_shards,
            (&anomaly_tx, &classes, &stats, &stop),
            &mut tasks,
        );
        let limits = cfg.limits();
        let progress = match detected {
            None => None,
            Some(sub) => {
                let (tx, rx) = mpsc::channel(4096);
                tasks.push(tokio::spawn(detect::remote::receive(
                    sub,
                    rx,
                    anomaly_tx.clone(),
                    cfg.detection.clone().unwrap_or_default().partitions,
                    limits,
                    stats.clone(),
                    stop.clone(),
                )));
                Some(tx)
            }
        };
        drop(anomaly_tx);
        tasks.push(tokio::spawn(ingest::run_context(
            ingest::ContextSubs {
                changes: changes_sub,
                hot: hot_sub,
                announce: announce_sub,
            },
            self.bus.clone(),
            context_tx,
            wm_rx.clone(),
            limits,
            stats.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(ingest::run(
            sub,
            (self.bus.clone(), self.subjects.clone()),
            ingest::Routes {
                shards: shard_txs,
                models,
                recent: recent.clone(),
                admission: admit::Admission::new(cfg.series),
                partitioned: None,
                progress,
            },
            wm_tx,
            limits,
            stats.clone(),
            stop.clone(),
        )));
        let discipline = correlate::Discipline::new(&topology, &cfg.symptoms, &cfg.planned)
            .map_err(StartError::Config)?
            .entry_names(&cfg.entry_services);
        // The actuators, in order: each HTTP route for what it takes, then
        // the edge agents over the bus for everything else.
        let mut actuators: Vec<Arc<dyn selfheal_bus::Actuator>> = Vec::new();
        if let Some((client, routes)) = &http {
            for r in routes.iter() {
                actuators.push(Arc::new(act::gateway::HttpActuator::new(
                    client.clone(),
                    r.clone(),
                )));
            }
        }
        actuators.push(Arc::new(act::gateway::BusActuator::new(
            self.bus.clone(),
            self.subjects.clone(),
            Duration::from_millis(cfg.action_timeout_ms),
        )));
        let engine = engine::Engine {
            bus: self.bus.clone(),
            subjects: self.subjects.clone(),
            topology,
            store: store.clone(),
            runtime,
            gateway: act::Gateway::new(
                act::Guards::new(cfg.guard.clone()),
                store.clone(),
                stats.clone(),
                actuators,
                results_tx,
            ),
            stats: stats.clone(),
            correlator: {
                let mut c = correlate::Correlator::new(
                    (cfg.correlation_window_s * 1000) as i64,
                    (cfg.settle_s * 1000) as i64,
                );
                c.discipline = discipline;
                c
            },
            context: context::Context::default(),
            saved: Default::default(),
            cluster,
            playbook_dir: cfg.playbooks.clone(),
            fed_ahead: cfg.fed_ahead,
            rules,
            recent: recent.clone(),
            classes: classes.clone(),
            reconcile: cfg.reconcile.clone(),
            watch: Default::default(),
            approvals: match &oncall {
                None => None,
                Some((cfg, key)) => {
                    let (tx, rx) = mpsc::channel(256);
                    let client = match &http {
                        Some((c, _)) => c.clone(),
                        None => act::http::client().map_err(|e| StartError::Config(vec![e]))?,
                    };
                    tasks.push(tokio::spawn(act::notify::run(
                        rx,
                        Arc::new(cfg.notify.clone()),
                        client,
                        stats.clone(),
                    )));
                    Some(act::approvals::Approvals::new(
                        act::approvals::OnCall {
                            cfg: cfg.clone(),
                            key: key.clone(),
                            notices: tx,
                        },
                        store.clone(),
                        stats.clone(),
                    ))
                }
            },
        };
        tasks.push(tokio::spawn(engine.run(
            anomaly_rx,
            engine::Inputs {
                results: results_rx,
                contexts: context_rx,
                decisions: decisions_rx,
                alerts: alerts_rx,
                ended: ended_rx,
            },
            local_shards.max(1),
            stop.clone(),
        )));
        let anchor_bus = (self.bus.clone(), self.subjects.audit_anchor());
        let (change_bus, change_subjects) = (self.bus, self.subjects);
        let mut api_addr = None;
        if let Some(addr) = cfg.listen {
            let (bound, join) = api::serve_with(
                addr,
                api::ApiState {
                    stats: stats.clone(),
                    changes: cfg
                        .change_token_sha256
                        .as_deref()
                        .and_then(api::parse_sha256)
                        .map(|token_sha256| api::ChangeHook {
                            bus: change_bus.clone(),
                            subjects: change_subjects.clone(),
                            token_sha256,
                            limits,
                            clock: wm_rx.clone(),
                        }),
                    kill: cfg.guard.kill_switch_file.clone().and_then(|file| {
                        let token_sha256 = cfg
                            .admin_token_sha256
                            .as_deref()
                            .and_then(api::parse_sha256);
                        (token_sha256.is_some() || oncall.is_some())
                            .then_some(api::KillSwitch { file, token_sha256 })
                    }),
                    alerts: cfg
                        .alert_token_sha256
                        .as_deref()
                        .and_then(api::parse_sha256)
                        .map(|token_sha256| api::AlertHook {
                            token_sha256,
                            tx: alerts_tx.clone(),
                        }),
                    remote_write: cfg.remote_write.as_ref().and_then(|rw| {
                        Some(api::RemoteWriteHook {
                            token_sha256: api::parse_sha256(&rw.token_sha256)?,
                            intake: Arc::new(std::sync::Mutex::new(remote_write::Intake::new(rw))),
                            bus: change_bus.clone(),
                            subjects: change_subjects.clone(),
                            seq: Default::default(),
                        })
                    }),
                    limit: Arc::new(api::limit::RefusalLimit::per_minute(
                        cfg.refusals_per_minute,
                    )),
                    kpi: Some(api::KpiSource {
                        store: store.clone(),
                        clock: wm_rx.clone(),
                    }),
                    oncall: oncall.map(|(cfg, key)| {
                        api::oncall::OnCallApi::new(
                            cfg,
                            key,
                            decisions_tx,
                            store.clone(),
                            recent,
                            stats.clone(),
                        )
                        .with_clock(wm_rx.clone())
                    }),
                },
                stop.clone(),
                cfg.http,
            )
            .await
            .map_err(|e| StartError::Config(vec![format!("listen: cannot bind {addr}: {e}")]))?;
            tracing::info!(%bound, "HTTP API listening");
            api_addr = Some(bound);
            tasks.push(join);
        }
        tasks.push(tokio::spawn(summarize_rejections(
            stats.clone(),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(anchor_audit(
            store.clone(),
            anchor_bus,
            Duration::from_secs(cfg.audit_anchor_every_s),
            stats.clone(),
            stop.clone(),
        )));
        Ok(BrainHandle {
            stats,
            stop,
            tasks,
            api_addr,
            store: Some(store),
            ended: Some(ended_tx),
        })
    }
}
