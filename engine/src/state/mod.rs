//! The state commitment: a sparse Merkle tree over account ids
//! ([`smt`]: building, updating and proving, over a node store), and the
//! storage-free check of its proofs ([`proof`]: what a client runs).

pub mod proof;
pub mod smt;
