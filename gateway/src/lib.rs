//! The MQTT device gateway: a small, bounded MQTT broker on a `mio` event
//! loop (DESIGN: devices reach the chain over MQTT, no async runtime).
//!
//! The crate knows MQTT, not the chain: clients publish to one ingest topic
//! and the node answers each message with a [`Verdict`]; the node publishes
//! [`Message`]s (headers, receipts, listings) that the broker delivers to
//! whoever subscribed. The node side (`int-node`'s `mqtt.rs`) decides what
//! the bytes are.

pub mod broker;
pub mod client;
pub mod load;
pub mod packet;
pub mod topic;

pub use broker::{Config, Event, Gateway, Handle, Ingested, Message, Stats, Ticket, Verdict, bind};
pub use bytes::Bytes;
pub use packet::{PacketError, Refusal, Version};
