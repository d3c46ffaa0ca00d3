//! Scraping Prometheus text / OpenMetrics endpoints: the indicators a team
//! already exports, published as the agent's own.
//!
//! The exposition is read by the `prometheus-parse` crate; what it gives is
//! turned into indicators by [`selfheal_bus::prom`], as the brain turns
//! remote-written series (counters as rates, histograms as interval
//! percentiles, placing from settings, labels or defaults). A target's
//! defaults are its name (service), the URL's host:port (instance), the
//! agent's IDC and the service layer. Each scrape also gives `up`, 1 when
//! the target answered and 0 when it did not, as Prometheus records it: a
//! crashed process is seen by its `up` going to 0.

use std::{collections::BTreeMap, time::Duration};

use prometheus_parse::{Scrape, Value};
use selfheal_bus::{
    Layer,
    message::valid_name,
    names::wire_name,
    prom::{Converted, Placing, Point, Rates},
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

/// A target with what its last scrape left: the counters and histograms a
/// rate needs two readings of.
pub struct Scraper {
    /// The target.
    pub target: Target,
    keep: Vec<regex::Regex>,
    rates: Rates,
}

/// Most series a target's rates remember (its `max_samples` bounds what is
/// published; this bounds what is kept).
const MAX_SERIES: usize = 100_000;

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
            rates: Rates::new(MAX_SERIES),
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
    /// agent's. Lines the parser cannot read are skipped.
    pub fn read(&mut self, text: &str, ts: i64, idc: &str) -> Converted {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        // The parser only fails when its reader does; ours cannot.
        let Ok(scrape) = Scrape::parse(lines) else {
            return Converted::default();
        };
        let keep = &self.keep;
        let readings = scrape
            .samples
            .into_iter()
            .filter(|s| keep.is_empty() || keep.iter().any(|re| re.is_match(&s.metric)))
            .map(|s| {
                let labels: BTreeMap<String, String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let point = match s.value {
                    Value::Counter(v) => Point::Counter(v),
                    Value::Gauge(v) | Value::Untyped(v) => Point::Gauge(v),
                    Value::Histogram(b) => {
                        Point::Histogram(b.iter().map(|b| (b.less_than, b.count)).collect())
                    }
                    Value::Summary(q) => {
                        Point::Summary(q.iter().map(|q| (q.quantile, q.count)).collect())
                    }
                };
                (s.metric, labels, ts, point)
            });
        let placing = self.placing(idc);
        let mut out = self
            .rates
            .convert(readings, &placing, self.target.max_samples, true);
        out.batches.extend(self.up(true, ts, idc).batches);
        out
    }

    /// `up`, as Prometheus records it: 1 when the scrape at `ts` answered,
    /// 0 when it did not, in the target's service and instance.
    pub fn up(&mut self, answered: bool, ts: i64, idc: &str) -> Converted {
        let placing = self.placing(idc);
        let up = (
            "up".to_string(),
            BTreeMap::new(),
            ts,
            Point::Gauge(if answered { 1.0 } else { 0.0 }),
        );
        self.rates.convert([up], &placing, 1, false)
    }

    fn placing(&self, idc: &str) -> Placing {
        let t = &self.target;
        Placing {
            service: t.service.clone(),
            instance: t.instance.clone(),
            idc: t.idc.clone(),
            layer: t.layer,
            default_service: t.name.clone(),
            default_instance: Some(t.url_instance()),
            default_idc: idc.to_string(),
        }
    }
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

    fn values(s: &Converted) -> BTreeMap<String, f64> {
        s.by_series()
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
            BTreeMap::from([("in_flight{}".to_string(), 7.0), ("up{}".to_string(), 1.0)]),
            "a rate needs two readings"
        );
        assert_eq!(values(&s.up(false, 11_000, "idc1"))["up{}"], 0.0);
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
        assert_eq!(v["pay_duration_seconds_count_per_s{}"], 100.0);
        assert!(!v.contains_key("pay_duration_seconds_sum{}"));
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
        assert_eq!(v["pay_duration_seconds_count_per_s{}"], 0.0);
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
        // Three kept, and `up`.
        assert_eq!(
            out.batches.iter().map(|b| b.samples.len()).sum::<usize>(),
            4
        );
        // NaN, two over the cap, one with nine labels.
        assert_eq!(out.dropped, 4);
    }
}
