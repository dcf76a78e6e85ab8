//! `homeostat simulate`: the learning policy against the static playbook and
//! a random safe action, in simulated fault scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::args::at_least_one;
use crate::exit;

#[derive(Args)]
pub struct SimulateArgs {
    /// Faults to simulate (each picks one of the scenarios at random).
    #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
    episodes: usize,
    /// Seed of the run's randomness: the same seed, the same report.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Draw the cumulative regret curves to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// The playbook; default: the shipped rules/playbook.yml.
    #[arg(long)]
    playbook: Option<PathBuf>,
    /// The alert rules the scenarios fire; default: the shipped rules/services.rules.yml.
    #[arg(long)]
    alert_rules: Option<PathBuf>,
}

pub fn run(args: SimulateArgs) -> ExitCode {
    let mut options = homeostat_lab::simulate::Options::new(args.episodes, args.seed);
    for (path, slot) in [
        (&args.playbook, &mut options.playbook),
        (&args.alert_rules, &mut options.alert_rules),
    ] {
        let Some(path) = path else { continue };
        match std::fs::read_to_string(path) {
            Ok(text) => *slot = (path.display().to_string(), text),
            Err(err) => {
                eprintln!("homeostat simulate: cannot read {}: {err}", path.display());
                return ExitCode::from(exit::CONFIG);
            }
        }
    }
    let report = match homeostat_lab::simulate::run(&options) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("homeostat simulate: {err}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Some(path) = &args.plot {
        if let Err(err) = homeostat_lab::simulate::plot(&report, path) {
            eprintln!("homeostat simulate: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        out!("{}", homeostat_lab::simulate::table(&report));
    }
    ExitCode::SUCCESS
}
