//! Statistics: per segment and round ([`SegmentStats`]), per round ([`RoundStats`]) and since
//! the start of the run ([`CumulativeStats`]). Plain structs of numbers, copied out of the
//! encoder, ready to log or plot (DL4J issue 5931 asked for exactly this history).

use crate::wire::Encoding;

/// Equality field by field, floats by bit pattern: statistics use NaN for "no value" (a dense
/// round's threshold), and a round compares equal to itself.
trait Same {
    fn same(&self, other: &Self) -> bool;
}

impl Same for f32 {
    fn same(&self, other: &Self) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl Same for f64 {
    fn same(&self, other: &Self) -> bool {
        self.to_bits() == other.to_bits()
    }
}

macro_rules! same_by_eq {
    ($($t:ty),*) => {
        $(impl Same for $t {
            fn same(&self, other: &Self) -> bool {
                self == other
            }
        })*
    };
}

same_by_eq!(u16, u64, usize, bool, Encoding);

impl<T: Same> Same for Option<T> {
    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        }
    }
}

macro_rules! bitwise_eq {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                // Destructure so that a new field cannot be forgotten here.
                let $t { $($f),* } = self;
                true $(&& $f.same(&other.$f))*
            }
        }
    };
}

bitwise_eq!(SegmentStats {
    id,
    offset,
    len,
    tau,
    entries,
    candidates,
    density,
    encoding,
    truncated,
    warmup,
    message_bytes,
    dense_bytes,
    residual_sum_sq,
    residual_l2,
    residual_max,
    clipped_elements,
    clipped_mass,
});

bitwise_eq!(RoundStats {
    index,
    round,
    messages,
    warmup,
    tau,
    tau_max,
    encoding,
    sparse_messages,
    bitmap_messages,
    dense_messages,
    truncated_messages,
    n,
    entries,
    candidates,
    density,
    message_bytes,
    dense_bytes,
    residual_l2,
    residual_max,
    clipped_elements,
    clipped_mass,
});

bitwise_eq!(CumulativeStats {
    rounds,
    warmup_rounds,
    entries,
    candidates,
    message_bytes,
    dense_bytes,
    sparse_messages,
    bitmap_messages,
    dense_messages,
    truncated_messages,
    clipped_elements,
    clipped_mass,
});

/// What one round did to one segment.
///
/// Equality compares floats by bit pattern (NaN marks a dense message's absent threshold).
#[derive(Clone, Copy, Debug)]
pub struct SegmentStats {
    /// The segment id (0 for an unsegmented encoder).
    pub id: u16,
    /// The segment's first element.
    pub offset: usize,
    /// The segment's element count N.
    pub len: usize,
    /// The threshold of the message; NaN for a dense (warm-up) message, which has none.
    pub tau: f32,
    /// Elements sent: K (N for a dense message).
    pub entries: u64,
    /// Elements that reached the threshold before any cap (N for a dense message).
    pub candidates: u64,
    /// `entries / N`.
    pub density: f64,
    /// The encoding written.
    pub encoding: Encoding,
    /// Whether a cap left candidates in the residual.
    pub truncated: bool,
    /// Whether the round was a warm-up round.
    pub warmup: bool,
    /// The message's length in bytes, header included.
    pub message_bytes: usize,
    /// What the same values would take as plain f32: `4 N` bytes.
    pub dense_bytes: u64,
    /// Sum of squares of the residual after the round (commit and clipping), f64; `None`
    /// when residual statistics are off ([`EncoderConfig::residual_stats`]).
    ///
    /// [`EncoderConfig::residual_stats`]: super::EncoderConfig::residual_stats
    pub residual_sum_sq: Option<f64>,
    /// L2 norm of the residual after the round; `None` when residual statistics are off.
    pub residual_l2: Option<f64>,
    /// Largest absolute residual value after the round; `None` when residual statistics are
    /// off.
    pub residual_max: Option<f32>,
    /// Elements clipped this round.
    pub clipped_elements: u64,
    /// Mass clipped this round: the sum of `|x| - C tau` over the clipped elements.
    pub clipped_mass: f64,
}

/// What one round did to the whole vector (every segment).
///
/// Equality compares floats by bit pattern (NaN marks a dense message's absent threshold).
#[derive(Clone, Copy, Debug)]
pub struct RoundStats {
    /// The encoder's round index: rounds encoded before this one (warm-up and clipping
    /// schedules count in it).
    pub index: u64,
    /// The round number the caller passed (carried in the messages' headers).
    pub round: u64,
    /// Messages in the packet (one per segment).
    pub messages: u16,
    /// Whether the round was a warm-up round.
    pub warmup: bool,
    /// The threshold: the only segment's, or the smallest over the segments; NaN when every
    /// message was dense.
    pub tau: f32,
    /// The largest threshold over the segments; NaN when every message was dense.
    pub tau_max: f32,
    /// The encoding, when every message used the same one; `None` when they differ.
    pub encoding: Option<Encoding>,
    /// Sparse messages in the packet.
    pub sparse_messages: u16,
    /// Bitmap messages in the packet.
    pub bitmap_messages: u16,
    /// Dense messages in the packet.
    pub dense_messages: u16,
    /// Messages a cap truncated.
    pub truncated_messages: u16,
    /// The vector's element count N.
    pub n: u64,
    /// Elements sent, over all segments.
    pub entries: u64,
    /// Elements that reached their threshold, before caps.
    pub candidates: u64,
    /// `entries / N`.
    pub density: f64,
    /// The packet's length in bytes (every message, headers included).
    pub message_bytes: usize,
    /// What the vector would take as plain f32: `4 N` bytes.
    pub dense_bytes: u64,
    /// L2 norm of the whole residual after the round; `None` when residual statistics are off
    /// ([`EncoderConfig::residual_stats`]).
    ///
    /// [`EncoderConfig::residual_stats`]: super::EncoderConfig::residual_stats
    pub residual_l2: Option<f64>,
    /// Largest absolute residual value after the round; `None` when residual statistics are
    /// off.
    pub residual_max: Option<f32>,
    /// Elements clipped this round.
    pub clipped_elements: u64,
    /// Mass clipped this round (sum of `|x| - C tau` over the clipped elements).
    pub clipped_mass: f64,
}

impl RoundStats {
    /// `dense_bytes / message_bytes`: how many times smaller than plain f32 the packet was.
    pub fn compression(&self) -> f64 {
        self.dense_bytes as f64 / self.message_bytes.max(1) as f64
    }
}

/// Totals since the start of the run (restored from checkpoints).
///
/// Equality compares the clipped mass by bit pattern.
#[derive(Clone, Copy, Debug, Default)]
pub struct CumulativeStats {
    /// Rounds encoded.
    pub rounds: u64,
    /// Of which warm-up rounds.
    pub warmup_rounds: u64,
    /// Elements sent.
    pub entries: u64,
    /// Elements that reached their threshold, before caps.
    pub candidates: u64,
    /// Bytes of every packet.
    pub message_bytes: u64,
    /// What the same rounds would take as plain f32 (`4 N` per round).
    pub dense_bytes: u64,
    /// Sparse messages.
    pub sparse_messages: u64,
    /// Bitmap messages.
    pub bitmap_messages: u64,
    /// Dense messages.
    pub dense_messages: u64,
    /// Messages a cap truncated.
    pub truncated_messages: u64,
    /// Elements clipped.
    pub clipped_elements: u64,
    /// Mass clipped (sum of `|x| - C tau` over every clipped element).
    pub clipped_mass: f64,
}

impl CumulativeStats {
    /// `dense_bytes / message_bytes` over the run.
    pub fn compression(&self) -> f64 {
        self.dense_bytes as f64 / self.message_bytes.max(1) as f64
    }

    /// Adds one round.
    pub(crate) fn add(&mut self, r: &RoundStats) {
        self.rounds += 1;
        self.warmup_rounds += r.warmup as u64;
        self.entries += r.entries;
        self.candidates += r.candidates;
        self.message_bytes += r.message_bytes as u64;
        self.dense_bytes += r.dense_bytes;
        self.sparse_messages += r.sparse_messages as u64;
        self.bitmap_messages += r.bitmap_messages as u64;
        self.dense_messages += r.dense_messages as u64;
        self.truncated_messages += r.truncated_messages as u64;
        self.clipped_elements += r.clipped_elements;
        self.clipped_mass += r.clipped_mass;
    }
}
