// Decode-add: adds a validated message's values into a target segment. Messages are validated
// on the host (MessageView::parse) before upload, so entries are in range and strictly
// ascending (no two threads touch the same element) and bitmap codes are never 0b11.
#ifndef GC_COMMON_INCLUDED  // prepended by the Rust side; the include serves editors
#include "common.cuh"
#endif

// t[|e|-1] += tau for e > 0, -= tau for e < 0, for each of the `count` sparse entries.
// Entries naming an element at or past n are ignored (the reference's `get_mut`).
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_decode_sparse(float* __restrict__ t, u32 n, const int* __restrict__ entries, u32 count,
                 float tau) {
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < count;
         k += (u64)gridDim.x * blockDim.x) {
        const int e = entries[k];
        const u32 i = e > 0 ? (u32)e - 1u : (u32)(-(e + 1));
        if (i < n) t[i] = e > 0 ? __fadd_rn(t[i], tau) : __fsub_rn(t[i], tau);
    }
}

// t[i] += tau where the 2-bit code of element i is 01, -= tau where it is 10 (element i at
// bits 2(i % 4) of byte i / 4).
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_decode_bitmap(float* __restrict__ t, u32 n, const unsigned char* __restrict__ bits, float tau) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        const u32 code = (bits[i >> 2] >> (2 * (i & 3))) & 3u;
        if (code == 1u) {
            t[i] = __fadd_rn(t[i], tau);
        } else if (code == 2u) {
            t[i] = __fsub_rn(t[i], tau);
        }
    }
}

// t[i] += values[i] (dense warm-up messages).
extern "C" __global__ void __launch_bounds__(GC_BLOCK)
gc_decode_dense(float* __restrict__ t, u32 n, const float* __restrict__ values) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        t[i] = __fadd_rn(t[i], values[i]);
    }
}
