//! Builds the TLS server configuration of the `[mqtts]` and `[wss]` listeners
//! from the `[tls]` section: the certificate chain, its private key and, for
//! mutual TLS, the CA that client certificates must be issued by. TLS 1.2 and
//! 1.3 with rustls and the *ring* provider; nothing depends on a process-wide
//! default provider.
//!
//! Every error names the config file, the field, the file it points to and the
//! problem, e.g. `gantry.toml: [tls] key: certs/server-key.pem: no private key
//! found in PEM file`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{GantryConfig, TlsConfig};

/// The TLS configuration the broker's TLS listeners run with: `None` when no
/// `[tls]` section is configured. `[mqtts]` or `[wss]` without `[tls]` is an
/// error.
pub fn from_config(
    config: &GantryConfig,
    config_file: &Path,
) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let file = config_file.display();
    let Some(tls) = &config.tls else {
        for (section, present) in [
            ("mqtts", config.mqtts.is_some()),
            ("wss", config.wss.is_some()),
        ] {
            if present {
                bail!(
                    "{file}: [{section}] needs a [tls] section with the server's `cert` and `key` \
                     (`gantry cert` makes them for a trial)"
                );
            }
        }
        return Ok(None);
    };
    if config.mqtts.is_none() && config.wss.is_none() {
        tracing::warn!(
            "{file}: [tls] is configured but no TLS listener is: add [mqtts] bind = \"0.0.0.0:8883\""
        );
    }
    server_config(tls, &file.to_string()).map(Some)
}

/// Builds the server configuration; `file` names the config file in errors.
pub fn server_config(tls: &TlsConfig, file: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(&tls.cert, file, "cert")?;
    let key = read_key(&tls.key, file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no protocol version")?;
    let builder = match &tls.client_ca {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for (i, ca) in read_certificates(ca_file, file, "client_ca")?
                .into_iter()
                .enumerate()
            {
                roots.add(ca).map_err(|e| {
                    anyhow!(
                        "{file}: [tls] client_ca: {}: certificate {} is not a usable CA certificate: {e}",
                        ca_file.display(),
                        i + 1
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| anyhow!("{file}: [tls] client_ca: {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None if tls.require_client_cert => bail!(
            "{file}: [tls] require_client_cert = true needs `client_ca`, the CA that client certificates are issued by"
        ),
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow!(
            "{file}: [tls] key: {}: does not fit the certificate in {}: {e}",
            tls.key.display(),
            tls.cert.display()
        )
    })?;
    Ok(Arc::new(config))
}

fn read_file(path: &Path, file: &str, field: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("{file}: [tls] {field}: {}: {e}", path.display()))
}

fn read_certificates(
    path: &Path,
    file: &str,
    field: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(path, file, field)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "{file}: [tls] {field}: {}: invalid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "{file}: [tls] {field}: {}: no certificate found in PEM file",
            path.display()
        );
    }
    for (i, cert) in certs.iter().enumerate() {
        if gantry_broker::tls::certificate_fields(cert).is_none() {
            bail!(
                "{file}: [tls] {field}: {}: certificate {} is not an X.509 certificate",
                path.display(),
                i + 1
            );
        }
    }
    Ok(certs)
}

fn read_key(path: &Path, file: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_file(path, file, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let problem = match e {
            pem::Error::NoItemsFound => "no private key found in PEM file".to_owned(),
            other => format!("invalid PEM: {other}"),
        };
        anyhow!("{file}: [tls] key: {}: {problem}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("server.pem"), dir.join("server-key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn tls(cert: &Path, key: &Path, client_ca: Option<&Path>, require: bool) -> TlsConfig {
        TlsConfig {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: client_ca.map(Path::to_owned),
            require_client_cert: require,
        }
    }

    #[test]
    fn builds_with_and_without_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        server_config(&tls(&cert, &key, None, false), "g.toml").unwrap();
        server_config(&tls(&cert, &key, Some(&cert), false), "g.toml").unwrap();
        server_config(&tls(&cert, &key, Some(&cert), true), "g.toml").unwrap();
    }

    #[test]
    fn config_paths_are_relative_to_the_config_file_and_listeners_need_tls() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        write_pair(&certs);
        let path = dir.path().join("gantry.toml");
        std::fs::write(
            &path,
            "data_dir = \"d\"\n[tls]\ncert = \"certs/server.pem\"\nkey = \"certs/server-key.pem\"\n\
             client_ca = \"certs/server.pem\"\nrequire_client_cert = true\n\
             [mqtts]\nbind = \"127.0.0.1:8883\"\n[wss]\nbind = \"127.0.0.1:8884\"\n",
        )
        .unwrap();
        let config = GantryConfig::load(&path).unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.key, certs.join("server-key.pem"));
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(certs.join("server.pem").as_path())
        );
        assert!(from_config(&config, &path).unwrap().is_some());
        let b = config.broker_config();
        assert_eq!(b.mqtts_bind.map(|a| a.port()), Some(8883));
        assert_eq!(b.wss_bind.map(|a| a.port()), Some(8884));

        let no_tls = GantryConfig::parse(
            "data_dir = \"d\"\n[wss]\nbind = \"127.0.0.1:8884\"\n",
            "g.toml",
        )
        .unwrap();
        let e = from_config(&no_tls, Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("g.toml: [wss] needs a [tls] section"), "{e}");
        let plain = GantryConfig::parse("data_dir = \"d\"\n", "g.toml").unwrap();
        assert!(from_config(&plain, Path::new("g.toml")).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_file_field_and_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let err = |t: TlsConfig| server_config(&t, "gantry.toml").unwrap_err().to_string();

        let missing = dir.path().join("nope.pem");
        let e = err(tls(&cert, &missing, None, false));
        assert!(
            e.starts_with(&format!("gantry.toml: [tls] key: {}: ", missing.display()))
                && e.contains("No such file"),
            "{e}"
        );
        // The certificate file holds no key.
        let e = err(tls(&cert, &cert, None, false));
        assert_eq!(
            e,
            format!(
                "gantry.toml: [tls] key: {}: no private key found in PEM file",
                cert.display()
            )
        );
        let e = err(tls(&key, &key, None, false));
        assert!(
            e.starts_with("gantry.toml: [tls] cert: ")
                && e.ends_with("no certificate found in PEM file"),
            "{e}"
        );
        let e = err(tls(&cert, &key, None, true));
        assert!(
            e.contains("require_client_cert = true needs `client_ca`"),
            "{e}"
        );
        let e = err(tls(&cert, &key, Some(&missing), false));
        assert!(e.starts_with("gantry.toml: [tls] client_ca: "), "{e}");

        // A key that belongs to another certificate.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path());
        let e = err(tls(&cert, &other_key, None, false));
        assert!(e.contains("does not fit the certificate"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(tls(&garbage, &key, None, false));
        assert!(
            e.contains("invalid PEM") || e.contains("not an X.509"),
            "{e}"
        );
    }
}
