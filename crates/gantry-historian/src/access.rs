//! Who may read which history: every query is limited to the topics the
//! caller may subscribe to. The security layer supplies the real check; the
//! historian only asks.

/// The caller's read permission on one topic (its subscribe permission).
pub trait ReadAccess: Send + Sync {
    fn can_read(&self, topic: &str) -> bool;
    /// A name for error messages and logs ("user alice", "local operator").
    fn who(&self) -> String;
}

/// Reads everything: the local operator who can open the database files
/// anyway, and in-process users such as the KPI engine.
pub struct FullAccess;

impl ReadAccess for FullAccess {
    fn can_read(&self, _topic: &str) -> bool {
        true
    }
    fn who(&self) -> String {
        "local operator".into()
    }
}
