//! homeostat's adapters: the outside systems it talks to, each behind a thin
//! layer that takes the core's values and sends them.
//!
//! - [`alertmanager`]: whether an alert is silenced, asked right before acting.
//! - [`notify`]: the escalation webhook.
//! - [`executor`]: carrying operations out on Docker (bollard) or Kubernetes (kube-rs), or
//!   recording them (dry run).
//! - [`prometheus`]: instant queries for a decision's context and for health checks.
//! - [`preflight`]: the configuration's PromQL tried on the Prometheus it is meant for.
//! - [`rules`]: the I/O of adaptive thresholds: range queries, `promtool`, rule files, reloads.
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod executor;
mod http;
pub mod notify;
pub mod preflight;
pub mod prometheus;
pub mod rules;
