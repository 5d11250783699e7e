#!/usr/bin/env python3
"""Known-answer vectors for gradcast wire format v1, derived from docs/FORMAT.md alone.

This is an independent, deliberately naive second implementation of the format (Python,
written from the specification, sharing no code with the Rust codec). It writes
core/vectors/kat.txt; the Rust tests (core and every backend in the conformance suite)
check that the Rust encoder produces exactly these bytes and residuals, and that decoding
gives the expected update. Regenerate with:  python3 scripts/kat.py > core/vectors/kat.txt
"""
import struct

def crc32c(data: bytes) -> int:
    # Bitwise CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF.
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

assert crc32c(b"123456789") == 0xE3069283  # the catalogue check value of CRC-32C

def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]

def bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]

def cap_start(rnd: int, n: int) -> int:
    return (((rnd * 0x9E3779B97F4A7C15) % (1 << 64)) * n) >> 64

def encode(residual, tau, sender=0, rnd=0, cap=None, mode="auto", segment=None):
    """Returns (message bytes, residual after). Follows docs/FORMAT.md, section 'Encoding rules'."""
    r = [f32(x) for x in residual]
    tau = f32(tau)
    if segment is None:
        off, seg_id, flags = 0, 0, 0
        seg = list(range(len(r)))
    else:
        seg_id, off, length = segment
        flags = 2
        seg = list(range(off, off + length))
    n = len(seg)
    cand = [j for j in range(n) if abs(r[seg[j]]) >= tau]
    if mode == "dense":
        enc, k = 2, n
        payload = b"".join(struct.pack("<f", r[seg[j]]) for j in range(n))
        for j in range(n):
            r[seg[j]] = f32(r[seg[j]] - r[seg[j]])
    else:
        k = len(cand) if cap is None else min(len(cand), cap)
        if k < len(cand):
            flags |= 1
            s = cap_start(rnd, n)
            tail = [j for j in cand if j >= s]
            head = [j for j in cand if j < s]
            chosen = sorted(tail[:k] + head[: max(0, k - len(tail))])
        else:
            chosen = cand
        if mode == "sparse" or (mode == "auto" and 4 * k <= (n + 3) // 4):
            enc = 0
            payload = b"".join(
                struct.pack("<i", (j + 1) if r[seg[j]] > 0 else -(j + 1)) for j in chosen)
        else:
            enc = 1
            pl = bytearray((n + 3) // 4)
            for j in chosen:
                code = 1 if r[seg[j]] > 0 else 2
                pl[j // 4] |= code << (2 * (j % 4))
            payload = bytes(pl)
        for j in chosen:
            x = r[seg[j]]
            r[seg[j]] = f32(x - tau) if x > 0 else f32(x + tau)
    head = struct.pack("<4sBBHIIIIQHHII", b"GCST", 1, enc, flags, n, k, bits(tau), sender, rnd,
                       seg_id, 0, off, len(payload))
    assert len(head) == 44
    msg = head + struct.pack("<I", crc32c(head + payload)) + payload
    return msg, r

def decode(msg: bytes, target_len: int):
    enc, flags, n, k, taub, off, plen = (msg[5], struct.unpack("<H", msg[6:8])[0],
        *struct.unpack("<II", msg[8:16]), struct.unpack("<I", msg[16:20])[0],
        struct.unpack("<I", msg[36:40])[0], struct.unpack("<I", msg[40:44])[0])
    tau = struct.unpack("<f", struct.pack("<I", taub))[0]
    out = [0.0] * target_len
    p = msg[48:]
    if enc == 0:
        for q in range(k):
            e = struct.unpack("<i", p[4 * q:4 * q + 4])[0]
            out[off + abs(e) - 1] = f32(out[off + abs(e) - 1] + (tau if e > 0 else -tau))
    elif enc == 1:
        for j in range(n):
            c = (p[j // 4] >> (2 * (j % 4))) & 3
            if c == 1: out[off + j] = f32(out[off + j] + tau)
            if c == 2: out[off + j] = f32(out[off + j] - tau)
    else:
        for j in range(n):
            out[off + j] = f32(out[off + j] + struct.unpack("<f", p[4 * j:4 * j + 4])[0])
    return out

CASES = [
    # name, residual, tau, kwargs
    ("sparse-basic", [0.5, -2.0, 0.1] + [0.0] * 54 + [3.5, 0.25, -0.999, 0.0, 0.0, 0.0, 1.0], 1.0,
     dict(sender=7, rnd=3)),
    ("bitmap-small", [0.5, -2.0, 0.1, 1.0, 0.0, -0.25, 3.5, -1.0], 1.0,
     dict(sender=7, rnd=3)),
    ("bitmap-dense-input", [1.5, -1.5, 0.0, 2.0, -0.75, 1.0, -1.0, 0.5, 1.25, -3.0], 0.5,
     dict(sender=1, rnd=42)),
    ("capped-rotating-start", [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0,
                               1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0,
                               1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0,
                               1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0], 0.75,
     dict(sender=2, rnd=5, cap=2)),
    ("empty-message", [0.001, -0.002, 0.0], 0.01, dict(sender=9, rnd=1)),
    ("segment", [0.0, 0.0, 0.0, 4.0, -4.0, 0.5, 0.0, 0.0], 2.0,
     dict(sender=3, rnd=11, segment=(5, 2, 4))),
    ("dense-warmup", [0.25, -1.5, 0.0], 1.0, dict(sender=4, rnd=0, mode="dense")),
    ("inclusive-threshold", [0.125] + [0.0] * 30 + [-0.125, 0.12499999, -0.12499999], 0.125, dict(sender=0, rnd=0)),
]

def hexf(xs):
    return " ".join(f"{bits(x):08x}" for x in xs)

def main():
    print("# gradcast wire format v1 known-answer vectors; generated by scripts/kat.py from docs/FORMAT.md")
    print("# values are f32 bit patterns (hex, little-endian order of elements); message is hex bytes")
    for name, res, tau, kw in CASES:
        msg, after = encode(res, tau, **kw)
        upd = decode(msg, len(res))
        seg = kw.get("segment")
        print()
        print(f"name = {name}")
        print(f"tau = {bits(f32(tau)):08x}")
        print(f"sender = {kw.get('sender', 0)}")
        print(f"round = {kw.get('rnd', 0)}")
        print(f"cap = {kw.get('cap', 'none')}")
        print(f"mode = {kw.get('mode', 'auto')}")
        print(f"segment = {'none' if seg is None else ' '.join(map(str, seg))}")
        print(f"residual = {hexf([f32(x) for x in res])}")
        print(f"message = {msg.hex()}")
        print(f"residual_after = {hexf(after)}")
        print(f"decoded = {hexf(upd)}")

if __name__ == "__main__":
    main()
