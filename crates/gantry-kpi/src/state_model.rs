//! State models: which ISO 22400 time bucket each machine state (and reason
//! code) belongs to, and which states are failures (for MTBF and MTTR).
//!
//! Three models ship with Gantry ([`StateModel::builtin`]): `gantry` for the
//! demo plant's state names, `packml` for the ISA-TR88 PackML states and
//! `umh` for the United Manufacturing Hub state codes. An enterprise
//! standard or a site model may define its own. Rules are tried in order;
//! the first that matches wins. A state no rule matches is `UNKNOWN`: a
//! loss inside planned busy time, reported on its own, never excluded time.

use serde::Serialize;

use crate::elements::TimeBucket;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateMatch {
    /// A state name, compared case-insensitively.
    Name(String),
    /// A numeric state code in `[from, to]` (a single code has from == to).
    Codes { from: i64, to: i64 },
}

impl StateMatch {
    fn matches(&self, state: &str, code: Option<i64>) -> bool {
        match self {
            StateMatch::Name(name) => name.eq_ignore_ascii_case(state),
            StateMatch::Codes { from, to } => code.is_some_and(|c| (*from..=*to).contains(&c)),
        }
    }
}

impl std::fmt::Display for StateMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateMatch::Name(n) => write!(f, "\"{n}\""),
            StateMatch::Codes { from, to } if from == to => write!(f, "{from}"),
            StateMatch::Codes { from, to } => write!(f, "{from}-{to}"),
        }
    }
}

/// One rule of a state model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateRule {
    pub state: StateMatch,
    /// Only when the reason (the reason tag's value) is this, compared
    /// case-insensitively.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bucket: TimeBucket,
    /// Entering this state is a failure event (FE).
    pub failure: bool,
    /// What the state means, for explanations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// How a state was classified, and by which rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    pub bucket: TimeBucket,
    pub failure: bool,
    /// The rule that matched, as text (`"faulted" → ADOT, failure`), or why
    /// none did.
    pub rule: String,
}

/// A named mapping from states to time buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateModel {
    pub name: String,
    pub description: String,
    pub rules: Vec<StateRule>,
}

fn rule(state: StateMatch, bucket: TimeBucket, failure: bool, label: &str) -> StateRule {
    StateRule {
        state,
        reason: None,
        bucket,
        failure,
        label: Some(label.to_string()),
    }
}

fn name(n: &str) -> StateMatch {
    StateMatch::Name(n.to_string())
}

fn codes(from: i64, to: i64) -> StateMatch {
    StateMatch::Codes { from, to }
}

impl StateModel {
    /// The names of the built-in models.
    pub const BUILTIN: &[&str] = &["gantry", "packml", "umh"];

    /// A built-in model by name.
    pub fn builtin(model: &str) -> Option<StateModel> {
        use TimeBucket::*;
        let (description, rules) = match model {
            "gantry" => (
                "Gantry's machine states (the demo plant): running, idle, starved, blocked, faulted, changeover, planned-stop",
                vec![
                    rule(name("running"), Apt, false, "producing"),
                    rule(name("changeover"), Aust, false, "product changeover"),
                    rule(
                        name("starved"),
                        Adet,
                        false,
                        "waiting for material from upstream",
                    ),
                    rule(name("blocked"), Adet, false, "held up by downstream"),
                    rule(name("faulted"), Adot, true, "breakdown"),
                    rule(
                        name("idle"),
                        Adot,
                        false,
                        "stopped without a fault (no order)",
                    ),
                    rule(name("planned-stop"), Pdot, false, "planned stop"),
                ],
            ),
            // ISA-TR88.00.02 states; see docs/kpi.md for the reasoning.
            "packml" => (
                "PackML (ISA-TR88.00.02) states, by name or by number 1-17",
                [
                    ("execute", 6, Apt, false, "producing"),
                    (
                        "held",
                        11,
                        Adet,
                        false,
                        "held (internal fault or condition)",
                    ),
                    ("holding", 10, Adet, false, "going to held"),
                    ("unholding", 12, Adet, false, "leaving held"),
                    ("suspended", 5, Adet, false, "starved or blocked"),
                    ("suspending", 13, Adet, false, "going to suspended"),
                    ("unsuspending", 14, Adet, false, "leaving suspended"),
                    ("aborted", 9, Adot, true, "aborted (fault)"),
                    ("aborting", 8, Adot, true, "aborting (fault)"),
                    ("clearing", 1, Adot, false, "clearing after an abort"),
                    ("stopped", 2, Adot, false, "stopped"),
                    ("stopping", 7, Adot, false, "stopping"),
                    ("resetting", 15, Adot, false, "resetting"),
                    ("idle", 4, Adot, false, "idle (no order)"),
                    ("starting", 3, Aust, false, "starting up"),
                    ("completing", 16, Adot, false, "completing"),
                    ("complete", 17, Adot, false, "order complete"),
                ]
                .into_iter()
                .flat_map(|(n, c, bucket, failure, label)| {
                    [
                        rule(name(n), bucket, failure, label),
                        rule(codes(c, c), bucket, failure, label),
                    ]
                })
                .collect(),
            ),
            // UMH state codes: a class of 10,000 codes inherits its meaning.
            "umh" => (
                "United Manufacturing Hub state codes (10000 producing ... 220000 technical other)",
                vec![
                    rule(codes(10_000, 29_999), Apt, false, "producing"),
                    rule(codes(30_000, 39_999), Unknown, false, "unknown state"),
                    rule(codes(40_200, 40_299), Adet, false, "operator interaction"),
                    rule(
                        codes(40_000, 49_999),
                        Adot,
                        false,
                        "unspecified stop or idle",
                    ),
                    rule(codes(50_000, 59_999), Adet, false, "micro-stop"),
                    rule(
                        codes(60_000, 99_999),
                        Adet,
                        false,
                        "material issue (jam, congestion)",
                    ),
                    rule(
                        codes(100_000, 139_999),
                        Aust,
                        false,
                        "changeover, cleaning, emptying, setting up",
                    ),
                    rule(
                        codes(140_000, 149_999),
                        Adet,
                        false,
                        "operator not at machine",
                    ),
                    rule(codes(150_000, 159_999), Pdot, false, "operator break"),
                    rule(codes(160_000, 169_999), Outside, false, "no shift"),
                    rule(codes(170_000, 179_999), Adot, false, "no order"),
                    rule(codes(180_000, 189_999), Adot, true, "equipment failure"),
                    rule(codes(190_000, 199_999), Adot, true, "external failure"),
                    rule(
                        codes(200_000, 209_999),
                        Adet,
                        false,
                        "external interference",
                    ),
                    rule(
                        codes(210_000, 219_999),
                        Pdot,
                        false,
                        "preventive maintenance",
                    ),
                    rule(codes(220_000, 229_999), Adot, false, "technical other"),
                ],
            ),
            _ => return None,
        };
        Some(StateModel {
            name: model.to_string(),
            description: description.to_string(),
            rules,
        })
    }

    /// Classifies a state value (and its reason, if any).
    pub fn classify(&self, state: &str, reason: Option<&str>) -> Classified {
        let code = state.trim().parse::<i64>().ok();
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        for r in &self.rules {
            let reason_ok = match (&r.reason, reason) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            if reason_ok && r.state.matches(state, code) {
                let mut text = format!("{}", r.state);
                if let Some(want) = &r.reason {
                    text.push_str(&format!(" with reason \"{want}\""));
                }
                text.push_str(&format!(" → {}", r.bucket));
                if r.failure {
                    text.push_str(", failure");
                }
                return Classified {
                    bucket: r.bucket,
                    failure: r.failure,
                    rule: text,
                };
            }
        }
        Classified {
            bucket: TimeBucket::Unknown,
            failure: false,
            rule: format!(
                "\"{state}\" is not in state model {}: counted as UNKNOWN",
                self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_models_map_their_states() {
        let g = StateModel::builtin("gantry").expect("gantry");
        assert_eq!(g.classify("running", None).bucket, TimeBucket::Apt);
        assert_eq!(g.classify("RUNNING", None).bucket, TimeBucket::Apt);
        let f = g.classify("faulted", Some("jam"));
        assert_eq!((f.bucket, f.failure), (TimeBucket::Adot, true));
        assert_eq!(g.classify("planned-stop", None).bucket, TimeBucket::Pdot);
        assert_eq!(g.classify("changeover", None).bucket, TimeBucket::Aust);
        let unknown = g.classify("exploded", None);
        assert_eq!(unknown.bucket, TimeBucket::Unknown);
        assert!(
            unknown.rule.contains("not in state model gantry"),
            "{}",
            unknown.rule
        );

        let p = StateModel::builtin("packml").expect("packml");
        assert_eq!(p.classify("Execute", None).bucket, TimeBucket::Apt);
        assert_eq!(p.classify("6", None).bucket, TimeBucket::Apt);
        assert_eq!(p.classify("11", None).bucket, TimeBucket::Adet);
        assert!(p.classify("Aborted", None).failure);

        let u = StateModel::builtin("umh").expect("umh");
        assert_eq!(u.classify("10000", None).bucket, TimeBucket::Apt);
        assert_eq!(u.classify("20000", None).bucket, TimeBucket::Apt);
        assert_eq!(u.classify("30000", None).bucket, TimeBucket::Unknown);
        assert_eq!(u.classify("40200", None).bucket, TimeBucket::Adet);
        assert_eq!(u.classify("40100", None).bucket, TimeBucket::Adot);
        assert_eq!(u.classify("100010", None).bucket, TimeBucket::Aust);
        assert_eq!(u.classify("160000", None).bucket, TimeBucket::Outside);
        assert_eq!(u.classify("170000", None).bucket, TimeBucket::Adot);
        assert!(u.classify("180000", None).failure);
        assert_eq!(u.classify("210000", None).bucket, TimeBucket::Pdot);
        assert_eq!(u.classify("999999", None).bucket, TimeBucket::Unknown);
        assert!(StateModel::builtin("nope").is_none());
    }

    #[test]
    fn reason_rules_come_before_the_state_rule() {
        let m = StateModel {
            name: "t".into(),
            description: String::new(),
            rules: vec![
                StateRule {
                    state: StateMatch::Name("stopped".into()),
                    reason: Some("maintenance".into()),
                    bucket: TimeBucket::Pdot,
                    failure: false,
                    label: None,
                },
                StateRule {
                    state: StateMatch::Name("stopped".into()),
                    reason: None,
                    bucket: TimeBucket::Adot,
                    failure: true,
                    label: None,
                },
            ],
        };
        assert_eq!(
            m.classify("stopped", Some("Maintenance")).bucket,
            TimeBucket::Pdot
        );
        let c = m.classify("stopped", Some("jam"));
        assert_eq!((c.bucket, c.failure), (TimeBucket::Adot, true));
        assert_eq!(c.rule, "\"stopped\" → ADOT, failure");
        assert_eq!(m.classify("stopped", None).bucket, TimeBucket::Adot);
    }
}
