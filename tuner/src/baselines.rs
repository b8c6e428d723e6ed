//! Named placement strategies: the baselines a tuned plan is measured against, and the
//! starting points of the search.
//!
//! Each strategy is a pure function from a spec and a topology to a [`Plan`], usable wherever
//! a plan is (`embtune bench --strategy`, `embtune tune` baselines, the search's seed).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;

use embtune_protocol::{CoreId, Placement, Plan, PlanError, Topology};
use embtune_workloads::{ModelSpec, TableSpec};

/// A named way to place tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Whole tables dealt to cores in turn, as a compiler's default mapping would.
    RoundRobin,
    /// Every table on every worker, its bags spread over all cores.
    AllReplicate,
    /// Every table split by rows evenly over every core of the cluster.
    AllShard,
    /// The asymmetric data-flow paper's rule: replicate tables under a size threshold, shard the
    /// rest evenly over every core.
    SizeThreshold,
    /// TorchRec's planner in miniature: whole tables placed largest bytes-moved cost first onto
    /// the least-loaded core.
    GreedyCost,
    /// The size threshold one level up: tables under the threshold live in the clients (while
    /// each client's memory holds them), the rest are sharded evenly over every core. Only
    /// where clients may hold tables (`Topology::client_memory_bytes`).
    ClientThreshold,
    /// Every table's rows dealt over every core by id modulo the shard count, as HugeCTR's
    /// distributed embedding and parameter servers shard: unlike `all-shard`'s row ranges, it
    /// keeps a table balanced when its hot ids lie close together (ids numbered by frequency).
    ModShard,
}

impl Strategy {
    /// Every named strategy.
    pub const ALL: [Strategy; 7] = [
        Strategy::RoundRobin,
        Strategy::AllReplicate,
        Strategy::AllShard,
        Strategy::SizeThreshold,
        Strategy::GreedyCost,
        Strategy::ClientThreshold,
        Strategy::ModShard,
    ];

    /// Other names a strategy answers to, as (alias, strategy).
    pub const ALIASES: [(&'static str, Strategy); 1] = [("replicate-small", Strategy::SizeThreshold)];

    /// The baselines a tuning job measures: every strategy that applies (the client-side one
    /// only where clients may hold tables, `client_memory_bytes` above 0).
    pub fn baselines(client_memory_bytes: u64) -> Vec<Strategy> {
        Strategy::ALL.into_iter().filter(|s| *s != Strategy::ClientThreshold || client_memory_bytes > 0).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::AllReplicate => "all-replicate",
            Strategy::AllShard => "all-shard",
            Strategy::SizeThreshold => "size-threshold",
            Strategy::GreedyCost => "greedy-cost",
            Strategy::ClientThreshold => "client-small",
            Strategy::ModShard => "mod-shard",
        }
    }

    /// What the strategy does, in one line, for `--strategy`'s help.
    pub fn about(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "whole tables dealt to cores in turn",
            Strategy::AllReplicate => "every table on every worker",
            Strategy::AllShard => "every table split by rows over every core",
            Strategy::SizeThreshold => "tables under 1 MiB replicated, the rest split over every core",
            Strategy::GreedyCost => {
                "whole tables, costliest first, onto the least-loaded core (TorchRec's planner in miniature)"
            }
            Strategy::ClientThreshold => "tables under 1 MiB in the clients where they have memory, the rest split",
            Strategy::ModShard => "every table's rows dealt over every core by id modulo the shard count",
        }
    }

    /// Makes the plan. Fails with a memory error when the strategy cannot fit the model.
    pub fn plan(self, spec: &ModelSpec, topo: &Topology, opts: &BaselineOptions) -> Result<Plan, PlanError> {
        let cores: Vec<CoreId> = topo.cores().collect();
        if cores.is_empty() {
            return Err(PlanError::Invalid("the topology has no cores".into()));
        }
        let placements: Vec<Placement> = match self {
            Strategy::RoundRobin => {
                // Dealt across workers first (core 0 of every worker, then core 1, ...), so that a
                // model with fewer tables than cores still spreads its memory and look-ups over every
                // worker instead of filling the first worker's cores.
                let mut dealt = cores.clone();
                dealt.sort_by_key(|c| (c.core, c.worker));
                (0..spec.tables.len()).map(|i| Placement::Owned(dealt[i % dealt.len()])).collect()
            }
            Strategy::AllReplicate => vec![Placement::Replicated; spec.tables.len()],
            Strategy::AllShard => spec.tables.iter().map(|t| even_rows(t, &cores)).collect(),
            Strategy::SizeThreshold => spec
                .tables
                .iter()
                .map(|t| if t.bytes() < opts.replicate_below { Placement::Replicated } else { even_rows(t, &cores) })
                .collect(),
            Strategy::GreedyCost => greedy_cost(spec, topo, &cores),
            Strategy::ModShard => spec.tables.iter().map(|t| mod_rows(t, &cores)).collect(),
            Strategy::ClientThreshold => {
                let mut room = topo.client_memory_bytes;
                spec.tables
                    .iter()
                    .map(|t| {
                        if t.bytes() < opts.replicate_below && t.bytes() <= room {
                            room -= t.bytes();
                            Placement::Client
                        } else {
                            even_rows(t, &cores)
                        }
                    })
                    .collect()
            }
        };
        let plan = Plan::from_placements(self.name(), spec, topo.clone(), placements);
        plan.validate(spec).map_err(|e| match e {
            PlanError::Memory(m) => PlanError::Memory(format!(
                "{m} under {}; try all-shard, size-threshold or a smaller --scale",
                self.name()
            )),
            other => other,
        })?;
        Ok(plan)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, b)) = Strategy::ALIASES.iter().find(|(alias, _)| *alias == s) {
            return Ok(*b);
        }
        Strategy::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<&str> =
                Strategy::ALL.iter().map(|b| b.name()).chain(Strategy::ALIASES.map(|a| a.0)).collect();
            format!("unknown strategy `{s}`; choose one of: {}", names.join(", "))
        })
    }
}

/// Knobs of the baselines.
#[derive(Clone, Debug)]
pub struct BaselineOptions {
    /// `size-threshold` replicates tables smaller than this many bytes, and `client-small` keeps
    /// them in the clients.
    pub replicate_below: u64,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        // A table that fits comfortably in one core's L2 is cheap to replicate and gains nothing
        // from being split.
        BaselineOptions { replicate_below: 1 << 20 }
    }
}

/// Rows split into equal ranges over `cores` (fewer shards when the table has fewer rows).
pub fn even_rows(t: &TableSpec, cores: &[CoreId]) -> Placement {
    let k = (cores.len() as u64).min(t.rows).max(1);
    if k == 1 {
        return Placement::Owned(cores[0]);
    }
    let bounds: Vec<u64> = (0..=k).map(|i| i * t.rows / k).collect();
    Placement::RowRange { bounds, owners: cores[..k as usize].to_vec() }
}

/// Rows dealt over `cores` by id modulo the shard count (fewer shards when the table has fewer
/// rows), so that neighbouring ids land on different cores.
fn mod_rows(t: &TableSpec, cores: &[CoreId]) -> Placement {
    let k = (cores.len() as u64).min(t.rows).max(1) as usize;
    if k == 1 {
        return Placement::Owned(cores[0]);
    }
    Placement::Hash { owners: cores[..k].to_vec() }
}

/// TorchRec-style: each table's cost is the bytes it moves per batch (rows gathered plus its
/// pooled output); tables go, costliest first, whole onto the core with the least cost so far
/// among those whose worker still has memory for it. A table no single worker can hold is
/// split by rows across workers, as TorchRec falls back to row-wise sharding.
fn greedy_cost(spec: &ModelSpec, topo: &Topology, cores: &[CoreId]) -> Vec<Placement> {
    let batch = spec.batch_size as f64;
    let cost = |t: &TableSpec| batch * (t.pooling.mean() * t.row_bytes() as f64 + 4.0 * t.dim as f64);
    let mut order: Vec<usize> = (0..spec.tables.len()).collect();
    order.sort_by(|&a, &b| cost(&spec.tables[b]).total_cmp(&cost(&spec.tables[a])).then(a.cmp(&b)));
    let mut load = vec![0f64; cores.len()];
    let mut free: Vec<u64> = topo.workers.iter().map(|w| w.memory_bytes).collect();
    let mut out = vec![Placement::Replicated; spec.tables.len()];
    // The cores by (load, index) in a heap: the least-loaded core that has room is found in
    // logarithmic time, where a scan of every core per table is tables x cores steps (640M for
    // 10,000 tables on 64,000 cores). Loads are non-negative, so their bits order as they do.
    let key = |load: f64, c: usize| Reverse((load.to_bits(), c));
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..cores.len()).map(|c| key(0.0, c)).collect();
    let mut full = Vec::new();
    for i in order {
        let t = &spec.tables[i];
        // Cores whose worker lacks room are set aside for this table only.
        full.clear();
        let mut best = None;
        while let Some(Reverse((_, c))) = heap.pop() {
            if free[cores[c].worker as usize] >= t.bytes() {
                best = Some(c);
                break;
            }
            full.push(c);
        }
        out[i] = match best {
            Some(c) => {
                load[c] += cost(t);
                free[cores[c].worker as usize] -= t.bytes();
                heap.push(key(load[c], c));
                heap.extend(full.iter().map(|&f| key(load[f], f)));
                Placement::Owned(cores[c])
            }
            None => {
                // No worker can hold it whole (every core is in `full`): one shard per worker on
                // its least-loaded core.
                let mut least: Vec<Option<usize>> = vec![None; topo.workers.len()];
                for &c in &full {
                    let w = cores[c].worker as usize;
                    if least[w].is_none_or(|b| load[c].total_cmp(&load[b]).then(c.cmp(&b)).is_lt()) {
                        least[w] = Some(c);
                    }
                }
                let owners: Vec<CoreId> = least
                    .iter()
                    .map(|c| {
                        let c = c.expect("every worker has a core");
                        load[c] += cost(t) / topo.workers.len() as f64;
                        cores[c]
                    })
                    .collect();
                let k = owners.len() as u64;
                for o in &owners {
                    free[o.worker as usize] = free[o.worker as usize].saturating_sub(t.bytes() / k);
                }
                heap.extend(full.iter().map(|&f| key(load[f], f)));
                Placement::RowRange { bounds: (0..=k).map(|j| j * t.rows / k).collect(), owners }
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{Preset, PresetOptions};

    fn kaggle() -> ModelSpec {
        Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.01), ..Default::default() }).unwrap()
    }

    #[test]
    fn every_baseline_makes_a_valid_plan() {
        let spec = kaggle();
        let topo = Topology::uniform(2, 3, 8 << 30);
        let topo = topo.with_client_memory(64 << 20);
        for s in Strategy::baselines(topo.client_memory_bytes) {
            let p = s.plan(&spec, &topo, &BaselineOptions::default()).unwrap();
            p.validate(&spec).unwrap();
            assert_eq!(p.strategy, s.name());
        }
    }

    #[test]
    fn the_client_side_baseline_applies_only_where_clients_hold_tables() {
        let spec = kaggle();
        let topo = Topology::uniform(2, 2, 8 << 30);
        assert!(!Strategy::baselines(topo.client_memory_bytes).contains(&Strategy::ClientThreshold));
        assert!(
            Strategy::ClientThreshold
                .plan(&spec, &topo, &Default::default())
                .map(|p| p.client_tables().is_empty())
                .unwrap()
        );
        let topo = topo.with_client_memory(8 << 20);
        assert_eq!(Strategy::baselines(topo.client_memory_bytes).len(), Strategy::ALL.len());
        let p = Strategy::ClientThreshold.plan(&spec, &topo, &Default::default()).unwrap();
        let client: u64 = p.client_tables().iter().map(|&t| spec.tables[t as usize].bytes()).sum();
        assert!(client > 0 && client <= 8 << 20, "{client}");
        for (tp, ts) in p.tables.iter().zip(&spec.tables) {
            if tp.placement == Placement::Client {
                assert!(ts.bytes() < 1 << 20, "{} is too large for the clients", ts.name);
            } else {
                assert!(tp.placement != Placement::Replicated, "the rest is sharded");
            }
        }
        assert_eq!("client-small".parse::<Strategy>().unwrap(), Strategy::ClientThreshold);
    }

    #[test]
    fn round_robin_deals_tables_to_cores_in_turn() {
        let p = Strategy::RoundRobin.plan(&kaggle(), &Topology::uniform(1, 4, 8 << 30), &Default::default()).unwrap();
        assert_eq!(p.tables[0].placement, Placement::Owned(CoreId::new(0, 0)));
        assert_eq!(p.tables[5].placement, Placement::Owned(CoreId::new(0, 1)));
    }

    #[test]
    fn round_robin_deals_across_workers_first() {
        let spec =
            Preset::Synthetic.spec(&PresetOptions { tables: Some(4), rows: Some(1000), ..Default::default() }).unwrap();
        let p = Strategy::RoundRobin.plan(&spec, &Topology::uniform(2, 4, 8 << 30), &Default::default()).unwrap();
        let owners: Vec<CoreId> = p.tables.iter().map(|t| t.placement.owners()[0]).collect();
        let want = [CoreId::new(0, 0), CoreId::new(1, 0), CoreId::new(0, 1), CoreId::new(1, 1)];
        assert_eq!(owners, want, "four tables on two workers: two each, not four on the first");
    }

    #[test]
    fn size_threshold_replicates_small_and_shards_large() {
        let spec = kaggle();
        let p = Strategy::SizeThreshold.plan(&spec, &Topology::uniform(1, 4, 8 << 30), &Default::default()).unwrap();
        for (tp, ts) in p.tables.iter().zip(&spec.tables) {
            let replicated = tp.placement == Placement::Replicated;
            assert_eq!(replicated, ts.bytes() < 1 << 20, "{}", ts.name);
        }
    }

    #[test]
    fn greedy_cost_balances_cost_over_cores() {
        let spec =
            Preset::Synthetic.spec(&PresetOptions { tables: Some(8), rows: Some(1000), ..Default::default() }).unwrap();
        let p = Strategy::GreedyCost.plan(&spec, &Topology::uniform(1, 4, 8 << 30), &Default::default()).unwrap();
        let mut per_core = std::collections::HashMap::new();
        for t in &p.tables {
            *per_core.entry(t.placement.owners()[0]).or_insert(0) += 1;
        }
        assert!(per_core.values().all(|&n| n == 2), "{per_core:?}");
    }

    #[test]
    fn mod_shard_spreads_neighbouring_ids_over_every_core() {
        let spec = kaggle();
        let topo = Topology::uniform(2, 3, 8 << 30);
        let p = Strategy::ModShard.plan(&spec, &topo, &Default::default()).unwrap();
        for (tp, ts) in p.tables.iter().zip(&spec.tables) {
            let owners = tp.placement.owners();
            assert_eq!(owners.len() as u64, ts.rows.min(6), "{}", ts.name);
            if owners.len() < 6 {
                continue;
            }
            // The first 600 ids, where a frequency-numbered table keeps its hottest rows, fall
            // a hundred on each core; all-shard would put them all on the first.
            let mut per_shard = [0u32; 6];
            for id in 0..600 {
                per_shard[tp.placement.shard_of(id)] += 1;
            }
            assert_eq!(per_shard, [100; 6], "{}", ts.name);
        }
    }

    #[test]
    fn all_replicate_reports_what_to_do_when_it_does_not_fit() {
        let spec = kaggle();
        let err =
            Strategy::AllReplicate.plan(&spec, &Topology::uniform(2, 2, 1 << 20), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("all-shard"), "{err}");
    }

    #[test]
    fn strategy_names_parse() {
        assert_eq!("replicate-small".parse::<Strategy>().unwrap(), Strategy::SizeThreshold);
        assert!("greedy".parse::<Strategy>().unwrap_err().contains("greedy-cost"));
    }
}
