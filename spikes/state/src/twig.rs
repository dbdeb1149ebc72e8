//! A QMDB-style twig log (LayerZero's QMDB, arXiv 2501.05262), written for
//! this spike: the smallest version that has its costs, not its features.
//!
//! - **Log.** Every update appends an entry (key, next key in key order,
//!   value; 256 bytes, fixed size, so entry `s` sits at byte `256 s`) to one
//!   file. Nothing is rewritten in place: a block's writes are one
//!   sequential `pwrite` and one `fdatasync`, then a 64-byte commit record
//!   (height, tail, head, root) and a second `fdatasync`.
//! - **Active bits.** One bit per log entry says whether it is the key's
//!   current entry. An update clears its key's old bit and sets the new one.
//! - **Twigs.** The log is cut into twigs of 2 048 entries. A twig's root is
//!   `H(0x02 ‖ entries_root ‖ blake3(active bits))`, where `entries_root` is
//!   the binary Merkle root of its entries' hashes, fixed once the twig is
//!   full: a bit flip in an old twig costs two hashes, not a path.
//! - **Upper tree.** A binary Merkle tree over all twig roots, in memory,
//!   recomputed each block (a few thousand hashes at 10⁷ entries).
//! - **Index.** `key → serial` in memory (a hash map on the key's first 8
//!   bytes; the entry read back confirms the whole key). Reading a value is
//!   one `pread` of 256 bytes.
//! - **Compaction.** Each block also moves `COMPACT_PER_UPDATE` × its updates
//!   entries' worth of the log's oldest end: active entries there are copied
//!   to the tail, so the log stays within a constant factor of the live set.
//!   (In steady state half of what it scans is still active; at the start
//!   of a run nearly all of it is, so a short run measures the expensive
//!   end.)
//!
//! Not in the spike: inserts and deletes (an insert rewrites the
//! predecessor's next-key entry, which needs an ordered index), proofs,
//! recovery from the log, pruning dead twigs' roots, freeing the file's
//! compacted front.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use rayon::prelude::*;

use crate::{Backend, Commit, Key, LOAD_CHUNK, VALUE_BYTES, Value};

type Hash = [u8; 32];
const ENTRY_BYTES: usize = 256;
const TWIG_ENTRIES: usize = 2048;
const TWIG_WORDS: usize = TWIG_ENTRIES / 64;
/// Entries scanned at the log's old end per update appended.
const COMPACT_PER_UPDATE: usize = 2;
const ZERO: Hash = [0; 32];

/// Hashes random 64-bit keys by passing them through.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Index = HashMap<u64, u64, BuildHasherDefault<IdHasher>>;

fn prefix(k: &Key) -> u64 {
    u64::from_le_bytes(k[..8].try_into().expect("8 bytes"))
}

type Entry = [u8; ENTRY_BYTES];

fn entry(key: &Key, next: &Key, value: &Value) -> Entry {
    let mut e = [0u8; ENTRY_BYTES];
    e[..32].copy_from_slice(key);
    e[32..64].copy_from_slice(next);
    e[64..64 + VALUE_BYTES].copy_from_slice(value);
    e
}

fn entry_key(e: &Entry) -> Key {
    e[..32].try_into().expect("32 bytes")
}

fn node(l: &Hash, r: &Hash) -> Hash {
    let mut b = [0u8; 65];
    b[0] = 1;
    b[1..33].copy_from_slice(l);
    b[33..].copy_from_slice(r);
    *blake3::hash(&b).as_bytes()
}

/// Merkle root of `leaves` padded with zero hashes to a power of two
/// (`width`).
fn merkle(leaves: &[Hash], width: usize) -> Hash {
    assert!(leaves.len() <= width && width.is_power_of_two());
    let mut level: Vec<Hash> = leaves.to_vec();
    level.resize(width, ZERO);
    while level.len() > 1 {
        level = level.chunks(2).map(|p| node(&p[0], &p[1])).collect();
    }
    level[0]
}

/// The twig log.
pub struct TwigLog {
    log: File,
    meta: File,
    index: Index,
    /// One bit per serial.
    active: Vec<u64>,
    /// Next serial to append.
    tail: u64,
    /// Every serial below is inactive (compacted).
    head: u64,
    /// `entries_root` of every full twig.
    entry_roots: Vec<Hash>,
    /// Leaf hashes of the youngest, partial twig.
    young: Vec<Hash>,
    /// The upper tree: level 0 holds the twig roots (padded with zeros to a
    /// power of two), the last level the root.
    levels: Vec<Vec<Hash>>,
    /// Twigs whose root changed since the last [`TwigLog::root`].
    dirty: Vec<usize>,
    height: u64,
    /// (serial, next key) of the keys the last `read` returned.
    read_at: HashMap<Key, (u64, Key)>,
}

impl TwigLog {
    /// Opens a fresh log in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let open = |name| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(name))
        };
        Ok(Self {
            log: open("twig.log")?,
            meta: open("twig.meta")?,
            index: Index::default(),
            active: Vec::new(),
            tail: 0,
            head: 0,
            entry_roots: Vec::new(),
            young: Vec::new(),
            levels: vec![vec![ZERO]],
            dirty: Vec::new(),
            height: 0,
            read_at: HashMap::new(),
        })
    }

    fn set_active(&mut self, s: u64, on: bool) {
        let (w, b) = ((s / 64) as usize, s % 64);
        if w >= self.active.len() {
            self.active.resize(w + 1, 0);
        }
        self.dirty.push(s as usize / TWIG_ENTRIES);
        if on {
            self.active[w] |= 1 << b;
        } else {
            self.active[w] &= !(1 << b);
        }
    }

    fn is_active(&self, s: u64) -> bool {
        self.active
            .get((s / 64) as usize)
            .is_some_and(|w| w >> (s % 64) & 1 == 1)
    }

    /// Assigns serials to `entries`, indexes them, hashes them into the
    /// twigs, and writes them at the tail (not yet synced).
    fn append(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let first = self.tail;
        for (i, e) in entries.iter().enumerate() {
            let s = first + i as u64;
            self.index.insert(prefix(&entry_key(e)), s);
            self.set_active(s, true);
        }
        self.tail += entries.len() as u64;
        let leaves: Vec<Hash> = entries
            .par_iter()
            .map(|e| *blake3::hash(e).as_bytes())
            .collect();
        let mut rest = &leaves[..];
        while !rest.is_empty() {
            let take = (TWIG_ENTRIES - self.young.len()).min(rest.len());
            self.young.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.young.len() == TWIG_ENTRIES {
                self.entry_roots.push(merkle(&self.young, TWIG_ENTRIES));
                self.young.clear();
            }
        }
        // SAFETY of the cast: `Entry` is a byte array, so a slice of them
        // is a contiguous slice of bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(entries.as_ptr().cast::<u8>(), entries.len() * ENTRY_BYTES)
        };
        self.log.write_all_at(bytes, first * ENTRY_BYTES as u64)?;
        Ok(())
    }

    /// The root of one twig, from its entries root and active bits.
    fn twig_root(&self, t: usize, young_root: &Option<Hash>) -> Hash {
        let mut bits = [0u8; TWIG_WORDS * 8];
        for (i, w) in bits.chunks_mut(8).enumerate() {
            let word = self.active.get(t * TWIG_WORDS + i).copied().unwrap_or(0);
            w.copy_from_slice(&word.to_le_bytes());
        }
        let er = match self.entry_roots.get(t) {
            Some(r) => *r,
            None => young_root.expect("the partial twig"),
        };
        let mut b = [0u8; 65];
        b[0] = 2;
        b[1..33].copy_from_slice(&er);
        b[33..].copy_from_slice(blake3::hash(&bits).as_bytes());
        *blake3::hash(&b).as_bytes()
    }

    /// The root over every twig: the roots of the twigs changed since the
    /// last call, then their paths in the upper tree.
    fn root(&mut self) -> Hash {
        let full = self.entry_roots.len();
        let twigs = full + usize::from(!self.young.is_empty());
        let young_root = (!self.young.is_empty()).then(|| merkle(&self.young, TWIG_ENTRIES));
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.par_sort_unstable();
        dirty.dedup();
        let roots: Vec<Hash> = dirty
            .par_iter()
            .map(|&t| self.twig_root(t, &young_root))
            .collect();
        let width = twigs.next_power_of_two().max(1);
        if self.levels[0].len() != width {
            // Grown past a power of two: rebuild the upper tree whole.
            let mut level0 = std::mem::take(&mut self.levels[0]);
            level0.resize(width, ZERO);
            for (&t, r) in dirty.iter().zip(&roots) {
                level0[t] = *r;
            }
            self.levels = vec![level0];
            while self.levels.last().expect("a level").len() > 1 {
                let up = self
                    .levels
                    .last()
                    .expect("a level")
                    .par_chunks(2)
                    .map(|p| node(&p[0], &p[1]))
                    .collect();
                self.levels.push(up);
            }
        } else {
            for (&t, r) in dirty.iter().zip(&roots) {
                self.levels[0][t] = *r;
            }
            for l in 1..self.levels.len() {
                dirty.iter_mut().for_each(|t| *t /= 2);
                dirty.dedup();
                let (below, above) = self.levels.split_at_mut(l);
                let below = &below[l - 1];
                for &t in &dirty {
                    above[0][t] = node(&below[2 * t], &below[2 * t + 1]);
                }
            }
        }
        self.levels.last().expect("a level")[0]
    }

    fn durable(&mut self, root: &Hash) -> anyhow::Result<()> {
        self.log.sync_data()?;
        let mut rec = [0u8; 64];
        rec[..8].copy_from_slice(&self.height.to_le_bytes());
        rec[8..16].copy_from_slice(&self.tail.to_le_bytes());
        rec[16..24].copy_from_slice(&self.head.to_le_bytes());
        rec[24..56].copy_from_slice(root);
        self.meta.write_all_at(&rec, 0)?;
        self.meta.sync_data()?;
        Ok(())
    }

    fn read_entry(&self, s: u64) -> anyhow::Result<Entry> {
        let mut e = [0u8; ENTRY_BYTES];
        self.log.read_exact_at(&mut e, s * ENTRY_BYTES as u64)?;
        Ok(e)
    }
}

impl Backend for TwigLog {
    fn bulk_load(
        &mut self,
        keys: &[Key],
        value: &(dyn Fn(&Key) -> Value + Sync),
    ) -> anyhow::Result<Key> {
        self.index.reserve(keys.len());
        for (c, chunk) in keys.chunks(LOAD_CHUNK).enumerate() {
            let base = c * LOAD_CHUNK;
            let entries: Vec<Entry> = chunk
                .par_iter()
                .enumerate()
                .map(|(i, k)| {
                    let next = keys.get(base + i + 1).copied().unwrap_or([0xff; 32]);
                    entry(k, &next, &value(k))
                })
                .collect();
            self.append(&entries)?;
        }
        if self.index.len() != keys.len() {
            bail!("two keys share their first 8 bytes: the spike's index cannot hold them");
        }
        let root = self.root();
        self.height += 1;
        self.durable(&root)?;
        Ok(root)
    }

    fn read(&mut self, keys: &[Key]) -> anyhow::Result<Vec<Value>> {
        let found: Vec<(u64, Entry)> = keys
            .par_iter()
            .map(|k| {
                let s = *self.index.get(&prefix(k)).context("missing key")?;
                let e = self.read_entry(s)?;
                if entry_key(&e) != *k {
                    bail!("index prefix collision");
                }
                Ok((s, e))
            })
            .collect::<anyhow::Result<_>>()?;
        self.read_at.clear();
        Ok(found
            .into_iter()
            .map(|(s, e)| {
                let key = entry_key(&e);
                self.read_at
                    .insert(key, (s, e[32..64].try_into().expect("32")));
                e[64..64 + VALUE_BYTES].try_into().expect("value")
            })
            .collect())
    }

    fn commit(&mut self, updates: &[(Key, Value)]) -> anyhow::Result<Commit> {
        let t0 = Instant::now();
        let mut entries = Vec::with_capacity(updates.len() * (1 + COMPACT_PER_UPDATE));
        for (k, v) in updates {
            let &(old, next) = self.read_at.get(k).context("update of a key not read")?;
            self.set_active(old, false);
            entries.push(entry(k, &next, v));
        }
        // Compaction: the oldest `COMPACT_PER_UPDATE × updates` serials, in
        // one sequential read; their active entries move to the tail.
        let end = (self.head + (COMPACT_PER_UPDATE * updates.len()) as u64).min(self.tail);
        if end > self.head {
            let mut buf = vec![0u8; (end - self.head) as usize * ENTRY_BYTES];
            self.log
                .read_exact_at(&mut buf, self.head * ENTRY_BYTES as u64)?;
            for (i, e) in buf.chunks_exact(ENTRY_BYTES).enumerate() {
                let s = self.head + i as u64;
                if self.is_active(s) {
                    self.set_active(s, false);
                    entries.push(e.try_into().expect("entry"));
                }
            }
            self.head = end;
        }
        self.append(&entries)?;
        let root = self.root();
        let t1 = Instant::now();
        self.height += 1;
        self.durable(&root)?;
        let t2 = Instant::now();
        Ok(Commit {
            root,
            root_ms: (t1 - t0).as_secs_f64() * 1e3,
            write_ms: (t2 - t1).as_secs_f64() * 1e3,
        })
    }
}
