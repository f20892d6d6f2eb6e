//! Listeners: accept loops for MQTT over TCP and MQTT over WebSocket. Each
//! accepted connection becomes one task running `connection::serve`.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::broker::{Broker, BrokerError};
use crate::connection::serve;

/// Addresses the broker actually listens on (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub mqtt: Option<SocketAddr>,
    pub websocket: Option<SocketAddr>,
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
            tokio::spawn(accept_loop(self.clone(), l, false));
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
            tokio::spawn(accept_loop(self.clone(), l, true));
        }
        Ok(bound)
    }
}

async fn accept_loop(broker: Broker, listener: TcpListener, websocket: bool) {
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
                if websocket {
                    tokio::spawn(serve_websocket(broker, stream, peer));
                } else {
                    tokio::spawn(serve(broker, stream, Some(peer), "tcp"));
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
async fn serve_websocket(broker: Broker, stream: TcpStream, peer: SocketAddr) {
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
    let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "WebSocket handshake failed");
            return;
        }
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (broker_side, bridge_side) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot create the WebSocket bridge socket pair");
            return;
        }
    };
    let (mut from_broker, mut to_broker) = bridge_side.into_split();
    let conn = tokio::spawn(serve(broker, broker_side, Some(peer), "websocket"));
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
    tokio::join!(inbound, outbound);
    let _ = conn.await;
}
