//! Offline evaluation of the forecasting and anomaly scoring, on data no
//! one here made: `homeostat eval nab` (anomaly scores on a NAB-style
//! corpus, scored by NAB's rules in [`nab`]) and `homeostat eval forecast`
//! (1-hour-ahead accuracy and band coverage on the same series).

pub mod nab;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

use crate::anomaly::{self, Rule, Scored, ScorerConfig};
use homeostat_core::{detect, forecast};
use nab::{NabError, Series, PROFILES};

/// The detection threshold fixed in advance (a one-in-100,000 run of
/// surprises for the band, see [`crate::anomaly`]), reported beside the best
/// one. It was fixed before the first run on the development set and stays
/// so, whichever rules have scored since (the memory alarms at 0.75).
pub const FIXED_THRESHOLD: f64 = detect::THRESHOLD;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Nab(#[from] NabError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

type Result<T, E = EvalError> = std::result::Result<T, E>;

/// The sampling step of a series: the median gap between its timestamps.
pub fn step_of(series: &Series) -> Duration {
    let mut gaps: Vec<i64> = series
        .timestamps
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    Duration::from_secs(gaps.get(gaps.len() / 2).copied().unwrap_or(60) as u64)
}

/// Runs `work` on every series on all cores, with a progress bar (hidden
/// when stderr is not a terminal); results in the corpus' order.
fn each_series<T: Send>(corpus: &[Series], what: &str, work: impl Fn(&Series) -> T + Sync) -> Vec<T> {
    let bar = indicatif::ProgressBar::new(corpus.len() as u64).with_message(what.to_owned());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files, {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..corpus.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(series) = corpus.get(i) else { break };
                let result = work(series);
                results.lock().expect("no worker panics while holding the lock")[i] = Some(result);
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    results
        .into_inner()
        .expect("no worker panicked")
        .into_iter()
        .map(|r| r.expect("every series was scored"))
        .collect()
}

/// Runs of consecutive rows at or above `threshold` outside every window,
/// after the probationary period: false alarms as a person sees them.
fn false_positive_events(series: &Series, scores: &[f64], threshold: f64) -> usize {
    let mut events = 0;
    let mut in_event = false;
    for (row, score) in scores.iter().enumerate().skip(nab::probation_rows(series.len())) {
        let outside = !series.windows.iter().any(|(a, b)| (*a..=*b).contains(&row));
        let firing = outside && *score >= threshold;
        events += usize::from(firing && !in_event);
        in_event = firing;
    }
    events
}

/// How a detector's scores fare on a corpus: what `homeostat eval nab` and
/// `homeostat eval nab-score` report.
#[derive(Clone, Debug, Serialize)]
pub struct NabScores {
    pub windows: usize,
    pub fixed_threshold: f64,
    /// Per profile: `best` (threshold chosen with the labels known) and `fixed`.
    pub profiles: BTreeMap<&'static str, Value>,
    /// Per subset, the standard profile at the corpus-wide best and fixed thresholds.
    pub subsets: BTreeMap<String, Value>,
    /// The standard profile with each subset scored at the threshold best on the
    /// others ([`nab::choose`]); none with fewer than two subsets.
    pub cross_validated: Option<nab::CrossValidated>,
    /// At the fixed threshold: windows detected / windows, false-positive
    /// events (runs of rows), median delay from window start (rows).
    pub window_recall: f64,
    pub false_positive_events: usize,
    pub median_detection_delay_rows: Option<f64>,
}

/// What `homeostat eval nab` found.
#[derive(Clone, Debug, Serialize)]
pub struct NabSummary {
    pub detector: &'static str,
    pub files: usize,
    pub rows: usize,
    pub seconds: f64,
    pub peak_rss_mib: Option<f64>,
    /// The scorer's rules that scored (all but for an ablation).
    pub rules: Vec<Rule>,
    #[serde(flatten)]
    pub scores: NabScores,
}

/// Scores every series under `data` (windows from `labels`), writes the
/// results in NAB's layout under `out` (and plots with `plot`), and returns
/// the summary, also written as `out/summary.json`. Only `config.rules`
/// score (see [`ScorerConfig::rules`]). The ART rule learns for `learning`
/// points, or by default for each file's probationary period (NAB hands
/// every detector that period). The fixed threshold is the one for the
/// scores' scale ([`detect::fixed_threshold`]: 0.2 calibrated, otherwise
/// [`FIXED_THRESHOLD`]).
pub fn run_nab(
    data: &Path,
    labels: &Path,
    out: &Path,
    plot: bool,
    mut config: ScorerConfig,
    learning: Option<usize>,
) -> Result<NabSummary> {
    let started = Instant::now();
    let corpus = nab::load_corpus(data, labels)?;
    // In the scorer's order, once each: the summary names them alike.
    config.rules = Rule::ALL
        .into_iter()
        .filter(|rule| config.rules.contains(rule))
        .collect();
    let fixed = detect::fixed_threshold(config.calibrated());
    let scored = each_series(&corpus, "scoring", |series| {
        let mut config = config.clone();
        config.art.learning = learning.unwrap_or_else(|| nab::probation_rows(series.len()));
        let mut scored = anomaly::score_series(&series.values, step_of(series), &config);
        if plot && !config.rules.contains(&Rule::Band) {
            // The plot shows the band even when it does not score.
            config.rules = vec![Rule::Band];
            let band = anomaly::score_series(&series.values, step_of(series), &config);
            (scored.point, scored.lower, scored.upper) = (band.point, band.lower, band.upper);
        }
        scored
    });
    for (series, scored) in corpus.iter().zip(&scored) {
        write_results(series, &scored.score, out)?;
        if plot {
            plot_series(series, scored, fixed, out)?;
        }
    }
    let pairs: Vec<(&Series, &[f64])> = corpus
        .iter()
        .zip(&scored)
        .map(|(s, r)| (s, r.score.as_slice()))
        .collect();
    let summary = NabSummary {
        detector: "homeostat",
        files: corpus.len(),
        rows: corpus.iter().map(Series::len).sum(),
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        rules: config.rules,
        scores: nab_scores(&pairs, fixed)?.0,
    };
    write_json(&out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// Scores `pairs` (a detector's scores for each file of a corpus) by every
/// profile, at the best and the `fixed` threshold, per subset, and held out;
/// with the standard profile's folds, for a choice among detectors.
fn nab_scores(pairs: &[(&Series, &[f64])], fixed_threshold: f64) -> Result<(NabScores, Vec<nab::Fold>)> {
    let mut profiles = BTreeMap::new();
    let mut best_standard = fixed_threshold;
    for profile in &PROFILES {
        let best = nab::best_threshold(pairs, profile)?;
        let fixed = nab::score_corpus(pairs, fixed_threshold, profile)?;
        if profile.name == nab::STANDARD.name {
            best_standard = best.threshold;
        }
        profiles.insert(profile.name, json!({ "best": best, "fixed": fixed }));
    }
    let mut subsets = BTreeMap::new();
    for name in nab::subsets(pairs) {
        let part = nab::in_subset(pairs, name, true);
        let best = nab::score_corpus(&part, best_standard, &nab::STANDARD)?;
        let fixed = nab::score_corpus(&part, fixed_threshold, &nab::STANDARD)?;
        subsets.insert(
            name.to_owned(),
            // Without windows the normalised score is undefined (NaN, which
            // JSON writes as null): the false alarms say how the subset fared.
            json!({
                "files": part.len(),
                "windows": best.windows,
                "best": best.normalized,
                "fixed": fixed.normalized,
                "false_positives": { "best": best.false_positives, "fixed": fixed.false_positives },
            }),
        );
    }
    let fixed = nab::score_corpus(pairs, fixed_threshold, &nab::STANDARD)?;
    let folds = nab::folds(pairs, &nab::STANDARD)?;
    let scores = NabScores {
        windows: fixed.windows,
        fixed_threshold,
        profiles,
        subsets,
        cross_validated: nab::choose(std::slice::from_ref(&folds), fixed.windows, &nab::STANDARD)?,
        window_recall: fixed.detected_windows as f64 / fixed.windows.max(1) as f64,
        false_positive_events: pairs
            .iter()
            .map(|(s, scores)| false_positive_events(s, scores, fixed_threshold))
            .sum(),
        median_detection_delay_rows: fixed.median_delay_rows,
    };
    Ok((scores, folds))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("the summary always serializes");
    write_file(path, text + "\n")
}

fn write_file(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    let failed = |source| EvalError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)
}

/// NAB's results layout: `<dir>/<subset>/<detector>_<file>.csv` for the data
/// file `<subset>/<file>.csv`, where `dir` is the detector's directory.
fn results_path(dir: &Path, detector: &str, series: &Series) -> PathBuf {
    let (subset, file) = series.name.split_once('/').unwrap_or(("", &series.name));
    dir.join(subset).join(format!("{detector}_{file}"))
}

/// `out/homeostat/<subset>/homeostat_<file>.csv`, NAB's results layout.
fn write_results(series: &Series, scores: &[f64], out: &Path) -> Result<()> {
    let path = results_path(&out.join("homeostat"), "homeostat", series);
    let text = results_csv(series, scores).expect("CSV written to memory");
    write_file(&path, text)
}

/// A results file: `timestamp,value,anomaly_score,label`, a row per row of `series`.
fn results_csv(series: &Series, scores: &[f64]) -> csv::Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["timestamp", "value", "anomaly_score", "label"])?;
    for (row, ((timestamp, value), score)) in series.timestamps.iter().zip(&series.values).zip(scores).enumerate() {
        let label = u8::from(series.windows.iter().any(|(a, b)| (*a..=*b).contains(&row)));
        csv.write_record([
            timestamp.format("%Y-%m-%d %H:%M:%S").to_string(),
            value.to_string(),
            score.to_string(),
            label.to_string(),
        ])?;
    }
    csv.into_inner().map_err(|err| err.into_error().into())
}

/// The process' peak resident memory, from /proc (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The summary as a table.
pub fn nab_table(summary: &NabSummary) -> String {
    format!(
        "{} files, {} rows, {} windows, rules {}, {:.1} s, peak RSS {}\n\n{}",
        summary.files,
        summary.rows,
        summary.scores.windows,
        summary
            .rules
            .iter()
            .filter_map(|rule| rule.to_possible_value().map(|v| v.get_name().to_owned()))
            .collect::<Vec<_>>()
            .join(","),
        summary.seconds,
        summary.peak_rss_mib.map_or("?".to_owned(), |m| format!("{m:.0} MiB")),
        scores_table(&summary.scores)
    )
}

/// A detector's scores as tables: per profile, per subset, held out.
fn scores_table(scores: &NabScores) -> String {
    let mut out = format!(
        "| profile | best threshold | score | fixed threshold {} |\n|---|---|---|---|\n",
        scores.fixed_threshold
    );
    for (name, profile) in &scores.profiles {
        out.push_str(&format!(
            "| {name} | {:.4} | {:.2} | {:.2} |\n",
            profile["best"]["threshold"].as_f64().unwrap_or(f64::NAN),
            profile["best"]["normalized"].as_f64().unwrap_or(f64::NAN),
            profile["fixed"]["normalized"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    out.push_str(
        "\n| subset | files | windows | standard (best threshold) | standard (fixed) |\n|---|---|---|---|---|\n",
    );
    for (name, s) in &scores.subsets {
        let cell = |at: &str| match s[at].as_f64() {
            Some(score) => format!("{score:.2}"),
            None => format!("- ({} false positives)", s["false_positives"][at]),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            s["files"],
            s["windows"],
            cell("best"),
            cell("fixed")
        ));
    }
    out.push_str(&format!(
        "\nAt the fixed threshold: window recall {:.1}%, {} false-positive events, median detection delay {} rows\n",
        100.0 * scores.window_recall,
        scores.false_positive_events,
        scores
            .median_detection_delay_rows
            .map_or("-".to_owned(), |d| format!("{d:.0}"))
    ));
    if let Some(held_out) = &scores.cross_validated {
        out.push_str(&format!(
            "Each subset at the threshold best on the others (leave-one-subset-out): standard {:.2}\n",
            held_out.normalized
        ));
    }
    out
}

/// One detector's results scored by `homeostat eval nab-score`.
#[derive(Clone, Debug, Serialize)]
pub struct ScoredResults {
    /// The detector's results directory (`<subset>/<detector>_<file>.csv` in it).
    pub results: PathBuf,
    #[serde(flatten)]
    pub scores: NabScores,
}

/// What `homeostat eval nab-score` found.
#[derive(Clone, Debug, Serialize)]
pub struct NabScoreSummary {
    pub files: usize,
    pub runs: Vec<ScoredResults>,
    /// With two results or more: each subset scored with the results, and at the
    /// threshold, best on the other subsets (`picks[i].candidate` indexes `runs`).
    pub choice: Option<nab::CrossValidated>,
}

/// Scores detectors' results already written in NAB's layout, for the corpus under
/// `data` with windows from `labels`: each of `results` is a detector's directory,
/// holding `<subset>/<detector>_<file>.csv` (the detector's name is the directory's)
/// for every data file, with columns `timestamp` and `anomaly_score` at least. So
/// settings or detectors compare without rerunning them, and a choice among several
/// is measured on subsets that did not make it. One detector's scores are in memory
/// at a time. Each is also scored at `fixed_threshold`.
pub fn run_nab_score(data: &Path, labels: &Path, results: &[PathBuf], fixed_threshold: f64) -> Result<NabScoreSummary> {
    let corpus = nab::load_corpus(data, labels)?;
    let mut runs = Vec::with_capacity(results.len());
    let mut folds = Vec::with_capacity(results.len());
    for dir in results {
        // `out/homeostat/` names `homeostat`; `.` the directory it stands for.
        let detector = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .or_else(|| Some(dir.canonicalize().ok()?.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let scores = corpus
            .iter()
            .map(|series| nab::read_scores(&results_path(dir, &detector, series), series))
            .collect::<Result<Vec<Vec<f64>>, NabError>>()?;
        let pairs: Vec<(&Series, &[f64])> = corpus.iter().zip(&scores).map(|(s, r)| (s, r.as_slice())).collect();
        let (scores, run_folds) = nab_scores(&pairs, fixed_threshold)?;
        runs.push(ScoredResults {
            results: dir.clone(),
            scores,
        });
        folds.push(run_folds);
    }
    let windows = corpus.iter().map(|series| series.windows.len()).sum();
    let choice = if folds.len() > 1 {
        nab::choose(&folds, windows, &nab::STANDARD)?
    } else {
        None
    };
    Ok(NabScoreSummary {
        files: corpus.len(),
        runs,
        choice,
    })
}

/// The `eval nab-score` summary as tables: with several results, an overview
/// first and the held-out choice last.
pub fn nab_score_table(summary: &NabScoreSummary) -> String {
    let mut out = String::new();
    let standard = |scores: &NabScores, at: &str| {
        scores.profiles[nab::STANDARD.name][at]["normalized"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    if summary.runs.len() > 1 {
        let fixed = summary.runs[0].scores.fixed_threshold;
        out.push_str(&format!(
            "| # | results | standard (best threshold) | standard (fixed {fixed}) | standard (threshold held out) |\n|---|---|---|---|---|\n"
        ));
        for (index, run) in summary.runs.iter().enumerate() {
            out.push_str(&format!(
                "| {index} | {} | {:.2} | {:.2} | {} |\n",
                run.results.display(),
                standard(&run.scores, "best"),
                standard(&run.scores, "fixed"),
                run.scores
                    .cross_validated
                    .as_ref()
                    .map_or("-".to_owned(), |held_out| format!("{:.2}", held_out.normalized))
            ));
        }
        out.push('\n');
    }
    for (index, run) in summary.runs.iter().enumerate() {
        out.push_str(&format!(
            "## {index}: {} ({} files, {} windows)\n\n{}\n",
            run.results.display(),
            summary.files,
            run.scores.windows,
            scores_table(&run.scores)
        ));
    }
    if let Some(choice) = &summary.choice {
        out.push_str(&format!(
            "## The choice among them, held out\n\nEach subset scored with the results and threshold best on the other subsets (the first listed on a tie): standard {:.2}\n\n| held-out subset | chosen | ties | threshold | standard on the others | raw score held out |\n|---|---|---|---|---|---|\n",
            choice.normalized
        ));
        for pick in &choice.picks {
            let results = summary
                .runs
                .get(pick.candidate)
                .map(|run| run.results.display().to_string());
            out.push_str(&format!(
                "| {} | {}: {} | {} | {:.4} | {:.2} | {:.2} |\n",
                pick.subset,
                pick.candidate,
                results.unwrap_or_default(),
                pick.ties,
                pick.threshold,
                pick.trained,
                pick.raw
            ));
        }
    }
    out
}

/// `out/plots/<subset>/<file>.svg`: the series, its band, the windows and
/// the detections at the fixed threshold.
fn plot_series(series: &Series, scored: &Scored, threshold: f64, out: &Path) -> Result<()> {
    let path = out.join("plots").join(series.name.replace(".csv", ".svg"));
    let failed = |message: String| EvalError::Plot {
        path: path.clone(),
        message,
    };
    let mut svg = String::new();
    {
        let finite = series
            .values
            .iter()
            .chain(scored.lower.iter().chain(&scored.upper))
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        let (lo, hi) = if lo < hi { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
        let n = series.len() as f64;
        let root = SVGBackend::with_string(&mut svg, (1400, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&series.name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, lo..hi)
            .map_err(|e| failed(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("row")
            .draw()
            .map_err(|e| failed(e.to_string()))?;
        for (a, b) in &series.windows {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(*a as f64, lo), (*b as f64, hi)],
                    YELLOW.mix(0.3).filled(),
                )))
                .map_err(|e| failed(e.to_string()))?;
        }
        let line = |values: &[f64]| -> Vec<(f64, f64)> {
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| (i as f64, *v))
                .collect()
        };
        for (values, style) in [
            (&scored.lower, BLUE.mix(0.4).stroke_width(1)),
            (&scored.upper, BLUE.mix(0.4).stroke_width(1)),
            (&series.values, BLACK.stroke_width(1)),
        ] {
            chart
                .draw_series(LineSeries::new(line(values), style))
                .map_err(|e| failed(e.to_string()))?;
        }
        let detections = scored
            .score
            .iter()
            .enumerate()
            .filter(|(_, s)| **s >= threshold)
            .map(|(i, _)| Circle::new((i as f64, series.values[i]), 3, RED.filled()));
        chart.draw_series(detections).map_err(|e| failed(e.to_string()))?;
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    write_file(&path, svg)
}

/// What `homeostat eval forecast` found.
#[derive(Clone, Debug, Serialize)]
pub struct ForecastSummary {
    pub files: usize,
    pub forecasts: usize,
    /// Forecasts whose band was degenerate ([`forecast::degenerate`]: zero
    /// width, below 0 for a never-negative history, or wider than the
    /// bound); expected 0.
    pub degenerate: usize,
    /// The first few of them: file, origin and why.
    pub degenerate_examples: Vec<String>,
    pub points: usize,
    pub horizon: String,
    pub coverage_target: f64,
    /// Share of actual values inside the band.
    pub coverage: f64,
    /// Per file, the model's mean absolute error over the seasonal-naive
    /// forecast's on the same points; the mean over files (files where
    /// seasonal naive is exact are left out: the ratio is undefined).
    pub mase: f64,
    /// The median over files of the same ratio.
    pub median_file_mase: f64,
    pub seconds: f64,
    pub per_file: BTreeMap<String, Value>,
}

/// Rolling-origin forecasts `horizon` ahead, one origin per day (or per
/// tenth of a shorter series) after two days of history, skipping any whose horizon touches a labelled window
/// (anomalies are not what a forecast should be judged on).
pub fn run_forecast(data: &Path, labels: &Path, horizon: Duration, coverage: f64) -> Result<ForecastSummary> {
    let started = Instant::now();
    let corpus = nab::load_corpus(data, labels)?;
    let per_series = each_series(&corpus, "forecasting", |series| {
        forecast_series(series, horizon, coverage)
    });
    let mut per_file = BTreeMap::new();
    let (mut covered, mut points, mut forecasts) = (0, 0, 0);
    let (mut degenerate, mut degenerate_examples) = (0, Vec::new());
    let mut ratios = Vec::new();
    for (series, r) in corpus.iter().zip(&per_series) {
        covered += r.covered;
        points += r.points;
        forecasts += r.forecasts;
        degenerate += r.degenerate.len();
        for (origin, why) in r.degenerate.iter().take(3) {
            if degenerate_examples.len() < 10 {
                degenerate_examples.push(format!("{} at row {origin}: {why}", series.name));
            }
        }
        let ratio = r.model_error / r.naive_error;
        if ratio.is_finite() {
            ratios.push(ratio);
        }
        per_file.insert(
            series.name.clone(),
            json!({
                "forecasts": r.forecasts,
                "degenerate": r.degenerate.len(),
                "mase": ratio,
                "coverage": r.covered as f64 / r.points.max(1) as f64,
            }),
        );
    }
    ratios.sort_by(f64::total_cmp);
    Ok(ForecastSummary {
        files: corpus.len(),
        forecasts,
        degenerate,
        degenerate_examples,
        points,
        horizon: format!("{}s", horizon.as_secs()),
        coverage_target: coverage,
        coverage: covered as f64 / points.max(1) as f64,
        mase: ratios.iter().sum::<f64>() / ratios.len() as f64,
        median_file_mase: ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN),
        seconds: started.elapsed().as_secs_f64(),
        per_file,
    })
}

#[derive(Default)]
struct SeriesForecasts {
    model_error: f64,
    naive_error: f64,
    covered: usize,
    points: usize,
    forecasts: usize,
    /// Origin and why, per degenerate band.
    degenerate: Vec<(usize, String)>,
}

fn forecast_series(series: &Series, horizon: Duration, coverage: f64) -> SeriesForecasts {
    let step = step_of(series);
    let per_day = (86_400 / step.as_secs().max(1)) as usize;
    let h = ((horizon.as_secs_f64() / step.as_secs_f64()).round() as usize).max(1);
    let history = 15 * per_day.max(1);
    // Seasonal naive: the same time a day earlier when the step divides a
    // day, else the last value.
    let y = &series.values;
    let season = if per_day >= 2 && 86_400 % step.as_secs().max(1) == 0 && y.len() >= 2 * per_day {
        per_day
    } else {
        1
    };
    let mut result = SeriesForecasts::default();
    // Two days of history before the first origin, or half of a shorter series.
    let first = (2 * per_day)
        .min(y.len() / 2)
        .max(forecast::MIN_MODEL_POINTS)
        .max(season);
    let every = per_day.min(y.len() / 10).max(h);
    let mut origin = first;
    while origin + h <= y.len() {
        let touches_window = series
            .windows
            .iter()
            .any(|(a, b)| *a < origin + h && *b >= origin.saturating_sub(season));
        if !touches_window {
            let past = &y[origin.saturating_sub(history)..origin];
            if let Ok(band) = forecast::forecast(past, step, h, coverage) {
                result.forecasts += 1;
                if let Some(why) = forecast::degenerate(&band, past) {
                    result.degenerate.push((origin, why));
                }
                for k in 0..h {
                    let actual = y[origin + k];
                    let naive = y[origin + k - season * (1 + k / season)];
                    result.model_error += (actual - band.point[k]).abs();
                    result.naive_error += (actual - naive).abs();
                    result.covered += usize::from(band.lower[k] <= actual && actual <= band.upper[k]);
                    result.points += 1;
                }
            }
        }
        origin += every;
    }
    result
}

/// The forecast summary as a table.
pub fn forecast_table(summary: &ForecastSummary) -> String {
    format!(
        "{} files, {} forecasts of {} ({} points), {:.1} s\nMASE against seasonal naive: {:.3} mean over files, {:.3} median\n\
         Coverage of the {:.0}% band: {:.1}%\nDegenerate bands (zero width, negative for a non-negative series, \
         wider than the bound): {}\n{}",
        summary.files,
        summary.forecasts,
        summary.horizon,
        summary.points,
        summary.seconds,
        summary.mase,
        summary.median_file_mase,
        100.0 * summary.coverage_target,
        100.0 * summary.coverage,
        summary.degenerate,
        summary
            .degenerate_examples
            .iter()
            .map(|e| format!("  {e}\n"))
            .collect::<String>()
    )
}
