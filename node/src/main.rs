//! `int`: the INT node's daemon and command line.
//!
//! The binary's edge: argument parsing, logging, and turning library errors
//! into messages (`anyhow`). The work is in the `int_node` library.

use int_node::bench::mqtt as bench_mqtt;
use int_node::cli::{devnet, gpu, keys, market, print, run, state, tx as tx_cmd, zk};
use int_node::config;
use int_node::service::{mqtt, rpc};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// INT: a ledger and market for machines.
#[derive(Parser)]
#[command(name = "int", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a single-validator devnet with simulated devices.
    Devnet(DevnetArgs),
    /// Run a node from its configuration file (validator key from a
    /// keystore; see `int config default`).
    Run(RunArgs),
    /// The node's configuration file.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Show and audit the state in a data directory.
    State(StateArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Zero-knowledge BPK proofs: Groth16 setup, prove, verify, snarkjs
    /// export (errors exit 2).
    Zk {
        #[command(subcommand)]
        cmd: zk::ZkCmd,
    },
    /// The GPU layer: adapter, backend, features and limits.
    Gpu {
        #[command(subcommand)]
        cmd: gpu::GpuCmd,
    },
    /// The resource market: SKUs on offer (by kind, region, price).
    Market {
        #[command(subcommand)]
        cmd: market::MarketCmd,
    },
    /// Validator and device BLS keys in EIP-2335 keystore files (password:
    /// $INT_KEYSTORE_PASSWORD, else asked on the terminal).
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCmd,
    },
    /// Build, sign and send transactions through a node's JSON-RPC.
    Tx {
        #[command(subcommand)]
        cmd: tx_cmd::TxCmd,
    },
}

#[derive(Args)]
struct DevnetArgs {
    /// Data directory (LMDB and the devnet's key file).
    #[arg(long, default_value = "int-data")]
    data_dir: PathBuf,
    /// Number of simulated devices (at genesis).
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Block interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    block_ms: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Most transactions per block.
    #[arg(long, default_value_t = 50_000)]
    block_txs_max: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Write a pprof flamegraph of the run to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    flamegraph: Option<PathBuf>,
    /// Simulated BPK users sending anonymous intents (at genesis; 0 turns
    /// intents off).
    #[arg(long, default_value_t = 8)]
    users: usize,
    /// Milliseconds between two anonymous intents.
    #[arg(long, default_value_t = 1000)]
    intent_ms: u64,
    /// Where batch verification's curve arithmetic runs: auto (a hardware
    /// GPU for large batches, else all CPU cores), cpu, or gpu (any
    /// adapter, error without one). Default: $INT_ACCEL, else auto.
    #[arg(long, value_name = "auto|cpu|gpu")]
    accel: Option<String>,
    /// Address of the JSON-RPC server (`off` for none). When the port is
    /// taken, another is chosen and logged.
    #[arg(long, default_value = rpc::DEFAULT_ADDR, value_name = "ADDR|off")]
    rpc_addr: String,
    /// Address of the MQTT device gateway (`off` for none). When the port
    /// is taken, another is chosen and logged.
    #[arg(long, default_value = mqtt::DEFAULT_ADDR, value_name = "ADDR|off")]
    mqtt_addr: String,
}

#[derive(Args)]
struct RunArgs {
    /// The configuration file (TOML; `int config default` prints one).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the default configuration, every key commented; `int run
    /// --config` accepts it as is.
    Default,
}

#[derive(Args)]
struct StateArgs {
    /// Data directory.
    #[arg(long, default_value = "int-data", global = true)]
    data_dir: PathBuf,
    /// Chain id (1 is the relay chain).
    #[arg(long, default_value_t = 1, global = true)]
    chain_id: u32,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<StateCmd>,
}

#[derive(Subcommand)]
enum StateCmd {
    /// One account by id (64 hex digits).
    Account {
        /// Account id.
        id: String,
        /// Add a Merkle proof against the head's state root.
        #[arg(long)]
        proof: bool,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Throughput: raw BLS bound, signed transfers end to end, and
    /// execution + commit over many accounts.
    Tps(int_node::bench::tps::TpsArgs),
    /// The state at growing populations: for each `--accounts`, a bulk
    /// genesis, blocks of random transfers, a reopen as after a kill.
    Scale(int_node::bench::scale::ScaleArgs),
    /// GPU kernels beside their CPU references (field, scalar
    /// multiplications and MSM on both curves, hash to G1, Poseidon),
    /// naming the adapter.
    Gpu(int_node::bench::gpu::GpuArgs),
    /// The MQTT gateway under client load (signed transactions at QoS 1),
    /// with the node's admission, as a bare broker, and mosquitto beside it.
    Mqtt(bench_mqtt::MqttBenchArgs),
}

/// The value of `--FLAG ADDR|off`: the address, or `None` for `off`.
fn addr_or_off(flag: &str, s: &str) -> Result<Option<std::net::SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("--{flag} {s:?} is not HOST:PORT"))
}

fn main() -> Result<ExitCode> {
    // `int … | head`: when the reader goes away, end quietly as Unix tools
    // do, instead of panicking in println!. Sockets are unaffected: the
    // standard library sends with MSG_NOSIGNAL.
    #[cfg(unix)]
    // SAFETY: sets the disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // arkworks opens a tracing span (targets `gr1cs`, `r1cs`) per allocated
    // variable and records the span stack with every constraint; under the fmt
    // subscriber a Groth16 setup of the BPK circuit then grows to tens of GB.
    // Those targets stay off whatever RUST_LOG says.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("gr1cs=off".parse().expect("static directive"))
        .add_directive("r1cs=off".parse().expect("static directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Devnet(a) => {
            let s = devnet::run(&devnet::DevnetOpts {
                data_dir: a.data_dir,
                devices: a.devices,
                block_ms: a.block_ms,
                duration_s: a.duration,
                block_txs_max: a.block_txs_max,
                flamegraph: a.flamegraph,
                users: a.users,
                intent_ms: a.intent_ms,
                accel: match &a.accel {
                    Some(v) => v.parse()?,
                    None => int_gpu::Accel::from_env()?,
                },
                rpc_addr: addr_or_off("rpc-addr", &a.rpc_addr)?,
                mqtt_addr: addr_or_off("mqtt-addr", &a.mqtt_addr)?,
            })?;
            print(&serde_json::to_value(&s)?, a.json)?;
        }
        Cmd::Run(a) => {
            let s = run::run(&run::RunOpts {
                config: a.config,
                duration_s: a.duration,
            })?;
            print(&serde_json::to_value(&s)?, a.json)?;
        }
        Cmd::Config { cmd } => match cmd {
            ConfigCmd::Default => print!("{}", config::DEFAULT_TOML),
        },
        Cmd::State(a) => {
            let v = match a.cmd {
                None => state::summary(&a.data_dir, a.chain_id)?,
                Some(StateCmd::Account { id, proof }) => {
                    state::account(&a.data_dir, a.chain_id, &id, proof)?
                }
            };
            print(&v, a.json)?;
        }
        Cmd::Bench { cmd } => match cmd {
            BenchCmd::Tps(args) => {
                let report = int_node::bench::tps::run(&args)?;
                print(&serde_json::to_value(&report)?, args.json)?;
            }
            BenchCmd::Scale(args) => {
                let report = int_node::bench::scale::run(&args)?;
                print(&serde_json::to_value(&report)?, args.json)?;
            }
            BenchCmd::Mqtt(args) => {
                let report = bench_mqtt::run(&args)?;
                if args.json() {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    bench_mqtt::print_table(&report);
                }
            }
            BenchCmd::Gpu(args) => {
                let report = int_node::bench::gpu::run(&args)?;
                if args.json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "adapter {} ({}, {}), shader_int64 {}, cpu threads {}",
                        report.adapter,
                        report.backend,
                        report.device_type,
                        report.shader_int64,
                        report.cpu_threads
                    );
                    let w = report
                        .rows
                        .iter()
                        .map(|r| r.kernel.len())
                        .fold(26, usize::max);
                    println!(
                        "{:<w$} {:>8} {:>12} {:>12} {:>8} {:>9}",
                        "kernel", "n", "gpu_ms", "cpu_ms", "cpu/gpu", "vs 32-bit"
                    );
                    for r in &report.rows {
                        // vs 32-bit: the mul_chain rows' time over the
                        // 32-bit baseline layout's (blank elsewhere).
                        let vs = r.vs_32.map(|v| format!("{v:.3}")).unwrap_or_default();
                        println!(
                            "{:<w$} {:>8} {:>12.3} {:>12.3} {:>8.3} {:>9}",
                            r.kernel, r.n, r.gpu_ms, r.cpu_ms, r.speedup, vs
                        );
                    }
                }
            }
        },
        Cmd::Zk { cmd } => return Ok(zk::run(cmd)),
        Cmd::Gpu { cmd } => return gpu::run(cmd),
        Cmd::Market { cmd } => market::run(cmd)?,
        Cmd::Keys { cmd } => keys::run(cmd)?,
        Cmd::Tx { cmd } => {
            let (v, json) = tx_cmd::run(cmd)?;
            print(&v, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
