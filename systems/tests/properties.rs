//! Property tests of the block pipeline over random blocks: the parallel
//! run equals the sequential run, both equal an independent reference model
//! of the ledger semantics (`int_systems::ledger`'s module doc), and value
//! is conserved.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use common::*;
use int_engine::crypto::bls::{SecretKey, Signature, account_id};
use int_engine::ingress::{IngressError, VerifiedTx};
use int_engine::state::twig_memory::MemoryLog;
use int_engine::storage::{self, AccountRecord};
use int_engine::supply::{SUPPLY_KEY, Supply};
use int_schemas::PayloadSpec;
use int_schemas::wire::{DeviceKind, Token, TxStatus};
use int_schemas::{AccountId, Hash32};
use proptest::prelude::*;

/// Keys registered at genesis.
const REGISTERED: usize = 16;
/// Keys that exist but are not registered at genesis (they may register).
const UNREGISTERED: usize = 4;
const ALL_KEYS: usize = REGISTERED + UNREGISTERED;
/// Receivers that are no key at all.
const FRESH: u32 = 3;
const GENESIS_INT: u128 = 10_000;
const GENESIS_GAS: u128 = 40;

struct Keys {
    sks: Vec<SecretKey>,
    ids: Vec<AccountId>,
    pops: Vec<Signature>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let sks: Vec<SecretKey> = (0..ALL_KEYS as u32).map(|i| key(500 + i)).collect();
        Keys {
            ids: sks.iter().map(id).collect(),
            pops: sks.iter().map(SecretKey::prove_possession).collect(),
            sks,
        }
    })
}

fn genesis_alloc() -> Vec<(AccountId, AccountRecord)> {
    let k = keys();
    (0..REGISTERED)
        .map(|i| (k.ids[i], registered(&k.sks[i], GENESIS_INT, GENESIS_GAS)))
        .collect()
}

// ---------------------------------------------------------------------------
// Random blocks.

#[derive(Debug, Clone, Copy)]
enum NonceKind {
    Next,
    Stale,
    Ahead(u64),
}

#[derive(Debug, Clone, Copy)]
enum AmountKind {
    Small(u128),
    Zero,
    All,
    Over,
    Max,
}

#[derive(Debug, Clone, Copy)]
enum FeeKind {
    Zero,
    Small(u128),
    All,
    Over,
}

#[derive(Debug, Clone, Copy)]
enum Dest {
    Key(usize),
    Fresh(u32),
    Myself,
    Proposer,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Transfer {
        from: usize,
        to: Dest,
        amount: AmountKind,
        gas: bool,
    },
    Register {
        who: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct TxGen {
    op: Op,
    nonce: NonceKind,
    fee: FeeKind,
}

fn sender() -> impl Strategy<Value = usize> {
    prop_oneof![9 => 0..REGISTERED, 1 => REGISTERED..ALL_KEYS]
}

fn tx_gen() -> impl Strategy<Value = TxGen> {
    let nonce = prop_oneof![
        8 => Just(NonceKind::Next),
        1 => Just(NonceKind::Stale),
        1 => (1u64..3).prop_map(NonceKind::Ahead),
    ];
    let fee = prop_oneof![
        3 => Just(FeeKind::Zero),
        4 => (1u128..=5).prop_map(FeeKind::Small),
        1 => Just(FeeKind::All),
        1 => Just(FeeKind::Over),
    ];
    let amount = prop_oneof![
        5 => (1u128..=4_000).prop_map(AmountKind::Small),
        1 => Just(AmountKind::Zero),
        1 => Just(AmountKind::All),
        1 => Just(AmountKind::Over),
        1 => Just(AmountKind::Max),
    ];
    let dest = prop_oneof![
        6 => (0..ALL_KEYS).prop_map(Dest::Key),
        2 => (0..FRESH).prop_map(Dest::Fresh),
        1 => Just(Dest::Myself),
        1 => Just(Dest::Proposer),
    ];
    let op = prop_oneof![
        10 => (sender(), dest, amount, prop::bool::weighted(0.1))
            .prop_map(|(from, to, amount, gas)| Op::Transfer { from, to, amount, gas }),
        1 => sender().prop_map(|who| Op::Register { who }),
    ];
    (op, nonce, fee).prop_map(|(op, nonce, fee)| TxGen { op, nonce, fee })
}

fn blocks() -> impl Strategy<Value = Vec<Vec<TxGen>>> {
    prop::collection::vec(prop::collection::vec(tx_gen(), 0..24), 1..4)
}

// ---------------------------------------------------------------------------
// The reference model: the ledger semantics, sequential, over a BTreeMap.

/// A transaction as the model sees it.
#[derive(Debug, Clone)]
struct MTx {
    sender: AccountId,
    nonce: u64,
    fee: u128,
    payload: PayloadSpec,
}

impl From<&VerifiedTx> for MTx {
    fn from(t: &VerifiedTx) -> Self {
        Self {
            sender: t.sender,
            nonce: t.nonce,
            fee: t.fee,
            payload: t.payload.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Model {
    accounts: BTreeMap<AccountId, AccountRecord>,
    proposer: AccountId,
    /// The chain's supply record (a state object, so under the root): the
    /// genesis totals, and the fees paid since.
    supply: Supply,
    /// The state log the chain's must equal: fed, block by block, the
    /// records and supply that changed ([`Model::root`]).
    log: MemoryLog,
    /// What the log holds: the accounts and supply as of the last root.
    logged: (BTreeMap<AccountId, AccountRecord>, Option<Supply>),
}

/// Debit stage of one transaction: its status, the fee it pays, and the
/// credit it owes if it succeeds.
fn model_debit(
    work: &mut BTreeMap<AccountId, AccountRecord>,
    tx: &MTx,
) -> (TxStatus, u128, Option<(AccountId, u128)>) {
    let r = work.entry(tx.sender).or_default();
    let registering = matches!(tx.payload, PayloadSpec::RegisterDevice { .. });
    if r.public_key.is_none() && !registering {
        return (TxStatus::UnknownSender, 0, None);
    }
    if tx.nonce != r.nonce {
        return (TxStatus::BadNonce, 0, None);
    }
    if tx.fee > r.gas {
        return (TxStatus::InsufficientFee, 0, None);
    }
    if r.nonce == u64::MAX {
        return (TxStatus::Overflow, 0, None);
    }
    r.nonce += 1;
    r.gas -= tx.fee;
    let mut credit = None;
    let status = match tx.payload.clone() {
        PayloadSpec::RegisterDevice {
            public_key,
            kind,
            metadata_hash,
            ..
        } => {
            if r.public_key.is_some() {
                TxStatus::AlreadyRegistered
            } else if account_id(&public_key) != tx.sender {
                TxStatus::SenderKeyMismatch
            } else {
                r.public_key = Some(public_key);
                r.device_kind = kind.0;
                r.metadata_hash = metadata_hash;
                TxStatus::Ok
            }
        }
        PayloadSpec::Transfer { to, amount, token } => {
            if token != Token::Int {
                TxStatus::GasNotTransferable
            } else if r.int < amount {
                TxStatus::InsufficientBalance
            } else {
                r.int -= amount;
                credit = Some((to, amount));
                TxStatus::Ok
            }
        }
        // With the ledger alone, every other payload is not executable
        // (its fee is taken).
        _ => TxStatus::UnsupportedPayload,
    };
    (status, tx.fee, credit)
}

impl Model {
    fn new(alloc: &[(AccountId, AccountRecord)], proposer: AccountId) -> Self {
        let (int, gas) = alloc
            .iter()
            .fold((0u128, 0u128), |(i, g), (_, r)| (i + r.int, g + r.gas));
        Self {
            accounts: alloc.iter().copied().collect(),
            proposer,
            supply: Supply::genesis(int, gas),
            log: MemoryLog::new(),
            logged: (BTreeMap::new(), None),
        }
    }

    /// Applies one block; the statuses in block order.
    fn apply(&mut self, txs: &[MTx]) -> Vec<TxStatus> {
        let mut work = self.accounts.clone();
        let mut statuses = Vec::with_capacity(txs.len());
        let mut credits = Vec::new();
        let mut fees = 0u128;
        for tx in txs {
            let (s, fee, credit) = model_debit(&mut work, tx);
            statuses.push(s);
            fees += fee;
            credits.extend(credit);
        }
        for (to, amount) in credits {
            work.entry(to).or_default().int += amount;
        }
        work.entry(self.proposer).or_default().gas += fees;
        self.supply.fees_paid += fees;
        // An account comes into being only when something changes it.
        let before = &self.accounts;
        work.retain(|a, r| before.contains_key(a) || *r != AccountRecord::default());
        self.accounts = work;
        statuses
    }

    /// The state root after the block just applied: the log takes the
    /// accounts and the supply that changed since the last root, as the
    /// chain's block wrote them (a write that repeats a value adds
    /// nothing, so the model need not know which unchanged records the
    /// chain wrote).
    fn root(&mut self) -> Hash32 {
        let mut writes: Vec<(Hash32, Option<Vec<u8>>)> = self
            .accounts
            .iter()
            .filter(|(a, r)| self.logged.0.get(*a) != Some(*r))
            .map(|(a, r)| (storage::account_leaf(a), Some(r.state_value(a).to_vec())))
            .collect();
        if self.logged.1.is_none() {
            // The genesis: its accounts are loaded first, in one chunk
            // here (`GENESIS_CHUNK_ACCOUNTS`), then block 0 writes the
            // supply.
            writes.sort_unstable_by_key(|a| a.0);
            self.log.block(&writes).expect("the genesis accounts load");
            writes.clear();
        }
        if self.logged.1.as_ref() != Some(&self.supply) {
            writes.push((
                storage::object_leaf(SUPPLY_KEY),
                Some(self.supply.encode().to_vec()),
            ));
        }
        writes.sort_unstable_by_key(|a| a.0);
        let root = self.log.block(&writes).expect("the model's writes plan");
        self.logged = (self.accounts.clone(), Some(self.supply));
        root
    }
}

// ---------------------------------------------------------------------------
// From generated transactions to signed envelopes.

fn fresh_receiver(i: u32) -> AccountId {
    fresh_id(900 + i)
}

/// Signs the block `gens` describes against the state `model` holds before
/// it: "next" nonces and "all"/"over" amounts and fees are resolved by
/// running the model's debit stage as the block is built.
fn build_block(model: &Model, gens: &[TxGen]) -> Vec<Vec<u8>> {
    let k = keys();
    let mut sim = model.accounts.clone();
    let mut out = Vec::with_capacity(gens.len());
    for g in gens {
        let from = match g.op {
            Op::Transfer { from, .. } => from,
            Op::Register { who } => who,
        };
        let (sk, sender) = (&k.sks[from], k.ids[from]);
        let rec = sim.get(&sender).copied().unwrap_or_default();
        let nonce = match g.nonce {
            NonceKind::Next => rec.nonce,
            NonceKind::Stale => rec.nonce.wrapping_sub(1),
            NonceKind::Ahead(d) => rec.nonce + d,
        };
        let fee = match g.fee {
            FeeKind::Zero => 0,
            FeeKind::Small(f) => f,
            FeeKind::All => rec.gas,
            FeeKind::Over => rec.gas + 1,
        };
        let (envelope, payload) = match g.op {
            Op::Transfer {
                to, amount, gas, ..
            } => {
                let to = match to {
                    Dest::Key(i) => k.ids[i],
                    Dest::Fresh(i) => fresh_receiver(i),
                    Dest::Myself => sender,
                    Dest::Proposer => id(&proposer_key()),
                };
                let amount = match amount {
                    AmountKind::Small(a) => a,
                    AmountKind::Zero => 0,
                    AmountKind::All => rec.int,
                    AmountKind::Over => rec.int + 1,
                    AmountKind::Max => u128::MAX,
                };
                let token = if gas { Token::Gas } else { Token::Int };
                (
                    transfer_tok(sk, nonce, fee, to, amount, token),
                    PayloadSpec::Transfer { to, amount, token },
                )
            }
            Op::Register { who } => {
                let body = register_body(sender, nonce, fee, &sk.public_key(), &k.pops[who]);
                (
                    seal(sk, CHAIN, &body),
                    PayloadSpec::RegisterDevice {
                        public_key: sk.public_key().to_bytes(),
                        pop: k.pops[who].to_bytes(),
                        kind: DeviceKind::Meter,
                        metadata_hash: [0x5a; 32],
                    },
                )
            }
        };
        model_debit(
            &mut sim,
            &MTx {
                sender,
                nonce,
                fee,
                payload,
            },
        );
        out.push(envelope);
    }
    out
}

/// Ingress over `batch`; checks that every refusal is an unregistered
/// sender with no registration in the batch, and returns the accepted.
fn admit(net: &Net, model: &Model, batch: Vec<Vec<u8>>) -> Vec<VerifiedTx> {
    let c = net.ingress(batch);
    let registering: BTreeSet<AccountId> = c
        .accepted
        .iter()
        .filter(|t| matches!(t.payload, PayloadSpec::RegisterDevice { .. }))
        .map(|t| t.sender)
        .collect();
    for (_, e) in &c.rejected {
        assert_eq!(*e, IngressError::UnknownSender);
    }
    for t in &c.accepted {
        let known = model
            .accounts
            .get(&t.sender)
            .is_some_and(|r| r.public_key.is_some());
        assert!(known || registering.contains(&t.sender));
    }
    c.accepted
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(24))]

    /// The parallel and the sequential pipeline agree bit for bit.
    #[test]
    fn parallel_run_equals_sequential_run(
        blocks in blocks(),
        small_hot_set in any::<bool>(),
    ) {
        let cap = if small_hot_set { 4 } else { 4096 };
        let alloc = genesis_alloc();
        let mut par = Net::with_config(&alloc, config(true, cap));
        let mut seq = Net::with_config(&alloc, config(false, cap));
        prop_assert_eq!(par.head(), seq.head());
        let mut model = Model::new(&alloc, id(&par.proposer));
        model.accounts = par.accounts();
        for gens in &blocks {
            let batch = build_block(&model, gens);
            let txs = admit(&par, &model, batch);
            let rp = par.execute(&txs);
            let rs = seq.execute(&txs);
            prop_assert_eq!(&rp.statuses, &rs.statuses);
            prop_assert_eq!(rp.head.state_root, rs.head.state_root);
            prop_assert_eq!(rp.head, rs.head);
            prop_assert_eq!(par.receipts(rp.head.height), seq.receipts(rs.head.height));
            let mtxs: Vec<MTx> = txs.iter().map(MTx::from).collect();
            model.apply(&mtxs);
        }
        prop_assert_eq!(par.accounts(), seq.accounts());
    }

    /// The engine and the reference model agree on every status, every
    /// account record and the state root.
    #[test]
    fn engine_equals_reference_model(
        blocks in blocks(),
        small_hot_set in any::<bool>(),
        parallel in any::<bool>(),
    ) {
        let cap = if small_hot_set { 4 } else { 4096 };
        let alloc = genesis_alloc();
        let mut net = Net::with_config(&alloc, config(parallel, cap));
        let mut model = Model::new(&alloc, id(&net.proposer));
        // The genesis adds the proposer's registered account.
        model.accounts = net.accounts();
        prop_assert_eq!(model.root(), net.head().state_root);
        for gens in &blocks {
            let batch = build_block(&model, gens);
            let txs = admit(&net, &model, batch);
            let r = net.execute(&txs);
            let mtxs: Vec<MTx> = txs.iter().map(MTx::from).collect();
            let expected = model.apply(&mtxs);
            prop_assert_eq!(&r.statuses, &expected);
            prop_assert_eq!(&net.accounts(), &model.accounts);
            prop_assert_eq!(model.root(), r.head.state_root);
            prop_assert_eq!(net.chain().supply().unwrap(), model.supply);
            prop_assert_eq!(model.accounts.len() as u64, r.head.accounts);
        }
    }

    /// No block creates or destroys INT or GAS.
    #[test]
    fn value_is_conserved(blocks in blocks()) {
        let alloc = genesis_alloc();
        let mut net = Net::with_config(&alloc, config(true, 8));
        let mut model = Model::new(&alloc, id(&net.proposer));
        model.accounts = net.accounts();
        let genesis = totals(&*net.view());
        prop_assert_eq!(
            genesis,
            (GENESIS_INT * REGISTERED as u128, GENESIS_GAS * REGISTERED as u128)
        );
        for gens in &blocks {
            let batch = build_block(&model, gens);
            let txs = admit(&net, &model, batch);
            let r = net.execute(&txs);
            let mtxs: Vec<MTx> = txs.iter().map(MTx::from).collect();
            model.apply(&mtxs);
            prop_assert_eq!(totals(&*net.view()), genesis);
            let (root, n) = storage::recompute_root(&*net.view(), CHAIN).unwrap();
            prop_assert_eq!((root, n), (r.head.state_root, r.head.accounts));
        }
    }
}
