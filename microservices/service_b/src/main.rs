//! service_b: the back demo service of `homeostat demo` (`GET /api/data`), with fault injection on
//! its admin port. Everything lives in demo-common.

use std::process::ExitCode;

use clap::Parser;
use demo_common::{CommonArgs, Role};

/// Demo back-end service: answers GET /api/data; faults are injected on the admin port.
#[derive(Debug, Parser)]
#[command(name = "service_b", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    demo_common::launch(cli.common, Role::ServiceB, env!("CARGO_PKG_VERSION"))
}
