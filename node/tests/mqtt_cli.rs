//! The MQTT device gateway as a device meets it: a devnet serving MQTT on
//! an ephemeral loopback port, and the real mosquitto clients
//! (`mosquitto_pub`, `mosquitto_sub`, 3.1.1 and 5.0) publishing signed
//! envelopes and reading back receipts and block headers; a hostile raw
//! socket is dropped while the others keep working, and `/metrics` counts
//! both.
//!
//! Runs the real binary. Without the mosquitto clients these say SKIPPED
//! loudly, unless `CI=true` (scripts/test installs mosquitto-clients) makes
//! their absence a failure.
//!
//! `mosquitto_sub` prints each message as `-F "%r %t %x"` (retain flag,
//! topic, payload as hex) and is known to be subscribed once the retained
//! block header arrives; `mosquitto_pub` runs with `-d`, whose debug lines
//! show the PUBACK and its 5.0 reason code.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::child::{KillOnDrop, Lines, Node, wait_exit, wait_for};
use common::rpc::{call, height, metrics, sample};
use common::{DEADLINE, devnet_validator, int_command, p};
use int_engine::crypto::bls::{SecretKey, tx_message};
use int_schemas::wire::{Token, TxStatus};
use int_schemas::{PayloadSpec, TxBodySpec, build_envelope, build_tx_body};
use serde_json::{Value, json};

/// Whether the mosquitto clients are on PATH; without them a test skips,
/// loudly, or fails under `CI=true`.
fn mosquitto_clients(test: &str) -> bool {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
    };
    if on_path("mosquitto_pub") && on_path("mosquitto_sub") {
        return true;
    }
    // CI installs mosquitto-clients through scripts/test: there the interop
    // checks must run, not be skipped.
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "mosquitto_pub/mosquitto_sub are missing under CI=true: scripts/test installs \
         mosquitto-clients (apt-get install mosquitto-clients)"
    );
    eprintln!(
        "\n\
         ********************************************************************\n\
         SKIPPED {test}: mosquitto_pub/mosquitto_sub not found\n\
         (apt-get install mosquitto-clients, or run scripts/test)\n\
         ********************************************************************\n"
    );
    false
}

/// A devnet with RPC and MQTT on ephemeral loopback ports. Killed when
/// dropped (before its data directory is removed).
struct Devnet {
    node: Node,
    dir: tempfile::TempDir,
    port: u16,
    chain_id: u32,
}

impl Devnet {
    fn start() -> Devnet {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(
            &mut int_command(&[
                "devnet",
                "--data-dir",
                p(dir.path()),
                "--devices",
                "4",
                "--users",
                "0",
                // Far longer than a test; the guard ends it.
                "--duration",
                "600",
                "--block-ms",
                "100",
                "--rpc-addr",
                "127.0.0.1:0",
                "--mqtt-addr",
                "127.0.0.1:0",
                "--json",
            ]),
            true,
        );
        let port = node.mqtt_port();
        let info = call(&node.rpc, "int_chainInfo", json!([]));
        let chain_id = info["chain_id"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or_else(|| panic!("no chain id: {info}"));
        Devnet {
            node,
            dir,
            port,
            chain_id,
        }
    }

    /// A devnet for `test`, or `None` (the test skips) without the
    /// mosquitto clients.
    fn for_mosquitto(test: &str) -> Option<Devnet> {
        mosquitto_clients(test).then(Devnet::start)
    }

    /// The validator's key, from devnet.json.
    fn validator(&self) -> SecretKey {
        devnet_validator(self.dir.path())
    }

    fn account(&self, id: &[u8; 32]) -> Value {
        call(&self.node.rpc, "int_getAccount", json!([hex::encode(id)]))
    }

    /// Waits until `id` holds at least `gas` GAS (the validator earns the
    /// devices' fees from the first blocks on); returns its next nonce.
    fn wait_for_gas(&self, id: &[u8; 32], gas: u128) -> u64 {
        let until = Instant::now() + DEADLINE;
        loop {
            let a = self.account(id);
            let held: u128 = a["gas"].as_str().and_then(|g| g.parse().ok()).unwrap_or(0);
            if held >= gas {
                return a["nonce"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no nonce: {a}"));
            }
            assert!(
                Instant::now() < until,
                "the account never held {gas} GAS: {a}\n{}",
                self.node.log.seen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the chain has a block at least `height` high.
    fn wait_for_height(&self, h: u64) {
        wait_for(&format!("block {h}"), || height(&self.node.rpc) >= h);
    }

    fn topic(&self, rest: &str) -> String {
        format!("int/{}/{rest}", self.chain_id)
    }

    /// Prometheus text of the RPC's `GET /metrics`.
    fn metrics(&self) -> String {
        metrics(&self.node.rpc)
    }

    /// Publishes to the transactions topic with `mosquitto_pub` (see
    /// [`publish`]).
    fn publish_tx(&self, version: Mqtt, payload: &[&str], scratch: &Path) -> Pub {
        publish(self.port, &self.topic("tx"), version, payload, scratch)
    }

    /// A new `version` subscriber to the blocks topic, and the header it
    /// got first, which must be the retained one.
    fn retained_header(&self, version: Mqtt) -> (Sub, Vec<u8>) {
        let blocks = self.topic("blocks");
        let sub = Sub::start(self, &blocks, version);
        let (retained, bytes) = sub.next_on(&blocks);
        assert!(retained, "the first header is the retained one");
        (sub, bytes)
    }
}

/// A transaction of the validator's, signed (or, with `sign_other`, signed
/// over other bytes: a valid envelope with a bad signature); (body,
/// envelope).
fn validator_tx(net: &Devnet, nonce: u64, sign_other: bool) -> (Vec<u8>, Vec<u8>) {
    let sk = net.validator();
    // The validator holds GAS (the fees it earned) but no INT, and GAS is
    // not transferable: a transfer of 0 INT is one it can make.
    let body = build_tx_body(&TxBodySpec {
        chain_id: net.chain_id,
        sender: sk.public_key().account_id(),
        nonce,
        fee: 1,
        payload: PayloadSpec::Transfer {
            to: [0x42; 32],
            amount: 0,
            token: Token::Int,
        },
    });
    let signed = if sign_other {
        b"not this transaction".to_vec()
    } else {
        body.clone()
    };
    let sig = sk.sign(&tx_message(net.chain_id, &signed)).to_bytes();
    let env = build_envelope(&body, &sig);
    (body, env)
}

/// The `-V` argument of the mosquitto clients.
#[derive(Clone, Copy, Debug)]
enum Mqtt {
    V311,
    V5,
}

impl Mqtt {
    fn arg(self) -> &'static str {
        match self {
            Mqtt::V311 => "mqttv311",
            Mqtt::V5 => "mqttv5",
        }
    }
}

/// A `mosquitto_sub` whose subscriptions the broker has taken: it also
/// subscribes to the blocks topic, whose retained header (there is one
/// once the chain has a block) arrives only after every filter of its one
/// SUBSCRIBE is in place. Its stdout is a pipe, which mosquitto_sub flushes
/// after each message (its `-d` debug lines it does not), so the messages
/// are all it prints: `-F "%r %t %x"`, the retain flag, the topic and the
/// payload as hex.
struct Sub {
    _kid: KillOnDrop,
    out: Lines,
    blocks: String,
}

impl Sub {
    fn start(net: &Devnet, topic: &str, version: Mqtt) -> Sub {
        net.wait_for_height(1);
        let blocks = net.topic("blocks");
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &net.port.to_string()])
            .args(["-V", version.arg(), "-t", topic]);
        if topic != blocks {
            cmd.args(["-t", &blocks]);
        }
        let mut child = cmd
            .args(["-F", "%r %t %x"])
            // mosquitto_sub's own deadline; the guard is the last resort.
            .args(["-W", &(2 * DEADLINE.as_secs()).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let sub = Sub {
            _kid: KillOnDrop(child),
            out: Lines::of(stdout),
            blocks,
        };
        if topic != sub.blocks {
            let blocks = sub.blocks.clone();
            let (retained, _) = sub.next_on(&blocks);
            assert!(retained, "the first header is the retained one");
        }
        sub
    }

    /// The next message on `topic`: (retained, payload); messages on other
    /// topics are skipped.
    fn next_on(&self, topic: &str) -> (bool, Vec<u8>) {
        let until = Instant::now() + DEADLINE;
        loop {
            let line = self
                .out
                .next(until, &format!("a message on {topic}"))
                .unwrap_or_else(|| panic!("mosquitto_sub exited:\n{}", self.out.seen()));
            let mut parts = line.splitn(3, ' ');
            let (Some(retain), Some(t), Some(payload)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("not `RETAIN TOPIC HEX`: {line:?}");
            };
            if t == topic {
                let payload = hex::decode(payload)
                    .unwrap_or_else(|e| panic!("payload not hex ({e}): {line:?}"));
                return (retain == "1", payload);
            }
        }
    }
}

/// What a `mosquitto_pub -d` run said and how it ended.
struct Pub {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `mosquitto_pub -d -q 1` to `topic` with `payload` (`-f FILE` or
/// `-m TEXT`), at most [`DEADLINE`].
fn publish(port: u16, topic: &str, version: Mqtt, payload: &[&str], scratch: &Path) -> Pub {
    let (out, err) = (scratch.join("pub.out"), scratch.join("pub.err"));
    let child = Command::new("mosquitto_pub")
        .args(["-d", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-V", version.arg(), "-t", topic, "-q", "1"])
        .args(payload)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("start mosquitto_pub");
    let mut kid = KillOnDrop(child);
    let code = wait_exit(&mut kid.0, "mosquitto_pub").code();
    Pub {
        code,
        stdout: std::fs::read_to_string(out).unwrap(),
        stderr: std::fs::read_to_string(err).unwrap(),
    }
}

/// Writes `bytes` to a file for `mosquitto_pub -f`.
fn payload_file(scratch: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn mosquitto_pub_tx_and_mosquitto_sub_receipt() {
    let Some(net) = Devnet::for_mosquitto("mosquitto_pub_tx_and_mosquitto_sub_receipt") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let me = net.validator().public_key().account_id();
    let receipts = net.topic(&format!("receipts/{}", hex::encode(me)));
    // Two fees of 1 GAS.
    let first = net.wait_for_gas(&me, 2);
    for (i, version) in [Mqtt::V311, Mqtt::V5].into_iter().enumerate() {
        let nonce = first + i as u64;
        let (body, env) = validator_tx(&net, nonce, false);
        let file = payload_file(scratch.path(), &format!("tx{i}.bin"), &env);
        let sub = Sub::start(&net, &receipts, version);
        let sent = net.publish_tx(version, &["-f", p(&file)], scratch.path());
        assert_eq!(
            sent.code,
            Some(0),
            "mosquitto_pub {version:?}:\n{}\n{}",
            sent.stdout,
            sent.stderr
        );
        // Admitted: a PUBACK without a refusal (3.1.1 has no reason codes;
        // 5.0 says success).
        assert!(sent.stdout.contains("received PUBACK"), "{}", sent.stdout);
        assert!(!sent.stderr.contains("failed"), "{}", sent.stderr);

        let (_, bytes) = sub.next_on(&receipts);
        let r = int_schemas::decode_receipt(&bytes).expect("a Receipt FlatBuffer");
        assert_eq!(r.status(), TxStatus::Ok, "{version:?}");
        assert!(r.height() > 0, "{version:?}: included in a block");
        let hash = *blake3::hash(&body).as_bytes();
        assert_eq!(r.tx_hash().0, hash, "{version:?}");
        // The chain agrees: the nonce moved past this transaction, and the
        // RPC's receipt at that place is this one.
        assert!(net.account(&me)["nonce"].as_u64() > Some(nonce));
        let at = call(
            &net.node.rpc,
            "int_getReceipt",
            json!([r.height(), r.index()]),
        );
        assert_eq!(
            at["tx_hash"].as_str(),
            Some(hex::encode(hash).as_str()),
            "{at}"
        );
        assert_eq!(at["status"], "Ok", "{at}");
    }
}

#[test]
fn refused_transaction_gets_a_refusal_receipt() {
    let Some(net) = Devnet::for_mosquitto("refused_transaction_gets_a_refusal_receipt") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let me = net.validator().public_key().account_id();
    let nonce = net.wait_for_gas(&me, 1);
    let (body, env) = validator_tx(&net, nonce, true);
    let file = payload_file(scratch.path(), "bad-signature.bin", &env);

    let receipts = net.topic(&format!("receipts/{}", hex::encode(me)));
    let sub = Sub::start(&net, &receipts, Mqtt::V5);
    let sent = net.publish_tx(Mqtt::V5, &["-f", p(&file)], scratch.path());
    // A 5.0 client is told: reason 0x80 (unspecified error), since a bad
    // signature has no reason code of its own.
    assert!(
        sent.stdout.contains("received PUBACK (Mid: 1, RC:128)"),
        "{}\n{}",
        sent.stdout,
        sent.stderr
    );
    let (_, bytes) = sub.next_on(&receipts);
    let r = int_schemas::decode_receipt(&bytes).expect("a Receipt FlatBuffer");
    assert_eq!(r.status(), TxStatus::BadSignature);
    assert_eq!(r.height(), 0, "refused before any block");
    assert_eq!(r.tx_hash().0, *blake3::hash(&body).as_bytes());
    assert_eq!(
        net.account(&me)["nonce"].as_u64(),
        Some(nonce),
        "a refused transaction moves no nonce"
    );

    // Bytes that are no envelope: a 5.0 PUBACK with reason 0x99 (payload
    // format invalid), which mosquitto_pub reports on stderr; its exit code
    // (0 in 2.0.11) is not part of that, so only that it exited by itself
    // is asserted.
    let sent = net.publish_tx(Mqtt::V5, &["-m", "garbage"], scratch.path());
    assert!(sent.code.is_some(), "mosquitto_pub was killed");
    assert!(
        sent.stdout.contains("received PUBACK (Mid: 1, RC:153)"),
        "{}\n{}",
        sent.stdout,
        sent.stderr
    );
    assert!(
        sent.stderr.contains("Payload format invalid"),
        "{}",
        sent.stderr
    );
    // A 3.1.1 client has no reason codes: its PUBACK only says the message
    // was taken.
    let sent = net.publish_tx(Mqtt::V311, &["-m", "garbage"], scratch.path());
    assert_eq!(sent.code, Some(0), "{}\n{}", sent.stdout, sent.stderr);
    assert!(sent.stdout.contains("received PUBACK"), "{}", sent.stdout);
}

#[test]
fn blocks_topic_retains_the_latest_header() {
    let Some(net) = Devnet::for_mosquitto("blocks_topic_retains_the_latest_header") else {
        return;
    };
    let blocks = net.topic("blocks");
    // Sent at once because it is retained, not the next live one.
    let (sub, bytes) = net.retained_header(Mqtt::V311);
    let h = int_schemas::decode_header(&bytes).expect("a BlockHeader FlatBuffer");
    assert!(h.height() >= 1);
    assert_eq!(h.chain_id(), net.chain_id);
    // Its BLAKE3 hash is the block hash the RPC names for that height.
    let b = call(&net.node.rpc, "int_getBlock", json!([h.height()]));
    assert_eq!(
        b["hash"].as_str(),
        Some(hex::encode(blake3::hash(&bytes).as_bytes()).as_str()),
        "{b}"
    );
    // Later headers come live, higher.
    let (retained, later) = sub.next_on(&blocks);
    assert!(!retained, "a live header is not flagged retained");
    let later = int_schemas::decode_header(&later).expect("a BlockHeader FlatBuffer");
    assert!(later.height() > h.height());

    // A 5.0 subscriber gets the retained one too.
    let (_sub, bytes) = net.retained_header(Mqtt::V5);
    let h = int_schemas::decode_header(&bytes).expect("a BlockHeader FlatBuffer");
    assert_eq!(h.chain_id(), net.chain_id);
}

/// Whether the server closes `s` (EOF or reset) within [`DEADLINE`];
/// anything it sends first is read and ignored.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let until = Instant::now() + DEADLINE;
    let mut buf = [0u8; 256];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn malformed_client_is_dropped_others_keep_working() {
    let Some(net) = Devnet::for_mosquitto("malformed_client_is_dropped_others_keep_working") else {
        return;
    };
    let blocks = net.topic("blocks");
    // A well-behaved client, connected before and kept throughout.
    let (before, _) = net.retained_header(Mqtt::V5);
    let addr = format!("127.0.0.1:{}", net.port);
    let hostile: [(&str, &[u8]); 2] = [
        // CONNECT whose remaining length never ends.
        (
            "a bad remaining length",
            &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        // PUBLISH (QoS 0, topic "a", payload "xy") before any CONNECT.
        (
            "a PUBLISH before CONNECT",
            &[0x30, 0x05, 0x00, 0x01, b'a', b'x', b'y'],
        ),
    ];
    for (what, bytes) in hostile {
        let mut s = TcpStream::connect(&addr).expect("connect to the gateway");
        s.write_all(bytes).unwrap();
        assert!(
            closed_by_server(&mut s),
            "the gateway kept a client that sent {what}"
        );
    }

    // Everyone else is still served: the client from before gets live
    // headers, and a new one connects and gets the retained one.
    let (retained, bytes) = before.next_on(&blocks);
    assert!(!retained);
    assert!(int_schemas::decode_header(&bytes).is_ok());
    let (_after, bytes) = net.retained_header(Mqtt::V311);
    assert!(int_schemas::decode_header(&bytes).is_ok());

    // And /metrics counts the connections and the two drops.
    let text = net.metrics();
    assert!(
        text.contains("# TYPE int_mqtt_dropped_total counter"),
        "{text}"
    );
    assert!(sample(&text, "int_mqtt_connections_total") >= 2.0, "{text}");
    assert!(sample(&text, "int_mqtt_connections") >= 2.0, "{text}");
    assert!(
        sample(&text, "int_mqtt_dropped_total{reason=\"malformed\"}") >= 2.0,
        "{text}"
    );
}

/// A listing published through the gateway comes back, once, on the topic
/// of a prefix of its geohash, as the body of the transaction that made it.
#[test]
fn a_listing_reaches_its_geohash_prefix_topic() {
    let Some(net) = Devnet::for_mosquitto("a_listing_reaches_its_geohash_prefix_topic") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let sk = net.validator();
    let me = sk.public_key().account_id();
    let nonce = net.wait_for_gas(&me, 1);
    // A region no simulated seller uses, so the only message on its topic
    // is ours.
    let listing = int_schemas::market::SkuListing {
        kind: 3,
        unit: int_schemas::wire::Unit::Second,
        terms: int_schemas::market::Terms {
            model: int_schemas::wire::PriceModel::PriceTag,
            period_blocks: 0,
            unit_price: 9,
        },
        capacity: 100,
        region: "zzzzzz".into(),
        authority: int_schemas::wire::Authority::Open,
        allow: Vec::new(),
        clusters: Vec::new(),
        metadata_hash: [5; 32],
    };
    let body = build_tx_body(&TxBodySpec {
        chain_id: net.chain_id,
        sender: me,
        nonce,
        fee: 1,
        payload: PayloadSpec::ListSku(Box::new(listing)),
    });
    let sig = sk.sign(&tx_message(net.chain_id, &body)).to_bytes();
    let file = payload_file(scratch.path(), "list.bin", &build_envelope(&body, &sig));
    let topic = net.topic("sku/compute/zzz");
    let sub = Sub::start(&net, &topic, Mqtt::V5);
    let sent = net.publish_tx(Mqtt::V5, &["-f", p(&file)], scratch.path());
    assert_eq!(sent.code, Some(0), "{}\n{}", sent.stdout, sent.stderr);
    let (retained, bytes) = sub.next_on(&topic);
    assert!(!retained);
    assert_eq!(bytes, body, "the ListSku's body");
    let decoded = int_schemas::decode_body(&bytes).expect("a TxBody");
    assert_eq!(decoded.nonce(), nonce, "the SKU id is (sender, nonce)");
}

/// `int bench mqtt` runs the same load against the gateway (with the node's
/// admission, and bare) and mosquitto, and every transaction is admitted.
#[test]
fn bench_mqtt_runs_the_gateway_beside_mosquitto() {
    // Bad sizes are clear errors, before anything starts.
    for (flag, value) in [
        ("--window", "70000"),
        ("--window", "0"),
        ("--connections", "0"),
        ("--messages", "4000000000"),
    ] {
        let (_, stderr) = common::run(&["bench", "mqtt", flag, value, "--mosquitto", "off"], 1);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let broker = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("mosquitto"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file());
    let Some(broker) = broker else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the mosquitto broker is missing under CI=true: scripts/test installs it"
        );
        eprintln!("SKIPPED bench_mqtt_runs_the_gateway_beside_mosquitto: no mosquitto broker");
        return;
    };
    let out = int_command(&["bench", "mqtt", "--connections", "8", "--messages", "25"])
        .args(["--window", "4", "--mqtt", "5", "--json", "--mosquitto"])
        .arg(&broker)
        .output()
        .expect("run int bench mqtt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for run in ["int", "int_broker_only", "mosquitto"] {
        assert_eq!(v[run]["connected"], 8, "{run}: {v}");
        assert_eq!(v[run]["acked"], 200, "{run}: {v}");
        assert_eq!(v[run]["refused"], 0, "{run}: {v}");
        assert!(v[run]["msgs_per_s"].as_f64().unwrap() > 0.0, "{run}: {v}");
        let l = &v[run]["latency_us"];
        assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
    }
    assert_eq!(v["int_admitted_to_mempool"], 200, "{v}");
    assert!(v["ratio_int_to_mosquitto"].as_f64().unwrap() > 0.0);
}
