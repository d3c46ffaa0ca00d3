//! Actions sent to HTTP endpoints (a deploy system's rollback API, a
//! gateway's admin API...) instead of an edge actuator on the bus.
//!
//! Which actions go where is configuration (`[[http_actuator]]`): a route
//! names the action kinds (and optionally the services) it takes and one
//! URL, which must lie under a base URL of `http_allow`. The request is a
//! `POST` of the same JSON [`ActionRequest`] the bus carries, with the
//! idempotency key also in the `Idempotency-Key` header and, when the route
//! names one, a bearer token read from an environment variable (never from
//! the file). The endpoint answers:
//!
//! | answer | means |
//! | --- | --- |
//! | 2xx with an [`ActionReply`] body | that reply's status |
//! | 2xx, any other body | applied |
//! | 409 | already applied under this key (duplicate) |
//! | other 4xx, a redirect | rejected (redirects are never followed) |
//! | 5xx, timeout, refused connection | retried with backoff under the same key, then failed |

use std::time::Duration;

use selfheal_bus::{
    ActError, ActErrorKind, ActionKind, ActionReply, ActionRequest, ActionStatus, WIRE_VERSION,
};
use serde::{Deserialize, Serialize};

/// One HTTP route for actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    /// A name, for logs and errors.
    pub name: String,
    /// Where to `POST` the action.
    pub url: String,
    /// Action kinds this route takes (`rollback`, `revert_config`...).
    pub kinds: Vec<ActionKind>,
    /// Services whose actions it takes; every service when empty.
    #[serde(default)]
    pub services: Vec<String>,
    /// Environment variable holding a bearer token, if the endpoint wants one.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Per-attempt timeout, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts after the first, for 5xx answers and transport errors.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between attempts, ms (doubles each time).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

const fn default_timeout_ms() -> u64 {
    3000
}
const fn default_retries() -> u32 {
    3
}
const fn default_backoff_ms() -> u64 {
    200
}

impl HttpRoute {
    /// Whether this route takes `req`.
    pub fn takes(&self, kind: ActionKind, service: &str) -> bool {
        self.kinds.contains(&kind)
            && (self.services.is_empty() || self.services.iter().any(|s| s == service))
    }
}

/// Every problem with `routes` against the allow-list `allow`, each naming
/// its route.
pub fn validate(routes: &[HttpRoute], allow: &[String]) -> Vec<String> {
    let mut p = Vec::new();
    for a in allow {
        if !(a.starts_with("http://") || a.starts_with("https://")) || !a.ends_with('/') {
            p.push(format!(
                "http_allow: {a:?} must be an http:// or https:// base URL ending in /"
            ));
        }
    }
    for r in routes {
        let at = format!("http_actuator {:?}", r.name);
        match reqwest::Url::parse(&r.url) {
            Err(e) => p.push(format!("{at}: url {:?} is not a URL: {e}", r.url)),
            Ok(u) => {
                if !matches!(u.scheme(), "http" | "https") {
                    p.push(format!("{at}: url {:?} is not http or https", r.url));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    p.push(format!(
                        "{at}: credentials do not belong in the url; use token_env"
                    ));
                }
                // Compare the normalised form, so `..` cannot climb out.
                let norm = u.as_str();
                if !allow.iter().any(|a| norm.starts_with(a.as_str())) {
                    p.push(format!(
                        "{at}: url {norm} is under no base URL of http_allow ({})",
                        if allow.is_empty() {
                            "empty".to_string()
                        } else {
                            allow.join(", ")
                        }
                    ));
                }
            }
        }
        if r.kinds.is_empty() {
            p.push(format!("{at}: kinds is empty"));
        }
        if r.timeout_ms == 0 {
            p.push(format!("{at}: timeout_ms must be at least 1"));
        }
        if r.retries > 10 {
            p.push(format!("{at}: retries must be at most 10"));
        }
        if let Some(v) = &r.token_env
            && v.is_empty()
        {
            p.push(format!("{at}: token_env is empty"));
        }
    }
    p
}

/// The HTTP client actions go through: no redirects, rustls.
pub fn client() -> Result<reqwest::Client, String> {
    // reqwest is built without a TLS provider of its own; ring is the one
    // async-nats already brings. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("selfheal/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Sends `req` along `route` and returns the endpoint's answer as an
/// [`ActionReply`]; `Err` only when every attempt failed in transport or
/// with a 5xx.
pub async fn send(
    client: &reqwest::Client,
    route: &HttpRoute,
    req: &ActionRequest,
) -> Result<ActionReply, ActError> {
    let token = match &route.token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            ActError::new(
                ActErrorKind::Unreachable,
                format!(
                    "{}: the token variable {var} is not set; nothing was sent",
                    route.name
                ),
            )
        })?),
        None => None,
    };
    let answer = |s: ActionStatus, message: String| ActionReply {
        v: WIRE_VERSION,
        id: req.id.clone(),
        status: s,
        message,
        ts: req.ts,
    };
    let r = super::retry(
        Duration::from_millis(route.backoff_ms),
        route.retries,
        |_| {},
        |attempt| {
            let rb = client
                .post(&route.url)
                .timeout(Duration::from_millis(route.timeout_ms))
                .header("Idempotency-Key", &req.id)
                .json(req);
            let rb = match &token {
                Some(t) => rb.bearer_auth(t),
                None => rb,
            };
            let answer = &answer;
            async move {
                let resp = match rb.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            ActErrorKind::TimedOut
                        } else if e.is_connect() {
                            ActErrorKind::Unreachable
                        } else {
                            ActErrorKind::Failed
                        };
                        let last = format!("{}: attempt {}: {}", route.name, attempt + 1, plain(&e));
                        tracing::warn!(route = %route.name, action = %req.id, error = %last, "HTTP action attempt failed");
                        return super::Attempt::Again((kind, last));
                    }
                };
                let status = resp.status();
                let body = resp.bytes().await.unwrap_or_default();
                let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                if status.is_success() {
                    if let Ok(r) = serde_json::from_slice::<ActionReply>(&body)
                        && r.id == req.id
                    {
                        return super::Attempt::Done(r);
                    }
                    return super::Attempt::Done(answer(
                        ActionStatus::Applied,
                        format!("{}: HTTP {}", route.name, status.as_u16()),
                    ));
                }
                if status == reqwest::StatusCode::CONFLICT {
                    return super::Attempt::Done(answer(
                        ActionStatus::Duplicate,
                        format!("{}: HTTP 409: {text}", route.name),
                    ));
                }
                if status.is_server_error() {
                    let last = format!(
                        "{}: attempt {}: HTTP {}: {text}",
                        route.name,
                        attempt + 1,
                        status.as_u16()
                    );
                    tracing::warn!(route = %route.name, action = %req.id, error = %last, "HTTP action attempt failed");
                    return super::Attempt::Again((ActErrorKind::Failed, last));
                }
                let why = if status.is_redirection() {
                    "redirect not followed".to_string()
                } else {
                    text
                };
                super::Attempt::Done(answer(
                    ActionStatus::Rejected,
                    format!("{}: HTTP {}: {why}", route.name, status.as_u16()),
                ))
            }
        },
    )
    .await;
    match r {
        Ok((reply, _)) => Ok(reply),
        Err(g) => {
            let (kind, last) = g.error;
            Err(ActError::new(
                kind,
                format!("{} attempt(s) failed; last: {last}", g.attempts),
            ))
        }
    }
}

/// A transport error, in a few words.
fn plain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests;
