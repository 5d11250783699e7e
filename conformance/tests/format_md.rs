//! `docs/FORMAT.md` against the known-answer vectors: the document's hex blocks are the
//! messages of `core/vectors/kat.txt`. Here rather than in the core's tests, so that the
//! published core crate does not reach outside itself.
// A std-only test binary.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use gradcast_core::kat;

/// Every hex block of docs/FORMAT.md equals the message of the vector of the same name.
#[test]
fn format_md_matches_vectors() {
    let doc = include_str!("../../docs/FORMAT.md");
    let vectors = kat::vectors();
    let mut checked = 0;
    for v in &vectors {
        let Some(at) = doc.find(&format!(". {}\n", v.name)) else {
            continue;
        };
        let rest = &doc[at..];
        let start = rest.find("```\n").expect("a code block") + 4;
        let end = start + rest[start..].find("```").expect("closed block");
        let hex: String = rest[start..end]
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes, v.message, "FORMAT.md block for {}", v.name);
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} vectors documented in FORMAT.md"
    );
}
