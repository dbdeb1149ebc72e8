//! The JSON-RPC server as a developer meets it: a devnet serving on an
//! ephemeral loopback port, plain HTTP requests, the spec's errors, and a
//! transfer sent through it and included.
//!
//! Runs the real binary.

mod common;

use std::time::Duration;

use common::child::Node;
use common::proof::check_account_proof;
use common::rpc::{http, metrics, req, request, sample};
use common::{devnet_args, devnet_validator, int_command, p};
use int_engine::crypto::bls::tx_message;
use int_schemas::{PayloadSpec, TxBodySpec, build_envelope, build_tx_body};
use serde_json::{Value, json};

#[test]
fn devnet_serves_json_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let d = p(dir.path());
    let node = Node::start(
        &mut int_command(&devnet_args(d, "12", &["--rpc-addr", "127.0.0.1:0"])),
        false,
    );
    let addr = node.rpc.clone();
    // Let a few blocks commit.
    std::thread::sleep(Duration::from_secs(2));

    let info = request(&addr, &req("int_chainInfo", json!([]), 1));
    assert_eq!(info["id"], 1, "{info}");
    let height = info["result"]["height"].as_u64().expect("height");
    assert!(height >= 1, "{info}");

    let b = request(&addr, &req("int_getBlock", json!([1]), 2));
    assert_eq!(b["result"]["height"], 1, "{b}");
    assert!(b["result"]["tx_count"].as_u64().is_some(), "{b}");
    assert_eq!(
        request(&addr, &req("int_getBlock", json!([height + 1000]), 3))["result"],
        Value::Null
    );
    let r = request(&addr, &req("int_getReceipt", json!([1, 0]), 4));
    assert!(r["result"]["status"].as_str().is_some(), "{r}");
    // The same receipt by the transaction's hash; an unknown hash is null.
    let hash = r["result"]["tx_hash"].as_str().unwrap().to_string();
    let by_hash = request(&addr, &req("int_getReceipt", json!([hash]), 4));
    assert_eq!(by_hash["result"], r["result"], "{by_hash}");
    let none = request(&addr, &req("int_getReceipt", json!(["00".repeat(32)]), 4));
    assert_eq!(none["result"], Value::Null, "{none}");
    let bad = request(&addr, &req("int_getReceipt", json!(["zz"]), 4));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    let proposer = b["result"]["proposer"].as_str().unwrap().to_string();
    let a = request(&addr, &req("int_getAccount", json!([proposer, true]), 5));
    assert_eq!(a["result"]["exists"], true, "{a}");
    assert_eq!(a["result"]["proof_ok"], true, "{a}");
    // Checked here, against the root the answer names, not on the node's word.
    assert!(check_account_proof(&a["result"]), "an inclusion proof: {a}");
    let absent = request(
        &addr,
        &req("int_getAccount", json!(["ab".repeat(32), true]), 5),
    );
    assert_eq!(absent["result"]["exists"], false, "{absent}");
    assert!(
        !check_account_proof(&absent["result"]),
        "an exclusion proof: {absent}"
    );

    let skus = request(
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
    let v = request(
        &addr,
        &json!({"jsonrpc": "1.0", "method": "int_chainInfo", "id": 7}),
    );
    assert_eq!(code(&v), Some(-32600), "{v}");
    let v = request(&addr, &req("int_nope", json!([]), 8));
    assert_eq!(code(&v), Some(-32601), "{v}");
    let v = request(&addr, &req("int_getAccount", json!(["abc"]), 9));
    assert_eq!(code(&v), Some(-32602), "{v}");
    let v = request(&addr, &req("int_sendTransaction", json!(["00ff"]), 10));
    assert_eq!(code(&v), Some(-32602), "{v}");
    // A batch: answers for the calls with an id, in order.
    let v = request(
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
    let text = metrics(&addr);
    let value = |name: &str| sample(&text, name);
    assert!(value("int_height") >= 1.0, "{text}");
    assert!(value("int_transactions_total") >= 1.0, "{text}");
    assert!(value("int_blocks_total") >= 1.0, "{text}");
    // Whatever `auto` picked, no batch the GPU was given fell back.
    assert_eq!(value("int_gpu_fallbacks_total"), 0.0, "{text}");
    for name in [
        "int_mempool_transactions",
        "int_mempool_dropped_total",
        "int_verify_seconds_total",
        "int_rejected_total",
        "int_gpu_batches_total",
        "int_gpu_fallbacks_total",
    ] {
        value(name);
        assert!(text.contains(&format!("# TYPE {name} ")), "{text}");
    }

    // A transaction signed by the validator (its devnet key, from
    // devnet.json; it holds the fees it earned, no INT) goes in through the
    // RPC and is included: it registers a resource kind the query then
    // knows.
    let sk = devnet_validator(dir.path());
    let me = sk.public_key().account_id();
    let account = |n| request(&addr, &req("int_getAccount", json!([hex::encode(me)]), n));
    let before = account(13)["result"].clone();
    let nonce = before["nonce"].as_u64().expect("validator nonce");
    let unknown = request(
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
    let sent = request(
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
    let known = request(
        &addr,
        &req("int_querySkus", json!({"kind": "rpc-probe"}), 16),
    );
    assert_eq!(known["result"]["count"], 0, "{known}");

    // The devnet stops by itself, successfully and without a panic.
    node.finish();
}
