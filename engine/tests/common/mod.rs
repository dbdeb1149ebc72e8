//! A reference log for the twig tests: every entry kept in memory,
//! planned by `plan_block` and committed to a `TwigTree`, with every
//! check the model allows.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;

use int_engine::state::proof::Hash32;
use int_engine::state::twig::{
    Current, KEY_END, KEY_MIN, LogReader, Plan, TwigTree, encode_entry, plan_block,
};
use int_engine::state::twig_proof::{EntryRef, TWIG_ENTRIES, entry_hash};

/// A log in memory, every entry kept (the reference root needs them all).
pub struct MemLog {
    pub tree: TwigTree,
    pub entries: Vec<Vec<u8>>,
    pub hashes: Vec<Hash32>,
    pub active: Vec<bool>,
    pub index: BTreeMap<Hash32, u64>,
    pub head: u64,
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
    pub fn new() -> Self {
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
            deleted: vec![],
        });
        log
    }

    pub fn block(&mut self, writes: &[(Hash32, Option<Vec<u8>>)]) {
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

    pub fn apply(&mut self, plan: Plan) {
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
    pub fn prove(&mut self, key: &Hash32) -> Vec<u8> {
        let serial = match self.index.get(key) {
            Some(&s) => s,
            None => *self.index.range(..*key).next_back().unwrap().1,
        };
        self.prove_serial(serial)
    }

    /// The proof of the active entry at `serial`.
    pub fn prove_serial(&mut self, serial: u64) -> Vec<u8> {
        let lo = (serial / TWIG_ENTRIES * TWIG_ENTRIES) as usize;
        let hi = (lo + TWIG_ENTRIES as usize).min(self.hashes.len());
        let entry = self.entries[serial as usize].clone();
        self.tree
            .prove(&entry, &self.hashes[lo..hi])
            .expect("an active entry proves")
    }

    /// Everything the model says, checked.
    pub fn check(&mut self, model: &BTreeMap<Hash32, Vec<u8>>) {
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
        // What a store keeps (the held twigs' entries and the frontier)
        // rebuilds the same tree; the run goes on with the rebuilt one.
        let base = self.tree.base_serial();
        let restored = TwigTree::restore(
            base / TWIG_ENTRIES,
            &self.hashes[base as usize..],
            &self.active[base as usize..],
            &self.tree.frontier(),
        );
        assert_eq!(restored.root(), root, "a restored tree has the root");
        assert_eq!(restored.active_count(), self.tree.active_count());
        self.tree = restored;
    }
}
