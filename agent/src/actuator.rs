//! Executes action requests addressed to this agent's services, once per
//! idempotency key, and answers each one.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use selfheal_bus::{
    ActionReply, ActionRequest, ActionStatus, Bus, Limits, Subjects, WIRE_VERSION, decode,
};
use selfheal_sim::feed::{Command, CommandReply};
use tracing::{info, warn};

use crate::stats::AgentStats;

/// Idempotency keys remembered.
const REMEMBERED: usize = 10_000;

/// Applies actions through the platform's control API.
pub struct Actuator {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
    stats: Arc<AgentStats>,
    done: HashMap<String, ActionReply>,
    order: VecDeque<String>,
}

impl Actuator {
    /// An actuator sending platform commands over `bus`.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration, stats: Arc<AgentStats>) -> Self {
        Actuator {
            bus,
            subjects,
            timeout,
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
        let cmd = Command {
            key: req.id.clone(),
            kind: req.kind,
            target: req.target.clone(),
            params: req.params.clone(),
        };
        let body = match serde_json::to_vec(&cmd) {
            Ok(b) => b,
            Err(e) => return reply(&req.id, ActionStatus::Failed, e.to_string(), now_ms),
        };
        let answer = match self
            .bus
            .request(&self.subjects.sim_ctl(), body.into(), self.timeout)
            .await
        {
            Ok(bytes) => match serde_json::from_slice::<CommandReply>(&bytes) {
                Ok(r) if r.ok => reply(&req.id, ActionStatus::Applied, r.message, r.ts),
                Ok(r) => reply(&req.id, ActionStatus::Rejected, r.message, r.ts),
                Err(e) => reply(
                    &req.id,
                    ActionStatus::Failed,
                    format!("unreadable platform reply: {e}"),
                    now_ms,
                ),
            },
            Err(e) => reply(
                &req.id,
                ActionStatus::Failed,
                format!("platform unreachable: {e}"),
                now_ms,
            ),
        };
        match answer.status {
            ActionStatus::Applied => AgentStats::bump(&self.stats.actions_applied),
            ActionStatus::Rejected => AgentStats::bump(&self.stats.actions_rejected),
            _ => AgentStats::bump(&self.stats.actions_failed),
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

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{ActionKind, LocalTransport};
    use selfheal_sim::{Scenario, SimNode, Speed, default_topology};

    fn request(id: &str, fraction: f64, ts: i64) -> Vec<u8> {
        let req = ActionRequest {
            v: WIRE_VERSION,
            id: id.into(),
            incident: "inc-1".into(),
            service: "channel-router".into(),
            kind: ActionKind::ShiftTraffic,
            target: "bank-a".into(),
            params: [
                ("to".to_string(), "bank-b".into()),
                ("fraction".to_string(), fraction.into()),
            ]
            .into(),
            ts,
        };
        selfheal_bus::encode(&req).unwrap().to_vec()
    }

    #[tokio::test]
    async fn applies_once_per_key_and_refuses_bad_requests() {
        let local = LocalTransport::default();
        let bus: Bus = Arc::new(local.clone());
        let subjects = Subjects::default();
        let start = 1_700_000_000_000;
        let sim = SimNode {
            bus: bus.clone(),
            subjects: subjects.clone(),
            topology: default_topology(),
            scenario: Scenario::control(),
            speed: Speed::Times(1.0),
            start_ms: start,
            lockstep: None,
        }
        .spawn()
        .await
        .unwrap();
        let stats = Arc::new(AgentStats::default());
        let mut act = Actuator::new(bus, subjects, Duration::from_secs(2), stats.clone());

        let first = act.handle(&request("k-1", 0.5, start), start).await;
        assert_eq!(first.status, ActionStatus::Applied, "{first:?}");
        let again = act.handle(&request("k-1", 0.5, start), start).await;
        assert_eq!(again.status, ActionStatus::Duplicate);
        let bad = act.handle(&request("k-2", 3.0, start), start).await;
        assert_eq!(
            bad.status,
            ActionStatus::Rejected,
            "the platform refuses a fraction of 3"
        );
        let garbage = act.handle(b"{not json", start).await;
        assert_eq!(garbage.status, ActionStatus::Rejected);
        let stale = act
            .handle(&request("k-3", 0.5, start - 86_400_000), start)
            .await;
        assert_eq!(
            stale.status,
            ActionStatus::Rejected,
            "a day-old request is not applied"
        );

        let truth = sim.truth();
        assert_eq!(truth.actions.len(), 1, "applied once: {:?}", truth.actions);
        assert_eq!(truth.actions[0].key, "k-1");
        assert_eq!(AgentStats::get(&stats.actions_applied), 1);
        assert_eq!(AgentStats::get(&stats.actions_duplicate), 1);
        assert_eq!(AgentStats::get(&stats.actions_rejected), 3);

        // The platform gone: a failure, not remembered, so a retry may apply.
        sim.stop();
        let _ = sim.finish().await;
        local.set_online(true);
        let lost = act.handle(&request("k-4", 0.5, start), start).await;
        assert_eq!(lost.status, ActionStatus::Failed, "{lost:?}");
        assert!(!act.done.contains_key("k-4"));
    }
}
