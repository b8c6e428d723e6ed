//! The gather ceiling beside the engine's direct flow, on one core, same table and batches:
//! `cargo bench -p embtune-worker --bench limit`. `embtune limit --threads N` runs the same
//! comparison on N cores with alternating rounds.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use embtune_worker::bench::run_batches;
use embtune_worker::limit::{LimitConfig, Setup};

fn limit(c: &mut Criterion) {
    let gib: f64 = std::env::var("EMBTUNE_LIMIT_GIB").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let cfg = LimitConfig { table_bytes: (gib * (1u64 << 30) as f64) as u64, ..Default::default() };
    let setup = Setup::new(&cfg).expect("the 2 GiB table");
    let lookups = setup.batches[0].lookups() as u64;
    let mut g = c.benchmark_group("limit");
    g.throughput(Throughput::Elements(lookups)).sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    for pf in [16usize, 32] {
        let mut next = 0usize;
        g.bench_function(format!("ceiling/pf{pf}"), |b| {
            b.iter_custom(|n| {
                let t = setup.ceiling_batches(next, n, pf);
                next += n as usize;
                t
            })
        });
        let engine = setup.engine(1, pf, cfg.batch, None).expect("deploy");
        let mut next = 0usize;
        g.bench_function(format!("engine-direct/pf{pf}"), |b| {
            b.iter_custom(|n| {
                let t = run_batches(&engine, &setup.batches, next, n, 2);
                next += n as usize;
                t
            })
        });
    }
    g.finish();
}

criterion_group!(benches, limit);
criterion_main!(benches);
