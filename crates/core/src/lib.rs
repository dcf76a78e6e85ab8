//! homeostat's decision core: what an alert means, what to do about it, and
//! whether doing it is safe. Every function takes values and returns values:
//! no async runtime, no database, no HTTP (a test in the workspace enforces
//! it). The journal, the adapters and the server build on it.
//!
//! ```text
//! alert ──▶ incident ──▶ playbook / policy ──▶ action ──plan──▶ operation
//!   (webhook v4)  (transitions)  (decide)        (catalog)         │
//!                                                   guard::check ◀─┘ (verdict)
//! threshold: history ──forecast──▶ band ──▶ Prometheus rule file (text)
//! ```
//!
//! - [`alert`]: Alertmanager's webhook payload and its decoding; label names.
//! - [`incident`]: the pure rules turning deliveries into incidents.
//! - [`action`]: the recovery-action catalog, targets, and the planning of operations.
//! - [`playbook`]: the YAML playbook, the static policy learning starts from.
//! - [`policy`]: the learning policy (Thompson sampling on playbook priors), its rewards,
//!   learned state and off-policy evaluation; seeded.
//! - [`context`]: the PromQL context queries a decision uses, and what they found.
//! - [`condition`]: what a backend says of a target before acting: a deliberate stop, the
//!   runtime restarting it, its spec (for drift against the last known good).
//! - [`guard`]: the safety limits every action must pass.
//! - [`decision`]: the verdicts, call results and verified outcomes the journal persists.
//! - [`detect`]: the streaming anomaly detector (new extremes, adaptive resonance).
//! - [`forecast`]: seasonal forecasts with bands (augurs MSTL + AutoETS).
//! - [`threshold`]: adaptive alert thresholds: history → band → rule files, and feedback.
//! - [`clock`]: where "now" comes from, injected so tests can drive it.
//! - [`config`], [`duration`]: the YAML configuration and its validation.
#![forbid(unsafe_code)]

pub mod action;
pub mod alert;
pub mod clock;
pub mod condition;
pub mod config;
pub mod context;
pub mod decision;
pub mod detect;
pub mod duration;
pub mod forecast;
pub mod guard;
pub mod incident;
pub mod playbook;
pub mod policy;
pub mod threshold;
