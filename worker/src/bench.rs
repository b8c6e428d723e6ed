//! The in-process benchmark behind `embtune bench` without a coordinator: deploy a plan on a
//! local engine, drive it closed-loop with pre-generated batches, and report throughput and
//! latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use embtune_protocol::Plan;
use embtune_protocol::report::{BenchReport, CoreLoad, HugePages};
use embtune_workloads::{ModelSpec, QueryBatch};

use crate::engine::reference::Reference;
use crate::engine::{Engine, EngineConfig, EngineError, Lookup};
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
        isa: None,
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
    })
}

/// Whether the machine has a CPU the engine does not use, on which a driver may spin.
fn spare_cpu(engine: &Engine) -> bool {
    engine.cores() < std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Receives a completion. With a spare CPU the driver spins for a while first: a parked
/// receiver costs the engine's core a futex wake-up per request, about 5% of a 60 us batch.
fn recv<T>(rx: &crossbeam_channel::Receiver<T>, spin: bool) -> Result<T, crossbeam_channel::RecvError> {
    if spin {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(2) {
            match rx.try_recv() {
                Ok(v) => return Ok(v),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(crossbeam_channel::RecvError),
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
    }
    rx.recv()
}

/// Runs `n` batches of `pool` (from `start`) with `concurrency` in flight and returns the wall
/// time: the timing loop of the criterion benches.
pub fn run_batches(engine: &Engine, pool: &[Arc<QueryBatch>], start: usize, n: u64, concurrency: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::unbounded();
    let t0 = Instant::now();
    let submit = |i: usize| {
        let tx = tx.clone();
        engine.submit(
            Lookup::all_tables(pool[i % pool.len()].clone()),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    };
    let mut sent = 0u64;
    while sent < n.min(concurrency.max(1) as u64) {
        submit(start + sent as usize);
        sent += 1;
    }
    let spin = spare_cpu(engine);
    for _ in 0..n {
        if let Ok(Ok(out)) = recv(&rx, spin) {
            engine.recycle(out.pooled);
        }
        if sent < n {
            submit(start + sent as usize);
            sent += 1;
        }
    }
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
/// submission to completion, in microseconds.
pub fn drive(
    engine: &Engine,
    pool: &[Arc<QueryBatch>],
    concurrency: usize,
    duration: Duration,
    tick: &dyn Fn((f64, f64)),
) -> Measured {
    let tables = pool.first().map_or(0, |b| b.num_tables as usize);
    let mut m = Measured {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).unwrap(),
        batches: 0,
        samples: 0,
        lookups: 0,
        lookups_by_table: vec![0; tables],
        errors: 0,
    };
    if pool.is_empty() || duration.is_zero() {
        return m;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    let submit = |i: usize| {
        let tx = tx.clone();
        let b = pool[i % pool.len()].clone();
        let t0 = Instant::now();
        engine.submit(
            Lookup::all_tables(b),
            Box::new(move |r| {
                let _ = tx.send((i, t0.elapsed(), r));
            }),
        );
    };
    let start = Instant::now();
    let deadline = start + duration;
    let mut next = 0usize;
    let mut inflight = 0usize;
    for _ in 0..concurrency.max(1) {
        submit(next);
        next += 1;
        inflight += 1;
    }
    let mut last_tick = start;
    let spin = spare_cpu(engine);
    while inflight > 0 {
        let Ok((i, took, r)) = recv(&rx, spin) else { break };
        inflight -= 1;
        match r {
            Ok(out) => {
                let b = &pool[i % pool.len()];
                m.batches += 1;
                m.samples += b.batch_size as u64;
                m.lookups += b.lookups() as u64;
                for (t, n) in m.lookups_by_table.iter_mut().enumerate() {
                    *n += b.table_ids(t).len() as u64;
                }
                m.latency.saturating_record(took.as_micros().max(1) as u64);
                engine.recycle(out.pooled);
            }
            Err(_) => m.errors += 1,
        }
        let now = Instant::now();
        if now < deadline {
            submit(next);
            next += 1;
            inflight += 1;
        }
        if now.duration_since(last_tick) > Duration::from_millis(100) {
            last_tick = now;
            let f = (now - start).as_secs_f64() / duration.as_secs_f64();
            tick((f.min(1.0), m.lookups as f64 / (now - start).as_secs_f64()));
        }
    }
    m
}
