//! The message tools' messages for users: `encode` says when a message is larger than the raw
//! vector, `decode` refuses by default a small message that describes a huge vector (and
//! `--help` says what decoding costs), and an empty file is refused with what was expected.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::wire::{self, Encoding, Header};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcast"))
        .args(args)
        .output()
        .expect("the gradcast binary runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn encode_says_larger_for_a_dense_message_and_smaller_for_a_sparse_one() {
    let d = tmp("tools_ratio");
    let input = d.join("v.f32");
    let v: Vec<u8> = [0.0f32, 2.0, -3.0, 0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&input, v).unwrap();
    let i = input.to_str().unwrap();
    let out = d.join("m.gcm");
    let o = out.to_str().unwrap();

    let r = gradcast(&["encode", i, o, "--tau", "1", "--encoding", "dense"]);
    assert!(r.status.success(), "{}", text(&r));
    // 48 + 16 bytes against 16 bytes of f32.
    assert!(
        text(&r).contains("64 bytes (4.00x larger than 16 bytes of f32)"),
        "{}",
        text(&r)
    );
    let r = gradcast(&["inspect", o]);
    assert!(
        text(&r).contains("4.00x larger than 16 bytes of f32"),
        "{}",
        text(&r)
    );

    // A long vector with few candidates: smaller.
    let long: Vec<u8> = (0..1000)
        .map(|k| if k == 7 { 5.0f32 } else { 0.0 })
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(&input, long).unwrap();
    let r = gradcast(&["encode", i, o, "--tau", "1"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        text(&r).contains("52 bytes (76.9x smaller than 4000 bytes of f32)"),
        "{}",
        text(&r)
    );
}

#[test]
fn decode_refuses_a_small_message_claiming_2_pow_28_elements_by_default() {
    let d = tmp("tools_default_limit");
    // A valid 48-byte message (no entries) for N = 2^28: 1 GiB of f32 if decoded.
    let header = Header {
        encoding: Encoding::Sparse,
        flags: 0,
        n: 1 << 28,
        count: 0,
        tau: 1.0,
        sender: 0,
        round: 0,
        segment: 0,
        offset: 0,
        payload_len: 0,
        checksum: 0,
    };
    let mut msg = vec![0u8; wire::HEADER_LEN];
    wire::seal(&mut msg, header);
    let m = d.join("empty.gcm");
    std::fs::write(&m, &msg).unwrap();
    let out = d.join("out.f32");
    let r = gradcast(&["decode", m.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(text(&r).contains("268435456 f32 values"), "{}", text(&r));
    assert!(text(&r).contains("--max-elements 16777216"), "{}", text(&r));
    assert!(!out.exists(), "decode wrote a file");

    let help = gradcast(&["decode", "--help"]);
    assert!(help.status.success());
    let h = text(&help);
    assert!(
        h.contains("4 bytes per element") && h.contains("64 MiB"),
        "{h}"
    );
}

#[test]
fn an_empty_file_is_refused_with_what_was_expected() {
    let d = tmp("tools_empty");
    let m = d.join("nothing.gcm");
    std::fs::write(&m, b"").unwrap();
    let out = d.join("out.f32");
    for args in [
        vec!["decode", m.to_str().unwrap(), out.to_str().unwrap()],
        vec!["inspect", m.to_str().unwrap()],
    ] {
        let r = gradcast(&args);
        assert_eq!(r.status.code(), Some(1), "{}", text(&r));
        assert!(
            text(&r).contains("expected at least one message"),
            "{}",
            text(&r)
        );
    }
}

#[test]
fn help_texts_speak_to_users() {
    for cmd in ["encode", "decode", "inspect", "bench"] {
        let r = gradcast(&[cmd, "--help"]);
        assert!(r.status.success(), "{cmd}: {}", text(&r));
        let h = text(&r);
        for internal in ["issue", "CPU issue", "TODO"] {
            assert!(
                !h.contains(internal),
                "{cmd} --help mentions {internal:?}: {h}"
            );
        }
    }
}
