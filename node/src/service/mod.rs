//! The services of a running node.

pub mod mqtt;
pub mod node;
pub mod rpc;
pub mod spec;
