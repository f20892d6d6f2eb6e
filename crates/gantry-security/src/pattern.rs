//! ACL patterns: MQTT topic filters (`+`, `#`) whose levels may also be a
//! placeholder for the connecting client's own identity (`${username}`,
//! `${identity}`, `${client_id}`), and the two questions a permission asks
//! of them: does this topic fall inside the pattern, and is every topic a
//! subscription filter can match inside it.

use std::fmt;

use thiserror::Error;

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`: exactly one level.
    Single,
    /// `#`: this level and everything below (last level only).
    Multi,
    /// `${username}` / `${identity}`: the authenticated identity's name.
    Identity,
    /// `${client_id}`: the MQTT client identifier.
    ClientId,
}

/// A parsed ACL pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclPattern {
    raw: String,
    levels: Vec<Level>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {pattern:?}: `#` must be the last level")]
    MultiNotLast { pattern: String },
    #[error(
        "pattern {pattern:?}: level {level:?} mixes a wildcard or placeholder with text; use a whole level"
    )]
    MixedLevel { pattern: String, level: String },
    #[error(
        "pattern {pattern:?}: unknown placeholder {placeholder:?} (use ${{username}}, ${{identity}} or ${{client_id}})"
    )]
    UnknownPlaceholder {
        pattern: String,
        placeholder: String,
    },
}

/// Whose values the placeholders take.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub identity: Option<&'a str>,
    pub client_id: &'a str,
}

impl AclPattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        let parts: Vec<&str> = raw.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Single,
                "#" if i + 1 == parts.len() => Level::Multi,
                "#" => {
                    return Err(PatternError::MultiNotLast {
                        pattern: raw.to_owned(),
                    });
                }
                "${username}" | "${identity}" => Level::Identity,
                "${client_id}" | "${clientid}" => Level::ClientId,
                p if p.starts_with("${") && p.ends_with('}') => {
                    return Err(PatternError::UnknownPlaceholder {
                        pattern: raw.to_owned(),
                        placeholder: p.to_owned(),
                    });
                }
                p if p.contains(['+', '#']) || p.contains("${") => {
                    return Err(PatternError::MixedLevel {
                        pattern: raw.to_owned(),
                        level: p.to_owned(),
                    });
                }
                p => Level::Literal(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(Self {
            raw: raw.to_owned(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when `topic` (a concrete topic name) lies inside the pattern.
    /// As in MQTT, a leading wildcard does not reach `$` topics.
    pub fn matches_topic(&self, topic: &str, subject: Subject<'_>) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        if let [Level::Multi] = self.levels.as_slice() {
            // `#`: every non-`$` topic (the common grant, checked per publish).
            return true;
        }
        let mut levels = self.levels.iter();
        for part in topic.split('/') {
            match levels.next() {
                None => return false,
                Some(Level::Multi) => return true,
                Some(Level::Single) => {}
                Some(level) => {
                    if !level_equals(level, part, subject) {
                        return false;
                    }
                }
            }
        }
        // `a/#` also covers `a` itself.
        matches!(levels.next(), None | Some(Level::Multi)) && levels.next().is_none()
    }

    /// True when every topic that `filter` (a subscription filter) can match
    /// lies inside the pattern: `acme/#` covers `acme/dallas/+/line-1`, `+`
    /// covers a literal or `+` but not `#`.
    pub fn covers_filter(&self, filter: &str, subject: Subject<'_>) -> bool {
        if filter.starts_with('$') && !matches!(self.levels.first(), Some(Level::Literal(_))) {
            return false;
        }
        let mut levels = self.levels.iter();
        for part in filter.split('/') {
            match levels.next() {
                None => return false,
                Some(Level::Multi) => return true,
                Some(Level::Single) => {
                    if part == "#" {
                        return false;
                    }
                }
                Some(level) => {
                    if part == "+" || part == "#" || !level_equals(level, part, subject) {
                        return false;
                    }
                }
            }
        }
        matches!(levels.next(), None | Some(Level::Multi)) && levels.next().is_none()
    }
}

/// A literal or placeholder level against one concrete level. A placeholder
/// whose value is missing, empty or contains a wildcard never matches.
fn level_equals(level: &Level, part: &str, subject: Subject<'_>) -> bool {
    let usable = |v: &str| !v.is_empty() && !v.contains(['+', '#', '/']);
    match level {
        Level::Literal(l) => l == part,
        Level::Identity => subject.identity.is_some_and(|v| usable(v) && v == part),
        Level::ClientId => usable(subject.client_id) && subject.client_id == part,
        Level::Single | Level::Multi => true,
    }
}

impl fmt::Display for AclPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(raw: &str) -> AclPattern {
        AclPattern::parse(raw).unwrap()
    }

    const ANNA: Subject<'static> = Subject {
        identity: Some("filler-plc"),
        client_id: "dev-42",
    };

    #[test]
    fn topics_inside_and_outside() {
        assert!(p("acme/#").matches_topic("acme/dallas/x", ANNA));
        assert!(p("acme/#").matches_topic("acme", ANNA));
        assert!(!p("acme/#").matches_topic("other/x", ANNA));
        assert!(p("acme/+/x").matches_topic("acme/a/x", ANNA));
        assert!(!p("acme/+/x").matches_topic("acme/a/b/x", ANNA));
        assert!(!p("acme/+").matches_topic("acme", ANNA));
        assert!(p("#").matches_topic("acme/x", ANNA));
        assert!(!p("#").matches_topic("$SYS/broker/uptime", ANNA));
        assert!(p("$SYS/#").matches_topic("$SYS/broker/uptime", ANNA));
    }

    #[test]
    fn placeholders_take_the_clients_own_values() {
        let own = p("acme/+/+/+/${username}/#");
        assert!(own.matches_topic("acme/dallas/packaging/line-1/filler-plc/speed", ANNA));
        assert!(!own.matches_topic("acme/dallas/packaging/line-1/capper/speed", ANNA));
        let anonymous = Subject {
            identity: None,
            client_id: "x",
        };
        assert!(!own.matches_topic("acme/dallas/packaging/line-1/filler-plc/speed", anonymous));
        assert!(p("clients/${client_id}/#").matches_topic("clients/dev-42/a", ANNA));
        // A client id that is itself a wildcard never matches anything.
        let sneaky = Subject {
            identity: Some("+"),
            client_id: "#",
        };
        assert!(!own.covers_filter("acme/+/+/+/+/#", sneaky));
        assert!(!p("clients/${client_id}/#").covers_filter("clients/#", sneaky));
    }

    #[test]
    fn filters_covered_by_patterns() {
        assert!(p("acme/#").covers_filter("acme/dallas/+/line-1", ANNA));
        assert!(p("acme/#").covers_filter("acme/#", ANNA));
        assert!(!p("acme/dallas/#").covers_filter("acme/#", ANNA));
        assert!(!p("acme/dallas/#").covers_filter("acme/+/x", ANNA));
        assert!(p("acme/+/x").covers_filter("acme/+/x", ANNA));
        assert!(!p("acme/+/x").covers_filter("acme/#", ANNA));
        assert!(!p("#").covers_filter("$SYS/#", ANNA));
        // `+/broker` never matches `$SYS/broker` in MQTT, so `#` may grant it.
        assert!(p("#").covers_filter("+/broker", ANNA));
        assert!(p("$SYS/#").covers_filter("$SYS/broker/#", ANNA));
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert_eq!(AclPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            AclPattern::parse("a/#/b"),
            Err(PatternError::MultiNotLast { .. })
        ));
        assert!(matches!(
            AclPattern::parse("a/x+/b"),
            Err(PatternError::MixedLevel { .. })
        ));
        assert!(matches!(
            AclPattern::parse("a/${user}/b"),
            Err(PatternError::UnknownPlaceholder { .. })
        ));
    }
}
