//! embtune's coordinator: the control plane of a cluster.
//!
//! - [`membership`]: who is in the cluster and healthy, as a state machine driven by events and
//!   the caller's clock (no I/O), tested on a virtual clock.
//! - [`server`]: the coordinator process: drives membership, deploys plans, publishes the
//!   routing table clients query the workers by, relays queries for thin clients, and directs
//!   load generators.
//! - [`stats`]: live query statistics for the dashboard and metrics.
//! - [`jobs`]: tuning jobs driven against the cluster, measured and stored trial by trial.
//! - [`error`]: what can go wrong in jobs, by the kinds a client can act on.
//!
//! Routing itself is pure and lives in `embtune_protocol::route`; the client that follows it
//! (and the load generators) in the `embtune-client` crate.

pub mod error;
pub mod jobs;
pub mod membership;
pub mod replan;
pub mod server;
pub mod stats;
