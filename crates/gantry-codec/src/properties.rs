//! MQTT 5.0 properties: one struct for every packet, with the rules of which
//! property may appear in which packet enforced while decoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::wire::{
    get_binary, get_string, get_u8, get_u16, get_u32, get_varint, put_binary, put_string,
    varint_len,
};

/// Where a property list appears; decides which properties are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// All MQTT 5.0 properties. Absent properties are `None` / empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Which contexts each property identifier may appear in.
fn allowed_in(property: u8) -> u16 {
    use PropertyContext as C;
    let all_acks = C::PubResponse.bit()
        | C::SubAck.bit()
        | C::UnsubAck.bit()
        | C::ConnAck.bit()
        | C::Disconnect.bit()
        | C::Auth.bit();
    match property {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => C::Publish.bit() | C::Will.bit(),
        id::SUBSCRIPTION_IDENTIFIER => C::Publish.bit() | C::Subscribe.bit(),
        id::SESSION_EXPIRY_INTERVAL => C::Connect.bit() | C::ConnAck.bit() | C::Disconnect.bit(),
        id::ASSIGNED_CLIENT_IDENTIFIER | id::SERVER_KEEP_ALIVE | id::RESPONSE_INFORMATION => {
            C::ConnAck.bit()
        }
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => {
            C::Connect.bit() | C::ConnAck.bit() | C::Auth.bit()
        }
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => C::Connect.bit(),
        id::WILL_DELAY_INTERVAL => C::Will.bit(),
        id::SERVER_REFERENCE => C::ConnAck.bit() | C::Disconnect.bit(),
        id::REASON_STRING => all_acks,
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            C::Connect.bit() | C::ConnAck.bit()
        }
        id::TOPIC_ALIAS => C::Publish.bit(),
        id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => C::ConnAck.bit(),
        id::USER_PROPERTY => u16::MAX,
        _ => 0,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol(format!(
            "property {name} appears more than once"
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn boolean_byte(v: u8, name: &'static str) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::Protocol(format!(
            "property {name} must be 0 or 1, got {v}"
        )));
    }
    Ok(v)
}

impl Properties {
    /// No properties at all; usable where a `&'static Properties` is needed.
    pub const EMPTY: Properties = Properties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Decodes a property list (length prefix included) from `buf`.
    pub fn decode(buf: &mut Bytes, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = get_varint(buf)? as usize;
        if buf.remaining() < len {
            return Err(DecodeError::Malformed(
                "property length exceeds the packet".into(),
            ));
        }
        let mut body = buf.split_to(len);
        let mut p = Properties::default();
        while body.has_remaining() {
            let pid = get_varint(&mut body)?;
            let pid = u8::try_from(pid).map_err(|_| {
                DecodeError::Malformed(format!("unknown property identifier 0x{pid:X}"))
            })?;
            let allowed = allowed_in(pid);
            if allowed == 0 {
                return Err(DecodeError::Malformed(format!(
                    "unknown property identifier 0x{pid:02X}"
                )));
            }
            if allowed & ctx.bit() == 0 {
                return Err(DecodeError::Protocol(format!(
                    "property 0x{pid:02X} is not allowed in {ctx:?}"
                )));
            }
            let b = &mut body;
            match pid {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    let v = boolean_byte(get_u8(b)?, "payload format indicator")?;
                    set_once(
                        &mut p.payload_format_indicator,
                        v,
                        "payload format indicator",
                    )?
                }
                id::MESSAGE_EXPIRY_INTERVAL => set_once(
                    &mut p.message_expiry_interval,
                    get_u32(b)?,
                    "message expiry interval",
                )?,
                id::CONTENT_TYPE => set_once(&mut p.content_type, get_string(b)?, "content type")?,
                id::RESPONSE_TOPIC => {
                    let t = get_string(b)?;
                    if t.is_empty() || t.contains(['+', '#']) {
                        return Err(DecodeError::Protocol(
                            "response topic must be a non-empty topic name without wildcards"
                                .into(),
                        ));
                    }
                    set_once(&mut p.response_topic, t, "response topic")?
                }
                id::CORRELATION_DATA => {
                    set_once(&mut p.correlation_data, get_binary(b)?, "correlation data")?
                }
                id::SUBSCRIPTION_IDENTIFIER => {
                    let v = get_varint(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "subscription identifier must not be 0".into(),
                        ));
                    }
                    if ctx == PropertyContext::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol(
                            "SUBSCRIBE carries more than one subscription identifier".into(),
                        ));
                    }
                    p.subscription_identifiers.push(v)
                }
                id::SESSION_EXPIRY_INTERVAL => set_once(
                    &mut p.session_expiry_interval,
                    get_u32(b)?,
                    "session expiry interval",
                )?,
                id::ASSIGNED_CLIENT_IDENTIFIER => set_once(
                    &mut p.assigned_client_identifier,
                    get_string(b)?,
                    "assigned client identifier",
                )?,
                id::SERVER_KEEP_ALIVE => {
                    set_once(&mut p.server_keep_alive, get_u16(b)?, "server keep alive")?
                }
                id::AUTHENTICATION_METHOD => set_once(
                    &mut p.authentication_method,
                    get_string(b)?,
                    "authentication method",
                )?,
                id::AUTHENTICATION_DATA => set_once(
                    &mut p.authentication_data,
                    get_binary(b)?,
                    "authentication data",
                )?,
                id::REQUEST_PROBLEM_INFORMATION => {
                    let v = boolean_byte(get_u8(b)?, "request problem information")?;
                    set_once(
                        &mut p.request_problem_information,
                        v,
                        "request problem information",
                    )?
                }
                id::WILL_DELAY_INTERVAL => set_once(
                    &mut p.will_delay_interval,
                    get_u32(b)?,
                    "will delay interval",
                )?,
                id::REQUEST_RESPONSE_INFORMATION => {
                    let v = boolean_byte(get_u8(b)?, "request response information")?;
                    set_once(
                        &mut p.request_response_information,
                        v,
                        "request response information",
                    )?
                }
                id::RESPONSE_INFORMATION => set_once(
                    &mut p.response_information,
                    get_string(b)?,
                    "response information",
                )?,
                id::SERVER_REFERENCE => {
                    set_once(&mut p.server_reference, get_string(b)?, "server reference")?
                }
                id::REASON_STRING => {
                    set_once(&mut p.reason_string, get_string(b)?, "reason string")?
                }
                id::RECEIVE_MAXIMUM => {
                    let v = get_u16(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "receive maximum must not be 0".into(),
                        ));
                    }
                    set_once(&mut p.receive_maximum, v, "receive maximum")?
                }
                id::TOPIC_ALIAS_MAXIMUM => set_once(
                    &mut p.topic_alias_maximum,
                    get_u16(b)?,
                    "topic alias maximum",
                )?,
                id::TOPIC_ALIAS => set_once(&mut p.topic_alias, get_u16(b)?, "topic alias")?,
                id::MAXIMUM_QOS => set_once(&mut p.maximum_qos, get_u8(b)?, "maximum QoS")?,
                id::RETAIN_AVAILABLE => {
                    set_once(&mut p.retain_available, get_u8(b)?, "retain available")?
                }
                id::USER_PROPERTY => {
                    let k = get_string(b)?;
                    let v = get_string(b)?;
                    p.user_properties.push((k, v))
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let v = get_u32(b)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol(
                            "maximum packet size must not be 0".into(),
                        ));
                    }
                    set_once(&mut p.maximum_packet_size, v, "maximum packet size")?
                }
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => set_once(
                    &mut p.wildcard_subscription_available,
                    get_u8(b)?,
                    "wildcard subscription available",
                )?,
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => set_once(
                    &mut p.subscription_identifier_available,
                    get_u8(b)?,
                    "subscription identifier available",
                )?,
                id::SHARED_SUBSCRIPTION_AVAILABLE => set_once(
                    &mut p.shared_subscription_available,
                    get_u8(b)?,
                    "shared subscription available",
                )?,
                _ => {
                    return Err(DecodeError::Malformed(format!(
                        "unknown property identifier 0x{pid:02X}"
                    )));
                }
            }
        }
        Ok(p)
    }

    /// Length of the encoded property list, without its own length prefix.
    pub fn body_len(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, |v| 3 + v.len());
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 3 + v.len());
        let n8 = |o: &Option<u8>| o.map_or(0, |_| 2);
        let n16 = |o: &Option<u16>| o.map_or(0, |_| 3);
        let n32 = |o: &Option<u32>| o.map_or(0, |_| 5);
        n8(&self.payload_format_indicator)
            + n32(&self.message_expiry_interval)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|v| 1 + varint_len(*v as usize))
                .sum::<usize>()
            + n32(&self.session_expiry_interval)
            + s(&self.assigned_client_identifier)
            + n16(&self.server_keep_alive)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n8(&self.request_problem_information)
            + n32(&self.will_delay_interval)
            + n8(&self.request_response_information)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n16(&self.receive_maximum)
            + n16(&self.topic_alias_maximum)
            + n16(&self.topic_alias)
            + n8(&self.maximum_qos)
            + n8(&self.retain_available)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 5 + k.len() + v.len())
                .sum::<usize>()
            + n32(&self.maximum_packet_size)
            + n8(&self.wildcard_subscription_available)
            + n8(&self.subscription_identifier_available)
            + n8(&self.shared_subscription_available)
    }

    /// Length of the encoded property list including its length prefix.
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    /// Encodes the property list with its length prefix.
    pub fn encode(&self, out: &mut BytesMut) {
        crate::wire::put_varint(out, self.body_len());
        let u8p = |out: &mut BytesMut, pid: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u8(v);
            }
        };
        let u16p = |out: &mut BytesMut, pid: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u16(v);
            }
        };
        let u32p = |out: &mut BytesMut, pid: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u32(v);
            }
        };
        let strp = |out: &mut BytesMut, pid: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_string(out, v);
            }
        };
        let binp = |out: &mut BytesMut, pid: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_binary(out, v);
            }
        };
        u8p(
            out,
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
        );
        u32p(
            out,
            id::MESSAGE_EXPIRY_INTERVAL,
            self.message_expiry_interval,
        );
        strp(out, id::CONTENT_TYPE, &self.content_type);
        strp(out, id::RESPONSE_TOPIC, &self.response_topic);
        binp(out, id::CORRELATION_DATA, &self.correlation_data);
        for v in &self.subscription_identifiers {
            out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            crate::wire::put_varint(out, *v as usize);
        }
        u32p(
            out,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        strp(
            out,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        u16p(out, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        strp(out, id::AUTHENTICATION_METHOD, &self.authentication_method);
        binp(out, id::AUTHENTICATION_DATA, &self.authentication_data);
        u8p(
            out,
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        u32p(out, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        u8p(
            out,
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        strp(out, id::RESPONSE_INFORMATION, &self.response_information);
        strp(out, id::SERVER_REFERENCE, &self.server_reference);
        strp(out, id::REASON_STRING, &self.reason_string);
        u16p(out, id::RECEIVE_MAXIMUM, self.receive_maximum);
        u16p(out, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        u16p(out, id::TOPIC_ALIAS, self.topic_alias);
        u8p(out, id::MAXIMUM_QOS, self.maximum_qos);
        u8p(out, id::RETAIN_AVAILABLE, self.retain_available);
        for (k, v) in &self.user_properties {
            out.put_u8(id::USER_PROPERTY);
            put_string(out, k);
            put_string(out, v);
        }
        u32p(out, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        u8p(
            out,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        u8p(
            out,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
        );
        u8p(
            out,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
    }
}
