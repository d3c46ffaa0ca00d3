//! Decide, with a person: a plan that needs approval waits here. The
//! approvers on the rota get signed links; their decisions arrive from the
//! API; the policy (two approvers, separation of duties, the timeout) is
//! applied by the engine, which alone moves incidents. Every step is in
//! the store and its audit log before anything else happens.

use std::sync::Arc;

use selfheal_bus::{ActionKind, IncidentState, wall_ms};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::Engine;
use crate::{
    act::{
        approval::{Decide, Decided, DecisionStatus, Link, LinkKey, OnCallConfig, OnTimeout},
        notify::{Message, Notice},
    },
    incident::{Terminal, Wait},
    playbook::{Playbook, Step},
    stats::BrainStats,
    store::{ApprovalRow, VoteRefused},
};

/// The on-call set-up the engine holds.
pub struct OnCall {
    /// The policy.
    pub cfg: Arc<OnCallConfig>,
    /// The link-signing key.
    pub key: LinkKey,
    /// To the notification task.
    pub notices: mpsc::Sender<Message>,
}

impl Engine {
    /// Asks the rota to approve incident `i`'s plan.
    pub(super) async fn request_approval(
        &mut self,
        i: usize,
        now: i64,
        pb: &Playbook,
        why: Vec<String>,
    ) {
        let Some(oc) = &self.oncall else { return };
        let inc = &self.correlator.incidents[i];
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
                for c in self
                    .context
                    .changes(&a.target, now - 3_600_000, now + 60_000)
                {
                    if !c.author.is_empty() && !authors.contains(&c.author) {
                        authors.push(c.author.clone());
                    }
                }
            }
        }
        let required = if pb.meta.risk >= oc.cfg.two_approvers_from {
            2
        } else {
            1
        };
        // The first `required` people on the rota, and, when they all made
        // a change the plan rolls back, the next one who did not.
        let mut first: Vec<String> = oc
            .cfg
            .rota
            .iter()
            .take(required as usize)
            .cloned()
            .collect();
        if first.iter().all(|u| authors.contains(u))
            && let Some(next) = oc
                .cfg
                .rota
                .iter()
                .find(|u| !first.contains(u) && !authors.contains(u))
        {
            first.push(next.clone());
        }
        let row = ApprovalRow {
            id: format!("{}-a", inc.id),
            incident_id: inc.id.clone(),
            playbook: pb.name.clone(),
            risk: pb.meta.risk.as_str().to_string(),
            plan,
            blast,
            reasons: why,
            required,
            authors,
            on_timeout: oc.cfg.on_timeout.as_str().to_string(),
            notified: first.clone(),
            state: "waiting".into(),
            created_ts: now,
            deadline_ts: now + (oc.cfg.timeout_s * 1000) as i64,
            decided_ts: None,
            outcome: String::new(),
        };
        if let Err(e) = self.read(|db| db.request_approval(&row)) {
            error!(error = %e, "could not store the approval request");
            self.escalate(
                i,
                now,
                "the store refused the approval request; nothing was done".into(),
            )
            .await;
            return;
        }
        BrainStats::bump(&self.stats.approvals_requested);
        self.correlator.incidents[i].await_approval(row.id.clone(), row.deadline_ts);
        self.write("incident", |db| {
            db.set_incident_state(&row.incident_id, "awaiting_approval", None)
        });
        self.publish(
            i,
            now,
            IncidentState::AwaitingApproval,
            format!(
                "waiting for approval by {} ({} needed): {}; plan: {}",
                first.join(", "),
                required,
                row.reasons.join("; "),
                row.plan.join(", ")
            ),
        )
        .await;
        for u in &first {
            self.notify(&row, u);
        }
    }

    /// Sends `user` a signed link for `row`.
    fn notify(&self, row: &ApprovalRow, user: &str) {
        let Some(oc) = &self.oncall else { return };
        let expires_ms = wall_ms() + (oc.cfg.link_ttl_s * 1000) as i64;
        let link = Link::sign(&oc.key, &row.id, user, expires_ms);
        let inc = self
            .correlator
            .incidents
            .iter()
            .find(|x| x.id == row.incident_id);
        let summary = inc
            .and_then(|x| x.hypotheses.first())
            .map(|h| {
                format!(
                    "{} on {} ({:.0}% confident)",
                    h.cause,
                    h.target,
                    h.confidence * 100.0
                )
            })
            .unwrap_or_default();
        let n = Notice {
            approval: row.id.clone(),
            incident: row.incident_id.clone(),
            approver: user.to_string(),
            summary,
            actions: row.plan.clone(),
            blast: row.blast.clone(),
            why: row.reasons.clone(),
            link: link.url(&oc.cfg.public_url, &row.id),
            expires_ms,
        };
        if oc.notices.try_send(Message::Request(n)).is_err() {
            BrainStats::bump(&self.stats.notify_failed);
            warn!(approval = %row.id, "notification queue full; the request is on the page only");
        }
    }

    /// Nobody decided in time: the policy says what happens.
    pub(super) async fn approval_timed_out(&mut self, i: usize, id: &str, now: i64) -> bool {
        let Some(oc) = &self.oncall else {
            return false;
        };
        let cfg = oc.cfg.clone();
        let row = match self.read(|db| db.approval(id)) {
            Ok(Some(r)) => r,
            other => {
                error!(approval = id, ?other, "approval unreadable at its deadline");
                self.escalate(i, now, "the approval could not be read".into())
                    .await;
                return false;
            }
        };
        let inc_id = row.incident_id.clone();
        match cfg.on_timeout {
            OnTimeout::NextOnCall => {
                if let Some(next) = cfg.rota.iter().find(|u| !row.notified.contains(u)) {
                    let mut notified = row.notified.clone();
                    notified.push(next.clone());
                    let deadline = now + (cfg.timeout_s * 1000) as i64;
                    self.write("approval", |db| {
                        db.forward_approval(id, &notified, deadline)
                    });
                    self.write("timeline", |db| {
                        db.timeline(
                            &inc_id,
                            now,
                            "approval",
                            &format!("nobody decided in time; asking {next}, next on call"),
                        )
                    });
                    self.correlator.incidents[i].await_approval(id.to_string(), deadline);
                    let row = ApprovalRow { notified, ..row };
                    self.notify(&row, next);
                    return false;
                }
                self.timed_out_close(i, id, now, "expired", "nobody on the rota decided in time")
                    .await;
                false
            }
            OnTimeout::Act => {
                let allowed = self
                    .runtime
                    .playbooks()
                    .iter()
                    .any(|p| p.name == row.playbook && p.meta.act_on_timeout);
                if !allowed {
                    self.timed_out_close(
                        i,
                        id,
                        now,
                        "abandoned",
                        &format!(
                            "nobody decided in time and playbook {} does not allow acting by default",
                            row.playbook
                        ),
                    )
                    .await;
                    return false;
                }
                BrainStats::bump(&self.stats.approvals_timed_out);
                self.close(
                    id,
                    "acted_by_default",
                    now,
                    "nobody decided in time; the policy and the playbook allow acting by default",
                );
                self.correlator.incidents[i].approve();
                true
            }
            OnTimeout::Abandon => {
                self.timed_out_close(i, id, now, "abandoned", "nobody decided in time")
                    .await;
                false
            }
        }
    }

    /// Closes approval `id` in the store (and its audit log), then tells
    /// the chat tools, so that nobody acts on a stale request.
    fn close(&self, id: &str, state: &str, now: i64, outcome: &str) {
        self.write("approval", |db| db.close_approval(id, state, now, outcome));
        if let Some(oc) = &self.oncall {
            let m = Message::Closed {
                approval: id.to_string(),
                incident: id.strip_suffix("-a").unwrap_or(id).to_string(),
                state: state.to_string(),
                outcome: outcome.to_string(),
            };
            if oc.notices.try_send(m).is_err() {
                BrainStats::bump(&self.stats.notify_failed);
            }
        }
    }

    /// The symptoms cleared while the plan waited: nothing is left to
    /// approve; the request is withdrawn and the incident closed.
    pub(super) async fn withdraw(&mut self, i: usize, id: &str, now: i64) {
        self.close(
            id,
            "withdrawn",
            now,
            "the symptoms cleared before anyone decided; nothing was done",
        );
        self.finish(i, now, Terminal::Cleared).await;
    }

    async fn timed_out_close(&mut self, i: usize, id: &str, now: i64, state: &str, why: &str) {
        BrainStats::bump(&self.stats.approvals_timed_out);
        self.close(id, state, now, &format!("{why}; nothing was done"));
        self.escalate(i, now, format!("{why}; nothing was done"))
            .await;
    }

    /// A person's decision: checked against the approval's state and
    /// policy, recorded (with its link's nonce) and audited, then acted on
    /// at once, so the reply can name the action dispatched.
    pub(super) async fn on_decide(&mut self, d: Decide, now: i64) {
        let answer = self.decide(&d, now).await;
        if answer.status.refused() {
            BrainStats::bump(&self.stats.api_refused);
            self.write("audit", |db| {
                db.audit(
                    &d.user,
                    "refused",
                    &d.approval,
                    &format!(
                        "{} refused: {}",
                        if d.approve { "approval" } else { "rejection" },
                        answer.message
                    ),
                )
            });
        }
        let _ = d.reply.send(answer);
    }

    async fn decide(&mut self, d: &Decide, now: i64) -> Decided {
        let refuse = |status: DecisionStatus, state: &str, message: String| Decided {
            status,
            state: state.to_string(),
            message,
            dispatched: None,
        };
        let row = match self.read(|db| db.approval(&d.approval)) {
            Ok(Some(r)) => r,
            Ok(None) => return refuse(DecisionStatus::NotFound, "", "no such approval".into()),
            Err(e) => {
                error!(error = %e, "approval unreadable");
                return refuse(
                    DecisionStatus::Unavailable,
                    "",
                    "the store is unavailable; retry".into(),
                );
            }
        };
        match self.read(|db| db.nonce_used(&d.nonce)) {
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
                return refuse(
                    DecisionStatus::Unavailable,
                    "",
                    "the store is unavailable; retry".into(),
                );
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
        let Some(i) = self
            .correlator
            .incidents
            .iter()
            .position(|x| x.id == row.incident_id)
        else {
            return refuse(
                DecisionStatus::Conflict,
                &row.state,
                "the incident is no longer live".into(),
            );
        };
        let votes = match self.read(|db| db.votes(&row.id)) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "votes unreadable");
                return refuse(
                    DecisionStatus::Unavailable,
                    "",
                    "the store is unavailable; retry".into(),
                );
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
        match self.read(|db| db.vote(&row.id, &d.user, decision, &d.comment, &d.nonce)) {
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
                return refuse(
                    DecisionStatus::Unavailable,
                    "",
                    "the store is unavailable; retry".into(),
                );
            }
        }
        let comment = if d.comment.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", d.comment.trim())
        };
        if !d.approve {
            BrainStats::bump(&self.stats.approvals_rejected);
            let why = format!("rejected by {}{comment}", d.user);
            self.close(
                &row.id,
                "rejected",
                now,
                &format!("{why}; nothing was done"),
            );
            self.escalate(i, now, format!("{why}; nothing was done"))
                .await;
            return Decided {
                status: DecisionStatus::Done,
                state: "rejected".into(),
                message: format!("{why}; nothing was done"),
                dispatched: None,
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
            return Decided {
                status: DecisionStatus::Waiting,
                state: "waiting".into(),
                message: msg,
                dispatched: None,
            };
        }
        BrainStats::bump(&self.stats.approvals_granted);
        let why = format!("approved by {}{comment}", by.join(" and "));
        self.close(&row.id, "approved", now, &why);
        info!(approval = %row.id, %why, "approved");
        self.correlator.incidents[i].approve();
        self.publish(i, now, IncidentState::Acting, why.clone())
            .await;
        // Act now: the reply names what was dispatched.
        for _ in 0..16 {
            if !self.step(i, now).await {
                break;
            }
        }
        let dispatched = match self.correlator.incidents[i].run().wait() {
            Some(Wait::Reply(a)) => Some(a.clone()),
            _ => None,
        };
        Decided {
            status: DecisionStatus::Done,
            state: "approved".into(),
            message: match &dispatched {
                Some(a) => format!("{why}; action {a} dispatched"),
                None => why,
            },
            dispatched,
        }
    }
}
