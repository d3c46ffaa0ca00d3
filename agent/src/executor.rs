//! Executes action requests addressed to this agent's services, once per
//! idempotency key, through the actuators it was given, and answers each
//! one. Which actuator carries an action is the first that takes it; none
//! taking it is a refusal, never a guess.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use selfheal_bus::{
    ActionReply, ActionRequest, ActionStatus, Actuator, Limits, WIRE_VERSION, decode,
};
use tracing::{info, warn};

use crate::stats::AgentStats;

/// Idempotency keys remembered.
const REMEMBERED: usize = 10_000;

/// The agent's actuators behind one idempotent door.
pub struct Executor {
    actuators: Vec<Arc<dyn Actuator>>,
    stats: Arc<AgentStats>,
    done: HashMap<String, ActionReply>,
    order: VecDeque<String>,
}

impl Executor {
    /// An executor over `actuators`, tried in order.
    pub fn new(actuators: Vec<Arc<dyn Actuator>>, stats: Arc<AgentStats>) -> Self {
        Executor {
            actuators,
            stats,
            done: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Handles one raw request; `now_ms` is the agent's clock. Returns the
    /// reply to send.
    pub async fn handle(&mut self, payload: &[u8], now_ms: i64) -> ActionReply {
        let req: ActionRequest = match decode(payload, &Limits::default(), now_ms) {
            Ok(r) => r,
            Err(e) => {
                AgentStats::bump(&self.stats.actions_rejected);
                warn!(error = %e, "action request refused");
                return reply(
                    "unknown",
                    ActionStatus::Rejected,
                    format!("refused: {}", e.kind().reason()),
                    now_ms,
                );
            }
        };
        if let Some(prev) = self.done.get(&req.id) {
            AgentStats::bump(&self.stats.actions_duplicate);
            info!(id = %req.id, "duplicate action, not applied again");
            return ActionReply {
                status: ActionStatus::Duplicate,
                ..prev.clone()
            };
        }
        let answer = match self.actuators.iter().find(|a| a.takes(&req)) {
            None => reply(
                &req.id,
                ActionStatus::Rejected,
                format!(
                    "no actuator on this agent takes {} on {} ({})",
                    req.kind.as_str(),
                    req.service,
                    req.target
                ),
                now_ms,
            ),
            Some(a) => match a.apply(&req).await {
                Ok(r) => r,
                Err(e) => reply(
                    &req.id,
                    ActionStatus::Failed,
                    format!("{}: {e}", a.name()),
                    now_ms,
                ),
            },
        };
        match answer.status {
            ActionStatus::Applied => AgentStats::bump(&self.stats.actions_applied),
            ActionStatus::Rejected => AgentStats::bump(&self.stats.actions_rejected),
            ActionStatus::Duplicate => AgentStats::bump(&self.stats.actions_duplicate),
            ActionStatus::Failed => AgentStats::bump(&self.stats.actions_failed),
        }
        info!(id = %req.id, kind = req.kind.as_str(), target = %req.target, status = ?answer.status, message = %answer.message, "action handled");
        // A failure may be retried under the same key; anything else is final.
        if answer.status != ActionStatus::Failed {
            if self.order.len() == REMEMBERED
                && let Some(old) = self.order.pop_front()
            {
                self.done.remove(&old);
            }
            self.order.push_back(req.id.clone());
            self.done.insert(req.id, answer.clone());
        }
        answer
    }

    /// Whether an answer for `id` is remembered.
    pub fn remembers(&self, id: &str) -> bool {
        self.done.contains_key(id)
    }
}

fn reply(id: &str, status: ActionStatus, message: String, ts: i64) -> ActionReply {
    ActionReply {
        v: WIRE_VERSION,
        id: id.to_string(),
        status,
        message,
        ts,
    }
}
