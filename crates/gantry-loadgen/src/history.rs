//! `history-ingest`: publishes N time-series values at QoS 1 to T modeled
//! tags over C connections, each value with its own timestamp, and times
//! first publish to last PUBACK. Against Gantry a PUBACK on a historized tag
//! means the value's row is durable, so this is the historian's ingest rate
//! through the whole broker path.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use gantry_codec::{Packet, QoS};
use tokio::time::timeout_at;

use crate::client::{ConnectOptions, Connection};
use crate::outcome::{Outcome, round};

#[derive(Debug, Clone)]
pub struct IngestSpec {
    /// `<prefix>/t<i>` for i in 0..tags.
    pub prefix: String,
    pub tags: usize,
    pub values: usize,
    pub connections: usize,
    pub window: u16,
    /// Timestamp of each tag's first value (Unix ms); value k of a tag is at
    /// `base_ms + k * step_ms`.
    pub base_ms: i64,
    pub step_ms: i64,
    pub timeout: Duration,
}

pub async fn run(opts: &ConnectOptions, spec: IngestSpec) -> Result<Outcome> {
    if spec.tags == 0 || spec.connections == 0 {
        bail!("--tags and --connections must be at least 1");
    }
    let mut conns = Vec::with_capacity(spec.connections);
    for c in 0..spec.connections {
        let mut o = opts.clone();
        o.client_id = format!("{}-{c}", opts.client_id);
        conns.push(Connection::connect(&o).await?);
    }
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + spec.timeout);
    let per_conn = spec.values.div_ceil(spec.connections);
    let mut tasks = Vec::new();
    for (c, conn) in conns.into_iter().enumerate() {
        let spec = spec.clone();
        let first = c * per_conn;
        let last = ((c + 1) * per_conn).min(spec.values);
        tasks.push(tokio::spawn(async move {
            publish_share(conn, &spec, first, last, deadline).await
        }));
    }
    let mut acked = 0u64;
    for t in tasks {
        acked += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut o = Outcome::new("history-ingest");
    o.set("values", acked)
        .set("tags", spec.tags as u64)
        .set("connections", spec.connections as u64)
        .set("seconds", round(secs, 3))
        .headline("values_per_s", round(acked as f64 / secs.max(1e-9), 0));
    Ok(o)
}

/// Publishes values `first..last` of the global sequence (value n goes to tag
/// `n % tags` as that tag's value number `n / tags`).
async fn publish_share(
    mut conn: Connection,
    spec: &IngestSpec,
    first: usize,
    last: usize,
    deadline: tokio::time::Instant,
) -> Result<u64> {
    let window = usize::from(spec.window.min(conn.server_receive_max).max(1));
    let topics: Vec<String> = (0..spec.tags)
        .map(|i| format!("{}/t{i}", spec.prefix))
        .collect();
    let mut next = first;
    let mut in_flight = 0usize;
    let mut acked = 0u64;
    let mut payload = String::with_capacity(64);
    while next < last || in_flight > 0 {
        while next < last && in_flight < window {
            let tag = next % spec.tags;
            let k = (next / spec.tags) as i64;
            payload.clear();
            use std::fmt::Write;
            let _ = write!(
                payload,
                "{{\"timestamp_ms\":{},\"value\":{:?}}}",
                spec.base_ms + k * spec.step_ms,
                (next % 1000) as f64 * 0.5
            );
            let id = conn.next_packet_id();
            conn.queue_publish(
                &topics[tag],
                QoS::AtLeastOnce,
                false,
                id,
                payload.as_bytes(),
            );
            next += 1;
            in_flight += 1;
        }
        conn.flush().await?;
        match timeout_at(deadline, conn.read_some()).await {
            Ok(r) => r?,
            Err(_) => {
                bail!("ingest did not finish in time ({acked} acknowledged, {in_flight} in flight)")
            }
        };
        while let Some(p) = conn.next_buffered()? {
            match p {
                Packet::PubAck(ack) if ack.reason.is_error() => {
                    bail!("the broker refused a value: {}", ack.reason)
                }
                Packet::PubAck(_) => {
                    in_flight = in_flight.saturating_sub(1);
                    acked += 1;
                }
                Packet::Disconnect(d) => bail!("the broker disconnected: {}", d.reason),
                _ => {}
            }
        }
    }
    conn.disconnect().await;
    Ok(acked)
}
