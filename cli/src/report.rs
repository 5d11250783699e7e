//! Everything `gradcast train` prints for people: the per-epoch table and the summary. (The
//! JSON summary is [`crate::train::Summary`] itself; the plot is [`crate::plot`].)

use crate::train::Summary;
use gradcast_candle::driver::EpochRecord;

/// The heading of the per-epoch table.
pub fn epoch_heading() -> String {
    format!(
        "{:>5}  {:<10} {:>7} {:>9} {:>10} {:>9} {:>9}  {}",
        "epoch", "run", "loss", "test acc", "bytes", "tau", "density", "sparse/bitmap/dense"
    )
}

/// One epoch's table rows, one per run (`names[i]` for `records[i]`).
pub fn epoch_lines(names: &[&str], records: &[EpochRecord]) -> Vec<String> {
    records
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (r, name))| {
            let epoch = if i == 0 {
                r.epoch.to_string()
            } else {
                String::new()
            };
            let mut line = format!(
                "{epoch:>5}  {name:<10} {:>7.4} {:>8.2}% {:>10}",
                r.loss,
                100.0 * r.test_accuracy,
                human_bytes(r.bytes)
            );
            if let (Some(tau), Some(d)) = (r.tau, r.density) {
                let mix = r.encodings.unwrap_or_default();
                line.push_str(&format!(
                    " {tau:>9.2e} {:>8.3}%  {}/{}/{}",
                    100.0 * d,
                    mix.sparse,
                    mix.bitmap,
                    mix.dense
                ));
            }
            line
        })
        .collect()
}

/// Bytes with a decimal unit (B, kB, MB, GB).
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1e3 {
        format!("{b} B")
    } else if b < 1e6 {
        format!("{:.1} kB", b / 1e3)
    } else if b < 1e9 {
        format!("{:.2} MB", b / 1e6)
    } else {
        format!("{:.2} GB", b / 1e9)
    }
}

/// The summary table after training.
pub fn print_summary(s: &Summary) {
    let (d, g) = (&s.dense, &s.gradcast);
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!();
    println!("{:<24} {:>12} {:>12}", "summary", d.exchange, "gradcast");
    println!(
        "{:<24} {:>11.2}% {:>11.2}%   (gap {:+.2} pp)",
        "final test accuracy",
        100.0 * d.test_accuracy,
        100.0 * g.test_accuracy,
        s.accuracy_gap_pp
    );
    println!(
        "{:<24} {:>12} {:>12}   (compression {:.0}x)",
        "bytes on the wire",
        human_bytes(d.bytes),
        human_bytes(g.bytes),
        s.compression_ratio
    );
    println!(
        "{:<24} {:>11.2}s {:>11.2}s",
        "wall time", d.seconds, g.seconds
    );
    println!(
        "{:<24} {:>11.2}s {:>11.2}s",
        "forward + backward",
        d.forward_seconds + d.backward_seconds,
        g.forward_seconds + g.backward_seconds
    );
    println!(
        "{:<24} {:>12} {:>12}",
        "replicas bit-identical",
        yes(d.replicas_identical),
        yes(g.replicas_identical)
    );
    for r in [d, g] {
        println!(
            "{} time in encode / exchange / decode: {:.3} s / {:.3} s / {:.3} s",
            r.name, r.encode_seconds, r.exchange_seconds, r.decode_seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gradcast_candle::driver::EncodingMix;

    #[test]
    fn epoch_lines_show_thresholds_only_for_gradcast() {
        let dense = EpochRecord {
            epoch: 3,
            loss: 0.5,
            test_accuracy: 0.9,
            bytes: 3_540_000,
            cumulative_bytes: 0,
            tau: None,
            density: None,
            encodings: None,
        };
        let gc = EpochRecord {
            tau: Some(0.2),
            density: Some(0.001),
            encodings: Some(EncodingMix {
                sparse: 92,
                bitmap: 0,
                dense: 0,
            }),
            bytes: 7500,
            ..dense.clone()
        };
        let l = epoch_lines(&["dense", "gradcast"], &[dense, gc]);
        assert!(
            l[0].starts_with("    3  dense") && l[0].contains("3.54 MB"),
            "{}",
            l[0]
        );
        assert!(!l[0].contains("e-1"), "{}", l[0]);
        assert!(l[1].starts_with("       gradcast"), "{}", l[1]);
        assert!(l[1].contains("2.00e-1") && l[1].contains("0.100%") && l[1].ends_with("92/0/0"));
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
    }
}
