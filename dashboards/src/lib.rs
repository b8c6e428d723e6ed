//! embtune's dashboards: what the coordinator serves over HTTP.
//!
//! - the web dashboard (`/`, its assets under `/assets/`, embedded in the binary: no CDN, no
//!   build step): cluster, tuning jobs, results, latency;
//! - the JSON API behind it (`/api/...`, documented in `dashboards/API.md`);
//! - Prometheus metrics (`/metrics`, OpenMetrics text), encoded from the coordinator's state at
//!   scrape time.
//!
//! The server binds loopback unless given a token; with a token every request but `/healthz`
//! must carry it, as `Authorization: Bearer TOKEN` or `?token=TOKEN`. It serves at most
//! [`HttpLimits::max_connections`] connections, and closes one whose request header is slow or
//! that sits idle ([`HttpLimits`], `limits.rs`).

mod api;
mod assets;
mod auth;
mod counts;
pub mod heat;
mod limits;
mod metrics;
mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use embtune_coordinator::server::Coordinator;

use crate::counts::TrialCounts;
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
    let counts = Arc::new(TrialCounts::default());
    let registry = metrics::registry(c.clone(), counts.clone());
    let state = Arc::new(AppState::new(c, token, counts, registry));
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
        .route("/api/replan", get(api::replan))
        .route("/metrics", get(metrics::scrape))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(axum::middleware::from_fn(assets::security_headers));
    Router::new().route("/healthz", get(|| async { "ok" })).merge(guarded).with_state(state)
}

/// What the HTTP server lets its clients hold.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a request's header may take to arrive, from its first byte (and for the first
    /// request, from the connection's start).
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    /// A dashboard has a few viewers and a Prometheus scraper: 256 connections is plenty, and
    /// without these limits 1,000 half-open requests stayed open for good.
    fn default() -> Self {
        HttpLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Binds `addr` and serves in the background; returns the bound address. Any address but
/// loopback needs a `token`, which every request must then carry.
pub async fn serve(c: Coordinator, addr: SocketAddr, token: Option<String>) -> Result<SocketAddr, HttpError> {
    serve_with(c, addr, token, HttpLimits::default()).await
}

/// [`serve`] within `limits`.
pub async fn serve_with(
    c: Coordinator,
    addr: SocketAddr,
    token: Option<String>,
    limits: HttpLimits,
) -> Result<SocketAddr, HttpError> {
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(HttpError::EmptyToken);
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(HttpError::NoToken(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    let app = router_with_token(c, token);
    tokio::spawn(limits::accept(listener, app, limits));
    Ok(bound)
}
