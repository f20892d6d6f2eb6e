//! Gantry's connector framework: the [`Source`]/[`Sink`] abstraction every
//! data source implements, the demo-plant [`simulator`], and the [`modbus`]
//! TCP connector. Payloads follow
//! the JSON time-series convention of [`gantry_model::payload`].

pub mod modbus;
pub mod simulator;
pub mod source;

pub use simulator::{Simulator, SimulatorConfig, SimulatorConfigError};
pub use source::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceHealth, SourceMessage,
};
