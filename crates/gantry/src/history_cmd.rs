//! `gantry history query|aggregate|snapshot|last|export`: read the historian
//! from the command line. The store is found from `--config` (any backend)
//! or `--data-dir` (the embedded store). Without `--user` the caller is the
//! local operator, who can read the database files anyway; with `--user` the
//! query runs with that identity's subscribe permissions (password from
//! `GANTRY_PASSWORD` or standard input).

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_historian::query::{self, Aggregate, AggregateQuery, ExportFormat, RawQuery};
use gantry_historian::recorder::StoreLocation;
use gantry_historian::timefmt::{format_rfc3339_ms, parse_duration_ms, parse_time};
use gantry_historian::{FullAccess, HistorianConfig, HistoryRead, ReadAccess};
use gantry_model::Value;
use gantry_security::{Action, AnonymousAccess, Policy, SecurityStore};

use crate::config::GantryConfig;

/// Which history store, and as whom.
#[derive(Args, Debug, Clone)]
pub struct HistoryLocation {
    /// The config file (its `data_dir` and `[historian]`).
    #[arg(long, short, global = true, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// A data directory with the embedded store (`history/history.sqlite`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Query with this identity's subscribe permissions (password from
    /// GANTRY_PASSWORD or standard input).
    #[arg(long, global = true)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Csv,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// Raw values of one tag or many (an MQTT filter) in a time range.
    Query {
        /// A topic or an MQTT filter, e.g. `acme/dallas/+/line-1/#`.
        filter: String,
        /// Start: RFC 3339, a date, `now`, or relative like `-1h` (default -1h).
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive), same forms (default now).
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// At most this many values per tag.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Aggregates over buckets: count, min, max, avg, first, last, twa
    /// (time-weighted average) and time-in-state.
    Aggregate {
        filter: String,
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// Bucket width, e.g. `1m`, `15m`, `1h`, `86.4s`.
        #[arg(long, conflicts_with = "buckets")]
        bucket: Option<String>,
        /// Or a number of equal buckets over the range (default: about 60
        /// buckets of a round width such as 1m, 5m or 1h).
        #[arg(long)]
        buckets: Option<u32>,
        /// Comma-separated aggregates.
        #[arg(
            long,
            default_value = "count,min,max,avg,first,last",
            value_delimiter = ','
        )]
        agg: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// The (sub)namespace as it was at a moment: each tag's latest value at
    /// or before `--at`.
    Snapshot {
        filter: String,
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        at: String,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// The latest stored value of each tag.
    Last {
        filter: String,
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Every raw value in a range, streamed as CSV or JSON.
    Export {
        filter: String,
        #[arg(long, default_value = "-1d", allow_hyphen_values = true)]
        from: String,
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        #[arg(long, value_enum)]
        format: FileFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// A user's subscribe permissions as the historian's read check.
struct UserAccess {
    policy: Policy,
    user: String,
}

impl ReadAccess for UserAccess {
    fn can_read(&self, topic: &str) -> bool {
        self.policy
            .check(Some(&self.user), "gantry-history", Action::Subscribe, topic)
            .allowed
    }
    fn who(&self) -> String {
        format!("user {:?}", self.user)
    }
}

pub(crate) fn open(
    location: &HistoryLocation,
) -> anyhow::Result<(Box<dyn HistoryRead>, Box<dyn ReadAccess>)> {
    let (data_dir, historian) = match (&location.config, &location.data_dir) {
        (_, Some(dir)) => (dir.clone(), HistorianConfig::default()),
        (Some(config), None) => {
            let c = GantryConfig::load(config)?;
            (c.data_dir, c.historian)
        }
        (None, None) => bail!("say which history: --config FILE or --data-dir DIR"),
    };
    let store = StoreLocation::for_config(&historian, &data_dir)?;
    // Said here rather than by the reader, whose error for a missing file
    // reads "cannot create the history directory" and repeats its cause.
    if let StoreLocation::Sqlite(path) = &store
        && !path.exists()
    {
        let why = if data_dir.is_dir() {
            "Gantry has recorded nothing in this data directory yet (is the historian enabled?)"
        } else {
            "the data directory does not exist"
        };
        bail!("no history database at {}: {why}", path.display());
    }
    // Every value acknowledged before this command started is answered: wait
    // (briefly) for the running Gantry to move its spool into the store.
    if let StoreLocation::Sqlite(path) = &store {
        let waiting = gantry_historian::sqlite::settle(path)?;
        if waiting > 0 {
            eprintln!(
                "note: {waiting} recorded values are still in the spool {} and not in this answer \
                 (they are applied while Gantry runs, and on its next start)",
                gantry_historian::sqlite::spool_path(path).display()
            );
        }
    }
    let reader = store.reader()?;
    let access: Box<dyn ReadAccess> = match &location.user {
        None => Box::new(FullAccess),
        Some(user) => Box::new(login(&data_dir, user)?),
    };
    Ok((reader, access))
}

/// Checks the user's password against the security file of `data_dir`.
fn login(data_dir: &std::path::Path, user: &str) -> anyhow::Result<UserAccess> {
    let store = SecurityStore::in_data_dir(data_dir);
    let file = store
        .load()
        .with_context(|| format!("cannot read identities from {}", store.path().display()))?;
    let password = match std::env::var("GANTRY_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            if std::io::stdin().is_terminal() {
                eprint!("password for {user}: ");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let identity = file.identity(user).filter(|i| !i.disabled);
    let ok = identity
        .and_then(|i| i.password.as_deref())
        .is_some_and(|phc| gantry_security::password::verify_password(password.as_bytes(), phc));
    if !ok {
        bail!("login refused for {user:?}: unknown or disabled identity, or wrong password");
    }
    Ok(UserAccess {
        policy: Policy::new(&file, AnonymousAccess::default()),
        user: user.to_owned(),
    })
}

pub fn run(location: &HistoryLocation, cmd: &HistoryCommand) -> anyhow::Result<ExitCode> {
    let (mut reader, access) = open(location)?;
    let reader = reader.as_mut();
    let access = access.as_ref();
    let now = gantry_broker::message::now_ms() as i64;
    let time = |text: &str, what: &str| {
        parse_time(text, now).map_err(|e| anyhow::anyhow!("--{what} {text:?}: {e}"))
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cmd {
        HistoryCommand::Query {
            filter,
            from,
            to,
            limit,
            format,
        } => {
            let q = RawQuery {
                filter: filter.clone(),
                from_ms: time(from, "from")?,
                to_ms: time(to, "to")?,
                limit: *limit,
            };
            let result = query::raw(reader, access, &q)?;
            match format {
                OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &result)?,
                OutputFormat::Csv | OutputFormat::Table => {
                    let csv = *format == OutputFormat::Csv;
                    if csv {
                        writeln!(out, "topic,ts_ms,time,value,quality")?;
                    }
                    for s in &result.series {
                        for p in &s.points {
                            let row = [
                                s.topic.clone(),
                                p.ts_ms.to_string(),
                                format_rfc3339_ms(p.ts_ms),
                                p.value.to_string(),
                                p.quality.to_string(),
                            ];
                            write_row(&mut out, &row, csv)?;
                        }
                        if s.truncated {
                            eprintln!("{}: more values than --limit; showing the first", s.topic);
                        }
                    }
                    // Matching series without values in the range are
                    // listed (empty) too.
                    if result.series.iter().all(|s| s.points.is_empty()) {
                        eprintln!("no history for {filter} in that range");
                    }
                }
            }
            report_gaps(&result.gaps);
        }
        HistoryCommand::Aggregate {
            filter,
            from,
            to,
            bucket,
            buckets,
            agg,
            format,
        } => {
            let from_ms = time(from, "from")?;
            let to_ms = time(to, "to")?;
            let bucket_ms = match (bucket, buckets) {
                (Some(b), _) => {
                    parse_duration_ms(b).map_err(|e| anyhow::anyhow!("--bucket {b:?}: {e}"))?
                }
                (None, Some(n)) if *n > 0 => {
                    let n = i64::from(*n);
                    ((to_ms - from_ms).max(1) + n - 1) / n
                }
                (None, Some(_)) => bail!("--buckets must be at least 1"),
                // About 60 buckets of a round width (aligned to rollups).
                (None, None) => query::nice_bucket_ms((to_ms - from_ms).max(1), 60),
            };
            let aggregates = agg
                .iter()
                .map(|a| {
                    a.trim()
                        .parse::<Aggregate>()
                        .map_err(|e| anyhow::anyhow!("--agg: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let q = AggregateQuery {
                filter: filter.clone(),
                from_ms,
                to_ms,
                bucket_ms,
                aggregates: aggregates.clone(),
                now_ms: now,
            };
            let result = query::aggregate(reader, access, &q)?;
            match format {
                OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &result)?,
                OutputFormat::Csv | OutputFormat::Table => {
                    let csv = *format == OutputFormat::Csv;
                    let names: Vec<String> = agg.iter().map(|a| a.trim().to_owned()).collect();
                    let mut header = vec!["topic".to_owned(), "start".to_owned(), "end".to_owned()];
                    header.extend(names.iter().cloned());
                    write_row(&mut out, &header, csv)?;
                    for s in &result.series {
                        for b in &s.buckets {
                            let mut row = vec![
                                s.topic.clone(),
                                format_rfc3339_ms(b.start_ms),
                                format_rfc3339_ms(b.end_ms),
                            ];
                            for a in &aggregates {
                                row.push(bucket_cell(b, *a));
                            }
                            write_row(&mut out, &row, csv)?;
                        }
                    }
                    if result.series.is_empty() {
                        eprintln!("no history for {filter} in that range");
                    }
                }
            }
            report_gaps(&result.gaps);
        }
        HistoryCommand::Snapshot { filter, at, format } => {
            let snap = query::snapshot(reader, access, filter, time(at, "at")?)?;
            print_snapshot(&mut out, &snap, *format)?;
        }
        HistoryCommand::Last { filter, format } => {
            let snap = query::last(reader, access, filter)?;
            print_snapshot(&mut out, &snap, *format)?;
        }
        HistoryCommand::Export {
            filter,
            from,
            to,
            format,
            output,
        } => {
            let format = match format {
                FileFormat::Csv => ExportFormat::Csv,
                FileFormat::Json => ExportFormat::Json,
            };
            let (from_ms, to_ms) = (time(from, "from")?, time(to, "to")?);
            let mut bar = Progress::new();
            let rows = match output {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut file = BufWriter::new(file);
                    let n = query::export(
                        reader,
                        access,
                        filter,
                        from_ms,
                        to_ms,
                        format,
                        &mut file,
                        &mut |d, t| bar.show(d, t),
                    )?;
                    file.flush()
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    n
                }
                None => query::export(
                    reader,
                    access,
                    filter,
                    from_ms,
                    to_ms,
                    format,
                    &mut out,
                    &mut |d, t| bar.show(d, t),
                )?,
            };
            bar.finish(rows);
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn bucket_cell(b: &query::Bucket, a: Aggregate) -> String {
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v}"));
    let val = |v: &Option<Value>| v.as_ref().map_or_else(String::new, |v| v.to_string());
    match a {
        Aggregate::Count => b.count.to_string(),
        Aggregate::Min => num(b.min),
        Aggregate::Max => num(b.max),
        Aggregate::Avg => num(b.avg),
        Aggregate::First => val(&b.first),
        Aggregate::Last => val(&b.last),
        Aggregate::Twa => num(b.twa),
        Aggregate::TimeInState => b
            .time_in_state
            .as_ref()
            .map(|m| {
                m.iter()
                    .map(|(state, ms)| format!("{state}={}s", *ms as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
    }
}

fn print_snapshot(
    out: &mut dyn Write,
    snap: &query::Snapshot,
    format: OutputFormat,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut *out, snap)?,
        OutputFormat::Csv | OutputFormat::Table => {
            let csv = format == OutputFormat::Csv;
            write_row(
                out,
                &["topic", "time", "value", "quality", "age"].map(String::from),
                csv,
            )?;
            for v in &snap.values {
                write_row(
                    out,
                    &[
                        v.topic.clone(),
                        format_rfc3339_ms(v.ts_ms),
                        v.value.to_string(),
                        v.quality.to_string(),
                        format!("{:.1}s", v.age_ms as f64 / 1000.0),
                    ],
                    csv,
                )?;
            }
            if snap.values.is_empty() {
                eprintln!("no values at that time");
            }
        }
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, cells: &[String], csv: bool) -> std::io::Result<()> {
    if csv {
        let quoted: Vec<_> = cells.iter().map(|c| query::export::csv_field(c)).collect();
        writeln!(out, "{}", quoted.join(","))
    } else {
        writeln!(out, "{}", cells.join("  "))
    }
}

fn report_gaps(gaps: &[gantry_historian::Gap]) {
    for g in gaps {
        eprintln!(
            "note: possible gap {} .. {}: {}{}",
            format_rfc3339_ms(g.from_ms),
            format_rfc3339_ms(g.to_ms),
            g.reason,
            if g.lost > 0 {
                format!(" ({} values lost)", g.lost)
            } else {
                String::new()
            }
        );
    }
}

/// A progress bar on standard error, drawn only on a terminal.
struct Progress {
    tty: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        if !self.tty || total == 0 {
            return;
        }
        let frac = (done as f64 / total as f64).min(1.0);
        let filled = (frac * 30.0) as usize;
        eprint!(
            "\r[{}{}] {:>3.0}% {done}/{total} values",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            frac * 100.0
        );
    }

    fn finish(&self, rows: u64) {
        if self.tty {
            eprintln!();
        }
        eprintln!(
            "exported {rows} values in {:.1}s",
            self.started.elapsed().as_secs_f64()
        );
    }
}
