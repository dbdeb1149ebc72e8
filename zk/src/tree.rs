//! The identity tree: incremental, append-only, binary, depth [`DEPTH`], with
//! `Poseidon(left, right)` nodes (circom Poseidon, width 3).
//!
//! Levels count from the leaves: level 0 holds the leaves, level `DEPTH` the
//! root. An empty position at level `i` holds `zeros[i]`, where the zero leaf
//! is `Fr::zero()` and `zeros[i + 1] = Poseidon(zeros[i], zeros[i])`; only
//! non-empty nodes are stored, behind the [`TreeStore`] trait.
//!
//! [`IdentityTree::append`] writes the leaf and the `DEPTH` nodes above it:
//! exactly `DEPTH` (32) Poseidon hashes and `DEPTH + 1` store writes per leaf,
//! independent of how many leaves the tree holds. Because leaves only ever
//! go to the right of every existing leaf, the new node's right sibling is
//! always empty (`zeros[i]`) when the node is a left child, and its left
//! sibling is always stored when it is a right child.
//!
//! [`IdentityTree::append_batch`] appends many leaves at once and leaves
//! the tree exactly as that many [`IdentityTree::append`] calls would, but
//! hashes level by level: one [`PairHasher::hash_pairs`] call per level
//! ([`DEPTH`] calls per batch) over every pair of that level, so the pairs
//! can go to a GPU (the node's `GpuPoseidon`) or to all cores
//! ([`CpuPairHasher`], the default). It also skips the hashes no one can
//! observe (intermediate nodes that are overwritten within the batch and
//! whose roots fall out of the root history): `k + min(k, R)·DEPTH` hashes
//! at most instead of `k·DEPTH`.
//!
//! Like Semaphore, the tree keeps the last `R` roots (the current one
//! included): a membership proof made against any of them is still accepted
//! ([`IdentityTree::is_known_root`]), so proofs in flight survive a few
//! appends.
//!
//! [`path_gadget`] recomputes the root in-circuit from a leaf, its siblings and
//! its index bits.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::OnceLock;

use ark_ff::Zero;
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError};
use rayon::prelude::*;

use crate::poseidon::{hash_gadget, hash2};
use crate::{Fr, ZkError};

/// Depth of the identity tree: it holds up to `2^32` leaves.
pub const DEPTH: usize = 32;

/// Number of leaves the tree can hold.
pub const CAPACITY: u64 = 1 << DEPTH;

/// `zeros[i]`: the value of an empty subtree of height `i` (`zeros[0]` is the
/// zero leaf, `zeros[DEPTH]` the root of the empty tree).
pub fn zero_hashes() -> &'static [Fr; DEPTH + 1] {
    static ZEROS: OnceLock<[Fr; DEPTH + 1]> = OnceLock::new();
    ZEROS.get_or_init(|| {
        let mut zeros = [Fr::zero(); DEPTH + 1];
        for i in 0..DEPTH {
            zeros[i + 1] = hash2(zeros[i], zeros[i]);
        }
        zeros
    })
}

/// Where the tree's non-empty nodes live. Level 0 holds the leaves, level
/// [`DEPTH`] the root; `index` is the node's position within its level.
/// [`MemTreeStore`] keeps them in memory; the chain keeps them in LMDB
/// (`int_systems::bpk`), with writes buffered until the block commits.
pub trait TreeStore {
    /// The node at `(level, index)`, or `None` if it was never written
    /// (an empty subtree); [`ZkError::Store`] if the store failed (a
    /// persistent store must never answer `None` for a node it lost).
    fn get(&self, level: u8, index: u64) -> Result<Option<Fr>, ZkError>;
    /// Writes the node at `(level, index)`.
    fn put(&mut self, level: u8, index: u64, value: Fr);
}

/// Hashes many `(left, right)` pairs at once: the identity tree's node
/// hash, batched so that a backend (a GPU, all cores) can take a whole tree
/// level in one call ([`IdentityTree::append_batch`]).
///
/// Contract: `hash_pairs(pairs)[i]` must equal [`hash2`]`(pairs[i].0,
/// pairs[i].1)` exactly, for every `i`, and the result must have
/// `pairs.len()` elements. The tree's roots (and so every membership proof
/// and the chain's state) depend on it; a backend that cannot compute a
/// batch must compute it another way (e.g. fall back to
/// [`CpuPairHasher`]), not return something else.
pub trait PairHasher: Sync {
    /// `[hash2(l, r) for (l, r) in pairs]`, in order.
    fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr>;
}

/// The CPU [`PairHasher`]: [`hash2`] of each pair on rayon's pool (all
/// cores).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPairHasher;

impl PairHasher for CpuPairHasher {
    fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr> {
        // Below a few dozen pairs rayon's split costs more than it saves.
        pairs
            .par_iter()
            .with_min_len(32)
            .map(|(l, r)| hash2(*l, *r))
            .collect()
    }
}

/// What [`IdentityTree::append_batch`] did with its leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAppend {
    /// The indices the appended leaves got, in order: `leaves[i]` went to
    /// `appended.start + i` for `i < appended.len()`. Empty if the batch was
    /// empty or the tree was already full.
    pub appended: Range<u64>,
    /// How many leaves at the end of the batch were refused because the tree
    /// is full: each of them is one [`ZkError::TreeFull`] that
    /// [`IdentityTree::append`] would have returned.
    pub refused: usize,
}

/// In-memory [`TreeStore`].
#[derive(Debug, Clone, Default)]
pub struct MemTreeStore {
    nodes: BTreeMap<(u8, u64), Fr>,
}

impl MemTreeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is stored.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl TreeStore for MemTreeStore {
    fn get(&self, level: u8, index: u64) -> Result<Option<Fr>, ZkError> {
        Ok(self.nodes.get(&(level, index)).copied())
    }

    fn put(&mut self, level: u8, index: u64, value: Fr) {
        self.nodes.insert((level, index), value);
    }
}

/// A leaf's membership path: its siblings from the leaf level up, and the
/// leaf index's bits (least significant first; bit `i` set means the node at
/// level `i` is a right child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerklePath {
    /// Index of the leaf this path is for.
    pub leaf_index: u64,
    /// `siblings[i]`: the sibling of the path's node at level `i`.
    pub siblings: [Fr; DEPTH],
    /// `index_bits[i]`: bit `i` of `leaf_index`.
    pub index_bits: [bool; DEPTH],
}

impl MerklePath {
    /// The root this path leads to from `leaf` (`DEPTH` hashes).
    pub fn root(&self, leaf: Fr) -> Fr {
        self.siblings
            .iter()
            .zip(&self.index_bits)
            .fold(leaf, |node, (sibling, is_right)| {
                if *is_right {
                    hash2(*sibling, node)
                } else {
                    hash2(node, *sibling)
                }
            })
    }
}

/// The incremental, append-only identity tree (see the module docs).
#[derive(Debug, Clone)]
pub struct IdentityTree<S: TreeStore = MemTreeStore> {
    store: S,
    len: u64,
    root: Fr,
    /// The last `history_size` roots, oldest first; the current root is last.
    history: VecDeque<Fr>,
    history_size: usize,
}

impl IdentityTree<MemTreeStore> {
    /// An empty in-memory tree that remembers the last `root_history` roots.
    pub fn new(root_history: usize) -> Result<Self, ZkError> {
        Self::with_store(MemTreeStore::new(), root_history)
    }

    /// The leaf at `index`, if it was appended (an in-memory store cannot
    /// fail; see [`IdentityTree::try_leaf`] for others).
    pub fn leaf(&self, index: u64) -> Option<Fr> {
        self.try_leaf(index).ok().flatten()
    }
}

impl<S: TreeStore> IdentityTree<S> {
    /// An empty tree over `store`, which must hold no nodes (reopen a
    /// persisted tree with [`IdentityTree::from_parts`]). It remembers the
    /// last `root_history` roots, the current one included; the empty
    /// tree's root is the first of them.
    pub fn with_store(store: S, root_history: usize) -> Result<Self, ZkError> {
        if root_history == 0 {
            return Err(ZkError::EmptyRootHistory);
        }
        let root = zero_hashes()[DEPTH];
        let mut history = VecDeque::with_capacity(root_history);
        history.push_back(root);
        Ok(Self {
            store,
            len: 0,
            root,
            history,
            history_size: root_history,
        })
    }

    /// Reopens a persisted tree: `store` holds the nodes of `len` leaves and
    /// `history` the remembered roots, oldest first, the current root last
    /// (at most `root_history` of them). The nodes are not re-hashed (that
    /// would cost `len` hashes); the current root is read from the store
    /// and must equal the last of `history`, so a store that does not match
    /// its metadata is caught.
    pub fn from_parts(
        store: S,
        len: u64,
        history: Vec<Fr>,
        root_history: usize,
    ) -> Result<Self, ZkError> {
        if root_history == 0 {
            return Err(ZkError::EmptyRootHistory);
        }
        let corrupt = |reason: &str| ZkError::Malformed {
            what: "identity tree",
            reason: reason.to_string(),
        };
        if len > CAPACITY {
            return Err(corrupt("more leaves than the tree holds"));
        }
        if history.is_empty() || history.len() > root_history {
            return Err(corrupt("root history of the wrong length"));
        }
        let root = *history.last().unwrap_or(&zero_hashes()[DEPTH]);
        let stored_root = if len == 0 {
            zero_hashes()[DEPTH]
        } else {
            store
                .get(DEPTH as u8, 0)?
                .ok_or_else(|| corrupt("root node missing"))?
        };
        if stored_root != root {
            return Err(corrupt("stored root differs from the root history"));
        }
        Ok(Self {
            store,
            len,
            root,
            history: history.into(),
            history_size: root_history,
        })
    }

    /// Consumes the tree, giving back its store (to commit buffered writes).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Appends `leaf` and returns its index. `DEPTH` hashes and `DEPTH + 1`
    /// store writes; fails once the tree holds `2^DEPTH` leaves.
    pub fn append(&mut self, leaf: Fr) -> Result<u64, ZkError> {
        if self.len >= CAPACITY {
            return Err(ZkError::TreeFull { capacity: CAPACITY });
        }
        let leaf_index = self.len;
        let zeros = zero_hashes();
        let mut index = leaf_index;
        let mut node = leaf;
        self.store.put(0, index, node);
        for (level, zero) in zeros.iter().enumerate().take(DEPTH) {
            node = if index & 1 == 0 {
                // Left child: everything to the right is still empty.
                hash2(node, *zero)
            } else {
                // Right child: the left sibling was appended before.
                hash2(self.node(level, index - 1)?, node)
            };
            index >>= 1;
            self.store.put(level as u8 + 1, index, node);
        }
        self.len += 1;
        self.root = node;
        if self.history.len() == self.history_size {
            self.history.pop_front();
        }
        self.history.push_back(node);
        Ok(leaf_index)
    }

    /// Appends `leaves` in order, leaving the tree exactly as
    /// `leaves.len()` calls to [`IdentityTree::append`] would: the same
    /// stored nodes, length, root and root history (one root per appended
    /// leaf, in order, bounded to the last `R`). Once the tree is full the
    /// remaining leaves are refused ([`BatchAppend::refused`]) and the
    /// leaves before them stay appended, as sequential appends would.
    ///
    /// The hashing runs level by level, one `hasher.hash_pairs` call per
    /// level ([`DEPTH`] calls for any batch size), so a GPU or all cores
    /// can take each level. At level `l`, a leaf's node moves up as
    /// `H(node, zeros[l])` when it is a left child and `H(left, node)` when
    /// it is a right child, where `left` is the final value of the left
    /// sibling subtree: that subtree holds only earlier leaves, so its value
    /// is in the store, or, when its last leaf is in this batch, it is that
    /// leaf's node at level `l`.
    ///
    /// Only the nodes someone can observe are hashed: a leaf's node at level
    /// `l` is needed when it is the final value of its subtree (the leaf is
    /// the last of the batch in it: `(index + 1) % 2^l == 0`, or the last
    /// leaf of the batch), and every node of the last `min(k, R)` leaves is
    /// needed for the root history. Back of the envelope for `k` leaves:
    /// sequential appends do `k·DEPTH` hashes in `k·DEPTH` dependent steps;
    /// this does at most `k + min(k, R)·DEPTH` hashes in `DEPTH` batched
    /// calls (4,096 leaves into an empty tree, `R` = 100: 7,188 hashes
    /// instead of 131,072, in 32 calls of 2,098 down to 100 pairs).
    ///
    /// Nothing is written until every level is hashed: a store error or a
    /// hasher returning the wrong number of hashes
    /// ([`ZkError::HasherOutput`]) leaves the tree unchanged.
    pub fn append_batch(
        &mut self,
        leaves: &[Fr],
        hasher: &dyn PairHasher,
    ) -> Result<BatchAppend, ZkError> {
        let start = self.len;
        let room = CAPACITY.saturating_sub(start);
        let k = leaves
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        let refused = leaves.len() - k;
        if k == 0 {
            return Ok(BatchAppend {
                appended: start..start,
                refused,
            });
        }
        let zeros = zero_hashes();
        // Leaves `keep_from..k` (batch offsets) have their roots in the
        // history; `k - 1`, the last, always does (R ≥ 1).
        let keep_from = k - k.min(self.history_size);
        // `needed(o, l)`: the node of the leaf at offset `o` at level `l`
        // is a final node of the tree or on a remembered root's path.
        // Monotone: needed at `l + 1` implies needed at `l`.
        let needed = |o: usize, level: usize| -> bool {
            o >= keep_from || (start + o as u64 + 1).trailing_zeros() as usize >= level
        };
        // The batch's nodes at the current level: (offset, value), sorted by
        // offset.
        let mut cur: Vec<(usize, Fr)> = leaves[..k].iter().copied().enumerate().collect();
        let mut writes: Vec<(u8, u64, Fr)> = Vec::with_capacity(2 * k + DEPTH);
        let mut pairs: Vec<(Fr, Fr)> = Vec::with_capacity(k);
        let mut next: Vec<usize> = Vec::with_capacity(k);
        for (level, zero) in zeros.iter().enumerate().take(DEPTH) {
            // This level's final nodes: the last batch leaf of each touched
            // subtree (sequential appends write it last).
            for (i, (o, v)) in cur.iter().enumerate() {
                let pos = (start + *o as u64) >> level;
                let last_here = cur
                    .get(i + 1)
                    .is_none_or(|(o2, _)| (start + *o2 as u64) >> level != pos);
                if last_here {
                    writes.push((level as u8, pos, *v));
                }
            }
            pairs.clear();
            next.clear();
            for (o, v) in &cur {
                if !needed(*o, level + 1) {
                    continue;
                }
                let pos = (start + *o as u64) >> level;
                let pair = if pos & 1 == 0 {
                    (*v, *zero)
                } else {
                    // The left sibling subtree's last leaf.
                    let last = (pos << level) - 1;
                    let left = if last >= start {
                        let lo = (last - start) as usize;
                        // `start + lo + 1 = pos << level`: the leaf at
                        // `lo` is needed at this level, so it is in `cur`.
                        match cur.binary_search_by_key(&lo, |e| e.0) {
                            Ok(j) => cur[j].1,
                            Err(_) => unreachable!("the left sibling's last leaf is needed"),
                        }
                    } else {
                        self.node(level, pos - 1)?
                    };
                    (left, *v)
                };
                pairs.push(pair);
                next.push(*o);
            }
            let hashed = hasher.hash_pairs(&pairs);
            if hashed.len() != pairs.len() {
                return Err(ZkError::HasherOutput {
                    expected: pairs.len(),
                    got: hashed.len(),
                });
            }
            cur.clear();
            cur.extend(next.iter().copied().zip(hashed));
        }
        // Level DEPTH: exactly the remembered roots, in order.
        assert_eq!(cur.len(), k - keep_from, "one root per remembered leaf");
        assert!(cur.first().is_some_and(|(o, _)| *o == keep_from));
        let (_, root) = cur[cur.len() - 1];
        writes.push((DEPTH as u8, 0, root));
        for (level, index, value) in writes {
            self.store.put(level, index, value);
        }
        self.len = start + k as u64;
        self.root = root;
        for (_, r) in cur {
            if self.history.len() == self.history_size {
                self.history.pop_front();
            }
            self.history.push_back(r);
        }
        Ok(BatchAppend {
            appended: start..self.len,
            refused,
        })
    }

    /// The current root.
    pub fn root(&self) -> Fr {
        self.root
    }

    /// Number of leaves appended.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no leaf was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The remembered roots, oldest first; the last is the current root.
    pub fn root_history(&self) -> impl Iterator<Item = &Fr> {
        self.history.iter()
    }

    /// Whether `root` is one of the last `R` roots (the current one included).
    pub fn is_known_root(&self, root: &Fr) -> bool {
        self.history.iter().rev().any(|r| r == root)
    }

    /// The leaf at `index`, if it was appended; an error if the store
    /// failed.
    pub fn try_leaf(&self, index: u64) -> Result<Option<Fr>, ZkError> {
        if index < self.len {
            self.node(0, index).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The membership path of leaf `index` against the current root.
    pub fn path(&self, index: u64) -> Result<MerklePath, ZkError> {
        if index >= self.len {
            return Err(ZkError::LeafIndexOutOfRange {
                index,
                len: self.len,
            });
        }
        let mut siblings = [Fr::zero(); DEPTH];
        let mut index_bits = [false; DEPTH];
        for level in 0..DEPTH {
            let position = index >> level;
            siblings[level] = self.node(level, position ^ 1)?;
            index_bits[level] = position & 1 == 1;
        }
        Ok(MerklePath {
            leaf_index: index,
            siblings,
            index_bits,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The node at `(level, index)`, or the empty subtree's value.
    fn node(&self, level: usize, index: u64) -> Result<Fr, ZkError> {
        Ok(self
            .store
            .get(level as u8, index)?
            .unwrap_or(zero_hashes()[level]))
    }
}

/// In-circuit root of a membership path: from `leaf`, at each level put the
/// node and its sibling in order by the index bit (bit set: the node is the
/// right child), then hash them with [`hash_gadget`]. The caller constrains
/// the returned root (e.g. to a public input) and must constrain the bits to
/// be boolean, which allocating them as [`Boolean`] witnesses does.
///
/// `siblings` and `index_bits` run bottom-up and must have the same length
/// (the tree depth, [`DEPTH`] for the identity tree); otherwise
/// [`SynthesisError::Unsatisfiable`].
///
/// Cost per level: 1 constraint for the conditional swap
/// (`d = bit · (sibling − node)`, `left = node + d`, `right = sibling − d`)
/// plus 240 for Poseidon of two inputs: 241 · depth, 7,712 for depth 32.
pub fn path_gadget(
    cs: ConstraintSystemRef<Fr>,
    leaf: &FpVar<Fr>,
    siblings: &[FpVar<Fr>],
    index_bits: &[Boolean<Fr>],
) -> Result<FpVar<Fr>, SynthesisError> {
    if siblings.len() != index_bits.len() {
        return Err(SynthesisError::Unsatisfiable);
    }
    let mut node = leaf.clone();
    for (sibling, bit) in siblings.iter().zip(index_bits) {
        let d = FpVar::from(bit.clone()) * (sibling - &node);
        let left = &node + &d;
        let right = sibling - &d;
        node = hash_gadget(cs.clone(), &[left, right])?;
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ark_ff::{One, UniformRand};
    use ark_relations::gr1cs::ConstraintSystem;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(0x7ee_2026)
    }

    /// Root of the depth-32 tree over `leaves`, computed level by level from
    /// the full leaf list, padding each level to even length with that
    /// level's zero value (the rest of the level is all zeros).
    fn naive_root(leaves: &[Fr]) -> Fr {
        let zeros = zero_hashes();
        let mut level: Vec<Fr> = leaves.to_vec();
        for zero in zeros.iter().take(DEPTH) {
            if level.len() % 2 == 1 {
                level.push(*zero);
            }
            level = level.chunks(2).map(|p| hash2(p[0], p[1])).collect();
        }
        level.first().copied().unwrap_or(zeros[DEPTH])
    }

    #[test]
    fn from_parts_reopens_and_checks_the_root() {
        let mut tree = IdentityTree::new(3).unwrap();
        for i in 1..=5u64 {
            tree.append(Fr::from(i)).unwrap();
        }
        let history: Vec<Fr> = tree.root_history().copied().collect();
        let reopened =
            IdentityTree::from_parts(tree.store().clone(), 5, history.clone(), 3).unwrap();
        assert_eq!(reopened.root(), tree.root());
        assert_eq!(reopened.path(3).unwrap(), tree.path(3).unwrap());
        let mut appended = reopened.clone();
        appended.append(Fr::from(6u64)).unwrap();
        tree.append(Fr::from(6u64)).unwrap();
        assert_eq!(appended.root(), tree.root());
        // Metadata that does not match the nodes is refused.
        let mut wrong = history.clone();
        wrong.push(Fr::from(9u64));
        assert!(IdentityTree::from_parts(tree.store().clone(), 6, wrong, 5).is_err());
        assert!(IdentityTree::from_parts(MemTreeStore::new(), 0, vec![], 3).is_err());
        assert!(IdentityTree::from_parts(tree.store().clone(), 6, history, 2).is_err());
    }

    #[test]
    fn zero_hashes_chain() {
        let zeros = zero_hashes();
        assert!(zeros[0].is_zero());
        for i in 0..DEPTH {
            assert_eq!(zeros[i + 1], hash2(zeros[i], zeros[i]));
        }
        // circomlib's Poseidon(0, 0), as Semaphore's zero values start with.
        assert_eq!(
            zeros[1].to_string(),
            "14744269619966411208579211824598458697587494354926760081771325075741142829156"
        );
    }

    #[test]
    fn empty_tree() {
        let tree = IdentityTree::new(4).unwrap();
        assert_eq!(tree.len(), 0);
        assert!(tree.is_empty());
        assert_eq!(tree.root(), zero_hashes()[DEPTH]);
        assert_eq!(tree.root(), naive_root(&[]));
        assert!(tree.is_known_root(&tree.root()));
        assert!(tree.path(0).is_err());
        assert_eq!(tree.leaf(0), None);
    }

    #[test]
    fn zero_root_history_is_an_error() {
        assert_eq!(IdentityTree::new(0).unwrap_err(), ZkError::EmptyRootHistory);
    }

    #[test]
    fn root_matches_naive_recomputation() {
        let mut rng = rng();
        let mut tree = IdentityTree::new(1).unwrap();
        let mut leaves = Vec::new();
        for n in 1..=17u64 {
            let leaf = Fr::rand(&mut rng);
            assert_eq!(tree.append(leaf).unwrap(), n - 1);
            leaves.push(leaf);
            assert_eq!(tree.len(), n);
            assert_eq!(tree.root(), naive_root(&leaves), "{n} leaves");
            assert_eq!(tree.leaf(n - 1), Some(leaf));
        }
    }

    #[test]
    fn every_path_recomputes_the_root() {
        let mut rng = rng();
        let mut tree = IdentityTree::new(1).unwrap();
        for n in 1..=13u64 {
            tree.append(Fr::rand(&mut rng)).unwrap();
            for i in 0..n {
                let path = tree.path(i).unwrap();
                assert_eq!(path.leaf_index, i);
                for (level, bit) in path.index_bits.iter().enumerate() {
                    assert_eq!(*bit, (i >> level) & 1 == 1);
                }
                let leaf = tree.leaf(i).unwrap();
                assert_eq!(path.root(leaf), tree.root(), "leaf {i} of {n}");
                // A different leaf does not lead to the root.
                assert_ne!(path.root(leaf + Fr::one()), tree.root());
            }
            assert_eq!(
                tree.path(n).unwrap_err(),
                ZkError::LeafIndexOutOfRange { index: n, len: n }
            );
        }
    }

    #[test]
    fn root_history_window() {
        const R: usize = 3;
        let mut rng = rng();
        let mut tree = IdentityTree::new(R).unwrap();
        let mut roots = vec![tree.root()];
        let mut paths = Vec::new();
        for _ in 0..6 {
            let leaf = Fr::rand(&mut rng);
            let i = tree.append(leaf).unwrap();
            roots.push(tree.root());
            let path = tree.path(i).unwrap();
            paths.push((leaf, path));
        }
        assert_eq!(tree.root_history().count(), R);
        // roots[k] is the root after k appends; the last R are known.
        for (k, root) in roots.iter().enumerate() {
            let known = k + R >= roots.len();
            assert_eq!(tree.is_known_root(root), known, "root after {k} appends");
        }
        // A path taken right after append k leads to roots[k + 1]: accepted
        // while that root is in the window, rejected once it falls out.
        for (k, (leaf, path)) in paths.iter().enumerate() {
            let root = path.root(*leaf);
            assert_eq!(root, roots[k + 1]);
            assert_eq!(tree.is_known_root(&root), k + 1 + R >= roots.len());
        }
        assert!(!tree.is_known_root(&Fr::from(12345u64)));
    }

    #[test]
    fn append_costs_depth_hashes_and_writes() {
        // Every append writes the leaf and exactly one node per level above
        // it; nodes on the right edge are rewritten in place, so the store
        // holds the union of the touched positions.
        let mut tree = IdentityTree::new(1).unwrap();
        tree.append(Fr::one()).unwrap();
        assert_eq!(tree.store().len(), DEPTH + 1);
        tree.append(Fr::one()).unwrap();
        // Leaf 1 is new; every node above level 0 is shared with leaf 0.
        assert_eq!(tree.store().len(), DEPTH + 2);
        tree.append(Fr::one()).unwrap();
        // Leaf 2 and its level-1 parent are new.
        assert_eq!(tree.store().len(), DEPTH + 4);
    }

    /// Counts store traffic; each write above the leaf level follows exactly
    /// one Poseidon hash in `append`, so writes − 1 = hashes.
    #[derive(Default)]
    struct CountingStore {
        inner: MemTreeStore,
        gets: std::cell::Cell<usize>,
        puts: usize,
    }

    impl TreeStore for CountingStore {
        fn get(&self, level: u8, index: u64) -> Result<Option<Fr>, ZkError> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(level, index)
        }

        fn put(&mut self, level: u8, index: u64, value: Fr) {
            self.puts += 1;
            self.inner.put(level, index, value);
        }
    }

    #[test]
    fn append_is_o_depth_regardless_of_size() {
        let mut tree = IdentityTree::with_store(CountingStore::default(), 2).unwrap();
        for n in 0..40u64 {
            let (gets, puts) = (tree.store().gets.get(), tree.store().puts);
            tree.append(Fr::from(n)).unwrap();
            // DEPTH + 1 writes (leaf + one node per level) = DEPTH hashes;
            // at most one read (a left sibling) per level.
            assert_eq!(tree.store().puts - puts, DEPTH + 1);
            assert!(tree.store().gets.get() - gets <= DEPTH);
        }
        let leaves: Vec<Fr> = (0..40u64).map(Fr::from).collect();
        assert_eq!(tree.root(), naive_root(&leaves));
    }

    #[test]
    fn tree_full_is_an_error() {
        // Fill the tree's count without 2^32 appends: the store is private
        // state, so set the length directly.
        let mut tree = IdentityTree::new(1).unwrap();
        tree.len = CAPACITY;
        assert_eq!(
            tree.append(Fr::one()).unwrap_err(),
            ZkError::TreeFull { capacity: CAPACITY }
        );
    }

    // --- append_batch -----------------------------------------------------

    /// A tree of `len` random leaves remembering `history` roots.
    fn tree_of(len: u64, history: usize, rng: &mut ChaCha20Rng) -> IdentityTree {
        let mut tree = IdentityTree::new(history).unwrap();
        for _ in 0..len {
            tree.append(Fr::rand(rng)).unwrap();
        }
        tree
    }

    /// Whether two trees are in the same state: stored nodes, length, root
    /// and root history.
    fn same_state(a: &IdentityTree, b: &IdentityTree) -> bool {
        a.store.nodes == b.store.nodes
            && a.len == b.len
            && a.root == b.root
            && a.history == b.history
            && a.history_size == b.history_size
    }

    /// Appends `leaves` to a copy of `tree` one by one and, in batches of
    /// the sizes `splits` (the rest in a last batch), to another copy with
    /// `hasher`; whether both end in the same state, with the batch results
    /// matching the sequential ones.
    fn batch_matches_sequential(
        tree: &IdentityTree,
        leaves: &[Fr],
        splits: &[usize],
        hasher: &dyn PairHasher,
    ) -> bool {
        let mut seq = tree.clone();
        let mut seq_ok = Vec::new();
        let mut seq_full = 0;
        for leaf in leaves {
            match seq.append(*leaf) {
                Ok(i) => seq_ok.push(i),
                Err(ZkError::TreeFull { .. }) => seq_full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let mut bat = tree.clone();
        let (mut bat_ok, mut bat_full) = (Vec::new(), 0);
        let mut rest = leaves;
        for &n in splits.iter().chain(std::iter::once(&usize::MAX)) {
            let (now, later) = rest.split_at(n.min(rest.len()));
            let got = bat.append_batch(now, hasher).unwrap();
            assert_eq!(
                got.appended.end - got.appended.start + got.refused as u64,
                now.len() as u64
            );
            bat_ok.extend(got.appended);
            bat_full += got.refused;
            rest = later;
        }
        same_state(&seq, &bat) && seq_ok == bat_ok && seq_full == bat_full
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Any start length (odd ones included), batch sizes 0 and up
        /// (crossing 32 and 64), any splits and history size: the batch
        /// leaves the tree exactly as sequential appends.
        #[test]
        fn append_batch_equals_sequential_appends(
            start in 0u64..40,
            n in 0usize..80,
            splits in proptest::collection::vec(0usize..40, 0..4),
            history in 1usize..12,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let tree = tree_of(start, history, &mut rng);
            let leaves: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
            proptest::prop_assert!(batch_matches_sequential(&tree, &leaves, &splits, &CpuPairHasher));
        }
    }

    #[test]
    fn append_batch_equals_sequential_across_powers_of_two() {
        let mut rng = rng();
        // Odd start, one batch crossing 128 and 256; then 0, 1, and a
        // batch of one into an odd tree; history longer than the batch.
        for (start, n, history) in [(127, 200, 5), (255, 1, 3), (1, 0, 2), (3, 130, 300)] {
            let tree = tree_of(start, history, &mut rng);
            let leaves: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
            assert!(
                batch_matches_sequential(&tree, &leaves, &[], &CpuPairHasher),
                "start {start}, {n} leaves, R = {history}"
            );
        }
    }

    /// Hashes correctly except pair `which` of the `call`-th call (counting
    /// from 0), which gets `hash2 + 1`.
    struct WrongAt {
        call: usize,
        which: usize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl PairHasher for WrongAt {
        fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr> {
            let call = self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut out = CpuPairHasher.hash_pairs(pairs);
            if call == self.call
                && let Some(h) = out.get_mut(self.which)
            {
                *h += Fr::one();
            }
            out
        }
    }

    #[test]
    fn a_wrong_hash_anywhere_breaks_the_equivalence() {
        let mut rng = rng();
        let tree = tree_of(5, 4, &mut rng);
        let leaves: Vec<Fr> = (0..9).map(|_| Fr::rand(&mut rng)).collect();
        // Every level (call), first and last pair of it: each hash is a
        // final node or on a remembered root's path, so it is observed.
        for call in 0..DEPTH {
            for which in [0, usize::MAX] {
                let which = if which == 0 {
                    0
                } else {
                    // The number of pairs at this level, from a dry run.
                    let counting = Counting::default();
                    tree.clone().append_batch(&leaves, &counting).unwrap();
                    counting.sizes.lock().unwrap()[call] - 1
                };
                let wrong = WrongAt {
                    call,
                    which,
                    calls: Default::default(),
                };
                assert!(
                    !batch_matches_sequential(&tree, &leaves, &[], &wrong),
                    "a wrong hash at call {call}, pair {which} went unnoticed"
                );
            }
        }
        // And the right hasher through the same harness passes.
        assert!(batch_matches_sequential(
            &tree,
            &leaves,
            &[],
            &CpuPairHasher
        ));
    }

    /// Records the size of each `hash_pairs` call.
    #[derive(Default)]
    struct Counting {
        sizes: std::sync::Mutex<Vec<usize>>,
    }

    impl PairHasher for Counting {
        fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr> {
            self.sizes.lock().unwrap().push(pairs.len());
            CpuPairHasher.hash_pairs(pairs)
        }
    }

    #[test]
    fn append_batch_makes_depth_calls_and_skips_unobserved_hashes() {
        let mut rng = rng();
        for (start, k, history) in [
            (0u64, 4096usize, 100usize),
            (77, 1000, 3),
            (5, 1, 1),
            (9, 40, 64),
        ] {
            let mut tree = tree_of(start, history, &mut rng);
            let leaves: Vec<Fr> = (0..k).map(|_| Fr::rand(&mut rng)).collect();
            let counting = Counting::default();
            tree.append_batch(&leaves, &counting).unwrap();
            let sizes = counting.sizes.into_inner().unwrap();
            assert_eq!(sizes.len(), DEPTH);
            let total: usize = sizes.iter().sum();
            assert!(total <= k + (k.min(history) + 1) * DEPTH, "{total} hashes");
            eprintln!(
                "start {start}, k {k}, R {history}: {total} hashes (sequential: {}), per level {sizes:?}",
                k * DEPTH
            );
        }
        // An empty batch hashes nothing.
        let counting = Counting::default();
        let mut tree = tree_of(3, 2, &mut rng);
        assert_eq!(
            tree.append_batch(&[], &counting).unwrap(),
            BatchAppend {
                appended: 3..3,
                refused: 0
            }
        );
        assert!(counting.sizes.into_inner().unwrap().is_empty());
    }

    /// Times 4,096 appends one by one against one `append_batch` (CPU,
    /// `R` = 100): `cargo test -p int-zk --lib append_batch_timing --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn append_batch_timing() {
        let mut rng = rng();
        let leaves: Vec<Fr> = (0..4096).map(|_| Fr::rand(&mut rng)).collect();
        let mut seq = IdentityTree::new(100).unwrap();
        let t = std::time::Instant::now();
        for leaf in &leaves {
            seq.append(*leaf).unwrap();
        }
        let t_seq = t.elapsed();
        let mut bat = IdentityTree::new(100).unwrap();
        let t = std::time::Instant::now();
        bat.append_batch(&leaves, &CpuPairHasher).unwrap();
        let t_bat = t.elapsed();
        assert!(same_state(&seq, &bat));
        eprintln!(
            "4096 leaves, R = 100, {} threads: sequential append {t_seq:?}, append_batch {t_bat:?}",
            rayon::current_num_threads()
        );
    }

    /// A hasher that drops a hash is refused before anything is written.
    #[test]
    fn short_hasher_output_is_an_error_and_writes_nothing() {
        struct Short;
        impl PairHasher for Short {
            fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr> {
                let mut out = CpuPairHasher.hash_pairs(pairs);
                out.pop();
                out
            }
        }
        let mut rng = rng();
        let mut tree = tree_of(3, 2, &mut rng);
        let before = tree.clone();
        let leaves = [Fr::one(), Fr::from(2u64)];
        assert!(matches!(
            tree.append_batch(&leaves, &Short).unwrap_err(),
            ZkError::HasherOutput { .. }
        ));
        assert!(same_state(&tree, &before));
    }

    #[test]
    fn append_batch_stops_at_capacity_like_sequential_appends() {
        // As in tree_full_is_an_error: set the length near the capacity
        // (an odd one) without 2^32 appends; both sides read the same
        // (empty) store, so their states must still agree node for node.
        let mut rng = rng();
        let mut tree = IdentityTree::new(2).unwrap();
        tree.len = CAPACITY - 3;
        let leaves: Vec<Fr> = (0..5).map(|_| Fr::rand(&mut rng)).collect();
        let mut bat = tree.clone();
        assert_eq!(
            bat.append_batch(&leaves, &CpuPairHasher).unwrap(),
            BatchAppend {
                appended: CAPACITY - 3..CAPACITY,
                refused: 2
            }
        );
        assert_eq!(bat.len(), CAPACITY);
        for splits in [&[][..], &[1, 1][..], &[2, 0, 2][..], &[3][..]] {
            assert!(
                batch_matches_sequential(&tree, &leaves, splits, &CpuPairHasher),
                "{splits:?}"
            );
        }
        // A full tree refuses the whole batch and hashes nothing.
        let counting = Counting::default();
        assert_eq!(
            bat.append_batch(&leaves, &counting).unwrap(),
            BatchAppend {
                appended: CAPACITY..CAPACITY,
                refused: 5
            }
        );
        assert!(counting.sizes.into_inner().unwrap().is_empty());
        assert_eq!(
            bat.append(Fr::one()).unwrap_err(),
            ZkError::TreeFull { capacity: CAPACITY }
        );
    }

    fn alloc_path(
        cs: &ConstraintSystemRef<Fr>,
        leaf: Fr,
        path: &MerklePath,
    ) -> (FpVar<Fr>, Vec<FpVar<Fr>>, Vec<Boolean<Fr>>) {
        let leaf = FpVar::new_witness(cs.clone(), || Ok(leaf)).unwrap();
        let siblings = path
            .siblings
            .iter()
            .map(|s| FpVar::new_witness(cs.clone(), || Ok(*s)).unwrap())
            .collect();
        let bits = path
            .index_bits
            .iter()
            .map(|b| Boolean::new_witness(cs.clone(), || Ok(*b)).unwrap())
            .collect();
        (leaf, siblings, bits)
    }

    #[test]
    fn path_gadget_matches_native() {
        let mut rng = rng();
        let mut tree = IdentityTree::new(1).unwrap();
        for _ in 0..11 {
            tree.append(Fr::rand(&mut rng)).unwrap();
        }
        for i in [0u64, 5, 10] {
            let path = tree.path(i).unwrap();
            let leaf = tree.leaf(i).unwrap();
            let cs = ConstraintSystem::<Fr>::new_ref();
            let (leaf_var, siblings, bits) = alloc_path(&cs, leaf, &path);
            let before = cs.num_constraints();
            let root = path_gadget(cs.clone(), &leaf_var, &siblings, &bits).unwrap();
            // 241 per level: 1 for the swap, 240 for Poseidon(2).
            assert_eq!(cs.num_constraints() - before, 241 * DEPTH);
            assert_eq!(root.value().unwrap(), tree.root());
            let public = FpVar::new_input(cs.clone(), || Ok(tree.root())).unwrap();
            root.enforce_equal(&public).unwrap();
            assert!(cs.is_satisfied().unwrap());
        }
    }

    #[test]
    fn path_gadget_random_path_matches_native() {
        let mut rng = rng();
        let path = MerklePath {
            leaf_index: 0,
            siblings: std::array::from_fn(|_| Fr::rand(&mut rng)),
            index_bits: std::array::from_fn(|_| rng.r#gen::<bool>()),
        };
        let leaf = Fr::rand(&mut rng);
        let cs = ConstraintSystem::<Fr>::new_ref();
        let (leaf_var, siblings, bits) = alloc_path(&cs, leaf, &path);
        let root = path_gadget(cs.clone(), &leaf_var, &siblings, &bits).unwrap();
        assert_eq!(root.value().unwrap(), path.root(leaf));
        assert!(cs.is_satisfied().unwrap());
    }

    #[test]
    fn path_gadget_rejects_wrong_root_and_length_mismatch() {
        let mut rng = rng();
        let mut tree = IdentityTree::new(1).unwrap();
        for _ in 0..4 {
            tree.append(Fr::rand(&mut rng)).unwrap();
        }
        let path = tree.path(2).unwrap();
        let cs = ConstraintSystem::<Fr>::new_ref();
        // A leaf that is not in the tree.
        let (leaf_var, siblings, bits) = alloc_path(&cs, Fr::from(99u64), &path);
        let root = path_gadget(cs.clone(), &leaf_var, &siblings, &bits).unwrap();
        let public = FpVar::new_input(cs.clone(), || Ok(tree.root())).unwrap();
        root.enforce_equal(&public).unwrap();
        assert!(!cs.is_satisfied().unwrap());

        assert_eq!(
            path_gadget(cs.clone(), &leaf_var, &siblings[1..], &bits).unwrap_err(),
            SynthesisError::Unsatisfiable
        );
    }
}
