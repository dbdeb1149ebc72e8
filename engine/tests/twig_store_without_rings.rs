//! The store's reads where the kernel gives no io_uring ring (too old, a
//! sandbox that refuses it, or `INT_IO_URING=0`): one read per entry on
//! the reader threads. Blocks of thousands of writes give the reference's
//! roots, and reads of many keys at the current and at held versions give
//! the model's values. Its own test binary: the choice holds for the
//! whole process.

mod common;

use std::collections::BTreeMap;

use common::MemLog;
use int_engine::state::proof::Hash32;
use int_engine::storage::twig::TwigStore;
use int_engine::storage::twig::log::{disable_rings, rings_work};

fn key(i: u16) -> Hash32 {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

#[test]
fn reads_without_rings_follow_the_reference() {
    use rand::{Rng, SeedableRng};
    disable_rings();
    assert!(!rings_work());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open(dir.path(), None).unwrap();
    let mut reference = MemLog::new();
    let mut model: BTreeMap<Hash32, Vec<u8>> = BTreeMap::new();
    let keys: Vec<Hash32> = (0..5000).map(key).collect();
    let values = |m: &BTreeMap<Hash32, Vec<u8>>| -> Vec<Option<Vec<u8>>> {
        keys.iter().map(|k| m.get(k).cloned()).collect()
    };
    let mut held = Vec::new();
    for b in 0..6u8 {
        let mut w: BTreeMap<Hash32, Option<Vec<u8>>> = BTreeMap::new();
        for _ in 0..3000 {
            let k = rng.gen_range(0..4500u16);
            let v = (rng.gen_range(0..8) != 0).then(|| vec![b; 1 + k as usize % 300]);
            w.insert(key(k), v);
        }
        let w: Vec<(Hash32, Option<Vec<u8>>)> = w.into_iter().collect();
        // Read first, as a block's loads do (the planner then takes
        // these entries from the read cache).
        assert_eq!(
            store.values_at(&store.version(), &keys).unwrap(),
            values(&model)
        );
        for (k, v) in &w {
            match v {
                Some(v) => model.insert(*k, v.clone()),
                None => model.remove(k),
            };
        }
        reference.block(&w).unwrap();
        let p = store.prepare(&w).unwrap();
        let written = store.write(&p).unwrap();
        store.apply(&p, written).unwrap();
        assert_eq!(store.root(), reference.tree.root(), "block {b}");
        held.push((store.version(), model.clone()));
    }
    for (v, m) in &held {
        assert_eq!(store.values_at(v, &keys).unwrap(), values(m));
    }
}
