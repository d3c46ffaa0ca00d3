//! Decide, with a person: the engine's side of approvals. The policy and
//! the records are [`crate::act::approvals`]'; here what a request, a
//! timeout or a decision came to is applied to the incident, which only
//! the engine moves.

use selfheal_bus::IncidentState;
use tracing::error;

use super::Engine;
use crate::{
    act::{
        approval::{Decide, Decided, DecisionStatus},
        approvals::{Decision, Expiry},
    },
    incident::{Terminal, Wait},
    playbook::Playbook,
};

impl Engine {
    /// The diagnosis of incident `i` in a line, for the people asked.
    fn summary(&self, i: usize) -> String {
        self.correlator.incidents[i]
            .hypotheses
            .first()
            .map(|h| {
                format!(
                    "{} on {} ({:.0}% confident)",
                    h.cause,
                    h.target,
                    h.confidence * 100.0
                )
            })
            .unwrap_or_default()
    }

    /// Asks the rota to approve incident `i`'s plan.
    pub(super) async fn request_approval(
        &mut self,
        i: usize,
        now: i64,
        pb: &Playbook,
        why: Vec<String>,
    ) {
        let Some(ap) = &self.approvals else { return };
        let row = ap.request_for(&self.correlator.incidents[i], pb, why, &self.context, now);
        if let Err(e) = ap.request(&row) {
            error!(error = %e, "could not store the approval request");
            self.escalate(
                i,
                now,
                "the store refused the approval request; nothing was done".into(),
            )
            .await;
            return;
        }
        self.replicate_approval(&row.id).await;
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
                row.notified.join(", "),
                row.required,
                row.reasons.join("; "),
                row.plan.join(", ")
            ),
        )
        .await;
        // What a person is asked about survives a restart before they are
        // asked: a brain killed between the two would otherwise come back
        // without the wait, and expire the approval they then answer.
        self.checkpoint(now).await;
        let summary = self.summary(i);
        if let Some(ap) = &self.approvals {
            ap.ask(&row, &summary);
        }
    }

    /// Nobody decided in time: the policy says what happens. Returns
    /// whether the incident may move again.
    pub(super) async fn approval_timed_out(&mut self, i: usize, id: &str, now: i64) -> bool {
        let Some(ap) = &self.approvals else {
            return false;
        };
        let summary = self.summary(i);
        let acts_by_default = |playbook: &str| {
            self.runtime
                .playbooks()
                .iter()
                .any(|p| p.name == playbook && p.meta.act_on_timeout)
        };
        let expiry = ap.expired(id, now, acts_by_default, &summary);
        self.replicate_approval(id).await;
        match expiry {
            Expiry::Forwarded { deadline } => {
                self.correlator.incidents[i].await_approval(id.to_string(), deadline);
                false
            }
            Expiry::ActByDefault => {
                self.correlator.incidents[i].approve();
                true
            }
            Expiry::GiveUp(why) => {
                self.escalate(i, now, why).await;
                false
            }
        }
    }

    /// The symptoms cleared while the plan waited: nothing is left to
    /// approve; the request is withdrawn and the incident closed.
    pub(super) async fn withdraw(&mut self, i: usize, id: &str, now: i64) {
        if let Some(ap) = &self.approvals {
            ap.withdraw(id, now);
        }
        self.replicate_approval(id).await;
        self.finish(i, now, Terminal::Cleared).await;
    }

    /// A person's decision, judged by the approvals, then acted on at
    /// once, so the reply can name the action dispatched.
    pub(super) async fn on_decide(&mut self, d: Decide, now: i64) {
        let answer = self.decide(&d, now).await;
        let _ = d.reply.send(answer);
    }

    async fn decide(&mut self, d: &Decide, now: i64) -> Decided {
        let Some(ap) = &self.approvals else {
            return Decided {
                status: DecisionStatus::NotFound,
                state: String::new(),
                message: "no on-call policy is configured".into(),
                dispatched: None,
            };
        };
        let incidents = &self.correlator.incidents;
        let live = |id: &str| incidents.iter().any(|x| x.id == id);
        let decision = ap.decide(d, now, live);
        // Replicated before anything it leads to (the action it approves
        // is written ahead after this): a successor knows the vote, and
        // refuses its link if it comes again.
        self.replicate_approval(&d.approval).await;
        let (incident, why, approved) = match decision {
            Decision::Answer(a) => return a,
            Decision::Rejected { incident, why } => (incident, why, false),
            Decision::Approved { incident, why } => (incident, why, true),
        };
        let Some(i) = self
            .correlator
            .incidents
            .iter()
            .position(|x| x.id == incident)
        else {
            // Checked live just before; the engine is the only one moving
            // incidents, so this does not happen.
            return Decided {
                status: DecisionStatus::Conflict,
                state: String::new(),
                message: "the incident is no longer live".into(),
                dispatched: None,
            };
        };
        if !approved {
            self.escalate(i, now, why.clone()).await;
            return Decided {
                status: DecisionStatus::Done,
                state: "rejected".into(),
                message: why,
                dispatched: None,
            };
        }
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
