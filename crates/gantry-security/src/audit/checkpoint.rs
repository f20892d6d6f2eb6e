//! Signed checkpoints: `{hash, log_id, public_key, seq, signature, ts_ms}`
//! over the string `audit-v1 checkpoint <log_id> <seq> <hash hex> <ts_ms>`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::Value;

use super::record::{self, Hash};

/// The exact bytes an Ed25519 checkpoint signature covers.
pub(crate) fn signed_message(log_id: &str, seq: u64, hash_hex: &str, ts_ms: u64) -> String {
    format!("audit-v1 checkpoint {log_id} {seq} {hash_hex} {ts_ms}")
}

/// A checkpoint line (canonical JSON, with the trailing newline).
pub(crate) fn encode(key: &SigningKey, log_id: &str, seq: u64, hash: &Hash, ts_ms: u64) -> String {
    let hash_hex = hex::encode(hash);
    let signature = key.sign(signed_message(log_id, seq, &hash_hex, ts_ms).as_bytes());
    let v = serde_json::json!({
        "log_id": log_id,
        "seq": seq,
        "hash": hash_hex,
        "ts_ms": ts_ms,
        "public_key": hex::encode(key.verifying_key().to_bytes()),
        "signature": hex::encode(signature.to_bytes()),
    });
    let mut line = record::canonical_json(&v);
    line.push('\n');
    line
}

#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub log_id: String,
    pub seq: u64,
    pub hash: Hash,
    pub public_key: String,
    /// The signature verifies under `public_key`.
    pub signature_ok: bool,
}

/// Parses one checkpoint line and checks its signature against the key it
/// names; `Err` says what is malformed.
pub(crate) fn parse(line: &[u8]) -> Result<Checkpoint, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no `{k}`"))
    };
    let n = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no `{k}`"))
    };
    let log_id = s("log_id")?.to_owned();
    let seq = n("seq")?;
    let ts_ms = n("ts_ms")?;
    let hash_hex = s("hash")?;
    let hash = record::parse_hash(hash_hex).ok_or("`hash` is not 64 hex digits")?;
    let public_key = s("public_key")?.to_owned();
    let mut pk = [0u8; 32];
    let mut sig = [0u8; 64];
    let signature_ok = hex::decode_to_slice(&public_key, &mut pk).is_ok()
        && hex::decode_to_slice(s("signature")?, &mut sig).is_ok()
        && VerifyingKey::from_bytes(&pk).is_ok_and(|key| {
            key.verify_strict(
                signed_message(&log_id, seq, hash_hex, ts_ms).as_bytes(),
                &Signature::from_bytes(&sig),
            )
            .is_ok()
        });
    Ok(Checkpoint {
        log_id,
        seq,
        hash,
        public_key,
        signature_ok,
    })
}
