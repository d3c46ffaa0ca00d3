//! Subject naming and NATS wildcard matching.
//!
//! | subject | carries |
//! | --- | --- |
//! | `<p>.ind.<layer>.<idc>.<service>` | [`IndicatorBatch`](crate::IndicatorBatch) |
//! | `<p>.change.<service>` | [`ChangeEvent`](crate::ChangeEvent) |
//! | `<p>.hot.<service>` | [`HotspotReport`](crate::HotspotReport) |
//! | `<p>.act.<service>` | [`ActionRequest`](crate::ActionRequest) → [`ActionReply`](crate::ActionReply) |
//! | `<p>.det.<worker>` | [`DetectedBatch`](crate::DetectedBatch) (detection workers) |
//! | `<p>.incident.<id>` | [`IncidentEvent`](crate::IncidentEvent) |
//! | `<p>.sim.feed`, `<p>.sim.ctl`, `<p>.sim.event` | the simulator's own telemetry export, control and ground-truth events |

use crate::message::Layer;

/// Subject names under one prefix (default `selfheal`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("selfheal")
    }
}

impl Subjects {
    /// Subjects under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where indicator batches of one layer, IDC and service go.
    pub fn indicators(&self, layer: Layer, idc: &str, service: &str) -> String {
        format!("{}.ind.{}.{idc}.{service}", self.prefix, layer.as_str())
    }

    /// Whether `subject` is [`Subjects::indicators`] of `layer`, `idc` and
    /// `service` (read without building it: ingest asks once per batch).
    pub fn is_indicators(&self, subject: &str, layer: Layer, idc: &str, service: &str) -> bool {
        let mut rest = subject;
        for part in [self.prefix.as_str(), "ind", layer.as_str(), idc] {
            match rest.strip_prefix(part).and_then(|r| r.strip_prefix('.')) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest == service
    }

    /// Every indicator subject.
    pub fn all_indicators(&self) -> String {
        format!("{}.ind.>", self.prefix)
    }

    /// Change events of a service.
    pub fn change(&self, service: &str) -> String {
        format!("{}.change.{service}", self.prefix)
    }

    /// Signed anchors of the brain's audit chain head.
    pub fn audit_anchor(&self) -> String {
        format!("{}.audit.anchor", self.prefix)
    }

    /// Every change subject.
    pub fn all_changes(&self) -> String {
        format!("{}.change.*", self.prefix)
    }

    /// Hotspot reports of a service.
    pub fn hot(&self, service: &str) -> String {
        format!("{}.hot.{service}", self.prefix)
    }

    /// An agent's announcements.
    pub fn announce(&self, agent: &str) -> String {
        format!("{}.announce.{agent}", self.prefix)
    }

    /// Every announcement subject.
    pub fn all_announce(&self) -> String {
        format!("{}.announce.*", self.prefix)
    }

    /// What detection worker `worker` found.
    pub fn detected(&self, worker: &str) -> String {
        format!("{}.det.{worker}", self.prefix)
    }

    /// Every detection worker's findings.
    pub fn all_detected(&self) -> String {
        format!("{}.det.*", self.prefix)
    }

    /// Action requests for a service's actuator.
    pub fn act(&self, service: &str) -> String {
        format!("{}.act.{service}", self.prefix)
    }

    /// Every action subject.
    pub fn all_acts(&self) -> String {
        format!("{}.act.*", self.prefix)
    }

    /// Lifecycle events of an incident.
    pub fn incident(&self, id: &str) -> String {
        format!("{}.incident.{id}", self.prefix)
    }

    /// Every incident subject.
    pub fn all_incidents(&self) -> String {
        format!("{}.incident.*", self.prefix)
    }

    /// The simulator's telemetry export (what a real platform's exporters
    /// would show an agent).
    pub fn sim_feed(&self) -> String {
        format!("{}.sim.feed", self.prefix)
    }

    /// The simulator's actuator endpoint (request/reply).
    pub fn sim_ctl(&self) -> String {
        format!("{}.sim.ctl", self.prefix)
    }

    /// The simulator's ground-truth events (fault injected, action applied).
    pub fn sim_event(&self) -> String {
        format!("{}.sim.event", self.prefix)
    }
}

/// Whether `subject` matches `pattern` under NATS rules: tokens split on
/// `.`, `*` matches one token, a final `>` matches one or more tokens.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `subject` is a valid subject to publish on: non-empty tokens, no
/// wildcards, no whitespace.
pub fn is_publishable(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.bytes().any(|b| b.is_ascii_whitespace())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats() {
        assert!(matches("a.b.c", "a.b.c"));
        assert!(!matches("a.b.c", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(matches("a.*.c", "a.x.c"));
        assert!(!matches("a.*", "a.x.c"));
        assert!(matches("a.>", "a.x.c"));
        assert!(matches("a.>", "a.x"));
        assert!(!matches("a.>", "a"));
        assert!(matches("*.>", "a.b"));
    }

    #[test]
    fn subjects_are_publishable() {
        let s = Subjects::default();
        assert_eq!(
            s.indicators(Layer::System, "idc1", "cashier"),
            "selfheal.ind.system.idc1.cashier"
        );
        assert!(matches(
            &s.all_indicators(),
            &s.indicators(Layer::Infra, "i", "h")
        ));
        // Read without building it: the same answer as comparing with it.
        let built = s.indicators(Layer::System, "idc1", "cashier");
        for (subject, layer, idc, service) in [
            (built.as_str(), Layer::System, "idc1", "cashier"),
            (&built, Layer::Business, "idc1", "cashier"),
            (&built, Layer::System, "idc2", "cashier"),
            (&built, Layer::System, "idc1", "cash"),
            (&built, Layer::System, "idc1", "cashier.x"),
            ("selfheal.ind.system.idc1", Layer::System, "idc1", ""),
            (
                "other.ind.system.idc1.cashier",
                Layer::System,
                "idc1",
                "cashier",
            ),
            (
                "selfheal.ind.system.idc1.cashier.x",
                Layer::System,
                "idc1",
                "cashier",
            ),
        ] {
            assert_eq!(
                s.is_indicators(subject, layer, idc, service),
                subject == s.indicators(layer, idc, service),
                "{subject} {layer:?} {idc} {service}"
            );
        }
        assert!(matches(&s.all_acts(), &s.act("router")));
        assert!(is_publishable(&s.act("router")));
        assert!(!is_publishable("a.*"));
        assert!(!is_publishable("a..b"));
    }
}
