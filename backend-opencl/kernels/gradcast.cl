// gradcast OpenCL kernels, OpenCL C 1.2 (runs on PoCL and on GPU drivers).
//
// Rules (see backend-opencl/README.md):
// * Results are bit-identical to the core's reference codec: no fast-math build options, no
//   contraction of a*b+c into fma (FP_CONTRACT OFF below), no float division or sqrt.
// * Only local memory, barriers and plain loads/stores: no atomics decide any order, no
//   sub-groups, no work-group collective functions.
// * Work-group size is chosen by the host from the device's limits and passed implicitly via
//   get_local_size(0); local scratch arrays are sized by the host (clSetKernelArg with NULL).
// * Layout of the "group" kernels: work-group g covers the chunk of `span * lsize` elements
//   starting at g * span * lsize (span: a power of two >= 16 chosen by the host so that the
//   number of groups suits the device). count_groups reads it strided (element
//   k * lsize + lid of the chunk: neighbouring work-items read neighbouring elements, which
//   GPUs coalesce and PoCL vectorizes); encode_select gives work-item lid the `span`
//   contiguous elements starting at lid * span, so that ranks follow index order and every
//   work-item owns whole 32-bit bitmap words (16 two-bit codes each).
// * Element-wise kernels use a grid-stride loop, so the host bounds the number of groups.
//
// Indices: `n` is the segment length (< 2^31, the wire format's limit), `base` the segment's
// first element in the buffer. Relative indices are uint; buffer indices are size_t.

#pragma OPENCL FP_CONTRACT OFF

#define WORD 16u

// GC_CONTIGUOUS (set by the host: 1 for CPU devices, 0 otherwise) picks the memory layout
// of the order-free loops. GPUs want neighbouring work-items on neighbouring elements
// (coalescing); CPU devices run a work-group's work-items one after another on one thread,
// where that layout makes every work-item stream the whole range, so there each work-item
// takes one contiguous block instead.
#ifndef GC_CONTIGUOUS
#define GC_CONTIGUOUS 0
#endif

// The vector width of count_groups and where work-item lid's k-th vector starts.
#if GC_CONTIGUOUS
#define VW 16u
#define VFLOAT float16
#define VINT int16
#define VLOAD vload16
#define VAS_INT as_int16
#define VEC_START(k) (chunk + (ulong)lid * span + (ulong)VW * (k))
inline int vsum(int16 v) {
    const int8 a = v.lo + v.hi;
    const int4 b = a.lo + a.hi;
    return b.x + b.y + b.z + b.w;
}
#else
#define VW 4u
#define VFLOAT float4
#define VINT int4
#define VLOAD vload4
#define VAS_INT as_int4
#define VEC_START(k) (chunk + (ulong)VW * ((ulong)(k) * lsize + lid))
inline int vsum(int4 v) { return v.x + v.y + v.z + v.w; }
#endif
#define VSUM(v) vsum(v)

// for (i over this work-item's share of 0 .. n): grid-stride, or one contiguous block.
#if GC_CONTIGUOUS
#define FOR_EACH(i, n)                                                                    \
    const ulong per_##i = ((ulong)(n) + get_global_size(0) - 1) / get_global_size(0);     \
    const ulong lo_##i = (ulong)get_global_id(0) * per_##i;                               \
    const ulong hi_##i = min((ulong)(n), lo_##i + per_##i);                               \
    for (uint i = (uint)lo_##i; i < hi_##i; i++)
#else
#define FOR_EACH(i, n) for (uint i = get_global_id(0); i < (n); i += get_global_size(0))
#endif
#define NONE 0xFFFFFFFFu

// |v| >= tau, exactly as codec::passes.
inline bool passes(float v, float tau) { return fabs(v) >= tau; }

// Inclusive scan of s[0..lsize) in place (Hillis-Steele, two barriers per step).
// Every work-item of the group must call it.
inline void scan_inclusive(__local uint* s, uint lid, uint lsize) {
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint off = 1; off < lsize; off <<= 1) {
        uint t = (lid >= off) ? s[lid - off] : 0u;
        barrier(CLK_LOCAL_MEM_FENCE);
        s[lid] += t;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

// Per-group candidate counts and the first non-finite element of each group.
// counts[g] = #{ i in group g : |x| >= tau }, bad[g] = smallest relative index of a NaN/inf in
// group g, or NONE.
__kernel void count_groups(__global const float* x, ulong base, uint n, float tau, uint span,
                           __global uint* counts, __global uint* bad, __global uint* item_counts,
                           __local uint* s_count, __local uint* s_bad) {
    const uint lid = get_local_id(0);
    const uint lsize = get_local_size(0);
    const uint g = get_group_id(0);
    // Vectors of VW consecutive elements (vloadN: no alignment needed beyond a float's),
    // read strided (vector k * lsize + lid of the group's chunk) or contiguously (vectors
    // lid * span / VW + k); either way i grows with k. span is a multiple of 16.
    const ulong chunk = (ulong)g * span * lsize;
    const uint vecs = span / VW;
    // Branch-free over full vectors: vector counters, and a sticky "non-finite seen" mask
    // (exponent bits all ones); only a work-item that saw one rescans its vectors in order.
    VINT cnt = (VINT)(0);
    VINT nf = (VINT)(0);
    uint c = 0u;
    uint b = NONE;
    for (uint k = 0; k < vecs; k++) {
        const ulong i = VEC_START(k);
        if (i + VW <= n) {
            const VFLOAT v = VLOAD(0, x + base + i);
            nf |= (VAS_INT(v) & (VINT)(0x7F800000)) == (VINT)(0x7F800000);
            cnt += isgreaterequal(fabs(v), (VFLOAT)(tau));  // -1 per passing lane
        } else {
            // The partial vector at the end of the segment: the largest i of this work-item.
            for (ulong j = i; j < n && j < i + VW; j++) {
                const float v = x[base + j];
                if (!isfinite(v)) {
                    if (b == NONE) b = (uint)j;
                } else if (passes(v, tau)) {
                    c++;
                }
            }
        }
    }
    c += (uint)(-VSUM(cnt));
    if (any(nf)) {
        // i grows with k, so the first non-finite met is this work-item's smallest (and
        // smaller than any found in the partial vector, which comes last).
        uint bv = NONE;
        for (uint k = 0; k < vecs && bv == NONE; k++) {
            const ulong i = VEC_START(k);
            for (uint j = 0; j < VW && i + VW <= n; j++) {
                if (!isfinite(x[base + i + j])) {
                    bv = (uint)(i + j);
                    break;
                }
            }
        }
        if (bv != NONE) b = bv;
    }
    // Per work-item counts: with GC_CONTIGUOUS a work-item covers the same elements here as
    // in encode_select, which then skips its own counting pass.
    item_counts[(ulong)g * lsize + lid] = c;
    s_count[lid] = c;
    s_bad[lid] = b;
    barrier(CLK_LOCAL_MEM_FENCE);
    // Tree reduction; lsize is a power of two.
    for (uint h = lsize >> 1; h > 0; h >>= 1) {
        if (lid < h) {
            s_count[lid] += s_count[lid + h];
            s_bad[lid] = min(s_bad[lid], s_bad[lid + h]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        counts[g] = s_count[0];
        bad[g] = s_bad[0];
    }
}

// Selects, writes and debits (the encode's commit), in ascending index order.
//
// offsets[g] is the number of candidates before group g (exclusive scan of count_groups'
// counts). The rank r of a candidate is the number of candidates before it in the segment.
// A candidate at relative index i is selected when
//     i <  start: r <  take_head
//     i >= start: r <  tail_end        (tail_end = candidates before start + take_tail)
// and its slot in the message is r (i < start) or take_head + r - before_start (i >= start).
// Without truncation the host passes start = 0, before_start = 0, tail_end = candidates.
//
// mode 0 (sparse): out[slot] = +(i+1) or -(i+1) as int32 bits.
// mode 1 (bitmap): out[i / 16] = the 16 two-bit codes of the work-item's elements
//                  (01: +tau, 10: -tau); every word < ceil(n / 16) is written.
__kernel void encode_select(__global float* x, ulong base, uint n, float tau, uint span,
                            __global const uint* counts, __global const uint* item_counts,
                            __global const uint* offsets,
                            uint start, uint before_start, uint take_head, uint tail_end,
                            uint mode, __global uint* out, __local uint* s) {
    const uint lid = get_local_id(0);
    const uint lsize = get_local_size(0);
    const uint g = get_group_id(0);
    const ulong first = (ulong)g * span * lsize + (ulong)lid * span;
    // A group without candidates skips its reads. No return before the scan's barriers:
    // PoCL miscompiles an early return ahead of a barrier even when it is group-uniform.
    const bool has = counts[g] != 0u;
    uint c = 0u;
#if GC_CONTIGUOUS
    c = item_counts[(ulong)g * lsize + lid];
#else
    if (has) {
        int16 acc = (int16)(0);
        for (ulong i = first; i < first + span && i < n; i += WORD) {
            if (i + WORD <= n) {
                acc += isgreaterequal(fabs(vload16(0, x + base + i)), (float16)(tau));
            } else {
                for (ulong j = i; j < n; j++) c += passes(x[base + j], tau) ? 1u : 0u;
            }
        }
        const int8 a8 = acc.lo + acc.hi;
        const int4 a4 = a8.lo + a8.hi;
        c += (uint)(-(a4.x + a4.y + a4.z + a4.w));
    }
#endif
    s[lid] = c;
    scan_inclusive(s, lid, lsize);
    if (!has) {
        // Nothing to debit; bitmap words are all zero.
        if (mode != 0u) {
            for (ulong w = first; w < first + span && w < n; w += WORD) out[w / WORD] = 0u;
        }
        return;
    }
    uint r = offsets[g] + s[lid] - c;
    for (ulong w = first; w < first + span && w < n; w += WORD) {
        uint word = 0u;
        if (w + WORD <= n) {
            // Most words hold no candidate: test all 16 lanes at once.
            if (!any(isgreaterequal(fabs(vload16(0, x + base + w)), (float16)(tau)))) {
                if (mode != 0u) out[w / WORD] = 0u;
                continue;
            }
        }
        for (uint k = 0; k < WORD; k++) {
            const ulong i = w + k;
            if (i >= n) break;
            const float v = x[base + i];
            if (!passes(v, tau)) continue;
            bool selected;
            uint slot;
            if (i < start) {
                selected = r < take_head;
                slot = r;
            } else {
                selected = r < tail_end;
                slot = take_head + (r - before_start);
            }
            r++;
            if (!selected) continue;
            const bool positive = v > 0.0f;
            if (mode == 0u) {
                const int e = positive ? (int)(i + 1) : -(int)(i + 1);
                out[slot] = as_uint(e);
            } else {
                word |= (positive ? 1u : 2u) << (2u * k);
            }
            // debit: exactly one quantum, as codec::debit.
            x[base + i] = positive ? v - tau : v + tau;
        }
        if (mode != 0u) out[w / WORD] = word;
    }
}

// target[base + |e| - 1] += tau (e > 0) or -= tau (e < 0), for the k validated, strictly
// ascending sparse entries (distinct indices: no two work-items touch one element).
__kernel void decode_sparse(__global float* t, ulong base, __global const uint* entries,
                            uint k, float tau) {
    FOR_EACH(j, k) {
        const int e = as_int(entries[j]);
        if (e > 0) {
            t[base + (ulong)(e - 1)] += tau;
        } else {
            t[base + (ulong)(-e - 1)] -= tau;
        }
    }
}

// Adds a validated bitmap (2 bits per element, 16 per little-endian word) into target.
__kernel void decode_bitmap(__global float* t, ulong base, __global const uint* words,
                            uint n, float tau) {
    FOR_EACH(i, n) {
        const uint code = (words[i / WORD] >> (2u * (i % WORD))) & 3u;
        if (code & 1u) {
            t[base + i] += tau;
        } else if (code & 2u) {
            t[base + i] -= tau;
        }
    }
}

// target[base + i] += values[i] (dense warm-up message; the payload's f32 bits as words).
__kernel void decode_dense(__global float* t, ulong base, __global const uint* values, uint n) {
    FOR_EACH(i, n) {
        t[base + i] += as_float(values[i]);
    }
}

// dst[i] += src[i].
__kernel void add_assign(__global float* dst, __global const float* src, uint n) {
    FOR_EACH(i, n) {
        dst[i] += src[i];
    }
}

// p[i] -= u[i] (exact == 1) or p[i] -= (scale * u[i]) as two roundings (FP_CONTRACT OFF).
__kernel void sub_scaled(__global float* p, __global const float* u, uint n, float scale,
                         uint exact) {
    FOR_EACH(i, n) {
        if (exact != 0u) {
            p[i] -= u[i];
        } else {
            const float d = scale * u[i];
            p[i] -= d;
        }
    }
}

// Clips x[base .. base + n) to [-limit, limit] exactly as backend::slices::clip.
__kernel void clip(__global float* x, ulong base, uint n, float limit) {
    FOR_EACH(i, n) {
        const float v = x[base + i];
        if (fabs(v) > limit) {
            x[base + i] = (v > 0.0f) ? limit : -limit;
        }
    }
}

// x[base .. base + n) = +0.0 (what a dense encode leaves behind: x - x for finite x).
__kernel void zero_range(__global float* x, ulong base, uint n) {
    FOR_EACH(i, n) {
        x[base + i] = 0.0f;
    }
}
