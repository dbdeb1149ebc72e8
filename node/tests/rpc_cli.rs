//! The JSON-RPC server as a developer meets it: a devnet serving on an
//! ephemeral loopback port, plain HTTP requests, the spec's errors, and a
//! transfer sent through it and included.
//!
//! Runs the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, devnet_args, p};
use int_engine::crypto::bls::{SecretKey, tx_message};
use int_schemas::{PayloadSpec, TxBodySpec, build_envelope, build_tx_body};
use serde_json::{Value, json};

/// One HTTP request; (status, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn call(addr: &str, v: &Value) -> Value {
    let (status, body) = http(addr, "POST", "/", v.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn req(method: &str, params: Value, id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id})
}

#[test]
fn devnet_serves_json_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let mut child = Command::new(BIN)
        .args(devnet_args(d, "12", &["--rpc-addr", "127.0.0.1:0"]))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the devnet");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if let Some(a) = line.trim().strip_prefix("JSON-RPC on http://") {
            addr = Some(a.to_string());
            break;
        }
        line.clear();
    }
    let addr = addr.expect("the devnet names its RPC address");
    // Let a few blocks commit.
    std::thread::sleep(Duration::from_secs(2));

    let info = call(&addr, &req("int_chainInfo", json!([]), 1));
    assert_eq!(info["id"], 1, "{info}");
    let height = info["result"]["height"].as_u64().expect("height");
    assert!(height >= 1, "{info}");

    let b = call(&addr, &req("int_getBlock", json!([1]), 2));
    assert_eq!(b["result"]["height"], 1, "{b}");
    assert!(b["result"]["tx_count"].as_u64().is_some(), "{b}");
    assert_eq!(
        call(&addr, &req("int_getBlock", json!([height + 1000]), 3))["result"],
        Value::Null
    );
    let r = call(&addr, &req("int_getReceipt", json!([1, 0]), 4));
    assert!(r["result"]["status"].as_str().is_some(), "{r}");
    // The same receipt by the transaction's hash; an unknown hash is null.
    let hash = r["result"]["tx_hash"].as_str().unwrap().to_string();
    let by_hash = call(&addr, &req("int_getReceipt", json!([hash]), 4));
    assert_eq!(by_hash["result"], r["result"], "{by_hash}");
    let none = call(&addr, &req("int_getReceipt", json!(["00".repeat(32)]), 4));
    assert_eq!(none["result"], Value::Null, "{none}");
    let bad = call(&addr, &req("int_getReceipt", json!(["zz"]), 4));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    let proposer = b["result"]["proposer"].as_str().unwrap().to_string();
    let a = call(&addr, &req("int_getAccount", json!([proposer, true]), 5));
    assert_eq!(a["result"]["exists"], true, "{a}");
    assert_eq!(a["result"]["proof_ok"], true, "{a}");

    let skus = call(
        &addr,
        &req("int_querySkus", json!({"kind": "power", "limit": 3}), 6),
    );
    let list = skus["result"]["skus"].as_array().expect("skus");
    assert!(list.len() <= 3, "{skus}");
    assert!(list.iter().all(|s| s["kind"] == "power"), "{skus}");

    // The spec's errors.
    let code = |v: &Value| v["error"]["code"].as_i64();
    let (status, body) = http(&addr, "POST", "/", b"{not json");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code(&v), &v["id"]), (Some(-32700), &Value::Null), "{v}");
    let v = call(
        &addr,
        &json!({"jsonrpc": "1.0", "method": "int_chainInfo", "id": 7}),
    );
    assert_eq!(code(&v), Some(-32600), "{v}");
    let v = call(&addr, &req("int_nope", json!([]), 8));
    assert_eq!(code(&v), Some(-32601), "{v}");
    let v = call(&addr, &req("int_getAccount", json!(["abc"]), 9));
    assert_eq!(code(&v), Some(-32602), "{v}");
    let v = call(&addr, &req("int_sendTransaction", json!(["00ff"]), 10));
    assert_eq!(code(&v), Some(-32602), "{v}");
    // A batch: answers for the calls with an id, in order.
    let v = call(
        &addr,
        &json!([
            req("int_chainInfo", json!([]), 11),
            {"jsonrpc": "2.0", "method": "int_chainInfo"},
            req("int_nope", json!([]), 12),
        ]),
    );
    let ids: Vec<&Value> = v.as_array().unwrap().iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, vec![&json!(11), &json!(12)], "{v}");
    // Notifications only: nothing to answer.
    let (status, _) = http(
        &addr,
        "POST",
        "/",
        json!([{"jsonrpc": "2.0", "method": "int_chainInfo"}])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 204);
    // Not JSON-RPC's path or method.
    assert_eq!(http(&addr, "GET", "/", b"").0, 404);

    // Prometheus metrics.
    let (status, text) = http(&addr, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("int_height") >= 1.0, "{text}");
    assert!(value("int_transactions_total") >= 1.0, "{text}");
    assert!(value("int_blocks_total") >= 1.0, "{text}");
    for name in [
        "int_mempool_transactions",
        "int_verify_seconds_total",
        "int_rejected_total",
    ] {
        value(name);
        assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
    }

    // A transaction signed by the validator (its devnet key, from
    // devnet.json; it holds the fees it earned, no INT) goes in through the
    // RPC and is included: it registers a resource kind the query then
    // knows.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("devnet.json")).expect("devnet.json"),
    )
    .unwrap();
    let seed: [u8; 32] = hex::decode(file["validator_seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sk = SecretKey::from_seed(&seed);
    let me = sk.public_key().account_id();
    let account = |n| call(&addr, &req("int_getAccount", json!([hex::encode(me)]), n));
    let before = account(13)["result"].clone();
    let nonce = before["nonce"].as_u64().expect("validator nonce");
    let unknown = call(
        &addr,
        &req("int_querySkus", json!({"kind": "rpc-probe"}), 17),
    );
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let body = build_tx_body(&TxBodySpec {
        chain_id: 1,
        sender: me,
        nonce,
        fee: 1,
        payload: PayloadSpec::RegisterKind {
            name: "rpc-probe".into(),
        },
    });
    let env = build_envelope(&body, &sk.sign(&tx_message(1, &body)).to_bytes());
    let sent = call(
        &addr,
        &req("int_sendTransaction", json!([hex::encode(&env)]), 14),
    );
    assert_eq!(sent["result"]["nonce"], nonce, "{sent}");
    let mut included = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if account(15)["result"]["nonce"].as_u64() > Some(nonce) {
            included = true;
            break;
        }
    }
    assert!(included, "the transaction was not included");
    let known = call(
        &addr,
        &req("int_querySkus", json!({"kind": "rpc-probe"}), 16),
    );
    assert_eq!(known["result"]["count"], 0, "{known}");

    let out = child.wait_with_output().expect("devnet exits");
    assert!(out.status.success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("panicked"), "{rest}");
}
