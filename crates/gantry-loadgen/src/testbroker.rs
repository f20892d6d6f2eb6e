//! A tiny in-process MQTT broker for the load generator's own tests: CONNECT,
//! SUBSCRIBE with wildcards, QoS 0/1 PUBLISH routing, retained messages,
//! PINGREQ and DISCONNECT. Just enough to run every scenario end to end without
//! an external broker; no sessions, no queue limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use bytes::{Bytes, BytesMut};
use gantry_codec::topic::matches;
use gantry_codec::{
    ConnAck, Packet, Properties, ProtocolVersion, PubResponse, QoS, ReasonCode, SubAck, decode,
    encode, encode_publish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Outbox = mpsc::UnboundedSender<(String, Bytes, bool)>;

#[derive(Default)]
struct State {
    subs: Vec<(String, Outbox)>,
    retained: BTreeMap<String, Bytes>,
}

/// Starts the broker on an ephemeral port and returns the port.
pub async fn start() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = Arc::new(Mutex::new(State::default()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = serve(stream, state).await;
            });
        }
    });
    Ok(port)
}

/// Answers one packet from a client; `false` ends the connection.
fn handle(
    packet: Packet,
    version: &mut Option<ProtocolVersion>,
    state: &Mutex<State>,
    tx: &Outbox,
    out: &mut BytesMut,
) -> Result<bool> {
    let v = version.unwrap_or(ProtocolVersion::V311);
    match packet {
        Packet::Connect(c) => {
            *version = Some(c.version);
            encode(&Packet::ConnAck(ConnAck::default()), c.version, out);
        }
        Packet::Subscribe(s) => {
            let mut st = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            for (f, _) in &s.filters {
                st.subs.push((f.clone(), tx.clone()));
            }
            let reasons = s
                .filters
                .iter()
                .map(|(_, o)| ReasonCode(o.qos as u8))
                .collect();
            let ack = SubAck {
                packet_id: s.packet_id,
                reasons,
                properties: Properties::default(),
            };
            encode(&Packet::SubAck(ack), v, out);
            for (t, payload) in &st.retained {
                if s.filters.iter().any(|(f, _)| matches(f, t)) {
                    let _ = tx.send((t.clone(), payload.clone(), true));
                }
            }
        }
        Packet::Publish(p) => {
            let mut st = state.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if p.retain {
                st.retained.insert(p.topic.clone(), p.payload.clone());
            }
            for (f, sub) in &st.subs {
                if matches(f, &p.topic) {
                    let _ = sub.send((p.topic.clone(), p.payload.clone(), false));
                }
            }
            if p.qos == QoS::AtLeastOnce {
                let ack = PubResponse {
                    packet_id: p.packet_id,
                    ..PubResponse::default()
                };
                encode(&Packet::PubAck(ack), v, out);
            }
        }
        Packet::PingReq => {
            encode(&Packet::PingResp, v, out);
        }
        Packet::Disconnect(_) => return Ok(false),
        Packet::PubAck(_) => {}
        other => bail!("test broker does not handle {}", other.kind()),
    }
    Ok(true)
}

async fn serve(stream: TcpStream, state: Arc<Mutex<State>>) -> Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes, bool)>();
    let mut rbuf = BytesMut::new();
    let mut version: Option<ProtocolVersion> = None;
    let mut next_id: u16 = 0;
    let none = Properties::default();
    loop {
        let mut out = BytesMut::new();
        tokio::select! {
            n = rd.read_buf(&mut rbuf) => {
                if n? == 0 {
                    return Ok(());
                }
                while let Some(p) = decode(&mut rbuf, version, 1 << 20)? {
                    if !handle(p, &mut version, &state, &tx, &mut out)? {
                        return Ok(());
                    }
                }
            }
            Some(first) = rx.recv() => {
                let v = version.unwrap_or(ProtocolVersion::V311);
                let mut msg = Some(first);
                while let Some((topic, payload, retain)) = msg {
                    // Always QoS 1, so that the client's PUBACK path is exercised.
                    next_id = next_id.wrapping_add(1).max(1);
                    let qos = QoS::AtLeastOnce;
                    encode_publish(v, false, qos, retain, &topic, next_id, &none, &payload, &mut out);
                    msg = rx.try_recv().ok();
                }
            }
        }
        wr.write_all(&out).await?;
    }
}
