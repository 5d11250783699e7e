//! [`MpiTransport`]: the round protocol's [`Transport`] over MPI. See the [crate docs](crate).

use crate::error::MpiError;
use gradcast_core::round::{LocalPackets, RemotePackets, RoundConfig, Transport};
use mpi::datatype::Equivalence;
use mpi::environment::Threading;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::os::raw::{c_int, c_void};
use std::time::Instant;

/// The first word of every packet table: "gcmp" and the table format's version (1).
const TABLE_MAGIC: u64 = 0x6763_6d70_0000_0001;
/// Words before the `(sender, len)` pairs: magic, round, status, count, parties, max packet.
const HEADER_WORDS: usize = 6;

/// Bytes one rank contributes to, and receives from, the MPI transport's rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Rounds exchanged successfully.
    pub rounds: u64,
    /// Bytes of this rank's packets sent (each round's gathered payload from this rank).
    pub packet_bytes_sent: u64,
    /// Bytes of the other ranks' packets received.
    pub packet_bytes_received: u64,
    /// Bytes of this rank's packet tables sent (fixed size per round).
    pub table_bytes_sent: u64,
    /// Nanoseconds spent in the exchange (both collective calls and the copies).
    pub exchange_ns: u64,
}

impl ExchangeStats {
    /// What this rank put on the wire over all rounds: its packets and its tables.
    pub fn bytes_sent(&self) -> u64 {
        self.packet_bytes_sent + self.table_bytes_sent
    }

    /// Mean bytes this rank put on the wire per round (0 before the first round).
    pub fn bytes_sent_per_round(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.bytes_sent() as f64 / self.rounds as f64
        }
    }
}

/// A duplicate of the user's communicator, with errors returned instead of fatal.
struct Comm(SimpleCommunicator);

// SAFETY: an MPI communicator handle may be used from any thread as long as MPI was
// initialized with `Threading::Serialized` or higher and no two threads call MPI at once.
// `MpiTransport::new` refuses a lower level, and the transport only touches the handle
// through `&mut self` (the round protocol calls `exchange` from one thread at a time) or
// `&self` methods that make no MPI calls.
unsafe impl Send for Comm {}

/// The round protocol's [`Transport`] over an MPI communicator; see the [crate docs](crate).
///
/// Every rank runs `parties` local parties (the same number on every rank); rank `r`'s
/// party `j` sends as global id `r * parties + j` ([`MpiTransport::first_sender`]). Each
/// round is two collective calls: an `MPI_Allgather` of fixed-size packet tables, then an
/// `MPI_Allgatherv` of the packets' bytes. Every buffer is sized once, at construction.
pub struct MpiTransport {
    comm: Comm,
    rank: usize,
    size: usize,
    parties: usize,
    max_packet_len: usize,
    table_words: usize,
    /// This rank's table.
    table: Vec<u64>,
    /// Every rank's table, rank order.
    tables: Vec<u64>,
    counts: Vec<c_int>,
    displs: Vec<c_int>,
    /// This rank's packets back to back: `parties * max_packet_len` bytes.
    send: Vec<u8>,
    /// Every rank's packets, rank order: `size * parties * max_packet_len` bytes.
    recv: Vec<u8>,
    stats: ExchangeStats,
}

impl std::fmt::Debug for MpiTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiTransport")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("parties", &self.parties)
            .field("max_packet_len", &self.max_packet_len)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MpiTransport {
    /// A transport over a duplicate of `comm` (so its collective calls never mix with the
    /// caller's), with `parties` local parties on every rank and packets of at most
    /// `max_packet_len` bytes (the encoders' [`max_packet_len`] for the vector's length).
    ///
    /// Collective: every rank of `comm` calls it. MPI must be initialized with
    /// [`Threading::Serialized`] or higher, because the round protocol calls the transport
    /// from whichever local party leads the round.
    ///
    /// # Errors
    /// [`MpiError::Config`]: no parties, a threading level below `Serialized`, more than
    /// 2^32 sender ids, buffers beyond MPI's 32-bit counts; [`MpiError::Mpi`] when the
    /// error handler cannot be set.
    ///
    /// [`max_packet_len`]: gradcast_core::packet::PartyEncoder::max_packet_len
    pub fn new<C: Communicator>(
        comm: &C,
        parties: usize,
        max_packet_len: usize,
    ) -> Result<Self, MpiError> {
        let config = |reason: String| Err(MpiError::Config { reason });
        if parties == 0 {
            return config("at least one party per rank is needed".into());
        }
        let threading = mpi::environment::threading_support();
        if threading < Threading::Serialized {
            return config(format!(
                "MPI was initialized with threading level {threading:?}; the transport needs \
                 Serialized or Multiple (mpi::initialize_with_threading)"
            ));
        }
        let size = comm.size() as usize;
        let rank = comm.rank() as usize;
        let senders = (size as u64).checked_mul(parties as u64);
        if senders.is_none_or(|s| s > u32::MAX as u64 + 1) {
            return config(format!(
                "{size} ranks x {parties} parties exceed the 32-bit sender ids"
            ));
        }
        let per_rank = parties.checked_mul(max_packet_len);
        let total = per_rank.and_then(|b| b.checked_mul(size));
        if total.is_none_or(|t| t > c_int::MAX as usize) {
            return config(format!(
                "{size} ranks x {parties} parties x {max_packet_len} bytes exceed MPI's 32-bit \
                 counts (2 GiB per round)"
            ));
        }
        let table_words = HEADER_WORDS + 2 * parties;
        if table_words
            .checked_mul(size)
            .is_none_or(|w| w > c_int::MAX as usize)
        {
            return config("the packet tables exceed MPI's 32-bit counts".into());
        }

        let dup = comm.duplicate();
        // SAFETY: `dup` is a live communicator owned here; RSMPI_ERRORS_RETURN is the
        // predefined handler, valid for the whole MPI session.
        let rc = unsafe { ffi::MPI_Comm_set_errhandler(dup.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
        MpiError::check("MPI_Comm_set_errhandler", rc)?;

        Ok(MpiTransport {
            comm: Comm(dup),
            rank,
            size,
            parties,
            max_packet_len,
            table_words,
            table: vec![0; table_words],
            tables: vec![0; table_words * size],
            counts: vec![0; size],
            displs: vec![0; size],
            send: vec![0; per_rank.unwrap_or(0)],
            recv: vec![0; total.unwrap_or(0)],
            stats: ExchangeStats::default(),
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Local parties per rank.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// The largest packet in bytes.
    pub fn max_packet_len(&self) -> usize {
        self.max_packet_len
    }

    /// The global sender id of this rank's party 0: `rank * parties`.
    pub fn first_sender(&self) -> u32 {
        self.first_sender_of(self.rank)
    }

    /// The global sender id of `rank`'s party 0.
    pub fn first_sender_of(&self, rank: usize) -> u32 {
        (rank * self.parties) as u32
    }

    /// Every sender id: `size * parties` (the number of replicas in the whole job).
    pub fn total_senders(&self) -> usize {
        self.size * self.parties
    }

    /// A round configuration for vectors of `n` elements with this rank's parties and
    /// sender range (sum, rounds from 0; adjust the other fields as needed).
    pub fn round_config(&self, n: usize) -> RoundConfig {
        RoundConfig {
            first_sender: self.first_sender(),
            ..RoundConfig::new(self.parties, n)
        }
    }

    /// Bytes sent and received so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// The size of one rank's packet table in bytes (sent every round).
    pub fn table_bytes(&self) -> usize {
        self.table_words * 8
    }

    /// Fills this rank's table from `local`, or reports why it cannot (the table then
    /// carries the failure to the other ranks).
    fn fill_table(&mut self, round: u64, local: &LocalPackets<'_>) -> Result<usize, MpiError> {
        let first = self.first_sender();
        self.table.fill(0);
        self.table[0] = TABLE_MAGIC;
        self.table[1] = round;
        self.table[4] = self.parties as u64;
        self.table[5] = self.max_packet_len as u64;
        if local.len() > self.parties {
            return Err(MpiError::LocalOrder {
                round,
                reason: "outnumber the parties",
            });
        }
        let mut used = 0;
        let mut last: Option<u32> = None;
        for (i, p) in local.iter().enumerate() {
            if p.sender < first || (p.sender - first) as usize >= self.parties {
                return Err(MpiError::NotLocalSender {
                    round,
                    sender: p.sender,
                    first,
                    parties: self.parties,
                });
            }
            if last.is_some_and(|l| l >= p.sender) {
                return Err(MpiError::LocalOrder {
                    round,
                    reason: "are not in strictly ascending sender order",
                });
            }
            last = Some(p.sender);
            if p.bytes.len() > self.max_packet_len {
                return Err(MpiError::PacketTooLarge {
                    round,
                    sender: p.sender,
                    len: p.bytes.len(),
                    max: self.max_packet_len,
                });
            }
            self.send[used..used + p.bytes.len()].copy_from_slice(p.bytes);
            used += p.bytes.len();
            self.table[HEADER_WORDS + 2 * i] = p.sender as u64;
            self.table[HEADER_WORDS + 2 * i + 1] = p.bytes.len() as u64;
        }
        self.table[3] = local.len() as u64;
        Ok(used)
    }

    /// Checks every rank's table, in rank order, and sets the byte counts and
    /// displacements. Every rank holds the same tables, so every rank reaches the same
    /// verdict.
    fn check_tables(&mut self, round: u64) -> Result<(), MpiError> {
        let w = self.table_words;
        let round0 = self.tables[1];
        let mut displ: usize = 0;
        for q in 0..self.size {
            let t = &self.tables[q * w..(q + 1) * w];
            let mismatch = |field, expected, found| {
                Err(MpiError::ConfigMismatch {
                    rank: q,
                    field,
                    expected,
                    found,
                })
            };
            if t[0] != TABLE_MAGIC {
                return mismatch("table format", TABLE_MAGIC, t[0]);
            }
            if t[4] != self.parties as u64 {
                return mismatch("parties per rank", self.parties as u64, t[4]);
            }
            if t[5] != self.max_packet_len as u64 {
                return mismatch("largest packet", self.max_packet_len as u64, t[5]);
            }
            if t[2] != 0 {
                return Err(MpiError::PeerFailed {
                    rank: q,
                    round: t[1],
                    code: t[2],
                });
            }
            if t[1] != round0 {
                return Err(MpiError::RoundMismatch {
                    rank: q,
                    expected: round0,
                    found: t[1],
                });
            }
            let bad = |reason| {
                Err(MpiError::BadTable {
                    rank: q,
                    round,
                    reason,
                })
            };
            let count = t[3];
            if count > self.parties as u64 {
                return bad("more packets than parties");
            }
            let first = self.first_sender_of(q) as u64;
            let mut bytes: u64 = 0;
            let mut last: Option<u64> = None;
            for i in 0..count as usize {
                let (sender, len) = (t[HEADER_WORDS + 2 * i], t[HEADER_WORDS + 2 * i + 1]);
                if sender < first || sender - first >= self.parties as u64 {
                    return bad("a sender outside the rank's range");
                }
                if last.is_some_and(|l| l >= sender) {
                    return bad("senders not in strictly ascending order");
                }
                last = Some(sender);
                if len > self.max_packet_len as u64 {
                    return bad("a packet longer than the largest packet");
                }
                bytes += len;
            }
            // Bounded by parties * max_packet_len, which `new` checked against c_int.
            self.counts[q] = bytes as c_int;
            self.displs[q] = displ as c_int;
            displ += bytes as usize;
        }
        if round0 != round {
            // Only reachable on a rank whose own round differs from rank 0's, and then the
            // loop above already reported it; kept as a guard.
            return Err(MpiError::RoundMismatch {
                rank: self.rank,
                expected: round0,
                found: round,
            });
        }
        Ok(())
    }

    /// The first collective: every rank's table to every rank.
    fn gather_tables(&mut self) -> Result<(), MpiError> {
        let dt = u64::equivalent_datatype();
        // SAFETY: `table` holds `table_words` u64 values and `tables` holds `size` times as
        // many, exactly what MPI_Allgather with these counts reads and writes; the datatype
        // is MPI's u64 equivalent; the communicator is live. MPI writes at most the receive
        // counts given here, so even a rank built with another `parties` (another table
        // size: an erroneous program, which MPI may report as truncation) cannot make it
        // write past `tables`.
        let rc = unsafe {
            ffi::MPI_Allgather(
                self.table.as_ptr() as *const c_void,
                self.table_words as c_int,
                dt.as_raw(),
                self.tables.as_mut_ptr() as *mut c_void,
                self.table_words as c_int,
                dt.as_raw(),
                self.comm.0.as_raw(),
            )
        };
        MpiError::check("MPI_Allgather", rc)
    }

    /// The second collective: every rank's packets to every rank.
    fn gather_packets(&mut self, used: usize) -> Result<(), MpiError> {
        let dt = u8::equivalent_datatype();
        // SAFETY: the send buffer holds `used` initialized bytes (`used <= send.len()`);
        // `check_tables` set `counts` and `displs` from the tables every rank agrees on
        // (this rank's own count equals `used`), each range `displs[q]..displs[q] +
        // counts[q]` lies inside `recv` (the sum of the counts is at most `size * parties *
        // max_packet_len == recv.len()`), and the ranges do not overlap.
        let rc = unsafe {
            ffi::MPI_Allgatherv(
                self.send.as_ptr() as *const c_void,
                used as c_int,
                dt.as_raw(),
                self.recv.as_mut_ptr() as *mut c_void,
                self.counts.as_ptr(),
                self.displs.as_ptr(),
                dt.as_raw(),
                self.comm.0.as_raw(),
            )
        };
        MpiError::check("MPI_Allgatherv", rc)
    }
}

impl Transport for MpiTransport {
    type Error = MpiError;

    fn max_remote_packets(&self) -> usize {
        (self.size - 1) * self.parties
    }

    fn is_remote_sender(&self, sender: u32) -> bool {
        let s = sender as usize;
        s < self.total_senders() && s / self.parties != self.rank
    }

    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        remote: &mut RemotePackets<'_>,
    ) -> Result<(), MpiError> {
        let t0 = Instant::now();
        // A local failure still takes part in the table exchange (with a failure status),
        // so the other ranks learn of it instead of waiting forever in a collective call.
        let local_result = self.fill_table(round, local);
        let used = match &local_result {
            Ok(used) => *used,
            Err(e) => {
                self.table[2] = e.code();
                0
            }
        };
        self.gather_tables()?;
        let used = match local_result {
            Ok(_) => used,
            Err(e) => return Err(e),
        };
        self.check_tables(round)?;
        self.gather_packets(used)?;

        // Record the other ranks' packets in canonical (rank, local sender) order, which is
        // ascending global sender order.
        let w = self.table_words;
        let mut received = 0u64;
        for q in (0..self.size).filter(|&q| q != self.rank) {
            let t = &self.tables[q * w..(q + 1) * w];
            let mut at = self.displs[q] as usize;
            for i in 0..t[3] as usize {
                let sender = t[HEADER_WORDS + 2 * i] as u32;
                let len = t[HEADER_WORDS + 2 * i + 1] as usize;
                remote.push(sender, &self.recv[at..at + len])?;
                at += len;
                received += len as u64;
            }
        }
        self.stats.rounds += 1;
        self.stats.packet_bytes_sent += used as u64;
        self.stats.packet_bytes_received += received;
        self.stats.table_bytes_sent += self.table_bytes() as u64;
        self.stats.exchange_ns += t0.elapsed().as_nanos() as u64;
        Ok(())
    }
}
