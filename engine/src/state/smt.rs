//! Sparse Merkle tree.
