//! What a small OpenCL call costs (the launch, not the work): per-call microseconds of
//! `fill` (no kernel object, the reference), `add_assign`, `sub_scaled`, `encode` (two
//! kernels and blocking reads) and `decode_add`, on vectors of 2^10 elements. Prints a
//! Markdown table for docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p gradcast-opencl --example launch -- [reps] [calls] [log2 N]
//! ```
//! Defaults: 15 repetitions of 2000 calls each, N = 2^10.
// A std binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_opencl::bench::launch_overhead;
use gradcast_opencl::{OpenCl, OpenClError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let reps = args.first().copied().unwrap_or(15);
    let calls = args.get(1).copied().unwrap_or(2000);
    let log2_n = args.get(2).copied().unwrap_or(10);
    if log2_n > 26 {
        return Err(format!("log2 N = {log2_n}: at most 26").into());
    }
    let ocl = match OpenCl::first_device() {
        Ok(o) => o,
        Err(e @ OpenClError::NoPlatform { .. }) => {
            eprintln!("SKIP: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "device: {}, N = 2^{log2_n}, {reps} repetitions of {calls} calls",
        gradcast_core::Backend::name(&ocl)
    );
    let rows = launch_overhead(&ocl, 1 << log2_n, calls, reps)?;
    let fill = rows[0].per_call.median();
    println!("| call | kernels | median us/call | best us/call | median / fill |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} |",
            r.op,
            r.kernels,
            r.median_us(),
            r.best_us(),
            if fill > 0.0 {
                r.per_call.median() / fill
            } else {
                0.0
            }
        );
    }
    Ok(())
}
