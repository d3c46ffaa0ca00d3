//! A small payment service: the real process the stack drill puts behind
//! HAProxy. It serves payments over HTTP, exports Prometheus metrics, and
//! takes faults on an admin endpoint.
//!
//! - `POST /pay`: `200 accepted` (a few ms of work), or `500` when a fault
//!   says so.
//! - `GET /metrics`: OpenMetrics text (`prometheus-client`):
//!   `payment_requests_total`, `payment_errors_total`,
//!   `payment_duration_seconds` (histogram), `config_version`,
//!   `process_cpu_seconds_total` (from `/proc/self/stat`).
//! - `GET /healthz`: `ok` while the process lives.
//! - `POST /admin/fault` with JSON `{"errors": 0..1, "latency_ms": n,
//!   "burn_ms": n}`: a share of payments fails, every payment waits `n` ms
//!   more, or burns `n` ms of CPU; `{}` clears them.
//! - `POST /admin/config` with `{"version": n, "good": bool}`: a
//!   configuration reload; a bad one fails every payment until a good one
//!   is loaded.
//! - `POST /admin/crash`: the process exits (status 70) after answering.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::{Deserialize, Serialize};

/// What is wrong with the service now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Share of payments that fail, 0 to 1.
    #[serde(default)]
    pub errors: f64,
    /// Extra wait per payment, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// CPU burnt per payment, ms.
    #[serde(default)]
    pub burn_ms: u64,
}

/// A configuration reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPush {
    /// Its version.
    pub version: i64,
    /// Whether it works.
    pub good: bool,
}

struct Metrics {
    registry: Registry,
    requests: Counter,
    errors: Counter,
    duration: Histogram,
    config_version: Gauge,
    cpu_ms: Counter,
}

struct Inner {
    name: String,
    fault: Mutex<Fault>,
    config: Mutex<ConfigPush>,
    /// Payments so far, to spread injected errors evenly.
    served: std::sync::atomic::AtomicU64,
    metrics: Metrics,
    last_cpu_ms: std::sync::atomic::AtomicU64,
}

/// A backend's state, shared by its handlers.
#[derive(Clone)]
pub struct Backend(Arc<Inner>);

impl Backend {
    /// A healthy backend named `name` on configuration version 1.
    pub fn new(name: &str) -> Self {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let errors = Counter::default();
        let duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        let config_version = Gauge::default();
        let cpu_ms = Counter::default();
        registry.register("payment_requests", "Payments asked for.", requests.clone());
        registry.register("payment_errors", "Payments that failed.", errors.clone());
        registry.register(
            "payment_duration_seconds",
            "Time to answer a payment.",
            duration.clone(),
        );
        registry.register(
            "config_version",
            "The configuration version loaded.",
            config_version.clone(),
        );
        registry.register(
            "process_cpu_milliseconds",
            "CPU time used by the process, ms.",
            cpu_ms.clone(),
        );
        config_version.set(1);
        Backend(Arc::new(Inner {
            name: name.to_string(),
            fault: Mutex::new(Fault::default()),
            config: Mutex::new(ConfigPush {
                version: 1,
                good: true,
            }),
            served: Default::default(),
            metrics: Metrics {
                registry,
                requests,
                errors,
                duration,
                config_version,
                cpu_ms,
            },
            last_cpu_ms: Default::default(),
        }))
    }

    /// Its routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/pay", post(pay).get(pay))
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/admin/fault", post(set_fault))
            .route("/admin/config", post(set_config))
            .route("/admin/crash", post(crash))
            .with_state(self.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn pay(State(b): State<Backend>) -> impl IntoResponse {
    let started = Instant::now();
    let inner = &b.0;
    inner.metrics.requests.inc();
    let fault = lock(&inner.fault).clone();
    let config_good = lock(&inner.config).good;
    // A little real work, as a payment does.
    tokio::time::sleep(Duration::from_millis(2)).await;
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.burn_ms > 0 {
        let burn = Duration::from_millis(fault.burn_ms);
        let _ = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < burn {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
        .await;
    }
    let n = inner
        .served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Errors spread evenly: payment n fails when the running share of
    // failures falls behind the fault's.
    let fails = !config_good
        || (fault.errors > 0.0
            && ((n + 1) as f64 * fault.errors).floor() > (n as f64 * fault.errors).floor());
    inner
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let served_by = [("x-served-by", inner.name.clone())];
    if fails {
        inner.metrics.errors.inc();
        let why = if config_good {
            "declined: internal error"
        } else {
            "declined: configuration invalid"
        };
        return (StatusCode::INTERNAL_SERVER_ERROR, served_by, why).into_response();
    }
    (StatusCode::OK, served_by, "accepted").into_response()
}

/// CPU time of this process, ms, from `/proc/self/stat` (0 where there is
/// no such file).
fn cpu_ms() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command (which may hold spaces): utime is the 14th
    // field of the line, stime the 15th, in clock ticks (100 a second on
    // Linux).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10
}

async fn metrics(State(b): State<Backend>) -> impl IntoResponse {
    let inner = &b.0;
    let now = cpu_ms();
    let last = inner
        .last_cpu_ms
        .swap(now, std::sync::atomic::Ordering::Relaxed);
    if now > last {
        inner.metrics.cpu_ms.inc_by(now - last);
    }
    let mut body = String::new();
    if encode(&mut body, &inner.metrics.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn set_fault(State(b): State<Backend>, Json(f): Json<Fault>) -> impl IntoResponse {
    if !(0.0..=1.0).contains(&f.errors) {
        return (StatusCode::BAD_REQUEST, "errors must be in [0, 1]").into_response();
    }
    tracing::info!(backend = %b.0.name, fault = ?f, "fault set");
    *lock(&b.0.fault) = f;
    (StatusCode::OK, "ok").into_response()
}

async fn set_config(State(b): State<Backend>, Json(c): Json<ConfigPush>) -> impl IntoResponse {
    tracing::info!(backend = %b.0.name, version = c.version, good = c.good, "configuration reloaded");
    b.0.metrics.config_version.set(c.version);
    *lock(&b.0.config) = c;
    "ok"
}

async fn crash(State(b): State<Backend>) -> impl IntoResponse {
    tracing::warn!(backend = %b.0.name, "crashing on request");
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::process::exit(70);
    });
    "crashing"
}

/// Serves `backend` on `addr` until `stop` ends; returns the bound address
/// once listening.
pub async fn serve(
    backend: Backend,
    addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = backend.router();
    let join = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok((bound, join))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn payments_faults_and_metrics() {
        let b = Backend::new("pay-1");
        let stop = tokio_util::sync::CancellationToken::new();
        let (addr, _j) = serve(b.clone(), "127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();
        let http = selfheal_agent::probe::client().unwrap();
        let pay = || async {
            http.post(format!("http://{addr}/pay"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(pay().await, 200);
        http.post(format!("http://{addr}/admin/fault"))
            .json(&serde_json::json!({"errors": 0.5}))
            .send()
            .await
            .unwrap();
        let mut codes = Vec::new();
        for _ in 0..10 {
            codes.push(pay().await);
        }
        assert_eq!(codes.iter().filter(|c| **c == 500).count(), 5, "{codes:?}");
        http.post(format!("http://{addr}/admin/fault"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        http.post(format!("http://{addr}/admin/config"))
            .json(&serde_json::json!({"version": 2, "good": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(pay().await, 500);
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for want in [
            "payment_requests_total 12",
            "payment_errors_total 6",
            "config_version 2",
            "payment_duration_seconds_bucket{le=\"0.005\"}",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let bad = http
            .post(format!("http://{addr}/admin/fault"))
            .json(&serde_json::json!({"errors": 2.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 400);
        stop.cancel();
    }
}
