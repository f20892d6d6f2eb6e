//! The security file: identities (people, services, devices) with their
//! Argon2id password hashes and roles, and the site's own roles, kept in
//! `<data_dir>/security/security.json`. Every change takes an exclusive lock,
//! writes a new file, syncs it and renames it over the old one, so a crash
//! leaves either the old or the new file, never a torn one. The running
//! broker notices the new file and applies it without a restart.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::role::{Role, builtin_role_names};

/// What kind of party an identity is (the audit log's `actor.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityKind {
    Human,
    Service,
    Device,
}

impl IdentityKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Human => "human",
            IdentityKind::Service => "service",
            IdentityKind::Device => "device",
        }
    }
}

impl std::str::FromStr for IdentityKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(IdentityKind::Human),
            "service" => Ok(IdentityKind::Service),
            "device" => Ok(IdentityKind::Device),
            other => Err(format!(
                "unknown identity kind {other:?} (human, service or device)"
            )),
        }
    }
}

/// A user or a service identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub kind: IdentityKind,
    pub roles: Vec<String>,
    /// Argon2id PHC string; `None`: no password login (certificate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// May log in with a client certificate whose common name is `name`.
    #[serde(default)]
    pub certificate: bool,
    #[serde(default)]
    pub disabled: bool,
    /// The emergency account: local, always audited, never locked out by
    /// the failed-login back-off.
    #[serde(default)]
    pub break_glass: bool,
    #[serde(default)]
    pub description: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Everything in the security file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityFile {
    #[serde(default = "version_one")]
    pub version: u32,
    #[serde(default)]
    pub identities: Vec<Identity>,
    /// The site's own roles (the built-in ones are not stored).
    #[serde(default)]
    pub roles: Vec<Role>,
}

fn version_one() -> u32 {
    1
}

impl SecurityFile {
    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }

    pub fn identity_mut(&mut self, name: &str) -> Option<&mut Identity> {
        self.identities.iter_mut().find(|i| i.name == name)
    }

    pub fn role_exists(&self, name: &str) -> bool {
        builtin_role_names().any(|b| b == name) || self.roles.iter().any(|r| r.name == name)
    }

    /// Problems that make the file unusable: duplicate names, unknown roles,
    /// site roles that shadow built-in ones, names that could not appear in
    /// a topic level.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for identity in &self.identities {
            if let Err(e) = validate_name(&identity.name) {
                problems.push(format!("identity {:?}: {e}", identity.name));
            }
            if !seen.insert(identity.name.as_str()) {
                problems.push(format!("identity {:?} is defined twice", identity.name));
            }
            for role in &identity.roles {
                if !self.role_exists(role) {
                    problems.push(format!(
                        "identity {:?}: unknown role {role:?}",
                        identity.name
                    ));
                }
            }
        }
        let mut roles = std::collections::HashSet::new();
        for role in &self.roles {
            if let Err(e) = validate_name(&role.name) {
                problems.push(format!("role {:?}: {e}", role.name));
            }
            if builtin_role_names().any(|b| b == role.name) {
                problems.push(format!(
                    "role {:?} has the name of a built-in role",
                    role.name
                ));
            }
            if !roles.insert(role.name.as_str()) {
                problems.push(format!("role {:?} is defined twice", role.name));
            }
        }
        problems
    }
}

/// Identity and role names: what may stand in one topic level (so that
/// `${identity}` placeholders work), 1 to 64 characters of letters, digits,
/// `-`, `_`, `.` and `@`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(format!(
            "character {c:?} is not allowed (letters, digits, - _ . @)"
        ));
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Refused(String),
}

/// The security file of one data directory.
#[derive(Debug, Clone)]
pub struct SecurityStore {
    path: PathBuf,
}

impl SecurityStore {
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("security").join("security.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, error: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            error,
        }
    }

    /// The file's contents; an absent file is an empty store (no one may
    /// log in).
    pub fn load(&self) -> Result<SecurityFile, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SecurityFile::default());
            }
            Err(e) => return Err(self.io(e)),
        };
        let file: SecurityFile = serde_json::from_str(&text).map_err(|e| StoreError::Parse {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let problems = file.problems();
        if !problems.is_empty() {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                problems,
            });
        }
        Ok(file)
    }

    fn last_good_path(&self) -> PathBuf {
        self.path.with_file_name("security.last-good.json")
    }

    /// Keeps a copy of a file that loaded cleanly, for [`Self::load_last_good`].
    pub fn remember_good(&self, file: &SecurityFile) -> Result<(), StoreError> {
        let path = self.last_good_path();
        let mut text = serde_json::to_string_pretty(file)
            .map_err(|e| StoreError::Refused(format!("cannot encode the security file: {e}")))?;
        text.push('\n');
        if fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = restricted_file(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|error| StoreError::Io { path, error })
    }

    /// The last copy that loaded cleanly: what a broker starts with when the
    /// security file itself is broken (a hand edit gone wrong must not lock
    /// the whole plant out).
    pub fn load_last_good(&self) -> Result<SecurityFile, StoreError> {
        let path = self.last_good_path();
        let text = fs::read_to_string(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            error,
        })?;
        let file: SecurityFile = serde_json::from_str(&text).map_err(|e| StoreError::Parse {
            path: path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Ok(file)
    }

    /// When the file last changed (`None` if it does not exist).
    pub fn modified(&self) -> Option<SystemTime> {
        fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    /// Applies `change` under an exclusive lock and writes the result
    /// atomically; refuses results with problems.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut SecurityFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let lock_path = dir.join("security.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        lock.lock().map_err(|e| self.io(e))?;
        let mut file = self.load()?;
        let out = change(&mut file)?;
        let problems = file.problems();
        if !problems.is_empty() {
            return Err(StoreError::Invalid {
                path: self.path.clone(),
                problems,
            });
        }
        let mut text = serde_json::to_string_pretty(&file)
            .map_err(|e| StoreError::Refused(format!("cannot encode the security file: {e}")))?;
        text.push('\n');
        let tmp = dir.join("security.json.tmp");
        {
            let mut f = restricted_file(&tmp).map_err(|e| self.io(e))?;
            f.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
            f.sync_all().map_err(|e| self.io(e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        drop(lock);
        Ok(out)
    }
}

/// A new file readable by its owner only (it holds password hashes).
fn restricted_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, roles: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            kind: IdentityKind::Human,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            password: None,
            certificate: false,
            disabled: false,
            break_glass: false,
            description: String::new(),
            created_ms: 1,
            updated_ms: 1,
        }
    }

    #[test]
    fn update_writes_atomically_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::in_data_dir(dir.path());
        assert_eq!(store.load().unwrap(), SecurityFile::default());
        store
            .update(|f| {
                f.identities.push(identity("anna", &["ot-engineer"]));
                Ok(())
            })
            .unwrap();
        let file = store.load().unwrap();
        assert_eq!(file.identity("anna").unwrap().roles, vec!["ot-engineer"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_changes_are_refused_and_leave_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::in_data_dir(dir.path());
        let err = store
            .update(|f| {
                f.identities.push(identity("bob", &["wizard"]));
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("unknown role \"wizard\""), "{err}");
        let err = store
            .update(|f| {
                f.identities.push(identity("a/b", &[]));
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains("'/' is not allowed"), "{err}");
        assert!(!store.path().exists());
    }

    #[test]
    fn the_last_good_copy_survives_a_broken_edit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::in_data_dir(dir.path());
        store
            .update(|f| {
                f.identities.push(identity("anna", &["admin"]));
                Ok(())
            })
            .unwrap();
        let good = store.load().unwrap();
        store.remember_good(&good).unwrap();
        fs::write(store.path(), "{ broken").unwrap();
        assert!(store.load().is_err());
        assert_eq!(store.load_last_good().unwrap(), good);
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::in_data_dir(dir.path());
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        fs::write(
            store.path(),
            "{\n  \"identities\": [\n    {\"name\": 5}\n  ]\n}\n",
        )
        .unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("security.json: line 3"), "{err}");
    }
}
