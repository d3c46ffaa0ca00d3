//! The simulator collector: turns a platform telemetry frame into indicator
//! batches, one per layer, IDC and service, as a real exporter scrape would.

use std::collections::BTreeMap;

use crate::sketch::SpaceSaving;
use selfheal_bus::{
    ChangeEvent, HotspotReport, IndicatorBatch, KeyCount, Layer, Sample, WIRE_VERSION,
};
use selfheal_sim::feed::Frame;

/// Groups a frame's samples into batches and numbers them from `*seq`.
pub fn batches(frame: &Frame, source: &str, seq: &mut u64) -> Vec<IndicatorBatch> {
    let mut groups: BTreeMap<(Layer, &str, &str), Vec<Sample>> = BTreeMap::new();
    for s in &frame.samples {
        groups
            .entry((s.layer, &s.idc, &s.service))
            .or_default()
            .push(Sample {
                scene: s.scene.clone(),
                link: s.link.clone(),
                instance: s.instance.clone(),
                metric: s.metric.clone(),
                labels: BTreeMap::new(),
                ts: frame.ts,
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

/// The frame's hot-key counts as hotspot reports.
pub fn hotspots(frame: &Frame) -> Vec<HotspotReport> {
    frame
        .hot
        .iter()
        .map(|h| {
            // Every key counted this period goes through a bounded
            // heavy-hitter sketch; its top few are reported.
            let mut s = SpaceSaving::new(HOT_CAPACITY);
            for (key, count) in &h.top {
                s.add(key, *count);
            }
            HotspotReport {
                v: WIRE_VERSION,
                service: h.service.clone(),
                idc: h.idc.clone(),
                ts: frame.ts,
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

/// The frame's changes as change events.
pub fn changes(frame: &Frame) -> Vec<ChangeEvent> {
    frame
        .changes
        .iter()
        .map(|c| ChangeEvent {
            v: WIRE_VERSION,
            id: c.id.clone(),
            service: c.service.clone(),
            kind: c.kind,
            ts: frame.ts,
            author: c.author.clone(),
            description: c.description.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_sim::{Platform, Scenario, default_topology};

    #[test]
    fn one_batch_per_layer_idc_service_and_nothing_lost() {
        let s = Scenario::control();
        let mut p = Platform::new(default_topology(), &s, 0);
        let (frame, _) = p.step();
        let mut seq = 0;
        let b = batches(&frame, "a", &mut seq);
        assert_eq!(
            b.iter().map(|b| b.samples.len()).sum::<usize>(),
            frame.samples.len()
        );
        assert_eq!(seq as usize, b.len());
        let mut keys: Vec<_> = b
            .iter()
            .map(|b| (b.layer, b.idc.clone(), b.service.clone()))
            .collect();
        keys.dedup();
        assert_eq!(keys.len(), b.len());
        assert!(b.iter().all(|b| b.samples.iter().all(|x| x.ts == frame.ts)));
        let _ = s;
    }
}

/// Frames between two announcements of an unchanged view.
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
    /// Notes what `frame` shows; returns the announcements due (one per
    /// IDC): when the view changed, and every [`ANNOUNCE_EVERY`] frames.
    pub fn observe(&mut self, frame: &Frame, agent: &str) -> Vec<selfheal_bus::Announcement> {
        let mut changed = false;
        for s in &frame.samples {
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
                ts: frame.ts,
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
