//! Storage-free verification of the state tree's inclusion and exclusion
//! proofs: what anyone holding a state root (a light client, a device, a
//! test) runs to check what a node says about one key, without trusting
//! the node and without a store.
//!
//! [`verify_proof`] is a function of the root, the key, the value hash the
//! caller expects (`None` to check that the key is absent) and the proof's
//! bytes as [`super::smt::Proof::to_bytes`] writes them (as `int state
//! account ID --proof` and the RPC's `int_getAccount` return them, in hex).
//! It reads the bytes in place: no allocation, no I/O, only `core` and
//! `blake3`, so the `#![no_std]`, no-alloc device SDK can later compile this
//! file as is (blake3 builds without std; thiserror 2 with
//! `default-features = false`). [`super::smt`] builds its trees and proofs
//! on the hashes defined here, and [`super::smt::Proof::verify`] is the same
//! check over a decoded proof.
//!
//! # The proof
//!
//! The tree is the compact sparse Merkle tree of [`super::smt`]: a key's
//! path follows its bits, most significant first; an empty subtree hashes
//! to [`EMPTY`], a subtree holding one leaf to that leaf's [`leaf_hash`],
//! any other to [`internal_hash`] of its children. A proof is the hashes of
//! the siblings on the key's path, root side first, and the [`Terminal`]:
//! what sits at the position where the path ends (nothing, the key's own
//! leaf, or another key's leaf alone in the subtree the key would be in).
//!
//! Encoding: sibling count `n` (u16 LE, at most 256), `n` × 32 bytes of
//! siblings, a tag (0: empty terminal, 1: leaf terminal) and, for a leaf,
//! its key and value hash (32 bytes each). Nothing may follow.
//!
//! A proof verifies when its terminal fits the claim (inclusion: the leaf
//! is the key's, with the expected value hash; exclusion: empty, or another
//! key's leaf on the same first `n` bits) and hashing the terminal up with
//! the siblings, left or right by the key's bits, gives the root.

use thiserror::Error;

/// A 32-byte hash or key.
pub type Hash32 = [u8; 32];

/// Hash of an empty subtree (and the root of the empty tree).
pub const EMPTY: Hash32 = [0; 32];

/// Depth of the tree in bits: a key has 256 bits, so a proof has at most
/// 256 siblings.
pub const KEY_BITS: usize = 256;

/// Domain tag of leaf hashes.
const LEAF_TAG: u8 = 0x00;
/// Domain tag of internal-node hashes.
const INTERNAL_TAG: u8 = 0x01;

/// Bytes before the siblings (the count).
const COUNT_BYTES: usize = 2;

/// Hash of a leaf: blake3(0x00 ‖ key ‖ value_hash).
pub fn leaf_hash(key: &Hash32, value_hash: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = LEAF_TAG;
    buf[1..33].copy_from_slice(key);
    buf[33..].copy_from_slice(value_hash);
    blake3::hash(&buf).into()
}

/// Hash of a subtree with ≥ 2 leaves: blake3(0x01 ‖ left ‖ right).
pub fn internal_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = INTERNAL_TAG;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    blake3::hash(&buf).into()
}

/// Bit `i` of `key`, MSB of byte 0 first (`i < 256`).
pub(crate) fn bit(key: &Hash32, i: usize) -> bool {
    (key[i / 8] >> (7 - i % 8)) & 1 == 1
}

/// The first `bits` bits of `key`, rest zeroed (`bits ≤ 256`).
pub(crate) fn truncate(key: &Hash32, bits: usize) -> Hash32 {
    let mut out = EMPTY;
    let full = bits / 8;
    out[..full].copy_from_slice(&key[..full]);
    if !bits.is_multiple_of(8) {
        out[full] = key[full] & (0xffu8 << (8 - bits % 8));
    }
    out
}

/// What sits at the end of a proof's path: the position where the key would
/// be is either empty or holds a single leaf (the key's own, or another key's,
/// which proves the key absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// No leaf at the key's position.
    Empty,
    /// The only leaf in the subtree at the key's position.
    Leaf {
        /// Its key (equal to the proved key for an inclusion proof).
        key: Hash32,
        /// Its value hash.
        value_hash: Hash32,
    },
}

impl Terminal {
    /// Hash of the subtree the terminal stands for.
    pub fn hash(&self) -> Hash32 {
        match self {
            Terminal::Empty => EMPTY,
            Terminal::Leaf { key, value_hash } => leaf_hash(key, value_hash),
        }
    }
}

/// Why a proof does not show what it was checked for.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ProofError {
    /// The bytes are not a proof's encoding.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The terminal does not fit the claim (another key's leaf for an
    /// inclusion, another value hash, the key's own leaf for an exclusion,
    /// a leaf off the key's path).
    #[error("the proof's terminal does not fit the claim: {0}")]
    Terminal(&'static str),
    /// Hashing up the path gives another root.
    #[error("the proof hashes to another root")]
    RootMismatch,
}

/// Checks proof bytes against `root`: with `Some(v)`, that `key` is in the
/// tree with value hash `v`; with `None`, that `key` is absent. `proof` is
/// [`super::smt::Proof::to_bytes`]'s encoding (see the module doc); any
/// other bytes are [`ProofError::Malformed`]. Never panics.
pub fn verify_proof(
    root: &Hash32,
    key: &Hash32,
    value_hash: Option<&Hash32>,
    proof: &[u8],
) -> Result<(), ProofError> {
    let (count, rest) = proof
        .split_first_chunk::<COUNT_BYTES>()
        .ok_or(ProofError::Malformed("truncated before the sibling count"))?;
    let n = usize::from(u16::from_le_bytes(*count));
    if n > KEY_BITS {
        return Err(ProofError::Malformed("more than 256 siblings"));
    }
    let sibling_bytes = n * 32;
    if rest.len() < sibling_bytes {
        return Err(ProofError::Malformed("truncated in the siblings"));
    }
    let (siblings, rest) = rest.split_at(sibling_bytes);
    let (siblings, none_left) = siblings.as_chunks::<32>();
    debug_assert!(none_left.is_empty());
    let terminal = match rest {
        [0] => Terminal::Empty,
        [1, leaf @ ..] => match leaf.split_first_chunk::<32>() {
            Some((k, v)) => match <&Hash32>::try_from(v) {
                Ok(v) => Terminal::Leaf {
                    key: *k,
                    value_hash: *v,
                },
                Err(_) => return Err(ProofError::Malformed("leaf terminal length")),
            },
            None => return Err(ProofError::Malformed("leaf terminal length")),
        },
        [] => return Err(ProofError::Malformed("truncated before the terminal")),
        [0, ..] => return Err(ProofError::Malformed("trailing bytes after the proof")),
        _ => return Err(ProofError::Malformed("terminal tag")),
    };
    verify_path(root, key, value_hash, siblings, &terminal)
}

/// [`verify_proof`] over a proof already decoded: `siblings` root side
/// first, and its terminal.
pub fn verify_path(
    root: &Hash32,
    key: &Hash32,
    value_hash: Option<&Hash32>,
    siblings: &[Hash32],
    terminal: &Terminal,
) -> Result<(), ProofError> {
    let n = siblings.len();
    if n > KEY_BITS {
        return Err(ProofError::Malformed("more than 256 siblings"));
    }
    match (terminal, value_hash) {
        (
            Terminal::Leaf {
                key: k,
                value_hash: v,
            },
            Some(want),
        ) => {
            if k != key {
                return Err(ProofError::Terminal("another key's leaf"));
            }
            if v != want {
                return Err(ProofError::Terminal("another value hash"));
            }
        }
        (Terminal::Leaf { key: k, .. }, None) => {
            if k == key {
                return Err(ProofError::Terminal("the key's own leaf"));
            }
            if truncate(k, n) != truncate(key, n) {
                return Err(ProofError::Terminal("a leaf off the key's path"));
            }
        }
        (Terminal::Empty, None) => {}
        (Terminal::Empty, Some(_)) => {
            return Err(ProofError::Terminal(
                "nothing where the key's leaf should be",
            ));
        }
    }
    let mut h = terminal.hash();
    for (i, sib) in siblings.iter().enumerate().rev() {
        h = if bit(key, i) {
            internal_hash(sib, &h)
        } else {
            internal_hash(&h, sib)
        };
    }
    if h == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built trees, so the verifier is checked apart from the code
    /// that makes proofs: one leaf, two leaves split at bit 0, and the
    /// encodings a decoder must refuse.
    #[test]
    fn hand_built_proofs() {
        let a: Hash32 = [0x00; 32]; // bit 0 is 0
        let b: Hash32 = [0x80; 32]; // bit 0 is 1
        let (va, vb) = ([1u8; 32], [2u8; 32]);
        let enc = |sibs: &[Hash32], term: &Terminal| {
            let mut out = (sibs.len() as u16).to_le_bytes().to_vec();
            for s in sibs {
                out.extend_from_slice(s);
            }
            match term {
                Terminal::Empty => out.push(0),
                Terminal::Leaf { key, value_hash } => {
                    out.push(1);
                    out.extend_from_slice(key);
                    out.extend_from_slice(value_hash);
                }
            }
            out
        };
        // The empty tree: every key absent.
        assert_eq!(
            verify_proof(&EMPTY, &a, None, &enc(&[], &Terminal::Empty)),
            Ok(())
        );
        // One leaf: the root is its leaf hash, no siblings.
        let la = Terminal::Leaf {
            key: a,
            value_hash: va,
        };
        let root1 = leaf_hash(&a, &va);
        assert_eq!(verify_proof(&root1, &a, Some(&va), &enc(&[], &la)), Ok(()));
        assert_eq!(verify_proof(&root1, &b, None, &enc(&[], &la)), Ok(()));
        assert_eq!(
            verify_proof(&root1, &a, Some(&vb), &enc(&[], &la)),
            Err(ProofError::Terminal("another value hash"))
        );
        assert_eq!(
            verify_proof(&root1, &a, None, &enc(&[], &la)),
            Err(ProofError::Terminal("the key's own leaf"))
        );
        // Two leaves, split at bit 0.
        let lb = Terminal::Leaf {
            key: b,
            value_hash: vb,
        };
        let root2 = internal_hash(&la.hash(), &lb.hash());
        let pa = enc(&[lb.hash()], &la);
        assert_eq!(verify_proof(&root2, &a, Some(&va), &pa), Ok(()));
        assert_eq!(
            verify_proof(&root2, &b, Some(&vb), &enc(&[la.hash()], &lb)),
            Ok(())
        );
        // The wrong side: a's proof does not prove b.
        assert!(verify_proof(&root2, &b, Some(&va), &pa).is_err());
        // Another root.
        assert_eq!(
            verify_proof(&root1, &a, Some(&va), &pa),
            Err(ProofError::RootMismatch)
        );
        // A key under a but absent (bit 0 is 0, differs later): a's leaf is
        // alone there, so it proves the key absent.
        let mut c = a;
        c[31] = 1;
        assert_eq!(verify_proof(&root2, &c, None, &pa), Ok(()));
        // A leaf off the path (b's leaf offered under bit 0 = 0).
        assert_eq!(
            verify_proof(&root2, &c, None, &enc(&[la.hash()], &lb)),
            Err(ProofError::Terminal("a leaf off the key's path"))
        );
        // Bad encodings.
        let mut long = pa.clone();
        long.push(0);
        let mut tag = pa.clone();
        tag[2 + 32] = 7;
        let mut many = pa.clone();
        many[..2].copy_from_slice(&257u16.to_le_bytes());
        for bad in [&[][..], &[1][..], &pa[..pa.len() - 1], &long, &tag, &many] {
            assert!(
                matches!(
                    verify_proof(&root2, &a, Some(&va), bad),
                    Err(ProofError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
