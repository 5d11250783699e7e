//! Encode / decode throughput of the CPU backend against the plain read bandwidth of the
//! same buffer, measured in the same run (`docs/BENCHMARKS.md`, issue 5).
//!
//! ```text
//! cargo bench -p gradcast-cpu --bench encode
//! GRADCAST_BENCH_LOG2N=20,22 GRADCAST_BENCH_DENSITIES=1e-3 GRADCAST_BENCH_REPS=3 cargo bench -p gradcast-cpu --bench encode
//! ```
//!
//! Prints one Markdown table; nothing is asserted.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)] // a std-only binary
#![allow(missing_docs)] // a benchmark binary, documented above

use gradcast_cpu::bench::{cpu_report, standard_configs};

fn env_list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    match std::env::var(name) {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// `GRADCAST_BENCH_ROUND=1`: the round-cost table instead (`gradcast_cpu::bench::round_cost`,
/// the routine of `gradcast bench --round`), over GRADCAST_BENCH_LOG2N (default 20,23,26),
/// GRADCAST_BENCH_PARTIES (1,2,4) and GRADCAST_BENCH_DENSITIES (1e-3,1e-2), with
/// GRADCAST_BENCH_REPS timed rounds (5).
fn rounds() {
    let log2n: Vec<u32> = env_list("GRADCAST_BENCH_LOG2N", &[20, 23, 26]);
    let parties: Vec<usize> = env_list("GRADCAST_BENCH_PARTIES", &[1, 2, 4]);
    let densities: Vec<f64> = env_list("GRADCAST_BENCH_DENSITIES", &[1e-3, 1e-2]);
    let reps: usize = std::env::var("GRADCAST_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "| N | P | density | entries per party | gradcast round ms | dense round ms | read N floats ms | round / dense | round / read | replicas |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &l in &log2n {
        for &p in &parties {
            for &d in &densities {
                match gradcast_cpu::bench::round_cost(1 << l, p, d, reps) {
                    Ok(r) => println!(
                        "| 2^{l} | {p} | {d:e} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {} |",
                        r.entries,
                        r.round.median() * 1e3,
                        r.dense.median() * 1e3,
                        r.read.median() * 1e3,
                        r.vs_dense(),
                        r.vs_read(),
                        if r.replicas_identical {
                            "same"
                        } else {
                            "DIFFER"
                        },
                    ),
                    Err(e) => eprintln!("N = 2^{l}, P = {p}, density {d}: {e}"),
                }
            }
        }
    }
}

fn main() {
    if std::env::var_os("GRADCAST_BENCH_ROUND").is_some() {
        rounds();
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument is not supported and ignored.
    let log2n: Vec<u32> = env_list("GRADCAST_BENCH_LOG2N", &[24, 26]);
    let densities: Vec<f64> = env_list("GRADCAST_BENCH_DENSITIES", &[1e-4, 1e-3, 1e-2]);
    let reps: usize = std::env::var("GRADCAST_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    // GRADCAST_BENCH_ONLY=<substring>: keep only the configurations whose label contains it.
    let only = std::env::var("GRADCAST_BENCH_ONLY").unwrap_or_default();
    // GRADCAST_BENCH_HUGE_PAGES=0: buffers without the transparent huge page advice.
    let huge = std::env::var("GRADCAST_BENCH_HUGE_PAGES").map_or(true, |v| v != "0");
    let configs: Vec<_> = standard_configs()
        .into_iter()
        .filter(|(label, _)| label.contains(only.as_str()))
        .map(|(label, c)| (label, c.with_huge_pages(huge)))
        .collect();
    println!(
        "| N | density | encoding | K | path | threads | read GB/s | encode GB/s | encode / read | decode GB/s | decode / read | validate + decode M entries/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut validation = Vec::new();
    for &l in &log2n {
        let n = 1usize << l;
        for &d in &densities {
            let r = match cpu_report(n, d, reps, &configs) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("N = 2^{l}, density {d}: {e}");
                    continue;
                }
            };
            validation.push(format!(
                "| 2^{l} | {d:e} | {} | {:.1} | {:.2} | {:.1} |",
                r.message_bytes,
                r.parse.best() * 1e6,
                r.message_bytes as f64 / r.crc.best().max(1e-12) / 1e9,
                r.crc.best() * 1e6,
            ));
            if !r.messages_identical {
                eprintln!("N = 2^{l}, density {d}: configurations wrote different messages!");
            }
            for row in &r.rows {
                let entries_per_s = r.validated_entries_per_s(row) / 1e6;
                println!(
                    "| 2^{l} | {d:e} | {} | {} | {} ({}) | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
                    r.encoding.name(),
                    r.entries,
                    row.label,
                    row.backend,
                    row.threads,
                    r.row_read_gbps(row),
                    row.encode.best_gbps(r.bytes()),
                    r.encode_ratio(row),
                    row.decode.best_gbps(r.bytes()),
                    r.decode_ratio(row),
                    entries_per_s,
                );
            }
        }
    }
    println!();
    println!("| N | density | message bytes | parse (validate) µs | CRC-32C GB/s | CRC-32C µs |");
    println!("|---|---|---|---|---|---|");
    for line in validation {
        println!("{line}");
    }
}
