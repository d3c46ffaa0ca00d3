//! What the agent publishes from a source's readings: indicator batches,
//! one per layer, IDC and service; hot keys through its heavy-hitter
//! sketch; change events; announcements of what it sees.

use std::collections::BTreeMap;

use crate::sketch::SpaceSaving;
use crate::source::Reading;
use selfheal_bus::{
    ChangeEvent, HotspotReport, IndicatorBatch, KeyCount, Layer, Sample, WIRE_VERSION,
};

/// Groups a reading's samples into batches and numbers them from `*seq`.
pub fn batches(r: &Reading, source: &str, seq: &mut u64) -> Vec<IndicatorBatch> {
    let mut groups: BTreeMap<(Layer, &str, &str), Vec<Sample>> = BTreeMap::new();
    for s in &r.samples {
        groups
            .entry((s.layer, &s.idc, &s.service))
            .or_default()
            .push(Sample {
                scene: s.scene.clone(),
                link: s.link.clone(),
                instance: s.instance.clone(),
                metric: s.metric.clone(),
                labels: BTreeMap::new(),
                ts: r.ts,
                value: s.value,
            });
    }
    groups
        .into_iter()
        .map(|((layer, idc, service), samples)| {
            *seq += 1;
            IndicatorBatch {
                v: WIRE_VERSION,
                source: source.to_string(),
                seq: *seq,
                layer,
                idc: idc.to_string(),
                service: service.to_string(),
                samples,
            }
        })
        .collect()
}

/// The reading's key counts as hotspot reports.
pub fn hotspots(r: &Reading) -> Vec<HotspotReport> {
    r.keys
        .iter()
        .map(|h| {
            // Every key counted this period goes through a bounded
            // heavy-hitter sketch; its top few are reported.
            let mut s = SpaceSaving::new(HOT_CAPACITY);
            for (key, count) in &h.counts {
                s.add(key, *count);
            }
            HotspotReport {
                v: WIRE_VERSION,
                service: h.service.clone(),
                idc: h.idc.clone(),
                ts: r.ts,
                dimension: h.dimension.clone(),
                total: h.total.max(s.total()),
                top: s
                    .top(HOT_TOP)
                    .into_iter()
                    .map(|(key, count)| KeyCount { key, count })
                    .collect(),
            }
        })
        .collect()
}

/// Counters of the heavy-hitter sketch per service, IDC and dimension.
pub const HOT_CAPACITY: usize = 32;
/// Keys reported per service, IDC and dimension.
pub const HOT_TOP: usize = 5;

/// The reading's changes as change events.
pub fn changes(r: &Reading) -> Vec<ChangeEvent> {
    r.changes
        .iter()
        .map(|c| ChangeEvent {
            v: WIRE_VERSION,
            id: c.id.clone(),
            service: c.service.clone(),
            kind: c.kind,
            ts: r.ts,
            author: c.author.clone(),
            description: c.description.clone(),
        })
        .collect()
}

/// Readings between two announcements of an unchanged view.
pub const ANNOUNCE_EVERY: u64 = 60;

/// The services and instances an agent has seen, per IDC, for its
/// announcements.
#[derive(Debug, Default)]
pub struct Seen {
    view: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    >,
    frames: u64,
}

impl Seen {
    /// Notes what `r` shows; returns the announcements due (one per
    /// IDC): when the view changed, and every [`ANNOUNCE_EVERY`] readings.
    pub fn observe(&mut self, r: &Reading, agent: &str) -> Vec<selfheal_bus::Announcement> {
        let mut changed = false;
        for s in &r.samples {
            let services = self.view.entry(s.idc.clone()).or_default();
            if !services.contains_key(&s.service) {
                services.insert(s.service.clone(), Default::default());
                changed = true;
            }
            if let Some(i) = &s.instance
                && let Some(set) = services.get_mut(&s.service)
            {
                changed |= set.insert(i.clone());
            }
        }
        self.frames += 1;
        if !changed && !self.frames.is_multiple_of(ANNOUNCE_EVERY) {
            return Vec::new();
        }
        self.view
            .iter()
            .map(|(idc, services)| selfheal_bus::Announcement {
                v: WIRE_VERSION,
                agent: agent.to_string(),
                idc: idc.clone(),
                ts: r.ts,
                services: services
                    .iter()
                    .map(|(name, inst)| selfheal_bus::AnnouncedService {
                        name: name.clone(),
                        instances: inst.iter().cloned().collect(),
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{KeyCounts, Observed};
    use selfheal_bus::Layer;

    fn reading() -> Reading {
        let obs = |layer, service: &str, instance: Option<&str>, metric: &str| Observed {
            layer,
            idc: "idc1".into(),
            service: service.into(),
            scene: None,
            link: None,
            instance: instance.map(str::to_string),
            metric: metric.into(),
            value: 1.0,
        };
        Reading {
            ts: 5_000,
            key: Some((1, 5_000)),
            samples: vec![
                obs(Layer::Business, "cashier", None, "tps"),
                obs(Layer::Business, "cashier", None, "success_rate"),
                obs(Layer::System, "cashier", Some("cashier-1"), "cpu"),
                obs(Layer::System, "ledger", Some("ledger-1"), "cpu"),
                obs(Layer::Infra, "ledger", Some("ledger-1"), "mem_used"),
            ],
            keys: vec![KeyCounts {
                idc: "idc1".into(),
                service: "cashier".into(),
                dimension: "item".into(),
                total: 1_000,
                counts: (0..100)
                    .map(|k| (format!("item-{k}"), if k == 7 { 500 } else { 5 }))
                    .collect(),
            }],
            changes: Vec::new(),
        }
    }

    #[test]
    fn one_batch_per_layer_idc_service_and_nothing_lost() {
        let r = reading();
        let mut seq = 0;
        let b = batches(&r, "a", &mut seq);
        assert_eq!(
            b.iter().map(|b| b.samples.len()).sum::<usize>(),
            r.samples.len()
        );
        assert_eq!(seq as usize, b.len());
        assert_eq!(
            b.len(),
            4,
            "business cashier, system cashier, system ledger, infra ledger"
        );
        assert!(b.iter().all(|b| b.samples.iter().all(|x| x.ts == r.ts)));
    }

    #[test]
    fn the_sketch_reports_the_heavy_key_and_seen_announces_changes_only() {
        let r = reading();
        let h = hotspots(&r);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].top[0].key, "item-7");
        assert!(h[0].top.len() <= HOT_TOP);
        let mut seen = Seen::default();
        let first = seen.observe(&r, "agent-a");
        assert_eq!(first.len(), 1, "one IDC");
        assert_eq!(first[0].services.len(), 2);
        assert!(seen.observe(&r, "agent-a").is_empty(), "nothing new");
    }
}
