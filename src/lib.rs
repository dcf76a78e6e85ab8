//! homeostat: self-healing for containerized microservices, around Prometheus.
//!
//! How data flows, and where each step lives:
//!
//! ```text
//! Alertmanager ──webhook v4──▶ server ──decode──▶ alert
//!                                │
//!                                ├─ journal::ingest (SQLite, group commit):
//!                                │    delivery + incident transitions (incident)
//!                                ▼
//!                          bounded queue ──▶ pipeline::run ──▶ Processor
//!                                                  │   (context → decide → guard →
//!                                                  │    execute → verify → learn)
//!                                                  ▼
//!                                     journal::mark_processed
//! ```
//!
//! - [`alert`]: Alertmanager's webhook payload and its decoding.
//! - [`incident`]: the pure rules turning deliveries into incidents.
//! - [`journal`]: SQLite storage of deliveries, incidents and processing state.
//! - [`server`]: the HTTP API (webhook, incidents, health, metrics, auth).
//! - [`pipeline`]: the queue consumer and the [`pipeline::Processor`] seam.
//! - [`action`]: the recovery-action catalog, targets, and the pure planning of operations.
//! - [`playbook`]: the YAML playbook, the static policy learning starts from.
//! - [`context`]: PromQL context for a decision (error ratio, restarts, memory trend, …).
//! - [`learned`]: what the policy learned and why it decided, from the journal (`homeostat policy …`).
//! - [`guard`]: the safety limits every action must pass, as a pure function.
//! - [`policy`]: the learning policy (Thompson sampling on playbook priors), its rewards,
//!   learned state and off-policy evaluation; pure, seeded. [`simulate`]: the policy against
//!   the static playbook and a random safe action in simulated fault scenarios.
//! - [`executor`]: carrying operations out (Docker, Kubernetes), or recording them (dry run).
//! - [`respond`]: the stages after ingest: decide → guard → record → execute → verify.
//! - [`app`]: wires the above together and shuts them down in order.
//! - [`config`], [`duration`]: the YAML configuration and its validation; [`preflight`]: its
//!   PromQL queries tried on the Prometheus they are meant for.
//! - [`metrics`], [`telemetry`]: homeostat's own metrics and logs.
//! - [`load`]: an HTTP load generator recording every request's outcome.
//! - [`demo`]: the local self-healing demo (services, Prometheus, Alertmanager, faults, report).
//! - [`forecast`]: seasonal forecasts with bands (augurs MSTL + AutoETS); [`anomaly`]: streaming
//!   anomaly scores (new extremes and adaptive resonance by default, the band on request);
//!   [`eval`]: both measured offline (NAB's scoring rules, MASE, coverage).
//! - [`threshold`]: adaptive alert thresholds: history → band → Prometheus rule files, reloads,
//!   and feedback from incidents (its `schedule` task runs under `serve`).
#![forbid(unsafe_code)]

pub mod action;
pub mod alert;
pub mod anomaly;
pub mod app;
pub mod config;
pub mod context;
pub mod demo;
pub mod duration;
pub mod eval;
pub mod executor;
pub mod forecast;
pub mod guard;
pub mod incident;
pub mod journal;
pub mod learned;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod playbook;
pub mod policy;
pub mod preflight;
pub mod respond;
pub mod server;
pub mod simulate;
pub mod telemetry;
pub mod threshold;
