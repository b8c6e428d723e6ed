//! embtune's coordinator: the process that knows the cluster.
//!
//! - [`route`]: pure routing: which worker sees which ids, power-of-two-choices replicas,
//!   reduction of partial sums.
//! - [`server`]: the coordinator process: membership and health, deployment, scatter/gather.
//! - [`client`]: the client API over QUIC, for external programs and embtune's commands.
//! - [`loadgen`]: closed-loop and open-loop (Poisson) load generation.

pub mod client;
pub mod loadgen;
pub mod route;
pub mod server;
