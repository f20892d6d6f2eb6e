//! Gantry's connector framework: the [`Source`]/[`Sink`] abstraction every
//! data source implements, the JSON time-series payload convention
//! ([`sample`]), and the demo-plant [`simulator`].

pub mod sample;
pub mod simulator;
pub mod source;

pub use sample::{PayloadError, Sample, Value};
pub use simulator::{Simulator, SimulatorConfig, SimulatorConfigError};
pub use source::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceHealth, SourceMessage,
};
