//! Gantry's MQTT 3.1.1 and 5.0 codec.
//!
//! Why our own codec rather than a crate: the broker's hot path wants payloads as
//! shared [`bytes::Bytes`] slices of the read buffer (one copy per message no
//! matter how many subscribers), PUBLISH encoded from parts straight into each
//! connection's write buffer (so a batch of packets leaves in one system call),
//! and decode errors that map one-to-one onto the reason code the broker sends.
//! The surveyed codec crates are 0.x releases that change every few days; this
//! module is small, fuzzed by property tests, and interop-tested against
//! Mosquitto and paho.

mod decode;
mod encode;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;
mod wire;

pub use decode::{DecodeError, MAX_REMAINING_LENGTH, decode, decode_body, frame};
pub use encode::{encode, encode_publish};
pub use packet::*;
pub use properties::{Properties, PropertyContext};
pub use reason::ReasonCode;
