//! The streaming anomaly detector `homeostat serve` runs on live series and
//! `homeostat eval nab` measures: new extremes and adaptive resonance
//! ([`art`]), the best combination measured on NAB (docs/BENCHMARKS.md,
//! ninth round). A point's score, in [0, 1], uses only that point and the
//! ones before it; the highest of the two rules' scores is the point's.
//!
//! A detector's whole state is a few numbers and the values it keeps to
//! rebuild itself ([`Snapshot`]): `serve` journals it, so a restart resumes
//! where it stopped instead of learning again from scratch.


use serde::{Deserialize, Serialize};

pub mod art;

use art::{ArtConfig, ArtScorer};

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
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            extreme_tolerance: 0.05,
            extreme_rest: 50,
            art: ArtConfig::default(),
        }
    }
}

/// New extremes and adaptive resonance over one series.
pub struct StreamScorer {
    extremes: Extremes,
    art: ArtScorer,
    points: u64,
}

/// What a [`StreamScorer`] needs to resume: its ranges, the new-extremes
/// rest under way and the values ART replays (at most `art.history`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Finite points taken in since the detector started.
    pub points: u64,
    pub extremes_range: Option<(f64, f64)>,
    pub extremes_resting: usize,
    pub art_range: Option<(f64, f64)>,
    pub history: Vec<f64>,
}

impl StreamScorer {
    pub fn new(config: &DetectConfig) -> StreamScorer {
        StreamScorer {
            extremes: Extremes::new(config.extreme_tolerance, config.extreme_rest),
            art: ArtScorer::new(config.art.clone()),
            points: 0,
        }
    }

    /// A detector in the state `snapshot` recorded: ART is rebuilt from the
    /// recorded values at the next point, as when its range grows, so it
    /// scores at once if they cover its learning period.
    pub fn resume(config: &DetectConfig, snapshot: Snapshot) -> StreamScorer {
        let mut extremes = Extremes::new(config.extreme_tolerance, config.extreme_rest);
        extremes.range = snapshot.extremes_range;
        extremes.resting = snapshot.extremes_resting;
        StreamScorer {
            extremes,
            art: ArtScorer::resume(config.art.clone(), snapshot.art_range, snapshot.history),
            points: snapshot.points,
        }
    }

    /// The score of `value` (0 to 1), given the values before it.
    /// Non-finite values score 0 and are not taken in.
    pub fn push(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.points += 1;
        self.extremes.push(value).max(self.art.push(value))
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


    /// A detector resumed from its snapshot scores what the one that kept
    /// running scores: no burst of alarms, no learning from scratch.
    #[test]
    fn a_resumed_detector_scores_like_the_one_that_ran_on() {
        let config = DetectConfig {
            art: ArtConfig {
                learning: 200,
                ..ArtConfig::default()
            },
            ..DetectConfig::default()
        };
        let values: Vec<f64> = (0..1200)
            .map(|i| (i as f64 * 0.1).sin() * 10.0 + if i == 1000 { 40.0 } else { 0.0 })
            .collect();
        let mut running = StreamScorer::new(&config);
        let mut early: Vec<f64> = values[..600].iter().map(|v| running.push(*v)).collect();
        let mut resumed = StreamScorer::resume(&config, running.snapshot());
        assert!(!resumed.learning(), "a resumed detector learns again");
        let on: Vec<f64> = values[600..].iter().map(|v| running.push(*v)).collect();
        let again: Vec<f64> = values[600..].iter().map(|v| resumed.push(*v)).collect();
        assert_eq!(on, again);
        assert_eq!(resumed.points(), 1200);
        // The spike scores; nothing else after the learning period does much.
        assert!(again[400] > 0.5, "{}", again[400]);
        early.extend(on);
        assert!(early[300..1000].iter().all(|s| *s < 0.5));
        // A detector started on the last values only would still be learning.
        let mut cold = StreamScorer::new(&config);
        cold.push(values[600]);
        assert!(cold.learning());
    }
}
