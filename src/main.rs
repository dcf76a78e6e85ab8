//! The `homeostat` command: parses the CLI and hands each command to its
//! module under [`cmd`]; what they share (exit codes, stdout, the runtime,
//! the config) is here.
//!
//! - `cmd::serve`: `homeostat serve` (crates/server), acting through crates/adapters.
//! - `cmd::check_config`, `cmd::policy`, `cmd::thresholds`: operate on a config and its journal.
//! - `cmd::eval`, `cmd::simulate` (feature `lab`): offline measurement (crates/lab).
//! - `cmd::demo`, `cmd::load` (feature `demo`): the demo, its images and load (crates/demo).
//!
//! docs/ARCHITECTURE.md maps the crates.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

mod telemetry;

use clap::{Parser, Subcommand};
use homeostat_core::config::{Config, Credentials, ProcessEnv};
use telemetry::LogFormat;

// glibc's allocator serializes on an arena lock when memory allocated on one
// thread (a request handler) is freed on another (the journal writer); under
// an alert storm that lock cost a fifth of the writer's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, documented in the README.
mod exit {
    pub const RUNTIME: u8 = 1;
    /// Usage errors: clap's code, also for arguments checked after parsing.
    pub const USAGE: u8 = 2;
    pub const CONFIG: u8 = 3;
    pub const STARTUP: u8 = 4;
    /// `homeostat demo` or `homeostat bench` stopped by Ctrl-C (128 + SIGINT, as shells report it).
    #[cfg(feature = "demo")]
    pub const INTERRUPTED: u8 = 130;
}

/// Writes to stdout. Output nobody reads any more (`homeostat … | head`) is
/// dropped and the command finishes its work (rendering, importing, the
/// demo's clean-up), where `print!` would panic part-way; any other write
/// error is reported on stderr, once.
fn write_out(text: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if err.kind() != std::io::ErrorKind::BrokenPipe && !REPORTED.swap(true, Ordering::Relaxed) {
            eprintln!("homeostat: cannot write to stdout: {err}");
        }
    }
}

/// `println!` through [`write_out`].
macro_rules! outln {
    () => {
        $crate::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

// After the macros: the commands use them.
mod cmd;

/// How long `check-config` and `serve` wait for Prometheus to judge a query.
const PREFLIGHT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Self-healing for containerized microservices, around Prometheus and Alertmanager.
#[derive(Parser)]
#[command(name = "homeostat", version, propagate_version = true)]
struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HOMEOSTAT_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `homeostat=debug,tower_http=info`.
    #[arg(long, global = true, default_value = "info", env = "HOMEOSTAT_LOG")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: receive Alertmanager's webhook and track incidents.
    Serve(cmd::serve::ServeArgs),
    /// Validate a config file and print what it resolves to.
    CheckConfig(cmd::check_config::CheckConfigArgs),
    /// The local self-healing demo: two services in Docker, real Prometheus
    /// and Alertmanager, homeostat acting on injected faults.
    #[cfg(feature = "demo")]
    Demo(cmd::demo::DemoArgs),
    /// The demo's faults, repeated under each contender — nothing, Docker's
    /// restart policy, a health-check restarter, homeostat's playbook and
    /// its learning policy — with intervals and plots.
    #[cfg(feature = "demo")]
    Bench(cmd::demo::BenchArgs),
    /// Build the container images (homeostat and the demo services) from
    /// the static binaries next to this one, pulling nothing.
    #[cfg(feature = "demo")]
    Images(cmd::demo::ImagesArgs),
    /// Send HTTP requests at a fixed rate and report every outcome.
    #[cfg(feature = "demo")]
    Load(cmd::load::LoadArgs),
    /// Measure the forecasting and anomaly scoring offline.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Eval(cmd::eval::EvalCommand),
    /// What the learning policy learned and why it decided; move it between
    /// environments; judge it on the logged decisions. Reads the journal
    /// (read-only, safe beside a running homeostat; import writes).
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// The learning policy against the static playbook and a random safe
    /// action, in simulated fault scenarios.
    #[cfg(feature = "lab")]
    Simulate(cmd::simulate::SimulateArgs),
    /// Adaptive alert thresholds: show them, render rule files, fit one query.
    #[command(subcommand)]
    Thresholds(cmd::thresholds::ThresholdsCommand),
    /// Anomaly scores: the live series' scores now, or one query scored over its history.
    #[command(subcommand)]
    Anomaly(cmd::anomaly::AnomalyCommand),
    /// List a running homeostat's incidents (needs role viewer).
    Incidents(cmd::operate::IncidentsArgs),
    /// One incident's timeline: deliveries, decisions, what the actions did,
    /// how they were verified, and who was notified (needs role viewer).
    Incident(cmd::operate::IncidentArgs),
    /// Stop all actions until `resume`, journalled with who and why (needs role operator).
    Pause(cmd::operate::ControlArgs),
    /// Allow actions again after `pause` (needs role operator).
    Resume(cmd::operate::ControlArgs),
    /// Let an incident's proposed action go ahead (needs role operator).
    Approve(cmd::operate::AnswerArgs),
    /// Refuse an incident's proposed action; it is escalated (needs role operator).
    Reject(cmd::operate::AnswerArgs),
    /// Who paused, resumed, approved, rejected or gave feedback, and why (needs role viewer).
    Audit(cmd::operate::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("homeostat: {message}");
        return ExitCode::from(exit::CONFIG);
    }
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::CheckConfig(args) => cmd::check_config::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => cmd::demo::run(args),
        #[cfg(feature = "demo")]
        Command::Bench(args) => cmd::demo::run_bench(args),
        #[cfg(feature = "demo")]
        Command::Images(args) => cmd::demo::run_images(args),
        #[cfg(feature = "demo")]
        Command::Load(args) => cmd::load::run(args),
        #[cfg(feature = "lab")]
        Command::Eval(command) => cmd::eval::run(command),
        Command::Policy(command) => cmd::policy::run(command),
        #[cfg(feature = "lab")]
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Thresholds(command) => cmd::thresholds::run(command),
        Command::Anomaly(command) => cmd::anomaly::run(command),
        Command::Incidents(args) => cmd::operate::incidents(args),
        Command::Incident(args) => cmd::operate::incident(args),
        Command::Pause(args) => cmd::operate::control(args, true),
        Command::Resume(args) => cmd::operate::control(args, false),
        Command::Approve(args) => cmd::operate::answer(args, true),
        Command::Reject(args) => cmd::operate::answer(args, false),
        Command::Audit(args) => cmd::operate::audit(args),
    }
}

/// A tokio runtime for a command; prints the error and returns the exit code on failure.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("homeostat: cannot start the async runtime: {err}");
        ExitCode::from(exit::STARTUP)
    })
}

/// Loads and validates `file`, applying `overrides` in between; prints the
/// error and returns the exit code on failure.
fn load(file: &Path, overrides: impl FnOnce(&mut Config)) -> Result<(Config, Credentials), ExitCode> {
    let result = Config::load(file).and_then(|mut config| {
        overrides(&mut config);
        let credentials = config.validate(file, &ProcessEnv)?;
        Ok((config, credentials))
    });
    result.map_err(|err| {
        eprintln!("homeostat: {err}");
        ExitCode::from(exit::CONFIG)
    })
}
