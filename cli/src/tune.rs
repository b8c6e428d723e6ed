//! `embtune tune`: autotune the placement on a cluster, with a live progress bar.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_client::CoordinatorClient;
use embtune_protocol::tuning::{Job, JobConfig, JobStatus, Objective, SearchKind, Trial};
use embtune_tuner::store::Store;

use crate::cluster::{Target, runtime};
use crate::ui;
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

/// The contract JSON of a finished job (`job`, `trials`, `best`, `baselines`, `speedup_vs`,
/// ...): the dashboard's job summary, built in one place (`embtune_dashboards::views`).
pub fn summary(job: &Job, trials: &[Trial]) -> serde_json::Value {
    embtune_dashboards::views::summary(job, trials)
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

/// Polls the job until it ends, drawing a progress bar.
pub(crate) async fn follow(client: &CoordinatorClient, id: &str, quiet: bool) -> Result<(Job, Vec<Trial>)> {
    let bar = ui::bar(1, quiet);
    bar.set_prefix("tuning");
    loop {
        let (job, trials) = client.job(id).await?;
        let total = job.config.trials as u64 + embtune_tuner::job::baseline_count(&job.config) as u64;
        bar.set_length(total);
        bar.set_position(trials.len() as u64);
        let o = job.config.objective;
        // While the search runs, every figure is a trial's own measurement; once the job has its
        // side-by-side rounds, the headline every view shows.
        let msg = match (job.best, embtune_dashboards::views::best_baseline_trial(&job), job.headline()) {
            (Some(_), _, Some(h)) if job.head_to_head.is_some() => format!(
                "{id}: best {} {} ({:.2}x {}{}, side by side)",
                fmt(h.best),
                o.unit(),
                h.speedup,
                h.baseline,
                if h.tie { ", a tie" } else { "" }
            ),
            (Some((n, b)), Some((name, base)), _) => format!(
                "{id}: {}/{total} trials; best trial {n} {} {} ({:.2}x {name}, trial against trial)",
                trials.len(),
                fmt(b),
                o.unit(),
                o.speedup(base, b)
            ),
            (Some((_, b)), None, _) => format!("{id}: best {} {}", fmt(b), o.unit()),
            _ => format!("{id}: measuring baselines"),
        };
        let msg =
            if trials.len() as u64 >= total && job.status == JobStatus::Running && job.config.head_to_head_rounds > 0 {
                format!("{id}: the best plan beside every baseline, {} rounds", job.config.head_to_head_rounds)
            } else {
                msg
            };
        bar.set_message(msg);
        match job.status {
            JobStatus::Done | JobStatus::Failed(_) => {
                bar.finish_and_clear();
                return Ok((job, trials));
            }
            _ => tokio::time::sleep(Duration::from_millis(400)).await,
        }
    }
}

/// Four significant figures or more: trials of one job often differ by a few percent, which
/// "1.2k" would hide.
fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100_000.0 {
        ui::si(v)
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
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

pub fn print_summary(job: &Job, trials: &[Trial]) {
    use embtune_dashboards::views;
    let o = job.config.objective;
    println!(
        "job {} on {} ({}), objective {} ({}), started {} UTC",
        job.id,
        job.dataset,
        job.cluster.key(),
        o.name(),
        o.unit(),
        ui::utc(job.created_ms)
    );
    let base = views::best_baseline_trial(job);
    let vs_head = match &base {
        Some((name, _)) => format!("vs {name} (trial)"),
        None => "vs best baseline".into(),
    };
    let side_head = match &job.head_to_head {
        Some(h) => format!("side by side ({} rounds)", h.rounds),
        None => "side by side".into(),
    };
    let mut t =
        ui::table(&["#", "kind", "plan", "knobs", "predicted", "trial", "±95%", &side_head, &vs_head, "start", "end"]);
    let headline = job.headline();
    for tr in trials {
        let (m, ci) =
            tr.measured.as_ref().map_or(("failed".to_string(), String::new()), |m| (fmt(m.value), ci_text(m.ci)));
        let vs = match (&base, &tr.measured) {
            (Some((_, r)), Some(m)) => format!("{:.2}x", o.speedup(*r, m.value)),
            _ => String::new(),
        };
        // A baseline that does not fit never ran: its stored plan is only a stand-in, so the row
        // says why instead of describing the stand-in.
        let plan = match &tr.failure {
            Some(f) if tr.did_not_fit() => f.clone(),
            Some(f) => format!("{} (failed: {f})", tr.plan.summary()),
            None => tr.plan.summary(),
        };
        let side = job.head_to_head.as_ref().and_then(|h| h.contenders.get(&tr.n)).map_or(String::new(), |v| {
            let mark = if job.best.is_some_and(|b| b.0 == tr.n) {
                " best"
            } else if headline.as_ref().and_then(|h| h.tied_trial) == Some(tr.n) {
                " tie"
            } else {
                ""
            };
            format!("{}{mark}", fmt(*v))
        });
        let time = |ms: u64| ui::utc(ms).split(' ').nth(1).unwrap_or("-").to_string();
        t.add_row(vec![
            tr.n.to_string(),
            tr.kind.label(),
            plan,
            views::TrialParams::of(&tr.plan).text(),
            fmt(tr.predicted),
            m,
            ci,
            side,
            vs,
            time(tr.started_ms),
            time(tr.ended_ms),
        ]);
    }
    println!("{t}");
    println!("trial: each trial's own measurement (its rounds' mean); predicted: the cost model's, when proposed");
    if let Some((n, b)) = job.best {
        println!("best: trial {n}, {} {} ({})", fmt(b), o.unit(), job.figures_source());
    }
    if let Some(h) = &job.head_to_head {
        println!(
            "side by side, {} alternating rounds of {} contenders (speed-up: median of the rounds' paired ratios; a tie when they cannot tell the plans apart):",
            h.rounds,
            h.contenders.len()
        );
    }
    let reported = job.reported_baselines();
    for (k, x) in job.speedup_vs() {
        let value = reported.get(&k).copied().unwrap_or(f64::NAN);
        let how = match job
            .head_to_head
            .as_ref()
            .map(|h| (h.versus.get(&k), h.winner_baseline.as_deref() == Some(k.as_str())))
        {
            Some((_, true)) => "the best plan".to_string(),
            Some((Some(v), _)) => format!("{} (rounds {:.2}x to {:.2}x)", v.verdict.label(), v.lo, v.hi),
            _ => String::new(),
        };
        println!("  {x:.2}x {k} ({} {}) {how}", fmt(value), o.unit());
    }
    if let Some(v) = views::verdict_text(job) {
        println!("verdict: {v}");
    }
    if let (Some(c), Some(share)) = (job.ceiling, job.ceiling_share()) {
        // Over 100% is the noise of two measurements of the same bound.
        let reach = if share >= 1.0 { "is at it".to_string() } else { format!("reaches {:.0}% of it", share * 100.0) };
        println!(
            "ceiling: {} {} with every table cut to {} rows (the engine nearly free); the best plan {reach}{}",
            fmt(c),
            o.unit(),
            embtune_protocol::tuning::CEILING_ROWS,
            if share >= 0.9 { ": routing and transport, not placement, bound this cluster" } else { "" }
        );
    }
    if let Some(e) = job.model_error {
        println!("cost model: median error {:.0}% over the measured trials", e * 100.0);
    }
    if let JobStatus::Failed(e) = &job.status {
        println!("FAILED: {e}");
    }
}

/// A trial's 95% interval, or `-` after a single round (no interval).
fn ci_text(ci: f64) -> String {
    if ci.is_finite() { format!("{:.1}%", ci * 100.0) } else { "-".into() }
}
