//! The plan space the search walks: neighbour moves on a plan, and row ranges balanced by access
//! mass.

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::RngCore;

use embtune_protocol::{CoreId, DataFlow, Placement, Plan};
use embtune_workloads::{ModelSpec, RowType, TableProfile};

/// What the search may change.
#[derive(Clone, Debug)]
pub struct Space {
    /// Most shards a table may be split into.
    pub max_shards: usize,
    /// Data flows to choose from (hot-cache sizes are set per table from its profile).
    pub flows: Vec<DataFlow>,
    /// Row types a quantisable table may take.
    pub row_types: Vec<RowType>,
    /// Hot-cache sizes to try, in rows, per table.
    pub hot_rows: Vec<Vec<u32>>,
}

impl Space {
    /// The default space for a model on `cores` cores.
    pub fn new(spec: &ModelSpec, profiles: &[TableProfile], cores: usize, l2_bytes: u64) -> Space {
        let hot_rows = spec
            .tables
            .iter()
            .enumerate()
            .map(|(t, ts)| {
                let rb = ts.row_bytes() as u64;
                let cap = (4 * l2_bytes / rb.max(1)).max(1);
                let mut v: Vec<u32> = [0.5, 0.8, 0.9]
                    .iter()
                    .filter_map(|&share| profiles.get(t).map(|p| p.rows_for_share(share).min(cap).max(1) as u32))
                    .filter(|&n| (n as u64) * 4 <= ts.rows)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        Space {
            max_shards: cores.max(1),
            flows: vec![
                DataFlow::Direct { prefetch: 0 },
                DataFlow::Direct { prefetch: 16 },
                DataFlow::Direct { prefetch: 32 },
                DataFlow::Blocked { block_rows: 1024 },
            ],
            row_types: vec![RowType::F32, RowType::F16, RowType::Int8],
            hot_rows,
        }
    }
}

/// Row-range bounds that give each of `k` shards an equal share of the observed look-ups (hot
/// rows spread over the shards rather than landing in one), from a profile; equal row counts
/// where the profile is empty.
pub fn mass_bounds(rows: u64, k: usize, profile: Option<&TableProfile>) -> Vec<u64> {
    let k = (k as u64).clamp(1, rows) as usize;
    let even = || (0..=k as u64).map(|i| i * rows / k as u64).collect::<Vec<u64>>();
    let Some(p) = profile.filter(|p| p.lookups > 0 && p.unique() as u64 * 4 < rows * 3) else { return even() };
    // Mass by position in buckets: observed counts plus an even floor for the unseen tail.
    let buckets = (rows as usize).clamp(1, 1 << 14);
    let mut mass = vec![0f64; buckets];
    let seen: u64 = p.hot.iter().map(|&(_, c)| c as u64).sum();
    for &(id, c) in &p.hot {
        mass[(id as u64 * buckets as u64 / rows) as usize] += c as f64;
    }
    let floor = seen as f64 * 0.05 / buckets as f64;
    for m in &mut mass {
        *m += floor;
    }
    let total: f64 = mass.iter().sum();
    let mut bounds = vec![0u64];
    let mut acc = 0.0;
    for (b, m) in mass.iter().enumerate() {
        acc += m;
        while bounds.len() < k && acc >= total * bounds.len() as f64 / k as f64 {
            let cut = ((b as u64 + 1) * rows / buckets as u64)
                .clamp(*bounds.last().unwrap() + 1, rows - (k - bounds.len()) as u64);
            bounds.push(cut);
        }
    }
    while bounds.len() < k {
        let last = *bounds.last().unwrap();
        bounds.push((last + 1).min(rows - 1));
    }
    bounds.push(rows);
    // Strictly increasing, which the clamps above ensure for rows >= k.
    bounds.dedup();
    if bounds.len() != k + 1 { even() } else { bounds }
}

/// A random integer below `n`.
fn below(rng: &mut Xoshiro256PlusPlus, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// A plan one move away from `plan`: move a table, change a shard count, toggle replication,
/// change a data flow or row type, or shift a row-range boundary.
pub fn neighbour(
    plan: &Plan,
    spec: &ModelSpec,
    profiles: &[TableProfile],
    space: &Space,
    rng: &mut Xoshiro256PlusPlus,
) -> Plan {
    let mut p = plan.clone();
    let cores: Vec<CoreId> = p.topology.cores().collect();
    let t = below(rng, p.tables.len());
    let ts = &spec.tables[t];
    // Whether the clients have room for this table too.
    let client_room = p.topology.client_memory_bytes.saturating_sub(p.memory(spec).per_client);
    let fits_client = ts.rows * p.tables[t].row_type.row_bytes(ts.dim) as u64 <= client_room;
    let prof = profiles.get(t);
    let tp = &mut p.tables[t];
    let random_core = |rng: &mut Xoshiro256PlusPlus| cores[below(rng, cores.len())];
    let distinct_cores = |rng: &mut Xoshiro256PlusPlus, k: usize| -> Vec<CoreId> {
        // k distinct cores from a random start, spread over workers in turn.
        let start = below(rng, cores.len());
        (0..k).map(|i| cores[(start + i * cores.len().div_ceil(k.max(1)).max(1)) % cores.len()]).collect()
    };
    match below(rng, 6) {
        // Move: a whole table, or one shard, to another core.
        0 => match &mut tp.placement {
            Placement::Owned(c) => *c = random_core(rng),
            Placement::RowRange { owners, .. } | Placement::Hash { owners } => {
                let i = below(rng, owners.len());
                owners[i] = random_core(rng);
            }
            Placement::Replicated | Placement::Client => tp.placement = Placement::Owned(random_core(rng)),
        },
        // Shard count up or down, bounds rebalanced by mass.
        1 => {
            let k = tp.placement.shards().max(1);
            let nk = if k <= 1 || below(rng, 2) == 0 { k + 1 } else { k - 1 };
            let nk = nk.clamp(1, space.max_shards.min(ts.rows as usize).max(1));
            tp.placement = if nk == 1 {
                Placement::Owned(random_core(rng))
            } else {
                Placement::RowRange { bounds: mass_bounds(ts.rows, nk, prof), owners: distinct_cores(rng, nk) }
            };
        }
        // Replication on or off; a replicated table into the clients where they have room, and
        // back.
        2 => {
            tp.placement = match tp.placement {
                Placement::Replicated if fits_client && below(rng, 2) == 0 => Placement::Client,
                Placement::Replicated => {
                    let k = space.max_shards.min(ts.rows as usize).max(1);
                    if below(rng, 2) == 0 || k == 1 {
                        Placement::Owned(random_core(rng))
                    } else {
                        Placement::RowRange { bounds: mass_bounds(ts.rows, k, prof), owners: distinct_cores(rng, k) }
                    }
                }
                _ => Placement::Replicated,
            }
        }
        // Data flow.
        3 => {
            let hot = &space.hot_rows[t];
            let choices = space.flows.len() + hot.len();
            let i = below(rng, choices);
            tp.flow = if i < space.flows.len() {
                space.flows[i]
            } else {
                DataFlow::HotCache { hot_rows: hot[i - space.flows.len()], prefetch: 16 }
            };
        }
        // Row type, where the table allows quantisation; otherwise a boundary shift.
        4 if ts.quantizable => {
            let options: Vec<RowType> =
                space.row_types.iter().copied().filter(|r| r.row_bytes(64) <= ts.row_type.row_bytes(64)).collect();
            tp.row_type = options[below(rng, options.len())];
        }
        // Shift one interior boundary of a row-range table by up to a tenth of a shard.
        _ => match &mut tp.placement {
            Placement::RowRange { bounds, .. } if bounds.len() > 2 => {
                let i = 1 + below(rng, bounds.len() - 2);
                let (lo, hi) = (bounds[i - 1], bounds[i + 1]);
                let span = ((hi - lo) / 10).max(1);
                let delta = below(rng, 2 * span as usize + 1) as i64 - span as i64;
                bounds[i] = (bounds[i] as i64 + delta).clamp(lo as i64 + 1, hi as i64 - 1) as u64;
            }
            _ => {
                tp.flow = space.flows[below(rng, space.flows.len())];
            }
        },
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};
    use rand_xoshiro::rand_core::SeedableRng;

    #[test]
    fn mass_bounds_split_hot_rows_evenly() {
        // A table whose hot rows sit at its start: equal-row shards would give shard 0 all the
        // look-ups; equal-mass shards share them.
        let rows = 10_000u64;
        let hot: Vec<(u32, u32)> =
            (0..100u32).map(|i| (i, 100)).chain((100..10_000u32).step_by(10).map(|i| (i, 1))).collect();
        let lookups = hot.iter().map(|&(_, c)| c as u64).sum();
        let p = TableProfile { rows, lookups, hot };
        let b = mass_bounds(rows, 4, Some(&p));
        assert_eq!(b.len(), 5);
        assert_eq!((b[0], b[4]), (0, rows));
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        assert!(b[1] < 100, "the hot first hundred rows must be split: {b:?}");
    }

    #[test]
    fn neighbours_move_tables_into_the_clients_only_within_their_memory() {
        let spec = Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(0, 4));
        let budget = spec.total_bytes() / 3;
        let topo = embtune_protocol::Topology::uniform(2, 2, 8 << 30).with_client_memory(budget);
        let mut plan = crate::Strategy::AllReplicate.plan(&spec, &topo, &Default::default()).unwrap();
        let space = Space::new(&spec, &prof.tables, 4, 1 << 20);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let mut most = 0;
        for i in 0..3000 {
            plan = neighbour(&plan, &spec, &prof.tables, &space, &mut rng);
            plan.validate(&spec).unwrap_or_else(|e| panic!("move {i}: {e}"));
            most = most.max(plan.client_tables().len());
        }
        assert!(most > 0, "the search never tried a client-resident table");
    }

    #[test]
    fn neighbours_stay_valid_plans() {
        let spec = Preset::CriteoKaggle
            .spec(&PresetOptions { scale: Some(0.001), allow_quantization: true, ..Default::default() })
            .unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(0, 4));
        let topo = embtune_protocol::Topology::uniform(2, 3, 8 << 30);
        let mut plan = crate::Strategy::RoundRobin.plan(&spec, &topo, &Default::default()).unwrap();
        let space = Space::new(&spec, &prof.tables, 6, 1 << 20);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for i in 0..2000 {
            plan = neighbour(&plan, &spec, &prof.tables, &space, &mut rng);
            plan.validate(&spec).unwrap_or_else(|e| panic!("move {i}: {e}"));
        }
    }
}
