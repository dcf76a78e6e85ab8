//! The configuration file (YAML), its defaults and its validation.
//!
//! Every key is documented here and in `deploy/homeostat.example.yaml`; a
//! test parses that file so the two cannot drift. Errors name the file, the
//! key path and, when the YAML parser knows it, the line and column.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::action::{Backend, TargetLabels};
use crate::detect::spec::AnomalyConfig;
use crate::duration::PromDuration;
use crate::guard::GuardConfig;
use crate::threshold::ThresholdsConfig;

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Largest `server.max_connections`: each connection holds a file descriptor.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Largest `server.queue_capacity`: a million journalled deliveries waiting
/// is already far beyond any useful backlog.
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;

/// Where environment variables come from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP server that receives Alertmanager's webhook and serves the API.
    #[serde(default)]
    pub server: ServerConfig,
    /// Credentials the webhook and API demand. Absent: no authentication,
    /// which is only allowed on a loopback address (see `server.allow_unauthenticated`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// The SQLite journal of deliveries and incidents.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Acting on incidents. Absent: homeostat records incidents and acts on nothing.
    #[serde(default)]
    pub actions: Option<ActionsConfig>,
    /// Adaptive alert thresholds. Absent: no rules are generated.
    #[serde(default)]
    pub thresholds: Option<ThresholdsConfig>,
    /// Live series scored by the streaming anomaly detector, exported as
    /// metrics and generated alerts. Absent: nothing is scored.
    #[serde(default)]
    pub anomaly: Option<AnomalyConfig>,
    /// The file it was loaded from ([`Config::load`]), which a reload reads again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `actions:` — how incidents are acted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// `docker` or `kubernetes`.
    pub backend: Backend,
    /// Record exactly what would be done, on which target, and do nothing.
    /// Default true: acting is something to turn on knowingly.
    #[serde(default = "yes")]
    pub dry_run: bool,
    /// The playbook. Default `rules/playbook.yml`.
    #[serde(default = "default_playbook")]
    pub playbook: PathBuf,
    /// Which alert labels name the target.
    #[serde(default)]
    pub target_labels: TargetLabels,
    /// How long after an action the alert must resolve for it to count as
    /// a success; still firing then is a failure. Default 2m.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: PromDuration,
    /// How long one call to the backend may take (a restart waits up to
    /// `docker.stop_timeout_seconds` for the container to stop). A call not
    /// answered by then is abandoned; what it did is unknown, so it is
    /// verified, and no other action on the incident follows meanwhile.
    /// Default 1m; at most 2m on Docker, whose client gives up at 2m.
    #[serde(default = "default_execute_timeout")]
    pub execute_timeout: PromDuration,
    /// How long a proposed action (a playbook rule's `needs_approval`)
    /// waits for `homeostat approve`; then it is escalated. Default 15m.
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout: PromDuration,
    /// Evict a cordoned node's pods (respecting PodDisruptionBudgets). Default false.
    #[serde(default)]
    pub drain_on_cordon: bool,
    /// Prometheus' URL (http), for the playbook's health queries.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// Alertmanager's URL (http), asked before every action whether the
    /// alert is silenced; a silenced alert is not acted on. Absent: not asked.
    #[serde(default)]
    pub alertmanager_url: Option<String>,
    /// Where to POST a JSON notice when an incident is escalated to a human
    /// (circuit breaker open, playbook exhausted): shorthand for a `webhook`
    /// sink named `escalation_webhook` with `events: [escalation]`.
    #[serde(default)]
    pub escalation_webhook: Option<String>,
    /// Where escalations and `notify` decisions are sent (Alertmanager,
    /// Slack-compatible chat, webhooks), each delivery journalled and retried.
    #[serde(default)]
    pub notifications: NotificationsConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    /// When open incidents are looked at again, on homeostat's own clock.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// How actions are chosen: by the playbook, or by the learning policy.
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// `actions.notifications:` — the sinks that tell humans, and how
/// deliveries to them are retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub sinks: Vec<SinkConfig>,
    /// How often a sent notice is looked at again while its incident fires:
    /// re-sent to Alertmanager sinks (which would otherwise resolve it after
    /// their `resolve_timeout`, 5m by default), and checked for the incident's
    /// end, which is then sent to every sink. Default 1m.
    pub refresh: PromDuration,
    /// Failed sends in a row of a notice not yet delivered before it is
    /// given up (and logged as an error). Default 10.
    pub max_attempts: u32,
    /// Retries wait 1s, doubling up to this. Default 5m.
    pub max_backoff: PromDuration,
    /// homeostat's own URL as people reach it, for links to the incident in
    /// notices (`<url>/api/v1/incidents/<id>`). Absent: no links.
    pub external_url: Option<String>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            sinks: Vec::new(),
            refresh: PromDuration(std::time::Duration::from_secs(60)),
            max_attempts: 10,
            max_backoff: PromDuration(std::time::Duration::from_secs(300)),
            external_url: None,
        }
    }
}

/// One `actions.notifications.sinks[]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in the journal, metrics and logs.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Where to send: Alertmanager's base URL, or the webhook's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// The URL read from a file or the environment instead, for URLs that
    /// are secrets themselves (a Slack incoming webhook's).
    #[serde(default)]
    pub url_secret: Option<SecretSource>,
    /// Headers whose values are read (at each send, so a rotated secret is
    /// picked up) from a file or the environment, e.g. `Authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretSource>,
    /// What the sink gets. Default all: escalation, notice, approval.
    #[serde(default = "all_notice_events")]
    pub events: Vec<NoticeEvent>,
}

/// How a sink is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// Alertmanager's `/api/v2/alerts`: an alert `HomeostatEscalation` or
    /// `HomeostatNotice` with the incident's labels, so the user's own
    /// routes reach their people; resolved when the incident resolves.
    Alertmanager,
    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat):
    /// `{"text": …}`.
    Slack,
    /// Any HTTP endpoint: the notice as JSON.
    Webhook,
}

/// What a notice is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    /// homeostat cannot help: a human must.
    Escalation,
    /// The playbook's `notify` action: for a human to know, nothing done.
    Notice,
    /// An action waits for a human's approval (`homeostat approve ID`).
    Approval,
}

impl NoticeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Escalation => "escalation",
            NoticeEvent::Notice => "notice",
            NoticeEvent::Approval => "approval",
        }
    }
}

fn all_notice_events() -> Vec<NoticeEvent> {
    vec![NoticeEvent::Escalation, NoticeEvent::Notice, NoticeEvent::Approval]
}

impl SinkConfig {
    /// The URL to send to, its secret read now.
    pub fn url(&self, env: &dyn Env) -> Result<String, (String, String)> {
        match (&self.url, &self.url_secret) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(secret)) => Ok(secret.read("url_secret", env)?.expose().to_owned()),
            _ => Err(("url".into(), "set exactly one of `url` or `url_secret`".into())),
        }
    }

    /// The headers, their values read now.
    pub fn header_values(&self, env: &dyn Env) -> Result<Vec<(String, Secret)>, (String, String)> {
        self.headers
            .iter()
            .map(|(name, source)| Ok((name.clone(), source.read(&format!("headers.{name}"), env)?)))
            .collect()
    }
}

impl NotificationsConfig {
    /// The configured sinks, with `escalation_webhook` as a webhook sink.
    pub fn sinks_with(&self, escalation_webhook: Option<&str>) -> Vec<SinkConfig> {
        let mut sinks = self.sinks.clone();
        if let Some(url) = escalation_webhook {
            sinks.push(SinkConfig {
                name: "escalation_webhook".into(),
                kind: SinkKind::Webhook,
                url: Some(url.to_owned()),
                url_secret: None,
                headers: BTreeMap::new(),
                events: vec![NoticeEvent::Escalation],
            });
        }
        sinks
    }

    /// Names unique, URLs http(s), secrets readable now, headers only on
    /// webhooks, durations sane.
    pub fn validate(&self, escalation_webhook: Option<&str>, env: &dyn Env) -> Result<(), (String, String)> {
        if self.refresh.0 < std::time::Duration::from_secs(1) {
            return Err(("actions.notifications.refresh".into(), "must be at least 1s".into()));
        }
        if self.max_attempts == 0 {
            return Err(("actions.notifications.max_attempts".into(), "must be at least 1".into()));
        }
        if self.max_backoff.0 < std::time::Duration::from_secs(1) {
            return Err(("actions.notifications.max_backoff".into(), "must be at least 1s".into()));
        }
        if let Some(url) = &self.external_url {
            check_http_url("actions.notifications.external_url", url)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, sink) in self.sinks_with(escalation_webhook).iter().enumerate() {
            let key = format!("actions.notifications.sinks[{i}]");
            let at = |(sub, message): (String, String)| (format!("{key}.{sub}"), message);
            if sink.name.is_empty() || !names.insert(sink.name.clone()) {
                return Err((format!("{key}.name"), format!("{:?} is empty or not unique", sink.name)));
            }
            let url = sink.url(env).map_err(at)?;
            check_http_url(&format!("{key}.url"), &url)?;
            if sink.kind != SinkKind::Webhook && !sink.headers.is_empty() {
                return Err((format!("{key}.headers"), "only a `webhook` sink sends headers".into()));
            }
            for name in sink.headers.keys() {
                if !is_header_name(name) {
                    return Err((format!("{key}.headers"), format!("{name:?} is not a header name")));
                }
            }
            sink.header_values(env).map_err(at)?;
            if sink.events.is_empty() {
                return Err((format!("{key}.events"), "lists no event: drop the sink instead".into()));
            }
        }
        Ok(())
    }
}

/// A header name is an HTTP token: visible ASCII without separators.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// `actions.reconcile:` — the reconciler looks at every open incident when
/// it is due: at once after a delivery or a verification, at a deferral's
/// end, after a backoff for a refusal. Alertmanager's timings
/// (`group_interval`, `repeat_interval`) decide only how soon homeostat
/// hears of an alert, never how soon it takes the next step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// How often firing incidents are compared with Alertmanager (see
    /// `vanish_after`), and the shortest backoff of a refusal. Default 15s.
    pub period: PromDuration,
    /// The longest a refused or open-ended deferred incident waits for its
    /// next look; the wait doubles from `period` up to this. Default 5m.
    pub max_backoff: PromDuration,
    /// An incident held back this long by refusals or open-ended deferrals
    /// is escalated, once; it is still looked at after. Default 30m.
    pub escalate_after: PromDuration,
    /// A firing incident missing this long from Alertmanager's active
    /// alerts, and not delivered meanwhile, is closed as vanished (its
    /// resolution was lost). Longer than Alertmanager's default
    /// `group_interval` (5m), at which a resolved alert's resolution is
    /// delivered: so an ordinary resolution closes its incident as
    /// resolved, not as vanished. Default 6m.
    pub vanish_after: PromDuration,
    /// Incidents looked at concurrently; actions on one target are always
    /// one at a time. Default 4.
    pub concurrency: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        let minutes = |m: u64| PromDuration(std::time::Duration::from_secs(60 * m));
        ReconcileConfig {
            period: PromDuration(std::time::Duration::from_secs(15)),
            max_backoff: minutes(5),
            escalate_after: minutes(30),
            vanish_after: minutes(6),
            concurrency: 4,
        }
    }
}

impl ReconcileConfig {
    /// Checks the settings; errors name the key (`actions.reconcile.…`).
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let key = |k: &str| format!("actions.reconcile.{k}");
        let (period, max_backoff) = (self.period.0, self.max_backoff.0);
        if period < std::time::Duration::from_secs(1) || period > std::time::Duration::from_secs(600) {
            return Err((
                key("period"),
                format!("must be between 1s and 10m, not {}", self.period),
            ));
        }
        if max_backoff < period || max_backoff > std::time::Duration::from_secs(3600) {
            return Err((
                key("max_backoff"),
                format!(
                    "must be between period ({}) and 1h, not {}",
                    self.period, self.max_backoff
                ),
            ));
        }
        if self.escalate_after.0 < period {
            return Err((
                key("escalate_after"),
                format!("must be at least period ({}), not {}", self.period, self.escalate_after),
            ));
        }
        if self.vanish_after.0 < period || self.vanish_after.0 > std::time::Duration::from_secs(86_400) {
            return Err((
                key("vanish_after"),
                format!(
                    "must be between period ({}) and 1d, not {}",
                    self.period, self.vanish_after
                ),
            ));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err((key("concurrency"), format!("must be 1 to 64, not {}", self.concurrency)));
        }
        Ok(())
    }
}

/// The Docker client gives up on a call after this long (bollard's timeout).
pub const DOCKER_CLIENT_TIMEOUT_SECONDS: u64 = 120;

/// Seconds a Docker call needs beyond the container's stop timeout: to
/// start it again, or to remove and create it.
const DOCKER_CALL_MARGIN_SECONDS: u64 = 10;

impl ActionsConfig {
    /// `execute_timeout` is positive, within what the backend's client
    /// waits, and leaves a restart time to stop and start the container.
    fn check_execute_timeout(&self) -> Result<(), (String, String)> {
        let timeout = self.execute_timeout.0;
        if timeout.is_zero() {
            return Err(("actions.execute_timeout".into(), "must be longer than 0s".into()));
        }
        if self.backend != Backend::Docker {
            return Ok(());
        }
        if timeout.as_secs() > DOCKER_CLIENT_TIMEOUT_SECONDS {
            return Err((
                "actions.execute_timeout".into(),
                format!("must be at most {DOCKER_CLIENT_TIMEOUT_SECONDS}s on Docker, whose client gives up then"),
            ));
        }
        let stop = u64::try_from(self.docker.stop_timeout_seconds).unwrap_or(0);
        if stop + DOCKER_CALL_MARGIN_SECONDS > timeout.as_secs() {
            return Err((
                "actions.docker.stop_timeout_seconds".into(),
                format!(
                    "{stop}s leaves a restart no time to start the container again within actions.execute_timeout \
                     ({}); keep it at most {DOCKER_CALL_MARGIN_SECONDS}s below, or raise execute_timeout",
                    self.execute_timeout
                ),
            ));
        }
        Ok(())
    }
}

/// `actions.policy:` — the learning policy and how far it is trusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// `playbook`, `shadow` (default) or `learn`.
    pub mode: PolicyMode,
    /// Feature name → PromQL, with `{{ $labels.name }}` filled from the
    /// alert; the features are listed in `context::FEATURES`. Default:
    /// queries on the demo services' metrics (`context::default_queries`).
    /// Setting it replaces the whole map; leave a feature out to not use it.
    pub context: BTreeMap<String, String>,
    /// The bandit: exploration switches, prior strength, rewards.
    pub learning: crate::policy::PolicyConfig,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            mode: PolicyMode::default(),
            context: crate::context::default_queries(),
            learning: crate::policy::PolicyConfig::default(),
        }
    }
}

impl PolicySettings {
    /// Checks the settings; errors name the key (`actions.policy.…`).
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        self.learning.validate().map_err(|m| {
            // The policy names its keys from `policy.`; here they live under `learning`.
            let m = m.strip_prefix("policy.").unwrap_or(&m);
            ("actions.policy.learning".to_owned(), m.to_owned())
        })?;
        for (name, query) in &self.context {
            let key = format!("actions.policy.context.{name}");
            if !crate::context::FEATURES.contains(&name.as_str()) {
                let known = crate::context::FEATURES.join(", ");
                return Err((key, format!("unknown feature; known: {known}")));
            }
            if query.trim().is_empty() {
                return Err((key, "must be a PromQL query".into()));
            }
        }
        Ok(())
    }
}

/// Who chooses the action. The guard has the last word in every mode; in
/// shadow and learn mode every verified outcome is learned from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// The playbook, in its order; the policy is not consulted.
    Playbook,
    /// The playbook acts; the policy's choice is recorded beside it, to be
    /// judged (`homeostat policy evaluate`) before it takes over.
    #[default]
    Shadow,
    /// The policy acts, starting from the playbook's order as its prior.
    Learn,
}

fn yes() -> bool {
    true
}

fn default_playbook() -> PathBuf {
    PathBuf::from("rules/playbook.yml")
}

fn default_approval_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(900))
}

fn default_execute_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(60))
}

fn default_verify_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(120))
}

/// `server:` — the HTTP listener and ingest limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on. Default `127.0.0.1:9095`.
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes; larger bodies get 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Notifications journalled but not yet processed; when full, the webhook
    /// answers 503 and Alertmanager retries. Default 1024.
    pub queue_capacity: usize,
    /// Permit listening on a non-loopback address without `auth`. Default false.
    pub allow_unauthenticated: bool,
    /// On SIGTERM/SIGINT, how long to wait for open connections (then they
    /// are closed), then for queued notifications to be processed, then for
    /// a threshold refit under way. Default 30s.
    pub drain_timeout: PromDuration,
    /// A request not answered within this time gets 408, and a client that
    /// has not sent a request's headers within it is disconnected. Default 30s.
    pub request_timeout: PromDuration,
    /// Connections served at once; further clients wait to be accepted
    /// (the kernel's backlog holds them) until one closes. Default 1024.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            max_body_bytes: 1024 * 1024,
            queue_capacity: 1024,
            allow_unauthenticated: false,
            drain_timeout: PromDuration(std::time::Duration::from_secs(30)),
            request_timeout: PromDuration(std::time::Duration::from_secs(30)),
            max_connections: 1024,
        }
    }
}

/// `auth:` — what Alertmanager's webhook `http_config` can send. Either or
/// both may be set; a request passes when it satisfies one of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>` (Alertmanager: `http_config.authorization`).
    #[serde(default)]
    pub bearer_token: Option<SecretSource>,
    /// `Authorization: Basic …` (Alertmanager: `http_config.basic_auth`).
    #[serde(default)]
    pub basic: Option<BasicAuthConfig>,
    /// Named bearer tokens, each with a role: who did what is journalled
    /// under the token's name. `bearer_token` and `basic` have role `admin`.
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
}

/// One `auth.tokens[]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Who holds it, as the audit trail names them.
    pub name: String,
    pub role: Role,
    pub token: SecretSource,
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Post alerts (`POST /api/v1/alerts`) and nothing else.
    Alertmanager,
    /// Read incidents, decisions, notifications, controls and the audit trail.
    Viewer,
    /// What a viewer may, and pause, resume, approve, reject, feedback, reload.
    Operator,
    /// Everything: `bearer_token`, `basic`, or no `auth` at all.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Alertmanager => "alertmanager",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `auth.basic:`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password: SecretSource,
}

/// Where a secret is read from: exactly one of `file` (trailing newline
/// removed) or `env` (the name of an environment variable). Secrets are never
/// written in the config file itself, nor logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

/// `journal:` — the SQLite database, or a PostgreSQL one (`url`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Database file; a relative path is relative to the config file's directory.
    /// Default `homeostat.db`. Not used when `url` is set.
    pub path: PathBuf,
    /// A PostgreSQL database instead of the SQLite file:
    /// `postgres://user@host:port/database` (libpq's URL form), without its
    /// password, which comes from `password`.
    pub url: Option<String>,
    /// The PostgreSQL password, from a file or the environment.
    pub password: Option<SecretSource>,
    /// `full` (default) survives power loss; `normal` survives a crash or
    /// `kill -9` of homeostat but may lose the last commits on power loss.
    pub synchronous: Synchronous,
    /// Deliveries, closed incidents with their decisions, and threshold
    /// fits older than this are pruned in the background (hourly). Default
    /// 30d; at least 1h, and at least the guard's budget window and
    /// cooldown, so those never lose what they count (the circuit breaker
    /// forgets failures older than this).
    pub retention: PromDuration,
    /// PostgreSQL only: how long the leader's lease lasts unrenewed (it is
    /// renewed every third of it). Replicas on one database elect one
    /// leader, which alone acts; another takes over this long after the
    /// leader stops renewing (at once when it stops cleanly). Default 15s;
    /// 1s to 5m.
    pub lease: PromDuration,
}

impl JournalConfig {
    /// The journal as messages and logs name it: the PostgreSQL URL without
    /// its password (nor its query, which may hold one), or the SQLite file.
    pub fn describe(&self) -> String {
        let Some(url) = &self.url else {
            return self.path.display().to_string();
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return "(journal.url)".to_owned();
        };
        // The user information ends at the last `@`, wherever `?` and `/`
        // stand: a password may hold them. Only then is the query dropped.
        let (user, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => (format!("{}@", userinfo.split(':').next().unwrap_or_default()), address),
            None => (String::new(), rest),
        };
        let address = address.split('?').next().unwrap_or_default();
        format!("{scheme}://{user}{address}")
    }

    /// The PostgreSQL password, read from `journal.password`; `None` when
    /// there is none. An error names the key and says what is wrong.
    pub fn read_password(&self, env: &dyn Env) -> std::result::Result<Option<Secret>, (String, String)> {
        match (&self.password, &self.url) {
            (None, _) => Ok(None),
            (Some(_), None) => Err((
                "journal.password".to_owned(),
                "is for a PostgreSQL journal: set journal.url too".to_owned(),
            )),
            (Some(password), Some(_)) => password.read("journal.password", env).map(Some),
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: PathBuf::from("homeostat.db"),
            url: None,
            password: None,
            synchronous: Synchronous::Full,
            retention: PromDuration(std::time::Duration::from_secs(30 * 86_400)),
            lease: PromDuration(std::time::Duration::from_secs(15)),
        }
    }
}

/// SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    Full,
}

/// A secret whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Credentials with their secrets read, as the server checks them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub bearer_token: Option<Secret>,
    pub basic: Option<(String, Secret)>,
    /// Named tokens: (name, role, token).
    pub tokens: Vec<(String, Role, Secret)>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.bearer_token.is_none() && self.basic.is_none() && self.tokens.is_empty()
    }
}

/// A configuration problem, saying where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {}: at `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// The key path, e.g. `server.listen`; `.` for the document itself.
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and parses `path`. Call [`Config::validate`] before using it.
    /// Relative paths in it (journal, playbook, rules_dir, secret files)
    /// are relative to the file's directory, as Prometheus' are; an empty
    /// file (every default) keeps them relative to the working directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(path, &text)?;
        config.source = Some(path.to_owned());
        if !text.trim().is_empty() {
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            config.anchor_paths(base);
        }
        Ok(config)
    }

    /// Makes every relative path in the config relative to `base`.
    pub fn anchor_paths(&mut self, base: &Path) {
        let anchor = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        let anchor_secret = |secret: &mut SecretSource| {
            if let Some(file) = secret.file.as_mut() {
                anchor(file);
            }
        };
        anchor(&mut self.journal.path);
        self.journal.password.iter_mut().for_each(anchor_secret);
        if let Some(auth) = self.auth.as_mut() {
            auth.bearer_token.iter_mut().for_each(anchor_secret);
            auth.basic.iter_mut().for_each(|b| anchor_secret(&mut b.password));
            auth.tokens.iter_mut().for_each(|t| anchor_secret(&mut t.token));
        }
        if let Some(actions) = self.actions.as_mut() {
            anchor(&mut actions.playbook);
            for sink in &mut actions.notifications.sinks {
                sink.url_secret.iter_mut().for_each(anchor_secret);
                sink.headers.values_mut().for_each(anchor_secret);
            }
        }
        // A bare program name is looked up on PATH, not anchored.
        let program = |p: &mut Option<PathBuf>| p.as_mut().filter(|p| p.components().count() > 1).map(&anchor);
        if let Some(thresholds) = self.thresholds.as_mut() {
            anchor(&mut thresholds.rules_dir);
            program(&mut thresholds.promtool);
        }
        if let Some(anomaly) = self.anomaly.as_mut() {
            anchor(&mut anomaly.rules_dir);
            program(&mut anomaly.promtool);
        }
    }

    /// Parses YAML text; `path` only labels errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        // An empty file is a valid config with every default.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let key = match err.path().to_string() {
                p if p == "." || p.is_empty() => ".".to_owned(),
                p => p,
            };
            // serde_yaml's message may start with the key itself: said once.
            let message = err.into_inner().to_string();
            let message = match message.strip_prefix(&format!("{key}: ")) {
                Some(rest) => rest.to_owned(),
                None => message,
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                key,
                message,
            }
        })
    }

    /// Checks what the types cannot, reads the secrets, and returns the
    /// credentials the server will demand.
    pub fn validate(&self, path: &Path, env: &dyn Env) -> Result<Credentials> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be at least 1".into()));
        }
        if !(1..=MAX_QUEUE_CAPACITY).contains(&self.server.queue_capacity) {
            return Err(invalid(
                "server.queue_capacity",
                format!("must be from 1 to {MAX_QUEUE_CAPACITY}"),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.server.max_connections) {
            return Err(invalid(
                "server.max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            ));
        }
        if self.server.request_timeout.0.is_zero() {
            return Err(invalid("server.request_timeout", "must be longer than 0s".into()));
        }
        if self.journal.path.as_os_str().is_empty() {
            return Err(invalid("journal.path", "must name a file".into()));
        }
        if let Some(url) = &self.journal.url {
            // Nothing of the URL is repeated here: it may hold a password.
            let Some((_, rest)) = url
                .split_once("://")
                .filter(|(scheme, _)| ["postgres", "postgresql"].contains(scheme))
            else {
                return Err(invalid(
                    "journal.url",
                    "is not a PostgreSQL URL (postgres://user@host:port/database)".into(),
                ));
            };
            // The user information ends at the last `@`, wherever `?` and
            // `/` stand: a password may hold them.
            let (userinfo, address) = rest.rsplit_once('@').unwrap_or(("", rest));
            let in_userinfo = userinfo.contains(':');
            let query = address.split_once('?').map_or("", |(_, query)| query);
            let in_query = query.split('&').any(|pair| {
                pair.split('=')
                    .next()
                    .is_some_and(|key| key.eq_ignore_ascii_case("password"))
            });
            if in_userinfo || in_query {
                return Err(invalid(
                    "journal.url",
                    "holds a password: put it in journal.password (file or env) instead".into(),
                ));
            }
        }
        self.journal.read_password(env).map_err(|(key, m)| invalid(&key, m))?;
        let lease = self.journal.lease.0;
        if lease < std::time::Duration::from_secs(1) || lease > std::time::Duration::from_secs(300) {
            return Err(invalid(
                "journal.lease",
                format!("must be from 1s to 5m, not {}", self.journal.lease),
            ));
        }
        let retention = self.journal.retention;
        let guard = self.actions.as_ref().map(|a| &a.guard);
        let floors = [("1h", PromDuration(std::time::Duration::from_secs(3600)))]
            .into_iter()
            .chain(guard.map(|g| ("actions.guard.budget.window", g.budget.window)))
            .chain(guard.map(|g| ("actions.guard.cooldown", g.cooldown)));
        for (what, floor) in floors {
            if retention < floor {
                return Err(invalid(
                    "journal.retention",
                    format!("must be at least {what} ({floor}), not {retention}"),
                ));
            }
        }
        let credentials = match &self.auth {
            None => Credentials::default(),
            Some(auth) => {
                if auth.bearer_token.is_none() && auth.basic.is_none() && auth.tokens.is_empty() {
                    return Err(invalid(
                        "auth",
                        "set `bearer_token`, `basic` or `tokens` (or remove `auth` to disable authentication)".into(),
                    ));
                }
                let mut tokens: Vec<(String, Role, Secret)> = Vec::new();
                for (i, named) in auth.tokens.iter().enumerate() {
                    let key = format!("auth.tokens[{i}]");
                    if named.name.is_empty() || tokens.iter().any(|(name, ..)| *name == named.name) {
                        return Err(invalid(
                            &format!("{key}.name"),
                            format!("{:?} is empty or not unique", named.name),
                        ));
                    }
                    let token = named
                        .token
                        .read(&format!("{key}.token"), env)
                        .map_err(|(key, m)| invalid(&key, m))?;
                    if tokens.iter().any(|(.., other)| other == &token) {
                        return Err(invalid(
                            &format!("{key}.token"),
                            "is the same token as another entry's: each holder needs their own".into(),
                        ));
                    }
                    tokens.push((named.name.clone(), named.role, token));
                }
                let bearer_token = auth
                    .bearer_token
                    .as_ref()
                    .map(|s| s.read("auth.bearer_token", env))
                    .transpose()
                    .map_err(|(key, m)| invalid(&key, m))?;
                let basic = match &auth.basic {
                    None => None,
                    Some(b) if b.username.is_empty() => {
                        return Err(invalid("auth.basic.username", "must not be empty".into()))
                    }
                    Some(b) => {
                        let password = b
                            .password
                            .read("auth.basic.password", env)
                            .map_err(|(key, m)| invalid(&key, m))?;
                        Some((b.username.clone(), password))
                    }
                };
                if let Some(i) = tokens.iter().position(|(.., t)| Some(t) == bearer_token.as_ref()) {
                    return Err(invalid(
                        &format!("auth.tokens[{i}].token"),
                        "is the same token as auth.bearer_token (role admin): each holder needs their own".into(),
                    ));
                }
                Credentials {
                    bearer_token,
                    basic,
                    tokens,
                }
            }
        };
        // Durations are added to timestamps; beyond ten years that arithmetic
        // could overflow, and no such setting is meaningful.
        let ten_years = std::time::Duration::from_secs(10 * 365 * 86_400);
        let mut durations = vec![
            ("server.drain_timeout", self.server.drain_timeout),
            ("server.request_timeout", self.server.request_timeout),
        ];
        if let Some(actions) = &self.actions {
            durations.push(("actions.verify_timeout", actions.verify_timeout));
            durations.push(("actions.approval_timeout", actions.approval_timeout));
            durations.push(("actions.guard.cooldown", actions.guard.cooldown));
            durations.push(("actions.guard.budget.window", actions.guard.budget.window));
        }
        if let Some(anomaly) = &self.anomaly {
            anomaly.validate().map_err(|(key, m)| invalid(&key, m))?;
        }
        if let Some(thresholds) = &self.thresholds {
            thresholds.validate().map_err(|(key, m)| invalid(&key, m))?;
        }
        if let Some((key, _)) = durations.iter().find(|(_, d)| d.0 > ten_years) {
            return Err(invalid(key, "must be at most 10 years (3650d)".into()));
        }
        if let Some(actions) = &self.actions {
            match crate::playbook::Playbook::load(&actions.playbook) {
                Err(err) => return Err(invalid("actions.playbook", err.to_string())),
                Ok(playbook) if playbook.has_health_queries() && actions.prometheus_url.is_none() => {
                    return Err(invalid(
                        "actions.prometheus_url",
                        format!(
                            "the playbook {} has health queries; set the Prometheus to run them on",
                            actions.playbook.display()
                        ),
                    ))
                }
                Ok(_) => {}
            }
            if actions.verify_timeout.0.is_zero() {
                return Err(invalid("actions.verify_timeout", "must be longer than 0s".into()));
            }
            if actions.approval_timeout.0.is_zero() {
                return Err(invalid("actions.approval_timeout", "must be longer than 0s".into()));
            }
            actions.check_execute_timeout().map_err(|(key, m)| invalid(&key, m))?;
            for (key, url) in [
                ("actions.prometheus_url", &actions.prometheus_url),
                ("actions.alertmanager_url", &actions.alertmanager_url),
                ("actions.escalation_webhook", &actions.escalation_webhook),
            ] {
                if let Some(url) = url {
                    check_http_url(key, url).map_err(|(key, m)| invalid(&key, m))?;
                }
            }
            actions.docker.validate().map_err(|(key, m)| invalid(&key, m))?;
            actions.kubernetes.validate().map_err(|(key, m)| invalid(&key, m))?;
            actions.policy.validate().map_err(|(key, m)| invalid(&key, m))?;
            actions.guard.validate().map_err(|(key, m)| invalid(&key, m))?;
            actions.reconcile.validate().map_err(|(key, m)| invalid(&key, m))?;
            actions
                .notifications
                .validate(actions.escalation_webhook.as_deref(), env)
                .map_err(|(key, m)| invalid(&key, m))?;
        }
        let listen = self.server.listen;
        if credentials.is_empty() && !listen.ip().is_loopback() && !self.server.allow_unauthenticated {
            return Err(invalid(
                "server.listen",
                format!(
                    "{listen} is not a loopback address and no `auth` is configured: anyone who can reach it could \
                     post alerts; configure `auth`, or set `server.allow_unauthenticated: true` \
                     (flag `--allow-unauthenticated`) if the network is trusted"
                ),
            ));
        }
        Ok(credentials)
    }
}

/// `url` must be an http:// or https:// URL with a host; `(key, message)` otherwise.
pub fn check_http_url(key: &str, url: &str) -> Result<(), (String, String)> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err((
            key.to_owned(),
            format!("{url:?} is not an http:// or https:// URL, e.g. http://127.0.0.1:9090"),
        )),
    }
}

/// `dir` must name a directory, existing or not; `(key, message)` otherwise.
pub fn check_rules_dir(key: &str, dir: &std::path::Path) -> Result<(), (String, String)> {
    if dir.as_os_str().is_empty() {
        return Err((key.to_owned(), "must name a directory".to_owned()));
    }
    if dir.exists() && !dir.is_dir() {
        return Err((
            key.to_owned(),
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    Ok(())
}

impl SecretSource {
    fn read(&self, key: &str, env: &dyn Env) -> std::result::Result<Secret, (String, String)> {
        let value = match (&self.file, &self.env) {
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|e| (format!("{key}.file"), format!("cannot read {}: {e}", file.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, Some(name)) => env
                .var(name)
                .ok_or_else(|| (format!("{key}.env"), format!("environment variable {name} is not set")))?,
            _ => return Err((key.to_owned(), "set exactly one of `file` or `env`".to_owned())),
        };
        if value.is_empty() {
            return Err((key.to_owned(), "the secret is empty".to_owned()));
        }
        Ok(Secret(value))
    }
}

/// `executor.docker:`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Docker Engine: `unix:///path/docker.sock` or `tcp://host:port`.
    /// Default: `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Scale a Compose service no lower than this. Default 1.
    pub min_replicas: u32,
    /// Scale a Compose service no higher than this. Default 5.
    pub max_replicas: u32,
    /// Seconds a container gets to stop before it is killed. Default 10.
    pub stop_timeout_seconds: i32,
    /// An image is known good once it ran this long before homeostat
    /// replaced it; a rollback goes to the newest known-good image in the
    /// container's history, never to one that ran shorter. A container's
    /// spec is known good once it ran this long ready, with no alert
    /// firing about it; a repair restores it. Default 10m.
    pub known_good_after: PromDuration,
}

impl DockerConfig {
    /// What the types cannot check: `(key, message)` of the first problem.
    /// The host schemes are the ones the Docker executor knows.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(host) = &self.host {
            let supported = match host.split_once("://") {
                Some(("unix", path)) => !path.is_empty(),
                Some(("tcp" | "http", address)) => !address.is_empty(),
                _ => false,
            };
            if !supported {
                return Err((
                    "actions.docker.host".into(),
                    format!("{host:?} is not unix:///path/to/docker.sock or tcp://host:port"),
                ));
            }
        }
        if !(0..=600).contains(&self.stop_timeout_seconds) {
            return Err((
                "actions.docker.stop_timeout_seconds".into(),
                format!("{} is not from 0 to 600 seconds", self.stop_timeout_seconds),
            ));
        }
        if self.min_replicas > self.max_replicas {
            return Err((
                "actions.docker.min_replicas".into(),
                format!("{} is above max_replicas ({})", self.min_replicas, self.max_replicas),
            ));
        }
        Ok(())
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            min_replicas: 1,
            max_replicas: 5,
            stop_timeout_seconds: 10,
            known_good_after: PromDuration(std::time::Duration::from_secs(600)),
        }
    }
}

/// `executor.kubernetes:`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Scale a deployment no lower than this. Default 1.
    pub min_replicas: i32,
    /// Scale a deployment no higher than this. Default 10.
    pub max_replicas: i32,
    /// A revision is known good once it ran this long before the next one
    /// replaced it (by its ReplicaSets' creation times); a rollback goes to
    /// the newest known-good revision, never to one that ran shorter.
    /// Default 10m.
    pub known_good_after: PromDuration,
}

impl KubernetesConfig {
    /// What the types cannot check: `(key, message)` of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.min_replicas > self.max_replicas || self.max_replicas < 1 {
            return Err((
                "actions.kubernetes.max_replicas".into(),
                format!(
                    "{} must be at least 1 and at least min_replicas ({})",
                    self.max_replicas, self.min_replicas
                ),
            ));
        }
        Ok(())
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            min_replicas: 1,
            max_replicas: 10,
            known_good_after: PromDuration(std::time::Duration::from_secs(600)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("test.yaml"), text)
    }

    fn no_env() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:9095");
        assert_eq!(config.server.max_body_bytes, 1 << 20);
        assert!(config.validate(Path::new("test.yaml"), &no_env()).unwrap().is_empty());
    }

    /// The commented `name:` block of deploy/homeostat.example.yaml, uncommented.
    fn example_block(name: &str) -> String {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("deploy/homeostat.example.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| *l != format!("# {name}:"))
            .map_while(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            block.starts_with(&format!("{name}:")),
            "no commented {name} block in the example"
        );
        block
    }

    #[test]
    fn the_shipped_example_anomaly_block_parses_and_validates() {
        let config = parse(&example_block("anomaly")).unwrap();
        let anomaly = config.anomaly.as_ref().unwrap();
        assert_eq!(anomaly.specs.len(), 1);
        assert_eq!(anomaly.specs[0].alarm_at(), crate::policy::thresholds::ANOMALY_SCORE);
        config.validate(Path::new("test.yaml"), &no_env()).unwrap();
    }

    #[test]
    fn the_shipped_example_thresholds_block_parses_and_validates() {
        let config = parse(&example_block("thresholds")).unwrap();
        let thresholds = config.thresholds.as_ref().unwrap();
        assert_eq!(thresholds.specs.len(), 2);
        assert_eq!(thresholds.feedback, crate::threshold::FeedbackConfig::default());
        config.validate(Path::new("test.yaml"), &no_env()).unwrap();
    }

    #[test]
    fn a_wrong_type_names_key_and_line() {
        let err = parse("server:\n  listen: 127.0.0.1:9095\n  max_body_bytes: lots\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.yaml"), "{text}");
        assert!(text.contains("`server.max_body_bytes`"), "{text}");
        assert_eq!(
            text.matches("server.max_body_bytes").count(),
            1,
            "the key said once: {text}"
        );
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_refused_with_the_expected_ones() {
        let err = parse("server:\n  lisen: 127.0.0.1:1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        assert!(err.contains("`listen`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse("server:\n  listen: nowhere\n").unwrap_err().to_string();
        assert!(err.contains("`server.listen`"), "{err}");
        let err = parse("server:\n  drain_timeout: soon\n").unwrap_err().to_string();
        assert!(
            err.contains("`server.drain_timeout`") && err.contains("invalid duration"),
            "{err}"
        );
        let err = parse("journal:\n  synchronous: sometimes\n").unwrap_err().to_string();
        assert!(err.contains("`journal.synchronous`"), "{err}");
        let err = parse("- a list\n").unwrap_err().to_string();
        assert!(err.contains("at `.`"), "{err}");
        let config = parse("server:\n  queue_capacity: 0\n").unwrap();
        let err = config
            .validate(Path::new("test.yaml"), &no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.queue_capacity`"), "{err}");
        for connections in [0, MAX_CONNECTIONS + 1] {
            let config = parse(&format!("server:\n  max_connections: {connections}\n")).unwrap();
            let err = config
                .validate(Path::new("test.yaml"), &no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains("`server.max_connections`"), "{connections}: {err}");
        }
        // Shorter than an hour, or than what the guard counts back over.
        let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/playbook.yml");
        for text in [
            "journal:\n  retention: 10m\n".to_owned(),
            format!("journal:\n  retention: 2h\nactions:\n  backend: docker\n  playbook: {playbook}\n  prometheus_url: http://127.0.0.1:9090\n  guard: {{budget: {{max_actions: 5, window: 3h}}}}\n"),
        ] {
            let err = parse(&text).unwrap().validate(Path::new("test.yaml"), &no_env()).unwrap_err().to_string();
            assert!(err.contains("`journal.retention`"), "{text}: {err}");
        }
    }

    /// A PostgreSQL journal: its URL is PostgreSQL's and carries no
    /// password; the password is read from where `journal.password` says,
    /// and only for a URL.
    #[test]
    fn a_postgresql_journal_takes_its_password_apart_from_its_url() {
        let validate = |text: &str, env: &HashMap<String, String>| {
            parse(text)
                .unwrap()
                .validate(Path::new("test.yaml"), env)
                .map_err(|e| e.to_string())
        };
        for (journal, expected) in [
            ("url: mysql://db/x", "is not a PostgreSQL URL"),
            ("url: postgresql+psycopg://u:secret@db/x", "is not a PostgreSQL URL"),
            ("url: host=db password=secret", "is not a PostgreSQL URL"),
            ("url: postgres://homeostat:secret@db:5432/x", "holds a password"),
            ("url: postgres://homeostat:se?cr/et@db/x", "holds a password"),
            (
                "url: postgres://homeostat@db/x?sslmode=disable&password=secret",
                "holds a password",
            ),
            ("password: {env: PGPASS}", "set journal.url too"),
            (
                "url: postgres://homeostat@db/x\n  password: {env: PGPASS}",
                "PGPASS is not set",
            ),
        ] {
            let err = validate(&format!("journal:\n  {journal}\n"), &no_env()).unwrap_err();
            assert!(err.contains("`journal.") && err.contains(expected), "{journal}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let text = "journal:\n  url: postgresql://homeostat@db/x?sslmode=disable\n  password: {env: PGPASS}\n";
        let env = HashMap::from([("PGPASS".to_owned(), "s3cret".to_owned())]);
        validate(text, &env).unwrap();
        let config = parse(text).unwrap();
        let password = config.journal.read_password(&env).unwrap().unwrap();
        assert_eq!(password.expose(), "s3cret");
        // Messages name the database without a password, wherever the URL holds one.
        for (url, described) in [
            ("postgres://u:pw@db:5432/x", "postgres://u@db:5432/x"),
            ("postgres://u@db/x?sslmode=disable&password=pw", "postgres://u@db/x"),
            ("postgres://u:pa?ss/wd@db/x", "postgres://u@db/x"),
            ("postgresql://db/x", "postgresql://db/x"),
            ("host=db password=pw", "(journal.url)"),
        ] {
            let journal = JournalConfig {
                url: Some(url.to_owned()),
                ..JournalConfig::default()
            };
            assert_eq!(journal.describe(), described);
        }
        assert_eq!(JournalConfig::default().describe(), "homeostat.db");
    }

    /// Addresses and replica bounds that cannot work are refused at load,
    /// not when the first action needs them.
    #[test]
    fn unusable_action_settings_name_their_key() {
        let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/playbook.yml");
        for (setting, key) in [
            ("alertmanager_url: not a url", "actions.alertmanager_url"),
            ("prometheus_url: 'http://'", "actions.prometheus_url"),
            ("escalation_webhook: ftp://x", "actions.escalation_webhook"),
            ("docker: {host: 'ftp://x'}", "actions.docker.host"),
            ("docker: {host: 'unix://'}", "actions.docker.host"),
            (
                "notifications: {sinks: [{name: a, type: slack}]}",
                "actions.notifications.sinks[0].url",
            ),
            (
                "notifications: {sinks: [{name: a, type: webhook, url: 'ftp://x'}]}",
                "actions.notifications.sinks[0].url",
            ),
            (
                "notifications: {sinks: [{name: a, type: slack, url_secret: {file: /nonexistent/url}}]}",
                "actions.notifications.sinks[0].url_secret.file",
            ),
            (
                "notifications: {sinks: [{name: a, type: webhook, url: 'http://x', headers: {'Bad Name': {env: X}}}]}",
                "actions.notifications.sinks[0].headers",
            ),
            (
                "notifications: {sinks: [{name: a, type: slack, url: 'http://x', headers: {Authorization: {env: X}}}]}",
                "actions.notifications.sinks[0].headers",
            ),
            (
                "notifications: {sinks: [{name: a, type: webhook, url: 'http://x', headers: {Authorization: {env: UNSET}}}]}",
                "actions.notifications.sinks[0].headers.Authorization.env",
            ),
            (
                "notifications: {sinks: [{name: a, type: slack, url: 'http://x'}, {name: a, type: webhook, url: 'http://y'}]}",
                "actions.notifications.sinks[1].name",
            ),
            ("notifications: {refresh: 0s}", "actions.notifications.refresh"),
            ("notifications: {max_attempts: 0}", "actions.notifications.max_attempts"),
            (
                "docker: {min_replicas: 5, max_replicas: 1}",
                "actions.docker.min_replicas",
            ),
            (
                "kubernetes: {min_replicas: 0, max_replicas: 0}",
                "actions.kubernetes.max_replicas",
            ),
            (
                "guard: {budget: {max_actions: 5, window: 0s}}",
                "actions.guard.budget.window",
            ),
            (
                "guard: {budget: {max_actions: 0, window: 1h}}",
                "actions.guard.budget.max_actions",
            ),
            ("guard: {max_concurrent: 0}", "actions.guard.max_concurrent"),
            (
                "guard: {circuit_breaker_failures: 0}",
                "actions.guard.circuit_breaker_failures",
            ),
            (
                "guard: {maintenance_windows: [{start: '2026-11-28T12:00:00Z', end: '2026-11-28T11:00:00Z'}]}",
                "actions.guard.maintenance_windows[0].end",
            ),
            // A stop longer than the call may take: the call would be abandoned mid-restart.
            (
                "docker: {stop_timeout_seconds: 130}",
                "actions.docker.stop_timeout_seconds",
            ),
            (
                "execute_timeout: 30s\n  docker: {stop_timeout_seconds: 25}",
                "actions.docker.stop_timeout_seconds",
            ),
            (
                "docker: {stop_timeout_seconds: -1}",
                "actions.docker.stop_timeout_seconds",
            ),
            (
                "docker: {stop_timeout_seconds: 2000000000}",
                "actions.docker.stop_timeout_seconds",
            ),
            ("execute_timeout: 0s", "actions.execute_timeout"),
            // Past what the Docker client waits.
            ("execute_timeout: 5m", "actions.execute_timeout"),
            ("reconcile: {period: 0s}", "actions.reconcile.period"),
            (
                "reconcile: {period: 1m, max_backoff: 30s}",
                "actions.reconcile.max_backoff",
            ),
            ("reconcile: {escalate_after: 1s}", "actions.reconcile.escalate_after"),
            ("reconcile: {vanish_after: 1s}", "actions.reconcile.vanish_after"),
            ("reconcile: {concurrency: 0}", "actions.reconcile.concurrency"),
        ] {
            let prometheus = if setting.starts_with("prometheus_url") {
                ""
            } else {
                "\n  prometheus_url: http://127.0.0.1:9090"
            };
            let config = parse(&format!(
                "actions:\n  backend: docker\n  playbook: {playbook}{prometheus}\n  {setting}\n"
            ))
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
            let err = config
                .validate(Path::new("test.yaml"), &no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{setting}: {err}");
        }
    }

    #[test]
    fn a_stop_timeout_within_the_call_timeout_is_accepted() {
        let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/playbook.yml");
        for setting in [
            "docker: {}",
            "execute_timeout: 2m\n  docker: {stop_timeout_seconds: 110}",
            "execute_timeout: 11s\n  docker: {stop_timeout_seconds: 1}",
        ] {
            let config = parse(&format!(
                "actions:\n  backend: docker\n  playbook: {playbook}\n  prometheus_url: http://127.0.0.1:9090\n  {setting}\n"
            ))
            .unwrap();
            config
                .validate(Path::new("test.yaml"), &no_env())
                .unwrap_or_else(|e| panic!("{setting}: {e}"));
        }
        // On Kubernetes the Docker client's bound does not apply.
        let config = parse(&format!(
            "actions:\n  backend: kubernetes\n  playbook: {playbook}\n  prometheus_url: http://127.0.0.1:9090\n  execute_timeout: 10m\n"
        ))
        .unwrap();
        config.validate(Path::new("test.yaml"), &no_env()).unwrap();
    }

    #[test]
    fn non_loopback_without_auth_is_refused_unless_allowed() {
        let mut config = parse("server:\n  listen: 0.0.0.0:9095\n").unwrap();
        let err = config
            .validate(Path::new("test.yaml"), &no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`server.listen`") && err.contains("allow_unauthenticated"),
            "{err}"
        );
        config.server.allow_unauthenticated = true;
        config.validate(Path::new("test.yaml"), &no_env()).unwrap();
    }

    #[test]
    fn secrets_come_from_env_or_file_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = format!(
            "server: {{listen: '0.0.0.0:9095'}}\nauth:\n  bearer_token: {{file: {}}}\n  basic: {{username: am, password: {{env: AM_PASSWORD}}}}\n",
            file.display()
        );
        let config = parse(&text).unwrap();
        let env = HashMap::from([("AM_PASSWORD".to_owned(), "hunter2".to_owned())]);
        let credentials = config.validate(Path::new("test.yaml"), &env).unwrap();
        assert_eq!(credentials.bearer_token.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(credentials.basic.as_ref().unwrap().1.expose(), "hunter2");
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");

        let err = config
            .validate(Path::new("test.yaml"), &no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`auth.basic.password.env`") && err.contains("AM_PASSWORD"),
            "{err}"
        );

        let both = parse("auth:\n  bearer_token: {file: /x, env: Y}\n").unwrap();
        let err = both.validate(Path::new("test.yaml"), &env).unwrap_err().to_string();
        assert!(
            err.contains("`auth.bearer_token`") && err.contains("exactly one"),
            "{err}"
        );

        let missing = parse("auth:\n  bearer_token: {file: /does/not/exist}\n").unwrap();
        let err = missing.validate(Path::new("test.yaml"), &env).unwrap_err().to_string();
        assert!(
            err.contains("`auth.bearer_token.file`") && err.contains("/does/not/exist"),
            "{err}"
        );

        let empty = parse("auth: {}\n").unwrap();
        let err = empty.validate(Path::new("test.yaml"), &env).unwrap_err().to_string();
        assert!(err.contains("at `auth`"), "{err}");

        // Named tokens: each name and each token once.
        let env: HashMap<String, String> = [("A", "one"), ("B", "two"), ("C", "one")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let tokens = |entries: &str| parse(&format!("auth:\n  tokens: [{entries}]\n")).unwrap();
        let ok = tokens("{name: am, role: alertmanager, token: {env: A}}, {name: bob, role: viewer, token: {env: B}}");
        let credentials = ok.validate(Path::new("test.yaml"), &env).unwrap();
        assert_eq!(credentials.tokens[1].0, "bob");
        assert_eq!(credentials.tokens[1].1, Role::Viewer);
        let shared = parse("auth:\n  bearer_token: {env: B}\n  tokens: [{name: bob, role: viewer, token: {env: B}}]\n")
            .unwrap()
            .validate(Path::new("test.yaml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            shared.contains("`auth.tokens[0].token`") && shared.contains("bearer_token"),
            "{shared}"
        );
        for (entries, key) in [
            (
                "{name: am, role: viewer, token: {env: A}}, {name: am, role: viewer, token: {env: B}}",
                "`auth.tokens[1].name`",
            ),
            (
                "{name: am, role: viewer, token: {env: A}}, {name: bo, role: operator, token: {env: C}}",
                "`auth.tokens[1].token`",
            ),
            ("{name: am, role: root, token: {env: A}}", "auth.tokens"),
        ] {
            let err = match parse(&format!("auth:\n  tokens: [{entries}]\n")) {
                Ok(config) => config.validate(Path::new("test.yaml"), &env).unwrap_err().to_string(),
                Err(err) => err.to_string(),
            };
            assert!(err.contains(key), "{entries}: {err}");
        }
    }
}
