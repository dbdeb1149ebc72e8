//! Storage: LMDB tables of one or more chains, and the typed access to them.
//!
//! Layout (every key starts with the chain id, 4 bytes big-endian, so the
//! relay chain and later parallel chains share one environment):
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
//!
//! Plugins (the BPK identity tree, nullifiers, centroids; later SKUs and
//! orders) keep their state in `objects`, each under its own key prefix:
//! the state tree commits to every object at leaf [`object_leaf`]`(key)`
//! with value `blake3(value)`, beside the accounts. `derived` holds what
//! follows from committed state and is kept only to serve it fast (the
//! identity tree's inner nodes, whose root is committed in `objects`).
//!
//! A block is committed in one write transaction holding the dirty
//! accounts, the tree nodes, the block, its receipts and the new head: after
//! a crash the store holds either the whole block or none of it (LMDB's
//! copy-on-write B-tree with a synced meta page).

use std::path::Path;
use std::sync::Mutex;

use lmdb::{
    Cursor, Database, DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags,
};

use crate::state::smt::{self, Node, NodeBatch, NodeKey, NodeReader, SmtError};
use int_schemas::{AccountId, Hash32, PublicKeyBytes};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// LMDB reported an error.
    #[error("lmdb: {0}")]
    Lmdb(#[from] lmdb::Error),
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
    /// Creating the data directory failed.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
}

/// Virtual size of the memory map. LMDB files are sparse: this reserves
/// address space, not disk. 1 TiB covers about 2·10⁹ accounts.
pub const MAP_SIZE_BYTES: usize = 1 << 40;

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

    /// The value the state tree commits to for this account.
    pub fn hash(&self) -> Hash32 {
        *blake3::hash(&self.encode()).as_bytes()
    }
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
    fn encode(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        out[0..8].copy_from_slice(&self.height.to_le_bytes());
        out[8..40].copy_from_slice(&self.hash);
        out[40..72].copy_from_slice(&self.state_root);
        out[72..80].copy_from_slice(&self.accounts.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Result<Self, StorageError> {
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

/// The LMDB environment and its tables.
pub struct Store {
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
}

/// Which plugin table a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectTable {
    /// `objects`: consensus state, covered by the state root.
    State,
    /// `derived`: recomputable data, not covered by the state root.
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

/// The state-tree key of an object: `blake3("INT/obj/v1" ‖ key)`, so
/// objects and accounts (whose keys are account ids) never collide.
pub fn object_leaf(key: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/obj/v1");
    h.update(key);
    *h.finalize().as_bytes()
}

/// Everything one block writes, applied in a single write transaction.
pub struct BlockWrite<'a> {
    /// Chain the block belongs to.
    pub chain_id: u32,
    /// Dirty accounts with their new records.
    pub accounts: &'a [(AccountId, AccountRecord)],
    /// Tree nodes to write and delete.
    pub nodes: &'a NodeBatch,
    /// Height of the block.
    pub height: u64,
    /// The sealed block.
    pub block: &'a [u8],
    /// Its receipts.
    pub receipts: &'a [u8],
    /// The BLAKE3 hashes of its transactions' bodies, in block order: the
    /// `txs` index (hash → height, position) is written from them.
    pub tx_hashes: &'a [Hash32],
    /// The new head.
    pub head: Head,
    /// Plugin objects to write or delete (their state-tree leaves are in
    /// `nodes` already).
    pub objects: &'a [ObjectWrite],
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

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir)?;
        // NO_TLS: read transactions are not bound to the thread that began
        // them, so the state tree's parallel readers can keep one each.
        // Not WRITE_MAP: it saved ~12% of commit time in `int bench tps`, but
        // it grows data.mdb to the whole map size (1 TiB apparent, sparse),
        // which surprises operators and tools that copy files.
        let env = Environment::new()
            .set_max_dbs(8)
            .set_map_size(MAP_SIZE_BYTES)
            .set_max_readers(256)
            .set_flags(EnvironmentFlags::NO_TLS)
            .open(dir)?;
        let open = |name| env.create_db(Some(name), DatabaseFlags::empty());
        Ok(Self {
            accounts: open("accounts")?,
            smt: open("smt")?,
            blocks: open("blocks")?,
            receipts: open("receipts")?,
            meta: open("meta")?,
            objects: open("objects")?,
            derived: open("derived")?,
            txs: open("txs")?,
            env,
        })
    }

    /// The committed head of a chain, or `None` before genesis.
    pub fn head(&self, chain_id: u32) -> Result<Option<Head>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        get_opt(&txn, self.meta, &head_key(chain_id))?
            .map(Head::decode)
            .transpose()
    }

    /// Reads one account from the committed state.
    pub fn account(
        &self,
        chain_id: u32,
        id: &AccountId,
    ) -> Result<Option<AccountRecord>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        get_opt(&txn, self.accounts, &account_key(chain_id, id))?
            .map(AccountRecord::decode)
            .transpose()
    }

    /// Reads many accounts from the committed state, in parallel over all
    /// cores; the result is in the order of `ids`.
    pub fn accounts(
        &self,
        chain_id: u32,
        ids: &[AccountId],
    ) -> Result<Vec<Option<AccountRecord>>, StorageError> {
        use rayon::prelude::*;
        const CHUNK: usize = 4096;
        let parts: Result<Vec<Vec<Option<AccountRecord>>>, StorageError> = ids
            .par_chunks(CHUNK)
            .map(|chunk| {
                let txn = self.env.begin_ro_txn()?;
                chunk
                    .iter()
                    .map(|id| {
                        get_opt(&txn, self.accounts, &account_key(chain_id, id))?
                            .map(AccountRecord::decode)
                            .transpose()
                    })
                    .collect()
            })
            .collect();
        Ok(parts?.into_iter().flatten().collect())
    }

    fn table(&self, t: ObjectTable) -> Database {
        match t {
            ObjectTable::State => self.objects,
            ObjectTable::Derived => self.derived,
        }
    }

    /// Reads one committed plugin object.
    pub fn object(
        &self,
        chain_id: u32,
        table: ObjectTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        Ok(get_opt(&txn, self.table(table), &object_key(chain_id, key))?.map(<[u8]>::to_vec))
    }

    /// The first committed object whose key is `>= from` and starts with
    /// `prefix` (`from` must start with `prefix`): one B-tree seek. With
    /// keys that encode a number inverted, this finds the entry in force at
    /// a height or epoch.
    pub fn object_at_or_after(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        from: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        assert!(from.starts_with(prefix));
        let txn = self.env.begin_ro_txn()?;
        let mut cur = txn.open_ro_cursor(self.table(table))?;
        let full_prefix = object_key(chain_id, prefix);
        if let Some(item) = cur.iter_from(object_key(chain_id, from)).next() {
            let (k, v) = item?;
            if k.starts_with(&full_prefix) {
                return Ok(Some((k[4..].to_vec(), v.to_vec())));
            }
        }
        Ok(None)
    }

    /// Calls `f` for every committed object of a chain in `table` whose key
    /// starts with `prefix`, in key order, until `f` returns `Ok(false)` or
    /// an error (which is returned): one seek, then a cursor walk over that
    /// key range only. `f`'s error type takes storage errors too, so a
    /// caller that decodes what it reads gets one error type back.
    pub fn scan_prefix<E: From<StorageError>>(
        &self,
        chain_id: u32,
        table: ObjectTable,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, E>,
    ) -> Result<(), E> {
        let txn = self.env.begin_ro_txn().map_err(StorageError::from)?;
        let mut cur = txn
            .open_ro_cursor(self.table(table))
            .map_err(StorageError::from)?;
        let full_prefix = object_key(chain_id, prefix);
        for item in cur.iter_from(&full_prefix) {
            let (k, v) = item.map_err(StorageError::from)?;
            if !k.starts_with(&full_prefix) || !f(&k[4..], v)? {
                break;
            }
        }
        Ok(())
    }

    /// Calls `f` for every committed object of a chain in `table`, in key
    /// order.
    pub fn for_each_object(
        &self,
        chain_id: u32,
        table: ObjectTable,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), StorageError> {
        self.scan_prefix(chain_id, table, &[], |k, v| {
            f(k, v);
            Ok::<_, StorageError>(true)
        })
    }

    /// Reads a stored block.
    pub fn block(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        Ok(get_opt(&txn, self.blocks, &height_key(chain_id, height))?.map(<[u8]>::to_vec))
    }

    /// Reads the receipts of a stored block.
    pub fn receipts(&self, chain_id: u32, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        Ok(get_opt(&txn, self.receipts, &height_key(chain_id, height))?.map(<[u8]>::to_vec))
    }

    /// Calls `f` for every stored account of a chain, in key order.
    pub fn for_each_account(
        &self,
        chain_id: u32,
        mut f: impl FnMut(AccountId, AccountRecord),
    ) -> Result<(), StorageError> {
        let txn = self.env.begin_ro_txn()?;
        let mut cur = txn.open_ro_cursor(self.accounts)?;
        let prefix = chain_id.to_be_bytes();
        for item in cur.iter_from(prefix) {
            let (k, v) = item?;
            if k.len() != 36 || k[..4] != prefix {
                break;
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[4..]);
            f(id, AccountRecord::decode(v)?);
        }
        Ok(())
    }

    /// A reader of the committed state tree of a chain, for
    /// [`smt::update`] and [`smt::prove`].
    pub fn node_reader(&self, chain_id: u32) -> Result<LmdbNodeReader<'_>, StorageError> {
        LmdbNodeReader::new(self, chain_id)
    }

    /// Commits one block: accounts, tree nodes, block, receipts and head in
    /// one write transaction. Either all of it is durable or none.
    pub fn commit_block(&self, w: &BlockWrite<'_>) -> Result<(), StorageError> {
        let mut txn = self.env.begin_rw_txn()?;
        for (id, rec) in w.accounts {
            txn.put(
                self.accounts,
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
                Some(v) => txn.put(self.smt, k, v, WriteFlags::empty())?,
                None => match txn.del(self.smt, k, None) {
                    Ok(()) | Err(lmdb::Error::NotFound) => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        type Put<'v> = (Database, Vec<u8>, Option<&'v Vec<u8>>);
        let mut objects: Vec<Put<'_>> = w
            .objects
            .iter()
            .map(|o| {
                (
                    self.table(o.table),
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
                    Err(e) => return Err(e.into()),
                },
            }
        }
        let hk = height_key(w.chain_id, w.height);
        for (index, hash) in (0u32..).zip(w.tx_hashes) {
            let mut at = [0u8; 12];
            at[..8].copy_from_slice(&w.height.to_le_bytes());
            at[8..].copy_from_slice(&index.to_le_bytes());
            let k: [u8; 36] = chain_key(w.chain_id, hash);
            txn.put(self.txs, &k, &at, WriteFlags::empty())?;
        }
        txn.put(self.blocks, &hk, &w.block, WriteFlags::empty())?;
        txn.put(self.receipts, &hk, &w.receipts, WriteFlags::empty())?;
        txn.put(
            self.meta,
            &head_key(w.chain_id),
            &w.head.encode(),
            WriteFlags::empty(),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// Where an included transaction is: its block height and index, by
    /// its hash (BLAKE3 of the body); `None` for one never included.
    pub fn tx_location(
        &self,
        chain_id: u32,
        tx_hash: &Hash32,
    ) -> Result<Option<(u64, u32)>, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        let k: [u8; 36] = chain_key(chain_id, tx_hash);
        let Some(v) = get_opt(&txn, self.txs, &k)? else {
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

    /// Page counts per table and the file's high-water mark.
    pub fn stats(&self) -> Result<StoreStats, StorageError> {
        let txn = self.env.begin_ro_txn()?;
        let tables = [
            ("accounts", self.accounts),
            ("smt", self.smt),
            ("blocks", self.blocks),
            ("receipts", self.receipts),
            ("meta", self.meta),
            ("objects", self.objects),
            ("derived", self.derived),
            ("txs", self.txs),
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
        let info = self.env.info()?;
        Ok(StoreStats {
            page_size: self.env.stat()?.page_size(),
            last_page: info.last_pgno() as u64,
            tables,
        })
    }

    /// Flushes the data to disk (LMDB syncs on commit; this is for callers
    /// that opened with relaxed durability in the future).
    pub fn sync(&self) -> Result<(), StorageError> {
        Ok(self.env.sync(true)?)
    }
}

/// Page counts of one LMDB table.
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

/// A read transaction that may move between threads. Sound because the
/// environment is opened with `MDB_NOTLS`, which unbinds read transactions
/// from their thread; a `Mutex` still keeps each one to one user at a time.
struct SendRo<'e>(lmdb::RoTransaction<'e>);
// SAFETY: see the type's comment: MDB_NOTLS and exclusive use via Mutex.
unsafe impl Send for SendRo<'_> {}

/// Reads state-tree nodes from the committed state, one read transaction
/// per rayon worker (plus one for other threads), so parallel updates read
/// without contention.
pub struct LmdbNodeReader<'s> {
    chain_id: u32,
    db: Database,
    txns: Vec<Mutex<SendRo<'s>>>,
}

impl<'s> LmdbNodeReader<'s> {
    fn new(store: &'s Store, chain_id: u32) -> Result<Self, StorageError> {
        let n = rayon::current_num_threads() + 1;
        let txns = (0..n)
            .map(|_| Ok(Mutex::new(SendRo(store.env.begin_ro_txn()?))))
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(Self {
            chain_id,
            db: store.smt,
            txns,
        })
    }
}

impl NodeReader for LmdbNodeReader<'_> {
    fn get(&self, key: &NodeKey) -> Result<Option<Node>, SmtError> {
        let slot = rayon::current_thread_index()
            .map(|i| i + 1)
            .unwrap_or(0)
            .min(self.txns.len() - 1);
        let guard = self.txns[slot]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.0.get(self.db, &node_key(self.chain_id, key)) {
            Ok(v) => Node::decode(v).map(Some),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(SmtError::Store(e.to_string())),
        }
    }
}

/// Recomputes the state root from every stored account and state object,
/// from scratch: the audit behind `int state`'s `root_ok`. Returns the root
/// and the number of accounts.
pub fn recompute_root(store: &Store, chain_id: u32) -> Result<(Hash32, u64), StorageError> {
    let mut leaves = Vec::new();
    store.for_each_account(chain_id, |id, rec| leaves.push((id, rec.hash())))?;
    let n = leaves.len() as u64;
    store.for_each_object(chain_id, ObjectTable::State, |k, v| {
        leaves.push((object_leaf(k), *blake3::hash(v).as_bytes()))
    })?;
    Ok((smt::root_of(&mut leaves), n))
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
    fn commit_is_visible_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.head(3).unwrap(), None);
        let accounts = [(
            [1u8; 32],
            AccountRecord {
                int: 5,
                ..Default::default()
            },
        )];
        let updates = [(accounts[0].0, Some(accounts[0].1.hash()))];
        let reader = store.node_reader(3).unwrap();
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &updates).unwrap();
        drop(reader);
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
        assert_eq!(store.head(3).unwrap(), Some(head));
        // Another chain in the same store sees nothing.
        assert_eq!(store.head(4).unwrap(), None);
        assert_eq!(store.account(4, &[1; 32]).unwrap(), None);
        assert_eq!(store.account(3, &[1; 32]).unwrap(), Some(accounts[0].1));
        assert_eq!(recompute_root(&store, 3).unwrap(), (root, 1));
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
        let store = Store::open(dir.path()).unwrap();
        let receipt = |h: u8, index: u32| int_schemas::ReceiptFields {
            tx_hash: [h; 32],
            height: 5,
            index,
            status: int_schemas::wire::TxStatus::Ok,
            fee_charged: 1,
        };
        let receipts = int_schemas::build_receipts(5, &[receipt(0xa, 0), receipt(0xb, 1)]);
        let reader = store.node_reader(3).unwrap();
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &[]).unwrap();
        drop(reader);
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
        assert_eq!(store.tx_location(3, &[0xa; 32]).unwrap(), Some((5, 0)));
        assert_eq!(store.tx_location(3, &[0xb; 32]).unwrap(), Some((5, 1)));
        assert_eq!(store.tx_location(3, &[0xc; 32]).unwrap(), None);
        assert_eq!(store.tx_location(4, &[0xa; 32]).unwrap(), None);
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

    #[test]
    fn objects_commit_read_seek_and_enter_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
        let reader = store.node_reader(2).unwrap();
        let (root, nodes) = smt::update(&reader, &smt::EMPTY, &leaves).unwrap();
        drop(reader);
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
        let get = |t, k: &[u8]| store.object(2, t, k).unwrap();
        assert_eq!(
            get(ObjectTable::State, b"p/\x00\x05").as_deref(),
            Some(&b"five"[..])
        );
        assert_eq!(
            get(ObjectTable::Derived, b"p/\x00\x05").as_deref(),
            Some(&b"derived"[..])
        );
        assert_eq!(get(ObjectTable::Derived, b"p/\x00\x09"), None);
        assert_eq!(store.object(3, ObjectTable::State, b"q/1").unwrap(), None);
        let seek = |from: &[u8]| {
            store
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
        let r = store.scan_prefix(2, ObjectTable::State, b"p/", |_, _| {
            seen += 1;
            Err(StorageError::Corrupt {
                table: "objects",
                what: "stop".into(),
            })
        });
        assert!(matches!(r, Err(StorageError::Corrupt { what, .. }) if what == "stop"));
        assert_eq!(seen, 1);
        // The audit covers the state objects, not the derived ones.
        assert_eq!(recompute_root(&store, 2).unwrap(), (root, 0));
        // Deleting an object takes it out.
        let del = [w(ObjectTable::State, b"q/1", None)];
        let reader = store.node_reader(2).unwrap();
        let (root2, nodes2) = smt::update(&reader, &root, &[(object_leaf(b"q/1"), None)]).unwrap();
        drop(reader);
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
        assert_eq!(recompute_root(&store, 2).unwrap(), (root2, 0));
    }
}
