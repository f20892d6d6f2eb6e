//! Gantry's connector framework: the [`Source`]/[`Sink`] abstraction every
//! data source implements, and the demo-plant [`simulator`]. Payloads follow
//! the JSON time-series convention of [`gantry_model::payload`].

pub mod simulator;
pub mod source;

pub use simulator::{Simulator, SimulatorConfig, SimulatorConfigError};
pub use source::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceHealth, SourceMessage,
};
