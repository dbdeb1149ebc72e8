//! The twig log's Merkle commitment, in memory: the part of a QMDB-style
//! state store (LayerZero's QMDB, arXiv 2501.05262) that computes roots and
//! proofs, and the rules by which a block's writes become log entries
//! ([`plan_block`]). The hashes and the proof format are
//! [`super::twig_proof`]'s; this module keeps what a node needs to produce
//! them block after block, with no I/O: the log's entries are stored by the
//! caller, which passes their hashes in ([`TwigTree::stage`], [`TwigTree::apply`]), reads for
//! the planner through [`LogReader`], and passes entry bytes back when it
//! wants a proof ([`TwigTree::prove`]). The node's store commits with it
//! (`storage::twig`, behind `storage::Storage`).
//!
//! # Why this structure: the spike
//!
//! Issue 16 asked for the commitment whose commit cost per block is lowest
//! and flattest as accounts grow. `spikes/state` (its own workspace, run as
//! its doc says) drives one stream of blocks of 10 000 random transfers
//! between existing accounts (≈ 20 000 distinct 171-byte account records
//! updated per block) through three candidates, each in its own process,
//! one after another on one quiet machine (2 cores, ext4 on a virtual disk,
//! 24 GiB; the whole store fits the page cache at 10⁷): the engine's SMT
//! node by node in LMDB through `smt::update` + `Storage::commit_block`;
//! the `nomt` crate 1.0.5 (page trie on an io_uring hash table, values in
//! its B-ε tree; default caches, and with a 4 GiB value cache); and a
//! minimal twig log of ours (fixed 256-byte entries, hash index, compaction
//! scanning 2 serials per append from the first block). Every commit is
//! durable (fsync) before the next block. Medians of 20 blocks (10 for the
//! SMT); `read` is the block's load of the touched records, `commit` the
//! new root plus durable write; written bytes from `/proc/self/io`:
//!
//! | accounts | store | read ms | commit ms (root + write) | tx/s (read + commit) | MiB written / block | peak RSS MiB |
//! |---|---|---|---|---|---|---|
//! | 10⁶ | SMT in LMDB | 14.6 | 742 (149 + 601) | 13 215 | 695 | 1 569 |
//! | 10⁶ | nomt | 145 | 394 (189 + 194) | 18 552 | 87.6 | 1 345 |
//! | 10⁶ | nomt, 4 GiB cache | 49 | 419 (218 + 213) | 21 373 | 87.6 | 1 280 |
//! | 10⁶ | twig log | 18.5 | 51 (41 + 10) | 144 467 | 12.8 | 380 |
//! | 10⁷ | SMT in LMDB | 25.1 | 1 782 (245 + 1 533) | 5 532 | 3 133 | 6 442 |
//! | 10⁷ | nomt | 486 | 561 (102 + 458) | 9 547 | 183 | 4 039 |
//! | 10⁷ | nomt, 4 GiB cache | 88 | 744 (300 + 441) | 12 017 | 183 | 5 596 |
//! | 10⁷ | twig log | 19.4 | 58 (49 + 9) | 129 271 | 14.4 | 1 247 |
//!
//! The store built on it (`--backend store`: `storage::twig::TwigStore`,
//! planner, index, segment files, the commit protocol), same stream, run
//! after the table above (medians of 20 blocks, 10 at 10⁸; the log stays
//! under twice the live set in these runs, so no compaction ran):
//!
//! | accounts | read ms | commit ms (plan + stage, write + sync) | tx/s (read + commit) | MiB written / block | store memory | reopen after a kill |
//! |---|---|---|---|---|---|---|
//! | 10⁶ | 14.0 | 76.7 (64.8 + 11.6) | 110 282 | 4.7 | — | 1.5 s |
//! | 10⁷ | 14.3 | 78.6 (65.6 + 11.6) | 107 667 | 4.7 | 158 MiB | 12.5 s |
//! | 10⁸ | 236 | 135 (117 + 16) | 26 958 | 4.7 | 1 575 MiB | not run |
//!
//! At 10⁸ the 24.8 GB log no longer fits the page cache beside the
//! harness's 9 GB: each read and each planner lookup is a random disk
//! read, done one at a time. That, not hashing or writing, is what the
//! next step must fix (the planner re-reads what execution just read, and
//! reads are not issued in parallel), before the 1.5× target at 10⁸ holds.
//!
//! From 10⁶ to 10⁷ accounts a block's read + commit grows 2.4× with the
//! SMT, 1.9× with nomt and 1.12× with the twig log, which writes 13–14 MiB
//! per block sequentially where nomt writes ≈ 1 random 4 KiB page per
//! update and LMDB rewrites most of the tree. The twig log is chosen. Its
//! costs are hashing (a block's new entries, the twigs that fill, the bits
//! of the twigs it touches) and one `pread` per record read; its memory is
//! the index (the spike's hash map ≈ 27 B per account; peak RSS above also
//! holds the harness's 305 MiB of ids and the load's buffers).
//!
//! What it costs in return: **the root depends on the log's history**, not
//! on the state alone — the same accounts written in another order, or
//! compacted at other times, give another root. It is deterministic across
//! nodes because every node appends the same entries in the same order:
//! [`plan_block`] is a pure function of the block's sorted writes and the
//! committed log. A node that joins by state sync must copy the log's live
//! part, not just the key–value set.
//!
//! # What the tree holds
//!
//! For a log of `tail` serials whose oldest live twig is `base`: the active
//! bits of every twig from `base` (256 bytes per 2 048 serials), the entries
//! root of every full twig from `base` (32 bytes per 2 048), the entry
//! hashes of the youngest twig (≤ 64 KiB), and the upper tree's nodes over
//! twigs from `base`: about 0.16 bytes per serial. Twigs below the
//! compaction head hold no active entry; [`TwigTree::prune`] drops them
//! (only the upper-tree nodes later paths read stay), so the memory follows
//! the live log, not the history.
//!
//! A block costs: one entry hash per appended entry, 2 047 node hashes per
//! twig that fills, two hashes per twig whose bits changed (an update in an
//! old twig does not touch its entries root), and the upper tree's paths
//! above the changed twigs.

use std::collections::VecDeque;

use super::proof::{Hash32, ProofError};
use super::twig_proof::{
    BITS_BYTES, ENTRY_HEADER_BYTES, ENTRY_VERSION, EntryRef, TWIG_ENTRIES, TWIG_LEVELS,
    VALUE_BYTES_MAX, ZERO, bits_hash, entry_hash, node_hash, state_root, twig_root, twigs_of,
    upper_depth, verify_twig_proof,
};

/// 64-bit words of a twig's active bits.
const TWIG_WORDS: usize = (TWIG_ENTRIES / 64) as usize;

/// One twig's active bits: bit `i % 64` of word `i / 64` for its entry `i`.
pub type TwigBits = [u64; TWIG_WORDS];

/// Appends the encoding of an entry to `out` (see
/// [`super::twig_proof`]'s module doc).
///
/// # Panics
/// If `value` is longer than [`VALUE_BYTES_MAX`] (callers bound values).
pub fn encode_entry(serial: u64, key: &Hash32, next_key: &Hash32, value: &[u8], out: &mut Vec<u8>) {
    assert!(value.len() <= VALUE_BYTES_MAX, "entry value too long");
    out.reserve(ENTRY_HEADER_BYTES + value.len());
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&serial.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(next_key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// The Merkle root of `leaves` at the bottom of a tree `levels` high, the
/// positions past them padding: a subtree of padding only hashes to
/// [`ZERO`], any other to [`node_hash`] of its children.
fn padded_root(leaves: &[Hash32], levels: usize) -> Hash32 {
    assert!(leaves.len() as u128 <= 1u128 << levels);
    if leaves.is_empty() {
        return ZERO;
    }
    let mut level = leaves.to_vec();
    for _ in 0..levels {
        level = level
            .chunks(2)
            .map(|p| node_hash(&p[0], p.get(1).unwrap_or(&ZERO)))
            .collect();
    }
    level[0]
}

/// The siblings of leaf `at` in the padded tree over `leaves`, leaf side
/// first.
fn padded_path(leaves: &[Hash32], levels: usize, mut at: usize) -> Vec<Hash32> {
    assert!(at < leaves.len());
    let mut out = Vec::with_capacity(levels);
    let mut level = leaves.to_vec();
    for _ in 0..levels {
        out.push(*level.get(at ^ 1).unwrap_or(&ZERO));
        level = level
            .chunks(2)
            .map(|p| node_hash(&p[0], p.get(1).unwrap_or(&ZERO)))
            .collect();
        at /= 2;
    }
    out
}

/// One level of the upper tree: the nodes from `offset` on; nodes past
/// the vector are padding ([`ZERO`]), nodes before `offset` are no longer
/// needed.
#[derive(Clone, Debug, Default)]
struct Level {
    offset: u64,
    hashes: Vec<Hash32>,
}

impl Level {
    fn get(&self, i: u64) -> Hash32 {
        assert!(i >= self.offset, "upper-tree node {i} was pruned");
        self.hashes
            .get((i - self.offset) as usize)
            .copied()
            .unwrap_or(ZERO)
    }

    fn set(&mut self, i: u64, h: Hash32) {
        assert!(i >= self.offset, "upper-tree node {i} was pruned");
        let at = (i - self.offset) as usize;
        if at >= self.hashes.len() {
            self.hashes.resize(at + 1, ZERO);
        }
        self.hashes[at] = h;
    }

    /// Drops the nodes before `offset`.
    fn prune(&mut self, offset: u64) {
        if offset > self.offset {
            let drop = ((offset - self.offset) as usize).min(self.hashes.len());
            self.hashes.drain(..drop);
            self.offset = offset;
        }
    }
}

/// The twig commitment of a log (see the module doc).
#[derive(Clone, Debug)]
pub struct TwigTree {
    /// Serials written so far.
    tail: u64,
    /// The first twig held; every twig below it has no active entry.
    base: u64,
    /// Active bits of the twigs from `base` to the youngest.
    bits: VecDeque<[u64; TWIG_WORDS]>,
    /// Entries roots of the full twigs from `base`.
    entry_roots: VecDeque<Hash32>,
    /// Entry hashes of the youngest twig while it is partial.
    young: Vec<Hash32>,
    /// The upper tree, twig roots first; `upper.len() == depth + 1`.
    upper: Vec<Level>,
    /// Active entries.
    active: u64,
    /// The state root.
    root: Hash32,
}

impl Default for TwigTree {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a block's changes cannot be staged: the caller's index and the
/// tree disagree (a corrupt store, or a plan made on another state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwigError {
    /// A serial to deactivate is not active (or not held).
    #[error("serial {0} is not active")]
    NotActive(u64),
}

/// One block's changes to a [`TwigTree`], computed without changing it
/// ([`TwigTree::stage`]): the new root, and what [`TwigTree::apply`]
/// writes into the tree when the block commits. A block that is executed
/// and discarded just drops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// The tail the changes were staged on.
    from_tail: u64,
    tail: u64,
    active: u64,
    /// New active bits of every changed twig, ascending.
    bits: Vec<(u64, [u64; TWIG_WORDS])>,
    /// Entries roots of the twigs that filled, in order.
    entry_roots: Vec<Hash32>,
    /// The youngest twig's entry hashes after the block.
    young: Vec<Hash32>,
    /// Changed upper-tree nodes per level, ascending.
    upper: Vec<Vec<(u64, Hash32)>>,
    /// The state root after the block.
    root: Hash32,
}

impl Staged {
    /// The state root after the block.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// The first serial the block's appended entries take.
    pub fn first_serial(&self) -> u64 {
        self.from_tail
    }
}

impl TwigTree {
    /// The commitment of an empty log.
    pub fn new() -> Self {
        let empty_twig = twig_root(&ZERO, &bits_hash(&[0; BITS_BYTES]));
        Self {
            tail: 0,
            base: 0,
            bits: VecDeque::from([[0; TWIG_WORDS]]),
            entry_roots: VecDeque::new(),
            young: Vec::new(),
            upper: vec![Level {
                offset: 0,
                hashes: vec![empty_twig],
            }],
            active: 0,
            root: state_root(&empty_twig, 0),
        }
    }

    /// The state root.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// Serials written so far (the next serial).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// What [`TwigTree::restore_twigs`] takes back (with the base and the
    /// meta's frontier): the full twigs' entries roots, the youngest
    /// twig's entry hashes, every held twig's active bits.
    pub fn parts(&self) -> (&VecDeque<Hash32>, &[Hash32], &VecDeque<TwigBits>) {
        (&self.entry_roots, &self.young, &self.bits)
    }

    /// Entries that are their key's current one.
    pub fn active_count(&self) -> u64 {
        self.active
    }

    /// The first serial still held (twigs below were pruned).
    pub fn base_serial(&self) -> u64 {
        self.base * TWIG_ENTRIES
    }

    /// Bytes held in memory, for the operator's memory figure.
    pub fn memory_bytes(&self) -> usize {
        self.bits.len() * BITS_BYTES
            + self.entry_roots.len() * 32
            + self.young.capacity() * 32
            + self
                .upper
                .iter()
                .map(|l| l.hashes.capacity() * 32)
                .sum::<usize>()
    }

    fn bits_of(&self, twig: u64) -> Option<&[u64; TWIG_WORDS]> {
        twig.checked_sub(self.base)
            .and_then(|i| self.bits.get(i as usize))
    }

    /// Whether `serial` is active.
    pub fn is_active(&self, serial: u64) -> bool {
        let at = serial % TWIG_ENTRIES;
        self.bits_of(serial / TWIG_ENTRIES)
            .is_some_and(|w| w[(at / 64) as usize] >> (at % 64) & 1 == 1)
    }

    fn upper_get(&self, level: usize, i: u64) -> Hash32 {
        self.upper.get(level).map_or(ZERO, |l| l.get(i))
    }

    /// Stages one block: clears the active bits of `deactivate` (serials
    /// whose keys got newer entries or were deleted), then appends entries
    /// by their hashes ([`entry_hash`] of encodings whose serials are
    /// `tail`, `tail + 1`, …), and computes the new root: the roots of the
    /// changed twigs and their paths in the upper tree. The tree is not
    /// changed; [`TwigTree::apply`] makes it so.
    pub fn stage(&self, deactivate: &[u64], hashes: &[Hash32]) -> Result<Staged, TwigError> {
        use rayon::prelude::*;
        // The changed twigs' bits, in twig order: the deactivated serials
        // sorted (each active, so below the tail), then the appended ones
        // from the tail up. A vector, not a tree: a block of 10⁴ transfers
        // touches thousands of twigs.
        let mut bits: Vec<(u64, [u64; TWIG_WORDS])> = Vec::new();
        let mut gone = deactivate.to_vec();
        gone.sort_unstable();
        for s in gone {
            let (t, at) = (s / TWIG_ENTRIES, s % TWIG_ENTRIES);
            if bits.last().map(|b| b.0) != Some(t) {
                bits.push((t, *self.bits_of(t).ok_or(TwigError::NotActive(s))?));
            }
            let words = &mut bits.last_mut().expect("pushed above").1;
            let (w, b) = ((at / 64) as usize, at % 64);
            if words[w] >> b & 1 != 1 {
                return Err(TwigError::NotActive(s));
            }
            words[w] &= !(1 << b);
        }
        let mut young = self.young.clone();
        let mut entry_roots = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            let serial = self.tail + i as u64;
            let (t, at) = (serial / TWIG_ENTRIES, serial % TWIG_ENTRIES);
            debug_assert!(bits.last().is_none_or(|b| b.0 <= t));
            if bits.last().map(|b| b.0) != Some(t) {
                bits.push((t, self.bits_of(t).copied().unwrap_or([0; TWIG_WORDS])));
            }
            let words = &mut bits.last_mut().expect("pushed above").1;
            words[(at / 64) as usize] |= 1 << (at % 64);
            young.push(*h);
            if young.len() as u64 == TWIG_ENTRIES {
                entry_roots.push(young.clone());
                young.clear();
            }
        }
        let entry_roots: Vec<Hash32> = entry_roots
            .par_iter()
            .map(|leaves| padded_root(leaves, TWIG_LEVELS))
            .collect();
        let tail = self.tail + hashes.len() as u64;
        let full_before = self.base + self.entry_roots.len() as u64;
        let young_root = padded_root(&young, TWIG_LEVELS);
        let level0: Vec<(u64, Hash32)> = bits
            .par_iter()
            .map(|(t, words)| {
                let er = if *t < full_before {
                    self.entry_roots[(t - self.base) as usize]
                } else {
                    entry_roots
                        .get((t - full_before) as usize)
                        .copied()
                        .unwrap_or(young_root)
                };
                (*t, twig_root(&er, &bits_hash(&Self::bits_bytes(words))))
            })
            .collect();
        let depth = upper_depth(tail);
        let mut upper: Vec<Vec<(u64, Hash32)>> = vec![level0];
        for level in 1..=depth {
            let below = &upper[level - 1];
            let get = |i: u64| match below.binary_search_by_key(&i, |n| n.0) {
                Ok(at) => below[at].1,
                Err(_) => self.upper_get(level - 1, i),
            };
            let mut parents: Vec<u64> = below.iter().map(|n| n.0 / 2).collect();
            parents.dedup();
            let nodes = parents
                .into_iter()
                .map(|i| (i, node_hash(&get(2 * i), &get(2 * i + 1))))
                .collect();
            upper.push(nodes);
        }
        let top = upper[depth]
            .first()
            .map_or_else(|| self.upper_get(depth, 0), |n| n.1);
        let active = self.active + hashes.len() as u64 - deactivate.len() as u64;
        Ok(Staged {
            from_tail: self.tail,
            tail,
            active,
            bits,
            entry_roots,
            young,
            upper,
            root: state_root(&top, tail),
        })
    }

    /// Applies staged changes: the tree becomes the block's.
    ///
    /// # Panics
    /// If `staged` was staged on another state of the tree.
    pub fn apply(&mut self, staged: Staged) {
        assert_eq!(
            staged.from_tail, self.tail,
            "changes staged on another tree"
        );
        for (t, words) in staged.bits {
            let i = (t - self.base) as usize;
            match self.bits.get_mut(i) {
                Some(w) => *w = words,
                None => {
                    assert_eq!(i, self.bits.len(), "twigs are added in order");
                    self.bits.push_back(words);
                }
            }
        }
        self.entry_roots.extend(staged.entry_roots);
        self.young = staged.young;
        while self.upper.len() < staged.upper.len() {
            let offset = (self.base >> self.upper.len()) & !1;
            self.upper.push(Level {
                offset,
                hashes: Vec::new(),
            });
        }
        for (level, nodes) in staged.upper.into_iter().enumerate() {
            for (i, h) in nodes {
                self.upper[level].set(i, h);
            }
        }
        self.tail = staged.tail;
        self.active = staged.active;
        self.root = staged.root;
    }

    fn bits_bytes(words: &[u64; TWIG_WORDS]) -> [u8; BITS_BYTES] {
        let mut out = [0u8; BITS_BYTES];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The upper-tree nodes left of the held twigs that later paths still
    /// read (at most one per level), as (level, index, hash): with the
    /// held twigs' entries, all [`TwigTree::restore_twigs`] needs.
    pub fn frontier(&self) -> Vec<(usize, u64, Hash32)> {
        self.upper
            .iter()
            .enumerate()
            .flat_map(|(level, l)| {
                let first_live = self.base >> level;
                (l.offset..first_live).map(move |i| (level, i, l.get(i)))
            })
            .collect()
    }

    /// The entries root of a full twig: what [`TwigTree::restore_twigs`]
    /// takes for each, from its 2048 entry hashes.
    pub fn entries_root(hashes: &[Hash32]) -> Hash32 {
        assert_eq!(hashes.len() as u64, TWIG_ENTRIES, "a full twig");
        padded_root(hashes, TWIG_LEVELS)
    }

    /// Rebuilds a tree from what a store keeps, as a scan of its held log
    /// collects it (≈ 0.14 bytes per entry), and the [`TwigTree::frontier`]
    /// saved with it: the first held twig `base`, the entries root of each
    /// full held twig ([`TwigTree::entries_root`]), the entry hashes of
    /// the youngest (partial) one, and every held twig's active bits
    /// (bit `i % 64` of word `i / 64` for its entry `i`).
    ///
    /// # Panics
    /// If the twigs' bits are not one per full twig, plus one for a
    /// partial youngest twig.
    pub fn restore_twigs(
        base: u64,
        entry_roots: Vec<Hash32>,
        young: Vec<Hash32>,
        bits: Vec<TwigBits>,
        frontier: &[(usize, u64, Hash32)],
    ) -> TwigTree {
        use rayon::prelude::*;
        assert!((young.len() as u64) < TWIG_ENTRIES);
        assert_eq!(
            bits.len(),
            entry_roots.len() + usize::from(!young.is_empty()),
            "active bits for every held twig"
        );
        let tail = (base + entry_roots.len() as u64) * TWIG_ENTRIES + young.len() as u64;
        let entry_roots = VecDeque::from(entry_roots);
        let mut bits = VecDeque::from(bits);
        if bits.is_empty() && base == 0 {
            // The empty log's one empty twig, as `new` has it.
            bits.push_back([0; TWIG_WORDS]);
        }
        let depth = upper_depth(tail);
        let young_root = padded_root(&young, TWIG_LEVELS);
        let level0: Vec<Hash32> = bits
            .par_iter()
            .enumerate()
            .map(|(i, w)| {
                let er = entry_roots.get(i).copied().unwrap_or(young_root);
                twig_root(&er, &bits_hash(&Self::bits_bytes(w)))
            })
            .collect();
        let mut upper: Vec<Level> = Vec::with_capacity(depth + 1);
        let mut held = level0;
        for level in 0..=depth {
            let offset = (base >> level) & !1;
            let first_live = base >> level;
            let mut l = Level {
                offset,
                hashes: Vec::new(),
            };
            for (i, h) in held.iter().enumerate() {
                l.set(first_live + i as u64, *h);
            }
            for &(fl, i, h) in frontier {
                if fl == level {
                    l.set(i, h);
                }
            }
            if level < depth {
                let parent_first = base >> (level + 1);
                let parent_end = (first_live + held.len() as u64).div_ceil(2);
                held = (parent_first..parent_end)
                    .map(|i| node_hash(&l.get(2 * i), &l.get(2 * i + 1)))
                    .collect();
            }
            upper.push(l);
        }
        let active_count = bits
            .iter()
            .flat_map(|w| w.iter())
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let root = state_root(&upper[depth].get(0), tail);
        TwigTree {
            tail,
            base,
            bits,
            entry_roots,
            young,
            upper,
            active: active_count,
            root,
        }
    }

    /// Drops the twigs wholly below `head` (every entry there inactive:
    /// the compaction moved the live ones to the tail), keeping the
    /// upper-tree nodes that later paths still read. Only full twigs are
    /// dropped.
    ///
    /// # Panics
    /// If a twig to drop still has an active entry.
    pub fn prune(&mut self, head: u64) {
        let full = self.base + self.entry_roots.len() as u64;
        let new_base = (head / TWIG_ENTRIES).min(full);
        while self.base < new_base {
            let bits = self.bits.pop_front().expect("a held twig");
            assert!(
                bits.iter().all(|w| *w == 0),
                "pruning twig {} with active entries",
                self.base
            );
            self.entry_roots.pop_front();
            self.base += 1;
        }
        for (level, l) in self.upper.iter_mut().enumerate() {
            // A path from a twig ≥ base reads, at this level, nodes from
            // (base >> level) rounded down to even.
            l.prune((self.base >> level) & !1);
        }
    }

    /// The proof of the entry at `serial` (see [`super::twig_proof`]):
    /// `entry` is its encoding, `twig_hashes` the entry hashes of its whole
    /// twig up to the tail (the caller re-reads a full twig's entries from
    /// its log; the youngest twig's are here and may be passed empty).
    /// Checks what it builds with the verifier before returning it.
    pub fn prove(&self, entry: &[u8], twig_hashes: &[Hash32]) -> Result<Vec<u8>, ProofError> {
        let e = EntryRef::decode(entry)?;
        if !self.is_active(e.serial) {
            return Err(ProofError::Terminal("an inactive entry"));
        }
        let out = self.build_proof(entry, twig_hashes)?;
        // The sentinel proves its key absent; any other entry its value.
        let value_hash = *blake3::hash(e.value).as_bytes();
        let claim = (*e.key != KEY_MIN).then_some(&value_hash);
        verify_twig_proof(&self.root, e.key, claim, &out)?;
        Ok(out)
    }

    /// [`TwigTree::prove`] without its checks (the tests build proofs of
    /// inactive entries with it, to see the verifier refuse them).
    fn build_proof(&self, entry: &[u8], twig_hashes: &[Hash32]) -> Result<Vec<u8>, ProofError> {
        let e = EntryRef::decode(entry)?;
        let (twig, at) = (e.serial / TWIG_ENTRIES, (e.serial % TWIG_ENTRIES) as usize);
        let bits = self
            .bits_of(twig)
            .ok_or(ProofError::Terminal("an entry of a pruned twig"))?;
        let young_twig = self.base + self.entry_roots.len() as u64;
        let leaves = if twig == young_twig {
            &self.young[..]
        } else {
            twig_hashes
        };
        if leaves.get(at) != Some(&entry_hash(entry)) {
            return Err(ProofError::Terminal(
                "the twig's hashes do not hold the entry",
            ));
        }
        let mut out = Vec::with_capacity(8 + 4 + entry.len() + BITS_BYTES + 32 * 60);
        out.extend_from_slice(&self.tail.to_le_bytes());
        out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        out.extend_from_slice(entry);
        out.extend_from_slice(&Self::bits_bytes(bits));
        for s in padded_path(leaves, TWIG_LEVELS, at) {
            out.extend_from_slice(&s);
        }
        let depth = upper_depth(self.tail);
        out.push(depth as u8);
        for (level, l) in self.upper[..depth].iter().enumerate() {
            out.extend_from_slice(&l.get((twig >> level) ^ 1));
        }
        Ok(out)
    }

    /// The root of a log from scratch: every entry's hash (`None` for a
    /// serial whose bytes the caller dropped: it must be inactive and its
    /// whole twig too) and active bit. The audit and the tests' reference.
    pub fn root_of(entries: &[Option<Hash32>], active: &[bool]) -> Hash32 {
        assert_eq!(entries.len(), active.len());
        let tail = entries.len() as u64;
        let twigs = twigs_of(tail) as usize;
        let roots: Vec<Hash32> = (0..twigs)
            .map(|t| {
                let lo = t * TWIG_ENTRIES as usize;
                let hi = (lo + TWIG_ENTRIES as usize).min(entries.len());
                let hashes: Vec<Hash32> = entries[lo..hi]
                    .iter()
                    .map(|h| h.expect("a twig's entries"))
                    .collect();
                let mut words = [0u64; TWIG_WORDS];
                for (i, a) in active[lo..hi].iter().enumerate() {
                    if *a {
                        words[i / 64] |= 1 << (i % 64);
                    }
                }
                twig_root(
                    &padded_root(&hashes, TWIG_LEVELS),
                    &bits_hash(&Self::bits_bytes(&words)),
                )
            })
            .collect();
        state_root(&padded_root(&roots, upper_depth(tail)), tail)
    }
}

pub use super::twig_proof::{KEY_END, KEY_MIN};

/// A key's active entry, as a [`LogReader`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Current {
    /// Its serial.
    pub serial: u64,
    /// The next key present when it was written.
    pub next_key: Hash32,
    /// The value.
    pub value: Vec<u8>,
}

/// What the log holds before a block, as [`plan_block`] reads it: the
/// store's index and entries.
pub trait LogReader {
    /// The store's error.
    type Error;
    /// `key`'s active entry, if it is present.
    fn current(&self, key: &Hash32) -> Result<Option<Current>, Self::Error>;
    /// The greatest key below `key` that is present, with its entry (there
    /// is always one: [`KEY_MIN`]'s sentinel, for `key > KEY_MIN`).
    fn predecessor(&self, key: &Hash32) -> Result<(Hash32, Current), Self::Error>;
    /// The entries at serials `from..to` that are still active, with their
    /// serials, in serial order (the compaction's scan of the log's old
    /// end).
    fn active_between(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, Self::Error>;
}

/// One entry to append: key, next key, value.
pub type NewEntry = (Hash32, Hash32, Vec<u8>);

/// What one block does to the log, in the order it must be done: clear
/// `deactivate`'s bits, then append `append` at the tail in order (its
/// entries get serials `tail`, `tail + 1`, …), then move the compaction
/// head to `head`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Serials whose entries stop being current, ascending.
    pub deactivate: Vec<u64>,
    /// Entries to append: the block's writes and the predecessors whose
    /// next key changed, in key order, then the compacted entries in their
    /// old serial order.
    pub append: Vec<NewEntry>,
    /// The new compaction head: every serial below it is inactive after
    /// the block.
    pub head: u64,
    /// Keys the block deletes (present before it), ascending.
    pub deleted: Vec<Hash32>,
}

/// Errors of [`plan_block`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError<E> {
    /// The store failed.
    #[error("log: {0}")]
    Log(E),
    /// A write names [`KEY_MIN`] or [`KEY_END`], which bracket the key
    /// space.
    #[error("key {0:02x?} is reserved")]
    ReservedKey(Hash32),
    /// Writes are not sorted by key, or name a key twice.
    #[error("writes are not sorted and distinct")]
    Unsorted,
    /// A value is longer than [`VALUE_BYTES_MAX`].
    #[error("a value of {0} bytes is over the entry's bound")]
    ValueTooLong(usize),
    /// The store's entries contradict each other (a predecessor that is
    /// not below the key, a compacted entry that does not decode).
    #[error("log is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Entries the compaction scans per entry a block appends, once the log
/// is twice as long as its live entries: in steady state half of what it
/// scans is live, so the log stays within about twice the live set while
/// the appends at most double.
pub const COMPACT_SCAN_PER_APPEND: u64 = 2;

/// Plans one block's writes (`None` deletes; sorted by key, distinct) on
/// a log with tail `tail`, compaction head `head` and `live` active
/// entries: a pure function of what `reader` returns, so every node plans
/// the same appends and reaches the same root.
///
/// Rules: a written key gets a new entry (its value, and the next key
/// present after the block), unless the value is the one it holds; a
/// deleted key's entry is deactivated; a key
/// whose next key changes (the predecessor of an inserted or deleted key)
/// gets a new entry with its old value. Then, when the log holds at least
/// twice as many serials as live entries, the next
/// [`COMPACT_SCAN_PER_APPEND`] × appended serials from `head` are scanned
/// and their still-active entries appended again.
pub fn plan_block<R: LogReader>(
    reader: &R,
    writes: &[(Hash32, Option<Vec<u8>>)],
    tail: u64,
    head: u64,
    live: u64,
) -> Result<Plan, PlanError<R::Error>> {
    if !writes.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(PlanError::Unsorted);
    }
    // Every key the block touches, in key order: its entry before (if
    // present) and its value after (`None`: absent after). Sorted vectors
    // and binary searches, not trees: the writes come sorted, and a block
    // of transfers inserts and deletes nothing, so its touched keys are
    // its writes.
    for (k, v) in writes {
        if *k == KEY_MIN || *k == KEY_END {
            return Err(PlanError::ReservedKey(*k));
        }
        if let Some(v) = v
            && v.len() > VALUE_BYTES_MAX
        {
            return Err(PlanError::ValueTooLong(v.len()));
        }
    }
    // The reads one at a time, in key order (the reader is the store's);
    // then each write against its entry before the block on every core:
    // comparing and copying the values was most of a block's planning,
    // on one core while the other idled.
    let olds = writes
        .iter()
        .map(|(k, _)| reader.current(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PlanError::Log)?;
    let decided: Vec<Option<(Hash32, Touch)>> = {
        use rayon::prelude::*;
        writes
            .par_iter()
            .zip(olds)
            .with_min_len(crate::PAR_ITEMS_MIN)
            .map(|((k, v), mut old)| {
                match (&mut old, v) {
                    (None, None) => return None,
                    // A write of the value a key holds changes nothing:
                    // no entry, so the root follows the changes, not the
                    // writes.
                    (Some(cur), Some(v)) if cur.value == *v => return None,
                    // Nothing reads a written key's old value after this
                    // (its serial and next key stay): freed here, on this
                    // core.
                    (Some(cur), _) => drop(std::mem::take(&mut cur.value)),
                    (None, Some(_)) => {}
                }
                let touch = Touch {
                    old,
                    new: v.clone(),
                    written: true,
                };
                Some((*k, touch))
            })
            .collect()
    };
    let mut touched: Vec<(Hash32, Touch)> = Vec::with_capacity(writes.len());
    let mut inserted = Vec::new();
    let mut deleted = Vec::new();
    for (k, t) in decided.into_iter().flatten() {
        match (&t.old, &t.new) {
            (None, _) => inserted.push(k),
            (Some(_), None) => deleted.push(k),
            (Some(_), Some(_)) => {}
        }
        touched.push((k, t));
    }
    // The predecessor, after the block, of every inserted or deleted key
    // gets a new next key: the greatest old key below it that survives,
    // or a greater inserted one.
    let mut relinked = Vec::new();
    let mut preds: Vec<(Hash32, Touch)> = Vec::new();
    for k in inserted.iter().chain(&deleted) {
        let mut q = *k;
        let pred = loop {
            let (p, cur) = reader.predecessor(&q).map_err(PlanError::Log)?;
            if p >= q {
                return Err(PlanError::Inconsistent("a predecessor not below its key"));
            }
            if deleted.binary_search(&p).is_err() {
                preds.push((
                    p,
                    Touch {
                        new: Some(cur.value.clone()),
                        old: Some(cur),
                        written: writes.binary_search_by(|w| w.0.cmp(&p)).is_ok(),
                    },
                ));
                break p;
            }
            q = p;
        };
        let below = inserted.partition_point(|i| i < k);
        let pred = match below {
            0 => pred,
            b => pred.max(inserted[b - 1]),
        };
        relinked.push(pred);
    }
    relinked.sort_unstable();
    relinked.dedup();
    if !preds.is_empty() {
        // A predecessor that the block writes keeps its write; each other
        // one is touched once (every read of it returned the same entry).
        preds.sort_by_key(|p| p.0);
        preds.dedup_by(|a, b| a.0 == b.0);
        preds.retain(|(p, _)| touched.binary_search_by(|t| t.0.cmp(p)).is_err());
        touched.extend(preds);
        touched.sort_by_key(|t| t.0);
    }
    let touch_of = |k: &Hash32| {
        touched
            .binary_search_by(|t| t.0.cmp(k))
            .ok()
            .map(|i| &touched[i].1)
    };
    // The next key present after the block, for a key present after it.
    let next_after = |k: &Hash32, t: &Touch| -> Result<Hash32, PlanError<R::Error>> {
        // The old chain's next key above `k`, skipping deleted keys.
        let mut n = match &t.old {
            Some(cur) => cur.next_key,
            None => reader.predecessor(k).map_err(PlanError::Log)?.1.next_key,
        };
        while deleted.binary_search(&n).is_ok() {
            n = touch_of(&n)
                .and_then(|t| t.old.as_ref())
                .expect("a deleted key was present")
                .next_key;
        }
        let above = inserted.partition_point(|i| i <= k);
        Ok(match inserted.get(above) {
            Some(i) if *i < n => *i,
            _ => n,
        })
    };
    let mut plan = Plan::default();
    plan.append.reserve(touched.len());
    let mut nexts = Vec::with_capacity(touched.len());
    for (k, t) in &touched {
        if let Some(cur) = &t.old {
            plan.deactivate.push(cur.serial);
        }
        if t.new.is_some() {
            assert!(
                t.written || relinked.binary_search(k).is_ok(),
                "a touched key is written or relinked"
            );
            nexts.push(next_after(k, t)?);
        }
    }
    for ((k, t), next) in touched
        .into_iter()
        .filter_map(|(k, t)| t.new.map(|v| (k, v)))
        .zip(nexts)
    {
        plan.append.push((k, next, t));
    }
    // Compaction of the log's old end.
    let appended = plan.append.len() as u64;
    let live_after = live + inserted.len() as u64 - deleted.len() as u64;
    let mut new_head = head;
    if tail - head >= 2 * live_after.max(1) {
        let to = (head + COMPACT_SCAN_PER_APPEND * appended).min(tail);
        let mut gone = plan.deactivate.clone();
        gone.sort_unstable();
        for (serial, bytes) in reader.active_between(head, to).map_err(PlanError::Log)? {
            if gone.binary_search(&serial).is_ok() {
                continue;
            }
            let e = EntryRef::decode(&bytes)
                .map_err(|_| PlanError::Inconsistent("a compacted entry does not decode"))?;
            if e.serial != serial || serial < head || serial >= to {
                return Err(PlanError::Inconsistent(
                    "a compacted entry out of its range",
                ));
            }
            plan.deactivate.push(serial);
            plan.append.push((*e.key, *e.next_key, e.value.to_vec()));
        }
        new_head = to;
    }
    plan.deactivate.sort_unstable();
    plan.head = new_head;
    plan.deleted = deleted;
    Ok(plan)
}

/// A key a block touches, as [`plan_block`] plans it.
struct Touch {
    /// Its entry before the block, if it was present (a written key's
    /// without its value, which nothing reads once compared).
    old: Option<Current>,
    /// Its value after the block (`None`: absent).
    new: Option<Vec<u8>>,
    /// Whether the block writes it (else it is a relinked predecessor).
    written: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planner as it was written first, with ordered sets: the
    /// reference [`plan_block`] must match plan for plan.
    fn plan_block_reference<R: LogReader>(
        reader: &R,
        writes: &[(Hash32, Option<Vec<u8>>)],
        tail: u64,
        head: u64,
        live: u64,
    ) -> Result<Plan, PlanError<R::Error>> {
        use std::collections::{BTreeMap, BTreeSet};
        if !writes.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(PlanError::Unsorted);
        }
        // Every key the block touches: its entry before (if present) and its
        // value after (`None`: absent after).
        struct Touch {
            old: Option<Current>,
            new: Option<Vec<u8>>,
        }
        let mut touched: BTreeMap<Hash32, Touch> = BTreeMap::new();
        let mut inserted = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        for (k, v) in writes {
            if *k == KEY_MIN || *k == KEY_END {
                return Err(PlanError::ReservedKey(*k));
            }
            if let Some(v) = v
                && v.len() > VALUE_BYTES_MAX
            {
                return Err(PlanError::ValueTooLong(v.len()));
            }
            let old = reader.current(k).map_err(PlanError::Log)?;
            match (&old, v) {
                (None, None) => continue,
                // A write of the value a key holds changes nothing: no entry,
                // so the root follows the changes, not the writes.
                (Some(cur), Some(v)) if cur.value == *v => continue,
                (None, Some(_)) => inserted.insert(*k),
                (Some(_), None) => deleted.insert(*k),
                (Some(_), Some(_)) => false,
            };
            touched.insert(
                *k,
                Touch {
                    old,
                    new: v.clone(),
                },
            );
        }
        // The predecessor, after the block, of every inserted or deleted key
        // gets a new next key: the greatest old key below it that survives,
        // or a greater inserted one.
        let mut relinked = BTreeSet::new();
        for k in inserted.iter().chain(&deleted) {
            let mut q = *k;
            let pred = loop {
                let (p, cur) = reader.predecessor(&q).map_err(PlanError::Log)?;
                if p >= q {
                    return Err(PlanError::Inconsistent("a predecessor not below its key"));
                }
                if !deleted.contains(&p) {
                    touched.entry(p).or_insert(Touch {
                        new: Some(cur.value.clone()),
                        old: Some(cur),
                    });
                    break p;
                }
                q = p;
            };
            let pred = inserted
                .range(..*k)
                .next_back()
                .map_or(pred, |i| pred.max(*i));
            relinked.insert(pred);
        }
        // The next key present after the block, for a key present after it.
        let next_after = |k: &Hash32| -> Result<Hash32, PlanError<R::Error>> {
            // The old chain's next key above `k`, skipping deleted keys.
            let mut n = match touched.get(k).and_then(|t| t.old.as_ref()) {
                Some(cur) => cur.next_key,
                None => reader.predecessor(k).map_err(PlanError::Log)?.1.next_key,
            };
            while deleted.contains(&n) {
                n = touched[&n]
                    .old
                    .as_ref()
                    .expect("a deleted key was present")
                    .next_key;
            }
            use std::ops::Bound::{Excluded, Unbounded};
            Ok(
                match inserted.range::<Hash32, _>((Excluded(k), Unbounded)).next() {
                    Some(i) if *i < n => *i,
                    _ => n,
                },
            )
        };
        let mut plan = Plan::default();
        for (k, t) in &touched {
            if let Some(cur) = &t.old {
                plan.deactivate.push(cur.serial);
            }
            if let Some(v) = &t.new {
                let next = next_after(k)?;
                let keep = relinked.contains(k) || writes.binary_search_by_key(k, |w| w.0).is_ok();
                assert!(keep, "a touched key is written or relinked");
                plan.append.push((*k, next, v.clone()));
            }
        }
        // Compaction of the log's old end.
        let appended = plan.append.len() as u64;
        let live_after = live + inserted.len() as u64 - deleted.len() as u64;
        let mut new_head = head;
        if tail - head >= 2 * live_after.max(1) {
            let to = (head + COMPACT_SCAN_PER_APPEND * appended).min(tail);
            let gone: BTreeSet<u64> = plan.deactivate.iter().copied().collect();
            for (serial, bytes) in reader.active_between(head, to).map_err(PlanError::Log)? {
                if gone.contains(&serial) {
                    continue;
                }
                let e = EntryRef::decode(&bytes)
                    .map_err(|_| PlanError::Inconsistent("a compacted entry does not decode"))?;
                if e.serial != serial || serial < head || serial >= to {
                    return Err(PlanError::Inconsistent(
                        "a compacted entry out of its range",
                    ));
                }
                plan.deactivate.push(serial);
                plan.append.push((*e.key, *e.next_key, e.value.to_vec()));
            }
            new_head = to;
        }
        plan.deactivate.sort_unstable();
        plan.head = new_head;
        plan.deleted = deleted.into_iter().collect();
        Ok(plan)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// The planner plans exactly what the reference plans (the same
        /// plan is the same root on every node), block after block of
        /// inserts, updates, deletes, writes of the value held and, once
        /// the log is twice its live entries, compaction.
        #[test]
        fn plans_match_the_reference_planner(
            blocks in proptest::collection::vec(
                proptest::collection::btree_map(
                    0u8..24,
                    proptest::option::weighted(0.7, proptest::collection::vec(0u8..3, 0..3)),
                    0..16,
                ),
                1..24,
            ),
        ) {
            use crate::state::twig_memory::MemoryLog;
            let mut log = MemoryLog::new();
            let mut compacted = false;
            // The random blocks, then blocks that rewrite every key until
            // the log is twice its live entries and compacts.
            let churn = (0..6u8).map(|round| (0..24u8).map(|k| (k, Some(vec![round, k]))).collect());
            for block in blocks.into_iter().chain(churn) {
                let mut writes: Vec<(Hash32, Option<Vec<u8>>)> = block
                    .into_iter()
                    .map(|(k, v)| (*blake3::hash(&[k]).as_bytes(), v))
                    .collect();
                writes.sort_by_key(|w| w.0);
                let (tail, live) = (log.tree.tail(), log.tree.active_count());
                let plan = plan_block(&log, &writes, tail, log.head, live).unwrap();
                let reference = plan_block_reference(&log, &writes, tail, log.head, live).unwrap();
                proptest::prop_assert_eq!(&plan, &reference);
                compacted |= plan.head > log.head;
                log.apply(plan);
            }
            proptest::prop_assert!(compacted, "the blocks never compacted");
        }
    }

    fn step(t: &mut TwigTree, deactivate: &[u64], hashes: &[Hash32]) {
        let staged = t.stage(deactivate, hashes).unwrap();
        t.apply(staged);
    }

    fn entry(serial: u64, key: u8, next: u8, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry(serial, &[key; 32], &[next; 32], value, &mut out);
        out
    }

    #[test]
    fn empty_and_one_entry_roots_match_the_reference() {
        let mut t = TwigTree::new();
        assert_eq!(t.root(), TwigTree::root_of(&[], &[]));
        let e = entry(0, 0, 0xff, b"");
        step(&mut t, &[], &[entry_hash(&e)]);
        assert_eq!(
            t.root(),
            TwigTree::root_of(&[Some(entry_hash(&e))], &[true])
        );
        let p = t.prove(&e, &[]).unwrap();
        // The sentinel brackets every key but itself and the maximum.
        let root = t.root();
        assert_eq!(verify_twig_proof(&root, &[7; 32], None, &p), Ok(()));
        // The reserved keys are absent, never present.
        assert_eq!(verify_twig_proof(&root, &[0; 32], None, &p), Ok(()));
        assert_eq!(verify_twig_proof(&root, &[0xff; 32], None, &p), Ok(()));
        let empty = *blake3::hash(b"").as_bytes();
        assert!(verify_twig_proof(&root, &[0; 32], Some(&empty), &p).is_err());
    }

    /// A key's old entry, still in the log but inactive, proves nothing:
    /// not its old value, not the absence of keys it once bracketed.
    #[test]
    fn an_inactive_entry_proves_nothing() {
        let mut t = TwigTree::new();
        let sentinel = entry(0, 0, 0xff, b"");
        let old = entry(1, 5, 0xff, b"old");
        step(&mut t, &[], &[entry_hash(&sentinel), entry_hash(&old)]);
        let new = entry(2, 5, 0xff, b"new");
        // Deactivating what is not active is refused, and changes nothing.
        assert_eq!(t.stage(&[7], &[]), Err(TwigError::NotActive(7)));
        assert_eq!(t.stage(&[1, 1], &[]), Err(TwigError::NotActive(1)));
        step(&mut t, &[1], &[entry_hash(&new)]);
        let leaves: Vec<Hash32> = [&sentinel, &old, &new]
            .iter()
            .map(|e| entry_hash(e))
            .collect();
        let root = t.root();
        assert!(t.prove(&old, &leaves).is_err());
        let stale = t.build_proof(&old, &leaves).unwrap();
        let old_hash = *blake3::hash(b"old").as_bytes();
        assert_eq!(
            verify_twig_proof(&root, &[5; 32], Some(&old_hash), &stale),
            Err(ProofError::Terminal("an inactive entry"))
        );
        assert!(verify_twig_proof(&root, &[6; 32], None, &stale).is_err());
        let fresh = t.prove(&new, &leaves).unwrap();
        let new_hash = *blake3::hash(b"new").as_bytes();
        assert_eq!(
            verify_twig_proof(&root, &[5; 32], Some(&new_hash), &fresh),
            Ok(())
        );
    }

    #[test]
    fn entries_decode_and_refuse_malformed_bytes() {
        let e = entry(5, 1, 2, b"abc");
        let r = EntryRef::decode(&e).unwrap();
        assert_eq!(
            (r.serial, r.key, r.next_key, r.value),
            (5, &[1; 32], &[2; 32], &b"abc"[..])
        );
        assert!(EntryRef::decode(&e[..e.len() - 1]).is_err());
        let mut long = e.clone();
        long.push(0);
        assert!(EntryRef::decode(&long).is_err());
        let mut version = e.clone();
        version[0] = 9;
        assert!(EntryRef::decode(&version).is_err());
        let mut huge = e.clone();
        huge[73..77].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(EntryRef::decode(&huge).is_err());
    }
}
