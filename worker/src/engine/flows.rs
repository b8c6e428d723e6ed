//! The per-table data flows: how a piece of a table (a whole replica or one shard) turns a
//! run of bags into pooled rows.
//!
//! - direct: [`RangeRows`] / [`ModRows`] resolve an id to its row and prefetch it.
//! - hot cache: [`HotCache`] keeps the hottest rows re-laid out contiguously (a few huge pages
//!   that stay in L2/LLC and in the TLB) behind a two-choice cuckoo index; hot rows skip
//!   the prefetch, cold rows fall through to the direct path.
//! - blocked: ids are bucketed by row block with a counting sort and visited block by block,
//!   so each block's rows are read while they are in cache and every duplicate id after the
//!   first is a cache hit.

use embtune_protocol::{DataFlow, ShardRows};

use super::kernels::{self, BagRun, Isa, Resolved, Resolver, RowShape};
use super::storage::RowStore;

/// Rows `lo..lo + len` stored contiguously from `base`.
#[derive(Clone, Copy)]
pub struct RangeRows {
    base: *const u8,
    stride: usize,
    lo: u32,
    len: u32,
}

impl Resolver for RangeRows {
    #[inline(always)]
    fn resolve(&self, id: u32) -> Resolved {
        let k = id.wrapping_sub(self.lo);
        if k < self.len {
            Resolved { row: self.base.wrapping_add(k as usize * self.stride), prefetch: true }
        } else {
            Resolved::SKIP
        }
    }
}

/// Rows `r` with `r mod of == index`, stored at local position `r / of`. The division and
/// remainder use Lemire's multiply-shift so that they cost a few cycles, not a divide.
#[derive(Clone, Copy)]
pub struct ModRows {
    base: *const u8,
    stride: usize,
    index: u32,
    of: u32,
    magic: u64,
}

impl ModRows {
    /// For `of >= 2`: a single hash shard is the whole table and reads through [`RangeRows`].
    fn new(base: *const u8, stride: usize, index: u32, of: u32) -> ModRows {
        debug_assert!(of >= 2, "Lemire's constant needs a divisor of at least 2");
        ModRows { base, stride, index, of, magic: (u64::MAX / of as u64).wrapping_add(1) }
    }

    #[inline(always)]
    fn split(&self, id: u32) -> (u32, u32) {
        let low = self.magic.wrapping_mul(id as u64);
        let rem = ((low as u128 * self.of as u128) >> 64) as u32;
        let quot = ((self.magic as u128 * id as u128) >> 64) as u32;
        (quot, rem)
    }
}

impl Resolver for ModRows {
    #[inline(always)]
    fn resolve(&self, id: u32) -> Resolved {
        let (q, r) = self.split(id);
        if r == self.index {
            Resolved { row: self.base.wrapping_add(q as usize * self.stride), prefetch: true }
        } else {
            Resolved::SKIP
        }
    }
}

/// The hottest rows of a piece, copied into one contiguous buffer, with an index from row id
/// to slot. The index is a two-choice cuckoo table of `id | slot << 32` words: a probe reads
/// both candidate words and selects, with no data-dependent branch (linear probing's
/// collision branch mispredicted on about a quarter of hits and cost more than it saved).
pub struct HotCache {
    rows: RowStore,
    index: Vec<u64>,
    shift: u32,
    /// Prefetch hot rows too: worth it only when the hot copy is too big to stay in L2, where
    /// a prefetch of a resident row is a wasted load slot.
    prefetch_hot: bool,
}

const EMPTY: u64 = u32::MAX as u64;
const SEED2: u64 = 0xc2b2_ae3d_27d4_eb4f;

impl HotCache {
    /// Copies out of `store` the first `limit` rows of `hot_ids` (global ids, hottest first)
    /// that this piece holds.
    pub fn build(
        store: &RowStore,
        rows: &ShardRows,
        hot_ids: &[u32],
        limit: usize,
        huge: bool,
        l2_bytes: u64,
    ) -> std::io::Result<HotCache> {
        let mut held: Vec<u32> = Vec::with_capacity(limit.min(hot_ids.len()));
        let mut seen = std::collections::HashSet::new();
        for &id in hot_ids {
            if held.len() == limit {
                break;
            }
            if rows.contains(id) && local_index(rows, id) < store.rows && seen.insert(id) {
                held.push(id);
            }
        }
        let cache = RowStore::alloc(held.len().max(1) as u64, store.row_type, store.dim, huge)?;
        for (slot, &id) in held.iter().enumerate() {
            cache.copy_row_from(slot as u64, store, local_index(rows, id));
        }
        // Cuckoo insertion at a load factor of at most one half; a cycle (rare) grows the table.
        let mut cap = (held.len() * 2).next_power_of_two().max(4);
        loop {
            if let Some((index, shift)) = Self::cuckoo(&held, cap) {
                let prefetch_hot = cache.bytes() + 8 * index.len() as u64 > l2_bytes / 2;
                return Ok(HotCache { rows: cache, index, shift, prefetch_hot });
            }
            cap *= 2;
        }
    }

    fn cuckoo(ids: &[u32], cap: usize) -> Option<(Vec<u64>, u32)> {
        let shift = 64 - cap.trailing_zeros();
        let mut index = vec![EMPTY; cap];
        for (slot, &id) in ids.iter().enumerate() {
            let mut e = id as u64 | ((slot as u64) << 32);
            let mut h = Self::h1(id, shift);
            let mut placed = false;
            for _ in 0..64 {
                std::mem::swap(&mut index[h], &mut e);
                if e == EMPTY {
                    placed = true;
                    break;
                }
                // The evicted entry moves to its other candidate.
                let k = e as u32;
                let (a, b) = (Self::h1(k, shift), Self::h2(k, shift));
                h = if a == h { b } else { a };
            }
            if !placed {
                return None;
            }
        }
        Some((index, shift))
    }

    #[inline(always)]
    fn h1(id: u32, shift: u32) -> usize {
        ((id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
    }

    #[inline(always)]
    fn h2(id: u32, shift: u32) -> usize {
        ((id as u64 ^ SEED2).wrapping_mul(0xff51_afd7_ed55_8ccd) >> shift) as usize
    }

    #[cfg(test)]
    fn find(&self, id: u32) -> Option<u64> {
        let p = self.probe();
        p.find(id).map(|row| (row as usize - p.rows as usize) as u64 / p.stride as u64)
    }

    /// The index and rows as raw parts, for the kernel's resolver.
    fn probe(&self) -> HotProbe {
        HotProbe {
            index: self.index.as_ptr(),
            shift: self.shift,
            rows: self.rows.base(),
            stride: self.rows.stride,
            prefetch: self.prefetch_hot,
        }
    }

    pub fn len(&self) -> usize {
        self.index.iter().filter(|&&e| e != EMPTY).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.rows.bytes() + 8 * self.index.len() as u64
    }
}

/// A [`HotCache`] as plain values: what the kernel's loop probes.
#[derive(Clone, Copy)]
struct HotProbe {
    index: *const u64,
    shift: u32,
    rows: *const u8,
    stride: usize,
    prefetch: bool,
}

impl HotProbe {
    /// The hot copy of row `id`, if it is hot.
    #[inline(always)]
    fn find(&self, id: u32) -> Option<*const u8> {
        // SAFETY: both hashes are below the index length (a power of two, 64 - shift bits).
        let (a, b) =
            unsafe { (*self.index.add(HotCache::h1(id, self.shift)), *self.index.add(HotCache::h2(id, self.shift))) };
        // Which of the two slots holds a hot id is a coin toss, so a branch here mispredicts on
        // half the hits (measured: 5x slower than the direct gather); a select does not.
        let e = std::hint::select_unpredictable(a as u32 == id, a, b);
        (e as u32 == id).then(|| self.rows.wrapping_add((e >> 32) as usize * self.stride))
    }
}

/// A hot cache in front of a direct resolver.
#[derive(Clone, Copy)]
struct HotRows<R> {
    hot: HotProbe,
    cold: R,
}

impl<R: Resolver> Resolver for HotRows<R> {
    #[inline(always)]
    fn resolve(&self, id: u32) -> Resolved {
        match self.hot.find(id) {
            Some(row) => Resolved { row, prefetch: self.hot.prefetch },
            None => self.cold.resolve(id),
        }
    }
}

/// Local position of global row `id` in a piece holding `rows`.
pub fn local_index(rows: &ShardRows, id: u32) -> u64 {
    match *rows {
        ShardRows::Range { lo, .. } => id as u64 - lo,
        ShardRows::Hash { of, .. } => id as u64 / of as u64,
    }
}

/// Per-thread buffers the blocked flow reuses between tasks.
#[derive(Default)]
pub struct Scratch {
    rows: Vec<*const u8>,
    bags: Vec<u32>,
    counts: Vec<u32>,
    block_of: Vec<u32>,
    tmp_rows: Vec<*const u8>,
    tmp_bags: Vec<u32>,
}

// SAFETY: the raw pointers are only dereferenced by the thread that owns the scratch, while the
// deployment they point into is kept alive by the task.
unsafe impl Send for Scratch {}

/// A table piece as deployed on a worker: the whole table or one shard, with its data flow.
pub struct Piece {
    pub store: RowStore,
    pub rows: ShardRows,
    pub flow: DataFlow,
    pub hot: Option<HotCache>,
    pub table_rows: u64,
}

impl Piece {
    pub fn shape(&self) -> RowShape {
        RowShape { row_type: self.store.row_type, dim: self.store.dim as usize }
    }

    /// Bytes this piece occupies, hot copy included.
    pub fn bytes(&self) -> u64 {
        self.store.bytes() + self.hot.as_ref().map_or(0, HotCache::bytes)
    }

    /// Pools the bags of `run` over the rows this piece holds, overwriting the outputs. Ids of
    /// rows the piece does not hold contribute nothing (another shard adds them).
    ///
    /// # Safety
    /// `run.out` must have room for every bag's output at `out_stride` floats apart, and every
    /// id must be below the table's row count.
    pub unsafe fn pool(&self, isa: Isa, run: BagRun<'_>, scratch: &mut Scratch) {
        let shape = self.shape();
        let base = self.store.base();
        let stride = self.store.stride;
        // SAFETY: the resolvers only produce pointers to rows inside `store` or the hot copy.
        unsafe {
            match (self.flow, self.rows) {
                (DataFlow::Direct { prefetch }, ShardRows::Range { lo, hi }) => kernels::pool(
                    isa,
                    shape,
                    run,
                    RangeRows { base, stride, lo: lo as u32, len: (hi - lo) as u32 },
                    prefetch as usize,
                ),
                (DataFlow::Direct { prefetch }, ShardRows::Hash { of: 1, .. }) => kernels::pool(
                    isa,
                    shape,
                    run,
                    RangeRows { base, stride, lo: 0, len: self.table_rows as u32 },
                    prefetch as usize,
                ),
                (DataFlow::Direct { prefetch }, ShardRows::Hash { index, of }) => {
                    kernels::pool(isa, shape, run, ModRows::new(base, stride, index, of), prefetch as usize)
                }
                (DataFlow::HotCache { prefetch, .. }, rows) => {
                    let hot = self.hot.as_ref().expect("a hot-cache piece is built with its cache").probe();
                    match rows {
                        ShardRows::Range { lo, hi } => {
                            let cold = RangeRows { base, stride, lo: lo as u32, len: (hi - lo) as u32 };
                            kernels::pool(isa, shape, run, HotRows { hot, cold }, prefetch as usize)
                        }
                        ShardRows::Hash { of: 1, .. } => {
                            let cold = RangeRows { base, stride, lo: 0, len: self.table_rows as u32 };
                            kernels::pool(isa, shape, run, HotRows { hot, cold }, prefetch as usize)
                        }
                        ShardRows::Hash { index, of } => {
                            let cold = ModRows::new(base, stride, index, of);
                            kernels::pool(isa, shape, run, HotRows { hot, cold }, prefetch as usize)
                        }
                    }
                }
                (DataFlow::Blocked { block_rows }, rows) => self.pool_blocked(isa, run, block_rows, rows, scratch),
            }
        }
    }

    /// The blocked flow: a counting sort of the run's (row, bag) pairs by row block, then one
    /// pass that adds each row into its bag's output in block order.
    unsafe fn pool_blocked(&self, isa: Isa, run: BagRun<'_>, block_rows: u32, rows: ShardRows, s: &mut Scratch) {
        let shape = self.shape();
        let bags = run.offsets.len() - 1;
        // Outputs are accumulated into, so start them at zero.
        for b in 0..bags {
            // SAFETY: the caller's output has `dim` floats per bag.
            unsafe { std::ptr::write_bytes(run.out.add(b * run.out_stride), 0, shape.dim) };
        }
        let local_rows = self.store.rows.max(1);
        // Keep the bucket array small enough to stay in L1/L2 whatever the table size.
        let block = (block_rows.max(1) as u64).max(local_rows.div_ceil(1 << 14));
        let nblocks = local_rows.div_ceil(block) as usize;
        s.counts.clear();
        s.counts.resize(nblocks + 1, 0);
        s.rows.clear();
        s.bags.clear();
        s.block_of.clear();
        let base = self.store.base();
        let stride = self.store.stride;
        let direct: Box<dyn Fn(u32) -> Option<u64>> = match rows {
            ShardRows::Range { lo, hi } => Box::new(move |id| {
                let k = (id as u64).wrapping_sub(lo);
                (k < hi - lo).then_some(k)
            }),
            ShardRows::Hash { of: 1, .. } => Box::new(move |id| Some(id as u64)),
            ShardRows::Hash { index, of } => {
                let m = ModRows::new(base, stride, index, of);
                Box::new(move |id| {
                    let (q, r) = m.split(id);
                    (r == index).then_some(q as u64)
                })
            }
        };
        for b in 0..bags {
            let (lo, hi) = (run.offsets[b] as usize, run.offsets[b + 1] as usize);
            for &id in &run.ids[lo..hi] {
                if let Some(k) = direct(id) {
                    let blk = (k / block) as u32;
                    s.counts[blk as usize + 1] += 1;
                    s.block_of.push(blk);
                    s.rows.push(base.wrapping_add(k as usize * stride));
                    s.bags.push(b as u32);
                }
            }
        }
        for i in 1..s.counts.len() {
            s.counts[i] += s.counts[i - 1];
        }
        let n = s.rows.len();
        s.tmp_rows.clear();
        s.tmp_rows.resize(n, std::ptr::null());
        s.tmp_bags.clear();
        s.tmp_bags.resize(n, 0);
        for i in 0..n {
            let blk = s.block_of[i] as usize;
            let pos = s.counts[blk] as usize;
            s.counts[blk] += 1;
            s.tmp_rows[pos] = s.rows[i];
            s.tmp_bags[pos] = s.bags[i];
        }
        // SAFETY: every pointer is a row of `store`; every bag indexes the caller's output.
        unsafe { kernels::scatter_add(isa, shape, &s.tmp_rows, &s.tmp_bags, run.out, run.out_stride, 16) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mod_rows_split_matches_division() {
        for of in [2u32, 3, 7, 16, 1000] {
            let m = ModRows::new(std::ptr::null(), 1, 0, of);
            for id in [0u32, 1, 2, 99, 12345, u32::MAX - 1] {
                assert_eq!(m.split(id), (id / of, id % of), "id {id} of {of}");
            }
        }
    }

    #[test]
    fn hot_cache_finds_hot_rows_and_misses_cold_ones() {
        let store = RowStore::alloc(100, embtune_workloads::RowType::F32, 4, false).unwrap();
        store.fill(1, 0, 100, |r| r + 50);
        let rows = ShardRows::Range { lo: 50, hi: 150 };
        // 10 is not held by this shard and must be ignored; 60 appears twice.
        let hot = HotCache::build(&store, &rows, &[60, 149, 10, 60, 77], 10, false, 1 << 20).unwrap();
        assert_eq!(hot.len(), 3);
        for id in [60u32, 149, 77] {
            let slot = hot.find(id).unwrap();
            assert_eq!(hot.rows.row(slot), store.row(local_index(&rows, id)));
        }
        assert!(hot.find(61).is_none());
        assert!(hot.find(10).is_none());
    }
}
