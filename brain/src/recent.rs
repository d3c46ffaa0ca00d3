//! Recent samples, kept for two readers:
//!
//! * people: a person deciding on an approval sees the key indicator as a
//!   small chart. Business-layer series (the scenes' success rates, latency
//!   and volume) are kept as rings of their last [`POINTS`] samples, at most
//!   [`MAX_SERIES`] of them, by their text form.
//! * diagnosis: root-cause localization compares every series of every
//!   service with its own history before the incident, including the
//!   series the detector did not flag. Every series (any layer) is kept as
//!   a ring of its last [`HISTORY_POINTS`] samples (values as `f32`), at
//!   most [`MAX_HISTORY_SERIES`] of them; later series are counted and not
//!   kept.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use selfheal_bus::{Layer, SeriesKey};

use crate::admit::SeriesNames;

/// A series' key as it is handed to [`Recent::observe_all`]: built when a
/// ring is made for it, never per sample.
pub trait AsKey {
    /// The key.
    fn as_key(&self) -> Arc<SeriesKey>;
}

impl AsKey for Arc<SeriesKey> {
    fn as_key(&self) -> Arc<SeriesKey> {
        self.clone()
    }
}

impl AsKey for Arc<SeriesNames> {
    fn as_key(&self) -> Arc<SeriesKey> {
        Arc::new(self.key())
    }
}

/// Samples kept per series.
pub const POINTS: usize = 600;
/// Series kept.
pub const MAX_SERIES: usize = 4096;

/// Samples of every series kept for diagnosis.
pub const HISTORY_POINTS: usize = 348;
/// Series kept for diagnosis.
pub const MAX_HISTORY_SERIES: usize = 16_384;

/// One series' recent samples: (ts ms, value), oldest first.
pub type History = VecDeque<(i64, f32)>;

/// A kept series for diagnosis: its key and samples.
type Kept = (Arc<SeriesKey>, History);

/// A business series' text form and ring.
type Ring = (Arc<str>, VecDeque<(i64, f64)>);

/// How [`Recent::scan`] hands a kept series over.
type Pair = for<'a> fn(&'a (u64, Kept)) -> (&'a SeriesKey, &'a History);

/// Every kept series and its samples, as [`Recent::scan`] hands them.
pub type Scan<'a> = std::iter::Map<std::slice::Iter<'a, (u64, Kept)>, Pair>;

/// The rings.
#[derive(Debug, Default)]
pub struct Recent {
    // A std Mutex: held for one ring update or one copy, never across an
    // await.
    series: std::sync::Mutex<Business>,
    /// By series number (see [`crate::admit`]).
    history: std::sync::Mutex<Histories>,
    /// Series not kept for diagnosis because [`MAX_HISTORY_SERIES`] were.
    pub history_refused: std::sync::atomic::AtomicU64,
}

/// The kept histories, in the order their series came, found by series
/// number; and the numbers by key (for the engine's lookups of a few
/// series: the hot path goes by number).
///
/// An agent sends the same series in the same order at every round, so
/// the ring after the one a sample went to is almost always the next
/// sample's: it is tried first ([`Histories::at`]), and the rings are
/// walked in memory order instead of hashed into at random.
#[derive(Debug, Default)]
struct Histories {
    rings: Vec<(u64, Kept)>,
    index: hashbrown::HashMap<u64, u32>,
    by_key: HashMap<Arc<SeriesKey>, u64>,
    /// The ring after the last one filed to.
    next: usize,
}

impl Histories {
    fn find(&self, key: &SeriesKey) -> Option<&History> {
        self.by_key
            .get(key)
            .and_then(|id| self.index.get(id))
            .map(|i| &self.rings[*i as usize].1.1)
    }

    /// Where series `id`'s ring is, the next in line tried first.
    fn at(&mut self, id: u64) -> Option<usize> {
        let i = match self.rings.get(self.next) {
            Some((at, _)) if *at == id => self.next,
            _ => *self.index.get(&id)? as usize,
        };
        self.next = i + 1;
        Some(i)
    }

    fn add(&mut self, id: u64, kept: Kept) {
        self.index.insert(id, self.rings.len() as u32);
        self.rings.push((id, kept));
        self.next = self.rings.len();
    }

    /// Drops series `id`'s ring (the last one moves into its place).
    fn remove(&mut self, id: u64) -> Option<Kept> {
        let i = self.index.remove(&id)? as usize;
        let (_, kept) = self.rings.swap_remove(i);
        if let Some((moved, _)) = self.rings.get(i) {
            self.index.insert(*moved, i as u32);
        }
        Some(kept)
    }
}

/// The business rings, by series number, and the numbers by text form.
#[derive(Debug, Default)]
struct Business {
    rings: hashbrown::HashMap<u64, Ring>,
    by_name: HashMap<Arc<str>, u64>,
}

impl Recent {
    /// Files one sample of series number `id`.
    pub fn observe(&self, id: u64, key: &Arc<SeriesKey>, ts: i64, value: f64) {
        self.observe_all(key.layer, [(id, Some(key), ts, value)]);
    }

    /// Files many samples of one layer (a batch) under one take of each
    /// lock: the ingest hot path locks once per batch, not once per
    /// sample. A series' key comes with its first sample only (ingest
    /// hands it on when admission first takes the series): a ring is made
    /// then, if there is room, and never later.
    pub fn observe_all<'a, K: AsKey + 'a>(
        &self,
        layer: Layer,
        samples: impl IntoIterator<Item = (u64, Option<&'a K>, i64, f64)>,
    ) {
        let mut business = Vec::new();
        {
            let mut guard = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let h = &mut *guard;
            for (id, key, ts, value) in samples {
                if let Some(i) = h.at(id) {
                    let ring = &mut h.rings[i].1.1;
                    if ring.back().is_none_or(|(t, _)| *t < ts) {
                        if ring.len() == HISTORY_POINTS {
                            ring.pop_front();
                        }
                        ring.push_back((ts, value as f32));
                    }
                } else if let Some(key) = key
                    && h.rings.len() < MAX_HISTORY_SERIES
                {
                    let mut ring = VecDeque::with_capacity(HISTORY_POINTS);
                    ring.push_back((ts, value as f32));
                    let key = key.as_key();
                    h.by_key.insert(key.clone(), id);
                    h.add(id, (key, ring));
                } else {
                    self.history_refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if layer == Layer::Business {
                    business.push((id, key, ts, value));
                }
            }
        }
        if business.is_empty() {
            return;
        }
        let mut m = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let Business { rings, by_name } = &mut *m;
        for (id, key, ts, value) in business {
            let ring = match (rings.get_mut(&id), key) {
                (Some((_, r)), _) => r,
                (None, None) => continue,
                (None, Some(key)) => {
                    if rings.len() >= MAX_SERIES {
                        continue;
                    }
                    let name: Arc<str> = key.as_key().to_string().into();
                    by_name.insert(name.clone(), id);
                    &mut rings.entry(id).or_insert((name, VecDeque::new())).1
                }
            };
            if ring.back().is_some_and(|(t, _)| *t >= ts) {
                continue;
            }
            if ring.len() == POINTS {
                ring.pop_front();
            }
            ring.push_back((ts, value));
        }
    }

    /// Drops the rings of series admission forgot (idle).
    pub fn forget(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some((key, _)) = h.remove(*id)
                && h.by_key.get(&key) == Some(id)
            {
                h.by_key.remove(&key);
            }
        }
        drop(h);
        let mut m = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some((name, _)) = m.rings.remove(id)
                && m.by_name.get(&name) == Some(id)
            {
                m.by_name.remove(&name);
            }
        }
    }

    /// Runs `f` over every kept series and its samples (in no particular
    /// order), under the lock: `f` must be quick and must not block.
    pub fn scan<R>(&self, f: impl for<'a> FnOnce(Scan<'a>) -> R) -> R {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        fn pair((_, e): &(u64, Kept)) -> (&SeriesKey, &History) {
            (&*e.0, &e.1)
        }
        let pair: Pair = pair;
        f(h.rings.iter().map(pair))
    }

    /// The usual sampling step of `keys`' series, ms: the median interval
    /// between their kept samples up to `now` (0 when none has two).
    pub fn step_of<'a>(&self, keys: impl IntoIterator<Item = &'a SeriesKey>, now: i64) -> i64 {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut steps: Vec<i64> = keys
            .into_iter()
            .filter_map(|k| h.find(k))
            .flat_map(|r| gaps(r, now, 32))
            .filter(|d| *d > 0)
            .collect();
        if steps.is_empty() {
            return 0;
        }
        steps.sort_unstable();
        steps[steps.len() / 2]
    }

    /// How often `key`'s series takes a new value before `before`, ms,
    /// when it is scraped less often than it is sampled (see
    /// [`scrape_interval`]).
    pub fn scrape_of(&self, key: &SeriesKey, before: i64) -> Option<i64> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.find(key).and_then(|r| scrape_interval(r, before))
    }

    /// How often `keys`' series take a new value before `before`, ms,
    /// when at least half of those kept are scraped less often than they
    /// are sampled: the median of their scrape intervals (see
    /// [`scrape_interval`]).
    pub fn scrape_of_all<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a SeriesKey>,
        before: i64,
    ) -> Option<i64> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        scrape_interval_of(keys.into_iter().filter_map(|k| h.find(k)), before)
    }

    /// How often the series of `key`'s place (its service in its IDC)
    /// take a new value before `before`, ms, when at least half of them
    /// are scraped less often than they are sampled (see
    /// [`scrape_interval_of`]): an export that holds every scrape, not one
    /// series that rarely moves (errors at zero but for a few).
    pub fn scrape_of_place(&self, key: &SeriesKey, before: i64) -> Option<i64> {
        self.scan(|all| {
            scrape_interval_of(
                all.filter(|(k, _)| k.service == key.service && k.idc == key.idc)
                    .map(|(_, h)| h),
                before,
            )
        })
    }

    /// `f` of the kept history of `key` (`None` when it is not kept).
    pub fn with_history<R>(&self, key: &SeriesKey, f: impl FnOnce(Option<&History>) -> R) -> R {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        f(h.find(key))
    }

    /// Every kept series for which `want` holds, with a copy of its
    /// samples, in key order.
    pub fn histories(&self, want: impl Fn(&SeriesKey) -> bool) -> Vec<(SeriesKey, History)> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(SeriesKey, History)> = h
            .rings
            .iter()
            .map(|(_, kept)| kept)
            .filter(|(k, _)| want(k))
            .map(|(k, r)| (SeriesKey::clone(k), r.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether `key`'s samples are still kept (admission has not forgotten
    /// it as idle).
    pub fn kept(&self, key: &SeriesKey) -> bool {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.find(key).is_some()
    }

    /// The values of `key`'s kept samples after `after` and before
    /// `before`, oldest first.
    pub fn values_between(&self, key: &SeriesKey, after: i64, before: i64) -> Vec<f64> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.find(key)
            .map(|r| {
                r.iter()
                    .filter(|(t, _)| *t > after && *t < before)
                    .map(|(_, v)| f64::from(*v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The samples of `series` at or after `since`, oldest first.
    pub fn points(&self, series: &str, since: i64) -> Vec<(i64, f64)> {
        let m = self.series.lock().unwrap_or_else(|e| e.into_inner());
        m.by_name
            .get(series)
            .and_then(|id| m.rings.get(id))
            .map(|(_, r)| r.iter().filter(|(t, _)| *t >= since).copied().collect())
            .unwrap_or_default()
    }
}

/// The median [`scrape_interval`] of `histories` before `before`, when at
/// least half of them are scraped less often than they are sampled.
pub fn scrape_interval_of<'a>(
    histories: impl IntoIterator<Item = &'a History>,
    before: i64,
) -> Option<i64> {
    let mut seen = 0;
    let mut held: Vec<i64> = Vec::new();
    for h in histories {
        seen += 1;
        held.extend(scrape_interval(h, before));
    }
    if held.is_empty() || 2 * held.len() < seen {
        return None;
    }
    held.sort_unstable();
    Some(held[held.len() / 2])
}

/// The intervals between the last `n` samples of a series at or before
/// `now`, ms, oldest first.
pub fn gaps(h: &History, now: i64, n: usize) -> impl Iterator<Item = i64> + '_ {
    let upto = h.partition_point(|(t, _)| *t <= now);
    let from = upto.saturating_sub(n);
    h.range(from..upto)
        .zip(h.range((from + 1).min(upto)..upto))
        .map(|(a, b)| b.0 - a.0)
}

/// Samples [`scrape_interval`] reads.
const SCRAPE_SAMPLES: usize = 48;

/// How often a series takes a new value, ms, when it is scraped less
/// often than it is sampled: exports that sample every second what was
/// scraped every few seconds repeat each scrape until the next. Read from
/// its last [`SCRAPE_SAMPLES`] samples before `before`: the series is held
/// when at least half of them repeat the sample before and it changed at
/// least four times; its interval is then the median time between its
/// changes, when that is at least twice its median sampling step. `None`
/// for a series that takes a new value at (nearly) every sample, one that
/// hardly changes, or too few samples.
pub fn scrape_interval(h: &History, before: i64) -> Option<i64> {
    let upto = h.partition_point(|(t, _)| *t < before);
    let seen: Vec<(i64, f32)> = h
        .range(upto.saturating_sub(SCRAPE_SAMPLES)..upto)
        .copied()
        .collect();
    if seen.len() < 8 {
        return None;
    }
    let pairs = seen.len() - 1;
    let repeats = seen.windows(2).filter(|w| w[0].1 == w[1].1).count();
    if 2 * repeats < pairs {
        return None;
    }
    let changes: Vec<i64> = seen
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| w[1].0)
        .collect();
    if changes.len() < 4 {
        return None;
    }
    let median = |mut v: Vec<i64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let every = median(changes.windows(2).map(|w| w[1] - w[0]).collect());
    let step = median(seen.windows(2).map(|w| w[1].0 - w[0].0).collect());
    (step > 0 && every >= 2 * step).then_some(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_scraped_less_often_than_sampled_shows_its_scrape_interval() {
        let ring =
            |f: &dyn Fn(i64) -> f32| -> History { (0..60).map(|t| (t * 1000, f(t))).collect() };
        // Scraped every 5 s, sampled every second.
        let held = ring(&|t| ((t / 5) % 7) as f32 + 1.0);
        assert_eq!(scrape_interval(&held, 60_000), Some(5000));
        // Only what came before counts.
        assert_eq!(scrape_interval(&held, 5_000), None);
        // A new value at every sample, or nearly.
        let fresh = ring(&|t| ((t * 7919) % 13) as f32);
        assert_eq!(scrape_interval(&fresh, 60_000), None);
        let mostly = ring(&|t| {
            if t % 4 == 0 {
                1.0
            } else {
                (t % 11) as f32 + 2.0
            }
        });
        assert_eq!(scrape_interval(&mostly, 60_000), None);
        // Steady, and a single move: nothing to read an interval from.
        let steady = ring(&|t| if t < 50 { 3.0 } else { 4.0 });
        assert_eq!(scrape_interval(&steady, 60_000), None);
        // Through the rings, by key, before a time.
        let r = Recent::default();
        let key = Arc::new(SeriesKey::new(
            Layer::System,
            "default",
            "cart",
            "latency-90",
        ));
        for (t, v) in &held {
            r.observe(7, &key, *t, f64::from(*v));
        }
        assert_eq!(r.scrape_of(&key, 60_000), Some(5000));
        assert_eq!(r.scrape_of(&key, 3_000), None);
        // Of several series, when half of them or more are held.
        let other = Arc::new(SeriesKey {
            metric: "latency-50".into(),
            ..SeriesKey::clone(&key)
        });
        for (t, _) in &held {
            r.observe(8, &other, *t, (*t % 7919) as f64);
        }
        assert_eq!(r.scrape_of_all([&*key, &*other], 60_000), Some(5000));
        let third = Arc::new(SeriesKey {
            metric: "cpu".into(),
            ..SeriesKey::clone(&key)
        });
        for (t, _) in &held {
            r.observe(9, &third, *t, (*t % 7907) as f64);
        }
        assert_eq!(r.scrape_of_all([&*key, &*other, &*third], 60_000), None);
    }

    #[test]
    fn each_series_ring_gets_its_own_samples_in_whatever_order_they_come() {
        let r = Recent::default();
        let key = |i: u64| {
            Arc::new(SeriesKey::new(
                Layer::System,
                "idc-a",
                "cashier",
                format!("m{i}"),
            ))
        };
        let keys: Vec<_> = (0..6).map(key).collect();
        // Series i's value at round t is 100 t + i: first in order, then
        // backwards, then with series 2 forgotten (the last ring moves
        // into its place), then in order again.
        let round = |t: i64, ids: &[u64]| {
            r.observe_all(
                Layer::System,
                ids.iter().map(|&i| {
                    (
                        i,
                        Some(&keys[i as usize]),
                        t * 1000,
                        (100 * t) as f64 + i as f64,
                    )
                }),
            )
        };
        round(1, &[0, 1, 2, 3, 4, 5]);
        round(2, &[5, 4, 3, 2, 1, 0]);
        r.forget(&[2]);
        round(3, &[0, 1, 3, 4, 5]);
        round(4, &[0, 1, 3, 5, 4]);
        for i in [0u64, 1, 3, 4, 5] {
            let want: Vec<f64> = (1..=4).map(|t| (100 * t) as f64 + i as f64).collect();
            assert_eq!(r.values_between(&keys[i as usize], 0, 10_000), want, "m{i}");
        }
        assert!(!r.kept(&keys[2]));
        assert_eq!(r.scan(|all| all.count()), 5);
    }

    #[test]
    fn rings_keep_the_latest_business_samples_in_order() {
        let r = Recent::default();
        let key = |layer| {
            SeriesKey::new(layer, "idc-a", "cashier", "success_rate").with_scene(Some("checkout"))
        };
        let (b, sys) = (Arc::new(key(Layer::Business)), Arc::new(key(Layer::System)));
        for t in 0..(POINTS as i64 + 10) {
            r.observe(0, &b, t * 1000, t as f64);
            r.observe(1, &sys, t * 1000, t as f64);
        }
        r.observe(0, &b, 5, -1.0);
        let name = key(Layer::Business).to_string();
        let p = r.points(&name, 0);
        assert_eq!(p.len(), POINTS);
        assert_eq!(p[0], (10_000, 10.0));
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(r.points(&name, 600_000).len(), 10);
        assert!(r.points(&key(Layer::System).to_string(), 0).is_empty());
        let last = POINTS as i64 + 9;
        assert_eq!(
            r.values_between(&sys, (last - 3) * 1000, (last + 1) * 1000),
            vec![(last - 2) as f64, (last - 1) as f64, last as f64]
        );
        assert!(r.kept(&b) && r.kept(&sys));
        r.forget(&[0]);
        assert!(
            r.points(&name, 0).is_empty(),
            "a forgotten series' ring goes"
        );
        assert!(!r.kept(&b) && r.kept(&sys));
        assert_eq!(r.histories(|_| true).len(), 1);
    }
}
