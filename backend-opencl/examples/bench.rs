//! OpenCL (PoCL or a GPU) encode/decode throughput against the CPU fast path, measured in the
//! same run. Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p gradcast-opencl --example bench -- [reps] [log2 N ...]
//! ```
//! Defaults: 5 rounds, N = 2^24 and 2^26, densities 1e-4, 1e-3, 1e-2.
// A std binary: core paths buy nothing here.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_opencl::bench::{MARKDOWN_HEADER, ocl_row, standard_cases};
use gradcast_opencl::{OpenCl, OpenClError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let sizes: Vec<u32> = args.iter().skip(1).filter_map(|s| s.parse().ok()).collect();
    let ocl = match OpenCl::first_device() {
        Ok(o) => o,
        Err(e @ OpenClError::NoPlatform { .. }) => {
            eprintln!("SKIP: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let l = ocl.limits();
    println!(
        "device: {} (max work-group {}, local mem {} B, work-group used {}), reps {reps}",
        gradcast_core::Backend::name(&ocl),
        l.max_work_group,
        l.local_mem,
        l.work_group
    );
    println!("{MARKDOWN_HEADER}");
    for (n, d) in standard_cases() {
        if !sizes.is_empty() && !sizes.contains(&n.trailing_zeros()) {
            continue;
        }
        let row = ocl_row(&ocl, n, d, reps)?;
        println!("{}", row.markdown());
        if !row.messages_identical {
            eprintln!(
                "WARNING: OpenCL and CPU messages differ at N=2^{} density {d}",
                n.trailing_zeros()
            );
        }
    }
    Ok(())
}
