//! Per-publisher bitsets of received sequence numbers: tells a first delivery
//! from a duplicate, so loss and duplicates can be counted exactly, and notices
//! gaps (a message that overtakes missing ones) as soon as they happen.

/// Sequence numbers at or above this are treated as garbage (bounds memory at
/// 32 MiB per publisher whatever the broker sends).
const MAX_SEQ: u64 = 1 << 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A first delivery. `skipped`: earlier sequence numbers it overtook (missing
    /// so far); `late`: it fills such a gap itself.
    First {
        skipped: u64,
        late: bool,
    },
    Duplicate,
    /// Publisher index or sequence number out of range.
    Invalid,
}

pub struct Tracker {
    bits: Vec<Vec<u64>>,
    /// Per publisher: one past the highest sequence number seen.
    next: Vec<u64>,
}

impl Tracker {
    pub fn new(publishers: usize) -> Self {
        Self {
            bits: vec![Vec::new(); publishers],
            next: vec![0; publishers],
        }
    }

    pub fn record(&mut self, publisher: u32, seq: u64) -> Seen {
        let Some(bits) = self.bits.get_mut(publisher as usize) else {
            return Seen::Invalid;
        };
        if seq >= MAX_SEQ {
            return Seen::Invalid;
        }
        let word = (seq / 64) as usize;
        if word >= bits.len() {
            bits.resize((word + 1).next_power_of_two(), 0);
        }
        let mask = 1u64 << (seq % 64);
        let slot = &mut bits[word];
        if *slot & mask != 0 {
            return Seen::Duplicate;
        }
        *slot |= mask;
        let Some(next) = self.next.get_mut(publisher as usize) else {
            return Seen::Invalid;
        };
        if seq >= *next {
            let skipped = seq - *next;
            *next = seq + 1;
            Seen::First {
                skipped,
                late: false,
            }
        } else {
            Seen::First {
                skipped: 0,
                late: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_duplicate_invalid() {
        let mut t = Tracker::new(2);
        let first = |skipped, late| Seen::First { skipped, late };
        assert_eq!(t.record(0, 0), first(0, false));
        assert_eq!(t.record(0, 5), first(4, false));
        assert_eq!(t.record(0, 5), Seen::Duplicate);
        assert_eq!(t.record(0, 3), first(0, true));
        assert_eq!(t.record(0, 6), first(0, false));
        assert_eq!(t.record(1, 5), first(5, false));
        assert_eq!(t.record(1, 100_000), first(99_994, false));
        assert_eq!(t.record(2, 0), Seen::Invalid);
        assert_eq!(t.record(0, MAX_SEQ), Seen::Invalid);
    }
}
