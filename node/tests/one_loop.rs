//! One block loop: the node's path (`int devnet` and `int run`: the chain
//! its spec opens with the identity tree hashed through the accelerator,
//! admission, `produce_block`) and `int bench tps`'s path (the spec with
//! the CPU hasher, the same admission and `produce_block`) take the same
//! stream of transactions to the same state roots, block by block.

use std::sync::{Arc, Mutex};

use int_engine::chain::{Chain, ChainConfig};
use int_engine::crypto::bls::{CpuG1, SecretKey};
use int_engine::mempool::Mempool;
use int_engine::storage::Storage;
use int_gpu::{Accel, Accelerator, Thresholds};
use int_node::accel::GpuPoseidon;
use int_node::service::node::{Admitter, Stats, produce_block};
use int_node::service::spec::ChainSpec;
use int_node::sim::fleet::{Fleet, validator_account};
use int_schemas::Hash32;
use int_schemas::wire::TxStatus;

const CHAIN: u32 = 1;
const DEVICES: usize = 64;
const BLOCKS: u64 = 4;

/// Each block: every device registers (the first) or pays the next one.
fn stream(fleet: &Fleet) -> Vec<Vec<Vec<u8>>> {
    (0..BLOCKS)
        .map(|b| {
            (0..DEVICES)
                .map(|i| {
                    if b == 0 {
                        fleet.register_tx(CHAIN, i, 0)
                    } else {
                        fleet.transfer_tx(CHAIN, i, b, fleet.ids[(i + 1) % DEVICES], 3 + b as u128)
                    }
                })
                .collect()
        })
        .collect()
}

/// A fresh chain of `spec` in `dir` with the fleet's devices at genesis:
/// the store, the chain and its validator.
fn open(spec: ChainSpec, dir: &std::path::Path) -> (Arc<dyn Storage>, Chain, SecretKey) {
    let store = int_engine::storage::open(dir).unwrap();
    let validator = SecretKey::from_seed(&[7; 32]);
    let fleet = Fleet::derive(DEVICES, &[9; 32]);
    let mut chain = spec
        .open(
            store.clone(),
            ChainConfig {
                chain_id: CHAIN,
                hot_capacity: 1024,
                parallel: true,
            },
        )
        .unwrap();
    let mut alloc = fleet.genesis_alloc();
    alloc.push(validator_account(&validator));
    chain
        .genesis(&alloc, 1_700_000_000_000, &validator)
        .unwrap();
    (store, chain, validator)
}

/// Runs `blocks` through a fresh chain of `spec` as the node's loop does;
/// the state root and statuses after each block.
fn run(spec: ChainSpec, blocks: &[Vec<Vec<u8>>]) -> Vec<(Hash32, Vec<TxStatus>)> {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut chain, validator) = open(spec, dir.path());
    let mempool = Mutex::new(Mempool::new(1 << 12));
    let stats = Stats::default();
    let admitter = Admitter::new(&*store, CHAIN, None, &CpuG1, &mempool, &stats);
    let mut out = Vec::new();
    for batch in blocks {
        let answers = admitter.admit(batch.clone());
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let (txs, res) = produce_block(&mut chain, &mempool, 1 << 12, &validator, &stats).unwrap();
        assert_eq!(txs.len(), batch.len());
        out.push((res.head.state_root, res.statuses));
    }
    assert_eq!(stats.committed().0, BLOCKS);
    out
}

#[test]
fn the_devnet_path_and_the_bench_path_give_the_same_roots() {
    let fleet = Fleet::derive(DEVICES, &[9; 32]);
    let blocks = stream(&fleet);
    let acc = Accelerator::open(Accel::Cpu, Thresholds::default()).unwrap();
    let node = run(
        ChainSpec::with_hasher(Arc::new(GpuPoseidon::new(acc))),
        &blocks,
    );
    let bench = run(ChainSpec::cpu(), &blocks);
    assert_eq!(node.len(), BLOCKS as usize);
    for (b, (n, t)) in node.iter().zip(&bench).enumerate() {
        assert!(
            n.1.iter().all(|s| *s == TxStatus::Ok),
            "block {b}: {:?}",
            n.1
        );
        assert_eq!(n, t, "block {b}");
    }
    // The blocks changed the state: every root differs from the one before.
    assert!(node.windows(2).all(|w| w[0].0 != w[1].0));
}

#[test]
fn nonces_that_arrive_out_of_order_are_all_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut chain, validator) = open(ChainSpec::cpu(), dir.path());
    let fleet = Fleet::derive(DEVICES, &[9; 32]);
    let mempool = Mutex::new(Mempool::new(1 << 12));
    let stats = Stats::default();
    let admitter = Admitter::new(&*store, CHAIN, None, &CpuG1, &mempool, &stats);
    let mut block = |batch: Vec<Vec<u8>>| {
        let answers = admitter.admit(batch);
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let (txs, res) = produce_block(&mut chain, &mempool, 1 << 12, &validator, &stats).unwrap();
        assert!(
            res.statuses.iter().all(|s| *s == TxStatus::Ok),
            "{:?}",
            res.statuses
        );
        txs.len()
    };
    let to = fleet.ids[1];
    assert_eq!(block(vec![fleet.register_tx(CHAIN, 0, 0)]), 1);
    // Nonces 2 and 3 arrive before 1: the block leaves them waiting.
    let pay = |nonce: u64| fleet.transfer_tx(CHAIN, 0, nonce, to, 5);
    assert_eq!(block(vec![pay(3), pay(2)]), 0);
    assert_eq!(mempool.lock().unwrap().len(), 2);
    // Nonce 1 fills the gap: the next block applies all three, in order.
    assert_eq!(block(vec![pay(1)]), 3);
    let view = store.snapshot().unwrap();
    let sender = view.account(CHAIN, &fleet.ids[0]).unwrap().unwrap();
    assert_eq!(sender.nonce, 4);
    assert!(mempool.lock().unwrap().is_empty());
}
