//! The firmware: gradcast's encoder and decoder on a Cortex-M4F, under QEMU (`mps2-an386`).
//!
//! It encodes [`ROUNDS`](gradcast_embedded::ROUNDS) rounds of the scenario ([`gradcast_embedded::Run`]) from static
//! buffers, writes every packet to a host file over semihosting (when the command line says
//! `messages=PATH`), decodes the build-time reference messages, checks the known-answer
//! vectors, and prints a report on stdout:
//!
//! ```text
//! gradcast-embedded firmware n=4096 rounds=40 segments=2 max_packet=1120
//! round index=0 ...                  (one line per round, see RoundLine)
//! fpu cpacr=00f00000 fpca=1 fpscr=60000010
//! encode rounds=40 ... residual_crc32c=...
//! decode messages=... crc32c=...
//! kat vectors=8 ok
//! stack encode=... peak=... size=16384
//! done
//! ```
//!
//! Then it exits with code 0 through semihosting; an error exits 1, a panic prints its
//! message and location on stderr and exits 101, a fault prints the fault registers and
//! exits 134. Self-tests of that reporting: command line `panic`, `fault`, `overflow` (the
//! stack runs into unmapped memory and QEMU stops with a lockup), `hang`.
//!
//! Built for the host it only says how to run it (see `embedded/README.md`).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod target;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "this is the Cortex-M4F firmware; run it under QEMU:\n  \
         cargo run -p gradcast-embedded --bin firmware --release --target thumbv7em-none-eabihf\n\
         (embedded/README.md; the host test is `cargo test -p gradcast-embedded`)"
    );
    std::process::exit(2);
}
