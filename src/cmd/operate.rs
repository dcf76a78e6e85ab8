//! The operator's commands against a running homeostat, over its HTTP API:
//! `incidents`, `incident ID`, `pause`, `resume`, `approve ID`, `reject ID`,
//! `audit`. Where it is and the token come from flags or the environment
//! (`HOMEOSTAT_URL`, `HOMEOSTAT_TOKEN` or `--token-file`); the token is
//! never taken on the command line, where other users' `ps` would show it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use homeostat_core::decision::Verdict;
use serde_json::Value;

use crate::exit;

/// Where the server is and who is asking.
#[derive(Args, Clone)]
pub struct Server {
    /// homeostat's base URL.
    #[arg(long, env = "HOMEOSTAT_URL", default_value = "http://127.0.0.1:9095")]
    url: String,
    /// A file holding the bearer token (else `HOMEOSTAT_TOKEN`, else none).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct IncidentsArgs {
    #[command(flatten)]
    server: Server,
    /// Only `firing` or `resolved` incidents.
    #[arg(long)]
    status: Option<String>,
    /// Only incidents of this alert.
    #[arg(long)]
    alertname: Option<String>,
    /// At most this many, newest first (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IncidentArgs {
    #[command(flatten)]
    server: Server,
    /// The incident's id (from `homeostat incidents`).
    id: i64,
    /// Print the incident, its decisions and notifications as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ControlArgs {
    #[command(flatten)]
    server: Server,
    /// Why, for the audit trail.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
pub struct AnswerArgs {
    #[command(flatten)]
    server: Server,
    /// The incident whose proposed action is answered.
    id: i64,
    /// Why, for the audit trail.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    server: Server,
    /// At most this many entries, newest first (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The API, as this command's caller.
pub(super) struct Api {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    fn new(server: &Server) -> Result<Api, String> {
        let token = match &server.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read --token-file {}: {e}", file.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("HOMEOSTAT_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Api {
            http,
            url: server.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// `query` is encoded as a URL's query (an alert name may hold any character).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let mut request = self.http.request(method, &url).query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            format!(
                "cannot reach homeostat at {} ({e}); set --url or HOMEOSTAT_URL",
                self.url
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let why = value["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        let hint = match status.as_u16() {
            401 => "; give a token with --token-file or HOMEOSTAT_TOKEN",
            403 => "; the token's role does not allow this",
            _ => "",
        };
        Err(format!("{url}: {status}: {why}{hint}"))
    }

    pub(super) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        self.call(reqwest::Method::GET, path, query, None).await
    }
}

/// Runs `work` on a runtime; its error is printed and exit code 1.
pub(super) fn run_with(server: &Server, work: impl AsyncFnOnce(Api) -> Result<String, String>) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = Api::new(server).map(|api| runtime.block_on(work(api)));
    match result.and_then(|r| r) {
        Ok(text) => {
            outln!("{text}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("homeostat: {why}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// RFC 3339 shortened to the second, as a table shows it.
fn when(value: &Value) -> String {
    value
        .as_str()
        .map_or("-".into(), |t| t.get(..19).unwrap_or(t).replace('T', " "))
}

pub fn incidents(args: IncidentsArgs) -> ExitCode {
    let IncidentsArgs {
        server,
        status,
        alertname,
        limit,
        json,
    } = args;
    run_with(&server, async move |api| {
        let limit = limit.to_string();
        let mut query = vec![("limit", limit.as_str())];
        query.extend(status.as_deref().map(|s| ("status", s)));
        query.extend(alertname.as_deref().map(|a| ("alertname", a)));
        let page = api.get("/api/v1/incidents", &query).await?;
        Ok(super::json_or_table(json, &page, incident_table))
    })
}

fn incident_table(page: &Value) -> String {
    let mut lines = vec![format!(
        "{:>6}  {:<9}  {:<24}  {:<19}  {:>10}  labels",
        "id", "status", "alert", "first seen", "deliveries"
    )];
    for incident in page["incidents"].as_array().into_iter().flatten() {
        let labels: Vec<String> = incident["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        lines.push(format!(
            "{:>6}  {:<9}  {:<24}  {:<19}  {:>10}  {}",
            // A JSON value's Display ignores width: padded as text.
            incident["id"].to_string(),
            text(&incident["status"]),
            text(&incident["alertname"]),
            when(&incident["first_seen"]),
            incident["deliveries"].to_string(),
            labels.join(",")
        ));
    }
    if lines.len() == 1 {
        lines.push("(no incidents)".into());
    }
    lines.join("\n")
}

pub fn incident(args: IncidentArgs) -> ExitCode {
    let IncidentArgs { server, id, json } = args;
    run_with(&server, async move |api| {
        let incident = api.get(&format!("/api/v1/incidents/{id}"), &[]).await?;
        let decisions = api.get(&format!("/api/v1/incidents/{id}/decisions"), &[]).await?;
        let notifications = api.get(&format!("/api/v1/incidents/{id}/notifications"), &[]).await?;
        let decisions = decisions["decisions"].as_array().cloned().unwrap_or_default();
        let notifications = notifications["notifications"].as_array().cloned().unwrap_or_default();
        if json {
            let all = serde_json::json!({
                "incident": incident,
                "decisions": decisions,
                "notifications": notifications,
            });
            return Ok(serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        Ok(timeline(&incident, &decisions, &notifications))
    })
}

/// The incident's story in time order: deliveries, decisions, what the
/// actions did and how they were verified, and who was told.
fn timeline(incident: &Value, decisions: &[Value], notifications: &[Value]) -> String {
    let mut events: Vec<(String, String)> = vec![
        (
            when(&incident["starts_at"]),
            format!("alert {} started firing", text(&incident["alertname"])),
        ),
        (when(&incident["first_seen"]), "first delivered to homeostat".to_owned()),
        (
            when(&incident["last_seen"]),
            format!("last delivered ({} deliveries)", incident["deliveries"]),
        ),
    ];
    if !incident["resolved_at"].is_null() {
        let how = if incident["vanished"] == true {
            "closed as vanished: Alertmanager no longer reported it and no resolution came"
        } else {
            "resolved"
        };
        events.push((when(&incident["resolved_at"]), how.to_owned()));
    }
    for d in decisions {
        let verdict = text(&d["verdict"]);
        // Such a verdict (premise gone, unplannable, no target) tells a human at once.
        let escalated = serde_json::from_value::<Verdict>(d["verdict"].clone()).is_ok_and(Verdict::escalates);
        let what = if verdict == "escalate" {
            "escalated to a human".to_owned()
        } else if escalated {
            format!("{} — {verdict}, escalated to a human", text(&d["action"]))
        } else {
            format!("{} — {verdict}", text(&d["action"]))
        };
        events.push((
            when(&d["decided_at"]),
            format!("decided {what}: {}", text(&d["reason"])),
        ));
        if !d["executed_at"].is_null() {
            events.push((
                when(&d["executed_at"]),
                format!("  {}: {}", text(&d["result"]), text(&d["detail"])),
            ));
        }
        if !d["verified_at"].is_null() {
            let mut verified = format!("  verified: {}", text(&d["outcome"]));
            // A confounded outcome says what else changed the target.
            if let Some(changes) = d["record"]["outside_changes"].as_array() {
                let changes: Vec<&str> = changes.iter().map(text).collect();
                verified.push_str(&format!(" (changed from outside: {})", changes.join("; ")));
            }
            events.push((when(&d["verified_at"]), verified));
        }
    }
    for n in notifications {
        let mut line = format!(
            "notified {} ({}): {}",
            text(&n["sink"]),
            text(&n["event"]),
            text(&n["status"])
        );
        if n["attempts"].as_u64().unwrap_or(0) > 0 {
            line.push_str(&format!(
                ", {} failed attempt(s), last: {}",
                n["attempts"],
                text(&n["last_error"])
            ));
        }
        events.push((when(&n["created_at"]), line));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let labels: Vec<String> = incident["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    let mut out = vec![
        format!(
            "incident {} — {} — {}",
            incident["id"],
            text(&incident["alertname"]),
            text(&incident["status"])
        ),
        format!("labels: {}", labels.join(", ")),
        String::new(),
    ];
    out.extend(events.into_iter().map(|(at, what)| format!("{at}  {what}")));
    out.join("\n")
}

pub fn control(args: ControlArgs, pause: bool) -> ExitCode {
    let ControlArgs { server, reason } = args;
    run_with(&server, async move |api| {
        let path = if pause { "/api/v1/pause" } else { "/api/v1/resume" };
        let body = serde_json::json!({ "reason": reason });
        let answer = api.call(reqwest::Method::POST, path, &[], Some(body)).await?;
        Ok(if answer["paused"] == true {
            "paused: no action will be taken until `homeostat resume`".to_owned()
        } else {
            "resumed: actions are allowed again".to_owned()
        })
    })
}

pub fn answer(args: AnswerArgs, approve: bool) -> ExitCode {
    let AnswerArgs { server, id, reason } = args;
    run_with(&server, async move |api| {
        let verb = if approve { "approve" } else { "reject" };
        let body = serde_json::json!({ "reason": reason });
        let path = format!("/api/v1/incidents/{id}/{verb}");
        api.call(reqwest::Method::POST, &path, &[], Some(body)).await?;
        Ok(if approve {
            format!("approved: incident {id}'s action goes ahead if the guard and its premise still allow it")
        } else {
            format!("rejected: nothing is done on incident {id}, which is escalated")
        })
    })
}

pub fn audit(args: AuditArgs) -> ExitCode {
    let AuditArgs { server, limit, json } = args;
    run_with(&server, async move |api| {
        let page = api.get("/api/v1/audit", &[("limit", &limit.to_string())]).await?;
        Ok(super::json_or_table(json, &page, audit_table))
    })
}

fn audit_table(page: &Value) -> String {
    let mut lines = vec![format!(
        "{:<19}  {:<16}  {:<12}  {:<9}  {:<8}  reason",
        "at", "who", "role", "action", "subject"
    )];
    for e in page["audit"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{:<19}  {:<16}  {:<12}  {:<9}  {:<8}  {}",
            when(&e["at"]),
            text(&e["who"]),
            text(&e["role"]),
            text(&e["action"]),
            text(&e["subject"]),
            text(&e["reason"])
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verdict that tells a human at once says so; a vanished incident
    /// says how it was closed.
    #[test]
    fn the_timeline_says_who_was_told_and_how_it_closed() {
        let incident = serde_json::json!({
            "id": 3, "alertname": "ServiceDown", "status": "resolved", "labels": {},
            "starts_at": "2026-12-08T03:00:00Z", "first_seen": "2026-12-08T03:00:30Z",
            "last_seen": "2026-12-08T03:00:30Z", "deliveries": 1,
            "resolved_at": "2026-12-08T03:10:00Z", "vanished": true,
        });
        let decision = |verdict: &str| {
            serde_json::json!({"verdict": verdict, "action": "restart", "reason": "why",
                "decided_at": "2026-12-08T03:00:31Z"})
        };
        let text = timeline(&incident, &[decision("premise_gone"), decision("refuse")], &[]);
        assert!(
            text.contains("decided restart — premise_gone, escalated to a human: why"),
            "{text}"
        );
        assert!(text.contains("decided restart — refuse: why"), "{text}");
        assert!(text.contains("closed as vanished"), "{text}");
    }

    /// The numbers line up under their headers (right-aligned).
    #[test]
    fn the_incident_table_lines_up() {
        let page = serde_json::json!({"incidents": [{
            "id": 7, "status": "firing", "alertname": "ServiceDown",
            "first_seen": "2026-12-08T03:00:00Z", "deliveries": 42, "labels": {"service": "web"},
        }]});
        let table = incident_table(&page);
        let lines: Vec<&str> = table.lines().collect();
        let column = |line: &str, word: &str| line.find(word).map(|at| at + word.len());
        assert_eq!(column(lines[0], "id"), column(lines[1], "7"), "{table}");
        assert_eq!(column(lines[0], "deliveries"), column(lines[1], "42"), "{table}");
        assert!(lines[1].ends_with("service=web"), "{table}");
    }
}
