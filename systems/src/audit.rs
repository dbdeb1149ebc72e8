//! The supply audit (whitepaper 6, DESIGN "value is conserved"): every
//! account's balances plus every plugin's escrow must equal the chain's
//! stored totals, to the unit.
//!
//! It reads the whole state (one pass over the accounts, one over each
//! plugin's escrow objects), so it is a tool for `int state`, the devnet's
//! summary and tests, not something a block runs; blocks keep the totals
//! exact by the chain's per-block conservation check.

use int_engine::storage::{ObjectTable, StateView, StorageError};
use int_engine::supply::{Audit, SUPPLY_KEY, Supply, account_totals, escrow_add};

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
}

/// The stored totals and what the state holds against them; `None` for a
/// chain that has no supply record yet (one created before supply
/// accounting, which writes it with its next block): there is nothing to
/// audit against.
pub fn audit(store: &dyn StateView, chain_id: u32) -> Result<Option<(Supply, Audit)>, AuditError> {
    let supply = match store.object(chain_id, ObjectTable::State, SUPPLY_KEY)? {
        Some(b) => Supply::decode(&b)?,
        None => return Ok(None),
    };
    let accounts = account_totals(store, chain_id)?.ok_or(AuditError::Overflow(chain_id))?;
    let m = market::escrow_held(store, chain_id)?;
    let t = token::escrow_held(store, chain_id)?;
    let escrow = escrow_add(m, t).ok_or(AuditError::Overflow(chain_id))?;
    Ok(Some((supply, supply.audit(accounts, escrow))))
}
