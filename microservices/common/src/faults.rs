//! Fault kinds, the validation of injection requests and the state of the active faults.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

use crate::metrics::Metrics;

/// The kinds of fault the admin port can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Exit the process (not a panic) with `exit_code`.
    Crash,
    /// Main-port requests wait without answering until the hang ends.
    Hang,
    /// Resident memory grows at `rate_mib_per_second`.
    Leak,
    /// `threads` OS threads spin.
    Cpu,
    /// `latency_ms` is added to every /api/* request.
    Latency,
    /// A `ratio` of /api/* requests answer 500.
    Errors,
    /// service_a's calls to service_b fail without being made (service_a only).
    Dependency,
}

impl FaultKind {
    /// Every kind, in the order they are listed.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Crash,
        FaultKind::Hang,
        FaultKind::Leak,
        FaultKind::Cpu,
        FaultKind::Latency,
        FaultKind::Errors,
        FaultKind::Dependency,
    ];

    /// The kind's name in URLs, JSON and the `fault` label.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Hang => "hang",
            FaultKind::Leak => "leak",
            FaultKind::Cpu => "cpu",
            FaultKind::Latency => "latency",
            FaultKind::Errors => "errors",
            FaultKind::Dependency => "dependency",
        }
    }

    /// The request-body fields this kind accepts.
    pub fn allowed_fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Crash => &["exit_code"],
            FaultKind::Hang | FaultKind::Dependency => &["duration_seconds"],
            FaultKind::Leak => &["duration_seconds", "rate_mib_per_second"],
            FaultKind::Cpu => &["duration_seconds", "threads"],
            FaultKind::Latency => &["duration_seconds", "latency_ms"],
            FaultKind::Errors => &["duration_seconds", "ratio"],
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown fault kind {s:?}; expected one of: {}", names.join(", "))
        })
    }
}

/// Default leak rate.
pub const DEFAULT_LEAK_MIB_PER_SECOND: f64 = 4.0;
/// Default number of spinning threads.
pub const DEFAULT_CPU_THREADS: u32 = 1;
/// Default added latency.
pub const DEFAULT_LATENCY_MS: u64 = 500;
/// Default error ratio.
pub const DEFAULT_ERROR_RATIO: f64 = 1.0;
/// Default crash exit code.
pub const DEFAULT_EXIT_CODE: i32 = 1;

const MAX_DURATION_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
const MAX_LEAK_MIB_PER_SECOND: f64 = 1024.0;
const MAX_CPU_THREADS: u32 = 64;
const MAX_LATENCY_MS: u64 = 3_600_000;
/// The leak stops growing here even without a container limit, to spare the host.
const LEAK_CAP_BYTES: usize = 16 << 30;
const LEAK_TICK: Duration = Duration::from_millis(100);
/// Leaked memory is reserved in blocks above glibc's largest mmap threshold (32 MiB), so every
/// block is its own mapping and is returned to the system when the leak ends.
const LEAK_BLOCK_BYTES: usize = 64 << 20;
const MIB: f64 = 1024.0 * 1024.0;

/// The body of `POST /faults/{kind}`, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    duration_seconds: Option<f64>,
    rate_mib_per_second: Option<f64>,
    ratio: Option<f64>,
    latency_ms: Option<u64>,
    threads: Option<u32>,
    exit_code: Option<i32>,
}

/// A validated fault with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    /// See [`FaultKind::Crash`].
    Crash {
        /// Exit code.
        exit_code: i32,
    },
    /// See [`FaultKind::Hang`].
    Hang,
    /// See [`FaultKind::Leak`].
    Leak {
        /// Growth rate of resident memory.
        rate_mib_per_second: f64,
    },
    /// See [`FaultKind::Cpu`].
    Cpu {
        /// Number of spinning threads.
        threads: u32,
    },
    /// See [`FaultKind::Latency`].
    Latency {
        /// Added latency.
        latency_ms: u64,
    },
    /// See [`FaultKind::Errors`].
    Errors {
        /// Share of /api/* requests that answer 500, in [0, 1].
        ratio: f64,
    },
    /// See [`FaultKind::Dependency`].
    Dependency,
}

impl FaultSpec {
    /// The spec's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            FaultSpec::Crash { .. } => FaultKind::Crash,
            FaultSpec::Hang => FaultKind::Hang,
            FaultSpec::Leak { .. } => FaultKind::Leak,
            FaultSpec::Cpu { .. } => FaultKind::Cpu,
            FaultSpec::Latency { .. } => FaultKind::Latency,
            FaultSpec::Errors { .. } => FaultKind::Errors,
            FaultSpec::Dependency => FaultKind::Dependency,
        }
    }

    /// The parameters as JSON fields (empty for faults without parameters).
    fn params(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            FaultSpec::Crash { exit_code } => {
                m.insert("exit_code".into(), json!(exit_code));
            }
            FaultSpec::Leak { rate_mib_per_second } => {
                m.insert("rate_mib_per_second".into(), json!(rate_mib_per_second));
            }
            FaultSpec::Cpu { threads } => {
                m.insert("threads".into(), json!(threads));
            }
            FaultSpec::Latency { latency_ms } => {
                m.insert("latency_ms".into(), json!(latency_ms));
            }
            FaultSpec::Errors { ratio } => {
                m.insert("ratio".into(), json!(ratio));
            }
            FaultSpec::Hang | FaultSpec::Dependency => {}
        }
        m
    }
}

/// A validated injection request: the fault and how long it lasts (None: until cleared).
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The fault.
    pub spec: FaultSpec,
    /// When set, the fault clears itself after this long.
    pub duration: Option<Duration>,
}

/// Validates the body of `POST /faults/{kind}`. An empty body means all defaults. The error says
/// what is wrong and where (serde_json's line and column, or the field's name).
pub fn parse_injection(kind: FaultKind, body: &[u8]) -> Result<Injection, String> {
    let req: FaultRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FaultRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?
    };
    let present = [
        ("duration_seconds", req.duration_seconds.is_some()),
        ("rate_mib_per_second", req.rate_mib_per_second.is_some()),
        ("ratio", req.ratio.is_some()),
        ("latency_ms", req.latency_ms.is_some()),
        ("threads", req.threads.is_some()),
        ("exit_code", req.exit_code.is_some()),
    ];
    let allowed = kind.allowed_fields();
    if let Some((field, _)) = present.iter().find(|(f, p)| *p && !allowed.contains(f)) {
        return Err(format!(
            "field `{field}` does not apply to fault `{kind}` (allowed fields: {})",
            allowed.join(", ")
        ));
    }

    let duration = match req.duration_seconds {
        None => None,
        Some(d) if d.is_finite() && d > 0.0 && d <= MAX_DURATION_SECONDS => Some(Duration::from_secs_f64(d)),
        Some(d) => {
            return Err(format!(
                "field `duration_seconds` must be a finite number > 0 and <= {MAX_DURATION_SECONDS}, got {d}"
            ))
        }
    };
    let spec = match kind {
        FaultKind::Crash => {
            let exit_code = req.exit_code.unwrap_or(DEFAULT_EXIT_CODE);
            if !(0..=255).contains(&exit_code) {
                return Err(format!("field `exit_code` must be in [0, 255], got {exit_code}"));
            }
            FaultSpec::Crash { exit_code }
        }
        FaultKind::Hang => FaultSpec::Hang,
        FaultKind::Leak => {
            let rate = req.rate_mib_per_second.unwrap_or(DEFAULT_LEAK_MIB_PER_SECOND);
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_LEAK_MIB_PER_SECOND) {
                return Err(format!(
                    "field `rate_mib_per_second` must be a number > 0 and <= {MAX_LEAK_MIB_PER_SECOND}, got {rate}"
                ));
            }
            FaultSpec::Leak {
                rate_mib_per_second: rate,
            }
        }
        FaultKind::Cpu => {
            let threads = req.threads.unwrap_or(DEFAULT_CPU_THREADS);
            if !(1..=MAX_CPU_THREADS).contains(&threads) {
                return Err(format!(
                    "field `threads` must be in [1, {MAX_CPU_THREADS}], got {threads}"
                ));
            }
            FaultSpec::Cpu { threads }
        }
        FaultKind::Latency => {
            let latency_ms = req.latency_ms.unwrap_or(DEFAULT_LATENCY_MS);
            if latency_ms > MAX_LATENCY_MS {
                return Err(format!(
                    "field `latency_ms` must be <= {MAX_LATENCY_MS}, got {latency_ms}"
                ));
            }
            FaultSpec::Latency { latency_ms }
        }
        FaultKind::Errors => {
            let ratio = req.ratio.unwrap_or(DEFAULT_ERROR_RATIO);
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!("field `ratio` must be a number in [0, 1], got {ratio}"));
            }
            FaultSpec::Errors { ratio }
        }
        FaultKind::Dependency => FaultSpec::Dependency,
    };
    Ok(Injection { spec, duration })
}

/// Why a fault was cleared, for the log line.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ClearReason {
    Admin,
    Expired,
    Shutdown,
}

impl ClearReason {
    fn as_str(self) -> &'static str {
        match self {
            ClearReason::Admin => "admin",
            ClearReason::Expired => "expired",
            ClearReason::Shutdown => "shutdown",
        }
    }
}

/// The background work that makes a fault real; dropping the active fault stops it.
enum Worker {
    None,
    Task(AbortHandle),
    Threads(Arc<AtomicBool>),
}

struct Active {
    spec: FaultSpec,
    expires_at: Option<Instant>,
    generation: u64,
    expiry: Option<AbortHandle>,
    worker: Worker,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(expiry) = self.expiry.take() {
            expiry.abort();
        }
        match &self.worker {
            Worker::None => {}
            Worker::Task(task) => task.abort(),
            Worker::Threads(stop) => stop.store(true, Ordering::Relaxed),
        }
    }
}

#[derive(Default)]
struct Inner {
    active: BTreeMap<FaultKind, Active>,
    /// Accumulated error ratio: a request fails each time it reaches 1, so exactly `ratio` of the
    /// requests fail, spread evenly.
    error_credit: f64,
    generation: u64,
}

/// The active faults of one service. Must be used inside a tokio runtime.
pub(crate) struct Faults {
    kinds: Vec<FaultKind>,
    inner: Mutex<Inner>,
    hang: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Faults {
    pub fn new(kinds: Vec<FaultKind>, metrics: Arc<Metrics>) -> Self {
        Faults {
            kinds,
            inner: Mutex::new(Inner::default()),
            hang: watch::Sender::new(false),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn supports(&self, kind: FaultKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Activates a fault (not a crash), replacing the parameters of an active one of the same kind.
    pub fn inject(self: &Arc<Self>, injection: Injection) {
        let kind = injection.spec.kind();
        debug_assert!(kind != FaultKind::Crash, "crash is not a lasting fault");
        let worker = match injection.spec {
            FaultSpec::Leak { rate_mib_per_second } => {
                Worker::Task(tokio::spawn(leak(rate_mib_per_second)).abort_handle())
            }
            FaultSpec::Cpu { threads } => {
                let stop = Arc::new(AtomicBool::new(false));
                for i in 0..threads {
                    let stop = stop.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("fault-cpu-{i}"))
                        .spawn(move || spin(&stop));
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot start a cpu fault thread");
                    }
                }
                Worker::Threads(stop)
            }
            _ => Worker::None,
        };
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let expires_at = injection.duration.map(|d| Instant::now() + d);
        let expiry = expires_at.map(|deadline| {
            let faults: Weak<Faults> = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                if let Some(faults) = faults.upgrade() {
                    faults.expire(kind, generation);
                }
            })
            .abort_handle()
        });
        if kind == FaultKind::Errors {
            inner.error_credit = 0.0;
        }
        let params = injection.spec.params();
        let replaced = inner
            .active
            .insert(
                kind,
                Active {
                    spec: injection.spec,
                    expires_at,
                    generation,
                    expiry,
                    worker,
                },
            )
            .is_some();
        self.sync(&inner);
        drop(inner);
        info!(
            fault = kind.as_str(),
            params = %serde_json::Value::Object(params),
            duration_seconds = injection.duration.map(|d| d.as_secs_f64()),
            replaced,
            "fault injected"
        );
    }

    /// Clears one fault; returns whether it was active.
    pub fn clear(&self, kind: FaultKind, reason: ClearReason) -> bool {
        let removed = {
            let mut inner = self.lock();
            let removed = inner.active.remove(&kind);
            self.sync(&inner);
            removed
        };
        let was_active = removed.is_some();
        drop(removed);
        if was_active {
            info!(fault = kind.as_str(), reason = reason.as_str(), "fault cleared");
        }
        was_active
    }

    /// Clears every fault.
    pub fn clear_all(&self, reason: ClearReason) {
        let removed = {
            let mut inner = self.lock();
            let removed = std::mem::take(&mut inner.active);
            self.sync(&inner);
            removed
        };
        for kind in removed.keys() {
            info!(fault = kind.as_str(), reason = reason.as_str(), "fault cleared");
        }
    }

    fn expire(&self, kind: FaultKind, generation: u64) {
        let removed = {
            let mut inner = self.lock();
            if inner.active.get(&kind).is_none_or(|a| a.generation != generation) {
                return;
            }
            // The expiry task is the one running this: don't abort it.
            let mut removed = inner.active.remove(&kind);
            if let Some(active) = removed.as_mut() {
                active.expiry = None;
            }
            self.sync(&inner);
            removed
        };
        drop(removed);
        info!(
            fault = kind.as_str(),
            reason = ClearReason::Expired.as_str(),
            "fault cleared"
        );
    }

    /// Publishes the state to the hang channel and the service_fault_active gauges.
    fn sync(&self, inner: &Inner) {
        let hung = inner.active.contains_key(&FaultKind::Hang);
        self.hang.send_if_modified(|h| std::mem::replace(h, hung) != hung);
        for kind in &self.kinds {
            self.metrics.set_fault_active(*kind, inner.active.contains_key(kind));
        }
    }

    pub fn is_active(&self, kind: FaultKind) -> bool {
        self.lock().active.contains_key(&kind)
    }

    pub fn latency(&self) -> Option<Duration> {
        match self.lock().active.get(&FaultKind::Latency)?.spec {
            FaultSpec::Latency { latency_ms } => Some(Duration::from_millis(latency_ms)),
            _ => None,
        }
    }

    /// Whether this /api/* request should fail because of the errors fault.
    pub fn should_error(&self) -> bool {
        let mut inner = self.lock();
        let Some(FaultSpec::Errors { ratio }) = inner.active.get(&FaultKind::Errors).map(|a| a.spec.clone()) else {
            return false;
        };
        inner.error_credit += ratio;
        if inner.error_credit >= 1.0 - 1e-9 {
            inner.error_credit -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits while the hang fault is active. Returns false if `shutdown` turned true first.
    pub async fn wait_while_hung(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut hang = self.hang.subscribe();
        tokio::select! {
            biased;
            _ = hang.wait_for(|h| !*h) => true,
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }

    /// The active faults as JSON: `[{"fault": ..., "expires_in_seconds": ... | null, ...params}]`.
    pub fn snapshot(&self) -> Vec<Value> {
        let now = Instant::now();
        self.lock()
            .active
            .iter()
            .map(|(kind, active)| {
                let mut m = Map::new();
                m.insert("fault".into(), json!(kind.as_str()));
                m.insert(
                    "expires_in_seconds".into(),
                    json!(active
                        .expires_at
                        .map(|t| t.saturating_duration_since(now).as_secs_f64())),
                );
                m.extend(active.spec.params());
                Value::Object(m)
            })
            .collect()
    }
}

/// Spins until `stop` is set.
fn spin(stop: &AtomicBool) {
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

/// Grows resident memory by `rate` MiB/s, every [`LEAK_TICK`], writing every byte so the pages are
/// really resident. The memory is released when the task is aborted (dropped).
async fn leak(rate_mib_per_second: f64) {
    let per_tick = ((rate_mib_per_second * MIB * LEAK_TICK.as_secs_f64()) as usize).max(4096);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut held = 0usize;
    let mut ticker = tokio::time::interval(LEAK_TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while held < LEAK_CAP_BYTES {
        ticker.tick().await;
        let mut remaining = per_tick;
        while remaining > 0 {
            if blocks.last().is_none_or(|b| b.len() == b.capacity()) {
                blocks.push(Vec::with_capacity(LEAK_BLOCK_BYTES));
            }
            let Some(block) = blocks.last_mut() else { break };
            let n = remaining.min(block.capacity() - block.len());
            block.resize(block.len() + n, 0xA5);
            remaining -= n;
            held += n;
        }
    }
    tracing::warn!(
        bytes = held,
        "leak fault reached its cap; holding the memory until cleared"
    );
    std::future::pending::<()>().await;
    drop(blocks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Settings};

    fn faults() -> Arc<Faults> {
        let settings = Settings::new(Role::ServiceB, "1.0.0");
        let kinds = vec![FaultKind::Hang, FaultKind::Latency, FaultKind::Errors];
        Arc::new(Faults::new(kinds.clone(), Arc::new(Metrics::new(&settings, &kinds))))
    }

    #[test]
    fn kinds_round_trip() {
        for kind in FaultKind::ALL {
            assert_eq!(kind.as_str().parse::<FaultKind>(), Ok(kind));
        }
        let err = "explode".parse::<FaultKind>().unwrap_err();
        assert!(err.contains("explode") && err.contains("crash"), "{err}");
    }

    #[test]
    fn injection_defaults() {
        let cases = [
            (FaultKind::Crash, FaultSpec::Crash { exit_code: 1 }),
            (FaultKind::Hang, FaultSpec::Hang),
            (
                FaultKind::Leak,
                FaultSpec::Leak {
                    rate_mib_per_second: 4.0,
                },
            ),
            (FaultKind::Cpu, FaultSpec::Cpu { threads: 1 }),
            (FaultKind::Latency, FaultSpec::Latency { latency_ms: 500 }),
            (FaultKind::Errors, FaultSpec::Errors { ratio: 1.0 }),
            (FaultKind::Dependency, FaultSpec::Dependency),
        ];
        for (kind, spec) in cases {
            for body in ["", "  \n", "{}"] {
                assert_eq!(
                    parse_injection(kind, body.as_bytes()),
                    Ok(Injection {
                        spec: spec.clone(),
                        duration: None
                    }),
                    "{kind} {body:?}"
                );
            }
        }
    }

    #[test]
    fn injection_params() {
        let inj = parse_injection(FaultKind::Errors, br#"{"ratio": 0.25, "duration_seconds": 1.5}"#).unwrap();
        assert_eq!(inj.spec, FaultSpec::Errors { ratio: 0.25 });
        assert_eq!(inj.duration, Some(Duration::from_millis(1500)));
        let inj = parse_injection(FaultKind::Errors, br#"{"ratio": 0}"#).unwrap();
        assert_eq!(inj.spec, FaultSpec::Errors { ratio: 0.0 });
        let inj = parse_injection(FaultKind::Crash, br#"{"exit_code": 137}"#).unwrap();
        assert_eq!(inj.spec, FaultSpec::Crash { exit_code: 137 });
        let inj = parse_injection(FaultKind::Cpu, br#"{"threads": 2}"#).unwrap();
        assert_eq!(inj.spec, FaultSpec::Cpu { threads: 2 });
    }

    #[test]
    fn injection_errors_say_what_and_where() {
        let cases: [(FaultKind, &str, &[&str]); 16] = [
            (FaultKind::Errors, r#"{"ratio": 1.5}"#, &["ratio", "[0, 1]", "1.5"]),
            (FaultKind::Errors, r#"{"ratio": -0.1}"#, &["ratio", "-0.1"]),
            (
                FaultKind::Errors,
                r#"{"ratio": "half"}"#,
                &["invalid JSON", "line 1 column"],
            ),
            (
                FaultKind::Errors,
                r#"{"ratio": NaN}"#,
                &["invalid JSON", "line 1 column"],
            ),
            (
                FaultKind::Hang,
                r#"{"duration_seconds": -1}"#,
                &["duration_seconds", "-1"],
            ),
            (
                FaultKind::Hang,
                r#"{"duration_seconds": 0}"#,
                &["duration_seconds", "> 0"],
            ),
            (FaultKind::Hang, r#"{"duration_seconds": 1e300}"#, &["duration_seconds"]),
            (
                FaultKind::Hang,
                r#"{"ratio": 0.5}"#,
                &["`ratio`", "`hang`", "duration_seconds"],
            ),
            (
                FaultKind::Crash,
                r#"{"duration_seconds": 5}"#,
                &["`duration_seconds`", "`crash`"],
            ),
            (FaultKind::Crash, r#"{"exit_code": 300}"#, &["exit_code", "300"]),
            (
                FaultKind::Latency,
                r#"{"latency_ms": -5}"#,
                &["invalid JSON", "line 1 column"],
            ),
            (
                FaultKind::Leak,
                r#"{"rate_mib_per_second": 0}"#,
                &["rate_mib_per_second"],
            ),
            (FaultKind::Cpu, r#"{"threads": 0}"#, &["threads", "got 0"]),
            (
                FaultKind::Cpu,
                r#"{"thread": 2}"#,
                &["unknown field `thread`", "line 1 column"],
            ),
            (
                FaultKind::Hang,
                r#"{"duration_seconds": 5"#,
                &["invalid JSON", "line 1 column"],
            ),
            (FaultKind::Hang, "[1, 2]", &["invalid JSON", "line 1 column"]),
        ];
        for (kind, body, needles) in cases {
            let err = parse_injection(kind, body.as_bytes()).unwrap_err();
            for needle in needles {
                assert!(err.contains(needle), "{kind} {body}: {err:?} lacks {needle:?}");
            }
        }
    }

    #[tokio::test]
    async fn error_ratio_is_exact() {
        let faults = faults();
        assert!(!faults.should_error());
        faults.inject(Injection {
            spec: FaultSpec::Errors { ratio: 0.25 },
            duration: None,
        });
        let failed = (0..100).filter(|_| faults.should_error()).count();
        assert_eq!(failed, 25);
        faults.inject(Injection {
            spec: FaultSpec::Errors { ratio: 1.0 },
            duration: None,
        });
        assert!((0..50).all(|_| faults.should_error()));
        assert!(faults.clear(FaultKind::Errors, ClearReason::Admin));
        assert!(!faults.clear(FaultKind::Errors, ClearReason::Admin));
        assert!(!faults.should_error());
    }

    #[tokio::test(start_paused = true)]
    async fn duration_expiry_and_replacement() {
        let faults = faults();
        faults.inject(Injection {
            spec: FaultSpec::Latency { latency_ms: 100 },
            duration: Some(Duration::from_secs(10)),
        });
        let snap = faults.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0]["fault"], "latency");
        assert_eq!(snap[0]["latency_ms"], 100);
        assert_eq!(snap[0]["expires_in_seconds"], 10.0);

        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(faults.latency(), Some(Duration::from_millis(100)));
        assert_eq!(faults.snapshot()[0]["expires_in_seconds"], 4.0);

        // Re-injecting replaces the parameters and the deadline: the first deadline must not clear it.
        faults.inject(Injection {
            spec: FaultSpec::Latency { latency_ms: 200 },
            duration: Some(Duration::from_secs(10)),
        });
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(faults.latency(), Some(Duration::from_millis(200)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(faults.latency(), None);
        assert!(faults.snapshot().is_empty());

        // Without a duration it stays.
        faults.inject(Injection {
            spec: FaultSpec::Hang,
            duration: None,
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(faults.is_active(FaultKind::Hang));
        assert_eq!(faults.snapshot()[0]["expires_in_seconds"], Value::Null);
    }

    /// Injects a hang and starts a request waiting on it; the task ends with
    /// what `wait_while_hung` returns.
    fn hang(
        faults: &Arc<Faults>,
        shutdown: &watch::Receiver<bool>,
        duration: Option<Duration>,
    ) -> tokio::task::JoinHandle<bool> {
        faults.inject(Injection {
            spec: FaultSpec::Hang,
            duration,
        });
        let (faults, mut rx) = (faults.clone(), shutdown.clone());
        tokio::spawn(async move { faults.wait_while_hung(&mut rx).await })
    }

    #[tokio::test(start_paused = true)]
    async fn hang_waits_until_cleared_or_expired_or_shutdown() {
        let faults = faults();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Not hung: returns at once.
        assert!(faults.wait_while_hung(&mut shutdown_rx.clone()).await);

        let waiter = hang(&faults, &shutdown_rx, Some(Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(waiter.await.unwrap(), "expiry releases the waiter");

        let waiter = hang(&faults, &shutdown_rx, None);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        faults.clear(FaultKind::Hang, ClearReason::Admin);
        assert!(waiter.await.unwrap(), "clearing releases the waiter");

        let waiter = hang(&faults, &shutdown_rx, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        shutdown_tx.send_replace(true);
        assert!(!waiter.await.unwrap(), "shutdown releases the waiter with false");
    }
}
