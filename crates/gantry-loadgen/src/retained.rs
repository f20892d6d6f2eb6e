//! Retained messages: publishes N retained messages on realistic ~43-byte
//! topics (`bench/retained/siteSS/lineLLL/sensorNNNNNNN`) with ~40-byte JSON
//! payloads, then subscribes to `bench/retained/#` and times how long the broker
//! takes to serve all of them back, checking every payload.
//!
//! The phases can run separately, so a script can restart the broker in between
//! and time a restore from persistence (`--phase verify --wait-ready S` retries
//! the connection until the broker accepts it).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use gantry_codec::{Packet, PubResponse, QoS};
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::client::{ConnectOptions, Connection};
use crate::outcome::{Outcome, round};
use crate::procfs::rss_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Publish,
    Verify,
    Both,
}

#[derive(Debug, Clone)]
pub struct RetainedSpec {
    pub topics: usize,
    pub phase: Phase,
    pub window: u16,
    pub sub_qos: QoS,
    /// Keep retrying the first connection for this long (broker starting up).
    pub wait_ready: Duration,
    pub pid: Option<u32>,
    /// Bounds each phase.
    pub timeout: Duration,
    /// Verification stops when nothing arrives for this long.
    pub idle: Duration,
    pub settle: Duration,
}

const PREFIX: &str = "bench/retained/";
const FILTER: &str = "bench/retained/#";

pub fn topic(i: usize) -> String {
    format!(
        "{PREFIX}site{:02}/line{:03}/sensor{i:07}",
        i / 10_000,
        (i / 100) % 100
    )
}

pub fn payload(i: usize) -> String {
    format!(
        "{{\"v\":{}.{:03},\"q\":192,\"t\":{}}}",
        i % 1000,
        (i * 7) % 1000,
        1_700_000_000_000u64 + i as u64
    )
}

/// The index of a topic made by [`topic`].
fn index_of(topic: &str) -> Option<usize> {
    let rest = topic.strip_prefix(PREFIX)?;
    let last = rest.rsplit('/').next()?;
    last.strip_prefix("sensor")?.parse().ok()
}

async fn connect_ready(opts: &ConnectOptions, wait: Duration) -> Result<(Connection, Duration)> {
    let started = Instant::now();
    let until = started + wait;
    loop {
        match Connection::connect(opts).await {
            Ok(c) => return Ok((c, started.elapsed())),
            Err(_) if Instant::now() < until => {
                sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn publish(opts: &ConnectOptions, spec: &RetainedSpec, o: &mut Outcome) -> Result<()> {
    let rss_before = spec.pid.map(rss_bytes).transpose()?;
    let (mut conn, _) = connect_ready(opts, spec.wait_ready).await?;
    let window = usize::from(spec.window.min(conn.server_receive_max).max(1));
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut in_flight = 0usize;
    let mut next = 0usize;
    while next < spec.topics || in_flight > 0 {
        while next < spec.topics && in_flight < window {
            let id = conn.next_packet_id();
            conn.queue_publish(
                &topic(next),
                QoS::AtLeastOnce,
                true,
                id,
                payload(next).as_bytes(),
            );
            next += 1;
            in_flight += 1;
        }
        conn.flush().await?;
        match timeout_at(deadline, conn.read_some()).await {
            Ok(r) => r?,
            Err(_) => bail!(
                "publishing {} retained messages took longer than {:?} ({next} sent, {in_flight} unacknowledged)",
                spec.topics,
                spec.timeout
            ),
        };
        while let Some(p) = conn.next_buffered()? {
            match p {
                Packet::PubAck(ack) if ack.reason.is_error() => {
                    bail!("the broker rejected a retained message: {}", ack.reason)
                }
                Packet::PubAck(_) => in_flight = in_flight.saturating_sub(1),
                Packet::Disconnect(d) => bail!("the broker disconnected: {}", d.reason),
                _ => {}
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    conn.disconnect().await;
    o.set("publish_s", round(secs, 3)).set(
        "published_per_s",
        round(spec.topics as f64 / secs.max(1e-9), 0),
    );
    if let Some(before) = rss_before {
        sleep(spec.settle).await;
        let after = spec.pid.map(rss_bytes).transpose()?.unwrap_or(before);
        let delta = after as i64 - before as i64;
        o.set("rss_before_bytes", before)
            .set("rss_after_bytes", after)
            .headline("rss_delta_bytes", delta)
            .set(
                "bytes_per_topic",
                round(delta as f64 / spec.topics.max(1) as f64, 1),
            );
    }
    Ok(())
}

async fn verify(
    opts: &ConnectOptions,
    spec: &RetainedSpec,
    process_start: std::time::Instant,
    o: &mut Outcome,
) -> Result<()> {
    let (mut conn, waited) = connect_ready(opts, spec.wait_ready).await?;
    let sub_started = Instant::now();
    conn.subscribe(&[(FILTER.to_string(), spec.sub_qos)], opts.timeout)
        .await?;
    let deadline = sub_started + spec.timeout;
    let mut seen = vec![false; spec.topics];
    let (mut received, mut duplicates, mut wrong, mut not_retained, mut other) = (0, 0, 0, 0, 0);
    let mut last = sub_started;
    while received < spec.topics {
        while let Some(p) = conn.next_buffered()? {
            let p = match p {
                Packet::Publish(p) => p,
                Packet::Disconnect(d) => bail!("the broker disconnected: {}", d.reason),
                _ => continue,
            };
            if p.qos == QoS::AtLeastOnce {
                conn.queue(&Packet::PubAck(PubResponse {
                    packet_id: p.packet_id,
                    ..PubResponse::default()
                }));
            }
            let Some(i) = index_of(&p.topic).filter(|i| *i < spec.topics) else {
                other += 1;
                continue;
            };
            if !p.retain {
                not_retained += 1;
            }
            if p.payload != payload(i).as_bytes() {
                wrong += 1;
            }
            match seen.get_mut(i) {
                Some(s) if !*s => {
                    *s = true;
                    received += 1;
                    last = Instant::now();
                }
                _ => duplicates += 1,
            }
        }
        conn.flush().await?;
        if received >= spec.topics {
            break;
        }
        let until = deadline.min(Instant::now() + spec.idle);
        match timeout_at(until, conn.read_some()).await {
            Ok(r) => r?,
            Err(_) => break,
        };
    }
    let _ = timeout(Duration::from_secs(2), conn.disconnect()).await;
    let missing = spec.topics - received;
    o.set("connect_wait_ms", round(waited.as_secs_f64() * 1000.0, 1))
        .set("sub_qos", spec.sub_qos as u8)
        .set("received", received)
        .set("missing", missing)
        .set("duplicates", duplicates)
        .set("wrong_payload", wrong)
        .set("not_retained", not_retained)
        .set("other_topics", other)
        .headline(
            "serve_ms",
            round((last - sub_started).as_secs_f64() * 1000.0, 1),
        )
        .set(
            "since_start_ms",
            round(process_start.elapsed().as_secs_f64() * 1000.0, 1),
        );
    if missing > 0 || wrong > 0 {
        o.warn(format!(
            "{missing} of {} retained messages missing, {wrong} with a wrong payload",
            spec.topics
        ));
        o.exit_code = 5;
    }
    Ok(())
}

pub async fn run(
    opts: &ConnectOptions,
    spec: RetainedSpec,
    process_start: std::time::Instant,
) -> Result<Outcome> {
    if spec.topics == 0 || spec.topics > 10_000_000 {
        bail!("--topics must be between 1 and 10,000,000");
    }
    let mut o = Outcome::new("retained");
    o.set("topics", spec.topics)
        .set("phase", format!("{:?}", spec.phase).to_lowercase())
        .set("topic_example", topic(spec.topics - 1))
        .set("payload_example", payload(spec.topics - 1));
    if spec.phase != Phase::Verify {
        let mut p = ConnectOptions {
            client_id: format!("glg-ret-pub-{}", std::process::id()),
            ..opts.clone()
        };
        p.clean_start = true;
        publish(&p, &spec, &mut o)
            .await
            .context("publishing retained messages")?;
    }
    if spec.phase != Phase::Publish {
        let mut v = ConnectOptions {
            client_id: format!("glg-ret-sub-{}", std::process::id()),
            ..opts.clone()
        };
        v.clean_start = true;
        verify(&v, &spec, process_start, &mut o)
            .await
            .context("verifying retained messages")?;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads() {
        assert_eq!(
            topic(123_456),
            "bench/retained/site12/line034/sensor0123456"
        );
        assert_eq!(topic(99_999).len(), 43);
        assert_eq!(index_of(&topic(99_999)), Some(99_999));
        assert_eq!(index_of("bench/retained/x"), None);
        assert_eq!(index_of("other/sensor1"), None);
        assert!(payload(99_999).len() <= 45);
        assert!(serde_json::from_str::<serde_json::Value>(&payload(12_345)).is_ok());
    }
}
