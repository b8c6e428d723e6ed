//! Load generation: closed-loop and open-loop (Poisson) load on a cluster, straight to the
//! workers or relayed by the coordinator.
//!
//! Closed loop: a fixed number of queries in flight, a new one as soon as one returns.
//! Open loop: Poisson arrivals at a target rate (MLPerf's Server scenario), each query timed
//! from its *scheduled* arrival, so that a slow system cannot hide queueing by delaying the
//! next arrival (coordinated omission). Warm-up is excluded from both.
//!
//! A round's figures become a [`LoadReport`], the wire form that load generator processes send
//! back and that [`merge`] adds up (latency histograms in HdrHistogram's V2 serialisation, so
//! percentiles merge exactly).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use parking_lot::Mutex;
use rand_core::{Rng, SeedableRng};

use embtune_protocol::wire::{LoadReport, PooledHead, WireFormat};
use embtune_transport::TransportError;
use embtune_worker::engine::reference::Reference;
use embtune_workloads::QueryBatch;

use crate::control::{CoordinatorClient, PreparedQuery};
use crate::direct::Client;

/// What to load, and over which path.
#[derive(Clone)]
pub enum Target {
    /// Straight to the workers, by the client's routing table.
    Direct { client: Client, pool: Arc<Vec<QueryBatch>> },
    /// Through the coordinator's relay, over these connections (one connection is driven by one
    /// task on each side, so a single one caps the bytes a fast cluster can be offered).
    Relay { clients: Vec<CoordinatorClient>, pool: Arc<Vec<PreparedQuery>> },
}

impl Target {
    fn len(&self) -> usize {
        match self {
            Target::Direct { pool, .. } => pool.len(),
            Target::Relay { pool, .. } => pool.len(),
        }
    }

    /// Sends batch `i` of the pool (query slot `lane` picks the relay connection): its samples,
    /// look-ups, wire bytes and the reply's head.
    async fn send(&self, i: usize, lane: usize) -> Result<(u64, u64, u64, PooledHead), TransportError> {
        match self {
            Target::Direct { client, pool } => {
                let b = &pool[i % pool.len()];
                let (h, _, s) = client.query_with_stats(b).await?;
                Ok((b.batch_size as u64, b.ids.len() as u64, s.wire_bytes, h))
            }
            Target::Relay { clients, pool } => {
                let q = &pool[i % pool.len()];
                let (h, out) = clients[lane % clients.len()].query_prepared(q).await?;
                let sent: u64 =
                    q.stripes.iter().map(|(_, parts)| parts.iter().map(|p| 4 * p.len() as u64).sum::<u64>()).sum();
                Ok((q.head.batch_size as u64, q.lookups, sent + 4 * out.len() as u64, h))
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub concurrency: usize,
    /// Open loop at this many queries per second; `None` for closed loop.
    pub qps: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Queries outstanding at most in open loop, beyond which arrivals count as errors.
    pub max_outstanding: usize,
    /// Seed of the open loop's arrivals.
    pub seed: u64,
}

/// What a run measured (after warm-up).
pub struct LoadResult {
    pub latency: Histogram<u64>,
    pub queries: u64,
    pub samples: u64,
    pub lookups: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sums over replies of the slowest worker engine time and of the router's time, us.
    pub engine_us: u64,
    pub coordinator_us: u64,
    pub wire_bytes: u64,
    pub first_error: Option<String>,
}

impl LoadResult {
    /// A (merged) wire report as a result.
    pub fn from_report(r: &LoadReport) -> LoadResult {
        LoadResult {
            latency: decode_histogram(&r.histogram),
            queries: r.queries,
            samples: r.samples,
            lookups: r.lookups,
            errors: r.errors,
            elapsed: Duration::from_secs_f64(r.elapsed_s.max(0.0)),
            engine_us: r.engine_us,
            coordinator_us: 0,
            wire_bytes: r.wire_bytes,
            first_error: r.first_error.clone(),
        }
    }

    /// The result as a wire report (one load generator's).
    pub fn report(&self) -> LoadReport {
        LoadReport {
            loadgens: 1,
            queries: self.queries,
            samples: self.samples,
            lookups: self.lookups,
            errors: self.errors,
            elapsed_s: self.elapsed.as_secs_f64(),
            wire_bytes: self.wire_bytes,
            engine_us: self.engine_us,
            sub_requests: 0,
            retries: 0,
            histogram: encode_histogram(&self.latency),
            first_error: self.first_error.clone(),
            verified: None,
        }
    }
}

/// A latency histogram for microseconds up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A histogram in HdrHistogram's V2 serialisation.
pub fn encode_histogram(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new().serialize(h, &mut out).expect("serialising to memory cannot fail");
    out
}

/// A report's latency histogram (empty when it has none or it does not decode).
pub fn decode_histogram(bytes: &[u8]) -> Histogram<u64> {
    if bytes.is_empty() {
        return new_histogram();
    }
    Deserializer::new().deserialize(&mut std::io::Cursor::new(bytes)).unwrap_or_else(|_| new_histogram())
}

/// Reports of load generators that ran at once, as one: counts add up, histograms merge, the
/// elapsed time is the longest, and any verification failure fails the whole.
pub fn merge(reports: &[LoadReport]) -> LoadReport {
    let mut hist = new_histogram();
    let mut m = LoadReport::default();
    for r in reports {
        let _ = hist.add(decode_histogram(&r.histogram));
        m.loadgens += r.loadgens;
        m.queries += r.queries;
        m.samples += r.samples;
        m.lookups += r.lookups;
        m.errors += r.errors;
        m.elapsed_s = m.elapsed_s.max(r.elapsed_s);
        m.wire_bytes += r.wire_bytes;
        m.engine_us += r.engine_us;
        m.sub_requests += r.sub_requests;
        m.retries += r.retries;
        if m.first_error.is_none() {
            m.first_error = r.first_error.clone();
        }
        m.verified = match (m.verified, r.verified) {
            (None, v) | (v, None) => v,
            (Some(a), Some(b)) => Some(a && b),
        };
    }
    m.histogram = encode_histogram(&hist);
    m
}

struct Shared {
    hist: Mutex<Histogram<u64>>,
    queries: AtomicU64,
    samples: AtomicU64,
    lookups: AtomicU64,
    errors: AtomicU64,
    engine_us: AtomicU64,
    coordinator_us: AtomicU64,
    wire_bytes: AtomicU64,
    measuring: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn record(&self, started: Instant, r: Result<(u64, u64, u64, PooledHead), TransportError>) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        match r {
            Ok((samples, lookups, bytes, h)) => {
                self.hist.lock().saturating_record(started.elapsed().as_micros().max(1) as u64);
                self.queries.fetch_add(1, Ordering::Relaxed);
                self.samples.fetch_add(samples, Ordering::Relaxed);
                self.lookups.fetch_add(lookups, Ordering::Relaxed);
                self.wire_bytes.fetch_add(bytes, Ordering::Relaxed);
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
pub async fn run(target: &Target, cfg: &LoadConfig, tick: &(dyn Fn(f64, f64) + Sync)) -> LoadResult {
    let shared = Arc::new(Shared {
        hist: Mutex::new(new_histogram()),
        queries: AtomicU64::new(0),
        samples: AtomicU64::new(0),
        lookups: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        engine_us: AtomicU64::new(0),
        coordinator_us: AtomicU64::new(0),
        wire_bytes: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let n = target.len().max(1);
    match cfg.qps {
        None => {
            for lane in 0..cfg.concurrency.max(1) {
                let (target, shared, stop, next) = (target.clone(), shared.clone(), stop.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize % n;
                        let t0 = Instant::now();
                        let r = target.send(i, lane).await;
                        shared.record(t0, r);
                    }
                }));
            }
        }
        Some(qps) => {
            let (target, shared, stop) = (target.clone(), shared.clone(), stop.clone());
            let max_out = cfg.max_outstanding.max(1);
            let seed = cfg.seed;
            tasks.push(tokio::spawn(async move {
                let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed ^ 0xa11);
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
                    let q = i % n;
                    i += 1;
                    let (target, shared, outstanding) = (target.clone(), shared.clone(), outstanding.clone());
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let r = target.send(q, q).await;
                        shared.record(due, r);
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
        wire_bytes: shared.wire_bytes.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().clone(),
    }
}

/// Checks the first `n` batches of `pool` through `client` against the reference, allowing
/// the rounding of the client's wire format (one rounding per worker a value's partial sums
/// can come from). The first mismatch or failed query is the error.
pub async fn verify(client: &Client, pool: &[QueryBatch], n: usize) -> Result<(), String> {
    let Some(routes) = client.routes() else { return Err("nothing is deployed".into()) };
    let row_types: Vec<_> = routes.plan.tables.iter().map(|t| t.row_type).collect();
    let reference = Reference::new(&routes.spec, &row_types);
    let tables: Vec<u16> = (0..routes.spec.tables.len() as u16).collect();
    let wire: WireFormat = client.wire();
    for (i, b) in pool.iter().take(n).enumerate() {
        let (_, out) = client.query(b).await.map_err(|e| format!("verification query {i} failed: {e}"))?;
        reference
            .pool(b, &tables)
            .allow_rounding(wire.unit_roundoff(), routes.workers.len().max(1))
            .check(&out)
            .map_err(|m| format!("batch {i} differs from the reference: {m}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reports_add_counts_and_keep_exact_percentiles() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=100u64 {
            a.record(v).unwrap();
            b.record(v + 1000).unwrap();
        }
        let ra = LoadReport {
            loadgens: 1,
            queries: 100,
            samples: 800,
            errors: 1,
            elapsed_s: 1.0,
            wire_bytes: 10,
            histogram: encode_histogram(&a),
            verified: Some(true),
            ..Default::default()
        };
        let rb = LoadReport {
            loadgens: 1,
            queries: 100,
            samples: 800,
            elapsed_s: 1.2,
            wire_bytes: 5,
            histogram: encode_histogram(&b),
            first_error: Some("x".into()),
            verified: Some(false),
            ..Default::default()
        };
        let m = merge(&[ra, rb]);
        assert_eq!((m.loadgens, m.queries, m.samples, m.errors, m.wire_bytes), (2, 200, 1600, 1, 15));
        assert_eq!(m.elapsed_s, 1.2);
        assert_eq!(m.first_error.as_deref(), Some("x"));
        assert_eq!(m.verified, Some(false));
        let h = decode_histogram(&m.histogram);
        assert_eq!(h.len(), 200);
        assert_eq!(h.value_at_quantile(0.5), 100);
        assert!(h.value_at_quantile(0.99) >= 1098);
        assert_eq!(merge(&[]).queries, 0);
    }
}
