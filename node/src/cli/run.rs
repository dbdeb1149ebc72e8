//! `int run --config FILE`: the node from its configuration file
//! ([`crate::config`]), without the devnet's simulators and key file.
//!
//! The validator's key comes from an EIP-2335 keystore (`int keys new`),
//! unlocked with `$INT_KEYSTORE_PASSWORD` or a password asked on the
//! terminal; the chain id, block cadence, addresses and genesis accounts
//! come from the file. The node itself is [`crate::node`], the core
//! `int devnet` runs too.

use std::path::{Path, PathBuf};

use crate::sim::fleet::validator_account;
use anyhow::{Context, Result, anyhow};
use int_engine::crypto::bls::SecretKey;
use int_gpu::{Accelerator, ThresholdPolicy};

use crate::config::Settings;
use crate::service::node::{Genesis, Hooks, Node, NodeConfig};

/// Options of `int run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// The configuration file.
    pub config: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C).
    pub duration_s: Option<u64>,
}

/// What a run did; printed when it stops, as JSON with `--json`.
pub type Summary = crate::service::node::RunSummary;

/// Opens the validator's keystore (`DIR/NAME.json`) and decrypts it with
/// the password from `$INT_KEYSTORE_PASSWORD` or the terminal.
fn unlock_validator(path: &Path) -> Result<SecretKey> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("validator.keystore: {} names no key", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let key = crate::cli::keys::load(dir, name)
        .with_context(|| format!("validator.keystore {}", path.display()))?;
    let password = crate::cli::keys::password(false)?;
    crate::cli::keys::unlock(&key, &password)
}

/// Block 0 of a new chain: the configured accounts and the validator's,
/// registered with its key (added with no balance unless listed).
fn genesis(settings: &Settings, validator: &SecretKey) -> Genesis {
    let mut accounts = settings.genesis.clone();
    let (vid, vrec) = validator_account(validator);
    match accounts.iter_mut().find(|(id, _)| *id == vid) {
        Some((_, rec)) => rec.public_key = vrec.public_key,
        None => accounts.push((vid, vrec)),
    }
    Genesis {
        accounts,
        objects: Vec::new(),
    }
}

/// Runs the node of the configuration file until Ctrl-C or the duration;
/// returns its summary.
pub fn run(opts: &RunOpts) -> Result<Summary> {
    let settings = crate::config::load(&opts.config)?;
    // Everything that can fail without writing comes first: the key, the
    // password and the accelerator.
    let validator = unlock_validator(&settings.keystore)?;
    let accel = match settings.accel {
        Some(a) => a,
        None => int_gpu::Accel::from_env()?,
    };
    let acc = Accelerator::open(accel, ThresholdPolicy::from_env()?)?;
    tracing::info!(accel = %acc.describe(), "batch verification");
    let stop = crate::service::node::stop_on_ctrl_c()?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;

    let mut used_genesis = false;
    let mut node = Node::open(
        NodeConfig {
            data_dir: settings.data_dir.clone(),
            chain_id: settings.chain_id,
            block_ms: settings.block_ms,
            block_txs_max: settings.block_txs_max,
            duration_s: opts.duration_s,
            rpc_addr: settings.rpc_addr,
            mqtt_addr: settings.mqtt_addr,
            hot_capacity: settings.genesis.len().saturating_mul(2),
        },
        acc,
        validator.clone(),
        stop,
        || {
            used_genesis = true;
            Ok(genesis(&settings, &validator))
        },
    )?;
    if !used_genesis && !settings.genesis.is_empty() {
        tracing::info!("the data dir holds the chain already; [genesis] is not used");
    }
    let start = node.start();
    let vid = hex::encode(validator.public_key().account_id());
    eprintln!(
        "int run: chain {}, block every {} ms, data in {}, starting at height {}",
        settings.chain_id,
        settings.block_ms,
        settings.data_dir.display(),
        start.height
    );
    eprintln!("validator {vid}");

    let began = std::time::Instant::now();
    let ran = node.run(Vec::new(), Hooks::default())?;
    node.summary(&ran, began.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use int_engine::storage::AccountRecord;

    #[test]
    fn the_validator_joins_genesis_once() {
        let sk = SecretKey::from_seed(&[1u8; 32]);
        let vid = sk.public_key().account_id();
        let other = [9u8; 32];
        let mut settings = crate::config::Config::default()
            .settings(Path::new(""))
            .unwrap();
        settings.genesis = vec![(
            other,
            AccountRecord {
                int: 5,
                ..Default::default()
            },
        )];
        let g = genesis(&settings, &sk);
        assert_eq!(g.accounts.len(), 2);
        let v = g.accounts.iter().find(|(id, _)| *id == vid).unwrap();
        assert_eq!(v.1.public_key, Some(sk.public_key().to_bytes()));
        assert_eq!((v.1.int, v.1.gas), (0, 0));
        // Listed, it keeps its balances and gets its key.
        settings.genesis.push((
            vid,
            AccountRecord {
                gas: 7,
                ..Default::default()
            },
        ));
        let g = genesis(&settings, &sk);
        assert_eq!(g.accounts.len(), 2);
        let v = g.accounts.iter().find(|(id, _)| *id == vid).unwrap();
        assert_eq!(v.1.public_key, Some(sk.public_key().to_bytes()));
        assert_eq!(v.1.gas, 7);
    }
}
