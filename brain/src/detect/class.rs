//! Metric classes: what a series measures and which way of moving is bad
//! for it, from its name.
//!
//! A name is cut into words (at `_`, `-`, `.`, spaces and other
//! punctuation, and at case changes: `PodSuccessRate` is `pod success
//! rate`), lower-cased, and matched against a table of classes in order;
//! the first class with a matching word wins. A pattern is a whole word
//! (`rt`), a word prefix (`latenc*`) or a word followed by digits, written
//! with `NN` (`pNN`: a percentile such as `p99`; `loadNN`: `load1`).
//! The shipped table ([`shipped`]) covers the usual names; the
//! configuration's `[[metric_class]]` entries are tried before it, so an
//! operator can add or override a name without a release.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use super::Direction;

/// One row of the class table, as the configuration writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRule {
    /// The class (`errors`, `latency`, `cpu`... or one of your own).
    pub class: String,
    /// Which way of moving is bad: `up`, `down` or `both`.
    pub direction: Direction,
    /// Words that put a metric in this class: `word`, `prefix*` or
    /// `wordNN` (the word and digits: `pNN`).
    pub patterns: Vec<String>,
}

/// What a metric measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricClass {
    /// The class name (`other` when nothing matched).
    pub name: Arc<str>,
    /// Its bad direction.
    pub direction: Direction,
}

#[derive(Clone, Debug)]
enum Pattern {
    Word(String),
    Prefix(String),
    /// The word followed by one digit or more (`pNN`: `p99`).
    Numbered(String),
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, String> {
        let p = p.trim();
        // `NN` in capitals (or `pnn`, as the percentile was always read).
        let numbered = match p.strip_suffix("NN") {
            Some(w) => Some(w),
            None if p.eq_ignore_ascii_case("pnn") => Some("p"),
            None => None,
        };
        let lower = numbered.unwrap_or(p).to_ascii_lowercase();
        let (word, prefix) = match lower.strip_suffix('*') {
            Some(w) if numbered.is_none() => (w, true),
            _ => (lower.as_str(), false),
        };
        if word.is_empty() || !word.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "pattern {p:?}: a word of letters and digits, optionally ending in * (any ending) or NN (digits: pNN)"
            ));
        }
        Ok(match (numbered, prefix) {
            (Some(_), _) => Pattern::Numbered(word.to_string()),
            (None, true) => Pattern::Prefix(word.to_string()),
            (None, false) => Pattern::Word(word.to_string()),
        })
    }

    fn matches(&self, w: &str) -> bool {
        match self {
            Pattern::Word(p) => w == p,
            Pattern::Prefix(p) => w.starts_with(p.as_str()),
            Pattern::Numbered(p) => w
                .strip_prefix(p.as_str())
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        }
    }
}

/// The shipped class table, in the order it is matched. Network errors
/// (retransmissions, drops: the mark of packet loss) and errors come first
/// (`error_ratio` is an error), then the resources, then
/// latency (after the resources: `container_cpu_usage_seconds_total` is
/// CPU), then success and availability (`ratio` alone reads as a success
/// ratio), then network volume and traffic, which are bad either way.
pub fn shipped() -> Vec<ClassRule> {
    let row = |class: &str, direction, patterns: &[&str]| ClassRule {
        class: class.into(),
        direction,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
    };
    use Direction::*;
    vec![
        row(
            "network_errors",
            Up,
            &["retrans*", "drop*", "dropped", "loss", "lost", "discard*"],
        ),
        row(
            "errors",
            Up,
            &[
                "error*",
                "err",
                "errs",
                "fail*",
                "exception*",
                "5xx",
                "timeout*",
                "reject*",
            ],
        ),
        // `load1`, `loadavg`: the hosts' load average. A bare `load` is
        // a service's request load (`checkoutservice_load`): traffic.
        row("cpu", Up, &["cpu*", "loadNN", "loadavg*", "throttl*"]),
        row(
            "memory",
            Up,
            &["mem*", "rss", "heap*", "oom*", "gc*", "swap*"],
        ),
        row(
            "disk",
            Up,
            &[
                "disk*",
                "io",
                "iops",
                "iowait",
                "fs",
                "filesystem*",
                "inode*",
            ],
        ),
        row(
            "saturation",
            Up,
            &[
                "fd", "fds", "thread*", "pool*", "conn*", "queue*", "socket*", "saturat*",
            ],
        ),
        row(
            "latency",
            Up,
            &[
                "latenc*",
                "lat",
                "latNN",
                "duration*",
                "rt",
                "rtt",
                "delay*",
                "pNN",
                "seconds",
                "ms",
                "elapsed",
                "time",
                "mrt",
            ],
        ),
        row(
            "success",
            Down,
            // `sr` and `rr`: the success and response rates (%) the
            // AIOps challenges' service files carry (OpenRCA's Bank and
            // Market).
            &["succ*", "availab*", "ratio", "ok", "hit*", "up", "sr", "rr"],
        ),
        row(
            "network",
            Both,
            &[
                "net*",
                "receive*",
                "transmit*",
                "rx",
                "tx",
                "bytes",
                "packet*",
                "bandwidth*",
                "mbps",
            ],
        ),
        row(
            "traffic",
            Both,
            &[
                "traffic",
                "qps",
                "tps",
                "rps",
                "request*",
                "req",
                "reqs",
                "workload*",
                "load",
                "throughput",
                "calls",
                "invocations",
                "cnt",
            ],
        ),
    ]
}

/// A compiled class table: the configuration's rows, then the shipped ones.
#[derive(Clone, Debug)]
pub struct MetricClasses {
    rows: Vec<(Arc<str>, Direction, Vec<Pattern>)>,
    other: Arc<str>,
    traffic: Arc<str>,
}

static SHIPPED: LazyLock<MetricClasses> = LazyLock::new(|| {
    MetricClasses::new(&[]).unwrap_or_else(|_| unreachable!("the shipped table is valid"))
});

impl MetricClasses {
    /// The table with `extra` tried before the shipped rows; every bad
    /// pattern is reported, each naming its row.
    pub fn new(extra: &[ClassRule]) -> Result<Self, Vec<String>> {
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        for (i, r) in extra.iter().chain(shipped().iter()).enumerate() {
            if r.class.trim().is_empty() {
                problems.push(format!("metric_class[{i}].class: must not be empty"));
            }
            if r.patterns.is_empty() {
                problems.push(format!("metric_class[{i}].patterns: at least one"));
            }
            let mut ps = Vec::new();
            for p in &r.patterns {
                match Pattern::parse(p) {
                    Ok(p) => ps.push(p),
                    Err(e) => problems.push(format!("metric_class[{i}].patterns: {e}")),
                }
            }
            rows.push((Arc::from(r.class.trim()), r.direction, ps));
        }
        if problems.is_empty() {
            Ok(MetricClasses {
                rows,
                other: Arc::from("other"),
                traffic: Arc::from("traffic"),
            })
        } else {
            Err(problems)
        }
    }

    /// The shipped table alone.
    pub fn shipped() -> &'static MetricClasses {
        &SHIPPED
    }

    /// The class of `metric`; `other`, bad either way, when no row matches.
    ///
    /// A count of what a latency measures is traffic: a histogram's or
    /// summary's `_count` (`http_server_requests_seconds_count`, and its
    /// rate, `..._count_per_s`) counts the requests it timed, whatever
    /// unit each was timed in. Read as a latency, a sale's doubled traffic
    /// would be a latency doubled, and page.
    pub fn classify(&self, metric: &str) -> MetricClass {
        let words = words(metric);
        for (name, direction, patterns) in &self.rows {
            if words.iter().any(|w| patterns.iter().any(|p| p.matches(w))) {
                if &**name == "latency" && counts(&words) {
                    return MetricClass {
                        name: self.traffic.clone(),
                        direction: Direction::Both,
                    };
                }
                return MetricClass {
                    name: name.clone(),
                    direction: *direction,
                };
            }
        }
        MetricClass {
            name: self.other.clone(),
            direction: Direction::Both,
        }
    }
}

/// Whether a name's words say it counts (its last word `count`, or
/// `count` before the `per s` of its rate).
fn counts(words: &[String]) -> bool {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let w = w.strip_suffix(&["per", "s"]).unwrap_or(&w);
    w.last() == Some(&"count")
}

/// The ceiling a success rate's failures are its shortfall from, by its
/// level: 100 for a percentage, 1 for a ratio.
pub fn success_ceiling(level: f64) -> f64 {
    if level > 1.0 { 100.0 } else { 1.0 }
}

/// How many milliseconds one unit of a latency series is, from the unit
/// its name states (`_seconds`, `_ms`, `(s)`, `Us`...): the last unit word
/// wins (`payment_duration_seconds_p99`: seconds). `None` when the name
/// states none.
pub fn latency_unit_ms(metric: &str) -> Option<f64> {
    words(metric).iter().rev().find_map(|w| match w.as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => Some(1_000.0),
        "ms" | "msec" | "millis" | "millisecond" | "milliseconds" => Some(1.0),
        "us" | "usec" | "micros" | "microsecond" | "microseconds" => Some(1e-3),
        "ns" | "nanos" | "nanosecond" | "nanoseconds" => Some(1e-6),
        _ => None,
    })
}

/// The lower-case words of a name: cut at anything not a letter or digit,
/// and where a lower-case letter or digit is followed by a capital, or a
/// run of capitals by a capital and a lower-case letter.
pub fn words(name: &str) -> Vec<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_uppercase()
            && i > 0
            && !cur.is_empty()
            && (chars[i - 1].is_ascii_lowercase()
                || chars[i - 1].is_ascii_digit()
                || (chars[i - 1].is_ascii_uppercase()
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())))
        {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;

    #[test]
    fn a_latency_name_states_its_unit() {
        for (metric, ms) in [
            ("payment_duration_seconds_p99", Some(1_000.0)),
            ("probe_latency_ms", Some(1.0)),
            ("PodClientLatencyP90(s)", Some(1_000.0)),
            ("pod_client_latency_p90_s", Some(1_000.0)),
            ("rpc_latency_us", Some(1e-3)),
            ("LatencyP99", None),
            ("latency", None),
        ] {
            assert_eq!(latency_unit_ms(metric), ms, "{metric}");
        }
    }

    #[test]
    fn names_as_monitoring_writes_them_get_their_class_and_bad_direction() {
        let c = MetricClasses::shipped();
        for (metric, class, dir) in [
            ("PodSuccessRate(%)", "success", Down),
            ("pod_success_rate_pct", "success", Down),
            ("LatencyP99", "latency", Up),
            ("latency_p99_ms", "latency", Up),
            ("http_request_duration_seconds", "latency", Up),
            ("frontend_p95", "latency", Up),
            // Prometheus' own: 1 while a target answers its scrape.
            ("up", "success", Down),
            ("payment_errors_per_s", "errors", Up),
            ("error_rate", "errors", Up),
            ("error_ratio", "errors", Up),
            ("requests_failed_total", "errors", Up),
            ("HTTP5xx", "other", Both),
            ("http_5xx", "errors", Up),
            ("CpuUsage(m)", "cpu", Up),
            ("container_cpu_usage_seconds_total", "cpu", Up),
            ("load1", "cpu", Up),
            ("node_load15", "cpu", Up),
            ("loadavg", "cpu", Up),
            // Benchmark exports' request load and latency shorthands.
            ("load", "traffic", Both),
            ("lat_50", "latency", Up),
            ("lat50", "latency", Up),
            ("lat", "latency", Up),
            ("latest_version", "other", Both),
            ("MemoryUsage(Mi)", "memory", Up),
            ("mem_used", "memory", Up),
            ("gc_pause_ms", "memory", Up),
            ("disk_io_mbps", "disk", Up),
            ("thread_pool_use", "saturation", Up),
            ("conn_pool_use", "saturation", Up),
            ("NetworkReceiveBytes", "network", Both),
            ("net_mbps", "network", Both),
            ("tps", "traffic", Both),
            ("requests", "traffic", Both),
            ("cache_hit_ratio", "success", Down),
            ("syscall_read", "other", Both),
            ("TcpRetransRatio", "network_errors", Up),
            ("packet_loss_rate", "network_errors", Up),
            ("start_count", "other", Both),
            // A histogram's count (and its rate) counts the requests it
            // timed; its sum's mean over them is their latency.
            ("http_server_requests_seconds_count", "traffic", Both),
            ("pay_duration_seconds_count_per_s", "traffic", Both),
            ("RequestLatencyMsCount", "traffic", Both),
            ("http_server_requests_seconds_mean", "latency", Up),
            ("timeout_count", "errors", Up),
            ("go_gc_duration_seconds_count", "memory", Up),
            // Long exports' shorthands: a mean response time, an average
            // time, a success rate misspelt.
            ("mrt", "latency", Up),
            ("avg_time", "latency", Up),
            ("succee_rate", "success", Down),
            ("sr", "success", Down),
            ("rr", "success", Down),
            ("cnt", "traffic", Both),
            ("error_cnt", "errors", Up),
            ("usr_cpu", "cpu", Up),
            ("node_cpu_time_seconds", "cpu", Up),
        ] {
            let got = c.classify(metric);
            assert_eq!((&*got.name, got.direction), (class, dir), "{metric}");
        }
    }

    #[test]
    fn configured_rows_come_first_and_bad_patterns_are_all_reported() {
        let mine = vec![ClassRule {
            class: "queue_depth".into(),
            direction: Up,
            patterns: vec!["backlog".into()],
        }];
        let c = MetricClasses::new(&mine).unwrap();
        assert_eq!(&*c.classify("kafka_backlog").name, "queue_depth");
        let numbered = vec![ClassRule {
            class: "shard_lag".into(),
            direction: Up,
            patterns: vec!["shardNN".into()],
        }];
        let c = MetricClasses::new(&numbered).unwrap();
        assert_eq!(&*c.classify("shard12_size").name, "shard_lag");
        assert_eq!(&*c.classify("shard_size").name, "other");
        assert_eq!(&*c.classify("shardx").name, "other");
        let bad = vec![ClassRule {
            class: "".into(),
            direction: Up,
            patterns: vec!["a b".into(), "*".into()],
        }];
        let errs = MetricClasses::new(&bad).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn words_split_at_case_and_punctuation() {
        assert_eq!(words("PodSuccessRate(%)"), ["pod", "success", "rate"]);
        assert_eq!(words("HTTPServerErrors"), ["http", "server", "errors"]);
        assert_eq!(words("latency-p99.ms"), ["latency", "p99", "ms"]);
    }
}
