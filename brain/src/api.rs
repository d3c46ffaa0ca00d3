//! The brain's HTTP API. For now: `/healthz` and `/metrics` (Prometheus
//! text format); incidents, pending actions and approvals come with the
//! on-call work.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio_util::sync::CancellationToken;

use crate::stats::BrainStats;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The brain's counters.
    pub stats: Arc<BrainStats>,
}

/// The HTTP application.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.stats.render_prometheus(),
    )
}

/// Serves [`app`] on `addr` until `stop` fires. Returns the bound address
/// (useful with port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let join = tokio::spawn(async move {
        let server =
            axum::serve(listener, app(state)).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP API stopped");
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
        let state = ApiState { stats };
        let res = app(state.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
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
