//! The PostgreSQL / TimescaleDB store, behind a local disk spool.
//!
//! A QoS 1/2 value is acknowledged only once it is durable, and that must hold
//! while the database is down. So the writer thread's
//! [`Sink`](crate::writer::Sink) here is [`PostgresSink`], which writes each
//! batch into a local SQLite spool
//! (`<data_dir>/history/pg-spool.sqlite`, one transaction per batch) and
//! returns: the acknowledgements can go out. A [`Shipper`] thread moves the
//! spooled rows to PostgreSQL in order, one PostgreSQL transaction per chunk,
//! and deletes them from the spool only after the commit. A crash between the
//! two re-ships the same rows, which is idempotent (points are upserted,
//! rollups recomputed from the raw values, gaps de-duplicated by spool
//! sequence). A database that is down or restarts only delays history: the
//! spool grows meanwhile and the shipper catches up once it is back.
//!
//! - [`crate::spool`]: the local spool (writer and reader sides), shared
//!   with the embedded store.
//! - `shipper`: the thread that ships, with reconnect and back-off, and
//!   retention.
//! - `schema`: the tables (the same as SQLite's), TimescaleDB when available.
//! - `reader`: [`PostgresReader`], the [`HistoryRead`](crate::read::HistoryRead)
//!   over a synchronous client.
//!
//! The synchronous `postgres` client runs its own small runtime: it must not
//! be used from inside a tokio async context (the writer and shipper threads
//! are plain threads; readers belong on `spawn_blocking`).

mod reader;
mod schema;
mod shipper;
mod tls;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::Client;
use postgres::config::Host;

use crate::config::{HistorianConfig, PostgresConfig};
use crate::error::HistorianError;

/// The spool in front of PostgreSQL (the writer thread's sink).
pub use crate::spool::SpoolSink as PostgresSink;
pub use reader::PostgresReader;
pub use schema::SCHEMA_VERSION;
pub use shipper::{ShipMode, Shipper, ShipperStatus, ship_spooled};

/// `<data_dir>/history/pg-spool.sqlite`.
pub fn spool_path(data_dir: &Path) -> PathBuf {
    data_dir.join("history").join("pg-spool.sqlite")
}

/// Stops the shipper (what [`start`] returns with the sink).
pub type StopShipping = Box<dyn FnOnce() + Send>;

/// Reads the shipper's status while it runs (`None` once stopped).
pub type ShippingStatus = Box<dyn Fn() -> Option<ShipperStatus> + Send + Sync>;

/// Opens the spool and starts the shipper: what the historian runs with
/// `backend = "postgres"`. The returned closure stops the shipper promptly,
/// leaving whatever is not shipped yet in the spool for the next start.
pub fn start(
    pg: &PostgresConfig,
    data_dir: &Path,
    config: &HistorianConfig,
) -> Result<(PostgresSink, StopShipping, ShippingStatus), HistorianError> {
    let (sink, shipper) = start_shipping(pg, &spool_path(data_dir), config)?;
    let shipper = std::sync::Arc::new(std::sync::Mutex::new(Some(shipper)));
    let for_status = shipper.clone();
    let status: ShippingStatus = Box::new(move || {
        for_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(Shipper::status)
    });
    let stop: StopShipping = Box::new(move || {
        let running = shipper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = running {
            s.stop();
        }
    });
    Ok((sink, stop, status))
}

/// [`start`] with an explicit spool file, returning the [`Shipper`] itself
/// (to wait until everything spooled is shipped, or to read its status).
pub fn start_shipping(
    pg: &PostgresConfig,
    spool: &Path,
    config: &HistorianConfig,
) -> Result<(PostgresSink, Shipper), HistorianError> {
    let target = Target::new(pg)?;
    let sink = PostgresSink::open(spool, config)?;
    let shipper = Shipper::spawn(target, &sink, config)?;
    Ok((sink, shipper))
}

/// A validated `[historian.postgres]`: connection settings, the schema, and
/// a description of the server for messages (never the password).
#[derive(Clone)]
pub(crate) struct Target {
    config: postgres::Config,
    /// The schema name as configured (validated).
    schema: String,
    /// The schema as an SQL identifier (`"gantry"`).
    quoted: String,
    /// "host 127.0.0.1:5432, database history, user gantry".
    describe: Arc<str>,
    /// TLS whenever the server offers it; verified with a CA file.
    tls: tls::MakeRustls,
}

impl Target {
    pub(crate) fn new(pg: &PostgresConfig) -> Result<Target, HistorianError> {
        let quoted = quote_schema(&pg.schema)?;
        let mut config = postgres::Config::from_str(&pg.url).map_err(|e| {
            HistorianError::Postgres(format!(
                "historian.postgres.url is not a valid connection string: {}",
                chain(&e)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("gantry-historian");
        }
        config.notice_callback(|notice| {
            tracing::debug!("PostgreSQL {}: {}", notice.severity(), notice.message())
        });
        let describe = describe(&config);
        let tls = tls::MakeRustls::new(pg.ca_file.as_deref())?;
        tracing::debug!("{describe}: {}", tls::describe_ca(pg.ca_file.as_ref()));
        Ok(Target {
            tls,
            config,
            schema: pg.schema.clone(),
            quoted,
            describe: describe.into(),
        })
    }

    /// Connects (never from inside a tokio async context: the synchronous
    /// client would panic there, so this is refused with an error instead).
    pub(crate) fn connect(&self) -> Result<Client, HistorianError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(HistorianError::Postgres(format!(
                "connect to {}: called from inside an async context; use a blocking thread (spawn_blocking)",
                self.describe
            )));
        }
        self.config
            .connect(self.tls.clone())
            .map_err(self.err("connect"))
    }

    /// Maps a client error to a message naming the server and the operation.
    pub(crate) fn err<'a>(
        &'a self,
        operation: &'a str,
    ) -> impl Fn(postgres::Error) -> HistorianError + 'a {
        move |e| {
            HistorianError::Postgres(format!("{operation} on {}: {}", self.describe, chain(&e)))
        }
    }

    /// Replaces `{s}` in an SQL template by the quoted schema.
    pub(crate) fn sql(&self, template: &str) -> String {
        template.replace("{s}", &self.quoted)
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }
}

/// An error and its sources on one line ("db error: ERROR: ...").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text.replace('\n', " "));
        }
        source = s.source();
    }
    out
}

/// The server, database and user of a connection string, for messages.
fn describe(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(dir) => format!("{} (socket, port {})", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{a}:{}", port(i)))
            .collect();
    }
    let host = if hosts.is_empty() {
        "(no host)".to_string()
    } else {
        hosts.join(",")
    };
    let user = config.get_user().unwrap_or("(default user)");
    let db = config.get_dbname().unwrap_or(user);
    format!("PostgreSQL host {host}, database {db}, user {user}")
}

/// Checks a schema name (`[a-z_][a-z0-9_]*`, at most 63 bytes) and quotes it.
pub(crate) fn quote_schema(name: &str) -> Result<String, HistorianError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok || name.len() > 63 || name.starts_with("pg_") {
        return Err(HistorianError::Postgres(format!(
            "historian.postgres.schema {name:?} is not a valid schema name: use lowercase letters, digits and _ \
             (starting with a letter or _, at most 63 characters, not pg_...)"
        )));
    }
    Ok(format!("\"{name}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_and_quoted() {
        assert_eq!(quote_schema("gantry").ok(), Some("\"gantry\"".to_string()));
        assert_eq!(quote_schema("_t_01").ok(), Some("\"_t_01\"".to_string()));
        for bad in [
            "",
            "Gantry",
            "1abc",
            "a-b",
            "a\"b",
            "a b",
            "pg_catalog",
            &"x".repeat(64),
        ] {
            assert!(quote_schema(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn descriptions_name_host_and_database_but_not_the_password() {
        let t = Target::new(&PostgresConfig {
            url: "host=db.example port=5433 user=gantry password=s3cret dbname=history".into(),
            schema: "gantry".into(),
            ca_file: None,
        })
        .expect("valid");
        assert_eq!(
            t.describe(),
            "PostgreSQL host db.example:5433, database history, user gantry"
        );
        let t = Target::new(&PostgresConfig {
            url: "postgresql://gantry:s3cret@10.0.0.5/plant".into(),
            schema: "gantry".into(),
            ca_file: None,
        })
        .expect("valid");
        assert!(!t.describe().contains("s3cret"));
        assert!(t.describe().contains("10.0.0.5:5432") && t.describe().contains("plant"));
        let e = Target::new(&PostgresConfig {
            url: "host=x port=notaport password=s3cret".into(),
            schema: "gantry".into(),
            ca_file: None,
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("not a valid connection string") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
