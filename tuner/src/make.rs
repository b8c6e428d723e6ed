//! Making a plan from a user's choice of strategy and flows.

use embtune_protocol::{CoreId, DataFlow, Knobs, Placement, Plan, PlanError, TablePlan, Topology};
use embtune_workloads::{ModelSpec, TableProfile};

use crate::rules::{MemoryCaps, apply_auto_flows, choose_flow};

/// How to choose each table's data flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowChoice {
    /// What the strategy chose: direct gathers for the baselines.
    Keep,
    /// The data-flow rule, per table.
    Auto,
    /// The same flow for every table.
    Direct,
    Hot,
    Blocked,
}

impl std::str::FromStr for FlowChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "keep" => FlowChoice::Keep,
            "auto" => FlowChoice::Auto,
            "direct" => FlowChoice::Direct,
            "hot" => FlowChoice::Hot,
            "blocked" => FlowChoice::Blocked,
            _ => return Err(format!("unknown flow choice `{s}`; use auto, direct, hot, blocked or keep")),
        })
    }
}

/// Applies a flow choice to every table of a plan. `prefetch` sets the distance of direct and
/// hot-cache flows when given.
pub fn set_flows(
    plan: &mut Plan,
    spec: &ModelSpec,
    profiles: &[TableProfile],
    cache: &MemoryCaps,
    choice: FlowChoice,
    prefetch: Option<u16>,
) {
    match choice {
        FlowChoice::Keep => {}
        FlowChoice::Auto => {
            apply_auto_flows(plan, spec, profiles, cache);
        }
        forced => {
            let empty = TableProfile::default();
            for (i, (tp, ts)) in plan.tables.iter_mut().zip(&spec.tables).enumerate() {
                let rb = ts.row_bytes() as u64;
                tp.flow = match forced {
                    FlowChoice::Direct => DataFlow::Direct { prefetch: 16 },
                    FlowChoice::Blocked => DataFlow::Blocked { block_rows: (cache.l2_bytes / 2 / rb).max(64) as u32 },
                    _ => {
                        let budget = cache.l2_bytes / 2 + cache.llc_share();
                        match choose_flow(
                            ts,
                            profiles.get(i).unwrap_or(&empty),
                            spec.batch_size,
                            ts.rows,
                            cache,
                            budget,
                        )
                        .flow
                        {
                            hot @ DataFlow::HotCache { .. } => hot,
                            _ => {
                                let p = profiles.get(i).unwrap_or(&empty);
                                let n = p.rows_for_share(0.9).min(budget / rb).max(1);
                                DataFlow::HotCache { hot_rows: n as u32, prefetch: 16 }
                            }
                        }
                    }
                };
            }
            plan.strategy.push_str(match forced {
                FlowChoice::Direct => "+direct",
                FlowChoice::Blocked => "+blocked",
                _ => "+hot",
            });
        }
    }
    if let Some(pf) = prefetch {
        for t in &mut plan.tables {
            match &mut t.flow {
                DataFlow::Direct { prefetch } | DataFlow::HotCache { prefetch, .. } => *prefetch = pf,
                DataFlow::Blocked { .. } => {}
            }
        }
    }
}

/// The default plan when the user names no strategy: the asymmetric placement, by where each
/// table can live in the memory hierarchy.
///
/// - A table that fits in half of one core's L2 is replicated: every core reads it from its
///   own L2.
/// - A table that fits in half the L2 of a worker's cores together is split by rows into
///   pieces of at most half an L2 each, owned by the least-loaded cores of the least-loaded
///   worker: each piece stays resident in its owner's L2, where a shared copy would be read
///   from the last-level cache or DRAM.
/// - A larger table gains nothing from being split across one worker's cores (one copy is read
///   by all of them either way, with no partial sums to add), so it is replicated on every
///   worker as long as every worker's memory holds the replicated tables; the largest ones
///   beyond that are split by access mass over every core of the cluster.
///
/// The data-flow rule then picks each piece's flow.
pub fn default_plan(
    spec: &ModelSpec,
    topo: &Topology,
    profiles: &[TableProfile],
    cache: &MemoryCaps,
) -> Result<Plan, PlanError> {
    let half_l2 = (cache.l2_bytes / 2).max(1);
    let all_cores: Vec<CoreId> = topo
        .workers
        .iter()
        .enumerate()
        .flat_map(|(w, s)| (0..s.cores).map(move |c| CoreId::new(w as u16, c)))
        .collect();
    if all_cores.is_empty() {
        return Err(PlanError::Invalid("the topology has no cores".into()));
    }
    // Look-ups per batch on each core from the pieces owned so far, to place the next pieces.
    let mut load: Vec<Vec<f64>> = topo.workers.iter().map(|w| vec![0.0; w.cores as usize]).collect();
    let lookups = |i: usize| profiles.get(i).map_or(1.0, |p| p.lookups.max(1) as f64);
    let mut placements: Vec<Option<Placement>> = vec![None; spec.tables.len()];
    let mut large: Vec<usize> = Vec::new();
    // Heaviest tables first, so that the greedy choice of owners balances.
    let mut order: Vec<usize> = (0..spec.tables.len()).collect();
    order.sort_by(|&a, &b| lookups(b).total_cmp(&lookups(a)));
    for i in order {
        let t = &spec.tables[i];
        let bytes = t.bytes();
        if bytes <= half_l2 {
            placements[i] = Some(Placement::Replicated);
            continue;
        }
        let k = bytes.div_ceil(half_l2).min(t.rows) as usize;
        // The least-loaded worker with enough cores for one piece per core.
        let worker = (0..topo.workers.len())
            .filter(|&w| topo.workers[w].cores as usize >= k)
            .min_by(|&a, &b| load[a].iter().sum::<f64>().total_cmp(&load[b].iter().sum::<f64>()));
        let Some(w) = worker else {
            large.push(i);
            continue;
        };
        let mut cores: Vec<usize> = (0..load[w].len()).collect();
        cores.sort_by(|&a, &b| load[w][a].total_cmp(&load[w][b]));
        cores.truncate(k);
        for &c in &cores {
            load[w][c] += lookups(i) / k as f64;
        }
        let owners: Vec<CoreId> = cores.iter().map(|&c| CoreId::new(w as u16, c as u16)).collect();
        placements[i] = Some(if k == 1 {
            Placement::Owned(owners[0])
        } else {
            Placement::RowRange { bounds: (0..=k as u64).map(|j| j * t.rows / k as u64).collect(), owners }
        });
    }
    // Replicate the large tables, smallest first, while every worker can hold them with the
    // pieces it already owns; split the rest over the whole cluster.
    large.sort_by_key(|&i| spec.tables[i].bytes());
    let owned = |w: usize, placements: &[Option<Placement>]| -> u64 {
        placements
            .iter()
            .zip(&spec.tables)
            .map(|(p, t)| match p {
                Some(Placement::Replicated) => t.bytes(),
                Some(p) => {
                    let mine = p.owners().iter().filter(|c| c.worker as usize == w).count() as u64;
                    t.bytes() * mine / p.shards().max(1) as u64
                }
                None => 0,
            })
            .sum()
    };
    for i in large {
        let t = &spec.tables[i];
        let fits = topo.workers.iter().enumerate().all(|(w, s)| {
            // Leave a tenth of each worker's memory for the hot caches and the tables split later.
            (owned(w, &placements) + t.bytes()) as f64 <= s.memory_bytes as f64 * 0.9
        });
        placements[i] = Some(if fits {
            Placement::Replicated
        } else {
            let k = all_cores.len().min(t.rows as usize).max(1);
            let bounds = crate::space::mass_bounds(t.rows, k, profiles.get(i));
            let owners = all_cores[..bounds.len() - 1].to_vec();
            if owners.len() == 1 { Placement::Owned(owners[0]) } else { Placement::RowRange { bounds, owners } }
        });
    }
    let mut plan = Plan {
        strategy: "auto".into(),
        spec_digest: spec.digest(),
        topology: topo.clone(),
        tables: spec
            .tables
            .iter()
            .zip(placements)
            .map(|(t, p)| TablePlan {
                name: t.name.clone(),
                placement: p.expect("every table is placed"),
                flow: DataFlow::DEFAULT,
                row_type: t.row_type,
            })
            .collect(),
        knobs: Knobs::default(),
    };
    plan.validate(spec).map_err(|e| match e {
        PlanError::Memory(m) => {
            PlanError::Memory(format!("{m} even with the largest tables split over every core; pass a smaller --scale"))
        }
        other => other,
    })?;
    apply_auto_flows(&mut plan, spec, profiles, cache);
    plan.strategy = "auto".into();
    Ok(plan)
}
