//! `int state`: what a data directory holds, and an audit of it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use int_engine::chain::{Chain, ChainConfig};
use int_engine::state::smt;
use int_engine::storage::{Store, recompute_root};
use serde_json::{Value, json};

fn open(data_dir: &Path) -> Result<Store> {
    let dir = data_dir.join("lmdb");
    if !dir.join("data.mdb").exists() {
        bail!(
            "no chain data in {} (run `int devnet` first)",
            data_dir.display()
        );
    }
    Store::open(&dir).with_context(|| format!("opening {}", dir.display()))
}

/// The head, the state root, and the audit: the root recomputed from every
/// stored account must equal the stored one (`root_ok`), the count must
/// match (`accounts_ok`), and the head block must re-verify
/// (`head_block_ok`: aggregate signature and proposer signature).
pub fn summary(data_dir: &Path, chain_id: u32) -> Result<Value> {
    let store = std::sync::Arc::new(open(data_dir)?);
    let head = store
        .head(chain_id)?
        .with_context(|| format!("chain {chain_id} has no blocks"))?;
    let (root, count) = recompute_root(&store, chain_id)?;
    let block = store
        .block(chain_id, head.height)?
        .context("head block missing")?;
    let chain = Chain::open(
        store.clone(),
        ChainConfig {
            chain_id,
            hot_capacity: 1,
            parallel: false,
        },
        &[],
    )?;
    let verified = chain.verify_block(&block);
    Ok(json!({
        "chain_id": chain_id,
        "height": head.height,
        "head_hash": hex::encode(head.hash),
        "state_root": hex::encode(head.state_root),
        "accounts": head.accounts,
        "recomputed_root": hex::encode(root),
        "root_ok": root == head.state_root,
        "accounts_ok": count == head.accounts,
        "head_block_ok": verified.is_ok(),
        "head_block_error": verified.err().map(|e| e.to_string()),
    }))
}

/// One account, with an inclusion (or exclusion) proof against the head's
/// state root when asked.
pub fn account(data_dir: &Path, chain_id: u32, id_hex: &str, proof: bool) -> Result<Value> {
    let id: [u8; 32] = hex::decode(id_hex.trim_start_matches("0x"))
        .context("account id is not hex")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("account id must be 32 bytes (64 hex digits)"))?;
    let store = open(data_dir)?;
    let head = store
        .head(chain_id)?
        .with_context(|| format!("chain {chain_id} has no blocks"))?;
    let rec = store.account(chain_id, &id)?;
    let mut v = json!({
        "id": hex::encode(id),
        "height": head.height,
        "state_root": hex::encode(head.state_root),
        "exists": rec.is_some(),
    });
    if let Some(r) = &rec {
        v["nonce"] = json!(r.nonce);
        v["int"] = json!(r.int.to_string());
        v["gas"] = json!(r.gas.to_string());
        v["public_key"] = json!(r.public_key.map(hex::encode));
        v["device_kind"] = json!(r.device_kind);
        v["metadata_hash"] = json!(hex::encode(r.metadata_hash));
        v["value_hash"] = json!(hex::encode(r.hash()));
    }
    if proof {
        let reader = store.node_reader(chain_id)?;
        let p = smt::prove(&reader, &head.state_root, &id)?;
        let value = rec.map(|r| r.hash());
        v["proof"] = json!(hex::encode(p.to_bytes()));
        v["proof_ok"] = json!(p.verify(&head.state_root, &id, value.as_ref()));
    }
    Ok(v)
}
