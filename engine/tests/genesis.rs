//! The genesis loader: accounts in state-key order, fed in any call
//! sizes, give the genesis of the same accounts as one list; order and
//! duplicates are refused; an interrupted genesis leaves no head and is
//! redone from the start, its accounts gone.

use int_engine::chain::{Chain, ChainConfig, ChainError, GenesisLoader};
use int_engine::crypto::bls::SecretKey;
use int_engine::state::twig_proof::verify_twig_proof;
use int_engine::storage::{self, AccountRecord, BlockWrite, Head, account_leaf};
use int_schemas::AccountId;

const CHAIN: u32 = 3;

fn proposer() -> SecretKey {
    SecretKey::from_seed(&[9; 32])
}

fn config() -> ChainConfig {
    ChainConfig {
        chain_id: CHAIN,
        hot_capacity: 64,
        parallel: true,
    }
}

/// `n` accounts, sorted by state key.
fn alloc(n: u32, salt: u8) -> Vec<(AccountId, AccountRecord)> {
    let mut a: Vec<(AccountId, AccountRecord)> = (0..n)
        .map(|i| {
            let mut id = [salt; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            (
                id,
                AccountRecord {
                    int: u128::from(i) + 1,
                    gas: 7,
                    ..Default::default()
                },
            )
        })
        .collect();
    a.sort_by_key(|(id, _)| account_leaf(id));
    a
}

fn open(dir: &std::path::Path) -> Chain {
    let store = storage::open(dir).unwrap();
    Chain::open(store, config(), &[]).unwrap()
}

/// Adds `accounts` to `loader` in calls of `sizes`, cycled.
fn feed(loader: &mut GenesisLoader<'_>, accounts: &[(AccountId, AccountRecord)], sizes: &[usize]) {
    let mut rest = accounts;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, more) = rest.split_at(size.min(rest.len()));
        loader.add(chunk).unwrap();
        rest = more;
    }
}

/// Audits the committed state and returns the head.
fn audited(chain: &Chain) -> Head {
    let view = chain.store().snapshot().unwrap();
    let head = view.head(CHAIN).unwrap().expect("a head");
    let (root, accounts) = view.audit_state(CHAIN).unwrap();
    assert_eq!(root, head.state_root);
    assert_eq!(accounts, head.accounts);
    head
}

#[test]
fn a_genesis_fed_in_any_call_sizes_is_the_genesis_of_the_list() {
    let accounts = alloc(500, 1);
    let one = tempfile::tempdir().unwrap();
    let mut chain = open(one.path());
    let shuffled: Vec<_> = accounts.iter().rev().copied().collect();
    let whole = chain.genesis(&shuffled, 1, &proposer()).unwrap();
    assert_eq!(audited(&chain), whole);
    assert_eq!(whole.accounts, 500);

    for sizes in [&[1usize][..], &[7, 100, 3], &[499, 1]] {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open(dir.path());
        let mut loader = chain.begin_genesis().unwrap();
        feed(&mut loader, &accounts, sizes);
        assert_eq!(loader.accounts(), 500);
        let head = loader.finish(&[], 1, &proposer()).unwrap();
        assert_eq!(head, whole, "fed in calls of {sizes:?}");
        assert_eq!(audited(&chain), head);
        let view = chain.store().snapshot().unwrap();
        for (id, rec) in accounts.iter().step_by(37) {
            assert_eq!(view.account(CHAIN, id).unwrap(), Some(*rec));
        }
    }
}

#[test]
fn out_of_order_and_repeated_accounts_are_refused() {
    let accounts = alloc(10, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(dir.path());
    {
        let mut loader = chain.begin_genesis().unwrap();
        loader.add(&accounts[5..]).unwrap();
        let err = loader.add(&accounts[..5]).expect_err("refused");
        assert!(matches!(err, ChainError::Exec(_)), "{err}");
    }
    // A load that reached storage, then dropped: the next genesis starts
    // over (the store, not the loader, holds these).
    chain.store().begin_genesis(CHAIN).unwrap();
    chain
        .store()
        .load_genesis_accounts(CHAIN, 0, &accounts[..4])
        .unwrap();
    let mut repeated = accounts.clone();
    repeated.push(accounts[3]);
    let err = chain
        .genesis(&repeated, 1, &proposer())
        .expect_err("refused");
    assert!(
        matches!(err, ChainError::DuplicateGenesisAccount(_)),
        "{err}"
    );
    // The refused attempts left nothing: a genesis goes through.
    let head = chain.genesis(&accounts, 1, &proposer()).unwrap();
    assert_eq!(audited(&chain), head);
    let err = chain.begin_genesis().err().expect("refused");
    assert!(matches!(err, ChainError::GenesisExists(CHAIN)), "{err}");
}

#[test]
fn a_genesis_across_many_chunks_is_the_same_however_it_is_fed() {
    let accounts = alloc(1000, 5);
    let mut heads = Vec::new();
    for sizes in [&[1000usize][..], &[1, 63, 64, 65, 200]] {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open(dir.path());
        let mut loader = chain.begin_genesis_in_chunks(64).unwrap();
        feed(&mut loader, &accounts, sizes);
        let head = loader.finish(&[], 1, &proposer()).unwrap();
        assert_eq!(audited(&chain), head);
        let view = chain.store().snapshot().unwrap();
        for (id, rec) in &accounts {
            assert_eq!(view.account(CHAIN, id).unwrap(), Some(*rec));
        }
        // Block 0's planner ran on the loaded log: a proof of every
        // account checks against the root.
        for (id, rec) in accounts.iter().step_by(97) {
            let key = account_leaf(id);
            let proof = view.prove(CHAIN, &key).unwrap();
            let value = blake3::hash(&rec.state_value(id));
            verify_twig_proof(&head.state_root, &key, Some(value.as_bytes()), &proof).unwrap();
        }
        heads.push(head);
    }
    assert_eq!(heads[0], heads[1]);
    // Chunks are part of what a genesis is: the constant's root differs.
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(dir.path());
    let whole = chain.genesis(&accounts, 1, &proposer()).unwrap();
    assert_ne!(whole.state_root, heads[0].state_root);
    assert_eq!(whole.accounts, heads[0].accounts);
}

#[test]
fn a_failed_genesis_refuses_to_go_on() {
    let accounts = alloc(200, 6);
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(dir.path());
    let mut loader = chain.begin_genesis_in_chunks(16).unwrap();
    loader.add(&accounts[100..]).unwrap();
    loader.add(&accounts[..50]).expect_err("out of order");
    let err = loader.add(&accounts[50..60]).expect_err("failed before");
    assert!(err.to_string().contains("begin it again"), "{err}");
    loader
        .finish(&[], 1, &proposer())
        .expect_err("failed before");
    // Storage refuses a load that does not continue the one it holds.
    chain.store().begin_genesis(CHAIN).unwrap();
    chain
        .store()
        .load_genesis_accounts(CHAIN, 0, &accounts[..10])
        .unwrap();
    chain
        .store()
        .load_genesis_accounts(CHAIN, 0, &accounts[10..20])
        .expect_err("10 loaded, not 0");
    // A block 0 prepared before the next chunk loaded is stale.
    let stale = chain
        .store()
        .snapshot()
        .unwrap()
        .prepare_state(CHAIN, &[])
        .unwrap();
    chain
        .store()
        .load_genesis_accounts(CHAIN, 10, &accounts[10..20])
        .unwrap();
    let err = chain
        .store()
        .commit_block(&BlockWrite {
            chain_id: CHAIN,
            accounts: &[],
            state: &stale,
            height: 0,
            block: b"b",
            receipts: b"r",
            tx_hashes: &[],
            head: Head::default(),
            objects: &[],
        })
        .expect_err("prepared on a shorter log");
    assert!(err.to_string().contains("prepared at serial"), "{err}");
    let head = chain.genesis(&accounts, 1, &proposer()).unwrap();
    assert_eq!(audited(&chain), head);
}

#[test]
fn an_interrupted_genesis_is_redone_from_the_start() {
    let first = alloc(300, 3);
    let second = alloc(200, 4);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut chain = open(dir.path());
        let mut loader = chain.begin_genesis_in_chunks(64).unwrap();
        loader.add(&first).unwrap();
        // Dropped before block 0, as a process killed here would be: four
        // chunks are in the log, past its committed (empty) state.
    }
    let mut chain = open(dir.path());
    assert_eq!(chain.head(), None);
    let view = chain.store().snapshot().unwrap();
    assert_eq!(view.head(CHAIN).unwrap(), None);
    // The loaded chunks belong to no head: no account is visible.
    assert_eq!(view.account(CHAIN, &first[0].0).unwrap(), None);
    let mut left = 0;
    view.for_each_account(CHAIN, |_, _| left += 1).unwrap();
    assert_eq!(left, 0, "accounts of a chain with no head");
    drop(view);
    let head = chain.genesis(&second, 1, &proposer()).unwrap();
    assert_eq!(head.accounts, 200);
    assert_eq!(audited(&chain), head);
    let view = chain.store().snapshot().unwrap();
    assert_eq!(view.account(CHAIN, &first[0].0).unwrap(), None);
    let mut n = 0;
    view.for_each_account(CHAIN, |_, _| n += 1).unwrap();
    assert_eq!(n, 200);
}
