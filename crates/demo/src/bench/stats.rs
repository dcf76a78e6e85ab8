//! The bench statistics.
