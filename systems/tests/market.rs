//! The market plugin on chain: listing, discovery, and the four price
//! models, each with its successes and its refusals (and their refunds).
//! After every block the accounts plus the market's escrow objects equal
//! the genesis totals to the unit, and the chain's escrow total equals the
//! escrow objects ([`M::block`]).
//!
//! A credit reaches an account whatever the block does with it
//! ([`credits_reach_hot_accounts_the_block_does_not_touch`]): sellers are
//! paid, and timers refund buyers, in blocks they send nothing in.

mod common;

use std::collections::HashMap;

use common::*;
use int_engine::crypto::bls::SecretKey;
use int_engine::world::Plugin;
use int_schemas::wire::{Authority, Preference, PriceModel, TxStatus, Unit};
use int_schemas::{AccountId, DealRef, PayloadSpec, PolicySpec, SkuListing, SkuRef, Terms};
use int_systems::LedgerPlugin;
use int_systems::market::records::PolicyRecord;
use int_systems::market::{
    self, MarketPlugin, POLICY_DEAL_NONCE_BIT, SkuQuery, SkuView, escrow_held, kind_by_name,
    kind_name, receipt,
};
use int_systems::token::{self, TokenConfig};
use proptest::prelude::*;

const FEE: u128 = 1;
const GAS0: u128 = 1_000_000;
const INT0: u128 = 1_000;
/// GAS of the poor account.
const POOR_GAS: u128 = 50;

fn seller(i: u32) -> SecretKey {
    key(300 + i)
}

fn buyer(i: u32) -> SecretKey {
    key(400 + i)
}

fn poor() -> SecretKey {
    key(500)
}

/// Every funded account, sellers first.
fn everyone() -> Vec<SecretKey> {
    (0..3)
        .map(seller)
        .chain((0..3).map(buyer))
        .chain([poor()])
        .collect()
}

fn with_market() -> Vec<Box<dyn Plugin>> {
    vec![Box::new(LedgerPlugin), Box::new(MarketPlugin)]
}

fn alloc() -> Vec<(AccountId, int_engine::storage::AccountRecord)> {
    (0..3)
        .map(seller)
        .chain((0..3).map(buyer))
        .map(|sk| (id(&sk), registered(&sk, INT0, GAS0)))
        .chain([(id(&poor()), registered(&poor(), INT0, POOR_GAS))])
        .collect()
}

fn listing(model: PriceModel, period: u32, price: u128, capacity: u64) -> SkuListing {
    SkuListing {
        kind: 1,
        unit: Unit::Gb,
        terms: Terms {
            model,
            period_blocks: period,
            unit_price: price,
        },
        capacity,
        region: "wx4g0".into(),
        authority: Authority::Open,
        allow: vec![],
        clusters: vec![],
        metadata_hash: [7; 32],
    }
}

/// A market chain and the next nonce of each account.
struct M {
    net: Net,
    nonces: HashMap<AccountId, u64>,
    genesis: (u128, u128),
}

impl M {
    fn new() -> Self {
        Self::with(config(true, 1024))
    }

    fn with(cfg: int_engine::chain::ChainConfig) -> Self {
        Self::with_objects(cfg, &[])
    }

    /// A market chain with plugin objects at genesis (a token
    /// configuration, for its epochs).
    fn with_objects(
        cfg: int_engine::chain::ChainConfig,
        objects: &[int_engine::storage::ObjectWrite],
    ) -> Self {
        let net = Net::with_plugins(&alloc(), cfg, with_market, objects);
        let genesis = totals(&*net.view());
        Self {
            net,
            nonces: HashMap::new(),
            genesis,
        }
    }

    /// A signed transaction of `sk` with its next nonce, and that nonce.
    fn tx(&mut self, sk: &SecretKey, p: PayloadSpec) -> (Vec<u8>, u64) {
        let n = self.nonces.entry(id(sk)).or_insert(0);
        let nonce = *n;
        *n += 1;
        (signed(sk, nonce, FEE, p), nonce)
    }

    /// GAS `sk` paid in fees so far.
    fn fees(&self, sk: &SecretKey) -> u128 {
        self.nonces.get(&id(sk)).copied().unwrap_or(0) as u128 * FEE
    }

    /// A block of `txs`; checks conservation after it.
    fn block(&mut self, txs: Vec<Vec<u8>>) -> Vec<TxStatus> {
        let st = self.net.block_ok(txs);
        self.check();
        st
    }

    /// One transaction as a block; its status.
    fn send(&mut self, sk: &SecretKey, p: PayloadSpec) -> TxStatus {
        let (tx, _) = self.tx(sk, p);
        self.block(vec![tx])[0]
    }

    /// Lists a SKU in its own block.
    fn list(&mut self, sk: &SecretKey, l: SkuListing) -> SkuRef {
        let (tx, nonce) = self.tx(sk, PayloadSpec::ListSku(Box::new(l)));
        assert_eq!(self.block(vec![tx]), vec![TxStatus::Ok]);
        SkuRef {
            seller: id(sk),
            seq: nonce,
        }
    }

    /// Empty blocks up to height `h` (the next block is `h + 1`).
    fn idle_until(&mut self, h: u64) {
        while self.height() < h {
            self.block(vec![]);
        }
    }

    fn height(&self) -> u64 {
        self.net.head().height
    }

    fn gas(&self, sk: &SecretKey) -> u128 {
        self.net.account(&id(sk)).expect("account").gas
    }

    fn sku(&self, s: &SkuRef) -> SkuView {
        market::sku(&*self.net.view(), CHAIN, s)
            .expect("read sku")
            .expect("sku exists")
    }

    fn escrow(&self) -> u128 {
        escrow_held(&*self.net.view(), CHAIN).expect("escrow").gas
    }

    /// Accounts plus escrow objects equal genesis, and the chain's escrow
    /// total equals the objects.
    fn check(&mut self) {
        let (int, gas) = totals(&*self.net.view());
        let held = self.escrow();
        assert_eq!((int, gas + held), self.genesis, "value not conserved");
        let s = self.net.chain().supply().expect("supply");
        assert_eq!(s.gas_escrow, held, "escrow objects and supply differ");
        assert_eq!(s.gas_total, self.genesis.1);
        assert_eq!(s.int_escrow, 0);
    }

    fn query(&self, q: SkuQuery) -> Vec<(SkuRef, u128)> {
        market::query(&*self.net.view(), CHAIN, &q)
            .expect("query")
            .into_iter()
            .map(|v| (v.id, v.listing.terms.unit_price))
            .collect()
    }
}

fn buy(sku: SkuRef, qty: u64, max_unit_price: u128) -> PayloadSpec {
    PayloadSpec::Buy {
        sku,
        qty,
        max_unit_price,
    }
}

fn cpp_order(sku: SkuRef, qty: u64, max_unit_price: u128) -> PayloadSpec {
    PayloadSpec::Order {
        sku,
        qty,
        max_unit_price,
    }
}

fn deal(sku: SkuRef, b: &SecretKey, nonce: u64) -> DealRef {
    DealRef {
        sku,
        buyer: id(b),
        nonce,
    }
}

/// A policy for kind 1: `units` every `interval` blocks at most `max` a
/// unit, `budget` per epoch, `deposit` added.
#[allow(clippy::too_many_arguments)]
fn policy(
    preference: Preference,
    model: PriceModel,
    region: &str,
    max: u128,
    units: u64,
    interval: u32,
    budget: u128,
    deposit: u128,
) -> PayloadSpec {
    PayloadSpec::SetPolicy(Box::new(PolicySpec {
        kind: 1,
        max_unit_price: max,
        budget_per_epoch: budget,
        region: region.into(),
        preference,
        model,
        units,
        interval_blocks: interval,
        deposit,
    }))
}

fn listed_at(model: PriceModel, price: u128, capacity: u64, region: &str) -> SkuListing {
    SkuListing {
        region: region.into(),
        ..listing(model, 5, price, capacity)
    }
}

impl M {
    fn policy(&self, sk: &SecretKey) -> Option<PolicyRecord> {
        market::policy(&*self.net.view(), CHAIN, &id(sk), 1)
            .expect("read policy")
            .map(|v| v.record)
    }
}

// ---------------------------------------------------------------------------
// Price tag, SKUs, kinds, discovery.
// ---------------------------------------------------------------------------

#[test]
fn price_tag_pays_the_seller_and_refunds_the_rest() {
    let mut m = M::new();
    let (s, b) = (seller(0), buyer(0));
    let sku = m.list(&s, listing(PriceModel::PriceTag, 0, 7, 10));
    assert_eq!(m.sku(&sku).listing.capacity, 10);
    // 3 units at 7, the buyer's bound 10: 21 to the seller, 9 back.
    assert_eq!(m.send(&b, buy(sku, 3, 10)), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 21);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 21);
    assert_eq!(m.sku(&sku).listing.capacity, 7);
    assert_eq!(m.escrow(), 0);

    // Refusals, each refunded in full (only the fee stays taken).
    let other = m.list(&s, listing(PriceModel::Cpp, 5, 7, 10));
    let missing = SkuRef {
        seller: id(&s),
        seq: 99,
    };
    let txs = vec![
        m.tx(&b, buy(sku, 8, 10)).0,
        m.tx(&b, buy(sku, 3, 6)).0,
        m.tx(&b, buy(sku, 0, 10)).0,
        m.tx(&b, buy(missing, 1, 10)).0,
        m.tx(&b, buy(other, 1, 10)).0,
    ];
    let st = m.block(txs);
    assert_eq!(
        st,
        vec![
            TxStatus::OverCapacity,
            TxStatus::PriceAboveMax,
            TxStatus::InvalidArgument,
            TxStatus::UnknownSku,
            TxStatus::WrongModel,
        ]
    );
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 21);

    // Insufficient funds: the Debit stage refuses the lock (7 × 10 > 49).
    let p = poor();
    assert_eq!(m.send(&p, buy(sku, 7, 10)), TxStatus::InsufficientBalance);
    assert_eq!(m.gas(&p), POOR_GAS - FEE);

    // Two buyers in one block: block order decides; the second finds 1 left.
    let b1 = buyer(1);
    let txs = vec![m.tx(&b, buy(sku, 6, 7)).0, m.tx(&b1, buy(sku, 2, 7)).0];
    assert_eq!(m.block(txs), vec![TxStatus::Ok, TxStatus::OverCapacity]);
    assert_eq!(m.sku(&sku).listing.capacity, 1);
    assert_eq!(m.gas(&b1), GAS0 - m.fees(&b1));
    assert_eq!(m.send(&b1, buy(sku, 1, 7)), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 70);
    // Sold out: gone from discovery, still readable.
    assert_eq!(m.sku(&sku).listing.capacity, 0);
    let found = m.query(SkuQuery {
        kind: Some(1),
        limit: 10,
        ..Default::default()
    });
    assert_eq!(found, vec![(other, 7)]);
}

#[test]
fn updates_and_delisting_are_the_sellers_own() {
    let mut m = M::new();
    let (s, b) = (seller(0), buyer(0));
    let sku = m.list(&s, listing(PriceModel::PriceTag, 0, 5, 10));
    let update = |price, cap| PayloadSpec::UpdateSku {
        sku,
        unit_price: price,
        capacity: cap,
        metadata_hash: [8; 32],
    };
    assert_eq!(m.send(&b, update(1, 100)), TxStatus::NotSeller);
    assert_eq!(m.send(&s, update(9, 20)), TxStatus::Ok);
    let v = m.sku(&sku);
    assert_eq!(
        (
            v.listing.terms.unit_price,
            v.listing.capacity,
            v.listing.metadata_hash
        ),
        (9, 20, [8; 32])
    );
    assert_eq!(m.send(&b, buy(sku, 1, 8)), TxStatus::PriceAboveMax);
    let q = SkuQuery {
        kind: Some(1),
        near: "wx4g".into(),
        max_price: None,
        limit: 5,
    };
    assert_eq!(m.query(q.clone()), vec![(sku, 9)]);

    let delist = PayloadSpec::DelistSku { sku };
    assert_eq!(m.send(&b, delist.clone()), TxStatus::NotSeller);
    assert_eq!(m.send(&s, delist.clone()), TxStatus::Ok);
    assert!(m.sku(&sku).delisted);
    assert_eq!(m.query(q), vec![]);
    assert_eq!(m.send(&b, buy(sku, 1, 9)), TxStatus::UnknownSku);
    assert_eq!(m.send(&s, update(9, 20)), TxStatus::UnknownSku);
    assert_eq!(m.send(&s, delist), TxStatus::UnknownSku);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b));

    // Listings that cannot work.
    let bad = [
        listing(PriceModel::PriceTag, 0, 5, 0),
        listing(PriceModel::Cpp, 0, 5, 3),
        listing(PriceModel::Metered, 0, 5, 3),
        listing(PriceModel::Auction, 0, 5, 3),
        SkuListing {
            kind: 6,
            ..listing(PriceModel::PriceTag, 0, 5, 3)
        },
        SkuListing {
            kind: 300,
            ..listing(PriceModel::PriceTag, 0, 5, 3)
        },
    ];
    let txs = bad
        .into_iter()
        .map(|l| m.tx(&s, PayloadSpec::ListSku(Box::new(l))).0)
        .collect();
    assert_eq!(m.block(txs), vec![TxStatus::InvalidArgument; 6]);
}

#[test]
fn allowlists_admit_only_their_accounts_and_clusters_no_plain_buyer() {
    let mut m = M::new();
    let s = seller(0);
    let (b0, b1) = (buyer(0), buyer(1));
    let allow = m.list(
        &s,
        SkuListing {
            authority: Authority::Allowlist,
            allow: vec![id(&b0)],
            ..listing(PriceModel::PriceTag, 0, 4, 10)
        },
    );
    let clusters = m.list(
        &s,
        SkuListing {
            authority: Authority::Clusters,
            clusters: vec![1, 2],
            ..listing(PriceModel::Cpp, 3, 4, 10)
        },
    );
    let txs = vec![
        m.tx(&b1, buy(allow, 1, 4)).0,
        m.tx(&b0, buy(allow, 2, 4)).0,
        m.tx(&b0, cpp_order(clusters, 1, 4)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![TxStatus::Unauthorized, TxStatus::Ok, TxStatus::Unauthorized]
    );
    assert_eq!(m.gas(&b1), GAS0 - m.fees(&b1));
    assert_eq!(m.gas(&b0), GAS0 - m.fees(&b0) - 8);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 8);
}

#[test]
fn custom_kinds_are_registered_once_and_listable() {
    let mut m = M::new();
    let (s0, s1) = (seller(0), seller(1));
    let reg = |n: &str| PayloadSpec::RegisterKind { name: n.into() };
    // The registration runs before the block's listings.
    let (l, lnonce) = m.tx(
        &s1,
        PayloadSpec::ListSku(Box::new(SkuListing {
            kind: 256,
            ..listing(PriceModel::PriceTag, 0, 3, 5)
        })),
    );
    let txs = vec![
        m.tx(&s0, reg("lidar")).0,
        l,
        m.tx(&s1, reg("lidar")).0,
        m.tx(&s1, reg("power")).0,
        m.tx(&s0, reg("radar")).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::KindTaken,
            TxStatus::KindTaken,
            TxStatus::Ok,
        ]
    );
    let st = m.net.view();
    assert_eq!(
        kind_name(&*st, CHAIN, 256).unwrap().as_deref(),
        Some("lidar")
    );
    assert_eq!(
        kind_name(&*st, CHAIN, 257).unwrap().as_deref(),
        Some("radar")
    );
    assert_eq!(kind_name(&*st, CHAIN, 258).unwrap(), None);
    assert_eq!(
        kind_name(&*st, CHAIN, 1).unwrap().as_deref(),
        Some("network")
    );
    assert_eq!(kind_name(&*st, CHAIN, 6).unwrap(), None);
    assert_eq!(kind_by_name(&*st, CHAIN, "radar").unwrap(), Some(257));
    assert_eq!(kind_by_name(&*st, CHAIN, "storage").unwrap(), Some(4));
    assert_eq!(kind_by_name(&*st, CHAIN, "sonar").unwrap(), None);
    assert_eq!(m.send(&s0, reg("radar")), TxStatus::KindTaken);
    let sku = SkuRef {
        seller: id(&s1),
        seq: lnonce,
    };
    assert_eq!(m.sku(&sku).listing.kind, 256);
    let lidar = m.query(SkuQuery {
        kind: Some(256),
        limit: 10,
        ..Default::default()
    });
    assert_eq!(lidar, vec![(sku, 3)]);
    // 258 is not registered.
    let st = m.send(
        &s0,
        PayloadSpec::ListSku(Box::new(SkuListing {
            kind: 258,
            ..listing(PriceModel::PriceTag, 0, 3, 5)
        })),
    );
    assert_eq!(st, TxStatus::InvalidArgument);
}

#[test]
fn discovery_filters_by_kind_region_and_price_cheapest_first() {
    let mut m = M::new();
    let (s0, s1) = (seller(0), seller(1));
    let at = |kind, region: &str, price| SkuListing {
        kind,
        region: region.into(),
        ..listing(PriceModel::PriceTag, 0, price, 10)
    };
    let a = m.list(&s0, at(1, "wx4g0", 5));
    let b = m.list(&s0, at(1, "wx4g1", 3));
    let c = m.list(&s1, at(1, "wx5b", 4));
    let d = m.list(&s1, at(2, "wx4g0", 1));
    let e = m.list(&s1, at(1, "u33d", 2));
    let f = m.list(&s0, at(1, "wx4gz", 3));
    let gone = m.list(&s0, at(1, "wx4g2", 1));
    assert_eq!(
        m.send(&s0, PayloadSpec::DelistSku { sku: gone }),
        TxStatus::Ok
    );
    let q = |kind, near: &str, max_price, limit| SkuQuery {
        kind,
        near: near.into(),
        max_price,
        limit,
    };
    // Equal prices: the lower id first.
    let (b_, f_) = if b < f { (b, f) } else { (f, b) };
    assert_eq!(
        m.query(q(Some(1), "wx4g", None, 10)),
        vec![(b_, 3), (f_, 3), (a, 5)]
    );
    assert_eq!(
        m.query(q(Some(1), "", Some(4), 10)),
        vec![(e, 2), (b_, 3), (f_, 3), (c, 4)]
    );
    assert_eq!(m.query(q(Some(1), "", None, 2)), vec![(e, 2), (b_, 3)]);
    assert_eq!(
        m.query(q(None, "wx4g", None, 10)),
        vec![(d, 1), (b_, 3), (f_, 3), (a, 5)]
    );
    assert_eq!(m.query(q(Some(2), "wx5", None, 10)), vec![]);
    assert_eq!(m.query(q(None, "WX4G", None, 10)), vec![]);
    assert_eq!(m.query(q(None, "", None, 0)), vec![]);
    // A price change moves the SKU in the index.
    let up = PayloadSpec::UpdateSku {
        sku: e,
        unit_price: 9,
        capacity: 10,
        metadata_hash: [0; 32],
    };
    assert_eq!(m.send(&s1, up), TxStatus::Ok);
    assert_eq!(m.query(q(Some(1), "u", None, 10)), vec![(e, 9)]);
    assert_eq!(m.query(q(Some(1), "", Some(2), 10)), vec![]);
}

/// Several changes of one SKU in one block leave exactly one index entry,
/// at the last price (a stale entry would show the SKU twice).
#[test]
fn a_block_of_changes_to_one_sku_leaves_one_index_entry() {
    let mut m = M::new();
    let (s, b) = (seller(0), buyer(0));
    let sku = m.list(&s, listing(PriceModel::PriceTag, 0, 5, 10));
    let update = |price, cap| PayloadSpec::UpdateSku {
        sku,
        unit_price: price,
        capacity: cap,
        metadata_hash: [0; 32],
    };
    let all = || SkuQuery {
        limit: 10,
        ..Default::default()
    };
    // Price up, sold out, back at another price, one unit bought.
    let txs = vec![
        m.tx(&s, update(9, 10)).0,
        m.tx(&s, update(9, 0)).0,
        m.tx(&s, update(6, 4)).0,
        m.tx(&b, buy(sku, 1, 6)).0,
    ];
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 4]);
    assert_eq!(m.query(all()), vec![(sku, 6)]);
    assert_eq!(m.sku(&sku).listing.capacity, 3);
    // Sold out and back in one block at the committed price.
    let txs = vec![m.tx(&b, buy(sku, 3, 6)).0, m.tx(&s, update(6, 2)).0];
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 2]);
    assert_eq!(m.query(all()), vec![(sku, 6)]);
    // Bought out and delisted in one block: gone.
    let txs = vec![
        m.tx(&b, buy(sku, 2, 6)).0,
        m.tx(&s, PayloadSpec::DelistSku { sku }).0,
    ];
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 2]);
    assert_eq!(m.query(all()), vec![]);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 36);
}

// ---------------------------------------------------------------------------
// CPP.
// ---------------------------------------------------------------------------

#[test]
fn cpp_releases_on_confirmed_use_and_refunds_on_timeout() {
    let mut m = M::new();
    let (s, b, x) = (seller(0), buyer(0), buyer(1));
    let sku = m.list(&s, listing(PriceModel::Cpp, 10, 5, 10));
    // 4 units at 5 under a bound of 6: 20 escrowed, 4 back.
    let (tx, n) = m.tx(&b, cpp_order(sku, 4, 6));
    let opened = m.height() + 1;
    assert_eq!(m.block(vec![tx]), vec![TxStatus::Ok]);
    let d = deal(sku, &b, n);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 20);
    assert_eq!(m.escrow(), 20);
    assert_eq!(m.sku(&sku).listing.capacity, 6);
    let o = market::order(&*m.net.view(), CHAIN, &d).unwrap().unwrap();
    assert_eq!((o.qty, o.confirmed, o.unit_price), (4, 0, 5));
    assert_eq!(o.timeout, opened + 10);

    let confirm = |qty, attestation| PayloadSpec::ConfirmUse {
        order: d,
        qty,
        attestation,
    };
    let att = |total| Some(receipt::sign_usage(&b, CHAIN, &d, total));
    let txs = vec![
        // Someone else.
        m.tx(&x, confirm(1, None)).0,
        // Someone else, even with the buyer's attestation.
        m.tx(&x, confirm(1, att(1))).0,
        // The buyer: 1 unit.
        m.tx(&b, confirm(1, None)).0,
        // The seller without an attestation.
        m.tx(&s, confirm(2, None)).0,
        // The seller with one over the wrong total (2 is not 1 + 2).
        m.tx(&s, confirm(2, att(2))).0,
        // The seller with the buyer's attestation of 3 used in total.
        m.tx(&s, confirm(2, att(3))).0,
        // The same attestation again: 3 is no longer confirmed + 2.
        m.tx(&s, confirm(2, att(3))).0,
        // More than is left.
        m.tx(&b, confirm(2, None)).0,
        m.tx(&b, confirm(0, None)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::NotParty,
            TxStatus::NotParty,
            TxStatus::Ok,
            TxStatus::BadSignature,
            TxStatus::BadSignature,
            TxStatus::Ok,
            TxStatus::OverOrder,
            TxStatus::OverOrder,
            TxStatus::InvalidArgument,
        ]
    );
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 15);
    assert_eq!(m.escrow(), 5);
    // The last unit: the order is settled and deleted, with its timer.
    assert_eq!(m.send(&b, confirm(1, None)), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 20);
    assert_eq!(market::order(&*m.net.view(), CHAIN, &d).unwrap(), None);
    assert_eq!(m.escrow(), 0);
    assert_eq!(m.send(&b, confirm(1, None)), TxStatus::UnknownDeal);

    // A second order times out with 2 of 3 units unconfirmed.
    let (tx, n) = m.tx(&b, cpp_order(sku, 3, 5));
    let opened = m.height() + 1;
    assert_eq!(m.block(vec![tx]), vec![TxStatus::Ok]);
    let d2 = deal(sku, &b, n);
    assert_eq!(m.sku(&sku).listing.capacity, 3);
    let c2 = PayloadSpec::ConfirmUse {
        order: d2,
        qty: 1,
        attestation: None,
    };
    assert_eq!(m.send(&b, c2.clone()), TxStatus::Ok);
    let paid = GAS0 - m.fees(&b) - 20 - 5;
    assert_eq!(m.gas(&b), paid - 10);
    m.idle_until(opened + 9);
    assert!(market::order(&*m.net.view(), CHAIN, &d2).unwrap().is_some());
    // The timeout block: the timer runs before the block's transactions.
    assert_eq!(m.send(&b, c2), TxStatus::UnknownDeal);
    assert_eq!(m.height(), opened + 10);
    assert_eq!(market::order(&*m.net.view(), CHAIN, &d2).unwrap(), None);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 25);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 25);
    assert_eq!(m.sku(&sku).listing.capacity, 5);
    assert_eq!(m.escrow(), 0);

    // Refusals of orders.
    let p = poor();
    let txs = vec![
        m.tx(&b, cpp_order(sku, 6, 5)).0,
        m.tx(&b, cpp_order(sku, 1, 4)).0,
        m.tx(&p, cpp_order(sku, 5, 10)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::OverCapacity,
            TxStatus::PriceAboveMax,
            TxStatus::InsufficientBalance,
        ]
    );
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 25);
}

/// A credit to an account hot from an earlier block that this block names
/// nowhere is written with the block (and survives a restart).
#[test]
fn credits_reach_hot_accounts_the_block_does_not_touch() {
    let mut m = M::new();
    let (s, b) = (seller(0), buyer(0));
    let sku = m.list(&s, listing(PriceModel::PriceTag, 0, 7, 10));
    // `block` checks conservation against the stored accounts.
    assert_eq!(m.send(&b, buy(sku, 3, 10)), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 21);
    m.net.reopen();
    assert_eq!(m.send(&b, buy(sku, 1, 10)), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 28);
}

// ---------------------------------------------------------------------------
// Metering.
// ---------------------------------------------------------------------------

fn open(sku: SkuRef, deposit: u128, expiry: u64) -> PayloadSpec {
    PayloadSpec::OpenChannel {
        sku,
        deposit,
        expiry,
    }
}

fn claim_of(r: &int_schemas::ChannelReceipt) -> PayloadSpec {
    PayloadSpec::ClaimChannel {
        channel: r.channel,
        amount: r.amount,
        sequence: r.sequence,
        buyer_signature: r.signature,
    }
}

#[test]
fn metering_pays_the_latest_receipt_and_returns_the_rest() {
    let mut m = M::new();
    let (s, b, x) = (seller(0), buyer(0), buyer(1));
    // Rate 10 per unit (the smallest deposit), challenge window 3 blocks.
    let sku = m.list(&s, listing(PriceModel::Metered, 3, 10, 100));
    let tag = m.list(&s, listing(PriceModel::PriceTag, 0, 10, 100));
    let h = m.height();

    // Channels that cannot open, each refunded.
    let p = poor();
    let txs = vec![
        m.tx(&b, open(sku, 5, h + 10)).0,
        m.tx(&b, open(sku, 100, h + 1)).0,
        m.tx(&b, open(tag, 100, h + 10)).0,
        m.tx(&p, open(sku, 100, h + 10)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::DepositTooSmall,
            TxStatus::ChannelExpired,
            TxStatus::WrongModel,
            TxStatus::InsufficientBalance,
        ]
    );
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b));

    let expiry = m.height() + 5;
    let (tx, n) = m.tx(&b, open(sku, 100, expiry));
    assert_eq!(m.block(vec![tx]), vec![TxStatus::Ok]);
    let ch = deal(sku, &b, n);
    assert_eq!(m.escrow(), 100);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 100);
    let view = market::channel(&*m.net.view(), CHAIN, &ch)
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.deposit, view.paid, view.last_sequence, view.expiry),
        (100, 0, 0, expiry)
    );

    // Receipts the buyer's device signs off chain.
    let r = |amount, seq| receipt::sign_receipt(&b, CHAIN, &ch, amount, seq);
    let (r1, r2) = (r(30, 1), r(50, 2));
    let pk = b.public_key();
    assert!(receipt::verify_receipt(&pk, CHAIN, &r1));
    let forged = receipt::sign_receipt(&x, CHAIN, &ch, 50, 2);
    assert!(!receipt::verify_receipt(&pk, CHAIN, &forged));

    let txs = vec![
        // Only the seller claims.
        m.tx(&b, claim_of(&r1)).0,
        m.tx(&s, claim_of(&r1)).0,
        // The same receipt twice in one block: a double claim.
        m.tx(&s, claim_of(&r1)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![TxStatus::NotSeller, TxStatus::Ok, TxStatus::StaleReceipt]
    );
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 30);

    let other = DealRef { nonce: 99, ..ch };
    let txs = vec![
        // Signed by someone else.
        m.tx(&s, claim_of(&forged)).0,
        // A receipt whose bytes were changed after signing.
        m.tx(
            &s,
            claim_of(&int_schemas::ChannelReceipt { amount: 60, ..r2 }),
        )
        .0,
        m.tx(&s, claim_of(&r2)).0,
        // Replayed, older, below what was paid, above the deposit.
        m.tx(&s, claim_of(&r2)).0,
        m.tx(&s, claim_of(&r1)).0,
        m.tx(&s, claim_of(&r(40, 3))).0,
        m.tx(&s, claim_of(&r(101, 3))).0,
        // No such channel.
        m.tx(
            &s,
            claim_of(&receipt::sign_receipt(&b, CHAIN, &other, 1, 1)),
        )
        .0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::BadSignature,
            TxStatus::BadSignature,
            TxStatus::Ok,
            TxStatus::StaleReceipt,
            TxStatus::StaleReceipt,
            TxStatus::BadReceiptAmount,
            TxStatus::BadReceiptAmount,
            TxStatus::UnknownDeal,
        ]
    );
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 50);
    assert_eq!(m.escrow(), 50);

    // Inside the challenge window (after expiry) a higher sequence still
    // supersedes: the last block claims are taken in is expiry + 3.
    m.idle_until(expiry + 2);
    assert_eq!(m.send(&s, claim_of(&r(60, 7))), TxStatus::Ok);
    assert_eq!(m.height(), expiry + 3);
    let view = market::channel(&*m.net.view(), CHAIN, &ch)
        .unwrap()
        .unwrap();
    assert_eq!((view.paid, view.last_sequence), (60, 7));
    // The block after, the channel is closed before any claim.
    assert_eq!(m.send(&s, claim_of(&r(70, 8))), TxStatus::UnknownDeal);
    assert_eq!(market::channel(&*m.net.view(), CHAIN, &ch).unwrap(), None);
    assert_eq!(m.escrow(), 0);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 60);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 60);
}

#[test]
fn channels_of_a_delisted_sku_settle_and_unclaimed_ones_return_whole() {
    let mut m = M::new();
    let (s, b0, b1) = (seller(0), buyer(0), buyer(1));
    let sku = m.list(&s, listing(PriceModel::Metered, 1, 1, 5));
    let expiry = m.height() + 4;
    let (t0, n0) = m.tx(&b0, open(sku, 80, expiry));
    let (t1, _) = m.tx(&b1, open(sku, 70, expiry + 1));
    assert_eq!(m.block(vec![t0, t1]), vec![TxStatus::Ok, TxStatus::Ok]);
    assert_eq!(m.escrow(), 150);
    // The SKU goes; its channels stay claimable, new ones cannot open.
    assert_eq!(m.send(&s, PayloadSpec::DelistSku { sku }), TxStatus::Ok);
    assert_eq!(m.send(&b0, open(sku, 10, expiry)), TxStatus::UnknownSku);
    let ch0 = deal(sku, &b0, n0);
    let r = receipt::sign_receipt(&b0, CHAIN, &ch0, 25, 1);
    assert_eq!(m.send(&s, claim_of(&r)), TxStatus::Ok);
    // Closes at expiry + 2 (25 paid, 55 back) and expiry + 3 (70 back).
    m.idle_until(expiry + 1);
    assert_eq!(m.escrow(), 125);
    m.idle_until(expiry + 2);
    assert_eq!(m.escrow(), 70);
    assert_eq!(m.gas(&b0), GAS0 - m.fees(&b0) - 25);
    m.idle_until(expiry + 3);
    assert_eq!(m.escrow(), 0);
    assert_eq!(m.gas(&b1), GAS0 - m.fees(&b1));
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 25);
}

// ---------------------------------------------------------------------------
// Competitive bidding.
// ---------------------------------------------------------------------------

fn bid(sku: SkuRef, qty: u64, unit_price: u128, window_end: u64) -> PayloadSpec {
    PayloadSpec::PlaceBid {
        sku,
        qty,
        unit_price,
        window_end,
    }
}

#[test]
fn auctions_clear_at_one_price_and_refund_the_rest() {
    let mut m = M::new();
    let (s, b0, b1, b2) = (seller(0), buyer(0), buyer(1), buyer(2));
    // Windows of 5 blocks, reserve 10, 10 units.
    let sku = m.list(&s, listing(PriceModel::Auction, 5, 10, 10));
    let tag = m.list(&s, listing(PriceModel::PriceTag, 0, 10, 10));
    let listed = m.height() - 1;
    let end = m.sku(&sku).window_end;
    assert_eq!(end, listed + 5);

    let p = poor();
    let txs = vec![
        m.tx(&b0, bid(sku, 4, 20, end)).0,
        m.tx(&b1, bid(sku, 5, 15, end)).0,
        m.tx(&b2, bid(sku, 4, 12, end)).0,
        m.tx(&b2, bid(sku, 2, 9, end)).0,
        m.tx(&b2, bid(sku, 2, 30, end + 5)).0,
        m.tx(&b2, bid(sku, 0, 30, end)).0,
        m.tx(&p, bid(sku, 10, 10, end)).0,
        m.tx(&b2, bid(tag, 1, 10, end)).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::BelowReserve,
            TxStatus::AuctionClosed,
            TxStatus::InvalidArgument,
            TxStatus::InsufficientBalance,
            TxStatus::WrongModel,
        ]
    );
    // A later bid at the marginal price loses the tie to the earlier one.
    assert_eq!(m.send(&b0, bid(sku, 1, 12, end)), TxStatus::Ok);
    assert_eq!(m.escrow(), 80 + 75 + 48 + 12);
    assert_eq!(market::bids(&*m.net.view(), CHAIN, &sku).unwrap().len(), 4);
    assert_eq!(m.gas(&b0), GAS0 - m.fees(&b0) - 92);

    // The close block: the window is over before its transactions.
    m.idle_until(end - 1);
    assert_eq!(m.send(&b1, bid(sku, 1, 50, end)), TxStatus::AuctionClosed);
    assert_eq!(m.height(), end);
    // 4 to b0 and 5 to b1 at their prices' tier, the 10th unit to b2's
    // earlier 12; every winner pays 12.
    assert_eq!(m.escrow(), 0);
    assert!(
        market::bids(&*m.net.view(), CHAIN, &sku)
            .unwrap()
            .is_empty()
    );
    assert_eq!(m.gas(&b0), GAS0 - m.fees(&b0) - 48);
    assert_eq!(m.gas(&b1), GAS0 - m.fees(&b1) - 60);
    assert_eq!(m.gas(&b2), GAS0 - m.fees(&b2) - 12);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 120);
    let v = m.sku(&sku);
    // Sold out: no next window until the seller adds capacity.
    assert_eq!((v.listing.capacity, v.window_end), (0, 0));
    assert_eq!(
        m.send(&b1, bid(sku, 1, 50, end + 5)),
        TxStatus::AuctionClosed
    );

    let update = PayloadSpec::UpdateSku {
        sku,
        unit_price: 10,
        capacity: 3,
        metadata_hash: [0; 32],
    };
    assert_eq!(m.send(&s, update), TxStatus::Ok);
    let end2 = m.sku(&sku).window_end;
    assert_eq!(end2, m.height() + 5);
    let txs = vec![
        m.tx(&b0, bid(sku, 2, 11, end2)).0,
        m.tx(&b1, bid(sku, 2, 13, end2)).0,
    ];
    assert_eq!(m.block(txs), vec![TxStatus::Ok, TxStatus::Ok]);
    assert_eq!(m.escrow(), 48);
    // Delisting returns the open window's bids at once.
    assert_eq!(m.send(&s, PayloadSpec::DelistSku { sku }), TxStatus::Ok);
    assert_eq!(m.escrow(), 0);
    assert!(
        market::bids(&*m.net.view(), CHAIN, &sku)
            .unwrap()
            .is_empty()
    );
    assert_eq!(m.gas(&b0), GAS0 - m.fees(&b0) - 48);
    assert_eq!(m.gas(&b1), GAS0 - m.fees(&b1) - 60);
    assert_eq!(m.send(&b1, bid(sku, 1, 50, end2)), TxStatus::UnknownSku);
    // Nothing happens at the cancelled close.
    m.idle_until(end2 + 1);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 120);
}

#[test]
fn auction_windows_roll_while_capacity_is_left() {
    let mut m = M::new();
    let (s, b) = (seller(1), buyer(0));
    let sku = m.list(&s, listing(PriceModel::Auction, 3, 5, 100));
    let end = m.sku(&sku).window_end;
    assert_eq!(m.send(&b, bid(sku, 3, 7, end)), TxStatus::Ok);
    m.idle_until(end);
    // Partial: 3 of 100 sold at 7; the next window opened at the close.
    let v = m.sku(&sku);
    assert_eq!((v.listing.capacity, v.window_end), (97, end + 3));
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 21);
    // A window without bids closes and the next one opens.
    m.idle_until(end + 3);
    assert_eq!(m.sku(&sku).window_end, end + 6);
    // A bid larger than what is left gets the rest, at its own price.
    let up = PayloadSpec::UpdateSku {
        sku,
        unit_price: 5,
        capacity: 4,
        metadata_hash: [0; 32],
    };
    assert_eq!(m.send(&s, up), TxStatus::Ok);
    assert_eq!(m.send(&b, bid(sku, 10, 6, end + 6)), TxStatus::Ok);
    assert_eq!(m.escrow(), 60);
    m.idle_until(end + 6);
    assert_eq!(m.escrow(), 0);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 21 - 24);
    let v = m.sku(&sku);
    assert_eq!((v.listing.capacity, v.window_end), (0, 0));
}

// ---------------------------------------------------------------------------
// Random market blocks: parallel and sequential chains agree, and value is
// conserved.
// ---------------------------------------------------------------------------

/// One random market action; indices pick accounts, SKUs and deals modulo
/// what exists, so many are invalid on purpose.
#[derive(Debug, Clone)]
enum Op {
    List {
        who: u8,
        model: u8,
        period: u8,
        price: u8,
        cap: u8,
        allowlist: bool,
        kind: u16,
    },
    Update {
        who: u8,
        sku: u8,
        price: u8,
        cap: u8,
    },
    Delist {
        who: u8,
        sku: u8,
    },
    Buy {
        who: u8,
        sku: u8,
        qty: u8,
        max: u8,
    },
    Open {
        who: u8,
        sku: u8,
        deposit: u8,
        expiry: u8,
    },
    Claim {
        who: u8,
        deal: u8,
        amount: u8,
        seq: u8,
        forged: bool,
    },
    Bid {
        who: u8,
        sku: u8,
        qty: u8,
        price: u8,
        late: bool,
    },
    Order {
        who: u8,
        sku: u8,
        qty: u8,
        max: u8,
    },
    Confirm {
        who: u8,
        deal: u8,
        qty: u8,
        attest: bool,
    },
    Kind {
        who: u8,
        name: u8,
    },
    Policy {
        who: u8,
        nearest: bool,
        cpp: bool,
        region: u8,
        max: u8,
        units: u8,
        interval: u8,
        budget: u8,
        deposit: u8,
    },
    Cancel {
        who: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let a = 0..7u8;
    prop_oneof![
        2 => (a.clone(), 0..4u8, prop::sample::select(vec![0u8, 1, 2, 3, 3]), 0..12u8, prop::sample::select(vec![0u8, 1, 3, 5, 8]), prop::bool::weighted(0.2), prop::sample::select(vec![0u16, 1, 1, 4, 256, 9]))
            .prop_map(|(who, model, period, price, cap, allowlist, kind)| Op::List {
                who, model, period, price, cap, allowlist, kind
            }),
        1 => (a.clone(), any::<u8>(), 0..12u8, 0..8u8)
            .prop_map(|(who, sku, price, cap)| Op::Update { who, sku, price, cap }),
        1 => (a.clone(), any::<u8>()).prop_map(|(who, sku)| Op::Delist { who, sku }),
        2 => (a.clone(), any::<u8>(), 0..5u8, 0..14u8)
            .prop_map(|(who, sku, qty, max)| Op::Buy { who, sku, qty, max }),
        2 => (a.clone(), any::<u8>(), 0..60u8, 0..6u8)
            .prop_map(|(who, sku, deposit, expiry)| Op::Open { who, sku, deposit, expiry }),
        2 => (a.clone(), any::<u8>(), 0..70u8, 0..6u8, prop::bool::weighted(0.2))
            .prop_map(|(who, deal, amount, seq, forged)| Op::Claim { who, deal, amount, seq, forged }),
        2 => (a.clone(), any::<u8>(), 0..6u8, 0..14u8, prop::bool::weighted(0.2))
            .prop_map(|(who, sku, qty, price, late)| Op::Bid { who, sku, qty, price, late }),
        2 => (a.clone(), any::<u8>(), 0..5u8, 0..14u8)
            .prop_map(|(who, sku, qty, max)| Op::Order { who, sku, qty, max }),
        2 => (a.clone(), any::<u8>(), 0..4u8, any::<bool>())
            .prop_map(|(who, deal, qty, attest)| Op::Confirm { who, deal, qty, attest }),
        1 => (a.clone(), 0..3u8).prop_map(|(who, name)| Op::Kind { who, name }),
        2 => (a.clone(), any::<bool>(), prop::bool::weighted(0.3), 0..4u8, 0..14u8, 0..4u8, 0..4u8, 0..30u8, 0..60u8)
            .prop_map(|(who, nearest, cpp, region, max, units, interval, budget, deposit)| Op::Policy {
                who, nearest, cpp, region, max, units, interval, budget, deposit
            }),
        1 => a.prop_map(|who| Op::Cancel { who }),
    ]
}

/// What a random transaction creates if it succeeds.
enum Made {
    Sku(SkuRef, PriceModel),
    Channel(DealRef),
    Order(DealRef),
}

/// What the random blocks refer to.
#[derive(Default)]
struct Known {
    skus: Vec<(SkuRef, PriceModel)>,
    channels: Vec<DealRef>,
    orders: Vec<DealRef>,
}

fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[i as usize % v.len()])
}

/// The transaction of `op` against chain `m`'s state; a deal it opens.
fn build(
    op: &Op,
    keys: &[SecretKey],
    known: &mut Known,
    m: &M,
    nonces: &mut HashMap<AccountId, u64>,
) -> (Vec<u8>, Option<Made>) {
    let sk = |who: u8| &keys[who as usize % keys.len()];
    let fake = SkuRef {
        seller: [0xee; 32],
        seq: 1,
    };
    let all: Vec<SkuRef> = known.skus.iter().map(|k| k.0).collect();
    let sku_of = |i: u8| pick(&all, i).unwrap_or(fake);
    // Mostly a SKU of the model the payload needs.
    let sku_for = |model: PriceModel, i: u8| {
        let fit: Vec<SkuRef> = known
            .skus
            .iter()
            .filter(|k| k.1 == model)
            .map(|k| k.0)
            .collect();
        if i >= 224 {
            sku_of(i)
        } else {
            pick(&fit, i).unwrap_or_else(|| sku_of(i))
        }
    };
    let h = m.height() + 1;
    let (who, p): (u8, PayloadSpec) = match *op {
        Op::List {
            who,
            model,
            period,
            price,
            cap,
            allowlist,
            kind,
        } => {
            let mut l = listing(PriceModel(model), period as u32, price as u128, cap as u64);
            l.kind = kind;
            if allowlist {
                l.authority = Authority::Allowlist;
                l.allow = vec![id(&keys[3]), id(&keys[4])];
            }
            (who, PayloadSpec::ListSku(Box::new(l)))
        }
        Op::Update {
            who,
            sku,
            price,
            cap,
        } => (
            who,
            PayloadSpec::UpdateSku {
                sku: sku_of(sku),
                unit_price: price as u128,
                capacity: cap as u64,
                metadata_hash: [price; 32],
            },
        ),
        Op::Delist { who, sku } => (who, PayloadSpec::DelistSku { sku: sku_of(sku) }),
        Op::Buy { who, sku, qty, max } => (
            who,
            buy(sku_for(PriceModel::PriceTag, sku), qty as u64, max as u128),
        ),
        Op::Open {
            who,
            sku,
            deposit,
            expiry,
        } => (
            who,
            open(
                sku_for(PriceModel::Metered, sku),
                deposit as u128,
                h - 1 + expiry as u64,
            ),
        ),
        Op::Claim {
            who,
            deal,
            amount,
            seq,
            forged,
        } => {
            let d = pick(&known.channels, deal).unwrap_or(DealRef {
                sku: fake,
                buyer: [0xdd; 32],
                nonce: 0,
            });
            let signer = keys
                .iter()
                .find(|k| id(k) == d.buyer && !forged)
                .unwrap_or(&keys[0]);
            let r = receipt::sign_receipt(signer, CHAIN, &d, amount as u128, seq as u64);
            // The seller claims, mostly.
            let who = if who < 5 {
                keys.iter().position(|k| id(k) == d.sku.seller).unwrap_or(0) as u8
            } else {
                who
            };
            (who, claim_of(&r))
        }
        Op::Bid {
            who,
            sku,
            qty,
            price,
            late,
        } => {
            let s = sku_for(PriceModel::Auction, sku);
            let end = market::sku(&*m.net.view(), CHAIN, &s)
                .unwrap()
                .map_or(0, |v| v.window_end);
            let end = if late { end + 3 } else { end };
            (who, bid(s, qty as u64, price as u128, end))
        }
        Op::Order { who, sku, qty, max } => (
            who,
            cpp_order(sku_for(PriceModel::Cpp, sku), qty as u64, max as u128),
        ),
        Op::Confirm {
            who,
            deal,
            qty,
            attest,
        } => {
            let d = pick(&known.orders, deal).unwrap_or(DealRef {
                sku: fake,
                buyer: [0xdd; 32],
                nonce: 0,
            });
            let confirmed = market::order(&*m.net.view(), CHAIN, &d)
                .unwrap()
                .map_or(0, |o| o.confirmed);
            let buyer = keys.iter().find(|k| id(k) == d.buyer).unwrap_or(&keys[0]);
            let attestation =
                attest.then(|| receipt::sign_usage(buyer, CHAIN, &d, confirmed + qty as u64));
            // The buyer or the seller, mostly.
            let who = match who {
                0..=2 => keys.iter().position(|k| id(k) == d.buyer).unwrap_or(0) as u8,
                3..=5 => keys.iter().position(|k| id(k) == d.sku.seller).unwrap_or(0) as u8,
                w => w,
            };
            (
                who,
                PayloadSpec::ConfirmUse {
                    order: d,
                    qty: qty as u64,
                    attestation,
                },
            )
        }
        Op::Kind { who, name } => (
            who,
            PayloadSpec::RegisterKind {
                name: ["lidar", "radar", "power"][name as usize].into(),
            },
        ),
        Op::Policy {
            who,
            nearest,
            cpp,
            region,
            max,
            units,
            interval,
            budget,
            deposit,
        } => (
            who,
            policy(
                if nearest {
                    Preference::Nearest
                } else {
                    Preference::Cheapest
                },
                if cpp {
                    PriceModel::Cpp
                } else {
                    PriceModel::PriceTag
                },
                ["", "wx4", "wx4g0b", "u0"][region as usize],
                max as u128,
                units as u64,
                interval as u32,
                budget as u128,
                deposit as u128,
            ),
        ),
        Op::Cancel { who } => (who, PayloadSpec::CancelPolicy { kind: 1 }),
    };
    let sender = sk(who);
    let n = nonces.entry(id(sender)).or_insert(0);
    let nonce = *n;
    *n += 1;
    let deal = |sku: &SkuRef| DealRef {
        sku: *sku,
        buyer: id(sender),
        nonce,
    };
    let made = match &p {
        PayloadSpec::ListSku(l) => Some(Made::Sku(
            SkuRef {
                seller: id(sender),
                seq: nonce,
            },
            l.terms.model,
        )),
        PayloadSpec::OpenChannel { sku, .. } => Some(Made::Channel(deal(sku))),
        PayloadSpec::Order { sku, .. } => Some(Made::Order(deal(sku))),
        _ => None,
    };
    (signed(sender, nonce, FEE, p), made)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_market_blocks_agree_in_parallel_cold_evicted_and_after_discards_and_conserve_value(
        blocks in prop::collection::vec(prop::collection::vec(op(), 0..7), 6..16),
    ) {
        let keys = everyone();
        let mut par = M::with(config(true, 1024));
        let mut seq = M::with(config(false, 1024));
        // The hot set changes no result: a chain that starts every block
        // with an empty world, and one that keeps two objects of each type
        // (and two accounts) so eviction runs every block, agree with both.
        let mut cold = M::with(config(true, 1024));
        let mut tiny = M::with(config(true, 2));
        // And one that first executes and discards another block on the
        // same parent (the previous block's transactions again, stale
        // nonces and all, and this block's in reverse): a block that is
        // not committed leaves nothing behind in the world.
        let mut forked = M::with(config(true, 1024));
        let mut previous: Vec<Vec<u8>> = Vec::new();
        let mut known = Known::default();
        // Statuses per kind of action (MARKET_PROPTEST_STATS=1 prints
        // them, to see what the strategy reaches).
        let mut stats = std::collections::BTreeMap::new();
        // Empty blocks at the end let timers run.
        let tail = vec![vec![]; 6];
        let first: Vec<Op> = (0..4u8)
            .map(|model| Op::List {
                who: model % 3,
                model,
                period: 3,
                price: 4,
                cap: 8,
                allowlist: false,
                kind: 1,
            })
            .collect();
        for ops in std::iter::once(&first).chain(&blocks).chain(&tail) {
            let mut nonces: HashMap<AccountId, u64> = keys
                .iter()
                .map(|k| (id(k), par.net.account(&id(k)).map_or(0, |a| a.nonce)))
                .collect();
            let mut txs = Vec::new();
            let mut opened = Vec::new();
            for op in ops {
                let (tx, o) = build(op, &keys, &mut known, &par, &mut nonces);
                txs.push(tx);
                opened.push(o);
            }
            // `block` checks conservation on each chain.
            let a = par.block(txs.clone());
            for (op, st) in ops.iter().zip(&a) {
                let name = format!("{op:?}");
                let name = name.split(' ').next().unwrap_or("").to_string();
                *stats.entry((name, *st)).or_insert(0u32) += 1;
            }
            let b = seq.block(txs.clone());
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(par.net.head(), seq.net.head());
            cold.net.reopen();
            prop_assert_eq!(&a, &cold.block(txs.clone()));
            prop_assert_eq!(&a, &tiny.block(txs.clone()));
            let mut other = std::mem::replace(&mut previous, txs.clone());
            other.extend(txs.iter().rev().cloned());
            forked.net.execute_discarded(other);
            prop_assert_eq!(&a, &forked.block(txs));
            prop_assert_eq!(par.net.head(), cold.net.head());
            prop_assert_eq!(par.net.head(), tiny.net.head());
            prop_assert_eq!(par.net.head(), forked.net.head());
            for (st, made) in a.iter().zip(opened) {
                match made {
                    _ if *st != TxStatus::Ok => {}
                    Some(Made::Sku(s, model)) => known.skus.push((s, model)),
                    Some(Made::Channel(d)) => known.channels.push(d),
                    Some(Made::Order(d)) => known.orders.push(d),
                    None => {}
                }
            }
            let all = SkuQuery { limit: 1000, ..Default::default() };
            prop_assert_eq!(par.query(all.clone()), seq.query(all));
        }
        prop_assert_eq!(par.escrow(), seq.escrow());
        let pols = |m: &M| market::policies(&*m.net.view(), CHAIN, None, 100).unwrap();
        prop_assert_eq!(pols(&par), pols(&seq));
        if std::env::var_os("MARKET_PROPTEST_STATS").is_some() {
            let buys: u64 = pols(&par).iter().map(|p| p.record.buys).sum();
            eprintln!("{stats:?} policy buys: {buys}");
        }
    }
}

// ---------------------------------------------------------------------------
// Standing policies.
// ---------------------------------------------------------------------------

#[test]
fn a_policy_buys_the_cheapest_in_its_area_every_interval() {
    let mut m = M::new();
    let (b, s0, s1, s2) = (buyer(0), seller(0), seller(1), seller(2));
    let near = m.list(&s0, listed_at(PriceModel::PriceTag, 5, 10, "wx4g0"));
    let cheap = m.list(&s1, listed_at(PriceModel::PriceTag, 3, 10, "wx4g1"));
    // Cheaper, but outside the area.
    let far = m.list(&s2, listed_at(PriceModel::PriceTag, 2, 10, "u0000"));
    let p = policy(
        Preference::Cheapest,
        PriceModel::PriceTag,
        "wx4",
        6,
        2,
        3,
        1000,
        100,
    );
    assert_eq!(m.send(&b, p), TxStatus::Ok);
    let set_at = m.height();
    assert_eq!(m.escrow(), 100);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 100);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.balance, v.buys, v.next_due), (100, 0, set_at + 1));

    // The next block buys 2 units of the cheapest SKU in the area, paid
    // out of the policy: 6 to its seller, nothing from the owner's account.
    m.block(vec![]);
    assert_eq!(m.gas(&s1), GAS0 - m.fees(&s1) + 6);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 100);
    assert_eq!(m.sku(&cheap).listing.capacity, 8);
    assert_eq!(
        (m.sku(&near).listing.capacity, m.sku(&far).listing.capacity),
        (10, 10)
    );
    let v = m.policy(&b).unwrap();
    assert_eq!((v.balance, v.buys, v.spent_total), (94, 1, 6));
    assert_eq!(v.next_due, set_at + 1 + 3);
    assert_eq!(m.escrow(), 94);

    // Nothing until the interval has passed, then again.
    m.idle_until(set_at + 3);
    assert_eq!(m.policy(&b).unwrap().buys, 1);
    m.block(vec![]);
    assert_eq!(m.policy(&b).unwrap().buys, 2);
    assert_eq!(m.sku(&cheap).listing.capacity, 6);

    // The cheap SKU goes above the policy's bound: the next SKU it buys is
    // the other one in the area.
    let up = PayloadSpec::UpdateSku {
        sku: cheap,
        unit_price: 7,
        capacity: 6,
        metadata_hash: [0; 32],
    };
    assert_eq!(m.send(&s1, up), TxStatus::Ok);
    let due = m.policy(&b).unwrap().next_due;
    m.idle_until(due);
    assert_eq!(m.sku(&near).listing.capacity, 8);
    assert_eq!(m.gas(&s0), GAS0 - m.fees(&s0) + 10);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.balance, v.buys, v.spent_total), (78, 3, 22));

    // Cancelling returns the balance; a second cancel finds nothing.
    let cancel = PayloadSpec::CancelPolicy { kind: 1 };
    assert_eq!(m.send(&b, cancel.clone()), TxStatus::Ok);
    assert_eq!(m.policy(&b), None);
    assert_eq!(m.escrow(), 0);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 22);
    assert_eq!(m.send(&b, cancel), TxStatus::UnknownPolicy);
    m.idle_until(m.height() + 5);
    assert_eq!(m.sku(&near).listing.capacity, 8);
}

#[test]
fn a_policy_spends_at_most_its_budget_per_epoch_and_its_balance() {
    let oracle = key(900);
    let cfg = TokenConfig {
        epoch_blocks: 8,
        oracles: vec![id(&oracle)],
        initial_int_per_fiat: 1000,
        auction_lots_per_epoch: 0,
        auction_reserve_int_per_lot: 1,
    };
    let objects = token::genesis_objects(&cfg).unwrap();
    let mut m = M::with_objects(config(true, 1024), &objects);
    let (b, s) = (buyer(0), seller(0));
    let sku = m.list(&s, listed_at(PriceModel::PriceTag, 3, 100, "wx4g0")); // block 1
    // One unit a block, 7 GAS an epoch: two purchases of 3 fit, a third
    // does not.
    let p = policy(
        Preference::Cheapest,
        PriceModel::PriceTag,
        "",
        3,
        1,
        1,
        7,
        20,
    );
    assert_eq!(m.send(&b, p), TxStatus::Ok); // block 2
    m.idle_until(7);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.buys, v.epoch, v.spent_in_epoch), (2, 0, 6));
    assert_eq!(m.sku(&sku).listing.capacity, 98);
    // Epoch 1 starts at block 8: the budget is new.
    m.block(vec![]);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.buys, v.epoch, v.spent_in_epoch), (3, 1, 3));
    // Two a block in epochs 1 (8, 9) and 2 (16, 17): 20 GAS buys 6 units
    // in all; the policy stays, with 2 left.
    m.idle_until(17);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.buys, v.balance, v.spent_total), (6, 2, 18));
    m.idle_until(30);
    assert_eq!(m.policy(&b).unwrap().buys, 6);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 18);
    // Topping up (the same kind again) keeps the counts and buys again.
    let top = policy(
        Preference::Cheapest,
        PriceModel::PriceTag,
        "",
        3,
        1,
        1,
        7,
        4,
    );
    assert_eq!(m.send(&b, top), TxStatus::Ok);
    assert_eq!(m.policy(&b).unwrap().balance, 6);
    m.idle_until(m.height() + 2);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.buys, v.balance), (8, 0));
}

#[test]
fn nearest_searches_outward_from_the_position() {
    let mut m = M::new();
    let b = buyer(0);
    let s = seller(0);
    let same_cell = m.list(&s, listed_at(PriceModel::PriceTag, 9, 1, "wx4g0"));
    let next_cell = m.list(&s, listed_at(PriceModel::PriceTag, 2, 1, "wx4g1"));
    let far = m.list(&s, listed_at(PriceModel::PriceTag, 1, 1, "wx5"));
    let too_dear = m.list(&s, listed_at(PriceModel::PriceTag, 11, 1, "wx4g0b"));
    let mut other_kind = listed_at(PriceModel::PriceTag, 1, 1, "wx4g0b");
    other_kind.kind = 2;
    let other_kind = m.list(&s, other_kind);
    let p = policy(
        Preference::Nearest,
        PriceModel::PriceTag,
        "wx4g0b",
        10,
        1,
        1,
        1000,
        100,
    );
    assert_eq!(m.send(&b, p), TxStatus::Ok);
    let mut order = Vec::new();
    for _ in 0..4 {
        m.block(vec![]);
        for (name, sku) in [("same", same_cell), ("next", next_cell), ("far", far)] {
            if m.sku(&sku).listing.capacity == 0 && !order.contains(&name) {
                order.push(name);
            }
        }
    }
    assert_eq!(order, vec!["same", "next", "far"]);
    assert_eq!(m.sku(&too_dear).listing.capacity, 1);
    assert_eq!(m.sku(&other_kind).listing.capacity, 1);
    assert_eq!(m.policy(&b).unwrap().buys, 3);
}

#[test]
fn policies_due_together_share_capacity_in_owner_order() {
    let mut m = M::new();
    let s = seller(0);
    let a = m.list(&s, listed_at(PriceModel::PriceTag, 1, 2, "wx4g0"));
    let c = m.list(&s, listed_at(PriceModel::PriceTag, 2, 2, "wx4g0"));
    let mut owners = [buyer(0), buyer(1), buyer(2)];
    owners.sort_by_key(id);
    let p = || {
        policy(
            Preference::Cheapest,
            PriceModel::PriceTag,
            "wx4",
            5,
            2,
            50,
            100,
            10,
        )
    };
    let txs = owners.iter().map(|o| m.tx(o, p()).0).collect();
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 3]);
    m.block(vec![]);
    let buys: Vec<u64> = owners.iter().map(|o| m.policy(o).unwrap().buys).collect();
    assert_eq!(buys, vec![1, 1, 0]);
    assert_eq!(
        (m.sku(&a).listing.capacity, m.sku(&c).listing.capacity),
        (0, 0)
    );
    assert_eq!(m.policy(&owners[0]).unwrap().spent_total, 2);
    assert_eq!(m.policy(&owners[1]).unwrap().spent_total, 4);
    // The third found nothing: it tries again after its interval.
    let last = m.policy(&owners[2]).unwrap();
    assert_eq!(last.next_due, m.height() + 50);
}

#[test]
fn a_purchase_the_block_outran_is_retried_the_next_block() {
    let mut m = M::new();
    let (b, s0, s1) = (buyer(0), seller(0), seller(1));
    let cheap = m.list(&s0, listed_at(PriceModel::PriceTag, 1, 5, "wx4g0"));
    let dear = m.list(&s1, listed_at(PriceModel::PriceTag, 2, 5, "wx4g0"));
    let p = policy(
        Preference::Cheapest,
        PriceModel::PriceTag,
        "",
        5,
        1,
        10,
        100,
        10,
    );
    assert_eq!(m.send(&b, p), TxStatus::Ok);
    // The block the policy is due in delists the SKU it planned on (from
    // the committed state): the purchase misses, and the next block buys
    // the other.
    let delist = PayloadSpec::DelistSku { sku: cheap };
    assert_eq!(m.send(&s0, delist), TxStatus::Ok);
    let v = m.policy(&b).unwrap();
    assert_eq!((v.buys, v.next_due), (0, m.height() + 1));
    m.block(vec![]);
    assert_eq!(m.policy(&b).unwrap().buys, 1);
    assert_eq!(m.sku(&dear).listing.capacity, 4);
    assert_eq!(m.sku(&cheap).listing.capacity, 5);
}

#[test]
fn a_cpp_policy_opens_orders_the_owner_confirms() {
    let mut m = M::new();
    let (b, s) = (buyer(0), seller(0));
    let sku = m.list(&s, listed_at(PriceModel::Cpp, 4, 10, "wx4g0"));
    let p = policy(
        Preference::Cheapest,
        PriceModel::Cpp,
        "wx4g",
        4,
        2,
        100,
        100,
        50,
    );
    assert_eq!(m.send(&b, p), TxStatus::Ok);
    m.block(vec![]);
    let h = m.height();
    let d = DealRef {
        sku,
        buyer: id(&b),
        nonce: POLICY_DEAL_NONCE_BIT | h,
    };
    let o = market::order(&*m.net.view(), CHAIN, &d).unwrap().unwrap();
    assert_eq!((o.qty, o.unit_price, o.timeout), (2, 4, h + 5));
    assert_eq!(m.sku(&sku).listing.capacity, 8);
    // The cost moved from the policy into the order.
    assert_eq!(m.policy(&b).unwrap().balance, 42);
    assert_eq!(m.escrow(), 50);
    let confirm = PayloadSpec::ConfirmUse {
        order: d,
        qty: 1,
        attestation: None,
    };
    assert_eq!(m.send(&b, confirm), TxStatus::Ok);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 4);
    // The unconfirmed unit returns to the owner's account at the timeout.
    m.idle_until(h + 5);
    assert_eq!(market::order(&*m.net.view(), CHAIN, &d).unwrap(), None);
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b) - 50 + 4);
    assert_eq!(m.sku(&sku).listing.capacity, 9);
    assert_eq!(m.escrow(), 42);
}

#[test]
fn policies_refuse_bad_terms_and_skip_skus_that_do_not_admit_them() {
    let mut m = M::new();
    let (b, s) = (buyer(0), seller(0));
    let ok = || {
        policy(
            Preference::Cheapest,
            PriceModel::PriceTag,
            "",
            5,
            1,
            1,
            100,
            10,
        )
    };
    let with = |f: &dyn Fn(&mut PolicySpec)| {
        let PayloadSpec::SetPolicy(mut p) = ok() else {
            unreachable!()
        };
        f(&mut p);
        PayloadSpec::SetPolicy(p)
    };
    let txs = vec![
        m.tx(&b, with(&|p| p.kind = 999)).0,
        m.tx(&b, with(&|p| p.model = PriceModel::Auction)).0,
        m.tx(&b, with(&|p| p.model = PriceModel::Metered)).0,
        m.tx(&b, with(&|p| p.units = 0)).0,
        m.tx(&b, with(&|p| p.interval_blocks = 0)).0,
        m.tx(&b, with(&|p| p.budget_per_epoch = 0)).0,
        m.tx(&b, with(&|p| p.deposit = 0)).0,
        m.tx(&b, PayloadSpec::CancelPolicy { kind: 1 }).0,
    ];
    assert_eq!(
        m.block(txs),
        vec![
            TxStatus::InvalidArgument,
            TxStatus::WrongModel,
            TxStatus::WrongModel,
            TxStatus::InvalidArgument,
            TxStatus::InvalidArgument,
            TxStatus::InvalidArgument,
            TxStatus::InvalidArgument,
            TxStatus::UnknownPolicy,
        ]
    );
    // Every deposit came back.
    assert_eq!(m.gas(&b), GAS0 - m.fees(&b));
    assert_eq!(m.escrow(), 0);
    // A deposit above the balance: the Debit stage refuses it.
    let p = poor();
    assert_eq!(
        m.send(&p, with(&|x| x.deposit = POOR_GAS)),
        TxStatus::InsufficientBalance
    );

    // SKUs that do not admit the owner are passed over.
    let mut allow = listed_at(PriceModel::PriceTag, 1, 5, "wx4g0");
    allow.authority = Authority::Allowlist;
    allow.allow = vec![id(&buyer(1))];
    let allow = m.list(&s, allow);
    let mut clusters = listed_at(PriceModel::PriceTag, 1, 5, "wx4g0");
    clusters.authority = Authority::Clusters;
    clusters.clusters = vec![3];
    let clusters = m.list(&s, clusters);
    let open = m.list(&s, listed_at(PriceModel::PriceTag, 2, 5, "wx4g0"));
    assert_eq!(m.send(&b, ok()), TxStatus::Ok);
    m.block(vec![]);
    assert_eq!(m.sku(&open).listing.capacity, 4);
    assert_eq!(
        (
            m.sku(&allow).listing.capacity,
            m.sku(&clusters).listing.capacity
        ),
        (5, 5)
    );
    // A policy on the allowlist buys the cheaper one.
    let b1 = buyer(1);
    assert_eq!(m.send(&b1, ok()), TxStatus::Ok);
    m.block(vec![]);
    assert_eq!(m.sku(&allow).listing.capacity, 4);
}

// ---------------------------------------------------------------------------
// Buyer signatures, checked in one batch per block.
// ---------------------------------------------------------------------------

#[test]
fn a_blocks_receipts_are_batched_and_a_forged_one_fails_alone() {
    let mut m = M::new();
    let s = seller(0);
    let sku = m.list(&s, listing(PriceModel::Metered, 3, 10, 100));
    let expiry = m.height() + 20;
    let buyers = [buyer(0), buyer(1), buyer(2)];
    let mut chans = Vec::new();
    let mut txs = Vec::new();
    for b in &buyers {
        let (tx, n) = m.tx(b, open(sku, 100, expiry));
        txs.push(tx);
        chans.push(deal(sku, b, n));
    }
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 3]);
    let claim = |m: &mut M, b: &SecretKey, ch: &DealRef, amount, seq| {
        m.tx(
            &s,
            claim_of(&receipt::sign_receipt(b, CHAIN, ch, amount, seq)),
        )
        .0
    };
    // Every receipt good: the batch passes.
    let txs: Vec<Vec<u8>> = buyers
        .iter()
        .zip(&chans)
        .map(|(b, ch)| claim(&mut m, b, ch, 20, 1))
        .collect();
    assert_eq!(m.block(txs), vec![TxStatus::Ok; 3]);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 60);
    // One receipt signed by the wrong key (another buyer's): the batch
    // fails, each is checked alone, and only the forged one is refused.
    let txs = vec![
        claim(&mut m, &buyers[0], &chans[0], 30, 2),
        claim(&mut m, &buyers[2], &chans[1], 30, 2),
        claim(&mut m, &buyers[2], &chans[2], 30, 2),
    ];
    assert_eq!(
        m.block(txs),
        vec![TxStatus::Ok, TxStatus::BadSignature, TxStatus::Ok]
    );
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 80);
}

#[test]
fn two_attested_confirmations_of_one_order_in_a_block_both_count() {
    let mut m = M::new();
    let (s, b) = (seller(0), buyer(0));
    let sku = m.list(&s, listing(PriceModel::Cpp, 10, 5, 10));
    let (tx, n) = m.tx(&b, cpp_order(sku, 4, 5));
    assert_eq!(m.block(vec![tx]), vec![TxStatus::Ok]);
    let d = deal(sku, &b, n);
    // The second attestation covers 1 + 2 units in total: its message
    // depends on the first confirmation of the same block, which the
    // batched precheck (committed state) cannot know; the handler checks
    // it on its own.
    let confirm = |qty, total| PayloadSpec::ConfirmUse {
        order: d,
        qty,
        attestation: Some(receipt::sign_usage(&b, CHAIN, &d, total)),
    };
    let txs = vec![m.tx(&s, confirm(1, 1)).0, m.tx(&s, confirm(2, 3)).0];
    assert_eq!(m.block(txs), vec![TxStatus::Ok, TxStatus::Ok]);
    assert_eq!(m.gas(&s), GAS0 - m.fees(&s) + 15);
    // Replaying the first attestation now is refused.
    assert_eq!(m.send(&s, confirm(1, 1)), TxStatus::BadSignature);
    let o = market::order(&*m.net.view(), CHAIN, &d).unwrap().unwrap();
    assert_eq!(o.confirmed, 3);
}
