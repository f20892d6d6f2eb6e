//! A set of machines stepped together on one clock, with line coupling:
//! machines sharing a parent topic form a line (upstream first, in
//! configuration order) joined by small accumulation buffers.
//!
//! A machine whose upstream neighbour stops supplying for longer than the
//! buffer becomes starved; one whose downstream neighbour stops accepting
//! becomes blocked. Starvation only propagates downstream and blocking only
//! upstream, so the two can never hold each other up in a loop. Changeovers
//! and planned stops are decided by the line head and followed by the rest
//! of the line.

use std::collections::HashMap;

use super::SimulatedMachine;
use super::machine::{Constraint, MAX_SUBSTEP_MS, MachineSim, MachineSnapshot, wall_delta};

/// How long the conveyor between two machines can absorb a stoppage.
pub const LINE_BUFFER_MS: u64 = 30_000;

/// All simulated machines of a plant. Pure and deterministic, like
/// [`MachineSim`].
#[derive(Debug, Clone)]
pub struct PlantSim {
    machines: Vec<MachineSim>,
    upstream: Vec<Option<usize>>,
    downstream: Vec<Option<usize>>,
    head: Vec<Option<usize>>,
    wall_ms: Option<u64>,
    sim_ms: u64,
    constraints: Vec<Constraint>,
}

impl PlantSim {
    pub fn new(machines: &[SimulatedMachine], seed: u64) -> Self {
        let mut sims: Vec<MachineSim> = machines
            .iter()
            .map(|m| MachineSim::new(m.equipment_topic.clone(), m.kind, seed))
            .collect();

        let mut upstream = vec![None; sims.len()];
        let mut downstream = vec![None; sims.len()];
        let mut head = vec![None; sims.len()];
        let mut line_tail: HashMap<&str, usize> = HashMap::new();
        for (i, machine) in machines.iter().enumerate() {
            if let Some((parent, _)) = machine.equipment_topic.rsplit_once('/')
                && let Some(prev) = line_tail.insert(parent, i)
            {
                upstream[i] = Some(prev);
                downstream[prev] = Some(i);
                head[i] = head[prev].or(Some(prev));
            }
        }
        for i in 0..sims.len() {
            let name_of =
                |j: Option<usize>| j.and_then(|j| sims.get(j)).map(|m| m.name().to_owned());
            let up = name_of(upstream[i]);
            let down = name_of(downstream[i]);
            sims[i].set_neighbours(up.as_deref(), down.as_deref());
        }

        let constraints = vec![Constraint::default(); sims.len()];
        Self {
            machines: sims,
            upstream,
            downstream,
            head,
            wall_ms: None,
            sim_ms: 0,
            constraints,
        }
    }

    pub fn machines(&self) -> &[MachineSim] {
        &self.machines
    }

    /// Advances every machine to wall time `now_ms` (the first call only
    /// sets the origin) and returns their snapshots in configuration order.
    pub fn step(&mut self, now_ms: u64) -> Vec<MachineSnapshot> {
        let target = self.sim_ms + wall_delta(&mut self.wall_ms, now_ms);
        while self.sim_ms < target {
            let t = (self.sim_ms + MAX_SUBSTEP_MS).min(target);
            self.advance_to(t);
        }
        self.machines.iter().map(|m| m.snapshot(now_ms)).collect()
    }

    fn advance_to(&mut self, t: u64) {
        // Neighbour conditions are read from the previous slice for every
        // machine before any of them moves, so the update order within a
        // slice does not matter.
        for (i, c) in self.constraints.iter_mut().enumerate() {
            let up = self.upstream[i].and_then(|u| self.machines.get(u));
            let down = self.downstream[i].and_then(|d| self.machines.get(d));
            let head = self.head[i].and_then(|h| self.machines.get(h));
            *c = Constraint {
                line_stop: head.and_then(MachineSim::line_stop),
                starved: up.is_some_and(|m| m.starving_downstream(t, LINE_BUFFER_MS)),
                blocked: down.is_some_and(|m| m.blocking_upstream(t, LINE_BUFFER_MS)),
            };
        }
        for (machine, c) in self.machines.iter_mut().zip(&self.constraints) {
            machine.advance_to(t, *c);
        }
        self.sim_ms = t;
    }

    #[cfg(test)]
    pub(crate) fn machine_mut(&mut self, i: usize) -> Option<&mut MachineSim> {
        self.machines.get_mut(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::{MachineKind, MachineState};
    use super::*;

    const HOUR: u64 = 3_600_000;

    fn line() -> Vec<SimulatedMachine> {
        ["filler", "capper", "labeler"]
            .iter()
            .zip([
                MachineKind::Filler,
                MachineKind::Capper,
                MachineKind::Labeler,
            ])
            .map(|(name, kind)| SimulatedMachine {
                equipment_topic: format!("acme/dallas/packaging/line-1/{name}"),
                kind,
            })
            .collect()
    }

    /// A line where every machine runs for an hour unless told otherwise.
    fn steady_line() -> PlantSim {
        let mut plant = PlantSim::new(&line(), 11);
        plant.step(0);
        for i in 0..3 {
            if let Some(m) = plant.machine_mut(i) {
                m.force_intrinsic(MachineState::Running, "", HOUR);
            }
        }
        plant
    }

    fn states(snaps: &[MachineSnapshot]) -> Vec<(MachineState, &str)> {
        snaps
            .iter()
            .map(|s| (s.state, s.state_reason.as_str()))
            .collect()
    }

    #[test]
    fn lines_are_grouped_by_parent_topic_in_config_order() {
        let mut machines = line();
        machines.insert(
            1,
            SimulatedMachine {
                equipment_topic: "acme/dallas/packaging/line-2/filler".into(),
                kind: MachineKind::Filler,
            },
        );
        machines.push(SimulatedMachine {
            equipment_topic: "standalone".into(),
            kind: MachineKind::Generic,
        });
        let plant = PlantSim::new(&machines, 0);
        assert_eq!(plant.upstream, vec![None, None, Some(0), Some(2), None]);
        assert_eq!(plant.downstream, vec![Some(2), None, Some(3), None, None]);
    }

    #[test]
    fn filler_fault_starves_downstream_after_the_buffer_drains() {
        use MachineState::*;
        let mut plant = steady_line();
        if let Some(m) = plant.machine_mut(0) {
            m.force_intrinsic(Faulted, "jam at infeed", 300_000);
        }
        // The fault takes effect at the 1 s slice.
        let at = |plant: &mut PlantSim, s: u64| {
            let snaps = plant.step(s * 1_000);
            states(&snaps)
                .into_iter()
                .map(|(st, r)| (st, r.to_owned()))
                .collect::<Vec<_>>()
        };
        for s in 1..=30 {
            let now = at(&mut plant, s);
            assert_eq!(now[0], (Faulted, "jam at infeed".into()));
            assert_eq!(now[1].0, Running, "capper at {s}s");
        }
        let now = at(&mut plant, 31);
        assert_eq!(now[1], (Starved, "starved by filler".into()));
        assert_eq!(now[2].0, Running);
        for s in 32..=60 {
            assert_eq!(at(&mut plant, s)[2].0, Running, "labeler at {s}s");
        }
        assert_eq!(at(&mut plant, 61)[2], (Starved, "starved by capper".into()));

        for s in 62..300 {
            at(&mut plant, s);
        }
        let now = at(&mut plant, 300);
        assert_eq!((now[0].0, now[1].0, now[2].0), (Running, Starved, Starved));
        let now = at(&mut plant, 301);
        assert_eq!((now[0].0, now[1].0, now[2].0), (Running, Running, Starved));
        let now = at(&mut plant, 302);
        assert_eq!((now[0].0, now[1].0, now[2].0), (Running, Running, Running));
    }

    #[test]
    fn labeler_fault_blocks_upstream() {
        use MachineState::*;
        let mut plant = steady_line();
        if let Some(m) = plant.machine_mut(2) {
            m.force_intrinsic(Faulted, "label roll empty", 120_000);
        }
        for s in 1..=30 {
            plant.step(s * 1_000);
        }
        let snaps = plant.step(31_000);
        assert_eq!(
            states(&snaps),
            vec![
                (Running, ""),
                (Blocked, "blocked by labeler"),
                (Faulted, "label roll empty")
            ]
        );
        for s in 32..=60 {
            plant.step(s * 1_000);
        }
        let snaps = plant.step(61_000);
        assert_eq!(snaps[0].state_reason, "blocked by capper");
        let blocked_good = snaps[0].good_count;

        for s in 62..=120 {
            plant.step(s * 1_000);
        }
        // The labeler is back at 120 s; the relief reaches one machine per slice.
        let snaps = plant.step(121_000);
        assert_eq!(
            states(&snaps),
            vec![(Blocked, "blocked by capper"), (Running, ""), (Running, "")]
        );
        let snaps = plant.step(122_000);
        assert!(snaps.iter().all(|s| s.state == Running));
        assert_eq!(snaps[0].good_count, blocked_good, "no output while blocked");
    }

    #[test]
    fn line_head_leads_planned_stops_and_changeovers() {
        use MachineState::*;
        let mut plant = steady_line();
        if let Some(m) = plant.machine_mut(0) {
            m.force_intrinsic(PlannedStop, "shift change", 600_000);
        }
        plant.step(1_000);
        let snaps = plant.step(2_000);
        assert!(
            snaps
                .iter()
                .all(|s| (s.state, s.state_reason.as_str()) == (PlannedStop, "shift change")),
            "{snaps:?}"
        );
        // A follower's own fault still shows through the line stop.
        if let Some(m) = plant.machine_mut(1) {
            m.force_intrinsic(Faulted, "cap chute empty", 5_000);
        }
        let snaps = plant.step(3_000);
        assert_eq!(states(&snaps)[1], (Faulted, "cap chute empty"));
        assert_eq!(states(&snaps)[2].0, PlannedStop);
        for s in 4..=600 {
            plant.step(s * 1_000);
        }
        let snaps = plant.step(601_000);
        assert!(snaps.iter().all(|s| s.state == Running), "{snaps:?}");
    }

    #[test]
    fn induced_stops_do_not_consume_running_time() {
        let mut plant = steady_line();
        let due = plant.machines[1].clone();
        if let Some(m) = plant.machine_mut(0) {
            m.force_intrinsic(MachineState::Faulted, "low air pressure", 600_000);
        }
        for s in 1..=100 {
            plant.step(s * 1_000);
        }
        // The capper was starved from 31 s to 100 s.
        assert_eq!(
            plant.machines[1].intrinsic_until_for_test(),
            due.intrinsic_until_for_test() + 69_000
        );
    }
}
