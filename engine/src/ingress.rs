//! Ingress: what happens to transaction bytes before they reach the
//! mempool (DESIGN, data flow steps 1–2).
//!
//! Every envelope is verified as a FlatBuffer and kept as received. The
//! stateless checks (chain id, fee floor, payload shape, key encodings) run
//! in parallel; then all signatures of the batch are checked in one
//! random-scalar batch verification, and all proofs of possession in
//! another; the zero-knowledge proofs of anonymous intents, whose senders'
//! signatures passed, go to a [`ProofVerifier`] in one more batch. A
//! failing batch is bisected so only the bad transactions are dropped, each
//! with its own error.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use int_schemas::{
    AccountId, AnonIntentSpec, DecodeError, Hash32, PayloadSpec, PublicKeyBytes, amount, decode_tx,
    payload_spec,
};
use rayon::prelude::*;

use crate::crypto::bls::{
    self, BatchItem, BlsG1Backend, CpuG1, DST_POP, DST_SIG, PublicKey, Signature,
    batch_verify_bisect_with, tx_message,
};
use crate::storage::{StateView, Storage};

/// Why a transaction was refused at ingress. Each one is refused alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// The bytes are not a valid envelope.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The transaction names another chain.
    #[error("wrong chain id {got}, this chain is {expected}")]
    WrongChain {
        /// This node's chain.
        expected: u32,
        /// The transaction's.
        got: u32,
    },
    /// The fee is under this node's floor.
    #[error("fee {got} below the minimum {min}")]
    FeeTooLow {
        /// Floor.
        min: u128,
        /// Offered.
        got: u128,
    },
    /// No public key is known for the sender (not registered).
    #[error("sender is not registered")]
    UnknownSender,
    /// A registration whose sender is not the account of its key.
    #[error("sender is not the account of the registered key")]
    SenderKeyMismatch,
    /// The public key does not decode or fails validation.
    #[error("invalid public key")]
    BadPublicKey,
    /// A signature does not decode.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The proof of possession does not verify.
    #[error("bad proof of possession")]
    BadPop,
    /// An anonymous intent on a node that verifies no intent proofs.
    #[error("anonymous intents are not enabled on this chain")]
    IntentsDisabled,
    /// The intent's proof does not decode (points off the curve or
    /// outside the subgroup).
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    /// The intent's proof does not verify for its public inputs.
    #[error("proof does not verify")]
    BadProof,
}

impl IngressError {
    /// The stable code a client is told (the `TxStatus` of a transaction
    /// refused before any block).
    pub fn status(&self) -> int_schemas::wire::TxStatus {
        use int_schemas::wire::TxStatus as S;
        match self {
            Self::Decode(_) => S::Malformed,
            Self::WrongChain { .. } => S::WrongChain,
            Self::FeeTooLow { .. } => S::FeeTooLow,
            Self::UnknownSender => S::UnknownSender,
            Self::SenderKeyMismatch => S::SenderKeyMismatch,
            Self::BadPublicKey => S::BadPublicKey,
            Self::MalformedSignature | Self::BadSignature => S::BadSignature,
            Self::BadPop => S::InvalidPop,
            Self::IntentsDisabled => S::BpkDisabled,
            Self::MalformedProof(_) | Self::BadProof => S::BadProof,
        }
    }
}

/// Why a [`ProofVerifier`] refused one proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofRejection {
    /// The proof bytes do not decode to valid points.
    Malformed(String),
    /// The proof does not verify.
    Invalid,
}

/// Verifies the zero-knowledge proofs of anonymous intents, in batches:
/// the engine's view of the zk crate (DESIGN: `zk` is a leaf the engine
/// uses through small traits). Stateless: the chain checks the root,
/// epoch, centroids and nullifier when it executes the intent.
pub trait ProofVerifier: Sync {
    /// One answer per item, in order. Implementations batch the whole
    /// slice and bisect on failure, so one bad proof costs its own
    /// rejection, not the batch's.
    fn verify_intents(
        &self,
        chain_id: u32,
        items: &[&AnonIntentSpec],
    ) -> Vec<Result<(), ProofRejection>>;
}

/// A transaction that passed ingress: its envelope bytes as received and
/// the fields execution needs.
#[derive(Debug, Clone)]
pub struct VerifiedTx {
    bytes: Vec<u8>,
    body: Range<usize>,
    /// BLAKE3 hash of the body bytes (the transaction hash).
    pub hash: Hash32,
    /// Sending account.
    pub sender: AccountId,
    /// Claimed nonce.
    pub nonce: u64,
    /// Fee in GAS.
    pub fee: u128,
    /// What it does.
    pub payload: PayloadSpec,
    /// The verified signature (kept for the block's aggregate).
    pub signature: Signature,
}

impl VerifiedTx {
    /// The envelope bytes as received.
    pub fn envelope(&self) -> &[u8] {
        &self.bytes
    }

    /// The body bytes (what was signed).
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body.clone()]
    }
}

/// Where ingress finds the public keys of registered senders.
pub trait KeySource: Sync {
    /// The registered key of `id`, if any.
    fn public_key(&self, id: &AccountId) -> Option<PublicKey>;
}

/// Ingress parameters.
#[derive(Debug, Clone, Copy)]
pub struct IngressConfig {
    /// This chain's id.
    pub chain_id: u32,
    /// Lowest fee admitted.
    pub min_fee: u128,
}

/// The result of checking one batch.
#[derive(Debug, Default)]
pub struct CheckedBatch {
    /// Transactions that passed, in input order.
    pub accepted: Vec<VerifiedTx>,
    /// Index in the input and reason, for each refused one.
    pub rejected: Vec<(usize, IngressError)>,
}

struct Pending {
    tx: VerifiedTx,
    pop: Option<(PublicKey, Signature)>,
}

fn stateless(cfg: &IngressConfig, bytes: Vec<u8>) -> Result<Pending, IngressError> {
    let tx = decode_tx(&bytes)?;
    let body = tx.body;
    if body.chain_id() != cfg.chain_id {
        return Err(IngressError::WrongChain {
            expected: cfg.chain_id,
            got: body.chain_id(),
        });
    }
    let fee = amount(body.fee());
    if fee < cfg.min_fee {
        return Err(IngressError::FeeTooLow {
            min: cfg.min_fee,
            got: fee,
        });
    }
    let signature =
        Signature::from_bytes(tx.signature()).map_err(|_| IngressError::MalformedSignature)?;
    let sender = body.sender().0;
    let mut pop = None;
    let payload = payload_spec(&body)?;
    if let PayloadSpec::RegisterDevice {
        public_key, pop: p, ..
    } = &payload
    {
        let pk = PublicKey::from_bytes(public_key).map_err(|_| IngressError::BadPublicKey)?;
        if pk.account_id() != sender {
            return Err(IngressError::SenderKeyMismatch);
        }
        let p = Signature::from_bytes(p).map_err(|_| IngressError::BadPop)?;
        pop = Some((pk, p));
    }
    let start = tx.body_bytes.as_ptr() as usize - bytes.as_ptr() as usize;
    let body_range = start..start + tx.body_bytes.len();
    let hash = *blake3::hash(tx.body_bytes).as_bytes();
    let nonce = body.nonce();
    Ok(Pending {
        tx: VerifiedTx {
            bytes,
            body: body_range,
            hash,
            sender,
            nonce,
            fee,
            payload,
            signature,
        },
        pop,
    })
}

/// Decodes an envelope and runs the stateless checks, but NOT the signature
/// or proof-of-possession checks: the caller vouches that they were done
/// before. For replaying blocks from this node's own storage, and for
/// benchmarks of execution that must not measure verification. Never use it
/// on bytes from a wire.
pub fn assume_verified(cfg: &IngressConfig, bytes: Vec<u8>) -> Result<VerifiedTx, IngressError> {
    stateless(cfg, bytes).map(|p| p.tx)
}

/// Checks a batch of envelopes: decoding and stateless checks in parallel,
/// then one batched signature verification and one batched proof-of-
/// possession verification, bisected on failure. Anonymous intents are
/// refused ([`IngressError::IntentsDisabled`]); [`check_batch_with`] takes
/// a proof verifier.
pub fn check_batch(cfg: &IngressConfig, keys: &dyn KeySource, batch: Vec<Vec<u8>>) -> CheckedBatch {
    check_batch_with(cfg, keys, None, batch)
}

/// [`check_batch`], and the proofs of the anonymous intents whose
/// signatures passed verified by `proofs` in one batch (`None`: intents
/// are refused).
pub fn check_batch_with(
    cfg: &IngressConfig,
    keys: &dyn KeySource,
    proofs: Option<&dyn ProofVerifier>,
    batch: Vec<Vec<u8>>,
) -> CheckedBatch {
    check_batch_on(cfg, keys, proofs, &CpuG1, batch)
}

/// [`check_batch_with`], with the G1 work of the signature batches (hashing
/// to G1, scaling, the signatures' MSM) offered to `g1`, e.g. the GPU
/// kernels; the verdicts are the same whichever side computes.
pub fn check_batch_on(
    cfg: &IngressConfig,
    keys: &dyn KeySource,
    proofs: Option<&dyn ProofVerifier>,
    g1: &dyn BlsG1Backend,
    batch: Vec<Vec<u8>>,
) -> CheckedBatch {
    let n = batch.len();
    let decoded: Vec<Result<Pending, IngressError>> =
        batch.into_par_iter().map(|b| stateless(cfg, b)).collect();

    // Keys registered within this batch sign their own later transactions.
    let mut batch_keys: HashMap<AccountId, PublicKey> = HashMap::new();
    for p in decoded.iter().flatten() {
        if let Some((pk, _)) = &p.pop {
            batch_keys.entry(p.tx.sender).or_insert(*pk);
        }
    }

    let mut rejected = Vec::new();
    let mut live: Vec<(usize, Pending, PublicKey)> = Vec::with_capacity(n);
    // Whether the key of `live[i]` came from a registration of this batch
    // (it then counts only if such a registration passes its checks).
    let mut via_batch: Vec<bool> = Vec::with_capacity(n);
    for (i, r) in decoded.into_iter().enumerate() {
        match r {
            Err(e) => rejected.push((i, e)),
            Ok(p) => {
                let (pk, from_batch) = match &p.pop {
                    Some((pk, _)) => (Some(*pk), false),
                    None => match batch_keys.get(&p.tx.sender) {
                        Some(pk) => (Some(*pk), true),
                        None => (keys.public_key(&p.tx.sender), false),
                    },
                };
                match pk {
                    Some(pk) => {
                        live.push((i, p, pk));
                        via_batch.push(from_batch);
                    }
                    None => rejected.push((i, IngressError::UnknownSender)),
                }
            }
        }
    }

    let msgs: Vec<Vec<u8>> = live
        .par_iter()
        .map(|(_, p, _)| tx_message(cfg.chain_id, p.tx.body()))
        .collect();
    let items: Vec<BatchItem<'_>> = live
        .iter()
        .zip(&msgs)
        .map(|((_, p, pk), m)| BatchItem {
            pk,
            msg: m,
            sig: &p.tx.signature,
        })
        .collect();
    let mut bad = vec![None; live.len()];
    for i in batch_verify_bisect_with(&items, DST_SIG, g1) {
        bad[i] = Some(IngressError::BadSignature);
    }

    let pop_idx: Vec<usize> = (0..live.len())
        .filter(|&i| live[i].1.pop.is_some())
        .collect();
    let pop_msgs: Vec<PublicKeyBytes> = pop_idx.iter().map(|&i| live[i].2.to_bytes()).collect();
    let pop_items: Vec<BatchItem<'_>> = pop_idx
        .iter()
        .zip(&pop_msgs)
        .filter_map(|(&i, m)| {
            live[i]
                .1
                .pop
                .as_ref()
                .map(|(pk, sig)| BatchItem { pk, msg: m, sig })
        })
        .collect();
    for j in batch_verify_bisect_with(&pop_items, DST_POP, g1) {
        let i = pop_idx[j];
        if bad[i].is_none() {
            bad[i] = Some(IngressError::BadPop);
        }
    }
    drop(items);
    drop(pop_items);

    // A key taken from a registration of this batch signs for its account
    // only if one of those registrations passed (signature and proof of
    // possession), or if the key is registered already: an unproven key
    // must not sign anything, and a block holding a transaction whose key
    // is nowhere would not re-verify.
    let proven: HashSet<AccountId> = live
        .iter()
        .zip(&bad)
        .filter(|((_, p, _), b)| p.pop.is_some() && b.is_none())
        .map(|((_, p, _), _)| p.tx.sender)
        .collect();
    for (((_, p, pk), b), from_batch) in live.iter().zip(bad.iter_mut()).zip(&via_batch) {
        if *from_batch
            && b.is_none()
            && !proven.contains(&p.tx.sender)
            && keys.public_key(&p.tx.sender) != Some(*pk)
        {
            *b = Some(IngressError::UnknownSender);
        }
    }

    // Proofs last: only for intents whose fee payer signed them.
    let intents: Vec<(usize, &AnonIntentSpec)> = live
        .iter()
        .enumerate()
        .filter(|(i, _)| bad[*i].is_none())
        .filter_map(|(i, (_, p, _))| match &p.tx.payload {
            PayloadSpec::AnonIntent(a) => Some((i, &**a)),
            _ => None,
        })
        .collect();
    if !intents.is_empty() {
        let errors: Vec<Option<IngressError>> = match proofs {
            None => intents
                .iter()
                .map(|_| Some(IngressError::IntentsDisabled))
                .collect(),
            Some(v) => {
                let items: Vec<&AnonIntentSpec> = intents.iter().map(|(_, a)| *a).collect();
                let verdicts = v.verify_intents(cfg.chain_id, &items);
                assert_eq!(verdicts.len(), items.len(), "one verdict per proof");
                verdicts
                    .into_iter()
                    .map(|r| match r {
                        Ok(()) => None,
                        Err(ProofRejection::Invalid) => Some(IngressError::BadProof),
                        Err(ProofRejection::Malformed(m)) => Some(IngressError::MalformedProof(m)),
                    })
                    .collect()
            }
        };
        for ((i, _), e) in intents.iter().zip(errors) {
            bad[*i] = e;
        }
    }

    let mut accepted = Vec::with_capacity(live.len());
    for ((i, p, _), b) in live.into_iter().zip(bad) {
        match b {
            Some(e) => rejected.push((i, e)),
            None => accepted.push(p.tx),
        }
    }
    rejected.sort_by_key(|(i, _)| *i);
    CheckedBatch { accepted, rejected }
}

/// The committed next nonce of each transaction's sender (`None` for an
/// account not in storage), read in one parallel batch: what
/// [`crate::mempool::Mempool::admit`] needs to refuse replays.
pub fn committed_nonces(
    store: &dyn StateView,
    chain_id: u32,
    txs: &[VerifiedTx],
) -> Result<Vec<Option<u64>>, crate::storage::StorageError> {
    let ids: Vec<AccountId> = txs.iter().map(|t| t.sender).collect();
    Ok(store
        .accounts(chain_id, &ids)?
        .into_iter()
        .map(|r| r.map(|r| r.nonce))
        .collect())
}

/// A bounded cache of registered keys in front of the committed state.
/// Parsing and validating a G2 key costs about as much as a verification,
/// so each key is validated once and kept.
///
/// At the bound, adding a key evicts one other, chosen by the CLOCK rule
/// ([`BoundedKeys`]): keys looked up since the clock hand last passed them
/// stay, so the keys of devices that keep sending are not evicted by a
/// burst of new ones; an evicted key is read from the store and validated
/// again on its next use.
pub struct KeyCache<'s> {
    store: &'s dyn Storage,
    chain_id: u32,
    keys: RwLock<BoundedKeys>,
}

impl<'s> KeyCache<'s> {
    /// A cache of at most `capacity` keys over `store`.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(store: &'s dyn Storage, chain_id: u32, capacity: usize) -> Self {
        Self {
            store,
            chain_id,
            keys: RwLock::new(BoundedKeys::new(capacity)),
        }
    }

    /// Adds a key known to be valid (a registration just admitted); at the
    /// bound it evicts another ([`BoundedKeys::insert`]).
    pub fn insert(&self, id: AccountId, pk: PublicKey) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pk);
    }
}

/// At most `capacity` account keys, evicted one at a time by the CLOCK rule
/// (second chance, an approximation of least-recently-used that needs no
/// write lock on a hit): each slot has a used bit, set by [`get`]; when the
/// map is full, [`insert`] moves a hand round the slots, clearing used bits,
/// and evicts the first slot whose bit is already clear. Deterministic: the
/// victim depends only on the order of the calls.
///
/// [`get`]: BoundedKeys::get
/// [`insert`]: BoundedKeys::insert
pub struct BoundedKeys {
    capacity: usize,
    /// Slot index of each cached account.
    index: HashMap<AccountId, usize>,
    slots: Vec<KeySlot>,
    /// The next slot the clock looks at once the slots are all in use.
    hand: usize,
}

/// One cached key and whether it was used since the hand last passed.
struct KeySlot {
    id: AccountId,
    pk: PublicKey,
    used: AtomicBool,
}

impl BoundedKeys {
    /// Room for `capacity` keys.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a key cache holds at least one key");
        Self {
            capacity,
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The key of `id`, marking it used (so the next sweep spares it).
    pub fn get(&self, id: &AccountId) -> Option<PublicKey> {
        let slot = &self.slots[*self.index.get(id)?];
        slot.used.store(true, Ordering::Relaxed);
        Some(slot.pk)
    }

    /// Adds or replaces the key of `id`. When the cache is full and `id` is
    /// new, evicts one other key (the first at or after the hand whose used
    /// bit is clear, clearing the bits it passes); returns the evicted id.
    pub fn insert(&mut self, id: AccountId, pk: PublicKey) -> Option<AccountId> {
        if let Some(&i) = self.index.get(&id) {
            self.slots[i].pk = pk;
            self.slots[i].used.store(true, Ordering::Relaxed);
            return None;
        }
        let slot = KeySlot {
            id,
            pk,
            used: AtomicBool::new(false),
        };
        if self.slots.len() < self.capacity {
            self.index.insert(id, self.slots.len());
            self.slots.push(slot);
            return None;
        }
        // Full: at most one lap clears every bit, so the second finds one.
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if !self.slots[i].used.swap(false, Ordering::Relaxed) {
                let old = std::mem::replace(&mut self.slots[i], slot);
                self.index.remove(&old.id);
                self.index.insert(id, i);
                return Some(old.id);
            }
        }
    }
}

impl KeySource for KeyCache<'_> {
    fn public_key(&self, id: &AccountId) -> Option<PublicKey> {
        if let Some(pk) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Some(pk);
        }
        let rec = self
            .store
            .snapshot()
            .ok()?
            .account(self.chain_id, id)
            .ok()??;
        let pk = bls::PublicKey::from_bytes(&rec.public_key?).ok()?;
        self.insert(*id, pk);
        Some(pk)
    }
}

#[cfg(test)]
mod key_cache_tests {
    use super::*;

    fn id(n: u8) -> AccountId {
        [n; 32]
    }

    fn pk(n: u8) -> PublicKey {
        bls::SecretKey::from_seed(&[n; 32]).public_key()
    }

    /// Never more than the capacity; a new key at the bound evicts exactly
    /// one, and with no use in between the oldest goes first (FIFO).
    #[test]
    fn bounded_and_evicts_one_at_a_time() {
        let mut c = BoundedKeys::new(3);
        for n in 0..3 {
            assert_eq!(c.insert(id(n), pk(n)), None);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.insert(id(3), pk(3)), Some(id(0)));
        assert_eq!(c.insert(id(4), pk(4)), Some(id(1)));
        assert_eq!(c.len(), 3);
        assert!(c.get(&id(0)).is_none() && c.get(&id(1)).is_none());
        for n in 2..5 {
            assert_eq!(c.get(&id(n)), Some(pk(n)), "key {n}");
        }
        // Replacing a held key evicts nothing.
        assert_eq!(c.insert(id(2), pk(9)), None);
        assert_eq!(c.get(&id(2)), Some(pk(9)));
        assert_eq!(c.len(), 3);
    }

    /// A key looked up since the hand last passed survives a burst of new
    /// keys that evicts the unused ones.
    #[test]
    fn used_keys_get_a_second_chance() {
        let mut c = BoundedKeys::new(4);
        for n in 0..4 {
            c.insert(id(n), pk(n));
        }
        // Device 1 keeps sending: looked up before each new key.
        let mut evicted = Vec::new();
        for n in 10..16 {
            assert_eq!(c.get(&id(1)), Some(pk(1)));
            evicted.extend(c.insert(id(n), pk(n)));
        }
        assert!(!evicted.contains(&id(1)), "{evicted:?}");
        assert_eq!(evicted.len(), 6);
        assert_eq!(c.len(), 4);
        assert_eq!(c.get(&id(1)), Some(pk(1)));
    }

    /// A capacity of one still works: each new key replaces the last.
    #[test]
    fn capacity_one() {
        let mut c = BoundedKeys::new(1);
        assert_eq!(c.insert(id(0), pk(0)), None);
        assert_eq!(c.get(&id(0)), Some(pk(0)));
        assert_eq!(c.insert(id(1), pk(1)), Some(id(0)));
        assert_eq!(c.get(&id(1)), Some(pk(1)));
        assert!(c.get(&id(0)).is_none());
    }
}
