//! The on-call API and the mobile page: sign in with a token, read
//! incidents and pending approvals, and decide with a signed link.
//!
//! Every request is authenticated: a bearer token, or the session cookie a
//! sign-in set (HttpOnly, SameSite=Strict). A write over the cookie must
//! also carry the session's CSRF token in `X-CSRF-Token` and, when the
//! browser sends an `Origin`, come from the page's own origin. A decision
//! needs the approver role and the signed link sent to that approver for
//! that approval; the engine then applies the policy. Every refusal is
//! answered with its reason, counted and written to the audit log.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::{
    act::approval::{Decide, DecisionStatus, Link, LinkError, LinkKey, OnCallConfig, Role, User},
    recent::Recent,
    stats::BrainStats,
    store::Store,
};

/// The page, served at `/m/<approval>`: one file, no framework.
pub const PAGE: &str = include_str!("page.html");

/// The continuity report's page, served at `/kpi`: one file, no framework.
pub const KPI_PAGE: &str = include_str!("kpi.html");

/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most live sessions.
const MAX_SESSIONS: usize = 10_000;
const COOKIE: &str = "selfheal_session";

struct Session {
    user: String,
    csrf: String,
    expires: Instant,
}

/// What the on-call handlers share.
#[derive(Clone)]
pub struct OnCallApi {
    /// The policy, users and rota.
    pub cfg: Arc<OnCallConfig>,
    /// The link key.
    pub key: LinkKey,
    /// To the engine.
    pub decisions: mpsc::Sender<Decide>,
    /// The store (read; refusals audited).
    pub store: Arc<Store>,
    /// Recent business indicators, for charts.
    pub recent: Arc<Recent>,
    /// The brain's counters.
    pub stats: Arc<BrainStats>,
    /// The brain's clock (its event-time watermark), when it has one: a
    /// person's report is filed on the same clock as the incidents.
    pub clock: Option<tokio::sync::watch::Receiver<i64>>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl OnCallApi {
    /// Handlers' state.
    pub fn new(
        cfg: Arc<OnCallConfig>,
        key: LinkKey,
        decisions: mpsc::Sender<Decide>,
        store: Arc<Store>,
        recent: Arc<Recent>,
        stats: Arc<BrainStats>,
    ) -> Self {
        OnCallApi {
            cfg,
            key,
            decisions,
            store,
            recent,
            stats,
            clock: None,
            sessions: Arc::default(),
        }
    }

    /// Files people's reports on the brain's clock.
    pub fn with_clock(mut self, clock: tokio::sync::watch::Receiver<i64>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Now, on the brain's clock (the wall clock before its first
    /// indicator), ms.
    fn now(&self) -> i64 {
        match self.clock.as_ref().map(|c| *c.borrow()) {
            Some(t) if t > 0 => t,
            _ => selfheal_bus::wall_ms(),
        }
    }

    fn secure(&self) -> bool {
        self.cfg.public_url.starts_with("https://")
    }

    /// `scheme://host[:port]` of the public URL.
    fn origin(&self) -> &str {
        let u = self.cfg.public_url.as_str();
        let after = u.find("://").map(|i| i + 3).unwrap_or(0);
        match u[after..].find('/') {
            Some(j) => &u[..after + j],
            None => u,
        }
    }

    /// Records a refusal: counted and audited.
    fn refused(&self, actor: &str, subject: &str, status: StatusCode, why: String) -> Response {
        BrainStats::bump(&self.stats.api_refused);
        if let Err(e) = self.store.audit(actor, "refused", subject, &why) {
            tracing::error!(error = %e, "audit write failed");
        }
        tracing::warn!(actor, subject, %why, "API request refused");
        (status, Json(json!({ "error": why }))).into_response()
    }

    /// `body` as a `T`, or the refusal (400, counted and audited) naming
    /// what was malformed.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        user: &User,
        subject: &str,
        what: &str,
        body: &[u8],
    ) -> Result<T, Box<Response>> {
        serde_json::from_slice(body).map_err(|e| {
            Box::new(self.refused(
                &user.name,
                subject,
                StatusCode::BAD_REQUEST,
                format!("malformed {what}: {e}"),
            ))
        })
    }

    /// The refusal (403, counted and audited) when `user` is a viewer,
    /// who cannot `what`; nothing for an approver or an admin.
    fn viewer_refused(&self, user: &User, subject: &str, what: &str) -> Option<Response> {
        (user.role < Role::Approver).then(|| {
            self.refused(
                &user.name,
                subject,
                StatusCode::FORBIDDEN,
                format!("{} is a viewer and cannot {what}", user.name),
            )
        })
    }

    /// Who is calling. `write` demands the CSRF token (and the page's
    /// origin) of a cookie session; a bearer token needs neither.
    pub(crate) fn caller(
        &self,
        headers: &HeaderMap,
        write: bool,
    ) -> Result<User, (StatusCode, String)> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            return self.cfg.user_by_token(token).cloned().ok_or((
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".into(),
            ));
        }
        let sid = cookie(headers, COOKIE).ok_or((
            StatusCode::UNAUTHORIZED,
            "sign in first (no session)".to_string(),
        ))?;
        let (user, csrf) = {
            let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            match s.get(&sid) {
                Some(x) if x.expires > Instant::now() => (x.user.clone(), x.csrf.clone()),
                _ => {
                    return Err((
                        StatusCode::UNAUTHORIZED,
                        "the session has expired; sign in again".into(),
                    ));
                }
            }
        };
        if write {
            let given = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let ok = given.len() == csrf.len()
                && given
                    .bytes()
                    .zip(csrf.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0;
            if !ok {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "cross-site request refused: the CSRF token is missing or wrong (session of {user})"
                    ),
                ));
            }
            if let Some(o) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
                && o != self.origin()
            {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!("cross-site request refused: origin {o} is not this page's"),
                ));
            }
        }
        self.cfg.user(&user).cloned().ok_or((
            StatusCode::UNAUTHORIZED,
            "the session's user no longer exists".into(),
        ))
    }
}

/// The value of cookie `name` in the request (axum-extra's cookie jar).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_string())
}

/// The session cookie: HttpOnly, SameSite=Strict, Secure behind HTTPS;
/// `None` as the value removes it.
fn session_cookie(sid: Option<String>, secure: bool) -> Cookie<'static> {
    let removed = sid.is_none();
    let mut c = Cookie::build((COOKIE, sid.unwrap_or_default()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .build();
    if removed {
        c.make_removal();
    } else {
        c.set_max_age(time::Duration::seconds(SESSION_TTL.as_secs() as i64));
    }
    c
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store read failed");
    err(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable; retry",
    )
}

/// The on-call routes.
pub fn routes(api: OnCallApi) -> Router {
    Router::new()
        .route("/m/{approval}", get(page))
        .route("/v1/login", post(login).layer(DefaultBodyLimit::max(4096)))
        .route("/v1/logout", post(logout))
        .route("/v1/session", get(session))
        .route(
            "/v1/incidents",
            get(incidents)
                .post(report)
                .layer(DefaultBodyLimit::max(8192)),
        )
        .route("/v1/incidents/{id}", get(incident))
        .route(
            "/v1/incidents/{id}/resolve",
            post(resolve).layer(DefaultBodyLimit::max(8192)),
        )
        .route("/v1/kpi", get(kpi))
        .route("/kpi", get(kpi_page))
        .route("/v1/pending", get(pending))
        .route("/v1/approvals/{id}", get(approval))
        .route(
            "/v1/approvals/{id}/decision",
            post(decision).layer(DefaultBodyLimit::max(8192)),
        )
        .with_state(api)
}

async fn page() -> Response {
    html(PAGE)
}

async fn kpi_page() -> Response {
    html(KPI_PAGE)
}

/// A page of ours, with the headers that keep it to itself.
fn html(page: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(page),
    )
        .into_response()
}

/// `POST /v1/login` with `{"token": ".."}`: a session cookie and the
/// session's CSRF token.
async fn login(State(api): State<OnCallApi>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        token: String,
    }
    let l: Login = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => return err(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")),
    };
    let Some(user) = api.cfg.user_by_token(l.token.trim()).cloned() else {
        return api.refused(
            "unknown",
            "login",
            StatusCode::UNAUTHORIZED,
            "sign-in refused: unknown token".into(),
        );
    };
    let (sid, csrf) = (random_hex(), random_hex());
    {
        let mut s = api.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        s.retain(|_, x| x.expires > now);
        if s.len() >= MAX_SESSIONS {
            return err(StatusCode::SERVICE_UNAVAILABLE, "too many sessions");
        }
        s.insert(
            sid.clone(),
            Session {
                user: user.name.clone(),
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
    }
    if let Err(e) = api
        .store
        .audit(&user.name, "signed_in", "session", "signed in with a token")
    {
        tracing::error!(error = %e, "audit write failed");
    }
    let jar = CookieJar::new().add(session_cookie(Some(sid), api.secure()));
    (
        jar,
        Json(json!({ "user": user.name, "role": user.role, "csrf": csrf })),
    )
        .into_response()
}

async fn logout(State(api): State<OnCallApi>, headers: HeaderMap) -> Response {
    if let Err((s, why)) = api.caller(&headers, true) {
        return err(s, &why);
    }
    if let Some(sid) = cookie(&headers, COOKIE) {
        api.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    }
    let jar = CookieJar::new().add(session_cookie(None, api.secure()));
    (jar, Json(json!({ "signed_out": true }))).into_response()
}

/// `GET /v1/session`: who the cookie belongs to, and its CSRF token.
async fn session(State(api): State<OnCallApi>, headers: HeaderMap) -> Response {
    let sid = cookie(&headers, COOKIE).unwrap_or_default();
    let s = api.sessions.lock().unwrap_or_else(|e| e.into_inner());
    match s.get(&sid) {
        Some(x) if x.expires > Instant::now() => {
            let role = api.cfg.user(&x.user).map(|u| u.role);
            Json(json!({ "user": x.user, "role": role, "csrf": x.csrf })).into_response()
        }
        _ => err(StatusCode::UNAUTHORIZED, "not signed in"),
    }
}

/// Incidents per page of `GET /v1/incidents`, by default and at most.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

/// `GET /v1/incidents?limit=N&before=CURSOR`.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// Runs a store query on the blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    api: &OnCallApi,
    f: impl FnOnce(&OnCallApi) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, crate::store::StoreError> {
    let api = api.clone();
    tokio::task::spawn_blocking(move || f(&api))
        .await
        .unwrap_or_else(|e| Err(crate::store::StoreError::Key(format!("store task: {e}"))))
}

/// `GET /v1/incidents`: a page of incidents, newest first, with the cursor
/// of the next page (`next`, absent on the last page).
async fn incidents(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err((s, why)) = api.caller(&headers, false) {
        return err(s, &why);
    }
    let limit = q.limit.unwrap_or(PAGE_DEFAULT);
    if limit == 0 || limit > PAGE_MAX {
        return err(
            StatusCode::BAD_REQUEST,
            &format!("limit must be 1 to {PAGE_MAX}"),
        );
    }
    let before = match q.before.as_deref().map(parse_cursor) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return err(
                StatusCode::BAD_REQUEST,
                "before must be a cursor from a previous page (opened_ts:id)",
            );
        }
    };
    let page = blocking(&api, move |api| {
        api.store.incidents_page(
            before.as_ref().map(|(ts, id)| (*ts, id.as_str())),
            limit + 1,
        )
    })
    .await;
    match page {
        Ok(mut rows) => {
            let next = (rows.len() > limit).then(|| {
                rows.truncate(limit);
                rows.last()
                    .map(|r| format!("{}:{}", r.opened_ts, r.id))
                    .unwrap_or_default()
            });
            Json(json!({ "incidents": rows, "next": next })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// A page cursor: `opened_ts:id`.
fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ts, id) = c.split_once(':')?;
    let ts = ts.parse().ok()?;
    (!id.is_empty() && id.len() <= 256).then(|| (ts, id.to_string()))
}

/// An incident with everything a person needs to judge it.
fn detail(api: &OnCallApi, id: &str) -> Result<Option<Value>, crate::store::StoreError> {
    let Some(inc) = api.store.incident(id)? else {
        return Ok(None);
    };
    let hypotheses = api.store.hypotheses(id)?;
    let timeline: Vec<Value> = api
        .store
        .timeline_of(id)?
        .into_iter()
        .map(|(ts, kind, detail)| json!({ "ts": ts, "kind": kind, "detail": detail }))
        .collect();
    let actions: Vec<Value> = api
        .store
        .actions_of(id)?
        .into_iter()
        .map(|a| {
            json!({ "id": a.id, "kind": a.kind, "target": a.target, "params": a.params,
                    "state": a.state, "reason": a.reason, "ts": a.ts, "playbook": a.playbook })
        })
        .collect();
    let approval = match api.store.approval(&format!("{id}-a"))? {
        Some(a) => {
            let votes = api.store.votes(&a.id)?;
            Some(json!({ "approval": a, "votes": votes }))
        }
        None => None,
    };
    let chart = match api.store.incident_series(id)? {
        Some(series) => {
            let points: Vec<[f64; 2]> = api
                .recent
                .points(&series, inc.onset_ts - 120_000)
                .into_iter()
                .map(|(t, v)| [t as f64, v])
                .collect();
            json!({ "series": series, "points": points, "onset": inc.onset_ts })
        }
        None => Value::Null,
    };
    let audit = api.store.audit_of(id, 50)?;
    Ok(Some(json!({
        "incident": inc,
        "hypotheses": hypotheses,
        "timeline": timeline,
        "actions": actions,
        "approval": approval,
        "chart": chart,
        "audit": audit.iter().map(|r| json!({"seq": r.seq, "ts_ms": r.ts_ms, "actor": r.actor, "event": r.event, "subject": r.subject, "detail": r.detail})).collect::<Vec<_>>(),
    })))
}

async fn incident(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err((s, why)) = api.caller(&headers, false) {
        return err(s, &why);
    }
    match blocking(&api, move |api| detail(api, &id)).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => err(StatusCode::NOT_FOUND, "no such incident"),
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/pending`: approvals waiting for a person.
async fn pending(State(api): State<OnCallApi>, headers: HeaderMap) -> Response {
    if let Err((s, why)) = api.caller(&headers, false) {
        return err(s, &why);
    }
    match blocking(&api, |api| api.store.approvals(Some("waiting"))).await {
        Ok(rows) => Json(json!({ "pending": rows })).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The link's fields as the page passes them on.
#[derive(Deserialize)]
struct LinkQuery {
    u: Option<String>,
    e: Option<i64>,
    n: Option<String>,
    s: Option<String>,
}

impl LinkQuery {
    fn link(self) -> Option<Link> {
        Some(Link {
            u: self.u?,
            e: self.e?,
            n: self.n?,
            s: self.s?,
        })
    }
}

/// The link as this caller may use it: `ok`, or why not.
fn link_status(api: &OnCallApi, approval: &str, user: &str, link: &Link) -> Result<(), String> {
    link.verify(&api.key, approval, user, selfheal_bus::wall_ms())
        .map_err(|e| match e {
            LinkError::OtherApprover => {
                format!("{e}: it is {}'s, and you are signed in as {user}", link.u)
            }
            e => e.to_string(),
        })?;
    match api.store.nonce_used(&link.n) {
        Ok(false) => Ok(()),
        Ok(true) => Err("this link has been used already".into()),
        Err(_) => Err("the store is unavailable; retry".into()),
    }
}

/// `GET /v1/approvals/<id>?u&e&n&s`: the approval, its incident, and
/// whether the caller may decide with this link.
async fn approval(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Response {
    let user = match api.caller(&headers, false) {
        Ok(u) => u,
        Err((s, why)) => return err(s, &why),
    };
    let Some(inc) = id.strip_suffix("-a") else {
        return err(StatusCode::NOT_FOUND, "no such approval");
    };
    let d = match detail(&api, inc) {
        Ok(Some(v)) if !v["approval"].is_null() => v,
        Ok(_) => return err(StatusCode::NOT_FOUND, "no such approval"),
        Err(e) => return unavailable(e),
    };
    let link = match q.link() {
        None => Err("open the link from your notification to decide".to_string()),
        Some(l) => link_status(&api, &id, &user.name, &l),
    };
    let may = if user.role < Role::Approver {
        Err(format!("{} is a viewer and cannot decide", user.name))
    } else {
        link
    };
    Json(json!({
        "user": user.name,
        "role": user.role,
        "can_decide": may.is_ok(),
        "why_not": may.err(),
        "detail": d,
    }))
    .into_response()
}

/// `POST /v1/approvals/<id>/decision` with
/// `{"decision": "approve" | "reject", "comment": "..", "link": {u, e, n, s}}`.
async fn decision(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let user = match api.caller(&headers, true) {
        Ok(u) => u,
        Err((s, why)) => return api.refused("unknown", &id, s, why),
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        decision: String,
        #[serde(default)]
        comment: String,
        link: Link,
    }
    let b: Body = match api.parse(&user, &id, "decision", &body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    let approve = match b.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return api.refused(
                &user.name,
                &id,
                StatusCode::BAD_REQUEST,
                format!("decision must be approve or reject, not {other:?}"),
            );
        }
    };
    if let Some(refused) = api.viewer_refused(&user, &id, "decide") {
        return refused;
    }
    if let Err(e) = b
        .link
        .verify(&api.key, &id, &user.name, selfheal_bus::wall_ms())
    {
        let why = match e {
            LinkError::OtherApprover => {
                format!("{e}: it is {}'s, and {} presented it", b.link.u, user.name)
            }
            e => e.to_string(),
        };
        return api.refused(&user.name, &id, StatusCode::FORBIDDEN, why);
    }
    let (tx, rx) = oneshot::channel();
    let d = Decide {
        approval: id.clone(),
        user: user.name.clone(),
        nonce: b.link.n.clone(),
        approve,
        comment: crate::mask::mask_owned(b.comment.chars().take(500).collect()),
        reply: tx,
    };
    if api.decisions.send(d).await.is_err() {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the brain is stopping");
    }
    let answer = match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(a)) => a,
        _ => {
            return err(
                StatusCode::SERVICE_UNAVAILABLE,
                "the brain did not answer; retry",
            );
        }
    };
    let status = match answer.status {
        DecisionStatus::Done => StatusCode::OK,
        DecisionStatus::Waiting => StatusCode::ACCEPTED,
        DecisionStatus::Forbidden => StatusCode::FORBIDDEN,
        DecisionStatus::NotFound => StatusCode::NOT_FOUND,
        DecisionStatus::Conflict => StatusCode::CONFLICT,
        DecisionStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let server_us = started.elapsed().as_micros() as u64;
    let body = if answer.status.refused() {
        json!({ "error": answer.message, "state": answer.state })
    } else {
        json!({ "state": answer.state, "message": answer.message,
                "dispatched": answer.dispatched, "server_us": server_us })
    };
    (status, Json(body)).into_response()
}

/// The longest service name and summary a person's report may carry.
const MAX_REPORT_TEXT: usize = 500;

/// `POST /v1/incidents` with `{"service": "..", "summary": "..",
/// "started_ts": ms}` (`started_ts` optional): a person reports an
/// incident. It joins the brain's incident of that service when there is
/// one (`found_by_monitoring: true`, 200), or opens one handed to people
/// (201). Any signed-in user may report.
async fn report(State(api): State<OnCallApi>, headers: HeaderMap, body: Bytes) -> Response {
    let user = match api.caller(&headers, true) {
        Ok(u) => u,
        Err((s, why)) => return api.refused("unknown", "incidents", s, why),
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        service: String,
        summary: String,
        #[serde(default)]
        started_ts: Option<i64>,
    }
    let bad = |why: String| api.refused(&user.name, "incidents", StatusCode::BAD_REQUEST, why);
    let b: Body = match api.parse(&user, "incidents", "report", &body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    let service = b.service.trim().to_string();
    if service.is_empty() || service.len() > MAX_REPORT_TEXT {
        return bad(format!("service must be 1 to {MAX_REPORT_TEXT} characters"));
    }
    if b.summary.trim().is_empty() || b.summary.len() > MAX_REPORT_TEXT {
        return bad(format!(
            "summary must be 1 to {MAX_REPORT_TEXT} characters: what do you see?"
        ));
    }
    let now = api.now();
    if let Some(t) = b.started_ts
        && !(now - 7 * 86_400_000..=now).contains(&t)
    {
        return bad(format!(
            "started_ts {t} is not within the last 7 days (now {now}, ms)"
        ));
    }
    let r = crate::store::continuity::Report {
        reporter: user.name.clone(),
        service,
        summary: b.summary.trim().to_string(),
        started_ts: b.started_ts,
        ts: now,
    };
    match blocking(&api, move |api| api.store.report_incident(&r)).await {
        Ok(f) => {
            let status = if f.found_by_monitoring {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(json!({ "incident": f.incident_id, "found_by_monitoring": f.found_by_monitoring })),
            )
                .into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `POST /v1/incidents/<id>/resolve` with `{"note": ".."}`: a person says
/// an incident handed to people is fixed (its time to recover ends now).
/// Approvers and admins only.
async fn resolve(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let user = match api.caller(&headers, true) {
        Ok(u) => u,
        Err((s, why)) => return api.refused("unknown", &id, s, why),
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        note: String,
    }
    let b: Body = match api.parse(&user, &id, "resolution", &body) {
        Ok(b) => b,
        Err(refused) => return *refused,
    };
    if let Some(refused) = api.viewer_refused(&user, &id, "resolve an incident") {
        return refused;
    }
    let now = api.now();
    let note: String = b.note.chars().take(MAX_REPORT_TEXT).collect();
    let who = user.name.clone();
    let rid = id.clone();
    match blocking(&api, move |api| {
        api.store.resolve_incident(&rid, &who, now, &note)
    })
    .await
    {
        Ok(Ok(())) => Json(json!({ "incident": id, "resolved_ts": now })).into_response(),
        Ok(Err(why)) => {
            let status = if why.starts_with("no incident") {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::CONFLICT
            };
            api.refused(&user.name, &id, status, why)
        }
        Err(e) => unavailable(e),
    }
}

/// `GET /v1/kpi?since=30d[&until=ms]`: the continuity report
/// ([`crate::kpi`]) over the period ending now (or at `until`).
#[derive(Deserialize)]
struct KpiQuery {
    since: Option<String>,
    until: Option<i64>,
}

async fn kpi(
    State(api): State<OnCallApi>,
    headers: HeaderMap,
    Query(q): Query<KpiQuery>,
) -> Response {
    if let Err((s, why)) = api.caller(&headers, false) {
        return err(s, &why);
    }
    let period = match crate::kpi::parse_period(q.since.as_deref().unwrap_or("30d")) {
        Ok(p) => p,
        Err(why) => return err(StatusCode::BAD_REQUEST, &format!("since: {why}")),
    };
    let until = q.until.unwrap_or_else(|| api.now().saturating_add(1));
    let since = until.saturating_sub(period);
    match blocking(&api, move |api| api.store.continuity_facts(since, until)).await {
        Ok(facts) => Json(crate::kpi::Continuity::of(&facts, since, until)).into_response(),
        Err(e) => unavailable(e),
    }
}
