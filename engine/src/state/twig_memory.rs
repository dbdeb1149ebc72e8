//! A twig log held wholly in memory, every entry kept: the reference that
//! the store ([`crate::storage::twig`]) and the models of property tests
//! compare against (their roots are the roots of the same writes applied
//! here), planned by the same [`plan_block`].

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::proof::Hash32;
use super::twig::{
    Current, KEY_END, KEY_MIN, LogReader, Plan, PlanError, TwigTree, encode_entry, plan_block,
};
use super::twig_proof::{EntryRef, TWIG_ENTRIES, entry_hash};

/// A log in memory, every entry kept (the reference root needs them all).
#[derive(Debug, Clone)]
pub struct MemoryLog {
    /// Its commitment.
    pub tree: TwigTree,
    /// Every entry, by serial.
    pub entries: Vec<Vec<u8>>,
    /// Every entry's hash, by serial.
    pub hashes: Vec<Hash32>,
    /// Every entry's active bit, by serial.
    pub active: Vec<bool>,
    /// Each present key's serial.
    pub index: BTreeMap<Hash32, u64>,
    /// The compaction head.
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

impl LogReader for MemoryLog {
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

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLog {
    /// An empty log: its sentinel entry only.
    pub fn new() -> Self {
        let mut log = MemoryLog {
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

    /// Plans and applies one block's writes (sorted by key, distinct;
    /// `None` deletes); returns the new root.
    pub fn block(
        &mut self,
        writes: &[(Hash32, Option<Vec<u8>>)],
    ) -> Result<Hash32, PlanError<Infallible>> {
        let plan = plan_block(
            self,
            writes,
            self.tree.tail(),
            self.head,
            self.tree.active_count(),
        )?;
        self.apply(plan);
        Ok(self.tree.root())
    }

    /// The current value of `key`.
    pub fn get(&self, key: &Hash32) -> Option<&[u8]> {
        self.index.get(key).map(|&s| {
            EntryRef::decode(&self.entries[s as usize])
                .expect("the log's entries decode")
                .value
        })
    }

    /// Applies a plan (one made on this log's state).
    ///
    /// # Panics
    /// If the plan was made on another state.
    pub fn apply(&mut self, plan: Plan) {
        for &s in &plan.deactivate {
            self.active[s as usize] = false;
            let key = *EntryRef::decode(&self.entries[s as usize])
                .expect("the log's entries decode")
                .key;
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
        let staged = self
            .tree
            .stage(&plan.deactivate, &hashes)
            .expect("a plan made on this log deactivates active entries");
        assert_eq!(staged.first_serial(), tail);
        self.tree.apply(staged);
        assert!(plan.head >= self.head);
        self.head = plan.head;
        assert!(self.active[..self.head as usize].iter().all(|a| !a));
        self.tree.prune(self.head);
    }

    /// The proof for `key`: its entry, or the entry that brackets it.
    pub fn prove(&self, key: &Hash32) -> Vec<u8> {
        let serial = match self.index.get(key) {
            Some(&s) => s,
            None => {
                *self
                    .index
                    .range(..*key)
                    .next_back()
                    .expect("the sentinel is below every key")
                    .1
            }
        };
        self.prove_serial(serial)
    }

    /// The proof of the active entry at `serial`.
    pub fn prove_serial(&self, serial: u64) -> Vec<u8> {
        let lo = (serial / TWIG_ENTRIES * TWIG_ENTRIES) as usize;
        let hi = (lo + TWIG_ENTRIES as usize).min(self.hashes.len());
        let entry = self.entries[serial as usize].clone();
        self.tree
            .prove(&entry, &self.hashes[lo..hi])
            .expect("an active entry proves")
    }
}
