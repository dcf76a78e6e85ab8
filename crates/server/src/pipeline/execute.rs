//! The execute stage: the decision is journalled before the executor is
//! called and the result after it, so a crash in between leaves a decision
//! without a result, which the next start marks interrupted (never repeated).
//! On a database several replicas share, the executor is called only while
//! this replica's lease surely holds; the journal refuses a deposed
//! leader's decision, result and outcome.

use chrono::{DateTime, Utc};
use homeostat_adapters::executor::{ExecError, Executor};
use homeostat_core::action::{Action, Operation};
use homeostat_core::clock::Clock;
use homeostat_core::decision::{ActionResult, Verification};
use homeostat_journal::decisions::NewDecision;
use homeostat_journal::{Journal, JournalError};

use crate::metrics::Metrics;

/// What became of an allowed action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executed {
    /// Performed, or abandoned past `actions.execute_timeout` (its effect
    /// unknown): verify it (decision `id`). `at`: when the call returned (or
    /// was abandoned); what changes the target after it is not the action's
    /// doing, unless the call was abandoned and still runs.
    Done { id: i64, at: DateTime<Utc> },
    /// Recorded what would have been done; nothing to verify.
    DryRun,
    /// The call failed; recorded as a failed outcome.
    Failed,
}

/// Records `decision` (verdict `allow`), performs `operation` and records
/// the result; a failed call is a failed outcome at once, a call that timed
/// out is verified.
pub async fn execute<E: Executor>(
    journal: &Journal,
    metrics: &Metrics,
    executor: &E,
    clock: &dyn Clock,
    decision: NewDecision,
    action: Action,
    operation: &Operation,
) -> homeostat_journal::Result<Executed> {
    let (incident_id, dry_run) = (decision.incident_id, decision.dry_run);
    let target = decision.target_key.clone();
    if !journal.leadership().may_act() {
        return Err(JournalError::NotLeading {
            database: "the journal".into(),
            what: "the action was not decided".into(),
            why: "does not lead, or its lease may have run out".into(),
        });
    }
    let id = journal.record_decision(decision).await?;
    metrics.count_decision(action.as_str(), "allow");
    if !dry_run {
        let labels = crate::metrics::TargetActionLabels {
            target,
            action: action.as_str().into(),
        };
        metrics.target_actions.get_or_create(&labels).inc();
    }
    // Right before acting: should this replica's lease have run out since
    // it was recorded (a pause, a stall), another may lead by now.
    if !journal.leadership().may_act() {
        let why = "not executed: this homeostat's lease may have run out before the action could start, \
                   and another replica may lead";
        tracing::error!(incident = incident_id, %action, "Not acting: {why}.");
        journal
            .record_result(id, ActionResult::Interrupted, why, clock.now())
            .await?;
        return Ok(Executed::Failed);
    }
    tracing::info!(incident = incident_id, %action, dry_run, "Acting.");
    let called = executor.execute(operation).await;
    let at = clock.now();
    match called {
        Ok(done) if dry_run => {
            journal.record_result(id, ActionResult::DryRun, &done, at).await?;
            Ok(Executed::DryRun)
        }
        Ok(done) => {
            journal.record_result(id, ActionResult::Done, &done, at).await?;
            tracing::info!(incident = incident_id, %action, %done, "Action done; verifying.");
            Ok(Executed::Done { id, at })
        }
        // What an abandoned call did is unknown: verify it, as a done one.
        Err(err @ ExecError::TimedOut { .. }) => {
            tracing::warn!(incident = incident_id, %action, error = %err, "Action timed out; verifying.");
            journal
                .record_result(id, ActionResult::TimedOut, &err.to_string(), at)
                .await?;
            Ok(Executed::Done { id, at })
        }
        Err(err) => {
            tracing::warn!(incident = incident_id, %action, error = %err, "Action failed.");
            journal
                .record_result(id, ActionResult::Error, &err.to_string(), at)
                .await?;
            journal.record_outcome(id, Verification::Failure, at).await?;
            metrics.count_outcome(action.as_str(), Verification::Failure.as_str());
            Ok(Executed::Failed)
        }
    }
}
