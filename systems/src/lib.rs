//! The systems that change INT's state, grouped as plugins in the manner of
//! bevy: each plugin adds its systems to the engine's block schedule, in the
//! engine's stages.
//!
//! - [`ledger::LedgerPlugin`]: device registration, transfers, nonces and
//!   fees (charged in GAS, paid to the block's proposer).

pub mod ledger;

pub use ledger::LedgerPlugin;
