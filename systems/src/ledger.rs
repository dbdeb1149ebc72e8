//! The ledger: device registration, transfers, nonces and fees.
//!
//! Semantics of a block (the parallel run and the sequential run both
//! follow them, and a test holds them to a plain reference model):
//!
//! 1. **Debit stage**, per sender, its transactions in block order, senders
//!    in parallel. A transaction from an account with no key (other than a
//!    registration) fails with `UnknownSender`; a nonce other than the
//!    account's next fails with `BadNonce`; a fee above the GAS balance
//!    fails with `InsufficientFee`. These three change nothing. Otherwise
//!    the nonce advances and the fee is taken, whatever the payload then
//!    does: a registration sets the key (`AlreadyRegistered`,
//!    `SenderKeyMismatch`), a transfer debits INT (`InsufficientBalance`,
//!    `GasNotTransferable`), and any other payload is left to the plugin
//!    that owns it ([`Call::Deferred`], decided in the Apply stage; the fee
//!    is taken whatever it decides) once what it locks (its escrow: a
//!    purchase's price, a deposit, INT to burn) is taken from the sender,
//!    or fails with `InsufficientBalance` when it cannot be. Debits see only the balance the account had
//!    before the block, minus its own earlier debits: credits of the same
//!    block are not spendable until the next one.
//! 2. **Credit stage**, per receiver, receivers in parallel: the amounts of
//!    successful transfers are summed into the receiver. Addition commutes,
//!    so the order does not matter. Then the block's fees go to the
//!    proposer.
//!
//! Value is conserved: every debit has its credit, and the total supply is
//! fixed at genesis under `u128::MAX`, so a credit cannot overflow.

use bevy_ecs::prelude::*;
use int_engine::crypto::bls::account_id;
use int_engine::world::{
    AccountKey, Balances, BlockContext, BlockSupply, BlockTxs, Call, DeviceProfile, ExecConfig,
    HotMeta, Inbox, Nonce, Outbox, Outcome, Outcomes, Plugin, Stage, TxCall,
};
use int_schemas::wire::{Token, TxStatus};

/// Registration, transfers, nonces and fees.
pub struct LedgerPlugin;

impl Plugin for LedgerPlugin {
    fn build(&self, _world: &mut World, schedule: &mut Schedule) {
        schedule.add_systems(debit.in_set(Stage::Debit));
        schedule.add_systems((credit, pay_fees).chain().in_set(Stage::Credit));
    }
}

type DebitItem<'a> = (
    &'a AccountKey,
    &'a Outbox,
    &'a mut Balances,
    &'a mut Nonce,
    &'a mut DeviceProfile,
    &'a mut HotMeta,
);

/// One row of the debit query, as the closure receives it.
type DebitRow<'a> = (
    &'a AccountKey,
    &'a Outbox,
    Mut<'a, Balances>,
    Mut<'a, Nonce>,
    Mut<'a, DeviceProfile>,
    Mut<'a, HotMeta>,
);

/// Decides one transaction of a sender against the sender's state.
fn debit_one(
    tx: &TxCall,
    key: &AccountKey,
    bal: &mut Balances,
    nonce: &mut Nonce,
    dev: &mut DeviceProfile,
) -> Outcome {
    let fail = |status| Outcome {
        status,
        fee_charged: 0,
    };
    let registering = matches!(tx.call, Call::Register { .. });
    if dev.public_key.is_none() && !registering {
        return fail(TxStatus::UnknownSender);
    }
    if tx.nonce != nonce.0 {
        return fail(TxStatus::BadNonce);
    }
    if bal.gas < tx.fee {
        return fail(TxStatus::InsufficientFee);
    }
    let Some(next) = nonce.0.checked_add(1) else {
        return fail(TxStatus::Overflow);
    };
    nonce.0 = next;
    bal.gas -= tx.fee;
    let status = match tx.call {
        Call::Register {
            public_key,
            kind,
            metadata_hash,
        } => {
            if dev.public_key.is_some() {
                TxStatus::AlreadyRegistered
            } else if account_id(&public_key) != key.0 {
                TxStatus::SenderKeyMismatch
            } else {
                *dev = DeviceProfile {
                    public_key: Some(public_key),
                    kind: kind.0,
                    metadata_hash,
                };
                TxStatus::Ok
            }
        }
        Call::Transfer { amount, token, .. } => {
            if token != Token::Int {
                TxStatus::GasNotTransferable
            } else if bal.int < amount {
                TxStatus::InsufficientBalance
            } else {
                bal.int -= amount;
                TxStatus::Ok
            }
        }
        // The envelope is accepted once what the payload locks is taken;
        // the owning plugin decides the payload and disposes of the lock.
        Call::Deferred { escrow } => {
            if bal.int < escrow.int || bal.gas < escrow.gas {
                TxStatus::InsufficientBalance
            } else {
                bal.int -= escrow.int;
                bal.gas -= escrow.gas;
                TxStatus::Ok
            }
        }
    };
    Outcome {
        status,
        fee_charged: tx.fee,
    }
}

/// Debit stage: each sender's transactions in block order, senders in
/// parallel.
fn debit(
    cfg: Res<ExecConfig>,
    txs: Res<BlockTxs>,
    outcomes: Res<Outcomes>,
    mut q: Query<DebitItem<'static>>,
) {
    let run = |(key, outbox, mut bal, mut nonce, mut dev, mut meta): DebitRow<'_>| {
        if outbox.0.is_empty() {
            return;
        }
        // Every change a debit makes comes with a nonce advance (a fee of
        // zero still moves the nonce and may debit INT or set the key), so
        // the account is dirty exactly when its nonce moved.
        let first_nonce = nonce.0;
        for &i in &outbox.0 {
            let tx = &txs.0[i as usize];
            let o = debit_one(tx, key, &mut bal, &mut nonce, &mut dev);
            outcomes.set(i, o);
        }
        if nonce.0 != first_nonce {
            meta.dirty = true;
        }
    };
    if cfg.parallel {
        q.par_iter_mut().for_each(run);
    } else {
        q.iter_mut().for_each(run);
    }
}

/// Credit stage: each receiver sums the successful transfers to it,
/// receivers in parallel.
fn credit(
    cfg: Res<ExecConfig>,
    txs: Res<BlockTxs>,
    outcomes: Res<Outcomes>,
    mut q: Query<(&Inbox, &mut Balances, &mut HotMeta)>,
) {
    let run = |(inbox, mut bal, mut meta): (&Inbox, Mut<Balances>, Mut<HotMeta>)| {
        if inbox.0.is_empty() {
            return;
        }
        let mut sum: u128 = 0;
        for &i in &inbox.0 {
            let ok = outcomes.get(i).is_some_and(|o| o.status == TxStatus::Ok);
            if let (true, Call::Transfer { amount, .. }) = (ok, txs.0[i as usize].call) {
                sum = sum
                    .checked_add(amount)
                    .expect("credits are bounded by the total supply, which fits u128");
            }
        }
        if sum > 0 {
            bal.int = bal
                .int
                .checked_add(sum)
                .expect("balances are bounded by the total supply, which fits u128");
            meta.dirty = true;
        }
    };
    if cfg.parallel {
        q.par_iter_mut().for_each(run);
    } else {
        q.iter_mut().for_each(run);
    }
}

/// Pays the block's fees to its proposer.
fn pay_fees(
    ctx: Res<BlockContext>,
    outcomes: Res<Outcomes>,
    mut supply: ResMut<BlockSupply>,
    mut q: Query<(&mut Balances, &mut HotMeta)>,
) {
    let total: u128 = outcomes
        .0
        .iter()
        .filter_map(|o| o.get())
        .map(|o| o.fee_charged)
        .fold(0u128, |a, f| {
            a.checked_add(f)
                .expect("fees are bounded by the total supply, which fits u128")
        });
    supply.0.fees = total;
    if total == 0 {
        return;
    }
    let Ok((mut bal, mut meta)) = q.get_mut(ctx.proposer) else {
        unreachable!("the proposer is loaded with every block");
    };
    bal.gas = bal
        .gas
        .checked_add(total)
        .expect("balances are bounded by the total supply, which fits u128");
    meta.dirty = true;
}
