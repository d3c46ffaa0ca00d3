//! Alerts from an existing monitoring (Alertmanager's webhook): a firing
//! alert is a symptom that opens or joins an incident, like an anomaly on
//! a business error series; a resolved alert is evidence of recovery, the
//! end of that anomaly.
//!
//! An alert becomes the series `alert_<alertname>` of the service its
//! labels name (`service`, else `job`, else `unknown`), in the IDC they
//! name (`idc`, `dc`, `datacenter`, `region`, else `alertmanager`), on the
//! business layer, bad upwards; its scene and instance come from the
//! labels `scene` and `instance`. Names are mapped to wire-safe ones as
//! replay maps them.

use std::collections::BTreeMap;

use selfheal_bus::{Layer, SeriesKey};
use serde::Deserialize;

use crate::detect::{AnomalyEvent, AnomalyKind, Direction};

/// Alertmanager's webhook body (version 4); fields not used are ignored.
#[derive(Debug, Deserialize)]
pub struct Webhook {
    /// The alerts of the notification.
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of the webhook.
#[derive(Debug, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels (`alertname` at least).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An alert as the engine takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Firing (else resolved).
    pub firing: bool,
    /// The series it stands for.
    pub key: SeriesKey,
    /// Its summary, for people.
    pub summary: String,
}

/// Most alerts in one webhook.
pub const MAX_ALERTS: usize = 200;

fn label<'a>(labels: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| labels.get(*n))
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

fn safe(name: &str) -> String {
    selfheal_bus::names::wire_name(name)
}

impl Alert {
    /// The alerts of a webhook body, or why it is refused.
    pub fn parse(body: &[u8]) -> Result<Vec<Alert>, String> {
        let w: Webhook = serde_json::from_slice(body)
            .map_err(|e| format!("not an Alertmanager webhook: {e}"))?;
        if w.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "{} alerts in one notification, over {MAX_ALERTS}",
                w.alerts.len()
            ));
        }
        w.alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let firing = match a.status.as_str() {
                    "firing" => true,
                    "resolved" => false,
                    s => {
                        return Err(format!(
                            "alerts[{i}].status: {s:?} is neither firing nor resolved"
                        ));
                    }
                };
                let name = label(&a.labels, &["alertname"])
                    .ok_or_else(|| format!("alerts[{i}]: no alertname label"))?;
                let service = label(&a.labels, &["service", "job"]).unwrap_or("unknown");
                let idc = label(&a.labels, &["idc", "dc", "datacenter", "region"])
                    .unwrap_or("alertmanager");
                let summary = label(&a.annotations, &["summary", "description"])
                    .unwrap_or(name)
                    .chars()
                    .take(512)
                    .collect();
                Ok(Alert {
                    firing,
                    key: SeriesKey::new(
                        Layer::Business,
                        safe(idc),
                        safe(service),
                        format!("alert_{}", safe(name)),
                    )
                    .with_instance(label(&a.labels, &["instance"]).map(safe))
                    .with_scene(label(&a.labels, &["scene"]).map(safe)),
                    summary,
                })
            })
            .collect()
    }

    /// The anomaly it stands for at event time `ts`: a start when firing,
    /// an end when resolved, on a quality series (it may open an
    /// incident).
    pub fn anomaly(&self, ts: i64) -> AnomalyEvent {
        AnomalyEvent {
            key: self.key.clone(),
            ts,
            kind: if self.firing {
                AnomalyKind::Start
            } else {
                AnomalyKind::End
            },
            onset: ts,
            value: if self.firing { 1.0 } else { 0.0 },
            baseline: 0.0,
            score: if self.firing { 1.0 } else { 0.0 },
            direction: Direction::Up,
            class: "errors".into(),
            novel: false,
            after_change: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_becomes_alerts_on_wire_safe_series() {
        let body = br#"{"version":"4","status":"firing","receiver":"selfheal","alerts":[
            {"status":"firing","labels":{"alertname":"PaymentErrors(5xx)","service":"Pay API","idc":"idc1","scene":"checkout"},
             "annotations":{"summary":"5xx above 2%"},"startsAt":"2026-12-01T00:00:00Z"},
            {"status":"resolved","labels":{"alertname":"Slow","job":"ledger"}}]}"#;
        let a = Alert::parse(body).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].firing && !a[1].firing);
        assert!(
            selfheal_bus::message::valid_name(&a[0].key.metric),
            "{}",
            a[0].key.metric
        );
        assert!(
            selfheal_bus::message::valid_name(&a[0].key.service),
            "{}",
            a[0].key.service
        );
        assert_eq!(a[0].key.idc, "idc1");
        assert_eq!(a[0].summary, "5xx above 2%");
        assert_eq!(a[1].key.service, "ledger");
        assert_eq!(a[1].key.idc, "alertmanager");
        let ev = a[0].anomaly(5_000);
        assert_eq!(
            (ev.kind, &*ev.class, ev.direction),
            (AnomalyKind::Start, "errors", Direction::Up)
        );
        for bad in [
            &br#"{"alerts":[{"status":"firing","labels":{}}]}"#[..],
            br#"{"alerts":[{"status":"pending","labels":{"alertname":"x"}}]}"#,
            br#"not json"#,
        ] {
            assert!(Alert::parse(bad).is_err());
        }
    }
}
