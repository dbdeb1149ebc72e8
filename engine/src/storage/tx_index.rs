//! The transaction index (hash → height and position), kept as sorted
//! runs merged a step a block, so that its writes stay sequential as the
//! chain's history grows.
//!
//! A B-tree keyed by transaction hash takes each block's hashes as random
//! puts: once the tree has more leaves than a block has transactions,
//! every put copies a page of its own (10 000 pages, 40 MiB, a block of
//! 10 000 transfers), and the commit grows with the history (`int bench
//! scale` at 10⁶ accounts: 35 ms a block over the first 10 blocks, 125
//! over 100). Here a block's hashes become one sorted run of their own
//! (level 0), written in chunks of [`Params::chunk_entries`] entries; when
//! a level holds [`Params::fanout`] runs nobody merges, a merge of them
//! into one run a level up begins, and every commit takes each merge in
//! progress a step further: at least [`Params::step_entries_min`] entries,
//! and twice the block's own, so that a merge ends before its level fills
//! again. An entry is written once a level (≈ 6 levels for 10¹⁰
//! transactions), in key order, in the block's own storage transaction:
//! the index is always the committed blocks' index, after a crash too.
//!
//! A lookup asks every run (the live ones and the outputs of merges in
//! progress): one seek for the chunk that may hold the hash and a binary
//! search in it, ≈ 8 runs a level. A merge deletes the chunks of its
//! inputs as it passes them, so a hash is always in an input or in the
//! output, and the lookup takes the latest location among those it finds
//! (a hash indexed twice answers as the B-tree, which overwrote, did,
//! because a chain's blocks are indexed at heights that only grow: each
//! commit is on the head).
//!
//! The store is behind [`RunRead`] and [`RunWrite`]: LMDB's transactions
//! in the node (`storage::lmdb`), a map in the tests.
//!
//! Measured (`int bench scale`, 2-core VM, one run each against the
//! B-tree): at 10⁵ accounts over 1 000 blocks of 5 000 transfers, commit
//! 84.8 → 10.2 ms a block (9.5 over the first 100: flat) and page cache
//! dirtied 297 → 9 MiB a block; a lookup 22.7 µs after the 1 000 blocks
//! with a warm cache (8.1 after 100). Left: a lookup of a hash nobody
//! indexed pays a seek in every run (≈ 8 a level) and then the old table;
//! a filter per run (Bloom, or fence keys) would make it one probe.
//! LMDB's free list under the merges' freed and allocated 22-page chunks:
//! after 3 000 blocks of 1 000 (`--accounts 1e5 --blocks 3000 --block-txs
//! 1000`) the file's high-water mark (216 709 pages) is within 1 % of the
//! pages its tables use, the runs' 32 230 overflow pages exactly their 3
//! million entries; 10⁴ blocks and more are not measured.

use super::StorageError;
use int_schemas::Hash32;

/// Bytes of one entry: hash ‖ height (u64 BE) ‖ index (u32 BE), so that
/// entries sort by hash, then by location.
pub const ENTRY_BYTES: usize = 32 + 8 + 4;

/// Version byte of the encoded [`Directory`].
const DIRECTORY_VERSION: u8 = 1;

/// Runs a level holds before they are merged, and the sizes of a merge's
/// steps and chunks.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Runs of one level merged into one run of the next.
    pub fanout: usize,
    /// Most entries a chunk holds (one value in the store).
    pub chunk_entries: usize,
    /// Least entries a merge step emits, whatever the block's size.
    pub step_entries_min: usize,
}

impl Params {
    /// The node's: merges of 8 runs, chunks of 2 047 entries (LMDB
    /// writes a value this size as 22 contiguous 4 KiB overflow pages,
    /// their 16-byte header included: 2 048 would take a 23rd for 16
    /// bytes; larger values need longer free runs in its file), steps of
    /// at least 16 384 entries.
    pub const NODE: Params = Params {
        fanout: 8,
        chunk_entries: 2047,
        step_entries_min: 16_384,
    };
}

/// Reads of the index's store.
pub trait RunRead {
    /// The encoded directory of `chain_id`'s index, if it has one.
    fn directory(&self, chain_id: u32) -> Result<Option<Vec<u8>>, StorageError>;

    /// Calls `f` with the first chunk of run `run` whose last hash is at
    /// or after `from` (its last hash and its entries), if there is one.
    fn with_chunk_from<R>(
        &self,
        chain_id: u32,
        run: u64,
        from: &Hash32,
        f: impl FnOnce(&Hash32, &[u8]) -> R,
    ) -> Result<Option<R>, StorageError>;
}

/// Writes to the index's store, in the transaction of the block that
/// makes them.
pub trait RunWrite: RunRead {
    /// Replaces `chain_id`'s encoded directory.
    fn put_directory(&mut self, chain_id: u32, bytes: &[u8]) -> Result<(), StorageError>;

    /// Writes a chunk of run `run` whose last hash is `last`.
    fn put_chunk(
        &mut self,
        chain_id: u32,
        run: u64,
        last: &Hash32,
        entries: &[u8],
    ) -> Result<(), StorageError>;

    /// Deletes the chunk of run `run` whose last hash is `last`.
    fn delete_chunk(&mut self, chain_id: u32, run: u64, last: &Hash32) -> Result<(), StorageError>;
}

/// A run: sorted, unique hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    id: u64,
    level: u8,
    entries: u64,
}

/// A merge in progress: its output has every entry of its inputs up to
/// and including `after`, and the inputs no longer hold the chunks it
/// passed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Merge {
    output: u64,
    level: u8,
    inputs: Vec<u64>,
    after: Option<Hash32>,
    emitted: u64,
}

/// A chain's runs and merges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Directory {
    next_run: u64,
    /// Oldest first.
    runs: Vec<Run>,
    /// Oldest first.
    merges: Vec<Merge>,
}

fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        table: "txruns",
        what: what.into(),
    }
}

/// The directory's fields, big-endian, every read checked.
type Reader<'a> = crate::bytes::FieldReader<'a, StorageError, true>;

fn directory_error(key: &'static str, what: &'static str) -> StorageError {
    corrupt(format!("{key}: {what}"))
}

impl Directory {
    fn encode(&self) -> Vec<u8> {
        let mut b = vec![DIRECTORY_VERSION];
        b.extend_from_slice(&self.next_run.to_be_bytes());
        b.extend_from_slice(&(self.runs.len() as u32).to_be_bytes());
        for r in &self.runs {
            b.extend_from_slice(&r.id.to_be_bytes());
            b.push(r.level);
            b.extend_from_slice(&r.entries.to_be_bytes());
        }
        b.extend_from_slice(&(self.merges.len() as u32).to_be_bytes());
        for m in &self.merges {
            b.extend_from_slice(&m.output.to_be_bytes());
            b.push(m.level);
            match &m.after {
                None => b.push(0),
                Some(h) => {
                    b.push(1);
                    b.extend_from_slice(h);
                }
            }
            b.extend_from_slice(&m.emitted.to_be_bytes());
            b.extend_from_slice(&(m.inputs.len() as u32).to_be_bytes());
            for i in &m.inputs {
                b.extend_from_slice(&i.to_be_bytes());
            }
        }
        b
    }

    /// Decodes a directory, refusing one that is cut, has bytes past its
    /// end, names a run twice or counts more runs than its bytes hold.
    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let mut r = Reader::versioned(bytes, "directory", DIRECTORY_VERSION, directory_error)?;
        let next_run = r.u64()?;
        // Each count is checked against the bytes left before anything
        // is allocated for it.
        let runs_len = r.u32()? as usize;
        if runs_len > r.remaining() / 17 {
            return Err(corrupt(format!("{runs_len} runs in a short directory")));
        }
        let mut runs = Vec::with_capacity(runs_len);
        for _ in 0..runs_len {
            runs.push(Run {
                id: r.u64()?,
                level: r.u8()?,
                entries: r.u64()?,
            });
        }
        let merges_len = r.u32()? as usize;
        if merges_len > r.remaining() / 22 {
            return Err(corrupt(format!("{merges_len} merges in a short directory")));
        }
        let mut merges = Vec::with_capacity(merges_len);
        for _ in 0..merges_len {
            let output = r.u64()?;
            let level = r.u8()?;
            let after = match r.u8()? {
                0 => None,
                1 => Some(r.arr::<32>()?),
                other => return Err(corrupt(format!("merge position tag {other}"))),
            };
            let emitted = r.u64()?;
            let inputs_len = r.u32()? as usize;
            if inputs_len > r.remaining() / 8 {
                return Err(corrupt(format!("{inputs_len} inputs in a short directory")));
            }
            let inputs = (0..inputs_len)
                .map(|_| r.u64())
                .collect::<Result<Vec<_>, _>>()?;
            merges.push(Merge {
                output,
                level,
                inputs,
                after,
                emitted,
            });
        }
        r.end()?;
        let mut ids: Vec<u64> = runs
            .iter()
            .map(|r| r.id)
            .chain(merges.iter().map(|m| m.output))
            .collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) || ids.last().is_some_and(|&l| l >= next_run) {
            return Err(corrupt("a run named twice, or past the next run id"));
        }
        // A merge's inputs are live runs, each some one merge's.
        let mut inputs: Vec<u64> = merges
            .iter()
            .flat_map(|m| m.inputs.iter().copied())
            .collect();
        inputs.sort_unstable();
        let mut live: Vec<u64> = runs.iter().map(|r| r.id).collect();
        live.sort_unstable();
        if inputs.windows(2).any(|w| w[0] == w[1])
            || inputs.iter().any(|i| live.binary_search(i).is_err())
        {
            return Err(corrupt(
                "a merge input that is no live run, or merged twice",
            ));
        }
        Ok(Self {
            next_run,
            runs,
            merges,
        })
    }

    fn load(store: &impl RunRead, chain_id: u32) -> Result<Self, StorageError> {
        match store.directory(chain_id)? {
            Some(b) => Self::decode(&b),
            None => Ok(Self::default()),
        }
    }

    fn new_run(&mut self) -> Result<u64, StorageError> {
        let id = self.next_run;
        self.next_run = id
            .checked_add(1)
            .ok_or_else(|| corrupt("run ids exhausted"))?;
        Ok(id)
    }

    /// Every run a lookup asks: the live ones and merges' outputs.
    fn searched(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .map(|r| r.id)
            .chain(self.merges.iter().map(|m| m.output))
    }
}

fn entry(hash: &Hash32, height: u64, index: u32) -> [u8; ENTRY_BYTES] {
    let mut e = [0u8; ENTRY_BYTES];
    e[..32].copy_from_slice(hash);
    e[32..40].copy_from_slice(&height.to_be_bytes());
    e[40..].copy_from_slice(&index.to_be_bytes());
    e
}

fn hash_of(e: &[u8]) -> &[u8] {
    &e[..32]
}

fn location_of(e: &[u8]) -> (u64, u32) {
    let mut h = [0u8; 8];
    h.copy_from_slice(&e[32..40]);
    let mut i = [0u8; 4];
    i.copy_from_slice(&e[40..ENTRY_BYTES]);
    (u64::from_be_bytes(h), u32::from_be_bytes(i))
}

fn last_hash(e: &[u8]) -> Hash32 {
    let mut h = [0u8; 32];
    h.copy_from_slice(&e[e.len() - ENTRY_BYTES..][..32]);
    h
}

/// The hash after `h` (as a 256-bit big-endian number), `None` after the
/// last.
fn successor(h: &Hash32) -> Option<Hash32> {
    let mut s = *h;
    for b in s.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(s);
        }
    }
    None
}

/// Refuses a chunk that is not whole entries, or whose key is not its
/// last entry's hash (the key is what seeks find it by).
fn check_chunk(run: u64, last: &Hash32, bytes: &[u8]) -> Result<(), StorageError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(ENTRY_BYTES) {
        return Err(corrupt(format!(
            "a chunk of run {run} of {} bytes, not a positive multiple of {ENTRY_BYTES}",
            bytes.len()
        )));
    }
    if last_hash(bytes) != *last {
        return Err(corrupt(format!(
            "a chunk of run {run} whose key is not its last hash"
        )));
    }
    Ok(())
}

/// Where `hash` is in `chain_id`'s index: the latest location any run
/// holds for it.
pub fn locate(
    store: &impl RunRead,
    chain_id: u32,
    hash: &Hash32,
) -> Result<Option<(u64, u32)>, StorageError> {
    let dir = Directory::load(store, chain_id)?;
    let mut best = None;
    for run in dir.searched() {
        let found = store.with_chunk_from(chain_id, run, hash, |last, bytes| {
            check_chunk(run, last, bytes)?;
            let n = bytes.len() / ENTRY_BYTES;
            let at = |i: usize| &bytes[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES];
            let i = partition(n, |i| hash_of(at(i)) < &hash[..]);
            Ok::<_, StorageError>((i < n && hash_of(at(i)) == hash).then(|| location_of(at(i))))
        })?;
        if let Some(loc) = found.transpose()?.flatten() {
            best = best.max(Some(loc));
        }
    }
    Ok(best)
}

/// The first `i` in `0..n` where `below(i)` is false (`below` true, then
/// false).
fn partition(n: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Adds the block at `height` to `chain_id`'s index (its transactions'
/// hashes in block order), begins the merges that are due and takes every
/// merge in progress one step.
pub fn index_block(
    store: &mut impl RunWrite,
    chain_id: u32,
    height: u64,
    tx_hashes: &[Hash32],
    params: Params,
) -> Result<(), StorageError> {
    assert!(params.fanout >= 2 && params.chunk_entries >= 1 && params.step_entries_min >= 1);
    let mut dir = Directory::load(store, chain_id)?;
    let before = dir.clone();
    if !tx_hashes.is_empty() {
        let mut entries: Vec<[u8; ENTRY_BYTES]> = (0u32..)
            .zip(tx_hashes)
            .map(|(i, h)| entry(h, height, i))
            .collect();
        entries.sort_unstable();
        // A hash twice in one block keeps its later position.
        entries.dedup_by(|later, earlier| {
            let same = hash_of(later) == hash_of(earlier);
            if same {
                *earlier = *later;
            }
            same
        });
        let id = dir.new_run()?;
        let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for e in &entries {
            out.extend_from_slice(e);
        }
        write_chunks(store, chain_id, id, &out, params.chunk_entries)?;
        dir.runs.push(Run {
            id,
            level: 0,
            entries: entries.len() as u64,
        });
    }
    begin_merges(&mut dir, params.fanout)?;
    let budget = params.step_entries_min.max(2 * tx_hashes.len());
    for mut m in std::mem::take(&mut dir.merges) {
        if step(store, chain_id, &mut m, budget, params.chunk_entries)? {
            // Done: the output replaces its inputs.
            dir.runs.retain(|r| !m.inputs.contains(&r.id));
            if m.emitted > 0 {
                dir.runs.push(Run {
                    id: m.output,
                    level: m.level,
                    entries: m.emitted,
                });
            }
        } else {
            dir.merges.push(m);
        }
    }
    dir.runs.sort_unstable_by_key(|r| r.id);
    if dir == before {
        // A block without transactions and no merge to take: nothing to
        // write.
        return Ok(());
    }
    store.put_directory(chain_id, &dir.encode())
}

/// Begins a merge of the oldest `fanout` runs of each level that has as
/// many no merge takes.
fn begin_merges(dir: &mut Directory, fanout: usize) -> Result<(), StorageError> {
    let mut levels: Vec<u8> = dir.runs.iter().map(|r| r.level).collect();
    levels.sort_unstable();
    levels.dedup();
    for level in levels {
        loop {
            let free: Vec<u64> = dir
                .runs
                .iter()
                .filter(|r| r.level == level)
                .map(|r| r.id)
                .filter(|id| !dir.merges.iter().any(|m| m.inputs.contains(id)))
                .take(fanout)
                .collect();
            if free.len() < fanout {
                break;
            }
            let output = dir.new_run()?;
            dir.merges.push(Merge {
                output,
                level: level.saturating_add(1),
                inputs: free,
                after: None,
                emitted: 0,
            });
        }
    }
    Ok(())
}

fn write_chunks(
    store: &mut impl RunWrite,
    chain_id: u32,
    run: u64,
    entries: &[u8],
    chunk_entries: usize,
) -> Result<(), StorageError> {
    for chunk in entries.chunks(chunk_entries * ENTRY_BYTES) {
        store.put_chunk(chain_id, run, &last_hash(chunk), chunk)?;
    }
    Ok(())
}

/// One input's place in a merge step: its current chunk's last hash, the
/// entries of it not yet merged, and the next of them.
struct Head {
    last: Hash32,
    entries: Vec<u8>,
    next: usize,
}

impl Head {
    /// The chunk of `run` holding its first entry at or after `from`.
    fn seek(
        store: &impl RunRead,
        chain_id: u32,
        run: u64,
        from: &Hash32,
    ) -> Result<Option<Head>, StorageError> {
        let found = store.with_chunk_from(chain_id, run, from, |last, bytes| {
            check_chunk(run, last, bytes)?;
            let n = bytes.len() / ENTRY_BYTES;
            let i = partition(n, |i| {
                hash_of(&bytes[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES]) < &from[..]
            });
            Ok::<_, StorageError>(Head {
                last: *last,
                entries: bytes[i * ENTRY_BYTES..].to_vec(),
                next: 0,
            })
        })?;
        found.transpose()
    }

    fn current(&self) -> Option<&[u8]> {
        self.entries
            .get(self.next * ENTRY_BYTES..(self.next + 1) * ENTRY_BYTES)
    }
}

/// Takes merge `m` up to `budget` entries further (whole hashes: every
/// input's entries up to `m.after` are in the output), deleting the input
/// chunks it finishes; whether the merge passed all its inputs.
fn step(
    store: &mut impl RunWrite,
    chain_id: u32,
    m: &mut Merge,
    budget: usize,
    chunk_entries: usize,
) -> Result<bool, StorageError> {
    let from = match &m.after {
        None => Some([0u8; 32]),
        Some(a) => successor(a),
    };
    let mut heads: Vec<(u64, Option<Head>)> = Vec::with_capacity(m.inputs.len());
    for &run in &m.inputs {
        let head = match &from {
            Some(f) => Head::seek(store, chain_id, run, f)?,
            None => None,
        };
        heads.push((run, head));
    }
    let mut out: Vec<u8> = Vec::with_capacity(budget.min(1 << 20) * ENTRY_BYTES);
    loop {
        // Inputs whose chunk is passed: delete it, read the next one.
        for (run, head) in &mut heads {
            while let Some(h) = head
                && h.current().is_none()
            {
                let last = h.last;
                store.delete_chunk(chain_id, *run, &last)?;
                *head = match successor(&last) {
                    Some(f) => Head::seek(store, chain_id, *run, &f)?,
                    None => None,
                };
            }
        }
        if out.len() / ENTRY_BYTES >= budget {
            break;
        }
        let Some(min) = heads
            .iter()
            .filter_map(|(_, h)| h.as_ref()?.current())
            .map(hash_of)
            .min()
            .map(|h| {
                let mut a = [0u8; 32];
                a.copy_from_slice(h);
                a
            })
        else {
            break;
        };
        // Every input's entry of this hash: the latest location stays.
        let mut best: Option<[u8; ENTRY_BYTES]> = None;
        for (_, head) in &mut heads {
            if let Some(h) = head
                && let Some(e) = h.current()
                && hash_of(e) == &min[..]
            {
                let mut b = [0u8; ENTRY_BYTES];
                b.copy_from_slice(e);
                best = best.max(Some(b));
                h.next += 1;
            }
        }
        let Some(best) = best else {
            unreachable!("the least hash is some input's");
        };
        out.extend_from_slice(&best);
        m.after = Some(last_hash(&best));
    }
    m.emitted = m
        .emitted
        .checked_add((out.len() / ENTRY_BYTES) as u64)
        .ok_or_else(|| corrupt(format!("merge into run {} past 2^64 entries", m.output)))?;
    if !out.is_empty() {
        write_chunks(store, chain_id, m.output, &out, chunk_entries)?;
    }
    Ok(heads.iter().all(|(_, h)| h.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// The index's store as maps.
    #[derive(Default)]
    struct MapStore {
        dirs: HashMap<u32, Vec<u8>>,
        chunks: BTreeMap<(u32, u64, Hash32), Vec<u8>>,
    }

    impl RunRead for MapStore {
        fn directory(&self, chain_id: u32) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.dirs.get(&chain_id).cloned())
        }

        fn with_chunk_from<R>(
            &self,
            chain_id: u32,
            run: u64,
            from: &Hash32,
            f: impl FnOnce(&Hash32, &[u8]) -> R,
        ) -> Result<Option<R>, StorageError> {
            Ok(self
                .chunks
                .range((chain_id, run, *from)..=(chain_id, run, [0xff; 32]))
                .next()
                .map(|((_, _, last), v)| f(last, v)))
        }
    }

    impl RunWrite for MapStore {
        fn put_directory(&mut self, chain_id: u32, bytes: &[u8]) -> Result<(), StorageError> {
            self.dirs.insert(chain_id, bytes.to_vec());
            Ok(())
        }

        fn put_chunk(
            &mut self,
            chain_id: u32,
            run: u64,
            last: &Hash32,
            entries: &[u8],
        ) -> Result<(), StorageError> {
            let old = self.chunks.insert((chain_id, run, *last), entries.to_vec());
            assert!(old.is_none(), "a chunk written twice");
            Ok(())
        }

        fn delete_chunk(
            &mut self,
            chain_id: u32,
            run: u64,
            last: &Hash32,
        ) -> Result<(), StorageError> {
            let old = self.chunks.remove(&(chain_id, run, *last));
            assert!(old.is_some(), "a chunk deleted that is not there");
            Ok(())
        }
    }

    fn hash(n: u16) -> Hash32 {
        // The key space's ends too (a merge past the last hash).
        match n {
            0 => return [0xff; 32],
            1 => return [0; 32],
            _ => {}
        }
        let mut h = [0u8; 32];
        // Spread over the key space, with neighbours that share a prefix.
        h[0] = (n as u8).wrapping_mul(37);
        h[1] = (n >> 8) as u8;
        h[31] = n as u8;
        h
    }

    /// What the index must answer: each hash's latest location.
    fn reference(blocks: &[Vec<u16>]) -> BTreeMap<Hash32, (u64, u32)> {
        let mut r = BTreeMap::new();
        for (height, txs) in (1u64..).zip(blocks) {
            for (i, n) in (0u32..).zip(txs) {
                r.insert(hash(*n), (height, i));
            }
        }
        r
    }

    /// Every stored chunk belongs to a run the directory names, its
    /// entries sorted and unique, and a run's chunks are in order.
    fn check_store(store: &MapStore, chain_id: u32) {
        let dir = Directory::load(store, chain_id).unwrap();
        let named: Vec<u64> = dir
            .searched()
            .chain(dir.merges.iter().flat_map(|m| m.inputs.iter().copied()))
            .collect();
        let mut prev: Option<(u64, Vec<u8>)> = None;
        for ((c, run, last), v) in &store.chunks {
            if *c != chain_id {
                continue;
            }
            assert!(
                named.contains(run),
                "chunk of run {run}, which nothing names"
            );
            assert_eq!(&last_hash(v), last);
            let hashes: Vec<&[u8]> = v.chunks(ENTRY_BYTES).map(hash_of).collect();
            assert!(hashes.windows(2).all(|w| w[0] < w[1]), "chunk unsorted");
            if let Some((prun, plast)) = &prev
                && prun == run
            {
                assert!(&plast[..] < hashes[0], "chunks of run {run} overlap");
            }
            prev = Some((*run, last.to_vec()));
        }
    }

    fn run_blocks(blocks: &[Vec<u16>], params: Params) -> MapStore {
        let mut store = MapStore::default();
        let universe: std::collections::BTreeSet<u16> = blocks.iter().flatten().copied().collect();
        for (height, txs) in (1u64..).zip(blocks) {
            let hashes: Vec<Hash32> = txs.iter().map(|n| hash(*n)).collect();
            index_block(&mut store, 7, height, &hashes, params).unwrap();
            check_store(&store, 7);
            let want = reference(&blocks[..height as usize]);
            for n in &universe {
                assert_eq!(
                    locate(&store, 7, &hash(*n)).unwrap(),
                    want.get(&hash(*n)).copied(),
                    "hash {n} after block {height}"
                );
            }
        }
        store
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Lookups answer as a map of each hash's latest location does,
        /// after every block, with merges of every shape in progress.
        #[test]
        fn lookups_match_a_map(
            blocks in prop::collection::vec(prop::collection::vec(0u16..300, 0..14), 1..48),
            fanout in 2usize..5,
            chunk_entries in 1usize..7,
            step_entries_min in 1usize..9,
        ) {
            run_blocks(&blocks, Params { fanout, chunk_entries, step_entries_min });
        }

        #[test]
        fn directories_round_trip(
            runs in prop::collection::vec((0u8..9, 0u64..1000), 0..20),
            merges in prop::collection::vec(
                (0u8..9, prop::option::of(any::<[u8; 32]>()), 0u64..9999, 0usize..9),
                0..5
            ),
        ) {
            let mut dir = Directory::default();
            for (level, entries) in runs {
                let id = dir.new_run().unwrap();
                dir.runs.push(Run { id, level, entries });
            }
            // Each merge takes the next live runs nobody merges.
            let mut free = dir.runs.iter().map(|r| r.id).collect::<Vec<_>>().into_iter();
            for (level, after, emitted, inputs) in merges {
                let output = dir.new_run().unwrap();
                dir.merges.push(Merge {
                    output,
                    level,
                    inputs: free.by_ref().take(inputs).collect(),
                    after,
                    emitted,
                });
            }
            let bytes = dir.encode();
            prop_assert_eq!(Directory::decode(&bytes).unwrap(), dir);
            // Cut anywhere, or with a byte more: an error, never a panic.
            for n in 0..bytes.len() {
                prop_assert!(Directory::decode(&bytes[..n]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Directory::decode(&longer).is_err());
        }

        /// Bytes past the version byte, random or a valid directory's
        /// with bytes changed: a directory or an error, never a panic.
        #[test]
        fn directories_of_any_bytes_decode_or_fail(
            mut bytes in prop::collection::vec(any::<u8>(), 1..200),
            runs in 0u64..12,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            bytes[0] = DIRECTORY_VERSION;
            let _ = Directory::decode(&bytes);
            let mut dir = Directory::default();
            for level in 0..runs {
                let id = dir.new_run().unwrap();
                dir.runs.push(Run { id, level: level as u8 % 3, entries: level + 1 });
            }
            begin_merges(&mut dir, 2).unwrap();
            let mut valid = dir.encode();
            prop_assert_eq!(Directory::decode(&valid).unwrap(), dir);
            for (at, b) in flips {
                let i = at.index(valid.len());
                valid[i] ^= b | 1;
            }
            let _ = Directory::decode(&valid);
        }
    }

    /// With blocks of one size, no level keeps more than twice the fanout
    /// runs: merges end before their level fills again.
    #[test]
    fn levels_stay_bounded() {
        let params = Params {
            fanout: 4,
            chunk_entries: 8,
            step_entries_min: 4,
        };
        let mut store = MapStore::default();
        let mut n = 0u32;
        for height in 1..=600u64 {
            let hashes: Vec<Hash32> = (0..10)
                .map(|_| {
                    n += 1;
                    *blake3::hash(&n.to_le_bytes()).as_bytes()
                })
                .collect();
            index_block(&mut store, 1, height, &hashes, params).unwrap();
            let dir = Directory::load(&store, 1).unwrap();
            for level in 0..8u8 {
                let runs = dir.runs.iter().filter(|r| r.level == level).count();
                assert!(
                    runs <= 2 * params.fanout,
                    "level {level}: {runs} runs at {height}"
                );
            }
        }
        let dir = Directory::load(&store, 1).unwrap();
        assert!(dir.runs.iter().any(|r| r.level >= 3), "{dir:?}");
        // Every entry is in exactly one place once no merge is running
        // over it: stored entries ≈ indexed ones (inputs of merges in
        // progress hold at most what their outputs do not).
        let stored: usize = store.chunks.values().map(|v| v.len() / ENTRY_BYTES).sum();
        assert!(stored <= 2 * 6000, "{stored} entries stored for 6000");
        for k in [1u32, 77, 3000, 6000] {
            let want = *blake3::hash(&k.to_le_bytes()).as_bytes();
            let height = u64::from((k - 1) / 10 + 1);
            assert_eq!(
                locate(&store, 1, &want).unwrap(),
                Some((height, (k - 1) % 10))
            );
        }
    }

    #[test]
    fn corrupt_chunks_are_errors() {
        let mut store = MapStore::default();
        index_block(&mut store, 1, 1, &[hash(1), hash(2)], Params::NODE).unwrap();
        let key = *store.chunks.keys().next().unwrap();
        store.chunks.insert(key, vec![1, 2, 3]);
        assert!(matches!(
            locate(&store, 1, &hash(1)),
            Err(StorageError::Corrupt { .. })
        ));
        store.dirs.insert(1, vec![9]);
        assert!(locate(&store, 1, &hash(1)).is_err());

        // A merge reading a chunk whose key is not its last hash.
        let mut store = MapStore::default();
        let params = Params {
            fanout: 2,
            chunk_entries: 4,
            step_entries_min: 1,
        };
        index_block(&mut store, 1, 1, &[hash(5), hash(6)], params).unwrap();
        let (key, v) = store.chunks.pop_first().unwrap();
        store.chunks.insert((key.0, key.1, [0xee; 32]), v);
        assert!(matches!(
            index_block(&mut store, 1, 2, &[hash(7)], params),
            Err(StorageError::Corrupt { .. })
        ));
        // A directory whose run ids are spent.
        let mut dir = Directory {
            next_run: u64::MAX,
            ..Directory::default()
        };
        assert!(dir.new_run().is_err());
    }

    #[test]
    fn successors() {
        assert_eq!(successor(&[0; 32]).unwrap()[31], 1);
        let mut h = [0u8; 32];
        h[30] = 1;
        h[31] = 0xff;
        let s = successor(&h).unwrap();
        assert_eq!((s[30], s[31]), (2, 0));
        assert_eq!(successor(&[0xff; 32]), None);
    }
}
