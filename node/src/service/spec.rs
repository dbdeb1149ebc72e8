//! The chain spec: the one place that says which plugins a chain runs,
//! and so which state transition its blocks make. `int devnet`, `int run`,
//! `int bench tps` and `int bench mqtt` open their chains here, so a block
//! executed by any of them gives the same state root.

use std::sync::Arc;

use int_engine::chain::{Chain, ChainConfig, ChainError};
use int_engine::storage::Storage;
use int_systems::{BpkPlugin, LedgerPlugin, MarketPlugin, TokenPlugin};
use int_zk::tree::PairHasher;

/// The plugin set of an INT chain: the ledger, BPK intents, the market
/// and the INT/GAS token. A plugin whose genesis objects a chain lacks
/// (no BPK keys, no token oracles) decides nothing there, and the chain
/// refunds its payloads as unsupported.
pub struct ChainSpec {
    bpk: BpkPlugin,
}

impl ChainSpec {
    /// The spec with the identity tree's node hashes computed on the CPU.
    pub fn cpu() -> Self {
        Self {
            bpk: BpkPlugin::new(),
        }
    }

    /// The spec with the identity tree's node hashes on `hasher` (the GPU
    /// where the node has one); the hashes, and so the roots, are the same.
    pub fn with_hasher(hasher: Arc<dyn PairHasher + Send + Sync>) -> Self {
        Self {
            bpk: BpkPlugin::with_hasher(hasher),
        }
    }

    /// Opens the chain `cfg` names over `store` with this spec's plugins.
    pub fn open(&self, store: Arc<dyn Storage>, cfg: ChainConfig) -> Result<Chain, ChainError> {
        Chain::open(
            store,
            cfg,
            &[&LedgerPlugin, &self.bpk, &MarketPlugin, &TokenPlugin],
        )
    }
}
