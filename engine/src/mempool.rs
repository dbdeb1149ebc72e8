//! The mempool: verified transactions waiting for a block, bounded.
//!
//! Transactions are kept per sender in nonce order. A block takes senders
//! in the order they first arrived (round robin, so one busy sender cannot
//! starve the others) and from each the run of consecutive nonces it has.

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
}

impl MempoolError {
    /// The stable code a client is told.
    pub fn status(&self) -> int_schemas::wire::TxStatus {
        use int_schemas::wire::TxStatus as S;
        match self {
            Self::Full(_) => S::MempoolFull,
            Self::Duplicate(_) => S::DuplicateNonce,
            Self::StaleNonce { .. } => S::BadNonce,
        }
    }
}

/// Verified transactions waiting for inclusion.
pub struct Mempool {
    by_sender: HashMap<AccountId, BTreeMap<u64, VerifiedTx>>,
    queue: VecDeque<AccountId>,
    len: usize,
    capacity: usize,
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
        }
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
        if let Some(next) = committed_nonce
            && tx.nonce < next
        {
            return Err(MempoolError::StaleNonce {
                next,
                got: tx.nonce,
            });
        }
        if self.len >= self.capacity {
            return Err(MempoolError::Full(self.capacity));
        }
        let sender = tx.sender;
        let q = self.by_sender.entry(sender).or_default();
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

    /// Takes up to `max` transactions for a block: senders round robin, each
    /// sender's consecutive nonces in order.
    pub fn take(&mut self, max: usize) -> Vec<VerifiedTx> {
        let mut out = Vec::with_capacity(max.min(self.len));
        let mut rounds = self.queue.len();
        while out.len() < max && rounds > 0 {
            rounds -= 1;
            let Some(sender) = self.queue.pop_front() else {
                break;
            };
            let Some(q) = self.by_sender.get_mut(&sender) else {
                continue;
            };
            let mut expect = None;
            while out.len() < max {
                let Some(entry) = q.first_entry() else { break };
                if expect.is_some_and(|e| *entry.key() != e) {
                    break;
                }
                expect = Some(entry.key() + 1);
                out.push(entry.remove());
                self.len -= 1;
            }
            if q.is_empty() {
                self.by_sender.remove(&sender);
            } else {
                self.queue.push_back(sender);
            }
        }
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
        let got = pool.take(4);
        assert_eq!(order(&got), vec![(1, 0), (1, 1), (1, 2), (2, 5)]);
        assert_eq!(pool.len(), 1);
        assert_eq!(order(&pool.take(10)), vec![(3, 0)]);
        assert!(pool.is_empty());
        assert!(pool.take(10).is_empty());
    }

    #[test]
    fn a_gap_ends_a_senders_run() {
        let mut pool = Mempool::new(100);
        for n in [0, 1, 3] {
            pool.admit(tx(1, n), None).unwrap();
        }
        assert_eq!(order(&pool.take(10)), vec![(1, 0), (1, 1)]);
        // Nonce 3 is not in this block's run. The pool does not know the
        // committed nonces when it takes, so the next block gets it, and
        // execution judges it (`BadNonce` unless 2 came in between).
        assert_eq!(pool.len(), 1);
        assert_eq!(order(&pool.take(10)), vec![(1, 3)]);
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
        pool.admit(tx(2, 2), Some(2)).unwrap();
        assert_eq!(pool.admit(tx(3, 0), None), Err(MempoolError::Full(2)));
        assert_eq!(pool.len(), 2);
    }
}
