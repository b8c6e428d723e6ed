//! What embtune's parts say to each other.
//!
//! - [`plan`]: the placement plan (where each table lives, which data flow reads it) that the
//!   tuner makes, the coordinator deploys and routes by, and the worker executes.
//! - [`report`]: benchmark reports, the stable JSON of `embtune bench`.
//! - [`route`]: routing as pure functions: which worker sees which ids of a batch, replica
//!   choice, and how partial sums add up; shared by clients and the coordinator's relay.
//! - [`tuning`]: tuning jobs, trials and measurements, as stored and served.
//! - [`wire`] and [`codec`]: the messages between processes and their framing (bincode
//!   metadata, raw little-endian bodies, hard size limits).
//!
//! Pure data and pure functions: no I/O here, so every rule about plans and frames is tested
//! fast. The transport crate moves these frames over QUIC.

pub mod codec;
pub mod plan;
pub mod replan;
pub mod report;
pub mod route;
pub mod tuning;
pub mod wire;

pub use plan::{
    CoreId, DataFlow, Knobs, LocalLayout, LocalShard, LocalTable, Placement, Plan, ShardRows, TablePlan, Topology,
    WorkerAssignment, WorkerShape,
};

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PlanError {
    #[error("invalid plan: {0}")]
    Invalid(String),
    #[error("the plan does not fit in memory: {0}")]
    Memory(String),
}
