//! GPU backend tests. Those that need a device print "SKIPPED: ... no CUDA device" and pass where
//! there is none (CI); the compile test needs only NVRTC and skips likewise without it.

use embtune_protocol::DataFlow;
use embtune_workloads::{BatchGenerator, ModelSpec, Pooling, PoolingMode, RowType, TableSpec};

use super::bench::local_tables;
use super::kernels::{self, KernelKnobs, Variant};
use super::*;
use crate::engine::reference::Reference;

fn table(name: &str, rows: u64, dim: u32, row_type: RowType, mode: PoolingMode, dist: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        rows,
        dim,
        row_type,
        pooling: Pooling::Uniform { min: 0, max: 40 },
        mode,
        dist: dist.parse().unwrap(),
        quantizable: false,
    }
}

/// Tables of every row type and of shapes that take each kernel path: 4, 16 and 32 lanes per
/// row, a row wider than one warp (passes), and a dim the vector kernels cannot serve.
fn mixed_spec() -> ModelSpec {
    let mut tables = Vec::new();
    for (i, rt) in RowType::ALL.into_iter().enumerate() {
        for (j, &dim) in [16u32, 64, 128, 256, 13].iter().enumerate() {
            let mode = if (i + j) % 2 == 0 { PoolingMode::Sum } else { PoolingMode::Mean };
            let dist = if j % 2 == 0 { "hotset:0.9:0.01" } else { "zipf:1.1" };
            tables.push(table(&format!("t{rt}{dim}"), 3000 + 517 * j as u64, dim, rt, mode, dist));
        }
        // Short bags (0 to 3 ids): the multi-bag kernel.
        for dim in [16u32, 64] {
            let mut t = table(&format!("s{rt}{dim}"), 2000, dim, rt, PoolingMode::Mean, "zipf:1.1");
            t.pooling = Pooling::Uniform { min: 0, max: 3 };
            tables.push(t);
        }
    }
    ModelSpec { name: "gpu-mixed".into(), batch_size: 37, seed: 7, source: String::new(), tables }
}

fn flows() -> Vec<DataFlow> {
    vec![
        DataFlow::Direct { prefetch: 0 },
        DataFlow::Direct { prefetch: 1 },
        DataFlow::Direct { prefetch: 2 },
        DataFlow::Direct { prefetch: 8 },
        DataFlow::Direct { prefetch: 16 },
        DataFlow::HotCache { hot_rows: 64, prefetch: 4 },
        DataFlow::Blocked { block_rows: 1024 },
    ]
}

/// A `SKIPPED:` line on the real stderr (not captured by the test harness, so CI logs show it).
fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: GPU test: {why}");
}

fn engine_or_skip() -> Option<GpuEngine> {
    match GpuEngine::new(0) {
        Ok(e) => Some(e),
        Err(GpuError::Unavailable(why)) => {
            skipped(&format!("no CUDA device ({why})"));
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn kernels_compile_for_every_variant() {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        skipped("no CUDA device (NVRTC not found)");
        return;
    }
    let mut variants = Vec::new();
    for rt in RowType::ALL {
        variants.push(Variant::Baseline { row_type: rt });
        for (dim, pooling) in [(16, 20.0), (64, 20.0), (128, 20.0), (256, 20.0), (16, 1.0), (64, 1.0)] {
            for pf in [1, 4, 8, 16] {
                for hot in [false, true] {
                    let flow = if hot {
                        DataFlow::HotCache { hot_rows: 1, prefetch: pf }
                    } else {
                        DataFlow::Direct { prefetch: pf }
                    };
                    let v = Variant::for_table(rt, dim, flow, pooling);
                    if !variants.contains(&v) {
                        variants.push(v);
                    }
                }
            }
        }
    }
    for split in [1, 4] {
        let knobs = KernelKnobs { split, hot_hint: true, ..KernelKnobs::default() };
        let ptx = compile(&kernels::source(&variants, &knobs), "compute_90").unwrap_or_else(|e| panic!("{e}"));
        assert!(ptx.contains(".entry emb_lookup"));
        assert!(ptx.contains("ld.global.nc.v4.u32"));
        assert!(ptx.contains("evict_last"));
        assert!(variants.iter().any(|v| matches!(v, Variant::MultiBag { .. })));
    }
}

#[test]
fn every_flow_and_row_type_matches_the_reference() {
    let Some(mut engine) = engine_or_skip() else { return };
    let spec = mixed_spec();
    let generator = BatchGenerator::new(&spec).unwrap();
    let profile = embtune_workloads::profile::profile_generator(&generator);
    let hot: Vec<Vec<u32>> = profile.tables.iter().map(|t| t.hottest(64)).collect();
    let mut tables = local_tables(&spec, DataFlow::Direct { prefetch: 8 });
    for (t, h) in tables.iter_mut().zip(&hot) {
        t.hot_ids = h.clone();
    }
    engine.deploy(&tables).unwrap();
    let row_types: Vec<RowType> = spec.tables.iter().map(|t| t.row_type).collect();
    let reference = Reference::new(&spec, &row_types);
    let slots: Vec<u16> = (0..spec.tables.len() as u16).collect();
    for split in [1, 2, 4] {
        for window in [true, false] {
            engine
                .configure(
                    KernelKnobs { split, hot_hint: window, cold_evict_first: split == 2, ..KernelKnobs::default() },
                    L2Options { window, hot_budget: None },
                )
                .unwrap();
            for flow in flows() {
                // (Registers are those of the heaviest of the 21 variants this kernel holds, so
                // it may spill a little; the single-variant kernels of gpu-bench do not.)
                let layout = engine.set_flows(&vec![flow; spec.tables.len()], &hot).unwrap();
                for i in 0..3u64 {
                    // Fresh batches each time, including a batch of one sample.
                    let q = generator.batch_sized(1000 + i + 10 * split as u64, if i == 2 { 1 } else { 37 });
                    engine.poison(q.batch_size).unwrap();
                    let out = engine.lookup(&q).unwrap();
                    reference
                        .pool(&q, &slots)
                        .check(&out.pooled)
                        .unwrap_or_else(|e| panic!("{flow} split {split} window {window}: {e} ({layout:?})"));
                }
            }
        }
    }
}

#[test]
fn out_of_range_ids_are_refused() {
    let Some(mut engine) = engine_or_skip() else { return };
    let spec = ModelSpec {
        name: "one".into(),
        batch_size: 2,
        seed: 1,
        source: String::new(),
        tables: vec![table("a", 100, 16, RowType::F32, PoolingMode::Sum, "uniform")],
    };
    engine.deploy(&local_tables(&spec, DataFlow::Direct { prefetch: 4 })).unwrap();
    let q = embtune_workloads::QueryBatch::from_bags(&[vec![vec![1, 2], vec![100]]]);
    assert!(matches!(engine.lookup(&q), Err(GpuError::Request(_))));
}

/// A GPU worker and a CPU worker sharing a plan: the device holds one row-range shard, one hash
/// shard (with hot rows), a replicated and an owned table; the CPU engine holds the other
/// shards. Their partial sums, added as the coordinator adds them, equal the reference; ids
/// the device does not hold, ids out of range and unknown tables are refused by type.
#[test]
fn a_gpu_worker_serves_its_shards_of_a_plan() {
    use crate::engine::{Engine, EngineConfig, EngineError, Lookup};
    use embtune_protocol::{CoreId, Knobs, Placement, Plan, TablePlan, Topology};
    use embtune_workloads::QueryBatch;
    use std::sync::Arc;

    let service = match serve::GpuService::open(0) {
        Ok(s) => s,
        Err(GpuError::Unavailable(why)) => {
            skipped(&format!("no CUDA device ({why})"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let spec = ModelSpec {
        name: "gpu-worker".into(),
        batch_size: 64,
        seed: 11,
        source: String::new(),
        tables: vec![
            table("range", 5000, 32, RowType::F32, PoolingMode::Sum, "uniform"),
            table("hash", 4001, 64, RowType::F16, PoolingMode::Sum, "hotset:0.9:0.01"),
            table("repl", 300, 16, RowType::Int8, PoolingMode::Sum, "zipf:1.1"),
            table("owned", 2000, 128, RowType::F32, PoolingMode::Sum, "zipf:1.05"),
        ],
    };
    let (gpu, cpu) = (CoreId::new(0, 0), CoreId::new(1, 0));
    let tp = |name: &str, placement: Placement, flow: DataFlow, row_type: RowType| TablePlan {
        name: name.into(),
        placement,
        flow,
        row_type,
    };
    let plan = Plan {
        strategy: "test".into(),
        spec_digest: spec.digest(),
        topology: Topology::uniform(2, 1, 1 << 30),
        tables: vec![
            tp(
                "range",
                Placement::RowRange { bounds: vec![0, 1800, 5000], owners: vec![gpu, cpu] },
                DataFlow::Direct { prefetch: 8 },
                RowType::F32,
            ),
            tp(
                "hash",
                Placement::Hash { owners: vec![cpu, gpu] },
                DataFlow::HotCache { hot_rows: 32, prefetch: 4 },
                RowType::F16,
            ),
            tp("repl", Placement::Replicated, DataFlow::Direct { prefetch: 4 }, RowType::Int8),
            tp("owned", Placement::Owned(gpu), DataFlow::Direct { prefetch: 0 }, RowType::F32),
        ],
        knobs: Knobs::default(),
    };
    plan.validate(&spec).unwrap();
    let generator = BatchGenerator::new(&spec).unwrap();
    let profile = embtune_workloads::profile::profile_generator(&generator);
    let assignment = |w: u16| {
        let mut a = plan.assignment(&spec, w);
        a.fill_hot_ids(&plan, |t, n| profile.tables[t].hottest(n));
        a
    };
    service.deploy(&assignment(0)).unwrap();
    let engine = Engine::start(EngineConfig { cpus: vec![0], pin: false, huge_pages: false, isa: None });
    engine.deploy(&assignment(1)).unwrap();

    let row_types: Vec<RowType> = spec.tables.iter().map(|t| t.row_type).collect();
    let reference = Reference::new(&spec, &row_types);
    let all: Vec<u16> = (0..4).collect();
    let (gpu_tables, cpu_tables): (Vec<u16>, Vec<u16>) = (vec![0, 1, 2, 3], vec![0, 1]);
    // A sub-batch of `tables` with the ids of each bag that `worker` holds.
    let split = |q: &QueryBatch, tables: &[u16], worker: u16| {
        let b = q.batch_size as usize;
        let mut bags = Vec::new();
        for &t in tables {
            let p = &plan.tables[t as usize].placement;
            let mut table_bags = Vec::new();
            for s in 0..b {
                let k = t as usize * b + s;
                let ids = &q.ids[q.offsets[k] as usize..q.offsets[k + 1] as usize];
                let mine = |id: &&u32| match p {
                    Placement::Replicated => worker == 0,
                    _ => p.owners()[p.shard_of(**id)].worker == worker,
                };
                table_bags.push(ids.iter().filter(mine).copied().collect::<Vec<u32>>());
            }
            bags.push(table_bags);
        }
        QueryBatch::from_bags(&bags)
    };
    for i in 0..4u64 {
        let q = generator.batch_sized(500 + i, if i == 3 { 1 } else { 64 });
        let g = service.lookup(&split(&q, &gpu_tables, 0), &gpu_tables, 0).unwrap();
        let c = engine
            .lookup(Lookup {
                batch: Arc::new(split(&q, &cpu_tables, 1)),
                tables: cpu_tables.clone().into(),
                finalize_mean: false,
                epoch: 0,
            })
            .unwrap();
        // Add the CPU's partial sums into the GPU's columns of the same tables.
        let mut sum = g.pooled.clone();
        for s in 0..q.batch_size as usize {
            for (k, _) in cpu_tables.iter().enumerate() {
                let dim = spec.tables[k].dim as usize;
                for d in 0..dim {
                    sum[s * g.width + g.columns[k] + d] += c.pooled[s * c.width + c.columns[k] + d];
                }
            }
        }
        reference.pool(&q, &all).check(&sum).unwrap_or_else(|e| panic!("batch {i}: {e}"));
    }

    let one = |t: u16, id: u32| service.lookup(&QueryBatch::from_bags(&[vec![vec![id]]]), &[t], 0);
    assert!(one(0, 1799).is_ok());
    assert!(matches!(one(0, 1800), Err(EngineError::NotHeld { table: 0, id: 1800, .. })), "the CPU's range");
    assert!(matches!(one(1, 4), Err(EngineError::NotHeld { table: 1, .. })), "an even id is the CPU's hash shard");
    assert!(one(1, 5).is_ok());
    assert!(matches!(one(3, 2000), Err(EngineError::RowOutOfRange { table: 3, id: 2000, rows: 2000, .. })));
    assert!(matches!(one(9, 0), Err(EngineError::UnknownTable { table: 9 })));
}
