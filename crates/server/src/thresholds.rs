//! The refit task of `homeostat serve`: each spec is refitted every
//! `refit_interval` (the first time at start-up); each round first applies
//! the feedback the journal's incidents imply, then fits with the coverages
//! feedback has set, updates the rules, the metrics and the journal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use homeostat_adapters::rules::{promtool, refit, Prometheus, Published, RuleWriter, SpecOutcome, QUERY_TIMEOUT};
use homeostat_core::alert::LabelSet;
use homeostat_core::clock::Clock;
use homeostat_core::threshold::{
    feedback_events, FeedbackEvent, FeedbackReason, SeriesFit, SeriesInsufficient, SpecFit, ThresholdSpec,
    ThresholdsConfig, INSUFFICIENT_HISTORY,
};
use homeostat_journal::thresholds::{FeedbackStep, SpecRound};
use homeostat_journal::Journal;

use crate::metrics::{
    spec_series_labels, Metrics, ThresholdFeedbackLabels, ThresholdSpecLabels, ThresholdUpdateLabels,
};

/// The refit task's state between rounds.
pub struct Scheduler {
    config: ThresholdsConfig,
    journal: Journal,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    prometheus: Prometheus,
    writer: RuleWriter,
    /// The series each spec's gauges are exported for, to drop vanished ones.
    exported: HashMap<String, Vec<LabelSet>>,
    /// The fit each spec's rules in effect were rendered from (none before
    /// the first write of this process: the first round always writes).
    published: HashMap<String, SpecFit>,
    /// Per spec, the series last seen in `insufficient_history`: warned
    /// about once, not at every refit.
    insufficient: HashMap<String, HashSet<String>>,
}

impl Scheduler {
    pub fn new(
        config: ThresholdsConfig,
        journal: Journal,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Scheduler, String> {
        let prometheus = Prometheus::new(&config.prometheus_url, QUERY_TIMEOUT)?;
        let writer = RuleWriter {
            dir: config.rules_dir.clone(),
            promtool: promtool(&config),
        };
        Ok(Scheduler {
            config,
            journal,
            metrics,
            clock,
            prometheus,
            writer,
            exported: HashMap::new(),
            published: HashMap::new(),
            insufficient: HashMap::new(),
        })
    }

    /// Runs rounds until `stop` turns true. A round under way finishes
    /// first: cancelling it between writing rule files and reloading (or
    /// putting the previous files back) could leave Prometheus a rules
    /// directory it never checked. So a stop can wait for one round (about
    /// 25 s for 1,000 week-long specs on 2 cores; seconds for a few), which
    /// `serve` bounds by `server.drain_timeout`.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let configured: Vec<&str> = self.config.specs.iter().map(|s| s.name.as_str()).collect();
        for removed in self.writer.remove_stale(&configured) {
            tracing::info!(file = %removed.display(), "Removed the rules of a threshold spec no longer configured.");
        }
        let mut due: Vec<Instant> = vec![Instant::now(); self.config.specs.len()];
        tracing::info!(
            specs = self.config.specs.len(),
            rules_dir = %self.config.rules_dir.display(),
            prometheus = %self.config.prometheus_url,
            "Adaptive thresholds: refitting."
        );
        loop {
            let now = Instant::now();
            let ready: Vec<usize> = (0..due.len()).filter(|&i| due[i] <= now).collect();
            if !ready.is_empty() {
                let specs: Vec<ThresholdSpec> = ready.iter().map(|&i| self.config.specs[i].clone()).collect();
                self.round(&specs).await;
                if *stop.borrow() {
                    return;
                }
                for &i in &ready {
                    due[i] = Instant::now() + self.config.specs[i].refit_interval.0;
                }
            }
            let next = due
                .iter()
                .min()
                .copied()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }

    /// One refit of `specs`.
    pub async fn round(&mut self, specs: &[ThresholdSpec]) {
        let mut coverages = HashMap::new();
        for spec in specs {
            match self.journal.coverages(spec.name.clone()).await {
                Ok(c) => {
                    coverages.insert(spec.name.clone(), c);
                }
                Err(e) => {
                    tracing::error!(spec = %spec.name, error = %e, "Cannot read feedback; fitting with the configured coverage.")
                }
            }
        }
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        let reload = self.config.reload.then_some(&self.prometheus);
        let published = Published {
            fits: &self.published,
            min_change: self.config.min_change,
        };
        let outcomes = refit(
            specs,
            &self.prometheus,
            &coverages,
            &self.writer,
            reload,
            self.clock.now(),
            parallel,
            Some(published),
        )
        .await;
        let mut rounds = Vec::new();
        for (spec, outcome) in specs.iter().zip(outcomes) {
            self.report(spec, &outcome);
            if outcome.result.is_ok() && !outcome.written {
                // The journal keeps the fit and the update the rules in effect came from.
                continue;
            }
            if outcome.written {
                self.published.insert(spec.name.clone(), outcome.fit.clone());
            }
            let rules = outcome.fit.series.len() * spec.direction.sides().len();
            rounds.push(SpecRound {
                spec: outcome.spec,
                at: self.clock.now(),
                fitted: outcome.fit.series,
                skipped: outcome.fit.skipped,
                insufficient: outcome.fit.insufficient,
                outcome: outcome
                    .result
                    .map(|()| format!("{} rules in {}", rules, self.writer.path(&spec.name).display()))
                    .map_err(|e| e.to_string()),
            });
        }
        if let Err(e) = self.journal.record_round(rounds).await {
            tracing::error!(error = %e, "Cannot journal the refit round.");
        }
        for spec in specs {
            self.feedback(spec).await;
        }
    }

    /// Logs a series' entry into `insufficient_history` once (a warning),
    /// and its band once it has one.
    fn note_insufficient(&mut self, spec: &ThresholdSpec, fit: &SpecFit) {
        let before = self.insufficient.entry(spec.name.clone()).or_default();
        let Some(change) = insufficient_change(before, fit) else {
            return;
        };
        for series in change.entered {
            let rules = match &series.fallback {
                Some(f) => format!("its rules use the fallback (lower {:?}, upper {:?})", f.lower, f.upper),
                None => "no fallback configured: no rule for it".to_owned(),
            };
            tracing::warn!(
                spec = %spec.name,
                series = %series.key,
                reason = %series.reason,
                "Too little history for an adaptive band ({INSUFFICIENT_HISTORY}); {rules}."
            );
        }
        for series in change.left {
            tracing::info!(spec = %spec.name, series = %series.key, model = %series.model, "Enough history now: the adaptive band is published.");
        }
        *before = change.now;
    }

    fn report(&mut self, spec: &ThresholdSpec, outcome: &SpecOutcome) {
        self.note_insufficient(spec, &outcome.fit);
        let m = &self.metrics;
        let spec_labels = ThresholdSpecLabels {
            threshold_spec: spec.name.clone(),
        };
        if outcome.result.is_ok() && !outcome.written {
            // The rules in effect, and the gauges showing them, stay.
            m.threshold_writes_skipped.get_or_create(&spec_labels).inc();
            tracing::debug!(spec = %spec.name, "Thresholds moved too little to rewrite the rules.");
            return;
        }
        let result = match &outcome.result {
            Ok(()) => "ok",
            Err(e) => e.metric_label(),
        };
        m.threshold_updates
            .get_or_create(&ThresholdUpdateLabels { result })
            .inc();
        m.threshold_update_ok
            .get_or_create(&spec_labels)
            .set(i64::from(outcome.result.is_ok()));
        let Ok(()) = &outcome.result else {
            let why = outcome
                .result
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::warn!(spec = %spec.name, error = %why, "Thresholds not updated; the previous rules stay active.");
            return;
        };
        // A series label named like the spec label is left out rather than repeated.
        let labels_of = |series: &LabelSet| spec_series_labels("threshold_spec", &spec.name, series);
        for vanished in self.exported.remove(&spec.name).unwrap_or_default() {
            let labels = labels_of(&vanished);
            m.threshold_upper.remove(&labels);
            m.threshold_lower.remove(&labels);
            m.threshold_forecast.remove(&labels);
            m.threshold_insufficient_history.remove(&labels);
        }
        for series in &outcome.fit.series {
            let labels = labels_of(&series.labels);
            m.threshold_upper.get_or_create(&labels).set(series.upper);
            m.threshold_lower.get_or_create(&labels).set(series.lower);
            m.threshold_forecast.get_or_create(&labels).set(series.point);
            m.threshold_insufficient_history.get_or_create(&labels).set(0);
        }
        // No band, so no band gauges: the state says why.
        for series in &outcome.fit.insufficient {
            m.threshold_insufficient_history
                .get_or_create(&labels_of(&series.labels))
                .set(1);
        }
        self.exported.insert(
            spec.name.clone(),
            outcome
                .fit
                .series
                .iter()
                .map(|s| s.labels.clone())
                .chain(outcome.fit.insufficient.iter().map(|s| s.labels.clone()))
                .collect(),
        );
        tracing::info!(
            spec = %spec.name,
            series = outcome.fit.series.len(),
            insufficient_history = outcome.fit.insufficient.len(),
            skipped = outcome.fit.skipped.len(),
            file = %self.writer.path(&spec.name).display(),
            "Thresholds updated."
        );
    }

    /// Applies the feedback the journal's incidents imply for `spec`'s
    /// series; each incident counts once (the journal keeps it unique).
    async fn feedback(&self, spec: &ThresholdSpec) {
        let series = self.exported.get(&spec.name).cloned().unwrap_or_default();
        let mut alertnames = vec![spec.alert.clone()];
        alertnames.extend(spec.slo_alerts.iter().cloned());
        let since = self.clock.now() - chrono::Duration::from_std(spec.history.0).unwrap_or(chrono::Duration::days(7));
        let incidents = match self.journal.incident_summaries(alertnames, since).await {
            Ok(incidents) => incidents,
            Err(e) => {
                tracing::error!(spec = %spec.name, error = %e, "Cannot read incidents for feedback.");
                return;
            }
        };
        for event in feedback_events(spec, &series, &incidents) {
            record_feedback(&self.journal, &self.metrics, event, spec.coverage, &self.config).await;
        }
    }
}

/// How a spec's series moved in or out of `insufficient_history` between
/// the previous fit and `fit` (see [`insufficient_change`]).
#[derive(Debug, PartialEq)]
struct InsufficientChange<'a> {
    /// In the state now, not before: warned about (once).
    entered: Vec<&'a SeriesInsufficient>,
    /// In it before, with a band now.
    left: Vec<&'a SeriesFit>,
    /// The series in the state now.
    now: HashSet<String>,
}

/// The change from the series `before` (keys) in `insufficient_history` to
/// `fit`; `None` when the round fitted nothing at all (Prometheus could not
/// be queried): the state is then unknown, not empty, and a series must not
/// be warned about again after it.
fn insufficient_change<'a>(before: &HashSet<String>, fit: &'a SpecFit) -> Option<InsufficientChange<'a>> {
    if fit.series.is_empty() && fit.insufficient.is_empty() && fit.skipped.is_empty() {
        return None;
    }
    Some(InsufficientChange {
        entered: fit.insufficient.iter().filter(|s| !before.contains(&s.key)).collect(),
        left: fit.series.iter().filter(|s| before.contains(&s.key)).collect(),
        now: fit.insufficient.iter().map(|s| s.key.clone()).collect(),
    })
}

/// Applies one feedback event: journals the step (once per incident) and
/// counts it. Returns the step taken, if any.
pub async fn record_feedback(
    journal: &Journal,
    metrics: &Metrics,
    event: FeedbackEvent,
    default_coverage: f64,
    config: &ThresholdsConfig,
) -> Option<FeedbackStep> {
    match journal
        .record_feedback(event, default_coverage, config.feedback.clone())
        .await
    {
        Ok(Some(step)) => {
            count_feedback(metrics, &step);
            Some(step)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "Cannot journal threshold feedback.");
            None
        }
    }
}

/// Counts and logs a feedback step taken.
pub fn count_feedback(metrics: &Metrics, step: &FeedbackStep) {
    let adjust = FeedbackReason::parse(&step.reason)
        .map(|r| r.adjust().as_str())
        .unwrap_or("keep");
    metrics
        .threshold_feedback
        .get_or_create(&ThresholdFeedbackLabels { adjust })
        .inc();
    tracing::info!(
        spec = %step.spec,
        series = %step.series,
        reason = %step.reason,
        incident = step.incident_id,
        from = step.coverage_before,
        to = step.coverage_after,
        "Threshold feedback: {} ({}).",
        step.adjust,
        step.detail
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(key: &str) -> SeriesInsufficient {
        SeriesInsufficient {
            labels: LabelSet::new(),
            key: key.into(),
            state: INSUFFICIENT_HISTORY,
            reason: "35 points of history, 2880 needed".into(),
            points: 35,
            fallback: None,
        }
    }

    fn fitted(key: &str) -> SeriesFit {
        SeriesFit {
            labels: LabelSet::new(),
            key: key.into(),
            coverage: 0.99,
            model: "ets".into(),
            points: 3000,
            lower: 0.0,
            upper: 1.0,
            point: 0.5,
        }
    }

    /// A series is warned about when it enters the state, not at every
    /// refit, and not again after a round that could not query Prometheus.
    #[test]
    fn insufficient_history_is_warned_about_once_per_series() {
        let keys = |c: &InsufficientChange| -> (Vec<String>, Vec<String>) {
            (
                c.entered.iter().map(|s| s.key.clone()).collect(),
                c.left.iter().map(|s| s.key.clone()).collect(),
            )
        };
        let first = SpecFit {
            series: vec![fitted("a")],
            insufficient: vec![waiting("b"), waiting("c")],
            ..SpecFit::default()
        };
        let mut state = HashSet::new();
        let change = insufficient_change(&state, &first).unwrap();
        assert_eq!(keys(&change), (vec!["b".into(), "c".into()], vec![]));
        state = change.now;
        // The same round again: nothing new to say.
        let change = insufficient_change(&state, &first).unwrap();
        assert_eq!(keys(&change), (vec![], vec![]));
        // A failed query fits nothing: the state is kept.
        assert_eq!(insufficient_change(&state, &SpecFit::default()), None);
        // b got its band; c still waits; d is new.
        let later = SpecFit {
            series: vec![fitted("a"), fitted("b")],
            insufficient: vec![waiting("c"), waiting("d")],
            ..SpecFit::default()
        };
        let change = insufficient_change(&state, &later).unwrap();
        assert_eq!(keys(&change), (vec!["d".into()], vec!["b".into()]));
        assert_eq!(change.now, HashSet::from(["c".to_owned(), "d".to_owned()]));
    }
}
