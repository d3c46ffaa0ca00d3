//! Approvals: a plan that needs a person waits for one. This module owns
//! the on-call policy — who is asked (the rota, two approvers from a risk
//! up, separation of duties), signed links and their notices, what a
//! decision may do (state, link use, who was asked, votes), what happens
//! when nobody decides in time — and writes every step to the store and
//! its audit log. It moves no incident: it says what a request, a timeout
//! or a decision came to, and the engine applies that to the incident.

use std::sync::Arc;

use selfheal_bus::{ActionKind, wall_ms};
use tokio::sync::mpsc;
use tracing::{error, info};

use super::{
    approval::{Decide, Decided, DecisionStatus, Link, LinkKey, OnCallConfig, OnTimeout},
    notify::{Message, Notice},
};
use crate::{
    context::Context,
    incident::Incident,
    playbook::{Playbook, Step},
    stats::{BrainStats, Fault},
    store::{ApprovalRow, Store, StoreError, VoteRefused},
};

/// The on-call set-up: policy, link key, the notification queue.
pub struct OnCall {
    /// The policy.
    pub cfg: Arc<OnCallConfig>,
    /// The link-signing key.
    pub key: LinkKey,
    /// To the notification task.
    pub notices: mpsc::Sender<Message>,
}

/// What an approver's time running out came to.
#[derive(Debug, PartialEq)]
pub enum Expiry {
    /// The next person on the rota was asked, until `deadline`.
    Forwarded {
        /// Their time's end (event time).
        deadline: i64,
    },
    /// The policy and the playbook allow acting without a decision.
    ActByDefault,
    /// Closed without acting; hand the incident to a person, saying this.
    GiveUp(String),
}

/// What a person's decision came to.
#[derive(Debug)]
pub enum Decision {
    /// Refused (and audited as such), or recorded with another approver
    /// still needed: the answer as it stands.
    Answer(Decided),
    /// Rejected: nothing is done; the incident goes to a person, saying why.
    Rejected {
        /// The incident.
        incident: String,
        /// Why, for people.
        why: String,
    },
    /// Approved by enough people: the plan may go on.
    Approved {
        /// The incident.
        incident: String,
        /// Who approved it, for people.
        why: String,
    },
}

/// The approvals' owner.
pub struct Approvals {
    oncall: OnCall,
    store: Arc<Store>,
    stats: Arc<BrainStats>,
}

impl Approvals {
    /// Approvals under `oncall`, stored in `store`.
    pub fn new(oncall: OnCall, store: Arc<Store>, stats: Arc<BrainStats>) -> Self {
        Approvals {
            oncall,
            store,
            stats,
        }
    }

    /// The policy.
    pub fn cfg(&self) -> &OnCallConfig {
        &self.oncall.cfg
    }

    fn db<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        self.store.blocking(f)
    }

    fn write(&self, what: &str, f: impl FnOnce(&Store) -> crate::store::Result<()>) {
        self.store.write_logged(&self.stats, what, f);
    }

    /// The request for `inc`'s plan (of playbook `pb`), waiting for `why`:
    /// its plan and blast radius in words, how many must approve, who made
    /// the changes it rolls back (in `context`), and who is asked first.
    pub fn request_for(
        &self,
        inc: &Incident,
        pb: &Playbook,
        why: Vec<String>,
        context: &Context,
        now: i64,
    ) -> ApprovalRow {
        let cfg = &self.oncall.cfg;
        let acts: Vec<_> = inc
            .run()
            .plan()
            .iter()
            .filter_map(|s| match s {
                Step::Act(a) => Some(a),
                _ => None,
            })
            .collect();
        let plan: Vec<String> = acts
            .iter()
            .map(|a| {
                let p = serde_json::to_string(&a.params).unwrap_or_default();
                if p == "{}" {
                    format!("{} {}", a.kind.as_str(), a.target)
                } else {
                    format!("{} {} {p}", a.kind.as_str(), a.target)
                }
            })
            .collect();
        let mut targets: Vec<&str> = acts.iter().map(|a| a.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        let moved: f64 = acts
            .iter()
            .filter(|a| a.kind == ActionKind::ShiftTraffic)
            .filter_map(|a| a.params.get("fraction").and_then(|v| v.as_f64()))
            .fold(0.0, f64::max);
        let mut blast = format!(
            "{} action(s) on {} target(s): {}",
            acts.len(),
            targets.len(),
            targets.join(", ")
        );
        if moved > 0.0 {
            blast.push_str(&format!(
                "; moves up to {:.0}% of a link's traffic",
                moved * 100.0
            ));
        }
        if acts.iter().any(|a| a.kind == ActionKind::Degrade) {
            blast.push_str("; degraded scenes turn their payments away");
        }
        // Separation of duties: who made the changes this plan rolls back.
        let mut authors = Vec::new();
        for a in &acts {
            if matches!(a.kind, ActionKind::Rollback | ActionKind::RevertConfig) {
                for c in context.changes(&a.target, now - 3_600_000, now + 60_000) {
                    if !c.author.is_empty() && !authors.contains(&c.author) {
                        authors.push(c.author.clone());
                    }
                }
            }
        }
        let required = if pb.meta.risk >= cfg.two_approvers_from {
            2
        } else {
            1
        };
        // The first `required` people on the rota, and, when they all made
        // a change the plan rolls back, the next one who did not.
        let on_call = cfg.on_call_at(now);
        let mut first: Vec<String> = on_call.iter().take(required as usize).cloned().collect();
        if first.iter().all(|u| authors.contains(u))
            && let Some(next) = on_call
                .iter()
                .find(|u| !first.contains(u) && !authors.contains(u))
        {
            first.push(next.clone());
        }
        ApprovalRow {
            id: format!("{}-a", inc.id),
            incident_id: inc.id.clone(),
            playbook: pb.name.clone(),
            risk: pb.meta.risk.as_str().to_string(),
            plan,
            blast,
            reasons: why,
            required,
            authors,
            on_timeout: cfg.on_timeout.as_str().to_string(),
            notified: first,
            state: "waiting".into(),
            created_ts: now,
            deadline_ts: now + (cfg.timeout_s * 1000) as i64,
            decided_ts: None,
            outcome: String::new(),
        }
    }

    /// Files `row` (and its audit entry).
    pub fn request(&self, row: &ApprovalRow) -> Result<(), StoreError> {
        self.db(|db| db.request_approval(row))?;
        BrainStats::bump(&self.stats.approvals_requested);
        Ok(())
    }

    /// Sends each person `row` asks a signed link; `summary` is the
    /// diagnosis in a line.
    pub fn ask(&self, row: &ApprovalRow, summary: &str) {
        for u in &row.notified {
            self.notify(row, u, summary);
        }
    }

    /// Sends `user` a signed link for `row`.
    fn notify(&self, row: &ApprovalRow, user: &str, summary: &str) {
        let oc = &self.oncall;
        let expires_ms = wall_ms() + (oc.cfg.link_ttl_s * 1000) as i64;
        let link = Link::sign(&oc.key, &row.id, user, expires_ms);
        let n = Notice {
            approval: row.id.clone(),
            incident: row.incident_id.clone(),
            approver: user.to_string(),
            summary: summary.to_string(),
            actions: row.plan.clone(),
            blast: row.blast.clone(),
            why: row.reasons.clone(),
            link: link.url(&oc.cfg.public_url, &row.id),
            expires_ms,
        };
        if oc.notices.try_send(Message::Request(n)).is_err() {
            self.stats.fault(Fault::Notice {
                about: &row.id,
                error: "notification queue full; the request is on the page only",
            });
        }
    }

    /// Nobody decided on approval `id` in time: the policy says what
    /// happens. `acts_by_default` says whether a playbook allows acting
    /// without a decision; `summary` is the diagnosis in a line.
    pub fn expired(
        &self,
        id: &str,
        now: i64,
        acts_by_default: impl Fn(&str) -> bool,
        summary: &str,
    ) -> Expiry {
        let cfg = self.oncall.cfg.clone();
        let row = match self.db(|db| db.approval(id)) {
            Ok(Some(r)) => r,
            other => {
                error!(approval = id, ?other, "approval unreadable at its deadline");
                return Expiry::GiveUp("the approval could not be read".into());
            }
        };
        match cfg.on_timeout {
            OnTimeout::NextOnCall => {
                let on_call = cfg.on_call_at(now);
                let Some(next) = on_call.iter().find(|u| !row.notified.contains(u)) else {
                    return self.give_up(id, now, "expired", "nobody on the rota decided in time");
                };
                let mut notified = row.notified.clone();
                notified.push(next.clone());
                let deadline = now + (cfg.timeout_s * 1000) as i64;
                self.write("approval", |db| {
                    db.forward_approval(id, &notified, deadline)
                });
                self.write("timeline", |db| {
                    db.timeline(
                        &row.incident_id,
                        now,
                        "approval",
                        &format!("nobody decided in time; asking {next}, next on call"),
                    )
                });
                let row = ApprovalRow { notified, ..row };
                self.notify(&row, next, summary);
                Expiry::Forwarded { deadline }
            }
            OnTimeout::Act => {
                if !acts_by_default(&row.playbook) {
                    return self.give_up(
                        id,
                        now,
                        "abandoned",
                        &format!(
                            "nobody decided in time and playbook {} does not allow acting by default",
                            row.playbook
                        ),
                    );
                }
                BrainStats::bump(&self.stats.approvals_timed_out);
                self.close(
                    id,
                    "acted_by_default",
                    now,
                    "nobody decided in time; the policy and the playbook allow acting by default",
                );
                Expiry::ActByDefault
            }
            OnTimeout::Abandon => self.give_up(id, now, "abandoned", "nobody decided in time"),
        }
    }

    fn give_up(&self, id: &str, now: i64, state: &str, why: &str) -> Expiry {
        BrainStats::bump(&self.stats.approvals_timed_out);
        let why = format!("{why}; nothing was done");
        self.close(id, state, now, &why);
        Expiry::GiveUp(why)
    }

    /// Closes approval `id` in the store (and its audit log), then tells
    /// the chat tools, so that nobody acts on a stale request.
    pub fn close(&self, id: &str, state: &str, now: i64, outcome: &str) {
        self.write("approval", |db| db.close_approval(id, state, now, outcome));
        let m = Message::Closed {
            approval: id.to_string(),
            incident: id.strip_suffix("-a").unwrap_or(id).to_string(),
            state: state.to_string(),
            outcome: outcome.to_string(),
        };
        if self.oncall.notices.try_send(m).is_err() {
            BrainStats::bump(&self.stats.notify_failed);
        }
    }

    /// The symptoms cleared while the plan waited: the request is
    /// withdrawn.
    pub fn withdraw(&self, id: &str, now: i64) {
        self.close(
            id,
            "withdrawn",
            now,
            "the symptoms cleared before anyone decided; nothing was done",
        );
    }

    /// A person's decision, checked against the approval's state and the
    /// policy, recorded (with its link's nonce) and audited; a refusal is
    /// audited as one. `live` says whether an incident is still live.
    pub fn decide(&self, d: &Decide, now: i64, live: impl Fn(&str) -> bool) -> Decision {
        let d2 = self.judge(d, now, live);
        if let Decision::Answer(a) = &d2
            && a.status.refused()
        {
            BrainStats::bump(&self.stats.api_refused);
            self.write("audit", |db| {
                db.audit(
                    &d.user,
                    "refused",
                    &d.approval,
                    &format!(
                        "{} refused: {}",
                        if d.approve { "approval" } else { "rejection" },
                        a.message
                    ),
                )
            });
        }
        d2
    }

    fn judge(&self, d: &Decide, now: i64, live: impl Fn(&str) -> bool) -> Decision {
        let refuse = |status: DecisionStatus, state: &str, message: String| {
            Decision::Answer(Decided {
                status,
                state: state.to_string(),
                message,
                dispatched: None,
            })
        };
        let unavailable = || {
            refuse(
                DecisionStatus::Unavailable,
                "",
                "the store is unavailable; retry".into(),
            )
        };
        let row = match self.db(|db| db.approval(&d.approval)) {
            Ok(Some(r)) => r,
            Ok(None) => return refuse(DecisionStatus::NotFound, "", "no such approval".into()),
            Err(e) => {
                error!(error = %e, "approval unreadable");
                return unavailable();
            }
        };
        match self.db(|db| db.nonce_used(&d.nonce)) {
            Ok(false) => {}
            Ok(true) => {
                return refuse(
                    DecisionStatus::Conflict,
                    &row.state,
                    "this link has been used already".into(),
                );
            }
            Err(e) => {
                error!(error = %e, "votes unreadable");
                return unavailable();
            }
        }
        if row.state != "waiting" {
            return refuse(
                DecisionStatus::Conflict,
                &row.state,
                format!("the approval is already {}: {}", row.state, row.outcome),
            );
        }
        if !row.notified.contains(&d.user) {
            return refuse(
                DecisionStatus::Forbidden,
                &row.state,
                format!("{} was not asked to decide on this approval", d.user),
            );
        }
        if !live(&row.incident_id) {
            return refuse(
                DecisionStatus::Conflict,
                &row.state,
                "the incident is no longer live".into(),
            );
        }
        let votes = match self.db(|db| db.votes(&row.id)) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "votes unreadable");
                return unavailable();
            }
        };
        let approvals: Vec<&str> = votes
            .iter()
            .filter(|v| v.decision == "approve")
            .map(|v| v.user.as_str())
            .collect();
        if d.approve && row.authors.contains(&d.user) {
            let independent = approvals
                .iter()
                .any(|u| !row.authors.iter().any(|a| a == u));
            let still_needed = (row.required as usize).saturating_sub(approvals.len());
            if still_needed <= 1 && !independent {
                return refuse(
                    DecisionStatus::Forbidden,
                    &row.state,
                    format!(
                        "separation of duties: {} made a change this plan rolls back and cannot be its only approver; another approver must decide",
                        d.user
                    ),
                );
            }
        }
        let decision = if d.approve { "approve" } else { "reject" };
        match self.db(|db| db.vote(&row.id, &d.user, decision, &d.comment, &d.nonce)) {
            Ok(Ok(())) => {}
            Ok(Err(VoteRefused::Replayed)) => {
                return refuse(
                    DecisionStatus::Conflict,
                    &row.state,
                    "this link has been used already".into(),
                );
            }
            Ok(Err(VoteRefused::AlreadyVoted)) => {
                return refuse(
                    DecisionStatus::Conflict,
                    &row.state,
                    format!("{} has decided on this approval already", d.user),
                );
            }
            Err(e) => {
                error!(error = %e, "vote not stored");
                return unavailable();
            }
        }
        let comment = if d.comment.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", d.comment.trim())
        };
        if !d.approve {
            BrainStats::bump(&self.stats.approvals_rejected);
            let why = format!("rejected by {}{comment}; nothing was done", d.user);
            self.close(&row.id, "rejected", now, &why);
            return Decision::Rejected {
                incident: row.incident_id,
                why,
            };
        }
        let mut by: Vec<&str> = approvals.clone();
        by.push(&d.user);
        if by.len() < row.required as usize {
            let msg = format!(
                "approved by {} ({} of {}); waiting for another approver",
                d.user,
                by.len(),
                row.required
            );
            self.write("timeline", |db| {
                db.timeline(&row.incident_id, now, "approval", &msg)
            });
            return Decision::Answer(Decided {
                status: DecisionStatus::Waiting,
                state: "waiting".into(),
                message: msg,
                dispatched: None,
            });
        }
        BrainStats::bump(&self.stats.approvals_granted);
        let why = format!("approved by {}{comment}", by.join(" and "));
        self.close(&row.id, "approved", now, &why);
        info!(approval = %row.id, %why, "approved");
        Decision::Approved {
            incident: row.incident_id,
            why,
        }
    }
}
