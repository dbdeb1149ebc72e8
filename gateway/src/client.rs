//! A minimal blocking MQTT client (3.1.1 or 5.0) for tests, examples and
//! the load generator: connect, publish, subscribe, read what the server
//! sends. Not for devices (they have `int-client`); bounded like the
//! server: a packet larger than `PACKET_BYTES_MAX` is an error.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use mqtt_proto::{ClientId, Pid, Protocol, QoS, QosPid, TopicFilter, TopicName, v3, v5};

use crate::packet::{Version, frame_len};

/// Largest packet the client reads.
pub const PACKET_BYTES_MAX: usize = 1 << 20;

/// What the server sent, reduced to what tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPacket {
    /// CONNACK: 0 is success (the 3.1.1 return code or the 5.0 reason code).
    Connack(u8),
    /// A message.
    Publish {
        /// Topic name.
        topic: String,
        /// Packet id of a QoS 1 message.
        pid: Option<u16>,
        /// Retained flag.
        retain: bool,
        /// The bytes.
        payload: Bytes,
    },
    /// PUBACK with its 5.0 reason code (0 for 3.1.1).
    Puback(u16, u8),
    /// SUBACK: per filter, the granted QoS or 0x80 and above for a refusal.
    Suback(u16, Vec<u8>),
    /// UNSUBACK.
    Unsuback(u16),
    /// PINGRESP.
    Pingresp,
    /// 5.0 DISCONNECT with its reason code.
    Disconnect(u8),
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Encodes the packets a client sends.
pub fn encode_connect(version: Version, client_id: &str, keep_alive_s: u16) -> io::Result<Vec<u8>> {
    let id: ClientId = client_id.into();
    let bytes = match version {
        Version::V3 => {
            let mut c = v3::Connect::new(id, keep_alive_s);
            c.protocol = Protocol::V311;
            v3::Packet::Connect(c).encode().map_err(err)?
        }
        Version::V5 => {
            let c = v5::Connect::new(id, keep_alive_s);
            v5::Packet::Connect(c).encode().map_err(err)?
        }
    };
    Ok(bytes.as_ref().to_vec())
}

/// Encodes a PUBLISH (`pid` 0: QoS 0).
pub fn encode_publish(
    version: Version,
    topic: &str,
    pid: u16,
    payload: &[u8],
) -> io::Result<Vec<u8>> {
    let topic_name = TopicName::try_from(topic).map_err(err)?;
    let qos_pid = match pid {
        0 => QosPid::Level0,
        p => QosPid::Level1(Pid::try_from(p).map_err(err)?),
    };
    let payload = Bytes::copy_from_slice(payload);
    let bytes = match version {
        Version::V3 => v3::Packet::Publish(v3::Publish {
            dup: false,
            retain: false,
            qos_pid,
            topic_name,
            payload,
        })
        .encode(),
        Version::V5 => v5::Packet::Publish(v5::Publish {
            dup: false,
            retain: false,
            qos_pid,
            topic_name,
            payload,
            properties: v5::PublishProperties::default(),
        })
        .encode(),
    }
    .map_err(err)?;
    Ok(bytes.as_ref().to_vec())
}

/// Decodes one complete packet from the server.
pub fn decode_server(frame: &[u8], version: Version) -> io::Result<ServerPacket> {
    let pid_of = |q: QosPid| q.pid().map(Pid::value);
    Ok(match version {
        Version::V3 => match v3::Packet::decode(frame)
            .map_err(err)?
            .ok_or_else(|| err("truncated"))?
        {
            v3::Packet::Connack(c) => ServerPacket::Connack(c.code as u8),
            v3::Packet::Publish(p) => ServerPacket::Publish {
                topic: p.topic_name.to_string(),
                pid: pid_of(p.qos_pid),
                retain: p.retain,
                payload: p.payload,
            },
            v3::Packet::Puback(p) => ServerPacket::Puback(p.value(), 0),
            v3::Packet::Suback(s) => ServerPacket::Suback(
                s.pid.value(),
                s.topics
                    .iter()
                    .map(|c| match c {
                        v3::SubscribeReturnCode::MaxLevel0 => 0,
                        v3::SubscribeReturnCode::MaxLevel1 => 1,
                        v3::SubscribeReturnCode::MaxLevel2 => 2,
                        v3::SubscribeReturnCode::Failure => 0x80,
                    })
                    .collect(),
            ),
            v3::Packet::Unsuback(p) => ServerPacket::Unsuback(p.value()),
            v3::Packet::Pingresp => ServerPacket::Pingresp,
            other => return Err(err(format!("unexpected {:?}", other.get_type()))),
        },
        Version::V5 => match v5::Packet::decode(frame)
            .map_err(err)?
            .ok_or_else(|| err("truncated"))?
        {
            v5::Packet::Connack(c) => ServerPacket::Connack(c.reason_code as u8),
            v5::Packet::Publish(p) => ServerPacket::Publish {
                topic: p.topic_name.to_string(),
                pid: pid_of(p.qos_pid),
                retain: p.retain,
                payload: p.payload,
            },
            v5::Packet::Puback(p) => ServerPacket::Puback(p.pid.value(), p.reason_code as u8),
            v5::Packet::Suback(s) => {
                ServerPacket::Suback(s.pid.value(), s.topics.iter().map(|c| *c as u8).collect())
            }
            v5::Packet::Unsuback(u) => ServerPacket::Unsuback(u.pid.value()),
            v5::Packet::Pingresp => ServerPacket::Pingresp,
            v5::Packet::Disconnect(d) => ServerPacket::Disconnect(d.reason_code as u8),
            other => return Err(err(format!("unexpected {:?}", other.get_type()))),
        },
    })
}

/// A blocking connection to a broker.
pub struct Client {
    sock: TcpStream,
    version: Version,
    buf: Vec<u8>,
}

impl Client {
    /// Connects and waits for the CONNACK (an error unless it accepts).
    pub fn connect(
        addr: SocketAddr,
        version: Version,
        client_id: &str,
        keep_alive_s: u16,
    ) -> io::Result<Self> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut c = Self {
            sock,
            version,
            buf: Vec::new(),
        };
        c.send_raw(&encode_connect(version, client_id, keep_alive_s)?)?;
        match c.recv()? {
            ServerPacket::Connack(0) => Ok(c),
            other => Err(err(format!("connection refused: {other:?}"))),
        }
    }

    /// Writes bytes as they are (for hostile-input tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Publishes (`pid` 0: QoS 0, else QoS 1 with that packet id).
    pub fn publish(&mut self, topic: &str, pid: u16, payload: &[u8]) -> io::Result<()> {
        let p = encode_publish(self.version, topic, pid, payload)?;
        self.send_raw(&p)
    }

    /// Acknowledges a QoS 1 message.
    pub fn puback(&mut self, pid: u16) -> io::Result<()> {
        let p = Pid::try_from(pid).map_err(err)?;
        let bytes = match self.version {
            Version::V3 => v3::Packet::Puback(p).encode(),
            Version::V5 => {
                v5::Packet::Puback(v5::Puback::new(p, v5::PubackReasonCode::Success)).encode()
            }
        }
        .map_err(err)?;
        self.send_raw(bytes.as_ref())
    }

    /// Subscribes to `filters` at QoS `qos` (0 or 1); returns the SUBACK codes.
    pub fn subscribe(&mut self, pid: u16, filters: &[&str], qos: u8) -> io::Result<Vec<u8>> {
        let p = Pid::try_from(pid).map_err(err)?;
        let q = QoS::from_u8(qos).map_err(err)?;
        let topics = filters
            .iter()
            .map(|f| TopicFilter::try_from(*f).map_err(err))
            .collect::<io::Result<Vec<_>>>()?;
        let bytes = match self.version {
            Version::V3 => v3::Packet::Subscribe(v3::Subscribe::new(
                p,
                topics.into_iter().map(|t| (t, q)).collect(),
            ))
            .encode(),
            Version::V5 => v5::Packet::Subscribe(v5::Subscribe::new(
                p,
                topics
                    .into_iter()
                    .map(|t| (t, v5::SubscriptionOptions::new(q)))
                    .collect(),
            ))
            .encode(),
        }
        .map_err(err)?;
        self.send_raw(bytes.as_ref())?;
        loop {
            match self.recv()? {
                ServerPacket::Suback(got, codes) if got == pid => return Ok(codes),
                ServerPacket::Publish { .. } => {} // retained may race; tests read on
                other => return Err(err(format!("expected SUBACK, got {other:?}"))),
            }
        }
    }

    /// Sends a PINGREQ.
    pub fn ping(&mut self) -> io::Result<()> {
        self.send_raw(&[0xc0, 0])
    }

    /// Sets how long [`Client::recv`] waits.
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.sock.set_read_timeout(Some(t))
    }

    /// Reads the next packet; `UnexpectedEof` when the server closed.
    pub fn recv(&mut self) -> io::Result<ServerPacket> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(len) = frame_len(&self.buf, PACKET_BYTES_MAX).map_err(err)?
                && len <= self.buf.len()
            {
                let p = decode_server(&self.buf[..len], self.version);
                self.buf.drain(..len);
                return p;
            }
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
