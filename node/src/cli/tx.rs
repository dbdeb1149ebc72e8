//! `int tx`: build a transaction, sign it with a keystore key
//! ([`crate::keys`]) and send it to a node through JSON-RPC
//! (`int_sendTransaction`), or save the signed envelope to a file and send
//! that later (`int tx send`).
//!
//! What is not given is asked of the node: the chain id (`int_chainInfo`)
//! and the sender's next nonce (`int_getAccount`: the committed nonce, so a
//! sender with transactions still pending passes `--nonce`). The printed
//! `tx_hash` is BLAKE3 of the body bytes, the hash receipts carry.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use int_engine::crypto::bls::tx_message;
use int_schemas::wire::Token;
use int_schemas::{AccountId, PayloadSpec, TxBodySpec, build_envelope, build_tx_body, decode_tx};
use serde_json::{Value, json};

use crate::cli::keys::{self, DEFAULT_DIR};
use crate::rpc_client::{DEFAULT_RPC, RpcClient};

/// `int tx` subcommands.
#[derive(Subcommand)]
pub enum TxCmd {
    /// Build and sign an INT transfer with a keystore key; send it
    /// (`--send`) or write the envelope's bytes to a file (`--out`).
    Transfer(TransferArgs),
    /// Send a signed envelope file (as `int tx transfer --out` writes it)
    /// through `int_sendTransaction`.
    Send {
        /// The envelope file (raw FlatBuffers bytes).
        file: PathBuf,
        /// The node's JSON-RPC endpoint.
        #[arg(long, default_value = DEFAULT_RPC)]
        rpc: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `int tx transfer`.
#[derive(Args)]
pub struct TransferArgs {
    /// Receiver's account id (64 hex digits).
    #[arg(long, value_name = "ID")]
    to: String,
    /// Amount in the token's base units.
    #[arg(long)]
    amount: u128,
    /// Token. GAS is not transferable between users: the chain refuses
    /// such a transfer (`GasNotTransferable`) and keeps the fee.
    #[arg(long, value_enum, default_value_t = TokenArg::Int)]
    token: TokenArg,
    /// Fee in GAS base units.
    #[arg(long, default_value_t = 1)]
    fee: u128,
    /// The sender's nonce (default: its committed nonce, from the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// The signing key: KEYS_DIR/NAME.json.
    #[arg(long, value_name = "NAME")]
    key: String,
    /// Keystore directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    keys_dir: PathBuf,
    /// The node's JSON-RPC endpoint.
    #[arg(long, default_value = DEFAULT_RPC)]
    rpc: String,
    /// Chain id (default: the node's, from `int_chainInfo`).
    #[arg(long)]
    chain_id: Option<u32>,
    #[command(flatten)]
    dest: Dest,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where a signed transaction goes: exactly one of the two.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Dest {
    /// Send it to the node.
    #[arg(long)]
    send: bool,
    /// Write the envelope's bytes to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The token of a transfer.
#[derive(Clone, Copy, ValueEnum)]
enum TokenArg {
    /// INT, the transferable token.
    Int,
    /// GAS (refused by the chain between users).
    Gas,
}

/// The node's chain id.
fn chain_id(rpc: &RpcClient) -> Result<u32> {
    let info = rpc.call("int_chainInfo", json!([]))?;
    info.get("chain_id")
        .and_then(Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| anyhow!("int_chainInfo answered no chain id: {info}"))
}

/// The committed nonce of `sender`, which must exist with a registered key
/// (nothing else can send).
fn next_nonce(rpc: &RpcClient, sender: &AccountId, chain: u32) -> Result<u64> {
    let id = hex::encode(sender);
    let a = rpc.call("int_getAccount", json!([id]))?;
    if a.get("exists").and_then(Value::as_bool) != Some(true) {
        bail!(
            "the sender {id} has no account on chain {chain}: it must be funded and its key registered before it can send (or pass --nonce to build the transaction anyway)"
        );
    }
    if a.get("public_key").is_none_or(Value::is_null) {
        bail!(
            "the sender {id} has no registered key on chain {chain}: the chain would refuse it (UnknownSender); register the device first (or pass --nonce to build anyway)"
        );
    }
    a.get("nonce")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("int_getAccount answered no nonce: {a}"))
}

/// `int tx transfer`: the fields of the signed transaction and, with
/// `--send`, the node's answer.
pub fn transfer(a: &TransferArgs) -> Result<Value> {
    let to = crate::cli::state::parse_account(&a.to, "--to")?;
    let key = keys::load(&a.keys_dir, &a.key)?;
    let sender = keys::public_key(&key.keystore)
        .with_context(|| format!("{}", key.path.display()))?
        .account_id();
    // Parsing the URL does no I/O; the node is asked only for what is not
    // given, and before the password, so an unreachable node costs no
    // password prompt.
    let rpc = RpcClient::new(&a.rpc)?;
    let chain = match a.chain_id {
        Some(c) => c,
        None => chain_id(&rpc)?,
    };
    let nonce = match a.nonce {
        Some(n) => n,
        None => next_nonce(&rpc, &sender, chain)?,
    };
    let password = keys::password(false)?;
    let sk = keys::unlock(&key, &password)?;
    let token = match a.token {
        TokenArg::Int => Token::Int,
        TokenArg::Gas => Token::Gas,
    };
    let body = build_tx_body(&TxBodySpec {
        chain_id: chain,
        sender,
        nonce,
        fee: a.fee,
        payload: PayloadSpec::Transfer {
            to,
            amount: a.amount,
            token,
        },
    });
    let envelope = build_envelope(&body, &sk.sign(&tx_message(chain, &body)).to_bytes());
    let mut v = json!({
        "tx_hash": hex::encode(blake3::hash(&body).as_bytes()),
        "sender": hex::encode(sender),
        "to": hex::encode(to),
        "amount": a.amount.to_string(),
        "token": format!("{token:?}").to_lowercase(),
        "fee": a.fee.to_string(),
        "nonce": nonce,
        "chain_id": chain,
    });
    match (&a.dest.out, a.dest.send) {
        (Some(path), _) => {
            std::fs::write(path, &envelope)
                .with_context(|| format!("writing {}", path.display()))?;
            v["file"] = json!(path.display().to_string());
            v["bytes"] = json!(envelope.len());
        }
        (None, true) => v["result"] = send(&rpc, &envelope)?,
        (None, false) => bail!("say where the transaction goes: --send or --out FILE"),
    }
    Ok(v)
}

fn send(rpc: &RpcClient, envelope: &[u8]) -> Result<Value> {
    Ok(rpc.call("int_sendTransaction", json!([hex::encode(envelope)]))?)
}

/// `int tx send FILE`: the envelope is decoded here first (a file that is
/// not one is refused before it reaches the node), then sent.
pub fn send_file(file: &Path, rpc: &str) -> Result<Value> {
    let rpc = RpcClient::new(rpc)?;
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > int_schemas::TX_BYTES_MAX as u64 {
        bail!(
            "{}: {len} bytes, larger than any transaction ({} at most)",
            file.display(),
            int_schemas::TX_BYTES_MAX
        );
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let tx = decode_tx(&bytes)
        .map_err(|e| anyhow!("{} is not a transaction envelope: {e}", file.display()))?;
    let mut v = json!({
        "tx_hash": hex::encode(blake3::hash(tx.body_bytes).as_bytes()),
        "sender": hex::encode(tx.body.sender().0),
        "nonce": tx.body.nonce(),
        "chain_id": tx.body.chain_id(),
    });
    v["result"] = send(&rpc, &bytes)?;
    Ok(v)
}

/// Runs an `int tx` command; what to print.
pub fn run(cmd: TxCmd) -> Result<(Value, bool)> {
    match cmd {
        TxCmd::Transfer(a) => Ok((transfer(&a)?, a.json)),
        TxCmd::Send { file, rpc, json } => Ok((send_file(&file, &rpc)?, json)),
    }
}
