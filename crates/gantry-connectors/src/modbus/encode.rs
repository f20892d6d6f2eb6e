//! Typed values back to registers and coils, for writes that passed the
//! write-back gate: the inverse of [`super::decode`] (enum maps, scale and
//! offset, integer ranges, byte and word order).

use gantry_model::Value;

use super::config::{Order, PointConfig, PointType, Table};

/// What to send to the device for one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Function 5: one coil.
    Coil(bool),
    /// Function 6 (one register) or 16 (several).
    Registers(Vec<u16>),
    /// One bit of a holding register: read, change, write back.
    Bit { bit: u8, on: bool },
}

/// Why a value cannot be written to a point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("{0} is read-only in Modbus; only holding registers and coils can be written")]
    ReadOnlyTable(&'static str),
    #[error("value {value} does not fit a {kind} register (after scale and offset: {raw})")]
    OutOfRange {
        value: String,
        kind: &'static str,
        raw: String,
    },
    #[error("value {0:?} has no entry in the point's enum map")]
    NotInEnum(String),
    #[error("a {kind} point cannot take the value {value}")]
    Incompatible { kind: &'static str, value: String },
    #[error("text of {bytes} bytes does not fit {registers} registers")]
    TooLong { bytes: usize, registers: u16 },
}

/// Encodes `value` for `point`.
pub fn encode(
    point: &PointConfig,
    byte_order: Order,
    word_order: Order,
    value: &Value,
) -> Result<Encoded, EncodeError> {
    match point.table {
        Table::Input => return Err(EncodeError::ReadOnlyTable("an input register")),
        Table::Discrete => return Err(EncodeError::ReadOnlyTable("a discrete input")),
        Table::Holding | Table::Coil => {}
    }
    let incompatible = || EncodeError::Incompatible {
        kind: point.kind.name(),
        value: value.to_string(),
    };
    // Enum text back to its raw code.
    let value = match value {
        Value::Text(t) if !point.enum_map.is_empty() => {
            let raw = point
                .enum_map
                .iter()
                .find(|(_, v)| v == t)
                .map(|(k, _)| *k)
                .ok_or_else(|| EncodeError::NotInEnum(t.clone()))?;
            if point.kind.is_boolean() {
                Value::Bool(raw != 0)
            } else {
                // Enum codes are raw: no scale or offset.
                return registers_for_int(point, byte_order, word_order, i128::from(raw), value);
            }
        }
        other => other.clone(),
    };
    match (point.kind, &value) {
        (PointType::Bool, Value::Bool(b)) => Ok(Encoded::Coil(*b)),
        (PointType::Bit { bit }, Value::Bool(b)) => Ok(Encoded::Bit { bit, on: *b }),
        (PointType::String { registers: length }, Value::Text(t)) => {
            let bytes = t.as_bytes();
            if bytes.len() > usize::from(length) * 2 {
                return Err(EncodeError::TooLong {
                    bytes: bytes.len(),
                    registers: length,
                });
            }
            let mut padded = bytes.to_vec();
            padded.resize(usize::from(length) * 2, 0);
            let words = padded
                .chunks(2)
                .map(|p| fix(u16::from_be_bytes([p[0], p[1]]), byte_order))
                .collect();
            Ok(Encoded::Registers(words))
        }
        // Exact integer arithmetic where it is possible (large int64 values
        // do not survive a trip through f64).
        (kind, Value::Int(i))
            if kind.is_integer()
                && point.scale.fract() == 0.0
                && point.offset.fract() == 0.0
                && point.scale.abs() <= 9.0e15
                && point.offset.abs() <= 9.0e15 =>
        {
            let (scale, offset) = (point.scale as i128, point.offset as i128);
            let shifted = i128::from(*i) - offset;
            if scale == 0 || shifted % scale != 0 {
                return Err(EncodeError::OutOfRange {
                    value: value.to_string(),
                    kind: kind.name(),
                    raw: format!("({i} - {offset}) / {scale}"),
                });
            }
            registers_for_int(point, byte_order, word_order, shifted / scale, &value)
        }
        (kind, Value::Int(_) | Value::Float(_)) if kind.is_integer() || kind.is_float() => {
            let number = match value {
                Value::Int(i) => i as f64,
                Value::Float(f) => f,
                _ => return Err(incompatible()),
            };
            let raw = (number - point.offset) / point.scale;
            if kind.is_float() {
                let bits = match kind {
                    PointType::Float32 => {
                        let f = raw as f32;
                        if !f.is_finite() {
                            return Err(EncodeError::OutOfRange {
                                value: value.to_string(),
                                kind: kind.name(),
                                raw: raw.to_string(),
                            });
                        }
                        u64::from(f.to_bits())
                    }
                    _ => raw.to_bits(),
                };
                return Ok(Encoded::Registers(split(
                    bits,
                    kind.width(),
                    byte_order,
                    word_order,
                )));
            }
            let rounded = raw.round();
            if !rounded.is_finite() || (rounded - raw).abs() > 1e-6 * raw.abs().max(1.0) {
                return Err(EncodeError::OutOfRange {
                    value: value.to_string(),
                    kind: kind.name(),
                    raw: raw.to_string(),
                });
            }
            registers_for_int(point, byte_order, word_order, rounded as i128, &value)
        }
        _ => Err(incompatible()),
    }
}

fn registers_for_int(
    point: &PointConfig,
    byte_order: Order,
    word_order: Order,
    raw: i128,
    value: &Value,
) -> Result<Encoded, EncodeError> {
    let (min, max): (i128, i128) = match point.kind {
        PointType::Int16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        PointType::Uint16 => (0, i128::from(u16::MAX)),
        PointType::Int32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        PointType::Uint32 => (0, i128::from(u32::MAX)),
        PointType::Int64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        _ => {
            return Err(EncodeError::Incompatible {
                kind: point.kind.name(),
                value: value.to_string(),
            });
        }
    };
    if raw < min || raw > max {
        return Err(EncodeError::OutOfRange {
            value: value.to_string(),
            kind: point.kind.name(),
            raw: raw.to_string(),
        });
    }
    // Two's complement in the point's width.
    let bits = (raw as i64) as u64;
    Ok(Encoded::Registers(split(
        bits,
        point.kind.width(),
        byte_order,
        word_order,
    )))
}

fn fix(word: u16, byte_order: Order) -> u16 {
    match byte_order {
        Order::Big => word,
        Order::Little => word.swap_bytes(),
    }
}

/// The low `width` registers of `bits`, in the device's word and byte order.
fn split(bits: u64, width: u16, byte_order: Order, word_order: Order) -> Vec<u16> {
    let mut words: Vec<u16> = (0..width)
        .rev()
        .map(|i| fix((bits >> (16 * u32::from(i))) as u16, byte_order))
        .collect();
    if word_order == Order::Little {
        words.reverse();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::Target;
    use crate::modbus::decode::{Raw, decode};

    fn point(kind: PointType, target: Target, table: Table) -> PointConfig {
        PointConfig {
            tag: "t".into(),
            topic: "a/b/t".into(),
            table,
            address: 0,
            kind,
            scale: 1.0,
            offset: 0.0,
            deadband: 0.0,
            enum_map: Vec::new(),
            target,
        }
    }

    fn round_trip(p: &PointConfig, bytes: Order, words: Order, value: Value) {
        match encode(p, bytes, words, &value).unwrap() {
            Encoded::Registers(regs) => {
                let back = decode(p, bytes, words, Raw::Registers(&regs), 0).unwrap();
                assert_eq!(back, value, "{:?} {bytes:?} {words:?}", p.kind);
            }
            other => panic!("expected registers, got {other:?}"),
        }
    }

    #[test]
    fn every_register_type_round_trips_in_every_order() {
        let orders = [Order::Big, Order::Little];
        for bytes in orders {
            for words in orders {
                let int = |k| point(k, Target::Int, Table::Holding);
                round_trip(&int(PointType::Int16), bytes, words, Value::Int(-1234));
                round_trip(&int(PointType::Uint16), bytes, words, Value::Int(65_535));
                round_trip(&int(PointType::Int32), bytes, words, Value::Int(-70_000));
                round_trip(
                    &int(PointType::Uint32),
                    bytes,
                    words,
                    Value::Int(4_000_000_000),
                );
                round_trip(
                    &int(PointType::Int64),
                    bytes,
                    words,
                    Value::Int(i64::MIN + 1),
                );
                let float = |k| point(k, Target::Float, Table::Holding);
                round_trip(
                    &float(PointType::Float32),
                    bytes,
                    words,
                    Value::Float(607.9),
                );
                round_trip(
                    &float(PointType::Float64),
                    bytes,
                    words,
                    Value::Float(-1e-9),
                );
                round_trip(
                    &point(
                        PointType::String { registers: 4 },
                        Target::String,
                        Table::Holding,
                    ),
                    bytes,
                    words,
                    Value::Text("lot-7".into()),
                );
            }
        }
    }

    #[test]
    fn scale_offset_and_enums_are_inverted() {
        let mut p = point(PointType::Int16, Target::Float, Table::Holding);
        p.scale = 0.1;
        p.offset = 20.0;
        assert_eq!(
            encode(&p, Order::Big, Order::Big, &Value::Float(25.5)),
            Ok(Encoded::Registers(vec![55]))
        );
        let mut e = point(
            PointType::Uint16,
            Target::Enum {
                values: vec!["stopped".into(), "running".into()],
            },
            Table::Holding,
        );
        e.enum_map = vec![(0, "stopped".into()), (1, "running".into())];
        assert_eq!(
            encode(&e, Order::Big, Order::Big, &Value::Text("running".into())),
            Ok(Encoded::Registers(vec![1]))
        );
        assert!(matches!(
            encode(&e, Order::Big, Order::Big, &Value::Text("flying".into())),
            Err(EncodeError::NotInEnum(_))
        ));
    }

    #[test]
    fn refusals_explain_themselves() {
        let input = point(PointType::Uint16, Target::Int, Table::Input);
        assert_eq!(
            encode(&input, Order::Big, Order::Big, &Value::Int(1)),
            Err(EncodeError::ReadOnlyTable("an input register"))
        );
        let small = point(PointType::Uint16, Target::Int, Table::Holding);
        assert!(matches!(
            encode(&small, Order::Big, Order::Big, &Value::Int(70_000)),
            Err(EncodeError::OutOfRange { .. })
        ));
        let mut fractional = point(PointType::Int16, Target::Float, Table::Holding);
        fractional.scale = 1.0;
        assert!(matches!(
            encode(&fractional, Order::Big, Order::Big, &Value::Float(1.5)),
            Err(EncodeError::OutOfRange { .. })
        ));
        let coil = point(PointType::Bool, Target::Bool, Table::Coil);
        assert_eq!(
            encode(&coil, Order::Big, Order::Big, &Value::Bool(true)),
            Ok(Encoded::Coil(true))
        );
        let bit = point(PointType::Bit { bit: 3 }, Target::Bool, Table::Holding);
        assert_eq!(
            encode(&bit, Order::Big, Order::Big, &Value::Bool(false)),
            Ok(Encoded::Bit { bit: 3, on: false })
        );
        let text = point(
            PointType::String { registers: 1 },
            Target::String,
            Table::Holding,
        );
        assert!(matches!(
            encode(&text, Order::Big, Order::Big, &Value::Text("abc".into())),
            Err(EncodeError::TooLong { .. })
        ));
    }
}
