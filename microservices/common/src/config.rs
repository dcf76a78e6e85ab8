//! Command-line flags and the settings a service runs with.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};

/// Flags shared by both demo services; each one can also come from the environment.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address of the main port (the API, /healthz and /metrics).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin port (fault injection, /healthz and /metrics; never affected by faults).
    #[arg(long, env = "ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,

    /// Version reported in /faults and service_build_info (defaults to the crate version).
    #[arg(long, env = "SERVICE_VERSION")]
    pub version_label: Option<String>,

    /// Simulate a bad build: every /api/* request answers 500 while /healthz stays 200.
    #[arg(
        long,
        env = "BAD_VERSION",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
    )]
    pub bad_version: bool,

    /// Memory limit to report as process_memory_limit_bytes when no cgroup limit is found.
    #[arg(long, env = "MEMORY_LIMIT_BYTES")]
    pub memory_limit_bytes: Option<u64>,
}

/// Which of the two demo services this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The front service: `GET /api/work` calls `{service_b_url}/api/data`.
    ServiceA {
        /// Base URL of service_b, e.g. `http://service_b:8080`.
        service_b_url: String,
        /// Timeout of each call to service_b.
        upstream_timeout: Duration,
    },
    /// The back service: `GET /api/data`.
    ServiceB,
}

impl Role {
    /// The service's name as used in logs, JSON and labels.
    pub fn service_name(&self) -> &'static str {
        match self {
            Role::ServiceA { .. } => "service_a",
            Role::ServiceB => "service_b",
        }
    }

    /// The route template of the service's API endpoint.
    pub fn api_route(&self) -> &'static str {
        match self {
            Role::ServiceA { .. } => "/api/work",
            Role::ServiceB => "/api/data",
        }
    }
}

/// What the crash fault calls to end the process: the binaries pass [`ExitHook::process_exit`],
/// tests pass a closure that records the code.
#[derive(Clone)]
pub struct ExitHook(Arc<dyn Fn(i32) + Send + Sync>);

impl ExitHook {
    /// Wraps a callback.
    pub fn new(f: impl Fn(i32) + Send + Sync + 'static) -> Self {
        ExitHook(Arc::new(f))
    }

    /// Exits the process with the code (`std::process::exit`).
    pub fn process_exit() -> Self {
        ExitHook::new(|code| std::process::exit(code))
    }

    /// Calls the hook.
    pub fn call(&self, code: i32) {
        (self.0)(code)
    }
}

impl fmt::Debug for ExitHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExitHook(..)")
    }
}

/// Everything [`crate::run`] needs besides the listeners.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which service this is.
    pub role: Role,
    /// Version label (`service_build_info{version}` and `/faults`).
    pub version: String,
    /// "Bad build" mode: every /api/* request answers 500.
    pub bad_version: bool,
    /// Fallback for process_memory_limit_bytes when no cgroup limit is found.
    pub memory_limit_bytes: Option<u64>,
    /// Called by the crash fault ~50 ms after answering.
    pub exit: ExitHook,
}

impl Settings {
    /// Settings with a good version, no memory limit override and `std::process::exit` as the exit hook.
    pub fn new(role: Role, version: impl Into<String>) -> Self {
        Settings {
            role,
            version: version.into(),
            bad_version: false,
            memory_limit_bytes: None,
            exit: ExitHook::process_exit(),
        }
    }

    /// Settings from the common flags; `default_version` is used when `--version-label` is absent.
    pub fn from_args(args: &CommonArgs, role: Role, default_version: &str) -> Self {
        Settings {
            role,
            version: args
                .version_label
                .clone()
                .unwrap_or_else(|| default_version.to_string()),
            bad_version: args.bad_version,
            memory_limit_bytes: args.memory_limit_bytes,
            exit: ExitHook::process_exit(),
        }
    }
}

/// Clap value parser for an `http://` or `https://` base URL; trailing slashes are dropped.
pub fn parse_base_url(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("invalid URL {s:?}: scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL {s:?}: no host"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.common.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(cli.common.admin_listen.to_string(), "0.0.0.0:8081");
        assert!(!cli.common.bad_version);
        assert_eq!(cli.common.memory_limit_bytes, None);

        let cli = Cli::try_parse_from(["x", "--bad-version", "true", "--memory-limit-bytes", "1024"]).unwrap();
        assert!(cli.common.bad_version);
        assert_eq!(cli.common.memory_limit_bytes, Some(1024));
        let cli = Cli::try_parse_from(["x", "--bad-version"]).unwrap();
        assert!(cli.common.bad_version);
        let cli = Cli::try_parse_from(["x", "--bad-version", "false"]).unwrap();
        assert!(!cli.common.bad_version);

        assert!(Cli::try_parse_from(["x", "--bad-version", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["x", "--listen", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["x", "--memory-limit-bytes", "-1"]).is_err());
    }

    #[test]
    fn settings_default_version() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let s = Settings::from_args(&cli.common, Role::ServiceB, "9.9.9");
        assert_eq!(s.version, "9.9.9");
        let cli = Cli::try_parse_from(["x", "--version-label", "2.0.0"]).unwrap();
        let s = Settings::from_args(&cli.common, Role::ServiceB, "9.9.9");
        assert_eq!(s.version, "2.0.0");
    }

    #[test]
    fn base_url_validation() {
        assert_eq!(
            parse_base_url("http://service_b:8080/").unwrap(),
            "http://service_b:8080"
        );
        assert_eq!(parse_base_url("https://b.example").unwrap(), "https://b.example");
        assert!(parse_base_url("ftp://b:21").is_err());
        assert!(parse_base_url("service_b:8080").is_err());
        assert!(parse_base_url("not a url").is_err());
    }
}
