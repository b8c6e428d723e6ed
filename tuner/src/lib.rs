//! embtune's tuner: decides where tables live and how they are read.
//!
//! - [`baselines`]: the named strategies (`Strategy::ALL`: round-robin, greedy-cost and the
//!   others) that a tuned plan is measured against.
//! - [`rules`]: the data-flow rule that picks a flow per table from its skew and the caches.
//! - [`cost`]: the cost model, [`fit`] its least-squares refit to measurements.
//! - [`space`] and [`search`]: the plan space and the simulated-annealing search over it.
//! - [`bo`]: the Gaussian-process surrogate and expected improvement for the knobs.
//! - [`make`]: a user's strategy and flow choice turned into a plan, including `auto`.
//! - [`job`]: a tuning job as a state machine its caller drives (propose, measure, record).
//! - [`propose`]: the job's stages (baselines, annealing, knobs by BO, random), each a
//!   `Proposer`, chained by the job's search kind.
//! - [`store`]: jobs and trials in sled, flushed per trial.
//! - [`torchrec`]: plans as TorchRec's `ShardingPlan` and back (ranks, shard offsets, what has no
//!   TorchRec form).
//!
//! Pure logic apart from the store: no sockets, threads or clock (the search's time limit is a
//! predicate its caller passes), so it is tested fast and deterministically; the coordinator
//! drives jobs against the real cluster.

pub mod baselines;
pub mod bo;
pub mod cost;
pub mod fit;
pub mod job;
pub mod make;
pub mod propose;
pub mod replan;
pub mod rules;
pub mod search;
pub mod space;
pub mod store;
pub mod torchrec;

pub use baselines::{BaselineOptions, Strategy};
pub use make::{FlowChoice, default_plan, set_flows};
pub use rules::{MemoryCaps, apply_auto_flows, choose_flow};
