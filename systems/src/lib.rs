//! The systems that change INT's state, grouped as plugins in the manner of
//! bevy: each plugin adds its systems to the engine's block schedule, in the
//! engine's stages.
//!
//! - [`ledger::LedgerPlugin`]: device registration, transfers, nonces and
//!   fees (charged in GAS, paid to the block's proposer).
//! - [`bpk::BpkPlugin`]: BPK intents — identity registrations, epoch
//!   centroids, anonymous intents checked against roots, epochs, centroid
//!   commitments and the nullifier set; [`bpk::Groth16Intents`] verifies
//!   their proofs in batches at ingress.
//! - [`market::MarketPlugin`]: the resource market — SKUs and discovery,
//!   the four price models (price tag, metering channels, competitive
//!   bidding, CPP), settled in GAS per SKU in parallel.
//! - [`token::TokenPlugin`]: INT and GAS — oracle reports and their median
//!   price, `BurnForGas`, the epoch's GAS auction.
//! - [`audit::audit`]: every account plus every escrow against the stored
//!   supply totals, to the unit.

pub mod auction;
pub mod audit;
pub mod bpk;
pub mod ledger;
pub mod market;
pub mod token;

pub use bpk::BpkPlugin;
pub use ledger::LedgerPlugin;
pub use market::MarketPlugin;
pub use token::TokenPlugin;
