//! The LMDB commit of one block: `Storage::commit_block` with 10 000 dirty
//! accounts and the tree-node batch `smt::update` returns for them, over a
//! state of 1 000 000 accounts (written once by `Chain::genesis`, untimed).
//!
//! Every iteration commits the same write (the same records and nodes, the
//! same head), which is idempotent, so the state does not drift; each one
//! still copies on write every B-tree page it touches and syncs, as a new
//! block would. A second bench commits the accounts alone, without the
//! tree nodes, to show how the cost splits.
//!
//! Run with `cargo bench -p int-bench --bench commit`; `-- --test` runs
//! each bench once as a smoke test (after the genesis, a few seconds).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use int_engine::chain::{Chain, ChainConfig};
use int_engine::crypto::bls::SecretKey;
use int_engine::state::smt::{self, NodeBatch};
use int_engine::storage::{AccountRecord, BlockWrite, Head};
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
    let updates: Vec<_> = dirty.iter().map(|(k, r)| (*k, Some(r.hash()))).collect();
    let view = store.parallel_snapshot().expect("snapshot");
    let reader = view.nodes(1);
    let (state_root, nodes) =
        smt::update(&reader, &genesis.state_root, &updates).expect("smt update");
    drop(view);
    eprintln!(
        "commit bench: {} dirty accounts, {} node puts, {} node deletes, over {} accounts",
        dirty.len(),
        nodes.puts.len(),
        nodes.deletes.len(),
        ACCOUNTS
    );
    let mut block = vec![0u8; BLOCK_BYTES];
    rng.fill_bytes(&mut block);
    let mut receipts = vec![0u8; RECEIPT_BYTES];
    rng.fill_bytes(&mut receipts);
    let head = Head {
        height: 1,
        hash: [7; 32],
        state_root,
        accounts: genesis.accounts,
    };
    fn write<'a>(
        accounts: &'a [(AccountId, AccountRecord)],
        nodes: &'a NodeBatch,
        block: &'a [u8],
        receipts: &'a [u8],
        head: Head,
    ) -> BlockWrite<'a> {
        BlockWrite {
            chain_id: 1,
            accounts,
            nodes,
            height: 1,
            block,
            receipts,
            tx_hashes: &[],
            head,
            objects: &[],
        }
    }
    let no_nodes = NodeBatch::default();

    let mut g = c.benchmark_group("commit");
    g.throughput(Throughput::Elements(dirty.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("commit_block_10k_accounts_and_nodes_1M", |b| {
        let w = write(&dirty, &nodes, &block, &receipts, head);
        b.iter(|| store.commit_block(&w).expect("commit"))
    });
    g.bench_function("commit_block_10k_accounts_only_1M", |b| {
        let w = write(&dirty, &no_nodes, &block, &receipts, head);
        b.iter(|| store.commit_block(&w).expect("commit"))
    });
    g.finish();
}

criterion_group!(commit_benches, commit);
criterion_main!(commit_benches);
