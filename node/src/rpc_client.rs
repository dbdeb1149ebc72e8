//! A small blocking JSON-RPC 2.0 client over HTTP/1.1 on std's
//! `TcpStream`, for the commands that talk to a running node (`int tx`).
//!
//! The node's server ([`crate::rpc`]) closes the connection after every
//! answer, so one call is one connection: connect, write the request, read
//! to EOF (at most [`RESPONSE_BYTES_MAX`]), parse the head with `httparse`
//! and the body as JSON. Plain `http://` only: the node serves loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::{Value, json};

/// Where `int tx` finds the node unless `--rpc` says otherwise (the
/// devnet's default address).
pub const DEFAULT_RPC: &str = "http://127.0.0.1:8645";
/// Largest answer read.
pub const RESPONSE_BYTES_MAX: u64 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What can go wrong calling the node.
#[derive(Debug, thiserror::Error)]
pub enum RpcClientError {
    /// The URL is not `http://HOST[:PORT][/PATH]`.
    #[error("bad RPC URL {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No connection (refused, unreachable, unresolvable, timed out).
    #[error("cannot reach the node at {addr} (is it running, with its JSON-RPC on?)")]
    Connect {
        /// HOST:PORT.
        addr: String,
        /// The last connection error.
        source: std::io::Error,
    },
    /// The connection failed while the request or answer was under way.
    #[error("the connection to the node at {addr} failed")]
    Io {
        /// HOST:PORT.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The answer is not an HTTP response carrying a JSON-RPC response.
    #[error("the node at {addr} answered something else than JSON-RPC: {why}")]
    BadResponse {
        /// HOST:PORT.
        addr: String,
        /// What was wrong.
        why: String,
    },
    /// An HTTP status other than 200.
    #[error("the node at {addr} answered HTTP {status}: {body}")]
    Http {
        /// HOST:PORT.
        addr: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A JSON-RPC error object.
    #[error("the node refused {method}: error {code}: {message}")]
    Rpc {
        /// The method called.
        method: String,
        /// The error's code.
        code: i64,
        /// The error's message.
        message: String,
    },
}

/// A node's JSON-RPC endpoint.
#[derive(Debug, Clone)]
pub struct RpcClient {
    /// HOST:PORT, as connected to and sent in `Host`.
    authority: String,
    /// The request target.
    path: String,
}

impl RpcClient {
    /// The endpoint at `url`: `http://HOST[:PORT][/PATH]` (`HOST:PORT`
    /// alone is taken as `http://`); the port defaults to 80.
    pub fn new(url: &str) -> Result<Self, RpcClientError> {
        let bad = |why: &str| RpcClientError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(bad(
                    "https is not supported (the node serves plain HTTP; use http:// on loopback or a tunnel)",
                ));
            }
            Some(_) => return Err(bad("the scheme must be http://")),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') || path.contains(char::is_whitespace) {
            return Err(bad("no user info or whitespace allowed"));
        }
        // A port is there when the text after the last ':' is a number and
        // that ':' is not inside an IPv6 literal.
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok()
                && (!host.contains(':') || host.ends_with(']'))
        });
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_string(),
        })
    }

    fn connect(&self) -> Result<TcpStream, RpcClientError> {
        let connect_err = |source| RpcClientError::Connect {
            addr: self.authority.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = self
            .authority
            .to_socket_addrs()
            .map_err(connect_err)?
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    /// Calls `method` with `params`; its `result`, or the error object as
    /// [`RpcClientError::Rpc`].
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcClientError> {
        let io = |source| RpcClientError::Io {
            addr: self.authority.clone(),
            source,
        };
        let bad = |why: String| RpcClientError::BadResponse {
            addr: self.authority.clone(),
            why,
        };
        let body =
            json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
        let mut s = self.connect()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.authority,
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(io)?;
        s.write_all(body.as_bytes()).map_err(io)?;
        s.flush().map_err(io)?;
        let mut buf = Vec::new();
        (&mut s)
            .take(RESPONSE_BYTES_MAX + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() as u64 > RESPONSE_BYTES_MAX {
            return Err(bad(format!("an answer over {RESPONSE_BYTES_MAX} bytes")));
        }
        let (status, body) = parse_response(&buf).map_err(bad)?;
        if status != 200 {
            let text = String::from_utf8_lossy(body);
            return Err(RpcClientError::Http {
                addr: self.authority.clone(),
                status,
                body: text.chars().take(300).collect(),
            });
        }
        let v: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON ({e})")))?;
        if let Some(e) = v.get("error") {
            return Err(RpcClientError::Rpc {
                method: method.to_string(),
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
                    .to_string(),
            });
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| bad("a response with neither result nor error".into()))
    }
}

/// The status and body of a whole HTTP/1.1 response.
fn parse_response(buf: &[u8]) -> Result<(u16, &[u8]), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err("the connection closed before the end of the HTTP head".into());
        }
        Err(e) => return Err(format!("not an HTTP response ({e})")),
    };
    let status = r.code.ok_or("no status code")?;
    let mut body = &buf[head_len..];
    let length = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"));
    if let Some(h) = length {
        let n: usize = std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or("a Content-Length that is not a number")?;
        if body.len() < n {
            return Err(format!(
                "the body ends after {} of its {n} bytes",
                body.len()
            ));
        }
        body = &body[..n];
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_endpoint_is_where_the_node_serves() {
        assert_eq!(
            DEFAULT_RPC,
            format!("http://{}", crate::service::rpc::DEFAULT_ADDR)
        );
    }
    use std::net::TcpListener;

    /// A one-shot server answering `answer` to the first connection; the
    /// request it read comes back through the join handle.
    fn serve_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read until the JSON body's closing brace.
            while !req.ends_with(b"}") {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, h)
    }

    #[test]
    fn urls() {
        let c = RpcClient::new("http://127.0.0.1:8645").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("127.0.0.1:8645", "/")
        );
        let c = RpcClient::new("localhost:9/rpc").unwrap();
        assert_eq!(
            (c.authority.as_str(), c.path.as_str()),
            ("localhost:9", "/rpc")
        );
        assert_eq!(RpcClient::new("http://node").unwrap().authority, "node:80");
        assert_eq!(
            RpcClient::new("http://[::1]:8645").unwrap().authority,
            "[::1]:8645"
        );
        assert_eq!(
            RpcClient::new("http://[::1]").unwrap().authority,
            "[::1]:80"
        );
        for bad in ["https://x:1", "ftp://x", "http://", "http://u@x:1"] {
            let e = RpcClient::new(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad RPC URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn result_and_request() {
        let body = br#"{"jsonrpc":"2.0","result":{"height":7},"id":1}"#;
        let answer: &'static [u8] = Box::leak(
            [
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
                body,
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (addr, h) = serve_once(answer);
        let c = RpcClient::new(&format!("http://{addr}")).unwrap();
        let r = c.call("int_chainInfo", json!([])).unwrap();
        assert_eq!(r, json!({"height": 7}));
        let req = h.join().unwrap();
        assert!(req.starts_with("POST / HTTP/1.1\r\n"), "{req}");
        assert!(req.contains(&format!("Host: {addr}\r\n")), "{req}");
        let (_, body) = req.split_once("\r\n\r\n").unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["method"], "int_chainInfo");
        assert_eq!(v["jsonrpc"], "2.0");
    }

    #[test]
    fn errors_are_clear() {
        let (addr, _h) = serve_once(
            b"HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"params[0] is not hex\"},\"id\":1}",
        );
        let e = RpcClient::new(&addr)
            .unwrap()
            .call("int_sendTransaction", json!(["zz"]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the node refused int_sendTransaction: error -32602: params[0] is not hex"
        );

        let (addr, _h) =
            serve_once(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig");
        let e = RpcClient::new(&addr)
            .unwrap()
            .call("m", json!([]))
            .unwrap_err();
        assert!(e.to_string().contains("HTTP 413: big"), "{e}");

        let (addr, _h) = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let e = RpcClient::new(&addr)
            .unwrap()
            .call("m", json!([]))
            .unwrap_err();
        assert!(matches!(e, RpcClientError::BadResponse { .. }), "{e}");

        let (addr, _h) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}");
        let e = RpcClient::new(&addr)
            .unwrap()
            .call("m", json!([]))
            .unwrap_err();
        assert!(
            e.to_string().contains("ends after 2 of its 50 bytes"),
            "{e}"
        );

        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = RpcClient::new(&format!("127.0.0.1:{port}"))
            .unwrap()
            .call("m", json!([]))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach the node at 127.0.0.1:{port}")),
            "{e}"
        );
    }
}
