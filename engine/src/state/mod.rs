//! The state commitment: the twig log's ([`twig`]: tree, block planner;
//! [`twig_memory`]: the in-memory reference log; [`twig_proof`]: the
//! storage-free proof check a client runs), which the store commits every
//! block with; and the sparse Merkle tree it replaced ([`smt`], with its
//! proof check [`proof`]), kept for its benchmark and its analysis.

pub mod proof;
pub mod smt;
pub mod twig;
pub mod twig_memory;
pub mod twig_proof;
