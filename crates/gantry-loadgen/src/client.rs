//! A small asynchronous MQTT client built on `gantry-codec`, shaped for load
//! generation rather than for applications.
//!
//! One [`Connection`] owns one TCP stream (with `TCP_NODELAY`), a read buffer
//! that packets are decoded out of, and a write buffer that callers fill with
//! many packets ([`Connection::queue`], [`Connection::queue_publish`]) before a
//! single [`Connection::flush`] sends them in one system call. Every wait takes a
//! timeout; nothing the broker sends can make the client panic.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use gantry_codec::{
    Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, decode, encode, encode_publish,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Largest packet the client accepts from a broker.
const MAX_INCOMING_PACKET: usize = 64 * 1024 * 1024;
/// Read buffer space reserved before each read.
const READ_CHUNK: usize = 64 * 1024;
/// Longest a write may stay blocked on a broker that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub version: ProtocolVersion,
    pub client_id: String,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    pub clean_start: bool,
    /// Bounds the TCP connect and the wait for CONNACK, each.
    pub timeout: Duration,
}

/// One MQTT connection with batched writes.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    /// Packets read while waiting for something else (e.g. PUBLISH before SUBACK).
    pending: VecDeque<Packet>,
    no_properties: Properties,
    next_id: u16,
    /// Receive Maximum the broker announced in CONNACK (5.0); 65,535 otherwise.
    pub server_receive_max: u16,
}

/// Describes a CONNACK refusal in words, for both protocol versions.
fn refusal(version: ProtocolVersion, code: ReasonCode) -> String {
    match version {
        ProtocolVersion::V5 => code.to_string(),
        ProtocolVersion::V311 => {
            let why = match code.0 {
                1 => "unacceptable protocol version",
                2 => "identifier rejected",
                3 => "server unavailable",
                4 => "bad user name or password",
                5 => "not authorized",
                _ => "unknown return code",
            };
            format!("return code {} ({why})", code.0)
        }
    }
}

impl Connection {
    /// Opens the TCP connection, sends CONNECT and checks the CONNACK.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let addr = format!("{}:{}", opts.host, opts.port);
        let stream = timeout(opts.timeout, TcpStream::connect(&addr))
            .await
            .with_context(|| format!("timed out connecting to {addr}"))?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
        let mut conn = Self::resume(stream, opts.version);
        let connect = Connect {
            version: opts.version,
            client_id: opts.client_id.clone(),
            clean_start: opts.clean_start,
            keep_alive: opts.keep_alive,
            username: None,
            password: None,
            will: None,
            properties: Properties::default(),
        };
        conn.queue(&Packet::Connect(Box::new(connect)));
        conn.flush()
            .await
            .with_context(|| format!("sending CONNECT to {addr}"))?;
        let deadline = Instant::now() + opts.timeout;
        match conn.next_packet_until(deadline).await {
            Ok(Some(Packet::ConnAck(ack))) => {
                let refused = match opts.version {
                    ProtocolVersion::V5 => ack.reason.is_error(),
                    ProtocolVersion::V311 => ack.reason.0 != 0,
                };
                if refused {
                    bail!(
                        "broker at {addr} refused the connection: {}",
                        refusal(opts.version, ack.reason)
                    );
                }
                if let Some(max) = ack.properties.receive_maximum {
                    conn.server_receive_max = max.max(1);
                }
                Ok(conn)
            }
            Ok(Some(other)) => bail!("broker at {addr} answered CONNECT with {}", other.kind()),
            Ok(None) => bail!(
                "no CONNACK from {addr} within {:.1} s",
                opts.timeout.as_secs_f64()
            ),
            Err(e) => Err(e.context(format!("waiting for CONNACK from {addr}"))),
        }
    }

    /// A fresh non-zero packet identifier (wraps around; callers that keep
    /// packets in flight skip identifiers still in use).
    pub fn next_packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        if self.next_id == 0 {
            self.next_id = 1;
        }
        self.next_id
    }

    /// Appends a packet to the write buffer.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.wbuf);
    }

    /// Appends a PUBLISH (no properties) to the write buffer.
    pub fn queue_publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        packet_id: u16,
        payload: &[u8],
    ) {
        encode_publish(
            self.version,
            false,
            qos,
            retain,
            topic,
            packet_id,
            &self.no_properties,
            payload,
            &mut self.wbuf,
        );
    }

    /// Writes the whole write buffer in as few system calls as the kernel allows.
    /// Fails if the broker takes in nothing for [`WRITE_TIMEOUT`].
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match timeout(WRITE_TIMEOUT, self.stream.write_all(&self.wbuf)).await {
            Ok(r) => r.context("writing to the broker")?,
            Err(_) => bail!(
                "the broker did not take {} bytes within {WRITE_TIMEOUT:?}",
                self.wbuf.len()
            ),
        }
        self.wbuf.clear();
        Ok(())
    }

    /// Waits for and reads whatever the broker sent next. Errors on end of stream.
    pub async fn read_some(&mut self) -> Result<usize> {
        self.rbuf.reserve(READ_CHUNK);
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .context("reading from the broker")?;
        if n == 0 {
            bail!("the broker closed the connection");
        }
        Ok(n)
    }

    /// Reads what is already available without waiting; 0 when nothing is.
    pub fn try_read_some(&mut self) -> Result<usize> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => bail!("the broker closed the connection"),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(anyhow::Error::new(e).context("reading from the broker")),
        }
    }

    /// The next packet already received, if a whole one is buffered.
    pub fn next_buffered(&mut self) -> Result<Option<Packet>> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(Some(p));
        }
        decode(&mut self.rbuf, Some(self.version), MAX_INCOMING_PACKET)
            .context("the broker sent an undecodable packet")
    }

    /// The next packet, waiting until `deadline` at most (`Ok(None)` then).
    pub async fn next_packet_until(&mut self, deadline: Instant) -> Result<Option<Packet>> {
        loop {
            if let Some(p) = self.next_buffered()? {
                return Ok(Some(p));
            }
            match timeout_at(deadline, self.read_some()).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Subscribes and waits for the SUBACK; packets that arrive first are kept for
    /// later reads. Fails if the broker refuses any filter.
    pub async fn subscribe(&mut self, filters: &[(String, QoS)], wait: Duration) -> Result<()> {
        let packet_id = self.next_packet_id();
        let sub = Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|(f, qos)| {
                    (
                        f.clone(),
                        SubscriptionOptions {
                            qos: *qos,
                            ..SubscriptionOptions::default()
                        },
                    )
                })
                .collect(),
            properties: Properties::default(),
        };
        self.queue(&Packet::Subscribe(sub));
        self.flush().await.context("sending SUBSCRIBE")?;
        let deadline = Instant::now() + wait;
        let mut early = VecDeque::new();
        let result = loop {
            let packet = match self.next_packet_until(deadline).await {
                Ok(Some(p)) => p,
                Ok(None) => break Err(anyhow::anyhow!("no SUBACK within {wait:?}")),
                Err(e) => break Err(e.context("waiting for SUBACK")),
            };
            match packet {
                Packet::SubAck(ack) if ack.packet_id == packet_id => {
                    if let Some((i, code)) =
                        ack.reasons.iter().enumerate().find(|(_, c)| c.is_error())
                    {
                        let filter = filters.get(i).map(|(f, _)| f.as_str()).unwrap_or("?");
                        break Err(anyhow::anyhow!(
                            "the broker refused the subscription to {filter:?}: {code}"
                        ));
                    }
                    if ack.reasons.len() != filters.len() {
                        break Err(anyhow::anyhow!(
                            "SUBACK carries {} reason codes for {} filters",
                            ack.reasons.len(),
                            filters.len()
                        ));
                    }
                    break Ok(());
                }
                Packet::Disconnect(d) => {
                    break Err(anyhow::anyhow!(
                        "the broker disconnected while subscribing: {}",
                        d.reason
                    ));
                }
                other => early.push_back(other),
            }
        };
        early.extend(self.pending.drain(..));
        self.pending = early;
        result
    }

    /// Sends DISCONNECT and closes the stream, ignoring errors (the broker may
    /// already be gone).
    pub async fn disconnect(mut self) {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        let _ = timeout(Duration::from_secs(1), self.flush()).await;
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// Gives up the buffers and keeps only the socket (for idle connections).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Picks up a socket left by [`Connection::into_stream`].
    pub fn resume(stream: TcpStream, version: ProtocolVersion) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            version,
            pending: VecDeque::new(),
            no_properties: Properties::default(),
            next_id: 0,
            server_receive_max: u16::MAX,
        }
    }
}
