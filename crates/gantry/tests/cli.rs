//! End-to-end tests of the `gantry` binary with independent peers: the demo
//! plant watched through `mosquitto_sub`, model and config checks, and retained
//! state surviving `kill -9`.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gantry did not open port {port} within 20 s");
}

fn spawn(args: &[&str]) -> Running {
    let child = Command::new(GANTRY)
        .args(args)
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry starts");
    Running(child)
}

fn mosquitto_sub(port: u16, args: &[&str]) -> String {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("mosquitto_sub is installed (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `config` as `dir/gantry.toml`, runs `gantry run` on it, asserts it
/// refuses to start and returns what it printed on stderr.
fn refused_run(dir: &Path, config: &str) -> String {
    let cfg = dir.join("gantry.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(GANTRY)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "gantry run must refuse this config");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success(), "mosquitto_pub {args:?} failed");
}

#[test]
fn demo_plant_is_visible_to_mosquitto_sub_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, ws) = (free_port(), free_port());
    let mut demo = spawn(&[
        "demo",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--mqtt-port",
        &mqtt.to_string(),
        "--ws-port",
        &ws.to_string(),
        "--modbus-base-port",
        "0",
        "--console-port",
        "0",
    ]);
    wait_for_port(mqtt);
    // A new subscriber sees the whole plant at once from retained state:
    // 2 lines x 3 machines x 7 tags.
    let mut snapshot = String::new();
    for _ in 0..50 {
        snapshot = mosquitto_sub(mqtt, &["-t", "acme/#", "-v", "-W", "2", "--retained-only"]);
        let data = snapshot
            .lines()
            .filter(|l| !l.contains("/_sys/") && !l.contains("/_kpi/"));
        if data.count() >= 42 && snapshot.contains("line-1/_kpi/oee ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Data tags, besides the connectors' health records under `_sys` and
    // the live KPIs under `_kpi` (one per KPI for machines, lines, the area
    // and the site).
    assert!(
        snapshot.contains("acme/dallas/packaging/line-1/_kpi/oee {\"timestamp_ms\":"),
        "the demo publishes its KPIs:\n{snapshot}"
    );
    let topics: std::collections::BTreeSet<&str> = snapshot
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(t, _)| t))
        .filter(|t| !t.contains("/_sys/") && !t.contains("/_kpi/"))
        .collect();
    assert_eq!(topics.len(), 42, "every demo tag is retained:\n{snapshot}");
    for machine in ["line-1/filler", "line-1/capper", "line-2/labeler"] {
        for tag in [
            "state",
            "state_reason",
            "good_count",
            "reject_count",
            "speed",
            "temperature",
            "energy",
        ] {
            let t = format!("acme/dallas/packaging/{machine}/{tag}");
            assert!(topics.contains(t.as_str()), "missing {t}");
        }
    }
    let line = snapshot
        .lines()
        .find(|l| l.contains("/filler/energy"))
        .unwrap();
    assert!(
        line.contains("\"timestamp_ms\":") && line.contains("\"value\":"),
        "{line}"
    );
    // The plant changes: the energy meter of a machine moves within a few seconds.
    let energy_topic = "acme/dallas/packaging/line-1/filler/energy";
    let first = mosquitto_sub(mqtt, &["-t", energy_topic, "-C", "1", "-W", "5"]);
    let later = mosquitto_sub(mqtt, &["-t", energy_topic, "-C", "3", "-W", "10"]);
    let last = later.lines().last().unwrap_or_default().to_owned();
    assert_ne!(first.trim(), last.trim(), "the demo plant is live");
    // The data came over Modbus TCP from the simulated PLCs.
    let health = mosquitto_sub(
        mqtt,
        &[
            "-t",
            "acme/_sys/connectors/modbus/line-1-filler-plc",
            "-C",
            "1",
            "-W",
            "5",
        ],
    );
    assert!(health.contains("\"connected\":true"), "{health}");
    assert!(health.contains("\"product_code\":\"filler\""), "{health}");
    // The banner tells the user what to run next.
    let _ = demo.0.kill();
    let mut out = String::new();
    demo.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.contains("mosquitto_sub -h 127.0.0.1"), "{out}");
    assert!(out.contains("simulated PLCs on Modbus TCP"), "{out}");
}

#[test]
fn check_accepts_the_demo_model_and_reports_errors_with_positions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ok = Command::new(GANTRY)
        .args([
            "check",
            root.join("examples/demo-plant.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("6 equipment, 42 tags"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("plant.toml");
    std::fs::write(
        &bad,
        "enterprise = \"acme\"\n[[site]]\nname = \"dallas\"\n[[equipment]]\npath = \"acme/dallas/Line 1/filler\"\n[equipment.tags.speed]\ntype = \"floaty\"\n",
    )
    .unwrap();
    let out = Command::new(GANTRY)
        .args(["check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plant.toml:5:"),
        "error names file and line 5:\n{err}"
    );
    assert!(
        err.contains("equipment[0].path"),
        "error names the field:\n{err}"
    );
    assert!(
        err.contains("plant.toml:7:"),
        "every error is reported:\n{err}"
    );
}

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused_run(
        dir.path(),
        "data_dir = \"d\"\n[mqtt]\nbind = \"127.0.0.1:1883\"\n[limits]\nmax_conections = 5\n",
    );
    assert!(err.contains("gantry.toml:5:"), "{err}");
    assert!(err.contains("max_conections"), "{err}");
}

#[test]
fn default_deny_refuses_anonymous_clients() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("gantry.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = \"data\"\n[mqtt]\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let _g = spawn(&["run", "--config", cfg.to_str().unwrap()]);
    wait_for_port(port);
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "a",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous publish must be refused");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("not authori"), "{err}");

    // The running broker lets an identity in once it is created.
    let mut add = Command::new(GANTRY)
        .args([
            "user",
            "add",
            "otto",
            "--role",
            "ot-engineer",
            "--password-stdin",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().unwrap();
        stdin.write_all(b"correct-horse-battery\n").unwrap();
    }
    let added = add.wait_with_output().unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let publish_as = |password: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "a",
                "-m",
                "x",
            ])
            .args(["-u", "otto", "-P", password])
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = publish_as("correct-horse-battery");
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the new identity never got in");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!publish_as("wrong-password-x").status.success());
}

#[test]
fn retained_state_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("gantry.toml");
    std::fs::write(
        &cfg,
        // No plant model: route every topic instead of dead-lettering it.
        format!("data_dir = \"data\"\n[mqtt]\nbind = \"127.0.0.1:{port}\"\n[auth]\nallow_anonymous = true\n[contracts]\nunmodeled = \"allow\"\n"),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let mut g = spawn(&["run", "--config", &cfg]);
    wait_for_port(port);
    for i in 0..20 {
        mosquitto_pub(
            port,
            &[
                "-t",
                &format!("acme/site/r{i}"),
                "-m",
                &format!("v{i}"),
                "-r",
                "-q",
                "1",
            ],
        );
    }
    mosquitto_pub(port, &["-t", "acme/site/r3", "-m", "", "-r", "-q", "1"]);
    // kill -9: no chance to flush anything on the way out.
    g.0.kill().unwrap();
    g.0.wait().unwrap();
    let _g2 = spawn(&["run", "--config", &cfg]);
    wait_for_port(port);
    let out = mosquitto_sub(port, &["-t", "acme/#", "-v", "-W", "2", "--retained-only"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 19, "19 retained topics after restart:\n{out}");
    assert!(lines.contains(&"acme/site/r7 v7"));
    assert!(
        !out.contains("acme/site/r3 "),
        "deleted topic stays deleted"
    );
}

fn repo_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

#[test]
fn demo_dead_letters_a_wrong_value_that_never_reaches_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, ws) = (free_port(), free_port());
    let _demo = spawn(&[
        "demo",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--mqtt-port",
        &mqtt.to_string(),
        "--ws-port",
        &ws.to_string(),
        "--modbus-base-port",
        "0",
        "--console-port",
        "0",
    ]);
    wait_for_port(mqtt);
    let topic = "acme/dallas/packaging/line-1/filler/speed";
    // A subscriber of the real path, listening while the bad value is sent.
    let watcher = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.to_string(),
            "-t",
            topic,
            "-v",
            "-W",
            "4",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("mosquitto_pub")
        .args([
            "-V",
            "5",
            "-q",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt.to_string(),
            "-t",
            topic,
            "-m",
            "fast",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Payload format invalid"),
        "0x99 for the publisher: {err}"
    );
    assert!(
        err.contains("expected float"),
        "the reason names the rule: {err}"
    );
    let dead = mosquitto_sub(mqtt, &["-t", "acme/_dlq/#", "-v", "-C", "1", "-W", "5"]);
    assert!(dead.starts_with(&format!("acme/_dlq/{topic} ")), "{dead}");
    assert!(
        dead.contains("\"payload\":\"fast\"") && dead.contains("\"rule\":\"type\""),
        "{dead}"
    );
    let seen = watcher.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(
        seen.contains("\"value\":"),
        "the watcher saw the live plant: {seen}"
    );
    assert!(
        !seen.contains("fast"),
        "the invalid value reached a subscriber: {seen}"
    );
}

#[test]
fn run_refuses_a_site_model_that_breaks_the_standard() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let err = refused_run(
        dir.path(),
        &format!(
            "data_dir = \"data\"\nmodel = \"{}\"\nstandard = \"{}\"\n[mqtt]\nbind = \"127.0.0.1:{port}\"\n",
            repo_file("examples/sites/houston.toml"),
            repo_file("examples/acme-standard.toml")
        ),
    );
    assert!(err.contains("houston.toml:48:"), "{err}");
    assert!(err.contains("missing required tag \"speed\""), "{err}");
}

#[test]
fn reload_refuses_a_model_that_breaks_the_standard_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let model = dir.path().join("plant.toml");
    let demo = std::fs::read_to_string(repo_file("examples/demo-plant.toml")).unwrap();
    std::fs::write(&model, &demo).unwrap();
    let cfg = dir.path().join("gantry.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"data\"\nmodel = \"plant.toml\"\nstandard = \"{}\"\n[mqtt]\nbind = \"127.0.0.1:{port}\"\n[auth]\nallow_anonymous = true\n[sys]\ninterval_secs = 1\n",
            repo_file("examples/acme-standard.toml")
        ),
    )
    .unwrap();
    let g = spawn(&["run", "--config", cfg.to_str().unwrap()]);
    wait_for_port(port);
    // Still a valid plant model, but the filler's `speed` now has a unit the
    // standard does not allow.
    let broken = demo.replacen("unit = \"units/min\"", "unit = \"bottles/h\"", 1);
    assert_ne!(broken, demo, "the demo model declares speed in units/min");
    std::fs::write(&model, broken).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &g.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut stats = String::new();
    for _ in 0..20 {
        stats = mosquitto_sub(port, &["-t", "$SYS/broker/contracts", "-C", "1", "-W", "3"]);
        if stats.contains("\"ok\":false") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stats.contains("\"ok\":false"), "reload refused: {stats}");
    assert!(
        stats.contains("plant.toml:"),
        "with the error's position: {stats}"
    );
    // The old model stays in force: a valid speed is accepted and retained.
    mosquitto_pub(
        port,
        &[
            "-t",
            "acme/dallas/packaging/line-1/filler/speed",
            "-m",
            "600.5",
            "-r",
            "-q",
            "1",
        ],
    );
    let now = mosquitto_sub(
        port,
        &[
            "-t",
            "acme/dallas/packaging/line-1/filler/speed",
            "-C",
            "1",
            "-W",
            "3",
        ],
    );
    assert!(now.contains("\"value\":600.5"), "{now}");
}

#[test]
fn reload_moves_retained_values_the_new_model_refuses_to_the_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let model_v1 = r#"
enterprise = "acme"
[[site]]
name = "dallas"
[[equipment]]
path = "acme/dallas/packaging/line-1/filler"
[equipment.tags.speed]
type = "float"
min = 0.0
max = 1200.0
[equipment.tags.state]
type = "enum"
values = ["running", "idle"]
"#;
    let model = dir.path().join("plant.toml");
    std::fs::write(&model, model_v1).unwrap();
    let cfg = dir.path().join("gantry.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"data\"\nmodel = \"plant.toml\"\n[mqtt]\nbind = \"127.0.0.1:{port}\"\n[auth]\nallow_anonymous = true\n[sys]\ninterval_secs = 1\n"
        ),
    )
    .unwrap();
    let g = spawn(&["run", "--config", cfg.to_str().unwrap()]);
    wait_for_port(port);
    let speed = "acme/dallas/packaging/line-1/filler/speed";
    let state = "acme/dallas/packaging/line-1/filler/state";
    mosquitto_pub(port, &["-t", speed, "-m", "1000", "-r", "-q", "1"]);
    mosquitto_pub(port, &["-t", state, "-m", "idle", "-r", "-q", "1"]);
    // The new model narrows the range: the retained 1000 breaks it.
    std::fs::write(&model, model_v1.replace("max = 1200.0", "max = 900.0")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &g.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let mut stats = String::new();
    for _ in 0..20 {
        stats = mosquitto_sub(port, &["-t", "$SYS/broker/contracts", "-C", "1", "-W", "3"]);
        if stats.contains("\"model_generation\":2") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        stats.contains("\"model_generation\":2"),
        "reloaded: {stats}"
    );
    // The live state no longer holds the refused value...
    let live = mosquitto_sub(port, &["-t", speed, "-C", "1", "-W", "2"]);
    assert_eq!(live, "", "no retained speed after the reload");
    // ...which waits, with its reason, in the dead-letter subtree.
    let dead = mosquitto_sub(
        port,
        &["-t", &format!("acme/_dlq/{speed}"), "-C", "1", "-W", "3"],
    );
    assert!(dead.contains("above max 900.0"), "{dead}");
    assert!(dead.contains("model generation 2"), "{dead}");
    assert!(dead.contains("\"rule\":\"range\""), "{dead}");
    // A value the new model still accepts stays.
    let kept = mosquitto_sub(port, &["-t", state, "-C", "1", "-W", "3"]);
    assert!(kept.contains("\"value\":\"idle\""), "{kept}");
}
