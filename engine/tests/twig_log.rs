//! The twig log's commitment against a plain model: random blocks of
//! inserts, updates and deletes planned by `plan_block` and applied to a
//! `TwigTree` and an in-memory log must leave exactly the model's state
//! (every key's value, the next-key chain), the root recomputed from
//! scratch, proofs that verify for what is there and not for what is not,
//! and refuse every tampered proof.

use std::collections::BTreeMap;
use std::convert::Infallible;

use int_engine::state::proof::{Hash32, ProofError};
use int_engine::state::twig::{
    Current, KEY_END, KEY_MIN, LogReader, Plan, TwigTree, encode_entry, plan_block,
};
use int_engine::state::twig_proof::{EntryRef, TWIG_ENTRIES, entry_hash, verify_twig_proof};
use proptest::prelude::*;

/// A log in memory, every entry kept (the reference root needs them all).
struct MemLog {
    tree: TwigTree,
    entries: Vec<Vec<u8>>,
    hashes: Vec<Hash32>,
    active: Vec<bool>,
    index: BTreeMap<Hash32, u64>,
    head: u64,
}

fn current(bytes: &[u8]) -> Current {
    let e = EntryRef::decode(bytes).expect("the log's entries decode");
    Current {
        serial: e.serial,
        next_key: *e.next_key,
        value: e.value.to_vec(),
    }
}

impl LogReader for MemLog {
    type Error = Infallible;

    fn current(&self, key: &Hash32) -> Result<Option<Current>, Infallible> {
        Ok(self
            .index
            .get(key)
            .map(|&s| current(&self.entries[s as usize])))
    }

    fn predecessor(&self, key: &Hash32) -> Result<(Hash32, Current), Infallible> {
        let (k, &s) = self.index.range(..*key).next_back().expect("the sentinel");
        Ok((*k, current(&self.entries[s as usize])))
    }

    fn active_between(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, Infallible> {
        Ok((from..to)
            .filter(|&s| self.active[s as usize])
            .map(|s| (s, self.entries[s as usize].clone()))
            .collect())
    }
}

impl MemLog {
    fn new() -> Self {
        let mut log = MemLog {
            tree: TwigTree::new(),
            entries: vec![],
            hashes: vec![],
            active: vec![],
            index: BTreeMap::new(),
            head: 0,
        };
        log.apply(Plan {
            deactivate: vec![],
            append: vec![(KEY_MIN, KEY_END, vec![])],
            head: 0,
        });
        log
    }

    fn block(&mut self, writes: &[(Hash32, Option<Vec<u8>>)]) {
        let plan = plan_block(
            self,
            writes,
            self.tree.tail(),
            self.head,
            self.tree.active_count(),
        )
        .expect("a valid block");
        self.apply(plan);
    }

    fn apply(&mut self, plan: Plan) {
        for &s in &plan.deactivate {
            self.active[s as usize] = false;
            let key = *EntryRef::decode(&self.entries[s as usize]).unwrap().key;
            if self.index.get(&key) == Some(&s) {
                self.index.remove(&key);
            }
        }
        let tail = self.tree.tail();
        let mut hashes = vec![];
        for (i, (k, next, v)) in plan.append.iter().enumerate() {
            let serial = tail + i as u64;
            let mut e = vec![];
            encode_entry(serial, k, next, v, &mut e);
            hashes.push(entry_hash(&e));
            assert!(self.index.insert(*k, serial).is_none(), "one entry per key");
            self.entries.push(e);
            self.active.push(true);
        }
        self.hashes.extend_from_slice(&hashes);
        // Staging changes nothing until applied: a discarded stage leaves
        // the root, and a second stage of the same block stages the same.
        let root_before = self.tree.root();
        let discarded = self.tree.stage(&plan.deactivate, &hashes).unwrap();
        assert_eq!(self.tree.root(), root_before);
        let staged = self.tree.stage(&plan.deactivate, &hashes).unwrap();
        assert_eq!(staged, discarded);
        assert_eq!(staged.first_serial(), tail);
        self.tree.apply(staged);
        assert!(plan.head >= self.head);
        self.head = plan.head;
        assert!(self.active[..self.head as usize].iter().all(|a| !a));
        self.tree.prune(self.head);
    }

    /// The proof for `key`: its entry, or the entry that brackets it.
    fn prove(&mut self, key: &Hash32) -> Vec<u8> {
        let serial = match self.index.get(key) {
            Some(&s) => s,
            None => *self.index.range(..*key).next_back().unwrap().1,
        };
        self.prove_serial(serial)
    }

    /// The proof of the active entry at `serial`.
    fn prove_serial(&mut self, serial: u64) -> Vec<u8> {
        let lo = (serial / TWIG_ENTRIES * TWIG_ENTRIES) as usize;
        let hi = (lo + TWIG_ENTRIES as usize).min(self.hashes.len());
        let entry = self.entries[serial as usize].clone();
        self.tree
            .prove(&entry, &self.hashes[lo..hi])
            .expect("an active entry proves")
    }

    /// Everything the model says, checked.
    fn check(&mut self, model: &BTreeMap<Hash32, Vec<u8>>) {
        // The active entries are the model's keys and values, plus the
        // sentinel, and their next keys chain in key order.
        let mut live: Vec<(Hash32, Hash32, Vec<u8>)> = (0..self.entries.len())
            .filter(|&s| self.active[s])
            .map(|s| {
                let e = EntryRef::decode(&self.entries[s]).unwrap();
                (*e.key, *e.next_key, e.value.to_vec())
            })
            .collect();
        live.sort();
        let want: Vec<(Hash32, Vec<u8>)> = std::iter::once((KEY_MIN, vec![]))
            .chain(model.iter().map(|(k, v)| (*k, v.clone())))
            .collect();
        let got: Vec<(Hash32, Vec<u8>)> = live.iter().map(|(k, _, v)| (*k, v.clone())).collect();
        assert_eq!(got, want, "the log's state is the model's");
        for (i, (_, next, _)) in live.iter().enumerate() {
            let expect = live.get(i + 1).map_or(KEY_END, |l| l.0);
            assert_eq!(*next, expect, "next keys chain in key order");
        }
        assert_eq!(self.tree.active_count(), live.len() as u64);
        let root = self.tree.root();
        assert_eq!(
            root,
            TwigTree::root_of(
                &self.hashes.iter().map(|h| Some(*h)).collect::<Vec<_>>(),
                &self.active
            ),
            "the incremental root is the root from scratch"
        );
    }
}

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
            log.block(&writes);
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
    log.block(&initial);
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
        log.block(&writes.into_iter().collect::<Vec<_>>());
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
    assert!(
        memory_max_late <= 2 * memory_after_load.max(1),
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
