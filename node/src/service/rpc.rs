//! JSON-RPC 2.0 over HTTP/1.1 for developers and wallets, on a `mio` event
//! loop (no async runtime), loopback by default.
//!
//! `GET /metrics` answers the node's metrics in Prometheus' text format
//! (height, accounts, blocks, transactions, mempool, time in signature
//! checks, ingress refusals). `POST /` takes a request object or a batch (an array, at most
//! [`BATCH_MAX`]); the methods read the committed state at the head:
//!
//! | method | params | result |
//! |---|---|---|
//! | `int_chainInfo` | none | chain id, height, state root, accounts |
//! | `int_getAccount` | `[id_hex, proof?]` | balances, nonce, key; with `proof`, a Merkle proof against the head's state root |
//! | `int_getBlock` | `[height]` | header fields and the transaction count |
//! | `int_getReceipt` | `[tx_hash_hex]` or `[height, index]` | the transaction's hash, height, index, status (name and code) and fee; `null` if it is not in a block |
//! | `int_querySkus` | `{kind?, near?, max_price?, limit?}` | SKUs on offer, cheapest first (as `int market list --json`) |
//! | `int_sendTransaction` | `[envelope_hex]` | the envelope is decoded and handed to the node's ingress; its sender and nonce |
//!
//! Errors are the spec's: -32700 parse error, -32600 invalid request,
//! -32601 method not found, -32602 invalid params, -32603 internal error;
//! and -32005 ([`QUEUE_FULL`]) when the node's transaction queue is full.
//! A batch of notifications only is answered `204 No Content`.
//!
//! HTTP is parsed with `httparse` (headers) and a `Content-Length` body;
//! every response closes its connection. Bounds: at most
//! [`CONNECTIONS_MAX`] connections (more are closed at accept), a request
//! of at most [`REQUEST_BYTES_MAX`] (`413` past it) with a head of at most
//! [`HEAD_BYTES_MAX`] (`431` past it), [`BATCH_MAX`] calls a batch; a
//! connection that makes no progress for [`IDLE_TIMEOUT`] is closed, and so
//! is one whose request is not all in after [`REQUEST_TIMEOUT`] (a client
//! dripping a byte at a time). A malformed request answers that client only.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use int_engine::storage::Storage;
use int_schemas::{AccountId, decode_block, decode_receipts, decode_tx};
use int_systems::market::{self, SkuQuery};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

/// Where `int devnet` and `int run` serve JSON-RPC unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8645";
/// Most open connections.
pub const CONNECTIONS_MAX: usize = 256;
/// Largest request, headers and body.
pub const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Largest request head (request line and headers).
pub const HEAD_BYTES_MAX: usize = 16 << 10;
/// A connection that neither sends nor takes a byte for this long is
/// closed, so an idle client does not hold one of the
/// [`CONNECTIONS_MAX`] slots for ever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be all in this long after its connection opened (three
/// idle timeouts), however steadily its bytes trickle in.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most calls in one batch.
pub const BATCH_MAX: usize = 100;
/// The error of `int_sendTransaction` when the node's transaction queue is
/// full (the server-error range the spec leaves to implementations).
pub const QUEUE_FULL: i64 = -32005;
/// Most SKUs one `int_querySkus` returns.
pub const SKUS_MAX: usize = 1000;

const LISTENER: Token = Token(usize::MAX);

/// Where accepted envelopes go, as (sender, envelope) batches: a bounded
/// queue the node drains into its ingress. A full queue answers
/// [`QUEUE_FULL`]; the event loop never waits on it.
pub type Submit = SyncSender<Vec<(AccountId, Vec<u8>)>>;

/// What the methods read and where transactions go.
pub struct RpcCtx<'a> {
    /// The committed state; each call reads one snapshot of it.
    pub store: &'a dyn Storage,
    /// The chain served.
    pub chain_id: u32,
    /// The node's ingress (sender, envelope); `None`: read-only.
    pub submit: Option<Submit>,
    /// `GET /metrics`: the node's metrics in Prometheus' text format;
    /// `None`: 404.
    pub metrics: Option<&'a (dyn Fn() -> String + Sync)>,
}

/// A JSON-RPC error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The spec's code.
    pub code: i64,
    /// What went wrong.
    pub message: String,
}

fn err(code: i64, message: impl Into<String>) -> RpcError {
    RpcError {
        code,
        message: message.into(),
    }
}

fn invalid_params(m: impl Into<String>) -> RpcError {
    err(-32602, m)
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    err(-32603, format!("internal error: {e}"))
}

fn response(id: Value, r: Result<Value, RpcError>) -> Value {
    match r {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "error": {"code": e.code, "message": e.message},
            "id": id,
        }),
    }
}

/// The answer to an HTTP body: `None` when nothing is to be returned (a
/// notification, or a batch of them).
pub fn handle_body(ctx: &RpcCtx<'_>, body: &[u8]) -> Option<Value> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(response(
                Value::Null,
                Err(err(-32700, format!("parse error: {e}"))),
            ));
        }
    };
    match v {
        Value::Array(calls) => {
            if calls.is_empty() {
                return Some(response(Value::Null, Err(err(-32600, "empty batch"))));
            }
            if calls.len() > BATCH_MAX {
                return Some(response(
                    Value::Null,
                    Err(err(
                        -32600,
                        format!("a batch holds at most {BATCH_MAX} calls"),
                    )),
                ));
            }
            let out: Vec<Value> = calls.iter().filter_map(|c| handle_call(ctx, c)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => handle_call(ctx, &other),
    }
}

/// One call; `None` for a notification (no `id`).
fn handle_call(ctx: &RpcCtx<'_>, call: &Value) -> Option<Value> {
    let Some(obj) = call.as_object() else {
        return Some(response(
            Value::Null,
            Err(err(-32600, "a call is an object")),
        ));
    };
    let id = obj.get("id").cloned();
    let id_ok = matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    let params = obj.get("params");
    let valid = obj.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
        && obj.get("method").is_some_and(Value::is_string)
        && id_ok
        && params.is_none_or(|p| p.is_array() || p.is_object());
    if !valid {
        let id = if id_ok {
            id.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        return Some(response(
            id,
            Err(err(
                -32600,
                "invalid request: needs jsonrpc \"2.0\", a method name, params as an array or object, an id as a number, string or null",
            )),
        ));
    }
    let method = obj
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let r = dispatch(ctx, method, params.unwrap_or(&Value::Null));
    // A notification gets no answer, whatever happened.
    id.map(|id| response(id, r))
}

/// The `i`th positional parameter.
fn arg(params: &Value, i: usize) -> Option<&Value> {
    params.as_array().and_then(|a| a.get(i))
}

fn hex32(v: Option<&Value>, what: &str) -> Result<[u8; 32], RpcError> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params(format!("{what}: a hex string")))?;
    hex::decode(s.strip_prefix("0x").unwrap_or(s))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid_params(format!("{what}: 32 bytes in hex (64 digits)")))
}

fn uint(v: Option<&Value>, what: &str) -> Result<u64, RpcError> {
    v.and_then(Value::as_u64)
        .ok_or_else(|| invalid_params(format!("{what}: a non-negative integer")))
}

/// Times `int_getAccount` reads again when blocks commit under its proof.
const STALE_RETRIES_MAX: usize = 8;

fn dispatch(ctx: &RpcCtx<'_>, method: &str, params: &Value) -> Result<Value, RpcError> {
    // Every read of this call sees one version of the state, whatever the
    // block loop commits meanwhile.
    let view = ctx.store.snapshot().map_err(internal)?;
    let view = &*view;
    let head = || {
        view.head(ctx.chain_id)
            .map_err(internal)?
            .ok_or_else(|| err(-32603, format!("chain {} has no blocks", ctx.chain_id)))
    };
    match method {
        "int_chainInfo" => {
            let h = head()?;
            Ok(json!({
                "chain_id": ctx.chain_id,
                "height": h.height,
                "state_root": hex::encode(h.state_root),
                "accounts": h.accounts,
            }))
        }
        "int_getAccount" => {
            let id = hex32(arg(params, 0), "params[0] (account id)")?;
            let proof = match arg(params, 1) {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| invalid_params("params[1] (proof): a boolean"))?,
            };
            // A proof comes from the state log as it is now: when a block
            // commits between this call's snapshot and the proof, the
            // account is read again from a newer snapshot (a bounded
            // number of times).
            let mut answer = crate::cli::state::account_at_head(view, ctx.chain_id, &id, proof);
            for _ in 0..STALE_RETRIES_MAX {
                let stale = answer.as_ref().is_err_and(|e| {
                    e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<int_engine::storage::StorageError>(),
                            Some(int_engine::storage::StorageError::StaleSnapshot { .. })
                        )
                    })
                });
                if !stale {
                    break;
                }
                let fresh = ctx.store.snapshot().map_err(internal)?;
                answer = crate::cli::state::account_at_head(&*fresh, ctx.chain_id, &id, proof);
            }
            answer.map_err(internal)
        }
        "int_getBlock" => {
            let height = uint(arg(params, 0), "params[0] (height)")?;
            let Some(bytes) = view.block(ctx.chain_id, height).map_err(internal)? else {
                return Ok(Value::Null);
            };
            let b = decode_block(&bytes).map_err(internal)?;
            let h = b.header;
            Ok(json!({
                "height": h.height(),
                "hash": hex::encode(blake3::hash(b.header_bytes).as_bytes()),
                "parent_hash": hex::encode(h.parent_hash().0),
                "state_root": hex::encode(h.state_root().0),
                "tx_root": hex::encode(h.tx_root().0),
                "receipts_root": hex::encode(h.receipts_root().0),
                "time_ms": h.time_ms(),
                "proposer": hex::encode(h.proposer().0),
                "tx_count": h.tx_count(),
            }))
        }
        "int_getReceipt" => {
            let (height, index) = if arg(params, 0).is_some_and(Value::is_string) {
                let hash = hex32(arg(params, 0), "params[0] (tx hash)")?;
                match view.tx_location(ctx.chain_id, &hash).map_err(internal)? {
                    Some((h, i)) => (h, u64::from(i)),
                    None => return Ok(Value::Null),
                }
            } else {
                (
                    uint(arg(params, 0), "params[0] (height, or a tx hash)")?,
                    uint(arg(params, 1), "params[1] (index)")?,
                )
            };
            let Some(bytes) = view.receipts(ctx.chain_id, height).map_err(internal)? else {
                return Ok(Value::Null);
            };
            let rs = decode_receipts(&bytes).map_err(internal)?;
            let list = rs.receipts();
            if index >= list.len() as u64 {
                return Ok(Value::Null);
            }
            let r = list.get(index as usize);
            Ok(json!({
                "tx_hash": hex::encode(r.tx_hash().0),
                "height": r.height(),
                "index": r.index(),
                "status": r.status().variant_name().unwrap_or("?"),
                "code": r.status().0,
                "fee_charged": int_schemas::amount(r.fee_charged()).to_string(),
            }))
        }
        "int_querySkus" => {
            let p = if params.is_null() { &json!({}) } else { params };
            let Some(p) = p.as_object() else {
                return Err(invalid_params(
                    "params: an object {kind, near, max_price, limit}",
                ));
            };
            let kind = match p.get("kind") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(
                    market::kind_by_name(view, ctx.chain_id, name)
                        .map_err(internal)?
                        .ok_or_else(|| invalid_params(format!("unknown kind {name:?}")))?,
                ),
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|k| u16::try_from(k).ok())
                        .ok_or_else(|| invalid_params("kind: a name or a number below 65536"))?,
                ),
            };
            let near = match p.get("near") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) if int_schemas::market::is_geohash(s, 0) => s.clone(),
                Some(_) => return Err(invalid_params("near: a geohash prefix")),
            };
            let max_price = match p.get("max_price") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_str()
                        .and_then(|s| s.parse::<u128>().ok())
                        .or_else(|| v.as_u64().map(u128::from))
                        .ok_or_else(|| {
                            invalid_params("max_price: an integer (or its decimal string)")
                        })?,
                ),
            };
            let limit = match p.get("limit") {
                None | Some(Value::Null) => 50,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=SKUS_MAX as u64).contains(n))
                    .ok_or_else(|| invalid_params(format!("limit: 1 to {SKUS_MAX}")))?
                    as usize,
            };
            let q = SkuQuery {
                kind,
                near,
                max_price,
                limit,
            };
            let h = head()?;
            let skus = market::query(view, ctx.chain_id, &q).map_err(internal)?;
            let rows = skus
                .iter()
                .map(|v| crate::cli::market::view_json(view, ctx.chain_id, v))
                .collect::<Result<Vec<_>>>()
                .map_err(internal)?;
            Ok(json!({"height": h.height, "count": rows.len(), "skus": rows}))
        }
        "int_sendTransaction" => {
            let s = arg(params, 0)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_params("params[0]: the envelope in hex"))?;
            let bytes = hex::decode(s.strip_prefix("0x").unwrap_or(s))
                .map_err(|e| invalid_params(format!("params[0] is not hex: {e}")))?;
            let tx = decode_tx(&bytes)
                .map_err(|e| invalid_params(format!("not a transaction envelope: {e}")))?;
            let sender = tx.body.sender().0;
            let nonce = tx.body.nonce();
            let Some(submit) = &ctx.submit else {
                return Err(err(-32603, "this node takes no transactions"));
            };
            // Never blocks the event loop: a full queue is the client's to
            // retry.
            submit
                .try_send(vec![(sender, bytes)])
                .map_err(|e| match e {
                    TrySendError::Full(_) => {
                        err(QUEUE_FULL, "the node's transaction queue is full; retry")
                    }
                    TrySendError::Disconnected(_) => err(-32603, "the node is stopping"),
                })?;
            Ok(json!({"sender": hex::encode(sender), "nonce": nonce, "queued": true}))
        }
        _ => Err(err(-32601, format!("method not found: {method}"))),
    }
}

// ---------------------------------------------------------------------------
// HTTP on mio.
// ---------------------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// A response is queued: no more input is read.
    answered: bool,
    /// The request's whole length, once its head is parsed: it is not
    /// parsed again before that many bytes are in.
    need: Option<usize>,
    /// The last byte read or written (or the accept).
    active: Instant,
    /// The accept.
    opened: Instant,
}

/// What a request's bytes so far amount to.
enum Parsed {
    /// More bytes needed: the request's whole length when the head is in.
    Partial(Option<usize>),
    /// A full response to send.
    Respond(Vec<u8>),
}

fn http(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Parses the request in `input` and answers it when complete.
fn parse_request(ctx: &RpcCtx<'_>, input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > HEAD_BYTES_MAX => {
            return Parsed::Respond(http(
                "431 Request Header Fields Too Large",
                "text/plain",
                format!("request heads are at most {HEAD_BYTES_MAX} bytes\n").as_bytes(),
            ));
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial(None),
        Err(e) => {
            return Parsed::Respond(http(
                "400 Bad Request",
                "text/plain",
                format!("bad request: {e}\n").as_bytes(),
            ));
        }
    };
    if req.method == Some("GET") && req.path == Some("/metrics") {
        return Parsed::Respond(match ctx.metrics {
            Some(m) => http("200 OK", "text/plain; version=0.0.4", m().as_bytes()),
            None => http("404 Not Found", "text/plain", b"no metrics here\n"),
        });
    }
    if req.method != Some("POST") || req.path != Some("/") {
        return Parsed::Respond(http(
            "404 Not Found",
            "text/plain",
            b"JSON-RPC 2.0: POST /\n",
        ));
    }
    let length = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let Some(length) = length else {
        return Parsed::Respond(http(
            "411 Length Required",
            "text/plain",
            b"a Content-Length is required\n",
        ));
    };
    if head_len.saturating_add(length) > REQUEST_BYTES_MAX {
        return Parsed::Respond(http(
            "413 Payload Too Large",
            "text/plain",
            format!("requests are at most {REQUEST_BYTES_MAX} bytes\n").as_bytes(),
        ));
    }
    let Some(body) = input.get(head_len..head_len + length) else {
        return Parsed::Partial(Some(head_len + length));
    };
    match handle_body(ctx, body) {
        Some(v) => Parsed::Respond(http("200 OK", "application/json", v.to_string().as_bytes())),
        None => Parsed::Respond(http("204 No Content", "application/json", b"")),
    }
}

/// Binds `addr`; when it is taken, an ephemeral port on the same address
/// (logged), so a second node on one machine still serves.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    bind_service(addr, "RPC")
}

/// Binds `addr` for the service `what` (for messages); when the port is
/// taken, a free port on the same interface instead, with a warning.
pub fn bind_service(addr: SocketAddr, what: &str) -> Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == ErrorKind::AddrInUse && addr.port() != 0 => {
            let any = SocketAddr::new(addr.ip(), 0);
            let l = std::net::TcpListener::bind(any)
                .with_context(|| format!("binding the {what} to {any}"))?;
            tracing::warn!(%addr, bound = %l.local_addr()?, "{what} port in use; serving on another");
            Ok(l)
        }
        Err(e) => Err(e).with_context(|| format!("binding the {what} to {addr}")),
    }
}

/// Serves `listener` until `stop` is set.
pub fn serve(listener: std::net::TcpListener, ctx: &RpcCtx<'_>, stop: &AtomicBool) -> Result<()> {
    serve_with(listener, ctx, stop, IDLE_TIMEOUT)
}

/// [`REQUEST_TIMEOUT`] in idle timeouts.
const REQUEST_TIMEOUT_IDLES: u32 = 3;
const _: () =
    assert!(IDLE_TIMEOUT.as_secs() * REQUEST_TIMEOUT_IDLES as u64 == REQUEST_TIMEOUT.as_secs());

/// [`serve`], closing connections idle for `idle` (and requests not all in
/// after three times that).
fn serve_with(
    listener: std::net::TcpListener,
    ctx: &RpcCtx<'_>,
    stop: &AtomicBool,
    idle: Duration,
) -> Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        conns.retain(|_, c| {
            let live = c.active.elapsed() < idle
                && (c.answered || c.opened.elapsed() < idle * REQUEST_TIMEOUT_IDLES);
            if !live {
                let _ = poll.registry().deregister(&mut c.stream);
            }
            live
        });
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            if conns.len() >= CONNECTIONS_MAX {
                                // Closed at once: the bound holds.
                                continue;
                            }
                            let t = Token(next);
                            next = (next + 1) % (usize::MAX - 1);
                            poll.registry().register(
                                &mut stream,
                                t,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns.insert(
                                t,
                                Conn {
                                    stream,
                                    input: Vec::new(),
                                    output: Vec::new(),
                                    written: 0,
                                    answered: false,
                                    need: None,
                                    active: Instant::now(),
                                    opened: Instant::now(),
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(%e, "RPC accept failed");
                            break;
                        }
                    }
                }
                continue;
            }
            let t = ev.token();
            let Some(c) = conns.get_mut(&t) else {
                continue;
            };
            let done = drive(ctx, c, &mut buf);
            if done && let Some(mut c) = conns.remove(&t) {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    }
    Ok(())
}

/// Reads, answers and writes what the connection allows now; `true` when
/// it is finished (answered and flushed, closed, or failed).
fn drive(ctx: &RpcCtx<'_>, c: &mut Conn, buf: &mut [u8]) -> bool {
    while !c.answered {
        match c.stream.read(buf) {
            Ok(0) => return true,
            Ok(n) => {
                c.active = Instant::now();
                c.input.extend_from_slice(&buf[..n]);
                if c.need.is_some_and(|need| c.input.len() < need) {
                    continue;
                }
                let parsed = if c.input.len() > REQUEST_BYTES_MAX {
                    Parsed::Respond(http(
                        "413 Payload Too Large",
                        "text/plain",
                        b"request too large\n",
                    ))
                } else {
                    parse_request(ctx, &c.input)
                };
                match parsed {
                    Parsed::Partial(need) => c.need = need,
                    Parsed::Respond(out) => {
                        c.output = out;
                        c.answered = true;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    while c.answered && c.written < c.output.len() {
        match c.stream.write(&c.output[c.written..]) {
            Ok(0) => return true,
            Ok(n) => {
                c.written += n;
                c.active = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
    c.answered && c.written == c.output.len()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;

    use int_engine::crypto::bls::{SecretKey, tx_message};
    use int_schemas::{PayloadSpec, TxBodySpec, build_envelope, build_tx_body};

    use super::*;

    fn with_ctx(f: impl FnOnce(&RpcCtx<'_>)) {
        let dir = tempfile::tempdir().unwrap();
        let store = int_engine::storage::open(dir.path()).unwrap();
        let ctx = RpcCtx {
            store: &*store,
            chain_id: 1,
            submit: None,
            metrics: None,
        };
        f(&ctx);
    }

    /// Runs `f` against a server on a free port with idle timeout `idle`,
    /// stopping the server after.
    fn with_server(idle: Duration, f: impl FnOnce(SocketAddr)) {
        with_ctx(|ctx| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = AtomicBool::new(false);
            /// Stops the server even when `f` panics, so the test fails
            /// instead of waiting for it.
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            std::thread::scope(|s| {
                s.spawn(|| serve_with(listener, ctx, &stop, idle).unwrap());
                let _stop = StopOnDrop(&stop);
                f(addr);
            });
        });
    }

    fn answer(ctx: &RpcCtx<'_>, body: &str) -> Value {
        handle_body(ctx, body.as_bytes()).expect("an answer")
    }

    #[test]
    fn requests_get_the_specs_errors() {
        with_ctx(|ctx| {
            let code = |v: &Value| v["error"]["code"].as_i64();
            assert_eq!(code(&answer(ctx, "{")), Some(-32700));
            assert_eq!(code(&answer(ctx, "[]")), Some(-32600));
            assert_eq!(code(&answer(ctx, "7")), Some(-32600));
            for bad in [
                r#"{"method":"int_chainInfo","id":1}"#,
                r#"{"jsonrpc":"2.0","id":1}"#,
                r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
                r#"{"jsonrpc":"2.0","method":"int_chainInfo","params":3,"id":1}"#,
                r#"{"jsonrpc":"2.0","method":"int_chainInfo","id":[1]}"#,
            ] {
                assert_eq!(code(&answer(ctx, bad)), Some(-32600), "{bad}");
            }
            let v = answer(ctx, r#"{"jsonrpc":"2.0","method":"x","id":"a"}"#);
            assert_eq!((code(&v), &v["id"]), (Some(-32601), &json!("a")));
            // No blocks yet: an internal error, not a panic.
            let v = answer(ctx, r#"{"jsonrpc":"2.0","method":"int_chainInfo","id":1}"#);
            assert_eq!(code(&v), Some(-32603));
            for params in [
                r#"[]"#,
                r#"["zz"]"#,
                r#"["00"]"#,
                r#"["0000000000000000000000000000000000000000000000000000000000000000", 1]"#,
            ] {
                let body = format!(
                    r#"{{"jsonrpc":"2.0","method":"int_getAccount","params":{params},"id":1}}"#
                );
                assert_eq!(code(&answer(ctx, &body)), Some(-32602), "{params}");
            }
            let v = answer(
                ctx,
                r#"{"jsonrpc":"2.0","method":"int_querySkus","params":{"limit":0},"id":1}"#,
            );
            assert_eq!(code(&v), Some(-32602));
            // Notifications are not answered, alone or in a batch.
            assert!(handle_body(ctx, br#"{"jsonrpc":"2.0","method":"x"}"#).is_none());
            assert!(handle_body(ctx, br#"[{"jsonrpc":"2.0","method":"x"}]"#).is_none());
            let big = format!(
                "[{}]",
                vec![r#"{"jsonrpc":"2.0","method":"x","id":1}"#; BATCH_MAX + 1].join(",")
            );
            assert_eq!(code(&answer(ctx, &big)), Some(-32600));
        });
    }

    #[test]
    fn a_sent_envelope_reaches_ingress_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = int_engine::storage::open(dir.path()).unwrap();
        let (tx, rx) = sync_channel(1);
        let ctx = RpcCtx {
            store: &*store,
            chain_id: 1,
            submit: Some(tx),
            metrics: None,
        };
        let sk = SecretKey::from_seed(&[5; 32]);
        let sender = sk.public_key().account_id();
        let body = build_tx_body(&TxBodySpec {
            chain_id: 1,
            sender,
            nonce: 7,
            fee: 1,
            payload: PayloadSpec::Transfer {
                to: [9; 32],
                amount: 3,
                token: int_schemas::wire::Token::Int,
            },
        });
        let env = build_envelope(&body, &sk.sign(&tx_message(1, &body)).to_bytes());
        let call = json!({
            "jsonrpc": "2.0",
            "method": "int_sendTransaction",
            "params": [hex::encode(&env)],
            "id": 1,
        });
        let v = handle_body(&ctx, call.to_string().as_bytes()).unwrap();
        assert_eq!(v["result"]["nonce"], 7, "{v}");
        assert_eq!(v["result"]["sender"], hex::encode(sender));
        // The queue (one batch) is full now: the answer says so at once.
        let v = handle_body(&ctx, call.to_string().as_bytes()).unwrap();
        assert_eq!(v["error"]["code"], QUEUE_FULL, "{v}");
        assert_eq!(rx.try_recv().unwrap(), vec![(sender, env)]);
        drop(rx);
        let v = handle_body(&ctx, call.to_string().as_bytes()).unwrap();
        assert_eq!(v["error"]["code"], -32603, "{v}");
    }

    #[test]
    fn http_requests_are_bounded_and_parsed_whole() {
        with_ctx(|ctx| {
            let body = r#"{"jsonrpc":"2.0","method":"x","id":1}"#;
            let req = format!(
                "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Every strict prefix waits for more; once the head is in, for
            // the whole request's length.
            let head_len = req.len() - body.len();
            for n in 0..req.len() {
                let Parsed::Partial(need) = parse_request(ctx, &req.as_bytes()[..n]) else {
                    panic!("a prefix of {n} bytes is answered");
                };
                assert_eq!(need, (n >= head_len).then_some(req.len()), "{n}");
            }
            let Parsed::Respond(out) = parse_request(ctx, req.as_bytes()) else {
                panic!("a whole request is answered");
            };
            assert!(out.starts_with(b"HTTP/1.1 200 OK"));
            let status = |r: &str| match parse_request(ctx, r.as_bytes()) {
                Parsed::Respond(o) => String::from_utf8_lossy(&o[9..12]).to_string(),
                Parsed::Partial(_) => "partial".into(),
            };
            assert_eq!(status("POST / HTTP/1.1\r\n\r\n"), "411");
            assert_eq!(status("GET /x HTTP/1.1\r\n\r\n"), "404");
            // No metrics source: 404.
            assert_eq!(status("GET /metrics HTTP/1.1\r\n\r\n"), "404");
            assert_eq!(status("\x00\x01 HTTP\r\n\r\n"), "400");
            let huge = format!("POST / HTTP/1.1\r\nContent-Length: {REQUEST_BYTES_MAX}\r\n\r\n");
            assert_eq!(status(&huge), "413");
            // A head that never ends is refused once past its bound.
            let endless = format!("POST / HTTP/1.1\r\nX: {}", "a".repeat(HEAD_BYTES_MAX));
            assert_eq!(status(&endless), "431");
            assert_eq!(status(&endless[..HEAD_BYTES_MAX]), "partial");
        });
    }

    /// A client that connects and sends nothing is closed after the idle
    /// timeout; another is still answered meanwhile.
    #[test]
    fn idle_connections_are_closed() {
        with_server(Duration::from_millis(300), |addr| {
            let mut idle = std::net::TcpStream::connect(addr).unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut busy = std::net::TcpStream::connect(addr).unwrap();
            busy.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
            let mut out = Vec::new();
            busy.read_to_end(&mut out).unwrap();
            assert!(out.starts_with(b"HTTP/1.1 404"), "{out:?}");
            let t = Instant::now();
            let mut b = [0u8; 1];
            let n = idle.read(&mut b);
            assert_eq!(n.expect("closed, not timed out"), 0);
            assert!(t.elapsed() < Duration::from_secs(4));
        });
    }

    /// A client that drips its request a byte at a time, never idle for
    /// long, is closed once the request timeout (three idle timeouts) has
    /// passed without the request being all in.
    #[test]
    fn dripping_requests_are_closed() {
        with_server(Duration::from_millis(300), |addr| {
            let mut drip = std::net::TcpStream::connect(addr).unwrap();
            let head = format!(
                "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{}",
                "x".repeat(1000)
            );
            let t = Instant::now();
            let mut closed = false;
            for b in head.bytes() {
                if drip.write_all(&[b]).is_err() {
                    closed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                if t.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            assert!(closed, "a dripping client was never closed");
            assert!(t.elapsed() >= Duration::from_millis(900));
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Hostile bytes as a body or as a whole request never panic.
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            with_ctx(|ctx| {
                let _ = handle_body(ctx, &bytes);
                let _ = parse_request(ctx, &bytes);
            });
        }
    }
}
