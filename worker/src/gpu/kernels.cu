// embtune's GPU look-up kernels: gather rows by id and sum-pool them per sample, for every
// table of a batch in ONE launch.
//
// Compiled at run time with NVRTC (see kernels.rs). The host puts in front of this file:
//   EMB_SPLIT        warps that share one bag (1, 2, 4, 8); their partial sums meet in
//                    shared memory
//   EMB_MIN_BLOCKS   the __launch_bounds__ occupancy target, which caps registers
//   EMB_HOT_HINT     1: hot rows are read with an L2 evict_last policy
//   EMB_COLD_FIRST   1: rows of hot-cache tables that are not hot are read with evict_first
// and after it EMB_DISPATCH: a switch over the variants this deployment uses, each an
// instantiation of table_baseline<RT> or table_warp<RT, P, HOT, L>.
//
// Layout (the same as the CPU engine's): a table is `rows` rows of `stride` bytes, row r at
// base + r * stride. f32 rows are dim floats, f16 rows dim halves, int8 rows dim signed bytes
// then an f32 scale and an f32 bias (value = q * scale + bias). The batch is table-batched:
// the ids of sample b in table slot k are ids[offs[k * batch + b] .. offs[k * batch + b + 1]].
// The output is [batch x width] floats, table slot k at columns out_col .. out_col + dim.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;

#define EMB_THREADS 256
#define EMB_WARPS (EMB_THREADS / 32)
#define EMB_FULL 0xffffffffu
#define EMB_NONE 0xffffffffu
#define EMB_HOT_FLAG 0x80000000u

// One table slot of the launch. Mirrors `TableDesc` in kernels.rs (48 bytes).
struct TableDesc {
    u64 base;        // row data
    u64 hot_base;    // hot-cache flow: the contiguous copy of the hot rows (ascending id order)
    u64 rank;        // hot-cache flow: per 32 rows, (bitmap of hot rows, hot rows before them)
    u32 stride;      // bytes per row
    u32 dim;
    u32 out_col;     // first output column of this slot
    u32 variant;     // which case of EMB_DISPATCH
    u32 block_begin; // first block of the grid that works on this slot
    u32 mean;        // 1: divide by the bag length
};

struct __align__(16) V4 { u32 x, y, z, w; };
struct __align__(8) V2 { u32 x, y; };
// An int8 row piece: 8 quantised values and the row's scale and bias.
struct Q8 { V2 q; float scale, bias; };

enum { RT_F32 = 0, RT_F16 = 1, RT_I8 = 2 };

// ---------------------------------------------------------------------------------------
// Loads. Rows are read-only for the whole launch: the non-coherent path (.nc) is allowed and
// keeps them in L1 as well.

__device__ __forceinline__ V4 ld_v4(const void* p) {
    V4 v;
    asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ V4 ld_v4_pol(const void* p, u64 pol) {
    V4 v;
    asm("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p), "l"(pol));
    return v;
}
__device__ __forceinline__ V2 ld_v2(const void* p) {
    V2 v;
    asm("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}
__device__ __forceinline__ V2 ld_v2_pol(const void* p, u64 pol) {
    V2 v;
    asm("ld.global.nc.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;" : "=r"(v.x), "=r"(v.y) : "l"(p), "l"(pol));
    return v;
}
__device__ __forceinline__ u32 ld_u32(const u32* p) {
    u32 v;
    asm("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ u64 policy_evict_last() {
    u64 p;
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ u64 policy_evict_first() {
    u64 p;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ u64 policy_evict_normal() {
    u64 p;
    asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ float half_lo(u32 v) {
    float f;
    asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, lo; }" : "=f"(f) : "r"(v));
    return f;
}
__device__ __forceinline__ float half_hi(u32 v) {
    float f;
    asm("{ .reg .b16 lo, hi; mov.b32 {lo, hi}, %1; cvt.f32.f16 %0, hi; }" : "=f"(f) : "r"(v));
    return f;
}
__device__ __forceinline__ float i8_at(u32 word, int byte) {
    return (float)(signed char)((word >> (8 * byte)) & 0xff);
}

// ---------------------------------------------------------------------------------------
// Row types: the vector one lane reads per row, how many columns it covers, how it is added.

template <int RT> struct Row;

template <> struct Row<RT_F32> {
    typedef V4 Vec;
    enum { E = 4 };
    static __device__ __forceinline__ Vec zero() { V4 v; v.x = v.y = v.z = v.w = 0u; return v; }
    static __device__ __forceinline__ Vec load(const char* row, u32 col, u32 /*dim*/) { return ld_v4(row + 4 * col); }
    static __device__ __forceinline__ Vec load_pol(const char* row, u32 col, u32 /*dim*/, u64 pol) {
        return ld_v4_pol(row + 4 * col, pol);
    }
    static __device__ __forceinline__ void add(float* acc, const Vec& v) {
        acc[0] += __uint_as_float(v.x);
        acc[1] += __uint_as_float(v.y);
        acc[2] += __uint_as_float(v.z);
        acc[3] += __uint_as_float(v.w);
    }
};

template <> struct Row<RT_F16> {
    typedef V4 Vec;
    enum { E = 8 };
    static __device__ __forceinline__ Vec zero() { V4 v; v.x = v.y = v.z = v.w = 0u; return v; }
    static __device__ __forceinline__ Vec load(const char* row, u32 col, u32 /*dim*/) { return ld_v4(row + 2 * col); }
    static __device__ __forceinline__ Vec load_pol(const char* row, u32 col, u32 /*dim*/, u64 pol) {
        return ld_v4_pol(row + 2 * col, pol);
    }
    static __device__ __forceinline__ void add(float* acc, const Vec& v) {
        acc[0] += half_lo(v.x); acc[1] += half_hi(v.x);
        acc[2] += half_lo(v.y); acc[3] += half_hi(v.y);
        acc[4] += half_lo(v.z); acc[5] += half_hi(v.z);
        acc[6] += half_lo(v.w); acc[7] += half_hi(v.w);
    }
};

template <> struct Row<RT_I8> {
    typedef Q8 Vec;
    enum { E = 8 };
    static __device__ __forceinline__ Vec zero() { Q8 v; v.q.x = v.q.y = 0u; v.scale = 0.f; v.bias = 0.f; return v; }
    static __device__ __forceinline__ Vec load(const char* row, u32 col, u32 dim) {
        Q8 v;
        v.q = ld_v2(row + col);
        V2 sb = ld_v2(row + dim);
        v.scale = __uint_as_float(sb.x);
        v.bias = __uint_as_float(sb.y);
        return v;
    }
    static __device__ __forceinline__ Vec load_pol(const char* row, u32 col, u32 dim, u64 pol) {
        Q8 v;
        v.q = ld_v2_pol(row + col, pol);
        V2 sb = ld_v2_pol(row + dim, pol);
        v.scale = __uint_as_float(sb.x);
        v.bias = __uint_as_float(sb.y);
        return v;
    }
    static __device__ __forceinline__ void add(float* acc, const Vec& v) {
#pragma unroll
        for (int b = 0; b < 4; b++) acc[b] += fmaf(i8_at(v.q.x, b), v.scale, v.bias);
#pragma unroll
        for (int b = 0; b < 4; b++) acc[4 + b] += fmaf(i8_at(v.q.y, b), v.scale, v.bias);
    }
};

// One element of a row, for the baseline kernel.
template <int RT> __device__ __forceinline__ float elem(const char* row, u32 col, u32 dim);
template <> __device__ __forceinline__ float elem<RT_F32>(const char* row, u32 col, u32) {
    return ((const float*)row)[col];
}
template <> __device__ __forceinline__ float elem<RT_F16>(const char* row, u32 col, u32) {
    u16 h = ((const u16*)row)[col];
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
// An f32 at any byte address: int8 rows are dim + 8 bytes, so with dim not a multiple of 4 the
// scale and bias are unaligned (the vector kernels take only dims that keep them aligned).
__device__ __forceinline__ float ld_f32_any(const char* p) {
    if ((((u64)p) & 3u) == 0u) return *(const float*)p;
    const unsigned char* b = (const unsigned char*)p;
    return __uint_as_float((u32)b[0] | ((u32)b[1] << 8) | ((u32)b[2] << 16) | ((u32)b[3] << 24));
}
template <> __device__ __forceinline__ float elem<RT_I8>(const char* row, u32 col, u32 dim) {
    const float scale = ld_f32_any(row + dim);
    const float bias = ld_f32_any(row + dim + 4);
    return fmaf((float)(signed char)row[col], scale, bias);
}

// ---------------------------------------------------------------------------------------
// Baseline: one thread per output element (bag, column), a plain loop over the bag's ids.
// What a straightforward embedding-bag kernel does.

template <int RT>
__device__ void table_baseline(const TableDesc& t, const u32* __restrict__ ids, const u32* __restrict__ offs,
                               float* __restrict__ out, u32 width, u32 batch, u32 slot, u32 local_block) {
    const u64 e = (u64)local_block * EMB_THREADS + threadIdx.x;
    if (e >= (u64)batch * t.dim) return;
    const u32 bag = (u32)(e / t.dim), col = (u32)(e % t.dim);
    const u32 s = offs[(u64)slot * batch + bag], end = offs[(u64)slot * batch + bag + 1];
    const char* base = (const char*)t.base;
    float sum = 0.f;
    for (u32 i = s; i < end; i++) sum += elem<RT>(base + (u64)ids[i] * t.stride, col, t.dim);
    if (t.mean && end > s) sum /= (float)(end - s);
    out[(u64)bag * width + t.out_col + col] = sum;
}

// ---------------------------------------------------------------------------------------
// Warp kernels: a warp (or EMB_SPLIT warps) per bag; L lanes cover one row with 16-byte loads
// (8-byte for int8), so a warp reads G = 32 / L rows at a time. Rows are prefetched into
// registers P steps (P x G rows) ahead: while the rows of step i are added, those of steps
// i + 1 .. i + P are in flight.
//
// Ids travel in chunks of 32: lane j holds the (resolved) id at position 32k + j of the bag
// part, three chunks loaded ahead, and each step takes its G ids with a shuffle. Since P x G
// divides 32 and steps advance in blocks of P, the ids of a block never straddle two chunks.
// Resolved ids: for hot-cache tables, a hot row becomes EMB_HOT_FLAG | its position in the
// hot copy (from the rank bitmap); EMB_NONE marks positions past the end.

template <bool HOT>
__device__ __forceinline__ u32 load_chunk(const TableDesc& t, const u32* __restrict__ pid, u32 n, u32 k, int lane) {
    const u32 pos = 32u * k + (u32)lane;
    u32 v = EMB_NONE;
    if (pos < n) {
        v = ld_u32(pid + pos);
        if (HOT) {
            const V2 w = ld_v2((const char*)t.rank + 8ull * (v >> 5));
            const u32 bit = v & 31u;
            if ((w.x >> bit) & 1u) v = EMB_HOT_FLAG | (w.y + __popc(w.x & ((1u << bit) - 1u)));
        }
    }
    return v;
}

template <int RT, bool HOT>
__device__ __forceinline__ typename Row<RT>::Vec fetch(const TableDesc& t, u32 v, u32 col, u64 pol_hot, u64 pol_cold) {
    typedef Row<RT> R;
    if (v == EMB_NONE) return R::zero();
    if (HOT) {
        const bool hot = (v & EMB_HOT_FLAG) != 0u;
        const char* row = hot ? (const char*)t.hot_base + (u64)(v & ~EMB_HOT_FLAG) * t.stride
                              : (const char*)t.base + (u64)v * t.stride;
#if EMB_HOT_HINT || EMB_COLD_FIRST
        return R::load_pol(row, col, t.dim, hot ? pol_hot : pol_cold);
#else
        return R::load(row, col, t.dim);
#endif
    } else {
        return R::load((const char*)t.base + (u64)v * t.stride, col, t.dim);
    }
}

// Adds the rows of ids[pid[0 .. n)] at columns col .. col + E into acc: this lane's share
// (group g = lane / L holds rows g, g + G, g + 2G, ...).
template <int RT, int P, bool HOT, int L>
__device__ __forceinline__ void gather(const TableDesc& t, const u32* __restrict__ pid, u32 n, u32 col, float* acc) {
    typedef Row<RT> R;
    typedef typename R::Vec Vec;
    constexpr int G = 32 / L;
    static_assert(P * G <= 32, "P x G must divide 32");
    const int lane = threadIdx.x & 31;
    const int g = lane / L;
    u64 pol_hot = 0, pol_cold = 0;
    if (HOT) {
        pol_hot = EMB_HOT_HINT ? policy_evict_last() : policy_evict_normal();
        pol_cold = EMB_COLD_FIRST ? policy_evict_first() : policy_evict_normal();
    }
    const u32 steps = (n + G - 1) / G;
    u32 c0 = load_chunk<HOT>(t, pid, n, 0, lane);
    u32 c1 = load_chunk<HOT>(t, pid, n, 1, lane);
    u32 c2 = load_chunk<HOT>(t, pid, n, 2, lane);
    u32 ck = 0;
    Vec buf[P];
#pragma unroll
    for (int j = 0; j < P; j++) buf[j] = fetch<RT, HOT>(t, __shfl_sync(EMB_FULL, c0, j * G + g), col, pol_hot, pol_cold);
    for (u32 i = 0; i < steps; i += P) {
        const u32 first = (i + P) * G;  // position of the first id this block prefetches
        const u32 k = first >> 5;
        if (k != ck) {  // warp-uniform; k == ck + 1
            c0 = c1;
            c1 = c2;
            c2 = load_chunk<HOT>(t, pid, n, k + 2, lane);
            ck = k;
        }
        const int at = (int)(first & 31u);
        // Add the P rows in hand, then issue the next P: one row of registers per step.
#pragma unroll
        for (int j = 0; j < P; j++) R::add(acc, buf[j]);
#pragma unroll
        for (int j = 0; j < P; j++) {
            buf[j] = fetch<RT, HOT>(t, __shfl_sync(EMB_FULL, c0, at + j * G + g), col, pol_hot, pol_cold);
        }
    }
}

template <int RT, int P, bool HOT, int L>
__device__ void table_warp(const TableDesc& t, const u32* __restrict__ ids, const u32* __restrict__ offs,
                           float* __restrict__ out, u32 width, u32 batch, u32 slot, u32 local_block,
                           float* red /* [EMB_WARPS][32][8] shared, when EMB_SPLIT > 1 */) {
    typedef Row<RT> R;
    constexpr int E = R::E;
    constexpr int G = 32 / L;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int sub = lane % L;
    const int part = warp % EMB_SPLIT;
    const u32 bag = local_block * (EMB_WARPS / EMB_SPLIT) + warp / EMB_SPLIT;
    const bool live = bag < batch;  // warp-uniform; dead warps still meet the barriers
    u32 s = 0, e = 0;
    if (live) {
        s = offs[(u64)slot * batch + bag];
        e = offs[(u64)slot * batch + bag + 1];
    }
    const u32 len = e - s;
    const u32 lo = s + (u32)(((u64)len * part) / EMB_SPLIT);
    const u32 hi = s + (u32)(((u64)len * (part + 1)) / EMB_SPLIT);
    const u32 passes = t.dim / (L * E);  // the host picks L so that this divides exactly
    for (u32 pass = 0; pass < passes; pass++) {
        const u32 col = (pass * L + sub) * E;
        float acc[E];
#pragma unroll
        for (int k = 0; k < E; k++) acc[k] = 0.f;
        if (live) gather<RT, P, HOT, L>(t, ids + lo, hi - lo, col, acc);
#pragma unroll
        for (int off = L; off < 32; off <<= 1) {
#pragma unroll
            for (int k = 0; k < E; k++) acc[k] += __shfl_xor_sync(EMB_FULL, acc[k], off);
        }
#if EMB_SPLIT > 1
        if (lane < L) {
#pragma unroll
            for (int k = 0; k < E; k++) red[(warp * 32 + lane) * 8 + k] = acc[k];
        }
        __syncthreads();
        if (part == 0 && lane < L) {
            for (int p = 1; p < EMB_SPLIT; p++) {
#pragma unroll
                for (int k = 0; k < E; k++) acc[k] += red[((warp + p) * 32 + lane) * 8 + k];
            }
        }
        __syncthreads();
#endif
        if (live && part == 0 && lane < L) {
            if (t.mean && len > 0) {
                const float inv = (float)len;
#pragma unroll
                for (int k = 0; k < E; k++) acc[k] /= inv;
            }
            float* o = out + (u64)bag * width + t.out_col + col;
            if ((((u64)o) & 15u) == 0u) {
#pragma unroll
                for (int k = 0; k < E; k += 4) {
                    float4 v;
                    v.x = acc[k]; v.y = acc[k + 1]; v.z = acc[k + 2]; v.w = acc[k + 3];
                    *(float4*)(o + k) = v;
                }
            } else {
#pragma unroll
                for (int k = 0; k < E; k++) o[k] = acc[k];
            }
        }
    }
    (void)G;
}

// ---------------------------------------------------------------------------------------
// Short bags (one-hot features): a warp holds G = 32 / L bags, L lanes each, so that a
// warp's loads cover G rows of G bags at once. Each group walks its own bag two ids at a time.

template <int RT, int L>
__device__ void table_multibag(const TableDesc& t, const u32* __restrict__ ids, const u32* __restrict__ offs,
                               float* __restrict__ out, u32 width, u32 batch, u32 slot, u32 local_block) {
    typedef Row<RT> R;
    typedef typename R::Vec Vec;
    constexpr int E = R::E;
    constexpr int G = 32 / L;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane / L, sub = lane % L;
    const u32 bag = (local_block * EMB_WARPS + warp) * G + g;
    if (bag >= batch) return;  // no barriers or shuffles below
    const u32 s = offs[(u64)slot * batch + bag], e = offs[(u64)slot * batch + bag + 1];
    const char* base = (const char*)t.base;
    const u32 passes = t.dim / (L * E);
    for (u32 pass = 0; pass < passes; pass++) {
        const u32 col = (pass * L + sub) * E;
        float acc[E];
#pragma unroll
        for (int k = 0; k < E; k++) acc[k] = 0.f;
        u32 i = s;
        for (; i + 2 <= e; i += 2) {
            const u32 a = ld_u32(ids + i), b = ld_u32(ids + i + 1);
            const Vec va = R::load(base + (u64)a * t.stride, col, t.dim);
            const Vec vb = R::load(base + (u64)b * t.stride, col, t.dim);
            R::add(acc, va);
            R::add(acc, vb);
        }
        if (i < e) R::add(acc, R::load(base + (u64)ld_u32(ids + i) * t.stride, col, t.dim));
        if (t.mean && e > s) {
#pragma unroll
            for (int k = 0; k < E; k++) acc[k] /= (float)(e - s);
        }
        float* o = out + (u64)bag * width + t.out_col + col;
#pragma unroll
        for (int k = 0; k < E; k++) o[k] = acc[k];
    }
}

// ---------------------------------------------------------------------------------------
// The launch: blocks are handed out table slot by table slot (slot k owns blocks
// descs[k].block_begin .. descs[k + 1].block_begin), so the blocks resident at any moment
// work on one or two tables and share their hot rows in L1 and L2.

extern "C" __global__ void __launch_bounds__(EMB_THREADS, EMB_MIN_BLOCKS)
emb_lookup(const TableDesc* __restrict__ descs, u32 ntables, const u32* __restrict__ ids,
           const u32* __restrict__ offs, float* __restrict__ out, u32 width, u32 batch) {
#if EMB_SPLIT > 1
    __shared__ float red_store[EMB_WARPS * 32 * 8];
    float* red = red_store;
#else
    float* red = 0;
#endif
    u32 lo = 0, hi = ntables - 1;
    while (lo < hi) {
        const u32 mid = (lo + hi + 1) / 2;
        if (descs[mid].block_begin <= blockIdx.x) lo = mid; else hi = mid - 1;
    }
    const TableDesc t = descs[lo];
    const u32 slot = lo;
    const u32 local_block = blockIdx.x - t.block_begin;
    (void)red;
    switch (t.variant) {
        EMB_DISPATCH
        default: break;
    }
}

// Fills n floats with a NaN pattern: outputs are poisoned before checked runs, so that an
// element no thread wrote fails the check.
extern "C" __global__ void emb_poison(float* out, u64 n) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __uint_as_float(0x7fc00bad);
}
