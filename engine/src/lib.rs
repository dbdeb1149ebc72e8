//! The INT engine: the ECS world of one chain, the block pipeline (execute,
//! seal, commit, and the check of a received block), plugin objects as
//! entities and the one read-your-writes overlay ([`objects`]), storage
//! behind traits with its LMDB implementation, the state commitment, the
//! mempool and the crypto verification front (batched BLS).
//!
//! Nothing here does I/O other than storage; the node drives it.

pub mod bytes;
pub mod chain;
pub mod crypto;
pub mod fault;
pub mod ingress;
pub mod mempool;
pub mod objects;
pub mod state;
pub mod storage;
pub mod supply;
pub mod world;

/// A hash map keyed by account ids or state keys on the block path. ahash,
/// seeded at random per process: ids come from the wire (a transfer names
/// any receiver), so the seed keeps a block of chosen ids from colliding;
/// std's SipHash was 3 % of a block's CPU. Iteration order is the seed's:
/// nothing consensus reads may depend on it.
pub type KeyMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Items per rayon task in the block path's data-parallel maps (keys,
/// decodes, hashes): below it a split costs more than the work it shares,
/// so a devnet's small blocks stay on one thread.
pub const PAR_ITEMS_MIN: usize = 512;
