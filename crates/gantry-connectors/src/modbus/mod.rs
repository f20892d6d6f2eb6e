//! The Modbus TCP connector (client side).
//!
//! Devices are declared in the site model file as `[[modbus]]` tables with
//! `[[modbus.point]]` entries mapping registers, coils and discrete inputs to
//! the tags of one equipment (see `docs/modbus.md`):
//!
//! - [`config`]: the types and the parser, with `file:line:col` errors for
//!   `gantry check`, host resolution and the optional TCP probe;
//! - [`plan`]: coalescing a device's points into the fewest reads (125
//!   registers / 2000 bits per request, bridging up to `max_gap`);
//! - [`decode`]: registers and bits to typed values (byte and word order,
//!   scale and offset, enum maps, deadband);
//! - [`poller`]: one [`ModbusSource`] per device: poll, publish with quality,
//!   reconnect with back-off, publish health under
//!   `<enterprise>/_sys/connectors/modbus/<device>`;
//! - [`identify`]: Read Device Identification (43 / 14) for the asset
//!   inventory.

pub mod config;
pub mod decode;
pub mod encode;
pub mod identify;
pub mod plan;
pub mod poller;
#[cfg(test)]
mod tests;

pub use config::{
    ConfigErrors, DeviceConfig, Order, PointConfig, PointType, Table, Target, check_file,
    check_hosts, load_devices, parse_devices, probe,
};
pub use identify::DeviceIdentity;
pub use plan::{PlannedPoint, ReadRequest, plan};
pub use poller::{
    DeviceStatus, ErrorCounts, ModbusSource, StatusHandle, WriteChannel, WriteCommand, WriteOutcome,
};
