//! The twig log's commitment against a plain model: random blocks of
//! inserts, updates and deletes planned by `plan_block` and applied to a
//! `TwigTree` and an in-memory log must leave exactly the model's state
//! (every key's value, the next-key chain), the root recomputed from
//! scratch, proofs that verify for what is there and not for what is not,
//! and refuse every tampered proof.

mod common;

use std::collections::BTreeMap;

use common::{Check, MemLog};
use int_engine::state::proof::{Hash32, ProofError};
use int_engine::state::twig::{KEY_END, KEY_MIN, Plan, plan_block};
use int_engine::state::twig_proof::{TWIG_ENTRIES, verify_twig_proof};
use proptest::prelude::*;

fn key(i: u8) -> Hash32 {
    *blake3::hash(&[i]).as_bytes()
}

/// A block: writes to keys drawn from a universe of 48, each an upsert
/// or a delete.
fn blocks() -> impl Strategy<Value = Vec<Vec<(u8, Option<Vec<u8>>)>>> {
    let write = (
        0u8..48,
        prop::option::weighted(0.75, prop::collection::vec(any::<u8>(), 0..24)),
    );
    prop::collection::vec(prop::collection::vec(write, 0..24), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_blocks_keep_the_models_state_root_and_proofs(
        blocks in blocks(),
        tamper in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 4),
    ) {
        let mut log = MemLog::new();
        let mut model = BTreeMap::new();
        for block in &blocks {
            let mut writes: BTreeMap<Hash32, Option<Vec<u8>>> = BTreeMap::new();
            for (k, v) in block {
                writes.insert(key(*k), v.clone());
            }
            for (k, v) in &writes {
                match v {
                    Some(v) => model.insert(*k, v.clone()),
                    None => model.remove(k),
                };
            }
            let writes: Vec<_> = writes.into_iter().collect();
            log.block(&writes).unwrap();
            log.check(&model);
        }
        let root = log.tree.root();
        for i in 0..48u8 {
            let k = key(i);
            let proof = log.prove(&k);
            match model.get(&k) {
                Some(v) => {
                    let vh = *blake3::hash(v).as_bytes();
                    prop_assert_eq!(verify_twig_proof(&root, &k, Some(&vh), &proof), Ok(()));
                    prop_assert!(verify_twig_proof(&root, &k, None, &proof).is_err());
                    let other = *blake3::hash(b"another value").as_bytes();
                    prop_assert_eq!(
                        verify_twig_proof(&root, &k, Some(&other), &proof),
                        Err(ProofError::Terminal("another value hash"))
                    );
                    // The predecessor's entry ends at the key: it does
                    // not bracket it.
                    let pred = *log.index.range(..k).next_back().unwrap().1;
                    let pred_proof = log.prove_serial(pred);
                    prop_assert_eq!(
                        verify_twig_proof(&root, &k, None, &pred_proof),
                        Err(ProofError::Terminal("an entry that does not bracket the key"))
                    );
                }
                None => {
                    prop_assert_eq!(verify_twig_proof(&root, &k, None, &proof), Ok(()));
                    let vh = *blake3::hash(b"").as_bytes();
                    prop_assert!(verify_twig_proof(&root, &k, Some(&vh), &proof).is_err());
                }
            }
            // Every tampered byte is refused, whatever the claim.
            for (at, flip) in &tamper {
                let mut bad = proof.clone();
                let at = at.index(bad.len());
                bad[at] ^= flip;
                let claim = model.get(&k).map(|v| *blake3::hash(v).as_bytes());
                prop_assert!(
                    verify_twig_proof(&root, &k, claim.as_ref(), &bad).is_err(),
                    "byte {} of {} flipped by {:#x} still verifies", at, bad.len(), flip
                );
                prop_assert!(verify_twig_proof(&root, &k, claim.as_ref(), &bad[..at]).is_err());
            }
        }
    }
}

/// Many blocks over a fixed population: the compaction moves the log's
/// old end to its tail, the tree drops the dead twigs, and the memory it
/// holds stays bounded while the log's history grows; roots and proofs
/// stay right across twig boundaries and pruning.
#[test]
fn a_long_run_at_a_fixed_population_stays_bounded() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let mut log = MemLog::new();
    let mut model = BTreeMap::new();
    let keys: Vec<Hash32> = (0u32..3000)
        .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
        .collect();
    let mut initial: Vec<(Hash32, Option<Vec<u8>>)> =
        keys.iter().map(|k| (*k, Some(vec![0u8; 8]))).collect();
    initial.sort();
    for (k, v) in &initial {
        model.insert(*k, v.clone().unwrap());
    }
    log.block(&initial).unwrap();
    let mut memory_max_late = 0;
    let mut memory_after_load = 0;
    for b in 0..400u32 {
        let mut writes = BTreeMap::new();
        for _ in 0..200 {
            let k = keys[rng.gen_range(0..keys.len())];
            let v = b.to_le_bytes().to_vec();
            model.insert(k, v.clone());
            writes.insert(k, Some(v));
        }
        log.block(&writes.into_iter().collect::<Vec<_>>()).unwrap();
        if b % 50 == 0 {
            log.check(&model);
        }
        if b == 100 {
            memory_after_load = log.tree.memory_bytes();
        }
        if b > 300 {
            memory_max_late = memory_max_late.max(log.tree.memory_bytes());
        }
    }
    log.check(&model);
    assert!(log.head > 0, "the compaction ran");
    assert!(log.tree.base_serial() > 0, "dead twigs were pruned");
    let held = log.tree.tail() - log.tree.base_serial();
    assert!(
        held <= 3 * keys.len() as u64 + 2 * TWIG_ENTRIES,
        "the held log ({held} serials) follows the live set, not the history ({})",
        log.tree.tail()
    );
    // (A restored tree's young twig holds no spare capacity; a live one
    // holds up to a twig's worth of hashes.)
    assert!(
        memory_max_late <= 2 * memory_after_load + TWIG_ENTRIES as usize * 32 + 4096,
        "tree memory {memory_max_late} bytes late vs {memory_after_load} early"
    );
    let root = log.tree.root();
    for k in keys.iter().step_by(97) {
        let proof = log.prove(k);
        let vh = *blake3::hash(&model[k]).as_bytes();
        assert_eq!(verify_twig_proof(&root, k, Some(&vh), &proof), Ok(()));
    }
}

#[test]
fn reserved_unsorted_and_oversized_writes_are_refused() {
    let log = MemLog::new();
    let plan = |w: &[(Hash32, Option<Vec<u8>>)]| plan_block(&log, w, log.tree.tail(), 0, 1);
    assert!(plan(&[(KEY_MIN, Some(vec![]))]).is_err());
    assert!(plan(&[(KEY_END, Some(vec![]))]).is_err());
    assert!(plan(&[(key(2), None), (key(1), None)]).is_err() || key(1) > key(2));
    let (a, b) = if key(1) < key(2) {
        (key(1), key(2))
    } else {
        (key(2), key(1))
    };
    assert!(plan(&[(b, Some(vec![])), (a, Some(vec![]))]).is_err());
    assert!(plan(&[(a, Some(vec![])), (a, Some(vec![]))]).is_err());
    assert!(plan(&[(a, Some(vec![0; (1 << 16) + 1]))]).is_err());
    // Deleting an absent key does nothing.
    assert_eq!(plan(&[(a, None)]).unwrap(), Plan::default());
}

/// Writing the value a key holds changes nothing: no entry, the same root
/// (the root follows the state's changes, not the writes that repeat it).
#[test]
fn a_write_of_the_value_held_appends_nothing() {
    let mut log = MemLog::new();
    let mut w: Vec<(Hash32, Option<Vec<u8>>)> =
        (0..10u8).map(|i| (key(i), Some(vec![i]))).collect();
    w.sort();
    let root = log.block(&w).unwrap();
    let tail = log.tree.tail();
    assert_eq!(log.block(&w).unwrap(), root);
    assert_eq!(log.tree.tail(), tail);
    // One changed value among the repeats: one entry.
    let k = w[3].0;
    w[3].1 = Some(b"changed".to_vec());
    assert_ne!(log.block(&w).unwrap(), root);
    assert_eq!(log.tree.tail(), tail + 1);
    assert_eq!(log.get(&k), Some(&b"changed"[..]));
}
