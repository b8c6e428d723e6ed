//! Making a plan from a user's choice of strategy and flows.

use embtune_protocol::{CoreId, DataFlow, Placement, Plan, PlanError, Topology};
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

/// The default plan when the user names no strategy: the asymmetric placement, by what each
/// worker's memory can hold.
///
/// - Where clients may hold tables (`Topology::client_memory_bytes`), the smallest (under the
///   size threshold) live in the clients while their memory holds them: their pooled rows then
///   never cross the network.
/// - Tables are replicated on every worker, smallest first, while every worker's memory holds
///   them: a replicated table is stored once per worker and read by all its cores, so any core
///   serves any sample with no partial sums to send or add.
/// - The tables left over (the largest) are split by access mass over every core of the
///   cluster, so that each core's piece carries the same share of the look-ups.
///
/// Splitting a table that fits into L2-sized pieces, one per core, was the first design; it lost
/// on the 16-core machine against replicating everything (3.2x against 6.7x of round-robin on
/// criteo-terabyte, 0.9x against 4.1x on criteo-kaggle; BENCHMARKS.md): on a CPU the shared
/// last-level cache holds the hot rows of a replicated table too, and every batch touching a
/// split table waits for all of its pieces. The tuner still tries such splits, and keeps one
/// where it measures faster.
///
/// The data-flow rule then picks each table's flow (prefetch distance, hot-row cache).
pub fn default_plan(
    spec: &ModelSpec,
    topo: &Topology,
    profiles: &[TableProfile],
    cache: &MemoryCaps,
) -> Result<Plan, PlanError> {
    let all_cores: Vec<CoreId> = topo
        .workers
        .iter()
        .enumerate()
        .flat_map(|(w, s)| (0..s.cores).map(move |c| CoreId::new(w as u16, c)))
        .collect();
    if all_cores.is_empty() {
        return Err(PlanError::Invalid("the topology has no cores".into()));
    }
    // Where clients may hold tables, the smallest ones live there (replicate-small one level
    // up): each is cheap to pool from a client's caches, and its pooled rows then never cross
    // the network.
    let mut placements: Vec<Option<Placement>> = vec![None; spec.tables.len()];
    let mut by_size: Vec<usize> = (0..spec.tables.len()).collect();
    by_size.sort_by_key(|&i| spec.tables[i].bytes());
    let mut room = topo.client_memory_bytes;
    let small = crate::baselines::BaselineOptions::default().replicate_below;
    by_size.retain(|&i| {
        let b = spec.tables[i].bytes();
        if b < small && b <= room {
            room -= b;
            placements[i] = Some(Placement::Client);
            false
        } else {
            true
        }
    });
    // Replicate the longest run of smallest tables for which every worker holds the replicated
    // tables plus its cores' share of the split ones, leaving a tenth of its memory for the hot
    // caches and for uneven splits.
    let total_cores = all_cores.len() as f64;
    let fits = |replicate: usize| {
        let replicated: u64 = by_size[..replicate].iter().map(|&i| spec.tables[i].bytes()).sum();
        let split: u64 = by_size[replicate..].iter().map(|&i| spec.tables[i].bytes()).sum();
        topo.workers
            .iter()
            .all(|w| replicated as f64 + split as f64 * w.cores as f64 / total_cores <= w.memory_bytes as f64 * 0.9)
    };
    let replicate = (0..=by_size.len()).rev().find(|&j| fits(j)).unwrap_or(0);
    for (rank, &i) in by_size.iter().enumerate() {
        let t = &spec.tables[i];
        placements[i] = Some(if rank < replicate {
            Placement::Replicated
        } else {
            let k = all_cores.len().min(t.rows as usize).max(1);
            let bounds = crate::space::mass_bounds(t.rows, k, profiles.get(i));
            let owners = all_cores[..bounds.len() - 1].to_vec();
            if owners.len() == 1 { Placement::Owned(owners[0]) } else { Placement::RowRange { bounds, owners } }
        });
    }
    let placements = placements.into_iter().map(|p| p.expect("every table is placed"));
    let mut plan = Plan::from_placements("auto", spec, topo.clone(), placements);
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

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{Preset, PresetOptions};

    fn kaggle() -> ModelSpec {
        Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.02), ..Default::default() }).unwrap()
    }

    #[test]
    fn auto_replicates_every_table_that_fits() {
        let spec = kaggle();
        let topo = Topology::uniform(2, 4, 64 << 30);
        let plan = default_plan(&spec, &topo, &[], &MemoryCaps::default()).unwrap();
        plan.validate(&spec).unwrap();
        assert_eq!(plan.strategy, "auto");
        assert!(plan.tables.iter().all(|t| t.placement == Placement::Replicated), "{plan:?}");
    }

    #[test]
    fn auto_splits_only_what_memory_cannot_hold_replicated() {
        let spec = kaggle();
        let total: u64 = spec.tables.iter().map(|t| t.bytes()).sum();
        let largest = (0..spec.tables.len()).max_by_key(|&i| spec.tables[i].bytes()).unwrap();
        // Room for everything but the largest table, and for each worker's half of that one.
        let memory = ((total - spec.tables[largest].bytes() / 2) as f64 / 0.9) as u64 + 1;
        let topo = Topology::uniform(2, 4, memory);
        let plan = default_plan(&spec, &topo, &[], &MemoryCaps::default()).unwrap();
        plan.validate(&spec).unwrap();
        for (i, t) in plan.tables.iter().enumerate() {
            if i == largest {
                let Placement::RowRange { bounds, owners } = &t.placement else { panic!("{:?}", t.placement) };
                assert_eq!(owners.len(), 8, "split over every core of the cluster");
                assert_eq!((bounds[0], *bounds.last().unwrap()), (0, spec.tables[i].rows));
            } else {
                assert_eq!(t.placement, Placement::Replicated, "{}", t.name);
            }
        }
    }

    #[test]
    fn auto_refuses_a_model_no_split_can_hold() {
        let spec = kaggle();
        let total: u64 = spec.tables.iter().map(|t| t.bytes()).sum();
        let topo = Topology::uniform(1, 2, total / 4);
        let err = default_plan(&spec, &topo, &[], &MemoryCaps::default()).unwrap_err();
        assert!(matches!(err, PlanError::Memory(ref m) if m.contains("smaller --scale")), "{err}");
    }
}
