//! The GPU benchmark behind `embtune gpu-bench`: kernel variants on one workload, timed with
//! CUDA events over batches already in device memory, in alternating rounds, each variant
//! checked against the f64 reference first.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use embtune_protocol::{DataFlow, LocalLayout, LocalTable};
use embtune_workloads::{BatchGenerator, ModelSpec, RowType};

use super::{GpuEngine, GpuError, GpuInfo, GpuLayoutReport, KernelKnobs, L2Options};
use crate::engine::reference::Reference;

/// Where verification batches come from: far from the timed batches (0..K) and from the
/// profiling batches (2^40..).
pub const VERIFY_BATCH_BASE: u64 = 1 << 36;

/// One contender: a data flow for every table, kernel knobs and the L2 policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub name: String,
    pub flow: DataFlow,
    pub knobs: KernelKnobs,
    pub l2: L2Options,
}

/// What to run.
#[derive(Clone)]
pub struct GpuBench {
    pub spec: ModelSpec,
    pub device: usize,
    pub configs: Vec<RunConfig>,
    /// Pre-generated batches rotated through (batch indices 0..K, as `embtune workload dump`).
    pub batches: usize,
    pub reps: usize,
    pub warmup: usize,
    pub rounds: usize,
    /// Verification batches per contender (0: none) and their size.
    pub verify: usize,
    pub verify_batch: u32,
    /// Bytes of the device-to-device copy that measures the copy bandwidth (0: skip).
    pub copy_bytes: usize,
    /// Look-ups with copies (`GpuEngine::lookup`) timed per contender.
    pub e2e_reps: usize,
}

/// Summary statistics of launch times, milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    #[serde(default)]
    pub p99: f64,
    pub min: f64,
    pub n: usize,
}

impl Stats {
    pub fn of(v: &[f32]) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        s.sort_by(f64::total_cmp);
        let q = |f: f64| s[((s.len() - 1) as f64 * f).round() as usize];
        Stats { median: q(0.5), p10: q(0.1), p90: q(0.9), p99: q(0.99), min: s[0], n: s.len() }
    }
}

/// One contender's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GpuRunResult {
    pub name: String,
    pub flow: String,
    pub knobs: KernelKnobs,
    pub l2: L2Options,
    pub layout: GpuLayoutReport,
    /// Kernel milliseconds per batch (all tables, one launch).
    pub ms: Stats,
    /// Median of each round's median: the figure, with the rounds' spread below.
    pub round_medians: Vec<f64>,
    pub lookups_per_s: f64,
    /// Row bytes the look-ups read (look-ups x row bytes) per second at the median.
    pub row_bytes_per_s: f64,
    /// row_bytes_per_s over the measured copy bandwidth.
    pub of_copy_bandwidth: Option<f64>,
    /// Milliseconds of `lookup` with copies (ids and offsets in, pooled rows out), median.
    pub e2e_ms: Option<f64>,
    pub verified: Option<bool>,
    pub verify_error: Option<String>,
    /// ||gpu - ref|| / ||ref|| over the verification batches.
    pub verify_rel_error: Option<f64>,
    pub blocks_per_sm: Option<u32>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GpuBenchReport {
    pub device: GpuInfo,
    pub model: String,
    pub tables: usize,
    pub batch_size: u32,
    pub row_types: Vec<RowType>,
    pub lookups_per_batch: f64,
    pub row_bytes_per_batch: f64,
    pub rotated_batches: usize,
    pub reps: usize,
    pub rounds: usize,
    pub deploy_seconds: f64,
    pub table_bytes: u64,
    /// Device-to-device copy, bytes read + written per second.
    pub copy_bytes_per_s: Option<f64>,
    pub runs: Vec<GpuRunResult>,
}

/// The worker-local tables of a whole spec on one device, all with `flow`.
pub fn local_tables(spec: &ModelSpec, flow: DataFlow) -> Vec<LocalTable> {
    spec.tables
        .iter()
        .enumerate()
        .map(|(i, t)| LocalTable {
            table: i as u16,
            spec: t.clone(),
            content_seed: embtune_protocol::plan::table_seed(spec, i),
            row_type: t.row_type,
            flow,
            layout: LocalLayout::Replicated,
            hot_ids: Vec::new(),
        })
        .collect()
}

/// Runs the benchmark. `progress` receives one line per step.
pub fn run(b: &GpuBench, progress: &dyn Fn(&str)) -> Result<GpuBenchReport, GpuError> {
    if b.configs.is_empty() {
        return Err(GpuError::Request("no contenders".into()));
    }
    let spec = &b.spec;
    let mut engine = GpuEngine::new(b.device)?;
    progress(&format!("device {}", engine.info().summary()));
    let generator = BatchGenerator::new(spec).map_err(|e| GpuError::Request(e.to_string()))?;
    if spec.total_bytes() as f64 > engine.info().free_mem as f64 * 0.9 {
        return Err(GpuError::Deploy(format!(
            "the model needs {} bytes of tables, the device has {} free",
            spec.total_bytes(),
            engine.info().free_mem
        )));
    }

    // `hot_rows: 0` asks for as many hot rows per table as the pinned budget holds.
    let configs: Vec<RunConfig> = b
        .configs
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let DataFlow::HotCache { hot_rows: 0, prefetch } = c.flow {
                let budget = c.l2.hot_budget.unwrap_or(if engine.info().max_persisting_l2 > 0 {
                    engine.info().max_persisting_l2
                } else {
                    engine.info().l2_bytes / 2
                });
                let per_row: u64 = spec.tables.iter().map(|t| t.row_bytes() as u64).sum::<u64>().max(1);
                c.flow = DataFlow::HotCache { hot_rows: (budget / per_row).clamp(1, u32::MAX as u64) as u32, prefetch };
                c.name = c.name.replace("rows=auto", &format!("rows={}", budget / per_row));
            }
            c
        })
        .collect();
    let b = &GpuBench { configs, ..b.clone() };

    // Hot rows from profiling batches (not the timed ones), as many as any contender asks for.
    let max_hot = b
        .configs
        .iter()
        .map(|c| match c.flow {
            DataFlow::HotCache { hot_rows, .. } => hot_rows as usize,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let hot_ids: Vec<Vec<u32>> = if max_hot > 0 {
        progress("profiling accesses for hot rows");
        let p = embtune_workloads::profile::profile_generator(&generator);
        p.tables.iter().map(|t| t.hottest(max_hot)).collect()
    } else {
        vec![Vec::new(); spec.tables.len()]
    };

    progress("generating batches");
    let pool = generator.pool(0, b.batches.max(1));
    let lookups = pool.iter().map(|q| q.ids.len()).sum::<usize>() as f64 / pool.len() as f64;
    let row_bytes: f64 = pool
        .iter()
        .map(|q| {
            (0..spec.tables.len()).map(|t| q.table_ids(t).len() as f64 * spec.tables[t].row_bytes() as f64).sum::<f64>()
        })
        .sum::<f64>()
        / pool.len() as f64;

    progress("deploying tables");
    let first = &b.configs[0];
    engine.configure(first.knobs, first.l2)?;
    let mut tables = local_tables(spec, first.flow);
    for (t, h) in tables.iter_mut().zip(&hot_ids) {
        t.hot_ids = h.clone();
    }
    let deployed = engine.deploy(&tables)?;
    progress(&format!("deployed {} bytes in {:.1}s", deployed.bytes, deployed.seconds));

    let copy_bw = if b.copy_bytes > 0 {
        let bw = engine.copy_bandwidth(b.copy_bytes, 20)?;
        progress(&format!("device-to-device copy: {:.0} GB/s (read + write)", bw / 1e9));
        Some(bw)
    } else {
        None
    };

    let dev_batches: Vec<_> = pool.iter().map(|q| engine.upload(q)).collect::<Result<_, _>>()?;
    let row_types: Vec<RowType> = spec.tables.iter().map(|t| t.row_type).collect();
    let reference = Reference::new(spec, &row_types);
    let slots: Vec<u16> = (0..spec.tables.len() as u16).collect();

    struct Acc {
        samples: Vec<f32>,
        round_medians: Vec<f64>,
        layout: GpuLayoutReport,
        verified: Option<bool>,
        verify_error: Option<String>,
        verify_rel: Option<f64>,
        e2e: Option<f64>,
        occupancy: Option<u32>,
    }
    let mut acc: Vec<Acc> = Vec::new();
    let flows_for = |c: &RunConfig| -> Vec<DataFlow> { vec![c.flow; spec.tables.len()] };
    for round in 0..b.rounds.max(1) {
        for (ci, c) in b.configs.iter().enumerate() {
            engine.configure(c.knobs, c.l2)?;
            let layout = engine.set_flows(&flows_for(c), &hot_ids)?;
            if round == 0 {
                let (mut verified, mut verify_error, mut verify_rel) = (None, None, None);
                if b.verify > 0 {
                    progress(&format!("verifying {}", c.name));
                    let (mut num, mut den) = (0f64, 0f64);
                    let mut ok = true;
                    for v in 0..b.verify {
                        let q =
                            generator.batch_sized(VERIFY_BATCH_BASE + v as u64, b.verify_batch.min(spec.batch_size));
                        engine.poison(q.batch_size)?;
                        let out = engine.lookup(&q)?;
                        let r = reference.pool(&q, &slots);
                        for (g, w) in out.pooled.iter().zip(&r.values) {
                            num += (*g as f64 - w).powi(2);
                            den += w * w;
                        }
                        if let Err(e) = r.check(&out.pooled) {
                            ok = false;
                            verify_error.get_or_insert(format!("batch {v}: {e}"));
                        }
                    }
                    verified = Some(ok);
                    verify_rel = Some(if den > 0.0 { (num / den).sqrt() } else { num.sqrt() });
                }
                let e2e = if b.e2e_reps > 0 {
                    let mut t = Vec::with_capacity(b.e2e_reps);
                    for i in 0..b.e2e_reps + 1 {
                        let t0 = Instant::now();
                        engine.lookup(&pool[i % pool.len()])?;
                        if i > 0 {
                            t.push(t0.elapsed().as_secs_f32() * 1e3);
                        }
                    }
                    Some(Stats::of(&t).median)
                } else {
                    None
                };
                acc.push(Acc {
                    samples: Vec::new(),
                    round_medians: Vec::new(),
                    layout,
                    verified,
                    verify_error,
                    verify_rel,
                    e2e,
                    occupancy: engine.occupancy(),
                });
            }
            progress(&format!("round {}: timing {}", round + 1, c.name));
            let ms = engine.time(&dev_batches, b.reps, b.warmup)?;
            acc[ci].round_medians.push(Stats::of(&ms).median);
            acc[ci].samples.extend(ms);
        }
    }

    let runs = b
        .configs
        .iter()
        .zip(acc)
        .map(|(c, a)| {
            let ms = Stats::of(&a.samples);
            let mut rm = a.round_medians.clone();
            rm.sort_by(f64::total_cmp);
            let med = rm[rm.len() / 2];
            let secs = med / 1e3;
            let row_bytes_per_s = row_bytes / secs;
            GpuRunResult {
                name: c.name.clone(),
                flow: c.flow.to_string(),
                knobs: c.knobs,
                l2: c.l2,
                layout: a.layout,
                ms: Stats { median: med, ..ms },
                round_medians: a.round_medians,
                lookups_per_s: lookups / secs,
                row_bytes_per_s,
                of_copy_bandwidth: copy_bw.map(|bw| row_bytes_per_s / bw),
                e2e_ms: a.e2e,
                verified: a.verified,
                verify_error: a.verify_error,
                verify_rel_error: a.verify_rel,
                blocks_per_sm: a.occupancy,
            }
        })
        .collect();
    Ok(GpuBenchReport {
        device: engine.info().clone(),
        model: spec.name.clone(),
        tables: spec.tables.len(),
        batch_size: spec.batch_size,
        row_types,
        lookups_per_batch: lookups,
        row_bytes_per_batch: row_bytes,
        rotated_batches: pool.len(),
        reps: b.reps,
        rounds: b.rounds.max(1),
        deploy_seconds: deployed.seconds,
        table_bytes: deployed.bytes,
        copy_bytes_per_s: copy_bw,
        runs,
    })
}
