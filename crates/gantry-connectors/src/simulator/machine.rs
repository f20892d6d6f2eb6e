//! One simulated machine: a deterministic state machine plus the process
//! values (counts, speed, temperature, energy) that follow from its state.
//!
//! Pure model: time only enters through the `now_ms` given to
//! [`MachineSim::step`], randomness only through the seeded PRNG.

use std::fmt;

use gantry_model::payload::Value;
use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// Simulation granularity: longer gaps between steps are integrated in
/// slices of at most this length so state changes land at the right time.
pub(crate) const MAX_SUBSTEP_MS: u64 = 1_000;
/// Gaps longer than this (suspend, clock jumps) are not replayed; the model
/// simply resumes as if only this much time had passed.
pub(crate) const MAX_CATCH_UP_MS: u64 = 3_600_000;

const AMBIENT_C: f64 = 22.0;
const WARM_TAU_S: f64 = 900.0;
const COOL_TAU_S: f64 = 1_500.0;
const SPEED_NOISE: f64 = 0.015;
const POWER_NOISE: f64 = 0.05;
const TEMP_JITTER_C: f64 = 0.05;
/// Extra reject rate right after a fault is cleared, fading out linearly.
const AFTER_FAULT_REJECT_RATE: f64 = 0.05;
const AFTER_FAULT_WINDOW_MS: u64 = 120_000;

/// What kind of machine is simulated; selects speed, power, temperatures
/// and the fault reasons it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineKind {
    Filler,
    Capper,
    Labeler,
    Generic,
}

struct Profile {
    nominal_speed: f64,
    running_kw: f64,
    idle_kw: f64,
    hot_c: f64,
    faults: &'static [&'static str],
    changeovers: &'static [&'static str],
}

pub(crate) const PLANNED_STOPS: &[&str] = &["shift change", "planned maintenance", "sanitation"];
const INFEED_EMPTY: &str = "infeed empty";
const OUTFEED_FULL: &str = "outfeed full";

impl MachineKind {
    fn profile(self) -> &'static Profile {
        match self {
            MachineKind::Filler => &Profile {
                nominal_speed: 600.0,
                running_kw: 12.0,
                idle_kw: 1.8,
                hot_c: 48.0,
                faults: &[
                    "jam at infeed",
                    "low air pressure",
                    "bottle fallen",
                    "fill valve leak",
                    "level probe fault",
                ],
                changeovers: &["product changeover", "bottle size changeover"],
            },
            MachineKind::Capper => &Profile {
                nominal_speed: 600.0,
                running_kw: 8.5,
                idle_kw: 1.2,
                hot_c: 52.0,
                faults: &[
                    "cap chute empty",
                    "jam at infeed",
                    "cap torque out of range",
                    "bottle fallen",
                    "low air pressure",
                ],
                changeovers: &["cap size changeover", "product changeover"],
            },
            MachineKind::Labeler => &Profile {
                nominal_speed: 620.0,
                running_kw: 10.0,
                idle_kw: 1.5,
                hot_c: 58.0,
                faults: &[
                    "label roll empty",
                    "label misapplied",
                    "glue temperature low",
                    "jam at infeed",
                    "low air pressure",
                ],
                changeovers: &["label changeover", "product changeover"],
            },
            MachineKind::Generic => &Profile {
                nominal_speed: 300.0,
                running_kw: 10.0,
                idle_kw: 1.0,
                hot_c: 45.0,
                faults: &[
                    "jam at infeed",
                    "low air pressure",
                    "motor overload",
                    "safety door open",
                ],
                changeovers: &["product changeover"],
            },
        }
    }

    /// Nominal running speed in units per minute.
    pub fn nominal_speed(self) -> f64 {
        self.profile().nominal_speed
    }
}

/// Operating state, published as the `state` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineState {
    Running,
    Idle,
    Starved,
    Blocked,
    Faulted,
    Changeover,
    PlannedStop,
}

impl MachineState {
    pub const ALL: [MachineState; 7] = [
        MachineState::Running,
        MachineState::Idle,
        MachineState::Starved,
        MachineState::Blocked,
        MachineState::Faulted,
        MachineState::Changeover,
        MachineState::PlannedStop,
    ];

    /// The published string.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Running => "running",
            MachineState::Idle => "idle",
            MachineState::Starved => "starved",
            MachineState::Blocked => "blocked",
            MachineState::Faulted => "faulted",
            MachineState::Changeover => "changeover",
            MachineState::PlannedStop => "planned-stop",
        }
    }

    /// Whether the machine counts as supplying its downstream neighbour. A
    /// blocked machine is full, so it is not why its neighbour starves; a
    /// line-wide stop stops the neighbour too, so it starves nobody either.
    fn supplies(self) -> bool {
        self == MachineState::Blocked || self.runs_with_line()
    }

    /// Whether the machine counts as accepting from its upstream neighbour;
    /// the mirror image of [`supplies`](Self::supplies).
    fn accepts(self) -> bool {
        self == MachineState::Starved || self.runs_with_line()
    }

    fn runs_with_line(self) -> bool {
        self == MachineState::Running || self.is_line_wide()
    }

    /// Dwell range in ms when the machine enters this state on its own, and
    /// whether short dwells are more likely than long ones (micro-stops).
    fn dwell_ms(self) -> (u64, u64, bool) {
        match self {
            MachineState::Running => (180_000, 1_200_000, false),
            MachineState::Idle => (30_000, 300_000, true),
            MachineState::Starved | MachineState::Blocked => (10_000, 90_000, true),
            MachineState::Faulted => (15_000, 240_000, true),
            MachineState::Changeover => (180_000, 480_000, false),
            MachineState::PlannedStop => (600_000, 1_200_000, false),
        }
    }

    /// States a line goes through together rather than machine by machine.
    fn is_line_wide(self) -> bool {
        matches!(self, MachineState::Changeover | MachineState::PlannedStop)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tags every simulated machine publishes, as `<equipment>/<tag>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    State,
    StateReason,
    GoodCount,
    RejectCount,
    Speed,
    Temperature,
    Energy,
}

impl Tag {
    pub const ALL: [Tag; 7] = [
        Tag::State,
        Tag::StateReason,
        Tag::GoodCount,
        Tag::RejectCount,
        Tag::Speed,
        Tag::Temperature,
        Tag::Energy,
    ];

    /// The topic segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::State => "state",
            Tag::StateReason => "state_reason",
            Tag::GoodCount => "good_count",
            Tag::RejectCount => "reject_count",
            Tag::Speed => "speed",
            Tag::Temperature => "temperature",
            Tag::Energy => "energy",
        }
    }
}

/// Published values of one machine at one instant, already rounded.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSnapshot {
    pub timestamp_ms: u64,
    pub state: MachineState,
    /// Empty exactly when running or idle.
    pub state_reason: String,
    pub good_count: u64,
    pub reject_count: u64,
    /// Units per minute, 2 decimals; 0 unless running.
    pub speed: f64,
    /// Degrees Celsius, 2 decimals.
    pub temperature: f64,
    /// Cumulative kWh, 3 decimals.
    pub energy_kwh: f64,
}

impl MachineSnapshot {
    /// One value per [`Tag`], in [`Tag::ALL`] order.
    pub fn readings(&self) -> [(Tag, Value); 7] {
        [
            (Tag::State, Value::Text(self.state.as_str().to_owned())),
            (Tag::StateReason, Value::Text(self.state_reason.clone())),
            (Tag::GoodCount, Value::Int(saturating_i64(self.good_count))),
            (
                Tag::RejectCount,
                Value::Int(saturating_i64(self.reject_count)),
            ),
            (Tag::Speed, Value::Float(self.speed)),
            (Tag::Temperature, Value::Float(self.temperature)),
            (Tag::Energy, Value::Float(self.energy_kwh)),
        ]
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Rounds to `decimals` places, normalising `-0.0` so it prints as `0.0`.
fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale + 0.0
}

/// Line conditions imposed on a machine by its neighbours for one slice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Constraint {
    /// A line-wide stop (changeover, planned stop) led by the line head.
    pub(crate) line_stop: Option<(MachineState, &'static str)>,
    pub(crate) starved: bool,
    pub(crate) blocked: bool,
}

/// Elapsed wall time since the previous call (0 on the first), capped at
/// [`MAX_CATCH_UP_MS`]; a clock that goes backwards yields 0.
pub(crate) fn wall_delta(last: &mut Option<u64>, now_ms: u64) -> u64 {
    let dt = last.map_or(0, |prev| now_ms.saturating_sub(prev));
    *last = Some(now_ms);
    dt.min(MAX_CATCH_UP_MS)
}

/// A single simulated machine.
///
/// Used standalone via [`MachineSim::step`], or as part of a
/// [`PlantSim`](super::PlantSim) which adds line coupling.
#[derive(Debug, Clone)]
pub struct MachineSim {
    topic: String,
    kind: MachineKind,
    rng: Rng,
    wall_ms: Option<u64>,
    /// Internal simulated clock; all timers below are on this clock.
    sim_ms: u64,

    // What the machine would do on its own.
    intrinsic: MachineState,
    intrinsic_reason: &'static str,
    intrinsic_until: u64,
    // Line position decides which starved/blocked causes are its own.
    has_upstream: bool,
    has_downstream: bool,
    starved_reason: String,
    blocked_reason: String,

    // What it actually does, after line coupling.
    state: MachineState,
    reason: String,
    supply_down_since: Option<u64>,
    accept_down_since: Option<u64>,
    fault_cleared_at: Option<u64>,

    base_reject_rate: f64,
    speed: f64,
    temperature: f64,
    temp_jitter: f64,
    energy_kwh: f64,
    unit_fraction: f64,
    good: u64,
    rejects: u64,
}

impl MachineSim {
    /// A machine starting in `running`, warm, with its own PRNG stream
    /// derived from `seed` and `topic`.
    pub fn new(topic: impl Into<String>, kind: MachineKind, seed: u64) -> Self {
        let topic = topic.into();
        let mut rng = Rng::for_stream(seed, &topic);
        let profile = kind.profile();
        // Staggered first dwell so machines do not all change state together.
        let first_dwell = rng.range_u64(30_000, 600_000);
        let base_reject_rate = 0.005 + 0.01 * rng.next_f64();
        let temperature = profile.hot_c - 2.0 * rng.next_f64();
        // A plausible meter reading rather than a brand-new meter.
        let energy_kwh = 10_000.0 + 50_000.0 * rng.next_f64();
        let mut sim = Self {
            topic,
            kind,
            rng,
            wall_ms: None,
            sim_ms: 0,
            intrinsic: MachineState::Running,
            intrinsic_reason: "",
            intrinsic_until: first_dwell,
            has_upstream: false,
            has_downstream: false,
            starved_reason: INFEED_EMPTY.to_owned(),
            blocked_reason: OUTFEED_FULL.to_owned(),
            state: MachineState::Running,
            reason: String::new(),
            supply_down_since: None,
            accept_down_since: None,
            fault_cleared_at: None,
            base_reject_rate,
            speed: 0.0,
            temperature,
            temp_jitter: 0.0,
            energy_kwh,
            unit_fraction: 0.0,
            good: 0,
            rejects: 0,
        };
        sim.refresh_instantaneous();
        sim
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn kind(&self) -> MachineKind {
        self.kind
    }

    /// Last path segment of the topic, used in coupling reasons.
    pub fn name(&self) -> &str {
        self.topic.rsplit('/').next().unwrap_or(&self.topic)
    }

    pub fn state(&self) -> MachineState {
        self.state
    }

    /// Advances the model to wall time `now_ms` (the first call only sets
    /// the origin) and returns the values to publish.
    pub fn step(&mut self, now_ms: u64) -> MachineSnapshot {
        let target = self.sim_ms + wall_delta(&mut self.wall_ms, now_ms);
        while self.sim_ms < target {
            let t = (self.sim_ms + MAX_SUBSTEP_MS).min(target);
            self.advance_to(t, Constraint::default());
        }
        self.snapshot(now_ms)
    }

    pub fn snapshot(&self, timestamp_ms: u64) -> MachineSnapshot {
        MachineSnapshot {
            timestamp_ms,
            state: self.state,
            state_reason: self.reason.clone(),
            good_count: self.good,
            reject_count: self.rejects,
            speed: round_to(self.speed, 2),
            temperature: round_to(self.temperature + self.temp_jitter, 2),
            energy_kwh: round_to(self.energy_kwh, 3),
        }
    }

    /// Declares line neighbours. Starvation is then caused by `upstream`
    /// instead of happening spontaneously, likewise blocking by `downstream`;
    /// a machine with an upstream neighbour follows the line head into
    /// changeovers and planned stops instead of starting its own.
    pub(crate) fn set_neighbours(&mut self, upstream: Option<&str>, downstream: Option<&str>) {
        self.has_upstream = upstream.is_some();
        self.has_downstream = downstream.is_some();
        if let Some(up) = upstream {
            self.starved_reason = format!("starved by {up}");
        }
        if let Some(down) = downstream {
            self.blocked_reason = format!("blocked by {down}");
        }
    }

    /// The line-wide stop this machine is leading, if any.
    pub(crate) fn line_stop(&self) -> Option<(MachineState, &'static str)> {
        self.intrinsic
            .is_line_wide()
            .then_some((self.intrinsic, self.intrinsic_reason))
    }

    /// Whether this machine has been failing to supply its downstream
    /// neighbour for at least `buffer_ms` as of sim time `t`.
    pub(crate) fn starving_downstream(&self, t: u64, buffer_ms: u64) -> bool {
        self.supply_down_since
            .is_some_and(|since| t.saturating_sub(since) >= buffer_ms)
    }

    /// Whether this machine has been refusing product from upstream for at
    /// least `buffer_ms` as of sim time `t`.
    pub(crate) fn blocking_upstream(&self, t: u64, buffer_ms: u64) -> bool {
        self.accept_down_since
            .is_some_and(|since| t.saturating_sub(since) >= buffer_ms)
    }

    /// Advances the simulated clock to `t` (at most [`MAX_SUBSTEP_MS`]
    /// ahead for accurate timing) under the given line conditions.
    pub(crate) fn advance_to(&mut self, t: u64, line: Constraint) {
        let dt_ms = t.saturating_sub(self.sim_ms);
        self.sim_ms = self.sim_ms.max(t);
        self.integrate(dt_ms, t);

        // A machine held up by its neighbours is not wearing towards its
        // own next stop, so its running time is paused.
        if self.intrinsic == MachineState::Running && self.state != MachineState::Running {
            self.intrinsic_until = self.intrinsic_until.saturating_add(dt_ms);
        }
        // Every dwell is at least 10 s, so with 1 s slices this runs at most
        // once; the bound only guards against misuse with huge slices.
        for _ in 0..64 {
            if self.intrinsic_until > t {
                break;
            }
            self.next_intrinsic();
        }

        // The machine's own stops win over anything the line imposes.
        let (state, reason) = match line {
            _ if self.intrinsic != MachineState::Running => (self.intrinsic, self.intrinsic_reason),
            Constraint {
                line_stop: Some(stop),
                ..
            } => stop,
            Constraint { starved: true, .. } => {
                (MachineState::Starved, self.starved_reason.as_str())
            }
            Constraint { blocked: true, .. } => {
                (MachineState::Blocked, self.blocked_reason.as_str())
            }
            _ => (MachineState::Running, ""),
        };
        if state != self.state || reason != self.reason {
            self.reason = reason.to_owned();
            self.enter(state, t);
        }
        self.refresh_instantaneous();
    }

    /// Accumulates production, heat and energy over `dt_ms` ending at `t`,
    /// using the state and speed that held during that interval.
    fn integrate(&mut self, dt_ms: u64, t: u64) {
        if dt_ms == 0 {
            return;
        }
        let dt_s = dt_ms as f64 / 1_000.0;
        let profile = self.kind.profile();
        let running = self.state == MachineState::Running;

        if running {
            self.unit_fraction += self.speed / 60.0 * dt_s;
            let whole = self.unit_fraction.floor();
            self.unit_fraction -= whole;
            // Float-to-int casts saturate; `whole` is small and non-negative.
            let units = whole as u64;
            let rate = self.reject_rate(t);
            let rejected = (0..units).filter(|_| self.rng.chance(rate)).count() as u64;
            self.good += units - rejected;
            self.rejects += rejected;
        }

        let (target, tau) = if running {
            (profile.hot_c, WARM_TAU_S)
        } else {
            (AMBIENT_C, COOL_TAU_S)
        };
        self.temperature += (target - self.temperature) * (1.0 - (-dt_s / tau).exp());

        let kw = if running {
            profile.running_kw
        } else {
            profile.idle_kw
        };
        let kw = kw * (1.0 + POWER_NOISE * self.rng.symmetric());
        self.energy_kwh += kw * dt_s / 3_600.0;
    }

    fn reject_rate(&self, t: u64) -> f64 {
        let boost = self.fault_cleared_at.map_or(0.0, |cleared| {
            let since = t.saturating_sub(cleared);
            let remaining = AFTER_FAULT_WINDOW_MS.saturating_sub(since);
            AFTER_FAULT_REJECT_RATE * remaining as f64 / AFTER_FAULT_WINDOW_MS as f64
        });
        self.base_reject_rate + boost
    }

    /// Picks the machine's own next state; it starts when the current one
    /// was due to end, not when it was noticed.
    fn next_intrinsic(&mut self) {
        let start = self.intrinsic_until;
        let profile = self.kind.profile();
        let (state, reason) = if self.intrinsic == MachineState::Running {
            // Weights for: faulted, starved, blocked, idle, changeover,
            // planned stop. Neighbours take over some causes (see
            // `set_neighbours`).
            let follower = self.has_upstream;
            let weights = [
                40,
                if follower { 0 } else { 12 },
                if self.has_downstream { 0 } else { 10 },
                15,
                if follower { 0 } else { 10 },
                if follower { 0 } else { 5 },
            ];
            match self.rng.weighted(&weights) {
                0 => (MachineState::Faulted, self.pick(profile.faults)),
                1 => (MachineState::Starved, INFEED_EMPTY),
                2 => (MachineState::Blocked, OUTFEED_FULL),
                3 => (MachineState::Idle, ""),
                4 => (MachineState::Changeover, self.pick(profile.changeovers)),
                _ => (MachineState::PlannedStop, self.pick(PLANNED_STOPS)),
            }
        } else {
            (MachineState::Running, "")
        };
        let (lo, hi, skewed) = state.dwell_ms();
        let dwell = if skewed {
            let u = self.rng.next_f64();
            lo + ((hi - lo) as f64 * u * u) as u64
        } else {
            self.rng.range_u64(lo, hi)
        };
        self.intrinsic = state;
        self.intrinsic_reason = reason;
        self.intrinsic_until = start.saturating_add(dwell);
    }

    fn pick(&mut self, reasons: &'static [&'static str]) -> &'static str {
        // Every reason list is non-empty; the fallback keeps the invariant
        // "non-empty reason when stopped" even if one were not.
        self.rng.pick(reasons).copied().unwrap_or("unknown")
    }

    fn enter(&mut self, state: MachineState, t: u64) {
        if self.state == MachineState::Faulted && state != MachineState::Faulted {
            self.fault_cleared_at = Some(t);
        }
        self.supply_down_since = if state.supplies() {
            None
        } else {
            self.supply_down_since.or(Some(t))
        };
        self.accept_down_since = if state.accepts() {
            None
        } else {
            self.accept_down_since.or(Some(t))
        };
        self.state = state;
    }

    fn refresh_instantaneous(&mut self) {
        self.speed = if self.state == MachineState::Running {
            self.kind.profile().nominal_speed * (1.0 + SPEED_NOISE * self.rng.symmetric())
        } else {
            0.0
        };
        self.temp_jitter = TEMP_JITTER_C * self.rng.symmetric();
    }

    #[cfg(test)]
    pub(crate) fn force_intrinsic(
        &mut self,
        state: MachineState,
        reason: &'static str,
        dur_ms: u64,
    ) {
        self.intrinsic = state;
        self.intrinsic_reason = reason;
        self.intrinsic_until = self.sim_ms + dur_ms;
    }

    #[cfg(test)]
    pub(crate) fn intrinsic_until_for_test(&self) -> u64 {
        self.intrinsic_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "acme/dallas/packaging/line-1/filler";

    #[test]
    fn round_to_behaves() {
        assert_eq!(round_to(12.3456, 2), 12.35);
        assert_eq!(round_to(0.0004, 3), 0.0);
        assert!(round_to(-0.0001, 2).is_sign_positive());
    }

    #[test]
    fn first_step_reports_a_warm_running_machine() {
        let mut sim = MachineSim::new(TOPIC, MachineKind::Filler, 1);
        let snap = sim.step(1_700_000_000_000);
        assert_eq!(snap.timestamp_ms, 1_700_000_000_000);
        assert_eq!(snap.state, MachineState::Running);
        assert_eq!(snap.state_reason, "");
        assert_eq!((snap.good_count, snap.reject_count), (0, 0));
        assert!((591.0..=609.0).contains(&snap.speed), "{}", snap.speed);
        assert!((45.0..=49.0).contains(&snap.temperature));
        assert!(snap.energy_kwh >= 10_000.0);
    }

    #[test]
    fn running_minute_produces_about_nominal_units() {
        let mut sim = MachineSim::new(TOPIC, MachineKind::Filler, 1);
        sim.force_intrinsic(MachineState::Running, "", 10 * 60_000);
        let start = sim.step(0);
        let end = sim.step(60_000);
        assert_eq!(end.state, MachineState::Running);
        let made = (end.good_count + end.reject_count) - (start.good_count + start.reject_count);
        assert!((585..=615).contains(&made), "made {made}");
        assert!(end.reject_count <= 30, "rejects {}", end.reject_count);
        // ~12 kW for a minute is ~0.2 kWh
        let kwh = end.energy_kwh - start.energy_kwh;
        assert!((0.17..0.23).contains(&kwh), "{kwh}");
    }

    #[test]
    fn one_big_step_equals_many_small_ones() {
        let mut a = MachineSim::new(TOPIC, MachineKind::Capper, 9);
        let mut b = a.clone();
        a.step(0);
        b.step(0);
        for s in 1..=600 {
            a.step(s * 1_000);
        }
        assert_eq!(b.step(600_000), a.snapshot(600_000));
    }

    #[test]
    fn huge_gaps_and_backward_clocks_are_bounded() {
        let mut sim = MachineSim::new(TOPIC, MachineKind::Labeler, 3);
        sim.step(1_000_000_000);
        let before = sim.sim_ms;
        sim.step(1_000_000_000 + 30 * 24 * 3_600_000);
        assert_eq!(sim.sim_ms - before, MAX_CATCH_UP_MS);
        let before = sim.sim_ms;
        sim.step(5);
        assert_eq!(sim.sim_ms, before);
        sim.step(1_005);
        assert_eq!(sim.sim_ms, before + 1_000);
    }

    #[test]
    fn fault_stops_production_and_cools_then_boosts_rejects() {
        let mut sim = MachineSim::new(TOPIC, MachineKind::Filler, 5);
        sim.step(0);
        sim.force_intrinsic(MachineState::Faulted, "jam at infeed", 700_000);
        let faulted = sim.step(1_000);
        assert_eq!(faulted.state, MachineState::Faulted);
        assert_eq!(faulted.state_reason, "jam at infeed");
        assert_eq!(faulted.speed, 0.0);
        let later = sim.step(600_000);
        assert_eq!(later.good_count, faulted.good_count);
        assert!(later.temperature < faulted.temperature - 5.0);
        assert!(sim.fault_cleared_at.is_none());

        let recovered = sim.step(701_000);
        assert_eq!(recovered.state, MachineState::Running);
        let cleared = sim.fault_cleared_at.unwrap_or(u64::MAX);
        assert!(sim.reject_rate(cleared) > sim.base_reject_rate + 0.04);
        assert_eq!(
            sim.reject_rate(cleared + AFTER_FAULT_WINDOW_MS),
            sim.base_reject_rate
        );
    }

    #[test]
    fn readings_have_expected_types() {
        let mut sim = MachineSim::new(TOPIC, MachineKind::Generic, 0);
        let readings = sim.step(0).readings();
        let tags: Vec<Tag> = readings.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, Tag::ALL);
        for (tag, value) in readings {
            let expected = match tag {
                Tag::State | Tag::StateReason => "string",
                Tag::GoodCount | Tag::RejectCount => "int",
                Tag::Speed | Tag::Temperature | Tag::Energy => "float",
            };
            assert_eq!(value.type_name(), expected, "{tag:?}");
        }
    }

    #[test]
    fn name_is_last_segment() {
        assert_eq!(
            MachineSim::new(TOPIC, MachineKind::Filler, 0).name(),
            "filler"
        );
        assert_eq!(
            MachineSim::new("solo", MachineKind::Filler, 0).name(),
            "solo"
        );
    }
}
