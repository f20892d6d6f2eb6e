//! Roles: named sets of permissions (an action on an ACL pattern), the five
//! built-in roles every site starts with, and the text form of a permission
//! (`publish:acme/#`) used in files and on the command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::pattern::{AclPattern, PatternError};

/// What a permission lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Publish data to topics matching the pattern.
    Publish,
    /// Subscribe with filters the pattern covers (and read history there).
    Subscribe,
    /// Write to machines: commands on tags matching the pattern (still gated
    /// by the tag's write allow-list and contract range).
    Command,
    /// Administer the resources matching the pattern (`$admin/users`,
    /// `$admin/roles`, `$admin/audit`, `$admin/config`).
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Publish,
        Action::Subscribe,
        Action::Command,
        Action::Admin,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Command => "command",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| PermissionError::UnknownAction(s.to_owned()))
    }
}

/// Admin resources, written as patterns in the `$admin/` namespace.
pub mod resource {
    pub const USERS: &str = "$admin/users";
    pub const ROLES: &str = "$admin/roles";
    pub const AUDIT: &str = "$admin/audit";
    pub const CONFIG: &str = "$admin/config";
}

/// One action on one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub action: Action,
    pub pattern: AclPattern,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PermissionError {
    #[error("permission {0:?}: expected ACTION:PATTERN, e.g. publish:acme/dallas/#")]
    Syntax(String),
    #[error("unknown action {0:?} (publish, subscribe, command or admin)")]
    UnknownAction(String),
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

impl FromStr for Permission {
    type Err = PermissionError;

    /// `ACTION:PATTERN`, e.g. `subscribe:acme/+/+/+/${username}/#`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (action, pattern) = s
            .split_once(':')
            .ok_or_else(|| PermissionError::Syntax(s.to_owned()))?;
        Ok(Permission {
            action: action.trim().parse()?,
            pattern: AclPattern::parse(pattern.trim())?,
        })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action, self.pattern)
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<Permission>,
    /// Shipped with Gantry; cannot be removed or changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub builtin: bool,
}

impl Role {
    /// The first permission granting `action` on `target` for `subject`
    /// (a topic for publish/command/admin, a filter for subscribe).
    pub fn grant(
        &self,
        action: Action,
        target: &str,
        subject: crate::pattern::Subject<'_>,
    ) -> Option<&Permission> {
        self.permissions.iter().find(|p| {
            p.action == action
                && match action {
                    Action::Subscribe => p.pattern.covers_filter(target, subject),
                    _ => p.pattern.matches_topic(target, subject),
                }
        })
    }
}

/// The permissions of a built-in role, as text (parsed by [`builtin_roles`]).
const BUILTIN: &[(&str, &str, &[&str])] = &[
    (
        "admin",
        "Everything: all data, commands, broker statistics and administration of users, roles, audit and configuration.",
        &[
            "publish:#",
            "subscribe:#",
            "subscribe:$SYS/#",
            "command:#",
            "admin:$admin/#",
        ],
    ),
    (
        "ot-engineer",
        "Runs the plant: publishes and reads all plant data, reads broker statistics, sends commands to machines (each also gated by the tag's write allow-list and range) and reloads the plant model. No user, role or audit administration.",
        &[
            "publish:#",
            "subscribe:#",
            "subscribe:$SYS/#",
            "command:#",
            "admin:$admin/config",
        ],
    ),
    (
        "it-analyst",
        "Reads all plant data, history, KPIs and dead letters, and broker statistics. Cannot publish, send commands or administer anything.",
        &["subscribe:#", "subscribe:$SYS/#"],
    ),
    (
        "security-officer",
        "Administers users and roles and reads the audit log and broker statistics, and the dead letters. Cannot read or write plant data or send commands.",
        &[
            "admin:$admin/users",
            "admin:$admin/roles",
            "admin:$admin/audit",
            "subscribe:$SYS/#",
            "subscribe:+/_dlq/#",
        ],
    ),
    (
        "device",
        "A machine or connector named after its equipment: publishes and reads only below equipment whose name is its identity (at cell or equipment level), including the commands addressed to it.",
        &[
            "publish:+/+/+/+/${identity}/#",
            "publish:+/+/+/+/+/${identity}/#",
            "subscribe:+/+/+/+/${identity}/#",
            "subscribe:+/+/+/+/+/${identity}/#",
        ],
    ),
];

/// Names of the built-in roles.
pub fn builtin_role_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _, _)| *name)
}

/// The built-in roles.
pub fn builtin_roles() -> Vec<Role> {
    BUILTIN
        .iter()
        .map(|(name, description, permissions)| Role {
            name: (*name).to_owned(),
            description: (*description).to_owned(),
            permissions: permissions.iter().filter_map(|p| p.parse().ok()).collect(),
            builtin: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_permission_parses() {
        for (name, _, permissions) in BUILTIN {
            for p in *permissions {
                assert!(p.parse::<Permission>().is_ok(), "{name}: {p}");
            }
        }
        let roles = builtin_roles();
        assert_eq!(roles.len(), BUILTIN.len());
        for (role, (_, _, permissions)) in roles.iter().zip(BUILTIN) {
            assert_eq!(role.permissions.len(), permissions.len());
        }
    }

    #[test]
    fn permission_text_round_trips() {
        let p: Permission = "subscribe:acme/+/+/+/${username}/#".parse().unwrap();
        assert_eq!(p.action, Action::Subscribe);
        assert_eq!(p.to_string(), "subscribe:acme/+/+/+/${username}/#");
        assert_eq!(
            "fly:acme/#".parse::<Permission>(),
            Err(PermissionError::UnknownAction("fly".into()))
        );
        assert!(matches!(
            "acme/#".parse::<Permission>(),
            Err(PermissionError::Syntax(_))
        ));
    }
}
