//! Block execution of the market: the Apply-stage system, the per-SKU
//! groups, and one handler per payload and timer.
//!
//! Every handler checks everything first and changes nothing on a failure
//! verdict; the lock the Debit stage took for the payload then goes back
//! to the sender whole. On success the handler disposes of every unit of
//! the lock (pays the seller, escrows, refunds the rest), which
//! [`run_tx`] asserts, so a handler cannot lose or invent a unit unnoticed.

use std::collections::{BTreeMap, BTreeSet};

use bevy_ecs::prelude::*;
use int_engine::crypto::bls::{BlsG1Backend, PublicKey};
use int_engine::objects::{
    Effects, HotObjects, HotUpdate, Obj, Objects, Overlay, PluginEffects, StateObject, preload,
    update_hot_set,
};
use int_engine::storage::{ObjectTable, StateView};
use int_engine::supply::SupplyDelta;
use int_engine::world::{
    BlockContext, Credit, DeferredPayloads, ExecConfig, Outcomes, ParentState, PayloadVerdicts,
    SigBackend,
};
use int_schemas::market::{
    BUILTIN_KINDS, CUSTOM_KIND_FIRST, channel_receipt_message, total, usage_attestation_message,
};
use int_schemas::wire::{Authority, PriceModel, TxStatus};
use int_schemas::{AccountId, ClusterBuy, DealRef, Escrow, PayloadSpec, SkuListing, SkuRef};
use rayon::prelude::*;

use super::policy::{POLICY_DEAL_NONCE_BIT, Policies, PolicyBuy, due_policies};
use super::receipt::verify;
use super::records::*;
use super::sigs::{SigChecks, precheck};
use super::{MarketError, MarketPlugin};
use crate::auction::{Bid, clear_uniform};
use crate::bpk::{AdmittedIntent, AdmittedIntents};

/// Most timers run in one block; the rest stay due and run in the next
/// blocks, earliest first.
pub const TIMERS_PER_BLOCK: usize = 4096;

/// Whether the market decides `p`.
pub(crate) fn is_market(p: &PayloadSpec) -> bool {
    matches!(
        p,
        PayloadSpec::ListSku(_)
            | PayloadSpec::UpdateSku { .. }
            | PayloadSpec::DelistSku { .. }
            | PayloadSpec::Buy { .. }
            | PayloadSpec::OpenChannel { .. }
            | PayloadSpec::ClaimChannel { .. }
            | PayloadSpec::PlaceBid { .. }
            | PayloadSpec::Order { .. }
            | PayloadSpec::ConfirmUse { .. }
            | PayloadSpec::RegisterKind { .. }
            | PayloadSpec::SetPolicy(_)
            | PayloadSpec::CancelPolicy { .. }
    )
}

/// One market transaction of the block whose envelope the ledger accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxWork<'a> {
    pub index: u32,
    pub sender: AccountId,
    pub nonce: u64,
    pub payload: &'a PayloadSpec,
    /// What the Debit stage locked for it (`PayloadSpec::escrow`).
    pub escrow: Escrow,
    /// For an anonymous intent the BPK checks admitted: the purchase, the
    /// proven cluster and the account the proof names.
    pub intent: Option<AdmittedIntent>,
}

impl TxWork<'_> {
    /// The SKU whose group decides it (`None` for `RegisterKind` and the
    /// policy payloads).
    fn sku(&self) -> Option<SkuRef> {
        Some(match self.payload {
            PayloadSpec::ListSku(_) => SkuRef {
                seller: self.sender,
                seq: self.nonce,
            },
            PayloadSpec::UpdateSku { sku, .. }
            | PayloadSpec::DelistSku { sku }
            | PayloadSpec::Buy { sku, .. }
            | PayloadSpec::OpenChannel { sku, .. }
            | PayloadSpec::PlaceBid { sku, .. }
            | PayloadSpec::Order { sku, .. } => *sku,
            PayloadSpec::ClaimChannel { channel, .. } => channel.sku,
            PayloadSpec::ConfirmUse { order, .. } => order.sku,
            PayloadSpec::AnonIntent(_) => self.intent?.buy.sku,
            _ => return None,
        })
    }

    /// The channel or order this transaction opens on `sku`.
    fn deal(&self, sku: &SkuRef) -> DealRef {
        DealRef {
            sku: *sku,
            buyer: self.sender,
            nonce: self.nonce,
        }
    }
}

/// What the block needs from outside the groups.
pub(crate) struct Env<'a> {
    pub store: &'a dyn StateView,
    pub chain_id: u32,
    pub height: u64,
    /// Custom kinds the block's registrations added (the pre-pass).
    pub new_kinds: BTreeSet<u16>,
    pub verdicts: &'a PayloadVerdicts,
    /// The block's buyer signatures, checked in one batch.
    pub sigs: SigChecks,
}

/// What one SKU's group did: its writes, its money, and the objects it
/// read from the snapshot.
pub(crate) struct Output<'a> {
    pub ov: Overlay<'a>,
    pub money: Money,
    /// The planned policy purchases: their cost, or `None` when missed.
    pub bought: Vec<(PolicyId, Option<u128>)>,
    pub hot: HotUpdates,
}

/// The block's handles on the market's objects, one set per type: entities
/// of the hot set, or objects read from the snapshot on a miss.
pub(crate) struct MarketObjects<'a> {
    pub skus: Objects<'a, SkuRecord>,
    pub chans: Objects<'a, ChannelRecord>,
    pub orders: Objects<'a, OrderRecord>,
    pub bids: Objects<'a, BidRecord>,
}

/// What the block leaves for the hot set, per object type.
#[derive(Default)]
pub(crate) struct HotUpdates {
    pub skus: HotUpdate<SkuRecord>,
    pub chans: HotUpdate<ChannelRecord>,
    pub orders: HotUpdate<OrderRecord>,
    pub bids: HotUpdate<BidRecord>,
    pub policies: HotUpdate<PolicyRecord>,
}

impl HotUpdates {
    fn absorb(&mut self, o: HotUpdates) {
        self.skus.absorb(o.skus);
        self.chans.absorb(o.chans);
        self.orders.absorb(o.orders);
        self.bids.absorb(o.bids);
        self.policies.absorb(o.policies);
    }
}

/// The objects a block's market transactions name, and its due timers and
/// policies: what the load step reads before the market system runs.
#[derive(Resource, Debug, Default)]
pub(crate) struct MarketLoad {
    /// The height these are for.
    pub height: u64,
    pub timers: Vec<(u64, Timer)>,
    pub policies_due: Vec<(u64, PolicyId)>,
    pub skus: BTreeSet<SkuRef>,
    pub chans: BTreeSet<DealRef>,
    pub orders: BTreeSet<DealRef>,
    pub policies: BTreeSet<PolicyId>,
}

impl MarketLoad {
    /// Records what payload `p`, sent by `sender` with `nonce`, names.
    fn declare(&mut self, sender: AccountId, nonce: u64, p: &PayloadSpec) {
        let deal = |sku: SkuRef| DealRef {
            sku,
            buyer: sender,
            nonce,
        };
        match p {
            PayloadSpec::ListSku(_) => {
                self.skus.insert(SkuRef {
                    seller: sender,
                    seq: nonce,
                });
            }
            PayloadSpec::UpdateSku { sku, .. }
            | PayloadSpec::DelistSku { sku }
            | PayloadSpec::Buy { sku, .. }
            | PayloadSpec::PlaceBid { sku, .. } => {
                self.skus.insert(*sku);
            }
            PayloadSpec::OpenChannel { sku, .. } => {
                self.skus.insert(*sku);
                self.chans.insert(deal(*sku));
            }
            PayloadSpec::Order { sku, .. } => {
                self.skus.insert(*sku);
                self.orders.insert(deal(*sku));
            }
            PayloadSpec::ClaimChannel { channel, .. } => {
                self.skus.insert(channel.sku);
                self.chans.insert(*channel);
            }
            PayloadSpec::ConfirmUse { order, .. } => {
                self.skus.insert(order.sku);
                self.orders.insert(*order);
            }
            PayloadSpec::AnonIntent(a) => {
                if let Some(b) = ClusterBuy::decode(&a.payload) {
                    self.skus.insert(b.sku);
                    self.orders.insert(deal(b.sku));
                }
            }
            PayloadSpec::SetPolicy(p) => {
                self.policies.insert((sender, p.kind));
            }
            PayloadSpec::CancelPolicy { kind } => {
                self.policies.insert((sender, *kind));
            }
            _ => {}
        }
    }
}

/// The market's load step (an exclusive system, before the Debit stage):
/// scans the due timers and policies, and loads into the hot set every SKU,
/// channel, order and policy that the block's transactions, timers and
/// policies name, reading the snapshot on every core. Policy purchases
/// choose their SKU only while the block executes; a SKU they reach that
/// is not loaded is read then (and enters the hot set after the block).
pub(crate) fn load_market(world: &mut World) {
    let ctx = *world.resource::<BlockContext>();
    let view = world.resource::<ParentState>().0.clone();
    let (chain_id, height) = (ctx.chain_id, ctx.height);
    let mut load = MarketLoad {
        height,
        ..MarketLoad::default()
    };
    let r =
        (|| -> Result<(), MarketError> {
            load.timers = due_timers(&*view, chain_id, height, TIMERS_PER_BLOCK)?;
            load.policies_due = due_policies(&*view, chain_id, height)?;
            for (_, t) in &load.timers {
                match t {
                    Timer::ChannelClose(d) => {
                        load.chans.insert(*d);
                    }
                    Timer::OrderTimeout(d) => {
                        load.orders.insert(*d);
                    }
                    Timer::AuctionClose(_) => {}
                }
                load.skus.insert(t.sku());
            }
            load.policies
                .extend(load.policies_due.iter().map(|(_, id)| *id));
            for d in world.resource::<DeferredPayloads>().0.iter().filter(|d| {
                is_market(&d.payload) || matches!(d.payload, PayloadSpec::AnonIntent(_))
            }) {
                load.declare(d.sender, d.nonce, &d.payload);
            }
            preload::<SkuRecord>(world, &*view, chain_id, height, &load.skus)?;
            preload::<ChannelRecord>(world, &*view, chain_id, height, &load.chans)?;
            preload::<OrderRecord>(world, &*view, chain_id, height, &load.orders)?;
            preload::<PolicyRecord>(world, &*view, chain_id, height, &load.policies)?;
            Ok(())
        })();
    match r {
        Ok(()) => world.insert_resource(load),
        Err(e) => world
            .resource_mut::<PluginEffects<MarketPlugin>>()
            .effects
            .fail("market", e),
    }
}

/// The market's objects in the world: one query and one index per type.
type HotQueries<'w, 's> = (
    Query<'w, 's, &'static mut Obj<SkuRecord>>,
    Query<'w, 's, &'static mut Obj<ChannelRecord>>,
    Query<'w, 's, &'static mut Obj<OrderRecord>>,
    Query<'w, 's, &'static mut Obj<BidRecord>>,
    Query<'w, 's, &'static mut Obj<PolicyRecord>>,
);

type HotIndexes<'w> = (
    ResMut<'w, HotObjects<SkuRecord>>,
    ResMut<'w, HotObjects<ChannelRecord>>,
    ResMut<'w, HotObjects<OrderRecord>>,
    ResMut<'w, HotObjects<BidRecord>>,
    ResMut<'w, HotObjects<PolicyRecord>>,
);

/// The Apply-stage system: decides the block's market payloads and runs its
/// timers and policies over the objects the load step put in the world.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_market(
    ctx: Res<BlockContext>,
    cfg: Res<ExecConfig>,
    store: Res<ParentState>,
    g1: Res<SigBackend>,
    (deferred, outcomes, verdicts): (Res<DeferredPayloads>, Res<Outcomes>, Res<PayloadVerdicts>),
    admitted: Option<Res<AdmittedIntents>>,
    mut load: ResMut<MarketLoad>,
    (mut q_sku, mut q_chan, mut q_order, mut q_bid, mut q_pol): HotQueries,
    (mut hot_sku, mut hot_chan, mut hot_order, mut hot_bid, mut hot_pol): HotIndexes,
    mut commands: Commands,
    mut out: ResMut<PluginEffects<MarketPlugin>>,
) {
    let fx = &mut out.effects;
    let load = std::mem::take(&mut *load);
    if fx.fault.is_some() {
        // The load step failed.
        return;
    }
    if load.height != ctx.height {
        fx.fail(
            "market",
            format!(
                "the load step ran for height {}, not {}",
                load.height, ctx.height
            ),
        );
        return;
    }
    let mut mine: Vec<TxWork<'_>> = deferred
        .accepted(&outcomes, is_market)
        .map(|d| TxWork {
            index: d.index,
            sender: d.sender,
            nonce: d.nonce,
            payload: &d.payload,
            escrow: d.escrow,
            intent: None,
        })
        .collect();
    // Intents the BPK checks admitted, in block order (the deferred
    // payloads are in block order too).
    for a in admitted.iter().flat_map(|a| a.0.iter()) {
        let Ok(at) = deferred.0.binary_search_by_key(&a.index, |d| d.index) else {
            fx.fail(
                "market",
                format!("admitted intent {} is not deferred", a.index),
            );
            return;
        };
        let d = &deferred.0[at];
        mine.push(TxWork {
            index: d.index,
            sender: d.sender,
            nonce: d.nonce,
            payload: &d.payload,
            escrow: d.escrow,
            intent: Some(*a),
        });
    }
    mine.sort_by_key(|t| t.index);
    let (view, chain_id, height) = (&*store.0, ctx.chain_id, ctx.height);
    // The bids on the block's SKUs that the world holds.
    let bid_ids: Vec<BidId> = load
        .skus
        .iter()
        .flat_map(|s| {
            hot_bid
                .index
                .range((*s, 0, [0; 32], 0)..=(*s, u64::MAX, [0xff; 32], u64::MAX))
                .map(|(id, _)| *id)
        })
        .collect();
    let objs = MarketObjects {
        skus: Objects::from_hot(&mut q_sku, &hot_sku, &load.skus, view, chain_id, height),
        chans: Objects::from_hot(&mut q_chan, &hot_chan, &load.chans, view, chain_id, height),
        orders: Objects::from_hot(
            &mut q_order,
            &hot_order,
            &load.orders,
            view,
            chain_id,
            height,
        ),
        bids: Objects::from_hot(&mut q_bid, &hot_bid, &bid_ids, view, chain_id, height),
    };
    let policies = Objects::from_hot(&mut q_pol, &hot_pol, &load.policies, view, chain_id, height);
    let env = Env {
        store: view,
        chain_id,
        height,
        new_kinds: BTreeSet::new(),
        verdicts: &verdicts,
        sigs: SigChecks::default(),
    };
    let (timers, due) = (load.timers, load.policies_due);
    match execute(
        env,
        &mine,
        timers,
        due,
        objs,
        policies,
        cfg.parallel,
        &*g1.0,
        fx,
    ) {
        Ok(hot) => {
            update_hot_set(&mut commands, &mut hot_sku, hot.skus);
            update_hot_set(&mut commands, &mut hot_chan, hot.chans);
            update_hot_set(&mut commands, &mut hot_order, hot.orders);
            update_hot_set(&mut commands, &mut hot_bid, hot.bids);
            update_hot_set(&mut commands, &mut hot_pol, hot.policies);
        }
        Err(e) => fx.fail("market", e),
    }
}

/// SKU `s`'s handles of one type, or none yet (reads go to `store`).
fn part<'a, T: StateObject>(
    parts: &mut BTreeMap<SkuRef, Objects<'a, T>>,
    s: &SkuRef,
    store: &'a dyn StateView,
    chain_id: u32,
    height: u64,
) -> Objects<'a, T> {
    parts
        .remove(s)
        .unwrap_or_else(|| Objects::new(store, chain_id, height))
}

/// The timers due at or before `height`, earliest first, at most `cap`.
pub(crate) fn due_timers(
    store: &dyn StateView,
    chain_id: u32,
    height: u64,
    cap: usize,
) -> Result<Vec<(u64, Timer)>, MarketError> {
    scan_due(store, chain_id, DUE_PREFIX, height, cap, parse_due_key)
}

/// The entries of a due index (`prefix` ‖ height ‖ id) at or before
/// `height`, earliest first, at most `cap`.
pub(crate) fn scan_due<T, P>(
    store: &dyn StateView,
    chain_id: u32,
    prefix: &[u8],
    height: u64,
    cap: usize,
    parse: P,
) -> Result<Vec<(u64, T)>, MarketError>
where
    P: Fn(&[u8]) -> Result<(u64, T), MarketError>,
{
    let mut out = Vec::new();
    if cap == 0 {
        return Ok(out);
    }
    store.scan_prefix(chain_id, ObjectTable::State, prefix, |k, _| {
        let (at, t) = parse(k)?;
        if at > height {
            return Ok(false);
        }
        out.push((at, t));
        Ok::<_, MarketError>(out.len() < cap)
    })?;
    Ok(out)
}

/// Decides the block's market transactions and runs its due timers and
/// policies (see the module documentation of `market` for the order),
/// adding what they do to `fx`; returns the objects read from the snapshot.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute<'a>(
    mut env: Env<'a>,
    txs: &[TxWork<'_>],
    timers: Vec<(u64, Timer)>,
    due: Vec<(u64, PolicyId)>,
    objs: MarketObjects<'a>,
    policies: Objects<'a, PolicyRecord>,
    parallel: bool,
    g1: &dyn BlsG1Backend,
    fx: &mut Effects,
) -> Result<HotUpdates, MarketError> {
    let (store, chain_id, height) = (env.store, env.chain_id, env.height);
    let mut hot = HotUpdates::default();
    if txs.is_empty() && timers.is_empty() && due.is_empty() {
        return Ok(hot);
    }
    let mut ov = Overlay::new(store, chain_id);
    // The kind registry is global: registrations first, in block order.
    let regs: Vec<&TxWork<'_>> = txs
        .iter()
        .filter(|t| matches!(t.payload, PayloadSpec::RegisterKind { .. }))
        .collect();
    if !regs.is_empty() {
        env.new_kinds = register_kinds(&mut ov, &regs, env.verdicts)?;
    }
    env.sigs = precheck(store, chain_id, height, txs, parallel, g1)?;
    let env = env;
    // Policies: their transactions, then the plan of this block's purchases.
    let mut pol = Policies::new(&env, policies);
    for t in txs.iter().filter(|t| is_policy(t.payload)) {
        pol.decide(t)?;
    }
    let buys = pol.plan(due)?;
    let mut groups: BTreeMap<SkuRef, Work<'_, '_>> = BTreeMap::new();
    for (at, t) in timers {
        groups.entry(t.sku()).or_default().timers.push((at, t));
    }
    for t in txs {
        if let Some(s) = t.sku() {
            groups.entry(s).or_default().txs.push(t);
        }
    }
    for (s, b) in buys {
        groups.entry(s).or_default().buys.push(b);
    }
    // Each group gets the handles on its own SKU's objects.
    let mut skus = objs.skus.group_by(|s| *s);
    let mut chans = objs.chans.group_by(|d| d.sku);
    let mut orders = objs.orders.group_by(|d| d.sku);
    let mut bids = objs.bids.group_by(|b| b.0);
    let groups: Vec<(SkuRef, Work<'_, '_>, MarketObjects<'a>)> = groups
        .into_iter()
        .map(|(s, w)| {
            let mine = MarketObjects {
                skus: part(&mut skus, &s, store, chain_id, height),
                chans: part(&mut chans, &s, store, chain_id, height),
                orders: part(&mut orders, &s, store, chain_id, height),
                bids: part(&mut bids, &s, store, chain_id, height),
            };
            (s, w, mine)
        })
        .collect();
    let run = |(s, w, o): (SkuRef, Work<'_, '_>, MarketObjects<'a>)| run_group(&env, &s, &w, o);
    let results: Vec<Result<Output<'_>, MarketError>> = if parallel {
        groups.into_par_iter().map(run).collect()
    } else {
        groups.into_iter().map(run).collect()
    };
    let overflow = || MarketError::Overflow;
    let mut bought = BTreeMap::new();
    let mut money = Money::default();
    // In SKU order: as the sequential run.
    for r in results {
        let g = r?;
        ov.absorb(g.ov);
        money.absorb(g.money).ok_or_else(overflow)?;
        bought.extend(g.bought);
        hot.absorb(g.hot);
    }
    pol.settle(&bought)?;
    money
        .absorb(std::mem::take(&mut pol.money))
        .ok_or_else(overflow)?;
    hot.policies = pol.finish(&mut ov);
    fx.delta.merge(&money.delta).ok_or_else(overflow)?;
    fx.credits.extend(money.credits);
    fx.writes.extend(ov.into_writes());
    Ok(hot)
}

fn is_policy(p: &PayloadSpec) -> bool {
    matches!(
        p,
        PayloadSpec::SetPolicy(_) | PayloadSpec::CancelPolicy { .. }
    )
}

/// What one SKU's group does, in this order.
#[derive(Default)]
struct Work<'a, 'b> {
    timers: Vec<(u64, Timer)>,
    txs: Vec<&'b TxWork<'a>>,
    buys: Vec<PolicyBuy>,
}

/// The registry pre-pass: each name gets the next number from 256, unless
/// it is built in, taken, or the registry is full (`KindTaken`).
fn register_kinds(
    ov: &mut Overlay<'_>,
    regs: &[&TxWork<'_>],
    verdicts: &PayloadVerdicts,
) -> Result<BTreeSet<u16>, MarketError> {
    let start = ov
        .get_as(ObjectTable::State, KINDS_KEY, decode_kind_count)?
        .unwrap_or(0);
    let mut count = start;
    let mut nums = BTreeSet::new();
    for t in regs {
        let PayloadSpec::RegisterKind { name } = t.payload else {
            continue;
        };
        let status = if BUILTIN_KINDS.contains(&name.as_str())
            || count >= KINDS_MAX
            || ov.contains(ObjectTable::State, &kind_name_key(name))?
        {
            TxStatus::KindTaken
        } else {
            // Below 256 + 4096: fits u16.
            let n = CUSTOM_KIND_FIRST + count as u16;
            count += 1;
            ov.put(ObjectTable::State, kind_key(n), encode_kind_name(name));
            ov.put(
                ObjectTable::State,
                kind_name_key(name),
                encode_kind_number(n),
            );
            nums.insert(n);
            TxStatus::Ok
        };
        verdicts.set(t.index, status);
    }
    if count != start {
        ov.put(
            ObjectTable::State,
            KINDS_KEY.to_vec(),
            encode_kind_count(count),
        );
    }
    Ok(nums)
}

// ---------------------------------------------------------------------------
// One SKU's group.
// ---------------------------------------------------------------------------

struct Cx<'e, 'a> {
    env: &'e Env<'a>,
    /// The group's SKU.
    s: SkuRef,
    /// The group's SKU, channels, orders and bids: each read once, and
    /// written back once at the end of the group ([`Cx::finish`]).
    objs: MarketObjects<'a>,
    /// The group's due entries and index entries.
    ov: Overlay<'a>,
    money: Money,
    bought: Vec<(PolicyId, Option<u128>)>,
}

/// What is left of one transaction's lock while its handler disposes of it.
struct Lock {
    left: u128,
}

/// The GAS a group, or the block's policy pass, credits to accounts and
/// moves into and out of escrow objects.
#[derive(Debug, Default)]
pub(crate) struct Money {
    pub credits: Vec<Credit>,
    pub delta: SupplyDelta,
}

impl Money {
    /// Credits `amount` GAS to `to` (nothing when 0).
    pub fn credit(&mut self, to: AccountId, amount: u128) {
        if amount > 0 {
            self.credits.push(Credit {
                to,
                amount: Escrow {
                    int: 0,
                    gas: amount,
                },
            });
        }
    }

    /// Counts `amount` GAS put into an escrow object.
    pub fn escrow(&mut self, amount: u128) -> Result<(), MarketError> {
        self.delta.escrowed.gas = self
            .delta
            .escrowed
            .gas
            .checked_add(amount)
            .ok_or(MarketError::Overflow)?;
        Ok(())
    }

    /// Adds `other`'s credits after these and its supply change to this
    /// one's; `None` on overflow.
    pub fn absorb(&mut self, other: Money) -> Option<()> {
        self.delta.merge(&other.delta)?;
        self.credits.extend(other.credits);
        Some(())
    }

    /// Takes `amount` out of an escrow object and credits it to `to`.
    pub fn release(&mut self, to: AccountId, amount: u128) -> Result<(), MarketError> {
        self.delta.released.gas = self
            .delta
            .released
            .gas
            .checked_add(amount)
            .ok_or(MarketError::Overflow)?;
        self.credit(to, amount);
        Ok(())
    }
}

impl<'a> Cx<'_, 'a> {
    /// Pays `amount` of `lock` to `to`.
    fn pay(&mut self, lock: &mut Lock, to: AccountId, amount: u128) {
        lock.left = lock
            .left
            .checked_sub(amount)
            .expect("a handler spends at most its lock");
        self.money.credit(to, amount);
    }

    /// Returns what is left of `lock` to `to` (the sender).
    fn refund_rest(&mut self, lock: &mut Lock, to: AccountId) {
        let rest = lock.left;
        self.pay(lock, to, rest);
    }

    /// Puts `amount` of `lock` into an escrow object.
    fn hold(&mut self, lock: &mut Lock, amount: u128) -> Result<(), MarketError> {
        lock.left = lock
            .left
            .checked_sub(amount)
            .expect("a handler escrows at most its lock");
        self.money.escrow(amount)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ov.put(ObjectTable::State, key, value);
    }

    fn del(&mut self, key: Vec<u8>) {
        self.ov.del(ObjectTable::State, key);
    }

    /// The group's SKU (`s`) as this block left it so far.
    fn sku(&mut self, s: &SkuRef) -> Result<Option<SkuRecord>, MarketError> {
        debug_assert_eq!(*s, self.s, "a group touches only its own SKU");
        self.objs.skus.get(s)
    }

    /// A listed (not delisted) SKU, or `UnknownSku`.
    fn live(&mut self, s: &SkuRef) -> Result<Result<SkuRecord, TxStatus>, MarketError> {
        Ok(match self.sku(s)? {
            Some(r) if !r.delisted => Ok(r),
            _ => Err(TxStatus::UnknownSku),
        })
    }

    /// Saves the group's SKU (read first with [`Cx::sku`]); it is stored,
    /// and its index entry moved, at the end of the group.
    fn save_sku(&mut self, s: &SkuRef, new: SkuRecord) {
        debug_assert_eq!(*s, self.s, "a group touches only its own SKU");
        self.objs.skus.replace(s, Some(new));
    }

    /// The group's writes: its objects, once each, and its SKU's index
    /// entry in step with the SKU.
    fn finish(mut self) -> Output<'a> {
        let s = self.s;
        let ix = |r: Option<&SkuRecord>| r.filter(|r| r.indexed()).map(|r| index_key(&s, r));
        // (committed, new) index key of each changed SKU: one at most.
        let moves: Vec<[Option<Vec<u8>>; 2]> = self
            .objs
            .skus
            .changes()
            .map(|(_, was, now)| [ix(was), ix(now)])
            .filter(|[was, now]| was != now)
            .collect();
        for [was, now] in moves {
            if let Some(k) = was {
                self.ov.del(ObjectTable::Derived, k);
            }
            if let Some(k) = now {
                self.ov.put(ObjectTable::Derived, k, Vec::new());
            }
        }
        let hot = HotUpdates {
            skus: self.objs.skus.finish(&mut self.ov),
            chans: self.objs.chans.finish(&mut self.ov),
            orders: self.objs.orders.finish(&mut self.ov),
            bids: self.objs.bids.finish(&mut self.ov),
            policies: HotUpdate::default(),
        };
        Output {
            ov: self.ov,
            money: self.money,
            bought: self.bought,
            hot,
        }
    }

    fn channel(&mut self, d: &DealRef) -> Result<Option<ChannelRecord>, MarketError> {
        self.objs.chans.get(d)
    }

    fn set_channel(&mut self, d: &DealRef, c: Option<ChannelRecord>) -> Result<(), MarketError> {
        self.objs.chans.set(d, c)
    }

    fn order(&mut self, d: &DealRef) -> Result<Option<OrderRecord>, MarketError> {
        self.objs.orders.get(d)
    }

    fn set_order(&mut self, d: &DealRef, o: Option<OrderRecord>) -> Result<(), MarketError> {
        self.objs.orders.set(d, o)
    }

    /// Whether `sig`, in transaction `t`, is the deal's buyer's signature
    /// of `msg` (under its registered key; `false` without one that
    /// decodes): the block's batched precheck, or a check of its own when
    /// the precheck covered another message.
    fn buyer_signed(
        &self,
        t: &TxWork<'_>,
        d: &DealRef,
        msg: &[u8],
        sig: &[u8; 48],
    ) -> Result<bool, MarketError> {
        if let Some(ok) = self.env.sigs.verdict(t.index, msg) {
            return Ok(ok);
        }
        Ok(self
            .env
            .store
            .account(self.env.chain_id, &d.buyer)?
            .and_then(|r| r.public_key)
            .and_then(|pk| PublicKey::from_bytes(&pk).ok())
            .is_some_and(|pk| verify(&pk, msg, sig)))
    }

    /// A listed SKU of `model` whose authority admits `buyer` in its own
    /// name (the checks a channel and a bid start with; purchases, which
    /// an intent's cluster may make too, go through [`priced`]), or the
    /// status that refuses.
    fn offered(
        &mut self,
        s: &SkuRef,
        model: PriceModel,
        buyer: &AccountId,
    ) -> Result<Result<SkuRecord, TxStatus>, MarketError> {
        Ok(self
            .live(s)?
            .and_then(|r| offers(&r, model, buyer, None).map(|()| r)))
    }

    /// Opens `r`'s next auction window, `period_blocks` from this height,
    /// and schedules its close; `false` (nothing changed) when the height
    /// would overflow.
    fn open_window(&mut self, s: &SkuRef, r: &mut SkuRecord) -> bool {
        let Some(end) = self
            .env
            .height
            .checked_add(r.listing.terms.period_blocks as u64)
        else {
            return false;
        };
        r.window_end = end;
        self.put(due_key(end, &Timer::AuctionClose(*s)), due_value());
        true
    }

    /// Deletes a window's bids; their bidders and records, in key order.
    fn take_window_bids(
        &mut self,
        s: &SkuRef,
        window_end: u64,
    ) -> Result<Vec<(AccountId, BidRecord)>, MarketError> {
        let env = self.env;
        let bids = &mut self.objs.bids;
        // The committed bids of the window (handles already held keep
        // this block's changes), then every one that exists now.
        env.store.scan_prefix(
            env.chain_id,
            ObjectTable::State,
            &bid_window_prefix(s, window_end),
            |k, v| {
                let (w, bidder, nonce) = parse_bid_key(k)?;
                bids.add_scanned((*s, w, bidder, nonce), v)?;
                Ok::<_, MarketError>(true)
            },
        )?;
        let mut out = Vec::new();
        for id in
            bids.present_in((*s, window_end, [0; 32], 0)..=(*s, window_end, [0xff; 32], u64::MAX))
        {
            let b = bids.get(&id)?.expect("present above");
            bids.replace(&id, None);
            out.push((id.2, b));
        }
        Ok(out)
    }
}

/// Whether `kind` is built in, registered, or registered by this block.
pub(crate) fn kind_known(env: &Env<'_>, kind: u16) -> Result<bool, MarketError> {
    if (kind as usize) < BUILTIN_KINDS.len() {
        return Ok(true);
    }
    if kind < CUSTOM_KIND_FIRST {
        return Ok(false);
    }
    Ok(env.new_kinds.contains(&kind)
        || env
            .store
            .object(env.chain_id, ObjectTable::State, &kind_key(kind))?
            .is_some())
}

/// Whether SKU `r` sells under `model` to `buyer` (or a member of
/// `cluster`).
fn offers(
    r: &SkuRecord,
    model: PriceModel,
    buyer: &AccountId,
    cluster: Option<u32>,
) -> Result<(), TxStatus> {
    if r.listing.terms.model != model {
        return Err(TxStatus::WrongModel);
    }
    admits(r, buyer, cluster)
}

/// Whether the SKU's authority admits `buyer`, or a member of `cluster`
/// (proven by a BPK intent the chain admitted).
fn admits(r: &SkuRecord, buyer: &AccountId, cluster: Option<u32>) -> Result<(), TxStatus> {
    match r.listing.authority {
        Authority::Open => Ok(()),
        Authority::Allowlist if r.listing.allow.contains(buyer) => Ok(()),
        Authority::Clusters if cluster.is_some_and(|c| r.listing.clusters.contains(&c)) => Ok(()),
        _ => Err(TxStatus::Unauthorized),
    }
}

fn run_group<'a>(
    env: &Env<'a>,
    s: &SkuRef,
    w: &Work<'_, '_>,
    objs: MarketObjects<'a>,
) -> Result<Output<'a>, MarketError> {
    let mut cx = Cx {
        env,
        s: *s,
        objs,
        ov: Overlay::new(env.store, env.chain_id),
        money: Money::default(),
        bought: Vec::new(),
    };
    for (at, t) in &w.timers {
        cx.del(due_key(*at, t));
        match t {
            Timer::ChannelClose(d) => close_channel(&mut cx, d)?,
            Timer::OrderTimeout(d) => time_out_order(&mut cx, d)?,
            Timer::AuctionClose(_) => close_auction(&mut cx, s, *at)?,
        }
    }
    for t in &w.txs {
        run_tx(&mut cx, s, t)?;
    }
    for b in &w.buys {
        let cost = policy_buy(&mut cx, s, b)?;
        cx.bought.push((b.id, cost));
    }
    Ok(cx.finish())
}

/// Decides one transaction and disposes of its lock.
fn run_tx(cx: &mut Cx<'_, '_>, s: &SkuRef, t: &TxWork<'_>) -> Result<(), MarketError> {
    let total = t.escrow.gas;
    let mut lock = Lock { left: total };
    let status = match t.payload {
        PayloadSpec::ListSku(l) => list(cx, s, l)?,
        PayloadSpec::UpdateSku {
            unit_price,
            capacity,
            metadata_hash,
            ..
        } => update(cx, s, t, *unit_price, *capacity, *metadata_hash)?,
        PayloadSpec::DelistSku { .. } => delist(cx, s, t)?,
        PayloadSpec::Buy {
            qty,
            max_unit_price,
            ..
        } => buy(cx, s, t, &mut lock, *qty, *max_unit_price)?,
        PayloadSpec::OpenChannel {
            deposit, expiry, ..
        } => open_channel(cx, s, t, &mut lock, *deposit, *expiry)?,
        PayloadSpec::ClaimChannel {
            channel,
            amount,
            sequence,
            buyer_signature,
        } => claim(cx, t, channel, *amount, *sequence, buyer_signature)?,
        PayloadSpec::PlaceBid {
            qty,
            unit_price,
            window_end,
            ..
        } => place_bid(cx, s, t, &mut lock, *qty, *unit_price, *window_end)?,
        PayloadSpec::Order {
            qty,
            max_unit_price,
            ..
        } => order(cx, s, t, &mut lock, *qty, *max_unit_price)?,
        PayloadSpec::ConfirmUse {
            order,
            qty,
            attestation,
        } => confirm(cx, t, order, *qty, attestation.as_ref())?,
        PayloadSpec::AnonIntent(_) => cluster_buy(cx, s, t, &mut lock)?,
        _ => unreachable!("only SKU payloads reach a group"),
    };
    if status == TxStatus::Ok {
        assert_eq!(lock.left, 0, "a handler left part of its lock");
    } else {
        assert_eq!(lock.left, total, "a failed handler spent its lock");
        cx.money.credit(t.sender, total);
    }
    cx.env.verdicts.set(t.index, status);
    Ok(())
}

/// `return Ok(status)` from a handler when `cond` fails.
macro_rules! ensure {
    ($cond:expr, $status:expr) => {
        if !$cond {
            return Ok($status);
        }
    };
}

/// The value of a check that yields a record or a status.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(status) => return Ok(status),
        }
    };
}

fn list(cx: &mut Cx<'_, '_>, s: &SkuRef, l: &SkuListing) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    ensure!(kind_known(cx.env, l.kind)?, S::InvalidArgument);
    ensure!(l.capacity > 0, S::InvalidArgument);
    ensure!(
        l.terms.model == PriceModel::PriceTag || l.terms.period_blocks >= 1,
        S::InvalidArgument
    );
    ensure!(cx.sku(s)?.is_none(), S::InvalidArgument);
    let mut rec = SkuRecord {
        listing: l.clone(),
        listed_height: cx.env.height,
        delisted: false,
        window_end: 0,
    };
    if l.terms.model == PriceModel::Auction {
        ensure!(cx.open_window(s, &mut rec), S::InvalidArgument);
    }
    cx.save_sku(s, rec);
    Ok(S::Ok)
}

fn update(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    unit_price: u128,
    capacity: u64,
    metadata_hash: [u8; 32],
) -> Result<TxStatus, MarketError> {
    let old = check!(cx.live(s)?);
    ensure!(t.sender == s.seller, TxStatus::NotSeller);
    let mut new = old;
    new.listing.capacity = capacity;
    new.listing.metadata_hash = metadata_hash;
    new.listing.terms.unit_price = unit_price;
    if new.listing.terms.model == PriceModel::Auction && new.window_end == 0 && capacity > 0 {
        // Capacity again after a window closed with none: a new window.
        ensure!(cx.open_window(s, &mut new), TxStatus::InvalidArgument);
    }
    cx.save_sku(s, new);
    Ok(TxStatus::Ok)
}

fn delist(cx: &mut Cx<'_, '_>, s: &SkuRef, t: &TxWork<'_>) -> Result<TxStatus, MarketError> {
    let old = check!(cx.live(s)?);
    ensure!(t.sender == s.seller, TxStatus::NotSeller);
    let new = SkuRecord {
        delisted: true,
        window_end: 0,
        ..old
    };
    if old.window_end != 0 {
        // The open window's bids go back at once; its close is cancelled.
        refund_window(cx, s, old.window_end)?;
        cx.del(due_key(old.window_end, &Timer::AuctionClose(*s)));
    }
    cx.save_sku(s, new);
    Ok(TxStatus::Ok)
}

/// Returns every bid of a window to its bidder and deletes it.
fn refund_window(cx: &mut Cx<'_, '_>, s: &SkuRef, window_end: u64) -> Result<(), MarketError> {
    for (bidder, b) in cx.take_window_bids(s, window_end)? {
        cx.money.release(bidder, b.held())?;
    }
    Ok(())
}

/// The checks every price-tag purchase and CPP order share (a
/// transaction's, an intent's, a policy's): a live SKU of `model` that
/// admits `buyer` (or a member of `cluster`), `1 ≤ qty ≤` capacity, its
/// price within the buyer's bound. The SKU and `qty × price`, or the
/// status that refuses.
#[allow(clippy::too_many_arguments)]
fn priced(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    model: PriceModel,
    buyer: &AccountId,
    cluster: Option<u32>,
    qty: u64,
    max_unit_price: u128,
) -> Result<Result<(SkuRecord, u128), TxStatus>, MarketError> {
    Ok(cx.live(s)?.and_then(|old| {
        let cost = purchase_cost(
            &old,
            old.listing.capacity,
            model,
            buyer,
            cluster,
            qty,
            max_unit_price,
        )?;
        Ok((old, cost))
    }))
}

/// What buying `qty` units of listed SKU `r` with `capacity` units left
/// costs `buyer` (or a member of `cluster`) under `model` and its bound,
/// or the status that refuses: the SKU's model, its authority, `1 ≤ qty ≤
/// capacity`, the price. A policy's plan asks it of committed SKUs, a
/// purchase of the SKU as the block left it.
pub(crate) fn purchase_cost(
    r: &SkuRecord,
    capacity: u64,
    model: PriceModel,
    buyer: &AccountId,
    cluster: Option<u32>,
    qty: u64,
    max_unit_price: u128,
) -> Result<u128, TxStatus> {
    use TxStatus as S;
    offers(r, model, buyer, cluster)?;
    if qty == 0 {
        return Err(S::InvalidArgument);
    }
    if qty > capacity {
        return Err(S::OverCapacity);
    }
    if r.listing.terms.unit_price > max_unit_price {
        return Err(S::PriceAboveMax);
    }
    total(qty, r.listing.terms.unit_price).ok_or(S::InvalidArgument)
}

fn buy(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    lock: &mut Lock,
    qty: u64,
    max_unit_price: u128,
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    let cluster = t.intent.map(|i| i.cluster);
    let (old, cost) = check!(priced(
        cx,
        s,
        PriceModel::PriceTag,
        &t.sender,
        cluster,
        qty,
        max_unit_price
    )?);
    cx.pay(lock, s.seller, cost);
    cx.refund_rest(lock, t.sender);
    take_units(cx, s, old, qty);
    Ok(S::Ok)
}

/// Saves the SKU with `qty` fewer units (checked against its capacity).
fn take_units(cx: &mut Cx<'_, '_>, s: &SkuRef, old: SkuRecord, qty: u64) {
    let mut new = old;
    new.listing.capacity -= qty;
    cx.save_sku(s, new);
}

/// Opens CPP order `d` for `qty` units of `old` at its price: the order,
/// its timeout, the units off the SKU. Refused (`InvalidArgument`, nothing
/// written) when the timeout height overflows or the order exists.
fn open_order(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    d: DealRef,
    old: SkuRecord,
    qty: u64,
) -> Result<Result<(), TxStatus>, MarketError> {
    let Some(timeout) = cx
        .env
        .height
        .checked_add(old.listing.terms.period_blocks as u64)
    else {
        return Ok(Err(TxStatus::InvalidArgument));
    };
    if cx.order(&d)?.is_some() {
        return Ok(Err(TxStatus::InvalidArgument));
    }
    let o = OrderRecord {
        qty,
        confirmed: 0,
        unit_price: old.listing.terms.unit_price,
        timeout,
    };
    cx.set_order(&d, Some(o))?;
    cx.put(due_key(timeout, &Timer::OrderTimeout(d)), due_value());
    take_units(cx, s, old, qty);
    Ok(Ok(()))
}

/// A purchase through an admitted intent: by price tag or CPP as the SKU's
/// model says, admitted by the proven cluster, paid by the sender.
fn cluster_buy(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    lock: &mut Lock,
) -> Result<TxStatus, MarketError> {
    let i = t.intent.expect("only admitted intents reach the market");
    // The proof names the seller: a purchase from anyone else's SKU would
    // carry a proof the seller never saw addressed to it.
    ensure!(i.target == s.seller, TxStatus::InvalidArgument);
    let sku = check!(cx.live(s)?);
    match sku.listing.terms.model {
        PriceModel::PriceTag => buy(cx, s, t, lock, i.buy.qty, i.buy.max_unit_price),
        PriceModel::Cpp => order(cx, s, t, lock, i.buy.qty, i.buy.max_unit_price),
        _ => Ok(TxStatus::WrongModel),
    }
}

fn open_channel(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    lock: &mut Lock,
    deposit: u128,
    expiry: u64,
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    let sku = check!(cx.offered(s, PriceModel::Metered, &t.sender)?);
    ensure!(deposit >= sku.listing.terms.unit_price, S::DepositTooSmall);
    ensure!(deposit > 0, S::InvalidArgument);
    ensure!(expiry > cx.env.height, S::ChannelExpired);
    let c = ChannelRecord {
        deposit,
        paid: 0,
        last_sequence: 0,
        expiry,
        challenge_blocks: sku.listing.terms.period_blocks,
    };
    // Closes the block after the last one a claim is accepted in.
    let close = check!(
        expiry
            .checked_add(c.challenge_blocks as u64)
            .and_then(|x| x.checked_add(1))
            .ok_or(S::InvalidArgument)
    );
    let d = t.deal(s);
    ensure!(cx.channel(&d)?.is_none(), S::InvalidArgument);
    cx.hold(lock, deposit)?;
    cx.set_channel(&d, Some(c))?;
    cx.put(due_key(close, &Timer::ChannelClose(d)), due_value());
    Ok(S::Ok)
}

fn claim(
    cx: &mut Cx<'_, '_>,
    t: &TxWork<'_>,
    d: &DealRef,
    amount: u128,
    sequence: u64,
    sig: &[u8; 48],
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    ensure!(t.sender == d.sku.seller, S::NotSeller);
    let Some(c) = cx.channel(d)? else {
        return Ok(S::UnknownDeal);
    };
    ensure!(cx.env.height <= c.claim_until(), S::ChannelExpired);
    ensure!(sequence > c.last_sequence, S::StaleReceipt);
    ensure!(c.paid <= amount && amount <= c.deposit, S::BadReceiptAmount);
    let msg = channel_receipt_message(cx.env.chain_id, d, amount, sequence);
    ensure!(cx.buyer_signed(t, d, &msg, sig)?, S::BadSignature);
    cx.money.release(d.sku.seller, amount - c.paid)?;
    let new = ChannelRecord {
        paid: amount,
        last_sequence: sequence,
        ..c
    };
    cx.set_channel(d, Some(new))?;
    Ok(S::Ok)
}

fn close_channel(cx: &mut Cx<'_, '_>, d: &DealRef) -> Result<(), MarketError> {
    if let Some(c) = cx.channel(d)? {
        cx.money.release(d.buyer, c.held())?;
        cx.set_channel(d, None)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn place_bid(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    lock: &mut Lock,
    qty: u64,
    unit_price: u128,
    window_end: u64,
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    let sku = check!(cx.offered(s, PriceModel::Auction, &t.sender)?);
    ensure!(qty >= 1, S::InvalidArgument);
    ensure!(
        sku.window_end != 0 && window_end == sku.window_end && cx.env.height < window_end,
        S::AuctionClosed
    );
    ensure!(unit_price >= sku.listing.terms.unit_price, S::BelowReserve);
    let held = lock.left;
    cx.hold(lock, held)?;
    let b = BidRecord {
        qty,
        unit_price,
        height: cx.env.height,
        index: t.index,
    };
    cx.objs
        .bids
        .set(&(*s, window_end, t.sender, t.nonce), Some(b))?;
    Ok(S::Ok)
}

/// Clears a window: capacity to the highest bids at one price, the rest of
/// every escrow back; then the next window if capacity is left.
fn close_auction(cx: &mut Cx<'_, '_>, s: &SkuRef, at: u64) -> Result<(), MarketError> {
    let Some(old) = cx.sku(s)? else {
        return Ok(());
    };
    if old.window_end != at {
        // A window that delisting (or a stale entry) already closed.
        return Ok(());
    }
    let taken = cx.take_window_bids(s, at)?;
    let bids: Vec<Bid<(u64, u32)>> = taken
        .iter()
        .map(|(_, b)| Bid {
            key: (b.height, b.index),
            qty: b.qty,
            unit_price: b.unit_price,
        })
        .collect();
    let c = clear_uniform(&bids, old.listing.capacity);
    let mut to_seller: u128 = 0;
    for ((bidder, b), fill) in taken.iter().zip(&c.fills) {
        let paid = match c.price {
            // fill ≤ qty and price ≤ the bid's price: paid ≤ held.
            Some(p) if *fill > 0 => *fill as u128 * p,
            _ => 0,
        };
        assert!(paid <= b.held(), "a winner pays at most its bid");
        to_seller = to_seller.checked_add(paid).ok_or(MarketError::Overflow)?;
        cx.money.release(*bidder, b.held() - paid)?;
    }
    cx.money.release(s.seller, to_seller)?;
    let mut new = SkuRecord {
        window_end: 0,
        ..old
    };
    new.listing.capacity -= c.sold;
    if !new.delisted && new.listing.capacity > 0 {
        // No next window when the height would overflow.
        cx.open_window(s, &mut new);
    }
    cx.save_sku(s, new);
    Ok(())
}

fn order(
    cx: &mut Cx<'_, '_>,
    s: &SkuRef,
    t: &TxWork<'_>,
    lock: &mut Lock,
    qty: u64,
    max_unit_price: u128,
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    let cluster = t.intent.map(|i| i.cluster);
    let (old, cost) = check!(priced(
        cx,
        s,
        PriceModel::Cpp,
        &t.sender,
        cluster,
        qty,
        max_unit_price
    )?);
    check!(open_order(cx, s, t.deal(s), old, qty)?);
    cx.hold(lock, cost)?;
    cx.refund_rest(lock, t.sender);
    Ok(S::Ok)
}

fn confirm(
    cx: &mut Cx<'_, '_>,
    t: &TxWork<'_>,
    d: &DealRef,
    qty: u64,
    attestation: Option<&[u8; 48]>,
) -> Result<TxStatus, MarketError> {
    use TxStatus as S;
    let Some(o) = cx.order(d)?.filter(|o| cx.env.height < o.timeout) else {
        return Ok(S::UnknownDeal);
    };
    let by_buyer = t.sender == d.buyer;
    ensure!(by_buyer || t.sender == d.sku.seller, S::NotParty);
    ensure!(qty >= 1, S::InvalidArgument);
    ensure!(qty <= o.remaining(), S::OverOrder);
    let total = o.confirmed + qty;
    if !by_buyer {
        // The buyer attests the cumulative units used, so an attestation
        // releases once.
        let Some(sig) = attestation else {
            return Ok(S::BadSignature);
        };
        let msg = usage_attestation_message(cx.env.chain_id, d, total);
        ensure!(cx.buyer_signed(t, d, &msg, sig)?, S::BadSignature);
    }
    cx.money.release(d.sku.seller, qty as u128 * o.unit_price)?;
    if total == o.qty {
        cx.set_order(d, None)?;
        cx.del(due_key(o.timeout, &Timer::OrderTimeout(*d)));
    } else {
        let new = OrderRecord {
            confirmed: total,
            ..o
        };
        cx.set_order(d, Some(new))?;
    }
    Ok(S::Ok)
}

/// The unconfirmed rest of an order returns to the buyer and its units to
/// the SKU.
fn time_out_order(cx: &mut Cx<'_, '_>, d: &DealRef) -> Result<(), MarketError> {
    let Some(o) = cx.order(d)? else {
        return Ok(());
    };
    cx.money.release(d.buyer, o.held())?;
    cx.set_order(d, None)?;
    if let Some(old) = cx.sku(&d.sku)? {
        let mut new = old;
        new.listing.capacity = new.listing.capacity.saturating_add(o.remaining());
        cx.save_sku(&d.sku, new);
    }
    Ok(())
}

/// A policy's purchase on the group's SKU, checked against the SKU as the
/// block left it: its cost, or `None` when it no longer fits. The cost
/// leaves the policy's escrow: to the seller (price tag), or into an order
/// (CPP).
fn policy_buy(cx: &mut Cx<'_, '_>, s: &SkuRef, b: &PolicyBuy) -> Result<Option<u128>, MarketError> {
    let owner = b.id.0;
    let Ok((old, cost)) = priced(cx, s, b.model, &owner, None, b.units, b.max_unit_price)? else {
        return Ok(None);
    };
    if cost > b.allowance {
        return Ok(None);
    }
    if b.model == PriceModel::Cpp {
        let d = DealRef {
            sku: *s,
            buyer: owner,
            nonce: POLICY_DEAL_NONCE_BIT | cx.env.height,
        };
        if open_order(cx, s, d, old, b.units)?.is_err() {
            return Ok(None);
        }
    } else {
        cx.money.release(s.seller, cost)?;
        take_units(cx, s, old, b.units);
    }
    Ok(Some(cost))
}

#[cfg(test)]
mod tests {
    use int_engine::storage::{BlockWrite, Head, ObjectWrite, state_writes};
    use std::sync::Arc;

    use super::*;

    const CHAIN: u32 = 3;

    fn state_put(key: Vec<u8>, value: Vec<u8>) -> ObjectWrite {
        ObjectWrite {
            table: ObjectTable::State,
            key,
            value: Some(value),
        }
    }

    fn store_with(objects: &[ObjectWrite]) -> (tempfile::TempDir, Arc<dyn StateView>) {
        let dir = tempfile::tempdir().unwrap();
        let store = int_engine::storage::open(dir.path()).unwrap();
        let state = store
            .snapshot()
            .unwrap()
            .prepare_state(CHAIN, &state_writes(&[], objects))
            .unwrap();
        store
            .commit_block(&BlockWrite {
                chain_id: CHAIN,
                accounts: &[],
                state: &state,
                height: 0,
                block: b"",
                receipts: b"",
                tx_hashes: &[],
                head: Head::default(),
                objects,
            })
            .unwrap();
        (dir, store.snapshot().unwrap())
    }

    fn sku(i: u8) -> SkuRef {
        SkuRef {
            seller: [i; 32],
            seq: i as u64,
        }
    }

    #[test]
    fn due_timers_run_earliest_first_up_to_the_cap() {
        let due: Vec<ObjectWrite> = [(5u64, 1u8), (2, 2), (9, 3), (2, 0), (4, 4)]
            .iter()
            .map(|(at, i)| state_put(due_key(*at, &Timer::AuctionClose(sku(*i))), due_value()))
            .collect();
        let (_dir, store) = store_with(&due);
        let at = |h, cap| {
            due_timers(&*store, CHAIN, h, cap)
                .unwrap()
                .into_iter()
                .map(|(at, t)| (at, t.sku().seq))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(1, 10), vec![]);
        assert_eq!(at(4, 10), vec![(2, 0), (2, 2), (4, 4)]);
        // The cap leaves the latest for the next block.
        assert_eq!(at(9, 2), vec![(2, 0), (2, 2)]);
        assert_eq!(at(9, 0), vec![]);
        assert_eq!(at(u64::MAX, 10).len(), 5);
        // A due key that does not parse is a corrupt store.
        let mut bad = due_key(1, &Timer::AuctionClose(sku(1)));
        bad.pop();
        let (_dir, store) = store_with(&[state_put(bad, due_value())]);
        assert!(matches!(
            due_timers(&*store, CHAIN, 5, 10),
            Err(MarketError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_full_registry_takes_no_more_kinds() {
        let reg = |name: &str| PayloadSpec::RegisterKind { name: name.into() };
        let (p0, p1) = (reg("sonar"), reg("lidar"));
        let txs = [
            TxWork {
                index: 0,
                sender: [1; 32],
                nonce: 0,
                payload: &p0,
                escrow: p0.escrow(),
                intent: None,
            },
            TxWork {
                index: 1,
                sender: [1; 32],
                nonce: 1,
                payload: &p1,
                escrow: p1.escrow(),
                intent: None,
            },
        ];
        let regs: Vec<&TxWork<'_>> = txs.iter().collect();
        // One place left: the first takes it, the second finds it full.
        let (_dir, store) = store_with(&[state_put(
            KINDS_KEY.to_vec(),
            encode_kind_count(KINDS_MAX - 1),
        )]);
        let verdicts = PayloadVerdicts::new(2);
        let mut ov = Overlay::new(&*store, CHAIN);
        let added = register_kinds(&mut ov, &regs, &verdicts).unwrap();
        let writes = ov.into_writes();
        let last = CUSTOM_KIND_FIRST + KINDS_MAX as u16 - 1;
        assert_eq!(added, BTreeSet::from([last]));
        assert_eq!(
            (verdicts.get(0), verdicts.get(1)),
            (Some(&TxStatus::Ok), Some(&TxStatus::KindTaken))
        );
        assert!(writes.contains(&state_put(KINDS_KEY.to_vec(), encode_kind_count(KINDS_MAX))));
        assert!(writes.contains(&state_put(kind_key(last), encode_kind_name("sonar"))));
    }
}
