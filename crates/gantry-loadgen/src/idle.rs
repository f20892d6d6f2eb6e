//! Idle connections: opens many MQTT connections, holds them, checks that each
//! still answers a PINGREQ, and closes them. With the broker's pid it also
//! reports the broker's resident memory per idle connection.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use gantry_codec::Packet;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use crate::client::{ConnectOptions, Connection};
use crate::outcome::{Outcome, round};
use crate::procfs::rss_bytes;

#[derive(Debug, Clone)]
pub struct IdleSpec {
    pub connections: usize,
    pub hold: Duration,
    pub keep_alive: u16,
    /// Connection attempts in progress at once.
    pub concurrency: usize,
    pub pid: Option<u32>,
    /// Pause before the memory reading after the last CONNACK.
    pub settle: Duration,
}

/// Runs `make(i)` for `0..n` with at most `concurrency` running at once, in order
/// of completion; fails on the first error.
async fn bounded<T, F, Fut>(n: usize, concurrency: usize, mut make: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < concurrency.max(1) {
            set.spawn(make(next));
            next += 1;
        }
        if let Some(joined) = set.join_next().await {
            out.push(joined.context("connection task")??);
        }
    }
    Ok(out)
}

pub async fn run(opts: &ConnectOptions, spec: IdleSpec) -> Result<Outcome> {
    if spec.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let rss_before = spec.pid.map(rss_bytes).transpose()?;
    let tag = std::process::id();
    let started = Instant::now();
    let streams = bounded(spec.connections, spec.concurrency, |i| {
        let o = ConnectOptions {
            client_id: format!("glg-idle-{tag}-{i}"),
            keep_alive: spec.keep_alive,
            clean_start: true,
            ..opts.clone()
        };
        let n = spec.connections;
        async move {
            match Connection::connect(&o).await {
                Ok(conn) => Ok(conn.into_stream()),
                Err(e) => {
                    let hint = if format!("{e:#}").contains("os error 24") {
                        " (raise the open-files limit: `ulimit -n`)"
                    } else {
                        ""
                    };
                    Err(e.context(format!("idle connection {i} of {n} failed{hint}")))
                }
            }
        }
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open after {connect_secs:.2} s; holding {:.0} s",
        streams.len(),
        spec.hold.as_secs_f64()
    );
    sleep(spec.settle.min(spec.hold)).await;
    let rss_after = spec.pid.map(rss_bytes).transpose()?;
    sleep(spec.hold.saturating_sub(spec.settle)).await;

    let version = opts.version;
    let wait = opts.timeout;
    let mut streams = streams.into_iter().map(Some).collect::<Vec<_>>();
    let alive = bounded(streams.len(), spec.concurrency, |i| {
        let stream = streams[i].take();
        async move {
            let Some(stream) = stream else {
                return Ok(false);
            };
            let mut conn = Connection::resume(stream, version);
            conn.queue(&Packet::PingReq);
            if conn.flush().await.is_err() {
                return Ok(false);
            }
            let answered = matches!(
                conn.next_packet_until(Instant::now() + wait).await,
                Ok(Some(Packet::PingResp))
            );
            conn.disconnect().await;
            Ok(answered)
        }
    })
    .await?
    .into_iter()
    .filter(|a| *a)
    .count();

    let mut o = Outcome::new("idle");
    o.set("connections", spec.connections)
        .set("keep_alive", spec.keep_alive)
        .set("connect_s", round(connect_secs, 3))
        .headline(
            "connects_per_s",
            round(spec.connections as f64 / connect_secs.max(1e-9), 0),
        )
        .set("hold_s", spec.hold.as_secs_f64())
        .set("alive_after_hold", alive);
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let per_conn = (after as f64 - before as f64) / spec.connections.max(1) as f64;
        o.set("rss_before_bytes", before)
            .set("rss_after_bytes", after)
            .headline("bytes_per_conn", round(per_conn, 0));
    }
    if alive < spec.connections {
        o.warn(format!(
            "only {alive} of {} idle connections answered PINGREQ after the hold",
            spec.connections
        ));
        o.exit_code = 4;
    }
    Ok(o)
}
