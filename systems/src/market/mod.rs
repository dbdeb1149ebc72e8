//! The resource market (whitepaper 2.1–2.3, 5): SKUs, discovery, the four
//! price models and standing policies, as a plugin of the block schedule.
//!
//! A device lists what it offers as a SKU (`ListSku`): a resource kind
//! (power, network, data, compute, storage, service, or a custom kind
//! registered with `RegisterKind`, numbered from 256), a unit, a price
//! model with its parameters, a capacity, a region (geohash), who may buy
//! (anyone, an allowlist, or BPK clusters) and a metadata hash. Its id is
//! (seller, nonce of the listing). Buyers find SKUs through [`query`]
//! (kind, geohash prefix, highest price; cheapest first) and pay in GAS
//! under the SKU's model:
//!
//! * **Price tag** — `Buy { qty }` pays `qty × price` to the seller at once
//!   (the rest of the buyer's `qty × max_unit_price` lock comes back);
//!   capacity decreases.
//! * **Metering** — `OpenChannel { deposit, expiry }` escrows the deposit
//!   (at least the SKU's rate). Usage is paid off chain by cumulative
//!   receipts the buyer signs ([`receipt`]); `ClaimChannel` pays the
//!   seller up to the latest: a receipt must carry a sequence above the
//!   last claimed one (a replayed or stale receipt is `StaleReceipt`) and
//!   an amount between what was paid and the deposit. Claims are accepted
//!   until `expiry + period_blocks` (the challenge window), during which a
//!   higher sequence supersedes a lower one; the block after, the rest of
//!   the deposit returns to the buyer.
//! * **Competitive bidding** — windows of `period_blocks` blocks, the
//!   first from the listing height; `PlaceBid` names the window's close
//!   height and escrows `qty × unit_price` (at least the reserve). At the
//!   close, [`crate::auction::clear_uniform`] gives the remaining capacity
//!   to the highest bids (ties: earlier block, then earlier transaction),
//!   every winner pays the lowest accepted price, and every bidder gets its
//!   escrow minus what it paid. With capacity left, the next window opens
//!   at once; a SKU sold out has none until `UpdateSku` gives it capacity.
//! * **CPP** — `Order { qty }` escrows `qty × price` for `period_blocks`
//!   blocks and takes the units from the capacity; `ConfirmUse { qty }`
//!   releases used units to the seller, sent by the buyer, or by the seller
//!   with the buyer's usage attestation over the order's **cumulative**
//!   confirmed units (`confirmed + qty`, see [`receipt`]), so an
//!   attestation cannot be replayed. At the timeout the unconfirmed rest
//!   returns to the buyer and its units to the SKU.
//!
//! `UpdateSku` (price, capacity, metadata) and `DelistSku` are the
//! seller's only (`NotSeller`). Delisting refunds the open auction window's
//! bids at once; open channels and orders settle as usual. Any purchase of
//! a missing or delisted SKU is `UnknownSku`; of a SKU whose allowlist
//! does not hold the buyer, `Unauthorized`.
//!
//! Standing policies (`SetPolicy`, `CancelPolicy`) buy by price tag or CPP
//! on their owner's behalf every few blocks, out of GAS escrowed in them
//! ([`policy`](mod@policy)).
//!
//! A SKU with `Authority::Clusters` is bought through an anonymous intent
//! (`AnonIntent` whose payload is a [`ClusterBuy`](int_schemas::ClusterBuy)
//! and whose target is the seller): once the BPK checks admit it
//! ([`crate::bpk::AdmittedIntents`]), the market buys by price tag or CPP
//! for the intent's sender if the SKU admits the proven cluster. A plain
//! purchase of such a SKU is `Unauthorized`, and policies pass it over.
//!
//! # Money
//!
//! Every amount is GAS. The ledger's Debit stage has taken each payload's
//! lock (`PayloadSpec::escrow`) from the sender before this plugin runs;
//! for every market transaction it accepted, the plugin pays the seller,
//! refunds the sender, or keeps the GAS in an escrow object
//! (`BlockSupply.escrowed`), to the unit; a failure verdict refunds the
//! whole lock. GAS leaving an escrow object (a claim, a confirmation, a
//! close, a timeout) is `released` and credited. The chain checks this
//! balance every block; [`escrow_held`] sums the escrow objects for the
//! supply audit.
//!
//! # Execution
//!
//! Two systems. The **load step** (Load stage, exclusive) scans the timers
//! and policies due at this height and loads into the hot set, as entities
//! with an [`Obj`](int_engine::objects::Obj) component, every SKU, channel,
//! order and policy that the block's transactions, timers and policies
//! name, reading the snapshot on every core. The **Apply-stage system**
//! (after the BPK checks of the Admit stage, beside the token system) takes
//! those entities mutably through its queries and decides the block:
//! registrations of custom kinds (a global registry) first, in block
//! order; then the policy transactions and the plan of the block's policy
//! purchases ([`policy`](mod@policy)). Everything else is grouped by SKU:
//! per SKU, first its timers due at this height (key order: earliest
//! first), then its transactions in block order, then the policy purchases
//! planned on it. A group holds the handles on its own SKU's entities (the
//! SKU, its channels, orders and bids) and nothing else, so groups run in
//! parallel (rayon, when `ExecConfig::parallel`); their writes, credits and
//! supply deltas are merged in SKU order: the result equals the sequential
//! run bit for bit. An object no entity holds (a SKU a policy chose, the
//! committed bids of a closing window) is read from the snapshot and enters
//! the hot set after the block. At most [`TIMERS_PER_BLOCK`] timers run per
//! block; later ones stay due (every handler checks heights itself, so a
//! late timer changes no verdict).
//!
//! # State
//!
//! Objects under `mkt/` ([`records`] lists the keys and layouts): SKUs,
//! channels, orders, bids and policies in the state table (covered by the
//! state root; entities of the hot set while in use, evicted like accounts
//! above the chain's `hot_capacity` or the type's own bound,
//! [`records::HOT_SKUS_MAX`] and its siblings; a deleted object leaves the
//! world with its block), timers (`mkt/due/` ‖ height
//! ‖ kind ‖ id), the kind registry, and the discovery index in the derived
//! table (`mkt/ix/` ‖ kind ‖ region ‖ price ‖ sku, only listed SKUs with
//! capacity left). Timers, the registry and the index are indexes, not
//! objects: the block writes them through its overlay
//! ([`Overlay`](int_engine::objects::Overlay)). Settled objects are
//! deleted: channels at close, orders when fully confirmed or timed out,
//! bids at their window's close, due entries when run.
//!
//! # Costs
//!
//! A block without market transactions, due timers or due policies pays
//! two B-tree seeks (`mkt/due/`, `mkt/pdue/`). A SKU's group reads and
//! decodes the SKU once (not at all while it is hot), and writes it and
//! moves its index entry once, however many of the block's transactions
//! and timers change it. The
//! block's buyer signatures (claims, sellers' confirmations) are checked
//! together before the groups: one account read each and one BLS batch for
//! the block (scalars hashed from the batch; one final exponentiation,
//! Miller loops on every core), each on its own only when the batch fails. An auction close reads
//! and deletes its window's bids (linear in their number, plus a sort). A
//! due policy reads its record, at most [`CANDIDATES_TRIED_MAX`] SKUs, and
//! the index areas it searches (each scanned once per block, at most
//! [`AREA_SCAN_MAX`] entries). A query scans the index range of its kind
//! and geohash prefix (all kinds without one), keeps the `limit` cheapest,
//! and reads those SKUs.

pub mod policy;
pub mod receipt;
pub mod records;

mod exec;
mod sigs;

use std::collections::BTreeSet;

use bevy_ecs::prelude::*;
use int_engine::objects::{add_effects, register_object};
use int_engine::storage::{ObjectTable, StateView, StorageError};
use int_engine::world::{Plugin, Stage};
use int_schemas::market::{BUILTIN_KINDS, CUSTOM_KIND_FIRST, KIND_NAME_BYTES_MAX, is_geohash};
use int_schemas::{AccountId, DealRef, Escrow, SkuListing, SkuRef};

pub use exec::TIMERS_PER_BLOCK;
pub use policy::{
    AREA_SCAN_MAX, CANDIDATES_TRIED_MAX, POLICY_DEAL_NONCE_BIT, POLICY_EPOCH_BLOCKS_DEFAULT,
    POLICY_RUNS_PER_BLOCK,
};
pub use records::KINDS_MAX;
use records::*;

/// Errors of the market's storage (payload failures are receipt statuses).
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored market object does not decode: the store is corrupt.
    #[error("corrupt market object {key}: {what}")]
    Corrupt {
        /// Which object (its table prefix).
        key: String,
        /// What is wrong.
        what: String,
    },
    /// Amounts of one block overflow u128 (cannot happen while the supply
    /// fits u128).
    #[error("market amounts overflow u128")]
    Overflow,
}

/// Registers the system that decides market payloads and runs the market's
/// timers (Apply stage).
#[derive(Clone, Copy, Debug, Default)]
pub struct MarketPlugin;

impl Plugin for MarketPlugin {
    fn build(&self, world: &mut World, schedule: &mut Schedule) {
        add_effects::<Self>(world, schedule);
        register_object::<SkuRecord>(world);
        register_object::<ChannelRecord>(world);
        register_object::<OrderRecord>(world);
        register_object::<BidRecord>(world);
        register_object::<PolicyRecord>(world);
        world.init_resource::<exec::MarketLoad>();
        schedule.add_systems(exec::load_market.in_set(Stage::Load));
        schedule.add_systems(exec::apply_market.in_set(Stage::Apply));
    }
}

// ---------------------------------------------------------------------------
// Reads for the node (RPC, CLI) and the supply audit.
// ---------------------------------------------------------------------------

/// A SKU as clients see it: its id (the seller is `id.seller`), the
/// listing as it stands (price, capacity left and metadata as updated) and
/// the market's state of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuView {
    /// Its id.
    pub id: SkuRef,
    /// Kind, unit, price model and parameters, units left, region, who may
    /// buy, metadata hash (see [`kind_name`] for the kind).
    pub listing: SkuListing,
    /// Height of the listing.
    pub listed_height: u64,
    /// Taken off the market (only [`sku`] returns such SKUs).
    pub delisted: bool,
    /// Close height of the open auction window; 0 when none is open (the
    /// `window_end` a bid must name).
    pub window_end: u64,
}

impl SkuView {
    fn new(id: SkuRef, r: SkuRecord) -> Self {
        Self {
            id,
            listing: r.listing,
            listed_height: r.listed_height,
            delisted: r.delisted,
            window_end: r.window_end,
        }
    }
}

/// What [`query`] looks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SkuQuery {
    /// Only this kind; all kinds when `None`.
    pub kind: Option<u16>,
    /// Only regions starting with this geohash prefix (empty: anywhere).
    pub near: String,
    /// Only unit prices at most this.
    pub max_price: Option<u128>,
    /// At most this many results.
    pub limit: usize,
}

/// Listed SKUs with capacity left that match `q`, cheapest first (ties by
/// id), at most `q.limit`. A `near` that is not a geohash prefix matches
/// nothing.
pub fn query(
    store: &dyn StateView,
    chain_id: u32,
    q: &SkuQuery,
) -> Result<Vec<SkuView>, MarketError> {
    if q.limit == 0 || !is_geohash(&q.near, 0) {
        return Ok(Vec::new());
    }
    let mut prefix = INDEX_PREFIX.to_vec();
    if let Some(k) = q.kind {
        prefix.extend_from_slice(&k.to_be_bytes());
        prefix.extend_from_slice(q.near.as_bytes());
    }
    // The `limit` cheapest so far, as (price, id).
    let mut best: BTreeSet<(u128, SkuRef)> = BTreeSet::new();
    store.scan_prefix(chain_id, ObjectTable::Derived, &prefix, |k, _| {
        let (s, region, price) = parse_index_key(k)?;
        if q.max_price.is_some_and(|m| price > m) || !region.starts_with(q.near.as_bytes()) {
            return Ok(true);
        }
        best.insert((price, s));
        if best.len() > q.limit {
            best.pop_last();
        }
        Ok::<_, MarketError>(true)
    })?;
    let mut out = Vec::with_capacity(best.len());
    for (_, s) in best {
        if let Some(v) = sku(store, chain_id, &s)?
            && !v.delisted
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// One SKU, listed or delisted (see [`SkuView::delisted`]); `None` if it
/// never existed.
pub fn sku(
    store: &dyn StateView,
    chain_id: u32,
    id: &SkuRef,
) -> Result<Option<SkuView>, MarketError> {
    Ok(stored(store, chain_id, &sku_key(id), SkuRecord::decode)?.map(|r| SkuView::new(*id, r)))
}

/// An open metering channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelView {
    /// Its id.
    pub id: DealRef,
    /// GAS escrowed at opening.
    pub deposit: u128,
    /// GAS claimed by the seller so far.
    pub paid: u128,
    /// Sequence of the last claimed receipt (0: none yet).
    pub last_sequence: u64,
    /// Height the channel is open until.
    pub expiry: u64,
    /// Claims are accepted until `expiry + challenge_blocks`.
    pub challenge_blocks: u32,
}

/// An open channel; `None` if it never existed or was closed.
pub fn channel(
    store: &dyn StateView,
    chain_id: u32,
    id: &DealRef,
) -> Result<Option<ChannelView>, MarketError> {
    Ok(
        stored(store, chain_id, &chan_key(id), ChannelRecord::decode)?.map(|c| ChannelView {
            id: *id,
            deposit: c.deposit,
            paid: c.paid,
            last_sequence: c.last_sequence,
            expiry: c.expiry,
            challenge_blocks: c.challenge_blocks,
        }),
    )
}

/// An open CPP order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    /// Its id.
    pub id: DealRef,
    /// Units ordered.
    pub qty: u64,
    /// Units released to the seller so far.
    pub confirmed: u64,
    /// Price per unit escrowed.
    pub unit_price: u128,
    /// Height at which the unconfirmed rest returns to the buyer.
    pub timeout: u64,
}

/// An open order; `None` if it never existed, was fully confirmed or timed
/// out.
pub fn order(
    store: &dyn StateView,
    chain_id: u32,
    id: &DealRef,
) -> Result<Option<OrderView>, MarketError> {
    Ok(
        stored(store, chain_id, &order_key(id), OrderRecord::decode)?.map(|o| OrderView {
            id: *id,
            qty: o.qty,
            confirmed: o.confirmed,
            unit_price: o.unit_price,
            timeout: o.timeout,
        }),
    )
}

/// A bid waiting for its window's close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BidView {
    /// Who bid (and is refunded or served).
    pub bidder: AccountId,
    /// Nonce of the bid.
    pub nonce: u64,
    /// Close height of its window.
    pub window_end: u64,
    /// Units wanted.
    pub qty: u64,
    /// Highest price per unit (escrowed: `qty × unit_price`).
    pub unit_price: u128,
    /// Block of the bid.
    pub height: u64,
    /// Index of the bid in its block.
    pub index: u32,
}

/// The open bids on a SKU, by window then bidder.
pub fn bids(
    store: &dyn StateView,
    chain_id: u32,
    id: &SkuRef,
) -> Result<Vec<BidView>, MarketError> {
    let prefix = bid_sku_prefix(id);
    let mut out = Vec::new();
    store.scan_prefix(chain_id, ObjectTable::State, &prefix, |k, v| {
        let (window_end, bidder, nonce) = parse_bid_key(k)?;
        let b = BidRecord::decode(v)?;
        out.push(BidView {
            bidder,
            nonce,
            window_end,
            qty: b.qty,
            unit_price: b.unit_price,
            height: b.height,
            index: b.index,
        });
        Ok::<_, MarketError>(true)
    })?;
    Ok(out)
}

/// A standing policy: whose, for which kind, and its stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    /// Who set it (and whom it buys for).
    pub owner: AccountId,
    /// Resource kind it buys.
    pub kind: u16,
    /// Its terms, balance and counts.
    pub record: PolicyRecord,
}

impl PolicyView {
    fn new((owner, kind): PolicyId, record: PolicyRecord) -> Self {
        Self {
            owner,
            kind,
            record,
        }
    }
}

/// `owner`'s policy for `kind`; `None` if none is set.
pub fn policy(
    store: &dyn StateView,
    chain_id: u32,
    owner: &AccountId,
    kind: u16,
) -> Result<Option<PolicyView>, MarketError> {
    let id = (*owner, kind);
    Ok(
        stored(store, chain_id, &policy_key(&id), PolicyRecord::decode)?
            .map(|r| PolicyView::new(id, r)),
    )
}

/// Standing policies by owner then kind (only `owner`'s when given), at
/// most `limit`.
pub fn policies(
    store: &dyn StateView,
    chain_id: u32,
    owner: Option<&AccountId>,
    limit: usize,
) -> Result<Vec<PolicyView>, MarketError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut prefix = POLICY_PREFIX.to_vec();
    if let Some(o) = owner {
        prefix.extend_from_slice(o);
    }
    store.scan_prefix(chain_id, ObjectTable::State, &prefix, |k, v| {
        out.push(PolicyView::new(
            parse_policy_key(k)?,
            PolicyRecord::decode(v)?,
        ));
        Ok::<_, MarketError>(out.len() < limit)
    })?;
    Ok(out)
}

/// The GAS held in every market escrow object: the unclaimed part of each
/// channel's deposit, the unconfirmed units of each order, every open bid,
/// every policy's balance. The supply audit compares it with the chain's
/// escrow total.
pub fn escrow_held(store: &dyn StateView, chain_id: u32) -> Result<Escrow, MarketError> {
    let mut gas: u128 = 0;
    let mut sum = |prefix: &[u8], held: &dyn Fn(&[u8]) -> Result<u128, MarketError>| {
        store.scan_prefix(chain_id, ObjectTable::State, prefix, |_, v| {
            gas = gas.checked_add(held(v)?).ok_or(MarketError::Overflow)?;
            Ok::<_, MarketError>(true)
        })
    };
    sum(CHAN_PREFIX, &|v| Ok(ChannelRecord::decode(v)?.held()))?;
    sum(ORDER_PREFIX, &|v| Ok(OrderRecord::decode(v)?.held()))?;
    sum(BID_PREFIX, &|v| Ok(BidRecord::decode(v)?.held()))?;
    sum(POLICY_PREFIX, &|v| Ok(PolicyRecord::decode(v)?.balance))?;
    Ok(Escrow { int: 0, gas })
}

/// The name of a resource kind: built in, or registered; `None` for a
/// number no kind has.
pub fn kind_name(
    store: &dyn StateView,
    chain_id: u32,
    kind: u16,
) -> Result<Option<String>, MarketError> {
    if let Some(n) = BUILTIN_KINDS.get(kind as usize) {
        return Ok(Some(n.to_string()));
    }
    if kind < CUSTOM_KIND_FIRST {
        return Ok(None);
    }
    stored(store, chain_id, &kind_key(kind), decode_kind_name)
}

/// The number of a resource kind by name (built in or registered), for
/// `int market list --kind NAME`.
pub fn kind_by_name(
    store: &dyn StateView,
    chain_id: u32,
    name: &str,
) -> Result<Option<u16>, MarketError> {
    if let Some(i) = BUILTIN_KINDS.iter().position(|k| *k == name) {
        return Ok(Some(i as u16));
    }
    if name.is_empty() || name.len() > KIND_NAME_BYTES_MAX {
        return Ok(None);
    }
    stored(store, chain_id, &kind_name_key(name), decode_kind_number)
}
