//! The devnet's simulators: devices that register and send transfers, BPK
//! users that send anonymous intents, and a market of sellers, buyers and
//! oracles. Each feeds the node's ingress like any other client.

pub mod bpk;
pub mod fleet;
pub mod market;
