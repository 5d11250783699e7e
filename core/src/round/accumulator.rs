//! The [`Accumulator`] and its per-thread [`Party`] handles.
//!
//! # Who touches what, and why it is sound
//!
//! Shared state lives in [`Shared`]; its non-atomic parts sit in `UnsafeCell`s whose
//! access is ordered by the round's gate and two barriers:
//!
//! | data | written by | read by | ordered by |
//! |---|---|---|---|
//! | slot i | party i, between joining round r and arriving at barrier A(r) | the leader of A(r), every member between A(r) and B(r) | arrival at A (release) / release from A (acquire); the next write follows B(r) via the gate |
//! | round data, transport | the leader of A(r), inside the lead action | every member between A(r) and B(r) | the lead runs while all members wait; release from A publishes it; the next lead follows everyone's arrival at B(r) |
//!
//! The gate: a party joins round r only once `epoch` says round r is current; the leader of
//! B(r-1) advances `epoch` (release) after that barrier completed, so everything done in
//! round r-1 happens before anything done in round r. With one member, the single party
//! does everything in program order, and the gate orders it against the next round.
//!
//! The transport (and the record of the last round it exchanged) is also guarded by a
//! token, `transport_busy`: the leader takes it around the exchange, and a failing party
//! takes it to report the failure to the other nodes ([`Transport::fail_round`]); a party
//! that finds it taken leaves the report to its holder (who either exchanges the round, so
//! there is nothing to report, or reports it). Acquire on taking, release on giving back.
//!
//! The per-party `stamps` (joined, arrived at A, arrived at B, with the round's epoch) are
//! diagnostics: read only to name the parties a timed-out wait was waiting for, ordered by
//! nothing, so they use plain atomics even under loom.

use super::transport::{LocalPackets, RemoteEntry, RemotePackets, Transport};
use super::{
    Published, ResetOptions, ResetReport, RoundConfig, RoundError, RoundSummary, Step, Ticket,
};
use crate::backend::Backend;
use crate::barrier::{
    Barrier, MAX_PARTIES, PartySet, Poison, PoisonCause, Relax, SpinThenYield, Timeout, WaitStage,
};
use crate::error::{Classify, Error};
use crate::error::{ConfigError, ProtocolError, WireError};
use crate::packet::{Checked, Messages, PartyEncoder, check_packet};
use crate::primitive::{AtomicU8, AtomicUsize, CachePadded, Ordering, UnsafeCell, panicking};
use crate::queue::HeapQueue;
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// One party's packet slot: sized once, written by its party, read by every party.
pub(crate) struct PacketSlot {
    data: UnsafeCell<SlotData>,
}

struct SlotData {
    /// `max_packet_len(N)` bytes.
    buf: Box<[u8]>,
    /// The current packet's length; 0 when the party has not contributed.
    len: usize,
    /// The current packet's messages, validated once by its party when it published them.
    msgs: Vec<Checked>,
}

impl PacketSlot {
    /// The published packet.
    ///
    /// # Safety
    /// No thread may be writing the slot (see the module docs' table).
    pub(crate) unsafe fn bytes(&self) -> &[u8] {
        self.data.with(|p| {
            // SAFETY: the caller guarantees there is no concurrent writer.
            let d = unsafe { &*p };
            &d.buf[..d.len]
        })
    }

    /// The published packet and its validated messages.
    ///
    /// # Safety
    /// As [`PacketSlot::bytes`].
    unsafe fn checked(&self) -> (&[u8], &[Checked]) {
        self.data.with(|p| {
            // SAFETY: the caller guarantees there is no concurrent writer.
            let d = unsafe { &*p };
            (&d.buf[..d.len], &d.msgs[..])
        })
    }

    /// The slot, to write the party's packet.
    ///
    /// # Safety
    /// Only the slot's party, between joining a round and arriving at its first barrier.
    #[allow(clippy::mut_from_ref)]
    unsafe fn data_mut(&self) -> &mut SlotData {
        // SAFETY: the caller guarantees exclusive access.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

/// Where a packet of the round lies.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Local party index (its slot).
    Local(u32),
    /// Index into the sorted remote entries.
    Remote(u32),
}

/// What the leader of barrier A decides for the whole round; read-only until barrier B.
struct RoundData {
    round: u64,
    /// Local contributors, ascending party index (= ascending sender id). Capacity P.
    local: Vec<u32>,
    local_bytes: usize,
    remote_arena: Box<[u8]>,
    remote_entries: Box<[RemoteEntry]>,
    remote_count: usize,
    remote_bytes: usize,
    /// Every remote message, validated once by the leader, ordered by its place in the arena.
    remote_msgs: Vec<Checked>,
    /// Every packet of the round in canonical (global sender) order. Capacity P + R.
    order: Vec<Source>,
    transport_ns: u64,
    scale: f32,
}

/// The transport and what the accumulator remembers of its use; guarded by the token.
struct TransportCell<T> {
    transport: T,
    /// The last round this node took part in across nodes: exchanged, or reported as failed
    /// ([`Transport::fail_round`]). `None` after construction and after a reset.
    exchanged: Option<u64>,
}

/// `Shared::transport_busy`: free, or held by a leader or a failure report.
const TOKEN_FREE: u8 = 0;
const TOKEN_HELD: u8 = 1;

/// The stages a party's stamp records (the low two bits; the round's epoch above them).
const STAMP_JOINED: usize = 1;
const STAMP_AT_A: usize = 2;
const STAMP_AT_B: usize = 3;

fn stamp(epoch: usize, stage: usize) -> usize {
    epoch.wrapping_shl(2) | stage
}

struct Shared<T, R: Relax> {
    barrier: Barrier<R>,
    /// Rounds completed since `Accumulator::base_round` (wrapping): round `base + epoch` is
    /// the current one.
    epoch: CachePadded<AtomicUsize>,
    /// Members that joined the current round.
    joined: AtomicUsize,
    /// The current round's member count (0 until its first member joins).
    members: AtomicUsize,
    /// Local party indices of this round's contributors, in publication order.
    board: HeapQueue<u32>,
    slots: Box<[PacketSlot]>,
    /// Each party's progress, `stamp(epoch, stage)`: diagnostics for timeouts (see the
    /// module docs).
    stamps: Box<[CachePadded<core::sync::atomic::AtomicUsize>]>,
    /// The token guarding `transport` (see the module docs).
    transport_busy: AtomicU8,
    transport: UnsafeCell<TransportCell<T>>,
    data: UnsafeCell<RoundData>,
}

// SAFETY: the cells are accessed as the module docs' table says: each slot by its party
// before barrier A and by everyone (reading) between A and B; the round data by the leader
// of A alone, then read-only by everyone until B; the transport by the holder of its token
// alone. The transport is only ever used by one thread at a time, so it needs `Send`, not
// `Sync`.
unsafe impl<T: Send, R: Relax> Sync for Shared<T, R> {}

impl<T, R: Relax> Shared<T, R> {
    /// # Safety
    /// Between barriers A and B of the current round (or with one member, after its lead).
    unsafe fn data(&self) -> &RoundData {
        // SAFETY: the caller guarantees no writer.
        self.data.with(|p| unsafe { &*p })
    }

    /// # Safety
    /// Only in the lead action of barrier A (or with one member), or under `&mut`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn data_mut(&self) -> &mut RoundData {
        // SAFETY: the caller guarantees exclusive access.
        self.data.with_mut(|p| unsafe { &mut *p })
    }

    /// # Safety
    /// Only while holding the transport token, or under `&mut`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn transport_mut(&self) -> &mut TransportCell<T> {
        // SAFETY: the caller guarantees exclusive access.
        self.transport.with_mut(|p| unsafe { &mut *p })
    }

    /// Records `party`'s progress (diagnostics only).
    fn set_stamp(&self, party: u32, epoch: usize, stage: usize) {
        self.stamps[party as usize]
            .store(stamp(epoch, stage), core::sync::atomic::Ordering::Relaxed);
    }

    /// The parties that have not reached `stage` of the round at `epoch`, besides `me`:
    /// every such party by name when all P parties are members; otherwise the members that
    /// joined and did not reach it by name, and `members - arrived` in all.
    fn missing(
        &self,
        me: u32,
        epoch: usize,
        stage: usize,
        members: usize,
        arrived: usize,
    ) -> PartySet {
        let mut set = PartySet::EMPTY;
        let all = members == self.stamps.len();
        let mut named = 0;
        for (i, s) in self.stamps.iter().enumerate() {
            if i == me as usize {
                continue;
            }
            let s = s.load(core::sync::atomic::Ordering::Relaxed);
            let reached = s >> 2 == epoch & (usize::MAX >> 2) && s & 3 >= stage;
            let joined = s >> 2 == epoch & (usize::MAX >> 2);
            if !reached && (all || joined) {
                set.insert(i);
                named += 1;
            }
        }
        set.add_unnamed(members.saturating_sub(arrived).saturating_sub(named));
        set
    }
}

impl<T: Transport, R: Relax> Shared<T, R> {
    /// The lead action of barrier A: collect, exchange, validate, order.
    ///
    /// # Safety
    /// Only while every member of the round waits at barrier A (or with one member).
    unsafe fn lead<BE>(
        &self,
        round: u64,
        config: &RoundConfig,
    ) -> Result<(), RoundError<BE, T::Error>> {
        // SAFETY: the caller guarantees exclusive access to the round data.
        let data = unsafe { self.data_mut() };
        data.round = round;
        data.local.clear();
        data.local_bytes = 0;
        while let Some(i) = self.board.try_pop() {
            if data.local.len() == config.parties {
                return Err(Error::Protocol(ProtocolError::RoundMisuse {
                    party: i,
                    round,
                    reason: "more contributions than parties",
                })
                .into());
            }
            data.local.push(i);
        }
        data.local.sort_unstable();
        for &i in &data.local {
            // SAFETY: contributors published before arriving at the barrier; nobody writes.
            data.local_bytes += unsafe { self.slots[i as usize].bytes() }.len();
        }

        let t0 = now(config);
        let mut remote = RemotePackets::new(&mut data.remote_arena, &mut data.remote_entries);
        let local = LocalPackets::from_slots(&self.slots, &data.local, config.first_sender);
        // A failure report holds the token, or has used this round's place in the exchange:
        // the round is poisoned either way.
        let poisoned = || -> RoundError<BE, T::Error> {
            let p = self.barrier.poisoned().unwrap_or(Poison {
                party: None,
                round,
                cause: PoisonCause::Failed(crate::error::ErrorKind::Protocol),
            });
            p.to_error().into()
        };
        // Held until the end of the lead action (validation asks the transport which
        // senders it knows).
        let Some(_token) = TransportToken::take(self) else {
            return Err(poisoned());
        };
        // SAFETY: this thread holds the transport token.
        let cell = unsafe { self.transport_mut() };
        if cell.exchanged == Some(round) {
            return Err(poisoned());
        }
        cell.exchanged = Some(round);
        let transport = &mut cell.transport;
        transport
            .exchange(round, &local, &mut remote)
            .map_err(RoundError::Transport)?;
        let (count, bytes) = remote.counts();
        data.transport_ns = now(config).saturating_sub(t0);
        data.remote_count = count;
        data.remote_bytes = bytes;

        // Validate every remote packet, once, before anyone decodes anything; the parties
        // decode from the validated messages.
        data.remote_msgs.clear();
        let local_ids =
            config.first_sender as u64..config.first_sender as u64 + config.parties as u64;
        let entries = &mut data.remote_entries[..count];
        for e in entries.iter() {
            if local_ids.contains(&(e.sender as u64)) {
                return Err(Error::Protocol(ProtocolError::DuplicateSender {
                    round,
                    sender: e.sender,
                })
                .into());
            }
            if !transport.is_remote_sender(e.sender) {
                return Err(Error::Protocol(ProtocolError::UnknownSender {
                    round,
                    sender: e.sender,
                })
                .into());
            }
            let first = data.remote_msgs.len();
            check_packet(
                &data.remote_arena[e.start..e.start + e.len],
                e.start,
                &mut data.remote_msgs,
            )?;
            for m in &data.remote_msgs[first..] {
                let h = *m.header();
                if h.sender != e.sender {
                    return Err(Error::Protocol(ProtocolError::SenderMismatch {
                        round,
                        declared: e.sender,
                        found: h.sender,
                    })
                    .into());
                }
                if h.round != round {
                    return Err(Error::Protocol(ProtocolError::WrongRound {
                        sender: e.sender,
                        expected: round,
                        found: h.round,
                    })
                    .into());
                }
                m.view(&data.remote_arena).target_range(config.n)?;
            }
        }
        data.remote_msgs.sort_unstable_by_key(|m| m.start());
        entries.sort_unstable_by_key(|e| e.sender);
        for w in entries.windows(2) {
            if w[0].sender == w[1].sender {
                return Err(Error::Protocol(ProtocolError::DuplicateSender {
                    round,
                    sender: w[0].sender,
                })
                .into());
            }
        }

        // The canonical order: local and remote merged by global sender id.
        data.order.clear();
        let (mut li, mut ri) = (0, 0);
        while li < data.local.len() || ri < count {
            let local_sender = data
                .local
                .get(li)
                .map(|&i| config.first_sender as u64 + i as u64);
            let remote_sender = entries.get(ri).map(|e| e.sender as u64);
            let take_local = match (local_sender, remote_sender) {
                (Some(l), Some(r)) => l < r,
                (Some(_), None) => true,
                _ => false,
            };
            if take_local {
                data.order.push(Source::Local(data.local[li]));
                li += 1;
            } else {
                data.order.push(Source::Remote(ri as u32));
                ri += 1;
            }
        }
        data.scale = match config.step {
            Step::Sum => 1.0,
            Step::Mean if data.order.len() > 1 => 1.0 / data.order.len() as f32,
            Step::Mean => 1.0,
        };
        Ok(())
    }

    /// Ends the current round: resets the member counts (inside the closing barrier's lead
    /// action, or by the single member).
    fn close_counts(&self) {
        self.members.store(0, Ordering::Relaxed);
        self.joined.store(0, Ordering::Relaxed);
    }

    /// Tells the other nodes that this node will not exchange `current`, the round in
    /// progress, if the accumulator is poisoned and this node has not exchanged (or
    /// reported) that round yet ([`Transport::fail_round`]). Called by every party that
    /// poisons or sees the poison; does nothing when the token is held (its holder exchanges
    /// the round, or reports it).
    fn report_failure(&self, current: u64) {
        let Some(poison) = self.barrier.poisoned() else {
            return;
        };
        let Some(_token) = TransportToken::take(self) else {
            return;
        };
        // SAFETY: this thread holds the transport token.
        let cell = unsafe { self.transport_mut() };
        if cell.exchanged != Some(current) {
            cell.exchanged = Some(current);
            cell.transport.fail_round(current, &poison);
        }
    }

    /// Opens the next round (after the closing barrier completed) and wakes the parties
    /// waiting for it at the gate.
    fn open_next(&self, parties: usize) {
        // Release: everything of this round happens before the next round's joins.
        self.epoch.fetch_add(1, Ordering::Release);
        if parties > 1 {
            self.barrier.notify_all();
        }
    }
}

/// The poison of a party that waited longer than its bound.
fn timed_out(
    party: u32,
    round: u64,
    stage: WaitStage,
    missing: PartySet,
    timeout: Option<Timeout>,
) -> Poison {
    Poison {
        party: Some(party),
        round,
        cause: PoisonCause::TimedOut {
            stage,
            missing,
            after: timeout.map_or(core::time::Duration::ZERO, |t| t.after),
        },
    }
}

/// The transport token, held until dropped (see the module docs).
struct TransportToken<'a>(&'a AtomicU8);

impl<'a> TransportToken<'a> {
    /// Takes the token of `shared`; `None` when someone holds it.
    fn take<T, R: Relax>(shared: &'a Shared<T, R>) -> Option<Self> {
        shared
            .transport_busy
            .compare_exchange(TOKEN_FREE, TOKEN_HELD, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| TransportToken(&shared.transport_busy))
    }
}

impl Drop for TransportToken<'_> {
    fn drop(&mut self) {
        // Release: the next holder sees everything done with the transport.
        self.0.store(TOKEN_FREE, Ordering::Release);
    }
}

/// One party's state, owned by the accumulator and lent to one thread through [`Party`].
struct PartyState<B: Backend, E> {
    index: u32,
    residual: B::Buffer,
    update: B::Buffer,
    encoder: E,
    phase: Phase,
    /// The round whose packet this party published and has not seen applied yet.
    published: Option<u64>,
    /// The last round this party stepped its parameters for.
    stepped: Option<u64>,
    encode_ns: u64,
    own_bytes: usize,
    /// Whether `update` holds zeros, as [`Backend::apply_messages`] requires (it leaves them
    /// so; after a failed step the buffer is filled again before the next one).
    update_zeroed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Joined {
        round: u64,
        members: usize,
        contributed: bool,
    },
}

fn now(config: &RoundConfig) -> u64 {
    config.clock.map_or(0, |c| c())
}

/// The round protocol's shared state and every party's residual, encoder and buffers. See
/// the [module docs](super).
///
/// Type parameters: the backend `B`, each party's encoder `E`, the transport `T`, and the
/// barrier's relax strategy `R` ([`SpinThenYield`] by default; [`crate::barrier::Park`]
/// when threads outnumber cores).
pub struct Accumulator<B: Backend, E, T = super::Local, R: Relax = SpinThenYield> {
    backend: B,
    config: RoundConfig,
    /// The number of the round at `epoch == 0`.
    base_round: u64,
    shared: Shared<T, R>,
    parties: Vec<PartyState<B, E>>,
}

impl<B, E, T, R> Accumulator<B, E, T, R>
where
    B: Backend,
    E: PartyEncoder<B>,
    T: Transport,
    R: Relax,
{
    /// Sizes everything once: P residuals and update buffers of N elements, P slots of the
    /// encoders' largest packet, a publication queue, and storage for the transport's
    /// largest round of remote packets.
    ///
    /// # Errors
    /// [`ConfigError::PartiesOutOfRange`], [`ConfigError::QueueTooSmall`] (a capacity below P would
    /// deadlock a full round), [`ConfigError::Round`] (N = 0, one encoder per party, sender
    /// ids beyond `u32`, a local sender the transport calls remote, sizes that overflow);
    /// backend allocation errors.
    pub fn new(
        backend: B,
        config: RoundConfig,
        encoders: impl IntoIterator<Item = E>,
        transport: T,
    ) -> Result<Self, RoundError<B::Error, T::Error>> {
        let p = config.parties;
        let max = MAX_PARTIES.min(u32::MAX as usize);
        if p == 0 || p > max {
            return Err(Error::Config(ConfigError::PartiesOutOfRange { parties: p, max }).into());
        }
        if config.n == 0 {
            return Err(Error::Config(ConfigError::Round {
                reason: "N must be at least 1",
            })
            .into());
        }
        if config.first_sender as u64 + p as u64 > u32::MAX as u64 + 1 {
            return Err(Error::Config(ConfigError::Round {
                reason: "first_sender + P exceeds the 32-bit sender ids",
            })
            .into());
        }
        if config.timeout.is_some() && config.clock.is_none() {
            return Err(Error::Config(ConfigError::Round {
                reason: "a timeout needs a clock (set RoundConfig::clock, or timeout: None)",
            })
            .into());
        }
        let capacity = config.queue_capacity.unwrap_or(p);
        if capacity < p {
            return Err(Error::Config(ConfigError::QueueTooSmall {
                capacity,
                needed: p,
            })
            .into());
        }
        let encoders: Vec<E> = encoders.into_iter().collect();
        if encoders.len() != p {
            return Err(Error::Config(ConfigError::Round {
                reason: "give exactly one encoder per party",
            })
            .into());
        }
        if (0..p).any(|i| transport.is_remote_sender(config.first_sender + i as u32)) {
            return Err(Error::Config(ConfigError::Round {
                reason: "the transport claims a local sender id as remote",
            })
            .into());
        }
        let packet_lens: Vec<usize> = encoders
            .iter()
            .map(|e| e.max_packet_len(config.n))
            .collect();
        let max_packet = packet_lens.iter().copied().max().unwrap_or(0);
        let remote_max = transport.max_remote_packets();
        let arena = remote_max
            .checked_mul(max_packet)
            .ok_or(ConfigError::Round {
                reason: "remote packet storage overflows usize",
            })?;

        let mut parties = Vec::with_capacity(p);
        for (i, encoder) in encoders.into_iter().enumerate() {
            parties.push(PartyState {
                index: i as u32,
                residual: backend.alloc(config.n).map_err(RoundError::Backend)?,
                update: backend.alloc(config.n).map_err(RoundError::Backend)?,
                encoder,
                phase: Phase::Idle,
                published: None,
                stepped: None,
                encode_ns: 0,
                own_bytes: 0,
                update_zeroed: true,
            });
        }
        let slots = packet_lens
            .iter()
            .map(|&len| PacketSlot {
                data: UnsafeCell::new(SlotData {
                    buf: vec![0u8; len].into_boxed_slice(),
                    len: 0,
                    msgs: Vec::new(),
                }),
            })
            .collect();
        let shared = Shared {
            barrier: Barrier::new(),
            epoch: CachePadded(AtomicUsize::new(0)),
            joined: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
            board: HeapQueue::with_capacity(capacity)?,
            slots,
            stamps: (0..p)
                .map(|_| CachePadded(core::sync::atomic::AtomicUsize::new(0)))
                .collect(),
            transport_busy: AtomicU8::new(TOKEN_FREE),
            transport: UnsafeCell::new(TransportCell {
                transport,
                exchanged: None,
            }),
            data: UnsafeCell::new(RoundData {
                round: config.first_round,
                local: Vec::with_capacity(p),
                local_bytes: 0,
                remote_arena: vec![0u8; arena].into_boxed_slice(),
                remote_entries: vec![RemoteEntry::default(); remote_max].into_boxed_slice(),
                remote_count: 0,
                remote_bytes: 0,
                remote_msgs: Vec::new(),
                order: Vec::with_capacity(p + remote_max),
                transport_ns: 0,
                scale: 1.0,
            }),
        };
        Ok(Accumulator {
            backend,
            base_round: config.first_round,
            config,
            shared,
            parties,
        })
    }

    /// One handle per party, in party order, to move into the worker threads. The handles
    /// borrow the accumulator; when they are gone, `reset` and the accessors are available
    /// again.
    pub fn parties(&mut self) -> impl ExactSizeIterator<Item = Party<'_, B, E, T, R>> + '_ {
        let shared = &self.shared;
        let backend = &self.backend;
        let config = &self.config;
        let base_round = self.base_round;
        self.parties.iter_mut().map(move |state| Party {
            state,
            shared,
            backend,
            config,
            base_round,
        })
    }

    /// The handle of party `i` alone (for driving rounds from one thread: P = 1, or
    /// one-member rounds).
    ///
    /// # Panics
    /// If `i >= P`.
    pub fn party(&mut self, i: usize) -> Party<'_, B, E, T, R> {
        Party {
            state: &mut self.parties[i],
            shared: &self.shared,
            backend: &self.backend,
            config: &self.config,
            base_round: self.base_round,
        }
    }

    /// Clears the queue, the round state and the poison. Every residual is kept unless
    /// `options.drop_residuals`; the residuals' mass is reported either way. Packets of an
    /// unfinished round that no replica applied are credited back to their senders.
    ///
    /// # Errors
    /// Backend errors (downloading or zeroing a residual, crediting a packet back).
    pub fn reset(
        &mut self,
        options: ResetOptions,
    ) -> Result<ResetReport, RoundError<B::Error, T::Error>> {
        let poison = self.shared.barrier.poisoned();
        let current = self.next_round();
        let joined = self.shared.joined.load(Ordering::Relaxed);
        let started = joined > 0 || self.parties.iter().any(|s| s.published == Some(current));
        let unfinished = (started || poison.is_some()).then_some(current);
        let mut report = ResetReport {
            unfinished_round: unfinished,
            poison,
            ..ResetReport::default()
        };
        if let Some(round) = unfinished {
            report.partially_applied = self.parties.iter().any(|s| s.stepped == Some(round));
            if !report.partially_applied {
                for s in self
                    .parties
                    .iter_mut()
                    .filter(|s| s.published == Some(round))
                {
                    // SAFETY: `&mut self`: no party handle exists, nobody else touches slots.
                    unsafe { refund(&self.backend, &self.shared.slots, s) }?;
                    report.refunded_packets += 1;
                }
            }
        }
        report.queue_cleared = self.shared.board.clear();
        let mut host = vec![0f32; self.config.n];
        for s in &mut self.parties {
            self.backend
                .download(&s.residual, &mut host)
                .map_err(RoundError::Backend)?;
            for &v in &host {
                let a = v.abs();
                report.residual.l1 += a as f64;
                report.residual.sum_sq += (v as f64) * (v as f64);
                report.residual.max_abs = report.residual.max_abs.max(a);
                report.residual.nonzero += (v != 0.0) as u64;
            }
            if options.drop_residuals {
                self.backend
                    .fill(&mut s.residual, 0.0)
                    .map_err(RoundError::Backend)?;
            }
            s.phase = Phase::Idle;
            s.published = None;
            s.stepped = None;
            s.own_bytes = 0;
            // SAFETY: `&mut self`.
            let slot = unsafe { self.shared.slots[s.index as usize].data_mut() };
            slot.len = 0;
            slot.msgs.clear();
        }
        report.residuals_dropped = options.drop_residuals;
        self.shared.barrier.reset();
        self.shared.close_counts();
        self.shared.epoch = CachePadded(AtomicUsize::new(0));
        for s in self.shared.stamps.iter() {
            s.store(0, core::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: `&mut self`: no party handle exists.
        unsafe { self.shared.transport_mut() }.exchanged = None;
        self.base_round = options.next_round.unwrap_or(if unfinished.is_some() {
            current + 1
        } else {
            current
        });
        report.next_round = self.base_round;
        Ok(report)
    }
}

impl<B, E, T, R> Accumulator<B, E, T, R>
where
    B: Backend,
    E: PartyEncoder<B>,
    T: Transport,
    R: Relax,
{
    /// Runs one round for every local party from the calling thread, and writes the round's
    /// decoded sum into `sum` instead of stepping parameters: the entry point for callers
    /// that hold every local replica themselves (a training driver that shares gradients
    /// and lets each replica's optimizer step on the same aggregated gradient).
    ///
    /// Before the call, each party's update lies in its update buffer
    /// ([`Accumulator::update_mut`]). In party order, each party adds its update to its
    /// residual and encodes (encode, then commit); `published[i]` receives party `i`'s
    /// packet length and encode time. Then, as the leader of a threaded round would, this
    /// thread exchanges with the transport, validates every remote packet, and decodes
    /// every packet of the round once, in global sender order, into `sum` (zeroed first).
    /// The summary's `scale` is what [`Step`] asks for (1, or 1/k for k packets): the
    /// caller applies it. No barrier is involved, so the result is the same as the
    /// threaded path's decode, bit for bit, and the same on every node.
    ///
    /// Every party contributes (members = P). The summary's per-party fields describe
    /// party 0; `encode_ns` is the sum over parties.
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`] when a threaded round poisoned the accumulator (call
    /// [`Accumulator::reset`]); [`ProtocolError::RoundMisuse`] when a threaded round is in progress
    /// or `published` is shorter than P; [`crate::error::CodecError::TargetSizeMismatch`] when `sum` is not N
    /// long; the transport's and the validation errors; backend and encoder errors. On any
    /// error after the first party encoded, every packet of the round is credited back to
    /// its sender's residual (nothing is lost: the updates stay in the residuals, as
    /// [`Accumulator::reset`] does for an unfinished round) and the round number does not
    /// advance.
    pub fn round_local(
        &mut self,
        sum: &mut B::Buffer,
        published: &mut [Published],
    ) -> Result<RoundSummary, RoundError<B::Error, T::Error>> {
        let round = self.next_round();
        let p = self.config.parties;
        if let Some(poison) = self.shared.barrier.poisoned() {
            return Err(poison.to_error().into());
        }
        let misuse = |reason| {
            RoundError::Round(Error::Protocol(ProtocolError::RoundMisuse {
                party: 0,
                round,
                reason,
            }))
        };
        if self.shared.joined.load(Ordering::Relaxed) != 0
            || self.parties.iter().any(|s| s.phase != Phase::Idle)
        {
            return Err(misuse("round_local while a threaded round is in progress"));
        }
        if published.len() < p {
            return Err(misuse("round_local needs one `Published` per party"));
        }
        let len = self.backend.len(sum);
        if len != self.config.n {
            return Err(Error::Codec(crate::error::CodecError::TargetSizeMismatch {
                message_n: self.config.n.min(u32::MAX as usize) as u32,
                offset: 0,
                target_len: len,
            })
            .into());
        }
        let mut encode_ns = 0u64;
        for (i, slot) in published.iter_mut().enumerate().take(p) {
            let t = now(&self.config);
            let result = self.encode_local(i, round);
            let bytes = match result {
                Ok(bytes) => bytes,
                Err(e) => return Err(self.refund_round(round, e)),
            };
            let ns = now(&self.config).saturating_sub(t);
            encode_ns += ns;
            *slot = Published {
                round,
                bytes,
                encode_ns: ns,
            };
        }
        let t1 = now(&self.config);
        // SAFETY: `&mut self`: no party handle exists, so this thread is the round's only
        // member and its leader.
        if let Err(e) = unsafe { self.shared.lead(round, &self.config) } {
            let e = self.refund_round(round, e);
            return Err(self.poison_local(round, e));
        }
        let t2 = now(&self.config);
        // SAFETY: `&mut self`, after the lead: nobody writes the round data or the slots.
        let data = unsafe { self.shared.data() };
        // SAFETY: as above.
        if let Err(e) = unsafe { decode_round(&self.backend, &self.shared.slots, data, sum) } {
            let e = self.refund_round(round, e);
            return Err(self.poison_local(round, e));
        }
        let t3 = now(&self.config);
        let summary = RoundSummary {
            round,
            members: p,
            packets: data.order.len(),
            local_packets: data.local.len(),
            remote_packets: data.remote_count,
            bytes_published: data.local_bytes,
            bytes_received: data.remote_bytes,
            own_bytes: published[0].bytes,
            contributed: true,
            led: true,
            scale: data.scale,
            encode_ns,
            exchange_ns: t2.saturating_sub(t1),
            transport_ns: data.transport_ns,
            decode_ns: t3.saturating_sub(t2),
            sync_ns: 0,
        };
        for s in &mut self.parties {
            s.published = None;
            s.stepped = Some(round);
        }
        self.shared.close_counts();
        self.shared.open_next(p);
        Ok(summary)
    }

    /// Party `i` adds its update to its residual, encodes into its slot and publishes;
    /// returns the packet's length.
    fn encode_local(
        &mut self,
        i: usize,
        round: u64,
    ) -> Result<usize, RoundError<B::Error, T::Error>> {
        let st = &mut self.parties[i];
        self.backend
            .add_assign(&mut st.residual, &st.update)
            .map_err(RoundError::Backend)?;
        // SAFETY: `&mut self`: nobody else reads or writes the slots.
        let slot = unsafe { self.shared.slots[i].data_mut() };
        slot.len = 0;
        slot.msgs.clear();
        let sender = self.config.first_sender + st.index;
        let len = st
            .encoder
            .encode_round(
                &self.backend,
                &mut st.residual,
                sender,
                round,
                &mut slot.buf,
            )
            .map_err(RoundError::Backend)?;
        // Validated once, as the threaded path does; the decode reads the checked messages.
        // An encoder that wrote an invalid packet fails the round (it is not published).
        let packet = slot.buf.get(..len).ok_or(WireError::Truncated {
            needed: len,
            got: slot.buf.len(),
        })?;
        if let Err(e) = check_packet(packet, 0, &mut slot.msgs) {
            slot.msgs.clear();
            return Err(e.into());
        }
        slot.len = len;
        st.published = Some(round);
        if self.shared.board.try_push(st.index).is_err() {
            return Err(Error::Protocol(ProtocolError::RoundMisuse {
                party: st.index,
                round,
                reason: "the publication queue is full",
            })
            .into());
        }
        Ok(slot.len)
    }

    /// A failure once the round's exchange began: the round's place in the exchange is used
    /// (the other nodes may have gone on), so the accumulator is poisoned as a threaded
    /// round's failure poisons it, the other nodes are told, and the caller must
    /// [`Accumulator::reset`] before the next round. Returns `error`.
    fn poison_local(
        &mut self,
        round: u64,
        error: RoundError<B::Error, T::Error>,
    ) -> RoundError<B::Error, T::Error> {
        if !matches!(
            error,
            RoundError::Round(Error::Protocol(ProtocolError::Poisoned { .. }))
        ) {
            self.shared.barrier.poison(Poison {
                party: None,
                round,
                cause: PoisonCause::Failed(error.kind()),
            });
        }
        self.shared.report_failure(round);
        error
    }

    /// Credits every packet published for `round` back to its sender's residual, clears
    /// the queue, and returns `error` (or the refund's own error, which comes first).
    fn refund_round(
        &mut self,
        round: u64,
        error: RoundError<B::Error, T::Error>,
    ) -> RoundError<B::Error, T::Error> {
        let _ = self.shared.board.clear();
        for s in self
            .parties
            .iter_mut()
            .filter(|s| s.published == Some(round))
        {
            s.published = None;
            // SAFETY: `&mut self`: no party handle exists, nobody else touches slots.
            if let Err(e) = unsafe { refund(&self.backend, &self.shared.slots, s) } {
                return e;
            }
        }
        self.shared.close_counts();
        error
    }

    /// Party `i`'s update buffer, with the backend to fill it:
    /// [`Accumulator::round_local`] reads each party's update from here. (The threaded path
    /// takes the update as an argument and uses this buffer as scratch.) Panics if `i >= P`.
    pub fn update_mut(&mut self, i: usize) -> (&B, &mut B::Buffer) {
        // The threaded path fills the buffer with zeros again before it decodes into it.
        self.parties[i].update_zeroed = false;
        (&self.backend, &mut self.parties[i].update)
    }

    /// Party `i`'s residual, to restore it from a checkpoint between rounds. Panics if
    /// `i >= P`.
    pub fn residual_mut(&mut self, i: usize) -> &mut B::Buffer {
        &mut self.parties[i].residual
    }
}

/// Adds the packet in `party`'s slot back to its residual.
///
/// # Safety
/// No thread may be writing the slot.
unsafe fn refund<B: Backend, E, TE>(
    backend: &B,
    slots: &[PacketSlot],
    party: &mut PartyState<B, E>,
) -> Result<(), RoundError<B::Error, TE>> {
    // SAFETY: the caller guarantees there is no concurrent writer.
    let bytes = unsafe { slots[party.index as usize].bytes() };
    for m in Messages::new(bytes) {
        backend
            .decode_add(&m?, &mut party.residual)
            .map_err(RoundError::Backend)?;
    }
    Ok(())
}

/// `target = 0`, then every packet of the round decoded into it in canonical order.
///
/// # Safety
/// Between the round's lead and its end: nobody writes a slot or the round data.
unsafe fn decode_round<B: Backend, TE>(
    backend: &B,
    slots: &[PacketSlot],
    data: &RoundData,
    target: &mut B::Buffer,
) -> Result<(), RoundError<B::Error, TE>> {
    backend.fill(target, 0.0).map_err(RoundError::Backend)?;
    for src in &data.order {
        // Every message was validated once when it was published (local) or received
        // (remote): decode from the checked views.
        let (bytes, msgs) = match *src {
            // SAFETY: the caller guarantees that nobody writes a slot.
            Source::Local(i) => unsafe { slots[i as usize].checked() },
            Source::Remote(j) => {
                let e = data.remote_entries[j as usize];
                let all = &data.remote_msgs;
                let lo = all.partition_point(|m| m.start() < e.start);
                let hi = all.partition_point(|m| m.start() < e.start + e.len);
                (&data.remote_arena[..], &all[lo..hi])
            }
        };
        for m in msgs {
            backend
                .decode_add(&m.view(bytes), target)
                .map_err(RoundError::Backend)?;
        }
    }
    Ok(())
}

impl<B: Backend, E, T, R: Relax> Accumulator<B, E, T, R> {
    /// The number of the current round (the next one, when none is in progress).
    pub fn next_round(&self) -> u64 {
        self.base_round
            .wrapping_add(self.shared.epoch.load(Ordering::Acquire) as u64)
    }

    /// A ticket for the current round with `members` members.
    pub fn ticket(&self, members: usize) -> Ticket {
        Ticket::new(self.next_round(), members)
    }

    /// The configuration.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Party `i`'s residual. Panics if `i >= P`.
    pub fn residual(&self, i: usize) -> &B::Buffer {
        &self.parties[i].residual
    }

    /// Party `i`'s encoder. Panics if `i >= P`.
    pub fn encoder(&self, i: usize) -> &E {
        &self.parties[i].encoder
    }

    /// Party `i`'s encoder, to reconfigure it between rounds. Panics if `i >= P`.
    pub fn encoder_mut(&mut self, i: usize) -> &mut E {
        &mut self.parties[i].encoder
    }

    /// The transport.
    pub fn transport(&mut self) -> &mut T {
        // SAFETY: `&mut self`: no party handle exists.
        &mut unsafe { self.shared.transport_mut() }.transport
    }

    /// The poison, if a party failed.
    pub fn poisoned(&self) -> Option<Poison> {
        self.shared.barrier.poisoned()
    }
}

impl<B: Backend, E, T, R: Relax> fmt::Debug for Accumulator<B, E, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accumulator")
            .field("config", &self.config)
            .field("next_round", &self.next_round())
            .field("barrier", &self.shared.barrier)
            .finish_non_exhaustive()
    }
}

/// One party's handle: lent by [`Accumulator::parties`], moved into the party's thread.
///
/// A handle dropped in the middle of a round, or while its thread panics (`std`), poisons
/// the round, so the other parties return an error instead of waiting forever.
pub struct Party<'a, B: Backend, E, T: Transport, R: Relax> {
    state: &'a mut PartyState<B, E>,
    shared: &'a Shared<T, R>,
    backend: &'a B,
    config: &'a RoundConfig,
    base_round: u64,
}

impl<'a, B, E, T, R> Party<'a, B, E, T, R>
where
    B: Backend,
    E: PartyEncoder<B>,
    T: Transport,
    R: Relax,
{
    /// Joins `ticket`'s round as a contributor: `residual += update`, encodes into this
    /// party's slot (debiting exactly what the packet carries) and publishes it. Returns
    /// at once; [`Party::apply_update`] completes the round.
    ///
    /// Waits (with the relax strategy) while earlier rounds are still in progress.
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`] when another party failed; [`ProtocolError::TicketOutOfOrder`],
    /// [`ProtocolError::RoundMisuse`], [`ConfigError::PartiesOutOfRange`] for a bad ticket or call order;
    /// backend and encoder errors (the update then stays in the residual: no mass is lost).
    /// Every error poisons the round.
    pub fn store_update(
        &mut self,
        ticket: Ticket,
        update: &B::Buffer,
    ) -> Result<Published, RoundError<B::Error, T::Error>> {
        self.join(ticket, true)?;
        let t0 = now(self.config);
        let round = ticket.round;
        let st = &mut *self.state;
        if let Err(e) = self.backend.add_assign(&mut st.residual, update) {
            return Err(self.fail(RoundError::Backend(e)));
        }
        // SAFETY: this party's slot; it joined the round (so the previous round's readers
        // are done, via the gate) and has not arrived at barrier A yet.
        let slot = unsafe { self.shared.slots[st.index as usize].data_mut() };
        slot.len = 0;
        slot.msgs.clear();
        let sender = self.config.first_sender + st.index;
        match st
            .encoder
            .encode_round(self.backend, &mut st.residual, sender, round, &mut slot.buf)
        {
            Ok(len) => slot.len = len,
            Err(e) => return Err(self.fail(RoundError::Backend(e))),
        }
        // Validated once, here, in parallel with the other parties; every party decodes
        // from `msgs` without parsing again. An encoder that wrote an invalid packet fails
        // the round (its packet is not published).
        let checked = slot
            .buf
            .get(..slot.len)
            .ok_or(WireError::Truncated {
                needed: slot.len,
                got: slot.buf.len(),
            })
            .and_then(|packet| check_packet(packet, 0, &mut slot.msgs));
        if let Err(e) = checked {
            slot.len = 0;
            slot.msgs.clear();
            return Err(self.fail(e.into()));
        }
        let len = slot.len;
        st.published = Some(round);
        if self.shared.board.try_push(st.index).is_err() {
            let party = st.index;
            return Err(self.fail(
                Error::Protocol(ProtocolError::RoundMisuse {
                    party,
                    round,
                    reason: "the publication queue is full",
                })
                .into(),
            ));
        }
        let st = &mut *self.state;
        st.own_bytes = len;
        st.encode_ns = now(self.config).saturating_sub(t0);
        Ok(Published {
            round,
            bytes: len,
            encode_ns: st.encode_ns,
        })
    }
}

impl<'a, B, E, T, R> Party<'a, B, E, T, R>
where
    B: Backend,
    T: Transport,
    R: Relax,
{
    /// This party's index, `0..P`.
    pub fn index(&self) -> usize {
        self.state.index as usize
    }

    /// This party's global sender id.
    pub fn sender(&self) -> u32 {
        self.config.first_sender + self.state.index
    }

    /// The current round (the next one, when none is in progress).
    pub fn current_round(&self) -> u64 {
        self.base_round
            .wrapping_add(self.shared.epoch.load(Ordering::Acquire) as u64)
    }

    /// The accumulator's backend.
    pub fn backend(&self) -> &'a B {
        self.backend
    }

    /// This party's residual (what its encoder has not sent yet).
    pub fn residual(&self) -> &B::Buffer {
        &self.state.residual
    }

    /// This party's encoder.
    pub fn encoder(&self) -> &E {
        &self.state.encoder
    }

    /// Joins `ticket`'s round without contributing: this party applies the round's update
    /// to its replica but publishes nothing (a worker without data this round). Waits while
    /// earlier rounds are in progress.
    ///
    /// # Errors
    /// As [`Party::store_update`], without the backend's.
    pub fn abstain(&mut self, ticket: Ticket) -> Result<(), RoundError<B::Error, T::Error>> {
        self.join(ticket, false)
    }

    /// Completes the round this party joined: waits for every member (the last to arrive
    /// exchanges with the transport, validates and orders the packets), decodes every
    /// packet of the round in global sender order into this party's update buffer, steps
    /// `params -= update` (or `update / k`), and waits until every member is done reading.
    ///
    /// # Errors
    /// [`ProtocolError::Poisoned`] when another party failed; [`ProtocolError::RoundMisuse`] without a
    /// joined round; for the leader, the transport's error and the validation errors
    /// ([`ProtocolError::DuplicateSender`], [`ProtocolError::UnknownSender`], [`ProtocolError::WrongRound`],
    /// [`ProtocolError::SenderMismatch`], the parse errors); backend errors. Every error poisons.
    pub fn apply_update(
        &mut self,
        params: &mut B::Buffer,
    ) -> Result<RoundSummary, RoundError<B::Error, T::Error>> {
        let Phase::Joined {
            round,
            members,
            contributed,
        } = self.state.phase
        else {
            let round = self.current_round();
            let party = self.state.index;
            return Err(self.fail(
                Error::Protocol(ProtocolError::RoundMisuse {
                    party,
                    round,
                    reason: "apply_update without store_update or abstain",
                })
                .into(),
            ));
        };
        let shared = self.shared;
        let config = self.config;
        let party = self.state.index;
        if let Some(poison) = shared.barrier.poisoned() {
            self.state.phase = Phase::Idle;
            shared.report_failure(self.current_round());
            return Err(poison.to_error().into());
        }
        let t0 = now(config);
        let epoch = round.wrapping_sub(self.base_round) as usize;

        // Barrier A: everyone has published; the leader exchanges and orders.
        let led = if members > 1 {
            let mut lead_error = None;
            let timeout = self.timeout();
            shared.set_stamp(party, epoch, STAMP_AT_A);
            let waited = shared.barrier.wait_bounded(
                members,
                timeout,
                || {
                    // SAFETY: every member waits at this barrier while its leader runs this.
                    unsafe { shared.lead(round, config) }.map_err(|e| {
                        let poison = Poison {
                            party: Some(party),
                            round,
                            cause: PoisonCause::Failed(e.kind()),
                        };
                        lead_error = Some(e);
                        poison
                    })
                },
                |arrived| {
                    let missing = shared.missing(party, epoch, STAMP_AT_A, members, arrived);
                    timed_out(party, round, WaitStage::Publish, missing, timeout)
                },
            );
            match waited {
                Ok(w) => w.is_leader(),
                Err(e) => {
                    self.state.phase = Phase::Idle;
                    shared.report_failure(self.current_round());
                    return Err(lead_error.unwrap_or(RoundError::Round(e)));
                }
            }
        } else {
            // SAFETY: the only member; the gate orders it against other rounds.
            if let Err(e) = unsafe { shared.lead(round, config) } {
                return Err(self.fail(e));
            }
            true
        };
        let t1 = now(config);

        // Decode every packet in canonical order, then step.
        // SAFETY: between barriers A and B the round data and the slots are read-only.
        let data = unsafe { shared.data() };
        if let Err(e) = self.decode_and_step(data, params) {
            return Err(self.fail(e));
        }
        self.state.stepped = Some(round);
        let t2 = now(config);
        let summary = RoundSummary {
            round,
            members,
            packets: data.order.len(),
            local_packets: data.local.len(),
            remote_packets: data.remote_count,
            bytes_published: data.local_bytes,
            bytes_received: data.remote_bytes,
            own_bytes: if contributed { self.state.own_bytes } else { 0 },
            contributed,
            led,
            scale: data.scale,
            encode_ns: if contributed { self.state.encode_ns } else { 0 },
            exchange_ns: t1.saturating_sub(t0),
            transport_ns: data.transport_ns,
            decode_ns: t2.saturating_sub(t1),
            sync_ns: 0,
        };

        // Barrier B: nobody reads this round's slots and data any more.
        if members > 1 {
            let timeout = self.timeout();
            shared.set_stamp(party, epoch, STAMP_AT_B);
            match shared.barrier.wait_bounded(
                members,
                timeout,
                || {
                    shared.close_counts();
                    Ok(())
                },
                |arrived| {
                    let missing = shared.missing(party, epoch, STAMP_AT_B, members, arrived);
                    timed_out(party, round, WaitStage::Apply, missing, timeout)
                },
            ) {
                Ok(w) => {
                    if w.is_leader() {
                        shared.open_next(config.parties);
                    }
                }
                Err(e) => {
                    self.state.phase = Phase::Idle;
                    shared.report_failure(self.current_round());
                    return Err(e.into());
                }
            }
        } else {
            shared.set_stamp(party, epoch, STAMP_AT_B);
            shared.close_counts();
            shared.open_next(config.parties);
        }
        self.state.phase = Phase::Idle;
        self.state.published = None;
        Ok(RoundSummary {
            sync_ns: now(config).saturating_sub(t2),
            ..summary
        })
    }

    /// Poisons the accumulator on behalf of this party (its work failed outside the round
    /// protocol, say), so that every other party returns [`ProtocolError::Poisoned`] naming it.
    /// Returns `false` when it was already poisoned (the first poison wins).
    pub fn abort(&mut self, cause: PoisonCause) -> bool {
        let round = match self.state.phase {
            Phase::Joined { round, .. } => round,
            Phase::Idle => self.current_round(),
        };
        self.state.phase = Phase::Idle;
        let won = self.shared.barrier.poison(Poison {
            party: Some(self.state.index),
            round,
            cause,
        });
        self.shared.report_failure(self.current_round());
        won
    }

    /// The poison, if some party failed.
    pub fn poisoned(&self) -> Option<Poison> {
        self.shared.barrier.poisoned()
    }

    fn decode_and_step(
        &mut self,
        data: &RoundData,
        params: &mut B::Buffer,
    ) -> Result<(), RoundError<B::Error, T::Error>> {
        if data.order.is_empty() {
            return Ok(());
        }
        let b = self.backend;
        let st = &mut *self.state;
        if !st.update_zeroed {
            b.fill(&mut st.update, 0.0).map_err(RoundError::Backend)?;
            st.update_zeroed = true;
        }
        // Every message was validated once when it was published (local) or received
        // (remote): decode from the checked views, in canonical order.
        let slots = &self.shared.slots;
        let msgs = data.order.iter().flat_map(move |src| {
            let (bytes, msgs) = match *src {
                // SAFETY: between barriers A and B nobody writes a slot.
                Source::Local(i) => unsafe { slots[i as usize].checked() },
                Source::Remote(j) => {
                    let e = data.remote_entries[j as usize];
                    let all = &data.remote_msgs;
                    let lo = all.partition_point(|m| m.start() < e.start);
                    let hi = all.partition_point(|m| m.start() < e.start + e.len);
                    (&data.remote_arena[..], &all[lo..hi])
                }
            };
            msgs.iter().map(move |m| m.view(bytes))
        });
        st.update_zeroed = false;
        b.apply_messages(msgs, &mut st.update, params, data.scale)
            .map_err(RoundError::Backend)?;
        st.update_zeroed = true;
        Ok(())
    }

    /// Joins a round: the gate (wait for the previous round), then the member count.
    fn join(
        &mut self,
        ticket: Ticket,
        contributes: bool,
    ) -> Result<(), RoundError<B::Error, T::Error>> {
        let party = self.state.index;
        if let Phase::Joined { round, .. } = self.state.phase {
            return Err(self.fail(
                Error::Protocol(ProtocolError::RoundMisuse {
                    party,
                    round,
                    reason: "joined a round again before apply_update",
                })
                .into(),
            ));
        }
        if let Some(poison) = self.shared.barrier.poisoned() {
            self.state.phase = Phase::Idle;
            self.shared.report_failure(self.current_round());
            return Err(poison.to_error().into());
        }
        let m = ticket.members;
        if m == 0 || m > self.config.parties {
            return Err(self.fail(
                Error::Config(ConfigError::PartiesOutOfRange {
                    parties: m,
                    max: self.config.parties,
                })
                .into(),
            ));
        }
        let shared = self.shared;
        let relative = ticket.round.wrapping_sub(self.base_round);
        let target = relative as usize;
        let mut current = None;
        let timeout = self.timeout();
        let (base, parties) = (self.base_round, self.config.parties);
        if relative > (usize::MAX / 2) as u64 {
            current = Some(shared.epoch.load(Ordering::Acquire));
        } else if let Err(e) = shared.barrier.wait_until_bounded(
            || {
                let e = shared.epoch.load(Ordering::Acquire);
                let ahead = target.wrapping_sub(e);
                if ahead == 0 {
                    true
                } else if ahead <= usize::MAX / 2 {
                    false // an earlier round is still in progress: wait for ours
                } else {
                    current = Some(e); // our round is over
                    true
                }
            },
            timeout,
            || {
                // Name the round still running, and who has not finished it.
                let e = shared.epoch.load(Ordering::Acquire);
                timed_out(
                    party,
                    base.wrapping_add(e as u64),
                    WaitStage::Join,
                    shared.missing(party, e, STAMP_AT_B, parties, parties),
                    timeout,
                )
            },
        ) {
            return Err(self.fail(e.into()));
        }
        if let Some(e) = current {
            return Err(self.fail(
                Error::Protocol(ProtocolError::TicketOutOfOrder {
                    party,
                    ticket: ticket.round,
                    current: self.base_round.wrapping_add(e as u64),
                })
                .into(),
            ));
        }
        let joined = shared.joined.fetch_add(1, Ordering::AcqRel) + 1;
        let agreed =
            match shared
                .members
                .compare_exchange(0, m, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(existing) => existing == m,
            };
        let reason = if !agreed {
            Some("the ticket's member count differs from the round's")
        } else if joined > m {
            Some("more parties joined than the ticket's member count")
        } else if shared.epoch.load(Ordering::Acquire) != target {
            Some("the round ended while this party joined it (too many members?)")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(self.fail(
                Error::Protocol(ProtocolError::RoundMisuse {
                    party,
                    round: ticket.round,
                    reason,
                })
                .into(),
            ));
        }
        shared.set_stamp(party, target, STAMP_JOINED);
        self.state.phase = Phase::Joined {
            round: ticket.round,
            members: m,
            contributed: contributes,
        };
        Ok(())
    }

    /// The bound of each wait, when the configuration has one.
    fn timeout(&self) -> Option<Timeout> {
        Some(Timeout::new(self.config.timeout?, self.config.clock?))
    }

    /// Poisons with this failure (unless it is someone else's poison), leaves the round,
    /// and tells the other nodes if this node has not exchanged the round in progress.
    fn fail(&mut self, error: RoundError<B::Error, T::Error>) -> RoundError<B::Error, T::Error> {
        let round = match self.state.phase {
            Phase::Joined { round, .. } => round,
            Phase::Idle => self.current_round(),
        };
        self.state.phase = Phase::Idle;
        if !matches!(
            error,
            RoundError::Round(Error::Protocol(ProtocolError::Poisoned { .. }))
        ) {
            self.shared.barrier.poison(Poison {
                party: Some(self.state.index),
                round,
                cause: PoisonCause::Failed(error.kind()),
            });
        }
        self.shared.report_failure(self.current_round());
        error
    }
}

impl<B: Backend, E, T: Transport, R: Relax> Drop for Party<'_, B, E, T, R> {
    fn drop(&mut self) {
        let cause = if panicking() {
            PoisonCause::Panicked
        } else if let Phase::Joined { .. } = self.state.phase {
            PoisonCause::Abandoned
        } else {
            return;
        };
        let round = match self.state.phase {
            Phase::Joined { round, .. } => round,
            Phase::Idle => self
                .base_round
                .wrapping_add(self.shared.epoch.load(Ordering::Acquire) as u64),
        };
        self.state.phase = Phase::Idle;
        self.shared.barrier.poison(Poison {
            party: Some(self.state.index),
            round,
            cause,
        });
        let current = self
            .base_round
            .wrapping_add(self.shared.epoch.load(Ordering::Acquire) as u64);
        self.shared.report_failure(current);
    }
}

impl<B: Backend, E, T: Transport, R: Relax> fmt::Debug for Party<'_, B, E, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Party")
            .field("index", &self.state.index)
            .field("phase", &self.state.phase)
            .finish_non_exhaustive()
    }
}
