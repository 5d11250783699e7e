// Shared definitions of the gradcast CUDA kernels.
//
// The Rust side prepends this file to every kernels/*.cu source before handing it to NVRTC
// (NVRTC has no include directory for us), so the `#include "common.cuh"` in each .cu file is
// only for editors and is skipped by the guard below.
//
// Numerics: the kernels are compiled with --fmad=false --ftz=false --prec-div=true
// --prec-sqrt=true, and every arithmetic operation the reference rounds on its own is written
// with an explicit round-to-nearest intrinsic (__fadd_rn, __fsub_rn, __fmul_rn), so results are
// bit-identical to the CPU reference codec.
#ifndef GC_COMMON_INCLUDED
#define GC_COMMON_INCLUDED

// Threads per block of every tiled kernel (8 warps). Must match Rust's `BLOCK`.
#define GC_BLOCK 256
// Warps per block.
#define GC_WARPS (GC_BLOCK / 32)
// Elements per tile: one block of the count and encode kernels covers one tile, processed as
// GC_ITEMS rounds of GC_BLOCK consecutive elements. Must match Rust's `TILE`.
#define GC_ITEMS 16
#define GC_TILE (GC_BLOCK * GC_ITEMS)
// Sentinel of the "first non-finite index" slot: no non-finite value seen.
#define GC_NO_INDEX 0xFFFFFFFFFFFFFFFFull

typedef unsigned int u32;
typedef unsigned long long u64;

// Whether an element reaches the threshold: |x| >= tau (the reference's `passes`).
__device__ __forceinline__ bool gc_passes(float x, float tau) { return fabsf(x) >= tau; }

// Whether x is neither NaN nor an infinity (exponent bits not all ones).
__device__ __forceinline__ bool gc_finite(float x) {
    return (__float_as_uint(x) & 0x7F800000u) != 0x7F800000u;
}

// Bits of the lanes below this one.
__device__ __forceinline__ u32 gc_lanemask_lt() {
    return (1u << (threadIdx.x & 31u)) - 1u;
}

// Sum of `v` over the block (every thread must call it); the result is valid in thread 0.
// `scratch` holds GC_WARPS entries.
__device__ __forceinline__ u32 gc_block_sum_u32(u32 v, u32* scratch) {
    for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, d);
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    u32 total = 0;
    if (threadIdx.x == 0) {
        for (u32 w = 0; w < GC_WARPS; ++w) total += scratch[w];
    }
    __syncthreads();
    return total;
}

// Spreads the 16 low bits of v to the even bit positions of a 32-bit word (bit k -> bit 2k).
__device__ __forceinline__ u32 gc_spread16(u32 v) {
    v &= 0xFFFFu;
    v = (v | (v << 8)) & 0x00FF00FFu;
    v = (v | (v << 4)) & 0x0F0F0F0Fu;
    v = (v | (v << 2)) & 0x33333333u;
    v = (v | (v << 1)) & 0x55555555u;
    return v;
}

// Subtracts one quantum from a selected element, as the reference's `debit`.
__device__ __forceinline__ float gc_debit(float x, float tau) {
    return x > 0.0f ? __fsub_rn(x, tau) : __fadd_rn(x, tau);
}

#endif  // GC_COMMON_INCLUDED
