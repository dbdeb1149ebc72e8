//! The `nomt` crate (Thrum, v1.0.5) as a state commitment: a binary Merkle
//! trie stored as 4 KiB pages of 6 trie levels in an on-disk hash table
//! ("bitbox", `ht` + `wal`), values in a B-epsilon tree ("beatree", `ln` +
//! `bbn`), with blake3 (`nomt::hasher::Blake3Hasher`) for nodes and values.
//!
//! Options, and why:
//! - `hashtable_buckets`: sized when the population is known, so
//!   [`Nomt::open`] is deferred from [`NomtBackend::open`] to the first
//!   [`Backend::bulk_load`]. The bucket count is twice the expected number
//!   of stored trie pages ([`expected_pages`]; at most ≈ 1 per 20 accounts,
//!   as nomt elides pages with fewer than 20 leaves below them), i.e. ≈ 50 %
//!   occupancy, with a floor of 4096 buckets; nomt warns that performance
//!   degrades beyond 0.9. Each bucket is a 4 KiB page, preallocated
//!   (`preallocate_ht`, nomt's default, which avoids a fragmented sparse
//!   file). The updates of the spike never add keys, so the occupancy after
//!   the load is the occupancy throughout.
//! - `commit_concurrency` = available cores (2 here): the merkle update
//!   workers; nomt's benchtop defaults to 1, but with warm-up on (below)
//!   more workers pipeline page fetches and hashing.
//! - `io_workers` = 3: nomt's default and its benchtop's (io_uring
//!   instances, one thread each, blocked in the kernel most of the time).
//! - `warm_up` on: [`Backend::read`] opens the block's session and calls
//!   `Session::warm_up` for each touched key, so that the merkle pages are
//!   fetched while the block executes, as a node would; without this
//!   option `warm_up` is a no-op.
//! - page cache and leaf cache: nomt's defaults (256 MiB each).
//! - `bitbox_seed` fixed (the table layout, not the root, depends on it),
//!   `rollback` off (no reorgs in the spike; on, it adds an undo log write
//!   per commit), metrics off.
//!
//! Environment overrides, for experiments: `NOMT_BUCKETS`,
//! `NOMT_COMMIT_CONCURRENCY`, `NOMT_IO_WORKERS`, `NOMT_PAGE_CACHE_MIB`,
//! `NOMT_LEAF_CACHE_MIB`, `NOMT_WARM_UP` (0/1).
//!
//! Durability: `FinishedSession::commit` returns only after the bitbox WAL,
//! the beatree files and the meta page are fsynced (`store::sync`) and the
//! hash-table pages written and fsynced, so a returned commit is durable;
//! nomt has no "no-sync" mode to turn off.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use nomt::hasher::Blake3Hasher;
use nomt::{FinishedSession, KeyReadWrite, Nomt, Options, Session, SessionParams};
use rayon::prelude::*;

use crate::{Backend, Commit, Key, LOAD_CHUNK, Value};

/// The hasher: blake3 for internal nodes, leaves and values.
type H = Blake3Hasher;

/// `nomt` in `dir`.
pub struct NomtBackend {
    dir: PathBuf,
    /// Opened by the first [`Backend::bulk_load`], once the population is
    /// known.
    db: Option<Nomt<H>>,
    /// The block's session, opened by [`Backend::read`] (with the touched
    /// keys warmed up) and finished by [`Backend::commit`].
    session: Option<Session<H>>,
    /// The keys and values read in `session`, to record read-then-write
    /// accesses at `finish`.
    read_set: Vec<(Key, Value)>,
}

fn env<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => Ok(Some(v.parse().with_context(|| format!("{name}={v:?}"))?)),
        Err(_) => Ok(None),
    }
}

/// The expected number of merkle pages in nomt's hash table for `n`
/// uniformly random keys. A page at level `k` holds trie depths
/// `6k+1 ..= 6k+6` below one of the `64^k` prefixes of `6k` bits. Pages at
/// levels 0 and 1 are stored when their prefix holds two keys or more; a
/// deeper page only when its subtree holds at least
/// `nomt::merkle::PAGE_ELISION_THRESHOLD` = 20 leaves (nomt rebuilds
/// sparser ones from the values when it needs them). Hence
/// Σ_k 64^k · P(Poisson(n / 64^k) ≥ m_k): a step function of `n`, under
/// n / 20 pages: ≈ 4 200 from 2·10^5 to 2·10^6 accounts, ≈ 266 000 from
/// 10^7 to 10^8.
pub fn expected_pages(n: usize) -> f64 {
    /// `PAGE_ELISION_THRESHOLD` in nomt 1.0.5 (`src/merkle/mod.rs`, private).
    const ELISION_THRESHOLD: u32 = 20;
    // P(Poisson(λ) ≥ m), summing the terms below m in log space.
    let tail = |lambda: f64, m: u32| -> f64 {
        if lambda <= 0.0 {
            return 0.0;
        }
        let (mut below, mut ln_fact) = (0.0, 0.0);
        for j in 0..m {
            if j > 0 {
                ln_fact += (j as f64).ln();
            }
            below += (-lambda + j as f64 * lambda.ln() - ln_fact).exp();
        }
        (1.0 - below).max(0.0)
    };
    let n = n as f64;
    let mut total = 0.0;
    let mut prefixes = 1.0f64;
    for level in 0.. {
        let lambda = n / prefixes;
        let m = if level < 2 { 2 } else { ELISION_THRESHOLD };
        total += prefixes * tail(lambda, m);
        if lambda < 1.0 {
            break;
        }
        prefixes *= 64.0;
    }
    total
}

impl NomtBackend {
    /// A fresh database in `dir`; opened at the first bulk load.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            db: None,
            session: None,
            read_set: Vec::new(),
        })
    }

    fn options(&self, accounts: usize) -> anyhow::Result<Options> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let buckets = match env::<u32>("NOMT_BUCKETS")? {
            Some(b) => b,
            None => {
                let b = (expected_pages(accounts) * 2.0).ceil().max(4096.0);
                if b > u32::MAX as f64 {
                    bail!("{accounts} accounts need more than 2^32 hash-table buckets");
                }
                b as u32
            }
        };
        let mut o = Options::new();
        o.path(&self.dir);
        o.hashtable_buckets(buckets);
        o.commit_concurrency(env("NOMT_COMMIT_CONCURRENCY")?.unwrap_or(cores));
        let io_workers = env("NOMT_IO_WORKERS")?.unwrap_or(3);
        if io_workers == 0 {
            bail!("NOMT_IO_WORKERS must be positive");
        }
        o.io_workers(io_workers);
        o.warm_up(env::<u8>("NOMT_WARM_UP")? != Some(0));
        if let Some(mib) = env("NOMT_PAGE_CACHE_MIB")? {
            o.page_cache_size(mib);
        }
        if let Some(mib) = env("NOMT_LEAF_CACHE_MIB")? {
            o.leaf_cache_size(mib);
        }
        o.bitbox_seed([0x16; 16]);
        o.preallocate_ht(true);
        o.rollback(false);
        o.metrics(false);
        eprintln!(
            "nomt: {buckets} buckets ({:.0} pages expected), io_uring {}, options {o:?}",
            expected_pages(accounts),
            match nomt::check_iou_permissions() {
                nomt::IoUringPermission::Allowed => "allowed",
                nomt::IoUringPermission::Denied => "DENIED",
                nomt::IoUringPermission::NotSupported => "NOT SUPPORTED",
            },
        );
        Ok(o)
    }

    fn db(&self) -> anyhow::Result<&Nomt<H>> {
        self.db.as_ref().context("nomt: bulk_load first")
    }

    /// Finishes `session` with `actuals` and commits it, timing each step.
    fn finish_and_commit(
        db: &Nomt<H>,
        session: Session<H>,
        actuals: Vec<(Key, KeyReadWrite)>,
    ) -> anyhow::Result<Commit> {
        let t0 = Instant::now();
        let finished: FinishedSession = session.finish(actuals).context("nomt: finish")?;
        let root = finished.root().into_inner();
        let t1 = Instant::now();
        finished.commit(db).context("nomt: commit")?;
        let t2 = Instant::now();
        if db.root().into_inner() != root {
            bail!("nomt: root after commit differs from the finished session's");
        }
        Ok(Commit {
            root,
            root_ms: (t1 - t0).as_secs_f64() * 1e3,
            write_ms: (t2 - t1).as_secs_f64() * 1e3,
        })
    }
}

impl Backend for NomtBackend {
    fn bulk_load(
        &mut self,
        keys: &[Key],
        value: &(dyn Fn(&Key) -> Value + Sync),
    ) -> anyhow::Result<Key> {
        if self.db.is_none() {
            let o = self.options(keys.len())?;
            self.db = Some(Nomt::open(o).context("nomt: open")?);
        }
        let db = self.db()?;
        for chunk in keys.chunks(LOAD_CHUNK) {
            // `keys` is sorted and distinct, as `finish` requires.
            let actuals: Vec<(Key, KeyReadWrite)> = chunk
                .par_iter()
                .map(|k| (*k, KeyReadWrite::Write(Some(value(k).to_vec()))))
                .collect();
            // No warm-up: the pages of a fresh trie are mostly new.
            let session = db.begin_session(SessionParams::default());
            Self::finish_and_commit(db, session, actuals)?;
        }
        let u = db.hash_table_utilization();
        eprintln!(
            "nomt: hash table {}/{} buckets occupied ({:.3})",
            u.occupied,
            u.capacity,
            u.occupancy_rate()
        );
        Ok(db.root().into_inner())
    }

    /// Opens the block's session, warms up the touched keys' merkle paths
    /// (the fetches overlap with the reads here and with the harness's
    /// execution), and reads the values through the session, in parallel
    /// (`Session` is `Sync`). The session stays open for [`Self::commit`],
    /// which is what a node executing the block would do; it sees the last
    /// committed state (it was begun after the last commit).
    fn read(&mut self, keys: &[Key]) -> anyhow::Result<Vec<Value>> {
        let db = self.db.as_ref().context("nomt: bulk_load first")?;
        // A session left over from a read not followed by a commit is
        // dropped (an abandoned block).
        self.session = None;
        let session = db.begin_session(SessionParams::default());
        for k in keys {
            session.warm_up(*k);
        }
        let values: Vec<Value> = keys
            .par_iter()
            .map(|k| {
                let v = session
                    .read(*k)
                    .context("nomt: read")?
                    .with_context(|| format!("nomt: missing key {:02x?}", &k[..8]))?;
                Value::try_from(v.as_slice())
                    .map_err(|_| anyhow::anyhow!("nomt: value of {} bytes", v.len()))
            })
            .collect::<anyhow::Result<_>>()?;
        self.read_set = keys.iter().copied().zip(values.iter().copied()).collect();
        self.session = Some(session);
        Ok(values)
    }

    fn commit(&mut self, updates: &[(Key, Value)]) -> anyhow::Result<Commit> {
        let db = self.db.as_ref().context("nomt: bulk_load first")?;
        let session = match self.session.take() {
            Some(s) => s,
            None => {
                let s = db.begin_session(SessionParams::default());
                for (k, _) in updates {
                    s.warm_up(*k);
                }
                s
            }
        };
        // Both lists are sorted by key: a merge records the keys read in
        // this session as read-then-write, the rest as blind writes (the
        // root is the same either way; only witnesses and rollback differ).
        let read_set = std::mem::take(&mut self.read_set);
        let mut reads = read_set.iter().peekable();
        let mut actuals = Vec::with_capacity(updates.len());
        for (k, v) in updates {
            while reads.next_if(|(rk, _)| rk < k).is_some() {}
            let new = Some(v.to_vec());
            let rw = match reads.next_if(|(rk, _)| rk == k) {
                Some((_, old)) => KeyReadWrite::ReadThenWrite(Some(old.to_vec()), new),
                None => KeyReadWrite::Write(new),
            };
            actuals.push((*k, rw));
        }
        Self::finish_and_commit(db, session, actuals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nomt-backend-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    #[test]
    fn expected_pages_is_plausible() {
        assert!(expected_pages(0) < 1.0);
        // Levels 0–2 full, level 3 below the elision threshold.
        let p = expected_pages(1_000_000);
        assert!((4160.0..4170.0).contains(&p), "{p}");
        // Level 2 partly elided (λ ≈ 24.4); 3 499 buckets measured.
        let p = expected_pages(100_000);
        assert!((3400.0..3600.0).contains(&p), "{p}");
    }

    /// Reads see the last commit, and the root does not depend on chunking
    /// or on whether the writes were read first.
    #[test]
    fn read_sees_commits_and_roots_agree() -> anyhow::Result<()> {
        let mut keys: Vec<Key> = (0..5000u64).map(crate::key_of).collect();
        keys.sort_unstable();
        let dir = tmp("a");
        let mut a = NomtBackend::open(&dir)?;
        let r0 = a.bulk_load(&keys, &crate::genesis_value)?;
        assert_eq!(r0.len(), 32);
        let touched: Vec<Key> = keys.iter().step_by(7).copied().collect();
        let vals = a.read(&touched)?;
        assert_eq!(vals[0], crate::genesis_value(&touched[0]));
        let mut new = vals.clone();
        for v in &mut new {
            v[0] ^= 0xff;
        }
        let updates: Vec<(Key, Value)> = touched.iter().copied().zip(new.clone()).collect();
        let c = a.commit(&updates)?;
        assert_ne!(c.root, r0);
        assert_eq!(a.read(&touched)?, new);
        // Without a preceding read (blind writes).
        let c2 = a.commit(&updates)?;
        assert_eq!(c2.root, c.root);

        // The same end state loaded in one go.
        let dir_b = tmp("b");
        let mut b = NomtBackend::open(&dir_b)?;
        let rb = b.bulk_load(&keys, &|k: &Key| match touched.binary_search(k) {
            Ok(i) => new[i],
            Err(_) => crate::genesis_value(k),
        })?;
        assert_eq!(rb, c.root);
        drop((a, b));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(dir_b);
        Ok(())
    }
}
