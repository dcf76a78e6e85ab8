//! The storage trait: every read and write the service makes of its journal.
//!
//! [`SqliteJournal`] implements it on one SQLite file, the embedded default;
//! [`crate::PgJournal`] on a PostgreSQL database (`journal.url`);
//! [`crate::connect`] picks the implementation from the configuration. The
//! service holds a [`Journal`], a shared handle to whichever it is.
//!
//! What an implementation owes its callers, whatever the database:
//! - `ingest` commits a delivery and its incident transitions together, and
//!   only then hands the delivery to the pipeline through `queue_slot`: what
//!   the webhook acknowledged is never lost, and the pipeline sees deliveries
//!   in journal order.
//! - `record_decision` commits before the executor is called, so a crash in
//!   between leaves a decision without a result (marked interrupted at the
//!   next open, never repeated).
//! - On a database several replicas share, only the leader's
//!   `record_decision`, `record_result`, `record_outcome` and
//!   `queue_notifications` are written (the others get
//!   [`crate::JournalError::NotLeading`]).
//! - `record_learned` saves only on top of `base_revision` (`None` when the
//!   stored state moved on), so two writers never lose each other's lessons.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use homeostat_core::alert::WebhookMessage;
use homeostat_core::decision::{ActionResult, Verification};
use homeostat_core::incident::Incident;
use homeostat_core::threshold::{FeedbackConfig, FeedbackEvent, FeedbackStep, IncidentSummary, ThresholdState};
use tokio::sync::mpsc::OwnedPermit;

use crate::anomaly::AnomalyState;
use crate::approvals::Answer;
use crate::audit::AuditEntry;
use crate::decisions::{Decision, History, NewDecision};
use crate::known_good::KnownGood;
use crate::leadership::{Changes, Leadership};
use crate::notifications::{Attempt, Notification};
use crate::policy::{Learned, StoredPolicy};
use crate::retention::Pruned;
use crate::schedule::{Due, Firing};
use crate::thresholds::SpecRound;
use crate::{Delivery, IncidentPage, IncidentQuery, Result, SqliteJournal};

/// A shared handle to the journal, whichever database holds it.
pub type Journal = Arc<dyn Store>;

/// The journal's operations, as the server, the pipeline and the threshold task use them.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Journals a delivery and applies it to the incidents; returns once it
    /// is committed, by when it is in the pipeline queue through `queue_slot`.
    async fn ingest(
        &self,
        message: WebhookMessage,
        received_at: DateTime<Utc>,
        queue_slot: OwnedPermit<Delivery>,
    ) -> Result<Delivery>;
    /// Records that the pipeline has processed every delivery through `through`.
    async fn mark_processed(&self, through: i64) -> Result<()>;
    /// Deliveries journalled beyond the processed watermark, oldest first.
    async fn unprocessed(&self) -> Result<Vec<Delivery>>;
    /// One page of incidents matching `query`, newest first.
    async fn incidents(&self, query: IncidentQuery) -> Result<IncidentPage>;
    /// One incident by id.
    async fn incident(&self, id: i64) -> Result<Option<Incident>>;

    /// Records a decision before anything is done about it; returns its id.
    async fn record_decision(&self, decision: NewDecision) -> Result<i64>;
    /// Records what the executor did (or why it could not), at `at`.
    async fn record_result(&self, id: i64, result: ActionResult, detail: &str, at: DateTime<Utc>) -> Result<()>;
    /// Records whether the action fixed the incident, verified at `at`.
    async fn record_outcome(&self, id: i64, outcome: Verification, at: DateTime<Utc>) -> Result<()>;
    /// Records that the incident recovered with `outside_changes` to its
    /// target after the action (outcome `confounded`), verified at `at`;
    /// the changes go into the decision's record (`outside_changes`).
    async fn record_confounded(&self, id: i64, outside_changes: &[String], at: DateTime<Utc>) -> Result<()>;
    /// An incident's decisions, oldest first.
    async fn decisions(&self, incident_id: i64) -> Result<Vec<Decision>>;
    /// The guard's view of the past: of `target_key`, and of every target
    /// since `since`; in dry run (`Some(t)`) would-be actions count too, as
    /// in flight when decided since `t`.
    async fn history(
        &self,
        target_key: String,
        since: DateTime<Utc>,
        dry_run: Option<DateTime<Utc>>,
    ) -> Result<History>;
    /// Sets an incident's next check to `next` if it still is `seen` (a
    /// delivery meanwhile wins); whether it was set.
    async fn schedule(&self, id: i64, seen: Option<DateTime<Utc>>, next: Option<DateTime<Utc>>) -> Result<bool>;
    /// Firing incidents whose next check is at or before `now`, soonest first.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>>;
    /// The earliest next check of any firing incident.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>>;
    /// Every firing incident, for the vanish check.
    async fn firing(&self) -> Result<Vec<Firing>>;
    /// Closes, as vanished at `at`, those of `ids` still firing and not
    /// delivered since `unseen_since`; how many it closed.
    async fn vanish(&self, ids: Vec<i64>, unseen_since: DateTime<Utc>, at: DateTime<Utc>) -> Result<usize>;

    /// Queues one notification per sink, due at `at` (the outbox).
    async fn queue_notifications(
        &self,
        incident_id: i64,
        sinks: Vec<String>,
        event: &str,
        body: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Records what an attempt to send a notification did.
    async fn record_attempt(&self, attempt: Attempt) -> Result<()>;
    /// Notifications due at or before `now`, soonest first.
    async fn due_notifications(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>>;
    /// When the next notification is due.
    async fn next_notification(&self) -> Result<Option<DateTime<Utc>>>;
    /// An incident's notifications, oldest first.
    async fn notifications(&self, incident_id: i64) -> Result<Vec<Notification>>;
    /// Journals an operator action.
    async fn record_audit(&self, entry: AuditEntry) -> Result<()>;
    /// The latest `limit` operator actions, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Answers the incident's open proposal (approve or reject; made after
    /// `proposed_after`), with `audit`, and makes the incident due; the
    /// proposal's decision id, or `None` when it has no open proposal.
    async fn answer(
        &self,
        incident_id: i64,
        approved: bool,
        audit: AuditEntry,
        proposed_after: DateTime<Utc>,
    ) -> Result<Option<i64>>;
    /// The answer to a proposal, if there is one.
    async fn approval(&self, proposal_id: i64) -> Result<Option<Answer>>;
    /// Records what an incident implicates (an image, a revision), once.
    async fn implicate(&self, id: i64, what: String) -> Result<()>;
    /// Records whether actions are paused, so a restart keeps it.
    async fn set_paused(&self, paused: bool) -> Result<()>;
    /// Prunes what is older than `cutoff` (see [`crate::retention`]).
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Pruned>;
    /// Whether actions were paused when last recorded.
    async fn paused(&self) -> Result<bool>;

    /// The learned policy's stored state, if any.
    async fn policy(&self) -> Result<Option<StoredPolicy>>;
    /// The stored policy's revision (0 when none is stored).
    async fn policy_revision(&self) -> Result<i64>;
    /// Saves a reward and the state learned from it on top of
    /// `learned.base_revision`; `None` when the stored state moved on.
    async fn record_learned(&self, learned: Learned) -> Result<Option<i64>>;

    /// Records one threshold feedback step; `None` when it was recorded before.
    async fn record_feedback(
        &self,
        event: FeedbackEvent,
        default_coverage: f64,
        bounds: FeedbackConfig,
    ) -> Result<Option<FeedbackStep>>;
    /// Records a refit round's fits and rule updates.
    async fn record_round(&self, rounds: Vec<SpecRound>) -> Result<()>;
    /// The coverage of each series of `spec`, from its latest feedback step.
    async fn coverages(&self, spec: String) -> Result<HashMap<String, f64>>;
    /// Incidents of `alertnames` since `since`, as threshold feedback reads them.
    async fn incident_summaries(&self, alertnames: Vec<String>, since: DateTime<Utc>) -> Result<Vec<IncidentSummary>>;
    /// Everything `homeostat thresholds show` prints.
    async fn threshold_state(&self) -> Result<ThresholdState>;
    /// Journals the anomaly detectors' states, in place of all journalled before.
    async fn save_anomaly(&self, states: Vec<AnomalyState>) -> Result<()>;
    /// Every journalled anomaly detector state.
    async fn anomaly_states(&self) -> Result<Vec<AnomalyState>>;
    /// Records an instance's last known good spec, in place of the one before.
    async fn record_known_good(&self, known: KnownGood) -> Result<()>;
    /// An instance's last known good spec, if one was recorded.
    async fn known_good(&self, instance: String) -> Result<Option<KnownGood>>;

    /// Whether this process leads, and so acts (see [`crate::leadership`]).
    /// By default it alone writes the journal, and leads.
    fn leadership(&self) -> Leadership {
        Leadership::sole()
    }
    /// What any process on the journal commits that the others should
    /// know of at once (see [`Changes`]); `None` when no other process
    /// writes the journal.
    fn changes(&self) -> Option<Changes> {
        None
    }
    /// At a clean stop, once nothing acts: lets another process lead at once.
    async fn step_down(&self) {}
}

#[async_trait]
impl Store for SqliteJournal {
    async fn ingest(
        &self,
        message: WebhookMessage,
        received_at: DateTime<Utc>,
        queue_slot: OwnedPermit<Delivery>,
    ) -> Result<Delivery> {
        SqliteJournal::ingest(self, message, received_at, queue_slot).await
    }
    async fn mark_processed(&self, through: i64) -> Result<()> {
        SqliteJournal::mark_processed(self, through).await
    }
    async fn unprocessed(&self) -> Result<Vec<Delivery>> {
        SqliteJournal::unprocessed(self).await
    }
    async fn incidents(&self, query: IncidentQuery) -> Result<IncidentPage> {
        SqliteJournal::incidents(self, query).await
    }
    async fn incident(&self, id: i64) -> Result<Option<Incident>> {
        SqliteJournal::incident(self, id).await
    }
    async fn record_decision(&self, decision: NewDecision) -> Result<i64> {
        SqliteJournal::record_decision(self, decision).await
    }
    async fn record_result(&self, id: i64, result: ActionResult, detail: &str, at: DateTime<Utc>) -> Result<()> {
        SqliteJournal::record_result(self, id, result, detail, at).await
    }
    async fn record_outcome(&self, id: i64, outcome: Verification, at: DateTime<Utc>) -> Result<()> {
        SqliteJournal::record_outcome(self, id, outcome, at).await
    }
    async fn record_confounded(&self, id: i64, outside_changes: &[String], at: DateTime<Utc>) -> Result<()> {
        SqliteJournal::record_confounded(self, id, outside_changes, at).await
    }
    async fn decisions(&self, incident_id: i64) -> Result<Vec<Decision>> {
        SqliteJournal::decisions(self, incident_id).await
    }
    async fn history(
        &self,
        target_key: String,
        since: DateTime<Utc>,
        dry_run: Option<DateTime<Utc>>,
    ) -> Result<History> {
        SqliteJournal::history(self, target_key, since, dry_run).await
    }
    async fn schedule(&self, id: i64, seen: Option<DateTime<Utc>>, next: Option<DateTime<Utc>>) -> Result<bool> {
        SqliteJournal::schedule(self, id, seen, next).await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Due>> {
        SqliteJournal::due(self, now, limit).await
    }
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        SqliteJournal::next_due(self).await
    }
    async fn firing(&self) -> Result<Vec<Firing>> {
        SqliteJournal::firing(self).await
    }
    async fn vanish(&self, ids: Vec<i64>, unseen_since: DateTime<Utc>, at: DateTime<Utc>) -> Result<usize> {
        SqliteJournal::vanish(self, ids, unseen_since, at).await
    }
    async fn queue_notifications(
        &self,
        incident_id: i64,
        sinks: Vec<String>,
        event: &str,
        body: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<()> {
        SqliteJournal::queue_notifications(self, incident_id, sinks, event, body, at).await
    }
    async fn record_attempt(&self, attempt: Attempt) -> Result<()> {
        SqliteJournal::record_attempt(self, attempt).await
    }
    async fn due_notifications(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Notification>> {
        SqliteJournal::due_notifications(self, now, limit).await
    }
    async fn next_notification(&self) -> Result<Option<DateTime<Utc>>> {
        SqliteJournal::next_notification(self).await
    }
    async fn notifications(&self, incident_id: i64) -> Result<Vec<Notification>> {
        SqliteJournal::notifications(self, incident_id).await
    }
    async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        SqliteJournal::record_audit(self, entry).await
    }
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        SqliteJournal::audit(self, limit).await
    }
    async fn answer(
        &self,
        incident_id: i64,
        approved: bool,
        audit: AuditEntry,
        proposed_after: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        SqliteJournal::answer(self, incident_id, approved, audit, proposed_after).await
    }
    async fn approval(&self, proposal_id: i64) -> Result<Option<Answer>> {
        SqliteJournal::approval(self, proposal_id).await
    }
    async fn implicate(&self, id: i64, what: String) -> Result<()> {
        SqliteJournal::implicate(self, id, what).await
    }
    async fn set_paused(&self, paused: bool) -> Result<()> {
        SqliteJournal::set_paused(self, paused).await
    }
    async fn prune(&self, cutoff: DateTime<Utc>) -> Result<Pruned> {
        SqliteJournal::prune(self, cutoff).await
    }
    async fn paused(&self) -> Result<bool> {
        SqliteJournal::paused(self).await
    }
    async fn policy(&self) -> Result<Option<StoredPolicy>> {
        SqliteJournal::policy(self).await
    }
    async fn policy_revision(&self) -> Result<i64> {
        SqliteJournal::policy_revision(self).await
    }
    async fn record_learned(&self, learned: Learned) -> Result<Option<i64>> {
        SqliteJournal::record_learned(self, learned).await
    }
    async fn record_feedback(
        &self,
        event: FeedbackEvent,
        default_coverage: f64,
        bounds: FeedbackConfig,
    ) -> Result<Option<FeedbackStep>> {
        SqliteJournal::record_feedback(self, event, default_coverage, bounds).await
    }
    async fn record_round(&self, rounds: Vec<SpecRound>) -> Result<()> {
        SqliteJournal::record_round(self, rounds).await
    }
    async fn coverages(&self, spec: String) -> Result<HashMap<String, f64>> {
        SqliteJournal::coverages(self, spec).await
    }
    async fn incident_summaries(&self, alertnames: Vec<String>, since: DateTime<Utc>) -> Result<Vec<IncidentSummary>> {
        SqliteJournal::incident_summaries(self, alertnames, since).await
    }
    async fn threshold_state(&self) -> Result<ThresholdState> {
        SqliteJournal::threshold_state(self).await
    }
    async fn save_anomaly(&self, states: Vec<AnomalyState>) -> Result<()> {
        SqliteJournal::save_anomaly(self, states).await
    }
    async fn anomaly_states(&self) -> Result<Vec<AnomalyState>> {
        SqliteJournal::anomaly_states(self).await
    }
    async fn record_known_good(&self, known: KnownGood) -> Result<()> {
        SqliteJournal::record_known_good(self, known).await
    }
    async fn known_good(&self, instance: String) -> Result<Option<KnownGood>> {
        SqliteJournal::known_good(self, instance).await
    }
}
