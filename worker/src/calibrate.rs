//! A short sweep a worker runs when it starts: what a gathered row costs on this machine when
//! it comes from the core's own caches, from the last-level cache and from DRAM, and what a
//! request costs. The tuner's cost model starts from these figures and refits them to every
//! trial it measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use embtune_protocol::wire::Calibration;
use embtune_protocol::{DataFlow, Knobs, Placement, Plan, Topology};
use embtune_workloads::{AccessDist, BatchGenerator, Pooling, Preset, PresetOptions};

use crate::bench::run_batches;
use crate::engine::kernels::Isa;
use crate::engine::{Engine, EngineConfig, Lookup};
use crate::machine::MachineInfo;

/// Nanoseconds per look-up of a 256-byte row from a table of `rows` rows, one core.
fn per_row(engine: &Engine, rows: u64, prefetch: u16, time: Duration) -> Option<f64> {
    let spec = Preset::Synthetic
        .spec(&PresetOptions {
            tables: Some(1),
            rows: Some(rows),
            dim: Some(64),
            pooling: Some(Pooling::Fixed(20)),
            dist: Some(AccessDist::Uniform),
            batch: Some(128),
            ..Default::default()
        })
        .ok()?;
    let plan = Plan::from_placements("calibrate", &spec, Topology::uniform(1, 1, u64::MAX), [Placement::Replicated])
        .with_flow(DataFlow::Direct { prefetch })
        .with_knobs(Knobs { sub_batch: 128, inflight_per_worker: 1 });
    engine.deploy(&plan.assignment(&spec, 0)).ok()?;
    let g = BatchGenerator::new(&spec).ok()?;
    let pool: Vec<Arc<_>> = g.pool(0, 16).into_iter().map(Arc::new).collect();
    let lookups = pool[0].lookups() as f64;
    run_batches(engine, &pool, 0, 4, 2); // warm
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < time {
        run_batches(engine, &pool, n as usize, 8, 2);
        n += 8;
    }
    Some(t0.elapsed().as_nanos() as f64 / (n as f64 * lookups))
}

/// Runs the sweep on `cpu` with kernels no higher than `isa` (about a second) and returns the
/// figures.
pub fn calibrate(cpu: usize, isa: Option<Isa>) -> Option<Calibration> {
    let m = MachineInfo::detect();
    let engine = Engine::start(EngineConfig { cpus: vec![cpu], pin: true, huge_pages: true, isa });
    let t = Duration::from_millis(150);
    let l1 = per_row(&engine, 64, 0, t)?;
    let llc = per_row(&engine, (m.llc_bytes / 2 / 256).max(1024), 16, t)?;
    // Far larger than the last-level cache, small enough to fill quickly.
    let dram_rows = ((8 * m.llc_bytes).clamp(256 << 20, 1 << 30)) / 256;
    let dram = per_row(&engine, dram_rows, 16, t)?;
    engine.undeploy();
    // A request of one bag of one id: the fixed cost of a round trip through the engine.
    let spec = Preset::Synthetic
        .spec(&PresetOptions {
            tables: Some(1),
            rows: Some(16),
            dim: Some(16),
            pooling: Some(Pooling::Fixed(1)),
            batch: Some(1),
            ..Default::default()
        })
        .ok()?;
    let plan = Plan::from_placements("calibrate", &spec, Topology::uniform(1, 1, u64::MAX), [Placement::Replicated]);
    engine.deploy(&plan.assignment(&spec, 0)).ok()?;
    let b = Arc::new(BatchGenerator::new(&spec).ok()?.batch(0));
    let n = 2000;
    let t0 = Instant::now();
    for _ in 0..n {
        let out = engine.lookup(Lookup::all_tables(b.clone())).ok()?;
        engine.recycle(out.pooled);
    }
    let request = t0.elapsed().as_nanos() as f64 / n as f64;
    Some(Calibration { ns_per_row_l1: l1, ns_per_row_llc: llc, ns_per_row_dram: dram, ns_per_request: request })
}

#[cfg(test)]
mod tests {
    #[test]
    fn calibration_orders_the_memory_levels() {
        // A row from DRAM costs more than one from the core's caches, whatever the machine; a
        // test machine busy with other tests may blur one sweep, so the order must show in one
        // of three.
        let sweeps: Vec<_> = (0..3).map(|_| super::calibrate(0, None).expect("calibration runs")).collect();
        assert!(sweeps.iter().all(|c| c.ns_per_row_l1 > 0.0 && c.ns_per_request > 0.0));
        assert!(sweeps.iter().any(|c| c.ns_per_row_dram > c.ns_per_row_l1), "{sweeps:?}");
    }
}
