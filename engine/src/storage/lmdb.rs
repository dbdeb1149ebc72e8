//! The LMDB implementation of [`Storage`]: the only code that knows LMDB
//! holds the state.
//!
//! Layout (every key starts with the chain id, 4 bytes big-endian, so the
//! relay chain and parallel chains share one environment):
//!
//! | table      | key                         | value                              |
//! |------------|-----------------------------|------------------------------------|
//! | `accounts` | chain ‖ account id          | [`AccountRecord`] (fixed layout)   |
//! | `smt`      | chain ‖ prefix ‖ depth      | sparse Merkle tree node            |
//! | `blocks`   | chain ‖ height (u64 BE)     | sealed block (FlatBuffers)         |
//! | `receipts` | chain ‖ height (u64 BE)     | block receipts (FlatBuffers)       |
//! | `meta`     | chain ‖ name                | head, chain parameters             |
//! | `objects`  | chain ‖ plugin key          | plugin state the state root covers |
//! | `derived`  | chain ‖ plugin key          | plugin data recomputable from state|
//! | `txs`      | chain ‖ transaction hash    | height (u64 LE) ‖ index (u32 LE)   |
//!
//! A block is committed in one write transaction holding the dirty
//! accounts, the tree nodes, the objects, the block, its receipts, the
//! index and the new head: after a crash the store holds either the whole
//! block or none of it (LMDB's copy-on-write B-tree with a synced meta
//! page).
//!
//! A snapshot is one LMDB read transaction (MVCC: commits after it began
//! are invisible to it), or one per rayon worker for a parallel snapshot.
//! LMDB allows a read transaction one user at a time, so each sits behind a
//! mutex and a worker uses its own; the transactions of one parallel
//! snapshot are begun under the read side of a lock whose write side each
//! commit holds, so they all see the same version.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags,
};

use super::{
    AccountRecord, BlockWrite, Head, KeyValue, OBJECT_KEY_BYTES_MAX, ObjectTable, ScanFn,
    StateView, Storage, StorageError, StoreStats, TableStats,
};
use crate::state::smt::{Node, NodeKey, SmtError};
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
/// snapshot takes one per rayon worker plus one, every other snapshot one.
/// At the bound, beginning a snapshot fails with LMDB's `MDB_READERS_FULL`
/// (an error to the caller, never a wait).
pub const READERS_MAX: u32 = 256;

/// The environment and its tables.
struct Env {
    env: Environment,
    accounts: Database,
    smt: Database,
    blocks: Database,
    receipts: Database,
    meta: Database,
    objects: Database,
    derived: Database,
    /// Transaction hash → (height, index): where each included transaction
    /// is, for receipts by hash. Derived from the receipts, not in the root.
    txs: Database,
    /// Held for writing while a commit becomes visible, for reading while a
    /// parallel snapshot begins its transactions.
    commit_lock: RwLock<()>,
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

fn account_key(chain_id: u32, id: &AccountId) -> [u8; 36] {
    chain_key(chain_id, id)
}

/// The LMDB key of a tree node: prefix first, then depth. Every subtree is
/// then one contiguous key range (a node's prefix, zero-padded, is the
/// smallest of its subtree's), so the nodes a block rewrites along one path
/// share pages. Depth first would scatter each path over the whole table,
/// and LMDB's copy-on-write would rewrite nearly every page every block.
fn node_key(chain_id: u32, key: &NodeKey) -> [u8; 37] {
    let mut k = [0u8; 37];
    k[..4].copy_from_slice(&chain_id.to_be_bytes());
    k[4..36].copy_from_slice(&key.prefix);
    k[36] = key.depth;
    k
}

fn height_key(chain_id: u32, height: u64) -> [u8; 12] {
    chain_key(chain_id, &height.to_be_bytes())
}

fn head_key(chain_id: u32) -> [u8; 8] {
    chain_key(chain_id, b"head")
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
    fn table(&self, t: ObjectTable) -> Database {
        match t {
            ObjectTable::State => self.objects,
            ObjectTable::Derived => self.derived,
        }
    }
}

impl LmdbStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        // NO_TLS: read transactions are not bound to the thread that began
        // them, so a snapshot can move between threads and a parallel one
        // keeps one per worker.
        // Not WRITE_MAP: it saved ~12% of commit time in `int bench tps`, but
        // it grows data.mdb to the whole map size (1 TiB apparent, sparse),
        // which surprises operators and tools that copy files.
        let env = Environment::new()
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE_BYTES)
            .set_max_readers(READERS_MAX)
            .set_flags(EnvironmentFlags::NO_TLS)
            .open(dir)?;
        let open = |name| env.create_db(Some(name), DatabaseFlags::empty());
        let env = Env {
            accounts: open("accounts")?,
            smt: open("smt")?,
            blocks: open("blocks")?,
            receipts: open("receipts")?,
            meta: open("meta")?,
            objects: open("objects")?,
            derived: open("derived")?,
            txs: open("txs")?,
            commit_lock: RwLock::new(()),
            env,
        };
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
        Ok(LmdbSnapshot {
            txns,
            env: self.env.clone(),
        })
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
        let mut txn = e.env.begin_rw_txn()?;
        for (id, rec) in w.accounts {
            txn.put(
                e.accounts,
                &account_key(w.chain_id, id),
                &rec.encode(),
                WriteFlags::empty(),
            )?;
        }
        // In key order, so consecutive writes land on the same pages.
        let mut nodes: Vec<([u8; 37], Option<Vec<u8>>)> = w
            .nodes
            .puts
            .iter()
            .map(|(k, n)| (node_key(w.chain_id, k), Some(n.encode())))
            .chain(
                w.nodes
                    .deletes
                    .iter()
                    .map(|k| (node_key(w.chain_id, k), None)),
            )
            .collect();
        nodes.sort_unstable_by_key(|a| a.0);
        for (k, v) in &nodes {
            match v {
                Some(v) => txn.put(e.smt, k, v, WriteFlags::empty())?,
                None => match txn.del(e.smt, k, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(err) => return Err(err.into()),
                },
            }
        }
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
        for (index, hash) in (0u32..).zip(w.tx_hashes) {
            let mut at = [0u8; 12];
            at[..8].copy_from_slice(&w.height.to_le_bytes());
            at[8..].copy_from_slice(&index.to_le_bytes());
            let k: [u8; 36] = chain_key(w.chain_id, hash);
            txn.put(e.txs, &k, &at, WriteFlags::empty())?;
        }
        txn.put(e.blocks, &hk, &w.block, WriteFlags::empty())?;
        txn.put(e.receipts, &hk, &w.receipts, WriteFlags::empty())?;
        txn.put(
            e.meta,
            &head_key(w.chain_id),
            &w.head.encode(),
            WriteFlags::empty(),
        )?;
        let _visible = e
            .commit_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        txn.commit()?;
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StorageError> {
        let e = &*self.env;
        let txn = e.env.begin_ro_txn()?;
        let tables = [
            ("accounts", e.accounts),
            ("smt", e.smt),
            ("blocks", e.blocks),
            ("receipts", e.receipts),
            ("meta", e.meta),
            ("objects", e.objects),
            ("derived", e.derived),
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
}

/// A read transaction that may move between threads. Sound because the
/// environment is opened with `MDB_NOTLS`, which unbinds read transactions
/// from their thread; a `Mutex` keeps each one to one user at a time.
struct SendRo(lmdb::RoTransaction<'static>);
// SAFETY: see the type's comment: MDB_NOTLS and exclusive use via Mutex.
unsafe impl Send for SendRo {}

/// A snapshot: one read transaction, or one per rayon worker plus one for
/// other threads, all of the same version.
struct LmdbSnapshot {
    // Declared before `env`: the transactions end before the environment
    // they borrow can be dropped.
    txns: Vec<Mutex<SendRo>>,
    env: Arc<Env>,
}

impl LmdbSnapshot {
    /// Runs `f` with this thread's transaction: a rayon worker's own one
    /// when the snapshot has one per worker, the first otherwise.
    fn with<T>(&self, f: impl FnOnce(&lmdb::RoTransaction<'static>) -> T) -> T {
        let slot = rayon::current_thread_index().map(|i| i + 1).unwrap_or(0);
        let slot = if slot < self.txns.len() { slot } else { 0 };
        let guard = self.txns[slot]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&guard.0)
    }

    fn get(&self, db: Database, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.with(|txn| Ok(get_opt(txn, db, key)?.map(<[u8]>::to_vec)))
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
        self.with(|txn| {
            get_opt(txn, self.env.accounts, &account_key(chain_id, id))?
                .map(AccountRecord::decode)
                .transpose()
        })
    }

    fn accounts(
        &self,
        chain_id: u32,
        ids: &[AccountId],
    ) -> Result<Vec<Option<AccountRecord>>, StorageError> {
        use rayon::prelude::*;
        const CHUNK: usize = 4096;
        let parts: Result<Vec<Vec<Option<AccountRecord>>>, StorageError> = ids
            .par_chunks(CHUNK)
            .map(|chunk| {
                self.with(|txn| {
                    chunk
                        .iter()
                        .map(|id| {
                            get_opt(txn, self.env.accounts, &account_key(chain_id, id))?
                                .map(AccountRecord::decode)
                                .transpose()
                        })
                        .collect()
                })
            })
            .collect();
        Ok(parts?.into_iter().flatten().collect())
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
        self.with(|txn| {
            let mut cur = txn.open_ro_cursor(self.env.accounts)?;
            let prefix = chain_id.to_be_bytes();
            for item in cur.iter_from(prefix) {
                let (k, v) = item?;
                if k.len() != 36 || k[..4] != prefix {
                    break;
                }
                let mut id = [0u8; 32];
                id.copy_from_slice(&k[4..]);
                if !f(id, AccountRecord::decode(v)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn node(&self, chain_id: u32, key: &NodeKey) -> Result<Option<Node>, SmtError> {
        self.with(
            |txn| match txn.get(self.env.smt, &node_key(chain_id, key)) {
                Ok(v) => Node::decode(v).map(Some),
                Err(lmdb::Error::NotFound) => Ok(None),
                Err(e) => Err(SmtError::Store(e.to_string())),
            },
        )
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
        let k: [u8; 36] = chain_key(chain_id, tx_hash);
        let Some(v) = self.get(self.env.txs, &k)? else {
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
    use crate::state::smt;
    use crate::storage::{ObjectWrite, object_leaf, recompute_root};

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
        let updates = [(accounts[0].0, Some(accounts[0].1.hash()))];
        let view = store.snapshot().unwrap();
        let reader = view.nodes(3);
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &updates).unwrap();
        drop(view);
        let head = Head {
            height: 0,
            hash: [7; 32],
            state_root: root,
            accounts: 1,
        };
        store
            .commit_block(&BlockWrite {
                chain_id: 3,
                accounts: &accounts,
                nodes: &nodes,
                height: 0,
                block: b"block",
                receipts: b"receipts",
                tx_hashes: &[],
                head,
                objects: &[],
            })
            .unwrap();
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
        assert_eq!(entries("accounts"), 1);
        assert_eq!(entries("blocks"), 1);
        assert_eq!(entries("meta"), 1);
        assert!(stats.last_page > 0);
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
        let reader = view.nodes(3);
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &[]).unwrap();
        drop(view);
        store
            .commit_block(&BlockWrite {
                chain_id: 3,
                accounts: &[],
                nodes: &nodes,
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
        let leaves: Vec<(Hash32, Option<Hash32>)> = objects
            .iter()
            .filter(|o| o.table == ObjectTable::State)
            .map(|o| {
                let v = o.value.as_deref().unwrap();
                (object_leaf(&o.key), Some(*blake3::hash(v).as_bytes()))
            })
            .collect();
        let view = store.snapshot().unwrap();
        let reader = view.nodes(2);
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &leaves).unwrap();
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
                nodes: &nodes,
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
        let reader = view.nodes(2);
        let (root2, nodes2) = smt::update(&reader, &root, &[(object_leaf(b"q/1"), None)]).unwrap();
        drop(view);
        store
            .commit_block(&BlockWrite {
                chain_id: 2,
                accounts: &[],
                nodes: &nodes2,
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
            store
                .commit_block(&BlockWrite {
                    chain_id: 3,
                    accounts: &accounts,
                    nodes: &Default::default(),
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
        assert_eq!(new.head(3).unwrap().unwrap().height, 1);
        assert_eq!(new.account(3, &[1; 32]).unwrap().unwrap().int, 6);
        assert_eq!(old.block(3, 1).unwrap(), None);
        assert_eq!(new.block(3, 1).unwrap().as_deref(), Some(&b"b"[..]));
    }
}
