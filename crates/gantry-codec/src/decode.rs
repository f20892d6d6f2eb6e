//! Packet decoding: frames complete packets out of a connection's read buffer and
//! turns them into [`Packet`] values, rejecting anything the specification calls
//! malformed or a protocol error. Payloads are zero-copy slices of the buffer.

use bytes::{Buf, Bytes, BytesMut};

use crate::packet::*;
use crate::properties::{Properties, PropertyContext};
use crate::reason::ReasonCode;
use crate::topic::validate_topic_name;
use crate::wire::{get_binary, get_string, get_u8, get_u16};

/// The largest remaining length a variable byte integer can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why a packet could not be decoded. Each maps to the reason code a server sends
/// (in CONNACK or DISCONNECT) before closing the connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("unsupported protocol level {0} (Gantry speaks MQTT 3.1.1 = 4 and 5.0 = 5)")]
    UnsupportedProtocolVersion(u8),
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(String),
}

impl DecodeError {
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// Parses the fixed header at the start of `buf`.
///
/// Returns `Ok(None)` until the whole packet is buffered, else the first byte,
/// the fixed header's length and the remaining length.
pub fn frame(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining = 0usize;
    let mut header_len = 1;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        header_len += 1;
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let size = header_len + remaining;
            if size > max_packet_size {
                return Err(DecodeError::PacketTooLarge {
                    size,
                    max: max_packet_size,
                });
            }
            if buf.len() < size {
                return Ok(None);
            }
            return Ok(Some((buf[0], header_len, remaining)));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than four bytes".into(),
    ))
}

/// Takes one complete packet off the front of `buf`, if there is one.
///
/// `version` is `None` before CONNECT has been seen: then only CONNECT (or, on a
/// client, CONNACK cannot occur) is accepted.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    // Before CONNECT, refuse a wrong first byte at once rather than wait for
    // the body length it claims (an HTTP request would otherwise hang here).
    if version.is_none()
        && let Some(&first) = buf.first()
        && first != 0x10
    {
        return Err(DecodeError::Protocol(format!(
            "the first packet must be CONNECT (0x10), got first byte 0x{first:02X}"
        )));
    }
    let Some((first, header_len, remaining)) = frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    let mut packet = buf.split_to(header_len + remaining).freeze();
    packet.advance(header_len);
    decode_body(first, packet, version).map(Some)
}

/// Decodes one packet from its first byte and its body (everything after the
/// fixed header).
pub fn decode_body(
    first: u8,
    mut body: Bytes,
    version: Option<ProtocolVersion>,
) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0F;
    let Some(version) = version else {
        if kind != 1 {
            return Err(DecodeError::Protocol(format!(
                "the first packet must be CONNECT, got packet type {kind}"
            )));
        }
        return decode_connect(flags, body).map(|c| Packet::Connect(Box::new(c)));
    };
    let v5 = version == ProtocolVersion::V5;
    let expect_flags = |want: u8, name: &str| {
        if flags != want {
            Err(DecodeError::Malformed(format!(
                "{name} has fixed-header flags {flags:04b}, must be {want:04b}"
            )))
        } else {
            Ok(())
        }
    };
    let packet = match kind {
        1 => {
            return Err(DecodeError::Protocol(
                "a second CONNECT on the same connection".into(),
            ));
        }
        2 => {
            expect_flags(0, "CONNACK")?;
            let ack_flags = get_u8(&mut body)?;
            if ack_flags & 0xFE != 0 {
                return Err(DecodeError::Malformed("CONNACK reserved flags set".into()));
            }
            let reason = ReasonCode(get_u8(&mut body)?);
            let properties = if v5 {
                Properties::decode(&mut body, PropertyContext::ConnAck)?
            } else {
                Properties::default()
            };
            Packet::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                reason,
                properties,
            })
        }
        3 => Packet::Publish(decode_publish(flags, &mut body, v5)?),
        4 => {
            expect_flags(0, "PUBACK")?;
            Packet::PubAck(decode_pub_response(&mut body, v5)?)
        }
        5 => {
            expect_flags(0, "PUBREC")?;
            Packet::PubRec(decode_pub_response(&mut body, v5)?)
        }
        6 => {
            expect_flags(2, "PUBREL")?;
            Packet::PubRel(decode_pub_response(&mut body, v5)?)
        }
        7 => {
            expect_flags(0, "PUBCOMP")?;
            Packet::PubComp(decode_pub_response(&mut body, v5)?)
        }
        8 => {
            expect_flags(2, "SUBSCRIBE")?;
            Packet::Subscribe(decode_subscribe(&mut body, v5)?)
        }
        9 => {
            expect_flags(0, "SUBACK")?;
            let packet_id = get_u16(&mut body)?;
            let properties = if v5 {
                Properties::decode(&mut body, PropertyContext::SubAck)?
            } else {
                Properties::default()
            };
            let reasons = body.iter().map(|b| ReasonCode(*b)).collect();
            body.clear();
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        10 => {
            expect_flags(2, "UNSUBSCRIBE")?;
            let packet_id = nonzero_packet_id(&mut body, "UNSUBSCRIBE")?;
            let properties = if v5 {
                Properties::decode(&mut body, PropertyContext::Unsubscribe)?
            } else {
                Properties::default()
            };
            let mut filters = Vec::new();
            while body.has_remaining() {
                filters.push(get_string(&mut body)?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol(
                    "UNSUBSCRIBE without any topic filter".into(),
                ));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        }
        11 => {
            expect_flags(0, "UNSUBACK")?;
            let packet_id = get_u16(&mut body)?;
            let properties = if v5 {
                Properties::decode(&mut body, PropertyContext::UnsubAck)?
            } else {
                Properties::default()
            };
            let reasons = body.iter().map(|b| ReasonCode(*b)).collect();
            body.clear();
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        12 => {
            expect_flags(0, "PINGREQ")?;
            Packet::PingReq
        }
        13 => {
            expect_flags(0, "PINGRESP")?;
            Packet::PingResp
        }
        14 => {
            expect_flags(0, "DISCONNECT")?;
            let mut d = Disconnect::default();
            if v5 && body.has_remaining() {
                d.reason = ReasonCode(get_u8(&mut body)?);
                if body.has_remaining() {
                    d.properties = Properties::decode(&mut body, PropertyContext::Disconnect)?;
                }
            }
            Packet::Disconnect(d)
        }
        15 if v5 => {
            expect_flags(0, "AUTH")?;
            let mut a = Auth::default();
            if body.has_remaining() {
                a.reason = ReasonCode(get_u8(&mut body)?);
                if body.has_remaining() {
                    a.properties = Properties::decode(&mut body, PropertyContext::Auth)?;
                }
            }
            Packet::Auth(a)
        }
        _ => {
            return Err(DecodeError::Malformed(format!(
                "packet type {kind} is not valid for MQTT {}",
                if v5 { "5.0" } else { "3.1.1" }
            )));
        }
    };
    if body.has_remaining() {
        return Err(DecodeError::Malformed(format!(
            "{} has {} unexpected trailing bytes",
            packet.kind(),
            body.remaining()
        )));
    }
    Ok(packet)
}

fn nonzero_packet_id(body: &mut Bytes, what: &str) -> Result<u16, DecodeError> {
    let id = get_u16(body)?;
    if id == 0 {
        return Err(DecodeError::Protocol(format!(
            "{what} carries packet identifier 0"
        )));
    }
    Ok(id)
}

fn decode_connect(flags: u8, mut body: Bytes) -> Result<Connect, DecodeError> {
    if flags != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT has non-zero fixed-header flags".into(),
        ));
    }
    let name = get_string(&mut body)?;
    let level = get_u8(&mut body)?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        ("MQTT", other) | ("MQIsdp", other) => {
            return Err(DecodeError::UnsupportedProtocolVersion(other));
        }
        (other, _) => {
            return Err(DecodeError::Protocol(format!(
                "unknown protocol name {other:?}"
            )));
        }
    };
    let v5 = version == ProtocolVersion::V5;
    let cflags = get_u8(&mut body)?;
    if cflags & 0x01 != 0 {
        return Err(DecodeError::Malformed(
            "CONNECT reserved flag is set".into(),
        ));
    }
    let clean_start = cflags & 0x02 != 0;
    let will_flag = cflags & 0x04 != 0;
    let will_qos_bits = (cflags >> 3) & 0x03;
    let will_retain = cflags & 0x20 != 0;
    let has_password = cflags & 0x40 != 0;
    let has_username = cflags & 0x80 != 0;
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or will retain set without the will flag".into(),
        ));
    }
    let will_qos =
        QoS::from_u8(will_qos_bits).ok_or_else(|| DecodeError::Malformed("will QoS 3".into()))?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed(
            "password flag set without user name flag".into(),
        ));
    }
    let keep_alive = get_u16(&mut body)?;
    let properties = if v5 {
        Properties::decode(&mut body, PropertyContext::Connect)?
    } else {
        Properties::default()
    };
    let client_id = get_string(&mut body)?;
    let will = if will_flag {
        let will_properties = if v5 {
            Properties::decode(&mut body, PropertyContext::Will)?
        } else {
            Properties::default()
        };
        let topic = get_string(&mut body)?;
        validate_topic_name(&topic).map_err(DecodeError::TopicNameInvalid)?;
        let payload = get_binary(&mut body)?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(get_string(&mut body)?)
    } else {
        None
    };
    let password = if has_password {
        Some(get_binary(&mut body)?)
    } else {
        None
    };
    if body.has_remaining() {
        return Err(DecodeError::Malformed(format!(
            "CONNECT has {} unexpected trailing bytes",
            body.remaining()
        )));
    }
    Ok(Connect {
        version,
        client_id,
        clean_start,
        keep_alive,
        username,
        password,
        will,
        properties,
    })
}

fn decode_publish(flags: u8, body: &mut Bytes, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03)
        .ok_or_else(|| DecodeError::Malformed("PUBLISH with QoS 3".into()))?;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::Malformed(
            "PUBLISH with QoS 0 has the DUP flag set".into(),
        ));
    }
    let topic = get_string(body)?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        nonzero_packet_id(body, "PUBLISH")?
    };
    let properties = if v5 {
        Properties::decode(body, PropertyContext::Publish)?
    } else {
        Properties::default()
    };
    if topic.is_empty() {
        if properties.topic_alias.is_none() {
            return Err(DecodeError::TopicNameInvalid(
                "empty topic name without a topic alias".into(),
            ));
        }
    } else {
        validate_topic_name(&topic).map_err(DecodeError::TopicNameInvalid)?;
    }
    if properties.topic_alias == Some(0) {
        return Err(DecodeError::Protocol("topic alias 0 is not allowed".into()));
    }
    let payload = body.split_to(body.remaining());
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn decode_pub_response(body: &mut Bytes, v5: bool) -> Result<PubResponse, DecodeError> {
    let packet_id = nonzero_packet_id(body, "publish acknowledgement")?;
    let mut r = PubResponse {
        packet_id,
        ..PubResponse::default()
    };
    if v5 && body.has_remaining() {
        r.reason = ReasonCode(get_u8(body)?);
        if body.has_remaining() {
            r.properties = Properties::decode(body, PropertyContext::PubResponse)?;
        }
    }
    Ok(r)
}

fn decode_subscribe(body: &mut Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = nonzero_packet_id(body, "SUBSCRIBE")?;
    let properties = if v5 {
        Properties::decode(body, PropertyContext::Subscribe)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while body.has_remaining() {
        let filter = get_string(body)?;
        let o = get_u8(body)?;
        let reserved = if v5 { o & 0xC0 } else { o & 0xFC };
        if reserved != 0 {
            return Err(DecodeError::Malformed(format!(
                "subscription options byte {o:08b} has reserved bits set"
            )));
        }
        let qos = QoS::from_u8(o & 0x03)
            .ok_or_else(|| DecodeError::Malformed("subscription requests QoS 3".into()))?;
        let retain_handling = match (o >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => {
                return Err(DecodeError::Malformed(
                    "subscription retain handling 3".into(),
                ));
            }
        };
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local: o & 0x04 != 0,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol(
            "SUBSCRIBE without any topic filter".into(),
        ));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}
