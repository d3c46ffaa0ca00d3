//! The stack's deploy system: it pushes configurations to the payment
//! service's instances, tells the brain of each push as a CI/CD system
//! does (`POST /v1/changes`), and takes the brain's `revert_config` and
//! `rollback` actions as an HTTP actuator (`POST /actions`, bearer token,
//! once per idempotency key: a repeat gets 409).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use selfheal_bus::{ActionKind, ActionRequest};

use super::backend::ConfigPush;

struct Inner {
    client: reqwest::Client,
    /// The instances' admin base URLs (`http://127.0.0.1:port`).
    instances: Vec<String>,
    token: String,
    /// Where change notices go, with their token.
    brain: Option<(String, String)>,
    /// The configurations pushed, oldest first (version 1, working, to
    /// begin with); a revert goes back one.
    pushed: Mutex<Vec<ConfigPush>>,
    applied: Mutex<BTreeSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The deploy system.
#[derive(Clone)]
pub struct Deploy(Arc<Inner>);

/// A configuration push or revert that failed.
#[derive(Debug, thiserror::Error)]
#[error("deploy: {0}")]
pub struct DeployError(String);

impl Deploy {
    /// A deploy system for `instances`, taking actions with bearer `token`
    /// and telling `brain` (its base URL and change token) of each push.
    pub fn new(
        client: reqwest::Client,
        instances: Vec<String>,
        token: &str,
        brain: Option<(String, String)>,
    ) -> Self {
        Deploy(Arc::new(Inner {
            client,
            instances,
            token: token.to_string(),
            brain,
            pushed: Mutex::new(vec![ConfigPush {
                version: 1,
                good: true,
            }]),
            applied: Mutex::default(),
        }))
    }

    /// Pushes configuration `version` (working or not) to every instance,
    /// then tells the brain.
    pub async fn push(&self, version: i64, good: bool, author: &str) -> Result<(), DeployError> {
        self.load(version, good).await?;
        lock(&self.0.pushed).push(ConfigPush { version, good });
        if let Some((url, token)) = &self.0.brain {
            // The webhook's body: a change notice without the wire version.
            let change = serde_json::json!({
                "id": format!("config-v{version}"),
                "service": "pay",
                "kind": "config",
                "ts": selfheal_bus::wall_ms(),
                "author": author,
                "description": format!("pay configuration v{version}"),
            });
            let r = self
                .0
                .client
                .post(format!("{url}/v1/changes"))
                .bearer_auth(token)
                .json(&change)
                .send()
                .await
                .map_err(|e| DeployError(format!("change notice: {e}")))?;
            let status = r.status();
            if !status.is_success() {
                let why = r.text().await.unwrap_or_default();
                return Err(DeployError(format!(
                    "change notice refused: HTTP {}: {why}",
                    status.as_u16()
                )));
            }
        }
        Ok(())
    }

    async fn load(&self, version: i64, good: bool) -> Result<(), DeployError> {
        for base in &self.0.instances {
            let r = self
                .0
                .client
                .post(format!("{base}/admin/config"))
                .json(&ConfigPush { version, good })
                .send()
                .await
                .map_err(|e| DeployError(format!("{base}: {e}")))?;
            if !r.status().is_success() {
                return Err(DeployError(format!("{base}: HTTP {}", r.status().as_u16())));
            }
        }
        Ok(())
    }

    /// Reverts the last push: loads the configuration before it again.
    pub async fn revert(&self) -> Result<i64, DeployError> {
        let before = {
            let pushed = lock(&self.0.pushed);
            match pushed.len() {
                0 | 1 => return Err(DeployError("nothing to revert".into())),
                n => pushed[n - 2].clone(),
            }
        };
        self.load(before.version, before.good).await?;
        lock(&self.0.pushed).pop();
        Ok(before.version)
    }

    /// Its routes: `POST /actions`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/actions", post(action))
            .with_state(self.clone())
    }
}

async fn action(
    State(d): State<Deploy>,
    headers: HeaderMap,
    Json(req): Json<ActionRequest>,
) -> (StatusCode, String) {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(d.0.token.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required".into(),
        );
    }
    if !matches!(req.kind, ActionKind::RevertConfig | ActionKind::Rollback) || req.service != "pay"
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the deploy system does not {} {}",
                req.kind.as_str(),
                req.service
            ),
        );
    }
    if !lock(&d.0.applied).insert(req.id.clone()) {
        return (StatusCode::CONFLICT, format!("{} already applied", req.id));
    }
    match d.revert().await {
        Ok(v) => {
            tracing::info!(action = %req.id, version = v, "configuration reverted");
            (
                StatusCode::OK,
                format!("pay reverted to configuration v{v}"),
            )
        }
        Err(e) => {
            // Not applied: the key may be tried again.
            lock(&d.0.applied).remove(&req.id);
            (StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}
