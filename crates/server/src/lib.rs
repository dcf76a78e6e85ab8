//! `homeostat serve`: the HTTP API and the pipeline from a delivery to a
//! learned outcome.
//!
//! ```text
//! Alertmanager ──webhook v4──▶ server ──decode──▶ journal::ingest (group commit)
//!                                                    │ delivery + incident transitions
//!                                                    ▼
//!                                    bounded queue ──▶ pipeline::run ──▶ Processor ──wake──▶ reconciler
//!                                                        (due incidents: context → decide → guard →
//!                                                         execute → verify → learn)
//! ```
//!
//! - [`app`]: wires the journal, pipeline, HTTP server and threshold task; stops them in order.
//! - [`server`]: the HTTP API (webhook, incidents, health, metrics, auth).
//! - [`pipeline`]: the queue consumer, the [`pipeline::Processor`] seam, the reconciler, and
//!   one module per stage (context, decide, guard, execute, verify, learn), composed by
//!   [`pipeline::Responder`].
//! - [`retention`]: prunes the journal hourly (`journal.retention`).
//! - [`clock`]: a clock that follows tokio's (paused) time, for tests.
//! - [`thresholds`]: the adaptive-threshold refit task.
//! - [`anomaly`]: the anomaly task: live series scored, exported and alerted on.
//! - [`metrics`]: homeostat's own metrics.
#![forbid(unsafe_code)]

pub mod anomaly;
pub mod app;
pub mod clock;
pub mod leader;
pub mod metrics;
pub mod notifier;
pub mod pipeline;
pub mod reload;
pub mod retention;
pub mod server;
pub mod thresholds;
