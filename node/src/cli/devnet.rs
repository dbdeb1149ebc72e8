//! `int devnet`: one validator producing blocks, with simulated devices that
//! register and then send signed transfers at full speed, all in one
//! process over an embedded LMDB.
//!
//! The node itself (ingress, RPC, MQTT, the block loop) is [`node`], the
//! core `int run` serves too; the devnet adds its keys (from
//! `DATA_DIR/devnet.json`), a genesis of simulated accounts, and its
//! simulators as extra threads feeding the node's ingress: the devices
//! sign transactions (each device keeps one in flight, so nonces stay
//! right, learning from the node's block and refusal hooks what became of
//! them); the simulated BPK users ([`bpk_sim`]) register identities and
//! send anonymous intents with Groth16 proofs, relayed by the validator;
//! the simulated market ([`market_sim`]) lists, buys and reports prices.
//! Signing, proving and verification share rayon's pool over all cores.
//!
//! [`bpk_sim`]: crate::sim::bpk
//! [`market_sim`]: crate::sim::market
//! [`node`]: crate::node

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use crate::sim::fleet::{Fleet, validator_account};
use anyhow::{Context, Result, bail};
use int_engine::chain::BlockResult;
use int_engine::crypto::bls::SecretKey;
use int_engine::ingress::VerifiedTx;
use int_engine::storage::Storage;
use int_gpu::{Accelerator, ThresholdPolicy};
use int_schemas::AccountId;
use int_schemas::wire::TxStatus;
use int_systems::bpk;
use int_systems::token;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::service::node::{self, Genesis, Hooks, Node, NodeConfig};
use crate::sim::bpk::{self as bpk_sim, Sim, SimStats};
use crate::sim::market::{self as market_sim, MarketSim};

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

/// What a run did; printed at the end, as JSON with `--json`: the node's
/// summary and what the simulators did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Height, transactions, tps, state root, accounts, validator, ….
    #[serde(flatten)]
    pub node: crate::service::node::RunSummary,
    /// Simulated devices.
    pub devices: usize,
    /// Share of wall time the ingress thread spent in signature checks.
    pub sig_check_share: f64,
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

/// What the devices learn about their transactions.
enum Feedback {
    /// Sender's transaction left the pipeline: included with a status, or
    /// refused (`None`).
    Done(AccountId, Option<TxStatus>),
    /// A block was committed at this height.
    Head(u64),
}

/// Feedback messages (inclusions, refusals, new heads) waiting for the
/// device loop: about one per transaction, so room for a full mempool's
/// worth. When it is full the block loop and ingress drop the message
/// rather than wait (they never wait on the simulator); a device whose
/// feedback was dropped stays in flight until its transaction is
/// [`RESYNC_AFTER_BLOCKS`] blocks old, then re-reads its committed state.
const FEEDBACK_QUEUE: usize = 1 << 20;
const DEVICE_BATCH: usize = 512;
/// Most simulated devices: each costs a key derivation at start (about
/// 0.1 ms of a core) and a few hundred bytes, so 10 million is minutes and
/// gigabytes; a larger count in a hand-edited devnet.json is refused.
const DEVICES_MAX: usize = 10_000_000;
/// Blocks after which a device whose transaction's fate it never learned
/// starts over from its committed state.
const RESYNC_AFTER_BLOCKS: u64 = 20;

struct Device {
    nonce: u64,
    registered: bool,
    in_flight: Option<u64>,
}

fn device_loop(
    fleet: &Fleet,
    store: &dyn Storage,
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
            .snapshot()
            .and_then(|view| view.account(chain_id, &fleet.ids[i]))
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
    let stop = node::stop_on_ctrl_c()?;
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
    let genesis = || -> Result<Genesis> {
        let mut accounts = fleet.genesis_alloc();
        let (vid, mut vrec) = validator_account(&validator);
        // The validator relays the simulated users' BPK transactions and
        // pays their fees from the first block on.
        if sim.is_some() {
            vrec.gas = 1 << 40;
        }
        accounts.push((vid, vrec));
        let mut objects = match &sim {
            Some(sim) => bpk::genesis_objects(&sim.genesis(vid))?,
            None => Vec::new(),
        };
        if let Some(m) = &market_sim {
            accounts.extend(m.genesis_alloc());
            objects.extend(token::genesis_objects(&m.token_config())?);
        }
        Ok(Genesis { accounts, objects })
    };
    let mut node = Node::open(
        NodeConfig {
            data_dir: opts.data_dir.clone(),
            chain_id,
            block_ms: opts.block_ms,
            block_txs_max: opts.block_txs_max,
            duration_s: opts.duration_s,
            rpc_addr: opts.rpc_addr,
            mqtt_addr: opts.mqtt_addr,
            hot_capacity: fleet.len() * 2,
        },
        acc,
        validator.clone(),
        stop,
        genesis,
    )?;
    let view = node.store().snapshot()?;
    let sim = match (sim, bpk::load_config(&*view, chain_id)?) {
        (Some(sim), Some(cfg)) if sim.matches(&cfg.verifying_key) => Some(sim),
        (Some(_), _) => {
            tracing::warn!("this chain's genesis has other BPK keys or none; no simulated intents");
            None
        }
        (None, _) => None,
    };
    let market_sim = match market_sim {
        Some(m) if market_sim::matches(&m, &*view, chain_id)? => Some(m),
        Some(_) => {
            tracing::warn!(
                "this chain's genesis has other token oracles or none; no simulated market"
            );
            None
        }
        None => None,
    };
    // A snapshot held keeps the store from reusing the pages it sees.
    drop(view);
    let start = node.start();
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

    // The simulators, beside the node: they feed its ingress; the devices
    // learn from `feedback` what became of their transactions.
    let sim_stats = SimStats::default();
    let (fb_tx, fb_rx) = sync_channel::<Feedback>(FEEDBACK_QUEUE);
    let mut extras: Vec<node::Extra<'_>> = Vec::new();
    if let Some(sim) = &sim {
        let (validator, fleet, sim_stats) = (&validator, &fleet, &sim_stats);
        extras.push(Box::new(move |x: node::ExtraCtx<'_>| {
            let ctx = bpk_sim::Ctx {
                sim,
                store: x.store,
                chain_id: x.chain_id,
                relayer: validator,
                targets: &fleet.ids,
                interval: Duration::from_millis(opts.intent_ms),
                stats: sim_stats,
                stop: x.stop,
            };
            if let Err(err) = bpk_sim::run(&ctx, &x.ingress) {
                tracing::warn!(%err, "simulated BPK users stopped");
            }
        }));
    }
    if let Some(m) = &market_sim {
        extras.push(Box::new(move |x: node::ExtraCtx<'_>| {
            let ctx = market_sim::Ctx {
                sim: m,
                store: x.store,
                chain_id: x.chain_id,
                step: Duration::from_millis((opts.block_ms / 2).max(10)),
                stop: x.stop,
            };
            if let Err(err) = market_sim::run(&ctx, &x.ingress) {
                tracing::warn!(%err, "simulated market stopped");
            }
        }));
    }
    {
        let fleet = &fleet;
        extras.push(Box::new(move |x: node::ExtraCtx<'_>| {
            device_loop(fleet, x.store, x.chain_id, fb_rx, x.ingress, x.stop)
        }));
    }
    let fb_block = fb_tx.clone();
    let mut on_block = move |txs: &[VerifiedTx], res: &BlockResult| {
        for (tx, st) in txs.iter().zip(&res.statuses) {
            let _ = fb_block.try_send(Feedback::Done(tx.sender, Some(*st)));
        }
        let _ = fb_block.try_send(Feedback::Head(res.head.height));
    };
    let on_refused = move |sender: AccountId| {
        let _ = fb_tx.try_send(Feedback::Done(sender, None));
    };
    let began = Instant::now();
    let ran = node.run(
        extras,
        Hooks {
            on_block: Some(&mut on_block),
            on_refused: Some(&on_refused),
        },
    )?;

    if let (Some(guard), Some(path)) = (profiler, &opts.flamegraph) {
        let report = guard.report().build().context("building the profile")?;
        let f = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
        report.flamegraph(f).context("writing the flamegraph")?;
        eprintln!("flamegraph written to {}", path.display());
    }

    let view = node.store().snapshot()?;
    let store = &*view;
    let secs = began.elapsed().as_secs_f64();
    let identities = match bpk::identity_tree(store, chain_id) {
        Ok(t) => t.len(),
        Err(bpk::BpkError::Disabled) => 0,
        Err(e) => return Err(e).context("reading the identity tree"),
    };
    let proofs_made = sim_stats.proofs.load(Ordering::Relaxed);
    let audited = int_systems::audit::audit(store, chain_id).context("supply audit")?;
    let policies = int_systems::market::policies(store, chain_id, None, usize::MAX)
        .context("reading the policies")?;
    let skus = market_sim::all_skus(store, chain_id)?.len() as u64;
    let market = &ran.market;
    Ok(Summary {
        node: node.summary(&ran, secs)?,
        devices: fleet.len(),
        sig_check_share: ran.verify_s / secs,
        device0: hex::encode(fleet.ids[0]),
        users: sim.as_ref().map_or(0, Sim::len),
        identities,
        intents: ran.intents,
        intents_ok: ran.intents_ok,
        intents_refused: ran.intents_refused,
        prove_ms_mean: if proofs_made == 0 {
            0.0
        } else {
            sim_stats.prove_us.load(Ordering::Relaxed) as f64 / 1e3 / proofs_made as f64
        },
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
            .map(|(s, _)| crate::cli::state::supply_fields(s)),
    })
}
