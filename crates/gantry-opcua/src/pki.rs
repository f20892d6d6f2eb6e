//! The OPC UA PKI directory under `<data_dir>/opcua/pki`: Gantry's
//! application instance certificate (`own/cert.der`, `own/private.pem`),
//! trusted server certificates (`trusted/`) and rejected ones (`rejected/`,
//! where an unknown server certificate lands until `gantry opcua trust`
//! moves it to `trusted/`).

use std::path::{Path, PathBuf};

use opcua::crypto::X509;

/// Relative to the PKI directory.
pub const OWN_CERT: &str = "own/cert.der";
pub const OWN_KEY: &str = "own/private.pem";

/// `<data_dir>/opcua/pki`.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("opcua").join("pki")
}

/// This machine's host name (for the application URI).
pub fn hostname() -> String {
    opcua::crypto::X509Data::computer_hostnames()
        .into_iter()
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `urn:gantry:<hostname>`.
pub fn application_uri() -> String {
    format!("urn:gantry:{}", hostname())
}

/// A client builder with Gantry's identity and PKI settings.
pub(crate) fn client_builder(pki: &Path) -> opcua::client::ClientBuilder {
    opcua::client::ClientBuilder::new()
        .application_name("Gantry")
        .application_uri(application_uri())
        .product_uri("urn:gantry")
        .pki_dir(pki)
        .certificate_path(OWN_CERT)
        .private_key_path(OWN_KEY)
        .create_sample_keypair(true)
        .trust_server_certs(false)
        .verify_server_certs(true)
}

/// Creates the application instance certificate and private key (self-signed,
/// 2048-bit RSA) and the trusted/rejected directories if missing. Call once
/// before starting sources, so several servers do not race to create it.
pub fn ensure_instance_certificate(data_dir: &Path) -> Result<PathBuf, String> {
    let pki = pki_dir(data_dir);
    for sub in ["own", "trusted", "rejected"] {
        std::fs::create_dir_all(pki.join(sub))
            .map_err(|e| format!("cannot create {}: {e}", pki.join(sub).display()))?;
    }
    let existed = pki.join(OWN_CERT).exists() && pki.join(OWN_KEY).exists();
    // Building a client creates the pair when it is missing.
    let _client = client_builder(&pki)
        .client()
        .map_err(|e| format!("invalid OPC UA client settings: {}", e.join("; ")))?;
    if !pki.join(OWN_CERT).exists() {
        return Err(format!(
            "could not create the OPC UA application certificate in {}",
            pki.join("own").display()
        ));
    }
    if !existed {
        tracing::info!(
            uri = %application_uri(),
            "created the OPC UA application instance certificate {}",
            pki.join(OWN_CERT).display()
        );
    }
    Ok(pki)
}

/// A certificate in the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    pub file: PathBuf,
    /// SHA-1 thumbprint, lower-case hex (as OPC UA uses).
    pub thumbprint: String,
    pub common_name: Option<String>,
    pub not_after: Option<String>,
}

fn info(path: &Path) -> Option<CertInfo> {
    let der = std::fs::read(path).ok()?;
    let cert = X509::from_der(&der).ok()?;
    Some(CertInfo {
        file: path.to_path_buf(),
        thumbprint: cert.thumbprint().as_hex_string().to_ascii_lowercase(),
        common_name: cert.common_name().ok(),
        not_after: cert.not_after().ok().map(|t| t.to_rfc3339()),
    })
}

/// The certificates in `<pki>/<sub>` (`trusted` or `rejected`), by file name.
pub fn list(pki: &Path, sub: &str) -> Vec<CertInfo> {
    let mut out: Vec<CertInfo> = std::fs::read_dir(pki.join(sub))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "der"))
                .filter_map(|p| info(&p))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// Moves rejected certificates to `trusted/`: all of them, or those whose
/// thumbprint starts with `which` or whose file name contains it
/// (case-insensitive). Returns the certificates now trusted.
pub fn trust(pki: &Path, which: Option<&str>) -> Result<Vec<CertInfo>, String> {
    let rejected = list(pki, "rejected");
    let wanted = which.map(str::to_ascii_lowercase);
    let chosen: Vec<CertInfo> = rejected
        .into_iter()
        .filter(|c| match &wanted {
            None => true,
            Some(w) => {
                c.thumbprint.starts_with(w.as_str())
                    || c.file.file_name().is_some_and(|n| {
                        n.to_string_lossy()
                            .to_ascii_lowercase()
                            .contains(w.as_str())
                    })
                    || c.common_name
                        .as_deref()
                        .is_some_and(|n| n.to_ascii_lowercase() == *w)
            }
        })
        .collect();
    let trusted_dir = pki.join("trusted");
    std::fs::create_dir_all(&trusted_dir)
        .map_err(|e| format!("cannot create {}: {e}", trusted_dir.display()))?;
    let mut done = Vec::new();
    for cert in chosen {
        let name = cert.file.file_name().map(PathBuf::from).unwrap_or_default();
        let to = trusted_dir.join(name);
        std::fs::rename(&cert.file, &to).map_err(|e| {
            format!(
                "cannot move {} to {}: {e}",
                cert.file.display(),
                to.display()
            )
        })?;
        done.push(CertInfo { file: to, ..cert });
    }
    Ok(done)
}
