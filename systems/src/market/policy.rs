//! Standing policies (whitepaper 2.3, 5A): machines that buy basic services
//! with no human in the loop.
//!
//! `SetPolicy` escrows a GAS deposit in a policy, one per (owner, kind): a
//! second replaces the terms and adds its deposit to the balance. Every
//! `interval_blocks` the policy buys `units` of the best matching SKU of
//! its model (price tag or CPP) at most `max_unit_price`, paying out of its
//! balance and at most `budget_per_epoch` per epoch (the token's epoch,
//! [`POLICY_EPOCH_BLOCKS_DEFAULT`] on a chain without one). `CancelPolicy`
//! returns the balance to the owner.
//!
//! # A block's policy pass
//!
//! 1. **Decide** the block's `SetPolicy` and `CancelPolicy`, in block order.
//!    A policy set in this block runs first in the next one.
//! 2. **Plan**, sequentially, at most [`POLICY_RUNS_PER_BLOCK`] due
//!    policies, earliest due first (then owner, kind): each ranks the
//!    indexed SKUs of its kind by its preference (see `Preference`), reads
//!    at most [`CANDIDATES_TRIED_MAX`] of them as the last block committed
//!    them, and takes the first whose model, authority, price, budget and
//!    capacity fit; capacity taken by an earlier policy of this block is
//!    not offered again. Areas of the index are scanned once per block, at
//!    most [`AREA_SCAN_MAX`] entries each.
//! 3. **Buy**, in the chosen SKU's group, after the block's transactions
//!    (see `exec`): the purchase is checked again against the SKU as the
//!    block left it, and is made or missed.
//! 4. **Settle**: a purchase takes its cost from the balance and schedules
//!    the next one `interval_blocks` later; a missed one retries the next
//!    block; a policy with no match, or no balance, tries again after its
//!    interval; one whose epoch budget is spent, at the next epoch (or after
//!    its interval, if later).
//!
//! Planning reads committed state only and runs before the groups, and the
//! groups decide each purchase on their own SKU: the result is the same
//! in parallel and in sequence.
//!
//! # Money
//!
//! The deposit is escrowed (`BlockSupply.escrowed`). A price-tag purchase
//! releases its cost from the policy to the seller; a CPP purchase moves it
//! from the policy into a new order (escrow to escrow), whose id is (SKU,
//! owner, [`POLICY_DEAL_NONCE_BIT`] | height) and which the owner confirms
//! or lets time out like any order.

use std::collections::BTreeMap;

use int_engine::objects::{HotUpdate, Objects, Overlay};
use int_engine::storage::{ObjectTable, StateView};
use int_schemas::wire::{Preference, PriceModel, TxStatus};
use int_schemas::{PayloadSpec, PolicySpec, SkuRef};

use super::MarketError;
use super::exec::{Env, Money, TxWork, kind_known, purchase_cost, scan_due};
use super::records::*;
use crate::token;

/// Most policies planned in one block; later ones stay due.
pub const POLICY_RUNS_PER_BLOCK: usize = 1024;
/// Most index entries one area scan reads (per kind and geohash prefix, per
/// block): a policy in a denser area sees the first this many, by region.
pub const AREA_SCAN_MAX: usize = 4096;
/// Most SKUs one policy reads while choosing.
pub const CANDIDATES_TRIED_MAX: usize = 8;
/// Blocks per budget epoch on a chain without the token plugin.
pub const POLICY_EPOCH_BLOCKS_DEFAULT: u64 = 256;
/// Set in the nonce of the orders policies make (transaction nonces never
/// reach it), so they cannot collide with an owner's own orders.
pub const POLICY_DEAL_NONCE_BIT: u64 = 1 << 63;

/// A purchase a policy makes this block, decided in its SKU's group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolicyBuy {
    pub id: PolicyId,
    pub units: u64,
    pub max_unit_price: u128,
    /// Most GAS it may spend: its balance and what is left of its budget.
    pub allowance: u128,
    pub model: PriceModel,
}

/// One index entry of an area: SKU, region (0x00-padded), price.
type Entry = (SkuRef, Vec<u8>, u128);

/// The block's policy pass.
pub(crate) struct Policies<'e, 'a> {
    env: &'e Env<'a>,
    /// The policies the block touches (entities of the hot set, or read
    /// on a miss).
    objs: Objects<'a, PolicyRecord>,
    /// Due entries that no longer match their policy.
    stale: Vec<Vec<u8>>,
    /// Policies planned to buy this block (settled by [`Policies::settle`]).
    planned: Vec<PolicyId>,
    /// GAS the pass's transactions credit and escrow.
    pub money: Money,
}

impl<'e, 'a> Policies<'e, 'a> {
    pub fn new(env: &'e Env<'a>, objs: Objects<'a, PolicyRecord>) -> Self {
        Self {
            env,
            objs,
            stale: Vec::new(),
            planned: Vec::new(),
            money: Money::default(),
        }
    }

    fn get(&mut self, id: &PolicyId) -> Result<Option<PolicyRecord>, MarketError> {
        self.objs.get(id)
    }

    /// Saves a policy.
    fn save(&mut self, id: &PolicyId, r: Option<PolicyRecord>) -> Result<(), MarketError> {
        self.objs.set(id, r)
    }

    /// Decides one `SetPolicy` or `CancelPolicy` and disposes of its lock.
    pub fn decide(&mut self, t: &TxWork<'_>) -> Result<(), MarketError> {
        let lock = t.escrow.gas;
        let status = match t.payload {
            PayloadSpec::SetPolicy(p) => self.set(t, p)?,
            PayloadSpec::CancelPolicy { kind } => self.cancel(t, *kind)?,
            _ => unreachable!("only policy payloads reach the policy pass"),
        };
        if status != TxStatus::Ok {
            self.money.credit(t.sender, lock);
        }
        self.env.verdicts.set(t.index, status);
        Ok(())
    }

    fn set(&mut self, t: &TxWork<'_>, p: &PolicySpec) -> Result<TxStatus, MarketError> {
        use TxStatus as S;
        if !policy_model(p.model) {
            return Ok(S::WrongModel);
        }
        if !kind_known(self.env, p.kind)?
            || p.units == 0
            || p.interval_blocks == 0
            || p.budget_per_epoch == 0
        {
            return Ok(S::InvalidArgument);
        }
        let id = (t.sender, p.kind);
        let old = self.get(&id)?;
        if old.is_none() && p.deposit == 0 {
            // A new policy with nothing to spend.
            return Ok(S::InvalidArgument);
        }
        let Some(balance) = old
            .as_ref()
            .map_or(Some(p.deposit), |o| o.balance.checked_add(p.deposit))
        else {
            return Ok(S::InvalidArgument);
        };
        let Some(next_due) = self.env.height.checked_add(1) else {
            return Ok(S::InvalidArgument);
        };
        self.money.escrow(p.deposit)?;
        let (epoch, spent_in_epoch, buys, spent_total) = old.as_ref().map_or((0, 0, 0, 0), |o| {
            (o.epoch, o.spent_in_epoch, o.buys, o.spent_total)
        });
        self.save(
            &id,
            Some(PolicyRecord {
                max_unit_price: p.max_unit_price,
                budget_per_epoch: p.budget_per_epoch,
                region: p.region.clone(),
                preference: p.preference,
                model: p.model,
                units: p.units,
                interval_blocks: p.interval_blocks,
                balance,
                epoch,
                spent_in_epoch,
                next_due,
                buys,
                spent_total,
            }),
        )?;
        Ok(S::Ok)
    }

    fn cancel(&mut self, t: &TxWork<'_>, kind: u16) -> Result<TxStatus, MarketError> {
        let id = (t.sender, kind);
        let Some(old) = self.get(&id)? else {
            return Ok(TxStatus::UnknownPolicy);
        };
        self.money.release(t.sender, old.balance)?;
        self.save(&id, None)?;
        Ok(TxStatus::Ok)
    }

    /// Chooses this block's purchases among the `due` policies (see the
    /// module documentation).
    pub fn plan(
        &mut self,
        due: Vec<(u64, PolicyId)>,
    ) -> Result<Vec<(SkuRef, PolicyBuy)>, MarketError> {
        let env = self.env;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let epoch_blocks = token::load_config(env.store, env.chain_id)
            .map_err(|e| corrupt("tok/config", e))?
            .map_or(POLICY_EPOCH_BLOCKS_DEFAULT, |c| c.epoch_blocks)
            .max(1);
        let epoch = env.height / epoch_blocks;
        let next_epoch = (epoch + 1).saturating_mul(epoch_blocks);
        let mut search = Search {
            env,
            areas: BTreeMap::new(),
            skus: BTreeMap::new(),
            taken: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for (at, id) in due {
            let Some(mut r) = self.get(&id)?.filter(|r| r.next_due == at) else {
                // Cancelled, or set again, in this block (or a stale entry).
                self.stale.push(policy_due_key(at, &id));
                continue;
            };
            if r.epoch != epoch {
                r.epoch = epoch;
                r.spent_in_epoch = 0;
            }
            let budget_left = r.budget_per_epoch.saturating_sub(r.spent_in_epoch);
            let allowance = r.balance.min(budget_left);
            let later = env.height.saturating_add(r.interval_blocks as u64);
            let chosen = if allowance == 0 {
                None
            } else {
                search.choose(&id, &r, allowance)?
            };
            match chosen {
                Some(s) => {
                    out.push((
                        s,
                        PolicyBuy {
                            id,
                            units: r.units,
                            max_unit_price: r.max_unit_price,
                            allowance,
                            model: r.model,
                        },
                    ));
                    self.planned.push(id);
                }
                None => {
                    r.next_due = if budget_left == 0 {
                        later.max(next_epoch)
                    } else {
                        later
                    };
                }
            }
            self.save(&id, Some(r))?;
        }
        Ok(out)
    }

    /// Applies the groups' verdicts on the planned purchases: `Some(cost)`
    /// made, `None` missed.
    pub fn settle(
        &mut self,
        results: &BTreeMap<PolicyId, Option<u128>>,
    ) -> Result<(), MarketError> {
        let height = self.env.height;
        for id in std::mem::take(&mut self.planned) {
            let mut r = self
                .get(&id)?
                .expect("a planned policy exists until settled");
            // Every planned purchase reaches its SKU's group.
            match results.get(&id).copied().flatten() {
                Some(cost) => {
                    assert!(
                        cost <= r.balance
                            && cost <= r.budget_per_epoch.saturating_sub(r.spent_in_epoch),
                        "a purchase spends within its allowance"
                    );
                    r.balance -= cost;
                    r.spent_in_epoch += cost;
                    r.spent_total = r.spent_total.saturating_add(cost);
                    r.buys = r.buys.saturating_add(1);
                    r.next_due = height.saturating_add(r.interval_blocks as u64);
                }
                None => r.next_due = height.saturating_add(1),
            }
            self.save(&id, Some(r))?;
        }
        Ok(())
    }

    /// Writes the pass's changes to `ov`: each changed policy once, its
    /// due entry moved. Returns what the hot set keeps of the policies.
    pub fn finish(self, ov: &mut Overlay<'_>) -> HotUpdate<PolicyRecord> {
        for k in self.stale {
            ov.del(ObjectTable::State, k);
        }
        for (id, committed, now) in self.objs.changes() {
            let (was, due) = (committed.map(|r| r.next_due), now.map(|r| r.next_due));
            if was != due {
                if let Some(d) = was {
                    ov.del(ObjectTable::State, policy_due_key(d, id));
                }
                if let Some(d) = due {
                    ov.put(ObjectTable::State, policy_due_key(d, id), due_value());
                }
            }
        }
        self.objs.finish(ov)
    }
}

/// The policies due at or before `height`, earliest first, at most
/// [`POLICY_RUNS_PER_BLOCK`].
pub(crate) fn due_policies(
    store: &dyn StateView,
    chain_id: u32,
    height: u64,
) -> Result<Vec<(u64, PolicyId)>, MarketError> {
    scan_due(
        store,
        chain_id,
        POLICY_DUE_PREFIX,
        height,
        POLICY_RUNS_PER_BLOCK,
        parse_policy_due_key,
    )
}

/// The plan's reads of the committed index and SKUs, shared by the block's
/// policies.
struct Search<'e, 'a> {
    env: &'e Env<'a>,
    /// Index entries by (kind, geohash prefix), in key order.
    areas: BTreeMap<(u16, Vec<u8>), Vec<Entry>>,
    skus: BTreeMap<SkuRef, Option<SkuRecord>>,
    /// Units earlier policies of this block took, by SKU.
    taken: BTreeMap<SkuRef, u64>,
}

impl Search<'_, '_> {
    fn area(&mut self, kind: u16, prefix: &[u8]) -> Result<&[Entry], MarketError> {
        let key = (kind, prefix.to_vec());
        if !self.areas.contains_key(&key) {
            let mut p = INDEX_PREFIX.to_vec();
            p.extend_from_slice(&kind.to_be_bytes());
            p.extend_from_slice(prefix);
            let mut v = Vec::new();
            self.env
                .store
                .scan_prefix(self.env.chain_id, ObjectTable::Derived, &p, |k, _| {
                    let (s, region, price) = parse_index_key(k)?;
                    v.push((s, region.to_vec(), price));
                    Ok::<_, MarketError>(v.len() < AREA_SCAN_MAX)
                })?;
            self.areas.insert(key.clone(), v);
        }
        Ok(&self.areas[&key])
    }

    /// The SKUs a policy considers, best first, at most
    /// [`CANDIDATES_TRIED_MAX`].
    fn ranked(&mut self, kind: u16, r: &PolicyRecord) -> Result<Vec<SkuRef>, MarketError> {
        let region = r.region.as_bytes();
        // Cheapest: the SKUs of the area. Nearest: outward, the SKUs
        // sharing exactly `k` leading characters with the position, for k
        // from all of them down to none. Each ring by price.
        let innermost = if r.preference == Preference::Nearest {
            0
        } else {
            region.len()
        };
        let mut out = Vec::new();
        for k in (innermost..=region.len()).rev() {
            let mut ring: Vec<(u128, SkuRef)> = self
                .area(kind, &region[..k])?
                .iter()
                .filter(|(_, reg, p)| {
                    *p <= r.max_unit_price && (k == region.len() || reg[k] != region[k])
                })
                .map(|(s, _, p)| (*p, *s))
                .collect();
            ring.sort_unstable();
            out.extend(ring.into_iter().map(|(_, s)| s));
            if out.len() >= CANDIDATES_TRIED_MAX {
                break;
            }
        }
        out.truncate(CANDIDATES_TRIED_MAX);
        Ok(out)
    }

    /// The first ranked SKU that fits the policy, its units reserved.
    fn choose(
        &mut self,
        id: &PolicyId,
        r: &PolicyRecord,
        allowance: u128,
    ) -> Result<Option<SkuRef>, MarketError> {
        for s in self.ranked(id.1, r)? {
            if !self.skus.contains_key(&s) {
                let rec = stored(
                    self.env.store,
                    self.env.chain_id,
                    &sku_key(&s),
                    SkuRecord::decode,
                )?;
                self.skus.insert(s, rec);
            }
            let Some(sku) = self.skus[&s].as_ref() else {
                continue;
            };
            let left = sku
                .listing
                .capacity
                .saturating_sub(self.taken.get(&s).copied().unwrap_or(0));
            let fits = !sku.delisted
                && purchase_cost(sku, left, r.model, &id.0, None, r.units, r.max_unit_price)
                    .is_ok_and(|c| c <= allowance);
            if fits {
                *self.taken.entry(s).or_default() += r.units;
                return Ok(Some(s));
            }
        }
        Ok(None)
    }
}
