//! `embtune tune`: autotune the placement on a cluster, with a live progress bar.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_protocol::tuning::{Job, JobConfig, JobStatus, Objective, SearchKind, Trial};
use embtune_tuner::store::Store;

use crate::cluster::{Target, runtime};
use crate::job_view::{follow, print_summary, summary};
use crate::up::{LocalCluster, local_memory};
use crate::workload::WorkloadArgs;

#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Tune on a cluster started here for the job (coordinator and workers on loopback).
    #[arg(long, conflicts_with = "coordinator")]
    pub local: bool,
    /// With --local: worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// With --local: engine cores per worker.
    #[arg(long, default_value_t = 1)]
    pub cores_per_worker: usize,
    /// With --local: memory each worker may hold (e.g. 512M). Below the model's size, plans
    /// must shard, and baselines that do not fit (all-replicate) are left out.
    #[arg(long, value_name = "SIZE", value_parser = crate::launch::parse_size, requires = "local")]
    pub worker_memory: Option<u64>,
    /// Tune on a running cluster through its coordinator.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    pub coordinator: Option<std::net::SocketAddr>,
    /// The cluster's certificate directory (`embtune cluster init --out DIR`), with
    /// --coordinator.
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,
    /// Measured trials of the search, after one trial per baseline.
    #[arg(long, default_value_t = 20)]
    pub trials: u32,
    /// Stop after this many seconds of trials.
    #[arg(long, value_name = "S")]
    pub time_limit: Option<f64>,
    /// What to optimise: throughput (batches/s), mean (latency, one batch at a time) or p99
    /// (99th-percentile latency at --qps).
    #[arg(long, default_value = "throughput")]
    pub objective: String,
    /// Target batches per second for the p99 objective.
    #[arg(long, value_name = "Q")]
    pub qps: Option<f64>,
    /// model (annealing on the calibrated cost model, Bayesian knobs) or random (the yardstick).
    #[arg(long, default_value = "model")]
    pub search: String,
    /// Seconds per measurement round; rounds repeat until the 95% interval is within 5%.
    #[arg(long, default_value_t = 1.0)]
    pub round_secs: f64,
    /// Most rounds per trial.
    #[arg(long, default_value_t = 5)]
    pub max_rounds: u32,
    /// Once the search is over, measure the best plan and every baseline again side by side:
    /// this many rounds, each deploying and loading every contender once in a rotating order.
    /// The speed-ups reported (`speedup_vs`) come from these rounds; 0 skips them and reports
    /// the ratios of the trials' own measurements.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub head_to_head_rounds: u32,
    /// Also measure this plan as a named baseline, and race it in the head-to-head: NAME=FILE,
    /// FILE an embtune plan (`plan export`, `plan import`) or a TorchRec ShardingPlan (JSON, as
    /// benches/peers/torchrec_planner.py saves its planner's). Repeatable. The job's best plan
    /// must beat it side by side like every baseline; `speedup_vs` reports it under NAME.
    /// E.g. --baseline-plan torchrec=benches/peers/results/avazu-2x4.torchrec.json
    #[arg(long, value_name = "NAME=FILE")]
    pub baseline_plan: Vec<String>,
    /// Queries in flight for the throughput objective (default 4 per core).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Memory each client may give to client-resident tables: plans may keep small tables in
    /// the clients, whose pooled rows then never cross the network. 0 keeps every table on
    /// the workers.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::launch::parse_size_or_zero)]
    pub client_memory: u64,
    /// How workers encode pooled rows on the wire: f32, or f16 / bf16 for half the bytes.
    #[arg(long, value_name = "FORMAT", default_value = "f32", value_parser = clap::value_parser!(embtune_protocol::wire::WireFormat))]
    pub wire: embtune_protocol::wire::WireFormat,
    /// Load generators that measure every trial, straight to the workers. With --local, the
    /// processes to start (default 1); with --coordinator, how many of those connected to
    /// use (default all; with none connected the coordinator loads the cluster itself).
    #[arg(long, value_name = "L")]
    pub loadgens: Option<u32>,
    /// Where results are kept: the coordinator's data dir with --local (default
    /// embtune-data); with --coordinator, a store the finished job is also copied into.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Continue a job that stopped (the coordinator restarted, or `tune` was interrupted).
    #[arg(long, value_name = "JOB")]
    pub resume: Option<String>,
    /// Print one JSON object when the job ends (no progress, no tables): the figures of
    /// `embtune results show --json` without the trials.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TuneArgs) -> Result<()> {
    let objective = match a.objective.parse::<Objective>().map_err(anyhow::Error::msg)? {
        Objective::P99 { .. } => Objective::P99 {
            qps: a.qps.context("--objective p99 needs a target rate: add --qps Q (batches per second)")?,
        },
        o => o,
    };
    let search = match a.search.as_str() {
        "model" => SearchKind::Model,
        "random" => SearchKind::Random,
        s => bail!("unknown search `{s}`; use model or random"),
    };
    if a.resume.is_none() && a.workload.preset.is_none() && a.workload.model.is_none() {
        bail!("name a workload to tune: --preset P or --model FILE (or --resume JOB)");
    }
    let spec = if a.resume.is_none() { Some(a.workload.spec()?) } else { None };
    if a.resume.is_some() && !a.baseline_plan.is_empty() {
        bail!("--baseline-plan belongs to a new job: a resumed job keeps the baselines it started with");
    }
    let mut baseline_plans = Vec::new();
    for b in &a.baseline_plan {
        let (name, file) = b
            .split_once('=')
            .with_context(|| format!("--baseline-plan `{b}`: write NAME=FILE, e.g. torchrec=plan.json"))?;
        let s = spec.as_ref().expect("a new job has a spec");
        let plan = crate::torchrec_cmd::read_plan_file(std::path::Path::new(file), s)?;
        baseline_plans.push(embtune_protocol::tuning::NamedPlan { name: name.to_string(), plan });
    }
    if let Some(s) = &spec {
        // Before a local cluster starts: a clash of names or models fails at once.
        let probe = JobConfig { baseline_plans: baseline_plans.clone(), ..Default::default() };
        embtune_tuner::job::check_baseline_plans(&probe, s).map_err(anyhow::Error::msg)?;
    }
    let dataset = a.workload.preset.clone().unwrap_or_else(|| {
        a.workload
            .model
            .as_ref()
            .map_or("model".into(), |m| m.file_stem().unwrap_or_default().to_string_lossy().into_owned())
    });
    let dataset = match a.workload.scale {
        Some(s) if s != 1.0 => format!("{dataset}@{s}"),
        _ => dataset,
    };
    let mut local = None;
    let target = if a.local {
        if a.workers == 0 || a.cores_per_worker == 0 {
            bail!("--workers and --cores-per-worker must be at least 1");
        }
        let data = a.data_dir.clone().unwrap_or_else(|| PathBuf::from("embtune-data"));
        let mem = match &spec {
            Some(s) => local_memory(s, a.workers, a.worker_memory)?,
            None => {
                (embtune_worker::machine::MachineInfo::detect().mem_available as f64 * 0.8 / a.workers as f64) as u64
            }
        };
        let mut c = LocalCluster::start(&data, a.workers, a.cores_per_worker, "127.0.0.1:0", "127.0.0.1:0", mem)?;
        c.start_loadgens(a.loadgens.unwrap_or(1) as usize)?;
        let t = c.target();
        local = Some(c);
        t
    } else {
        match (&a.coordinator, &a.cluster) {
            (Some(c), Some(d)) => Target { coordinator: *c, cluster: d.clone() },
            _ => bail!("say where to tune: --local, or --coordinator HOST:PORT --cluster DIR"),
        }
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let client = target.client().await?;
        if a.local {
            client
                .wait_for_workers(a.workers, Duration::from_secs(60))
                .await
                .context("waiting for the local workers")?;
            let n = a.loadgens.unwrap_or(1) as usize;
            client
                .wait_for_loadgens(n, Duration::from_secs(60))
                .await
                .context("waiting for the local load generators")?;
        }
        let cores: u32 = client.status().await?.workers.iter().filter(|w| w.healthy).map(|w| w.cores as u32).sum();
        let id = match &a.resume {
            Some(id) => {
                client.resume(id).await.with_context(|| format!("resuming {id}"))?;
                id.clone()
            }
            None => {
                let config = JobConfig {
                    trials: a.trials,
                    time_limit_s: a.time_limit,
                    objective,
                    search,
                    round_s: a.round_secs,
                    max_rounds: a.max_rounds.max(1),
                    ci_target: 0.05,
                    concurrency: a.concurrency.unwrap_or(4 * cores.max(1)),
                    seed: 1,
                    head_to_head_rounds: a.head_to_head_rounds,
                    client_memory_bytes: a.client_memory,
                    wire: a.wire,
                    // With --local every load generator started is used.
                    loadgens: if a.local { 0 } else { a.loadgens.unwrap_or(0) },
                    baseline_plans: baseline_plans.clone(),
                };
                client.submit_tune(&dataset, spec.as_ref().unwrap(), &config).await.context("starting the job")?
            }
        };
        follow(&client, &id, a.json).await
    });
    let (job, trials) = match result {
        Ok(x) => x,
        Err(e) => {
            if let Some(l) = local.as_mut() {
                l.stop();
            }
            return Err(e);
        }
    };
    if let Some(l) = local.as_mut() {
        l.stop();
    }
    // With a remote coordinator, copy the finished job into --data-dir's store if asked.
    if !a.local
        && let Some(dir) = &a.data_dir
    {
        copy_into(dir, &job, &trials)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary(&job, &trials))?);
    } else {
        print_summary(&job, &trials);
    }
    if let JobStatus::Failed(e) = &job.status {
        bail!("the job failed: {e}");
    }
    Ok(())
}

fn copy_into(dir: &std::path::Path, job: &Job, trials: &[Trial]) -> Result<()> {
    let store = match Store::try_open(&dir.join("store")) {
        Ok(s) => s,
        // The coordinator's own data dir, locked by it: the job is already there.
        Err(embtune_tuner::store::StoreError::Locked { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    store.put_job(job)?;
    for t in trials {
        store.add_trial(t)?;
    }
    if let Some((n, v)) = job.best {
        let o = job.config.objective;
        store.offer_best(
            &embtune_protocol::tuning::BestRecord {
                dataset: job.dataset.clone(),
                cluster: job.cluster.key(),
                job: job.id.clone(),
                trial: n,
                value: v,
            },
            |a, b| o.better(a, b),
        )?;
    }
    Ok(())
}
