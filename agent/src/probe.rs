//! Dial tests: configured HTTP requests against business endpoints (the
//! payment page, the pay API), run on an interval, published as business
//! indicators per endpoint and IDC — `probe_success` (1 or 0) and
//! `probe_latency_ms` — so a broken page is seen before customers call.
//!
//! A probe succeeds when the answer comes within the timeout with the
//! expected status and, when a pattern is given, a body that matches it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One dial test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Its name: the scene its indicators are filed under.
    pub name: String,
    /// The service the endpoint belongs to.
    pub service: String,
    /// The URL (http or https).
    pub url: String,
    /// The method.
    #[serde(default = "default_method")]
    pub method: String,
    /// A body to send (JSON or text).
    #[serde(default)]
    pub body: Option<String>,
    /// The status a healthy endpoint answers.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// A pattern (regular expression) a healthy answer's body matches.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// How long an answer may take, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time between two dials, ms.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
}

fn default_method() -> String {
    "GET".into()
}
const fn default_status() -> u16 {
    200
}
const fn default_timeout_ms() -> u64 {
    2000
}
const fn default_interval_ms() -> u64 {
    5000
}

impl Probe {
    /// Every problem, each naming its key under `at`.
    pub fn validate(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if !selfheal_bus::message::valid_name(&self.name)
            || !selfheal_bus::message::valid_name(&self.service)
        {
            p.push(format!(
                "{at}: name and service must be 1-128 chars of [A-Za-z0-9_:/-]"
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            p.push(format!(
                "{at}.url: {:?} must be http:// or https://",
                self.url
            ));
        }
        if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
            p.push(format!(
                "{at}.method: {:?} is not an HTTP method",
                self.method
            ));
        }
        if !(100..=599).contains(&self.expect_status) {
            p.push(format!("{at}.expect_status: must be 100 to 599"));
        }
        if let Some(re) = &self.expect_body
            && let Err(e) = regex::Regex::new(re)
        {
            p.push(format!("{at}.expect_body: {e}"));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            p.push(format!("{at}.timeout_ms: must be 1 to 60000"));
        }
        if !(100..=3_600_000).contains(&self.interval_ms) || self.interval_ms < self.timeout_ms {
            p.push(format!(
                "{at}.interval_ms: must be 100 to 3600000 and at least timeout_ms"
            ));
        }
        p
    }
}

/// One dial's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialed {
    /// Whether the endpoint answered as a healthy one does.
    pub ok: bool,
    /// How long it took, ms (the timeout when there was no answer).
    pub latency_ms: f64,
    /// Why it failed, for the log.
    pub why: Option<String>,
}

impl Dialed {
    /// This result as a business batch of the probe's service and scene:
    /// `probe_success` (1 or 0) and `probe_latency_ms`, at `ts`. The
    /// publisher sets its source and number.
    pub fn batch(&self, p: &Probe, idc: &str, ts: i64) -> selfheal_bus::IndicatorBatch {
        let sample = |metric: &str, value: f64| selfheal_bus::Sample {
            scene: Some(p.name.clone()),
            link: None,
            instance: None,
            metric: metric.to_string(),
            labels: Default::default(),
            ts,
            value,
        };
        selfheal_bus::IndicatorBatch {
            v: selfheal_bus::WIRE_VERSION,
            source: String::new(),
            seq: 0,
            layer: selfheal_bus::Layer::Business,
            idc: idc.to_string(),
            service: p.service.clone(),
            samples: vec![
                sample("probe_success", if self.ok { 1.0 } else { 0.0 }),
                sample("probe_latency_ms", self.latency_ms),
            ],
        }
    }
}

/// The HTTP client dials and scrapes go through: rustls, no redirects followed (a
/// redirect is an answer to judge).
pub fn client() -> Result<reqwest::Client, String> {
    // reqwest is built without a TLS provider of its own; ring is the one
    // async-nats already brings. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("selfheal-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A probe ready to dial: its body pattern compiled once.
pub struct Dialer {
    /// The probe.
    pub probe: Probe,
    pattern: Option<regex::Regex>,
}

impl Dialer {
    /// `p`, its pattern compiled (a bad one is refused, as
    /// [`Probe::validate`] says).
    pub fn new(p: Probe) -> Result<Self, String> {
        let pattern = p
            .expect_body
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| format!("probe {}: expect_body: {e}", p.name))?;
        Ok(Dialer { probe: p, pattern })
    }

    /// Dials once.
    pub async fn dial(&self, client: &reqwest::Client) -> Dialed {
        dial(client, &self.probe, self.pattern.as_ref()).await
    }
}

async fn dial(client: &reqwest::Client, p: &Probe, pattern: Option<&regex::Regex>) -> Dialed {
    let started = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut rb = client
        .request(method, &p.url)
        .timeout(Duration::from_millis(p.timeout_ms));
    if let Some(b) = &p.body {
        rb = rb.body(b.clone());
    }
    let fail = |why: String, latency_ms: f64| Dialed {
        ok: false,
        latency_ms,
        why: Some(why),
    };
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return fail(
                format!("no answer in {} ms", p.timeout_ms),
                p.timeout_ms as f64,
            );
        }
        Err(e) => return fail(format!("{e}"), ms(started)),
    };
    let status = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return fail(format!("body: {e}"), ms(started)),
    };
    let latency_ms = ms(started);
    if status != p.expect_status {
        return fail(
            format!("HTTP {status}, expected {}", p.expect_status),
            latency_ms,
        );
    }
    if let Some(re) = pattern {
        let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]);
        if !re.is_match(&text) {
            return fail(format!("body does not match {:?}", re.as_str()), latency_ms);
        }
    }
    Dialed {
        ok: true,
        latency_ms,
        why: None,
    }
}
