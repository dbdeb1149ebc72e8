//! Sparse Merkle tree benches: one block's update of 10k random keys into a
//! tree of 1M accounts (in memory, so this measures hashing and tree work, not
//! LMDB), and proof generation and verification.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use int_engine::state::smt::{self, EMPTY, Hash32, MemStore};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use std::hint::black_box;

const TREE: usize = 1_000_000;
const BATCH: usize = 10_000;

fn key(rng: &mut StdRng) -> Hash32 {
    let mut k = [0u8; 32];
    rng.fill_bytes(&mut k);
    k
}

/// Builds a tree of `TREE` random keys, inserted in blocks of 100k.
fn build(rng: &mut StdRng) -> (MemStore, Hash32, Vec<Hash32>) {
    let mut store = MemStore::new();
    let mut root = EMPTY;
    let mut keys = Vec::with_capacity(TREE);
    for _ in 0..TREE / 100_000 {
        let ups: Vec<_> = (0..100_000).map(|_| (key(rng), Some(key(rng)))).collect();
        keys.extend(ups.iter().map(|u| u.0));
        let (r, batch) = smt::update(&store, &root, &ups).expect("build");
        store.apply(&batch);
        root = r;
    }
    (store, root, keys)
}

fn benches(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let (store, root, keys) = build(&mut rng);

    let mut g = c.benchmark_group("smt");
    g.sample_size(20);
    // Half inserts of new keys, half overwrites of existing ones.
    g.bench_function("update_10k_into_1M", |b| {
        b.iter_batched(
            || {
                let mut ups: Vec<_> = (0..BATCH / 2)
                    .map(|_| (key(&mut rng), Some(key(&mut rng))))
                    .collect();
                for _ in 0..BATCH / 2 {
                    let k = keys[(rng.next_u64() % TREE as u64) as usize];
                    ups.push((k, Some(key(&mut rng))));
                }
                ups.sort_unstable_by_key(|a| a.0);
                ups.dedup_by(|a, b| a.0 == b.0);
                ups
            },
            |ups| smt::update(&store, &root, &ups).expect("update"),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("prove_1M", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 7919) % TREE;
            smt::prove(&store, &root, &keys[i]).expect("prove")
        })
    });
    let proof = smt::prove(&store, &root, &keys[0]).expect("prove");
    let value = match proof.terminal {
        smt::Terminal::Leaf { value_hash, .. } => value_hash,
        smt::Terminal::Empty => unreachable!("key is present"),
    };
    g.bench_function("verify_1M", |b| {
        b.iter(|| black_box(&proof).verify(&root, &keys[0], Some(&value)))
    });
    g.finish();
}

criterion_group!(smt_benches, benches);
criterion_main!(smt_benches);
