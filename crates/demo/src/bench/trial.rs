//! What one trial measured, and the whole run: what the bench's statistics
//! and report read.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Fault;

/// What heals the stack in a trial: nothing, the baselines a user would
/// otherwise run, or homeostat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// Nothing heals: no restart policy, homeostat only records (dry run).
    None,
    /// Docker's `restart: unless-stopped`, and nothing else.
    RestartPolicy,
    /// The restart policy, and a restarter in the manner of docker-autoheal:
    /// `/healthz` failing a number of times in a row restarts the container.
    Healthcheck,
    /// The restart policy, and homeostat with `policy.mode: playbook`.
    Playbook,
    /// The restart policy, and homeostat with `policy.mode: learn`, its
    /// policy state carried from trial to trial.
    Learned,
}

impl Contender {
    pub const ALL: [Contender; 5] = [
        Contender::None,
        Contender::RestartPolicy,
        Contender::Healthcheck,
        Contender::Playbook,
        Contender::Learned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Contender::None => "none",
            Contender::RestartPolicy => "restart-policy",
            Contender::Healthcheck => "healthcheck",
            Contender::Playbook => "playbook",
            Contender::Learned => "learned",
        }
    }

    /// Whether homeostat acts (not only records) for this contender.
    pub fn is_homeostat(self) -> bool {
        matches!(self, Contender::Playbook | Contender::Learned)
    }
}

impl fmt::Display for Contender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Contender {
    type Err = String;

    fn from_str(s: &str) -> Result<Contender, String> {
        Contender::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Contender::ALL.iter().map(|c| c.name()).collect();
            format!("unknown contender {s:?}; known: {}", known.join(", "))
        })
    }
}

/// One fault injected once under one contender.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub contender: Contender,
    pub fault: Fault,
    /// 1-based: the how-manyth trial of this fault under this contender.
    pub trial: usize,
    /// 1-based: the trial's place in the contender's seeded order.
    pub order: usize,
    /// Seconds from injection until the contender first noticed the fault:
    /// homeostat received an alert on the target, the runtime restarted
    /// it, or the health-check restarter saw it fail; `None` if nothing did.
    pub detect_s: Option<f64>,
    /// Seconds from injection until the target was healthy and service_a
    /// answered; `None` if not within `timeout_s` (and for the control).
    pub recover_s: Option<f64>,
    /// How long the fault was given to heal.
    pub timeout_s: f64,
    /// Requests due to service_a over the same horizon for every
    /// contender: from injection until `timeout_s` later. Those due after
    /// a trial ended early (it recovered and, for homeostat, its alerts
    /// resolved) are counted as served, at the load's rate: the next trial
    /// may have begun by then.
    pub requests_total: usize,
    /// Those that failed (an error status, or no answer within 2 s).
    pub requests_failed: usize,
    /// What the contender did, in order: `restart (runtime)`,
    /// `restart (healthcheck)`, homeostat's actions.
    pub actions: Vec<String>,
    /// Actions after which service_a's failed requests rose: more failed
    /// in the 10 s after the action than in the 10 s before it.
    pub harmful_actions: usize,
    /// homeostat's decisions that told a human: verdict `escalate` (it
    /// could not help) or `notify` (its rule or policy says a person
    /// should look, a deliberate stop).
    pub escalations: usize,
    /// `homeostat`, `runtime`, `healthcheck` or `none`.
    pub healed_by: String,
    pub note: Option<String>,
    /// What the bench had to undo afterwards to bring the stack back to
    /// its known good state; empty when the contender healed it.
    #[serde(default)]
    pub cleared: Vec<String>,
    /// homeostat's decisions during the trial, as the demo's report has
    /// them; under a baseline, what it would have done (dry run).
    #[serde(default)]
    pub decisions: Vec<serde_json::Value>,
}

/// A whole bench run: its settings and every trial, in the order run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seed: u64,
    /// Trials of each fault per contender.
    pub trials_per_fault: usize,
    pub contenders: Vec<Contender>,
    pub faults: Vec<Fault>,
    pub fault_timeout_s: f64,
    /// The stack, the alert path and the baselines' settings, in words.
    pub settings: String,
    pub trials: Vec<Trial>,
    /// Contenders whose stack failed part-way, and why: their trials
    /// after the failure are missing.
    #[serde(default)]
    pub failures: Vec<String>,
}

#[cfg(test)]
impl Trial {
    /// A trial for tests: detected halfway to recovery, 100 requests of
    /// which `failed` failed (more than half: its action was harmful), a
    /// restart when it recovered, an escalation when it did not.
    pub(crate) fn example(contender: Contender, fault: Fault, n: usize, recover: Option<f64>, failed: usize) -> Trial {
        Trial {
            contender,
            fault,
            trial: n,
            order: n,
            detect_s: recover.map(|r| r / 2.0),
            recover_s: recover,
            timeout_s: 60.0,
            requests_total: 100,
            requests_failed: failed,
            actions: if recover.is_some() {
                vec!["restart".into()]
            } else {
                vec![]
            },
            harmful_actions: usize::from(failed > 50),
            escalations: usize::from(recover.is_none()),
            healed_by: "homeostat".into(),
            note: None,
            cleared: Vec::new(),
            decisions: Vec::new(),
        }
    }
}
