//! `int-zk`: the zero-knowledge leaf crate of the INT node.
//!
//! Per the design (`zk/` → `int-zk`), this crate owns everything the BPK
//! (Behavior Private Key) private-intent proofs need: Poseidon, the identity
//! tree, the BPK circuit, its setup, prover and verifier, the batch verifier
//! and the behaviour-cluster trainer. `engine` and `systems` use it through
//! small interfaces; it depends on no other INT crate.
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
//! * [`circuit`]: the BPK circuit (membership, nullifier, nearest behaviour
//!   cluster, scope binding) and the native functions it mirrors.
//! * [`groth`]: Groth16 over BN254 for that circuit: setup, prover, verifier.
//! * [`clusters`]: the behaviour-cluster trainer: k-means (linfa) on behaviour
//!   vectors, quantisation to the circuit's 16-bit fixed point, the centroid
//!   commitment and its JSON file, CSV input and a synthetic data set.

pub mod batch;
pub mod circuit;
pub mod clusters;
pub mod export;
pub mod fixture;
pub mod groth;
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
    /// A [`tree::PairHasher`] gave back a different number of hashes than
    /// it was given pairs (a broken backend; nothing was written).
    #[error("pair hasher returned {got} hashes for {expected} pairs")]
    HasherOutput {
        /// Number of pairs given.
        expected: usize,
        /// Number of hashes returned.
        got: usize,
    },
    /// The root history must keep at least one root.
    #[error("root history size must be at least 1")]
    EmptyRootHistory,
    /// D or K outside `1..=12` (one Poseidon hashes a vector, and one the
    /// K centroid hashes).
    #[error("BPK parameters need 1 <= D, K <= 12, got D = {dim}, K = {clusters}")]
    InvalidParams {
        /// D, the dimension.
        dim: usize,
        /// K, the number of clusters.
        clusters: usize,
    },
    /// A vector or list of the wrong length.
    #[error("expected length {expected}, got {got}")]
    DimensionMismatch {
        /// The length the parameters require.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A fixed-point coordinate that is not below 2^16.
    #[error("coordinate out of range (must be below 2^16)")]
    CoordinateOutOfRange,
    /// The witness does not satisfy the circuit for the given public inputs.
    #[error("witness does not satisfy the BPK circuit")]
    Unsatisfied,
    /// A proving or verifying key made for other parameters (D, K).
    #[error("key does not match the circuit: {0}")]
    KeyMismatch(&'static str),
    /// A batch item whose number of public inputs is not the key's.
    #[error("batch item {index}: expected {expected} public inputs, got {got}")]
    BatchInputCount {
        /// Position of the item in the batch.
        index: usize,
        /// The key's number of public inputs.
        expected: usize,
        /// The item's number of public inputs.
        got: usize,
    },
    /// A key, proof, public-signal list or number read from outside that
    /// does not parse or validate (files are hostile input).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A persistent [`tree::TreeStore`] failed to read.
    #[error("tree store: {0}")]
    Store(String),
    /// Constraint synthesis or Groth16 failed.
    #[error("synthesis: {0}")]
    Synthesis(#[from] ark_relations::gr1cs::SynthesisError),
    /// A real number that is NaN or infinite where a finite one is needed
    /// (behaviour vectors, training data, quantiser ranges).
    #[error("{what} is not a finite number")]
    NotFinite {
        /// Which value, e.g. `row 3, column 1 (NaN)`.
        what: String,
    },
    /// Training data or a training parameter that k-means cannot work with.
    #[error("training data: {0}")]
    TrainingData(String),
    /// A line of a CSV file that does not parse.
    #[error("CSV line {line}: {reason}")]
    Csv {
        /// The line, counted from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A centroids file whose stated commitment is not that of its centroids.
    #[error("commitment {stated} does not match the centroids, which commit to {computed}")]
    CommitmentMismatch {
        /// The commitment the file states (hex).
        stated: String,
        /// The commitment of its centroids (hex).
        computed: String,
    },
    /// k-means itself failed.
    #[error("k-means: {0}")]
    KMeans(String),
}
