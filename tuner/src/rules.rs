//! The data-flow rule: which of the engine's flows suits a table piece, from its size, its
//! access skew and the caches of the core that reads it. The rule gives the search its start
//! and `embtune bench --flows auto` its choice; it says why it chose, for `plan explain`.

use embtune_protocol::{DataFlow, Placement, Plan};
use embtune_workloads::{ModelSpec, TableProfile, TableSpec};

/// What the memory system of the cores a plan runs on offers.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryCaps {
    /// Private L2 per core.
    pub l2_bytes: u64,
    /// Last-level cache, shared by `llc_cores` cores.
    pub llc_bytes: u64,
    pub llc_cores: u32,
    /// Whether large tables get transparent huge pages (THP `always` or `madvise`).
    pub huge_pages: bool,
}

impl Default for MemoryCaps {
    fn default() -> Self {
        MemoryCaps { l2_bytes: 1 << 20, llc_bytes: 32 << 20, llc_cores: 8, huge_pages: true }
    }
}

impl MemoryCaps {
    /// One core's fair share of the last-level cache.
    pub fn llc_share(&self) -> u64 {
        self.llc_bytes / self.llc_cores.max(1) as u64
    }
}

/// A flow and the reason for it.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowChoice {
    pub flow: DataFlow,
    pub reason: String,
}

/// Share of look-ups a hot cache must capture to be worth its probe on every id.
const MIN_HOT_SHARE: f64 = 0.3;

/// Picks the flow for a piece of `piece_rows` rows of table `t`, read by one core, given the
/// table's access profile and the cache budget the piece may take for hot rows.
///
/// The rule follows what `embtune compare` measured (BENCHMARKS.md, "Engine: data flows on the
/// extreme hot set"): with huge pages, the direct gather beat the hot-row cache and the blocked
/// gather on every skewed and uniform table tried, because huge pages already give the TLB reach that a contiguous hot
/// copy buys and rows of 64 B or more waste no cache space when scattered; without huge pages
/// the hot cache won by 1.1-1.2x on hot-set skew. Prefetching rows that are already cached
/// only costs load slots, so small pieces gather without it. The tuner refines all of this
/// per machine by measurement.
pub fn choose_flow(
    t: &TableSpec,
    profile: &TableProfile,
    _batch: u32,
    piece_rows: u64,
    caps: &MemoryCaps,
    hot_budget: u64,
) -> FlowChoice {
    let rb = t.row_bytes() as u64;
    let piece_bytes = piece_rows * rb;
    if piece_bytes <= caps.l2_bytes / 2 {
        return FlowChoice {
            flow: DataFlow::Direct { prefetch: 0 },
            reason: format!("{} fits in half of L2: plain gather without prefetch", human(piece_bytes)),
        };
    }
    let max_hot = (hot_budget / rb).max(1);
    let skewed = profile.lookups > 0 && t.dist.is_skewed();
    if skewed && !caps.huge_pages {
        let hot = profile.rows_for_share(0.9).min(max_hot).max(1);
        let share = profile.top_share_rows(hot);
        if share >= MIN_HOT_SHARE && hot * 4 <= piece_rows {
            return FlowChoice {
                flow: DataFlow::HotCache { hot_rows: hot as u32, prefetch: 16 },
                reason: format!(
                    "skewed without huge pages: the hottest {hot} rows ({}) take {:.0}% of look-ups; keep them contiguous for TLB reach",
                    human(hot * rb),
                    share * 100.0
                ),
            };
        }
    }
    FlowChoice {
        flow: DataFlow::Direct { prefetch: 16 },
        reason: format!("{} of rows beyond the caches: direct gather, prefetch 16 rows ahead", human(piece_bytes)),
    }
}

/// Sets every table's flow by [`choose_flow`]; hot budgets split each core's L2 plus its LLC
/// share between the skewed pieces it reads. Returns the reasons, one per table.
pub fn apply_auto_flows(
    plan: &mut Plan,
    spec: &ModelSpec,
    profiles: &[TableProfile],
    cache: &MemoryCaps,
) -> Vec<String> {
    let skewed = spec.tables.iter().filter(|t| t.dist.is_skewed() && t.bytes() > cache.l2_bytes / 2).count().max(1);
    let budget = (cache.l2_bytes / 2 + cache.llc_share()) / skewed.min(4) as u64;
    let mut reasons = Vec::new();
    for (i, (tp, ts)) in plan.tables.iter_mut().zip(&spec.tables).enumerate() {
        let piece_rows = match &tp.placement {
            Placement::Replicated | Placement::Owned(_) => ts.rows,
            p => ts.rows.div_ceil(p.shards() as u64),
        };
        let empty = TableProfile::default();
        let c = choose_flow(ts, profiles.get(i).unwrap_or(&empty), spec.batch_size, piece_rows, cache, budget);
        tp.flow = c.flow;
        reasons.push(c.reason);
    }
    if !plan.strategy.ends_with("+flows") {
        plan.strategy.push_str("+flows");
    }
    reasons
}

fn human(b: u64) -> String {
    embtune_protocol::plan::human_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};

    fn profile(dist: &str, rows: u64) -> (ModelSpec, Vec<TableProfile>) {
        let spec = Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(1),
                rows: Some(rows),
                dim: Some(64),
                dist: Some(dist.parse().unwrap()),
                ..Default::default()
            })
            .unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let batches: Vec<_> = (0..4).map(|i| g.batch(i)).collect();
        let p = AccessProfile::from_batches(&[rows], &batches);
        (spec, p.tables)
    }

    #[test]
    fn small_tables_take_the_plain_gather() {
        let (spec, p) = profile("uniform", 1000);
        let c = choose_flow(&spec.tables[0], &p[0], 256, 1000, &MemoryCaps::default(), 1 << 20);
        assert_eq!(c.flow, DataFlow::Direct { prefetch: 0 }, "{c:?}");
    }

    #[test]
    fn extreme_skew_takes_the_hot_cache_only_without_huge_pages() {
        let (spec, p) = profile("hotset:0.99:0.001", 2_000_000);
        let no_thp = MemoryCaps { huge_pages: false, ..MemoryCaps::default() };
        let c = choose_flow(&spec.tables[0], &p[0], 256, 2_000_000, &no_thp, 4 << 20);
        let DataFlow::HotCache { hot_rows, .. } = c.flow else { panic!("{c:?}") };
        assert!((1000..=(4 << 20) >> 8).contains(&hot_rows), "{hot_rows}");
        let c = choose_flow(&spec.tables[0], &p[0], 256, 2_000_000, &MemoryCaps::default(), 4 << 20);
        assert_eq!(c.flow, DataFlow::Direct { prefetch: 16 });
    }

    #[test]
    fn uniform_large_tables_take_the_prefetching_direct_gather() {
        let (spec, p) = profile("uniform", 2_000_000);
        let c = choose_flow(
            &spec.tables[0],
            &p[0],
            256,
            2_000_000,
            &MemoryCaps { huge_pages: false, ..MemoryCaps::default() },
            1 << 20,
        );
        assert_eq!(c.flow, DataFlow::Direct { prefetch: 16 });
    }
}
