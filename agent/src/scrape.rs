//! Scraping Prometheus text / OpenMetrics endpoints: the indicators a team
//! already exports, published as the agent's own.
//!
//! The exposition is read by the `prometheus-parse` crate. What it gives is
//! turned into indicators the way a detector can use them:
//! - gauges (and untyped values) as they are;
//! - counters (`# TYPE counter`, or a name ending in `_total`) as a rate
//!   per second between two scrapes, named `<name without _total>_per_s`; a
//!   counter that went down was reset (its process restarted), and that one
//!   interval is skipped rather than read as a huge negative rate;
//! - histograms as `<name>_p50`, `_p90` and `_p99` over the observations
//!   made between two scrapes (the buckets' increases, interpolated within a
//!   bucket as Prometheus' `histogram_quantile` does), plus the observation
//!   rate `<name>_per_s`; an interval with no observation is a gap;
//! - summaries' quantiles as `<name>_pNN`.
//!
//! Each sample's service, instance, IDC and layer come from the target's
//! settings when given, else from the sample's `service` (or `job`),
//! `instance`, `idc` and `layer` labels, else from the target (its name,
//! the URL's host:port, the agent's IDC, the service layer). Other labels
//! stay on the sample, their values made wire-safe; a sample with more than
//! the wire's labels is dropped and counted.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use prometheus_parse::{Scrape, Value};
use selfheal_bus::{
    IndicatorBatch, Layer, Sample, WIRE_VERSION,
    message::{MAX_LABELS, valid_name},
    names::wire_name,
};
use serde::{Deserialize, Serialize};

/// One endpoint to scrape (`[[scrape]]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Its name: the service when neither the settings nor the labels say.
    pub name: String,
    /// The URL of its exposition (`http://10.0.0.7:9100/metrics`).
    pub url: String,
    /// The service every sample belongs to (over the labels).
    #[serde(default)]
    pub service: Option<String>,
    /// The instance (over the labels; else the URL's host:port).
    #[serde(default)]
    pub instance: Option<String>,
    /// The IDC (over the labels; else the agent's).
    #[serde(default)]
    pub idc: Option<String>,
    /// The layer (over the labels; else `system`).
    #[serde(default)]
    pub layer: Option<Layer>,
    /// Only metrics whose exposition name matches one of these regular
    /// expressions (all when empty).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Time between two scrapes, ms.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a scrape may take, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most samples published per scrape; the rest are dropped and counted
    /// (an exporter that explodes its label space must not flood the bus).
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
}

const fn default_interval_ms() -> u64 {
    5000
}
const fn default_timeout_ms() -> u64 {
    2000
}
const fn default_max_samples() -> usize {
    5000
}

/// Most samples in one published batch (well under a brain's limit and
/// NATS' default message size).
const BATCH_SAMPLES: usize = 1000;

/// The largest exposition read, in bytes.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

impl Target {
    /// Every problem, each naming its key under `at`.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (key, v) in [
            ("name", Some(&self.name)),
            ("service", self.service.as_ref()),
            ("instance", self.instance.as_ref()),
            ("idc", self.idc.as_ref()),
        ] {
            if let Some(v) = v
                && !valid_name(v)
            {
                p.push(format!(
                    "{at}.{key}: {v:?} must be 1-128 chars of [A-Za-z0-9_:/-]"
                ));
            }
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            p.push(format!(
                "{at}.url: {:?} must be http:// or https://",
                self.url
            ));
        }
        for (i, re) in self.keep.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                p.push(format!("{at}.keep[{i}]: {e}"));
            }
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            p.push(format!("{at}.timeout_ms: must be 1 to 60000"));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) || self.interval_ms < self.timeout_ms {
            p.push(format!(
                "{at}.interval_ms: must be 100 to 3600000 and at least timeout_ms"
            ));
        }
        if self.max_samples == 0 {
            p.push(format!("{at}.max_samples: must be at least 1"));
        }
        p
    }

    /// host:port of the URL, the instance when nothing else names one.
    fn url_instance(&self) -> String {
        let rest = self.url.split("://").nth(1).unwrap_or(&self.url);
        let authority = rest.split('/').next().unwrap_or(rest);
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        wire_name(authority)
    }
}

/// What one scrape gave.
#[derive(Debug, Default)]
pub struct Scraped {
    /// The indicators, one batch per layer, IDC and service (`seq` left 0
    /// for the publisher to number).
    pub batches: Vec<IndicatorBatch>,
    /// Samples dropped: too many labels, over `max_samples`, or not finite.
    pub dropped: u64,
}

/// One series' identity within a target: metric and its labels, as
/// exposed.
type Key = (String, Vec<(String, String)>);

/// A target with what its last scrape left: the counters and histograms a
/// rate needs two readings of.
pub struct Scraper {
    /// The target.
    pub target: Target,
    keep: Vec<regex::Regex>,
    counters: HashMap<Key, (i64, f64)>,
    histograms: HashMap<Key, (i64, Vec<(f64, f64)>)>,
}

impl Scraper {
    /// `t`, its patterns compiled (a bad one is refused, as
    /// [`Target::validate`] says).
    pub fn new(t: Target) -> Result<Self, String> {
        let keep = t
            .keep
            .iter()
            .map(|re| regex::Regex::new(re))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("scrape {}: keep: {e}", t.name))?;
        Ok(Scraper {
            target: t,
            keep,
            counters: HashMap::new(),
            histograms: HashMap::new(),
        })
    }

    /// Fetches the exposition once.
    pub async fn fetch(&self, client: &reqwest::Client) -> Result<String, String> {
        let t = &self.target;
        let resp = client
            .get(&t.url)
            .header(
                "accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .timeout(Duration::from_millis(t.timeout_ms))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer in {} ms", t.timeout_ms)
                } else {
                    format!("{e}")
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n as usize > MAX_BODY) {
            return Err(format!("exposition larger than {MAX_BODY} bytes"));
        }
        let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
        if body.len() > MAX_BODY {
            return Err(format!("exposition larger than {MAX_BODY} bytes"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "exposition is not UTF-8".to_string())
    }

    /// Turns one exposition, read at `ts`, into indicators. `idc` is the
    /// agent's.
    pub fn read(&mut self, text: &str, ts: i64, idc: &str) -> Scraped {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = match Scrape::parse(lines) {
            Ok(s) => s,
            // The parser only fails on a failing reader; lines it cannot
            // read it skips.
            Err(_) => return Scraped::default(),
        };
        let mut out = Scraped::default();
        let mut groups: BTreeMap<(Layer, String, String), Vec<Sample>> = BTreeMap::new();
        let mut published = 0usize;
        let mut seen_counters = HashMap::new();
        let mut seen_histograms = HashMap::new();
        for s in scrape.samples {
            if s.metric.ends_with("_created")
                || (!self.keep.is_empty() && !self.keep.iter().any(|re| re.is_match(&s.metric)))
            {
                continue;
            }
            let Some(place) = self.place(&s.labels, idc) else {
                out.dropped += 1;
                continue;
            };
            let key: Key = (
                s.metric.clone(),
                s.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect(),
            );
            let mut values: Vec<(String, f64)> = Vec::new();
            match &s.value {
                Value::Counter(v) => {
                    self.rate(&key, &s.metric, *v, ts, &mut seen_counters, &mut values)
                }
                Value::Untyped(v) if s.metric.ends_with("_total") => {
                    self.rate(&key, &s.metric, *v, ts, &mut seen_counters, &mut values)
                }
                Value::Gauge(v) | Value::Untyped(v) => values.push((wire_name(&s.metric), *v)),
                Value::Histogram(buckets) => {
                    let now: Vec<(f64, f64)> =
                        buckets.iter().map(|b| (b.less_than, b.count)).collect();
                    if let Some((then_ts, then)) = self.histograms.get(&key)
                        && ts > *then_ts
                        && let Some(delta) = increase(then, &now)
                    {
                        let total = delta.last().map_or(0.0, |b| b.1);
                        let secs = (ts - then_ts) as f64 / 1000.0;
                        values.push((format!("{}_per_s", wire_name(&s.metric)), total / secs));
                        if total > 0.0 {
                            for (q, suffix) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
                                if let Some(v) = quantile(q, &delta) {
                                    values.push((format!("{}_{suffix}", wire_name(&s.metric)), v));
                                }
                            }
                        }
                    }
                    seen_histograms.insert(key.clone(), (ts, now));
                }
                Value::Summary(qs) => {
                    for q in qs {
                        let pct = (q.quantile * 100.0).round() as i64;
                        values.push((format!("{}_p{pct}", wire_name(&s.metric)), q.count));
                    }
                }
            }
            for (metric, value) in values {
                if !value.is_finite() {
                    out.dropped += 1;
                    continue;
                }
                if published >= self.target.max_samples {
                    out.dropped += 1;
                    continue;
                }
                published += 1;
                groups
                    .entry((place.layer, place.idc.clone(), place.service.clone()))
                    .or_default()
                    .push(Sample {
                        scene: None,
                        link: None,
                        instance: Some(place.instance.clone()),
                        metric: metric
                            .chars()
                            .take(selfheal_bus::message::MAX_NAME_LEN)
                            .collect(),
                        labels: place.labels.clone(),
                        ts,
                        value,
                    });
            }
        }
        // What was not exposed this time is forgotten: a series that comes
        // back starts over rather than giving a rate across the gap.
        self.counters = seen_counters;
        self.histograms = seen_histograms;
        for ((layer, idc, service), samples) in groups {
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

    fn rate(
        &self,
        key: &Key,
        metric: &str,
        v: f64,
        ts: i64,
        seen: &mut HashMap<Key, (i64, f64)>,
        values: &mut Vec<(String, f64)>,
    ) {
        if let Some((then_ts, then)) = self.counters.get(key)
            && ts > *then_ts
            && v >= *then
        {
            let base = metric.strip_suffix("_total").unwrap_or(metric);
            values.push((
                format!("{}_per_s", wire_name(base)),
                (v - then) / ((ts - then_ts) as f64 / 1000.0),
            ));
        }
        seen.insert(key.clone(), (ts, v));
    }

    /// Where a sample goes: its service, instance, IDC, layer and the labels
    /// it keeps. `None` when it keeps more labels than the wire takes.
    fn place(&self, labels: &prometheus_parse::Labels, idc: &str) -> Option<Place> {
        let t = &self.target;
        let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).map(wire_name);
        let service = t
            .service
            .clone()
            .or_else(|| label("service"))
            .or_else(|| label("job"))
            .unwrap_or_else(|| t.name.clone());
        let instance = t
            .instance
            .clone()
            .or_else(|| label("instance"))
            .unwrap_or_else(|| t.url_instance());
        let idc = t
            .idc
            .clone()
            .or_else(|| label("idc"))
            .unwrap_or_else(|| idc.to_string());
        let layer = t
            .layer
            .or_else(|| match labels.get("layer") {
                Some("business") => Some(Layer::Business),
                Some("system") => Some(Layer::System),
                Some("infra") => Some(Layer::Infra),
                _ => None,
            })
            .unwrap_or(Layer::System);
        let kept: BTreeMap<String, String> = labels
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "service" | "job" | "instance" | "idc" | "layer" | "le" | "quantile"
                )
            })
            .map(|(k, v)| (wire_name(k), wire_name(v)))
            .collect();
        (kept.len() <= MAX_LABELS).then_some(Place {
            service,
            instance,
            idc,
            layer,
            labels: kept,
        })
    }
}

struct Place {
    service: String,
    instance: String,
    idc: String,
    layer: Layer,
    labels: BTreeMap<String, String>,
}

/// The increase of cumulative buckets (upper bound, count) from `then` to
/// `now`, sorted by bound. `None` when the buckets changed or a count went
/// down (a reset).
fn increase(then: &[(f64, f64)], now: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    let sorted = |b: &[(f64, f64)]| {
        let mut b = b.to_vec();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    };
    let (then, now) = (sorted(then), sorted(now));
    if then.len() != now.len() || then.iter().zip(&now).any(|(a, b)| a.0 != b.0 || b.1 < a.1) {
        return None;
    }
    Some(
        now.iter()
            .zip(&then)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        toml::from_str(
            r#"
name = "pay"
url = "http://10.0.0.7:9100/metrics"
interval_ms = 1000
timeout_ms = 500
"#,
        )
        .unwrap()
    }

    fn values(s: &Scraped) -> BTreeMap<String, f64> {
        s.batches
            .iter()
            .flat_map(|b| &b.samples)
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (format!("{}{{{}}}", s.metric, labels.join(",")), s.value)
            })
            .collect()
    }

    #[test]
    fn counters_become_rates_and_a_reset_is_skipped() {
        let mut s = Scraper::new(target()).unwrap();
        let text = |n: u64, e: u64| {
            format!(
                "# TYPE payments counter\npayments_total{{outcome=\"ok\"}} {n}\n\
                 payment_errors_total {e}\n# TYPE in_flight gauge\nin_flight 7\n# EOF\n"
            )
        };
        let first = s.read(&text(1000, 5), 10_000, "idc1");
        assert_eq!(
            values(&first),
            BTreeMap::from([("in_flight{}".to_string(), 7.0)]),
            "a rate needs two readings"
        );
        let second = s.read(&text(1300, 5), 12_000, "idc1");
        let v = values(&second);
        assert_eq!(v["payments_per_s{outcome=ok}"], 150.0);
        assert_eq!(v["payment_errors_per_s{}"], 0.0);
        // The process restarted: the counter starts over.
        let third = s.read(&text(40, 5), 13_000, "idc1");
        assert!(!values(&third).contains_key("payments_per_s{outcome=ok}"));
        let fourth = s.read(&text(140, 6), 14_000, "idc1");
        assert_eq!(values(&fourth)["payments_per_s{outcome=ok}"], 100.0);
        let b = &fourth.batches[0];
        assert_eq!(
            (b.service.as_str(), b.idc.as_str(), b.layer),
            ("pay", "idc1", Layer::System)
        );
        assert_eq!(b.samples[0].instance.as_deref(), Some("10_0_0_7_9100"));
    }

    #[test]
    fn histograms_become_interval_percentiles() {
        let mut s = Scraper::new(target()).unwrap();
        let text = |fast: u64, slow: u64| {
            let total = fast + slow;
            format!(
                "# TYPE pay_duration_seconds histogram\n\
                 pay_duration_seconds_bucket{{le=\"0.01\"}} {fast}\n\
                 pay_duration_seconds_bucket{{le=\"0.1\"}} {fast}\n\
                 pay_duration_seconds_bucket{{le=\"1\"}} {total}\n\
                 pay_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
                 pay_duration_seconds_sum 1\npay_duration_seconds_count {total}\n"
            )
        };
        s.read(&text(100, 0), 1_000, "idc1");
        // 90 fast and 10 slow in the interval.
        let v = values(&s.read(&text(190, 10), 2_000, "idc1"));
        assert_eq!(v["pay_duration_seconds_per_s{}"], 100.0);
        assert!(
            (v["pay_duration_seconds_p50{}"] - 0.005556).abs() < 1e-4,
            "{v:?}"
        );
        assert!(
            (v["pay_duration_seconds_p90{}"] - 0.01).abs() < 1e-9,
            "{v:?}"
        );
        assert!(
            (v["pay_duration_seconds_p99{}"] - 0.91).abs() < 1e-9,
            "{v:?}"
        );
        // Nothing observed: a rate of 0 and no percentile (a gap).
        let v = values(&s.read(&text(190, 10), 3_000, "idc1"));
        assert_eq!(v["pay_duration_seconds_per_s{}"], 0.0);
        assert!(!v.contains_key("pay_duration_seconds_p99{}"));
    }

    #[test]
    fn settings_win_over_labels_which_win_over_defaults() {
        let mut t = target();
        t.service = Some("cashier".into());
        let mut s = Scraper::new(t).unwrap();
        let out = s.read(
            "up{job=\"pay\",instance=\"10.0.0.9:80\",idc=\"idc2\",layer=\"business\",path=\"/v1/pay\"} 1\n",
            1_000,
            "idc1",
        );
        let b = &out.batches[0];
        assert_eq!(
            (b.service.as_str(), b.idc.as_str(), b.layer),
            ("cashier", "idc2", Layer::Business)
        );
        assert_eq!(b.samples[0].instance.as_deref(), Some("10_0_0_9_80"));
        assert_eq!(b.samples[0].labels["path"], "/v1/pay");
    }

    #[test]
    fn floods_and_bad_values_are_dropped_and_counted() {
        let mut t = target();
        t.max_samples = 3;
        t.keep = vec!["^x".into()];
        let mut s = Scraper::new(t).unwrap();
        let mut text = String::from("y 1\nx_nan NaN\nnot a line at all\n");
        for i in 0..5 {
            text.push_str(&format!("x{{i=\"{i}\"}} 1\n"));
        }
        text.push_str(
            "x_wide{a=\"1\",b=\"1\",c=\"1\",d=\"1\",e=\"1\",f=\"1\",g=\"1\",h=\"1\",i=\"1\"} 1\n",
        );
        let out = s.read(&text, 1_000, "idc1");
        assert_eq!(
            out.batches.iter().map(|b| b.samples.len()).sum::<usize>(),
            3
        );
        // NaN, two over the cap, one with nine labels.
        assert_eq!(out.dropped, 4);
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
