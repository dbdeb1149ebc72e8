//! The devnet's simulated market: sellers that list SKUs of every kind
//! under every price model, buyers that buy through all four models, and
//! oracles that report the INT price, all sending signed transactions
//! through the devnet's ingress like any client.
//!
//! The participants derive from one seed in `devnet.json` and are funded
//! and registered at genesis. One thread drives them: every step, each
//! participant whose last transaction is committed (its stored nonce moved
//! past it) sends its next one:
//!
//! - sellers list their SKUs (6 built-in kinds × 4 models, plus a custom
//!   kind seller 0 registers, and a network SKU seller 1 sells to BPK
//!   clusters only, which the BPK users buy through intents), then claim the latest metering receipt each
//!   channel's buyer handed them, confirm CPP orders with the buyer's
//!   usage attestation, and restock SKUs running low;
//! - buyers first set a standing policy (power, network or compute, by
//!   price tag or every fourth by CPP, cheapest in their area or nearest
//!   to their position), which the chain then buys through on its own;
//!   then they pick a price-tag purchase, a channel (then pay it off chain
//!   by signed cumulative receipts), a bid in an auction's open window, a
//!   CPP order (then confirm its use), a burn of INT for GAS or a
//!   GAS-auction bid;
//! - oracles report a drifting INT price once per token epoch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use anyhow::Result;
use int_engine::crypto::bls::{SecretKey, tx_message};
use int_engine::storage::{AccountRecord, StateView, Storage};
use int_schemas::market::{ChannelReceipt, DealRef, SkuListing, Terms};
use int_schemas::wire::{Authority, Preference, PriceModel, Unit};
use int_schemas::{
    AccountId, PayloadSpec, PolicySpec, SignatureBytes, TxBodySpec, build_envelope, build_tx_body,
};
use int_systems::market::{self, SkuQuery, SkuView, receipt};
use int_systems::token::{self, TokenConfig};
use int_zk::circuit::DEFAULT_CLUSTERS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const SELLERS: usize = 8;
const BUYERS: usize = 16;
const ORACLES: usize = 3;
/// Blocks per token epoch on the devnet: oracle prices and the GAS
/// auction turn over every 20 s at the default 500 ms, so a short run sees
/// both.
pub const TOKEN_EPOCH_BLOCKS: u64 = 40;
/// INT base units per fiat unit at genesis.
const GENESIS_INT_PER_FIAT: u128 = 1_000;
const FUND: u128 = 1_000_000_000_000_000;
const FEE: u128 = 1;
const RESYNC_AFTER: Duration = Duration::from_secs(20);
/// Regions the sellers sit in (geohashes around Beijing, Shanghai, Paris,
/// Berlin).
const REGIONS: [&str; 4] = ["wx4g0s", "wtw3sj", "u09tvw", "u33dc0"];
const CUSTOM_KIND: &str = "ev-charging";

/// Every SKU listed on `chain_id`, cheapest first.
pub fn all_skus(store: &dyn StateView, chain_id: u32) -> Result<Vec<SkuView>> {
    Ok(market::query(
        store,
        chain_id,
        &SkuQuery {
            limit: usize::MAX,
            ..SkuQuery::default()
        },
    )?)
}

/// The simulated market's keys.
pub struct MarketSim {
    sellers: Vec<SecretKey>,
    buyers: Vec<SecretKey>,
    oracles: Vec<SecretKey>,
}

fn derive_key(seed: &[u8; 32], role: &str, i: usize) -> SecretKey {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/devnet/market");
    h.update(seed);
    h.update(role.as_bytes());
    h.update(&(i as u64).to_le_bytes());
    SecretKey::from_seed(h.finalize().as_bytes())
}

impl MarketSim {
    /// Derives the participants from `seed`.
    pub fn derive(seed: &[u8; 32]) -> Self {
        Self {
            sellers: (0..SELLERS)
                .map(|i| derive_key(seed, "seller", i))
                .collect(),
            buyers: (0..BUYERS).map(|i| derive_key(seed, "buyer", i)).collect(),
            oracles: (0..ORACLES)
                .map(|i| derive_key(seed, "oracle", i))
                .collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &SecretKey> {
        self.sellers.iter().chain(&self.buyers).chain(&self.oracles)
    }

    /// Genesis accounts: every participant registered and funded.
    pub fn genesis_alloc(&self) -> Vec<(AccountId, AccountRecord)> {
        self.all()
            .map(|k| {
                let pk = k.public_key();
                (
                    pk.account_id(),
                    AccountRecord {
                        int: FUND,
                        gas: FUND,
                        public_key: Some(pk.to_bytes()),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// The devnet's token parameters: these oracles, a 40-block epoch.
    pub fn token_config(&self) -> TokenConfig {
        TokenConfig {
            epoch_blocks: TOKEN_EPOCH_BLOCKS,
            oracles: self
                .oracles
                .iter()
                .map(|k| k.public_key().account_id())
                .collect(),
            initial_int_per_fiat: GENESIS_INT_PER_FIAT,
            auction_lots_per_epoch: 100,
            auction_reserve_int_per_lot: 500,
        }
    }
}

/// What the thread needs from the devnet.
pub struct Ctx<'a> {
    /// The participants.
    pub sim: &'a MarketSim,
    /// The committed state.
    pub store: &'a dyn Storage,
    /// Chain id.
    pub chain_id: u32,
    /// Pause between steps.
    pub step: Duration,
    /// Set when the devnet stops.
    pub stop: &'a AtomicBool,
}

/// A participant's transaction in flight: its nonce and when it was sent.
#[derive(Default, Clone, Copy)]
struct Flight {
    nonce: Option<u64>,
    since: Option<Instant>,
}

/// A CPP order's use, attested by its buyer for the seller to present.
type Attested = (DealRef, u64, SignatureBytes);

/// A buyer's open channel: what it has paid off chain so far.
struct OpenChan {
    id: DealRef,
    deposit: u128,
    paid: u128,
    seq: u64,
    price: u128,
}

fn sign(ctx: &Ctx<'_>, k: &SecretKey, nonce: u64, payload: PayloadSpec) -> (AccountId, Vec<u8>) {
    let sender = k.public_key().account_id();
    let body = build_tx_body(&TxBodySpec {
        chain_id: ctx.chain_id,
        sender,
        nonce,
        fee: FEE,
        payload,
    });
    let sig = k.sign(&tx_message(ctx.chain_id, &body));
    (sender, build_envelope(&body, &sig.to_bytes()))
}

/// The catalogue: seller, kind, model of every SKU the sellers list.
fn catalogue() -> Vec<(usize, u16, PriceModel)> {
    let models = [
        PriceModel::PriceTag,
        PriceModel::Metered,
        PriceModel::Auction,
        PriceModel::Cpp,
    ];
    let mut c = Vec::new();
    for kind in 0..6u16 {
        for (m, model) in models.iter().enumerate() {
            c.push(((kind as usize * 4 + m) % SELLERS, kind, *model));
        }
    }
    c
}

fn listing(kind: u16, model: PriceModel, seller: usize, rng: &mut impl Rng) -> SkuListing {
    let (unit, price) = match kind {
        0 => (Unit::Kwh, 200),
        1 => (Unit::Mb, 5),
        2 => (Unit::Request, 20),
        3 => (Unit::Second, 10),
        4 => (Unit::Gb, 50),
        _ => (Unit::Request, 100),
    };
    let period = match model {
        PriceModel::Metered => 10,
        PriceModel::Auction => 6,
        PriceModel::Cpp => 30,
        _ => 0,
    };
    SkuListing {
        kind,
        unit,
        terms: Terms {
            model,
            period_blocks: period,
            unit_price: price + rng.gen_range(0..price / 2 + 1),
        },
        capacity: 10_000,
        region: REGIONS[seller % REGIONS.len()].to_string(),
        authority: Authority::Open,
        allow: Vec::new(),
        clusters: Vec::new(),
        metadata_hash: *blake3::hash(format!("sku {kind} {model:?} {seller}").as_bytes())
            .as_bytes(),
    }
}

/// The market's thread: runs until the devnet stops.
pub fn run(ctx: &Ctx<'_>, out: &SyncSender<Vec<(AccountId, Vec<u8>)>>) -> Result<()> {
    let sim = ctx.sim;
    let mut rng = ChaCha20Rng::from_entropy();
    let keys: Vec<&SecretKey> = sim.all().collect();
    let ids: Vec<AccountId> = keys.iter().map(|k| k.public_key().account_id()).collect();
    let mut flights = vec![Flight::default(); keys.len()];
    let cat = catalogue();
    // Per seller: which catalogue entries it still has to list.
    let mut to_list: Vec<Vec<(u16, PriceModel)>> = vec![Vec::new(); SELLERS];
    for (s, kind, model) in &cat {
        to_list[*s].push((*kind, *model));
    }
    let mut custom_kind_sent = false;
    // Receipts buyers handed to sellers, and orders waiting for a
    // confirmation, by seller.
    let mut receipts: BTreeMap<DealRef, ChannelReceipt> = BTreeMap::new();
    let mut to_confirm: Vec<(DealRef, u64)> = Vec::new();
    let mut attested: Vec<Attested> = Vec::new();
    let mut chans: Vec<Option<OpenChan>> = (0..BUYERS).map(|_| None).collect();
    let mut price = GENESIS_INT_PER_FIAT;
    let mut reported_epoch: Vec<Option<u64>> = vec![None; ORACLES];
    let mut policy_sent = [false; BUYERS];

    while !ctx.stop.load(Ordering::Relaxed) {
        // One snapshot per step: what the step sees is one committed state.
        let view = ctx.store.snapshot()?;
        let Some(head) = view.head(ctx.chain_id)? else {
            super::sleep_unless_stopped(ctx.stop, ctx.step);
            continue;
        };
        let height = head.height + 1;
        let skus = all_skus(&*view, ctx.chain_id)?;
        // Buyers buy in their own name: open SKUs only.
        let of_model = |m: PriceModel| -> Vec<&SkuView> {
            skus.iter()
                .filter(|s| s.listing.terms.model == m && s.listing.authority == Authority::Open)
                .collect()
        };
        let mut batch = Vec::new();
        for (p, key) in keys.iter().enumerate() {
            let committed = view.account(ctx.chain_id, &ids[p])?.map_or(0, |r| r.nonce);
            let f = &mut flights[p];
            if let (Some(n), Some(since)) = (f.nonce, f.since)
                && committed <= n
                && since.elapsed() < RESYNC_AFTER
            {
                continue;
            }
            let nonce = committed;
            let payload = if p < SELLERS {
                seller_step(
                    ctx,
                    p,
                    key,
                    &skus,
                    &mut to_list[p],
                    &mut custom_kind_sent,
                    &mut receipts,
                    &mut attested,
                    &mut rng,
                )?
            } else if p < SELLERS + BUYERS {
                let b = p - SELLERS;
                if !policy_sent[b] {
                    policy_sent[b] = true;
                    Some(standing_policy(b))
                } else {
                    buyer_step(
                        ctx,
                        key,
                        nonce,
                        height,
                        &mut chans[b],
                        &of_model,
                        &mut receipts,
                        &mut to_confirm,
                        &mut attested,
                        &mut rng,
                    )
                }
            } else {
                let o = p - SELLERS - BUYERS;
                let epoch = height / TOKEN_EPOCH_BLOCKS;
                if reported_epoch[o] == Some(epoch) {
                    None
                } else {
                    reported_epoch[o] = Some(epoch);
                    if o == 0 {
                        // A random walk of a few percent per epoch.
                        let step = price / 50 + 1;
                        price = if rng.gen_bool(0.5) {
                            price + step
                        } else {
                            price.saturating_sub(step).max(100)
                        };
                    }
                    Some(PayloadSpec::OracleReport {
                        int_per_fiat: price + rng.gen_range(0..price / 100 + 1),
                    })
                }
            };
            if let Some(payload) = payload {
                batch.push(sign(ctx, key, nonce, payload));
                *f = Flight {
                    nonce: Some(nonce),
                    since: Some(Instant::now()),
                };
            }
        }
        if !batch.is_empty() && out.send(batch).is_err() {
            return Ok(());
        }
        super::sleep_unless_stopped(ctx.stop, ctx.step);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn seller_step(
    ctx: &Ctx<'_>,
    s: usize,
    key: &SecretKey,
    skus: &[SkuView],
    to_list: &mut Vec<(u16, PriceModel)>,
    custom_kind_sent: &mut bool,
    receipts: &mut BTreeMap<DealRef, ChannelReceipt>,
    attested: &mut Vec<Attested>,
    rng: &mut impl Rng,
) -> Result<Option<PayloadSpec>> {
    let me = key.public_key().account_id();
    if s == 0 && !*custom_kind_sent {
        *custom_kind_sent = true;
        return Ok(Some(PayloadSpec::RegisterKind {
            name: CUSTOM_KIND.to_string(),
        }));
    }
    if let Some((kind, model)) = to_list.pop() {
        return Ok(Some(PayloadSpec::ListSku(Box::new(listing(
            kind, model, s, rng,
        )))));
    }
    // Seller 1 also sells network to BPK clusters only: the simulated BPK
    // users buy it anonymously, through intents.
    if s == 1
        && !skus
            .iter()
            .any(|v| v.id.seller == me && v.listing.authority == Authority::Clusters)
    {
        let mut l = listing(1, PriceModel::PriceTag, s, rng);
        l.authority = Authority::Clusters;
        l.clusters = (0..DEFAULT_CLUSTERS as u32).collect();
        return Ok(Some(PayloadSpec::ListSku(Box::new(l))));
    }
    if s == 0
        && let Some(kind) = custom_kind(ctx)?
        && !skus.iter().any(|v| v.listing.kind == kind)
    {
        return Ok(Some(PayloadSpec::ListSku(Box::new(listing(
            kind,
            PriceModel::PriceTag,
            s,
            rng,
        )))));
    }
    // Claim the latest receipt of one of my channels.
    if let Some(id) = receipts.keys().find(|d| d.sku.seller == me).copied()
        && let Some(r) = receipts.remove(&id)
    {
        return Ok(Some(PayloadSpec::ClaimChannel {
            channel: r.channel,
            amount: r.amount,
            sequence: r.sequence,
            buyer_signature: r.signature,
        }));
    }
    // Confirm an order's use with the buyer's attestation.
    if let Some(pos) = attested.iter().position(|(d, ..)| d.sku.seller == me) {
        let (order, qty, sig) = attested.swap_remove(pos);
        return Ok(Some(PayloadSpec::ConfirmUse {
            order,
            qty,
            attestation: Some(sig),
        }));
    }
    // Restock a SKU running low.
    if let Some(v) = skus
        .iter()
        .find(|v| v.id.seller == me && v.listing.capacity < 1_000)
    {
        return Ok(Some(PayloadSpec::UpdateSku {
            sku: v.id,
            unit_price: v.listing.terms.unit_price,
            capacity: 10_000,
            metadata_hash: [0; 32],
        }));
    }
    Ok(None)
}

fn custom_kind(ctx: &Ctx<'_>) -> Result<Option<u16>> {
    Ok(market::kind_by_name(
        &*ctx.store.snapshot()?,
        ctx.chain_id,
        CUSTOM_KIND,
    )?)
}

/// Buyer `b`'s standing policy: a basic service bought every few blocks.
fn standing_policy(b: usize) -> PayloadSpec {
    // Power, network, compute.
    let kind = [0u16, 1, 3][b % 3];
    let nearest = b % 2 == 1;
    let region = REGIONS[b % REGIONS.len()];
    PayloadSpec::SetPolicy(Box::new(PolicySpec {
        kind,
        // Above every listed price (at most 1.5 × 200).
        max_unit_price: 400,
        budget_per_epoch: 50_000,
        // Nearest: the buyer's position; cheapest: its city's area.
        region: if nearest { region } else { &region[..3] }.to_string(),
        preference: if nearest {
            Preference::Nearest
        } else {
            Preference::Cheapest
        },
        model: if b % 4 == 3 {
            PriceModel::Cpp
        } else {
            PriceModel::PriceTag
        },
        units: 1 + (b % 3) as u64,
        interval_blocks: 4 + (b % 5) as u32,
        deposit: 1_000_000,
    }))
}

#[allow(clippy::too_many_arguments)]
fn buyer_step<'v>(
    ctx: &Ctx<'_>,
    key: &SecretKey,
    nonce: u64,
    height: u64,
    chan: &mut Option<OpenChan>,
    of_model: &dyn Fn(PriceModel) -> Vec<&'v SkuView>,
    receipts: &mut BTreeMap<DealRef, ChannelReceipt>,
    to_confirm: &mut Vec<(DealRef, u64)>,
    attested: &mut Vec<Attested>,
    rng: &mut impl Rng,
) -> Option<PayloadSpec> {
    let me = key.public_key().account_id();
    // Pay an open channel off chain: a new cumulative receipt to the
    // seller, no transaction.
    if let Some(c) = chan.as_mut()
        && rng.gen_bool(0.5)
    {
        let units = rng.gen_range(1..=5u128);
        if c.paid + units * c.price <= c.deposit {
            c.paid += units * c.price;
            c.seq += 1;
            let r = receipt::sign_receipt(key, ctx.chain_id, &c.id, c.paid, c.seq);
            receipts.insert(c.id, r);
        } else {
            *chan = None;
        }
    }
    let pick = |v: Vec<&'v SkuView>, rng: &mut dyn rand::RngCore| -> Option<&'v SkuView> {
        if v.is_empty() {
            None
        } else {
            Some(v[rng.gen_range(0..v.len())])
        }
    };
    match rng.gen_range(0..10) {
        0..=2 => pick(of_model(PriceModel::PriceTag), rng).map(|v| PayloadSpec::Buy {
            sku: v.id,
            qty: rng.gen_range(1..=5),
            max_unit_price: v.listing.terms.unit_price,
        }),
        3 if chan.is_none() => pick(of_model(PriceModel::Metered), rng).map(|v| {
            let deposit = v.listing.terms.unit_price * 100;
            *chan = Some(OpenChan {
                id: DealRef {
                    sku: v.id,
                    buyer: me,
                    nonce,
                },
                deposit,
                paid: 0,
                seq: 0,
                price: v.listing.terms.unit_price,
            });
            PayloadSpec::OpenChannel {
                sku: v.id,
                deposit,
                expiry: height + 30,
            }
        }),
        4..=5 => pick(of_model(PriceModel::Auction), rng).map(|v| PayloadSpec::PlaceBid {
            sku: v.id,
            qty: rng.gen_range(1..=20),
            unit_price: v.listing.terms.unit_price + rng.gen_range(0..=v.listing.terms.unit_price),
            window_end: v.window_end,
        }),
        6 => pick(of_model(PriceModel::Cpp), rng).map(|v| {
            let qty = rng.gen_range(2..=6);
            to_confirm.push((
                DealRef {
                    sku: v.id,
                    buyer: me,
                    nonce,
                },
                qty,
            ));
            PayloadSpec::Order {
                sku: v.id,
                qty,
                max_unit_price: v.listing.terms.unit_price,
            }
        }),
        7 => {
            // Confirm the use of one of my orders: myself, or by handing
            // the seller a signed attestation to present.
            let pos = to_confirm.iter().position(|(d, _)| d.buyer == me)?;
            let (order, qty) = to_confirm.swap_remove(pos);
            if rng.gen_bool(0.5) {
                // The attestation covers the order's units used in total: all
                // of them, confirmed at once.
                let sig = receipt::sign_usage(key, ctx.chain_id, &order, qty);
                attested.push((order, qty, sig));
                None
            } else {
                Some(PayloadSpec::ConfirmUse {
                    order,
                    qty,
                    attestation: None,
                })
            }
        }
        8 => Some(PayloadSpec::BurnForGas {
            int_amount: rng.gen_range(1_000..1_000_000),
        }),
        _ => Some(PayloadSpec::BidGas {
            lots: rng.gen_range(1..=10),
            int_per_lot: rng.gen_range(500..2_000),
            epoch: height / TOKEN_EPOCH_BLOCKS,
        }),
    }
}

/// Whether `cfg` (the chain's, from its genesis) is this simulation's.
pub fn matches(sim: &MarketSim, store: &dyn StateView, chain_id: u32) -> Result<bool> {
    Ok(match token::load_config(store, chain_id)? {
        Some(cfg) => cfg.oracles == sim.token_config().oracles,
        None => false,
    })
}
