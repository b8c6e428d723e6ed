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

/// Picks the flow for a piece of `piece_rows` rows of table `t`, read by one core, given the
/// table's access profile and the cache budget the piece may take for hot rows.
///
/// The rule follows what `embtune compare` measured, every flow side by side on skewed tables
/// (BENCHMARKS.md, "Engine: every flow on skewed tables"): the direct gather with prefetch beat
/// the hot-row copy and the blocked gather on every skewed and uniform table tried, with huge
/// pages (hot copy 0.42-0.69x) and without them (0.56-0.92x on the 16-core Xeon, 0.53-0.91x on
/// the local EPYC), because the hardware caches already keep the hot rows near the core and the
/// copy's index probe costs more per id than its compact layout saves. Prefetching rows that
/// are already cached only costs load slots, so small pieces gather without it. The tuner
/// refines all of this per machine by measurement; the hot and blocked flows remain plans it can
/// try (and the GPU backend's own choice).
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
    let skew = if profile.lookups > 0 && t.dist.is_skewed() {
        // What a hot copy within the budget would hold, for `plan explain`'s reader.
        let hot = profile.rows_for_share(0.9).min((hot_budget / rb).max(1)).max(1);
        format!(
            "; skewed (the hottest {hot} rows, {}, take {:.0}% of look-ups), which the caches keep without a copy",
            human(hot * rb),
            profile.top_share_rows(hot) * 100.0
        )
    } else {
        String::new()
    };
    FlowChoice {
        flow: DataFlow::Direct { prefetch: 16 },
        reason: format!(
            "{} of rows beyond the caches: direct gather, prefetch 16 rows ahead{skew}",
            human(piece_bytes)
        ),
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
            Placement::Replicated | Placement::Owned(_) | Placement::Client => ts.rows,
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
    fn extreme_skew_takes_the_direct_gather_with_or_without_huge_pages() {
        let (spec, p) = profile("hotset:0.99:0.001", 2_000_000);
        for huge_pages in [true, false] {
            let caps = MemoryCaps { huge_pages, ..MemoryCaps::default() };
            let c = choose_flow(&spec.tables[0], &p[0], 256, 2_000_000, &caps, 4 << 20);
            assert_eq!(c.flow, DataFlow::Direct { prefetch: 16 }, "{c:?}");
            assert!(c.reason.contains("skewed"), "{}", c.reason);
        }
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
