//! End-to-end tests of every scenario against the in-process test broker.

use std::time::Duration;

use anyhow::Result;
use gantry_codec::{ProtocolVersion, QoS};
use serde_json::Value;

use crate::client::ConnectOptions;
use crate::flow::{self, FlowSpec};
use crate::outcome::Outcome;
use crate::{idle, retained, testbroker};

fn opts(port: u16, version: ProtocolVersion) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port,
        version,
        client_id: String::new(),
        keep_alive: 0,
        clean_start: true,
        timeout: Duration::from_secs(5),
    }
}

fn spec(pubs: usize, subs: usize, qos: QoS) -> FlowSpec {
    let topics: Vec<String> = (0..pubs).map(|i| format!("t/fan/{i}")).collect();
    FlowSpec {
        scenario: "test",
        pub_topics: topics,
        sub_filters: vec!["t/fan/+".into(); subs],
        qos,
        rate: None,
        payload: 64,
        json_payload: false,
        duration: Duration::from_secs(5),
        count: Some(2000),
        window: 100,
        max_outstanding: 1000,
        drain: Duration::from_secs(2),
        batch: 64,
        broker_pid: None,
    }
}

fn num(o: &Outcome, k: &str) -> f64 {
    o.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

#[tokio::test]
async fn flows_deliver_everything() -> Result<()> {
    let port = testbroker::start().await?;
    for (pubs, subs, qos, v) in [
        (1, 1, QoS::AtMostOnce, ProtocolVersion::V311),
        (1, 1, QoS::AtLeastOnce, ProtocolVersion::V5),
        (3, 1, QoS::AtLeastOnce, ProtocolVersion::V311),
        (1, 3, QoS::AtMostOnce, ProtocolVersion::V5),
    ] {
        let o = flow::run(&opts(port, v), spec(pubs, subs, qos)).await?;
        let sent = (2000 * pubs) as f64;
        assert_eq!(num(&o, "sent"), sent);
        assert_eq!(num(&o, "received"), sent * subs as f64);
        assert_eq!(num(&o, "lost"), 0.0);
        assert_eq!(num(&o, "duplicates"), 0.0);
        assert!(num(&o, "latency_p99_us") > 0.0);
        assert_eq!(o.exit_code, 0);
    }
    Ok(())
}

#[tokio::test]
async fn paced_flow_keeps_its_rate() -> Result<()> {
    let port = testbroker::start().await?;
    let mut s = spec(1, 1, QoS::AtLeastOnce);
    s.rate = Some(2000.0);
    s.count = None;
    s.duration = Duration::from_millis(500);
    let o = flow::run(&opts(port, ProtocolVersion::V311), s).await?;
    let sent = num(&o, "sent");
    assert!((900.0..=1100.0).contains(&sent), "sent {sent}");
    assert_eq!(num(&o, "lost"), 0.0);
    Ok(())
}

#[tokio::test]
async fn idle_connections_answer_pings() -> Result<()> {
    let port = testbroker::start().await?;
    let o = idle::run(
        &opts(port, ProtocolVersion::V311),
        idle::IdleSpec {
            connections: 50,
            hold: Duration::from_millis(100),
            keep_alive: 600,
            concurrency: 10,
            pid: Some(std::process::id()),
            settle: Duration::from_millis(10),
        },
    )
    .await?;
    assert_eq!(num(&o, "alive_after_hold"), 50.0);
    assert!(o.get("bytes_per_conn").is_some());
    assert_eq!(o.exit_code, 0);
    Ok(())
}

#[tokio::test]
async fn retained_round_trip() -> Result<()> {
    let port = testbroker::start().await?;
    let o = retained::run(
        &opts(port, ProtocolVersion::V5),
        retained::RetainedSpec {
            topics: 500,
            phase: retained::Phase::Both,
            window: 50,
            sub_qos: QoS::AtMostOnce,
            wait_ready: Duration::ZERO,
            pid: None,
            timeout: Duration::from_secs(10),
            idle: Duration::from_secs(2),
            settle: Duration::ZERO,
        },
        std::time::Instant::now(),
    )
    .await?;
    assert_eq!(num(&o, "received"), 500.0);
    assert_eq!(num(&o, "missing"), 0.0);
    assert_eq!(num(&o, "wrong_payload"), 0.0);
    assert_eq!(o.exit_code, 0);
    Ok(())
}

#[tokio::test]
async fn refused_connection_is_a_clear_error() -> Result<()> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let err = flow::run(
        &opts(port, ProtocolVersion::V311),
        spec(1, 1, QoS::AtMostOnce),
    )
    .await
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    assert!(err.contains("cannot connect"), "{err}");
    Ok(())
}
