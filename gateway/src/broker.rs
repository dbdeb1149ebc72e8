//! The broker: one thread, one `mio` poll, every connection bounded.
//!
//! Clients publish to one topic, the ingest topic (signed transactions):
//! those messages go to the node in batches through a bounded channel, and
//! a QoS 1 message is acknowledged when the node's verdict comes back
//! ([`Event::Verdicts`]). Everything else clients receive is published by
//! the node ([`Event::Publish`]): block headers (retained), receipts,
//! listings. Clients cannot publish to each other.
//!
//! Bounds (see [`Config`]): connections, packet size, unacknowledged
//! ingest messages and publish rate per connection (a client over them is
//! simply not read until it is under again: TCP pushes back), bytes queued
//! and QoS 1 messages unacknowledged towards a subscriber (over them it is
//! a slow consumer and is dropped), subscriptions per connection, and the
//! ingest queue (while full, no connection is read). A malformed packet
//! closes that connection only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use mqtt_proto::{Pid, QoS, QosPid, TopicName};

use crate::packet::{self, Inbound, Outbound, PacketError, Refusal, Version};
use crate::topic::{Subscriber, Subscriptions};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Node events handled per loop turn, so connections are served between.
const EVENTS_PER_TURN: usize = 64;

/// The gateway's bounds and its ingest topic.
#[derive(Debug, Clone)]
pub struct Config {
    /// The one topic clients publish to (`int/<chain>/tx`).
    pub ingest_topic: String,
    /// Open connections at most; more are accepted and closed at once.
    pub connections_max: usize,
    /// Largest packet taken (fixed header included); a larger one closes
    /// the connection (5.0 clients are told the bound in the CONNACK).
    pub packet_bytes_max: usize,
    /// Ingest messages per connection waiting for the node's verdict; past
    /// it the connection is not read.
    pub inflight_max: u16,
    /// Ingest messages per second per connection (0: no bound); past it
    /// the connection is not read until its budget refills.
    pub publish_rate_max: u32,
    /// Bytes queued towards one client; past it the client is a slow
    /// consumer and is dropped.
    pub out_bytes_max: usize,
    /// QoS 1 messages sent to one client and not yet acknowledged; past it
    /// (or past the client's own receive maximum) it is dropped.
    pub out_inflight_max: usize,
    /// Subscriptions per connection.
    pub subscriptions_max: usize,
    /// Ingest messages waiting for the node; while full, nothing is read.
    pub pending_max: usize,
    /// Batches of ingest messages handed to the node and not yet taken
    /// (the channel [`Gateway::new`] returns); while full, new messages
    /// wait in the gateway (up to `pending_max`, then nothing is read).
    pub ingest_batches_max: usize,
    /// Events from the node (verdict batches, messages to publish) waiting
    /// for the gateway's loop; while full, [`Handle::verdicts`] waits
    /// (verdicts are never dropped) and [`Handle::publish`] drops the
    /// messages and counts them in [`Stats::events_dropped`].
    pub events_max: usize,
    /// Time a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
}

impl Config {
    /// The defaults for a chain's gateway: topic `int/<chain>/tx`.
    pub fn for_chain(chain_id: u32) -> Self {
        Self {
            ingest_topic: format!("int/{chain_id}/tx"),
            connections_max: 10_000,
            packet_bytes_max: 16 * 1024,
            inflight_max: 64,
            publish_rate_max: 1_000,
            out_bytes_max: 1 << 20,
            out_inflight_max: 1_024,
            subscriptions_max: 64,
            pending_max: 16_384,
            ingest_batches_max: 64,
            events_max: 1_024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Where an ingest message came from, for its verdict: the connection
/// (slot and id, so a verdict for a closed one is dropped) and the packet
/// id of a QoS 1 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    who: Subscriber,
    pid: Option<u16>,
}

/// A message a client published to the ingest topic.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// Give it back with the verdict.
    pub ticket: Ticket,
    /// The bytes as published.
    pub payload: Bytes,
}

/// The node's answer to one ingest message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted (to the mempool): acknowledged.
    Admitted,
    /// Refused: 3.1.1 clients still get their PUBACK (the protocol has no
    /// negative one) and learn why from the receipt topic; 5.0 clients get
    /// the reason code.
    Refused(Refusal),
}

/// A message the node publishes: `topics` are alternative names for it
/// (e.g. each prefix of a listing's geohash); a client matching several
/// gets it once, under the first it matches.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic names, most specific first.
    pub topics: Vec<String>,
    /// The bytes.
    pub payload: Bytes,
    /// Keep it as the retained message of `topics[0]` for new subscribers.
    pub retain: bool,
}

/// What the node sends the gateway.
#[derive(Debug)]
pub enum Event {
    /// Verdicts on ingested messages.
    Verdicts(Vec<(Ticket, Verdict)>),
    /// Messages to deliver to subscribers.
    Publish(Vec<Message>),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections (after CONNECT).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused at the connection bound.
    pub refused: AtomicU64,
    /// Clients dropped as slow consumers.
    pub dropped_slow: AtomicU64,
    /// Clients dropped for a malformed packet or a protocol error.
    pub dropped_malformed: AtomicU64,
    /// Clients dropped for missing their keep-alive or CONNECT deadline.
    pub dropped_timeout: AtomicU64,
    /// Messages published to the ingest topic.
    pub ingested: AtomicU64,
    /// Messages delivered to subscribers.
    pub delivered: AtomicU64,
    /// Node messages dropped because a queue towards the gateway was full
    /// (the gateway's event queue, or the node's queue of blocks to publish:
    /// a skipped block counts once).
    pub events_dropped: AtomicU64,
}

/// The node's side of a running gateway: send it events, read its counters.
#[derive(Clone)]
pub struct Handle {
    events: SyncSender<Event>,
    waker: Arc<Waker>,
    /// The gateway's counters.
    pub stats: Arc<Stats>,
}

/// The gateway has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT gateway has stopped")]
pub struct Stopped;

impl Handle {
    /// Sends verdicts; waits while the gateway's queue is full (verdicts
    /// free client slots, so they are never dropped).
    pub fn verdicts(&self, v: Vec<(Ticket, Verdict)>) -> Result<(), Stopped> {
        self.events.send(Event::Verdicts(v)).map_err(|_| Stopped)?;
        let _ = self.waker.wake();
        Ok(())
    }

    /// Publishes messages without waiting: when the gateway's queue is full
    /// they are dropped and counted (the node never waits on subscribers).
    pub fn publish(&self, msgs: Vec<Message>) -> Result<(), Stopped> {
        match self.events.try_send(Event::Publish(msgs)) {
            Ok(()) => {}
            Err(TrySendError::Full(Event::Publish(m))) => {
                self.stats
                    .events_dropped
                    .fetch_add(m.len() as u64, Ordering::Relaxed);
            }
            Err(_) => return Err(Stopped),
        }
        let _ = self.waker.wake();
        Ok(())
    }
}

/// Binds the gateway's listener.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

struct Conn {
    id: u64,
    sock: TcpStream,
    version: Option<Version>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    keep_alive: Option<Duration>,
    last_rx: Instant,
    opened: Instant,
    client_id: String,
    /// Ingest messages of this connection the node has not answered.
    inflight_in: u16,
    /// The client's receive maximum (5.0) for our QoS 1 messages.
    receive_max: u16,
    packet_bytes_max: usize,
    next_pid: u16,
    unacked_out: HashSet<u16>,
    budget: f64,
    refilled: Instant,
    filters: Vec<String>,
    /// The socket may hold more bytes, but reading stopped at a bound.
    paused: bool,
}

enum Flow {
    Go,
    Pause,
    Close(Option<u8>),
}

/// The broker. Build with [`Gateway::new`], run with [`Gateway::run`].
pub struct Gateway {
    cfg: Config,
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_id: u64,
    by_client_id: HashMap<String, Subscriber>,
    subs: Subscriptions,
    retained: BTreeMap<String, Bytes>,
    events: Receiver<Event>,
    ingest: SyncSender<Vec<Ingested>>,
    pending: Vec<Ingested>,
    paused: Vec<usize>,
    dirty: Vec<usize>,
    stats: Arc<Stats>,
}

impl Gateway {
    /// A gateway on `listener`. Returns it, the node's handle, and the
    /// channel the node reads ingest batches from (at most `pending_max`
    /// messages wait in the gateway beyond its `ingest_batches_max`
    /// batches).
    ///
    /// # Panics
    /// On a bound of 0 (or absurdly many connections).
    pub fn new(
        listener: TcpListener,
        cfg: Config,
    ) -> io::Result<(Self, Handle, Receiver<Vec<Ingested>>)> {
        assert!(cfg.connections_max > 0 && cfg.connections_max < usize::MAX / 4);
        assert!(cfg.packet_bytes_max >= 64 && cfg.inflight_max > 0);
        // A zero-capacity channel would be a rendezvous: try_send would fail
        // whenever the other side is not already waiting.
        assert!(
            cfg.ingest_batches_max > 0 && cfg.events_max > 0,
            "ingest_batches_max and events_max must be at least 1"
        );
        let poll = Poll::new()?;
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (ev_tx, ev_rx) = sync_channel(cfg.events_max);
        let (in_tx, in_rx) = sync_channel(cfg.ingest_batches_max);
        let stats = Arc::new(Stats::default());
        let handle = Handle {
            events: ev_tx,
            waker,
            stats: stats.clone(),
        };
        Ok((
            Self {
                cfg,
                poll,
                listener,
                conns: Vec::new(),
                free: Vec::new(),
                next_id: 1,
                by_client_id: HashMap::new(),
                subs: Subscriptions::default(),
                retained: BTreeMap::new(),
                events: ev_rx,
                ingest: in_tx,
                pending: Vec::new(),
                paused: Vec::new(),
                dirty: Vec::new(),
                stats,
            },
            handle,
            in_rx,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is set (checked at least every 100 ms).
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut backlog = false;
        while !stop.load(Ordering::Relaxed) {
            let timeout = if backlog {
                Duration::ZERO
            } else if self.paused.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5)
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(slot) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(slot);
                        }
                        if ev.is_writable() {
                            self.mark_dirty(slot);
                        }
                    }
                }
            }
            backlog = self.node_events();
            self.flush_pending();
            self.resume_paused();
            if last_sweep.elapsed() >= Duration::from_millis(500) {
                self.sweep();
                last_sweep = Instant::now();
            }
            self.flush_dirty();
        }
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(%e, "MQTT accept");
                    return;
                }
            };
            let open = self.conns.len() - self.free.len();
            if open >= self.cfg.connections_max {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue; // dropped: closed
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(%e, "MQTT register");
                self.free.push(slot);
                continue;
            }
            let _ = sock.set_nodelay(true);
            let now = Instant::now();
            self.conns[slot] = Some(Conn {
                id: self.next_id,
                sock,
                version: None,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                wpos: 0,
                keep_alive: None,
                last_rx: now,
                opened: now,
                client_id: String::new(),
                inflight_in: 0,
                receive_max: u16::MAX,
                packet_bytes_max: usize::MAX,
                next_pid: 1,
                unacked_out: HashSet::new(),
                budget: f64::from(self.cfg.publish_rate_max),
                refilled: now,
                filters: Vec::new(),
                paused: false,
            });
            self.next_id += 1;
            self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Handles what is buffered, then reads, until the socket is drained, a
    /// bound pauses the connection, or it closes.
    fn read(&mut self, slot: usize) {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.process(slot) {
                Flow::Go => {}
                Flow::Pause => {
                    if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut)
                        && !c.paused
                    {
                        c.paused = true;
                        self.paused.push(slot);
                    }
                    return;
                }
                Flow::Close(reason) => return self.close(slot, reason),
            }
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            match c.sock.read(&mut chunk) {
                Ok(0) => return self.close(slot, None),
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last_rx = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot, None),
            }
        }
    }

    /// Handles the complete packets in the connection's buffer.
    fn process(&mut self, slot: usize) -> Flow {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        // Taken out while its packets are handled (they need `self`), put
        // back with what is left.
        let rbuf = std::mem::take(&mut c.rbuf);
        let mut used = 0;
        let flow = loop {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return Flow::Close(None);
            };
            let buf = &rbuf[used..];
            // The first packet must be a CONNECT: known from its first byte.
            if c.version.is_none() && buf.first().is_some_and(|b| b >> 4 != 1) {
                break self.malformed(PacketError::NotConnect);
            }
            let len = match packet::frame_len(buf, self.cfg.packet_bytes_max) {
                Ok(Some(len)) if len <= buf.len() => len,
                Ok(_) => break Flow::Go,
                Err(e) => break self.malformed(e),
            };
            // A PUBLISH waits while the connection or the node is at a bound.
            if buf[0] >> 4 == 3 {
                if c.inflight_in >= self.cfg.inflight_max
                    || self.pending.len() >= self.cfg.pending_max
                {
                    break Flow::Pause;
                }
                if self.cfg.publish_rate_max > 0 {
                    let now = Instant::now();
                    let rate = f64::from(self.cfg.publish_rate_max);
                    c.budget =
                        (c.budget + now.duration_since(c.refilled).as_secs_f64() * rate).min(rate);
                    c.refilled = now;
                    if c.budget < 1.0 {
                        break Flow::Pause;
                    }
                    c.budget -= 1.0;
                }
            }
            let frame = &rbuf[used..used + len];
            used += len;
            match self.packet(slot, frame) {
                Flow::Go => {}
                other => break other,
            }
        };
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            let mut rbuf = rbuf;
            rbuf.drain(..used);
            c.rbuf = rbuf;
        }
        flow
    }

    /// Acts on one packet.
    fn packet(&mut self, slot: usize, frame: &[u8]) -> Flow {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        let version = match c.version {
            Some(v) => v,
            None => match packet::connect_version(frame) {
                Ok(v) => v,
                Err(PacketError::UnsupportedLevel(level)) => {
                    tracing::debug!(level, "MQTT client of an unsupported level");
                    let _ = packet::encode(&Outbound::ConnackBadVersion, Version::V3, &mut c.wbuf);
                    return Flow::Close(None);
                }
                Err(e) => return self.malformed(e),
            },
        };
        let inbound = match packet::decode(frame, version) {
            Ok(p) => p,
            Err(e) => return self.malformed(e),
        };
        let who = Subscriber {
            slot,
            conn_id: c.id,
        };
        match inbound {
            Inbound::Connect(connect) => {
                if c.version.is_some() {
                    return self.malformed(PacketError::Protocol("a second CONNECT"));
                }
                self.connect(slot, who, connect)
            }
            _ if c.version.is_none() => self.malformed(PacketError::NotConnect),
            Inbound::Publish {
                topic,
                qos_pid,
                payload,
            } => self.publish_in(slot, who, version, &topic, qos_pid, payload),
            Inbound::Puback(pid) => {
                c.unacked_out.remove(&pid);
                Flow::Go
            }
            Inbound::Subscribe { pid, filters } => self.subscribe(slot, who, pid, filters),
            Inbound::Unsubscribe { pid, filters } => {
                for f in &filters {
                    self.subs.remove(f, who);
                }
                let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                    return Flow::Close(None);
                };
                c.filters.retain(|f| !filters.iter().any(|g| &**g == f));
                self.send(slot, &Outbound::Unsuback(pid, filters.len()))
            }
            Inbound::Pingreq => self.send(slot, &Outbound::Pingresp),
            Inbound::Disconnect => Flow::Close(None),
        }
    }

    fn malformed(&self, e: PacketError) -> Flow {
        tracing::debug!(%e, "MQTT client dropped");
        self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        let code = match e {
            PacketError::TooLarge { .. } => 0x95,
            PacketError::Protocol(_) | PacketError::NotConnect => 0x82,
            _ => 0x81,
        };
        Flow::Close(Some(code))
    }

    fn connect(&mut self, slot: usize, who: Subscriber, connect: packet::Connect) -> Flow {
        let cfg = &self.cfg;
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        c.version = Some(connect.version);
        c.keep_alive = (connect.keep_alive_s > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive_s) * 1500));
        c.receive_max = connect.receive_max.max(1);
        c.packet_bytes_max = connect.packet_bytes_max.map_or(usize::MAX, |m| m as usize);
        let assigned = connect.client_id.is_empty();
        c.client_id = if assigned {
            format!("int-{}", c.id)
        } else {
            connect.client_id
        };
        let connack = Outbound::Connack {
            receive_max: cfg.inflight_max,
            packet_bytes_max: u32::try_from(cfg.packet_bytes_max).unwrap_or(u32::MAX),
            assigned_id: assigned.then_some(c.client_id.as_str()),
        };
        if let Err(e) = packet::encode(&connack, connect.version, &mut c.wbuf) {
            return self.malformed(e);
        }
        let client_id = c.client_id.clone();
        // [MQTT-3.1.4-2]: a second connection with the same client id takes over.
        if let Some(old) = self.by_client_id.insert(client_id, who)
            && old != who
            && self.conn_is(old)
        {
            self.close(old.slot, Some(0x8E));
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        self.mark_dirty(slot);
        Flow::Go
    }

    fn conn_is(&self, who: Subscriber) -> bool {
        matches!(self.conns.get(who.slot), Some(Some(c)) if c.id == who.conn_id)
    }

    fn publish_in(
        &mut self,
        slot: usize,
        who: Subscriber,
        version: Version,
        topic: &TopicName,
        qos_pid: QosPid,
        payload: Bytes,
    ) -> Flow {
        let pid = match qos_pid {
            QosPid::Level0 => None,
            QosPid::Level1(p) => Some(p.value()),
            QosPid::Level2(_) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                return Flow::Close(Some(0x9B)); // QoS not supported
            }
        };
        if **topic != *self.cfg.ingest_topic {
            // Clients only publish transactions; anything else is dropped
            // (5.0 clients are told).
            return match pid {
                Some(p) if version == Version::V5 => {
                    self.send(slot, &Outbound::Puback(p, Some(Refusal::NotAuthorized)))
                }
                Some(p) => self.send(slot, &Outbound::Puback(p, None)),
                None => Flow::Go,
            };
        }
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        c.inflight_in += 1;
        self.stats.ingested.fetch_add(1, Ordering::Relaxed);
        self.pending.push(Ingested {
            ticket: Ticket { who, pid },
            payload,
        });
        Flow::Go
    }

    fn subscribe(
        &mut self,
        slot: usize,
        who: Subscriber,
        pid: u16,
        filters: Vec<(mqtt_proto::TopicFilter, QoS)>,
    ) -> Flow {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted = Vec::new();
        for (filter, qos) in filters {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return Flow::Close(None);
            };
            let known = c.filters.iter().any(|f| **f == *filter);
            if filter.is_shared() {
                codes.push(Err(Refusal::NotAuthorized));
            } else if !known && c.filters.len() >= self.cfg.subscriptions_max {
                codes.push(Err(Refusal::Busy));
            } else {
                let qos = if qos == QoS::Level0 {
                    QoS::Level0
                } else {
                    QoS::Level1
                };
                if !known {
                    c.filters.push(filter.to_string());
                }
                self.subs.add(&filter, who, qos);
                codes.push(Ok(qos));
                granted.push((filter.to_string(), qos));
            }
        }
        if let Flow::Close(r) = self.send(slot, &Outbound::Suback(pid, &codes)) {
            return Flow::Close(r);
        }
        // Retained messages for each new subscription, after the SUBACK.
        let retained: Vec<(String, Bytes, QoS)> = self
            .retained
            .iter()
            .filter_map(|(topic, payload)| {
                granted
                    .iter()
                    .filter(|(f, _)| crate::topic::matches(f, topic))
                    .map(|(_, q)| *q)
                    .max()
                    .map(|q| (topic.clone(), payload.clone(), q))
            })
            .collect();
        for (topic, payload, qos) in retained {
            let Ok(name) = TopicName::try_from(topic.as_str()) else {
                continue; // the node's topics are valid; never a client's fault
            };
            if let Flow::Close(r) = self.deliver(slot, &name, &payload, qos, true) {
                return Flow::Close(r);
            }
        }
        Flow::Go
    }

    /// Queues a packet to a client; a client whose queue is over its bound
    /// is a slow consumer.
    fn send(&mut self, slot: usize, p: &Outbound<'_>) -> Flow {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        let Some(version) = c.version else {
            return Flow::Close(None);
        };
        if let Err(e) = packet::encode(p, version, &mut c.wbuf) {
            tracing::warn!(%e, "MQTT encode");
            return Flow::Close(Some(0x83));
        }
        if c.wbuf.len() - c.wpos > self.cfg.out_bytes_max {
            self.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
            return Flow::Close(Some(0x97));
        }
        self.mark_dirty(slot);
        Flow::Go
    }

    /// Sends one message to one subscriber at `qos` (0 or 1).
    fn deliver(
        &mut self,
        slot: usize,
        name: &TopicName,
        payload: &Bytes,
        qos: QoS,
        retain: bool,
    ) -> Flow {
        let topic: &str = name;
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Flow::Close(None);
        };
        if payload.len() + topic.len() + 16 > c.packet_bytes_max {
            return Flow::Go; // [MQTT-3.1.2-25]: larger than the client takes
        }
        let qos_pid = if qos == QoS::Level0 {
            QosPid::Level0
        } else {
            let window = usize::from(c.receive_max).min(self.cfg.out_inflight_max);
            if c.unacked_out.len() >= window {
                self.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
                return Flow::Close(Some(0x97));
            }
            let mut pid = c.next_pid;
            while c.unacked_out.contains(&pid) {
                pid = pid.checked_add(1).unwrap_or(1);
            }
            c.next_pid = pid.checked_add(1).unwrap_or(1);
            c.unacked_out.insert(pid);
            match Pid::try_from(pid) {
                Ok(p) => QosPid::Level1(p),
                Err(_) => return Flow::Close(Some(0x83)),
            }
        };
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        self.send(
            slot,
            &Outbound::Publish {
                topic: name,
                qos_pid,
                retain,
                payload,
            },
        )
    }

    /// Handles up to [`EVENTS_PER_TURN`] node events; whether more may wait
    /// (their wake-up is spent, so the next poll must not sleep).
    fn node_events(&mut self) -> bool {
        for _ in 0..EVENTS_PER_TURN {
            match self.events.try_recv() {
                Ok(Event::Verdicts(v)) => self.verdicts(v),
                Ok(Event::Publish(msgs)) => {
                    for m in msgs {
                        self.publish_out(m);
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn verdicts(&mut self, verdicts: Vec<(Ticket, Verdict)>) {
        for (t, v) in verdicts {
            if !self.conn_is(t.who) {
                continue;
            }
            let Some(c) = self.conns.get_mut(t.who.slot).and_then(Option::as_mut) else {
                continue;
            };
            debug_assert!(c.inflight_in > 0);
            c.inflight_in = c.inflight_in.saturating_sub(1);
            let Some(pid) = t.pid else { continue };
            let refusal = match v {
                Verdict::Admitted => None,
                Verdict::Refused(r) => Some(r),
            };
            if let Flow::Close(r) = self.send(t.who.slot, &Outbound::Puback(pid, refusal)) {
                self.close(t.who.slot, r);
            }
        }
    }

    fn publish_out(&mut self, m: Message) {
        if m.retain
            && let Some(t) = m.topics.first()
        {
            self.retained.insert(t.clone(), m.payload.clone());
        }
        // One delivery per subscriber: under the first topic it matches, at
        // the highest QoS of its matching filters.
        let mut targets: HashMap<Subscriber, (usize, QoS)> = HashMap::new();
        for (i, topic) in m.topics.iter().enumerate() {
            self.subs.for_each_match(topic, |who, qos| {
                let e = targets.entry(who).or_insert((i, qos));
                if e.0 == i && qos > e.1 {
                    e.1 = qos;
                }
            });
        }
        if targets.is_empty() {
            return;
        }
        // Each topic name is made once, not once per subscriber.
        let names: Vec<Option<TopicName>> = m
            .topics
            .iter()
            .map(|t| TopicName::try_from(t.as_str()).ok())
            .collect();
        for (who, (i, qos)) in targets {
            // The node's topics are valid; an invalid one is never a
            // client's fault: skipped.
            let Some(name) = &names[i] else { continue };
            if !self.conn_is(who) {
                continue;
            }
            if let Flow::Close(r) = self.deliver(who.slot, name, &m.payload, qos, false) {
                self.close(who.slot, r);
            }
        }
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        match self.ingest.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => self.pending = b,
            Err(TrySendError::Disconnected(b)) => {
                // The node is gone: refuse them so clients are not left waiting.
                let v = b
                    .into_iter()
                    .map(|i| (i.ticket, Verdict::Refused(Refusal::Unspecified)))
                    .collect();
                self.verdicts(v);
            }
        }
    }

    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        for slot in std::mem::take(&mut self.paused) {
            if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) {
                c.paused = false;
                self.read(slot);
            }
        }
    }

    /// Closes connections past their keep-alive (1.5 × the client's) or
    /// CONNECT deadline.
    fn sweep(&mut self) {
        let now = Instant::now();
        let mut late = Vec::new();
        for (slot, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            // A paused connection is not silent: the gateway is not reading
            // it (its PINGREQs wait in the socket).
            let over = match (c.version, c.keep_alive) {
                (None, _) => now.duration_since(c.opened) > self.cfg.connect_timeout,
                (Some(_), Some(k)) => !c.paused && now.duration_since(c.last_rx) > k,
                (Some(_), None) => false,
            };
            if over {
                late.push(slot);
            }
        }
        for slot in late {
            self.stats.dropped_timeout.fetch_add(1, Ordering::Relaxed);
            self.close(slot, Some(0x8D));
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        self.dirty.push(slot);
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for slot in dirty {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if write_out(c).is_err() {
                self.close(slot, None);
            }
        }
    }

    /// Closes a connection: a last 5.0 DISCONNECT with `reason` when given,
    /// a best-effort flush, then its subscriptions and slot are freed.
    fn close(&mut self, slot: usize, reason: Option<u8>) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if let (Some(Version::V5), Some(code)) = (c.version, reason) {
            let _ = packet::encode(&Outbound::Disconnect(code), Version::V5, &mut c.wbuf);
        }
        let _ = write_out(&mut c);
        let _ = self.poll.registry().deregister(&mut c.sock);
        let who = Subscriber {
            slot,
            conn_id: c.id,
        };
        for f in &c.filters {
            self.subs.remove(f, who);
        }
        if self.by_client_id.get(&c.client_id) == Some(&who) {
            self.by_client_id.remove(&c.client_id);
        }
        if c.version.is_some() {
            self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.free.push(slot);
    }
}

/// Writes what is queued until the socket would block.
fn write_out(c: &mut Conn) -> io::Result<()> {
    while c.wpos < c.wbuf.len() {
        match c.sock.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
    } else if c.wpos > c.wbuf.len() / 2 {
        c.wbuf.drain(..c.wpos);
        c.wpos = 0;
    }
    Ok(())
}
