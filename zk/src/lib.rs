//! `int-zk`: the zero-knowledge leaf crate of the INT node.
//!
//! Per the design (`zk/` → `int-zk`), this crate owns everything the BPK
//! (Behavior Private Key) private-intent proofs need: Poseidon, the identity
//! tree, and — in later steps — the BPK circuit, trusted setup, prover,
//! verifier, batch verifier and the behaviour-cluster trainer. `engine` and
//! `systems` use it through small interfaces; it depends on no other INT crate.
//!
//! Proofs are Groth16 over BN254 (arkworks), so every value lives in
//! [`Fr`], the BN254 scalar field.
//!
//! * [`poseidon`]: Poseidon exactly as circomlib defines it (t = inputs + 1,
//!   8 full rounds, circomlib's partial-round table, α = 5), natively and as an
//!   R1CS gadget that agree bit for bit.
//! * [`tree`]: the incremental, append-only, depth-32 binary identity tree
//!   with Poseidon(left, right) nodes, a bounded history of recent roots, and
//!   the in-circuit membership-path check.

pub mod poseidon;
pub mod tree;

pub use ark_bn254::Fr;

/// Errors of the zk crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZkError {
    /// Poseidon was asked to hash a number of inputs it has no parameters for.
    #[error("poseidon takes {min}..={max} inputs, got {got}")]
    PoseidonInputCount {
        /// Number of inputs given.
        got: usize,
        /// Fewest inputs supported.
        min: usize,
        /// Most inputs supported.
        max: usize,
    },
    /// The identity tree holds `2^DEPTH` leaves already.
    #[error("identity tree is full ({capacity} leaves)")]
    TreeFull {
        /// Number of leaves the tree can hold.
        capacity: u64,
    },
    /// A path was asked for a leaf that has not been appended.
    #[error("leaf index {index} out of range (tree holds {len} leaves)")]
    LeafIndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Number of leaves in the tree.
        len: u64,
    },
    /// The root history must keep at least one root.
    #[error("root history size must be at least 1")]
    EmptyRootHistory,
}
