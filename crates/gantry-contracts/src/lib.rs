//! Data contracts for the Unified Namespace: every publish to a modeled tag
//! path is checked against the plant model (payload shape, type, range, enum
//! value, timestamp) and rewritten into the canonical time-series form before
//! it is routed. Invalid and unmodeled messages are refused or dead-lettered
//! to `<enterprise>/_dlq/<original topic>`, never silently dropped.
//!
//! - [`validate`]: the pure rules ([`validate_sample`]).
//! - [`ContractInspector`]: the broker hook, with an atomically swappable
//!   model ([`ContractInspector::reload`]) and violation counters.
//! - [`dead_letter`]: the dead-letter topic and payload.

pub mod dead_letter;
mod inspector;
mod stats;
pub mod validate;

pub use inspector::{ContractInspector, RetainedRecheck, STATS_TOPIC};
pub use stats::StatsSnapshot;
pub use validate::{ContractSettings, Rule, UnmodeledPolicy, Violation, validate, validate_sample};

/// An unknown unmodeled-path policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown unmodeled policy \"{0}\" (expected allow, dead-letter or reject)")]
pub struct PolicyError(pub String);
