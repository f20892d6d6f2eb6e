//! Gantry's OPC UA client connector, in its own crate so that builds of the
//! rest of the workspace do not compile async-opcua (MPL-2.0, ≈ 90 s).
//!
//! - [`config`]: `[[opcua]]` servers in the site model file, checked with
//!   positions for `gantry check`;
//! - [`convert`]: status codes to qualities, variants to the tag's type;
//! - [`source`]: one [`OpcUaSource`] per server: session with security
//!   policy, mode and identity, subscriptions, quality, reconnect with
//!   back-off, health under `<enterprise>/_sys/connectors/opcua/<name>`;
//! - [`pki`]: the application instance certificate and the trust list
//!   under `<data_dir>/opcua/pki`.
//!
//! See `docs/opcua.md`.

pub mod config;
pub mod convert;
pub mod pki;
pub mod source;
#[cfg(test)]
mod tests;

pub use config::{
    BrowseConfig, Mode, NodeConfig, PasswordSource, Policy, ServerConfig, check_file, load_servers,
    parse_servers,
};
pub use source::{BuildInfo, OpcUaSource, ServerInfo, ServerStatus, StatusHandle};
