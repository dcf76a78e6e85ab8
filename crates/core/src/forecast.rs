//! Seasonal forecasting with prediction bands, on augurs: MSTL decomposes
//! the series into seasonal components and a trend, AutoETS forecasts the
//! trend (with its prediction interval), and the last cycle of each seasonal
//! component, smoothed along the phase, is added back.
//!
//! Seasonal periods come from the sampling step, not from a periodogram:
//! daily once two days of history exist, weekly once two weeks do (MSTL
//! needs two full cycles, and a periodogram's default range never reaches a
//! per-minute day). Short, constant or broken series get fallbacks instead
//! of errors: gaps and NaN are interpolated, a series too short for a
//! season is forecast by AutoETS alone, and one too short for that by its
//! last value with a band from its step-to-step changes. Counters are
//! turned into rates first ([`counter_rate`]). Whatever the model, the band
//! returned is held to what the history supports ([`guard`]): never
//! narrower than its noise floor, never more than [`MAX_RANGES_BEYOND`]
//! observed ranges past its extremes, never below 0 for a series that
//! cannot be negative; a model that diverges is replaced by seasonal naive
//! or a robust level model ([`diverged`]).

use std::time::Duration;

use augurs::ets::AutoETS;
use augurs::mstl::stlrs::MstlParams;
use augurs::{Fit, Predict};

const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;

/// Fewer points than this and no model is fitted: the last value is the forecast.
pub const MIN_MODEL_POINTS: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ForecastError {
    #[error("the series has no finite value")]
    NoData,
    #[error("coverage must be in (0, 1), got {0}")]
    Coverage(f64),
    #[error("the sampling step must be positive")]
    Step,
}

/// A forecast: per future step a point and a band holding the true value
/// with the requested coverage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Band {
    pub point: Vec<f64>,
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    /// What produced it: `mstl[periods]+ets`, `ets`, `last-value` or
    /// `constant`, with `+w·seasonal-naive` when the point forecast blends
    /// in the seasonal-naive one with weight `w` (see [`forecast`]).
    pub model: String,
}

/// The seasonal periods, in points, that `n` points at `step` can support.
pub fn seasonal_periods(step: Duration, n: usize) -> Vec<usize> {
    let step = step.as_secs_f64();
    let mut periods = Vec::new();
    for (cycle, cycles_needed) in [(DAY, 2), (WEEK, 2)] {
        let points = cycle as f64 / step;
        // Only whole periods of at least two points make sense.
        if points < 2.0 || (points - points.round()).abs() > 1e-6 {
            continue;
        }
        let points = points.round() as usize;
        if n >= cycles_needed * points {
            periods.push(points);
        }
    }
    periods
}

/// A counter's per-second rate between samples; a decrease is a reset, after
/// which the new value is the increase. One value shorter than `values`.
pub fn counter_rate(values: &[f64], step: Duration) -> Vec<f64> {
    let seconds = step.as_secs_f64();
    values
        .windows(2)
        .map(|w| {
            let increase = if w[1] >= w[0] { w[1] - w[0] } else { w[1] };
            increase / seconds
        })
        .collect()
}

/// `values` with NaN and infinities replaced by linear interpolation (and
/// the nearest finite value at the ends); `None` when nothing is finite.
pub fn fill_gaps(values: &[f64]) -> Option<Vec<f64>> {
    let known: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_finite()).collect();
    let (&first, &last) = (known.first()?, known.last()?);
    let mut out = values.to_vec();
    out[..first].fill(values[first]);
    out[last..].fill(values[last]);
    for pair in known.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        for (i, slot) in out.iter_mut().enumerate().take(b).skip(a + 1) {
            let t = (i - a) as f64 / (b - a) as f64;
            *slot = values[a] + t * (values[b] - values[a]);
        }
    }
    Some(out)
}

/// The two-sided standard normal quantile for `coverage` (e.g. 1.96 for 0.95).
pub fn normal_quantile(coverage: f64) -> f64 {
    // Bisection on the normal tail: exact enough and free of tables.
    let tail = (1.0 - coverage) / 2.0;
    let (mut lo, mut hi) = (0.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if normal_tail(mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// P(Z > z) for a standard normal Z, accurate to a relative 1.2e-7 far
/// into the tail (Chebyshev fit of erfc, Numerical Recipes' `erfcc`).
pub fn normal_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    erfc / 2.0
}

/// How [`forecast_with`] treats the series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Whether the series can never be negative (rates, latencies, counts):
    /// `Some(true)` keeps the band at or above 0, `Some(false)` never clamps
    /// it; `None` clamps when the whole history is at or above 0.
    pub non_negative: Option<bool>,
}

/// Forecasts `horizon` steps after `values` (sampled every `step`) with a
/// band of the given `coverage` ([`forecast_with`], default options).
pub fn forecast(values: &[f64], step: Duration, horizon: usize, coverage: f64) -> Result<Band, ForecastError> {
    forecast_with(values, step, horizon, coverage, Options::default())
}

/// Forecasts `horizon` steps after `values` (sampled every `step`) with a
/// band of the given `coverage`, then holds the band to what the history
/// supports ([`guard`]): at least its noise floor wide, never beyond
/// [`MAX_RANGES_BEYOND`] observed ranges past its extremes, never below 0
/// for a series that cannot be negative. A model that diverges (no finite
/// forecast, or a point or band far outside the observed range, see
/// [`diverged`]) is replaced by seasonal naive or a robust level model, and
/// the band's `model` says so.
pub fn forecast_with(
    values: &[f64],
    step: Duration,
    horizon: usize,
    coverage: f64,
    options: Options,
) -> Result<Band, ForecastError> {
    if !(coverage > 0.0 && coverage < 1.0) {
        return Err(ForecastError::Coverage(coverage));
    }
    if step.is_zero() {
        return Err(ForecastError::Step);
    }
    let y = fill_gaps(values).ok_or(ForecastError::NoData)?;
    let stats = HistoryStats::of(&y);
    let band = unguarded(&y, step, horizon, coverage, &stats);
    let non_negative = options.non_negative.unwrap_or(stats.min >= 0.0);
    Ok(guard(band, &stats, coverage, non_negative))
}

/// The forecast before [`guard`]: constant, last value, or the model's
/// calibrated band, or a fallback when the model diverged.
fn unguarded(y: &[f64], step: Duration, horizon: usize, coverage: f64, stats: &HistoryStats) -> Band {
    let last = *y.last().expect("fill_gaps returns the input's length");
    if stats.max - stats.min <= f64::EPSILON * stats.max.abs().max(1.0) {
        return flat(last, stats.range, horizon, "constant");
    }
    if y.len() < MIN_MODEL_POINTS {
        return last_value(y, horizon, coverage);
    }
    let Some(band) = model_band(y, step, horizon, coverage) else {
        return fallback(y, step, horizon, coverage, "no finite model forecast");
    };
    let model = band.model.clone();
    // The model's interval is the trend model's alone: noise the seasonal
    // components absorbed in fitting is missing from it, and on some series
    // the seasonal-naive forecast beats the model. Both are settled on the
    // latest points (split conformal prediction, see [`calibrate`]).
    let season = naive_season(step, y.len());
    let calibration = calibrate(y, step, horizon, coverage, season).unwrap_or(Calibration {
        naive_weight: 0.0,
        scale: 1.0,
    });
    let w = calibration.naive_weight;
    let point: Vec<f64> = (0..horizon)
        .map(|i| naive_blend(band.point[i], seasonal_naive(y, y.len(), i, season), w))
        .collect();
    let half = |i: usize| calibration.scale * (band.upper[i] - band.lower[i]) / 2.0;
    let band = Band {
        lower: (0..horizon).map(|i| point[i] - half(i)).collect(),
        upper: (0..horizon).map(|i| point[i] + half(i)).collect(),
        point,
        model: if w > 0.0 {
            format!("{}+{w}·seasonal-naive", band.model)
        } else {
            band.model
        },
    };
    if diverged(&band, stats) {
        return fallback(y, step, horizon, coverage, &format!("{model} diverged"));
    }
    band
}

/// What the history says about the scale a band may have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryStats {
    pub min: f64,
    pub max: f64,
    /// `max - min`; for a constant series [`CONSTANT_RELATIVE`] of its
    /// magnitude (0 for a series constant at 0).
    pub range: f64,
    /// The robust standard deviation of the noise: of the step-to-step
    /// changes of the latest [`TREND_POINTS`], over √2 ([`noise_sd`]).
    pub noise: f64,
}

impl HistoryStats {
    /// The statistics of the finite values of `y`.
    pub fn of(y: &[f64]) -> HistoryStats {
        let (min, max) = y
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let range = if max - min > f64::EPSILON * max.abs().max(1.0) {
            max - min
        } else {
            CONSTANT_RELATIVE * max.abs()
        };
        let known: Vec<f64> = recent(y).iter().copied().filter(|v| v.is_finite()).collect();
        HistoryStats {
            min,
            max,
            range,
            noise: noise_sd(&known),
        }
    }

    /// The band's limits: [`MAX_RANGES_BEYOND`] ranges past the extremes.
    pub fn limits(&self) -> (f64, f64) {
        let beyond = MAX_RANGES_BEYOND * self.range;
        (self.min - beyond, self.max + beyond)
    }
}

/// A published band never reaches further than this many observed ranges
/// (max − min of the history) below its minimum or above its maximum:
/// the whole band is at most `1 + 2·MAX_RANGES_BEYOND` ranges wide.
pub const MAX_RANGES_BEYOND: f64 = 1.0;
/// A model whose band reaches further than this many observed ranges past
/// the history's extremes, or whose point forecast leaves
/// [`MAX_RANGES_BEYOND`] of them, has diverged: a fallback model replaces it.
pub const DIVERGED_RANGES: f64 = 2.0;
/// A constant series' band: its value ± this share of its magnitude (it
/// shows no noise to measure a width by). Also its "range".
pub const CONSTANT_RELATIVE: f64 = 0.1;
/// The narrowest band: never less than this share of the series' scale
/// (its range or magnitude) either side of the point, whatever the noise.
pub const MIN_RELATIVE_HALF_WIDTH: f64 = 1e-3;

/// Whether a model's band is unusable: a value that is not finite, a point
/// forecast more than [`MAX_RANGES_BEYOND`] ranges outside the history's
/// extremes, or a bound more than [`DIVERGED_RANGES`] ranges outside them.
pub fn diverged(band: &Band, stats: &HistoryStats) -> bool {
    let (lo, hi) = stats.limits();
    let far = DIVERGED_RANGES * stats.range;
    let values = band.point.iter().chain(&band.lower).chain(&band.upper);
    !values.clone().all(|v| v.is_finite())
        || band.point.iter().any(|p| *p < lo || *p > hi)
        || band.lower.iter().any(|l| *l < stats.min - far)
        || band.upper.iter().any(|u| *u > stats.max + far)
}

/// The fallback for a model that diverged: seasonal naive when the history
/// holds two of its shortest seasons, else the robust level model. `why`
/// goes into the model name.
fn fallback(y: &[f64], step: Duration, horizon: usize, coverage: f64, why: &str) -> Band {
    match shortest_season(step, y.len()) {
        Some(season) => {
            let mut band = seasonal_naive_band(y, season, horizon, coverage);
            band.model = format!("seasonal-naive[{season}] ({why})");
            band
        }
        None => {
            let mut band = level_band(y, horizon, coverage);
            band.model = format!("{} ({why})", band.model);
            band
        }
    }
}

/// Seasonal naive: the value a whole number of seasons earlier, with a
/// band from the split-conformal quantile of its one-season errors over
/// the latest [`TREND_POINTS`].
fn seasonal_naive_band(y: &[f64], season: usize, horizon: usize, coverage: f64) -> Band {
    let from = y.len().saturating_sub(TREND_POINTS).max(season);
    let mut errors: Vec<f64> = (from..y.len()).map(|t| (y[t] - y[t - season]).abs()).collect();
    errors.sort_by(f64::total_cmp);
    let half = if errors.is_empty() {
        0.0
    } else {
        let rank = (coverage * (errors.len() + 1) as f64).ceil() as usize;
        errors[rank.clamp(1, errors.len()) - 1]
    };
    let point: Vec<f64> = (0..horizon).map(|i| seasonal_naive(y, y.len(), i, season)).collect();
    Band {
        lower: point.iter().map(|p| p - half).collect(),
        upper: point.iter().map(|p| p + half).collect(),
        point,
        model: format!("seasonal-naive[{season}]"),
    }
}

/// The robust level model: the median of the latest [`TREND_POINTS`],
/// ± the coverage's normal quantile times their robust spread (1.4826 ·
/// median absolute deviation). A few spikes move neither.
pub fn level_band(y: &[f64], horizon: usize, coverage: f64) -> Band {
    let window: Vec<f64> = recent(y).iter().copied().filter(|v| v.is_finite()).collect();
    let center = median(&window);
    let deviations: Vec<f64> = window.iter().map(|v| v - center).collect();
    flat(
        center,
        normal_quantile(coverage) * robust_sd(&deviations),
        horizon,
        "robust-level",
    )
}

/// The median of `values` (NaN when empty).
fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A robust standard deviation of `values` around their median: 1.4826 ·
/// the median absolute deviation, or, when more than half the values are
/// equal (MAD 0), 1.2533 · the mean absolute deviation; 0 for constants.
pub fn robust_sd(values: &[f64]) -> f64 {
    let center = median(values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    let mad = median(&deviations);
    if mad > 0.0 {
        return 1.4826 * mad;
    }
    if deviations.is_empty() {
        return 0.0;
    }
    1.2533 * deviations.iter().sum::<f64>() / deviations.len() as f64
}

/// The noise of a series: the robust standard deviation of its
/// step-to-step changes over √2 (for white noise, exactly its standard
/// deviation; a smooth cycle or trend barely moves it).
pub fn noise_sd(y: &[f64]) -> f64 {
    let changes: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
    if changes.is_empty() {
        return 0.0;
    }
    robust_sd(&changes) / std::f64::consts::SQRT_2
}

/// Holds a band to what the history supports, step by step: the point
/// within the limits ([`HistoryStats::limits`], and at or above 0 when
/// `non_negative`); each bound at least the noise floor away from the
/// point (the coverage's normal quantile times the noise, and at least
/// [`MIN_RELATIVE_HALF_WIDTH`] of the range); each bound within the limits.
/// The width stays positive unless the series is constant at 0.
pub fn guard(mut band: Band, stats: &HistoryStats, coverage: f64, non_negative: bool) -> Band {
    let (mut lo, hi) = stats.limits();
    if non_negative {
        lo = lo.max(0.0);
    }
    let floor = (normal_quantile(coverage) * stats.noise).max(MIN_RELATIVE_HALF_WIDTH * stats.range);
    for i in 0..band.point.len() {
        let point = band.point[i].clamp(lo, hi);
        band.point[i] = point;
        band.lower[i] = band.lower[i].min(point - floor).clamp(lo, hi);
        band.upper[i] = band.upper[i].max(point + floor).clamp(lo, hi);
    }
    band
}

/// Why a band is degenerate, if it is: a bound that is not finite, zero
/// (or negative) width, a lower bound below 0 when all of `history` is at
/// or above 0, or a bound past [`HistoryStats::limits`]. Counted by
/// `homeostat eval forecast`; [`forecast`] never returns one unless the
/// history is constant at 0.
pub fn degenerate(band: &Band, history: &[f64]) -> Option<String> {
    let stats = HistoryStats::of(history);
    let (lo, hi) = stats.limits();
    let slack = 1e-9 * (stats.max.abs().max(stats.min.abs()) + stats.range);
    for i in 0..band.point.len() {
        let (l, u) = (band.lower[i], band.upper[i]);
        let why = if !(l.is_finite() && u.is_finite()) {
            "a bound is not finite"
        } else if u - l <= 0.0 {
            "zero width"
        } else if stats.min >= 0.0 && l < 0.0 {
            "below 0 for a series that never was"
        } else if l < lo - slack || u > hi + slack {
            "wider than the bound"
        } else {
            continue;
        };
        return Some(format!("step {i}: {why} [{l}, {u}]"));
    }
    None
}

/// Points held back to calibrate the band, at least (see [`forecast`]).
pub const CALIBRATION_POINTS: usize = 48;
/// The most forecasts made to calibrate one band: with one-step horizons,
/// 24 errors put the conformal 95% quantile at their largest (coverage
/// 24/25 on average); fewer could not reach 95%.
const CALIBRATION_ORIGINS: usize = 24;
/// Weights of the seasonal-naive forecast in the point forecasts tried
/// (here, and by the anomaly scorer).
pub const NAIVE_WEIGHTS: [f64; 3] = [0.0, 0.5, 1.0];

/// The point forecast that gives seasonal naive's `naive` the weight
/// `weight` (one of [`NAIVE_WEIGHTS`]) beside the model's `model`.
pub fn naive_blend(model: f64, naive: f64, weight: f64) -> f64 {
    (1.0 - weight) * model + weight * naive
}

/// The season of the seasonal-naive forecast: the shortest seasonal period
/// (a day) when there is one, else 1 (the last value).
fn naive_season(step: Duration, n: usize) -> usize {
    shortest_season(step, n).unwrap_or(1)
}

/// The shortest seasonal period `n` points at `step` support (a day, when
/// the step divides it), if any.
pub fn shortest_season(step: Duration, n: usize) -> Option<usize> {
    seasonal_periods(step, n).first().copied()
}

/// The seasonal-naive forecast `i` steps after `y[..origin]`: the value a
/// whole number of seasons earlier.
fn seasonal_naive(y: &[f64], origin: usize, i: usize, season: usize) -> f64 {
    y[origin + i - season * (1 + i / season)]
}

/// What the latest points say about the forecast (see [`calibrate`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Calibration {
    /// Weight of the seasonal-naive forecast in the point forecast.
    naive_weight: f64,
    /// Factor on the model's band half-width.
    scale: f64,
}

/// Forecasts the latest points from the past at the horizon asked for —
/// the last `k·horizon` points, `k` forecasts of `horizon` steps from
/// origins `horizon` apart (k ≤ 24, at least 48 points when the horizon is
/// short) — so that every error is measured at the lead time it will be
/// used at. The point forecast is the blend of the model and seasonal naive
/// (weights [`NAIVE_WEIGHTS`]) with the least absolute error there; the
/// scale is the conformal quantile, rank ⌈(m + 1)·coverage⌉ of `m`, of its
/// errors relative to each forecast's model half-width. `None` when no
/// calibration forecast could be made.
fn calibrate(y: &[f64], step: Duration, horizon: usize, coverage: f64, season: usize) -> Option<Calibration> {
    // At least four fifths of the history are left to fit on (and a season
    // for the naive forecast); a horizon longer than the rest is calibrated
    // on its first steps.
    let lead = horizon.min(y.len() / 5).max(1);
    let origins = CALIBRATION_POINTS
        .div_ceil(lead)
        .clamp(1, CALIBRATION_ORIGINS)
        .min(y.len().saturating_sub(season) / 5 / lead);
    // Per weight, the ratios |error| / half-width.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::with_capacity(origins * lead); NAIVE_WEIGHTS.len()];
    for k in 1..=origins {
        let origin = y.len() - k * lead;
        let Some(check) = model_band(&y[..origin], step, lead, coverage) else {
            continue;
        };
        for i in 0..lead {
            let half = ((check.upper[i] - check.lower[i]) / 2.0).max(f64::MIN_POSITIVE);
            let naive = seasonal_naive(y, origin, i, season);
            for (w, ratios) in NAIVE_WEIGHTS.iter().zip(&mut ratios) {
                let point = naive_blend(check.point[i], naive, *w);
                ratios.push((y[origin + i] - point).abs() / half);
            }
        }
    }
    // The least mean ratio is the least absolute error: the half-widths are
    // the same for every weight.
    let mean = |r: &Vec<f64>| r.iter().sum::<f64>() / r.len() as f64;
    let (best, mut ratios) = ratios
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .min_by(|(_, a), (_, b)| mean(a).total_cmp(&mean(b)))?;
    ratios.sort_by(f64::total_cmp);
    Some(Calibration {
        naive_weight: NAIVE_WEIGHTS[best],
        scale: conformal_scale(&ratios, coverage).clamp(MIN_SCALE, MAX_SCALE),
    })
}

/// The split-conformal quantile of sorted `ratios` (|error| / model
/// half-width at `coverage`): rank ⌈(m + 1)·coverage⌉ of `m`. A coverage
/// above m/(m + 1) asks for a rank past the largest ratio; the largest is
/// then taken as the quantile at m/(m + 1) and carried to `coverage` in the
/// proportion of the model's own (normal) quantiles, so that a higher
/// coverage still widens the band instead of every coverage above 0.96
/// (with 48 errors) giving the same one.
fn conformal_scale(ratios: &[f64], coverage: f64) -> f64 {
    let m = ratios.len();
    let rank = (coverage * (m + 1) as f64).ceil() as usize;
    if rank <= m {
        return ratios[rank.max(1) - 1];
    }
    let reachable = m as f64 / (m + 1) as f64;
    ratios[m - 1] * normal_quantile(coverage) / normal_quantile(reachable)
}

/// Bounds of the calibration's scaling of the model's band.
const MIN_SCALE: f64 = 0.5;
const MAX_SCALE: f64 = 20.0;

/// The model's own forecast and band, uncalibrated, if a model fits (see
/// [`forecast`] for the calibration).
pub fn model_band(y: &[f64], step: Duration, horizon: usize, coverage: f64) -> Option<Band> {
    if y.len() < MIN_MODEL_POINTS {
        return None;
    }
    // Large values are fitted scaled down by a power of two (exact, and
    // positive, so multiplicative models stay possible): AutoETS' optimiser
    // has absolute tolerances, and on values near 1e50 it never converged.
    let largest = y.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    if largest > MAX_UNSCALED {
        let scale = 2.0_f64.powi(-(largest.log2().ceil() as i32));
        let scaled: Vec<f64> = y.iter().map(|v| v * scale).collect();
        let band = model_band(&scaled, step, horizon, coverage)?;
        let unscale = |v: Vec<f64>| -> Option<Vec<f64>> {
            let v: Vec<f64> = v.into_iter().map(|x| x / scale).collect();
            v.iter().all(|x| x.is_finite()).then_some(v)
        };
        return Some(Band {
            point: unscale(band.point)?,
            lower: unscale(band.lower)?,
            upper: unscale(band.upper)?,
            model: band.model,
        });
    }
    let periods = seasonal_periods(step, y.len());
    let (forecast, model) = if periods.is_empty() {
        let fitted = AutoETS::non_seasonal().fit(recent(y)).ok()?;
        (fitted.predict(horizon, coverage).ok()?, "ets".to_owned())
    } else {
        (
            mstl_forecast(y, &periods, horizon, coverage)?,
            format!("mstl{periods:?}+ets"),
        )
    };
    let intervals = forecast.intervals?;
    let values = forecast.point.iter().chain(&intervals.lower).chain(&intervals.upper);
    if forecast.point.len() != horizon || !values.clone().all(|v| v.is_finite()) {
        return None;
    }
    Some(Band {
        point: forecast.point,
        lower: intervals.lower,
        upper: intervals.upper,
        model,
    })
}

/// Series with a value larger than this are fitted scaled (see [`model_band`]).
const MAX_UNSCALED: f64 = 1e9;

/// The points the trend model is fitted to, at most: the trend a short
/// forecast needs is recent, and AutoETS' cost grows with what it sees.
pub const TREND_POINTS: usize = 1440;

fn recent(y: &[f64]) -> &[f64] {
    &y[y.len().saturating_sub(TREND_POINTS)..]
}

/// MSTL's decomposition of `y`, AutoETS on the latest [`TREND_POINTS`] of
/// the deseasonalised series, and each seasonal
/// component's last cycle added back, smoothed along the cycle
/// ([`smooth_cycle`]).
fn mstl_forecast(y: &[f64], periods: &[usize], horizon: usize, coverage: f64) -> Option<augurs::Forecast> {
    // In f32, as augurs' MSTLModel decomposes.
    let y32: Vec<f32> = y.iter().map(|v| *v as f32).collect();
    let fit = MstlParams::new().fit(&y32, periods).ok()?;
    let deseasonalised: Vec<f64> = fit
        .trend()
        .iter()
        .zip(fit.remainder())
        .map(|(trend, remainder)| f64::from(trend + remainder))
        .collect();
    let trend = AutoETS::non_seasonal().fit(recent(&deseasonalised)).ok()?;
    let mut forecast = trend.predict(horizon, coverage).ok()?;
    for (&period, component) in periods.iter().zip(fit.seasonal()) {
        let last: Vec<f64> = component[component.len() - period..]
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let cycle = smooth_cycle(&last);
        let intervals = forecast.intervals.as_mut()?;
        // The last cycle starts a whole period before the first step.
        for (i, value) in cycle.iter().cycle().take(horizon).enumerate() {
            forecast.point[i] += value;
            intervals.lower[i] += value;
            intervals.upper[i] += value;
        }
    }
    Some(forecast)
}

/// The fraction of a seasonal period averaged over on each side of a phase
/// by [`smooth_cycle`].
const CYCLE_SMOOTHING: f64 = 0.01;

/// A seasonal cycle smoothed along the phase: a circular moving average
/// over ±1% of the period. MSTL estimates each phase from the same phase
/// in the few cycles the history holds (seven for a week of a daily
/// cycle), so the last cycle carries a good part of their noise into every
/// forecast; neighbouring phases of a real cycle differ far less than
/// that noise. Measured on the forecast bench (1-minute data, a daily
/// cycle), see docs/BENCHMARKS.md ("Third round").
fn smooth_cycle(cycle: &[f64]) -> Vec<f64> {
    let period = cycle.len();
    let half = (CYCLE_SMOOTHING * period as f64).round() as usize;
    let width = 2 * half + 1;
    let at = |i: usize| cycle[i % period];
    // A running sum around the circle: the window of phase p is
    // p − half ..= p + half (mod period).
    let mut sum: f64 = (0..width).map(|k| at(period - half + k)).sum();
    let mut out = Vec::with_capacity(period);
    for phase in 0..period {
        out.push(sum / width as f64);
        sum += at(phase + half + 1) - at(phase + period - half);
    }
    out
}

fn flat(value: f64, half_width: f64, horizon: usize, model: &str) -> Band {
    Band {
        point: vec![value; horizon],
        lower: vec![value - half_width; horizon],
        upper: vec![value + half_width; horizon],
        model: model.to_owned(),
    }
}

/// The last value, with a band from the spread of step-to-step changes.
fn last_value(y: &[f64], horizon: usize, coverage: f64) -> Band {
    let changes: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
    let sd = if changes.is_empty() {
        0.0
    } else {
        let mean = changes.iter().sum::<f64>() / changes.len() as f64;
        (changes.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / changes.len() as f64).sqrt()
    };
    flat(
        *y.last().unwrap_or(&0.0),
        normal_quantile(coverage) * sd,
        horizon,
        "last-value",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn periods_follow_the_step_and_the_history() {
        let five = Duration::from_secs(300);
        assert_eq!(seasonal_periods(five, 100), Vec::<usize>::new());
        assert_eq!(seasonal_periods(five, 576), vec![288]);
        assert_eq!(seasonal_periods(five, 4032), vec![288, 2016]);
        assert_eq!(seasonal_periods(MINUTE, 10_080), vec![1440]);
        // Seven minutes divide a week but not a day; thirteen divide neither.
        assert_eq!(seasonal_periods(Duration::from_secs(7 * 60), 100_000), vec![1440]);
        assert_eq!(
            seasonal_periods(Duration::from_secs(13 * 60), 100_000),
            Vec::<usize>::new()
        );
        assert_eq!(
            seasonal_periods(Duration::from_secs(2 * DAY), 1000),
            Vec::<usize>::new()
        );
    }

    /// Smoothing along the phase removes noise that changes from one phase
    /// to the next, keeps a cycle's shape and mean, and wraps around.
    #[test]
    fn the_carried_cycle_is_smoothed_along_the_phase() {
        let period = 400; // ±4 phases
        let shape = |p: usize| 10.0 * (2.0 * std::f64::consts::PI * p as f64 / period as f64).sin();
        let cycle: Vec<f64> = (0..period)
            .map(|p| shape(p) + if p % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let smoothed = smooth_cycle(&cycle);
        assert_eq!(smoothed.len(), period);
        let worst = (0..period).map(|p| (smoothed[p] - shape(p)).abs()).fold(0.0, f64::max);
        assert!(worst < 0.15, "off the shape by {worst}");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean(&smoothed) - mean(&cycle)).abs() < 1e-9);
        // Short periods (hourly data, a daily cycle) are left as they are.
        let hourly: Vec<f64> = (0..24).map(f64::from).collect();
        assert_eq!(smooth_cycle(&hourly), hourly);
    }

    /// Past the coverage its errors can reach (48 errors: 48/49), the
    /// conformal scale still grows with the coverage asked for.
    #[test]
    fn a_higher_coverage_than_the_errors_reach_still_widens_the_band() {
        let ratios: Vec<f64> = (1..=48).map(f64::from).collect();
        assert_eq!(conformal_scale(&ratios, 0.9), 45.0);
        assert_eq!(conformal_scale(&ratios, 48.0 / 49.0), 48.0);
        let scales: Vec<f64> = [0.95, 0.97, 0.99, 0.995, 0.999]
            .iter()
            .map(|c| conformal_scale(&ratios, *c))
            .collect();
        assert!(scales.windows(2).all(|w| w[0] < w[1]), "{scales:?}");
        // In the model's proportion: z(0.99) / z(48/49) = 2.5758 / 2.3187.
        assert!((scales[2] - 48.0 * 2.575_829 / normal_quantile(48.0 / 49.0)).abs() < 1e-3);

        // And so does a whole forecast's band, on noisy data.
        let y: Vec<f64> = (0..600).map(|i| 10.0 + ((i * 7919) % 101) as f64 / 50.0).collect();
        let width = |coverage| {
            let band = forecast(&y, MINUTE, 10, coverage).unwrap();
            band.upper[0] - band.lower[0]
        };
        assert!(
            width(0.95) < width(0.99) && width(0.99) < width(0.995),
            "{} {} {}",
            width(0.95),
            width(0.99),
            width(0.995)
        );
    }

    /// Huge values (here ±1e300, alternating) are forecast, quickly, not
    /// fitted for ever; large ones give the same band as their scaled copy.
    #[test]
    fn huge_values_are_fitted_scaled() {
        let huge: Vec<f64> = (0..400).map(|i| if i % 2 == 0 { 1e300 } else { -1e300 }).collect();
        let started = std::time::Instant::now();
        let band = forecast(&huge, MINUTE, 5, 0.95).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        assert!(band.point.iter().chain(&band.upper).all(|v| v.is_finite()), "{band:?}");
        let small: Vec<f64> = (0..400).map(|i| 1.0 + ((i * 7919) % 101) as f64 / 50.0).collect();
        let large: Vec<f64> = small.iter().map(|v| v * 2f64.powi(40)).collect();
        let (a, b) = (
            model_band(&small, MINUTE, 5, 0.95).unwrap(),
            model_band(&large, MINUTE, 5, 0.95).unwrap(),
        );
        for (x, y) in a.point.iter().zip(&b.point) {
            assert!((x * 2f64.powi(40) - y).abs() <= 1e-9 * y.abs(), "{x} vs {y}");
        }
    }

    fn flat_band(point: f64, half: f64) -> Band {
        flat(point, half, 3, "model")
    }

    /// `diverged` catches what the issue saw (±8.75e29, a point far off);
    /// `guard` widens a band to the noise floor, never to zero width, cuts
    /// it at one range past the extremes and at 0 for a non-negative series.
    #[test]
    fn bands_are_held_to_what_the_history_supports() {
        let y: Vec<f64> = (0..200).map(|i| 10.0 + ((i * 7919) % 11) as f64 / 10.0).collect();
        let stats = HistoryStats::of(&y);
        assert_eq!((stats.min, stats.max, stats.range), (10.0, 11.0, 1.0));
        assert!(stats.noise > 0.01 && stats.noise < 1.0, "{stats:?}");
        assert!(!diverged(&flat_band(10.5, 0.5), &stats));
        assert!(!diverged(&flat_band(10.5, 2.4), &stats), "clamped, not replaced");
        assert!(diverged(&flat_band(10.5, f64::NAN), &stats));
        assert!(diverged(&flat_band(10.5, 8.75e29), &stats));
        assert!(diverged(&flat_band(12.5, 0.1), &stats), "point more than a range off");

        let narrow = guard(flat_band(10.5, 0.0), &stats, 0.99, true);
        let floor = normal_quantile(0.99) * stats.noise;
        assert!(
            (narrow.upper[0] - narrow.lower[0] - 2.0 * floor).abs() < 1e-9,
            "{narrow:?}"
        );
        let wide = guard(flat_band(10.5, 2.4), &stats, 0.99, true);
        assert_eq!((wide.lower[0], wide.upper[0]), (9.0, 12.0));
        assert_eq!(degenerate(&wide, &y), None);
        assert!(degenerate(&flat_band(10.5, 2.4), &y)
            .unwrap()
            .contains("wider than the bound"));
        assert!(degenerate(&flat_band(10.5, 0.0), &y).unwrap().contains("zero width"));

        // A latency: never below 0, and the point neither.
        let latency: Vec<f64> = (0..200).map(|i| 0.0005 + ((i * 7919) % 11) as f64 / 1000.0).collect();
        let stats = HistoryStats::of(&latency);
        let guarded = guard(flat_band(0.0001, 0.01), &stats, 0.99, true);
        assert!(
            guarded.lower[0] == 0.0 && guarded.point[0] >= 0.0 && guarded.upper[0] > 0.0,
            "{guarded:?}"
        );
        assert!(degenerate(&flat_band(0.002, 0.01), &latency)
            .unwrap()
            .contains("below 0"));
        // `non_negative: true` clamps a history that dipped below 0; `false` never does.
        let mut dipped = latency.clone();
        dipped[3] = -0.001;
        let forced = forecast_with(
            &dipped,
            MINUTE,
            3,
            0.99,
            Options {
                non_negative: Some(true),
            },
        )
        .unwrap();
        assert!(forced.lower.iter().all(|l| *l >= 0.0), "{forced:?}");
        let free = forecast_with(
            &latency,
            MINUTE,
            3,
            0.9999,
            Options {
                non_negative: Some(false),
            },
        )
        .unwrap();
        let clamped = forecast_with(&latency, MINUTE, 3, 0.9999, Options::default()).unwrap();
        assert!(clamped.lower.iter().all(|l| *l >= 0.0), "{clamped:?}");
        assert!(free.lower[0] <= clamped.lower[0], "{free:?} vs {clamped:?}");
    }

    /// A diverged model falls back to seasonal naive when two seasons are
    /// in reach, else to the robust level model, which a spike moves not.
    #[test]
    fn diverged_models_fall_back_to_seasonal_naive_or_a_robust_level() {
        let five = Duration::from_secs(300);
        let cycle: Vec<f64> = (0..3 * 288)
            .map(|i| 5.0 + 2.0 * (2.0 * std::f64::consts::PI * i as f64 / 288.0).sin())
            .collect();
        let band = fallback(&cycle, five, 6, 0.99, "mstl[288]+ets diverged");
        assert_eq!(band.model, "seasonal-naive[288] (mstl[288]+ets diverged)");
        assert_eq!(band.point, cycle[2 * 288..2 * 288 + 6].to_vec());
        let mut spiky: Vec<f64> = (0..120).map(|i| 0.005 + ((i * 7919) % 11) as f64 / 1e5).collect();
        spiky[50] = 20.0;
        let band = fallback(&spiky, Duration::from_secs(5), 6, 0.99, "ets diverged");
        assert_eq!(band.model, "robust-level (ets diverged)");
        assert!(band.upper[0] < 0.01 && band.lower[0] > 0.0, "{band:?}");
    }

    #[test]
    fn counters_become_rates_across_resets() {
        let rate = counter_rate(&[10.0, 70.0, 130.0, 30.0, 90.0], MINUTE);
        assert_eq!(rate, vec![1.0, 1.0, 0.5, 1.0]);
    }

    #[test]
    fn gaps_are_interpolated_and_ends_held() {
        let filled = fill_gaps(&[f64::NAN, 1.0, f64::NAN, f64::INFINITY, 4.0, f64::NAN]).unwrap();
        assert_eq!(filled, vec![1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        assert_eq!(fill_gaps(&[f64::NAN, f64::NAN]), None);
    }

    #[test]
    fn the_normal_tail_and_quantile_match_tables() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.959_964) - 0.025).abs() < 1e-7);
        assert!((normal_tail(-1.0) - 0.841_344_7).abs() < 1e-6);
        // 6 sigma: 9.866e-10, relative error well under 1e-6.
        assert!((normal_tail(6.0) / 9.865_876_45e-10 - 1.0).abs() < 1e-6);
        assert!((normal_quantile(0.95) - 1.959_964).abs() < 1e-5);
    }

    #[test]
    fn bad_input_is_an_error_or_a_fallback_never_a_panic() {
        assert_eq!(forecast(&[1.0], MINUTE, 3, 1.5), Err(ForecastError::Coverage(1.5)));
        assert_eq!(forecast(&[1.0], Duration::ZERO, 3, 0.9), Err(ForecastError::Step));
        assert_eq!(forecast(&[f64::NAN; 5], MINUTE, 3, 0.9), Err(ForecastError::NoData));
        let constant = forecast(&[7.0; 50], MINUTE, 3, 0.9).unwrap();
        assert_eq!((constant.point, constant.model.as_str()), (vec![7.0; 3], "constant"));
        let short = forecast(&[1.0, 2.0, 1.0, 2.0], MINUTE, 2, 0.9).unwrap();
        assert_eq!(short.model, "last-value");
        assert_eq!(short.point, vec![2.0, 2.0]);
        assert!(short.lower[0] < 2.0 && short.upper[0] > 2.0);
    }

    /// Hourly data, forecast one hour ahead from 40 rolling origins: the
    /// band, calibrated at that lead time, holds about 95% of what follows.
    #[test]
    fn the_band_is_calibrated_at_the_horizon_asked_for() {
        let hour = Duration::from_secs(3600);
        let mut rng = 0x2545_F491_4F6C_DD1D_u64;
        let mut normal = || {
            // Sum of twelve uniforms minus six: close enough to a standard normal.
            (0..12)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    (rng >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        };
        let y: Vec<f64> = (0..24 * 30)
            .map(|i| 20.0 + 5.0 * (2.0 * std::f64::consts::PI * i as f64 / 24.0).sin() + normal())
            .collect();
        let mut covered = 0;
        for origin in (24 * 20..24 * 30).step_by(6) {
            let band = forecast(&y[origin - 24 * 8..origin], hour, 1, 0.95).unwrap();
            covered += usize::from(band.lower[0] <= y[origin] && y[origin] <= band.upper[0]);
        }
        assert!((34..=40).contains(&covered), "{covered}/40 covered");
    }

    /// A day that repeats exactly is forecast exactly: the seasonal-naive
    /// forecast wins the calibration.
    #[test]
    fn an_exactly_repeating_day_is_forecast_by_seasonal_naive() {
        let day: Vec<f64> = (0..288)
            .map(|i| if (i / 36) % 2 == 0 { 10.0 } else { 40.0 + (i % 7) as f64 })
            .collect();
        let y: Vec<f64> = day.iter().cycle().take(288 * 8).copied().collect();
        let band = forecast(&y, Duration::from_secs(300), 12, 0.95).unwrap();
        assert!(band.model.ends_with("+1·seasonal-naive"), "{}", band.model);
        assert_eq!(band.point, day[..12].to_vec());
        assert!(band.lower.iter().zip(&band.point).all(|(l, p)| l <= p));
    }

    /// Two weeks and a day of a noisy daily cycle at 5 minutes: the model is
    /// seasonal, and the next hours' band follows the cycle and holds most
    /// of the truth.
    #[test]
    fn a_daily_cycle_is_forecast_with_a_band_that_covers_it() {
        let day = 288;
        // Uniform noise in [-0.5, 0.5) from a fixed-seed xorshift.
        let noise = |i: usize| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            x ^= x >> 33;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let truth = |i: usize| 100.0 + 30.0 * (2.0 * std::f64::consts::PI * i as f64 / day as f64).sin();
        let n = 15 * day;
        let history: Vec<f64> = (0..n).map(|i| truth(i) + 4.0 * noise(i)).collect();
        let band = forecast(&history, Duration::from_secs(300), 36, 0.95).unwrap();
        assert!(band.model.starts_with("mstl[288, 2016]"), "{}", band.model);
        let mut covered = 0;
        for h in 0..36 {
            let actual = truth(n + h) + 4.0 * noise(n + h);
            assert!(
                (band.point[h] - truth(n + h)).abs() < 5.0,
                "step {h}: {} vs {}",
                band.point[h],
                truth(n + h)
            );
            covered += usize::from(band.lower[h] <= actual && actual <= band.upper[h]);
        }
        let debug: Vec<String> = (0..36)
            .map(|h| {
                format!(
                    "{:.1} [{:.1}, {:.1}] {:.1}",
                    band.point[h],
                    band.lower[h],
                    band.upper[h],
                    truth(n + h) + 4.0 * noise(n + h)
                )
            })
            .collect();
        assert!(covered >= 32, "{covered}/36 covered: {debug:#?}");
    }
}
