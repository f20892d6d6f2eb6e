//! The ISO 22400-2 time and quantity elements of a work unit over a period:
//! what every KPI is computed from, and what line and site roll-ups add up
//! (never the percentages).

use serde::Serialize;

/// Where a stretch of time goes in the ISO 22400 time model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimeBucket {
    /// Actual production time: producing.
    Apt,
    /// Actual unit setup time: setup and changeover.
    Aust,
    /// Actual unit delay time: interruptions with an order (starved,
    /// blocked, micro-stops).
    Adet,
    /// Actual unit down time: down inside planned busy time (breakdowns, no
    /// order).
    Adot,
    /// Planned downtime: breaks, planned maintenance. Outside the KPI base.
    Pdot,
    /// No usable state (no value yet, bad quality, a recording gap, a state
    /// the model does not know): a loss inside planned busy time, reported
    /// on its own so that missing data lowers OEE visibly instead of
    /// disappearing from the base.
    Unknown,
    /// Not planned operation time (no shift, or a state the model books as
    /// outside planned time).
    Outside,
}

impl TimeBucket {
    pub const ALL: [TimeBucket; 7] = [
        TimeBucket::Apt,
        TimeBucket::Aust,
        TimeBucket::Adet,
        TimeBucket::Adot,
        TimeBucket::Pdot,
        TimeBucket::Unknown,
        TimeBucket::Outside,
    ];

    /// The name used in configuration and output (`APT`, …, `UNKNOWN`,
    /// `OUTSIDE`).
    pub fn as_str(self) -> &'static str {
        match self {
            TimeBucket::Apt => "APT",
            TimeBucket::Aust => "AUST",
            TimeBucket::Adet => "ADET",
            TimeBucket::Adot => "ADOT",
            TimeBucket::Pdot => "PDOT",
            TimeBucket::Unknown => "UNKNOWN",
            TimeBucket::Outside => "OUTSIDE",
        }
    }

    /// Parses a bucket name, case-insensitively.
    pub fn parse(text: &str) -> Option<TimeBucket> {
        TimeBucket::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(text))
    }

    /// What the bucket means, for explanations.
    pub fn meaning(self) -> &'static str {
        match self {
            TimeBucket::Apt => "actual production time",
            TimeBucket::Aust => "setup and changeover",
            TimeBucket::Adet => "delays with an order",
            TimeBucket::Adot => "down inside planned busy time",
            TimeBucket::Pdot => "planned downtime",
            TimeBucket::Unknown => "no usable state data (counted as a loss)",
            TimeBucket::Outside => "outside planned operation time",
        }
    }

    /// Inside planned busy time (the KPI base).
    pub fn in_busy_time(self) -> bool {
        matches!(
            self,
            TimeBucket::Apt
                | TimeBucket::Aust
                | TimeBucket::Adet
                | TimeBucket::Adot
                | TimeBucket::Unknown
        )
    }
}

impl std::fmt::Display for TimeBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of one work unit (or a sum of units) over one period.
/// Durations in milliseconds, quantities in units.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Elements {
    /// Planned operation time: the shift calendar's time inside the period,
    /// less time the state model books as outside planned time.
    pub pot_ms: i64,
    /// Planned downtime (calendar breaks and windows, planned-stop states).
    pub pdot_ms: i64,
    pub apt_ms: i64,
    pub aust_ms: i64,
    pub adet_ms: i64,
    pub adot_ms: i64,
    /// Inside planned busy time without usable state data.
    pub unknown_ms: i64,
    /// Produced quantity (PQ).
    pub produced: f64,
    /// Good quantity (GQ).
    pub good: f64,
    /// Scrap quantity (SQ).
    pub scrap: f64,
    /// Σ planned run time per item × produced quantity (PRI × PQ), in ms.
    pub ideal_produced_ms: f64,
    /// Σ PRI × GQ, in ms.
    pub ideal_good_ms: f64,
    /// Failure events (FE): entries into a failure state inside planned
    /// busy time.
    pub failures: u64,
    /// Time in failure states inside planned busy time (the restoration
    /// time of those failures).
    pub failure_ms: i64,
    /// Energy used, kWh (`None` without an energy meter).
    pub energy_kwh: Option<f64>,
}

impl Elements {
    /// Planned busy time: PBT = POT − PDOT.
    pub fn pbt_ms(&self) -> i64 {
        self.pot_ms - self.pdot_ms
    }

    /// Actual order execution time: AOET = APT + AUST + ADET + ADOT, plus
    /// the unknown time (which may have been any of them).
    pub fn aoet_ms(&self) -> i64 {
        self.apt_ms + self.aust_ms + self.adet_ms + self.adot_ms + self.unknown_ms
    }

    /// Milliseconds booked to a bucket.
    pub fn bucket_ms(&self, bucket: TimeBucket) -> i64 {
        match bucket {
            TimeBucket::Apt => self.apt_ms,
            TimeBucket::Aust => self.aust_ms,
            TimeBucket::Adet => self.adet_ms,
            TimeBucket::Adot => self.adot_ms,
            TimeBucket::Pdot => self.pdot_ms,
            TimeBucket::Unknown => self.unknown_ms,
            TimeBucket::Outside => 0,
        }
    }

    /// Books `ms` of planned operation time to `bucket` (`Outside` books
    /// nothing: that time is not planned operation time).
    pub fn add_time(&mut self, bucket: TimeBucket, ms: i64) {
        if bucket == TimeBucket::Outside {
            return;
        }
        self.pot_ms += ms;
        match bucket {
            TimeBucket::Apt => self.apt_ms += ms,
            TimeBucket::Aust => self.aust_ms += ms,
            TimeBucket::Adet => self.adet_ms += ms,
            TimeBucket::Adot => self.adot_ms += ms,
            TimeBucket::Pdot => self.pdot_ms += ms,
            TimeBucket::Unknown => self.unknown_ms += ms,
            TimeBucket::Outside => {}
        }
    }

    /// Adds another unit's or period's elements: how lines, sites and
    /// longer periods roll up.
    pub fn add(&mut self, other: &Elements) {
        self.pot_ms += other.pot_ms;
        self.pdot_ms += other.pdot_ms;
        self.apt_ms += other.apt_ms;
        self.aust_ms += other.aust_ms;
        self.adet_ms += other.adet_ms;
        self.adot_ms += other.adot_ms;
        self.unknown_ms += other.unknown_ms;
        self.produced += other.produced;
        self.good += other.good;
        self.scrap += other.scrap;
        self.ideal_produced_ms += other.ideal_produced_ms;
        self.ideal_good_ms += other.ideal_good_ms;
        self.failures += other.failures;
        self.failure_ms += other.failure_ms;
        self.energy_kwh = match (self.energy_kwh, other.energy_kwh) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}
