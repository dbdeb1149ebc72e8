//! `int state`: what a data directory holds, and an audit of it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use int_engine::chain::{Chain, ChainConfig};
use int_engine::state::twig_proof::{account_key, verify_twig_proof};
use int_engine::storage::{StateView, Storage, recompute_root};
use int_engine::supply::Supply;
use serde_json::{Value, json};

/// The store in `data_dir`, opened to read beside a running node, or a
/// clear error when there is none.
pub fn open(data_dir: &Path) -> Result<std::sync::Arc<dyn Storage>> {
    let dir = data_dir.join("lmdb");
    if !dir.join("data.mdb").exists() {
        bail!(
            "no chain data in {} (run `int devnet` first)",
            data_dir.display()
        );
    }
    // A reader: the node may be running and writing the state log.
    int_engine::storage::open_read_only(&dir).with_context(|| format!("opening {}", dir.display()))
}

/// The head, the state root, and the audit: the root recomputed from every
/// stored account must equal the stored one (`root_ok`), the count must
/// match (`accounts_ok`), and the head block must re-verify
/// (`head_block_ok`: aggregate signature and proposer signature), and
/// every account's balances plus every escrow must equal the stored INT
/// and GAS totals (`value_conserved`).
/// Times `int state` redoes its audit on a newer snapshot when the node
/// dropped the state log's segments under it.
const AUDIT_RETRIES_MAX: usize = 4;

pub fn summary(data_dir: &Path, chain_id: u32) -> Result<Value> {
    let store = open(data_dir)?;
    // One snapshot for every read: a node may commit blocks meanwhile.
    let view = store.snapshot()?;
    let head = view
        .head(chain_id)?
        .with_context(|| format!("chain {chain_id} has no blocks"))?;
    // The audit rebuilds the root from the state log at this snapshot's
    // meta; a running node may drop the log's old segments meanwhile, and
    // then the audit is redone on a newer snapshot (a bounded number of
    // times).
    let mut audited_root = recompute_root(&*view, chain_id);
    let mut view = view;
    let mut head = head;
    for _ in 0..AUDIT_RETRIES_MAX {
        if audited_root.is_ok() {
            break;
        }
        view = store.snapshot()?;
        head = view
            .head(chain_id)?
            .with_context(|| format!("chain {chain_id} has no blocks"))?;
        audited_root = recompute_root(&*view, chain_id);
    }
    let (root, count) = audited_root?;
    let block = view
        .block(chain_id, head.height)?
        .context("head block missing")?;
    let mut chain = Chain::open(
        store.clone(),
        ChainConfig {
            chain_id,
            hot_capacity: 1,
            parallel: false,
        },
        &[],
    )?;
    if let Some(v) = int_systems::bpk::Groth16Intents::from_store(&*view, chain_id)? {
        chain.set_proof_verifier(std::sync::Arc::new(v));
    }
    let verified = chain.verify_block_in(&*view, &block);
    let audited = int_systems::audit::audit(&*view, chain_id)?;
    let bpk = bpk_summary(&*view, chain_id, head.height)?;
    let tokens = token_summary(&*view, chain_id, head.height)?;
    let stats = store.stats()?;
    let tables: serde_json::Map<String, Value> = stats
        .tables
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                json!({
                    "entries": t.entries,
                    "depth": t.depth,
                    "leaf_pages": t.leaf_pages,
                    "branch_pages": t.branch_pages,
                    "overflow_pages": t.overflow_pages,
                }),
            )
        })
        .collect();
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
        "bpk": bpk,
        "tokens": tokens,
        // `null` on a chain without a supply record yet (made before supply
        // accounting; its next block writes one).
        "supply": audited.as_ref().map(|(s, _)| supply_fields(s)),
        "audit": audited.as_ref().map(|(_, a)| json!({
            "int_in_accounts": a.int_in_accounts.to_string(),
            "gas_in_accounts": a.gas_in_accounts.to_string(),
            "int_in_escrow": a.int_in_escrow.to_string(),
            "gas_in_escrow": a.gas_in_escrow.to_string(),
            "int_balanced": a.int_balanced,
            "gas_balanced": a.gas_balanced,
            "escrow_matches": a.escrow_matches,
            "identities_hold": a.identities_hold,
        })),
        "value_conserved": audited.as_ref().map(|(_, a)| a.balanced()),
        "storage": {
            "page_size": stats.page_size,
            "last_page": stats.last_page,
            "tables": tables,
        },
    }))
}

/// The stored supply totals as decimal strings (u128 does not fit a JSON
/// number).
pub fn supply_fields(s: &Supply) -> std::collections::BTreeMap<String, String> {
    [
        ("int_total", s.int_total),
        ("gas_total", s.gas_total),
        ("int_genesis", s.int_genesis),
        ("gas_genesis", s.gas_genesis),
        ("int_burned", s.int_burned),
        ("gas_minted", s.gas_minted),
        ("int_escrow", s.int_escrow),
        ("gas_escrow", s.gas_escrow),
        ("fees_paid", s.fees_paid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The chain's token state: the epoch, the oracle price in force, and the
/// last GAS auction (`null` when the chain has no token configuration).
fn token_summary(store: &dyn StateView, chain_id: u32, height: u64) -> Result<Value> {
    use int_systems::token;
    let Some(cfg) = token::load_config(store, chain_id)? else {
        return Ok(Value::Null);
    };
    let price = token::price_in_force(store, chain_id)?;
    let auction = token::last_auction(store, chain_id)?;
    Ok(json!({
        "epoch": cfg.epoch_of(height),
        "epoch_blocks": cfg.epoch_blocks,
        "oracles": cfg.oracles.len(),
        "price_epoch": price.map(|(e, _)| e),
        "int_per_fiat": price.map(|(_, p)| p.to_string()),
        "auction_lots_per_epoch": cfg.auction_lots_per_epoch,
        "last_auction": auction.map(|a| json!({
            "epoch": a.epoch,
            "clearing_int_per_lot": a.clearing_int_per_lot.map(|p| p.to_string()),
            "lots_sold": a.lots_sold,
            "bids": a.bids,
            "int_burned": a.int_burned.to_string(),
        })),
    }))
}

/// The chain's BPK state: epoch, identities, centroid commitment in force
/// (`null` when the chain has no BPK configuration).
fn bpk_summary(store: &dyn StateView, chain_id: u32, height: u64) -> Result<Value> {
    use int_systems::bpk;
    let Some(cfg) = bpk::load_config(store, chain_id)? else {
        return Ok(Value::Null);
    };
    let epoch = cfg.epoch_of(height);
    let tree = bpk::identity_tree(store, chain_id)?;
    let centroids = bpk::centroids_at(store, chain_id, epoch)?;
    Ok(json!({
        "epoch": epoch,
        "epoch_blocks": cfg.epoch_blocks,
        "dims": cfg.dims,
        "clusters": cfg.clusters,
        "identities": tree.len(),
        "identity_root": int_zk::export::fr_to_hex(tree.root()),
        "root_history": cfg.root_history,
        "centroids_from_epoch": centroids.as_ref().map(|c| c.epoch),
        "centroid_commitment": centroids.map(|c| format!("0x{}", hex::encode(c.commitment))),
    }))
}

/// An account id given in hex (64 digits, `0x` allowed); errors name it
/// as `what` (`account id`, `--owner`, …).
pub fn parse_account(text: &str, what: &str) -> Result<int_schemas::AccountId> {
    let bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text))
        .with_context(|| format!("{what} {text:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} {text:?} must be 32 bytes (64 hex digits)"))
}

/// One account, with an inclusion (or exclusion) proof against the head's
/// state root when asked.
pub fn account(data_dir: &Path, chain_id: u32, id_hex: &str, proof: bool) -> Result<Value> {
    let id = parse_account(id_hex, "account id")?;
    let store = open(data_dir)?;
    account_at_head(&*store.snapshot()?, chain_id, &id, proof)
}

pub fn account_at_head(
    store: &dyn StateView,
    chain_id: u32,
    id: &[u8; 32],
    proof: bool,
) -> Result<Value> {
    let head = store
        .head(chain_id)?
        .with_context(|| format!("chain {chain_id} has no blocks"))?;
    let rec = store.account(chain_id, id)?;
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
        v["value_hash"] = json!(hex::encode(r.state_hash(id)));
    }
    if proof {
        // The account's state key is its id hashed under the account tag.
        let key = account_key(id);
        let p = store.prove(chain_id, &key)?;
        let value = rec.map(|r| r.state_hash(id));
        v["state_key"] = json!(hex::encode(key));
        v["proof"] = json!(hex::encode(&p));
        v["proof_ok"] =
            json!(verify_twig_proof(&head.state_root, &key, value.as_ref(), &p).is_ok());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_checked() {
        let id = [7u8; 32];
        assert_eq!(parse_account(&hex::encode(id), "--to").unwrap(), id);
        assert_eq!(
            parse_account(&format!("0x{}", hex::encode(id)), "--to").unwrap(),
            id
        );
        for (bad, says) in [("", "32 bytes"), ("zz", "not hex"), ("0011", "32 bytes")] {
            let e = parse_account(bad, "--to").unwrap_err().to_string();
            assert!(e.starts_with("--to ") && e.contains(says), "{bad}: {e}");
        }
    }
}
