//! The state commitment: a sparse Merkle tree over account ids.

pub mod smt;
