//! The anomaly task of `homeostat serve` (`anomaly:` specs): every `step`,
//! each spec's new points are read from Prometheus with one range query
//! and scored by each series' own streaming detector
//! ([`homeostat_core::detect`]); scores are exported as
//! `homeostat_anomaly_score`, held at the highest of the spec's `hold`, and
//! kept on the [`Board`] for the API and the policy's `anomaly_score`
//! feature. The generated rule file turns a held score at or over the
//! spec's threshold into an alert.
//!
//! Only the leader scores (the task runs in each of its terms). A series
//! seen for the first time learns from its history in Prometheus (up to the
//! spec's `history` points), so it scores from its first round when that
//! history is long enough. The detectors' state is journalled every
//! `persist_every` and when a term ends; the next term, here or on another
//! replica, resumes from it and scores the points it missed meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use homeostat_adapters::rules::{promtool_for, Prometheus, RuleWriter, QUERY_TIMEOUT};
use homeostat_core::alert::LabelSet;
use homeostat_core::clock::Clock;
use homeostat_core::detect::spec::{concerns, live_score, AnomalyConfig, AnomalySpec, RULE_FILE, SPEC_LABEL};
use homeostat_core::detect::{DetectConfig, StreamScorer};
use homeostat_core::policy::thresholds;
use homeostat_core::threshold::Series;
use homeostat_journal::anomaly::AnomalyState;
use homeostat_journal::Journal;

use crate::metrics::{spec_series_labels, AnomalySpecLabels, AnomalyStateLabels, Metrics, ThresholdSeriesLabels};

/// How long after a failed write of the rule file it is tried again.
const RULES_RETRY: Duration = Duration::from_secs(60);

/// One live series as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesScore {
    pub spec: String,
    pub labels: LabelSet,
    /// The highest score of the spec's `hold` (what is exported and alerted on).
    pub score: f64,
    /// The spec's threshold: the alert fires while `score` is at or over it.
    pub alarm_at: f64,
    /// The score of the last point.
    pub latest: f64,
    /// Unix seconds of the last point scored.
    pub last_point: i64,
    /// The last point at or over the spec's threshold, if any is remembered.
    pub last_alarm: Option<i64>,
    /// Points the detector has taken in.
    pub points: u64,
    /// Still learning: it scores nothing yet.
    pub learning: bool,
}

/// What the leader's detectors say now, by spec and series: for the API
/// (`GET /api/v1/anomaly`) and the policy's `anomaly_score` feature.
#[derive(Debug, Default)]
pub struct Board {
    series: RwLock<BTreeMap<(String, LabelSet), SeriesScore>>,
}

impl Board {
    /// Every live series, by spec and labels.
    pub fn list(&self) -> Vec<SeriesScore> {
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The highest held score of the series that concern an incident
    /// labelled `labels` ([`concerns`]), or of the series the alert was
    /// generated for; `None` when none does. Each score is scaled so that
    /// its spec's threshold is the policy's ([`thresholds::ANOMALY_SCORE`]):
    /// a series is `anomalous` to the policy when it alarms, whatever its
    /// spec's threshold or scale (raw or calibrated).
    pub fn score_for(&self, labels: &LabelSet) -> Option<f64> {
        let own = labels.get(SPEC_LABEL);
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| own.is_none_or(|spec| *spec == s.spec) && concerns(&s.labels, labels))
            .map(|s| (s.score * thresholds::ANOMALY_SCORE / s.alarm_at).min(1.0))
            .reduce(f64::max)
    }

    fn replace(&self, spec: &str, series: Vec<SeriesScore>) {
        let mut board = self.series.write().unwrap_or_else(|p| p.into_inner());
        board.retain(|(s, _), _| s != spec);
        board.extend(series.into_iter().map(|s| ((s.spec.clone(), s.labels.clone()), s)));
    }
}

/// One series' detector and what it scored lately.
struct Tracked {
    scorer: StreamScorer,
    /// Unix seconds of the last point taken in.
    last: i64,
    /// The last grid time the series had a value (for staleness).
    seen: i64,
    latest: f64,
    /// Scores above 0 within the hold, oldest first.
    recent: VecDeque<(i64, f64)>,
    last_alarm: Option<i64>,
}

impl Tracked {
    /// A detector whose last point (taken in, and seen) was at `last`.
    fn new(scorer: StreamScorer, last: i64) -> Tracked {
        Tracked {
            scorer,
            last,
            seen: last,
            latest: 0.0,
            recent: VecDeque::new(),
            last_alarm: None,
        }
    }
}

/// A spec and its series' detectors.
struct SpecState {
    spec: AnomalySpec,
    detect: DetectConfig,
    step: i64,
    series: HashMap<LabelSet, Tracked>,
    /// The last grid time queried in this term (none: read the whole history).
    end: Option<i64>,
    /// The series exported as gauges, to drop them when they go.
    exported: HashSet<LabelSet>,
    /// Label sets already reported as folded into another series.
    folded: HashSet<LabelSet>,
    /// A query failure was logged and no round succeeded since.
    failing: bool,
}

/// The anomaly task's state between rounds.
pub struct Detector {
    config: AnomalyConfig,
    journal: Journal,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    board: Arc<Board>,
    prometheus: Prometheus,
    writer: RuleWriter,
    specs: Vec<SpecState>,
}

impl Detector {
    pub fn new(
        config: AnomalyConfig,
        journal: Journal,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        board: Arc<Board>,
    ) -> Result<Detector, String> {
        let prometheus = Prometheus::new(&config.prometheus_url, QUERY_TIMEOUT)?;
        let writer = RuleWriter {
            dir: config.rules_dir.clone(),
            promtool: promtool_for(config.check_rules, config.promtool.as_deref()),
        };
        let specs = config
            .specs
            .iter()
            .map(|spec| SpecState {
                spec: spec.clone(),
                detect: spec.detector(),
                step: i64::try_from(spec.step.0.as_secs()).unwrap_or(i64::MAX).max(1),
                series: HashMap::new(),
                end: None,
                exported: HashSet::new(),
                folded: HashSet::new(),
                failing: false,
            })
            .collect();
        Ok(Detector {
            config,
            journal,
            metrics,
            clock,
            board,
            prometheus,
            writer,
            specs,
        })
    }

    /// Scores every spec on its step until `stop` turns true (the end of
    /// this term, or of the process), then journals the detectors' state
    /// and withdraws the scores it exported: a replica that does not lead
    /// exports none.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        // Until the rule file is in place (Prometheus down, say), it is
        // tried again every minute.
        let mut rules_due = (!self.write_rules().await).then(|| Instant::now() + RULES_RETRY);
        self.resume().await;
        tracing::info!(
            specs = self.specs.len(),
            prometheus = %self.config.prometheus_url,
            "Anomaly detection: scoring."
        );
        let mut persist_at = Instant::now() + self.config.persist_every.0;
        let mut due: Vec<Instant> = vec![Instant::now(); self.specs.len()];
        loop {
            let now = Instant::now();
            let ready: Vec<usize> = (0..due.len()).filter(|&i| due[i] <= now).collect();
            for i in ready {
                self.round(i).await;
                due[i] = Instant::now() + self.until_next(i);
            }
            if persist_at <= Instant::now() {
                self.persist().await;
                persist_at = Instant::now() + self.config.persist_every.0;
            }
            if rules_due.is_some_and(|at| at <= Instant::now()) {
                rules_due = (!self.write_rules().await).then(|| Instant::now() + RULES_RETRY);
            }
            let next = due
                .iter()
                .copied()
                .chain([persist_at])
                .chain(rules_due)
                .min()
                .unwrap_or(persist_at);
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        self.persist().await;
        for state in &mut self.specs {
            for labels in state.exported.drain() {
                self.metrics
                    .anomaly_score
                    .remove(&exported_labels(&state.spec.name, &labels));
            }
            for kind in ["learning", "scoring"] {
                self.metrics.anomaly_series.remove(&AnomalyStateLabels {
                    anomaly_spec: state.spec.name.clone(),
                    state: kind,
                });
            }
            self.board.replace(&state.spec.name, Vec::new());
            state.end = None;
        }
    }

    /// Time until the next grid point of spec `i`, plus a second for
    /// Prometheus to have scraped it.
    fn until_next(&self, i: usize) -> Duration {
        let step = self.specs[i].step;
        let now = self.clock.now().timestamp();
        let next = now - now.rem_euclid(step) + step + 1;
        Duration::from_secs(u64::try_from(next - now).unwrap_or(1).max(1))
    }

    /// Puts the rule file in place (checked, and Prometheus reloaded);
    /// whether it is.
    async fn write_rules(&self) -> bool {
        let name = RULE_FILE.trim_end_matches(".rules.yml").to_owned();
        let reload = self.config.reload.then_some(&self.prometheus);
        let results = self.writer.update(vec![(name, self.config.render())], reload).await;
        results.into_iter().all(|(_, result)| match result {
            Ok(()) => {
                tracing::info!(file = %self.writer.dir.join(RULE_FILE).display(), "Anomaly rules in place.");
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "Cannot put the anomaly rules in place: scores are exported, but no alert fires on them; retrying every minute."
                );
                false
            }
        })
    }

    /// Takes the journalled detectors of the configured specs back.
    async fn resume(&mut self) {
        let states = match self.journal.anomaly_states().await {
            Ok(states) => states,
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the anomaly detectors' state; they learn again from Prometheus.");
                return;
            }
        };
        let mut resumed = 0;
        for saved in states {
            let Some(state) = self.specs.iter_mut().find(|s| s.spec.name == saved.spec) else {
                continue;
            };
            if state.series.contains_key(&saved.labels) {
                // Still in memory from an earlier term of this process: newer.
                continue;
            }
            resumed += 1;
            let scorer = StreamScorer::resume(&state.detect, saved.snapshot);
            state
                .series
                .insert(saved.labels, Tracked::new(scorer, saved.last_point));
        }
        if resumed > 0 {
            tracing::info!(series = resumed, "Anomaly detectors resumed from the journal.");
        }
    }

    /// Journals every detector's state.
    async fn persist(&self) {
        let now = self.clock.now();
        let states: Vec<AnomalyState> = self
            .specs
            .iter()
            .flat_map(|state| {
                state.series.iter().map(|(labels, tracked)| AnomalyState {
                    spec: state.spec.name.clone(),
                    labels: labels.clone(),
                    last_point: tracked.last,
                    saved_at: now,
                    snapshot: tracked.scorer.snapshot(),
                })
            })
            .collect();
        let count = states.len();
        match self.journal.save_anomaly(states).await {
            Ok(()) => tracing::debug!(series = count, "Anomaly detectors journalled."),
            Err(e) => tracing::error!(error = %e, "Cannot journal the anomaly detectors' state."),
        }
    }

    /// One round of spec `i`: reads the points since its last round (the
    /// whole history on the first), scores them, exports the scores.
    async fn round(&mut self, i: usize) {
        let started = std::time::Instant::now();
        let now = self.clock.now().timestamp();
        let state = &mut self.specs[i];
        let step = state.step;
        let end = now - now.rem_euclid(step);
        let history = state.spec.history;
        let n = match state.end {
            Some(last) if last >= end => return,
            Some(last) => usize::try_from((end - last) / step).unwrap_or(history).min(history),
            None => history,
        };
        let spec_labels = AnomalySpecLabels {
            anomaly_spec: state.spec.name.clone(),
        };
        let mut fetched = match self.prometheus.range(&state.spec.expr, end, state.spec.step.0, n).await {
            Ok(series) => series,
            Err(e) => {
                self.metrics.anomaly_query_failures.get_or_create(&spec_labels).inc();
                if !state.failing {
                    tracing::warn!(spec = %state.spec.name, error = %e, "Cannot read an anomaly spec's series; retrying every step.");
                }
                state.failing = true;
                return;
            }
        };
        if state.failing {
            tracing::info!(spec = %state.spec.name, "An anomaly spec's series can be read again.");
            state.failing = false;
        }
        // A series new in a short read learns from its whole history first.
        let new = |state: &SpecState, fetched: &[Series]| {
            fetched
                .iter()
                .map(|s| state.spec.keep(&s.labels))
                .any(|k| !state.series.contains_key(&k))
        };
        if n < history && new(state, &fetched) {
            match self
                .prometheus
                .range(&state.spec.expr, end, state.spec.step.0, history)
                .await
            {
                Ok(series) => fetched = series,
                Err(e) => {
                    tracing::warn!(spec = %state.spec.name, error = %e, "Cannot read a new series' history; it learns from now on.")
                }
            }
        }
        let (points, alarms) = state.take(fetched);
        state.end = Some(end);
        self.metrics.anomaly_points.get_or_create(&spec_labels).inc_by(points);
        self.metrics.anomaly_alarms.get_or_create(&spec_labels).inc_by(alarms);
        let scores = state.export(end, &self.metrics);
        self.board.replace(&state.spec.name, scores);
        self.metrics
            .anomaly_round_seconds
            .get_or_create(&spec_labels)
            .set(started.elapsed().as_secs_f64());
    }
}

impl SpecState {
    /// Scores the points of `fetched` each series has not taken in yet;
    /// returns the points scored and the alarms among them.
    fn take(&mut self, fetched: Vec<Series>) -> (u64, u64) {
        let (mut points, mut alarms) = (0, 0);
        let mut taken: HashSet<LabelSet> = HashSet::new();
        for series in fetched {
            let key = self.spec.keep(&series.labels);
            if !taken.insert(key.clone()) {
                if self.folded.len() > 10_000 {
                    self.folded.clear();
                }
                if self.folded.insert(series.labels.clone()) {
                    tracing::warn!(
                        spec = %self.spec.name,
                        series = ?series.labels,
                        kept = ?key,
                        "Two series of an anomaly spec differ only in labels it does not keep: only the first is scored."
                    );
                }
                continue;
            }
            let detect = &self.detect;
            let tracked = self
                .series
                .entry(key)
                .or_insert_with(|| Tracked::new(StreamScorer::new(detect), i64::MIN));
            for (j, value) in series.values.iter().enumerate() {
                let t = series.start + i64::try_from(j).unwrap_or(i64::MAX) * self.step;
                if t <= tracked.last || !value.is_finite() {
                    continue;
                }
                let score = live_score(&mut tracked.scorer, *value);
                points += 1;
                tracked.last = t;
                tracked.seen = t;
                tracked.latest = score;
                if score > 0.0 {
                    tracked.recent.push_back((t, score));
                }
                if score >= self.spec.alarm_at() {
                    alarms += 1;
                    tracked.last_alarm = Some(t);
                }
            }
        }
        (points, alarms)
    }

    /// Exports each live series' held score and returns the board's view.
    /// A series without a point for a whole hold is no longer exported.
    fn export(&mut self, end: i64, metrics: &Metrics) -> Vec<SeriesScore> {
        let hold = i64::try_from(self.spec.hold.0.as_secs()).unwrap_or(i64::MAX);
        let mut live = HashSet::new();
        let mut scores = Vec::new();
        let (mut learning, mut scoring) = (0, 0);
        // A series gone for a whole history is forgotten: it would rebuild
        // from nothing it kept anyway.
        let forget = end.saturating_sub(
            i64::try_from(self.spec.history)
                .unwrap_or(i64::MAX)
                .saturating_mul(self.step),
        );
        self.series.retain(|_, tracked| tracked.seen > forget);
        for (labels, tracked) in &mut self.series {
            while tracked.recent.front().is_some_and(|(t, _)| *t <= end - hold) {
                tracked.recent.pop_front();
            }
            if tracked.seen <= end - hold {
                continue;
            }
            let held = tracked.recent.iter().map(|(_, s)| *s).fold(0.0, f64::max);
            metrics
                .anomaly_score
                .get_or_create(&exported_labels(&self.spec.name, labels))
                .set(held);
            live.insert(labels.clone());
            let is_learning = tracked.scorer.learning();
            if is_learning {
                learning += 1;
            } else {
                scoring += 1;
            }
            scores.push(SeriesScore {
                spec: self.spec.name.clone(),
                labels: labels.clone(),
                score: held,
                alarm_at: self.spec.alarm_at(),
                latest: tracked.latest,
                last_point: tracked.last,
                last_alarm: tracked.last_alarm,
                points: tracked.scorer.points(),
                learning: is_learning,
            });
        }
        for gone in self.exported.difference(&live) {
            metrics.anomaly_score.remove(&exported_labels(&self.spec.name, gone));
        }
        self.exported = live;
        for (kind, count) in [("learning", learning), ("scoring", scoring)] {
            metrics
                .anomaly_series
                .get_or_create(&AnomalyStateLabels {
                    anomaly_spec: self.spec.name.clone(),
                    state: kind,
                })
                .set(count);
        }
        scores
    }
}

/// `anomaly_spec` first, then the series' own labels.
fn exported_labels(spec: &str, labels: &LabelSet) -> ThresholdSeriesLabels {
    spec_series_labels(SPEC_LABEL, spec, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(spec: &str, service: &str, score: f64, alarm_at: f64) -> SeriesScore {
        SeriesScore {
            spec: spec.into(),
            labels: LabelSet::from([("service".to_owned(), service.to_owned())]),
            score,
            alarm_at,
            latest: score,
            last_point: 0,
            last_alarm: None,
            points: 1000,
            learning: false,
        }
    }

    /// The policy sees each series' score scaled to its spec's threshold:
    /// a calibrated series alarming at 0.2 is as anomalous to it as a raw
    /// one at 0.5, and the highest of those concerning an incident counts.
    #[test]
    fn scores_reach_the_policy_scaled_to_their_spec_threshold() {
        let board = Board::default();
        board.replace(
            "raw",
            vec![series("raw", "web", 0.6, 0.5), series("raw", "db", 0.4, 0.5)],
        );
        board.replace("calibrated", vec![series("calibrated", "db", 0.3, 0.2)]);
        let incident = |service: &str| LabelSet::from([("service".to_owned(), service.to_owned())]);
        assert_eq!(board.score_for(&incident("web")), Some(0.6));
        // 0.3 against 0.2 is 0.75 against 0.5; above the raw series' 0.4.
        let db = board.score_for(&incident("db")).unwrap();
        assert!((db - 0.75).abs() < 1e-12, "{db}");
        board.replace("calibrated", vec![series("calibrated", "db", 0.9, 0.2)]);
        assert_eq!(board.score_for(&incident("db")), Some(1.0));
        assert_eq!(board.score_for(&incident("cache")), None);
    }
}
