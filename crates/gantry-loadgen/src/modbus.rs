//! `gantry-loadgen modbus-server`: a Modbus TCP device whose holding
//! registers all change every interval, to measure the Modbus connector's
//! whole path (device → connector → contract → broker → subscriber).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use gantry_connectors::simulator::plc::{PlcIdentity, RegisterBank, serve_plc};

/// Serves `registers` holding registers on 127.0.0.1:`port` for `duration`,
/// adding one to every register each `interval`.
pub async fn serve(
    port: u16,
    registers: usize,
    interval: Duration,
    duration: Duration,
) -> Result<()> {
    let bank = Arc::new(RwLock::new(RegisterBank::with_size(registers)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let identity = PlcIdentity {
        vendor: "gantry-loadgen".into(),
        product_code: "bench".into(),
        revision: env!("CARGO_PKG_VERSION").into(),
    };
    tokio::spawn(serve_plc(listener, bank.clone(), identity, stop_rx));
    let mut tick = tokio::time::interval(interval);
    let end = tokio::time::Instant::now() + duration;
    let mut round: u16 = 0;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        round = round.wrapping_add(1);
        let mut b = bank.write().unwrap_or_else(|e| e.into_inner());
        for (i, r) in b.holding.iter_mut().enumerate() {
            *r = round.wrapping_add(i as u16);
        }
    }
    let _ = stop_tx.send(true);
    Ok(())
}
