//! Counting with cumulative counters (produced, good, scrap, energy
//! meters) that may reset to zero or roll over at a fixed modulus: the
//! increase over a period and every reading it rests on.

use serde::Serialize;

/// One reading of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    pub ts_ms: i64,
    pub value: f64,
}

/// A drop in a counter's value, and how it was read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drop {
    /// The counter restarted from zero: the new value is the increase.
    Reset { ts_ms: i64, before: f64, after: f64 },
    /// The counter wrapped at its modulus: the increase is `modulus - before
    /// + after`.
    Rollover { ts_ms: i64, before: f64, after: f64 },
    /// The counter came back at a value it cannot have counted up to since
    /// the previous reading (a replaced meter, a restarted device with a
    /// preset value): counting resumes from it, nothing is added.
    Restart { ts_ms: i64, before: f64, after: f64 },
}

/// A counter over one period `[from, to)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterSpan {
    /// The reading the period counts from: the last at or before its start,
    /// or (with a note) the first inside it.
    pub baseline: Option<Reading>,
    /// The last reading inside the period.
    pub last: Option<Reading>,
    /// What the counter added inside the period.
    pub increase: f64,
    pub drops: Vec<Drop>,
    /// Each increase, at the time of the reading that showed it.
    #[serde(skip)]
    pub increments: Vec<(i64, f64)>,
    /// Something the reader should know (no baseline, no readings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a drop in a counter is read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DropRules {
    /// The counter wraps at this value.
    pub modulus: Option<f64>,
    /// The fastest the counter can plausibly count (per ms). A drop to a
    /// value it could have reached from zero since the previous reading is a
    /// reset (that value is counted); anything else is a restart (nothing is
    /// counted). Without it every drop that is not a rollover is a restart.
    pub max_rate_per_ms: Option<f64>,
}

/// The increase of a counter over `[from_ms, to_ms)` from its readings in
/// time order (including readings before `from_ms`, the last of which is the
/// baseline). A reading at `to_ms` belongs to the next period. A drop is a
/// rollover when a `modulus` is given and the counter was in its upper half;
/// a reset when the new value is reachable from zero at `max_rate_per_ms`;
/// otherwise a restart.
pub fn span(readings: &[Reading], from_ms: i64, to_ms: i64, rules: DropRules) -> CounterSpan {
    let before = readings.partition_point(|r| r.ts_ms <= from_ms);
    let inside_end = readings.partition_point(|r| r.ts_ms < to_ms);
    let mut note = None;
    let (baseline, first_inside) = match before.checked_sub(1) {
        Some(i) => (Some(readings[i]), before),
        None if before < inside_end => {
            note = Some(
                "no reading at or before the period start: counted from the first reading inside it"
                    .to_string(),
            );
            (Some(readings[before]), before + 1)
        }
        None => (None, before),
    };
    let mut out = CounterSpan {
        baseline,
        last: None,
        increase: 0.0,
        drops: Vec::new(),
        increments: Vec::new(),
        note,
    };
    let Some(mut prev) = baseline else {
        out.note = Some("no readings".to_string());
        return out;
    };
    for r in &readings[first_inside.min(inside_end)..inside_end] {
        let delta = if r.value >= prev.value {
            r.value - prev.value
        } else {
            let (ts_ms, before, after) = (r.ts_ms, prev.value, r.value);
            let reachable = rules
                .max_rate_per_ms
                .is_some_and(|rate| after <= rate * (r.ts_ms - prev.ts_ms).max(0) as f64 + 1.0);
            match rules.modulus {
                Some(m) if before >= m / 2.0 && after < m / 2.0 => {
                    out.drops.push(Drop::Rollover {
                        ts_ms,
                        before,
                        after,
                    });
                    m - before + after
                }
                _ if reachable => {
                    out.drops.push(Drop::Reset {
                        ts_ms,
                        before,
                        after,
                    });
                    after
                }
                _ => {
                    out.drops.push(Drop::Restart {
                        ts_ms,
                        before,
                        after,
                    });
                    0.0
                }
            }
        };
        if delta > 0.0 {
            out.increase += delta;
            out.increments.push((r.ts_ms, delta));
        }
        out.last = Some(*r);
        prev = *r;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts_ms: i64, value: f64) -> Reading {
        Reading { ts_ms, value }
    }

    const ONE_PER_MS: DropRules = DropRules {
        modulus: None,
        max_rate_per_ms: Some(1.0),
    };

    #[test]
    fn increase_from_the_baseline_before_the_period() {
        let readings = [
            r(0, 10.0),
            r(50, 12.0),
            r(100, 15.0),
            r(150, 20.0),
            r(200, 30.0),
        ];
        let s = span(&readings, 100, 200, DropRules::default());
        assert_eq!(s.baseline, Some(r(100, 15.0)));
        assert_eq!(s.last, Some(r(150, 20.0)));
        assert_eq!(
            s.increase, 5.0,
            "the reading at the end belongs to the next period"
        );
        assert!(s.note.is_none() && s.drops.is_empty());
    }

    #[test]
    fn a_reset_counts_from_zero() {
        let readings = [r(0, 100.0), r(10, 110.0), r(20, 3.0), r(30, 8.0)];
        let s = span(&readings, 0, 100, ONE_PER_MS);
        assert_eq!(s.increase, 10.0 + 3.0 + 5.0);
        let reset = Drop::Reset {
            ts_ms: 20,
            before: 110.0,
            after: 3.0,
        };
        assert_eq!(s.drops, vec![reset]);
    }

    #[test]
    fn a_restart_at_an_unreachable_value_counts_nothing() {
        // A meter that comes back at 500 after 10 ms cannot have counted
        // 500 at one per ms: it restarted there.
        let readings = [r(0, 900.0), r(10, 910.0), r(20, 500.0), r(30, 505.0)];
        let s = span(&readings, 0, 100, ONE_PER_MS);
        assert_eq!(s.increase, 10.0 + 5.0);
        let restart = Drop::Restart {
            ts_ms: 20,
            before: 910.0,
            after: 500.0,
        };
        assert_eq!(s.drops, vec![restart]);
        // Without a known rate every drop is a restart.
        let s = span(&[r(0, 100.0), r(10, 3.0)], 0, 100, DropRules::default());
        assert_eq!(s.increase, 0.0);
    }

    #[test]
    fn a_rollover_wraps_at_the_modulus() {
        let wraps = DropRules {
            modulus: Some(65_536.0),
            max_rate_per_ms: Some(10.0),
        };
        let s = span(
            &[r(0, 65_530.0), r(10, 65_535.0), r(20, 4.0)],
            0,
            100,
            wraps,
        );
        assert_eq!(s.increase, 5.0 + 5.0);
        assert!(matches!(s.drops[0], Drop::Rollover { .. }));
        // A drop from the lower half is a reset even with a modulus.
        let s = span(&[r(0, 100.0), r(10, 20.0)], 0, 100, wraps);
        assert_eq!(s.increase, 20.0);
        assert!(matches!(s.drops[0], Drop::Reset { .. }));
    }

    #[test]
    fn without_a_baseline_the_first_reading_inside_is_the_start() {
        let s = span(&[r(20, 5.0), r(30, 9.0)], 0, 100, DropRules::default());
        assert_eq!(s.increase, 4.0);
        assert!(
            s.note
                .as_deref()
                .is_some_and(|n| n.contains("first reading"))
        );
        let s = span(&[], 0, 100, DropRules::default());
        assert_eq!(s.increase, 0.0);
        assert_eq!(s.note.as_deref(), Some("no readings"));
    }
}
