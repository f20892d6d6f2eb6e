//! The on-disk record format: canonical JSON, the hash chain, the line layout
//! and UTC timestamps. Everything an auditor needs to re-implement
//! verification is in this module and described in [`crate::audit`].

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuditEvent;

/// Domain prefix of the genesis hash: `h0 = SHA-256("audit-v1" || log_id)`.
pub(crate) const GENESIS_PREFIX: &[u8] = b"audit-v1";

/// The fixed tail of every record line after the body's last field:
/// `,"hash":"` + 64 hex digits + `"}`.
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

pub(crate) type Hash = [u8; 32];

pub(crate) fn genesis(log_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(GENESIS_PREFIX);
    h.update(log_id.as_bytes());
    h.finalize().into()
}

/// `h_n = SHA-256(0x00 || h_{n-1} || body)`, where `body` is the canonical
/// JSON of record n without its `hash` field.
pub(crate) fn chain_hash(prev: &Hash, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

pub(crate) fn parse_hash(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    // Only the lower-case form is ever written; anything else was edited.
    (s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(out)
}

/// Canonical JSON: compact (no whitespace), object keys sorted by their UTF-8
/// bytes, strings escaped as in [`write_json_string`], numbers as serde_json
/// prints them (integers in decimal, floats in shortest round-trip form).
pub(crate) fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

pub(crate) fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map keeps insertion order when a
            // crate in the build enables `preserve_order`.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string: `"` and `\` are escaped with a backslash; backspace, form
/// feed, newline, carriage return and tab as `\b \f \n \r \t`; every other
/// control character below U+0020 as `\u00xx` (lower-case hex); everything
/// else, including non-ASCII, `/` and U+007F, is written as UTF-8 unchanged.
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A record ready to be written: its line (with the trailing newline) and hash.
pub(crate) struct Encoded {
    pub line: String,
    pub hash: Hash,
}

/// Builds the JSON object of a record without its `hash` field.
pub(crate) fn record_value(
    seq: u64,
    log_id: &str,
    ts_ms: u64,
    event: &AuditEvent,
    prev: &Hash,
) -> Value {
    let category = event.category.as_str();
    let mut m = Map::new();
    m.insert("seq".into(), Value::from(seq));
    m.insert("log_id".into(), Value::from(log_id));
    m.insert("ts_utc".into(), Value::from(format_rfc3339_ms(ts_ms)));
    m.insert("ts_ms".into(), Value::from(ts_ms));
    m.insert("category".into(), Value::from(category));
    m.insert("type".into(), Value::from(event.event_type.as_str()));
    m.insert(
        "event_id".into(),
        Value::from(format!("{category}.{}", event.event_type)),
    );
    m.insert(
        "actor".into(),
        serde_json::json!({
            "id": event.actor.id,
            "kind": event.actor.kind.as_str(),
            "auth_method": event.actor.auth_method,
        }),
    );
    m.insert(
        "source".into(),
        serde_json::json!({
            "ip": event.source.ip,
            "client_id": event.source.client_id,
            "transport": event.source.transport,
        }),
    );
    m.insert("target".into(), opt(&event.target));
    m.insert("action".into(), Value::from(event.action.as_str()));
    m.insert(
        "outcome".into(),
        serde_json::json!({ "success": event.success, "reason": event.reason }),
    );
    m.insert("correlation_id".into(), opt(&event.correlation_id));
    m.insert("details".into(), event.details.clone());
    m.insert("prev_hash".into(), Value::from(hex::encode(prev)));
    Value::Object(m)
}

fn opt(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, Value::from)
}

/// Encodes record `seq`: the line is the canonical body with
/// `,"hash":"<h_n>"` inserted before its closing brace.
pub(crate) fn encode(
    seq: u64,
    log_id: &str,
    ts_ms: u64,
    event: &AuditEvent,
    prev: &Hash,
) -> Encoded {
    let body = canonical_json(&record_value(seq, log_id, ts_ms, event, prev));
    let hash = chain_hash(prev, body.as_bytes());
    let mut line = String::with_capacity(body.len() + HASH_SUFFIX_LEN + 1);
    // The body is a non-empty object, so it ends with `}`.
    line.push_str(&body[..body.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hex::encode(hash));
    line.push_str("\"}\n");
    Encoded { line, hash }
}

/// Splits a record line (without its newline) into the canonical body that
/// was hashed and the hash it claims. `None` when the line does not end with
/// the `,"hash":"<64 hex>"}` written by Gantry.
pub(crate) fn split_line(line: &[u8]) -> Option<(Vec<u8>, Hash)> {
    if line.len() < HASH_SUFFIX_LEN + 2 {
        return None;
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let suffix = &line[cut..];
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return None;
    }
    let hex_part = std::str::from_utf8(&suffix[9..9 + 64]).ok()?;
    let hash = parse_hash(hex_part)?;
    let mut body = Vec::with_capacity(cut + 1);
    body.extend_from_slice(&line[..cut]);
    body.push(b'}');
    Some((body, hash))
}

/// What a record line says about its place in the chain, once its own hash
/// has been checked against its content.
#[derive(Debug)]
pub(crate) struct LineCheck {
    pub seq: Option<u64>,
    pub log_id: Option<String>,
    pub prev: Option<Hash>,
    pub hash: Hash,
    /// The stored hash equals SHA-256(0x00 || prev_hash || body).
    pub self_consistent: bool,
}

pub(crate) enum LineError {
    NotJson(String),
    Malformed(Option<u64>, String),
}

/// Parses one record line (without the newline) and checks its hash against
/// its own content and its own `prev_hash`.
pub(crate) fn check_line(line: &[u8]) -> Result<LineCheck, LineError> {
    let v: Value = match serde_json::from_slice(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(LineError::NotJson("not a JSON object".into())),
        Err(e) => return Err(LineError::NotJson(format!("not a JSON record ({e})"))),
    };
    let seq = v.get("seq").and_then(Value::as_u64);
    let Some((body, hash)) = split_line(line) else {
        return Err(LineError::Malformed(
            seq,
            "its `hash` is missing or not the last field as written (altered)".into(),
        ));
    };
    let prev = v
        .get("prev_hash")
        .and_then(Value::as_str)
        .and_then(parse_hash);
    let self_consistent = prev.is_some_and(|p| chain_hash(&p, &body) == hash);
    Ok(LineCheck {
        seq,
        log_id: v.get("log_id").and_then(Value::as_str).map(str::to_owned),
        prev,
        hash,
        self_consistent,
    })
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2023-11-14T22:13:20.000Z`.
pub fn format_rfc3339_ms(ts_ms: u64) -> String {
    let days = ts_ms / 86_400_000;
    let ms_of_day = ts_ms % 86_400_000;
    let (y, m, d) = civil_from_days(days as i64);
    let secs = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
