//! The simulator's side of an edge agent, as a vendor would ship it for its
//! own product: a [`Source`] that reads the platform's telemetry export
//! (`<p>.sim.feed`) and a [`Actuator`] that applies actions through its
//! control API (`<p>.sim.ctl`). The agent knows neither; it is handed them.

use std::time::Duration;

use async_trait::async_trait;
use selfheal_agent::source::{ChangeSeen, KeyCounts, Observed, Reading, Source, SourceError};
use selfheal_bus::{
    ActError, ActErrorKind, ActionReply, ActionRequest, ActionStatus, Actuator, Bus, Subjects,
    Subscription, actuate::reply,
};

use crate::feed::{Command, CommandReply, Frame};

/// Largest feed frame accepted, bytes.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// The platform's telemetry export as a source of readings.
pub struct SimSource {
    bus: Bus,
    feed: Subscription,
}

impl SimSource {
    /// Subscribes to the export on `bus`.
    pub async fn subscribe(bus: Bus, subjects: &Subjects) -> Result<Self, selfheal_bus::BusError> {
        let feed = bus.subscribe(&subjects.sim_feed()).await?;
        Ok(SimSource { bus, feed })
    }
}

/// A frame as a reading.
pub fn reading(frame: Frame) -> Reading {
    Reading {
        ts: frame.ts,
        key: Some((frame.tick, frame.ts)),
        samples: frame
            .samples
            .into_iter()
            .map(|s| Observed {
                layer: s.layer,
                idc: s.idc,
                service: s.service,
                scene: s.scene,
                link: s.link,
                instance: s.instance,
                metric: s.metric,
                value: s.value,
            })
            .collect(),
        keys: frame
            .hot
            .into_iter()
            .map(|h| KeyCounts {
                idc: h.idc,
                service: h.service,
                dimension: h.dimension,
                total: h.total,
                counts: h.top,
            })
            .collect(),
        changes: frame
            .changes
            .into_iter()
            .map(|c| ChangeSeen {
                id: c.id,
                service: c.service,
                kind: c.kind,
                author: c.author,
                description: c.description,
            })
            .collect(),
    }
}

#[async_trait]
impl Source for SimSource {
    async fn next(&mut self) -> Option<Result<Reading, SourceError>> {
        let msg = self.feed.next().await?;
        // A frame sent as a request is the simulator's backlog from an
        // outage: confirm it, it is ours to keep from here on.
        if let Some(reply) = &msg.reply {
            let _ = self.bus.publish(reply, bytes::Bytes::new()).await;
        }
        if msg.payload.len() > MAX_FRAME_BYTES {
            return Some(Err(SourceError::Unreadable(format!(
                "a frame of {} bytes, over {MAX_FRAME_BYTES}",
                msg.payload.len()
            ))));
        }
        Some(
            serde_json::from_slice::<Frame>(&msg.payload)
                .map(reading)
                .map_err(|e| SourceError::Unreadable(e.to_string())),
        )
    }
}

/// The platform's control API as an actuator: every action kind the
/// simulator models, for every service.
pub struct SimControl {
    bus: Bus,
    subjects: Subjects,
    timeout: Duration,
}

impl SimControl {
    /// Commands over `bus`, waiting `timeout` for the platform's answer.
    pub fn new(bus: Bus, subjects: Subjects, timeout: Duration) -> Self {
        SimControl {
            bus,
            subjects,
            timeout,
        }
    }
}

#[async_trait]
impl Actuator for SimControl {
    fn name(&self) -> &str {
        "sim-control"
    }

    fn takes(&self, _req: &ActionRequest) -> bool {
        true
    }

    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError> {
        let cmd = Command {
            key: req.id.clone(),
            kind: req.kind,
            target: req.target.clone(),
            params: req.params.clone(),
        };
        let body = serde_json::to_vec(&cmd).map_err(|e| {
            ActError::new(ActErrorKind::Failed, format!("command not encoded: {e}"))
        })?;
        let bytes = self
            .bus
            .request(&self.subjects.sim_ctl(), body.into(), self.timeout)
            .await
            .map_err(|e| ActError::from_bus(&e, "platform unreachable: "))?;
        let r: CommandReply = serde_json::from_slice(&bytes).map_err(|e| {
            ActError::new(
                ActErrorKind::BadReply,
                format!("unreadable platform reply: {e}"),
            )
        })?;
        let status = if r.ok {
            ActionStatus::Applied
        } else {
            ActionStatus::Rejected
        };
        Ok(ActionReply {
            ts: r.ts,
            ..reply(req, status, r.message)
        })
    }
}

/// An agent for the simulated platform: the telemetry export as its source
/// when `config.feed` is `sim`, the control API as its actuator.
pub async fn agent(
    config: selfheal_agent::AgentConfig,
    bus: Bus,
    subjects: Subjects,
) -> Result<selfheal_agent::Agent, selfheal_bus::BusError> {
    let source: Option<Box<dyn Source>> = match config.feed {
        selfheal_agent::config::Feed::Sim => Some(Box::new(
            SimSource::subscribe(bus.clone(), &subjects).await?,
        )),
        selfheal_agent::config::Feed::None => None,
    };
    let control = SimControl::new(
        bus.clone(),
        subjects.clone(),
        Duration::from_millis(config.actuate_timeout_ms),
    );
    let mut actuators = selfheal_agent::run::own_actuators(&config);
    actuators.push(std::sync::Arc::new(control));
    Ok(selfheal_agent::Agent {
        config,
        bus,
        subjects,
        source,
        actuators,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use selfheal_agent::{AgentStats, executor::Executor};
    use selfheal_bus::{ActionKind, LocalTransport, WIRE_VERSION};

    use super::*;
    use crate::{Platform, Scenario, SimNode, Speed, default_topology};

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
    async fn the_control_api_applies_once_per_key_and_refuses_bad_requests() {
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
        let control = SimControl::new(bus, subjects, Duration::from_secs(2));
        let mut act = Executor::new(vec![Arc::new(control)], stats.clone());

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
        assert!(!act.remembers("k-4"));
    }

    #[test]
    fn a_frame_becomes_a_reading_with_nothing_lost() {
        let mut p = Platform::new(default_topology(), &Scenario::control(), 0);
        let (frame, _) = p.step();
        let (n, hot, ts, tick) = (frame.samples.len(), frame.hot.len(), frame.ts, frame.tick);
        let r = reading(frame);
        assert_eq!((r.samples.len(), r.keys.len(), r.ts), (n, hot, ts));
        assert_eq!(r.key, Some((tick, ts)));
        let mut seq = 0;
        let b = selfheal_agent::readings::batches(&r, "a", &mut seq);
        assert_eq!(b.iter().map(|b| b.samples.len()).sum::<usize>(), n);
    }
}
