//! embtune's worker: the node that holds embedding tables and answers look-ups.
//!
//! - [`engine`]: the multi-core look-up engine: tables in aligned, huge-page-backed buffers,
//!   one pinned thread per core, per-table data flows (prefetching gather, cache-resident hot
//!   rows, blocked gather) over f32/f16/int8 rows, SIMD kernels chosen at run time.

pub mod engine;

pub use engine::{CoreStats, DeployReport, Engine, EngineConfig, EngineError, Lookup, LookupOutput};
