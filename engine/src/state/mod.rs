//! The state commitment: a sparse Merkle tree over account ids
//! ([`smt`]: building, updating and proving, over a node store), and the
//! storage-free check of its proofs ([`proof`]: what a client runs); and
//! the twig log's commitment that issue 16's spike chose to replace it
//! ([`twig`], checked by [`twig_proof`]), not yet used by the store.

pub mod proof;
pub mod smt;
pub mod twig;
pub mod twig_memory;
pub mod twig_proof;
