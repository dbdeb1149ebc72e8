//! The broker against real sockets, with a stand-in node: it admits
//! payloads starting with `ok`, refuses the rest as malformed, and publishes
//! a "receipt" for each on `int/1/receipts/all`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use int_gateway::client::{Client, ServerPacket};
use int_gateway::load::{self, LoadConfig};
use int_gateway::{Bytes, Config, Gateway, Handle, Message, Refusal, Verdict, Version};

struct Running {
    addr: SocketAddr,
    handle: Handle,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn start(cfg: Config, receipt_bytes: usize) -> Running {
    let listener = int_gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (gw, handle, ingest) = Gateway::new(listener, cfg).unwrap();
    let addr = gw.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = stop.clone();
    let gw_thread = thread::spawn(move || gw.run(&s1).unwrap());
    let (h2, s2) = (handle.clone(), stop.clone());
    let node = thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let Ok(batch) = ingest.recv_timeout(Duration::from_millis(20)) else {
                continue;
            };
            let mut verdicts = Vec::new();
            let mut msgs = Vec::new();
            for i in batch {
                let ok = i.payload.starts_with(b"ok");
                verdicts.push((
                    i.ticket,
                    if ok {
                        Verdict::Admitted
                    } else {
                        Verdict::Refused(Refusal::PayloadInvalid)
                    },
                ));
                msgs.push(Message {
                    topics: vec!["int/1/receipts/all".into()],
                    payload: Bytes::from(vec![7u8; receipt_bytes]),
                    retain: false,
                });
            }
            if h2.verdicts(verdicts).is_err() || h2.publish(msgs).is_err() {
                return;
            }
        }
    });
    Running {
        addr,
        handle,
        stop,
        threads: vec![gw_thread, node],
    }
}

fn cfg() -> Config {
    Config::for_chain(1)
}

#[test]
fn v3_and_v5_publishes_are_acknowledged_after_the_verdict() {
    let g = start(cfg(), 8);
    let mut a = Client::connect(g.addr, Version::V3, "a", 30).unwrap();
    a.publish("int/1/tx", 1, b"ok tx").unwrap();
    assert_eq!(a.recv().unwrap(), ServerPacket::Puback(1, 0));
    // 3.1.1 has no negative PUBACK: a refusal is acknowledged too.
    a.publish("int/1/tx", 2, b"junk").unwrap();
    assert_eq!(a.recv().unwrap(), ServerPacket::Puback(2, 0));

    let mut b = Client::connect(g.addr, Version::V5, "b", 30).unwrap();
    b.publish("int/1/tx", 9, b"junk").unwrap();
    assert_eq!(b.recv().unwrap(), ServerPacket::Puback(9, 0x99));
    b.publish("int/1/tx", 10, b"ok").unwrap();
    assert_eq!(b.recv().unwrap(), ServerPacket::Puback(10, 0));
    // Clients publish only transactions.
    b.publish("int/1/blocks", 11, b"ok").unwrap();
    assert_eq!(b.recv().unwrap(), ServerPacket::Puback(11, 0x87));
    b.ping().unwrap();
    assert_eq!(b.recv().unwrap(), ServerPacket::Pingresp);
    let s = &g.handle.stats;
    assert_eq!(s.ingested.load(Ordering::Relaxed), 4);
    assert_eq!(s.connections.load(Ordering::Relaxed), 2);
}

#[test]
fn subscribers_get_each_message_once_and_the_retained_header() {
    let g = start(cfg(), 8);
    let mut wide = Client::connect(g.addr, Version::V5, "wide", 30).unwrap();
    assert_eq!(
        wide.subscribe(1, &["int/1/sku/power/#"], 1).unwrap(),
        vec![1]
    );
    let mut narrow = Client::connect(g.addr, Version::V3, "narrow", 30).unwrap();
    assert_eq!(
        narrow
            .subscribe(1, &["int/1/sku/power/u4", "int/1/sku/+/u"], 0)
            .unwrap(),
        vec![0, 0]
    );
    let topics: Vec<String> = ["u4pr", "u4p", "u4", "u"]
        .iter()
        .map(|p| format!("int/1/sku/power/{p}"))
        .collect();
    g.handle
        .publish(vec![
            Message {
                topics,
                payload: Bytes::from_static(b"listing"),
                retain: false,
            },
            Message {
                topics: vec!["int/1/blocks".into()],
                payload: Bytes::from_static(b"header 1"),
                retain: true,
            },
            Message {
                topics: vec!["int/1/blocks".into()],
                payload: Bytes::from_static(b"header 2"),
                retain: true,
            },
        ])
        .unwrap();
    match wide.recv().unwrap() {
        ServerPacket::Publish {
            topic,
            pid,
            payload,
            ..
        } => {
            assert_eq!(topic, "int/1/sku/power/u4pr");
            assert_eq!(&payload[..], b"listing");
            wide.puback(pid.expect("QoS 1")).unwrap();
        }
        other => panic!("{other:?}"),
    }
    match narrow.recv().unwrap() {
        ServerPacket::Publish { topic, pid, .. } => {
            assert_eq!(topic, "int/1/sku/power/u4");
            assert_eq!(pid, None);
        }
        other => panic!("{other:?}"),
    }
    // Nothing more: one copy each.
    for c in [&mut wide, &mut narrow] {
        c.set_timeout(Duration::from_millis(300)).unwrap();
        assert!(c.recv().is_err());
    }
    // A new subscriber gets the latest header, retained.
    let mut late = Client::connect(g.addr, Version::V3, "late", 30).unwrap();
    late.subscribe(1, &["int/+/blocks"], 1).unwrap();
    match late.recv().unwrap() {
        ServerPacket::Publish {
            topic,
            retain,
            payload,
            ..
        } => {
            assert_eq!(topic, "int/1/blocks");
            assert!(retain);
            assert_eq!(&payload[..], b"header 2");
        }
        other => panic!("{other:?}"),
    }
}

/// Waits for the server to close `c` (reading whatever it sends first).
fn closed(c: &mut Client) -> bool {
    c.set_timeout(Duration::from_secs(5)).unwrap();
    for _ in 0..1_000_000 {
        match c.recv() {
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::InvalidData
                );
            }
        }
    }
    false
}

#[test]
fn malformed_and_oversized_packets_close_only_that_client() {
    let g = start(
        Config {
            packet_bytes_max: 1024,
            ..cfg()
        },
        8,
    );
    let mut good = Client::connect(g.addr, Version::V3, "good", 30).unwrap();
    for (i, bad) in [
        // A remaining length of five bytes.
        vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
        // PUBREL: QoS 2 is not spoken.
        vec![0x62, 2, 0, 1],
        // A SUBSCRIBE with no filter.
        vec![0x82, 2, 0, 1],
        // A PUBLISH of 2 000 bytes, over the 1 024 bound.
        vec![0x30, 0xd0, 0x0f],
        // A second CONNECT.
        int_gateway::client::encode_connect(Version::V3, "x", 30).unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::connect(g.addr, Version::V5, &format!("bad{i}"), 30).unwrap();
        c.send_raw(&bad).unwrap();
        assert!(closed(&mut c), "case {i} was not closed");
    }
    // Garbage before any CONNECT.
    let mut raw = std::net::TcpStream::connect(g.addr).unwrap();
    std::io::Write::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(
        std::io::Read::read(&mut raw, &mut buf),
        Ok(0) | Err(_)
    ));

    good.publish("int/1/tx", 1, b"ok").unwrap();
    assert_eq!(good.recv().unwrap(), ServerPacket::Puback(1, 0));
    assert_eq!(g.handle.stats.dropped_malformed.load(Ordering::Relaxed), 6);
}

#[test]
fn silent_clients_are_closed_after_their_keep_alive_and_unsupported_levels_refused() {
    let g = start(cfg(), 8);
    let mut quiet = Client::connect(g.addr, Version::V3, "quiet", 1).unwrap();
    let t = Instant::now();
    assert!(closed(&mut quiet));
    assert!(t.elapsed() >= Duration::from_millis(1400));
    assert_eq!(g.handle.stats.dropped_timeout.load(Ordering::Relaxed), 1);
    // Level 6 does not exist: CONNACK 1 (3.1.1's "unacceptable protocol").
    let mut raw = std::net::TcpStream::connect(g.addr).unwrap();
    std::io::Write::write_all(
        &mut raw,
        &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 30, 0, 0],
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut raw, &mut buf).unwrap();
    assert_eq!(buf, [0x20, 2, 0, 1]);
}

#[test]
fn connections_over_the_bound_are_closed_at_once() {
    let g = start(
        Config {
            connections_max: 2,
            ..cfg()
        },
        8,
    );
    let _a = Client::connect(g.addr, Version::V3, "a", 30).unwrap();
    let _b = Client::connect(g.addr, Version::V3, "b", 30).unwrap();
    assert!(Client::connect(g.addr, Version::V3, "c", 30).is_err());
    assert_eq!(g.handle.stats.refused.load(Ordering::Relaxed), 1);
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_over() {
    let g = start(cfg(), 8);
    let mut first = Client::connect(g.addr, Version::V5, "dev-1", 30).unwrap();
    let mut second = Client::connect(g.addr, Version::V5, "dev-1", 30).unwrap();
    assert!(closed(&mut first));
    second.ping().unwrap();
    assert_eq!(second.recv().unwrap(), ServerPacket::Pingresp);
}

/// Raises this process's open-file limit to `n` if the hard limit allows.
fn want_fds(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < n {
            assert!(
                lim.rlim_max >= n,
                "this test needs {n} open files; the hard limit is {}",
                lim.rlim_max
            );
            lim.rlim_cur = n;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// The load test: 1 000 devices publish while a subscriber that
/// never reads stalls. Every device's messages are acknowledged, a
/// subscriber that reads receives every receipt, and the stalled one is
/// dropped as a slow consumer.
#[test]
fn thousand_devices_publish_while_a_slow_subscriber_is_dropped() {
    const DEVICES: usize = 1000;
    const EACH: u64 = 20;
    want_fds(4 * DEVICES as u64 + 256);
    // Slack for the reader that keeps up (it runs beside 1 000 connections
    // on a shared machine); the stalled one is dropped by its window of
    // 1 024 unacknowledged QoS 1 messages.
    let g = start(
        Config {
            out_bytes_max: 16 << 20,
            ..cfg()
        },
        256,
    );
    // Subscribes and then never reads nor acknowledges.
    let mut slow = Client::connect(g.addr, Version::V3, "slow", 0).unwrap();
    slow.subscribe(1, &["int/1/#"], 1).unwrap();
    // Reads everything, at QoS 0.
    let mut fast = Client::connect(g.addr, Version::V5, "fast", 0).unwrap();
    fast.subscribe(1, &["int/1/receipts/+"], 0).unwrap();
    let reader = thread::spawn(move || {
        let mut n = 0u64;
        fast.set_timeout(Duration::from_secs(30)).unwrap();
        while n < DEVICES as u64 * EACH {
            match fast.recv() {
                Ok(ServerPacket::Publish { .. }) => n += 1,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("fast subscriber: {e} after {n} messages");
                    break;
                }
            }
        }
        n
    });
    let report = load::run(
        &LoadConfig {
            addr: g.addr,
            connections: DEVICES,
            messages_per_connection: EACH,
            // 20 000 messages/s in all: devices, not a flood a reader on a
            // shared 2-core machine cannot follow (that one would be a slow
            // consumer too, and dropped).
            rate_per_connection: 20,
            window: 4,
            topic: "int/1/tx".into(),
            version: Version::V3,
            deadline: Duration::from_secs(120),
        },
        &|i, seq| format!("ok {i} {seq}").into_bytes(),
    )
    .unwrap();
    assert_eq!(report.connected, DEVICES);
    assert_eq!(report.closed_early, 0);
    assert_eq!(report.acked, DEVICES as u64 * EACH);
    assert_eq!(report.refused, 0);
    assert_eq!(reader.join().unwrap(), DEVICES as u64 * EACH);
    assert!(g.handle.stats.dropped_slow.load(Ordering::Relaxed) >= 1);
    assert!(closed(&mut slow));
    eprintln!(
        "{DEVICES} devices: {:.0} msg/s, latency p50 {} µs p99 {} µs",
        report.msgs_per_s, report.latency_us[0], report.latency_us[2]
    );
}

/// A QoS 0 subscriber that stops reading is dropped once its queue passes
/// the byte bound, while the node goes on publishing.
#[test]
fn a_subscriber_over_its_byte_bound_is_dropped() {
    let g = start(
        Config {
            out_bytes_max: 256 * 1024,
            ..cfg()
        },
        8,
    );
    let mut stalled = Client::connect(g.addr, Version::V3, "stalled", 0).unwrap();
    stalled.subscribe(1, &["int/1/blocks"], 0).unwrap();
    let big = Bytes::from(vec![1u8; 8 * 1024]);
    let began = Instant::now();
    while g.handle.stats.dropped_slow.load(Ordering::Relaxed) == 0 {
        assert!(began.elapsed() < Duration::from_secs(60), "never dropped");
        g.handle
            .publish(vec![Message {
                topics: vec!["int/1/blocks".into()],
                payload: big.clone(),
                retain: false,
            }])
            .unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    assert!(closed(&mut stalled));
}

/// A connection the gateway stopped reading (its transactions wait for the
/// node) is not closed for silence: its PINGREQs sit unread in the socket.
#[test]
fn a_paused_connection_is_not_timed_out() {
    let listener = int_gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (gw, handle, ingest) = Gateway::new(
        listener,
        Config {
            inflight_max: 1,
            ..cfg()
        },
    )
    .unwrap();
    let addr = gw.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s1 = stop.clone();
    let gw_thread = thread::spawn(move || gw.run(&s1).unwrap());
    // A keep-alive of 1 s; the node never answers, so after one message
    // the gateway stops reading this client.
    let mut c = Client::connect(addr, Version::V3, "waiting", 1).unwrap();
    c.publish("int/1/tx", 1, b"ok 1").unwrap();
    c.publish("int/1/tx", 2, b"ok 2").unwrap();
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(500));
        c.ping().unwrap();
    }
    assert_eq!(handle.stats.dropped_timeout.load(Ordering::Relaxed), 0);
    // Once the node answers, the client is read again: both messages are
    // acknowledged and every PINGREQ answered.
    let first = ingest.recv_timeout(Duration::from_secs(5)).unwrap();
    handle
        .verdicts(
            first
                .iter()
                .map(|i| (i.ticket, Verdict::Admitted))
                .collect(),
        )
        .unwrap();
    let second = ingest.recv_timeout(Duration::from_secs(5)).unwrap();
    handle
        .verdicts(
            second
                .iter()
                .map(|i| (i.ticket, Verdict::Admitted))
                .collect(),
        )
        .unwrap();
    let (mut acks, mut pongs) = (0, 0);
    while acks < 2 || pongs < 6 {
        match c.recv().unwrap() {
            ServerPacket::Puback(..) => acks += 1,
            ServerPacket::Pingresp => pongs += 1,
            other => panic!("{other:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    gw_thread.join().unwrap();
}

/// The node-to-gateway event queue holds `events_max` events; past it a
/// publish is dropped and counted (the node never waits on subscribers).
/// The gateway's loop is not running here, so nothing drains the queue.
#[test]
fn a_full_event_queue_drops_publishes_and_counts_them() {
    let listener = int_gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = Config {
        events_max: 2,
        ..cfg()
    };
    let (_gw, handle, _ingest) = Gateway::new(listener, cfg).unwrap();
    let msgs = |n: usize| -> Vec<Message> {
        (0..n)
            .map(|_| Message {
                topics: vec!["int/1/blocks".into()],
                payload: Bytes::from_static(b"header"),
                retain: false,
            })
            .collect()
    };
    let dropped = || handle.stats.events_dropped.load(Ordering::Relaxed);
    handle.publish(msgs(1)).unwrap();
    handle.publish(msgs(1)).unwrap();
    assert_eq!(dropped(), 0);
    // The third event finds the queue full: its three messages are dropped.
    handle.publish(msgs(3)).unwrap();
    assert_eq!(dropped(), 3);
}

/// A bound of 0 would make a channel a rendezvous: refused at start.
#[test]
#[should_panic(expected = "ingest_batches_max")]
fn zero_queue_bounds_are_refused() {
    let listener = int_gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let _ = Gateway::new(
        listener,
        Config {
            ingest_batches_max: 0,
            ..cfg()
        },
    );
}
