//! The HTTP endpoints, all answering from the directory snapshot:
//! `/healthz` (the process serves), `/readyz` (it has joined gossip and
//! holds a directory), `/metrics` (Prometheus text format), `/v1/sd`
//! (Prometheus HTTP service discovery) and `/` (the status page).

mod sd;
mod status;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use muster_core::{Liveness, Snapshot};
use muster_policy::Judged;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::ApiError;

/// What every HTTP handler reads from.
#[derive(Clone)]
pub struct HttpState {
    /// This agent's node name.
    pub node_name: String,
    /// The directory.
    pub directory: Arc<ArcSwap<Snapshot>>,
    /// The directory as the naming policy last judged it, with its
    /// verdicts (the status page shows both from one revision).
    pub judged: Arc<ArcSwap<Judged>>,
    /// Every metric, encoded by `/metrics`.
    pub metrics: Arc<Registry>,
    /// What this agent heard of each member (the status page shows how far
    /// behind it is on each).
    pub heard: muster_core::LastHeard,
}

/// Serves the HTTP endpoints on `addr` until `shutdown` resolves. Returns
/// once bound, with the bound address and the serving future.
pub async fn serve_http(
    addr: std::net::SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        std::net::SocketAddr,
        impl Future<Output = std::io::Result<()>>,
    ),
    ApiError,
> {
    let bind_err = |source| ApiError::Bind {
        what: "HTTP",
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    let app = Router::new()
        .route("/", get(status::page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/sd", get(sd::targets))
        .route("/metrics", get(metrics))
        .with_state(state);
    // Answers of a few kilobytes would otherwise wait on Nagle's algorithm
    // and the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serving = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, serving))
}

/// Every metric in Prometheus' text format.
async fn metrics(State(state): State<HttpState>) -> Response {
    let mut text = String::with_capacity(16 * 1024);
    match prometheus_text::encode(&mut text, &state.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// Ready once the agent sees itself alive among the members.
async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    let snapshot = state.directory.load();
    if snapshot
        .members()
        .iter()
        .any(|m| m.liveness == Liveness::Alive)
    {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no member list yet\n",
        )
    }
}
