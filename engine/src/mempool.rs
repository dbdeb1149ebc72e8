//! The mempool: verified transactions waiting for a block, bounded.
//!
//! Transactions are kept per sender in nonce order. A block takes senders
//! in the order they first arrived (round robin, so one busy sender cannot
//! starve the others) and from each the run of consecutive nonces that
//! starts at the sender's committed next nonce. A sender whose lowest
//! waiting nonce is above that waits for the gap to fill (nonces 5, 6, 7
//! with 5 arriving last are all applied), for at most
//! [`GAP_WAIT_TAKES_MAX`] blocks; a nonce more than [`NONCE_AHEAD_MAX`]
//! above the committed one is refused at admission. Both bound what a
//! sender can park in the pool without ever paying a fee.

use std::collections::{BTreeMap, HashMap, VecDeque};

use int_schemas::AccountId;

use crate::ingress::VerifiedTx;

/// Why the mempool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// The pool holds its maximum.
    #[error("mempool full ({0} transactions)")]
    Full(usize),
    /// A transaction with the same sender and nonce is already waiting.
    #[error("duplicate nonce {0} for this sender")]
    Duplicate(u64),
    /// The nonce is below the sender's committed next nonce (a replay).
    #[error("stale nonce {got}, next is {next}")]
    StaleNonce {
        /// The sender's committed next nonce.
        next: u64,
        /// The transaction's.
        got: u64,
    },
    /// The nonce is [`NONCE_AHEAD_MAX`] or more above the sender's
    /// committed next nonce.
    #[error("nonce {got} too far ahead, next is {next}")]
    NonceTooFar {
        /// The sender's committed next nonce.
        next: u64,
        /// The transaction's.
        got: u64,
    },
}

/// A transaction's nonce may be at most this far above its sender's
/// committed next nonce (the pool holds at most this many of one sender's
/// transactions behind a gap).
pub const NONCE_AHEAD_MAX: u64 = 4096;

/// A sender whose lowest waiting nonce is above its committed one keeps its
/// transactions for this many blocks (takes) at most; then they are
/// dropped (the missing nonce is not coming).
pub const GAP_WAIT_TAKES_MAX: u32 = 64;

impl MempoolError {
    /// The stable code a client is told.
    pub fn status(&self) -> int_schemas::wire::TxStatus {
        use int_schemas::wire::TxStatus as S;
        match self {
            Self::Full(_) => S::MempoolFull,
            Self::Duplicate(_) => S::DuplicateNonce,
            Self::StaleNonce { .. } | Self::NonceTooFar { .. } => S::BadNonce,
        }
    }
}

/// Verified transactions waiting for inclusion.
pub struct Mempool {
    by_sender: HashMap<AccountId, Waiting>,
    queue: VecDeque<AccountId>,
    len: usize,
    capacity: usize,
    dropped: u64,
}

/// One sender's transactions, by nonce, and how many takes in a row found
/// a gap before them.
#[derive(Default)]
struct Waiting {
    txs: BTreeMap<u64, VerifiedTx>,
    gap_takes: u32,
}

impl Mempool {
    /// A pool of at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        Self {
            by_sender: HashMap::new(),
            queue: VecDeque::new(),
            len: 0,
            capacity,
            dropped: 0,
        }
    }

    /// Transactions dropped without reaching a block: below their sender's
    /// committed nonce when taken, or behind a gap that did not fill.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Admits a verified transaction; `committed_nonce` is the sender's next
    /// nonce in the committed state, if known.
    pub fn admit(
        &mut self,
        tx: VerifiedTx,
        committed_nonce: Option<u64>,
    ) -> Result<(), MempoolError> {
        if let Some(next) = committed_nonce {
            if tx.nonce < next {
                return Err(MempoolError::StaleNonce {
                    next,
                    got: tx.nonce,
                });
            }
            if tx.nonce - next >= NONCE_AHEAD_MAX {
                return Err(MempoolError::NonceTooFar {
                    next,
                    got: tx.nonce,
                });
            }
        }
        if self.len >= self.capacity {
            return Err(MempoolError::Full(self.capacity));
        }
        let sender = tx.sender;
        let q = &mut self.by_sender.entry(sender).or_default().txs;
        if q.contains_key(&tx.nonce) {
            return Err(MempoolError::Duplicate(tx.nonce));
        }
        if q.is_empty() {
            self.queue.push_back(sender);
        }
        q.insert(tx.nonce, tx);
        self.len += 1;
        Ok(())
    }

    /// Takes up to `max` transactions for a block: senders round robin,
    /// from each the run of consecutive nonces that starts at
    /// `next_nonce(sender)`, its committed next nonce (`None`: unknown, and
    /// the run starts at its lowest nonce; execution judges it). Waiting
    /// transactions below the committed nonce are dropped: they can only
    /// fail. A sender with a gap before its lowest nonce keeps its place and
    /// its transactions, for [`GAP_WAIT_TAKES_MAX`] takes.
    pub fn take(
        &mut self,
        max: usize,
        mut next_nonce: impl FnMut(&AccountId) -> Option<u64>,
    ) -> Vec<VerifiedTx> {
        let mut out = Vec::with_capacity(max.min(self.len));
        let mut rounds = self.queue.len();
        while out.len() < max && rounds > 0 {
            rounds -= 1;
            let Some(sender) = self.queue.pop_front() else {
                break;
            };
            let Some(w) = self.by_sender.get_mut(&sender) else {
                continue;
            };
            let committed = next_nonce(&sender);
            if let Some(next) = committed {
                // Replaced by a committed transaction with the same nonce.
                let keep = w.txs.split_off(&next);
                let stale = std::mem::replace(&mut w.txs, keep).len();
                self.len -= stale;
                self.dropped += stale as u64;
            }
            let mut expect = committed;
            let mut taken = 0usize;
            while out.len() < max {
                let Some(entry) = w.txs.first_entry() else {
                    break;
                };
                if expect.is_some_and(|e| *entry.key() != e) {
                    break;
                }
                expect = Some(entry.key() + 1);
                out.push(entry.remove());
                self.len -= 1;
                taken += 1;
            }
            if taken > 0 || w.txs.is_empty() {
                w.gap_takes = 0;
            } else {
                // Its lowest nonce is above the committed one.
                w.gap_takes += 1;
                if w.gap_takes > GAP_WAIT_TAKES_MAX {
                    self.len -= w.txs.len();
                    self.dropped += w.txs.len() as u64;
                    w.txs.clear();
                }
            }
            if w.txs.is_empty() {
                self.by_sender.remove(&sender);
            } else {
                self.queue.push_back(sender);
            }
        }
        debug_assert_eq!(
            self.len,
            self.by_sender.values().map(|w| w.txs.len()).sum::<usize>()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::bls::SecretKey;
    use crate::ingress::{IngressConfig, assume_verified};
    use int_schemas::wire::Token;
    use int_schemas::{PayloadSpec, TxBodySpec, build_envelope, build_tx_body};

    const CFG: IngressConfig = IngressConfig {
        chain_id: 1,
        min_fee: 0,
    };

    /// A transfer from `sender` with `nonce` (the signature is a real point
    /// but not checked: the pool never verifies).
    fn tx(sender: u8, nonce: u64) -> VerifiedTx {
        let body = build_tx_body(&TxBodySpec {
            chain_id: 1,
            sender: [sender; 32],
            nonce,
            fee: 1,
            payload: PayloadSpec::Transfer {
                to: [0xee; 32],
                amount: 1,
                token: Token::Int,
            },
        });
        let sig = SecretKey::from_seed(&[7; 32]).sign(b"any").to_bytes();
        assume_verified(&CFG, build_envelope(&body, &sig)).unwrap()
    }

    fn order(txs: &[VerifiedTx]) -> Vec<(u8, u64)> {
        txs.iter().map(|t| (t.sender[0], t.nonce)).collect()
    }

    #[test]
    fn take_is_round_robin_in_nonce_order_and_bounded() {
        let mut pool = Mempool::new(100);
        for (s, n) in [(1, 1), (1, 0), (2, 5), (1, 2), (3, 0)] {
            pool.admit(tx(s, n), None).unwrap();
        }
        assert_eq!(pool.len(), 5);
        // Sender 1 arrived first: its run 0, 1, 2; then 2, then 3.
        let got = pool.take(4, unknown);
        assert_eq!(order(&got), vec![(1, 0), (1, 1), (1, 2), (2, 5)]);
        assert_eq!(pool.len(), 1);
        assert_eq!(order(&pool.take(10, unknown)), vec![(3, 0)]);
        assert!(pool.is_empty());
        assert!(pool.take(10, unknown).is_empty());
    }

    /// No sender's committed nonce is known.
    fn unknown(_: &AccountId) -> Option<u64> {
        None
    }

    /// Committed next nonces, per sender byte.
    fn committed(next: &[(u8, u64)]) -> impl FnMut(&AccountId) -> Option<u64> + '_ {
        |a| next.iter().find(|(s, _)| *s == a[0]).map(|(_, n)| *n)
    }

    #[test]
    fn a_gap_ends_a_senders_run() {
        let mut pool = Mempool::new(100);
        for n in [0, 1, 3] {
            pool.admit(tx(1, n), Some(0)).unwrap();
        }
        assert_eq!(
            order(&pool.take(10, committed(&[(1, 0)]))),
            vec![(1, 0), (1, 1)]
        );
        // Nonce 3 waits behind the gap at 2 (the block made 2 the
        // committed next nonce) until 2 arrives.
        assert!(pool.take(10, committed(&[(1, 2)])).is_empty());
        assert_eq!(pool.len(), 1);
        pool.admit(tx(1, 2), Some(2)).unwrap();
        assert_eq!(
            order(&pool.take(10, committed(&[(1, 2)]))),
            vec![(1, 2), (1, 3)]
        );
        assert_eq!(pool.dropped(), 0);
    }

    #[test]
    fn nonces_arriving_in_reverse_are_all_taken_once_the_first_comes() {
        let mut pool = Mempool::new(100);
        for n in [7, 6] {
            pool.admit(tx(1, n), Some(5)).unwrap();
        }
        pool.admit(tx(2, 0), Some(0)).unwrap();
        // Sender 1 waits; sender 2 is not held up by it.
        let next = [(1, 5), (2, 0)];
        assert_eq!(order(&pool.take(10, committed(&next))), vec![(2, 0)]);
        pool.admit(tx(1, 5), Some(5)).unwrap();
        assert_eq!(
            order(&pool.take(10, committed(&next))),
            vec![(1, 5), (1, 6), (1, 7)]
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn nonces_a_committed_block_used_are_dropped_when_taken() {
        let mut pool = Mempool::new(100);
        for n in [0, 1, 2] {
            pool.admit(tx(1, n), Some(0)).unwrap();
        }
        // Another node's block committed nonces 0 and 1 of this sender.
        assert_eq!(order(&pool.take(10, committed(&[(1, 2)]))), vec![(1, 2)]);
        assert_eq!((pool.len(), pool.dropped()), (0, 2));
    }

    #[test]
    fn a_gap_that_never_fills_is_dropped_and_frees_the_pool() {
        let mut pool = Mempool::new(3);
        for n in [1, 2] {
            pool.admit(tx(1, n), Some(0)).unwrap();
        }
        let next = [(1, 0), (2, 0)];
        for _ in 0..GAP_WAIT_TAKES_MAX {
            assert!(pool.take(10, committed(&next)).is_empty());
            assert_eq!(pool.len(), 2);
        }
        // One take more and the sender's transactions go.
        assert!(pool.take(10, committed(&next)).is_empty());
        assert_eq!((pool.len(), pool.dropped()), (0, 2));
        for n in 0..3 {
            pool.admit(tx(2, n), Some(0)).unwrap();
        }
        assert_eq!(pool.take(10, committed(&next)).len(), 3);
    }

    #[test]
    fn full_duplicate_and_stale_are_refused() {
        let mut pool = Mempool::new(2);
        pool.admit(tx(1, 4), Some(4)).unwrap();
        assert_eq!(pool.admit(tx(1, 4), None), Err(MempoolError::Duplicate(4)));
        assert_eq!(
            pool.admit(tx(2, 1), Some(2)),
            Err(MempoolError::StaleNonce { next: 2, got: 1 })
        );
        assert_eq!(
            pool.admit(tx(2, 2 + NONCE_AHEAD_MAX), Some(2)),
            Err(MempoolError::NonceTooFar {
                next: 2,
                got: 2 + NONCE_AHEAD_MAX
            })
        );
        pool.admit(tx(2, 1 + NONCE_AHEAD_MAX), Some(2)).unwrap();
        assert_eq!(pool.admit(tx(3, 0), None), Err(MempoolError::Full(2)));
        assert_eq!(pool.len(), 2);
    }
}
