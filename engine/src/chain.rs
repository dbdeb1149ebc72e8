//! One chain's block pipeline (DESIGN, data flow steps 4–6), as three
//! separate steps that types keep in order:
//!
//! 1. [`Chain::execute`]: a pure function of the parent state (a
//!    [`StateView`] snapshot), the header fields the proposer chose (time,
//!    proposer) and the transactions. No key, no clock, no write: it
//!    returns an [`Executed`] holding every write, the receipts and the
//!    header fields with the state, transaction and receipts roots.
//!    Executing the same block twice from the same parent gives the same
//!    bytes.
//! 2. [`Chain::seal`]: the proposer signs the header and aggregates the
//!    transactions' signatures into a [`Sealed`] block.
//!    [`Chain::check_block`] is the other way to a [`Sealed`]: a block
//!    someone else proposed, its signatures verified, re-executed from the
//!    parent and refused unless its header's roots, receipts and
//!    transactions are exactly what execution gives.
//! 3. [`Chain::commit`]: writes, block, receipts and head in one atomic
//!    storage commit.
//!
//! The ECS world keeps the hot set (recently touched accounts) between
//! blocks as a cache of the committed head's state. Executing a block
//! changes the cached entities; committing that block keeps them, and
//! anything else (another block committed, a second execution, a failure)
//! drops the cache, which reloads from storage. So a validator may execute
//! several proposals for one height and commit the one decided.
//!
//! [`Chain::execute_block`] runs the three steps for a proposer that
//! commits at once (the single-validator node, the benches).
//!
//! The relay chain is one `Chain`; parallel chains are more of them over
//! the same [`Storage`], told apart by the chain id in every key.

use std::sync::Arc;
use std::time::Instant;

use bevy_ecs::prelude::*;
use int_schemas::wire::TxStatus;
use int_schemas::{
    AccountId, Escrow, Hash32, HeaderFields, PayloadSpec, ReceiptFields, amount, build_block,
    build_header, build_receipts, decode_block,
};

use crate::crypto::bls::{
    self, PublicKey, SecretKey, Signature, header_message, tx_message, verify_pop,
};
use crate::ingress::{ProofVerifier, VerifiedTx};
use crate::state::smt::SmtError;
use crate::storage::{
    AccountRecord, BlockWrite, Head, ObjectTable, ObjectWrite, StateUpdate, StateView, Storage,
    StorageError, account_leaf, state_writes,
};
use crate::supply::{SUPPLY_KEY, Supply, SupplyDelta, account_totals, escrow_add};
use crate::world::*;

/// Errors of the block pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The state tree failed.
    #[error("state tree: {0}")]
    Smt(#[from] SmtError),
    /// The chain has no genesis yet.
    #[error("chain {0} has no genesis")]
    NoGenesis(u32),
    /// Genesis was asked for on a chain that has one.
    #[error("chain {0} already has a genesis")]
    GenesisExists(u32),
    /// An account appears twice in the genesis allocation.
    #[error("account {0} appears twice in the genesis allocation")]
    DuplicateGenesisAccount(String),
    /// Genesis balances add up to more than a u128.
    #[error("genesis supply overflows u128")]
    SupplyOverflow,
    /// A block failed verification.
    #[error("invalid block: {0}")]
    InvalidBlock(String),
    /// A system could not execute the block (nothing was committed).
    #[error("block execution failed: {0}")]
    Exec(String),
    /// The snapshot given as the parent is not at this chain's head (the
    /// world caches the head's state, so execution needs exactly it).
    #[error("parent snapshot at height {snapshot:?}, chain head at {head:?}")]
    ParentMismatch {
        /// Height of the snapshot's head.
        snapshot: Option<u64>,
        /// Height of the chain's head.
        head: Option<u64>,
    },
    /// A sealed block was committed on a parent other than the head.
    #[error("block {height} does not extend the head")]
    NotOnHead {
        /// Height of the block.
        height: u64,
    },
}

/// Parameters of a chain's pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ChainConfig {
    /// The chain's id, part of every storage key and signed message.
    pub chain_id: u32,
    /// Accounts kept in the world between blocks, and plugin objects of
    /// each type up to the type's own bound
    /// ([`crate::objects::StateObject::HOT_MAX`]).
    pub hot_capacity: usize,
    /// Execute with parallel systems (false: the sequential reference).
    pub parallel: bool,
}

/// Microseconds spent in each step of one block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Loading the hot set.
    pub load_us: u64,
    /// Running the systems.
    pub execute_us: u64,
    /// Updating the state root.
    pub root_us: u64,
    /// Building and signing the block.
    pub seal_us: u64,
    /// The storage commit.
    pub commit_us: u64,
}

/// What committing a block produced.
#[derive(Debug, Clone)]
pub struct BlockResult {
    /// The new head.
    pub head: Head,
    /// Each given transaction's status, in the order given. Those with
    /// `UnknownSender` changed nothing and are left out of the sealed block.
    pub statuses: Vec<TxStatus>,
    /// Where the time went.
    pub timings: Timings,
}

/// What execution reads of a transaction. Its signature was checked
/// before: at ingress for a proposal, with the block's aggregate for a
/// received block.
pub trait BlockTx: Sync {
    /// BLAKE3 hash of the body bytes.
    fn hash(&self) -> &Hash32;
    /// Sending account.
    fn sender(&self) -> &AccountId;
    /// Claimed nonce.
    fn nonce(&self) -> u64;
    /// Fee in GAS.
    fn fee(&self) -> u128;
    /// What it does.
    fn payload(&self) -> &PayloadSpec;
    /// Its signature, where execution has it (a proposal's transactions,
    /// not a received block's): the block's aggregate signature is then
    /// summed while the state root is computed.
    fn signature(&self) -> Option<&Signature> {
        None
    }
}

/// A transaction of a received block, decoded from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTx {
    /// BLAKE3 hash of the body bytes.
    pub hash: Hash32,
    /// Sending account.
    pub sender: AccountId,
    /// Claimed nonce.
    pub nonce: u64,
    /// Fee in GAS.
    pub fee: u128,
    /// What it does.
    pub payload: PayloadSpec,
}

/// Both kinds of transaction keep the fields under the same names.
macro_rules! block_tx_by_fields {
    ($($t:ty { $($more:tt)* }),*) => {$(
        impl BlockTx for $t {
            $($more)*
            fn hash(&self) -> &Hash32 {
                &self.hash
            }
            fn sender(&self) -> &AccountId {
                &self.sender
            }
            fn nonce(&self) -> u64 {
                self.nonce
            }
            fn fee(&self) -> u128 {
                self.fee
            }
            fn payload(&self) -> &PayloadSpec {
                &self.payload
            }
        }
    )*};
}
block_tx_by_fields!(
    VerifiedTx {
        fn signature(&self) -> Option<&Signature> {
            Some(&self.signature)
        }
    },
    BodyTx {}
);

/// What the proposer chooses for a block besides its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockFields {
    /// The proposer's clock, milliseconds since the Unix epoch (carried in
    /// the header; execution does not read it).
    pub time_ms: u64,
    /// The proposer, who receives the block's fees.
    pub proposer: AccountId,
}

/// A block executed against its parent: everything it writes and the
/// header it implies, not yet sealed or committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    parent: Head,
    /// The header's fields, roots included (what a proposer signs and a
    /// validator compares).
    pub header: HeaderFields,
    /// Each given transaction's status, in the order given.
    pub statuses: Vec<TxStatus>,
    /// Indices (into the given transactions) of those in the block: all
    /// but the `UnknownSender` ones, which changed nothing.
    pub included: Vec<u32>,
    /// The receipts of the included transactions, in block order.
    pub receipts: Vec<ReceiptFields>,
    /// Hashes of the included transactions, in block order.
    pub tx_hashes: Vec<Hash32>,
    /// Accounts written, by id.
    pub accounts: Vec<(AccountId, AccountRecord)>,
    /// Plugin objects written, in the order the block wrote them.
    pub objects: Vec<ObjectWrite>,
    /// The state update (the new root, and what the commit writes).
    pub state: StateUpdate,
    /// Accounts new to the state.
    pub new_accounts: u64,
    /// Where the time went (load, execute, root).
    pub timings: Timings,
    /// The included transactions' aggregate signature, when execution had
    /// their signatures ([`BlockTx::signature`]).
    aggregate: Option<Signature>,
}

impl Executed {
    /// The head this block would make.
    fn head(&self, header_bytes: &[u8]) -> Head {
        Head {
            height: self.header.height,
            hash: *blake3::hash(header_bytes).as_bytes(),
            state_root: self.header.state_root,
            accounts: self.parent.accounts + self.new_accounts,
        }
    }
}

/// A block ready to commit: executed, and sealed by its proposer (or
/// received and checked).
#[derive(Debug, Clone)]
pub struct Sealed {
    executed: Executed,
    block: Vec<u8>,
    receipts: Vec<u8>,
    head: Head,
}

impl Sealed {
    /// The block's bytes.
    pub fn block(&self) -> &[u8] {
        &self.block
    }

    /// The head committing it makes.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Its execution.
    pub fn executed(&self) -> &Executed {
        &self.executed
    }
}

/// The pipeline of one chain.
pub struct Chain {
    store: Arc<dyn Storage>,
    cfg: ChainConfig,
    world: World,
    schedule: Schedule,
    head: Option<Head>,
    /// Set while the world holds the effects of an executed block not yet
    /// committed: (height, state root) of that block.
    uncommitted: Option<(u64, Hash32)>,
    proofs: Option<Arc<dyn ProofVerifier + Send>>,
}

/// Commits a sealed block of chain `chain_id`: its writes, the block, its
/// receipts, the transaction index and the new head, in one atomic
/// storage commit.
fn write(store: &dyn Storage, chain_id: u32, sealed: &Sealed) -> Result<(), ChainError> {
    let e = &sealed.executed;
    store.commit_block(&BlockWrite {
        chain_id,
        accounts: &e.accounts,
        state: &e.state,
        height: e.header.height,
        block: &sealed.block,
        receipts: &sealed.receipts,
        tx_hashes: &e.tx_hashes,
        head: sealed.head,
        objects: &e.objects,
    })?;
    Ok(())
}

/// Drops the least recently touched accounts and plugin objects from
/// the world when it holds more than its capacity (they are all
/// committed). An account's entity is kept for the next load to reuse
/// ([`HotSet::free`]); objects are despawned.
fn evict(world: &mut World) {
    crate::objects::evict_objects(world);
    let (len, cap) = {
        let hot = world.resource::<HotSet>();
        (hot.index.len(), hot.capacity)
    };
    if len <= cap {
        return;
    }
    let mut q = world.query::<(Entity, &AccountKey, &HotMeta)>();
    let all: Vec<(u64, AccountId, Entity)> = q
        .iter(world)
        .filter(|(_, _, m)| !m.evicted)
        .map(|(e, k, m)| {
            debug_assert!(!m.dirty, "evicting an uncommitted account");
            (m.last_touched, k.0, e)
        })
        .collect();
    debug_assert_eq!(all.len(), len, "the index names every held account");
    let victims = crate::objects::least_recent(all, cap);
    let mut metas = world.query::<(&mut HotMeta, &Outbox, &Inbox)>();
    for &(_, e) in &victims {
        let (mut meta, outbox, inbox) = metas.get_mut(world, e).expect("the query found it above");
        debug_assert!(outbox.0.is_empty() && inbox.0.is_empty());
        meta.evicted = true;
    }
    let mut hot = world.resource_mut::<HotSet>();
    hot.free.reserve(victims.len());
    for (id, e) in victims {
        hot.index.remove(&id);
        hot.free.push(e);
    }
}

fn us(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

/// Binary Merkle root over 32-byte leaves (BLAKE3, `0x01 ‖ left ‖ right`;
/// an odd node is carried up unchanged; no leaves give zeros).
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return [0; 32];
    }
    use rayon::prelude::*;
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let next = level
            .par_chunks(2)
            .with_min_len(crate::PAR_ITEMS_MIN)
            .map(|p| match p {
                [l, r] => {
                    let mut h = blake3::Hasher::new();
                    h.update(&[1]);
                    h.update(l);
                    h.update(r);
                    *h.finalize().as_bytes()
                }
                [one] => *one,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        level = next;
    }
    level[0]
}

fn receipt_hash(r: &ReceiptFields) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&r.tx_hash);
    h.update(&r.height.to_le_bytes());
    h.update(&r.index.to_le_bytes());
    h.update(&r.status.0.to_le_bytes());
    h.update(&r.fee_charged.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The supply totals of a chain in a snapshot, and whether they are
/// stored. A chain created before supply accounting has no supply object;
/// it held no escrow then, so the totals are the sums over its accounts
/// (read once, then stored with the next block).
fn stored_supply(view: &dyn StateView, chain_id: u32) -> Result<(Supply, bool), ChainError> {
    if let Some(b) = view.object(chain_id, ObjectTable::State, SUPPLY_KEY)? {
        return Ok((Supply::decode(&b)?, true));
    }
    match account_totals(view, chain_id)? {
        Some(t) => Ok((Supply::genesis(t.int, t.gas), false)),
        None => Err(ChainError::SupplyOverflow),
    }
}

impl Chain {
    /// Opens the pipeline of `cfg.chain_id` over `store`, with the systems
    /// of `plugins`.
    pub fn open(
        store: Arc<dyn Storage>,
        cfg: ChainConfig,
        plugins: &[&dyn Plugin],
    ) -> Result<Self, ChainError> {
        assert!(cfg.hot_capacity > 0);
        init_task_pools();
        let mut world = World::new();
        world.insert_resource(ExecConfig {
            parallel: cfg.parallel,
        });
        world.insert_resource(HotSet {
            capacity: cfg.hot_capacity,
            ..Default::default()
        });
        world.insert_resource(BlockTxs::default());
        world.insert_resource(Outcomes::default());
        world.insert_resource(DeferredPayloads::default());
        world.insert_resource(PayloadVerdicts::default());
        world.insert_resource(ObjectWrites::default());
        world.insert_resource(Credits::default());
        world.insert_resource(BlockSupply::default());
        world.insert_resource(ExecFault::default());
        world.insert_resource(SigBackend(Arc::new(bls::CpuG1)));
        let mut schedule = block_schedule(cfg.parallel);
        for p in plugins {
            p.build(&mut world, &mut schedule);
        }
        let head = store.snapshot()?.head(cfg.chain_id)?;
        Ok(Self {
            store,
            cfg,
            world,
            schedule,
            head,
            uncommitted: None,
            proofs: None,
        })
    }

    /// Sets the verifier of anonymous-intent proofs that
    /// [`Chain::verify_block`] uses (without one, a block carrying intents
    /// does not verify).
    pub fn set_proof_verifier(&mut self, proofs: Arc<dyn ProofVerifier + Send>) {
        self.proofs = Some(proofs);
    }

    /// Sets where the block's own signature batches do their curve
    /// arithmetic ([`SigBackend`]; the CPU until set).
    pub fn set_bls_backend(&mut self, g1: Arc<dyn bls::BlsG1Backend + Send + Sync>) {
        self.world.insert_resource(SigBackend(g1));
    }

    /// The last committed block, or `None` before genesis.
    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// The chain's parameters.
    pub fn config(&self) -> &ChainConfig {
        &self.cfg
    }

    /// The store under the chain.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The ECS world (for inspection and tests).
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The block schedule (for inspection and tests: which systems may run
    /// at once is in its graph once a block has run).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Accounts currently held in the world.
    pub fn hot_accounts(&self) -> usize {
        self.world.resource::<HotSet>().index.len()
    }

    /// Writes block 0 with the given accounts.
    pub fn genesis(
        &mut self,
        alloc: &[(AccountId, AccountRecord)],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<Head, ChainError> {
        self.genesis_with_objects(alloc, &[], time_ms, proposer)
    }

    /// Writes block 0 with the given accounts (any order) and plugin
    /// objects (a plugin's genesis parameters, such as the BPK verifying
    /// key): a [`GenesisLoader`] fed the accounts sorted.
    pub fn genesis_with_objects(
        &mut self,
        alloc: &[(AccountId, AccountRecord)],
        objects: &[ObjectWrite],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<Head, ChainError> {
        self.genesis_of(
            alloc.len() as u64,
            &|i| alloc[i as usize],
            objects,
            time_ms,
            proposer,
        )
    }

    /// Writes block 0 with accounts `account(0..n)` (any order; each may
    /// be computed twice) and `objects`: sorted by state key in 16 bytes
    /// an account, then fed to a [`GenesisLoader`] a chunk at a time, so a
    /// population need not be held as a list (≈ 200 bytes an account).
    pub fn genesis_of(
        &mut self,
        n: u64,
        account: &(dyn Fn(u64) -> (AccountId, AccountRecord) + Sync),
        objects: &[ObjectWrite],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<Head, ChainError> {
        use rayon::prelude::*;
        // Refused before any account is loaded, not after.
        check_genesis_objects(objects)?;
        let leaf = |i: u64| account_leaf(&account(i).0);
        let frag = |i: u64| {
            let l = leaf(i);
            u64::from_be_bytes([l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]])
        };
        let mut order: Vec<(u64, u64)> = (0..n).into_par_iter().map(|i| (frag(i), i)).collect();
        // Ties of the first 64 bits (about one in 3 700 at 10⁸) by the
        // whole key; equal keys end side by side, for the loader to refuse.
        order.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| leaf(a.1).cmp(&leaf(b.1))));
        let mut loader = self.begin_genesis()?;
        // Handed to the loader in small batches: it cuts its chunks by
        // count, so the batches change nothing but the memory (a chunk's
        // accounts are not held twice).
        for chunk in order.chunks(GENESIS_ADD_ACCOUNTS) {
            let accounts: Vec<(AccountId, AccountRecord)> =
                chunk.par_iter().map(|&(_, i)| account(i)).collect();
            loader.add(&accounts)?;
        }
        drop(order);
        loader.finish(objects, time_ms, proposer)
    }

    /// Starts the genesis of a chain that has none: accounts go in through
    /// [`GenesisLoader::add`], in order, as many as the disk holds, and
    /// [`GenesisLoader::finish`] writes block 0.
    pub fn begin_genesis(&mut self) -> Result<GenesisLoader<'_>, ChainError> {
        if self.head.is_some() {
            return Err(ChainError::GenesisExists(self.cfg.chain_id));
        }
        self.store.begin_genesis(self.cfg.chain_id)?;
        Ok(GenesisLoader {
            chain: self,
            chunk: GENESIS_CHUNK_ACCOUNTS,
            pending: Vec::new(),
            last: None,
            int: 0,
            gas: 0,
            accounts: 0,
            failed: false,
        })
    }

    /// [`Chain::begin_genesis`] with chunks of `chunk` accounts instead of
    /// [`GENESIS_CHUNK_ACCOUNTS`], for tests that cross chunk boundaries
    /// without a million accounts. The root depends on the chunk size: a
    /// chain's genesis uses the constant.
    #[doc(hidden)]
    pub fn begin_genesis_in_chunks(
        &mut self,
        chunk: usize,
    ) -> Result<GenesisLoader<'_>, ChainError> {
        assert!(chunk > 0);
        let mut loader = self.begin_genesis()?;
        loader.chunk = chunk;
        Ok(loader)
    }

    /// Executes `txs` (already verified at ingress) as the next block,
    /// seals it with `proposer`'s key and commits it: [`Chain::execute`],
    /// [`Chain::seal`] and [`Chain::commit`] in one call.
    pub fn execute_block(
        &mut self,
        txs: &[VerifiedTx],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<BlockResult, ChainError> {
        let parent = self.store.parallel_snapshot()?;
        let fields = BlockFields {
            time_ms,
            proposer: proposer.public_key().account_id(),
        };
        let executed = self.execute(&parent, fields, txs)?;
        drop(parent);
        let statuses = executed.statuses.clone();
        let sealed = self.seal(executed, txs, proposer)?;
        let mut timings = sealed.executed.timings;
        let t = Instant::now();
        let head = self.commit(sealed)?;
        timings.commit_us = us(t);
        Ok(BlockResult {
            head,
            statuses,
            timings,
        })
    }

    /// Executes `txs` as the block after `parent`, which must be a snapshot
    /// at this chain's head: loads what the block touches from `parent`,
    /// runs the block schedule, settles credits and the supply, and
    /// computes the new state root. Writes nothing: the result holds every
    /// write. The world keeps the block's effects until
    /// [`Chain::commit`] takes this block, or drops them when anything else
    /// happens first.
    pub fn execute<T: BlockTx>(
        &mut self,
        parent: &Arc<dyn StateView>,
        fields: BlockFields,
        txs: &[T],
    ) -> Result<Executed, ChainError> {
        let chain_id = self.cfg.chain_id;
        let parent_head = parent.head(chain_id)?;
        if parent_head != self.head {
            return Err(ChainError::ParentMismatch {
                snapshot: parent_head.map(|h| h.height),
                head: self.head.map(|h| h.height),
            });
        }
        let parent_head = parent_head.ok_or(ChainError::NoGenesis(chain_id))?;
        if self.uncommitted.take().is_some() {
            // The world holds an executed block nobody committed.
            self.drop_hot_set();
        }
        let result = self.run_block(parent, parent_head, fields, txs);
        match &result {
            Ok(e) => self.uncommitted = Some((e.header.height, e.header.state_root)),
            // The world holds half a block: forget it.
            Err(_) => self.drop_hot_set(),
        }
        self.world.remove_resource::<ParentState>();
        result
    }

    fn run_block<T: BlockTx>(
        &mut self,
        parent: &Arc<dyn StateView>,
        parent_head: Head,
        fields: BlockFields,
        txs: &[T],
    ) -> Result<Executed, ChainError> {
        let height = parent_head.height + 1;
        let mut timings = Timings::default();

        // Load the accounts the block touches.
        let t = Instant::now();
        self.world.insert_resource(ParentState(parent.clone()));
        let mut touched = self.load(&**parent, txs, fields.proposer, height)?;
        timings.load_us = us(t);

        // Execute the schedule.
        let t = Instant::now();
        self.schedule.run(&mut self.world);
        let mut objects = std::mem::take(&mut self.world.resource_mut::<ObjectWrites>().0);
        let mut credits = std::mem::take(&mut self.world.resource_mut::<Credits>().0);
        // The ledger's fee total is in it (`fees`), the plugins' escrow,
        // burns and mints.
        let delta = std::mem::take(&mut self.world.resource_mut::<BlockSupply>().0);
        if let Some(fault) = self.world.resource_mut::<ExecFault>().0.take() {
            return Err(ChainError::Exec(fault));
        }

        let mut outcomes = std::mem::take(&mut self.world.resource_mut::<Outcomes>().0);
        let verdicts = std::mem::take(&mut *self.world.resource_mut::<PayloadVerdicts>());
        // A deferred payload's own status replaces its envelope's `Ok`; one
        // that no plugin decided is not executable here (its fee is taken,
        // as for any payload that fails).
        let deferred = std::mem::take(&mut self.world.resource_mut::<DeferredPayloads>().0);
        // What the Debit stage locked from senders for deferred payloads:
        // their plugins must account for every unit of it. A payload no
        // plugin decided gets its lock back here.
        let mut locked = Escrow::NONE;
        for d in &deferred {
            if let Some(out) = outcomes[d.index as usize].get_mut()
                && out.status == TxStatus::Ok
            {
                let escrow = d.escrow;
                // Each lock came out of a balance, so their sum is bounded
                // by the supply, which fits u128.
                locked = escrow_add(locked, escrow).expect("locks are bounded by the supply");
                out.status = match verdicts.get(d.index) {
                    Some(v) => *v,
                    None => {
                        if !escrow.is_none() {
                            credits.push(Credit {
                                to: d.sender,
                                amount: escrow,
                            });
                        }
                        TxStatus::UnsupportedPayload
                    }
                };
            }
        }
        self.settle(
            &**parent,
            &mut touched,
            &credits,
            locked,
            &delta,
            height,
            &mut objects,
        )?;
        // Plugins' writes arrive in the order bevy ran their Gather
        // systems, the supply's last; the block's are in key order (the
        // state tree refuses a key written twice).
        objects.sort_unstable_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
        timings.execute_us = us(t);
        let statuses: Vec<TxStatus> = outcomes
            .iter()
            .map(|o| o.get().map_or(TxStatus::UnsupportedPayload, |o| o.status))
            .collect();
        // A transaction whose sender has no key when it executes changed
        // nothing, and no one else could check its signature against the
        // chain's state: it stays out of the block (its status still goes
        // back to the caller).
        let mut included = Vec::with_capacity(txs.len());
        let mut receipts = Vec::with_capacity(txs.len());
        let mut tx_hashes = Vec::with_capacity(txs.len());
        for (i, (tx, o)) in txs.iter().zip(&outcomes).enumerate() {
            let o = o.get().copied().unwrap_or(Outcome {
                status: TxStatus::UnsupportedPayload,
                fee_charged: 0,
            });
            if o.status == TxStatus::UnknownSender {
                continue;
            }
            receipts.push(ReceiptFields {
                tx_hash: *tx.hash(),
                height,
                index: included.len() as u32,
                status: o.status,
                fee_charged: o.fee_charged,
            });
            included.push(i as u32);
            tx_hashes.push(*tx.hash());
        }

        // The aggregate signature of the included transactions is summed
        // on blst's threads while the state root is computed (whose
        // planner leaves a core idle); the proposer's seal takes it.
        let sigs: Vec<Signature> = included
            .iter()
            .filter_map(|&i| txs[i as usize].signature().copied())
            .collect();
        // A thread that cannot start leaves the sum to the seal.
        let summing = if !sigs.is_empty() && sigs.len() == included.len() {
            std::thread::Builder::new()
                .name("sum-signatures".into())
                .spawn(move || bls::aggregate_verified(&sigs))
                .ok()
        } else {
            None
        };

        // Collect the dirty state and compute the root.
        let (accounts, new_accounts) = self.take_dirty(&touched, height);
        self.finish(
            &**parent,
            parent_head,
            height,
            fields,
            Partial {
                statuses,
                included,
                receipts,
                tx_hashes,
                accounts,
                objects,
                new_accounts,
                timings,
                summing,
            },
        )
    }

    /// Computes the state root of a block's writes over `parent` and the
    /// header fields.
    fn finish(
        &self,
        parent: &dyn StateView,
        parent_head: Head,
        height: u64,
        fields: BlockFields,
        p: Partial,
    ) -> Result<Executed, ChainError> {
        let chain_id = self.cfg.chain_id;
        let mut timings = p.timings;
        let t = Instant::now();
        // The receipts' and transactions' roots beside the state's, whose
        // planner leaves a core idle.
        let (state, (tx_root, receipts_root)) = rayon::join(
            || parent.prepare_state(chain_id, &state_writes(&p.accounts, &p.objects)),
            || {
                use rayon::prelude::*;
                let receipt_hashes: Vec<Hash32> = p
                    .receipts
                    .par_iter()
                    .with_min_len(crate::PAR_ITEMS_MIN)
                    .map(receipt_hash)
                    .collect();
                (merkle_root(&p.tx_hashes), merkle_root(&receipt_hashes))
            },
        );
        let state = state?;
        let state_root = state.root();
        timings.root_us = us(t);
        // A failed sum is summed again, and reported, by the seal.
        let aggregate = p.summing.and_then(|h| match h.join() {
            Ok(sum) => sum.ok(),
            Err(panic) => std::panic::resume_unwind(panic),
        });
        let header = HeaderFields {
            chain_id,
            height,
            parent_hash: parent_head.hash,
            state_root,
            tx_root,
            receipts_root,
            time_ms: fields.time_ms,
            proposer: fields.proposer,
            tx_count: p.tx_hashes.len() as u32,
        };
        Ok(Executed {
            parent: parent_head,
            header,
            statuses: p.statuses,
            included: p.included,
            receipts: p.receipts,
            tx_hashes: p.tx_hashes,
            accounts: p.accounts,
            objects: p.objects,
            state,
            new_accounts: p.new_accounts,
            timings,
            aggregate,
        })
    }

    /// Seals an executed block as its proposer: `txs` are the transactions
    /// it was executed with (the included ones go into the block, their
    /// signatures aggregated), `proposer` the key of the block's proposer.
    pub fn seal(
        &self,
        executed: Executed,
        txs: &[VerifiedTx],
        proposer: &SecretKey,
    ) -> Result<Sealed, ChainError> {
        if executed.statuses.len() != txs.len() {
            return Err(ChainError::Exec(format!(
                "sealing {} transactions of a block executed with {}",
                txs.len(),
                executed.statuses.len()
            )));
        }
        let included: Vec<&VerifiedTx> = executed
            .included
            .iter()
            .map(|&i| &txs[i as usize])
            .collect();
        if included
            .iter()
            .zip(&executed.tx_hashes)
            .any(|(tx, h)| tx.hash != *h)
        {
            return Err(ChainError::Exec(
                "sealing other transactions than were executed".into(),
            ));
        }
        self.seal_on(executed, &included, proposer)
    }

    fn seal_on(
        &self,
        mut executed: Executed,
        txs: &[&VerifiedTx],
        proposer: &SecretKey,
    ) -> Result<Sealed, ChainError> {
        let chain_id = self.cfg.chain_id;
        if proposer.public_key().account_id() != executed.header.proposer {
            return Err(ChainError::Exec(
                "the sealing key is not the executed block's proposer".into(),
            ));
        }
        let t = Instant::now();
        let header = build_header(&executed.header);
        // Verified at ingress (subgroup-checked there): no second check.
        // Summed during execution when it had the signatures (the same
        // transactions: `seal` checked their hashes, and a key signs a
        // body one way only).
        let agg = match executed.aggregate.take() {
            Some(agg) => agg,
            None => {
                let sigs: Vec<Signature> = txs.iter().map(|t| t.signature).collect();
                bls::aggregate_verified(&sigs)
                    .map_err(|e| ChainError::InvalidBlock(format!("aggregate: {e}")))?
            }
        };
        let proposer_sig = proposer.sign(&header_message(chain_id, &header));
        let block = build_block(
            &header,
            txs.iter().map(|t| t.body()),
            &agg.to_bytes(),
            &proposer_sig.to_bytes(),
        );
        let receipts = build_receipts(executed.header.height, &executed.receipts);
        let head = executed.head(&header);
        executed.timings.seal_us = us(t);
        Ok(Sealed {
            executed,
            block,
            receipts,
            head,
        })
    }

    /// Checks a block someone else proposed, as the block after `parent`
    /// (a snapshot at this chain's head): its structure, its transactions'
    /// aggregate signature, the proofs of possession of the keys it
    /// registers, its intents' proofs and its proposer's signature; then
    /// executes it and refuses it unless the header's state root,
    /// transaction root, receipts root and count are what execution gives
    /// and every transaction is one execution includes. The checked block
    /// is committed as received with [`Chain::commit`].
    pub fn check_block(
        &mut self,
        parent: &Arc<dyn StateView>,
        bytes: &[u8],
    ) -> Result<Sealed, ChainError> {
        let invalid = |s: String| ChainError::InvalidBlock(s);
        let chain_id = self.cfg.chain_id;
        let parent_head = parent
            .head(chain_id)?
            .ok_or(ChainError::NoGenesis(chain_id))?;
        let b = decode_block(bytes).map_err(|e| invalid(e.to_string()))?;
        let claimed = HeaderFields::from_wire(&b.header);
        if claimed.chain_id != chain_id {
            return Err(invalid(format!("chain id {}", claimed.chain_id)));
        }
        if claimed.height != parent_head.height + 1 || claimed.parent_hash != parent_head.hash {
            return Err(invalid(format!(
                "block {} does not extend the head at {}",
                claimed.height, parent_head.height
            )));
        }
        self.verify_block_in(&**parent, bytes)?;
        let mut txs = Vec::with_capacity(b.bodies.len());
        for (body, body_bytes) in &b.bodies {
            if body.chain_id() != chain_id {
                return Err(invalid(format!(
                    "a transaction of chain {}",
                    body.chain_id()
                )));
            }
            let payload = int_schemas::payload_spec(body).map_err(|e| invalid(e.to_string()))?;
            if let PayloadSpec::RegisterDevice {
                public_key, pop, ..
            } = &payload
            {
                let pk = PublicKey::from_bytes(public_key)
                    .map_err(|e| invalid(format!("registered key: {e}")))?;
                let pop = Signature::from_bytes(pop)
                    .map_err(|e| invalid(format!("proof of possession: {e}")))?;
                if pk.account_id() != body.sender().0 || !verify_pop(&pk, &pop) {
                    return Err(invalid(
                        "a registration without a valid proof of possession".into(),
                    ));
                }
            }
            txs.push(BodyTx {
                hash: *blake3::hash(body_bytes).as_bytes(),
                sender: body.sender().0,
                nonce: body.nonce(),
                fee: amount(body.fee()),
                payload,
            });
        }
        let fields = BlockFields {
            time_ms: claimed.time_ms,
            proposer: claimed.proposer,
        };
        let executed = self.execute(parent, fields, &txs)?;
        let mismatch = if executed.included.len() != txs.len() {
            Some(format!(
                "{} of its transactions have unknown senders",
                txs.len() - executed.included.len()
            ))
        } else if executed.header.state_root != claimed.state_root {
            Some("its state root is not the one execution gives".to_string())
        } else if executed.header.receipts_root != claimed.receipts_root {
            Some("its receipts root is not the one execution gives".to_string())
        } else if executed.header != claimed {
            Some("its header is not the one execution gives".to_string())
        } else {
            None
        };
        if let Some(why) = mismatch {
            self.discard();
            return Err(invalid(why));
        }
        let receipts = build_receipts(executed.header.height, &executed.receipts);
        let head = executed.head(b.header_bytes);
        Ok(Sealed {
            executed,
            block: bytes.to_vec(),
            receipts,
            head,
        })
    }

    /// Forgets an executed block that will not be committed (the world
    /// reloads the head's state).
    pub fn discard(&mut self) {
        if self.uncommitted.take().is_some() {
            self.drop_hot_set();
        }
    }

    /// Commits a sealed block on the head: its writes, the block, its
    /// receipts, the transaction index and the new head, in one atomic
    /// storage commit.
    pub fn commit(&mut self, sealed: Sealed) -> Result<Head, ChainError> {
        let e = &sealed.executed;
        if Some(e.parent) != self.head {
            return Err(ChainError::NotOnHead {
                height: e.header.height,
            });
        }
        let mine = self.uncommitted.take() == Some((e.header.height, e.header.state_root));
        if !mine {
            // The world holds another execution's effects, or none.
            self.drop_hot_set();
        }
        // The world's accounts are all clean now (execution took the
        // block's writes): the least recent leave it on another thread
        // while storage commits, which does not touch the world.
        let (store, world, chain_id) = (&self.store, &mut self.world, self.cfg.chain_id);
        let written = std::thread::scope(|s| {
            let evicting = s.spawn(|| evict(world));
            let written = write(&**store, chain_id, &sealed);
            if let Err(panic) = evicting.join() {
                std::panic::resume_unwind(panic);
            }
            written
        });
        if let Err(err) = written {
            // The world holds this block's effects, storage does not.
            self.drop_hot_set();
            return Err(err);
        }
        self.head = Some(sealed.head);
        Ok(sealed.head)
    }

    /// The supply totals at the head.
    pub fn supply(&self) -> Result<Supply, ChainError> {
        Ok(stored_supply(&*self.store.snapshot()?, self.cfg.chain_id)?.0)
    }

    fn load_accounts(
        &mut self,
        parent: &dyn StateView,
        ids: &[AccountId],
        height: u64,
    ) -> Result<Vec<Entity>, ChainError> {
        // Each id's entity; `None` for those to load.
        let mut entities: Vec<Option<Entity>> = {
            let hot = self.world.resource::<HotSet>();
            ids.iter().map(|id| hot.index.get(id).copied()).collect()
        };
        let missing: Vec<AccountId> = ids
            .iter()
            .zip(&entities)
            .filter(|(_, e)| e.is_none())
            .map(|(id, _)| *id)
            .collect();
        let records = parent.accounts(self.cfg.chain_id, &missing)?;
        let account = |id: &AccountId, rec: &Option<AccountRecord>| {
            let (b, n, d) = rec.unwrap_or_default().components();
            let meta = HotMeta {
                dirty: false,
                stored: rec.is_some(),
                last_touched: height,
                evicted: false,
            };
            (AccountKey(*id), b, n, d, meta)
        };
        // Evicted entities first, then new ones for the rest.
        let reused = {
            let mut hot = self.world.resource_mut::<HotSet>();
            let at = hot.free.len().saturating_sub(missing.len());
            hot.free.split_off(at)
        };
        let mut q = self.world.query::<(
            &mut AccountKey,
            &mut Balances,
            &mut Nonce,
            &mut DeviceProfile,
            &mut HotMeta,
        )>();
        for ((id, rec), &e) in missing.iter().zip(&records).zip(&reused) {
            let (mut k, mut b, mut n, mut d, mut m) =
                q.get_mut(&mut self.world, e).expect("free entities live");
            debug_assert!(m.evicted);
            (*k, *b, *n, *d, *m) = account(id, rec);
        }
        let spawned: Vec<Entity> = self
            .world
            .spawn_batch(
                missing[reused.len()..]
                    .iter()
                    .zip(&records[reused.len()..])
                    .map(|(id, rec)| {
                        let (k, b, n, d, m) = account(id, rec);
                        (k, b, n, d, m, Outbox::default(), Inbox::default())
                    }),
            )
            .collect();
        let mut hot = self.world.resource_mut::<HotSet>();
        let mut loaded = missing.iter().zip(reused.into_iter().chain(spawned));
        for slot in entities.iter_mut().filter(|e| e.is_none()) {
            let (id, e) = loaded.next().expect("an entity for every missing id");
            hot.index.insert(*id, e);
            *slot = Some(e);
        }
        debug_assert!(loaded.next().is_none());
        Ok(entities.into_iter().flatten().collect())
    }

    /// Brings every account the block touches into the world and fills the
    /// block's resources; returns the touched entities.
    fn load<T: BlockTx>(
        &mut self,
        parent: &dyn StateView,
        txs: &[T],
        proposer: AccountId,
        height: u64,
    ) -> Result<Vec<Entity>, ChainError> {
        let mut ids: Vec<AccountId> = Vec::with_capacity(txs.len() * 2 + 1);
        ids.push(proposer);
        for tx in txs {
            ids.push(*tx.sender());
            if let PayloadSpec::Transfer { to, .. } = tx.payload() {
                ids.push(*to);
            }
        }
        {
            use rayon::prelude::*;
            ids.par_sort_unstable();
        }
        ids.dedup();
        let touched = self.load_accounts(parent, &ids, height)?;
        // Every id of the block is in the index now (loaded just above).
        let mut deferred = Vec::new();
        let (calls, proposer_entity) = {
            let hot = self.world.resource::<HotSet>();
            let entity = |id: &AccountId| hot.index[id];
            let calls: Vec<TxCall> = txs
                .iter()
                .enumerate()
                .map(|(i, tx)| TxCall {
                    sender: entity(tx.sender()),
                    nonce: tx.nonce(),
                    fee: tx.fee(),
                    call: match tx.payload() {
                        PayloadSpec::RegisterDevice {
                            public_key,
                            kind,
                            metadata_hash,
                            ..
                        } => Call::Register {
                            public_key: *public_key,
                            kind: *kind,
                            metadata_hash: *metadata_hash,
                        },
                        PayloadSpec::Transfer { to, amount, token } => Call::Transfer {
                            to: entity(to),
                            amount: *amount,
                            token: *token,
                        },
                        other => {
                            let escrow = other.escrow();
                            deferred.push(DeferredTx {
                                index: i as u32,
                                sender: *tx.sender(),
                                nonce: tx.nonce(),
                                payload: other.clone(),
                                escrow,
                            });
                            Call::Deferred { escrow }
                        }
                    },
                })
                .collect();
            (calls, entity(&proposer))
        };
        // One query for the three: `World::get_mut` looks each component
        // up by type on every call.
        let mut q = self
            .world
            .query::<(&mut HotMeta, &mut Outbox, &mut Inbox)>();
        // Every touched account is the proposer, a sender or a receiver:
        // each is marked touched where its transactions are listed.
        if let Ok((mut m, _, _)) = q.get_mut(&mut self.world, proposer_entity) {
            m.last_touched = height;
        }
        for (i, c) in calls.iter().enumerate() {
            if let Ok((mut m, mut o, _)) = q.get_mut(&mut self.world, c.sender) {
                m.last_touched = height;
                o.0.push(i as u32);
            }
            if let Call::Transfer { to, .. } = c.call
                && let Ok((mut m, _, mut inbox)) = q.get_mut(&mut self.world, to)
            {
                m.last_touched = height;
                inbox.0.push(i as u32);
            }
        }
        self.world.insert_resource(BlockContext {
            chain_id: self.cfg.chain_id,
            height,
            proposer: proposer_entity,
        });
        self.world.insert_resource(Outcomes::new(calls.len()));
        self.world
            .insert_resource(PayloadVerdicts::new(calls.len()));
        self.world.insert_resource(DeferredPayloads(deferred));
        // run_block takes both after every schedule run.
        debug_assert!(self.world.resource::<ObjectWrites>().0.is_empty());
        debug_assert!(self.world.resource::<ExecFault>().0.is_none());
        self.world.resource_mut::<BlockTxs>().0 = calls;
        Ok(touched)
    }

    /// Reads the dirty accounts among `touched`, clears the per-block
    /// components, and counts accounts new to storage.
    fn take_dirty(
        &mut self,
        touched: &[Entity],
        height: u64,
    ) -> (Vec<(AccountId, AccountRecord)>, u64) {
        let mut dirty = Vec::with_capacity(touched.len());
        let mut new_accounts = 0u64;
        let mut q = self.world.query::<(
            &AccountKey,
            &Balances,
            &Nonce,
            &DeviceProfile,
            &mut HotMeta,
            &mut Outbox,
            &mut Inbox,
        )>();
        for &e in touched {
            let Ok((k, b, n, d, mut meta, mut outbox, mut inbox)) = q.get_mut(&mut self.world, e)
            else {
                continue;
            };
            outbox.0.clear();
            inbox.0.clear();
            if !meta.dirty {
                continue;
            }
            dirty.push((k.0, AccountRecord::from_components(b, n, d)));
            if !meta.stored {
                new_accounts += 1;
            }
            *meta = HotMeta {
                dirty: false,
                stored: true,
                last_touched: height,
                evicted: false,
            };
        }
        dirty.sort_unstable_by_key(|a| a.0);
        (dirty, new_accounts)
    }

    /// Checks that the block's plugins conserved value, applies their
    /// credits (loading the accounts that are not in the world) and writes
    /// the new supply totals.
    ///
    /// Conservation, per token: what the Debit stage locked for deferred
    /// payloads, plus what left escrow, plus what was minted, equals what
    /// was credited, plus what entered escrow, plus what was burned.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        parent: &dyn StateView,
        touched: &mut Vec<Entity>,
        credits: &[Credit],
        locked: Escrow,
        delta: &SupplyDelta,
        height: u64,
        objects: &mut Vec<ObjectWrite>,
    ) -> Result<(), ChainError> {
        let overflow = || ChainError::Exec("block amounts overflow u128".into());
        let mut per_account: std::collections::BTreeMap<AccountId, Escrow> = Default::default();
        let mut credited = Escrow::NONE;
        for c in credits {
            let e = per_account.entry(c.to).or_default();
            *e = escrow_add(*e, c.amount).ok_or_else(overflow)?;
            credited = escrow_add(credited, c.amount).ok_or_else(overflow)?;
        }
        let sources = escrow_add(locked, delta.released)
            .and_then(|s| {
                escrow_add(
                    s,
                    Escrow {
                        int: 0,
                        gas: delta.gas_minted,
                    },
                )
            })
            .ok_or_else(overflow)?;
        let sinks = escrow_add(credited, delta.escrowed)
            .and_then(|s| {
                escrow_add(
                    s,
                    Escrow {
                        int: delta.int_burned,
                        gas: 0,
                    },
                )
            })
            .ok_or_else(overflow)?;
        assert_eq!(
            sources, sinks,
            "block {height}: plugins did not conserve value (locked {locked:?}, delta {delta:?}, credited {credited:?})"
        );
        let (before, stored) = stored_supply(parent, self.cfg.chain_id)?;
        let after = before.apply(delta).ok_or_else(|| {
            ChainError::Exec(format!(
                "block {height}: supply delta {delta:?} breaks the totals {before:?}"
            ))
        })?;
        if after != before || !stored {
            objects.push(ObjectWrite {
                table: ObjectTable::State,
                key: SUPPLY_KEY.to_vec(),
                value: Some(after.encode().to_vec()),
            });
        }
        if per_account.is_empty() {
            return Ok(());
        }
        let ids: Vec<AccountId> = per_account.keys().copied().collect();
        let entities = self.load_accounts(parent, &ids, height)?;
        for (amount, e) in per_account.into_values().zip(entities) {
            let mut ent = self.world.entity_mut(e);
            let mut bal = ent.get_mut::<Balances>().expect("accounts have balances");
            // Every balance is bounded by its token's total, which the
            // supply check above keeps within u128.
            bal.int = bal.int.checked_add(amount.int).ok_or_else(overflow)?;
            bal.gas = bal.gas.checked_add(amount.gas).ok_or_else(overflow)?;
            let mut meta = ent.get_mut::<HotMeta>().expect("accounts have meta");
            meta.dirty = true;
            meta.last_touched = height;
            // A hot account the block did not name is written only if it is
            // among the touched ones.
            touched.push(e);
        }
        touched.sort_unstable();
        touched.dedup();
        Ok(())
    }

    /// Drops every account and plugin object from the world (they are
    /// reloaded from storage when next touched).
    fn drop_hot_set(&mut self) {
        crate::objects::drop_all_objects(&mut self.world);
        let entities: Vec<Entity> = {
            let mut hot = self.world.resource_mut::<HotSet>();
            let mut all = std::mem::take(&mut hot.free);
            all.extend(hot.index.drain().map(|(_, e)| e));
            all
        };
        for e in entities {
            self.world.despawn(e);
        }
    }

    /// Re-verifies a stored or received block of this chain: its structure,
    /// the aggregate signature of its transactions (`aggregate_verify` over
    /// each sender's key and message) and the proposer's signature.
    pub fn verify_block(&self, bytes: &[u8]) -> Result<(), ChainError> {
        self.verify_block_in(&*self.store.snapshot()?, bytes)
    }

    /// [`Chain::verify_block`] with the senders' keys read from `view`.
    pub fn verify_block_in(&self, view: &dyn StateView, bytes: &[u8]) -> Result<(), ChainError> {
        let invalid = |s: String| ChainError::InvalidBlock(s);
        let b = decode_block(bytes).map_err(|e| invalid(e.to_string()))?;
        let chain_id = b.header.chain_id();
        if chain_id != self.cfg.chain_id {
            return Err(invalid(format!("chain id {chain_id}")));
        }
        let key_of = |id: &AccountId| -> Result<PublicKey, ChainError> {
            let rec = view
                .account(chain_id, id)?
                .ok_or_else(|| invalid(format!("unknown account {}", hex_id(id))))?;
            let pk = rec
                .public_key
                .ok_or_else(|| invalid(format!("unregistered sender {}", hex_id(id))))?;
            PublicKey::from_bytes(&pk).map_err(|e| invalid(format!("stored key: {e}")))
        };
        // A registration's own key signs it; as at ingress, a key
        // registered anywhere in the block also signs its account's other
        // transactions of the block (they passed ingress in one batch, and
        // one may have failed on chain, leaving the store without the key).
        let mut reg_keys: Vec<Option<PublicKey>> = Vec::with_capacity(b.bodies.len());
        let mut block_keys: std::collections::HashMap<AccountId, PublicKey> =
            std::collections::HashMap::new();
        for (body, _) in &b.bodies {
            let pk = match body.payload_as_register_device() {
                Some(r) => {
                    let pk = PublicKey::from_bytes(&r.public_key().0)
                        .map_err(|e| invalid(format!("registered key: {e}")))?;
                    if pk.account_id() == body.sender().0 {
                        block_keys.entry(body.sender().0).or_insert(pk);
                    }
                    Some(pk)
                }
                None => None,
            };
            reg_keys.push(pk);
        }
        let mut pks = Vec::with_capacity(b.bodies.len());
        let mut msgs = Vec::with_capacity(b.bodies.len());
        for ((body, bytes), reg) in b.bodies.iter().zip(reg_keys) {
            let pk = match reg {
                Some(pk) => pk,
                None => match block_keys.get(&body.sender().0) {
                    Some(pk) => *pk,
                    None => key_of(&body.sender().0)?,
                },
            };
            pks.push(pk);
            msgs.push(tx_message(chain_id, bytes));
        }
        let agg = Signature::from_bytes(&b.block.tx_signature().0)
            .map_err(|e| invalid(format!("aggregate signature: {e}")))?;
        let msg_refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let pk_refs: Vec<&PublicKey> = pks.iter().collect();
        if !bls::aggregate_verify(&agg, &msg_refs, &pk_refs) {
            return Err(invalid(
                "aggregate transaction signature does not verify".into(),
            ));
        }
        // The intents' proofs, in one batch.
        let mut intents = Vec::new();
        for (body, _) in &b.bodies {
            if let PayloadSpec::AnonIntent(a) =
                int_schemas::payload_spec(body).map_err(|e| invalid(e.to_string()))?
            {
                intents.push(a);
            }
        }
        if !intents.is_empty() {
            let proofs = self.proofs.as_ref().ok_or_else(|| {
                invalid("block carries intents and no proof verifier is set".into())
            })?;
            let items: Vec<&int_schemas::AnonIntentSpec> = intents.iter().map(|a| &**a).collect();
            if let Some(i) = proofs
                .verify_intents(chain_id, &items)
                .iter()
                .position(Result::is_err)
            {
                return Err(invalid(format!("intent proof {i} does not verify")));
            }
        }
        let proposer = key_of(&b.header.proposer().0)?;
        let psig = Signature::from_bytes(&b.block.proposer_signature().0)
            .map_err(|e| invalid(format!("proposer signature: {e}")))?;
        if !psig.verify(&proposer, &header_message(chain_id, b.header_bytes)) {
            return Err(invalid("proposer signature does not verify".into()));
        }
        Ok(())
    }
}

/// What execution collected before the state root is computed.
struct Partial {
    statuses: Vec<TxStatus>,
    included: Vec<u32>,
    receipts: Vec<ReceiptFields>,
    tx_hashes: Vec<Hash32>,
    accounts: Vec<(AccountId, AccountRecord)>,
    objects: Vec<ObjectWrite>,
    new_accounts: u64,
    timings: Timings,
    /// The included transactions' signatures being summed, on their own
    /// thread, when execution has them.
    summing: Option<Summing>,
}

/// A thread summing signatures.
type Summing = std::thread::JoinHandle<Result<Signature, bls::CryptoError>>;

fn hex_id(id: &AccountId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Genesis objects may set anything but the supply, which the chain
/// computes from the accounts.
fn check_genesis_objects(objects: &[ObjectWrite]) -> Result<(), ChainError> {
    if objects.iter().any(|o| o.key == SUPPLY_KEY) {
        return Err(ChainError::Exec(
            "genesis objects may not set the supply: the chain computes it".into(),
        ));
    }
    Ok(())
}

/// Accounts [`Chain::genesis_of`] computes and hands to the loader at once.
const GENESIS_ADD_ACCOUNTS: usize = 1 << 16;

/// Accounts loaded per chunk of a genesis. Part of what a genesis is:
/// each chunk boundary re-appends one entry to the state log, so the
/// genesis root depends on this size (the same on every node).
pub const GENESIS_CHUNK_ACCOUNTS: usize = 1 << 20;

/// A genesis being written ([`Chain::begin_genesis`]): accounts in
/// ascending order of their state key ([`account_leaf`]), loaded into
/// storage a chunk of [`GENESIS_CHUNK_ACCOUNTS`] at a time, so a
/// population of any size needs the memory of one chunk; then block 0
/// ([`GenesisLoader::finish`]) with the supply and the plugin objects. The
/// chain has no head until block 0 commits: a genesis dropped or
/// interrupted before is redone from the start.
pub struct GenesisLoader<'c> {
    chain: &'c mut Chain,
    /// Accounts per chunk.
    chunk: usize,
    pending: Vec<(AccountId, AccountRecord)>,
    last: Option<Hash32>,
    int: u128,
    gas: u128,
    /// Accounts in storage.
    accounts: u64,
    /// An error stopped this genesis: it is redone from
    /// [`Chain::begin_genesis`], never continued.
    failed: bool,
}

impl GenesisLoader<'_> {
    /// Adds accounts: strictly ascending by [`account_leaf`], above every
    /// account added before (an id twice is a
    /// [`ChainError::DuplicateGenesisAccount`]).
    pub fn add(&mut self, accounts: &[(AccountId, AccountRecord)]) -> Result<(), ChainError> {
        self.live()?;
        let res = self.add_sorted(accounts);
        self.failed = res.is_err();
        res
    }

    fn live(&self) -> Result<(), ChainError> {
        if self.failed {
            return Err(ChainError::Exec(
                "this genesis failed: begin it again".into(),
            ));
        }
        Ok(())
    }

    fn add_sorted(&mut self, accounts: &[(AccountId, AccountRecord)]) -> Result<(), ChainError> {
        use rayon::prelude::*;
        let leaves: Vec<Hash32> = accounts
            .par_iter()
            .map(|(id, _)| account_leaf(id))
            .collect();
        for ((id, rec), leaf) in accounts.iter().zip(&leaves) {
            match self.last {
                Some(last) if last == *leaf => {
                    return Err(ChainError::DuplicateGenesisAccount(hex_id(id)));
                }
                Some(last) if last > *leaf => {
                    return Err(ChainError::Exec(
                        "genesis accounts out of state-key order".into(),
                    ));
                }
                _ => {}
            }
            self.last = Some(*leaf);
            self.int = self
                .int
                .checked_add(rec.int)
                .ok_or(ChainError::SupplyOverflow)?;
            self.gas = self
                .gas
                .checked_add(rec.gas)
                .ok_or(ChainError::SupplyOverflow)?;
            self.pending.push((*id, *rec));
            if self.pending.len() >= self.chunk {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ChainError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.chain.store.load_genesis_accounts(
            self.chain.cfg.chain_id,
            self.accounts,
            &self.pending,
        )?;
        self.accounts += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Accounts added so far.
    pub fn accounts(&self) -> u64 {
        self.accounts + self.pending.len() as u64
    }

    /// Loads what is left and writes block 0: the supply of the accounts
    /// added, and `objects`.
    pub fn finish(
        mut self,
        objects: &[ObjectWrite],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<Head, ChainError> {
        self.live()?;
        check_genesis_objects(objects)?;
        self.flush()?;
        let mut objects = objects.to_vec();
        objects.push(ObjectWrite {
            table: ObjectTable::State,
            key: SUPPLY_KEY.to_vec(),
            value: Some(Supply::genesis(self.int, self.gas).encode().to_vec()),
        });
        let chain = self.chain;
        let view = chain.store.parallel_snapshot()?;
        let fields = BlockFields {
            time_ms,
            proposer: proposer.public_key().account_id(),
        };
        let executed = chain.finish(
            &*view,
            Head::default(),
            0,
            fields,
            Partial {
                statuses: Vec::new(),
                included: Vec::new(),
                receipts: Vec::new(),
                tx_hashes: Vec::new(),
                accounts: Vec::new(),
                objects,
                new_accounts: self.accounts,
                timings: Timings::default(),
                summing: None,
            },
        )?;
        drop(view);
        let sealed = chain.seal_on(executed, &[], proposer)?;
        write(&*chain.store, chain.cfg.chain_id, &sealed)?;
        chain.head = Some(sealed.head);
        Ok(sealed.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merkle_root_shapes() {
        assert_eq!(merkle_root(&[]), [0; 32]);
        assert_eq!(merkle_root(&[[7; 32]]), [7; 32]);
        let two = merkle_root(&[[1; 32], [2; 32]]);
        assert_ne!(two, merkle_root(&[[2; 32], [1; 32]]));
        let three = merkle_root(&[[1; 32], [2; 32], [3; 32]]);
        let mut h = blake3::Hasher::new();
        h.update(&[1]);
        h.update(&two);
        h.update(&[3; 32]);
        assert_eq!(three, *h.finalize().as_bytes());
    }
}
