//! The `homeostat` command: parses the CLI, loads the config, wires components.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod telemetry;

use clap::{Args, Parser, Subcommand};
use homeostat_core::action::{Backend, Operation, Target};
use homeostat_core::config::{Config, Credentials, ProcessEnv};
use homeostat_adapters::executor::docker::DockerExecutor;
use homeostat_adapters::executor::kubernetes::KubernetesExecutor;
use homeostat_adapters::executor::{Done, DryRun, ExecError, Executor};
use homeostat_core::guard::Readiness;
use homeostat_server::pipeline::{LogTransitions, Parts};
use homeostat_core::playbook::Playbook;
use homeostat_adapters::preflight::{self, Verdict};
use homeostat_server::respond::Responder;
use telemetry::LogFormat;

// glibc's allocator serializes on an arena lock when memory allocated on one
// thread (a request handler) is freed on another (the journal writer); under
// an alert storm that lock cost a fifth of the writer's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, documented in the README.
mod exit {
    pub const RUNTIME: u8 = 1;
    // 2 is clap's, for usage errors.
    pub const CONFIG: u8 = 3;
    pub const STARTUP: u8 = 4;
    /// `homeostat demo` stopped by Ctrl-C (128 + SIGINT, as shells report it).
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
        write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format_args!($($arg)*))
    };
}

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
    Serve(ServeArgs),
    /// Validate a config file and print what it resolves to.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// The local self-healing demo: two services in Docker, real Prometheus
    /// and Alertmanager, homeostat acting on injected faults.
    Demo(DemoArgs),
    /// Build the container images (homeostat and the demo services) from
    /// the static binaries next to this one, pulling nothing.
    Images {
        /// Where the binaries are; default: this binary's directory.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Send HTTP requests at a fixed rate and report every outcome.
    Load(LoadArgs),
    /// Measure the forecasting and anomaly scoring offline.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// What the learning policy learned and why it decided; move it between
    /// environments; judge it on the logged decisions. Reads the journal
    /// (read-only, safe beside a running homeostat; import writes).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The learning policy against the static playbook and a random safe
    /// action, in simulated fault scenarios.
    Simulate(SimulateArgs),
    /// Adaptive alert thresholds: show them, render rule files, fit one query.
    #[command(subcommand)]
    Thresholds(ThresholdsCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
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
struct PolicyArgs {
    /// The config file: its journal.path and actions.policy are used.
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Args)]
struct SimulateArgs {
    /// Faults to simulate (each picks one of the scenarios at random).
    #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
    episodes: usize,
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

#[derive(Subcommand)]
enum ThresholdsCommand {
    /// The current bands and why: each spec's latest rule update, every
    /// series' band and coverage, and the feedback steps that moved them.
    /// Read from the journal (`journal.path` of the config) that `serve` writes.
    Show {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the journal's state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fit every spec now and write its rule file into DIR, checked with
    /// promtool when installed; Prometheus is only queried, never reloaded.
    Render {
        #[arg(long, short)]
        config: PathBuf,
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
        #[arg(long, default_value = "1m", value_parser = positive_duration)]
        step: homeostat_core::duration::PromDuration,
        #[arg(long, default_value = "7d", value_parser = positive_duration)]
        history: homeostat_core::duration::PromDuration,
        #[arg(long, default_value = "1h", value_parser = positive_duration)]
        horizon: homeostat_core::duration::PromDuration,
        #[arg(long, default_value_t = 0.99, value_parser = coverage)]
        coverage: f64,
        /// Per series: labels and arrays of timestamps, point, lower, upper.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EvalCommand {
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
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rolling 1-hour-ahead forecasts: MASE against seasonal naive, and band coverage.
    Forecast {
        #[arg(long)]
        data: PathBuf,
        /// The windows file: forecasts touching a labelled anomaly are skipped.
        #[arg(long)]
        labels: PathBuf,
        #[arg(long, default_value = "1h", value_parser = positive_duration)]
        horizon: homeostat_core::duration::PromDuration,
        #[arg(long, default_value_t = 0.95, value_parser = coverage)]
        coverage: f64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--coverage`: a probability strictly between 0 and 1 (else a usage error).
fn coverage(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(c) if c > 0.0 && c < 1.0 => Ok(c),
        Ok(c) => Err(format!("must be in (0, 1), got {c}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration flag that must be longer than zero (`1m`, `7d`, …).
fn positive_duration(text: &str) -> Result<homeostat_core::duration::PromDuration, String> {
    let duration: homeostat_core::duration::PromDuration = text.parse().map_err(|e| format!("{e}"))?;
    if duration.0.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A count of at least one.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Args)]
struct DemoArgs {
    /// Faults to inject, in order: crash, hang, memory-leak, error-burst,
    /// bad-deploy, dependency-failure, none (the no-fault control).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "crash,hang,memory-leak,error-burst,bad-deploy,dependency-failure,none"
    )]
    faults: Vec<homeostat_demo::Fault>,
    /// Write report.json, report.md and timeline.svg here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests per second to service_a throughout.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long a fault may take to heal before it counts as not recovered.
    #[arg(long, default_value = "2m")]
    fault_timeout: homeostat_core::duration::PromDuration,
    /// homeostat decides and records what it would do, but does not act:
    /// the no-healing baseline.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct LoadArgs {
    /// The URL to send GET requests to.
    url: String,
    /// Requests per second (open loop: sent on time whatever the answers).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to send for.
    #[arg(long, default_value = "10s")]
    duration: homeostat_core::duration::PromDuration,
    /// A request not answered within this time counts as failed.
    #[arg(long, default_value = "5s")]
    timeout: homeostat_core::duration::PromDuration,
    /// Write every request's outcome here as CSV (due_ms,latency_ms,status).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// The YAML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Listen address, overriding `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Allow a non-loopback listen address without `auth` (overrides `server.allow_unauthenticated`).
    #[arg(long)]
    allow_unauthenticated: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("homeostat: {message}");
        return ExitCode::from(exit::CONFIG);
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Demo(args) => demo(args),
        Command::Images { bin_dir } => images(bin_dir),
        Command::Load(args) => load_command(args),
        Command::Eval(command) => eval(command),
        Command::Policy(command) => policy_command(command),
        Command::Simulate(args) => simulate(args),
        Command::Thresholds(command) => thresholds(command),
        Command::CheckConfig { file } => match load(&file, |_| {}) {
            Ok((config, credentials)) => {
                let auth = match (&credentials.bearer_token, &credentials.basic) {
                    (None, None) => "none".to_owned(),
                    (Some(_), None) => "bearer token".to_owned(),
                    (None, Some((user, _))) => format!("basic ({user})"),
                    (Some(_), Some((user, _))) => format!("bearer token or basic ({user})"),
                };
                let actions = match &config.actions {
                    None => "none (incidents are recorded, nothing is acted on)".to_owned(),
                    Some(a) => format!(
                        "{:?}{}, playbook {}, policy mode {}",
                        a.backend,
                        if a.dry_run { " in dry run" } else { "" },
                        a.playbook.display(),
                        serde_json::to_value(a.policy.mode)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or("?")
                    ),
                };
                let thresholds = match &config.thresholds {
                    None => "none".to_owned(),
                    Some(t) => format!(
                        "{} specs from {} into {}",
                        t.specs.len(),
                        t.prometheus_url,
                        t.rules_dir.display()
                    ),
                };
                let checked = match runtime() {
                    Ok(runtime) => runtime.block_on(preflight::check(&config, PREFLIGHT_TIMEOUT)),
                    Err(code) => return code,
                };
                let (mut rejected, mut unchecked) = (Vec::new(), String::new());
                for (query, verdict) in &checked {
                    match verdict {
                        Verdict::Accepted => {}
                        Verdict::Rejected(why) => rejected.push(format!("{}: {why}", query.key)),
                        Verdict::Unchecked(why) => {
                            unchecked.push_str(&format!("\n    not checked: {}: {why}", query.key))
                        }
                    }
                }
                if !rejected.is_empty() {
                    for line in &rejected {
                        eprintln!("homeostat: {}: {line}", file.display());
                    }
                    return ExitCode::from(exit::CONFIG);
                }
                let accepted = checked.iter().filter(|(_, v)| *v == Verdict::Accepted).count();
                outln!(
                    "{}: OK\n  listen: {}\n  auth: {auth}\n  journal: {}\n  actions: {actions}\n  thresholds: {thresholds}\n  PromQL: {} of {} queries accepted by Prometheus{unchecked}",
                    file.display(),
                    config.server.listen,
                    config.journal.path.display(),
                    accepted,
                    checked.len(),
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
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

fn serve(args: ServeArgs) -> ExitCode {
    let (config, credentials) = match load(&args.config, |config| {
        if let Some(listen) = args.listen {
            config.server.listen = listen;
        }
        config.server.allow_unauthenticated |= args.allow_unauthenticated;
    }) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("homeostat: cannot listen on {listen}: {err} (server.listen or --listen)");
                return ExitCode::from(exit::STARTUP);
            }
        };
        // Listen for signals from now on, not from the first time the server polls for them.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(());
        });
        let shutdown = async move {
            let _ = stopped.await;
        };
        // A query Prometheus rejects is a config error; one it could not
        // judge (Prometheus down) is not, or homeostat could not start
        // before its Prometheus. A signal meanwhile stops the service as
        // soon as it starts.
        let mut rejected = false;
        for (query, verdict) in preflight::check(&config, PREFLIGHT_TIMEOUT).await {
            match verdict {
                Verdict::Accepted => {}
                Verdict::Rejected(why) => {
                    eprintln!("homeostat: {}: {}: {why}", args.config.display(), query.key);
                    rejected = true;
                }
                Verdict::Unchecked(why) => tracing::warn!(key = %query.key, "PromQL not checked: {why}"),
            }
        }
        if rejected {
            return ExitCode::from(exit::CONFIG);
        }
        let served = match config.actions.clone() {
            None => homeostat_server::app::serve(config, credentials, listener, shutdown, |_| LogTransitions).await,
            Some(actions) => {
                let playbook = match Playbook::load(&actions.playbook) {
                    Ok(playbook) => playbook,
                    Err(err) => {
                        eprintln!("homeostat: {err}");
                        return ExitCode::from(exit::CONFIG);
                    }
                };
                let connected = match actions.backend {
                    Backend::Docker => DockerExecutor::connect(actions.docker.clone())
                        .await
                        .map(Backends::Docker),
                    Backend::Kubernetes => KubernetesExecutor::connect(actions.kubernetes.clone())
                        .await
                        .map(Backends::Kubernetes),
                };
                let executor = match connected {
                    Ok(executor) => executor,
                    Err(err) => {
                        // Docker's errors name the address and its key; the Kubernetes client's do not.
                        let key = match actions.backend {
                            Backend::Docker => "",
                            Backend::Kubernetes => {
                                " (actions.kubernetes, or the kubeconfig / in-cluster service account)"
                            }
                        };
                        eprintln!("homeostat: cannot act: {err}{key}");
                        return ExitCode::from(exit::STARTUP);
                    }
                };
                let (config, credentials) = (config, credentials);
                if actions.dry_run {
                    let respond = move |parts: Parts| Responder::new(DryRun(executor), parts, playbook, actions);
                    homeostat_server::app::serve(config, credentials, listener, shutdown, respond).await
                } else {
                    let respond = move |parts: Parts| Responder::new(executor, parts, playbook, actions);
                    homeostat_server::app::serve(config, credentials, listener, shutdown, respond).await
                }
            }
        };
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(err @ homeostat_server::app::AppError::Journal(_)) => {
                eprintln!("homeostat: {err}");
                ExitCode::from(exit::STARTUP)
            }
            Err(err) => {
                eprintln!("homeostat: {err}");
                ExitCode::from(exit::RUNTIME)
            }
        }
    })
}

fn policy_command(command: PolicyCommand) -> ExitCode {
    use homeostat_journal::policy::JournalReader;
    use homeostat_journal::learned;
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
    let learning = settings.learning;
    let journal = &config.journal.path;
    let reader = || JournalReader::open(journal).map_err(learned::LearnedError::from);
    let result =
        match &command {
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
                .map(|e| {
                    if *json {
                        serde_json::to_string_pretty(&e).unwrap_or_default()
                    } else {
                        learned::evaluation_table(&e)
                    }
                }),
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

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("homeostat: cannot start the async runtime: {err}");
        ExitCode::from(exit::STARTUP)
    })
}

fn this_binary() -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|err| {
        eprintln!("homeostat: cannot find this binary: {err}");
        ExitCode::from(exit::STARTUP)
    })
}

fn demo(args: DemoArgs) -> ExitCode {
    let (runtime, homeostat) = match (runtime(), this_binary()) {
        (Ok(runtime), Ok(binary)) => (runtime, binary),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let mut options = homeostat_demo::Options::new(homeostat);
    options.faults = args.faults;
    options.report_dir = args.report;
    options.rate = args.rate;
    options.fault_timeout = args.fault_timeout.0;
    options.dry_run = args.dry_run;
    let say: homeostat_demo::Say = std::sync::Arc::new(|line: &str| outln!("{line}"));
    match runtime.block_on(homeostat_demo::run(options, say)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(homeostat_demo::DemoError::Interrupted) => {
            eprintln!("homeostat demo: interrupted; every container, process and temporary file is removed");
            ExitCode::from(exit::INTERRUPTED)
        }
        Err(err) => {
            eprintln!("homeostat demo: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn images(bin_dir: Option<PathBuf>) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let bin_dir = match bin_dir.map_or_else(
        || this_binary().map(|b| b.parent().map(Path::to_path_buf).unwrap_or_default()),
        Ok,
    ) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let say: homeostat_demo::Say = std::sync::Arc::new(|line: &str| outln!("{line}"));
    let built = runtime.block_on(async {
        let executor = homeostat_demo::connect_docker().await?;
        homeostat_demo::build_images(&executor, &bin_dir, true, &say).await
    });
    match built {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("homeostat images: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn load_command(args: LoadArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if !(args.rate.is_finite() && args.rate > 0.0) {
        eprintln!("homeostat load: --rate must be a positive number, got {}", args.rate);
        return ExitCode::from(2);
    }
    let client = match reqwest::Client::builder().timeout(args.timeout.0).build() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("homeostat load: cannot build an HTTP client: {err}");
            return ExitCode::from(exit::STARTUP);
        }
    };
    let url = args.url.clone();
    let make: homeostat_demo::load::MakeRequest = std::sync::Arc::new(move |client: &reqwest::Client, _| client.get(&url));
    let samples = runtime.block_on(homeostat_demo::load::open_loop(client, args.rate, args.duration.0, make));
    if let Some(path) = &args.out {
        let mut csv = String::from("due_ms,latency_ms,status\n");
        for s in &samples {
            let status = s.status.map_or_else(|| "error".to_owned(), |c| c.to_string());
            csv.push_str(&format!(
                "{:.3},{:.3},{status}\n",
                s.due.as_secs_f64() * 1000.0,
                s.latency.as_secs_f64() * 1000.0
            ));
        }
        if let Err(err) = std::fs::write(path, csv) {
            eprintln!("homeostat load: cannot write {}: {err}", path.display());
            return ExitCode::from(exit::RUNTIME);
        }
    }
    let summary = homeostat_demo::load::summarize(&samples);
    if args.json {
        outln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else {
        outln!(
            "{} requests to {}: {} succeeded (2xx), {} failed; {:.1} ok/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            summary.requests, args.url, summary.succeeded, summary.failed, summary.throughput,
            summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms
        );
    }
    ExitCode::SUCCESS
}

/// An eval summary as pretty JSON (`--json`) or as its table.
fn json_or_table<T: serde::Serialize>(json: bool, summary: &T, table: impl Fn(&T) -> String) -> String {
    if json {
        serde_json::to_string_pretty(summary).unwrap_or_default()
    } else {
        table(summary)
    }
}

fn eval(command: EvalCommand) -> ExitCode {
    let result = match command {
        EvalCommand::Nab {
            data,
            labels,
            out,
            plot,
            rules,
            learning,
        } => homeostat_lab::eval::run_nab(&data, &labels, &out, plot, &rules, learning)
            .map(|summary| homeostat_lab::eval::nab_table(&summary)),
        EvalCommand::NabScore {
            data,
            labels,
            results,
            json,
        } => homeostat_lab::eval::run_nab_score(&data, &labels, &results)
            .map(|summary| json_or_table(json, &summary, homeostat_lab::eval::nab_score_table)),
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

fn simulate(args: SimulateArgs) -> ExitCode {
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

fn thresholds(command: ThresholdsCommand) -> ExitCode {
    use homeostat_adapters::rules as apply;
    use homeostat_core::threshold;
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match command {
        ThresholdsCommand::Show { config, json } => {
            let (config, _) = match load(&config, |_| {}) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
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
            let (config, _) = match load(&file, |_| {}) {
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
            json,
        } => match runtime.block_on(apply::fit_query(
            &prometheus,
            &query,
            step.0,
            history.0,
            horizon.0,
            coverage,
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

/// The backend chosen in the config.
enum Backends {
    Docker(DockerExecutor),
    Kubernetes(KubernetesExecutor),
}

impl Executor for Backends {
    fn backend(&self) -> Backend {
        match self {
            Backends::Docker(e) => e.backend(),
            Backends::Kubernetes(e) => e.backend(),
        }
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        match self {
            Backends::Docker(e) => e.readiness(target).await,
            Backends::Kubernetes(e) => e.readiness(target).await,
        }
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        match self {
            Backends::Docker(e) => e.execute(operation).await,
            Backends::Kubernetes(e) => e.execute(operation).await,
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot listen for SIGTERM; only SIGINT stops homeostat.");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
