//! [`Loopback`]: an in-process [`Transport`] between several accumulators ("nodes") of one
//! process, for tests of everything a multi-node transport touches (global sender ids, the
//! merge of local and remote packets, remote validation) without a network.
//!
//! Every node's round leader deposits its local packets in the shared [`LoopbackHub`],
//! meets the other nodes' leaders at a barrier, copies their packets, and meets them again
//! (so nobody overwrites a deposit another node still reads). Storage is sized once.
//!
//! Nothing waits forever: each meeting is bounded by the hub's timeout
//! ([`super::DEFAULT_TIMEOUT`] with `std`, [`LoopbackHub::with_timeout`] to choose), and a
//! node that waits longer poisons the hub with a [`PoisonCause::TimedOut`] record naming
//! the nodes that did not arrive. A node whose round failed before its exchange tells the
//! others ([`Transport::fail_round`]), and dropping an endpoint poisons the hub too. Every
//! other node's exchange then fails with [`ProtocolError::Poisoned`](crate::ProtocolError::Poisoned), whose `party` names the
//! *node* that failed (or, for a timeout, the node that gave up). A poisoned hub stays
//! poisoned: the loopback is a transport for tests, and a failed exchange ends it.

use super::transport::{LocalPackets, RemotePackets, Transport};
use crate::barrier::{
    Barrier, PartySet, Poison, PoisonCause, Relax, SpinThenYield, Timeout, WaitStage,
};
use crate::error::Error;
use crate::error::{CodecError, ConfigError};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

/// One node's deposit for the current round.
#[derive(Debug)]
struct Area {
    /// The packets back to back; capacity fixed at construction.
    bytes: Vec<u8>,
    /// `(sender, start, len)` per packet.
    entries: Vec<(u32, usize, usize)>,
}

/// The meeting point of the [`Loopback`] endpoints; see the [module docs](self).
pub struct LoopbackHub<R: Relax = SpinThenYield> {
    parties: Vec<usize>,
    first_senders: Vec<u32>,
    total: u32,
    areas: Vec<spin::Mutex<Area>>,
    barrier: Barrier<R>,
    /// The bound of each meeting.
    timeout: Option<Timeout>,
    /// How many meetings each node has arrived at: diagnostics, to name the nodes a
    /// timed-out meeting waited for (ordered by nothing).
    arrivals: Vec<AtomicUsize>,
}

impl<R: Relax> LoopbackHub<R> {
    /// A hub for `parties_per_node.len()` nodes; node j has `parties_per_node[j]` parties
    /// with global sender ids starting at [`LoopbackHub::first_sender`]`(j)`, and packets
    /// of at most `max_packet_len` bytes.
    ///
    /// Each meeting of the nodes is bounded by [`super::DEFAULT_TIMEOUT`] with `std`
    /// (unbounded without it); see [`LoopbackHub::with_timeout`].
    ///
    /// # Errors
    /// [`ConfigError::Round`] without nodes, or when sender ids overflow `u32`.
    pub fn new(parties_per_node: &[usize], max_packet_len: usize) -> Result<Arc<Self>, Error> {
        #[cfg(feature = "std")]
        let timeout = Some(Timeout::new(super::DEFAULT_TIMEOUT, super::std_clock));
        #[cfg(not(feature = "std"))]
        let timeout = None;
        Self::build(parties_per_node, max_packet_len, timeout)
    }

    /// As [`LoopbackHub::new`], with each meeting of the nodes bounded by `timeout`
    /// (`None`: unbounded).
    ///
    /// # Errors
    /// As [`LoopbackHub::new`].
    pub fn with_timeout(
        parties_per_node: &[usize],
        max_packet_len: usize,
        timeout: Option<Timeout>,
    ) -> Result<Arc<Self>, Error> {
        Self::build(parties_per_node, max_packet_len, timeout)
    }

    fn build(
        parties_per_node: &[usize],
        max_packet_len: usize,
        timeout: Option<Timeout>,
    ) -> Result<Arc<Self>, Error> {
        if parties_per_node.is_empty() {
            return Err(ConfigError::Round {
                reason: "a loopback hub needs at least one node",
            }
            .into());
        }
        let mut first_senders = Vec::with_capacity(parties_per_node.len());
        let mut total: u64 = 0;
        for &p in parties_per_node {
            first_senders.push(total as u32);
            total += p as u64;
            if total > u32::MAX as u64 {
                return Err(ConfigError::Round {
                    reason: "loopback sender ids exceed u32",
                }
                .into());
            }
        }
        let areas = parties_per_node
            .iter()
            .map(|&p| {
                spin::Mutex::new(Area {
                    bytes: Vec::with_capacity(p * max_packet_len),
                    entries: Vec::with_capacity(p),
                })
            })
            .collect();
        Ok(Arc::new(LoopbackHub {
            parties: parties_per_node.to_vec(),
            first_senders,
            total: total as u32,
            areas,
            barrier: Barrier::new(),
            timeout,
            arrivals: parties_per_node
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }))
    }

    /// Node `node` meets the others: a barrier of every node, bounded by the hub's timeout.
    fn meet(&self, node: usize, round: u64) -> Result<(), Error> {
        let nodes = self.nodes();
        let mine = self.arrivals[node].fetch_add(1, Ordering::Relaxed) + 1;
        let timed_out = |_arrived| {
            let mut missing = PartySet::EMPTY;
            for (j, a) in self.arrivals.iter().enumerate() {
                if a.load(Ordering::Relaxed) < mine {
                    missing.insert(j);
                }
            }
            Poison {
                party: Some(node as u32),
                round,
                cause: PoisonCause::TimedOut {
                    stage: WaitStage::Exchange,
                    missing,
                    after: self.timeout.map_or(Duration::ZERO, |t| t.after),
                },
            }
        };
        let met = self
            .barrier
            .wait_bounded(nodes, self.timeout, || Ok(()), timed_out);
        if met.is_err() {
            // Withdrawn (or never counted): this node did not complete the meeting.
            self.arrivals[node].fetch_sub(1, Ordering::Relaxed);
        }
        met.map(drop)
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.parties.len()
    }

    /// The global sender id of node `node`'s party 0 (its [`super::RoundConfig::first_sender`]).
    ///
    /// # Panics
    /// If `node` is out of range.
    pub fn first_sender(&self, node: usize) -> u32 {
        self.first_senders[node]
    }

    /// The endpoint of node `node`, to give to that node's accumulator.
    ///
    /// # Panics
    /// If `node` is out of range.
    pub fn endpoint(self: &Arc<Self>, node: usize) -> Loopback<R> {
        assert!(node < self.nodes(), "node {node} out of range");
        Loopback {
            hub: Arc::clone(self),
            node,
        }
    }
}

impl<R: Relax> fmt::Debug for LoopbackHub<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackHub")
            .field("parties", &self.parties)
            .field("barrier", &self.barrier)
            .finish_non_exhaustive()
    }
}

/// One node's endpoint of a [`LoopbackHub`].
pub struct Loopback<R: Relax = SpinThenYield> {
    hub: Arc<LoopbackHub<R>>,
    node: usize,
}

impl<R: Relax> Loopback<R> {
    /// This endpoint's node.
    pub fn node(&self) -> usize {
        self.node
    }
}

impl<R: Relax> fmt::Debug for Loopback<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loopback")
            .field("node", &self.node)
            .finish()
    }
}

impl<R: Relax> Transport for Loopback<R> {
    type Error = Error;

    fn max_remote_packets(&self) -> usize {
        self.hub.total as usize - self.hub.parties[self.node]
    }

    fn is_remote_sender(&self, sender: u32) -> bool {
        let first = self.hub.first_senders[self.node];
        let local = first..first + self.hub.parties[self.node] as u32;
        sender < self.hub.total && !local.contains(&sender)
    }

    fn exchange(
        &mut self,
        round: u64,
        local: &LocalPackets<'_>,
        remote: &mut RemotePackets<'_>,
    ) -> Result<(), Error> {
        let hub = &*self.hub;
        {
            let mut area = hub.areas[self.node].lock();
            let area = &mut *area;
            area.bytes.clear();
            area.entries.clear();
            for p in local.iter() {
                let start = area.bytes.len();
                if start + p.bytes.len() > area.bytes.capacity() {
                    return Err(CodecError::BufferTooSmall {
                        needed: start + p.bytes.len(),
                        got: area.bytes.capacity(),
                    }
                    .into());
                }
                area.bytes.extend_from_slice(p.bytes);
                area.entries.push((p.sender, start, p.bytes.len()));
            }
        }
        hub.meet(self.node, round)?;
        let mut result = Ok(());
        for (j, area) in hub.areas.iter().enumerate() {
            if j == self.node {
                continue;
            }
            let area = area.lock();
            for &(sender, start, len) in &area.entries {
                if result.is_ok() {
                    result = remote.push(sender, &area.bytes[start..start + len]);
                }
            }
        }
        // Meet again even after a failure, so no node overwrites what another still reads.
        hub.meet(self.node, round)?;
        result
    }

    /// Poisons the hub with this node's failure: every other node's exchange of `round`
    /// (and every later one) fails with [`ProtocolError::Poisoned`](crate::ProtocolError::Poisoned) naming this node and the cause.
    fn fail_round(&mut self, round: u64, poison: &Poison) {
        self.hub.barrier.poison(Poison {
            party: Some(self.node as u32),
            round,
            cause: poison.cause,
        });
    }
}

impl<R: Relax> Drop for Loopback<R> {
    fn drop(&mut self) {
        self.hub.barrier.poison(Poison {
            party: Some(self.node as u32),
            round: 0,
            cause: PoisonCause::Abandoned,
        });
    }
}
