//! The writer thread: takes everything the recorder queued, turns messages
//! into points, writes them to the [`Sink`] in one transaction (group
//! commit), and only then reports the batch durable, which releases the
//! acknowledgements waiting for it. A failing store is retried with back-off;
//! values are never dropped to get past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_broker::Message;
use gantry_model::{Sample, SampleRef};
use tokio::sync::watch;

use crate::error::HistorianError;
use crate::point::{Gap, Point};
use crate::recorder::{Queue, Stats};

/// A durable destination for points: the SQLite store, or the spool in front
/// of PostgreSQL.
pub trait Sink: Send + 'static {
    /// Writes the points and gaps in one transaction and returns once they
    /// are durable (as the configured sync policy defines it).
    fn write(&mut self, points: &[Point], gaps: &[Gap]) -> Result<(), HistorianError>;
    /// Housekeeping between batches (retention); called about once a minute.
    fn maintain(&mut self, now_ms: i64) -> Result<(), HistorianError>;
    /// Marks a clean shutdown.
    fn close(&mut self) -> Result<(), HistorianError>;
}

const MAINTAIN_EVERY: Duration = Duration::from_secs(60);
/// Under a steady stream of values, wait up to 1 ms for 1,000 values before
/// a commit (see `Queue::take`): a commit costs tens of microseconds of CPU
/// whatever it carries, taken from the broker when they share a core. A
/// stream is when the last batch held at least [`LINGER_AFTER`] values; a
/// publisher waiting for each acknowledgement in turn is never held back.
const LINGER: (usize, Duration) = (1_000, Duration::from_millis(1));
const LINGER_AFTER: usize = 16;

/// Converts a routed message into a point: payloads in the canonical layout
/// (what the contracts write) directly, anything else through the lenient
/// parser;
/// payloads that are not samples give `None`.
pub fn point_of(msg: &Message) -> Option<Point> {
    let sample = match SampleRef::parse_compact(&msg.payload) {
        Some(s) => s.to_sample(),
        None => Sample::parse(&msg.payload, msg.received_at_ms as i64).ok()?,
    };
    Some(Point {
        topic: msg.topic.clone(),
        ts_ms: sample.timestamp_ms,
        value: sample.value,
        quality: sample.quality,
    })
}

pub(crate) fn run(
    mut sink: Box<dyn Sink>,
    queue: Arc<Queue>,
    durable: watch::Sender<u64>,
    stats: Arc<Stats>,
    max_batch: usize,
) {
    let mut durable_seq = 0u64;
    let mut last_batch = 0usize;
    let mut last_maintain = Instant::now() - MAINTAIN_EVERY;
    loop {
        if last_maintain.elapsed() >= MAINTAIN_EVERY {
            last_maintain = Instant::now();
            if let Err(e) = sink.maintain(gantry_broker::message::now_ms() as i64) {
                tracing::warn!("history retention: {e}");
            }
        }
        // A lone value is written at once; a stream is gathered (see LINGER).
        let linger = (last_batch >= LINGER_AFTER).then_some(LINGER);
        let Some(batch) = queue.take(max_batch, Duration::from_secs(1), linger) else {
            break;
        };
        last_batch = batch.messages.len();
        if batch.messages.is_empty() && batch.dropped.is_none() {
            continue;
        }
        let points: Vec<Point> = batch.messages.iter().filter_map(|m| point_of(m)).collect();
        let skipped = batch.messages.len() - points.len();
        if skipped > 0 {
            stats.add_not_samples(skipped as u64);
        }
        let gaps: Vec<Gap> = batch.dropped.into_iter().collect();
        write_until_durable(sink.as_mut(), &points, &gaps, &stats, &queue);
        durable_seq += batch.messages.len() as u64;
        stats.add_written(points.len() as u64);
        durable.send_replace(durable_seq);
    }
    if let Err(e) = sink.close() {
        tracing::warn!("history store did not close cleanly: {e}");
    }
}

/// Retries a failing write with back-off (100 ms doubling to 5 s) until it
/// succeeds or the historian stops.
fn write_until_durable(
    sink: &mut dyn Sink,
    points: &[Point],
    gaps: &[Gap],
    stats: &Stats,
    queue: &Queue,
) {
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match sink.write(points, gaps) {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "history store writable again");
                    stats.set_error(None);
                }
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::error!(
                        failures,
                        values = points.len(),
                        "cannot write history ({e}); retrying, acknowledgements of QoS 1/2 values wait"
                    );
                }
                stats.set_error(Some(e.to_string()));
                if queue.is_closed() && failures >= 3 {
                    tracing::error!(
                        values = points.len(),
                        "historian stopping with unwritten values: QoS 0 values among them are lost"
                    );
                    return;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
