//! embtune's tuner: decides where tables live and how they are read.
//!
//! - [`baselines`]: the named strategies (round-robin, all-replicate, all-shard,
//!   size-threshold, greedy-cost) that a tuned plan is measured against.
//! - [`rules`]: the data-flow rule that picks a flow per table from its skew and the caches.
//!
//! Pure logic: no I/O, no clocks, so it is tested fast and deterministically.

pub mod baselines;
pub mod bo;
pub mod cost;
pub mod fit;
pub mod make;
pub mod rules;
pub mod search;
pub mod space;

pub use baselines::{BaselineOptions, Strategy};
pub use make::{FlowChoice, default_plan, set_flows};
pub use rules::{MemoryCaps, apply_auto_flows, choose_flow};
