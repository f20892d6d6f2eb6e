//! `[historian]` in the Gantry config: which backend, which topics are
//! recorded, how long each subtree's history is kept, and how writes are
//! grouped.

use std::path::PathBuf;
use std::time::Duration;

use gantry_model::{SystemSubtree, system_subtree_of};
use serde::Deserialize;

/// Which store keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded SQLite store (default).
    #[default]
    Sqlite,
    /// PostgreSQL, or TimescaleDB when the extension is installed.
    Postgres,
}

/// `[historian.postgres]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string, e.g.
    /// `host=127.0.0.1 user=gantry dbname=history`.
    pub url: String,
    /// Database schema (namespace) for Gantry's tables.
    #[serde(default = "default_pg_schema")]
    pub schema: String,
    /// A PEM file with the CA that signed the server's certificate: the
    /// certificate and host name are then verified. Without it, connections
    /// are encrypted whenever the server offers TLS (`sslmode=prefer`, the
    /// default, or `require`) but the server is not authenticated.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_pg_schema() -> String {
    "gantry".into()
}

/// Where history is stored, resolved from `[historian]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store: `<data_dir>/history/history.sqlite` unless `path`
    /// says otherwise.
    Sqlite { path: Option<PathBuf> },
    /// PostgreSQL. Values are first made durable in a local spool and shipped
    /// from there, so a database that is down delays history, never loses it.
    Postgres(PostgresConfig),
}

/// How long history under one subtree is kept. The most specific matching
/// rule (longest subtree) applies to a series; absent durations keep forever.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// An MQTT filter, e.g. `acme/dallas/packaging/#`.
    pub subtree: TopicFilter,
    /// Raw values.
    #[serde(default, with = "duration_text::option")]
    pub raw: Option<Duration>,
    /// 1-minute rollups.
    #[serde(default, with = "duration_text::option")]
    pub minute: Option<Duration>,
    /// 1-hour rollups.
    #[serde(default, with = "duration_text::option")]
    pub hour: Option<Duration>,
}

/// `[historian]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorianConfig {
    pub enabled: bool,
    pub backend: BackendKind,
    /// SQLite file (default `<data_dir>/history/history.sqlite`).
    pub path: Option<PathBuf>,
    pub postgres: Option<PostgresConfig>,
    /// MQTT filters of the topics to record (default: everything modeled).
    pub include: Vec<TopicFilter>,
    /// MQTT filters excluded even when included.
    pub exclude: Vec<TopicFilter>,
    /// Record sample-shaped values on topics the plant model does not declare
    /// (when contracts let them through).
    pub record_unmodeled: bool,
    pub retention: Vec<RetentionRule>,
    /// Most values written in one transaction.
    pub max_batch: usize,
    /// QoS 0 values waiting for the writer beyond which new QoS 0 values are
    /// dropped and the loss recorded as a gap. QoS 1/2 values are never
    /// dropped: their acknowledgement waits instead.
    pub max_pending_qos0: usize,
    /// `synchronous=FULL` (survives power loss) instead of `NORMAL`
    /// (survives a crash or `kill -9` of Gantry).
    pub fsync: bool,
}

impl Default for HistorianConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackendKind::default(),
            path: None,
            postgres: None,
            include: vec![TopicFilter("#".into())],
            exclude: Vec::new(),
            record_unmodeled: false,
            retention: Vec::new(),
            max_batch: 50_000,
            max_pending_qos0: 200_000,
            fsync: false,
        }
    }
}

impl HistorianConfig {
    /// Checks what deserialization cannot; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        self.resolved_backend()?;
        if self.max_batch == 0 {
            return Err("historian.max_batch must be at least 1".into());
        }
        Ok(())
    }

    /// The store to open; `postgres` needs its `[historian.postgres]` table.
    pub fn resolved_backend(&self) -> Result<Backend, String> {
        match (self.backend, &self.postgres) {
            (BackendKind::Sqlite, _) => Ok(Backend::Sqlite {
                path: self.path.clone(),
            }),
            (BackendKind::Postgres, Some(pg)) => Ok(Backend::Postgres(pg.clone())),
            (BackendKind::Postgres, None) => Err(
                "historian.backend = \"postgres\" needs [historian.postgres] with url = \"host=... user=... dbname=...\"".into(),
            ),
        }
    }

    pub fn filter(&self) -> RecordFilter {
        RecordFilter {
            include: self.include.iter().map(|f| f.0.clone()).collect(),
            exclude: self.exclude.iter().map(|f| f.0.clone()).collect(),
        }
    }

    /// The retention rule that applies to `topic`: the matching rule with the
    /// longest subtree.
    pub fn retention_for(&self, topic: &str) -> Option<&RetentionRule> {
        self.retention
            .iter()
            .filter(|r| gantry_codec::topic::matches(&r.subtree.0, topic))
            .max_by_key(|r| r.subtree.0.len())
    }
}

/// A valid MQTT topic filter, checked when the config is read (so the error
/// carries the file position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter(pub String);

impl<'de> Deserialize<'de> for TopicFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        gantry_codec::topic::validate_topic_filter(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid topic filter {text:?}: {e}")))?;
        Ok(TopicFilter(text))
    }
}

/// Which topics are history: data topics and KPI results that match an
/// include filter and no exclude filter. Dead letters, commands, metadata,
/// health and broker topics never are.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl RecordFilter {
    pub fn records(&self, topic: &str) -> bool {
        if topic.starts_with('$') {
            return false;
        }
        match system_subtree_of(topic) {
            None | Some(SystemSubtree::Kpi) => {}
            Some(_) => return false,
        }
        let included = self
            .include
            .iter()
            .any(|f| f == "#" || gantry_codec::topic::matches(f, topic));
        included
            && !self
                .exclude
                .iter()
                .any(|f| gantry_codec::topic::matches(f, topic))
    }
}

/// Durations written as `90d`, `12h`, `30m`, `45s`, `2w` or `1y` (365 days).
pub mod duration_text {
    use std::time::Duration;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?} has no unit (use s, m, h, d, w or y)"))?;
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} does not start with a whole number"))?;
        let secs = match unit {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?} (use s, m, h, d, w or y)"
                ));
            }
        };
        n.checked_mul(secs)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    }

    pub mod option {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|t| super::parse(&t).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_records_data_and_kpi_topics_only() {
        let f = HistorianConfig::default().filter();
        assert!(f.records("acme/dallas/packaging/line-1/filler/speed"));
        assert!(f.records("acme/dallas/packaging/line-1/_kpi/oee"));
        assert!(!f.records("acme/_dlq/acme/dallas/x"));
        assert!(!f.records("acme/dallas/packaging/line-1/filler/_cmd/speed"));
        assert!(!f.records("$SYS/broker/uptime"));
        let f = RecordFilter {
            include: vec!["acme/dallas/#".into()],
            exclude: vec!["acme/dallas/utilities/#".into()],
        };
        assert!(f.records("acme/dallas/packaging/x"));
        assert!(!f.records("acme/dallas/utilities/x"));
        assert!(!f.records("acme/houston/packaging/x"));
    }

    #[test]
    fn durations_and_retention_lookup() {
        assert_eq!(
            duration_text::parse("90d"),
            Ok(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(
            duration_text::parse("2w"),
            Ok(Duration::from_secs(14 * 86_400))
        );
        assert!(duration_text::parse("90").unwrap_err().contains("no unit"));
        assert!(
            duration_text::parse("9x")
                .unwrap_err()
                .contains("unknown unit")
        );
        let c: HistorianConfig = toml::from_str(
            r#"
            [[retention]]
            subtree = "acme/#"
            raw = "30d"
            [[retention]]
            subtree = "acme/dallas/#"
            raw = "7d"
            hour = "10y"
            "#,
        )
        .expect("config parses");
        assert_eq!(
            c.retention_for("acme/dallas/a/b").and_then(|r| r.raw),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            c.retention_for("acme/houston/a").and_then(|r| r.raw),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(c.retention_for("other/x").is_none());
    }

    #[test]
    fn backend_is_chosen_by_name() {
        let c: HistorianConfig =
            toml::from_str("backend = \"postgres\"\n[postgres]\nurl = \"host=127.0.0.1\"")
                .expect("parses");
        assert_eq!(
            c.resolved_backend(),
            Ok(Backend::Postgres(PostgresConfig {
                url: "host=127.0.0.1".into(),
                schema: "gantry".into(),
                ca_file: None,
            }))
        );
        let c: HistorianConfig = toml::from_str("backend = \"postgres\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("[historian.postgres]"));
        let c: HistorianConfig = toml::from_str("").expect("parses");
        assert_eq!(c.resolved_backend(), Ok(Backend::Sqlite { path: None }));
    }
}
