//! The state commitment: a binary sparse Merkle tree (SMT) over 32-byte keys,
//! stored node by node in LMDB and updated incrementally, one batch per block.
//!
//! Replaced as the store's commitment: issue 16's spike measured this
//! tree's commit at 10⁷ accounts at ≈ 1.8 s per block of 10 000 transfers
//! (LMDB rewrites most of it), against ≈ 60 ms for a twig log;
//! [`super::twig`] has the comparison and the structure the store commits
//! with now. This module stays for its benchmark and its analysis.
//!
//! # Why this structure
//!
//! The keys are account ids, i.e. hashes of public keys, so they are uniformly
//! random. That makes a *sparse Merkle tree* the natural choice:
//!
//! * **No rebalancing.** The position of a key is fixed by its bits (MSB first),
//!   and random keys keep the tree balanced on their own: expected leaf depth is
//!   ≈ log2(n) + 1.33 (about 31 at a billion accounts). An AVL/IAVL tree has to
//!   rotate, and its shape — hence its root — depends on insertion order.
//! * **Canonical root.** The root depends only on the set of (key, value_hash)
//!   pairs, never on the order of inserts, deletes or batching. Two nodes that
//!   applied the same blocks in different batch shapes agree, and an auditor can
//!   recompute it from scratch with [`root_of`].
//! * **Incremental cost.** Updating k touched keys out of n reads and writes only
//!   the nodes on their paths: ≈ k × (log2(n) − log2(k) + c) nodes (the top
//!   log2(k) levels are shared by the paths). Nothing is proportional to n, and
//!   memory during an update is proportional to the touched paths only.
//! * **Inclusion and exclusion proofs** of ≈ 32 × log2(n) bytes (≈ 1 KiB at a
//!   billion accounts), verifiable by an STM32-class client with one hash per
//!   level: [`super::proof::verify_proof`] checks the bytes with no store
//!   and no allocation.
//!
//! The tree is the "compact" form used by Diem/Aptos: a full-depth (256-level)
//! SMT would cost 256 hashes per update; instead
//!
//! * an empty subtree hashes to [`EMPTY`] (all zeros);
//! * a subtree holding exactly one leaf hashes to that leaf's hash,
//!   [`leaf_hash`] = blake3(0x00 ‖ key ‖ value_hash) — the leaf is *not*
//!   extended down to depth 256, it sits at the highest position where it is
//!   alone;
//! * a subtree holding ≥ 2 leaves hashes to blake3(0x01 ‖ left ‖ right).
//!
//! The 0x00/0x01 prefixes separate the leaf and internal domains, so a leaf can
//! never be passed off as an internal node or vice versa.
//!
//! # Storage
//!
//! Only internal positions (subtrees with ≥ 2 leaves) are stored, keyed by
//! [`NodeKey`] = (depth, key prefix of `depth` bits with the rest zeroed). A
//! record ([`Node`]) holds a [`Child`] summary of each of its two children:
//! `Empty`, `Leaf { key, value_hash }` or `Internal { hash }`. That is enough to
//! descend and to recompute every hash without reading leaves from anywhere
//! else: leaves live inside their parent's record. The record at the root
//! position (0, 0) is *always* stored once the tree has been written, even when
//! the tree holds 0 or 1 leaves (then its children are `Empty`/`Leaf`
//! summaries); every other stored record has ≥ 2 leaves below it. The root hash
//! is [`Node::hash`] of that record, which applies the compact rules above.
//!
//! A possible later optimisation is to pack several levels (e.g. 4, a 16-way
//! node as in Aptos' Jellyfish tree) into one record to cut LMDB page reads per
//! path by ~4×; the hashes, proofs and roots would not change.
//!
//! Measured (`int bench tps --accounts 1000000`, blocks of 10 000 random
//! transfers, 2 cores): a block touches ~20k accounts and ~150k of the 1.44M
//! nodes, which sit on nearly all of the table's ~46k LMDB pages, so LMDB's
//! copy-on-write rewrites almost the whole table each block (~560 MiB
//! written) and the commit takes ~70% of the time (~20k tx/s). Versioned,
//! append-only nodes (Jellyfish-style, with a stale index and pruning after
//! 64 versions) were tried on a branch: 28k tx/s over 10 blocks, but over
//! 150 blocks 13.7k tx/s when pruning every block and 20.3k when pruning
//! every 16 (scattered deletes rewrite pages too), with a 3× larger file and
//! a 50% slower update (a path's nodes on different pages). Not worth it
//! alone; the lever is fewer, wider records (16-way nodes), versioned or not.
//!
//! # Updating
//!
//! [`update`] only *reads* the last committed state through a [`NodeReader`]
//! and returns the new root plus a [`NodeBatch`] of puts and deletes; the block
//! commit applies that batch inside the block's single LMDB write transaction.
//! Because it only reads, the top levels of the update are split and run in
//! parallel with `rayon::join`; the result (root, and the batch, which is
//! returned sorted by key) is identical to a sequential run. Every record read
//! is checked against the hash its parent (or the caller, for the root) claims
//! for it, so a stale root or corrupted storage is reported, never silently
//! built upon.

use std::collections::BTreeMap;

use rayon::slice::ParallelSliceMut;
use thiserror::Error;

// The hashes, and the proof's terminal, are the storage-free verifier's
// (`super::proof`), so a proof built here is checked by the same code a
// client runs; re-exported under their old paths.
pub use super::proof::{EMPTY, Hash32, Terminal, leaf_hash};
use super::proof::{KEY_BITS, bit, internal_hash, truncate, verify_path};

/// Updates are split in parallel while a subtree has at least this many.
const PAR_MIN: usize = 2048;

/// Errors of the sparse Merkle tree.
#[derive(Debug, Error)]
pub enum SmtError {
    /// The root passed in does not match the stored root record (the caller
    /// probably passed a stale root).
    #[error(
        "root mismatch: caller says {expected:02x?}, stored root record hashes to {found:02x?}"
    )]
    RootMismatch {
        /// The root the caller passed.
        expected: Hash32,
        /// The hash of the stored root record.
        found: Hash32,
    },
    /// A node the tree refers to is not in storage.
    #[error("missing node at depth {} prefix {:02x?}", .0.depth, .0.prefix)]
    MissingNode(NodeKey),
    /// A stored node is inconsistent with its parent or with the tree shape.
    #[error("corrupt node at depth {} prefix {:02x?}: {reason}", .at.depth, .at.prefix)]
    Corrupt {
        /// Where.
        at: NodeKey,
        /// What is wrong.
        reason: &'static str,
    },
    /// The same key appears twice in one batch of updates.
    #[error("duplicate key in updates: {0:02x?}")]
    DuplicateKey(Hash32),
    /// Bytes that should encode a node, a node key or a proof do not.
    #[error("malformed encoding: {0}")]
    Malformed(&'static str),
    /// The storage backend failed (its error, as text, so that this type
    /// does not depend on the backend).
    #[error("node store: {0}")]
    Store(String),
}

/// The position of an internal node: its depth and the key prefix of that many
/// bits (remaining bits zero). The root is `(0, [0; 32])`.
///
/// The derived order (depth, then prefix bytes) equals the byte order of
/// [`NodeKey::to_bytes`], so a batch sorted by `NodeKey` is sorted for LMDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeKey {
    /// Number of key bits fixed by this position (0 = root, at most 255).
    pub depth: u8,
    /// The first `depth` bits of every key below this position; the rest zero.
    pub prefix: Hash32,
}

impl NodeKey {
    /// The root position.
    pub const ROOT: NodeKey = NodeKey {
        depth: 0,
        prefix: EMPTY,
    };

    /// Position of depth `depth` on the path of `key`.
    ///
    /// # Panics
    /// If `depth > 255` (internal nodes never sit deeper).
    pub fn of_key(key: &Hash32, depth: usize) -> NodeKey {
        assert!(depth < KEY_BITS, "internal node depth {depth} out of range");
        NodeKey {
            depth: depth as u8,
            prefix: truncate(key, depth),
        }
    }

    /// Storage key: depth byte followed by the prefix.
    pub fn to_bytes(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        out[0] = self.depth;
        out[1..].copy_from_slice(&self.prefix);
        out
    }

    /// Inverse of [`NodeKey::to_bytes`]; rejects a prefix with bits set past
    /// `depth`.
    pub fn from_bytes(bytes: &[u8]) -> Result<NodeKey, SmtError> {
        if bytes.len() != 33 {
            return Err(SmtError::Malformed("node key length"));
        }
        let depth = bytes[0];
        let mut prefix = EMPTY;
        prefix.copy_from_slice(&bytes[1..]);
        if truncate(&prefix, depth as usize) != prefix {
            return Err(SmtError::Malformed("node key prefix has bits past depth"));
        }
        Ok(NodeKey { depth, prefix })
    }
}

/// Summary of one child subtree, as stored in its parent's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Child {
    /// No leaves below.
    Empty,
    /// Exactly one leaf below (stored inline, so no separate leaf record).
    Leaf {
        /// The account id.
        key: Hash32,
        /// Hash of the account's value.
        value_hash: Hash32,
    },
    /// Two or more leaves below; the record lives at the child's position.
    Internal {
        /// Hash of that subtree.
        hash: Hash32,
    },
}

impl Child {
    /// Hash of the subtree this summarises.
    pub fn hash(&self) -> Hash32 {
        match self {
            Child::Empty => EMPTY,
            Child::Leaf { key, value_hash } => leaf_hash(key, value_hash),
            Child::Internal { hash } => *hash,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Child::Empty => 0,
            Child::Leaf { .. } => 1,
            Child::Internal { .. } => 2,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Child::Empty => {}
            Child::Leaf { key, value_hash } => {
                out.extend_from_slice(key);
                out.extend_from_slice(value_hash);
            }
            Child::Internal { hash } => out.extend_from_slice(hash),
        }
    }

    /// Decodes a child with tag `tag` from the front of `bytes`, returning it
    /// and the rest.
    fn decode(tag: u8, bytes: &[u8]) -> Result<(Child, &[u8]), SmtError> {
        match tag {
            0 => Ok((Child::Empty, bytes)),
            1 => {
                let (key, rest) = take32(bytes)?;
                let (value_hash, rest) = take32(rest)?;
                Ok((Child::Leaf { key, value_hash }, rest))
            }
            2 => {
                let (hash, rest) = take32(bytes)?;
                Ok((Child::Internal { hash }, rest))
            }
            _ => Err(SmtError::Malformed("child tag")),
        }
    }
}

/// A stored record: the summaries of the two children of an internal position
/// (or of the root position, which is stored even with 0 or 1 leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// Subtree whose next key bit is 0.
    pub left: Child,
    /// Subtree whose next key bit is 1.
    pub right: Child,
}

impl Node {
    /// Record of the empty tree's root.
    pub const EMPTY_ROOT: Node = Node {
        left: Child::Empty,
        right: Child::Empty,
    };

    /// Hash of the subtree at this record's position, by the compact rules: a
    /// record with no leaves hashes to [`EMPTY`], one with a single leaf child
    /// and an empty sibling to that leaf's hash (only the root record can look
    /// like that), anything else to blake3(0x01 ‖ left ‖ right).
    pub fn hash(&self) -> Hash32 {
        match (&self.left, &self.right) {
            (Child::Empty, Child::Empty) => EMPTY,
            (leaf @ Child::Leaf { .. }, Child::Empty)
            | (Child::Empty, leaf @ Child::Leaf { .. }) => leaf.hash(),
            (l, r) => internal_hash(&l.hash(), &r.hash()),
        }
    }

    /// Whether this record has ≥ 2 leaves below it, as every stored record
    /// other than the root's must.
    fn has_two_leaves(&self) -> bool {
        !matches!(
            (&self.left, &self.right),
            (Child::Empty | Child::Leaf { .. }, Child::Empty) | (Child::Empty, Child::Leaf { .. })
        )
    }

    /// Encoding: one header byte `left_tag | right_tag << 4` (tags 0 = empty,
    /// 1 = leaf, 2 = internal), then the left payload, then the right payload
    /// (0, 64 or 32 bytes each). 65 bytes for the common internal/internal
    /// record, 129 at most.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(129);
        out.push(self.left.tag() | (self.right.tag() << 4));
        self.left.encode_into(&mut out);
        self.right.encode_into(&mut out);
        out
    }

    /// Inverse of [`Node::encode`]; any other input is an error.
    pub fn decode(bytes: &[u8]) -> Result<Node, SmtError> {
        let (&header, rest) = bytes
            .split_first()
            .ok_or(SmtError::Malformed("empty node"))?;
        let (left, rest) = Child::decode(header & 0x0f, rest)?;
        let (right, rest) = Child::decode(header >> 4, rest)?;
        if !rest.is_empty() {
            return Err(SmtError::Malformed("trailing bytes after node"));
        }
        Ok(Node { left, right })
    }
}

/// Read access to the last committed tree. An LMDB implementation is a `get`
/// in a read transaction of `chain_id ‖ NodeKey::to_bytes()` followed by
/// [`Node::decode`]. `Sync` because [`update`] reads from several threads.
pub trait NodeReader: Sync {
    /// The record at `key`, or `None` if there is none.
    fn get(&self, key: &NodeKey) -> Result<Option<Node>, SmtError>;
}

/// What an update writes: records to put and records to delete. No key is in
/// both lists, so the order of application does not matter. [`update`] returns
/// both lists sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeBatch {
    /// Records to write (new or changed).
    pub puts: Vec<(NodeKey, Node)>,
    /// Records that no longer exist (their subtree dropped to ≤ 1 leaf).
    pub deletes: Vec<NodeKey>,
}

impl NodeBatch {
    /// Number of records written or deleted.
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }

    fn append(&mut self, mut other: NodeBatch) {
        self.puts.append(&mut other.puts);
        self.deletes.append(&mut other.deletes);
    }

    fn sort(&mut self) {
        self.puts.par_sort_unstable_by_key(|p| p.0);
        self.deletes.par_sort_unstable();
    }
}

/// In-memory node store, for tests and benches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore(pub BTreeMap<NodeKey, Node>);

impl MemStore {
    /// An empty store (the empty tree).
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Applies a batch returned by [`update`].
    pub fn apply(&mut self, batch: &NodeBatch) {
        for k in &batch.deletes {
            self.0.remove(k);
        }
        for (k, n) in &batch.puts {
            self.0.insert(*k, *n);
        }
    }

    /// Number of stored records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl NodeReader for MemStore {
    fn get(&self, key: &NodeKey) -> Result<Option<Node>, SmtError> {
        Ok(self.0.get(key).copied())
    }
}

/// `key` with bit `i` set.
fn with_bit(key: &Hash32, i: usize) -> Hash32 {
    let mut k = *key;
    k[i / 8] |= 1 << (7 - i % 8);
    k
}

fn take32(bytes: &[u8]) -> Result<(Hash32, &[u8]), SmtError> {
    if bytes.len() < 32 {
        return Err(SmtError::Malformed("truncated"));
    }
    let (head, rest) = bytes.split_at(32);
    let mut h = EMPTY;
    h.copy_from_slice(head);
    Ok((h, rest))
}

/// Index of the first entry whose bit `depth` is 1 in a slice sorted by key
/// whose keys all share the first `depth` bits.
fn split_point<T>(items: &[(Hash32, T)], depth: usize) -> usize {
    items.partition_point(|(k, _)| !bit(k, depth))
}

/// Root of a tree holding exactly these (key, value_hash) leaves, computed
/// from scratch (sorts `leaves`). Used to audit the stored root.
///
/// # Panics
/// If a key appears twice (a set of leaves has distinct keys).
pub fn root_of(leaves: &mut [(Hash32, Hash32)]) -> Hash32 {
    leaves.par_sort_unstable_by_key(|l| l.0);
    assert!(
        leaves.windows(2).all(|w| w[0].0 != w[1].0),
        "root_of: duplicate key"
    );
    subtree_hash(leaves, 0)
}

fn subtree_hash(leaves: &[(Hash32, Hash32)], depth: usize) -> Hash32 {
    match leaves {
        [] => EMPTY,
        [(k, v)] => leaf_hash(k, v),
        _ => {
            assert!(
                depth < KEY_BITS,
                "distinct keys must split before depth 256"
            );
            let (l, r) = leaves.split_at(split_point(leaves, depth));
            let (lh, rh) = if leaves.len() >= PAR_MIN {
                rayon::join(|| subtree_hash(l, depth + 1), || subtree_hash(r, depth + 1))
            } else {
                (subtree_hash(l, depth + 1), subtree_hash(r, depth + 1))
            };
            internal_hash(&lh, &rh)
        }
    }
}

/// One update: key → `Some(value_hash)` to insert/overwrite, `None` to delete.
type Update = (Hash32, Option<Hash32>);

/// Applies `updates` to the tree whose root is `root`, reading the committed
/// records through `reader`. Returns the new root and the records to write and
/// delete (sorted by key); nothing is written here.
///
/// `updates` need not be sorted; a key appearing twice is an error. Deleting an
/// absent key, or writing the value a key already has, is a no-op. `root` must
/// match the stored root record (a fresh store is the empty tree, root
/// [`EMPTY`]), else [`SmtError::RootMismatch`].
///
/// Cost: reads and writes ≈ k × (log2(n) − log2(k) + c) records for k updates
/// into n leaves; large subtrees are processed in parallel with rayon, with a
/// result identical to a sequential run.
pub fn update<R: NodeReader>(
    reader: &R,
    root: &Hash32,
    updates: &[(Hash32, Option<Hash32>)],
) -> Result<(Hash32, NodeBatch), SmtError> {
    update_impl(reader, root, updates, PAR_MIN)
}

/// [`update`] with an explicit parallelism threshold: subtrees with at least
/// `par_min` updates are split with `rayon::join` (`usize::MAX` = sequential).
fn update_impl<R: NodeReader>(
    reader: &R,
    root: &Hash32,
    updates: &[(Hash32, Option<Hash32>)],
    par_min: usize,
) -> Result<(Hash32, NodeBatch), SmtError> {
    let (root_node, stored) = load_root(reader, root)?;
    if updates.is_empty() {
        return Ok((*root, NodeBatch::default()));
    }
    let mut ups: Vec<Update> = updates.to_vec();
    ups.par_sort_unstable_by_key(|u| u.0);
    if let Some(w) = ups.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SmtError::DuplicateKey(w[0].0));
    }
    let ctx = Ctx { reader, par_min };
    let mut batch = NodeBatch::default();
    let new_root = update_children(&ctx, 0, &EMPTY, &root_node, &ups, &mut batch)?;
    // The root record is always kept, even with 0 or 1 leaves.
    if new_root != root_node || !stored {
        batch.puts.push((NodeKey::ROOT, new_root));
    }
    batch.sort();
    Ok((new_root.hash(), batch))
}

/// Loads the root record and checks it against `root`. A store with no root
/// record holds the empty tree. Returns the record and whether it is stored.
fn load_root<R: NodeReader>(reader: &R, root: &Hash32) -> Result<(Node, bool), SmtError> {
    let (node, stored) = match reader.get(&NodeKey::ROOT)? {
        Some(n) => (n, true),
        None => (Node::EMPTY_ROOT, false),
    };
    let found = node.hash();
    if found != *root {
        return Err(SmtError::RootMismatch {
            expected: *root,
            found,
        });
    }
    Ok((node, stored))
}

/// Loads the record at the internal child position (`depth`, `prefix`) and
/// checks it against the hash its parent claims.
fn load_internal<R: NodeReader>(
    reader: &R,
    depth: usize,
    prefix: &Hash32,
    hash: &Hash32,
) -> Result<(NodeKey, Node), SmtError> {
    if depth >= KEY_BITS {
        return Err(SmtError::Corrupt {
            at: NodeKey {
                depth: u8::MAX,
                prefix: *prefix,
            },
            reason: "internal child below depth 255",
        });
    }
    let at = NodeKey {
        depth: depth as u8,
        prefix: *prefix,
    };
    let node = reader.get(&at)?.ok_or(SmtError::MissingNode(at))?;
    if node.hash() != *hash {
        return Err(SmtError::Corrupt {
            at,
            reason: "record does not match the hash in its parent",
        });
    }
    if !node.has_two_leaves() {
        return Err(SmtError::Corrupt {
            at,
            reason: "non-root record with fewer than two leaves",
        });
    }
    Ok((at, node))
}

struct Ctx<'a, R> {
    reader: &'a R,
    par_min: usize,
}

/// Applies the sorted `ups` (all below the record `node` at (`depth`,
/// `prefix`)) to both children; returns the new record.
fn update_children<R: NodeReader>(
    ctx: &Ctx<'_, R>,
    depth: usize,
    prefix: &Hash32,
    node: &Node,
    ups: &[Update],
    out: &mut NodeBatch,
) -> Result<Node, SmtError> {
    assert!(depth < KEY_BITS, "recursion past depth 255");
    let (lu, ru) = ups.split_at(split_point(ups, depth));
    let rprefix = with_bit(prefix, depth);
    let (left, right) = if ups.len() >= ctx.par_min && !lu.is_empty() && !ru.is_empty() {
        let mut rout = NodeBatch::default();
        let (l, r) = rayon::join(
            || update_child(ctx, depth + 1, prefix, node.left, lu, out),
            || update_child(ctx, depth + 1, &rprefix, node.right, ru, &mut rout),
        );
        out.append(rout);
        (l?, r?)
    } else {
        (
            update_child(ctx, depth + 1, prefix, node.left, lu, out)?,
            update_child(ctx, depth + 1, &rprefix, node.right, ru, out)?,
        )
    };
    Ok(Node { left, right })
}

/// Applies the sorted `ups` to the subtree at position (`depth`, `prefix`),
/// currently summarised by `current`; returns its new summary.
fn update_child<R: NodeReader>(
    ctx: &Ctx<'_, R>,
    depth: usize,
    prefix: &Hash32,
    current: Child,
    ups: &[Update],
    out: &mut NodeBatch,
) -> Result<Child, SmtError> {
    if ups.is_empty() {
        return Ok(current);
    }
    match current {
        Child::Internal { hash } => {
            let (at, old) = load_internal(ctx.reader, depth, prefix, &hash)?;
            let new = update_children(ctx, depth, prefix, &old, ups, out)?;
            Ok(match (new.left, new.right) {
                // Dropped to ≤ 1 leaf: the record goes, the summary collapses
                // upwards (and may collapse again in the parent).
                (Child::Empty, Child::Empty) => {
                    out.deletes.push(at);
                    Child::Empty
                }
                (leaf @ Child::Leaf { .. }, Child::Empty)
                | (Child::Empty, leaf @ Child::Leaf { .. }) => {
                    out.deletes.push(at);
                    leaf
                }
                _ => {
                    if new != old {
                        out.puts.push((at, new));
                    }
                    Child::Internal { hash: new.hash() }
                }
            })
        }
        Child::Empty | Child::Leaf { .. } => {
            // At most one leaf here and no stored records below: merge it with
            // the updates and build the subtree afresh.
            let mut leaves: Vec<(Hash32, Hash32)> =
                ups.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
            if let Child::Leaf { key, value_hash } = current
                && ups.binary_search_by(|(k, _)| k.cmp(&key)).is_err()
            {
                let pos = leaves.partition_point(|(k, _)| *k < key);
                leaves.insert(pos, (key, value_hash));
            }
            Ok(build(ctx, depth, prefix, &leaves, out))
        }
    }
}

/// Builds the subtree at (`depth`, `prefix`) holding exactly `leaves` (sorted,
/// distinct, all with that prefix), pushing its records; returns its summary.
fn build<R: NodeReader>(
    ctx: &Ctx<'_, R>,
    depth: usize,
    prefix: &Hash32,
    leaves: &[(Hash32, Hash32)],
    out: &mut NodeBatch,
) -> Child {
    match leaves {
        [] => Child::Empty,
        [(key, value_hash)] => Child::Leaf {
            key: *key,
            value_hash: *value_hash,
        },
        _ => {
            assert!(
                depth < KEY_BITS,
                "distinct keys must split before depth 256"
            );
            let (l, r) = leaves.split_at(split_point(leaves, depth));
            let rprefix = with_bit(prefix, depth);
            let (left, right) = if leaves.len() >= ctx.par_min {
                let mut rout = NodeBatch::default();
                let (left, right) = rayon::join(
                    || build(ctx, depth + 1, prefix, l, out),
                    || build(ctx, depth + 1, &rprefix, r, &mut rout),
                );
                out.append(rout);
                (left, right)
            } else {
                (
                    build(ctx, depth + 1, prefix, l, out),
                    build(ctx, depth + 1, &rprefix, r, out),
                )
            };
            let node = Node { left, right };
            let hash = node.hash();
            out.puts.push((
                NodeKey {
                    depth: depth as u8,
                    prefix: *prefix,
                },
                node,
            ));
            Child::Internal { hash }
        }
    }
}

/// Inclusion or exclusion proof for one key.
///
/// `siblings[i]` is the hash of the sibling subtree at depth `i + 1` on the
/// key's path (root side first); the terminal sits at depth `siblings.len()`.
/// Verification hashes the terminal up with the siblings, taking left/right
/// from the key's bits, and compares with the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes from the root down.
    pub siblings: Vec<Hash32>,
    /// What sits at the key's position.
    pub terminal: Terminal,
}

impl Proof {
    /// Checks the proof against `root`: with `Some(v)`, that `key` is in the
    /// tree with value hash `v`; with `None`, that `key` is absent. The
    /// storage-free check of [`super::proof::verify_path`] (which says why a
    /// proof fails); [`super::proof::verify_proof`] checks the encoded bytes
    /// without decoding them first.
    pub fn verify(&self, root: &Hash32, key: &Hash32, value_hash: Option<&Hash32>) -> bool {
        verify_path(root, key, value_hash, &self.siblings, &self.terminal).is_ok()
    }

    /// Encoding: sibling count (u16 LE), the siblings, a terminal tag (0 =
    /// empty, 1 = leaf) and, for a leaf, its key and value hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + 32 * self.siblings.len() + 65);
        out.extend_from_slice(&(self.siblings.len() as u16).to_le_bytes());
        for s in &self.siblings {
            out.extend_from_slice(s);
        }
        match &self.terminal {
            Terminal::Empty => out.push(0),
            Terminal::Leaf { key, value_hash } => {
                out.push(1);
                out.extend_from_slice(key);
                out.extend_from_slice(value_hash);
            }
        }
        out
    }

    /// Inverse of [`Proof::to_bytes`]; any other input (hostile or truncated)
    /// is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Proof, SmtError> {
        if bytes.len() < 2 {
            return Err(SmtError::Malformed("proof truncated"));
        }
        let n = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        if n > KEY_BITS {
            return Err(SmtError::Malformed("proof longer than 256 levels"));
        }
        let mut rest = &bytes[2..];
        let mut siblings = Vec::with_capacity(n);
        for _ in 0..n {
            let (h, r) = take32(rest)?;
            siblings.push(h);
            rest = r;
        }
        let (&tag, rest) = rest
            .split_first()
            .ok_or(SmtError::Malformed("proof truncated"))?;
        let (terminal, rest) = match tag {
            0 => (Terminal::Empty, rest),
            1 => {
                let (key, r) = take32(rest)?;
                let (value_hash, r) = take32(r)?;
                (Terminal::Leaf { key, value_hash }, r)
            }
            _ => return Err(SmtError::Malformed("proof terminal tag")),
        };
        if !rest.is_empty() {
            return Err(SmtError::Malformed("trailing bytes after proof"));
        }
        Ok(Proof { siblings, terminal })
    }
}

/// Proof that `key` is in the tree with root `root` (with its value hash, in
/// the terminal) or that it is absent. Reads one record per level.
pub fn prove<R: NodeReader>(reader: &R, root: &Hash32, key: &Hash32) -> Result<Proof, SmtError> {
    let (mut node, _) = load_root(reader, root)?;
    let mut siblings = Vec::new();
    // A root with 0 or 1 leaves hashes to EMPTY / the leaf hash: no siblings.
    if !node.has_two_leaves() {
        let terminal = match (node.left, node.right) {
            (Child::Leaf { key, value_hash }, _) | (_, Child::Leaf { key, value_hash }) => {
                Terminal::Leaf { key, value_hash }
            }
            _ => Terminal::Empty,
        };
        return Ok(Proof { siblings, terminal });
    }
    let mut depth = 0usize;
    loop {
        let (path, other) = if bit(key, depth) {
            (node.right, node.left)
        } else {
            (node.left, node.right)
        };
        siblings.push(other.hash());
        depth += 1;
        match path {
            Child::Empty => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Empty,
                });
            }
            Child::Leaf { key, value_hash } => {
                return Ok(Proof {
                    siblings,
                    terminal: Terminal::Leaf { key, value_hash },
                });
            }
            Child::Internal { hash } => {
                let prefix = truncate(key, depth);
                node = load_internal(reader, depth, &prefix, &hash)?.1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rand_key(rng: &mut ChaCha8Rng) -> Hash32 {
        let mut k = EMPTY;
        rng.fill_bytes(&mut k);
        k
    }

    /// Applies `updates` to `store` and returns the new root.
    fn apply(store: &mut MemStore, root: &Hash32, updates: &[Update]) -> Hash32 {
        let (new_root, batch) = update(store, root, updates).expect("update");
        store.apply(&batch);
        new_root
    }

    fn model_root(model: &BTreeMap<Hash32, Hash32>) -> Hash32 {
        let mut leaves: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        root_of(&mut leaves)
    }

    /// The store a from-scratch build of `model` produces.
    fn fresh_store(model: &BTreeMap<Hash32, Hash32>) -> MemStore {
        let mut store = MemStore::new();
        let ups: Vec<Update> = model.iter().map(|(k, v)| (*k, Some(*v))).collect();
        apply(&mut store, &EMPTY, &ups);
        // An empty batch writes nothing; a tree emptied by deletes keeps its
        // (empty) root record. Both are the empty tree.
        normalized(store)
    }

    fn normalized(mut store: MemStore) -> MemStore {
        store.0.entry(NodeKey::ROOT).or_insert(Node::EMPTY_ROOT);
        store
    }

    fn check_proofs(
        store: &MemStore,
        root: &Hash32,
        model: &BTreeMap<Hash32, Hash32>,
        absent: &[Hash32],
    ) {
        for (k, v) in model {
            let p = prove(store, root, k).expect("prove");
            assert!(p.verify(root, k, Some(v)), "inclusion");
            let mut wrong = *v;
            wrong[0] ^= 1;
            assert!(!p.verify(root, k, Some(&wrong)), "wrong value");
            assert!(!p.verify(root, k, None), "exclusion of present key");
            let q = Proof::from_bytes(&p.to_bytes()).expect("roundtrip");
            assert_eq!(p, q);
        }
        for k in absent {
            if model.contains_key(k) {
                continue;
            }
            let p = prove(store, root, k).expect("prove");
            assert!(p.verify(root, k, None), "exclusion");
            assert!(
                !p.verify(root, k, Some(&[7; 32])),
                "inclusion of absent key"
            );
        }
    }

    /// Keys drawn so that long shared prefixes and last-bit neighbours occur:
    /// uniformly random, or mostly zero with a few varying bits at both ends.
    fn key_strategy() -> impl Strategy<Value = Hash32> {
        prop_oneof![
            any::<[u8; 32]>(),
            (0u8..4, 0u8..4).prop_map(|(a, b)| {
                let mut k = EMPTY;
                k[0] = a << 6;
                k[31] = b;
                k
            }),
            (0u8..8).prop_map(|b| {
                let mut k = [0xaa; 32];
                k[16] = b;
                k
            }),
        ]
    }

    fn batch_strategy() -> impl Strategy<Value = Vec<Update>> {
        prop::collection::vec(
            (
                key_strategy(),
                prop::option::weighted(0.7, (0u8..3).prop_map(|b| [b; 32])),
            ),
            0..40,
        )
        .prop_map(|v| {
            // No duplicate keys within a batch: keep the last.
            let m: BTreeMap<Hash32, Option<Hash32>> = v.into_iter().collect();
            m.into_iter().collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The central property: after every batch the root equals `root_of`
        /// of the model, the stored records are exactly those of a fresh build
        /// (deletes collapse and leave nothing stale), and proofs work.
        #[test]
        fn batches_match_model(batches in prop::collection::vec(batch_strategy(), 1..8)) {
            let mut store = MemStore::new();
            let mut root = EMPTY;
            let mut model = BTreeMap::new();
            for ups in &batches {
                // Sequential and maximally parallel runs agree exactly.
                let seq = update_impl(&store, &root, ups, usize::MAX).expect("seq");
                let par = update_impl(&store, &root, ups, 1).expect("par");
                prop_assert_eq!(&seq, &par);
                let (new_root, batch) = seq;
                store.apply(&batch);
                root = new_root;
                for (k, v) in ups {
                    match v {
                        Some(v) => { model.insert(*k, *v); }
                        None => { model.remove(k); }
                    }
                }
                prop_assert_eq!(root, model_root(&model));
                prop_assert_eq!(normalized(store.clone()), fresh_store(&model));
                let absent: Vec<Hash32> = ups.iter().map(|u| u.0).collect();
                check_proofs(&store, &root, &model, &absent);
            }
        }

        /// Hostile proof bytes: every truncation and single-byte mutation is
        /// rejected by the decoder or by verification, never a panic.
        #[test]
        fn proof_bytes_mutated(keys in prop::collection::vec(any::<[u8; 32]>(), 2..50),
                               pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let mut store = MemStore::new();
            let ups: Vec<Update> = keys.iter().map(|k| (*k, Some(*k))).collect();
            let mut dedup = ups.clone();
            dedup.sort();
            dedup.dedup_by(|a, b| a.0 == b.0);
            let root = apply(&mut store, &EMPTY, &dedup);
            let key = keys[0];
            let absent = [0x55u8; 32];
            for (k, v) in [(key, Some(key)), (absent, None)] {
                let bytes = prove(&store, &root, &k).expect("prove").to_bytes();
                for len in 0..bytes.len() {
                    prop_assert!(Proof::from_bytes(&bytes[..len]).is_err());
                }
                let mut m = bytes.clone();
                let i = pos.index(m.len());
                m[i] ^= xor;
                if let Ok(p) = Proof::from_bytes(&m) {
                    prop_assert!(!p.verify(&root, &k, v.as_ref()));
                }
            }
        }

        /// The storage-free verifier on the bytes a node returns, over random
        /// states: every key's inclusion proof and random absent keys'
        /// exclusion proofs pass; a flipped sibling byte, another value hash,
        /// another key, or the opposite claim (absent for a present key,
        /// present for an absent one) is refused; and on any single-byte
        /// mutation it agrees with decoding and `Proof::verify`.
        #[test]
        fn byte_verifier_accepts_proofs_and_refuses_tampering(
            leaves in prop::collection::btree_map(any::<[u8; 32]>(), any::<[u8; 32]>(), 0..60),
            absent in prop::collection::vec(any::<[u8; 32]>(), 1..8),
            pos in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            use super::super::proof::{ProofError, verify_proof};
            let mut store = MemStore::new();
            let ups: Vec<Update> = leaves.iter().map(|(k, v)| (*k, Some(*v))).collect();
            let root = apply(&mut store, &EMPTY, &ups);
            prop_assert_eq!(root, model_root(&leaves));
            let present = leaves.iter().map(|(k, v)| (*k, Some(*v)));
            let absent = absent.iter().filter(|k| !leaves.contains_key(*k)).map(|k| (*k, None));
            for (key, value) in present.chain(absent) {
                let proof = prove(&store, &root, &key).expect("prove");
                let bytes = proof.to_bytes();
                prop_assert_eq!(verify_proof(&root, &key, value.as_ref(), &bytes), Ok(()));
                // The opposite claim.
                let other_claim = match value {
                    Some(_) => None,
                    None => Some([9u8; 32]),
                };
                prop_assert!(verify_proof(&root, &key, other_claim.as_ref(), &bytes).is_err());
                // Another value hash.
                if let Some(v) = value {
                    let mut v2 = v;
                    v2[pos.index(32)] ^= xor;
                    prop_assert!(verify_proof(&root, &key, Some(&v2), &bytes).is_err());
                }
                // Another key (bit `i` flipped), same claim: refused for an
                // inclusion, for a key that is present, and for one whose
                // path leaves the proof's (an exclusion proof also proves
                // absent the keys that share its path and are absent).
                let mut k2 = key;
                let i = pos.index(256);
                k2[i / 8] ^= 0x80 >> (i % 8);
                if value.is_some() || leaves.contains_key(&k2) || i < proof.siblings.len() {
                    prop_assert!(verify_proof(&root, &k2, value.as_ref(), &bytes).is_err());
                }
                // A flipped byte in a sibling.
                if !proof.siblings.is_empty() {
                    let mut m = bytes.clone();
                    m[2 + pos.index(32 * proof.siblings.len())] ^= xor;
                    prop_assert_eq!(
                        verify_proof(&root, &key, value.as_ref(), &m),
                        Err(ProofError::RootMismatch)
                    );
                }
                // Any byte: the same verdict as decoding then `Proof::verify`.
                let mut m = bytes.clone();
                m[pos.index(bytes.len())] ^= xor;
                let decoded = Proof::from_bytes(&m).is_ok_and(|p| p.verify(&root, &key, value.as_ref()));
                prop_assert_eq!(verify_proof(&root, &key, value.as_ref(), &m).is_ok(), decoded);
                prop_assert!(!decoded, "a mutated proof verified");
            }
        }

        /// Node and key decoders on arbitrary bytes: error or a value that
        /// re-encodes to the same bytes, never a panic.
        #[test]
        fn decode_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(n) = Node::decode(&bytes) {
                prop_assert_eq!(n.encode(), bytes.clone());
            }
            if let Ok(k) = NodeKey::from_bytes(&bytes) {
                prop_assert_eq!(k.to_bytes().to_vec(), bytes.clone());
            }
            if let Ok(p) = Proof::from_bytes(&bytes) {
                prop_assert_eq!(p.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn empty_tree() {
        let store = MemStore::new();
        assert_eq!(root_of(&mut []), EMPTY);
        let (root, batch) = update(&store, &EMPTY, &[([1; 32], None)]).expect("update");
        assert_eq!(root, EMPTY);
        let p = prove(&store, &EMPTY, &[1; 32]).expect("prove");
        assert!(p.siblings.is_empty());
        assert!(p.verify(&EMPTY, &[1; 32], None));
        let mut store = store;
        store.apply(&batch);
        assert!(
            prove(&store, &EMPTY, &[1; 32])
                .expect("prove")
                .verify(&EMPTY, &[1; 32], None)
        );
    }

    #[test]
    fn one_leaf_tree() {
        let (k, v) = ([3; 32], [4; 32]);
        let mut store = MemStore::new();
        let root = apply(&mut store, &EMPTY, &[(k, Some(v))]);
        assert_eq!(root, leaf_hash(&k, &v));
        assert_eq!(root, root_of(&mut [(k, v)]));
        assert_eq!(store.len(), 1, "only the root record");
        let p = prove(&store, &root, &k).expect("prove");
        assert!(p.siblings.is_empty());
        assert!(p.verify(&root, &k, Some(&v)));
        let other = [9; 32];
        assert!(
            prove(&store, &root, &other)
                .expect("prove")
                .verify(&root, &other, None)
        );
        // Back to empty.
        let root = apply(&mut store, &root, &[(k, None)]);
        assert_eq!(root, EMPTY);
        assert_eq!(store.0.get(&NodeKey::ROOT), Some(&Node::EMPTY_ROOT));
    }

    #[test]
    fn keys_differing_in_last_bit() {
        let a = [0xff; 32];
        let mut b = a;
        b[31] ^= 1;
        let mut store = MemStore::new();
        let root = apply(
            &mut store,
            &EMPTY,
            &[(a, Some([1; 32])), (b, Some([2; 32]))],
        );
        assert_eq!(root, root_of(&mut [(a, [1; 32]), (b, [2; 32])]));
        // Root record plus one record per depth 1..=255.
        assert_eq!(store.len(), 256);
        let p = prove(&store, &root, &b).expect("prove");
        assert_eq!(p.siblings.len(), 256);
        assert!(p.verify(&root, &b, Some(&[2; 32])));
        assert!(!p.verify(&root, &b, Some(&[1; 32])));
        // Deleting one collapses the whole chain to a single leaf.
        let root = apply(&mut store, &root, &[(a, None)]);
        assert_eq!(root, leaf_hash(&b, &[2; 32]));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let store = MemStore::new();
        let r = update(
            &store,
            &EMPTY,
            &[([1; 32], Some([1; 32])), ([2; 32], None), ([1; 32], None)],
        );
        assert!(matches!(r, Err(SmtError::DuplicateKey(k)) if k == [1; 32]));
    }

    #[test]
    fn stale_root_is_rejected() {
        let mut store = MemStore::new();
        let r1 = apply(&mut store, &EMPTY, &[([1; 32], Some([1; 32]))]);
        let _r2 = apply(&mut store, &r1, &[([2; 32], Some([1; 32]))]);
        assert!(matches!(
            update(&store, &r1, &[([3; 32], None)]),
            Err(SmtError::RootMismatch { .. })
        ));
        assert!(matches!(
            prove(&store, &r1, &[3; 32]),
            Err(SmtError::RootMismatch { .. })
        ));
    }

    #[test]
    fn corrupt_store_is_detected() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut store = MemStore::new();
        let ups: Vec<Update> = (0..100)
            .map(|_| (rand_key(&mut rng), Some([1; 32])))
            .collect();
        let root = apply(&mut store, &EMPTY, &ups);
        let victim = *store.0.keys().nth(50).expect("node");
        store.0.get_mut(&victim).expect("node").left = Child::Internal { hash: [9; 32] };
        let any_err = ups.iter().any(|(k, _)| prove(&store, &root, k).is_err());
        assert!(any_err);
        assert!(matches!(
            update(&store, &root, &ups),
            Err(SmtError::Corrupt { .. })
        ));
        store.0.remove(&victim);
        assert!(update(&store, &root, &ups).is_err());
    }

    #[test]
    fn parallel_equals_sequential_large() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut store = MemStore::new();
        let ups: Vec<Update> = (0..20_000)
            .map(|_| (rand_key(&mut rng), Some(rand_key(&mut rng))))
            .collect();
        let root = apply(&mut store, &EMPTY, &ups);
        let mut next: Vec<Update> = (0..5_000)
            .map(|_| (rand_key(&mut rng), Some([1; 32])))
            .collect();
        next.extend(ups[..3_000].iter().map(|(k, _)| (*k, None)));
        next.extend(ups[3_000..6_000].iter().map(|(k, _)| (*k, Some([2; 32]))));
        let seq = update_impl(&store, &root, &next, usize::MAX).expect("seq");
        let par = update_impl(&store, &root, &next, 64).expect("par");
        let def = update(&store, &root, &next).expect("default");
        assert_eq!(seq, par);
        assert_eq!(seq, def);
    }

    /// Writes per batch are ≈ touched × (log2(total) − log2(touched) + c),
    /// not proportional to the total.
    #[test]
    fn writes_are_incremental() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut store = MemStore::new();
        let mut root = EMPTY;
        let mut keys = Vec::new();
        let k = 10_000usize;
        for round in 1..=10 {
            let ups: Vec<Update> = (0..k)
                .map(|_| (rand_key(&mut rng), Some([round; 32])))
                .collect();
            keys.extend(ups.iter().map(|u| u.0));
            keys.sort_unstable();
            keys.dedup();
            let (new_root, batch) = update(&store, &root, &ups).expect("update");
            store.apply(&batch);
            root = new_root;
            let n = keys.len() as f64;
            let touched = ups.len() as f64;
            let bound = touched * ((n.log2() - touched.log2()).max(0.0) + 4.0);
            eprintln!(
                "round {round}: total {} touched {} records written {} (bound {:.0}, stored {})",
                keys.len(),
                ups.len(),
                batch.len(),
                bound,
                store.len()
            );
            if round > 1 {
                assert!((batch.len() as f64) < bound, "not incremental");
            }
        }
        // Small batches into the 100k tree (half overwrites, half inserts).
        for touched in [100usize, 1_000] {
            let mut ups: Vec<Update> = (0..touched / 2)
                .map(|_| (rand_key(&mut rng), Some([0; 32])))
                .collect();
            let step = keys.len() / (touched / 2);
            ups.extend(
                keys.iter()
                    .step_by(step)
                    .take(touched / 2)
                    .map(|k| (*k, Some([0; 32]))),
            );
            let (_, batch) = update(&store, &root, &ups).expect("update");
            let bound = touched as f64 * ((keys.len() as f64 / touched as f64).log2() + 4.0);
            eprintln!(
                "{touched} keys into {}: {} records written (bound {bound:.0})",
                keys.len(),
                batch.len()
            );
            assert!((batch.len() as f64) < bound, "not incremental");
        }
    }

    #[test]
    fn node_encoding_roundtrip() {
        let nodes = [
            Node::EMPTY_ROOT,
            Node {
                left: Child::Leaf {
                    key: [1; 32],
                    value_hash: [2; 32],
                },
                right: Child::Internal { hash: [3; 32] },
            },
            Node {
                left: Child::Internal { hash: [4; 32] },
                right: Child::Empty,
            },
        ];
        for n in nodes {
            assert_eq!(Node::decode(&n.encode()).expect("decode"), n);
        }
        assert!(Node::decode(&[0x33]).is_err());
        assert!(Node::decode(&[]).is_err());
        let nk = NodeKey::of_key(&[0xff; 32], 9);
        assert_eq!(nk.prefix[1], 0x80);
        assert_eq!(NodeKey::from_bytes(&nk.to_bytes()).expect("key"), nk);
        let mut bad = nk.to_bytes();
        bad[2] = 0x40;
        assert!(NodeKey::from_bytes(&bad).is_err());
    }
}
