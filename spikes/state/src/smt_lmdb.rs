//! Today's commitment: the engine's sparse Merkle tree, node by node in
//! LMDB, driven through the same calls a block makes (`smt::update` on a
//! parallel snapshot, then `Storage::commit_block`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use int_engine::state::smt::{self, EMPTY};
use int_engine::storage::{self, AccountRecord, BlockWrite, Head, Storage};

use crate::{Backend, Commit, Key, LOAD_CHUNK, Value};

const CHAIN: u32 = 1;

/// The engine's LMDB store.
pub struct SmtLmdb {
    store: Arc<dyn Storage>,
    root: Key,
    height: u64,
    accounts: u64,
}

impl SmtLmdb {
    /// Opens a fresh store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: storage::open(dir)?,
            root: EMPTY,
            height: 0,
            accounts: 0,
        })
    }

    fn write(&mut self, records: &[(Key, AccountRecord)]) -> anyhow::Result<Commit> {
        let t0 = Instant::now();
        let snap = self.store.parallel_snapshot()?;
        let updates: Vec<_> = records.iter().map(|(k, r)| (*k, Some(r.hash()))).collect();
        let (root, batch) = smt::update(&snap.nodes(CHAIN), &self.root, &updates)?;
        drop(snap);
        let t1 = Instant::now();
        self.height += 1;
        self.store.commit_block(&BlockWrite {
            chain_id: CHAIN,
            accounts: records,
            nodes: &batch,
            height: self.height,
            block: &[],
            receipts: &[],
            tx_hashes: &[],
            head: Head {
                height: self.height,
                hash: EMPTY,
                state_root: root,
                accounts: self.accounts,
            },
            objects: &[],
        })?;
        let t2 = Instant::now();
        self.root = root;
        Ok(Commit {
            root,
            root_ms: (t1 - t0).as_secs_f64() * 1e3,
            write_ms: (t2 - t1).as_secs_f64() * 1e3,
        })
    }
}

fn records(updates: &[(Key, Value)]) -> anyhow::Result<Vec<(Key, AccountRecord)>> {
    updates
        .iter()
        .map(|(k, v)| Ok((*k, AccountRecord::decode(v)?)))
        .collect()
}

impl Backend for SmtLmdb {
    fn bulk_load(
        &mut self,
        keys: &[Key],
        value: &(dyn Fn(&Key) -> Value + Sync),
    ) -> anyhow::Result<Key> {
        for chunk in keys.chunks(LOAD_CHUNK) {
            let ups: Vec<(Key, Value)> = chunk.iter().map(|k| (*k, value(k))).collect();
            self.accounts += chunk.len() as u64;
            self.write(&records(&ups)?)?;
        }
        Ok(self.root)
    }

    fn read(&mut self, keys: &[Key]) -> anyhow::Result<Vec<Value>> {
        let snap = self.store.parallel_snapshot()?;
        snap.accounts(CHAIN, keys)?
            .into_iter()
            .map(|r| {
                r.map(|r| r.encode())
                    .ok_or_else(|| anyhow::anyhow!("missing account"))
            })
            .collect()
    }

    fn commit(&mut self, updates: &[(Key, Value)]) -> anyhow::Result<Commit> {
        self.write(&records(updates)?)
    }
}
