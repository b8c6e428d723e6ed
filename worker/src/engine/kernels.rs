//! Gather-and-pool kernels, selected at run time for the CPU they run on.
//!
//! One loop shape serves every data flow: walk a run of bags, turn each id into a row pointer
//! through a [`Resolver`] (the data flow's policy: which rows are held here, which are hot,
//! which to prefetch), prefetch the row `pf` ids ahead (across bag boundaries, so several bags
//! are in flight), and add the row into accumulators that stay in vector registers.
//!
//! The vector code exists three times: AVX-512 (F, BW, VL), AVX2 with FMA and F16C, and a
//! portable version the compiler vectorises for the baseline target. [`Isa::detect`] picks the
//! best the CPU has, so one portable binary runs at full speed everywhere; a cap
//! ([`Isa::at_most`], `--isa` on the command line) forces a lower level for comparisons.

use embtune_workloads::RowType;

/// Widest row, in f32 lanes, whose accumulators are kept in registers in one pass; wider rows
/// are processed in column blocks of this many lanes.
pub const COL_BLOCK: usize = 128;

/// Longest prefetch distance, in ids: far beyond what any memory system needs in flight.
pub const MAX_PREFETCH: usize = 63;

/// Instruction-set level of the vector kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl std::str::FromStr for Isa {
    type Err = String;

    /// `scalar`, `avx2` or `avx512`, as [`Isa::name`] writes them.
    fn from_str(s: &str) -> Result<Isa, String> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .find(|i| i.name() == s.trim())
            .ok_or_else(|| format!("unknown instruction-set level `{s}`: use scalar, avx2 or avx512"))
    }
}

impl Isa {
    /// The best level this CPU supports.
    pub fn detect() -> Isa {
        Self::best_supported()
    }

    /// The best level this CPU supports, but no higher than `cap` (`None`: no cap). A cap above
    /// what the CPU has is lowered to it, so a cap never selects code the CPU cannot run.
    pub fn at_most(cap: Option<Isa>) -> Isa {
        let best = Self::best_supported();
        cap.map_or(best, |c| best.min(c))
    }

    /// Every level this CPU can run, for tests that compare them.
    pub fn supported() -> Vec<Isa> {
        let best = Self::best_supported();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|&i| i <= best).collect()
    }

    fn best_supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// A resolved id: the row to add (null to skip an id another shard holds) and whether to
/// prefetch it (hot rows are cache-resident; prefetching them only costs load slots).
#[derive(Clone, Copy)]
pub struct Resolved {
    pub row: *const u8,
    pub prefetch: bool,
}

impl Resolved {
    pub const SKIP: Resolved = Resolved { row: std::ptr::null(), prefetch: false };
}

/// A data flow's policy for turning ids into rows. Resolvers are small `Copy` values passed by
/// value, so their fields live in registers inside the kernel's loop instead of being reloaded
/// through a pointer after every store.
pub trait Resolver: Copy {
    fn resolve(&self, id: u32) -> Resolved;
}

/// Bags to pool: the ids of bag `b` are `ids[offsets[b]..offsets[b + 1]]` and its pooled row
/// goes to `out + b * out_stride` (f32 elements).
#[derive(Clone, Copy)]
pub struct BagRun<'a> {
    pub offsets: &'a [u32],
    pub ids: &'a [u32],
    pub out: *mut f32,
    pub out_stride: usize,
}

/// The shape of the rows being read.
#[derive(Clone, Copy, Debug)]
pub struct RowShape {
    pub row_type: RowType,
    pub dim: usize,
}

/// Pools every bag of `run` into its output (overwriting it), reading rows through `r`.
///
/// # Safety
/// Every pointer the resolver returns must point at a full row of `shape`, and `run.out` must
/// have room for `bags * out_stride` floats, of which this call writes `dim` per bag.
pub unsafe fn pool<R: Resolver>(isa: Isa, shape: RowShape, run: BagRun<'_>, r: R, prefetch: usize) {
    let pf = prefetch.min(MAX_PREFETCH);
    // Without a prefetch distance nothing is prefetched at all: prefetching the row being
    // added this very moment only costs load slots.
    let lines = if pf == 0 { 0 } else { prefetch_lines(shape) };
    let mut col = 0;
    while col < shape.dim.max(1) {
        let width = (shape.dim - col).min(COL_BLOCK);
        // SAFETY: forwarded contract; the ISA was checked by `Isa::detect`.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => x86::pool_avx512(shape, col, width, run, r, pf, lines),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => x86::pool_avx2(shape, col, width, run, r, pf, lines),
                _ => portable::pool(shape, col, width, run, r, pf, lines),
            }
        }
        if shape.dim == 0 {
            break;
        }
        col += width;
    }
}

/// Adds row `rows[i]` into output bag `bags[i]` for every pair: the inner loop of the blocked
/// data flow, which visits ids in row-block order and scatters into the bags' outputs.
///
/// # Safety
/// As for [`pool`]; every `bags[i]` must index an output row.
pub unsafe fn scatter_add(
    isa: Isa,
    shape: RowShape,
    rows: &[*const u8],
    bags: &[u32],
    out: *mut f32,
    out_stride: usize,
    prefetch: usize,
) {
    let pf = prefetch.min(MAX_PREFETCH);
    let lines = if pf == 0 { 0 } else { prefetch_lines(shape) };
    let mut col = 0;
    while col < shape.dim {
        let width = (shape.dim - col).min(COL_BLOCK);
        // SAFETY: forwarded contract.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => x86::scatter_avx512(shape, col, width, rows, bags, out, out_stride, pf, lines),
                _ => portable::scatter(shape, col, width, rows, bags, out, out_stride, pf, lines),
            }
        }
        col += width;
    }
}

/// Cache lines to prefetch per row: the row's lines, plus one when rows are not line-aligned
/// (a row then straddles one more line), at most 8 (the hardware's next-line prefetcher covers
/// longer rows).
fn prefetch_lines(shape: RowShape) -> usize {
    let bytes = shape.row_type.row_bytes(shape.dim as u32);
    let lines = bytes.div_ceil(64) + usize::from(!bytes.is_multiple_of(64));
    lines.min(8)
}

/// Prefetches `lines` lines from `p` (at least one: callers pass `lines == 0` only with
/// prefetching off, where this is never called).
///
/// A plain counted loop: its trip count is the same for every row of a call, so its branch is
/// predicted, and it keeps two registers live. A `match` on the count with one arm per length,
/// tried before, compiled to a jump table plus a chain of register moves, and spilled six
/// registers of the gather loop around it (`limit` ran at 0.77 of the ceiling locally with it).
#[inline(always)]
fn prefetch_row(p: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let mut q = p as *const i8;
        if lines == 4 {
            // The commonest row, 64 f32 (and 128 f16), without the loop's compare and branch.
            // SAFETY: as below.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(q);
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(128));
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(192));
            }
            return;
        }
        let end = q.wrapping_add(lines * 64);
        loop {
            // SAFETY: prefetch never faults, even past the mapping.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(q) };
            q = q.wrapping_add(64);
            if q >= end {
                break;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (p, lines);
    }
}

/// One event of a pass over a run of bags.
#[derive(Clone, Copy)]
enum Step {
    /// A bag begins: clear the accumulators.
    Start,
    /// Add this row.
    Add(*const u8),
    /// The bag with this index ends: store the accumulators.
    Flush(usize),
}

/// Drives one pass over a run of bags: before adding the row of id `j`, it resolves id
/// `j + pf` (across bag boundaries, so several bags are in flight), prefetches that row and
/// keeps the pointer in a ring of [`RING`] slots until `j` gets there, so every id is resolved
/// once; the ISA's closure `f` adds rows into its vector accumulators. This is the `limit`
/// ceiling loop's shape. It replaced a two-stage pipeline that resolved chunks of 8 ids ahead and
/// issued their prefetches in bursts, which was slower wherever the two were compared, and a
/// variant that resolved every id twice (once to prefetch, once to add), which cost the hot-row
/// flow's probe twice (BENCHMARKS.md, "Engine: the gather ceiling"). Without prefetch the loop
/// resolves and adds, nothing more. `inline(always)` puts the loop into the ISA's target-feature
/// function, where the match on the step folds away.
#[inline(always)]
unsafe fn drive<R: Resolver>(run: BagRun<'_>, r: R, pf: usize, lines: usize, mut f: impl FnMut(Step)) {
    let bags = run.offsets.len().saturating_sub(1);
    if bags == 0 {
        return;
    }
    let base = run.offsets[0] as usize;
    let n = run.offsets[bags] as usize - base;
    let ids = &run.ids[base..base + n];
    let pf = if lines == 0 { 0 } else { pf.min(RING - 1) };
    let mut ring = [std::ptr::null::<u8>(); RING];
    let ahead = |ring: &mut [*const u8; RING], k: usize| {
        // SAFETY: callers pass k < n.
        let x = r.resolve(unsafe { *ids.get_unchecked(k) });
        if x.prefetch {
            prefetch_row(x.row, lines);
        }
        ring[k % RING] = x.row;
    };
    for k in 0..pf.min(n) {
        ahead(&mut ring, k);
    }
    let mut j = 0usize;
    for b in 0..bags {
        f(Step::Start);
        let end = run.offsets[b + 1] as usize - base;
        while j < end {
            let row = if pf == 0 {
                // SAFETY: j < end <= n.
                r.resolve(unsafe { *ids.get_unchecked(j) }).row
            } else {
                if j + pf < n {
                    ahead(&mut ring, j + pf);
                }
                ring[j % RING]
            };
            if !row.is_null() {
                f(Step::Add(row));
            }
            j += 1;
        }
        f(Step::Flush(b));
    }
}

/// Slots of the ring of resolved rows: a power of two above the longest prefetch distance.
const RING: usize = MAX_PREFETCH + 1;

mod portable {
    use super::*;

    /// Portable kernel: plain loops over a column block that the compiler vectorises for the
    /// baseline target (SSE2 on x86-64, NEON on aarch64).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn pool<R: Resolver>(
        shape: RowShape,
        col: usize,
        width: usize,
        run: BagRun<'_>,
        r: R,
        pf: usize,
        lines: usize,
    ) {
        let mut acc = [0f32; COL_BLOCK];
        let mut bias = 0f32;
        let dim = shape.dim;
        let rt = shape.row_type;
        // SAFETY: the closures read `width` columns of rows the resolver vouched for and write
        // `width` floats of the bag's output, inside the caller's contract.
        unsafe {
            drive(run, r, pf, lines, |step| match step {
                Step::Start => {
                    acc[..width].fill(0.0);
                    bias = 0.0;
                }
                Step::Add(row) => bias += add_row(rt, dim, col, width, row, &mut acc),
                Step::Flush(b) => {
                    let o = std::slice::from_raw_parts_mut(run.out.add(b * run.out_stride + col), width);
                    for (d, a) in o.iter_mut().zip(&acc[..width]) {
                        *d = *a + bias;
                    }
                }
            });
        }
    }

    /// Adds columns `col..col + width` of a row into `acc`; returns the int8 bias to add.
    #[inline(always)]
    pub(super) unsafe fn add_row(
        rt: RowType,
        dim: usize,
        col: usize,
        width: usize,
        row: *const u8,
        acc: &mut [f32; COL_BLOCK],
    ) -> f32 {
        // SAFETY: the row has `dim` columns (and the int8 scale/bias after them).
        unsafe {
            match rt {
                RowType::F32 => {
                    let v = std::slice::from_raw_parts(row.add(4 * col) as *const [u8; 4], width);
                    for (a, x) in acc[..width].iter_mut().zip(v) {
                        *a += f32::from_le_bytes(*x);
                    }
                    0.0
                }
                RowType::F16 => {
                    let v = std::slice::from_raw_parts(row.add(2 * col) as *const [u8; 2], width);
                    for (a, x) in acc[..width].iter_mut().zip(v) {
                        *a += half::f16::from_le_bytes(*x).to_f32();
                    }
                    0.0
                }
                RowType::Int8 => {
                    let scale = f32::from_le_bytes(*(row.add(dim) as *const [u8; 4]));
                    let bias = f32::from_le_bytes(*(row.add(dim + 4) as *const [u8; 4]));
                    let q = std::slice::from_raw_parts(row.add(col) as *const i8, width);
                    for (a, &x) in acc[..width].iter_mut().zip(q) {
                        *a += x as f32 * scale;
                    }
                    bias
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scatter(
        shape: RowShape,
        col: usize,
        width: usize,
        rows: &[*const u8],
        bags: &[u32],
        out: *mut f32,
        out_stride: usize,
        pf: usize,
        lines: usize,
    ) {
        let mut acc = [0f32; COL_BLOCK];
        for (i, (&row, &bag)) in rows.iter().zip(bags).enumerate() {
            if let Some(&next) = rows.get(i + pf) {
                prefetch_row(next, lines);
            }
            acc[..width].fill(0.0);
            // SAFETY: as in `pool`.
            unsafe {
                let bias = add_row(shape.row_type, shape.dim, col, width, row, &mut acc);
                let o = std::slice::from_raw_parts_mut(out.add(bag as usize * out_stride + col), width);
                for (d, a) in o.iter_mut().zip(&acc[..width]) {
                    *d += *a + bias;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Dispatches on the number of 16-lane vectors so that the accumulators are a fixed-size
    /// array the compiler keeps in zmm registers.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn pool_avx512<R: Resolver>(
        shape: RowShape,
        col: usize,
        width: usize,
        run: BagRun<'_>,
        r: R,
        pf: usize,
        lines: usize,
    ) {
        macro_rules! go { ($($v:literal)*) => { match width.div_ceil(16) {
            $($v => unsafe { pool512::<R, $v>(shape, col, width, run, r, pf, lines) },)*
            _ => unreachable!(),
        } } }
        go!(1 2 3 4 5 6 7 8)
    }

    /// One width's loop, kept out of line so that each width gets the whole register file.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    unsafe fn pool512<R: Resolver, const V: usize>(
        shape: RowShape,
        col: usize,
        width: usize,
        run: BagRun<'_>,
        r: R,
        pf: usize,
        lines: usize,
    ) {
        let tail = width - 16 * (V - 1);
        let mask: __mmask16 = if tail >= 16 { 0xffff } else { (1u16 << tail) - 1 };
        let mut acc = [_mm512_setzero_ps(); V];
        let mut bias = _mm512_setzero_ps();
        let dim = shape.dim;
        // SAFETY: loads read only the row's `width` columns (the last vector masked), stores
        // write only the bag's `width` output floats.
        unsafe {
            match shape.row_type {
                RowType::F32 => drive(run, r, pf, lines, |step| match step {
                    Step::Start => acc = [_mm512_setzero_ps(); V],
                    Step::Add(row) => {
                        let p = row.add(4 * col) as *const f32;
                        for (v, a) in acc.iter_mut().enumerate() {
                            let x = if v + 1 < V {
                                _mm512_loadu_ps(p.add(16 * v))
                            } else {
                                _mm512_maskz_loadu_ps(mask, p.add(16 * v))
                            };
                            *a = _mm512_add_ps(*a, x);
                        }
                    }
                    Step::Flush(b) => {
                        store512::<V>(&acc, _mm512_setzero_ps(), run.out.add(b * run.out_stride + col), mask)
                    }
                }),
                RowType::F16 => drive(run, r, pf, lines, |step| match step {
                    Step::Start => acc = [_mm512_setzero_ps(); V],
                    Step::Add(row) => {
                        let p = row.add(2 * col) as *const i16;
                        for (v, a) in acc.iter_mut().enumerate() {
                            let h = _mm256_maskz_loadu_epi16(if v + 1 < V { 0xffff } else { mask }, p.add(16 * v));
                            *a = _mm512_add_ps(*a, _mm512_cvtph_ps(h));
                        }
                    }
                    Step::Flush(b) => {
                        store512::<V>(&acc, _mm512_setzero_ps(), run.out.add(b * run.out_stride + col), mask)
                    }
                }),
                RowType::Int8 => drive(run, r, pf, lines, |step| match step {
                    Step::Start => {
                        acc = [_mm512_setzero_ps(); V];
                        bias = _mm512_setzero_ps();
                    }
                    Step::Add(row) => {
                        let scale = _mm512_set1_ps(std::ptr::read_unaligned(row.add(dim) as *const f32));
                        bias = _mm512_add_ps(
                            bias,
                            _mm512_set1_ps(std::ptr::read_unaligned(row.add(dim + 4) as *const f32)),
                        );
                        let p = row.add(col) as *const i8;
                        for (v, a) in acc.iter_mut().enumerate() {
                            let q = _mm_maskz_loadu_epi8(if v + 1 < V { 0xffff } else { mask }, p.add(16 * v));
                            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), scale, *a);
                        }
                    }
                    Step::Flush(b) => store512::<V>(&acc, bias, run.out.add(b * run.out_stride + col), mask),
                }),
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    unsafe fn store512<const V: usize>(acc: &[__m512; V], bias: __m512, out: *mut f32, mask: __mmask16) {
        for (v, a) in acc.iter().enumerate() {
            let x = _mm512_add_ps(*a, bias);
            // SAFETY: the caller's output has `width` floats here.
            unsafe {
                if v + 1 < V {
                    _mm512_storeu_ps(out.add(16 * v), x)
                } else {
                    _mm512_mask_storeu_ps(out.add(16 * v), mask, x)
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn scatter_avx512(
        shape: RowShape,
        col: usize,
        width: usize,
        rows: &[*const u8],
        bags: &[u32],
        out: *mut f32,
        out_stride: usize,
        pf: usize,
        lines: usize,
    ) {
        let vecs = width.div_ceil(16);
        let tail = width - 16 * (vecs - 1);
        let last: __mmask16 = if tail >= 16 { 0xffff } else { (1u16 << tail) - 1 };
        let dim = shape.dim;
        for (i, (&row, &bag)) in rows.iter().zip(bags).enumerate() {
            if let Some(&next) = rows.get(i + pf) {
                prefetch_row(next, lines);
            }
            // SAFETY: the row and the bag's output have `width` columns at `col`.
            unsafe {
                let o = out.add(bag as usize * out_stride + col);
                let (scale, bias) = match shape.row_type {
                    RowType::Int8 => (
                        _mm512_set1_ps(std::ptr::read_unaligned(row.add(dim) as *const f32)),
                        _mm512_set1_ps(std::ptr::read_unaligned(row.add(dim + 4) as *const f32)),
                    ),
                    _ => (_mm512_set1_ps(1.0), _mm512_setzero_ps()),
                };
                for v in 0..vecs {
                    let m = if v + 1 < vecs { 0xffff } else { last };
                    let x = match shape.row_type {
                        RowType::F32 => _mm512_maskz_loadu_ps(m, (row.add(4 * col) as *const f32).add(16 * v)),
                        RowType::F16 => {
                            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (row.add(2 * col) as *const i16).add(16 * v)))
                        }
                        RowType::Int8 => _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(
                                m,
                                (row.add(col) as *const i8).add(16 * v),
                            ))),
                            scale,
                            bias,
                        ),
                    };
                    let y = _mm512_add_ps(_mm512_maskz_loadu_ps(m, o.add(16 * v)), x);
                    _mm512_mask_storeu_ps(o.add(16 * v), m, y);
                }
            }
        }
    }

    /// AVX2 kernel: 8-lane vectors, up to 8 of them in registers (64 columns); wider column
    /// blocks are split in halves by the caller's loop below.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn pool_avx2<R: Resolver>(
        shape: RowShape,
        col: usize,
        width: usize,
        run: BagRun<'_>,
        r: R,
        pf: usize,
        lines: usize,
    ) {
        let mut c = col;
        let end = col + width;
        while c < end {
            let w = (end - c).min(64);
            let full = w / 8;
            macro_rules! go { ($($v:literal)*) => { match full {
                $($v => unsafe { pool256::<R, $v>(shape, c, w, run, r, pf, lines) },)*
                _ => unreachable!(),
            } } }
            go!(0 1 2 3 4 5 6 7 8);
            c += w;
        }
    }

    /// `V` full 8-lane vectors plus a scalar tail of `width - 8V` columns.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pool256<R: Resolver, const V: usize>(
        shape: RowShape,
        col: usize,
        width: usize,
        run: BagRun<'_>,
        r: R,
        pf: usize,
        lines: usize,
    ) {
        let tail = width - 8 * V;
        let mut acc = [_mm256_setzero_ps(); V];
        let mut tacc = [0f32; 8];
        let mut bias = 0f32;
        let dim = shape.dim;
        let rt = shape.row_type;
        // SAFETY: as in the AVX-512 kernel, with the tail read column by column.
        unsafe {
            drive(run, r, pf, lines, |step| match step {
                Step::Start => {
                    acc = [_mm256_setzero_ps(); V];
                    tacc = [0.0; 8];
                    bias = 0.0;
                }
                Step::Add(row) => match rt {
                    RowType::F32 => {
                        let p = row.add(4 * col) as *const f32;
                        for (v, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(8 * v)));
                        }
                        for (t, x) in tacc.iter_mut().enumerate().take(tail) {
                            *x += std::ptr::read_unaligned(p.add(8 * V + t));
                        }
                    }
                    RowType::F16 => {
                        let p = row.add(2 * col) as *const u16;
                        for (v, a) in acc.iter_mut().enumerate() {
                            let h = _mm_loadu_si128(p.add(8 * v) as *const __m128i);
                            *a = _mm256_add_ps(*a, _mm256_cvtph_ps(h));
                        }
                        for (t, x) in tacc.iter_mut().enumerate().take(tail) {
                            *x += half::f16::from_bits(std::ptr::read_unaligned(p.add(8 * V + t))).to_f32();
                        }
                    }
                    RowType::Int8 => {
                        let s = std::ptr::read_unaligned(row.add(dim) as *const f32);
                        bias += std::ptr::read_unaligned(row.add(dim + 4) as *const f32);
                        let scale = _mm256_set1_ps(s);
                        let p = row.add(col) as *const i8;
                        for (v, a) in acc.iter_mut().enumerate() {
                            let q = _mm_loadl_epi64(p.add(8 * v) as *const __m128i);
                            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), scale, *a);
                        }
                        for (t, x) in tacc.iter_mut().enumerate().take(tail) {
                            *x += *p.add(8 * V + t) as f32 * s;
                        }
                    }
                },
                Step::Flush(b) => {
                    let o = run.out.add(b * run.out_stride + col);
                    let bv = _mm256_set1_ps(bias);
                    for (v, a) in acc.iter().enumerate() {
                        _mm256_storeu_ps(o.add(8 * v), _mm256_add_ps(*a, bv));
                    }
                    for (t, x) in tacc.iter().enumerate().take(tail) {
                        *o.add(8 * V + t) = *x + bias;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    struct Plain<'a> {
        rows: &'a [u8],
        stride: usize,
        skip_odd: bool,
    }
    impl Resolver for Plain<'_> {
        fn resolve(&self, id: u32) -> Resolved {
            if self.skip_odd && id % 2 == 1 {
                return Resolved::SKIP;
            }
            Resolved { row: self.rows[id as usize * self.stride..].as_ptr(), prefetch: true }
        }
    }

    /// Every ISA, row type, width and prefetch distance against a plain f64 sum.
    #[test]
    fn every_isa_matches_a_plain_sum() {
        for isa in Isa::supported() {
            for rt in RowType::ALL {
                for dim in [1usize, 7, 16, 33, 64, 100, 128, 130, 300] {
                    let rows = 50u64;
                    let store = crate::engine::storage::RowStore::alloc(rows, rt, dim as u32, false).unwrap();
                    store.fill(11, 0, rows, |r| r);
                    let bytes = unsafe { std::slice::from_raw_parts(store.base(), store.bytes() as usize) };
                    let ids: Vec<u32> = (0..40).map(|i| (i * 7 % 50) as u32).collect();
                    let offsets = vec![0u32, 3, 3, 10, 25, 40];
                    for pf in [0usize, 1, 4, 16, 63] {
                        for skip_odd in [false, true] {
                            let mut out = vec![f32::NAN; 5 * (dim + 3)];
                            let r = Plain { rows: bytes, stride: store.stride, skip_odd };
                            let run =
                                BagRun { offsets: &offsets, ids: &ids, out: out.as_mut_ptr(), out_stride: dim + 3 };
                            unsafe { pool(isa, RowShape { row_type: rt, dim }, run, r, pf) };
                            let mut dec = vec![0f64; dim];
                            for b in 0..5 {
                                let mut want = vec![0f64; dim];
                                for &id in &ids[offsets[b] as usize..offsets[b + 1] as usize] {
                                    if skip_odd && id % 2 == 1 {
                                        continue;
                                    }
                                    crate::engine::storage::decode_row_f64(rt, dim, store.row(id as u64), &mut dec);
                                    for (w, d) in want.iter_mut().zip(&dec) {
                                        *w += d;
                                    }
                                }
                                for c in 0..dim {
                                    let got = out[b * (dim + 3) + c] as f64;
                                    assert!(
                                        (got - want[c]).abs() < 1e-4,
                                        "{isa:?} {rt} dim {dim} pf {pf} bag {b} col {c}: {got} vs {}",
                                        want[c]
                                    );
                                }
                                // The gap between bags' outputs is untouched.
                                assert!(out[b * (dim + 3) + dim].is_nan());
                            }
                        }
                    }
                }
            }
        }
    }
}
