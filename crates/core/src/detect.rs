//! The streaming anomaly detector `homeostat serve` runs on live series and
//! `homeostat eval nab` measures: new extremes and adaptive resonance
//! ([`art`]), the best combination measured on NAB (docs/BENCHMARKS.md,
//! ninth round). A point's score, in [0, 1], uses only that point and the
//! ones before it: the highest of the two rules' scores. Calibrating alarms
//! against the stream's own past ones ([`calibrated`], `prior_alarms`) was
//! measured in the tenth round and is off by default: it made the threshold
//! travel better between NAB's subsets but left no threshold that could be
//! fixed in advance (docs/BENCHMARKS.md).
//!
//! A detector's whole state is a few numbers and the values it keeps to
//! rebuild itself ([`Snapshot`]): `serve` journals it, so a restart resumes
//! where it stopped instead of learning again from scratch.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub mod art;
pub mod spec;

use art::{ArtConfig, ArtScorer};

/// The threshold fixed for the rules' raw scores before the detector was
/// first measured on NAB: where `serve`'s anomaly specs alarm by default.
pub const THRESHOLD: f64 = 0.5;

/// The prior, in alarms, of calibrated scores ([`calibrated`]): the value
/// measured in the tenth round (docs/BENCHMARKS.md).
pub const PRIOR_ALARMS: f64 = 2.0;

/// The threshold fixed for calibrated scores: the best on the development
/// set with [`PRIOR_ALARMS`] in the tenth round, and fixed from then on for
/// every calibrated variant scored after it (docs/BENCHMARKS.md, eleventh
/// round: 76.55 to 76.80 on those).
pub const CALIBRATED_THRESHOLD: f64 = 0.2;

/// The threshold fixed in advance for a scale: [`CALIBRATED_THRESHOLD`]
/// for calibrated scores, [`THRESHOLD`] for the rules' raw ones.
pub fn fixed_threshold(calibrated: bool) -> f64 {
    if calibrated {
        CALIBRATED_THRESHOLD
    } else {
        THRESHOLD
    }
}

/// The detector's settings; [`Default`] is what `homeostat eval nab` uses,
/// but for ART's learning period, which it sets per file.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    /// See [`Extremes`]: a value beyond the range so far by more than this
    /// share of it scores 1. NaN or negative: no such rule.
    pub extreme_tolerance: f64,
    /// Finite points after a new-extreme alarm during which new extremes
    /// do not score.
    pub extreme_rest: usize,
    /// Adaptive resonance over short shapes.
    pub art: ArtConfig,
    /// The weight, in alarms, of a new alarm's own score in its calibrated
    /// score ([`calibrated`]); 0 (the default), negative or NaN: no
    /// calibration, the rules' score is the point's. `homeostat eval nab
    /// --calibrate M` measures it.
    pub prior_alarms: f64,
    /// The most past alarms kept to calibrate against (the oldest go).
    pub alarm_history: usize,
}

impl DetectConfig {
    /// The detector for a live series: it learns for `learning` points,
    /// keeps `history` to rebuild and resume, and calibrates its alarms
    /// (with [`PRIOR_ALARMS`]) when `calibrate`.
    pub fn live(learning: usize, history: usize, calibrate: bool) -> DetectConfig {
        let mut config = DetectConfig::default();
        config.art.learning = learning;
        config.art.history = history;
        if calibrate {
            config.prior_alarms = PRIOR_ALARMS;
        }
        config
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            extreme_tolerance: 0.05,
            extreme_rest: 50,
            art: ArtConfig::default(),
            prior_alarms: 0.0,
            alarm_history: 10_000,
        }
    }
}

/// A new alarm's score `raw` (> 0) calibrated against the stream's past
/// alarms' (`past`, all > 0): the share of them it beats (a tie counts
/// half), with `prior` pseudo-alarms that it beats by its own score, so
/// `(beaten + ties/2 + prior·raw)/(past alarms + prior)`. The first alarm scores
/// `raw`; on a stream that has alarmed often, only an alarm higher than
/// most of its past ones scores high, and on a quiet one the first alarms
/// keep the rules' score. So a threshold is a rarity among the stream's
/// own alarms rather than a level of a score whose spread depends on the
/// stream (docs/BENCHMARKS.md, tenth round). `prior` ≤ 0 or NaN: `raw`.
pub fn calibrated<'a>(raw: f64, past: impl IntoIterator<Item = &'a f64>, prior: f64) -> f64 {
    if prior.is_nan() || prior <= 0.0 {
        return raw;
    }
    let (mut beaten, mut count) = (0.0, 0.0);
    for &v in past {
        count += 1.0;
        beaten += if v < raw {
            1.0
        } else if v == raw {
            0.5
        } else {
            0.0
        };
    }
    ((beaten + prior * raw) / (count + prior)).clamp(0.0, 1.0)
}

/// New extremes and adaptive resonance over one series.
pub struct StreamScorer {
    extremes: Extremes,
    art: ArtScorer,
    points: u64,
    /// The rules' scores of past alarms (points where they scored above 0),
    /// oldest first, at most `alarm_history`.
    alarms: VecDeque<f64>,
    prior_alarms: f64,
    alarm_history: usize,
}

/// What a [`StreamScorer`] needs to resume: its ranges, the new-extremes
/// rest under way, the values ART replays (at most `art.history`) and the
/// past alarms' scores it calibrates against (at most `alarm_history`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Finite points taken in since the detector started.
    pub points: u64,
    pub extremes_range: Option<(f64, f64)>,
    pub extremes_resting: usize,
    pub art_range: Option<(f64, f64)>,
    pub history: Vec<f64>,
    /// The rules' scores of past alarms, oldest first (none in a snapshot
    /// from before calibration).
    #[serde(default)]
    pub alarms: Vec<f64>,
}

impl StreamScorer {
    pub fn new(config: &DetectConfig) -> StreamScorer {
        StreamScorer {
            extremes: Extremes::new(config.extreme_tolerance, config.extreme_rest),
            art: ArtScorer::new(config.art.clone()),
            points: 0,
            alarms: VecDeque::new(),
            prior_alarms: config.prior_alarms,
            alarm_history: config.alarm_history,
        }
    }

    /// A detector in the state `snapshot` recorded: ART is rebuilt from the
    /// recorded values at the next point, as when its range grows, so it
    /// scores at once if they cover its learning period.
    pub fn resume(config: &DetectConfig, snapshot: Snapshot) -> StreamScorer {
        let mut extremes = Extremes::new(config.extreme_tolerance, config.extreme_rest);
        extremes.range = snapshot.extremes_range;
        extremes.resting = snapshot.extremes_resting;
        // Only scores an alarm can have: in (0, 1].
        let alarms: Vec<f64> = snapshot.alarms.into_iter().filter(|a| *a > 0.0 && *a <= 1.0).collect();
        let keep = alarms.len().saturating_sub(config.alarm_history);
        StreamScorer {
            extremes,
            art: ArtScorer::resume(config.art.clone(), snapshot.art_range, snapshot.history),
            points: snapshot.points,
            alarms: alarms.into_iter().skip(keep).collect(),
            prior_alarms: config.prior_alarms,
            alarm_history: config.alarm_history,
        }
    }

    /// The score of `value` (0 to 1), given the values before it.
    /// Non-finite values score 0 and are not taken in.
    pub fn push(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.points += 1;
        let raw = self.extremes.push(value).max(self.art.push(value));
        if raw.is_nan() || raw <= 0.0 {
            return 0.0;
        }
        let score = calibrated(raw, &self.alarms, self.prior_alarms);
        // Past alarms are kept (and journalled) only to calibrate with.
        if self.prior_alarms > 0.0 {
            self.alarms.push_back(raw);
            if self.alarms.len() > self.alarm_history {
                self.alarms.pop_front();
            }
        }
        score
    }

    /// Finite points taken in since the detector started (across resumes).
    pub fn points(&self) -> u64 {
        self.points
    }

    /// Whether ART has learned for its learning period and scores.
    pub fn learning(&self) -> bool {
        self.art.learning()
    }

    pub fn snapshot(&self) -> Snapshot {
        let (art_range, history) = self.art.state();
        Snapshot {
            points: self.points,
            extremes_range: self.extremes.range,
            extremes_resting: self.extremes.resting,
            art_range,
            history: history.iter().copied().collect(),
            alarms: self.alarms.iter().copied().collect(),
        }
    }
}

/// New extremes: the range of the values so far, and the points left
/// before the next alarm.
pub struct Extremes {
    range: Option<(f64, f64)>,
    tolerance: f64,
    rest: usize,
    resting: usize,
}

impl Extremes {
    pub fn new(tolerance: f64, rest: usize) -> Extremes {
        Extremes {
            range: None,
            // NaN or negative: an infinite margin, nothing is beyond it.
            tolerance: if tolerance >= 0.0 { tolerance } else { f64::INFINITY },
            rest,
            resting: 0,
        }
    }

    /// 1 when `value` lies beyond the range of the values before it by more
    /// than `tolerance` of its width, unless this rule alarmed in the last
    /// `rest` finite points; otherwise 0. The range takes the value in
    /// either way. Non-finite values are neither scored nor taken in, and a
    /// range of zero width (all values so far equal) has no extremes yet.
    pub fn push(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let Some((low, high)) = self.range else {
            self.range = Some((value, value));
            return 0.0;
        };
        self.range = Some((low.min(value), high.max(value)));
        if self.resting > 0 {
            self.resting -= 1;
            return 0.0;
        }
        // Halves: the width of two finite values may not be finite.
        let margin = self.tolerance * (high / 2.0 - low / 2.0) * 2.0;
        if high > low && (value > high + margin || value < low - margin) {
            self.resting = self.rest;
            1.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(extremes: &mut Extremes, values: &[f64]) -> Vec<f64> {
        values.iter().map(|v| extremes.push(*v)).collect()
    }

    /// Beyond the range by more than the tolerance: an alarm, then none
    /// for `rest` finite points, while the range keeps growing.
    #[test]
    fn new_extremes_alarm_then_rest() {
        let mut extremes = Extremes::new(0.05, 3);
        let pushed = push_all(
            &mut extremes,
            &[0.0, 10.0, 10.4, -0.6, 20.0, f64::NAN, 30.0, 40.0, 41.0, 50.0],
        );
        // 0 and 10: no width yet. 10.4: within 5% of 0..10. -0.6: beyond
        // 0..10.4 by more than 0.52. 20, 30, 40: resting (NaN does not
        // count), but taken in: 41 is within 2.03 of -0.6..40. 50: beyond
        // -0.6..41 by more than 2.08.
        assert_eq!(pushed, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(extremes.range, Some((-0.6, 50.0)));
        // Beyond means strictly beyond: with no tolerance, a repeated maximum is not.
        let mut extremes = Extremes::new(0.0, 0);
        assert_eq!(push_all(&mut extremes, &[0.0, 1.0, 1.0, 2.0]), [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn new_extremes_off_or_at_the_limits_of_f64() {
        for tolerance in [f64::NAN, -0.1, f64::INFINITY] {
            let mut extremes = Extremes::new(tolerance, 3);
            let pushed = push_all(&mut extremes, &[0.0, 1.0, 100.0, -100.0]);
            assert_eq!(pushed, [0.0; 4], "tolerance {tolerance}");
        }
        // A width beyond f64 still gives a finite margin (0.06·MAX, then
        // 0.075·MAX), and with no rest, extremes in a row all alarm.
        let mut extremes = Extremes::new(0.05, 0);
        let max = f64::MAX;
        let pushed = push_all(
            &mut extremes,
            &[-0.6 * max, 0.6 * max, 0.9 * max, -0.9 * max, f64::INFINITY, f64::NAN],
        );
        assert_eq!(pushed, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(extremes.range, Some((-0.9 * max, 0.9 * max)));
    }

    /// The first alarm keeps its score; later ones score the share of past
    /// alarms they beat, with the prior's pseudo-alarms beaten by the
    /// alarm's own score.
    #[test]
    fn alarms_are_calibrated_against_the_streams_past_ones() {
        let none: [f64; 0] = [];
        assert_eq!(calibrated(0.7, &none, 2.0), 0.7);
        // Beats 0.2 and 0.3, ties 0.7, below 0.9: (2 + 0.5 + 2·0.7)/(4 + 2).
        let past = [0.2, 0.9, 0.7, 0.3];
        assert!((calibrated(0.7, &past, 2.0) - 3.9 / 6.0).abs() < 1e-12);
        // No calibration: the rules' score.
        for prior in [0.0, -1.0, f64::NAN] {
            assert_eq!(calibrated(0.7, &past, prior), 0.7);
        }
        // A stream that alarmed at 1 many times: another 1 tends to a half.
        let ones = [1.0; 98];
        assert!((calibrated(1.0, &ones, 2.0) - 0.51).abs() < 1e-12);
    }

    /// A detector resumed from its snapshot scores what the one that kept
    /// running scores: no burst of alarms, no learning from scratch, and
    /// its alarms calibrated against the same past alarms.
    #[test]
    fn a_resumed_detector_scores_like_the_one_that_ran_on() {
        let config = DetectConfig {
            art: ArtConfig {
                learning: 200,
                ..ArtConfig::default()
            },
            prior_alarms: 2.0,
            alarm_history: 3,
            ..DetectConfig::default()
        };
        // Spikes at 400, 460 and 520 (new extremes: 20, 30, 40 above the
        // cycle, past the 50 points' rest), then one higher still at 1000.
        let spike = |i: usize| match i {
            400 => 20.0,
            460 => 30.0,
            520 => 40.0,
            1000 => 60.0,
            _ => 0.0,
        };
        let values: Vec<f64> = (0..1200).map(|i| (i as f64 * 0.1).sin() * 10.0 + spike(i)).collect();
        let mut running = StreamScorer::new(&config);
        let mut early: Vec<f64> = values[..600].iter().map(|v| running.push(*v)).collect();
        let snapshot = running.snapshot();
        assert!(
            !snapshot.alarms.is_empty() && snapshot.alarms.len() <= 3,
            "{:?}",
            snapshot.alarms
        );
        let mut resumed = StreamScorer::resume(&config, snapshot.clone());
        assert_eq!(resumed.snapshot(), snapshot);
        assert!(!resumed.learning(), "a resumed detector learns again");
        let on: Vec<f64> = values[600..].iter().map(|v| running.push(*v)).collect();
        let again: Vec<f64> = values[600..].iter().map(|v| resumed.push(*v)).collect();
        assert_eq!(on, again);
        assert_eq!(resumed.points(), 1200);
        assert_eq!(resumed.snapshot(), running.snapshot());
        // The spikes alarm, after a first new extreme as the cycle rises
        // from 0 (row 2): each ties every past alarm (at 1), so scores
        // (ties/2 + 2)/(ties + 2), up to the three past alarms kept; where
        // a resumed detector that forgot them scores 1.
        assert_eq!(early[2], 1.0);
        assert_eq!([early[400], early[460], early[520]], [2.5 / 3.0, 0.75, 0.7]);
        assert!((again[400] - 0.7).abs() < 1e-12, "{}", again[400]);
        let mut forgetful = StreamScorer::resume(
            &config,
            Snapshot {
                alarms: Vec::new(),
                ..snapshot.clone()
            },
        );
        let forgot: Vec<f64> = values[600..].iter().map(|v| forgetful.push(*v)).collect();
        assert_eq!(forgot[400], 1.0);
        // Nothing else after the learning period scores much.
        early.extend(on);
        for (i, s) in early.iter().enumerate().skip(300) {
            assert!(*s < 0.5 || [400, 460, 520, 1000].contains(&i), "row {i}: {s}");
        }
        // A snapshot from before calibration (no alarms) still reads.
        let json = serde_json::to_string(&snapshot).unwrap();
        let old = json.replace(
            &format!(",\"alarms\":{}", serde_json::to_string(&snapshot.alarms).unwrap()),
            "",
        );
        assert!(!old.contains("alarms"), "{old}");
        let old: Snapshot = serde_json::from_str(&old).unwrap();
        assert!(old.alarms.is_empty());
        // A detector started on the last values only would still be learning.
        let mut cold = StreamScorer::new(&config);
        cold.push(values[600]);
        assert!(cold.learning());
    }
}
