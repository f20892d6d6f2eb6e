//! The spool's batch format: one group commit's values as one blob, so that
//! an append costs one row however many values it carries.
//!
//! Little-endian throughout:
//!
//! ```text
//! u8  format (1)
//! u32 topic count, then per topic: u32 byte length, UTF-8 bytes
//! u32 value count, then per value:
//!     u32 topic index, i64 ts_ms, u8 quality code, u8 kind,
//!     kind 0 int: i64 | 1 bool: u8 | 2 float: f64 | 3 text: u32 length, UTF-8 bytes
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use gantry_model::Value;

use crate::point::{Point, quality_code, quality_from_code};

const FORMAT: u8 = 1;

/// Encodes points; each distinct topic is written once.
pub(crate) fn encode(points: &[Point]) -> Vec<u8> {
    let mut topics: HashMap<&str, u32> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut index = Vec::with_capacity(points.len());
    for p in points {
        let next = order.len() as u32;
        let i = *topics.entry(&p.topic).or_insert_with(|| {
            order.push(&p.topic);
            next
        });
        index.push(i);
    }
    let mut out = Vec::with_capacity(
        16 + order.iter().map(|t| t.len() + 4).sum::<usize>() + points.len() * 23,
    );
    out.push(FORMAT);
    put_len(&mut out, order.len());
    for t in &order {
        put_len(&mut out, t.len());
        out.extend_from_slice(t.as_bytes());
    }
    put_len(&mut out, points.len());
    for (p, i) in points.iter().zip(index) {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&p.ts_ms.to_le_bytes());
        out.push(quality_code(p.quality) as u8);
        match &p.value {
            Value::Int(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(b) => {
                out.push(1);
                out.push(u8::from(*b));
            }
            Value::Float(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                put_len(&mut out, t.len());
                out.extend_from_slice(t.as_bytes());
            }
        }
    }
    out
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Why a blob is not a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

/// Decodes a batch, sharing topic strings through `topics`.
pub(crate) fn decode(
    blob: &[u8],
    topics: &mut HashMap<String, Arc<str>>,
) -> Result<Vec<Point>, DecodeError> {
    let mut r = Reader { blob, at: 0 };
    if r.u8()? != FORMAT {
        return Err(DecodeError("unknown batch format"));
    }
    let topic_count = r.len()?;
    let mut names: Vec<Arc<str>> = Vec::with_capacity(topic_count.min(blob.len()));
    for _ in 0..topic_count {
        let bytes = r.bytes()?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError("topic is not UTF-8"))?;
        let shared = match topics.get(text) {
            Some(t) => t.clone(),
            None => {
                if topics.len() > 100_000 {
                    topics.clear();
                }
                let t: Arc<str> = text.into();
                topics.insert(text.to_string(), t.clone());
                t
            }
        };
        names.push(shared);
    }
    let count = r.len()?;
    // Each value takes at least 15 bytes: a bad count cannot allocate much.
    let mut points = Vec::with_capacity(count.min(blob.len() / 15));
    for _ in 0..count {
        let topic = names
            .get(r.u32()? as usize)
            .ok_or(DecodeError("topic index out of range"))?
            .clone();
        let ts_ms = i64::from_le_bytes(r.array()?);
        let quality = quality_from_code(i64::from(r.u8()?));
        let value = match r.u8()? {
            0 => Value::Int(i64::from_le_bytes(r.array()?)),
            1 => Value::Bool(r.u8()? != 0),
            2 => Value::Float(f64::from_le_bytes(r.array()?)),
            3 => Value::Text(
                std::str::from_utf8(r.bytes()?)
                    .map_err(|_| DecodeError("text value is not UTF-8"))?
                    .to_string(),
            ),
            _ => return Err(DecodeError("unknown value kind")),
        };
        points.push(Point {
            topic,
            ts_ms,
            value,
            quality,
        });
    }
    if r.at != blob.len() {
        return Err(DecodeError("trailing bytes after the last value"));
    }
    Ok(points)
}

struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.blob.len())
            .ok_or(DecodeError("truncated batch"))?;
        let out = &self.blob[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        Ok(self.u32()? as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::Quality;
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(Value::Float),
            ".{0,20}".prop_map(Value::Text),
        ]
    }

    fn points() -> impl Strategy<Value = Vec<Point>> {
        prop::collection::vec((0usize..5, any::<i64>(), 0i64..3, value()), 0..50).prop_map(|v| {
            v.into_iter()
                .map(|(t, ts_ms, q, value)| Point {
                    topic: format!("a/b/t{t}").into(),
                    ts_ms,
                    value,
                    quality: quality_from_code(q),
                })
                .collect()
        })
    }

    fn same(a: &[Point], b: &[Point]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.topic == y.topic
                    && x.ts_ms == y.ts_ms
                    && x.quality == y.quality
                    && match (&x.value, &y.value) {
                        (Value::Float(f), Value::Float(g)) => f.to_bits() == g.to_bits(),
                        (v, w) => v == w,
                    }
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(points in points()) {
            let blob = encode(&points);
            let back = decode(&blob, &mut HashMap::new()).expect("decodes");
            prop_assert!(same(&points, &back));
        }

        #[test]
        fn damaged_batches_are_errors_not_panics(points in points(), cut in any::<prop::sample::Index>(), flip in any::<u8>()) {
            let blob = encode(&points);
            let i = cut.index(blob.len());
            let mut flipped = blob.clone();
            flipped[i] ^= flip | 1;
            let _ = decode(&flipped, &mut HashMap::new());
            prop_assert!(decode(&blob[..i], &mut HashMap::new()).is_err());
        }
    }

    #[test]
    fn a_topic_is_written_once_per_batch() {
        let p = |ts| Point {
            topic: "acme/dallas/packaging/line-1/filler/speed".into(),
            ts_ms: ts,
            value: Value::Float(1.0),
            quality: Quality::Good,
        };
        let one = encode(&[p(1)]).len();
        let two = encode(&[p(1), p(2)]).len();
        assert_eq!(two - one, 4 + 8 + 1 + 1 + 8);
    }
}
