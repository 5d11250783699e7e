// Runs the real gradcast CUDA kernels on the CPU through cuda_shim.h (driven by
// tests/emulated.rs). Reads a stream of requests from argv[1] and writes one response per
// request to argv[2], all little-endian binary:
//
//   1 ENCODE  n u32, tau f32, start u32 (0xFFFFFFFF: no head count), take_head u32,
//             c_head u32, take_tail u32, mode u32 (0 sparse, 1 bitmap), x: n f32
//          -> first_bad u64, total u64, head u64, payload (sparse: take_head + take_tail i32;
//             bitmap: ceil(n / 16) u32), x: n f32
//   2 DECODE  n u32, tau f32, encoding u32 (0 sparse, 1 bitmap, 2 dense), count u32,
//             payload_len u32, payload bytes, target: n f32
//          -> target: n f32
//   3 VECTOR  op u32 (0 fill, 1 add_assign, 2 sub_scaled, 3 clip_count, 4 clip), n u32,
//             scalar f32, a: n f32, b: n f32
//          -> a: n f32, count u64
//   4 SCAN    tiles u32, tile_counts: tiles u32
//          -> offsets: tiles u32, total u64
//
// The launches mirror src/device.rs: one block of GC_BLOCK threads per tile for the tiled
// kernels, a single GC_SCAN_THREADS block for the scan, grid-stride grids otherwise.
#include "cuda_shim.h"

#include "../../kernels/common.cuh"
#include "../../kernels/count.cu"
#include "../../kernels/decode.cu"
#include "../../kernels/encode.cu"
#include "../../kernels/vector.cu"

#include <cstdio>
#include <stdexcept>

namespace {

struct Reader {
    FILE* f;
    template <class T>
    bool get(T& v) { return std::fread(&v, sizeof v, 1, f) == 1; }
    template <class T>
    T need() {
        T v;
        if (!get(v)) throw std::runtime_error("truncated request");
        return v;
    }
    template <class T>
    std::vector<T> vec(size_t n) {
        std::vector<T> v(n);
        if (n && std::fread(v.data(), sizeof(T), n, f) != n) throw std::runtime_error("truncated");
        return v;
    }
};
struct Writer {
    FILE* f;
    template <class T>
    void put(T v) { std::fwrite(&v, sizeof v, 1, f); }
    template <class T>
    void vec(const std::vector<T>& v) { if (!v.empty()) std::fwrite(v.data(), sizeof(T), v.size(), f); }
};

unsigned grid_for(size_t work) {
    size_t b = (work + GC_BLOCK - 1) / GC_BLOCK;
    if (b < 1) b = 1;
    if (b > 65535) b = 65535;
    return (unsigned)b;
}

void encode(Reader& in, Writer& out) {
    const u32 n = in.need<u32>();
    const float tau = in.need<float>();
    const u32 start = in.need<u32>(), take_head = in.need<u32>(), c_head = in.need<u32>(),
              take_tail = in.need<u32>(), mode = in.need<u32>();
    std::vector<float> x = in.vec<float>(n);
    const u32 tiles = (n + GC_TILE - 1) / GC_TILE;
    std::vector<u32> tile_counts(tiles, 0xA5A5A5A5u), offsets(tiles, 0xA5A5A5A5u);
    std::vector<u64> slots = {GC_NO_INDEX, 0, 0, 0};
    emu_launch(gc_count_tiles, tiles, GC_BLOCK, (const float*)x.data(), (u64)n, tau,
               tile_counts.data(), &slots[0]);
    emu_launch(gc_scan_tiles, 1, GC_SCAN_THREADS, (const u32*)tile_counts.data(), tiles,
               offsets.data(), &slots[1]);
    if (start != 0xFFFFFFFFu) {
        emu_launch(gc_head_count, 1, GC_BLOCK, (const float*)x.data(), (u64)start, tau,
                   (const u32*)offsets.data(), &slots[2]);
    }
    out.put(slots[0]);
    out.put(slots[1]);
    out.put(slots[2]);
    if (mode == 0) {
        std::vector<int> entries(take_head + take_tail, 0x5A5A5A5A);
        if (slots[0] == GC_NO_INDEX && !entries.empty()) {
            emu_launch(gc_encode_sparse, tiles, GC_BLOCK, x.data(), n, tau,
                       (const u32*)offsets.data(), take_head, c_head, take_tail, entries.data());
        }
        out.vec(entries);
    } else {
        const u32 nwords = (n + 15) / 16;
        std::vector<u32> words(nwords, 0xDEADBEEFu);  // every word must be written
        if (slots[0] == GC_NO_INDEX) {
            emu_launch(gc_encode_bitmap, tiles, GC_BLOCK, x.data(), n, tau,
                       (const u32*)offsets.data(), take_head, c_head, take_tail, words.data(),
                       nwords);
        }
        out.vec(words);
    }
    out.vec(x);
}

void decode(Reader& in, Writer& out) {
    const u32 n = in.need<u32>();
    const float tau = in.need<float>();
    const u32 enc = in.need<u32>(), count = in.need<u32>(), len = in.need<u32>();
    std::vector<unsigned char> payload = in.vec<unsigned char>(len);
    std::vector<float> t = in.vec<float>(n);
    if (enc == 0) {
        std::vector<int> e(count);
        std::memcpy(e.data(), payload.data(), 4 * (size_t)count);
        emu_launch(gc_decode_sparse, grid_for(count), GC_BLOCK, t.data(), n,
                   (const int*)e.data(), count, tau);
    } else if (enc == 1) {
        emu_launch(gc_decode_bitmap, grid_for(n), GC_BLOCK, t.data(), n,
                   (const unsigned char*)payload.data(), tau);
    } else {
        std::vector<float> v(n);
        std::memcpy(v.data(), payload.data(), 4 * (size_t)n);
        emu_launch(gc_decode_dense, grid_for(n), GC_BLOCK, t.data(), n, (const float*)v.data());
    }
    out.vec(t);
}

void vector_op(Reader& in, Writer& out) {
    const u32 op = in.need<u32>(), n = in.need<u32>();
    const float s = in.need<float>();
    std::vector<float> a = in.vec<float>(n), b = in.vec<float>(n);
    u64 count = 0;
    switch (op) {
        case 0: emu_launch(gc_fill, grid_for(n), GC_BLOCK, a.data(), (u64)n, s); break;
        case 1:
            emu_launch(gc_add_assign, grid_for(n), GC_BLOCK, a.data(), (const float*)b.data(),
                       (u64)n);
            break;
        case 2:
            emu_launch(gc_sub_scaled, grid_for(n), GC_BLOCK, a.data(), (const float*)b.data(),
                       (u64)n, s);
            break;
        case 3:
            emu_launch(gc_clip_count, grid_for(n), GC_BLOCK, (const float*)a.data(), (u64)n, s,
                       &count);
            break;
        case 4: emu_launch(gc_clip, grid_for(n), GC_BLOCK, a.data(), (u64)n, s); break;
        default: throw std::runtime_error("unknown vector op");
    }
    out.vec(a);
    out.put(count);
}

void scan(Reader& in, Writer& out) {
    const u32 tiles = in.need<u32>();
    std::vector<u32> counts = in.vec<u32>(tiles), offsets(tiles, 0xA5A5A5A5u);
    u64 total = 0;
    emu_launch(gc_scan_tiles, 1, GC_SCAN_THREADS, (const u32*)counts.data(), tiles,
               offsets.data(), &total);
    out.vec(offsets);
    out.put(total);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: harness REQUESTS RESPONSES\n");
        return 2;
    }
    FILE* fi = std::fopen(argv[1], "rb");
    FILE* fo = std::fopen(argv[2], "wb");
    if (!fi || !fo) {
        std::perror("open");
        return 2;
    }
    Reader in{fi};
    Writer out{fo};
    try {
        u32 op;
        while (in.get(op)) {
            if (op == 1) encode(in, out);
            else if (op == 2) decode(in, out);
            else if (op == 3) vector_op(in, out);
            else if (op == 4) scan(in, out);
            else throw std::runtime_error("unknown request");
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "harness: %s\n", e.what());
        return 1;
    }
    std::fclose(fo);
    return 0;
}
