//! `homeostat demo`, `homeostat bench` and `homeostat images`: the local
//! self-healing demo, the chaos benchmark on its stack, and the container
//! images they run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use homeostat_core::duration::PromDuration;

use crate::exit;

#[derive(Args)]
pub struct DemoArgs {
    /// Faults to inject, in order: crash, hang, stale-alert, memory-leak,
    /// error-burst, dependency-failure, bad-deploy, freeze, kill, none (the
    /// no-fault control).
    #[arg(long, value_delimiter = ',', default_values_t = homeostat_demo::Fault::ALL)]
    faults: Vec<homeostat_demo::Fault>,
    /// Write report.json, report.md and timeline.svg here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests per second to service_a throughout.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long a fault may take to heal before it counts as not recovered.
    #[arg(long, default_value = "2m")]
    fault_timeout: PromDuration,
    /// homeostat decides and records what it would do, but does not act:
    /// the no-healing baseline.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Faults to inject, each --trials times, in a seeded random order:
    /// crash, hang, stale-alert, memory-leak, error-burst,
    /// dependency-failure, bad-deploy, freeze, drift, kill, stop (a clean
    /// `docker stop`), none (the no-fault control).
    #[arg(long, value_delimiter = ',', default_values_t = homeostat_demo::bench::DEFAULT_FAULTS)]
    faults: Vec<homeostat_demo::Fault>,
    /// Who heals: none, restart-policy, healthcheck, playbook, learned.
    /// Each runs on a stack of its own, all at once.
    #[arg(long, value_delimiter = ',', default_values_t = homeostat_demo::bench::Contender::ALL)]
    contenders: Vec<homeostat_demo::bench::Contender>,
    /// Trials of each fault per contender.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// Seeds the trials' order and the bootstrap intervals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write report.json, report.md and the plots here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests per second to each stack's service_a.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// How long a fault may take to heal before its trial counts as not recovered.
    #[arg(long, default_value = "90s")]
    fault_timeout: PromDuration,
}

#[derive(Args)]
pub struct ImagesArgs {
    /// Where the binaries are; default: this binary's directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// This binary's path, which the demo runs as its homeostat.
fn this_binary() -> Result<PathBuf, ExitCode> {
    std::env::current_exe().map_err(|err| {
        eprintln!("homeostat: cannot find this binary: {err}");
        ExitCode::from(exit::STARTUP)
    })
}

pub fn run(args: DemoArgs) -> ExitCode {
    let (runtime, homeostat) = match (crate::runtime(), this_binary()) {
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
        Ok(report) => match report.failure() {
            None => ExitCode::SUCCESS,
            // The demo ran, and homeostat did not do its job: a failure all the same.
            Some(failure) => {
                eprintln!("homeostat demo: {failure}");
                ExitCode::from(exit::RUNTIME)
            }
        },
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

/// `homeostat bench`: fails when a contender's stack failed part-way (the
/// report still holds the trials done), not when a contender loses.
pub fn run_bench(args: BenchArgs) -> ExitCode {
    let (runtime, homeostat) = match (crate::runtime(), this_binary()) {
        (Ok(runtime), Ok(binary)) => (runtime, binary),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let mut options = homeostat_demo::bench::BenchOptions::new(homeostat);
    options.demo.faults = args.faults;
    options.demo.report_dir = args.report;
    options.demo.rate = args.rate;
    options.demo.fault_timeout = args.fault_timeout.0;
    options.contenders = args.contenders;
    options.trials = args.trials as usize;
    options.seed = args.seed;
    let say: homeostat_demo::Say = std::sync::Arc::new(|line: &str| outln!("{line}"));
    match runtime.block_on(homeostat_demo::bench::run(options, say)) {
        Ok(report) if report.failures.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("homeostat bench: {}", report.failures.join("; "));
            ExitCode::from(exit::RUNTIME)
        }
        Err(homeostat_demo::DemoError::Interrupted) => {
            eprintln!("homeostat bench: interrupted; every container, process and temporary file is removed");
            ExitCode::from(exit::INTERRUPTED)
        }
        Err(err) => {
            eprintln!("homeostat bench: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// `homeostat images`.
pub fn run_images(args: ImagesArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let bin_dir = match args.bin_dir.map_or_else(
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
