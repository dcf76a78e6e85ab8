//! The I/O of adaptive thresholds: range queries for history
//! (prometheus-http-query), `promtool check rules`, atomic writes into the
//! rules directory, and Prometheus' reload, confirmed by
//! `prometheus_config_last_reload_successful`. On any failure the previous
//! rule files stay (or are put back) and the error says why.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use futures_util::FutureExt;

use homeostat_core::alert::LabelSet;
use homeostat_core::threshold::{
    band_reports, changed, file_name, fit_spec, query_windows, render, to_grid, BandReport, FitRules, Series, SpecFit,
    ThresholdSpec, ThresholdsConfig, GENERATED_HEADER, MAX_POINTS,
};

/// Most points Prometheus returns per series and query (it refuses more than 11,000).
pub const MAX_POINTS_PER_QUERY: usize = 10_000;

/// Why a spec's rules were not updated. The previous rules stay active.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("querying the history of {expr:?} failed: {message}")]
    Query { expr: String, message: String },
    #[error("no series could be fitted: {0}")]
    Fit(String),
    #[error("promtool check rules rejected the rendered rules: {0}")]
    Check(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Prometheus did not load the new rules ({0}); the previous rules were put back")]
    Reload(String),
}

impl UpdateError {
    /// A bounded label for `homeostat_threshold_updates_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            UpdateError::Query { .. } => "query",
            UpdateError::Fit(_) => "fit",
            UpdateError::Check(_) => "check",
            UpdateError::Write { .. } => "write",
            UpdateError::Reload(_) => "reload",
        }
    }
}

/// Where a spec's history comes from: Prometheus, or in benchmarks a generator.
pub trait HistorySource: Sync {
    /// The series of `spec.expr` over `spec.history` at `spec.step`, the
    /// last point at `end` (unix seconds).
    fn history(&self, spec: &ThresholdSpec, end: i64) -> impl Future<Output = Result<Vec<Series>, UpdateError>> + Send;
}

/// A Prometheus server: range queries, reloads.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
    http: reqwest::Client,
    url: String,
}

impl Prometheus {
    /// A client for the Prometheus at `url` (http); requests time out after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Prometheus, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let client = prometheus_http_query::Client::from(http.clone(), url)
            .map_err(|e| format!("invalid Prometheus URL {url:?}: {e}"))?;
        Ok(Prometheus {
            client,
            http,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every series of `expr` on the grid of `n` points at `step` ending at
    /// `end`, queried in windows Prometheus accepts.
    pub async fn range(&self, expr: &str, end: i64, step: Duration, n: usize) -> Result<Vec<Series>, UpdateError> {
        let step_secs = step.as_secs().max(1) as i64;
        let start = end - (n as i64 - 1) * step_secs;
        let mut samples: HashMap<LabelSet, Vec<(f64, f64)>> = HashMap::new();
        for (from, to) in query_windows(start, step, n, MAX_POINTS_PER_QUERY) {
            let result = self
                .client
                .query_range(expr, from, to, step_secs as f64)
                .get()
                .await
                .map_err(|e| UpdateError::Query {
                    expr: expr.to_owned(),
                    message: format!("{} (Prometheus at {})", with_causes(&e), self.url),
                })?;
            let Some(matrix) = result.data().as_matrix() else {
                return Err(UpdateError::Query {
                    expr: expr.to_owned(),
                    message: "the answer is not a range vector".into(),
                });
            };
            for series in matrix {
                let labels: LabelSet = series
                    .metric()
                    .iter()
                    .filter(|(k, _)| k.as_str() != "__name__")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                samples
                    .entry(labels)
                    .or_default()
                    .extend(series.samples().iter().map(|s| (s.timestamp(), s.value())));
            }
        }
        let mut series: Vec<Series> = samples
            .into_iter()
            .map(|(labels, samples)| Series {
                labels,
                start,
                values: to_grid(samples, start, step, n),
            })
            .collect();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }

    /// Asks Prometheus to reload its configuration and rules, and confirms
    /// it did with its `prometheus_config_last_reload_successful`.
    pub async fn reload(&self) -> Result<(), String> {
        let response = self
            .http
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .map_err(|e| format!("POST {}/-/reload failed: {e}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let hint = if status == reqwest::StatusCode::FORBIDDEN {
                " (start Prometheus with --web.enable-lifecycle)"
            } else {
                ""
            };
            return Err(format!("POST /-/reload answered {status}{hint}: {}", body.trim()));
        }
        let metrics = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot read {}/metrics: {e}", self.url))?
            .text()
            .await
            .map_err(|e| format!("cannot read {}/metrics: {e}", self.url))?;
        match last_reload_successful(&metrics) {
            Some(true) => Ok(()),
            Some(false) => Err("prometheus_config_last_reload_successful is 0".into()),
            None => Err("Prometheus' /metrics has no prometheus_config_last_reload_successful".into()),
        }
    }
}

/// The value of `prometheus_config_last_reload_successful` in a Prometheus
/// text exposition.
pub fn last_reload_successful(exposition: &str) -> Option<bool> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix("prometheus_config_last_reload_successful ")?;
        value.trim().parse::<f64>().ok().map(|v| v == 1.0)
    })
}

impl HistorySource for Prometheus {
    fn history(&self, spec: &ThresholdSpec, end: i64) -> impl Future<Output = Result<Vec<Series>, UpdateError>> + Send {
        let n = (spec.history.0.as_secs() / spec.step.0.as_secs().max(1)) as usize;
        self.range(&spec.expr, end, spec.step.0, n)
    }
}

/// The rules directory, and how files are checked before they go live.
#[derive(Clone, Debug)]
pub struct RuleWriter {
    pub dir: PathBuf,
    /// `promtool` to check with; `None`: no check (Prometheus' reload is the check).
    pub promtool: Option<PathBuf>,
}

/// A file written into the rules directory, and what it replaced.
struct Replaced {
    spec: String,
    path: PathBuf,
    previous: Option<Vec<u8>>,
}

impl RuleWriter {
    /// The final path of a spec's rule file.
    pub fn path(&self, spec: &str) -> PathBuf {
        self.dir.join(file_name(spec))
    }

    fn temp_path(&self, spec: &str) -> PathBuf {
        self.dir.join(format!(".{}.tmp", file_name(spec)))
    }

    /// Puts each `(spec, rules)` in place, all or nothing per spec: written
    /// to a temporary file, checked with promtool, renamed over the previous
    /// file; then (when `prometheus` is given) one reload for all of them. A
    /// spec that fails keeps its previous file; if the reload fails, every
    /// file of this call is put back and Prometheus reloaded again.
    pub async fn update(
        &self,
        files: Vec<(String, String)>,
        prometheus: Option<&Prometheus>,
    ) -> Vec<(String, Result<(), UpdateError>)> {
        let mut results = Vec::new();
        if let Err(source) = tokio::fs::create_dir_all(&self.dir).await {
            let message = source.to_string();
            return files
                .into_iter()
                .map(|(spec, _)| {
                    let source = std::io::Error::new(source.kind(), message.clone());
                    let path = self.dir.clone();
                    (spec, Err(UpdateError::Write { path, source }))
                })
                .collect();
        }
        let mut staged = Vec::new();
        for (spec, content) in files {
            let temp = self.temp_path(&spec);
            match write_synced(&temp, content.as_bytes()).await {
                Ok(()) => staged.push((spec, temp)),
                Err(source) => results.push((spec, Err(UpdateError::Write { path: temp, source }))),
            }
        }
        if let Some(promtool) = &self.promtool {
            let rejected = check_rules(promtool, &staged).await;
            staged.retain(|(spec, temp)| match rejected.get(temp) {
                Some(why) => {
                    let _ = std::fs::remove_file(temp);
                    results.push((spec.clone(), Err(UpdateError::Check(why.clone()))));
                    false
                }
                None => true,
            });
        }
        let mut replaced = Vec::new();
        for (spec, temp) in staged {
            let path = self.path(&spec);
            let previous = std::fs::read(&path).ok();
            match tokio::fs::rename(&temp, &path).await {
                Ok(()) => replaced.push(Replaced { spec, path, previous }),
                Err(source) => {
                    let _ = std::fs::remove_file(&temp);
                    results.push((spec, Err(UpdateError::Write { path, source })));
                }
            }
        }
        if let (Some(prometheus), false) = (prometheus, replaced.is_empty()) {
            if let Err(why) = prometheus.reload().await {
                for r in &replaced {
                    self.restore(r).await;
                }
                if let Err(again) = prometheus.reload().await {
                    tracing::error!(error = %again, "Reloading Prometheus with the previous rules failed too.");
                }
                return results
                    .into_iter()
                    .chain(
                        replaced
                            .into_iter()
                            .map(|r| (r.spec, Err(UpdateError::Reload(why.clone())))),
                    )
                    .collect();
            }
        }
        results.extend(replaced.into_iter().map(|r| (r.spec, Ok(()))));
        results
    }

    /// Removes the rule files this writer generated for specs no longer in
    /// `configured` (only files starting with homeostat's header); returns them.
    pub fn remove_stale(&self, configured: &[&str]) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let wanted: Vec<String> = configured.iter().map(|s| file_name(s)).collect();
        let mut removed = Vec::new();
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.ends_with(".rules.yml") || wanted.iter().any(|w| w == name) {
                continue;
            }
            let generated = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(GENERATED_HEADER));
            if generated && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
        removed
    }

    async fn restore(&self, replaced: &Replaced) {
        let restored = match &replaced.previous {
            Some(previous) => {
                let temp = self.temp_path(&replaced.spec);
                match write_synced(&temp, previous).await {
                    Ok(()) => tokio::fs::rename(&temp, &replaced.path).await,
                    Err(e) => Err(e),
                }
            }
            None => tokio::fs::remove_file(&replaced.path).await,
        };
        if let Err(e) = restored {
            tracing::error!(file = %replaced.path.display(), error = %e, "Cannot put the previous rule file back.");
        }
    }
}

/// Writes `content` to `path` and flushes it to disk, so a rename after it
/// never exposes a partly written file.
async fn write_synced(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(path).await?;
    file.write_all(content).await?;
    file.sync_all().await
}

/// Runs `promtool check rules` on the staged files; returns the rejected
/// ones with promtool's reasons. One run checks them all; only when it
/// fails is each file checked alone, to tell which.
async fn check_rules(promtool: &Path, staged: &[(String, PathBuf)]) -> HashMap<PathBuf, String> {
    let mut rejected = HashMap::new();
    if staged.is_empty() {
        return rejected;
    }
    let run = |files: Vec<PathBuf>| {
        tokio::process::Command::new(promtool)
            .args(["check", "rules"])
            .args(files)
            .output()
    };
    match run(staged.iter().map(|(_, p)| p.clone()).collect()).await {
        Ok(output) if output.status.success() => return rejected,
        Ok(_) => {}
        Err(e) => {
            for (_, temp) in staged {
                rejected.insert(temp.clone(), format!("cannot run {}: {e}", promtool.display()));
            }
            return rejected;
        }
    }
    for (_, temp) in staged {
        match run(vec![temp.clone()]).await {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                rejected.insert(temp.clone(), text.trim().replace('\n', "; "));
            }
            Err(e) => {
                rejected.insert(temp.clone(), format!("cannot run {}: {e}", promtool.display()));
            }
        }
    }
    rejected
}

/// One spec's result in a refit round.
#[derive(Debug)]
pub struct SpecOutcome {
    pub spec: String,
    pub fit: SpecFit,
    pub result: Result<(), UpdateError>,
    /// The rule file was rewritten (`false`: fitting failed, or the fit was
    /// too close to the published one to be worth a write and a reload).
    pub written: bool,
}

/// What a refit compares a new fit with before it rewrites rules.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The fit each spec's rules in effect were rendered from.
    pub fits: &'a HashMap<String, SpecFit>,
    /// See `ThresholdsConfig::min_change`.
    pub min_change: f64,
}

/// Refits `specs` (history from `source`, coverage per series from
/// `coverages`: spec → series → coverage), renders their rules and puts them
/// in place through `writer`, with one reload of `prometheus` at the end.
/// With `published`, a spec whose fit has not moved materially from the one
/// its rules were rendered from keeps its rules: nothing is written and,
/// when no spec changed, Prometheus is not reloaded. At most `parallel`
/// specs are queried and fitted at once, so memory holds that many
/// histories, whatever the number of specs.
#[allow(clippy::too_many_arguments)]
pub async fn refit<S: HistorySource>(
    specs: &[ThresholdSpec],
    source: &S,
    coverages: &HashMap<String, HashMap<String, f64>>,
    writer: &RuleWriter,
    prometheus: Option<&Prometheus>,
    now: DateTime<Utc>,
    parallel: usize,
    published: Option<Published<'_>>,
) -> Vec<SpecOutcome> {
    let no_feedback = HashMap::new();
    type Fitted = (usize, Result<(SpecFit, String), UpdateError>);
    // Boxed and collected before they are streamed: with a closure inside the
    // stream, the compiler cannot prove the task Send.
    let jobs: Vec<futures_util::future::BoxFuture<'_, Fitted>> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let feedback = coverages.get(&spec.name).unwrap_or(&no_feedback).clone();
            async move {
                let step = spec.step.0.as_secs().max(1) as i64;
                let end = now.timestamp() / step * step;
                let history = match source.history(spec, end).await {
                    Ok(history) => history,
                    Err(e) => return (i, Err(e)),
                };
                let spec = spec.clone();
                let fit = tokio::task::spawn_blocking(move || {
                    let fit = fit_spec(&spec, &history, &|key| {
                        feedback.get(key).copied().unwrap_or(spec.coverage)
                    });
                    // A spec whose series all have too little history still
                    // gets its file: their fallback rules, or none (and why).
                    if fit.series.is_empty() && fit.insufficient.is_empty() {
                        let why = if fit.skipped.is_empty() {
                            "the expression returned no series".to_owned()
                        } else {
                            fit.skipped
                                .iter()
                                .map(|s| format!("{}: {}", s.key, s.reason))
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        return Err(UpdateError::Fit(why));
                    }
                    let rules = render(&spec, &fit, now);
                    Ok((fit, rules))
                })
                .await
                .unwrap_or_else(|e| Err(UpdateError::Fit(format!("the fit panicked: {e}"))));
                (i, fit)
            }
            .boxed()
        })
        .collect();
    let fitted: Vec<Fitted> = stream::iter(jobs).buffer_unordered(parallel.max(1)).collect().await;
    let mut fits: Vec<Option<SpecFit>> = vec![None; specs.len()];
    let mut outcomes: HashMap<String, Result<(), UpdateError>> = HashMap::new();
    let mut files = Vec::new();
    for (i, result) in fitted {
        let name = &specs[i].name;
        match result {
            Ok((fit, rules)) => {
                let unchanged = published.is_some_and(|p| {
                    p.fits
                        .get(name)
                        .is_some_and(|before| !changed(before, &fit, p.min_change))
                });
                if unchanged {
                    outcomes.insert(name.clone(), Ok(()));
                } else {
                    files.push((name.clone(), rules));
                }
                fits[i] = Some(fit);
            }
            Err(e) => {
                outcomes.insert(name.clone(), Err(e));
            }
        }
    }
    let mut written = std::collections::HashSet::new();
    for (spec, result) in writer.update(files, prometheus).await {
        if result.is_ok() {
            written.insert(spec.clone());
        }
        outcomes.insert(spec, result);
    }
    specs
        .iter()
        .zip(fits)
        .map(|(spec, fit)| SpecOutcome {
            spec: spec.name.clone(),
            fit: fit.unwrap_or_default(),
            result: outcomes
                .remove(&spec.name)
                .unwrap_or_else(|| Err(UpdateError::Fit("not fitted".into()))),
            written: written.contains(&spec.name),
        })
        .collect()
}

/// `homeostat thresholds fit`: the band of every series of `query` for
/// `horizon` after the latest `history` at `step`, at `coverage`, for the
/// series whose history supports one (at least `min_history`, by default
/// as a spec with this `step` and `history` would need).
#[allow(clippy::too_many_arguments)]
pub async fn fit_query(
    prometheus: &str,
    query: &str,
    step: Duration,
    history: Duration,
    horizon: Duration,
    coverage: f64,
    min_history: Option<Duration>,
) -> Result<Vec<BandReport>, String> {
    if !(coverage > 0.0 && coverage < 1.0) {
        return Err(format!("--coverage must be in (0, 1), got {coverage}"));
    }
    let secs = step.as_secs();
    let n = history.as_secs() / secs.max(1);
    if secs == 0 || !(2..=MAX_POINTS).contains(&n) {
        return Err(format!(
            "--history / --step must be from 2 to {} steps, and --step at least 1s",
            MAX_POINTS
        ));
    }
    let client = Prometheus::new(prometheus, QUERY_TIMEOUT)?;
    let end = Utc::now().timestamp() / secs as i64 * secs as i64;
    let series = client
        .range(query, end, step, n as usize)
        .await
        .map_err(|e| e.to_string())?;
    let horizon = (horizon.as_secs() / secs).max(1) as usize;
    let rules = FitRules::for_window(step, n as usize, min_history, None);
    Ok(band_reports(&series, step, horizon, coverage, &rules))
}

/// An error with its causes, `outer: inner: …`: the query client's own
/// message ("failed to send request to server") says neither that it timed
/// out nor what the server answered.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}

/// `homeostat thresholds render`: fits every spec now, at the coverages
/// feedback has moved its series to (`coverages`, as `serve` would), and
/// writes its rule file into `out`, checked with promtool when there is
/// one; no reload.
pub async fn render_into(
    config: &ThresholdsConfig,
    out: PathBuf,
    coverages: &HashMap<String, HashMap<String, f64>>,
) -> Result<Vec<SpecOutcome>, String> {
    let prometheus = Prometheus::new(&config.prometheus_url, QUERY_TIMEOUT)?;
    let writer = RuleWriter {
        dir: out,
        promtool: promtool(config),
    };
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(refit(
        &config.specs,
        &prometheus,
        coverages,
        &writer,
        None,
        Utc::now(),
        parallel,
        None,
    )
    .await)
}

/// How long one query to Prometheus may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The `promtool` rule files are checked with: the configured one, else
/// the one on `PATH`; `None` when checking is off or none is found.
pub fn promtool(config: &ThresholdsConfig) -> Option<std::path::PathBuf> {
    promtool_for(config.check_rules, config.promtool.as_deref())
}

/// The `promtool` to check with: `configured`, else the one on `PATH`;
/// `None` when `check` is off or none is found.
pub fn promtool_for(check: bool, configured: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if !check {
        return None;
    }
    if let Some(path) = configured {
        return Some(path.to_owned());
    }
    match which::which("promtool") {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "promtool is not on PATH (Debian package prometheus): rule files are not checked before they go live; \
                 Prometheus' reload is the only check."
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_files_of_unconfigured_specs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RuleWriter {
            dir: dir.path().to_owned(),
            promtool: None,
        };
        let generated = format!("{} for threshold spec …\ngroups: []\n", GENERATED_HEADER);
        std::fs::write(dir.path().join("kept.rules.yml"), &generated).unwrap();
        std::fs::write(dir.path().join("gone.rules.yml"), &generated).unwrap();
        std::fs::write(dir.path().join("mine.rules.yml"), "groups: []\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), &generated).unwrap();
        let removed = writer.remove_stale(&["kept"]);
        assert_eq!(removed, vec![dir.path().join("gone.rules.yml")]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["kept.rules.yml", "mine.rules.yml", "notes.txt"]);
        assert!(RuleWriter {
            dir: dir.path().join("absent"),
            promtool: None
        }
        .remove_stale(&[])
        .is_empty());
    }

    #[test]
    fn the_reload_metric_is_read_from_the_exposition() {
        let text = "# HELP prometheus_config_last_reload_successful Whether the last configuration reload attempt was successful.\n\
                    # TYPE prometheus_config_last_reload_successful gauge\n\
                    prometheus_config_last_reload_successful 0\n";
        assert_eq!(last_reload_successful(text), Some(false));
        assert_eq!(
            last_reload_successful("prometheus_config_last_reload_successful 1\n"),
            Some(true)
        );
        assert_eq!(last_reload_successful("up 1\n"), None);
    }
}
