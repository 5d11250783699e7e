#!/usr/bin/env python3
"""Flash and RAM of the Cortex-M4F firmware (embedded/), and each crate's share.

Builds the firmware (release, thumbv7em-none-eabihf), then reads its ELF with llvm-size and
llvm-nm (rustup component llvm-tools) or, failing those, arm-none-eabi-size and
arm-none-eabi-nm (Debian package binutils-arm-none-eabi):

  python3 scripts/embedded_size.py

Flash is what the part stores: the vector table, code (.text) and constants (.rodata, plus
the initial values of .data). RAM is .data, .bss and the stack region of embedded/memory.x.
A crate's share is the sum of its symbols' sizes; a symbol belongs to the crate its path
starts with (for `<A as B>::f`, the crate of A, where the impl lives). Code that the compiler
inlined into another crate's function counts for that crate, and anonymous constants (string
literals, include_bytes! data) for none; the lines "anonymous constants" and "unattributed"
say how much that is.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict

TARGET = "thumbv7em-none-eabihf"
FLASH_SECTIONS = (".vector_table", ".text", ".rodata", ".data")
RAM_SECTIONS = (".data", ".bss", ".uninit")


def tool(llvm_name, gnu_name):
    """The path of an LLVM tool from rustup's llvm-tools, or of the GNU arm-none-eabi one."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    host = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True,
                                                       text=True, check=True).stdout, re.M)
    candidate = os.path.join(sysroot, "lib", "rustlib", host.group(1) if host else "", "bin",
                             llvm_name)
    for path in (candidate, shutil.which(llvm_name), shutil.which(gnu_name)):
        if path and os.access(path, os.X_OK):
            return path
    sys.exit(f"neither {llvm_name} (rustup component add llvm-tools) nor {gnu_name} "
             "(apt-get install binutils-arm-none-eabi) found")


def build():
    """Builds the firmware and returns its ELF path."""
    subprocess.run(["cargo", "build", "-q", "-p", "gradcast-embedded", "--bin", "firmware",
                    "--release", "--target", TARGET], check=True)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1",
                                      "--no-deps"], capture_output=True, text=True,
                                     check=True).stdout)
    return os.path.join(meta["target_directory"], TARGET, "release", "firmware")


def sections(elf):
    """Section name -> (size, address), from `size -A`."""
    out = subprocess.run([tool("llvm-size", "arm-none-eabi-size"), "-A", elf],
                         capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            result[parts[0]] = (int(parts[1]), int(parts[2]))
    return result


RUNTIME = {"Reset", "HardFault", "_HardFault", "DefaultHandler", "DefaultPreInit", "main",
           "__INTERRUPTS", "__EXCEPTIONS", "__RESET_VECTOR"}


def crate_of(name):
    """The crate a demangled symbol belongs to: the first crate its path names (for
    `<A as B>::f` the crate of A, or of B when A is a primitive type)."""
    if name.startswith((".L", "anon.")):
        return "anonymous constants"
    # llvm-nm leaves some legacy-mangled names half demangled (`_$LT$A$u20$as$u20$B$GT$::f`).
    for code, text in (("$LT$", "<"), ("$GT$", ">"), ("$RF$", "&"), ("$u20$", " "),
                       ("..", "::")):
        name = name.replace(code, text)
    match = re.search(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    if match:
        return match.group(1)
    if name in RUNTIME:
        return "cortex_m_rt"
    return "compiler_builtins"


def symbols(elf):
    """(crate, kind, size) per symbol with a size; aliases at one address counted once."""
    out = subprocess.run([tool("llvm-nm", "arm-none-eabi-nm"), "-C", "-S", "--size-sort", elf],
                         capture_output=True, text=True, check=True).stdout
    by_address = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) != 4:
            continue
        address, size, kind, name = int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]
        kind = kind.lower()
        if kind not in "trdb" or size == 0:
            continue
        # Keep one name per address: the largest, preferring a Rust path over an alias.
        key = (address, kind)
        rank = (size, "::" in name)
        if key not in by_address or rank > by_address[key][0]:
            by_address[key] = (rank, crate_of(name), size)
    return [(crate, kind, size) for (_, kind), (_, crate, size) in by_address.items()]


def main():
    elf = build()
    secs = sections(elf)
    size = lambda names: sum(secs.get(n, (0, 0))[0] for n in names)
    flash, ram_static = size(FLASH_SECTIONS), size(RAM_SECTIONS)
    memory_x = open(os.path.join(os.path.dirname(__file__), "..", "embedded", "memory.x")).read()
    stack = re.search(r"STACK\s*:\s*ORIGIN\s*=\s*\S+,\s*LENGTH\s*=\s*(\d+)K", memory_x)
    stack_bytes = int(stack.group(1)) * 1024 if stack else 0
    print(f"firmware: {elf}")
    print("section         bytes")
    for name in (".vector_table", ".text", ".rodata", ".data", ".bss"):
        print(f"{name:<14} {secs.get(name, (0, 0))[0]:>6}")
    print(f"flash          {flash:>6}  ({flash / 1024:.1f} KiB)")
    print(f"RAM (static)   {ram_static:>6}  ({ram_static / 1024:.1f} KiB) + stack region "
          f"{stack_bytes} = {ram_static + stack_bytes} ({(ram_static + stack_bytes) / 1024:.1f} KiB)")

    shares = defaultdict(lambda: defaultdict(int))
    for crate, kind, sz in symbols(elf):
        shares[crate][kind] += sz
    print()
    print(f"{'crate':<40} {'code':>7} {'const':>7} {'flash':>7} {'RAM':>7}")
    rows = sorted(shares.items(), key=lambda kv: -(kv[1]["t"] + kv[1]["r"] + kv[1]["d"]))
    code, const = 0, 0
    for crate, k in rows:
        fl = k["t"] + k["r"] + k["d"]
        code, const = code + k["t"], const + k["r"] + k["d"]
        print(f"{crate:<40} {k['t']:>7} {k['r']:>7} {fl:>7} {k['d'] + k['b']:>7}")
    # Code: alignment padding and literal pools; constants: data without a sized symbol
    # (include_bytes! blobs, string literals).
    rest_code = size((".text",)) - code
    rest_const = flash - size((".text",)) - const
    print(f"{'unattributed (see the docstring)':<40} {rest_code:>7} {rest_const:>7} "
          f"{rest_code + rest_const:>7}")


if __name__ == "__main__":
    main()
