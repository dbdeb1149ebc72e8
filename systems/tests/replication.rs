//! The block pipeline as a replicated state machine: execution is a pure
//! function of the parent snapshot and the block, separate from sealing and
//! committing; a second node checks a proposed block by executing it, and
//! refuses one whose header claims other roots than execution gives.

mod common;

use common::*;
use int_engine::chain::{BlockFields, ChainError, Executed, Timings};
use int_engine::crypto::bls::{SecretKey, Signature, header_message};
use int_engine::ingress::VerifiedTx;
use int_schemas::wire::TxStatus;
use int_schemas::{HeaderFields, build_block, build_header, decode_block};

const INT: u128 = 1_000;
const GAS: u128 = 100;

/// Two nodes with the same genesis, and the keys it funds.
fn two_nodes(n: u32) -> (Vec<SecretKey>, Net, Net) {
    let keys: Vec<SecretKey> = (0..n).map(key).collect();
    let alloc: Vec<_> = keys
        .iter()
        .map(|k| (id(k), registered(k, INT, GAS)))
        .collect();
    let (a, b) = (Net::new(&alloc), Net::new(&alloc));
    assert_eq!(a.head(), b.head(), "same genesis, same head");
    (keys, a, b)
}

/// Round `round`'s transfers around the ring of keys, and one from the
/// first key that fails (more than its balance): every key's transactions
/// of rounds before are committed.
fn ring(keys: &[SecretKey], round: u64) -> Vec<Vec<u8>> {
    let n = keys.len();
    let nonce = |i: usize| if i == 0 { 2 * round } else { round };
    let mut batch: Vec<Vec<u8>> = (0..n)
        .map(|i| transfer(&keys[i], nonce(i), 1, id(&keys[(i + 1) % n]), 7 + i as u128))
        .collect();
    batch.push(transfer(&keys[0], nonce(0) + 1, 1, id(&keys[1]), INT * 10));
    batch
}

fn without_timings(mut e: Executed) -> Executed {
    e.timings = Timings::default();
    e
}

fn fields(net: &Net, time_ms: u64) -> BlockFields {
    BlockFields {
        time_ms,
        proposer: id(&net.proposer),
    }
}

/// Executes, seals and commits `txs` on `net` step by step; the block's bytes.
fn produce(net: &mut Net, txs: &[VerifiedTx]) -> Vec<u8> {
    net.time_ms += 1000;
    let f = fields(net, net.time_ms);
    let proposer = net.proposer.clone();
    let parent = net.store.parallel_snapshot().unwrap();
    let chain = net.chain();
    let executed = chain.execute(&parent, f, txs).unwrap();
    let sealed = chain.seal(executed, txs, &proposer).unwrap();
    let bytes = sealed.block().to_vec();
    let head = chain.commit(sealed).unwrap();
    assert_eq!(net.head(), head);
    bytes
}

/// `block` with its header's fields changed by `edit`, signed again by the
/// proposer (so only execution can tell).
fn forged(block: &[u8], proposer: &SecretKey, edit: impl FnOnce(&mut HeaderFields)) -> Vec<u8> {
    let b = decode_block(block).unwrap();
    let mut h = HeaderFields::from_wire(&b.header);
    edit(&mut h);
    let header = build_header(&h);
    let sig = proposer.sign(&header_message(h.chain_id, &header));
    let agg = Signature::from_bytes(&b.block.tx_signature().0).unwrap();
    build_block(
        &header,
        b.bodies.iter().map(|(_, bytes)| *bytes),
        &agg.to_bytes(),
        &sig.to_bytes(),
    )
}

fn refused<T>(r: Result<T, ChainError>) -> String {
    match r {
        Err(ChainError::InvalidBlock(s)) => s,
        Err(e) => panic!("expected InvalidBlock, got {e:?}"),
        Ok(_) => panic!("expected InvalidBlock, the block was accepted"),
    }
}

#[test]
fn execution_is_a_pure_function_of_the_parent_and_the_block() {
    let (keys, mut net, _) = two_nodes(6);
    let checked = net.ingress(ring(&keys, 0));
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    let txs = checked.accepted;
    let f = fields(&net, T0 + 1000);
    let parent = net.store.parallel_snapshot().unwrap();
    let first = net.chain().execute(&parent, f, &txs).unwrap();
    // Nothing was written: the store's head is still genesis.
    let genesis = net.head();
    assert_eq!(
        net.store.snapshot().unwrap().head(CHAIN).unwrap(),
        Some(genesis)
    );
    assert_eq!(first.header.height, genesis.height + 1);
    assert_eq!(first.header.parent_hash, genesis.hash);
    assert!(first.statuses.contains(&TxStatus::InsufficientBalance));
    // Again from the same parent: the same writes, receipts and roots.
    let second = net.chain().execute(&parent, f, &txs).unwrap();
    let (first, second) = (without_timings(first), without_timings(second));
    assert_eq!(first, second);
    // Sealed with the same key, the same bytes.
    let proposer = net.proposer.clone();
    let a = net.chain().seal(first, &txs, &proposer).unwrap();
    let b = net.chain().seal(second, &txs, &proposer).unwrap();
    assert_eq!(a.block(), b.block());
    // The sequential reference gives the same block.
    let mut seq = Net::with_config(
        &keys
            .iter()
            .map(|k| (id(k), registered(k, INT, GAS)))
            .collect::<Vec<_>>(),
        config(false, 1024),
    );
    let parent = seq.store.parallel_snapshot().unwrap();
    let e = seq.chain().execute(&parent, f, &txs).unwrap();
    let s = seq.chain().seal(e, &txs, &proposer).unwrap();
    assert_eq!(s.block(), a.block());
    // The second execution is the one committed; the world kept its effects.
    net.chain().commit(b).unwrap();
    assert_eq!(net.head().hash, a.head().hash);
}

#[test]
fn a_snapshot_is_not_the_head_after_a_commit() {
    let (keys, mut net, _) = two_nodes(2);
    let before = net.store.snapshot().unwrap();
    let head0 = net.head();
    net.block_ok(vec![transfer(&keys[0], 0, 1, id(&keys[1]), 5)]);
    // The old snapshot still reads the old state; a new one the new.
    assert_eq!(before.head(CHAIN).unwrap(), Some(head0));
    assert_eq!(
        before.account(CHAIN, &id(&keys[0])).unwrap().unwrap().int,
        INT
    );
    assert_eq!(net.account(&id(&keys[0])).unwrap().int, INT - 5);
    // Executing on it is refused: the chain's head moved on.
    let f = fields(&net, T0 + 5000);
    let r = net.chain().execute::<VerifiedTx>(&before, f, &[]);
    assert!(matches!(r, Err(ChainError::ParentMismatch { .. })), "{r:?}");
}

#[test]
fn a_received_block_is_checked_by_executing_it() {
    let (keys, mut a, mut b) = two_nodes(8);
    for round in 0..3u64 {
        let checked = a.ingress(ring(&keys, round));
        let block = produce(&mut a, &checked.accepted);
        let parent = b.store.parallel_snapshot().unwrap();
        let sealed = b.chain().check_block(&parent, &block).unwrap();
        assert_eq!(sealed.block(), &block[..]);
        b.chain().commit(sealed).unwrap();
        assert_eq!(b.head(), a.head(), "round {round}");
        assert_eq!(b.accounts(), a.accounts());
        assert_eq!(b.receipts(b.head().height), a.receipts(a.head().height));
    }
}

#[test]
fn a_block_whose_header_lies_is_refused_and_changes_nothing() {
    let (keys, mut a, mut b) = two_nodes(5);
    let checked = a.ingress(ring(&keys, 0));
    let block = produce(&mut a, &checked.accepted);
    let proposer = a.proposer.clone();
    let head = b.head();
    let accounts = b.accounts();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "state root",
            forged(&block, &proposer, |h| h.state_root[0] ^= 1),
        ),
        (
            "receipts root",
            forged(&block, &proposer, |h| h.receipts_root[31] ^= 1),
        ),
        ("tx root", forged(&block, &proposer, |h| h.tx_root[5] ^= 1)),
        (
            "parent",
            forged(&block, &proposer, |h| h.parent_hash[0] ^= 1),
        ),
        ("height", forged(&block, &proposer, |h| h.height += 1)),
        (
            "proposer",
            forged(&block, &proposer, |h| h.proposer = id(&keys[1])),
        ),
    ];
    for (what, bad) in cases {
        let parent = b.store.parallel_snapshot().unwrap();
        let why = refused(b.chain().check_block(&parent, &bad));
        assert!(!why.is_empty(), "{what}");
        assert_eq!(b.head(), head, "{what} changed the head");
        assert_eq!(b.accounts(), accounts, "{what} changed the state");
    }
    // (The time is the proposer's to choose: signed, it changes no root.)
    // The honest block still checks after all those refusals.
    let parent = b.store.parallel_snapshot().unwrap();
    let sealed = b.chain().check_block(&parent, &block).unwrap();
    b.chain().commit(sealed).unwrap();
    assert_eq!(b.head(), a.head());
    assert_eq!(b.accounts(), a.accounts());
}

#[test]
fn a_block_with_a_transaction_from_an_unknown_sender_is_refused() {
    let (keys, mut a, mut b) = two_nodes(3);
    // The stranger's transfer is left out of a's block; put it back in.
    let stranger = key(99);
    let checked = a.ingress(vec![transfer(&keys[0], 0, 1, id(&keys[1]), 5)]);
    let block = produce(&mut a, &checked.accepted);
    let body = transfer_body(
        CHAIN,
        id(&stranger),
        0,
        1,
        id(&keys[1]),
        5,
        int_schemas::wire::Token::Int,
    );
    let dec = decode_block(&block).unwrap();
    let mut bodies: Vec<&[u8]> = dec.bodies.iter().map(|(_, b)| *b).collect();
    bodies.push(&body);
    let mut h = HeaderFields::from_wire(&dec.header);
    h.tx_count += 1;
    let header = build_header(&h);
    let proposer = a.proposer.clone();
    let sig = proposer.sign(&header_message(CHAIN, &header));
    let agg = Signature::from_bytes(&dec.block.tx_signature().0).unwrap();
    let bad = build_block(
        &header,
        bodies.into_iter(),
        &agg.to_bytes(),
        &sig.to_bytes(),
    );
    let parent = b.store.parallel_snapshot().unwrap();
    // Its signature is not in the aggregate, and its sender has no key.
    refused(b.chain().check_block(&parent, &bad));
    assert_eq!(b.head().height, 0);
}

#[test]
fn hostile_block_bytes_are_refused_without_a_panic_or_a_change() {
    use rand::{Rng, SeedableRng};
    let (keys, mut a, mut b) = two_nodes(4);
    let checked = a.ingress(ring(&keys, 0));
    let block = produce(&mut a, &checked.accepted);
    let head = b.head();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x1badb10c);
    let mut refused_n = 0;
    for i in 0..300 {
        let mut bad = block.clone();
        match i % 3 {
            // One byte flipped somewhere.
            0 => {
                let at = rng.gen_range(0..bad.len());
                bad[at] ^= 1 << rng.gen_range(0..8);
            }
            // Cut short.
            1 => bad.truncate(rng.gen_range(0..bad.len())),
            // A run of random bytes written over it.
            _ => {
                let at = rng.gen_range(0..bad.len());
                let end = (at + rng.gen_range(1..64)).min(bad.len());
                rng.fill(&mut bad[at..end]);
            }
        }
        let parent = b.store.parallel_snapshot().unwrap();
        match b.chain().check_block(&parent, &bad) {
            Err(ChainError::InvalidBlock(_)) => refused_n += 1,
            Err(e) => panic!("mutation {i}: {e:?}"),
            // A flip in bytes nothing reads (FlatBuffers padding) leaves a
            // block that executes to the same header: not committed here.
            Ok(s) => {
                assert_eq!(s.executed().header.state_root, a.head().state_root);
                b.chain().discard();
            }
        }
        assert_eq!(b.head(), head, "mutation {i} changed the head");
    }
    assert!(refused_n > 250, "only {refused_n} of 300 refused");
    // The honest block still goes through.
    let parent = b.store.parallel_snapshot().unwrap();
    let sealed = b.chain().check_block(&parent, &block).unwrap();
    b.chain().commit(sealed).unwrap();
    assert_eq!(b.head(), a.head());
}
