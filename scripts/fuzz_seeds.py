#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from core/vectors/kat.txt.

Usage: scripts/fuzz_seeds.py CORPUS_DIR
Every known-answer message seeds `parse`; `decode_add` gets each message prefixed with a
target length (its input is a (u16, bytes) tuple, read by `arbitrary`); `dl4j_import` gets each
message converted to DL4J's int32 layout (sparse and bitmap); `checkpoint_restore` and the CLI
readers get whatever fuzz/seeds/<target>/ holds, if anything.
"""
import os, struct, sys, shutil

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
out = sys.argv[1]
kat = open(os.path.join(root, "core/vectors/kat.txt")).read()
msgs = []
for block in kat.split("\n\n"):
    d = dict(l.split(" = ", 1) for l in block.strip().splitlines() if " = " in l)
    if "message" in d:
        msgs.append((d["name"], bytes.fromhex(d["message"]), len(d["residual"].split())))

def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)

def to_dl4j(m):
    enc, n, k, tau = m[5], *struct.unpack("<II", m[8:16]), struct.unpack("<i", m[16:20])[0]
    if m[6] & 2:
        return None
    p = m[48:]
    if enc == 0:
        return struct.pack("<4i", k, n, tau, 0) + p
    if enc == 1:
        words = [0] * (n // 16 + 1)
        for i in range(n):
            c = (p[i // 4] >> (2 * (i % 4))) & 3
            if c:
                words[i // 16] |= 1 << (i % 16)
                if c == 2:
                    words[i // 16] |= 1 << (i % 16 + 16)
        return struct.pack("<4i", n, n, tau, 1) + struct.pack(f"<{len(words)}I", *words)
    return None

for name, m, n in msgs:
    put("parse", name, m)
    put("decode_add", name, struct.pack("<H", n) + m)
    d = to_dl4j(m)
    if d is not None:
        put("dl4j_import", name, d)
seeds = os.path.join(root, "fuzz/seeds")
if os.path.isdir(seeds):
    for t in os.listdir(seeds):
        for f in os.listdir(os.path.join(seeds, t)):
            os.makedirs(os.path.join(out, t), exist_ok=True)
            shutil.copy(os.path.join(seeds, t, f), os.path.join(out, t, f))
