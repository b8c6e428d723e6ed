//! Live re-planning as pure functions: the traffic the workers report is merged into an access
//! profile of the live traffic ([`LiveTraffic`]), compared with what the deployed plan was made
//! for ([`TableDrift`]), and handed to the cost model and the search, which say what a new plan
//! would gain ([`assess`]). After a switch, [`capacity`] turns the workers' counters into the
//! rate the busiest core allows, and [`judge`] decides whether the switch stays.
//!
//! Nothing here does I/O or reads a clock: the coordinator (`coordinator/src/replan.rs`) drains
//! the workers, passes the reports in, and carries out what comes back.

use std::collections::HashMap;

use embtune_protocol::replan::{Assessment, TableDrift};
use embtune_protocol::tuning::Objective;
use embtune_protocol::wire::TrafficReply;
use embtune_protocol::{Placement, Plan, Topology};
use embtune_workloads::{AccessDist, ModelSpec, Pooling, TableProfile};

use crate::cost::{Model, Node, Workload, predict_model};
use crate::rules::MemoryCaps;
use crate::search::{Estimator, SearchConfig, anneal};
use crate::space::Space;

/// Hot rows kept per table after merging the workers' summaries: enough for the cost model's
/// cache curves (which top the rest up linearly) and bounded whatever the table's size.
pub const MERGED_HOT: usize = 4096;

/// One table's live traffic, merged over the workers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveTable {
    pub lookups: u64,
    /// The samples the cluster served for this table (a sample whose ids were split over
    /// several workers counted once).
    pub samples: u64,
    /// Ids counted into `hot`, and the hottest rows with their counts, most frequent first.
    pub sampled: u64,
    pub hot: Vec<(u32, u64)>,
}

impl LiveTable {
    /// Mean ids per sample, if any sample was seen.
    pub fn pooling(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.lookups as f64 / self.samples as f64)
    }
}

/// The live traffic of a deployment over a window, one entry per table of the spec (`None` for
/// tables no worker saw: the clients' own tables, or tables nobody queried).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveTraffic {
    pub tables: Vec<Option<LiveTable>>,
    /// The longest window any worker reported, seconds.
    pub window_s: f64,
    pub requests: u64,
}

impl LiveTraffic {
    /// Look-ups seen on the workers, all tables.
    pub fn lookups(&self) -> u64 {
        self.tables.iter().flatten().map(|t| t.lookups).sum()
    }

    /// Samples the cluster served: the most any worker-held table saw (every query carries
    /// every table, so each worker-held table sees each of its samples once).
    pub fn samples(&self) -> u64 {
        self.tables.iter().flatten().map(|t| t.samples).max().unwrap_or(0)
    }
}

/// True when table `t`'s pieces live on more than one worker, so that each of those workers
/// sees every sample of a query (with part of its ids): its samples are counted by the busiest
/// worker, not summed.
fn split_over_workers(plan: &Plan, t: usize) -> bool {
    match &plan.tables[t].placement {
        Placement::RowRange { owners, .. } | Placement::Hash { owners } => {
            owners.iter().any(|c| c.worker != owners[0].worker)
        }
        Placement::Replicated | Placement::Owned(_) | Placement::Client => false,
    }
}

/// Merges the workers' reports for `plan` (reports for another plan are left out: their
/// traffic was served by a plan that is no longer deployed).
pub fn merge(plan: &Plan, plan_id: u64, reports: &[TrafficReply]) -> LiveTraffic {
    let n = plan.tables.len();
    let mut acc: Vec<(LiveTable, HashMap<u32, u64>)> = vec![Default::default(); n];
    let mut out = LiveTraffic { tables: vec![None; n], ..Default::default() };
    let split: Vec<bool> = (0..n).map(|t| split_over_workers(plan, t)).collect();
    for r in reports.iter().filter(|r| r.plan_id == plan_id) {
        out.window_s = out.window_s.max(r.window_ns as f64 / 1e9);
        out.requests += r.requests;
        for tt in &r.tables {
            let t = tt.table as usize;
            let Some((live, hot)) = acc.get_mut(t) else { continue };
            live.lookups += tt.lookups;
            live.samples = if split[t] { live.samples.max(tt.samples) } else { live.samples + tt.samples };
            live.sampled += tt.sampled;
            for &(id, c) in &tt.hot {
                *hot.entry(id).or_default() += c;
            }
            out.tables[t] = Some(LiveTable::default());
        }
    }
    for (t, (mut live, hot)) in acc.into_iter().enumerate() {
        if out.tables[t].is_none() {
            continue;
        }
        let mut hot: Vec<(u32, u64)> = hot.into_iter().collect();
        hot.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        hot.truncate(MERGED_HOT);
        live.hot = hot;
        out.tables[t] = Some(live);
    }
    out
}

/// The workload the live traffic is: the deployed spec with each seen table's pooling set to
/// the observed mean and its access curve to the observed one (a profile the cost model reads;
/// the spec's analytic distribution would otherwise win). Unseen tables keep the spec's.
pub fn live_workload(spec: &ModelSpec, base: &[TableProfile], live: &LiveTraffic) -> (ModelSpec, Vec<TableProfile>) {
    let mut s = spec.clone();
    let mut profiles: Vec<TableProfile> =
        (0..spec.tables.len()).map(|t| base.get(t).cloned().unwrap_or_default()).collect();
    for (t, lt) in live.tables.iter().enumerate() {
        let Some(lt) = lt else { continue };
        let ts = &mut s.tables[t];
        if let Some(mean) = lt.pooling().filter(|m| *m > 0.0) {
            ts.pooling = Pooling::Poisson { mean };
        }
        if lt.sampled > 0 && !lt.hot.is_empty() {
            ts.dist = AccessDist::Profile { path: "live traffic".into() };
            profiles[t] = TableProfile {
                rows: ts.rows,
                lookups: lt.sampled,
                hot: lt.hot.iter().map(|&(id, c)| (id, c.min(u32::MAX as u64) as u32)).collect(),
            };
        }
    }
    (s, profiles)
}

/// How each table's traffic moved, largest change first (by the larger of the changes of its
/// share of the look-ups and of its top-1% share). `lw` is [`live_workload`] of the same
/// traffic.
pub fn drift(spec: &ModelSpec, base: &[TableProfile], live: &LiveTraffic, lw: &Workload<'_>) -> Vec<TableDrift> {
    let planned = Workload { spec, profiles: base };
    let total_planned: f64 = (0..spec.tables.len()).map(|t| planned.lookups(t)).sum::<f64>().max(1e-9);
    let total_live = live.lookups().max(1) as f64;
    let mut out: Vec<(f64, TableDrift)> = live
        .tables
        .iter()
        .enumerate()
        .filter_map(|(t, lt)| {
            let lt = lt.as_ref()?;
            let rows = spec.tables[t].rows as f64;
            let d = TableDrift {
                table: spec.tables[t].name.clone(),
                pooling_planned: spec.tables[t].pooling.mean(),
                pooling_live: lt.pooling().unwrap_or(0.0),
                share_planned: planned.lookups(t) / total_planned,
                share_live: lt.lookups as f64 / total_live,
                top1_planned: planned.share(t, (rows * 0.01).max(1.0)),
                top1_live: lw.share(t, (rows * 0.01).max(1.0)),
            };
            let moved = (d.share_live - d.share_planned).abs().max((d.top1_live - d.top1_planned).abs());
            Some((moved, d))
        })
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().map(|(_, d)| d).collect()
}

/// What the re-planner needs to know about the cluster besides the traffic.
pub struct Cluster<'a> {
    pub topology: &'a Topology,
    pub nodes: &'a [Node],
    pub caps: &'a MemoryCaps,
}

/// How hard the search looks for a better plan.
#[derive(Clone, Debug)]
pub struct Effort {
    pub search: SearchConfig,
    /// Fewer look-ups than this in the window: too little traffic to judge, nothing proposed.
    pub min_lookups: u64,
}

impl Default for Effort {
    fn default() -> Self {
        Effort { search: SearchConfig { iterations: 1500, ..SearchConfig::default() }, min_lookups: 10_000 }
    }
}

/// True when two plans of one topology place, read and store every table alike (the name of
/// the strategy that made them aside): the tuner's own key for "measured before".
fn same_layout(a: &Plan, b: &Plan) -> bool {
    crate::job::plan_key(a) == crate::job::plan_key(b)
}

/// Compares the deployed `plan` (id `plan_id`, made for `spec` with profiles `base`) with the
/// best plan the cost model and the search find for the live traffic; proposes that plan when
/// it predicts at least `threshold` times the deployed plan's batches per second.
/// `out_of_time` is the caller's clock for the search.
#[allow(clippy::too_many_arguments)]
pub fn assess(
    spec: &ModelSpec,
    base: &[TableProfile],
    plan: &Plan,
    plan_id: u64,
    live: &LiveTraffic,
    cluster: &Cluster<'_>,
    threshold: f64,
    effort: &Effort,
    out_of_time: &dyn Fn() -> bool,
) -> Assessment {
    let lookups = live.lookups();
    let (live_spec, live_prof) = live_workload(spec, base, live);
    let lw = Workload { spec: &live_spec, profiles: &live_prof };
    let drift = drift(spec, base, live, &lw);
    let mut a = Assessment {
        plan_id,
        window_s: live.window_s,
        lookups,
        current: plan.summary(),
        proposed: plan.summary(),
        predicted_current: 0.0,
        predicted_proposed: 0.0,
        gain: 1.0,
        drift,
        verdict: String::new(),
        plan: None,
    };
    if lookups < effort.min_lookups {
        a.verdict = format!(
            "too little traffic to judge: {lookups} look-ups on the workers in {:.1}s (at least {} wanted)",
            live.window_s, effort.min_lookups
        );
        return a;
    }
    let model = Model::new(lw, cluster.nodes.to_vec());
    let current = predict_model(&model, plan).throughput();
    a.predicted_current = current;
    // Two starts: the deployed plan and the default placement for the live traffic; the
    // search then improves on the better of the two.
    let mut start = plan.clone();
    if let Ok(auto) = crate::make::default_plan(&live_spec, cluster.topology, &live_prof, cluster.caps)
        && predict_model(&model, &auto).throughput() > current
    {
        start = auto;
    }
    let cores: usize = cluster.topology.workers.iter().map(|w| w.cores as usize).sum();
    // The search moves placements only; the data-flow rule then picks each table's flow, as it
    // does for `auto`. A live switch is judged by measurement and rolled back when worse, and
    // the first trial of this on a 2-core machine showed why: the search's hot and blocked
    // flows, uncalibrated on a serving cluster, predicted 1.2x and measured 0.62x.
    let mut space = Space::new(&live_spec, &live_prof, cores, cluster.caps.l2_bytes);
    space.flows.retain(|f| matches!(f, embtune_protocol::DataFlow::Direct { .. }));
    for h in &mut space.hot_rows {
        h.clear();
    }
    let found = anneal(&model as &dyn Estimator, &space, Objective::Throughput, start, &effort.search, out_of_time);
    let mut searched = found.plan;
    crate::rules::apply_auto_flows(&mut searched, &live_spec, &live_prof, cluster.caps);
    let searched_value = predict_model(&model, &searched).throughput();
    // The smallest change that helps: the deployed plan with tables replicated, one at a time,
    // while that gains. It is kept unless the search's plan predicts clearly more: a switch is a
    // bet on the cost model, and on the 2-core VM the search's larger moves (splitting a hot
    // table over the workers) measured worse and were rolled back (BENCHMARKS.md, "Live
    // re-planning"), as the tuner keeps the simpler of two plans it cannot tell apart.
    let (minimal, minimal_value) = replicate_greedily(plan, &live_spec, &model);
    let (mut best, proposed) = if !same_layout(&minimal, plan) && searched_value <= minimal_value * SIMPLER_WINS_BELOW {
        (minimal, minimal_value)
    } else {
        (searched, searched_value)
    };
    if same_layout(&best, plan) || proposed <= current {
        a.verdict = "the deployed plan is still the best the cost model finds for this traffic".into();
        return a;
    }
    // The plan is deployed for the deployed spec (what clients and workers know); the live
    // workload only scored it.
    best.spec_digest = spec.digest();
    best.strategy = "replanned".into();
    a.proposed = best.summary();
    a.predicted_proposed = proposed;
    a.gain = proposed / current.max(1e-9);
    if a.gain >= threshold {
        a.verdict = format!("propose: {:.2}x predicted for the live traffic (threshold {threshold:.2}x)", a.gain);
        a.plan = Some(best);
    } else {
        a.verdict = format!("keep: the best plan found predicts {:.2}x, below the threshold {threshold:.2}x", a.gain);
    }
    a
}

/// A searched plan must predict this many times the minimal change's value to be proposed
/// instead of it.
pub const SIMPLER_WINS_BELOW: f64 = 1.15;

/// The deployed plan with tables replicated one at a time, the move the model prices best
/// first, for as long as a move gains and the plan stays valid (memory): the smallest change
/// that balances a table whose traffic grew. Returns the plan and its predicted throughput.
pub fn replicate_greedily(plan: &Plan, spec: &ModelSpec, model: &Model<'_>) -> (Plan, f64) {
    let mut best = plan.clone();
    let mut value = predict_model(model, &best).throughput();
    loop {
        let mut step: Option<(Plan, f64)> = None;
        for t in 0..best.tables.len() {
            if matches!(best.tables[t].placement, Placement::Replicated | Placement::Client) {
                continue;
            }
            let mut p = best.clone();
            p.tables[t].placement = Placement::Replicated;
            if p.validate(spec).is_err() {
                continue;
            }
            let v = predict_model(model, &p).throughput();
            if v > value * 1.001 && step.as_ref().is_none_or(|(_, sv)| v > *sv) {
                step = Some((p, v));
            }
        }
        match step {
            Some((p, v)) => (best, value) = (p, v),
            None => return (best, value),
        }
    }
}

/// Samples per second the busiest core of the cluster allows, from two readings of the
/// workers' cumulative per-core busy time and the samples served between them:
/// `samples / max(busy)`. Under any load below saturation this is what the plan could serve,
/// so plans measured over the same traffic compare by it even when clients set the rate.
pub fn capacity(samples: u64, busy_before: &[u64], busy_after: &[u64]) -> Option<f64> {
    let busiest = busy_after.iter().zip(busy_before).map(|(a, b)| a.saturating_sub(*b)).max()?;
    (busiest > 0 && samples > 0).then(|| samples as f64 / (busiest as f64 / 1e9))
}

/// Whether a switch stays: the new plan must keep at least `1 / (1 + margin)` of the old plan's
/// measured capacity (a loss inside the noise margin is a tie, and a tie keeps the plan the
/// cost model prefers).
pub fn judge(before: f64, after: f64, margin: f64) -> bool {
    after * (1.0 + margin) >= before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use crate::cost::Coefficients;
    use embtune_protocol::wire::TableTraffic;
    use embtune_workloads::{AccessProfile, BatchGenerator, TableSpec};

    fn spec(poolings: &[u32]) -> ModelSpec {
        ModelSpec {
            name: "drift".into(),
            batch_size: 64,
            seed: 1,
            source: String::new(),
            tables: poolings
                .iter()
                .enumerate()
                .map(|(t, &p)| TableSpec {
                    name: format!("t{t}"),
                    rows: 20_000,
                    dim: 32,
                    row_type: Default::default(),
                    pooling: Pooling::Fixed(p),
                    mode: Default::default(),
                    dist: AccessDist::Zipf { s: 1.05 },
                    quantizable: false,
                })
                .collect(),
        }
    }

    /// What a worker holding the whole of every table would report for these batches.
    fn report(plan_id: u64, spec: &ModelSpec, batches: &[embtune_workloads::QueryBatch]) -> TrafficReply {
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, batches);
        let bs = spec.batch_size as u64;
        TrafficReply {
            plan_id,
            window_ns: 1_000_000_000,
            sample_every: 1,
            requests: batches.len() as u64,
            tables: prof
                .tables
                .iter()
                .enumerate()
                .map(|(t, p)| TableTraffic {
                    table: t as u16,
                    lookups: p.lookups,
                    samples: bs * batches.len() as u64,
                    sampled: p.lookups,
                    hot: p.hot.iter().map(|&(id, c)| (id, c as u64)).collect(),
                })
                .collect(),
            cores: vec![],
        }
    }

    fn cluster() -> (Topology, Vec<Node>, MemoryCaps) {
        let topo = Topology::uniform(2, 2, 1 << 30);
        let caps = MemoryCaps::default();
        (topo, vec![Node { caps, coef: Coefficients::default() }; 2], caps)
    }

    #[test]
    fn merged_traffic_counts_split_tables_once_and_sums_replicas() {
        let s = spec(&[4, 4, 4, 4]);
        let (topo, _, _) = cluster();
        let placements = (0..4).map(|t| match t {
            0 => Placement::Replicated,
            _ => Placement::Hash {
                owners: vec![embtune_protocol::CoreId::new(0, 0), embtune_protocol::CoreId::new(1, 0)],
            },
        });
        let plan = Plan::from_placements("test", &s, topo, placements);
        let r = |lookups: u64, samples: u64, hot: Vec<(u32, u64)>| TrafficReply {
            plan_id: 7,
            window_ns: 2_000_000_000,
            sample_every: 1,
            requests: 1,
            tables: (0..4)
                .map(|t| TableTraffic { table: t, lookups, samples, sampled: lookups, hot: hot.clone() })
                .collect(),
            cores: vec![],
        };
        let stale = TrafficReply { plan_id: 6, ..r(1000, 1000, vec![]) };
        let live = merge(&plan, 7, &[r(40, 10, vec![(5, 3), (9, 1)]), r(60, 10, vec![(5, 2)]), stale]);
        let t0 = live.tables[0].as_ref().unwrap();
        // The replicated table's samples went to one worker or the other: summed.
        assert_eq!((t0.lookups, t0.samples, t0.pooling()), (100, 20, Some(5.0)));
        // A table split over both workers: each saw all ten samples.
        let t1 = live.tables[1].as_ref().unwrap();
        assert_eq!((t1.samples, t1.pooling()), (10, Some(10.0)));
        assert_eq!(t1.hot, vec![(5, 5), (9, 1)]);
        assert_eq!(live.window_s, 2.0);
        assert_eq!(live.samples(), 20);
    }

    #[test]
    fn unchanged_traffic_proposes_nothing() {
        let s = spec(&[4, 4, 4, 4]);
        let (topo, nodes, caps) = cluster();
        let g = BatchGenerator::new(&s).unwrap();
        let batches: Vec<_> = (0..40).map(|i| g.batch(i)).collect();
        let base = AccessProfile::from_batches(&s.tables.iter().map(|t| t.rows).collect::<Vec<_>>(), &batches).tables;
        let plan = crate::default_plan(&s, &topo, &base, &caps).unwrap();
        let live = merge(&plan, 1, &[report(1, &s, &batches)]);
        let c = Cluster { topology: &topo, nodes: &nodes, caps: &caps };
        let a = assess(&s, &base, &plan, 1, &live, &c, 1.1, &Effort::default(), &|| false);
        assert!(a.plan.is_none(), "{}: gain {}", a.verdict, a.gain);
        assert!(a.gain < 1.1);
        let d = &a.drift[0];
        assert!((d.pooling_live - 4.0).abs() < 1e-9 && (d.share_live - 0.25).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn a_table_whose_pooling_grew_gets_a_better_plan() {
        // Planned: every table pools 4 ids, so round-robin (a table per core) is balanced.
        // Live: table 0 pools 200, so the core that owns it is the bottleneck; spreading it
        // is what a re-plan must find.
        let planned = spec(&[4, 4, 4, 4]);
        let live_spec = spec(&[200, 4, 4, 4]);
        let (topo, nodes, caps) = cluster();
        let plan = Strategy::RoundRobin.plan(&planned, &topo, &Default::default()).unwrap();
        let g = BatchGenerator::new(&live_spec).unwrap();
        let batches: Vec<_> = (0..40).map(|i| g.batch(i)).collect();
        let live = merge(&plan, 3, &[report(3, &live_spec, &batches)]);
        let c = Cluster { topology: &topo, nodes: &nodes, caps: &caps };
        let a = assess(&planned, &[], &plan, 3, &live, &c, 1.1, &Effort::default(), &|| false);
        assert!(a.gain >= 1.5, "{}: gain {}", a.verdict, a.gain);
        let p = a.plan.as_ref().expect("a proposal");
        assert_eq!(p.spec_digest, planned.digest(), "the proposal is deployed for the deployed spec");
        p.validate(&planned).unwrap();
        assert_eq!(a.drift[0].table, planned.tables[0].name, "the table that moved comes first");
        assert!((a.drift[0].pooling_live - 200.0).abs() < 1e-9);
        // Below the threshold the same finding is only reported.
        let a = assess(&planned, &[], &plan, 3, &live, &c, 1000.0, &Effort::default(), &|| false);
        assert!(a.plan.is_none() && a.verdict.starts_with("keep"), "{}", a.verdict);
    }

    #[test]
    fn the_minimal_change_replicates_the_table_that_grew_and_leaves_the_rest() {
        let planned = spec(&[4, 4, 4, 4]);
        let live_spec = spec(&[200, 4, 4, 4]);
        let (topo, nodes, _) = cluster();
        let plan = Strategy::RoundRobin.plan(&planned, &topo, &Default::default()).unwrap();
        let model = Model::new(Workload { spec: &live_spec, profiles: &[] }, nodes);
        let (p, v) = replicate_greedily(&plan, &live_spec, &model);
        assert_eq!(p.tables[0].placement, Placement::Replicated, "{}", p.summary());
        for t in 1..4 {
            assert_eq!(p.tables[t].placement, plan.tables[t].placement, "table {t} stays: {}", p.summary());
        }
        assert!(v > predict_model(&model, &plan).throughput() * 1.3);
        // Nothing to gain: the plan comes back as it was.
        let flat = Model::new(Workload { spec: &planned, profiles: &[] }, model.nodes.clone());
        let all = Strategy::AllReplicate.plan(&planned, &topo, &Default::default()).unwrap();
        assert!(same_layout(&replicate_greedily(&all, &planned, &flat).0, &all));
    }

    #[test]
    fn too_little_traffic_is_not_judged() {
        let s = spec(&[4, 4, 4, 4]);
        let (topo, nodes, caps) = cluster();
        let plan = crate::default_plan(&s, &topo, &[], &caps).unwrap();
        let g = BatchGenerator::new(&s).unwrap();
        let live = merge(&plan, 1, &[report(1, &s, &[g.batch(0)])]);
        let c = Cluster { topology: &topo, nodes: &nodes, caps: &caps };
        let a = assess(&s, &[], &plan, 1, &live, &c, 1.1, &Effort::default(), &|| false);
        assert!(a.plan.is_none() && a.verdict.starts_with("too little traffic"), "{}", a.verdict);
    }

    #[test]
    fn capacity_is_set_by_the_busiest_core_and_judge_keeps_ties() {
        assert_eq!(capacity(1000, &[0, 0], &[500_000_000, 250_000_000]), Some(2000.0));
        assert_eq!(capacity(0, &[0], &[10]), None);
        assert_eq!(capacity(10, &[5], &[5]), None);
        assert!(judge(100.0, 96.0, 0.05));
        assert!(!judge(100.0, 90.0, 0.05));
        assert!(judge(100.0, 150.0, 0.05));
    }
}
