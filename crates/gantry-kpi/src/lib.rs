//! Harmonized KPIs: one ISO 22400-2 definition of OEE and its factors,
//! throughput, scrap, MTBF/MTTR, downtime by reason and energy per good
//! unit, shared by IT and OT, each value explainable from its inputs.
//! See `docs/kpi.md`.
//!
//! - [`elements`]: the time and quantity elements (APT, PBT, PQ, …) and the
//!   time buckets states are booked to.
//! - [`formulas`]: the KPIs computed from elements, with formula and inputs.
//! - [`state_model`]: which bucket each machine state belongs to (built-in
//!   models for Gantry's demo states, PackML and UMH codes).
//! - [`calendar`]: shift calendars (planned operation time, breaks, planned
//!   downtime) in a time zone.
//! - [`counter`]: counter increases with resets and rollovers.
//! - [`unit`]: work units and the tags that feed them.
//! - [`config`]: the `[kpi]` section of a site model and the state models
//!   of a standard, with file:line errors.
//! - [`period`]: current shift, last shift, days, weeks, ranges.
//! - [`history`]: a unit's recorded values for a period, from the
//!   historian.
//! - [`compute`]: one unit over one period, from recorded values to KPIs,
//!   with the intervals and readings that explain them.
//! - [`live`]: the current shift of every unit, fed from the broker and
//!   published under `<path>/_kpi/`.
//! - [`report`]: any path (unit, line, site) over a period, rolled up from
//!   elements, and the `show` / `explain` texts.

pub mod calendar;
pub mod compute;
pub mod config;
pub mod counter;
pub mod elements;
pub mod formulas;
pub mod history;
pub mod live;
pub mod period;
pub mod report;
pub mod state_model;
pub mod unit;

pub use compute::{Period, StateSample, UnitData, UnitResult, compute};
pub use elements::{Elements, TimeBucket};
pub use formulas::{Kpi, KpiValue};
pub use state_model::StateModel;
pub use unit::{Counting, WorkUnit};
