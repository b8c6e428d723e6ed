//! The plan view's heat map: for every table and every core of a plan's topology, the share of
//! the table's look-ups that land on that core.
//!
//! A sharded table's share on a core is the share of its look-ups (in the access profile of the
//! model's own generator) whose rows that core's shards hold; an owned table puts everything on
//! one core; a replicated table's bags are spread over every core of the worker that serves a
//! query, and queries over the workers, so each core takes `1 / cores` of it.

use serde::Serialize;

use embtune_protocol::{Placement, Plan};
use embtune_workloads::{AccessProfile, ModelSpec};

/// The heat map of a plan.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeatMap {
    /// The columns: every core of the plan's topology, worker by worker.
    pub cores: Vec<HeatCore>,
    /// The rows: every table of the model, in order.
    pub tables: Vec<HeatTable>,
    /// `matrix[t][c]`: the share of table `t`'s look-ups that core `c` serves, in [0, 1]; each
    /// row sums to 1.
    pub matrix: Vec<Vec<f64>>,
    /// Whether the shares come from an access profile (else from row counts, as if uniform).
    pub profiled: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeatCore {
    /// Worker index in the plan, core index in the worker.
    pub worker: u16,
    pub core: u16,
    /// `w0c1`.
    pub label: String,
    /// The registered worker playing this plan worker, for a deployed plan.
    pub worker_id: Option<u16>,
    /// Share of all the model's look-ups this core serves.
    pub load: f64,
    /// Bytes of shards this core owns (replicated tables are held per worker, not per core).
    pub shard_bytes: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeatTable {
    pub name: String,
    /// `replicated`, `sharded` or `owned`.
    pub mode: &'static str,
    /// [`Placement::kind`]: `replicated`, `client`, `owned`, `rows/4`, `hash/2`.
    pub placement: String,
    pub shards: usize,
    /// The data flow, as `direct(pf=16)`.
    pub flow: String,
    pub row_type: String,
    pub rows: u64,
    pub bytes: u64,
    /// Share of all the model's look-ups that go to this table.
    pub lookup_share: f64,
}

/// The heat map of `plan` for `spec`, with shares from `profile` when there is one; `slots`
/// maps plan workers to registered workers for a deployed plan.
pub fn heat_map(spec: &ModelSpec, plan: &Plan, profile: Option<&AccessProfile>, slots: Option<&[u16]>) -> HeatMap {
    let cores: Vec<_> = plan.topology.cores().collect();
    let index = |c: &embtune_protocol::CoreId| cores.iter().position(|x| x == c);
    let profile = profile.filter(|p| p.tables.len() == spec.tables.len());
    // Each table's share of all look-ups: counted, or from the mean bag lengths.
    let weights: Vec<f64> = match profile {
        Some(p) => p.tables.iter().map(|t| t.lookups as f64).collect(),
        None => spec.tables.iter().map(|t| t.pooling.mean()).collect(),
    };
    let total: f64 = weights.iter().sum::<f64>().max(1e-12);
    let mut matrix = Vec::with_capacity(spec.tables.len());
    let mut tables = Vec::with_capacity(spec.tables.len());
    for (t, (tp, ts)) in plan.tables.iter().zip(&spec.tables).enumerate() {
        let mut row = vec![0.0; cores.len()];
        let p = &tp.placement;
        match p {
            Placement::Replicated => row.iter_mut().for_each(|x| *x = 1.0 / cores.len().max(1) as f64),
            // The clients pool it: no worker core reads it.
            Placement::Client => {}
            _ => {
                let shares = shard_shares(p, ts.rows, profile.map(|p| &p.tables[t]));
                for (s, owner) in p.owners().iter().enumerate() {
                    if let Some(c) = index(owner) {
                        row[c] += shares[s];
                    }
                }
            }
        }
        matrix.push(row);
        tables.push(HeatTable {
            name: ts.name.clone(),
            mode: match p {
                Placement::Replicated => "replicated",
                Placement::Client => "client",
                Placement::Owned(_) => "owned",
                _ => "sharded",
            },
            placement: p.kind(),
            shards: p.shards(),
            flow: tp.flow.to_string(),
            row_type: tp.row_type.to_string(),
            rows: ts.rows,
            bytes: ts.rows * tp.row_type.row_bytes(ts.dim) as u64,
            lookup_share: weights[t] / total,
        });
    }
    let memory = plan.memory(spec);
    let cores = cores
        .iter()
        .enumerate()
        .map(|(c, id)| HeatCore {
            worker: id.worker,
            core: id.core,
            label: id.to_string(),
            worker_id: slots.and_then(|s| s.get(id.worker as usize).copied()),
            load: tables.iter().zip(&matrix).map(|(t, row)| t.lookup_share * row[c]).sum(),
            shard_bytes: memory.per_core.get(id).copied().unwrap_or(0),
        })
        .collect();
    HeatMap { cores, tables, matrix, profiled: profile.is_some() }
}

/// The share of a sharded table's look-ups each shard serves: counted from the profile, or in
/// proportion to the shards' rows without one.
fn shard_shares(p: &Placement, rows: u64, profile: Option<&embtune_workloads::TableProfile>) -> Vec<f64> {
    let n = p.shards();
    let mut counts = vec![0f64; n];
    match profile {
        Some(tp) if tp.lookups > 0 => {
            for &(id, c) in &tp.hot {
                counts[p.shard_of(id).min(n - 1)] += c as f64;
            }
        }
        _ => {
            for (s, c) in counts.iter_mut().enumerate() {
                *c = p.shard_rows(s, rows).len(rows) as f64;
            }
        }
    }
    let sum: f64 = counts.iter().sum();
    if sum <= 0.0 {
        return vec![1.0 / n as f64; n];
    }
    counts.iter().map(|c| c / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_protocol::{CoreId, Topology};
    use embtune_workloads::{Preset, PresetOptions, TableProfile};

    fn spec() -> ModelSpec {
        Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(4),
                rows: Some(100),
                dim: Some(8),
                pooling: Some(embtune_workloads::Pooling::Fixed(2)),
                batch: Some(8),
                ..Default::default()
            })
            .unwrap()
    }

    fn plan(spec: &ModelSpec) -> Plan {
        let placements = [
            Placement::Replicated,
            Placement::Owned(CoreId::new(1, 1)),
            Placement::RowRange { bounds: vec![0, 10, 100], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
            Placement::Hash { owners: vec![CoreId::new(0, 1), CoreId::new(1, 1)] },
        ];
        Plan::from_placements("test", spec, Topology::uniform(2, 2, 1 << 30), placements)
    }

    #[test]
    fn shares_follow_the_profile_and_the_placement() {
        let spec = spec();
        let plan = plan(&spec);
        // Table 2: ids 0..10 take 3 of 4 look-ups; table 3: odd ids take 1 of 4.
        let t = |hot: Vec<(u32, u32)>| TableProfile { rows: 100, lookups: hot.iter().map(|h| h.1 as u64).sum(), hot };
        let profile = AccessProfile {
            tables: vec![t(vec![(1, 4)]), t(vec![(1, 4)]), t(vec![(3, 2), (5, 1), (50, 1)]), t(vec![(2, 3), (7, 1)])],
            batches: 1,
            distinct_per_batch: vec![1.0; 4],
        };
        let h = heat_map(&spec, &plan, Some(&profile), Some(&[3, 5]));
        assert!(h.profiled);
        assert_eq!(h.cores.len(), 4);
        assert_eq!(h.cores[2].label, "w1c0");
        assert_eq!(h.cores[2].worker_id, Some(5));
        assert_eq!(h.matrix[0], vec![0.25; 4]);
        assert_eq!(h.matrix[1], vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(h.matrix[2], vec![0.75, 0.0, 0.25, 0.0]);
        assert_eq!(h.matrix[3], vec![0.0, 0.75, 0.0, 0.25]);
        let modes: Vec<_> = h.tables.iter().map(|t| t.mode).collect();
        assert_eq!(modes, ["replicated", "owned", "sharded", "sharded"]);
        assert_eq!(h.tables[2].placement, "rows/2");
        for row in &h.matrix {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let load: f64 = h.cores.iter().map(|c| c.load).sum();
        assert!((load - 1.0).abs() < 1e-12);
        assert!(h.cores[0].shard_bytes > 0);
        // Without a profile: by rows.
        let h = heat_map(&spec, &plan, None, None);
        assert!(!h.profiled);
        assert_eq!(h.matrix[2], vec![0.1, 0.0, 0.9, 0.0]);
        assert_eq!(h.cores[0].worker_id, None);
    }
}
