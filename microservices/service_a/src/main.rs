//! service_a: the front demo service of `homeostat demo` (`GET /api/work` calls service_b), with
//! fault injection on its admin port. Everything lives in demo-common.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use demo_common::{parse_base_url, CommonArgs, Role};

/// Demo front service: GET /api/work calls service_b's /api/data; faults are injected on the admin port.
#[derive(Debug, Parser)]
#[command(name = "service_a", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    /// Base URL of service_b.
    #[arg(long, env = "SERVICE_B_URL", default_value = "http://service_b:8080", value_parser = parse_base_url)]
    service_b_url: String,

    /// Timeout of each call to service_b, in milliseconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    upstream_timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let role = Role::ServiceA {
        service_b_url: cli.service_b_url,
        upstream_timeout: Duration::from_millis(cli.upstream_timeout_ms),
    };
    demo_common::launch(cli.common, role, env!("CARGO_PKG_VERSION"))
}
