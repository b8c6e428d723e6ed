//! Data flows side by side on one core: the same table, the same batches, each flow's
//! look-ups per second. `cargo bench -p embtune-worker --bench flows`.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use embtune_protocol::{CoreId, DataFlow, Placement, Plan, Topology};
use embtune_worker::bench::run_batches;
use embtune_worker::engine::{Engine, EngineConfig};
use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};

fn flows(c: &mut Criterion) {
    let rows: u64 = std::env::var("EMBTUNE_BENCH_ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(4_000_000);
    for dist in ["uniform", "zipf:1.05", "hotset:0.99:0.001"] {
        let spec = Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(1),
                rows: Some(rows),
                dim: Some(64),
                dist: Some(dist.parse().unwrap()),
                batch: Some(256),
                ..Default::default()
            })
            .unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let batches: Vec<Arc<_>> = g.pool(0, 64).into_iter().map(Arc::new).collect();
        let profile = AccessProfile::from_batches(&[rows], &g.pool(1 << 40, 16));
        let hot = profile.tables[0].rows_for_share(0.9).min(16_384) as u32;
        let lookups: u64 = batches.iter().map(|b| b.lookups() as u64).sum::<u64>() / batches.len() as u64;
        let mut group = c.benchmark_group(format!("flows/{dist}"));
        group
            .throughput(Throughput::Elements(lookups))
            .sample_size(20)
            .measurement_time(std::time::Duration::from_secs(3));
        for flow in [
            DataFlow::Direct { prefetch: 0 },
            DataFlow::Direct { prefetch: 16 },
            DataFlow::HotCache { hot_rows: hot.max(1), prefetch: 16 },
            DataFlow::Blocked { block_rows: 2048 },
        ] {
            let plan = Plan::from_placements(
                "bench",
                &spec,
                Topology::uniform(1, 1, 1 << 40),
                [Placement::Owned(CoreId::new(0, 0))],
            )
            .with_flow(flow);
            let engine = Engine::start(EngineConfig::with_cores(1));
            let mut a = plan.assignment(&spec, 0);
            a.fill_hot_ids(&plan, |t, n| profile.tables[t].hottest(n));
            engine.deploy(&a).unwrap();
            let mut next = 0usize;
            group.bench_function(BenchmarkId::from_parameter(flow), |b| {
                // Two batches in flight, as a serving worker keeps its core busy.
                b.iter_custom(|n| {
                    let t = run_batches(&engine, &batches, next, n, 2);
                    next += n as usize;
                    t
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, flows);
criterion_main!(benches);
