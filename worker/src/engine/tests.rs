//! Engine tests: every data flow, row type and placement against the naive reference.

use std::sync::Arc;

use proptest::prelude::*;

use embtune_protocol::{CoreId, DataFlow, Knobs, Placement, Plan, Topology};
use embtune_workloads::{AccessDist, BatchGenerator, ModelSpec, Pooling, PoolingMode, QueryBatch, RowType, TableSpec};

use super::kernels::Isa;
use super::reference::Reference;
use super::*;

fn engine(cores: usize, isa: Option<Isa>) -> Engine {
    Engine::start(EngineConfig { cpus: (0..cores).collect(), pin: false, huge_pages: false, isa })
}

fn table(name: &str, rows: u64, dim: u32, row_type: RowType, mode: PoolingMode, dist: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        rows,
        dim,
        row_type,
        pooling: Pooling::Uniform { min: 0, max: 9 },
        mode,
        dist: dist.parse().unwrap(),
        quantizable: false,
    }
}

fn plan_for(spec: &ModelSpec, cores: u16, placements: Vec<Placement>, flows: Vec<DataFlow>, sub_batch: u32) -> Plan {
    let mut plan = Plan::from_placements("test", spec, Topology::uniform(1, cores, 1 << 40), placements)
        .with_knobs(Knobs { sub_batch, inflight_per_worker: 1 });
    plan.tables.truncate(flows.len());
    for (t, flow) in plan.tables.iter_mut().zip(flows) {
        t.flow = flow;
    }
    plan
}

/// Deploys `plan` (hot ids from the batches' profile) and checks `batches` against the reference.
fn check(spec: &ModelSpec, plan: &Plan, batches: &[QueryBatch], isa: Option<Isa>) {
    plan.validate(spec).unwrap();
    let cores = plan.topology.workers[0].cores as usize;
    let e = engine(cores, isa);
    let mut a = plan.assignment(spec, 0);
    let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
    let profile = embtune_workloads::AccessProfile::from_batches(&rows, batches);
    a.fill_hot_ids(plan, |t, n| profile.tables[t].hottest(n));
    e.deploy(&a).unwrap();
    let reference = Reference::new(spec, &plan.tables.iter().map(|t| t.row_type).collect::<Vec<_>>());
    for b in batches {
        let b = Arc::new(b.clone());
        let out = e.lookup(Lookup::all_tables(b.clone())).unwrap();
        let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
        reference.pool(&b, &tables).check(&out.pooled).unwrap_or_else(|m| panic!("{}: {m}", plan.summary()));
    }
}

fn arb_flow() -> impl Strategy<Value = DataFlow> {
    prop_oneof![
        (0u16..40).prop_map(|prefetch| DataFlow::Direct { prefetch }),
        (1u32..200, 0u16..40).prop_map(|(hot_rows, prefetch)| DataFlow::HotCache { hot_rows, prefetch }),
        (1u32..300).prop_map(|block_rows| DataFlow::Blocked { block_rows }),
    ]
}

fn arb_row_type() -> impl Strategy<Value = RowType> {
    prop_oneof![Just(RowType::F32), Just(RowType::F16), Just(RowType::Int8)]
}

/// A placement of a table of `rows` rows over `cores` cores of one worker.
fn arb_placement(rows: u64, cores: u16) -> impl Strategy<Value = Placement> {
    let core = move |c: u16| CoreId::new(0, c % cores);
    prop_oneof![
        Just(Placement::Replicated),
        (0..cores).prop_map(move |c| Placement::Owned(core(c))),
        (1usize..5, any::<u64>()).prop_map(move |(k, seed)| {
            let k = k.min(rows as usize).max(1);
            // k - 1 distinct cut points inside (0, rows).
            let mut cuts: Vec<u64> =
                (1..k as u64).map(|i| (i * rows / k as u64 + seed % 3).clamp(1, rows - 1)).collect();
            cuts.dedup();
            let mut bounds = vec![0];
            bounds.extend(cuts);
            bounds.push(rows);
            bounds.dedup();
            let owners = (0..bounds.len() - 1).map(|i| core(i as u16 + (seed % 7) as u16)).collect();
            Placement::RowRange { bounds, owners }
        }),
        (1usize..4).prop_map(move |k| Placement::Hash { owners: (0..k).map(|i| core(i as u16)).collect() }),
    ]
}

fn arb_case() -> impl Strategy<Value = (ModelSpec, Plan, u64)> {
    (1u16..4, 1usize..4, any::<u64>(), 1u32..20).prop_flat_map(|(cores, ntables, seed, sub)| {
        let tables = proptest::collection::vec(
            (
                1u64..3000,
                prop_oneof![Just(1u32), Just(8), Just(16), Just(20), Just(64), Just(130)],
                arb_row_type(),
                prop_oneof![Just(PoolingMode::Sum), Just(PoolingMode::Mean)],
                prop_oneof![Just("uniform"), Just("zipf:1.1"), Just("hotset:0.9:0.01")],
            ),
            ntables,
        );
        tables.prop_flat_map(move |ts| {
            let spec = ModelSpec {
                name: "prop".into(),
                batch_size: 13,
                seed,
                source: String::new(),
                tables: ts
                    .iter()
                    .enumerate()
                    .map(|(i, (rows, dim, rt, mode, dist))| table(&format!("t{i}"), *rows, *dim, *rt, *mode, dist))
                    .collect(),
            };
            let placements: Vec<_> = spec.tables.iter().map(|t| arb_placement(t.rows, cores)).collect();
            let flows = proptest::collection::vec(arb_flow(), spec.tables.len());
            (Just(spec), placements, flows).prop_map(move |(spec, p, f)| {
                let plan = plan_for(&spec, cores, p, f, sub);
                (spec, plan, seed)
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random specs, plans and batches: the engine equals the f64 reference.
    #[test]
    fn engine_matches_reference((spec, plan, seed) in arb_case()) {
        let g = BatchGenerator::with_seed(&spec, seed).unwrap();
        let batches: Vec<QueryBatch> = (0..3).map(|i| g.batch(i)).collect();
        check(&spec, &plan, &batches, None);
    }
}

#[test]
fn every_isa_and_flow_agrees_on_a_skewed_model() {
    let spec = ModelSpec {
        name: "skew".into(),
        batch_size: 64,
        seed: 3,
        source: String::new(),
        tables: vec![
            table("a", 5000, 64, RowType::F32, PoolingMode::Sum, "hotset:0.99:0.01"),
            table("b", 4000, 48, RowType::F16, PoolingMode::Mean, "zipf:1.05"),
            table("c", 3000, 16, RowType::Int8, PoolingMode::Sum, "uniform"),
        ],
    };
    let g = BatchGenerator::new(&spec).unwrap();
    let batches: Vec<QueryBatch> = (0..4).map(|i| g.batch(i)).collect();
    let flows = [
        DataFlow::Direct { prefetch: 16 },
        DataFlow::HotCache { hot_rows: 100, prefetch: 8 },
        DataFlow::Blocked { block_rows: 64 },
    ];
    for isa in Isa::supported() {
        for flow in flows {
            let placements = vec![
                Placement::Replicated,
                Placement::RowRange { bounds: vec![0, 1000, 4000], owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)] },
                Placement::Hash { owners: vec![CoreId::new(0, 1), CoreId::new(0, 0), CoreId::new(0, 1)] },
            ];
            let plan = plan_for(&spec, 2, placements, vec![flow; 3], 7);
            check(&spec, &plan, &batches, Some(isa));
        }
    }
}

#[test]
fn large_sharded_batches_are_reduced_in_slices_on_every_core() {
    // Large enough that the partials of the sharded tables are added by reduce tasks, with
    // requests in flight together so that reduce tasks of several requests interleave.
    let spec = ModelSpec {
        name: "reduce".into(),
        batch_size: 700,
        seed: 5,
        source: String::new(),
        tables: vec![
            table("wide", 6000, 96, RowType::F32, PoolingMode::Sum, "zipf:1.05"),
            table("mean", 3000, 64, RowType::F16, PoolingMode::Mean, "uniform"),
            table("rep", 500, 32, RowType::F32, PoolingMode::Sum, "uniform"),
        ],
    };
    let c = |i| CoreId::new(0, i);
    let placements = vec![
        Placement::RowRange { bounds: vec![0, 1000, 2500, 4000, 6000], owners: vec![c(0), c(1), c(2), c(0)] },
        Placement::Hash { owners: vec![c(2), c(1), c(0)] },
        Placement::Replicated,
    ];
    assert!(
        reduce_split(700, 96, 3, 3).1 > 1 && reduce_split(700, 64, 2, 3).1 > 1,
        "the test must reach the reduce tasks"
    );
    let plan = plan_for(&spec, 3, placements, vec![DataFlow::Direct { prefetch: 8 }; 3], 50);
    let e = engine(3, None);
    e.deploy(&plan.assignment(&spec, 0)).unwrap();
    let g = BatchGenerator::new(&spec).unwrap();
    let reference = Reference::new(&spec, &[RowType::F32, RowType::F16, RowType::F32]);
    let (tx, rx) = crossbeam_channel::unbounded();
    let batches: Vec<Arc<QueryBatch>> = (0..12).map(|i| Arc::new(g.batch(i))).collect();
    for (i, b) in batches.iter().enumerate() {
        let tx = tx.clone();
        e.submit(Lookup::all_tables(b.clone()), Box::new(move |r| tx.send((i, r)).unwrap()));
    }
    for _ in 0..batches.len() {
        let (i, r) = rx.recv().unwrap();
        let out = r.unwrap();
        reference.pool(&batches[i], &[0, 1, 2]).check(&out.pooled).unwrap_or_else(|m| panic!("batch {i}: {m}"));
        // Buffers go back to the pool and come out again with stale contents, which the
        // kernels must overwrite.
        e.recycle(out.pooled);
    }
}

fn simple() -> (Engine, ModelSpec) {
    let spec = ModelSpec {
        name: "s".into(),
        batch_size: 4,
        seed: 1,
        source: String::new(),
        tables: vec![
            table("x", 100, 8, RowType::F32, PoolingMode::Sum, "uniform"),
            table("y", 50, 4, RowType::F32, PoolingMode::Sum, "uniform"),
        ],
    };
    let plan = plan_for(
        &spec,
        2,
        vec![Placement::Replicated, Placement::Owned(CoreId::new(0, 1))],
        vec![DataFlow::DEFAULT; 2],
        2,
    );
    let e = engine(2, None);
    e.deploy(&plan.assignment(&spec, 0)).unwrap();
    (e, spec)
}

#[test]
fn out_of_range_ids_are_a_typed_error() {
    let (e, _) = simple();
    let b = QueryBatch::from_bags(&[vec![vec![1], vec![], vec![99], vec![3]], vec![vec![0], vec![50], vec![], vec![]]]);
    let err = e.lookup(Lookup::all_tables(Arc::new(b))).unwrap_err();
    assert_eq!(err, EngineError::RowOutOfRange { table: 1, name: "y".into(), id: 50, rows: 50 });
    // The engine still serves good requests afterwards.
    let ok =
        QueryBatch::from_bags(&[vec![vec![1], vec![], vec![99], vec![3]], vec![vec![0], vec![49], vec![], vec![]]]);
    assert!(e.lookup(Lookup::all_tables(Arc::new(ok))).is_ok());
}

#[test]
fn unknown_tables_and_bad_layouts_are_typed_errors() {
    let (e, _) = simple();
    let b = Arc::new(QueryBatch::from_bags(&[vec![vec![1]]]));
    let err = e
        .lookup(Lookup { batch: b.clone(), tables: Arc::from(vec![7u16]), finalize_mean: true, epoch: 0 })
        .unwrap_err();
    assert_eq!(err, EngineError::UnknownTable { table: 7 });
    let mut broken = (*b).clone();
    broken.offsets = vec![0, 5];
    let err = e.lookup(Lookup::all_tables(Arc::new(broken))).unwrap_err();
    assert!(matches!(err, EngineError::BadRequest(_)), "{err:?}");
    let err =
        e.lookup(Lookup { batch: b, tables: Arc::from(vec![0u16, 1]), finalize_mean: true, epoch: 0 }).unwrap_err();
    assert!(matches!(err, EngineError::BadRequest(_)), "{err:?}");
}

#[test]
fn ids_of_shards_held_elsewhere_are_refused() {
    let spec = ModelSpec {
        name: "s".into(),
        batch_size: 2,
        seed: 1,
        source: String::new(),
        tables: vec![table("x", 100, 8, RowType::F32, PoolingMode::Sum, "uniform")],
    };
    // Worker 0 holds rows 0..40; rows 40..100 live on worker 1.
    let mut plan = plan_for(
        &spec,
        1,
        vec![Placement::RowRange { bounds: vec![0, 40, 100], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] }],
        vec![DataFlow::DEFAULT],
        1,
    );
    plan.topology = Topology::uniform(2, 1, 1 << 30);
    let e = engine(1, None);
    e.deploy(&plan.assignment(&spec, 0)).unwrap();
    let b = QueryBatch::from_bags(&[vec![vec![3, 39], vec![40]]]);
    let err = e.lookup(Lookup::all_tables(Arc::new(b))).unwrap_err();
    assert_eq!(err, EngineError::NotHeld { table: 0, name: "x".into(), id: 40 });
}

#[test]
fn empty_batches_and_empty_bags_complete() {
    let (e, _) = simple();
    let b = QueryBatch { batch_size: 0, num_tables: 2, offsets: vec![0], ids: vec![] };
    let out = e.lookup(Lookup::all_tables(Arc::new(b))).unwrap();
    assert!(out.pooled.is_empty());
    let b = QueryBatch::from_bags(&[vec![vec![], vec![]], vec![vec![], vec![]]]);
    let out = e.lookup(Lookup::all_tables(Arc::new(b))).unwrap();
    assert!(out.pooled.iter().all(|&v| v == 0.0));
}

#[test]
fn many_concurrent_requests_all_complete_correctly() {
    let spec = embtune_workloads::Preset::Synthetic
        .spec(&embtune_workloads::PresetOptions {
            tables: Some(4),
            rows: Some(20_000),
            dim: Some(32),
            dist: Some(AccessDist::Zipf { s: 1.05 }),
            batch: Some(32),
            ..Default::default()
        })
        .unwrap();
    let plan = plan_for(
        &spec,
        2,
        vec![
            Placement::Replicated,
            Placement::Owned(CoreId::new(0, 0)),
            Placement::RowRange { bounds: vec![0, 7000, 20_000], owners: vec![CoreId::new(0, 1), CoreId::new(0, 0)] },
            Placement::Hash { owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)] },
        ],
        vec![
            DataFlow::DEFAULT,
            DataFlow::HotCache { hot_rows: 500, prefetch: 16 },
            DataFlow::Blocked { block_rows: 256 },
            DataFlow::DEFAULT,
        ],
        8,
    );
    let e = Arc::new(engine(2, None));
    e.deploy(&plan.assignment(&spec, 0)).unwrap();
    let g = BatchGenerator::new(&spec).unwrap();
    let batches: Vec<Arc<QueryBatch>> = (0..40).map(|i| Arc::new(g.batch(i))).collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    for (i, b) in batches.iter().enumerate() {
        let tx = tx.clone();
        e.submit(Lookup::all_tables(b.clone()), Box::new(move |r| tx.send((i, r)).unwrap()));
    }
    let reference = Reference::new(&spec, &[RowType::F32; 4]);
    for _ in 0..batches.len() {
        let (i, r) = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        reference.pool(&batches[i], &[0, 1, 2, 3]).check(&r.unwrap().pooled).unwrap();
    }
    let stats = e.stats();
    assert!(stats.iter().all(|s| s.tasks > 0), "every core worked: {stats:?}");
}

#[test]
fn redeploying_swaps_tables_without_disturbing_requests() {
    let (e, spec) = simple();
    let b = Arc::new(QueryBatch::from_bags(&[vec![vec![1, 2], vec![3]], vec![vec![4], vec![]]]));
    let before = e.lookup(Lookup::all_tables(b.clone())).unwrap().pooled;
    let plan = plan_for(
        &spec,
        2,
        vec![Placement::Hash { owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)] }, Placement::Replicated],
        vec![DataFlow::Blocked { block_rows: 4 }, DataFlow::HotCache { hot_rows: 3, prefetch: 2 }],
        1,
    );
    e.deploy(&plan.assignment(&spec, 0)).unwrap();
    let after = e.lookup(Lookup::all_tables(b)).unwrap().pooled;
    // Same rows, same sums: contents depend on the seed, not on the placement.
    for (x, y) in before.iter().zip(&after) {
        assert!((x - y).abs() < 1e-5);
    }
}

/// Two plans of one model whose tables hold different contents (the content seed follows the
/// spec's seed), so that a look-up served by the wrong plan would not match its reference.
fn two_plans() -> (ModelSpec, ModelSpec, WorkerAssignment, WorkerAssignment) {
    let spec_a = ModelSpec {
        name: "switch".into(),
        batch_size: 6,
        seed: 11,
        source: String::new(),
        tables: vec![
            table("x", 300, 8, RowType::F32, PoolingMode::Sum, "uniform"),
            table("y", 200, 16, RowType::F32, PoolingMode::Mean, "zipf:1.05"),
        ],
    };
    let spec_b = ModelSpec { seed: 12, ..spec_a.clone() };
    let c = |i| CoreId::new(0, i);
    let plan_a =
        plan_for(&spec_a, 2, vec![Placement::Replicated, Placement::Owned(c(1))], vec![DataFlow::DEFAULT; 2], 2);
    let plan_b = plan_for(
        &spec_b,
        2,
        vec![Placement::Hash { owners: vec![c(0), c(1)] }, Placement::Replicated],
        vec![DataFlow::Blocked { block_rows: 16 }, DataFlow::HotCache { hot_rows: 10, prefetch: 2 }],
        3,
    );
    let mut a = plan_a.assignment(&spec_a, 0);
    a.plan_id = 1;
    let mut b = plan_b.assignment(&spec_b, 0);
    b.plan_id = 2;
    (spec_a, spec_b, a, b)
}

/// Looks a batch up for plan `epoch` and checks it against the reference of `spec`.
fn served_by(e: &Engine, spec: &ModelSpec, batch: &Arc<QueryBatch>, epoch: u64) -> Result<(), EngineError> {
    let tables: Arc<[u16]> = (0..spec.tables.len() as u16).collect();
    let out = e.lookup(Lookup { batch: batch.clone(), tables: tables.clone(), finalize_mean: true, epoch })?;
    let reference = Reference::new(spec, &vec![RowType::F32; spec.tables.len()]);
    reference.pool(batch, &tables).check(&out.pooled).unwrap_or_else(|m| panic!("plan {epoch}: {m}"));
    Ok(())
}

#[test]
fn a_kept_plan_serves_its_epoch_beside_the_new_one_until_retired() {
    let (spec_a, spec_b, a, b) = two_plans();
    let e = engine(2, None);
    e.deploy(&a).unwrap();
    let g = BatchGenerator::new(&spec_a).unwrap();
    let batch = Arc::new(g.batch(0));
    served_by(&e, &spec_a, &batch, 1).unwrap();
    e.deploy_keeping(&b, true).unwrap();
    assert_eq!(e.epochs(), (2, Some(1)));
    // Both plans serve, each from its own tables; epoch 0 means the current one.
    served_by(&e, &spec_a, &batch, 1).unwrap();
    served_by(&e, &spec_b, &batch, 2).unwrap();
    served_by(&e, &spec_b, &batch, 0).unwrap();
    assert_eq!(served_by(&e, &spec_b, &batch, 3), Err(EngineError::StalePlan { asked: 3, held: 2 }));
    e.retire(2);
    assert_eq!(e.epochs(), (2, None));
    assert_eq!(served_by(&e, &spec_a, &batch, 1), Err(EngineError::StalePlan { asked: 1, held: 2 }));
    served_by(&e, &spec_b, &batch, 2).unwrap();
}

#[test]
fn a_deployment_that_does_not_keep_drops_the_old_plan_at_once() {
    let (spec_a, spec_b, a, b) = two_plans();
    let e = engine(2, None);
    let batch = Arc::new(BatchGenerator::new(&spec_a).unwrap().batch(1));
    e.deploy(&a).unwrap();
    e.deploy(&b).unwrap();
    assert_eq!(e.epochs(), (2, None));
    assert_eq!(served_by(&e, &spec_a, &batch, 1), Err(EngineError::StalePlan { asked: 1, held: 2 }));
    served_by(&e, &spec_b, &batch, 2).unwrap();
    // At most two are held: the next deployment drops the kept one, even when it keeps its own
    // predecessor.
    e.deploy_keeping(&a, true).unwrap();
    assert_eq!(e.epochs(), (1, Some(2)));
    let mut c = b.clone();
    c.plan_id = 3;
    e.deploy_keeping(&c, true).unwrap();
    assert_eq!(e.epochs(), (3, Some(1)));
    served_by(&e, &spec_a, &batch, 1).unwrap();
    served_by(&e, &spec_b, &batch, 3).unwrap();
    assert!(matches!(served_by(&e, &spec_b, &batch, 2), Err(EngineError::StalePlan { .. })));
    // Retiring to the kept plan makes it the only one; undeploying drops everything.
    e.retire(1);
    assert_eq!(e.epochs(), (1, None));
    served_by(&e, &spec_a, &batch, 1).unwrap();
    e.deploy_keeping(&b, true).unwrap();
    e.undeploy();
    assert_eq!(e.epochs(), (0, None));
    assert!(matches!(served_by(&e, &spec_a, &batch, 1), Err(EngineError::StalePlan { .. })));
}

#[test]
fn requests_in_flight_on_a_retired_plan_finish_on_its_tables() {
    let (spec_a, _, a, b) = two_plans();
    let e = engine(2, None);
    e.deploy(&a).unwrap();
    e.deploy_keeping(&b, true).unwrap();
    let g = BatchGenerator::new(&spec_a).unwrap();
    let batches: Vec<Arc<QueryBatch>> = (0..20).map(|i| Arc::new(g.batch(i))).collect();
    let (tx, rx) = crossbeam_channel::unbounded();
    let tables: Arc<[u16]> = Arc::from(vec![0u16, 1]);
    for (i, batch) in batches.iter().enumerate() {
        let tx = tx.clone();
        let req = Lookup { batch: batch.clone(), tables: tables.clone(), finalize_mean: true, epoch: 1 };
        e.submit(req, Box::new(move |r| tx.send((i, r)).unwrap()));
    }
    e.retire(2);
    let reference = Reference::new(&spec_a, &[RowType::F32; 2]);
    for _ in 0..batches.len() {
        let (i, r) = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        // Each request was either accepted before the retirement, and then reads plan 1's
        // tables to the end, or refused.
        match r {
            Ok(out) => reference.pool(&batches[i], &tables).check(&out.pooled).unwrap(),
            Err(err) => assert_eq!(err, EngineError::StalePlan { asked: 1, held: 2 }),
        }
    }
}

#[test]
fn a_cancelled_deployment_frees_its_tables_and_leaves_the_current_plan_serving() {
    let (spec_a, spec_b, a, b) = two_plans();
    let e = engine(2, None);
    e.deploy(&a).unwrap();
    let batch = Arc::new(BatchGenerator::new(&spec_a).unwrap().batch(2));
    let progress = DeployProgress::default();
    progress.cancel();
    let err = e.deploy_watched(&b, true, &progress).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    // Nothing of plan 2 is held, and plan 1 serves as before.
    assert_eq!(e.epochs(), (1, None));
    served_by(&e, &spec_a, &batch, 1).unwrap();
    // A fresh deployment after a reset goes through and counts every byte it wrote.
    progress.reset();
    let r = e.deploy_watched(&b, false, &progress).unwrap();
    assert!(progress.total() > 0);
    assert_eq!(progress.done(), progress.total());
    // The report also counts the hot-row copies, made after the fill.
    assert!(progress.total() <= r.bytes && r.bytes - progress.total() < 1024, "{} {}", progress.total(), r.bytes);
    served_by(&e, &spec_b, &batch, 2).unwrap();
}

#[test]
fn a_deployment_reports_progress_in_chunks_and_stops_at_the_next_one_when_cancelled() {
    // 96 MiB of rows in one replicated table: two cores each fill 48 MiB, in chunks of 64 MiB
    // at most, so the watcher sees progress before the end; cancelling after the first chunk
    // must stop the deployment or, if it had already finished, change nothing.
    let spec = ModelSpec {
        name: "big".into(),
        batch_size: 4,
        seed: 3,
        source: String::new(),
        tables: vec![table("t", 384 * 1024, 64, RowType::F32, PoolingMode::Sum, "uniform")],
    };
    let plan = plan_for(&spec, 2, vec![Placement::Replicated], vec![DataFlow::DEFAULT], 2);
    let mut a = plan.assignment(&spec, 0);
    a.plan_id = 7;
    let e = engine(2, None);
    let progress = Arc::new(DeployProgress::default());
    let watcher = {
        let p = progress.clone();
        std::thread::spawn(move || {
            while p.done() == 0 {
                std::thread::yield_now();
            }
            let seen = (p.done(), p.total());
            p.cancel();
            seen
        })
    };
    let r = e.deploy_watched(&a, false, &progress);
    let (done, total) = watcher.join().unwrap();
    assert_eq!(total, 384 * 1024 * 64 * 4);
    assert!(done > 0 && done <= total);
    match r {
        Err(err) => {
            assert!(err.to_string().contains("cancelled"), "{err}");
            assert_eq!(e.epochs(), (0, None));
        }
        Ok(_) => assert_eq!(e.epochs(), (7, None)),
    }
}
