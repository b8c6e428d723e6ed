//! embtune's dashboards: what the coordinator serves over HTTP.
//!
//! - the web dashboard (`/`, its assets under `/assets/`, embedded in the binary: no CDN, no
//!   build step): cluster, tuning jobs, results, latency;
//! - the JSON API behind it (`/api/...`, documented in `dashboards/API.md`);
//! - Prometheus metrics (`/metrics`, OpenMetrics text), encoded from the coordinator's state at
//!   scrape time.
//!
//! The server binds loopback unless given a token; with a token every request but `/healthz`
//! must carry it, as `Authorization: Bearer TOKEN` or `?token=TOKEN`.

mod api;
mod assets;
mod auth;
pub mod heat;
mod metrics;
mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use embtune_coordinator::server::Coordinator;

use crate::state::AppState;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot bind the dashboard to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the dashboard would be exposed on {0} without a token: pass --http-token TOKEN, or bind it to 127.0.0.1")]
    NoToken(SocketAddr),
    #[error("the dashboard token is empty: pass a non-empty --http-token")]
    EmptyToken,
}

/// The routes, open to anyone who reaches them (loopback use, and tests).
pub fn router(c: Coordinator) -> Router {
    router_with_token(c, None)
}

/// The routes; with a `token`, every route but `/healthz` answers 401 to a request without it.
pub fn router_with_token(c: Coordinator, token: Option<String>) -> Router {
    let state = Arc::new(AppState::new(c, token));
    let guarded = Router::new()
        .route("/", get(assets::index))
        .route("/index.html", get(assets::index))
        .route("/assets/{file}", get(assets::asset))
        .route("/api", get(api::index))
        .route("/api/cluster", get(api::cluster))
        .route("/api/deployment", get(api::deployment))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/jobs/{id}/trials/{n}/plan", get(api::trial_plan))
        .route("/api/best", get(api::best))
        .route("/api/compare", get(api::compare))
        .route("/api/latency", get(api::latency))
        .route("/metrics", get(metrics::scrape))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(axum::middleware::from_fn(assets::security_headers));
    Router::new().route("/healthz", get(|| async { "ok" })).merge(guarded).with_state(state)
}

/// Binds `addr` and serves in the background; returns the bound address. Any address but
/// loopback needs a `token`, which every request must then carry.
pub async fn serve(c: Coordinator, addr: SocketAddr, token: Option<String>) -> Result<SocketAddr, HttpError> {
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(HttpError::EmptyToken);
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(HttpError::NoToken(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    let app = router_with_token(c, token);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the dashboard stopped: {e}");
        }
    });
    Ok(bound)
}
