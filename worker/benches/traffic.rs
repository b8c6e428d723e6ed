//! The cost of watching the traffic (live re-planning), beside what it watches: per request,
//! the exact per-table counts and the sampling decision (`TrafficStats::record`), per sampled
//! id the frequent-items summary (`FrequentItems::insert`, on the counting thread), and the
//! engine's own time for the same batch on one core. `cargo bench -p embtune-worker --bench
//! traffic`; BENCHMARKS.md ("Live re-planning") turns the three into a share.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use embtune_protocol::{Placement, Plan, Topology};
use embtune_worker::bench::run_batches;
use embtune_worker::engine::{Engine, EngineConfig};
use embtune_worker::traffic::{FrequentItems, HOT_CAPACITY, TrafficStats};
use embtune_workloads::{BatchGenerator, Preset, PresetOptions};

fn traffic(c: &mut Criterion) {
    // Criteo Terabyte's 26 tables, shrunk: 256 samples of 214 ids a batch.
    let spec = Preset::CriteoTerabyte.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
    let g = BatchGenerator::new(&spec).unwrap();
    let batches: Vec<Arc<_>> = g.pool(0, 64).into_iter().map(Arc::new).collect();
    let tables: Arc<[u16]> = (0..spec.tables.len() as u16).collect();
    let ids_per_batch = batches[0].ids.len() as u64;

    let mut group = c.benchmark_group("traffic");
    group.sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    // Sampling off: the exact counts alone, what every request pays.
    let off = TrafficStats::start(0);
    off.reset(1);
    let mut i = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("record, counts only (per request)", |b| {
        b.iter(|| {
            off.record(1, &tables, &batches[i % batches.len()]);
            i += 1;
        })
    });
    // The default: one request in 64 also goes to the counting thread (an Arc clone and a
    // bounded try_send); its work is measured below, per id.
    let on = TrafficStats::start(embtune_worker::server::DEFAULT_TRAFFIC_SAMPLE);
    on.reset(1);
    group.bench_function("record, default sampling (per request)", |b| {
        b.iter(|| {
            on.record(1, &tables, &batches[i % batches.len()]);
            i += 1;
        })
    });
    group.throughput(Throughput::Elements(ids_per_batch));
    group.bench_function("frequent items, one batch's ids", |b| {
        let mut f = FrequentItems::new(HOT_CAPACITY);
        b.iter(|| {
            for &id in &batches[i % batches.len()].ids {
                f.insert(id);
            }
            i += 1;
        })
    });
    // What the engine spends on the same batch, one core, every table replicated.
    let plan = Plan::from_placements(
        "bench",
        &spec,
        Topology::uniform(1, 1, 1 << 40),
        spec.tables.iter().map(|_| Placement::Replicated),
    );
    let engine = Engine::start(EngineConfig::with_cores(1));
    engine.deploy(&plan.assignment(&spec, 0)).unwrap();
    let mut next = 0usize;
    group.bench_function("engine, one batch (1 core)", |b| {
        b.iter_custom(|n| {
            let t = run_batches(&engine, &batches, next, n, 2);
            next += n as usize;
            t
        })
    });
    group.finish();
}

criterion_group!(benches, traffic);
criterion_main!(benches);
