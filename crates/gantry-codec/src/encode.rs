//! Packet encoding straight into a connection's write buffer, so that many
//! packets leave in one system call. Fields that 3.1.1 lacks are left out when
//! encoding for a 3.1.1 peer.

use bytes::{BufMut, BytesMut};

use crate::packet::*;
use crate::properties::Properties;
use crate::reason::ReasonCode;
use crate::wire::{put_binary, put_string, put_varint, varint_len};

fn header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(first);
    put_varint(out, remaining);
}

fn props_len(v5: bool, p: &Properties) -> usize {
    if v5 { p.encoded_len() } else { 0 }
}

/// Encodes a PUBLISH from its parts, for callers (the broker's fan-out) that hold
/// the topic and payload in shared storage and must not build a [`Publish`] per
/// subscriber. Returns the number of bytes written.
#[allow(clippy::too_many_arguments)]
pub fn encode_publish(
    version: ProtocolVersion,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    packet_id: u16,
    properties: &Properties,
    payload: &[u8],
    out: &mut BytesMut,
) -> usize {
    let v5 = version == ProtocolVersion::V5;
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + id_len + props_len(v5, properties) + payload.len();
    let start = out.len();
    let first = 0x30 | (u8::from(dup) << 3) | ((qos as u8) << 1) | u8::from(retain);
    header(out, first, remaining);
    put_string(out, topic);
    if id_len > 0 {
        out.put_u16(packet_id);
    }
    if v5 {
        properties.encode(out);
    }
    out.put_slice(payload);
    out.len() - start
}

fn pub_response(out: &mut BytesMut, first: u8, r: &PubResponse, v5: bool) {
    let with_props = v5 && !r.properties.is_empty();
    let with_reason = v5 && (r.reason != ReasonCode::SUCCESS || with_props);
    let remaining = 2
        + usize::from(with_reason)
        + if with_props {
            r.properties.encoded_len()
        } else {
            0
        };
    header(out, first, remaining);
    out.put_u16(r.packet_id);
    if with_reason {
        out.put_u8(r.reason.0);
    }
    if with_props {
        r.properties.encode(out);
    }
}

/// Appends `packet` to `out`, encoded for `version`. Returns the bytes written.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let v5 = version == ProtocolVersion::V5;
    let start = out.len();
    match packet {
        Packet::Connect(c) => encode_connect(c, out),
        Packet::ConnAck(a) => {
            header(out, 0x20, 2 + props_len(v5, &a.properties));
            out.put_u8(u8::from(a.session_present));
            out.put_u8(if v5 {
                a.reason.0
            } else {
                a.reason.to_v311_connack()
            });
            if v5 {
                a.properties.encode(out);
            }
        }
        Packet::Publish(p) => {
            encode_publish(
                version,
                p.dup,
                p.qos,
                p.retain,
                &p.topic,
                p.packet_id,
                &p.properties,
                &p.payload,
                out,
            );
        }
        Packet::PubAck(r) => pub_response(out, 0x40, r, v5),
        Packet::PubRec(r) => pub_response(out, 0x50, r, v5),
        Packet::PubRel(r) => pub_response(out, 0x62, r, v5),
        Packet::PubComp(r) => pub_response(out, 0x70, r, v5),
        Packet::Subscribe(s) => {
            let filters: usize = s.filters.iter().map(|(f, _)| 3 + f.len()).sum();
            header(out, 0x82, 2 + props_len(v5, &s.properties) + filters);
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out);
            }
            for (f, o) in &s.filters {
                put_string(out, f);
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2
                        | u8::from(o.retain_as_published) << 3
                        | (o.retain_handling as u8) << 4;
                }
                out.put_u8(b);
            }
        }
        Packet::SubAck(s) => {
            header(
                out,
                0x90,
                2 + props_len(v5, &s.properties) + s.reasons.len(),
            );
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out);
            }
            for r in &s.reasons {
                // 3.1.1 knows only granted QoS and 0x80 failure.
                out.put_u8(if v5 || r.0 <= 2 { r.0 } else { 0x80 });
            }
        }
        Packet::Unsubscribe(u) => {
            let filters: usize = u.filters.iter().map(|f| 2 + f.len()).sum();
            header(out, 0xA2, 2 + props_len(v5, &u.properties) + filters);
            out.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(out);
            }
            for f in &u.filters {
                put_string(out, f);
            }
        }
        Packet::UnsubAck(u) => {
            let reasons = if v5 { u.reasons.len() } else { 0 };
            header(out, 0xB0, 2 + props_len(v5, &u.properties) + reasons);
            out.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(out);
                for r in &u.reasons {
                    out.put_u8(r.0);
                }
            }
        }
        Packet::PingReq => header(out, 0xC0, 0),
        Packet::PingResp => header(out, 0xD0, 0),
        Packet::Disconnect(d) => {
            if v5 && (d.reason != ReasonCode::SUCCESS || !d.properties.is_empty()) {
                header(out, 0xE0, 1 + d.properties.encoded_len());
                out.put_u8(d.reason.0);
                d.properties.encode(out);
            } else {
                header(out, 0xE0, 0);
            }
        }
        Packet::Auth(a) => {
            header(out, 0xF0, 1 + a.properties.encoded_len());
            out.put_u8(a.reason.0);
            a.properties.encode(out);
        }
    }
    out.len() - start
}

fn encode_connect(c: &Connect, out: &mut BytesMut) {
    let v5 = c.version == ProtocolVersion::V5;
    let mut remaining = 6 + 1 + 1 + 2 + props_len(v5, &c.properties) + 2 + c.client_id.len();
    if let Some(w) = &c.will {
        remaining += props_len(v5, &w.properties) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &c.username {
        remaining += 2 + u.len();
    }
    if let Some(p) = &c.password {
        remaining += 2 + p.len();
    }
    header(out, 0x10, remaining);
    put_string(out, "MQTT");
    out.put_u8(c.version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | u8::from(w.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        c.properties.encode(out);
    }
    put_string(out, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(out);
        }
        put_string(out, &w.topic);
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_string(out, u);
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}
