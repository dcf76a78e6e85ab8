//! `homeostat eval`: NAB's results layout and summary on a small corpus made
//! here, forecast accuracy, and errors that name the file.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::BIN;
use serde_json::Value;

/// Two subsets: `made`, minute-step noise around a level with a spike at row 1000,
/// whose window is rows 990..=1010; `quiet`, the same noise without spike or window.
fn corpus(dir: &Path) {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let stamp = |i: i64| {
        (start + chrono::Duration::minutes(i))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let (mut csv, mut quiet) = (String::from("timestamp,value\n"), String::from("timestamp,value\n"));
    for i in 0..1200i64 {
        let wave = 10.0 + ((i * 7919 % 13) as f64 / 13.0);
        let value = if i == 1000 { wave + 30.0 } else { wave };
        csv.push_str(&format!("{},{value}\n", stamp(i)));
        quiet.push_str(&format!("{},{wave}\n", stamp(i)));
    }
    for (subset, file, text) in [("made", "wave.csv", csv), ("quiet", "flat.csv", quiet)] {
        std::fs::create_dir_all(dir.join("data").join(subset)).unwrap();
        std::fs::write(dir.join("data").join(subset).join(file), text).unwrap();
    }
    let windows = serde_json::json!({
        "made/wave.csv": [[format!("{}.000000", stamp(990)), format!("{}.000000", stamp(1010))]],
        "quiet/flat.csv": [],
    });
    std::fs::write(dir.join("windows.json"), windows.to_string()).unwrap();
}

/// Runs `homeostat eval nab` with `args` on the corpus in `dir`, writing to `dir/out`.
fn eval_nab(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["eval", "nab"])
        .args(args)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--labels")
        .arg(dir.join("windows.json"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap()
}

#[test]
fn nab_writes_results_in_nabs_layout_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let out = dir.path().join("out");
    let output = eval_nab(dir.path(), &["--plot"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("| standard |"), "{stdout}");

    let results = std::fs::read_to_string(out.join("homeostat/made/homeostat_wave.csv")).unwrap();
    let rows: Vec<&str> = results.lines().collect();
    assert_eq!(rows[0], "timestamp,value,anomaly_score,label");
    assert_eq!(rows.len(), 1201);
    let labelled = rows[1..].iter().filter(|r| r.ends_with(",1")).count();
    assert_eq!(labelled, 21);
    let score = |row: &str| row.split(',').nth(2).unwrap().parse::<f64>().unwrap();
    assert!(rows[1..].iter().all(|r| (0.0..=1.0).contains(&score(r))));
    // The spike is the highest score after NAB's probationary period (180
    // rows here), where the first values, setting the range, may score as
    // new extremes too.
    let spike = score(rows[1001]);
    assert!(
        rows[181..]
            .iter()
            .enumerate()
            .all(|(i, r)| i + 180 == 1000 || score(r) < spike),
        "spike scored {spike}"
    );

    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (summary["files"].as_u64(), summary["windows"].as_u64()),
        (Some(2), Some(1))
    );
    // The best threshold separates the spike from everything else: a perfect detection.
    let best = &summary["profiles"]["standard"]["best"];
    assert!(best["normalized"].as_f64().unwrap() > 90.0, "{summary:#}");
    assert!(
        summary["subsets"]["made"]["best"].as_f64().unwrap() > 90.0,
        "{summary:#}"
    );
    // A subset without windows has no normalised score: its false alarms are
    // reported instead, here none.
    let quiet = &summary["subsets"]["quiet"];
    assert!(quiet["best"].is_null(), "{summary:#}");
    assert_eq!(quiet["false_positives"]["best"].as_u64(), Some(0), "{summary:#}");
    assert!(stdout.contains("| quiet | 1 | 0 | - (0 false positives) |"), "{stdout}");
    // The plot draws the band (blue lines with points) though it does not score.
    let svg = std::fs::read_to_string(out.join("plots/made/wave.svg")).unwrap();
    let band = "stroke=\"#0000FF\" stroke-width=\"1\" points=\"";
    let drawn = svg
        .match_indices(band)
        .filter(|(at, _)| svg[at + band.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(drawn, 2, "band lines drawn");
    assert_eq!(summary["rules"], serde_json::json!(["extremes", "art"]));
    // The CLI's default is the scorer's (`--rules` spells it out for clap's help).
    assert_eq!(
        summary["rules"],
        serde_json::to_value(homeostat_lab::anomaly::Rule::DEFAULT).unwrap()
    );
    assert!(stdout.contains("rules extremes,art,"), "{stdout}");
    // Held out, each of the two subsets is scored at the other's best threshold.
    let held_out = summary["cross_validated"]["normalized"].as_f64().unwrap();
    assert!(
        stdout.contains(&format!("(leave-one-subset-out): standard {held_out:.2}")),
        "{stdout}"
    );
    // Each subset's own best threshold: only `made` has windows, so the
    // spread is its threshold alone.
    let own = summary["cross_validated"]["picks"][0]["own_threshold"]
        .as_f64()
        .unwrap();
    assert!(
        summary["cross_validated"]["picks"][1]["own_threshold"].is_null(),
        "{summary:#}"
    );
    assert_eq!(
        summary["cross_validated"]["own_threshold_spread"],
        serde_json::json!([own, own])
    );
    assert!(
        stdout.contains(&format!(
            "Each subset's own best threshold (standard): {own:.4} to {own:.4} (made {own:.4})"
        )),
        "{stdout}"
    );
}

/// An ablation: with `--rules extremes`, only new extremes score (1 or 0),
/// and the summary says which rules scored; an unknown rule is refused.
#[test]
fn nab_scores_only_the_rules_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let out = dir.path().join("out");
    let output = eval_nab(dir.path(), &["--rules", "extremes"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let results = std::fs::read_to_string(out.join("homeostat/made/homeostat_wave.csv")).unwrap();
    let scores: Vec<f64> = results
        .lines()
        .skip(1)
        .map(|row| row.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(scores.iter().all(|s| *s == 0.0 || *s == 1.0), "{scores:?}");
    // After the first rows, which set the range, only the spike (row 1000)
    // lies beyond it.
    let alarms: Vec<usize> = (180..scores.len()).filter(|i| scores[*i] > 0.0).collect();
    assert_eq!(alarms, [1000], "{scores:?}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["rules"], serde_json::json!(["extremes"]));

    // ART alone learns for `--learning` points (by default NAB's
    // probationary period, 180 rows here), and none of them scores.
    let art_scores = |args: &[&str]| -> Vec<f64> {
        let output = eval_nab(dir.path(), args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let results = std::fs::read_to_string(out.join("homeostat/made/homeostat_wave.csv")).unwrap();
        results
            .lines()
            .skip(1)
            .map(|row| row.split(',').nth(2).unwrap().parse().unwrap())
            .collect()
    };
    let scores = art_scores(&["--rules", "art"]);
    assert!(scores[..180].iter().all(|s| *s == 0.0), "{scores:?}");
    assert!(scores[1000..1010].iter().any(|s| *s > 0.0), "{scores:?}");
    let scores = art_scores(&["--rules", "art", "--learning", "1150"]);
    assert!(scores[..1150].iter().all(|s| *s == 0.0), "{scores:?}");

    let output = eval_nab(dir.path(), &["--rules", "band,nonsense"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nonsense") && stderr.contains("--rules"), "{stderr}");
}

/// Calibrated alarms are reported at the threshold fixed for their scale
/// (0.2), raw ones at 0.5; `nab-score` scores at the threshold it is given.
#[test]
fn calibrated_scores_are_reported_at_their_own_fixed_threshold() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let summary = |args: &[&str]| -> Value {
        let output = eval_nab(dir.path(), args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
        let fixed = summary["fixed_threshold"].as_f64().unwrap();
        assert!(stdout.contains(&format!("| fixed threshold {fixed} |")), "{stdout}");
        summary
    };
    assert_eq!(summary(&[])["fixed_threshold"].as_f64(), Some(0.5));
    let calibrated = summary(&["--calibrate", "2", "--calibrate-last", "5"]);
    assert_eq!(calibrated["fixed_threshold"].as_f64(), Some(0.2));
    assert_eq!(
        calibrated["profiles"]["standard"]["fixed"]["threshold"].as_f64(),
        Some(0.2)
    );
    // Calibration needs both rules: one alone scores raw, at 0.5.
    assert_eq!(
        summary(&["--rules", "art", "--calibrate", "2"])["fixed_threshold"].as_f64(),
        Some(0.5)
    );

    let nab_score_at = |threshold: &str| {
        Command::new(BIN)
            .args(["eval", "nab-score", "--json", "--fixed-threshold", threshold, "--data"])
            .arg(dir.path().join("data"))
            .arg("--labels")
            .arg(dir.path().join("windows.json"))
            .arg("--results")
            .arg(dir.path().join("out/homeostat"))
            .output()
            .unwrap()
    };
    let output = nab_score_at("0.3");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scored: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(scored["runs"][0]["fixed_threshold"].as_f64(), Some(0.3), "{scored:#}");
    let output = nab_score_at("1.5");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("must be above 0 and at most 1, got 1.5"));

    let output = eval_nab(dir.path(), &["--calibrate-last", "many"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--calibrate-last"));
}

#[test]
fn forecast_reports_mase_and_coverage() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    let output = Command::new(BIN)
        .args(["eval", "forecast", "--json", "--horizon", "30m", "--data"])
        .arg(dir.path().join("data"))
        .arg("--labels")
        .arg(dir.path().join("windows.json"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(summary["forecasts"].as_u64().unwrap() > 0, "{summary:#}");
    let coverage = summary["coverage"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&coverage), "{summary:#}");
    assert!(summary["mase"].as_f64().unwrap().is_finite(), "{summary:#}");
    // Every band is published sane: none zero-width, negative for a
    // non-negative series, or wider than the bound.
    assert_eq!(summary["degenerate"], 0, "{summary:#}");
}

#[test]
fn a_missing_windows_entry_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    std::fs::write(dir.path().join("windows.json"), "{}").unwrap();
    let output = eval_nab(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("made/wave.csv"), "{stderr}");
}

/// Writes a detector's results for the corpus in `root`, in `root/hand/<detector>`:
/// `<subset>/<detector>_<file>`, scoring 1 at `made` (rows of `made/wave.csv`) and
/// `quiet` (of `quiet/flat.csv`), 0 elsewhere.
fn results(root: &Path, detector: &str, made: &[usize], quiet: &[usize]) {
    let dir = root.join("hand").join(detector);
    for (subset, file, alarms) in [("made", "wave.csv", made), ("quiet", "flat.csv", quiet)] {
        let data = std::fs::read_to_string(root.join("data").join(subset).join(file)).unwrap();
        let mut text = String::from("timestamp,anomaly_score\n");
        for (row, line) in data.lines().skip(1).enumerate() {
            let timestamp = line.split(',').next().unwrap();
            text.push_str(&format!("{timestamp},{}\n", u8::from(alarms.contains(&row))));
        }
        std::fs::create_dir_all(dir.join(subset)).unwrap();
        std::fs::write(dir.join(subset).join(format!("{detector}_{file}")), text).unwrap();
    }
}

/// Runs `homeostat eval nab-score --json` on the corpus in `dir` with these results.
fn nab_score(dir: &Path, results: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(["eval", "nab-score", "--json", "--data"]);
    command
        .arg(dir.join("data"))
        .arg("--labels")
        .arg(dir.join("windows.json"));
    for name in results {
        command.arg("--results").arg(dir.join(name));
    }
    command.output().unwrap()
}

/// Results already written are scored as `eval nab` scores them, and a choice
/// among several is scored on the subset it was not made on.
#[test]
fn nab_score_rescores_results_and_holds_out_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    corpus(dir.path());
    assert!(eval_nab(dir.path(), &[]).status.success());
    // Both find the anomaly at its window's first row (row 990, a full true
    // positive); `noisy` also alarms at row 500 of the quiet file (−0.11).
    results(dir.path(), "perfect", &[990], &[]);
    results(dir.path(), "noisy", &[990], &[500]);

    let output = nab_score(dir.path(), &["out/homeostat", "hand/perfect", "hand/noisy"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scored: Value = serde_json::from_slice(&output.stdout).unwrap();
    let standard = |run: usize| {
        scored["runs"][run]["profiles"]["standard"]["best"]["normalized"]
            .as_f64()
            .unwrap()
    };
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(
        standard(0),
        summary["profiles"]["standard"]["best"]["normalized"].as_f64().unwrap()
    );
    assert_eq!(scored["runs"][0]["cross_validated"], summary["cross_validated"]);
    let held_out = summary["cross_validated"]["normalized"].as_f64().unwrap();
    assert!(held_out.is_finite(), "{summary:#}");
    assert_eq!(summary["cross_validated"]["picks"].as_array().unwrap().len(), 2);
    assert_eq!(standard(1), 100.0);
    assert!((standard(2) - 100.0 * (2.0 - 0.11) / 2.0).abs() < 1e-9, "{scored:#}");

    // Held out, `made` is scored with what is best on `quiet`: both are (no alarm
    // at all there), `noisy` is listed first, and its threshold there, just above
    // 1, misses the anomaly (−1). `quiet` is scored with what is best on `made`:
    // both again, `noisy` at 1, with its false alarm (−0.11).
    let output = nab_score(dir.path(), &["hand/noisy", "hand/perfect"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let scored: Value = serde_json::from_slice(&output.stdout).unwrap();
    let choice = &scored["choice"];
    assert!((choice["raw"].as_f64().unwrap() + 1.11).abs() < 1e-9, "{scored:#}");
    assert!(
        (choice["normalized"].as_f64().unwrap() + 5.5).abs() < 1e-9,
        "{scored:#}"
    );
    let picks = choice["picks"].as_array().unwrap();
    assert_eq!(
        (picks[0]["subset"].as_str(), picks[0]["candidate"].as_u64()),
        (Some("made"), Some(0))
    );
    assert!(picks[0]["threshold"].as_f64().unwrap() > 1.0, "{scored:#}");
    // Trained on a subset without windows: no normalised score, and a tie.
    assert!(picks[0]["trained"].is_null(), "{scored:#}");
    assert_eq!(
        (picks[1]["subset"].as_str(), picks[1]["threshold"].as_f64()),
        (Some("quiet"), Some(1.0))
    );
    assert_eq!(
        (picks[0]["ties"].as_u64(), picks[1]["ties"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(picks[1]["trained"].as_f64(), Some(100.0));
    // One result alone: no choice to hold out.
    let output = nab_score(dir.path(), &["hand/perfect"]);
    assert!(serde_json::from_slice::<Value>(&output.stdout).unwrap()["choice"].is_null());

    // Missing results, or a bad score, are errors that name the file (and line).
    let output = nab_score(dir.path(), &["hand/perfect", "hand/missing"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hand/missing/made/missing_wave.csv"), "{stderr}");
    let bad = dir.path().join("hand/perfect/quiet/perfect_flat.csv");
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, text.replacen(",0\n", ",2\n", 1)).unwrap();
    let output = nab_score(dir.path(), &["hand/perfect"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("perfect_flat.csv: line 2: anomaly_score `2`"),
        "{stderr}"
    );
    // Without results, a usage error.
    assert_eq!(nab_score(dir.path(), &[]).status.code(), Some(2));
}
