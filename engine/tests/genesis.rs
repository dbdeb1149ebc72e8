//! The genesis loader: accounts in state-key order, fed in any call
//! sizes, give the genesis of the same accounts as one list; order and
//! duplicates are refused; an interrupted genesis leaves no head and is
//! redone from the start, its accounts gone.

use int_engine::chain::{Chain, ChainConfig, ChainError};
use int_engine::crypto::bls::SecretKey;
use int_engine::storage::{self, AccountRecord, Head, account_leaf};
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
        let mut rest = &accounts[..];
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, more) = rest.split_at(size.min(rest.len()));
            loader.add(chunk).unwrap();
            rest = more;
        }
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
        .load_genesis_accounts(CHAIN, &accounts[..4])
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
fn an_interrupted_genesis_is_redone_from_the_start() {
    let first = alloc(300, 3);
    let second = alloc(200, 4);
    let dir = tempfile::tempdir().unwrap();
    {
        let mut chain = open(dir.path());
        let mut loader = chain.begin_genesis().unwrap();
        loader.add(&first).unwrap();
        // Dropped before block 0, as a process killed here would be.
    }
    let mut chain = open(dir.path());
    assert_eq!(chain.head(), None);
    let view = chain.store().snapshot().unwrap();
    assert_eq!(view.head(CHAIN).unwrap(), None);
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
