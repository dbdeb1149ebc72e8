//! The INT node as a library; the `int` binary parses arguments and calls
//! it.
//!
//! - [`service`]: what a running node is — the node itself (store, chain
//!   and its plugins, ingress with admission, the block loop), the
//!   JSON-RPC server and read model, the MQTT gateway's ingest and
//!   publisher.
//! - [`cli`]: one module per subcommand (`int devnet`, `int run`,
//!   `int state`, `int market`, `int keys`, `int tx`, `int zk`, `int gpu`).
//! - [`sim`]: the devnet's simulators (devices, BPK users, the market).
//! - [`bench`]: the harnesses behind `int bench tps|mqtt|gpu`, which run the
//!   node's own paths.
//! - [`accel`], [`config`], [`keystore`], [`rpc_client`]: the GPU behind the
//!   verifiers' seams, `int run`'s configuration file, EIP-2335 keystores,
//!   and the JSON-RPC client of `int tx`.

pub mod accel;
pub mod bench;
pub mod cli;
pub mod config;
pub mod keystore;
pub mod rpc_client;
pub mod service;
pub mod sim;
