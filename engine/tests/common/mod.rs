//! The twig tests' reference: the engine's in-memory log, and every
//! check the model allows.
#![allow(dead_code)]

use std::collections::BTreeMap;

pub use int_engine::state::twig_memory::MemoryLog as MemLog;

use int_engine::state::proof::Hash32;
use int_engine::state::twig::{KEY_END, KEY_MIN, TwigBits, TwigTree};
use int_engine::state::twig_proof::{EntryRef, TWIG_ENTRIES};

/// The checks of a reference log against a plain map.
pub trait Check {
    /// Everything the model says, checked.
    fn check(&mut self, model: &BTreeMap<Hash32, Vec<u8>>);
}

impl Check for MemLog {
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
        // Staging changes nothing until applied, and stages the same twice.
        let sentinel = *self.index.get(&KEY_MIN).expect("the sentinel");
        let staged = self.tree.stage(&[sentinel], &[[7; 32]]).unwrap();
        assert_eq!(self.tree.root(), root, "a dropped stage left the root");
        assert_eq!(self.tree.stage(&[sentinel], &[[7; 32]]).unwrap(), staged);
        // What a store keeps (the held twigs' entries and the frontier)
        // rebuilds the same tree; the run goes on with the rebuilt one.
        let base = self.tree.base_serial();
        let restored = restore(
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

/// A tree rebuilt from the hashes and active flags of every held serial,
/// through the twig-level form a store's scan collects.
fn restore(
    base: u64,
    hashes: &[Hash32],
    active: &[bool],
    frontier: &[(usize, u64, Hash32)],
) -> TwigTree {
    let n = TWIG_ENTRIES as usize;
    let full = hashes.len() / n;
    let entry_roots = hashes[..full * n]
        .chunks_exact(n)
        .map(TwigTree::entries_root)
        .collect();
    let bits = active
        .chunks(n)
        .map(|c| {
            let mut w = TwigBits::default();
            for (i, _) in c.iter().enumerate().filter(|(_, a)| **a) {
                w[i / 64] |= 1 << (i % 64);
            }
            w
        })
        .collect();
    TwigTree::restore_twigs(
        base,
        entry_roots,
        hashes[full * n..].to_vec(),
        bits,
        frontier,
    )
}
