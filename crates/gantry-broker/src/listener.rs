//! Listeners: accept loops for MQTT over TCP, MQTT over WebSocket and their
//! TLS variants (`mqtts`, `wss`; see [`crate::tls`]). Each accepted connection
//! becomes one task running `connection::serve`.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::broker::{Broker, BrokerError};
use crate::connection::serve;
use crate::hooks::Peer;
use crate::tls::serve_tls;

/// Addresses the broker actually listens on (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub mqtt: Option<SocketAddr>,
    pub websocket: Option<SocketAddr>,
    /// MQTT over TLS.
    pub mqtts: Option<SocketAddr>,
    /// MQTT over secure WebSocket.
    pub wss: Option<SocketAddr>,
}

/// What an accept loop does with a new connection.
#[derive(Clone)]
enum Kind {
    Tcp,
    WebSocket,
    Tls(TlsAcceptor),
    Wss(TlsAcceptor),
}

impl Broker {
    /// Binds the configured listeners and spawns their accept loops.
    pub async fn listen(&self) -> Result<BoundAddrs, BrokerError> {
        let mut bound = BoundAddrs::default();
        if let Some(addr) = self.config().mqtt_bind {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|error| BrokerError::Bind {
                    what: "MQTT",
                    addr,
                    error,
                })?;
            bound.mqtt = l.local_addr().ok();
            tokio::spawn(accept_loop(self.clone(), l, Kind::Tcp));
        }
        if let Some(addr) = self.config().websocket_bind {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|error| BrokerError::Bind {
                    what: "MQTT over WebSocket",
                    addr,
                    error,
                })?;
            bound.websocket = l.local_addr().ok();
            tokio::spawn(accept_loop(self.clone(), l, Kind::WebSocket));
        }
        if let Some(addr) = self.config().mqtts_bind {
            let (l, acceptor) = self.bind_tls("MQTT over TLS", addr).await?;
            bound.mqtts = l.local_addr().ok();
            tokio::spawn(accept_loop(self.clone(), l, Kind::Tls(acceptor)));
        }
        if let Some(addr) = self.config().wss_bind {
            let (l, acceptor) = self.bind_tls("MQTT over secure WebSocket", addr).await?;
            bound.wss = l.local_addr().ok();
            tokio::spawn(accept_loop(self.clone(), l, Kind::Wss(acceptor)));
        }
        Ok(bound)
    }

    async fn bind_tls(
        &self,
        what: &'static str,
        addr: SocketAddr,
    ) -> Result<(TcpListener, TlsAcceptor), BrokerError> {
        let Some(tls) = self.config().tls.clone() else {
            return Err(BrokerError::Bind {
                what,
                addr,
                error: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no TLS configuration (BrokerConfig::tls is not set)",
                ),
            });
        };
        let l = TcpListener::bind(addr)
            .await
            .map_err(|error| BrokerError::Bind { what, addr, error })?;
        Ok((l, TlsAcceptor::from(tls)))
    }
}

async fn accept_loop(broker: Broker, listener: TcpListener, kind: Kind) {
    let mut shutdown = broker.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                match &kind {
                    Kind::Tcp => {
                        tokio::spawn(serve(broker, stream, Peer::new(Some(peer), "tcp")));
                    }
                    Kind::WebSocket => {
                        let peer = Peer::new(Some(peer), "websocket");
                        tokio::spawn(serve_websocket(broker, stream, peer));
                    }
                    Kind::Tls(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(serve_tls(broker, stream, peer, acceptor, false));
                    }
                    Kind::Wss(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(serve_tls(broker, stream, peer, acceptor, true));
                    }
                }
            }
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts the WebSocket handshake (subprotocol `mqtt`) and bridges the
/// WebSocket's binary frames to a byte stream served like a TCP connection.
/// `stream` is a TCP connection (`ws`) or a TLS stream (`wss`); `peer` says
/// which.
pub(crate) async fn serve_websocket<S>(broker: Broker, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    #[allow(clippy::result_large_err)] // the signature is tungstenite's
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offers_mqtt = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
        if offers_mqtt {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        }
        Ok(resp)
    };
    // A client that never completes the upgrade must not hold a task forever.
    let wait = Duration::from_secs(broker.config().limits.connect_timeout_secs.max(1));
    let ws = match tokio::time::timeout(wait, tokio_tungstenite::accept_hdr_async(stream, callback))
        .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(peer = ?addr, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = ?addr, "WebSocket handshake timed out");
            return;
        }
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (broker_side, bridge_side) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(peer = ?addr, error = %e, "cannot create the WebSocket bridge socket pair");
            return;
        }
    };
    let (mut from_broker, mut to_broker) = bridge_side.into_split();
    let conn = tokio::spawn(serve(broker, broker_side, peer));
    let inbound = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(WsMessage::Binary(data)) => {
                    if to_broker.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Ok(WsMessage::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = to_broker.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_broker.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(WsMessage::binary(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        // The broker closed: give the client a moment to answer the close
        // frame, but do not wait forever for a client that never does.
        () = &mut outbound => {
            let _ = tokio::time::timeout(Duration::from_secs(5), inbound).await;
        }
        // The client closed: the broker closes in turn, which ends outbound.
        () = &mut inbound => outbound.await,
    }
    let _ = conn.await;
}
