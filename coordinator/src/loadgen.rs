//! Load generation against a coordinator.
//!
//! Closed loop: a fixed number of queries in flight, a new one as soon as one returns.
//! Open loop: Poisson arrivals at a target rate (MLPerf's Server scenario), each query timed
//! from its *scheduled* arrival, so that a slow system cannot hide queueing by delaying the
//! next arrival (coordinated omission). Warm-up is excluded from both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand_core::{Rng, SeedableRng};

use crate::client::{Client, PreparedQuery};

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub concurrency: usize,
    /// Open loop at this many queries per second; `None` for closed loop.
    pub qps: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Queries outstanding at most in open loop, beyond which arrivals count as errors.
    pub max_outstanding: usize,
}

/// What a run measured (after warm-up).
pub struct LoadResult {
    pub latency: Histogram<u64>,
    pub queries: u64,
    pub samples: u64,
    pub lookups: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sums over replies of the slowest worker engine time and of the coordinator time, us.
    pub engine_us: u64,
    pub coordinator_us: u64,
    pub first_error: Option<String>,
}

struct Shared {
    hist: Mutex<Histogram<u64>>,
    queries: AtomicU64,
    samples: AtomicU64,
    lookups: AtomicU64,
    errors: AtomicU64,
    engine_us: AtomicU64,
    coordinator_us: AtomicU64,
    measuring: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn record(
        &self,
        q: &PreparedQuery,
        started: Instant,
        r: Result<(embtune_protocol::wire::PooledHead, Vec<f32>), embtune_transport::TransportError>,
    ) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        match r {
            Ok((h, _)) => {
                self.hist.lock().saturating_record(started.elapsed().as_micros().max(1) as u64);
                self.queries.fetch_add(1, Ordering::Relaxed);
                self.samples.fetch_add(q.head.batch_size as u64, Ordering::Relaxed);
                self.lookups.fetch_add(q.lookups, Ordering::Relaxed);
                self.engine_us.fetch_add(h.engine_us as u64, Ordering::Relaxed);
                self.coordinator_us.fetch_add(h.coordinator_us as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Runs the load; `tick` is called about ten times a second with (fraction done, queries/s).
/// Queries are spread over `clients` (closed-loop lane `i` uses connection `i mod n`): one QUIC
/// connection is driven by one task on each side, so a single connection caps the bytes per
/// second that a fast cluster can be offered.
pub async fn run(
    clients: &[Client],
    pool: Arc<Vec<PreparedQuery>>,
    cfg: &LoadConfig,
    tick: &(dyn Fn(f64, f64) + Sync),
) -> LoadResult {
    let shared = Arc::new(Shared {
        hist: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()),
        queries: AtomicU64::new(0),
        samples: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        engine_us: AtomicU64::new(0),
        coordinator_us: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    match cfg.qps {
        None => {
            for lane in 0..cfg.concurrency.max(1) {
                let client = clients[lane % clients.len()].clone();
                let (pool, shared, stop, next) = (pool.clone(), shared.clone(), stop.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let q = &pool[next.fetch_add(1, Ordering::Relaxed) as usize % pool.len()];
                        let t0 = Instant::now();
                        let r = client.query_prepared(q).await;
                        shared.record(q, t0, r);
                    }
                }));
            }
        }
        Some(qps) => {
            let clients = clients.to_vec();
            let (pool, shared, stop) = (pool.clone(), shared.clone(), stop.clone());
            let max_out = cfg.max_outstanding.max(1);
            tasks.push(tokio::spawn(async move {
                let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(0xa11);
                let outstanding = Arc::new(AtomicU64::new(0));
                let start = Instant::now();
                let mut at = 0.0f64;
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Exponential inter-arrival times: a Poisson process at `qps`.
                    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    at += -u.ln() / qps;
                    let due = start + Duration::from_secs_f64(at);
                    tokio::time::sleep_until(due.into()).await;
                    if outstanding.load(Ordering::Relaxed) as usize >= max_out {
                        if shared.measuring.load(Ordering::Relaxed) {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                            shared.first_error.lock().get_or_insert_with(|| {
                                format!(
                                    "over {max_out} queries outstanding: the cluster cannot sustain {qps} queries/s"
                                )
                            });
                        }
                        continue;
                    }
                    let q = pool[i % pool.len()].clone();
                    i += 1;
                    let client = clients[i % clients.len()].clone();
                    let (shared, outstanding) = (shared.clone(), outstanding.clone());
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let r = client.query_prepared(&q).await;
                        shared.record(&q, due, r);
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }));
        }
    }
    tokio::time::sleep(cfg.warmup).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    while t0.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_millis(100).min(cfg.duration)).await;
        let el = t0.elapsed().as_secs_f64();
        tick((el / cfg.duration.as_secs_f64()).min(1.0), shared.queries.load(Ordering::Relaxed) as f64 / el.max(1e-9));
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let latency = shared.hist.lock().clone();
    LoadResult {
        latency,
        queries: shared.queries.load(Ordering::Relaxed),
        samples: shared.samples.load(Ordering::Relaxed),
        lookups: shared.lookups.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed,
        engine_us: shared.engine_us.load(Ordering::Relaxed),
        coordinator_us: shared.coordinator_us.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().clone(),
    }
}
