//! The supply audit (whitepaper 6, DESIGN "value is conserved"): every
//! account's balances plus every plugin's escrow must equal the chain's
//! stored totals, to the unit.
//!
//! It reads the whole state (one pass over the accounts, one over each
//! plugin's escrow objects), so it is a tool for `int state`, the devnet's
//! summary and tests, not something a block runs; blocks keep the totals
//! exact by the chain's per-block conservation check.

use int_engine::storage::{ObjectTable, StorageError, Store};
use int_engine::supply::{Audit, SUPPLY_KEY, Supply};
use int_schemas::Escrow;

use crate::{market, token};

/// Errors of the audit: storage, or a record that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The market's objects could not be read.
    #[error(transparent)]
    Market(#[from] market::MarketError),
    /// The token plugin's objects could not be read.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// A sum does not fit u128: the state is corrupt.
    #[error("the balances of chain {0} sum above u128")]
    Overflow(u32),
    /// The chain has no supply object (created before supply accounting
    /// and not advanced since).
    #[error("chain {0} has no supply record yet")]
    NoSupply(u32),
}

/// The stored totals and what the state holds against them.
pub fn audit(store: &Store, chain_id: u32) -> Result<(Supply, Audit), AuditError> {
    let supply = match store.object(chain_id, ObjectTable::State, SUPPLY_KEY)? {
        Some(b) => Supply::decode(&b)?,
        None => return Err(AuditError::NoSupply(chain_id)),
    };
    let (mut int, mut gas) = (Some(0u128), Some(0u128));
    store.for_each_account(chain_id, |_, r| {
        int = int.and_then(|x| x.checked_add(r.int));
        gas = gas.and_then(|x| x.checked_add(r.gas));
    })?;
    let accounts = match (int, gas) {
        (Some(int), Some(gas)) => Escrow { int, gas },
        _ => return Err(AuditError::Overflow(chain_id)),
    };
    let m = market::escrow_held(store, chain_id)?;
    let t = token::escrow_held(store, chain_id)?;
    let escrow = int_engine::supply::escrow_add(m, t).ok_or(AuditError::Overflow(chain_id))?;
    Ok((supply, supply.audit(accounts, escrow)))
}
