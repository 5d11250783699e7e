// A CPU emulation of the small part of CUDA C++ the gradcast kernels use, so that the real
// kernel sources (../../kernels/*.cu) can be compiled with a host C++ compiler and run without
// a GPU (tests/emulated.rs).
//
// Every CUDA thread of a block is a fiber (ucontext) of one OS thread, run round-robin;
// __syncthreads is a block barrier and each warp intrinsic exchanges values through a
// per-warp barrier, a fiber yielding while it waits. Blocks run one after another, so a
// kernel's static __shared__ arrays become function-local statics. Host floats are IEEE
// binary32 with round-to-nearest; compile with -ffp-contract=off so that nothing is fused.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(n)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

struct EmuFiber {
    ucontext_t ctx;
    bool done = false;
    std::vector<char> stack;
};
inline ucontext_t emu_scheduler;
inline std::vector<EmuFiber> emu_fibers;
inline unsigned emu_current = 0;
inline std::function<void()> emu_body;

// Gives the CPU back to the scheduler (the next fiber runs).
inline void emu_yield() { swapcontext(&emu_fibers[emu_current].ctx, &emu_scheduler); }

struct EmuBarrier {
    unsigned expected = 0, count = 0;
    uint64_t generation = 0;
    void arrive_and_wait() {
        const uint64_t g = generation;
        if (++count == expected) {
            count = 0;
            ++generation;
            return;
        }
        while (generation == g) emu_yield();
    }
};
struct EmuWarp {
    EmuBarrier bar{32};
    uint32_t slot[32];
};
inline EmuBarrier emu_block_barrier;
inline std::vector<EmuWarp> emu_warps;

inline void __syncthreads() { emu_block_barrier.arrive_and_wait(); }

// Every lane publishes `mine`, then each reads what `pick` chooses; the second barrier keeps
// the slots stable until every lane has read.
template <class F>
inline uint32_t emu_warp_exchange(uint32_t mine, F pick) {
    EmuWarp& w = emu_warps[threadIdx.x / 32];
    const unsigned lane = threadIdx.x % 32;
    w.slot[lane] = mine;
    w.bar.arrive_and_wait();
    const uint32_t r = pick(w.slot, lane);
    w.bar.arrive_and_wait();
    return r;
}

inline unsigned __ballot_sync(unsigned mask, bool pred) {
    (void)mask;
    return emu_warp_exchange(pred ? 1u : 0u, [](const uint32_t* s, unsigned) {
        uint32_t b = 0;
        for (unsigned l = 0; l < 32; ++l) b |= (s[l] & 1u) << l;
        return b;
    });
}
inline unsigned __shfl_down_sync(unsigned mask, unsigned v, int d) {
    (void)mask;
    return emu_warp_exchange(v, [d](const uint32_t* s, unsigned lane) {
        return lane + d < 32 ? s[lane + d] : s[lane];
    });
}
inline unsigned __shfl_up_sync(unsigned mask, unsigned v, int d) {
    (void)mask;
    return emu_warp_exchange(v, [d](const uint32_t* s, unsigned lane) {
        return lane >= (unsigned)d ? s[lane - d] : s[lane];
    });
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

// One OS thread runs everything, so read-modify-write needs no atomics here.
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p = old + v;
    return old;
}

inline void emu_entry() {
    emu_body();
    emu_fibers[emu_current].done = true;
}  // returns to uc_link: the scheduler

// Runs kernel(args...) on a grid of `grid` blocks of `block` threads, block after block.
template <class... Params, class... Args>
void emu_launch(void (*kernel)(Params...), unsigned grid, unsigned block, Args... args) {
    constexpr size_t kStack = 64 * 1024;
    gridDim.x = grid;
    blockDim.x = block;
    if (emu_fibers.size() < block) emu_fibers.resize(block);
    emu_body = [=] { kernel(args...); };
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_block_barrier = EmuBarrier{block};
        emu_warps.assign(block / 32, EmuWarp{});
        for (unsigned t = 0; t < block; ++t) {
            EmuFiber& f = emu_fibers[t];
            f.stack.resize(kStack);
            f.done = false;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = f.stack.data();
            f.ctx.uc_stack.ss_size = f.stack.size();
            f.ctx.uc_link = &emu_scheduler;
            makecontext(&f.ctx, emu_entry, 0);
        }
        for (unsigned left = block; left > 0;) {
            for (unsigned t = 0; t < block; ++t) {
                if (emu_fibers[t].done) continue;
                emu_current = t;
                threadIdx.x = t;
                swapcontext(&emu_scheduler, &emu_fibers[t].ctx);
                if (emu_fibers[t].done) --left;
            }
        }
    }
}
