#!/usr/bin/env python3
"""Writes the first N training and M test samples of an MNIST-layout IDX directory (plain or
gzipped files) as a new, gzipped IDX directory: a small data set of the same kind, for short
runs with a fixed number of rounds (rounds per epoch = ceil(N / batch)).

Usage: scripts/idx_subset.py SRC_DIR DST_DIR N_TRAIN N_TEST
Example: scripts/idx_subset.py /usr/share/datasets/fashion-mnist /tmp/fmnist-1280 1280 1000
"""
import gzip
import os
import struct
import sys

FILES = [
    ("train-images-idx3-ubyte", 3, "train"),
    ("train-labels-idx1-ubyte", 1, "train"),
    ("t10k-images-idx3-ubyte", 3, "test"),
    ("t10k-labels-idx1-ubyte", 1, "test"),
]


def read(src, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(src, candidate)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    sys.exit(f"idx_subset: {src} has no {name} (plain or .gz)")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    counts = {"train": int(sys.argv[3]), "test": int(sys.argv[4])}
    os.makedirs(dst, exist_ok=True)
    for name, ndims, part in FILES:
        data = read(src, name)
        if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndims:
            sys.exit(f"idx_subset: {name} is not an IDX file of {ndims} unsigned-byte dimensions")
        dims = list(struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims]))
        n = counts[part]
        if not 0 < n <= dims[0]:
            sys.exit(f"idx_subset: {name} holds {dims[0]} samples; asked for {n}")
        per = 1
        for d in dims[1:]:
            per *= d
        header = data[:4] + struct.pack(">" + "I" * ndims, n, *dims[1:])
        body = data[4 + 4 * ndims : 4 + 4 * ndims + n * per]
        # mtime=0: the same input gives the same bytes.
        with open(os.path.join(dst, name + ".gz"), "wb") as f:
            f.write(gzip.compress(header + body, mtime=0))
    print(f"idx_subset: {counts['train']} train / {counts['test']} test samples in {dst}")


if __name__ == "__main__":
    main()
