//! The commit of one block: `Storage::commit_block` with 10 000 dirty
//! accounts and the state update `StateView::prepare_state` returns for
//! them, over a state of 1 000 000 accounts (written once by
//! `Chain::genesis`, untimed).
//!
//! Each iteration commits a new block on the last (the accounts' nonces
//! move, so every record changes), prepared untimed on the committed state:
//! the time is the state log's append and sync, LMDB's transaction (the
//! records, the block, the head) and the log's memory update.
//!
//! Run with `cargo bench -p int-bench --bench commit`; `-- --test` runs
//! each bench once as a smoke test (after the genesis, a few seconds).

use std::time::Duration;

use criterion::BatchSize;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use int_engine::chain::{Chain, ChainConfig};
use int_engine::crypto::bls::SecretKey;
use int_engine::storage::{AccountRecord, BlockWrite, Head, StateUpdate, state_writes};
use int_schemas::AccountId;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const ACCOUNTS: usize = 1_000_000;
const DIRTY: usize = 10_000;
/// Bytes of the sealed block and of its receipts (about what 10 000
/// transfers take).
const BLOCK_BYTES: usize = 2_300_000;
const RECEIPT_BYTES: usize = 700_000;

fn id(i: usize) -> AccountId {
    *blake3::hash(&(i as u64).to_le_bytes()).as_bytes()
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = int_engine::storage::open(dir.path()).expect("open store");
    let proposer = SecretKey::from_seed(&[1; 32]);
    let mut chain = Chain::open(
        store.clone(),
        ChainConfig {
            chain_id: 1,
            hot_capacity: 1,
            parallel: true,
        },
        &[],
    )
    .expect("open chain");
    let record = AccountRecord {
        int: 1 << 60,
        gas: 1 << 60,
        public_key: Some([0x11; 96]),
        ..Default::default()
    };
    let alloc: Vec<(AccountId, AccountRecord)> = (0..ACCOUNTS).map(|i| (id(i), record)).collect();
    let genesis = chain.genesis(&alloc, 0, &proposer).expect("genesis");
    drop(alloc);

    // 10 000 distinct accounts, changed as a transfer would change them.
    let mut rng = StdRng::seed_from_u64(5);
    let mut picked: Vec<usize> = (0..DIRTY * 2).map(|_| rng.gen_range(0..ACCOUNTS)).collect();
    picked.sort_unstable();
    picked.dedup();
    picked.truncate(DIRTY);
    let mut dirty: Vec<(AccountId, AccountRecord)> = picked
        .iter()
        .map(|&i| {
            let mut r = record;
            r.nonce = 1;
            r.int -= rng.gen_range(1..=100);
            r.gas -= 1;
            (id(i), r)
        })
        .collect();
    dirty.sort_unstable_by_key(|d| d.0);
    let mut block = vec![0u8; BLOCK_BYTES];
    rng.fill_bytes(&mut block);
    let mut receipts = vec![0u8; RECEIPT_BYTES];
    rng.fill_bytes(&mut receipts);
    eprintln!(
        "commit bench: {} dirty accounts over {} accounts",
        dirty.len(),
        ACCOUNTS
    );
    // The next block: every dirty account's nonce moves, prepared on the
    // committed state.
    let mut height = genesis.height;
    let mut next = || -> (Vec<(AccountId, AccountRecord)>, StateUpdate, Head) {
        height += 1;
        for (_, r) in &mut dirty {
            r.nonce = height;
        }
        let state = store
            .snapshot()
            .expect("snapshot")
            .prepare_state(1, &state_writes(&dirty, &[]))
            .expect("prepare state");
        let head = Head {
            height,
            hash: [7; 32],
            state_root: state.root(),
            accounts: genesis.accounts,
        };
        (dirty.clone(), state, head)
    };

    let mut g = c.benchmark_group("commit");
    g.throughput(Throughput::Elements(DIRTY as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("commit_block_10k_accounts_1M", |b| {
        b.iter_batched(
            &mut next,
            |(accounts, state, head)| {
                store
                    .commit_block(&BlockWrite {
                        chain_id: 1,
                        accounts: &accounts,
                        state: &state,
                        height: head.height,
                        block: &block,
                        receipts: &receipts,
                        tx_hashes: &[],
                        head,
                        objects: &[],
                    })
                    .expect("commit")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(commit_benches, commit);
criterion_main!(commit_benches);
