//! Table storage: contiguous, aligned, row-major buffers with deterministic contents.
//!
//! Large buffers come from anonymous `mmap` aligned to 2 MiB and advised with
//! `MADV_HUGEPAGE`, because random row gathers over gigabytes spend much of their time in TLB
//! misses on 4 KiB pages (huge pages gave 1.2-2.1x on this workload). Whether the kernel
//! actually granted huge pages is read back from `/proc/self/smaps` and reported.
//!
//! Row `r` of a table is a pure function of the table's content seed and `r`, so any shard,
//! replica or reference computes the same values without coordination.

use std::ptr::NonNull;

use embtune_workloads::RowType;
use embtune_workloads::rng::mix;
use half::f16;

/// Buffers at least this large are mapped with huge-page advice.
pub const HUGE_PAGE: usize = 2 << 20;

/// A zero-initialised, 64-byte aligned (2 MiB aligned when large) byte buffer.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    huge_advised: bool,
}

// SAFETY: the buffer is plain memory owned by this value; shared references only read it.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Maps `len` bytes. Huge-page advice is given when `len` is at least [`HUGE_PAGE`] and
    /// `huge` is set.
    pub fn new(len: usize, huge: bool) -> std::io::Result<AlignedBuf> {
        let want_huge = huge && len >= HUGE_PAGE;
        let align = if want_huge { HUGE_PAGE } else { 4096 };
        // Over-allocate by one alignment unit so that the start can be rounded up, since mmap
        // only promises 4 KiB alignment.
        let body = len.max(1).div_ceil(align) * align;
        let map_len = body + if want_huge { align } else { 0 };
        // SAFETY: anonymous private mapping; failure is checked below.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = (raw as usize).next_multiple_of(align);
        let lead = start - raw as usize;
        // Give back the unaligned head and the unused tail so that the mapping is exactly the
        // aligned body; munmap on the whole body then works in Drop.
        unsafe {
            if lead > 0 {
                libc::munmap(raw, lead);
            }
            let tail = map_len - lead - body;
            if tail > 0 {
                libc::munmap((start + body) as *mut libc::c_void, tail);
            }
        }
        let mut huge_advised = false;
        if want_huge {
            // SAFETY: the range is our mapping.
            huge_advised = unsafe { libc::madvise(start as *mut libc::c_void, body, libc::MADV_HUGEPAGE) } == 0;
        }
        Ok(AlignedBuf { ptr: NonNull::new(start as *mut u8).unwrap(), len, map_len: body, huge_advised })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn huge_advised(&self) -> bool {
        self.huge_advised
    }

    /// Bytes of this buffer backed by transparent huge pages, from `/proc/self/smaps`.
    pub fn huge_bytes(&self) -> u64 {
        smaps_anon_huge(self.ptr.as_ptr() as usize, self.ptr.as_ptr() as usize + self.map_len)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: exactly the range mapped in `new`.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}

/// Sums `AnonHugePages` of the mappings inside `[lo, hi)`.
fn smaps_anon_huge(lo: usize, hi: usize) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut inside = false;
    let mut total = 0u64;
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = a >= lo && b <= hi;
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("AnonHugePages:") {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kb * 1024;
        }
    }
    total
}

/// The f32 values of row `row` of a table with content seed `seed`: uniform in [-1, 1).
#[inline]
pub fn row_values(seed: u64, row: u64, out: &mut [f32]) {
    let mut s = mix(seed ^ mix(row.wrapping_add(0x51_7cc1_b727_220a)));
    for v in out.iter_mut() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = mix(s);
        // 24 random bits give every f32 in the grid exactly.
        *v = ((z >> 40) as f32) * (2.0 / 16_777_216.0) - 1.0;
    }
}

/// Stored bytes of one row: no padding, so a table's size is exactly rows x row bytes.
pub fn stride(row_type: RowType, dim: u32) -> usize {
    row_type.row_bytes(dim)
}

/// Writes row `row`'s values, encoded as `row_type`, into `dst` (exactly `stride` bytes).
pub fn encode_row(seed: u64, row: u64, row_type: RowType, scratch: &mut [f32], dst: &mut [u8]) {
    row_values(seed, row, scratch);
    match row_type {
        RowType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(scratch.iter()) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        RowType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(scratch.iter()) {
                d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        RowType::Int8 => {
            let (q, sb) = dst.split_at_mut(scratch.len());
            let (scale, bias) = quantize_row(scratch, q);
            sb[..4].copy_from_slice(&scale.to_le_bytes());
            sb[4..8].copy_from_slice(&bias.to_le_bytes());
        }
    }
}

/// Row-wise int8 quantisation: `value ~= q * scale + bias` with `q` in [-128, 127].
pub fn quantize_row(v: &[f32], q: &mut [u8]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in v {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 0.0 };
    let bias = lo + 128.0 * scale;
    for (o, &x) in q.iter_mut().zip(v) {
        let k = if scale > 0.0 { ((x - lo) / scale).round() as i32 - 128 } else { 0 };
        *o = (k.clamp(-128, 127) as i8) as u8;
    }
    (scale, bias)
}

/// Decodes a stored row into f64 values: what the naive reference adds up.
pub fn decode_row_f64(row_type: RowType, dim: usize, src: &[u8], out: &mut [f64]) {
    match row_type {
        RowType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap()) as f64;
            }
        }
        RowType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes(c.try_into().unwrap()).to_f64();
            }
        }
        RowType::Int8 => {
            let scale = f32::from_le_bytes(src[dim..dim + 4].try_into().unwrap()) as f64;
            let bias = f32::from_le_bytes(src[dim + 4..dim + 8].try_into().unwrap()) as f64;
            for (o, &b) in out.iter_mut().zip(&src[..dim]) {
                *o = (b as i8) as f64 * scale + bias;
            }
        }
    }
}

/// Contiguous rows of one table (or one shard of it) in one buffer.
pub struct RowStore {
    buf: AlignedBuf,
    pub rows: u64,
    pub stride: usize,
    pub row_type: RowType,
    pub dim: u32,
}

impl RowStore {
    /// Allocates room for `rows` rows; contents are zero until filled.
    pub fn alloc(rows: u64, row_type: RowType, dim: u32, huge: bool) -> std::io::Result<RowStore> {
        let stride = stride(row_type, dim);
        let bytes = (rows as usize).checked_mul(stride).ok_or_else(|| std::io::Error::other("table size overflows"))?;
        Ok(RowStore { buf: AlignedBuf::new(bytes, huge)?, rows, stride, row_type, dim })
    }

    /// Fills local rows `[lo, hi)` with the encodings of global rows `global(lo)..`; callers
    /// split the range across threads so that each core first-touches the pages it serves.
    pub fn fill(&self, seed: u64, lo: u64, hi: u64, global: impl Fn(u64) -> u64) {
        let mut scratch = vec![0f32; self.dim as usize];
        for r in lo..hi {
            // SAFETY: r < rows, and callers fill disjoint ranges.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().add(r as usize * self.stride), self.stride)
            };
            encode_row(seed, global(r), self.row_type, &mut scratch, dst);
        }
    }

    /// Copies a row's bytes into local row `dst_row` from another store (hot-row re-layout).
    pub fn copy_row_from(&self, dst_row: u64, src: &RowStore, src_row: u64) {
        debug_assert_eq!(self.stride, src.stride);
        // SAFETY: both rows are in bounds; the stores are distinct buffers.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.row_ptr(src_row),
                self.buf.as_mut_ptr().add(dst_row as usize * self.stride),
                self.stride,
            );
        }
    }

    /// Pointer to local row `r`.
    #[inline]
    pub fn row_ptr(&self, r: u64) -> *const u8 {
        debug_assert!(r < self.rows);
        // SAFETY: in bounds by the debug assertion and the callers' range checks.
        unsafe { self.buf.as_ptr().add(r as usize * self.stride) }
    }

    pub fn row(&self, r: u64) -> &[u8] {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        // SAFETY: in bounds.
        unsafe { std::slice::from_raw_parts(self.row_ptr(r), self.stride) }
    }

    pub fn base(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    pub fn bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    pub fn huge_bytes(&self) -> u64 {
        self.buf.huge_bytes()
    }

    pub fn huge_advised(&self) -> bool {
        self.buf.huge_advised()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_bounded() {
        let mut a = [0f32; 17];
        let mut b = [0f32; 17];
        row_values(7, 123, &mut a);
        row_values(7, 123, &mut b);
        assert_eq!(a, b);
        row_values(7, 124, &mut b);
        assert_ne!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn int8_rows_round_trip_within_half_a_step() {
        let v: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut q = vec![0u8; 32];
        let (scale, bias) = quantize_row(&v, &mut q);
        for (x, &b) in v.iter().zip(&q) {
            let back = (b as i8) as f32 * scale + bias;
            assert!((back - x).abs() <= scale * 0.5 + 1e-6, "{x} -> {back}");
        }
    }

    #[test]
    fn stores_encode_and_decode_every_row_type() {
        for rt in RowType::ALL {
            let s = RowStore::alloc(10, rt, 12, false).unwrap();
            s.fill(99, 0, 10, |r| r + 100);
            let mut want = [0f32; 12];
            row_values(99, 105, &mut want);
            let mut got = [0f64; 12];
            decode_row_f64(rt, 12, s.row(5), &mut got);
            let tol = match rt {
                RowType::F32 => 0.0,
                RowType::F16 => 1e-3,
                RowType::Int8 => 1e-2,
            };
            for (w, g) in want.iter().zip(&got) {
                assert!((*w as f64 - g).abs() <= tol, "{rt}: {w} vs {g}");
            }
        }
    }

    #[test]
    fn large_buffers_are_aligned_for_huge_pages() {
        let b = AlignedBuf::new(3 * HUGE_PAGE + 5, true).unwrap();
        assert_eq!(b.as_ptr() as usize % HUGE_PAGE, 0);
        // Touch it so that the kernel may back it; the grant itself depends on the machine.
        unsafe { std::ptr::write_bytes(b.as_mut_ptr(), 1, b.len()) };
        assert!(b.huge_bytes() <= 4 * HUGE_PAGE as u64);
    }
}
