//! homeostat's lab: offline tools that measure what the service does, kept
//! out of the service binary.
//!
//! - [`anomaly`]: streaming anomaly scores (new extremes and adaptive resonance by default,
//!   the band on request).
//! - [`eval`]: forecasts and anomaly scores measured offline (NAB's scoring rules, MASE,
//!   coverage), with plots.
//! - [`simulate`]: the learning policy against the static playbook and a random safe action
//!   in simulated fault scenarios.
#![forbid(unsafe_code)]

pub mod anomaly;
pub mod eval;
pub mod simulate;
