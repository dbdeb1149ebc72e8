//! MQTT packets as the gateway sees them: framing (the fixed header and the
//! remaining length, checked against the packet size bound before a byte of
//! the body is buffered), the protocol level of a CONNECT, the few inbound
//! packets a broker acts on, and the outbound packets it writes, for MQTT
//! 3.1.1 and 5.0 alike.
//!
//! Packet bodies are decoded and encoded by `mqtt-proto`: it decodes
//! synchronously from a byte slice (what a mio loop has), needs no async
//! runtime, covers 3.1, 3.1.1 and 5.0 with their properties, and is the codec
//! of a maintained broker (akasa). What it does not do is bound a packet
//! before it has arrived or tell how many bytes a packet used; that is
//! [`frame_len`] here.

use bytes::Bytes;
use mqtt_proto::{Pid, QoS, QosPid, TopicFilter, TopicName, v3, v5};

/// The protocol a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1 and 3.1.1 (levels 3 and 4): no properties, no reason codes.
    V3,
    /// MQTT 5.0 (level 5).
    V5,
}

/// Why bytes are not an acceptable packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The remaining length says the packet is larger than this gateway takes.
    #[error("packet of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The packet's whole length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The remaining length runs past four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The first packet is not a CONNECT.
    #[error("the first packet must be CONNECT")]
    NotConnect,
    /// A CONNECT with a protocol name or level this gateway does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedLevel(u8),
    /// The body does not decode (the codec's message).
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// A packet a client may not send, or not now.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// The length of the packet at the start of `buf`: `Ok(None)` while its
/// fixed header is incomplete; the whole length (fixed header included)
/// once it is known, which may be more than `buf` holds. Errors when the
/// length is malformed or above `max` (checked before the body arrives, so
/// a hostile length never makes the gateway buffer it).
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, PacketError> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let len = 2 + i + remaining;
            if len > max {
                return Err(PacketError::TooLarge { len, max });
            }
            return Ok(Some(len));
        }
    }
    Err(PacketError::BadLength)
}

/// The protocol of a complete CONNECT packet, read from its variable header
/// (protocol name and level) before the body is decoded.
pub fn connect_version(frame: &[u8]) -> Result<Version, PacketError> {
    if frame.first().map(|b| b >> 4) != Some(1) {
        return Err(PacketError::NotConnect);
    }
    if frame_len(frame, usize::MAX)?.is_none() {
        return Err(PacketError::Malformed("truncated CONNECT".into()));
    }
    let body = frame.get(1 + remaining_digits(frame)..).unwrap_or(&[]);
    let name_len = match body {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
        _ => return Err(PacketError::Malformed("truncated CONNECT".into())),
    };
    let name = body.get(2..2 + name_len);
    let level = body.get(2 + name_len).copied();
    match (name, level) {
        (Some(b"MQTT"), Some(4)) | (Some(b"MQIsdp"), Some(3)) => Ok(Version::V3),
        (Some(b"MQTT"), Some(5)) => Ok(Version::V5),
        (Some(_), Some(l)) => Err(PacketError::UnsupportedLevel(l)),
        _ => Err(PacketError::Malformed("truncated CONNECT".into())),
    }
}

/// How many bytes the remaining length of `frame` takes (1 to 4).
fn remaining_digits(frame: &[u8]) -> usize {
    frame
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |p| p + 1)
}

/// The CONNECT fields the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 3.1.1 or 5.0.
    pub version: Version,
    /// Keep-alive in seconds (0: none).
    pub keep_alive_s: u16,
    /// The client identifier (may be empty).
    pub client_id: String,
    /// 5.0: how many QoS 1 messages the client takes unacknowledged.
    pub receive_max: u16,
    /// 5.0: the largest packet the client takes.
    pub packet_bytes_max: Option<u32>,
}

/// A packet from a client, reduced to what a broker acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Opens the session.
    Connect(Connect),
    /// A message.
    Publish {
        /// Its topic.
        topic: TopicName,
        /// QoS and packet id.
        qos_pid: QosPid,
        /// The bytes.
        payload: Bytes,
    },
    /// The client acknowledges a QoS 1 message.
    Puback(u16),
    /// New subscriptions, each with its requested QoS.
    Subscribe {
        /// Packet id for the SUBACK.
        pid: u16,
        /// Filters and requested QoS.
        filters: Vec<(TopicFilter, QoS)>,
    },
    /// Subscriptions to end.
    Unsubscribe {
        /// Packet id for the UNSUBACK.
        pid: u16,
        /// Filters.
        filters: Vec<TopicFilter>,
    },
    /// Keep-alive.
    Pingreq,
    /// The client leaves.
    Disconnect,
}

/// Decodes one complete packet (`frame` is exactly its bytes) of a
/// connection speaking `version`.
pub fn decode(frame: &[u8], version: Version) -> Result<Inbound, PacketError> {
    match version {
        Version::V3 => decode_v3(frame),
        Version::V5 => decode_v5(frame),
    }
}

fn malformed(e: impl std::fmt::Display) -> PacketError {
    PacketError::Malformed(e.to_string())
}

fn decode_v3(frame: &[u8]) -> Result<Inbound, PacketError> {
    let packet = v3::Packet::decode(frame)
        .map_err(malformed)?
        .ok_or_else(|| malformed("truncated packet"))?;
    Ok(match packet {
        v3::Packet::Connect(c) => Inbound::Connect(Connect {
            version: Version::V3,
            keep_alive_s: c.keep_alive,
            client_id: c.client_id.to_string(),
            receive_max: u16::MAX,
            packet_bytes_max: None,
        }),
        v3::Packet::Publish(p) => Inbound::Publish {
            topic: p.topic_name,
            qos_pid: p.qos_pid,
            payload: p.payload,
        },
        v3::Packet::Puback(pid) => Inbound::Puback(pid.value()),
        v3::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid.value(),
            filters: s.topics,
        },
        v3::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics,
        },
        v3::Packet::Pingreq => Inbound::Pingreq,
        v3::Packet::Disconnect => Inbound::Disconnect,
        v3::Packet::Pubrec(_) | v3::Packet::Pubrel(_) | v3::Packet::Pubcomp(_) => {
            return Err(PacketError::Protocol("QoS 2 is not supported"));
        }
        v3::Packet::Connack(_)
        | v3::Packet::Suback(_)
        | v3::Packet::Unsuback(_)
        | v3::Packet::Pingresp => return Err(PacketError::Protocol("a server-only packet")),
    })
}

fn decode_v5(frame: &[u8]) -> Result<Inbound, PacketError> {
    let packet = v5::Packet::decode(frame)
        .map_err(malformed)?
        .ok_or_else(|| malformed("truncated packet"))?;
    Ok(match packet {
        v5::Packet::Connect(c) => Inbound::Connect(Connect {
            version: Version::V5,
            keep_alive_s: c.keep_alive,
            client_id: c.client_id.to_string(),
            receive_max: c.properties.receive_max.unwrap_or(u16::MAX),
            packet_bytes_max: c.properties.max_packet_size,
        }),
        v5::Packet::Publish(p) => {
            if p.properties.topic_alias.is_some() {
                return Err(PacketError::Protocol("topic aliases are not accepted"));
            }
            Inbound::Publish {
                topic: p.topic_name,
                qos_pid: p.qos_pid,
                payload: p.payload,
            }
        }
        v5::Packet::Puback(p) => Inbound::Puback(p.pid.value()),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pid: s.pid.value(),
            filters: s.topics.into_iter().map(|(f, o)| (f, o.max_qos)).collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pid: u.pid.value(),
            filters: u.topics,
        },
        v5::Packet::Pingreq => Inbound::Pingreq,
        v5::Packet::Disconnect(_) => Inbound::Disconnect,
        v5::Packet::Pubrec(_) | v5::Packet::Pubrel(_) | v5::Packet::Pubcomp(_) => {
            return Err(PacketError::Protocol("QoS 2 is not supported"));
        }
        v5::Packet::Auth(_) => return Err(PacketError::Protocol("AUTH is not supported")),
        v5::Packet::Connack(_)
        | v5::Packet::Suback(_)
        | v5::Packet::Unsuback(_)
        | v5::Packet::Pingresp => return Err(PacketError::Protocol("a server-only packet")),
    })
}

/// How a refused message or subscription is answered (the 5.0 reason code;
/// 3.1.1 has none for a PUBACK and `0x80` for a SUBACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The payload is not what the topic takes (5.0: 0x99).
    PayloadInvalid,
    /// The node is over a bound (5.0: 0x97, quota exceeded).
    Busy,
    /// The client may not publish or subscribe there (5.0: 0x87).
    NotAuthorized,
    /// Refused for a reason of the node (5.0: 0x80).
    Unspecified,
}

/// What the gateway writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Accepts a CONNECT. `receive_max` and `packet_bytes_max` are the
    /// gateway's bounds, told to 5.0 clients; `assigned_id` is sent when
    /// the client gave none.
    Connack {
        /// In-flight QoS 1 messages the gateway takes per client.
        receive_max: u16,
        /// The gateway's packet bound.
        packet_bytes_max: u32,
        /// The client id the gateway assigned, for an empty one (5.0).
        assigned_id: Option<&'a str>,
    },
    /// Refuses a CONNECT for its protocol level (3.1.1: return code 1).
    ConnackBadVersion,
    /// Acknowledges a QoS 1 message, or refuses it (5.0 only; 3.1.1 has
    /// nothing but the acknowledgement).
    Puback(u16, Option<Refusal>),
    /// Answers a SUBSCRIBE: the granted QoS or the refusal of each filter.
    Suback(u16, &'a [Result<QoS, Refusal>]),
    /// Answers an UNSUBSCRIBE of `n` filters.
    Unsuback(u16, usize),
    /// Answers a PINGREQ.
    Pingresp,
    /// A message to a subscriber.
    Publish {
        /// Topic name.
        topic: &'a TopicName,
        /// QoS and packet id.
        qos_pid: QosPid,
        /// Retained-message flag.
        retain: bool,
        /// The bytes.
        payload: &'a Bytes,
    },
    /// 5.0: the gateway closes the connection with this reason code.
    Disconnect(u8),
}

fn pid(v: u16) -> Result<Pid, PacketError> {
    Pid::try_from(v).map_err(|_| PacketError::Protocol("packet id 0"))
}

/// Appends the bytes of `p`, as `version` writes it, to `out`.
pub fn encode(p: &Outbound<'_>, version: Version, out: &mut Vec<u8>) -> Result<(), PacketError> {
    match version {
        Version::V3 => encode_v3(p, out),
        Version::V5 => encode_v5(p, out),
    }
}

fn encode_v3(p: &Outbound<'_>, out: &mut Vec<u8>) -> Result<(), PacketError> {
    let packet = match p {
        Outbound::Connack { .. } => v3::Packet::Connack(v3::Connack {
            session_present: false,
            code: v3::ConnectReturnCode::Accepted,
        }),
        Outbound::ConnackBadVersion => v3::Packet::Connack(v3::Connack {
            session_present: false,
            code: v3::ConnectReturnCode::UnacceptableProtocolVersion,
        }),
        Outbound::Puback(id, _) => v3::Packet::Puback(pid(*id)?),
        Outbound::Suback(id, codes) => v3::Packet::Suback(v3::Suback {
            pid: pid(*id)?,
            topics: codes
                .iter()
                .map(|c| match c {
                    Ok(QoS::Level0) => v3::SubscribeReturnCode::MaxLevel0,
                    Ok(_) => v3::SubscribeReturnCode::MaxLevel1,
                    Err(_) => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        }),
        Outbound::Unsuback(id, _) => v3::Packet::Unsuback(pid(*id)?),
        Outbound::Pingresp => v3::Packet::Pingresp,
        Outbound::Publish {
            topic,
            qos_pid,
            retain,
            payload,
        } => v3::Packet::Publish(v3::Publish {
            dup: false,
            retain: *retain,
            qos_pid: *qos_pid,
            topic_name: (*topic).clone(),
            payload: (*payload).clone(),
        }),
        // 3.1.1 has no DISCONNECT from the server: the socket just closes.
        Outbound::Disconnect(_) => return Ok(()),
    };
    let bytes = packet.encode().map_err(malformed)?;
    out.extend_from_slice(bytes.as_ref());
    Ok(())
}

fn encode_v5(p: &Outbound<'_>, out: &mut Vec<u8>) -> Result<(), PacketError> {
    let packet = match p {
        Outbound::Connack {
            receive_max,
            packet_bytes_max,
            assigned_id,
        } => {
            let mut c = v5::Connack::new(false, v5::ConnectReasonCode::Success);
            c.properties.receive_max = Some(*receive_max);
            c.properties.max_packet_size = Some(*packet_bytes_max);
            c.properties.max_qos = Some(QoS::Level1);
            c.properties.retain_available = Some(false);
            c.properties.wildcard_subscription_available = Some(true);
            c.properties.subscription_id_available = Some(false);
            c.properties.shared_subscription_available = Some(false);
            c.properties.assigned_client_id = assigned_id.map(Into::into);
            v5::Packet::Connack(c)
        }
        Outbound::ConnackBadVersion => v5::Packet::Connack(v5::Connack::new(
            false,
            v5::ConnectReasonCode::UnsupportedProtocolVersion,
        )),
        Outbound::Puback(id, refusal) => {
            let code = match refusal {
                None => v5::PubackReasonCode::Success,
                Some(Refusal::PayloadInvalid) => v5::PubackReasonCode::PayloadFormatInvalid,
                Some(Refusal::Busy) => v5::PubackReasonCode::QuotaExceeded,
                Some(Refusal::NotAuthorized) => v5::PubackReasonCode::NotAuthorized,
                Some(Refusal::Unspecified) => v5::PubackReasonCode::UnspecifiedError,
            };
            v5::Packet::Puback(v5::Puback::new(pid(*id)?, code))
        }
        Outbound::Suback(id, codes) => v5::Packet::Suback(v5::Suback::new(
            pid(*id)?,
            codes
                .iter()
                .map(|c| match c {
                    Ok(QoS::Level0) => v5::SubscribeReasonCode::GrantedQoS0,
                    Ok(_) => v5::SubscribeReasonCode::GrantedQoS1,
                    Err(Refusal::Busy) => v5::SubscribeReasonCode::QuotaExceeded,
                    Err(Refusal::NotAuthorized) => v5::SubscribeReasonCode::NotAuthorized,
                    Err(Refusal::PayloadInvalid) => v5::SubscribeReasonCode::TopicFilterInvalid,
                    Err(Refusal::Unspecified) => v5::SubscribeReasonCode::UnspecifiedError,
                })
                .collect(),
        )),
        Outbound::Unsuback(id, n) => v5::Packet::Unsuback(v5::Unsuback::new(
            pid(*id)?,
            vec![v5::UnsubscribeReasonCode::Success; *n],
        )),
        Outbound::Pingresp => v5::Packet::Pingresp,
        Outbound::Publish {
            topic,
            qos_pid,
            retain,
            payload,
        } => v5::Packet::Publish(v5::Publish {
            dup: false,
            retain: *retain,
            qos_pid: *qos_pid,
            topic_name: (*topic).clone(),
            payload: (*payload).clone(),
            properties: v5::PublishProperties::default(),
        }),
        Outbound::Disconnect(code) => {
            let reason = v5::DisconnectReasonCode::from_u8(*code)
                .unwrap_or(v5::DisconnectReasonCode::UnspecifiedError);
            v5::Packet::Disconnect(v5::Disconnect::new(reason))
        }
    };
    let bytes = packet.encode().map_err(malformed)?;
    out.extend_from_slice(bytes.as_ref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_connect(level: u8, name: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 0x02, 0, 30, 0, 1, b'a']);
        let mut f = vec![0x10, body.len() as u8];
        f.extend(body);
        f
    }

    #[test]
    fn frame_len_waits_bounds_and_rejects() {
        assert_eq!(frame_len(&[], 100), Ok(None));
        assert_eq!(frame_len(&[0x30], 100), Ok(None));
        assert_eq!(frame_len(&[0x30, 5], 100), Ok(Some(7)));
        assert_eq!(frame_len(&[0xc0, 0], 100), Ok(Some(2)));
        // 128 = 0x80 0x01
        assert_eq!(frame_len(&[0x30, 0x80, 0x01], 1000), Ok(Some(131)));
        assert_eq!(frame_len(&[0x30, 0x80], 1000), Ok(None));
        assert_eq!(
            frame_len(&[0x30, 0x80, 0x01], 100),
            Err(PacketError::TooLarge { len: 131, max: 100 })
        );
        assert_eq!(
            frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(PacketError::BadLength)
        );
    }

    #[test]
    fn connect_version_reads_the_level() {
        assert_eq!(connect_version(&v3_connect(4, b"MQTT")), Ok(Version::V3));
        assert_eq!(connect_version(&v3_connect(3, b"MQIsdp")), Ok(Version::V3));
        assert_eq!(connect_version(&v3_connect(5, b"MQTT")), Ok(Version::V5));
        assert_eq!(
            connect_version(&v3_connect(7, b"MQTT")),
            Err(PacketError::UnsupportedLevel(7))
        );
        assert_eq!(connect_version(&[0x30, 0]), Err(PacketError::NotConnect));
        assert!(connect_version(&[0x10, 1, 0]).is_err());
        assert!(connect_version(&[0x10]).is_err());
    }

    #[test]
    fn v3_round_trip_of_what_the_gateway_writes() {
        let topic = TopicName::try_from("int/1/blocks").unwrap();
        let payload = Bytes::from_static(b"xyz");
        let mut out = Vec::new();
        encode(
            &Outbound::Publish {
                topic: &topic,
                qos_pid: QosPid::Level1(Pid::try_from(7).unwrap()),
                retain: true,
                payload: &payload,
            },
            Version::V3,
            &mut out,
        )
        .unwrap();
        assert_eq!(frame_len(&out, 1 << 20), Ok(Some(out.len())));
        match v3::Packet::decode(&out).unwrap().unwrap() {
            v3::Packet::Publish(p) => {
                assert_eq!(&*p.topic_name, "int/1/blocks");
                assert!(p.retain);
                assert_eq!(p.payload, payload);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v5_connack_tells_the_bounds() {
        let mut out = Vec::new();
        encode(
            &Outbound::Connack {
                receive_max: 64,
                packet_bytes_max: 8192,
                assigned_id: Some("int-1"),
            },
            Version::V5,
            &mut out,
        )
        .unwrap();
        match v5::Packet::decode(&out).unwrap().unwrap() {
            v5::Packet::Connack(c) => {
                assert_eq!(c.properties.receive_max, Some(64));
                assert_eq!(c.properties.max_packet_size, Some(8192));
                assert_eq!(c.properties.max_qos, Some(QoS::Level1));
                assert_eq!(c.properties.assigned_client_id.as_deref(), Some("int-1"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// What the broker does with a client's bytes, minus the sockets.
    fn replay(mut rest: &[u8]) {
        let mut version = None;
        while let Ok(Some(len)) = frame_len(rest, 16 * 1024) {
            let Some(frame) = rest.get(..len) else { return };
            rest = &rest[len..];
            let v = match version {
                Some(v) => v,
                None => match connect_version(frame) {
                    Ok(v) => v,
                    Err(_) => return,
                },
            };
            match decode(frame, v) {
                Ok(Inbound::Connect(c)) => version = Some(c.version),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, ..Default::default() })]

        /// Random bytes, alone or after a valid CONNECT, never panic.
        #[test]
        fn hostile_streams_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
            level in 3u8..=5,
        ) {
            replay(&bytes);
            let mut s = v3_connect(level, if level == 3 { b"MQIsdp" } else { b"MQTT" });
            s.extend_from_slice(&bytes);
            replay(&s);
        }

        /// Valid packets with bytes overwritten never panic.
        #[test]
        fn mutated_packets_never_panic(
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..8),
            v5 in proptest::prelude::any::<bool>(),
        ) {
            let version = if v5 { Version::V5 } else { Version::V3 };
            let mut s = crate::client::encode_connect(version, "dev", 30).unwrap();
            s.extend(crate::client::encode_publish(version, "int/1/tx", 3, b"payload").unwrap());
            for (i, b) in edits {
                let at = i.index(s.len());
                s[at] = b;
            }
            replay(&s);
        }
    }

    #[test]
    fn qos2_and_server_packets_are_protocol_errors() {
        // PUBREL pid 1
        assert!(matches!(
            decode(&[0x62, 2, 0, 1], Version::V3),
            Err(PacketError::Protocol(_))
        ));
        // CONNACK from a client
        assert!(matches!(
            decode(&[0x20, 2, 0, 0], Version::V3),
            Err(PacketError::Protocol(_))
        ));
        assert_eq!(decode(&[0xc0, 0], Version::V5), Ok(Inbound::Pingreq));
    }
}
