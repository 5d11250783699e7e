//! A sequential Rust model of the count, scan and encode kernels (one loop per block, warp and
//! lane, ballots as bit masks), run against the reference codec. It checks, without a GPU,
//! the parts of the design that are arithmetic rather than CUDA: tile offsets, ranks from
//! ballots, the selection rule of a capped cyclic scan, the head count, and the bitmap word
//! layout. The device tests then check the CUDA code itself on a GPU.

use crate::kernels::{BLOCK, ITEMS, TILE};
use gradcast_core::codec::{self, EncodeParams, EncodingMode, Plan, SegmentRef};
use gradcast_core::wire::{self, Encoding, HEADER_LEN};

const WARPS: usize = BLOCK as usize / 32;

/// gc_count_tiles: (tile counts, first non-finite index).
fn count_tiles(x: &[f32], tau: f32) -> (Vec<u32>, Option<usize>) {
    let tiles = x.len().div_ceil(TILE);
    let mut counts = vec![0u32; tiles];
    let mut bad: Option<usize> = None;
    for (t, c) in counts.iter_mut().enumerate() {
        for r in 0..ITEMS as usize {
            for tid in 0..BLOCK as usize {
                let i = t * TILE + r * BLOCK as usize + tid;
                if i < x.len() {
                    if !x[i].is_finite() {
                        bad = Some(bad.map_or(i, |b| b.min(i)));
                    } else if x[i].abs() >= tau {
                        *c += 1;
                    }
                }
            }
        }
    }
    (counts, bad)
}

/// gc_scan_tiles: exclusive prefix sums and the total.
fn scan(counts: &[u32]) -> (Vec<u32>, u64) {
    let mut run = 0u64;
    let offsets = counts
        .iter()
        .map(|&c| {
            let o = run as u32;
            run += c as u64;
            o
        })
        .collect();
    (offsets, run)
}

/// gc_head_count.
fn head_count(x: &[f32], start: usize, tau: f32, offsets: &[u32]) -> u64 {
    let tile = start / TILE;
    let partial = x[tile * TILE..start]
        .iter()
        .filter(|v| v.abs() >= tau)
        .count();
    offsets[tile] as u64 + partial as u64
}

/// gc_select.
fn select(rank: u32, take_head: u32, c_head: u32, take_tail: u32) -> Option<u32> {
    if rank < take_head {
        Some(rank)
    } else if rank >= c_head && rank - c_head < take_tail {
        Some(take_head + (rank - c_head))
    } else {
        None
    }
}

fn spread16(v: u32) -> u32 {
    let mut v = v & 0xFFFF;
    v = (v | (v << 8)) & 0x00FF_00FF;
    v = (v | (v << 4)) & 0x0F0F_0F0F;
    v = (v | (v << 2)) & 0x3333_3333;
    v = (v | (v << 1)) & 0x5555_5555;
    v
}

enum Payload<'a> {
    Sparse(&'a mut [i32]),
    Bitmap(&'a mut [u32]),
}

/// gc_encode_sparse / gc_encode_bitmap: gc_rank_tile, then the per-round selection.
fn encode_tiles(
    x: &mut [f32],
    tau: f32,
    offsets: &[u32],
    (take_head, c_head, take_tail): (u32, u32, u32),
    mut payload: Payload<'_>,
) {
    let n = x.len();
    for (t, &offset) in offsets.iter().enumerate() {
        let base = t * TILE;
        // Ballots per round and warp, and the shared warp counts.
        let mut ballots = [[0u32; WARPS]; ITEMS as usize];
        for (r, round) in ballots.iter_mut().enumerate() {
            for (w, ballot) in round.iter_mut().enumerate() {
                for lane in 0..32 {
                    let i = base + r * BLOCK as usize + w * 32 + lane;
                    if i < n && x[i].abs() >= tau {
                        *ballot |= 1 << lane;
                    }
                }
            }
        }
        let mut run = offset;
        for (r, round) in ballots.iter().enumerate() {
            let mut before = run;
            for (w, &ballot) in round.iter().enumerate() {
                let first = base + r * BLOCK as usize + w * 32;
                let (mut pos, mut neg) = (0u32, 0u32);
                for lane in 0..32 {
                    if (ballot >> lane) & 1 == 0 {
                        continue;
                    }
                    let rank = before + (ballot & ((1u32 << lane) - 1)).count_ones();
                    let Some(slot) = select(rank, take_head, c_head, take_tail) else {
                        continue;
                    };
                    let i = first + lane;
                    let e = (i + 1) as i32;
                    match &mut payload {
                        Payload::Sparse(entries) => {
                            entries[slot as usize] = if x[i] > 0.0 { e } else { -e };
                        }
                        Payload::Bitmap(_) => {
                            if x[i] > 0.0 {
                                pos |= 1 << lane;
                            } else {
                                neg |= 1 << lane;
                            }
                        }
                    }
                    codec::debit(&mut x[i], tau);
                }
                if let Payload::Bitmap(words) = &mut payload {
                    for lane in 0..2 {
                        let w = first / 16 + lane;
                        if w < words.len() {
                            let (p, q) = if lane == 0 {
                                (pos & 0xFFFF, neg & 0xFFFF)
                            } else {
                                (pos >> 16, neg >> 16)
                            };
                            words[w] = spread16(p) | (spread16(q) << 1);
                        }
                    }
                }
                before += ballot.count_ones();
            }
            run = before;
        }
    }
}

/// The device encode's host orchestration over the model kernels.
fn model_encode(
    residual: &mut [f32],
    params: &EncodeParams,
    out: &mut [u8],
) -> Result<usize, gradcast_core::Error> {
    codec::check_tau(params.tau)?;
    let range = codec::segment_range(params, residual.len())?;
    let tau = params.tau;
    let seg = &mut residual[range.clone()];
    let n = seg.len();
    let (counts, bad) = count_tiles(seg, tau);
    if let Some(i) = bad {
        return Err(gradcast_core::Error::Codec(
            gradcast_core::CodecError::NonFinite {
                index: range.start + i,
                bits: seg[i].to_bits(),
            },
        ));
    }
    let (offsets, total) = scan(&counts);
    let candidates = total as usize;
    let mut c_head = 0;
    let plan = Plan::new(params, n, candidates, out.len(), |start| {
        c_head = head_count(seg, start, tau, &offsets) as usize;
        candidates - c_head
    })?;
    let sel = (plan.take_head as u32, c_head as u32, plan.take_tail as u32);
    let payload = &mut out[HEADER_LEN..plan.bytes];
    match plan.encoding {
        Encoding::Dense => {
            for (x, c) in seg.iter_mut().zip(payload.chunks_exact_mut(4)) {
                c.copy_from_slice(&x.to_le_bytes());
                *x = 0.0;
            }
        }
        Encoding::Sparse => {
            let mut entries = vec![0i32; plan.entries];
            encode_tiles(seg, tau, &offsets, sel, Payload::Sparse(&mut entries));
            for (e, c) in entries.iter().zip(payload.chunks_exact_mut(4)) {
                c.copy_from_slice(&e.to_le_bytes());
            }
        }
        Encoding::Bitmap => {
            let mut words = vec![0u32; n.div_ceil(16)];
            encode_tiles(seg, tau, &offsets, sel, Payload::Bitmap(&mut words));
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            payload.copy_from_slice(&bytes[..payload.len()]);
        }
    }
    Ok(wire::seal(out, plan.header(params, n)))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn the_kernel_model_matches_the_reference_codec() {
    let mut rng = Rng(0xDEAD_BEEF);
    let tau = 0.5f32;
    let mut cases = 0;
    for &n in &[1usize, 3, 16, 17, 31, 33, 4095, 4096, 4097, 9000, 20_000] {
        for &per_mille in &[0u64, 2, 50, 300, 1000] {
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let r = rng.next();
                    if r % 1000 < per_mille {
                        let m = tau * (1.0 + (r >> 40) as f32 / (1u64 << 24) as f32);
                        match (r >> 8) % 4 {
                            0 => tau,
                            1 => -tau,
                            2 => m,
                            _ => -m,
                        }
                    } else {
                        tau * ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    }
                })
                .collect();
            for mode in [
                EncodingMode::Auto,
                EncodingMode::Sparse,
                EncodingMode::Bitmap,
                EncodingMode::Dense,
            ] {
                for cap in [None, Some(0u32), Some(1), Some(5), Some((n / 3) as u32)] {
                    for segment in [
                        None,
                        Some(SegmentRef {
                            id: 1,
                            offset: n / 4,
                            len: n - n / 4,
                        }),
                    ] {
                        let mut p = EncodeParams::new(tau);
                        p.mode = mode;
                        p.cap = cap;
                        p.round = rng.next() % 10_000;
                        p.segment = segment.filter(|s| s.len > 0);
                        let len = wire::dense_message_len(n);
                        let (mut want_res, mut got_res) = (v.clone(), v.clone());
                        let (mut want, mut got) = (vec![0u8; len], vec![0u8; len]);
                        let w = codec::encode(&mut want_res, &p, &mut want);
                        let g = model_encode(&mut got_res, &p, &mut got);
                        match (w, g) {
                            (Ok(w), Ok(g)) => {
                                assert_eq!(g, w.bytes);
                                assert_eq!(got[..g], want[..g], "n={n} {p:?}");
                            }
                            (w, g) => assert_eq!(g.err(), w.err(), "n={n} {p:?}"),
                        }
                        let (a, b): (Vec<u32>, Vec<u32>) = (
                            got_res.iter().map(|x| x.to_bits()).collect(),
                            want_res.iter().map(|x| x.to_bits()).collect(),
                        );
                        assert_eq!(a, b, "residual n={n} {p:?}");
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 1000);
}

#[test]
fn the_model_reports_the_first_non_finite_value() {
    let mut v = vec![1.0f32; 3 * TILE];
    v[2 * TILE + 5] = f32::NAN;
    v[TILE + 7] = f32::INFINITY;
    let (_, bad) = count_tiles(&v, 0.5);
    assert_eq!(bad, Some(TILE + 7));
}
