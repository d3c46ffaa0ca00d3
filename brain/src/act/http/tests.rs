use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};

use super::*;

/// What the test endpoint saw: (Idempotency-Key, Authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, ActionRequest)>>>;

#[derive(Clone)]
struct Endpoint {
    seen: Seen,
    calls: Arc<AtomicUsize>,
    /// The answer to the n-th call (the last one repeats).
    script: Arc<Vec<(u16, &'static str)>>,
}

async fn handle(
    State(e): State<Endpoint>,
    h: HeaderMap,
    Json(req): Json<ActionRequest>,
) -> Response {
    let n = e.calls.fetch_add(1, Ordering::SeqCst);
    let hv = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    e.seen
        .lock()
        .unwrap()
        .push((hv("idempotency-key"), hv("authorization"), req.clone()));
    let (code, body) = e.script[n.min(e.script.len() - 1)];
    if body == "sleep" {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = StatusCode::from_u16(code).unwrap();
    if body == "reply" {
        let r = ActionReply {
            v: WIRE_VERSION,
            id: req.id,
            status: ActionStatus::Applied,
            message: "rolled back by the deploy system".into(),
            ts: req.ts,
        };
        return (status, Json(r)).into_response();
    }
    if status.is_redirection() {
        return (status, [("location", "http://127.0.0.1:9/elsewhere")]).into_response();
    }
    (status, body.to_string()).into_response()
}

/// A real HTTP endpoint on a free loopback port answering per `script`.
async fn endpoint(script: Vec<(u16, &'static str)>) -> (String, Endpoint) {
    let e = Endpoint {
        seen: Arc::default(),
        calls: Arc::default(),
        script: Arc::new(script),
    };
    let app = Router::new()
        .route("/api/actions", post(handle))
        .with_state(e.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}/api/actions"), e)
}

fn route(url: &str) -> HttpRoute {
    HttpRoute {
        name: "deploy".into(),
        url: url.into(),
        kinds: vec![ActionKind::Rollback],
        services: vec![],
        token_env: None,
        timeout_ms: 2000,
        retries: 2,
        backoff_ms: 1,
    }
}

fn request() -> ActionRequest {
    ActionRequest {
        v: WIRE_VERSION,
        id: "inc-1-s0".into(),
        incident: "inc-1".into(),
        service: "payment-engine".into(),
        kind: ActionKind::Rollback,
        target: "payment-engine".into(),
        params: Default::default(),
        ts: 1_700_000_000_000,
    }
}

#[tokio::test]
async fn an_endpoint_gets_the_action_with_its_key_and_token_and_its_answer_is_read() {
    let c = client().unwrap();
    let (url, e) = endpoint(vec![(200, "reply")]).await;
    let mut r = route(&url);
    // SAFETY: this test alone reads or writes this variable.
    unsafe { std::env::set_var("SELFHEAL_TEST_DEPLOY_TOKEN", "s3cret") };
    r.token_env = Some("SELFHEAL_TEST_DEPLOY_TOKEN".into());
    let reply = send(&c, &r, &request()).await.unwrap();
    assert_eq!(reply.status, ActionStatus::Applied);
    assert_eq!(reply.message, "rolled back by the deploy system");
    let seen = e.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "inc-1-s0");
    assert_eq!(seen[0].1, "Bearer s3cret");
    assert_eq!(seen[0].2, request(), "the same JSON the bus carries");

    // A missing token variable sends nothing.
    r.token_env = Some("SELFHEAL_TEST_NO_SUCH_VARIABLE".into());
    let err = send(&c, &r, &request()).await.unwrap_err();
    assert!(
        err.detail.contains("SELFHEAL_TEST_NO_SUCH_VARIABLE"),
        "{err}"
    );
    assert_eq!(err.kind, ActErrorKind::Unreachable);
    assert_eq!(e.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn status_codes_map_to_applied_duplicate_and_rejected() {
    let c = client().unwrap();
    for (script, want, says) in [
        ((200, "ok"), ActionStatus::Applied, "HTTP 200"),
        (
            (409, "seen this key"),
            ActionStatus::Duplicate,
            "seen this key",
        ),
        (
            (400, "no such service"),
            ActionStatus::Rejected,
            "HTTP 400: no such service",
        ),
        ((307, ""), ActionStatus::Rejected, "redirect not followed"),
    ] {
        let (url, e) = endpoint(vec![script]).await;
        let reply = send(&c, &route(&url), &request()).await.unwrap();
        assert_eq!(reply.status, want, "{script:?}: {}", reply.message);
        assert!(reply.message.contains(says), "{}", reply.message);
        assert_eq!(e.calls.load(Ordering::SeqCst), 1, "{script:?}: no retry");
    }
}

#[tokio::test]
async fn server_errors_are_retried_under_the_same_key_then_given_up() {
    let c = client().unwrap();
    let (url, e) = endpoint(vec![(503, "busy"), (500, "oops"), (200, "reply")]).await;
    let reply = send(&c, &route(&url), &request()).await.unwrap();
    assert_eq!(reply.status, ActionStatus::Applied);
    let keys: Vec<String> = e.seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert_eq!(keys, ["inc-1-s0"; 3]);

    let (url, e) = endpoint(vec![(502, "bad gateway")]).await;
    let err = send(&c, &route(&url), &request()).await.unwrap_err();
    assert!(
        err.detail.contains("3 attempt(s) failed") && err.detail.contains("HTTP 502"),
        "{err}"
    );
    assert_eq!(err.kind, ActErrorKind::Failed);
    assert_eq!(e.calls.load(Ordering::SeqCst), 3);

    // A slow endpoint times out; a closed port refuses.
    let (url, _) = endpoint(vec![(200, "sleep")]).await;
    let mut r = route(&url);
    r.timeout_ms = 50;
    r.retries = 0;
    let err = send(&c, &r, &request()).await.unwrap_err();
    assert!(err.detail.contains("timed out"), "{err}");
    assert_eq!(err.kind, ActErrorKind::TimedOut);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = send(&c, &route(&format!("http://{closed}/x")), &request())
        .await
        .unwrap_err();
    assert!(err.detail.contains("could not connect"), "{err}");
    assert_eq!(err.kind, ActErrorKind::Unreachable);
}

#[test]
fn routes_must_lie_under_the_allow_list() {
    let allow = vec!["https://deploy.example.com/api/".to_string()];
    let ok = route("https://deploy.example.com/api/selfheal/actions");
    assert!(validate(std::slice::from_ref(&ok), &allow).is_empty());
    for (url, why) in [
        ("https://evil.example.com/api/x", "under no base URL"),
        (
            "https://deploy.example.com/api/../admin/x",
            "under no base URL",
        ),
        (
            "https://deploy.example.com.evil.net/api/x",
            "under no base URL",
        ),
        ("https://user:pw@deploy.example.com/api/x", "credentials"),
        ("ftp://deploy.example.com/api/x", "not http or https"),
        ("not a url", "is not a URL"),
    ] {
        let p = validate(&[route(url)], &allow);
        assert!(p.iter().any(|m| m.contains(why)), "{url}: {p:?}");
    }
    let p = validate(
        std::slice::from_ref(&ok),
        &["deploy.example.com".to_string()],
    );
    assert!(p.iter().any(|m| m.starts_with("http_allow")), "{p:?}");
    let mut empty = ok;
    empty.kinds.clear();
    assert!(!validate(&[empty], &allow).is_empty());
}
