//! embtune's worker: the node that holds embedding tables and answers look-ups.
//!
//! - [`engine`]: the multi-core look-up engine: tables in aligned, huge-page-backed buffers,
//!   one pinned thread per core, per-table data flows (prefetching gather, cache-resident hot
//!   rows, blocked gather) over f32/f16/int8 rows, SIMD kernels chosen at run time.
//! - [`bench`]: the in-process closed-loop benchmark behind `embtune bench`.
//! - [`calibrate`]: the start-up sweep that gives the cost model this machine's figures.
//! - [`compare`]: several plans measured in alternating rounds (`embtune compare`).
//! - [`limit`]: this machine's gather ceiling measured beside the engine, in one run.
//! - [`machine`]: cache sizes, memory and CPUs of this node.
//! - [`server`]: the worker process: the engine behind a QUIC endpoint, registered with the
//!   coordinator.
//! - [`traffic`]: per-table traffic of the current plan (exact counts and sampled hot rows)
//!   for the coordinator's live re-planner.

pub mod bench;
pub mod calibrate;
pub mod compare;
pub mod engine;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod limit;
pub mod machine;
pub mod server;
pub mod traffic;

pub use engine::{CoreStats, DeployReport, Engine, EngineConfig, EngineError, Lookup, LookupOutput};
