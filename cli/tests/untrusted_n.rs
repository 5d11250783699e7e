//! A valid 52-byte message whose header claims N = 2^31 - 1 elements (sparse, one entry):
//! `inspect` reports it without allocating a vector of N, and `decode` refuses it before
//! allocating, naming `--max-elements`.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::wire::{self, Encoding, Header, MAX_ELEMENTS};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn gradcast(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args(args)
        .output()
        .expect("the gradcast binary runs");
    (o, t.elapsed())
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The 48-byte header and one sparse entry `-N` (the last element, negative), sealed with
/// the core's CRC-32C.
fn huge_message() -> Vec<u8> {
    let header = Header {
        encoding: Encoding::Sparse,
        flags: 0,
        n: MAX_ELEMENTS,
        count: 1,
        tau: 0.5,
        sender: 3,
        round: 7,
        segment: 0,
        offset: 0,
        payload_len: 4,
        checksum: 0,
    };
    let mut out = vec![0u8; wire::HEADER_LEN + 4];
    out[wire::HEADER_LEN..].copy_from_slice(&(-(MAX_ELEMENTS as i32)).to_le_bytes());
    let len = wire::seal(&mut out, header);
    assert_eq!(len, out.len());
    wire::MessageView::parse(&out).expect("the hand-built message is valid");
    out
}

#[test]
fn huge_n_inspects_quickly_and_decode_refuses_it() {
    let d = tmp("untrusted_n");
    let msg = d.join("huge.gcm");
    std::fs::write(&msg, huge_message()).unwrap();
    let m = msg.to_str().unwrap();

    let (o, took) = gradcast(&["inspect", m, "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "inspect failed: {err}");
    assert!(took < Duration::from_secs(5), "inspect took {took:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &v["messages"][0];
    assert_eq!(r["n"], MAX_ELEMENTS);
    assert_eq!(r["count"], 1);
    assert_eq!(r["positive"], 0);
    assert_eq!(r["negative"], 1);
    assert_eq!(r["sum"], -0.5);
    assert_eq!(r["max_abs"], 0.5);

    let out = d.join("out.f32");
    let (o, took) = gradcast(&["decode", m, out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("--max-elements"), "{err}");
    assert!(err.contains("2147483647"), "{err}");
    assert!(took < Duration::from_secs(5), "decode took {took:?}");
    assert!(!out.exists(), "decode wrote a file");

    // A limit below a small message's N is refused too; at N it decodes.
    let small = d.join("small.gcm");
    let input = d.join("v.f32");
    let v: Vec<u8> = [0.0f32, 2.0, -3.0, 0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&input, v).unwrap();
    let (o, _) = gradcast(&[
        "encode",
        input.to_str().unwrap(),
        small.to_str().unwrap(),
        "--tau",
        "1",
    ]);
    assert!(o.status.success());
    let s = small.to_str().unwrap();
    let o_path = out.to_str().unwrap();
    let (o, _) = gradcast(&["decode", s, o_path, "--max-elements", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-elements 3"));
    let (o, _) = gradcast(&["decode", s, o_path, "--max-elements", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap().len(), 16);
}
