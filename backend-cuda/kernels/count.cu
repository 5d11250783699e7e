// Candidate counting: per-tile counts (fused with the non-finite check), a scan of the tile
// counts, and the count of candidates before a cyclic start offset (for capped selections).
#ifndef GC_COMMON_INCLUDED  // prepended by the Rust side; the include serves editors
#include "common.cuh"
#endif

// One block per tile of GC_TILE elements of x[0..n). Writes the tile's candidate count
// (|x| >= tau, finite values only) to tile_counts[blockIdx.x] and lowers *first_bad to the
// smallest index holding NaN or an infinity (atomicMin: the result does not depend on the
// order in which blocks run). *first_bad must hold GC_NO_INDEX before the launch.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_count_tiles(const float* __restrict__ x, u64 n, float tau, u32* __restrict__ tile_counts,
               u64* __restrict__ first_bad) {
    __shared__ u32 scratch[GC_WARPS];
    const u64 base = (u64)blockIdx.x * GC_TILE;
    u32 count = 0;
    u64 bad = GC_NO_INDEX;
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        const u64 i = base + (u64)r * GC_BLOCK + threadIdx.x;
        if (i < n) {
            const float v = x[i];
            if (!gc_finite(v)) {
                if (i < bad) bad = i;
            } else if (gc_passes(v, tau)) {
                ++count;
            }
        }
    }
    if (bad != GC_NO_INDEX) atomicMin(first_bad, bad);
    const u32 total = gc_block_sum_u32(count, scratch);
    if (threadIdx.x == 0) tile_counts[blockIdx.x] = total;
}

#define GC_SCAN_THREADS 1024
#define GC_SCAN_ITEMS 4

// A single block of GC_SCAN_THREADS threads. Writes the exclusive prefix sum of
// tile_counts[0..tiles) to offsets[0..tiles) (truncated to 32 bits: the encoder only scans
// segments of fewer than 2^31 elements) and the full sum to *total.
extern "C" __global__ void __launch_bounds__(GC_SCAN_THREADS)
gc_scan_tiles(const u32* __restrict__ tile_counts, u32 tiles, u32* __restrict__ offsets,
              u64* __restrict__ total) {
    __shared__ u32 warp_sums[GC_SCAN_THREADS / 32];
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    u64 carry = 0;
    for (u64 chunk = 0; chunk < tiles; chunk += GC_SCAN_THREADS * GC_SCAN_ITEMS) {
        const u64 first = chunk + (u64)threadIdx.x * GC_SCAN_ITEMS;
        u32 v[GC_SCAN_ITEMS];
        u32 local = 0;
#pragma unroll
        for (int k = 0; k < GC_SCAN_ITEMS; ++k) {
            v[k] = (first + k < tiles) ? tile_counts[first + k] : 0u;
            local += v[k];
        }
        // Inclusive scan of `local` across the warp.
        u32 incl = local;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const u32 t = __shfl_up_sync(0xFFFFFFFFu, incl, d);
            if (lane >= (u32)d) incl += t;
        }
        if (lane == 31) warp_sums[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            u32 w = warp_sums[lane];
#pragma unroll
            for (int d = 1; d < 32; d <<= 1) {
                const u32 t = __shfl_up_sync(0xFFFFFFFFu, w, d);
                if (lane >= (u32)d) w += t;
            }
            warp_sums[lane] = w;
        }
        __syncthreads();
        u64 run = carry + (warp == 0 ? 0u : warp_sums[warp - 1]) + (incl - local);
#pragma unroll
        for (int k = 0; k < GC_SCAN_ITEMS; ++k) {
            if (first + k < tiles) offsets[first + k] = (u32)run;
            run += v[k];
        }
        carry += warp_sums[GC_SCAN_THREADS / 32 - 1];
        __syncthreads();  // warp_sums is rewritten by the next chunk
    }
    if (threadIdx.x == 0) *total = carry;
}

// A single block of GC_BLOCK threads. Writes to *out the number of candidates at indices below
// `start`: the scanned offset of start's tile plus the candidates of that tile before start.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_head_count(const float* __restrict__ x, u64 start, float tau, const u32* __restrict__ offsets,
              u64* __restrict__ out) {
    __shared__ u32 scratch[GC_WARPS];
    const u64 tile = start / GC_TILE;
    const u64 base = tile * GC_TILE;
    u32 count = 0;
    for (u64 i = base + threadIdx.x; i < start; i += GC_BLOCK) {
        if (gc_passes(x[i], tau)) ++count;
    }
    const u32 total = gc_block_sum_u32(count, scratch);
    if (threadIdx.x == 0) *out = (u64)offsets[tile] + total;
}
