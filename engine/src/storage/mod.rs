//! Storage: the interface through which everything reads and writes chain
//! state, and its one implementation ([`lmdb`]).
//!
//! Layered as reth layers it: typed records first ([`AccountRecord`],
//! [`Head`], plugin objects as [`ObjectWrite`]), then two providers as
//! traits:
//!
//! - [`StateView`]: a consistent snapshot of what is committed — every
//!   chain's head, accounts, plugin objects, blocks, receipts and the
//!   transaction index — as of one instant, and the state commitment at
//!   that instant (a block's new root, proofs, the audit). A block is
//!   executed against the snapshot of its parent; an RPC request answers
//!   from one snapshot. A commit after the snapshot was taken is invisible
//!   to it.
//! - [`Storage`]: opens snapshots and commits one block's writes
//!   ([`BlockWrite`]) atomically: after a crash the store holds the whole
//!   block or none of it.
//!
//! Only this module knows which store holds the data: [`open`] is the one
//! constructor, and nothing outside `storage` names LMDB.
//!
//! The state commitment is the twig log ([`twig`], chosen by issue 16's
//! spike): each chain's log of entries beside LMDB, whose meta LMDB
//! commits with each block's head (the commit point; see [`twig`]'s doc).
//! Accounts live only in the log (their value: id ‖ record), read through
//! its index at a snapshot's own block; a genesis appends them to it in
//! key order ([`Storage::load_genesis_accounts`]). Objects stay in LMDB
//! too, for prefix scans; the log holds them again as the entries it
//! commits to.
//!
//! Plugins (the BPK identity tree, nullifiers, centroids, SKUs, deals,
//! bids, policies, token records) keep their state as objects in
//! [`ObjectTable::State`], each under its own key prefix: the state log
//! commits to every object at key [`object_leaf`]`(key)` with its value,
//! beside the accounts (at [`account_leaf`]`(id)`, with their id and
//! records). Both are hashes under their own tags, so no account id a
//! sender picks can reach an object's key or the log's reserved keys. [`ObjectTable::Derived`] holds what
//! follows from committed state and is kept only to serve it fast (the
//! identity tree's inner nodes, the market's discovery index).

pub mod lmdb;
pub mod twig;
mod tx_index;

use std::path::Path;
use std::sync::Arc;

use crate::state::smt::SmtError;
use int_schemas::{AccountId, Hash32, PublicKeyBytes};
use twig::{Prepared, TwigMeta, TwigStoreError};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store's engine reported an error.
    #[error("store: {0}")]
    Backend(String),
    /// A stored value does not decode: the store is corrupt or foreign.
    #[error("corrupt {table} record: {what}")]
    Corrupt {
        /// Table holding the record.
        table: &'static str,
        /// What is wrong.
        what: String,
    },
    /// The state tree failed.
    #[error("state tree: {0}")]
    Smt(#[from] SmtError),
    /// The state log failed.
    #[error("state log: {0}")]
    State(#[from] TwigStoreError),
    /// The snapshot is older than the state log it would read: a block
    /// committed since it was taken.
    #[error(
        "chain {chain_id}: the snapshot's state is no longer the state log's (a block committed since)"
    )]
    StaleSnapshot {
        /// The chain.
        chain_id: u32,
    },
    /// The data dir was written by a release with another state format.
    #[error(
        "this data dir holds state format {found} ({what}); this node reads state format \
         {STATE_FORMAT} (accounts only in the twig log, beside LMDB): start from a new data dir, or run the release \
         that wrote it"
    )]
    Format {
        /// The format found.
        found: u8,
        /// What that format is.
        what: &'static str,
    },
    /// Creating the data directory failed.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
}

/// Threads that read a block's accounts and state entries at once where
/// the kernel gives no io_uring ring (with rings, one thread per core
/// keeps [`twig::log::RING_DEPTH`] reads in flight each, and a read from
/// the page cache costs no thread switch. Measured with `int bench
/// scale`, noisy: at 10⁷ accounts 55 800 → 77 700 tx/s in one alternated
/// pair of runs and no difference in a later pair, both while an account
/// read still took two calls; at 10⁸ after that fix 34 569 → 37 137
/// tx/s, one run each, `INT_IO_URING=0` against rings). Past the page cache
/// a read waits on the disk, not a core, so more readers than cores keep
/// the disk's queue full (an NVMe wants dozens). At 10⁸ accounts on the
/// development VM, 64 loaded a block's accounts in 113 ms where 16 took
/// 131 (`int bench scale`, one run each).
pub const READ_THREADS: usize = 64;

/// Items one reader thread takes at least (fewer are not worth a thread).
const READ_ITEMS_PER_THREAD_MIN: usize = 256;

/// The readers, started once: spawning them for every block cost more
/// than the reads at 10⁶ accounts, where every read hits the page cache.
/// `None` when the threads could not be started (reads then run on the
/// caller's thread).
fn read_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(READ_THREADS)
            .thread_name(|i| format!("int-read-{i}"))
            .build()
            .map_err(|e| tracing::warn!("no reader threads ({e}): reads run one at a time"))
            .ok()
    })
    .as_ref()
}

/// Reads `items` with `read`, in order: in up to [`READ_THREADS`] chunks
/// on the reader threads, or at once on the calling thread when they are
/// too few to share. From a worker of another rayon pool the chunks go to
/// scoped threads instead: a worker waiting on the reader pool would run
/// its own pool's jobs meanwhile, with the caller's locks held (a job
/// that takes the same lock behind a waiting writer would never return).
pub(crate) fn read_in_threads<I, T, E>(
    items: &[I],
    read: impl Fn(&[I]) -> Result<Vec<T>, E> + Sync,
) -> Result<Vec<T>, E>
where
    I: Sync,
    T: Send,
    E: Send,
{
    use rayon::prelude::*;
    let per = items
        .len()
        .div_ceil(READ_THREADS)
        .max(READ_ITEMS_PER_THREAD_MIN);
    if items.len() <= per {
        return read(items);
    }
    let pool = read_pool();
    let in_other_pool = rayon::current_thread_index().is_some()
        && pool.is_none_or(|p| p.current_thread_index().is_none());
    let parts: Vec<Vec<T>> = match pool {
        Some(pool) if !in_other_pool => pool.install(|| {
            items
                .par_chunks(per)
                .map(&read)
                .collect::<Result<Vec<Vec<T>>, E>>()
        })?,
        _ => return in_scoped_threads(items, per, &read),
    };
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part);
    }
    Ok(out)
}

/// Reads `items` with `read`, in order, in one part per core (of at least
/// `READ_ITEMS_PER_THREAD_MIN` items), the calling thread taking the
/// first, the others on scoped threads: for reads that keep many
/// requests in flight themselves (an io_uring ring each), where more
/// threads than cores would only wait.
pub(crate) fn read_in_parts<I, T, E>(
    items: &[I],
    read: impl Fn(&[I]) -> Result<Vec<T>, E> + Sync,
) -> Result<Vec<T>, E>
where
    I: Sync,
    T: Send,
    E: Send,
{
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let parts = items
        .len()
        .div_ceil(READ_ITEMS_PER_THREAD_MIN)
        .clamp(1, cores);
    if parts == 1 {
        return read(items);
    }
    in_scoped_threads(items, items.len().div_ceil(parts), &read)
}

/// `read` over `items` in chunks of `per`, in order: the first chunk on
/// the calling thread, each other on a scoped thread of its own; the
/// first error in chunk order, once every chunk is done.
fn in_scoped_threads<I, T, E>(
    items: &[I],
    per: usize,
    read: &(impl Fn(&[I]) -> Result<Vec<T>, E> + Sync),
) -> Result<Vec<T>, E>
where
    I: Sync,
    T: Send,
    E: Send,
{
    let mut chunks = items.chunks(per.max(1));
    let first = chunks.next().unwrap_or(&[]);
    std::thread::scope(|s| {
        let others: Vec<_> = chunks.map(|c| s.spawn(move || read(c))).collect();
        let mut out = read(first);
        for t in others {
            let part = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if let Ok(out) = &mut out {
                out.extend(part?);
            }
        }
        out
    })
}

/// The data dir's state format: 4, accounts only in the twig log (their
/// value: id ‖ record), LMDB beside it for blocks, objects and the head.
/// Refused on open: 1 (the sparse Merkle tree in LMDB's `smt` table), 2
/// (the twig log with accounts also in LMDB, keyed by id) and 3 (the same,
/// keyed by state key).
pub const STATE_FORMAT: u8 = 4;

/// Opens (creating if needed) the store in `dir`, for the node that
/// commits to it (one process per data dir).
pub fn open(dir: &Path) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(lmdb::LmdbStore::open(dir)?))
}

/// Opens the store in `dir` to read it, beside a node that may be writing
/// it: commits are refused.
pub fn open_read_only(dir: &Path) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(lmdb::LmdbStore::open_read_only(dir)?))
}

/// The committed store: snapshots to read, one atomic commit per block.
pub trait Storage: Send + Sync {
    /// A snapshot of everything committed now, read by one thread at a time
    /// (concurrent readers wait for each other): RPC requests, CLI reads,
    /// key lookups.
    fn snapshot(&self) -> Result<Arc<dyn StateView>, StorageError>;

    /// The same snapshot, readable by every worker of rayon's pool at once
    /// without waiting: block execution's loads and the state-root update.
    fn parallel_snapshot(&self) -> Result<Arc<dyn StateView>, StorageError>;

    /// Commits one block: accounts, state, objects, block, receipts, the
    /// transaction index and the head. Either all of it is durable or
    /// none; snapshots taken before see none of it. The state update must
    /// have been prepared on the chain's committed state.
    fn commit_block(&self, w: &BlockWrite<'_>) -> Result<(), StorageError>;

    /// Starts loading the genesis of a chain that has no head: whatever an
    /// earlier load left (interrupted, or dropped before its block) goes.
    fn begin_genesis(&self, chain_id: u32) -> Result<(), StorageError>;

    /// Loads accounts of a chain's genesis ahead of its genesis block, for
    /// populations no one block holds: after [`Storage::begin_genesis`],
    /// strictly ascending by [`account_leaf`], every call above the last.
    /// They are durable in the state log but belong to no head (no
    /// snapshot reads them): the chain's genesis block, committed next
    /// through [`Storage::commit_block`], prepares its state on them and
    /// commits them. A crash before it leaves no head (the log is cut back
    /// on open).
    /// `loaded` is how many accounts the caller loaded before: a load
    /// that does not continue the one in storage is refused.
    fn load_genesis_accounts(
        &self,
        chain_id: u32,
        loaded: u64,
        accounts: &[(AccountId, AccountRecord)],
    ) -> Result<(), StorageError>;

    /// Entries and pages per table and the file's high-water mark.
    fn stats(&self) -> Result<StoreStats, StorageError>;

    /// Flushes the data to disk (commits are durable already; this is for
    /// relaxed-durability modes).
    fn sync(&self) -> Result<(), StorageError>;

    /// Saves each open state log's memory beside it, so that the next
    /// open reads it instead of scanning the log: for a node that stops
    /// (a block committed after it makes it stale; a node killed reopens
    /// by the scan). Returns the bytes written.
    fn checkpoint(&self) -> Result<u64, StorageError>;
}

/// What [`StateView::scan`] calls for each key and value: `Ok(false)`
/// stops the walk.
pub type ScanFn<'f> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StorageError> + 'f;

/// Reads of committed state at one instant. Every method reads the same
/// version of the store, whatever commits in between.
pub trait StateView: Send + Sync {
    /// The head of a chain, or `None` before its genesis.
    fn head(&self, chain_id: u32) -> Result<Option<Head>, StorageError>;

    /// One account.
    fn account(&self, chain_id: u32, id: &AccountId)
    -> Result<Option<AccountRecord>, StorageError>;

    /// Many accounts, in the order of `ids` (read in parallel where the
    /// snapshot allows).
    fn accounts(
        &self,
        chain_id: u32,
        ids: &[AccountId],
    ) -> Result<Vec<Option<AccountRecord>>, StorageError> {
        ids.iter().map(|id| self.account(chain_id, id)).collect()
    }

    /// One plugin object.
    fn object(
        &self,
        chain_id: u32,
        table: ObjectTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError>;

    /// The first object whose key is `>= from` and starts with `prefix`
    /// (`from` must start with `prefix`): one seek. With keys that encode a
    /// number inverted, this finds the entry in force at a height or epoch.
    fn object_at_or_after(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        from: &[u8],
    ) -> Result<Option<KeyValue>, StorageError>;

    /// Calls `f` for every object of `table` whose key starts with
    /// `prefix`, in key order, until `f` returns `Ok(false)` or an error
    /// (returned). Callers use [`scan_prefix`](#method.scan_prefix), which
    /// takes the caller's error type. `f` runs while the snapshot's reader
    /// is held: it must not read the same snapshot (collect, then read).
    fn scan(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<(), StorageError>;

    /// Calls `f` for every account of a chain, in the state log's order
    /// (one sequential read of it), until it returns `false`. It holds the
    /// chain's state for reading throughout, so a commit waits for it: an
    /// audit's walk, not a request's. As for [`StateView::scan`], `f` must
    /// not read the same snapshot.
    fn scan_accounts(
        &self,
        chain_id: u32,
        f: &mut dyn FnMut(AccountId, AccountRecord) -> bool,
    ) -> Result<(), StorageError>;

    /// Plans a block's state writes (sorted by key, distinct; `None`
    /// deletes; see [`state_writes`]) on this snapshot's state of
    /// `chain_id` and computes the new root, writing nothing: the update
    /// [`Storage::commit_block`] takes. [`StorageError::StaleSnapshot`]
    /// when a block committed since the snapshot.
    fn prepare_state(
        &self,
        chain_id: u32,
        writes: &[(Hash32, Option<Vec<u8>>)],
    ) -> Result<StateUpdate, StorageError>;

    /// An inclusion proof of `key` (an [`account_leaf`] or an
    /// [`object_leaf`]),
    /// or an exclusion proof when absent, against this snapshot's state
    /// root of `chain_id` (checked by `state::twig_proof`).
    fn prove(&self, chain_id: u32, key: &Hash32) -> Result<Vec<u8>, StorageError>;

    /// The audit behind `int state`'s `root_ok`: rebuilds the state root
    /// from the state log's bytes at this snapshot (nothing taken from
    /// memory) and checks that its live entries are exactly the stored
    /// accounts and state objects. Returns the root and the number of
    /// accounts.
    fn audit_state(&self, chain_id: u32) -> Result<(Hash32, u64), StorageError>;

    /// A sealed block.
    fn block(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// The receipts of a block.
    fn receipts(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// Where an included transaction is (block height, index), by its hash
    /// (BLAKE3 of the body); `None` for one never included.
    fn tx_location(
        &self,
        chain_id: u32,
        tx_hash: &Hash32,
    ) -> Result<Option<(u64, u32)>, StorageError>;
}

impl dyn StateView + '_ {
    /// [`StateView::scan`] with the caller's error type: `f`'s error stops
    /// the walk and comes back as is, so a caller that decodes what it
    /// reads gets one error type back.
    pub fn scan_prefix<E: From<StorageError>>(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        let mut failed = None;
        self.scan(chain_id, table, prefix, &mut |k, v| match f(k, v) {
            Ok(more) => Ok(more),
            Err(e) => {
                failed = Some(e);
                Ok(false)
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Calls `f` for every object of a chain in `table`, in key order.
    pub fn for_each_object(
        &self,
        chain_id: u32,
        table: ObjectTable,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StorageError> {
        self.scan(chain_id, table, &[], &mut |k, v| {
            f(k, v);
            Ok(true)
        })
    }

    /// Calls `f` for every account of a chain, in the state log's order.
    pub fn for_each_account(
        &self,
        chain_id: u32,
        mut f: impl FnMut(AccountId, AccountRecord),
    ) -> Result<(), StorageError> {
        self.scan_accounts(chain_id, &mut |id, r| {
            f(id, r);
            true
        })
    }
}

/// The encoded size of an [`AccountRecord`].
pub const ACCOUNT_RECORD_BYTES: usize = 1 + 8 + 16 + 16 + 1 + 1 + 96 + 32;

/// One account as stored: consensus-critical, since the state tree commits
/// to `blake3` of these bytes. Fixed little-endian layout, version first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountRecord {
    /// Next expected nonce.
    pub nonce: u64,
    /// INT balance.
    pub int: u128,
    /// GAS balance.
    pub gas: u128,
    /// Registered public key (compressed), if any.
    pub public_key: Option<PublicKeyBytes>,
    /// Device kind (the wire enum's value).
    pub device_kind: u8,
    /// Hash of the device's off-chain metadata.
    pub metadata_hash: Hash32,
}

const ACCOUNT_RECORD_VERSION: u8 = 1;

impl AccountRecord {
    /// Encodes the record.
    pub fn encode(&self) -> [u8; ACCOUNT_RECORD_BYTES] {
        let mut out = [0u8; ACCOUNT_RECORD_BYTES];
        out[0] = ACCOUNT_RECORD_VERSION;
        out[1..9].copy_from_slice(&self.nonce.to_le_bytes());
        out[9..25].copy_from_slice(&self.int.to_le_bytes());
        out[25..41].copy_from_slice(&self.gas.to_le_bytes());
        out[41] = self.public_key.is_some() as u8;
        out[42] = self.device_kind;
        if let Some(pk) = &self.public_key {
            out[43..139].copy_from_slice(pk);
        }
        out[139..171].copy_from_slice(&self.metadata_hash);
        out
    }

    /// Decodes a record; an error when the bytes are not one.
    pub fn decode(b: &[u8]) -> Result<Self, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt {
            table: "accounts",
            what: what.to_string(),
        };
        if b.len() != ACCOUNT_RECORD_BYTES {
            return Err(corrupt("wrong length"));
        }
        if b[0] != ACCOUNT_RECORD_VERSION {
            return Err(corrupt("unknown version"));
        }
        let arr = |r: std::ops::Range<usize>| -> [u8; 16] {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[r]);
            a
        };
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&b[1..9]);
        let public_key = match b[41] {
            0 => None,
            1 => {
                let mut pk = [0u8; 96];
                pk.copy_from_slice(&b[43..139]);
                Some(pk)
            }
            _ => return Err(corrupt("bad key flag")),
        };
        let mut metadata_hash = [0u8; 32];
        metadata_hash.copy_from_slice(&b[139..171]);
        Ok(Self {
            nonce: u64::from_le_bytes(nonce),
            int: u128::from_le_bytes(arr(9..25)),
            gas: u128::from_le_bytes(arr(25..41)),
            public_key,
            device_kind: b[42],
            metadata_hash,
        })
    }

    /// The value the state log holds for account `id`, which the state
    /// root commits to: the id (so that a scan of the state names its
    /// accounts), then the record.
    pub fn state_value(&self, id: &AccountId) -> [u8; ACCOUNT_VALUE_BYTES] {
        let mut v = [0u8; ACCOUNT_VALUE_BYTES];
        v[..32].copy_from_slice(id);
        v[32..].copy_from_slice(&self.encode());
        v
    }

    /// The hash of [`AccountRecord::state_value`]: what a state proof of
    /// account `id` claims.
    pub fn state_hash(&self, id: &AccountId) -> Hash32 {
        *blake3::hash(&self.state_value(id)).as_bytes()
    }
}

/// The encoded size of an account's state value: id, then record.
pub const ACCOUNT_VALUE_BYTES: usize = 32 + ACCOUNT_RECORD_BYTES;

/// Splits an account's state value into its id and record.
fn split_account_value(v: &[u8]) -> Result<(AccountId, AccountRecord), StorageError> {
    let (Some(id), Some(rec)) = (v.get(..32), v.get(32..)) else {
        return Err(StorageError::Corrupt {
            table: "state log",
            what: format!("an account value of {} bytes", v.len()),
        });
    };
    let mut stored = [0u8; 32];
    stored.copy_from_slice(id);
    Ok((stored, AccountRecord::decode(rec)?))
}

/// Decodes the state value found at state key `key` (a scan's, which
/// knows no id): corrupt when it is not an account's or names an account
/// of another key.
pub fn decode_account_value(
    key: &Hash32,
    v: &[u8],
) -> Result<(AccountId, AccountRecord), StorageError> {
    let (id, rec) = split_account_value(v)?;
    if account_leaf(&id) != *key {
        return Err(StorageError::Corrupt {
            table: "state log",
            what: "an account value under another account's key".into(),
        });
    }
    Ok((id, rec))
}

/// The record of account `id` from the state value read at its key:
/// corrupt when the value names another account (no hash: the key was
/// hashed from `id` to find it).
pub fn account_of_value(id: &AccountId, v: &[u8]) -> Result<AccountRecord, StorageError> {
    let (stored, rec) = split_account_value(v)?;
    if stored != *id {
        return Err(StorageError::Corrupt {
            table: "state log",
            what: "an account value under another account's key".into(),
        });
    }
    Ok(rec)
}

/// The head of a chain: the last committed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Height of the last committed block.
    pub height: u64,
    /// Hash of its header.
    pub hash: Hash32,
    /// State root after it.
    pub state_root: Hash32,
    /// Number of accounts in the state.
    pub accounts: u64,
}

impl Head {
    pub(crate) fn encode(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        out[0..8].copy_from_slice(&self.height.to_le_bytes());
        out[8..40].copy_from_slice(&self.hash);
        out[40..72].copy_from_slice(&self.state_root);
        out[72..80].copy_from_slice(&self.accounts.to_le_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, StorageError> {
        if b.len() != 80 {
            return Err(StorageError::Corrupt {
                table: "meta",
                what: "head has the wrong length".into(),
            });
        }
        let mut h = Self::default();
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[0..8]);
        h.height = u64::from_le_bytes(u);
        h.hash.copy_from_slice(&b[8..40]);
        h.state_root.copy_from_slice(&b[40..72]);
        u.copy_from_slice(&b[72..80]);
        h.accounts = u64::from_le_bytes(u);
        Ok(h)
    }
}

/// Which plugin table a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectTable {
    /// Consensus state, covered by the state root.
    State,
    /// Recomputable data, not covered by the state root.
    Derived,
}

/// A key and its value, as read from a plugin table.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Longest plugin key (LMDB allows 511 bytes with the chain prefix).
pub const OBJECT_KEY_BYTES_MAX: usize = 128;

/// One plugin write: `value` `None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectWrite {
    /// Table.
    pub table: ObjectTable,
    /// Key, starting with the plugin's prefix; at most
    /// [`OBJECT_KEY_BYTES_MAX`] bytes.
    pub key: Vec<u8>,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// The state key of an account (see `state::twig_proof::account_key`).
pub use crate::state::twig_proof::account_key as account_leaf;

/// The state key of an object: `blake3("INT/obj/v1" ‖ key)`; accounts are
/// at [`account_leaf`], under another tag, so the two never collide.
pub fn object_leaf(key: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/obj/v1");
    h.update(key);
    *h.finalize().as_bytes()
}

/// A block's state changes, prepared on its parent's state
/// ([`StateView::prepare_state`]): the new state root, and what the
/// commit writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateUpdate {
    chain_id: u32,
    /// The state log's meta it was prepared on (`None`: before genesis).
    from: Option<TwigMeta>,
    prepared: Prepared,
}

impl StateUpdate {
    /// The state root after the block.
    pub fn root(&self) -> Hash32 {
        self.prepared.root()
    }
}

/// A block's state writes as the state log takes them, sorted by key:
/// each account at [`account_leaf`] of its id with its
/// [`AccountRecord::state_value`],
/// each state object at [`object_leaf`] of its key with its value
/// (`None`: deleted).
pub fn state_writes(
    accounts: &[(AccountId, AccountRecord)],
    objects: &[ObjectWrite],
) -> Vec<(Hash32, Option<Vec<u8>>)> {
    use rayon::prelude::*;
    let mut w: Vec<(Hash32, Option<Vec<u8>>)> = accounts
        .par_iter()
        .with_min_len(crate::PAR_ITEMS_MIN)
        .map(|(id, r)| (account_leaf(id), Some(r.state_value(id).to_vec())))
        .collect();
    w.extend(
        objects
            .iter()
            .filter(|o| o.table == ObjectTable::State)
            .map(|o| (object_leaf(&o.key), o.value.clone())),
    );
    w.par_sort_unstable_by_key(|a| a.0);
    w
}

/// Everything one block writes, applied in a single write transaction.
pub struct BlockWrite<'a> {
    /// Chain the block belongs to.
    pub chain_id: u32,
    /// Dirty accounts with their new records.
    pub accounts: &'a [(AccountId, AccountRecord)],
    /// The state update, prepared on the chain's committed state.
    pub state: &'a StateUpdate,
    /// Height of the block.
    pub height: u64,
    /// The sealed block.
    pub block: &'a [u8],
    /// Its receipts.
    pub receipts: &'a [u8],
    /// The BLAKE3 hashes of its transactions' bodies, in block order: the
    /// transaction index (hash → height, position) is written from them.
    pub tx_hashes: &'a [Hash32],
    /// The new head.
    pub head: Head,
    /// Plugin objects to write or delete (their state-tree leaves are in
    /// `nodes` already).
    pub objects: &'a [ObjectWrite],
}

/// Entries and pages of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// Table name.
    pub name: &'static str,
    /// Entries.
    pub entries: u64,
    /// B-tree depth.
    pub depth: u32,
    /// Branch pages.
    pub branch_pages: u64,
    /// Leaf pages.
    pub leaf_pages: u64,
    /// Overflow pages (values larger than a page).
    pub overflow_pages: u64,
}

/// What the store occupies, for operators and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Page size in bytes.
    pub page_size: u32,
    /// Highest page in use: the data file's high-water mark, in pages.
    pub last_page: u64,
    /// Per table.
    pub tables: Vec<TableStats>,
}

/// Recomputes a chain's state root from the state log's bytes and checks
/// it holds exactly the stored accounts and objects
/// ([`StateView::audit_state`]): the audit behind `int state`'s
/// `root_ok`. Returns the root and the number of accounts.
pub fn recompute_root(view: &dyn StateView, chain_id: u32) -> Result<(Hash32, u64), StorageError> {
    view.audit_state(chain_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_record_round_trips() {
        let r = AccountRecord {
            nonce: 7,
            int: u128::MAX,
            gas: 12,
            public_key: Some([3; 96]),
            device_kind: 4,
            metadata_hash: [9; 32],
        };
        assert_eq!(AccountRecord::decode(&r.encode()).unwrap(), r);
        let empty = AccountRecord::default();
        assert_eq!(AccountRecord::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn account_values_name_their_account() {
        let rec = AccountRecord {
            int: 7,
            ..Default::default()
        };
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let v = rec.state_value(&a);
        assert_eq!(account_of_value(&a, &v).unwrap(), rec);
        assert_eq!(
            decode_account_value(&account_leaf(&a), &v).unwrap(),
            (a, rec)
        );
        assert!(account_of_value(&b, &v).is_err(), "another account's value");
        assert!(decode_account_value(&account_leaf(&b), &v).is_err());
        assert!(account_of_value(&a, &v[..31]).is_err(), "short");
        assert!(
            account_of_value(&a, &v[..v.len() - 1]).is_err(),
            "cut record"
        );
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(AccountRecord::decode(&[]).is_err());
        let mut b = AccountRecord::default().encode();
        b[0] = 9;
        assert!(AccountRecord::decode(&b).is_err());
        let mut b = AccountRecord::default().encode();
        b[41] = 2;
        assert!(AccountRecord::decode(&b).is_err());
        assert!(Head::decode(&[1, 2, 3]).is_err());
    }
}
