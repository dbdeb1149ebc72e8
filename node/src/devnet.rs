//! `int devnet`: one validator producing blocks, with simulated devices that
//! register and then send signed transfers at full speed, all in one
//! process over an embedded LMDB.
//!
//! Four threads: the devices sign transactions (each device keeps one in
//! flight, so nonces stay right); the simulated BPK users ([`bpk_sim`])
//! register identities and send anonymous intents with Groth16 proofs,
//! relayed by the validator; ingress verifies everything in batches
//! (signatures, then proofs) and admits it to the mempool; the producer
//! (this thread) seals a block every `block_ms`. Signing, proving and
//! verification share rayon's pool over all cores.
//!
//! [`bpk_sim`]: crate::bpk_sim

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use int_bench::devices::{Fleet, now_ms, validator_account};
use int_engine::chain::{Chain, ChainConfig};
use int_engine::crypto::bls::{BlsG1Backend, SecretKey};
use int_engine::ingress::{
    IngressConfig, IngressError, KeyCache, ProofVerifier, check_batch_on, committed_nonces,
};
use int_engine::mempool::Mempool;
use int_engine::storage::Store;
use int_schemas::wire::TxStatus;
use int_schemas::{AccountId, ClusterBuy, PayloadSpec};
use int_systems::bpk::{self, Groth16Intents};
use int_systems::market::MarketPlugin;
use int_systems::token::{self, TokenPlugin};
use int_systems::{BpkPlugin, LedgerPlugin};

use int_gpu::{Accelerator, ThresholdPolicy};

use crate::accel::{GpuBls, GpuGroth, GpuPoseidon};
use crate::bpk_sim::{self, Sim, SimStats};
use crate::market_sim::{self, MarketSim};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Options of `int devnet`.
#[derive(Debug, Clone)]
pub struct DevnetOpts {
    /// Where LMDB and the devnet's key file live.
    pub data_dir: PathBuf,
    /// Simulated devices (used at genesis; a restart keeps the stored count).
    pub devices: usize,
    /// Block interval.
    pub block_ms: u64,
    /// Stop after this many seconds (default: until Ctrl-C).
    pub duration_s: Option<u64>,
    /// Most transactions per block.
    pub block_txs_max: usize,
    /// Write a flamegraph of the run here.
    pub flamegraph: Option<PathBuf>,
    /// Simulated BPK users sending anonymous intents (0: none; used at
    /// genesis, a restart keeps the stored count).
    pub users: usize,
    /// Pause between two intents.
    pub intent_ms: u64,
    /// Where batch verification's curve arithmetic runs.
    pub accel: int_gpu::Accel,
    /// The JSON-RPC server's address; `None`: no server.
    pub rpc_addr: Option<std::net::SocketAddr>,
    /// The MQTT gateway's address; `None`: no gateway.
    pub mqtt_addr: Option<std::net::SocketAddr>,
}

/// The devnet's persistent parameters, in `DATA_DIR/devnet.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevnetFile {
    chain_id: u32,
    devices: usize,
    /// Seed of the simulated devices' keys (hex). Devnet only.
    fleet_seed: String,
    /// Seed of the validator's key (hex). Devnet only: a production
    /// validator keeps its key in a keystore.
    validator_seed: String,
    /// Simulated BPK users (0 or absent: intents off).
    #[serde(default)]
    users: usize,
    /// Seed of the BPK users, centroids and Groth16 keys (hex). Devnet
    /// only: production keys come from a multi-party ceremony.
    #[serde(default)]
    bpk_seed: Option<String>,
    /// Seed of the simulated market's sellers, buyers and oracles (hex;
    /// absent in data dirs made before the market: no market then).
    #[serde(default)]
    market_seed: Option<String>,
}

/// What a run did; printed at the end, as JSON with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
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
    /// Simulated devices.
    pub devices: usize,
    /// Transactions refused at ingress or by the mempool.
    pub rejected: u64,
    /// Share of wall time the ingress thread spent in signature checks.
    pub sig_check_share: f64,
    /// Seconds this run lasted.
    pub duration_s: f64,
    /// Data directory.
    pub data_dir: String,
    /// The validator's account id, hex (try `int state account ID --proof`).
    pub validator: String,
    /// The account id of simulated device 0, hex.
    pub device0: String,
    /// Simulated BPK users (0: intents off).
    pub users: usize,
    /// Identities in the chain's identity tree at the end.
    pub identities: u64,
    /// Anonymous intents included by this run.
    pub intents: u64,
    /// Of which accepted (proof, root, epoch, centroids, nullifier).
    pub intents_ok: u64,
    /// Intents refused at ingress (proof did not verify or decode).
    pub intents_refused: u64,
    /// Mean time to prove one intent, milliseconds.
    pub prove_ms_mean: f64,
    /// Where batch verification's curve arithmetic ran: the `--accel`
    /// choice and the adapter (`auto: cpu` without one).
    pub accel: String,
    /// Price-tag purchases that succeeded (`Buy`).
    pub price_tag: u64,
    /// Metering: channel claims that paid a seller (`ClaimChannel`).
    pub metered: u64,
    /// Competitive bidding: bids accepted into an auction window.
    pub auction: u64,
    /// CPP: confirmed uses that released escrow to a seller.
    pub cpp: u64,
    /// Anonymous purchases: intents carrying a `ClusterBuy` that bought
    /// from a SKU sold to BPK clusters (also counted in `intents_ok`).
    pub cluster_buys: u64,
    /// Purchases the standing policies made (no transaction each: the
    /// chain buys on the policy's behalf), summed over the policies at the
    /// end.
    pub policy_buys: u64,
    /// Standing policies at the end.
    pub policies: u64,
    /// Other market transactions that succeeded (listings, updates,
    /// channel opens, orders, kinds).
    pub market_other_ok: u64,
    /// Market transactions the chain refused (each with its status).
    pub market_refused: u64,
    /// INT burned for GAS at the oracle price (`BurnForGas`), accepted.
    pub burns: u64,
    /// Oracle price reports accepted.
    pub oracle_reports: u64,
    /// GAS-auction bids accepted.
    pub gas_bids: u64,
    /// SKUs listed at the end.
    pub skus: u64,
    /// The supply audit at the end: every account plus every escrow equals
    /// the stored INT and GAS totals, to the unit (`null` on a chain made
    /// before supply accounting that produced no block in this run).
    pub value_conserved: Option<bool>,
    /// The stored totals at the end (base units, as decimal strings).
    pub supply: Option<BTreeMap<String, String>>,
}

fn seed_from_hex(s: &str) -> Result<[u8; 32]> {
    let v = hex::decode(s).context("seed is not hex")?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("seed must be 32 bytes"))
}

fn load_or_create(path: &Path, devices: usize, users: usize) -> Result<DevnetFile> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
        return serde_json::from_str(&text).with_context(|| format!("parsing {path:?}"));
    }
    let mut rng = rand::thread_rng();
    let f = DevnetFile {
        chain_id: 1,
        devices,
        fleet_seed: hex::encode(rng.r#gen::<[u8; 32]>()),
        validator_seed: hex::encode(rng.r#gen::<[u8; 32]>()),
        users,
        bpk_seed: (users > 0).then(|| hex::encode(rng.r#gen::<[u8; 32]>())),
        market_seed: Some(hex::encode(rng.r#gen::<[u8; 32]>())),
    };
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&f)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(f)
}

/// Counters shared by the threads.
/// Counters of a running node (ingress, blocks), for the status line and
/// `/metrics`.
#[derive(Default)]
pub(crate) struct Stats {
    verify_ns: AtomicU64,
    rejected: AtomicU64,
    intents_refused: AtomicU64,
    /// Blocks and transactions this run committed (for `/metrics`).
    blocks: AtomicU64,
    txs: AtomicU64,
    txs_ok: AtomicU64,
}

impl Stats {
    /// The node's metrics in Prometheus' text format (version 0.0.4).
    fn prometheus(
        &self,
        store: &Store,
        chain_id: u32,
        mempool: usize,
        mqtt: Option<&int_gateway::Stats>,
    ) -> String {
        let head = store.head(chain_id).ok().flatten();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "int_height",
            "gauge",
            "Height of the committed head.",
            head.as_ref().map_or(0, |h| h.height).to_string(),
        );
        metric(
            "int_accounts",
            "gauge",
            "Accounts in the state.",
            head.as_ref().map_or(0, |h| h.accounts).to_string(),
        );
        metric(
            "int_blocks_total",
            "counter",
            "Blocks this node committed since it started.",
            get(&self.blocks),
        );
        metric(
            "int_transactions_total",
            "counter",
            "Transactions included since start (rate() gives tx/s).",
            get(&self.txs),
        );
        metric(
            "int_transactions_ok_total",
            "counter",
            "Included transactions that succeeded.",
            get(&self.txs_ok),
        );
        metric(
            "int_mempool_transactions",
            "gauge",
            "Verified transactions waiting for a block.",
            mempool.to_string(),
        );
        metric(
            "int_verify_seconds_total",
            "counter",
            "Time ingress spent decoding and checking signatures in batches.",
            format!("{:.6}", self.verify_ns.load(Ordering::Relaxed) as f64 / 1e9),
        );
        metric(
            "int_rejected_total",
            "counter",
            "Transactions refused at ingress.",
            get(&self.rejected),
        );
        if let Some(m) = mqtt {
            metric(
                "int_mqtt_connections",
                "gauge",
                "Open MQTT connections (after CONNECT).",
                get(&m.connections),
            );
            metric(
                "int_mqtt_connections_total",
                "counter",
                "MQTT connections accepted since start.",
                get(&m.connections_total),
            );
            metric(
                "int_mqtt_ingested_total",
                "counter",
                "Messages devices published to the transaction topic.",
                get(&m.ingested),
            );
            metric(
                "int_mqtt_delivered_total",
                "counter",
                "Messages delivered to MQTT subscribers.",
                get(&m.delivered),
            );
            metric(
                "int_mqtt_events_dropped_total",
                "counter",
                "Node messages the gateway dropped because its queue was full.",
                get(&m.events_dropped),
            );
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

/// What the devices learn about their transactions.
enum Feedback {
    /// Sender's transaction left the pipeline: included with a status, or
    /// refused (`None`).
    Done(AccountId, Option<TxStatus>),
    /// A block was committed at this height.
    Head(u64),
}

const DEVICE_BATCH: usize = 512;
/// Transactions the RPC may queue for ingress before it answers "full".
const RPC_QUEUE: usize = 1024;
/// Most simulated devices: each costs a key derivation at start (about
/// 0.1 ms of a core) and a few hundred bytes, so 10 million is minutes and
/// gigabytes; a larger count in a hand-edited devnet.json is refused.
const DEVICES_MAX: usize = 10_000_000;
const RESYNC_AFTER_BLOCKS: u64 = 20;

struct Device {
    nonce: u64,
    registered: bool,
    in_flight: Option<u64>,
}

fn device_loop(
    fleet: &Fleet,
    store: &Store,
    chain_id: u32,
    feedback: Receiver<Feedback>,
    out: SyncSender<Vec<(AccountId, Vec<u8>)>>,
    stop: &AtomicBool,
) {
    let index: HashMap<AccountId, usize> = fleet
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let read = |i: usize| -> Device {
        let rec = store
            .account(chain_id, &fleet.ids[i])
            .ok()
            .flatten()
            .unwrap_or_default();
        Device {
            nonce: rec.nonce,
            registered: rec.public_key.is_some(),
            in_flight: None,
        }
    };
    let mut devs: Vec<Device> = (0..fleet.len()).map(read).collect();
    let apply = |m: Feedback, devs: &mut Vec<Device>, height: &mut u64| match m {
        Feedback::Head(h) => *height = h,
        Feedback::Done(id, status) => {
            let Some(&i) = index.get(&id) else { return };
            // Statuses that leave the nonce unused, and refusals, send the
            // device back to the committed state.
            let consumed = matches!(
                status,
                Some(s) if !matches!(s, TxStatus::BadNonce | TxStatus::InsufficientFee | TxStatus::UnknownSender)
            );
            if consumed {
                devs[i].in_flight = None;
                devs[i].registered |=
                    matches!(status, Some(TxStatus::Ok | TxStatus::AlreadyRegistered));
            } else {
                devs[i] = read(i);
            }
        }
    };
    let mut rng = rand::thread_rng();
    let mut cursor = 0usize;
    let mut height = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Learn what happened to the transactions in flight.
        loop {
            match feedback.try_recv() {
                Ok(m) => apply(m, &mut devs, &mut height),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        // Pick idle devices, round robin.
        let mut picked = Vec::with_capacity(DEVICE_BATCH);
        let n = devs.len();
        for _ in 0..n {
            if picked.len() == DEVICE_BATCH {
                break;
            }
            let i = cursor;
            cursor = (cursor + 1) % n;
            match devs[i].in_flight {
                None => picked.push(i),
                Some(h) if height > h + RESYNC_AFTER_BLOCKS => {
                    // Lost (e.g. evicted by a full mempool): start over
                    // from the committed state.
                    devs[i] = read(i);
                    picked.push(i);
                }
                Some(_) => {}
            }
        }
        if picked.is_empty() {
            match feedback.recv_timeout(Duration::from_millis(20)) {
                Ok(m) => apply(m, &mut devs, &mut height),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        let plans: Vec<(usize, u64, bool, usize, u128)> = picked
            .iter()
            .map(|&i| {
                let mut to = rng.gen_range(0..n);
                if to == i && n > 1 {
                    to = (to + 1) % n;
                }
                (
                    i,
                    devs[i].nonce,
                    devs[i].registered,
                    to,
                    rng.gen_range(1..=100),
                )
            })
            .collect();
        use rayon::prelude::*;
        let batch: Vec<(AccountId, Vec<u8>)> = plans
            .par_iter()
            .map(|&(i, nonce, registered, to, amount)| {
                let tx = if registered {
                    fleet.transfer_tx(chain_id, i, nonce, fleet.ids[to], amount)
                } else {
                    fleet.register_tx(chain_id, i, nonce)
                };
                (fleet.ids[i], tx)
            })
            .collect();
        for &(i, ..) in &plans {
            devs[i].nonce += 1;
            devs[i].in_flight = Some(height);
        }
        if out.send(batch).is_err() {
            return;
        }
    }
}

/// Ingress for every source (devices, users, RPC, MQTT): checks a batch
/// (decoding, signatures and intent proofs in batches), admits what passes
/// to the mempool, and answers, per input, `Ok` or the status that refused
/// it. Shared by the threads that feed it (the key cache is behind a lock).
pub(crate) struct Admitter<'a> {
    store: &'a Store,
    chain_id: u32,
    proofs: Option<&'a dyn ProofVerifier>,
    g1: &'a dyn BlsG1Backend,
    keys: KeyCache<'a>,
    mempool: &'a Mutex<Mempool>,
    stats: &'a Stats,
}

impl<'a> Admitter<'a> {
    /// Ingress over `store`'s committed state into `mempool`.
    pub(crate) fn new(
        store: &'a Store,
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
            keys: KeyCache::new(store, chain_id, 1 << 20),
            mempool,
            stats,
        }
    }

    /// Checks and admits `batch`; one answer per input, in order.
    pub(crate) fn admit(&self, batch: Vec<Vec<u8>>) -> Vec<Result<(), TxStatus>> {
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
        let nonces =
            committed_nonces(self.store, self.chain_id, &checked.accepted).unwrap_or_else(|err| {
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

/// The devnet's own ingress: batches from the simulated devices, users,
/// market and the RPC; a refused transaction is reported to its device.
fn ingress_loop(
    admitter: &Admitter<'_>,
    input: Receiver<Vec<(AccountId, Vec<u8>)>>,
    feedback: &SyncSender<Feedback>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let batch = match input.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // The devices say who they are: no decoding just to learn the sender.
        let (senders, batch): (Vec<AccountId>, Vec<Vec<u8>>) = batch.into_iter().unzip();
        for (sender, answer) in senders.into_iter().zip(admitter.admit(batch)) {
            if answer.is_err() {
                let _ = feedback.try_send(Feedback::Done(sender, None));
            }
        }
    }
}

/// Runs the devnet until Ctrl-C or the duration; returns its summary.
pub fn run(opts: &DevnetOpts) -> Result<Summary> {
    if !(1..=DEVICES_MAX).contains(&opts.devices) {
        bail!("--devices must be between 1 and {DEVICES_MAX}");
    }
    if opts.block_ms == 0 {
        bail!("--block-ms must be at least 1");
    }
    // Before anything is written: a bad INT_GPU_MIN_BATCH or `--accel gpu`
    // without an adapter must not leave a fresh data directory behind.
    let acc = Accelerator::open(opts.accel, ThresholdPolicy::from_env()?)?;
    tracing::info!(accel = %acc.describe(), "batch verification");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let profiler = match &opts.flamegraph {
        Some(_) => Some(
            pprof::ProfilerGuardBuilder::default()
                .frequency(499)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .context("starting the profiler")?,
        ),
        None => None,
    };

    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {:?}", opts.data_dir))?;
    if opts.users > bpk_sim::USERS_MAX {
        bail!("--users must be at most {}", bpk_sim::USERS_MAX);
    }
    let file = load_or_create(&opts.data_dir.join("devnet.json"), opts.devices, opts.users)?;
    if file.devices != opts.devices {
        tracing::warn!(
            stored = file.devices,
            asked = opts.devices,
            "this data dir was created with another device count; keeping the stored one"
        );
    }
    if !(1..=DEVICES_MAX).contains(&file.devices) {
        bail!(
            "devnet.json: `devices` is {}, it must be between 1 and {DEVICES_MAX}",
            file.devices
        );
    }
    let chain_id = file.chain_id;
    let store = Arc::new(Store::open(&opts.data_dir.join("lmdb"))?);
    let t = Instant::now();
    let fleet = Fleet::derive(
        file.devices,
        &seed_from_hex(&file.fleet_seed).context("fleet_seed in devnet.json")?,
    );
    tracing::info!(
        devices = fleet.len(),
        ms = t.elapsed().as_millis() as u64,
        "device keys derived"
    );
    let validator = SecretKey::from_seed(
        &seed_from_hex(&file.validator_seed).context("validator_seed in devnet.json")?,
    );
    let sim = match (&file.bpk_seed, file.users) {
        (Some(seed), users) if users > 0 => {
            let t = Instant::now();
            let sim = Sim::derive(
                users,
                &seed_from_hex(seed).context("bpk_seed in devnet.json")?,
            )?;
            tracing::info!(
                users,
                ms = t.elapsed().as_millis() as u64,
                "BPK users, clusters and devnet Groth16 keys derived (devnet keys: production keys need a multi-party ceremony)"
            );
            Some(sim)
        }
        _ => None,
    };
    let market_sim = match &file.market_seed {
        Some(seed) => Some(MarketSim::derive(
            &seed_from_hex(seed).context("market_seed in devnet.json")?,
        )),
        None => None,
    };
    // Identity registrations hash the tree's nodes level by level on the
    // GPU (batches the accelerator keeps on the CPU run on all cores), as
    // the Groth16 MSMs below do.
    let bpk_plugin = BpkPlugin::with_hasher(Arc::new(GpuPoseidon::new(acc.clone())));
    let mut chain = Chain::open(
        store.clone(),
        ChainConfig {
            chain_id,
            hot_capacity: 200_000.max(fleet.len() * 2),
            parallel: true,
        },
        &[&LedgerPlugin, &bpk_plugin, &MarketPlugin, &TokenPlugin],
    )?;
    if chain.head().is_none() {
        let mut alloc = fleet.genesis_alloc();
        let (vid, mut vrec) = validator_account(&validator);
        // The validator relays the simulated users' BPK transactions and
        // pays their fees from the first block on.
        if sim.is_some() {
            vrec.gas = 1 << 40;
        }
        alloc.push((vid, vrec));
        let mut objects = match &sim {
            Some(sim) => bpk::genesis_objects(&sim.genesis(vid))?,
            None => Vec::new(),
        };
        if let Some(m) = &market_sim {
            alloc.extend(m.genesis_alloc());
            objects.extend(token::genesis_objects(&m.token_config())?);
        }
        let head = chain.genesis_with_objects(&alloc, &objects, now_ms(), &validator)?;
        tracing::info!(accounts = head.accounts, root = %hex::encode(head.state_root), "genesis written");
    }
    let bls_g1 = GpuBls::new(acc.clone());
    let proofs = Groth16Intents::from_store(&store, chain_id)?
        .map(|v| Arc::new(v.with_msm(Arc::new(GpuGroth::new(acc.clone())))));
    if let Some(p) = &proofs {
        chain.set_proof_verifier(p.clone());
    }
    let sim = match (sim, bpk::load_config(&store, chain_id)?) {
        (Some(sim), Some(cfg)) if sim.matches(&cfg.verifying_key) => Some(sim),
        (Some(_), _) => {
            tracing::warn!("this chain's genesis has other BPK keys or none; no simulated intents");
            None
        }
        (None, _) => None,
    };
    let market_sim = match market_sim {
        Some(m) if market_sim::matches(&m, &store, chain_id)? => Some(m),
        Some(_) => {
            tracing::warn!(
                "this chain's genesis has other token oracles or none; no simulated market"
            );
            None
        }
        None => None,
    };
    let start = chain.head().context("no head after genesis")?;
    eprintln!(
        "int devnet: chain {chain_id}, {} devices, block every {} ms, data in {}, starting at height {}",
        fleet.len(),
        opts.block_ms,
        opts.data_dir.display(),
        start.height
    );
    eprintln!(
        "validator {}, device 0 {} (see `int state account ID --proof`)",
        hex::encode(validator.public_key().account_id()),
        hex::encode(fleet.ids[0])
    );

    let rpc_listener = opts.rpc_addr.map(crate::rpc::bind).transpose()?;
    if let Some(l) = &rpc_listener {
        eprintln!("JSON-RPC on http://{}", l.local_addr()?);
    }
    let mqtt = match opts.mqtt_addr {
        Some(addr) => {
            let l = crate::rpc::bind_service(addr, "MQTT gateway")?;
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
    let stats = Stats::default();
    let sim_stats = SimStats::default();
    let (mut intents, mut intents_ok) = (0u64, 0u64);
    let mempool = Mutex::new(Mempool::new(1 << 20));
    let (fb_tx, fb_rx) = sync_channel::<Feedback>(1 << 20);
    let (in_tx, in_rx) = sync_channel::<Vec<(AccountId, Vec<u8>)>>(4);
    let began = Instant::now();
    let deadline = opts.duration_s.map(|s| began + Duration::from_secs(s));
    let tty = std::io::stderr().is_terminal();
    let mut txs_total = 0u64;
    let mut txs_ok = 0u64;
    let mut blocks = 0u64;
    let mut market = MarketCounts::default();

    let proofs_ref = proofs.as_deref().map(|p| p as &dyn ProofVerifier);
    let admitter = Admitter::new(&store, chain_id, proofs_ref, &bls_g1, &mempool, &stats);
    let result: Result<()> = std::thread::scope(|s| {
        let stop_ref: &AtomicBool = &stop;
        let admitter_ref = &admitter;
        let (store_ref, fleet_ref, stats_ref, pool_ref) = (&*store, &fleet, &stats, &mempool);
        let fb_ingress = fb_tx.clone();
        if let Some(sim) = &sim {
            let users_out = in_tx.clone();
            let ctx = bpk_sim::Ctx {
                sim,
                store: store_ref,
                chain_id,
                relayer: &validator,
                targets: &fleet.ids,
                interval: Duration::from_millis(opts.intent_ms),
                stats: &sim_stats,
                stop: stop_ref,
            };
            s.spawn(move || {
                if let Err(err) = bpk_sim::run(&ctx, &users_out) {
                    tracing::warn!(%err, "simulated BPK users stopped");
                }
            });
        }
        if let Some(listener) = rpc_listener {
            // The RPC's own queue, forwarded into ingress by a thread that
            // may wait on it, so the RPC's event loop never does.
            let (rpc_tx, rpc_rx) = sync_channel::<Vec<(AccountId, Vec<u8>)>>(RPC_QUEUE);
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
                let waiting = pool_ref.lock().unwrap_or_else(|e| e.into_inner()).len();
                stats_ref.prometheus(store_ref, chain_id, waiting, mqtt_stats.as_deref())
            };
            s.spawn(move || {
                let ctx = crate::rpc::RpcCtx {
                    store: store_ref,
                    chain_id,
                    submit: Some(rpc_tx),
                    metrics: Some(&metrics),
                };
                if let Err(err) = crate::rpc::serve(listener, &ctx, stop_ref) {
                    tracing::warn!(%err, "JSON-RPC server stopped");
                }
            });
        }
        if let Some((gw, handle, ingest)) = mqtt {
            s.spawn(move || {
                if let Err(err) = gw.run(stop_ref) {
                    tracing::warn!(%err, "MQTT gateway stopped");
                }
            });
            s.spawn(move || {
                let admit = |b: Vec<Vec<u8>>| admitter_ref.admit(b);
                crate::mqtt::serve_ingest(&ingest, &handle, chain_id, &admit, stop_ref);
            });
        }
        if let Some(m) = &market_sim {
            let market_out = in_tx.clone();
            let ctx = market_sim::Ctx {
                sim: m,
                store: store_ref,
                chain_id,
                step: Duration::from_millis((opts.block_ms / 2).max(10)),
                stop: stop_ref,
            };
            s.spawn(move || {
                if let Err(err) = market_sim::run(&ctx, &market_out) {
                    tracing::warn!(%err, "simulated market stopped");
                }
            });
        }
        s.spawn(move || device_loop(fleet_ref, store_ref, chain_id, fb_rx, in_tx, stop_ref));
        s.spawn(move || ingress_loop(admitter_ref, in_rx, &fb_ingress, stop_ref));

        let mut next_block = Instant::now() + Duration::from_millis(opts.block_ms);
        let mut last_status = Instant::now();
        let mut window = (Instant::now(), 0u64); // (since, txs)
        let out = (|| -> Result<()> {
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
                let now = Instant::now();
                if now < next_block {
                    std::thread::sleep((next_block - now).min(Duration::from_millis(50)));
                    continue;
                }
                next_block += Duration::from_millis(opts.block_ms);
                if next_block < Instant::now() {
                    next_block = Instant::now() + Duration::from_millis(opts.block_ms);
                }
                let txs = mempool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(opts.block_txs_max);
                let res = chain.execute_block(&txs, now_ms(), &validator)?;
                blocks += 1;
                txs_total += txs.len() as u64;
                stats.blocks.fetch_add(1, Ordering::Relaxed);
                stats.txs.fetch_add(txs.len() as u64, Ordering::Relaxed);
                let ok = res.statuses.iter().filter(|s| **s == TxStatus::Ok).count() as u64;
                txs_ok += ok;
                stats.txs_ok.fetch_add(ok, Ordering::Relaxed);
                window.1 += txs.len() as u64;
                for (tx, st) in txs.iter().zip(&res.statuses) {
                    market.count(&tx.payload, *st);
                    if let PayloadSpec::AnonIntent(a) = &tx.payload {
                        intents += 1;
                        intents_ok += u64::from(*st == TxStatus::Ok);
                        tracing::debug!(status = ?st, cluster = a.cluster, target = %hex::encode(a.target), "anonymous intent");
                    }
                    let _ = fb_tx.try_send(Feedback::Done(tx.sender, Some(*st)));
                }
                let _ = fb_tx.try_send(Feedback::Head(res.head.height));
                if let Some(h) = &mqtt_handle {
                    match crate::mqtt::block_messages(&store, chain_id, res.head.height) {
                        Ok(msgs) => {
                            let _ = h.publish(msgs);
                        }
                        Err(err) => tracing::warn!(%err, "MQTT messages of a block"),
                    }
                }
                tracing::debug!(height = res.head.height, txs = txs.len(), timings = ?res.timings, "block committed");
                if last_status.elapsed() >= Duration::from_secs(1) {
                    let secs = window.0.elapsed().as_secs_f64();
                    let vns = stats.verify_ns.load(Ordering::Relaxed);
                    // Since the start: a verification batch that spans two
                    // status windows would otherwise count twice in one.
                    let share = vns as f64 / 1e9 / began.elapsed().as_secs_f64();
                    let pool_len = mempool.lock().map(|p| p.len()).unwrap_or(0);
                    let line = format!(
                        "height={} txs={} tps={:.0} mempool={} sigcheck={:.0}% accounts={} intents={}",
                        res.head.height,
                        txs_total,
                        window.1 as f64 / secs,
                        pool_len,
                        share * 100.0,
                        res.head.accounts,
                        intents_ok
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

    if let (Some(guard), Some(path)) = (profiler, &opts.flamegraph) {
        let report = guard.report().build().context("building the profile")?;
        let f = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
        report.flamegraph(f).context("writing the flamegraph")?;
        eprintln!("flamegraph written to {}", path.display());
    }

    let head = chain.head().context("no head")?;
    let secs = began.elapsed().as_secs_f64();
    let identities = match bpk::identity_tree(&store, chain_id) {
        Ok(t) => t.len(),
        Err(bpk::BpkError::Disabled) => 0,
        Err(e) => return Err(e).context("reading the identity tree"),
    };
    let proofs_made = sim_stats.proofs.load(Ordering::Relaxed);
    let audited = int_systems::audit::audit(&store, chain_id).context("supply audit")?;
    let policies = int_systems::market::policies(&store, chain_id, None, usize::MAX)
        .context("reading the policies")?;
    let skus = market_sim::all_skus(&store, chain_id)?.len() as u64;
    Ok(Summary {
        chain_id,
        height: head.height,
        start_height: start.height,
        blocks,
        txs: txs_total,
        txs_ok,
        tps: txs_total as f64 / secs,
        state_root: hex::encode(head.state_root),
        accounts: head.accounts,
        devices: fleet.len(),
        rejected: stats.rejected.load(Ordering::Relaxed),
        sig_check_share: stats.verify_ns.load(Ordering::Relaxed) as f64 / 1e9 / secs,
        duration_s: secs,
        data_dir: opts.data_dir.display().to_string(),
        validator: hex::encode(validator.public_key().account_id()),
        device0: hex::encode(fleet.ids[0]),
        users: sim.as_ref().map_or(0, Sim::len),
        identities,
        intents,
        intents_ok,
        intents_refused: stats.intents_refused.load(Ordering::Relaxed),
        prove_ms_mean: if proofs_made == 0 {
            0.0
        } else {
            sim_stats.prove_us.load(Ordering::Relaxed) as f64 / 1e3 / proofs_made as f64
        },
        accel: acc.describe(),
        price_tag: market.price_tag,
        metered: market.metered,
        auction: market.auction,
        cpp: market.cpp,
        cluster_buys: market.cluster_buys,
        policy_buys: policies.iter().map(|p| p.record.buys).sum(),
        policies: policies.len() as u64,
        market_other_ok: market.other_ok,
        market_refused: market.refused,
        burns: market.burns,
        oracle_reports: market.oracle_reports,
        gas_bids: market.gas_bids,
        skus,
        value_conserved: audited.as_ref().map(|(_, a)| a.balanced()),
        supply: audited
            .as_ref()
            .map(|(s, _)| crate::state::supply_fields(s)),
    })
}

/// Market and token transactions of a run, by what they did.
#[derive(Default)]
struct MarketCounts {
    price_tag: u64,
    metered: u64,
    auction: u64,
    cpp: u64,
    cluster_buys: u64,
    other_ok: u64,
    refused: u64,
    burns: u64,
    oracle_reports: u64,
    gas_bids: u64,
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
