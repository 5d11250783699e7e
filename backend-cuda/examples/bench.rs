//! Encode throughput of the CUDA backend against a device-to-device copy, measured in the same
//! run: `cargo run --release -p gradcast-cuda --example bench [-- --iters 20 --log2 26,27,28]`.
//!
//! Prints a Markdown table and one `BENCH ...` line per size for scripts.

use gradcast_core::Backend;
use gradcast_cuda::{Cuda, bench};

fn main() {
    let mut iters = 20usize;
    let mut sizes: Vec<usize> = bench::SIZES.to_vec();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => {
                iters = args.next().and_then(|v| v.parse().ok()).unwrap_or(iters);
            }
            "--log2" => {
                if let Some(v) = args.next() {
                    sizes = v
                        .split(',')
                        .filter_map(|s| s.trim().parse::<u32>().ok())
                        .filter(|&k| k < 31)
                        .map(|k| 1usize << k)
                        .collect();
                }
            }
            other => {
                eprintln!("unknown argument {other}; usage: bench [--iters N] [--log2 26,27,28]");
                std::process::exit(2);
            }
        }
    }
    let cuda = match Cuda::new(0) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIP: {e}");
            std::process::exit(3);
        }
    };
    if let Err(e) = cuda.warm_up() {
        eprintln!("kernel compilation failed: {e}");
        std::process::exit(1);
    }
    println!("device: {}", cuda.name());
    println!(
        "| N | candidates | message bytes | encode ms | count pass ms | d2d copy ms | encode / copy throughput |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        match bench::encode_vs_copy(&cuda, n, iters) {
            Ok(r) => {
                println!(
                    "| 2^{} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |",
                    n.trailing_zeros(),
                    r.candidates,
                    r.message_bytes,
                    r.encode.as_secs_f64() * 1e3,
                    r.count.as_secs_f64() * 1e3,
                    r.copy.as_secs_f64() * 1e3,
                    r.ratio()
                );
                eprintln!(
                    "BENCH n={} candidates={} encode_ms={:.4} count_ms={:.4} copy_ms={:.4} ratio={:.3}",
                    n,
                    r.candidates,
                    r.encode.as_secs_f64() * 1e3,
                    r.count.as_secs_f64() * 1e3,
                    r.copy.as_secs_f64() * 1e3,
                    r.ratio()
                );
            }
            Err(e) => {
                eprintln!("N={n}: {e}");
                std::process::exit(1);
            }
        }
    }
}
