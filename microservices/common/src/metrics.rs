//! The metrics registry shared by the main and admin ports, including the process metrics that are
//! read from /proc at scrape time.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::Settings;
use crate::faults::FaultKind;

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of `http_request_duration_seconds`.
pub const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Limits at or above this (cgroup "unlimited" is 2^63 rounded to a page) mean "no limit".
const ABSURD_LIMIT: u64 = 1 << 60;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteCode {
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub upstream: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FaultLabel {
    pub fault: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    bad: &'static str,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Upstream call outcome, the `outcome` label of `upstream_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
}

/// All metrics of one service.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RouteCode, Counter>,
    pub duration: HistogramFamily,
    pub in_flight: Gauge,
    upstream: Family<UpstreamLabels, Counter>,
    fault_active: Family<FaultLabel, Gauge>,
}

impl Metrics {
    pub fn new(settings: &Settings, kinds: &[FaultKind]) -> Self {
        let mut registry = Registry::default();

        let requests = Family::<RouteCode, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served on the main port (except /metrics), by route template and status code",
            requests.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Duration of HTTP requests served on the main port (except /metrics), by route template",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served on the main port",
            in_flight.clone(),
        );

        let upstream = Family::<UpstreamLabels, Counter>::default();
        if matches!(settings.role, crate::Role::ServiceA { .. }) {
            for outcome in ["success", "failure"] {
                upstream
                    .get_or_create(&UpstreamLabels {
                        upstream: "service_b",
                        outcome,
                    })
                    .inc_by(0);
            }
            registry.register(
                "upstream_requests",
                "Calls to upstream services, by upstream and outcome",
                upstream.clone(),
            );
        }

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: settings.version.clone(),
                bad: if settings.bad_version { "true" } else { "false" },
            })
            .set(1);
        registry.register(
            "service_build_info",
            "Build of the running service (always 1)",
            build_info,
        );

        let fault_active = Family::<FaultLabel, Gauge>::default();
        for kind in kinds {
            fault_active.get_or_create(&FaultLabel { fault: kind.as_str() }).set(0);
        }
        registry.register(
            "service_fault_active",
            "Whether an injected fault is active (1) or not (0), by fault kind",
            fault_active.clone(),
        );

        registry.register_collector(Box::new(ProcessCollector::new(settings.memory_limit_bytes)));

        Metrics {
            registry,
            requests,
            duration,
            in_flight,
            upstream,
            fault_active,
        }
    }

    pub fn upstream(&self, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        };
        self.upstream
            .get_or_create(&UpstreamLabels {
                upstream: "service_b",
                outcome,
            })
            .inc();
    }

    pub fn set_fault_active(&self, kind: FaultKind, active: bool) {
        self.fault_active
            .get_or_create(&FaultLabel { fault: kind.as_str() })
            .set(i64::from(active));
    }

    /// The whole registry in OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// `process_*` metrics, read from /proc/self at scrape time.
#[derive(Debug)]
struct ProcessCollector {
    page_size: u64,
    clock_ticks: u64,
    start_time_seconds: f64,
    memory_limit_fallback: Option<u64>,
}

impl ProcessCollector {
    fn new(memory_limit_fallback: Option<u64>) -> Self {
        let (page_size, clock_ticks) = read_auxv();
        let start_time_seconds = process_start_time(clock_ticks).unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        ProcessCollector {
            page_size,
            clock_ticks,
            start_time_seconds,
            memory_limit_fallback,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(pages) = fs::read_to_string("/proc/self/statm")
            .ok()
            .as_deref()
            .and_then(parse_statm_resident)
        {
            let gauge = ConstGauge::new(pages.saturating_mul(self.page_size) as f64);
            let m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(m)?;
        }
        if let Some(stat) = fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            let counter = ConstCounter::new((stat.utime + stat.stime) as f64 / self.clock_ticks as f64);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(m)?;
        }
        let start = ConstGauge::new(self.start_time_seconds);
        let m = encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            None,
            start.metric_type(),
        )?;
        start.encode(m)?;
        if let Some(limit) = memory_limit(Path::new("/sys/fs/cgroup")).or(self.memory_limit_fallback) {
            let gauge = ConstGauge::new(limit as f64);
            let m = encoder.encode_descriptor(
                "process_memory_limit_bytes",
                "Memory limit of the process's container in bytes (cgroup limit, else --memory-limit-bytes).",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(m)?;
        }
        Ok(())
    }
}

/// Resident pages, the second field of /proc/self/statm.
fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// utime, stime and starttime (fields 14, 15 and 22) of /proc/self/stat; the command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last ')'.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    Some(Stat {
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

/// Page size and clock ticks per second from the auxiliary vector (AT_PAGESZ, AT_CLKTCK), falling back
/// to 4096 and 100.
fn read_auxv() -> (u64, u64) {
    let mut page_size = 4096;
    let mut clock_ticks = 100;
    if let Ok(auxv) = fs::read("/proc/self/auxv") {
        for pair in auxv.chunks_exact(16) {
            let key = u64::from_ne_bytes(pair[..8].try_into().unwrap_or([0; 8]));
            let value = u64::from_ne_bytes(pair[8..].try_into().unwrap_or([0; 8]));
            match key {
                6 if value > 0 => page_size = value,
                17 if value > 0 => clock_ticks = value,
                _ => {}
            }
        }
    }
    (page_size, clock_ticks)
}

/// Start time in seconds since the epoch: boot time (btime of /proc/stat) plus starttime ticks.
fn process_start_time(clock_ticks: u64) -> Option<f64> {
    let stat = parse_stat(&fs::read_to_string("/proc/self/stat").ok()?)?;
    let btime: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime as f64 + stat.starttime as f64 / clock_ticks as f64)
}

/// A cgroup memory limit file's content: bytes, or None for "max" and absurd values.
pub fn parse_memory_limit(content: &str) -> Option<u64> {
    let v: u64 = content.trim().parse().ok()?;
    (v > 0 && v < ABSURD_LIMIT).then_some(v)
}

/// The memory limit of the cgroup mounted at `root`: cgroup v2 `memory.max`, else cgroup v1
/// `memory/memory.limit_in_bytes`.
pub fn memory_limit(root: &Path) -> Option<u64> {
    [
        root.join("memory.max"),
        root.join("memory").join("memory.limit_in_bytes"),
    ]
    .iter()
    .find_map(|p| parse_memory_limit(&fs::read_to_string(p).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 5000 12345 678 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 5000
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_statm_resident("1000 250 30 1 0 100 0\n"), Some(250));
        assert_eq!(parse_statm_resident(""), None);
    }

    #[test]
    fn real_proc_files_parse() {
        let stat = parse_stat(&fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert!(stat.starttime > 0);
        assert!(parse_statm_resident(&fs::read_to_string("/proc/self/statm").unwrap()).unwrap() > 0);
        let (page, ticks) = read_auxv();
        assert!(page >= 4096 && page.is_power_of_two());
        assert!(ticks > 0);
        let start = process_start_time(ticks).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "start {start} now {now}"
        );
    }

    #[test]
    fn memory_limit_files() {
        assert_eq!(parse_memory_limit("268435456\n"), Some(268_435_456));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("0"), None);

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let v1 = dir.join("memory");
        fs::create_dir_all(&v1).unwrap();
        assert_eq!(memory_limit(dir), None);
        fs::write(v1.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        assert_eq!(memory_limit(dir), Some(1 << 30));
        fs::write(dir.join("memory.max"), "max\n").unwrap();
        assert_eq!(memory_limit(dir), Some(1 << 30));
        fs::write(dir.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(memory_limit(dir), Some(1 << 29));
    }
}
