// The write pass of the encoder: ranks every candidate in ascending index order (tile offset
// from the scan + warp ballots and popc within the tile), keeps the selected ones, writes the
// payload and debits the residual, all in one pass over the tile.
#ifndef GC_COMMON_INCLUDED  // prepended by the Rust side; the include serves editors
#include "common.cuh"
#endif

// Whether the candidate of rank `rank` (0-based, ascending index order over the segment) is
// sent, and its slot in the message. The selection is the reference's: the first `take_head`
// candidates (those before the cap's start offset, of which there are `c_head`), then the
// first `take_tail` candidates from the start offset on. Without a cap: take_head = c_head = 0
// and take_tail = all candidates.
__device__ __forceinline__ bool gc_select(u32 rank, u32 take_head, u32 c_head, u32 take_tail,
                                          u32* slot) {
    if (rank < take_head) {
        *slot = rank;
        return true;
    }
    if (rank >= c_head && rank - c_head < take_tail) {
        *slot = take_head + (rank - c_head);
        return true;
    }
    return false;
}

// Ranks the candidates of one tile. Loads the tile's GC_ITEMS rounds of GC_BLOCK elements,
// takes one warp ballot per round, and gives each thread, for every round, its ballot and the
// rank of the round's first candidate in its warp (`before[r]`).
__device__ __forceinline__ void gc_rank_tile(const float* __restrict__ x, u32 n, float tau,
                                             const u32* __restrict__ offsets, float* v,
                                             u32* ballots, u32* before) {
    __shared__ u32 warp_counts[GC_ITEMS][GC_WARPS];
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const u64 base = (u64)blockIdx.x * GC_TILE;
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        const u64 i = base + (u64)r * GC_BLOCK + threadIdx.x;
        v[r] = (i < n) ? x[i] : 0.0f;
    }
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        const u64 i = base + (u64)r * GC_BLOCK + threadIdx.x;
        const bool p = (i < n) && gc_passes(v[r], tau);
        ballots[r] = __ballot_sync(0xFFFFFFFFu, p);
        if (lane == 0) warp_counts[r][warp] = __popc(ballots[r]);
    }
    __syncthreads();
    u32 run = offsets[blockIdx.x];
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        u32 mine = run, round_total = 0;
        for (u32 w = 0; w < GC_WARPS; ++w) {
            const u32 c = warp_counts[r][w];
            if (w < warp) mine += c;
            round_total += c;
        }
        before[r] = mine;
        run += round_total;
    }
}

// Sparse payload. One block per tile of x[0..n) (the segment, n < 2^31). For every selected
// candidate i writes entries[slot] = +(i+1) or -(i+1) and debits x[i] by one quantum.
// offsets: the exclusive scan of the tile counts (gc_scan_tiles); entries: room for
// take_head + take_tail entries.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_encode_sparse(float* __restrict__ x, u32 n, float tau, const u32* __restrict__ offsets,
                 u32 take_head, u32 c_head, u32 take_tail, int* __restrict__ entries) {
    float v[GC_ITEMS];
    u32 ballots[GC_ITEMS], before[GC_ITEMS];
    gc_rank_tile(x, n, tau, offsets, v, ballots, before);
    const u32 lane = threadIdx.x & 31u;
    const u64 base = (u64)blockIdx.x * GC_TILE;
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        if ((ballots[r] >> lane) & 1u) {
            const u32 rank = before[r] + __popc(ballots[r] & gc_lanemask_lt());
            u32 slot;
            if (gc_select(rank, take_head, c_head, take_tail, &slot)) {
                const u64 i = base + (u64)r * GC_BLOCK + threadIdx.x;
                const int e = (int)(i + 1);
                entries[slot] = v[r] > 0.0f ? e : -e;
                x[i] = gc_debit(v[r], tau);
            }
        }
    }
}

// Bitmap payload. One block per tile of x[0..n) (n < 2^31). Writes words[0..nwords) (nwords =
// ceil(n / 16), little-endian: element i at bits 2(i % 16) of word i / 16, 01 for +tau, 10 for
// -tau, padding 0), every word of the tile whether or not it holds a selected element, and
// debits every selected element by one quantum.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_encode_bitmap(float* __restrict__ x, u32 n, float tau, const u32* __restrict__ offsets,
                 u32 take_head, u32 c_head, u32 take_tail, u32* __restrict__ words, u32 nwords) {
    float v[GC_ITEMS];
    u32 ballots[GC_ITEMS], before[GC_ITEMS];
    gc_rank_tile(x, n, tau, offsets, v, ballots, before);
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const u64 base = (u64)blockIdx.x * GC_TILE;
#pragma unroll
    for (int r = 0; r < GC_ITEMS; ++r) {
        bool sel = false;
        if ((ballots[r] >> lane) & 1u) {
            const u32 rank = before[r] + __popc(ballots[r] & gc_lanemask_lt());
            u32 slot;
            sel = gc_select(rank, take_head, c_head, take_tail, &slot);
        }
        const u32 pos = __ballot_sync(0xFFFFFFFFu, sel && v[r] > 0.0f);
        const u32 neg = __ballot_sync(0xFFFFFFFFu, sel && !(v[r] > 0.0f));
        // The warp's 32 elements start at a multiple of 32: two whole words.
        const u64 first = base + (u64)r * GC_BLOCK + (u64)warp * 32;
        const u64 w = first / 16 + lane;
        if (lane < 2 && w < nwords) {
            const u32 p = lane == 0 ? (pos & 0xFFFFu) : (pos >> 16);
            const u32 q = lane == 0 ? (neg & 0xFFFFu) : (neg >> 16);
            words[w] = gc_spread16(p) | (gc_spread16(q) << 1);
        }
        if (sel) {
            const u64 i = first + lane;
            x[i] = gc_debit(v[r], tau);
        }
    }
}
