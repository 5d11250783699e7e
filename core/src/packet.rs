//! Packets: what one party contributes to one round.
//!
//! A packet is zero or more wire messages laid end to end (each message says its own length),
//! so a party that splits its vector into segments sends one message per segment in one
//! packet, and the round protocol moves packets without looking inside. An empty packet is
//! valid: a party with nothing to say still takes part.
//!
//! [`PartyEncoder`] is the seam between the round protocol and whatever decides each round's
//! threshold and messages (the [`crate::codec`] with a fixed threshold, or the policy-driven
//! encoder).

use crate::backend::Backend;
use crate::codec::{self, EncodeParams};
use crate::error::WireError;
use crate::wire::{Header, MessageView};

/// Iterates over the messages of a packet, validating each; stops at the first error.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Messages<'a> {
    /// The messages of `packet`.
    pub fn new(packet: &'a [u8]) -> Self {
        Messages {
            rest: packet,
            failed: false,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<MessageView<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let item = Header::parse(self.rest).and_then(|h| {
            let len = h.message_len();
            if self.rest.len() < len {
                return Err(WireError::Truncated {
                    needed: len,
                    got: self.rest.len(),
                });
            }
            let (msg, rest) = self.rest.split_at(len);
            let view = MessageView::parse(msg)?;
            self.rest = rest;
            Ok(view)
        });
        if item.is_err() {
            self.failed = true;
        }
        Some(item)
    }
}

/// One message of a packet that [`check_packet`] validated: its header and where its bytes
/// lie in the packet, so that the packet need not be parsed again.
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked {
    header: Header,
    start: usize,
    len: usize,
}

#[cfg(feature = "alloc")]
impl Checked {
    /// The message, as a view into `packet`, which must be the bytes [`check_packet`]
    /// validated (same slice or a copy of it).
    pub(crate) fn view<'a>(&self, packet: &'a [u8]) -> MessageView<'a> {
        MessageView::from_parsed(self.header, &packet[self.start..self.start + self.len])
    }

    /// The message's header.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// Where the message starts in its packet.
    pub(crate) fn start(&self) -> usize {
        self.start
    }
}

/// Parses and validates every message of `packet` once (header, checksum, payload), and
/// appends what a decoder needs to `out`, with start offsets shifted by `offset` (the
/// packet's place in a larger buffer).
///
/// # Errors
/// The first message's parse error; `out` then holds the messages before it.
#[cfg(feature = "alloc")]
pub(crate) fn check_packet(
    packet: &[u8],
    offset: usize,
    out: &mut alloc::vec::Vec<Checked>,
) -> Result<(), WireError> {
    let mut at = 0;
    for m in Messages::new(packet) {
        let view = m?;
        let len = view.as_bytes().len();
        out.push(Checked {
            header: *view.header(),
            start: offset + at,
            len,
        });
        at += len;
    }
    Ok(())
}

/// Validates every message of a packet and returns how many it holds.
///
/// # Errors
/// The first message's parse error.
pub fn validate(packet: &[u8]) -> Result<usize, WireError> {
    let mut n = 0;
    for m in Messages::new(packet) {
        m?;
        n += 1;
    }
    Ok(n)
}

/// Decides a party's messages for a round and commits its residual: the round protocol calls
/// it once per party per round.
pub trait PartyEncoder<B: Backend> {
    /// The largest packet [`PartyEncoder::encode_round`] writes for a vector of `n` elements;
    /// the round protocol sizes its slots with it once.
    fn max_packet_len(&self, n: usize) -> usize;

    /// Encodes `residual` for `round` as party `sender` into `out`, debits exactly what the
    /// packet carries, and returns the packet's length in bytes.
    ///
    /// # Errors
    /// The backend's errors; on error the residual must be unchanged.
    fn encode_round(
        &mut self,
        backend: &B,
        residual: &mut B::Buffer,
        sender: u32,
        round: u64,
        out: &mut [u8],
    ) -> Result<usize, B::Error>;
}

/// The simplest [`PartyEncoder`]: one message per round for the whole vector, at a fixed
/// threshold, automatic encoding, optional cap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedEncoder {
    /// The threshold.
    pub tau: f32,
    /// Optional cap on entries per message.
    pub cap: Option<u32>,
}

impl FixedEncoder {
    /// A fixed-threshold encoder without a cap.
    pub fn new(tau: f32) -> Self {
        FixedEncoder { tau, cap: None }
    }
}

impl<B: Backend> PartyEncoder<B> for FixedEncoder {
    fn max_packet_len(&self, n: usize) -> usize {
        crate::wire::max_message_len(n)
    }

    fn encode_round(
        &mut self,
        backend: &B,
        residual: &mut B::Buffer,
        sender: u32,
        round: u64,
        out: &mut [u8],
    ) -> Result<usize, B::Error> {
        let params = EncodeParams {
            sender,
            round,
            cap: self.cap,
            ..EncodeParams::new(self.tau)
        };
        codec::check_tau(self.tau)?;
        Ok(backend.encode(residual, &params, out)?.bytes)
    }
}
