//! `/metrics` in the Prometheus text format: broker counters, data
//! contracts, the historian, connector health, live KPI values, the audit
//! log and the console itself.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use gantry_security::Action;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::SharedState;

/// One metric family: its header and its samples, kept together.
struct Family {
    kind: &'static str,
    help: &'static str,
    samples: String,
}

/// Builds the exposition text: each family's samples together under one
/// `# HELP`/`# TYPE`, families in the order they first appear.
#[derive(Default)]
pub struct Exposition {
    order: Vec<String>,
    families: std::collections::HashMap<String, Family>,
}

fn metric_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn label_value(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

impl Exposition {
    pub fn sample(
        &mut self,
        name: &str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if !value.is_finite() {
            return;
        }
        if !self.families.contains_key(name) {
            self.order.push(name.to_owned());
        }
        let family = self.families.entry(name.to_owned()).or_insert(Family {
            kind,
            help,
            samples: String::new(),
        });
        let out = &mut family.samples;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"{}\"", label_value(v));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }

    /// Every number (and boolean, as 0/1) at the top level of a JSON object
    /// and one level down, named `<prefix>_<key>[_<subkey>]`. Objects named
    /// in `by_label` (key → label) are keyed by data (topics, client ids):
    /// their entries become one family `<prefix>_<key>` with the entry's
    /// key as that label, never part of a metric name.
    pub fn flatten(
        &mut self,
        prefix: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        by_label: &[(&str, &str)],
        json: &serde_json::Value,
    ) {
        let Some(obj) = json.as_object() else { return };
        for (key, value) in obj {
            let name = format!("{prefix}_{}", metric_name(key));
            if let Some((_, label)) = by_label.iter().find(|(k, _)| k == key) {
                for (entry, v) in value.as_object().into_iter().flatten() {
                    if let Some(v) = number(v) {
                        let mut all = labels.to_vec();
                        all.push((label, entry));
                        self.sample(&name, "gauge", help, &all, v);
                    }
                }
                continue;
            }
            match value {
                serde_json::Value::Object(inner) => {
                    for (sub, v) in inner {
                        if let Some(v) = number(v) {
                            let sub_name = format!("{name}_{}", metric_name(sub));
                            self.sample(&sub_name, "gauge", help, labels, v);
                        }
                    }
                }
                v => {
                    if let Some(v) = number(v) {
                        self.sample(&name, "gauge", help, labels, v);
                    }
                }
            }
        }
    }

    pub fn finish(self) -> String {
        let mut text = String::new();
        for name in &self.order {
            if let Some(f) = self.families.get(name) {
                let _ = writeln!(text, "# HELP {name} {}", f.help);
                let _ = writeln!(text, "# TYPE {name} {}", f.kind);
                text.push_str(&f.samples);
            }
        }
        text
    }
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<SharedState>, caller: Caller) -> ApiResult<Response> {
    caller.require(&state, Action::Subscribe, "$SYS/#")?;
    let mut out = Exposition::default();
    let s = state.broker().stats();
    let counters: [(&str, &str, u64); 11] = [
        (
            "gantry_broker_connections_total",
            "Connections accepted since start.",
            s.connections_total,
        ),
        (
            "gantry_broker_messages_received_total",
            "PUBLISH packets accepted.",
            s.messages_received,
        ),
        (
            "gantry_broker_messages_sent_total",
            "PUBLISH packets delivered.",
            s.messages_sent,
        ),
        (
            "gantry_broker_messages_dropped_total",
            "Deliveries dropped (queues full, expired).",
            s.messages_dropped,
        ),
        (
            "gantry_broker_publishes_rejected_total",
            "Publishes refused (ACL, contracts, limits).",
            s.publishes_rejected,
        ),
        (
            "gantry_broker_bytes_received_total",
            "Bytes read from clients.",
            s.bytes_received,
        ),
        (
            "gantry_broker_bytes_sent_total",
            "Bytes written to clients.",
            s.bytes_sent,
        ),
        (
            "gantry_broker_protocol_errors_total",
            "Connections closed for protocol errors.",
            s.protocol_errors,
        ),
        (
            "gantry_broker_clients_throttled_total",
            "Times a client was slowed for its publish rate.",
            s.clients_throttled,
        ),
        (
            "gantry_broker_connections_rate_limited_total",
            "Connections refused for their address's rate.",
            s.connections_rate_limited,
        ),
        (
            "gantry_broker_uptime_seconds",
            "Seconds since the broker started.",
            s.uptime_secs,
        ),
    ];
    for (name, help, v) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.sample(name, kind, help, &[], v as f64);
    }
    let gauges: [(&str, &str, u64); 4] = [
        (
            "gantry_broker_clients_connected",
            "Clients connected now.",
            s.clients_connected,
        ),
        (
            "gantry_broker_sessions",
            "Sessions (connected and persistent).",
            s.sessions,
        ),
        (
            "gantry_broker_retained_messages",
            "Retained topics: the live namespace.",
            s.retained,
        ),
        (
            "gantry_broker_subscriptions",
            "Subscriptions.",
            s.subscriptions,
        ),
    ];
    for (name, help, v) in gauges {
        out.sample(name, "gauge", help, &[], v as f64);
    }
    if let Some(c) = &state.deps.contracts
        && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&c.stats_json())
    {
        out.flatten(
            "gantry_contracts",
            "Data contract statistics ($SYS/broker/contracts).",
            &[],
            &[("by_path", "path"), ("by_client", "client_id")],
            &json,
        );
    }
    if let Some(h) = &state.deps.historian
        && let Ok(json) = serde_json::to_value(h.status())
    {
        out.flatten(
            "gantry_historian",
            "Historian status ($SYS/broker/historian).",
            &[],
            &[],
            &json,
        );
    }
    for m in state.broker().retained_matching("+/_sys/connectors/#") {
        let mut levels = m.topic.split('/').skip(3);
        let (Some(connector), Some(name)) = (levels.next(), levels.next()) else {
            continue;
        };
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&m.payload) {
            out.flatten(
                "gantry_connector",
                "Connector health (<enterprise>/_sys/connectors/).",
                &[("connector", connector), ("name", name)],
                &[],
                &json,
            );
        }
    }
    if let Some(kpi) = &state.deps.kpi {
        let paths = kpi
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paths()
            .to_vec();
        for path in paths {
            for m in state.broker().retained_matching(&format!("{path}/_kpi/+")) {
                let Some(name) = m.topic.rsplit('/').next() else {
                    continue;
                };
                if let Some(v) = gantry_model::SampleRef::parse_compact(&m.payload)
                    .and_then(|s| s.to_sample().value.as_f64())
                {
                    out.sample(
                        "gantry_kpi",
                        "gauge",
                        "Live KPI of the current shift (ISO 22400), as published under <path>/_kpi/.",
                        &[("path", &path), ("kpi", name)],
                        v,
                    );
                }
            }
        }
    }
    if let Some(audit) = state.security().audit() {
        let h = audit.health();
        out.sample(
            "gantry_audit_last_seq",
            "gauge",
            "Sequence number of the last audit record.",
            &[],
            h.last_seq as f64,
        );
        out.sample(
            "gantry_audit_pending",
            "gauge",
            "Audit records not yet durable.",
            &[],
            h.pending as f64,
        );
        out.sample(
            "gantry_audit_failing",
            "gauge",
            "1 while audit writes fail.",
            &[],
            f64::from(u8::from(h.failing)),
        );
        out.sample(
            "gantry_audit_dropped_total",
            "counter",
            "Audit records dropped (queue full).",
            &[],
            h.dropped as f64,
        );
    }
    let live = state.deps.live.stats();
    out.sample(
        "gantry_console_sessions",
        "gauge",
        "Console and API sessions.",
        &[],
        state.sessions.len() as f64,
    );
    out.sample(
        "gantry_console_live_feeds",
        "gauge",
        "Open live feeds.",
        &[],
        live.feeds as f64,
    );
    out.sample(
        "gantry_console_live_changes_sent_total",
        "counter",
        "Changes sent on live feeds.",
        &[],
        live.changes_sent as f64,
    );
    out.sample(
        "gantry_console_live_changes_dropped_total",
        "counter",
        "Changes left out of live events (burst cap).",
        &[],
        live.changes_dropped as f64,
    );
    out.sample(
        "gantry_console_live_events_sent_total",
        "counter",
        "Events sent on live feeds.",
        &[],
        live.events_sent as f64,
    );
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out.finish(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_declared_once_and_labels_escaped() {
        let mut e = Exposition::default();
        e.sample("g", "gauge", "help", &[("path", "a\"b")], 1.0);
        e.sample("h", "gauge", "help", &[], 5.0);
        e.sample("g", "gauge", "help", &[("path", "c")], 2.0);
        e.sample("g", "gauge", "help", &[], f64::NAN);
        e.flatten(
            "x",
            "h",
            &[],
            &[("by_client", "client_id")],
            &serde_json::json!({"a-b": 3, "ok": true, "m": {"k": 4}, "s": "t", "by_client": {"a.b": 1, "a-b": 2}}),
        );
        let text = e.finish();
        assert_eq!(text.matches("# TYPE g gauge").count(), 1);
        // A family's samples are together, before the next family.
        let g = text.find("g{path=\"c\"}").unwrap_or(usize::MAX);
        let h = text.find("# TYPE h").unwrap_or(0);
        assert!(g < h, "{text}");
        assert!(text.contains("x_by_client{client_id=\"a.b\"} 1\n"));
        assert!(text.contains("x_by_client{client_id=\"a-b\"} 2\n"));
        assert!(text.contains("g{path=\"a\\\"b\"} 1\n"));
        assert!(text.contains("x_a_b 3\n"));
        assert!(text.contains("x_ok 1\n"));
        assert!(text.contains("x_m_k 4\n"));
        assert!(!text.contains("x_s"));
    }
}
