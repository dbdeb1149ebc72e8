//! The devnet's simulated BPK users: behaviour data, clusters, keys, and a
//! thread that registers their identities and sends anonymous intents.
//!
//! Everything derives from one seed in `devnet.json`, so a restarted devnet
//! rebuilds the same users, centroids and Groth16 keys (a devnet setup
//! takes about a second; production keys need a multi-party ceremony):
//!
//! 1. a synthetic behaviour data set (Gaussian blobs, `int_zk::clusters`),
//! 2. k-means over it, quantised to the circuit's fixed point: epoch 0's
//!    centroids, fixed at genesis,
//! 3. user `i`'s behaviour is row `i`, quantised the same way; its secret is
//!    derived from the seed,
//! 4. Groth16 keys for (D, K) from the seed; the verifying key goes into
//!    the genesis, the proving key stays with the simulated users.
//!
//! The thread sends through the devnet's ingress like any client: first a
//! `RegisterIdentity` per user, then one intent at a time, proven against
//! the committed identity tree (read from storage) for the next block's
//! epoch, signed and paid for by the validator acting as relayer. Every
//! other intent, once the market lists a SKU sold to BPK clusters, is an
//! anonymous purchase of one unit of it (`ClusterBuy`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ark_bn254::Bn254;
use ark_groth16::{ProvingKey, VerifyingKey};
use int_engine::crypto::bls::{SecretKey, tx_message};
use int_engine::storage::{StateView, Storage};
use int_schemas::wire::{Authority, PriceModel};
use int_schemas::{AccountId, ClusterBuy, PayloadSpec, TxBodySpec, build_envelope, build_tx_body};
use int_systems::bpk::{self, BpkGenesis, IntentRequest};
use int_systems::market::SkuView;
use int_zk::Fr;
use int_zk::circuit::{DEFAULT_CLUSTERS, DEFAULT_DIM, identity_leaf};
use int_zk::clusters;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Blocks per epoch on the devnet (6 minutes at the default 500 ms).
pub const EPOCH_BLOCKS: u64 = 720;
/// Identity-tree roots a devnet proof may be made against.
pub const ROOT_HISTORY: u32 = 64;
/// Most simulated users (each is one identity and one proof at a time).
pub const USERS_MAX: usize = 4096;
/// Fee the relayer pays per BPK transaction.
const FEE: u128 = 1;
/// How long to wait for a relayed transaction before reading the nonce again.
const RESYNC_AFTER: Duration = Duration::from_secs(20);

/// One simulated user.
pub struct User {
    secret: Fr,
    behaviour: Vec<u16>,
}

/// The simulated users and what they share.
pub struct Sim {
    users: Vec<User>,
    centroids: Vec<Vec<u16>>,
    pk: ProvingKey<Bn254>,
    vk: VerifyingKey<Bn254>,
}

/// Counters of the simulation, for the devnet summary.
#[derive(Default)]
pub struct SimStats {
    /// Intent proofs made.
    pub proofs: AtomicU64,
    /// Total proving time, microseconds.
    pub prove_us: AtomicU64,
}

impl Sim {
    /// Derives `users` users, the centroids and the keys from `seed`.
    pub fn derive(users: usize, seed: &[u8; 32]) -> Result<Self> {
        if !(1..=USERS_MAX).contains(&users) {
            bail!("--users must be between 1 and {USERS_MAX} (0 turns intents off)");
        }
        let seed64 = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default());
        let (dims, k) = (DEFAULT_DIM, DEFAULT_CLUSTERS);
        // A data set larger than the users, so the clusters do not fit
        // exactly the users that will be proven about.
        let rows = (users * 4).max(k * 16);
        let data =
            clusters::synthetic(rows, dims, k, seed64).context("synthetic behaviour data")?;
        let trained = clusters::train(&data, k, seed64, clusters::DEFAULT_MAX_ITER)
            .context("k-means over the synthetic data")?;
        let quantiser = trained.quantiser();
        let users = data[..users]
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut h = blake3::Hasher::new();
                h.update(b"INT/devnet/bpk-user");
                h.update(seed);
                h.update(&(i as u64).to_le_bytes());
                Ok(User {
                    secret: bpk::fr_from_bytes(&reduce(h.finalize().as_bytes())),
                    behaviour: quantiser.quantise(row)?,
                })
            })
            .collect::<Result<Vec<_>, int_zk::ZkError>>()?;
        let mut rng = ChaCha20Rng::from_seed(*seed);
        let (pk, vk) = int_zk::groth::setup(dims, k, &mut rng).context("Groth16 setup")?;
        Ok(Self {
            users,
            centroids: trained.centroids().to_vec(),
            pk,
            vk,
        })
    }

    /// The genesis parameters of BPK intents on the devnet.
    pub fn genesis(&self, governance: AccountId) -> BpkGenesis {
        BpkGenesis {
            epoch_blocks: EPOCH_BLOCKS,
            root_history: ROOT_HISTORY,
            governance,
            verifying_key: self.vk.clone(),
            centroids: self.centroids.clone(),
        }
    }

    /// Whether `vk` (the chain's, from its genesis) is this simulation's.
    pub fn matches(&self, vk_bytes: &[u8]) -> bool {
        int_zk::export::verifying_key_to_bytes(&self.vk) == vk_bytes
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// 32 hash bytes as a canonical field element (top bits cleared).
fn reduce(h: &[u8; 32]) -> [u8; 32] {
    let mut x = *h;
    x[0] &= 0x1f;
    x
}

/// What the users' thread needs from the devnet.
pub struct Ctx<'a> {
    /// The simulation.
    pub sim: &'a Sim,
    /// The store (committed state: nonces, the identity tree, centroids).
    pub store: &'a dyn Storage,
    /// Chain id.
    pub chain_id: u32,
    /// The relayer (the validator's key on the devnet).
    pub relayer: &'a SecretKey,
    /// Devices intents are sent to.
    pub targets: &'a [AccountId],
    /// Pause between intents.
    pub interval: Duration,
    /// Counters.
    pub stats: &'a SimStats,
    /// Set when the devnet stops.
    pub stop: &'a AtomicBool,
}

impl Ctx<'_> {
    /// A snapshot of the committed state.
    fn view(&self) -> Result<std::sync::Arc<dyn StateView>> {
        Ok(self.store.snapshot()?)
    }

    fn nonce(&self) -> Result<u64> {
        Ok(self
            .view()?
            .account(self.chain_id, &self.relayer.public_key().account_id())?
            .map_or(0, |r| r.nonce))
    }

    fn signed(&self, nonce: u64, payload: PayloadSpec) -> (AccountId, Vec<u8>) {
        let sender = self.relayer.public_key().account_id();
        let body = build_tx_body(&TxBodySpec {
            chain_id: self.chain_id,
            sender,
            nonce,
            fee: FEE,
            payload,
        });
        let sig = self.relayer.sign(&tx_message(self.chain_id, &body));
        (sender, build_envelope(&body, &sig.to_bytes()))
    }

    /// Waits until the relayer's committed nonce passes `nonce`; false if
    /// the devnet stops or the wait times out.
    fn wait_nonce(&self, nonce: u64) -> Result<bool> {
        let began = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && began.elapsed() < RESYNC_AFTER {
            if self.nonce()? > nonce {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(false)
    }
}

/// A listed SKU sold to BPK clusters, if the market has one.
fn cluster_sku(ctx: &Ctx<'_>) -> Result<Option<SkuView>> {
    Ok(crate::sim::market::all_skus(&*ctx.view()?, ctx.chain_id)?
        .into_iter()
        .find(|v| {
            v.listing.authority == Authority::Clusters
                && v.listing.terms.model == PriceModel::PriceTag
        }))
}

/// The users' thread: registers the identities still missing, then sends
/// intents until the devnet stops.
pub fn run(ctx: &Ctx<'_>, out: &SyncSender<Vec<(AccountId, Vec<u8>)>>) -> Result<()> {
    let sim = ctx.sim;
    let mut rng = rand::thread_rng();
    // 1. Identities: user i is leaf i (the devnet's users are the only ones
    //    registering).
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let have = bpk::identity_tree(&*ctx.view()?, ctx.chain_id)?.len() as usize;
        if have >= sim.len() {
            break;
        }
        let first = ctx.nonce()?;
        let batch: Vec<(AccountId, Vec<u8>)> = sim.users[have..]
            .iter()
            .enumerate()
            .map(|(j, u)| {
                let leaf = identity_leaf(u.secret, &u.behaviour)?;
                Ok(ctx.signed(
                    first + j as u64,
                    PayloadSpec::RegisterIdentity {
                        commitment: int_zk::export::fr_to_be_bytes(&leaf),
                    },
                ))
            })
            .collect::<Result<_, int_zk::ZkError>>()?;
        let last = first + batch.len() as u64 - 1;
        if out.send(batch).is_err() {
            return Ok(());
        }
        ctx.wait_nonce(last)?;
    }
    tracing::info!(users = sim.len(), "BPK identities registered");

    // 2. Intents, one at a time.
    let cfg =
        bpk::load_config(&*ctx.view()?, ctx.chain_id)?.context("the chain has no BPK config")?;
    let mut n = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let i = (n as usize) % sim.len();
        let u = &sim.users[i];
        let view = ctx.view()?;
        let head = view.head(ctx.chain_id)?.context("the chain has no head")?;
        let epoch = cfg.epoch_of(head.height + 1);
        let centroids = bpk::centroids_at(&*view, ctx.chain_id, epoch)?
            .context("no centroids in force")?
            .rows();
        let tree = bpk::identity_tree(&*view, ctx.chain_id)?;
        // Every other intent buys a unit of a SKU sold to clusters (when
        // the market lists one), paid by the relayer; the others are
        // requests to a device, opaque to the chain.
        let sku = if n % 2 == 1 { cluster_sku(ctx)? } else { None };
        let (target, payload) = match sku {
            Some(v) => (
                v.id.seller,
                ClusterBuy {
                    sku: v.id,
                    qty: 1,
                    max_unit_price: v.listing.terms.unit_price,
                    reference: n,
                }
                .encode(),
            ),
            None => (
                ctx.targets[rng.gen_range(0..ctx.targets.len())],
                format!("want network 1 MB #{n}").into_bytes(),
            ),
        };
        let req = IntentRequest {
            chain_id: ctx.chain_id,
            secret: u.secret,
            behaviour: &u.behaviour,
            centroids: &centroids,
            path: tree.path(i as u64)?,
            epoch,
            target,
            payload: &payload,
        };
        let t = Instant::now();
        let intent = bpk::prove_intent(&sim.pk, &req, &mut ChaCha20Rng::from_rng(&mut rng)?)?;
        ctx.stats.proofs.fetch_add(1, Ordering::Relaxed);
        ctx.stats
            .prove_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        let nonce = ctx.nonce()?;
        if out
            .send(vec![
                ctx.signed(nonce, PayloadSpec::AnonIntent(Box::new(intent))),
            ])
            .is_err()
        {
            return Ok(());
        }
        ctx.wait_nonce(nonce)?;
        n += 1;
        let until = Instant::now() + ctx.interval;
        while Instant::now() < until && !ctx.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    Ok(())
}
