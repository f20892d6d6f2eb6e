//! The broker hook and the running historian. [`Recorder::observe`] runs on
//! the publish path: it selects the topics to record, queues the message for
//! the writer thread, and returns the gate that holds a QoS 1/2
//! acknowledgement until the value is durable. QoS 0 values are dropped only
//! when the writer is far behind, and the loss is recorded as a gap.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use gantry_broker::Message;
use gantry_broker::hooks::PublishObserver;
use gantry_broker::message::now_ms;
use gantry_broker::store::AckGate;
use gantry_codec::QoS;
use gantry_model::{SystemSubtree, system_subtree_of};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Backend, HistorianConfig, RecordFilter};
use crate::error::HistorianError;
use crate::point::Gap;
use crate::read::HistoryRead;
use crate::writer::Sink;

/// How every canonical sample payload starts (see `gantry_model::payload`).
const CANONICAL_PREFIX: &[u8] = b"{\"timestamp_ms\":";

/// Decides whether a topic is a modeled tag (the plant model's answer).
pub type ModeledCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Messages waiting for the writer.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    max_pending_qos0: usize,
}

#[derive(Default)]
struct QueueState {
    messages: Vec<Arc<Message>>,
    next_seq: u64,
    pending_qos0: usize,
    dropped: u64,
    dropped_from_ms: i64,
    dropped_to_ms: i64,
    closed: bool,
    /// While the writer lingers for a fuller batch: the queue length that
    /// wakes it early (0 otherwise).
    fill_target: usize,
}

/// What the writer takes at once.
pub(crate) struct Batch {
    pub messages: Vec<Arc<Message>>,
    pub dropped: Option<Gap>,
}

impl Queue {
    fn new(max_pending_qos0: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            max_pending_qos0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message; returns its sequence number, or `None` when a QoS 0
    /// message was dropped because the writer is too far behind.
    fn push(&self, msg: &Arc<Message>) -> Option<u64> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        if msg.qos == QoS::AtMostOnce {
            if st.pending_qos0 >= self.max_pending_qos0 {
                let now = now_ms() as i64;
                if st.dropped == 0 {
                    st.dropped_from_ms = now;
                }
                st.dropped += 1;
                st.dropped_to_ms = now;
                return None;
            }
            st.pending_qos0 += 1;
        }
        st.messages.push(msg.clone());
        st.next_seq += 1;
        let seq = st.next_seq;
        let wake = st.messages.len() == 1 || st.messages.len() == st.fill_target;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
        Some(seq)
    }

    /// Waits up to `wait` for messages and takes up to `max` of them;
    /// `None` once closed and drained.
    ///
    /// With `linger` (`(n, d)`), once a message is there, waits up to `d`
    /// more for `n` messages: the writer asks for it under a steady stream
    /// of values, where a commit per few dozen values would cost more than
    /// it saves.
    pub(crate) fn take(
        &self,
        max: usize,
        wait: Duration,
        linger: Option<(usize, Duration)>,
    ) -> Option<Batch> {
        let mut st = self.lock();
        if st.messages.is_empty() && st.dropped == 0 {
            if st.closed {
                return None;
            }
            st = self
                .ready
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if let Some((min_fill, linger)) = linger
            && !st.messages.is_empty()
            && st.messages.len() < min_fill.min(max)
            && !st.closed
        {
            let deadline = std::time::Instant::now() + linger;
            st.fill_target = min_fill.min(max);
            while st.messages.len() < st.fill_target && !st.closed {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .ready
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            st.fill_target = 0;
        }
        let messages: Vec<Arc<Message>> = if st.messages.len() <= max {
            std::mem::take(&mut st.messages)
        } else {
            st.messages.drain(..max).collect()
        };
        let qos0 = messages.iter().filter(|m| m.qos == QoS::AtMostOnce).count();
        st.pending_qos0 -= qos0.min(st.pending_qos0);
        let dropped = (st.dropped > 0).then(|| Gap {
            from_ms: st.dropped_from_ms,
            to_ms: st.dropped_to_ms,
            lost: st.dropped,
            reason: "historian queue full: QoS 0 values dropped while the store was behind".into(),
        });
        st.dropped = 0;
        if messages.is_empty() && dropped.is_none() && st.closed {
            return None;
        }
        Some(Batch { messages, dropped })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn pending(&self) -> usize {
        self.lock().messages.len()
    }
}

/// Counters for health and metrics.
#[derive(Default)]
pub(crate) struct Stats {
    written: AtomicU64,
    not_samples: AtomicU64,
    dropped_qos0: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    pub(crate) fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_not_samples(&self, n: u64) {
        self.not_samples.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// A snapshot of the historian's counters.
#[derive(Debug, Clone, Serialize)]
pub struct HistorianStatus {
    pub backend: &'static str,
    /// Values written since start.
    pub written: u64,
    /// Messages on recorded topics whose payload was not a sample.
    pub not_samples: u64,
    /// QoS 0 values dropped because the writer was behind (each recorded as a gap).
    pub dropped_qos0: u64,
    /// Messages waiting for the writer.
    pub pending: usize,
    /// The store's last error, while it persists.
    pub last_error: Option<String>,
    /// Values durable in the local spool but not yet in the store (applied
    /// into SQLite, or shipped to PostgreSQL).
    pub backlog: u64,
    /// With the PostgreSQL backend: whether the shipper is connected, values
    /// shipped since start, and its last error (an outage shows here while
    /// values wait in the local spool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<crate::postgres::ShipperStatus>,
}

/// The broker hook (a [`PublishObserver`]).
pub struct Recorder {
    filter: RecordFilter,
    modeled: Option<ModeledCheck>,
    queue: Arc<Queue>,
    durable: watch::Receiver<u64>,
    stats: Arc<Stats>,
}

impl Recorder {
    /// Whether `topic` is recorded: the filter selects it, and it is a modeled
    /// tag or a KPI result (unless unmodeled values are recorded too).
    pub fn records(&self, topic: &str) -> bool {
        if !self.filter.records(topic) {
            return false;
        }
        match &self.modeled {
            None => true,
            Some(is_modeled) => {
                is_modeled(topic) || system_subtree_of(topic) == Some(SystemSubtree::Kpi)
            }
        }
    }
}

impl PublishObserver for Recorder {
    fn observe(&self, msg: &Arc<Message>) -> Option<AckGate> {
        // An empty retained publish clears state; it is not a value. With a
        // model, the contracts have put every modeled value into canonical
        // form, so one prefix comparison turns away everything else (binary
        // payloads, unmodeled topics) before any topic lookup.
        if msg.payload.is_empty()
            || (self.modeled.is_some() && !msg.payload.starts_with(CANONICAL_PREFIX))
            || !self.records(&msg.topic)
        {
            return None;
        }
        match self.queue.push(msg) {
            Some(seq) if msg.qos != QoS::AtMostOnce => {
                Some(AckGate::new(self.durable.clone(), seq))
            }
            Some(_) => None,
            None => {
                self.stats.dropped_qos0.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// How to open read connections to the store the historian writes.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    Sqlite(std::path::PathBuf),
    Postgres(crate::config::PostgresConfig),
}

impl StoreLocation {
    /// Opens a reader on this store.
    pub fn reader(&self) -> Result<Box<dyn HistoryRead>, HistorianError> {
        match self {
            StoreLocation::Sqlite(path) => Ok(Box::new(crate::sqlite::SqliteReader::open(path)?)),
            StoreLocation::Postgres(pg) => {
                Ok(Box::new(crate::postgres::PostgresReader::connect(pg)?))
            }
        }
    }

    /// Where the store is for a config, without opening it.
    pub fn for_config(
        config: &HistorianConfig,
        data_dir: &Path,
    ) -> Result<StoreLocation, HistorianError> {
        match config.resolved_backend().map_err(HistorianError::Query)? {
            Backend::Sqlite { path } => Ok(StoreLocation::Sqlite(
                path.unwrap_or_else(|| crate::sqlite::default_path(data_dir)),
            )),
            Backend::Postgres(pg) => Ok(StoreLocation::Postgres(pg)),
        }
    }
}

/// Stops a backend's background work (the PostgreSQL shipper).
type StopBackground = Box<dyn FnOnce() + Send>;

/// The running historian: the writer thread, its queue and where to read.
pub struct Historian {
    recorder: Arc<Recorder>,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    writer: Mutex<Option<JoinHandle<()>>>,
    location: StoreLocation,
    backend_name: &'static str,
    /// Background work of the backend (the PostgreSQL shipper), stopped on shutdown.
    background: Mutex<Option<StopBackground>>,
    shipping: Option<crate::postgres::ShippingStatus>,
    /// The spool's signals, for the backlog.
    spool: Option<Arc<crate::spool::Shared>>,
}

impl Historian {
    /// Opens the configured store (creating it if needed) and starts the
    /// writer thread. `modeled` limits recording to the plant model's tags.
    pub fn start(
        config: &HistorianConfig,
        data_dir: &Path,
        modeled: Option<ModeledCheck>,
    ) -> Result<Historian, HistorianError> {
        config.validate().map_err(HistorianError::Query)?;
        let location = StoreLocation::for_config(config, data_dir)?;
        let mut shipping = None;
        let spool;
        let (sink, backend_name, background): (
            Box<dyn Sink>,
            &'static str,
            Option<StopBackground>,
        ) = match &location {
            StoreLocation::Sqlite(path) => {
                let (sink, stop, signals) = crate::sqlite::start(path, config)?;
                spool = Some(signals);
                (Box::new(sink), "sqlite", Some(stop))
            }
            StoreLocation::Postgres(pg) => {
                let (sink, stop, status) = crate::postgres::start(pg, data_dir, config)?;
                shipping = Some(status);
                spool = Some(sink.shared.clone());
                (Box::new(sink), "postgres", Some(stop))
            }
        };
        let mut historian =
            Self::with_sink(config, sink, location, backend_name, background, modeled);
        historian.shipping = shipping;
        historian.spool = spool;
        Ok(historian)
    }

    fn with_sink(
        config: &HistorianConfig,
        sink: Box<dyn Sink>,
        location: StoreLocation,
        backend_name: &'static str,
        background: Option<StopBackground>,
        modeled: Option<ModeledCheck>,
    ) -> Historian {
        let queue = Arc::new(Queue::new(config.max_pending_qos0));
        let stats = Arc::new(Stats::default());
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let writer = {
            let queue = queue.clone();
            let stats = stats.clone();
            let max_batch = config.max_batch;
            std::thread::Builder::new()
                .name("gantry-historian".into())
                .spawn(move || crate::writer::run(sink, queue, durable_tx, stats, max_batch))
                .ok()
        };
        if writer.is_none() {
            tracing::error!("cannot start the historian's writer thread: nothing will be recorded");
        }
        let recorder = Arc::new(Recorder {
            filter: config.filter(),
            modeled: if config.record_unmodeled {
                None
            } else {
                modeled
            },
            queue: queue.clone(),
            durable: durable_rx,
            stats: stats.clone(),
        });
        Historian {
            recorder,
            queue,
            stats,
            writer: Mutex::new(writer),
            location,
            backend_name,
            background: Mutex::new(background),
            shipping: None,
            spool: None,
        }
    }

    /// The broker hook to install in `Hooks::observers`.
    pub fn recorder(&self) -> Arc<Recorder> {
        self.recorder.clone()
    }

    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// A new read connection.
    pub fn reader(&self) -> Result<Box<dyn HistoryRead>, HistorianError> {
        self.location.reader()
    }

    pub fn status(&self) -> HistorianStatus {
        HistorianStatus {
            backend: self.backend_name,
            written: self.stats.written.load(Ordering::Relaxed),
            not_samples: self.stats.not_samples.load(Ordering::Relaxed),
            dropped_qos0: self.stats.dropped_qos0.load(Ordering::Relaxed),
            pending: self.queue.pending(),
            last_error: self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            backlog: self.spool.as_ref().map_or(0, |s| s.backlog()),
            postgres: self.shipping.as_ref().and_then(|s| s()),
        }
    }

    /// Writes what is queued, marks the store cleanly closed and stops.
    pub fn shutdown(&self) {
        self.queue.close();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer
            && w.join().is_err()
        {
            tracing::error!("the historian's writer thread panicked");
        }
        let background = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(stop) = background {
            stop();
        }
    }
}

impl Drop for Historian {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::point::Point;

    /// A sink that reports each batch and waits for permission to finish it.
    struct GatedSink {
        batches: mpsc::Sender<(Vec<Point>, Vec<Gap>)>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    }

    impl Sink for GatedSink {
        fn write(&mut self, points: &[Point], gaps: &[Gap]) -> Result<(), HistorianError> {
            let _ = self.batches.send((points.to_vec(), gaps.to_vec()));
            let release = self.release.lock().unwrap_or_else(|p| p.into_inner());
            release
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| HistorianError::Stopped)
        }
        fn maintain(&mut self, _now_ms: i64) -> Result<(), HistorianError> {
            Ok(())
        }
        fn close(&mut self) -> Result<(), HistorianError> {
            Ok(())
        }
    }

    type Batches = mpsc::Receiver<(Vec<Point>, Vec<Gap>)>;

    fn historian(config: &HistorianConfig) -> (Historian, Batches, mpsc::Sender<()>) {
        let (batches_tx, batches_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let sink = GatedSink {
            batches: batches_tx,
            release: Arc::new(Mutex::new(release_rx)),
        };
        let h = Historian::with_sink(
            config,
            Box::new(sink),
            StoreLocation::Sqlite("unused".into()),
            "test",
            None,
            None,
        );
        (h, batches_rx, release_tx)
    }

    fn message(topic: &str, payload: &str, qos: QoS) -> Arc<Message> {
        Arc::new(Message::new(topic, payload.as_bytes(), qos, false))
    }

    #[test]
    fn a_qos1_value_is_acknowledged_only_after_its_batch_is_durable() {
        let (h, batches, release) = historian(&HistorianConfig::default());
        let rec = h.recorder();
        let gate = rec
            .observe(&message(
                "acme/a/speed",
                r#"{"timestamp_ms":5,"value":1.5}"#,
                QoS::AtLeastOnce,
            ))
            .expect("QoS 1 gets a gate");
        let (points, _) = batches
            .recv_timeout(Duration::from_secs(5))
            .expect("batch written");
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].ts_ms, 5);
        // The sink has the batch but has not returned: not durable yet.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!gate.is_open());
        release.send(()).expect("release");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gate.is_open() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(gate.is_open());
        // QoS 0 never holds an acknowledgement; non-sample payloads are counted.
        assert!(
            rec.observe(&message("acme/a/speed", "1.0", QoS::AtMostOnce))
                .is_none()
        );
        assert!(
            rec.observe(&message("acme/a/speed", "{\"x\":1}", QoS::AtLeastOnce))
                .is_some()
        );
        for _ in 0..2 {
            let _ = batches.recv_timeout(Duration::from_secs(5));
            let _ = release.send(());
        }
        drop(release);
        h.shutdown();
        assert_eq!(h.status().not_samples, 1);
    }

    #[test]
    fn qos0_values_beyond_the_queue_limit_are_dropped_and_recorded_as_a_gap() {
        let config = HistorianConfig {
            max_pending_qos0: 3,
            ..HistorianConfig::default()
        };
        let (h, batches, release) = historian(&config);
        let rec = h.recorder();
        // The first value occupies the writer (blocked in the sink).
        rec.observe(&message("acme/a/x", "1", QoS::AtMostOnce));
        batches
            .recv_timeout(Duration::from_secs(5))
            .expect("first batch");
        for i in 0..10 {
            rec.observe(&message("acme/a/x", &i.to_string(), QoS::AtMostOnce));
        }
        // QoS 1 is never dropped, even now.
        assert!(
            rec.observe(&message("acme/a/x", "99", QoS::AtLeastOnce))
                .is_some()
        );
        assert_eq!(h.status().dropped_qos0, 7);
        release.send(()).expect("release");
        let (points, gaps) = batches
            .recv_timeout(Duration::from_secs(5))
            .expect("second batch");
        assert_eq!(points.len(), 4);
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].lost, 7);
        assert!(gaps[0].reason.contains("QoS 0"));
        release.send(()).expect("release");
        drop(release);
        h.shutdown();
    }

    #[test]
    fn only_selected_modeled_topics_are_recorded() {
        let config = HistorianConfig {
            exclude: vec![crate::config::TopicFilter("acme/b/#".into())],
            ..HistorianConfig::default()
        };
        let (batches_tx, _batches_rx) = mpsc::channel();
        let (_release_tx, release_rx) = mpsc::channel();
        let modeled: ModeledCheck = Arc::new(|t: &str| t.ends_with("/speed"));
        let h = Historian::with_sink(
            &config,
            Box::new(GatedSink {
                batches: batches_tx,
                release: Arc::new(Mutex::new(release_rx)),
            }),
            StoreLocation::Sqlite("unused".into()),
            "test",
            None,
            Some(modeled),
        );
        let rec = h.recorder();
        assert!(rec.records("acme/a/speed"));
        assert!(!rec.records("acme/a/other"));
        assert!(!rec.records("acme/b/speed"));
        assert!(rec.records("acme/a/_kpi/oee"));
        assert!(!rec.records("acme/_dlq/acme/a/speed"));
    }
}
