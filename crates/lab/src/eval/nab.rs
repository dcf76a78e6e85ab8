//! The Numenta Anomaly Benchmark (NAB) scorer, reimplemented from the published rules.
//!
//! A detector gives one anomaly score per row; a row is a *detection* when its score is
//! ≥ the threshold. The corpus is a set of CSV files (`timestamp,value`), each with
//! scoring *windows* around its labelled anomalies (given as timestamp ranges in
//! `combined_windows.json`, mapped here to inclusive row ranges).
//!
//! Rules, per file of `n` rows:
//! - The first [`probation_rows`]`(n)` rows are never scored: a detection there counts
//!   neither as a true nor as a false positive (a window lying wholly in it can only be
//!   missed).
//! - Inside a window of `width` rows ending at row `right`, row `i` sits at
//!   `y = −(right − i + 1)/width`. Only the earliest (scored) detection in a window
//!   counts; it earns `A_TP·σ(y)/σ(−1)` with σ = [`scaled_sigmoid`] (1 at the window's
//!   first row, falling towards 0 at its last). A window without one costs `−A_FN`.
//! - Every detection outside all windows costs `A_FP·σ(y)` with
//!   `y = (i − prevRight)/(prevWidth − 1)` measured from the preceding window, or `−A_FP`
//!   when no window precedes it (or the preceding window is one row wide).
//! - Normalised score = `100·(S − S_null)/(S_perfect − S_null)` with `S` the raw score
//!   summed over the corpus, `S_perfect = windows·A_TP`, `S_null = −windows·A_FN`.
//!
//! [`score_corpus`] scores at a threshold fixed in advance; [`best_threshold`] finds the
//! threshold maximising the normalised score (labels known, as NAB reports it);
//! [`folds`] and [`choose`] score each subset at a threshold, and with a detector,
//! chosen on the others (labels of the scored subset unknown). [`read_scores`] reads a
//! detector's results file, so any detector's results can be scored.
//!
//! Scores are compared with `>=`, so a NaN score is never a detection.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::Serialize;

/// A NAB cost profile: the weights of true positives, false positives and misses.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub a_tp: f64,
    pub a_fp: f64,
    pub a_fn: f64,
}

/// NAB's `standard` profile.
pub const STANDARD: Profile = Profile {
    name: "standard",
    a_tp: 1.0,
    a_fp: 0.11,
    a_fn: 1.0,
};
/// NAB's `reward_low_FP_rate` profile: false positives cost twice as much.
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP",
    a_tp: 1.0,
    a_fp: 0.22,
    a_fn: 1.0,
};
/// NAB's `reward_low_FN_rate` profile: misses cost twice as much.
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN",
    a_tp: 1.0,
    a_fp: 0.11,
    a_fn: 2.0,
};

/// The three NAB profiles, in NAB's reporting order.
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// What can go wrong loading a corpus or scoring it. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid windows file {}: {source}", path.display())]
    WindowsJson { path: PathBuf, source: serde_json::Error },
    #[error("no CSV files under {}", dir.display())]
    NoData { dir: PathBuf },
    #[error("{file}: no entry in windows file {}", windows_file.display())]
    MissingWindows { file: String, windows_file: PathBuf },
    #[error("{}: line 1: expected header `{expected}`, found `{found}`", path.display())]
    BadHeader {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("{}: line {line}: {reason}", path.display())]
    BadRow { path: PathBuf, line: usize, reason: String },
    /// `index` is the window's position in the windows file (at load) or in
    /// [`Series::windows`] (at scoring).
    #[error("{file}: window {index}: {reason}")]
    BadWindow { file: String, index: usize, reason: String },
    #[error("candidate {candidate} was scored on other subsets than the first")]
    OtherSubsets { candidate: usize },
    #[error("{file}: {found} scores for {expected} rows")]
    ScoreLength {
        file: String,
        expected: usize,
        found: usize,
    },
}

/// NAB's scaled sigmoid: `2/(1 + e^(5y)) − 1`, and exactly −1 when `y > 3`.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Rows at the start of an `n`-row file that are never scored: `min(floor(0.15·n), 750)`.
pub fn probation_rows(n: usize) -> usize {
    // floor(0.15·n) in integers, avoiding float rounding.
    (n.saturating_mul(15) / 100).min(750)
}

/// One data file: its name as in the windows file (`"subset/name.csv"`), its rows, and
/// its windows as inclusive row ranges `(first, last)`, sorted and disjoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub timestamps: Vec<NaiveDateTime>,
    pub values: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

impl Series {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the file has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Loads every `*.csv` under `data_dir` (recursively, sorted by name) with its windows
/// from `windows_file`.
///
/// A file's name is its path relative to `data_dir` with `/` separators, the key it has in
/// the windows file. A window's rows are the rows whose timestamp lies within
/// `[start, end]`; they must be contiguous and non-empty, and windows must not overlap.
/// Entries of the windows file without a CSV are ignored. Errors: a CSV without an entry
/// (named), an unparsable row (file and line), a window matching no rows, no CSV at all.
pub fn load_corpus(data_dir: &Path, windows_file: &Path) -> Result<Vec<Series>, NabError> {
    let text = read_text(windows_file)?;
    let windows: HashMap<String, Vec<(String, String)>> =
        serde_json::from_str(&text).map_err(|source| NabError::WindowsJson {
            path: windows_file.to_path_buf(),
            source,
        })?;

    let mut files = Vec::new();
    collect_csvs(data_dir, "", &mut files)?;
    if files.is_empty() {
        return Err(NabError::NoData {
            dir: data_dir.to_path_buf(),
        });
    }
    files.sort();

    let mut corpus = Vec::with_capacity(files.len());
    for (name, path) in files {
        let Some(spans) = windows.get(&name) else {
            return Err(NabError::MissingWindows {
                file: name,
                windows_file: windows_file.to_path_buf(),
            });
        };
        let (timestamps, values) = read_csv(&path)?;
        let windows = window_rows(&name, &timestamps, spans)?;
        corpus.push(Series {
            name,
            timestamps,
            values,
            windows,
        });
    }
    Ok(corpus)
}

/// Appends `(relative name, path)` of every `*.csv` under `dir`.
fn collect_csvs(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), NabError> {
    let io = |source| NabError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type().map_err(io)?.is_dir() {
            collect_csvs(&path, &format!("{name}/"), out)?;
        } else if path.extension().is_some_and(|ext| ext == "csv") && path.is_file() {
            out.push((name, path));
        }
    }
    Ok(())
}

/// Parses a NAB timestamp, with or without fractional seconds.
fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// Reads a whole file.
fn read_text(path: &Path) -> Result<String, NabError> {
    std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A CSV's header fields and, for each record that is not blank, its line number (the
/// header is line 1) and fields; read by the csv crate, fields trimmed, byte-order mark
/// dropped, records of any length (the callers say what they expected, and where). The
/// header is line 1's record: a file starting with a blank line has an empty header.
/// Errors name the file and line.
fn table<'a>(
    path: &'a Path,
    text: &'a str,
) -> (
    Vec<String>,
    impl Iterator<Item = Result<(usize, csv::StringRecord), NabError>> + 'a,
) {
    let text = text.trim_start_matches('\u{feff}');
    let mut records = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes())
        .into_records()
        .map(move |record| {
            let record = record.map_err(|err| NabError::BadRow {
                path: path.to_path_buf(),
                line: err.position().map_or(0, |p| p.line() as usize),
                reason: err.to_string(),
            })?;
            Ok((record_line(text, &record), record))
        })
        // A line of blanks is one empty field.
        .filter(|record| !matches!(record, Ok((_, fields)) if fields.len() == 1 && fields[0].is_empty()))
        .peekable();
    let header = match records.next_if(|record| matches!(record, Ok((1, _)))) {
        Some(Ok((_, fields))) => fields.iter().map(str::to_owned).collect(),
        _ => vec![String::new()],
    };
    (header, records)
}

/// The line `record` starts on. The csv crate's position is where it started reading
/// the record: before any blank lines it skipped, which are counted here.
fn record_line(text: &str, record: &csv::StringRecord) -> usize {
    let Some(position) = record.position() else {
        return 0;
    };
    let skipped = text
        .get(position.byte() as usize..)
        .unwrap_or("")
        .bytes()
        .take_while(|byte| matches!(byte, b'\r' | b'\n'))
        .filter(|byte| *byte == b'\n')
        .count();
    position.line() as usize + skipped
}

/// Reads a `timestamp,value` CSV.
fn read_csv(path: &Path) -> Result<(Vec<NaiveDateTime>, Vec<f64>), NabError> {
    let text = read_text(path)?;
    let (header, rows) = table(path, &text);
    if header != ["timestamp", "value"] {
        return Err(NabError::BadHeader {
            path: path.to_path_buf(),
            expected: "timestamp,value",
            found: header.join(","),
        });
    }
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for row in rows {
        let (line, record) = row?;
        let fields: Vec<&str> = record.iter().collect();
        let bad = |reason: String| NabError::BadRow {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let [ts, value] = fields[..] else {
            return Err(bad(format!(
                "expected 2 fields `timestamp,value`, found {}",
                fields.len()
            )));
        };
        let ts = parse_timestamp(ts).ok_or_else(|| bad(format!("bad timestamp `{ts}`")))?;
        let value: f64 = value.parse().map_err(|_| bad(format!("bad value `{value}`")))?;
        if !value.is_finite() {
            return Err(bad(format!("value `{value}` is not finite")));
        }
        timestamps.push(ts);
        values.push(value);
    }
    Ok((timestamps, values))
}

/// The subset of a file named `subset/name.csv` (the whole name without a `/`).
fn subset_of(name: &str) -> &str {
    name.split('/').next().unwrap_or(name)
}

/// The subsets of `pairs`' files, in name order, once each.
pub fn subsets<'a>(pairs: &[(&'a Series, &[f64])]) -> Vec<&'a str> {
    let mut subsets: Vec<&str> = pairs.iter().map(|(series, _)| subset_of(&series.name)).collect();
    subsets.sort_unstable();
    subsets.dedup();
    subsets
}

/// The files of `pairs` in `subset` (`inside`), or in every other subset.
pub fn in_subset<'a>(pairs: &[(&'a Series, &'a [f64])], subset: &str, inside: bool) -> Vec<(&'a Series, &'a [f64])> {
    pairs
        .iter()
        .filter(|(series, _)| (subset_of(&series.name) == subset) == inside)
        .copied()
        .collect()
}

/// Reads the `anomaly_score` column of a detector's results file for `series`: a CSV
/// whose header names at least `timestamp` and `anomaly_score` (NAB's results files
/// also have `value`, `label` and more), with one row per row of the data file, at the
/// same timestamps. Scores must lie in [0, 1]. Errors name the file and line.
pub fn read_scores(path: &Path, series: &Series) -> Result<Vec<f64>, NabError> {
    let text = read_text(path)?;
    let (header, rows) = table(path, &text);
    let column = |name| header.iter().position(|field| field == name);
    let (Some(at_timestamp), Some(at_score)) = (column("timestamp"), column("anomaly_score")) else {
        return Err(NabError::BadHeader {
            path: path.to_path_buf(),
            expected: "timestamp,...,anomaly_score,...",
            found: header.join(","),
        });
    };
    let mut scores = Vec::with_capacity(series.len());
    for row in rows {
        let (line, fields) = row?;
        let bad = |reason: String| NabError::BadRow {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if fields.len() != header.len() {
            return Err(bad(format!("{} fields, the header has {}", fields.len(), header.len())));
        }
        let row = scores.len();
        let Some(expected) = series.timestamps.get(row) else {
            return Err(bad(format!("more rows than the {} of {}", series.len(), series.name)));
        };
        let timestamp = &fields[at_timestamp];
        match parse_timestamp(timestamp) {
            None => return Err(bad(format!("bad timestamp `{timestamp}`"))),
            Some(found) if found != *expected => {
                return Err(bad(format!(
                    "timestamp `{timestamp}`, but line {} of {} is at {expected}",
                    row + 2,
                    series.name
                )))
            }
            Some(_) => {}
        }
        let score = &fields[at_score];
        match score.parse::<f64>() {
            Ok(score) if (0.0..=1.0).contains(&score) => scores.push(score),
            _ => return Err(bad(format!("anomaly_score `{score}` is not a number in [0, 1]"))),
        }
    }
    if scores.len() != series.len() {
        return Err(NabError::ScoreLength {
            file: path.display().to_string(),
            expected: series.len(),
            found: scores.len(),
        });
    }
    Ok(scores)
}

/// Maps a file's timestamp windows to sorted, disjoint inclusive row ranges.
fn window_rows(
    name: &str,
    timestamps: &[NaiveDateTime],
    spans: &[(String, String)],
) -> Result<Vec<(usize, usize)>, NabError> {
    let mut rows = Vec::with_capacity(spans.len());
    for (index, (start_text, end_text)) in spans.iter().enumerate() {
        let bad = |reason: String| NabError::BadWindow {
            file: name.to_string(),
            index,
            reason,
        };
        let start = parse_timestamp(start_text).ok_or_else(|| bad(format!("bad start timestamp `{start_text}`")))?;
        let end = parse_timestamp(end_text).ok_or_else(|| bad(format!("bad end timestamp `{end_text}`")))?;
        if start > end {
            return Err(bad(format!("starts ({start_text}) after it ends ({end_text})")));
        }
        let inside = |ts: &NaiveDateTime| start <= *ts && *ts <= end;
        let (Some(first), Some(last)) = (timestamps.iter().position(inside), timestamps.iter().rposition(inside))
        else {
            return Err(bad(format!("[{start_text}, {end_text}] matches no rows")));
        };
        if let Some(offset) = timestamps[first..=last].iter().position(|ts| !inside(ts)) {
            return Err(bad(format!(
                "rows {first}..={last} are not contiguous: row {} is outside [{start_text}, {end_text}] \
                 (timestamps out of order)",
                first + offset
            )));
        }
        rows.push((first, last, index));
    }
    rows.sort_unstable();
    for pair in rows.windows(2) {
        let ((_, a_last, a_index), (b_first, _, b_index)) = (pair[0], pair[1]);
        if b_first <= a_last {
            return Err(NabError::BadWindow {
                file: name.to_string(),
                index: b_index,
                reason: format!("overlaps window {a_index}"),
            });
        }
    }
    Ok(rows.into_iter().map(|(first, last, _)| (first, last)).collect())
}

/// Checks that a series' windows are in range, sorted and disjoint, and that there is
/// one score per row.
fn check(series: &Series, scores: &[f64]) -> Result<(), NabError> {
    let n = series.len();
    if scores.len() != n {
        return Err(NabError::ScoreLength {
            file: series.name.clone(),
            expected: n,
            found: scores.len(),
        });
    }
    let mut previous_last: Option<usize> = None;
    for (index, &(first, last)) in series.windows.iter().enumerate() {
        let reason = if first > last || last >= n {
            format!("rows {first}..={last} are not a range within {n} rows")
        } else if previous_last.is_some_and(|previous| first <= previous) {
            format!("rows {first}..={last} overlap or precede the previous window")
        } else {
            previous_last = Some(last);
            continue;
        };
        return Err(NabError::BadWindow {
            file: series.name.clone(),
            index,
            reason,
        });
    }
    Ok(())
}

/// Where a scored row lies.
#[derive(Clone, Copy)]
enum Place {
    /// Inside window `index`; the reward if this row is the window's counted detection.
    Window { index: usize, reward: f64 },
    /// Outside every window; the (negative) cost if this row is a detection.
    Outside { cost: f64 },
}

/// Calls `visit(row, place)` for every scored row (after probation), in order.
/// The series must have passed [`check`].
fn walk(series: &Series, profile: &Profile, mut visit: impl FnMut(usize, Place)) {
    let windows = &series.windows;
    let tp_scale = profile.a_tp / scaled_sigmoid(-1.0);
    let mut next = 0; // first window not wholly before the current row
    for row in probation_rows(series.len())..series.len() {
        while next < windows.len() && windows[next].1 < row {
            next += 1;
        }
        let place = match windows.get(next) {
            Some(&(first, last)) if first <= row => {
                let width = (last - first + 1) as f64;
                let y = -((last - row + 1) as f64) / width;
                Place::Window {
                    index: next,
                    reward: tp_scale * scaled_sigmoid(y),
                }
            }
            _ => {
                let cost = match next.checked_sub(1).map(|previous| windows[previous]) {
                    Some((first, last)) if last > first => {
                        let y = (row - last) as f64 / (last - first) as f64;
                        profile.a_fp * scaled_sigmoid(y)
                    }
                    // No preceding window, or a one-row one (y would be +∞).
                    _ => -profile.a_fp,
                };
                Place::Outside { cost }
            }
        };
        visit(row, place);
    }
}

/// One file's score at a threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileScore {
    /// Raw score: rewards of counted detections, minus miss and false-positive costs.
    pub raw: f64,
    /// Windows with a counted detection.
    pub true_positives: usize,
    /// Windows without one.
    pub false_negatives: usize,
    /// Detections (scored rows ≥ threshold) outside every window; each costs its own term.
    pub false_positives: usize,
    /// Windows in the file.
    pub windows: usize,
    /// Rows from window start to the counted detection, per detected window, in window order.
    pub delays_rows: Vec<usize>,
}

/// Scores one file: `scores` has one entry per row of `series`.
///
/// Errors when the lengths differ or the windows are not sorted, disjoint row ranges.
pub fn score_file(series: &Series, scores: &[f64], threshold: f64, profile: &Profile) -> Result<FileScore, NabError> {
    check(series, scores)?;
    let windows = series.windows.len();
    let mut detected: Vec<Option<usize>> = vec![None; windows];
    let mut raw = 0.0;
    let mut false_positives = 0;
    walk(series, profile, |row, place| {
        if scores[row] < threshold || scores[row].is_nan() {
            return;
        }
        match place {
            Place::Window { index, reward } => {
                if detected[index].is_none() {
                    detected[index] = Some(row);
                    raw += reward;
                }
            }
            Place::Outside { cost } => {
                false_positives += 1;
                raw += cost;
            }
        }
    });
    let delays_rows: Vec<usize> = detected
        .iter()
        .zip(&series.windows)
        .filter_map(|(row, (first, _))| row.map(|row| row - first))
        .collect();
    let false_negatives = windows - delays_rows.len();
    raw -= profile.a_fn * false_negatives as f64;
    Ok(FileScore {
        raw,
        true_positives: delays_rows.len(),
        false_negatives,
        false_positives,
        windows,
        delays_rows,
    })
}

/// A corpus' score at one threshold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorpusScore {
    /// The profile's name.
    pub profile: &'static str,
    pub threshold: f64,
    /// `100·(S − S_null)/(S_perfect − S_null)`; NaN when the corpus has no windows.
    pub normalized: f64,
    /// `S`, the raw scores summed over the files.
    pub raw: f64,
    pub windows: usize,
    pub detected_windows: usize,
    pub false_positives: usize,
    /// Median over detected windows of the rows from window start to the counted detection.
    pub median_delay_rows: Option<f64>,
}

/// Normalises a raw corpus score; NaN without windows.
fn normalize(raw: f64, windows: usize, profile: &Profile) -> f64 {
    let perfect = windows as f64 * profile.a_tp;
    let null = -(windows as f64) * profile.a_fn;
    if windows == 0 {
        f64::NAN
    } else {
        100.0 * (raw - null) / (perfect - null)
    }
}

/// Scores a corpus of `(series, scores)` at one threshold (fixed in advance).
pub fn score_corpus(corpus: &[(&Series, &[f64])], threshold: f64, profile: &Profile) -> Result<CorpusScore, NabError> {
    let mut raw = 0.0;
    let mut windows = 0;
    let mut detected_windows = 0;
    let mut false_positives = 0;
    let mut delays = Vec::new();
    for (series, scores) in corpus {
        let file = score_file(series, scores, threshold, profile)?;
        raw += file.raw;
        windows += file.windows;
        detected_windows += file.true_positives;
        false_positives += file.false_positives;
        delays.extend(file.delays_rows);
    }
    delays.sort_unstable();
    let mid = delays.len() / 2;
    let median_delay_rows = match delays.len() {
        0 => None,
        len if len % 2 == 1 => Some(delays[mid] as f64),
        _ => Some((delays[mid - 1] + delays[mid]) as f64 / 2.0),
    };
    Ok(CorpusScore {
        profile: profile.name,
        threshold,
        normalized: normalize(raw, windows, profile),
        raw,
        windows,
        detected_windows,
        false_positives,
        median_delay_rows,
    })
}

/// The threshold maximising the normalised score, and the corpus' score there.
///
/// The search is exact, not a grid: the score only changes at thresholds equal to a
/// scored row's score, so every such value is a candidate, plus one just above the
/// highest (no detection at all). Sweeping the candidates from high to low, each row
/// contributes a change to `S` where it starts detecting: its false-positive cost outside
/// windows; inside a window, the change of the window's counted detection, which moves
/// to an earlier row only where the window's running maximum of scores (from its first
/// scored row) rises. Sorting these changes gives `S` at every candidate in
/// O(rows·log rows). Among equal best scores the highest threshold wins; the reported
/// threshold is the candidate score itself (detections are `score ≥ threshold`), and the
/// returned score is recomputed with [`score_corpus`] at it.
pub fn best_threshold(corpus: &[(&Series, &[f64])], profile: &Profile) -> Result<CorpusScore, NabError> {
    // (threshold at which the change happens, change of S).
    let mut changes: Vec<(f64, f64)> = Vec::new();
    let mut windows = 0;
    let mut highest: Option<f64> = None;
    for (series, scores) in corpus {
        check(series, scores)?;
        windows += series.windows.len();
        // Per window: running-maximum records (score, reward) in row order.
        let mut records: Vec<Vec<(f64, f64)>> = vec![Vec::new(); series.windows.len()];
        walk(series, profile, |row, place| {
            let score = scores[row];
            if score.is_nan() {
                return;
            }
            highest = Some(highest.map_or(score, |h| h.max(score)));
            match place {
                Place::Outside { cost } => changes.push((score, cost)),
                Place::Window { index, reward } => {
                    let records = &mut records[index];
                    if records.last().is_none_or(|&(max, _)| score > max) {
                        records.push((score, reward));
                    }
                }
            }
        });
        for records in records {
            // The highest record detects first, turning a miss into its reward; each lower
            // record then moves the counted detection to its earlier row.
            let mut previous = -profile.a_fn;
            for &(score, reward) in records.iter().rev() {
                changes.push((score, reward - previous));
                previous = reward;
            }
        }
    }
    changes.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));

    // No detection at all: just above the highest score (impossible if it is +∞).
    let mut raw = -(windows as f64) * profile.a_fn;
    let mut best = match highest {
        None => Some((1.0, raw)),
        Some(h) if h.is_finite() => Some((next_up(h), raw)),
        Some(_) => None,
    };
    let mut start = 0;
    while start < changes.len() {
        let threshold = changes[start].0;
        let mut end = start;
        while end < changes.len() && changes[end].0 == threshold {
            raw += changes[end].1;
            end += 1;
        }
        if best.is_none_or(|(_, best_raw)| raw > best_raw) {
            best = Some((threshold, raw));
        }
        start = end;
    }
    let threshold = best.map_or(1.0, |(threshold, _)| threshold);
    score_corpus(corpus, threshold, profile)
}

/// One subset held out: its scores at the threshold best on all the other subsets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fold {
    pub subset: String,
    /// The other subsets at their best threshold.
    pub trained: CorpusScore,
    /// The held-out subset's raw score at that threshold.
    pub held_out: f64,
    /// The threshold best on the held-out subset itself (labels known); none
    /// when it has no windows (any threshold above its scores is best).
    pub own_threshold: Option<f64>,
}

/// Leave-one-subset-out for one detector: a [`Fold`] per subset, in name order;
/// none with fewer than two subsets.
pub fn folds(pairs: &[(&Series, &[f64])], profile: &Profile) -> Result<Vec<Fold>, NabError> {
    let subsets = subsets(pairs);
    if subsets.len() < 2 {
        return Ok(Vec::new());
    }
    subsets
        .into_iter()
        .map(|subset| {
            let trained = best_threshold(&in_subset(pairs, subset, false), profile)?;
            let inside = in_subset(pairs, subset, true);
            let held_out = score_corpus(&inside, trained.threshold, profile)?.raw;
            let own = best_threshold(&inside, profile)?;
            Ok(Fold {
                subset: subset.to_owned(),
                trained,
                held_out,
                own_threshold: (own.windows > 0).then_some(own.threshold),
            })
        })
        .collect()
}

/// Which candidate scored a held-out subset, and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pick {
    pub subset: String,
    /// The candidate's position in the list given.
    pub candidate: usize,
    /// Other candidates that scored as high on the other subsets (the first wins).
    pub ties: usize,
    pub threshold: f64,
    /// The other subsets' normalised score there. NaN (JSON null) when they have no
    /// windows: then every candidate ties at raw 0 (no detection), and the first is
    /// chosen.
    pub trained: f64,
    /// The held-out subset's raw score.
    pub raw: f64,
    /// The threshold best on the held-out subset itself, with the chosen
    /// candidate (none without windows).
    pub own_threshold: Option<f64>,
}

/// A score in which no subset's labels chose how it was scored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CrossValidated {
    /// The profile's name.
    pub profile: &'static str,
    /// Normalised over the whole corpus, from the held-out raw scores.
    pub normalized: f64,
    pub raw: f64,
    pub picks: Vec<Pick>,
    /// The lowest and the highest of the subsets' own best thresholds
    /// ([`Pick::own_threshold`]): how much the threshold that suits a
    /// subset depends on the subset. None without a subset with windows.
    pub own_threshold_spread: Option<(f64, f64)>,
}

/// Leave-one-subset-out over candidates (say, one detector with different
/// settings), from each one's [`folds`] of the same corpus (`windows` windows):
/// each subset is scored with the candidate that scored highest on all the other
/// subsets together, at its threshold there (the first candidate on a tie). The
/// held-out raw scores add up to a corpus score. With one candidate this measures
/// how much a score owes to a threshold chosen with the scored subset's labels
/// known; with several, also how much a choice among them owes to that. `None`
/// without folds (fewer than two subsets); an error when the candidates' folds are
/// not of the same subsets.
pub fn choose(candidates: &[Vec<Fold>], windows: usize, profile: &Profile) -> Result<Option<CrossValidated>, NabError> {
    let Some(first) = candidates.first().filter(|folds| !folds.is_empty()) else {
        return Ok(None);
    };
    let mut picks = Vec::with_capacity(first.len());
    for (index, fold) in first.iter().enumerate() {
        let mut chosen = (0, fold);
        let mut ties = 0;
        for (candidate, folds) in candidates.iter().enumerate().skip(1) {
            let other = match folds.get(index) {
                Some(other) if other.subset == fold.subset => other,
                _ => return Err(NabError::OtherSubsets { candidate }),
            };
            if other.trained.raw > chosen.1.trained.raw {
                (chosen, ties) = ((candidate, other), 0);
            } else if other.trained.raw == chosen.1.trained.raw {
                ties += 1;
            }
        }
        let (candidate, fold) = chosen;
        picks.push(Pick {
            subset: fold.subset.clone(),
            candidate,
            ties,
            threshold: fold.trained.threshold,
            trained: fold.trained.normalized,
            raw: fold.held_out,
            own_threshold: fold.own_threshold,
        });
    }
    let raw = picks.iter().map(|pick| pick.raw).sum();
    let own = picks.iter().filter_map(|pick| pick.own_threshold);
    let own_threshold_spread = own.clone().reduce(f64::min).zip(own.reduce(f64::max));
    Ok(Some(CrossValidated {
        profile: profile.name,
        normalized: normalize(raw, windows, profile),
        raw,
        picks,
        own_threshold_spread,
    }))
}

/// The smallest `f64` greater than finite `x`.
fn next_up(x: f64) -> f64 {
    if x == 0.0 {
        f64::from_bits(1)
    } else if x > 0.0 {
        f64::from_bits(x.to_bits() + 1)
    } else {
        f64::from_bits(x.to_bits() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const EPS: f64 = 1e-12;

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    /// An `n`-row series, one row per minute from 2014-04-01 00:00, with the given windows.
    fn series(name: &str, n: usize, windows: Vec<(usize, usize)>) -> Series {
        let start = parse_timestamp("2014-04-01 00:00:00").unwrap();
        Series {
            name: name.to_string(),
            timestamps: (0..n).map(|i| start + Duration::minutes(i as i64)).collect(),
            values: vec![0.0; n],
            windows,
        }
    }

    /// Scores 1.0 at `detections`, 0.0 elsewhere.
    fn detections(n: usize, rows: &[usize]) -> Vec<f64> {
        let mut scores = vec![0.0; n];
        for &row in rows {
            scores[row] = 1.0;
        }
        scores
    }

    /// The 100-row series of most tests: probation 15 rows, one window at rows 40..=49.
    fn hundred() -> Series {
        series("s/hundred.csv", 100, vec![(40, 49)])
    }

    fn raw(series: &Series, rows: &[usize], profile: &Profile) -> FileScore {
        score_file(series, &detections(series.len(), rows), 0.5, profile).unwrap()
    }

    #[test]
    fn scaled_sigmoid_values() {
        // y = −1: 2/(1 + e^−5) − 1 = 2/1.006737946999 − 1 = 0.986614298151
        close(scaled_sigmoid(-1.0), 0.986_614_298_151);
        // y = 0: 2/(1 + 1) − 1 = 0
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        // y = 0.5: 2/(1 + e^2.5) − 1 = 2/13.182493960703 − 1 = −0.848283639958
        close(scaled_sigmoid(0.5), -0.848_283_639_958);
        // y = 3.1 > 3: exactly −1
        assert_eq!(scaled_sigmoid(3.1), -1.0);
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probation_rows(0), 0);
        assert_eq!(probation_rows(100), 15);
        assert_eq!(probation_rows(1624), 243); // floor(243.6)
        assert_eq!(probation_rows(5000), 750);
        assert_eq!(probation_rows(22695), 750);
    }

    #[test]
    fn detection_at_window_start_is_a_full_true_positive() {
        // Row 40: y = −(49 − 40 + 1)/10 = −1, reward σ(−1)/σ(−1) = 1.
        let score = raw(&hundred(), &[40], &STANDARD);
        assert!((score.raw - 1.0).abs() < EPS, "{}", score.raw);
        assert_eq!(
            (score.true_positives, score.false_negatives, score.false_positives),
            (1, 0, 0)
        );
        assert_eq!(score.delays_rows, vec![0]);
    }

    #[test]
    fn later_detection_earns_less() {
        // Row 45: y = −(49 − 45 + 1)/10 = −0.5;
        // σ(−0.5) = 2/(1 + e^−2.5) − 1 = 2/1.082084998624 − 1 = 0.848283639958;
        // reward = 0.848283639958/0.986614298151 = 0.859792566910.
        let score = raw(&hundred(), &[45], &STANDARD);
        close(score.raw, 0.859_792_566_910);
        assert_eq!(score.delays_rows, vec![5]);
    }

    #[test]
    fn only_the_earliest_detection_in_a_window_counts() {
        // Rows 45 and 40: row 40 counts (reward 1), row 45 adds nothing, not even an FP.
        let score = raw(&hundred(), &[40, 45, 49], &STANDARD);
        assert!((score.raw - 1.0).abs() < EPS);
        assert_eq!((score.true_positives, score.false_positives), (1, 0));
    }

    #[test]
    fn missed_window_costs_a_fn() {
        // No detection: −A_FN = −1 (standard), −2 (reward_low_FN).
        assert_eq!(raw(&hundred(), &[], &STANDARD).raw, -1.0);
        assert_eq!(raw(&hundred(), &[], &REWARD_LOW_FN).false_negatives, 1);
        assert_eq!(raw(&hundred(), &[], &REWARD_LOW_FN).raw, -2.0);
        // Detected at row 40 then row 60: 1 + 0.11·σ(11/9), same under reward_low_FN.
        let standard = raw(&hundred(), &[40, 60], &STANDARD).raw;
        assert_eq!(raw(&hundred(), &[40, 60], &REWARD_LOW_FN).raw, standard);
    }

    #[test]
    fn detection_in_probation_is_ignored() {
        // Row 10 < 15: neither FP nor TP; the window is still missed: −1.
        let score = raw(&hundred(), &[10], &STANDARD);
        assert_eq!(score.raw, -1.0);
        assert_eq!(score.false_positives, 0);
        // A window reaching into probation: only its scored rows can detect it.
        let early = series("s/early.csv", 100, vec![(10, 19)]);
        assert_eq!(raw(&early, &[12], &STANDARD).raw, -1.0);
        // Row 15: y = −(19 − 15 + 1)/10 = −0.5, reward 0.859792566910 as above.
        close(raw(&early, &[12, 15], &STANDARD).raw, 0.859_792_566_910);
    }

    #[test]
    fn false_positive_after_a_window_is_measured_from_it() {
        // Row 60 after window 40..=49 (width 10): y = (60 − 49)/(10 − 1) = 11/9;
        // σ(11/9) = 2/(1 + e^(55/9)) − 1 = 2/451.839369607655 − 1 = −0.995573648215;
        // cost = 0.11 · −0.995573648215 = −0.109513101304; plus the miss −1.
        let score = raw(&hundred(), &[60], &STANDARD);
        close(score.raw, -1.109_513_101_304);
        assert_eq!((score.false_positives, score.false_negatives), (1, 1));
        // reward_low_FP doubles the cost: 0.22 · −0.995573648215 = −0.219026202607.
        close(raw(&hundred(), &[60], &REWARD_LOW_FP).raw, -1.219_026_202_607);
        // Row 51 right after: y = 2/9, σ(2/9) = 2/(1 + e^(10/9)) − 1 = −0.504672397722,
        // cost 0.11 · −0.504672397722 = −0.055513963749; with the TP at 40: 0.944486036251.
        close(raw(&hundred(), &[40, 51], &STANDARD).raw, 0.944_486_036_251);
    }

    #[test]
    fn false_positive_before_any_window_costs_a_fp() {
        // Rows 20 and 30 precede every window: 2·(−0.11) plus the miss −1 = −1.22.
        let score = raw(&hundred(), &[20, 30], &STANDARD);
        close(score.raw, -1.22);
        assert_eq!(score.false_positives, 2);
        // A file without windows: each detection −A_FP, no miss: −0.22 (reward_low_FP).
        let plain = series("s/plain.csv", 100, vec![]);
        close(raw(&plain, &[50], &REWARD_LOW_FP).raw, -0.22);
    }

    #[test]
    fn normalised_score_spans_null_to_perfect() {
        let a = series("s/a.csv", 100, vec![(40, 49)]);
        let b = series("s/b.csv", 200, vec![(50, 59), (120, 139)]);
        let perfect_a = detections(100, &[40]);
        let perfect_b = detections(200, &[50, 120]);
        let null_a = vec![0.0; 100];
        let null_b = vec![0.0; 200];
        for profile in &PROFILES {
            // Perfect: S = 3·A_TP = S_perfect → 100.
            let perfect = score_corpus(&[(&a, &perfect_a), (&b, &perfect_b)], 0.5, profile).unwrap();
            assert!((perfect.normalized - 100.0).abs() < 1e-9, "{perfect:?}");
            assert_eq!(
                (perfect.windows, perfect.detected_windows, perfect.false_positives),
                (3, 3, 0)
            );
            assert_eq!(perfect.median_delay_rows, Some(0.0));
            // Null: S = −3·A_FN = S_null → 0.
            let null = score_corpus(&[(&a, &null_a), (&b, &null_b)], 0.5, profile).unwrap();
            assert_eq!(null.normalized, 0.0);
            assert_eq!(null.median_delay_rows, None);
        }
        // Half-way: detect only b's windows, at delays 0 and 10 (y = −10/20 = −0.5):
        // S = −1 + 1 + 0.859792566910 = 0.859792566910; standard: 100·(S + 3)/6 = 64.329876115.
        let late_b = detections(200, &[50, 130]);
        let half = score_corpus(&[(&a, &null_a), (&b, &late_b)], 0.5, &STANDARD).unwrap();
        close(half.normalized, 64.329_876_115);
        assert_eq!(half.median_delay_rows, Some(5.0));
    }

    #[test]
    fn best_threshold_separates_anomaly_from_noise() {
        let a = series("s/a.csv", 100, vec![(40, 49)]);
        let b = series("s/b.csv", 200, vec![(50, 59), (120, 139)]);
        // Noise in [0, 0.3), an anomaly score of 0.9 at each window's start.
        let noise = |n: usize, spikes: &[usize]| -> Vec<f64> {
            (0..n)
                .map(|i| {
                    if spikes.contains(&i) {
                        0.9
                    } else {
                        (i * 37 % 100) as f64 / 100.0 * 0.3
                    }
                })
                .collect()
        };
        let (scores_a, scores_b) = (noise(100, &[40]), noise(200, &[50, 120]));
        let corpus = [(&a, scores_a.as_slice()), (&b, scores_b.as_slice())];
        for profile in &PROFILES {
            let best = best_threshold(&corpus, profile).unwrap();
            assert_eq!(best.threshold, 0.9, "{best:?}");
            assert!((best.normalized - 100.0).abs() < 1e-9);
            assert_eq!((best.detected_windows, best.false_positives), (3, 0));
        }
        // All noise: detecting nothing is best, just above the highest score.
        let quiet = vec![0.2; 100];
        let best = best_threshold(&[(&a, quiet.as_slice())], &STANDARD).unwrap();
        assert!(best.threshold > 0.2 && best.threshold < 0.2 + 1e-12);
        assert_eq!(best.normalized, 0.0);
    }

    #[test]
    fn best_threshold_beats_any_grid_threshold() {
        // Pseudo-random scores (a fixed LCG) on files with several windows, some rows NaN.
        let mut state: u64 = 12345;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let files = [
            series("s/a.csv", 300, vec![(60, 79), (150, 189), (190, 199)]),
            series("s/b.csv", 500, vec![(100, 100), (300, 349)]),
            series("s/c.csv", 200, vec![]),
        ];
        let scores: Vec<Vec<f64>> = files
            .iter()
            .map(|s| {
                (0..s.len())
                    .map(|i| {
                        let r = next();
                        let boost = if s.windows.iter().any(|&(f, l)| (f..=l).contains(&i)) {
                            0.3
                        } else {
                            0.0
                        };
                        if i % 97 == 5 {
                            f64::NAN
                        } else {
                            (r * r * r + boost).min(1.0)
                        }
                    })
                    .collect()
            })
            .collect();
        let corpus: Vec<(&Series, &[f64])> = files.iter().zip(&scores).map(|(s, v)| (s, v.as_slice())).collect();
        for profile in &PROFILES {
            let best = best_threshold(&corpus, profile).unwrap();
            // Every distinct score and a fine grid: none does better.
            let mut candidates: Vec<f64> = scores.iter().flatten().copied().filter(|v| !v.is_nan()).collect();
            candidates.extend((0..=2000).map(|k| k as f64 / 2000.0));
            for threshold in candidates {
                let other = score_corpus(&corpus, threshold, profile).unwrap();
                assert!(other.normalized <= best.normalized + 1e-9, "{other:?} beats {best:?}");
            }
        }
    }

    #[test]
    fn scoring_rejects_bad_input_without_panicking() {
        let s = hundred();
        let err = score_file(&s, &[0.0; 99], 0.5, &STANDARD).unwrap_err();
        assert_eq!(err.to_string(), "s/hundred.csv: 99 scores for 100 rows");
        let mut bad = hundred();
        bad.windows = vec![(40, 100)];
        let err = score_file(&bad, &[0.0; 100], 0.5, &STANDARD).unwrap_err();
        assert!(err.to_string().contains("s/hundred.csv: window 0"), "{err}");
        bad.windows = vec![(40, 49), (45, 60)];
        assert!(best_threshold(&[(&bad, &[0.0; 100])], &STANDARD).is_err());
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const TINY: &str = "timestamp,value\n\
        2014-04-01 00:00:00,1.0\n\
        2014-04-01 00:05:00,2.5\n\
        2014-04-01 00:10:00,3\n\
        2014-04-01 00:15:00,-4e1\n\
        2014-04-01 00:20:00,5\n";

    /// The header and the rows as `table` splits them, with their lines.
    fn split(text: &str) -> (Vec<String>, Vec<(usize, Vec<String>)>) {
        let (header, rows) = table(Path::new("t.csv"), text);
        let rows = rows
            .map(|row| row.map(|(line, fields)| (line, fields.iter().map(str::to_owned).collect())))
            .collect::<Result<_, _>>()
            .unwrap();
        (header, rows)
    }

    #[test]
    fn table_numbers_lines_past_blank_ones_and_trims() {
        let (header, rows) = split("\u{feff}timestamp , value\n\n a,1 \r\n  \n\r\nb,\"2,5\"\n\n\nc\n");
        assert_eq!(header, ["timestamp", "value"]);
        let rows: Vec<(usize, Vec<&str>)> = rows
            .iter()
            .map(|(line, fields)| (*line, fields.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(rows, [(3, vec!["a", "1"]), (6, vec!["b", "2,5"]), (9, vec!["c"])]);
        // A blank first line is an empty header; the next line is a row.
        let (header, rows) = split("\ntimestamp,value\n");
        assert_eq!(
            (header, rows),
            (
                vec![String::new()],
                vec![(2, vec!["timestamp".to_owned(), "value".to_owned()])]
            )
        );
        assert_eq!(split(""), (vec![String::new()], vec![]));
    }

    #[test]
    fn load_corpus_maps_windows_to_rows() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/sub/tiny.csv", TINY);
        write(dir.path(), "data/sub/notes.txt", "ignored");
        write(
            dir.path(),
            "windows.json",
            r#"{"sub/tiny.csv": [["2014-04-01 00:04:59.500000", "2014-04-01 00:10:00.000000"]],
                "other/absent.csv": []}"#,
        );
        let corpus = load_corpus(&dir.path().join("data"), &dir.path().join("windows.json")).unwrap();
        assert_eq!(corpus.len(), 1);
        let tiny = &corpus[0];
        assert_eq!(tiny.name, "sub/tiny.csv");
        assert_eq!(tiny.values, vec![1.0, 2.5, 3.0, -40.0, 5.0]);
        assert_eq!(tiny.timestamps[4], parse_timestamp("2014-04-01 00:20:00").unwrap());
        // 00:04:59.5 ≤ row 1 (00:05) and row 2 (00:10) ≤ 00:10:00.000000.
        assert_eq!(tiny.windows, vec![(1, 2)]);
    }

    #[test]
    fn load_corpus_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "data/sub/tiny.csv", TINY);
        write(dir.path(), "windows.json", r#"{"sub/other.csv": []}"#);
        let data = dir.path().join("data");
        let windows = dir.path().join("windows.json");
        let err = load_corpus(&data, &windows).unwrap_err();
        assert!(
            matches!(&err, NabError::MissingWindows { file, .. } if file == "sub/tiny.csv"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("sub/tiny.csv: no entry in windows file"),
            "{err}"
        );

        write(dir.path(), "windows.json", r#"{"sub/tiny.csv": []}"#);
        write(dir.path(), "data/sub/tiny.csv", &TINY.replace("3\n", "three\n"));
        let err = load_corpus(&data, &windows).unwrap_err();
        let path = data.join("sub/tiny.csv");
        assert_eq!(
            err.to_string(),
            format!("{}: line 4: bad value `three`", path.display())
        );

        write(dir.path(), "data/sub/tiny.csv", &TINY.replace("00:15:00", "2014-13-01"));
        let err = load_corpus(&data, &windows).unwrap_err();
        assert!(err.to_string().contains("tiny.csv: line 5: bad timestamp"), "{err}");

        write(dir.path(), "data/sub/tiny.csv", TINY);
        write(
            dir.path(),
            "windows.json",
            r#"{"sub/tiny.csv": [["2015-01-01 00:00:00", "2015-01-02 00:00:00"]]}"#,
        );
        let err = load_corpus(&data, &windows).unwrap_err();
        assert!(err.to_string().starts_with("sub/tiny.csv: window 0: ["), "{err}");
        assert!(err.to_string().ends_with("matches no rows"), "{err}");

        write(dir.path(), "windows.json", "{not json");
        assert!(matches!(
            load_corpus(&data, &windows),
            Err(NabError::WindowsJson { .. })
        ));
    }

    /// Leave-one-subset-out over candidates' score sets of the same corpus.
    fn held_out(candidates: &[&[(&Series, &[f64])]]) -> Option<CrossValidated> {
        let folds: Vec<Vec<Fold>> = candidates
            .iter()
            .map(|pairs| folds(pairs, &STANDARD).unwrap())
            .collect();
        let windows = candidates[0].iter().map(|(series, _)| series.windows.len()).sum();
        choose(&folds, windows, &STANDARD).unwrap()
    }

    /// Two subsets, one file and one window (rows 40..=59) each. Candidate `a` finds
    /// only the first subset's anomaly, `b` only the second's, `both` both, at the
    /// window's first row (a full true positive); a miss costs 1.
    #[test]
    fn each_subset_is_scored_with_what_the_others_chose() {
        let (x, y) = (
            series("a/x.csv", 100, vec![(40, 59)]),
            series("b/y.csv", 100, vec![(40, 59)]),
        );
        let (hit, miss) = (detections(100, &[40]), vec![0.0; 100]);
        let a: &[(&Series, &[f64])] = &[(&x, &hit), (&y, &miss)];
        let b: &[(&Series, &[f64])] = &[(&x, &miss), (&y, &hit)];
        let both: &[(&Series, &[f64])] = &[(&x, &hit), (&y, &hit)];

        // With the labels of both subsets known, `a` scores 1 − 1: half way.
        close(best_threshold(a, &STANDARD).unwrap().normalized, 50.0);
        // Held out, the first subset is scored by `b`, the best on the second, and
        // missed; the second by `a`, and missed too.
        let choice = held_out(&[a, b]).unwrap();
        close(choice.raw, -2.0);
        close(choice.normalized, 0.0);
        let picks: Vec<(&str, usize, usize, f64, f64)> = choice
            .picks
            .iter()
            .map(|p| (p.subset.as_str(), p.candidate, p.ties, p.trained, p.raw))
            .collect();
        assert_eq!(picks, [("a", 1, 0, 100.0, -1.0), ("b", 0, 0, 100.0, -1.0)]);
        assert!(choice.picks.iter().all(|p| p.threshold == 1.0));

        // `both` is as good as either on each training subset and listed first: chosen
        // on ties, it finds both anomalies.
        let choice = held_out(&[both, a, b]).unwrap();
        close(choice.normalized, 100.0);
        assert!(choice.picks.iter().all(|p| p.candidate == 0 && p.ties == 1));
        // One candidate: only the threshold is chosen on the other subset. For the
        // first subset, just above the second's highest score (0): a hit. For the
        // second, 1: a miss.
        let alone = held_out(&[a]).unwrap();
        close(alone.normalized, 50.0);
        assert_eq!(alone.picks[0].threshold, f64::from_bits(1));
        // Each subset's own best threshold: 1 for the first (its hit), just above
        // 0 for the second (nothing to find, every detection a false alarm).
        let own: Vec<Option<f64>> = alone.picks.iter().map(|p| p.own_threshold).collect();
        assert_eq!(own, [Some(1.0), Some(f64::from_bits(1))]);
        assert_eq!(alone.own_threshold_spread, Some((f64::from_bits(1), 1.0)));

        // One subset, or no candidate: nothing to hold out.
        assert_eq!(held_out(&[&both[..1]]), None);
        assert_eq!(choose(&[], 2, &STANDARD).unwrap(), None);
        // Candidates of different corpora.
        let one = folds(&both[..1], &STANDARD).unwrap();
        let err = choose(&[folds(both, &STANDARD).unwrap(), one], 2, &STANDARD).unwrap_err();
        assert_eq!(
            err.to_string(),
            "candidate 1 was scored on other subsets than the first"
        );
    }

    /// Three subsets, a window (rows 40..=59) in each. `early` detects each at its
    /// first row (1), but raises two false alarms before it in subsets a and c
    /// (−0.22); `late` detects each at row 50 only (r = σ(−0.5)/σ(−1) ≈ 0.86, no
    /// false alarm). On a or c alone `late` is better (0.78 < r), on b alone `early`;
    /// on two subsets together `early` is better unless both are a and c (2r lies
    /// between 1.56 and 1.78). So only a choice made on both other subsets holds a
    /// and c out with `early` and b with `late`.
    #[test]
    fn a_held_out_subset_is_chosen_for_on_all_the_others_together() {
        let names = ["a/x.csv", "b/y.csv", "c/z.csv"];
        let files: Vec<Series> = names.iter().map(|name| series(name, 100, vec![(40, 59)])).collect();
        let early = [
            detections(100, &[20, 21, 40]),
            detections(100, &[40]),
            detections(100, &[20, 21, 40]),
        ];
        let late = detections(100, &[50]);
        let early: Vec<(&Series, &[f64])> = files.iter().zip(&early).map(|(s, e)| (s, e.as_slice())).collect();
        let late: Vec<(&Series, &[f64])> = files.iter().map(|s| (s, late.as_slice())).collect();
        let r = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        let choice = held_out(&[&late, &early]).unwrap();
        let picks: Vec<(&str, usize)> = choice.picks.iter().map(|p| (p.subset.as_str(), p.candidate)).collect();
        assert_eq!(picks, [("a", 1), ("b", 0), ("c", 1)]);
        close(choice.raw, 2.0 * (1.0 - 0.22) + r);
        let trained: Vec<f64> = choice.picks.iter().map(|p| p.trained).collect();
        let expected = [
            100.0 * (1.78 + 2.0) / 4.0,
            100.0 * (2.0 * r + 2.0) / 4.0,
            100.0 * (1.78 + 2.0) / 4.0,
        ];
        for (t, e) in trained.iter().zip(expected) {
            close(*t, e);
        }
        assert!(
            choice.picks.iter().all(|p| p.ties == 0 && p.threshold == 1.0),
            "{choice:?}"
        );
    }

    #[test]
    fn read_scores_takes_the_anomaly_score_column_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d_tiny.csv");
        let x = series("sub/tiny.csv", 3, vec![]);
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_scores(&path, &x)
        };
        let good = "anomaly_score,timestamp,label,S(t)_standard\n\
            0,2014-04-01 00:00:00,0,0\n\
            0.25,2014-04-01 00:01:00,0,0\n\
            1,2014-04-01 00:02:00.000000,1,0\n";
        assert_eq!(read(good).unwrap(), [0.0, 0.25, 1.0]);

        let err = read("timestamp,value\n").unwrap_err().to_string();
        assert!(
            err.ends_with("line 1: expected header `timestamp,...,anomaly_score,...`, found `timestamp,value`"),
            "{err}"
        );
        let err = read(&good.replace("00:01:00", "00:03:00")).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "line 3: timestamp `2014-04-01 00:03:00`, but line 3 of sub/tiny.csv is at 2014-04-01 00:01:00"
            ),
            "{err}"
        );
        let err = read(&good.replace("0.25", "1.5")).unwrap_err().to_string();
        assert!(
            err.ends_with("line 3: anomaly_score `1.5` is not a number in [0, 1]"),
            "{err}"
        );
        let err = read(&good.replace("0.25", "NaN")).unwrap_err().to_string();
        assert!(
            err.ends_with("line 3: anomaly_score `NaN` is not a number in [0, 1]"),
            "{err}"
        );
        let err = read(&good.replace(",0,0\n0.25", ",0\n0.25")).unwrap_err().to_string();
        assert!(err.ends_with("line 2: 3 fields, the header has 4"), "{err}");
        let err = read(&format!("{good}0,2014-04-01 00:03:00,0,0\n"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("line 5: more rows than the 3 of sub/tiny.csv"), "{err}");
        let short: String = good.lines().take(3).map(|line| format!("{line}\n")).collect();
        let err = read(&short).unwrap_err().to_string();
        assert!(err.ends_with("d_tiny.csv: 2 scores for 3 rows"), "{err}");
        let err = read_scores(&dir.path().join("missing.csv"), &x)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read ") && err.contains("missing.csv"), "{err}");
    }

    #[test]
    fn dev_set_has_41_files_and_86_windows() {
        let root = Path::new("/work/shared/data/nab");
        if !root.join("data").is_dir() {
            eprintln!("skipping: NAB dev set not found at {}", root.display());
            return;
        }
        let corpus = load_corpus(&root.join("data"), &root.join("combined_windows.json")).unwrap();
        assert_eq!(corpus.len(), 41);
        assert_eq!(corpus.iter().map(|s| s.windows.len()).sum::<usize>(), 86);
        let taxi = corpus.iter().find(|s| s.name == "realKnownCause/nyc_taxi.csv").unwrap();
        assert_eq!(taxi.len(), 10320);
        assert_eq!(taxi.windows[0], (5839, 6045));
    }
}
