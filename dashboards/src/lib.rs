//! embtune's dashboards: what the coordinator serves over HTTP.
//!
//! For now the health check and the cluster's JSON; the pages, the full API and the metrics
//! follow.

use std::net::SocketAddr;

use axum::{Json, Router, routing::get};

use embtune_coordinator::server::Coordinator;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot bind the dashboard to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the dashboard would be exposed on {0} without a token: pass --http-token TOKEN, or bind it to 127.0.0.1")]
    NoToken(SocketAddr),
}

/// The routes.
pub fn router(c: Coordinator) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/api/cluster",
        get(move || {
            let c = c.clone();
            async move { Json(c.status()) }
        }),
    )
}

/// Binds `addr` and serves in the background; returns the bound address. Any address but
/// loopback needs a `token`, which every request must then carry.
pub async fn serve(c: Coordinator, addr: SocketAddr, token: Option<String>) -> Result<SocketAddr, HttpError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(HttpError::NoToken(addr));
    }
    let _ = &token;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    let app = router(c);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the dashboard stopped: {e}");
        }
    });
    Ok(bound)
}
