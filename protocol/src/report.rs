//! Benchmark reports: the fields `embtune bench --json` prints, local or over the cluster.
//! Other tools script against these names; add fields, never rename them.

use serde::{Deserialize, Serialize};

/// Load of one core during a measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CoreLoad {
    pub worker: u16,
    pub core: u16,
    pub cpu: usize,
    /// Fraction of the measured time the core was running tasks.
    pub busy: f64,
    pub tasks: u64,
    pub lookups: u64,
}

/// Huge-page use of the deployed tables.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HugePages {
    /// Bytes in buffers large enough to ask for huge pages.
    pub eligible_bytes: u64,
    /// Bytes of those the kernel backed with huge pages.
    pub granted_bytes: u64,
    /// The machine's transparent-huge-page mode.
    pub thp_mode: String,
}

/// One benchmark run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BenchReport {
    /// `local` (in-process engine) or `cluster` (through a coordinator).
    pub mode: String,
    pub model: String,
    pub plan: String,
    pub workers: usize,
    pub cores: usize,
    pub batch_size: u32,
    pub concurrency: usize,
    /// Target arrival rate for open-loop runs; absent for closed-loop ones.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_qps: Option<f64>,
    pub duration_s: f64,
    pub batches: u64,
    pub batches_per_s: f64,
    pub samples_per_s: f64,
    pub lookups_per_s: f64,
    /// Bytes of embedding rows gathered per second, in GB (1e9).
    pub gbytes_per_s: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Requests that failed; a benchmark with failures says so rather than hiding them.
    pub errors: u64,
    /// Present with `--verify`: whether every checked result matched the reference.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verified_batches: Option<u64>,
    pub per_core: Vec<CoreLoad>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub huge_pages: Option<HugePages>,
    pub isa: String,
    /// Cluster runs: share of the request time spent outside the workers' engines (network,
    /// coordinator, serialisation).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub network_fraction: Option<f64>,
    /// Cluster runs: per-worker request counts and latencies.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub per_worker: Vec<WorkerLoad>,
    /// Cluster runs: `direct` (clients query the workers by the routing table) or
    /// `coordinator` (`--via coordinator`: the coordinator relays every query).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    /// Cluster runs: load generator processes that made the load (0: the bench process itself).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loadgens: Option<u32>,
    /// Cluster runs: bytes of look-ups and pooled replies that crossed the network per batch,
    /// both ways, frame heads included.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wire_bytes_per_batch: Option<f64>,
    /// Cluster runs: how the workers encoded pooled rows (`f32`, `f16`, `bf16`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub wire: Option<String>,
}

/// One worker's share of a cluster benchmark.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerLoad {
    pub worker: u16,
    pub addr: String,
    pub requests: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub engine_p50_us: f64,
}
