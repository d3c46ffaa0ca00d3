//! The action gateway: the one way out of the brain for an action.
//!
//! guards → write-ahead → dispatch → result. [`Gateway::admit`] asks the
//! guards, and on their yes writes the action to the store as `pending`
//! under its idempotency key; only then does it hand back a [`Ready`],
//! which nothing else can make, and which [`Gateway::dispatch`] sends to
//! the first [`Actuator`] that takes it. The actuator's answer comes back
//! on the results channel as an [`ActionResult`]; [`Gateway::answered`]
//! records it. After a restart, [`Gateway::resume`] re-sends every action
//! the store holds as pending, under its own key.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use selfheal_bus::{
    ActError, ActErrorKind, ActionReply, ActionRequest, ActionStatus, Actuator, Bus, Limits,
    Subjects, WIRE_VERSION, decode, encode,
};
use tokio::sync::mpsc;
use tracing::{error, info};

use super::{Guards, Verdict, http::HttpRoute};
use crate::{
    playbook::PlannedAction,
    stats::BrainStats,
    store::{ActionRow, ActionState, Store, StoreError},
};

/// The actuator's answer to one dispatched action.
#[derive(Debug)]
pub struct ActionResult {
    /// The incident that asked for it.
    pub incident: String,
    /// The action's id (its idempotency key).
    pub action: String,
    /// The answer, or why there was none.
    pub reply: Result<ActionReply, ActError>,
}

/// What an incident asks the gateway to do: step `step` of its plan.
pub struct Intent<'a> {
    /// The incident.
    pub incident: &'a str,
    /// Its playbook.
    pub playbook: &'a str,
    /// The step's index in the plan (part of the action's id).
    pub step: usize,
    /// The action.
    pub action: &'a PlannedAction,
    /// A person approved the plan (a change freeze does not hold it).
    pub approved: bool,
}

impl Intent<'_> {
    /// The action's id: the incident's id and the step, so that the same
    /// step of the same incident is the same action wherever it is sent.
    pub fn id(&self) -> String {
        format!("{}-s{}", self.incident, self.step)
    }

    fn row(&self, now: i64, state: ActionState, reason: &str) -> ActionRow {
        let a = self.action;
        ActionRow {
            id: self.id(),
            incident_id: self.incident.to_string(),
            playbook: self.playbook.to_string(),
            kind: a.kind.as_str().to_string(),
            service: a.service.clone(),
            target: a.target.clone(),
            // A map of JSON values always serializes.
            params: serde_json::to_string(&a.params).unwrap_or_default(),
            state: state.as_str().to_string(),
            reason: reason.to_string(),
            ts: now,
            recorded_at_us: 0,
        }
    }
}

/// An action the guards allowed and the store holds as pending: the only
/// thing [`Gateway::dispatch`] sends. Made by [`Gateway::admit`] alone.
#[must_use = "an admitted action is pending in the store until dispatched"]
pub struct Ready {
    req: ActionRequest,
    params: String,
}

impl Ready {
    /// The action's id.
    pub fn id(&self) -> &str {
        &self.req.id
    }
    /// Its parameters as stored (JSON).
    pub fn params(&self) -> &str {
        &self.params
    }
}

/// The gateway's decision on an [`Intent`].
pub enum Admission {
    /// Allowed and written ahead: dispatch it.
    Ready(Ready),
    /// A guard refused it (recorded as refused); the reason.
    Refused(String),
    /// Dry run is in force: nothing is sent.
    DryRun,
    /// The store would not take it, so it is not sent.
    NotWritten(StoreError),
}

/// Guards, write-ahead and the actuators.
pub struct Gateway {
    guards: Guards,
    store: Arc<Store>,
    stats: Arc<BrainStats>,
    /// Tried in order; the first that takes an action carries it.
    actuators: Vec<Arc<dyn Actuator>>,
    results: mpsc::Sender<ActionResult>,
}

impl Gateway {
    /// A gateway sending through `actuators` (the first that takes an
    /// action carries it) and answering on `results`.
    pub fn new(
        guards: Guards,
        store: Arc<Store>,
        stats: Arc<BrainStats>,
        actuators: Vec<Arc<dyn Actuator>>,
        results: mpsc::Sender<ActionResult>,
    ) -> Self {
        Gateway {
            guards,
            store,
            stats,
            actuators,
            results,
        }
    }

    /// The guards (read-only: decisions go through [`Gateway::admit`]).
    pub fn guards(&self) -> &Guards {
        &self.guards
    }

    /// Guards, then the write-ahead. A refusal is recorded with its reason.
    pub fn admit(&mut self, intent: &Intent<'_>, now: i64) -> Admission {
        match self
            .guards
            .check_with(intent.incident, intent.action, now, intent.approved)
        {
            Verdict::Refuse(why) => {
                BrainStats::bump(&self.stats.actions_refused);
                let row = intent.row(now, ActionState::Refused, &why);
                self.log_write("action", self.db(|db| db.record_action(&row)));
                return Admission::Refused(why);
            }
            Verdict::DryRun => return Admission::DryRun,
            Verdict::Allow => {}
        }
        let row = intent.row(now, ActionState::Pending, "");
        // Write-ahead: nothing is sent that the store does not hold.
        if let Err(e) = self.db(|db| db.record_action(&row)) {
            error!(error = %e, action = %row.id, "could not write action ahead; not sending it");
            return Admission::NotWritten(e);
        }
        super::failpoint("after_record");
        self.guards.sent(intent.incident, intent.action, now);
        BrainStats::bump(&self.stats.actions_sent);
        let a = intent.action;
        Admission::Ready(Ready {
            req: ActionRequest {
                v: WIRE_VERSION,
                id: row.id,
                incident: intent.incident.to_string(),
                service: a.service.clone(),
                kind: a.kind,
                target: a.target.clone(),
                params: a.params.clone(),
                ts: now,
            },
            params: row.params,
        })
    }

    /// Records `intent` as a dry run: written, never sent.
    pub fn dry_run(&self, intent: &Intent<'_>, now: i64) {
        BrainStats::bump(&self.stats.actions_dry_run);
        let row = intent.row(now, ActionState::DryRun, "playbook policy: dry run");
        self.log_write("action", self.db(|db| db.record_action(&row)));
    }

    /// Sends an admitted action to its actuator in the background; the
    /// answer comes back on the results channel.
    pub fn dispatch(&self, ready: Ready) {
        let req = ready.req;
        let Some(actuator) = self.actuators.iter().find(|a| a.takes(&req)).cloned() else {
            // Recorded as failed through the usual path: the incident is
            // told, and escalates.
            let _ = self.results.try_send(ActionResult {
                incident: req.incident.clone(),
                action: req.id.clone(),
                reply: Err(ActError::new(
                    ActErrorKind::Unreachable,
                    format!("no actuator takes {} on {}", req.kind.as_str(), req.service),
                )),
            });
            return;
        };
        let tx = self.results.clone();
        tokio::spawn(async move {
            let reply = actuator.apply(&req).await;
            super::failpoint("after_send");
            let _ = tx
                .send(ActionResult {
                    incident: req.incident,
                    action: req.id,
                    reply,
                })
                .await;
        });
    }

    /// Records an actuator's answer; returns the action's state and the
    /// reason as stored.
    pub fn answered(&mut self, r: &ActionResult) -> (ActionState, String) {
        self.guards.answered();
        let (state, reason) = match &r.reply {
            Ok(rep) => (
                match rep.status {
                    ActionStatus::Applied => ActionState::Applied,
                    ActionStatus::Duplicate => ActionState::Duplicate,
                    ActionStatus::Rejected => ActionState::Rejected,
                    ActionStatus::Failed => ActionState::Failed,
                },
                rep.message.clone(),
            ),
            Err(e) => {
                info!(action = %r.action, kind = e.kind.as_str(), error = %e, "action not answered");
                (ActionState::Failed, e.to_string())
            }
        };
        self.log_write(
            "action",
            self.db(|db| db.finish_action(&r.action, state, &reason)),
        );
        (state, reason)
    }

    /// After a restart: the cooldown is seeded from the stored actions (so
    /// a fault seen again is not acted on again by a new incident), and
    /// every action the store holds as pending (written ahead, maybe sent,
    /// never answered) is sent again under its own idempotency key, so the
    /// actuator applies it once and answers for it. Returns how many were
    /// re-sent; `Err` when the store could not be read (nothing resumed).
    pub fn resume(&mut self) -> Result<usize, StoreError> {
        let actions = self.db(|db| db.actions())?;
        for a in &actions {
            if matches!(a.state.as_str(), "pending" | "applied" | "duplicate") {
                self.guards.seed(&a.incident_id, &a.target, a.ts);
            }
        }
        let mut sent = 0;
        for a in actions.iter().filter(|a| a.state == "pending") {
            let kind: Result<selfheal_bus::ActionKind, _> =
                serde_json::from_value(serde_json::Value::String(a.kind.clone()));
            let params = serde_json::from_str(&a.params);
            let (Ok(kind), Ok(params)) = (kind, params) else {
                self.log_write(
                    "action",
                    self.db(|db| {
                        db.finish_action(
                            &a.id,
                            ActionState::Failed,
                            "unreadable in the store at restart; not re-sent",
                        )
                    }),
                );
                continue;
            };
            info!(action = %a.id, "restart: re-sending an unanswered action under its key");
            self.log_write(
                "timeline",
                self.db(|db| {
                    db.timeline(
                        &a.incident_id,
                        a.ts,
                        "resumed",
                        &format!(
                            "brain restarted: action {} re-sent under its idempotency key",
                            a.id
                        ),
                    )
                }),
            );
            self.guards.resent();
            BrainStats::bump(&self.stats.actions_sent);
            self.dispatch(Ready {
                req: ActionRequest {
                    v: WIRE_VERSION,
                    id: a.id.clone(),
                    incident: a.incident_id.clone(),
                    service: a.service.clone(),
                    kind,
                    target: a.target.clone(),
                    params,
                    ts: a.ts,
                },
                params: a.params.clone(),
            });
            sent += 1;
        }
        Ok(sent)
    }

    /// A store call, off the async workers.
    fn db<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        self.store.blocking(f)
    }

    fn log_write(&self, what: &str, r: crate::store::Result<()>) {
        crate::store::log_write(&self.stats, what, r);
    }
}

/// Actions carried by an edge agent: a request on `<prefix>.act.<service>`
/// and its reply. Takes every action (the fallback after the routes).
pub struct BusActuator {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
}

impl BusActuator {
    /// Requests over `bus`, waiting `timeout` for each answer.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration) -> Self {
        BusActuator {
            bus,
            subjects,
            timeout,
        }
    }
}

#[async_trait]
impl Actuator for BusActuator {
    fn name(&self) -> &str {
        "bus"
    }

    fn takes(&self, _req: &ActionRequest) -> bool {
        true
    }

    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError> {
        let payload =
            encode(req).map_err(|e| ActError::new(ActErrorKind::Failed, e.to_string()))?;
        let bytes = self
            .bus
            .request(&self.subjects.act(&req.service), payload, self.timeout)
            .await
            .map_err(|e| ActError::from_bus(&e, ""))?;
        // The actuator's clock is the platform's; check size and shape only.
        let limits = Limits {
            max_skew_ms: i64::MAX / 2,
            ..Limits::default()
        };
        let reply: ActionReply = decode(&bytes, &limits, 0)
            .map_err(|e| ActError::new(ActErrorKind::BadReply, format!("unreadable reply: {e}")))?;
        if reply.id != req.id && reply.id != "unknown" {
            return Err(ActError::new(
                ActErrorKind::BadReply,
                format!("reply for {} answered {}", req.id, reply.id),
            ));
        }
        Ok(reply)
    }
}

/// Actions carried by an HTTP endpoint (a deploy system, a feature-flag
/// service): one configured route.
pub struct HttpActuator {
    client: reqwest::Client,
    route: HttpRoute,
}

impl HttpActuator {
    /// `route`, through `client`.
    pub fn new(client: reqwest::Client, route: HttpRoute) -> Self {
        HttpActuator { client, route }
    }
}

#[async_trait]
impl Actuator for HttpActuator {
    fn name(&self) -> &str {
        &self.route.name
    }

    fn takes(&self, req: &ActionRequest) -> bool {
        self.route.takes(req.kind, &req.service)
    }

    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError> {
        super::http::send(&self.client, &self.route, req).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use selfheal_bus::{ActionKind, LocalTransport};

    use super::*;
    use crate::act::GuardConfig;

    fn action(target: &str) -> PlannedAction {
        PlannedAction {
            kind: ActionKind::Restart,
            service: "cashier".into(),
            target: target.into(),
            params: BTreeMap::new(),
        }
    }

    fn intent<'a>(incident: &'a str, step: usize, a: &'a PlannedAction) -> Intent<'a> {
        Intent {
            incident,
            playbook: "pb",
            step,
            action: a,
            approved: false,
        }
    }

    /// An edge that applies an action only when the brain's store already
    /// holds it as pending (the write-ahead), and says so otherwise.
    async fn edge(bus: Bus, store: Arc<Store>, seen: Arc<std::sync::Mutex<Vec<String>>>) {
        let mut sub = bus.subscribe("t.act.>").await.unwrap();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let req: ActionRequest = serde_json::from_slice(&m.payload).unwrap();
                let stored = store.action(&req.id).unwrap().map(|r| r.state);
                seen.lock().unwrap().push(req.id.clone());
                let status = if stored.as_deref() == Some("pending") {
                    ActionStatus::Applied
                } else {
                    ActionStatus::Rejected
                };
                let rep = selfheal_bus::actuate::reply(&req, status, format!("stored: {stored:?}"));
                if let Some(to) = m.reply {
                    bus.publish(&to, encode(&rep).unwrap()).await.unwrap();
                }
            }
        });
    }

    fn gateway(
        dir: &std::path::Path,
        cfg: GuardConfig,
    ) -> (Gateway, Bus, Arc<Store>, mpsc::Receiver<ActionResult>) {
        let bus: Bus = Arc::new(LocalTransport::new(64));
        let store = Arc::new(Store::open(&dir.join("s.db")).unwrap());
        let (tx, rx) = mpsc::channel(16);
        let actuator = BusActuator::new(bus.clone(), Subjects::new("t"), Duration::from_secs(2));
        let g = Gateway::new(
            Guards::new(cfg),
            store.clone(),
            Arc::new(BrainStats::default()),
            vec![Arc::new(actuator)],
            tx,
        );
        (g, bus, store, rx)
    }

    #[tokio::test]
    async fn nothing_leaves_before_the_store_holds_it_and_the_answer_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut g, bus, store, mut rx) = gateway(dir.path(), GuardConfig::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        edge(bus.clone(), store.clone(), seen.clone()).await;
        let a = action("cashier");
        let intent = intent("inc-1", 0, &a);
        let Admission::Ready(ready) = g.admit(&intent, 1_000) else {
            panic!("the guards allow a first action");
        };
        assert_eq!(ready.id(), "inc-1-s0");
        assert_eq!(store.action("inc-1-s0").unwrap().unwrap().state, "pending");
        g.dispatch(ready);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let (state, reason) = g.answered(&r);
        assert_eq!(state, ActionState::Applied, "{reason}");
        assert_eq!(store.action("inc-1-s0").unwrap().unwrap().state, "applied");

        // The cooldown: another incident may not touch the same target.
        let other = Intent {
            incident: "inc-2",
            ..intent
        };
        match g.admit(&other, 2_000) {
            Admission::Refused(why) => assert!(why.contains("cooldown"), "{why}"),
            _ => panic!("the cooldown must refuse"),
        }
        let refused = store.action("inc-2-s0").unwrap().unwrap();
        assert_eq!(refused.state, "refused");
        assert_eq!(seen.lock().unwrap().as_slice(), ["inc-1-s0"], "one sent");
    }

    #[tokio::test]
    async fn a_kill_switch_refuses_and_dry_run_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let kill = dir.path().join("kill");
        std::fs::write(&kill, "").unwrap();
        let cfg = GuardConfig {
            kill_switch_file: Some(kill),
            ..GuardConfig::default()
        };
        let (mut g, _bus, store, _rx) = gateway(dir.path(), cfg);
        let a = action("cashier");
        let intent = Intent {
            incident: "inc-1",
            playbook: "pb",
            step: 3,
            action: &a,
            approved: true,
        };
        assert!(matches!(g.admit(&intent, 1), Admission::Refused(w) if w.contains("kill switch")));
        assert_eq!(store.action("inc-1-s3").unwrap().unwrap().state, "refused");

        let dir = tempfile::tempdir().unwrap();
        let cfg = GuardConfig {
            dry_run: true,
            ..GuardConfig::default()
        };
        let (mut g, _bus, store, _rx) = gateway(dir.path(), cfg);
        assert!(matches!(g.admit(&intent, 1), Admission::DryRun));
        assert!(
            store.action("inc-1-s3").unwrap().is_none(),
            "nothing written"
        );
        g.dry_run(&intent, 1);
        assert_eq!(store.action("inc-1-s3").unwrap().unwrap().state, "dry_run");
    }

    #[tokio::test]
    async fn a_restart_resends_what_was_written_ahead_under_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut g, _bus, _store, _rx) = gateway(dir.path(), GuardConfig::default());
            let a = action("cashier");
            let intent = intent("inc-1", 1, &a);
            // Written ahead, then the process "dies" before dispatching.
            let Admission::Ready(ready) = g.admit(&intent, 1_000) else {
                panic!("allowed");
            };
            drop(ready);
        }
        let (mut g, bus, store, mut rx) = gateway(dir.path(), GuardConfig::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        edge(bus, store.clone(), seen.clone()).await;
        assert_eq!(g.resume().unwrap(), 1);
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.answered(&r).0, ActionState::Applied);
        assert_eq!(seen.lock().unwrap().as_slice(), ["inc-1-s1"]);
        // And the cooldown spans the restart.
        let a = action("cashier");
        let other = intent("inc-9", 0, &a);
        assert!(matches!(g.admit(&other, 2_000), Admission::Refused(_)));
    }

    #[tokio::test]
    async fn no_edge_answering_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut g, _bus, _store, mut rx) = gateway(dir.path(), GuardConfig::default());
        let a = action("cashier");
        let intent = intent("inc-1", 0, &a);
        let Admission::Ready(ready) = g.admit(&intent, 1) else {
            panic!("allowed");
        };
        g.dispatch(ready);
        let r = rx.recv().await.unwrap();
        let e = r.reply.as_ref().unwrap_err();
        assert_eq!(e.kind, ActErrorKind::Unreachable, "{e}");
        assert_eq!(g.answered(&r).0, ActionState::Failed);
    }
}
