//! The simulator collector: turns a platform telemetry frame into indicator
//! batches, one per layer, IDC and service, as a real exporter scrape would.

use std::collections::BTreeMap;

use selfheal_bus::{IndicatorBatch, Layer, Sample, WIRE_VERSION};
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
                instance: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_sim::{Platform, Scenario, default_topology};

    #[test]
    fn one_batch_per_layer_idc_service_and_nothing_lost() {
        let s = Scenario::control();
        let mut p = Platform::new(default_topology(), 1, 0, 1000, vec![]);
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
