//! Tests of the audit log: the chain and checkpoints, every kind of tampering
//! `verify` must name, crash repair, durability, group commit under
//! concurrency, failing disks and two writers sharing one log.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::record::{self, canonical_json, civil_from_days, format_rfc3339_ms};
use super::writer::Fault;
use super::*;

fn options() -> AuditOptions {
    AuditOptions {
        checkpoint_every_records: 1000,
        checkpoint_every: Duration::from_secs(3600),
        fsync: false,
    }
}

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(
        Category::Authentication,
        "login",
        Actor::human(format!("user-{i}"), "password"),
        "connect",
        i.is_multiple_of(2),
    )
    .source(Source::new(
        Some("10.0.0.7".into()),
        Some(format!("client-{i}")),
        Some("mqtt"),
    ))
    .target("acme/dallas/packaging/line-1")
    .reason(format!("reason-{i}"))
    .correlation(format!("corr-{i}"))
    .details(json!({ "i": i, "ratio": 0.1 + 0.2 }))
}

/// A closed log with `n` events after `log-opened` (so event i is record
/// i + 2 when numbering events from 0), followed by `log-closed`.
fn make_log(dir: &Path, n: u64, opts: AuditOptions) {
    let log = AuditLog::open(dir, opts).expect("open");
    for i in 0..n {
        log.append(event(i));
    }
    log.close();
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("audit.jsonl")
}

fn lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(log_path(dir))
        .expect("read log")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    fs::write(log_path(dir), s).expect("write log");
}

fn problem_of(dir: &Path) -> Problem {
    let report = verify(dir).expect("verify runs");
    report.first_problem.expect("a problem is reported")
}

fn assert_ok(dir: &Path) -> VerifyReport {
    let report = verify(dir).expect("verify runs");
    assert!(
        report.first_problem.is_none(),
        "unexpected problem: {}",
        report
            .first_problem
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    report
}

fn seqs(dir: &Path) -> Vec<u64> {
    read_records(dir)
        .expect("records")
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

fn of_type(dir: &Path, ty: &str) -> Vec<Value> {
    read_records(dir)
        .expect("records")
        .into_iter()
        .filter(|r| r["type"] == ty)
        .collect()
}

#[test]
fn append_and_verify_ok() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    for i in 0..10 {
        log.append(event(i));
    }
    let seq = log.append_durable_blocking(event(10)).unwrap();
    assert_eq!(seq, 12);
    log.close();

    let report = assert_ok(dir.path());
    assert_eq!(report.records, 13); // opened + 11 + closed
    assert_eq!(report.last_seq, 13);
    assert_eq!(report.checkpoints, 1); // the one written at close
    assert_eq!(report.last_checkpoint_seq, 13);

    let records = read_records(dir.path()).unwrap();
    assert_eq!(records[0]["event_id"], "audit.log-opened");
    assert_eq!(records[12]["event_id"], "audit.log-closed");
    let r = &records[1];
    assert_eq!(r["seq"], 2);
    assert_eq!(r["category"], "authentication");
    assert_eq!(r["type"], "login");
    assert_eq!(r["event_id"], "authentication.login");
    assert_eq!(
        r["actor"],
        json!({"id": "user-0", "kind": "human", "auth_method": "password"})
    );
    assert_eq!(
        r["source"],
        json!({"ip": "10.0.0.7", "client_id": "client-0", "transport": "mqtt"})
    );
    assert_eq!(r["target"], "acme/dallas/packaging/line-1");
    assert_eq!(r["action"], "connect");
    assert_eq!(r["outcome"], json!({"success": true, "reason": "reason-0"}));
    assert_eq!(r["correlation_id"], "corr-0");
    assert_eq!(r["details"]["i"], 0);
    assert_eq!(r["prev_hash"], records[0]["hash"]);
    let log_id = fs::read_to_string(dir.path().join("log-id")).unwrap();
    assert_eq!(r["log_id"], log_id.trim());
    let ts_ms = r["ts_ms"].as_u64().unwrap();
    assert_eq!(r["ts_utc"], format_rfc3339_ms(ts_ms));
}

/// Re-implements verification from the documented rules only: parse each
/// line, drop `hash`, canonical JSON, chain from `SHA-256("audit-v1" ||
/// log_id)`.
#[test]
fn chain_follows_the_documented_rules() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 5, options());
    let log_id = fs::read_to_string(dir.path().join("log-id")).unwrap();
    let log_id = log_id.trim();
    let mut prev: [u8; 32] = Sha256::new()
        .chain_update(b"audit-v1")
        .chain_update(log_id.as_bytes())
        .finalize()
        .into();
    for line in lines(dir.path()) {
        let mut v: Value = serde_json::from_str(&line).unwrap();
        let stored = v.as_object_mut().unwrap().remove("hash").unwrap();
        assert_eq!(v["prev_hash"], hex::encode(prev));
        let body = canonical_json(&v);
        // The line is the body with the hash inserted before its last brace.
        assert_eq!(
            line,
            format!("{},\"hash\":{}}}", &body[..body.len() - 1], stored)
        );
        let h: [u8; 32] = Sha256::new()
            .chain_update([0u8])
            .chain_update(prev)
            .chain_update(body.as_bytes())
            .finalize()
            .into();
        assert_eq!(stored, hex::encode(h));
        prev = h;
    }
}

#[test]
fn reopen_resumes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 3, options());
    let log_id = fs::read_to_string(dir.path().join("log-id")).unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.append_durable_blocking(event(3)).unwrap(), 7);
    assert_eq!(log.health().last_seq, 7);
    drop(log); // the last handle closes the log too
    make_log(dir.path(), 2, options());

    assert_eq!(
        fs::read_to_string(dir.path().join("log-id")).unwrap(),
        log_id
    );
    let report = assert_ok(dir.path());
    assert_eq!(report.records, 12); // 5 + 3 + 4
    assert_eq!(seqs(dir.path()), (1..=12).collect::<Vec<_>>());
    assert_eq!(of_type(dir.path(), "log-opened").len(), 3);
    assert_eq!(of_type(dir.path(), "log-closed").len(), 3);
    assert_eq!(report.checkpoints, 3);
}

#[test]
fn altered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 8, options());
    let mut l = lines(dir.path());
    // Record 3 is event 1.
    assert!(l[2].contains("\"reason\":\"reason-1\""));
    l[2] = l[2].replace("\"reason\":\"reason-1\"", "\"reason\":\"reason-7\"");
    write_lines(dir.path(), &l);

    let p = problem_of(dir.path());
    assert_eq!(p.file, AuditFile::Log);
    assert_eq!((p.line, p.seq), (3, Some(3)));
    assert_eq!(
        p.to_string(),
        "record 3 (line 3): hash does not match its content (altered)"
    );
}

#[test]
fn reformatted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 4, options());
    let mut l = lines(dir.path());
    let v: Value = serde_json::from_str(&l[3]).unwrap();
    l[3] = serde_json::to_string_pretty(&v).unwrap().replace('\n', " ");
    write_lines(dir.path(), &l);
    let p = problem_of(dir.path());
    assert_eq!((p.file, p.line, p.seq), (AuditFile::Log, 4, Some(4)));
}

#[test]
fn deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 8, options());
    let mut l = lines(dir.path());
    l.remove(4); // record 5
    write_lines(dir.path(), &l);

    let p = problem_of(dir.path());
    assert_eq!((p.line, p.seq), (5, Some(6)));
    assert_eq!(
        p.to_string(),
        "record 6 (line 5): prev_hash does not link to record 4 (deleted or reordered)"
    );
}

#[test]
fn deleted_first_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 3, options());
    let mut l = lines(dir.path());
    l.remove(0);
    write_lines(dir.path(), &l);
    let p = problem_of(dir.path());
    assert_eq!((p.line, p.seq), (1, Some(2)));
    assert!(p.what.contains("genesis"), "{p}");
}

#[test]
fn swapped_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 8, options());
    let mut l = lines(dir.path());
    l.swap(4, 5); // records 5 and 6
    write_lines(dir.path(), &l);

    let p = problem_of(dir.path());
    assert_eq!((p.line, p.seq), (5, Some(6)));
    assert!(p.what.contains("does not link to record 4"), "{p}");
}

#[test]
fn line_that_is_not_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 6, options());
    let mut l = lines(dir.path());
    l[3] = "this is not a record".into();
    write_lines(dir.path(), &l);
    let p = problem_of(dir.path());
    assert_eq!((p.file, p.line, p.seq), (AuditFile::Log, 4, None));
    assert!(
        p.to_string().starts_with("line 4: not a JSON record"),
        "{p}"
    );
}

#[test]
fn truncated_tail_after_a_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AuditOptions {
        checkpoint_every_records: 5,
        ..options()
    };
    let log = AuditLog::open(dir.path(), opts.clone()).unwrap();
    for i in 0..20 {
        log.append_durable_blocking(event(i)).unwrap();
    }
    log.close();
    let report = assert_ok(dir.path());
    assert_eq!(report.last_checkpoint_seq, 22);
    assert!(report.checkpoints >= 2);

    let mut l = lines(dir.path());
    l.truncate(10);
    write_lines(dir.path(), &l);
    let p = problem_of(dir.path());
    assert_eq!(p.file, AuditFile::Checkpoints);
    assert!(
        p.what
            .ends_with("but the log ends at record 10 (truncated)"),
        "{p}"
    );
    let cp: Value = serde_json::from_str(
        fs::read_to_string(dir.path().join("checkpoints.jsonl"))
            .unwrap()
            .lines()
            .nth(p.line as usize - 1)
            .unwrap(),
    )
    .unwrap();
    // The first checkpoint past the cut is named.
    assert!(cp["seq"].as_u64().unwrap() > 10);
    assert_eq!(p.seq, cp["seq"].as_u64());

    // Re-opening continues after the cut; the checkpoint still exposes it.
    make_log(dir.path(), 15, opts);
    let p = problem_of(dir.path());
    assert_eq!(p.file, AuditFile::Checkpoints);
    assert!(p.what.contains("(log rewritten)"), "{p}");
    let opened = of_type(dir.path(), "log-opened");
    let reason = opened[1]["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("(truncated)"), "{reason}");
}

#[test]
fn cutting_only_the_last_record_is_detected_after_close() {
    // `close` checkpoints the final record, so even it cannot be cut
    // silently. (Records after the last checkpoint of a log that is still
    // open can be: checkpoint often, and copy checkpoints off the machine.)
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 5, options());
    let mut l = lines(dir.path());
    l.truncate(6);
    write_lines(dir.path(), &l);
    let p = problem_of(dir.path());
    assert_eq!(p.file, AuditFile::Checkpoints);
    assert!(
        p.what
            .ends_with("signed record 7 but the log ends at record 6 (truncated)"),
        "{p}"
    );
}

#[test]
fn tampered_checkpoint_signature_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 3, options());
    make_log(dir.path(), 3, options());
    let path = dir.path().join("checkpoints.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    let mut cps: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(cps.len(), 2);
    let mut cp: Value = serde_json::from_str(&cps[1]).unwrap();
    let sig = cp["signature"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    cp["signature"] = Value::from(format!("{flipped}{}", &sig[1..]));
    cps[1] = canonical_json(&cp);
    fs::write(&path, cps.join("\n") + "\n").unwrap();
    let p = problem_of(dir.path());
    assert_eq!(p.to_string(), "checkpoint 2: bad signature");

    // A checkpoint moved to a later record no longer matches its signature.
    let mut cp: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    cp["seq"] = Value::from(cp["seq"].as_u64().unwrap() + 100);
    cps[1] = canonical_json(&cp);
    fs::write(&path, cps.join("\n") + "\n").unwrap();
    assert_eq!(
        problem_of(dir.path()).to_string(),
        "checkpoint 2: bad signature"
    );
}

#[test]
fn checkpoint_signed_by_another_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 3, options());
    // The trusted public key is not the one the checkpoints were signed
    // with (a replaced key pair, or checkpoints from elsewhere).
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    fs::write(
        dir.path().join("signing-key.pub"),
        hex::encode(other.verifying_key().to_bytes()),
    )
    .unwrap();
    let p = problem_of(dir.path());
    assert_eq!(p.file, AuditFile::Checkpoints);
    assert!(p.what.contains("another key"), "{p}");
}

#[test]
fn torn_final_line_is_cut_on_open_and_nothing_complete_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 5, options());
    let complete = lines(dir.path());
    // A crash in the middle of writing the next record.
    let mut text = fs::read_to_string(log_path(dir.path())).unwrap();
    let next = &complete[3];
    text.push_str(&next[..next.len() / 2]);
    fs::write(log_path(dir.path()), &text).unwrap();

    let r = verify(dir.path()).unwrap();
    assert!(r.is_ok() && r.incomplete_tail, "{r:?}");

    let log = AuditLog::open(dir.path(), options()).unwrap();
    log.append_durable_blocking(event(99)).unwrap();
    log.close();
    let after = lines(dir.path());
    assert_eq!(&after[..complete.len()], &complete[..]);
    assert_eq!(after.len(), complete.len() + 3);
    let report = assert_ok(dir.path());
    assert!(!report.incomplete_tail);
    let opened = of_type(dir.path(), "log-opened");
    assert_eq!(opened[1]["details"]["repaired_bytes"], next.len() / 2);
}

#[test]
fn complete_final_record_without_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 4, options());
    let complete = lines(dir.path());
    let text = fs::read_to_string(log_path(dir.path())).unwrap();
    fs::write(log_path(dir.path()), text.trim_end_matches('\n')).unwrap();

    let log = AuditLog::open(dir.path(), options()).unwrap();
    log.close();
    let after = lines(dir.path());
    assert_eq!(&after[..complete.len()], &complete[..]);
    assert_ok(dir.path());
    assert_eq!(
        seqs(dir.path()),
        (1..=complete.len() as u64 + 2).collect::<Vec<_>>()
    );
}

#[test]
fn cut_mid_record_loses_only_that_record() {
    // A crash can tear the last record written; everything before it stays.
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 6, options());
    let complete = lines(dir.path());
    let len = fs::metadata(log_path(dir.path())).unwrap().len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(log_path(dir.path()))
        .unwrap();
    f.set_len(len - 20).unwrap();
    drop(f);
    // The checkpoint at close signed the torn record: verify says so.
    assert!(problem_of(dir.path()).what.contains("(truncated)"));

    let log = AuditLog::open(dir.path(), options()).unwrap();
    log.close();
    let after = lines(dir.path());
    assert_eq!(
        &after[..complete.len() - 1],
        &complete[..complete.len() - 1]
    );
    assert_eq!(seqs(dir.path()).len(), complete.len() + 1);
}

#[test]
fn append_durable_blocking_returns_after_the_record_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        AuditOptions {
            fsync: true,
            ..options()
        },
    )
    .unwrap();
    for i in 0..5 {
        let seq = log.append_durable_blocking(event(i)).unwrap();
        let records = read_records(dir.path()).unwrap();
        let r = records
            .iter()
            .find(|r| r["seq"] == seq)
            .expect("the record is in the file when append_durable returns");
        assert_eq!(r["actor"]["id"], format!("user-{i}"));
        assert_eq!(log.health().last_seq, seq);
    }
    log.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_durable_returns_after_the_record_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        AuditOptions {
            fsync: true,
            ..options()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let log = log.clone();
        let dir = dir.path().to_path_buf();
        tasks.push(tokio::spawn(async move {
            let seq = log.append_durable(event(i)).await.unwrap();
            let text = fs::read_to_string(dir.join("audit.jsonl")).unwrap();
            // (A line being written right now may be incomplete.)
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["seq"] == seq && v["actor"]["id"] == format!("user-{i}"));
            assert!(found, "record {seq} not in the file after append_durable");
            seq
        }));
    }
    let mut seen = BTreeSet::new();
    for t in tasks {
        assert!(seen.insert(t.await.unwrap()));
    }
    assert_eq!(seen, (2..=21).collect());
    log.close();
    assert_ok(dir.path());
}

#[test]
fn group_commit_with_many_concurrent_appenders() {
    const THREADS: u64 = 8;
    const EACH: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        AuditOptions {
            fsync: true,
            checkpoint_every_records: 700,
            ..options()
        },
    )
    .unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let e = event(i).details(json!({ "thread": t, "i": i }));
                    let seq = if i.is_multiple_of(2) {
                        log.append_durable_blocking(e).unwrap()
                    } else {
                        log.append(e)
                    };
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        let seqs = h.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "per-thread seqs increase"
        );
        for s in seqs {
            assert!(all.insert(s), "seq {s} handed out twice");
        }
    }
    assert_eq!(all, (2..=THREADS * EACH + 1).collect());
    let health = log.health();
    assert!(!health.failing);
    log.close();

    let report = assert_ok(dir.path());
    assert_eq!(report.records, THREADS * EACH + 2);
    assert!(report.checkpoints >= 2);
    // Every event exactly once, at the seq append returned for it.
    let mut markers = BTreeSet::new();
    for r in read_records(dir.path()).unwrap() {
        if r["type"] == "login" {
            let m = (r["details"]["thread"].as_u64(), r["details"]["i"].as_u64());
            assert!(markers.insert(m), "{m:?} written twice");
        }
    }
    assert_eq!(markers.len() as u64, THREADS * EACH);
}

#[test]
fn failing_disk_returns_errors_promptly_and_loses_nothing() {
    for fault in [Fault::BeforeWrite, Fault::HalfWrite, Fault::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), options()).unwrap();
        log.append_durable_blocking(event(0)).unwrap();
        let size_before = fs::metadata(log_path(dir.path())).unwrap().len();
        log.inject_fault(fault);
        for i in 1..6 {
            log.append(event(i));
        }
        let err = log.append_durable_blocking(event(6)).unwrap_err();
        assert!(
            matches!(err, AuditError::WriteFailed { .. }),
            "{fault:?}: {err}"
        );
        // The failed attempts left what such a disk leaves behind: nothing,
        // a torn batch, or a whole unsynced batch.
        let size_failed = fs::metadata(log_path(dir.path())).unwrap().len();
        assert_eq!(
            size_failed > size_before,
            fault != Fault::BeforeWrite,
            "{fault:?}"
        );
        let h = log.health();
        assert!(h.failing, "{fault:?}");
        assert!(h.last_error.as_deref().unwrap().contains("injected"));
        assert!(h.pending >= 1);
        // Known failing: the next durable append fails at once.
        assert!(log.append_durable_blocking(event(7)).is_err());

        log.inject_fault(Fault::None);
        let seq = wait_durable(&log, event(8));
        log.close();

        let report = assert_ok(dir.path());
        let records = read_records(dir.path()).unwrap();
        for i in 0..=8u64 {
            let n = records
                .iter()
                .filter(|r| r["type"] == "login" && r["details"]["i"] == i)
                .count();
            assert_eq!(n, 1, "{fault:?}: event {i} written {n} times");
        }
        assert!(
            records
                .iter()
                .any(|r| r["seq"] == seq && r["details"]["i"] == 8)
        );
        let failed = of_type(dir.path(), "write-failed");
        assert_eq!(failed.len(), 1, "{fault:?}");
        assert_eq!(failed[0]["outcome"]["success"], false);
        assert_eq!(report.records as usize, records.len());
    }
}

/// Retries `append_durable_blocking` until the writer's back-off has passed
/// and the disk works again.
fn wait_durable(log: &AuditLog, e: AuditEvent) -> u64 {
    let first = log.append(e);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = AuditEvent::new(Category::System, "probe", Actor::system(), "probe", true);
        if log.append_durable_blocking(probe).is_ok() {
            return first;
        }
        assert!(Instant::now() < deadline, "the writer never recovered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_writers_share_one_log() {
    // Stands in for the broker and a CLI command in another process: each
    // open takes the directory lock per batch and resumes after the other.
    let dir = tempfile::tempdir().unwrap();
    let a = AuditLog::open(dir.path(), options()).unwrap();
    let b = AuditLog::open(dir.path(), options()).unwrap();
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let (log, name) = if i.is_multiple_of(3) {
            (&b, "b")
        } else {
            (&a, "a")
        };
        let e = event(i).details(json!({ "writer": name, "i": i }));
        let seq = log.append_durable_blocking(e).unwrap();
        expected.push((seq, i));
    }
    let ta = std::thread::spawn({
        let a = a.clone();
        move || {
            for i in 0..200 {
                a.append(event(1000 + i));
            }
        }
    });
    let tb = std::thread::spawn({
        let b = b.clone();
        move || {
            for i in 0..200 {
                b.append(event(2000 + i));
            }
        }
    });
    ta.join().unwrap();
    tb.join().unwrap();
    a.close();
    b.close();

    let report = assert_ok(dir.path());
    assert_eq!(report.records, 2 + 40 + 400 + 2);
    let records = read_records(dir.path()).unwrap();
    // append_durable returned the seq the record really got.
    for (seq, i) in expected {
        let r = &records[seq as usize - 1];
        assert_eq!(r["seq"], seq);
        assert_eq!(r["details"]["i"], i);
    }
}

#[test]
fn checkpoints_follow_the_record_count_and_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        AuditOptions {
            checkpoint_every_records: 10,
            ..options()
        },
    )
    .unwrap();
    for i in 0..35 {
        log.append_durable_blocking(event(i)).unwrap();
    }
    log.close();
    let report = assert_ok(dir.path());
    assert!(report.checkpoints >= 4, "{report:?}");

    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        dir.path(),
        AuditOptions {
            checkpoint_every: Duration::from_millis(20),
            ..options()
        },
    )
    .unwrap();
    let seq = log.append_durable_blocking(event(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.health().last_checkpoint_seq < seq {
        assert!(Instant::now() < deadline, "no timed checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(verify(dir.path()).unwrap().checkpoints >= 1);
    log.close();
}

#[tokio::test]
async fn closed_log_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    log.close();
    assert_eq!(log.append(event(0)), 0);
    assert!(matches!(
        log.append_durable(event(1)).await,
        Err(AuditError::Closed)
    ));
    assert!(matches!(
        log.append_durable_blocking(event(2)),
        Err(AuditError::Closed)
    ));
    assert_eq!(assert_ok(dir.path()).records, 2);
}

#[test]
fn dropping_the_last_handle_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    let other = log.clone();
    log.append(event(0));
    drop(log);
    other.append(event(1));
    drop(other);
    let report = assert_ok(dir.path());
    assert_eq!(report.records, 4);
    assert_eq!(report.last_checkpoint_seq, 4);
    assert_eq!(of_type(dir.path(), "log-closed").len(), 1);
}

#[test]
fn key_files_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 0, options());
    let key = fs::read_to_string(dir.path().join("signing-key")).unwrap();
    let public = fs::read_to_string(dir.path().join("signing-key.pub")).unwrap();
    assert_eq!(key.trim().len(), 64);
    let mut seed = [0u8; 32];
    hex::decode_to_slice(key.trim(), &mut seed).unwrap();
    let derived = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    assert_eq!(hex::encode(derived.to_bytes()), public.trim());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("signing-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A missing private key is refused rather than silently replaced.
    fs::remove_file(dir.path().join("signing-key")).unwrap();
    let err = AuditLog::open(dir.path(), options()).unwrap_err();
    assert!(err.to_string().contains("signing key is missing"), "{err}");
}

#[test]
fn verify_tail_and_export_read_only() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(verify(dir.path()), Err(AuditError::NotFound(_))));
    make_log(dir.path(), 30, options());
    let tail = tail_records(dir.path(), 5).unwrap();
    assert_eq!(
        tail.iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![28, 29, 30, 31, 32]
    );
    assert_eq!(tail_records(dir.path(), 500).unwrap().len(), 32);
    let mut out = Vec::new();
    assert_eq!(copy_lines(dir.path(), &mut out).unwrap(), 32);
    assert_eq!(out, fs::read(log_path(dir.path())).unwrap());
}

#[test]
fn canonical_json_sorts_keys_and_escapes() {
    let v = json!({"b": 1, "a": {"z": [true, null, 1.5], "y": "x\"\\\n\u{1}é/"}, "A": -3});
    assert_eq!(
        canonical_json(&v),
        r#"{"A":-3,"a":{"y":"x\"\\\n\u0001é/","z":[true,null,1.5]},"b":1}"#
    );
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        format_rfc3339_ms(1_700_000_000_123),
        "2023-11-14T22:13:20.123Z"
    );
    assert_eq!(
        format_rfc3339_ms(951_782_400_000),
        "2000-02-29T00:00:00.000Z"
    );
    assert_eq!(
        format_rfc3339_ms(68_169_600_000),
        "1972-02-29T00:00:00.000Z"
    );
    assert_eq!(
        format_rfc3339_ms(4_107_542_399_999),
        "2100-02-28T23:59:59.999Z"
    );
    assert_eq!(
        format_rfc3339_ms(253_402_300_799_999),
        "9999-12-31T23:59:59.999Z"
    );
}

/// Days from (y, m, d), counted the slow way, to check `civil_from_days`.
fn days_from_civil_slow(y: i64, m: u32, d: u32) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut days: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
    for mm in 1..m {
        days += month_days[mm as usize - 1] + i64::from(mm == 2 && leap(y));
    }
    days + i64::from(d) - 1
}

proptest! {
    #[test]
    fn civil_from_days_inverts(days in 0i64..200_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
        prop_assert_eq!(days_from_civil_slow(y, m, d), days);
    }

    #[test]
    fn canonical_strings_parse_back(s in any::<String>()) {
        let mut out = String::new();
        record::write_json_string(&s, &mut out);
        prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s.clone());
        // The same bytes serde_json prints.
        prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn records_with_any_text_verify(reason in any::<String>(), target in "\\PC{0,40}", x in any::<f64>()) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), options()).unwrap();
        log.append(event(0).reason(reason).target(target).details(json!({"x": x})));
        log.close();
        let r = verify(dir.path()).unwrap();
        prop_assert!(r.is_ok(), "{:?}", r.first_problem);
        prop_assert_eq!(r.records, 3);
    }
}

#[test]
fn queued_appends_get_consecutive_seqs() {
    // A burst of appends is queued without waiting and written in order; one
    // durable append after it covers them all.
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    let seqs: Vec<u64> = (0..1000).map(|i| log.append(event(i))).collect();
    assert_eq!(seqs, (2..=1001).collect::<Vec<_>>());
    let last = log.append_durable_blocking(event(1000)).unwrap();
    assert_eq!(last, 1002);
    let h = log.health();
    assert_eq!(h.pending, 0);
    assert_eq!(h.records_written, 1002);
    log.close();
    assert_ok(dir.path());
}

#[test]
fn submit_appends_next_to_an_open_log() {
    let dir = tempfile::tempdir().unwrap();
    // On a fresh directory it creates the log.
    assert_eq!(submit(dir.path(), event(0)).unwrap(), 1);
    let log = AuditLog::open(dir.path(), options()).unwrap();
    let a = log.append_durable_blocking(event(1)).unwrap();
    let b = submit(dir.path(), event(2)).unwrap();
    assert_eq!(b, a + 1);
    // The open log continues after the other writer's record.
    let c = log.append_durable_blocking(event(3)).unwrap();
    assert_eq!(c, b + 1);
    log.close();
    let report = assert_ok(dir.path());
    assert_eq!(report.records, 6);
    assert!(report.checkpoints >= 3);
    let records = read_records(dir.path()).unwrap();
    for (seq, i) in [(1, 0), (a, 1), (b, 2), (c, 3)] {
        assert_eq!(records[seq as usize - 1]["details"]["i"], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_gate_opens_when_the_record_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), options()).unwrap();
    let seq = log.append(event(0));
    let mut gate = log.durable_gate(seq);
    tokio::time::timeout(Duration::from_secs(30), gate.wait())
        .await
        .expect("gate opens");
    assert!(gate.is_open());
    assert!(log.durable_seq() >= seq);
    assert!(
        read_records(dir.path())
            .unwrap()
            .iter()
            .any(|r| r["seq"] == seq)
    );

    // While the disk fails the gate stays shut; it opens after recovery.
    log.inject_fault(Fault::BeforeWrite);
    let seq = log.append(event(1));
    let gate = log.durable_gate(seq);
    assert!(log.append_durable(event(2)).await.is_err());
    assert!(!gate.is_open());
    log.inject_fault(Fault::None);
    let mut gate2 = gate.clone();
    tokio::time::timeout(Duration::from_secs(30), gate2.wait())
        .await
        .expect("gate opens after recovery");
    log.close();
    assert_ok(dir.path());
}
