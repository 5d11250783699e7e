//! The CLI's MNIST IDX reader (`--data idx:DIR`, `--data fashion-mnist`): never panics; what
//! it accepts has exactly the element count its dimensions announce, and writes back to the
//! same bytes. Gzip-compressed input (as MNIST and Fashion-MNIST are distributed) goes through
//! `parse_idx_file`: it either unpacks, within the limit, to bytes that parse exactly as the
//! plain reader parses them, or fails with a typed error.
//!
//! The reader is `cli/src/idx.rs`, which depends on `std` and `flate2` only: it is compiled
//! into this target by path, so fuzzing it does not build the CLI (candle, plotters) under
//! the sanitizer.
#![no_main]

#[path = "../../cli/src/idx.rs"]
mod idx;

use libfuzzer_sys::fuzz_target;

/// Small, so that a crafted stream cannot make one run allocate much.
const LIMIT: usize = 1 << 20;
const _: () = assert!(LIMIT <= idx::MAX_UNPACKED);

fuzz_target!(|data: &[u8]| {
    for dims in [1usize, 3] {
        let plain = idx::parse_idx(data, dims);
        if let Ok(i) = &plain {
            let want: usize = i.dims.iter().product();
            assert_eq!(i.data.len(), want);
            assert_eq!(i.dims.len(), dims);
            let d: Vec<u32> = i
                .dims
                .iter()
                .map(|&x| u32::try_from(x).expect("dimensions are read as u32"))
                .collect();
            assert_eq!(idx::idx_bytes(&d, &i.data), data);
        }
        let file = idx::parse_idx_file(data, dims, LIMIT);
        if idx::is_gzip(data) {
            match idx::gunzip(data, LIMIT) {
                Ok(unpacked) => {
                    assert!(unpacked.len() <= LIMIT);
                    assert_eq!(file, idx::parse_idx(&unpacked, dims));
                }
                Err(e) => {
                    assert!(matches!(e, idx::IdxError::Gzip { .. }));
                    assert_eq!(file, Err(e));
                }
            }
        } else {
            assert_eq!(file, plain);
        }
    }
});
