//! The CLI's MNIST IDX reader (`--data idx:DIR`): never panics; what it accepts has exactly the
//! element count its dimensions announce, and writes back to the same bytes.
//!
//! The reader is `cli/src/idx.rs`, which depends on `std` only: it is compiled into this target
//! by path, so fuzzing it does not build the CLI (candle, plotters) under the sanitizer.
#![no_main]

#[path = "../../cli/src/idx.rs"]
mod idx;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dims in [1usize, 3] {
        if let Ok(i) = idx::parse_idx(data, dims) {
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
    }
});
