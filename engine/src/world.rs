//! The ECS world of one chain: accounts and plugin objects (SKUs, deals,
//! bids, policies: [`crate::objects::Obj`]) as entities, the per-block
//! inputs and outputs as resources, and the stages systems run in.
//!
//! Only the hot set lives in the world: the accounts and objects the
//! current block touches and those touched recently. Everything else stays
//! in storage, so memory is bounded by [`HotSet::capacity`] per kind of
//! entity, not by the size of the state.

use std::sync::{Arc, OnceLock};

use bevy_ecs::prelude::*;
use bevy_ecs::schedule::{MultiThreadedExecutor, ScheduleLabel, SingleThreadedExecutor};
use int_schemas::wire::{DeviceKind, Token, TxStatus};
use int_schemas::{AccountId, Escrow, Hash32, PayloadSpec, PublicKeyBytes};

use crate::KeyMap;
use crate::crypto::bls::BlsG1Backend;
use crate::storage::{AccountRecord, ObjectWrite, StateView};
use crate::supply::SupplyDelta;

/// The account id of an entity. An evicted entity keeps its last id, stale,
/// until a load gives it to another account ([`HotSet::free`]).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountKey(pub AccountId);

/// Balances of both token tiers.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    /// INT, the transferable tier.
    pub int: u128,
    /// GAS, the tier resources and fees are paid in.
    pub gas: u128,
}

/// The next nonce the account must use.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nonce(pub u64);

/// What a registered device declared.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceProfile {
    /// The registered public key, if any.
    pub public_key: Option<PublicKeyBytes>,
    /// Device kind (wire enum value).
    pub kind: u8,
    /// Hash of off-chain metadata.
    pub metadata_hash: Hash32,
}

/// Bookkeeping of the hot set: whether the entity changed in the current
/// block, and when it was last used (for eviction).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HotMeta {
    /// Changed since the last commit.
    pub dirty: bool,
    /// Present in storage (false for an account this block creates).
    pub stored: bool,
    /// Height of the last block that touched it.
    pub last_touched: u64,
    /// Holds no account: evicted, its components stale, waiting in
    /// [`HotSet::free`] for the next load to reuse it (its `Outbox` and
    /// `Inbox` are empty, so the ledger's systems pass it by).
    pub evicted: bool,
}

/// Indices (into [`BlockTxs`]) of the current block's transactions sent by
/// this account, in block order. Filled at load, cleared at commit.
#[derive(Component, Debug, Clone, Default)]
pub struct Outbox(pub Vec<u32>);

/// Indices of the current block's transactions that may credit this
/// account. Filled at load, cleared at commit.
#[derive(Component, Debug, Clone, Default)]
pub struct Inbox(pub Vec<u32>);

impl AccountRecord {
    /// Builds the components of an entity from a stored record.
    pub fn components(&self) -> (Balances, Nonce, DeviceProfile) {
        (
            Balances {
                int: self.int,
                gas: self.gas,
            },
            Nonce(self.nonce),
            DeviceProfile {
                public_key: self.public_key,
                kind: self.device_kind,
                metadata_hash: self.metadata_hash,
            },
        )
    }

    /// Builds a record from an entity's components.
    pub fn from_components(b: &Balances, n: &Nonce, d: &DeviceProfile) -> Self {
        Self {
            nonce: n.0,
            int: b.int,
            gas: b.gas,
            public_key: d.public_key,
            device_kind: d.kind,
            metadata_hash: d.metadata_hash,
        }
    }
}

/// What a transaction asks for, extracted from its verified FlatBuffer with
/// accounts resolved to entities. The bytes themselves stay with the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Register the sender's key (proof of possession already verified).
    Register {
        /// The key; the sender id was checked to be its account id.
        public_key: PublicKeyBytes,
        /// Device kind.
        kind: DeviceKind,
        /// Metadata hash.
        metadata_hash: Hash32,
    },
    /// Move tokens to another account.
    Transfer {
        /// Receiving entity.
        to: Entity,
        /// Amount.
        amount: u128,
        /// Token.
        token: Token,
    },
    /// A payload another plugin decides (its fields are in [`DeferredPayloads`]):
    /// the ledger takes the envelope's nonce and fee and locks `escrow`
    /// from the sender (`InsufficientBalance` when it cannot); the owning
    /// plugin sets the payload's status in [`PayloadVerdicts`] during
    /// [`Stage::Admit`] or [`Stage::Apply`] and spends, escrows or refunds
    /// ([`Credits`]) exactly
    /// what was locked.
    Deferred {
        /// What the payload locks (`PayloadSpec::escrow`).
        escrow: Escrow,
    },
}

/// One transaction of the block being executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxCall {
    /// Sending entity.
    pub sender: Entity,
    /// Nonce the transaction claims.
    pub nonce: u64,
    /// Fee offered, in GAS.
    pub fee: u128,
    /// The payload.
    pub call: Call,
}

/// The outcome of one transaction, written by the stage that decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Status code, as in the receipt.
    pub status: TxStatus,
    /// GAS taken as fee.
    pub fee_charged: u128,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            status: TxStatus::Ok,
            fee_charged: 0,
        }
    }
}

/// The current block's transactions, in block order.
#[derive(Resource, Debug, Default)]
pub struct BlockTxs(pub Vec<TxCall>);

/// One write-once slot per transaction of the current block, by index.
/// Each slot is set at most once, by the task that owns the transaction, so
/// parallel stages write without locks; empty until decided.
#[derive(Resource, Debug)]
pub struct TxSlots<T: Send + Sync + 'static>(pub Vec<OnceLock<T>>);

impl<T: Send + Sync + 'static> Default for TxSlots<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Send + Sync + 'static> TxSlots<T> {
    /// Empty slots for `n` transactions.
    pub fn new(n: usize) -> Self {
        Self((0..n).map(|_| OnceLock::new()).collect())
    }

    /// Records the value of transaction `i`. Each transaction is decided
    /// once; deciding it twice is a bug in a stage.
    pub fn set(&self, i: u32, v: T) {
        let r = self.0[i as usize].set(v);
        assert!(r.is_ok(), "transaction {i} decided twice");
    }

    /// The value of transaction `i`, if decided.
    pub fn get(&self, i: u32) -> Option<&T> {
        self.0.get(i as usize).and_then(OnceLock::get)
    }
}

/// The outcome of each transaction of the current block (the ledger's
/// Debit stage decides every one).
pub type Outcomes = TxSlots<Outcome>;

/// The payloads of the block's [`Call::Deferred`] transactions, with their
/// index in [`BlockTxs`], in block order.
#[derive(Resource, Debug, Default)]
pub struct DeferredPayloads(pub Vec<DeferredTx>);

/// One transaction of the block whose payload a plugin decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredTx {
    /// Its index in [`BlockTxs`] (and in [`Outcomes`], [`PayloadVerdicts`]).
    pub index: u32,
    /// The sending account.
    pub sender: AccountId,
    /// The nonce it carries.
    pub nonce: u64,
    /// The payload.
    pub payload: PayloadSpec,
    /// What the Debit stage locks for it (`PayloadSpec::escrow`, computed
    /// once when the block is loaded).
    pub escrow: Escrow,
}

impl DeferredPayloads {
    /// The payloads `owns` claims whose envelope the Debit stage accepted
    /// (nonce advanced, fee and lock taken), in block order: exactly those
    /// the owning plugin must decide.
    pub fn accepted<'a>(
        &'a self,
        outcomes: &'a Outcomes,
        owns: impl Fn(&PayloadSpec) -> bool + 'a,
    ) -> impl Iterator<Item = &'a DeferredTx> + 'a {
        self.0.iter().filter(move |d| {
            owns(&d.payload)
                && outcomes
                    .get(d.index)
                    .is_some_and(|o| o.status == TxStatus::Ok)
        })
    }
}

/// The status a plugin gave a deferred payload whose envelope the ledger
/// accepted (outcome `Ok`, fee taken). The receipt shows it instead of the
/// envelope's `Ok`; the fee stays taken, as for a failed transfer.
pub type PayloadVerdicts = TxSlots<TxStatus>;

/// Amounts plugins credit to accounts in the current block: payments to
/// sellers, refunds, releases from escrow, minted GAS. Credits commute, so
/// they are summed per account after the schedule; an account that is not
/// in the world is loaded then. Credited amounts are spendable from the
/// next block on, as the ledger's transfers.
#[derive(Resource, Debug, Default)]
pub struct Credits(pub Vec<Credit>);

/// One credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Who receives it.
    pub to: AccountId,
    /// How much of each tier.
    pub amount: Escrow,
}

/// How the current block changes the token supply (escrow in and out,
/// burns, mints); systems add their part, the chain checks conservation
/// against it and stores the new totals.
#[derive(Resource, Debug, Default)]
pub struct BlockSupply(pub SupplyDelta);

/// Plugin object writes of the current block, committed with it in one
/// write transaction (state objects also enter the state root).
#[derive(Resource, Debug, Default)]
pub struct ObjectWrites(pub Vec<ObjectWrite>);

/// The snapshot of the parent state the current block executes against,
/// for plugins that read their objects while it executes (the block's own
/// writes stay in the plugin until the block's end). Present only while a
/// block executes.
#[derive(Resource, Clone)]
pub struct ParentState(pub Arc<dyn StateView>);

/// Where the block's own signature batches (the market's channel receipts
/// and usage attestations) hash to G1 and sum signatures: the CPU unless
/// the node sets its accelerator ([`crate::chain::Chain::set_bls_backend`]).
/// Either gives the same verdict.
#[derive(Resource, Clone)]
pub struct SigBackend(pub Arc<dyn BlsG1Backend + Send + Sync>);

/// Set by a system that could not execute the block (a storage read
/// failed): the chain then abandons the block, commits nothing, and reloads
/// its state from storage before the next one.
#[derive(Resource, Debug, Default)]
pub struct ExecFault(pub Option<String>);

/// Facts about the block being executed.
#[derive(Resource, Debug, Clone, Copy)]
pub struct BlockContext {
    /// Chain id.
    pub chain_id: u32,
    /// Height of the block.
    pub height: u64,
    /// Entity of the proposer, who receives the fees.
    pub proposer: Entity,
}

/// How systems run: in parallel over all cores, or one after another on
/// one thread (the reference the parallel run must equal bit for bit).
#[derive(Resource, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecConfig {
    /// Run queries with `par_iter` and the multi-threaded executor.
    pub parallel: bool,
}

/// Which entity holds which account, for the accounts in the world.
#[derive(Resource, Debug, Default)]
pub struct HotSet {
    /// Account id → entity.
    pub index: KeyMap<AccountId, Entity>,
    /// Entities of evicted accounts, which the next loads fill with the
    /// accounts they bring in: an entity is reused, not despawned and
    /// spawned again, which moved every column's row twice per account.
    pub free: Vec<Entity>,
    /// Most accounts kept between blocks; the least recently touched are
    /// evicted above it (they are already on disk). Plugin objects have
    /// their own index and bound ([`crate::objects::HotObjects`]).
    pub capacity: usize,
}

/// The stages of block execution, run in this order.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Plugins load the objects the block names into the hot set (exclusive
    /// systems: they spawn entities), before anything reads them.
    Load,
    /// Checks and debits, per sender in block order (senders in parallel).
    Debit,
    /// Deferred payloads that admit others, decided first: the anonymous
    /// intents' on-chain checks (BPK), whose admitted intents a plugin in
    /// [`Stage::Apply`] may then carry out (a purchase from a SKU that
    /// admits the proven cluster).
    Admit,
    /// Deferred payloads, decided by the plugins that own them (after the
    /// ledger has taken the fees, before the credits).
    Apply,
    /// Each plugin's [`crate::objects::PluginEffects`] moved into the
    /// block's writes, credits and supply delta.
    Gather,
    /// Credits, summed per receiver (receivers in parallel).
    Credit,
    /// Anything that reads the block's final effects.
    Finalize,
}

/// The schedule that executes one block.
#[derive(ScheduleLabel, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecuteBlock;

/// A group of systems, in the manner of bevy's plugins.
pub trait Plugin {
    /// Adds the plugin's systems and resources.
    fn build(&self, world: &mut World, schedule: &mut Schedule);
}

/// Builds the block schedule with its stages chained, in serial or
/// parallel executor mode.
///
/// Stages run one after another. Inside a stage, bevy's multi-threaded
/// executor runs at once the systems whose data do not conflict; with the
/// node's plugins (`tests/schedule.rs` in `int-systems` checks it):
///
/// | stage | systems | at once |
/// |---|---|---|
/// | Load | the market's load step | alone (exclusive: spawns entities) |
/// | Debit | the ledger's debits | alone; senders in parallel inside it |
/// | Admit | the BPK checks | alone |
/// | Apply | market, token | together (each writes its own [`crate::objects::PluginEffects`]); SKU groups in parallel inside the market |
/// | Gather | one per plugin | one after another (they share the block's outputs) |
/// | Credit | credits, then fees | in order; receivers in parallel inside |
///
/// The sequential executor runs the same systems one by one: the reference
/// the parallel run must equal bit for bit.
pub fn block_schedule(parallel: bool) -> Schedule {
    let mut s = Schedule::new(ExecuteBlock);
    s.configure_sets(
        (
            Stage::Load,
            Stage::Debit,
            Stage::Admit,
            Stage::Apply,
            Stage::Gather,
            Stage::Credit,
            Stage::Finalize,
        )
            .chain(),
    );
    if parallel {
        s.set_executor(MultiThreadedExecutor::new());
    } else {
        s.set_executor(SingleThreadedExecutor::new());
    }
    s
}

/// Makes sure bevy's compute pool exists (parallel queries use it).
pub fn init_task_pools() {
    bevy_tasks::ComputeTaskPool::get_or_init(bevy_tasks::TaskPool::default);
}
