//! The LMDB implementation of [`Storage`]: the only code that knows LMDB
//! holds the state.
//!
//! Layout (every key starts with the chain id, 4 bytes big-endian, so the
//! relay chain and parallel chains share one environment):
//!
//! | table      | key                         | value                              |
//! |------------|-----------------------------|------------------------------------|
//! | `blocks`   | chain ‖ height (u64 BE)     | sealed block (FlatBuffers)         |
//! | `receipts` | chain ‖ height (u64 BE)     | block receipts (FlatBuffers)       |
//! | `meta`     | chain ‖ name                | head, state log meta, parameters   |
//! | `objects`  | chain ‖ plugin key          | plugin state the state root covers |
//! | `derived`  | chain ‖ plugin key          | plugin data recomputable from state|
//! | `txruns`   | chain ‖ run (u64 BE) ‖ hash | sorted (hash, height, index) chunk |
//! | `txs`      | chain ‖ transaction hash    | height (u64 LE) ‖ index (u32 LE)   |
//!
//! The state is each chain's twig log ([`super::twig`]) under
//! `state/chain-N/`: accounts live there only (value: id ‖ record), state
//! objects there and in `objects` (for prefix scans). A block is committed
//! by appending its state to the log (synced), then one LMDB write
//! transaction holding the objects, the block, its receipts, the index,
//! the new head and the log's new meta: that transaction is the commit
//! point. After a crash LMDB holds the whole block or none of it, and the
//! log is cut back to the meta LMDB holds when it is opened. `meta` also
//! holds the data dir's state format ([`super::STATE_FORMAT`]): a data dir
//! with heads and no format (the sparse Merkle tree of format 1) is
//! refused, and so are formats 2 and 3 (accounts in LMDB too).
//!
//! The transaction index is sorted runs merged a step a block
//! ([`super::tx_index`]): `txruns` holds their chunks, keyed by each
//! chunk's last hash, and `meta` each chain's directory of runs. `txs` is
//! the index releases before it kept as one B-tree (random puts, a page
//! copied for each once the tree outgrew a block): it is only read, so
//! that a data dir they wrote still finds its transactions.
//!
//! Accounts left LMDB because their random page writes were most of a
//! block's time (at 10⁶ accounts, 210 of a 217 ms commit, measured by
//! `int bench scale`): the log appends them, and its index finds them.
//!
//! A snapshot is one LMDB read transaction (MVCC: commits after it began
//! are invisible to it), or one per rayon worker for a parallel snapshot,
//! and each chain's state log [`Version`] of the same instant: account
//! reads at a version are served by the offsets the blocks since it
//! overwrote, and the log keeps the segments they are in. LMDB allows a
//! read transaction one user at a time, so each sits behind a mutex and a
//! worker uses its own; a snapshot begins under the read side of a lock
//! whose write side each commit holds while LMDB's commit and the log's
//! memory change, so its transactions and versions all see the same block.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags,
};

use super::twig::{TwigMeta, TwigStore, Version};
use super::tx_index;
use super::{
    AccountRecord, BlockWrite, Head, KeyValue, OBJECT_KEY_BYTES_MAX, ObjectTable, STATE_FORMAT,
    ScanFn, StateUpdate, StateView, Storage, StorageError, StoreStats, TableStats, account_leaf,
    account_of_value, decode_account_value, object_leaf,
};
use int_schemas::{AccountId, Hash32};

impl From<lmdb::Error> for StorageError {
    fn from(e: lmdb::Error) -> Self {
        StorageError::Backend(format!("lmdb: {e}"))
    }
}

/// Virtual size of the memory map. LMDB files are sparse: this reserves
/// address space, not disk. 1 TiB covers about 2·10⁹ accounts.
pub const MAP_SIZE_BYTES: usize = 1 << 40;

/// Most read transactions open at once (LMDB's reader table): a parallel
/// snapshot takes one per rayon worker plus one; every other snapshot
/// one.
/// At the bound, beginning a snapshot fails with LMDB's `MDB_READERS_FULL`
/// (an error to the caller, never a wait).
pub const READERS_MAX: u32 = 256;

/// The environment and its tables.
struct Env {
    env: Environment,
    blocks: Database,
    receipts: Database,
    meta: Database,
    objects: Database,
    derived: Database,
    /// The transaction index's chunks ([`super::tx_index`]): where each
    /// included transaction is, for receipts by hash. Derived from the
    /// receipts, not in the root.
    txruns: Database,
    /// The transaction index as releases before `txruns` wrote it: read,
    /// never written.
    txs: Database,
    /// Held for writing while a commit becomes visible (LMDB's commit and
    /// the state log's memory), for reading while a snapshot begins its
    /// transactions and takes the state logs' versions. A commit takes it
    /// after its state log's lock; nothing takes a log's lock under it.
    commit_lock: RwLock<()>,
    /// Where the chains' state logs are.
    state_dir: PathBuf,
    /// Each chain's state log, opened on first use. Never held while
    /// waiting for a log's lock (see [`Env::twig`]).
    twigs: Mutex<HashMap<u32, OpenLog>>,
    /// Held while a state log is opened (one writer per log file).
    open_lock: Mutex<()>,
    /// Whether the state logs are opened read-only (a reader beside the
    /// node).
    read_only_state: bool,
}

/// An open state log and its current version, which snapshots take
/// without the log's lock (a commit holds that lock while it waits for the
/// commit lock, under which snapshots begin).
struct OpenLog {
    store: Arc<RwLock<TwigStore>>,
    current: Arc<Mutex<Arc<Version>>>,
}

/// The LMDB store: one environment for every chain.
pub struct LmdbStore {
    env: Arc<Env>,
}

fn object_key(chain_id: u32, key: &[u8]) -> Vec<u8> {
    assert!(key.len() <= OBJECT_KEY_BYTES_MAX, "object key too long");
    let mut k = Vec::with_capacity(4 + key.len());
    k.extend_from_slice(&chain_id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn chain_key<const N: usize>(chain_id: u32, rest: &[u8]) -> [u8; N] {
    assert_eq!(N, 4 + rest.len());
    let mut k = [0u8; N];
    k[..4].copy_from_slice(&chain_id.to_be_bytes());
    k[4..].copy_from_slice(rest);
    k
}

fn height_key(chain_id: u32, height: u64) -> [u8; 12] {
    chain_key(chain_id, &height.to_be_bytes())
}

fn head_key(chain_id: u32) -> [u8; 8] {
    chain_key(chain_id, b"head")
}

fn twig_meta_key(chain_id: u32) -> [u8; 8] {
    chain_key(chain_id, b"twig")
}

/// The data dir's state format, in `meta`.
const STATE_FORMAT_KEY: &[u8] = b"state_format";

/// Whether a state log is at `at`: the meta committed with the snapshot's
/// head, or (`None`) nothing committed yet.
fn state_at(store: &TwigStore, at: Option<&TwigMeta>) -> bool {
    match at {
        Some(m) => store.meta() == m,
        // Nothing committed: an empty log, or a genesis being loaded.
        None => store.is_initial() || store.is_loading(),
    }
}

fn twig_meta<T: Transaction>(
    txn: &T,
    meta: Database,
    chain_id: u32,
) -> Result<Option<TwigMeta>, StorageError> {
    Ok(get_opt(txn, meta, &twig_meta_key(chain_id))?
        .map(TwigMeta::decode)
        .transpose()?)
}

fn get_opt<'t, T: Transaction>(
    txn: &'t T,
    db: Database,
    key: &[u8],
) -> Result<Option<&'t [u8]>, StorageError> {
    match txn.get(db, &key) {
        Ok(v) => Ok(Some(v)),
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Env {
    fn state_dir_of(&self, chain_id: u32) -> PathBuf {
        self.state_dir.join(format!("chain-{chain_id}"))
    }

    /// A chain's state log, opened on first use at the meta LMDB holds
    /// now (never an older snapshot's: the writer cuts what lies past the
    /// meta it opens at). When another process writes the log, it is
    /// opened read-only, and reopened at `at` when it is not there.
    fn twig(
        &self,
        chain_id: u32,
        at: Option<&TwigMeta>,
    ) -> Result<Arc<RwLock<TwigStore>>, StorageError> {
        // The map is never held while a log's lock is awaited: a commit
        // holds its log's lock while it waits for the commit lock, under
        // which a snapshot takes the map.
        let open = |map: &Mutex<HashMap<u32, OpenLog>>| {
            map.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&chain_id)
                .map(|o| o.store.clone())
        };
        // A store a panic left half-updated is not used again: it is
        // reopened from LMDB's meta below.
        let usable = |t: &Arc<RwLock<TwigStore>>| {
            !t.is_poisoned() && {
                let g = t.read().unwrap_or_else(PoisonError::into_inner);
                g.is_writable() || state_at(&g, at)
            }
        };
        if let Some(t) = open(&self.twigs)
            && usable(&t)
        {
            return Ok(t);
        }
        let _opening = self
            .open_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have opened it meanwhile.
        if let Some(t) = open(&self.twigs)
            && usable(&t)
        {
            return Ok(t);
        }
        self.twigs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&chain_id);
        let latest = {
            let txn = self.env.begin_ro_txn()?;
            twig_meta(&txn, self.meta, chain_id)?
        };
        let dir = self.state_dir_of(chain_id);
        let store = if self.read_only_state {
            match at.or(latest.as_ref()) {
                Some(m) => TwigStore::open_read_only(&dir, m)?,
                None => {
                    return Err(StorageError::Corrupt {
                        table: "meta",
                        what: format!("chain {chain_id} has no committed state to read"),
                    });
                }
            }
        } else {
            TwigStore::open(&dir, latest.as_ref())?
        };
        let current = store.version_handle();
        let t = Arc::new(RwLock::new(store));
        self.twigs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                chain_id,
                OpenLog {
                    store: t.clone(),
                    current,
                },
            );
        Ok(t)
    }

    fn table(&self, t: ObjectTable) -> Database {
        match t {
            ObjectTable::State => self.objects,
            ObjectTable::Derived => self.derived,
        }
    }
}

impl LmdbStore {
    /// Opens (creating if needed) the store in `dir` for the node that
    /// commits to it: each chain's state log is opened for writing, and a
    /// log another process writes is an error, not a silent read-only open.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_as(dir, false)
    }

    /// Opens the store in `dir` to read it beside the node that writes it
    /// (`int state`, `int market`): the state logs are opened read-only at
    /// the metas LMDB holds, never cut, and commits are refused.
    pub fn open_read_only(dir: &Path) -> Result<Self, StorageError> {
        Self::open_as(dir, true)
    }

    fn open_as(dir: &Path, read_only_state: bool) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        // NO_TLS: read transactions are not bound to the thread that began
        // them, so a snapshot can move between threads and a parallel one
        // keeps one per worker. NO_READAHEAD: reads are random (accounts
        // by hashed key); past the page cache, readahead read 128 KiB per
        // 4 KiB page wanted (measured at 10⁸ accounts by `int bench scale`).
        // Not WRITE_MAP: it saved ~12% of commit time in `int bench tps`, but
        // it grows data.mdb to the whole map size (1 TiB apparent, sparse),
        // which surprises operators and tools that copy files.
        let env = Environment::new()
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE_BYTES)
            .set_max_readers(READERS_MAX)
            .set_flags(EnvironmentFlags::NO_TLS | EnvironmentFlags::NO_READAHEAD)
            .open(dir)?;
        let open = |name| env.create_db(Some(name), DatabaseFlags::empty());
        let env = Env {
            blocks: open("blocks")?,
            receipts: open("receipts")?,
            meta: open("meta")?,
            objects: open("objects")?,
            derived: open("derived")?,
            txruns: open("txruns")?,
            txs: open("txs")?,
            commit_lock: RwLock::new(()),
            state_dir: dir.join("state"),
            twigs: Mutex::new(HashMap::new()),
            open_lock: Mutex::new(()),
            read_only_state,
            env,
        };
        check_format(&env)?;
        Ok(Self { env: Arc::new(env) })
    }

    fn snapshot_of(&self, readers: usize) -> Result<LmdbSnapshot, StorageError> {
        assert!(readers >= 1);
        let _consistent = self
            .env
            .commit_lock
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let txns = (0..readers)
            .map(|_| {
                let txn = self.env.env.begin_ro_txn()?;
                // SAFETY: the transaction borrows the environment, which the
                // snapshot keeps alive through its `Arc<Env>` (declared after
                // `txns`, so dropped after them). `RoTransaction` holds only a
                // raw pointer to LMDB's transaction, so moving it is fine.
                let txn: lmdb::RoTransaction<'static> = unsafe { std::mem::transmute(txn) };
                Ok(Mutex::new(SendRo(txn)))
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        // The open state logs' versions, under the same lock as the
        // transactions: each one is at the meta they read, unless a
        // genesis is loading (no meta yet) or a reader's log was opened at
        // another snapshot's; those are looked up on first use.
        let mut states = HashMap::new();
        let open: Vec<(u32, Arc<RwLock<TwigStore>>, Arc<Version>)> = self
            .env
            .twigs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(c, o)| {
                let v = o
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                (*c, o.store.clone(), v)
            })
            .collect();
        if let Some(first) = txns.first() {
            let txn = first.lock().unwrap_or_else(PoisonError::into_inner);
            for (chain_id, twig, v) in open {
                if twig_meta(&txn.0, self.env.meta, chain_id)?.as_ref() == Some(v.meta()) {
                    states.insert(chain_id, Some((Arc::downgrade(&twig), v)));
                }
            }
        }
        Ok(LmdbSnapshot {
            txns,
            states: Mutex::new(states),
            env: self.env.clone(),
        })
    }
}

/// Refuses a data dir of another state format; marks a new one.
fn check_format(e: &Env) -> Result<(), StorageError> {
    let (format, heads) = {
        let txn = e.env.begin_ro_txn()?;
        let format = get_opt(&txn, e.meta, STATE_FORMAT_KEY)?.map(<[u8]>::to_vec);
        let mut cur = txn.open_ro_cursor(e.meta)?;
        let mut heads = false;
        for item in cur.iter_start() {
            let (k, _) = item?;
            heads |= k.len() == 8 && k.ends_with(b"head");
        }
        (format, heads)
    };
    match (format.as_deref(), heads) {
        (Some([f]), _) if *f == STATE_FORMAT => Ok(()),
        (None, false) => {
            let mut txn = e.env.begin_rw_txn()?;
            txn.put(
                e.meta,
                &STATE_FORMAT_KEY,
                &[STATE_FORMAT],
                WriteFlags::empty(),
            )?;
            txn.commit()?;
            Ok(())
        }
        (None, true) => Err(StorageError::Format {
            found: 1,
            what: "a sparse Merkle tree in LMDB",
        }),
        (Some([2]), _) => Err(StorageError::Format {
            found: 2,
            what: "a twig log beside LMDB, accounts keyed by id",
        }),
        (Some([3]), _) => Err(StorageError::Format {
            found: 3,
            what: "a twig log beside LMDB, accounts in LMDB too",
        }),
        (Some(other), _) => Err(StorageError::Format {
            found: other.first().copied().unwrap_or(0),
            what: "unknown to this release",
        }),
    }
}

impl Storage for LmdbStore {
    fn snapshot(&self) -> Result<Arc<dyn StateView>, StorageError> {
        Ok(Arc::new(self.snapshot_of(1)?))
    }

    fn parallel_snapshot(&self) -> Result<Arc<dyn StateView>, StorageError> {
        Ok(Arc::new(
            self.snapshot_of(rayon::current_num_threads() + 1)?,
        ))
    }

    fn commit_block(&self, w: &BlockWrite<'_>) -> Result<(), StorageError> {
        let e = &*self.env;
        if w.state.chain_id != w.chain_id {
            return Err(StorageError::Backend(format!(
                "a state update of chain {} in a block of chain {}",
                w.state.chain_id, w.chain_id
            )));
        }
        // The state log first (appended and synced past its committed
        // tail), then LMDB with the log's new meta: the commit point; then
        // the log's memory. Snapshots begin before or after all three.
        let twig = e.twig(w.chain_id, w.state.from.as_ref())?;
        let mut state = twig.write().unwrap_or_else(PoisonError::into_inner);
        if !state_at(&state, w.state.from.as_ref()) {
            return Err(StorageError::StaleSnapshot {
                chain_id: w.chain_id,
            });
        }
        // The log's append and sync on a second thread while this one
        // puts the block into LMDB's transaction (LMDB's writer stays on
        // the thread that began it); the commit waits for both.
        let (written, txn) = std::thread::scope(|s| {
            let log = &mut *state;
            let writing = s.spawn(move || log.write(&w.state.prepared));
            let stage = || {
                let mut txn = e.env.begin_rw_txn()?;
                // In key order: neighbours share their B-tree path and pages.
                type Put<'v> = (Database, Vec<u8>, Option<&'v Vec<u8>>);
                let mut objects: Vec<Put<'_>> = w
                    .objects
                    .iter()
                    .map(|o| {
                        (
                            e.table(o.table),
                            object_key(w.chain_id, &o.key),
                            o.value.as_ref(),
                        )
                    })
                    .collect();
                objects.sort_unstable_by(|a, b| a.1.cmp(&b.1));
                for (db, k, v) in &objects {
                    match v {
                        Some(v) => txn.put(*db, k, v, WriteFlags::empty())?,
                        None => match txn.del(*db, k, None) {
                            Ok(()) | Err(lmdb::Error::NotFound) => {}
                            Err(err) => return Err(err.into()),
                        },
                    }
                }
                let hk = height_key(w.chain_id, w.height);
                tx_index::index_block(
                    &mut TxRuns {
                        txn: &mut txn,
                        meta: e.meta,
                        runs: e.txruns,
                    },
                    w.chain_id,
                    w.height,
                    w.tx_hashes,
                    tx_index::Params::NODE,
                )?;
                txn.put(e.blocks, &hk, &w.block, WriteFlags::empty())?;
                txn.put(e.receipts, &hk, &w.receipts, WriteFlags::empty())?;
                txn.put(
                    e.meta,
                    &head_key(w.chain_id),
                    &w.head.encode(),
                    WriteFlags::empty(),
                )?;
                Ok::<_, StorageError>(txn)
            };
            let txn = stage();
            let written = writing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (written, txn)
        });
        let written = written?;
        crate::fault::point("state_log_synced");
        let mut txn = txn?;
        txn.put(
            e.meta,
            &twig_meta_key(w.chain_id),
            &written.meta().encode(),
            WriteFlags::empty(),
        )?;
        // Under the commit lock (taken after the log's, never before):
        // LMDB's commit and the log's memory change together for
        // snapshots, which begin under its read side.
        let _visible = e
            .commit_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // The log's memory is updated on a second thread while LMDB
        // commits (its pages written and synced): nothing reads either
        // until both are done, under the two locks held here.
        let (committed, applied) = std::thread::scope(|s| {
            let log = &mut *state;
            let applying = s.spawn(move || log.apply(&w.state.prepared, written));
            let committed = txn.commit();
            if committed.is_ok() {
                crate::fault::point("lmdb_committed");
            }
            let applied = applying
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (committed, applied)
        });
        // A failure to update the log's memory, or a commit that failed
        // after the memory moved on, drops the store, which reopens from
        // the meta LMDB holds.
        let reopen = |why: String| {
            tracing::warn!(chain_id = w.chain_id, "{why}; reopening the state log");
            e.twigs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&w.chain_id);
        };
        if let Err(err) = committed {
            drop(state);
            reopen(format!("LMDB's commit failed ({err})"));
            return Err(err.into());
        }
        // The block is durable now: nothing after this point may report
        // it as not committed.
        if let Err(err) = applied {
            drop(state);
            reopen(format!(
                "state log memory not updated after a commit ({err})"
            ));
        }
        Ok(())
    }

    fn begin_genesis(&self, chain_id: u32) -> Result<(), StorageError> {
        let e = &*self.env;
        if e.read_only_state {
            return Err(StorageError::Backend(
                "a read-only store loads nothing".into(),
            ));
        }
        {
            let txn = e.env.begin_ro_txn()?;
            if get_opt(&txn, e.meta, &head_key(chain_id))?.is_some() {
                return Err(StorageError::Backend(format!(
                    "chain {chain_id} has a genesis already"
                )));
            }
        }
        // A load begun before (in this process or one that died) is
        // dropped: the log reopens at its committed, empty state.
        e.twigs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&chain_id);
        let twig = e.twig(chain_id, None)?;
        let state = twig.read().unwrap_or_else(PoisonError::into_inner);
        if !state.is_initial() {
            return Err(StorageError::Corrupt {
                table: "meta",
                what: format!("chain {chain_id} has no head but a state log"),
            });
        }
        Ok(())
    }

    fn load_genesis_accounts(
        &self,
        chain_id: u32,
        loaded: u64,
        accounts: &[(AccountId, AccountRecord)],
    ) -> Result<(), StorageError> {
        use rayon::prelude::*;
        let e = &*self.env;
        let twig = e.twig(chain_id, None)?;
        let mut state = twig.write().unwrap_or_else(PoisonError::into_inner);
        if !state.is_initial() && !state.is_loading() {
            return Err(StorageError::Backend(format!(
                "chain {chain_id} has a genesis already"
            )));
        }
        if state.len() != loaded {
            // The log was reset (a failure reopened it) or another load
            // ran: this one cannot continue.
            return Err(StorageError::Backend(format!(
                "chain {chain_id}: a genesis load continuing {loaded} accounts finds {}",
                state.len()
            )));
        }
        let entries: Vec<(Hash32, Vec<u8>)> = accounts
            .par_iter()
            .map(|(id, rec)| (account_leaf(id), rec.state_value(id).to_vec()))
            .collect();
        if let Err(err) = state.load(entries) {
            drop(state);
            e.twigs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&chain_id);
            return Err(err.into());
        }
        crate::fault::point("genesis_chunk_loaded");
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        let e = &*self.env;
        let txn = e.env.begin_ro_txn()?;
        let tables = [
            ("blocks", e.blocks),
            ("receipts", e.receipts),
            ("meta", e.meta),
            ("objects", e.objects),
            ("derived", e.derived),
            ("txruns", e.txruns),
            ("txs", e.txs),
        ]
        .into_iter()
        .map(|(name, db)| {
            let st = txn.stat(db)?;
            Ok(TableStats {
                name,
                entries: st.entries() as u64,
                depth: st.depth(),
                branch_pages: st.branch_pages() as u64,
                leaf_pages: st.leaf_pages() as u64,
                overflow_pages: st.overflow_pages() as u64,
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
        let info = e.env.info()?;
        Ok(StoreStats {
            page_size: e.env.stat()?.page_size(),
            last_page: info.last_pgno() as u64,
            tables,
        })
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(self.env.env.sync(true)?)
    }

    fn checkpoint(&self) -> Result<u64, StorageError> {
        let open: Vec<Arc<RwLock<TwigStore>>> = self
            .env
            .twigs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|o| o.store.clone())
            .collect();
        let mut bytes = 0;
        for t in open {
            let g = t.read().unwrap_or_else(PoisonError::into_inner);
            if g.is_writable() && !g.is_loading() {
                bytes += g.save_checkpoint()?;
            }
        }
        Ok(bytes)
    }
}

/// The transaction index's store ([`tx_index::RunRead`], and
/// [`tx_index::RunWrite`] in a write transaction): its directories in
/// `meta`, its chunks in `txruns`.
struct TxRuns<T> {
    txn: T,
    meta: Database,
    runs: Database,
}

fn tx_directory_key(chain_id: u32) -> [u8; 8] {
    chain_key(chain_id, b"txix")
}

fn tx_chunk_key(chain_id: u32, run: u64, last: &Hash32) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..4].copy_from_slice(&chain_id.to_be_bytes());
    k[4..12].copy_from_slice(&run.to_be_bytes());
    k[12..].copy_from_slice(last);
    k
}

impl<T: std::ops::Deref> tx_index::RunRead for TxRuns<T>
where
    T::Target: Transaction,
{
    fn directory(&self, chain_id: u32) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(get_opt(&*self.txn, self.meta, &tx_directory_key(chain_id))?.map(<[u8]>::to_vec))
    }

    fn with_chunk_from<R>(
        &self,
        chain_id: u32,
        run: u64,
        from: &Hash32,
        f: impl FnOnce(&Hash32, &[u8]) -> R,
    ) -> Result<Option<R>, StorageError> {
        let mut cur = self.txn.open_ro_cursor(self.runs)?;
        let Some(item) = cur.iter_from(tx_chunk_key(chain_id, run, from)).next() else {
            return Ok(None);
        };
        let (k, v) = item?;
        // The first key at or after `from` may be another run's.
        let prefix = &tx_chunk_key(chain_id, run, &[0; 32])[..12];
        let Some(last) = k
            .strip_prefix(prefix)
            .and_then(|l| Hash32::try_from(l).ok())
        else {
            return Ok(None);
        };
        Ok(Some(f(&last, v)))
    }
}

impl tx_index::RunWrite for TxRuns<&mut lmdb::RwTransaction<'_>> {
    fn put_directory(&mut self, chain_id: u32, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(self.txn.put(
            self.meta,
            &tx_directory_key(chain_id),
            &bytes,
            WriteFlags::empty(),
        )?)
    }

    fn put_chunk(
        &mut self,
        chain_id: u32,
        run: u64,
        last: &Hash32,
        entries: &[u8],
    ) -> Result<(), StorageError> {
        // A chunk is written once: a key already there is a directory
        // that reused a run id.
        match self.txn.put(
            self.runs,
            &tx_chunk_key(chain_id, run, last),
            &entries,
            WriteFlags::NO_OVERWRITE,
        ) {
            Ok(()) => Ok(()),
            Err(lmdb::Error::KeyExist) => Err(StorageError::Corrupt {
                table: "txruns",
                what: format!("chunk of run {run} written twice"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn delete_chunk(&mut self, chain_id: u32, run: u64, last: &Hash32) -> Result<(), StorageError> {
        Ok(self
            .txn
            .del(self.runs, &tx_chunk_key(chain_id, run, last), None)?)
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A read transaction that may move between threads. Sound because the
/// environment is opened with `MDB_NOTLS`, which unbinds read transactions
/// from their thread; a `Mutex` keeps each one to one user at a time.
struct SendRo(lmdb::RoTransaction<'static>);
// SAFETY: see the type's comment: MDB_NOTLS and exclusive use via Mutex.
unsafe impl Send for SendRo {}

/// A chain's state log and the version of it a snapshot reads. The log
/// is not kept open by snapshots: one dropped (to be reopened after a
/// failure) makes theirs stale.
type ChainState = (Weak<RwLock<TwigStore>>, Arc<Version>);

/// A snapshot: one read transaction, or one per worker plus one for
/// other threads, all of the same version, and the state logs' versions
/// of that instant.
struct LmdbSnapshot {
    // Declared before `env`: the transactions end before the environment
    // they borrow can be dropped.
    txns: Vec<Mutex<SendRo>>,
    /// Each chain's state, `None` before its genesis: taken with the
    /// transactions for the logs open then, on first use for the others.
    states: Mutex<HashMap<u32, Option<ChainState>>>,
    env: Arc<Env>,
}

impl LmdbSnapshot {
    /// Runs `f` with this thread's transaction: a rayon worker's own one
    /// when the snapshot has one per worker, the first otherwise.
    fn with<T>(&self, f: impl FnOnce(&lmdb::RoTransaction<'static>) -> T) -> T {
        let slot = rayon::current_thread_index()
            .map(|i| i + 1)
            .filter(|&i| i < self.txns.len())
            .unwrap_or(0);
        let guard = self.txns[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&guard.0)
    }

    fn get(&self, db: Database, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.with(|txn| Ok(get_opt(txn, db, key)?.map(<[u8]>::to_vec)))
    }

    /// `chain_id`'s state log at this snapshot, `None` before its
    /// genesis; [`StorageError::StaleSnapshot`] when it moved on before
    /// this snapshot first read it, or was reopened since.
    fn state(&self, chain_id: u32) -> Result<Option<ChainState>, StorageError> {
        let cached = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&chain_id)
            .cloned();
        if let Some(state) = cached {
            return Ok(state);
        }
        let state = match self.with(|txn| twig_meta(txn, self.env.meta, chain_id))? {
            None => None,
            Some(at) => {
                let twig = self.env.twig(chain_id, Some(&at))?;
                let g = twig.read().unwrap_or_else(PoisonError::into_inner);
                if g.meta() != &at {
                    return Err(StorageError::StaleSnapshot { chain_id });
                }
                Some((Arc::downgrade(&twig), g.version()))
            }
        };
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(chain_id, state.clone());
        Ok(state)
    }

    /// Runs `f` on `chain_id`'s state log and this snapshot's version of
    /// it; `None` before the chain's genesis.
    fn with_state<T>(
        &self,
        chain_id: u32,
        f: impl FnOnce(&TwigStore, &Version) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        let Some((twig, version)) = self.state(chain_id)? else {
            return Ok(None);
        };
        let twig = twig
            .upgrade()
            .ok_or(StorageError::StaleSnapshot { chain_id })?;
        let g = twig.read().unwrap_or_else(PoisonError::into_inner);
        f(&g, &version).map(Some)
    }
}

impl StateView for LmdbSnapshot {
    fn head(&self, chain_id: u32) -> Result<Option<Head>, StorageError> {
        self.with(|txn| {
            get_opt(txn, self.env.meta, &head_key(chain_id))?
                .map(Head::decode)
                .transpose()
        })
    }

    fn account(
        &self,
        chain_id: u32,
        id: &AccountId,
    ) -> Result<Option<AccountRecord>, StorageError> {
        Ok(self
            .accounts(chain_id, std::slice::from_ref(id))?
            .pop()
            .flatten())
    }

    fn accounts(
        &self,
        chain_id: u32,
        ids: &[AccountId],
    ) -> Result<Vec<Option<AccountRecord>>, StorageError> {
        use rayon::prelude::*;
        let keys: Vec<Hash32> = ids
            .par_iter()
            .with_min_len(crate::PAR_ITEMS_MIN)
            .map(account_leaf)
            .collect();
        let values = self.with_state(chain_id, |log, at| Ok(log.values_at(at, &keys)?))?;
        let Some(values) = values else {
            return Ok(vec![None; ids.len()]);
        };
        ids.par_iter()
            .with_min_len(crate::PAR_ITEMS_MIN)
            .zip(values)
            .map(|(id, v)| v.map(|v| account_of_value(id, &v)).transpose())
            .collect()
    }

    fn object(
        &self,
        chain_id: u32,
        table: ObjectTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(self.env.table(table), &object_key(chain_id, key))
    }

    fn object_at_or_after(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        from: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        assert!(from.starts_with(prefix));
        self.with(|txn| {
            let mut cur = txn.open_ro_cursor(self.env.table(table))?;
            let full_prefix = object_key(chain_id, prefix);
            if let Some(item) = cur.iter_from(object_key(chain_id, from)).next() {
                let (k, v) = item?;
                if k.starts_with(&full_prefix) {
                    return Ok(Some((k[4..].to_vec(), v.to_vec())));
                }
            }
            Ok(None)
        })
    }

    fn scan(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<(), StorageError> {
        self.with(|txn| {
            let mut cur = txn.open_ro_cursor(self.env.table(table))?;
            let full_prefix = object_key(chain_id, prefix);
            for item in cur.iter_from(&full_prefix) {
                let (k, v) = item?;
                if !k.starts_with(&full_prefix) || !f(&k[4..], v)? {
                    break;
                }
            }
            Ok(())
        })
    }

    fn scan_accounts(
        &self,
        chain_id: u32,
        f: &mut dyn FnMut(AccountId, AccountRecord) -> bool,
    ) -> Result<(), StorageError> {
        // The log holds the state objects too. An account's value names
        // the id its key hashes, which no object's value can (short of a
        // hash collision): what does not decode so is an object. The
        // audit (`audit_state`) checks each entry against LMDB's objects.
        self.with_state(chain_id, |log, at| {
            Ok(
                log.scan_at(at, &mut |k, v| match decode_account_value(k, v) {
                    Ok((id, rec)) => f(id, rec),
                    Err(_) => true,
                })?,
            )
        })?;
        Ok(())
    }

    fn prepare_state(
        &self,
        chain_id: u32,
        writes: &[(Hash32, Option<Vec<u8>>)],
    ) -> Result<StateUpdate, StorageError> {
        let at = self.with(|txn| twig_meta(txn, self.env.meta, chain_id))?;
        let twig = self.env.twig(chain_id, at.as_ref())?;
        let state = twig.read().unwrap_or_else(PoisonError::into_inner);
        if !state_at(&state, at.as_ref()) {
            return Err(StorageError::StaleSnapshot { chain_id });
        }
        let prepared = state.prepare(writes)?;
        Ok(StateUpdate {
            chain_id,
            from: at,
            prepared,
        })
    }

    fn prove(&self, chain_id: u32, key: &Hash32) -> Result<Vec<u8>, StorageError> {
        let at = self.with(|txn| twig_meta(txn, self.env.meta, chain_id))?;
        let twig = self.env.twig(chain_id, at.as_ref())?;
        let state = twig.read().unwrap_or_else(PoisonError::into_inner);
        if !state_at(&state, at.as_ref()) {
            return Err(StorageError::StaleSnapshot { chain_id });
        }
        Ok(state.prove(key)?)
    }

    fn audit_state(&self, chain_id: u32) -> Result<(Hash32, u64), StorageError> {
        let at = self
            .with(|txn| twig_meta(txn, self.env.meta, chain_id))?
            .ok_or(StorageError::Corrupt {
                table: "meta",
                what: format!("chain {chain_id} has no state log meta"),
            })?;
        // Rebuilt from the log's bytes, not the node's memory (nor a
        // checkpoint of it).
        let log = TwigStore::open_read_only_scanning(&self.env.state_dir_of(chain_id), &at)?;
        let corrupt = |what: String| StorageError::Corrupt {
            table: "state log",
            what,
        };
        // Every state object in LMDB is its entry in the log.
        let mut object_keys = std::collections::HashSet::new();
        self.scan(chain_id, ObjectTable::State, &[], &mut |k, v| {
            let key = object_leaf(k);
            object_keys.insert(key);
            match log.get(&key)? {
                Some(entry) if entry == v => Ok(true),
                _ => Err(corrupt(format!(
                    "object {} differs from its entry",
                    hex_of(k)
                ))),
            }
        })?;
        let objects = object_keys.len() as u64;
        // Every other live entry is an account under its own key.
        let mut accounts = 0u64;
        let mut failed = None;
        log.scan_at(&log.version(), &mut |k, v| {
            if object_keys.contains(k) {
                return true;
            }
            accounts += 1;
            match decode_account_value(k, v) {
                Ok(_) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if log.len() != accounts + objects {
            return Err(corrupt(format!(
                "{} live entries for {accounts} accounts and {objects} objects",
                log.len()
            )));
        }
        Ok((log.root(), accounts))
    }

    fn block(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(self.env.blocks, &height_key(chain_id, height))
    }

    fn receipts(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(self.env.receipts, &height_key(chain_id, height))
    }

    fn tx_location(
        &self,
        chain_id: u32,
        tx_hash: &Hash32,
    ) -> Result<Option<(u64, u32)>, StorageError> {
        let e = &*self.env;
        let found = self.with(|txn| {
            tx_index::locate(
                &TxRuns {
                    txn,
                    meta: e.meta,
                    runs: e.txruns,
                },
                chain_id,
                tx_hash,
            )
        })?;
        if found.is_some() {
            return Ok(found);
        }
        let k: [u8; 36] = chain_key(chain_id, tx_hash);
        let Some(v) = self.get(e.txs, &k)? else {
            return Ok(None);
        };
        let (Some(h), Some(i)) = (v.get(..8), v.get(8..12)) else {
            return Err(StorageError::Corrupt {
                table: "txs",
                what: format!("entry of {} bytes, not 12", v.len()),
            });
        };
        let mut hb = [0u8; 8];
        hb.copy_from_slice(h);
        let mut ib = [0u8; 4];
        ib.copy_from_slice(i);
        Ok(Some((u64::from_le_bytes(hb), u32::from_le_bytes(ib))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ObjectWrite, recompute_root, state_writes};

    #[test]
    fn commit_is_visible_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        assert_eq!(store.snapshot().unwrap().head(3).unwrap(), None);
        let accounts = [(
            [1u8; 32],
            AccountRecord {
                int: 5,
                ..Default::default()
            },
        )];
        let head = commit(&store, 0, &accounts);
        let root = head.state_root;
        assert_eq!(store.snapshot().unwrap().head(3).unwrap(), Some(head));
        // Another chain in the same store sees nothing.
        assert_eq!(store.snapshot().unwrap().head(4).unwrap(), None);
        assert_eq!(
            store.snapshot().unwrap().account(4, &[1; 32]).unwrap(),
            None
        );
        assert_eq!(
            store.snapshot().unwrap().account(3, &[1; 32]).unwrap(),
            Some(accounts[0].1)
        );
        assert_eq!(
            recompute_root(&*store.snapshot().unwrap(), 3).unwrap(),
            (root, 1)
        );
        let stats = store.stats().unwrap();
        let entries = |n: &str| stats.tables.iter().find(|t| t.name == n).unwrap().entries;
        assert!(stats.tables.iter().all(|t| t.name != "accounts"));
        assert_eq!(entries("blocks"), 1);
        // The head, the state log's meta and the data dir's format.
        assert_eq!(entries("meta"), 3);
        assert!(stats.last_page > 0);
    }

    /// Commits `accounts` as block `height` of chain 3; returns its head.
    fn commit(store: &LmdbStore, height: u64, accounts: &[(AccountId, AccountRecord)]) -> Head {
        let view = store.snapshot().unwrap();
        let state = view.prepare_state(3, &state_writes(accounts, &[])).unwrap();
        drop(view);
        let head = Head {
            height,
            hash: [height as u8; 32],
            state_root: state.root(),
            accounts: 0,
        };
        store
            .commit_block(&BlockWrite {
                chain_id: 3,
                accounts,
                state: &state,
                height,
                block: b"block",
                receipts: b"receipts",
                tx_hashes: &[],
                head,
                objects: &[],
            })
            .unwrap();
        head
    }

    fn record(int: u128) -> AccountRecord {
        AccountRecord {
            int,
            ..Default::default()
        }
    }

    /// The audit rebuilds the root from the log's bytes even where a
    /// checkpoint of the log's memory would open it faster: a damaged
    /// entry is found.
    #[test]
    fn the_audit_reads_the_log_not_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        let id = [9u8; 32];
        commit(&store, 0, &[(id, record(5))]);
        assert!(recompute_root(&*store.snapshot().unwrap(), 3).is_ok());
        assert!(store.checkpoint().unwrap() > 0);
        drop(store);
        let segment = dir.path().join("state/chain-3/log-00000000.seg");
        let mut bytes = std::fs::read(&segment).unwrap();
        let at = bytes
            .windows(33)
            .position(|w| w[..32] == id && w[32] == 1)
            .expect("the account's value in the log");
        // A bit of its INT balance.
        bytes[at + 32 + 9] ^= 1;
        std::fs::write(&segment, &bytes).unwrap();
        let reader = LmdbStore::open_read_only(dir.path()).unwrap();
        assert!(recompute_root(&*reader.snapshot().unwrap(), 3).is_err());
        assert!(
            dir.path().join("state/chain-3/checkpoint").exists(),
            "a reader leaves the checkpoint"
        );
    }

    #[test]
    fn a_snapshot_reads_its_block_whatever_commits_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        let ids: Vec<AccountId> = (0..40u8).map(|i| [i; 32]).collect();
        // Block 0 writes the first 20; block 1 rewrites half of them and
        // creates others; block 2 rewrites some again. A snapshot after
        // each (two after the first).
        let mut views = Vec::new();
        for (height, range, int) in [(0, 0..20, 1), (1, 10..30, 2), (2, 15..35, 3)] {
            let block: Vec<_> = ids[range].iter().map(|id| (*id, record(int))).collect();
            commit(&store, height, &block);
            views.push(store.snapshot().unwrap());
            if height == 0 {
                views.push(store.parallel_snapshot().unwrap());
            }
        }
        let [at0, par0, at1, at2] = <[_; 4]>::try_from(views).unwrap_or_else(|_| unreachable!());
        let want = |upto: [usize; 3]| -> Vec<Option<AccountRecord>> {
            (0..40)
                .map(|i| match i {
                    i if (15..35).contains(&i) && upto[2] > 0 => Some(record(3)),
                    i if (10..30).contains(&i) && upto[1] > 0 => Some(record(2)),
                    i if i < 20 && upto[0] > 0 => Some(record(1)),
                    _ => None,
                })
                .collect()
        };
        for (view, w) in [
            (&at0, want([1, 0, 0])),
            (&par0, want([1, 0, 0])),
            (&at1, want([1, 1, 0])),
            (&at2, want([1, 1, 1])),
        ] {
            assert_eq!(view.accounts(3, &ids).unwrap(), w);
            for (id, rec) in ids.iter().zip(&w) {
                assert_eq!(view.account(3, id).unwrap(), *rec);
            }
            let mut scanned = std::collections::BTreeMap::new();
            view.for_each_account(3, |id, rec| {
                scanned.insert(id, rec);
            })
            .unwrap();
            let listed: std::collections::BTreeMap<_, _> = ids
                .iter()
                .zip(&w)
                .filter_map(|(id, r)| r.map(|r| (*id, r)))
                .collect();
            assert_eq!(scanned, listed);
        }
        // An old snapshot prepares nothing: its chain moved on.
        assert!(matches!(
            at0.prepare_state(3, &[]),
            Err(StorageError::StaleSnapshot { chain_id: 3 })
        ));
    }

    #[test]
    fn included_transactions_are_found_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        let receipt = |h: u8, index: u32| int_schemas::ReceiptFields {
            tx_hash: [h; 32],
            height: 5,
            index,
            status: int_schemas::wire::TxStatus::Ok,
            fee_charged: 1,
        };
        let receipts = int_schemas::build_receipts(5, &[receipt(0xa, 0), receipt(0xb, 1)]);
        let view = store.snapshot().unwrap();
        let state = view.prepare_state(3, &[]).unwrap();
        let root = state.root();
        drop(view);
        store
            .commit_block(&BlockWrite {
                chain_id: 3,
                accounts: &[],
                state: &state,
                height: 5,
                block: b"block",
                receipts: &receipts,
                tx_hashes: &[[0xa; 32], [0xb; 32]],
                head: Head {
                    height: 5,
                    hash: [7; 32],
                    state_root: root,
                    accounts: 0,
                },
                objects: &[],
            })
            .unwrap();
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .tx_location(3, &[0xa; 32])
                .unwrap(),
            Some((5, 0))
        );
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .tx_location(3, &[0xb; 32])
                .unwrap(),
            Some((5, 1))
        );
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .tx_location(3, &[0xc; 32])
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .tx_location(4, &[0xa; 32])
                .unwrap(),
            None
        );
    }

    /// Commits a block of no state at `height` holding `tx_hashes`.
    fn commit_txs(store: &LmdbStore, chain_id: u32, height: u64, tx_hashes: &[Hash32]) {
        let view = store.snapshot().unwrap();
        let state = view.prepare_state(chain_id, &[]).unwrap();
        let root = state.root();
        drop(view);
        store
            .commit_block(&BlockWrite {
                chain_id,
                accounts: &[],
                state: &state,
                height,
                block: b"block",
                receipts: b"receipts",
                tx_hashes,
                head: Head {
                    height,
                    hash: [height as u8; 32],
                    state_root: root,
                    accounts: 0,
                },
                objects: &[],
            })
            .unwrap();
    }

    /// Through LMDB: 70 blocks merge level 0 into level 1 eight times and
    /// level 1 into level 2 once; every transaction is found, after a
    /// reopen too, and the chunks merged away are gone.
    #[test]
    fn transactions_are_found_through_merges_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |height: u64, i: u32| {
            *blake3::hash(&[height.to_le_bytes(), u64::from(i).to_le_bytes()].concat()).as_bytes()
        };
        let blocks = 70u64;
        {
            let store = LmdbStore::open(dir.path()).unwrap();
            for height in 1..=blocks {
                let txs: Vec<Hash32> = (0..40).map(|i| hash(height, i)).collect();
                commit_txs(&store, 1, height, &txs);
            }
        }
        let store = LmdbStore::open(dir.path()).unwrap();
        let view = store.snapshot().unwrap();
        for height in 1..=blocks {
            for i in [0, 17, 39] {
                assert_eq!(
                    view.tx_location(1, &hash(height, i)).unwrap(),
                    Some((height, i)),
                    "block {height}, transaction {i}"
                );
            }
        }
        assert_eq!(view.tx_location(1, &hash(blocks + 1, 0)).unwrap(), None);
        assert_eq!(view.tx_location(2, &hash(1, 0)).unwrap(), None);
        // 2 800 entries in 70 runs' worth of chunks merged down to one
        // level-2 run (64 blocks), and 6 level-0 runs: 7 runs, each of
        // chunks of up to 2 048 entries.
        let chunks = store
            .stats()
            .unwrap()
            .tables
            .iter()
            .find(|t| t.name == "txruns")
            .unwrap()
            .entries;
        assert_eq!(chunks, 2 + 6, "chunks left after the merges");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// The index's runs through LMDB's own transactions and cursors,
        /// with steps small enough that merges span many commits, for two
        /// chains at once: every lookup answers as a map of latest
        /// locations.
        #[test]
        fn tx_runs_in_lmdb_match_a_map(
            blocks in proptest::collection::vec(
                (0u32..2, proptest::collection::vec(0u8..120, 0..10)),
                1..40
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = LmdbStore::open(dir.path()).unwrap();
            let e = &*store.env;
            let params = tx_index::Params {
                fanout: 2,
                chunk_entries: 3,
                step_entries_min: 2,
            };
            let hash = |n: u8| {
                let mut h = [n.wrapping_mul(53); 32];
                h[31] = n;
                h
            };
            let mut want: HashMap<(u32, Hash32), (u64, u32)> = HashMap::new();
            let mut heights = [0u64; 2];
            for (chain, txs) in &blocks {
                heights[*chain as usize] += 1;
                let height = heights[*chain as usize];
                let hashes: Vec<Hash32> = txs.iter().map(|n| hash(*n)).collect();
                let mut txn = e.env.begin_rw_txn().unwrap();
                tx_index::index_block(
                    &mut TxRuns { txn: &mut txn, meta: e.meta, runs: e.txruns },
                    *chain,
                    height,
                    &hashes,
                    params,
                )
                .unwrap();
                txn.commit().unwrap();
                for (i, h) in (0u32..).zip(&hashes) {
                    want.insert((*chain, *h), (height, i));
                }
                let txn = e.env.begin_ro_txn().unwrap();
                let runs = TxRuns { txn: &txn, meta: e.meta, runs: e.txruns };
                for chain in 0..2u32 {
                    for n in 0..120u8 {
                        proptest::prop_assert_eq!(
                            tx_index::locate(&runs, chain, &hash(n)).unwrap(),
                            want.get(&(chain, hash(n))).copied(),
                            "chain {}, hash {}", chain, n
                        );
                    }
                }
            }
        }
    }

    /// A data dir whose transactions an older release indexed in `txs`
    /// finds them, beside those indexed since.
    #[test]
    fn transactions_in_the_old_index_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        {
            let e = &*store.env;
            let mut txn = e.env.begin_rw_txn().unwrap();
            let mut at = [0u8; 12];
            at[..8].copy_from_slice(&3u64.to_le_bytes());
            at[8..].copy_from_slice(&9u32.to_le_bytes());
            let k: [u8; 36] = chain_key(1, &[0xa; 32]);
            txn.put(e.txs, &k, &at, WriteFlags::empty()).unwrap();
            let k: [u8; 36] = chain_key(1, &[0xc; 32]);
            txn.put(e.txs, &k, &[1, 2, 3], WriteFlags::empty()).unwrap();
            txn.commit().unwrap();
        }
        commit_txs(&store, 1, 1, &[[0xb; 32]]);
        let view = store.snapshot().unwrap();
        assert_eq!(view.tx_location(1, &[0xa; 32]).unwrap(), Some((3, 9)));
        assert_eq!(view.tx_location(1, &[0xb; 32]).unwrap(), Some((1, 0)));
        assert!(matches!(
            view.tx_location(1, &[0xc; 32]),
            Err(StorageError::Corrupt { table: "txs", .. })
        ));
    }

    #[test]
    fn objects_commit_read_seek_and_enter_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        let w = |table, key: &[u8], value: Option<&[u8]>| ObjectWrite {
            table,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        };
        let objects = vec![
            w(ObjectTable::State, b"p/\x00\x05", Some(b"five")),
            w(ObjectTable::State, b"p/\x00\x09", Some(b"nine")),
            w(ObjectTable::State, b"q/1", Some(b"other")),
            w(ObjectTable::Derived, b"p/\x00\x05", Some(b"derived")),
        ];
        let view = store.snapshot().unwrap();
        let state = view.prepare_state(2, &state_writes(&[], &objects)).unwrap();
        let root = state.root();
        drop(view);
        let head = Head {
            height: 0,
            hash: [1; 32],
            state_root: root,
            accounts: 0,
        };
        store
            .commit_block(&BlockWrite {
                chain_id: 2,
                accounts: &[],
                state: &state,
                height: 0,
                block: b"b",
                receipts: b"r",
                tx_hashes: &[],
                head,
                objects: &objects,
            })
            .unwrap();
        let get = |t, k: &[u8]| store.snapshot().unwrap().object(2, t, k).unwrap();
        assert_eq!(
            get(ObjectTable::State, b"p/\x00\x05").as_deref(),
            Some(&b"five"[..])
        );
        assert_eq!(
            get(ObjectTable::Derived, b"p/\x00\x05").as_deref(),
            Some(&b"derived"[..])
        );
        assert_eq!(get(ObjectTable::Derived, b"p/\x00\x09"), None);
        assert_eq!(
            store
                .snapshot()
                .unwrap()
                .object(3, ObjectTable::State, b"q/1")
                .unwrap(),
            None
        );
        let seek = |from: &[u8]| {
            store
                .snapshot()
                .unwrap()
                .object_at_or_after(2, ObjectTable::State, b"p/", from)
                .unwrap()
                .map(|(k, _)| k)
        };
        assert_eq!(seek(b"p/\x00\x06").as_deref(), Some(&b"p/\x00\x09"[..]));
        assert_eq!(seek(b"p/\x00\x05").as_deref(), Some(&b"p/\x00\x05"[..]));
        // Past the last key of the prefix: the next prefix is not returned.
        assert_eq!(seek(b"p/\x00\x0a"), None);
        let scan = |prefix: &[u8], most: usize| {
            let mut keys = Vec::new();
            store
                .snapshot()
                .unwrap()
                .scan_prefix(2, ObjectTable::State, prefix, |k, _| {
                    keys.push(k.to_vec());
                    Ok::<_, StorageError>(keys.len() < most)
                })
                .unwrap();
            keys
        };
        assert_eq!(
            scan(b"p/", 10),
            vec![b"p/\x00\x05".to_vec(), b"p/\x00\x09".to_vec()]
        );
        assert_eq!(scan(b"p/", 1), vec![b"p/\x00\x05".to_vec()]);
        assert_eq!(scan(b"q", 10), vec![b"q/1".to_vec()]);
        assert!(scan(b"r", 10).is_empty());
        // An error from `f` stops the walk and comes back as is.
        let mut seen = 0;
        let r = store
            .snapshot()
            .unwrap()
            .scan_prefix(2, ObjectTable::State, b"p/", |_, _| {
                seen += 1;
                Err(StorageError::Corrupt {
                    table: "objects",
                    what: "stop".into(),
                })
            });
        assert!(matches!(r, Err(StorageError::Corrupt { what, .. }) if what == "stop"));
        assert_eq!(seen, 1);
        // The audit covers the state objects, not the derived ones.
        assert_eq!(
            recompute_root(&*store.snapshot().unwrap(), 2).unwrap(),
            (root, 0)
        );
        // Deleting an object takes it out.
        let del = [w(ObjectTable::State, b"q/1", None)];
        let view = store.snapshot().unwrap();
        let state2 = view.prepare_state(2, &state_writes(&[], &del)).unwrap();
        let root2 = state2.root();
        drop(view);
        store
            .commit_block(&BlockWrite {
                chain_id: 2,
                accounts: &[],
                state: &state2,
                height: 1,
                block: b"b",
                receipts: b"r",
                tx_hashes: &[],
                head: Head {
                    height: 1,
                    state_root: root2,
                    ..head
                },
                objects: &del,
            })
            .unwrap();
        assert_eq!(get(ObjectTable::State, b"q/1"), None);
        assert_eq!(
            recompute_root(&*store.snapshot().unwrap(), 2).unwrap(),
            (root2, 0)
        );
    }

    #[test]
    fn a_snapshot_reads_one_version_on_every_worker() {
        use rayon::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let store = LmdbStore::open(dir.path()).unwrap();
        let write = |height: u64, int: u128| {
            let accounts = [(
                [1u8; 32],
                AccountRecord {
                    int,
                    ..Default::default()
                },
            )];
            let state = store
                .snapshot()
                .unwrap()
                .prepare_state(3, &state_writes(&accounts, &[]))
                .unwrap();
            store
                .commit_block(&BlockWrite {
                    chain_id: 3,
                    accounts: &accounts,
                    state: &state,
                    height,
                    block: b"b",
                    receipts: b"r",
                    tx_hashes: &[],
                    head: Head {
                        height,
                        ..Head::default()
                    },
                    objects: &[],
                })
                .unwrap();
        };
        write(0, 5);
        let old = store.parallel_snapshot().unwrap();
        write(1, 6);
        let new = store.snapshot().unwrap();
        // Every worker of the old snapshot reads the old version.
        let seen: Vec<(u64, u128)> = (0..64)
            .into_par_iter()
            .map(|_| {
                let h = old.head(3).unwrap().unwrap().height;
                let r = old.accounts(3, &[[1; 32]]).unwrap()[0].unwrap();
                (h, r.int)
            })
            .collect();
        assert!(seen.iter().all(|s| *s == (0, 5)), "{seen:?}");
        // Many accounts at once are read by the snapshot's reader threads,
        // in order, missing ones as `None`.
        let ids: Vec<AccountId> = (0..5000u32)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&i.to_le_bytes());
                if i % 3 == 0 { [1; 32] } else { id }
            })
            .collect();
        let got = old.accounts(3, &ids).unwrap();
        assert_eq!(got.len(), ids.len());
        for (id, r) in ids.iter().zip(&got) {
            assert_eq!(r.map(|r| r.int), (*id == [1; 32]).then_some(5));
        }
        assert_eq!(new.head(3).unwrap().unwrap().height, 1);
        assert_eq!(new.account(3, &[1; 32]).unwrap().unwrap().int, 6);
        assert_eq!(old.block(3, 1).unwrap(), None);
        assert_eq!(new.block(3, 1).unwrap().as_deref(), Some(&b"b"[..]));
    }

    /// A data dir of the sparse Merkle tree's release (heads, no state
    /// format) is refused, naming both formats; never read as this one.
    #[test]
    fn data_dirs_of_state_formats_1_and_2_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LmdbStore::open(dir.path()).unwrap();
            let state = store.snapshot().unwrap().prepare_state(1, &[]).unwrap();
            store
                .commit_block(&BlockWrite {
                    chain_id: 1,
                    accounts: &[],
                    state: &state,
                    height: 0,
                    block: b"b",
                    receipts: b"r",
                    tx_hashes: &[],
                    head: Head::default(),
                    objects: &[],
                })
                .unwrap();
        }
        // Marks the dir as a release of `format` (`None`: none recorded).
        let mark = |format: Option<u8>| {
            let env = Environment::new()
                .set_max_dbs(8)
                .set_map_size(MAP_SIZE_BYTES)
                .open(dir.path())
                .unwrap();
            let meta = env.open_db(Some("meta")).unwrap();
            let mut txn = env.begin_rw_txn().unwrap();
            match format {
                None => txn.del(meta, &STATE_FORMAT_KEY, None).unwrap(),
                Some(f) => txn
                    .put(meta, &STATE_FORMAT_KEY, &[f], WriteFlags::empty())
                    .unwrap(),
            }
            txn.commit().unwrap();
        };
        // What the old releases leave: the same tables, no format record
        // (1), format 2 (accounts keyed by id), format 3 (accounts in LMDB
        // too).
        for (format, found, named) in [
            (None, 1, "state format 1"),
            (Some(2), 2, "keyed by id"),
            (Some(3), 3, "accounts in LMDB too"),
        ] {
            mark(format);
            let err = LmdbStore::open(dir.path()).err().expect("refused");
            let text = err.to_string();
            assert!(
                matches!(err, StorageError::Format { found: f, .. } if f == found),
                "{text}"
            );
            assert!(text.contains(named), "{text}");
            assert!(
                text.contains(&format!("state format {STATE_FORMAT}")),
                "{text}"
            );
        }
        // A new dir is marked with this format and opens again.
        let fresh = tempfile::tempdir().unwrap();
        drop(LmdbStore::open(fresh.path()).unwrap());
        LmdbStore::open(fresh.path()).unwrap();
    }
}
