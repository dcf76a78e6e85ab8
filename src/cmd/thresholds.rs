//! `homeostat thresholds`: the adaptive thresholds' bands from the journal,
//! rule files rendered now, and one query fitted now.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use homeostat_adapters::rules as apply;
use homeostat_core::duration::PromDuration;
use homeostat_core::threshold;

use super::args::{coverage, positive_duration};
use crate::exit;

#[derive(Subcommand)]
pub enum ThresholdsCommand {
    /// The current bands and why: each spec's latest rule update, every
    /// series' band and coverage, and the feedback steps that moved them.
    /// Read from the journal (`journal.path` of the config) that `serve` writes.
    Show {
        /// The config file: its journal.path and thresholds are used.
        #[arg(long, short)]
        config: PathBuf,
        /// Print the journal's state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fit every spec now and write its rule file into DIR, checked with
    /// promtool when installed; Prometheus is only queried, never reloaded.
    Render {
        /// The config file: its thresholds and journal.path are used.
        #[arg(long, short)]
        config: PathBuf,
        /// The directory (DIR) the rule files are written into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit one query now and print each series' band.
    Fit {
        /// Prometheus' URL.
        #[arg(long)]
        prometheus: String,
        /// The PromQL expression.
        #[arg(long)]
        query: String,
        /// The sampling step of the history fitted.
        #[arg(long, default_value = "1m", value_parser = positive_duration)]
        step: PromDuration,
        /// How much history to fit, up to now.
        #[arg(long, default_value = "7d", value_parser = positive_duration)]
        history: PromDuration,
        /// How far past now the band is forecast.
        #[arg(long, default_value = "1h", value_parser = positive_duration)]
        horizon: PromDuration,
        /// The share of normal points the band should hold, in (0, 1).
        #[arg(long, default_value_t = 0.99, value_parser = coverage)]
        coverage: f64,
        /// History a series needs before its band is shown (default: two of
        /// the longest season --history supports at --step, else 60 steps).
        #[arg(long, value_parser = positive_duration)]
        min_history: Option<PromDuration>,
        /// Per series: labels and arrays of timestamps, point, lower, upper.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: ThresholdsCommand) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match command {
        ThresholdsCommand::Show { config, json } => {
            let (config, _) = match crate::load(&config, |_| {}) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            if let Some(code) = super::refuse_postgres_journal(&config.journal, "thresholds show") {
                return code;
            }
            let path = &config.journal.path;
            if !path.exists() {
                eprintln!(
                    "homeostat thresholds show: no journal at {} (journal.path): `homeostat serve` has not run with this config",
                    path.display()
                );
                return ExitCode::from(exit::RUNTIME);
            }
            match homeostat_journal::thresholds::read_state_at(path) {
                Ok(state) if json => {
                    outln!("{}", serde_json::to_string_pretty(&state).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(state) => {
                    outln!("From the journal {} (written by `homeostat serve`):", path.display());
                    out!("{}", threshold::describe(&state, config.thresholds.as_ref()));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("homeostat thresholds show: {err}");
                    ExitCode::from(exit::RUNTIME)
                }
            }
        }
        ThresholdsCommand::Render { config: file, out } => {
            let (config, _) = match crate::load(&file, |_| {}) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let Some(thresholds) = config.thresholds else {
                eprintln!(
                    "homeostat thresholds render: {} has no `thresholds:` section",
                    file.display()
                );
                return ExitCode::from(exit::CONFIG);
            };
            // The coverages feedback has moved series to, as `serve` fits with
            // them. Unlike `serve`, which logs and fits at the configured
            // coverages, a journal that cannot be read is an error here: a
            // render checked in CI must not silently differ from what runs.
            if let Some(code) = super::refuse_postgres_journal(&config.journal, "thresholds render") {
                return code;
            }
            let journal = &config.journal.path;
            let coverages = match journal.try_exists() {
                Ok(false) => HashMap::new(),
                Ok(true) => match homeostat_journal::thresholds::read_coverages_at(journal) {
                    Ok(coverages) => coverages,
                    Err(err) => {
                        eprintln!("homeostat thresholds render: cannot read feedback (journal.path): {err}");
                        return ExitCode::from(exit::RUNTIME);
                    }
                },
                Err(err) => {
                    eprintln!(
                        "homeostat thresholds render: cannot look for the journal {} (journal.path): {err}",
                        journal.display()
                    );
                    return ExitCode::from(exit::RUNTIME);
                }
            };
            let outcomes = match runtime.block_on(apply::render_into(&thresholds, out.clone(), &coverages)) {
                Ok(outcomes) => outcomes,
                Err(err) => {
                    eprintln!("homeostat thresholds render: {err} (thresholds.prometheus_url)");
                    return ExitCode::from(exit::CONFIG);
                }
            };
            let mut failed = false;
            for outcome in outcomes {
                match outcome.result {
                    Ok(()) => {
                        outln!(
                            "{}: {} series → {}",
                            outcome.spec,
                            outcome.fit.series.len(),
                            out.join(threshold::file_name(&outcome.spec)).display()
                        );
                        let configured = thresholds
                            .specs
                            .iter()
                            .find(|s| s.name == outcome.spec)
                            .map(|s| s.coverage);
                        for series in outcome.fit.series.iter().filter(|s| Some(s.coverage) != configured) {
                            let coverage = (series.coverage * 1e6).round() / 1e6;
                            outln!("  {} at coverage {coverage} (moved by feedback)", series.key);
                        }
                        for series in &outcome.fit.insufficient {
                            let rules = match &series.fallback {
                                Some(f) => format!(
                                    "static fallback rule{}",
                                    [("lower", f.lower), ("upper", f.upper)]
                                        .iter()
                                        .filter_map(|(side, v)| Some(format!(" {side} {}", (*v)?)))
                                        .collect::<String>()
                                ),
                                None => "no fallback configured: no rule".to_owned(),
                            };
                            outln!(
                                "  {} {}: {}; {rules}",
                                series.key,
                                threshold::INSUFFICIENT_HISTORY,
                                series.reason
                            );
                        }
                    }
                    Err(err) => {
                        failed = true;
                        eprintln!("{}: not rendered: {err}", outcome.spec);
                    }
                }
            }
            if failed {
                ExitCode::from(exit::RUNTIME)
            } else {
                ExitCode::SUCCESS
            }
        }
        ThresholdsCommand::Fit {
            prometheus,
            query,
            step,
            history,
            horizon,
            coverage,
            min_history,
            json,
        } => match runtime.block_on(apply::fit_query(
            &prometheus,
            &query,
            step.0,
            history.0,
            horizon.0,
            coverage,
            min_history.map(|d| d.0),
        )) {
            Ok(reports) if json => {
                outln!("{}", serde_json::to_string(&reports).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Ok(reports) => {
                out!("{}", threshold::describe_bands(&query, &reports));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("homeostat thresholds fit: {err}");
                ExitCode::from(exit::RUNTIME)
            }
        },
    }
}
