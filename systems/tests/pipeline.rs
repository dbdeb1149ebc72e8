//! Integration tests of the block pipeline: ingress → (mempool) → execute →
//! commit → re-verify, each asserting the specific error or status.

mod common;

use bevy_ecs::world::World;
use common::*;
use int_engine::chain::ChainError;
use int_engine::crypto::bls::{SecretKey, tx_message};
use int_engine::ingress::IngressError;
use int_engine::mempool::{Mempool, MempoolError};
use int_engine::storage::{self, AccountRecord};
use int_engine::world::{AccountKey, HotMeta, HotSet, Inbox, Outbox};
use int_schemas::wire::{DeviceKind, Token, TxStatus};
use int_schemas::{AccountId, HeaderFields, PayloadSpec, SkuRef, build_envelope, decode_block};

const INT: u128 = 1_000;
const GAS: u128 = 100;

/// `n` registered keys funded with [`INT`] and [`GAS`], and their chain.
fn setup(n: u32) -> (Vec<SecretKey>, Net) {
    let keys: Vec<SecretKey> = (0..n).map(key).collect();
    let alloc: Vec<_> = keys
        .iter()
        .map(|k| (id(k), registered(k, INT, GAS)))
        .collect();
    (keys, Net::new(&alloc))
}

fn acct(net: &Net, k: &SecretKey) -> AccountRecord {
    net.account(&id(k)).expect("account exists")
}

#[test]
fn replayed_nonce_is_stale_in_mempool_and_bad_in_a_block() {
    let (k, mut net) = setup(2);
    let tx = transfer(&k[0], 0, 5, id(&k[1]), 100);
    assert_eq!(net.block_ok(vec![tx.clone()]), vec![TxStatus::Ok]);
    let committed = acct(&net, &k[0]).nonce;
    assert_eq!(committed, 1);

    // The replay is still well signed: ingress is stateless about nonces.
    let checked = net.ingress(vec![tx]);
    assert!(checked.rejected.is_empty());
    let replay = checked.accepted[0].clone();

    let mut pool = Mempool::new(16);
    assert_eq!(
        pool.admit(replay.clone(), Some(committed)),
        Err(MempoolError::StaleNonce { next: 1, got: 0 })
    );
    assert!(pool.is_empty());
    // Without the committed nonce the pool takes it once, not twice.
    assert_eq!(pool.admit(replay.clone(), None), Ok(()));
    assert_eq!(
        pool.admit(replay.clone(), None),
        Err(MempoolError::Duplicate(0))
    );

    // Forced into a block anyway: BadNonce, no fee, nothing changes.
    let before = net.accounts();
    let r = net.execute(&[replay]);
    assert_eq!(r.statuses, vec![TxStatus::BadNonce]);
    let receipts = net.receipts(r.head.height);
    assert_eq!(receipts[0].status, TxStatus::BadNonce);
    assert_eq!(receipts[0].fee_charged, 0);
    assert_eq!(net.accounts(), before);
}

#[test]
fn double_spend_in_one_block() {
    let (k, mut net) = setup(3);
    // Same nonce twice: the second is a replay of the slot.
    let st = net.block_ok(vec![
        transfer(&k[0], 0, 1, id(&k[1]), 600),
        transfer(&k[0], 0, 1, id(&k[2]), 600),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::BadNonce]);
    let a0 = acct(&net, &k[0]);
    assert_eq!((a0.int, a0.gas, a0.nonce), (400, GAS - 1, 1));
    assert_eq!(acct(&net, &k[1]).int, INT + 600);
    assert_eq!(acct(&net, &k[2]).int, INT);

    // Consecutive nonces, each spending the whole balance.
    let st = net.block_ok(vec![
        transfer(&k[0], 1, 1, id(&k[1]), 400),
        transfer(&k[0], 2, 1, id(&k[2]), 400),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::InsufficientBalance]);
    let a0 = acct(&net, &k[0]);
    // The failed transfer still advanced the nonce and paid its fee.
    assert_eq!((a0.int, a0.gas, a0.nonce), (0, GAS - 3, 3));
    assert_eq!(acct(&net, &k[1]).int, INT + 1000);
    assert_eq!(acct(&net, &k[2]).int, INT);
}

#[test]
fn credits_are_spendable_only_from_the_next_block() {
    let (k, mut net) = setup(3);
    let st = net.block_ok(vec![
        transfer(&k[0], 0, 0, id(&k[1]), INT),
        transfer(&k[1], 0, 0, id(&k[2]), INT + 1),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::InsufficientBalance]);
    let st = net.block_ok(vec![transfer(&k[1], 1, 0, id(&k[2]), INT + 1)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    assert_eq!(acct(&net, &k[1]).int, INT - 1);
    assert_eq!(acct(&net, &k[2]).int, 2 * INT + 1);
}

#[test]
fn insufficient_balance_charges_the_fee() {
    let (k, mut net) = setup(2);
    let st = net.block_ok(vec![transfer(&k[0], 0, 7, id(&k[1]), INT + 1)]);
    assert_eq!(st, vec![TxStatus::InsufficientBalance]);
    let a0 = acct(&net, &k[0]);
    assert_eq!((a0.int, a0.gas, a0.nonce), (INT, GAS - 7, 1));
    assert_eq!(acct(&net, &k[1]).int, INT);
    assert_eq!(net.receipts(1)[0].fee_charged, 7);
}

#[test]
fn insufficient_fee_changes_nothing() {
    let (k, mut net) = setup(2);
    let before = net.accounts();
    let st = net.block_ok(vec![transfer(&k[0], 0, GAS + 1, id(&k[1]), 1)]);
    assert_eq!(st, vec![TxStatus::InsufficientFee]);
    assert_eq!(net.accounts(), before);
    assert_eq!(net.receipts(1)[0].fee_charged, 0);
    // The whole GAS balance is a payable fee.
    let st = net.block_ok(vec![transfer(&k[0], 0, GAS, id(&k[1]), 1)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    assert_eq!(acct(&net, &k[0]).gas, 0);
}

#[test]
fn gas_is_not_transferable() {
    let (k, mut net) = setup(2);
    let st = net.block_ok(vec![transfer_tok(&k[0], 0, 2, id(&k[1]), 10, Token::Gas)]);
    assert_eq!(st, vec![TxStatus::GasNotTransferable]);
    let a0 = acct(&net, &k[0]);
    assert_eq!((a0.int, a0.gas, a0.nonce), (INT, GAS - 2, 1));
    let a1 = acct(&net, &k[1]);
    assert_eq!((a1.int, a1.gas), (INT, GAS));
}

#[test]
fn unknown_chain_id_is_refused_at_ingress() {
    let (k, net) = setup(2);
    let body = transfer_body(CHAIN + 1, id(&k[0]), 0, 1, id(&k[1]), 1, Token::Int);
    let other_chain = seal(&k[0], CHAIN + 1, &body);
    // Right chain id in the body, but signed for another chain.
    let body = transfer_body(CHAIN, id(&k[0]), 0, 1, id(&k[1]), 1, Token::Int);
    let cross_signed = seal(&k[0], CHAIN + 1, &body);
    let c = net.ingress(vec![other_chain, cross_signed]);
    assert!(c.accepted.is_empty());
    assert_eq!(
        c.rejected,
        vec![
            (
                0,
                IngressError::WrongChain {
                    expected: CHAIN,
                    got: CHAIN + 1
                }
            ),
            (1, IngressError::BadSignature),
        ]
    );
}

#[test]
fn wrong_signatures_are_refused_at_ingress() {
    let (k, net) = setup(3);
    let body = transfer_body(CHAIN, id(&k[0]), 0, 1, id(&k[1]), 1, Token::Int);
    // Signed by another (registered) key.
    let by_other = seal(&k[2], CHAIN, &body);
    // Signed by the right key, over another body.
    let body2 = transfer_body(CHAIN, id(&k[0]), 0, 1, id(&k[1]), 2, Token::Int);
    let sig2 = k[0].sign(&tx_message(CHAIN, &body2));
    let other_body = build_envelope(&body, &sig2.to_bytes());
    // Bytes that are no signature at all.
    let garbage = build_envelope(&body, &[0x11; 48]);
    let good = seal(&k[0], CHAIN, &body);
    let c = net.ingress(vec![by_other, other_body, garbage, good]);
    assert_eq!(
        c.rejected,
        vec![
            (0, IngressError::BadSignature),
            (1, IngressError::BadSignature),
            (2, IngressError::MalformedSignature),
        ]
    );
    assert_eq!(c.accepted.len(), 1);
    assert_eq!(c.accepted[0].body(), &body[..]);
}

#[test]
fn one_bad_signature_among_1000() {
    const SENDERS: u32 = 100;
    const PER: u64 = 10;
    let (k, mut net) = setup(SENDERS);
    let bad_sender = 37usize;
    let bad_index = (PER as usize - 1) * SENDERS as usize + bad_sender;
    let mut batch = Vec::with_capacity(1000);
    for n in 0..PER {
        for s in 0..SENDERS as usize {
            let to = id(&k[(s + 1) % SENDERS as usize]);
            if batch.len() == bad_index {
                // Signed by the sender, but over another amount.
                let body = transfer_body(CHAIN, id(&k[s]), n, 1, to, 3, Token::Int);
                let other = transfer_body(CHAIN, id(&k[s]), n, 1, to, 4, Token::Int);
                let sig = k[s].sign(&tx_message(CHAIN, &other));
                batch.push(build_envelope(&body, &sig.to_bytes()));
            } else {
                batch.push(transfer(&k[s], n, 1, to, 3));
            }
        }
    }
    assert_eq!(batch.len(), 1000);
    let (c, r) = net.block(batch);
    assert_eq!(c.rejected, vec![(bad_index, IngressError::BadSignature)]);
    assert_eq!(c.accepted.len(), 999);
    assert_eq!(r.statuses.len(), 999);
    assert!(r.statuses.iter().all(|s| *s == TxStatus::Ok));
    assert!(net.receipts(1).iter().all(|r| r.status == TxStatus::Ok));
    assert_eq!(acct(&net, &k[bad_sender]).nonce, PER - 1);
    assert_eq!(acct(&net, &k[0]).nonce, PER);
    let h = net.head();
    let block = net.view().block(CHAIN, h.height).unwrap().unwrap();
    net.chain().verify_block(&block).expect("block re-verifies");
}

#[test]
fn registration_rules() {
    let (k, mut net) = setup(2);
    let dev = key(1000);
    let other = key(1001);
    // Register with a PoP of another key.
    let bad_pop = seal(
        &dev,
        CHAIN,
        &register_body(id(&dev), 0, 0, &dev.public_key(), &other.prove_possession()),
    );
    // Register with a "PoP" made under the signing DST.
    let sig_dst_pop = dev.sign(&dev.public_key().to_bytes());
    let wrong_dst = seal(
        &dev,
        CHAIN,
        &register_body(id(&dev), 0, 0, &dev.public_key(), &sig_dst_pop),
    );
    // A registered account registering another key.
    let mismatch_body = register_body(id(&k[0]), 0, 0, &dev.public_key(), &dev.prove_possession());
    let mismatch = seal(&dev, CHAIN, &mismatch_body);
    let mismatch_by_sender = seal(&k[0], CHAIN, &mismatch_body);
    // A device that never registered sends a transfer.
    let unknown = transfer(&other, 0, 0, id(&k[0]), 0);
    let c = net.ingress(vec![
        bad_pop,
        wrong_dst,
        mismatch,
        mismatch_by_sender,
        unknown,
    ]);
    assert!(c.accepted.is_empty());
    assert_eq!(
        c.rejected,
        vec![
            (0, IngressError::BadPop),
            (1, IngressError::BadPop),
            (2, IngressError::SenderKeyMismatch),
            (3, IngressError::SenderKeyMismatch),
            (4, IngressError::UnknownSender),
        ]
    );

    // A valid registration creates the account (fee 0: it holds no GAS).
    let accounts0 = net.head().accounts;
    let st = net.block_ok(vec![register(&dev, 0, 0)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    let rec = net.account(&id(&dev)).expect("registered");
    assert_eq!(rec.public_key, Some(dev.public_key().to_bytes()));
    assert_eq!(rec.device_kind, DeviceKind::Meter.0);
    assert_eq!(rec.metadata_hash, [0x5a; 32]);
    assert_eq!(rec.nonce, 1);
    assert_eq!(net.head().accounts, accounts0 + 1);

    // Funded, it can send; registering again fails but costs its fee.
    net.block_ok(vec![transfer(&k[0], 0, 0, id(&dev), 50)]);
    let st = net.block_ok(vec![
        transfer(&dev, 1, 0, id(&k[1]), 20),
        register(&dev, 2, 0),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::AlreadyRegistered]);
    let rec = net.account(&id(&dev)).unwrap();
    assert_eq!((rec.int, rec.nonce), (30, 3));
    // A registered key's re-registration with a fee is charged.
    let st = net.block_ok(vec![register(&k[1], 0, 3)]);
    assert_eq!(st, vec![TxStatus::AlreadyRegistered]);
    assert_eq!(acct(&net, &k[1]).gas, GAS - 3);
}

#[test]
fn registration_and_transfer_in_one_batch() {
    let (k, mut net) = setup(1);
    // Funded at genesis, but not registered.
    let dev = key(2000);
    let mut net2 = Net::new(&[
        (id(&k[0]), registered(&k[0], INT, GAS)),
        (id(&dev), unregistered(500, 10)),
    ]);
    let st = net2.block_ok(vec![
        register(&dev, 0, 2),
        transfer(&dev, 1, 2, id(&k[0]), 500),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::Ok]);
    let rec = net2.account(&id(&dev)).unwrap();
    assert_eq!((rec.int, rec.gas, rec.nonce), (0, 6, 2));
    let h = net2.head();
    let block = net2.view().block(CHAIN, h.height).unwrap().unwrap();
    net2.chain()
        .verify_block(&block)
        .expect("block re-verifies");

    // A registration that fails on chain (no GAS for its fee) lets the
    // transfer behind it through ingress; the chain refuses it.
    let poor = key(2001);
    let st = net.block_ok(vec![
        register(&poor, 0, 1),
        transfer(&poor, 1, 0, id(&k[0]), 0),
    ]);
    assert_eq!(st, vec![TxStatus::InsufficientFee, TxStatus::UnknownSender]);
    assert_eq!(net.account(&id(&poor)), None);
    // The committed block still re-verifies.
    let h = net.head();
    let block = net.view().block(CHAIN, h.height).unwrap().unwrap();
    net.chain().verify_block(&block).expect("block re-verifies");
}

#[test]
fn transfer_of_a_sender_whose_registration_failed_stays_out_of_the_block() {
    let (k, mut net) = setup(1);
    // Ingress admits both in one batch (the registration's key signs the
    // transfer), but the registration fails on chain for want of GAS and
    // the transfer lands in a later block, where its sender has no key.
    let poor = key(2002);
    let checked = net.ingress(vec![
        register(&poor, 0, 1),
        transfer(&poor, 1, 0, id(&k[0]), 0),
    ]);
    assert_eq!(checked.accepted.len(), 2, "{:?}", checked.rejected);
    let r1 = net.execute(&checked.accepted[..1]);
    assert_eq!(r1.statuses, vec![TxStatus::InsufficientFee]);
    let r2 = net.execute(&checked.accepted[1..]);
    assert_eq!(r2.statuses, vec![TxStatus::UnknownSender]);
    let h = net.head();
    let block = net.view().block(CHAIN, h.height).unwrap().unwrap();
    let decoded = int_schemas::decode_block(&block).unwrap();
    assert!(
        decoded.bodies.is_empty(),
        "the unverifiable transfer is not sealed"
    );
    assert!(net.receipts(h.height).is_empty());
    net.chain().verify_block(&block).expect("block re-verifies");
}

#[test]
fn fees_go_to_the_proposer_and_value_is_conserved() {
    let (k, mut net) = setup(4);
    let fresh = fresh_id(1);
    let before = totals(&*net.view());
    let p = id(&net.proposer);
    let gas_p = net.account(&p).unwrap().gas;
    let st = net.block_ok(vec![
        transfer(&k[0], 0, 3, id(&k[1]), 10),                // Ok, fee 3
        transfer(&k[0], 0, 4, id(&k[1]), 10),                // BadNonce, no fee
        transfer(&k[1], 0, 5, fresh, INT + 1),               // InsufficientBalance, fee 5
        transfer_tok(&k[2], 0, 6, id(&k[3]), 1, Token::Gas), // GasNotTransferable, fee 6
        transfer(&k[3], 0, GAS + 1, fresh, 1),               // InsufficientFee, no fee
        transfer(&k[3], 0, 0, fresh, 99),                    // Ok, no fee
        transfer(&k[1], 1, 7, fresh, 1),                     // Ok, fee 7
    ]);
    use TxStatus as S;
    assert_eq!(
        st,
        vec![
            S::Ok,
            S::BadNonce,
            S::InsufficientBalance,
            S::GasNotTransferable,
            S::InsufficientFee,
            S::Ok,
            S::Ok
        ]
    );
    let fees: u128 = net.receipts(1).iter().map(|r| r.fee_charged).sum();
    assert_eq!(fees, 3 + 5 + 6 + 7);
    assert_eq!(net.account(&p).unwrap().gas, gas_p + fees);
    assert_eq!(net.account(&fresh).unwrap().int, 100);
    assert_eq!(totals(&*net.view()), before);
    // A proposer who also sends pays itself.
    let mut alloc: Vec<(AccountId, AccountRecord)> = vec![];
    let pk = proposer_key();
    alloc.push((id(&pk), registered(&pk, 10, 10)));
    let mut net = Net::new(&alloc);
    let before = totals(&*net.view());
    let st = net.block_ok(vec![transfer(&pk, 0, 10, fresh, 10)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    let r = net.account(&id(&pk)).unwrap();
    assert_eq!((r.int, r.gas), (0, 10));
    assert_eq!(totals(&*net.view()), before);
}

#[test]
fn locked_amounts_of_payloads_no_plugin_decides_come_back() {
    // This chain runs the ledger only: a market purchase is not executable,
    // its fee is taken, and what the Debit stage locked for it returns.
    let (k, mut net) = setup(2);
    let buy = |nonce, qty| {
        signed(
            &k[0],
            nonce,
            2,
            PayloadSpec::Buy {
                sku: SkuRef {
                    seller: id(&k[1]),
                    seq: 0,
                },
                qty,
                max_unit_price: 10,
            },
        )
    };
    let before = totals(&*net.view());
    // 9 × 10 GAS locks 90 of the 98 left after the fee; 10 × 10 cannot.
    let st = net.block_ok(vec![buy(0, 9), buy(1, 10)]);
    assert_eq!(
        st,
        vec![TxStatus::UnsupportedPayload, TxStatus::InsufficientBalance]
    );
    assert_eq!(acct(&net, &k[0]).gas, GAS - 4);
    assert_eq!(totals(&*net.view()), before);
    let supply = net.chain().supply().unwrap();
    assert_eq!(supply.fees_paid, 4);
    assert_eq!(supply.gas_total, before.1);
    assert_eq!((supply.int_escrow, supply.gas_escrow), (0, 0));
}

#[test]
fn zero_fee_transfers_are_committed() {
    // Nonce and debit of a fee-less transaction must reach storage, not
    // only the hot set.
    let (k, mut net) = setup(2);
    let before = totals(&*net.view());
    let st = net.block_ok(vec![transfer(&k[0], 0, 0, id(&k[1]), 300)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    let a0 = acct(&net, &k[0]);
    assert_eq!((a0.int, a0.nonce), (INT - 300, 1));
    assert_eq!(totals(&*net.view()), before);
    // After a restart (the hot set is gone) the state is the same.
    net.reopen();
    let st = net.block_ok(vec![transfer(&k[0], 1, 0, id(&k[1]), INT - 300)]);
    assert_eq!(st, vec![TxStatus::Ok]);
    assert_eq!(acct(&net, &k[0]).int, 0);
    assert_eq!(acct(&net, &k[1]).int, 2 * INT);
}

/// Flips the lowest bit of the first occurrence of `needle` in `hay`
/// (at `offset` within it).
fn flip(hay: &[u8], needle: &[u8], offset: usize) -> Vec<u8> {
    let at = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in block");
    let mut out = hay.to_vec();
    out[at + offset] ^= 1;
    out
}

fn invalid(r: Result<(), ChainError>) -> String {
    match r {
        Err(ChainError::InvalidBlock(s)) => s,
        other => panic!("expected InvalidBlock, got {other:?}"),
    }
}

#[test]
fn committed_blocks_reverify_and_tampering_is_caught() {
    let (k, mut net) = setup(3);
    let genesis_head = net.head();
    const AMOUNT: u128 = 0x0b0a_0908_0706_0504;
    let st = net.block_ok(vec![
        transfer(&k[0], 0, 1, id(&k[1]), 5),
        transfer(&k[1], 0, 1, id(&k[2]), AMOUNT),
        transfer(&k[2], 0, 1, id(&k[0]), 5),
    ]);
    assert_eq!(
        st,
        vec![TxStatus::Ok, TxStatus::InsufficientBalance, TxStatus::Ok]
    );
    let genesis = net.view().block(CHAIN, 0).unwrap().unwrap();
    net.chain()
        .verify_block(&genesis)
        .expect("genesis re-verifies");
    let block = net.view().block(CHAIN, 1).unwrap().unwrap();
    net.chain().verify_block(&block).expect("block re-verifies");

    // A byte of a body (the amount of the second transfer).
    let bad = flip(&block, &(AMOUNT as u64).to_le_bytes(), 0);
    let msg = invalid(net.chain().verify_block(&bad));
    assert!(msg.contains("aggregate"), "{msg}");

    let b = decode_block(&block).unwrap();
    let agg = b.block.tx_signature().0;
    let psig = b.block.proposer_signature().0;
    let header = HeaderFields::from_wire(&b.header);
    assert_eq!(header.tx_count, 3);
    assert_eq!(header.parent_hash, genesis_head.hash);
    // A byte of the aggregate signature, at either end of the encoding.
    for off in [47, 20] {
        let bad = flip(&block, &agg, off);
        let msg = invalid(net.chain().verify_block(&bad));
        assert!(msg.contains("aggregate"), "{msg}");
    }
    // A byte of the proposer's signature.
    let bad = flip(&block, &psig, 47);
    assert!(invalid(net.chain().verify_block(&bad)).contains("proposer"));
    // A byte of the header (its time).
    let bad = flip(&block, &header.time_ms.to_le_bytes(), 0);
    assert!(net.chain().verify_block(&bad).is_err());
    // Truncated bytes.
    assert!(net.chain().verify_block(&block[..block.len() / 2]).is_err());
}

#[test]
fn state_root_matches_a_recomputation() {
    let (k, mut net) = setup(6);
    for b in 0..4u64 {
        let mut batch = Vec::new();
        for (i, sk) in k.iter().enumerate() {
            let to = if i % 2 == 0 {
                fresh_id((b * 10 + i as u64) as u32)
            } else {
                id(&k[(i + 1) % k.len()])
            };
            batch.push(transfer(sk, b, 1, to, 10 + i as u128));
        }
        let st = net.block_ok(batch);
        assert!(st.iter().all(|s| *s == TxStatus::Ok));
        let h = net.head();
        let (root, n) = storage::recompute_root(&*net.view(), CHAIN).unwrap();
        assert_eq!(root, h.state_root, "block {b}");
        assert_eq!(n, h.accounts, "block {b}");
    }
    // 6 keys + proposer + 3 fresh receivers per block.
    assert_eq!(net.head().accounts, 7 + 4 * 3);
}

/// Checks the hot set's bookkeeping and returns how many account
/// entities the world holds: each indexed entity holds its id and is not
/// evicted, each free one is evicted, and no other entity is an account.
fn hot_set_entities(world: &World) -> usize {
    let hot = world.resource::<HotSet>();
    for (id, &e) in &hot.index {
        assert_eq!(world.get::<AccountKey>(e).map(|k| k.0), Some(*id));
        assert!(!world.get::<HotMeta>(e).expect("an account").evicted);
    }
    for &e in &hot.free {
        assert!(world.get::<HotMeta>(e).expect("an account").evicted);
        assert!(world.get::<Outbox>(e).expect("an account").0.is_empty());
        assert!(world.get::<Inbox>(e).expect("an account").0.is_empty());
    }
    let all = world
        .iter_entities()
        .filter(|e| e.contains::<HotMeta>())
        .count();
    assert_eq!(all, hot.index.len() + hot.free.len(), "a lost entity");
    all
}

#[test]
fn hot_set_stays_bounded_and_results_do_not_change() {
    const N: u32 = 40;
    let keys: Vec<SecretKey> = (0..N).map(key).collect();
    let alloc: Vec<_> = keys
        .iter()
        .map(|k| (id(k), registered(k, INT, GAS)))
        .collect();
    let mut small = Net::with_config(&alloc, config(true, 8));
    let mut large = Net::with_config(&alloc, config(false, 100_000));
    for b in 0..6u64 {
        let mut batch = Vec::new();
        for (i, sk) in keys.iter().enumerate() {
            let to = match (i + b as usize) % 3 {
                0 => fresh_id((b * 100 + i as u64) as u32),
                _ => id(&keys[(i * 7 + b as usize) % N as usize]),
            };
            batch.push(transfer(sk, b, (i % 3) as u128, to, (b as u128 + 1) * 20));
        }
        let cs = small.ingress(batch.clone());
        let cl = large.ingress(batch);
        assert!(cs.rejected.is_empty() && cl.rejected.is_empty());
        let rs = small.execute(&cs.accepted);
        let rl = large.execute(&cl.accepted);
        assert!(
            small.chain().hot_accounts() <= 8,
            "hot set holds {}",
            small.chain().hot_accounts()
        );
        // Evicted entities wait to be reused: the world never holds more
        // account entities than the capacity and one block's accounts.
        let held = hot_set_entities(small.chain().world());
        assert!(held <= 8 + 2 * N as usize + 1, "{held} account entities");
        assert!(large.chain().hot_accounts() > 8);
        assert_eq!(rs.statuses, rl.statuses);
        assert_eq!(rs.head, rl.head, "block {b}");
    }
    assert_eq!(small.accounts(), large.accounts());
    let (root, n) = storage::recompute_root(&*small.view(), CHAIN).unwrap();
    assert_eq!((root, n), (small.head().state_root, small.head().accounts));
}

#[test]
fn restart_keeps_the_head_and_builds_on_it() {
    let (k, mut net) = setup(2);
    assert_eq!(
        net.block_ok(vec![transfer(&k[0], 0, 1, id(&k[1]), 10)]),
        vec![TxStatus::Ok]
    );
    let head1 = net.head();
    assert_eq!(net.chain().head(), Some(head1));
    net.reopen();
    assert_eq!(net.chain().head(), Some(head1));
    let st = net.block_ok(vec![
        transfer(&k[0], 1, 1, id(&k[1]), 10),
        transfer(&k[0], 0, 1, id(&k[1]), 10),
    ]);
    assert_eq!(st, vec![TxStatus::Ok, TxStatus::BadNonce]);
    let head2 = net.head();
    assert_eq!(head2.height, head1.height + 1);
    let block = net.view().block(CHAIN, head2.height).unwrap().unwrap();
    let h = HeaderFields::from_wire(&decode_block(&block).unwrap().header);
    assert_eq!(h.parent_hash, head1.hash);
    assert_eq!(h.height, 2);
    assert_eq!(acct(&net, &k[0]).int, INT - 20);
    net.chain().verify_block(&block).expect("block re-verifies");
    let (root, n) = storage::recompute_root(&*net.view(), CHAIN).unwrap();
    assert_eq!((root, n), (head2.state_root, head2.accounts));
}

#[test]
fn a_key_with_a_bad_pop_signs_nothing_in_its_batch() {
    let (k, mut net) = setup(1);
    let dev = key(3000);
    let other = key(3001);
    let bad_pop = seal(
        &dev,
        CHAIN,
        &register_body(id(&dev), 0, 0, &dev.public_key(), &other.prove_possession()),
    );
    let follow = transfer(&dev, 1, 0, id(&k[0]), 0);
    let (c, r) = net.block(vec![bad_pop, follow]);
    assert_eq!(
        c.rejected,
        vec![(0, IngressError::BadPop), (1, IngressError::UnknownSender)]
    );
    assert!(r.statuses.is_empty());
    let block = net.view().block(CHAIN, r.head.height).unwrap().unwrap();
    net.chain().verify_block(&block).expect("block re-verifies");
    // A registered key's bad re-registration does not hide its transfers.
    let bad_again = seal(
        &k[0],
        CHAIN,
        &register_body(
            id(&k[0]),
            0,
            0,
            &k[0].public_key(),
            &other.prove_possession(),
        ),
    );
    let (c, r) = net.block(vec![bad_again, transfer(&k[0], 0, 0, id(&dev), 1)]);
    assert_eq!(c.rejected, vec![(0, IngressError::BadPop)]);
    assert_eq!(r.statuses, vec![TxStatus::Ok]);
}

/// A sender picks a transfer's recipient freely: the reserved keys of the
/// state log (all zeros, all ones) and the key of a state object (the
/// supply record, which every block with fees rewrites) are accounts like
/// any other, in the same block as the supply's write. The blocks commit,
/// the recipients hold the amounts, and the state audits clean (its root
/// rebuilt from the log, every entry the store's).
#[test]
fn transfers_to_reserved_and_object_keys_are_ordinary_accounts() {
    let (k, mut net) = setup(1);
    let supply_leaf = storage::object_leaf(int_engine::supply::SUPPLY_KEY);
    let to = [[0u8; 32], [0xff; 32], supply_leaf];
    let batch: Vec<Vec<u8>> = to
        .iter()
        .enumerate()
        .map(|(n, t)| transfer(&k[0], n as u64, 5, *t, 7))
        .collect();
    assert_eq!(net.block_ok(batch), vec![TxStatus::Ok; 3]);
    for t in &to {
        assert_eq!(net.account(t).expect("recipient").int, 7);
    }
    let head = net.head();
    let (root, accounts) = storage::recompute_root(&*net.view(), common::CHAIN).unwrap();
    assert_eq!(root, head.state_root);
    assert_eq!(accounts, head.accounts);
    // And the supply record is still the supply record.
    assert!(net.chain().supply().is_ok());
}
