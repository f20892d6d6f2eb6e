//! Transport security end to end: certificates from `gantry cert`, `gantry
//! run` with `[tls]` and `[mqtts]`, and Mosquitto's own clients over TLS on
//! 127.0.0.1: server-only TLS, client certificates mapped to identities, and
//! refused handshakes (no certificate, expired, another CA, plain TCP on the
//! TLS port) that never disturb the next client. Every wait is bounded; no
//! assertion depends on wall-clock timing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `gantry ARGS`, which must succeed; returns its standard output.
fn gantry(args: &[&str]) -> String {
    let out = Command::new(GANTRY)
        .args(args)
        .output()
        .expect("gantry runs");
    assert!(
        out.status.success(),
        "gantry {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A tempdir with a CA, a server certificate, a client certificate for
/// identity `plc-1` (registered as a certificate identity) and a config.
struct Site {
    dir: tempfile::TempDir,
    port: u16,
}

impl Site {
    fn new(require_client_cert: bool, extra_config: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = Site { dir, port };
        let certs = site.path("certs");
        let certs = certs.to_str().unwrap();
        let out = gantry(&["cert", "ca", "--out", certs]);
        assert!(
            out.contains("ca.pem") && out.contains("ca-key.pem"),
            "{out}"
        );
        let out = gantry(&["cert", "server", "--ca", certs, "--out", certs]);
        assert!(
            out.contains("server.pem") && out.contains("[tls] cert"),
            "{out}"
        );
        let out = gantry(&[
            "cert", "client", "--ca", certs, "--out", certs, "--name", "plc-1",
        ]);
        assert!(out.contains("plc-1.pem") && out.contains("--cert"), "{out}");
        let config = format!(
            r#"data_dir = "data"

[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = "certs/ca.pem"
require_client_cert = {require_client_cert}

[mqtts]
bind = "127.0.0.1:{port}"

[auth]
allow_anonymous = true

[contracts]
unmodeled = "allow"
{extra_config}"#
        );
        std::fs::write(site.config(), config).unwrap();
        let config = site.config();
        gantry(&[
            "user",
            "add",
            "plc-1",
            "--role",
            "admin",
            "--kind",
            "device",
            "--certificate",
            "--no-password",
            "--config",
            config.to_str().unwrap(),
        ]);
        site
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config(&self) -> PathBuf {
        self.path("gantry.toml")
    }

    fn cert(&self, name: &str) -> String {
        self.path("certs").join(name).to_str().unwrap().to_owned()
    }

    fn start(&self) -> Running {
        let log = self.path("gantry.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(GANTRY)
            .args(["run", "--config", self.config().to_str().unwrap()])
            .env("GANTRY_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("gantry starts");
        let running = Running { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        // The listener is bound before this line is logged.
        while !running.log().contains("MQTT over TLS listening on") {
            assert!(
                Instant::now() < deadline,
                "gantry did not start:\n{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }

    /// A Mosquitto client (`mosquitto_pub` or `mosquitto_sub`) on the TLS
    /// port, trusting the site CA, with extra arguments.
    fn mosquitto(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--cafile", &self.cert("ca.pem")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{tool} is installed (scripts/test.sh installs it): {e}"))
    }

    /// `mosquitto_sub` for one message (waiting at most `secs`).
    fn sub_one(&self, topic: &str, secs: u32, extra: &[&str]) -> Output {
        let w = secs.to_string();
        let mut args = vec!["-t", topic, "-C", "1", "-W", &w];
        args.extend_from_slice(extra);
        self.mosquitto("mosquitto_sub", &args)
    }

    fn client_cert_args(&self, name: &str) -> [String; 4] {
        [
            "--cert".to_owned(),
            self.cert(&format!("{name}.pem")),
            "--key".to_owned(),
            self.cert(&format!("{name}-key.pem")),
        ]
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Signs a client certificate for `cn` with the CA in `ca_dir` (made by
/// `gantry cert ca`), valid only in the past. `gantry cert` never makes one.
fn expired_client_cert(ca_dir: &Path, out: &Path, cn: &str) {
    let ca_der = CertificateDer::from_pem_file(ca_dir.join("ca.pem")).unwrap();
    let ca_cn = gantry_broker::tls::common_name(&ca_der).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap()).unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, ca_cn);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let issued = gantry_broker::tls::certificate_fields(cert.der()).unwrap();
    assert_eq!(
        issued.issuer,
        gantry_broker::tls::certificate_fields(&ca_der)
            .unwrap()
            .subject,
        "the expired certificate must chain to the CA, so only its dates are wrong"
    );
    std::fs::write(out.join(format!("{cn}-expired.pem")), cert.pem()).unwrap();
    std::fs::write(
        out.join(format!("{cn}-expired-key.pem")),
        key.serialize_pem(),
    )
    .unwrap();
}

#[test]
fn mosquitto_over_tls_with_optional_client_certificates_mapped_to_identities() {
    let site = Site::new(false, "");
    let broker = site.start();
    assert!(
        !broker.log().contains("insecure (no TLS)"),
        "no plain listener is configured:\n{}",
        broker.log()
    );
    let topic = "acme/dallas/tls/check";

    // Server-only TLS: an anonymous client (no certificate) publishes
    // retained, another one reads it back.
    let publish = site.mosquitto(
        "mosquitto_pub",
        &["-t", topic, "-m", "over-tls", "-r", "-q", "1"],
    );
    assert!(publish.status.success(), "{}", text(&publish));
    let read = site.sub_one(topic, 10, &[]);
    assert!(read.status.success(), "{}", text(&read));
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "over-tls");

    // A client certificate for identity plc-1 (registered with
    // --certificate) logs in as plc-1.
    let plc = site.client_cert_args("plc-1");
    let read = site.sub_one(topic, 10, &strs(&plc));
    assert!(read.status.success(), "{}", text(&read));
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "over-tls");

    // A valid certificate from the same CA for a name that is no
    // certificate identity passes the handshake but is refused at CONNECT.
    let certs = site.cert("");
    gantry(&[
        "cert", "client", "--ca", &certs, "--out", &certs, "--name", "stranger",
    ]);
    let stranger = site.client_cert_args("stranger");
    let read = site.sub_one(topic, 5, &strs(&stranger));
    assert!(!read.status.success(), "{}", text(&read));
    assert!(read.stdout.is_empty(), "{}", text(&read));

    // Plain MQTT on the TLS port fails, and harms nobody.
    let plain = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &site.port.to_string()])
        .args(["-t", topic, "-m", "plain", "-r"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!plain.status.success(), "{}", text(&plain));
    let read = site.sub_one(topic, 10, &strs(&plc));
    assert!(read.status.success(), "{}", text(&read));
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "over-tls");
    let log = broker.log();
    assert!(
        !log.contains("Illegal SNI"),
        "rustls' per-connection warnings are quiet:\n{log}"
    );
}

#[test]
fn required_client_certificates_refuse_missing_expired_and_foreign_ones() {
    let plain = free_port();
    let site = Site::new(true, &format!("\n[mqtt]\nbind = \"127.0.0.1:{plain}\"\n"));
    let certs = site.path("certs");
    expired_client_cert(&certs, &certs, "plc-1");
    let other = site.path("other-ca");
    let other = other.to_str().unwrap();
    gantry(&["cert", "ca", "--out", other, "--name", "Some other CA"]);
    gantry(&[
        "cert", "client", "--ca", other, "--out", other, "--name", "plc-1",
    ]);

    let broker = site.start();
    let warning = format!(
        "plain MQTT listener on 127.0.0.1:{plain} is insecure (no TLS); configure [tls] and [mqtts]"
    );
    let log = broker.wait_for_log(&warning);
    assert!(log.contains(&warning), "{log}");
    let topic = "acme/dallas/tls/required";
    let plc = site.client_cert_args("plc-1");
    let mut args = strs(&plc);
    args.extend_from_slice(&["-t", topic, "-m", "with-cert", "-r", "-q", "1"]);
    let publish = site.mosquitto("mosquitto_pub", &args);
    assert!(publish.status.success(), "{}", text(&publish));

    let expired = site.client_cert_args("plc-1-expired");
    let foreign = [
        "--cert".to_owned(),
        format!("{other}/plc-1.pem"),
        "--key".to_owned(),
        format!("{other}/plc-1-key.pem"),
    ];
    let refused: [(&str, Vec<&str>, &str); 3] = [
        ("no certificate", vec![], "no client certificate presented"),
        ("expired", strs(&expired), "client certificate expired"),
        ("another CA", strs(&foreign), "unknown CA"),
    ];
    for (what, extra, reason) in refused {
        let read = site.sub_one(topic, 5, &extra);
        assert!(!read.status.success(), "{what}: {}", text(&read));
        assert!(read.stdout.is_empty(), "{what}: {}", text(&read));
        let log = broker.wait_for_log(reason);
        assert!(
            log.contains(reason),
            "{what}: the refusal is logged with its reason {reason:?}:\n{log}"
        );
        // The next valid client is served.
        let read = site.sub_one(topic, 10, &strs(&plc));
        assert!(read.status.success(), "after {what}: {}", text(&read));
        assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "with-cert");
    }
}

#[test]
fn tls_config_errors_name_the_section_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        let path = dir.path().join("gantry.toml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(GANTRY)
            .args(["run", "--config", path.to_str().unwrap()])
            .env("GANTRY_LOG", "error")
            .output()
            .unwrap();
        assert!(!out.status.success(), "gantry run must refuse:\n{config}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("data_dir = \"d\"\n[mqtts]\nbind = \"127.0.0.1:0\"\n");
    assert!(
        e.contains("gantry.toml: [mqtts] needs a [tls] section"),
        "{e}"
    );
    let e = run("data_dir = \"d\"\n[wss]\nbind = \"127.0.0.1:0\"\n");
    assert!(e.contains("[wss] needs a [tls] section"), "{e}");

    let certs = dir.path().join("certs");
    let certs = certs.to_str().unwrap();
    gantry(&["cert", "ca", "--out", certs]);
    gantry(&["cert", "server", "--ca", certs, "--out", certs]);
    let e = run(
        "data_dir = \"d\"\n[tls]\ncert = \"certs/server.pem\"\nkey = \"certs/missing-key.pem\"\n[mqtts]\nbind = \"127.0.0.1:0\"\n",
    );
    assert!(
        e.contains("[tls] key: ") && e.contains("certs/missing-key.pem: No such file"),
        "{e}"
    );
    let e = run(
        "data_dir = \"d\"\n[tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server.pem\"\n[mqtts]\nbind = \"127.0.0.1:0\"\n",
    );
    assert!(
        e.contains("[tls] key: ") && e.contains("no private key found in PEM file"),
        "{e}"
    );
    // `gantry cert` keeps existing files unless --force.
    let out = Command::new(GANTRY)
        .args(["cert", "ca", "--out", certs])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --force"));
    gantry(&["cert", "ca", "--out", certs, "--force"]);
}
