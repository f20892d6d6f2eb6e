//! Runs the backend-independent suite (`tests/common`) on the embedded
//! SQLite store: each case on a fresh database in a temporary directory.

mod common;

use std::path::PathBuf;

use common::TestStore;
use gantry_historian::sqlite::{SqliteReader, SqliteSink};
use gantry_historian::{Gap, HistorianConfig, HistoryRead, Point, Sink};

struct SqliteStore {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sink: SqliteSink,
}

impl SqliteStore {
    fn new() -> SqliteStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("history").join("history.sqlite");
        let sink = SqliteSink::open(&path, &HistorianConfig::default()).expect("open the store");
        SqliteStore {
            _dir: dir,
            path,
            sink,
        }
    }
}

impl TestStore for SqliteStore {
    fn write(&mut self, points: &[Point], gaps: &[Gap]) {
        // A committed SQLite transaction is readable at once.
        self.sink.write(points, gaps).expect("write");
    }

    fn reader(&mut self) -> Box<dyn HistoryRead> {
        Box::new(SqliteReader::open(&self.path).expect("open a reader"))
    }
}

/// One `#[test]` per case, and a check that the list is complete.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                common::$case(&mut SqliteStore::new());
            }
        )*

        #[test]
        fn every_case_of_the_suite_runs_here() {
            let here: Vec<&str> = vec![$(stringify!($case)),*];
            let suite: Vec<&str> = common::all_cases().into_iter().map(|(name, _)| name).collect();
            assert_eq!(here, suite);
        }
    };
}

cases!(
    case_raw_one_tag,
    case_raw_many_tags,
    case_hash_matches_parent,
    case_gaps_reported,
    case_out_of_order_and_duplicates_raw,
    case_out_of_order_and_duplicates_rollups,
    case_quality,
    case_every_aggregate_float,
    case_time_in_state,
    case_int_and_bool_series,
    case_rollups_equal_raw,
    case_snapshot_subtree,
    case_snapshot_mixed_rates,
    case_last,
    case_export_csv,
    case_export_json,
    case_permissions,
    case_validation,
    case_exact_topic_without_history,
    case_rollups_match_recomputation,
    case_batched_reads_agree,
    case_text_replacing_a_number_leaves_the_rollups,
);
