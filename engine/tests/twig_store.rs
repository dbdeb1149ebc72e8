//! The twig log store on disk, against the in-memory reference log: the
//! same blocks must give the same roots and values; a store reopened from
//! its committed meta (after every block, after a block written but not
//! committed, after garbage past the tail) is the same store; a corrupt
//! log or a meta of another format is refused with an error, never read.

mod common;

use std::collections::BTreeMap;

use common::MemLog;
use int_engine::state::proof::Hash32;
use int_engine::state::twig_proof::verify_twig_proof;
use int_engine::storage::twig::{FORMAT_VERSION, TwigMeta, TwigStore, TwigStoreError};
use proptest::prelude::*;

/// Small segments (the smallest that holds the longest entry, doubled),
/// so that blocks cross segment ends and old segments are dropped.
const SEGMENT_BYTES: u64 = 2 * (77 + (1 << 16));

type Writes = Vec<(Hash32, Option<Vec<u8>>)>;

fn key(i: u16) -> Hash32 {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// One block's writes from (key index, value) pairs, sorted and distinct.
fn writes(block: &[(u16, Option<Vec<u8>>)]) -> Writes {
    let mut w: BTreeMap<Hash32, Option<Vec<u8>>> = BTreeMap::new();
    for (k, v) in block {
        w.insert(key(*k), v.clone());
    }
    w.into_iter().collect()
}

/// Applies a block's writes to the model.
fn apply(model: &mut BTreeMap<Hash32, Vec<u8>>, w: &Writes) {
    for (k, v) in w {
        match v {
            Some(v) => model.insert(*k, v.clone()),
            None => model.remove(k),
        };
    }
}

fn commit(store: &mut TwigStore, w: &Writes) -> TwigMeta {
    let p = store.prepare(w).expect("prepare");
    let written = store.write(&p).expect("write");
    let meta = written.meta().clone();
    assert_eq!(meta.root, p.root());
    store.apply(&p, written).expect("apply");
    assert_eq!(store.root(), meta.root);
    meta
}

fn check(store: &TwigStore, reference: &MemLog, model: &BTreeMap<Hash32, Vec<u8>>, keys: u16) {
    assert_eq!(
        store.root(),
        reference.tree.root(),
        "the store's root is the reference's"
    );
    assert_eq!(store.len(), model.len() as u64);
    for i in 0..keys {
        let k = key(i);
        assert_eq!(store.get(&k).unwrap().as_ref(), model.get(&k), "key {i}");
        let proof = store.prove(&k).unwrap();
        let claim = model.get(&k).map(|v| *blake3::hash(v).as_bytes());
        assert_eq!(
            verify_twig_proof(&store.root(), &k, claim.as_ref(), &proof),
            Ok(()),
            "proof of key {i}"
        );
    }
}

fn blocks(keys: u16) -> impl Strategy<Value = Vec<Vec<(u16, Option<Vec<u8>>)>>> {
    let write = (
        0..keys,
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..300)),
    );
    prop::collection::vec(prop::collection::vec(write, 0..40), 1..16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_store_follows_the_reference_and_reopens_to_it(
        blocks in blocks(200),
        reopen_every in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
        let mut reference = MemLog::new();
        let mut model = BTreeMap::new();
        prop_assert_eq!(store.root(), reference.tree.root());
        for (b, block) in blocks.iter().enumerate() {
            let w = writes(block);
            if b % 2 == 1 {
                // Read first, as a block's account loads do: the planner
                // then takes these entries from the read cache.
                let keys: Vec<Hash32> = w.iter().map(|(k, _)| *k).collect();
                let want: Vec<Option<Vec<u8>>> = keys.iter().map(|k| model.get(k).cloned()).collect();
                prop_assert_eq!(store.values_at(&store.version(), &keys).unwrap(), want);
            }
            apply(&mut model, &w);
            reference.block(&w).unwrap();
            let meta = commit(&mut store, &w);
            if b % reopen_every == 0 {
                drop(store);
                store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
            }
            check(&store, &reference, &model, 200);
        }
    }
}

/// Many blocks over a fixed population: compaction, pruning and the
/// dropping of old segments run, and the disk and memory follow the live
/// state, not the history; a reopen at the end is the same store.
#[test]
fn a_long_run_drops_old_segments_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut reference = MemLog::new();
    let mut model = BTreeMap::new();
    let all: Vec<(u16, Option<Vec<u8>>)> = (0..3000).map(|i| (i, Some(vec![1u8; 100]))).collect();
    let w = writes(&all);
    for (k, v) in &w {
        model.insert(*k, v.clone().unwrap());
    }
    reference.block(&w).unwrap();
    let mut meta = commit(&mut store, &w);
    let disk_after_load = store.disk_bytes();
    let mut disk_max = 0;
    for b in 0..300u32 {
        let block: Vec<(u16, Option<Vec<u8>>)> = (0..100)
            .map(|i| {
                (
                    ((b * 7919 + i * 104_729) % 3000) as u16,
                    Some(b.to_le_bytes().repeat(25)),
                )
            })
            .collect();
        let w = writes(&block);
        for (k, v) in &w {
            model.insert(*k, v.clone().unwrap());
        }
        reference.block(&w).unwrap();
        meta = commit(&mut store, &w);
        disk_max = disk_max.max(store.disk_bytes());
    }
    assert!(meta.base > 0, "twigs were pruned");
    assert!(
        disk_max <= 4 * disk_after_load + 4 * SEGMENT_BYTES,
        "the log on disk ({disk_max} bytes at most) follows the live state ({disk_after_load} after the load)"
    );
    check(&store, &reference, &model, 3000);
    drop(store);
    let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    check(&store, &reference, &model, 3000);
}

/// A snapshot's version reads the state of its block while later blocks
/// rewrite, delete, compact and prune: the values and the scan are those
/// of its block, and the log keeps the segments it reads until it is
/// dropped. A store reopened since refuses it.
#[test]
fn a_held_version_reads_its_block_while_later_blocks_compact() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let all: Vec<(u16, Option<Vec<u8>>)> = (0..2000).map(|i| (i, Some(vec![1u8; 100]))).collect();
    let w = writes(&all);
    let mut model: BTreeMap<Hash32, Vec<u8>> =
        w.iter().map(|(k, v)| (*k, v.clone().unwrap())).collect();
    commit(&mut store, &w);
    let keys: Vec<Hash32> = (0..2100).map(key).collect();
    let values = |m: &BTreeMap<Hash32, Vec<u8>>| -> Vec<Option<Vec<u8>>> {
        keys.iter().map(|k| m.get(k).cloned()).collect()
    };
    let scanned = |store: &TwigStore, v: &int_engine::storage::twig::Version| {
        let mut out = BTreeMap::new();
        store
            .scan_at(v, &mut |k, val| {
                assert!(out.insert(*k, val.to_vec()).is_none(), "a key twice");
                true
            })
            .unwrap();
        out
    };
    let mut held = vec![(store.version(), model.clone())];
    let mut disk_held = 0;
    for b in 0..120u32 {
        let block: Vec<(u16, Option<Vec<u8>>)> = (0..100)
            .map(|i| {
                let k = ((b * 7919 + i * 104_729) % 2100) as u16;
                // Some deletes, some new keys, mostly rewrites.
                let v = (i % 9 != 0).then(|| b.to_le_bytes().repeat(20));
                (k, v)
            })
            .collect();
        let w = writes(&block);
        apply(&mut model, &w);
        commit(&mut store, &w);
        if b % 30 == 29 {
            held.push((store.version(), model.clone()));
        }
        disk_held = disk_held.max(store.disk_bytes());
    }
    assert!(
        store.meta().base > 0,
        "twigs were pruned under the versions"
    );
    for (v, m) in &held {
        assert_eq!(store.values_at(v, &keys).unwrap(), values(m));
        assert_eq!(&scanned(&store, v), m);
    }
    // Held past 128 blocks, a version is cut off: its reads fail (stale),
    // and the younger ones still read theirs.
    for b in 0..10u32 {
        let w = writes(&[((b % 2000) as u16, Some(vec![3; 100]))]);
        model.insert(w[0].0, vec![3; 100]);
        commit(&mut store, &w);
    }
    assert!(store.values_at(&held[0].0, &keys).is_err(), "cut off");
    for (v, m) in &held[1..] {
        assert_eq!(store.values_at(v, &keys).unwrap(), values(m));
    }
    // Dropped, the versions keep nothing: the next blocks drop the
    // segments only they read.
    drop(held);
    let mut meta = store.meta().clone();
    for b in 0..100u32 {
        let w = writes(&[((b % 2000) as u16, Some(vec![2; 100]))]);
        model.insert(w[0].0, vec![2; 100]);
        meta = commit(&mut store, &w);
    }
    assert!(
        store.disk_bytes() < disk_held,
        "segments dropped once no version reads them ({} bytes, {disk_held} while held)",
        store.disk_bytes()
    );
    let v = store.version();
    assert_eq!(store.values_at(&v, &keys).unwrap(), values(&model));
    drop(store);
    let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    assert!(
        store.values_at(&v, &keys).is_err(),
        "a version of the store before"
    );
    assert_eq!(scanned(&store, &store.version()), model);
}

/// Copies a log's directory (segments and checkpoint), not its lock.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A checkpoint reopens to the store a scan reopens to: same root,
/// values and proofs, and the same metas for the blocks after; it is read
/// once (a writer deletes it), a reader may use it and leave it, and one
/// that is damaged or stale is not used.
#[test]
fn a_checkpoint_reopens_to_the_store_the_scan_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut reference = MemLog::new();
    let mut model = BTreeMap::new();
    let block_of = |b: u32| -> Writes {
        writes(
            &(0..80)
                .map(|i| {
                    let k = ((b * 7919 + i * 104_729) % 1500) as u16;
                    (k, (i % 7 != 0).then(|| b.to_le_bytes().repeat(10)))
                })
                .collect::<Vec<_>>(),
        )
    };
    let run = |store: &mut TwigStore,
               reference: &mut MemLog,
               model: &mut BTreeMap<Hash32, Vec<u8>>,
               b: u32| {
        let w = block_of(b);
        apply(model, &w);
        reference.block(&w).unwrap();
        commit(store, &w)
    };
    let mut meta = store.meta().clone();
    for b in 0..150 {
        meta = run(&mut store, &mut reference, &mut model, b);
    }
    assert!(meta.base > 0 && meta.head > 0, "compaction and pruning ran");
    store.save_checkpoint().unwrap();
    drop(store);
    let ckpt = dir.path().join("checkpoint");
    assert!(ckpt.exists());

    // A reader uses it and leaves it.
    let reader = TwigStore::open_read_only_with(dir.path(), &meta, SEGMENT_BYTES).unwrap();
    check(&reader, &reference, &model, 1500);
    drop(reader);
    assert!(ckpt.exists());

    // The same log without it, for the scan.
    let scanned_dir = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), scanned_dir.path());
    std::fs::remove_file(scanned_dir.path().join("checkpoint")).unwrap();
    let mut from_ckpt = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    assert!(!ckpt.exists(), "a writer deletes the checkpoint it read");
    let mut scanned = TwigStore::open_with(scanned_dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    check(&from_ckpt, &reference, &model, 1500);
    assert_eq!(from_ckpt.len(), scanned.len());
    let mut other = (reference.clone(), model.clone());
    for b in 150..200 {
        let a = run(&mut from_ckpt, &mut reference, &mut model, b);
        let s = run(&mut scanned, &mut other.0, &mut other.1, b);
        assert_eq!(a, s, "block {b} after the checkpoint");
    }
    check(&from_ckpt, &reference, &model, 1500);

    // Damaged: a byte flipped anywhere, or cut short, and the scan runs.
    let meta = from_ckpt.meta().clone();
    from_ckpt.save_checkpoint().unwrap();
    drop(from_ckpt);
    let good = std::fs::read(&ckpt).unwrap();
    for (i, damage) in [(0usize, 0u8), (good.len() / 3, 1), (good.len() - 1, 2)]
        .into_iter()
        .chain([(good.len() / 2, 3)])
    {
        let mut bad = good.clone();
        if damage == 3 {
            bad.truncate(i);
        } else {
            bad[i] ^= 0x40;
        }
        std::fs::write(&ckpt, &bad).unwrap();
        let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
        assert!(!ckpt.exists());
        check(&store, &reference, &model, 1500);
    }

    // Stale: a block committed after it.
    let mut store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    store.save_checkpoint().unwrap();
    let meta = run(&mut store, &mut reference, &mut model, 200);
    drop(store);
    assert!(ckpt.exists());
    let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    assert!(!ckpt.exists());
    check(&store, &reference, &model, 1500);
}

/// A block written but never committed (the node died between the log's
/// fsync and LMDB's commit), and garbage past the tail: reopening at the
/// last committed meta gives the committed state, and the next block
/// commits over what was cut.
#[test]
fn an_uncommitted_block_and_a_torn_tail_are_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut reference = MemLog::new();
    let mut model = BTreeMap::new();
    let w1 = writes(
        &(0..50)
            .map(|i| (i, Some(vec![i as u8; 40])))
            .collect::<Vec<_>>(),
    );
    for (k, v) in &w1 {
        model.insert(*k, v.clone().unwrap());
    }
    reference.block(&w1).unwrap();
    let meta = commit(&mut store, &w1);

    // Written, not committed: the meta is dropped, the store with it.
    let w2 = writes(&(0..50).map(|i| (i, None)).collect::<Vec<_>>());
    let p = store.prepare(&w2).unwrap();
    let _lost = store.write(&p).unwrap();
    drop(store);
    let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    check(&store, &reference, &model, 60);

    // Garbage past the tail, as a torn write leaves it.
    drop(store);
    {
        use std::io::Write;
        let seg = dir
            .path()
            .join(format!("log-{:08}.seg", meta.tail_offset / SEGMENT_BYTES));
        let mut f = std::fs::OpenOptions::new().append(true).open(seg).unwrap();
        f.write_all(&[0xab; 1000]).unwrap();
    }
    let mut store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    check(&store, &reference, &model, 60);

    // The next block commits on top.
    let w3 = writes(&[(3, None), (55, Some(b"new".to_vec()))]);
    model.remove(&key(3));
    model.insert(key(55), b"new".to_vec());
    reference.block(&w3).unwrap();
    let meta = commit(&mut store, &w3);
    drop(store);
    let store = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    check(&store, &reference, &model, 60);
}

/// A log whose bytes changed under the committed meta is refused.
#[test]
fn a_corrupt_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let w = writes(
        &(0..20)
            .map(|i| (i, Some(vec![7u8; 30])))
            .collect::<Vec<_>>(),
    );
    let meta = commit(&mut store, &w);
    drop(store);
    let seg = dir.path().join("log-00000000.seg");
    let clean = std::fs::read(&seg).unwrap();
    // A value byte of some entry in the middle, and a record tag.
    for at in [clean.len() / 2, 0] {
        let mut bytes = clean.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(&seg, &bytes).unwrap();
        let err = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap_err();
        assert!(
            matches!(err, TwigStoreError::Mismatch(_) | TwigStoreError::Log(_)),
            "{err}"
        );
    }
    // A meta claiming more than the log holds.
    std::fs::write(&seg, &clean).unwrap();
    let mut long = meta.clone();
    long.tail += 1;
    assert!(TwigStore::open_with(dir.path(), Some(&long), SEGMENT_BYTES).is_err());
    TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
}

#[test]
fn a_meta_of_another_format_is_refused_naming_its_version() {
    let meta = TwigMeta {
        tail: 7000,
        tail_offset: 700_000,
        head: 6500,
        head_offset: 650_000,
        base: 3,
        base_offset: 600_000,
        root: [4; 32],
        frontier: vec![(0, 2, [5; 32])],
    };
    let bytes = meta.encode();
    assert_eq!(TwigMeta::decode(&bytes).unwrap(), meta);
    let mut other = bytes.clone();
    other[0] = FORMAT_VERSION + 1;
    let err = TwigMeta::decode(&other).unwrap_err();
    assert!(matches!(err, TwigStoreError::Version { found } if found == FORMAT_VERSION + 1));
    let text = err.to_string();
    assert!(
        text.contains(&format!("format version {}", FORMAT_VERSION + 1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("reads version {FORMAT_VERSION}")),
        "{text}"
    );
    for cut in 0..bytes.len() {
        assert!(TwigMeta::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(TwigMeta::decode(&long).is_err());
}

/// A sorted load in chunks gives a state like any other: values, proofs
/// of presence and absence, a reopen, blocks on top; loads out of order
/// are refused.
#[test]
fn a_sorted_load_in_chunks_is_a_state_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut all: Vec<(Hash32, Vec<u8>)> =
        (0..5000u16).map(|i| (key(i), vec![i as u8; 64])).collect();
    all.sort();
    let mut meta = None;
    for chunk in all.chunks(1200) {
        let p = store.prepare_load(chunk.to_vec()).unwrap();
        let w = store.write(&p).unwrap();
        meta = Some(w.meta().clone());
        store.apply(&p, w).unwrap();
    }
    assert!(
        store.prepare_load(all[..1].to_vec()).is_err(),
        "below the greatest key"
    );
    let mut back = all[4000..4002].to_vec();
    back.reverse();
    assert!(store.prepare_load(back.clone()).is_err(), "unsorted");
    let model: BTreeMap<Hash32, Vec<u8>> = all.iter().cloned().collect();
    drop(store);
    let mut store = TwigStore::open_with(dir.path(), meta.as_ref(), SEGMENT_BYTES).unwrap();
    assert_eq!(store.len(), 5000);
    for i in (0..5000u16).step_by(37) {
        let k = key(i);
        assert_eq!(store.get(&k).unwrap().as_ref(), model.get(&k));
        let vh = *blake3::hash(&model[&k]).as_bytes();
        assert_eq!(
            verify_twig_proof(&store.root(), &k, Some(&vh), &store.prove(&k).unwrap()),
            Ok(())
        );
    }
    let absent = *blake3::hash(b"absent").as_bytes();
    assert_eq!(
        verify_twig_proof(&store.root(), &absent, None, &store.prove(&absent).unwrap()),
        Ok(())
    );
    // Blocks go on over the loaded state.
    let w = writes(&[(1, None), (2, Some(b"two".to_vec()))]);
    commit(&mut store, &w);
    assert_eq!(store.get(&key(1)).unwrap(), None);
    assert_eq!(store.get(&key(2)).unwrap(), Some(b"two".to_vec()));
    assert_eq!(store.len(), 4999);
}

/// One writer at a time; a reader in another process opens at the
/// committed meta beside it, cuts nothing and writes nothing.
#[test]
fn one_writer_and_read_only_openers_beside_it() {
    use int_engine::storage::twig::log::LogError;
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let w = writes(
        &(0..30)
            .map(|i| (i, Some(vec![9u8; 50])))
            .collect::<Vec<_>>(),
    );
    let meta = commit(&mut store, &w);
    // A block written past the committed tail, not committed yet.
    let pending = store
        .prepare(&writes(&[(1, Some(b"pending".to_vec()))]))
        .unwrap();
    let _written = store.write(&pending).unwrap();

    let second = TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap_err();
    assert!(
        matches!(second, TwigStoreError::Log(LogError::Locked(_))),
        "{second}"
    );
    let mut reader = TwigStore::open_read_only_with(dir.path(), &meta, SEGMENT_BYTES).unwrap();
    assert_eq!(reader.root(), store.root());
    assert_eq!(reader.get(&key(1)).unwrap(), Some(vec![9u8; 50]));
    let p = reader.prepare(&writes(&[(2, None)])).unwrap();
    assert!(matches!(
        reader.write(&p),
        Err(TwigStoreError::Log(LogError::ReadOnly))
    ));
    drop(reader);
    // The writer's pending records were not cut by the reader.
    let size = |d: &std::path::Path| std::fs::metadata(d.join("log-00000000.seg")).unwrap().len();
    assert!(size(dir.path()) > meta.tail_offset);
    drop(store);
    TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
    assert_eq!(
        size(dir.path()),
        meta.tail_offset,
        "the writer's reopen cuts what was not committed"
    );
}

/// The bulk load of keys into an empty log appends what the planner
/// would: the same root as the reference fed the same inserts as one block
/// (the store takes the load path for a genesis).
#[test]
fn a_load_into_an_empty_log_is_the_planners_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let mut all: Vec<(Hash32, Vec<u8>)> =
        (0..3000u16).map(|i| (key(i), vec![i as u8; 20])).collect();
    all.sort();
    let loaded = store.prepare_load(all.clone()).unwrap();
    let mut reference = MemLog::new();
    let w: Writes = all.iter().map(|(k, v)| (*k, Some(v.clone()))).collect();
    assert_eq!(reference.block(&w).unwrap(), loaded.root());
    assert_eq!(store.prepare(&w).unwrap().root(), loaded.root());
}

/// A meta whose numbers a corrupt disk changed is refused before anything
/// is sized or indexed by it: a first twig past the tail or overflowing, a
/// frontier node out of place, more entries than the log's bytes can hold.
#[test]
fn a_meta_with_impossible_numbers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = TwigStore::open_with(dir.path(), None, SEGMENT_BYTES).unwrap();
    let w = writes(
        &(0..20)
            .map(|i| (i, Some(vec![1u8; 30])))
            .collect::<Vec<_>>(),
    );
    let meta = commit(&mut store, &w);
    drop(store);
    let decode = |m: &TwigMeta| TwigMeta::decode(&m.encode());
    let mut m = meta.clone();
    m.base = u64::MAX / 2;
    assert!(decode(&m).is_err(), "base overflows");
    let mut m = meta.clone();
    m.frontier = vec![(0, 5, [1; 32])];
    assert!(
        decode(&m).is_err(),
        "a frontier node right of the held twigs"
    );
    let mut m = meta.clone();
    m.tail = meta.tail_offset;
    assert!(decode(&m).is_ok());
    let err = TwigStore::open_with(dir.path(), Some(&m), SEGMENT_BYTES).unwrap_err();
    assert!(matches!(err, TwigStoreError::Mismatch(_)), "{err}");
    TwigStore::open_with(dir.path(), Some(&meta), SEGMENT_BYTES).unwrap();
}

/// Blocks of thousands of writes, whose current entries the store reads
/// with several threads before planning, plan as the reference does:
/// updates, inserts and deletes, across a reopen.
#[test]
fn large_blocks_read_by_many_threads_follow_the_reference() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let keys: u16 = 6000;
    let mut store = TwigStore::open(dir.path(), None).unwrap();
    let mut reference = MemLog::new();
    let mut model: BTreeMap<Hash32, Vec<u8>> = BTreeMap::new();
    let mut meta = None;
    for b in 0..6u8 {
        let block: Vec<(u16, Option<Vec<u8>>)> = (0..3000)
            .map(|_| {
                let k = rng.gen_range(0..keys);
                let v = (rng.gen_range(0..8) != 0).then(|| vec![b; 1 + k as usize % 40]);
                (k, v)
            })
            .collect();
        let w = writes(&block);
        apply(&mut model, &w);
        reference.block(&w).unwrap();
        meta = Some(commit(&mut store, &w));
        assert_eq!(store.root(), reference.tree.root(), "block {b}");
    }
    drop(store);
    let store = TwigStore::open(dir.path(), meta.as_ref()).unwrap();
    check(&store, &reference, &model, keys);
}
