//! `homeostat eval`: the forecasting and anomaly scoring measured offline,
//! on NAB-style corpora.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use homeostat_core::duration::PromDuration;

use super::args::{coverage, positive_duration, score_threshold};
use super::json_or_table;
use crate::exit;

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score every CSV of a NAB-style corpus by NAB's rules.
    Nab {
        /// The data directory (`<subset>/<name>.csv`, columns timestamp,value).
        #[arg(long)]
        data: PathBuf,
        /// The windows file (NAB's combined_windows.json).
        #[arg(long)]
        labels: PathBuf,
        /// Where results (NAB's layout) and summary.json go.
        #[arg(long)]
        out: PathBuf,
        /// Also draw each series, its band, windows and detections (SVG).
        #[arg(long)]
        plot: bool,
        /// The scorer's rules that score (band, memory, extremes, art); a point scores
        /// the highest of theirs.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "extremes,art")]
        rules: Vec<homeostat_lab::anomaly::Rule>,
        /// Points the ART rule learns for before it scores (they also set its
        /// time scale); default: each file's NAB probationary period.
        #[arg(long)]
        learning: Option<usize>,
        /// With new extremes and ART: calibrate each alarm against the
        /// stream's own past alarms with this many pseudo-alarms of prior
        /// (docs/BENCHMARKS.md, tenth round: 2); 0, the default: no calibration.
        /// Calibrated scores are also reported at the threshold fixed for them
        /// (0.2) instead of 0.5.
        #[arg(long, default_value_t = 0.0)]
        calibrate: f64,
        /// With --calibrate: the most recent past alarms calibrated against
        /// (older ones are forgotten); default: the last 10,000.
        #[arg(long, default_value_t = homeostat_core::detect::DetectConfig::default().alarm_history)]
        calibrate_last: usize,
    },
    /// Score detectors' results already in NAB's layout, and a choice among them held out.
    NabScore {
        /// The data directory the results were made from.
        #[arg(long)]
        data: PathBuf,
        /// The windows file (NAB's combined_windows.json).
        #[arg(long)]
        labels: PathBuf,
        /// A detector's results directory, `<subset>/<detector>_<file>.csv` in it,
        /// `<detector>` being the directory's name (`<out>/homeostat` after `eval nab
        /// --out <out>`); repeat to compare several (the first listed wins a tie).
        #[arg(long, required = true)]
        results: Vec<PathBuf>,
        /// The threshold fixed in advance that each is also scored at (0.2 for
        /// calibrated scores, see `eval nab --calibrate`).
        #[arg(long, default_value_t = homeostat_lab::eval::FIXED_THRESHOLD, value_parser = score_threshold)]
        fixed_threshold: f64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rolling 1-hour-ahead forecasts: MASE against seasonal naive, and band coverage.
    Forecast {
        /// The data directory (`<subset>/<name>.csv`, columns timestamp,value).
        #[arg(long)]
        data: PathBuf,
        /// The windows file: forecasts touching a labelled anomaly are skipped.
        #[arg(long)]
        labels: PathBuf,
        /// How far ahead each forecast reaches.
        #[arg(long, default_value = "1h", value_parser = positive_duration)]
        horizon: PromDuration,
        /// The share of actual values the prediction band should hold, in (0, 1).
        #[arg(long, default_value_t = 0.95, value_parser = coverage)]
        coverage: f64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The spread of the subsets' own best thresholds (standard profile), a line.
fn threshold_spread(held_out: Option<&homeostat_lab::eval::nab::CrossValidated>) -> String {
    let Some(held_out) = held_out else {
        return String::new();
    };
    let own: Vec<String> = held_out
        .picks
        .iter()
        .filter_map(|pick| Some(format!("{} {:.4}", pick.subset, pick.own_threshold?)))
        .collect();
    match held_out.own_threshold_spread {
        Some((low, high)) => format!(
            "Each subset's own best threshold (standard): {low:.4} to {high:.4} ({})\n",
            own.join(", ")
        ),
        None => String::new(),
    }
}

pub fn run(command: EvalCommand) -> ExitCode {
    let result = match command {
        EvalCommand::Nab {
            data,
            labels,
            out,
            plot,
            rules,
            learning,
            calibrate,
            calibrate_last,
        } => {
            let config = homeostat_lab::anomaly::ScorerConfig {
                rules,
                prior_alarms: calibrate,
                alarm_history: calibrate_last,
                ..Default::default()
            };
            homeostat_lab::eval::run_nab(&data, &labels, &out, plot, config, learning).map(|summary| {
                let spread = threshold_spread(summary.scores.cross_validated.as_ref());
                homeostat_lab::eval::nab_table(&summary) + &spread
            })
        }
        EvalCommand::NabScore {
            data,
            labels,
            results,
            fixed_threshold,
            json,
        } => homeostat_lab::eval::run_nab_score(&data, &labels, &results, fixed_threshold).map(|summary| {
            json_or_table(json, &summary, |summary| {
                let spreads: String = summary
                    .runs
                    .iter()
                    .enumerate()
                    .map(|(index, run)| format!("{index}: {}", threshold_spread(run.scores.cross_validated.as_ref())))
                    .collect();
                homeostat_lab::eval::nab_score_table(summary) + "\n" + &spreads
            })
        }),
        EvalCommand::Forecast {
            data,
            labels,
            horizon,
            coverage,
            json,
        } => homeostat_lab::eval::run_forecast(&data, &labels, horizon.0, coverage)
            .map(|summary| json_or_table(json, &summary, homeostat_lab::eval::forecast_table)),
    };
    match result {
        Ok(text) => {
            outln!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("homeostat eval: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}
