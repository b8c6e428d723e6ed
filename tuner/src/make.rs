//! Making a plan from a user's choice of strategy and flows.

use embtune_protocol::{DataFlow, Plan, PlanError, Topology};
use embtune_workloads::{ModelSpec, TableProfile};

use crate::baselines::{BaselineOptions, Strategy};
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

/// The default plan when the user names no strategy: replicate what is small, shard what is
/// large, and let the data-flow rule pick each table's flow.
pub fn default_plan(
    spec: &ModelSpec,
    topo: &Topology,
    profiles: &[TableProfile],
    cache: &MemoryCaps,
) -> Result<Plan, PlanError> {
    let mut plan = Strategy::SizeThreshold.plan(spec, topo, &BaselineOptions::default())?;
    plan.strategy = "auto".into();
    apply_auto_flows(&mut plan, spec, profiles, cache);
    plan.strategy = "auto".into();
    Ok(plan)
}
