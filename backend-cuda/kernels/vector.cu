// Element-wise vector operations, each rounded exactly as the reference's loops.
#ifndef GC_COMMON_INCLUDED  // prepended by the Rust side; the include serves editors
#include "common.cuh"
#endif

#define GC_GRID_STRIDE(i, n)                                                      \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);              \
         i += (u64)gridDim.x * blockDim.x)

// x[i] = value.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_fill(float* __restrict__ x, u64 n, float value) {
    GC_GRID_STRIDE(i, n) { x[i] = value; }
}

// dst[i] += src[i].
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_add_assign(float* __restrict__ dst, const float* __restrict__ src, u64 n) {
    GC_GRID_STRIDE(i, n) { dst[i] = __fadd_rn(dst[i], src[i]); }
}

// params[i] -= update[i] when scale == 1, else params[i] -= (scale * update[i]) with the
// product and the difference rounded separately (never fused).
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_sub_scaled(float* __restrict__ params, const float* __restrict__ update, u64 n, float scale) {
    if (scale == 1.0f) {
        GC_GRID_STRIDE(i, n) { params[i] = __fsub_rn(params[i], update[i]); }
    } else {
        GC_GRID_STRIDE(i, n) {
            const float d = __fmul_rn(scale, update[i]);
            params[i] = __fsub_rn(params[i], d);
        }
    }
}

// *count += the number of elements with |x| > limit (one atomicAdd per block).
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_clip_count(const float* __restrict__ x, u64 n, float limit, u64* __restrict__ count) {
    __shared__ u32 scratch[GC_WARPS];
    u32 c = 0;
    GC_GRID_STRIDE(i, n) {
        if (fabsf(x[i]) > limit) ++c;
    }
    const u32 total = gc_block_sum_u32(c, scratch);
    if (threadIdx.x == 0 && total != 0) atomicAdd(count, (u64)total);
}

// x[i] = limit or -limit (by the sign of x[i] > 0) where |x[i]| > limit.
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_clip(float* __restrict__ x, u64 n, float limit) {
    GC_GRID_STRIDE(i, n) {
        const float v = x[i];
        if (fabsf(v) > limit) x[i] = v > 0.0f ? limit : -limit;
    }
}
