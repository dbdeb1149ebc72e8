//! The market's stored objects: their keys and their versioned binary
//! records (big-endian integers, a version byte first). Decoding refuses
//! anything a correct node never writes (short or trailing bytes, unknown
//! versions and enum values, lists over their bounds, a region that is not
//! a geohash, paid above deposit) as [`MarketError::Corrupt`].
//!
//! | key | table | value |
//! |---|---|---|
//! | `mkt/sku/` ‖ sku (40) | state | kind, unit, model, period, price, capacity left, region, authority, allowlist, clusters, metadata hash, listed height, delisted, open window's end |
//! | `mkt/chan/` ‖ deal (80) | state | deposit, paid, last sequence, expiry, challenge blocks |
//! | `mkt/order/` ‖ deal (80) | state | units, units confirmed, unit price, timeout height |
//! | `mkt/bid/` ‖ sku (40) ‖ window end (8) ‖ bidder (32) ‖ nonce (8) | state | units, unit price, height and index of the bid |
//! | `mkt/due/` ‖ height (8) ‖ timer kind (1) ‖ deal (80) or sku (40) | state | version byte |
//! | `mkt/kinds` | state | version, number of custom kinds (u32) |
//! | `mkt/kind/` ‖ number (2) | state | version, name |
//! | `mkt/kindname/` ‖ name | state | version, number (2) |
//! | `mkt/ix/` ‖ kind (2) ‖ region (12, 0x00-padded) ‖ unit price (16) ‖ sku (40) | derived | empty |
//! | `mkt/pol/` ‖ owner (32) ‖ kind (2) | state | terms, GAS balance, budget epoch and its spending, next due height, purchases and GAS spent in all |
//! | `mkt/pdue/` ‖ height (8) ‖ owner (32) ‖ kind (2) | state | version byte |
//!
//! The longest key is a due entry of a deal, 97 bytes, under the store's
//! 128.

use int_engine::objects::StateObject;
use int_engine::storage::{OBJECT_KEY_BYTES_MAX, ObjectTable, StateView};
use int_schemas::market::{
    ALLOW_MAX, CLUSTERS_MAX, GEOHASH_CHARS_MAX, KIND_NAME_BYTES_MAX, is_geohash, total,
};
use int_schemas::wire::{Authority, Preference, PriceModel, Unit};
use int_schemas::{AccountId, DealRef, SkuListing, SkuRef, Terms};

use super::MarketError;

pub(crate) const SKU_PREFIX: &[u8] = b"mkt/sku/";
pub(crate) const CHAN_PREFIX: &[u8] = b"mkt/chan/";
pub(crate) const ORDER_PREFIX: &[u8] = b"mkt/order/";
pub(crate) const BID_PREFIX: &[u8] = b"mkt/bid/";
pub(crate) const DUE_PREFIX: &[u8] = b"mkt/due/";
pub(crate) const KINDS_KEY: &[u8] = b"mkt/kinds";
pub(crate) const KIND_PREFIX: &[u8] = b"mkt/kind/";
pub(crate) const KIND_NAME_PREFIX: &[u8] = b"mkt/kindname/";
pub(crate) const INDEX_PREFIX: &[u8] = b"mkt/ix/";
pub(crate) const POLICY_PREFIX: &[u8] = b"mkt/pol/";
pub(crate) const POLICY_DUE_PREFIX: &[u8] = b"mkt/pdue/";

const VERSION: u8 = 1;

/// Most custom kinds the registry holds (numbers 256 to 4351).
pub const KINDS_MAX: u32 = 4096;

// Every key fits the store's bound.
const _: () = assert!(DUE_PREFIX.len() + 8 + 1 + 80 <= OBJECT_KEY_BYTES_MAX);
const _: () = assert!(BID_PREFIX.len() + 40 + 8 + 32 + 8 <= OBJECT_KEY_BYTES_MAX);
const _: () = assert!(INDEX_PREFIX.len() + 2 + GEOHASH_CHARS_MAX + 16 + 40 <= OBJECT_KEY_BYTES_MAX);
const _: () = assert!(KIND_NAME_PREFIX.len() + KIND_NAME_BYTES_MAX <= OBJECT_KEY_BYTES_MAX);
const _: () = assert!(POLICY_DUE_PREFIX.len() + 8 + 34 <= OBJECT_KEY_BYTES_MAX);

pub(crate) fn corrupt(key: &str, what: impl ToString) -> MarketError {
    MarketError::Corrupt {
        key: key.to_string(),
        what: what.to_string(),
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) fn sku_key(s: &SkuRef) -> Vec<u8> {
    cat(&[SKU_PREFIX, &s.to_bytes()])
}

pub(crate) fn chan_key(d: &DealRef) -> Vec<u8> {
    cat(&[CHAN_PREFIX, &d.to_bytes()])
}

pub(crate) fn order_key(d: &DealRef) -> Vec<u8> {
    cat(&[ORDER_PREFIX, &d.to_bytes()])
}

/// The prefix of one auction window's bids.
pub(crate) fn bid_window_prefix(s: &SkuRef, window_end: u64) -> Vec<u8> {
    cat(&[BID_PREFIX, &s.to_bytes(), &window_end.to_be_bytes()])
}

/// The prefix of every bid on a SKU.
pub(crate) fn bid_sku_prefix(s: &SkuRef) -> Vec<u8> {
    cat(&[BID_PREFIX, &s.to_bytes()])
}

pub(crate) fn bid_key(s: &SkuRef, window_end: u64, bidder: &AccountId, nonce: u64) -> Vec<u8> {
    cat(&[
        &bid_window_prefix(s, window_end),
        bidder,
        &nonce.to_be_bytes(),
    ])
}

/// The window end, bidder and nonce of a bid key.
pub(crate) fn parse_bid_key(key: &[u8]) -> Result<(u64, AccountId, u64), MarketError> {
    let bad = || corrupt("mkt/bid", "bad key");
    let rest = key.strip_prefix(BID_PREFIX).ok_or_else(bad)?;
    let rest: &[u8; 40 + 8 + 32 + 8] = rest.try_into().map_err(|_| bad())?;
    let (_sku, rest) = rest.split_at(40);
    let (window_end, rest) = rest.split_at(8);
    let (bidder, nonce) = rest.split_at(32);
    // Lengths fixed by the array above.
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    Ok((
        be(window_end),
        bidder.try_into().expect("32 bytes"),
        be(nonce),
    ))
}

pub(crate) fn kind_key(n: u16) -> Vec<u8> {
    cat(&[KIND_PREFIX, &n.to_be_bytes()])
}

pub(crate) fn kind_name_key(name: &str) -> Vec<u8> {
    cat(&[KIND_NAME_PREFIX, name.as_bytes()])
}

/// The discovery index key of a SKU.
pub(crate) fn index_key(s: &SkuRef, r: &SkuRecord) -> Vec<u8> {
    let mut region = [0u8; GEOHASH_CHARS_MAX];
    region[..r.listing.region.len()].copy_from_slice(r.listing.region.as_bytes());
    cat(&[
        INDEX_PREFIX,
        &r.listing.kind.to_be_bytes(),
        &region,
        &r.listing.terms.unit_price.to_be_bytes(),
        &s.to_bytes(),
    ])
}

/// The SKU, region (0x00-padded) and price of an index key.
pub(crate) fn parse_index_key(key: &[u8]) -> Result<(SkuRef, &[u8], u128), MarketError> {
    let rest = key
        .strip_prefix(INDEX_PREFIX)
        .filter(|r| r.len() == 2 + GEOHASH_CHARS_MAX + 16 + 40)
        .ok_or_else(|| corrupt("mkt/ix", "bad key"))?;
    let (region, rest) = rest[2..].split_at(GEOHASH_CHARS_MAX);
    let (p, s) = rest.split_at(16);
    // Lengths checked above.
    let p: [u8; 16] = p.try_into().expect("16 bytes");
    let s: &[u8; 40] = s.try_into().expect("40 bytes");
    Ok((SkuRef::from_bytes(s), region, u128::from_be_bytes(p)))
}

/// The committed state object at `key`, decoded; `None` when absent.
pub(crate) fn stored<T>(
    store: &dyn StateView,
    chain_id: u32,
    key: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, MarketError>,
) -> Result<Option<T>, MarketError> {
    store
        .object(chain_id, ObjectTable::State, key)?
        .map(|b| decode(&b))
        .transpose()
}

/// What a timer does when its height comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A channel's challenge window ended: the rest of its deposit returns.
    ChannelClose(DealRef),
    /// A CPP order timed out: its unconfirmed units return.
    OrderTimeout(DealRef),
    /// An auction window closes.
    AuctionClose(SkuRef),
}

impl Timer {
    fn tag(&self) -> u8 {
        match self {
            Timer::ChannelClose(_) => 0,
            Timer::OrderTimeout(_) => 1,
            Timer::AuctionClose(_) => 2,
        }
    }

    /// The SKU whose group runs the timer.
    pub(crate) fn sku(&self) -> SkuRef {
        match self {
            Timer::ChannelClose(d) | Timer::OrderTimeout(d) => d.sku,
            Timer::AuctionClose(s) => *s,
        }
    }
}

pub(crate) fn due_key(at: u64, t: &Timer) -> Vec<u8> {
    let id: Vec<u8> = match t {
        Timer::ChannelClose(d) | Timer::OrderTimeout(d) => d.to_bytes().to_vec(),
        Timer::AuctionClose(s) => s.to_bytes().to_vec(),
    };
    cat(&[DUE_PREFIX, &at.to_be_bytes(), &[t.tag()], &id])
}

/// The height and timer of a due key.
pub(crate) fn parse_due_key(key: &[u8]) -> Result<(u64, Timer), MarketError> {
    let bad = || corrupt("mkt/due", "bad key");
    let rest = key.strip_prefix(DUE_PREFIX).ok_or_else(bad)?;
    if rest.len() < 9 {
        return Err(bad());
    }
    let mut h = [0u8; 8];
    h.copy_from_slice(&rest[..8]);
    let id = &rest[9..];
    let deal = || -> Result<DealRef, MarketError> {
        let b: &[u8; 80] = id.try_into().map_err(|_| bad())?;
        Ok(DealRef::from_bytes(b))
    };
    let t = match rest[8] {
        0 => Timer::ChannelClose(deal()?),
        1 => Timer::OrderTimeout(deal()?),
        2 => {
            let b: &[u8; 40] = id.try_into().map_err(|_| bad())?;
            Timer::AuctionClose(SkuRef::from_bytes(b))
        }
        _ => return Err(bad()),
    };
    Ok((u64::from_be_bytes(h), t))
}

/// The value of a due entry.
pub(crate) fn due_value() -> Vec<u8> {
    vec![VERSION]
}

// ---------------------------------------------------------------------------
// A reader that refuses short and trailing bytes.
// ---------------------------------------------------------------------------

/// Big-endian fields off a record, front to back.
type Reader<'a> = int_engine::bytes::FieldReader<'a, MarketError, true>;

/// A reader over `b` after checking its version byte.
fn reader<'a>(b: &'a [u8], key: &'static str) -> Result<Reader<'a>, MarketError> {
    Reader::versioned(b, key, VERSION, corrupt)
}

// ---------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------

/// A listed SKU as stored: the listing as it stands now (price, capacity
/// left and metadata as updated) and the market's state of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SkuRecord {
    /// The listing; its `capacity` is the units left (the auction's and
    /// CPP's capacity; advertised for metering).
    pub listing: SkuListing,
    pub listed_height: u64,
    pub delisted: bool,
    /// Close height of the open auction window; 0 when none is open.
    pub window_end: u64,
}

impl SkuRecord {
    pub fn encode(&self) -> Vec<u8> {
        let l = &self.listing;
        let mut v =
            Vec::with_capacity(100 + l.region.len() + 32 * l.allow.len() + 4 * l.clusters.len());
        v.push(VERSION);
        v.extend_from_slice(&l.kind.to_be_bytes());
        v.push(l.unit.0);
        v.push(l.terms.model.0);
        v.extend_from_slice(&l.terms.period_blocks.to_be_bytes());
        v.extend_from_slice(&l.terms.unit_price.to_be_bytes());
        v.extend_from_slice(&l.capacity.to_be_bytes());
        v.push(l.region.len() as u8);
        v.extend_from_slice(l.region.as_bytes());
        v.push(l.authority.0);
        v.push(l.allow.len() as u8);
        for a in &l.allow {
            v.extend_from_slice(a);
        }
        v.push(l.clusters.len() as u8);
        for c in &l.clusters {
            v.extend_from_slice(&c.to_be_bytes());
        }
        v.extend_from_slice(&l.metadata_hash);
        v.extend_from_slice(&self.listed_height.to_be_bytes());
        v.push(self.delisted as u8);
        v.extend_from_slice(&self.window_end.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, MarketError> {
        const KEY: &str = "mkt/sku";
        let mut r = reader(b, KEY)?;
        let kind = r.u16()?;
        let unit = Unit(r.u8()?);
        let model = PriceModel(r.u8()?);
        let period_blocks = r.u32()?;
        let unit_price = r.u128()?;
        let capacity = r.u64()?;
        let n = r.u8()? as usize;
        let region = std::str::from_utf8(r.take(n)?)
            .ok()
            .filter(|s| is_geohash(s, 1))
            .ok_or_else(|| corrupt(KEY, "region is not a geohash"))?
            .to_string();
        let authority = Authority(r.u8()?);
        let n = r.u8()? as usize;
        if n > ALLOW_MAX {
            return Err(corrupt(KEY, "allowlist too long"));
        }
        let allow = (0..n).map(|_| r.arr()).collect::<Result<_, _>>()?;
        let n = r.u8()? as usize;
        if n > CLUSTERS_MAX {
            return Err(corrupt(KEY, "too many clusters"));
        }
        let clusters = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let metadata_hash = r.arr()?;
        let listed_height = r.u64()?;
        let delisted = r.flag()?;
        let window_end = r.u64()?;
        r.end()?;
        if !(Unit::ENUM_MIN..=Unit::ENUM_MAX).contains(&unit.0)
            || !(PriceModel::ENUM_MIN..=PriceModel::ENUM_MAX).contains(&model.0)
            || !(Authority::ENUM_MIN..=Authority::ENUM_MAX).contains(&authority.0)
        {
            return Err(corrupt(KEY, "unknown enum value"));
        }
        Ok(Self {
            listing: SkuListing {
                kind,
                unit,
                terms: Terms {
                    model,
                    period_blocks,
                    unit_price,
                },
                capacity,
                region,
                authority,
                allow,
                clusters,
                metadata_hash,
            },
            listed_height,
            delisted,
            window_end,
        })
    }

    /// Whether the SKU appears in the discovery index: listed, with units
    /// left.
    pub fn indexed(&self) -> bool {
        !self.delisted && self.listing.capacity > 0
    }
}

/// An open metering channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelRecord {
    pub deposit: u128,
    /// Claimed by the seller so far (at most the deposit).
    pub paid: u128,
    /// Sequence of the last claimed receipt (0: none).
    pub last_sequence: u64,
    pub expiry: u64,
    pub challenge_blocks: u32,
}

impl ChannelRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 16 + 16 + 8 + 8 + 4);
        v.push(VERSION);
        v.extend_from_slice(&self.deposit.to_be_bytes());
        v.extend_from_slice(&self.paid.to_be_bytes());
        v.extend_from_slice(&self.last_sequence.to_be_bytes());
        v.extend_from_slice(&self.expiry.to_be_bytes());
        v.extend_from_slice(&self.challenge_blocks.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, MarketError> {
        const KEY: &str = "mkt/chan";
        let mut r = reader(b, KEY)?;
        let c = Self {
            deposit: r.u128()?,
            paid: r.u128()?,
            last_sequence: r.u64()?,
            expiry: r.u64()?,
            challenge_blocks: r.u32()?,
        };
        r.end()?;
        if c.paid > c.deposit {
            return Err(corrupt(KEY, "paid above the deposit"));
        }
        Ok(c)
    }

    /// Last height a claim is accepted at; the channel closes the block
    /// after.
    pub fn claim_until(&self) -> u64 {
        self.expiry.saturating_add(self.challenge_blocks as u64)
    }

    /// GAS still held.
    pub fn held(&self) -> u128 {
        self.deposit - self.paid
    }
}

/// An open CPP order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderRecord {
    pub qty: u64,
    /// Units released to the seller so far (below `qty` while stored).
    pub confirmed: u64,
    pub unit_price: u128,
    /// Height at which the unconfirmed rest returns to the buyer.
    pub timeout: u64,
}

impl OrderRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 8 + 8 + 16 + 8);
        v.push(VERSION);
        v.extend_from_slice(&self.qty.to_be_bytes());
        v.extend_from_slice(&self.confirmed.to_be_bytes());
        v.extend_from_slice(&self.unit_price.to_be_bytes());
        v.extend_from_slice(&self.timeout.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, MarketError> {
        const KEY: &str = "mkt/order";
        let mut r = reader(b, KEY)?;
        let o = Self {
            qty: r.u64()?,
            confirmed: r.u64()?,
            unit_price: r.u128()?,
            timeout: r.u64()?,
        };
        r.end()?;
        if o.confirmed >= o.qty || total(o.qty, o.unit_price).is_none() {
            return Err(corrupt(KEY, "confirmed or amounts out of range"));
        }
        Ok(o)
    }

    pub fn remaining(&self) -> u64 {
        self.qty - self.confirmed
    }

    /// GAS still held: the unconfirmed units at the order's price.
    pub fn held(&self) -> u128 {
        // Fits: qty × price fits (checked at decode and at order time).
        self.remaining() as u128 * self.unit_price
    }
}

/// A bid in an auction window (the bidder and nonce are in the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BidRecord {
    pub qty: u64,
    pub unit_price: u128,
    /// Block and transaction index of the bid: the tie-break at the close
    /// (earlier wins).
    pub height: u64,
    pub index: u32,
}

impl BidRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 8 + 16 + 8 + 4);
        v.push(VERSION);
        v.extend_from_slice(&self.qty.to_be_bytes());
        v.extend_from_slice(&self.unit_price.to_be_bytes());
        v.extend_from_slice(&self.height.to_be_bytes());
        v.extend_from_slice(&self.index.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, MarketError> {
        const KEY: &str = "mkt/bid";
        let mut r = reader(b, KEY)?;
        let x = Self {
            qty: r.u64()?,
            unit_price: r.u128()?,
            height: r.u64()?,
            index: r.u32()?,
        };
        r.end()?;
        if total(x.qty, x.unit_price).is_none() {
            return Err(corrupt(KEY, "escrow overflows"));
        }
        Ok(x)
    }

    /// GAS held: `qty × unit_price`.
    pub fn held(&self) -> u128 {
        self.qty as u128 * self.unit_price
    }
}

/// A standing policy as stored (its owner and kind are in its key; see
/// [`super::PolicyView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    /// Highest price per unit it pays.
    pub max_unit_price: u128,
    /// Most GAS it spends per epoch.
    pub budget_per_epoch: u128,
    /// Its area (cheapest) or position (nearest): a geohash of 0 to 12
    /// characters (see `PolicySpec::region`).
    pub region: String,
    /// How it chooses among matching SKUs.
    pub preference: Preference,
    /// Price tag or CPP.
    pub model: PriceModel,
    /// Units per purchase, at least 1.
    pub units: u64,
    /// Blocks between purchases, at least 1.
    pub interval_blocks: u32,
    /// GAS escrowed in the policy, left for its purchases.
    pub balance: u128,
    /// The budget epoch `spent_in_epoch` counts in.
    pub epoch: u64,
    /// GAS spent in that epoch.
    pub spent_in_epoch: u128,
    /// Height of the next purchase attempt (its `mkt/pdue/` entry).
    pub next_due: u64,
    /// Purchases made since the policy was set.
    pub buys: u64,
    /// GAS those purchases spent.
    pub spent_total: u128,
}

impl PolicyRecord {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 16 * 5 + 13 + 2 + 8 * 4 + 4);
        v.push(VERSION);
        v.extend_from_slice(&self.max_unit_price.to_be_bytes());
        v.extend_from_slice(&self.budget_per_epoch.to_be_bytes());
        v.push(self.region.len() as u8);
        v.extend_from_slice(self.region.as_bytes());
        v.push(self.preference.0);
        v.push(self.model.0);
        v.extend_from_slice(&self.units.to_be_bytes());
        v.extend_from_slice(&self.interval_blocks.to_be_bytes());
        v.extend_from_slice(&self.balance.to_be_bytes());
        v.extend_from_slice(&self.epoch.to_be_bytes());
        v.extend_from_slice(&self.spent_in_epoch.to_be_bytes());
        v.extend_from_slice(&self.next_due.to_be_bytes());
        v.extend_from_slice(&self.buys.to_be_bytes());
        v.extend_from_slice(&self.spent_total.to_be_bytes());
        v
    }

    /// The record of stored bytes; [`MarketError::Corrupt`] for anything a
    /// node never writes.
    pub fn decode(b: &[u8]) -> Result<Self, MarketError> {
        const KEY: &str = "mkt/pol";
        let mut r = reader(b, KEY)?;
        let max_unit_price = r.u128()?;
        let budget_per_epoch = r.u128()?;
        let n = r.u8()? as usize;
        let region = std::str::from_utf8(r.take(n)?)
            .ok()
            .filter(|s| is_geohash(s, 0))
            .ok_or_else(|| corrupt(KEY, "region is not a geohash"))?
            .to_string();
        let p = Self {
            max_unit_price,
            budget_per_epoch,
            region,
            preference: Preference(r.u8()?),
            model: PriceModel(r.u8()?),
            units: r.u64()?,
            interval_blocks: r.u32()?,
            balance: r.u128()?,
            epoch: r.u64()?,
            spent_in_epoch: r.u128()?,
            next_due: r.u64()?,
            buys: r.u64()?,
            spent_total: r.u128()?,
        };
        r.end()?;
        if !(Preference::ENUM_MIN..=Preference::ENUM_MAX).contains(&p.preference.0)
            || !policy_model(p.model)
        {
            return Err(corrupt(KEY, "unknown enum value"));
        }
        if p.units == 0 || p.interval_blocks == 0 {
            return Err(corrupt(KEY, "zero units or interval"));
        }
        Ok(p)
    }
}

/// Whether a policy may buy through `model` (the models whose purchase
/// completes in one step: a price tag, or a CPP order).
pub(crate) fn policy_model(model: PriceModel) -> bool {
    model == PriceModel::PriceTag || model == PriceModel::Cpp
}

/// A policy's id: its owner and kind.
pub(crate) type PolicyId = (AccountId, u16);

fn policy_id_bytes(id: &PolicyId) -> [u8; 34] {
    let mut b = [0u8; 34];
    b[..32].copy_from_slice(&id.0);
    b[32..].copy_from_slice(&id.1.to_be_bytes());
    b
}

fn parse_policy_id(b: &[u8]) -> Option<PolicyId> {
    let b: &[u8; 34] = b.try_into().ok()?;
    let (owner, kind) = b.split_at(32);
    Some((
        owner.try_into().ok()?,
        u16::from_be_bytes(kind.try_into().ok()?),
    ))
}

pub(crate) fn policy_key(id: &PolicyId) -> Vec<u8> {
    cat(&[POLICY_PREFIX, &policy_id_bytes(id)])
}

/// The policy id of a `mkt/pol/` key.
pub(crate) fn parse_policy_key(key: &[u8]) -> Result<PolicyId, MarketError> {
    key.strip_prefix(POLICY_PREFIX)
        .and_then(parse_policy_id)
        .ok_or_else(|| corrupt("mkt/pol", "bad key"))
}

pub(crate) fn policy_due_key(at: u64, id: &PolicyId) -> Vec<u8> {
    cat(&[POLICY_DUE_PREFIX, &at.to_be_bytes(), &policy_id_bytes(id)])
}

/// The height and policy of a `mkt/pdue/` key.
pub(crate) fn parse_policy_due_key(key: &[u8]) -> Result<(u64, PolicyId), MarketError> {
    let bad = || corrupt("mkt/pdue", "bad key");
    let rest = key.strip_prefix(POLICY_DUE_PREFIX).ok_or_else(bad)?;
    if rest.len() != 8 + 34 {
        return Err(bad());
    }
    let (h, id) = rest.split_at(8);
    let h = u64::from_be_bytes(h.try_into().map_err(|_| bad())?);
    Ok((h, parse_policy_id(id).ok_or_else(bad)?))
}

/// The number of custom kinds registered (`mkt/kinds`).
pub(crate) fn encode_kind_count(n: u32) -> Vec<u8> {
    let mut v = vec![VERSION];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

pub(crate) fn decode_kind_count(b: &[u8]) -> Result<u32, MarketError> {
    let mut r = reader(b, "mkt/kinds")?;
    let n = r.u32()?;
    r.end()?;
    if n > KINDS_MAX {
        return Err(corrupt("mkt/kinds", "count above the bound"));
    }
    Ok(n)
}

/// A custom kind's name (`mkt/kind/` ‖ number).
pub(crate) fn encode_kind_name(name: &str) -> Vec<u8> {
    let mut v = vec![VERSION];
    v.extend_from_slice(name.as_bytes());
    v
}

pub(crate) fn decode_kind_name(b: &[u8]) -> Result<String, MarketError> {
    const KEY: &str = "mkt/kind";
    let mut r = reader(b, KEY)?;
    let rest = r.take(r.remaining())?;
    r.end()?;
    std::str::from_utf8(rest)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= KIND_NAME_BYTES_MAX)
        .map(str::to_string)
        .ok_or_else(|| corrupt(KEY, "bad name"))
}

/// A custom kind's number (`mkt/kindname/` ‖ name).
pub(crate) fn encode_kind_number(n: u16) -> Vec<u8> {
    let mut v = vec![VERSION];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

pub(crate) fn decode_kind_number(b: &[u8]) -> Result<u16, MarketError> {
    let mut r = reader(b, "mkt/kindname")?;
    let n = r.u16()?;
    r.end()?;
    Ok(n)
}

// ---------------------------------------------------------------------------
// The objects that live in the hot set as entities.
// ---------------------------------------------------------------------------

/// A bid's id: its SKU, its window's close height, the bidder, the nonce
/// of the bid; ordered as its key.
pub(crate) type BidId = (SkuRef, u64, AccountId, u64);

fn bid_id_key((s, window_end, bidder, nonce): &BidId) -> Vec<u8> {
    bid_key(s, *window_end, bidder, *nonce)
}

/// Most objects of each type the world keeps between blocks (see
/// [`StateObject::HOT_MAX`]). A SKU record is at most about 2.4 KiB (its
/// allowlist), the others under 200 bytes, so the market's hot set stays
/// under about 80 MiB.
pub const HOT_SKUS_MAX: usize = 16_384;
/// Channels and orders, each.
pub const HOT_DEALS_MAX: usize = 65_536;
/// Bids of open windows.
pub const HOT_BIDS_MAX: usize = 65_536;
/// Purchase policies.
pub const HOT_POLICIES_MAX: usize = 16_384;

/// A record type as a hot-set object: its id, its key function and its
/// bound; its own `encode`/`decode` are the stored form.
macro_rules! state_object {
    ($record:ty, $id:ty, $key:path, $hot_max:expr) => {
        impl StateObject for $record {
            type Id = $id;
            type Error = MarketError;
            const HOT_MAX: usize = $hot_max;
            fn key(id: &$id) -> Vec<u8> {
                $key(id)
            }
            fn encode(&self) -> Vec<u8> {
                <$record>::encode(self)
            }
            fn decode(b: &[u8]) -> Result<Self, MarketError> {
                <$record>::decode(b)
            }
        }
    };
}

state_object!(SkuRecord, SkuRef, sku_key, HOT_SKUS_MAX);
state_object!(ChannelRecord, DealRef, chan_key, HOT_DEALS_MAX);
state_object!(OrderRecord, DealRef, order_key, HOT_DEALS_MAX);
state_object!(BidRecord, BidId, bid_id_key, HOT_BIDS_MAX);
state_object!(PolicyRecord, PolicyId, policy_key, HOT_POLICIES_MAX);

#[cfg(test)]
mod tests {
    use super::*;

    fn sku_rec() -> SkuRecord {
        SkuRecord {
            listing: SkuListing {
                kind: 257,
                unit: Unit::Gb,
                terms: Terms {
                    model: PriceModel::Auction,
                    period_blocks: 5,
                    unit_price: 1 << 100,
                },
                capacity: 40,
                region: "wx4g0".into(),
                authority: Authority::Allowlist,
                allow: vec![[1; 32], [2; 32]],
                clusters: vec![3, 4, 5],
                metadata_hash: [9; 32],
            },
            listed_height: 12,
            delisted: false,
            window_end: 17,
        }
    }

    /// Every strict prefix and every one-byte extension of `enc` fails.
    fn truncations_fail<T>(enc: &[u8], decode: impl Fn(&[u8]) -> Result<T, MarketError>) {
        for n in 0..enc.len() {
            assert!(decode(&enc[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut longer = enc.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing byte accepted");
        let mut v = enc.to_vec();
        v[0] = VERSION + 1;
        assert!(decode(&v).is_err(), "unknown version accepted");
    }

    #[test]
    fn sku_round_trips_and_rejects_garbage() {
        let r = sku_rec();
        let enc = r.encode();
        assert_eq!(SkuRecord::decode(&enc).unwrap(), r);
        truncations_fail(&enc, SkuRecord::decode);
        // Unknown model, non-geohash region, bad flag.
        let mut v = enc.clone();
        v[4] = 9;
        assert!(SkuRecord::decode(&v).is_err());
        let mut v = enc.clone();
        v[1 + 2 + 1 + 1 + 4 + 16 + 8 + 1] = b'a';
        assert!(SkuRecord::decode(&v).is_err());
        let mut v = enc.clone();
        let flag_at = v.len() - 9;
        v[flag_at] = 2;
        assert!(SkuRecord::decode(&v).is_err());
        // Lists above their bounds, with every entry present (a count alone
        // would fail as too short, whether or not the bound is checked).
        let mut at_bound = sku_rec();
        at_bound.listing.allow = vec![[1; 32]; ALLOW_MAX];
        at_bound.listing.clusters = vec![3; CLUSTERS_MAX];
        assert_eq!(SkuRecord::decode(&at_bound.encode()).unwrap(), at_bound);
        let mut long_allow = sku_rec();
        long_allow.listing.allow = vec![[1; 32]; ALLOW_MAX + 1];
        assert!(matches!(
            SkuRecord::decode(&long_allow.encode()),
            Err(MarketError::Corrupt { what, .. }) if what == "allowlist too long"
        ));
        let mut many_clusters = sku_rec();
        many_clusters.listing.clusters = vec![3; CLUSTERS_MAX + 1];
        assert!(matches!(
            SkuRecord::decode(&many_clusters.encode()),
            Err(MarketError::Corrupt { what, .. }) if what == "too many clusters"
        ));
    }

    #[test]
    fn deals_and_bids_round_trip_and_reject_garbage() {
        let c = ChannelRecord {
            deposit: 100,
            paid: 40,
            last_sequence: 3,
            expiry: 50,
            challenge_blocks: 4,
        };
        assert_eq!(ChannelRecord::decode(&c.encode()).unwrap(), c);
        truncations_fail(&c.encode(), ChannelRecord::decode);
        let over = ChannelRecord { paid: 101, ..c };
        assert!(ChannelRecord::decode(&over.encode()).is_err());
        assert_eq!((c.held(), c.claim_until()), (60, 54));

        let o = OrderRecord {
            qty: 5,
            confirmed: 2,
            unit_price: 7,
            timeout: 30,
        };
        assert_eq!(OrderRecord::decode(&o.encode()).unwrap(), o);
        truncations_fail(&o.encode(), OrderRecord::decode);
        let done = OrderRecord { confirmed: 5, ..o };
        assert!(OrderRecord::decode(&done.encode()).is_err());
        assert_eq!(o.held(), 21);

        let b = BidRecord {
            qty: 3,
            unit_price: 11,
            height: 9,
            index: 2,
        };
        assert_eq!(BidRecord::decode(&b.encode()).unwrap(), b);
        truncations_fail(&b.encode(), BidRecord::decode);
        let huge = BidRecord {
            qty: u64::MAX,
            unit_price: u128::MAX,
            ..b
        };
        assert!(BidRecord::decode(&huge.encode()).is_err());
    }

    #[test]
    fn policies_round_trip_and_reject_garbage() {
        let p = PolicyRecord {
            max_unit_price: 1 << 90,
            budget_per_epoch: 500,
            region: "wx4".into(),
            preference: Preference::Nearest,
            model: PriceModel::Cpp,
            units: 3,
            interval_blocks: 7,
            balance: 1_000,
            epoch: 2,
            spent_in_epoch: 40,
            next_due: 99,
            buys: 4,
            spent_total: 160,
        };
        assert_eq!(PolicyRecord::decode(&p.encode()).unwrap(), p);
        truncations_fail(&p.encode(), PolicyRecord::decode);
        let anywhere = PolicyRecord {
            region: String::new(),
            ..p.clone()
        };
        assert_eq!(PolicyRecord::decode(&anywhere.encode()).unwrap(), anywhere);
        for bad in [
            PolicyRecord {
                model: PriceModel::Auction,
                ..p.clone()
            },
            PolicyRecord {
                model: PriceModel::Metered,
                ..p.clone()
            },
            PolicyRecord {
                preference: Preference(9),
                ..p.clone()
            },
            PolicyRecord {
                units: 0,
                ..p.clone()
            },
            PolicyRecord {
                interval_blocks: 0,
                ..p.clone()
            },
            PolicyRecord {
                region: "wx4a".into(),
                ..p.clone()
            },
        ] {
            assert!(PolicyRecord::decode(&bad.encode()).is_err(), "{bad:?}");
        }
        let id: PolicyId = ([7; 32], 300);
        assert_eq!(parse_policy_key(&policy_key(&id)).unwrap(), id);
        assert!(parse_policy_key(&policy_key(&id)[1..]).is_err());
        let k = policy_due_key(42, &id);
        assert!(k.len() <= OBJECT_KEY_BYTES_MAX);
        assert_eq!(parse_policy_due_key(&k).unwrap(), (42, id));
        assert!(parse_policy_due_key(&k[..k.len() - 1]).is_err());
        // Due entries sort by height first.
        assert!(policy_due_key(1, &([9; 32], 9)) < policy_due_key(2, &([0; 32], 0)));
    }

    #[test]
    fn kinds_round_trip_and_reject_garbage() {
        assert_eq!(decode_kind_count(&encode_kind_count(7)).unwrap(), 7);
        truncations_fail(&encode_kind_count(7), decode_kind_count);
        assert!(decode_kind_count(&encode_kind_count(KINDS_MAX + 1)).is_err());
        assert_eq!(
            decode_kind_name(&encode_kind_name("lidar-3")).unwrap(),
            "lidar-3"
        );
        assert!(decode_kind_name(&[VERSION]).is_err());
        assert!(decode_kind_name(&[VERSION, 0xff]).is_err());
        assert_eq!(decode_kind_number(&encode_kind_number(300)).unwrap(), 300);
        truncations_fail(&encode_kind_number(300), decode_kind_number);
    }

    #[test]
    fn keys_parse_back_and_stay_in_bounds() {
        let s = SkuRef {
            seller: [4; 32],
            seq: 77,
        };
        let d = DealRef {
            sku: s,
            buyer: [5; 32],
            nonce: 3,
        };
        for t in [
            Timer::ChannelClose(d),
            Timer::OrderTimeout(d),
            Timer::AuctionClose(s),
        ] {
            let k = due_key(1234, &t);
            assert!(k.len() <= OBJECT_KEY_BYTES_MAX);
            assert_eq!(parse_due_key(&k).unwrap(), (1234, t));
            assert!(parse_due_key(&k[..k.len() - 1]).is_err());
            assert_eq!(t.sku(), s);
        }
        let mut k = due_key(1, &Timer::AuctionClose(s));
        k[DUE_PREFIX.len() + 8] = 3;
        assert!(parse_due_key(&k).is_err());
        // Due keys sort by height first.
        assert!(due_key(1, &Timer::AuctionClose(s)) < due_key(2, &Timer::ChannelClose(d)));

        let r = sku_rec();
        let ik = index_key(&s, &r);
        assert!(ik.len() <= OBJECT_KEY_BYTES_MAX);
        let mut padded = [0u8; GEOHASH_CHARS_MAX];
        padded[..5].copy_from_slice(b"wx4g0");
        assert_eq!(
            parse_index_key(&ik).unwrap(),
            (s, &padded[..], r.listing.terms.unit_price)
        );
        assert!(parse_index_key(&ik[1..]).is_err());

        let bk = bid_key(&s, 9, &[6; 32], 11);
        assert!(bk.len() <= OBJECT_KEY_BYTES_MAX);
        assert_eq!(parse_bid_key(&bk).unwrap(), (9, [6; 32], 11));
        assert!(parse_bid_key(&bk[..bk.len() - 1]).is_err());
        assert!(parse_bid_key(&bk[1..]).is_err());
        assert!(bk.starts_with(&bid_window_prefix(&s, 9)));
        assert!(bk.starts_with(&bid_sku_prefix(&s)));
    }
}
