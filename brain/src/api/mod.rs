//! The brain's HTTP API: `/healthz`, `/metrics` (Prometheus text format),
//! the change webhook `POST /v1/changes`, the kill switch, and (with
//! `[oncall]`) incidents, pending approvals, decisions and the mobile page
//! ([`oncall`]). Errors are JSON `{"error": reason}` and never carry
//! internals.

pub mod limit;
pub mod oncall;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use selfheal_bus::{Bus, Subjects, parse_change, wall_ms};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::stats::BrainStats;

/// Where the change webhook sends what it accepts.
#[derive(Clone)]
pub struct ChangeHook {
    /// The bus the brain listens on.
    pub bus: Bus,
    /// Its subjects.
    pub subjects: Subjects,
    /// SHA-256 of the accepted bearer token.
    pub token_sha256: [u8; 32],
    /// The intake's bounds: a notice is checked against them, on the
    /// intake's clock, before it is accepted.
    pub limits: selfheal_bus::Limits,
    /// The brain's clock (its event-time watermark; 0 before the first
    /// indicator), as the intake reads it.
    pub clock: tokio::sync::watch::Receiver<i64>,
}

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The brain's counters.
    pub stats: Arc<BrainStats>,
    /// The change webhook, when configured.
    pub changes: Option<ChangeHook>,
    /// The kill switch over the API, when configured.
    pub kill: Option<KillSwitch>,
    /// The on-call API and page, when configured.
    pub oncall: Option<oncall::OnCallApi>,
    /// Refusals per client address ([`limit`]).
    pub limit: Arc<limit::RefusalLimit>,
    /// Alertmanager's webhook, when configured.
    pub alerts: Option<AlertHook>,
    /// Prometheus' remote_write, when configured.
    pub remote_write: Option<RemoteWriteHook>,
    /// Where `/metrics` reads the continuity figures of the last 30 days
    /// ([`crate::kpi`]), when the process has the engine's store.
    pub kpi: Option<KpiSource>,
}

/// The store and clock the continuity figures come from.
#[derive(Clone)]
pub struct KpiSource {
    /// The engine's store.
    pub store: Arc<crate::store::Store>,
    /// The brain's clock (its event-time watermark; 0 before the first
    /// indicator: the wall clock then).
    pub clock: tokio::sync::watch::Receiver<i64>,
}

/// The window of the continuity figures on `/metrics`.
const KPI_WINDOW: (&str, i64) = ("30d", 30 * 86_400_000);

impl ApiState {
    /// Only `/healthz` and `/metrics` (a detection worker's API).
    pub fn stats_only(stats: Arc<BrainStats>, refusals_per_minute: u32) -> Self {
        ApiState {
            stats,
            changes: None,
            kill: None,
            oncall: None,
            limit: Arc::new(limit::RefusalLimit::per_minute(refusals_per_minute)),
            alerts: None,
            remote_write: None,
            kpi: None,
        }
    }
}

/// Prometheus' remote_write: its token, the intake's memory, and the bus
/// its indicators go out on.
#[derive(Clone)]
pub struct RemoteWriteHook {
    /// SHA-256 of the accepted bearer token.
    pub token_sha256: [u8; 32],
    /// The readings rates need.
    pub intake: Arc<std::sync::Mutex<crate::remote_write::Intake>>,
    /// The bus.
    pub bus: Bus,
    /// Its subjects.
    pub subjects: Subjects,
    /// The number of the last batch published.
    pub seq: Arc<std::sync::atomic::AtomicU64>,
}

/// Alertmanager's webhook: its token, and the way to the engine.
#[derive(Clone)]
pub struct AlertHook {
    /// SHA-256 of the accepted bearer token.
    pub token_sha256: [u8; 32],
    /// To the engine.
    pub tx: tokio::sync::mpsc::Sender<crate::alert::Alert>,
}

/// The kill switch as the API turns it: the guard's file, and the admin
/// token allowed to turn it.
#[derive(Clone)]
pub struct KillSwitch {
    /// `guard.kill_switch_file`.
    pub file: std::path::PathBuf,
    /// SHA-256 of the admin bearer token, when one is configured (admin
    /// users of `[oncall]` may turn it too).
    pub token_sha256: Option<[u8; 32]>,
}

/// Whether `headers` carry a bearer token whose SHA-256 is `want`
/// (compared in constant time).
fn authorized(headers: &HeaderMap, want: &[u8; 32]) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    !token.is_empty() && same(&given, want)
}

pub use crate::secret::{hash_token, parse_sha256, same};

/// The largest change notice accepted, bytes.
const MAX_CHANGE_BYTES: usize = 16 * 1024;

/// The HTTP application. Everything but `/healthz` and `/metrics` passes
/// the refusal limit ([`limit`]).
pub fn app(state: ApiState) -> Router {
    let oncall = state.oncall.clone();
    let guard = axum::middleware::from_fn_with_state(state.clone(), limit::guard);
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let r = Router::new()
        .route(
            "/v1/changes",
            post(change).layer(DefaultBodyLimit::max(MAX_CHANGE_BYTES)),
        )
        .route(
            "/v1/alerts",
            post(alerts).layer(DefaultBodyLimit::max(MAX_ALERT_BYTES)),
        )
        .route(
            "/v1/write",
            post(remote_write).layer(DefaultBodyLimit::max(crate::remote_write::MAX_BODY)),
        )
        .route(
            "/v1/kill-switch",
            get(kill_status)
                .post(kill_turn)
                .layer(DefaultBodyLimit::max(4096)),
        )
        .with_state(state);
    match oncall {
        Some(o) => r.merge(oncall::routes(o)),
        None => r,
    }
    .layer(guard)
    .merge(open)
    .layer(axum::middleware::from_fn(json_errors))
}

/// Every refusal answers in the documented form, `{"error": "..."}`, even
/// those axum or a layer writes as plain text (413 over the body limit,
/// 408 past the deadline, a malformed header).
async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let res = next.run(req).await;
    let status = res.status();
    let textual = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !textual {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let text = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({ "error": text }).to_string();
    axum::response::Response::from_parts(parts, axum::body::Body::from(body))
}

type Answer = (StatusCode, Json<serde_json::Value>);

fn kill_auth<'a>(
    s: &'a ApiState,
    headers: &HeaderMap,
    write: bool,
) -> Result<&'a KillSwitch, Answer> {
    let Some(k) = &s.kill else {
        return Err(refuse(
            None,
            StatusCode::NOT_FOUND,
            "the API kill switch is not configured".into(),
        ));
    };
    if k.token_sha256.is_some_and(|t| authorized(headers, &t)) {
        return Ok(k);
    }
    if let Some(o) = &s.oncall {
        match o.caller(headers, write) {
            Ok(u) if u.role == crate::act::approval::Role::Admin => return Ok(k),
            Ok(u) => {
                return Err(refuse(
                    Some(&s.stats.api_refused),
                    StatusCode::FORBIDDEN,
                    format!("{} is not an admin", u.name),
                ));
            }
            Err((StatusCode::FORBIDDEN, why)) => {
                return Err(refuse(
                    Some(&s.stats.api_refused),
                    StatusCode::FORBIDDEN,
                    why,
                ));
            }
            Err(_) => {}
        }
    }
    Err(refuse(
        None,
        StatusCode::UNAUTHORIZED,
        "a valid admin bearer token is required".into(),
    ))
}

fn kill_state(k: &KillSwitch) -> serde_json::Value {
    match std::fs::read_to_string(&k.file) {
        Ok(why) => serde_json::json!({ "engaged": true, "reason": why.trim() }),
        Err(_) => serde_json::json!({ "engaged": false }),
    }
}

/// `GET /v1/kill-switch`: whether it is engaged, and why.
async fn kill_status(State(s): State<ApiState>, headers: HeaderMap) -> Answer {
    match kill_auth(&s, &headers, false) {
        Ok(k) => (StatusCode::OK, Json(kill_state(k))),
        Err(e) => e,
    }
}

/// `POST /v1/kill-switch` with `{"engaged": true | false, "reason": ".."}`:
/// engages (while engaged, no action leaves the brain) or releases it.
async fn kill_turn(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Answer {
    let k = match kill_auth(&s, &headers, true) {
        Ok(k) => k,
        Err(e) => return e,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Turn {
        engaged: bool,
        #[serde(default)]
        reason: String,
    }
    let t: Turn = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                None,
                StatusCode::BAD_REQUEST,
                format!("malformed request: {e}"),
            );
        }
    };
    let r = if t.engaged {
        let reason = if t.reason.trim().is_empty() {
            "engaged over the API".to_string()
        } else {
            t.reason.trim().chars().take(500).collect()
        };
        std::fs::write(&k.file, format!("{reason} at {} ms\n", wall_ms()))
    } else {
        match std::fs::remove_file(&k.file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    if let Err(e) = r {
        tracing::error!(error = %e, file = %k.file.display(), "kill switch: cannot turn the file");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(
                serde_json::json!({ "error": "the kill switch could not be turned; use the CLI" }),
            ),
        );
    }
    tracing::warn!(engaged = t.engaged, "kill switch turned over the API");
    (StatusCode::OK, Json(kill_state(k)))
}

fn refuse(
    counter: Option<&std::sync::atomic::AtomicU64>,
    status: StatusCode,
    message: String,
) -> (StatusCode, Json<serde_json::Value>) {
    if let Some(c) = counter {
        BrainStats::bump(c);
    }
    (status, Json(serde_json::json!({ "error": message })))
}

/// The gate of a webhook: configured (else 404), and called with its
/// bearer token (else 401, counted in `unauthorized`).
fn webhook_gate<'a, H>(
    hook: Option<&'a H>,
    token_sha256: impl Fn(&H) -> &[u8; 32],
    what: &str,
    headers: &HeaderMap,
    unauthorized: &std::sync::atomic::AtomicU64,
) -> Result<&'a H, (StatusCode, Json<serde_json::Value>)> {
    let Some(hook) = hook else {
        return Err(refuse(
            None,
            StatusCode::NOT_FOUND,
            format!("the {what} webhook is not configured"),
        ));
    };
    if !authorized(headers, token_sha256(hook)) {
        return Err(refuse(
            Some(unauthorized),
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        ));
    }
    Ok(hook)
}

/// `POST /v1/write`: Prometheus remote_write 1.0 (bearer token, snappy
/// protobuf). The series become indicators published on the bus as an
/// agent's; a refused request gets a 400 with the reason, counted.
async fn remote_write(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let hook = match webhook_gate(
        s.remote_write.as_ref(),
        |h| &h.token_sha256,
        "remote_write",
        &headers,
        &s.stats.remote_write_refused,
    ) {
        Ok(h) => h,
        Err(r) => return r,
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        return refuse(
            Some(&s.stats.remote_write_refused),
            StatusCode::BAD_REQUEST,
            format!("Content-Encoding {enc:?} is not snappy"),
        );
    }
    let intake = hook.intake.clone();
    let converted = crate::blocking::run(move || {
        let req = crate::remote_write::decode(&body)?;
        let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
        let mut intake = intake.lock().unwrap_or_else(|p| p.into_inner());
        Ok::<_, String>((samples, intake.convert(req)))
    });
    let (samples, converted) = match converted {
        Ok(c) => c,
        Err(why) => {
            return refuse(
                Some(&s.stats.remote_write_refused),
                StatusCode::BAD_REQUEST,
                why,
            );
        }
    };
    s.stats
        .remote_write_samples
        .fetch_add(samples as u64, std::sync::atomic::Ordering::Relaxed);
    s.stats
        .remote_write_dropped
        .fetch_add(converted.dropped, std::sync::atomic::Ordering::Relaxed);
    let batches = converted.batches.len();
    for mut b in converted.batches {
        b.source = "remote_write".into();
        b.seq = hook.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let subject = hook.subjects.indicators(b.layer, &b.idc, &b.service);
        if let Err(e) = selfheal_bus::publish_msg(&hook.bus, &subject, &b).await {
            // Prometheus retries a 5xx: nothing is lost while the bus is away.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": format!("bus: {e}; retry") })),
            );
        }
    }
    (
        StatusCode::OK,
        Json(
            serde_json::json!({ "samples": samples, "batches": batches, "dropped": converted.dropped }),
        ),
    )
}

/// Largest Alertmanager notification accepted, bytes.
const MAX_ALERT_BYTES: usize = 256 * 1024;

/// `POST /v1/alerts`: Alertmanager's webhook (bearer token). Each firing
/// alert goes to the engine as a symptom, each resolved one as its end.
async fn alerts(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let hook = match webhook_gate(
        s.alerts.as_ref(),
        |h| &h.token_sha256,
        "alert",
        &headers,
        &s.stats.alerts_refused,
    ) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let alerts = match crate::alert::Alert::parse(&body) {
        Ok(a) => a,
        Err(why) => return refuse(Some(&s.stats.alerts_refused), StatusCode::BAD_REQUEST, why),
    };
    let n = alerts.len();
    for a in alerts {
        if hook.tx.send(a).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": "the brain is stopping; retry" })),
            );
        }
        BrainStats::bump(&s.stats.alerts_received);
    }
    (StatusCode::OK, Json(serde_json::json!({ "alerts": n })))
}

/// `POST /v1/changes`: a change notice from a CI/CD system (the JSON of
/// [`parse_change`]; `ts` defaults to now), authenticated with a bearer
/// token. Accepted notices go onto the bus like an agent's.
async fn change(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let hook = match webhook_gate(
        s.changes.as_ref(),
        |h| &h.token_sha256,
        "change",
        &headers,
        &s.stats.webhook_unauthorized,
    ) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refuse(
            Some(&s.stats.webhook_malformed),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a change notice is JSON: send Content-Type: application/json".into(),
        );
    }
    let now = crate::ingest::clock_now(*hook.clock.borrow());
    let c = match parse_change(&body, Some(now)) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                Some(&s.stats.webhook_malformed),
                StatusCode::BAD_REQUEST,
                format!("malformed change: {e}"),
            );
        }
    };
    // Exactly what the intake will check, on its clock: a notice answered
    // 202 is one the brain files.
    if let Err(e) = selfheal_bus::check(&c, &hook.limits, now) {
        let reason = match &e {
            selfheal_bus::DecodeError::Invalid(selfheal_bus::message::Invalid::Skew) => format!(
                "change refused: timestamp_skew: ts {} is more than {} s from the brain's clock {}",
                c.ts,
                hook.limits.max_skew_ms / 1000,
                now
            ),
            e => format!("change refused: {}: {e}", e.kind().reason()),
        };
        return refuse(
            Some(&s.stats.webhook_malformed),
            StatusCode::BAD_REQUEST,
            reason,
        );
    }
    if let Err(e) =
        selfheal_bus::publish_msg(&hook.bus, &hook.subjects.change(&c.service), &c).await
    {
        tracing::error!(error = %e, "change webhook: the bus refused the notice");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the bus is unavailable; retry" })),
        );
    }
    BrainStats::bump(&s.stats.webhook_accepted);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": c.id, "service": c.service, "ts": c.ts })),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let mut text = s.stats.render_prometheus();
    if let Some(k) = s.kpi.clone() {
        let now = match *k.clock.borrow() {
            t if t > 0 => t,
            _ => wall_ms(),
        };
        let (label, span) = KPI_WINDOW;
        let facts = tokio::task::spawn_blocking(move || {
            k.store.continuity_facts(now - span, now.saturating_add(1))
        })
        .await;
        match facts {
            Ok(Ok(f)) => {
                let figures = crate::kpi::Continuity::of(&f, now - span, now.saturating_add(1))
                    .prometheus(label);
                // OpenMetrics ends with `# EOF`: the figures go before it.
                let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_string();
                text = format!("{body}{figures}# EOF\n");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "continuity figures not read for /metrics"),
            Err(e) => tracing::warn!(error = %e, "continuity figures not read for /metrics"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

pub use crate::config::HttpLimits;

/// Open connections, in all and per address.
struct Slots {
    total: usize,
    per_peer: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// A connection's hold on its slots, given back when it ends.
struct Slot {
    slots: Arc<std::sync::Mutex<Slots>>,
    peer: std::net::IpAddr,
}

impl Slot {
    fn take(
        slots: &Arc<std::sync::Mutex<Slots>>,
        peer: std::net::IpAddr,
        limits: &HttpLimits,
    ) -> Option<Slot> {
        let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
        let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
        if s.total >= limits.max_connections || mine >= limits.max_connections_per_peer {
            return None;
        }
        s.total += 1;
        *s.per_peer.entry(peer).or_default() += 1;
        Some(Slot {
            slots: slots.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Serves [`app`] on `addr` until `stop` fires. Returns the bound address
/// (useful with port 0) once listening.
///
/// Each connection is served by hyper with a header read timeout (which
/// also closes a kept-alive connection sitting idle); each request, its
/// body included, has a deadline and gets a 408 after it; at most
/// [`HttpLimits::max_connections`] are open at once and
/// [`HttpLimits::max_connections_per_peer`] from one address, and one over
/// either cap is closed at once and counted, so one client cannot starve
/// the others (the health check, the phone).
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, state, stop, HttpLimits::default()).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    addr: SocketAddr,
    state: ApiState,
    stop: CancellationToken,
    limits: HttpLimits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let stats = state.stats.clone();
    let request_timeout = std::time::Duration::from_millis(limits.request_timeout_ms);
    let router = app(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ));
    let slots = Arc::new(std::sync::Mutex::new(Slots {
        total: 0,
        per_peer: Default::default(),
    }));
    let join = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait, go on.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = Slot::take(&slots, peer.ip(), &limits) else {
                BrainStats::bump(&stats.http_connections_refused);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(
                router
                    .clone()
                    .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_millis(limits.header_timeout_ms))
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                // The header timeout also closes a kept-alive connection
                // that sends nothing; past its age a connection is asked to
                // close after its current request.
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn).await;
                    }
                    _ = tokio::time::sleep(std::time::Duration::from_secs(limits.max_age_s)) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(request_timeout, conn).await;
                    }
                }
                drop(slot);
            });
        }
    });
    Ok((local, join))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_and_health() {
        let stats = Arc::new(BrainStats::default());
        stats.reject("malformed");
        let state = ApiState {
            stats,
            changes: None,
            kill: None,
            oncall: None,
            limit: Arc::new(limit::RefusalLimit::per_minute(20)),
            alerts: None,
            remote_write: None,
            kpi: None,
        };
        let res = app(state.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("selfheal_brain_rejected_total{reason=\"malformed\"} 1"),
            "{text}"
        );
        let res = app(state.clone())
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 404);

        // One request on a real socket.
        let stop = CancellationToken::new();
        let (addr, join) = serve("127.0.0.1:0".parse().unwrap(), state, stop.clone())
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.read_to_string(&mut out),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("ok\n"),
            "{out}"
        );
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), join)
            .await
            .unwrap()
            .unwrap();
    }
}

#[cfg(test)]
mod webhook_tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use selfheal_bus::{ChangeEvent, ChangeKind, LocalTransport};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_change_webhook_takes_authenticated_well_formed_notices_only() {
        let bus: Bus = Arc::new(LocalTransport::default());
        let subjects = Subjects::default();
        let mut sub = bus.subscribe(&subjects.all_changes()).await.unwrap();
        let stats = Arc::new(BrainStats::default());
        // The brain's clock stands where its indicators have brought it.
        let (_clock_tx, clock) = tokio::sync::watch::channel(1_700_000_100_000i64);
        let state = ApiState {
            stats: stats.clone(),
            changes: Some(ChangeHook {
                bus: bus.clone(),
                subjects,
                token_sha256: parse_sha256(&hash_token("ci-s3cret")).unwrap(),
                limits: selfheal_bus::Limits::default(),
                clock,
            }),
            kill: None,
            oncall: None,
            limit: Arc::new(limit::RefusalLimit::per_minute(20)),
            alerts: None,
            remote_write: None,
            kpi: None,
        };
        let post = |auth: Option<&str>, body: &str| {
            let mut r = Request::post("/v1/changes").header("content-type", "application/json");
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let req = r.body(Body::from(body.to_string())).unwrap();
            let app = app(state.clone());
            async move {
                let res = app.oneshot(req).await.unwrap();
                let status = res.status().as_u16();
                let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let good = r#"{"ts": 1700000000, "id": "chg-1", "service": "payment-engine", "kind": "deploy", "author": "dev-alice", "description": "v2.91"}"#;
        for (auth, body, status, says) in [
            (None, good, 401, "bearer token"),
            (Some("Bearer wrong"), good, 401, "bearer token"),
            (Some("ci-s3cret"), good, 401, "bearer token"),
            (
                Some("Bearer ci-s3cret"),
                "{not json",
                400,
                "malformed change",
            ),
            (
                Some("Bearer ci-s3cret"),
                r#"{"id": "c", "service": "a", "kind": "rewrite"}"#,
                400,
                "unknown variant",
            ),
            (
                Some("Bearer ci-s3cret"),
                r#"{"id": "c", "service": " ", "kind": "deploy"}"#,
                400,
                "service must not be empty",
            ),
            (
                Some("Bearer ci-s3cret"),
                r#"{"id": "c", "service": "a", "kind": "deploy", "extra": 1}"#,
                400,
                "unknown field",
            ),
            // What the intake would refuse is refused here, with its reason.
            (
                Some("Bearer ci-s3cret"),
                r#"{"ts": 1000, "id": "c", "service": "a", "kind": "deploy"}"#,
                400,
                "timestamp_skew",
            ),
            (
                Some("Bearer ci-s3cret"),
                r#"{"ts": 99999999999999, "id": "c", "service": "a", "kind": "deploy"}"#,
                400,
                "timestamp_skew",
            ),
            (
                Some("Bearer ci-s3cret"),
                r#"{"id": "c", "service": "a", "kind": "deploy", "author": "a\u0000b"}"#,
                400,
                "control characters",
            ),
        ] {
            let (got, text) = post(auth, body).await;
            assert_eq!(got, status, "{body}: {text}");
            assert!(text.contains(says), "{text}");
        }
        let (got, text) = post(Some("Bearer ci-s3cret"), good).await;
        assert_eq!(got, 202, "{text}");
        let m = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        let c: ChangeEvent = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            (c.id.as_str(), c.kind, c.ts),
            ("chg-1", ChangeKind::Deploy, 1_700_000_000_000)
        );
        // Without ts, now; oversized bodies are refused.
        let (got, _) = post(
            Some("Bearer ci-s3cret"),
            r#"{"id": "chg-2", "service": "cashier", "kind": "config"}"#,
        )
        .await;
        assert_eq!(got, 202);
        let big = format!(
            r#"{{"id": "c", "service": "a", "kind": "deploy", "description": "{}"}}"#,
            "x".repeat(20_000)
        );
        let (got, text) = post(Some("Bearer ci-s3cret"), &big).await;
        assert_eq!(got, 413);
        let e: serde_json::Value = serde_json::from_str(&text).expect("a JSON refusal");
        assert!(e["error"].as_str().is_some_and(|t| !t.is_empty()), "{text}");
        // JSON under another media type is refused, in JSON.
        let req = Request::post("/v1/changes")
            .header("content-type", "application/xml")
            .header("authorization", "Bearer ci-s3cret")
            .body(Body::from(good.to_string()))
            .unwrap();
        let res = app(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status().as_u16(), 415);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(e["error"].as_str().unwrap().contains("application/json"));
        // A service named as its monitoring names it is mapped, as replay
        // maps it.
        let (got, text) = post(
            Some("Bearer ci-s3cret"),
            r#"{"id": "chg-3", "service": "cart.svc", "kind": "deploy"}"#,
        )
        .await;
        assert_eq!(got, 202, "{text}");
        assert!(text.contains(r#""service":"cart_svc""#), "{text}");
        // Without an author (optional), with a dotted id: accepted, and
        // what goes on the bus passes the intake's own decoding.
        let (got, text) = post(
            Some("Bearer ci-s3cret"),
            r#"{"id": "deploy.2026-12-01.7", "service": "ledger", "kind": "deploy"}"#,
        )
        .await;
        assert_eq!(got, 202, "{text}");
        let mut seen = 0;
        while let Ok(Some(m)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await
        {
            selfheal_bus::decode::<ChangeEvent>(
                &m.payload,
                &selfheal_bus::Limits::default(),
                1_700_000_100_000,
            )
            .unwrap_or_else(|e| panic!("the intake refuses an accepted notice: {e}"));
            seen += 1;
        }
        assert_eq!(seen, 3, "chg-2, chg-3 and the dotted one");
        let text = stats.render_prometheus();
        assert!(
            text.contains("selfheal_brain_webhook_unauthorized_total 3"),
            "{text}"
        );
        assert!(
            text.contains("selfheal_brain_webhook_malformed_total 8"),
            "{text}"
        );
        assert!(
            text.contains("selfheal_brain_webhook_accepted_total 4"),
            "{text}"
        );
    }
}

#[cfg(test)]
mod kill_switch_tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_kill_switch_turns_over_the_api_with_the_admin_token_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("KILL");
        let state = ApiState {
            stats: Arc::new(BrainStats::default()),
            changes: None,
            kill: Some(KillSwitch {
                file: file.clone(),
                token_sha256: parse_sha256(&hash_token("admin-token-0123456789")),
            }),
            oncall: None,
            limit: Arc::new(limit::RefusalLimit::per_minute(20)),
            alerts: None,
            remote_write: None,
            kpi: None,
        };
        let call = |method: &str, auth: Option<&str>, body: &str| {
            let mut r = Request::builder().method(method).uri("/v1/kill-switch");
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let req = r.body(Body::from(body.to_string())).unwrap();
            let app = app(state.clone());
            async move {
                let res = app.oneshot(req).await.unwrap();
                let status = res.status().as_u16();
                let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let admin = Some("Bearer admin-token-0123456789");
        let on = r#"{"engaged": true, "reason": "bank-a incident review"}"#;
        assert_eq!(call("POST", None, on).await.0, 401);
        assert_eq!(call("POST", Some("Bearer nope"), on).await.0, 401);
        assert_eq!(call("GET", None, "").await.0, 401);
        assert!(!file.exists(), "refused requests change nothing");
        let (status, text) = call("POST", admin, r#"{"engaged": "yes"}"#).await;
        assert_eq!(status, 400, "{text}");
        let (status, text) = call("POST", admin, on).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"engaged\":true") && text.contains("incident review"));
        // The guards read the same file.
        let guards = crate::act::Guards::new(crate::act::GuardConfig {
            kill_switch_file: Some(file.clone()),
            ..Default::default()
        });
        let a = crate::playbook::PlannedAction {
            kind: selfheal_bus::ActionKind::Rollback,
            service: "s".into(),
            target: "s".into(),
            params: Default::default(),
        };
        assert!(
            matches!(guards.check("i", &a, 0), crate::act::Verdict::Refuse(w) if w.contains("kill switch"))
        );
        let (status, text) = call("GET", admin, "").await;
        assert_eq!((status, text.contains("\"engaged\":true")), (200, true));
        let (status, _) = call("POST", admin, r#"{"engaged": false}"#).await;
        assert_eq!(status, 200);
        assert!(!file.exists());
        assert_eq!(guards.check("i", &a, 0), crate::act::Verdict::Allow);
    }
}
