//! The two token tiers (whitepaper 6): burning INT for GAS at the oracle
//! price, the oracles' reports, and the epoch's GAS auction.
//!
//! INT is the transferable tier; GAS, the stable unit resources and fees
//! are settled in, is only ever minted here, from burned INT, two ways:
//!
//! * **At the oracle price** (`BurnForGas { int_amount }`): the INT the
//!   ledger's Debit stage locked is burned and the sender is credited
//!   `⌊int_amount × GAS_PER_FIAT / int_per_fiat⌋` GAS at the price in
//!   force for the block's epoch. The product is computed exactly (256-bit
//!   intermediate), so a large amount never fails for overflow unless the
//!   GAS itself would not fit `u128`.
//! * **At the auction's price** (`BidGas { lots, int_per_lot, epoch }`):
//!   each epoch sells `auction_lots_per_epoch` lots of `GAS_PER_FIAT` GAS.
//!   A bid escrows `lots × int_per_lot` INT; the first block of the next
//!   epoch clears the epoch's bids at one uniform price
//!   ([`clear_uniform`]; ties to the earlier bid), burns what the winners
//!   pay, mints and credits their GAS and refunds every bid's rest.
//!
//! The price in force for epoch `e ≥ 1` is the median of the oracles'
//! reports made during epoch `e − 1` (the lower median for an even count;
//! one report per oracle per epoch, a later one replacing the earlier);
//! without reports, `e − 1`'s price carries over. Epoch 0 uses the genesis
//! price (a store whose genesis wrote no price record has none until the
//! oracles first report). An epoch is `epoch_blocks` blocks: block `h` is in epoch
//! `h / epoch_blocks`.
//!
//! Semantics of a block (the [`TokenPlugin`]'s one system, in the engine's
//! Apply stage, after the ledger took the fees and the locks; everything in
//! block order, so a parallel and a sequential chain agree bit for bit):
//!
//! 1. In the first block of an epoch `e ≥ 1` (`height % epoch_blocks ==
//!    0`), before any transaction: the price of `e` is fixed and the
//!    reports deleted; then the bids of epoch `e − 1` are cleared, recorded
//!    ([`last_auction`]) and deleted.
//! 2. Then the token payloads, each deciding its status:
//!    * `OracleReport`: `NotOracle` unless the sender is a configured
//!      oracle; `InvalidArgument` for a price of 0.
//!    * `BurnForGas`: `InvalidArgument` for 0 INT or an amount worth less
//!      than one GAS unit; `NoOraclePrice` if the chain has no price;
//!      `Overflow` if the GAS would not fit `u128` or would take the GAS
//!      supply above `u128::MAX`. Failures get the locked INT back.
//!    * `BidGas`: `AuctionClosed` for another epoch than the block's, on a
//!      chain that auctions nothing, or when the epoch already holds
//!      [`BIDS_PER_EPOCH_MAX`] bids; `InvalidArgument` for 0 lots or a price
//!      of 0; `BelowReserve` below the reserve. Failures get the locked INT
//!      back.
//!
//!    A chain whose genesis has no token configuration answers all three
//!    `UnsupportedPayload` and refunds the lock.
//!
//! State, all in the engine's plugin state table under the prefix `tok/`
//! (the state root covers it, a block commits it atomically):
//!
//! | key | value |
//! |---|---|
//! | `tok/config` | version, epoch length, genesis price, lots per epoch, reserve, oracles |
//! | `tok/price` | version, epoch, INT per fiat unit in force |
//! | `tok/hist/` ‖ !epoch (u64 BE, inverted) | version, INT per fiat unit from that epoch on (written when it changes) |
//! | `tok/rep/` ‖ epoch (u64 BE) ‖ oracle | version, INT per fiat unit reported |
//! | `tok/round` | version, epoch, bids (the open auction's bid count) |
//! | `tok/bid/` ‖ epoch (u64 BE) ‖ height (u64 BE) ‖ tx index (u32 BE) | version, bidder, lots, INT per lot |
//! | `tok/auction/` ‖ !epoch (u64 BE, inverted) | [`AuctionResult`] of an epoch that had bids |
//!
//! Reports and bids live one epoch at most, so that state is bounded (at
//! most 64 reports, [`BIDS_PER_EPOCH_MAX`] bids); the price history and the
//! auction results grow by one small record per epoch at most.
//!
//! These records are not ECS entities: they are a few chain-wide singletons
//! (price, round) and per-epoch sets read whole once an epoch (reports,
//! bids), never looked up one by one across blocks. A block reads them from
//! its snapshot and keeps its writes in the engine's one overlay
//! ([`Overlay`]).
//!
//! Costs: a block without token payloads that does not start an epoch pays
//! nothing (the configuration is read once per chain and not copied per
//! block). A report is one write, a burn one read of the price and one of
//! the supply per block, a bid one read of the round per block and one
//! write; an epoch's first block scans the reports (≤ 64) and the bids
//! (≤ [`BIDS_PER_EPOCH_MAX`], sorted once).

use bevy_ecs::prelude::*;
use int_engine::objects::{Overlay, PluginEffects, add_effects};
use int_engine::storage::{ObjectTable, ObjectWrite, StateView, StorageError};
use int_engine::supply::{SUPPLY_KEY, Supply, SupplyDelta, escrow_add};
use int_engine::world::{
    BlockContext, Credit, DeferredPayloads, DeferredTx, Outcomes, ParentState, PayloadVerdicts,
    Plugin, Stage,
};
use int_schemas::market::{GAS_PER_FIAT, total};
use int_schemas::wire::TxStatus;
use int_schemas::{AccountId, Escrow, PayloadSpec};

use crate::auction::{Bid, clear_uniform};

/// Most oracles a chain may configure.
pub const ORACLES_MAX: usize = 64;
/// Most bids one epoch's auction holds; further bids get `AuctionClosed`.
pub const BIDS_PER_EPOCH_MAX: u32 = 65_536;

const CONFIG_KEY: &[u8] = b"tok/config";
const PRICE_KEY: &[u8] = b"tok/price";
const ROUND_KEY: &[u8] = b"tok/round";
const HIST_PREFIX: &[u8] = b"tok/hist/";
const REPORT_PREFIX: &[u8] = b"tok/rep/";
const BID_PREFIX: &[u8] = b"tok/bid/";
const AUCTION_PREFIX: &[u8] = b"tok/auction/";
const VERSION: u8 = 1;

/// Errors of the token plugin's storage and setup (payload failures are
/// receipt statuses, not errors).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored token object does not decode: the store is corrupt.
    #[error("corrupt token object {key}: {what}")]
    Corrupt {
        /// Which object.
        key: &'static str,
        /// What is wrong.
        what: String,
    },
    /// Genesis parameters that cannot work.
    #[error("invalid token genesis: {0}")]
    Genesis(String),
}

fn corrupt(key: &'static str, what: impl ToString) -> TokenError {
    TokenError::Corrupt {
        key,
        what: what.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Byte helpers.
// ---------------------------------------------------------------------------

/// Reads fixed-size little-endian fields off a record, front to back.
type Reader<'a> = int_engine::bytes::FieldReader<'a, TokenError, false>;

/// A reader over `b` after checking its version byte.
fn reader<'a>(key: &'static str, b: &'a [u8]) -> Result<Reader<'a>, TokenError> {
    Reader::versioned(b, key, VERSION, corrupt)
}

/// Calls `f` on every stored state object under `prefix`, in key order,
/// stopping at the first error `f` returns.
fn scan(
    store: &dyn StateView,
    chain_id: u32,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), TokenError>,
) -> Result<(), TokenError> {
    store.scan_prefix(chain_id, ObjectTable::State, prefix, |k, v| {
        f(k, v).map(|()| true)
    })
}

fn state_write(key: Vec<u8>, value: Option<Vec<u8>>) -> ObjectWrite {
    ObjectWrite {
        table: ObjectTable::State,
        key,
        value,
    }
}

/// `⌊a × m / d⌋` computed exactly through a 256-bit product; `None` when
/// `d` is 0 or the quotient does not fit `u128`.
fn mul_div_floor(a: u128, m: u128, d: u128) -> Option<u128> {
    if d == 0 {
        return None;
    }
    if let Some(p) = a.checked_mul(m) {
        return Some(p / d);
    }
    // 256-bit product (hi, lo) from 64-bit limbs.
    let (a1, a0) = (a >> 64, a & u64::MAX as u128);
    let (m1, m0) = (m >> 64, m & u64::MAX as u128);
    let p00 = a0 * m0;
    let p01 = a0 * m1;
    let p10 = a1 * m0;
    let p11 = a1 * m1;
    let mid = (p00 >> 64) + (p01 & u64::MAX as u128) + (p10 & u64::MAX as u128);
    let lo = (p00 & u64::MAX as u128) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    if hi >= d {
        return None; // the quotient has more than 128 bits
    }
    // Long division of (hi, lo) by d, one bit at a time; the remainder
    // stays below d, with the bit shifted out of it kept apart.
    let (mut r, mut q) = (hi, 0u128);
    for i in (0..128).rev() {
        let carry = r >> 127;
        r = (r << 1) | ((lo >> i) & 1);
        q <<= 1;
        if carry == 1 || r >= d {
            r = r.wrapping_sub(d);
            q |= 1;
        }
    }
    Some(q)
}

/// The GAS `int_amount` INT buys at `int_per_fiat` INT per fiat unit:
/// `⌊int_amount × GAS_PER_FIAT / int_per_fiat⌋`, exact; `None` when the
/// price is 0 or the GAS does not fit `u128`.
fn gas_for(int_amount: u128, int_per_fiat: u128) -> Option<u128> {
    mul_div_floor(int_amount, GAS_PER_FIAT, int_per_fiat)
}

// ---------------------------------------------------------------------------
// Configuration.
// ---------------------------------------------------------------------------

/// The chain's token parameters, fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Blocks per epoch, at least 1 (block `h` is in epoch `h / epoch_blocks`).
    pub epoch_blocks: u64,
    /// The accounts whose `OracleReport`s count: 1 to [`ORACLES_MAX`],
    /// distinct.
    pub oracles: Vec<AccountId>,
    /// INT base units per fiat unit in epoch 0; more than 0.
    pub initial_int_per_fiat: u128,
    /// Lots of `GAS_PER_FIAT` GAS each epoch's auction sells (0: no
    /// auction).
    pub auction_lots_per_epoch: u64,
    /// Lowest INT per lot a bid may offer.
    pub auction_reserve_int_per_lot: u128,
}

impl TokenConfig {
    /// The epoch a block at `height` belongs to.
    pub fn epoch_of(&self, height: u64) -> u64 {
        height / self.epoch_blocks
    }

    /// Whether the block at `height` is the first of an epoch after 0.
    fn starts_epoch(&self, height: u64) -> bool {
        height > 0 && height.is_multiple_of(self.epoch_blocks)
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.epoch_blocks == 0 {
            return Err("epoch length must be at least 1 block");
        }
        if self.oracles.is_empty() || self.oracles.len() > ORACLES_MAX {
            return Err("there must be 1 to 64 oracles");
        }
        let mut sorted = self.oracles.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err("oracles must be distinct");
        }
        if self.initial_int_per_fiat == 0 {
            return Err("the genesis price must be more than 0");
        }
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(42 + 32 * self.oracles.len());
        v.push(VERSION);
        v.extend_from_slice(&self.epoch_blocks.to_le_bytes());
        v.extend_from_slice(&self.initial_int_per_fiat.to_le_bytes());
        v.extend_from_slice(&self.auction_lots_per_epoch.to_le_bytes());
        v.extend_from_slice(&self.auction_reserve_int_per_lot.to_le_bytes());
        v.push(self.oracles.len() as u8);
        for o in &self.oracles {
            v.extend_from_slice(o);
        }
        v
    }

    fn decode(b: &[u8]) -> Result<Self, TokenError> {
        const KEY: &str = "tok/config";
        let mut r = reader(KEY, b)?;
        let epoch_blocks = r.u64()?;
        let initial_int_per_fiat = r.u128()?;
        let auction_lots_per_epoch = r.u64()?;
        let auction_reserve_int_per_lot = r.u128()?;
        let n = r.u8()? as usize;
        let oracles = (0..n).map(|_| r.arr()).collect::<Result<_, _>>()?;
        r.end()?;
        let cfg = Self {
            epoch_blocks,
            oracles,
            initial_int_per_fiat,
            auction_lots_per_epoch,
            auction_reserve_int_per_lot,
        };
        cfg.check().map_err(|e| corrupt(KEY, e))?;
        Ok(cfg)
    }
}

/// The plugin objects a genesis with tokens writes: the configuration and
/// epoch 0's price. Pass them to `Chain::genesis_with_objects`.
pub fn genesis_objects(cfg: &TokenConfig) -> Result<Vec<ObjectWrite>, TokenError> {
    cfg.check()
        .map_err(|e| TokenError::Genesis(e.to_string()))?;
    let price = Price {
        epoch: 0,
        int_per_fiat: cfg.initial_int_per_fiat,
    };
    Ok(vec![
        state_write(CONFIG_KEY.to_vec(), Some(cfg.encode())),
        state_write(PRICE_KEY.to_vec(), Some(price.encode())),
        state_write(hist_key(0), Some(encode_amount(cfg.initial_int_per_fiat))),
    ])
}

/// The chain's token configuration, or `None` if its genesis has none.
pub fn load_config(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<Option<TokenConfig>, TokenError> {
    store
        .object(chain_id, ObjectTable::State, CONFIG_KEY)?
        .map(|b| TokenConfig::decode(&b))
        .transpose()
}

// ---------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------

/// The price in force and the epoch it was fixed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Price {
    epoch: u64,
    int_per_fiat: u128,
}

impl Price {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25);
        v.push(VERSION);
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.int_per_fiat.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Self, TokenError> {
        const KEY: &str = "tok/price";
        let mut r = reader(KEY, b)?;
        let p = Self {
            epoch: r.u64()?,
            int_per_fiat: r.u128()?,
        };
        r.end()?;
        if p.int_per_fiat == 0 {
            return Err(corrupt(KEY, "price of 0"));
        }
        Ok(p)
    }
}

/// A positive amount record (reports, price history).
fn encode_amount(x: u128) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(VERSION);
    v.extend_from_slice(&x.to_le_bytes());
    v
}

fn decode_amount(key: &'static str, b: &[u8]) -> Result<u128, TokenError> {
    let mut r = reader(key, b)?;
    let x = r.u128()?;
    r.end()?;
    if x == 0 {
        return Err(corrupt(key, "amount of 0"));
    }
    Ok(x)
}

fn hist_key(epoch: u64) -> Vec<u8> {
    let mut k = HIST_PREFIX.to_vec();
    k.extend_from_slice(&(!epoch).to_be_bytes());
    k
}

fn report_key(epoch: u64, oracle: &AccountId) -> Vec<u8> {
    let mut k = REPORT_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(oracle);
    k
}

/// The open auction's counter: which epoch, how many bids (the INT they
/// escrow is the supply's `int_escrow`, not kept twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Round {
    epoch: u64,
    bids: u32,
}

impl Round {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(13);
        v.push(VERSION);
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.bids.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Self, TokenError> {
        const KEY: &str = "tok/round";
        let mut r = reader(KEY, b)?;
        let round = Self {
            epoch: r.u64()?,
            bids: r.u32()?,
        };
        r.end()?;
        if round.bids > BIDS_PER_EPOCH_MAX {
            return Err(corrupt(KEY, "more bids than an epoch holds"));
        }
        Ok(round)
    }
}

/// Where a bid sits in the auction's order of ties: the block and the
/// transaction's index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BidKey {
    epoch: u64,
    height: u64,
    index: u32,
}

impl BidKey {
    fn encode(&self) -> Vec<u8> {
        let mut k = BID_PREFIX.to_vec();
        k.extend_from_slice(&self.epoch.to_be_bytes());
        k.extend_from_slice(&self.height.to_be_bytes());
        k.extend_from_slice(&self.index.to_be_bytes());
        k
    }

    fn decode(k: &[u8]) -> Result<Self, TokenError> {
        let malformed = || corrupt("tok/bid", "malformed key");
        let rest = k.strip_prefix(BID_PREFIX).ok_or_else(malformed)?;
        let (epoch, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        let (height, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        let index: [u8; 4] = rest.try_into().map_err(|_| malformed())?;
        Ok(Self {
            epoch: u64::from_be_bytes(*epoch),
            height: u64::from_be_bytes(*height),
            index: u32::from_be_bytes(index),
        })
    }
}

/// One stored bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredBid {
    bidder: AccountId,
    lots: u64,
    int_per_lot: u128,
}

impl StoredBid {
    fn escrow(&self) -> u128 {
        // Checked at decode and when the bid was placed.
        self.int_per_lot * self.lots as u128
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(57);
        v.push(VERSION);
        v.extend_from_slice(&self.bidder);
        v.extend_from_slice(&self.lots.to_le_bytes());
        v.extend_from_slice(&self.int_per_lot.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Self, TokenError> {
        const KEY: &str = "tok/bid";
        let mut r = reader(KEY, b)?;
        let bid = Self {
            bidder: r.arr()?,
            lots: r.u64()?,
            int_per_lot: r.u128()?,
        };
        r.end()?;
        if bid.lots == 0 || bid.int_per_lot == 0 {
            return Err(corrupt(KEY, "empty bid"));
        }
        if total(bid.lots, bid.int_per_lot).is_none() {
            return Err(corrupt(KEY, "escrow overflows u128"));
        }
        Ok(bid)
    }
}

/// The outcome of one epoch's GAS auction, as recorded for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuctionResult {
    /// The epoch whose bids were cleared.
    pub epoch: u64,
    /// The INT every winner paid per lot; `None` when nothing sold.
    pub clearing_int_per_lot: Option<u128>,
    /// Lots sold (each `GAS_PER_FIAT` GAS minted).
    pub lots_sold: u64,
    /// Bids the epoch held.
    pub bids: u32,
    /// INT burned: what the winners paid.
    pub int_burned: u128,
}

impl AuctionResult {
    /// GAS minted by the auction.
    pub fn gas_minted(&self) -> u128 {
        self.lots_sold as u128 * GAS_PER_FIAT
    }

    fn key(epoch: u64) -> Vec<u8> {
        let mut k = AUCTION_PREFIX.to_vec();
        k.extend_from_slice(&(!epoch).to_be_bytes());
        k
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(61);
        v.push(VERSION);
        v.extend_from_slice(&self.epoch.to_le_bytes());
        v.extend_from_slice(&self.clearing_int_per_lot.unwrap_or(0).to_le_bytes());
        v.extend_from_slice(&self.lots_sold.to_le_bytes());
        v.extend_from_slice(&self.bids.to_le_bytes());
        v.extend_from_slice(&self.int_burned.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Self, TokenError> {
        const KEY: &str = "tok/auction";
        let mut r = reader(KEY, b)?;
        let epoch = r.u64()?;
        let price = r.u128()?;
        let a = Self {
            epoch,
            clearing_int_per_lot: (price > 0).then_some(price),
            lots_sold: r.u64()?,
            bids: r.u32()?,
            int_burned: r.u128()?,
        };
        r.end()?;
        let paid = price.checked_mul(a.lots_sold as u128);
        if paid != Some(a.int_burned) || (a.lots_sold == 0) != (price == 0) {
            return Err(corrupt(KEY, "inconsistent result"));
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------------------
// Queries.
// ---------------------------------------------------------------------------

/// The epoch of the price last fixed and that price (INT base units per
/// fiat unit); `None` on a chain without tokens.
pub fn price_in_force(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<Option<(u64, u128)>, TokenError> {
    Ok(stored_price(store, chain_id)?.map(|p| (p.epoch, p.int_per_fiat)))
}

fn stored_price(store: &dyn StateView, chain_id: u32) -> Result<Option<Price>, TokenError> {
    store
        .object(chain_id, ObjectTable::State, PRICE_KEY)?
        .map(|b| Price::decode(&b))
        .transpose()
}

/// The price that was in force in `epoch`, if that epoch has begun (its
/// price is fixed) on a chain with tokens.
pub fn price_at(
    store: &dyn StateView,
    chain_id: u32,
    epoch: u64,
) -> Result<Option<u128>, TokenError> {
    match stored_price(store, chain_id)? {
        Some(p) if epoch <= p.epoch => {}
        _ => return Ok(None),
    }
    store
        .object_at_or_after(chain_id, ObjectTable::State, HIST_PREFIX, &hist_key(epoch))?
        .map(|(_, v)| decode_amount("tok/hist", &v))
        .transpose()
}

/// The reports of the open epoch so far, by oracle (what the next epoch's
/// price will be the median of).
pub fn reports(
    store: &dyn StateView,
    chain_id: u32,
    epoch: u64,
) -> Result<Vec<(AccountId, u128)>, TokenError> {
    let mut prefix = REPORT_PREFIX.to_vec();
    prefix.extend_from_slice(&epoch.to_be_bytes());
    let mut out = Vec::new();
    scan(store, chain_id, &prefix, |k, v| {
        let oracle: AccountId = k[prefix.len()..]
            .try_into()
            .map_err(|_| corrupt("tok/rep", "malformed key"))?;
        out.push((oracle, decode_amount("tok/rep", v)?));
        Ok(())
    })?;
    Ok(out)
}

/// The INT and GAS the auction's stored bids escrow (what the supply's
/// escrow must equal, for the audit).
pub fn escrow_held(store: &dyn StateView, chain_id: u32) -> Result<Escrow, TokenError> {
    let mut int = 0u128;
    for (_, bid) in stored_bids(store, chain_id)? {
        int = int
            .checked_add(bid.escrow())
            .ok_or_else(|| corrupt("tok/bid", "escrow overflows u128"))?;
    }
    Ok(Escrow { int, gas: 0 })
}

/// The latest recorded auction (the last epoch that had bids).
pub fn last_auction(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<Option<AuctionResult>, TokenError> {
    store
        .object_at_or_after(chain_id, ObjectTable::State, AUCTION_PREFIX, AUCTION_PREFIX)?
        .map(|(_, v)| AuctionResult::decode(&v))
        .transpose()
}

/// The recorded auction of `epoch`, if it had bids and was cleared.
pub fn auction_result(
    store: &dyn StateView,
    chain_id: u32,
    epoch: u64,
) -> Result<Option<AuctionResult>, TokenError> {
    store
        .object(chain_id, ObjectTable::State, &AuctionResult::key(epoch))?
        .map(|v| AuctionResult::decode(&v))
        .transpose()
}

/// Every stored bid, in key order (epoch, height, index).
fn stored_bids(
    store: &dyn StateView,
    chain_id: u32,
) -> Result<Vec<(BidKey, StoredBid)>, TokenError> {
    let mut out = Vec::new();
    scan(store, chain_id, BID_PREFIX, |k, v| {
        out.push((BidKey::decode(k)?, StoredBid::decode(v)?));
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Execution.
// ---------------------------------------------------------------------------

/// Registers the system that executes the token payloads and the epochs'
/// price fixing and auction clearing (Apply stage).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenPlugin;

impl Plugin for TokenPlugin {
    fn build(&self, world: &mut World, schedule: &mut Schedule) {
        add_effects::<Self>(world, schedule);
        schedule.add_systems(apply_token.in_set(Stage::Apply));
    }
}

fn is_token(p: &PayloadSpec) -> bool {
    matches!(
        p,
        PayloadSpec::BurnForGas { .. }
            | PayloadSpec::OracleReport { .. }
            | PayloadSpec::BidGas { .. }
    )
}

/// The chain's configuration, read on the first block (it never changes
/// after genesis).
#[derive(Default)]
struct ConfigCache(Option<Option<TokenConfig>>);

/// What a block's token work does: its object writes over the parent
/// state, and its credits and supply change.
struct Effects<'s> {
    ov: Overlay<'s>,
    credits: Vec<Credit>,
    delta: SupplyDelta,
}

fn apply_token(
    ctx: Res<BlockContext>,
    store: Res<ParentState>,
    (deferred, outcomes, verdicts): (Res<DeferredPayloads>, Res<Outcomes>, Res<PayloadVerdicts>),
    mut out: ResMut<PluginEffects<TokenPlugin>>,
    mut cache: Local<ConfigCache>,
) {
    let out = &mut out.effects;
    if cache.0.is_none() {
        match load_config(&*store.0, ctx.chain_id) {
            Ok(c) => cache.0 = Some(c),
            Err(e) => {
                out.fail("token", e);
                return;
            }
        }
    }
    let Some(cfg) = cache.0.as_ref().and_then(Option::as_ref) else {
        // No tokens on this chain: no verdicts, so the chain answers each
        // token payload `UnsupportedPayload` and gives back its lock.
        return;
    };
    let mine: Vec<&DeferredTx> = deferred.accepted(&outcomes, is_token).collect();
    if mine.is_empty() && !cfg.starts_epoch(ctx.height) {
        return;
    }
    match execute(&*store.0, ctx.chain_id, ctx.height, cfg, &mine, &verdicts) {
        Ok(fx) => {
            out.delta = fx.delta;
            out.credits = fx.credits;
            out.writes = fx.ov.into_writes();
        }
        Err(e) => out.fail("token", e),
    }
}

/// The block's view of the supply: the committed totals, read when first
/// needed, and what the block mints so far.
struct GasRoom<'s> {
    store: &'s dyn StateView,
    chain_id: u32,
    total: Option<u128>,
}

impl GasRoom<'_> {
    /// The GAS that may still be minted this block without the supply
    /// passing `u128::MAX`.
    fn left(&mut self, minted: u128) -> Result<u128, TokenError> {
        let total = match self.total {
            Some(t) => t,
            None => {
                let b = self
                    .store
                    .object(self.chain_id, ObjectTable::State, SUPPLY_KEY)?
                    .ok_or_else(|| corrupt("ledger/supply", "missing on a chain with tokens"))?;
                let t = Supply::decode(&b)?.gas_total;
                self.total = Some(t);
                t
            }
        };
        Ok(u128::MAX - total.saturating_add(minted))
    }
}

/// The epoch work of a first block and the block's token payloads, in
/// block order.
fn execute<'s>(
    store: &'s dyn StateView,
    chain_id: u32,
    height: u64,
    cfg: &TokenConfig,
    txs: &[&DeferredTx],
    verdicts: &PayloadVerdicts,
) -> Result<Effects<'s>, TokenError> {
    let mut fx = Effects {
        ov: Overlay::new(store, chain_id),
        credits: Vec::new(),
        delta: SupplyDelta::default(),
    };
    let mut room = GasRoom {
        store,
        chain_id,
        total: None,
    };
    let epoch = cfg.epoch_of(height);
    let starts = cfg.starts_epoch(height);
    // The price, read only where a burn or the epoch's start needs it.
    let burns = txs
        .iter()
        .any(|d| matches!(d.payload, PayloadSpec::BurnForGas { .. }));
    let mut price = if starts || burns {
        stored_price(store, chain_id)?
    } else {
        None
    };
    if starts {
        price = fix_price(store, chain_id, epoch, price, &mut fx)?;
        clear_auctions(store, chain_id, cfg, epoch, &mut room, &mut fx)?;
    }
    // The open auction's bid count, read when a bid first needs it.
    let mut round: Option<Round> = None;

    for d in txs {
        let (i, sender, locked) = (d.index, d.sender, d.escrow);
        let status = match d.payload {
            PayloadSpec::OracleReport { int_per_fiat } => {
                if !cfg.oracles.contains(&sender) {
                    TxStatus::NotOracle
                } else if int_per_fiat == 0 {
                    TxStatus::InvalidArgument
                } else {
                    fx.ov.put(
                        ObjectTable::State,
                        report_key(epoch, &sender),
                        encode_amount(int_per_fiat),
                    );
                    TxStatus::Ok
                }
            }
            PayloadSpec::BurnForGas { int_amount } => {
                burn(&mut room, price, int_amount, sender, &mut fx)?
            }
            PayloadSpec::BidGas {
                lots,
                int_per_lot,
                epoch: bid_epoch,
            } => {
                if cfg.auction_lots_per_epoch == 0 || bid_epoch != epoch {
                    TxStatus::AuctionClosed
                } else if lots == 0 || int_per_lot == 0 {
                    TxStatus::InvalidArgument
                } else if int_per_lot < cfg.auction_reserve_int_per_lot {
                    TxStatus::BelowReserve
                } else {
                    let r = match round {
                        Some(r) => r,
                        None => open_round(&fx.ov, epoch)?,
                    };
                    if r.bids < BIDS_PER_EPOCH_MAX {
                        let key = BidKey {
                            epoch,
                            height,
                            index: i,
                        };
                        let bid = StoredBid {
                            bidder: sender,
                            lots,
                            int_per_lot,
                        };
                        fx.ov.put(ObjectTable::State, key.encode(), bid.encode());
                        // The locks were taken from accounts, so their sum fits.
                        fx.delta.escrowed = escrow_add(fx.delta.escrowed, locked)
                            .ok_or_else(|| corrupt("ledger/supply", "escrow overflows u128"))?;
                        round = Some(Round {
                            epoch,
                            bids: r.bids + 1,
                        });
                        TxStatus::Ok
                    } else {
                        round = Some(r);
                        TxStatus::AuctionClosed
                    }
                }
            }
            _ => unreachable!("only token payloads are passed"),
        };
        if status != TxStatus::Ok && !locked.is_none() {
            fx.credits.push(Credit {
                to: sender,
                amount: locked,
            });
        }
        verdicts.set(i, status);
    }
    if let Some(r) = round {
        fx.ov
            .put(ObjectTable::State, ROUND_KEY.to_vec(), r.encode());
    }
    Ok(fx)
}

/// The bid count of `epoch`'s auction (zero if the stored round is an
/// older epoch's, which the epoch's first block has cleared).
fn open_round(ov: &Overlay<'_>, epoch: u64) -> Result<Round, TokenError> {
    let stored = ov.get_as(ObjectTable::State, ROUND_KEY, Round::decode)?;
    Ok(match stored {
        Some(r) if r.epoch == epoch => r,
        Some(r) if r.epoch > epoch => return Err(corrupt("tok/round", "epoch in the future")),
        _ => Round {
            epoch,
            ..Round::default()
        },
    })
}

/// Decides one `BurnForGas` (the INT is locked already).
fn burn(
    room: &mut GasRoom<'_>,
    price: Option<Price>,
    int_amount: u128,
    sender: AccountId,
    fx: &mut Effects<'_>,
) -> Result<TxStatus, TokenError> {
    if int_amount == 0 {
        return Ok(TxStatus::InvalidArgument);
    }
    let Some(price) = price else {
        return Ok(TxStatus::NoOraclePrice);
    };
    let Some(gas) = gas_for(int_amount, price.int_per_fiat) else {
        return Ok(TxStatus::Overflow);
    };
    if gas == 0 {
        return Ok(TxStatus::InvalidArgument);
    }
    if gas > room.left(fx.delta.gas_minted)? {
        return Ok(TxStatus::Overflow);
    }
    fx.delta.int_burned = fx
        .delta
        .int_burned
        .checked_add(int_amount)
        .ok_or_else(|| corrupt("ledger/supply", "burns overflow u128"))?;
    fx.delta.gas_minted += gas; // below the room checked above
    fx.credits.push(Credit {
        to: sender,
        amount: Escrow { int: 0, gas },
    });
    Ok(TxStatus::Ok)
}

/// Fixes the price of `epoch` (its first block) from the reports of the
/// epoch before, deletes those reports, and returns the price:
/// `None` only on a chain that never had one (a genesis without a price
/// record) and got no reports.
fn fix_price(
    store: &dyn StateView,
    chain_id: u32,
    epoch: u64,
    before: Option<Price>,
    fx: &mut Effects<'_>,
) -> Result<Option<Price>, TokenError> {
    if before.is_some_and(|b| b.epoch >= epoch) {
        return Err(corrupt("tok/price", "fixed for a later epoch"));
    }
    // Only the epoch before has reports: every epoch's first block deletes
    // the reports it fixes the price from.
    let mut last = Vec::new();
    for (oracle, x) in reports(store, chain_id, epoch - 1)? {
        fx.ov
            .del(ObjectTable::State, report_key(epoch - 1, &oracle));
        last.push(x);
    }
    let Some(int_per_fiat) = median(&mut last).or(before.map(|b| b.int_per_fiat)) else {
        return Ok(None);
    };
    if Some(int_per_fiat) != before.map(|b| b.int_per_fiat) {
        fx.ov.put(
            ObjectTable::State,
            hist_key(epoch),
            encode_amount(int_per_fiat),
        );
    }
    let p = Price {
        epoch,
        int_per_fiat,
    };
    fx.ov
        .put(ObjectTable::State, PRICE_KEY.to_vec(), p.encode());
    Ok(Some(p))
}

/// The lower median of `xs` (sorted in place); `None` when empty.
fn median(xs: &mut [u128]) -> Option<u128> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_unstable();
    Some(xs[(xs.len() - 1) / 2])
}

/// Clears the auction of `epoch − 1` at the first block of `epoch`: burns
/// what the winners pay, mints and credits their GAS, refunds the rest of
/// every bid, records the result and deletes the bids and the round.
fn clear_auctions(
    store: &dyn StateView,
    chain_id: u32,
    cfg: &TokenConfig,
    epoch: u64,
    room: &mut GasRoom<'_>,
    fx: &mut Effects<'_>,
) -> Result<(), TokenError> {
    let bids = stored_bids(store, chain_id)?;
    if bids.is_empty() {
        return Ok(());
    }
    // Bids are only accepted for the block's epoch and every epoch's first
    // block clears them, so all stored bids are of the epoch closing, and
    // the counter kept while bidding must agree.
    let closed = epoch - 1;
    if bids.iter().any(|(k, _)| k.epoch != closed) {
        return Err(corrupt(
            "tok/bid",
            "bid for another epoch than the one closing",
        ));
    }
    let round = store
        .object(chain_id, ObjectTable::State, ROUND_KEY)?
        .map(|b| Round::decode(&b))
        .transpose()?;
    if round.is_none_or(|r| r.epoch != closed || r.bids as usize != bids.len()) {
        return Err(corrupt("tok/round", "counter disagrees with the bids"));
    }
    fx.ov.del(ObjectTable::State, ROUND_KEY.to_vec());
    // Never mint past u128::MAX: the capacity shrinks to what fits.
    let fit = room.left(fx.delta.gas_minted)? / GAS_PER_FIAT;
    let capacity = (cfg.auction_lots_per_epoch as u128).min(fit) as u64;
    let book: Vec<Bid<(u64, u32)>> = bids
        .iter()
        .map(|(k, b)| Bid {
            key: (k.height, k.index),
            qty: b.lots,
            unit_price: b.int_per_lot,
        })
        .collect();
    let c = clear_uniform(&book, capacity);
    let price = c.price.unwrap_or(0);
    let mut burned = 0u128;
    let mut escrow = 0u128;
    let overflow = || corrupt("tok/bid", "auction amounts overflow u128");
    for ((k, b), &fill) in bids.iter().zip(&c.fills) {
        let held = b.escrow();
        let paid = price * fill as u128; // at most held: price ≤ its bid
        let gas = fill as u128 * GAS_PER_FIAT;
        escrow = escrow.checked_add(held).ok_or_else(overflow)?;
        burned = burned.checked_add(paid).ok_or_else(overflow)?;
        let amount = Escrow {
            int: held - paid,
            gas,
        };
        if !amount.is_none() {
            fx.credits.push(Credit {
                to: b.bidder,
                amount,
            });
        }
        fx.ov.del(ObjectTable::State, k.encode());
    }
    let d = &mut fx.delta;
    d.released.int = d.released.int.checked_add(escrow).ok_or_else(overflow)?;
    d.int_burned = d.int_burned.checked_add(burned).ok_or_else(overflow)?;
    d.gas_minted += c.sold as u128 * GAS_PER_FIAT; // within the room computed above
    let result = AuctionResult {
        epoch: closed,
        // Set exactly when something sold.
        clearing_int_per_lot: c.price,
        lots_sold: c.sold,
        bids: bids.len() as u32,
        int_burned: burned,
    };
    fx.ov.put(
        ObjectTable::State,
        AuctionResult::key(closed),
        result.encode(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TokenConfig {
        TokenConfig {
            epoch_blocks: 5,
            oracles: vec![[1; 32], [2; 32]],
            initial_int_per_fiat: 1_000,
            auction_lots_per_epoch: 10,
            auction_reserve_int_per_lot: 3,
        }
    }

    #[test]
    fn config_round_trips_and_refuses_garbage() {
        let c = cfg();
        assert_eq!(TokenConfig::decode(&c.encode()).unwrap(), c);
        let b = c.encode();
        assert!(TokenConfig::decode(&b[..b.len() - 1]).is_err());
        assert!(TokenConfig::decode(&[b.clone(), vec![0]].concat()).is_err());
        assert!(TokenConfig::decode(&[]).is_err());
        let mut v = b.clone();
        v[0] = 9;
        assert!(TokenConfig::decode(&v).is_err());
        for bad in [
            TokenConfig {
                epoch_blocks: 0,
                ..cfg()
            },
            TokenConfig {
                oracles: vec![],
                ..cfg()
            },
            TokenConfig {
                oracles: vec![[1; 32], [1; 32]],
                ..cfg()
            },
            TokenConfig {
                oracles: (0..65u8).map(|i| [i; 32]).collect(),
                ..cfg()
            },
            TokenConfig {
                initial_int_per_fiat: 0,
                ..cfg()
            },
        ] {
            assert!(genesis_objects(&bad).is_err(), "{bad:?}");
            if bad.oracles.len() <= ORACLES_MAX {
                assert!(TokenConfig::decode(&bad.encode()).is_err(), "{bad:?}");
            }
        }
        assert_eq!(genesis_objects(&c).unwrap().len(), 3);
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let p = Price {
            epoch: 9,
            int_per_fiat: 77,
        };
        assert_eq!(Price::decode(&p.encode()).unwrap(), p);
        assert!(Price::decode(&p.encode()[..10]).is_err());
        let zero = Price {
            int_per_fiat: 0,
            ..p
        };
        assert!(Price::decode(&zero.encode()).is_err());

        assert_eq!(decode_amount("x", &encode_amount(5)).unwrap(), 5);
        assert!(decode_amount("x", &encode_amount(0)).is_err());
        assert!(decode_amount("x", &[VERSION, 1, 2]).is_err());

        let r = Round { epoch: 3, bids: 2 };
        assert_eq!(Round::decode(&r.encode()).unwrap(), r);
        let over = Round {
            bids: BIDS_PER_EPOCH_MAX + 1,
            ..r
        };
        assert!(Round::decode(&over.encode()).is_err());

        let k = BidKey {
            epoch: 4,
            height: 22,
            index: 7,
        };
        assert_eq!(BidKey::decode(&k.encode()).unwrap(), k);
        assert!(BidKey::decode(&k.encode()[1..]).is_err());
        assert!(BidKey::decode(b"tok/bid/short").is_err());
        // Keys sort by epoch, then block, then index.
        let later = BidKey { index: 8, ..k };
        assert!(k.encode() < later.encode());
        let b = StoredBid {
            bidder: [5; 32],
            lots: 3,
            int_per_lot: 11,
        };
        assert_eq!(StoredBid::decode(&b.encode()).unwrap(), b);
        assert_eq!(b.escrow(), 33);
        assert!(StoredBid::decode(&b.encode()[..50]).is_err());
        let huge = StoredBid {
            lots: 2,
            int_per_lot: u128::MAX,
            ..b
        };
        assert!(StoredBid::decode(&huge.encode()).is_err());
        let empty = StoredBid { lots: 0, ..b };
        assert!(StoredBid::decode(&empty.encode()).is_err());

        let a = AuctionResult {
            epoch: 2,
            clearing_int_per_lot: Some(5),
            lots_sold: 4,
            bids: 3,
            int_burned: 20,
        };
        assert_eq!(AuctionResult::decode(&a.encode()).unwrap(), a);
        assert_eq!(a.gas_minted(), 4 * GAS_PER_FIAT);
        let none = AuctionResult {
            clearing_int_per_lot: None,
            lots_sold: 0,
            int_burned: 0,
            ..a
        };
        assert_eq!(AuctionResult::decode(&none.encode()).unwrap(), none);
        let wrong = AuctionResult {
            int_burned: 21,
            ..a
        };
        assert!(AuctionResult::decode(&wrong.encode()).is_err());
        assert!(AuctionResult::key(3) < AuctionResult::key(2));
        assert!(hist_key(3) < hist_key(2));
    }

    #[test]
    fn mul_div_is_exact() {
        assert_eq!(mul_div_floor(7, 3, 2), Some(10));
        assert_eq!(mul_div_floor(7, 3, 0), None);
        assert_eq!(mul_div_floor(u128::MAX, 2, 2), Some(u128::MAX));
        assert_eq!(mul_div_floor(u128::MAX, 2, 1), None);
        assert_eq!(
            mul_div_floor(u128::MAX, u128::MAX, u128::MAX),
            Some(u128::MAX)
        );
        assert_eq!(
            mul_div_floor(u128::MAX, GAS_PER_FIAT, GAS_PER_FIAT + 1),
            Some(
                u128::MAX / (GAS_PER_FIAT + 1) * GAS_PER_FIAT
                    + (u128::MAX % (GAS_PER_FIAT + 1)) * GAS_PER_FIAT / (GAS_PER_FIAT + 1)
            )
        );
        // Against a split identity, a × m / d = (a / d) × m + (a % d) × m / d,
        // whose last term comes from Horner's rule over m's bits with the
        // remainder kept mod d: no wide product, and not the function under
        // test.
        fn rem_mul_div(r: u128, m: u128, d: u128) -> u128 {
            let (mut q, mut rem) = (0u128, 0u128);
            for i in (0..128 - m.leading_zeros()).rev() {
                q <<= 1;
                if rem >= d - rem {
                    rem -= d - rem;
                    q += 1;
                } else {
                    rem <<= 1;
                }
                if (m >> i) & 1 == 1 {
                    if rem >= d - r {
                        rem -= d - r;
                        q += 1;
                    } else {
                        rem += r;
                    }
                }
            }
            q
        }
        assert_eq!(rem_mul_div(5, 7, 6), 5);
        assert_eq!(rem_mul_div(u128::MAX - 1, 3, u128::MAX), 2);
        let mut x = 0x9e37_79b9_7f4a_7c15_u128;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f)
                .wrapping_add(1);
            let a = x >> (x % 128) as u32;
            let d = (x.rotate_left(37) >> (x % 100) as u32).max(1);
            let m = GAS_PER_FIAT;
            let (q, r) = (a / d, a % d);
            let expect = q
                .checked_mul(m)
                .and_then(|hi| hi.checked_add(rem_mul_div(r, m, d)));
            assert_eq!(mul_div_floor(a, m, d), expect, "{a} {m} {d}");
        }
        assert_eq!(gas_for(3, 2), Some(1_500_000));
        assert_eq!(gas_for(1, 1_000_001), Some(0));
    }

    #[test]
    fn lower_median() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [9, 1]), Some(1));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 9, 1, 5]), Some(4));
    }
}
