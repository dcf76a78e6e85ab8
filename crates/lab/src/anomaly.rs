//! Streaming anomaly scores from seasonal forecasts, sequence novelty, new
//! extremes and adaptive resonance.
//!
//! For each new point, a score in [0, 1] that uses only that point and the
//! ones before it:
//!
//! 1. **Forecast band.** Every `refit` (6 hours by default) the model of
//!    [`homeostat_core::forecast`] is fitted to the history so far (up to
//!    `history`) and forecasts the points until the next refit, with a band.
//!    Before the first fit there is no score (0).
//!    The point forecast is the model's, seasonal naive's (the value a
//!    day before) or their mean: whichever had the least absolute error
//!    over the previous refit period (the weights of [`forecast::forecast`],
//!    chosen on errors already seen; the model's on a tie, so until a
//!    period after two days are known, and wherever the value a day
//!    before is missing). A model smooths a sharp step of its daily cycle
//!    into a ramp; seasonal naive does not. The level correction (step 2)
//!    applies to the blend.
//! 2. **Surprise.** How far the point falls from the forecast, in band
//!    half-widths, after correcting the forecast by a slow running mean of
//!    recent errors (so a level the model missed is not a surprise for a
//!    whole refit period).
//! 3. **Likelihood.** The surprise of the last few points (by default the
//!    last one) is compared with the distribution of surprises over a long
//!    window: the Gaussian tail probability of the short mean, scored by
//!    [`likelihood_score`] (0.5 for one in 100,000).
//! 4. **One detection per anomaly.** A likelihood scores only when it is a
//!    new peak over the last `peak_window` points; every other point scores
//!    0, so a long anomaly raises one alarm, not hundreds.
//! 5. **Sequence novelty.** A memory of the sequences of values seen so far
//!    ([`sequence`]) scores how new the latest steps are; it catches what a
//!    band cannot (a rhythm that breaks while staying in range, a change of
//!    shape) and learns from the first point (its first `rest` points
//!    score 0).
//! 6. **New extremes.** Once the values seen so far differ, a value beyond
//!    all of them by more than `extreme_tolerance` of their range scores 1
//!    (the spatial rule of Numenta's HTM detector on NAB, with its
//!    tolerance of 5%): whatever the models learned, a level never seen is
//!    worth a look. For the memory's `rest` finite points after such an
//!    alarm, new extremes do not score (HTM's rule has no rest), so a
//!    lasting climb alarms at most once in `rest + 1` points.
//! 7. **Adaptive resonance.** Fuzzy ART categories of short shapes of the
//!    series ([`art`], after Mark Hampton's ARTime) score a shape unlike
//!    every one learned, once per anomaly, on a range that grows with the
//!    values.
//!
//! The point's score is the highest of the rules that score ([`Rule`]):
//! by default new extremes and adaptive resonance ([`Rule::DEFAULT`]), the
//! best combination measured on NAB; the band and the memory score when
//! asked (`homeostat eval nab --rules`), which also measures what each adds.
//! When new extremes and adaptive resonance both score, they are the
//! detector `homeostat serve` runs ([`StreamScorer`]), calibrated against
//! the series' own past alarms when `prior_alarms` is above 0
//! ([`homeostat_core::detect::calibrated`]; off by default) before the
//! band's and the memory's join it; either alone scores uncalibrated.
//! The band is computed only when it scores: its forecasts are what
//! adaptive thresholds use, measured by `homeostat eval forecast`.
//!
//! One configuration for every series: nothing is tuned per series.

use std::collections::VecDeque;
use std::time::Duration;

use homeostat_core::detect::{DetectConfig, Extremes, StreamScorer};
use homeostat_core::forecast::{self, Band};

pub use homeostat_core::detect::art;
pub mod sequence;

use art::{ArtConfig, ArtScorer};
use sequence::{SequenceConfig, SequenceMemory};

/// One of the scorer's rules (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// The forecast band's likelihood (steps 1 to 4).
    Band,
    /// The memory of sequences (step 5).
    Memory,
    /// New extremes (step 6).
    Extremes,
    /// Adaptive resonance over short shapes (step 7).
    Art,
}

impl Rule {
    pub const ALL: [Rule; 4] = [Rule::Band, Rule::Memory, Rule::Extremes, Rule::Art];
    /// What `homeostat eval nab` scores with unless told otherwise: the
    /// best measured on NAB (docs/BENCHMARKS.md, ninth round).
    pub const DEFAULT: [Rule; 2] = [Rule::Extremes, Rule::Art];
}

/// The scorer's settings; [`Default`] is what `homeostat eval nab` uses,
/// but for ART's learning period, which it sets per file (`--learning`).
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerConfig {
    /// Coverage of the forecast band.
    pub coverage: f64,
    /// How often the model is refitted.
    pub refit: Duration,
    /// The most history a fit sees.
    pub history: Duration,
    /// The least history before the first fit, in points.
    pub min_points: usize,
    /// Weight of the newest error in the running level correction.
    pub level_alpha: f64,
    /// Points in the long window of surprises, and in the short one.
    pub long_window: usize,
    pub short_window: usize,
    /// A likelihood scores only when it is higher than at any of this many
    /// points before it (otherwise 0): one anomaly, one detection.
    pub peak_window: usize,
    /// The memory of value sequences whose novelty also scores.
    pub sequence: SequenceConfig,
    /// A value beyond the range of all values before it (once they differ)
    /// by more than this share of that range scores 1, and the next
    /// `sequence.rest` finite points raise no such alarm; NaN or negative:
    /// no such rule.
    pub extreme_tolerance: f64,
    /// Adaptive resonance over short shapes.
    pub art: ArtConfig,
    /// With both new extremes and adaptive resonance: the weight of an
    /// alarm's own score in its calibration ([`DetectConfig::prior_alarms`]).
    pub prior_alarms: f64,
    /// With calibration: the most past alarms calibrated against
    /// ([`DetectConfig::alarm_history`]).
    pub alarm_history: usize,
    /// The rules that score; a point's score is the highest of theirs, and
    /// 0 with none.
    pub rules: Vec<Rule>,
}

impl ScorerConfig {
    /// Whether alarms are calibrated: new extremes and ART both score, with a
    /// prior above 0 (see [`score_series`]).
    pub fn calibrated(&self) -> bool {
        self.rules.contains(&Rule::Extremes) && self.rules.contains(&Rule::Art) && self.prior_alarms > 0.0
    }
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            coverage: 0.95,
            refit: Duration::from_secs(6 * 3600),
            history: Duration::from_secs(15 * 86_400),
            min_points: 150,
            level_alpha: 0.05,
            long_window: 2880,
            short_window: 1,
            peak_window: 500,
            sequence: SequenceConfig::default(),
            extreme_tolerance: 0.05,
            art: ArtConfig::default(),
            prior_alarms: DetectConfig::default().prior_alarms,
            alarm_history: DetectConfig::default().alarm_history,
            rules: Rule::DEFAULT.to_vec(),
        }
    }
}

/// Per point: the score, and the (level-corrected) forecast and band it was
/// scored against (NaN before the first fit).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scored {
    pub score: Vec<f64>,
    pub point: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

/// Scores every point of `values`, sampled every `step`, as a stream would.
pub fn score_series(values: &[f64], step: Duration, config: &ScorerConfig) -> Scored {
    let n = values.len();
    let step_seconds = step.as_secs_f64().max(f64::MIN_POSITIVE);
    let refit = ((config.refit.as_secs_f64() / step_seconds).round() as usize).max(12);
    let history = ((config.history.as_secs_f64() / step_seconds).round() as usize).max(config.min_points);
    let mut out = Scored {
        score: vec![0.0; n],
        point: vec![f64::NAN; n],
        lower: vec![f64::NAN; n],
        upper: vec![f64::NAN; n],
    };
    let mut band: Option<(usize, Band)> = None;
    let mut level = 0.0;
    let mut surprises = Surprises::new(config.long_window, config.short_window);
    let mut recent: VecDeque<f64> = VecDeque::with_capacity(config.peak_window + 1);
    let mut blend = NaiveBlend::default();
    let uses = |rule| config.rules.contains(&rule);
    let first = if uses(Rule::Band) {
        config.min_points.max(forecast::MIN_MODEL_POINTS)
    } else {
        n
    };
    for t in first..n {
        let stale = band.as_ref().is_none_or(|(from, b)| t - from >= b.point.len());
        if stale {
            let past = &values[t.saturating_sub(history)..t];
            band = forecast::model_band(
                &forecast::fill_gaps(past).unwrap_or_default(),
                step,
                refit,
                config.coverage,
            )
            .map(|b| (t, b));
            // The new fit has seen the errors the correction made up for.
            level = 0.0;
            // A failed fit keeps the weight until one succeeds.
            if band.is_some() {
                blend.refit(forecast::shortest_season(step, past.len()));
            }
        }
        let Some((from, b)) = &band else { continue };
        let i = t - from;
        let point = blend.point(values, t, b.point[i]) + level;
        let half = (b.upper[i] - b.lower[i]) / 2.0;
        out.point[t] = point;
        out.lower[t] = point - half;
        out.upper[t] = point + half;
        let value = values[t];
        if !value.is_finite() {
            continue;
        }
        let error = value - point;
        // A perfect fit has no band: a thousandth of the level is as close as matters.
        let floor = 1e-3 * (point.abs() + 1.0);
        let likelihood = surprises.push(error.abs() / half.max(floor));
        // One anomaly, one detection: only a new peak of the likelihood
        // over the last `peak_window` points scores.
        let before = recent.iter().copied().fold(0.0, f64::max);
        out.score[t] = if likelihood > before { likelihood } else { 0.0 };
        recent.push_back(likelihood);
        if recent.len() > config.peak_window {
            recent.pop_front();
        }
        level += config.level_alpha * error;
    }
    // The sequence memory sees every point, from the first.
    let mut memory = uses(Rule::Memory).then(|| SequenceMemory::new(config.sequence.clone()));
    // Both: the detector `serve` runs, calibrated; either alone: uncalibrated.
    let both = uses(Rule::Extremes) && uses(Rule::Art);
    let mut detector = both.then(|| {
        StreamScorer::new(&DetectConfig {
            extreme_tolerance: config.extreme_tolerance,
            extreme_rest: config.sequence.rest,
            art: config.art.clone(),
            prior_alarms: config.prior_alarms,
            alarm_history: config.alarm_history,
        })
    });
    let mut extremes =
        (uses(Rule::Extremes) && !both).then(|| Extremes::new(config.extreme_tolerance, config.sequence.rest));
    let mut art = (uses(Rule::Art) && !both).then(|| ArtScorer::new(config.art.clone()));
    if memory.is_some() || detector.is_some() || extremes.is_some() || art.is_some() {
        for (score, &value) in out.score.iter_mut().zip(values) {
            let novelty = memory.as_mut().map_or(0.0, |m| m.push(value));
            let detected = detector.as_mut().map_or(0.0, |d| d.push(value));
            let extreme = extremes.as_mut().map_or(0.0, |e| e.push(value));
            let shape = art.as_mut().map_or(0.0, |a| a.push(value));
            *score = score.max(novelty).max(detected).max(extreme).max(shape);
        }
    }
    out
}

/// The blend of the model's point forecast with seasonal naive, and the
/// absolute errors of each weight of [`forecast::NAIVE_WEIGHTS`] since the
/// last refit.
#[derive(Default)]
struct NaiveBlend {
    /// The shortest season in points (a day, when the step divides it),
    /// once two of it are known.
    season: Option<usize>,
    weight: f64,
    errors: [f64; forecast::NAIVE_WEIGHTS.len()],
}

impl NaiveBlend {
    /// At a refit: the weight with the least error since the previous one
    /// (the model's on a tie), and the season for the coming period.
    fn refit(&mut self, season: Option<usize>) {
        // The first of equal minima: the model's on a tie.
        let best = (0..self.errors.len())
            .min_by(|a, b| self.errors[*a].total_cmp(&self.errors[*b]))
            .unwrap_or(0);
        self.weight = forecast::NAIVE_WEIGHTS[best];
        self.errors = [0.0; forecast::NAIVE_WEIGHTS.len()];
        self.season = season;
    }

    /// The point forecast for `values[t]` from the model's `model`, using
    /// only values before `t`; the errors of every weight take `values[t]` in.
    fn point(&mut self, values: &[f64], t: usize, model: f64) -> f64 {
        let naive = self.season.filter(|s| *s <= t).map_or(f64::NAN, |s| values[t - s]);
        if !naive.is_finite() {
            return model;
        }
        if values[t].is_finite() {
            for (error, w) in self.errors.iter_mut().zip(forecast::NAIVE_WEIGHTS) {
                *error += (values[t] - forecast::naive_blend(model, naive, w)).abs();
            }
        }
        forecast::naive_blend(model, naive, self.weight)
    }
}

/// The score of a tail probability: `u/(u + 5)` with `u = −log10(tail)`, so
/// 0.5 is a one-in-100,000 event, 0.75 one in 10^15. It rises without ever
/// reaching 1, so that rarer still scores higher (no plateau at a cap for
/// [`score_series`]' new-peak rule to get stuck on).
pub fn likelihood_score(tail: f64) -> f64 {
    let surprise = -tail.max(1e-300).log10();
    let surprise = surprise.max(0.0);
    surprise / (surprise + 5.0)
}

/// Surprises seen before the first likelihood: enough for a mean and a
/// spread, few enough not to miss an anomaly early in a short series.
const MIN_SURPRISES: usize = 30;

/// The long and short windows of surprises, and the likelihood score.
struct Surprises {
    long: VecDeque<f64>,
    long_size: usize,
    short_size: usize,
    sum: f64,
    sum_squares: f64,
}

impl Surprises {
    fn new(long_size: usize, short_size: usize) -> Surprises {
        Surprises {
            long: VecDeque::with_capacity(long_size + 1),
            long_size,
            short_size: short_size.max(1),
            sum: 0.0,
            sum_squares: 0.0,
        }
    }

    /// Adds a surprise and scores the latest short window against the long one.
    fn push(&mut self, surprise: f64) -> f64 {
        // Capped: one absurd point must not blind the window for long.
        let surprise = surprise.min(1e6);
        self.long.push_back(surprise);
        self.sum += surprise;
        self.sum_squares += surprise * surprise;
        if self.long.len() > self.long_size {
            let old = self.long.pop_front().unwrap_or_default();
            self.sum -= old;
            self.sum_squares -= old * old;
        }
        let count = self.long.len();
        if count < self.long_size.min(MIN_SURPRISES) {
            return 0.0;
        }
        let mean = self.sum / count as f64;
        // Surprises are in band half-widths: a tenth of one is no spread at all.
        let sd = (self.sum_squares / count as f64 - mean * mean).max(0.0).sqrt().max(0.1);
        let short = self.long.iter().rev().take(self.short_size).sum::<f64>() / self.short_size.min(count) as f64;
        // Not divided by √short: neighbouring surprises are correlated.
        let z = (short - mean) / sd;
        likelihood_score(forecast::normal_tail(z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(i: usize) -> f64 {
        let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 33;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    /// Points in a day at 5 minutes.
    const DAY: usize = 288;

    /// `days` of a noisy daily cycle at 5 minutes.
    fn daily_cycle(days: usize) -> Vec<f64> {
        (0..days * DAY)
            .map(|i| 50.0 + 20.0 * (2.0 * std::f64::consts::PI * i as f64 / DAY as f64).sin() + 2.0 * noise(i))
            .collect()
    }

    /// Three weeks of a daily cycle at 5 minutes with a spike and a level
    /// shift: both score far above anything in the normal stretches, by
    /// default and with the band, the memory and new extremes.
    #[test]
    fn spikes_and_shifts_score_high_and_normal_points_low() {
        let day = DAY;
        let (values, spike, shift) = spike_and_shift();
        // The least score of the shift, by rules (and calibration), the
        // least of the spike, and how far below the shift every normal point
        // scores. ART's 0.42 comes 4 points in; calibrated, it scores low
        // (0.12): the stream's past alarms (new extremes as the first values
        // set the range, and the spike) all scored 1, and the spike itself
        // scores at least 0.75 against those of the first values.
        for (rules, prior_alarms, least, spike_least, margin) in [
            (&Rule::DEFAULT[..], 0.0, 0.3, 1.0, 0.2),
            (&Rule::DEFAULT[..], 2.0, 0.1, 0.75, 0.1),
            (&[Rule::Band, Rule::Memory, Rule::Extremes], 0.0, 0.5, 1.0, 0.2),
        ] {
            // Daily refits: fewer fits, the same mechanics.
            let config = ScorerConfig {
                refit: Duration::from_secs(86_400),
                rules: rules.to_vec(),
                prior_alarms,
                ..ScorerConfig::default()
            };
            let scored = score_series(&values, Duration::from_secs(300), &config);
            assert_eq!(scored.score.len(), values.len());
            assert!(scored.score.iter().all(|s| (0.0..=1.0).contains(s)));
            let normal_max = scored.score[3 * day..spike - 10].iter().cloned().fold(0.0, f64::max);
            let at_shift = scored.score[shift..shift + 5].iter().cloned().fold(0.0, f64::max);
            assert!(
                scored.score[spike] >= spike_least,
                "{rules:?}: spike {}",
                scored.score[spike]
            );
            assert!(at_shift > least, "{rules:?}: shift {at_shift}");
            assert!(normal_max < at_shift - margin, "{rules:?}: normal up to {normal_max}");
        }
    }

    /// Three weeks of a daily cycle at 5 minutes, a spike on day 10 and a
    /// level shift from day 16: the values, the spike's row and the shift's.
    fn spike_and_shift() -> (Vec<f64>, usize, usize) {
        let mut values = daily_cycle(21);
        let (spike, shift) = (10 * DAY + 100, 16 * DAY);
        values[spike] += 60.0;
        for v in &mut values[shift..] {
            *v += 25.0;
        }
        (values, spike, shift)
    }

    /// Calibrated against its last past alarm only (`alarm_history` 1), the
    /// shift scores higher than against all of them, which all scored 1:
    /// (2 · 0.42)/(1 + 2) = 0.28 against about 0.12.
    #[test]
    fn calibration_counts_only_the_latest_alarms_kept() {
        let (values, _, shift) = spike_and_shift();
        let at_shift = |alarm_history| {
            let config = ScorerConfig {
                refit: Duration::from_secs(86_400),
                prior_alarms: 2.0,
                alarm_history,
                ..ScorerConfig::default()
            };
            assert!(config.calibrated());
            let scored = score_series(&values, Duration::from_secs(300), &config);
            scored.score[shift..shift + 5].iter().cloned().fold(0.0, f64::max)
        };
        let (all, last) = (at_shift(10_000), at_shift(1));
        assert!(all < 0.2 && last > 0.25 && last < 0.3, "all {all}, last {last}");
        assert!(!ScorerConfig::default().calibrated());
    }

    /// Each rule alone scores what it adds: the score of all of them is the
    /// highest of the band's, the memory's and the pair of new extremes and
    /// adaptive resonance (the detector `serve` runs), point by
    /// point, and none fits a band unless the band is among them.
    #[test]
    fn the_score_of_all_rules_is_the_highest_of_each_alone() {
        let mut values = daily_cycle(4);
        values[3 * DAY + 7] += 60.0;
        values[3 * DAY + 150] -= 15.0;
        let config = ScorerConfig {
            refit: Duration::from_secs(86_400),
            ..ScorerConfig::default()
        };
        let only = |rules: &[Rule]| {
            let config = ScorerConfig {
                rules: rules.to_vec(),
                ..config.clone()
            };
            score_series(&values, Duration::from_secs(300), &config)
        };
        let all = only(&Rule::ALL);
        let parts: [&[Rule]; 3] = [&[Rule::Band], &[Rule::Memory], &Rule::DEFAULT];
        let alone: Vec<Scored> = parts.iter().map(|rules| only(rules)).collect();
        for t in 0..values.len() {
            let highest = alone.iter().map(|s| s.score[t]).fold(0.0, f64::max);
            assert_eq!(all.score[t], highest, "row {t}");
        }
        // Every part scores somewhere on its own, so none is idle here, and
        // none alone scores as all do.
        for (rules, scored) in parts.iter().zip(&alone) {
            assert!(scored.score != all.score);
            assert!(scored.score.iter().any(|s| *s > 0.0), "{rules:?} never scored");
        }
        // New extremes and ART each score alone; the pair alarms where either does.
        let (extremes, art) = (only(&[Rule::Extremes]), only(&[Rule::Art]));
        assert!(extremes.score.iter().any(|s| *s > 0.0) && art.score.iter().any(|s| *s > 0.0));
        for t in 0..values.len() {
            let pair = alone[2].score[t];
            assert_eq!(pair > 0.0, extremes.score[t].max(art.score[t]) > 0.0, "row {t}");
        }
        // The band's forecasts are the same with or without the other rules.
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&alone[0].point) == bits(&all.point));
        for scored in &alone[1..] {
            assert!(scored.point.iter().all(|p| p.is_nan()));
        }
        assert!(only(&[]).score.iter().all(|s| *s == 0.0));
    }

    /// Early in a series only the new-extremes rule can score (no band is
    /// fitted yet, the memory rests and ART is still learning), so its alarm
    /// and rest show through.
    #[test]
    fn score_series_takes_new_extremes_in() {
        let mut values: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        values.extend([100.0, 200.0]);
        let scored = score_series(&values, Duration::from_secs(60), &all_rules());
        assert_eq!(scored.score[20], 1.0);
        // Within the rest: a higher extreme does not alarm again.
        assert_eq!(scored.score[21], 0.0);
        assert!(scored.score[..20].iter().all(|s| *s == 0.0), "{:?}", scored.score);
    }

    #[test]
    fn likelihood_scores_are_graded_without_a_cap() {
        assert!((likelihood_score(1e-5) - 0.5).abs() < 1e-12);
        assert_eq!(likelihood_score(1.0), 0.0);
        assert!(likelihood_score(1e-10) > likelihood_score(1e-6));
        assert!(likelihood_score(1e-300) < 1.0 && likelihood_score(0.0) < 1.0);
    }

    /// A daily square wave, sampled every 5 minutes: the model smooths its
    /// steps into ramps, seasonal naive has them exact, so once two days
    /// are known and a refit period has chosen naive, the forecast is the
    /// value itself. (Scores are not asserted: they stay below 0.5 either
    /// way, the band's once its long window has seen the ramps' errors.)
    #[test]
    fn steps_of_the_daily_cycle_are_forecast_by_seasonal_naive() {
        let values: Vec<f64> = (0..6 * 288).map(|i| if i % 288 < 108 { 20.0 } else { 68.0 }).collect();
        let config = ScorerConfig {
            rules: vec![Rule::Band],
            ..ScorerConfig::default()
        };
        let scored = score_series(&values, Duration::from_secs(300), &config);
        let settled = 2 * 288 + 2 * 72;
        for (t, value) in values.iter().enumerate().skip(settled) {
            assert!(
                (scored.point[t] - value).abs() < 1e-9,
                "row {t}: {} for {value}",
                scored.point[t]
            );
        }
    }

    /// A level shift that lasts a day raises an alarm at once, and at most
    /// three in all (it ends, too), not one per point: by default at the
    /// fixed threshold, and with the band and the memory at the memory's
    /// alarm level.
    #[test]
    fn a_lasting_shift_raises_few_alarms() {
        let day = DAY;
        let mut values = daily_cycle(6);
        let shift = 4 * day;
        for v in &mut values[shift..shift + day] {
            *v += 40.0;
        }
        let alarm = ScorerConfig::default().sequence.alarm;
        for (rules, alarm) in [
            (&Rule::DEFAULT[..], crate::eval::FIXED_THRESHOLD),
            (&[Rule::Band, Rule::Memory, Rule::Extremes], alarm),
        ] {
            let config = ScorerConfig {
                rules: rules.to_vec(),
                ..ScorerConfig::default()
            };
            let scored = score_series(&values, Duration::from_secs(300), &config);
            let alarms = scored.score[shift..].iter().filter(|s| **s >= alarm).count();
            let first = scored.score[shift..].iter().position(|s| *s >= alarm);
            assert!(first.is_some_and(|row| row < 5), "{rules:?}: first alarm at {first:?}");
            assert!(alarms <= 3, "{rules:?}: {alarms} alarms");
        }
    }

    /// Every rule on.
    fn all_rules() -> ScorerConfig {
        ScorerConfig {
            rules: Rule::ALL.to_vec(),
            ..ScorerConfig::default()
        }
    }

    /// Row t's score depends on nothing after t, whichever rule scores it.
    #[test]
    fn scores_never_look_ahead() {
        let values: Vec<f64> = (0..2000).map(|i| 10.0 + noise(i) + (i as f64 / 100.0).sin()).collect();
        let config = all_rules();
        let full = score_series(&values, Duration::from_secs(300), &config);
        let cut = 1500;
        let mut changed = values.clone();
        for v in &mut changed[cut..] {
            *v = 1e6;
        }
        let partial = score_series(&changed, Duration::from_secs(300), &config);
        assert_eq!(full.score[..cut], partial.score[..cut]);
        // The forecasts too (bit for bit: NaN before the first fit).
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&full.point[..cut]), bits(&partial.point[..cut]));
    }

    #[test]
    fn short_constant_and_broken_series_score_without_panicking() {
        let config = all_rules();
        assert!(score_series(&[], Duration::from_secs(60), &config).score.is_empty());
        let constant = score_series(&[3.0; 800], Duration::from_secs(60), &config);
        assert!(constant.score.iter().all(|s| (0.0..=1.0).contains(s)));
        let mut broken: Vec<f64> = (0..800).map(|i| (i % 7) as f64).collect();
        broken[400] = f64::NAN;
        broken[401] = f64::INFINITY;
        let scored = score_series(&broken, Duration::from_secs(60), &config);
        assert!(scored.score.iter().all(|s| s.is_finite()));
    }
}
