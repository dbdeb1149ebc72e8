//! The engine's twig log store (`int_engine::storage::twig::TwigStore`),
//! the implementation the spike's `twig` backend led to: the same blocks
//! through the real planner, index, segment files and commit protocol
//! (the meta that LMDB would commit is kept in memory here).

use std::path::Path;
use std::time::Instant;

use int_engine::storage::twig::TwigStore;

use crate::{Backend, Commit, Key, LOAD_CHUNK, Value};

/// The engine's store.
pub struct Store {
    store: Option<TwigStore>,
    dir: std::path::PathBuf,
}

impl Store {
    /// Opens a fresh store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            store: Some(TwigStore::open(dir, None)?),
            dir: dir.to_path_buf(),
        })
    }
}

impl Store {
    fn s(&mut self) -> &mut TwigStore {
        self.store.as_mut().expect("the store is open")
    }
}

impl Backend for Store {
    fn bulk_load(
        &mut self,
        keys: &[Key],
        value: &(dyn Fn(&Key) -> Value + Sync),
    ) -> anyhow::Result<Key> {
        for chunk in keys.chunks(LOAD_CHUNK) {
            let sorted: Vec<(Key, Vec<u8>)> =
                chunk.iter().map(|k| (*k, value(k).to_vec())).collect();
            let p = self.s().prepare_load(&sorted)?;
            let w = self.s().write(&p)?;
            self.s().apply(&p, w)?;
        }
        eprintln!(
            "store: {} MiB of index and tree in memory",
            self.s().memory_bytes() >> 20
        );
        Ok(self.s().root())
    }

    fn read(&mut self, keys: &[Key]) -> anyhow::Result<Vec<Value>> {
        use rayon::prelude::*;
        let store = self.s();
        keys.par_iter()
            .map(|k| {
                let v = store
                    .get(k)?
                    .ok_or_else(|| anyhow::anyhow!("missing key"))?;
                Ok(v.as_slice().try_into()?)
            })
            .collect()
    }

    fn commit(&mut self, updates: &[(Key, Value)]) -> anyhow::Result<Commit> {
        let t0 = Instant::now();
        let writes: Vec<(Key, Option<Vec<u8>>)> = updates
            .iter()
            .map(|(k, v)| (*k, Some(v.to_vec())))
            .collect();
        let p = self.s().prepare(&writes)?;
        let t1 = Instant::now();
        let root = p.root();
        let w = self.s().write(&p)?;
        self.s().apply(&p, w)?;
        let t2 = Instant::now();
        Ok(Commit {
            root,
            root_ms: (t1 - t0).as_secs_f64() * 1e3,
            write_ms: (t2 - t1).as_secs_f64() * 1e3,
        })
    }

    /// Reopens at the last meta: a scan of the held log rebuilds the index
    /// and the tree (page cache warm, as after a process kill; a machine
    /// reboot would read the log from disk).
    fn reopen(&mut self) -> anyhow::Result<Option<f64>> {
        let meta = self.s().meta().clone();
        let root = self.s().root();
        // The writer's lock goes with the old store: close it first.
        self.store = None;
        let t = Instant::now();
        let reopened = TwigStore::open(&self.dir, Some(&meta))?;
        let s = t.elapsed().as_secs_f64();
        anyhow::ensure!(reopened.root() == root, "reopened at another root");
        self.store = Some(reopened);
        eprintln!("store: reopened in {s:.2} s");
        Ok(Some(s))
    }
}
