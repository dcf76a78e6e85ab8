//! `homeostat anomaly`: what a running homeostat's detectors say of each
//! live series (`show`), and one query scored now over its history in
//! Prometheus (`score`) with the detector `serve` runs.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;

use homeostat_adapters::rules::{Prometheus, QUERY_TIMEOUT};
use homeostat_core::alert::LabelSet;
use homeostat_core::detect::spec::{live_score, MAX_HISTORY};
use homeostat_core::detect::{fixed_threshold, DetectConfig, StreamScorer};
use homeostat_core::duration::PromDuration;

use super::args::{positive_duration, score_threshold};
use super::operate::{run_with, Server};
use crate::exit;

/// Most points `score` reads per series.
const MAX_POINTS: usize = 200_000;

#[derive(Subcommand)]
pub enum AnomalyCommand {
    /// Each live series' score as the leader's detectors have it now
    /// (`GET /api/v1/anomaly`, role viewer).
    Show {
        #[command(flatten)]
        server: Server,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score one query's history now, point by point as `serve` would, and
    /// list the points at or over the threshold.
    Score {
        /// Prometheus' URL.
        #[arg(long)]
        prometheus: String,
        /// The PromQL expression; each series it returns is scored on its own.
        #[arg(long)]
        query: String,
        /// The sampling step.
        #[arg(long, default_value = "15s", value_parser = positive_duration)]
        step: PromDuration,
        /// How much history to score, up to now.
        #[arg(long, default_value = "1d", value_parser = positive_duration)]
        range: PromDuration,
        /// Points the detector learns from before it scores.
        #[arg(long, default_value_t = 750)]
        learning: usize,
        /// Calibrate each alarm against the series' own past alarms, as an
        /// anomaly spec's `calibrate: true` does.
        #[arg(long)]
        calibrate: bool,
        /// The score listed as an alarm (0 to 1]; default 0.5, or 0.2 with
        /// --calibrate (the thresholds fixed for each scale).
        #[arg(long, value_parser = score_threshold)]
        threshold: Option<f64>,
        /// Per series: labels, points, alarms (time and score) as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct Scored {
    labels: LabelSet,
    points: usize,
    /// Still learning at the last point: it scored nothing.
    learning: bool,
    max_score: f64,
    alarms: Vec<(DateTime<Utc>, f64)>,
}

pub fn run(command: AnomalyCommand) -> ExitCode {
    match command {
        AnomalyCommand::Show { server, json } => run_with(&server, async move |api| {
            let state = api.get("/api/v1/anomaly", &[]).await?;
            Ok(super::json_or_table(json, &state, show_table))
        }),
        AnomalyCommand::Score {
            prometheus,
            query,
            step,
            range,
            learning,
            calibrate,
            threshold,
            json,
        } => {
            let threshold = threshold.unwrap_or_else(|| fixed_threshold(calibrate));
            if !(16..=MAX_HISTORY).contains(&learning) {
                eprintln!("homeostat anomaly score: --learning must be from 16 to {MAX_HISTORY} points");
                return ExitCode::from(exit::USAGE);
            }
            if step.0.subsec_nanos() != 0 {
                eprintln!("homeostat anomaly score: --step must be whole seconds");
                return ExitCode::from(exit::USAGE);
            }
            let points = usize::try_from(range.0.as_secs() / step.0.as_secs().max(1)).unwrap_or(usize::MAX);
            if !(2..=MAX_POINTS).contains(&points) {
                eprintln!(
                    "homeostat anomaly score: --range is {points} steps of --step; it must be from 2 to {MAX_POINTS}"
                );
                return ExitCode::from(exit::USAGE);
            }
            let runtime = match crate::runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            let config = DetectConfig::live(learning, MAX_HISTORY, calibrate);
            let result = runtime.block_on(async {
                let prometheus = Prometheus::new(&prometheus, QUERY_TIMEOUT)?;
                let end = Utc::now().timestamp();
                let end = end - end.rem_euclid(i64::try_from(step.0.as_secs()).unwrap_or(1).max(1));
                prometheus
                    .range(&query, end, step.0, points)
                    .await
                    .map_err(|e| e.to_string())
            });
            let series = match result {
                Ok(series) => series,
                Err(why) => {
                    eprintln!("homeostat anomaly score: {why}");
                    return ExitCode::from(exit::RUNTIME);
                }
            };
            let step_secs = i64::try_from(step.0.as_secs()).unwrap_or(1);
            let scored: Vec<Scored> = series
                .into_iter()
                .map(|s| {
                    let mut scorer = StreamScorer::new(&config);
                    let mut out = Scored {
                        labels: s.labels,
                        points: 0,
                        learning: true,
                        max_score: 0.0,
                        alarms: Vec::new(),
                    };
                    for (i, value) in s.values.iter().enumerate() {
                        if !value.is_finite() {
                            continue;
                        }
                        let score = live_score(&mut scorer, *value);
                        out.points += 1;
                        out.max_score = out.max_score.max(score);
                        if score >= threshold {
                            let t = s.start + i64::try_from(i).unwrap_or(0) * step_secs;
                            out.alarms
                                .push((DateTime::from_timestamp(t, 0).unwrap_or_default(), score));
                        }
                    }
                    out.learning = scorer.learning();
                    out
                })
                .collect();
            outln!("{}", super::json_or_table(json, &scored, |s| score_table(&query, s)));
            ExitCode::SUCCESS
        }
    }
}

fn labels(value: &Value) -> String {
    value
        .as_object()
        .map(|o| {
            let pairs: Vec<String> = o
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect();
            format!("{{{}}}", pairs.join(", "))
        })
        .unwrap_or_default()
}

fn show_table(state: &Value) -> String {
    let mut lines = Vec::new();
    if state["leader"] == Value::Bool(false) {
        lines.push("This replica does not lead: the leader's detectors score (ask it).".to_owned());
    }
    if state["specs"].as_array().is_none_or(|s| s.is_empty()) {
        lines.push("No anomaly specs are configured (anomaly: in the config).".to_owned());
        return lines.join("\n");
    }
    lines.push(format!(
        "{:<16}  {:>5}  {:>8}  {:>6}  {:>8}  {:<8}  {:<19}  series",
        "spec", "score", "alarm at", "latest", "points", "state", "last point"
    ));
    for s in state["series"].as_array().into_iter().flatten() {
        let last = s["last_point"]
            .as_i64()
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        lines.push(format!(
            "{:<16}  {:>5.2}  {:>8.2}  {:>6.2}  {:>8}  {:<8}  {:<19}  {}",
            s["spec"].as_str().unwrap_or("-"),
            s["score"].as_f64().unwrap_or(f64::NAN),
            s["alarm_at"].as_f64().unwrap_or(f64::NAN),
            s["latest"].as_f64().unwrap_or(f64::NAN),
            s["points"].as_u64().unwrap_or(0),
            if s["learning"] == Value::Bool(true) {
                "learning"
            } else {
                "scoring"
            },
            last,
            labels(&s["labels"])
        ));
    }
    if lines.len() == 1 {
        lines.push("(no live series yet)".to_owned());
    }
    lines.join("\n")
}

fn score_table(query: &str, scored: &[Scored]) -> String {
    if scored.is_empty() {
        return format!("{query}: no series");
    }
    let mut lines = Vec::new();
    for s in scored {
        let name: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let state = if s.learning {
            "still learning: no score yet (too little history for --learning)".to_owned()
        } else {
            format!("highest score {:.2}, {} alarms", s.max_score, s.alarms.len())
        };
        lines.push(format!("{{{}}}: {} points, {state}", name.join(", "), s.points));
        for (at, score) in &s.alarms {
            lines.push(format!("  {}  {score:.2}", at.format("%Y-%m-%d %H:%M:%S")));
        }
    }
    lines.join("\n")
}
