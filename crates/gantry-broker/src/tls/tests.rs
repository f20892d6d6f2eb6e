//! Tests of the certificate reader and of TLS listeners end to end: a verified
//! client certificate reaches the authenticator over `mqtts` and `wss`, and
//! refused handshakes never reach it nor disturb other connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::string::{BmpString, Ia5String, PrintableString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::*;
use crate::BrokerConfig;
use crate::hooks::{AuthDecision, Authenticator, BoxFuture, ConnectRequest, Hooks};

// --- certificates ------------------------------------------------------------

fn dn(cn: impl Into<DnValue>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gantry tests");
    dn.push(DnType::CommonName, cn);
    dn
}

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn make_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap().der().clone();
    Ca {
        cert,
        issuer: Issuer::new(params, key),
    }
}

struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn leaf(ca: &Ca, params: CertificateParams) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        chain: vec![cert.der().clone(), ca.cert.clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn server_leaf(ca: &Ca) -> Leaf {
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.distinguished_name = dn("localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf(ca, params)
}

fn client_leaf(ca: &Ca, cn: &str, expired: bool) -> Leaf {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    leaf(ca, params)
}

fn cert_with_subject(subject: DistinguishedName) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.self_signed(&key).unwrap().der().clone()
}

// --- the DER reader ------------------------------------------------------------

#[test]
fn common_name_of_rcgen_certificates_in_every_string_type() {
    let cases: Vec<(DnValue, &str)> = vec![
        (DnValue::Utf8String("line-1-plc".into()), "line-1-plc"),
        (DnValue::Utf8String("Füller Zwei ✓".into()), "Füller Zwei ✓"),
        (
            DnValue::PrintableString(PrintableString::try_from("Filler 1").unwrap()),
            "Filler 1",
        ),
        (
            DnValue::Ia5String(Ia5String::try_from("ops@plant").unwrap()),
            "ops@plant",
        ),
        (
            DnValue::BmpString(BmpString::try_from("Ofen Ä").unwrap()),
            "Ofen Ä",
        ),
        (
            DnValue::UniversalString(UniversalString::try_from("kiln 𝄞").unwrap()),
            "kiln 𝄞",
        ),
    ];
    for (value, expected) in cases {
        let der = cert_with_subject(dn(value));
        assert_eq!(common_name(&der).as_deref(), Some(expected));
    }
}

#[test]
fn common_name_is_none_when_missing_ambiguous_or_unsafe() {
    let mut no_cn = DistinguishedName::new();
    no_cn.push(DnType::OrganizationName, "only an organization");
    assert_eq!(common_name(&cert_with_subject(no_cn)), None);

    // Two common names: which one is the identity? Neither.
    let mut two = dn("alice");
    two.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "admin");
    assert_eq!(common_name(&cert_with_subject(two)), None);

    assert_eq!(common_name(&cert_with_subject(dn("admin\0.x"))), None);
    assert_eq!(common_name(&cert_with_subject(dn(""))), None);
}

#[test]
fn certificate_fields_link_a_leaf_to_its_ca() {
    let ca = make_ca("Fields CA");
    let client = client_leaf(&ca, "cell-7", false);
    let leaf_fields = certificate_fields(&client.chain[0]).unwrap();
    let ca_fields = certificate_fields(&ca.cert).unwrap();
    assert_eq!(leaf_fields.issuer, ca_fields.subject);
    assert_eq!(ca_fields.issuer, ca_fields.subject, "self-signed");
    assert_ne!(leaf_fields.subject, ca_fields.subject);
    assert_eq!(
        ca_fields.subject_public_key_info,
        rcgen::PublicKeyData::subject_public_key_info(ca.issuer.key()).as_slice()
    );
    assert_eq!(common_name(&ca.cert).as_deref(), Some("Fields CA"));
}

#[test]
fn malformed_input_never_panics_and_yields_nothing() {
    let der = cert_with_subject(dn("truncated"));
    for len in 0..der.len() {
        assert_eq!(
            certificate_fields(&der[..len]),
            None,
            "prefix of {len} bytes"
        );
        assert_eq!(common_name(&der[..len]), None);
    }
    // Every single-byte corruption: no panic, whatever comes out.
    for i in 0..der.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = der.to_vec();
            bad[i] ^= flip;
            let _ = common_name(&bad);
            let _ = certificate_fields(&bad);
        }
    }
    let mut trailing = der.to_vec();
    trailing.push(0);
    assert_eq!(certificate_fields(&trailing), None);
    assert_eq!(common_name(b"\x30\x80\x00\x00"), None, "indefinite length");
    assert_eq!(common_name(b"\x30\x85\xff\xff\xff\xff\xff"), None);
}

#[test]
fn sha256_is_lowercase_hex() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let der = cert_with_subject(dn("x"));
    let c = client_cert(&der);
    assert_eq!(c.sha256.len(), 64);
    assert_eq!(c.common_name.as_deref(), Some("x"));
}

// --- listeners end to end ------------------------------------------------------

/// A CONNECT's transport and client certificate.
type Seen = (&'static str, Option<Arc<ClientCert>>);

/// Records what every CONNECT presented and admits everyone.
#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

struct Recording(Arc<Recorder>);

impl Authenticator for Recording {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision> {
        self.0
            .0
            .lock()
            .unwrap()
            .push((request.transport, request.client_cert.clone()));
        Box::pin(async { AuthDecision::Allow })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(ca: &Ca, require_client_cert: bool) -> Arc<ServerConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if !require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let server = server_leaf(ca);
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier.build().unwrap())
            .with_single_cert(server.chain, server.key)
            .unwrap(),
    )
}

fn connector(ca: &Ca, client: Option<Leaf>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder.with_client_auth_cert(c.chain, c.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

struct TestBroker {
    broker: Broker,
    mqtts: SocketAddr,
    wss: SocketAddr,
    seen: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

async fn start(tls: Arc<ServerConfig>) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.mqtts_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.wss_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.tls = Some(tls);
    let seen = Arc::new(Recorder::default());
    let hooks = Hooks {
        authenticator: Arc::new(Recording(seen.clone())),
        ..Hooks::default()
    };
    let broker = Broker::open(config, hooks).unwrap();
    let bound = broker.listen().await.unwrap();
    TestBroker {
        broker,
        mqtts: bound.mqtts.unwrap(),
        wss: bound.wss.unwrap(),
        seen,
        _dir: dir,
    }
}

/// An MQTT 3.1.1 CONNECT with a clean session and the given client id.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut p = vec![0x10, (12 + id.len()) as u8];
    p.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id);
    p
}

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const WAIT: Duration = Duration::from_secs(10);

/// Connects over `mqtts` and returns the first 4 bytes the broker answers
/// to CONNECT, or the error that ended the attempt.
async fn mqtts_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
    id: &str,
) -> Result<[u8; 4], String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(&connect_packet(id))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(answer)
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

#[tokio::test]
async fn client_certificate_reaches_the_authenticator_over_tls_and_wss() {
    let ca = make_ca("Gantry test CA");
    let t = start(server_config(&ca, false)).await;

    let with_cert = connector(&ca, Some(client_leaf(&ca, "line-1-plc", false)));
    let answer = mqtts_connect(t.mqtts, &with_cert, "plc").await;
    assert_eq!(answer, Ok(CONNACK_OK));
    let seen = t.seen.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "tls");
    let cert = seen[0].1.as_ref().expect("the client certificate");
    assert_eq!(cert.common_name.as_deref(), Some("line-1-plc"));
    assert_eq!(cert.sha256.len(), 64);

    // Client certificates are optional here: without one, the client still
    // connects, with no certificate for the authenticator.
    let anonymous = connector(&ca, None);
    assert_eq!(
        mqtts_connect(t.mqtts, &anonymous, "anon").await,
        Ok(CONNACK_OK)
    );
    let seen = t.seen.seen();
    assert_eq!((seen[1].0, seen[1].1.is_none()), ("tls", true));

    // MQTT over secure WebSocket, with a client certificate.
    let wss_client = connector(&ca, Some(client_leaf(&ca, "hmi-3", false)));
    let exchange = async {
        let tcp = TcpStream::connect(t.wss).await.unwrap();
        let tls = wss_client
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut request = format!("wss://localhost:{}/mqtt", t.wss.port())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (mut ws, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol"),
            Some(&HeaderValue::from_static("mqtt"))
        );
        ws.send(WsMessage::binary(connect_packet("hmi")))
            .await
            .unwrap();
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(data))) => break data.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("no CONNACK over wss: {other:?}"),
            }
        }
    };
    let connack = tokio::time::timeout(WAIT, exchange).await.unwrap();
    assert_eq!(connack, CONNACK_OK);
    let seen = t.seen.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].0, "wss");
    assert_eq!(
        seen[2].1.as_ref().and_then(|c| c.common_name.as_deref()),
        Some("hmi-3")
    );
    t.broker.shutdown().await;
}

#[tokio::test]
async fn refused_handshakes_never_reach_the_authenticator_nor_disturb_others() {
    let ca = make_ca("Gantry test CA");
    let t = start(server_config(&ca, true)).await;

    let good = connector(&ca, Some(client_leaf(&ca, "good", false)));
    assert_eq!(
        mqtts_connect(t.mqtts, &good, "good-1").await,
        Ok(CONNACK_OK)
    );

    // No certificate while one is required; an expired one; one from another CA.
    let other_ca = make_ca("Some other CA");
    let refused = [
        ("no certificate", connector(&ca, None)),
        (
            "expired",
            connector(&ca, Some(client_leaf(&ca, "old", true))),
        ),
        (
            "wrong CA",
            connector(&ca, Some(client_leaf(&other_ca, "stranger", false))),
        ),
    ];
    for (what, c) in &refused {
        let answer = mqtts_connect(t.mqtts, c, what).await;
        assert!(answer.is_err(), "{what}: must be refused, got {answer:?}");
    }

    // A client that does not trust the server's CA refuses it in turn.
    let distrustful = connector(&other_ca, Some(client_leaf(&ca, "good", false)));
    assert!(mqtts_connect(t.mqtts, &distrustful, "x").await.is_err());

    // Plain MQTT on the TLS port, and a client that connects and says nothing.
    let mut plain = TcpStream::connect(t.mqtts).await.unwrap();
    plain.write_all(&connect_packet("plain")).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, plain.read(&mut buf))
        .await
        .unwrap();
    assert!(!matches!(n, Ok(n) if n >= 4 && buf[..4] == CONNACK_OK));
    let _silent = TcpStream::connect(t.mqtts).await.unwrap();

    assert_eq!(
        mqtts_connect(t.mqtts, &good, "good-2").await,
        Ok(CONNACK_OK)
    );
    let seen = t.seen.seen();
    let names: Vec<_> = seen
        .iter()
        .map(|(transport, c)| (*transport, c.as_ref().and_then(|c| c.common_name.clone())))
        .collect();
    assert_eq!(
        names,
        vec![
            ("tls", Some("good".to_owned())),
            ("tls", Some("good".to_owned()))
        ]
    );
    t.broker.shutdown().await;
}

#[tokio::test]
async fn tls_listener_without_tls_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.mqtts_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let broker = Broker::open(config, Hooks::default()).unwrap();
    let e = broker.listen().await.unwrap_err().to_string();
    assert!(
        e.contains("MQTT over TLS") && e.contains("no TLS configuration"),
        "{e}"
    );
    broker.shutdown().await;
}
