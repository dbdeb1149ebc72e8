//! `int bench mqtt`: the same client load (connections publishing signed
//! transfers at QoS 1 with a window in flight) against three brokers, side
//! by side in one run:
//!
//! - `int`: the gateway with the node's real admission behind it (decoding,
//!   batched BLS verification, mempool), so a PUBACK means "admitted";
//! - `int_broker_only`: the same gateway with a stand-in node that admits
//!   at once, so the broker itself is measured;
//! - `mosquitto`: a mosquitto broker started on loopback (PUBACK on receipt).
//!
//! Each reports messages/s (PUBACKs from the first PUBLISH to the last
//! PUBACK) and PUBLISH-to-PUBACK latency percentiles.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::service::spec::ChainSpec;
use crate::sim::fleet::{Fleet, now_ms, validator_account};
use anyhow::{Context, Result, bail};
use clap::Args;
use int_engine::chain::ChainConfig;
use int_engine::crypto::bls::{CpuG1, SecretKey};
use int_engine::mempool::{Mempool, NONCE_AHEAD_MAX};
use int_gateway::load::{self, LoadConfig, LoadReport};
use int_gateway::{Config, Gateway, Version};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::service::node::{Admitter, Stats};

/// Arguments of `int bench mqtt`.
#[derive(Args, Debug, Clone)]
pub struct MqttBenchArgs {
    /// Concurrent client connections (one funded device account each).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Transactions each connection publishes.
    #[arg(long, default_value_t = 100)]
    messages: u64,
    /// Messages per second per connection (0: as fast as the window allows).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// QoS 1 messages each connection keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// MQTT version the clients speak.
    #[arg(long, default_value = "3.1.1", value_parser = ["3.1.1", "5"])]
    mqtt: String,
    /// The mosquitto binary (`off`: no mosquitto run).
    #[arg(long, default_value = "mosquitto")]
    mosquitto: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

impl MqttBenchArgs {
    /// Whether to print JSON.
    pub fn json(&self) -> bool {
        self.json
    }
}

const CHAIN_ID: u32 = 7;
/// Most transactions one run signs and publishes.
const TOTAL_MESSAGES_MAX: u128 = 10_000_000;
const DEADLINE: Duration = Duration::from_secs(300);

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn load_cfg(a: &MqttBenchArgs, addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        addr,
        connections: a.connections,
        messages_per_connection: a.messages,
        rate_per_connection: a.rate,
        window: a.window,
        topic: format!("int/{CHAIN_ID}/tx"),
        version: if a.mqtt == "5" {
            Version::V5
        } else {
            Version::V3
        },
        deadline: DEADLINE,
    }
}

fn gateway_cfg(a: &MqttBenchArgs) -> Config {
    Config {
        connections_max: a.connections + 16,
        // The bench measures capacity: no per-connection rate bound.
        publish_rate_max: 0,
        ..Config::for_chain(CHAIN_ID)
    }
}

/// Runs the load against a gateway whose node answers with `admit`.
fn run_gateway(
    a: &MqttBenchArgs,
    payloads: &[Vec<Vec<u8>>],
    admit: &(dyn Fn(Vec<Vec<u8>>) -> Vec<Result<(), int_schemas::wire::TxStatus>> + Sync),
) -> Result<LoadReport> {
    let listener = int_gateway::bind("127.0.0.1:0".parse()?)?;
    let (gw, handle, ingest) = Gateway::new(listener, gateway_cfg(a))?;
    let addr = gw.local_addr()?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || {
            if let Err(e) = gw.run(stop) {
                tracing::warn!(%e, "gateway");
            }
        });
        let h = handle.clone();
        s.spawn(move || crate::service::mqtt::serve_ingest(&ingest, &h, CHAIN_ID, admit, stop));
        let report = load::run(&load_cfg(a, addr), &|i, seq| {
            payloads[i][seq as usize].clone()
        })
        .context("driving the gateway (for many connections, raise `ulimit -n`)");
        stop.store(true, Ordering::SeqCst);
        report
    })
}

/// A free loopback port (bound and released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The mosquitto binary: `bin` itself when it is a path, else the first on
/// PATH, else Debian's `/usr/sbin` (not on a normal user's PATH).
fn find_mosquitto(bin: &str) -> PathBuf {
    if bin.contains('/') {
        return PathBuf::from(bin);
    }
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(bin))
}

/// Starts mosquitto on a free loopback port and waits until it accepts.
fn start_mosquitto(bin: &str, dir: &Path) -> Result<(Killed, SocketAddr)> {
    let bin = find_mosquitto(bin);
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
             max_inflight_messages 0\nmax_queued_messages 0\n"
        ),
    )?;
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install mosquitto, or pass --mosquitto PATH or off)",
                bin.display()
            )
        })?;
    let child = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let began = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if began.elapsed() > Duration::from_secs(10) {
            bail!("mosquitto did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, addr))
}

/// Runs the bench; the report as JSON.
pub fn run(a: &MqttBenchArgs) -> Result<Value> {
    if a.connections == 0 || a.messages == 0 || a.window == 0 {
        bail!("--connections, --messages and --window must be at least 1");
    }
    if a.window >= usize::from(u16::MAX) {
        bail!("--window is at most {} (MQTT packet ids)", u16::MAX - 1);
    }
    // No block is committed during the runs: every nonce is ahead of the
    // committed one, and the mempool refuses those too far ahead.
    if a.messages > NONCE_AHEAD_MAX {
        bail!(
            "--messages is at most {NONCE_AHEAD_MAX}: this bench commits no blocks, and the mempool admits a sender's nonces at most that far ahead of its committed one"
        );
    }
    // Every transaction is signed before the runs (about 300 bytes each).
    let total = (a.connections as u128) * u128::from(a.messages);
    if total > TOTAL_MESSAGES_MAX {
        bail!(
            "--connections × --messages is {total}, at most {TOTAL_MESSAGES_MAX} (they are signed in memory first)"
        );
    }
    let dir = TempDir(std::env::temp_dir().join(format!("int-bench-mqtt-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;

    // A chain with one funded account per connection.
    let store = int_engine::storage::open(&dir.0.join("db"))?;
    let validator = SecretKey::from_seed(&[7; 32]);
    let fleet = Fleet::derive(a.connections, &[9; 32]);
    let mut chain = ChainSpec::cpu().open(
        store.clone(),
        ChainConfig {
            chain_id: CHAIN_ID,
            hot_capacity: 1024.max(a.connections * 2),
            parallel: true,
        },
    )?;
    // Registered at genesis, so every transfer is admissible.
    let mut alloc = fleet.genesis_alloc();
    for ((_, rec), key) in alloc.iter_mut().zip(&fleet.keys) {
        rec.public_key = Some(key.public_key().to_bytes());
    }
    alloc.push(validator_account(&validator));
    chain.genesis(&alloc, now_ms(), &validator)?;
    drop(chain);

    eprintln!(
        "signing {} transfers for {} connections…",
        a.connections as u64 * a.messages,
        a.connections
    );
    let n = a.connections;
    let payloads: Vec<Vec<Vec<u8>>> = (0..n)
        .into_par_iter()
        .map(|i| {
            (0..a.messages)
                .map(|seq| fleet.transfer_tx(CHAIN_ID, i, seq, fleet.ids[(i + 1) % n], 1))
                .collect()
        })
        .collect();

    eprintln!("gateway, broker only…");
    let instant = |b: Vec<Vec<u8>>| vec![Ok(()); b.len()];
    let broker_only = run_gateway(a, &payloads, &instant)?;

    eprintln!("gateway with the node's admission…");
    let mempool = Mutex::new(Mempool::new(1 << 22));
    let stats = Stats::default();
    let g1 = CpuG1;
    let admitter = Admitter::new(&*store, CHAIN_ID, None, &g1, &mempool, &stats);
    let admit = |b: Vec<Vec<u8>>| admitter.admit(b);
    let int = run_gateway(a, &payloads, &admit)?;
    let admitted = mempool.lock().map(|p| p.len()).unwrap_or(0);
    if admitted as u64 != int.acked {
        tracing::warn!(
            admitted,
            acked = int.acked,
            "not every acknowledged transaction was admitted"
        );
    }

    let mosquitto = if a.mosquitto == "off" {
        None
    } else {
        eprintln!("mosquitto…");
        let (_child, addr) = start_mosquitto(&a.mosquitto, &dir.0)?;
        Some(
            load::run(&load_cfg(a, addr), &|i, seq| {
                payloads[i][seq as usize].clone()
            })
            .context("driving mosquitto")?,
        )
    };

    let ratio = |x: &LoadReport| {
        mosquitto
            .as_ref()
            .filter(|m| m.msgs_per_s > 0.0)
            .map(|m| x.msgs_per_s / m.msgs_per_s)
    };
    Ok(json!({
        "connections": a.connections,
        "messages_per_connection": a.messages,
        "rate_per_connection": a.rate,
        "window": a.window,
        "mqtt": a.mqtt,
        "cores": std::thread::available_parallelism().map_or(1, |c| c.get()),
        "int": int.to_json(),
        "int_admitted_to_mempool": admitted,
        "int_broker_only": broker_only.to_json(),
        "mosquitto": mosquitto.as_ref().map(LoadReport::to_json),
        "ratio_int_to_mosquitto": ratio(&int),
        "ratio_broker_only_to_mosquitto": ratio(&broker_only),
    }))
}

/// Prints the report as a table.
pub fn print_table(v: &Value) {
    println!(
        "{} connections × {} messages, window {}, rate {}/s per connection (0: unbounded), MQTT {}, {} cores",
        v["connections"],
        v["messages_per_connection"],
        v["window"],
        v["rate_per_connection"],
        v["mqtt"].as_str().unwrap_or("?"),
        v["cores"]
    );
    println!(
        "{:<18} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "broker", "msg/s", "acked", "refused", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    for k in ["int", "int_broker_only", "mosquitto"] {
        let r = &v[k];
        if r.is_null() {
            continue;
        }
        println!(
            "{:<18} {:>10.0} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            k,
            r["msgs_per_s"].as_f64().unwrap_or(0.0),
            r["acked"].as_u64().unwrap_or(0),
            r["refused"].as_u64().unwrap_or(0),
            r["latency_us"]["p50"].as_u64().unwrap_or(0),
            r["latency_us"]["p90"].as_u64().unwrap_or(0),
            r["latency_us"]["p99"].as_u64().unwrap_or(0),
            r["latency_us"]["max"].as_u64().unwrap_or(0)
        );
    }
    println!(
        "int: {} of them admitted to the mempool",
        v["int_admitted_to_mempool"].as_u64().unwrap_or(0)
    );
    for k in ["ratio_int_to_mosquitto", "ratio_broker_only_to_mosquitto"] {
        if let Some(x) = v[k].as_f64() {
            println!("{k}: {x:.2}");
        }
    }
}
