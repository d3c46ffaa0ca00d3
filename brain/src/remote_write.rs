//! Prometheus `remote_write` (protocol 1.0): an existing Prometheus feeds
//! the brain without agents. The body is a snappy-compressed (block format)
//! protobuf `WriteRequest`, decoded with `snap` and `prost`; its series are
//! turned into indicators by [`selfheal_bus::prom`] exactly as an agent's
//! scrapes are (counters as rates, histograms as interval percentiles) and
//! published on the bus like an agent's batches, so that they pass the
//! same ingest checks and series limits.
//!
//! Metadata, exemplars and native histograms are ignored: the kind of a
//! series is read from its name (`*_total`, `*_count`, `*_bucket`).

use std::collections::BTreeMap;

use selfheal_bus::prom::{Placing, Rates};
use serde::{Deserialize, Serialize};

/// `prometheus.WriteRequest`, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Its labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PromSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The endpoint's settings (`[remote_write]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// SHA-256 (hex) of the bearer token Prometheus sends
    /// (`authorization.credentials` in its `remote_write` block).
    pub token_sha256: String,
    /// The IDC of series whose labels name none.
    #[serde(default = "default_idc")]
    pub idc: String,
    /// Most series whose previous reading is remembered for a rate; the
    /// readings of further new series are dropped and counted.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_idc() -> String {
    "prometheus".into()
}
const fn default_max_series() -> usize {
    1_000_000
}

impl RemoteWriteConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if crate::secret::parse_sha256(&self.token_sha256).is_none() {
            p.push("remote_write.token_sha256: must be 64 hex digits (selfheal hash-token)".into());
        }
        if !selfheal_bus::message::valid_name(&self.idc) {
            p.push("remote_write.idc: must be 1-128 chars of [A-Za-z0-9_:/-]".into());
        }
        if self.max_series == 0 {
            p.push("remote_write.max_series: must be at least 1".into());
        }
        p
    }
}

/// Largest compressed body accepted, bytes.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Largest decompressed body accepted, bytes.
pub const MAX_DECODED: usize = 64 * 1024 * 1024;
/// Most samples in one request.
pub const MAX_SAMPLES: usize = 1_000_000;

/// The series of one request, or why it is refused.
pub fn decode(body: &[u8]) -> Result<WriteRequest, String> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| format!("body is not snappy (block format): {e}"))?;
    if len > MAX_DECODED {
        return Err(format!(
            "decompressed body of {len} bytes, over {MAX_DECODED}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("body is not snappy (block format): {e}"))?;
    let req = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("not a remote_write WriteRequest: {e}"))?;
    let n: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
    if n > MAX_SAMPLES {
        return Err(format!("{n} samples in one request, over {MAX_SAMPLES}"));
    }
    for (i, t) in req.timeseries.iter().enumerate() {
        if !t
            .labels
            .iter()
            .any(|l| l.name == "__name__" && !l.value.is_empty())
        {
            return Err(format!("timeseries[{i}] has no __name__ label"));
        }
    }
    Ok(req)
}

/// The intake's memory: the readings rates need, across requests.
pub struct Intake {
    rates: Rates,
    placing: Placing,
}

impl Intake {
    /// An intake placing unlabelled series in `cfg.idc`.
    pub fn new(cfg: &RemoteWriteConfig) -> Self {
        Intake {
            rates: Rates::new(cfg.max_series),
            placing: Placing {
                default_service: "prometheus".into(),
                default_idc: cfg.idc.clone(),
                ..Default::default()
            },
        }
    }

    /// The indicators of one request (NaN values, which Prometheus writes
    /// as staleness markers, are gaps) and the samples dropped.
    pub fn convert(&mut self, req: WriteRequest) -> selfheal_bus::prom::Converted {
        let raw = req.timeseries.into_iter().flat_map(|t| {
            let mut labels: BTreeMap<String, String> =
                t.labels.into_iter().map(|l| (l.name, l.value)).collect();
            let name = labels.remove("__name__").unwrap_or_default();
            t.samples
                .into_iter()
                .filter(|s| s.value.is_finite())
                .map(move |s| (name.clone(), labels.clone(), s.timestamp, s.value))
        });
        let readings = selfheal_bus::prom::group_buckets(raw);
        self.rates
            .convert(readings, &self.placing, MAX_SAMPLES, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, job: &str, points: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "job".into(),
                    value: job.into(),
                },
                Label {
                    name: "instance".into(),
                    value: "10.0.0.7:9100".into(),
                },
            ],
            samples: points
                .iter()
                .map(|&(timestamp, value)| PromSample { value, timestamp })
                .collect(),
        }
    }

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(req))
            .unwrap()
    }

    #[test]
    fn a_request_becomes_indicators_of_its_job() {
        let req = WriteRequest {
            timeseries: vec![
                series("payments_total", "pay", &[(1_000, 10.0), (2_000, 60.0)]),
                series("in_flight", "pay", &[(2_000, 3.0), (3_000, f64::NAN)]),
            ],
        };
        let decoded = decode(&body(&req)).unwrap();
        let cfg = RemoteWriteConfig {
            token_sha256: "0".repeat(64),
            idc: "idc9".into(),
            max_series: 10,
        };
        let out = Intake::new(&cfg).convert(decoded);
        assert_eq!(out.batches.len(), 1);
        let b = &out.batches[0];
        assert_eq!((b.service.as_str(), b.idc.as_str()), ("pay", "idc9"));
        let got: Vec<(&str, i64, f64)> = b
            .samples
            .iter()
            .map(|s| (s.metric.as_str(), s.ts, s.value))
            .collect();
        assert_eq!(
            got,
            [("payments_per_s", 2_000, 50.0), ("in_flight", 2_000, 3.0)]
        );
        assert_eq!(b.samples[0].instance.as_deref(), Some("10_0_0_7_9100"));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        assert!(decode(b"plain text").unwrap_err().contains("snappy"));
        let not_proto = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
        assert!(decode(&not_proto).unwrap_err().contains("WriteRequest"));
        let nameless = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![],
                samples: vec![PromSample {
                    value: 1.0,
                    timestamp: 1,
                }],
            }],
        };
        assert!(decode(&body(&nameless)).unwrap_err().contains("__name__"));
    }
}
