//! `int keys` and `int tx` as an operator meets them: keystores created,
//! listed, exported and imported with the password from the environment;
//! clear errors for a wrong password, a malformed file and no password;
//! then transfers signed with a keystore key, sent to a running devnet
//! through JSON-RPC (directly, and as an envelope file), and found in the
//! chain's receipts under the hash the command printed.
//!
//! Runs the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::child::{Node, wait_for};
use common::rpc::{call, find_receipt, height};
use common::{PASSWORD, devnet_args, devnet_validator, int_command, json, p, run_pw, text};
use int_engine::crypto::bls::SecretKey;
use serde_json::json;

fn ok(args: &[&str]) -> String {
    run_pw(args, Some(PASSWORD), 0).0
}

#[test]
fn keys_new_list_export_import() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let d = p(&dir);

    let alice = json(&ok(&[
        "keys", "new", "--dir", d, "--name", "alice", "--json",
    ]));
    let alice_id = alice["account_id"].as_str().unwrap().to_string();
    assert_eq!(alice_id.len(), 64, "{alice}");
    assert_eq!(alice["kdf"], "scrypt");
    let file = dir.join("alice.json");
    assert_eq!(alice["file"], file.display().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "keystore mode {mode:o}");
    }
    // An EIP-2335 file: version 4, scrypt at the EIP's cost, our 96-byte key.
    let ks = json(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(ks["version"], 4);
    assert_eq!(ks["path"], "");
    assert_eq!(ks["crypto"]["kdf"]["params"]["n"], 262144);
    assert_eq!(ks["crypto"]["cipher"]["function"], "aes-128-ctr");
    assert_eq!(ks["pubkey"].as_str().unwrap().len(), 192);

    // Never overwritten.
    let before = std::fs::read(&file).unwrap();
    let (_, err) = run_pw(
        &["keys", "new", "--dir", d, "--name", "alice"],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // Plain output names the account and the file.
    let out = ok(&[
        "keys", "new", "--dir", d, "--name", "bob", "--kdf", "pbkdf2",
    ]);
    assert!(out.contains("account_id"), "{out}");
    assert!(out.contains("bob.json"), "{out}");

    // Import: a known secret from a file gives that key's account.
    let sk = SecretKey::from_seed(&[7u8; 32]);
    let secret_file = tmp.path().join("secret.hex");
    std::fs::write(&secret_file, format!("{}\n", hex::encode(sk.to_bytes()))).unwrap();
    let imp = json(&ok(&[
        "keys",
        "import",
        "--dir",
        d,
        "--name",
        "carol",
        "--kdf",
        "pbkdf2",
        "--json",
        p(&secret_file),
    ]));
    let carol_id = hex::encode(sk.public_key().account_id());
    assert_eq!(imp["account_id"], carol_id);
    // And from stdin.
    let mut child = int_command(&[
        "keys", "import", "--dir", d, "--name", "dave", "--kdf", "pbkdf2", "--json",
    ])
    .env("INT_KEYSTORE_PASSWORD", PASSWORD)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hex::encode(sk.to_bytes()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&text(&out.stdout))["account_id"], carol_id);
    // Not a secret key.
    std::fs::write(&secret_file, "00".repeat(32)).unwrap();
    let (_, err) = run_pw(
        &[
            "keys",
            "import",
            "--dir",
            d,
            "--name",
            "zero",
            p(&secret_file),
        ],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("not a BLS secret key"), "{err}");

    // A malformed file and an Ethereum-style (48-byte pubkey) entry do not
    // stop the listing; they say what is wrong with them.
    std::fs::write(dir.join("broken.json"), "{not json").unwrap();
    let list = json(&ok(&["keys", "list", "--dir", d, "--json"]));
    let rows = list.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "broken", "carol", "dave"], "{list}");
    assert_eq!(rows[0]["account_id"], alice_id.as_str());
    assert_eq!(rows[0]["public_key"].as_str().unwrap().len(), 192);
    assert_eq!(rows[1]["kdf"], "pbkdf2");
    assert!(
        rows[2]["error"]
            .as_str()
            .unwrap()
            .contains("not an EIP-2335 keystore"),
        "{list}"
    );
    assert_eq!(rows[3]["account_id"], carol_id.as_str());
    let plain = ok(&["keys", "list", "--dir", d]);
    assert!(plain.contains(&alice_id), "{plain}");
    assert!(
        plain.contains("broken") && plain.contains("unreadable"),
        "{plain}"
    );

    // Export prints the secret; its account is alice's.
    let (out, err) = run_pw(&["keys", "export", "alice", "--dir", d], Some(PASSWORD), 0);
    assert!(err.contains("warning"), "{err}");
    let secret: [u8; 32] = hex::decode(out.trim()).unwrap().try_into().unwrap();
    let sk_alice = SecretKey::from_bytes(&secret).unwrap();
    assert_eq!(hex::encode(sk_alice.public_key().account_id()), alice_id);
    let (out, _) = run_pw(&["keys", "export", "carol", "--dir", d], Some(PASSWORD), 0);
    assert_eq!(out.trim(), hex::encode(sk.to_bytes()));

    // Clear errors, no secret printed.
    let (out, err) = run_pw(&["keys", "export", "bob", "--dir", d], Some("nope"), 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("wrong password: checksum mismatch"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "broken", "--dir", d], Some(PASSWORD), 1);
    assert!(err.contains("not an EIP-2335 keystore"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "ghost", "--dir", d], Some(PASSWORD), 1);
    assert!(err.contains("does not exist"), "{err}");
    let (_, err) = run_pw(
        &["keys", "export", "../alice", "--dir", d],
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("key name"), "{err}");
    let (_, err) = run_pw(&["keys", "export", "alice", "--dir", d], None, 1);
    assert!(err.contains("INT_KEYSTORE_PASSWORD"), "{err}");
    let (_, err) = run_pw(&["keys", "new", "--dir", d, "--name", "e"], Some(""), 1);
    assert!(err.contains("empty password"), "{err}");
}

/// `int tx transfer` of `amount` INT from keystore `key` in `keys_dir` to
/// `to`, then `rest`.
fn transfer<'a>(
    key: &'a str,
    keys_dir: &'a str,
    to: &'a str,
    amount: &'a str,
    rest: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "tx",
        "transfer",
        "--key",
        key,
        "--keys-dir",
        keys_dir,
        "--to",
        to,
        "--amount",
        amount,
    ];
    args.extend_from_slice(rest);
    args
}

/// Waits until `id`'s committed nonce passes `nonce`.
fn wait_nonce_past(addr: &str, id: &str, nonce: u64) {
    wait_for(&format!("nonce {nonce} of {id} to be used"), || {
        call(addr, "int_getAccount", json!([id]))["nonce"].as_u64() > Some(nonce)
    });
}

fn import_validator(data_dir: &Path, keys: &str) -> String {
    let sk = devnet_validator(data_dir);
    let secret = data_dir.join("validator.hex");
    std::fs::write(&secret, hex::encode(sk.to_bytes())).unwrap();
    let v = json(&ok(&[
        "keys",
        "import",
        "--dir",
        keys,
        "--name",
        "validator",
        "--kdf",
        "pbkdf2",
        "--json",
        p(&secret),
    ]));
    std::fs::remove_file(&secret).unwrap();
    let id = hex::encode(sk.public_key().account_id());
    assert_eq!(v["account_id"], id.as_str());
    id
}

#[test]
fn transfers_reach_a_devnet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keys_dir = tmp.path().join("keys");
    let k = p(&keys_dir);

    // A receiver with no account yet, and errors that need no node.
    let fresh = json(&ok(&[
        "keys", "new", "--dir", k, "--name", "fresh", "--kdf", "pbkdf2", "--json",
    ]));
    let fresh_id = fresh["account_id"].as_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let (_, err) = run_pw(
        &transfer("fresh", k, &fresh_id, "1", &["--rpc", &dead, "--send"]),
        Some(PASSWORD),
        1,
    );
    assert!(err.contains("cannot reach the node at 127.0.0.1"), "{err}");
    let (_, err) = run_pw(
        &transfer("fresh", k, &fresh_id, "1", &[]),
        Some(PASSWORD),
        2,
    );
    assert!(err.contains("--send") && err.contains("--out"), "{err}");
    let junk = tmp.path().join("junk.tx");
    std::fs::write(&junk, b"not an envelope").unwrap();
    let (_, err) = run_pw(&["tx", "send", p(&junk), "--rpc", &dead], Some(PASSWORD), 1);
    assert!(err.contains("is not a transaction envelope"), "{err}");

    let node = Node::start(
        &mut int_command(&devnet_args(
            p(&data),
            "25",
            &["--rpc-addr", "127.0.0.1:0", "--mqtt-addr", "off"],
        )),
        false,
    );
    let addr = node.rpc.clone();
    let rpc = format!("http://{addr}");

    let validator = import_validator(&data, k);
    // A fresh key has no account: a clear error before any password.
    let (_, e) = run_pw(
        &transfer("fresh", k, &validator, "1", &["--rpc", &rpc, "--send"]),
        None,
        1,
    );
    assert!(e.contains("has no account on chain 1"), "{e}");

    // Chain id and nonce from the node; sent through int_sendTransaction.
    let start = height(&addr);
    let sent = json(&ok(&transfer(
        "validator",
        k,
        &fresh_id,
        "5",
        &["--rpc", &rpc, "--send", "--json"],
    )));
    assert_eq!(sent["sender"], validator.as_str(), "{sent}");
    assert_eq!(sent["chain_id"], 1, "{sent}");
    assert_eq!(sent["result"]["queued"], true, "{sent}");
    let nonce = sent["nonce"].as_u64().unwrap();
    assert_eq!(sent["result"]["nonce"], nonce, "{sent}");
    wait_nonce_past(&addr, &validator, nonce);
    // Included under the printed hash. The devnet's validator holds the GAS
    // it earned in fees and no INT, so the transfer is executed (nonce used,
    // fee paid) and fails for the balance; were it funded, the receiver
    // would hold the 5.
    let tx_hash = sent["tx_hash"].as_str().unwrap();
    let r = find_receipt(&addr, start, tx_hash).expect("a receipt with the printed hash");
    match r["status"].as_str().unwrap() {
        "InsufficientBalance" => {}
        "Ok" => assert_eq!(call(&addr, "int_getAccount", json!([fresh_id]))["int"], "5"),
        other => panic!("unexpected status {other}: {r}"),
    }
    assert_eq!(r["fee_charged"], "1", "{r}");

    // Signed to a file (chain id and nonce given: no node needed), then
    // sent with `int tx send`.
    let env = tmp.path().join("transfer.tx");
    let next = (nonce + 1).to_string();
    let saved = json(&ok(&transfer(
        "validator",
        k,
        &fresh_id,
        "3",
        &[
            "--chain-id",
            "1",
            "--nonce",
            &next,
            "--rpc",
            &dead,
            "--out",
            p(&env),
            "--json",
        ],
    )));
    assert_eq!(saved["nonce"], nonce + 1);
    assert!(std::fs::metadata(&env).unwrap().len() > 100);
    let start = height(&addr);
    let out = json(&ok(&["tx", "send", p(&env), "--rpc", &rpc, "--json"]));
    assert_eq!(out["tx_hash"], saved["tx_hash"], "{out}");
    assert_eq!(out["result"]["queued"], true, "{out}");
    wait_nonce_past(&addr, &validator, nonce + 1);
    let tx_hash = saved["tx_hash"].as_str().unwrap();
    assert!(find_receipt(&addr, start, tx_hash).is_some());

    // The devnet stops by itself, successfully and without a panic.
    node.finish();
}
