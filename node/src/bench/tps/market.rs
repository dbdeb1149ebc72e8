//! The market blocks of the execution + commit phase (`--workload market`
//! and `both`), on the chain the transfer blocks ran on.
//!
//! Accounts `0..4·P` are sellers, each listing one SKU (`P` per price
//! model, [`SKUS_PER_MODEL`] at most, fewer on small states); every other
//! account may buy. Every account's key is one of a pool of [`KEYS`] real
//! BLS keys (account `i` has key `i mod KEYS`), so that the buyers' receipts
//! verify against their registered keys. Before timing:
//!
//! 1. a block lists the SKUs (an auction's first window closes
//!    [`AUCTION_WINDOW`] blocks after its listing, the next ones every
//!    [`AUCTION_WINDOW`] blocks while capacity is left; capacities are too
//!    large to sell out);
//! 2. a warm-up block opens `B/6` metering channels and `B/6` CPP orders,
//!    so that the first measured block has channels to claim and orders to
//!    confirm;
//! 3. the measured blocks are built, each of `B` operations in a random
//!    order, a sixth of each: price-tag `Buy`, `PlaceBid` into the SKU's
//!    open window, CPP `Order`, `ConfirmUse` of one unit of an order of an
//!    earlier block by its buyer, `OpenChannel`, and `ClaimChannel` by the
//!    seller of a channel of an earlier block, with a receipt its buyer
//!    signed (a real BLS signature, made here; the chain verifies it);
//!    distinct channels and orders within a block. Envelopes are admitted
//!    with `ingress::assume_verified` as the transfer blocks are.
//!
//! Then the measured blocks run (their wall time is the figure; auction
//! windows close inside them), and an untimed block delists the auctions,
//! so that no market timer runs in the blocks that follow (channels and
//! orders expire far beyond any run). Every status is counted by
//! operation; the harness fails when fewer than 99% succeed.

use std::collections::BTreeMap;
use std::time::Instant;

use int_engine::chain::Chain;
use int_engine::crypto::bls::SecretKey;
use int_engine::ingress::{self, IngressConfig, VerifiedTx};
use int_schemas::wire::{Authority, PriceModel, TxStatus, Unit};
use int_schemas::{
    DealRef, PayloadSpec, SkuListing, SkuRef, Terms, TxBodySpec, build_envelope, build_tx_body,
};
use int_systems::market::{self, receipt};
use rand::rngs::StdRng;
use rand::seq::{SliceRandom, index};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{
    Accounts, CHAIN_ID, MarketOpCount, MarketReport, StageUs, TpsError, io_write_bytes, per_s,
};
use crate::sim::fleet::{DEVICE_FEE, now_ms};

/// Most SKUs listed per price model.
pub(super) const SKUS_PER_MODEL: usize = 64;
/// Real keys shared by the accounts (account `i` has key `i mod KEYS`).
pub(super) const KEYS: usize = 256;
/// Price per unit of every SKU (rate, reserve), GAS.
const PRICE: u128 = 10;
/// The buyers' bound on the price per unit.
const MAX_PRICE: u128 = 12;
/// Units of every SKU: no SKU sells out.
const CAPACITY: u64 = 1 << 60;
/// Blocks of an auction window.
pub(super) const AUCTION_WINDOW: u32 = 3;
/// Challenge window of the metered SKUs, blocks.
const CHALLENGE_BLOCKS: u32 = 2;
/// Blocks a channel stays open and a CPP order unexpired: beyond any run.
const FAR: u32 = 1 << 30;
/// Deposit of a channel: 1000 units at the rate.
const DEPOSIT: u128 = 1000 * PRICE;
/// Units of a CPP order.
const ORDER_UNITS: u64 = 4;
/// The price models, in the order of [`Market::skus`].
const MODELS: [PriceModel; 4] = [
    PriceModel::PriceTag,
    PriceModel::Metered,
    PriceModel::Auction,
    PriceModel::Cpp,
];

/// The operations of a measured block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Buy,
    PlaceBid,
    Order,
    ConfirmUse,
    OpenChannel,
    ClaimChannel,
}

const OPS: [Op; 6] = [
    Op::Buy,
    Op::PlaceBid,
    Op::Order,
    Op::ConfirmUse,
    Op::OpenChannel,
    Op::ClaimChannel,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Buy => "Buy",
            Op::PlaceBid => "PlaceBid",
            Op::Order => "Order",
            Op::ConfirmUse => "ConfirmUse",
            Op::OpenChannel => "OpenChannel",
            Op::ClaimChannel => "ClaimChannel",
        }
    }

    fn index(self) -> usize {
        OPS.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Key `i` of the pool.
pub(super) fn pool_key(i: usize) -> SecretKey {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/bench/market-key");
    h.update(&(i as u64).to_le_bytes());
    SecretKey::from_seed(h.finalize().as_bytes())
}

/// The key pool (at most `accounts` keys).
pub(super) fn key_pool(accounts: usize) -> Vec<SecretKey> {
    (0..KEYS.min(accounts).max(1))
        .into_par_iter()
        .map(pool_key)
        .collect()
}

/// SKUs per price model on a state of `accounts` accounts: sellers are at
/// most a sixteenth of the accounts.
fn skus_per_model(accounts: usize) -> usize {
    SKUS_PER_MODEL.min(accounts / 16).max(1)
}

/// Whether a state of `accounts` accounts and blocks of `size` can carry
/// the market blocks: a seller per SKU and a buyer, one of each operation.
pub(super) fn check_args(accounts: usize, size: usize) -> Result<(), TpsError> {
    let sellers = 4 * skus_per_model(accounts);
    if accounts <= sellers || size < OPS.len() {
        return Err(TpsError::BadArgs(format!(
            "the market workload needs --accounts of at least {} and --block-txs of at least {}",
            4 * skus_per_model(sellers + 1) + 1,
            OPS.len()
        )));
    }
    Ok(())
}

struct Channel {
    deal: DealRef,
    seller: usize,
    buyer: usize,
    paid: u128,
    sequence: u64,
}

struct OpenOrder {
    deal: DealRef,
    buyer: usize,
    left: u64,
}

/// What a planned transaction carries: its payload, or the receipt whose
/// buyer's signature makes a claim (signed when the envelopes are built).
enum Planned {
    Payload(PayloadSpec),
    Claim {
        channel: DealRef,
        amount: u128,
        sequence: u64,
        buyer: usize,
    },
}

struct Plan {
    sender: usize,
    nonce: u64,
    what: Planned,
}

/// The market's participants and open deals, as the built blocks leave
/// them.
struct Market {
    keys: Vec<SecretKey>,
    sellers: usize,
    /// SKUs by model ([`MODELS`] order), with their seller's index.
    skus: [Vec<(SkuRef, usize)>; 4],
    listed_height: u64,
    channels: Vec<Channel>,
    orders: Vec<OpenOrder>,
}

fn next_nonce(accts: &mut Accounts, i: usize) -> u64 {
    accts.next_nonce(i)
}

/// The deal account `buyer`'s next transaction opens on `sku`.
fn next_deal(accts: &Accounts, sku: SkuRef, buyer: usize) -> DealRef {
    DealRef {
        sku,
        buyer: accts.id(buyer),
        nonce: accts.nonce(buyer),
    }
}

impl Market {
    /// Close height of the auction window open at `height`.
    fn window_end(&self, height: u64) -> u64 {
        let w = AUCTION_WINDOW as u64;
        self.listed_height + w * ((height - self.listed_height) / w + 1)
    }

    fn pick(&self, rng: &mut StdRng, model: usize) -> (SkuRef, usize) {
        let skus = &self.skus[model];
        skus[rng.gen_range(0..skus.len())]
    }

    /// Plans a block at `height` of `counts` operations in a random order.
    fn block(
        &mut self,
        rng: &mut StdRng,
        accts: &mut Accounts,
        height: u64,
        counts: &[(Op, usize)],
    ) -> Result<(Vec<Plan>, Vec<Op>), TpsError> {
        let n = accts.len();
        let mut ops: Vec<Op> = counts
            .iter()
            .flat_map(|&(op, c)| std::iter::repeat_n(op, c))
            .collect();
        ops.shuffle(rng);
        let count = |op| ops.iter().filter(|o| **o == op).count();
        let (claims, confirms) = (count(Op::ClaimChannel), count(Op::ConfirmUse));
        if claims > self.channels.len() || confirms > self.orders.len() {
            return Err(TpsError::Failed(format!(
                "market: {claims} claims of {} open channels, {confirms} confirmations of {} open orders",
                self.channels.len(),
                self.orders.len()
            )));
        }
        let mut claim_at = index::sample(rng, self.channels.len(), claims).into_iter();
        let mut confirm_at = index::sample(rng, self.orders.len(), confirms).into_iter();
        let (mut new_channels, mut new_orders) = (Vec::new(), Vec::new());
        let mut plans = Vec::with_capacity(ops.len());
        for &op in &ops {
            let buyer = rng.gen_range(self.sellers..n);
            let (sender, what) = match op {
                Op::Buy => {
                    let (sku, _) = self.pick(rng, 0);
                    let p = PayloadSpec::Buy {
                        sku,
                        qty: rng.gen_range(1..=4),
                        max_unit_price: MAX_PRICE,
                    };
                    (buyer, Planned::Payload(p))
                }
                Op::PlaceBid => {
                    let (sku, _) = self.pick(rng, 2);
                    let p = PayloadSpec::PlaceBid {
                        sku,
                        qty: rng.gen_range(1..=4),
                        unit_price: rng.gen_range(PRICE..=2 * PRICE),
                        window_end: self.window_end(height),
                    };
                    (buyer, Planned::Payload(p))
                }
                Op::Order => {
                    let (sku, _) = self.pick(rng, 3);
                    new_orders.push(OpenOrder {
                        deal: next_deal(accts, sku, buyer),
                        buyer,
                        left: ORDER_UNITS,
                    });
                    let p = PayloadSpec::Order {
                        sku,
                        qty: ORDER_UNITS,
                        max_unit_price: MAX_PRICE,
                    };
                    (buyer, Planned::Payload(p))
                }
                Op::ConfirmUse => {
                    let o = &mut self.orders[confirm_at.next().unwrap_or(0)];
                    o.left -= 1;
                    let p = PayloadSpec::ConfirmUse {
                        order: o.deal,
                        qty: 1,
                        attestation: None,
                    };
                    (o.buyer, Planned::Payload(p))
                }
                Op::OpenChannel => {
                    let (sku, seller) = self.pick(rng, 1);
                    new_channels.push(Channel {
                        deal: next_deal(accts, sku, buyer),
                        seller,
                        buyer,
                        paid: 0,
                        sequence: 0,
                    });
                    let p = PayloadSpec::OpenChannel {
                        sku,
                        deposit: DEPOSIT,
                        expiry: self.listed_height + FAR as u64,
                    };
                    (buyer, Planned::Payload(p))
                }
                Op::ClaimChannel => {
                    let c = &mut self.channels[claim_at.next().unwrap_or(0)];
                    c.sequence += 1;
                    c.paid = (c.paid + PRICE * rng.gen_range(1..=3)).min(DEPOSIT);
                    let what = Planned::Claim {
                        channel: c.deal,
                        amount: c.paid,
                        sequence: c.sequence,
                        buyer: c.buyer,
                    };
                    (c.seller, what)
                }
            };
            let nonce = next_nonce(accts, sender);
            plans.push(Plan {
                sender,
                nonce,
                what,
            });
        }
        self.orders.retain(|o| o.left > 0);
        self.orders.extend(new_orders);
        self.channels.extend(new_channels);
        Ok((plans, ops))
    }

    /// The envelopes of `plans`, claims' receipts signed by their buyers'
    /// keys (in parallel).
    fn envelopes(
        &self,
        accts: &Accounts,
        plans: Vec<Plan>,
        sig: &[u8; 48],
    ) -> Result<Vec<VerifiedTx>, TpsError> {
        let icfg = IngressConfig {
            chain_id: CHAIN_ID,
            min_fee: DEVICE_FEE,
        };
        plans
            .into_par_iter()
            .map(|p| {
                let payload = match p.what {
                    Planned::Payload(payload) => payload,
                    Planned::Claim {
                        channel,
                        amount,
                        sequence,
                        buyer,
                    } => {
                        let key = &self.keys[buyer % self.keys.len()];
                        let r = receipt::sign_receipt(key, CHAIN_ID, &channel, amount, sequence);
                        PayloadSpec::ClaimChannel {
                            channel: r.channel,
                            amount: r.amount,
                            sequence: r.sequence,
                            buyer_signature: r.signature,
                        }
                    }
                };
                let body = build_tx_body(&TxBodySpec {
                    chain_id: CHAIN_ID,
                    sender: accts.id(p.sender),
                    nonce: p.nonce,
                    fee: DEVICE_FEE,
                    payload,
                });
                Ok(ingress::assume_verified(&icfg, build_envelope(&body, sig))?)
            })
            .collect()
    }
}

/// Runs an untimed block whose every transaction must succeed.
fn setup_block(
    chain: &mut Chain,
    validator: &SecretKey,
    txs: &[VerifiedTx],
    what: &str,
) -> Result<(), TpsError> {
    let res = chain.execute_block(txs, now_ms(), validator)?;
    if let Some(st) = res.statuses.iter().find(|s| **s != TxStatus::Ok) {
        return Err(TpsError::Failed(format!(
            "market {what}: a transaction failed with {}",
            status_name(*st)
        )));
    }
    Ok(())
}

fn status_name(st: TxStatus) -> String {
    st.variant_name()
        .map_or_else(|| format!("status {}", st.0), str::to_string)
}

/// Lists the SKUs, warms up, builds and runs `blocks` measured market
/// blocks of `size` operations, and delists the auctions (see the module
/// doc). `keys` is the pool the accounts' keys were taken from.
pub(super) fn measure(
    chain: &mut Chain,
    validator: &SecretKey,
    accts: &mut Accounts,
    keys: Vec<SecretKey>,
    blocks: usize,
    size: usize,
    sig: &[u8; 48],
) -> Result<MarketReport, TpsError> {
    let n = accts.len();
    check_args(n, size)?;
    let per_model = skus_per_model(n);
    let sellers = 4 * per_model;
    let mut rng = StdRng::seed_from_u64(13);
    let t = Instant::now();
    let mut m = Market {
        keys,
        sellers,
        skus: Default::default(),
        listed_height: 0,
        channels: Vec::new(),
        orders: Vec::new(),
    };

    // 1. The listings.
    let mut plans = Vec::with_capacity(sellers);
    for j in 0..sellers {
        let model = j % MODELS.len();
        let nonce = next_nonce(accts, j);
        m.skus[model].push((
            SkuRef {
                seller: accts.id(j),
                seq: nonce,
            },
            j,
        ));
        let period = match MODELS[model] {
            PriceModel::Metered => CHALLENGE_BLOCKS,
            PriceModel::Auction => AUCTION_WINDOW,
            PriceModel::Cpp => FAR,
            _ => 0,
        };
        let listing = SkuListing {
            kind: ((j / MODELS.len()) % 6) as u16,
            unit: Unit::Gb,
            terms: Terms {
                model: MODELS[model],
                period_blocks: period,
                unit_price: PRICE,
            },
            capacity: CAPACITY,
            region: "wx4g0s".into(),
            authority: Authority::Open,
            allow: vec![],
            clusters: vec![],
            metadata_hash: *blake3::hash(&(j as u64).to_le_bytes()).as_bytes(),
        };
        plans.push(Plan {
            sender: j,
            nonce,
            what: Planned::Payload(PayloadSpec::ListSku(Box::new(listing))),
        });
    }
    let txs = m.envelopes(accts, plans, sig)?;
    setup_block(chain, validator, &txs, "listing")?;
    let auction = m.skus[2][0].0;
    let view = market::sku(&*chain.store().snapshot()?, CHAIN_ID, &auction)?
        .ok_or_else(|| TpsError::Failed("market: a listed SKU is missing".into()))?;
    m.listed_height = view.listed_height;
    if view.window_end != m.listed_height + AUCTION_WINDOW as u64 {
        return Err(TpsError::Failed(format!(
            "market: auction window ends at {}, expected {}",
            view.window_end,
            m.listed_height + AUCTION_WINDOW as u64
        )));
    }
    let listed_s = t.elapsed();

    // 2. and 3. The warm-up block and the measured blocks, built before
    // timing (the receipts signed here).
    let t = Instant::now();
    let per = size / OPS.len();
    let warm_height = m.listed_height + 1;
    let (plans, _) = m.block(
        &mut rng,
        accts,
        warm_height,
        &[(Op::OpenChannel, per), (Op::Order, per)],
    )?;
    let warm = m.envelopes(accts, plans, sig)?;
    let counts: Vec<(Op, usize)> = OPS
        .iter()
        .map(|&op| (op, if op == Op::Buy { size - 5 * per } else { per }))
        .collect();
    let mut built = Vec::with_capacity(blocks);
    let mut receipts = 0;
    for k in 0..blocks {
        let (plans, ops) = m.block(&mut rng, accts, warm_height + 1 + k as u64, &counts)?;
        receipts += ops.iter().filter(|o| **o == Op::ClaimChannel).count();
        built.push((m.envelopes(accts, plans, sig)?, ops));
    }
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    setup_block(chain, validator, &warm, "warm-up")?;
    let setup_s = (listed_s + t.elapsed()).as_secs_f64();
    eprintln!(
        "    market: {} SKUs ({per_model} per price model), {blocks} blocks of {size} operations built in {build_s:.2} s ({receipts} receipts signed); executing ...",
        4 * per_model
    );

    // The measured blocks.
    let mut by_op = [(0u64, 0u64); OPS.len()];
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    let mut stages = StageUs::default();
    let written_before = io_write_bytes();
    let began = Instant::now();
    for (txs, ops) in &built {
        let res = chain.execute_block(txs, now_ms(), validator)?;
        stages.add(&res.timings);
        for (st, op) in res.statuses.iter().zip(ops) {
            let c = &mut by_op[op.index()];
            c.0 += 1;
            if *st == TxStatus::Ok {
                c.1 += 1;
            } else {
                *failed.entry(status_name(*st)).or_default() += 1;
            }
        }
    }
    let wall = began.elapsed();
    let written_mib_per_block = written_before
        .zip(io_write_bytes())
        .map(|(a, b)| b.saturating_sub(a) as f64 / (1024.0 * 1024.0) / blocks as f64);
    drop(built);

    // The auctions are delisted, so that no window closes after the run.
    let plans: Vec<Plan> = m.skus[2]
        .iter()
        .map(|&(sku, seller)| Plan {
            sender: seller,
            nonce: next_nonce(accts, seller),
            what: Planned::Payload(PayloadSpec::DelistSku { sku }),
        })
        .collect();
    let txs = m.envelopes(accts, plans, sig)?;
    setup_block(chain, validator, &txs, "delisting")?;

    let total: u64 = by_op.iter().map(|c| c.0).sum();
    let ok: u64 = by_op.iter().map(|c| c.1).sum();
    let first = warm_height + 1;
    let closes = (first..first + blocks as u64)
        .filter(|h| (h - m.listed_height).is_multiple_of(AUCTION_WINDOW as u64))
        .count() as u64
        * per_model as u64;
    let report = MarketReport {
        block_txs: size,
        blocks,
        total,
        ok,
        failed,
        ops: OPS
            .iter()
            .zip(by_op)
            .map(|(op, (total, ok))| MarketOpCount {
                op: op.name(),
                total,
                ok,
            })
            .collect(),
        seconds: wall.as_secs_f64(),
        stage_us: stages.with_wall(wall),
        skus_per_model: per_model,
        receipts,
        auction_closes: closes,
        setup_s,
        build_s,
        written_mib_per_block,
    };
    eprintln!(
        "    market: {:.2} s: {:.0} ops/s ({ok} of {total} ok); load {} ms, execute {} ms, root {} ms, seal {} ms, commit {} ms, other {} ms",
        report.seconds,
        per_s(ok as usize, wall),
        report.stage_us.load / 1000,
        report.stage_us.execute / 1000,
        report.stage_us.root / 1000,
        report.stage_us.seal / 1000,
        report.stage_us.commit / 1000,
        report.stage_us.other / 1000,
    );
    if ok != total {
        eprintln!(
            "    warning: {} of {total} market operations did not succeed: {:?}",
            total - ok,
            report.failed
        );
    }
    // A measurement of operations that fail would be meaningless.
    if ok.saturating_mul(100) < total.saturating_mul(99) {
        return Err(TpsError::Failed(format!(
            "only {ok} of {total} market operations succeeded: {:?}",
            report.failed
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_name_the_window_open_at_their_height() {
        let m = Market {
            keys: Vec::new(),
            sellers: 4,
            skus: Default::default(),
            listed_height: 10,
            channels: Vec::new(),
            orders: Vec::new(),
        };
        // Windows close at 13, 16, …; a close block's transactions run
        // after the close, in the next window.
        let ends: Vec<u64> = (11..=17).map(|h| m.window_end(h)).collect();
        assert_eq!(ends, [13, 13, 16, 16, 16, 19, 19]);
    }

    #[test]
    fn small_states_and_blocks_are_refused() {
        assert!(check_args(5, 6).is_ok());
        assert!(check_args(4, 6).is_err());
        assert!(check_args(1000, 5).is_err());
        assert_eq!(skus_per_model(100_000), SKUS_PER_MODEL);
        assert_eq!(skus_per_model(200), 12);
    }
}
