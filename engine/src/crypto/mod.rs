//! The crypto verification front: BLS (min_sig) keys, signing, proofs of
//! possession, batched verification with bisection, aggregation.

pub mod bls;
