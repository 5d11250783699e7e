//! [`MpiTransport`]: the round protocol's [`Transport`] over MPI. See the [crate docs](crate).

use crate::error::{MpiError, PeerCause, decode_cause, encode_cause};
use crate::wait::{DEFAULT_TIMEOUT, Requests};
use gradcast_core::barrier::Poison;
use gradcast_core::round::{LocalPackets, RemotePackets, RoundConfig, Transport};
use mpi::datatype::Equivalence;
use mpi::environment::Threading;
use mpi::ffi;
use mpi::raw::{AsRaw, FromRaw};
use mpi::topology::{Communicator, SimpleCommunicator};
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

/// The first word of every packet table: "gcmp" and the table format's version (2).
const TABLE_MAGIC: u64 = 0x6763_6d70_0000_0002;
/// Words before the `(sender, len)` pairs: magic, round, status, count, parties, max packet,
/// then four words of failure cause (see [`encode_cause`]).
const HEADER_WORDS: usize = 10;
/// `status` word: the rank's packets follow.
const STATUS_OK: u64 = 0;
/// `status` word: the rank's transport refused its own packets; word 6 holds the code.
const STATUS_REFUSED: u64 = 1;
/// `status` word: a local failure poisoned the rank's round; words 6..10 hold the cause.
const STATUS_POISONED: u64 = 2;
/// Message tags on the transport's private communicator.
const TAG_TABLE: c_int = 1;
const TAG_PACKETS: c_int = 2;

/// Bytes one rank contributes to, and receives from, the MPI transport's rounds.
///
/// "Sent" counts this rank's contribution once per round (its packets, its table), as an
/// allgather's input is counted; each goes to every other rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Rounds exchanged successfully.
    pub rounds: u64,
    /// Bytes of this rank's packets (each round's payload from this rank).
    pub packet_bytes_sent: u64,
    /// Bytes of the other ranks' packets received.
    pub packet_bytes_received: u64,
    /// Bytes of this rank's packet tables (fixed size per round, failure reports included).
    pub table_bytes_sent: u64,
    /// Nanoseconds spent in the exchange (both phases and the copies).
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

/// Duplicates `comm` with `MPI_Comm_idup` (a blocking `MPI_Comm_dup` would wait forever for
/// a rank that never calls it), bounded by `timeout`, and makes its errors returned.
pub(crate) fn duplicate<C: Communicator>(
    comm: &C,
    timeout: Duration,
) -> Result<SimpleCommunicator, MpiError> {
    // On the heap: if the duplication times out, MPI may still write the handle later, so
    // the box is leaked rather than freed.
    let mut handle = Box::new(
        // SAFETY: a constant the MPI library defines, read-only.
        unsafe { ffi::RSMPI_COMM_NULL },
    );
    let mut reqs = Requests::with_capacity(1);
    let out: *mut ffi::MPI_Comm = &mut *handle;
    reqs.start("MPI_Comm_idup", None, false, |req| {
        // SAFETY: `comm` is a live communicator; `out` points to a handle that outlives the
        // operation (leaked if it does not complete); `req` is a valid out pointer.
        unsafe { ffi::MPI_Comm_idup(comm.as_raw(), out, req) }
    })?;
    match reqs.complete(timeout) {
        Ok(Ok(())) => {}
        outcome => {
            // MPI may still write the handle: keep it alive for good.
            reqs.abandon();
            Box::leak(handle);
            return Err(outcome.err().unwrap_or(MpiError::Timeout {
                what: "MPI_Comm_idup",
                round: None,
                missing: Vec::new(),
                after: timeout,
            }));
        }
    }
    let raw = *handle;
    // SAFETY: `raw` is the live communicator the completed MPI_Comm_idup created, owned
    // here, neither MPI_COMM_WORLD nor MPI_COMM_SELF, and not used after this call but
    // through the wrapper.
    let dup = unsafe { SimpleCommunicator::from_raw(raw) };
    // SAFETY: `dup` is a live communicator owned here; RSMPI_ERRORS_RETURN is the
    // predefined handler, valid for the whole MPI session.
    let rc = unsafe { ffi::MPI_Comm_set_errhandler(dup.as_raw(), ffi::RSMPI_ERRORS_RETURN) };
    MpiError::check("MPI_Comm_set_errhandler", rc)?;
    Ok(dup)
}

/// The round protocol's [`Transport`] over an MPI communicator; see the [crate docs](crate).
///
/// Every rank runs `parties` local parties (the same number on every rank); rank `r`'s
/// party `j` sends as global id `r * parties + j` ([`MpiTransport::first_sender`]). Each
/// round is two phases of non-blocking point-to-point messages, each bounded by the
/// transport's timeout: every rank's fixed-size packet table to every rank, then every
/// rank's packets to every rank. Every buffer is sized once, at construction.
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
    /// The operations of the phase in progress (pending only after a timeout).
    requests: Requests,
    /// The bound of each phase.
    timeout: Duration,
    /// Set when a phase timed out: what it waited for and the round.
    gave_up: Option<(&'static str, u64)>,
    stats: ExchangeStats,
}

impl std::fmt::Debug for MpiTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiTransport")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("parties", &self.parties)
            .field("max_packet_len", &self.max_packet_len)
            .field("timeout", &self.timeout)
            .field("gave_up", &self.gave_up)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MpiTransport {
    /// A transport over a duplicate of `comm` (so its messages never mix with the caller's),
    /// with `parties` local parties on every rank and packets of at most `max_packet_len`
    /// bytes (the encoders' [`max_packet_len`] for the vector's length), and the default
    /// timeout ([`DEFAULT_TIMEOUT`]); see [`MpiTransport::with_timeout`].
    ///
    /// Collective: every rank of `comm` calls it. MPI must be initialized with
    /// [`Threading::Serialized`] or higher, because the round protocol calls the transport
    /// from whichever local party leads the round.
    ///
    /// # Errors
    /// [`MpiError::Config`]: no parties, a threading level below `Serialized`, more than
    /// 2^32 sender ids, buffers beyond MPI's 32-bit counts; [`MpiError::Timeout`] when not
    /// every rank duplicated the communicator within the timeout; [`MpiError::Mpi`] when an
    /// MPI call fails.
    ///
    /// [`max_packet_len`]: gradcast_core::packet::PartyEncoder::max_packet_len
    pub fn new<C: Communicator>(
        comm: &C,
        parties: usize,
        max_packet_len: usize,
    ) -> Result<Self, MpiError> {
        Self::with_timeout(comm, parties, max_packet_len, DEFAULT_TIMEOUT)
    }

    /// As [`MpiTransport::new`], with `timeout` bounding every wait: the construction, and
    /// each of a round's two phases (a rank that waits longer for the others returns
    /// [`MpiError::Timeout`] naming the ranks that did not take part).
    ///
    /// # Errors
    /// As [`MpiTransport::new`].
    pub fn with_timeout<C: Communicator>(
        comm: &C,
        parties: usize,
        max_packet_len: usize,
        timeout: Duration,
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

        let dup = duplicate(comm, timeout)?;
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
            requests: Requests::with_capacity(2 * size.saturating_sub(1)),
            timeout,
            gave_up: None,
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

    /// The bound of each phase of a round.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the bound of each phase of a round (every rank should use the same).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The round whose exchange (or failure report) timed out, after which the transport
    /// cannot be used again; `None` while it works.
    pub fn gave_up_in(&self) -> Option<u64> {
        self.gave_up.map(|(_, round)| round)
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
    /// sender range, and this transport's timeout as the round timeout (sum, rounds from 0;
    /// adjust the other fields as needed).
    pub fn round_config(&self, n: usize) -> RoundConfig {
        RoundConfig {
            first_sender: self.first_sender(),
            timeout: Some(self.timeout),
            ..RoundConfig::new(self.parties, n)
        }
    }

    /// Bytes sent and received so far.
    pub fn stats(&self) -> ExchangeStats {
        self.stats
    }

    /// The size of one rank's packet table in bytes (sent to every other rank every round).
    pub fn table_bytes(&self) -> usize {
        self.table_words * 8
    }

    /// Starts this rank's table, with an OK status and no packets.
    fn begin_table(&mut self, round: u64) {
        self.table.fill(0);
        self.table[0] = TABLE_MAGIC;
        self.table[1] = round;
        self.table[2] = STATUS_OK;
        self.table[4] = self.parties as u64;
        self.table[5] = self.max_packet_len as u64;
    }

    /// Fills this rank's table from `local`, or reports why it cannot (the table then
    /// carries the failure to the other ranks).
    fn fill_table(&mut self, round: u64, local: &LocalPackets<'_>) -> Result<usize, MpiError> {
        let first = self.first_sender();
        self.begin_table(round);
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
            match t[2] {
                STATUS_OK => {}
                STATUS_REFUSED => {
                    return Err(MpiError::PeerFailed {
                        rank: q,
                        round: t[1],
                        cause: PeerCause::Transport { code: t[6] },
                    });
                }
                _ => {
                    return Err(MpiError::PeerFailed {
                        rank: q,
                        round: t[1],
                        cause: decode_cause(&t[6..10]),
                    });
                }
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

    /// Refuses to work after a timeout.
    fn usable(&self) -> Result<(), MpiError> {
        match self.gave_up {
            Some((what, round)) => Err(MpiError::Unusable {
                what,
                round: Some(round),
            }),
            None => Ok(()),
        }
    }

    /// A failure to start an operation leaves the phase's earlier ones pending: the
    /// transport gives up, as after a timeout.
    fn started(
        &mut self,
        r: Result<(), MpiError>,
        what: &'static str,
        round: u64,
    ) -> Result<(), MpiError> {
        if r.is_err() {
            self.gave_up = Some((what, round));
        }
        r
    }

    /// Completes the phase's operations within the timeout; on a timeout (or an MPI error
    /// while polling) the transport gives up for good, leaving the operations pending.
    fn complete(&mut self, what: &'static str, round: u64) -> Result<(), MpiError> {
        let polled = self.requests.complete(self.timeout);
        match polled {
            Ok(Ok(())) => Ok(()),
            Ok(Err(missing)) => {
                self.gave_up = Some((what, round));
                Err(MpiError::Timeout {
                    what,
                    round: Some(round),
                    missing: missing.into_iter().flatten().collect(),
                    after: self.timeout,
                })
            }
            Err(e) => {
                self.gave_up = Some((what, round));
                Err(e)
            }
        }
    }

    /// The first phase: this rank's table to every other rank, every other rank's table
    /// into `tables` (this rank's is copied), within the timeout.
    fn exchange_tables(&mut self, round: u64) -> Result<(), MpiError> {
        let w = self.table_words;
        let me = self.rank;
        self.tables[me * w..(me + 1) * w].copy_from_slice(&self.table);
        let dt = u64::equivalent_datatype();
        let comm = self.comm.0.as_raw();
        for q in (0..self.size).filter(|&q| q != me) {
            let into = self.tables[q * w..(q + 1) * w].as_mut_ptr();
            let started = self.requests.start("MPI_Irecv", Some(q), true, |req| {
                // SAFETY: `into` points to rank q's `w` words of `tables`, which nothing else
                // touches until the phase completes (or ever again, after a timeout: the
                // buffer is then leaked at drop); the datatype is MPI's u64; the
                // communicator is live; `req` is a valid out pointer.
                unsafe {
                    ffi::MPI_Irecv(
                        into as *mut c_void,
                        w as c_int,
                        dt.as_raw(),
                        q as c_int,
                        TAG_TABLE,
                        comm,
                        req,
                    )
                }
            });
            self.started(started, "packet tables", round)?;
        }
        let table = self.table.as_ptr();
        for q in (0..self.size).filter(|&q| q != me) {
            let started = self.requests.start("MPI_Isend", Some(q), false, |req| {
                // SAFETY: `table` holds `w` words that stay unchanged until the phase
                // completes (or forever, after a timeout); as above otherwise.
                unsafe {
                    ffi::MPI_Isend(
                        table as *const c_void,
                        w as c_int,
                        dt.as_raw(),
                        q as c_int,
                        TAG_TABLE,
                        comm,
                        req,
                    )
                }
            });
            self.started(started, "packet tables", round)?;
        }
        self.complete("packet tables", round)?;
        self.stats.table_bytes_sent += self.table_bytes() as u64;
        Ok(())
    }

    /// The second phase: this rank's `used` bytes of packets to every other rank, every
    /// other rank's packets into `recv` at the displacements `check_tables` set, within the
    /// timeout. Ranks without packets send (and are sent) nothing.
    fn exchange_packets(&mut self, round: u64, used: usize) -> Result<(), MpiError> {
        let me = self.rank;
        let dt = u8::equivalent_datatype();
        let comm = self.comm.0.as_raw();
        for q in 0..self.size {
            if q == me || self.counts[q] == 0 {
                continue;
            }
            let (at, len) = (self.displs[q] as usize, self.counts[q]);
            let into = self.recv[at..at + len as usize].as_mut_ptr();
            let started = self.requests.start("MPI_Irecv", Some(q), true, |req| {
                // SAFETY: `check_tables` set counts and displacements from the tables every
                // rank agrees on; each range lies inside `recv` (the counts sum to at most
                // `size * parties * max_packet_len == recv.len()`) and the ranges do not
                // overlap; nothing else touches them until the phase completes (or ever
                // again, after a timeout). Byte datatype; live communicator.
                unsafe {
                    ffi::MPI_Irecv(
                        into as *mut c_void,
                        len,
                        dt.as_raw(),
                        q as c_int,
                        TAG_PACKETS,
                        comm,
                        req,
                    )
                }
            });
            self.started(started, "packets", round)?;
        }
        if used > 0 {
            let send = self.send.as_ptr();
            for q in (0..self.size).filter(|&q| q != me) {
                let started = self.requests.start("MPI_Isend", Some(q), false, |req| {
                    // SAFETY: `send` holds `used <= send.len()` initialized bytes, unchanged
                    // until the phase completes (or forever, after a timeout).
                    unsafe {
                        ffi::MPI_Isend(
                            send as *const c_void,
                            used as c_int,
                            dt.as_raw(),
                            q as c_int,
                            TAG_PACKETS,
                            comm,
                            req,
                        )
                    }
                });
                self.started(started, "packets", round)?;
            }
        }
        self.complete("packets", round)
    }
}

impl Drop for MpiTransport {
    fn drop(&mut self) {
        if self.requests.pending() > 0 {
            // A phase timed out: MPI may still write into the receive buffers (a peer that
            // wakes up, a shared-memory copy) and read the send buffers. Give up the
            // operations and keep their buffers alive for the rest of the process.
            self.requests.abandon();
            std::mem::forget(std::mem::take(&mut self.recv));
            std::mem::forget(std::mem::take(&mut self.tables));
            std::mem::forget(std::mem::take(&mut self.send));
            std::mem::forget(std::mem::take(&mut self.table));
        }
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
        self.usable()?;
        let t0 = Instant::now();
        // A local failure still takes part in the table exchange (with a failure status),
        // so the other ranks learn of it instead of waiting for it.
        let local_result = self.fill_table(round, local);
        let used = match &local_result {
            Ok(used) => *used,
            Err(e) => {
                self.begin_table(round);
                self.table[2] = STATUS_REFUSED;
                self.table[6] = e.code();
                0
            }
        };
        self.exchange_tables(round)?;
        let used = match local_result {
            Ok(_) => used,
            Err(e) => return Err(e),
        };
        self.check_tables(round)?;
        self.exchange_packets(round, used)?;

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
        self.stats.exchange_ns += t0.elapsed().as_nanos() as u64;
        Ok(())
    }

    /// Sends this rank's table of `round` with a failure status and the poison's cause, and
    /// takes the other ranks' tables (bounded by the timeout); there is no packet phase, on
    /// any rank: every rank sees the failure in the tables. Each other rank's exchange of
    /// `round` returns [`MpiError::PeerFailed`] naming this rank and the cause.
    fn fail_round(&mut self, round: u64, poison: &Poison) {
        if self.usable().is_err() {
            return; // the others already wait for nothing from this rank
        }
        self.begin_table(round);
        self.table[2] = STATUS_POISONED;
        self.table[6..10].copy_from_slice(&encode_cause(poison.party, &poison.cause));
        // A timeout leaves the transport unusable, which its next use reports.
        let _ = self.exchange_tables(round);
    }
}
