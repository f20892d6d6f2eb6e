//! The operator's view of clients: connected clients with who they are and
//! how they connected, and persistent sessions waiting for their client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gantry_broker::hooks::{AuthDecision, Authenticator, BoxFuture, ConnectRequest, Hooks};
use gantry_broker::{Broker, BrokerConfig, ClientSummary};
use gantry_codec::{
    Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
    decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clients that present a user name are that identity; others are anonymous.
struct UserNameIsIdentity;

impl Authenticator for UserNameIsIdentity {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async move {
            match &request.username {
                Some(name) => AuthDecision::Authenticated(name.as_str().into()),
                None => AuthDecision::Allow,
            }
        })
    }
}

struct Client {
    stream: TcpStream,
    rbuf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    async fn connect(
        addr: std::net::SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        username: Option<&str>,
        clean_start: bool,
    ) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut client = Client {
            stream,
            rbuf: BytesMut::new(),
            version,
        };
        client
            .send(Packet::Connect(Box::new(Connect {
                version,
                client_id: client_id.into(),
                clean_start,
                keep_alive: 60,
                username: username.map(str::to_owned),
                password: username.map(|_| Bytes::from("secret")),
                will: None,
                properties: Properties::default(),
            })))
            .await;
        match client.recv().await {
            Packet::ConnAck(ack) => assert_eq!(ack.reason.0, 0, "CONNACK {ack:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client
    }

    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        encode(&packet, self.version, &mut buf);
        self.stream.write_all(&buf).await.unwrap();
    }

    async fn recv(&mut self) -> Packet {
        loop {
            if let Some(p) = decode(&mut self.rbuf, Some(self.version), 1 << 20).unwrap() {
                return p;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.rbuf))
                    .await
                    .expect("reply within 5 s")
                    .unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    async fn subscribe(&mut self, filters: &[&str]) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: filters
                .iter()
                .map(|f| {
                    let options = SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    };
                    ((*f).to_owned(), options)
                })
                .collect(),
            properties: Properties::default(),
        }))
        .await;
        assert!(matches!(self.recv().await, Packet::SubAck(_)));
    }
}

async fn wait_for(broker: &Broker, what: &str, ok: impl Fn(&[ClientSummary]) -> bool) {
    for _ in 0..250 {
        if ok(&broker.clients()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: {:#?}", broker.clients());
}

#[tokio::test]
async fn clients_lists_connections_and_waiting_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.mqtt_bind = Some("127.0.0.1:0".parse().unwrap());
    let hooks = Hooks {
        authenticator: std::sync::Arc::new(UserNameIsIdentity),
        ..Hooks::default()
    };
    let broker = Broker::open(config, hooks).unwrap();
    let addr = broker.listen().await.unwrap().mqtt.unwrap();
    let before_ms = gantry_broker::message::now_ms();

    let mut filler = Client::connect(
        addr,
        ProtocolVersion::V5,
        "filler-1",
        Some("filler-plc"),
        true,
    )
    .await;
    filler.subscribe(&["acme/x/#", "acme/a/+"]).await;
    // 3.1.1 with clean session 0: the session outlives the connection.
    let mut hmi = Client::connect(addr, ProtocolVersion::V311, "hmi", None, false).await;
    hmi.subscribe(&["acme/alarms/#"]).await;
    hmi.send(Packet::Disconnect(Disconnect::default())).await;

    wait_for(&broker, "hmi disconnected", |c| {
        c.iter().any(|c| c.client_id == "hmi" && !c.connected)
    })
    .await;
    broker
        .publish(
            "t",
            "acme/alarms/1",
            Bytes::from("on"),
            QoS::AtLeastOnce,
            false,
        )
        .unwrap();

    let clients = broker.clients();
    let ids: Vec<&str> = clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["filler-1", "hmi"]);

    let filler_row = &clients[0];
    assert!(filler_row.connected);
    assert_eq!(filler_row.identity.as_deref(), Some("filler-plc"));
    assert_eq!(filler_row.transport, Some("tcp"));
    assert_eq!(filler_row.protocol_version, Some(5));
    assert!(filler_row.peer.is_some_and(|p| p.ip().is_loopback()));
    assert!(
        filler_row
            .connected_since_ms
            .is_some_and(|t| t >= before_ms)
    );
    assert_eq!(filler_row.subscriptions, ["acme/a/+", "acme/x/#"]);
    assert_eq!((filler_row.queued, filler_row.inflight), (0, 0));

    let hmi_row = &clients[1];
    assert!(!hmi_row.connected);
    assert_eq!(hmi_row.identity, None);
    assert_eq!(hmi_row.peer, None);
    assert_eq!(hmi_row.transport, None);
    assert_eq!(hmi_row.protocol_version, None);
    assert_eq!(hmi_row.connected_since_ms, None);
    assert_eq!(hmi_row.subscriptions, ["acme/alarms/#"]);
    assert_eq!(hmi_row.queued, 1, "the alarm waits for the client");

    // Reconnecting anonymously over 3.1.1 takes the session back.
    let _hmi = Client::connect(addr, ProtocolVersion::V311, "hmi", None, false).await;
    wait_for(&broker, "hmi reconnected", |c| {
        c.iter()
            .any(|c| c.client_id == "hmi" && c.connected && c.protocol_version == Some(4))
    })
    .await;
    broker.shutdown().await;
}
