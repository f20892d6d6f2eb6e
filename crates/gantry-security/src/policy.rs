//! The one access check: may this identity (or an anonymous client) perform
//! this action on this path? MQTT publish and subscribe, write commands,
//! history queries and the HTTP API all ask [`Policy::check`]. Default deny:
//! nothing is allowed unless a role of the identity, or the configured
//! anonymous access, grants it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pattern::{AclPattern, Subject};
use crate::role::{Action, Permission, Role, builtin_roles};
use crate::store::{Identity, IdentityKind, SecurityFile};

/// What anonymous clients may do (from `[auth.anonymous]`); nothing unless
/// configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnonymousAccess {
    pub permissions: Vec<Permission>,
    /// Only clients connecting from a loopback address (the demo).
    pub loopback_only: bool,
}

impl AnonymousAccess {
    pub fn enabled(&self) -> bool {
        !self.permissions.is_empty()
    }
}

/// An identity as the policy sees it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub kind: IdentityKind,
    pub roles: Vec<Arc<Role>>,
    pub disabled: bool,
    pub break_glass: bool,
    pub certificate: bool,
    pub password: Option<String>,
}

/// The answer of [`Policy::check`], with the reason for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Roles and identities compiled for fast checks.
#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<String, Arc<Role>>,
    principals: HashMap<Arc<str>, Principal>,
    anonymous: AnonymousAccess,
}

impl Policy {
    pub fn new(file: &SecurityFile, anonymous: AnonymousAccess) -> Self {
        let roles: HashMap<String, Arc<Role>> = builtin_roles()
            .into_iter()
            .chain(file.roles.iter().cloned())
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect();
        let principals = file
            .identities
            .iter()
            .map(|i| {
                let p = principal(i, &roles);
                (p.name.clone(), p)
            })
            .collect();
        Self {
            roles,
            principals,
            anonymous,
        }
    }

    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.principals.get(name)
    }

    pub fn identity_count(&self) -> usize {
        self.principals.len()
    }

    pub fn anonymous(&self) -> &AnonymousAccess {
        &self.anonymous
    }

    pub fn role(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.get(name)
    }

    /// May `identity` (or, with `None`, an anonymous client) perform
    /// `action` on `target`? `target` is a topic for publish, command and
    /// admin, and a subscription filter for subscribe.
    pub fn check(
        &self,
        identity: Option<&str>,
        client_id: &str,
        action: Action,
        target: &str,
    ) -> Decision {
        let subject = Subject {
            identity,
            client_id,
        };
        let Some(name) = identity else {
            let granted = self.anonymous.permissions.iter().find(|p| {
                p.action == action
                    && match action {
                        Action::Subscribe => p.pattern.covers_filter(target, subject),
                        _ => p.pattern.matches_topic(target, subject),
                    }
            });
            return match granted {
                Some(p) => Decision {
                    allowed: true,
                    reason: format!("anonymous access grants {p}"),
                },
                None => Decision {
                    allowed: false,
                    reason: format!(
                        "anonymous clients may not {action} on {target:?} (default deny)"
                    ),
                },
            };
        };
        let Some(principal) = self.principals.get(name) else {
            return Decision {
                allowed: false,
                reason: format!("identity {name:?} no longer exists"),
            };
        };
        if principal.disabled {
            return Decision {
                allowed: false,
                reason: format!("identity {name:?} is disabled"),
            };
        }
        for role in &principal.roles {
            if let Some(p) = role.grant(action, target, subject) {
                return Decision {
                    allowed: true,
                    reason: format!("role {} grants {p}", role.name),
                };
            }
        }
        let roles: Vec<&str> = principal.roles.iter().map(|r| r.name.as_str()).collect();
        Decision {
            allowed: false,
            reason: format!(
                "no role of {name:?} ({}) grants {action} on {target:?}",
                if roles.is_empty() {
                    "none".to_owned()
                } else {
                    roles.join(", ")
                }
            ),
        }
    }

    /// True when `identity` (None = anonymous) holds a subscribe permission
    /// whose pattern could match some topic at or below `path` (a topic-like
    /// path without wildcards; "" = the root). Used to show namespace nodes on
    /// the way down to what the identity may read (a device role granted
    /// `+/+/+/+/${identity}/#` sees `acme` and `acme/dallas` as nodes).
    /// `${client_id}` takes the console's client id, "console".
    pub fn may_read_below(&self, identity: Option<&str>, path: &str) -> bool {
        let subject = Subject {
            identity,
            client_id: CONSOLE_CLIENT_ID,
        };
        let reads_below = |p: &Permission| {
            p.action == Action::Subscribe && reaches_below(&p.pattern, path, subject)
        };
        match identity {
            None => self.anonymous.permissions.iter().any(reads_below),
            Some(name) => self.principals.get(name).is_some_and(|principal| {
                !principal.disabled
                    && principal
                        .roles
                        .iter()
                        .any(|r| r.permissions.iter().any(reads_below))
            }),
        }
    }
}

/// The client id that `${client_id}` takes in [`Policy::may_read_below`]:
/// the HTTP console's.
const CONSOLE_CLIENT_ID: &str = "console";

/// True when `pattern` could match `path` or a topic below it: its first
/// levels, as many as `path` has (or up to its `#`), match `path`. Reusing
/// [`AclPattern::matches_topic`] on that prefix keeps placeholders and the
/// `$` rule exactly as in every other check.
fn reaches_below(pattern: &AclPattern, path: &str, subject: Subject<'_>) -> bool {
    if path.is_empty() {
        return true;
    }
    let depth = path.split('/').count();
    let mut levels: Vec<&str> = pattern.as_str().split('/').take(depth).collect();
    if let Some(multi) = levels.iter().position(|l| *l == "#") {
        levels.truncate(multi + 1);
    } else if levels.len() < depth {
        return false;
    }
    AclPattern::parse(&levels.join("/")).is_ok_and(|p| p.matches_topic(path, subject))
}

fn principal(identity: &Identity, roles: &HashMap<String, Arc<Role>>) -> Principal {
    Principal {
        name: Arc::from(identity.name.as_str()),
        kind: identity.kind,
        roles: identity
            .roles
            .iter()
            .filter_map(|r| roles.get(r).cloned())
            .collect(),
        disabled: identity.disabled,
        break_glass: identity.break_glass,
        certificate: identity.certificate,
        password: identity.password.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::resource;

    fn file(identities: &[(&str, &str)]) -> SecurityFile {
        SecurityFile {
            version: 1,
            identities: identities
                .iter()
                .map(|(name, role)| Identity {
                    name: (*name).into(),
                    kind: IdentityKind::Human,
                    roles: vec![(*role).into()],
                    password: None,
                    certificate: false,
                    disabled: false,
                    break_glass: false,
                    description: String::new(),
                    created_ms: 0,
                    updated_ms: 0,
                })
                .collect(),
            roles: Vec::new(),
        }
    }

    const DATA: &str = "acme/dallas/packaging/line-1/filler/speed";
    const SYS: &str = "$SYS/broker/clients/connected";

    /// What each built-in role may do, as its description says.
    #[test]
    fn builtin_role_matrix() {
        let policy = Policy::new(
            &file(&[
                ("ada", "admin"),
                ("otto", "ot-engineer"),
                ("ida", "it-analyst"),
                ("sec", "security-officer"),
                ("filler", "device"),
            ]),
            AnonymousAccess::default(),
        );
        let can = |who: &str, action: Action, target: &str| {
            policy.check(Some(who), "c", action, target).allowed
        };
        use Action::*;
        let rows: &[(&str, [bool; 9])] = &[
            //          pub    sub    sub#   sub$SYS cmd   users  roles  audit  config
            (
                "ada",
                [true, true, true, true, true, true, true, true, true],
            ),
            (
                "otto",
                [true, true, true, true, true, false, false, false, true],
            ),
            (
                "ida",
                [false, true, true, true, false, false, false, false, false],
            ),
            (
                "sec",
                [false, false, false, true, false, true, true, true, false],
            ),
            (
                "filler",
                [true, true, false, false, false, false, false, false, false],
            ),
        ];
        for (who, expected) in rows {
            let got = [
                can(who, Publish, DATA),
                can(who, Subscribe, "acme/dallas/packaging/line-1/filler/#"),
                can(who, Subscribe, "#"),
                can(who, Subscribe, "$SYS/#"),
                can(who, Command, DATA),
                can(who, Admin, resource::USERS),
                can(who, Admin, resource::ROLES),
                can(who, Admin, resource::AUDIT),
                can(who, Admin, resource::CONFIG),
            ];
            assert_eq!(&got, expected, "{who}");
        }
        // A device reaches only its own equipment.
        assert!(!can(
            "filler",
            Publish,
            "acme/dallas/packaging/line-1/capper/speed"
        ));
        assert!(can(
            "filler",
            Publish,
            "acme/dallas/packaging/line-1/cell-1/filler/speed"
        ));
        // The security officer reads dead letters but not data.
        assert!(can("sec", Subscribe, "acme/_dlq/#"));
        assert!(!can("sec", Subscribe, "acme/dallas/#"));
        // Reading $SYS needs its own grant even for `#`.
        assert!(!can("otto", Publish, SYS));
    }

    #[test]
    fn default_deny_and_reasons() {
        let policy = Policy::new(&file(&[("ida", "it-analyst")]), AnonymousAccess::default());
        let d = policy.check(None, "x", Action::Subscribe, "#");
        assert!(!d.allowed);
        assert!(d.reason.contains("default deny"), "{}", d.reason);
        let d = policy.check(Some("ida"), "x", Action::Publish, DATA);
        assert!(!d.allowed);
        assert!(d.reason.contains("it-analyst"), "{}", d.reason);
        let d = policy.check(Some("ghost"), "x", Action::Subscribe, "#");
        assert!(!d.allowed);
        let d = policy.check(Some("ida"), "x", Action::Subscribe, "acme/#");
        assert!(d.allowed);
        assert_eq!(d.reason, "role it-analyst grants subscribe:#");
    }

    #[test]
    fn anonymous_access_is_limited_to_its_subtree() {
        let policy = Policy::new(
            &SecurityFile::default(),
            AnonymousAccess {
                permissions: vec!["subscribe:acme/dallas/#".parse().unwrap()],
                loopback_only: false,
            },
        );
        assert!(
            policy
                .check(None, "x", Action::Subscribe, "acme/dallas/+/line-1/#")
                .allowed
        );
        assert!(!policy.check(None, "x", Action::Subscribe, "acme/#").allowed);
        assert!(!policy.check(None, "x", Action::Publish, DATA).allowed);
    }

    #[test]
    fn builtin_roles_read_below_the_paths_on_the_way_to_their_grants() {
        let policy = Policy::new(
            &file(&[
                ("ida", "it-analyst"),
                ("filler", "device"),
                ("sec", "security-officer"),
            ]),
            AnonymousAccess::default(),
        );
        let below = |who: &str, path: &str| policy.may_read_below(Some(who), path);
        for path in ["", "acme", "acme/dallas", DATA, "$SYS", "$SYS/broker"] {
            assert!(below("ida", path), "ida: {path:?}");
        }
        assert!(!below("ida", "$admin"));

        for path in [
            "",
            "acme",
            "acme/dallas",
            "acme/dallas/packaging/line-1",
            "acme/dallas/packaging/line-1/filler",
            DATA,
            "acme/dallas/packaging/line-1/cell-1/filler/speed",
            "other/site/area/line",
        ] {
            assert!(below("filler", path), "filler: {path:?}");
        }
        for path in [
            "acme/dallas/packaging/line-1/capper/speed",
            "acme/dallas/packaging/line-1/cell-1/capper",
            "$SYS",
            "$SYS/broker",
        ] {
            assert!(!below("filler", path), "filler: {path:?}");
        }
        // A cell may be called like the device: its own equipment can lie below.
        assert!(below("filler", "acme/dallas/packaging/line-1/capper"));

        for path in [
            "",
            "acme",
            "acme/_dlq",
            "acme/_dlq/x/y",
            "$SYS",
            "$SYS/broker",
        ] {
            assert!(below("sec", path), "sec: {path:?}");
        }
        // Admin grants are not reads; `+` does not reach `$` topics.
        for path in ["acme/dallas", DATA, "$admin", "$admin/users", "$x/_dlq"] {
            assert!(!below("sec", path), "sec: {path:?}");
        }
    }

    #[test]
    fn reading_below_follows_each_pattern_level() {
        let role = |name: &str, permissions: &[&str]| Role {
            name: name.into(),
            description: String::new(),
            permissions: permissions.iter().map(|p| p.parse().unwrap()).collect(),
            builtin: false,
        };
        let mut f = file(&[("stats", "stats"), ("own", "own"), ("writer", "writer")]);
        f.roles = vec![
            role("stats", &["subscribe:$SYS/#"]),
            role(
                "own",
                &["subscribe:clients/${client_id}/#", "subscribe:exact/topic"],
            ),
            role("writer", &["publish:#"]),
        ];
        let policy = Policy::new(&f, AnonymousAccess::default());
        let below = |who: &str, path: &str| policy.may_read_below(Some(who), path);
        // A `$SYS` grant makes `$SYS` readable, not `acme`.
        assert!(below("stats", "$SYS/broker/clients"));
        assert!(!below("stats", "acme"));
        assert!(!below("stats", "$SYSTEM"));
        // `${client_id}` is the console's.
        assert!(below("own", "clients"));
        assert!(below("own", "clients/console/x"));
        assert!(!below("own", "clients/plc-1"));
        // A pattern without `#` ends where it ends.
        assert!(below("own", "exact"));
        assert!(below("own", "exact/topic"));
        assert!(!below("own", "exact/topic/below"));
        assert!(!below("own", "exact/other"));
        // Only subscribe permissions count.
        assert!(!below("writer", "acme"));
        assert!(!below("writer", ""));
        // Unknown identities read nothing.
        assert!(!policy.may_read_below(Some("ghost"), ""));
        assert!(!policy.may_read_below(None, ""));
    }

    #[test]
    fn anonymous_and_disabled_reading_below() {
        let mut f = file(&[("ada", "admin")]);
        f.identities[0].disabled = true;
        let policy = Policy::new(
            &f,
            AnonymousAccess {
                permissions: vec![
                    "subscribe:acme/dallas/#".parse().unwrap(),
                    "publish:acme/austin/#".parse().unwrap(),
                ],
                loopback_only: false,
            },
        );
        assert!(!policy.may_read_below(Some("ada"), ""));
        assert!(!policy.may_read_below(Some("ada"), "acme"));
        for path in ["", "acme", "acme/dallas", "acme/dallas/x/y"] {
            assert!(policy.may_read_below(None, path), "{path:?}");
        }
        assert!(!policy.may_read_below(None, "acme/austin"));
        assert!(!policy.may_read_below(None, "other"));
    }

    #[test]
    fn disabled_identities_can_do_nothing() {
        let mut f = file(&[("ada", "admin")]);
        f.identities[0].disabled = true;
        let policy = Policy::new(&f, AnonymousAccess::default());
        let d = policy.check(Some("ada"), "x", Action::Subscribe, "#");
        assert!(!d.allowed);
        assert!(d.reason.contains("disabled"));
    }
}
