//! The machine's gather ceiling, measured beside the engine in the same run.
//!
//! The ceiling is the simplest loop that can do the work: independent random row gathers
//! (f32 rows of 64, pooling 20) from a table far larger than the last-level cache, backed by
//! huge pages, with software prefetch a tuned distance ahead, compiled for the CPU it runs on
//! (through `target_feature` multiversioning, which gives the same code as
//! `-C target-cpu=native` for this loop). The engine runs the same batches over its own copy
//! of the table through its direct data flow. Rounds alternate between the two and the figures
//! are medians, so that noise from other tenants of the machine hits both alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use embtune_protocol::{DataFlow, Knobs, Placement, Plan, Topology};
use embtune_workloads::{BatchGenerator, Preset, PresetOptions, QueryBatch};

use crate::engine::kernels::Isa;
use crate::engine::storage::RowStore;
use crate::engine::{Engine, EngineConfig, EngineError};

/// Row width of the ceiling workload, fixed so the ceiling loop can keep one row in registers.
pub const DIM: usize = 64;
pub const POOLING: usize = 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct LimitConfig {
    pub table_bytes: u64,
    pub threads: usize,
    pub rounds: usize,
    pub round: Duration,
    pub prefetches: Vec<usize>,
    pub batch: u32,
    /// The highest kernel level the engine may use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            table_bytes: 2 << 30,
            threads: 1,
            rounds: 5,
            round: Duration::from_millis(1500),
            prefetches: vec![16, 24, 32],
            batch: 256,
            isa: None,
        }
    }
}

/// Median look-ups per second of one contender at one prefetch distance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contender {
    pub prefetch: usize,
    pub lookups_per_s: f64,
    pub rounds: Vec<f64>,
}

/// The result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimitReport {
    pub threads: usize,
    pub table_bytes: u64,
    pub huge_page_bytes: u64,
    /// Bytes of rows one pass over the batch pool reads, and the last-level cache they are
    /// meant to dwarf.
    #[serde(default)]
    pub pool_row_bytes: u64,
    #[serde(default)]
    pub llc_bytes: u64,
    pub ceiling_isa: String,
    pub engine_isa: String,
    pub ceiling: Vec<Contender>,
    pub engine: Vec<Contender>,
    /// Best ceiling and best engine figures, and engine / ceiling.
    pub ceiling_best: f64,
    pub engine_best: f64,
    pub ratio: f64,
}

/// The ceiling's table and batches, and the spec the engine deploys for the same work.
pub struct Setup {
    pub spec: embtune_workloads::ModelSpec,
    pub batches: Vec<Arc<QueryBatch>>,
    pub table: RowStore,
    /// The last-level cache the batches were sized against.
    pub llc_bytes: u64,
}

impl Setup {
    /// Materialises the table on `threads` threads.
    pub fn new(cfg: &LimitConfig) -> Result<Setup, EngineError> {
        let rows = cfg.table_bytes / (DIM as u64 * 4);
        let spec = Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(1),
                rows: Some(rows),
                dim: Some(DIM as u32),
                pooling: Some(embtune_workloads::Pooling::Fixed(POOLING as u32)),
                dist: Some(embtune_workloads::AccessDist::Uniform),
                batch: Some(cfg.batch),
                ..Default::default()
            })
            .map_err(|e| EngineError::Deploy(e.to_string()))?;
        let g = BatchGenerator::new(&spec).map_err(|e| EngineError::Deploy(e.to_string()))?;
        let llc_bytes = crate::machine::MachineInfo::detect().llc_bytes;
        let batches: Vec<Arc<QueryBatch>> =
            g.pool(0, pool_batches(&g, cfg, llc_bytes)).into_iter().map(Arc::new).collect();
        // The ceiling's own table: the same contents the engine materialises.
        let seed = embtune_protocol::plan::table_seed(&spec, 0);
        let table = RowStore::alloc(rows, embtune_workloads::RowType::F32, DIM as u32, true)
            .map_err(|e| EngineError::Deploy(format!("cannot map the {} B ceiling table: {e}", cfg.table_bytes)))?;
        std::thread::scope(|s| {
            let per = rows.div_ceil(cfg.threads as u64);
            for t in 0..cfg.threads as u64 {
                let table = &table;
                s.spawn(move || table.fill(seed, (t * per).min(rows), ((t + 1) * per).min(rows), |r| r));
            }
        });
        Ok(Setup { spec, batches, table, llc_bytes })
    }

    /// An engine of `threads` cores with the same table replicated, read by the direct flow.
    pub fn engine(&self, threads: usize, prefetch: usize, batch: u32, isa: Option<Isa>) -> Result<Engine, EngineError> {
        let engine = Engine::start(EngineConfig { isa, ..EngineConfig::with_cores(threads) });
        let spec = &self.spec;
        let topology = Topology::uniform(1, threads as u16, u64::MAX);
        let plan = Plan::from_placements("limit", spec, topology, [Placement::Replicated])
            .with_flow(DataFlow::Direct { prefetch: prefetch as u16 })
            // One task per batch, as each ceiling thread takes whole batches: with two batches in
            // flight per core, splitting them further only adds hand-offs.
            .with_knobs(Knobs { sub_batch: batch.max(1), inflight_per_worker: 1 });
        engine.deploy(&plan.assignment(spec, 0))?;
        Ok(engine)
    }

    /// The ceiling loop over `n` batches on the calling thread, from batch `start`.
    pub fn ceiling_batches(&self, start: usize, n: u64, prefetch: usize) -> Duration {
        let mut out = vec![0f32; self.batches[0].batch_size as usize * DIM];
        let t0 = Instant::now();
        for i in 0..n as usize {
            gather(
                self.table.base() as *const f32,
                &self.batches[(start + i) % self.batches.len()].ids,
                &mut out,
                prefetch,
            );
        }
        std::hint::black_box(&out);
        t0.elapsed()
    }
}

/// How many batches both sides rotate through. The rows they touch must be far more than the
/// last-level cache holds, or the ceiling measures cache hits, not the memory system: with a
/// fixed pool of 128 batches of 256 samples, the 16-thread runs on a host with a 300 MiB LLC
/// touched 168 MB of rows, and read 2.4x faster than with batches of 2048 samples, which
/// touched 1.3 GB (BENCHMARKS.md, "Engine: the gather ceiling"). Every thread also needs
/// batches of its own.
fn pool_batches(g: &BatchGenerator, cfg: &LimitConfig, llc_bytes: u64) -> usize {
    // Ids cost 4 bytes against each row's 256; 256 MiB of ids is a 16 GiB sweep of rows.
    g.pool_size_for(llc_bytes, 256 << 20).max(cfg.threads * 8)
}

/// Bytes of rows the batch pool reads per pass (counting repeats): what the ceiling's claim
/// to measure the memory system rests on, compared with the last-level cache.
fn pool_row_bytes(batches: &[Arc<QueryBatch>]) -> u64 {
    batches.iter().map(|b| b.ids.len() as u64 * (DIM as u64 * 4)).sum()
}

/// Runs the comparison; `progress` gets (round, rounds).
pub fn run(cfg: &LimitConfig, progress: &dyn Fn(usize, usize)) -> Result<LimitReport, EngineError> {
    let setup = Setup::new(cfg)?;
    let (table, batches) = (&setup.table, &setup.batches);

    let cpus: Vec<usize> = (0..cfg.threads).collect();
    let engines: Vec<(usize, Engine)> = cfg
        .prefetches
        .iter()
        .map(|&pf| setup.engine(cfg.threads, pf, cfg.batch, cfg.isa).map(|e| (pf, e)))
        .collect::<Result<_, _>>()?;

    let isa = ceiling_isa();
    let mut ceil_rounds = vec![Vec::new(); cfg.prefetches.len()];
    let mut eng_rounds = vec![Vec::new(); cfg.prefetches.len()];
    for round in 0..cfg.rounds {
        progress(round, cfg.rounds);
        for (i, &pf) in cfg.prefetches.iter().enumerate() {
            ceil_rounds[i].push(ceiling_round(table, batches, &cpus, pf, cfg.round));
            let (_, engine) = &engines[i];
            eng_rounds[i].push(engine_round(engine, batches, cfg.threads * 2, cfg.round));
        }
    }
    let contenders = |rounds: Vec<Vec<f64>>| -> Vec<Contender> {
        cfg.prefetches
            .iter()
            .zip(rounds)
            .map(|(&prefetch, r)| Contender { prefetch, lookups_per_s: median(&r), rounds: r })
            .collect()
    };
    let ceiling = contenders(ceil_rounds);
    let engine = contenders(eng_rounds);
    let best = |c: &[Contender]| c.iter().map(|c| c.lookups_per_s).fold(0.0, f64::max);
    let (ceiling_best, engine_best) = (best(&ceiling), best(&engine));
    Ok(LimitReport {
        threads: cfg.threads,
        table_bytes: table.bytes(),
        huge_page_bytes: table.huge_bytes(),
        pool_row_bytes: pool_row_bytes(batches),
        llc_bytes: setup.llc_bytes,
        ceiling_isa: isa.into(),
        engine_isa: engines[0].1.isa().name().into(),
        ceiling,
        engine,
        ceiling_best,
        engine_best,
        ratio: engine_best / ceiling_best,
    })
}

pub use embtune_protocol::tuning::median;

/// `threads` pinned threads gather batches from `table` for `time`; look-ups per second.
fn ceiling_round(table: &RowStore, batches: &[Arc<QueryBatch>], cpus: &[usize], pf: usize, time: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, &cpu) in cpus.iter().enumerate() {
            let (stop, done) = (&stop, &done);
            s.spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                let mut out = vec![0f32; batches[0].batch_size as usize * DIM];
                let mut i = t;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let b = &batches[i % batches.len()];
                    gather(table.base() as *const f32, &b.ids, &mut out, pf);
                    n += b.ids.len() as u64;
                    i += cpus.len();
                }
                std::hint::black_box(&out);
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn engine_round(engine: &Engine, batches: &[Arc<QueryBatch>], concurrency: usize, time: Duration) -> f64 {
    let m = crate::bench::drive(engine, batches, concurrency, time, &|_| {});
    m.lookups as f64 / time.as_secs_f64()
}

fn ceiling_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") {
            return "avx2";
        }
    }
    "scalar"
}

/// Pools fixed bags of [`POOLING`] ids: the tightest loop there is, with the bag's row sum in
/// registers and the row `pf` ids ahead prefetched.
fn gather(table: *const f32, ids: &[u32], out: &mut [f32], pf: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: ids index rows of the table; the CPU has AVX-512F.
            return unsafe { gather_avx512(table, ids, out, pf) };
        }
    }
    // SAFETY: as above.
    unsafe { gather_portable(table, ids, out, pf) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_avx512(table: *const f32, ids: &[u32], out: &mut [f32], pf: usize) {
    use std::arch::x86_64::*;
    let n = ids.len();
    for b in 0..n / POOLING {
        let mut a = [_mm512_setzero_ps(); 4];
        for j in 0..POOLING {
            let i = b * POOLING + j;
            // SAFETY: i + pf < n is checked; ids are rows of the table.
            unsafe {
                if i + pf < n {
                    let p = table.add(*ids.get_unchecked(i + pf) as usize * DIM) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(p);
                    _mm_prefetch::<_MM_HINT_T0>(p.add(64));
                    _mm_prefetch::<_MM_HINT_T0>(p.add(128));
                    _mm_prefetch::<_MM_HINT_T0>(p.add(192));
                }
                let r = table.add(*ids.get_unchecked(i) as usize * DIM);
                for (k, acc) in a.iter_mut().enumerate() {
                    *acc = _mm512_add_ps(*acc, _mm512_loadu_ps(r.add(16 * k)));
                }
            }
        }
        for (k, acc) in a.iter().enumerate() {
            // SAFETY: out holds n / POOLING rows of DIM.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(b * DIM + 16 * k), *acc) };
        }
    }
}

unsafe fn gather_portable(table: *const f32, ids: &[u32], out: &mut [f32], _pf: usize) {
    for (b, bag) in ids.chunks_exact(POOLING).enumerate() {
        let mut acc = [0f32; DIM];
        for &id in bag {
            // SAFETY: ids are rows of the table.
            let r = unsafe { std::slice::from_raw_parts(table.add(id as usize * DIM), DIM) };
            for (a, x) in acc.iter_mut().zip(r) {
                *a += x;
            }
        }
        out[b * DIM..(b + 1) * DIM].copy_from_slice(&acc);
    }
}
