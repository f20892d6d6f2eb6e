//! Transport security: MQTT over TLS (`mqtts`, port 8883) and MQTT over secure
//! WebSocket (`wss`), with rustls and the *ring* provider.
//!
//! A TLS connection is accepted here, its verified client certificate (mutual
//! TLS) is turned into a [`ClientCert`] for the authenticator, and the
//! decrypted byte stream is bridged to a Unix socket pair whose other end is
//! served like a TCP connection (the same bridge the WebSocket listener uses),
//! so every transport shares one connection implementation. For `wss` the
//! WebSocket handshake runs over the TLS stream first.
//!
//! A failed handshake (expired or unknown certificate, a plain client on the
//! TLS port, a timeout) is logged with the peer and the reason and ends that
//! one connection only.
//!
//! The module also holds a small DER reader for the few certificate fields
//! Gantry needs (issuer, subject, public key, subject common name), so that no
//! X.509 parsing crate is compiled in.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::connection::serve;
use crate::hooks::{ClientCert, Peer};
use crate::listener::serve_websocket;

/// How long the bridge waits for a client to take its last bytes and the TLS
/// close notification after the broker closed the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Accepts a TLS connection on a `mqtts` (or, with `websocket`, `wss`)
/// listener and serves it. Handshake failures are logged and end here.
pub(crate) async fn serve_tls(
    broker: Broker,
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    websocket: bool,
) {
    let wait = Duration::from_secs(broker.config().limits.connect_timeout_secs.max(1));
    let tls = match tokio::time::timeout(wait, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let (certificate_problem, reason) = handshake_failure(&e);
            if certificate_problem {
                tracing::info!(peer = %addr, %reason, "TLS handshake refused");
            } else {
                tracing::debug!(peer = %addr, %reason, "TLS handshake failed");
            }
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "TLS handshake timed out after {}s", wait.as_secs());
            return;
        }
    };
    // rustls completes the handshake only after the client certificate (if
    // one was presented) verified against `client_ca`; the first one is the
    // client's own.
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| Arc::new(client_cert(der)));
    if let Some(cert) = &client_cert {
        tracing::debug!(
            peer = %addr,
            common_name = cert.common_name.as_deref().unwrap_or("-"),
            sha256 = %cert.sha256,
            "client certificate verified"
        );
    }
    if websocket {
        let peer = Peer {
            addr: Some(addr),
            transport: "wss",
            client_cert,
        };
        serve_websocket(broker, tls, peer).await;
    } else {
        let peer = Peer {
            addr: Some(addr),
            transport: "tls",
            client_cert,
        };
        bridge(broker, tls, peer).await;
    }
}

/// Serves a decrypted byte stream through a Unix socket pair: the broker's
/// connection code runs on one end, this task copies between the other end
/// and `stream` in both directions.
async fn bridge<S>(broker: Broker, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let addr = peer.addr;
    let (broker_side, bridge_side) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(peer = ?addr, error = %e, "cannot create the TLS bridge socket pair");
            return;
        }
    };
    let conn = tokio::spawn(serve(broker, broker_side, peer));
    let (mut from_client, mut to_client) = tokio::io::split(stream);
    let (mut from_broker, mut to_broker) = bridge_side.into_split();
    // Client to broker: at the client's end of stream (or an error) the
    // broker sees end of stream too and closes the connection.
    let inbound = async move {
        let _ = tokio::io::copy(&mut from_client, &mut to_broker).await;
        let _ = to_broker.shutdown().await;
    };
    // Broker to client: `copy` flushes whenever the broker has nothing more
    // to send, so every batch leaves at once. When the broker closes, the
    // client gets a TLS close notification.
    let outbound = async move {
        let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        let _ = tokio::time::timeout(CLOSE_GRACE, to_client.shutdown()).await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        // The broker closed the connection: whatever the client still sends
        // has no reader, so stop here.
        () = &mut outbound => {}
        // The client finished: the broker closes in turn, which ends outbound.
        () = &mut inbound => outbound.await,
    }
    let _ = conn.await;
}

/// Whether a failed handshake is a certificate problem (worth an operator's
/// attention: logged at info) and a short reason for the log.
fn handshake_failure(e: &io::Error) -> (bool, String) {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(error) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return (false, e.to_string());
    };
    match error {
        Error::InvalidCertificate(c) => {
            let reason = match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "client certificate expired".to_owned()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "client certificate not valid yet".to_owned()
                }
                CertificateError::UnknownIssuer => {
                    "client certificate from an unknown CA (not issued by [tls] client_ca)"
                        .to_owned()
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    "client certificate not valid for client authentication".to_owned()
                }
                other => format!("invalid client certificate: {other}"),
            };
            (true, reason)
        }
        Error::NoCertificatesPresented => (
            true,
            "no client certificate presented (one is required)".to_owned(),
        ),
        Error::AlertReceived(alert) => {
            let reason = match alert {
                AlertDescription::UnknownCA => {
                    "the client does not trust the server certificate (unknown CA)".to_owned()
                }
                AlertDescription::CertificateExpired => {
                    "the client refused the server certificate: expired".to_owned()
                }
                AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate => {
                    format!("the client refused the server certificate ({alert:?})")
                }
                other => format!("the client sent alert {other:?}"),
            };
            (true, reason)
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => (
            false,
            format!("not a TLS client ({error}); a plain MQTT client on the TLS port?"),
        ),
        other => (false, other.to_string()),
    }
}

/// The [`ClientCert`] the authenticator sees for a verified certificate.
pub fn client_cert(cert_der: &[u8]) -> ClientCert {
    ClientCert {
        common_name: common_name(cert_der),
        sha256: sha256_hex(cert_der),
    }
}

/// SHA-256 of `data`, lowercase hex (the certificate fingerprint format).
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut hex = String::with_capacity(64);
    for b in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

// ---------------------------------------------------------------------------
// A minimal DER reader for X.509 certificates (RFC 5280 section 4.1).

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OBJECT_IDENTIFIER: u8 = 0x06;
/// `[0] EXPLICIT Version` in `TBSCertificate`.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The raw DER (header included) of the certificate fields Gantry compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateFields<'a> {
    /// The issuer `Name`.
    pub issuer: &'a [u8],
    /// The subject `Name`.
    pub subject: &'a [u8],
    /// The `SubjectPublicKeyInfo`.
    pub subject_public_key_info: &'a [u8],
}

/// One DER element.
#[derive(Debug, Clone, Copy)]
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    /// The whole encoding, header included.
    raw: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and what follows.
fn read_element(input: &[u8]) -> Option<(Element<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never occur in the fields read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form; 0x80 (indefinite length) is not DER.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (contents, after) = rest.split_at(len);
    Some((
        Element {
            tag,
            contents,
            raw: &input[..header + len],
        },
        after,
    ))
}

fn read_tagged(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (element, rest) = read_element(input)?;
    (element.tag == tag).then_some((element, rest))
}

/// Finds the issuer, subject and public key of a DER certificate; `None` if
/// it is not one.
pub fn certificate_fields(cert_der: &[u8]) -> Option<CertificateFields<'_>> {
    let (cert, trailing) = read_tagged(cert_der, SEQUENCE)?;
    if !trailing.is_empty() {
        return None;
    }
    let (tbs, _) = read_tagged(cert.contents, SEQUENCE)?;
    let mut fields = tbs.contents;
    if let Some((version, rest)) = read_element(fields)
        && version.tag == VERSION
    {
        fields = rest;
    }
    let (_serial, fields) = read_tagged(fields, INTEGER)?;
    let (_signature, fields) = read_tagged(fields, SEQUENCE)?;
    let (issuer, fields) = read_tagged(fields, SEQUENCE)?;
    let (_validity, fields) = read_tagged(fields, SEQUENCE)?;
    let (subject, fields) = read_tagged(fields, SEQUENCE)?;
    let (spki, _) = read_tagged(fields, SEQUENCE)?;
    Some(CertificateFields {
        issuer: issuer.raw,
        subject: subject.raw,
        subject_public_key_info: spki.raw,
    })
}

/// The subject common name (OID 2.5.4.3) of a DER certificate.
///
/// `None` when the certificate cannot be read, has no common name, has more
/// than one (ambiguous as an identity), or its common name is not a valid
/// string or contains control characters.
pub fn common_name(cert_der: &[u8]) -> Option<String> {
    name_common_name(certificate_fields(cert_der)?.subject)
}

/// The common name in a DER `Name` (a sequence of RDN sets of
/// type-and-value sequences).
fn name_common_name(name_der: &[u8]) -> Option<String> {
    let (name, _) = read_tagged(name_der, SEQUENCE)?;
    let mut found = None;
    let mut rdns = name.contents;
    while !rdns.is_empty() {
        let (rdn, rest) = read_tagged(rdns, SET)?;
        rdns = rest;
        let mut attributes = rdn.contents;
        while !attributes.is_empty() {
            let (attribute, rest) = read_tagged(attributes, SEQUENCE)?;
            attributes = rest;
            let (oid, value) = read_tagged(attribute.contents, OBJECT_IDENTIFIER)?;
            if oid.contents != COMMON_NAME_OID {
                continue;
            }
            let (value, trailing) = read_element(value)?;
            if !trailing.is_empty() || found.is_some() {
                return None;
            }
            found = Some(directory_string(value)?);
        }
    }
    found.filter(|cn: &String| !cn.is_empty() && !cn.chars().any(char::is_control))
}

/// Decodes the string types a `DirectoryString` (or IA5String) may use.
fn directory_string(value: Element<'_>) -> Option<String> {
    let bytes = value.contents;
    match value.tag {
        // UTF8String
        0x0c => String::from_utf8(bytes.to_vec()).ok(),
        // PrintableString, IA5String: ASCII
        0x13 | 0x16 => bytes
            .is_ascii()
            .then(|| String::from_utf8_lossy(bytes).into_owned()),
        // TeletexString: read as Latin-1, as most software does
        0x14 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE
        0x1c => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
