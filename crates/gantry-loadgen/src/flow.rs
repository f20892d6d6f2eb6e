//! Message flows between publishers and subscribers: point-to-point (1 → 1),
//! fan-in (N → 1 through a wildcard) and fan-out (1 → N).
//!
//! Every publisher and subscriber has its own connection and task. Publishers
//! stamp each payload with a sequence number and the send time; subscribers
//! record first deliveries, duplicates and latency (receive time minus send
//! time, both on the same clock). Flat-out runs are closed-loop: a publisher
//! pauses while more than `max_outstanding` messages are sent but not yet
//! delivered, so a broker is measured at the rate it can sustain rather than by
//! how much it can buffer. If no delivery happens for a while during such a
//! pause (a broker that drops QoS 0 messages), the missing messages are written
//! off so the run goes on; they still count as lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gantry_codec::{Packet, PubResponse, QoS};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use crate::client::{ConnectOptions, Connection};
use crate::histogram::Histogram;
use crate::outcome::{Outcome, round};
use crate::payload::{self, PayloadWriter};
use crate::procfs::{cpu_seconds, own_cpu_seconds};
use crate::tracker::{Seen, Tracker};

/// How long a publisher waits for a PUBACK when its window is full.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a paused publisher waits for any delivery before writing off the
/// outstanding messages.
const STALL: Duration = Duration::from_millis(250);
/// After publishing ends, a subscriber that received nothing for this long stops.
const IDLE_AFTER_DONE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub scenario: &'static str,
    /// One publisher per topic.
    pub pub_topics: Vec<String>,
    /// One subscriber per filter; every subscriber must match every topic.
    pub sub_filters: Vec<String>,
    pub qos: QoS,
    /// Total messages per second over all publishers; `None` is flat out.
    pub rate: Option<f64>,
    pub payload: usize,
    /// Send Gantry JSON time-series samples instead of binary payloads.
    pub json_payload: bool,
    pub duration: Duration,
    /// Messages per publisher; `None` runs for `duration` (which always bounds).
    pub count: Option<u64>,
    /// QoS 1 messages in flight per publisher (capped by the broker's Receive Maximum).
    pub window: u16,
    /// Sent-but-undelivered messages a publisher lets build up; 0 = unbounded.
    pub max_outstanding: u64,
    /// Longest wait for late deliveries and PUBACKs after publishing ends.
    pub drain: Duration,
    /// Most PUBLISH packets encoded into one write.
    pub batch: usize,
    /// The broker's pid, to report its CPU use during the run.
    pub broker_pid: Option<u32>,
}

/// Counters shared by all tasks of one run.
struct Shared {
    base: std::time::Instant,
    run: u32,
    publishers: usize,
    subscribers: u64,
    sent: AtomicU64,
    delivered: AtomicU64,
    /// Messages overtaken by later ones of the same publisher and not (yet)
    /// delivered: lost, as far as the outstanding budget is concerned.
    skipped: AtomicU64,
    written_off: AtomicU64,
    stalls: AtomicU64,
    finished_publishers: AtomicUsize,
    /// Nanoseconds since `base` when the last publisher stopped; 0 while running.
    done_at_ns: AtomicU64,
    progress: Notify,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Messages sent but neither delivered (to an average subscriber) nor
    /// known to be lost.
    fn outstanding(&self) -> u64 {
        let settled = self.delivered.load(Ordering::Relaxed) + self.skipped.load(Ordering::Relaxed);
        let delivered = settled / self.subscribers;
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(delivered)
            .saturating_sub(self.written_off.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct PubStats {
    sent: u64,
    acked: u64,
    rejected: u64,
    unacked: u64,
    unexpected: u64,
    first_send_ns: Option<u64>,
    last_send_ns: u64,
    window: usize,
}

/// QoS 1 packets in flight, keyed by packet identifier.
struct InFlight {
    used: Vec<bool>,
    count: usize,
}

impl InFlight {
    fn new() -> Self {
        Self {
            used: vec![false; 1 << 16],
            count: 0,
        }
    }

    /// Takes a free identifier (the window is far below 65,535, so one exists).
    fn take(&mut self, conn: &mut Connection) -> u16 {
        loop {
            let id = conn.next_packet_id();
            if let Some(slot) = self.used.get_mut(id as usize)
                && !*slot
            {
                *slot = true;
                self.count += 1;
                return id;
            }
        }
    }

    fn release(&mut self, id: u16) -> bool {
        match self.used.get_mut(id as usize) {
            Some(slot) if *slot => {
                *slot = false;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }
}

fn handle_acks(
    conn: &mut Connection,
    inflight: &mut InFlight,
    stats: &mut PubStats,
    index: usize,
) -> Result<()> {
    while let Some(packet) = conn.next_buffered()? {
        match packet {
            Packet::PubAck(ack) => {
                if !inflight.release(ack.packet_id) {
                    stats.unexpected += 1;
                } else if ack.reason.is_error() {
                    stats.rejected += 1;
                } else {
                    stats.acked += 1;
                }
            }
            Packet::Disconnect(d) => {
                bail!("the broker disconnected publisher {index}: {}", d.reason)
            }
            Packet::PingResp => {}
            _ => stats.unexpected += 1,
        }
    }
    Ok(())
}

async fn publisher(
    mut conn: Connection,
    index: usize,
    topic: String,
    spec: Arc<FlowSpec>,
    shared: Arc<Shared>,
) -> Result<PubStats> {
    let qos1 = spec.qos == QoS::AtLeastOnce;
    let window = usize::from(spec.window.min(conn.server_receive_max).max(1));
    let mut stats = PubStats {
        window,
        ..PubStats::default()
    };
    let mut inflight = InFlight::new();
    let rate = spec.rate.map(|r| r / shared.publishers as f64);
    let limit = spec.count.unwrap_or(u64::MAX);
    let mut writer = if spec.json_payload {
        PayloadWriter::json(shared.run, index as u32)
    } else {
        PayloadWriter::new(spec.payload, shared.run, index as u32)
    };
    let start = Instant::now();
    let deadline = start + spec.duration;
    loop {
        let now = Instant::now();
        if stats.sent >= limit || now >= deadline {
            break;
        }
        if qos1 {
            conn.try_read_some()?;
            handle_acks(&mut conn, &mut inflight, &mut stats, index)?;
        }
        let mut allowed = (spec.batch as u64).min(limit - stats.sent);
        if let Some(r) = rate {
            let due = (((now - start).as_secs_f64() * r) as u64 + 1).min(limit);
            if due <= stats.sent {
                let next = start + Duration::from_secs_f64(stats.sent as f64 / r);
                sleep_until(next.min(deadline)).await;
                continue;
            }
            allowed = allowed.min(due - stats.sent);
        }
        if qos1 {
            let free = window.saturating_sub(inflight.count);
            // Refill in batches rather than one PUBACK at a time.
            if free < (window / 4).clamp(1, spec.batch) {
                match timeout(ACK_TIMEOUT, conn.read_some()).await {
                    Ok(r) => r?,
                    Err(_) => bail!(
                        "publisher {index}: no PUBACK within {ACK_TIMEOUT:?} with {} messages in flight",
                        inflight.count
                    ),
                };
                handle_acks(&mut conn, &mut inflight, &mut stats, index)?;
                continue;
            }
            allowed = allowed.min(free as u64);
        }
        if spec.max_outstanding > 0 {
            let outstanding = shared.outstanding();
            let room = spec.max_outstanding.saturating_sub(outstanding);
            // Send only once a batch worth has been delivered, so that each
            // write carries many messages.
            let chunk = (spec.batch as u64).min(spec.max_outstanding / 2).max(1);
            if room < chunk.min(allowed) {
                wait_for_progress(&shared, spec.max_outstanding - chunk + 1).await;
                continue;
            }
            allowed = allowed.min(room);
        }
        for _ in 0..allowed {
            let id = if qos1 { inflight.take(&mut conn) } else { 0 };
            let sent_ns = shared.now_ns();
            stats.first_send_ns.get_or_insert(sent_ns);
            conn.queue_publish(
                &topic,
                spec.qos,
                false,
                id,
                writer.stamp(stats.sent, sent_ns),
            );
            stats.sent += 1;
        }
        shared.sent.fetch_add(allowed, Ordering::Relaxed);
        conn.flush()
            .await
            .with_context(|| format!("publisher {index}"))?;
        stats.last_send_ns = shared.now_ns();
        if rate.is_none() {
            // Let the subscribers (same thread when single-threaded) run.
            tokio::task::yield_now().await;
        }
    }
    if shared.finished_publishers.fetch_add(1, Ordering::AcqRel) + 1 == shared.publishers {
        shared
            .done_at_ns
            .store(shared.now_ns().max(1), Ordering::Release);
    }
    let drain_until = Instant::now() + spec.drain;
    while qos1 && inflight.count > 0 {
        match timeout_at(drain_until, conn.read_some()).await {
            Ok(r) => r.with_context(|| format!("publisher {index} waiting for PUBACKs"))?,
            Err(_) => break,
        };
        handle_acks(&mut conn, &mut inflight, &mut stats, index)?;
    }
    stats.unacked = inflight.count as u64;
    conn.disconnect().await;
    Ok(stats)
}

/// Waits until deliveries bring the outstanding count below `resume`, or writes the
/// outstanding messages off when nothing at all is delivered for [`STALL`].
async fn wait_for_progress(shared: &Shared, resume: u64) {
    let before = shared.delivered.load(Ordering::Relaxed);
    let until = Instant::now() + STALL;
    loop {
        let notified = shared.progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.outstanding() < resume {
            return;
        }
        if timeout_at(until, notified).await.is_err() {
            break;
        }
    }
    if shared.delivered.load(Ordering::Relaxed) == before {
        let stuck = shared.outstanding();
        shared.written_off.fetch_add(stuck, Ordering::Relaxed);
        shared.stalls.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct SubStats {
    unique: u64,
    duplicates: u64,
    /// First deliveries that arrived after a later message of their publisher.
    late: u64,
    foreign: u64,
    invalid: u64,
    unexpected: u64,
    first_recv_ns: Option<u64>,
    last_recv_ns: u64,
    latency: Histogram,
}

async fn subscriber(
    mut conn: Connection,
    index: usize,
    spec: Arc<FlowSpec>,
    shared: Arc<Shared>,
) -> Result<SubStats> {
    let mut stats = SubStats::default();
    let mut tracker = Tracker::new(shared.publishers);
    let drain_ns = spec.drain.as_nanos() as u64;
    let idle_ns = IDLE_AFTER_DONE.as_nanos() as u64;
    let hard_stop = Instant::now() + spec.duration + spec.drain + Duration::from_secs(5);
    loop {
        let done_at = shared.done_at_ns.load(Ordering::Acquire);
        if done_at != 0 {
            let now = shared.now_ns();
            if stats.unique >= shared.sent.load(Ordering::Relaxed)
                || now > done_at + drain_ns
                || (now > done_at + idle_ns && now > stats.last_recv_ns + idle_ns)
            {
                break;
            }
        }
        if Instant::now() > hard_stop {
            break;
        }
        match timeout(Duration::from_millis(100), conn.read_some()).await {
            Ok(r) => r.with_context(|| format!("subscriber {index}"))?,
            Err(_) => continue,
        };
        let now = shared.now_ns();
        let (mut fresh, mut gaps, mut filled) = (0, 0, 0);
        while let Some(packet) = conn.next_buffered()? {
            match packet {
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        conn.queue(&Packet::PubAck(PubResponse {
                            packet_id: p.packet_id,
                            ..PubResponse::default()
                        }));
                    }
                    match payload::parse(&p.payload, shared.run) {
                        Some(stamp) => match tracker.record(stamp.publisher, stamp.seq) {
                            Seen::First { skipped, late } => {
                                fresh += 1;
                                stats.latency.record(now.saturating_sub(stamp.sent_ns));
                                gaps += skipped;
                                if late {
                                    filled += 1;
                                    stats.late += 1;
                                }
                            }
                            Seen::Duplicate => stats.duplicates += 1,
                            Seen::Invalid => stats.invalid += 1,
                        },
                        None => stats.foreign += 1,
                    }
                }
                Packet::Disconnect(d) => {
                    bail!("the broker disconnected subscriber {index}: {}", d.reason)
                }
                Packet::PingResp => {}
                _ => stats.unexpected += 1,
            }
        }
        if gaps > 0 {
            shared.skipped.fetch_add(gaps, Ordering::Relaxed);
        }
        if filled > 0 {
            shared.skipped.fetch_sub(filled, Ordering::Relaxed);
        }
        if fresh > 0 {
            stats.unique += fresh;
            stats.first_recv_ns.get_or_insert(now);
            stats.last_recv_ns = now;
            shared.delivered.fetch_add(fresh, Ordering::Relaxed);
            shared.progress.notify_waiters();
        }
        conn.flush()
            .await
            .with_context(|| format!("subscriber {index} sending PUBACKs"))?;
    }
    conn.disconnect().await;
    Ok(stats)
}

fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = nanos ^ (u64::from(std::process::id()) << 32);
    (mixed ^ (mixed >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

/// Runs one flow and summarises it.
pub async fn run(opts: &ConnectOptions, spec: FlowSpec) -> Result<Outcome> {
    if spec.pub_topics.is_empty() || spec.sub_filters.is_empty() {
        bail!("a flow needs at least one publisher and one subscriber");
    }
    let run = run_id();
    let spec = Arc::new(spec);
    let client = |role: &str, i: usize| ConnectOptions {
        client_id: format!("glg-{run:08x}-{role}{i}"),
        keep_alive: 0,
        clean_start: true,
        ..opts.clone()
    };
    let mut subs = Vec::new();
    for (i, filter) in spec.sub_filters.iter().enumerate() {
        let mut conn = Connection::connect(&client("s", i))
            .await
            .with_context(|| format!("connecting subscriber {i}"))?;
        conn.subscribe(&[(filter.clone(), spec.qos)], opts.timeout)
            .await
            .with_context(|| format!("subscriber {i} subscribing to {filter}"))?;
        subs.push(conn);
    }
    let mut pubs = Vec::new();
    for i in 0..spec.pub_topics.len() {
        let conn = Connection::connect(&client("p", i))
            .await
            .with_context(|| format!("connecting publisher {i}"))?;
        pubs.push(conn);
    }
    let cpu_before = own_cpu_seconds();
    let broker_cpu_before = spec.broker_pid.and_then(cpu_seconds);
    let wall = Instant::now();
    let shared = Arc::new(Shared {
        base: std::time::Instant::now(),
        run,
        publishers: pubs.len(),
        subscribers: subs.len() as u64,
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        written_off: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
        finished_publishers: AtomicUsize::new(0),
        done_at_ns: AtomicU64::new(0),
        progress: Notify::new(),
    });
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(subscriber(c, i, spec.clone(), shared.clone())))
        .collect();
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let topic = spec.pub_topics[i].clone();
            tokio::spawn(publisher(c, i, topic, spec.clone(), shared.clone()))
        })
        .collect();
    let mut pub_stats = Vec::new();
    for (i, t) in pub_tasks.into_iter().enumerate() {
        pub_stats.push(t.await.with_context(|| format!("publisher {i} task"))??);
    }
    let mut sub_stats = Vec::new();
    for (i, t) in sub_tasks.into_iter().enumerate() {
        sub_stats.push(t.await.with_context(|| format!("subscriber {i} task"))??);
    }
    let secs = wall.elapsed().as_secs_f64().max(1e-9);
    let cpu_pct = match (cpu_before, own_cpu_seconds()) {
        (Some(a), Some(b)) => Some(100.0 * (b - a) / secs),
        _ => None,
    };
    let broker_cpu_pct = match (broker_cpu_before, spec.broker_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(100.0 * (b - a) / secs),
        _ => None,
    };
    let mut o = summarise(&spec, &shared, &pub_stats, &sub_stats);
    if let Some(pct) = broker_cpu_pct {
        o.headline("broker_cpu_pct", round(pct, 0));
    }
    if let Some(pct) = cpu_pct {
        o.set("loadgen_cpu_pct", round(pct, 0));
        if pct > 90.0 {
            o.warn(format!(
                "the load generator used {pct:.0}% of a core: the broker may be faster than measured"
            ));
        }
    }
    Ok(o)
}

fn summarise(spec: &FlowSpec, shared: &Shared, pubs: &[PubStats], subs: &[SubStats]) -> Outcome {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let expected = sent * subs.len() as u64;
    let received: u64 = subs.iter().map(|s| s.unique).sum();
    let lost = expected.saturating_sub(received);
    let duplicates: u64 = subs.iter().map(|s| s.duplicates).sum();
    let first_send = pubs
        .iter()
        .filter_map(|p| p.first_send_ns)
        .min()
        .unwrap_or(0);
    let last_send = pubs.iter().map(|p| p.last_send_ns).max().unwrap_or(0);
    let last_recv = subs.iter().map(|s| s.last_recv_ns).max().unwrap_or(0);
    let elapsed = last_recv.saturating_sub(first_send) as f64 / 1e9;
    let send_secs = last_send.saturating_sub(first_send) as f64 / 1e9;
    let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let mut latency = Histogram::default();
    for s in subs {
        latency.merge(&s.latency);
    }
    let us = |ns: Option<u64>| ns.map(|v| round(v as f64 / 1000.0, 1));
    let qos = spec.qos as u8;

    let mut o = Outcome::new(spec.scenario);
    o.set("qos", qos)
        .set("publishers", pubs.len())
        .set("subscribers", subs.len())
        .set("payload_bytes", spec.payload.max(payload::HEADER_LEN))
        .set(
            "target_rate",
            spec.rate.map(serde_json::Value::from).unwrap_or_default(),
        )
        .set("sent", sent)
        .set("expected_deliveries", expected)
        .set("received", received);
    if spec.rate.is_none() {
        o.headline("msgs_per_s", round(per_s(received, elapsed), 0));
    } else {
        o.set("msgs_per_s", round(per_s(received, elapsed), 0));
    }
    o.headline("lost", lost)
        .set("duplicates", duplicates)
        .set("out_of_order", subs.iter().map(|s| s.late).sum::<u64>())
        .set("elapsed_s", round(elapsed, 3))
        .set("send_rate", round(per_s(sent, send_secs), 0));
    if spec.rate.is_some() {
        o.headline("latency_p50_us", us(latency.quantile(0.5)))
            .headline("latency_p99_us", us(latency.quantile(0.99)));
    } else {
        o.set("latency_p50_us", us(latency.quantile(0.5)))
            .set("latency_p99_us", us(latency.quantile(0.99)));
    }
    o.set(
        "latency_max_us",
        us(Some(latency.max()).filter(|_| latency.count() > 0)),
    );
    if spec.qos == QoS::AtLeastOnce {
        o.set("acked", pubs.iter().map(|p| p.acked).sum::<u64>())
            .set("rejected", pubs.iter().map(|p| p.rejected).sum::<u64>())
            .set("unacked", pubs.iter().map(|p| p.unacked).sum::<u64>())
            .set("window", pubs.iter().map(|p| p.window).min().unwrap_or(0));
    }
    o.set("max_outstanding", spec.max_outstanding)
        .set("stalls", shared.stalls.load(Ordering::Relaxed))
        .set("written_off", shared.written_off.load(Ordering::Relaxed));
    let foreign: u64 = subs.iter().map(|s| s.foreign + s.invalid).sum();
    let unexpected: u64 = subs.iter().map(|s| s.unexpected).sum::<u64>()
        + pubs.iter().map(|p| p.unexpected).sum::<u64>();
    if foreign > 0 {
        o.set("foreign_messages", foreign);
    }
    if unexpected > 0 {
        o.set("unexpected_packets", unexpected);
        o.warn(format!("{unexpected} unexpected packets from the broker"));
    }
    if let Some(target) = spec.rate {
        let reached = per_s(sent, send_secs) >= 0.95 * target;
        o.set("rate_reached", reached);
        if !reached {
            o.warn(format!(
                "sent {:.0} msg/s, short of the target {target:.0}: the broker is saturated at this load",
                per_s(sent, send_secs)
            ));
        }
    }
    if spec.qos == QoS::AtLeastOnce && lost > 0 {
        o.warn(format!(
            "QoS 1 LOSS: {lost} of {expected} deliveries missing after the drain period"
        ));
        o.exit_code = 3;
    }
    if received == 0 {
        o.warn("no message was delivered".into());
        o.exit_code = 3;
    }
    o
}
