//! `int run --config FILE` as an operator meets it: a validator key made
//! with `int keys new`, the config `int config default` prints with its
//! data dir, ports and a funded genesis account edited in, the node
//! producing blocks and including a transfer sent through its JSON-RPC,
//! then killed and started again to continue from its head.
//!
//! Runs the real binary.

mod common;

use std::path::Path;

use common::child::{Node, wait_for};
use common::rpc::{call, find_receipt, height};
use common::{PASSWORD, int_command, json, p, run, run_pw};
use int_engine::crypto::bls::SecretKey;
use serde_json::json;

/// Runs `int ARGS` with the keystore password; expects exit `code` and no
/// panic; (stdout, stderr).
fn run_with_pw(args: &[&str], code: i32) -> (String, String) {
    run_pw(args, Some(PASSWORD), code)
}

/// Starts `int run --config FILE ARGS`, with the keystore password set;
/// the node, once it has named its RPC and MQTT addresses on stderr.
fn start(config: &Path, args: &[&str]) -> Node {
    Node::start(
        int_command(&["run", "--config", p(config)])
            .args(args)
            .env("INT_KEYSTORE_PASSWORD", PASSWORD),
        true,
    )
}

fn int_balance(addr: &str, id: &[u8; 32]) -> u128 {
    call(addr, "int_getAccount", json!([hex::encode(id)]))["int"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The field `key = ...` of the config text replaced by `key = value`
/// (the first line that sets it).
fn set(config: &str, key: &str, value: &str) -> String {
    let mut done = false;
    let out: Vec<String> = config
        .lines()
        .map(|l| {
            if !done && l.starts_with(&format!("{key} = ")) {
                done = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "no {key} in the default config");
    out.join("\n") + "\n"
}

#[test]
fn run_from_a_config_file_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let data = dir.path().join("data");

    // The validator's keystore.
    let (out, _) = run_with_pw(
        &[
            "keys",
            "new",
            "--dir",
            p(&keys),
            "--name",
            "validator",
            "--kdf",
            "pbkdf2",
            "--json",
        ],
        0,
    );
    let made = json(&out);
    let validator = made["account_id"].as_str().expect("account_id").to_string();

    // A funded account whose key the test holds, registered at genesis,
    // and a receiver known only by its id.
    let sk = SecretKey::from_seed(&[42u8; 32]);
    let me = sk.public_key().account_id();
    let to = [7u8; 32];

    let (default, _) = run(&["config", "default"], 0);
    let mut config = default.clone();
    config = set(&config, "data_dir", &format!("{:?}", p(&data)));
    config = set(&config, "block_ms", "100");
    config = config.replace("addr = \"127.0.0.1:8645\"", "addr = \"127.0.0.1:0\"");
    config = config.replace("addr = \"127.0.0.1:1883\"", "addr = \"127.0.0.1:0\"");
    config = set(
        &config,
        "keystore",
        &format!("{:?}", p(&keys.join("validator.json"))),
    );
    config = set(
        &config,
        "accounts",
        &format!(
            "[\n  {{ public_key = \"{}\", int = \"1000000\", gas = \"1000000\" }},\n  {{ id = \"{}\", int = \"5\" }},\n]",
            hex::encode(sk.public_key().to_bytes()),
            hex::encode(to)
        ),
    );
    assert_ne!(config, default);
    let file = dir.path().join("int.toml");
    std::fs::write(&file, &config).unwrap();

    // First run: blocks, and a transfer through the RPC.
    let mut node = start(&file, &[]);
    let rpc = node.rpc.clone();
    let info = call(&rpc, "int_chainInfo", json!([]));
    assert_eq!(info["chain_id"], 1, "{info}");
    let h0 = height(&rpc);
    wait_for("two blocks", || height(&rpc) >= h0 + 2);
    let acct = call(&rpc, "int_getAccount", json!([hex::encode(me)]));
    assert_eq!(acct["exists"], true, "{acct}");
    assert!(
        acct["public_key"].is_string(),
        "registered at genesis: {acct}"
    );
    let v = call(&rpc, "int_getAccount", json!([validator]));
    assert_eq!(v["exists"], true, "the validator is in genesis: {v}");
    assert_eq!(int_balance(&rpc, &to), 5);

    // The funded key into a keystore, and a transfer the way an operator
    // makes one: `int tx transfer --send` through the node's RPC.
    let secret = dir.path().join("secret.hex");
    std::fs::write(&secret, hex::encode(sk.to_bytes())).unwrap();
    run_with_pw(
        &[
            "keys",
            "import",
            "--dir",
            p(&keys),
            "--name",
            "funded",
            "--kdf",
            "pbkdf2",
            p(&secret),
        ],
        0,
    );
    let url = format!("http://{rpc}");
    let (out, _) = run_with_pw(
        &[
            "tx",
            "transfer",
            "--to",
            &hex::encode(to),
            "--amount",
            "1234",
            "--key",
            "funded",
            "--keys-dir",
            p(&keys),
            "--rpc",
            &url,
            "--send",
            "--json",
        ],
        0,
    );
    let sent = json(&out);
    let tx_hash = sent["tx_hash"].as_str().expect("tx_hash").to_string();
    wait_for("the receiver's balance", || {
        int_balance(&rpc, &to) == 5 + 1234
    });
    // Its receipt, found by the hash `int tx transfer` printed, says Ok.
    let receipt = call(&rpc, "int_getReceipt", json!([tx_hash]));
    assert_eq!(receipt["status"], "Ok", "{receipt}");
    assert_eq!(receipt["tx_hash"], json!(tx_hash), "{receipt}");
    assert_eq!(find_receipt(&rpc, h0, &tx_hash), Some(receipt));
    assert_eq!(int_balance(&rpc, &me), 1_000_000 - 1234);

    // Killed (no clean stop), then started again on the same data dir.
    let before = height(&rpc);
    node.kid.0.kill().expect("kill int run");
    node.kid.0.wait().expect("reap int run");
    let node = start(&file, &["--duration", "3", "--json"]);
    let rpc = node.rpc.clone();
    let again = height(&rpc);
    assert!(again >= before, "restarted at {again}, below {before}");
    wait_for("a block after the restart", || height(&rpc) > again);
    assert_eq!(int_balance(&rpc, &to), 5 + 1234, "state kept");
    // It stops by itself, successfully and without a panic.
    let stdout = node.finish();
    let summary = json(&stdout);
    assert!(
        summary["start_height"].as_u64() >= Some(before),
        "{summary}"
    );
    assert!(
        summary["height"].as_u64() > summary["start_height"].as_u64(),
        "{summary}"
    );
    assert_eq!(summary["validator"], validator.as_str(), "{summary}");

    // The same data dir under another chain id is refused.
    std::fs::write(&file, set(&config, "chain_id", "2")).unwrap();
    let (_, e) = run_with_pw(&["run", "--config", p(&file), "--duration", "1"], 1);
    assert!(e.contains("chain id 2"), "{e}");
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("int.toml");
    let (default, _) = run(&["config", "default"], 0);
    for (text_, expect) in [
        (format!("{default}\nport = 1\n"), "unknown field `port`"),
        (
            default.replace("127.0.0.1:8645", "localhost"),
            "rpc.addr: \"localhost\" is not IP:PORT",
        ),
        (
            default.replace("accounts = []", "accounts = [ { id = \"xyz\" } ]"),
            "genesis.accounts[0].id: not hex",
        ),
        // The keystore is missing: named, before anything is written.
        (default.clone(), "validator.keystore"),
    ] {
        std::fs::write(&file, &text_).unwrap();
        let (_, e) = run_with_pw(&["run", "--config", p(&file), "--duration", "1"], 1);
        assert!(e.contains(expect), "{expect}: {e}");
    }
    assert!(
        !dir.path().join("int-node").exists(),
        "no data dir for a refused config"
    );
    let (_, e) = run_with_pw(&["run", "--config", p(&dir.path().join("none.toml"))], 1);
    assert!(e.contains("none.toml"), "{e}");
}
