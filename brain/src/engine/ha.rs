//! Active/standby engines (`[ha]`). Every brain of a group ingests and
//! detects; only the engine holding the lease acts. The leader replicates
//! what a successor needs to go on exactly where it stopped, each before
//! the step that depends on it:
//!
//! - `run.<incident>`: an unfinished incident's checkpoint (evidence,
//!   diagnosis, plan, cursor), saved before each action is written ahead;
//! - `action.<id>`: each action's record, written ahead before it is sent
//!   and again with its outcome;
//! - `done.<incident>`: how a finished incident ended;
//! - `approval.<id>`: each approval request and its votes (with their
//!   links' nonces), at every change: a person's pending decision, and a
//!   link already used, carry over to the successor.
//!
//! A brain that wins the lease takes this state into its own store (each
//! change on its audit chain) and resumes as a brain restarted on its store
//! does: unanswered actions re-sent under their idempotency keys (the
//! actuator applies each once), cooldowns seeded from the actions' records,
//! cut-off playbooks resumed at their next step when their symptoms persist.
//! A brain that loses the lease drops its incidents and stands by.

use std::sync::{Arc, atomic::Ordering};

use selfheal_bus::{
    Bytes,
    ha::{Lease, Replica, Standing},
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Engine;
use crate::{incident::Terminal, stats::BrainStats, store::ActionRow};

/// Key prefix of incidents' checkpoints.
pub(super) const RUN: &str = "run.";
/// Key prefix of actions' records.
const ACTION: &str = "action.";
/// Key prefix of finished incidents' ends.
const DONE: &str = "done.";
/// Key prefix of approvals.
const APPROVAL: &str = "approval.";

/// An approval as replicated.
#[derive(serde::Serialize, serde::Deserialize)]
struct Asked {
    row: crate::store::ApprovalRow,
    votes: Vec<crate::store::CastVote>,
}

/// What an engine shares with the others of its group.
#[derive(Clone)]
pub struct Cluster {
    /// The leadership lease, as this brain sees it.
    pub lease: Arc<Lease>,
    /// Where the leader's state is replicated.
    pub replica: Arc<dyn Replica>,
}

/// How a finished incident ended, as replicated.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ended {
    state: String,
    recovered_ts: Option<i64>,
    /// What the continuity report reads of it (cause, times, what it
    /// cost), so that the engine leading after a takeover counts it.
    #[serde(default)]
    facts: Option<crate::store::continuity::IncidentFacts>,
}

/// Resolves when `standing` (if any) changes; never without one.
pub(super) async fn changed(
    standing: &mut Option<watch::Receiver<Standing>>,
) -> Result<(), watch::error::RecvError> {
    match standing {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// Whether this engine may act now: alone, always; in a group, while
    /// it holds the lease.
    pub(super) fn leading(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.lease.held())
    }

    /// The lease was won or lost.
    pub(super) async fn on_standing(
        &mut self,
        standing: &mut Option<watch::Receiver<Standing>>,
        now: i64,
    ) {
        let Some(rx) = standing else { return };
        let s = *rx.borrow_and_update();
        match s {
            Standing::Leader(term) => {
                self.stats.engine_leading.store(1, Ordering::Relaxed);
                BrainStats::bump(&self.stats.takeovers);
                self.take_over(term, now).await;
            }
            Standing::Standby => {
                self.stats.engine_leading.store(0, Ordering::Relaxed);
                let n = self.correlator.incidents.len();
                self.correlator.incidents.clear();
                self.saved.clear();
                warn!(
                    incidents = n,
                    "standing by: another engine leads; this one's incidents are left to it"
                );
            }
        }
    }

    /// Takes the replicated state into the store, then resumes from the
    /// store as after a restart.
    async fn take_over(&mut self, term: u64, now: i64) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let holder = c.lease.holder.clone();
        let read = || async {
            Ok::<_, selfheal_bus::BusError>((
                c.replica.entries(DONE).await?,
                c.replica.entries(ACTION).await?,
                c.replica.entries(RUN).await?,
                c.replica.entries(APPROVAL).await?,
            ))
        };
        let mut got = read().await;
        for _ in 0..3 {
            if got.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            got = read().await;
        }
        let (done, actions, runs, approvals) = match got {
            Ok(v) => v,
            Err(e) => {
                // Acting on the local store alone could repeat what the
                // last leader did: stand by until the state is readable.
                warn!(error = %e, "replicated state unreadable: giving the lease back");
                self.stats.engine_leading.store(0, Ordering::Relaxed);
                c.lease.give_back();
                return;
            }
        };
        let from = format!("replica:{holder}");
        let (mut adopted, mut unreadable) = (0usize, 0usize);
        for (key, v) in &done {
            let id = &key[DONE.len()..];
            match serde_json::from_slice::<Ended>(v) {
                Ok(e) => {
                    let known = self.read(|db| db.incident_state(id));
                    if known.is_ok_and(|s| s.is_some_and(|s| Terminal::from_stored(&s).is_none())) {
                        self.write("incident", |db| {
                            db.close_incident(id, &e.state, e.recovered_ts)
                        });
                    }
                    // Its facts, for the continuity report here: an
                    // incident the last leader opened and ended is new to
                    // this store.
                    if let Some(f) = e.facts.filter(|f| f.id == id) {
                        self.write("incident", |db| db.adopt_ended(&f, &from).map(|_| ()));
                    }
                }
                Err(_) => unreadable += 1,
            }
        }
        for (_, v) in &actions {
            match serde_json::from_slice::<ActionRow>(v) {
                Ok(row) => {
                    self.write("action", |db| db.adopt_action(&row, &from));
                    adopted += 1;
                }
                Err(_) => unreadable += 1,
            }
        }
        let mut asked = 0usize;
        for (_, v) in &approvals {
            match serde_json::from_slice::<Asked>(v) {
                Ok(a) => match self.read(|db| db.adopt_approval(&a.row, &a.votes, &from)) {
                    Ok(true) => asked += 1,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(approval = %a.row.id, error = %e, "replicated approval not adopted")
                    }
                },
                Err(_) => unreadable += 1,
            }
        }
        for (key, v) in &runs {
            let id = &key[RUN.len()..];
            match serde_json::from_slice::<crate::incident::Checkpoint>(v) {
                Ok(cp) => {
                    let json = String::from_utf8_lossy(v);
                    self.write("incident", |db| {
                        db.adopt_incident(id, &cp.service, cp.onset, cp.opened)
                    });
                    self.write("checkpoint", |db| db.save_run(id, &json, cp.saved));
                }
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            warn!(
                unreadable,
                "replicated entries not understood were left out of the takeover"
            );
        }
        let detail = format!(
            "term {term}: took over with {} unfinished incident(s), {adopted} action record(s), {asked} approval(s), {} finished incident(s) from the replicated state",
            runs.len(),
            done.len()
        );
        self.write("audit", |db| {
            db.audit(&holder, "takeover", "engine", &detail)
        });
        info!(term, holder = %holder, now, "{detail}");
        self.correlator.incidents.clear();
        self.saved.clear();
        self.resume().await;
    }

    /// Writes `value` under `key` in the replicated state, when there is
    /// one; a failure is counted and logged (the local store has it).
    pub(super) async fn replicate(&self, key: &str, value: Bytes) {
        let Some(c) = &self.cluster else { return };
        if let Err(e) = c.replica.put(key, value).await {
            BrainStats::bump(&self.stats.replica_write_failures);
            warn!(key, error = %e, "replicated state not written");
        }
    }

    /// Replicates action `id`'s record as the store has it now.
    pub(super) async fn replicate_action(&self, id: &str) {
        if self.cluster.is_none() {
            return;
        }
        match self.read(|db| db.action(id)) {
            Ok(Some(row)) => match serde_json::to_vec(&row) {
                Ok(v) => self.replicate(&format!("{ACTION}{id}"), v.into()).await,
                Err(e) => warn!(action = id, error = %e, "action record not encoded"),
            },
            Ok(None) => {}
            Err(e) => warn!(action = id, error = %e, "action record not read for replication"),
        }
    }

    /// Replicates approval `id` and its votes as the store has them now.
    pub(super) async fn replicate_approval(&self, id: &str) {
        if self.cluster.is_none() {
            return;
        }
        let got = self
            .read(|db| Ok::<_, crate::store::StoreError>((db.approval(id)?, db.cast_votes(id)?)));
        match got {
            Ok((Some(row), votes)) => match serde_json::to_vec(&Asked { row, votes }) {
                Ok(v) => self.replicate(&format!("{APPROVAL}{id}"), v.into()).await,
                Err(e) => warn!(approval = id, error = %e, "approval not encoded"),
            },
            Ok((None, _)) => {}
            Err(e) => warn!(approval = id, error = %e, "approval not read for replication"),
        }
    }

    /// Replicates how incident `i` ended, and drops its checkpoint.
    pub(super) async fn replicate_closed(&self, i: usize, t: Terminal, recovered_ts: Option<i64>) {
        let Some(c) = &self.cluster else { return };
        let id = self.correlator.incidents[i].id.clone();
        let facts = match self.read(|db| db.incident_facts(&id)) {
            Ok(f) => f,
            Err(e) => {
                warn!(incident = %id, error = %e, "incident's facts not read for replication");
                None
            }
        };
        let ended = Ended {
            state: t.as_str().to_string(),
            recovered_ts,
            facts,
        };
        if let Ok(v) = serde_json::to_vec(&ended) {
            self.replicate(&format!("{DONE}{id}"), v.into()).await;
        }
        if let Err(e) = c.replica.delete(&format!("{RUN}{id}")).await {
            BrainStats::bump(&self.stats.replica_write_failures);
            warn!(incident = %id, error = %e, "replicated checkpoint not dropped");
        }
    }
}
