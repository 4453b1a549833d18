//! The HTTP endpoints: `/healthz` (the process serves) and `/readyz` (it
//! has joined gossip and holds a directory).

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use muster_core::{Liveness, Snapshot};
use tokio::net::TcpListener;

use crate::ApiError;

/// Serves the HTTP endpoints on `addr` until `shutdown` resolves. Returns
/// once bound, with the bound address and the serving future.
pub async fn serve_http(
    addr: std::net::SocketAddr,
    directory: Arc<ArcSwap<Snapshot>>,
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(directory);
    let serving = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((bound, serving))
}

/// Ready once the agent sees itself alive among the members.
async fn ready(State(directory): State<Arc<ArcSwap<Snapshot>>>) -> (StatusCode, &'static str) {
    let snapshot = directory.load();
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
