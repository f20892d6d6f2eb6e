//! Wire primitives: fixed-width integers, variable byte integers, UTF-8 strings
//! and binary data, each decoded with bounds checks that never panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError::Malformed(format!(
            "packet ends inside {what} (needs {n} bytes, {} left)",
            buf.remaining()
        )));
    }
    Ok(())
}

pub fn get_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    need(buf, 1, "a byte field")?;
    Ok(buf.get_u8())
}

pub fn get_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    need(buf, 2, "a two-byte integer")?;
    Ok(buf.get_u16())
}

pub fn get_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    need(buf, 4, "a four-byte integer")?;
    Ok(buf.get_u32())
}

/// Decodes a variable byte integer (at most four bytes).
pub fn get_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        need(buf, 1, "a variable byte integer")?;
        let byte = buf.get_u8();
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than four bytes".into(),
    ))
}

pub fn get_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = get_u16(buf)? as usize;
    need(buf, len, "binary data")?;
    Ok(buf.split_to(len))
}

/// Decodes a UTF-8 string as MQTT defines it: well-formed, no U+0000.
pub fn get_string(buf: &mut Bytes) -> Result<String, DecodeError> {
    let raw = get_binary(buf)?;
    let s = std::str::from_utf8(&raw)
        .map_err(|e| DecodeError::Malformed(format!("string is not valid UTF-8: {e}")))?;
    if s.contains('\0') {
        return Err(DecodeError::Malformed("string contains U+0000".into()));
    }
    Ok(s.to_owned())
}

pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(out: &mut BytesMut, mut value: usize) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Writes a length-prefixed string; callers guarantee it is at most 65,535 bytes.
pub fn put_string(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}

pub fn put_binary(out: &mut BytesMut, b: &[u8]) {
    let len = b.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&b[..len]);
}
