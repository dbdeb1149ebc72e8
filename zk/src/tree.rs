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
//! Like Semaphore, the tree keeps the last `R` roots (the current one
//! included): a membership proof made against any of them is still accepted
//! ([`IdentityTree::is_known_root`]), so proofs in flight survive a few
//! appends.
//!
//! [`path_gadget`] recomputes the root in-circuit from a leaf, its siblings and
//! its index bits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use ark_ff::Zero;
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::*;
use ark_relations::gr1cs::{ConstraintSystemRef, SynthesisError};

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
