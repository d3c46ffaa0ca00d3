//! The actuator contract: one trait for everything that carries out an
//! [`ActionRequest`] and answers with an [`ActionReply`].
//!
//! The brain's action gateway sends through it (to an edge agent over the
//! bus, to a deploy system over HTTP); an edge agent applies through it (to
//! the simulator's control API, a load balancer, a process). An answer is
//! an [`ActionReply`] whatever it says (applied, duplicate, rejected,
//! failed); an [`ActError`] means no answer could be had, with a
//! [`ActErrorKind`] a caller can branch on.

use async_trait::async_trait;

use crate::{ActionReply, ActionRequest, ActionStatus, WIRE_VERSION};

/// Why no answer could be had for an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActErrorKind {
    /// Nobody could be reached (no responder, connection refused, a
    /// credential missing so nothing was sent).
    Unreachable,
    /// Sent, no answer in time: it may or may not have been applied.
    TimedOut,
    /// An answer came that could not be read or was for another action.
    BadReply,
    /// The receiver failed on every attempt (5xx and the like).
    Failed,
}

impl ActErrorKind {
    /// A stable lowercase name (`unreachable`, `timed_out`, `bad_reply`,
    /// `failed`), for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            ActErrorKind::Unreachable => "unreachable",
            ActErrorKind::TimedOut => "timed_out",
            ActErrorKind::BadReply => "bad_reply",
            ActErrorKind::Failed => "failed",
        }
    }
}

/// No answer for an action: its kind and the detail for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ActError {
    /// What went wrong, to branch on.
    pub kind: ActErrorKind,
    /// What happened, for people (the receiver's words when there were any).
    pub detail: String,
}

impl ActError {
    /// No answer over the bus: a timeout may have been applied, anything
    /// else did not reach the other side. `what` says who was asked.
    pub fn from_bus(e: &crate::BusError, what: &str) -> Self {
        use crate::BusErrorKind as K;
        let kind = match e.kind() {
            K::TimedOut => ActErrorKind::TimedOut,
            K::Disconnected | K::NoResponders | K::InvalidSubject => ActErrorKind::Unreachable,
            K::Other | K::Encode => ActErrorKind::Failed,
        };
        ActError::new(kind, format!("{what}{e}"))
    }

    /// An error of `kind` saying `detail`.
    pub fn new(kind: ActErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Something that carries out actions.
///
/// Implementations must be idempotent under [`ActionRequest::id`]: the
/// same request sent twice (a retry, a restarted brain re-sending what it
/// wrote ahead) is applied once, the second answer being
/// [`ActionStatus::Duplicate`].
#[async_trait]
pub trait Actuator: Send + Sync {
    /// A short name for logs and the audit trail (`bus`, `deploy-api`,
    /// `haproxy`...).
    fn name(&self) -> &str;
    /// Whether this actuator carries out `req` (its kind, service, target).
    fn takes(&self, req: &ActionRequest) -> bool;
    /// Carries `req` out and answers for it.
    async fn apply(&self, req: &ActionRequest) -> Result<ActionReply, ActError>;
}

/// A reply to `req` with `status` and `message`, stamped with the
/// request's time.
pub fn reply(req: &ActionRequest, status: ActionStatus, message: impl Into<String>) -> ActionReply {
    ActionReply {
        v: WIRE_VERSION,
        id: req.id.clone(),
        status,
        message: message.into(),
        ts: req.ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_stable_names_and_errors_read_as_their_detail() {
        let e = ActError::new(ActErrorKind::TimedOut, "request on x timed out");
        assert_eq!(e.to_string(), "request on x timed out");
        assert_eq!(e.kind.as_str(), "timed_out");
        let names: std::collections::BTreeSet<_> = [
            ActErrorKind::Unreachable,
            ActErrorKind::TimedOut,
            ActErrorKind::BadReply,
            ActErrorKind::Failed,
        ]
        .map(ActErrorKind::as_str)
        .into_iter()
        .collect();
        assert_eq!(names.len(), 4);
    }
}
