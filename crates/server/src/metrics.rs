//! homeostat's own metrics, served on `GET /metrics` in the OpenMetrics text
//! format. Every label value comes from a closed set, so no series is ever
//! created per alert, fingerprint or pod.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The content type of [`Metrics::encode`]'s output: Prometheus' text
/// format, which every Prometheus scrapes and `promtool check metrics` reads.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Label values from closed sets: the action catalog, verdicts, outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeOfActionLabels {
    pub action: String,
    pub outcome: String,
}

/// Actions executed by target (the decision's target key) and action.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetActionLabels {
    pub target: String,
    pub action: String,
}

/// Notification sends by sink and outcome (`sent`, `resolved`, `retried`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkOutcomeLabels {
    pub sink: String,
    pub outcome: &'static str,
}

/// The learning policy's choices: `mode` shadow or learn; whether it
/// explored; whether it chose what the playbook did (`true`, `false`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyChoiceLabels {
    pub mode: &'static str,
    pub explored: &'static str,
    pub agrees_with_playbook: &'static str,
}

/// A threshold spec and one of its series: `threshold_spec` first, then
/// the series' own labels. Bounded by the configured specs' series.
pub type ThresholdSeriesLabels = Vec<(String, String)>;

/// The labels of a spec's series: `name="spec"` first, then the series' own
/// labels (one named like the spec label is left out rather than repeated).
pub fn spec_series_labels(name: &str, spec: &str, series: &homeostat_core::alert::LabelSet) -> ThresholdSeriesLabels {
    std::iter::once((name.to_owned(), spec.to_owned()))
        .chain(
            series
                .iter()
                .filter(|(k, _)| k.as_str() != name)
                .map(|(k, v)| (k.clone(), v.clone())),
        )
        .collect()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdSpecLabels {
    pub threshold_spec: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdUpdateLabels {
    /// `ok`, or the stage that failed (`query`, `fit`, `check`, `write`, `reload`).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdFeedbackLabels {
    /// `widen`, `tighten` or `keep`.
    pub adjust: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric homeostat exports.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by outcome (`accepted`, `bad_request`, `unauthorized`, …).
    pub webhook_requests: Family<OutcomeLabels, Counter>,
    /// Alerts received in accepted notifications, by alert status.
    pub webhook_alerts: Family<StatusLabels, Counter>,
    /// Seconds from receiving a webhook request to acknowledging it.
    pub webhook_ack_seconds: Histogram,
    /// Incident transitions by kind (`opened`, `repeated`, `resolved`, `stale`).
    pub incident_events: Family<KindLabels, Counter>,
    /// Notifications journalled and waiting for the pipeline; set when scraped.
    pub queue_depth: Gauge,
    /// 1 while actions are paused (`POST /api/v1/pause`).
    pub paused: Gauge,
    /// 1 while this replica leads (and so acts), 0 while another does.
    pub leader: Gauge,
    /// Notifications processed by the pipeline.
    pub notifications_processed: Counter,
    /// Notifications found unprocessed in the journal at start-up and processed then.
    pub notifications_recovered: Counter,
    /// Seconds one journal transaction (a group of writes) took to commit.
    pub journal_commit_seconds: Histogram,
    /// Writes grouped into one journal transaction.
    pub journal_batch_size: Histogram,
    /// Decisions by action and guard verdict.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Verified outcomes of actions taken.
    pub action_outcomes: Family<OutcomeOfActionLabels, Counter>,
    /// Incidents handed to a human (circuit breaker, playbook exhausted,
    /// unplannable, premise gone, refused too long).
    pub escalations: Counter,
    /// Known good specs recorded (a target ran healthy with a new spec for
    /// `known_good_after`), which a repair restores.
    pub known_good_recorded: Counter,
    /// Incidents closed because Alertmanager stopped reporting their alert
    /// and its resolution never came.
    pub incidents_vanished: Counter,
    /// Journal rows removed by retention.
    pub journal_pruned_rows: Counter,
    /// Notification sends by sink and outcome.
    pub notifications_sent: Family<SinkOutcomeLabels, Counter>,
    /// Actions executed (not dry run) by target and action: the dashboards'
    /// annotations. One series per target acted on.
    pub target_actions: Family<TargetActionLabels, Counter>,
    /// Seconds from an alert's start (as Alertmanager reports it) to the
    /// action on it starting.
    pub alert_to_action_seconds: Histogram,
    /// The learning policy's choices (shadow or acting).
    pub policy_choices: Family<PolicyChoiceLabels, Counter>,
    /// Verified outcomes the policy learned from.
    pub policy_learned: Counter,
    /// Times the stored policy state could not be loaded or saved.
    pub policy_errors: Counter,
    /// The upper threshold of each spec's series (the band's maximum over the refit period).
    pub threshold_upper: Family<ThresholdSeriesLabels, Gauge<f64, AtomicU64>>,
    /// The lower threshold of each spec's series (the band's minimum over the refit period).
    pub threshold_lower: Family<ThresholdSeriesLabels, Gauge<f64, AtomicU64>>,
    /// The forecast for each spec's series at the start of the refit period.
    pub threshold_forecast: Family<ThresholdSeriesLabels, Gauge<f64, AtomicU64>>,
    /// Rule updates per spec by result.
    pub threshold_updates: Family<ThresholdUpdateLabels, Counter>,
    /// 1 if a spec's latest rule update went live, 0 if the previous rules were kept.
    pub threshold_update_ok: Family<ThresholdSpecLabels, Gauge>,
    /// Feedback steps by adjustment.
    pub threshold_feedback: Family<ThresholdFeedbackLabels, Counter>,
    /// Refits whose thresholds moved too little to rewrite the rules (`thresholds.min_change`).
    pub threshold_writes_skipped: Family<ThresholdSpecLabels, Counter>,
    /// Per spec and series: 1 while its history is too short for a band
    /// (`insufficient_history`: its rules use the spec's fallback, if any), 0 once it has one.
    pub threshold_insufficient_history: Family<ThresholdSeriesLabels, Gauge>,
    /// The anomaly detector's score of each live series of each spec, held
    /// at the highest of the spec's `hold` (`anomaly_spec`, then the series' labels).
    pub anomaly_score: Family<ThresholdSeriesLabels, Gauge<f64, AtomicU64>>,
    /// Series of each spec by state: `learning` or `scoring`.
    pub anomaly_series: Family<AnomalyStateLabels, Gauge>,
    /// Points scored per spec.
    pub anomaly_points: Family<AnomalySpecLabels, Counter>,
    /// Points that scored at or over their spec's threshold.
    pub anomaly_alarms: Family<AnomalySpecLabels, Counter>,
    /// Range queries of a spec Prometheus did not answer.
    pub anomaly_query_failures: Family<AnomalySpecLabels, Counter>,
    /// Seconds each spec's latest scoring round took (query and scoring).
    pub anomaly_round_seconds: Family<AnomalySpecLabels, Gauge<f64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalySpecLabels {
    pub anomaly_spec: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyStateLabels {
    pub anomaly_spec: String,
    /// `learning` or `scoring`.
    pub state: &'static str,
}

impl Metrics {
    pub fn new(queue_capacity: usize) -> Metrics {
        let mut registry = Registry::with_prefix("homeostat");
        let metrics = Metrics {
            webhook_requests: Family::default(),
            webhook_alerts: Family::default(),
            webhook_ack_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 14)),
            incident_events: Family::default(),
            queue_depth: Gauge::default(),
            paused: Gauge::default(),
            leader: Gauge::default(),
            notifications_processed: Counter::default(),
            notifications_recovered: Counter::default(),
            journal_commit_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            journal_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            decisions: Family::default(),
            action_outcomes: Family::default(),
            escalations: Counter::default(),
            known_good_recorded: Counter::default(),
            incidents_vanished: Counter::default(),
            notifications_sent: Family::default(),
            target_actions: Family::default(),
            journal_pruned_rows: Counter::default(),
            alert_to_action_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 12)),
            policy_choices: Family::default(),
            policy_learned: Counter::default(),
            policy_errors: Counter::default(),
            threshold_upper: Family::default(),
            threshold_lower: Family::default(),
            threshold_forecast: Family::default(),
            threshold_updates: Family::default(),
            threshold_update_ok: Family::default(),
            threshold_feedback: Family::default(),
            threshold_writes_skipped: Family::default(),
            threshold_insufficient_history: Family::default(),
            anomaly_score: Family::default(),
            anomaly_series: Family::default(),
            anomaly_points: Family::default(),
            anomaly_alarms: Family::default(),
            anomaly_query_failures: Family::default(),
            anomaly_round_seconds: Family::default(),
            registry: Registry::default(),
        };
        let capacity: Gauge = Gauge::default();
        capacity.set(i64::try_from(queue_capacity).unwrap_or(i64::MAX));
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        registry.register("build_info", "homeostat's version", build);
        registry.register(
            "webhook_requests",
            "Webhook requests by outcome",
            metrics.webhook_requests.clone(),
        );
        registry.register(
            "webhook_alerts",
            "Alerts received in accepted webhook notifications, by status",
            metrics.webhook_alerts.clone(),
        );
        registry.register(
            "webhook_ack_seconds",
            "Seconds from receiving a webhook request to answering it",
            metrics.webhook_ack_seconds.clone(),
        );
        registry.register(
            "incident_events",
            "Incident transitions by kind",
            metrics.incident_events.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads, and so acts; 0 while another replica does",
            metrics.leader.clone(),
        );
        registry.register(
            "paused",
            "1 while actions are paused (POST /api/v1/pause), 0 otherwise",
            metrics.paused.clone(),
        );
        registry.register(
            "queue_depth",
            "Notifications journalled and waiting for the pipeline",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_capacity",
            "Notifications the queue holds before the webhook answers 503",
            capacity,
        );
        registry.register(
            "notifications_processed",
            "Notifications processed by the pipeline",
            metrics.notifications_processed.clone(),
        );
        registry.register(
            "notifications_recovered",
            "Notifications found unprocessed in the journal at start-up and processed then",
            metrics.notifications_recovered.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Seconds one journal transaction took to commit",
            metrics.journal_commit_seconds.clone(),
        );
        registry.register(
            "journal_batch_size",
            "Writes grouped into one journal transaction",
            metrics.journal_batch_size.clone(),
        );
        registry.register(
            "decisions",
            "Decisions on incidents by action and guard verdict",
            metrics.decisions.clone(),
        );
        registry.register(
            "action_outcomes",
            "Verified outcomes of actions taken, by action: success, failure, timeout, confounded (resolved with an outside change to the target)",
            metrics.action_outcomes.clone(),
        );
        registry.register(
            "escalations",
            "Incidents handed to a human: circuit breaker open, playbook exhausted, unplannable, premise gone, refused too long",
            metrics.escalations.clone(),
        );
        registry.register(
            "known_good_specs_recorded",
            "Known good specs recorded: a target ran healthy with a new spec for known_good_after (what a repair restores)",
            metrics.known_good_recorded.clone(),
        );
        registry.register(
            "incidents_vanished",
            "Incidents closed because Alertmanager no longer reported their alert and no resolution came",
            metrics.incidents_vanished.clone(),
        );
        registry.register(
            "notification_sends",
            "Sends of notifications to sinks by outcome: sent, resolved (the incident's end told), retried (failed, tried again later), failed (given up)",
            metrics.notifications_sent.clone(),
        );
        registry.register(
            "target_actions",
            "Actions executed on each target (decision target key) by action, for dashboard annotations",
            metrics.target_actions.clone(),
        );
        registry.register(
            "journal_pruned_rows",
            "Journal rows (deliveries, incidents, decisions, fits, feedback) removed by journal.retention",
            metrics.journal_pruned_rows.clone(),
        );
        registry.register(
            "alert_to_action_seconds",
            "Seconds from an alert's start to the action on it starting",
            metrics.alert_to_action_seconds.clone(),
        );
        registry.register(
            "policy_choices",
            "The learning policy's choices by mode, exploration and agreement with the playbook",
            metrics.policy_choices.clone(),
        );
        registry.register(
            "policy_learned",
            "Verified outcomes the learning policy learned from",
            metrics.policy_learned.clone(),
        );
        registry.register(
            "policy_errors",
            "Times the stored policy state could not be loaded or saved",
            metrics.policy_errors.clone(),
        );
        registry.register(
            "threshold_upper",
            "Upper threshold of an adaptive threshold spec's series",
            metrics.threshold_upper.clone(),
        );
        registry.register(
            "threshold_lower",
            "Lower threshold of an adaptive threshold spec's series",
            metrics.threshold_lower.clone(),
        );
        registry.register(
            "threshold_forecast",
            "Forecast of an adaptive threshold spec's series at the start of the refit period",
            metrics.threshold_forecast.clone(),
        );
        registry.register(
            "threshold_updates",
            "Rule updates of adaptive threshold specs by result",
            metrics.threshold_updates.clone(),
        );
        registry.register(
            "threshold_update_ok",
            "1 if the spec's latest rule update went live, 0 if the previous rules were kept",
            metrics.threshold_update_ok.clone(),
        );
        registry.register(
            "threshold_feedback",
            "Feedback steps on adaptive thresholds by adjustment",
            metrics.threshold_feedback.clone(),
        );
        registry.register(
            "threshold_writes_skipped",
            "Refits of an adaptive threshold spec whose thresholds moved less than thresholds.min_change: rules kept, Prometheus not reloaded",
            metrics.threshold_writes_skipped.clone(),
        );
        registry.register(
            "threshold_insufficient_history",
            "1 while an adaptive threshold spec's series has too little history for a band (its rules use the spec's fallback, if any), 0 once it has one",
            metrics.threshold_insufficient_history.clone(),
        );
        registry.register(
            "anomaly_score",
            "The anomaly detector's score of a live series, held at the highest of the spec's hold",
            metrics.anomaly_score.clone(),
        );
        registry.register(
            "anomaly_series",
            "Series an anomaly spec scores, by state (learning, scoring)",
            metrics.anomaly_series.clone(),
        );
        registry.register(
            "anomaly_points",
            "Points an anomaly spec scored",
            metrics.anomaly_points.clone(),
        );
        registry.register(
            "anomaly_alarms",
            "Points that scored at or over their anomaly spec's threshold",
            metrics.anomaly_alarms.clone(),
        );
        registry.register(
            "anomaly_query_failures",
            "Range queries of an anomaly spec Prometheus did not answer",
            metrics.anomaly_query_failures.clone(),
        );
        registry.register(
            "anomaly_round_seconds",
            "Seconds an anomaly spec's latest scoring round took",
            metrics.anomaly_round_seconds.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Every metric in Prometheus' text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut openmetrics = String::new();
        prometheus_client::encoding::text::encode(&mut openmetrics, &self.registry)
            .expect("writing to a String cannot fail");
        openmetrics_to_text(&openmetrics)
    }

    pub fn count_decision(&self, action: &str, verdict: &str) {
        let labels = DecisionLabels {
            action: action.to_owned(),
            verdict: verdict.to_owned(),
        };
        self.decisions.get_or_create(&labels).inc();
    }

    pub fn count_policy_choice(&self, acted: bool, explored: bool, agrees_with_playbook: bool) {
        let yes_no = |b: bool| if b { "true" } else { "false" };
        let labels = PolicyChoiceLabels {
            mode: if acted { "learn" } else { "shadow" },
            explored: yes_no(explored),
            agrees_with_playbook: yes_no(agrees_with_playbook),
        };
        self.policy_choices.get_or_create(&labels).inc();
    }

    pub fn count_outcome(&self, action: &str, outcome: &str) {
        let labels = OutcomeOfActionLabels {
            action: action.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.action_outcomes.get_or_create(&labels).inc();
    }

    pub fn count_notification(&self, sink: &str, outcome: &'static str) {
        let labels = SinkOutcomeLabels {
            sink: sink.to_owned(),
            outcome,
        };
        self.notifications_sent.get_or_create(&labels).inc();
    }

    pub fn count_request(&self, outcome: &'static str) {
        self.webhook_requests.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Rewrites prometheus-client's OpenMetrics output into Prometheus' text
/// format 0.0.4: a counter family is named with its `_total` suffix there,
/// and there is no `# UNIT` or `# EOF` line. prometheus-client writes only
/// OpenMetrics, and `promtool check metrics` (Prometheus 2.42) reads only
/// the text format, reporting every counter as lacking help otherwise. The
/// help texts here are fixed strings, so no escaping changes between the
/// two formats; the promtool test in tests/webhook.rs guards the output.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').unwrap_or((family, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(text) = help.take().and_then(|h| h.splitn(4, ' ').nth(3)) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_family_with_its_prefix() {
        let metrics = Metrics::new(16);
        metrics.count_request("accepted");
        let text = metrics.encode();
        for name in [
            "homeostat_build_info",
            "homeostat_webhook_requests_total{outcome=\"accepted\"} 1",
            "homeostat_queue_capacity 16",
            "homeostat_journal_commit_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(
            text.contains("# TYPE homeostat_webhook_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP homeostat_webhook_requests_total Webhook requests by outcome.\n"));
        assert!(!text.contains("# EOF"));
    }
}
