//! Tuning jobs, run by the coordinator against its own cluster.
//!
//! The job's logic lives in `embtune_tuner::job::Tuner`, a state machine; this module drives it:
//! deploy each proposal, measure it with the load generators (straight to the workers, as real
//! clients would query; the coordinator's own client when none is connected), commit the trial
//! to the store (flushed: a crash loses nothing committed) and ask for the next. Jobs
//! that were running when the coordinator stopped, however it stopped, resume when it starts
//! again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use embtune_protocol::tuning::{
    CeilingLoad, ClusterDesc, HeadToHead, Job, JobConfig, JobStatus, Measured, Objective, Trial, TrialKind,
};
use embtune_protocol::wire::{LoadSpec, WireError};
use embtune_protocol::{Topology, WorkerShape};
use embtune_tuner::cost::{Coefficients, Node};
use embtune_tuner::job::{Context, Tuner, adapt_plan};
use embtune_tuner::propose::SearchBudget;
use embtune_tuner::rules::MemoryCaps;
use embtune_tuner::store::{BestRecord, Store, StoreError, new_job_id};

use crate::error::CoordinatorError;
use embtune_workloads::{AccessProfile, BatchGenerator, ModelSpec};

/// The batches a job's load generators send: `count` batches of the workload's generator from
/// index `first`. Every process generates the same batch for an index, so a window is all a
/// load generator needs to be told.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    pub first: u64,
    pub count: u32,
}

use crate::server::Coordinator;

/// Milliseconds since the Unix epoch, for the times jobs and trials are stamped with. The clock
/// is read here, in the process that runs jobs, and handed to the tuner and the records: the
/// pure crates keep no clock of their own (ARCHITECTURE.md, "pure logic does no network I/O").
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What the cluster looks like to the tuner now: the healthy workers, their shapes and costs.
pub fn context_parts(c: &Coordinator) -> (Topology, Vec<Node>, ClusterDesc) {
    let status = c.status();
    let hellos = c.hellos();
    let mut workers = Vec::new();
    let mut nodes = Vec::new();
    for (w, h) in status.workers.iter().zip(&hellos) {
        if !w.healthy {
            continue;
        }
        workers.push(WorkerShape { cores: w.cores, memory_bytes: w.memory_bytes, core_memory_bytes: None });
        let mut coef = Coefficients::default();
        if let Some(cal) = &h.calibration {
            // Calibrated per-line costs for rows of four lines.
            coef.hit_ns = cal.ns_per_row_l1 / 4.0;
            coef.llc_ns = cal.ns_per_row_llc / 4.0;
            coef.dram_ns = cal.ns_per_row_dram / 4.0;
            coef.task_ns = cal.ns_per_request.max(coef.task_ns * 0.1);
        }
        nodes.push(Node {
            caps: MemoryCaps {
                l2_bytes: h.l2_bytes,
                llc_bytes: h.llc_bytes,
                llc_cores: h.llc_cores,
                huge_pages: h.huge_pages,
            },
            coef,
        });
    }
    let cpu_model = hellos.first().map(|h| h.cpu_model.clone()).unwrap_or_default();
    let topo = Topology::of(workers.clone());
    (topo, nodes, ClusterDesc { workers, cpu_model })
}

impl Coordinator {
    /// Creates a job and starts it. Refuses, before deploying anything, a model that cannot fit
    /// the cluster's memory at all.
    pub fn submit_job(&self, dataset: String, spec: ModelSpec, config: JobConfig) -> Result<String, CoordinatorError> {
        let refused = |m: String| Err(CoordinatorError::Refused(m));
        spec.validate().map_err(|e| CoordinatorError::Refused(e.to_string()))?;
        let (topo, _, cluster) = context_parts(self);
        if topo.workers.is_empty() {
            return refused("no healthy worker to tune on: start workers first".into());
        }
        let memory: u64 = topo.workers.iter().map(|w| w.memory_bytes).sum();
        if let Some(t) = spec.tables.iter().find(|t| t.bytes() > memory) {
            return refused(format!(
                "table `{}` needs {} but the cluster's workers hold {} together: no plan can place it; add workers or memory, or pass a smaller --scale",
                t.name,
                embtune_protocol::plan::human_bytes(t.bytes()),
                embtune_protocol::plan::human_bytes(memory)
            ));
        }
        if spec.total_bytes() > memory {
            return refused(format!(
                "the model needs {} but the cluster's workers hold {} together; add workers or pass a smaller --scale",
                embtune_protocol::plan::human_bytes(spec.total_bytes()),
                embtune_protocol::plan::human_bytes(memory)
            ));
        }
        if config.trials == 0 {
            return refused("a job needs at least one trial".into());
        }
        embtune_tuner::job::check_baseline_plans(&config, &spec).map_err(CoordinatorError::Refused)?;
        let now = now_ms();
        let job = Job::new(new_job_id(now, spec.digest()), dataset, spec, cluster, config, now);
        self.store().put_job(&job)?;
        let id = job.id.clone();
        self.spawn_job(id.clone());
        Ok(id)
    }

    /// Starts (again) a job that is not running.
    pub fn resume_job(&self, id: &str) -> Result<(), CoordinatorError> {
        let mut job = self.store().job(id)?;
        if job.status == JobStatus::Done {
            return Ok(());
        }
        if self.job_running(id) {
            // A job whose thread has recorded its failure (in the store, or in `unwritten` when
            // the disk was full) but not yet ended: resuming now would be a no-op that looks
            // like success, so the caller is told to try again.
            if job.status != JobStatus::Running || self.unwritten().lock().contains_key(id) {
                return Err(CoordinatorError::Refused(format!(
                    "job {id} is still stopping; resume it again in a moment"
                )));
            }
            return Ok(());
        }
        self.unwritten().lock().remove(id);
        job.status = JobStatus::Running;
        self.store().put_job(&job)?;
        self.spawn_job(id.to_string());
        Ok(())
    }

    /// Resumes every job that was running when the coordinator last stopped.
    pub fn resume_interrupted(&self) {
        let jobs = match self.store().jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot read the store's jobs: {e}");
                return;
            }
        };
        for j in jobs {
            if matches!(j.status, JobStatus::Running | JobStatus::Interrupted) {
                tracing::info!("resuming job {} ({} on {})", j.id, j.dataset, j.cluster.key());
                self.spawn_job(j.id);
            }
        }
    }

    fn spawn_job(&self, id: String) {
        let stop = Arc::new(AtomicBool::new(false));
        if !self.register_job(&id, stop.clone()) {
            return;
        }
        let me = self.clone();
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name(format!("tune-{id}"))
            .spawn(move || {
                let result = run_job(&me, &rt, &id, &stop);
                if let Err(e) = &result {
                    tracing::error!("job {id} failed: {e}");
                    match me.store().job(&id) {
                        Ok(mut j) => {
                            j.status = JobStatus::Failed(e.to_string());
                            j.updated_ms = now_ms();
                            if let Err(w) = me.store().put_job(&j) {
                                tracing::error!("job {id}: its failure is not in the store either: {w}");
                            }
                        }
                        Err(r) => tracing::error!("job {id}: its failure is not in the store either: {r}"),
                    }
                }
                me.unregister_job(&id);
            })
            .expect("spawning a job thread");
    }
}

/// Jobs whose failure could not be written to the store (a full disk): their record as the
/// store last held it with the failure as status, and their committed trials. Clients see them
/// so rather than a job that stays `running` for good; resuming clears them.
pub(crate) type Unwritten = parking_lot::Mutex<std::collections::HashMap<String, (Job, Vec<Trial>)>>;

impl Coordinator {
    /// A job and its trials as clients should see them.
    pub fn job_detail(&self, id: &str) -> Result<(Job, Vec<Trial>), CoordinatorError> {
        let unwritten = self.unwritten().lock().get(id).cloned();
        if let Some((job, trials)) = unwritten {
            // The store's trials once it reads again (what is on disk is what counts).
            return Ok((job, self.store().trials(id).unwrap_or(trials)));
        }
        Ok((self.store().job(id)?, self.store().trials(id)?))
    }

    /// Every job, as clients should see them.
    pub fn list_jobs(&self) -> Result<Vec<Job>, CoordinatorError> {
        let unwritten = self.unwritten().lock().clone();
        let mut jobs = self.store().jobs()?;
        for j in jobs.iter_mut() {
            if let Some((u, _)) = unwritten.get(&j.id) {
                j.status = u.status.clone();
            }
        }
        Ok(jobs)
    }

    /// The job cannot go on because its trial or record could not be written: it fails with a
    /// reason that says what to do, in the store if it can still be written and for clients
    /// anyway. The trial that was not written is not among the trials shown.
    fn store_failed(&self, tuner: &Tuner, uncommitted: Option<u32>, e: StoreError) -> CoordinatorError {
        let e = CoordinatorError::JobStore { job: tuner.job.id.clone(), source: e };
        let mut job = tuner.job.clone();
        job.status = JobStatus::Failed(e.to_string());
        job.updated_ms = now_ms();
        // As the store holds them: through JSON, whose floats may differ from these in the
        // last bit, so that a client sees the same trials before and after the store reads again.
        let trials: Vec<Trial> = tuner
            .trials
            .iter()
            .filter(|t| Some(t.n) != uncommitted)
            .map(|t| {
                serde_json::to_vec(t).ok().and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_else(|| t.clone())
            })
            .collect();
        self.unwritten().lock().insert(job.id.clone(), (job, trials));
        e
    }
}

/// Runs a job to its end. Errors are reasons the job cannot go on at all.
fn run_job(c: &Coordinator, rt: &tokio::runtime::Handle, id: &str, stop: &AtomicBool) -> Result<(), CoordinatorError> {
    let store: &Store = c.store();
    let job = store.job(id)?;
    let trials = store.trials(id)?;
    let spec = job.spec.clone();
    let baselines = embtune_tuner::job::baseline_count(&job.config);
    tracing::info!(
        "job {id}: {} trials done, {} to go",
        trials.len(),
        job.config.trials as usize + baselines - trials.len().min(job.config.trials as usize + baselines)
    );
    // The workload the trials are measured with, and the profile the model and hot caches use.
    let generator = BatchGenerator::new(&spec).map_err(|e| CoordinatorError::Refused(e.to_string()))?;
    let profile = embtune_workloads::profile::profile_generator(&generator);
    let fresh = trials.is_empty();
    let mut tuner = Tuner::new(job, trials);
    wait_for_workers(c, stop, Duration::from_secs(120))?;
    let pool = payload_pool(c, &generator);
    let client_memory = tuner.job.config.client_memory_bytes;
    if fresh {
        // Connections to the workers start in slow start with small datagrams; load them for a
        // while first, so that the first trial measured (a baseline) is not handicapped.
        let (topology, _, _) = context_parts(c);
        if let Ok(plan) = embtune_tuner::Strategy::SizeThreshold.plan(&spec, &topology, &Default::default())
            && rt.block_on(c.deploy(spec.clone(), plan)).is_ok()
        {
            let warm = JobConfig { objective: Objective::Throughput, ..tuner.job.config.clone() };
            let _ =
                rt.block_on(load_round(c, pool, &warm, Duration::from_secs_f64((3.0 * warm.round_s).clamp(1.0, 5.0))));
        }
    }
    // Stopped (the coordinator is shutting down): the job resumes from what is stored.
    let interrupted = |tuner: &mut Tuner| {
        tuner.job.status = JobStatus::Interrupted;
        let _ = store.put_job(&tuner.job);
        Ok(())
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return interrupted(&mut tuner);
        }
        let (topology, nodes, _) = context_parts(c);
        if topology.workers.is_empty() {
            wait_for_workers(c, stop, Duration::from_secs(120))?;
            continue;
        }
        let topology = topology.with_client_memory(client_memory);
        // The search for one proposal may take a minute (six annealing attempts of ten seconds
        // at most, as before the tuner stopped reading the clock); past that it keeps the best
        // plan it has.
        let deadline = Instant::now() + SEARCH_TIME;
        let out_of_time = move || Instant::now() > deadline;
        let ctx = Context {
            spec: &spec,
            profiles: &profile.tables,
            topology,
            nodes,
            networked: true,
            clients: c.loadgens().max(1),
            search: SearchBudget { iterations: SearchBudget::default().iterations, out_of_time: &out_of_time },
        };
        let planning = Instant::now();
        let Some(mut p) = tuner.next(&ctx) else { break };
        p.planning_ms = planning.elapsed().as_millis() as u64;
        let started = now_ms();
        let t0 = Instant::now();
        let outcome = match p.unfit_failure() {
            Some(why) => Err(why),
            None => match rt.block_on(c.deploy_profiled(spec.clone(), p.plan.clone(), &profile)) {
                Err(e) => Err(CoordinatorError::Deploy(e).to_string()),
                Ok(_) => rt.block_on(measure(c, pool, &tuner.job.config)).map_err(|e| e.to_string()),
            },
        };
        if let Err(e) = &outcome {
            tracing::warn!("job {id} trial {} ({}) failed: {e}", tuner.trials.len(), p.kind.label());
        }
        let trial = tuner.record(&ctx, p, outcome, started, now_ms(), t0.elapsed().as_secs_f64());
        // Commit before anything else: the trial is on disk from here on.
        store.add_trial(&trial).map_err(|e| c.store_failed(&tuner, Some(trial.n), e))?;
        store.put_job(&tuner.job).map_err(|e| c.store_failed(&tuner, None, e))?;
        c.notify_trial(&tuner.job, &trial);
    }
    if tuner.job.head_to_head.is_none() && tuner.job.config.head_to_head_rounds > 0 {
        tracing::info!(
            "job {id}: the best plan beside every baseline, {} alternating rounds",
            tuner.job.config.head_to_head_rounds
        );
        match head_to_head(c, rt, &spec, &profile, pool, &tuner, stop) {
            // Kept on the job at once, so that a stop while the ceiling is measured does not
            // lose the side-by-side rounds.
            Ok(Some(h)) => tuner.job.head_to_head = Some(h),
            // Resumes with the head-to-head, its trials being all done.
            Ok(None) if stop.load(Ordering::Relaxed) => return interrupted(&mut tuner),
            Ok(None) => {}
            // The trials stand on their own; only the side-by-side figures are missing.
            Err(e) => tracing::warn!("job {id}: no head-to-head: {e}"),
        }
    }
    if tuner.job.ceiling.is_none() && tuner.job.config.head_to_head_rounds > 0 {
        tracing::info!(
            "job {id}: the cluster's ceiling, every table cut to {} rows",
            embtune_protocol::tuning::CEILING_ROWS
        );
        match ceiling(c, rt, &spec, &tuner.job.config, stop) {
            Ok(Some((v, load))) => {
                tuner.job.ceiling = Some(v);
                tuner.job.ceiling_load = Some(load);
            }
            Ok(None) if stop.load(Ordering::Relaxed) => return interrupted(&mut tuner),
            Ok(None) => {}
            Err(e) => tracing::warn!("job {id}: no ceiling: {e}"),
        }
    }
    tuner.finish(now_ms());
    store.put_job(&tuner.job)?;
    if let Some(best) = tuner.best() {
        let rec = BestRecord {
            dataset: tuner.job.dataset.clone(),
            cluster: tuner.job.cluster.key(),
            job: tuner.job.id.clone(),
            trial: best.n,
            // The job's own figure for it: the head-to-head's when it has one.
            value: tuner.job.best.map_or(best.measured.as_ref().unwrap().value, |b| b.1),
        };
        let objective = tuner.job.config.objective;
        store.offer_best(&rec, |a, b| objective.better(a, b))?;
        // Leave the cluster serving the best plan found.
        if let Err(e) = rt.block_on(c.deploy_profiled(spec.clone(), best.plan.clone(), &profile)) {
            tracing::warn!("job {id}: could not redeploy the best plan: {}", e.message);
        }
    }
    tracing::info!("job {id} done: best {:?}", tuner.job.best);
    Ok(())
}

/// The most time the tuner's search may take for one proposal.
const SEARCH_TIME: Duration = Duration::from_secs(60);

/// Search trials taken into the head-to-head beside the baselines: the best few by their own
/// measurement, since the one that measured best may only have been the luckiest.
const HEAD_TO_HEAD_SEARCH: usize = 3;

/// Measures the best search trials and every measured baseline again, side by side: in each
/// round every contender is deployed and loaded once, starting one further along the list each
/// round so that none always runs first; the hot caches are filled from the job's `profile`.
/// `None` when asked to stop, or when there is nothing to compare.
fn head_to_head(
    c: &Coordinator,
    rt: &tokio::runtime::Handle,
    spec: &ModelSpec,
    profile: &AccessProfile,
    pool: Pool,
    tuner: &Tuner,
    stop: &AtomicBool,
) -> Result<Option<HeadToHead>, CoordinatorError> {
    let cfg = &tuner.job.config;
    let (topology, _, _) = context_parts(c);
    let topology = topology.with_client_memory(cfg.client_memory_bytes);
    if topology.workers.is_empty() {
        return Err(CoordinatorError::NoWorkers(Duration::ZERO));
    }
    let mut contenders = Vec::new();
    let mut baselines = BTreeMap::new();
    for n in tuner.head_to_head_contenders(HEAD_TO_HEAD_SEARCH) {
        let Some(t) = tuner.trials.iter().find(|t| t.n == n) else { continue };
        if let TrialKind::Baseline(name) = &t.kind {
            baselines.insert(n, name.clone());
        }
        contenders.push((n, t.kind.label(), adapt_plan(&t.plan, &topology)));
    }
    if contenders.len() < 2 {
        return Ok(None);
    }
    let mut rounds = Vec::new();
    for r in 0..cfg.head_to_head_rounds as usize {
        let mut values = BTreeMap::new();
        for i in 0..contenders.len() {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let (n, what, plan) = &contenders[(i + r) % contenders.len()];
            rt.block_on(c.deploy_profiled(spec.clone(), plan.clone(), profile)).map_err(|e| {
                CoordinatorError::Deploy(WireError::new(e.kind, format!("trial {n} ({what}): {}", e.message)))
            })?;
            let v = rt
                .block_on(measure_once(c, pool, cfg))
                .map_err(|e| CoordinatorError::Measure(format!("measuring trial {n} ({what}): {e}")))?;
            values.insert(*n, v);
        }
        rounds.push(values);
    }
    Ok(HeadToHead::from_rounds(cfg.objective, &rounds, &baselines))
}

/// The batches a job loads the cluster with: enough of them that the rows they read per pass
/// are four times the workers' last-level caches together (workers on one host each count the
/// shared cache, which only makes the pool larger), within 256 MiB of ids. A fixed pool sized
/// for a 32 MiB cache fit in the 300 MiB LLC of a 16-core host, where it measures cache hits
/// (ARCHITECTURE.md, "a benchmark's batches outgrow the last-level cache").
fn payload_pool(c: &Coordinator, g: &BatchGenerator) -> Pool {
    let llc = c.hellos().iter().map(|h| h.llc_bytes).sum::<u64>().max(32 << 20);
    Pool { first: 0, count: g.pool_size_for(llc, 256 << 20) as u32 }
}

/// Measures a job's ceiling: its shape with every table cut to
/// [`CEILING_ROWS`](embtune_protocol::tuning::CEILING_ROWS) rows and
/// replicated, one round per head-to-head round, the median. The engine is then nearly free, so
/// this is what routing, transport and reduction allow on this cluster. `None` when asked to
/// stop. The real plan is deployed again by the caller.
fn ceiling(
    c: &Coordinator,
    rt: &tokio::runtime::Handle,
    spec: &ModelSpec,
    cfg: &JobConfig,
    stop: &AtomicBool,
) -> Result<Option<(f64, CeilingLoad)>, CoordinatorError> {
    let free = spec.free_engine_shape(embtune_protocol::tuning::CEILING_ROWS);
    let (topology, _, _) = context_parts(c);
    let plan = embtune_tuner::Strategy::AllReplicate
        .plan(&free, &topology, &Default::default())
        .map_err(|e| CoordinatorError::Refused(format!("planning the free-engine shape: {e}")))?;
    let pool = payload_pool(c, &BatchGenerator::new(&free).map_err(|e| CoordinatorError::Refused(e.to_string()))?);
    rt.block_on(c.deploy(free, plan)).map_err(|e| {
        CoordinatorError::Deploy(WireError::new(e.kind, format!("the free-engine shape: {}", e.message)))
    })?;
    let mut values = Vec::new();
    let (mut cpu_s, mut cpu_avail, mut bytes, mut secs) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..cfg.head_to_head_rounds.max(1) {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let r = rt.block_on(measure_round(c, pool, cfg))?;
        values.push(r.value(cfg.objective));
        cpu_s += r.cpu_s;
        cpu_avail += r.cpus * r.secs;
        bytes += r.wire_bytes as f64;
        secs += r.secs;
    }
    let load = CeilingLoad {
        client_cpu_share: if cpu_avail > 0.0 { cpu_s / cpu_avail } else { 0.0 },
        wire_bytes_per_s: bytes / secs.max(1e-9),
    };
    Ok(Some((embtune_protocol::tuning::median(&values), load)))
}

/// One measurement round of the deployed plan after a short warm-up: the objective's value.
async fn measure_once(c: &Coordinator, pool: Pool, cfg: &JobConfig) -> Result<f64, CoordinatorError> {
    Ok(measure_round(c, pool, cfg).await?.value(cfg.objective))
}

/// One measurement round of the deployed plan after a short warm-up.
async fn measure_round(c: &Coordinator, pool: Pool, cfg: &JobConfig) -> Result<Round, CoordinatorError> {
    let _ = load_round(c, pool, cfg, Duration::from_millis(300)).await;
    let r = load_round(c, pool, cfg, Duration::from_secs_f64(cfg.round_s.max(0.05))).await;
    r.check()?;
    Ok(r)
}

fn wait_for_workers(c: &Coordinator, stop: &AtomicBool, timeout: Duration) -> Result<(), CoordinatorError> {
    let t0 = Instant::now();
    loop {
        if c.status().workers.iter().any(|w| w.healthy) || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(CoordinatorError::NoWorkers(timeout));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Measures the deployed plan for the job's objective: rounds of load until the 95% interval
/// of the rounds' mean is within `ci_target` of it, or `max_rounds`.
pub async fn measure(c: &Coordinator, pool: Pool, cfg: &JobConfig) -> Result<Measured, CoordinatorError> {
    let round = Duration::from_secs_f64(cfg.round_s.max(0.05));
    // Warm-up: caches, connections, the coordinator's buffers.
    let _ = load_round(c, pool, cfg, Duration::from_millis(300)).await;
    let mut values = Vec::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let (mut batches, mut errors, mut secs) = (0u64, 0u64, 0f64);
    let mut first_error = None;
    loop {
        let r = load_round(c, pool, cfg, round).await;
        batches += r.batches;
        errors += r.errors;
        secs += r.secs;
        values.push(r.value(cfg.objective));
        first_error = first_error.or(r.first_error);
        hist.add(&r.hist).map_err(|e| CoordinatorError::Measure(format!("merging the rounds' histograms: {e}")))?;
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        let ci = if n >= 2.0 { 2.0 * sd / n.sqrt() / mean.abs().max(1e-12) } else { f64::INFINITY };
        if (n >= 2.0 && ci <= cfg.ci_target) || n >= cfg.max_rounds.max(1) as f64 {
            failed(batches, errors, first_error.as_deref())?;
            return Ok(Measured {
                value: mean,
                rounds: values,
                ci,
                batches_per_s: batches as f64 / secs,
                mean_us: hist.mean(),
                p50_us: hist.value_at_quantile(0.5) as f64,
                p99_us: hist.value_at_quantile(0.99) as f64,
                errors,
            });
        }
    }
}

struct Round {
    hist: Histogram<u64>,
    batches: u64,
    errors: u64,
    secs: f64,
    first_error: Option<String>,
    /// The load generators' CPU seconds and CPUs, and the bytes on the wire.
    cpu_s: f64,
    cpus: f64,
    wire_bytes: u64,
}

impl Round {
    /// The objective's value over this round.
    fn value(&self, objective: Objective) -> f64 {
        match objective {
            Objective::Throughput => self.batches as f64 / self.secs,
            Objective::Mean => self.hist.mean(),
            Objective::P99 { .. } => self.hist.value_at_quantile(0.99) as f64,
        }
    }

    fn check(&self) -> Result<(), CoordinatorError> {
        failed(self.batches, self.errors, self.first_error.as_deref())
    }
}

/// A measurement with more than 1% of its queries failed, or none completed, is no measurement.
fn failed(batches: u64, errors: u64, first_error: Option<&str>) -> Result<(), CoordinatorError> {
    let fail = |m: String| Err(CoordinatorError::Measure(m));
    if errors * 100 > batches + errors {
        return fail(format!("{errors} of {} queries failed: {}", batches + errors, first_error.unwrap_or_default()));
    }
    if batches == 0 {
        return fail(format!("no query completed: {}", first_error.unwrap_or_default()));
    }
    Ok(())
}

/// One round of load, straight to the workers from the load generators: closed loop for
/// throughput (at the configured concurrency) and mean (one in flight); open loop at the
/// target rate for p99.
async fn load_round(c: &Coordinator, pool: Pool, cfg: &JobConfig, time: Duration) -> Round {
    let t0 = Instant::now();
    let failed_round = |e: String| Round {
        hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
        batches: 0,
        errors: 1,
        secs: t0.elapsed().as_secs_f64().max(1e-3),
        first_error: Some(e),
        cpu_s: 0.0,
        cpus: 0.0,
        wire_bytes: 0,
    };
    let Some(epoch) = c.active().map(|a| a.plan_id) else {
        return failed_round("nothing is deployed".into());
    };
    let (concurrency, qps) = match cfg.objective {
        Objective::P99 { qps } if qps > 0.0 => (1, qps),
        Objective::Mean => (1, 0.0),
        _ => (cfg.concurrency.max(1), 0.0),
    };
    let spec = LoadSpec {
        epoch,
        pool_first: pool.first,
        pool_batches: pool.count,
        concurrency,
        qps,
        warmup_ms: 0,
        duration_ms: time.as_millis() as u32,
        wire: cfg.wire,
        verify: 0,
        seed: cfg.seed,
    };
    match c.run_load(cfg.loadgens, &spec).await {
        Ok(r) => Round {
            hist: embtune_client::loadgen::decode_histogram(&r.histogram),
            batches: r.queries,
            errors: r.errors,
            secs: r.elapsed_s.max(1e-3),
            first_error: r.first_error,
            cpu_s: r.cpu_s,
            cpus: r.cpus,
            wire_bytes: r.wire_bytes,
        },
        Err(e) => failed_round(e.message),
    }
}

/// Profiles of a spec, for reports that need them outside a job.
pub fn profile_spec(spec: &ModelSpec) -> Result<AccessProfile, CoordinatorError> {
    let g = BatchGenerator::new(spec).map_err(|e| CoordinatorError::Refused(e.to_string()))?;
    Ok(embtune_workloads::profile::profile_generator(&g))
}
