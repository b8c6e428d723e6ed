//! embtune's coordinator: the process that knows the cluster.
//!
//! - [`route`]: pure routing: which worker sees which ids, power-of-two-choices replicas,
//!   reduction of partial sums.
//! - [`server`]: the coordinator process: membership and health, deployment, scatter/gather.
//! - [`client`]: the client API over QUIC, for external programs and embtune's commands.
//! - [`loadgen`]: closed-loop and open-loop (Poisson) load generation.
//! - [`stats`]: live query statistics for the dashboard and metrics.
//! - [`jobs`]: tuning jobs driven against the cluster, measured and stored trial by trial.

pub mod client;
pub mod jobs;
pub mod loadgen;
pub mod route;
pub mod server;
pub mod stats;
