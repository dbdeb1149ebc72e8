//! BPK intents on chain: identity registration and persistence, epochs'
//! centroids, anonymous intents through ingress (batched proofs) and
//! execution (root, epoch, centroids, nullifier), against the real LMDB
//! store and Groth16 proofs of a small circuit (D = K = 2).

mod common;

use std::sync::{Arc, OnceLock};

use ark_bn254::{Bn254, Fr};
use ark_groth16::{ProvingKey, VerifyingKey};
use common::*;
use int_engine::chain::{Chain, ChainConfig};
use int_engine::crypto::bls::SecretKey;
use int_engine::ingress::{CheckedBatch, IngressError, KeyCache, check_batch_with};
use int_engine::storage::{Storage, recompute_root};
use int_engine::world::Plugin;
use int_schemas::wire::TxStatus;
use int_schemas::wire::{Authority, PriceModel, Unit};
use int_schemas::{AccountId, AnonIntentSpec, PayloadSpec, TxBodySpec, build_tx_body};
use int_schemas::{ClusterBuy, SkuListing, SkuRef, Terms};
use int_systems::bpk::{
    self, BpkGenesis, Groth16Intents, IntentRequest, centroids_at, identity_tree, nullifier_used,
};
use int_systems::market::{self, MarketPlugin, escrow_held};
use int_systems::{BpkPlugin, LedgerPlugin};
use int_zk::circuit::{centroid_commitment, identity_leaf};
use int_zk::export::fr_to_be_bytes;
use int_zk::tree::{CpuPairHasher, DEPTH, IdentityTree, PairHasher};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const EPOCH_BLOCKS: u64 = 6;
const ROOT_HISTORY: u32 = 3;
const FEE: u128 = 5;

fn keys() -> &'static (ProvingKey<Bn254>, VerifyingKey<Bn254>) {
    static KEYS: OnceLock<(ProvingKey<Bn254>, VerifyingKey<Bn254>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        int_zk::groth::setup(2, 2, &mut ChaCha20Rng::seed_from_u64(1)).expect("setup")
    })
}

fn centroids0() -> Vec<Vec<u16>> {
    vec![vec![100, 100], vec![60_000, 60_000]]
}

/// A simulated user: secret and behaviour.
#[derive(Clone)]
struct User {
    secret: Fr,
    behaviour: Vec<u16>,
}

impl User {
    fn new(i: u64, behaviour: [u16; 2]) -> Self {
        Self {
            secret: Fr::from(1_000 + i),
            behaviour: behaviour.to_vec(),
        }
    }

    fn leaf(&self) -> Fr {
        identity_leaf(self.secret, &self.behaviour).unwrap()
    }
}

fn governance() -> SecretKey {
    key(0)
}

fn relayer() -> SecretKey {
    key(1)
}

fn target() -> AccountId {
    fresh_id(77)
}

/// Sells to clusters (in the tests with the market).
fn seller() -> SecretKey {
    key(2)
}

struct BpkNet {
    chain: Chain,
    store: Arc<dyn Storage>,
    proposer: SecretKey,
    time_ms: u64,
    nonces: std::collections::HashMap<AccountId, u64>,
    verifier: Option<Groth16Intents>,
    _dir: tempfile::TempDir,
}

impl BpkNet {
    /// A chain with the ledger and BPK plugins; with `bpk`, a genesis that
    /// enables intents.
    fn new(bpk: bool) -> Self {
        Self::with(bpk, true)
    }

    /// As [`BpkNet::new`], executing in parallel or sequentially.
    fn with(bpk: bool, parallel: bool) -> Self {
        Self::with_plugin(bpk, parallel, BpkPlugin::new(), false)
    }

    /// As [`BpkNet::with`], with the BPK plugin `bpk_plugin`, and the market
    /// plugin too with `market`.
    fn with_plugin(bpk: bool, parallel: bool, bpk_plugin: BpkPlugin, market: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = int_engine::storage::open(dir.path()).unwrap();
        let proposer = proposer_key();
        let alloc = vec![
            (id(&proposer), registered(&proposer, 0, 0)),
            (id(&governance()), registered(&governance(), 0, 1_000)),
            (id(&relayer()), registered(&relayer(), 0, 1_000)),
            (id(&seller()), registered(&seller(), 0, 1_000)),
        ];
        let cfg = ChainConfig {
            chain_id: CHAIN,
            hot_capacity: 1024,
            parallel,
        };
        let plugins: Vec<&dyn Plugin> = if market {
            vec![&LedgerPlugin, &bpk_plugin, &MarketPlugin]
        } else {
            vec![&LedgerPlugin, &bpk_plugin]
        };
        let mut chain = Chain::open(store.clone(), cfg, &plugins).unwrap();
        let objects = if bpk {
            bpk::genesis_objects(&BpkGenesis {
                epoch_blocks: EPOCH_BLOCKS,
                root_history: ROOT_HISTORY,
                governance: id(&governance()),
                verifying_key: keys().1.clone(),
                centroids: centroids0(),
            })
            .unwrap()
        } else {
            Vec::new()
        };
        chain
            .genesis_with_objects(&alloc, &objects, T0, &proposer)
            .unwrap();
        let verifier = Groth16Intents::from_store(&*store.snapshot().unwrap(), CHAIN).unwrap();
        assert_eq!(verifier.is_some(), bpk);
        Self {
            chain,
            store,
            proposer,
            time_ms: T0,
            nonces: Default::default(),
            verifier,
            _dir: dir,
        }
    }

    fn height(&self) -> u64 {
        self.chain.head().unwrap().height
    }

    /// The epoch the next block belongs to.
    fn next_epoch(&self) -> u64 {
        (self.height() + 1) / EPOCH_BLOCKS
    }

    fn signed(&mut self, sk: &SecretKey, payload: PayloadSpec) -> Vec<u8> {
        let nonce = self.nonces.entry(id(sk)).or_default();
        let body = build_tx_body(&TxBodySpec {
            chain_id: CHAIN,
            sender: id(sk),
            nonce: *nonce,
            fee: FEE,
            payload,
        });
        *nonce += 1;
        seal(sk, CHAIN, &body)
    }

    fn ingress(&self, batch: Vec<Vec<u8>>) -> CheckedBatch {
        let keys = KeyCache::new(&*self.store, CHAIN, 1024);
        let v = self
            .verifier
            .as_ref()
            .map(|v| v as &dyn int_engine::ingress::ProofVerifier);
        check_batch_with(&ingress_cfg(), &keys, v, batch)
    }

    /// Ingress, then one block of what passed; the statuses of the block.
    fn block(&mut self, batch: Vec<Vec<u8>>) -> (CheckedBatch, Vec<TxStatus>) {
        let checked = self.ingress(batch);
        self.time_ms += 1000;
        let r = self
            .chain
            .execute_block(&checked.accepted, self.time_ms, &self.proposer)
            .unwrap();
        (checked, r.statuses)
    }

    fn block_ok(&mut self, batch: Vec<Vec<u8>>) -> Vec<TxStatus> {
        let (checked, statuses) = self.block(batch);
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        statuses
    }

    fn register(&mut self, users: &[User]) -> Vec<TxStatus> {
        let relayer = relayer();
        let batch = users
            .iter()
            .map(|u| {
                self.signed(
                    &relayer,
                    PayloadSpec::RegisterIdentity {
                        commitment: fr_to_be_bytes(&u.leaf()),
                    },
                )
            })
            .collect();
        self.block_ok(batch)
    }

    /// Empty blocks until the next block is in `epoch`.
    fn advance_to_epoch(&mut self, epoch: u64) {
        while self.next_epoch() < epoch {
            self.block_ok(Vec::new());
        }
    }

    /// An intent by user `leaf_index` (whose data is `u`) made against the
    /// committed tree, for `epoch` and `centroids`.
    fn intent(
        &self,
        u: &User,
        leaf_index: u64,
        epoch: u64,
        centroids: &[Vec<u16>],
        payload: &[u8],
    ) -> AnonIntentSpec {
        self.intent_to(u, leaf_index, epoch, centroids, target(), payload)
    }

    /// As [`BpkNet::intent`], addressed to `target`.
    fn intent_to(
        &self,
        u: &User,
        leaf_index: u64,
        epoch: u64,
        centroids: &[Vec<u16>],
        target: AccountId,
        payload: &[u8],
    ) -> AnonIntentSpec {
        let view = self.store.snapshot().unwrap();
        let tree = identity_tree(&*view, CHAIN).unwrap();
        let req = IntentRequest {
            chain_id: CHAIN,
            secret: u.secret,
            behaviour: &u.behaviour,
            centroids,
            path: tree.path(leaf_index).unwrap(),
            epoch,
            target,
            payload,
        };
        bpk::prove_intent(&keys().0, &req, &mut ChaCha20Rng::seed_from_u64(leaf_index)).unwrap()
    }

    fn send_intent(&mut self, a: AnonIntentSpec) -> Vec<u8> {
        self.signed(&relayer(), PayloadSpec::AnonIntent(Box::new(a)))
    }

    fn audit(&self) {
        let head = self.chain.head().unwrap();
        let (root, _) = recompute_root(&*self.store.snapshot().unwrap(), CHAIN).unwrap();
        assert_eq!(root, head.state_root, "state root covers the BPK objects");
    }
}

fn users() -> Vec<User> {
    vec![
        User::new(0, [90, 120]),
        User::new(1, [59_000, 61_000]),
        User::new(2, [200, 50]),
    ]
}

#[test]
fn registered_user_sends_an_anonymous_intent_once_per_scope_and_epoch() {
    let mut net = BpkNet::new(true);
    let us = users();
    assert_eq!(net.register(&us), vec![TxStatus::Ok; 3]);

    // The tree in storage is the tree of those leaves.
    let mut mem = IdentityTree::new(ROOT_HISTORY as usize).unwrap();
    for u in &us {
        mem.append(u.leaf()).unwrap();
    }
    let view = net.store.snapshot().unwrap();
    let stored = identity_tree(&*view, CHAIN).unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.root(), mem.root());
    assert_eq!(stored.path(1).unwrap(), mem.path(1).unwrap());

    let epoch = net.next_epoch();
    let a = net.intent(&us[1], 1, epoch, &centroids0(), b"network 10 MB");
    assert_eq!(a.cluster, 1, "user 1 lies in the second cluster");
    let nullifier = a.nullifier;
    let tx = net.send_intent(a);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::Ok]);
    assert!(
        nullifier_used(&*net.store.snapshot().unwrap(), CHAIN, &nullifier)
            .unwrap()
            .is_some()
    );
    // The stored block re-verifies, its intent proof included; a chain
    // with no proof verifier cannot vouch for it.
    let block = net
        .store
        .snapshot()
        .unwrap()
        .block(CHAIN, net.height())
        .unwrap()
        .unwrap();
    assert!(net.chain.verify_block(&block).is_err());
    let v = Groth16Intents::from_store(&*net.store.snapshot().unwrap(), CHAIN)
        .unwrap()
        .unwrap();
    net.chain.set_proof_verifier(Arc::new(v));
    net.chain.verify_block(&block).unwrap();

    // The same user, scope and epoch again (a fresh proof): refused on
    // chain, fee taken.
    let gas_before = net
        .store
        .snapshot()
        .unwrap()
        .account(CHAIN, &id(&relayer()))
        .unwrap()
        .unwrap()
        .gas;
    let again = net.intent(&us[1], 1, epoch, &centroids0(), b"network 10 MB");
    let tx = net.send_intent(again);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::NullifierUsed]);
    let gas_after = net
        .store
        .snapshot()
        .unwrap()
        .account(CHAIN, &id(&relayer()))
        .unwrap()
        .unwrap()
        .gas;
    assert_eq!(gas_before - gas_after, FEE);

    // Another scope is another nullifier: accepted.
    let other = net.intent(&us[1], 1, epoch, &centroids0(), b"power 1 kWh");
    let tx = net.send_intent(other);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::Ok]);
    net.audit();
}

#[test]
fn two_identical_intents_in_one_block_only_the_first_counts() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us);
    let epoch = net.next_epoch();
    let a = net.intent(&us[0], 0, epoch, &centroids0(), b"x");
    let b = net.intent(&us[0], 0, epoch, &centroids0(), b"x");
    let batch = vec![net.send_intent(a), net.send_intent(b)];
    assert_eq!(
        net.block_ok(batch),
        vec![TxStatus::Ok, TxStatus::NullifierUsed]
    );
}

#[test]
fn wrong_epoch_unknown_root_and_wrong_centroids_are_refused_on_chain() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us);
    let epoch = net.next_epoch();

    // A valid proof for another epoch.
    let later = net.intent(&us[0], 0, epoch + 1, &centroids0(), b"a");
    // A valid proof against a tree the chain never had.
    let mut foreign = IdentityTree::new(4).unwrap();
    foreign.append(User::new(50, [7, 7]).leaf()).unwrap();
    foreign.append(us[0].leaf()).unwrap();
    let req = IntentRequest {
        chain_id: CHAIN,
        secret: us[0].secret,
        behaviour: &us[0].behaviour,
        centroids: &centroids0(),
        path: foreign.path(1).unwrap(),
        epoch,
        target: target(),
        payload: b"b",
    };
    let foreign_root =
        bpk::prove_intent(&keys().0, &req, &mut ChaCha20Rng::seed_from_u64(9)).unwrap();
    // A valid proof over centroids the chain did not fix.
    let other_centroids = vec![vec![1, 1], vec![2, 2]];
    let wrong_c = net.intent(&us[0], 0, epoch, &other_centroids, b"c");

    let batch = vec![
        net.send_intent(later),
        net.send_intent(foreign_root),
        net.send_intent(wrong_c),
    ];
    assert_eq!(
        net.block_ok(batch),
        vec![
            TxStatus::WrongEpoch,
            TxStatus::UnknownRoot,
            TxStatus::WrongCentroids
        ]
    );
    net.audit();
}

#[test]
fn bad_proofs_are_dropped_at_ingress_alone() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us);
    let epoch = net.next_epoch();
    let good: Vec<AnonIntentSpec> = (0..5)
        .map(|i| net.intent(&us[0], 0, epoch, &centroids0(), format!("p{i}").as_bytes()))
        .collect();
    // The payload changed after proving: the scope no longer matches.
    let mut tampered_payload = good[1].clone();
    tampered_payload.payload = b"something else".to_vec();
    // Another cluster claimed.
    let mut tampered_cluster = good[2].clone();
    tampered_cluster.cluster = 1;
    // A proof element changed: C := A (a valid point, a wrong proof).
    let mut tampered_proof = good[3].clone();
    let a_point: [u8; 32] = tampered_proof.proof[..32].try_into().unwrap();
    tampered_proof.proof[96..].copy_from_slice(&a_point);
    // Bytes that are no point at all.
    let mut garbage = good[4].clone();
    garbage.proof = [0xff; 128];

    let batch = vec![
        net.send_intent(good[0].clone()),
        net.send_intent(tampered_payload),
        net.send_intent(tampered_cluster),
        net.send_intent(tampered_proof),
        net.send_intent(garbage),
    ];
    let checked = net.ingress(batch);
    assert_eq!(checked.accepted.len(), 1);
    let rejected: Vec<(usize, bool)> = checked
        .rejected
        .iter()
        .map(|(i, e)| (*i, matches!(e, IngressError::BadProof)))
        .collect();
    assert_eq!(rejected, vec![(1, true), (2, true), (3, true), (4, false)]);
    assert!(matches!(
        checked.rejected[3].1,
        IngressError::MalformedProof(_)
    ));
}

#[test]
fn old_roots_expire_after_the_history() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us[..1]);
    let epoch = net.next_epoch();
    // Both proven against the tree of one leaf.
    let stale = net.intent(&us[0], 0, epoch, &centroids0(), b"late");
    let recent = net.intent(&us[0], 0, epoch, &centroids0(), b"early");
    // An intent before a registration in the same block sees the old root.
    let batch = vec![
        net.send_intent(recent),
        net.signed(
            &relayer(),
            PayloadSpec::RegisterIdentity {
                commitment: fr_to_be_bytes(&us[1].leaf()),
            },
        ),
    ];
    assert_eq!(net.block_ok(batch), vec![TxStatus::Ok, TxStatus::Ok]);
    // Two more roots: with a history of 3, the one-leaf root is gone.
    net.register(&[us[2].clone(), User::new(9, [1, 1])]);
    assert_eq!(net.next_epoch(), epoch, "still the same epoch");
    let tx = net.send_intent(stale);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::UnknownRoot]);
}

#[test]
fn governance_sets_future_centroids_and_intents_follow_them() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us);
    let now = net.next_epoch();
    let new_c = vec![vec![30_000, 30_000], vec![65_000, 0]];
    let set = |epoch, dims, clusters, coords: Vec<u16>| PayloadSpec::SetCentroids {
        epoch,
        dims,
        clusters,
        coords,
    };
    let flat: Vec<u16> = new_c.iter().flatten().copied().collect();
    let batch = vec![
        net.signed(&relayer(), set(now + 1, 2, 2, flat.clone())),
        net.signed(&governance(), set(now, 2, 2, flat.clone())),
        net.signed(&governance(), set(now + 1, 1, 4, flat.clone())),
        net.signed(&governance(), set(now + 1, 2, 2, flat.clone())),
        net.signed(&governance(), set(now + 1, 2, 2, flat.clone())),
    ];
    assert_eq!(
        net.block_ok(batch),
        vec![
            TxStatus::NotGovernance,
            TxStatus::CentroidsFixed,
            TxStatus::CentroidShape,
            TxStatus::Ok,
            TxStatus::CentroidsFixed,
        ]
    );
    let commitment = fr_to_be_bytes(&centroid_commitment(&new_c).unwrap());
    let c = centroids_at(&*net.store.snapshot().unwrap(), CHAIN, now + 1)
        .unwrap()
        .unwrap();
    assert_eq!((c.epoch, c.commitment), (now + 1, commitment));
    assert_eq!(c.rows(), new_c);
    // Epochs after it keep it; the current one keeps the old set.
    assert_eq!(
        centroids_at(&*net.store.snapshot().unwrap(), CHAIN, now + 5)
            .unwrap()
            .unwrap()
            .epoch,
        now + 1
    );
    assert_eq!(
        centroids_at(&*net.store.snapshot().unwrap(), CHAIN, now)
            .unwrap()
            .unwrap()
            .epoch,
        0
    );

    net.advance_to_epoch(now + 1);
    let old = net.intent(&us[0], 0, now + 1, &centroids0(), b"q");
    let new = net.intent(&us[0], 0, now + 1, &new_c, b"r");
    assert_eq!(new.cluster, 0);
    let batch = vec![net.send_intent(old), net.send_intent(new)];
    assert_eq!(
        net.block_ok(batch),
        vec![TxStatus::WrongCentroids, TxStatus::Ok]
    );
    net.audit();
}

#[test]
fn the_tree_survives_a_restart() {
    let mut net = BpkNet::new(true);
    let us = users();
    net.register(&us[..2]);
    let root_before = identity_tree(&*net.store.snapshot().unwrap(), CHAIN)
        .unwrap()
        .root();
    // Reopen the pipeline over the same store.
    let cfg = *net.chain.config();
    net.chain = Chain::open(net.store.clone(), cfg, &[&LedgerPlugin, &BpkPlugin::new()]).unwrap();
    assert_eq!(
        identity_tree(&*net.store.snapshot().unwrap(), CHAIN)
            .unwrap()
            .root(),
        root_before
    );
    net.register(&us[2..]);
    let mut mem = IdentityTree::new(ROOT_HISTORY as usize).unwrap();
    for u in &us {
        mem.append(u.leaf()).unwrap();
    }
    let view = net.store.snapshot().unwrap();
    let tree = identity_tree(&*view, CHAIN).unwrap();
    assert_eq!(tree.root(), mem.root());
    assert!(tree.is_known_root(&root_before));
    net.audit();
}

#[test]
fn chains_without_bpk_refuse_its_payloads() {
    let mut net = BpkNet::new(false);
    let us = users();
    assert_eq!(net.register(&us[..1]), vec![TxStatus::BpkDisabled]);
    // Ingress refuses intents when it has no verifier.
    let a = AnonIntentSpec {
        proof: [0; 128],
        root: [0; 32],
        epoch: 0,
        nullifier: [0; 32],
        cluster: 0,
        centroid_commitment: [0; 32],
        target: target(),
        payload: vec![],
    };
    let tx = net.send_intent(a);
    let (checked, _) = net.block(vec![tx]);
    assert!(matches!(
        checked.rejected[..],
        [(0, IngressError::IntentsDisabled)]
    ));
    assert!(matches!(
        identity_tree(&*net.store.snapshot().unwrap(), CHAIN),
        Err(bpk::BpkError::Disabled)
    ));

    // A chain with the ledger alone: BPK payloads are not executable.
    let mut plain = Net::new(&[(id(&relayer()), registered(&relayer(), 0, 100))]);
    let body = build_tx_body(&TxBodySpec {
        chain_id: CHAIN,
        sender: id(&relayer()),
        nonce: 0,
        fee: FEE,
        payload: PayloadSpec::RegisterIdentity {
            commitment: [1; 32],
        },
    });
    let tx = seal(&relayer(), CHAIN, &body);
    assert_eq!(plain.block_ok(vec![tx]), vec![TxStatus::UnsupportedPayload]);
}

/// The same BPK blocks give the same statuses and state roots whether the
/// schedule runs in parallel or sequentially.
#[test]
fn parallel_and_sequential_execution_agree() {
    let run = |parallel: bool| {
        let mut net = BpkNet::with(true, parallel);
        let us = users();
        let mut statuses = net.register(&us);
        let epoch = net.next_epoch();
        let a = net.intent(&us[2], 2, epoch, &centroids0(), b"s");
        let b = net.intent(&us[2], 2, epoch, &centroids0(), b"s");
        let batch = vec![
            net.send_intent(a),
            net.send_intent(b),
            transfer(
                &relayer(),
                net.nonces[&id(&relayer())],
                FEE,
                id(&governance()),
                0,
            ),
        ];
        *net.nonces.get_mut(&id(&relayer())).unwrap() += 1;
        statuses.extend(net.block_ok(batch));
        net.audit();
        (statuses, net.chain.head().unwrap().state_root)
    };
    let (par, seq) = (run(true), run(false));
    assert_eq!(
        par.0[3..],
        [TxStatus::Ok, TxStatus::NullifierUsed, TxStatus::Ok]
    );
    assert_eq!(par, seq);
}

/// Counts the identity tree's batched hash calls (and hashes correctly).
#[derive(Default)]
struct CountingHasher {
    calls: std::sync::atomic::AtomicUsize,
}

impl PairHasher for CountingHasher {
    fn hash_pairs(&self, pairs: &[(Fr, Fr)]) -> Vec<Fr> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CpuPairHasher.hash_pairs(pairs)
    }
}

/// Registrations interleaved with an intent in one block: each run of
/// consecutive registrations is one batch (DEPTH hash calls on the
/// plugin's hasher), the intent between two runs sees the roots the first
/// run left (its pre-block root is still one of the last 3), and the tree
/// ends as sequential appends leave it: root, root history, paths.
#[test]
fn runs_of_registrations_are_batched_between_intents() {
    let hasher = Arc::new(CountingHasher::default());
    let mut net = BpkNet::with_plugin(true, true, BpkPlugin::with_hasher(hasher.clone()), false);
    let us = users();
    let extra: Vec<User> = (10..16).map(|i| User::new(i, [i as u16, 7])).collect();
    net.register(&us[..1]);
    let calls = |h: &CountingHasher| h.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls(&hasher), DEPTH, "one registration: one batch");
    let epoch = net.next_epoch();
    let intent = net.intent(&us[0], 0, epoch, &centroids0(), b"between");
    let reg = |net: &mut BpkNet, u: &User| {
        net.signed(
            &relayer(),
            PayloadSpec::RegisterIdentity {
                commitment: fr_to_be_bytes(&u.leaf()),
            },
        )
    };
    let mut batch = vec![reg(&mut net, &us[1]), reg(&mut net, &us[2])];
    batch.push(net.send_intent(intent));
    for u in &extra[..3] {
        batch.push(reg(&mut net, u));
    }
    assert_eq!(net.block_ok(batch), vec![TxStatus::Ok; 6]);
    assert_eq!(calls(&hasher), 3 * DEPTH, "two runs: two batches");

    let mut mem = IdentityTree::new(ROOT_HISTORY as usize).unwrap();
    for u in us.iter().chain(&extra[..3]) {
        mem.append(u.leaf()).unwrap();
    }
    let view = net.store.snapshot().unwrap();
    let tree = identity_tree(&*view, CHAIN).unwrap();
    assert_eq!(tree.len(), 6);
    assert_eq!(tree.root(), mem.root());
    assert!(tree.root_history().eq(mem.root_history()));
    for i in 0..6 {
        assert_eq!(tree.path(i).unwrap(), mem.path(i).unwrap());
    }
    net.audit();

    // Three registrations before an intent: its root (made against the
    // tree of 6) has fallen out of the last 3 roots, as with one append
    // per registration.
    let late = net.intent(&us[1], 1, epoch, &centroids0(), b"after three");
    let mut batch: Vec<Vec<u8>> = extra[3..].iter().map(|u| reg(&mut net, u)).collect();
    batch.push(net.send_intent(late));
    assert_eq!(net.next_epoch(), epoch, "still the same epoch");
    assert_eq!(
        net.block_ok(batch),
        vec![
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::Ok,
            TxStatus::UnknownRoot
        ]
    );
}

/// A SKU selling to cluster 1 only.
fn cluster_listing(model: PriceModel) -> SkuListing {
    SkuListing {
        kind: 1,
        unit: Unit::Mb,
        terms: Terms {
            model,
            period_blocks: 4,
            unit_price: 5,
        },
        capacity: 10,
        region: "wx4g0".into(),
        authority: Authority::Clusters,
        allow: vec![],
        clusters: vec![1],
        metadata_hash: [0; 32],
    }
}

#[test]
fn cluster_skus_sell_through_admitted_intents_to_their_clusters_only() {
    let mut net = BpkNet::with_plugin(true, true, BpkPlugin::new(), true);
    let us = users();
    assert_eq!(net.register(&us), vec![TxStatus::Ok; 3]);
    let (s, r) = (seller(), relayer());
    let gas = |net: &BpkNet, sk: &SecretKey| {
        net.store
            .snapshot()
            .unwrap()
            .account(CHAIN, &id(sk))
            .unwrap()
            .unwrap()
            .gas
    };
    let list = |net: &mut BpkNet, model| {
        let nonce = net.nonces.get(&id(&s)).copied().unwrap_or(0);
        let tx = net.signed(&s, PayloadSpec::ListSku(Box::new(cluster_listing(model))));
        assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::Ok]);
        SkuRef {
            seller: id(&s),
            seq: nonce,
        }
    };
    let sku = list(&mut net, PriceModel::PriceTag);
    let cpp = list(&mut net, PriceModel::Cpp);
    let (seller0, relayer0) = (gas(&net, &s), gas(&net, &r));
    let epoch = net.next_epoch();
    let buy = |sku, qty| {
        ClusterBuy {
            sku,
            qty,
            max_unit_price: 6,
            reference: 0,
        }
        .encode()
    };

    // User 1 (cluster 1) buys 2 units through the relayer: 10 to the
    // seller, the rest of the 12 locked back; the user stays unnamed.
    let a = net.intent_to(&us[1], 1, epoch, &centroids0(), id(&s), &buy(sku, 2));
    assert_eq!(a.cluster, 1);
    let nullifier = a.nullifier;
    let tx = net.send_intent(a.clone());
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::Ok]);
    assert_eq!(gas(&net, &s), seller0 + 10);
    assert_eq!(gas(&net, &r), relayer0 - FEE - 10);
    assert_eq!(
        market::sku(&*net.store.snapshot().unwrap(), CHAIN, &sku)
            .unwrap()
            .unwrap()
            .listing
            .capacity,
        8
    );
    assert!(
        nullifier_used(&*net.store.snapshot().unwrap(), CHAIN, &nullifier)
            .unwrap()
            .is_some()
    );

    // Refused, each with its lock back (only the fee is taken): the same
    // proof again (nullifier used), a user of cluster 0, an intent naming
    // someone other than the seller, too many units (9 of the 8 left), and
    // a plain purchase.
    let replay = net.send_intent(a);
    let other_cluster = net.intent_to(&us[0], 0, epoch, &centroids0(), id(&s), &buy(sku, 1));
    assert_eq!(other_cluster.cluster, 0);
    let other_cluster = net.send_intent(other_cluster);
    let elsewhere = net.intent_to(&us[1], 1, epoch, &centroids0(), target(), &buy(sku, 1));
    let elsewhere = net.send_intent(elsewhere);
    let too_many = net.intent_to(&us[1], 1, epoch, &centroids0(), id(&s), &buy(sku, 9));
    let too_many = net.send_intent(too_many);
    let plain = net.signed(
        &r,
        PayloadSpec::Buy {
            sku,
            qty: 1,
            max_unit_price: 6,
        },
    );
    // The same terms under another reference are another intent: bought.
    let again = ClusterBuy {
        reference: 1,
        ..ClusterBuy::decode(&buy(sku, 2)).unwrap()
    };
    let again = net.intent_to(&us[1], 1, epoch, &centroids0(), id(&s), &again.encode());
    let again = net.send_intent(again);
    let relayer1 = gas(&net, &r);
    let st = net.block_ok(vec![
        replay,
        other_cluster,
        elsewhere,
        too_many,
        plain,
        again,
    ]);
    assert_eq!(
        st,
        vec![
            TxStatus::NullifierUsed,
            TxStatus::Unauthorized,
            TxStatus::InvalidArgument,
            TxStatus::OverCapacity,
            TxStatus::Unauthorized,
            TxStatus::Ok,
        ]
    );
    assert_eq!(gas(&net, &r), relayer1 - 6 * FEE - 10);
    assert_eq!(gas(&net, &s), seller0 + 20);

    // A CPP SKU: the intent opens an order in the sender's name.
    let epoch = net.next_epoch();
    let a = net.intent_to(&us[1], 1, epoch, &centroids0(), id(&s), &buy(cpp, 3));
    let nonce = net.nonces.get(&id(&r)).copied().unwrap_or(0);
    let tx = net.send_intent(a);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::Ok]);
    let d = int_schemas::DealRef {
        sku: cpp,
        buyer: id(&r),
        nonce,
    };
    let o = market::order(&*net.store.snapshot().unwrap(), CHAIN, &d)
        .unwrap()
        .unwrap();
    assert_eq!((o.qty, o.unit_price), (3, 5));
    assert_eq!(
        escrow_held(&*net.store.snapshot().unwrap(), CHAIN)
            .unwrap()
            .gas,
        15
    );
    assert_eq!(net.chain.supply().unwrap().gas_escrow, 15);
    net.audit();
}

#[test]
fn purchase_intents_without_the_market_are_refunded() {
    // BPK admits the intent; no plugin buys: the chain refunds its lock.
    let mut net = BpkNet::new(true);
    let us = users();
    assert_eq!(net.register(&us), vec![TxStatus::Ok; 3]);
    let r = relayer();
    let before = net
        .store
        .snapshot()
        .unwrap()
        .account(CHAIN, &id(&r))
        .unwrap()
        .unwrap()
        .gas;
    let sku = SkuRef {
        seller: target(),
        seq: 0,
    };
    let payload = ClusterBuy {
        sku,
        qty: 2,
        max_unit_price: 100,
        reference: 0,
    }
    .encode();
    let epoch = net.next_epoch();
    let a = net.intent(&us[1], 1, epoch, &centroids0(), &payload);
    let tx = net.send_intent(a);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::UnsupportedPayload]);
    let after = net
        .store
        .snapshot()
        .unwrap()
        .account(CHAIN, &id(&r))
        .unwrap()
        .unwrap()
        .gas;
    assert_eq!(before - after, FEE);
    // A lock above the balance fails in the Debit stage.
    let big = ClusterBuy {
        sku,
        qty: 1,
        max_unit_price: 10_000,
        reference: 0,
    }
    .encode();
    let a = net.intent(&us[2], 2, epoch, &centroids0(), &big);
    let tx = net.send_intent(a);
    assert_eq!(net.block_ok(vec![tx]), vec![TxStatus::InsufficientBalance]);
}
