//! The tests' own small HTTP and JSON-RPC client (apart from the one under
//! test), for a node's RPC server on `HOST:PORT`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

/// One HTTP request; (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the RPC");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the RPC's response");
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

/// A JSON-RPC 2.0 request.
pub fn req(method: &str, params: Value, id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id})
}

/// POSTs `v` (a request, a batch, anything); expects HTTP 200 and returns
/// the whole JSON response, errors included.
pub fn request(addr: &str, v: &Value) -> Value {
    let (status, body) = http(addr, "POST", "/", v.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A JSON-RPC call that must succeed; its result.
pub fn call(addr: &str, method: &str, params: Value) -> Value {
    let v = request(addr, &req(method, params, 1));
    assert!(v.get("error").is_none(), "{method} failed: {v}");
    v["result"].clone()
}

/// The chain's height, from `int_chainInfo`.
pub fn height(addr: &str) -> u64 {
    call(addr, "int_chainInfo", json!([]))["height"]
        .as_u64()
        .expect("height")
}

/// The receipt with `tx_hash` (hex) in blocks `from..=head`.
pub fn find_receipt(addr: &str, from: u64, tx_hash: &str) -> Option<Value> {
    for h in from..=height(addr) {
        let n = call(addr, "int_getBlock", json!([h]))["tx_count"]
            .as_u64()
            .unwrap_or(0);
        for i in 0..n {
            let r = call(addr, "int_getReceipt", json!([h, i]));
            if r["tx_hash"] == tx_hash {
                return Some(r);
            }
        }
    }
    None
}

/// The value of an unlabelled or labelled sample in Prometheus text.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The Prometheus text of `GET /metrics`.
pub fn metrics(addr: &str) -> String {
    let (status, text) = http(addr, "GET", "/metrics", b"");
    assert_eq!(status, 200, "{text}");
    text
}
