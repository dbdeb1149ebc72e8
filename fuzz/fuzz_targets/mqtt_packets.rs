//! Hostile bytes into the MQTT gateway's decoding path, as one client's
//! stream: framing with the packet bound, the CONNECT's protocol level, then
//! each packet decoded for the level the CONNECT chose. Nothing may panic.
#![no_main]

use int_gateway::packet::{self, Inbound, Version};
use libfuzzer_sys::fuzz_target;

const PACKET_BYTES_MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut version: Option<Version> = None;
    while let Ok(Some(len)) = packet::frame_len(rest, PACKET_BYTES_MAX) {
        let Some(frame) = rest.get(..len) else { break };
        rest = &rest[len..];
        let v = match version {
            Some(v) => v,
            None => match packet::connect_version(frame) {
                Ok(v) => v,
                Err(_) => break,
            },
        };
        match packet::decode(frame, v) {
            Ok(Inbound::Connect(c)) => version = Some(c.version),
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
