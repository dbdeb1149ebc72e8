//! Storage-free verification of the twig log's inclusion and exclusion
//! proofs (the commitment of [`super::twig`]), and the hashes that define
//! its root: what a light client or a device runs, with no store, no
//! allocation and only `core` and `blake3`.
//!
//! # The structure being proved
//!
//! State is a log of entries; entry `s` (its *serial*) is
//! `version ‖ serial ‖ key ‖ next_key ‖ value_len ‖ value` ([`EntryRef`]),
//! where `next_key` is the next key present in key order, so that an entry
//! whose key is below a key `k` and whose `next_key` is above it proves `k`
//! absent. A bit per serial says whether the entry is its key's current
//! one (*active*). The log is cut into twigs of [`TWIG_ENTRIES`] serials:
//!
//! ```text
//! entry hash   = blake3(0x10 ‖ entry bytes)
//! node         = blake3(0x11 ‖ left ‖ right)
//! entries root = binary Merkle root of a twig's 2 048 entry hashes
//!                (zero hashes past the log's tail)
//! bits hash    = blake3(0x13 ‖ the twig's 2 048 active bits, 256 bytes,
//!                bit s mod 2048 at byte (s mod 2048) / 8, LSB first)
//! twig root    = blake3(0x12 ‖ entries root ‖ bits hash)
//! upper root   = binary Merkle root (`node`) of the twig roots, zero-padded
//!                to a power of two: depth ⌈log2 twigs⌉ (0 for one twig)
//! state root   = blake3(0x14 ‖ upper root ‖ tail as u64 LE)
//! ```
//!
//! The tail (the number of serials ever written) is in the root, so the
//! verifier knows the upper tree's depth and that a serial is in range.
//!
//! # The proof
//!
//! `tail` (u64 LE), the entry's length (u32 LE) and bytes, its twig's 256
//! bytes of active bits, the 11 siblings inside the twig (leaf side
//! first), the upper tree's depth (u8) and that many siblings (twig side
//! first). Nothing may follow. It checks that the entry is active, that it
//! is the key's (inclusion, with the expected value hash) or brackets it
//! (exclusion: `key < k < next_key`; the reserved [`KEY_MIN`] is proved
//! absent by its own sentinel entry, and [`KEY_END`] by the last entry),
//! and that hashing it up gives the root.

use super::proof::{Hash32, ProofError};

/// Serials per twig (2¹¹).
pub const TWIG_ENTRIES: u64 = 1 << TWIG_LEVELS;
/// Levels of the Merkle tree inside a twig.
pub const TWIG_LEVELS: usize = 11;
/// Bytes of a twig's active bits.
pub const BITS_BYTES: usize = (TWIG_ENTRIES / 8) as usize;
/// The entry encoding's version (its first byte).
pub const ENTRY_VERSION: u8 = 1;
/// Bytes of an entry before its value.
pub const ENTRY_HEADER_BYTES: usize = 1 + 8 + 32 + 32 + 4;
/// The longest value an entry holds.
pub const VALUE_BYTES_MAX: usize = 1 << 16;
/// Deepest upper tree a proof may claim: 2⁴⁸ twigs is far past any log.
pub const UPPER_DEPTH_MAX: usize = 48;

/// The smallest key: the sentinel entry's, written first and never
/// deleted, so every absent key has an entry below it. No state value is
/// ever stored at it.
pub const KEY_MIN: Hash32 = [0; 32];
/// The `next_key` of the greatest key: the end of the chain. No state value
/// is ever stored at it.
pub const KEY_END: Hash32 = [0xff; 32];

/// The hash of nothing: padding past the tail, at every level.
pub const ZERO: Hash32 = [0; 32];

const ENTRY_TAG: u8 = 0x10;
const NODE_TAG: u8 = 0x11;
const TWIG_TAG: u8 = 0x12;
const BITS_TAG: u8 = 0x13;
const ROOT_TAG: u8 = 0x14;

/// One entry of the log, read in place from its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Its position in the log.
    pub serial: u64,
    /// The state key.
    pub key: &'a Hash32,
    /// The next key present, in key order, when the entry was written.
    pub next_key: &'a Hash32,
    /// The value.
    pub value: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// Reads an entry that fills `bytes` exactly.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ProofError> {
        let (entry, rest) = Self::decode_prefix(bytes)?;
        if !rest.is_empty() {
            return Err(ProofError::Malformed("bytes after the entry"));
        }
        Ok(entry)
    }

    /// Reads the entry at the start of `bytes`; returns it and what follows.
    pub fn decode_prefix(bytes: &'a [u8]) -> Result<(Self, &'a [u8]), ProofError> {
        let short = ProofError::Malformed("entry truncated");
        let (version, rest) = bytes.split_first().ok_or(short)?;
        if *version != ENTRY_VERSION {
            return Err(ProofError::Malformed("unknown entry version"));
        }
        let (serial, rest) = rest.split_first_chunk::<8>().ok_or(short)?;
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(short)?;
        let (next_key, rest) = rest.split_first_chunk::<32>().ok_or(short)?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or(short)?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > VALUE_BYTES_MAX {
            return Err(ProofError::Malformed("entry value too long"));
        }
        if rest.len() < len {
            return Err(short);
        }
        let (value, rest) = rest.split_at(len);
        Ok((
            Self {
                serial: u64::from_le_bytes(*serial),
                key,
                next_key,
                value,
            },
            rest,
        ))
    }
}

/// The state key of an account: `blake3("INT/acct/v1" ‖ id)`. Accounts
/// are not keyed by their raw ids, which a transfer's sender chooses
/// freely: hashed under their own tag, they can never land on a plugin
/// object's key (tagged `INT/obj/v1`) or on [`KEY_MIN`] / [`KEY_END`].
/// A client proving an account checks the proof at this key.
pub fn account_key(id: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(b"INT/acct/v1");
    h.update(id);
    h.finalize().into()
}

/// `blake3(tag ‖ bytes)`.
fn tagged(tag: u8, bytes: &[u8]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(bytes);
    h.finalize().into()
}

/// `blake3(tag ‖ left ‖ right)`.
fn tagged_pair(tag: u8, left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = tag;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    blake3::hash(&buf).into()
}

/// Hash of an entry's encoding.
pub fn entry_hash(entry_bytes: &[u8]) -> Hash32 {
    tagged(ENTRY_TAG, entry_bytes)
}

/// Hash of two children, in a twig and in the upper tree.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    tagged_pair(NODE_TAG, left, right)
}

/// Hash of a twig's active bits.
pub fn bits_hash(bits: &[u8; BITS_BYTES]) -> Hash32 {
    tagged(BITS_TAG, bits)
}

/// A twig's root from its entries root and bits hash.
pub fn twig_root(entries_root: &Hash32, bits_hash: &Hash32) -> Hash32 {
    tagged_pair(TWIG_TAG, entries_root, bits_hash)
}

/// The state root from the upper tree's root and the log's tail.
pub fn state_root(upper_root: &Hash32, tail: u64) -> Hash32 {
    let mut buf = [0u8; 41];
    buf[0] = ROOT_TAG;
    buf[1..33].copy_from_slice(upper_root);
    buf[33..].copy_from_slice(&tail.to_le_bytes());
    blake3::hash(&buf).into()
}

/// Twigs a log of `tail` serials spans (at least one: an empty log has an
/// empty twig).
pub fn twigs_of(tail: u64) -> u64 {
    tail.div_ceil(TWIG_ENTRIES).max(1)
}

/// Depth of the upper tree over `twigs_of(tail)` twigs.
pub fn upper_depth(tail: u64) -> usize {
    twigs_of(tail).next_power_of_two().trailing_zeros() as usize
}

/// Checks proof bytes against `root`: with `Some(v)`, that `key` is present
/// with value hash `v` (`blake3` of the value); with `None`, that `key` is
/// absent. Never panics; any bytes that are not a proof are
/// [`ProofError::Malformed`].
pub fn verify_twig_proof(
    root: &Hash32,
    key: &Hash32,
    value_hash: Option<&Hash32>,
    proof: &[u8],
) -> Result<(), ProofError> {
    let short = ProofError::Malformed("proof truncated");
    let (tail, rest) = proof.split_first_chunk::<8>().ok_or(short)?;
    let tail = u64::from_le_bytes(*tail);
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(short)?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > ENTRY_HEADER_BYTES + VALUE_BYTES_MAX || rest.len() < len {
        return Err(short);
    }
    let (entry_bytes, rest) = rest.split_at(len);
    let entry = EntryRef::decode(entry_bytes)?;
    let (bits, rest) = rest.split_first_chunk::<BITS_BYTES>().ok_or(short)?;
    let (twig_sibs, rest) = rest
        .split_first_chunk::<{ TWIG_LEVELS * 32 }>()
        .ok_or(short)?;
    let (depth, rest) = rest.split_first().ok_or(short)?;
    let depth = usize::from(*depth);
    if depth > UPPER_DEPTH_MAX {
        return Err(ProofError::Malformed("upper tree too deep"));
    }
    if rest.len() != depth * 32 {
        return Err(ProofError::Malformed("upper siblings' length"));
    }
    let (twig_sibs, _) = twig_sibs.as_chunks::<32>();
    let (upper_sibs, _) = rest.as_chunks::<32>();

    match value_hash {
        Some(want) => {
            if entry.key != key {
                return Err(ProofError::Terminal("another key's entry"));
            }
            if *key == KEY_MIN {
                return Err(ProofError::Terminal("the sentinel holds no value"));
            }
            if blake3::hash(entry.value).as_bytes() != want {
                return Err(ProofError::Terminal("another value hash"));
            }
        }
        None => {
            // The reserved keys never hold a value: the sentinel's own
            // entry proves `KEY_MIN` absent, and the last entry (next key
            // `KEY_END`) every key above it, `KEY_END` included.
            let sentinel = *key == KEY_MIN && *entry.key == KEY_MIN;
            let above = entry.key < key && (key < entry.next_key || *entry.next_key == KEY_END);
            if !(sentinel || above) {
                return Err(ProofError::Terminal(
                    "an entry that does not bracket the key",
                ));
            }
        }
    }
    if entry.serial >= tail {
        return Err(ProofError::Terminal("an entry past the log's tail"));
    }
    let at = (entry.serial % TWIG_ENTRIES) as usize;
    if bits[at / 8] >> (at % 8) & 1 != 1 {
        return Err(ProofError::Terminal("an inactive entry"));
    }
    if depth != upper_depth(tail) {
        return Err(ProofError::Malformed("upper depth does not fit the tail"));
    }
    let mut h = entry_hash(entry_bytes);
    for (level, sib) in twig_sibs.iter().enumerate() {
        h = if at >> level & 1 == 1 {
            node_hash(sib, &h)
        } else {
            node_hash(&h, sib)
        };
    }
    h = twig_root(&h, &bits_hash(bits));
    let twig = entry.serial / TWIG_ENTRIES;
    for (level, sib) in upper_sibs.iter().enumerate() {
        h = if twig >> level & 1 == 1 {
            node_hash(sib, &h)
        } else {
            node_hash(&h, sib)
        };
    }
    if state_root(&h, tail) == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}
