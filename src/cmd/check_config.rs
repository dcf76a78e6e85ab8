//! `homeostat check-config`: validate a config file, try its PromQL on
//! Prometheus, and print what it resolves to.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use homeostat_adapters::preflight::{self, Verdict};

use crate::{exit, PREFLIGHT_TIMEOUT};

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The YAML config file.
    file: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> ExitCode {
    let file = args.file;
    let (config, credentials) = match crate::load(&file, |_| {}) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut auth: Vec<String> = Vec::new();
    if credentials.bearer_token.is_some() {
        auth.push("bearer token (admin)".into());
    }
    if let Some((user, _)) = &credentials.basic {
        auth.push(format!("basic ({user}, admin)"));
    }
    auth.extend(
        credentials
            .tokens
            .iter()
            .map(|(name, role, _)| format!("token {name} ({})", role.as_str())),
    );
    let auth = if auth.is_empty() {
        "none".to_owned()
    } else {
        auth.join(", ")
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
    let (checked, reached) = match crate::runtime() {
        Ok(runtime) => runtime
            .block_on(async { tokio::join!(preflight::check(&config, PREFLIGHT_TIMEOUT), reach_every_url(&config)) }),
        Err(code) => return code,
    };
    let (mut rejected, mut unchecked) = (Vec::new(), String::new());
    for (query, verdict) in &checked {
        match verdict {
            Verdict::Accepted => {}
            Verdict::Rejected(why) => rejected.push(format!("{}: {why}", query.key)),
            Verdict::Unchecked(why) => unchecked.push_str(&format!("\n    not checked: {}: {why}", query.key)),
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
        "{}: OK\n  listen: {}\n  auth: {auth}\n  journal: {}\n  actions: {actions}\n  thresholds: {thresholds}\n  PromQL: {} of {} queries accepted by Prometheus{unchecked}{reached}",
        file.display(),
        config.server.listen,
        config.journal.describe(),
        accepted,
        checked.len(),
    );
    ExitCode::SUCCESS
}

/// Tries every URL the config gives that can be asked without side effects
/// (Prometheus and Alertmanager answer `/-/ready`); chat and webhook sinks
/// are not posted to, which would send a message. One line per URL.
async fn reach_every_url(config: &homeostat_core::config::Config) -> String {
    use homeostat_core::config::{ProcessEnv, SinkKind};
    let mut urls: Vec<(String, String)> = Vec::new();
    if let Some(actions) = &config.actions {
        for (key, url) in [
            ("actions.prometheus_url", &actions.prometheus_url),
            ("actions.alertmanager_url", &actions.alertmanager_url),
        ] {
            if let Some(url) = url {
                urls.push((key.into(), url.clone()));
            }
        }
        for (i, sink) in actions.notifications.sinks.iter().enumerate() {
            if sink.kind == SinkKind::Alertmanager {
                if let Ok(url) = sink.url(&ProcessEnv) {
                    urls.push((format!("actions.notifications.sinks[{i}] ({})", sink.name), url));
                }
            }
        }
    }
    if let Some(thresholds) = &config.thresholds {
        urls.push(("thresholds.prometheus_url".into(), thresholds.prometheus_url.clone()));
    }
    let http = reqwest::Client::builder()
        .timeout(PREFLIGHT_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut out = String::new();
    for (key, url) in urls {
        let ready = format!("{}/-/ready", url.trim_end_matches('/'));
        let verdict = match http.get(&ready).send().await {
            Ok(r) if r.status().is_success() => "ready".to_owned(),
            Ok(r) => format!("answered {} (not ready)", r.status()),
            Err(e) => format!("NOT REACHABLE: {e}"),
        };
        out.push_str(&format!("\n  {key}: {url}: {verdict}"));
    }
    out
}
