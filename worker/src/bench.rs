//! The in-process benchmark behind `embtune bench` without a coordinator: deploy a plan on a
//! local engine, drive it closed-loop with pre-generated batches, and report throughput and
//! latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use hdrhistogram::Histogram;

use embtune_protocol::Plan;
use embtune_protocol::report::{BenchReport, CoreLoad, HugePages};
use embtune_workloads::{ModelSpec, QueryBatch};

use crate::engine::kernels::Isa;
use crate::engine::reference::Reference;
use crate::engine::{Engine, EngineConfig, EngineError, Lookup, LookupOutput, Submitter};
use crate::machine::MachineInfo;

/// What to run.
pub struct LocalBench {
    pub spec: ModelSpec,
    pub plan: Plan,
    /// CPUs to pin the engine's core threads to.
    pub cpus: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    /// Requests kept in flight.
    pub concurrency: usize,
    /// Batches rotated through; generated before timing so generation never competes for cores.
    pub pool: Vec<Arc<QueryBatch>>,
    /// Hottest rows per table, for hot-cache flows.
    pub hot: Box<dyn Fn(usize, usize) -> Vec<u32> + Send + Sync>,
    /// Check this many batches against the naive reference after timing (0: no check).
    pub verify: usize,
    pub huge_pages: bool,
    /// The highest kernel level to use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
}

/// Where a run is, for progress bars.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    Deploying,
    Deployed { seconds: f64, bytes: u64 },
    WarmingUp,
    Measuring { fraction: f64, lookups_per_s: f64 },
    Verifying { done: usize, of: usize },
}

/// Runs the benchmark. Errors only if the plan cannot be deployed; request failures are counted.
pub fn run(cfg: LocalBench, progress: &dyn Fn(Progress)) -> Result<BenchReport, EngineError> {
    let engine = Engine::start(EngineConfig {
        cpus: cfg.cpus.clone(),
        pin: cfg.cpus.len() <= MachineInfo::detect().cpus,
        huge_pages: cfg.huge_pages,
        isa: cfg.isa,
    });
    progress(Progress::Deploying);
    let mut assignment = cfg.plan.assignment(&cfg.spec, 0);
    assignment.fill_hot_ids(&cfg.plan, &cfg.hot);
    let deployed = engine.deploy(&assignment)?;
    progress(Progress::Deployed { seconds: deployed.seconds, bytes: deployed.bytes });

    progress(Progress::WarmingUp);
    let _ = drive(&engine, &cfg.pool, cfg.concurrency, cfg.warmup, &|_| {});
    let before = engine.stats();
    let started = Instant::now();
    let measured = drive(&engine, &cfg.pool, cfg.concurrency, cfg.duration, &|f| {
        progress(Progress::Measuring { fraction: f.0, lookups_per_s: f.1 })
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = engine.stats();

    let mut verified = None;
    let mut verified_batches = None;
    if cfg.verify > 0 {
        let row_types: Vec<_> = cfg.plan.tables.iter().map(|t| t.row_type).collect();
        let reference = Reference::new(&cfg.spec, &row_types);
        let n = cfg.verify.min(cfg.pool.len());
        let step = (cfg.pool.len() / n.max(1)).max(1);
        let mut ok = true;
        for i in 0..n {
            progress(Progress::Verifying { done: i, of: n });
            let b = &cfg.pool[i * step];
            let tables: Vec<u16> = (0..b.num_tables as u16).collect();
            match engine.lookup(Lookup::all_tables(b.clone())) {
                Ok(out) => {
                    if let Err(m) = reference.pool(b, &tables).check(&out.pooled) {
                        tracing::error!("verification failed on batch {}: {m}", i * step);
                        ok = false;
                    }
                }
                Err(e) => {
                    tracing::error!("verification batch {} failed: {e}", i * step);
                    ok = false;
                }
            }
        }
        verified = Some(ok);
        verified_batches = Some(n as u64);
    }

    let row_bytes: Vec<f64> =
        cfg.plan.tables.iter().zip(&cfg.spec.tables).map(|(p, t)| p.row_type.row_bytes(t.dim) as f64).collect();
    let h = &measured.latency;
    let per_core = before
        .iter()
        .zip(&after)
        .map(|(b, a)| CoreLoad {
            worker: 0,
            core: a.core as u16,
            cpu: a.cpu,
            busy: (a.busy_ns - b.busy_ns) as f64 / 1e9 / elapsed,
            tasks: a.tasks - b.tasks,
            lookups: a.lookups - b.lookups,
        })
        .collect();
    let info = MachineInfo::detect();
    Ok(BenchReport {
        mode: "local".into(),
        model: cfg.spec.name.clone(),
        plan: cfg.plan.summary(),
        workers: 1,
        cores: cfg.cpus.len(),
        batch_size: cfg.spec.batch_size,
        concurrency: cfg.concurrency,
        target_qps: None,
        duration_s: elapsed,
        batches: measured.batches,
        batches_per_s: measured.batches as f64 / elapsed,
        samples_per_s: measured.samples as f64 / elapsed,
        lookups_per_s: measured.lookups as f64 / elapsed,
        gbytes_per_s: measured.lookups_by_table.iter().zip(&row_bytes).map(|(n, b)| *n as f64 * b).sum::<f64>()
            / elapsed
            / 1e9,
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.5) as f64,
        p95_us: h.value_at_quantile(0.95) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        errors: measured.errors,
        verified,
        verified_batches,
        per_core,
        huge_pages: Some(HugePages {
            eligible_bytes: deployed.huge_eligible_bytes,
            granted_bytes: deployed.huge_page_bytes,
            thp_mode: info.thp,
        }),
        isa: engine.isa().name().into(),
        network_fraction: None,
        per_worker: Vec::new(),
        ..BenchReport::default()
    })
}

/// A closed loop kept going by its own completions: each completion records its request and
/// submits the next from the core thread that finished it. No driver thread competes with the
/// core threads for CPUs, which matters when the engine has every CPU of the machine.
struct ClosedLoop {
    submitter: Submitter,
    pool: Vec<Arc<QueryBatch>>,
    deadline: Instant,
    /// Requests to launch at most (`u64::MAX`: until the deadline).
    limit: u64,
    next: AtomicU64,
    /// Lanes still running; the last to stop signals `stopped`.
    lanes: AtomicUsize,
    stopped: crossbeam_channel::Sender<()>,
    measured: Mutex<Measured>,
}

thread_local! {
    /// Completions running inside a submission on this thread: a request that completes at once
    /// (an error) would otherwise recurse without bound.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl ClosedLoop {
    /// Launches the next request of a lane, or stops the lane when time or requests are up.
    fn launch(self: &Arc<Self>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.limit || Instant::now() >= self.deadline || DEPTH.get() > 4 {
            if self.lanes.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = self.stopped.send(());
            }
            return;
        }
        let b = self.pool[i as usize % self.pool.len()].clone();
        let me = self.clone();
        let t0 = Instant::now();
        DEPTH.set(DEPTH.get() + 1);
        self.submitter.submit(
            Lookup::all_tables(b),
            Box::new(move |r| {
                let took = t0.elapsed();
                me.record(i as usize, took, r);
                me.launch();
            }),
        );
        DEPTH.set(DEPTH.get() - 1);
    }

    fn record(&self, i: usize, took: Duration, r: Result<LookupOutput, EngineError>) {
        let b = &self.pool[i % self.pool.len()];
        let mut m = self.measured.lock();
        match r {
            Ok(out) => {
                m.batches += 1;
                m.samples += b.batch_size as u64;
                m.lookups += b.lookups() as u64;
                for (t, n) in m.lookups_by_table.iter_mut().enumerate() {
                    *n += b.table_ids(t).len() as u64;
                }
                m.latency.saturating_record(took.as_micros().max(1) as u64);
                drop(m);
                self.submitter.recycle(out.pooled);
            }
            Err(_) => m.errors += 1,
        }
    }
}

/// Runs a closed loop of `concurrency` lanes until `duration` passes or `limit` requests were
/// launched, calling `tick` with (elapsed, look-ups so far) every 100 ms.
fn closed_loop(
    engine: &Engine,
    pool: &[Arc<QueryBatch>],
    concurrency: usize,
    duration: Duration,
    limit: u64,
    tick: &dyn Fn(Duration, u64),
) -> Measured {
    let tables = pool.first().map_or(0, |b| b.num_tables as usize);
    let measured = Measured {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).unwrap(),
        batches: 0,
        samples: 0,
        lookups: 0,
        lookups_by_table: vec![0; tables],
        errors: 0,
    };
    if pool.is_empty() || duration.is_zero() || limit == 0 {
        return measured;
    }
    let lanes = concurrency.max(1);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let start = Instant::now();
    let cl = Arc::new(ClosedLoop {
        submitter: engine.submitter(),
        pool: pool.to_vec(),
        deadline: start + duration,
        limit,
        next: AtomicU64::new(0),
        lanes: AtomicUsize::new(lanes),
        stopped: tx,
        measured: Mutex::new(measured),
    });
    for _ in 0..lanes {
        cl.launch();
    }
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(100)) {
        let lookups = cl.measured.lock().lookups;
        tick(start.elapsed(), lookups);
    }
    let mut m = cl.measured.lock();
    std::mem::replace(
        &mut *m,
        Measured {
            latency: Histogram::new(1).unwrap(),
            batches: 0,
            samples: 0,
            lookups: 0,
            lookups_by_table: Vec::new(),
            errors: 0,
        },
    )
}

/// Runs `n` batches of `pool` (from `start`) with `concurrency` in flight and returns the wall
/// time: the timing loop of the criterion benches.
pub fn run_batches(engine: &Engine, pool: &[Arc<QueryBatch>], start: usize, n: u64, concurrency: usize) -> Duration {
    let rotated: Vec<Arc<QueryBatch>> = (0..pool.len()).map(|i| pool[(start + i) % pool.len()].clone()).collect();
    let t0 = Instant::now();
    closed_loop(engine, &rotated, concurrency.min(n as usize), Duration::from_secs(3600), n, &|_, _| {});
    t0.elapsed()
}

/// What a closed-loop drive measured.
pub struct Measured {
    pub latency: Histogram<u64>,
    pub batches: u64,
    pub samples: u64,
    pub lookups: u64,
    pub lookups_by_table: Vec<u64>,
    pub errors: u64,
}

/// Keeps `concurrency` requests in flight for `duration`, rotating through `pool`; latency is
/// submission to completion, in microseconds. `tick` gets (fraction done, look-ups per second).
pub fn drive(
    engine: &Engine,
    pool: &[Arc<QueryBatch>],
    concurrency: usize,
    duration: Duration,
    tick: &dyn Fn((f64, f64)),
) -> Measured {
    closed_loop(engine, pool, concurrency, duration, u64::MAX, &|elapsed, lookups| {
        let e = elapsed.as_secs_f64();
        tick(((e / duration.as_secs_f64()).min(1.0), lookups as f64 / e.max(1e-9)))
    })
}
