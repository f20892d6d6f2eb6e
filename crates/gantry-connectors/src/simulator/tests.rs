//! Whole-simulator tests: determinism, long-run invariants, payload format,
//! configuration, and the async source loop.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use proptest::prelude::*;
use tokio::sync::mpsc;

use super::*;
use crate::source::SourceHealth;

const T0: u64 = 1_700_000_000_000;

fn demo(seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        seed,
        ..SimulatorConfig::demo_plant()
    }
}

fn simulator(config: SimulatorConfig) -> Simulator {
    match Simulator::new(config) {
        Ok(sim) => sim,
        Err(e) => panic!("config rejected: {e}"),
    }
}

// ---------------------------------------------------------------- model --

#[test]
fn same_seed_gives_identical_messages_for_10k_ticks() {
    let mut a = simulator(demo(42));
    let mut b = simulator(demo(42));
    for step in 0..10_000 {
        let now = T0 + step * 1_000;
        assert_eq!(a.batch(now).unwrap(), b.batch(now).unwrap(), "tick {step}");
    }
}

#[test]
fn different_seeds_diverge() {
    let mut a = PlantSim::new(&demo(1).machines, 1);
    let mut b = PlantSim::new(&demo(2).machines, 2);
    let differs = (0..600).any(|s| a.step(T0 + s * 1_000) != b.step(T0 + s * 1_000));
    assert!(differs);
}

#[test]
fn adding_a_machine_does_not_change_the_others() {
    let base = demo(5);
    let mut extended = base.machines.clone();
    extended.push(SimulatedMachine::new(
        "acme/dallas/utilities/compressor",
        MachineKind::Generic,
    ));
    let mut a = PlantSim::new(&base.machines, 5);
    let mut b = PlantSim::new(&extended, 5);
    for s in 0..2_000 {
        let (sa, sb) = (a.step(T0 + s * 1_000), b.step(T0 + s * 1_000));
        assert_eq!(sa[..], sb[..sa.len()]);
    }
}

/// Per-machine statistics gathered over a long run.
#[derive(Default)]
struct Stats {
    visited: HashSet<MachineState>,
    reasons: HashSet<String>,
    running_ticks: u64,
    ticks: u64,
}

/// Checks one machine's consecutive snapshots. `single_slice` says the step
/// between them was short enough that the state cannot have changed within.
fn check_invariants(
    prev: &MachineSnapshot,
    now: &MachineSnapshot,
    kind: MachineKind,
    single_slice: bool,
) {
    use MachineState::*;
    let ctx = || format!("{prev:?} -> {now:?}");
    assert!(now.good_count >= prev.good_count, "{}", ctx());
    assert!(now.reject_count >= prev.reject_count, "{}", ctx());
    assert!(now.energy_kwh >= prev.energy_kwh, "{}", ctx());
    // Production happens during the interval after a running snapshot.
    let produced = now.good_count > prev.good_count || now.reject_count > prev.reject_count;
    if single_slice && produced {
        assert_eq!(prev.state, Running, "{}", ctx());
    }
    if now.state == Running {
        let nominal = kind.nominal_speed();
        assert!(
            (nominal * 0.98..=nominal * 1.02).contains(&now.speed),
            "{}",
            ctx()
        );
    } else {
        assert_eq!(now.speed, 0.0, "{}", ctx());
    }
    assert_eq!(
        now.state_reason.is_empty(),
        matches!(now.state, Running | Idle),
        "{}",
        ctx()
    );
    assert!((21.0..=60.0).contains(&now.temperature), "{}", ctx());
}

#[test]
fn long_run_invariants_hold_and_every_state_is_visited() {
    let config = demo(7);
    let kinds: Vec<MachineKind> = config.machines.iter().map(|m| m.kind).collect();
    let mut plant = PlantSim::new(&config.machines, config.seed);
    let mut prev = plant.step(T0);
    let mut stats: Vec<Stats> = prev.iter().map(|_| Stats::default()).collect();

    // 48 simulated hours at 1 s ticks.
    for s in 1..=172_800 {
        let now = plant.step(T0 + s * 1_000);
        for (i, snap) in now.iter().enumerate() {
            check_invariants(&prev[i], snap, kinds[i], true);
            let st = &mut stats[i];
            st.visited.insert(snap.state);
            st.reasons.insert(snap.state_reason.clone());
            st.ticks += 1;
            st.running_ticks += u64::from(snap.state == MachineState::Running);
        }
        prev = now;
    }

    for (i, (st, last)) in stats.iter().zip(&prev).enumerate() {
        let topic = &config.machines[i].equipment_topic;
        let missing: Vec<_> = MachineState::ALL
            .iter()
            .filter(|s| !st.visited.contains(s))
            .collect();
        assert!(missing.is_empty(), "{topic} never visited {missing:?}");

        let running = st.running_ticks as f64 / st.ticks as f64;
        assert!((0.55..0.95).contains(&running), "{topic} running {running}");

        let made = (last.good_count + last.reject_count) as f64;
        let reject_ratio = last.reject_count as f64 / made;
        assert!(
            (0.004..0.03).contains(&reject_ratio),
            "{topic} rejects {reject_ratio}"
        );
        // Roughly nominal speed times running time.
        let expected = kinds[i].nominal_speed() / 60.0 * st.running_ticks as f64;
        assert!((made / expected - 1.0).abs() < 0.02, "{topic} made {made}");
    }

    // Line coupling shows up in the reasons.
    let reasons = |i: usize| &stats[i].reasons;
    assert!(reasons(1).contains("starved by filler"));
    assert!(reasons(1).contains("blocked by labeler"));
    assert!(reasons(0).contains("blocked by capper"));
    assert!(reasons(2).contains("starved by capper"));
    // Head and tail of a line starve/block on their own too.
    assert!(reasons(0).contains("infeed empty"));
    assert!(reasons(2).contains("outfeed full"));
    assert!(reasons(2).contains("label roll empty"));
    assert!(reasons(1).contains("cap chute empty"));
    // Followers join the line head's planned stops rather than starving.
    assert!(
        machine::PLANNED_STOPS
            .iter()
            .any(|r| reasons(2).contains(*r))
    );
}

#[test]
fn published_payloads_follow_the_json_convention() {
    let mut sim = simulator(demo(3));
    let mut last_value: HashMap<String, serde_json::Value> = HashMap::new();
    for step in 0..2_000 {
        let now = T0 + step * 1_000;
        let batch = sim.batch(now).unwrap();
        assert_eq!(batch.len(), 6 * 7);
        for msg in batch {
            assert!(msg.retain);
            assert_eq!(msg.qos, 0);
            let json: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            let obj = json.as_object().unwrap();
            assert_eq!(obj.len(), 2, "{json}");
            assert_eq!(obj["timestamp_ms"].as_u64(), Some(now), "{json}");
            let value = &obj["value"];
            let raw = std::str::from_utf8(&msg.payload).unwrap();
            let tag = msg.topic.rsplit('/').next().unwrap();
            match tag {
                "state" | "state_reason" => assert!(value.is_string(), "{raw}"),
                "good_count" | "reject_count" => assert!(value.is_u64(), "{raw}"),
                "speed" | "temperature" | "energy" => {
                    assert!(value.is_f64(), "{raw}");
                    let printed = raw.rsplit(':').next().unwrap();
                    assert!(printed.contains('.'), "{raw}");
                    let decimals = printed.trim_end_matches('}').split('.').nth(1).unwrap();
                    assert!(decimals.len() <= 3, "{raw}");
                }
                other => panic!("unexpected tag {other}"),
            }
            if tag == "state" {
                let state = value.as_str().unwrap();
                assert!(MachineState::ALL.iter().any(|s| s.as_str() == state));
            }
            last_value.insert(msg.topic, value.clone());
        }
    }
    assert_eq!(last_value.len(), 42);
}

#[test]
fn payloads_are_the_canonical_encoding() {
    let mut sim = simulator(demo(3));
    let batch = sim.batch(T0).unwrap();
    for msg in &batch {
        let sample = Sample::parse(&msg.payload, -1).unwrap();
        assert_eq!(sample.timestamp_ms, T0 as i64);
        assert_eq!(sample.quality, gantry_model::payload::Quality::Good);
        assert_eq!(msg.payload, sample.to_json_bytes(), "{}", msg.topic);
    }
    let raw = |tag: &str| {
        let msg = batch.iter().find(|m| m.topic.ends_with(tag)).unwrap();
        String::from_utf8(msg.payload.to_vec()).unwrap()
    };
    assert_eq!(
        raw("line-1/filler/state"),
        format!(r#"{{"timestamp_ms":{T0},"value":"running"}}"#)
    );
    assert_eq!(
        raw("line-1/filler/good_count"),
        format!(r#"{{"timestamp_ms":{T0},"value":0}}"#)
    );
}

#[test]
fn timestamps_beyond_i64_are_refused() {
    let mut sim = simulator(demo(3));
    let too_late = i64::MAX as u64 + 1;
    assert_eq!(
        sim.batch(too_late),
        Err(PayloadError::TimestampRange {
            got: too_late.to_string()
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Invariants hold whatever the tick pattern: irregular, zero-length,
    /// backwards, or with long gaps.
    #[test]
    fn invariants_hold_for_any_seed_and_tick_pattern(
        seed in any::<u64>(),
        deltas in prop::collection::vec(
            prop_oneof![
                8 => 0i64..3_000,
                1 => -5_000i64..0,
                1 => 60_000i64..7_200_000,
            ],
            1..200,
        ),
    ) {
        let config = demo(seed);
        let kinds: Vec<MachineKind> = config.machines.iter().map(|m| m.kind).collect();
        let mut plant = PlantSim::new(&config.machines, seed);
        let mut now = T0;
        let mut prev = plant.step(now);
        for d in deltas {
            now = now.saturating_add_signed(d);
            let snaps = plant.step(now);
            for (i, snap) in snaps.iter().enumerate() {
                check_invariants(&prev[i], snap, kinds[i], d <= 1_000);
                prop_assert_eq!(snap.timestamp_ms, now);
            }
            prev = snaps;
        }
    }
}

// --------------------------------------------------------------- config --

#[test]
fn demo_plant_has_two_lines_of_three() {
    let config = SimulatorConfig::demo_plant();
    assert_eq!(config.tick, Duration::from_secs(1));
    let topics: Vec<&str> = config
        .machines
        .iter()
        .map(|m| m.equipment_topic.as_str())
        .collect();
    assert_eq!(
        topics,
        [
            "acme/dallas/packaging/line-1/filler",
            "acme/dallas/packaging/line-1/capper",
            "acme/dallas/packaging/line-1/labeler",
            "acme/dallas/packaging/line-2/filler",
            "acme/dallas/packaging/line-2/capper",
            "acme/dallas/packaging/line-2/labeler",
        ]
    );
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn invalid_configs_are_rejected() {
    let with = |topics: &[&str]| {
        SimulatorConfig::new(
            topics
                .iter()
                .map(|t| SimulatedMachine::new(*t, MachineKind::Generic))
                .collect(),
        )
    };
    assert_eq!(with(&[]).validate(), Err(SimulatorConfigError::NoMachines));
    assert_eq!(
        with(&["a/b", "a/b"]).validate(),
        Err(SimulatorConfigError::DuplicateTopic("a/b".into()))
    );
    for bad in ["", "/a", "a/", "a//b", "a/+/b", "a/#", "$SYS/x", "a\0b"] {
        assert!(
            matches!(
                with(&[bad]).validate(),
                Err(SimulatorConfigError::InvalidTopic { .. })
            ),
            "{bad:?} accepted"
        );
    }
    let long = "x".repeat(MAX_TOPIC_LEN);
    assert!(with(&[&long]).validate().is_err());

    let mut zero_tick = SimulatorConfig::demo_plant();
    zero_tick.tick = Duration::ZERO;
    assert_eq!(
        zero_tick.validate(),
        Err(SimulatorConfigError::TickTooShort)
    );
    assert!(Simulator::new(zero_tick).is_err());
}

#[test]
fn config_deserialises_with_defaults() {
    let config: SimulatorConfig =
        serde_json::from_str(r#"{"machines":[{"equipment_topic":"a/b/c","kind":"labeler"}]}"#)
            .unwrap();
    assert_eq!(config.tick, DEFAULT_TICK);
    assert_eq!(config.seed, 0);
    assert_eq!(config.machines[0].kind, MachineKind::Labeler);

    let json = serde_json::to_value(SimulatorConfig {
        tick: Duration::from_millis(250),
        seed: 9,
        ..SimulatorConfig::new(vec![SimulatedMachine::new("a/b", MachineKind::Filler)])
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "machines": [{"equipment_topic": "a/b", "kind": "filler"}],
            "tick_ms": 250,
            "seed": 9
        })
    );
    assert!(serde_json::from_str::<SimulatorConfig>(r#"{"machines":[],"tick":5}"#).is_err());
}

// ---------------------------------------------------------------- async --

#[derive(Default)]
struct CollectingSink {
    messages: Mutex<Vec<SourceMessage>>,
}

impl CollectingSink {
    fn take(&self) -> Vec<SourceMessage> {
        std::mem::take(&mut *self.messages.lock().unwrap())
    }
}

impl Sink for CollectingSink {
    fn publish(&self, msg: SourceMessage) -> Result<(), SinkError> {
        self.messages.lock().unwrap().push(msg);
        Ok(())
    }
}

fn fast_demo() -> SimulatorConfig {
    SimulatorConfig {
        tick: Duration::from_millis(10),
        ..SimulatorConfig::demo_plant()
    }
}

fn timestamp(msg: &SourceMessage) -> u64 {
    let sample = Sample::parse(&msg.payload, -1).unwrap();
    u64::try_from(sample.timestamp_ms).unwrap()
}

#[tokio::test(start_paused = true)]
async fn source_publishes_whole_plant_first_then_every_tick_until_shutdown() {
    let sim = simulator(fast_demo());
    let health = sim.health().unwrap();
    let sink = Arc::new(CollectingSink::default());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(Box::new(sim).run(sink.clone(), shutdown));

    // The first tick fires immediately.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let first = sink.take();
    let expected: HashSet<String> = fast_demo()
        .machines
        .iter()
        .flat_map(|m| Tag::ALL.map(|t| format!("{}/{}", m.equipment_topic, t.as_str())))
        .collect();
    let topics: HashSet<String> = first.iter().map(|m| m.topic.clone()).collect();
    assert_eq!(first.len(), 42);
    assert_eq!(topics, expected);
    assert!(first.iter().all(|m| m.retain && m.qos == 0));
    let t_first = timestamp(&first[0]);
    assert!(first.iter().all(|m| timestamp(m) == t_first));
    assert!(health.snapshot().connected);

    // Ticks at 10, 20, ..., 100 ms.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rest = sink.take();
    assert_eq!(rest.len(), 10 * 42);
    for (n, batch) in rest.chunks(42).enumerate() {
        let t = timestamp(&batch[0]);
        assert_eq!(t, t_first + 10 * (n as u64 + 1));
        assert!(batch.iter().all(|m| timestamp(m) == t));
    }

    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    let snap = health.snapshot();
    assert_eq!(
        snap,
        SourceHealth {
            connected: false,
            last_success_ms: Some(t_first + 100),
            error_count: 0,
            message_count: 11 * 42,
        }
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.take().is_empty(), "published after shutdown");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_shutdown_sender_stops_the_source() {
    let sink = Arc::new(CollectingSink::default());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(Box::new(simulator(fast_demo())).run(sink.clone(), shutdown));
    tokio::time::sleep(Duration::from_millis(25)).await;
    drop(stop);
    let result = tokio::time::timeout(Duration::from_secs(1), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert_eq!(sink.take().len(), 3 * 42);
}

#[tokio::test(start_paused = true)]
async fn already_shut_down_source_publishes_nothing() {
    let sink = Arc::new(CollectingSink::default());
    let (_stop, shutdown) = watch::channel(true);
    let result = Box::new(simulator(fast_demo()))
        .run(sink.clone(), shutdown)
        .await;
    assert!(result.is_ok());
    assert!(sink.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn closed_sink_ends_the_source_with_an_error() {
    let (tx, rx) = mpsc::channel::<SourceMessage>(100);
    drop(rx);
    let sim = simulator(fast_demo());
    let health = sim.health().unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(1),
        Box::new(sim).run(Arc::new(tx), shutdown),
    )
    .await;
    assert!(
        matches!(result, Ok(Err(SourceError::Sink(SinkError::Closed)))),
        "{result:?}"
    );
    let snap = health.snapshot();
    assert_eq!(
        (snap.connected, snap.error_count, snap.message_count),
        (false, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn overloaded_sink_sheds_load_and_recovers() {
    // Room for less than one batch.
    let (tx, mut rx) = mpsc::channel::<SourceMessage>(30);
    let sim = simulator(fast_demo());
    let health = sim.health().unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(Box::new(sim).run(Arc::new(tx), shutdown));

    tokio::time::sleep(Duration::from_millis(15)).await;
    // Tick 0 filled the channel; tick 10 found it full right away.
    let snap = health.snapshot();
    assert_eq!((snap.message_count, snap.error_count), (30, 2));
    assert!(snap.connected);

    let mut drained = 0;
    while rx.try_recv().is_ok() {
        drained += 1;
    }
    assert_eq!(drained, 30);
    // Keep draining so later ticks fit.
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let after = health.snapshot();
    assert!(after.message_count > snap.message_count);

    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(1), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(drain.await.unwrap() > 0);
}

#[test]
fn sources_can_be_held_as_trait_objects() {
    let sources: Vec<Box<dyn Source>> =
        vec![Box::new(simulator(demo(1))), Box::new(simulator(demo(2)))];
    assert!(sources.iter().all(|s| s.name() == "simulator"));
    assert!(sources.iter().all(|s| s.health().is_some()));
}
