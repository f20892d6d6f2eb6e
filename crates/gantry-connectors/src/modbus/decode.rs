//! Registers and bits to typed values: byte and word order, scale and
//! offset, enum maps, and the deadband test.

use gantry_model::Value;

use super::config::{Order, PointConfig, PointType, Target};

/// Why a point's raw data gave no value. The point's tag turns `bad`; no
/// value is made up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("response too short: point needs {needed} items at offset {offset}, got {got}")]
    Short {
        needed: usize,
        offset: usize,
        got: usize,
    },
    #[error("raw value {0} is not finite")]
    NotFinite(f64),
    #[error("scaled value {0} does not fit the int tag")]
    OutOfRange(String),
    #[error("raw value {0} has no entry in the point's enum map")]
    NotInEnum(i64),
    #[error("string is not valid UTF-8")]
    NotUtf8,
    #[error("a {0} point cannot produce this tag's type")]
    Incompatible(&'static str),
}

/// The raw data of one read response.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Registers(&'a [u16]),
    Bits(&'a [bool]),
}

/// An uninterpreted reading.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(String),
}

/// Decodes one point from a response, `offset` items into it.
pub fn decode(
    point: &PointConfig,
    byte_order: Order,
    word_order: Order,
    raw: Raw<'_>,
    offset: u16,
) -> Result<Value, DecodeError> {
    let reading = read(point.kind, byte_order, word_order, raw, usize::from(offset))?;
    convert(point, reading)
}

fn read(
    kind: PointType,
    byte_order: Order,
    word_order: Order,
    raw: Raw<'_>,
    offset: usize,
) -> Result<Reading, DecodeError> {
    let width = usize::from(kind.width());
    let short = |got: usize| DecodeError::Short {
        needed: width,
        offset,
        got,
    };
    match raw {
        Raw::Bits(bits) => match kind {
            PointType::Bool => bits
                .get(offset)
                .map(|b| Reading::Bool(*b))
                .ok_or(short(bits.len())),
            other => Err(DecodeError::Incompatible(other.name())),
        },
        Raw::Registers(registers) => {
            let words = registers
                .get(offset..offset + width)
                .ok_or(short(registers.len()))?;
            // Registers corrected for the byte order within each of them.
            let fix = |w: u16| match byte_order {
                Order::Big => w,
                Order::Little => w.swap_bytes(),
            };
            // The value's bits, most significant register first.
            let combined = || -> u64 {
                let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(fix(*w));
                match word_order {
                    Order::Big => words.iter().fold(0, fold),
                    Order::Little => words.iter().rev().fold(0, fold),
                }
            };
            Ok(match kind {
                PointType::Int16 => Reading::Int(i128::from(combined() as u16 as i16)),
                PointType::Uint16 => Reading::Int(i128::from(combined() as u16)),
                PointType::Int32 => Reading::Int(i128::from(combined() as u32 as i32)),
                PointType::Uint32 => Reading::Int(i128::from(combined() as u32)),
                PointType::Int64 => Reading::Int(i128::from(combined() as i64)),
                PointType::Float32 => Reading::Float(widen_f32(f32::from_bits(combined() as u32))),
                PointType::Float64 => Reading::Float(f64::from_bits(combined())),
                PointType::Bit { bit } => Reading::Bool(fix(words[0]) >> bit & 1 == 1),
                PointType::String { .. } => {
                    let bytes: Vec<u8> = words.iter().flat_map(|w| fix(*w).to_be_bytes()).collect();
                    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                    let text = std::str::from_utf8(&bytes[..end])
                        .map_err(|_| DecodeError::NotUtf8)?
                        .trim_end();
                    Reading::Text(text.to_owned())
                }
                PointType::Bool => return Err(DecodeError::Incompatible("bool")),
            })
        }
    }
}

/// The largest integer magnitude an f64 holds exactly.
const F64_EXACT: f64 = 9_007_199_254_740_992.0;

fn convert(point: &PointConfig, reading: Reading) -> Result<Value, DecodeError> {
    match (&point.target, reading) {
        (Target::Float, Reading::Int(i)) => {
            let v = i as f64 * point.scale + point.offset;
            finite(v).map(Value::Float)
        }
        (Target::Float, Reading::Float(f)) => {
            finite(f)?;
            finite(f * point.scale + point.offset).map(Value::Float)
        }
        (Target::Int, Reading::Int(i)) => {
            // The parser allows only whole scale and offset for int tags.
            let (scale, offset) = (point.scale, point.offset);
            if scale.abs() > F64_EXACT || offset.abs() > F64_EXACT {
                return Err(DecodeError::OutOfRange(format!("{i} * {scale} + {offset}")));
            }
            let scaled = i
                .checked_mul(scale as i128)
                .and_then(|v| v.checked_add(offset as i128))
                .ok_or_else(|| DecodeError::OutOfRange(format!("{i} * {scale} + {offset}")))?;
            i64::try_from(scaled)
                .map(Value::Int)
                .map_err(|_| DecodeError::OutOfRange(scaled.to_string()))
        }
        (Target::Bool, Reading::Bool(b)) => Ok(Value::Bool(b)),
        (Target::String, Reading::Text(t)) => Ok(Value::Text(t)),
        (Target::Enum { .. }, Reading::Text(t)) => Ok(Value::Text(t)),
        (Target::Enum { .. }, Reading::Int(i)) => lookup(point, i),
        (Target::Enum { .. }, Reading::Bool(b)) => lookup(point, i128::from(b)),
        _ => Err(DecodeError::Incompatible(point.kind.name())),
    }
}

fn lookup(point: &PointConfig, raw: i128) -> Result<Value, DecodeError> {
    let raw = i64::try_from(raw).map_err(|_| DecodeError::OutOfRange(raw.to_string()))?;
    point
        .enum_map
        .binary_search_by_key(&raw, |(k, _)| *k)
        .ok()
        .and_then(|i| point.enum_map.get(i))
        .map(|(_, v)| Value::Text(v.clone()))
        .ok_or(DecodeError::NotInEnum(raw))
}

fn finite(v: f64) -> Result<f64, DecodeError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeError::NotFinite(v))
    }
}

/// Whether `new` differs from `last` enough to publish: numbers by more than
/// `deadband` (any change when it is 0), everything else on any change.
pub fn changed(last: &Value, new: &Value, deadband: f64) -> bool {
    match (last.as_f64(), new.as_f64()) {
        (Some(a), Some(b)) if deadband > 0.0 => (b - a).abs() > deadband,
        _ => last != new,
    }
}

/// A float32 register value as the decimal it was written as: `607.9f32`
/// becomes `607.9`, not `607.9000244140625` (the nearest f64 to the same
/// bits), so a PLC's `607.9` reads as `607.9` in the namespace.
pub fn widen_f32(value: f32) -> f64 {
    if !value.is_finite() {
        return f64::from(value);
    }
    // The shortest text that round-trips the f32, read back as an f64.
    value.to_string().parse::<f64>().unwrap_or(f64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::Table;

    fn point(kind: PointType, target: Target) -> PointConfig {
        PointConfig {
            tag: "t".into(),
            topic: "a/b/t".into(),
            table: if kind == PointType::Bool {
                Table::Coil
            } else {
                Table::Holding
            },
            address: 0,
            kind,
            scale: 1.0,
            offset: 0.0,
            deadband: 0.0,
            enum_map: Vec::new(),
            target,
        }
    }

    fn regs(kind: PointType, target: Target, registers: &[u16]) -> Result<Value, DecodeError> {
        decode(
            &point(kind, target),
            Order::Big,
            Order::Big,
            Raw::Registers(registers),
            0,
        )
    }

    fn ordered(kind: PointType, bytes: Order, words: Order, registers: &[u16]) -> Value {
        decode(
            &point(kind, Target::Float),
            bytes,
            words,
            Raw::Registers(registers),
            0,
        )
        .unwrap()
    }

    #[test]
    fn sixteen_bit_integers() {
        assert_eq!(
            regs(PointType::Int16, Target::Int, &[0xFFFE]),
            Ok(Value::Int(-2))
        );
        assert_eq!(
            regs(PointType::Uint16, Target::Int, &[0xFFFE]),
            Ok(Value::Int(65_534))
        );
        assert_eq!(
            regs(PointType::Int16, Target::Float, &[0x8000]),
            Ok(Value::Float(-32_768.0))
        );
    }

    #[test]
    fn thirty_two_bit_values_in_every_order() {
        // 0x12345678 as int32 / uint32.
        let big = [0x1234, 0x5678];
        assert_eq!(
            regs(PointType::Uint32, Target::Int, &big),
            Ok(Value::Int(0x1234_5678))
        );
        assert_eq!(
            ordered(
                PointType::Uint32,
                Order::Big,
                Order::Little,
                &[0x5678, 0x1234]
            ),
            Value::Float(f64::from(0x1234_5678u32))
        );
        assert_eq!(
            ordered(
                PointType::Uint32,
                Order::Little,
                Order::Big,
                &[0x3412, 0x7856]
            ),
            Value::Float(f64::from(0x1234_5678u32))
        );
        assert_eq!(
            ordered(
                PointType::Uint32,
                Order::Little,
                Order::Little,
                &[0x7856, 0x3412]
            ),
            Value::Float(f64::from(0x1234_5678u32))
        );
        assert_eq!(
            regs(PointType::Int32, Target::Int, &[0xFFFF, 0xFFFF]),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            regs(PointType::Uint32, Target::Int, &[0xFFFF, 0xFFFF]),
            Ok(Value::Int(4_294_967_295))
        );
        assert_eq!(widen_f32(607.9), 607.9);
        assert_eq!(widen_f32(47.49), 47.49);
        assert!(widen_f32(f32::NAN).is_nan());
        // 1.5f32 = 0x3FC00000.
        let bits = 1.5f32.to_bits();
        let (hi, lo) = ((bits >> 16) as u16, bits as u16);
        assert_eq!(
            ordered(PointType::Float32, Order::Big, Order::Big, &[hi, lo]),
            Value::Float(1.5)
        );
        assert_eq!(
            ordered(PointType::Float32, Order::Big, Order::Little, &[lo, hi]),
            Value::Float(1.5)
        );
        assert_eq!(
            ordered(
                PointType::Float32,
                Order::Little,
                Order::Little,
                &[lo.swap_bytes(), hi.swap_bytes()]
            ),
            Value::Float(1.5)
        );
    }

    #[test]
    fn sixty_four_bit_values() {
        let bits = (-123_456.789_f64).to_bits();
        let words = [
            (bits >> 48) as u16,
            (bits >> 32) as u16,
            (bits >> 16) as u16,
            bits as u16,
        ];
        assert_eq!(
            ordered(PointType::Float64, Order::Big, Order::Big, &words),
            Value::Float(-123_456.789)
        );
        let mut reversed = words;
        reversed.reverse();
        assert_eq!(
            ordered(PointType::Float64, Order::Big, Order::Little, &reversed),
            Value::Float(-123_456.789)
        );
        let n: i64 = -9_000_000_000_123;
        let b = n as u64;
        let words = [
            (b >> 48) as u16,
            (b >> 32) as u16,
            (b >> 16) as u16,
            b as u16,
        ];
        assert_eq!(
            regs(PointType::Int64, Target::Int, &words),
            Ok(Value::Int(n))
        );
    }

    #[test]
    fn strings_trim_nul_and_spaces() {
        let kind = PointType::String { registers: 4 };
        let text = |r: &[u16], order| {
            decode(
                &point(kind, Target::String),
                order,
                Order::Big,
                Raw::Registers(r),
                0,
            )
        };
        // "AB", "C ", "\0\0", "\0\0"
        assert_eq!(
            text(&[0x4142, 0x4320, 0, 0], Order::Big),
            Ok(Value::Text("ABC".into()))
        );
        assert_eq!(
            text(&[0x4241, 0x2043, 0, 0], Order::Little),
            Ok(Value::Text("ABC".into()))
        );
        assert_eq!(
            text(&[0xFFFE, 0, 0, 0], Order::Big),
            Err(DecodeError::NotUtf8)
        );
    }

    #[test]
    fn bits_and_bools() {
        let p = point(PointType::Bit { bit: 3 }, Target::Bool);
        let get =
            |p: &PointConfig, order, r: &[u16]| decode(p, order, Order::Big, Raw::Registers(r), 0);
        assert_eq!(get(&p, Order::Big, &[0b1000]), Ok(Value::Bool(true)));
        assert_eq!(get(&p, Order::Big, &[0b0111]), Ok(Value::Bool(false)));
        // Little byte order: bit 3 of the swapped register.
        assert_eq!(get(&p, Order::Little, &[0x0800]), Ok(Value::Bool(true)));
        let high = point(PointType::Bit { bit: 15 }, Target::Bool);
        assert_eq!(get(&high, Order::Big, &[0x8000]), Ok(Value::Bool(true)));

        let coil = point(PointType::Bool, Target::Bool);
        let bits = [false, true, false];
        assert_eq!(
            decode(&coil, Order::Big, Order::Big, Raw::Bits(&bits), 1),
            Ok(Value::Bool(true))
        );
        assert!(matches!(
            decode(&coil, Order::Big, Order::Big, Raw::Bits(&bits), 3),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn scale_and_offset() {
        let mut p = point(PointType::Int16, Target::Float);
        p.scale = 0.1;
        p.offset = -40.0;
        assert_eq!(
            decode(&p, Order::Big, Order::Big, Raw::Registers(&[653]), 0),
            Ok(Value::Float(653.0 * 0.1 - 40.0))
        );
        let mut p = point(PointType::Uint16, Target::Int);
        p.scale = 10.0;
        p.offset = 5.0;
        assert_eq!(
            decode(&p, Order::Big, Order::Big, Raw::Registers(&[7]), 0),
            Ok(Value::Int(75))
        );
        let mut p = point(PointType::Int64, Target::Int);
        p.scale = 4.0;
        assert!(matches!(
            decode(
                &p,
                Order::Big,
                Order::Big,
                Raw::Registers(&[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]),
                0
            ),
            Err(DecodeError::OutOfRange(_))
        ));
        let nan = f32::NAN.to_bits();
        assert!(matches!(
            regs(
                PointType::Float32,
                Target::Float,
                &[(nan >> 16) as u16, nan as u16]
            ),
            Err(DecodeError::NotFinite(_))
        ));
    }

    #[test]
    fn enum_maps() {
        let mut p = point(
            PointType::Uint16,
            Target::Enum {
                values: vec!["stopped".into(), "running".into()],
            },
        );
        p.enum_map = vec![(0, "stopped".into()), (1, "running".into())];
        let at = |r: u16| decode(&p, Order::Big, Order::Big, Raw::Registers(&[r]), 0);
        assert_eq!(at(1), Ok(Value::Text("running".into())));
        assert_eq!(at(0), Ok(Value::Text("stopped".into())));
        assert_eq!(at(7), Err(DecodeError::NotInEnum(7)));
    }

    #[test]
    fn offsets_and_short_responses() {
        let p = point(PointType::Int32, Target::Int);
        let r = [0, 0, 0, 5];
        assert_eq!(
            decode(&p, Order::Big, Order::Big, Raw::Registers(&r), 2),
            Ok(Value::Int(5))
        );
        assert!(matches!(
            decode(&p, Order::Big, Order::Big, Raw::Registers(&r), 3),
            Err(DecodeError::Short { .. })
        ));
    }

    #[test]
    fn deadband() {
        assert!(changed(&Value::Float(1.0), &Value::Float(1.0001), 0.0));
        assert!(!changed(&Value::Float(1.0), &Value::Float(1.0), 0.0));
        assert!(!changed(&Value::Float(10.0), &Value::Float(10.4), 0.5));
        assert!(!changed(&Value::Float(10.0), &Value::Float(10.5), 0.5));
        assert!(changed(&Value::Float(10.0), &Value::Float(9.4), 0.5));
        assert!(changed(&Value::Int(10), &Value::Int(12), 1.0));
        assert!(!changed(&Value::Int(10), &Value::Int(11), 1.0));
        assert!(changed(&Value::Bool(true), &Value::Bool(false), 5.0));
        assert!(!changed(
            &Value::Text("a".into()),
            &Value::Text("a".into()),
            0.0
        ));
    }
}
