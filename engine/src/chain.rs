//! One chain's block pipeline (DESIGN, data flow steps 3–5): load the hot
//! set from LMDB into the ECS world, execute the block schedule, seal the
//! block (one aggregate signature for all its transactions, the proposer's
//! signature over the header), and commit everything in one LMDB write
//! transaction with the state root updated incrementally.
//!
//! The relay chain is one `Chain`; parallel chains are more of them over
//! the same [`Store`], told apart by the chain id in every key.

use std::sync::Arc;
use std::time::Instant;

use bevy_ecs::prelude::*;
use int_schemas::wire::TxStatus;
use int_schemas::{
    AccountId, Escrow, Hash32, HeaderFields, PayloadSpec, ReceiptFields, build_block, build_header,
    build_receipts, decode_block,
};

use crate::crypto::bls::{self, PublicKey, SecretKey, Signature, header_message, tx_message};
use crate::ingress::{ProofVerifier, VerifiedTx};
use crate::state::smt::{self, SmtError};
use crate::storage::{
    AccountRecord, BlockWrite, Head, ObjectTable, ObjectWrite, StorageError, Store, object_leaf,
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
}

/// Parameters of a chain's pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ChainConfig {
    /// The chain's id, part of every storage key and signed message.
    pub chain_id: u32,
    /// Accounts kept in the world between blocks.
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
    /// The LMDB write transaction.
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

/// The pipeline of one chain.
pub struct Chain {
    store: Arc<Store>,
    cfg: ChainConfig,
    world: World,
    schedule: Schedule,
    head: Option<Head>,
    proofs: Option<Arc<dyn ProofVerifier + Send>>,
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
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        let next = level
            .chunks(2)
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

impl Chain {
    /// Opens the pipeline of `cfg.chain_id` over `store`, with the systems
    /// of `plugins`.
    pub fn open(
        store: Arc<Store>,
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
            index: Default::default(),
            capacity: cfg.hot_capacity,
        });
        world.insert_resource(BlockTxs::default());
        world.insert_resource(Outcomes::default());
        world.insert_resource(DeferredPayloads::default());
        world.insert_resource(PayloadVerdicts::default());
        world.insert_resource(ObjectWrites::default());
        world.insert_resource(Credits::default());
        world.insert_resource(BlockSupply::default());
        world.insert_resource(ExecFault::default());
        world.insert_resource(StoreHandle(store.clone()));
        let mut schedule = block_schedule(cfg.parallel);
        for p in plugins {
            p.build(&mut world, &mut schedule);
        }
        let head = store.head(cfg.chain_id)?;
        Ok(Self {
            store,
            cfg,
            world,
            schedule,
            head,
            proofs: None,
        })
    }

    /// Sets the verifier of anonymous-intent proofs that
    /// [`Chain::verify_block`] uses (without one, a block carrying intents
    /// does not verify).
    pub fn set_proof_verifier(&mut self, proofs: Arc<dyn ProofVerifier + Send>) {
        self.proofs = Some(proofs);
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
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The ECS world (for inspection and tests).
    pub fn world(&self) -> &World {
        &self.world
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

    /// Writes block 0 with the given accounts and plugin objects (a
    /// plugin's genesis parameters, such as the BPK verifying key).
    pub fn genesis_with_objects(
        &mut self,
        alloc: &[(AccountId, AccountRecord)],
        objects: &[ObjectWrite],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<Head, ChainError> {
        if self.head.is_some() {
            return Err(ChainError::GenesisExists(self.cfg.chain_id));
        }
        let (mut int, mut gas) = (0u128, 0u128);
        for (_, r) in alloc {
            int = int.checked_add(r.int).ok_or(ChainError::SupplyOverflow)?;
            gas = gas.checked_add(r.gas).ok_or(ChainError::SupplyOverflow)?;
        }
        let mut accounts = alloc.to_vec();
        accounts.sort_by_key(|a| a.0);
        if let Some(w) = accounts.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ChainError::DuplicateGenesisAccount(hex_id(&w[0].0)));
        }
        if objects.iter().any(|o| o.key == SUPPLY_KEY) {
            return Err(ChainError::Exec(
                "genesis objects may not set the supply: the chain computes it".into(),
            ));
        }
        let mut objects = objects.to_vec();
        objects.push(ObjectWrite {
            table: ObjectTable::State,
            key: SUPPLY_KEY.to_vec(),
            value: Some(Supply::genesis(int, gas).encode().to_vec()),
        });
        let objects = &objects[..];
        let empty = Head::default();
        let (head, _) = self.seal_and_commit(
            &empty,
            0,
            &accounts,
            accounts.len() as u64,
            &[],
            &[],
            objects,
            time_ms,
            proposer,
        )?;
        self.head = Some(head);
        Ok(head)
    }

    /// Executes `txs` (already verified at ingress) as the next block,
    /// seals it with `proposer`'s key and commits it.
    pub fn execute_block(
        &mut self,
        txs: &[VerifiedTx],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<BlockResult, ChainError> {
        let parent = self.head.ok_or(ChainError::NoGenesis(self.cfg.chain_id))?;
        let height = parent.height + 1;
        let proposer_id = proposer.public_key().account_id();
        let mut timings = Timings::default();

        // 3. Load the accounts the block touches.
        let t = Instant::now();
        let mut touched = self.load(txs, proposer_id, height)?;
        timings.load_us = us(t);

        // 4. Execute the schedule.
        let t = Instant::now();
        self.schedule.run(&mut self.world);
        let mut objects = std::mem::take(&mut self.world.resource_mut::<ObjectWrites>().0);
        let mut credits = std::mem::take(&mut self.world.resource_mut::<Credits>().0);
        // The ledger's fee total is in it (`fees`), the plugins' escrow,
        // burns and mints.
        let delta = std::mem::take(&mut self.world.resource_mut::<BlockSupply>().0);
        if let Some(fault) = self.world.resource_mut::<ExecFault>().0.take() {
            // The world holds half a block: forget it, commit nothing.
            self.drop_hot_set();
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
        if let Err(e) = self.settle(&mut touched, &credits, locked, &delta, height, &mut objects) {
            self.drop_hot_set();
            return Err(e);
        }
        timings.execute_us = us(t);
        let statuses: Vec<TxStatus> = outcomes
            .iter()
            .map(|o| o.get().map_or(TxStatus::UnsupportedPayload, |o| o.status))
            .collect();
        // A transaction whose sender has no key when it executes changed
        // nothing, and no one else could check its signature against the
        // chain's state: it stays out of the block (its status still goes
        // back to the caller).
        let included: Vec<(&VerifiedTx, Outcome)> = txs
            .iter()
            .zip(&outcomes)
            .map(|(tx, o)| {
                let o = o.get().copied().unwrap_or(Outcome {
                    status: TxStatus::UnsupportedPayload,
                    fee_charged: 0,
                });
                (tx, o)
            })
            .filter(|(_, o)| o.status != TxStatus::UnknownSender)
            .collect();
        let receipts: Vec<ReceiptFields> = included
            .iter()
            .enumerate()
            .map(|(i, (tx, o))| ReceiptFields {
                tx_hash: tx.hash,
                height,
                index: i as u32,
                status: o.status,
                fee_charged: o.fee_charged,
            })
            .collect();
        let block_txs: Vec<&VerifiedTx> = included.iter().map(|(tx, _)| *tx).collect();

        // 5. Collect dirty state and commit.
        let (dirty, new_accounts) = self.take_dirty(&touched, height);
        let committed = self.seal_and_commit(
            &parent,
            height,
            &dirty,
            new_accounts,
            &block_txs,
            &receipts,
            &objects,
            time_ms,
            proposer,
        );
        let (head, mut t2) = match committed {
            Ok(c) => c,
            Err(e) => {
                // The world holds this block's effects (already marked
                // clean) but storage does not: forget the hot set so the
                // next block reloads the committed state.
                self.drop_hot_set();
                return Err(e);
            }
        };
        t2.load_us = timings.load_us;
        t2.execute_us = timings.execute_us;
        self.head = Some(head);
        self.evict();
        Ok(BlockResult {
            head,
            statuses,
            timings: t2,
        })
    }

    /// Brings the accounts of `ids` that are not in the world into it,
    /// from storage (an account never stored starts empty), and indexes
    /// them in the [`HotSet`].
    fn load_accounts(&mut self, ids: &[AccountId], height: u64) -> Result<(), ChainError> {
        let missing: Vec<AccountId> = {
            let hot = self.world.resource::<HotSet>();
            ids.iter()
                .filter(|id| !hot.index.contains_key(*id))
                .copied()
                .collect()
        };
        let records = self.store.accounts(self.cfg.chain_id, &missing)?;
        let bundles = missing.iter().zip(&records).map(|(id, rec)| {
            let (b, n, d) = rec.unwrap_or_default().components();
            (
                AccountKey(*id),
                b,
                n,
                d,
                HotMeta {
                    dirty: false,
                    stored: rec.is_some(),
                    last_touched: height,
                },
                Outbox::default(),
                Inbox::default(),
            )
        });
        let spawned: Vec<Entity> = self.world.spawn_batch(bundles).collect();
        let mut hot = self.world.resource_mut::<HotSet>();
        for (id, e) in missing.iter().zip(spawned) {
            hot.index.insert(*id, e);
        }
        Ok(())
    }

    /// Brings every account the block touches into the world and fills the
    /// block's resources; returns the touched entities.
    fn load(
        &mut self,
        txs: &[VerifiedTx],
        proposer: AccountId,
        height: u64,
    ) -> Result<Vec<Entity>, ChainError> {
        let mut ids: Vec<AccountId> = Vec::with_capacity(txs.len() * 2 + 1);
        ids.push(proposer);
        for tx in txs {
            ids.push(tx.sender);
            if let PayloadSpec::Transfer { to, .. } = &tx.payload {
                ids.push(*to);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        self.load_accounts(&ids, height)?;
        // Every id of the block is in the index now (spawned just above).
        let mut deferred = Vec::new();
        let (touched, calls, proposer_entity) = {
            let hot = self.world.resource::<HotSet>();
            let entity = |id: &AccountId| hot.index[id];
            let touched: Vec<Entity> = ids.iter().map(entity).collect();
            let calls: Vec<TxCall> = txs
                .iter()
                .enumerate()
                .map(|(i, tx)| TxCall {
                    sender: entity(&tx.sender),
                    nonce: tx.nonce,
                    fee: tx.fee,
                    call: match &tx.payload {
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
                                sender: tx.sender,
                                nonce: tx.nonce,
                                payload: other.clone(),
                                escrow,
                            });
                            Call::Deferred { escrow }
                        }
                    },
                })
                .collect();
            (touched, calls, entity(&proposer))
        };
        for &e in &touched {
            if let Some(mut m) = self.world.get_mut::<HotMeta>(e) {
                m.last_touched = height;
            }
        }
        for (i, c) in calls.iter().enumerate() {
            if let Some(mut o) = self.world.get_mut::<Outbox>(c.sender) {
                o.0.push(i as u32);
            }
            if let Call::Transfer { to, .. } = c.call
                && let Some(mut inbox) = self.world.get_mut::<Inbox>(to)
            {
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
        // execute_block takes both after every schedule run.
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
        let mut dirty = Vec::new();
        let mut new_accounts = 0u64;
        for &e in touched {
            let Ok(mut ent) = self.world.get_entity_mut(e) else {
                continue;
            };
            if let Some(mut o) = ent.get_mut::<Outbox>() {
                o.0.clear();
            }
            if let Some(mut i) = ent.get_mut::<Inbox>() {
                i.0.clear();
            }
            let Some(meta) = ent.get::<HotMeta>().copied() else {
                continue;
            };
            if !meta.dirty {
                continue;
            }
            let (Some(k), Some(b), Some(n), Some(d)) = (
                ent.get::<AccountKey>(),
                ent.get::<Balances>(),
                ent.get::<Nonce>(),
                ent.get::<DeviceProfile>(),
            ) else {
                continue;
            };
            dirty.push((k.0, AccountRecord::from_components(b, n, d)));
            if !meta.stored {
                new_accounts += 1;
            }
            if let Some(mut m) = ent.get_mut::<HotMeta>() {
                *m = HotMeta {
                    dirty: false,
                    stored: true,
                    last_touched: height,
                };
            }
        }
        dirty.sort_unstable_by_key(|a| a.0);
        (dirty, new_accounts)
    }

    #[allow(clippy::too_many_arguments)]
    fn seal_and_commit(
        &mut self,
        parent: &Head,
        height: u64,
        dirty: &[(AccountId, AccountRecord)],
        new_accounts: u64,
        txs: &[&VerifiedTx],
        receipts: &[ReceiptFields],
        objects: &[ObjectWrite],
        time_ms: u64,
        proposer: &SecretKey,
    ) -> Result<(Head, Timings), ChainError> {
        let chain_id = self.cfg.chain_id;
        let mut timings = Timings::default();

        let t = Instant::now();
        let updates: Vec<(Hash32, Option<Hash32>)> = dirty
            .iter()
            .map(|(id, r)| (*id, Some(r.hash())))
            .chain(
                objects
                    .iter()
                    .filter(|o| o.table == ObjectTable::State)
                    .map(|o| {
                        (
                            object_leaf(&o.key),
                            o.value.as_ref().map(|v| *blake3::hash(v).as_bytes()),
                        )
                    }),
            )
            .collect();
        let reader = self.store.node_reader(chain_id)?;
        let (state_root, nodes) = smt::update(&reader, &parent.state_root, &updates)?;
        drop(reader);
        timings.root_us = us(t);

        let t = Instant::now();
        let tx_hashes: Vec<Hash32> = txs.iter().map(|t| t.hash).collect();
        let receipt_hashes: Vec<Hash32> = receipts.iter().map(receipt_hash).collect();
        let header = build_header(&HeaderFields {
            chain_id,
            height,
            parent_hash: parent.hash,
            state_root,
            tx_root: merkle_root(&tx_hashes),
            receipts_root: merkle_root(&receipt_hashes),
            time_ms,
            proposer: proposer.public_key().account_id(),
            tx_count: txs.len() as u32,
        });
        let sigs: Vec<Signature> = txs.iter().map(|t| t.signature).collect();
        // Verified at ingress (subgroup-checked there): no second check.
        let agg = bls::aggregate_verified(&sigs)
            .map_err(|e| ChainError::InvalidBlock(format!("aggregate: {e}")))?;
        let proposer_sig = proposer.sign(&header_message(chain_id, &header));
        let block = build_block(
            &header,
            txs.iter().map(|t| t.body()),
            &agg.to_bytes(),
            &proposer_sig.to_bytes(),
        );
        let receipts_bytes = build_receipts(height, receipts);
        let head = Head {
            height,
            hash: *blake3::hash(&header).as_bytes(),
            state_root,
            accounts: parent.accounts + new_accounts,
        };
        timings.seal_us = us(t);

        let t = Instant::now();
        self.store.commit_block(&BlockWrite {
            chain_id,
            accounts: dirty,
            nodes: &nodes,
            height,
            block: &block,
            receipts: &receipts_bytes,
            tx_hashes: &tx_hashes,
            head,
            objects,
        })?;
        timings.commit_us = us(t);
        Ok((head, timings))
    }

    /// The supply totals at the head. A chain created before supply
    /// accounting has no supply object; it held no escrow then, so the
    /// totals are the sums over its accounts (read once, then stored with
    /// the next block).
    pub fn supply(&self) -> Result<Supply, ChainError> {
        Ok(self.stored_supply()?.0)
    }

    /// The supply and whether it is stored.
    fn stored_supply(&self) -> Result<(Supply, bool), ChainError> {
        let chain_id = self.cfg.chain_id;
        if let Some(b) = self
            .store
            .object(chain_id, ObjectTable::State, SUPPLY_KEY)?
        {
            return Ok((Supply::decode(&b)?, true));
        }
        match account_totals(&self.store, chain_id)? {
            Some(t) => Ok((Supply::genesis(t.int, t.gas), false)),
            None => Err(ChainError::SupplyOverflow),
        }
    }

    /// Checks that the block's plugins conserved value, applies their
    /// credits (loading the accounts that are not in the world) and writes
    /// the new supply totals.
    ///
    /// Conservation, per token: what the Debit stage locked for deferred
    /// payloads, plus what left escrow, plus what was minted, equals what
    /// was credited, plus what entered escrow, plus what was burned.
    fn settle(
        &mut self,
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
        let (before, stored) = self.stored_supply()?;
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
        self.load_accounts(&ids, height)?;
        for (id, amount) in per_account {
            let e = self.world.resource::<HotSet>().index[&id];
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

    /// Drops every account from the world (they are reloaded from storage
    /// when next touched).
    fn drop_hot_set(&mut self) {
        let entities: Vec<Entity> = self
            .world
            .resource_mut::<HotSet>()
            .index
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in entities {
            self.world.despawn(e);
        }
    }

    /// Drops the least recently touched accounts from the world when it
    /// holds more than its capacity (they are all committed).
    fn evict(&mut self) {
        let (len, cap) = {
            let hot = self.world.resource::<HotSet>();
            (hot.index.len(), hot.capacity)
        };
        if len <= cap {
            return;
        }
        let keep = cap - cap / 10;
        let mut q = self.world.query::<(Entity, &AccountKey, &HotMeta)>();
        let mut all: Vec<(u64, AccountId, Entity)> = q
            .iter(&self.world)
            .map(|(e, k, m)| {
                debug_assert!(!m.dirty, "evicting an uncommitted account");
                (m.last_touched, k.0, e)
            })
            .collect();
        let drop_n = all.len().saturating_sub(keep);
        if drop_n == 0 {
            return;
        }
        all.select_nth_unstable_by_key(drop_n - 1, |x| (x.0, x.1));
        for (_, id, e) in all.into_iter().take(drop_n) {
            self.world.despawn(e);
            self.world.resource_mut::<HotSet>().index.remove(&id);
        }
    }

    /// Re-verifies a stored or received block of this chain: its structure,
    /// the aggregate signature of its transactions (`aggregate_verify` over
    /// each sender's key and message) and the proposer's signature.
    pub fn verify_block(&self, bytes: &[u8]) -> Result<(), ChainError> {
        let invalid = |s: String| ChainError::InvalidBlock(s);
        let b = decode_block(bytes).map_err(|e| invalid(e.to_string()))?;
        let chain_id = b.header.chain_id();
        if chain_id != self.cfg.chain_id {
            return Err(invalid(format!("chain id {chain_id}")));
        }
        let key_of = |id: &AccountId| -> Result<PublicKey, ChainError> {
            let rec = self
                .store
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

fn hex_id(id: &AccountId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
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
