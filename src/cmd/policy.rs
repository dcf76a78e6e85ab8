//! `homeostat policy`: what the learning policy learned and why it decided,
//! its state moved between journals, and its off-policy evaluation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use homeostat_core::config::Config;
use homeostat_journal::learned;
use homeostat_journal::policy::JournalReader;

use crate::exit;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Per alert and service: what each action earned, and whether it explores.
    Show(PolicyArgs),
    /// Every decision on an incident, with the policy's candidates, their
    /// estimated values and uncertainty, and why the winner won.
    Explain {
        #[command(flatten)]
        args: PolicyArgs,
        /// The incident's id (as in /api/v1/incidents).
        incident: i64,
    },
    /// Print the learned state as JSON, for `policy import` elsewhere.
    Export(PolicyArgs),
    /// Replace the learned state with FILE (from `policy export`); a
    /// running homeostat uses it from its next decision.
    Import {
        #[command(flatten)]
        args: PolicyArgs,
        /// The JSON file `policy export` wrote.
        file: PathBuf,
    },
    /// Off-policy evaluation (inverse propensity scoring) of the learned
    /// policy and of the playbook on the logged decisions and rewards.
    Evaluate {
        #[command(flatten)]
        args: PolicyArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct PolicyArgs {
    /// The config file: its journal.path and actions.policy are used.
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(command: PolicyCommand) -> ExitCode {
    let args = match &command {
        PolicyCommand::Show(args) | PolicyCommand::Export(args) => args,
        PolicyCommand::Explain { args, .. }
        | PolicyCommand::Import { args, .. }
        | PolicyCommand::Evaluate { args, .. } => args,
    };
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("homeostat: {err}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let settings = config.actions.map(|a| a.policy).unwrap_or_default();
    if let Err((key, message)) = settings.validate() {
        eprintln!(
            "homeostat: invalid config {}: at `{key}`: {message}",
            args.config.display()
        );
        return ExitCode::from(exit::CONFIG);
    }
    if let Some(code) = super::refuse_postgres_journal(&config.journal, "policy") {
        return code;
    }
    let learning = settings.learning;
    let journal = &config.journal.path;
    let reader = || JournalReader::open(journal).map_err(learned::LearnedError::from);
    let result = match &command {
        PolicyCommand::Show(_) => reader().and_then(|r| learned::show(&r, &learning)),
        PolicyCommand::Export(_) => reader().and_then(|r| learned::export(&r, &learning)),
        PolicyCommand::Explain { incident, .. } => reader().and_then(|r| learned::explain(&r, *incident)),
        PolicyCommand::Import { file, .. } => learned::import(journal, file, &learning).map(|revision| {
            format!(
                "Imported {} into {} as revision {revision}.",
                file.display(),
                journal.display()
            )
        }),
        PolicyCommand::Evaluate { json, .. } => reader()
            .and_then(|r| learned::evaluate_journal(&r, &learning))
            .map(|e| super::json_or_table(*json, &e, learned::evaluation_table)),
    };
    match result {
        Ok(text) => {
            outln!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("homeostat: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}
