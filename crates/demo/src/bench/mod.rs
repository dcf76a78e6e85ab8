//! `homeostat bench`: the demo's faults, repeated, under each contender.

pub mod report;
pub mod stats;
pub mod trial;

pub use trial::{BenchReport, Contender, Trial};
