//! Prometheus series turned into indicators, the one way whichever way they
//! come: scraped by an agent, or remote-written to the brain.
//!
//! - Gauges (and untyped values) are published as they are.
//! - Counters (typed so, or named `*_total` or `*_count`) become a rate per
//!   second between two readings, named `<name without _total>_per_s`; a
//!   counter that went down was reset (its process restarted), and that one
//!   interval is skipped rather than read as a huge negative rate.
//!   `*_created` is left out; a histogram's or summary's `*_sum` becomes the
//!   mean of what it timed between two readings, its increase over its
//!   `*_count`'s, named `<name without _sum>_mean` (an interval with no
//!   observation is a gap).
//! - Histograms become `<name>_p50`, `_p90` and `_p99` over the
//!   observations made between two readings (the buckets' increases,
//!   interpolated within a bucket as Prometheus' `histogram_quantile`
//!   does); an interval with no observation is a gap.
//! - Summaries' quantiles become `<name>_pNN`.
//!
//! Each sample's service, instance, IDC and layer come from the source's
//! settings when given, else from the sample's `service` (or `job`),
//! `instance`, `idc` and `layer` labels, else from the source's defaults.
//! Other labels stay on the sample with wire-safe values; a sample with
//! more than [`MAX_LABELS`] of them is dropped and counted.

use std::collections::{BTreeMap, HashMap};

use crate::{
    IndicatorBatch, Layer, Sample, WIRE_VERSION,
    message::{MAX_LABELS, MAX_NAME_LEN},
    names::wire_name,
};

/// One reading of one series.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    /// A value as it is.
    Gauge(f64),
    /// A cumulative count.
    Counter(f64),
    /// Cumulative buckets: (upper bound, count).
    Histogram(Vec<(f64, f64)>),
    /// Quantiles: (quantile, value).
    Summary(Vec<(f64, f64)>),
}

/// Where samples go when their labels do not say: the source's settings
/// (over the labels) and defaults (under them).
#[derive(Clone, Debug, Default)]
pub struct Placing {
    /// The service of every sample, over the labels.
    pub service: Option<String>,
    /// The instance of every sample, over the labels.
    pub instance: Option<String>,
    /// The IDC of every sample, over the labels.
    pub idc: Option<String>,
    /// The layer of every sample, over the labels.
    pub layer: Option<Layer>,
    /// The service when nothing names one.
    pub default_service: String,
    /// The instance when nothing names one (none: the sample has none).
    pub default_instance: Option<String>,
    /// The IDC when nothing names one.
    pub default_idc: String,
}

/// What a batch of readings gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// The indicators, one batch per layer, IDC and service (`source` and
    /// `seq` left for the publisher).
    pub batches: Vec<IndicatorBatch>,
    /// Samples dropped: too many labels, over the cap, not finite, or a
    /// new series beyond the series remembered.
    pub dropped: u64,
}

impl Converted {
    /// Every sample's value by its series written `metric{k=v,...}`
    /// (labels in order), for reports and checks.
    pub fn by_series(&self) -> BTreeMap<String, f64> {
        self.batches
            .iter()
            .flat_map(|b| &b.samples)
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (format!("{}{{{}}}", s.metric, labels.join(",")), s.value)
            })
            .collect()
    }
}

/// Most samples in one batch (well under a brain's limit and NATS' default
/// message size).
pub const BATCH_SAMPLES: usize = 1000;

/// A series: metric and labels as exposed.
type Key = (String, Vec<(String, String)>);

/// The readings a rate needs two of, per series.
#[derive(Debug, Default)]
pub struct Rates {
    counters: HashMap<Key, (i64, f64)>,
    histograms: HashMap<Key, (i64, Vec<(f64, f64)>)>,
    /// Most series remembered; readings of further new series are dropped.
    pub max_series: usize,
}

impl Rates {
    /// Remembers at most `max_series` series.
    pub fn new(max_series: usize) -> Self {
        Rates {
            max_series,
            ..Default::default()
        }
    }

    /// Series remembered now.
    pub fn series(&self) -> usize {
        self.counters.len() + self.histograms.len()
    }

    /// Forgets every series not in `keep` (a scrape forgets what its
    /// target no longer exposes, so a series that comes back starts over).
    fn retain(&mut self, keep: &std::collections::HashSet<Key>) {
        self.counters.retain(|k, _| keep.contains(k));
        self.histograms.retain(|k, _| keep.contains(k));
    }

    /// Turns readings `(metric, labels, ts, point)` into indicators, placed
    /// by `placing`, at most `max_samples` of them. With `forget`, series
    /// absent from these readings are forgotten.
    pub fn convert(
        &mut self,
        readings: impl IntoIterator<Item = (String, BTreeMap<String, String>, i64, Point)>,
        placing: &Placing,
        max_samples: usize,
        forget: bool,
    ) -> Converted {
        let mut out = Converted::default();
        let mut groups = Groups {
            by_place: BTreeMap::new(),
            published: 0,
            max: max_samples,
        };
        let mut seen = std::collections::HashSet::new();
        // This reading's increases of histograms' and summaries' counts, by
        // their name without the suffix and their labels: (the reading
        // before, the increase); and of their sums, in reading order, with
        // where each goes.
        let mut counts: HashMap<Key, (i64, f64)> = HashMap::new();
        let mut sums: Vec<(Key, i64, f64, Place, i64)> = Vec::new();
        for (metric, labels, ts, point) in readings {
            if metric.ends_with("_created") {
                continue;
            }
            let Some(place) = place(&labels, placing) else {
                out.dropped += 1;
                continue;
            };
            let key: Key = (metric.clone(), labels.into_iter().collect());
            let mut values: Vec<(String, f64)> = Vec::new();
            let point = match point {
                Point::Gauge(v)
                    if metric.ends_with("_total")
                        || metric.ends_with("_count")
                        || metric.ends_with("_sum") =>
                {
                    Point::Counter(v)
                }
                p => p,
            };
            match point {
                Point::Gauge(v) => values.push((wire_name(&metric), v)),
                Point::Counter(v) => {
                    if self.admits(&key, false) {
                        if let Some((then_ts, then)) = self.counters.get(&key)
                            && ts > *then_ts
                            && v >= *then
                        {
                            let inc = v - then;
                            if let Some(base) = metric.strip_suffix("_sum") {
                                // Published as the mean over its count,
                                // below: its own rate is seconds timed per
                                // second, as much traffic as latency.
                                let at: Key = (base.to_string(), key.1.clone());
                                sums.push((at, *then_ts, inc, place.clone(), ts));
                            } else {
                                if let Some(base) = metric.strip_suffix("_count") {
                                    counts
                                        .insert((base.to_string(), key.1.clone()), (*then_ts, inc));
                                }
                                let base = metric.strip_suffix("_total").unwrap_or(&metric);
                                values.push((
                                    format!("{}_per_s", wire_name(base)),
                                    inc / ((ts - then_ts) as f64 / 1000.0),
                                ));
                            }
                        }
                        if self.counters.get(&key).is_none_or(|(t, _)| ts > *t) {
                            self.counters.insert(key.clone(), (ts, v));
                        }
                    } else {
                        out.dropped += 1;
                    }
                }
                Point::Histogram(mut now) => {
                    now.sort_by(|x, y| x.0.total_cmp(&y.0));
                    if self.admits(&key, true) {
                        if let Some((then_ts, then)) = self.histograms.get(&key)
                            && ts > *then_ts
                            && let Some(delta) = increase(then, &now)
                            && delta.last().is_some_and(|b| b.1 > 0.0)
                        {
                            for (q, suffix) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
                                if let Some(v) = quantile(q, &delta) {
                                    values.push((format!("{}_{suffix}", wire_name(&metric)), v));
                                }
                            }
                        }
                        if self.histograms.get(&key).is_none_or(|(t, _)| ts > *t) {
                            self.histograms.insert(key.clone(), (ts, now));
                        }
                    } else {
                        out.dropped += 1;
                    }
                }
                Point::Summary(qs) => {
                    for (q, v) in qs {
                        let pct = (q * 100.0).round() as i64;
                        values.push((format!("{}_p{pct}", wire_name(&metric)), v));
                    }
                }
            }
            if forget {
                seen.insert(key);
            }
            for (metric, value) in values {
                groups.publish(&mut out, &place, ts, metric, value);
            }
        }
        // A sum over its count's increase in the same interval: the mean of
        // what was timed (no observation: nothing to average, a gap).
        for (at, t0, inc, place, ts) in sums {
            if let Some(&(c0, n)) = counts.get(&at)
                && t0 == c0
                && n > 0.0
            {
                let metric = format!("{}_mean", wire_name(&at.0));
                groups.publish(&mut out, &place, ts, metric, inc / n);
            }
        }
        if forget {
            self.retain(&seen);
        }
        for ((layer, idc, service), samples) in groups.by_place {
            for chunk in samples.chunks(BATCH_SAMPLES) {
                out.batches.push(IndicatorBatch {
                    v: WIRE_VERSION,
                    source: String::new(),
                    seq: 0,
                    layer,
                    idc: idc.clone(),
                    service: service.clone(),
                    samples: chunk.to_vec(),
                });
            }
        }
        out
    }

    /// Whether `key` is remembered or there is room for it.
    fn admits(&self, key: &Key, histogram: bool) -> bool {
        let known = if histogram {
            self.histograms.contains_key(key)
        } else {
            self.counters.contains_key(key)
        };
        known || self.series() < self.max_series
    }
}

/// The samples of one conversion, by layer, IDC and service, and how
/// many were published of the most allowed.
struct Groups {
    by_place: BTreeMap<(Layer, String, String), Vec<Sample>>,
    published: usize,
    max: usize,
}

impl Groups {
    /// Files one value of a series in its place's group; counted in `out`
    /// as dropped when it is not finite or the samples are at the most.
    fn publish(&mut self, out: &mut Converted, place: &Place, ts: i64, metric: String, value: f64) {
        if !value.is_finite() || self.published >= self.max {
            out.dropped += 1;
            return;
        }
        self.published += 1;
        self.by_place
            .entry((place.layer, place.idc.clone(), place.service.clone()))
            .or_default()
            .push(Sample {
                scene: None,
                link: None,
                instance: place.instance.clone(),
                metric: metric.chars().take(MAX_NAME_LEN).collect(),
                labels: place.labels.clone(),
                ts,
                value,
            });
    }
}

#[derive(Clone)]
struct Place {
    service: String,
    instance: Option<String>,
    idc: String,
    layer: Layer,
    labels: BTreeMap<String, String>,
}

/// The labels that place a sample, not kept on it.
const PLACING_LABELS: [&str; 8] = [
    "service", "job", "instance", "idc", "layer", "le", "quantile", "__name__",
];

fn place(labels: &BTreeMap<String, String>, p: &Placing) -> Option<Place> {
    let label = |k: &str| {
        labels
            .get(k)
            .filter(|v| !v.is_empty())
            .map(|v| wire_name(v))
    };
    let layer = p
        .layer
        .or_else(|| match labels.get("layer").map(String::as_str) {
            Some("business") => Some(Layer::Business),
            Some("system") => Some(Layer::System),
            Some("infra") => Some(Layer::Infra),
            _ => None,
        })
        .unwrap_or(Layer::System);
    let kept: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| !PLACING_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (wire_name(k), wire_name(v)))
        .collect();
    (kept.len() <= MAX_LABELS).then(|| Place {
        service: p
            .service
            .clone()
            .or_else(|| label("service"))
            .or_else(|| label("job"))
            .unwrap_or_else(|| p.default_service.clone()),
        instance: p
            .instance
            .clone()
            .or_else(|| label("instance"))
            .or_else(|| p.default_instance.clone()),
        idc: p
            .idc
            .clone()
            .or_else(|| label("idc"))
            .unwrap_or_else(|| p.default_idc.clone()),
        layer,
        labels: kept,
    })
}

/// The increase of cumulative buckets (upper bound, count), both sorted by
/// bound, from `then` to `now`. `None` when the buckets changed or a count
/// went down (a reset).
fn increase(then: &[(f64, f64)], now: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    if then.len() != now.len() || then.iter().zip(now).any(|(a, b)| a.0 != b.0 || b.1 < a.1) {
        return None;
    }
    Some(
        now.iter()
            .zip(then)
            .map(|(n, t)| (n.0, n.1 - t.1))
            .collect(),
    )
}

/// The `q` quantile of cumulative buckets (upper bound, count) sorted by
/// bound, interpolated linearly within its bucket as Prometheus'
/// `histogram_quantile` does; in the `+Inf` bucket, the largest finite
/// bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0f64.min(buckets[0].0);
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            if count == lower_count {
                return Some(bound);
            }
            return Some(
                lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count),
            );
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

/// Raw series as remote-written (one name, flat `_bucket` series with an
/// `le` label) grouped into readings: the buckets of one histogram at one
/// instant become one [`Point::Histogram`]; everything else a
/// [`Point::Gauge`] (read as a counter when its name says so).
pub fn group_buckets(
    series: impl IntoIterator<Item = (String, BTreeMap<String, String>, i64, f64)>,
) -> Vec<(String, BTreeMap<String, String>, i64, Point)> {
    let mut out = Vec::new();
    let mut hist: BTreeMap<(Key, i64), Vec<(f64, f64)>> = BTreeMap::new();
    for (name, mut labels, ts, v) in series {
        if let Some(base) = name.strip_suffix("_bucket")
            && let Some(le) = labels.remove("le")
        {
            let bound = match le.as_str() {
                "+Inf" | "Inf" | "+inf" | "inf" => f64::INFINITY,
                s => match s.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                },
            };
            hist.entry(((base.to_string(), labels.into_iter().collect()), ts))
                .or_default()
                .push((bound, v));
            continue;
        }
        out.push((name, labels, ts, Point::Gauge(v)));
    }
    out.extend(hist.into_iter().map(|(((name, labels), ts), buckets)| {
        (
            name,
            labels.into_iter().collect(),
            ts,
            Point::Histogram(buckets),
        )
    }));
    out.sort_by_key(|r| r.2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placing() -> Placing {
        Placing {
            default_service: "pay".into(),
            default_instance: Some("10_0_0_7_9100".into()),
            default_idc: "idc1".into(),
            ..Default::default()
        }
    }

    fn values(c: &Converted) -> BTreeMap<String, f64> {
        c.by_series()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_sum_is_read_as_the_mean_of_what_its_count_timed() {
        // A summary without quantiles, as Micrometer exposes a timer by
        // default: its count and sum, per method; then the same a second
        // later, GET 100 more requests taking 5 s in all, POST none.
        let at = |ts: i64, get: (f64, f64), post: (f64, f64)| {
            let mut v = Vec::new();
            for (method, (count, sum)) in [("GET", get), ("POST", post)] {
                let l = labels(&[("method", method)]);
                v.push((
                    "t_seconds_count".to_string(),
                    l.clone(),
                    ts,
                    Point::Gauge(count),
                ));
                v.push(("t_seconds_sum".to_string(), l, ts, Point::Gauge(sum)));
            }
            v
        };
        let mut rates = Rates::new(100);
        let first = rates.convert(at(1_000, (500.0, 20.0), (7.0, 1.0)), &placing(), 100, false);
        assert!(values(&first).is_empty(), "{:?}", values(&first));
        let v =
            values(&rates.convert(at(2_000, (600.0, 25.0), (7.0, 1.0)), &placing(), 100, false));
        assert_eq!(v["t_seconds_mean{method=GET}"], 0.05);
        assert_eq!(v["t_seconds_count_per_s{method=GET}"], 100.0);
        assert_eq!(v["t_seconds_count_per_s{method=POST}"], 0.0);
        // Nothing timed: no mean, not 0 / 0; and the sum itself never.
        assert_eq!(v.len(), 3, "{v:?}");
    }

    #[test]
    fn remote_written_buckets_are_grouped_into_histograms() {
        let l = |le: &str| labels(&[("le", le), ("job", "pay")]);
        let raw = vec![
            ("d_bucket".to_string(), l("0.1"), 1_000, 5.0),
            ("d_bucket".to_string(), l("+Inf"), 1_000, 9.0),
            ("d_count".to_string(), labels(&[("job", "pay")]), 1_000, 9.0),
            ("d_bucket".to_string(), l("oops"), 1_000, 1.0),
        ];
        let g = group_buckets(raw);
        assert_eq!(g.len(), 2);
        assert!(
            g.iter()
                .any(|r| r.0 == "d"
                    && r.3 == Point::Histogram(vec![(0.1, 5.0), (f64::INFINITY, 9.0)]))
        );
        let mut rates = Rates::new(100);
        let first = rates.convert(g, &placing(), 100, false);
        assert!(first.batches.is_empty(), "a rate needs two readings");
        let raw = vec![
            ("d_bucket".to_string(), l("0.1"), 2_000, 105.0),
            ("d_bucket".to_string(), l("+Inf"), 2_000, 109.0),
            (
                "d_count".to_string(),
                labels(&[("job", "pay")]),
                2_000,
                109.0,
            ),
        ];
        let v = values(&rates.convert(group_buckets(raw), &placing(), 100, false));
        assert_eq!(v["d_count_per_s{}"], 100.0);
        assert!((v["d_p50{}"] - 0.05).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn a_full_memory_drops_new_series_and_counts_them() {
        let mut rates = Rates::new(1);
        let r = |name: &str| {
            (
                name.to_string(),
                BTreeMap::new(),
                1_000,
                Point::Counter(1.0),
            )
        };
        let c = rates.convert(vec![r("a_total"), r("b_total")], &placing(), 100, false);
        assert_eq!((rates.series(), c.dropped), (1, 1));
    }

    #[test]
    fn quantile_matches_histogram_quantile() {
        let b = [(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert_eq!(quantile(0.5, &b), Some(1.0));
        assert_eq!(quantile(0.75, &b), Some(1.5));
        assert_eq!(
            quantile(1.0, &[(1.0, 0.0), (f64::INFINITY, 4.0)]),
            Some(1.0)
        );
        assert_eq!(quantile(0.5, &[(1.0, 0.0)]), None);
    }
}
