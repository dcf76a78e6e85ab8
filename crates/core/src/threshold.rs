//! Adaptive alert thresholds: from a PromQL expression's history to
//! Prometheus alerting rules, and back from what the alerts did.
//!
//! ```text
//! spec ──range query──▶ history (per series) ──forecast──▶ band ──▶ thresholds
//!   ▲                                                                   │
//!   │ coverage per series (journal: threshold_feedback)                 ▼
//!   └── feedback: resolved without action / marked false → widen    rule file
//!                 SLO alert fired, adaptive one silent   → tighten  (one group per spec)
//! ```
//!
//! Everything in this file is pure: it takes values and returns values.
//! `homeostat_adapters::rules` holds the I/O (querying, `promtool`, writing,
//! reloading) and `homeostat_server::thresholds` the task that runs it under
//! `homeostat serve`.
//!
//! **Rules.** A rule file holds one group per spec, and in it one alert
//! rule per series and direction. A series is picked out of the spec's
//! expression by joining it with a one-sample vector carrying exactly that
//! series' labels:
//!
//! ```text
//! (EXPR) > 0.42 and on (service) label_replace(vector(1), "service", "a", "", "")
//! ```
//!
//! `and on (labels)` keeps the left-hand samples whose labels match, and the
//! comparison keeps the left-hand value, so the alert carries the series'
//! own labels (those the executors use to find a target), its `$value` is
//! the series' value, and the expression needs nothing but the spec's PromQL.
//! A series that appears only after a fit gets a rule at the next refit.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::is_label_name;
use crate::alert::LabelSet;
use crate::duration::PromDuration;
use crate::forecast::{self, Band};

/// The label every generated alert carries: the spec's name.
pub const SPEC_LABEL: &str = "homeostat_threshold";
/// The label saying which side of the band was crossed: `above` or `below`.
pub const DIRECTION_LABEL: &str = "threshold_direction";
/// The annotation holding the series' key (see [`series_key`]).
pub const SERIES_ANNOTATION: &str = "homeostat_series";
/// Most points one spec's history may hold (memory is 8 bytes a point, per series).
pub const MAX_POINTS: u64 = 200_000;

/// `thresholds:` — adaptive alert thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsConfig {
    /// Prometheus' URL (http): history is queried from it, and it is asked
    /// to reload (it must run with `--web.enable-lifecycle`).
    pub prometheus_url: String,
    /// Where the rule files go, one per spec (`<name>.rules.yml`); list
    /// `<dir>/*.rules.yml` in Prometheus' `rule_files`. Default `rules/generated`.
    #[serde(default = "default_rules_dir")]
    pub rules_dir: PathBuf,
    /// Check every rendered file with `promtool check rules` before it
    /// replaces the previous one. Default true; skipped (with a warning)
    /// when `promtool` is not found.
    #[serde(default = "yes")]
    pub check_rules: bool,
    /// The `promtool` to run. Default: `promtool` on `PATH`.
    #[serde(default)]
    pub promtool: Option<PathBuf>,
    /// Ask Prometheus to reload after writing (`POST /-/reload`), and
    /// confirm with `prometheus_config_last_reload_successful`. Default true.
    #[serde(default = "yes")]
    pub reload: bool,
    /// How far feedback may move a series' coverage.
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// A refit rewrites a spec's rule file (and reloads Prometheus) only
    /// when one of its thresholds moved by more than this fraction of the
    /// series' scale (the larger of its previous bounds' magnitudes and its
    /// band's width), or a series appeared or vanished; otherwise the rules
    /// in effect stay and the skip is counted
    /// (`homeostat_threshold_writes_skipped_total`). Every reload can delay
    /// Prometheus' alert notifications, so rules are not rewritten for
    /// noise. Default 0.05; 0 rewrites on any change.
    #[serde(default = "default_min_change")]
    pub min_change: f64,
    /// The thresholds to keep up to date.
    pub specs: Vec<ThresholdSpec>,
}

fn default_min_change() -> f64 {
    0.05
}

fn yes() -> bool {
    true
}

fn default_rules_dir() -> PathBuf {
    PathBuf::from("rules/generated")
}

/// `thresholds.feedback:` — bounded steps of a series' coverage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Tightening never lowers a coverage below this. Default 0.8.
    pub min_coverage: f64,
    /// Widening never raises a coverage above this. Default 0.9999.
    pub max_coverage: f64,
    /// One step multiplies (tighten) or divides (widen) the share of normal
    /// points expected outside the band, `1 - coverage`, by this. Default 2.
    pub factor: f64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            min_coverage: 0.8,
            max_coverage: 0.9999,
            factor: 2.0,
        }
    }
}

/// One threshold spec: a PromQL expression whose every series gets its own
/// band and its own alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// Names the rule group, the rule file and the `homeostat_threshold`
    /// label: letters, digits and `_`, not starting with a digit.
    pub name: String,
    /// PromQL, one series per label set (e.g. p99 latency `by (service)`).
    /// Counters belong in `rate()`: the band is fitted to what `expr` returns.
    pub expr: String,
    /// Which crossing alerts: `above` (default), `below` or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Share of normal points the band should hold. Default 0.99.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
    /// Sampling step of the history. Default 1m.
    #[serde(default = "default_step")]
    pub step: PromDuration,
    /// How much history to fit. Default 7d.
    #[serde(default = "default_history")]
    pub history: PromDuration,
    /// How often to fit again; the thresholds cover the band over this
    /// period (its maximum above, its minimum below). Default 15m.
    #[serde(default = "default_refit")]
    pub refit_interval: PromDuration,
    /// The generated rule's `for:`. Default 5m.
    #[serde(rename = "for", default = "default_for")]
    pub for_: PromDuration,
    /// The generated alert's name.
    pub alert: String,
    /// Labels added to the generated alert, e.g. `severity`, or the target
    /// labels the executors need (`namespace`, `deployment`, …) when the
    /// series does not carry them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the generated alert (Prometheus templates; `$value`
    /// formatted with `printf`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Alerts (by `alertname`) whose firing while this spec's alert stayed
    /// silent for the same series counts as a miss and tightens its band.
    #[serde(default)]
    pub slo_alerts: Vec<String>,
    /// For leaks and exhaustion: a `predict_linear` time to reaching a limit,
    /// computed by Prometheus when the alert fires and attached to it (and so
    /// to the incident) as the `time_to_exhaustion` annotation.
    #[serde(default)]
    pub exhaustion: Option<Exhaustion>,
    /// Static thresholds for a series whose history does not yet support a
    /// band (state `insufficient_history`, see `min_history`): its rules use
    /// these meanwhile. Without them such a series gets no rule.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// How much history a series needs, from its first sample, before its
    /// band is published. Default: two of the longest season the spec's
    /// `history` supports at its `step` (2d for a 7d history at 1m, 14d for
    /// 30d: the model the full history is fitted with), else 60 steps (at
    /// most the whole `history`). At least 16 steps, at most `history`.
    #[serde(default)]
    pub min_history: Option<PromDuration>,
    /// The series can never be negative (rates, latencies, counts): the band
    /// never goes below 0. Default: when all of a series' history is ≥ 0;
    /// `false` never clamps.
    #[serde(default)]
    pub non_negative: Option<bool>,
}

/// `fallback:` — the static thresholds of a series with insufficient history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// Alert above this (direction `above` or `both`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// Alert below this (direction `below` or `both`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
}

impl Fallback {
    /// The threshold of `side`, if one is set.
    pub fn threshold(&self, side: Side) -> Option<f64> {
        match side {
            Side::Above => self.upper,
            Side::Below => self.lower,
        }
    }
}

/// `exhaustion:` — the limit a series runs into, and the trend window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exhaustion {
    /// The value at which the resource is exhausted (e.g. a memory limit in bytes).
    pub limit: f64,
    /// The window `predict_linear` fits its line to. Default 1h.
    #[serde(default = "default_window")]
    pub window: PromDuration,
}

fn default_coverage() -> f64 {
    0.99
}
fn default_step() -> PromDuration {
    PromDuration(Duration::from_secs(60))
}
fn default_history() -> PromDuration {
    PromDuration(Duration::from_secs(7 * 86_400))
}
fn default_refit() -> PromDuration {
    PromDuration(Duration::from_secs(15 * 60))
}
fn default_for() -> PromDuration {
    PromDuration(Duration::from_secs(5 * 60))
}
fn default_window() -> PromDuration {
    PromDuration(Duration::from_secs(3600))
}

/// Which side of the band alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Above,
    Below,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
            Direction::Both => "both",
        }
    }

    pub fn sides(self) -> &'static [Side] {
        match self {
            Direction::Above => &[Side::Above],
            Direction::Below => &[Side::Below],
            Direction::Both => &[Side::Above, Side::Below],
        }
    }
}

/// One side of a band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Above,
    Below,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Above => "above",
            Side::Below => "below",
        }
    }
}

impl ThresholdsConfig {
    /// What the types cannot check: `(key, message)` of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: String, message: &str| Err((key, message.to_owned()));
        crate::config::check_http_url("thresholds.prometheus_url", &self.prometheus_url)?;
        crate::config::check_rules_dir("thresholds.rules_dir", &self.rules_dir)?;
        let f = &self.feedback;
        if !(f.min_coverage > 0.0 && f.min_coverage < f.max_coverage && f.max_coverage < 1.0) {
            return err("thresholds.feedback".into(), "need 0 < min_coverage < max_coverage < 1");
        }
        if !(f.factor > 1.0 && f.factor <= 10.0) {
            return err("thresholds.feedback.factor".into(), "must be above 1 and at most 10");
        }
        if !(0.0..1.0).contains(&self.min_change) {
            return err("thresholds.min_change".into(), "must be at least 0 and below 1");
        }
        let mut names = std::collections::HashSet::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let key = |field: &str| format!("thresholds.specs[{i}].{field}");
            if !is_label_name(&spec.name) {
                return err(
                    key("name"),
                    "must be letters, digits and `_`, not starting with a digit",
                );
            }
            if !names.insert(spec.name.as_str()) {
                return err(key("name"), &format!("{:?} is used by another spec", spec.name));
            }
            if spec.expr.trim().is_empty() {
                return err(key("expr"), "must be a PromQL expression");
            }
            if !is_label_name(&spec.alert.replace(':', "_")) {
                return err(key("alert"), "must be a valid metric name, e.g. LatencyAboveBand");
            }
            if !(spec.coverage >= f.min_coverage && spec.coverage <= f.max_coverage) {
                return err(
                    key("coverage"),
                    &format!(
                        "must be from thresholds.feedback.min_coverage ({}) to max_coverage ({})",
                        f.min_coverage, f.max_coverage
                    ),
                );
            }
            let ten_years = Duration::from_secs(10 * 365 * 86_400);
            for (field, d) in [
                ("step", spec.step),
                ("history", spec.history),
                ("refit_interval", spec.refit_interval),
                ("for", spec.for_),
            ] {
                if d.0 > ten_years {
                    return err(key(field), "must be at most 10 years (3650d)");
                }
            }
            if spec.step.0 < Duration::from_secs(1) {
                return err(key("step"), "must be at least 1s");
            }
            let points = spec.history.0.as_secs() / spec.step.0.as_secs().max(1);
            if points < 2 {
                return err(key("history"), "must cover at least two steps");
            }
            if points > MAX_POINTS {
                return err(
                    key("history"),
                    &format!("is {points} steps; at most {MAX_POINTS} (use a longer step)"),
                );
            }
            if spec.refit_interval.0 < spec.step.0 {
                return err(key("refit_interval"), "must be at least one step");
            }
            if spec.refit_interval.0.as_secs() / spec.step.0.as_secs().max(1) > 10_000 {
                return err(key("refit_interval"), "must be at most 10000 steps");
            }
            for name in spec.labels.keys() {
                if !is_label_name(name) || name.starts_with("__") {
                    return err(key(&format!("labels.{name}")), "is not a valid label name");
                }
                if [SPEC_LABEL, DIRECTION_LABEL, "alertname"].contains(&name.as_str()) {
                    return err(key(&format!("labels.{name}")), "is set by homeostat");
                }
            }
            for name in spec.annotations.keys() {
                if !is_label_name(name) {
                    return err(key(&format!("annotations.{name}")), "is not a valid annotation name");
                }
                if name == SERIES_ANNOTATION || (name == "time_to_exhaustion" && spec.exhaustion.is_some()) {
                    return err(key(&format!("annotations.{name}")), "is set by homeostat");
                }
            }
            if let Some(fallback) = &spec.fallback {
                validate_fallback(fallback, spec.direction).map_err(|(field, message)| (key(field), message))?;
            }
            if let Some(min) = spec.min_history {
                if min.0 < spec.step.0 * forecast::MIN_MODEL_POINTS as u32 {
                    return err(
                        key("min_history"),
                        &format!("must be at least {} steps", forecast::MIN_MODEL_POINTS),
                    );
                }
                if min.0 > spec.history.0 {
                    return err(
                        key("min_history"),
                        "must be at most `history` (a series could never reach it)",
                    );
                }
            }
            if let Some(exhaustion) = &spec.exhaustion {
                if !exhaustion.limit.is_finite() {
                    return err(key("exhaustion.limit"), "must be a finite number");
                }
                if exhaustion.window.0 < spec.step.0 * 2 {
                    return err(key("exhaustion.window"), "must be at least two steps");
                }
                if spec.expr.contains('`') {
                    return err(key("expr"), "must not contain a backtick when `exhaustion` is set");
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with a spec's `fallback`: `(key under the spec, message)`.
fn validate_fallback(fallback: &Fallback, direction: Direction) -> Result<(), (&'static str, String)> {
    if fallback.upper.is_none() && fallback.lower.is_none() {
        return Err(("fallback", "needs `upper` or `lower` (or remove it)".into()));
    }
    for (field, value, side) in [
        ("fallback.upper", fallback.upper, Side::Above),
        ("fallback.lower", fallback.lower, Side::Below),
    ] {
        let Some(value) = value else { continue };
        if !value.is_finite() {
            return Err((field, "must be a finite number".into()));
        }
        if !direction.sides().contains(&side) {
            return Err((
                field,
                format!(
                    "is never used: direction `{}` does not alert {}",
                    direction.as_str(),
                    side.as_str()
                ),
            ));
        }
    }
    if let (Some(lower), Some(upper)) = (fallback.lower, fallback.upper) {
        if lower >= upper {
            return Err(("fallback", format!("lower ({lower}) must be below upper ({upper})")));
        }
    }
    Ok(())
}

/// One series of a spec's history, on a regular grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its labels, without `__name__`.
    pub labels: LabelSet,
    /// Unix seconds of the first point.
    pub start: i64,
    /// One value per step; NaN where Prometheus had none.
    pub values: Vec<f64>,
}

/// The canonical text of a label set, `{a="1",b="2"}`: how a series is named
/// in the journal, in feedback and in the `homeostat_series` annotation.
pub fn series_key(labels: &LabelSet) -> String {
    let mut key = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let _ = write!(key, "{name}={}", promql_string(value));
    }
    key.push('}');
    key
}

/// A PromQL (and Go) double-quoted string literal.
fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Puts samples `(unix seconds, value)` on the grid `start + k·step`,
/// `k < n`; a sample off the grid goes to the nearest point, gaps stay NaN.
pub fn to_grid(samples: impl IntoIterator<Item = (f64, f64)>, start: i64, step: Duration, n: usize) -> Vec<f64> {
    let step = step.as_secs_f64();
    let mut values = vec![f64::NAN; n];
    for (t, v) in samples {
        let k = ((t - start as f64) / step).round();
        if k >= 0.0 && (k as usize) < n {
            values[k as usize] = v;
        }
    }
    values
}

/// The windows `[start, end]` (unix seconds, inclusive) a range query of
/// `n` points at `step` from `start` is split into, each at most `max_points`
/// long (Prometheus refuses more than 11,000 points per series).
pub fn query_windows(start: i64, step: Duration, n: usize, max_points: usize) -> Vec<(i64, i64)> {
    let step = step.as_secs() as i64;
    let max_points = max_points.max(1);
    (0..n)
        .step_by(max_points)
        .map(|first| {
            let last = (first + max_points).min(n) - 1;
            (start + first as i64 * step, start + last as i64 * step)
        })
        .collect()
}

/// A series' fitted band over the coming period, and the thresholds it gives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesFit {
    pub labels: LabelSet,
    pub key: String,
    /// The coverage the band was fitted with (the spec's, moved by feedback).
    pub coverage: f64,
    /// What produced it (see [`Band::model`]).
    pub model: String,
    /// Points of history with a value.
    pub points: usize,
    /// The band's minimum lower bound and maximum upper bound over the period.
    pub lower: f64,
    pub upper: f64,
    /// The forecast for the first step of the period.
    pub point: f64,
}

/// Why a series got no thresholds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSkipped {
    pub key: String,
    pub reason: String,
}

/// The state of a series whose history does not support a band yet.
pub const INSUFFICIENT_HISTORY: &str = "insufficient_history";

/// A series in state `insufficient_history`: no band is published for it;
/// its rules use the spec's fallback thresholds, if any.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesInsufficient {
    pub labels: LabelSet,
    pub key: String,
    /// Always [`INSUFFICIENT_HISTORY`]: how the journal and `show` tell it from a fit.
    pub state: &'static str,
    pub reason: String,
    /// Points of history with a value.
    pub points: usize,
    /// The thresholds its rules use meanwhile (the spec's `fallback`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
}

/// A spec's fit: every series' band, the series whose history is too short
/// for one, and the series that could not be fitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpecFit {
    pub series: Vec<SeriesFit>,
    pub skipped: Vec<SeriesSkipped>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insufficient: Vec<SeriesInsufficient>,
}

/// Whether the rules `next` renders differ materially from those of
/// `previous`: a series appeared or vanished, or a bound moved by more than
/// `min_change` of the series' scale (the larger of its previous bounds'
/// magnitudes and its band's width; any move when that scale is 0).
pub fn changed(previous: &SpecFit, next: &SpecFit, min_change: f64) -> bool {
    if previous.series.len() != next.series.len() {
        return true;
    }
    // A series that came or went in `insufficient_history` (and its fallback rule).
    let keys = |fit: &SpecFit| -> std::collections::BTreeSet<String> {
        fit.insufficient.iter().map(|s| s.key.clone()).collect()
    };
    if keys(previous) != keys(next) {
        return true;
    }
    let before: HashMap<&str, &SeriesFit> = previous.series.iter().map(|s| (s.key.as_str(), s)).collect();
    next.series.iter().any(|now| match before.get(now.key.as_str()) {
        None => true,
        Some(was) => {
            let scale = was.upper.abs().max(was.lower.abs()).max(was.upper - was.lower);
            // A bound that became (or was) NaN counts as moved.
            let moved = |now: f64, was: f64| {
                let by = (now - was).abs();
                by.is_nan() || by > min_change * scale
            };
            moved(now.upper, was.upper) || moved(now.lower, was.lower)
        }
    })
}

/// The number of steps of the coming period a band is forecast for.
pub fn horizon_steps(spec: &ThresholdSpec) -> usize {
    (spec.refit_interval.0.as_secs() / spec.step.0.as_secs().max(1)).max(1) as usize
}

/// Fits every series of `history` (the spec's history); `coverage_of` gives a
/// series' coverage by key (feedback's, else the spec's). A series whose
/// history does not support a band yet ([`FitRules`]) is put in
/// `insufficient` with the spec's fallback.
pub fn fit_spec(spec: &ThresholdSpec, history: &[Series], coverage_of: &dyn Fn(&str) -> f64) -> SpecFit {
    let horizon = horizon_steps(spec);
    let rules = FitRules::of_spec(spec);
    let mut fit = SpecFit::default();
    for series in history {
        let key = series_key(&series.labels);
        let coverage = coverage_of(&key);
        match fit_series_with(&series.values, spec.step.0, horizon, coverage, &rules) {
            Ok((band, points)) => {
                let (lower, upper) = band_extremes(&band);
                fit.series.push(SeriesFit {
                    labels: series.labels.clone(),
                    key,
                    coverage,
                    model: band.model,
                    points,
                    lower,
                    upper,
                    point: band.point.first().copied().unwrap_or(f64::NAN),
                });
            }
            Err(Unfitted::InsufficientHistory { reason, points }) => fit.insufficient.push(SeriesInsufficient {
                labels: series.labels.clone(),
                key,
                state: INSUFFICIENT_HISTORY,
                reason,
                points,
                fallback: spec.fallback.clone(),
            }),
            Err(Unfitted::Failed(reason)) => fit.skipped.push(SeriesSkipped { key, reason }),
        }
    }
    fit
}

/// Points a series needs when nothing else says: with no season in reach.
pub const DEFAULT_MIN_POINTS: usize = 60;
/// Below this share of values among the steps since its first sample, a
/// series' history is mostly interpolation: not enough to fit.
pub const MIN_OBSERVED_SHARE: f64 = 0.5;

/// What a series' history must hold before its band is published, and how
/// the band is bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct FitRules {
    /// Steps of history, from the first with a value to the end of the
    /// window (and values at [`MIN_OBSERVED_SHARE`] of them).
    pub min_points: usize,
    /// Why that many, for people (`two daily seasons`, `min_history 2h`).
    pub basis: String,
    /// See [`ThresholdSpec::non_negative`].
    pub non_negative: Option<bool>,
}

impl FitRules {
    /// A spec's rules: its `min_history`, else the default for its window.
    pub fn of_spec(spec: &ThresholdSpec) -> FitRules {
        let window = (spec.history.0.as_secs() / spec.step.0.as_secs().max(1)) as usize;
        FitRules::for_window(spec.step.0, window, spec.min_history.map(|d| d.0), spec.non_negative)
    }

    /// The rules for a window of `window` points at `step`: `min_history`
    /// when given, else two of the longest season the window supports (the
    /// model it is fitted with once full), else [`DEFAULT_MIN_POINTS`]
    /// (at most the window).
    pub fn for_window(
        step: Duration,
        window: usize,
        min_history: Option<Duration>,
        non_negative: Option<bool>,
    ) -> FitRules {
        let (min_points, basis) = match min_history {
            Some(d) => (
                (d.as_secs() / step.as_secs().max(1)) as usize,
                format!("min_history {}", PromDuration(d)),
            ),
            None => match forecast::seasonal_periods(step, window).last() {
                Some(&season) => (
                    2 * season,
                    format!(
                        "two seasons of {}, the longest its history fits",
                        PromDuration(step * season as u32)
                    ),
                ),
                None => (
                    DEFAULT_MIN_POINTS.min(window),
                    format!("{} steps", DEFAULT_MIN_POINTS.min(window)),
                ),
            },
        };
        FitRules {
            min_points: min_points.max(2),
            basis,
            non_negative,
        }
    }
}

/// Why a series got no band.
#[derive(Clone, Debug, PartialEq)]
pub enum Unfitted {
    /// Its history does not support a band yet (state `insufficient_history`).
    InsufficientHistory { reason: String, points: usize },
    /// Fitting failed.
    Failed(String),
}

impl std::fmt::Display for Unfitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfitted::InsufficientHistory { reason, .. } => write!(f, "{INSUFFICIENT_HISTORY}: {reason}"),
            Unfitted::Failed(reason) => f.write_str(reason),
        }
    }
}

/// One series' band for `horizon` steps, and how many of its points had a
/// value, under the default rules for a window of `values.len()` points
/// ([`FitRules::for_window`]).
pub fn fit_series(values: &[f64], step: Duration, horizon: usize, coverage: f64) -> Result<(Band, usize), Unfitted> {
    let rules = FitRules::for_window(step, values.len(), None, None);
    fit_series_with(values, step, horizon, coverage, &rules)
}

/// One series' band for `horizon` steps, and how many of its points had a
/// value. The history starts at the series' first value (the steps before
/// it are not interpolated over); it must span `rules.min_points` steps,
/// with values at [`MIN_OBSERVED_SHARE`] of them, or the series is in
/// `insufficient_history`; so is a series constant at 0 (nothing to set a
/// band's width by).
pub fn fit_series_with(
    values: &[f64],
    step: Duration,
    horizon: usize,
    coverage: f64,
    rules: &FitRules,
) -> Result<(Band, usize), Unfitted> {
    let Some(first) = values.iter().position(|v| v.is_finite()) else {
        return Err(Unfitted::Failed("no value in the history".into()));
    };
    let values = &values[first..];
    let points = values.iter().filter(|v| v.is_finite()).count();
    let insufficient = |reason: String| Err(Unfitted::InsufficientHistory { reason, points });
    // The span counts, not the values: a missing scrape or two must not
    // keep a full window (two seasons exactly) from ever being enough.
    let span = values.len();
    if span < rules.min_points {
        let history = if points == span {
            format!("{span} points of history")
        } else {
            format!("{span} steps of history ({points} with a value)")
        };
        return insufficient(format!("{history}, {} needed ({})", rules.min_points, rules.basis));
    }
    if (points as f64) < MIN_OBSERVED_SHARE * values.len() as f64 {
        return insufficient(format!(
            "values at only {points} of the {} steps since its first sample",
            values.len()
        ));
    }
    // Forecast at least `CALIBRATION_POINTS` ahead and cut to the horizon:
    // the band is then calibrated by one held-back forecast (two model fits
    // per series) instead of one per horizon-long slice (five at a 15-point
    // refit interval), at the price of calibrating on errors up to that
    // lead, which widens a shorter horizon's band a little.
    let ahead = horizon.max(forecast::CALIBRATION_POINTS);
    let options = forecast::Options {
        non_negative: rules.non_negative,
    };
    let mut band =
        forecast::forecast_with(values, step, ahead, coverage, options).map_err(|e| Unfitted::Failed(e.to_string()))?;
    for v in [&mut band.point, &mut band.lower, &mut band.upper] {
        v.truncate(horizon);
    }
    let (lower, upper) = band_extremes(&band);
    if !(lower.is_finite() && upper.is_finite()) {
        return Err(Unfitted::Failed(format!(
            "the model ({}) gave no finite band",
            band.model
        )));
    }
    if band.lower.iter().zip(&band.upper).any(|(l, u)| u <= l) {
        return insufficient(format!(
            "constant at {}: no spread to set a band's width by",
            band.point.first().copied().unwrap_or(f64::NAN)
        ));
    }
    Ok((band, points))
}

fn band_extremes(band: &Band) -> (f64, f64) {
    let lower = band.lower.iter().copied().fold(f64::INFINITY, f64::min);
    let upper = band.upper.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower, upper)
}

/// A Prometheus rule file, as 2.42 reads it (only keys it accepts): the
/// spec's observed series, recorded, then its alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: (RuleGroup<RecordRule>, RuleGroup<AlertRule>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup<R = AlertRule> {
    pub name: String,
    pub rules: Vec<R>,
}

/// What the series a spec bounds are, recorded as [`OBSERVED`] with the
/// spec's name in `threshold_spec` (as homeostat's `homeostat_threshold_*`
/// metrics label it): the dashboards draw each band with its series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordRule {
    pub record: String,
    pub expr: String,
}

/// The recording of every spec's series, labelled `threshold_spec`.
pub const OBSERVED: &str = "homeostat:threshold_observed";

/// The group recording the spec's series as [`OBSERVED`].
pub fn observed_group(spec: &ThresholdSpec) -> RuleGroup<RecordRule> {
    RuleGroup {
        name: format!("homeostat_threshold_{}_observed", spec.name),
        rules: vec![RecordRule {
            record: OBSERVED.into(),
            expr: format!(
                "label_replace({}, \"threshold_spec\", {}, \"\", \"\")",
                spec.expr,
                promql_string(&spec.name.replace('$', "$$"))
            ),
        }],
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The spec's rule group: one alert rule per fitted series and side, and
/// one per series in `insufficient_history` and side the spec's fallback
/// sets (at that static threshold).
pub fn rule_group(spec: &ThresholdSpec, fit: &SpecFit) -> RuleGroup {
    // One rule: `series` crossing `threshold` on `side`; `band` says where the threshold came from.
    let rule = |labels_of: &LabelSet, key: &str, side: Side, threshold: f64, band: String| {
        let op = if side == Side::Above { ">" } else { "<" };
        let mut labels = spec.labels.clone();
        labels.insert(SPEC_LABEL.into(), spec.name.clone());
        labels.insert(DIRECTION_LABEL.into(), side.as_str().into());
        let mut annotations = spec.annotations.clone();
        annotations.insert(SERIES_ANNOTATION.into(), key.to_owned());
        annotations.insert(
            "homeostat_band".into(),
            format!("{} {threshold} ({band})", side.as_str()),
        );
        AlertRule {
            alert: spec.alert.clone(),
            expr: format!("({}) {op} {threshold}{}", spec.expr, series_filter(labels_of)),
            for_: spec.for_.to_string(),
            labels,
            annotations,
        }
    };
    let mut rules = Vec::new();
    for series in &fit.insufficient {
        for &side in spec.direction.sides() {
            if let Some(threshold) = series.fallback.as_ref().and_then(|f| f.threshold(side)) {
                let band = format!("static fallback: {INSUFFICIENT_HISTORY}, {}", series.reason);
                rules.push(rule(&series.labels, &series.key, side, threshold, band));
            }
        }
    }
    for series in &fit.series {
        for &side in spec.direction.sides() {
            let threshold = match side {
                Side::Above => series.upper,
                Side::Below => series.lower,
            };
            let band = format!(
                "{} at coverage {}, fitted on {} points",
                series.model, series.coverage, series.points
            );
            let mut alert = rule(&series.labels, &series.key, side, threshold, band);
            if let Some(exhaustion) = &spec.exhaustion {
                alert.annotations.insert(
                    "time_to_exhaustion".into(),
                    exhaustion_template(spec, exhaustion, series),
                );
            }
            rules.push(alert);
        }
    }
    RuleGroup {
        name: format!("homeostat_threshold_{}", spec.name),
        rules,
    }
}

/// ` and on (a, b) <a one-sample vector with exactly these labels>`, or
/// nothing for the single series without labels.
fn series_filter(labels: &LabelSet) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut vector = "vector(1)".to_owned();
    for (name, value) in labels {
        // In label_replace's replacement, `$` starts a group reference.
        let value = promql_string(&value.replace('$', "$$"));
        vector = format!("label_replace({vector}, \"{name}\", {value}, \"\", \"\")");
    }
    let names: Vec<&str> = labels.keys().map(String::as_str).collect();
    format!(" and on ({}) {vector}", names.join(", "))
}

/// An annotation template asking Prometheus, when the alert fires, how long
/// until the series reaches the limit at the slope `predict_linear` sees.
fn exhaustion_template(spec: &ThresholdSpec, exhaustion: &Exhaustion, series: &SeriesFit) -> String {
    let window = exhaustion.window;
    let step = spec.step;
    let expr = &spec.expr;
    let per_second = format!("(predict_linear(({expr})[{window}:{step}], 3600) - ({expr})) / 3600");
    let query = format!(
        "({} - ({expr})) / ({per_second}){}",
        exhaustion.limit,
        series_filter(&series.labels)
    );
    format!(
        "{{{{ with query `{query}` }}}}{{{{ with first . }}}}{{{{ if ge .Value 0.0 }}}}{{{{ .Value | humanizeDuration }}}}\
         {{{{ else }}}}not approaching the limit{{{{ end }}}}{{{{ end }}}}{{{{ else }}}}unknown{{{{ end }}}}"
    )
}

/// How every generated rule file starts: files starting otherwise are never removed.
pub const GENERATED_HEADER: &str = "# Generated by homeostat";

/// The rule file for one spec, as YAML.
pub fn render(spec: &ThresholdSpec, fit: &SpecFit, fitted_at: DateTime<Utc>) -> String {
    let file = RuleFile {
        groups: (observed_group(spec), rule_group(spec, fit)),
    };
    let yaml = serde_yaml::to_string(&file).expect("rule files serialize");
    let mut notes = String::new();
    for series in &fit.insufficient {
        for &side in spec.direction.sides() {
            if series.fallback.as_ref().and_then(|f| f.threshold(side)).is_none() {
                let _ = writeln!(
                    notes,
                    "# {} {}: {INSUFFICIENT_HISTORY} ({}); no fallback.{} configured: no rule.",
                    series.key.replace('\n', " "),
                    side.as_str(),
                    series.reason,
                    if side == Side::Above { "upper" } else { "lower" }
                );
            }
        }
    }
    format!(
        "{GENERATED_HEADER} for threshold spec {:?} at {}; rewritten at every refit, do not edit.\n{notes}{yaml}",
        spec.name,
        fitted_at.to_rfc3339()
    )
}

/// The file a spec's rules go to, inside the rules directory.
pub fn file_name(spec: &str) -> String {
    format!("{spec}.rules.yml")
}

/// What a feedback step does to a series' band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Adjust {
    /// More coverage: a wider band, fewer alerts.
    Widen,
    /// Less coverage: a narrower band, earlier alerts.
    Tighten,
    /// Recorded, no change (an alert a user confirmed as real).
    Keep,
}

impl Adjust {
    pub fn as_str(self) -> &'static str {
        match self {
            Adjust::Widen => "widen",
            Adjust::Tighten => "tighten",
            Adjust::Keep => "keep",
        }
    }
}

/// Why a feedback step was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackReason {
    /// The adaptive alert resolved and no action was taken on it.
    ResolvedWithoutAction,
    /// A user marked the adaptive alert false (`POST /api/v1/incidents/{id}/feedback`).
    MarkedFalse,
    /// A user confirmed the adaptive alert.
    MarkedTrue,
    /// An SLO alert fired for the series while the adaptive alert stayed silent.
    SloMiss,
}

impl FeedbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackReason::ResolvedWithoutAction => "resolved_without_action",
            FeedbackReason::MarkedFalse => "marked_false",
            FeedbackReason::MarkedTrue => "marked_true",
            FeedbackReason::SloMiss => "slo_miss",
        }
    }

    pub fn adjust(self) -> Adjust {
        match self {
            FeedbackReason::ResolvedWithoutAction | FeedbackReason::MarkedFalse => Adjust::Widen,
            FeedbackReason::SloMiss => Adjust::Tighten,
            FeedbackReason::MarkedTrue => Adjust::Keep,
        }
    }

    pub fn parse(text: &str) -> Option<FeedbackReason> {
        [
            FeedbackReason::ResolvedWithoutAction,
            FeedbackReason::MarkedFalse,
            FeedbackReason::MarkedTrue,
            FeedbackReason::SloMiss,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// The coverage after one bounded step: the share outside the band,
/// `1 - coverage`, divided (widen) or multiplied (tighten) by the factor,
/// and the result kept within the configured bounds.
pub fn step_coverage(coverage: f64, adjust: Adjust, bounds: &FeedbackConfig) -> f64 {
    let outside = 1.0 - coverage;
    let moved = match adjust {
        Adjust::Widen => 1.0 - outside / bounds.factor,
        Adjust::Tighten => 1.0 - outside * bounds.factor,
        Adjust::Keep => coverage,
    };
    moved.clamp(bounds.min_coverage, bounds.max_coverage)
}

/// A feedback event for one series of one spec, before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackEvent {
    pub spec: String,
    pub series: String,
    pub reason: FeedbackReason,
    /// The incident it comes from; one event per incident and reason at most.
    pub incident_id: i64,
    pub detail: String,
}

/// An incident as feedback sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentSummary {
    pub id: i64,
    pub alertname: String,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: DateTime<Utc>,
    /// `None` while firing.
    pub ended_at: Option<DateTime<Utc>>,
    /// An action other than `notify` was executed on it (not in dry run).
    pub acted: bool,
}

/// The feedback events the incidents imply for `spec`: each resolved adaptive
/// alert without an action widens its series; each resolved SLO alert whose
/// labels include a series' labels, during which (from `for` before it
/// started to its end) no adaptive alert of that series fired, tightens it.
pub fn feedback_events(spec: &ThresholdSpec, series: &[LabelSet], incidents: &[IncidentSummary]) -> Vec<FeedbackEvent> {
    let adaptive: Vec<&IncidentSummary> = incidents
        .iter()
        .filter(|i| i.alertname == spec.alert && i.labels.get(SPEC_LABEL) == Some(&spec.name))
        .collect();
    let mut events = Vec::new();
    for incident in &adaptive {
        let Some(key) = incident.annotations.get(SERIES_ANNOTATION) else {
            continue;
        };
        if incident.ended_at.is_some() && !incident.acted {
            events.push(FeedbackEvent {
                spec: spec.name.clone(),
                series: key.clone(),
                reason: FeedbackReason::ResolvedWithoutAction,
                incident_id: incident.id,
                detail: format!("alert {} resolved with no action taken", incident.alertname),
            });
        }
    }
    let grace = chrono::Duration::from_std(spec.for_.0).unwrap_or(chrono::Duration::zero());
    for slo in incidents.iter().filter(|i| spec.slo_alerts.contains(&i.alertname)) {
        let Some(slo_end) = slo.ended_at else { continue };
        for labels in series {
            let covers = labels.iter().all(|(k, v)| slo.labels.get(k) == Some(v));
            if !covers {
                continue;
            }
            let key = series_key(labels);
            let alerted = adaptive.iter().any(|a| {
                a.annotations.get(SERIES_ANNOTATION) == Some(&key)
                    && a.starts_at <= slo_end
                    && a.ended_at.is_none_or(|end| end >= slo.starts_at - grace)
            });
            if !alerted {
                events.push(FeedbackEvent {
                    spec: spec.name.clone(),
                    series: key,
                    reason: FeedbackReason::SloMiss,
                    incident_id: slo.id,
                    detail: format!(
                        "{} fired from {} to {} while {} stayed silent",
                        slo.alertname,
                        slo.starts_at.to_rfc3339(),
                        slo_end.to_rfc3339(),
                        spec.alert
                    ),
                });
            }
        }
    }
    events
}

/// One series' forecast band, as `homeostat thresholds fit --json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BandReport {
    pub labels: LabelSet,
    /// Unix seconds of each forecast step.
    pub timestamps: Vec<i64>,
    pub point: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub model: String,
    /// Points of history with a value.
    pub points: usize,
    /// `insufficient_history` when its history does not support a band yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Why there is no band, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The band of each series for `horizon` steps after its history, when its
/// history supports one under `rules`.
pub fn band_reports(
    history: &[Series],
    step: Duration,
    horizon: usize,
    coverage: f64,
    rules: &FitRules,
) -> Vec<BandReport> {
    let secs = step.as_secs().max(1) as i64;
    history
        .iter()
        .map(|series| {
            let last = series.start + (series.values.len() as i64 - 1) * secs;
            let timestamps = (1..=horizon as i64).map(|k| last + k * secs).collect();
            match fit_series_with(&series.values, step, horizon, coverage, rules) {
                Ok((band, points)) => BandReport {
                    labels: series.labels.clone(),
                    timestamps,
                    point: band.point,
                    lower: band.lower,
                    upper: band.upper,
                    model: band.model,
                    points,
                    state: None,
                    error: None,
                },
                Err(unfitted) => {
                    let (state, points, error) = match unfitted {
                        Unfitted::InsufficientHistory { reason, points } => {
                            (Some(INSUFFICIENT_HISTORY), points, reason)
                        }
                        Unfitted::Failed(reason) => (None, 0, reason),
                    };
                    BandReport {
                        labels: series.labels.clone(),
                        timestamps: vec![],
                        point: vec![],
                        lower: vec![],
                        upper: vec![],
                        model: String::new(),
                        points,
                        state,
                        error: Some(error),
                    }
                }
            }
        })
        .collect()
}

/// `homeostat thresholds fit` without `--json`: a line per series.
pub fn describe_bands(query: &str, reports: &[BandReport]) -> String {
    if reports.is_empty() {
        return format!("{query}: no series\n");
    }
    let mut out = String::new();
    for r in reports {
        let key = series_key(&r.labels);
        let _ = match (&r.error, r.state) {
            (Some(err), Some(state)) => writeln!(out, "{key}: {state}: no band published: {err}"),
            (Some(err), None) => writeln!(out, "{key}: no band: {err}"),
            (None, _) => writeln!(
                out,
                "{key}: {} on {} points; next {} steps: point {:.6} … {:.6}, lower min {:.6}, upper max {:.6}",
                r.model,
                r.points,
                r.point.len(),
                r.point.first().copied().unwrap_or(f64::NAN),
                r.point.last().copied().unwrap_or(f64::NAN),
                r.lower.iter().copied().fold(f64::INFINITY, f64::min),
                r.upper.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            ),
        };
    }
    out
}

/// A number with five significant digits, for people.
fn short(value: f64) -> String {
    if value != 0.0 && !(1e-3..1e6).contains(&value.abs()) {
        format!("{value:.4e}")
    } else {
        let digits = (4 - value.abs().log10().floor().max(-1.0) as i32).clamp(0, 8) as usize;
        let text = format!("{value:.digits$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    }
}

/// `homeostat thresholds show` as text: per spec, its latest rule update,
/// every series' band and coverage, and the feedback steps that moved them.
pub fn describe(state: &ThresholdState, config: Option<&ThresholdsConfig>) -> String {
    let mut specs: Vec<String> = config
        .map(|c| c.specs.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    for name in state
        .updates
        .iter()
        .map(|u| &u.spec)
        .chain(state.fits.iter().map(|f| &f.spec))
    {
        if !specs.contains(name) {
            specs.push(name.clone());
        }
    }
    if specs.is_empty() {
        return "No threshold specs configured or fitted yet.\n".into();
    }
    let mut out = String::new();
    for name in specs {
        let configured = config.and_then(|c| c.specs.iter().find(|s| s.name == name));
        let _ = write!(out, "spec {name}");
        match configured {
            Some(s) => {
                let _ = writeln!(
                    out,
                    " (alert {}, {}, coverage {}, refit every {}):",
                    s.alert,
                    s.direction.as_str(),
                    s.coverage,
                    s.refit_interval
                );
            }
            None => out.push_str(" (no longer configured):\n"),
        }
        match state.updates.iter().find(|u| u.spec == name) {
            None => out.push_str("  rules: not written yet\n"),
            Some(u) if u.ok => {
                let _ = writeln!(out, "  rules: updated {} ({})", u.at.to_rfc3339(), u.detail);
            }
            Some(u) => {
                let last_good = u.last_good_at.map_or("never".to_owned(), |t| t.to_rfc3339());
                let _ = writeln!(
                    out,
                    "  rules: NOT updated {}: {}\n  previous rules stay active (last good update: {last_good})",
                    u.at.to_rfc3339(),
                    u.detail
                );
            }
        }
        for fit in state.fits.iter().filter(|f| f.spec == name) {
            let f = &fit.fit;
            if f.get("state").and_then(|s| s.as_str()) == Some(INSUFFICIENT_HISTORY) {
                let reason = f["reason"].as_str().unwrap_or("?");
                let fallback: Vec<String> = ["lower", "upper"]
                    .iter()
                    .filter_map(|side| Some(format!("{side} {}", short(f["fallback"].get(side)?.as_f64()?))))
                    .collect();
                let rules = if fallback.is_empty() {
                    "no fallback configured: no rule".to_owned()
                } else {
                    format!("rules use the fallback ({})", fallback.join(", "))
                };
                let _ = writeln!(
                    out,
                    "  {} {INSUFFICIENT_HISTORY} at {}: {reason}; {rules}",
                    fit.series,
                    fit.fitted_at.to_rfc3339()
                );
                continue;
            }
            if let Some(reason) = f.get("reason").and_then(|r| r.as_str()) {
                let _ = writeln!(
                    out,
                    "  {} skipped at {}: {reason}",
                    fit.series,
                    fit.fitted_at.to_rfc3339()
                );
                continue;
            }
            let number = |key: &str| f[key].as_f64().map_or_else(|| "?".to_owned(), short);
            let _ = writeln!(
                out,
                "  {} [{}, {}] forecast {} — {} on {} points, coverage {}, fitted {}",
                fit.series,
                number("lower"),
                number("upper"),
                number("point"),
                f["model"].as_str().unwrap_or("?"),
                f["points"],
                f["coverage"],
                fit.fitted_at.to_rfc3339()
            );
            for step in state
                .feedback
                .iter()
                .filter(|s| s.spec == name && s.series == fit.series)
            {
                let _ = writeln!(
                    out,
                    "    {} {}: {} → {} ({}, incident {}): {}",
                    step.at.to_rfc3339(),
                    step.adjust,
                    step.coverage_before,
                    step.coverage_after,
                    step.reason,
                    step.incident_id,
                    step.detail
                );
            }
        }
    }
    out
}

// What the journal keeps of adaptive thresholds (`homeostat thresholds show`).

/// One feedback step as recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedbackStep {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub spec: String,
    pub series: String,
    pub reason: String,
    pub adjust: String,
    pub incident_id: i64,
    pub coverage_before: f64,
    pub coverage_after: f64,
    pub detail: String,
}

/// How one spec's latest rule update went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpecUpdate {
    pub spec: String,
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub detail: String,
    pub last_good_at: Option<DateTime<Utc>>,
}

/// A series' latest fit as recorded: fitted, or skipped and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedFit {
    pub spec: String,
    pub series: String,
    pub fitted_at: DateTime<Utc>,
    pub fit: serde_json::Value,
}

/// Everything `homeostat thresholds show` prints.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ThresholdState {
    pub updates: Vec<SpecUpdate>,
    pub fits: Vec<RecordedFit>,
    /// The latest steps, newest first.
    pub feedback: Vec<FeedbackStep>,
}

#[cfg(test)]
mod tests;
