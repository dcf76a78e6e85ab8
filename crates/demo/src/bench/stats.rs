//! The bench statistics: quantiles, bootstrap intervals, one [`Summary`] per
//! contender and fault, and [`Comparison`]s of homeostat against the
//! baselines.
//!
//! A trial whose fault was not healed within its timeout counts as
//! recovering in +∞ seconds: it is slower than any trial that recovered, so
//! a median over mostly unrecovered trials is ∞, which reads "not
//! recovered". Every function here is pure; none returns NaN.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};

use super::{Contender, Trial};
use crate::Fault;

/// How many resamples a bootstrap interval is computed from.
pub const RESAMPLES: usize = 2000;

/// The contenders homeostat's are compared against, in this order.
pub const BASELINES: [Contender; 3] = [Contender::None, Contender::RestartPolicy, Contender::Healthcheck];

/// The `q`-quantile of `values` (`q` from 0 to 1, clamped to that range),
/// interpolating linearly between the two closest ranks: the sorted values
/// `x[0] ..= x[n-1]` give `h = (n - 1) q` and the quantile
/// `x[⌊h⌋] + (h - ⌊h⌋) (x[⌈h⌉] - x[⌊h⌋])` (Hyndman and Fan's type 7, the
/// default of R and numpy).
///
/// Infinite values are ranked like any other; where the interpolation would
/// mix an infinite value with a finite one, any weight on the infinite one
/// makes the result that infinity: the median of `[1, 2, ∞, ∞]` is ∞, that
/// of `[1, 2, 3, ∞]` is 2.5. Between −∞ and +∞ the one with the greater
/// weight wins, +∞ on a tie. NaN values are left out.
///
/// `None` if no value is left, or `q` is NaN.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    let weight = h - h.floor();
    Some(interpolate(sorted[lo], sorted[hi], weight))
}

/// `low + weight (high - low)` for `low <= high`, with infinities as
/// [`quantile`] describes.
fn interpolate(low: f64, high: f64, weight: f64) -> f64 {
    if weight == 0.0 || low == high {
        low
    } else if low == f64::NEG_INFINITY && high == f64::INFINITY {
        if weight >= 0.5 {
            high
        } else {
            low
        }
    } else if high == f64::INFINITY {
        high
    } else if low == f64::NEG_INFINITY {
        low
    } else {
        low + weight * (high - low)
    }
}

/// The median: [`quantile`] 0.5.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The 90th percentile: [`quantile`] 0.9.
pub fn p90(values: &[f64]) -> Option<f64> {
    quantile(values, 0.9)
}

/// The percentile bootstrap 95% interval of `statistic` over `values`:
/// `resamples` times, `values.len()` values are drawn from `values` with
/// replacement and `statistic` computed on them; the interval runs
/// from the 2.5th to the 97.5th percentile ([`quantile`]) of those
/// statistics. The draws come from a [`StdRng`] seeded with `seed`, so the
/// same input gives the same interval.
///
/// `None` for no values, no resamples, or a statistic that is `None` on
/// every resample.
pub fn bootstrap_interval(
    values: &[f64],
    statistic: impl Fn(&[f64]) -> Option<f64>,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sample = vec![0.0; values.len()];
    let mut statistics = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in sample.iter_mut() {
            *slot = values[rng.gen_range(0..values.len())];
        }
        statistics.extend(statistic(&sample));
    }
    Some((quantile(&statistics, 0.025)?, quantile(&statistics, 0.975)?))
}

/// Serializes a number JSON cannot hold (±∞) as `null`.
fn finite_or_null<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        serializer.serialize_f64(*value)
    } else {
        serializer.serialize_none()
    }
}

/// Seconds over a set of trials: median, 90th percentile and the 95%
/// bootstrap interval of the median. In JSON, ∞ (not recovered) is `null`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median ([`median`]).
    #[serde(serialize_with = "finite_or_null")]
    pub median: f64,
    /// The 90th percentile ([`p90`]).
    #[serde(serialize_with = "finite_or_null")]
    pub p90: f64,
    /// The interval's lower bound.
    #[serde(serialize_with = "finite_or_null")]
    pub low: f64,
    /// The interval's upper bound.
    #[serde(serialize_with = "finite_or_null")]
    pub high: f64,
}

impl Spread {
    /// The spread of `values`, the interval from [`RESAMPLES`] resamples
    /// drawn with `seed`; `None` for no values.
    pub fn of(values: &[f64], seed: u64) -> Option<Spread> {
        let (low, high) = bootstrap_interval(values, median, RESAMPLES, seed)?;
        Some(Spread {
            median: median(values)?,
            p90: p90(values)?,
            low,
            high,
        })
    }
}

/// One contender's trials of one fault, summed up.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Who healed.
    pub contender: Contender,
    /// What was injected.
    pub fault: Fault,
    /// How many trials.
    pub n: usize,
    /// The longest timeout among the trials: an unrecovered trial took
    /// longer than this.
    pub timeout_s: f64,
    /// How many trials the contender noticed the fault in.
    pub detected: usize,
    /// Seconds to detection, over the trials it was detected in; `None` if
    /// in none.
    pub detect: Option<Spread>,
    /// Seconds to recovery over all trials, an unrecovered one counting as
    /// ∞ (`null` in JSON); `None` for the control, which has nothing to
    /// recover from.
    pub recover: Option<Spread>,
    /// How many trials recovered within their timeout; `None` for the
    /// control.
    pub recovered: Option<usize>,
    /// `recovered / n`; `None` for the control.
    pub recovered_share: Option<f64>,
    /// Requests sent to service_a, summed over the trials.
    pub requests_total: usize,
    /// Of those, the failed ones.
    pub requests_failed: usize,
    /// `1 - requests_failed / requests_total`, from 0 to 1; `None` if no
    /// request was sent.
    pub availability: Option<f64>,
    /// The mean number of actions per trial.
    pub actions_per_trial: f64,
    /// Harmful actions, summed over the trials.
    pub harmful_actions: usize,
    /// Escalations, summed over the trials.
    pub escalations: usize,
    /// Seconds to recovery of the first trial (the smallest `trial`
    /// number); `None` if it did not recover, and for the control.
    pub first_recover_s: Option<f64>,
    /// Seconds to recovery of the last trial (the largest `trial` number);
    /// `None` if it did not recover, and for the control.
    pub last_recover_s: Option<f64>,
}

/// A stable seed per contender and fault (FNV-1a of their names), so that
/// each summary's bootstrap draws differently but reproducibly.
fn seed(contender: Contender, fault: Fault) -> u64 {
    format!("{contender}/{fault}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The faults in the order they first appear among the trials.
pub(super) fn faults(trials: &[Trial]) -> Vec<Fault> {
    let mut faults = Vec::new();
    for t in trials {
        if !faults.contains(&t.fault) {
            faults.push(t.fault);
        }
    }
    faults
}

/// The contenders that ran trials, in their order ([`Contender::ALL`]).
pub(super) fn contenders(trials: &[Trial]) -> Vec<Contender> {
    Contender::ALL
        .into_iter()
        .filter(|c| trials.iter().any(|t| t.contender == *c))
        .collect()
}

/// One [`Summary`] per contender and fault with trials: the contenders in
/// their order ([`Contender::ALL`]), under each the faults in the order
/// they first appear in `trials`.
pub fn summarize(trials: &[Trial]) -> Vec<Summary> {
    let faults = faults(trials);
    let mut summaries = Vec::new();
    for contender in contenders(trials) {
        for &fault in &faults {
            let group: Vec<&Trial> = trials
                .iter()
                .filter(|t| t.contender == contender && t.fault == fault)
                .collect();
            summaries.extend(summary(contender, fault, &group));
        }
    }
    summaries
}

/// The summary of one contender's trials of one fault; `None` if there are
/// none.
fn summary(contender: Contender, fault: Fault, trials: &[&Trial]) -> Option<Summary> {
    let n = trials.len();
    if n == 0 {
        return None;
    }
    let seed = seed(contender, fault);
    let detect: Vec<f64> = trials.iter().filter_map(|t| t.detect_s).collect();
    let control = fault == Fault::None;
    let recover: Vec<f64> = trials.iter().map(|t| t.recover_s.unwrap_or(f64::INFINITY)).collect();
    let recovered = trials.iter().filter(|t| t.recover_s.is_some()).count();
    let requests_total: usize = trials.iter().map(|t| t.requests_total).sum();
    let requests_failed: usize = trials.iter().map(|t| t.requests_failed).sum();
    let availability =
        (requests_total > 0).then(|| 1.0 - requests_failed.min(requests_total) as f64 / requests_total as f64);
    let first = trials.iter().min_by_key(|t| t.trial).and_then(|t| t.recover_s);
    let last = trials.iter().max_by_key(|t| t.trial).and_then(|t| t.recover_s);
    Some(Summary {
        contender,
        fault,
        n,
        timeout_s: trials.iter().map(|t| t.timeout_s).fold(0.0, f64::max),
        detected: detect.len(),
        detect: Spread::of(&detect, seed),
        recover: if control { None } else { Spread::of(&recover, seed ^ 1) },
        recovered: (!control).then_some(recovered),
        recovered_share: (!control).then(|| recovered as f64 / n as f64),
        requests_total,
        requests_failed,
        availability,
        actions_per_trial: trials.iter().map(|t| t.actions.len()).sum::<usize>() as f64 / n as f64,
        harmful_actions: trials.iter().map(|t| t.harmful_actions).sum(),
        escalations: trials.iter().map(|t| t.escalations).sum(),
        first_recover_s: if control { None } else { first },
        last_recover_s: if control { None } else { last },
    })
}

/// How a candidate's recovery time compares with a baseline's, by their
/// 95% intervals of the median.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Difference {
    /// The candidate's interval ends before the baseline's begins.
    Faster,
    /// The baseline's interval ends before the candidate's begins.
    Slower,
    /// The intervals overlap: the trials do not tell which is faster.
    NoClearDifference,
}

impl Difference {
    /// In words, for the report.
    pub fn words(self) -> &'static str {
        match self {
            Difference::Faster => "faster",
            Difference::Slower => "slower",
            Difference::NoClearDifference => "no clear difference",
        }
    }
}

/// A candidate (homeostat) against a baseline on one fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The fault both summaries are of.
    pub fault: Fault,
    /// homeostat's contender: playbook or learned.
    pub candidate: Contender,
    /// What it is compared against.
    pub baseline: Contender,
    /// Recovery time; `None` for the control, or if either has no
    /// recovery spread.
    pub recovery: Option<Difference>,
    /// The candidate's availability less the baseline's, in percentage
    /// points (positive: the candidate failed fewer requests); `None` if
    /// either sent no request. A point estimate, without an interval.
    pub availability_points: Option<f64>,
    /// The candidate's actions per trial less the baseline's.
    pub actions_per_trial: f64,
}

/// Compares `candidate` with `baseline`, which should be summaries of the
/// same fault.
///
/// Recovery time is [`Difference::Faster`] if the candidate's interval's
/// upper bound is below the baseline's lower bound, [`Difference::Slower`]
/// the other way round, [`Difference::NoClearDifference`] otherwise.
/// Unrecovered trials make bounds ∞, which compare as numbers do: a finite
/// upper bound is below an infinite lower bound (faster), and two infinite
/// bounds overlap. For the control (`none` fault) only availability and
/// actions are compared.
pub fn compare(candidate: &Summary, baseline: &Summary) -> Comparison {
    let recovery = match (&candidate.recover, &baseline.recover) {
        (Some(c), Some(b)) if candidate.fault != Fault::None => Some(if c.high < b.low {
            Difference::Faster
        } else if b.high < c.low {
            Difference::Slower
        } else {
            Difference::NoClearDifference
        }),
        _ => None,
    };
    let availability_points = match (candidate.availability, baseline.availability) {
        (Some(c), Some(b)) => Some(100.0 * (c - b)),
        _ => None,
    };
    Comparison {
        fault: candidate.fault,
        candidate: candidate.contender,
        baseline: baseline.contender,
        recovery,
        availability_points,
        actions_per_trial: candidate.actions_per_trial - baseline.actions_per_trial,
    }
}

/// Every comparison of homeostat against the baselines in `summaries`: per
/// fault (in the order they first appear), each homeostat contender
/// present against each of the [`BASELINES`] present.
pub fn comparisons(summaries: &[Summary]) -> Vec<Comparison> {
    let mut faults: Vec<Fault> = Vec::new();
    for s in summaries {
        if !faults.contains(&s.fault) {
            faults.push(s.fault);
        }
    }
    let find =
        |contender: Contender, fault: Fault| summaries.iter().find(|s| s.contender == contender && s.fault == fault);
    let mut out = Vec::new();
    for fault in faults {
        for candidate in Contender::ALL.into_iter().filter(|c| c.is_homeostat()) {
            let Some(candidate) = find(candidate, fault) else {
                continue;
            };
            for baseline in BASELINES {
                if let Some(baseline) = find(baseline, fault) {
                    out.push(compare(candidate, baseline));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let values = [4.0, 1.0, 3.0, 2.0];
        assert!(close(median(&values), 2.5));
        // h = 3 × 0.9 = 2.7: 3 + 0.7 × (4 - 3).
        assert!(close(p90(&values), 3.7));
        assert!(close(quantile(&values, 0.0), 1.0));
        assert!(close(quantile(&values, 1.0), 4.0));
        assert!(close(quantile(&values, 2.0), 4.0), "q is clamped");
        assert!(close(median(&[1.0, 2.0, 3.0]), 2.0));
    }

    #[test]
    fn a_single_value_is_every_quantile() {
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(p90(&[7.5]), Some(7.5));
        assert_eq!(quantile(&[7.5], 0.0), Some(7.5));
    }

    #[test]
    fn no_values_no_quantile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(quantile(&[1.0], f64::NAN), None);
    }

    #[test]
    fn infinity_wins_any_weight_and_never_makes_nan() {
        // h = 1.5 between 2 and ∞.
        assert_eq!(median(&[1.0, 2.0, INF, INF]), Some(INF));
        assert_eq!(median(&[INF, 1.0, INF]), Some(INF));
        // h = 1.5 between 2 and 3: the ∞ has no weight.
        assert!(close(median(&[1.0, 2.0, 3.0, INF]), 2.5));
        // h = 2.7 between 3 and ∞.
        assert_eq!(p90(&[1.0, 2.0, 3.0, INF]), Some(INF));
        // Exactly on a finite rank.
        assert_eq!(median(&[1.0, 2.0, INF]), Some(2.0));
        assert_eq!(median(&[INF, INF]), Some(INF));
        assert_eq!(median(&[f64::NEG_INFINITY, 1.0]), Some(f64::NEG_INFINITY));
        assert_eq!(median(&[f64::NEG_INFINITY, INF]), Some(INF));
        assert_eq!(quantile(&[f64::NEG_INFINITY, INF], 0.25), Some(f64::NEG_INFINITY));
        assert_eq!(median(&[1.0, f64::NAN, 3.0]), Some(2.0));
    }

    #[test]
    fn the_bootstrap_is_reproducible_and_brackets_the_median() {
        let values = [3.0, 9.0, 4.0, 5.0, 7.0, 6.0, 12.0, 5.5, 4.5, 8.0];
        let a = bootstrap_interval(&values, median, RESAMPLES, 42).unwrap();
        let b = bootstrap_interval(&values, median, RESAMPLES, 42).unwrap();
        assert_eq!(a, b);
        let m = median(&values).unwrap();
        assert_eq!(m, 5.75);
        assert!(a.0 <= m && m <= a.1, "{a:?}");
        assert!(a.0 >= 3.0 && a.1 <= 12.0 && a.0 < a.1, "{a:?}");
    }

    #[test]
    fn the_bootstrap_of_equal_values_is_a_point() {
        assert_eq!(bootstrap_interval(&[4.0; 6], median, 100, 1), Some((4.0, 4.0)));
        assert_eq!(bootstrap_interval(&[INF; 3], median, 100, 1), Some((INF, INF)));
    }

    #[test]
    fn no_values_no_bootstrap() {
        assert_eq!(bootstrap_interval(&[], median, RESAMPLES, 1), None);
        assert_eq!(bootstrap_interval(&[1.0], median, 0, 1), None);
        assert_eq!(bootstrap_interval(&[1.0], |_| None, 10, 1), None);
    }

    fn trial(contender: Contender, fault: Fault, n: usize, recover: Option<f64>, failed: usize) -> Trial {
        Trial::example(contender, fault, n, recover, failed)
    }

    #[test]
    fn summaries_group_and_sum_the_trials() {
        let trials = vec![
            trial(Contender::Learned, Fault::Crash, 2, Some(6.0), 10),
            trial(Contender::Learned, Fault::None, 1, None, 0),
            trial(Contender::RestartPolicy, Fault::Crash, 1, Some(20.0), 40),
            trial(Contender::Learned, Fault::Crash, 1, Some(10.0), 20),
            trial(Contender::Learned, Fault::Crash, 3, None, 60),
            trial(Contender::Learned, Fault::Crash, 4, Some(4.0), 10),
        ];
        let summaries = summarize(&trials);
        let keys: Vec<(Contender, Fault)> = summaries.iter().map(|s| (s.contender, s.fault)).collect();
        assert_eq!(
            keys,
            [
                (Contender::RestartPolicy, Fault::Crash),
                (Contender::Learned, Fault::Crash),
                (Contender::Learned, Fault::None)
            ]
        );
        let learned = &summaries[1];
        assert_eq!(learned.n, 4);
        assert_eq!(learned.timeout_s, 60.0);
        assert_eq!((learned.requests_total, learned.requests_failed), (400, 100));
        assert_eq!(learned.availability, Some(0.75));
        assert_eq!(learned.recovered, Some(3));
        assert_eq!(learned.recovered_share, Some(0.75));
        assert_eq!(learned.first_recover_s, Some(10.0));
        assert_eq!(learned.last_recover_s, Some(4.0));
        assert_eq!(learned.actions_per_trial, 0.75);
        assert_eq!((learned.harmful_actions, learned.escalations), (1, 1));
        assert_eq!(learned.detected, 3);
        // Detected after 2, 3 and 5 s.
        assert_eq!(learned.detect.unwrap().median, 3.0);
        let recover = learned.recover.unwrap();
        // 4, 6, 10, ∞: the median 8, the p90 between 10 and ∞.
        assert_eq!((recover.median, recover.p90), (8.0, INF));
        assert!(recover.low <= 8.0 && recover.high == INF, "{recover:?}");

        let control = &summaries[2];
        assert_eq!(control.recover, None);
        assert_eq!(control.recovered_share, None);
        assert_eq!(control.detect, None);
        assert_eq!(control.availability, Some(1.0));
        assert_eq!((control.first_recover_s, control.last_recover_s), (None, None));

        let json = serde_json::to_value(learned).unwrap();
        assert_eq!(json["recover"]["p90"], serde_json::Value::Null);
        assert_eq!(json["recover"]["median"], 8.0);
        assert_eq!(json["contender"], "learned");
    }

    #[test]
    fn no_trials_no_summaries() {
        assert!(summarize(&[]).is_empty());
        assert!(comparisons(&[]).is_empty());
    }

    fn summary_with(contender: Contender, fault: Fault, low: f64, high: f64, availability: Option<f64>) -> Summary {
        Summary {
            contender,
            fault,
            n: 5,
            timeout_s: 60.0,
            detected: 5,
            detect: None,
            recover: Some(Spread {
                median: low,
                p90: high,
                low,
                high,
            }),
            recovered: Some(5),
            recovered_share: Some(1.0),
            requests_total: 100,
            requests_failed: 0,
            availability,
            actions_per_trial: 1.0,
            harmful_actions: 0,
            escalations: 0,
            first_recover_s: None,
            last_recover_s: None,
        }
    }

    #[test]
    fn comparisons_follow_the_intervals() {
        let c = |low, high| summary_with(Contender::Playbook, Fault::Crash, low, high, Some(0.99));
        let b = |low, high| summary_with(Contender::RestartPolicy, Fault::Crash, low, high, Some(0.95));
        assert_eq!(compare(&c(5.0, 7.0), &b(8.0, 12.0)).recovery, Some(Difference::Faster));
        assert_eq!(compare(&c(9.0, 13.0), &b(4.0, 8.0)).recovery, Some(Difference::Slower));
        assert_eq!(
            compare(&c(5.0, 9.0), &b(8.0, 12.0)).recovery,
            Some(Difference::NoClearDifference)
        );
        // Touching bounds overlap.
        assert_eq!(
            compare(&c(5.0, 8.0), &b(8.0, 12.0)).recovery,
            Some(Difference::NoClearDifference)
        );
        // The baseline never recovered: finite is faster.
        assert_eq!(compare(&c(5.0, 9.0), &b(INF, INF)).recovery, Some(Difference::Faster));
        assert_eq!(compare(&c(INF, INF), &b(5.0, 9.0)).recovery, Some(Difference::Slower));
        assert_eq!(
            compare(&c(30.0, INF), &b(INF, INF)).recovery,
            Some(Difference::NoClearDifference)
        );
        assert_eq!(
            compare(&c(INF, INF), &b(INF, INF)).recovery,
            Some(Difference::NoClearDifference)
        );
        let comparison = compare(&c(5.0, 7.0), &b(8.0, 12.0));
        assert!(close(comparison.availability_points, 4.0));
        assert_eq!(
            (comparison.candidate, comparison.baseline),
            (Contender::Playbook, Contender::RestartPolicy)
        );
    }

    #[test]
    fn the_control_compares_availability_and_actions_only() {
        let mut candidate = summary_with(Contender::Learned, Fault::None, 1.0, 2.0, Some(1.0));
        candidate.actions_per_trial = 0.5;
        let baseline = summary_with(Contender::None, Fault::None, 5.0, 6.0, None);
        let comparison = compare(&candidate, &baseline);
        assert_eq!(comparison.recovery, None);
        assert_eq!(comparison.availability_points, None);
        assert_eq!(comparison.actions_per_trial, -0.5);
    }

    #[test]
    fn homeostat_is_compared_with_each_baseline_present() {
        let summaries = [
            summary_with(Contender::None, Fault::Crash, 1.0, 2.0, None),
            summary_with(Contender::Healthcheck, Fault::Crash, 1.0, 2.0, None),
            summary_with(Contender::Learned, Fault::Crash, 1.0, 2.0, None),
            summary_with(Contender::Playbook, Fault::Hang, 1.0, 2.0, None),
            summary_with(Contender::None, Fault::Hang, 1.0, 2.0, None),
        ];
        let pairs: Vec<(Fault, Contender, Contender)> = comparisons(&summaries)
            .iter()
            .map(|c| (c.fault, c.candidate, c.baseline))
            .collect();
        assert_eq!(
            pairs,
            [
                (Fault::Crash, Contender::Learned, Contender::None),
                (Fault::Crash, Contender::Learned, Contender::Healthcheck),
                (Fault::Hang, Contender::Playbook, Contender::None),
            ]
        );
    }
}
