//! `gantry cert`: a local certificate authority and server and client
//! certificates for trials of TLS and mutual TLS, without OpenSSL.
//!
//! - `gantry cert ca --out DIR` writes `ca.pem` and `ca-key.pem`;
//! - `gantry cert server --ca DIR --out DIR` writes `server.pem` (the server
//!   certificate followed by the CA) and `server-key.pem`, valid for
//!   `localhost`, `127.0.0.1` and `::1` unless `--dns`/`--ip` say otherwise;
//! - `gantry cert client --ca DIR --out DIR --name IDENTITY` writes
//!   `IDENTITY.pem` and `IDENTITY-key.pem`, whose subject common name is the
//!   identity the client is admitted as.
//!
//! Keys are ECDSA P-256, written with mode 0600. Existing files are kept unless
//! `--force` is given. A production site uses certificates from its own PKI.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a local certificate authority: ca.pem and ca-key.pem.
    Ca {
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Gantry trial CA")]
        name: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a server certificate signed by the CA: server.pem (with the CA
    /// chain) and server-key.pem.
    Server {
        /// Directory holding ca.pem and ca-key.pem (from `gantry cert ca`).
        #[arg(long)]
        ca: PathBuf,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// DNS name the server is reached by (repeatable). Default, with no
        /// --dns and no --ip: localhost, 127.0.0.1 and ::1.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP address the server is reached by (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ip: Vec<IpAddr>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Create a client certificate signed by the CA: NAME.pem and
    /// NAME-key.pem, with NAME as the subject common name (the identity).
    Client {
        /// Directory holding ca.pem and ca-key.pem (from `gantry cert ca`).
        #[arg(long)]
        ca: PathBuf,
        /// Directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The identity the client is admitted as (the certificate's common
        /// name): 1 to 64 letters, digits, - _ . @
        #[arg(long)]
        name: String,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

pub fn run(args: &CertArgs) -> anyhow::Result<()> {
    match &args.command {
        CertCommand::Ca {
            out,
            name,
            days,
            force,
        } => make_ca(out, name, *days, *force),
        CertCommand::Server {
            ca,
            out,
            dns,
            ip,
            days,
            force,
        } => make_server(ca, out, dns, ip, *days, *force),
        CertCommand::Client {
            ca,
            out,
            name,
            days,
            force,
        } => make_client(ca, out, name, *days, *force),
    }
}

fn make_ca(out: &Path, name: &str, days: u32, force: bool) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    let (cert_path, key_path) = (out.join(CA_CERT), out.join(CA_KEY));
    prepare(out, &[&cert_path, &key_path], force)?;
    let key = KeyPair::generate().context("cannot generate a key")?;
    let params = ca_params(name, days)?;
    let cert = params
        .self_signed(&key)
        .context("cannot create the CA certificate")?;
    write_file(&cert_path, &cert.pem(), false)?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    println!(
        "wrote {} (CA certificate \"{name}\", valid {days} days)",
        cert_path.display()
    );
    println!(
        "wrote {} (CA private key: keep it secret)",
        key_path.display()
    );
    let dir = out.display();
    println!(
        "next: gantry cert server --ca {dir} --out {dir}; gantry cert client --ca {dir} --out {dir} --name IDENTITY"
    );
    Ok(())
}

fn make_server(
    ca_dir: &Path,
    out: &Path,
    dns: &[String],
    ip: &[IpAddr],
    days: u32,
    force: bool,
) -> anyhow::Result<()> {
    let (dns, ip): (Vec<String>, Vec<IpAddr>) = if dns.is_empty() && ip.is_empty() {
        (
            vec!["localhost".to_owned()],
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        )
    } else {
        (dns.to_vec(), ip.to_vec())
    };
    let mut sans = Vec::new();
    for name in &dns {
        let ia5 = rcgen::string::Ia5String::try_from(name.as_str())
            .map_err(|e| anyhow!("--dns {name:?}: {e}"))?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(ip.iter().map(|a| SanType::IpAddress(*a)));
    let ca = Ca::load(ca_dir)?;
    let (cert_path, key_path) = (out.join("server.pem"), out.join("server-key.pem"));
    prepare(out, &[&cert_path, &key_path], force)?;
    let mut params = leaf_params(days)?;
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ip.first().map(IpAddr::to_string))
        .unwrap_or_else(|| "gantry".to_owned());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert_pem, key_pem) = ca.sign(&params)?;
    let chain = format!("{cert_pem}{}", ca.pem);
    write_file(&cert_path, &chain, false)?;
    write_file(&key_path, &key_pem, true)?;
    let names: Vec<String> = dns
        .iter()
        .cloned()
        .chain(ip.iter().map(IpAddr::to_string))
        .collect();
    println!(
        "wrote {} (server certificate for {}, valid {days} days, followed by the CA)",
        cert_path.display(),
        names.join(", ")
    );
    println!("wrote {} (server private key)", key_path.display());
    println!(
        "use it: [tls] cert = \"{}\", key = \"{}\" (and client_ca = \"{}\" for client certificates); clients trust --cafile {}",
        cert_path.display(),
        key_path.display(),
        ca.cert_path.display(),
        ca.cert_path.display()
    );
    Ok(())
}

fn make_client(
    ca_dir: &Path,
    out: &Path,
    name: &str,
    days: u32,
    force: bool,
) -> anyhow::Result<()> {
    gantry_security::store::validate_name(name).map_err(|e| anyhow!("--name {name:?}: {e}"))?;
    let ca = Ca::load(ca_dir)?;
    let (cert_path, key_path) = (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}-key.pem")),
    );
    prepare(out, &[&cert_path, &key_path], force)?;
    let mut params = leaf_params(days)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (cert_pem, key_pem) = ca.sign(&params)?;
    write_file(&cert_path, &cert_pem, false)?;
    write_file(&key_path, &key_pem, true)?;
    println!(
        "wrote {} (client certificate for identity \"{name}\", valid {days} days)",
        cert_path.display()
    );
    println!("wrote {} (client private key)", key_path.display());
    println!(
        "use it: mosquitto_sub -p 8883 --cafile {} --cert {} --key {} -t '#' (the server's [tls] client_ca must be {})",
        ca.cert_path.display(),
        cert_path.display(),
        key_path.display(),
        ca.cert_path.display()
    );
    Ok(())
}

/// The CA's subject: its common name only, so that `Ca::load` can rebuild it
/// exactly from the certificate.
fn ca_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params(name: &str, days: u32) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = validity(days)?;
    params.distinguished_name = ca_name(name);
    // A trial CA signs end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn leaf_params(days: u32) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    (params.not_before, params.not_after) = validity(days)?;
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// From a few minutes ago (clocks differ) until `days` from now.
fn validity(days: u32) -> anyhow::Result<(OffsetDateTime, OffsetDateTime)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let now = i64::try_from(now.as_secs()).context("the system clock is out of range")?;
    let not_before = OffsetDateTime::from_unix_timestamp(now - 300)
        .context("the system clock is out of range")?;
    let not_after = OffsetDateTime::from_unix_timestamp(now + i64::from(days) * 86_400)
        .context("--days is out of range")?;
    Ok((not_before, not_after))
}

/// A CA made by `gantry cert ca`, loaded to sign with.
struct Ca {
    cert_path: PathBuf,
    pem: String,
    subject: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn load(dir: &Path) -> anyhow::Result<Ca> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let pem = std::fs::read_to_string(&cert_path).map_err(|e| {
            anyhow!(
                "{}: {e} (create a CA with `gantry cert ca --out {}`)",
                cert_path.display(),
                dir.display()
            )
        })?;
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| anyhow!("{}: no CA certificate: {e}", cert_path.display()))?;
        let fields = gantry_broker::tls::certificate_fields(&der)
            .ok_or_else(|| anyhow!("{}: not an X.509 certificate", cert_path.display()))?;
        let common_name = gantry_broker::tls::common_name(&der).ok_or_else(|| {
            anyhow!(
                "{}: the CA certificate has no single common name; use a CA made by `gantry cert ca`",
                cert_path.display()
            )
        })?;
        let key_pem = std::fs::read_to_string(&key_path)
            .map_err(|e| anyhow!("{}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| anyhow!("{}: not a usable private key: {e}", key_path.display()))?;
        if key.subject_public_key_info() != fields.subject_public_key_info {
            bail!(
                "{}: this key does not belong to the CA certificate {}",
                key_path.display(),
                cert_path.display()
            );
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name(&common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let subject = fields.subject.to_vec();
        Ok(Ca {
            cert_path,
            subject,
            pem: if pem.ends_with('\n') { pem } else { pem + "\n" },
            issuer: Issuer::new(params, key),
        })
    }

    /// Signs a new key's certificate; returns the certificate and key, PEM.
    fn sign(&self, params: &CertificateParams) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("cannot sign the certificate")?;
        // The issuer name must match the CA's subject byte for byte, or no
        // verifier links the two.
        let issued = gantry_broker::tls::certificate_fields(cert.der())
            .ok_or_else(|| anyhow!("the signed certificate cannot be read back"))?;
        if issued.issuer != self.subject.as_slice() {
            bail!(
                "{}: the CA's subject cannot be reproduced; use a CA made by `gantry cert ca`",
                self.cert_path.display()
            );
        }
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Creates `out` and refuses to overwrite any of `files` without `force`.
fn prepare(out: &Path, files: &[&Path], force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    if !force {
        for f in files {
            if f.exists() {
                bail!("{} exists; pass --force to overwrite it", f.display());
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // `mode` applies to new files only; an overwritten key file gets it too.
    if secret {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    f.write_all(contents.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_follow_the_security_rules() {
        for ok in ["plc-1", "line_2.filler", "ops@plant", "a"] {
            assert!(gantry_security::store::validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "has space", "é", &"x".repeat(65)] {
            assert!(
                gantry_security::store::validate_name(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ca_server_and_client_chain_up_and_refuse_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_ca(d, "Test CA", 30, false).unwrap();
        make_server(d, d, &[], &[], 30, false).unwrap();
        make_client(d, d, "plc-7", 30, false).unwrap();

        let ca = CertificateDer::from_pem_file(d.join("ca.pem")).unwrap();
        let ca_fields = gantry_broker::tls::certificate_fields(&ca).unwrap();
        let server: Vec<_> = CertificateDer::pem_file_iter(d.join("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(server.len(), 2, "server certificate, then the CA");
        assert_eq!(server[1], ca);
        let client = CertificateDer::from_pem_file(d.join("plc-7.pem")).unwrap();
        assert_eq!(
            gantry_broker::tls::common_name(&client).as_deref(),
            Some("plc-7")
        );
        assert_eq!(
            gantry_broker::tls::common_name(&server[0]).as_deref(),
            Some("localhost")
        );
        for leaf in [&server[0], &client] {
            let f = gantry_broker::tls::certificate_fields(leaf).unwrap();
            assert_eq!(f.issuer, ca_fields.subject);
        }
        for key in ["ca-key.pem", "server-key.pem", "plc-7-key.pem"] {
            let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }

        let e = make_client(d, d, "plc-7", 30, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exists; pass --force"), "{e}");
        make_client(d, d, "plc-7", 30, true).unwrap();
        assert!(make_ca(d, "Test CA", 30, false).is_err());

        // A key that is not the CA's.
        let other = tempfile::tempdir().unwrap();
        make_ca(other.path(), "Other", 30, false).unwrap();
        std::fs::copy(other.path().join("ca-key.pem"), d.join("ca-key.pem")).unwrap();
        let e = make_client(d, d, "x", 30, false).unwrap_err().to_string();
        assert!(e.contains("does not belong to the CA"), "{e}");
    }
}
