//! The throughput harness behind `int bench tps`.
//!
//! One run measures, in this order (`--workload market` skips phases 1 and
//! 2, and `transfers`, the default, the market blocks of phase 3):
//!
//! 1. **Raw bound.** `S` signed transfers are made by a [`Fleet`] of
//!    devices before any timing. Their signatures are checked over all cores
//!    with [`bls::aggregate_verify`] (one aggregate over `S` distinct
//!    messages: the cheapest way blst has to check them) and with
//!    [`bls::batch_verify`] (random-scalar batch, what ingress uses), both in
//!    signatures per second. `batch_verify` is also timed at the smaller
//!    sizes of `--sizes`, for the plot.
//! 2. **End to end.** The same `S` envelopes go through the real pipeline
//!    of a node, as the devnet runs it: an ingress thread checks them in
//!    batches of `--ingress-batch` with [`ingress::check_batch`] (keys from
//!    a warm [`KeyCache`]) and admits them to the [`Mempool`]; the producer
//!    thread takes blocks of up to `--block-txs` (sealing when a block is
//!    full, `--block-ms` after the last one, or when ingress is done) and
//!    runs [`Chain::execute_block`] with the [`LedgerPlugin`], committing to
//!    LMDB in a temporary directory. Ingress of the next batch overlaps the
//!    execution of the current block. The senders are registered at genesis
//!    (their key in the genesis record), so no registration transactions
//!    are needed. The figure is included-and-succeeded transactions over the
//!    wall time from the first ingress batch to the last commit, and its
//!    ratio to the raw bound.
//! 3. **Execution + commit.** A genesis of `--accounts` accounts (each with
//!    a key, so each can send) through [`Chain::genesis_of`] (sorted, then
//!    loaded a chunk at a time, never held as a list), timed on its own;
//!    then `--blocks` blocks of `--block-txs` random transfers (random sender
//!    to random receiver, nonces tracked per sender) built without signing
//!    and admitted with [`ingress::assume_verified`] (one real signature
//!    reused in every envelope: sealing aggregates the signatures, so they
//!    must be valid points). Transactions per second over the blocks, and
//!    where the time went ([`BlockResult::timings`] summed).
//!
//!    With `--workload market` or `both`, the chain also runs the
//!    [`MarketPlugin`] (a block without market work pays one B-tree seek
//!    for it), every account's key is a real one from a pool of 256, and
//!    after the transfer blocks the same chain runs market blocks
//!    (`market.rs` has the details): an untimed block lists SKUs under the
//!    four price models (up to 64 each, one per seller) and an untimed
//!    warm-up block opens channels and CPP orders; then `--blocks` blocks
//!    of `--block-txs` operations are built (the metering receipts the
//!    buyers sign made here, before timing) and timed, a sixth each of
//!    price-tag `Buy`, `PlaceBid` into the open auction window, `Order`,
//!    the buyer's `ConfirmUse` of an earlier order, `OpenChannel`, and the
//!    seller's `ClaimChannel` of an earlier channel, whose receipt
//!    signature the chain verifies. Succeeded operations per second, `ok`
//!    beside `total` (per operation too; the harness fails when fewer than
//!    99% succeed), and their ratio to the transfers per second of the same
//!    run. An untimed block then delists the auctions, so that no market
//!    timer runs in the blocks after.
//!
//!    Then transfers at each size of `--sizes`, for the plot.
//!
//! The report goes to `OUT/tps.json`, the plot of throughput against batch
//! and block size to `OUT/tps.svg` (`OUT` is `--out`, default `bench-out`).
//! Progress goes to stderr.
//!
//! [`BlockResult::timings`]: int_engine::chain::BlockResult

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use int_engine::chain::{Chain, ChainConfig, ChainError, Timings};
use int_engine::crypto::bls::{
    self, BatchItem, CpuG1, CryptoError, DST_SIG, PublicKey, SecretKey, Signature, tx_message,
};
use int_engine::ingress::{self, IngressConfig, IngressError, KeySource, VerifiedTx};
use int_engine::mempool::{Mempool, NONCE_AHEAD_MAX};
use int_engine::storage::{AccountRecord, StorageError};
use int_schemas::wire::{Token, TxStatus};
use int_schemas::{
    AccountId, DecodeError, Hash32, PayloadSpec, TxBodySpec, build_envelope, build_tx_body,
    decode_tx,
};
use int_systems::market::MarketError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::service::node::{Admitter, Stats, produce_block};
use crate::service::spec::ChainSpec;
use crate::sim::fleet::{DEVICE_FEE, Fleet, now_ms, validator_account};

mod market;
mod plot;

/// Chain id of the chains the harness builds.
const CHAIN_ID: u32 = 1;
/// INT and GAS of every account of the execution phase.
const EXEC_BALANCE: u128 = 1_000_000_000_000_000;

/// Options of `int bench tps`.
#[derive(Debug, Clone, clap::Args)]
pub struct TpsArgs {
    /// Accounts in the state for the execution + commit measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub accounts: usize,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for the report (JSON) and the plot (SVG) [default: bench-out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Signed transfers for the raw bound and the end-to-end run.
    #[arg(long, default_value_t = 65_536)]
    pub sigs: usize,
    /// Simulated devices sending the signed transfers.
    #[arg(long, default_value_t = 1024)]
    pub devices: usize,
    /// Transactions per ingress batch (end to end).
    #[arg(long, default_value_t = 1024)]
    pub ingress_batch: usize,
    /// Most transactions per block (end to end, and the block size of the
    /// execution + commit measurement).
    #[arg(long, default_value_t = 10_000)]
    pub block_txs: usize,
    /// Blocks of the execution + commit measurement.
    #[arg(long, default_value_t = 10)]
    pub blocks: usize,
    /// End to end: seal a non-full block this long after the last one.
    #[arg(long, default_value_t = 500)]
    pub block_ms: u64,
    /// Accounts kept in the ECS world between blocks.
    #[arg(long, default_value_t = 200_000)]
    pub hot_capacity: usize,
    /// Batch and block sizes of the plot (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [256, 1024, 4096, 16384, 65536])]
    pub sizes: Vec<usize>,
    /// What to measure: `transfers` (the signature phases and execution +
    /// commit of transfers), `market` (execution + commit of transfers and
    /// of market operations on the same chain, no signature phases), or
    /// `both`.
    #[arg(long, value_enum, default_value_t = Workload::Transfers)]
    pub workload: Workload,
}

/// The workloads of `int bench tps --workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Signed transfers (raw bound, end to end) and verified transfers
    /// (execution + commit): the three phases.
    #[default]
    Transfers,
    /// Execution + commit of verified transfers, then of market operations
    /// on the same chain; the signature phases are skipped.
    Market,
    /// The three phases, and the market blocks after the transfer blocks.
    Both,
}

impl Workload {
    /// Its name on the command line.
    fn name(self) -> &'static str {
        match self {
            Self::Transfers => "transfers",
            Self::Market => "market",
            Self::Both => "both",
        }
    }

    /// Whether the raw bound and the end-to-end run are measured.
    fn signatures(self) -> bool {
        self != Self::Market
    }

    /// Whether the market blocks are measured.
    fn market(self) -> bool {
        self != Self::Transfers
    }
}

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum TpsError {
    /// The block pipeline failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Reading the market's state failed.
    #[error(transparent)]
    Market(#[from] MarketError),
    /// A file or directory could not be written or created.
    #[error("{path}: {source}")]
    Io {
        /// What was being written.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A transaction the harness built does not decode.
    #[error("decoding a built transaction: {0}")]
    Decode(#[from] DecodeError),
    /// A transaction the harness built was refused.
    #[error("a built transaction was refused: {0}")]
    Ingress(#[from] IngressError),
    /// A key or signature failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// Encoding the report failed.
    #[error("report: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing the plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// An argument is out of range.
    #[error("bad argument: {0}")]
    BadArgs(String),
    /// A measurement went wrong (a signature did not verify, a transaction
    /// failed, a thread panicked).
    #[error("measurement failed: {0}")]
    Failed(String),
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// CPU model, when the OS tells.
    pub cpu: Option<String>,
    /// rayon worker threads.
    pub rayon_threads: usize,
}

impl Machine {
    /// The machine this process runs on.
    pub fn current() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: cpu_model(),
            rayon_threads: rayon::current_num_threads(),
        }
    }
}

/// Microseconds per stage of the block pipeline, summed over blocks.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageUs {
    /// Loading the touched accounts from the state log into the world.
    pub load: u64,
    /// Running the execution systems.
    pub execute: u64,
    /// Updating the state root (sparse Merkle tree).
    pub root: u64,
    /// Building and signing the block (includes aggregating the
    /// transactions' signatures).
    pub seal: u64,
    /// The LMDB write transaction.
    pub commit: u64,
    /// The rest of `execute_block` (receipts, collecting dirty accounts,
    /// evicting cold ones): wall time minus the stages above.
    pub other: u64,
}

impl StageUs {
    fn add(&mut self, t: &Timings) {
        self.load += t.load_us;
        self.execute += t.execute_us;
        self.root += t.root_us;
        self.seal += t.seal_us;
        self.commit += t.commit_us;
    }

    fn with_wall(mut self, wall: Duration) -> Self {
        let staged = self.load + self.execute + self.root + self.seal + self.commit;
        self.other = (wall.as_micros() as u64).saturating_sub(staged);
        self
    }
}

/// The end-to-end run in detail.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// Signed transfers sent.
    pub txs: usize,
    /// Of which included in a block with status `Ok`.
    pub ok: u64,
    /// Refused at ingress or by the mempool.
    pub rejected: u64,
    /// Included with another status.
    pub failed: u64,
    /// Blocks produced.
    pub blocks: u64,
    /// Devices sending.
    pub devices: usize,
    /// Transactions per ingress batch.
    pub ingress_batch: usize,
    /// Most transactions per block.
    pub block_txs_max: usize,
    /// Wall time from the first ingress batch to the last commit.
    pub seconds: f64,
    /// Time the ingress thread spent in `check_batch`.
    pub check_batch_s: f64,
    /// Time the producer thread spent in `execute_block`.
    pub execute_block_s: f64,
    /// Where `execute_block`'s time went.
    pub stage_us: StageUs,
    /// Time to warm the key cache with every sender's key (not timed).
    pub key_cache_warm_s: f64,
}

/// The execution + commit run in detail.
#[derive(Debug, Clone, Serialize)]
pub struct ExecReport {
    /// Transactions per block.
    pub block_txs: usize,
    /// Blocks measured.
    pub blocks: usize,
    /// Transactions executed.
    pub txs: usize,
    /// Of which with status `Ok`.
    pub ok: u64,
    /// Wall time of the measured blocks.
    pub seconds: f64,
    /// Accounts in the state after the run.
    pub accounts_after: u64,
    /// Accounts held in the world between blocks.
    pub hot_capacity: usize,
    /// Time to build the blocks' transactions (not timed).
    pub build_s: f64,
    /// Bytes the process wrote to storage per block (`/proc/self/io`
    /// `write_bytes`, Linux), MiB: LMDB copies on write every page a block
    /// touches. The kernel counts the page cache dirtied by whole folio.
    pub written_mib_per_block: Option<f64>,
    /// Bytes the process passed to write calls per block (`wchar`), MiB.
    pub write_calls_mib_per_block: Option<f64>,
    /// CPU time of the process (user + system, every thread) per measured
    /// block, ms. Against the block's wall time it says how much of the
    /// cores a block keeps busy. It moves with the machine's speed as wall
    /// time does (a VM's stolen time counts in it), so two builds are
    /// compared by alternated runs, not by this figure alone.
    pub cpu_ms_per_block: Option<f64>,
    /// LMDB pages per table after the measured blocks: `[name, entries,
    /// leaf pages, branch pages, overflow pages]`, and the file's
    /// high-water mark in pages.
    pub storage_tables: Vec<(String, u64, u64, u64, u64)>,
    /// Highest page in use after the measured blocks.
    pub storage_last_page: u64,
}

/// One kind of market operation of the measured market blocks.
#[derive(Debug, Clone, Serialize)]
pub struct MarketOpCount {
    /// The payload.
    pub op: &'static str,
    /// Executed.
    pub total: u64,
    /// Of which with status `Ok`.
    pub ok: u64,
}

/// The market blocks of the execution + commit phase in detail.
#[derive(Debug, Clone, Serialize)]
pub struct MarketReport {
    /// Operations (transactions) per block.
    pub block_txs: usize,
    /// Blocks measured.
    pub blocks: usize,
    /// Operations executed.
    pub total: u64,
    /// Of which with status `Ok` (the harness fails below 99%).
    pub ok: u64,
    /// The other statuses, by name, and how many of each.
    pub failed: BTreeMap<String, u64>,
    /// Executed and succeeded, per operation.
    pub ops: Vec<MarketOpCount>,
    /// Wall time of the measured blocks.
    pub seconds: f64,
    /// Where the measured blocks' time went.
    pub stage_us: StageUs,
    /// SKUs listed per price model (one per seller).
    pub skus_per_model: usize,
    /// Metering receipts the buyers signed before timing, which the
    /// sellers' claims carry and the chain verifies.
    pub receipts: usize,
    /// Auction windows closed in the measured blocks.
    pub auction_closes: u64,
    /// Time to list the SKUs and run the warm-up block (not timed).
    pub setup_s: f64,
    /// Time to build the blocks, receipts signed included (not timed).
    pub build_s: f64,
    /// Bytes the process wrote to storage per measured block, MiB (Linux).
    pub written_mib_per_block: Option<f64>,
}

/// One point of the plot.
#[derive(Debug, Clone, Serialize)]
pub struct SizePoint {
    /// Batch (verification) and block (execution) size.
    pub size: usize,
    /// `batch_verify` signatures per second at this batch size (sizes up to
    /// `--sigs` only).
    pub batch_verify_sigs_per_s: Option<f64>,
    /// Execution + commit transactions per second at this block size.
    pub exec_commit_tx_per_s: Option<f64>,
    /// Blocks run at this size.
    pub exec_blocks: usize,
}

/// The report of one run. The fields of the signature phases are absent
/// under `--workload market`, the market's under `--workload transfers`.
#[derive(Debug, Clone, Serialize)]
pub struct TpsReport {
    /// What was measured.
    pub workload: Workload,
    /// The machine.
    pub machine: Machine,
    /// Signatures (signed transfers) of the raw and end-to-end phases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigs: Option<usize>,
    /// Raw bound: `aggregate_verify` of `sigs` signatures, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_verify_sigs_per_s: Option<f64>,
    /// The raw bound with the subgroup checks that aggregating signatures
    /// received from a wire needs (`aggregate` + `aggregate_verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_checked_verify_sigs_per_s: Option<f64>,
    /// `batch_verify` (random scalars, what ingress uses) of the same
    /// signatures, per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_verify_sigs_per_s: Option<f64>,
    /// blst's own `verify_multiple_aggregate_signatures` of the same
    /// signatures, per second (the baseline `batch_verify` improves on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_verify_blst_sigs_per_s: Option<f64>,
    /// Signing, per second over all cores (the fleet's cost, for scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_sigs_per_s: Option<f64>,
    /// Aggregating the signatures into one as sealing does
    /// (`aggregate_verified`, no subgroup checks: blst's bulk addition
    /// on its own threads), per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_sigs_per_s: Option<f64>,
    /// Signed transfers through ingress, mempool, execution and commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_tx_per_s: Option<f64>,
    /// `e2e_tx_per_s / raw_verify_sigs_per_s` (target ≥ 0.8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_ratio: Option<f64>,
    /// `e2e_tx_per_s / raw_checked_verify_sigs_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_vs_checked_raw: Option<f64>,
    /// `e2e_tx_per_s / batch_verify_sigs_per_s`: how close the pipeline
    /// gets to the verification it cannot avoid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_vs_batch_verify: Option<f64>,
    /// The end-to-end run in detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e: Option<E2eReport>,
    /// Accounts in the state of the execution phase.
    pub accounts: usize,
    /// Time of the genesis of `accounts` accounts (`Chain::genesis`).
    pub genesis_s: f64,
    /// Peak resident memory during genesis, MiB (Linux).
    pub genesis_peak_rss_mib: Option<f64>,
    /// LMDB size on disk after genesis, MiB.
    pub genesis_db_mib: f64,
    /// Execution + commit of verified transfers, per second.
    pub exec_commit_tx_per_s: f64,
    /// Execution + commit of market operations (succeeded ones), per
    /// second, on the same chain as `exec_commit_tx_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_commit_market_ops_per_s: Option<f64>,
    /// `exec_commit_market_ops_per_s / exec_commit_tx_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_commit_market_vs_transfers: Option<f64>,
    /// Where execution + commit's time went, summed over the measured blocks.
    pub stage_us: StageUs,
    /// The execution + commit run in detail.
    pub exec: ExecReport,
    /// The market blocks in detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market: Option<MarketReport>,
    /// Throughput against batch and block size (the plot's data).
    pub sizes: Vec<SizePoint>,
    /// Peak resident memory of the run, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// Wall time of the whole run.
    pub total_s: f64,
    /// Where the JSON report was written.
    pub report_json: String,
    /// Where the plot was written.
    pub plot_svg: String,
}

fn per_s(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// A line of `/proc/self/status` in kB, as MiB (Linux only).
pub(crate) fn proc_status_mib(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time this process has used, user and system, every thread,
/// seconds (`getrusage`).
fn process_cpu_s() -> Option<f64> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the struct it is given; RUSAGE_SELF is
    // always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let ru = unsafe { ru.assume_init() };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(s(ru.ru_utime) + s(ru.ru_stime))
}

/// Bytes this process caused to be written to storage (Linux): the page
/// cache it dirtied, counted by whole folio, so a 4 KiB write into a
/// large folio counts the folio.
fn io_write_bytes() -> Option<u64> {
    io_counter("write_bytes:")
}

/// Bytes this process passed to write calls (Linux `wchar`): what it asked
/// to write, before the page cache.
fn io_wchar() -> Option<u64> {
    io_counter("wchar:")
}

fn io_counter(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The peak of the process's anonymous memory (heap, not the page cache
/// LMDB's map brings in), sampled every 10 ms by a thread until
/// [`AnonPeak::stop`]; the kernel keeps no such peak itself.
pub(crate) struct AnonPeak {
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl AnonPeak {
    pub(crate) fn start() -> Self {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            loop {
                if let Some(m) = proc_status_mib("RssAnon:") {
                    peak = Some(peak.map_or(m, |p| p.max(m)));
                }
                if flag.load(Ordering::Acquire) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { stop, thread }
    }

    /// The peak in MiB (Linux).
    pub(crate) fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().ok().flatten()
    }
}

/// Resets the peak RSS counter (Linux ≥ 4.0); best effort.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Bytes a directory's files use on disk (sparse files count what they use).
/// Bytes allocated on disk under `dir`, its subdirectories included (the
/// state logs are under `state/`).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_usage(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The report's directory (`--out`, default `bench-out`), created.
pub(crate) fn out_dir(out: Option<&Path>) -> Result<PathBuf, TpsError> {
    let dir = out.map_or_else(|| PathBuf::from("bench-out"), Path::to_path_buf);
    std::fs::create_dir_all(&dir).map_err(|source| TpsError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn temp_dir(what: &str) -> Result<tempfile::TempDir, TpsError> {
    tempfile::Builder::new()
        .prefix(&format!("int-bench-{what}-"))
        .tempdir()
        .map_err(|source| TpsError::Io {
            path: std::env::temp_dir(),
            source,
        })
}

fn validator() -> SecretKey {
    SecretKey::from_seed(&[0x5e; 32])
}

/// Runs the harness.
pub fn run(args: &TpsArgs) -> Result<TpsReport, TpsError> {
    if args.sigs == 0 || args.devices == 0 || args.ingress_batch == 0 {
        return Err(TpsError::BadArgs(
            "--sigs, --devices and --ingress-batch must be at least 1".into(),
        ));
    }
    if args.block_txs == 0 || args.blocks == 0 || args.hot_capacity == 0 {
        return Err(TpsError::BadArgs(
            "--block-txs, --blocks and --hot-capacity must be at least 1".into(),
        ));
    }
    if args.accounts < 2 {
        return Err(TpsError::BadArgs("--accounts must be at least 2".into()));
    }
    // Each device's transfers are admitted ahead of the blocks that apply
    // them, at most NONCE_AHEAD_MAX ahead of its committed nonce.
    if args.sigs.div_ceil(args.devices) as u64 > NONCE_AHEAD_MAX {
        return Err(TpsError::BadArgs(format!(
            "--sigs / --devices is at most {NONCE_AHEAD_MAX} (the mempool admits a device's nonces at most that far ahead of its committed one)"
        )));
    }
    if args.workload.market() {
        market::check_args(args.accounts, args.block_txs)?;
    }
    let out_dir = out_dir(args.out.as_deref())?;
    let began = Instant::now();
    let machine = Machine::current();
    let mut sizes: Vec<usize> = args.sizes.iter().copied().filter(|&s| s > 0).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let signed = if args.workload.signatures() {
        format!("{} signed transfers, ", args.sigs)
    } else {
        String::new()
    };
    eprintln!(
        "int bench tps: {} cores, workload {}, {signed}{} accounts, blocks of {}",
        machine.cores,
        args.workload.name(),
        args.accounts,
        args.block_txs
    );

    // 1. Raw bound, and 2. end to end with the same envelopes.
    let (raw, e2e) = if args.workload.signatures() {
        let signed = sign_transfers(args)?;
        let raw = raw_bound(&signed, &sizes)?;
        let e2e = end_to_end(args, signed)?;
        let e2e_tx_per_s = per_s(e2e.ok as usize, Duration::from_secs_f64(e2e.seconds));
        eprintln!(
            "  end to end: {e2e_tx_per_s:.0} tx/s = {:.2} of the raw bound ({:.0} sigs/s), {:.2} of the raw bound with subgroup checks ({:.0} sigs/s), {:.2} of batch_verify ({:.0} sigs/s)",
            e2e_tx_per_s / raw.aggregate_verify_per_s,
            raw.aggregate_verify_per_s,
            e2e_tx_per_s / raw.checked_aggregate_verify_per_s,
            raw.checked_aggregate_verify_per_s,
            e2e_tx_per_s / raw.batch_verify_per_s,
            raw.batch_verify_per_s
        );
        (Some(raw), Some((e2e, e2e_tx_per_s)))
    } else {
        (None, None)
    };

    // 3. Execution + commit over many accounts (and the market blocks).
    let exec = exec_commit(args, &sizes, false)?;
    let exec_commit_tx_per_s = per_s(exec.report.ok as usize, exec_wall(&exec.report));
    let market_ops_per_s = exec
        .market
        .as_ref()
        .map(|m| per_s(m.ok as usize, Duration::from_secs_f64(m.seconds)));
    let market_vs_transfers = market_ops_per_s.map(|m| m / exec_commit_tx_per_s);
    if let (Some(m), Some(r)) = (market_ops_per_s, market_vs_transfers) {
        eprintln!(
            "  execution + commit: market {m:.0} ops/s = {r:.3} of transfers ({exec_commit_tx_per_s:.0} tx/s), same chain, blocks of {}",
            args.block_txs
        );
    }

    let points: Vec<SizePoint> = sizes
        .iter()
        .map(|&size| {
            let exec_pt = exec.sweep.iter().find(|p| p.0 == size);
            SizePoint {
                size,
                batch_verify_sigs_per_s: raw
                    .as_ref()
                    .and_then(|r| r.sweep.iter().find(|p| p.0 == size))
                    .map(|p| p.1),
                exec_commit_tx_per_s: exec_pt.map(|p| p.1),
                exec_blocks: exec_pt.map_or(0, |p| p.2),
            }
        })
        .collect();

    let json_path = out_dir.join("tps.json");
    let svg_path = out_dir.join("tps.svg");
    let e2e_tx_per_s = e2e.as_ref().map(|e| e.1);
    let raw_ratio =
        |f: fn(&RawResult) -> f64| raw.as_ref().zip(e2e_tx_per_s).map(|(r, e)| e / f(r));
    let report = TpsReport {
        workload: args.workload,
        machine,
        sigs: args.workload.signatures().then_some(args.sigs),
        raw_verify_sigs_per_s: raw.as_ref().map(|r| r.aggregate_verify_per_s),
        raw_checked_verify_sigs_per_s: raw.as_ref().map(|r| r.checked_aggregate_verify_per_s),
        batch_verify_sigs_per_s: raw.as_ref().map(|r| r.batch_verify_per_s),
        batch_verify_blst_sigs_per_s: raw.as_ref().map(|r| r.batch_verify_blst_per_s),
        sign_sigs_per_s: raw.as_ref().map(|r| r.sign_per_s),
        aggregate_sigs_per_s: raw.as_ref().map(|r| r.aggregate_per_s),
        e2e_tx_per_s,
        e2e_ratio: raw_ratio(|r| r.aggregate_verify_per_s),
        e2e_vs_checked_raw: raw_ratio(|r| r.checked_aggregate_verify_per_s),
        e2e_vs_batch_verify: raw_ratio(|r| r.batch_verify_per_s),
        e2e: e2e.map(|e| e.0),
        accounts: args.accounts,
        genesis_s: exec.genesis_s,
        genesis_peak_rss_mib: exec.genesis_peak_rss_mib,
        genesis_db_mib: exec.genesis_db_mib,
        exec_commit_tx_per_s,
        exec_commit_market_ops_per_s: market_ops_per_s,
        exec_commit_market_vs_transfers: market_vs_transfers,
        stage_us: exec.stage_us,
        exec: exec.report,
        market: exec.market,
        sizes: points,
        peak_rss_mib: proc_status_mib("VmHWM:"),
        total_s: began.elapsed().as_secs_f64(),
        report_json: json_path.display().to_string(),
        plot_svg: svg_path.display().to_string(),
    };

    plot::draw(&svg_path, &report).map_err(TpsError::Plot)?;
    let json = serde_json::to_vec_pretty(&report)?;
    std::fs::write(&json_path, json).map_err(|source| TpsError::Io {
        path: json_path.clone(),
        source,
    })?;
    eprintln!(
        "int bench tps: report in {}, plot in {} ({:.1} s in all)",
        json_path.display(),
        svg_path.display(),
        report.total_s
    );
    Ok(report)
}

fn exec_wall(r: &ExecReport) -> Duration {
    Duration::from_secs_f64(r.seconds)
}

/// The signed transfers of phases 1 and 2 and what verifying them needs.
struct Signed {
    fleet: Fleet,
    pks: Vec<PublicKey>,
    /// Envelopes, in the order devices send them.
    envelopes: Vec<Vec<u8>>,
    /// Device index of each envelope.
    senders: Vec<usize>,
    /// Signing time over all cores.
    sign_time: Duration,
}

/// Derives the fleet and signs `--sigs` transfers: envelope `k` is sent by
/// device `k mod D` with nonce `k div D`, to a random other device.
fn sign_transfers(args: &TpsArgs) -> Result<Signed, TpsError> {
    let d = args.devices.min(args.sigs).max(1);
    let t = Instant::now();
    let fleet = Fleet::derive(d, &[0xb7; 32]);
    let pks: Vec<PublicKey> = fleet.keys.par_iter().map(|k| k.public_key()).collect();
    eprintln!(
        "  fleet: {d} device keys in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut rng = StdRng::seed_from_u64(7);
    let plans: Vec<(usize, u64, usize, u128)> = (0..args.sigs)
        .map(|k| {
            let from = k % d;
            let mut to = rng.gen_range(0..d);
            if to == from && d > 1 {
                to = (to + 1) % d;
            }
            (from, (k / d) as u64, to, rng.gen_range(1..=100))
        })
        .collect();
    let t = Instant::now();
    let envelopes: Vec<Vec<u8>> = plans
        .par_iter()
        .map(|&(from, nonce, to, amount)| {
            fleet.transfer_tx(CHAIN_ID, from, nonce, fleet.ids[to], amount)
        })
        .collect();
    let sign_time = t.elapsed();
    eprintln!(
        "  signed {} transfers in {:.2} s ({:.0}/s)",
        envelopes.len(),
        sign_time.as_secs_f64(),
        per_s(envelopes.len(), sign_time)
    );
    Ok(Signed {
        senders: plans.iter().map(|p| p.0).collect(),
        fleet,
        pks,
        envelopes,
        sign_time,
    })
}

struct RawResult {
    aggregate_verify_per_s: f64,
    checked_aggregate_verify_per_s: f64,
    batch_verify_per_s: f64,
    batch_verify_blst_per_s: f64,
    sign_per_s: f64,
    aggregate_per_s: f64,
    /// (batch size, batch_verify sigs/s).
    sweep: Vec<(usize, f64)>,
}

fn raw_bound(s: &Signed, sizes: &[usize]) -> Result<RawResult, TpsError> {
    let n = s.envelopes.len();
    let decoded: Vec<(Vec<u8>, Signature)> = s
        .envelopes
        .par_iter()
        .map(|e| -> Result<_, TpsError> {
            let tx = decode_tx(e)?;
            Ok((
                tx_message(CHAIN_ID, tx.body_bytes),
                Signature::from_bytes(tx.signature())?,
            ))
        })
        .collect::<Result<_, _>>()?;
    let msgs: Vec<&[u8]> = decoded.iter().map(|d| d.0.as_slice()).collect();
    let sigs: Vec<Signature> = decoded.iter().map(|d| d.1).collect();
    let pks: Vec<&PublicKey> = s.senders.iter().map(|&i| &s.pks[i]).collect();

    let t = Instant::now();
    let agg = bls::aggregate_verified(&sigs)?;
    let agg_time = t.elapsed();
    // Signatures from a wire must be subgroup-checked before they may be
    // aggregated: that is `aggregate`, and it belongs to the bound of
    // "verifying N received signatures by aggregation".
    let t = Instant::now();
    let checked = bls::aggregate(&sigs)?;
    let checked_agg_time = t.elapsed();
    if checked != agg {
        return Err(TpsError::Failed("aggregates disagree".into()));
    }

    eprintln!("  raw bound: aggregate_verify of {n} signatures ...");
    let t = Instant::now();
    let ok = bls::aggregate_verify(&agg, &msgs, &pks);
    let av_time = t.elapsed();
    if !ok {
        return Err(TpsError::Failed(
            "aggregate_verify rejected good signatures".into(),
        ));
    }
    let aggregate_verify_per_s = per_s(n, av_time);
    let checked_aggregate_verify_per_s = per_s(n, av_time + checked_agg_time);
    eprintln!(
        "    {:.2} s, {aggregate_verify_per_s:.0} sigs/s; with the subgroup checks of aggregating received signatures: {checked_aggregate_verify_per_s:.0} sigs/s",
        av_time.as_secs_f64()
    );

    let items: Vec<BatchItem<'_>> = (0..n)
        .map(|i| BatchItem {
            pk: pks[i],
            msg: msgs[i],
            sig: &sigs[i],
        })
        .collect();
    // Times one verification of all items; it must accept them.
    let timed = |what: &str, verify: fn(&[BatchItem<'_>], &[u8]) -> bool| {
        eprintln!("  {what} of {n} signatures ...");
        let t = Instant::now();
        if !verify(&items, DST_SIG) {
            return Err(TpsError::Failed(format!("{what} rejected good signatures")));
        }
        let d = t.elapsed();
        let rate = per_s(n, d);
        eprintln!("    {:.2} s, {rate:.0} sigs/s", d.as_secs_f64());
        Ok(rate)
    };
    let batch_verify_per_s = timed("batch_verify", bls::batch_verify)?;
    let batch_verify_blst_per_s = timed(
        "blst's verify_multiple_aggregate_signatures (baseline)",
        bls::batch_verify_blst,
    )?;
    eprintln!(
        "    batch_verify is {:.2}x blst's",
        batch_verify_per_s / batch_verify_blst_per_s
    );

    let mut sweep = Vec::new();
    for &size in sizes.iter().filter(|&&z| z <= n) {
        if size == n {
            sweep.push((size, batch_verify_per_s));
            continue;
        }
        // Small batches are repeated (over different signatures where there
        // are enough) so that each size runs on at least 2048 signatures.
        let reps = (2048 / size).max(1);
        let t = Instant::now();
        for r in 0..reps {
            let start = (r * size) % (n - size + 1);
            if !bls::batch_verify(&items[start..start + size], DST_SIG) {
                return Err(TpsError::Failed(
                    "batch_verify rejected good signatures".into(),
                ));
            }
        }
        let rate = per_s(size * reps, t.elapsed());
        eprintln!("    batch_verify at {size}: {rate:.0} sigs/s");
        sweep.push((size, rate));
    }
    Ok(RawResult {
        aggregate_verify_per_s,
        checked_aggregate_verify_per_s,
        batch_verify_per_s,
        batch_verify_blst_per_s,
        sign_per_s: per_s(n, s.sign_time),
        aggregate_per_s: per_s(n, agg_time),
        sweep,
    })
}

/// The end-to-end pipeline: an ingress thread and the producer (this one).
fn end_to_end(args: &TpsArgs, s: Signed) -> Result<E2eReport, TpsError> {
    let dir = temp_dir("e2e")?;
    let store = int_engine::storage::open(dir.path())?;
    let validator = validator();
    let mut chain = ChainSpec::cpu().open(
        store.clone(),
        ChainConfig {
            chain_id: CHAIN_ID,
            hot_capacity: args.hot_capacity.max(2 * s.fleet.len()),
            parallel: true,
        },
    )?;
    let mut alloc = s.fleet.genesis_alloc();
    for ((_, rec), pk) in alloc.iter_mut().zip(&s.pks) {
        rec.public_key = Some(pk.to_bytes());
    }
    alloc.push(validator_account(&validator));
    chain.genesis(&alloc, now_ms(), &validator)?;

    // The node's admission (ingress checks, the key cache, the mempool)
    // on the CPU, as `int bench mqtt` runs it.
    let n = s.envelopes.len();
    let mempool = Mutex::new(Mempool::new(n.max(1)));
    let stats = Stats::default();
    let admitter = Admitter::new(&*store, CHAIN_ID, None, &CpuG1, &mempool, &stats);
    // A running node has its senders' keys cached; warm the cache so that
    // the measurement is the steady state, not first contact.
    let t = Instant::now();
    let known = s
        .fleet
        .ids
        .par_iter()
        .filter(|id| admitter.keys().public_key(id).is_some())
        .count();
    let key_cache_warm_s = t.elapsed().as_secs_f64();
    if known != s.fleet.len() {
        return Err(TpsError::Failed(format!(
            "{} of {} genesis keys not found",
            s.fleet.len() - known,
            s.fleet.len()
        )));
    }

    let mut batches: Vec<Vec<Vec<u8>>> = Vec::with_capacity(n.div_ceil(args.ingress_batch));
    let mut it = s.envelopes.into_iter().peekable();
    while it.peek().is_some() {
        batches.push(it.by_ref().take(args.ingress_batch).collect());
    }
    let done = AtomicBool::new(false);
    let block_ms = Duration::from_millis(args.block_ms);

    eprintln!(
        "  end to end: {n} transfers from {} devices, ingress batches of {}, blocks of up to {} ...",
        s.fleet.len(),
        args.ingress_batch,
        args.block_txs
    );
    let began = Instant::now();
    let (ingress_res, producer_res) = std::thread::scope(|scope| {
        let ingress = scope.spawn(|| -> Result<(), TpsError> {
            for batch in batches {
                admitter.admit(batch);
            }
            let out = Ok(());
            done.store(true, Ordering::Release);
            out
        });

        let producer = (|| -> Result<(u64, u64, u64, Duration, StageUs), TpsError> {
            let (mut ok, mut failed, mut blocks) = (0u64, 0u64, 0u64);
            let mut exec_time = Duration::ZERO;
            let mut stages = StageUs::default();
            let mut last_seal = Instant::now();
            loop {
                let finished = done.load(Ordering::Acquire);
                // Pacing: a block when one is full, when ingress is done, or
                // at the block interval; the block itself is the node's.
                let waiting = mempool.lock().map_or(0, |p| p.len());
                let ready = waiting >= args.block_txs
                    || (finished && waiting > 0)
                    || (waiting > 0 && last_seal.elapsed() >= block_ms);
                if !ready {
                    if finished {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let t = Instant::now();
                let (_, res) =
                    produce_block(&mut chain, &mempool, args.block_txs, &validator, &stats)?;
                exec_time += t.elapsed();
                last_seal = Instant::now();
                stages.add(&res.timings);
                blocks += 1;
                for st in &res.statuses {
                    if *st == TxStatus::Ok {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
            Ok((ok, failed, blocks, exec_time, stages))
        })();
        let ingress_res = ingress
            .join()
            .unwrap_or_else(|_| Err(TpsError::Failed("the ingress thread panicked".into())));
        (ingress_res, producer)
    });
    let seconds = began.elapsed();
    ingress_res?;
    let (ok, failed, blocks, exec_time, stages) = producer_res?;
    let report = E2eReport {
        txs: n,
        ok,
        rejected: stats.rejected(),
        failed,
        blocks,
        devices: s.fleet.len(),
        ingress_batch: args.ingress_batch,
        block_txs_max: args.block_txs,
        seconds: seconds.as_secs_f64(),
        check_batch_s: stats.verify_s(),
        execute_block_s: exec_time.as_secs_f64(),
        stage_us: stages.with_wall(exec_time),
        key_cache_warm_s,
    };
    eprintln!(
        "    {:.2} s: {ok} ok, {failed} failed, {} rejected, {blocks} blocks; check_batch {:.2} s, execute_block {:.2} s",
        report.seconds, report.rejected, report.check_batch_s, report.execute_block_s
    );
    if ok as usize != n {
        eprintln!(
            "    warning: {} of {n} transfers did not succeed",
            n - ok as usize
        );
    }
    Ok(report)
}

pub(crate) struct ExecResult {
    pub(crate) genesis_s: f64,
    pub(crate) genesis_peak_rss_mib: Option<f64>,
    genesis_db_mib: f64,
    pub(crate) report: ExecReport,
    pub(crate) stage_us: StageUs,
    market: Option<MarketReport>,
    /// (block size, tx/s, blocks).
    sweep: Vec<(usize, f64, usize)>,
    /// The state updates of the measured blocks: distinct accounts each
    /// block touched, summed (the supply record not counted).
    pub(crate) updates: u64,
    /// Peak resident memory from the measured blocks on, MiB (Linux).
    pub(crate) blocks_peak_rss_mib: Option<f64>,
    /// Peak anonymous memory from the measured blocks on, sampled, MiB.
    pub(crate) blocks_peak_anon_mib: Option<f64>,
    /// The store on disk after the measured blocks, bytes.
    pub(crate) disk_bytes: u64,
    /// Reopening the store after the blocks as after a kill, until a block
    /// could be prepared (the state log rebuilt), seconds; measured when
    /// asked for.
    pub(crate) recovery_s: Option<f64>,
    /// Then a checkpoint written as a node stops and the reopen that reads
    /// it, seconds each; measured with `recovery_s`.
    pub(crate) restart: Option<(f64, f64)>,
    /// A transaction's location by hash after the measured blocks (the
    /// RPC's receipt lookup), mean µs.
    pub(crate) tx_lookup_us: f64,
}

/// Lookups timed by [`time_tx_lookups`].
const TX_LOOKUPS: usize = 1000;

/// Looks up [`TX_LOOKUPS`] transactions of `blocks` (spread over them)
/// by hash after they committed, checking each location; mean µs.
fn time_tx_lookups(chain: &Chain, blocks: &[Vec<VerifiedTx>]) -> Result<f64, TpsError> {
    let head = chain
        .head()
        .ok_or_else(|| TpsError::Failed("no head after the blocks".into()))?;
    let first = head.height + 1 - blocks.len() as u64;
    let per_block = TX_LOOKUPS.div_ceil(blocks.len().max(1));
    let picks: Vec<(Hash32, u64, u32)> = (first..)
        .zip(blocks)
        .flat_map(|(height, b)| {
            let step = (b.len() / per_block).max(1);
            (0..b.len())
                .step_by(step)
                .take(per_block)
                .map(move |i| (b[i].hash, height, i as u32))
        })
        .take(TX_LOOKUPS)
        .collect();
    let view = chain.store().snapshot()?;
    let t = Instant::now();
    for (hash, height, index) in &picks {
        // Every sender of the stream has a key, so every transaction is
        // in its block, at its place in the stream.
        let at = view.tx_location(CHAIN_ID, hash)?;
        if at != Some((*height, *index)) {
            return Err(TpsError::Failed(format!(
                "transaction {index} of block {height} found at {at:?}"
            )));
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / picks.len().max(1) as f64)
}

/// The accounts of the execution phase: account `i`'s id is
/// [`exec_account_id`]`(i)`, derived when needed rather than held (3.2 GB
/// at 10⁸), and only the senders' nonces are kept.
struct Accounts {
    n: usize,
    nonces: HashMap<usize, u64>,
}

impl Accounts {
    fn new(n: usize) -> Self {
        Self {
            n,
            nonces: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.n
    }

    fn id(&self, i: usize) -> AccountId {
        exec_account_id(i)
    }

    /// Account `i`'s next nonce.
    fn nonce(&self, i: usize) -> u64 {
        self.nonces.get(&i).copied().unwrap_or(0)
    }

    /// Takes account `i`'s next nonce.
    fn next_nonce(&mut self, i: usize) -> u64 {
        let n = self.nonces.entry(i).or_insert(0);
        *n += 1;
        *n - 1
    }
}

fn exec_account_id(i: usize) -> AccountId {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/bench/account");
    h.update(&(i as u64).to_le_bytes());
    *h.finalize().as_bytes()
}

/// Builds `blocks` blocks of `size` random transfers as verified
/// transactions (no signing: one signature reused).
fn build_blocks(
    rng: &mut StdRng,
    accts: &mut Accounts,
    blocks: usize,
    size: usize,
    sig: &[u8; 48],
) -> Result<Vec<Vec<VerifiedTx>>, TpsError> {
    let n = accts.len();
    let icfg = IngressConfig {
        chain_id: CHAIN_ID,
        min_fee: DEVICE_FEE,
    };
    (0..blocks)
        .map(|_| {
            let plans: Vec<(usize, u64, usize, u128)> = (0..size)
                .map(|_| {
                    let from = rng.gen_range(0..n);
                    let mut to = rng.gen_range(0..n);
                    if to == from {
                        to = (to + 1) % n;
                    }
                    let nonce = accts.next_nonce(from);
                    (from, nonce, to, rng.gen_range(1..=100))
                })
                .collect();
            plans
                .par_iter()
                .map(|&(from, nonce, to, amount)| {
                    let body = build_tx_body(&TxBodySpec {
                        chain_id: CHAIN_ID,
                        sender: accts.id(from),
                        nonce,
                        fee: DEVICE_FEE,
                        payload: PayloadSpec::Transfer {
                            to: accts.id(to),
                            amount,
                            token: Token::Int,
                        },
                    });
                    Ok(ingress::assume_verified(&icfg, build_envelope(&body, sig))?)
                })
                .collect()
        })
        .collect()
}

/// Runs `blocks` through the chain; returns (wall time, ok count, stages).
fn run_blocks(
    chain: &mut Chain,
    validator: &SecretKey,
    blocks: &[Vec<VerifiedTx>],
) -> Result<(Duration, u64, StageUs), TpsError> {
    let mut ok = 0u64;
    let mut stages = StageUs::default();
    let t = Instant::now();
    for txs in blocks {
        let res = chain.execute_block(txs, now_ms(), validator)?;
        stages.add(&res.timings);
        ok += res.statuses.iter().filter(|s| **s == TxStatus::Ok).count() as u64;
    }
    let wall = t.elapsed();
    Ok((wall, ok, stages.with_wall(wall)))
}

/// Execution + commit over `args.accounts` accounts; with `recovery`, the
/// store is then reopened as after a kill and timed (`int bench scale`).
pub(crate) fn exec_commit(
    args: &TpsArgs,
    sizes: &[usize],
    recovery: bool,
) -> Result<ExecResult, TpsError> {
    let n = args.accounts;
    let dir = temp_dir("exec")?;
    let store = int_engine::storage::open(dir.path())?;
    let validator = validator();
    let with_market = args.workload.market();
    let mut chain = ChainSpec::cpu().open(
        store,
        ChainConfig {
            chain_id: CHAIN_ID,
            hot_capacity: args.hot_capacity,
            parallel: true,
        },
    )?;
    let sig = validator.sign(b"INT/bench/reused-signature").to_bytes();
    // The market's claims are checked against their buyers' keys: real
    // keys from a pool then; a placeholder otherwise.
    let keys = if with_market {
        market::key_pool(n)
    } else {
        Vec::new()
    };
    let pks: Vec<[u8; 96]> = keys.par_iter().map(|k| k.public_key().to_bytes()).collect();

    eprintln!("  execution + commit: genesis of {n} accounts ...");
    let base = AccountRecord {
        nonce: 0,
        int: EXEC_BALANCE,
        gas: EXEC_BALANCE,
        // Execution only checks that a sender has a key.
        public_key: Some([0x11; 96]),
        device_kind: 0,
        metadata_hash: [0; 32],
    };
    let record = |i: usize| AccountRecord {
        public_key: pks.get(i % pks.len().max(1)).copied().or(base.public_key),
        ..base
    };
    reset_peak_rss();
    let t = Instant::now();
    // Accounts 0..n, then the validator; computed as the loader takes
    // them, never held as a list (3.2 GB of ids alone at 10⁸).
    let extra = validator_account(&validator);
    let head = chain.genesis_of(
        n as u64 + 1,
        &|i| {
            if i == n as u64 {
                extra
            } else {
                (exec_account_id(i as usize), record(i as usize))
            }
        },
        &[],
        now_ms(),
        &validator,
    )?;
    let genesis = t.elapsed();
    let genesis_peak_rss_mib = proc_status_mib("VmHWM:");
    let genesis_db_mib = disk_usage(dir.path()) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "    genesis: {} accounts in {:.2} s, peak RSS {}, on disk {:.0} MiB",
        head.accounts,
        genesis.as_secs_f64(),
        genesis_peak_rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
        genesis_db_mib
    );

    let mut accts = Accounts::new(n);
    let mut rng = StdRng::seed_from_u64(11);
    let t = Instant::now();
    let blocks = build_blocks(&mut rng, &mut accts, args.blocks, args.block_txs, &sig)?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "    {} blocks of {} transfers built in {build_s:.2} s; executing ...",
        args.blocks, args.block_txs
    );
    let updates: u64 = blocks
        .iter()
        .map(|b| {
            let touched: std::collections::HashSet<AccountId> = b
                .iter()
                .flat_map(|tx| {
                    let to = match &tx.payload {
                        PayloadSpec::Transfer { to, .. } => Some(*to),
                        _ => None,
                    };
                    [Some(tx.sender), to]
                })
                .flatten()
                .collect();
            touched.len() as u64 + 1
        })
        .sum();
    reset_peak_rss();
    let anon = AnonPeak::start();
    let written_before = io_write_bytes();
    let wchar_before = io_wchar();
    let cpu_before = process_cpu_s();
    let (wall, ok, stage_us) = run_blocks(&mut chain, &validator, &blocks)?;
    let cpu_ms_per_block = cpu_before
        .zip(process_cpu_s())
        .map(|(a, b)| (b - a) * 1e3 / args.blocks as f64);
    let tx_lookup_us = time_tx_lookups(&chain, &blocks)?;
    let per_block_mib =
        |a: u64, b: u64| b.saturating_sub(a) as f64 / 1048576.0 / args.blocks as f64;
    let written_mib_per_block = written_before
        .zip(io_write_bytes())
        .map(|(a, b)| per_block_mib(a, b));
    let write_calls_mib_per_block = wchar_before
        .zip(io_wchar())
        .map(|(a, b)| per_block_mib(a, b));
    drop(blocks);
    let stats = chain.store().stats()?;
    for t in &stats.tables {
        eprintln!(
            "    lmdb {:<9} {:>9} entries, {:>7} leaf + {:>5} branch + {:>6} overflow pages",
            t.name, t.entries, t.leaf_pages, t.branch_pages, t.overflow_pages
        );
    }
    eprintln!(
        "    lmdb file high-water mark: {} pages of {} bytes",
        stats.last_page, stats.page_size
    );
    let txs = args.blocks * args.block_txs;
    let rate = per_s(ok as usize, wall);
    eprintln!(
        "    {:.2} s: {rate:.0} tx/s ({ok} of {txs} ok); load {} ms, execute {} ms, root {} ms, seal {} ms, commit {} ms, other {} ms",
        wall.as_secs_f64(),
        stage_us.load / 1000,
        stage_us.execute / 1000,
        stage_us.root / 1000,
        stage_us.seal / 1000,
        stage_us.commit / 1000,
        stage_us.other / 1000,
    );
    if let Some(cpu) = cpu_ms_per_block {
        eprintln!(
            "    {cpu:.1} ms of CPU per block ({:.2} cores busy)",
            cpu / (wall.as_secs_f64() * 1e3 / args.blocks as f64)
        );
    }
    eprintln!(
        "    a transaction found by hash in {:.1} µs (mean of {TX_LOOKUPS} lookups, one snapshot)",
        tx_lookup_us
    );
    if let Some(w) = written_mib_per_block {
        eprintln!(
            "    {w:.0} MiB written to storage per block (page cache dirtied), {} MiB passed to write calls",
            write_calls_mib_per_block.map_or("?".into(), |c| format!("{c:.0}"))
        );
    }
    if ok as usize != txs {
        eprintln!(
            "    warning: {} of {txs} transfers did not succeed",
            txs - ok as usize
        );
    }

    let market = if with_market {
        Some(market::measure(
            &mut chain,
            &validator,
            &mut accts,
            keys,
            args.blocks,
            args.block_txs,
            &sig,
        )?)
    } else {
        None
    };

    let mut sweep = Vec::new();
    for &size in sizes {
        let nblocks = 32_768usize.div_ceil(size).clamp(2, 32);
        let blocks = build_blocks(&mut rng, &mut accts, nblocks, size, &sig)?;
        let (w, k, _) = run_blocks(&mut chain, &validator, &blocks)?;
        let rate = per_s(k as usize, w);
        eprintln!("    blocks of {size}: {rate:.0} tx/s over {nblocks} blocks");
        sweep.push((size, rate, nblocks));
    }
    let accounts_after = chain.head().map_or(0, |h| h.accounts);
    let disk_bytes = disk_usage(dir.path());
    let (recovery_s, restart) = if recovery {
        drop(chain);
        let t = Instant::now();
        let store = int_engine::storage::open(dir.path())?;
        store.snapshot()?.prepare_state(CHAIN_ID, &[])?;
        let s = t.elapsed().as_secs_f64();
        eprintln!("    reopened as after a kill in {s:.2} s");
        // Then as a node that stops and starts again: a checkpoint.
        let t = Instant::now();
        let bytes = store.checkpoint()?;
        let checkpoint_s = t.elapsed().as_secs_f64();
        drop(store);
        let t = Instant::now();
        let store = int_engine::storage::open(dir.path())?;
        store.snapshot()?.prepare_state(CHAIN_ID, &[])?;
        let restart_s = t.elapsed().as_secs_f64();
        eprintln!(
            "    stopped (checkpoint of {} MiB in {checkpoint_s:.2} s) and reopened in {restart_s:.2} s",
            bytes >> 20
        );
        (Some(s), Some((checkpoint_s, restart_s)))
    } else {
        (None, None)
    };
    let blocks_peak_rss_mib = proc_status_mib("VmHWM:");
    let blocks_peak_anon_mib = anon.stop();
    eprintln!(
        "    peak memory from the blocks on: {} resident, of which {} anonymous (the rest is LMDB's map in the page cache)",
        blocks_peak_rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
        blocks_peak_anon_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
    );
    Ok(ExecResult {
        genesis_s: genesis.as_secs_f64(),
        genesis_peak_rss_mib,
        genesis_db_mib,
        report: ExecReport {
            block_txs: args.block_txs,
            blocks: args.blocks,
            txs,
            ok,
            seconds: wall.as_secs_f64(),
            accounts_after,
            hot_capacity: args.hot_capacity,
            build_s,
            written_mib_per_block,
            write_calls_mib_per_block,
            cpu_ms_per_block,
            storage_tables: stats
                .tables
                .iter()
                .map(|t| {
                    (
                        t.name.to_string(),
                        t.entries,
                        t.leaf_pages,
                        t.branch_pages,
                        t.overflow_pages,
                    )
                })
                .collect(),
            storage_last_page: stats.last_page,
        },
        stage_us,
        market,
        sweep,
        updates,
        blocks_peak_rss_mib,
        blocks_peak_anon_mib,
        disk_bytes,
        recovery_s,
        restart,
        tx_lookup_us,
    })
}
