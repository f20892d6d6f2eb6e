//! Topic names and topic filters: validation, wildcard matching and shared
//! subscription syntax (`$share/<group>/<filter>`).

/// Checks a topic name used in PUBLISH or a will: non-empty, at most 65,535
/// bytes, no wildcard characters.
pub fn validate_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic name is empty".into());
    }
    if topic.len() > u16::MAX as usize {
        return Err("topic name longer than 65,535 bytes".into());
    }
    if let Some(pos) = topic.find(['+', '#']) {
        return Err(format!(
            "topic name {topic:?} contains the wildcard {:?} at byte {pos}; wildcards are only allowed in subscriptions",
            &topic[pos..pos + 1]
        ));
    }
    Ok(())
}

/// Checks a topic filter: `#` only as the last whole level, `+` only as a whole level.
pub fn validate_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("topic filter is empty".into());
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(format!(
                "topic filter {filter:?}: '#' must be the last level on its own"
            ));
        }
        if level.contains('+') && level != "+" {
            return Err(format!(
                "topic filter {filter:?}: '+' must occupy a whole level"
            ));
        }
    }
    Ok(())
}

/// A parsed subscription filter: an optional shared-subscription group and the
/// filter proper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec<'a> {
    pub share_group: Option<&'a str>,
    pub filter: &'a str,
}

/// Parses `$share/<group>/<filter>` or a plain filter, validating both.
pub fn parse_filter(raw: &str) -> Result<FilterSpec<'_>, String> {
    if let Some(rest) = raw.strip_prefix("$share/") {
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(format!(
                "shared subscription {raw:?} must be $share/<group>/<filter>"
            ));
        };
        if group.is_empty() || group.contains(['+', '#']) {
            return Err(format!(
                "shared subscription group {group:?} must be non-empty and free of wildcards"
            ));
        }
        validate_topic_filter(filter)?;
        return Ok(FilterSpec {
            share_group: Some(group),
            filter,
        });
    }
    validate_topic_filter(raw)?;
    Ok(FilterSpec {
        share_group: None,
        filter: raw,
    })
}

/// True when `topic` matches `filter`. Topics starting with `$` are not matched
/// by a filter whose first level is a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching_follows_the_specification() {
        assert!(matches("a/b/c", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(matches("+", ""));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn filters_are_validated() {
        assert!(validate_topic_filter("a/#").is_ok());
        assert!(validate_topic_filter("a/#/b").is_err());
        assert!(validate_topic_filter("a/b#").is_err());
        assert!(validate_topic_filter("a/b+/c").is_err());
        assert!(validate_topic_filter("").is_err());
        assert_eq!(
            parse_filter("$share/g1/a/+").ok(),
            Some(FilterSpec {
                share_group: Some("g1"),
                filter: "a/+"
            })
        );
        assert!(parse_filter("$share/g1").is_err());
        assert!(parse_filter("$share//a").is_err());
    }

    #[test]
    fn topic_names_reject_wildcards() {
        assert!(validate_topic_name("a/b").is_ok());
        assert!(validate_topic_name("a/+").is_err());
        assert!(validate_topic_name("").is_err());
    }
}
