//! Space-Saving (Metwally, Agrawal, El Abbadi 2005): the heavy hitters of a
//! stream of keys in bounded memory. With `capacity` counters over a stream
//! of total weight `N`, every key whose true count exceeds `N / capacity`
//! is monitored, and each monitored key's estimate `c` satisfies
//! `c - error <= true <= c`, with `error <= N / capacity`.

use std::collections::HashMap;

/// A Space-Saving sketch over string keys, with weighted updates.
#[derive(Clone, Debug)]
pub struct SpaceSaving {
    capacity: usize,
    /// key → (estimated count, overestimate bound).
    counters: HashMap<String, (u64, u64)>,
    total: u64,
}

impl SpaceSaving {
    /// A sketch of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> Self {
        SpaceSaving {
            capacity: capacity.max(1),
            counters: HashMap::with_capacity(capacity.max(1)),
            total: 0,
        }
    }

    /// Counts `weight` more occurrences of `key`.
    pub fn add(&mut self, key: &str, weight: u64) {
        if weight == 0 {
            return;
        }
        self.total += weight;
        if let Some(c) = self.counters.get_mut(key) {
            c.0 += weight;
            return;
        }
        if self.counters.len() < self.capacity {
            self.counters.insert(key.to_string(), (weight, 0));
            return;
        }
        // Evict the smallest counter; the newcomer inherits its count as
        // the bound of its overestimate. (Ties: the smallest key, so that
        // the sketch is deterministic.)
        let (victim, min) = self
            .counters
            .iter()
            .min_by(|a, b| a.1.0.cmp(&b.1.0).then_with(|| a.0.cmp(b.0)))
            .map(|(k, c)| (k.clone(), c.0))
            .expect("capacity >= 1");
        self.counters.remove(&victim);
        self.counters.insert(key.to_string(), (min + weight, min));
    }

    /// Total weight counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The estimate and its overestimate bound for `key`, if monitored.
    pub fn estimate(&self, key: &str) -> Option<(u64, u64)> {
        self.counters.get(key).copied()
    }

    /// The `k` heaviest keys, heaviest first: (key, estimated count).
    pub fn top(&self, k: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .counters
            .iter()
            .map(|(key, c)| (key.clone(), c.0))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }

    /// Forgets everything (a new reporting period).
    pub fn clear(&mut self) {
        self.counters.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against exact counts: every key heavier than N/k is monitored,
        /// and every estimate is within its bound of the truth.
        #[test]
        fn guarantees_hold_against_exact_counts(
            stream in proptest::collection::vec((0u8..40, 1u64..50), 0..600),
            capacity in 1usize..24,
        ) {
            let mut s = SpaceSaving::new(capacity);
            let mut exact: HashMap<String, u64> = HashMap::new();
            for (k, w) in &stream {
                let key = format!("k{k}");
                s.add(&key, *w);
                *exact.entry(key).or_default() += w;
            }
            let n: u64 = exact.values().sum();
            prop_assert_eq!(s.total(), n);
            let bound = n / capacity as u64;
            for (key, t) in &exact {
                match s.estimate(key) {
                    Some((c, err)) => {
                        prop_assert!(c >= *t, "{} estimated {} < true {}", key, c, t);
                        prop_assert!(c - err <= *t, "{} lower bound {} > true {}", key, c - err, t);
                        prop_assert!(err <= bound, "{} error {} > N/k {}", key, err, bound);
                    }
                    None => prop_assert!(*t <= bound, "{} ({} > N/k {}) not monitored", key, t, bound),
                }
            }
            prop_assert!(s.top(usize::MAX).len() <= capacity);
        }
    }

    #[test]
    fn a_flood_key_tops_a_long_tail_in_bounded_memory() {
        let mut s = SpaceSaving::new(16);
        for i in 0..10_000u64 {
            s.add(&format!("item-{}", i % 997), 1);
            if i % 4 == 0 {
                s.add("item-9001", 3);
            }
        }
        let top = s.top(3);
        assert_eq!(top[0].0, "item-9001");
        assert!(top[0].1 >= 7_500);
        assert!(s.top(100).len() <= 16);
    }
}
