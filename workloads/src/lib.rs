//! Workloads for embtune: what a recommender model's embedding look-ups look like.
//!
//! - [`spec`]: the model spec (tables, row types, pooling, access distributions), read from
//!   TOML or JSON.
//! - [`presets`]: real datasets' table shapes (Criteo Kaggle and Terabyte, Avazu, KuaiRec,
//!   Taobao, TenRec, MICRO'24) plus a synthetic shape, each shrinkable with `--scale`.
//! - [`batch`]: query batches in the table-batched layout and their seeded generator: the same
//!   seed gives the same batches on any machine.
//! - [`dist`] and [`trace`]: the samplers behind each access distribution, including empirical
//!   ones read from real traces.
//! - [`profile`]: per-table skew of a batch sample or a trace.
//! - [`rng`]: the seeded streams and the permutation that scatters hot rows.
//! - [`torchrec`]: TorchRec's `EmbeddingBagConfig` lists as model specs, both ways.
//!
//! Everything here is pure computation and file reading; no threads of its own except the
//! rayon pool that generates batches in parallel.

pub mod batch;
pub mod dist;
pub mod presets;
pub mod profile;
pub mod rng;
pub mod spec;
pub mod torchrec;
pub mod trace;

pub use batch::{BatchGenerator, QueryBatch};
pub use presets::{Preset, PresetOptions};
pub use profile::{AccessProfile, TableProfile};
pub use spec::{AccessDist, ModelSpec, Pooling, PoolingMode, RowType, TableSpec};

/// Why a workload could not be built.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum WorkloadError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}
