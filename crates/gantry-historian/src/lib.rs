//! The historian: every accepted value of the modeled tags, stored durably and
//! queryable by range, by aggregate over buckets, and as the whole namespace
//! as of any moment.
//!
//! - [`recorder`]: the broker hook. It sees every routed message, keeps the
//!   ones the [`config::RecordFilter`] selects, and hands out the gate that
//!   holds a QoS 1/2 acknowledgement until the value is durable.
//! - [`writer`]: the one writer thread with group commit, over a [`Sink`].
//! - [`sqlite`]: the embedded store (default), [`postgres`]: PostgreSQL and
//!   TimescaleDB behind a local disk spool.
//! - [`rollup`]: 1-minute and 1-hour aggregates maintained as data arrives.
//! - [`read`]: what a store must answer ([`HistoryRead`]); [`query`]: the
//!   four query types built on it, the same for every backend.
//! - [`access`]: the caller's subscribe permissions, applied to every query.

pub mod access;
pub mod config;
mod error;
pub mod point;
pub mod postgres;
pub mod query;
pub mod read;
pub mod recorder;
pub mod rollup;
pub mod spool;
pub mod sqlite;
pub mod timefmt;
pub mod writer;

pub use access::{FullAccess, ReadAccess};
pub use config::{
    Backend, BackendKind, HistorianConfig, PostgresConfig, RecordFilter, RetentionRule, TopicFilter,
};
pub use error::HistorianError;
pub use point::{Gap, Point, PointRow, SeriesInfo, ValueType, quality_code, quality_from_code};
pub use query::{
    Aggregate, AggregateQuery, AggregateResult, Bucket, ExportFormat, RawQuery, RawResult,
    SeriesBuckets, SeriesPoints, Snapshot, SnapshotValue,
};
pub use read::HistoryRead;
pub use recorder::{Historian, Recorder};
pub use rollup::{RollupLevel, RollupRow};
pub use writer::Sink;
