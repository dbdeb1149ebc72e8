//! Test support for the block pipeline: a temporary LMDB store, device keys
//! from fixed seeds, a funded genesis, signed envelopes, and one helper
//! that runs ingress and then executes the accepted transactions as a block
//! with the ledger plugin.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use int_engine::chain::{BlockFields, BlockResult, Chain, ChainConfig};
use int_engine::crypto::bls::{PublicKey, SecretKey, Signature, tx_message};
use int_engine::ingress::{self, CheckedBatch, IngressConfig, KeyCache, VerifiedTx};
use int_engine::storage::{AccountRecord, Head, ObjectWrite, StateView, Storage};
use int_engine::world::Plugin;
use int_schemas::wire::{DeviceKind, Token, TxStatus};
use int_schemas::{
    AccountId, PayloadSpec, ReceiptFields, TxBodySpec, build_envelope, build_tx_body,
    decode_receipts,
};
use int_systems::LedgerPlugin;
use tempfile::TempDir;

/// The chain id of every test chain.
pub const CHAIN: u32 = 7;
/// Genesis time; each block adds one second.
pub const T0: u64 = 1_700_000_000_000;

/// The device key number `i`, from a fixed seed.
pub fn key(i: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(b"INT-test");
    seed[8..12].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(&seed)
}

/// The proposer's (validator's) key.
pub fn proposer_key() -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..13].copy_from_slice(b"INT-validator");
    SecretKey::from_seed(&seed)
}

/// The account id of a secret key.
pub fn id(sk: &SecretKey) -> AccountId {
    sk.public_key().account_id()
}

/// A funded, registered account record for `sk`.
pub fn registered(sk: &SecretKey, int: u128, gas: u128) -> AccountRecord {
    AccountRecord {
        int,
        gas,
        public_key: Some(sk.public_key().to_bytes()),
        device_kind: DeviceKind::Sensor.0,
        ..Default::default()
    }
}

/// A funded account with no key yet.
pub fn unregistered(int: u128, gas: u128) -> AccountRecord {
    AccountRecord {
        int,
        gas,
        ..Default::default()
    }
}

/// Signs `body` for `chain_id` with `sk` and wraps it in an envelope.
pub fn seal(sk: &SecretKey, chain_id: u32, body: &[u8]) -> Vec<u8> {
    let sig = sk.sign(&tx_message(chain_id, body));
    build_envelope(body, &sig.to_bytes())
}

/// The body bytes of a transfer.
pub fn transfer_body(
    chain_id: u32,
    from: AccountId,
    nonce: u64,
    fee: u128,
    to: AccountId,
    amount: u128,
    token: Token,
) -> Vec<u8> {
    build_tx_body(&TxBodySpec {
        chain_id,
        sender: from,
        nonce,
        fee,
        payload: PayloadSpec::Transfer { to, amount, token },
    })
}

/// A signed INT transfer on [`CHAIN`].
pub fn transfer(sk: &SecretKey, nonce: u64, fee: u128, to: AccountId, amount: u128) -> Vec<u8> {
    transfer_tok(sk, nonce, fee, to, amount, Token::Int)
}

/// A signed transfer of `token` on [`CHAIN`].
pub fn transfer_tok(
    sk: &SecretKey,
    nonce: u64,
    fee: u128,
    to: AccountId,
    amount: u128,
    token: Token,
) -> Vec<u8> {
    seal(
        sk,
        CHAIN,
        &transfer_body(CHAIN, id(sk), nonce, fee, to, amount, token),
    )
}

/// A signed transaction of `sk` on [`CHAIN`] with any payload.
pub fn signed(sk: &SecretKey, nonce: u64, fee: u128, payload: PayloadSpec) -> Vec<u8> {
    let body = build_tx_body(&TxBodySpec {
        chain_id: CHAIN,
        sender: id(sk),
        nonce,
        fee,
        payload,
    });
    seal(sk, CHAIN, &body)
}

/// The body bytes of a registration with explicit parts (for bad ones).
pub fn register_body(
    sender: AccountId,
    nonce: u64,
    fee: u128,
    public_key: &PublicKey,
    pop: &Signature,
) -> Vec<u8> {
    build_tx_body(&TxBodySpec {
        chain_id: CHAIN,
        sender,
        nonce,
        fee,
        payload: PayloadSpec::RegisterDevice {
            public_key: public_key.to_bytes(),
            pop: pop.to_bytes(),
            kind: DeviceKind::Meter,
            metadata_hash: [0x5a; 32],
        },
    })
}

/// A valid, signed registration of `sk`'s key by its own account.
pub fn register(sk: &SecretKey, nonce: u64, fee: u128) -> Vec<u8> {
    let body = register_body(id(sk), nonce, fee, &sk.public_key(), &sk.prove_possession());
    seal(sk, CHAIN, &body)
}

/// The ingress parameters of the test chain (no fee floor: the fee rules
/// under test are the ledger's).
pub fn ingress_cfg() -> IngressConfig {
    IngressConfig {
        chain_id: CHAIN,
        min_fee: 0,
    }
}

/// Runs ingress over `batch` with keys read from `store`.
pub fn check(store: &dyn Storage, batch: Vec<Vec<u8>>) -> CheckedBatch {
    let keys = KeyCache::new(store, CHAIN, 1 << 16);
    ingress::check_batch(&ingress_cfg(), &keys, batch)
}

/// A chain over a temporary store.
pub struct Net {
    /// The pipeline (dropped and reopened by the restart test).
    pub chain: Option<Chain>,
    /// The store.
    pub store: Arc<dyn Storage>,
    /// The proposer of every block.
    pub proposer: SecretKey,
    /// Time of the next block.
    pub time_ms: u64,
    cfg: ChainConfig,
    plugins: fn() -> Vec<Box<dyn Plugin>>,
    /// Kept last so the directory outlives the store.
    pub dir: TempDir,
}

/// The plugins of a ledger-only chain.
pub fn ledger_only() -> Vec<Box<dyn Plugin>> {
    vec![Box::new(LedgerPlugin)]
}

/// Default pipeline parameters.
pub fn config(parallel: bool, hot_capacity: usize) -> ChainConfig {
    ChainConfig {
        chain_id: CHAIN,
        hot_capacity,
        parallel,
    }
}

impl Net {
    /// A fresh store with a genesis holding `alloc` plus the proposer
    /// (registered, unfunded unless `alloc` funds it).
    pub fn new(alloc: &[(AccountId, AccountRecord)]) -> Self {
        Self::with_config(alloc, config(true, 1024))
    }

    /// As [`Net::new`] with explicit pipeline parameters.
    pub fn with_config(alloc: &[(AccountId, AccountRecord)], cfg: ChainConfig) -> Self {
        Self::with_plugins(alloc, cfg, ledger_only, &[])
    }

    /// A chain running the plugins `plugins` makes (the ledger must be
    /// among them), with plugin objects at genesis.
    pub fn with_plugins(
        alloc: &[(AccountId, AccountRecord)],
        cfg: ChainConfig,
        plugins: fn() -> Vec<Box<dyn Plugin>>,
        objects: &[ObjectWrite],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = int_engine::storage::open(dir.path()).expect("open store");
        let proposer = proposer_key();
        let mut all = alloc.to_vec();
        if !all.iter().any(|(a, _)| *a == id(&proposer)) {
            all.push((id(&proposer), registered(&proposer, 0, 0)));
        }
        let made = plugins();
        let refs: Vec<&dyn Plugin> = made.iter().map(|p| p.as_ref()).collect();
        let mut chain = Chain::open(store.clone(), cfg, &refs).expect("open chain");
        chain
            .genesis_with_objects(&all, objects, T0, &proposer)
            .expect("genesis");
        Self {
            chain: Some(chain),
            store,
            proposer,
            time_ms: T0,
            cfg,
            plugins,
            dir,
        }
    }

    /// The pipeline.
    pub fn chain(&mut self) -> &mut Chain {
        self.chain.as_mut().expect("chain is open")
    }

    /// The committed head.
    pub fn head(&self) -> Head {
        self.store
            .snapshot()
            .unwrap()
            .head(CHAIN)
            .expect("head")
            .expect("genesis")
    }

    /// Drops the pipeline and opens a new one over the same store.
    pub fn reopen(&mut self) {
        self.chain = None;
        let made = (self.plugins)();
        let refs: Vec<&dyn Plugin> = made.iter().map(|p| p.as_ref()).collect();
        self.chain = Some(Chain::open(self.store.clone(), self.cfg, &refs).expect("reopen"));
    }

    /// Runs ingress over `batch` against the committed state.
    pub fn ingress(&self, batch: Vec<Vec<u8>>) -> CheckedBatch {
        check(&*self.store, batch)
    }

    /// Executes already verified transactions as the next block.
    pub fn execute(&mut self, txs: &[VerifiedTx]) -> BlockResult {
        self.time_ms += 1000;
        let (t, p) = (self.time_ms, self.proposer.clone());
        self.chain()
            .execute_block(txs, t, &p)
            .expect("execute block")
    }

    /// Executes `batch` as the next block and discards it (a proposal
    /// refused, a fork's block): nothing is committed and the world drops
    /// what the block did to it. The statuses it would have had.
    pub fn execute_discarded(&mut self, batch: Vec<Vec<u8>>) -> Vec<TxStatus> {
        let checked = self.ingress(batch);
        let parent = self.store.parallel_snapshot().unwrap();
        let fields = BlockFields {
            time_ms: self.time_ms + 1000,
            proposer: id(&self.proposer),
        };
        let statuses = self
            .chain()
            .execute(&parent, fields, &checked.accepted)
            .expect("execute block")
            .statuses;
        self.chain().discard();
        statuses
    }

    /// Ingress, then a block of everything accepted.
    pub fn block(&mut self, batch: Vec<Vec<u8>>) -> (CheckedBatch, BlockResult) {
        let checked = self.ingress(batch);
        let r = self.execute(&checked.accepted);
        (checked, r)
    }

    /// Ingress that must accept everything, then a block; the statuses.
    pub fn block_ok(&mut self, batch: Vec<Vec<u8>>) -> Vec<TxStatus> {
        let (checked, r) = self.block(batch);
        assert!(
            checked.rejected.is_empty(),
            "ingress rejected {:?}",
            checked.rejected
        );
        r.statuses
    }

    /// One committed account.
    pub fn account(&self, a: &AccountId) -> Option<AccountRecord> {
        self.store
            .snapshot()
            .unwrap()
            .account(CHAIN, a)
            .expect("read account")
    }

    /// A snapshot of the committed state.
    pub fn view(&self) -> Arc<dyn StateView> {
        self.store.snapshot().expect("snapshot")
    }

    /// Every committed account.
    pub fn accounts(&self) -> BTreeMap<AccountId, AccountRecord> {
        all_accounts(&*self.store.snapshot().unwrap())
    }

    /// The receipts of the block at `height`.
    pub fn receipts(&self, height: u64) -> Vec<ReceiptFields> {
        let bytes = self
            .view()
            .receipts(CHAIN, height)
            .expect("read receipts")
            .expect("receipts stored");
        let r = decode_receipts(&bytes).expect("decode receipts");
        r.receipts()
            .iter()
            .map(|r| ReceiptFields::from_wire(&r))
            .collect()
    }
}

/// Every committed account of [`CHAIN`] in `store`.
pub fn all_accounts(store: &dyn StateView) -> BTreeMap<AccountId, AccountRecord> {
    let mut m = BTreeMap::new();
    store
        .for_each_account(CHAIN, |a, r| {
            m.insert(a, r);
        })
        .expect("scan accounts");
    m
}

/// Sum of INT and of GAS over every committed account.
pub fn totals(store: &dyn StateView) -> (u128, u128) {
    let (mut int, mut gas) = (0u128, 0u128);
    store
        .for_each_account(CHAIN, |_, r| {
            int += r.int;
            gas += r.gas;
        })
        .expect("scan accounts");
    (int, gas)
}

/// An account id that belongs to no key used in the tests.
pub fn fresh_id(i: u32) -> AccountId {
    let mut a = [0xf5; 32];
    a[..4].copy_from_slice(&i.to_le_bytes());
    a
}
