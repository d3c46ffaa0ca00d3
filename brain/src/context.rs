//! The context the correlator weighs anomalies against: recent changes per
//! service (deploys, config pushes, flags) and the hot keys of each
//! service, with the normal share of its heaviest key, so that a key whose
//! share jumps stands out.

use std::collections::{HashMap, VecDeque};

use selfheal_bus::{ChangeEvent, HotspotReport};

/// What the context task hands the engine.
#[derive(Clone, Debug)]
pub enum ContextMsg {
    /// A change took effect.
    Change(ChangeEvent),
    /// A service's hot keys for one period.
    Hot(HotspotReport),
    /// What an agent sees: services and instances in its IDC.
    Announce(selfheal_bus::Announcement),
}

/// Changes kept per service.
pub const CHANGES_PER_SERVICE: usize = 64;
/// Reports learned before a share jump counts.
const HOT_WARMUP: u32 = 10;

/// A key whose share of a service's requests jumped.
#[derive(Clone, Debug, PartialEq)]
pub struct HotJump {
    /// Service.
    pub service: String,
    /// IDC.
    pub idc: String,
    /// `item`, `client_ip`, `account`, `order`, `merchant`...
    pub dimension: String,
    /// The key.
    pub key: String,
    /// Its share now.
    pub share: f64,
    /// The heaviest key's normal share.
    pub normal: f64,
    /// When the jump was first seen.
    pub since: i64,
}

#[derive(Debug, Default)]
struct HotState {
    normal: f64,
    n: u32,
    jump: Option<HotJump>,
}

/// Recent changes and hot keys.
#[derive(Debug, Default)]
pub struct Context {
    changes: HashMap<String, VecDeque<ChangeEvent>>,
    hot: HashMap<(String, String, String), HotState>,
}

impl Context {
    /// Whether this change (by service and id) is already filed: a
    /// notice sent again, or one restored from the store.
    pub fn knows(&self, c: &ChangeEvent) -> bool {
        self.changes
            .get(&c.service)
            .is_some_and(|q| q.iter().any(|k| k.id == c.id))
    }

    /// Files one message; a change already filed is not filed twice.
    pub fn record(&mut self, msg: ContextMsg) {
        match msg {
            ContextMsg::Change(c) => {
                if self.knows(&c) {
                    return;
                }
                let q = self.changes.entry(c.service.clone()).or_default();
                if q.len() == CHANGES_PER_SERVICE {
                    q.pop_front();
                }
                q.push_back(c);
            }
            // (The engine keeps the topology; see `Engine::learn`.)
            ContextMsg::Announce(_) => {}
            ContextMsg::Hot(r) => {
                let Some(top) = r.top.first() else { return };
                if r.total == 0 {
                    return;
                }
                let share = top.count as f64 / r.total as f64;
                let st = self
                    .hot
                    .entry((r.service.clone(), r.idc.clone(), r.dimension.clone()))
                    .or_default();
                let jumped = st.n >= HOT_WARMUP && share >= 0.2 && share >= 4.0 * st.normal;
                if jumped {
                    let since = st
                        .jump
                        .as_ref()
                        .filter(|j| j.key == top.key)
                        .map_or(r.ts, |j| j.since);
                    st.jump = Some(HotJump {
                        service: r.service,
                        idc: r.idc,
                        dimension: r.dimension,
                        key: top.key.clone(),
                        share,
                        normal: st.normal,
                        since,
                    });
                } else {
                    st.jump = None;
                    let a = if st.n < HOT_WARMUP {
                        1.0 / (st.n as f64 + 1.0)
                    } else {
                        0.05
                    };
                    st.normal += a * (share - st.normal);
                    st.n += 1;
                }
            }
        }
    }

    /// Changes to `service` that took effect in `[from, to]`, newest first.
    pub fn changes(&self, service: &str, from: i64, to: i64) -> Vec<&ChangeEvent> {
        let mut v: Vec<&ChangeEvent> = self
            .changes
            .get(service)
            .map(|q| q.iter().filter(|c| c.ts >= from && c.ts <= to).collect())
            .unwrap_or_default();
        v.sort_by_key(|c| std::cmp::Reverse(c.ts));
        v
    }

    /// Changes to any service that took effect in `[from, to]`, newest
    /// first.
    pub fn changes_between(&self, from: i64, to: i64) -> Vec<&ChangeEvent> {
        let mut v: Vec<&ChangeEvent> = self
            .changes
            .values()
            .flatten()
            .filter(|c| c.ts >= from && c.ts <= to)
            .collect();
        v.sort_by(|a, b| b.ts.cmp(&a.ts).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Keys whose share has jumped now, heaviest first.
    pub fn hot_jumps(&self) -> Vec<&HotJump> {
        let mut v: Vec<&HotJump> = self.hot.values().filter_map(|s| s.jump.as_ref()).collect();
        v.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.key.cmp(&b.key)));
        v
    }
}

/// Keeps the topology current from an agent's announcement: an IDC or
/// service not in the file is added (a service as an application), and
/// a service's instance count follows the most any IDC shows. What the
/// file declares beyond that (links, scenes, backups, dependencies)
/// stays. Diagnosis reads this view; playbooks keep the file's.
/// Returns whether anything changed.
pub fn learn(topo: &mut selfheal_bus::Topology, a: &selfheal_bus::Announcement) -> bool {
    use selfheal_bus::topology::{Idc, Service, ServiceKind};
    let mut changed = false;
    if !topo.idcs.iter().any(|i| i.name == a.idc) {
        topo.idcs.push(Idc {
            name: a.idc.clone(),
            traffic_share: 0.0,
            capacity_tps: None,
        });
        changed = true;
    }
    for s in &a.services {
        let n = s.instances.len() as u32;
        match topo.services.iter_mut().find(|x| x.name == s.name) {
            Some(known) => {
                if n > known.instances {
                    known.instances = n;
                    changed = true;
                }
            }
            None => {
                topo.services.push(Service {
                    name: s.name.clone(),
                    kind: ServiceKind::App,
                    depends_on: Vec::new(),
                    backup: None,
                    instances: n.max(1),
                    share: None,
                    capacity_tps: None,
                });
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_bus::{ChangeKind, KeyCount, WIRE_VERSION};

    fn hot(ts: i64, key: &str, count: u64, total: u64) -> ContextMsg {
        ContextMsg::Hot(HotspotReport {
            v: WIRE_VERSION,
            service: "cashier".into(),
            idc: "idc1".into(),
            ts,
            dimension: "item".into(),
            total,
            top: vec![KeyCount {
                key: key.into(),
                count,
            }],
        })
    }

    #[test]
    fn a_jumping_key_stands_out_and_a_busy_day_does_not() {
        let mut c = Context::default();
        for t in 0..30 {
            c.record(hot(t, "item-1", 50, 1000));
        }
        // Twice the traffic, same shape: no jump.
        c.record(hot(30, "item-1", 100, 2000));
        assert!(c.hot_jumps().is_empty());
        c.record(hot(31, "item-9001", 3000, 4000));
        c.record(hot(32, "item-9001", 3100, 4100));
        let j = c.hot_jumps();
        assert_eq!(j.len(), 1);
        assert_eq!((j[0].key.as_str(), j[0].since), ("item-9001", 31));
        assert!(j[0].share > 0.7 && j[0].normal < 0.06);
        c.record(hot(33, "item-1", 50, 1000));
        assert!(c.hot_jumps().is_empty(), "over when the share is back");
    }

    #[test]
    fn changes_by_service_and_window() {
        let mut c = Context::default();
        // The last is the first sent again: filed once.
        for (i, s) in ["a", "b", "a", "a"].iter().enumerate() {
            let i = i % 3;
            c.record(ContextMsg::Change(ChangeEvent {
                v: WIRE_VERSION,
                id: format!("c{i}"),
                service: s.to_string(),
                kind: ChangeKind::Deploy,
                ts: i as i64 * 100,
                author: "x".into(),
                description: String::new(),
            }));
        }
        let ids: Vec<&str> = c
            .changes("a", 0, 1000)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["c2", "c0"]);
        assert!(c.changes("a", 250, 1000).is_empty());
    }
}
