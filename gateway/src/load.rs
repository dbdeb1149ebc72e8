//! Load: many MQTT connections on one `mio` poll, each publishing QoS 1
//! messages with a bounded window in flight (and, if asked, at a rate),
//! timing every PUBACK. `int bench mqtt` runs the same load against the
//! gateway and against mosquitto; tests use it for many concurrent devices.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use crate::client::{ServerPacket, decode_server, encode_connect, encode_publish};
use crate::packet::{Version, frame_len};

/// What load to make.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The broker.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// Messages each connection publishes.
    pub messages_per_connection: u64,
    /// Messages per second per connection (0: as fast as the window allows).
    pub rate_per_connection: u32,
    /// QoS 1 messages each connection keeps in flight at most.
    pub window: usize,
    /// The topic published to.
    pub topic: String,
    /// 3.1.1 or 5.0.
    pub version: Version,
    /// Give up after this long.
    pub deadline: Duration,
}

/// What the load measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Connections that got a CONNACK.
    pub connected: usize,
    /// Connections the server closed before they were done.
    pub closed_early: usize,
    /// Messages published.
    pub sent: u64,
    /// Messages acknowledged (PUBACK).
    pub acked: u64,
    /// Of those, refused (5.0 reason code 0x80 or above).
    pub refused: u64,
    /// From the first PUBLISH to the last PUBACK.
    pub elapsed_s: f64,
    /// `acked / elapsed_s`.
    pub msgs_per_s: f64,
    /// PUBLISH-to-PUBACK latency percentiles, microseconds: p50, p90, p99, max.
    pub latency_us: [u64; 4],
}

impl LoadReport {
    /// As JSON (for `--json`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "connected": self.connected,
            "closed_early": self.closed_early,
            "sent": self.sent,
            "acked": self.acked,
            "refused": self.refused,
            "elapsed_s": self.elapsed_s,
            "msgs_per_s": self.msgs_per_s,
            "latency_us": {
                "p50": self.latency_us[0],
                "p90": self.latency_us[1],
                "p99": self.latency_us[2],
                "max": self.latency_us[3],
            },
        })
    }
}

struct Conn {
    sock: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    connected: bool,
    closed: bool,
    next_seq: u64,
    next_pid: u16,
    in_flight: HashMap<u16, Instant>,
    started: Option<Instant>,
}

/// Runs the load; `payload(connection, sequence)` gives each message's bytes.
pub fn run(cfg: &LoadConfig, payload: &dyn Fn(usize, u64) -> Vec<u8>) -> io::Result<LoadReport> {
    if cfg.window == 0 || cfg.window >= usize::from(u16::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("window {} is not in 1..{}", cfg.window, u16::MAX),
        ));
    }
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let mut sock = TcpStream::connect(cfg.addr)?;
        // As the gateway does on its side: a PUBLISH goes out at once.
        let _ = sock.set_nodelay(true);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let mut c = Conn {
            sock,
            rbuf: Vec::new(),
            wbuf: encode_connect(cfg.version, &format!("load-{i}"), 60)?,
            connected: false,
            closed: false,
            next_seq: 0,
            next_pid: 1,
            in_flight: HashMap::new(),
            started: None,
        };
        c.rbuf.reserve(4096);
        conns.push(c);
    }
    let mut report = LoadReport::default();
    let mut latencies: Vec<u64> =
        Vec::with_capacity(cfg.messages_per_connection.min(1 << 20) as usize);
    let began = Instant::now();
    let mut first_publish: Option<Instant> = None;
    let mut last_ack = Instant::now();
    let mut events = Events::with_capacity(1024);
    let total = (cfg.connections as u64).saturating_mul(cfg.messages_per_connection);
    let mut chunk = vec![0u8; 64 * 1024];
    // Publishing starts once every connection is open (or a tenth of the
    // deadline passed), so the figures are not a connection ramp.
    let ramp_max = cfg.deadline / 10;
    let mut publishing = false;
    let mut touched: Vec<usize> = Vec::new();
    while report.acked < total && began.elapsed() < cfg.deadline {
        if conns.iter().all(|c| c.closed) {
            break;
        }
        let timeout = if cfg.rate_per_connection > 0 {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        poll.poll(&mut events, Some(timeout))?;
        for ev in events.iter() {
            let Token(i) = ev.token();
            let Some(c) = conns.get_mut(i) else { continue };
            if c.closed {
                continue;
            }
            touched.push(i);
            if !ev.is_readable() {
                continue;
            }
            loop {
                match c.sock.read(&mut chunk) {
                    Ok(0) => {
                        c.closed = true;
                        break;
                    }
                    Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.closed = true;
                        break;
                    }
                }
            }
            let mut used = 0;
            while let Ok(Some(len)) = frame_len(&c.rbuf[used..], crate::client::PACKET_BYTES_MAX) {
                if used + len > c.rbuf.len() {
                    break;
                }
                let p = decode_server(&c.rbuf[used..used + len], cfg.version);
                used += len;
                match p {
                    Ok(ServerPacket::Connack(0)) => {
                        c.connected = true;
                        report.connected += 1;
                    }
                    Ok(ServerPacket::Puback(pid, code)) => {
                        if let Some(t) = c.in_flight.remove(&pid) {
                            let now = Instant::now();
                            latencies.push(now.duration_since(t).as_micros() as u64);
                            report.acked += 1;
                            report.refused += u64::from(code >= 0x80);
                            last_ack = now;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        c.closed = true;
                        break;
                    }
                }
            }
            c.rbuf.drain(..used);
        }
        if !publishing && (report.connected == cfg.connections || began.elapsed() >= ramp_max) {
            publishing = true;
            touched.extend(0..conns.len());
        }
        if publishing && cfg.rate_per_connection > 0 {
            // Rated: any connection may be due.
            touched.extend(0..conns.len());
        }
        touched.sort_unstable();
        touched.dedup();
        // Publish what each window and rate allow, then write.
        let now = Instant::now();
        for &i in &touched {
            let c = &mut conns[i];
            if publishing && c.connected && !c.closed {
                let started = *c.started.get_or_insert(now);
                while c.next_seq < cfg.messages_per_connection && c.in_flight.len() < cfg.window {
                    if cfg.rate_per_connection > 0 {
                        let due = started
                            + Duration::from_secs_f64(
                                c.next_seq as f64 / f64::from(cfg.rate_per_connection),
                            );
                        if due > now {
                            break;
                        }
                    }
                    let mut pid = c.next_pid;
                    while c.in_flight.contains_key(&pid) {
                        pid = pid.checked_add(1).unwrap_or(1);
                    }
                    c.next_pid = pid.checked_add(1).unwrap_or(1);
                    let bytes =
                        encode_publish(cfg.version, &cfg.topic, pid, &payload(i, c.next_seq))?;
                    c.wbuf.extend_from_slice(&bytes);
                    c.in_flight.insert(pid, now);
                    c.next_seq += 1;
                    first_publish.get_or_insert(now);
                }
            }
            while !c.closed && !c.wbuf.is_empty() {
                match c.sock.write(&c.wbuf) {
                    Ok(0) => c.closed = true,
                    Ok(n) => {
                        c.wbuf.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => c.closed = true,
                }
            }
        }
        touched.clear();
    }
    report.closed_early = conns.iter().filter(|c| c.closed).count();
    report.sent = conns.iter().map(|c| c.next_seq).sum();
    if let Some(t) = first_publish {
        report.elapsed_s = last_ack.duration_since(t).as_secs_f64().max(1e-9);
        report.msgs_per_s = report.acked as f64 / report.elapsed_s;
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    report.latency_us = [
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
    ];
    Ok(report)
}
