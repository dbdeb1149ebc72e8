//! The token plugin on chain (whitepaper 6): burning INT for GAS at the
//! oracle price, the oracles' median, the epoch's GAS auction, refusals
//! and their refunds; after every scenario the accounts plus the escrow
//! equal the supply's totals to the unit, and the state root covers the
//! token objects.

mod common;

use std::collections::HashMap;

use common::*;
use int_engine::crypto::bls::SecretKey;
use int_engine::storage::{AccountRecord, ObjectWrite, recompute_root};
use int_engine::world::Plugin;
use int_schemas::market::GAS_PER_FIAT;
use int_schemas::wire::TxStatus;
use int_schemas::{AccountId, Escrow, PayloadSpec};
use int_systems::LedgerPlugin;
use int_systems::token::{
    self, AuctionResult, TokenConfig, TokenPlugin, escrow_held, last_auction, price_at,
    price_in_force,
};
use proptest::prelude::*;

const EPOCH: u64 = 4;
const PRICE0: u128 = 2_000;
const LOTS: u64 = 10;
const RESERVE: u128 = 100;
const FEE: u128 = 1;
const INT0: u128 = 1_000_000;
const GAS0: u128 = 1_000;

fn oracle(i: u32) -> SecretKey {
    key(100 + i)
}

fn user(i: u32) -> SecretKey {
    key(200 + i)
}

fn token_cfg() -> TokenConfig {
    TokenConfig {
        epoch_blocks: EPOCH,
        oracles: (0..4).map(|i| id(&oracle(i))).collect(),
        initial_int_per_fiat: PRICE0,
        auction_lots_per_epoch: LOTS,
        auction_reserve_int_per_lot: RESERVE,
    }
}

fn with_tokens() -> Vec<Box<dyn Plugin>> {
    vec![Box::new(LedgerPlugin), Box::new(TokenPlugin)]
}

fn alloc() -> Vec<(AccountId, AccountRecord)> {
    (0..4)
        .map(oracle)
        .chain((0..6).map(user))
        .map(|sk| (id(&sk), registered(&sk, INT0, GAS0)))
        .collect()
}

struct TokNet {
    net: Net,
    nonces: HashMap<AccountId, u64>,
}

impl TokNet {
    fn new() -> Self {
        Self::with(true, &token::genesis_objects(&token_cfg()).unwrap())
    }

    fn with(parallel: bool, objects: &[ObjectWrite]) -> Self {
        Self {
            net: Net::with_plugins(&alloc(), config(parallel, 1024), with_tokens, objects),
            nonces: HashMap::new(),
        }
    }

    /// GAS the account paid in fees (every transaction of these tests
    /// advances its sender's nonce and pays the fee).
    fn fees(&self, sk: &SecretKey) -> u128 {
        self.nonces.get(&id(sk)).copied().unwrap_or(0) as u128 * FEE
    }

    fn tx(&mut self, sk: &SecretKey, payload: PayloadSpec) -> Vec<u8> {
        let n = self.nonces.entry(id(sk)).or_default();
        let tx = signed(sk, *n, FEE, payload);
        *n += 1;
        tx
    }

    fn block(&mut self, batch: Vec<Vec<u8>>) -> Vec<TxStatus> {
        let s = self.net.block_ok(batch);
        self.audit();
        s
    }

    /// One block of one transaction; its status.
    fn one(&mut self, sk: &SecretKey, payload: PayloadSpec) -> TxStatus {
        let tx = self.tx(sk, payload);
        self.block(vec![tx])[0]
    }

    fn height(&self) -> u64 {
        self.net.head().height
    }

    /// The epoch of the next block.
    fn next_epoch(&self) -> u64 {
        (self.height() + 1) / EPOCH
    }

    /// Empty blocks until the next block is the first of `epoch`.
    fn advance_to_epoch(&mut self, epoch: u64) {
        while self.height() + 1 < epoch * EPOCH {
            self.block(Vec::new());
        }
    }

    fn acct(&self, sk: &SecretKey) -> AccountRecord {
        self.net.account(&id(sk)).unwrap()
    }

    fn price(&self) -> Option<(u64, u128)> {
        price_in_force(&*self.net.view(), CHAIN).unwrap()
    }

    /// Accounts plus escrow equal the supply to the unit; the state root
    /// covers the token objects. Checked through the audit that `int state`
    /// and the devnet run (`int_systems::audit::audit`), which reads the
    /// stored supply record and every plugin's escrow.
    fn audit(&mut self) {
        let (supply, audit) = int_systems::audit::audit(&*self.net.view(), CHAIN)
            .unwrap()
            .expect("a chain with tokens stores its supply");
        assert_eq!(supply, self.net.chain().supply().unwrap());
        let (int, gas) = totals(&*self.net.view());
        assert_eq!((audit.int_in_accounts, audit.gas_in_accounts), (int, gas));
        assert_eq!(
            Escrow {
                int: audit.int_in_escrow,
                gas: audit.gas_in_escrow
            },
            escrow_held(&*self.net.view(), CHAIN).unwrap()
        );
        assert!(audit.balanced(), "{audit:?} {supply:?}");
        let (root, _) = recompute_root(&*self.net.view(), CHAIN).unwrap();
        assert_eq!(root, self.net.head().state_root);
    }
}

fn burn(int_amount: u128) -> PayloadSpec {
    PayloadSpec::BurnForGas { int_amount }
}

fn report(int_per_fiat: u128) -> PayloadSpec {
    PayloadSpec::OracleReport { int_per_fiat }
}

fn bid(lots: u64, int_per_lot: u128, epoch: u64) -> PayloadSpec {
    PayloadSpec::BidGas {
        lots,
        int_per_lot,
        epoch,
    }
}

#[test]
fn burn_mints_gas_at_the_genesis_price() {
    let mut t = TokNet::new();
    assert_eq!(t.price(), Some((0, PRICE0)));
    let before = t.net.chain().supply().unwrap();
    let u = user(0);
    // 1000 INT at 2000 INT per fiat unit: half a fiat unit of GAS.
    let batch = vec![t.tx(&u, burn(1_000)), t.tx(&u, burn(3))];
    let s = t.block(batch);
    assert_eq!(s, vec![TxStatus::Ok, TxStatus::Ok]);
    let gas = 1_000 * GAS_PER_FIAT / PRICE0 + 3 * GAS_PER_FIAT / PRICE0;
    assert_eq!(gas, 500_000 + 1_500);
    let a = t.acct(&u);
    assert_eq!(a.int, INT0 - 1_003);
    assert_eq!(a.gas, GAS0 - t.fees(&u) + gas);
    let after = t.net.chain().supply().unwrap();
    assert_eq!(after.int_total, before.int_total - 1_003);
    assert_eq!(after.gas_total, before.gas_total + gas);
    assert_eq!(after.int_burned, 1_003);
    assert_eq!(after.gas_minted, gas);
    after.check_identities().unwrap();
    // The burn floors: 1 INT at 2000 per fiat unit is 500 GAS.
    assert_eq!(t.one(&u, burn(1)), TxStatus::Ok);
    assert_eq!(t.acct(&u).gas, GAS0 - t.fees(&u) + gas + 500);
}

#[test]
fn refused_payloads_cost_only_the_fee() {
    let mut t = TokNet::new();
    let u = user(1);
    let supply = t.net.chain().supply().unwrap();
    // Zero INT, a price of zero, a report from a non-oracle.
    assert_eq!(t.one(&u, burn(0)), TxStatus::InvalidArgument);
    assert_eq!(t.one(&u, report(5)), TxStatus::NotOracle);
    assert_eq!(t.one(&oracle(0), report(0)), TxStatus::InvalidArgument);
    // More INT than the account holds: the Debit stage refuses it.
    assert_eq!(t.one(&u, burn(INT0 + 1)), TxStatus::InsufficientBalance);
    let a = t.acct(&u);
    assert_eq!((a.int, a.gas), (INT0, GAS0 - t.fees(&u)));
    let after = t.net.chain().supply().unwrap();
    assert_eq!((after.int_burned, after.gas_minted), (0, 0));
    assert_eq!(after.int_total, supply.int_total);

    // At a price above GAS_PER_FIAT INT per fiat unit, 1 INT buys less
    // than one GAS unit: refused and refunded.
    let price = 3 * GAS_PER_FIAT;
    let batch = (0..3).map(|i| t.tx(&oracle(i), report(price))).collect();
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 3]);
    let e = t.next_epoch() + 1;
    t.advance_to_epoch(e);
    assert_eq!(t.one(&u, burn(2)), TxStatus::InvalidArgument);
    assert_eq!(t.price(), Some((e, price)));
    assert_eq!(t.acct(&u).int, INT0);
    assert_eq!(t.one(&u, burn(3)), TxStatus::Ok);
    assert_eq!(t.acct(&u).int, INT0 - 3);
}

#[test]
fn a_chain_without_a_price_or_tokens_refuses_and_refunds() {
    // A token configuration but no price record: NoOraclePrice.
    let objects: Vec<ObjectWrite> = token::genesis_objects(&token_cfg())
        .unwrap()
        .into_iter()
        .filter(|o| o.key == b"tok/config")
        .collect();
    let mut t = TokNet::with(true, &objects);
    let u = user(0);
    assert_eq!(t.price(), None);
    assert_eq!(t.one(&u, burn(500)), TxStatus::NoOraclePrice);
    assert_eq!(t.acct(&u).int, INT0);
    // An epoch without reports keeps the chain without a price; the
    // oracles' first reports give it one.
    t.advance_to_epoch(1);
    assert_eq!(t.one(&u, burn(500)), TxStatus::NoOraclePrice);
    assert_eq!(t.one(&oracle(0), report(500)), TxStatus::Ok);
    t.advance_to_epoch(2);
    assert_eq!(t.one(&u, burn(500)), TxStatus::Ok);
    assert_eq!(t.price(), Some((2, 500)));
    assert_eq!(price_at(&*t.net.view(), CHAIN, 1).unwrap(), None);
    assert_eq!(t.acct(&u).int, INT0 - 500);
    assert_eq!(t.acct(&u).gas, GAS0 - t.fees(&u) + GAS_PER_FIAT);

    // No token configuration at all: every token payload is unsupported
    // and its lock comes back.
    let mut t = TokNet::with(true, &[]);
    assert!(token::load_config(&*t.net.view(), CHAIN).unwrap().is_none());
    let batch = vec![
        t.tx(&u, burn(500)),
        t.tx(&u, bid(2, 300, 0)),
        t.tx(&oracle(0), report(7)),
    ];
    assert_eq!(t.block(batch), vec![TxStatus::UnsupportedPayload; 3]);
    let a = t.acct(&u);
    assert_eq!((a.int, a.gas), (INT0, GAS0 - t.fees(&u)));
    assert_eq!(escrow_held(&*t.net.view(), CHAIN).unwrap(), Escrow::NONE);
}

#[test]
fn the_oracles_median_sets_the_next_epochs_price() {
    let mut t = TokNet::new();
    // Epoch 0: three oracles; oracle 0 reports twice (the later counts).
    let batch = vec![t.tx(&oracle(0), report(100)), t.tx(&oracle(1), report(300))];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 2]);
    let batch = vec![t.tx(&oracle(2), report(200)), t.tx(&oracle(0), report(400))];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 2]);
    let mut now = token::reports(&*t.net.view(), CHAIN, 0).unwrap();
    now.sort();
    assert_eq!(now.len(), 3);
    assert!(now.contains(&(id(&oracle(0)), 400)));
    // Still epoch 0: the genesis price holds.
    assert_eq!(t.price(), Some((0, PRICE0)));
    t.advance_to_epoch(1);
    // The first block of epoch 1 fixes the median of {400, 300, 200}.
    let u = user(0);
    assert_eq!(t.one(&u, burn(300)), TxStatus::Ok);
    assert_eq!(t.price(), Some((1, 300)));
    assert_eq!(t.acct(&u).gas, GAS0 - t.fees(&u) + GAS_PER_FIAT);
    assert!(token::reports(&*t.net.view(), CHAIN, 0).unwrap().is_empty());

    // Epoch 1: four reports (lower median), one replaced within a block.
    assert_eq!(t.next_epoch(), 1);
    let batch = vec![
        t.tx(&oracle(0), report(10)),
        t.tx(&oracle(1), report(40)),
        t.tx(&oracle(2), report(20)),
        t.tx(&oracle(3), report(1)),
        t.tx(&oracle(3), report(30)),
    ];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 5]);
    t.advance_to_epoch(2);
    t.block(Vec::new());
    assert_eq!(t.price(), Some((2, 20)));

    // Epoch 2: no reports; epoch 3 carries the price over.
    t.advance_to_epoch(3);
    t.block(Vec::new());
    assert_eq!(t.price(), Some((3, 20)));
    let s = &*t.net.view();
    assert_eq!(price_at(s, CHAIN, 0).unwrap(), Some(PRICE0));
    assert_eq!(price_at(s, CHAIN, 1).unwrap(), Some(300));
    assert_eq!(price_at(s, CHAIN, 2).unwrap(), Some(20));
    assert_eq!(price_at(s, CHAIN, 3).unwrap(), Some(20));
    assert_eq!(price_at(s, CHAIN, 4).unwrap(), None);
}

#[test]
fn the_gas_auction_clears_at_one_price_and_refunds_the_rest() {
    let mut t = TokNet::new();
    t.block(Vec::new());
    let e = t.next_epoch();
    assert_eq!(e, 0);
    let (a, b, c, d, x) = (user(0), user(1), user(2), user(3), user(4));
    let batch = vec![t.tx(&a, bid(4, 300, e)), t.tx(&b, bid(5, 200, e))];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 2]);
    // C and D tie at 150; C is earlier in the block and wins the tie.
    let batch = vec![
        t.tx(&c, bid(3, 150, e)),
        t.tx(&d, bid(2, 150, e)),
        t.tx(&x, bid(1, 500, e + 1)),
        t.tx(&x, bid(1, RESERVE - 1, e)),
        t.tx(&x, bid(0, 500, e)),
        t.tx(&x, bid(1, 0, e)),
    ];
    assert_eq!(
        t.block(batch),
        vec![
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::AuctionClosed,
            TxStatus::BelowReserve,
            TxStatus::InvalidArgument,
            TxStatus::InvalidArgument,
        ]
    );
    // The escrow is held by the bids and counted in the supply.
    let held = 4 * 300 + 5 * 200 + 3 * 150 + 2 * 150;
    assert_eq!(escrow_held(&*t.net.view(), CHAIN).unwrap().int, held);
    assert_eq!(t.net.chain().supply().unwrap().int_escrow, held);
    assert_eq!(t.acct(&a).int, INT0 - 1_200);
    assert_eq!(t.acct(&x).int, INT0, "refused bids are refunded");
    assert_eq!(last_auction(&*t.net.view(), CHAIN).unwrap(), None);
    let supply = t.net.chain().supply().unwrap();

    // A bid for a closed epoch, sent in the first block of the next one.
    t.advance_to_epoch(1);
    assert_eq!(t.one(&x, bid(1, 500, e)), TxStatus::AuctionClosed);
    // 10 lots: A 4 and B 5 in full, C 1 of 3, D none; all pay 150.
    let r = last_auction(&*t.net.view(), CHAIN).unwrap().unwrap();
    assert_eq!(
        r,
        AuctionResult {
            epoch: 0,
            clearing_int_per_lot: Some(150),
            lots_sold: 10,
            bids: 4,
            int_burned: 1_500,
        }
    );
    assert_eq!(
        token::auction_result(&*t.net.view(), CHAIN, 0).unwrap(),
        Some(r)
    );
    assert_eq!(t.acct(&a).int, INT0 - 4 * 150);
    assert_eq!(t.acct(&a).gas, GAS0 - t.fees(&a) + 4 * GAS_PER_FIAT);
    assert_eq!(t.acct(&b).int, INT0 - 5 * 150);
    assert_eq!(t.acct(&b).gas, GAS0 - t.fees(&b) + 5 * GAS_PER_FIAT);
    assert_eq!(t.acct(&c).int, INT0 - 150);
    assert_eq!(t.acct(&c).gas, GAS0 - t.fees(&c) + GAS_PER_FIAT);
    assert_eq!((t.acct(&d).int, t.acct(&d).gas), (INT0, GAS0 - t.fees(&d)));
    assert_eq!(escrow_held(&*t.net.view(), CHAIN).unwrap(), Escrow::NONE);
    let after = t.net.chain().supply().unwrap();
    assert_eq!(after.int_escrow, 0);
    assert_eq!(after.int_burned, supply.int_burned + 1_500);
    assert_eq!(after.gas_minted, supply.gas_minted + 10 * GAS_PER_FIAT);

    // Epoch 1, undersubscribed: everything sells at the lowest bid.
    let batch = vec![t.tx(&a, bid(2, 400, 1)), t.tx(&b, bid(3, 250, 1))];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 2]);
    t.advance_to_epoch(2);
    t.block(Vec::new());
    let r = last_auction(&*t.net.view(), CHAIN).unwrap().unwrap();
    assert_eq!(
        (r.epoch, r.clearing_int_per_lot, r.lots_sold),
        (1, Some(250), 5)
    );
    assert_eq!(t.acct(&a).int, INT0 - 600 - 500);
    // Epoch 2 had no bids: nothing recorded, the last result stays.
    t.advance_to_epoch(3);
    t.block(Vec::new());
    assert_eq!(
        last_auction(&*t.net.view(), CHAIN).unwrap().unwrap().epoch,
        1
    );
    assert_eq!(
        token::auction_result(&*t.net.view(), CHAIN, 2).unwrap(),
        None
    );
}

/// Credits reach accounts the clearing block names nowhere (bidders hot in
/// the world from earlier blocks): they are written with the block.
#[test]
fn credits_reach_accounts_the_clearing_block_does_not_touch() {
    let mut t = TokNet::new();
    let batch = vec![t.tx(&user(0), bid(2, 300, 0))];
    assert_eq!(t.block(batch), vec![TxStatus::Ok]);
    t.advance_to_epoch(1);
    // The clearing block touches only the proposer; user 0 is hot.
    t.block(Vec::new());
    assert_eq!(t.acct(&user(0)).gas, GAS0 - FEE + 2 * GAS_PER_FIAT);
}

#[test]
fn state_survives_a_restart() {
    let mut t = TokNet::new();
    let batch = vec![
        t.tx(&oracle(1), report(999)),
        t.tx(&user(0), bid(1, 200, 0)),
    ];
    assert_eq!(t.block(batch), vec![TxStatus::Ok; 2]);
    t.net.reopen();
    t.advance_to_epoch(1);
    t.block(Vec::new());
    assert_eq!(t.price(), Some((1, 999)));
    assert_eq!(
        last_auction(&*t.net.view(), CHAIN)
            .unwrap()
            .unwrap()
            .lots_sold,
        1
    );
}

// ---------------------------------------------------------------------------
// Random token blocks: a parallel and a sequential chain agree, and value
// is conserved.

#[derive(Debug, Clone)]
enum Op {
    Burn(u32, u128),
    Report(u32, u128),
    Bid(u32, u64, u128, i8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u32..6,
            prop_oneof![Just(0u128), 1u128..5_000, Just(INT0 + 1)]
        )
            .prop_map(|(u, a)| Op::Burn(u, a)),
        (0u32..6, prop_oneof![Just(0u128), 1u128..5_000]).prop_map(|(o, p)| Op::Report(o, p)),
        (0u32..6, 0u64..6, 50u128..400, -1i8..2).prop_map(|(u, l, p, e)| Op::Bid(u, l, p, e)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parallel_and_sequential_chains_agree_and_conserve_value(
        blocks in prop::collection::vec(prop::collection::vec(op(), 0..6), 1..11),
    ) {
        let objects = token::genesis_objects(&token_cfg()).unwrap();
        let mut par = TokNet::with(true, &objects);
        let mut seq = TokNet::with(false, &objects);
        for ops in blocks {
            let epoch = par.next_epoch() as i64;
            let batch: Vec<Vec<u8>> = ops
                .iter()
                .map(|op| match *op {
                    Op::Burn(u, a) => par.tx(&user(u), burn(a)),
                    // Users 4 and 5 are no oracles.
                    Op::Report(o, p) if o < 4 => par.tx(&oracle(o), report(p)),
                    Op::Report(o, p) => par.tx(&user(o), report(p)),
                    Op::Bid(u, l, p, e) => {
                        par.tx(&user(u), bid(l, p, (epoch + e as i64).max(0) as u64))
                    }
                })
                .collect();
            seq.nonces = par.nonces.clone();
            let a = par.block(batch.clone());
            let b = seq.block(batch);
            prop_assert_eq!(a, b);
            prop_assert_eq!(par.net.head().state_root, seq.net.head().state_root);
        }
        // Past the next epoch's start, so the last auction clears.
        let e = par.next_epoch() + 1;
        seq.nonces = par.nonces.clone();
        par.advance_to_epoch(e);
        seq.advance_to_epoch(e);
        par.block(Vec::new());
        seq.block(Vec::new());
        prop_assert_eq!(par.net.head().state_root, seq.net.head().state_root);
        prop_assert_eq!(escrow_held(&*par.net.view(), CHAIN).unwrap(), Escrow::NONE);
        let s = par.net.chain().supply().unwrap();
        prop_assert_eq!(s.int_escrow, 0);
        prop_assert_eq!(s.int_total, s.int_genesis - s.int_burned);
    }
}
