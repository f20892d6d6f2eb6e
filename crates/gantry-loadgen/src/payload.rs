//! The load payload: a fixed 28-byte header (magic, run id, publisher index,
//! sequence number, send timestamp) followed by padding up to the requested size.
//!
//! The run id lets a subscriber ignore messages left over from earlier runs
//! (retained or queued ones); the timestamp is nanoseconds since a time base
//! shared by every publisher and subscriber of the run (they live in one process).
//!
//! In JSON mode the same fields travel as a Gantry time-series sample,
//! `{"timestamp_ms":<unix ms>,"value":"GLG1:<run>:<publisher>:<seq>:<sent_ns>"}`,
//! so that a broker enforcing data contracts can validate (and canonicalise)
//! every message of a benchmark.

/// "GLG1": gantry-loadgen payload, layout 1.
const MAGIC: u32 = 0x474C_4731;
/// Bytes taken by the header; payloads must be at least this long.
pub const HEADER_LEN: usize = 28;

/// What a subscriber learns from one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// A reusable payload buffer for one publisher.
pub struct PayloadWriter {
    buf: Vec<u8>,
    json: Option<(u32, u32)>,
}

impl PayloadWriter {
    /// `size` is clamped up to [`HEADER_LEN`] (binary mode only).
    pub fn new(size: usize, run: u32, publisher: u32) -> Self {
        let mut buf = vec![b'.'; size.max(HEADER_LEN)];
        buf[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        buf[4..8].copy_from_slice(&run.to_be_bytes());
        buf[8..12].copy_from_slice(&publisher.to_be_bytes());
        Self { buf, json: None }
    }

    /// A writer of JSON time-series samples (see the module docs).
    pub fn json(run: u32, publisher: u32) -> Self {
        Self {
            buf: Vec::with_capacity(96),
            json: Some((run, publisher)),
        }
    }

    /// Fills in sequence number and timestamp; returns the whole payload.
    pub fn stamp(&mut self, seq: u64, sent_ns: u64) -> &[u8] {
        if let Some((run, publisher)) = self.json {
            use std::io::Write;
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            self.buf.clear();
            // Writing into a Vec cannot fail.
            let _ = write!(
                self.buf,
                "{{\"timestamp_ms\":{unix_ms},\"value\":\"GLG1:{run}:{publisher}:{seq}:{sent_ns}\"}}"
            );
            return &self.buf;
        }
        self.buf[12..20].copy_from_slice(&seq.to_be_bytes());
        self.buf[20..28].copy_from_slice(&sent_ns.to_be_bytes());
        &self.buf
    }
}

fn parse_json(payload: &[u8], run: u32) -> Option<Stamp> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"GLG1:")? + 6;
    let end = start + text[start..].find('"')?;
    let mut fields = text[start..end].split(':');
    let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
    let (r, publisher, seq, sent_ns) = (next()?, next()?, next()?, next()?);
    (r == u64::from(run)).then_some(Stamp {
        publisher: u32::try_from(publisher).ok()?,
        seq,
        sent_ns,
    })
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Reads the header of a payload of run `run`; `None` for anything else.
pub fn parse(payload: &[u8], run: u32) -> Option<Stamp> {
    if payload.first() == Some(&b'{') {
        return parse_json(payload, run);
    }
    let header = payload.get(..HEADER_LEN)?;
    if be_u32(&header[0..4])? != MAGIC || be_u32(&header[4..8])? != run {
        return None;
    }
    Some(Stamp {
        publisher: be_u32(&header[8..12])?,
        seq: be_u64(&header[12..20])?,
        sent_ns: be_u64(&header[20..28])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = PayloadWriter::new(64, 7, 3);
        let p = w.stamp(42, 123_456_789).to_vec();
        assert_eq!(p.len(), 64);
        assert_eq!(
            parse(&p, 7),
            Some(Stamp {
                publisher: 3,
                seq: 42,
                sent_ns: 123_456_789
            })
        );
        assert_eq!(parse(&p, 8), None, "other run");
        assert_eq!(parse(&p[..20], 7), None, "short");
        assert_eq!(parse(b"hello", 7), None);
    }

    #[test]
    fn json_round_trip() {
        let mut w = PayloadWriter::json(7, 3);
        let p = w.stamp(42, 123_456_789).to_vec();
        let text = String::from_utf8(p.clone()).unwrap();
        assert!(text.starts_with("{\"timestamp_ms\":"), "{text}");
        assert!(
            text.ends_with(",\"value\":\"GLG1:7:3:42:123456789\"}"),
            "{text}"
        );
        assert_eq!(
            parse(&p, 7),
            Some(Stamp {
                publisher: 3,
                seq: 42,
                sent_ns: 123_456_789
            })
        );
        assert_eq!(parse(&p, 8), None, "other run");
        assert_eq!(parse(b"{\"value\":1}", 7), None);
    }

    #[test]
    fn small_size_is_clamped() {
        let mut w = PayloadWriter::new(1, 1, 1);
        assert_eq!(w.stamp(0, 0).len(), HEADER_LEN);
    }
}
