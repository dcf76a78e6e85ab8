//! The Grafana dashboards under grafana/dashboards and their panels' PromQL,
//! for tests that run those queries against a live Prometheus.

use std::path::Path;

use serde_json::Value;

/// Every dashboard as (file name, JSON), sorted by file name.
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut found: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!found.is_empty(), "no dashboards under {}", dir.display());
    found
}

/// Grafana's interval variables as a query from a test resolves them:
/// `$__rate_interval` (at least four scrapes) as 1m, and `$__range` (the
/// dashboard's time range, for totals over it) as 1h.
pub fn resolve_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
}

/// Every (dashboard file, annotation name, expr): what marks actions and
/// alerts on the panels, empty whenever nothing happened lately.
pub fn annotation_queries() -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards() {
        for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
            let name = annotation["name"].as_str().unwrap().to_owned();
            let expr = resolve_variables(annotation["expr"].as_str().unwrap());
            queries.push((file.clone(), name, expr));
        }
    }
    queries
}

/// Every (dashboard file, panel title, expr) of every dashboard, with
/// Grafana's interval variables resolved.
pub fn panel_queries() -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap().to_owned();
            for target in panel["targets"].as_array().unwrap() {
                let expr = resolve_variables(target["expr"].as_str().unwrap());
                queries.push((file.clone(), title.clone(), expr));
            }
        }
    }
    queries
}

/// Whether an instant query's result holds at least one finite number: what
/// a panel needs to show something.
pub fn has_number(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
    })
}
