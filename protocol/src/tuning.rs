//! Tuning records: jobs, trials and what was measured. The tuner writes them to its store,
//! the coordinator serves them, the CLI and the dashboard read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use embtune_workloads::ModelSpec;

use crate::plan::{Plan, WorkerShape};

/// What a plan is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Batches per second under closed-loop load (higher is better).
    Throughput,
    /// Mean latency with one batch in flight, microseconds (lower is better).
    Mean,
    /// 99th-percentile latency at a target rate of batches per second, microseconds (lower is
    /// better).
    P99 { qps: f64 },
}

impl Objective {
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Throughput => "throughput",
            Objective::Mean => "mean",
            Objective::P99 { .. } => "p99",
        }
    }

    /// Unit of the objective's values, for reports.
    pub fn unit(&self) -> &'static str {
        match self {
            Objective::Throughput => "batches/s",
            _ => "us",
        }
    }

    /// Whether a larger value is better.
    pub fn maximise(&self) -> bool {
        matches!(self, Objective::Throughput)
    }

    /// Whether `a` is better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximise() { a > b } else { a < b }
    }

    /// How many times better `best` is than `other` (> 1 when better), whichever the direction.
    pub fn speedup(&self, other: f64, best: f64) -> f64 {
        if self.maximise() { best / other.max(1e-12) } else { other / best.max(1e-12) }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    /// `p99` parses with a rate of 0; the caller supplies the target rate.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "throughput" => Ok(Objective::Throughput),
            "mean" => Ok(Objective::Mean),
            "p99" => Ok(Objective::P99 { qps: 0.0 }),
            _ => Err(format!("unknown objective `{s}`; use p99, mean or throughput")),
        }
    }
}

/// How a job searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// Simulated annealing on the calibrated cost model, Bayesian optimisation of the knobs.
    #[default]
    Model,
    /// Random plans from the same space: the yardstick the model-driven search is compared to.
    Random,
}

/// What a tuning job is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// Measured trials of the search, besides the baselines.
    pub trials: u32,
    /// Stop after this many seconds, if set.
    pub time_limit_s: Option<f64>,
    pub objective: Objective,
    pub search: SearchKind,
    /// Seconds per measurement round, and the most rounds a trial may take to reach a
    /// confidence interval of `ci_target` (relative half-width).
    pub round_s: f64,
    pub max_rounds: u32,
    pub ci_target: f64,
    /// Closed-loop concurrency for throughput measurements.
    pub concurrency: u32,
    pub seed: u64,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            trials: 20,
            time_limit_s: None,
            objective: Objective::Throughput,
            search: SearchKind::Model,
            round_s: 1.0,
            max_rounds: 5,
            ci_target: 0.05,
            concurrency: 8,
            seed: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done,
    /// Stopped by the coordinator going away; resumes when it comes back.
    Interrupted,
    Failed(String),
}

impl JobStatus {
    pub fn label(&self) -> &str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Failed(_) => "failed",
        }
    }
}

/// The cluster a job ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterDesc {
    pub workers: Vec<WorkerShape>,
    pub cpu_model: String,
}

impl ClusterDesc {
    /// A short key: workers x cores and the CPU, for "best plan per dataset and cluster".
    pub fn key(&self) -> String {
        let cores: Vec<String> = self.workers.iter().map(|w| w.cores.to_string()).collect();
        format!("{}w[{}] {}", self.workers.len(), cores.join(","), self.cpu_model)
    }
}

/// A tuning job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The preset or model-file name the user gave.
    pub dataset: String,
    pub spec: ModelSpec,
    pub spec_digest: u64,
    pub cluster: ClusterDesc,
    pub config: JobConfig,
    pub status: JobStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Trial number and value of the best measured plan so far.
    pub best: Option<(u32, f64)>,
    /// Each baseline's measured value.
    pub baselines: BTreeMap<String, f64>,
    /// Median relative error of the cost model's predictions over this job's trials.
    pub model_error: Option<f64>,
    /// Seconds spent in measured trials, summed over restarts.
    pub elapsed_s: f64,
}

/// What produced a trial's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialKind {
    Baseline(String),
    /// A placement from the model-driven search.
    Search,
    /// Knobs from Bayesian optimisation on the best placement.
    Knobs,
    Random,
}

impl TrialKind {
    pub fn label(&self) -> String {
        match self {
            TrialKind::Baseline(n) => format!("baseline:{n}"),
            TrialKind::Search => "search".into(),
            TrialKind::Knobs => "knobs".into(),
            TrialKind::Random => "random".into(),
        }
    }
}

/// What a trial measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Measured {
    /// The objective's value: the mean over rounds.
    pub value: f64,
    /// Each round's value, and the relative half-width of the 95% interval of their mean.
    pub rounds: Vec<f64>,
    pub ci: f64,
    pub batches_per_s: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// One trial of a job: a plan deployed and measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub job: String,
    pub n: u32,
    pub kind: TrialKind,
    pub plan: Plan,
    /// The model's prediction of the objective when the trial was proposed.
    pub predicted: f64,
    pub measured: Option<Measured>,
    /// Why the trial failed, if it did.
    pub failure: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// The best plan found for a dataset on a cluster: which job and trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    pub dataset: String,
    /// [`ClusterDesc::key`] of the cluster.
    pub cluster: String,
    pub job: String,
    pub trial: u32,
    pub value: f64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
