//! Issue 16's spike: one stream of blocks of random transfers driven through
//! three state commitments, each in its own process, so that their commit
//! cost per block can be compared as the population grows.
//!
//! - `smt` (at commit c45a92f, where it was measured; gone since the store
//!   stopped committing the SMT): the engine's sparse Merkle tree, node by
//!   node in LMDB, through the engine's own `smt::update` and
//!   `Storage::commit_block`.
//! - `twig`: a QMDB-style twig log of our own ([`twig`]): entries appended
//!   to a file, a Merkle tree over log positions in memory.
//! - `nomt`: the `nomt` crate (Thrum), a page-based binary Merkle trie.
//! - `store`: the engine's twig log store that the spike led to
//!   (`int_engine::storage::twig`), for the same figures from the real
//!   code.
//!
//! ```text
//! cargo run --release --manifest-path spikes/state/Cargo.toml -- \
//!     --backend twig --accounts 10000000 --blocks 20 --dir /tmp/spike
//! ```
//!
//! `run.sh` runs every backend at 10⁶ and 10⁷ accounts; the figures and
//! the choice they led to are in `engine/src/state/twig.rs`'s module doc.
//!
//! Each run prints one JSON line. A block is `TRANSFERS` random transfers
//! between existing accounts (≈ 2 × `TRANSFERS` distinct updates): the
//! harness reads the touched accounts' values (`read_ms`), applies the
//! transfers, and asks the backend to compute the new root and make it
//! durable (`commit_ms`, split into `root_ms` and `write_ms` where the
//! backend can tell them apart). Bytes written come from the kernel's
//! per-process I/O accounting (`/proc/self/io`, `write_bytes`: bytes sent to
//! the block layer or dirtied in the page cache), peak memory from `VmHWM`.

mod nomt_backend;
mod store;
mod twig;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use rand::Rng;
use rand::SeedableRng;

/// A state key: an account id (uniformly random bytes).
pub type Key = [u8; 32];
/// The value of one account: the engine's 171-byte account record.
pub type Value = [u8; VALUE_BYTES];
/// Bytes of an account record (`int_engine::storage::ACCOUNT_RECORD_BYTES`).
pub const VALUE_BYTES: usize = int_engine::storage::ACCOUNT_RECORD_BYTES;

/// Transfers per block, as in `int bench tps`.
const TRANSFERS: usize = 10_000;
/// Keys per bulk-load chunk.
pub const LOAD_CHUNK: usize = 1 << 20;

/// The time one commit took, split where the backend can split it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Commit {
    /// The new state root.
    pub root: Key,
    /// Computing the root (hashing, reading tree nodes).
    pub root_ms: f64,
    /// Making it durable (writes and fsync).
    pub write_ms: f64,
}

/// One state commitment under test.
pub trait Backend {
    /// Creates the population: `keys` sorted ascending and distinct, every
    /// value `value(key)`. Returns the root.
    fn bulk_load(
        &mut self,
        keys: &[Key],
        value: &(dyn Fn(&Key) -> Value + Sync),
    ) -> anyhow::Result<Key>;
    /// The committed values of `keys` (sorted, distinct, all present).
    fn read(&mut self, keys: &[Key]) -> anyhow::Result<Vec<Value>>;
    /// Writes `updates` (sorted by key, distinct, existing keys), computes
    /// the new root and makes it durable before returning.
    fn commit(&mut self, updates: &[(Key, Value)]) -> anyhow::Result<Commit>;
    /// Closes and reopens the store at its last commit, as after a kill;
    /// returns the seconds the reopen took (`None` where not measured).
    fn reopen(&mut self) -> anyhow::Result<Option<f64>> {
        Ok(None)
    }
}

/// The id of account `i`.
pub fn key_of(i: u64) -> Key {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// The genesis value of an account: 10⁶ INT, a public key derived from the id.
pub fn genesis_value(k: &Key) -> Value {
    let mut pk = [0u8; 96];
    pk[..32].copy_from_slice(k);
    int_engine::storage::AccountRecord {
        nonce: 0,
        int: 1_000_000,
        gas: 1_000_000,
        public_key: Some(pk),
        device_kind: 1,
        metadata_hash: *k,
    }
    .encode()
}

struct Args {
    backend: String,
    accounts: u64,
    blocks: usize,
    dir: PathBuf,
    seed: u64,
    reopen: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        backend: String::new(),
        accounts: 1_000_000,
        blocks: 20,
        dir: PathBuf::from("/tmp/int-state-spike"),
        seed: 16,
        reopen: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        // (`--no-reopen` takes none.)
        match flag.as_str() {
            "--backend" => a.backend = val()?,
            "--accounts" => a.accounts = val()?.parse::<f64>()? as u64,
            "--blocks" => a.blocks = val()?.parse()?,
            "--dir" => a.dir = val()?.into(),
            "--seed" => a.seed = val()?.parse()?,
            "--no-reopen" => a.reopen = false,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn proc_io_write_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Applies a block of transfers to the values read.
fn apply_transfers(
    pairs: &[(usize, usize)],
    keys: &[Key],
    values: &mut [Value],
) -> Vec<(Key, Value)> {
    use int_engine::storage::AccountRecord;
    let mut recs: Vec<AccountRecord> = values
        .iter()
        .map(|v| AccountRecord::decode(v).expect("spike values decode"))
        .collect();
    for &(from, to) in pairs {
        recs[from].nonce += 1;
        recs[from].int -= 1;
        recs[to].int += 1;
    }
    keys.iter()
        .zip(recs)
        .map(|(k, r)| (*k, r.encode()))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = args.dir.join(format!("{}-{}", args.backend, args.accounts));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut backend: Box<dyn Backend> = match args.backend.as_str() {
        "twig" => Box::new(twig::TwigLog::open(&dir)?),
        "nomt" => Box::new(nomt_backend::NomtBackend::open(&dir)?),
        "store" => Box::new(store::Store::open(&dir)?),
        other => bail!("--backend twig|nomt|store, not {other:?}"),
    };

    let t = Instant::now();
    let mut ids: Vec<Key> = {
        use rayon::prelude::*;
        (0..args.accounts).into_par_iter().map(key_of).collect()
    };
    let mut sorted = ids.clone();
    {
        use rayon::slice::ParallelSliceMut;
        sorted.par_sort_unstable();
    }
    let root0 = backend.bulk_load(&sorted, &genesis_value)?;
    drop(sorted);
    let load_s = t.elapsed().as_secs_f64();
    let disk_after_load = disk_bytes(&dir);
    eprintln!(
        "{}: loaded {} accounts in {load_s:.1} s, root {}",
        args.backend,
        args.accounts,
        hex(&root0)
    );

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let (mut read_ms, mut commit_ms, mut root_ms, mut write_ms, mut bytes) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut updates_n = 0usize;
    let mut last_root = root0;
    for b in 0..args.blocks {
        let raw: Vec<(u64, u64)> = (0..TRANSFERS)
            .map(|_| {
                (
                    rng.gen_range(0..args.accounts),
                    rng.gen_range(0..args.accounts),
                )
            })
            .collect();
        let mut keys: Vec<Key> = raw
            .iter()
            .flat_map(|&(f, t)| [ids[f as usize], ids[t as usize]])
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let pos = |i: u64| keys.binary_search(&ids[i as usize]).expect("touched key");
        let pairs: Vec<(usize, usize)> = raw.iter().map(|&(f, t)| (pos(f), pos(t))).collect();

        let io0 = proc_io_write_bytes();
        let t0 = Instant::now();
        let mut values = backend.read(&keys)?;
        let t1 = Instant::now();
        let updates = apply_transfers(&pairs, &keys, &mut values);
        let t2 = Instant::now();
        let c = backend.commit(&updates)?;
        let t3 = Instant::now();
        let io1 = proc_io_write_bytes();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        eprintln!(
            "block {b}: {} updates, read {:.1} ms, commit {:.1} ms (root {:.1}, write {:.1}), {:.1} MiB written",
            updates.len(),
            ms(t0, t1),
            ms(t2, t3),
            c.root_ms,
            c.write_ms,
            (io1 - io0) as f64 / (1 << 20) as f64
        );
        updates_n += updates.len();
        read_ms.push(ms(t0, t1));
        commit_ms.push(ms(t2, t3));
        root_ms.push(c.root_ms);
        write_ms.push(c.write_ms);
        bytes.push((io1 - io0) as f64);
        last_root = c.root;
    }
    let reopen_s = if args.reopen { backend.reopen()? } else { None };
    // Keep `ids` alive to the end: its memory is the harness's, not the
    // backend's, and is reported separately.
    ids.truncate(ids.len());
    let ids_mib = (ids.capacity() * 32) as f64 / (1 << 20) as f64;
    let (r, c) = (median(&mut read_ms), median(&mut commit_ms));
    println!(
        "{{\"backend\":\"{}\",\"accounts\":{},\"blocks\":{},\"transfers_per_block\":{TRANSFERS},\
\"updates_per_block\":{},\"load_s\":{load_s:.1},\"read_ms\":{r:.1},\"commit_ms\":{c:.1},\
\"root_ms\":{:.1},\"write_ms\":{:.1},\"commit_ms_max\":{:.1},\"tx_per_s\":{:.0},\
\"updates_per_s\":{:.0},\"mib_written_per_block\":{:.1},\"peak_rss_mib\":{},\
\"harness_ids_mib\":{ids_mib:.0},\"disk_bytes_per_account_after_load\":{:.0},\
\"disk_bytes_per_account_end\":{:.0},\"reopen_s\":{},\"root\":\"{}\"}}",
        args.backend,
        args.accounts,
        args.blocks,
        updates_n / args.blocks.max(1),
        median(&mut root_ms),
        median(&mut write_ms),
        commit_ms.iter().cloned().fold(0.0, f64::max),
        TRANSFERS as f64 / ((r + c) / 1e3),
        (updates_n / args.blocks.max(1)) as f64 / ((r + c) / 1e3),
        median(&mut bytes) / (1 << 20) as f64,
        status_kib("VmHWM:") / 1024,
        disk_after_load as f64 / args.accounts as f64,
        disk_bytes(&dir) as f64 / args.accounts as f64,
        reopen_s.map_or("null".to_string(), |s| format!("{s:.2}")),
        hex(&last_root),
    );
    Ok(())
}

fn hex(k: &Key) -> String {
    k.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
