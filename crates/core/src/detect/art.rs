//! Adaptive resonance over short shapes: is the latest stretch of the
//! series like any seen before?
//!
//! The method is Mark Hampton's ARTime (the best published detector on
//! NAB), built on Carpenter and Grossberg's fuzzy ART with distributed
//! vigilance. This is an independent implementation of it, with one change:
//! the published detector is given the minimum and maximum of the whole
//! series in advance, which a stream cannot know. Here the range is the one
//! seen so far, widened by `range_margin` of its width on the side a new
//! value broke through, and whenever it grows the detector is rebuilt by
//! replaying the history with the new range (the replay's scores are
//! discarded, so a score still uses only the points up to its own).
//!
//! - **Time scale.** Everything is measured in *steps* of
//!   `learning / (window · windows_per_learning)` points (at least 1), so a
//!   detector that learns for longer also looks at coarser shapes. Each
//!   step keeps one value: its most extreme point (a spike above or below
//!   a slow average of step means), or the step's mean when that point is
//!   within 10% of it.
//! - **Levels.** The value is placed on `levels` levels of the range, and
//!   one within `snap` of a running median level is taken as the median, so
//!   small wobbles around the usual level are no shape at all.
//! - **Patterns.** The last `window` step values, and the Haar wavelet
//!   transform of their shape (scaled to 0..1), make one pattern.
//! - **Categories.** Fuzzy ART (complement coded, learning by fast commit)
//!   sorts patterns into categories. A pattern resonates with a category
//!   whose match reaches the upper vigilance (and refines it), founds a new
//!   category of a known cluster above the lower vigilance, and is a
//!   mismatch below it: a shape never seen.
//! - **Vigilance.** Set at the end of the learning period from how alike
//!   its patterns are, then moved from the matches seen: the upper bound
//!   follows their mean, the lower bound rises towards quiet stretches and
//!   falls after strings of poor matches, never below the mean match of
//!   past anomalies.
//! - **Score.** A mismatch after the learning period scores how far below
//!   both vigilances it fell and how poorly its level matched (0 to 1);
//!   every other point scores 0. For `1.5 · window` steps after an
//!   anomaly, and until a run of resonances ends a stretch of new
//!   categories, a mismatch scores only if it matches worse than the last
//!   anomaly did: one anomaly, one alarm.
//!
//! Smaller differences from ARTime: scores are not rounded to 6 digits; a
//! category whose level weights are both 0 matches any level fully (ARTime
//! divides 0 by 0); and floors keep odd settings working (a window of at
//! least 2, rounded up to a power of 2; at least `2 · window` steps of
//! learning; at least 1 level), none of which binds on NAB. Non-finite
//! values are skipped.
//!
//! **The range only grows.** One wild value squeezes every later shape into
//! a few levels, and the rule sees almost nothing from then on: the range is
//! never narrowed. (In a daily cycle between 30 and 70, a flat half day
//! scores 0.67; after a single value of 1,000 four days earlier, it scores
//! 0.) ARTime given the file's range has the same weakness; new extremes
//! still alarm.

use std::collections::VecDeque;

/// The detector's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtConfig {
    /// Points to learn from before scoring (the first score comes at the
    /// end of the first step after them, and after at least `2 · window`
    /// steps); they also set the time scale (see the module
    /// documentation). `homeostat eval nab` uses each file's probationary
    /// period, which NAB gives every detector.
    pub learning: usize,
    /// Steps in a pattern (a power of 2, for the Haar transform).
    pub window: usize,
    /// Patterns' worth of steps in the learning period.
    pub windows_per_learning: usize,
    /// Levels over the range.
    pub levels: usize,
    /// A level closer than this (a share of the range) to the running
    /// median level is taken as the median.
    pub snap: f64,
    /// The vigilance used to measure how alike the learning period's
    /// patterns are.
    pub initial_vigilance: f64,
    /// When a value breaks out of the range, the range grows past it by
    /// this share of its new width, so that a slow climb rebuilds the
    /// detector a few times, not at every point.
    pub range_margin: f64,
    /// The most values kept and replayed when the range grows.
    pub history: usize,
}

impl Default for ArtConfig {
    fn default() -> Self {
        ArtConfig {
            learning: 750,
            window: 8,
            windows_per_learning: 13,
            levels: 80,
            snap: 0.075,
            initial_vigilance: 0.8,
            range_margin: 0.25,
            history: 50_000,
        }
    }
}

/// The detector over a range that grows with the values: scores each new
/// value, rebuilding itself when the range grows.
pub struct ArtScorer {
    config: ArtConfig,
    history: VecDeque<f64>,
    range: Option<(f64, f64)>,
    detector: Option<Detector>,
    rebuilds: usize,
}

impl ArtScorer {
    pub fn new(mut config: ArtConfig) -> ArtScorer {
        // Negative or NaN: no margin.
        if config.range_margin.is_nan() || config.range_margin < 0.0 {
            config.range_margin = 0.0;
        }
        ArtScorer {
            config,
            history: VecDeque::new(),
            range: None,
            detector: None,
            rebuilds: 0,
        }
    }

    /// How often the detector was built (once, plus once per growth of the
    /// range).
    pub fn rebuilds(&self) -> usize {
        self.rebuilds
    }

    /// A scorer that goes on from the range and values another one kept
    /// ([`ArtScorer::state`]): the detector is rebuilt from them at the next
    /// value. Values without a range, or not finite, are dropped.
    pub fn resume(config: ArtConfig, range: Option<(f64, f64)>, history: Vec<f64>) -> ArtScorer {
        let mut scorer = ArtScorer::new(config);
        let valid = range.filter(|(low, high)| low.is_finite() && high.is_finite() && low <= high);
        if valid.is_some() {
            scorer.range = valid;
            let keep = history.len().saturating_sub(scorer.config.history);
            scorer.history = history.into_iter().skip(keep).filter(|v| v.is_finite()).collect();
        }
        scorer
    }

    /// The range and the values a scorer needs to go on ([`ArtScorer::resume`]).
    pub fn state(&self) -> (Option<(f64, f64)>, &VecDeque<f64>) {
        (self.range, &self.history)
    }

    /// Whether the detector is still in its learning period (it scores 0).
    pub fn learning(&self) -> bool {
        match &self.detector {
            Some(detector) => detector.steps <= detector.learning_steps,
            None => self.history.len() < self.config.learning,
        }
    }

    /// The categories the current detector has learned.
    pub fn categories(&self) -> usize {
        self.detector.as_ref().map_or(0, |d| d.art.weights.len())
    }

    /// The score of `value` (0 to 1), given the values before it.
    /// Non-finite values are neither scored nor taken in.
    pub fn push(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let (low, high) = self.range.unwrap_or((value, value));
        if value < low || value > high || self.range.is_none() {
            // Halves: the width of two finite values may not be finite.
            let width = (high.max(value) / 2.0 - low.min(value) / 2.0) * 2.0;
            let margin = self.config.range_margin * width;
            let low = if value < low { value - margin } else { low };
            let high = if value > high { value + margin } else { high };
            self.range = Some((low, high));
            self.detector = None;
        }
        let (low, high) = self.range.unwrap_or((value, value));
        let detector = match &mut self.detector {
            Some(detector) => detector,
            empty => {
                self.rebuilds += 1;
                let mut detector = Detector::new(&self.config, low, high);
                for &past in &self.history {
                    detector.push(past);
                }
                empty.insert(detector)
            }
        };
        let score = detector.push(value);
        self.history.push_back(value);
        if self.history.len() > self.config.history {
            self.history.pop_front();
        }
        score
    }
}

const EMPTY_BLOCK: (usize, f64, f64, f64) = (0, 0.0, f64::INFINITY, f64::NEG_INFINITY);

/// ARTime over a fixed range.
struct Detector {
    low: f64,
    high: f64,
    levels: usize,
    snap: f64,
    window: usize,
    initial_vigilance: f64,
    /// Points per step, steps in the learning period, and steps an
    /// anomaly masks.
    step: usize,
    learning_steps: usize,
    mask: usize,
    /// The current step's points so far: count, sum, lowest and highest.
    block: (usize, f64, f64, f64),
    /// The slow average of step means.
    average: Option<f64>,
    median: Median,
    /// The last `window` step values.
    recent: VecDeque<f64>,
    steps: usize,
    learned: Vec<Vec<f64>>,
    art: Art,
    last_anomaly: usize,
    last_anomaly_match: f64,
    last_vigilance_update: usize,
    mask_after_category: bool,
    resonances_in_a_row: usize,
    anomaly_matches: Vec<f64>,
    matches: VecDeque<f64>,
    shortfalls: VecDeque<f64>,
    match_sum: f64,
    match_count: usize,
}

impl Detector {
    fn new(config: &ArtConfig, low: f64, high: f64) -> Detector {
        let window = config.window.max(2).next_power_of_two();
        let learning = config.learning - config.learning % 2;
        let step = (learning / (window * config.windows_per_learning.max(1))).max(1);
        // Enough steps for a pattern and for the vigilance measured on half of them.
        let learning_steps = (learning / step).max(2 * window);
        Detector {
            low,
            high,
            levels: config.levels.max(1),
            snap: config.snap,
            window,
            initial_vigilance: config.initial_vigilance,
            step,
            learning_steps,
            mask: window * 3 / 2,
            block: EMPTY_BLOCK,
            average: None,
            median: Median::new(config.levels.max(1)),
            recent: std::iter::repeat_n(0.0, window).collect(),
            steps: 0,
            learned: Vec::new(),
            art: Art::new(2 * window),
            last_anomaly: 0,
            last_anomaly_match: 0.0,
            last_vigilance_update: 0,
            mask_after_category: false,
            resonances_in_a_row: 0,
            anomaly_matches: Vec::new(),
            matches: std::iter::repeat_n(1.0, learning_steps / 2 + 1).collect(),
            shortfalls: std::iter::repeat_n(0.0, learning_steps + 1).collect(),
            match_sum: 0.0,
            match_count: 0,
        }
    }

    fn push(&mut self, value: f64) -> f64 {
        let (count, sum, min, max) = self.block;
        self.block = (count + 1, sum + value, min.min(value), max.max(value));
        if count + 1 < self.step {
            return 0.0;
        }
        let level = self.step_value();
        self.block = EMPTY_BLOCK;
        self.steps += 1;
        let pattern = self.pattern(level);
        if self.steps > self.learning_steps {
            return self.detect(&pattern, self.steps);
        }
        self.learned.push(pattern);
        if self.steps == self.learning_steps {
            let learned = std::mem::take(&mut self.learned);
            let vigilance = self.initial_vigilance(&learned[self.window - 1..]);
            self.art.lower = vigilance;
            self.art.upper = vigilance;
            for (i, pattern) in learned.iter().enumerate() {
                self.detect(pattern, i + 1);
            }
        }
        0.0
    }

    /// The step's value, on the range's levels (0 to 1).
    fn step_value(&mut self) -> f64 {
        let (count, sum, min, max) = self.block;
        let mean = sum / count as f64;
        let average = (self.average.unwrap_or(mean) + mean) / 2.0;
        self.average = Some(average);
        let mut value = if (max - average).abs() < (min - average).abs() {
            min
        } else {
            max
        };
        if (value - mean).abs() < 0.1 * mean {
            value = mean;
        }
        let width = self.high - self.low;
        let unit = if width > 0.0 {
            (value - self.low) / width
        } else {
            value - self.low
        };
        let levels = self.levels as f64;
        // NaN (from an infinite width) becomes level 0.
        let level = (unit * levels).round_ties_even().clamp(0.0, levels) as usize;
        let median = self.median.push(level) as f64 / levels;
        let unit = level as f64 / levels;
        if (unit - median).abs() < self.snap {
            median
        } else {
            unit
        }
    }

    /// The Haar transform of the last `window` step values' shape, then the
    /// values themselves; all zero until `window` steps are known.
    fn pattern(&mut self, value: f64) -> Vec<f64> {
        self.recent.pop_front();
        self.recent.push_back(value);
        if self.steps < self.window {
            return vec![0.0; 2 * self.window];
        }
        let values: Vec<f64> = self.recent.iter().copied().collect();
        let mut pattern = unit_scaled(&haar(&unit_scaled(&values)));
        pattern.extend(values);
        pattern
    }

    /// The mean match, over the second half of the learning period, of its
    /// patterns taken from the least to the most typical, at the initial
    /// vigilance.
    fn initial_vigilance(&self, patterns: &[Vec<f64>]) -> f64 {
        let n = patterns.len();
        let mut typical = vec![1.0; n];
        for i in 0..n {
            for j in 0..i {
                let s = similarity(&patterns[i], &patterns[j]);
                typical[i] += s;
                typical[j] += s;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| typical[*a].total_cmp(&typical[*b]));
        let mut art = Art::new(2 * self.window);
        art.lower = self.initial_vigilance;
        art.upper = self.initial_vigilance;
        let matches: Vec<f64> = order.iter().map(|i| art.train(&patterns[*i], true).best).collect();
        let tail = &matches[(self.learning_steps / 2).saturating_sub(1).min(n.saturating_sub(1))..];
        tail.iter().sum::<f64>() / tail.len().max(1) as f64
    }

    /// Trains on the pattern of step `i` and scores it.
    fn detect(&mut self, pattern: &[f64], i: usize) -> f64 {
        let since_anomaly = i - self.last_anomaly;
        let update_after_anomaly = since_anomaly == self.mask;
        let update_for_trend = i - self.last_vigilance_update >= self.learning_steps / 2;
        let mask_after_anomaly = since_anomaly <= self.mask;
        if i > self.learning_steps + self.mask && self.mask_after_category && self.resonances_in_a_row >= self.mask {
            self.mask_after_category = false;
        }
        // Before a whole pattern exists, patterns are matched but not learned.
        let learning = i >= self.window;
        let trained = self.art.train(pattern, learning);
        let mismatch = trained.mismatch || !learning;
        self.resonances_in_a_row = if mismatch { 0 } else { self.resonances_in_a_row + 1 };
        let best = trained.best;
        self.match_sum += best;
        self.match_count += 1;
        self.matches.pop_front();
        self.matches.push_back(best);
        self.shortfalls.pop_front();
        self.shortfalls.push_back(self.art.upper - best);
        if since_anomaly < self.mask {
            if let Some(last) = self.anomaly_matches.last_mut() {
                *last = last.min(best);
            }
        }
        let masking = self.mask_after_category || mask_after_anomaly;
        let scale = if mask_after_anomaly { 0.9 } else { 0.7 };
        let worse_than_last = best < self.last_anomaly_match * scale;
        let mut score = 0.0;
        if i > self.learning_steps && mismatch && (!masking || worse_than_last) {
            score = self.confidence(best, trained.energy);
            self.anomaly_matches.push(best);
            self.last_anomaly_match = best;
            self.last_anomaly = i;
        }
        self.mask_after_category |= mismatch;
        if i > self.learning_steps && (update_after_anomaly || update_for_trend) {
            self.update_vigilance(i);
            self.last_vigilance_update = i;
            self.mask_after_category = true;
        }
        score
    }

    fn update_vigilance(&mut self, i: usize) {
        let quietest = self.matches.iter().copied().fold(f64::INFINITY, f64::min);
        let upper = (self.match_sum / self.match_count.max(1) as f64).min(0.97);
        let lower = self.art.lower;
        let lower = if lower <= quietest {
            lower + (quietest - lower) * 0.19
        } else {
            let mut fall: f64 = 0.0;
            if i > 2 * self.learning_steps {
                let below: Vec<f64> = self
                    .shortfalls
                    .iter()
                    .filter(|s| **s > 0.05)
                    .map(|s| s.min(0.37))
                    .collect();
                if !below.is_empty() {
                    fall = below.iter().sum::<f64>() / below.len() as f64;
                }
            }
            let lowered = lower - fall.max(0.01) / 2.0;
            if self.anomaly_matches.is_empty() {
                lowered
            } else {
                let mean = self.anomaly_matches.iter().sum::<f64>() / self.anomaly_matches.len() as f64;
                lowered.max(mean)
            }
        };
        self.art.lower = lower.min(upper);
        self.art.upper = upper;
    }

    /// How far below the vigilances the match fell, and how poorly the
    /// level matched.
    fn confidence(&self, best: f64, energy: f64) -> f64 {
        let best = best.min(0.999);
        let below = |vigilance: f64| ((1.0 - best) - (1.0 - vigilance)) / (1.0 - best);
        let score = below(self.art.upper) * 0.35 + below(self.art.lower) * 0.65 + (1.0 - energy) * 1.5;
        score.clamp(0.0, 1.0)
    }
}

/// `values` shifted and scaled to 0..1 (shifted only, if all are equal).
fn unit_scaled(values: &[f64]) -> Vec<f64> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let shifted: Vec<f64> = values.iter().map(|v| v - min).collect();
    let max = shifted.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        shifted.iter().map(|v| v / max).collect()
    } else {
        shifted
    }
}

/// The full Haar wavelet transform of a power-of-2 length series:
/// the overall average, then the details from the coarsest to the finest
/// (each detail is the later half minus the earlier, over √2).
fn haar(values: &[f64]) -> Vec<f64> {
    let mut averages = values.to_vec();
    let mut details = Vec::with_capacity(values.len());
    while averages.len() > 1 {
        let pairs: Vec<(f64, f64)> = averages.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let level: Vec<f64> = pairs
            .iter()
            .map(|(a, b)| (b - a) * std::f64::consts::FRAC_1_SQRT_2)
            .collect();
        details.splice(0..0, level);
        averages = pairs
            .iter()
            .map(|(a, b)| (a + b) * std::f64::consts::FRAC_1_SQRT_2)
            .collect();
    }
    averages.extend(details);
    averages
}

/// Cosine similarity, and 1 minus the other's norm when one is zero.
fn similarity(a: &[f64], b: &[f64]) -> f64 {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 {
        1.0 - nb
    } else if nb == 0.0 {
        1.0 - na
    } else {
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (na * nb)
    }
}

/// A running median of levels that moves at most one occupied level per
/// value (ARTime's: cheap, and close to the true median once many values
/// are known).
struct Median {
    counts: Vec<usize>,
    level: usize,
    below: usize,
    above: usize,
    seen: usize,
}

impl Median {
    fn new(levels: usize) -> Median {
        Median {
            counts: vec![0; levels + 1],
            level: 0,
            below: 0,
            above: 0,
            seen: 0,
        }
    }

    fn push(&mut self, level: usize) -> usize {
        self.counts[level] += 1;
        self.seen += 1;
        if self.seen == 1 {
            self.level = level;
        }
        if self.level > level {
            self.below += 1;
        } else if self.level < level {
            self.above += 1;
        }
        let half = self.seen / 2;
        let top = self.counts.len() - 1;
        if half < self.above {
            self.below += self.counts[self.level];
            self.level += 1;
            while self.level < top && self.counts[self.level] == 0 {
                self.level += 1;
            }
            self.above = self.above.saturating_sub(self.counts[self.level]);
        } else if half < self.below {
            self.above += self.counts[self.level];
            self.level = self.level.saturating_sub(1);
            while self.level > 0 && self.counts[self.level] == 0 {
                self.level -= 1;
            }
            self.below = self.below.saturating_sub(self.counts[self.level]);
        }
        self.level
    }
}

/// What training on one pattern found: the best match, its level's
/// match, and whether no category resonated (a new cluster).
struct Trained {
    best: f64,
    energy: f64,
    mismatch: bool,
}

/// Fuzzy ART categories with a lower and an upper vigilance.
struct Art {
    /// Pattern length before complement coding.
    dim: usize,
    /// Each category's weights, complement coded (2·dim).
    weights: Vec<Vec<f64>>,
    lower: f64,
    upper: f64,
}

impl Art {
    fn new(dim: usize) -> Art {
        Art {
            dim,
            weights: Vec::new(),
            lower: 0.0,
            upper: 0.0,
        }
    }

    /// Matches `pattern` (0..1 each) against every category and, if
    /// `learning`, learns it: the categories at or above the upper
    /// vigilance take in its overlap with them; otherwise, if the best is
    /// at or above the lower vigilance, the pattern becomes a new category
    /// of that cluster; otherwise a new cluster (a mismatch). The first
    /// pattern ever only founds an all-ones category (matching 0).
    fn train(&mut self, pattern: &[f64], learning: bool) -> Trained {
        let coded: Vec<f64> = pattern.iter().copied().chain(pattern.iter().map(|x| 1.0 - x)).collect();
        if self.weights.is_empty() {
            self.weights.push(vec![1.0; 2 * self.dim]);
            return Trained {
                best: 0.0,
                energy: 0.0,
                mismatch: false,
            };
        }
        let last = self.dim - 1;
        let complement = 2 * self.dim - 1;
        let matched: Vec<(f64, f64)> = self
            .weights
            .iter()
            .map(|w| {
                let overlap = coded.iter().zip(w).map(|(x, w)| x.min(*w)).sum::<f64>();
                let size = w.iter().sum::<f64>();
                let features = overlap / if size == 0.0 { 0.001 } else { size };
                // The level and its complement: how well the pattern's latest value matches.
                let level = w[last] + w[complement];
                let energy = if level == 0.0 {
                    1.0
                } else {
                    (coded[last].min(w[last]) + coded[complement].min(w[complement])) / level
                };
                (features.powi(3) * energy.powi(2), energy)
            })
            .collect();
        let mut order: Vec<usize> = (0..matched.len()).collect();
        order.sort_by(|a, b| matched[*b].0.total_cmp(&matched[*a].0));
        // No match at all is no energy either.
        let (best, energy) = order
            .first()
            .map(|i| (matched[*i].0, matched[*i].1))
            .filter(|(m, _)| *m > 0.0)
            .unwrap_or((0.0, 0.0));
        if !learning {
            return Trained {
                best,
                energy,
                mismatch: true,
            };
        }
        let mut resonated = false;
        for (rank, &i) in order.iter().enumerate() {
            let m = matched[i].0;
            if m >= self.upper {
                // Fast commit: the category shrinks to its overlap with the pattern.
                for (w, x) in self.weights[i].iter_mut().zip(&coded) {
                    *w = w.min(*x);
                }
                resonated = true;
            } else {
                if rank == 0 && m >= self.lower {
                    self.weights.push(coded.clone());
                    resonated = true;
                }
                break;
            }
        }
        if !resonated {
            self.weights.push(coded);
        }
        Trained {
            best,
            energy,
            mismatch: !resonated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haar_averages_then_details_coarsest_first() {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let t = haar(&[1.0, 3.0, 0.0, 0.0]);
        // Level 1: averages (4s, 0), details (2s, 0); level 2: average 4s·s = 2, detail (0 − 4s)·s = −2.
        let expected = [2.0, -2.0, 2.0 * s, 0.0];
        assert_eq!(t.len(), expected.len());
        for (got, want) in t.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{t:?}");
        }
        assert_eq!(haar(&[5.0]), vec![5.0]);
    }

    #[test]
    fn similarity_is_cosine_or_one_minus_the_other_norm() {
        assert!((similarity(&[1.0, 0.0], &[1.0, 1.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(similarity(&[0.0, 0.0], &[0.6, 0.8]), 0.0);
        assert_eq!(similarity(&[0.0], &[0.0]), 1.0);
    }

    #[test]
    fn the_median_moves_one_occupied_level_at_a_time() {
        let mut median = Median::new(10);
        assert_eq!(median.push(5), 5);
        assert_eq!(median.push(9), 5);
        // Two of three above 5: it moves up to the next occupied level.
        assert_eq!(median.push(9), 9);
        assert_eq!(median.push(0), 9);
        assert_eq!(median.push(0), 5);
        assert_eq!(median.push(0), 5);
        assert_eq!(median.push(0), 0);
    }

    /// Hand-computed matches: the first pattern founds the all-ones
    /// category (match 0.5³·0.5² against it), a pattern resonates with
    /// itself, and one far from every category is a mismatch.
    #[test]
    fn art_resonates_refines_and_mismatches() {
        let mut art = Art::new(2);
        art.lower = 0.6;
        art.upper = 0.9;
        assert!(!art.train(&[0.0, 0.0], true).mismatch);
        assert_eq!(art.weights, vec![vec![1.0; 4]]);
        // Against all ones: overlap (1, 0, 0, 1) of size 4 → 0.5; level overlap 0 + 1 of 2 → 0.5.
        let first = art.train(&[1.0, 0.0], true);
        assert!((first.best - 0.5f64.powi(5)).abs() < 1e-12 && first.mismatch);
        assert_eq!(art.weights.len(), 2);
        let again = art.train(&[1.0, 0.0], true);
        assert!(!again.mismatch && (again.best - 1.0).abs() < 1e-12);
        assert_eq!(art.weights.len(), 2);
        // Close: (1, 0.1) against (1, 0, 0, 1): overlap (1, 0, 0, 0.9) → 0.95³·0.9² = 0.6945,
        // above the lower vigilance only: a new category, no mismatch.
        let close = art.train(&[1.0, 0.1], true);
        assert!(!close.mismatch && (close.best - 0.95f64.powi(3) * 0.81).abs() < 1e-12);
        assert_eq!(art.weights.len(), 3);
        // Without learning nothing changes, and the step counts as a mismatch.
        let seen = art.train(&[0.5, 0.5], false);
        assert!(seen.mismatch && art.weights.len() == 3);
    }

    fn noise(i: usize) -> f64 {
        let mut x = (i as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    const DAY: usize = 288;

    /// Twelve days of a noisy daily cycle at 5 minutes, flat at its mean
    /// for half of day 9, rising by half its height from day 11.
    fn broken_rhythm() -> Vec<f64> {
        let mut values: Vec<f64> = (0..12 * DAY)
            .map(|i| 50.0 + 20.0 * (2.0 * std::f64::consts::PI * i as f64 / DAY as f64).sin() + noise(i))
            .collect();
        for v in &mut values[9 * DAY..9 * DAY + DAY / 2] {
            *v = 50.0;
        }
        for v in &mut values[11 * DAY..] {
            *v += 20.0;
        }
        values
    }

    fn scores(values: &[f64]) -> Vec<f64> {
        let mut scorer = ArtScorer::new(ArtConfig::default());
        values.iter().map(|v| scorer.push(*v)).collect()
    }

    /// Once learned, the rhythm raises (almost) no alarm, and a break in it
    /// within its usual range does.
    #[test]
    fn a_broken_rhythm_alarms_and_the_rhythm_does_not() {
        let scores = scores(&broken_rhythm());
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(scores[..750].iter().all(|s| *s == 0.0), "learning period scored");
        let broken = 9 * DAY;
        let before = scores[3 * DAY..broken].iter().filter(|s| **s > 0.0).count();
        let during = scores[broken..broken + DAY / 2].iter().copied().fold(0.0, f64::max);
        assert!(during > 0.3, "the break scored {during}");
        assert!(before <= 2, "{before} alarms on the learned rhythm");
    }

    /// The documented limit: one wild value, long before the break, widens
    /// the range for good and hides the break.
    #[test]
    fn one_wild_value_hides_later_shapes() {
        let mut values = broken_rhythm();
        let broken = 9 * DAY;
        let at_break = |scores: &[f64]| scores[broken..broken + DAY / 2].iter().copied().fold(0.0, f64::max);
        let clean = at_break(&scores(&values));
        values[5 * DAY] = 1_000.0;
        let wild = at_break(&scores(&values));
        assert!(clean > 0.3 && wild < 0.1, "clean {clean}, after a wild value {wild}");
    }

    /// The scores of a prefix are the scores of the whole, bit for bit,
    /// though the range grows after the prefix ends.
    #[test]
    fn never_looks_ahead() {
        let values = broken_rhythm();
        let bits = |scores: Vec<f64>| scores.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        let cut = 10 * DAY;
        let full = bits(scores(&values));
        assert_eq!(full[..cut], bits(scores(&values[..cut]))[..]);
        assert!(full[..cut].iter().any(|s| f64::from_bits(*s) > 0.0));
    }

    /// A new maximum rebuilds the detector; a value inside the widened
    /// range does not, and non-finite values are skipped.
    #[test]
    fn the_range_grows_with_a_margin_and_rebuilds() {
        let mut scorer = ArtScorer::new(ArtConfig::default());
        for v in [0.0, 10.0, 12.0, f64::NAN, 12.4, f64::INFINITY, 5.0] {
            scorer.push(v);
        }
        // 0: built; 10: grows to 12.5 (0.25 of 10 past it); 12 and 12.4 fit; 5 fits.
        assert_eq!(scorer.range, Some((0.0, 12.5)));
        assert_eq!(scorer.rebuilds(), 2);
        assert_eq!(scorer.history.len(), 5);
        // A negative or NaN margin is none.
        for margin in [-1.0, f64::NAN] {
            let mut scorer = ArtScorer::new(ArtConfig {
                range_margin: margin,
                ..ArtConfig::default()
            });
            scorer.push(0.0);
            scorer.push(10.0);
            assert_eq!(scorer.range, Some((0.0, 10.0)));
        }
    }

    /// Extremes of f64, after learning, give no panic and no score outside
    /// 0..1 (NaN included).
    #[test]
    fn extremes_of_f64_score_in_range() {
        let config = ArtConfig {
            learning: 16,
            ..ArtConfig::default()
        };
        let mut scorer = ArtScorer::new(config);
        let values = (0..200)
            .map(|i| (i % 9) as f64)
            .chain((0..100).map(|i| (i % 5) as f64))
            .chain([f64::MAX, 3.0, -f64::MAX, 4.0, 1e300, -1e300, 5.0])
            .chain((0..100).map(|i| (i % 7) as f64));
        let scores: Vec<f64> = values.map(|v| scorer.push(v)).collect();
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        // Scoring, not still learning: the new rhythm alarms.
        assert!(scores[200..300].iter().any(|s| *s > 0.0), "{scores:?}");
    }
}
