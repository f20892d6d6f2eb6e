//! `gantry audit verify|tail|export` against logs written by the library:
//! an intact log verifies, a one-character edit is named by record number.

use std::path::Path;
use std::process::{Command, Output};

use gantry_security::audit::{Actor, AuditEvent, AuditLog, AuditOptions, Category, Source};

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_LOG", "warn")
        .output()
        .expect("run gantry")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A log of `log-opened`, `n` login events and `log-closed`: event i is
/// record i + 2 and its reason is `wrong password #i`.
fn write_log(data_dir: &Path, n: u64) {
    let log = AuditLog::open(&data_dir.join("audit"), AuditOptions::default()).unwrap();
    for i in 0..n {
        let event = AuditEvent::new(
            Category::Authentication,
            "login-refused",
            Actor::human(format!("operator-{i}"), "password"),
            "connect",
            false,
        )
        .source(Source::new(
            Some("192.0.2.10".into()),
            Some(format!("hmi-{i}")),
            Some("mqtt"),
        ))
        .reason(format!("wrong password #{i}"));
        log.append_durable_blocking(event).unwrap();
    }
    log.close();
}

#[test]
fn verify_names_the_altered_record() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    write_log(data, 6);
    let dir = data.to_str().unwrap();

    let ok = gantry(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        stdout(&ok).contains("audit log OK: 8 records, 1 checkpoints"),
        "{}",
        stdout(&ok)
    );

    // Change one character inside record 3's reason.
    let path = data.join("audit").join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines[2].contains("\"seq\":3"));
    assert!(lines[2].contains("wrong password #1"));
    lines[2] = lines[2].replace("wrong password #1", "wrong passw0rd #1");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let broken = gantry(&["audit", "verify", "--data-dir", dir]);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let out = stdout(&broken);
    assert!(
        out.contains(
            "audit log BROKEN at record 3 (line 3): hash does not match its content (altered)"
        ),
        "{out}"
    );
}

#[test]
fn verify_json_and_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(&tmp.path().join("data"), 2);
    let config = tmp.path().join("gantry.toml");
    std::fs::write(&config, "data_dir = \"data\"\n").unwrap();
    let o = gantry(&[
        "audit",
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["records"], 4);
    assert_eq!(report["first_problem"], serde_json::Value::Null);
}

#[test]
fn tail_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    write_log(data, 5);
    let dir = data.to_str().unwrap();

    let tail = gantry(&[
        "audit",
        "tail",
        "-n",
        "2",
        "--format",
        "jsonl",
        "--data-dir",
        dir,
    ]);
    assert_eq!(tail.status.code(), Some(0), "{tail:?}");
    let seqs: Vec<u64> = stdout(&tail)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![6, 7]);

    let text = gantry(&["audit", "tail", "-n", "1", "--data-dir", dir]);
    let line = stdout(&text);
    assert!(
        line.contains("#7 audit.log-closed gantry close OK"),
        "{line}"
    );
    let text = gantry(&["audit", "tail", "-n", "2", "--data-dir", dir]);
    let line = stdout(&text);
    assert!(
        line.contains("#6 authentication.login-refused operator-4 from 192.0.2.10 connect FAILED: wrong password #4"),
        "{line}"
    );

    let export = tmp.path().join("export.jsonl");
    let o = gantry(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--output",
        export.to_str().unwrap(),
        "--data-dir",
        dir,
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        std::fs::read(&export).unwrap(),
        std::fs::read(data.join("audit").join("audit.jsonl")).unwrap()
    );

    let o = gantry(&["audit", "export", "--data-dir", dir]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let all: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0]["event_id"], "audit.log-opened");

    let missing = gantry(&[
        "audit",
        "verify",
        "--data-dir",
        tmp.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no audit log"));
}
