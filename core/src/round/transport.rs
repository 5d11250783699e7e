//! The [`Transport`] seam: how a node's round meets the other nodes' packets.
//!
//! Once per round, the party that leads the round's first barrier calls
//! [`Transport::exchange`] with this node's packets ([`LocalPackets`], each with its global
//! sender id, in sender order) and storage sized once at construction ([`RemotePackets`]).
//! The transport sends the local packets to the other nodes and fills the storage with
//! theirs. The accumulator then validates every remote packet (each message parses, names
//! the sender it arrived for and this round, fits the vector; no sender twice, no sender
//! the transport does not know) before any party decodes anything, so a bad remote packet
//! is a typed error in every party, never a half-applied round.
//!
//! [`Local`] is the transport of a single node (nothing to exchange); [`super::Loopback`]
//! (feature `alloc`) connects several accumulators in one process, for tests; an MPI
//! transport implements the same trait in its own crate.
//!
//! # Implementing a transport
//!
//! ```
//! use gradcast_core::round::{LocalPackets, RemotePackets, Transport};
//! use gradcast_core::Error;
//!
//! /// Receives the packets of one remote sender (id 100) from somewhere.
//! struct OneRemote {
//!     packet: Vec<u8>,
//! }
//!
//! impl Transport for OneRemote {
//!     type Error = Error;
//!     fn max_remote_packets(&self) -> usize {
//!         1
//!     }
//!     fn is_remote_sender(&self, sender: u32) -> bool {
//!         sender == 100
//!     }
//!     fn exchange(
//!         &mut self,
//!         _round: u64,
//!         local: &LocalPackets<'_>,
//!         remote: &mut RemotePackets<'_>,
//!     ) -> Result<(), Error> {
//!         for p in local.iter() {
//!             let _ = (p.sender, p.bytes); // send them
//!         }
//!         remote.push(100, &self.packet) // or `reserve` and receive in place
//!     }
//! }
//! ```

use crate::barrier::Poison;
use crate::error::{Classify, Error};
use crate::error::{CodecError, ProtocolError};
use core::fmt;

/// One local packet of the round: the global sender id and the packet's bytes (zero or more
/// messages laid end to end; see [`crate::packet`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalPacket<'a> {
    /// The sending party's global id.
    pub sender: u32,
    /// The packet.
    pub bytes: &'a [u8],
}

/// This node's packets of one round, in ascending sender order, borrowed without copies
/// from the parties' slots.
#[derive(Clone, Copy)]
pub struct LocalPackets<'a> {
    inner: Inner<'a>,
}

#[derive(Clone, Copy)]
enum Inner<'a> {
    #[cfg(feature = "alloc")]
    Slots {
        slots: &'a [super::accumulator::PacketSlot],
        order: &'a [u32],
        first_sender: u32,
    },
    Slice(&'a [LocalPacket<'a>]),
}

impl<'a> LocalPackets<'a> {
    /// A view of caller-held packets (for testing a transport without an accumulator).
    /// They should be in ascending sender order, as the accumulator gives them.
    pub fn from_slice(packets: &'a [LocalPacket<'a>]) -> Self {
        LocalPackets {
            inner: Inner::Slice(packets),
        }
    }

    #[cfg(feature = "alloc")]
    pub(crate) fn from_slots(
        slots: &'a [super::accumulator::PacketSlot],
        order: &'a [u32],
        first_sender: u32,
    ) -> Self {
        LocalPackets {
            inner: Inner::Slots {
                slots,
                order,
                first_sender,
            },
        }
    }

    /// The number of local packets.
    pub fn len(&self) -> usize {
        match self.inner {
            #[cfg(feature = "alloc")]
            Inner::Slots { order, .. } => order.len(),
            Inner::Slice(s) => s.len(),
        }
    }

    /// Whether no local party contributed this round.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th packet in sender order.
    pub fn get(&self, i: usize) -> Option<LocalPacket<'a>> {
        match self.inner {
            #[cfg(feature = "alloc")]
            Inner::Slots {
                slots,
                order,
                first_sender,
            } => {
                let party = *order.get(i)?;
                // SAFETY: a `LocalPackets` over slots only exists inside the lead action of
                // the round's first barrier, where every contributor has published (its
                // writes happen before its arrival) and nobody writes a slot until the
                // round's second barrier has completed.
                let bytes = unsafe { slots[party as usize].bytes() };
                Some(LocalPacket {
                    sender: first_sender + party,
                    bytes,
                })
            }
            Inner::Slice(s) => s.get(i).copied(),
        }
    }

    /// The packets in ascending sender order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = LocalPacket<'a>> + '_ {
        (0..self.len()).map(move |i| self.get(i).expect("index below len"))
    }

    /// The total length of the local packets in bytes.
    pub fn total_bytes(&self) -> usize {
        self.iter().map(|p| p.bytes.len()).sum()
    }
}

impl fmt::Debug for LocalPackets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|p| (p.sender, p.bytes.len())))
            .finish()
    }
}

/// Where one remote packet lies in a [`RemotePackets`] arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The global sender id the transport received the packet for.
    pub sender: u32,
    /// The packet's first byte in the arena.
    pub start: usize,
    /// The packet's length in bytes.
    pub len: usize,
}

/// Storage for one round's remote packets, sized once: a byte arena and a table of entries.
///
/// A transport fills it with [`RemotePackets::push`] (copy), [`RemotePackets::reserve`]
/// (receive one packet in place), or [`RemotePackets::spare`] followed by
/// [`RemotePackets::commit`] (receive several packets back to back in one call, an MPI
/// `allgatherv` say). Nothing here allocates.
#[derive(Debug)]
pub struct RemotePackets<'a> {
    arena: &'a mut [u8],
    used: usize,
    entries: &'a mut [RemoteEntry],
    count: usize,
}

impl<'a> RemotePackets<'a> {
    /// Empty storage over caller-provided memory: at most `entries.len()` packets of
    /// `arena.len()` bytes in all.
    pub fn new(arena: &'a mut [u8], entries: &'a mut [RemoteEntry]) -> Self {
        RemotePackets {
            arena,
            used: 0,
            entries,
            count: 0,
        }
    }

    /// Records a packet of `sender` by copying `bytes` into the arena.
    ///
    /// # Errors
    /// [`ProtocolError::TooManyRemotePackets`], [`CodecError::BufferTooSmall`] (arena full).
    pub fn push(&mut self, sender: u32, bytes: &[u8]) -> Result<(), Error> {
        self.reserve(sender, bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// Records a packet of `sender` of `len` bytes and returns its bytes to receive into.
    ///
    /// # Errors
    /// As [`RemotePackets::push`].
    pub fn reserve(&mut self, sender: u32, len: usize) -> Result<&mut [u8], Error> {
        let start = self.used;
        self.commit(sender, len)?;
        Ok(&mut self.arena[start..start + len])
    }

    /// The unused part of the arena. Receive packets into it back to back, then record each
    /// with [`RemotePackets::commit`], in the order they lie there.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.arena[self.used..]
    }

    /// Records the next `len` bytes of [`RemotePackets::spare`] as a packet of `sender`.
    ///
    /// # Errors
    /// As [`RemotePackets::push`].
    pub fn commit(&mut self, sender: u32, len: usize) -> Result<(), Error> {
        if self.count == self.entries.len() {
            return Err(ProtocolError::TooManyRemotePackets {
                max: self.entries.len(),
            }
            .into());
        }
        let free = self.arena.len() - self.used;
        if len > free {
            return Err(CodecError::BufferTooSmall {
                needed: self.used + len,
                got: self.arena.len(),
            }
            .into());
        }
        self.entries[self.count] = RemoteEntry {
            sender,
            start: self.used,
            len,
        };
        self.count += 1;
        self.used += len;
        Ok(())
    }

    /// The number of packets recorded.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no packet is recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The most packets this storage holds.
    pub fn max_packets(&self) -> usize {
        self.entries.len()
    }

    /// The arena's size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Bytes recorded so far.
    pub fn bytes_used(&self) -> usize {
        self.used
    }

    /// The recorded packets, as `(sender, bytes)`, in the order recorded.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, &[u8])> + '_ {
        self.entries[..self.count]
            .iter()
            .map(|e| (e.sender, &self.arena[e.start..e.start + e.len]))
    }

    /// Forgets every packet (the accumulator does this before each exchange).
    pub fn clear(&mut self) {
        self.used = 0;
        self.count = 0;
    }

    /// `(packets, bytes)` recorded.
    #[cfg(feature = "alloc")]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.count, self.used)
    }
}

/// Exchanges one round's local packets for the remote ones. See the [module docs](self).
///
/// Implementations are called from one thread at a time (the round's leader), with `&mut
/// self`; they need `Send` to be moved into a multi-threaded accumulator, not `Sync`.
pub trait Transport {
    /// The transport's error type. Core errors (storage full) convert into it.
    type Error: From<Error> + Classify + fmt::Debug + fmt::Display;

    /// The most remote packets one round can bring: the number of sender ids on other
    /// nodes. Sizes [`RemotePackets`] once (with the encoder's largest packet).
    fn max_remote_packets(&self) -> usize;

    /// Whether `sender` is the global id of a party on another node. Remote packets from any
    /// other id are rejected ([`ProtocolError::UnknownSender`], or [`ProtocolError::DuplicateSender`] for a
    /// local id).
    fn is_remote_sender(&self, sender: u32) -> bool;

    /// Sends `local` (this round's packets of this node, ascending sender order) and records
    /// every remote packet of `round` in `remote` (cleared beforehand).
    ///
    /// # Errors
    /// Whatever the transport reports; the round is then poisoned, and every local party
    /// returns an error naming the failure.
    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        remote: &mut RemotePackets<'_>,
    ) -> Result<(), Self::Error>;

    /// Tells the other nodes that this node will not exchange `round`: a local failure
    /// (`poison` says which party, and how) poisoned the round before its exchange. The other
    /// nodes' exchanges of `round` should then fail with an error naming this node and the
    /// cause, instead of waiting for it.
    ///
    /// The accumulator calls it at most once per round, from whichever party first sees the
    /// poison, with exclusive access to the transport (never during an exchange), and only
    /// when this node has not exchanged `round`: after a failure in a round already
    /// exchanged, the other nodes learn of it by waiting for this node in the next round (up
    /// to their timeout). Its own bound is the transport's. It reports nothing back: the
    /// failing party already returns its own error, and a transport that cannot reach its
    /// peers remembers that for its next call.
    ///
    /// The default does nothing, for transports without peers ([`Local`]) or whose peers
    /// learn of failures otherwise; their peers then wait until their own timeout.
    fn fail_round(&mut self, round: u64, poison: &Poison) {
        let _ = (round, poison);
    }
}

/// The transport of a single node: no remote parties, nothing to exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Local;

impl Transport for Local {
    type Error = Error;

    fn max_remote_packets(&self) -> usize {
        0
    }

    fn is_remote_sender(&self, _sender: u32) -> bool {
        false
    }

    fn exchange(
        &mut self,
        _round: u64,
        _local: &LocalPackets<'_>,
        _remote: &mut RemotePackets<'_>,
    ) -> Result<(), Error> {
        Ok(())
    }
}
