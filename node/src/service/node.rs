//! The node's core, shared by `int devnet` and `int run`: one validator
//! producing a block every `block_ms` from its mempool, in one process over
//! an embedded LMDB.
//!
//! [`Node::open`] opens the store and the chain with its plugins (ledger,
//! BPK, market, token) and writes the genesis the caller gives when the
//! data dir holds no chain yet. [`Node::run`] then serves it until Ctrl-C
//! or the duration: an ingress thread verifies what arrives in batches
//! (signatures, then proofs) and admits it to the mempool; the JSON-RPC
//! server (with `/metrics`) and the MQTT gateway with its ingest thread
//! feed that ingress; the calling thread seals the blocks, publishes them
//! to MQTT and prints the status line. What a caller runs beside it (the
//! devnet's simulators) comes in as [`Extra`] threads that feed the same
//! ingress, with [`Hooks`] that see each block and each refusal.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sim::fleet::now_ms;
use anyhow::{Context, Result, bail};
use int_engine::chain::{BlockResult, Chain, ChainConfig, ChainError};
use int_engine::crypto::bls::{BlsG1Backend, SecretKey};
use int_engine::ingress::{
    IngressConfig, IngressError, KeyCache, ProofVerifier, VerifiedTx, check_batch_on,
    committed_nonces,
};
use int_engine::mempool::Mempool;
use int_engine::storage::{AccountRecord, Head, ObjectWrite, Storage};
use int_gpu::{Accelerator, GpuCounts};
use int_schemas::wire::TxStatus;
use int_schemas::{AccountId, BLOCK_TXS_MAX, ClusterBuy, PayloadSpec};
use int_systems::bpk::Groth16Intents;

use crate::accel::{GpuBls, GpuGroth, GpuPoseidon};
use crate::service::spec::ChainSpec;

/// Transactions the RPC may queue for ingress before it answers "full".
const RPC_QUEUE: usize = 1024;
/// Batches waiting for the ingress thread.
const INGRESS_QUEUE: usize = 4;
/// Verified transactions the mempool holds: one block of the largest size
/// ([`BLOCK_TXS_MAX`], the same constant, so a proposer can always fill
/// one). At the bound admission refuses each further transaction (its
/// sender is told `MempoolFull`, counted in `int_rejected_total`) until a
/// block takes some.
const MEMPOOL_TXS: usize = BLOCK_TXS_MAX;
/// Validated public keys ingress keeps in memory (estimated ≈ 0.3 KiB each:
/// a 192-byte G2 point, its account id and an index entry; ≈ 300 MiB when
/// full). At the bound, caching one more key
/// evicts one other, a key not looked up since the cache's clock hand last
/// passed it (`int_engine::ingress::BoundedKeys`); an evicted key is read
/// from the store and validated again on its sender's next transaction.
const KEY_CACHE_KEYS: usize = 1 << 20;
/// Accounts the chain keeps in memory at least (plugin objects are kept up
/// to this too, within each type's own bound, `StateObject::HOT_MAX`).
const HOT_ACCOUNTS_MIN: usize = 200_000;

/// A batch for ingress: each envelope with the sender its source names
/// (so refusals can be told to it without decoding).
pub type Batch = Vec<(AccountId, Vec<u8>)>;

/// What a node is: where it keeps its chain, which chain, its block
/// cadence and where it serves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Data directory; LMDB lives in `DATA_DIR/lmdb`.
    pub data_dir: PathBuf,
    /// The chain produced.
    pub chain_id: u32,
    /// Block interval.
    pub block_ms: u64,
    /// Most transactions per block.
    pub block_txs_max: usize,
    /// Stop after this many seconds (default: until Ctrl-C).
    pub duration_s: Option<u64>,
    /// The JSON-RPC server's address; `None`: no server.
    pub rpc_addr: Option<SocketAddr>,
    /// The MQTT gateway's address; `None`: no gateway.
    pub mqtt_addr: Option<SocketAddr>,
    /// Accounts the chain keeps in memory (at least 200 000), and plugin
    /// objects of each type within the type's own bound.
    pub hot_capacity: usize,
}

/// Block 0 of a new chain: its accounts (the validator's among them) and
/// plugin objects.
#[derive(Debug, Clone, Default)]
pub struct Genesis {
    /// Accounts with their records.
    pub accounts: Vec<(AccountId, AccountRecord)>,
    /// Plugin objects (BPK keys, token oracles, ...).
    pub objects: Vec<ObjectWrite>,
}

/// A stop flag that Ctrl-C sets. Once per process.
pub fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Counters of a running node (ingress, blocks), for the status line and
/// `/metrics`.
#[derive(Default)]
pub struct Stats {
    verify_ns: AtomicU64,
    rejected: AtomicU64,
    intents_refused: AtomicU64,
    /// Blocks and transactions this run committed (for `/metrics`, the
    /// status line and [`Run`]).
    blocks: AtomicU64,
    txs: AtomicU64,
    txs_ok: AtomicU64,
}

impl Stats {
    /// The node's metrics in Prometheus' text format (version 0.0.4).
    fn prometheus(
        &self,
        store: &dyn Storage,
        chain_id: u32,
        (mempool, dropped): (usize, u64),
        gpu: GpuCounts,
        mqtt: Option<&int_gateway::Stats>,
    ) -> String {
        let head = store
            .snapshot()
            .ok()
            .and_then(|v| v.head(chain_id).ok().flatten());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        // (name, type, help, value)
        let mut rows: Vec<(&str, &str, &str, String)> = vec![
            (
                "int_height",
                "gauge",
                "Height of the committed head.",
                head.as_ref().map_or(0, |h| h.height).to_string(),
            ),
            (
                "int_accounts",
                "gauge",
                "Accounts in the state.",
                head.as_ref().map_or(0, |h| h.accounts).to_string(),
            ),
            (
                "int_blocks_total",
                "counter",
                "Blocks this node committed since it started.",
                get(&self.blocks),
            ),
            (
                "int_transactions_total",
                "counter",
                "Transactions included since start (rate() gives tx/s).",
                get(&self.txs),
            ),
            (
                "int_transactions_ok_total",
                "counter",
                "Included transactions that succeeded.",
                get(&self.txs_ok),
            ),
            (
                "int_mempool_transactions",
                "gauge",
                "Verified transactions waiting for a block.",
                mempool.to_string(),
            ),
            (
                "int_mempool_dropped_total",
                "counter",
                "Admitted transactions dropped without reaching a block: a committed block used their nonce, or the gap before them did not fill.",
                dropped.to_string(),
            ),
            (
                "int_verify_seconds_total",
                "counter",
                "Time ingress spent decoding and checking signatures in batches.",
                format!("{:.6}", self.verify_ns.load(Ordering::Relaxed) as f64 / 1e9),
            ),
            (
                "int_rejected_total",
                "counter",
                "Transactions refused at ingress.",
                get(&self.rejected),
            ),
            (
                "int_gpu_batches_total",
                "counter",
                "Verification batches (hash to G1, MSM, scalar multiplications, Poseidon) the GPU computed.",
                gpu.gpu_batches.to_string(),
            ),
            (
                "int_gpu_fallbacks_total",
                "counter",
                "Batches handed to the GPU that failed there and were computed on the CPU (each logged as a warning).",
                gpu.gpu_fallbacks.to_string(),
            ),
        ];
        if let Some(m) = mqtt {
            rows.extend([
                (
                    "int_mqtt_connections",
                    "gauge",
                    "Open MQTT connections (after CONNECT).",
                    get(&m.connections),
                ),
                (
                    "int_mqtt_connections_total",
                    "counter",
                    "MQTT connections accepted since start.",
                    get(&m.connections_total),
                ),
                (
                    "int_mqtt_ingested_total",
                    "counter",
                    "Messages devices published to the transaction topic.",
                    get(&m.ingested),
                ),
                (
                    "int_mqtt_delivered_total",
                    "counter",
                    "Messages delivered to MQTT subscribers.",
                    get(&m.delivered),
                ),
                (
                    "int_mqtt_events_dropped_total",
                    "counter",
                    "Node messages dropped because a queue towards the gateway was full (a block the publisher was too far behind to read counts once).",
                    get(&m.events_dropped),
                ),
            ]);
        }
        let mut out = String::new();
        for (name, kind, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        if let Some(m) = mqtt {
            out.push_str(
                "# HELP int_mqtt_dropped_total MQTT clients dropped, by reason.\n\
                 # TYPE int_mqtt_dropped_total counter\n",
            );
            for (reason, v) in [
                ("slow_consumer", &m.dropped_slow),
                ("malformed", &m.dropped_malformed),
                ("timeout", &m.dropped_timeout),
                ("over_connection_limit", &m.refused),
            ] {
                out.push_str(&format!(
                    "int_mqtt_dropped_total{{reason=\"{reason}\"}} {}\n",
                    v.load(Ordering::Relaxed)
                ));
            }
        }
        out
    }
}

/// Ingress for every source (simulators, RPC, MQTT): checks a batch
/// (decoding, signatures and intent proofs in batches), admits what passes
/// to the mempool, and answers, per input, `Ok` or the status that refused
/// it. Shared by the threads that feed it (the key cache is behind a lock).
pub struct Admitter<'a> {
    store: &'a dyn Storage,
    chain_id: u32,
    proofs: Option<&'a dyn ProofVerifier>,
    g1: &'a dyn BlsG1Backend,
    keys: KeyCache<'a>,
    mempool: &'a Mutex<Mempool>,
    stats: &'a Stats,
}

impl<'a> Admitter<'a> {
    /// Ingress over `store`'s committed state into `mempool`.
    pub fn new(
        store: &'a dyn Storage,
        chain_id: u32,
        proofs: Option<&'a dyn ProofVerifier>,
        g1: &'a dyn BlsG1Backend,
        mempool: &'a Mutex<Mempool>,
        stats: &'a Stats,
    ) -> Self {
        Self {
            store,
            chain_id,
            proofs,
            g1,
            keys: KeyCache::new(store, chain_id, KEY_CACHE_KEYS),
            mempool,
            stats,
        }
    }

    /// The key cache in front of the committed state (a bench warms it).
    pub fn keys(&self) -> &KeyCache<'a> {
        &self.keys
    }

    /// Checks and admits `batch`; one answer per input, in order.
    pub fn admit(&self, batch: Vec<Vec<u8>>) -> Vec<Result<(), TxStatus>> {
        let cfg = IngressConfig {
            chain_id: self.chain_id,
            min_fee: 1,
        };
        let n = batch.len();
        let t = Instant::now();
        let checked = check_batch_on(&cfg, &self.keys, self.proofs, self.g1, batch);
        self.stats
            .verify_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let mut out: Vec<Result<(), TxStatus>> = vec![Ok(()); n];
        for (i, err) in &checked.rejected {
            tracing::debug!(%err, "ingress refused a transaction");
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            if matches!(
                err,
                IngressError::BadProof
                    | IngressError::MalformedProof(_)
                    | IngressError::IntentsDisabled
            ) {
                self.stats.intents_refused.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(o) = out.get_mut(*i) {
                *o = Err(err.status());
            }
        }
        // The accepted ones are the others, in input order.
        let accepted_at: Vec<usize> = (0..n).filter(|i| out[*i].is_ok()).collect();
        debug_assert_eq!(accepted_at.len(), checked.accepted.len());
        // Replays are refused against the committed nonces; if they cannot
        // be read, admission goes on without that check (execution still
        // rejects a stale nonce).
        let nonces = self
            .store
            .snapshot()
            .and_then(|view| committed_nonces(&*view, self.chain_id, &checked.accepted))
            .unwrap_or_else(|err| {
                tracing::warn!(%err, "reading committed nonces");
                vec![None; checked.accepted.len()]
            });
        let mut pool = self.mempool.lock().unwrap_or_else(|e| e.into_inner());
        for ((tx, committed), i) in checked.accepted.into_iter().zip(nonces).zip(accepted_at) {
            if let Err(err) = pool.admit(tx, committed) {
                tracing::debug!(%err, "mempool refused a transaction");
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                out[i] = Err(err.status());
            }
        }
        out
    }
}

/// One turn of the block loop, shared by the node and the benches: takes
/// up to `block_txs_max` transactions from the mempool (each sender's in
/// nonce order from its committed next nonce), executes, seals and commits them as the next block, and
/// counts it in `stats`. The transactions come back beside the result, in
/// the order of its statuses.
pub fn produce_block(
    chain: &mut Chain,
    mempool: &Mutex<Mempool>,
    block_txs_max: usize,
    validator: &SecretKey,
    stats: &Stats,
) -> Result<(Vec<VerifiedTx>, BlockResult), ChainError> {
    // Each sender's run starts at its committed next nonce (the head's:
    // this loop commits every block before it takes the next).
    let head = chain.store().snapshot()?;
    let chain_id = chain.config().chain_id;
    let txs = mempool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(block_txs_max, |sender| {
            // An unreadable account leaves the judgment to execution.
            head.account(chain_id, sender)
                .ok()
                .flatten()
                .map(|a| a.nonce)
        });
    drop(head);
    let res = chain.execute_block(&txs, now_ms(), validator)?;
    debug_assert_eq!(res.statuses.len(), txs.len());
    stats.blocks.fetch_add(1, Ordering::Relaxed);
    stats.txs.fetch_add(txs.len() as u64, Ordering::Relaxed);
    let ok = res.statuses.iter().filter(|s| **s == TxStatus::Ok).count() as u64;
    stats.txs_ok.fetch_add(ok, Ordering::Relaxed);
    Ok((txs, res))
}

impl Stats {
    /// Seconds ingress spent checking batches (decoding, signatures,
    /// proofs).
    pub fn verify_s(&self) -> f64 {
        self.verify_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Transactions refused at ingress or by the mempool.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Blocks, transactions and successful transactions committed.
    pub fn committed(&self) -> (u64, u64, u64) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (get(&self.blocks), get(&self.txs), get(&self.txs_ok))
    }
}

/// The node's ingress thread: batches from the extras and the RPC; each
/// refused transaction's sender goes to `refused`.
fn ingress_loop(
    admitter: &Admitter<'_>,
    input: Receiver<Batch>,
    refused: Option<&(dyn Fn(AccountId) + Sync)>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let batch = match input.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // The sources say who sent what: no decoding just to learn the
        // sender.
        let (senders, batch): (Vec<AccountId>, Vec<Vec<u8>>) = batch.into_iter().unzip();
        for (sender, answer) in senders.into_iter().zip(admitter.admit(batch)) {
            if let (Err(_), Some(f)) = (answer, refused) {
                f(sender);
            }
        }
    }
}

/// What an [`Extra`] thread gets: the committed state, the node's ingress
/// and the stop flag (set at Ctrl-C, at the duration's end, or when the
/// block loop fails).
pub struct ExtraCtx<'a> {
    /// The committed state.
    pub store: &'a dyn Storage,
    /// The chain produced.
    pub chain_id: u32,
    /// The node's ingress.
    pub ingress: SyncSender<Batch>,
    /// Set when the node stops; an extra returns soon after.
    pub stop: &'a AtomicBool,
}

/// A thread a caller runs beside the node (the devnet's simulators): its
/// body, started once the node serves.
pub type Extra<'a> = Box<dyn for<'c> FnOnce(ExtraCtx<'c>) + Send + 'a>;

/// Sees each committed block: its transactions and their statuses.
pub type OnBlock<'a> = &'a mut dyn FnMut(&[VerifiedTx], &BlockResult);

/// What a caller sees of the node while it runs.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Each committed block's transactions and their statuses, on the
    /// block thread, before the next block.
    pub on_block: Option<OnBlock<'a>>,
    /// The sender of each transaction ingress refused (as its source named
    /// it).
    pub on_refused: Option<&'a (dyn Fn(AccountId) + Sync)>,
}

/// What one [`Node::run`] did.
#[derive(Debug, Default)]
pub struct Run {
    /// Blocks committed.
    pub blocks: u64,
    /// Transactions included.
    pub txs: u64,
    /// Of which succeeded.
    pub txs_ok: u64,
    /// Anonymous intents included.
    pub intents: u64,
    /// Of which accepted.
    pub intents_ok: u64,
    /// Intents refused at ingress.
    pub intents_refused: u64,
    /// Transactions refused at ingress or by the mempool.
    pub rejected: u64,
    /// Seconds ingress spent in decoding and batched signature checks.
    pub verify_s: f64,
    /// Market and token transactions, by what they did.
    pub market: MarketCounts,
}

/// What a run of the node did: `int run`'s summary, and the part of
/// `int devnet`'s it shares (flattened into it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Chain id.
    pub chain_id: u32,
    /// Head height at the end.
    pub height: u64,
    /// Height at the start of this run.
    pub start_height: u64,
    /// Blocks produced by this run.
    pub blocks: u64,
    /// Transactions included by this run.
    pub txs: u64,
    /// Of which succeeded.
    pub txs_ok: u64,
    /// Included transactions per second of this run.
    pub tps: f64,
    /// State root at the head, hex.
    pub state_root: String,
    /// Accounts in the state.
    pub accounts: u64,
    /// Transactions refused at ingress or by the mempool.
    pub rejected: u64,
    /// Seconds this run lasted.
    pub duration_s: f64,
    /// Data directory.
    pub data_dir: String,
    /// The validator's account id, hex (try `int state account ID --proof`).
    pub validator: String,
    /// Where batch verification's curve arithmetic ran: the `--accel`
    /// choice and the adapter (`auto: cpu` without one).
    pub accel: String,
    /// Verification batches (hash to G1, MSMs, scalar multiplications,
    /// Poseidon) the GPU computed; 0 with `--accel cpu` or without an
    /// adapter.
    pub gpu_batches: u64,
    /// Batches handed to the GPU that failed there and were computed on the
    /// CPU instead (each also logged; fatal under `INT_REQUIRE_GPU=1`).
    pub gpu_fallbacks: u64,
}

/// Committed blocks the MQTT publisher may be behind before a block's
/// messages are dropped.
const PUBLISH_QUEUE_BLOCKS: usize = 64;

/// An open node: its store, its chain (genesis written) and its validator.
pub struct Node {
    cfg: NodeConfig,
    store: Arc<dyn Storage>,
    chain: Chain,
    validator: SecretKey,
    acc: Accelerator,
    proofs: Option<Arc<Groth16Intents>>,
    start: Head,
    stop: Arc<AtomicBool>,
}

impl Node {
    /// Opens (creating if needed) the chain in `cfg.data_dir` and, when it
    /// holds no chain yet, writes `genesis()` as block 0, sealed by
    /// `validator`. A data dir that holds another chain is an error.
    pub fn open(
        cfg: NodeConfig,
        acc: Accelerator,
        validator: SecretKey,
        stop: Arc<AtomicBool>,
        genesis: impl FnOnce() -> Result<Genesis>,
    ) -> Result<Self> {
        if cfg.block_ms == 0 {
            bail!("the block interval must be at least 1 ms");
        }
        if cfg.block_txs_max == 0 {
            bail!("blocks must hold at least one transaction");
        }
        let chain_id = cfg.chain_id;
        let store = int_engine::storage::open(&cfg.data_dir.join("lmdb"))
            .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
        if store.snapshot()?.head(chain_id)?.is_none() {
            let blocks = store
                .stats()?
                .tables
                .iter()
                .find(|t| t.name == "blocks")
                .map_or(0, |t| t.entries);
            if blocks > 0 {
                bail!(
                    "{} holds another chain's blocks and none of chain id {chain_id}: \
                     a data dir keeps the chain id it was made with",
                    cfg.data_dir.display()
                );
            }
        }
        // Identity registrations hash the tree's nodes level by level on
        // the GPU (batches the accelerator keeps on the CPU run on all
        // cores), as the Groth16 MSMs below do.
        let spec = ChainSpec::with_hasher(Arc::new(GpuPoseidon::new(acc.clone())));
        let mut chain = spec.open(
            store.clone(),
            ChainConfig {
                chain_id,
                hot_capacity: cfg.hot_capacity.max(HOT_ACCOUNTS_MIN),
                parallel: true,
            },
        )?;
        if chain.head().is_none() {
            let g = genesis()?;
            let head = chain.genesis_with_objects(&g.accounts, &g.objects, now_ms(), &validator)?;
            tracing::info!(accounts = head.accounts, root = %hex::encode(head.state_root), "genesis written");
        }
        let proofs = Groth16Intents::from_store(&*store.snapshot()?, chain_id)?
            .map(|v| Arc::new(v.with_msm(Arc::new(GpuGroth::new(acc.clone())))));
        if let Some(p) = &proofs {
            chain.set_proof_verifier(p.clone());
        }
        // The market's receipt and attestation batches, as ingress's
        // signature batches, hash and sum on the accelerator.
        chain.set_bls_backend(Arc::new(GpuBls::new(acc.clone())));
        let start = chain.head().context("no head after genesis")?;
        Ok(Self {
            cfg,
            store,
            chain,
            validator,
            acc,
            proofs,
            start,
            stop,
        })
    }

    /// The committed state.
    pub fn store(&self) -> &dyn Storage {
        &*self.store
    }

    /// The head when the node was opened.
    pub fn start(&self) -> Head {
        self.start
    }

    /// The summary of a run that lasted `secs` and did `ran`.
    pub fn summary(&self, ran: &Run, secs: f64) -> Result<RunSummary> {
        let head = self.chain.head().context("no head")?;
        let gpu = self.acc.counts();
        Ok(RunSummary {
            chain_id: self.cfg.chain_id,
            height: head.height,
            start_height: self.start.height,
            blocks: ran.blocks,
            txs: ran.txs,
            txs_ok: ran.txs_ok,
            tps: ran.txs as f64 / secs,
            state_root: hex::encode(head.state_root),
            accounts: head.accounts,
            rejected: ran.rejected,
            duration_s: secs,
            data_dir: self.cfg.data_dir.display().to_string(),
            validator: hex::encode(self.validator.public_key().account_id()),
            accel: self.acc.describe(),
            gpu_batches: gpu.gpu_batches,
            gpu_fallbacks: gpu.gpu_fallbacks,
        })
    }

    /// Serves the node until the stop flag (Ctrl-C), the duration's end, or
    /// an error of the block loop: binds the RPC and MQTT addresses
    /// (printing them on stderr), starts ingress, the servers and
    /// `extras`, and seals a block every `block_ms` on this thread.
    pub fn run(&mut self, extras: Vec<Extra<'_>>, hooks: Hooks<'_>) -> Result<Run> {
        let Node {
            cfg,
            store,
            chain,
            validator,
            acc,
            proofs,
            stop,
            ..
        } = self;
        let chain_id = cfg.chain_id;
        let store: &dyn Storage = &**store;
        let stop: &AtomicBool = stop;
        let Hooks {
            mut on_block,
            on_refused,
        } = hooks;

        let rpc_listener = cfg.rpc_addr.map(crate::service::rpc::bind).transpose()?;
        if let Some(l) = &rpc_listener {
            eprintln!("JSON-RPC on http://{}", l.local_addr()?);
        }
        let mqtt = match cfg.mqtt_addr {
            Some(addr) => {
                let l = crate::service::rpc::bind_service(addr, "MQTT gateway")?;
                l.set_nonblocking(true)?;
                let (gw, handle, ingest) = int_gateway::Gateway::new(
                    mio::net::TcpListener::from_std(l),
                    int_gateway::Config::for_chain(chain_id),
                )
                .context("starting the MQTT gateway")?;
                eprintln!("MQTT on mqtt://{}", gw.local_addr()?);
                Some((gw, handle, ingest))
            }
            None => None,
        };
        let mqtt_handle = mqtt.as_ref().map(|(_, h, _)| h.clone());
        // Committed heights for the MQTT publisher thread, which reads each
        // block back and builds its messages off the block loop.
        let (blocks_tx, blocks_rx) = match mqtt {
            Some(_) => {
                let (tx, rx) = sync_channel::<u64>(PUBLISH_QUEUE_BLOCKS);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let bls_g1 = GpuBls::new(acc.clone());
        let stats = Stats::default();
        let mempool = Mutex::new(Mempool::new(MEMPOOL_TXS));
        let (in_tx, in_rx) = sync_channel::<Batch>(INGRESS_QUEUE);
        let began = Instant::now();
        // A duration too long for the clock is no deadline.
        let deadline = cfg
            .duration_s
            .and_then(|s| began.checked_add(Duration::from_secs(s)));
        let tty = std::io::stderr().is_terminal();
        let mut run = Run::default();

        let proofs_ref = proofs.as_deref().map(|p| p as &dyn ProofVerifier);
        let admitter = Admitter::new(store, chain_id, proofs_ref, &bls_g1, &mempool, &stats);
        let result: Result<()> = std::thread::scope(|s| {
            let (admitter_ref, stats_ref, pool_ref) = (&admitter, &stats, &mempool);
            let acc_ref: &Accelerator = acc;
            for extra in extras {
                let ctx = ExtraCtx {
                    store,
                    chain_id,
                    ingress: in_tx.clone(),
                    stop,
                };
                s.spawn(move || extra(ctx));
            }
            if let Some(listener) = rpc_listener {
                // The RPC's own queue, forwarded into ingress by a thread
                // that may wait on it, so the RPC's event loop never does.
                let (rpc_tx, rpc_rx) = sync_channel::<Batch>(RPC_QUEUE);
                let to_ingress = in_tx.clone();
                s.spawn(move || {
                    for batch in rpc_rx {
                        if to_ingress.send(batch).is_err() {
                            break;
                        }
                    }
                });
                let mqtt_stats = mqtt_handle.as_ref().map(|h| h.stats.clone());
                let metrics = move || {
                    let waiting = {
                        let pool = pool_ref.lock().unwrap_or_else(|e| e.into_inner());
                        (pool.len(), pool.dropped())
                    };
                    stats_ref.prometheus(
                        store,
                        chain_id,
                        waiting,
                        acc_ref.counts(),
                        mqtt_stats.as_deref(),
                    )
                };
                s.spawn(move || {
                    let ctx = crate::service::rpc::RpcCtx {
                        store,
                        chain_id,
                        submit: Some(rpc_tx),
                        metrics: Some(&metrics),
                    };
                    if let Err(err) = crate::service::rpc::serve(listener, &ctx, stop) {
                        tracing::warn!(%err, "JSON-RPC server stopped");
                    }
                });
            }
            if let Some((gw, handle, ingest)) = mqtt {
                s.spawn(move || {
                    if let Err(err) = gw.run(stop) {
                        tracing::warn!(%err, "MQTT gateway stopped");
                    }
                });
                let publisher = handle.clone();
                s.spawn(move || {
                    let admit = |b: Vec<Vec<u8>>| admitter_ref.admit(b);
                    crate::service::mqtt::serve_ingest(&ingest, &handle, chain_id, &admit, stop);
                });
                if let Some(heights) = blocks_rx {
                    s.spawn(move || {
                        crate::service::mqtt::serve_blocks(
                            &heights, &publisher, store, chain_id, stop,
                        )
                    });
                }
            }
            // Ingress ends when every sender is gone or at the stop flag.
            drop(in_tx);
            s.spawn(move || ingress_loop(admitter_ref, in_rx, on_refused, stop));

            let block = Duration::from_millis(cfg.block_ms);
            let mut next_block = Instant::now() + block;
            let mut last_status = Instant::now();
            let mut window = (Instant::now(), 0u64); // (since, txs)
            let out = (|| -> Result<()> {
                loop {
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Ok(());
                    }
                    let now = Instant::now();
                    if now < next_block {
                        std::thread::sleep((next_block - now).min(Duration::from_millis(50)));
                        continue;
                    }
                    next_block += block;
                    if next_block < Instant::now() {
                        next_block = Instant::now() + block;
                    }
                    let (txs, res) =
                        produce_block(chain, &mempool, cfg.block_txs_max, validator, &stats)?;
                    window.1 += txs.len() as u64;
                    for (tx, st) in txs.iter().zip(&res.statuses) {
                        run.market.count(&tx.payload, *st);
                        if let PayloadSpec::AnonIntent(a) = &tx.payload {
                            run.intents += 1;
                            run.intents_ok += u64::from(*st == TxStatus::Ok);
                            tracing::debug!(status = ?st, cluster = a.cluster, target = %hex::encode(a.target), "anonymous intent");
                        }
                    }
                    if let Some(f) = on_block.as_mut() {
                        f(&txs, &res);
                    }
                    if let (Some(tx), Some(h)) = (&blocks_tx, &mqtt_handle)
                        && tx.try_send(res.head.height).is_err()
                    {
                        // The publisher is a queue of blocks behind: this
                        // block's messages are dropped, and counted.
                        h.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(height = res.head.height, txs = txs.len(), timings = ?res.timings, "block committed");
                    if last_status.elapsed() >= Duration::from_secs(1) {
                        let secs = window.0.elapsed().as_secs_f64();
                        let vns = stats.verify_ns.load(Ordering::Relaxed);
                        // Since the start: a verification batch that spans
                        // two status windows would otherwise count twice in
                        // one.
                        let share = vns as f64 / 1e9 / began.elapsed().as_secs_f64();
                        let pool_len = mempool.lock().map(|p| p.len()).unwrap_or(0);
                        let line = format!(
                            "height={} txs={} tps={:.0} mempool={} sigcheck={:.0}% accounts={} intents={}",
                            res.head.height,
                            stats.txs.load(Ordering::Relaxed),
                            window.1 as f64 / secs,
                            pool_len,
                            share * 100.0,
                            res.head.accounts,
                            run.intents_ok
                        );
                        if tty {
                            eprint!("\r{line}   ");
                        } else {
                            eprintln!("{line}");
                        }
                        window = (Instant::now(), 0);
                        last_status = Instant::now();
                    }
                }
            })();
            stop.store(true, Ordering::SeqCst);
            out
        });
        if tty {
            eprintln!();
        }
        result?;
        // A stopping node saves the state log's memory: the next start
        // reads it instead of scanning the log.
        let saved = Instant::now();
        match self.store().checkpoint() {
            Ok(bytes) => tracing::info!(
                bytes,
                ms = saved.elapsed().as_millis() as u64,
                "state checkpoint written"
            ),
            Err(e) => {
                tracing::warn!("state checkpoint not written ({e}): the next start scans the log")
            }
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        run.blocks = get(&stats.blocks);
        run.txs = get(&stats.txs);
        run.txs_ok = get(&stats.txs_ok);
        run.rejected = get(&stats.rejected);
        run.intents_refused = get(&stats.intents_refused);
        run.verify_s = get(&stats.verify_ns) as f64 / 1e9;
        Ok(run)
    }
}

/// Market and token transactions of a run, by what they did.
#[derive(Debug, Default)]
pub struct MarketCounts {
    /// Price-tag purchases that succeeded.
    pub price_tag: u64,
    /// Channel claims that paid a seller.
    pub metered: u64,
    /// Bids accepted into an auction window.
    pub auction: u64,
    /// Confirmed uses that released escrow.
    pub cpp: u64,
    /// Intents carrying a `ClusterBuy`, accepted.
    pub cluster_buys: u64,
    /// Other market transactions that succeeded.
    pub other_ok: u64,
    /// Market and token transactions the chain refused.
    pub refused: u64,
    /// `BurnForGas` accepted.
    pub burns: u64,
    /// Oracle reports accepted.
    pub oracle_reports: u64,
    /// GAS-auction bids accepted.
    pub gas_bids: u64,
}

impl MarketCounts {
    fn count(&mut self, p: &PayloadSpec, st: TxStatus) {
        use PayloadSpec as P;
        let counter = match p {
            P::Buy { .. } => &mut self.price_tag,
            P::ClaimChannel { .. } => &mut self.metered,
            P::PlaceBid { .. } => &mut self.auction,
            P::ConfirmUse { .. } => &mut self.cpp,
            P::AnonIntent(a) if ClusterBuy::decode(&a.payload).is_some() => &mut self.cluster_buys,
            P::BurnForGas { .. } => &mut self.burns,
            P::OracleReport { .. } => &mut self.oracle_reports,
            P::BidGas { .. } => &mut self.gas_bids,
            P::ListSku(_)
            | P::UpdateSku { .. }
            | P::DelistSku { .. }
            | P::OpenChannel { .. }
            | P::Order { .. }
            | P::SetPolicy(_)
            | P::CancelPolicy { .. }
            | P::RegisterKind { .. } => &mut self.other_ok,
            _ => return,
        };
        if st == TxStatus::Ok {
            *counter += 1;
        } else {
            self.refused += 1;
            if !tracing::enabled!(tracing::Level::DEBUG) {
                return;
            }
            // The payload's variant name, without its fields.
            let name = format!("{p:?}");
            let name = name.split([' ', '(', '{']).next().unwrap_or("");
            tracing::debug!(status = ?st, payload = name, "market transaction refused");
        }
    }
}
