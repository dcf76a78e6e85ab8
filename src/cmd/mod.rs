//! One module per command: its clap arguments and its `run`, which returns
//! the process' exit code. The lab's commands (`eval`, `simulate`) are built
//! with the `lab` feature, the demo's (`demo`, `images`, `load`) with `demo`.

pub mod anomaly;
pub mod args;
pub mod check_config;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "lab")]
pub mod eval;
#[cfg(feature = "demo")]
pub mod load;
pub mod operate;
pub mod policy;
pub mod serve;
#[cfg(feature = "lab")]
pub mod simulate;
pub mod thresholds;

/// A command's result as pretty JSON (`--json`) or as its table.
pub fn json_or_table<T: serde::Serialize>(json: bool, summary: &T, table: impl Fn(&T) -> String) -> String {
    if json {
        serde_json::to_string_pretty(summary).unwrap_or_default()
    } else {
        table(summary)
    }
}

/// Commands that read the journal's file directly (beside a running
/// homeostat, without its API) read SQLite journals only; with a
/// PostgreSQL journal (`journal.url`) they say so instead of reading a file
/// that is not the journal.
pub fn refuse_postgres_journal(
    journal: &homeostat_core::config::JournalConfig,
    command: &str,
) -> Option<std::process::ExitCode> {
    journal.url.as_ref()?;
    eprintln!(
        "homeostat {command}: reads an SQLite journal file, and this config's journal is PostgreSQL (journal.url); \
         use the HTTP API of the homeostat that writes it (homeostat incidents, homeostat incident ID)"
    );
    Some(std::process::ExitCode::from(crate::exit::CONFIG))
}
