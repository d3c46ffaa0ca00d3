//! Series admission at ingest: how many distinct series the brain tracks,
//! in all, per source (an agent, a remote writer) and per service, so that
//! one bad publisher (a label taking a new value per request) cannot crowd
//! out the rest; and the eviction of idle series, so that what a flood
//! filled is given back.
//!
//! A series is known by a 64-bit hash of its key (the same fixed hasher
//! that routes it to a shard), with its source, its service and when it
//! was last seen: 24 bytes a series, against the detector's 512. A new
//! series over any cap is refused (its samples dropped, counted per
//! source); a known one is always taken. Series idle for
//! [`SeriesLimits::idle_s`] of event time are forgotten here and by the
//! shards, and their slots are free again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The caps (`[series]` in the brain's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeriesLimits {
    /// Series tracked at most, in all.
    pub max_total: usize,
    /// Series one source (the batch's `source`) may have at once.
    pub max_per_source: usize,
    /// Series one service may have at once.
    pub max_per_service: usize,
    /// A series not seen for this long (event time) is forgotten, s.
    pub idle_s: u64,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        SeriesLimits {
            max_total: 400_000,
            max_per_source: 20_000,
            max_per_service: 20_000,
            idle_s: 3_600,
        }
    }
}

impl SeriesLimits {
    /// Every problem with these limits.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_total == 0 || self.max_total > 10_000_000 {
            p.push("series.max_total: must be in 1..=10000000".into());
        }
        if self.max_per_source == 0 || self.max_per_source > self.max_total {
            p.push("series.max_per_source: must be in 1..=max_total".into());
        }
        if self.max_per_service == 0 || self.max_per_service > self.max_total {
            p.push("series.max_per_service: must be in 1..=max_total".into());
        }
        if self.idle_s < 60 {
            p.push("series.idle_s: must be at least 60".into());
        }
        p
    }
}

/// Why a new series was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source is at its cap.
    Source,
    /// Its service is at its cap.
    Service,
    /// The brain is at its cap.
    Total,
}

#[derive(Clone, Copy)]
struct Known {
    source: u32,
    service: u32,
    last: i64,
}

/// The admission state, owned by the ingest task.
pub struct Admission {
    limits: SeriesLimits,
    known: HashMap<u64, Known>,
    sources: Names,
    services: Names,
    swept_at: i64,
}

/// Interned names with a count of series each.
#[derive(Default)]
struct Names {
    index: HashMap<String, u32>,
    counts: Vec<usize>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.counts.len() as u32;
        self.index.insert(name.to_string(), i);
        self.counts.push(0);
        i
    }

    fn count(&self, id: u32) -> usize {
        self.counts[id as usize]
    }
}

impl Admission {
    /// Nothing admitted yet.
    pub fn new(limits: SeriesLimits) -> Self {
        Admission {
            limits,
            known: HashMap::new(),
            sources: Names::default(),
            services: Names::default(),
            swept_at: i64::MIN,
        }
    }

    /// Series tracked now.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Takes a sample of series `id` (its key's hash) from `source` and
    /// `service` at `ts`: `Ok` if the series is known or admitted now.
    pub fn admit(&mut self, id: u64, source: &str, service: &str, ts: i64) -> Result<(), Refusal> {
        if let Some(k) = self.known.get_mut(&id) {
            k.last = k.last.max(ts);
            return Ok(());
        }
        let (src, svc) = (self.sources.id(source), self.services.id(service));
        if self.sources.count(src) >= self.limits.max_per_source {
            return Err(Refusal::Source);
        }
        if self.services.count(svc) >= self.limits.max_per_service {
            return Err(Refusal::Service);
        }
        if self.known.len() >= self.limits.max_total {
            return Err(Refusal::Total);
        }
        self.sources.counts[src as usize] += 1;
        self.services.counts[svc as usize] += 1;
        self.known.insert(
            id,
            Known {
                source: src,
                service: svc,
                last: ts,
            },
        );
        Ok(())
    }

    /// Forgets the series idle since before `now - idle_s`, at most once a
    /// quarter of `idle_s` (event time). Returns how many went.
    pub fn sweep(&mut self, now: i64) -> usize {
        let idle = (self.limits.idle_s * 1000) as i64;
        if self.swept_at != i64::MIN && now < self.swept_at + idle / 4 {
            return 0;
        }
        self.swept_at = now;
        let before = self.known.len();
        let (sources, services) = (&mut self.sources.counts, &mut self.services.counts);
        self.known.retain(|_, k| {
            let keep = k.last >= now - idle;
            if !keep {
                sources[k.source as usize] -= 1;
                services[k.service as usize] -= 1;
            }
            keep
        });
        before - self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SeriesLimits {
        SeriesLimits {
            max_total: 100,
            max_per_source: 30,
            max_per_service: 40,
            idle_s: 600,
        }
    }

    #[test]
    fn one_flooding_source_is_capped_and_the_others_still_get_in() {
        let mut a = Admission::new(limits());
        let mut refused = 0;
        for i in 0..1_000u64 {
            if a.admit(i, "rogue", &format!("svc{}", i % 50), 0).is_err() {
                refused += 1;
            }
        }
        assert_eq!((a.len(), refused), (30, 970));
        // A known series is always taken, even with its source at the cap.
        assert!(a.admit(5, "rogue", "svc5", 1).is_ok());
        for i in 0..30u64 {
            assert!(a.admit(10_000 + i, "agent-1", "payments", 1).is_ok());
        }
        assert_eq!(
            a.admit(20_000, "agent-2", "payments", 1),
            Ok(()),
            "a service under its cap"
        );
        for i in 0..9u64 {
            a.admit(30_000 + i, "agent-2", "payments", 1).unwrap();
        }
        assert_eq!(
            a.admit(40_000, "agent-3", "payments", 1),
            Err(Refusal::Service)
        );
    }

    #[test]
    fn idle_series_are_forgotten_and_their_slots_given_back() {
        let mut a = Admission::new(limits());
        for i in 0..30u64 {
            a.admit(i, "rogue", "svc", 0).unwrap();
        }
        assert_eq!(a.admit(99, "rogue", "svc", 0), Err(Refusal::Source));
        // One series stays alive; the rest go quiet.
        a.admit(0, "rogue", "svc", 500_000).unwrap();
        assert_eq!(a.sweep(500_000), 0, "not idle yet");
        assert_eq!(a.sweep(700_000), 29);
        assert_eq!(a.len(), 1);
        assert!(a.admit(99, "rogue", "svc", 700_000).is_ok());
        // Sweeps are spaced a quarter of the idle time apart.
        assert_eq!(a.sweep(700_001), 0);
    }
}
