//! BPK intents on chain (whitepaper 2.4): the identity tree, the epochs'
//! behaviour-cluster centroids, the nullifier set, and anonymous intents.
//!
//! A user registers an identity commitment (`RegisterIdentity`, a leaf of
//! the Poseidon identity tree of `int_zk::tree`). Governance fixes the
//! centroids of future epochs (`SetCentroids`; genesis fixes epoch 0's).
//! An `AnonIntent` carries a Groth16 proof (`int_zk::circuit`) that some
//! registered user whose behaviour lies in cluster `k` wants `payload` from
//! `target`; the target sees the cluster and the intent, never the user.
//!
//! Checks, split by what they need:
//!
//! * **Ingress, stateless, batched** ([`Groth16Intents`], behind the
//!   engine's `ProofVerifier`): the proof against the chain's verifying key
//!   and the public inputs `[root, epoch, scope, nullifier, cluster,
//!   centroid_commitment]`, where `scope` = [`intent_scope`]`(chain,
//!   target, payload)` is derived here, so the proof binds the intent. The
//!   block's proofs are verified in one random-linear-combination batch
//!   (one multi-Miller loop, one final exponentiation), bisected on failure.
//! * **Execution, in block order** (the [`BpkPlugin`]'s system, in the
//!   engine's Admit stage, after the ledger took the fee): the epoch must
//!   be the block's (`height / epoch_blocks`, else `WrongEpoch`); the root
//!   one of the last `root_history` roots of the identity tree
//!   (`UnknownRoot`); the centroid commitment the one in force for the
//!   epoch, i.e. of the latest `SetCentroids` whose epoch is at most it
//!   (`WrongCentroids`); the nullifier never seen (`NullifierUsed`; one
//!   intent per scope per epoch). Registrations and intents run in block
//!   order, so an intent may use a root that a registration earlier in the
//!   same block produced.
//! * **Purchases by cluster.** An intent whose payload is a market
//!   purchase ([`ClusterBuy`], addressed to the SKU's seller) locks
//!   `qty × max_unit_price` GAS from its sender in the Debit stage. This
//!   system runs in the engine's Admit stage, before the plugins of the
//!   Apply stage: when such an intent passes the checks above it is not
//!   decided here but listed in [`AdmittedIntents`], and the market buys
//!   from the SKU if its authority admits the proven cluster; when it
//!   fails, its lock returns with the refusal. The sender pays, so the
//!   seller learns the cluster and the paying account, never the user's
//!   identity.
//!
//! State, all in the engine's plugin tables under the prefix `bpk/`, so
//! the state root covers it and a block commits it atomically:
//!
//! | key | table | value |
//! |---|---|---|
//! | `bpk/config` | state | version, epoch length, root history, governance, D, K, verifying key |
//! | `bpk/tree` | state | leaf count, last roots (oldest first) |
//! | `bpk/cent/` ‖ !epoch (u64 BE, inverted) | state | D, K, commitment, coordinates |
//! | `bpk/null/` ‖ nullifier | state | height of first use |
//! | `bpk/node/` ‖ level ‖ index (u64 BE) | derived | tree node |
//!
//! The centroid key stores the epoch inverted, so the entry in force at
//! epoch `e` is the first key at or after `!e`: one B-tree seek. Tree nodes
//! are derived data (the committed `bpk/tree` root covers them); they are
//! stored so provers can read their Merkle paths ([`identity_tree`]).
//!
//! None of these are ECS entities, unlike the market's objects: a block
//! does not name them in advance. An append rewrites the path of its leaf
//! (one node per level, chosen by the tree's algorithm as it hashes), an
//! intent asks whether its nullifier was ever used (a point read of a set
//! that only grows, never loaded again), and the centroids in force are
//! the first key at or after an epoch (a seek, not a lookup by id). So the
//! block reads them from its snapshot and keeps its writes in the engine's
//! one overlay ([`Overlay`]), where a second intent with the same
//! nullifier, or a second `SetCentroids` for an epoch, sees the first.
//!
//! Costs: a registration is 32 Poseidon hashes, about 16 node reads and 33
//! node writes; consecutive registrations are appended as one batch
//! (`IdentityTree::append_batch`: one batched call per tree level, on the
//! [`IdentityHasher`] the node gave the [`BpkPlugin`], the GPU's when it has
//! one, else all cores), which skips the hashes of intermediate nodes; an intent is three point reads (centroids once per block);
//! a block without BPK payloads pays nothing.

use std::sync::Arc;

use ark_bn254::{Bn254, Fr};
use ark_ff::PrimeField;
use ark_groth16::{PreparedVerifyingKey, VerifyingKey};
use bevy_ecs::prelude::*;
use int_engine::ingress::{ProofRejection, ProofVerifier};
use int_engine::objects::{Overlay, PluginEffects, add_effects};
use int_engine::storage::{ObjectTable, ObjectWrite, StateView, StorageError};
use int_engine::world::{
    BlockContext, Credit, DeferredPayloads, DeferredTx, Outcomes, ParentState, PayloadVerdicts,
    Plugin, Stage,
};
use int_schemas::wire::TxStatus;
use int_schemas::{AccountId, AnonIntentSpec, ClusterBuy, FieldBytes, PayloadSpec, ProofBytes};
use int_zk::batch::{self, CpuMsm, G1Msm};
use int_zk::circuit::{self, BpkParams, BpkWitness, NUM_PUBLIC_INPUTS, PublicInputs};
use int_zk::export::fr_to_be_bytes;
use int_zk::tree::{CpuPairHasher, DEPTH, IdentityTree, MerklePath, PairHasher, TreeStore};
use int_zk::{ZkError, export, groth};

/// Longest root history a chain may keep (each root is 32 bytes of state).
pub const ROOT_HISTORY_MAX: u32 = 1024;

const CONFIG_KEY: &[u8] = b"bpk/config";
const TREE_KEY: &[u8] = b"bpk/tree";
const CENT_PREFIX: &[u8] = b"bpk/cent/";
const NULL_PREFIX: &[u8] = b"bpk/null/";
const NODE_PREFIX: &[u8] = b"bpk/node/";
const CONFIG_VERSION: u8 = 1;

/// Errors of the BPK plugin's storage and setup (payload failures are
/// receipt statuses, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BpkError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The zk side refused something (a key, a tree, a witness).
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// A stored BPK object does not decode: the store is corrupt.
    #[error("corrupt BPK object {key}: {what}")]
    Corrupt {
        /// Which object.
        key: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Genesis parameters that cannot work.
    #[error("invalid BPK genesis: {0}")]
    Genesis(String),
    /// The chain has no BPK configuration.
    #[error("the chain has no BPK configuration (no verifying key at genesis)")]
    Disabled,
}

fn corrupt(key: &'static str, what: impl ToString) -> BpkError {
    BpkError::Corrupt {
        key,
        what: what.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Field elements and the scope.
// ---------------------------------------------------------------------------

/// A field element from its wire form (32 bytes big-endian). The wire
/// decoder (`int_schemas::check_payload`) has checked it is canonical, so
/// this is exact; bytes from anywhere else go through
/// [`export::fr_from_be_bytes`].
pub fn fr_from_bytes(b: &FieldBytes) -> Fr {
    Fr::from_be_bytes_mod_order(b)
}

/// The scope of an intent: `blake3("INT/bpk/scope/v1" ‖ chain id ‖ target ‖
/// payload length ‖ payload)` reduced into the field. The proof's scope
/// input must equal it, so a proof cannot be moved to another target,
/// payload or chain; the nullifier `Poseidon(secret, epoch, scope)` then
/// allows one intent per user, scope and epoch.
pub fn intent_scope(chain_id: u32, target: &AccountId, payload: &[u8]) -> Fr {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/bpk/scope/v1");
    h.update(&chain_id.to_be_bytes());
    h.update(target);
    h.update(&(payload.len() as u64).to_be_bytes());
    h.update(payload);
    Fr::from_be_bytes_mod_order(h.finalize().as_bytes())
}

/// The public inputs an intent claims, with its scope derived.
pub fn intent_public_inputs(chain_id: u32, a: &AnonIntentSpec) -> PublicInputs {
    PublicInputs {
        root: fr_from_bytes(&a.root),
        epoch: a.epoch,
        scope: intent_scope(chain_id, &a.target, &a.payload),
        nullifier: fr_from_bytes(&a.nullifier),
        cluster: a.cluster,
        centroid_commitment: fr_from_bytes(&a.centroid_commitment),
    }
}

// ---------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------

/// The chain's BPK parameters, fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpkConfig {
    /// Blocks per epoch (an intent's epoch is `height / epoch_blocks`).
    pub epoch_blocks: u64,
    /// Roots of the identity tree a proof may be made against (R).
    pub root_history: u32,
    /// The account allowed to send `SetCentroids`.
    pub governance: AccountId,
    /// D, coordinates per behaviour vector.
    pub dims: u8,
    /// K, clusters.
    pub clusters: u8,
    /// The Groth16 verifying key (arkworks compressed).
    pub verifying_key: Vec<u8>,
}

impl BpkConfig {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(47 + self.verifying_key.len());
        v.push(CONFIG_VERSION);
        v.extend_from_slice(&self.epoch_blocks.to_le_bytes());
        v.extend_from_slice(&self.root_history.to_le_bytes());
        v.extend_from_slice(&self.governance);
        v.push(self.dims);
        v.push(self.clusters);
        v.extend_from_slice(&self.verifying_key);
        v
    }

    fn decode(b: &[u8]) -> Result<Self, BpkError> {
        const KEY: &str = "bpk/config";
        if b.len() < 47 {
            return Err(corrupt(KEY, "too short"));
        }
        if b[0] != CONFIG_VERSION {
            return Err(corrupt(KEY, "unknown version"));
        }
        let mut u8x8 = [0u8; 8];
        u8x8.copy_from_slice(&b[1..9]);
        let mut u8x4 = [0u8; 4];
        u8x4.copy_from_slice(&b[9..13]);
        let mut governance = [0u8; 32];
        governance.copy_from_slice(&b[13..45]);
        let cfg = Self {
            epoch_blocks: u64::from_le_bytes(u8x8),
            root_history: u32::from_le_bytes(u8x4),
            governance,
            dims: b[45],
            clusters: b[46],
            verifying_key: b[47..].to_vec(),
        };
        if cfg.epoch_blocks == 0 || cfg.root_history == 0 || cfg.root_history > ROOT_HISTORY_MAX {
            return Err(corrupt(KEY, "parameters out of range"));
        }
        Ok(cfg)
    }

    /// D and K as the circuit's parameters.
    pub fn params(&self) -> Result<BpkParams, BpkError> {
        Ok(BpkParams::new(self.dims as usize, self.clusters as usize)?)
    }

    /// The epoch a block at `height` belongs to.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.epoch_blocks
    }
}

/// What a chain's genesis fixes for BPK intents.
#[derive(Debug, Clone)]
pub struct BpkGenesis {
    /// Blocks per epoch, at least 1.
    pub epoch_blocks: u64,
    /// Roots a proof may be made against, `1..=ROOT_HISTORY_MAX`.
    pub root_history: u32,
    /// The account allowed to set future epochs' centroids.
    pub governance: AccountId,
    /// The verifying key of the BPK circuit for (D, K).
    pub verifying_key: VerifyingKey<Bn254>,
    /// Epoch 0's centroids: K vectors of D fixed-point coordinates.
    pub centroids: Vec<Vec<u16>>,
}

/// The plugin objects a genesis with BPK intents writes: the configuration,
/// the empty identity tree, and epoch 0's centroids. Pass them to
/// `Chain::genesis_with_objects`.
pub fn genesis_objects(g: &BpkGenesis) -> Result<Vec<ObjectWrite>, BpkError> {
    let bad = |s: &str| BpkError::Genesis(s.to_string());
    if g.epoch_blocks == 0 {
        return Err(bad("epoch length must be at least 1 block"));
    }
    if g.root_history == 0 || g.root_history > ROOT_HISTORY_MAX {
        return Err(bad("root history must be 1..=1024"));
    }
    if g.verifying_key.gamma_abc_g1.len() != NUM_PUBLIC_INPUTS + 1 {
        return Err(bad("verifying key is not for the BPK circuit"));
    }
    let clusters = g.centroids.len();
    let dims = g.centroids.first().map_or(0, Vec::len);
    BpkParams::new(dims, clusters)?;
    if g.centroids.iter().any(|c| c.len() != dims) {
        return Err(bad("centroids of different lengths"));
    }
    let cfg = BpkConfig {
        epoch_blocks: g.epoch_blocks,
        root_history: g.root_history,
        governance: g.governance,
        dims: dims as u8,
        clusters: clusters as u8,
        verifying_key: export::verifying_key_to_bytes(&g.verifying_key),
    };
    let coords: Vec<u16> = g.centroids.iter().flatten().copied().collect();
    let commitment = fr_to_be_bytes(&circuit::centroid_commitment(&g.centroids)?);
    Ok(vec![
        state_write(CONFIG_KEY.to_vec(), cfg.encode()),
        state_write(
            TREE_KEY.to_vec(),
            TreeMeta {
                len: 0,
                history: vec![int_zk::tree::zero_hashes()[DEPTH]],
            }
            .encode(),
        ),
        state_write(
            centroid_key(0),
            CentroidSet {
                epoch: 0,
                dims: dims as u8,
                clusters: clusters as u8,
                commitment,
                coords,
            }
            .encode(),
        ),
    ])
}

fn state_write(key: Vec<u8>, value: Vec<u8>) -> ObjectWrite {
    ObjectWrite {
        table: ObjectTable::State,
        key,
        value: Some(value),
    }
}

/// The chain's BPK configuration, or `None` if its genesis enabled no
/// intents.
pub fn load_config(store: &dyn StateView, chain_id: u32) -> Result<Option<BpkConfig>, BpkError> {
    store
        .object(chain_id, ObjectTable::State, CONFIG_KEY)?
        .map(|b| BpkConfig::decode(&b))
        .transpose()
}

// ---------------------------------------------------------------------------
// The identity tree in storage.
// ---------------------------------------------------------------------------

/// The identity tree's metadata: leaf count and the last roots.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeMeta {
    len: u64,
    history: Vec<Fr>,
}

impl TreeMeta {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 * self.history.len());
        v.extend_from_slice(&self.len.to_le_bytes());
        for r in &self.history {
            v.extend_from_slice(&fr_to_be_bytes(r));
        }
        v
    }

    fn decode(b: &[u8]) -> Result<Self, BpkError> {
        const KEY: &str = "bpk/tree";
        if b.len() < 8 + 32 || !(b.len() - 8).is_multiple_of(32) {
            return Err(corrupt(KEY, "wrong length"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&b[..8]);
        let history = b[8..]
            .chunks_exact(32)
            .map(|c| {
                let mut x = [0u8; 32];
                x.copy_from_slice(c);
                canonical(KEY, &x)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            len: u64::from_le_bytes(len),
            history,
        })
    }
}

fn canonical(key: &'static str, x: &FieldBytes) -> Result<Fr, BpkError> {
    export::fr_from_be_bytes(x).ok_or_else(|| corrupt(key, "field element not canonical"))
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut k = NODE_PREFIX.to_vec();
    k.push(level);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// A [`TreeStore`] over the chain's committed tree nodes, with the writes
/// of the block being executed kept in the block's [`Overlay`] until it
/// commits.
///
/// The tree's nodes are not ECS entities: an append rewrites one node per
/// level on the path of its leaf (`DEPTH + 1` of them, each a field element
/// keyed by level and index), and a proof reads a path, so they are read
/// and written through the overlay by the tree's own algorithm, never
/// loaded as a set the block declares in advance.
pub struct ChainTreeStore<'s> {
    ov: Overlay<'s>,
}

impl<'s> ChainTreeStore<'s> {
    /// A view of `chain_id`'s committed nodes.
    pub fn new(store: &'s dyn StateView, chain_id: u32) -> Self {
        Self {
            ov: Overlay::new(store, chain_id),
        }
    }

    /// The block's writes (the nodes it changed) as an overlay.
    fn into_overlay(self) -> Overlay<'s> {
        self.ov
    }
}

impl TreeStore for ChainTreeStore<'_> {
    fn get(&self, level: u8, index: u64) -> Result<Option<Fr>, ZkError> {
        let Some(b) = self
            .ov
            .get(ObjectTable::Derived, &node_key(level, index))
            .map_err(|e| ZkError::Store(e.to_string()))?
        else {
            return Ok(None);
        };
        let x: FieldBytes = b
            .as_slice()
            .try_into()
            .map_err(|_| ZkError::Store("tree node of the wrong length".into()))?;
        export::fr_from_be_bytes(&x)
            .map(Some)
            .ok_or_else(|| ZkError::Store("tree node not canonical".into()))
    }

    fn put(&mut self, level: u8, index: u64, value: Fr) {
        self.ov.put(
            ObjectTable::Derived,
            node_key(level, index),
            fr_to_be_bytes(&value).to_vec(),
        );
    }
}

/// The committed identity tree of a chain, for provers: its root, its
/// recent roots and any leaf's Merkle path, read from storage.
pub fn identity_tree(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<IdentityTree<ChainTreeStore<'_>>, BpkError> {
    let cfg = load_config(store, chain_id)?.ok_or(BpkError::Disabled)?;
    open_tree(store, chain_id, &cfg)
}

fn open_tree<'s>(
    store: &'s dyn StateView,
    chain_id: u32,
    cfg: &BpkConfig,
) -> Result<IdentityTree<ChainTreeStore<'s>>, BpkError> {
    let meta = store
        .object(chain_id, ObjectTable::State, TREE_KEY)?
        .ok_or_else(|| corrupt("bpk/tree", "missing"))?;
    let meta = TreeMeta::decode(&meta)?;
    Ok(IdentityTree::from_parts(
        ChainTreeStore::new(store, chain_id),
        meta.len,
        meta.history,
        cfg.root_history as usize,
    )?)
}

// ---------------------------------------------------------------------------
// Centroids and nullifiers.
// ---------------------------------------------------------------------------

/// The centroids fixed from `epoch` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentroidSet {
    /// First epoch they apply to.
    pub epoch: u64,
    /// D.
    pub dims: u8,
    /// K.
    pub clusters: u8,
    /// `circuit::centroid_commitment` of them.
    pub commitment: FieldBytes,
    /// K rows of D coordinates.
    pub coords: Vec<u16>,
}

impl CentroidSet {
    /// The stored value; the epoch is in the key ([`centroid_key`]).
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(34 + 2 * self.coords.len());
        v.push(self.dims);
        v.push(self.clusters);
        v.extend_from_slice(&self.commitment);
        for c in &self.coords {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }

    /// A set from its stored key and value.
    fn decode(key: &[u8], b: &[u8]) -> Result<Self, BpkError> {
        const KEY: &str = "bpk/cent";
        let inverted: [u8; 8] = key
            .strip_prefix(CENT_PREFIX)
            .and_then(|e| e.try_into().ok())
            .ok_or_else(|| corrupt(KEY, "bad key"))?;
        if b.len() < 34 || !(b.len() - 34).is_multiple_of(2) {
            return Err(corrupt(KEY, "wrong length"));
        }
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&b[2..34]);
        let coords: Vec<u16> = b[34..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let set = Self {
            epoch: !u64::from_be_bytes(inverted),
            dims: b[0],
            clusters: b[1],
            commitment,
            coords,
        };
        if set.coords.len() != set.dims as usize * set.clusters as usize {
            return Err(corrupt(KEY, "coordinates are not dims x clusters"));
        }
        Ok(set)
    }

    /// The centroids as K vectors of D coordinates.
    pub fn rows(&self) -> Vec<Vec<u16>> {
        self.coords
            .chunks(self.dims.max(1) as usize)
            .map(<[u16]>::to_vec)
            .collect()
    }
}

fn centroid_key(epoch: u64) -> Vec<u8> {
    let mut k = CENT_PREFIX.to_vec();
    k.extend_from_slice(&(!epoch).to_be_bytes());
    k
}

/// The centroids in force at `epoch` (the latest set at most `epoch`).
pub fn centroids_at(
    store: &dyn StateView,
    chain_id: u32,
    epoch: u64,
) -> Result<Option<CentroidSet>, BpkError> {
    store
        .object_at_or_after(
            chain_id,
            ObjectTable::State,
            CENT_PREFIX,
            &centroid_key(epoch),
        )?
        .map(|(k, v)| CentroidSet::decode(&k, &v))
        .transpose()
}

fn nullifier_key(n: &FieldBytes) -> Vec<u8> {
    let mut k = NULL_PREFIX.to_vec();
    k.extend_from_slice(n);
    k
}

/// The height at which `nullifier` was used, if it was.
pub fn nullifier_used(
    store: &dyn StateView,
    chain_id: u32,
    nullifier: &FieldBytes,
) -> Result<Option<u64>, BpkError> {
    store
        .object(chain_id, ObjectTable::State, &nullifier_key(nullifier))?
        .map(|v| {
            let b: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("bpk/null", "wrong length"))?;
            Ok(u64::from_le_bytes(b))
        })
        .transpose()
}

// ---------------------------------------------------------------------------
// Proof verification at ingress.
// ---------------------------------------------------------------------------

/// The ingress-side verifier of intent proofs: Groth16 batch verification
/// against the chain's verifying key, bisected on failure. Its G1 MSMs go
/// to a [`G1Msm`] backend: arkworks on all cores ([`CpuMsm`]) unless the
/// node hands it the GPU's ([`Groth16Intents::with_msm`]).
pub struct Groth16Intents {
    pvk: PreparedVerifyingKey<Bn254>,
    msm: Arc<dyn G1Msm + Send + Sync>,
}

impl Groth16Intents {
    /// A verifier for `vk`, its MSMs on the CPU.
    pub fn new(vk: &VerifyingKey<Bn254>) -> Self {
        Self {
            pvk: groth::prepare_verifying_key(vk),
            msm: Arc::new(CpuMsm),
        }
    }

    /// The same verifier with its MSMs (`Σ rᵢ·Cᵢ`, `Σ rᵢ·vk_xᵢ`, `rᵢ·Aᵢ`)
    /// on `msm`; verdicts do not depend on it.
    pub fn with_msm(mut self, msm: Arc<dyn G1Msm + Send + Sync>) -> Self {
        self.msm = msm;
        self
    }

    /// The verifier of `chain_id`'s intents, from its genesis configuration;
    /// `None` if the chain has none.
    pub fn from_store(store: &dyn StateView, chain_id: u32) -> Result<Option<Self>, BpkError> {
        let Some(cfg) = load_config(store, chain_id)? else {
            return Ok(None);
        };
        let vk = export::verifying_key_from_bytes(&cfg.verifying_key)?;
        Ok(Some(Self::new(&vk)))
    }
}

impl ProofVerifier for Groth16Intents {
    fn verify_intents(
        &self,
        chain_id: u32,
        items: &[&AnonIntentSpec],
    ) -> Vec<Result<(), ProofRejection>> {
        use rayon::prelude::*;
        // Decoding validates every point (on the curve, in the subgroup),
        // which the batch equation needs.
        type Decoded = Result<(Vec<Fr>, ark_groth16::Proof<Bn254>), ProofRejection>;
        let decoded: Vec<Decoded> = items
            .par_iter()
            .map(|a| {
                let proof = export::proof_from_bytes(&a.proof)
                    .map_err(|e| ProofRejection::Malformed(e.to_string()))?;
                Ok((intent_public_inputs(chain_id, a).to_field_elements(), proof))
            })
            .collect();
        let good: Vec<usize> = (0..items.len()).filter(|&i| decoded[i].is_ok()).collect();
        let batch_items: Vec<batch::BatchItem<'_>> = decoded
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|(x, p)| (x.as_slice(), p))
            .collect();
        let mut out: Vec<Result<(), ProofRejection>> = decoded
            .iter()
            .map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
            .collect();
        match batch::batch_verify_bisect(
            &self.pvk,
            &batch_items,
            self.msm.as_ref(),
            &mut rand::thread_rng(),
        ) {
            Ok(bad) => {
                for j in bad {
                    out[good[j]] = Err(ProofRejection::Invalid);
                }
            }
            Err(e) => {
                // Only a key of the wrong shape gets here: nothing verifies.
                for &i in &good {
                    out[i] = Err(ProofRejection::Malformed(e.to_string()));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Proving (clients, the devnet's simulated users, tests).
// ---------------------------------------------------------------------------

/// What a user knows to make an intent.
#[derive(Debug, Clone)]
pub struct IntentRequest<'a> {
    /// The chain.
    pub chain_id: u32,
    /// The user's secret.
    pub secret: Fr,
    /// The user's behaviour vector (D fixed-point coordinates).
    pub behaviour: &'a [u16],
    /// The epoch's centroids.
    pub centroids: &'a [Vec<u16>],
    /// The Merkle path of the user's leaf in a recent tree.
    pub path: MerklePath,
    /// The block epoch the intent is for.
    pub epoch: u64,
    /// The device the intent is for.
    pub target: AccountId,
    /// The intent.
    pub payload: &'a [u8],
}

/// Proves an intent and returns its payload, ready to be signed and sent by
/// any account (a relayer). The cluster is the nearest centroid.
pub fn prove_intent<R: ark_std::rand::RngCore + ark_std::rand::CryptoRng>(
    pk: &ark_groth16::ProvingKey<Bn254>,
    req: &IntentRequest<'_>,
    rng: &mut R,
) -> Result<AnonIntentSpec, BpkError> {
    let witness = BpkWitness::new(req.secret, req.behaviour, req.centroids, req.path.clone());
    let scope = intent_scope(req.chain_id, &req.target, req.payload);
    let public = witness.public_inputs(req.epoch, scope)?;
    let proof = groth::prove(pk, &public, &witness, rng)?;
    let bytes = export::proof_to_bytes(&proof);
    let proof: ProofBytes = bytes
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("proof", "not 128 bytes"))?;
    Ok(AnonIntentSpec {
        proof,
        root: fr_to_be_bytes(&public.root),
        epoch: public.epoch,
        nullifier: fr_to_be_bytes(&public.nullifier),
        cluster: public.cluster,
        centroid_commitment: fr_to_be_bytes(&public.centroid_commitment),
        target: req.target,
        payload: req.payload.to_vec(),
    })
}

// ---------------------------------------------------------------------------
// Execution.
// ---------------------------------------------------------------------------

/// The identity tree's batched node hash for block execution (a
/// resource the [`BpkPlugin`] inserts): [`CpuPairHasher`] (all cores)
/// unless the node hands the plugin the GPU's
/// ([`BpkPlugin::with_hasher`]). Every [`PairHasher`] gives `hash2`'s
/// results exactly, so state and verdicts do not depend on it.
#[derive(Resource, Clone)]
pub struct IdentityHasher(pub Arc<dyn PairHasher + Send + Sync>);

impl Default for IdentityHasher {
    fn default() -> Self {
        Self(Arc::new(CpuPairHasher))
    }
}

/// Registers the system that executes BPK payloads (Admit stage) and the
/// [`IdentityHasher`] it appends registrations with.
#[derive(Clone, Default)]
pub struct BpkPlugin {
    hasher: IdentityHasher,
}

impl BpkPlugin {
    /// The plugin with the CPU hasher ([`CpuPairHasher`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The plugin with the identity tree's node hashes on `hasher` (the
    /// node's GPU); state and verdicts do not depend on it.
    pub fn with_hasher(hasher: Arc<dyn PairHasher + Send + Sync>) -> Self {
        Self {
            hasher: IdentityHasher(hasher),
        }
    }
}

impl Plugin for BpkPlugin {
    fn build(&self, world: &mut World, schedule: &mut Schedule) {
        world.insert_resource(self.hasher.clone());
        world.insert_resource(AdmittedIntents::default());
        add_effects::<Self>(world, schedule);
        schedule.add_systems(apply_bpk.in_set(Stage::Admit));
    }
}

/// The block's anonymous intents that passed every on-chain check and
/// carry a market purchase ([`ClusterBuy`]), in block order: the BPK
/// system leaves their verdict, and the disposal of their lock, to the
/// market, which runs after it ([`Stage::Apply`]). Without the market
/// plugin nobody decides them, and the chain refunds their lock as
/// `UnsupportedPayload`. Rewritten every block.
#[derive(Resource, Debug, Default, Clone)]
pub struct AdmittedIntents(pub Vec<AdmittedIntent>);

/// One admitted intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmittedIntent {
    /// Its index in the block.
    pub index: u32,
    /// The behaviour cluster its proof shows the user belongs to.
    pub cluster: u32,
    /// The account its proof names (the SKU's seller).
    pub target: AccountId,
    /// The purchase.
    pub buy: ClusterBuy,
}

fn is_bpk(p: &PayloadSpec) -> bool {
    matches!(
        p,
        PayloadSpec::RegisterIdentity { .. }
            | PayloadSpec::SetCentroids { .. }
            | PayloadSpec::AnonIntent(_)
    )
}

fn apply_bpk(
    ctx: Res<BlockContext>,
    store: Res<ParentState>,
    (deferred, outcomes, verdicts): (Res<DeferredPayloads>, Res<Outcomes>, Res<PayloadVerdicts>),
    hasher: Res<IdentityHasher>,
    mut admitted: ResMut<AdmittedIntents>,
    mut out: ResMut<PluginEffects<BpkPlugin>>,
) {
    admitted.0.clear();
    let mine: Vec<&DeferredTx> = deferred.accepted(&outcomes, is_bpk).collect();
    if mine.is_empty() {
        return;
    }
    let fx = &mut out.effects;
    match execute(
        &*store.0,
        ctx.chain_id,
        ctx.height,
        &mine,
        &verdicts,
        hasher.0.as_ref(),
    ) {
        Ok(done) => {
            fx.writes = done.writes;
            fx.credits = done.refunds;
            admitted.0 = done.admitted;
        }
        Err(e) => fx.fail("bpk", e),
    }
}

/// What the block's BPK payloads did.
#[derive(Debug, Default)]
struct Effects {
    writes: Vec<ObjectWrite>,
    /// The locks of refused intents that carried a purchase.
    refunds: Vec<Credit>,
    admitted: Vec<AdmittedIntent>,
}

/// Sets a refusal verdict; an intent that locked GAS for a purchase gets
/// it back.
fn refuse(verdicts: &PayloadVerdicts, refunds: &mut Vec<Credit>, d: &DeferredTx, status: TxStatus) {
    debug_assert_ne!(status, TxStatus::Ok);
    if !d.escrow.is_none() {
        refunds.push(Credit {
            to: d.sender,
            amount: d.escrow,
        });
    }
    verdicts.set(d.index, status);
}

/// Decides the block's BPK payloads in block order. Registrations are
/// appended to the identity tree with `hasher`, each maximal run of
/// consecutive ones as one batch. An intent carrying a purchase that
/// passes is admitted for the market instead of decided.
fn execute(
    store: &dyn StateView,
    chain_id: u32,
    height: u64,
    txs: &[&DeferredTx],
    verdicts: &PayloadVerdicts,
    hasher: &dyn PairHasher,
) -> Result<Effects, BpkError> {
    let mut out = Effects::default();
    let Some(cfg) = load_config(store, chain_id)? else {
        for d in txs {
            refuse(verdicts, &mut out.refunds, d, TxStatus::BpkDisabled);
        }
        return Ok(out);
    };
    let epoch = cfg.epoch_of(height);
    let mut tree = open_tree(store, chain_id, &cfg)?;
    let tree_len = tree.len();
    // Nullifiers and centroids this block sets, over the committed ones.
    let mut ov = Overlay::new(store, chain_id);
    // The commitment in force this epoch, read once.
    let current = centroids_at(store, chain_id, epoch)?.map(|c| c.commitment);

    let mut next = 0;
    while next < txs.len() {
        // A maximal run of consecutive registrations goes in as one batch.
        // Nothing observes the tree inside such a run: only intents read it
        // (`is_known_root`) and centroids never do, and the run holds
        // neither. `append_batch` leaves the tree (nodes, length, root
        // history) exactly as one `append` per registration in order would,
        // and appends the leading ones up to the capacity while refusing
        // the rest, as those appends would (`TreeFull` for each); a store
        // error fails the block either way. So verdicts and state are those
        // of the sequential appends.
        let run = txs[next..]
            .iter()
            .take_while(|d| matches!(d.payload, PayloadSpec::RegisterIdentity { .. }))
            .count();
        if run > 0 {
            let batch = &txs[next..next + run];
            let leaves: Vec<Fr> = batch
                .iter()
                .filter_map(|d| match &d.payload {
                    PayloadSpec::RegisterIdentity { commitment } => Some(fr_from_bytes(commitment)),
                    _ => None,
                })
                .collect();
            debug_assert_eq!(leaves.len(), run);
            let done = tree.append_batch(&leaves, hasher)?;
            let appended = (done.appended.end - done.appended.start) as usize;
            debug_assert_eq!(appended + done.refused, run);
            for (j, d) in batch.iter().enumerate() {
                let status = if j < appended {
                    TxStatus::Ok
                } else {
                    TxStatus::IdentityTreeFull
                };
                verdicts.set(d.index, status);
            }
            next += run;
            continue;
        }
        let d = txs[next];
        let (i, payload, sender) = (&d.index, &d.payload, &d.sender);
        next += 1;
        let status = match payload {
            PayloadSpec::RegisterIdentity { .. } => {
                unreachable!("registrations are appended in runs above")
            }
            PayloadSpec::SetCentroids {
                epoch: from,
                dims,
                clusters,
                coords,
            } => {
                if *sender != cfg.governance {
                    TxStatus::NotGovernance
                } else if (*dims, *clusters) != (cfg.dims, cfg.clusters) {
                    TxStatus::CentroidShape
                } else if *from <= epoch || ov.contains(ObjectTable::State, &centroid_key(*from))? {
                    TxStatus::CentroidsFixed
                } else {
                    let set = CentroidSet {
                        epoch: *from,
                        dims: *dims,
                        clusters: *clusters,
                        commitment: [0; 32],
                        coords: coords.clone(),
                    };
                    let commitment = fr_to_be_bytes(&circuit::centroid_commitment(&set.rows())?);
                    let set = CentroidSet { commitment, ..set };
                    ov.put(ObjectTable::State, centroid_key(*from), set.encode());
                    TxStatus::Ok
                }
            }
            PayloadSpec::AnonIntent(a) => {
                if a.epoch != epoch {
                    TxStatus::WrongEpoch
                } else if !tree.is_known_root(&fr_from_bytes(&a.root)) {
                    TxStatus::UnknownRoot
                } else if current != Some(a.centroid_commitment) || a.cluster >= cfg.clusters as u32
                {
                    TxStatus::WrongCentroids
                } else if ov.contains(ObjectTable::State, &nullifier_key(&a.nullifier))? {
                    TxStatus::NullifierUsed
                } else {
                    ov.put(
                        ObjectTable::State,
                        nullifier_key(&a.nullifier),
                        height.to_le_bytes().to_vec(),
                    );
                    if let Some(buy) = ClusterBuy::decode(&a.payload) {
                        out.admitted.push(AdmittedIntent {
                            index: *i,
                            cluster: a.cluster,
                            target: a.target,
                            buy,
                        });
                        continue;
                    }
                    TxStatus::Ok
                }
            }
            _ => unreachable!("only BPK payloads are passed"),
        };
        if status == TxStatus::Ok {
            verdicts.set(*i, status);
        } else {
            refuse(verdicts, &mut out.refunds, d, status);
        }
    }

    if tree.len() != tree_len {
        let meta = TreeMeta {
            len: tree.len(),
            history: tree.root_history().copied().collect(),
        };
        ov.put(ObjectTable::State, TREE_KEY.to_vec(), meta.encode());
    }
    // Only appends write nodes.
    let mut nodes = tree.into_store().into_overlay();
    nodes.absorb(ov);
    out.writes = nodes.into_writes();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_binds_chain_target_and_payload() {
        let s = intent_scope(1, &[2; 32], b"abc");
        assert_ne!(s, intent_scope(2, &[2; 32], b"abc"));
        assert_ne!(s, intent_scope(1, &[3; 32], b"abc"));
        assert_ne!(s, intent_scope(1, &[2; 32], b"abd"));
        assert_eq!(s, intent_scope(1, &[2; 32], b"abc"));
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let cfg = BpkConfig {
            epoch_blocks: 10,
            root_history: 8,
            governance: [4; 32],
            dims: 2,
            clusters: 3,
            verifying_key: vec![1, 2, 3],
        };
        assert_eq!(BpkConfig::decode(&cfg.encode()).unwrap(), cfg);
        assert!(BpkConfig::decode(&cfg.encode()[..40]).is_err());
        let mut v = cfg.encode();
        v[0] = 9;
        assert!(BpkConfig::decode(&v).is_err());
        let set = CentroidSet {
            epoch: 7,
            dims: 2,
            clusters: 3,
            commitment: [1; 32],
            coords: vec![1, 2, 3, 4, 5, 6],
        };
        let key = centroid_key(7);
        assert_eq!(CentroidSet::decode(&key, &set.encode()).unwrap(), set);
        assert!(CentroidSet::decode(&key[..key.len() - 1], &set.encode()).is_err());
        assert_eq!(set.rows(), vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
        assert!(CentroidSet::decode(&key, &set.encode()[..36]).is_err());
        let meta = TreeMeta {
            len: 3,
            history: vec![Fr::from(1u64), Fr::from(2u64)],
        };
        assert_eq!(TreeMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(TreeMeta::decode(&[0; 8]).is_err());
        assert!(TreeMeta::decode(&[0xff; 40]).is_err());
    }

    #[test]
    fn centroid_keys_sort_latest_first() {
        assert!(centroid_key(5) < centroid_key(4));
        assert!(centroid_key(u64::MAX) < centroid_key(0));
    }
}
