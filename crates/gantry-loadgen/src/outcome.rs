//! The result of one scenario run: named fields in a fixed order, printed either
//! as an aligned text block or as one JSON line (`--json`) that `report` and
//! `bench/run.sh` consume.
//!
//! `headline` names the fields that go into the side-by-side benchmark table.
//! A field whose name ends in `_per_s` is better when higher; any other is
//! better when lower.

use serde_json::{Map, Value};

use crate::Common;

pub struct Outcome {
    scenario: &'static str,
    fields: Vec<(String, Value)>,
    headline: Vec<String>,
    warnings: Vec<String>,
    /// Process exit code once printed (non-zero for failed checks).
    pub exit_code: i32,
}

/// Rounds to `digits` decimals so JSON and text stay readable.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

impl Outcome {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            fields: Vec::new(),
            headline: Vec::new(),
            warnings: Vec::new(),
            exit_code: 0,
        }
    }

    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.push((name.to_string(), value.into()));
        self
    }

    /// Sets a field and puts it in the headline.
    pub fn headline(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.headline.push(name.to_string());
        self.set(name, value)
    }

    /// A field's value, for tests.
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    pub fn print(&self, common: &Common) {
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        if common.json {
            let mut m = Map::new();
            m.insert("scenario".into(), self.scenario.into());
            m.insert("label".into(), common.label_or(self.scenario).into());
            m.insert("broker".into(), common.broker.clone().into());
            m.insert("host".into(), common.host.clone().into());
            m.insert("port".into(), common.port.into());
            m.insert("mqtt_version".into(), common.version.into());
            for (k, v) in &self.fields {
                m.insert(k.clone(), v.clone());
            }
            m.insert("headline".into(), self.headline.clone().into());
            m.insert("warnings".into(), self.warnings.clone().into());
            println!("{}", Value::Object(m));
        } else {
            println!(
                "{} against {}:{} (MQTT {})",
                self.scenario,
                common.host,
                common.port,
                if common.version == 5 { "5.0" } else { "3.1.1" }
            );
            let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in &self.fields {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mark = if self.headline.contains(k) { "*" } else { " " };
                println!("  {mark}{k:<width$}  {shown}");
            }
        }
    }
}
