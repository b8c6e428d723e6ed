//! The CUDA source of the look-up kernels and the per-deployment specialisation around it.
//!
//! `kernels.cu` holds templates; a deployment knows every table's row type, dimension and data
//! flow, so it asks for exactly the instantiations it needs ([`Variant`]) and NVRTC compiles a
//! kernel whose dispatch switch holds those alone (registers are allocated for the heaviest
//! path of a kernel, so unused paths would cost occupancy).

use embtune_protocol::DataFlow;
use embtune_workloads::RowType;

/// The kernel source, compiled at run time.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Threads per block (EMB_THREADS in the source).
pub const THREADS: u32 = 256;
/// Warps per block.
pub const WARPS: u32 = THREADS / 32;

/// Knobs that apply to a whole compiled kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KernelKnobs {
    /// Warps that share one bag (1, 2, 4 or 8): more warps per bag put fewer tables in flight
    /// at once, so the L2 holds the hot rows of fewer tables.
    pub split: u32,
    /// `__launch_bounds__` minimum blocks per SM (caps registers at 65536 / (256 x this));
    /// 0 picks by the prefetch distance ([`auto_min_blocks`]).
    pub min_blocks: u32,
    /// Read hot rows with an L2 `evict_last` policy (off by default: no gain measured).
    pub hot_hint: bool,
    /// Read the other rows of hot-cache tables with `evict_first`.
    pub cold_evict_first: bool,
}

impl Default for KernelKnobs {
    fn default() -> KernelKnobs {
        KernelKnobs { split: 1, min_blocks: 0, hot_hint: false, cold_evict_first: false }
    }
}

/// One instantiation of the kernel templates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// One thread per output element.
    Baseline { row_type: RowType },
    /// A warp (or `split` warps) per bag, `lanes` lanes per row with vector loads, rows
    /// prefetched `prefetch` steps ahead; `hot`: hot rows come from the pinned hot copy.
    Warp { row_type: RowType, prefetch: u32, hot: bool, lanes: u32 },
    /// Short bags: 32 / `lanes` bags per warp, `lanes` lanes per row with vector loads.
    MultiBag { row_type: RowType, lanes: u32 },
}

/// Bags this short on average (look-ups per sample) go to [`Variant::MultiBag`] when the row
/// leaves lanes of a warp idle.
pub const SHORT_BAG: f64 = 4.0;

impl Variant {
    /// The variant for a table of `dim` columns stored as `row_type` under `flow`, or the
    /// baseline where the vector kernels do not fit the row shape.
    /// `mean_pooling` is the table's mean bag length: short bags with narrow rows take the
    /// multi-bag kernel (which keeps no hot copy: a one-hot table's hot rows stay in L2 by
    /// themselves).
    pub fn for_table(row_type: RowType, dim: u32, flow: DataFlow, mean_pooling: f64) -> Variant {
        let (prefetch, hot) = match flow {
            DataFlow::Direct { prefetch: 0 } => return Variant::Baseline { row_type },
            DataFlow::Direct { prefetch } => (prefetch as u32, false),
            DataFlow::HotCache { prefetch, .. } => (prefetch.max(1) as u32, true),
            DataFlow::Blocked { .. } => (8, false),
        };
        match vector_lanes(row_type, dim) {
            Some(lanes) if lanes < 32 && mean_pooling <= SHORT_BAG => Variant::MultiBag { row_type, lanes },
            Some(lanes) => {
                let groups = 32 / lanes;
                // P x G must divide 32: round P down to a power of two, at most 32 / G.
                let p = prefetch.clamp(1, 32 / groups);
                let p = 1 << (31 - p.leading_zeros());
                Variant::Warp { row_type, prefetch: p, hot, lanes }
            }
            None => Variant::Baseline { row_type },
        }
    }

    /// The call this variant makes in the dispatch switch.
    fn call(&self) -> String {
        match *self {
            Variant::Baseline { row_type } => {
                format!("table_baseline<{}>(t, ids, offs, out, width, batch, slot, local_block);", rt(row_type))
            }
            Variant::Warp { row_type, prefetch, hot, lanes } => format!(
                "table_warp<{}, {prefetch}, {hot}, {lanes}>(t, ids, offs, out, width, batch, slot, local_block, red);",
                rt(row_type)
            ),
            Variant::MultiBag { row_type, lanes } => format!(
                "table_multibag<{}, {lanes}>(t, ids, offs, out, width, batch, slot, local_block);",
                rt(row_type)
            ),
        }
    }

    /// Blocks a table slot of `batch` bags and `dim` columns needs.
    pub fn blocks(&self, batch: u32, dim: u32, split: u32) -> u32 {
        match self {
            Variant::Baseline { .. } => ((batch as u64 * dim as u64).div_ceil(THREADS as u64)) as u32,
            Variant::Warp { .. } => batch.div_ceil(WARPS / split),
            Variant::MultiBag { lanes, .. } => batch.div_ceil(WARPS * (32 / lanes)),
        }
    }

    pub fn is_hot(&self) -> bool {
        matches!(self, Variant::Warp { hot: true, .. })
    }

    /// A short label: `baseline`, `warp(pf=8,lanes=32)`, `warp-hot(pf=8,lanes=32)`.
    pub fn label(&self) -> String {
        match *self {
            Variant::Baseline { row_type } => format!("baseline/{row_type}"),
            Variant::Warp { row_type, prefetch, hot, lanes } => {
                format!("warp{}/{row_type}(pf={prefetch},lanes={lanes})", if hot { "-hot" } else { "" })
            }
            Variant::MultiBag { row_type, lanes } => format!("multibag/{row_type}(lanes={lanes})"),
        }
    }
}

fn rt(r: RowType) -> &'static str {
    match r {
        RowType::F32 => "RT_F32",
        RowType::F16 => "RT_F16",
        RowType::Int8 => "RT_I8",
    }
}

/// Lanes per row for the vector kernels: each lane reads 16 bytes (8 for int8) of a row, so a
/// row of `dim` columns needs dim / E vectors, E = 4 (f32) or 8 (f16, int8). Lanes must be a
/// power of two that divides 32, and a row wider than 32 vectors is done in passes of 32.
/// `None` where rows are not aligned for such loads (the baseline kernel serves them).
pub fn vector_lanes(row_type: RowType, dim: u32) -> Option<u32> {
    let (e, align) = match row_type {
        RowType::F32 => (4, 16),
        RowType::F16 => (8, 16),
        RowType::Int8 => (8, 8),
    };
    let stride = row_type.row_bytes(dim) as u32;
    if dim == 0 || !dim.is_multiple_of(e) || !stride.is_multiple_of(align) {
        return None;
    }
    let vectors = dim / e;
    if vectors <= 32 { vectors.is_power_of_two().then_some(vectors) } else { vectors.is_multiple_of(32).then_some(32) }
}

/// Blocks per SM to ask `__launch_bounds__` for: prefetch buffers take 4 registers per row
/// of distance, so deeper prefetching gets more registers and fewer warps (ptxas, sm_90: 64
/// registers hold distance 4 without spills, 80 distance 8, 128 distance 16). That still
/// leaves 16 or more warps per SM, each with `prefetch` rows in flight: tens of KiB per SM,
/// enough to cover the memory latency.
pub fn auto_min_blocks(variants: &[Variant]) -> u32 {
    let p = variants
        .iter()
        .map(|v| match v {
            Variant::Warp { prefetch, .. } => *prefetch,
            Variant::Baseline { .. } | Variant::MultiBag { .. } => 1,
        })
        .max()
        .unwrap_or(1);
    match p {
        0..=4 => 4,
        5..=8 => 3,
        _ => 2,
    }
}

/// The full source for a kernel holding `variants` (case i calls variants[i]).
pub fn source(variants: &[Variant], knobs: &KernelKnobs) -> String {
    let mut s = String::with_capacity(SOURCE.len() + 1024);
    let min_blocks = if knobs.min_blocks == 0 { auto_min_blocks(variants) } else { knobs.min_blocks };
    s.push_str(&format!(
        "#define EMB_SPLIT {}\n#define EMB_MIN_BLOCKS {}\n#define EMB_HOT_HINT {}\n#define EMB_COLD_FIRST {}\n",
        knobs.split, min_blocks, knobs.hot_hint as u32, knobs.cold_evict_first as u32
    ));
    let mut dispatch = String::new();
    for (i, v) in variants.iter().enumerate() {
        dispatch.push_str(&format!("case {i}: {{ {} break; }} ", v.call()));
    }
    s.push_str(&format!("#define EMB_DISPATCH {dispatch}\n"));
    s.push_str(SOURCE);
    s
}

/// One table slot as the kernel reads it (`struct TableDesc` in kernels.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableDesc {
    pub base: u64,
    pub hot_base: u64,
    pub rank: u64,
    pub stride: u32,
    pub dim: u32,
    pub out_col: u32,
    pub variant: u32,
    pub block_begin: u32,
    pub mean: u32,
}

impl TableDesc {
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..8].copy_from_slice(&self.base.to_le_bytes());
        b[8..16].copy_from_slice(&self.hot_base.to_le_bytes());
        b[16..24].copy_from_slice(&self.rank.to_le_bytes());
        for (i, v) in
            [self.stride, self.dim, self.out_col, self.variant, self.block_begin, self.mean].iter().enumerate()
        {
            b[24 + 4 * i..28 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// The hot-row index of a table: per 32 rows, a bitmap of the hot ones and the number of hot
/// rows before them, so that a hot row's place in the hot copy (ascending id order) is
/// `rank + popcount(bits below it)`. Returns the words (as u32 pairs) and the hot ids sorted.
pub fn hot_index(rows: u64, hot_ids: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut sorted: Vec<u32> = hot_ids.iter().copied().filter(|&id| (id as u64) < rows).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let words = rows.div_ceil(32) as usize;
    let mut bits = vec![0u32; words];
    for &id in &sorted {
        bits[(id >> 5) as usize] |= 1 << (id & 31);
    }
    let mut out = Vec::with_capacity(words * 2);
    let mut before = 0u32;
    for &w in &bits {
        out.push(w);
        out.push(before);
        before += w.count_ones();
    }
    (out, sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_row_shapes() {
        assert_eq!(vector_lanes(RowType::F32, 128), Some(32));
        assert_eq!(vector_lanes(RowType::F32, 16), Some(4));
        assert_eq!(vector_lanes(RowType::F32, 256), Some(32));
        assert_eq!(vector_lanes(RowType::F32, 13), None);
        assert_eq!(vector_lanes(RowType::F32, 24), None);
        assert_eq!(vector_lanes(RowType::F16, 128), Some(16));
        assert_eq!(vector_lanes(RowType::F16, 12), None);
        assert_eq!(vector_lanes(RowType::Int8, 128), Some(16));
        assert_eq!(vector_lanes(RowType::Int8, 16), Some(2));
        assert_eq!(vector_lanes(RowType::Int8, 12), None);
    }

    #[test]
    fn variants_keep_prefetch_times_groups_within_a_chunk() {
        let v = Variant::for_table(RowType::F32, 16, DataFlow::Direct { prefetch: 16 }, 20.0);
        // 4 lanes per row: 8 rows a step, so at most 4 steps ahead.
        assert_eq!(v, Variant::Warp { row_type: RowType::F32, prefetch: 4, hot: false, lanes: 4 });
        let v = Variant::for_table(RowType::F32, 128, DataFlow::Direct { prefetch: 6 }, 20.0);
        assert_eq!(v, Variant::Warp { row_type: RowType::F32, prefetch: 4, hot: false, lanes: 32 });
        assert_eq!(
            Variant::for_table(RowType::F32, 128, DataFlow::Direct { prefetch: 0 }, 20.0),
            Variant::Baseline { row_type: RowType::F32 }
        );
        assert_eq!(
            Variant::for_table(RowType::F32, 16, DataFlow::Direct { prefetch: 8 }, 1.0),
            Variant::MultiBag { row_type: RowType::F32, lanes: 4 }
        );
        assert_eq!(
            Variant::for_table(RowType::F32, 128, DataFlow::Direct { prefetch: 8 }, 1.0),
            Variant::Warp { row_type: RowType::F32, prefetch: 8, hot: false, lanes: 32 }
        );
        assert_eq!(
            Variant::for_table(RowType::F32, 13, DataFlow::Direct { prefetch: 8 }, 20.0),
            Variant::Baseline { row_type: RowType::F32 }
        );
    }

    #[test]
    fn hot_index_ranks_hot_rows_in_id_order() {
        let (words, sorted) = hot_index(100, &[70, 3, 40, 3, 31, 500]);
        assert_eq!(sorted, vec![3, 31, 40, 70]);
        let place = |id: u32| -> Option<u32> {
            let (w, before) = (words[(id >> 5) as usize * 2], words[(id >> 5) as usize * 2 + 1]);
            let b = id & 31;
            ((w >> b) & 1 == 1).then(|| before + (w & ((1u32 << b) - 1)).count_ones())
        };
        assert_eq!(place(3), Some(0));
        assert_eq!(place(31), Some(1));
        assert_eq!(place(40), Some(2));
        assert_eq!(place(70), Some(3));
        assert_eq!(place(4), None);
    }

    #[test]
    fn table_desc_is_48_bytes_in_field_order() {
        assert_eq!(std::mem::size_of::<TableDesc>(), 48);
        let d = TableDesc {
            base: 1,
            hot_base: 2,
            rank: 3,
            stride: 4,
            dim: 5,
            out_col: 6,
            variant: 7,
            block_begin: 8,
            mean: 9,
        };
        let b = d.to_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 2);
        assert_eq!(b[16], 3);
        assert_eq!(b[24], 4);
        assert_eq!(b[44], 9);
    }

    #[test]
    fn source_holds_the_dispatch() {
        let v = [
            Variant::Baseline { row_type: RowType::F16 },
            Variant::Warp { row_type: RowType::F32, prefetch: 8, hot: true, lanes: 32 },
        ];
        let s = source(&v, &KernelKnobs::default());
        assert!(s.contains("case 0: { table_baseline<RT_F16>"));
        assert!(s.contains("case 1: { table_warp<RT_F32, 8, true, 32>"));
        assert!(s.starts_with("#define EMB_SPLIT 1"));
    }
}
