//! Security by design for Gantry: who may connect (identities with Argon2id
//! password hashes, client certificates), what they may do on which namespace
//! paths (roles and ACL patterns, default deny), the tamper-evident audit log
//! every decision and change goes into, and the gate every write to a machine
//! passes. The same [`policy`] check serves MQTT and the HTTP API.

pub mod password;
pub mod pattern;
pub mod policy;
pub mod role;
pub mod service;
pub mod store;
pub mod writeback;

pub use pattern::{AclPattern, Subject};
pub use policy::{AnonymousAccess, Decision, Policy, Principal};
pub use role::{Action, Permission, Role};
pub use store::{Identity, IdentityKind, SecurityFile, SecurityStore, StoreError};
pub mod audit;
