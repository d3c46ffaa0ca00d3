//! Act: every action passes the guards, is written to the store with its
//! idempotency key, and only then is sent to an edge actuator over the bus.

pub mod guard;

use std::time::Duration;

use selfheal_bus::{ActionReply, ActionRequest, Bus, Limits, Subjects, decode, encode};

pub use guard::{GuardConfig, Guards, Verdict};

/// Sends an action request and waits for the actuator's reply.
pub async fn send(
    bus: &Bus,
    subjects: &Subjects,
    req: &ActionRequest,
    timeout: Duration,
) -> Result<ActionReply, String> {
    let bytes = bus
        .request(&subjects.act(&req.service), encode(req), timeout)
        .await
        .map_err(|e| e.to_string())?;
    // The actuator's clock is the platform's; check size and shape only.
    let limits = Limits {
        max_skew_ms: i64::MAX / 2,
        ..Limits::default()
    };
    let reply: ActionReply =
        decode(&bytes, &limits, 0).map_err(|e| format!("unreadable reply: {e}"))?;
    if reply.id != req.id && reply.id != "unknown" {
        return Err(format!("reply for {} answered {}", req.id, reply.id));
    }
    Ok(reply)
}
