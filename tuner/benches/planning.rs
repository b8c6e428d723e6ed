//! How long the model-driven search takes to place many tables on many cores:
//! `cargo bench -p embtune-tuner --bench planning` (1,000 tables on 64 cores).

use criterion::{Criterion, criterion_group, criterion_main};

use embtune_protocol::Topology;
use embtune_tuner::cost::{Coefficients, Model, Node, Workload};
use embtune_tuner::rules::MemoryCaps;
use embtune_tuner::search::{Objective, SearchConfig, anneal};
use embtune_tuner::space::Space;
use embtune_tuner::{BaselineOptions, Strategy};
use embtune_workloads::{AccessDist, ModelSpec, Pooling, PoolingMode, RowType, TableProfile, TableSpec};

/// 1,000 tables with Criteo-like spread of sizes and skews.
pub fn big_model(tables: usize) -> ModelSpec {
    let t = (0..tables)
        .map(|i| {
            let rows = [100u64, 5_000, 200_000, 2_000_000, 20_000_000][i % 5] + i as u64;
            TableSpec {
                name: format!("t{i}"),
                rows,
                dim: 64,
                row_type: RowType::F32,
                pooling: Pooling::Fixed([1, 2, 5, 20][i % 4]),
                mode: PoolingMode::Sum,
                dist: if i % 3 == 0 { AccessDist::Uniform } else { AccessDist::Zipf { s: 1.05 } },
                quantizable: false,
            }
        })
        .collect();
    ModelSpec { name: "big".into(), batch_size: 256, seed: 1, source: String::new(), tables: t }
}

fn planning(c: &mut Criterion) {
    let spec = big_model(1000);
    let profiles = vec![TableProfile::default(); spec.tables.len()];
    let topo = Topology::uniform(4, 16, spec.total_bytes());
    let model = Model::new(
        Workload { spec: &spec, profiles: &profiles },
        vec![Node { caps: MemoryCaps::default(), coef: Coefficients::default() }; 4],
    );
    let start = Strategy::GreedyCost.plan(&spec, &topo, &BaselineOptions::default()).unwrap();
    let space = Space::new(&spec, &profiles, 64, 1 << 20);
    let mut g = c.benchmark_group("planning");
    g.sample_size(10).measurement_time(std::time::Duration::from_secs(60));
    g.bench_function("1000-tables-64-cores-2000-moves", |b| {
        b.iter(|| {
            let cfg = SearchConfig { iterations: 2000, ..Default::default() };
            anneal(&model, &space, Objective::Throughput, start.clone(), &cfg, &|| false)
        })
    });
    g.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
