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
