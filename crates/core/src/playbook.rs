//! The playbook: which actions to try, in order, for which alerts.
//!
//! It is the static policy the learned one starts from. Rules match alert
//! labels with Alertmanager's matcher syntax; the first matching rule wins.
//! Each failed attempt on an incident moves to the rule's next action; when
//! none is left, the incident is escalated to a human.
//!
//! ```yaml
//! rules:
//!   - name: service-down
//!     matchers: ['alertname="ServiceDown"', 'severity=~"page|critical"']
//!     actions: [restart, recreate, rollback]
//! ```

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::alert::LabelSet;

/// A playbook as written in YAML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookFile {
    pub rules: Vec<RuleFile>,
}

/// One rule as written in YAML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Unique; recorded with every decision the rule makes.
    pub name: String,
    /// Alertmanager matchers, all of which must hold: `name="v"`, `name!="v"`,
    /// `name=~"re"`, `name!~"re"`. No matchers: every alert.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Actions to try in order, one per attempt.
    pub actions: Vec<Action>,
    /// PromQL that must return a result, besides the alert resolving, for
    /// an action to count as a success; `{{ $labels.NAME }}` is replaced by
    /// the alert's label (escaped for a PromQL string). Needs
    /// `actions.prometheus_url`.
    #[serde(default)]
    pub health_query: Option<String>,
    /// Actions of this rule that a human must approve first: homeostat
    /// proposes the exact operation, notifies, and acts only on
    /// `homeostat approve` within `actions.approval_timeout` (the guard
    /// and the premise checked again then); a rejection or no answer
    /// escalates.
    #[serde(default)]
    pub needs_approval: Vec<Action>,
    /// What to do when the target was stopped on purpose (a container
    /// stopped through the Docker API and exited 0): `leave` it alone, the
    /// default (recorded and notified), or `heal` it like a crash.
    #[serde(default)]
    pub deliberate_stop: DeliberateStop,
}

/// A rule's answer to a target stopped on purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliberateStop {
    /// Recorded ("stopped deliberately") and notified; nothing is done.
    #[default]
    Leave,
    /// Healed like any other failure.
    Heal,
}

/// A label matcher, with Alertmanager's semantics: regexes are anchored, and
/// a missing label matches as the empty string.
#[derive(Clone, Debug)]
pub struct Matcher {
    name: String,
    kind: MatchKind,
}

#[derive(Clone, Debug)]
enum MatchKind {
    Equal(String),
    NotEqual(String),
    Regex(Regex),
    NotRegex(Regex),
}

impl Matcher {
    /// Parses `name="value"` (quotes optional) with `=`, `!=`, `=~` or `!~`.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let text = text.trim();
        let split = text
            .find(['=', '!'])
            .ok_or_else(|| format!("{text:?} is not a matcher: expected name=\"value\", !=, =~ or !~"))?;
        let name = text[..split].trim();
        let rest = &text[split..];
        let (op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("{text:?} has no operator: expected =, !=, =~ or !~"))?;
        if name.is_empty() || !crate::alert::is_label_name(name) {
            return Err(format!("{text:?}: {name:?} is not a label name"));
        }
        let value = unquote(value).ok_or_else(|| format!("{text:?}: unterminated quoted value"))?;
        let regex = |v: &str| Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("{text:?}: bad regex: {e}"));
        let kind = match op {
            "=" => MatchKind::Equal(value),
            "!=" => MatchKind::NotEqual(value),
            "=~" => MatchKind::Regex(regex(&value)?),
            _ => MatchKind::NotRegex(regex(&value)?),
        };
        Ok(Matcher {
            name: name.to_owned(),
            kind,
        })
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        match &self.kind {
            MatchKind::Equal(v) => value == v,
            MatchKind::NotEqual(v) => value != v,
            MatchKind::Regex(re) => re.is_match(value),
            MatchKind::NotRegex(re) => !re.is_match(value),
        }
    }
}

/// `"a\"b"` → `a"b`; an unquoted value is taken as it is.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub actions: Vec<Action>,
    pub health_query: Option<String>,
    pub needs_approval: Vec<Action>,
    pub deliberate_stop: DeliberateStop,
}

/// A validated playbook.
#[derive(Clone, Debug, Default)]
pub struct Playbook {
    pub rules: Vec<Rule>,
}

/// What the playbook says to do next for an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Try `action`, the rule's `attempt`-th (from 0).
    Try {
        rule: &'a str,
        action: Action,
        attempt: usize,
    },
    /// Every action of the rule has been tried and failed: escalate.
    Exhausted { rule: &'a str, attempts: usize },
    /// No rule matches the alert.
    NoRule,
}

/// A playbook problem, saying where.
#[derive(Debug, thiserror::Error)]
#[error("invalid playbook {}: at `{key}`: {message}", path.display())]
pub struct PlaybookError {
    pub path: PathBuf,
    pub key: String,
    pub message: String,
}

impl Playbook {
    /// Reads and validates a playbook file.
    pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlaybookError {
            path: path.to_owned(),
            key: ".".into(),
            message: format!("cannot read: {e}"),
        })?;
        Playbook::parse(path, &text)
    }

    /// Parses YAML text; `path` only labels errors.
    pub fn parse(path: &Path, text: &str) -> Result<Playbook, PlaybookError> {
        let error = |key: String, message: String| PlaybookError {
            path: path.to_owned(),
            key,
            message,
        };
        let file: PlaybookFile = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| error(e.path().to_string(), e.into_inner().to_string()))?;
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rules.len());
        for (i, rule) in file.rules.into_iter().enumerate() {
            if rule.name.is_empty() {
                return Err(error(format!("rules[{i}].name"), "must not be empty".into()));
            }
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(error(
                    format!("rules[{i}].name"),
                    format!("{:?} is used twice", rule.name),
                ));
            }
            if rule.actions.is_empty() {
                return Err(error(format!("rules[{i}].actions"), "list at least one action".into()));
            }
            let matchers = rule
                .matchers
                .iter()
                .enumerate()
                .map(|(j, m)| Matcher::parse(m).map_err(|e| error(format!("rules[{i}].matchers[{j}]"), e)))
                .collect::<Result<Vec<_>, _>>()?;
            if rule.health_query.as_deref().is_some_and(|q| q.trim().is_empty()) {
                return Err(error(format!("rules[{i}].health_query"), "must not be empty".into()));
            }
            if let Some(j) = rule.needs_approval.iter().position(|a| !rule.actions.contains(a)) {
                return Err(error(
                    format!("rules[{i}].needs_approval[{j}]"),
                    format!("{} is not one of the rule's actions", rule.needs_approval[j]),
                ));
            }
            rules.push(Rule {
                name: rule.name,
                matchers,
                actions: rule.actions,
                health_query: rule.health_query,
                needs_approval: rule.needs_approval,
                deliberate_stop: rule.deliberate_stop,
            });
        }
        Ok(Playbook { rules })
    }

    /// The first rule whose matchers all hold for `labels`.
    pub fn rule_for(&self, labels: &LabelSet) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matchers.iter().all(|m| m.matches(labels)))
    }

    /// The next step for an incident with these labels after `failed`
    /// attempts that did not fix it.
    pub fn next_step(&self, labels: &LabelSet, failed: usize) -> Step<'_> {
        self.rule_for(labels).map_or(Step::NoRule, |rule| rule.step(failed))
    }
}

impl Rule {
    /// This rule's next action after `failed` failed attempts.
    pub fn step(&self, failed: usize) -> Step<'_> {
        self.step_where(failed, |_| true)
    }

    /// This rule's next action after `failed` failed attempts, passing over
    /// the actions that do not apply to the target now (a `repair` where
    /// nothing drifted): each failed attempt used up one applicable action.
    pub fn step_where(&self, failed: usize, applies: impl Fn(Action) -> bool) -> Step<'_> {
        match self.actions.iter().copied().filter(|a| applies(*a)).nth(failed) {
            Some(action) => Step::Try {
                rule: &self.name,
                action,
                attempt: failed,
            },
            None => Step::Exhausted {
                rule: &self.name,
                attempts: failed,
            },
        }
    }

    /// The health query with the alert's labels filled in.
    pub fn health_query_for(&self, labels: &LabelSet) -> Option<String> {
        Some(fill_labels(self.health_query.as_deref()?, labels))
    }
}

/// Fills `{{ $labels.name }}` in a PromQL template with the label's value,
/// escaped for a double-quoted PromQL string (an absent label is empty,
/// which PromQL's matchers treat as "label not set").
pub fn fill_labels(template: &str, labels: &LabelSet) -> String {
    fill_with(template, |name| labels.get(name).map_or("", String::as_str))
}

/// [`fill_labels`] with each label's value from `value(name)`.
pub fn fill_with<'a>(template: &str, value: impl Fn(&str) -> &'a str) -> String {
    static LABEL: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let label =
        LABEL.get_or_init(|| Regex::new(r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}").expect("a valid regex"));
    let filled = label.replace_all(template, |caps: &regex::Captures<'_>| {
        value(&caps[1]).replace('\\', "\\\\").replace('"', "\\\"")
    });
    filled.into_owned()
}

impl Playbook {
    /// Whether any rule has a health query (which needs Prometheus).
    pub fn has_health_queries(&self) -> bool {
        self.rules.iter().any(|r| r.health_query.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_shipped_playbook_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("rules/playbook.yml");
        let playbook = Playbook::load(&path).unwrap();
        assert!(!playbook.rules.is_empty());
        // A failing dependency is not fixed by restarting its caller.
        let dependency = labels(&[("alertname", "UpstreamErrors"), ("service", "service_a")]);
        assert_eq!(
            playbook.next_step(&dependency, 0),
            Step::Try {
                rule: "dependency-failure",
                action: Action::Notify,
                attempt: 0
            }
        );
    }

    #[test]
    fn actions_that_do_not_apply_are_passed_over_and_use_up_no_attempt() {
        let text = "rules: [{name: down, actions: [repair, restart, recreate], deliberate_stop: heal}]";
        let playbook = Playbook::parse(Path::new("p.yml"), text).unwrap();
        let rule = &playbook.rules[0];
        assert_eq!(rule.deliberate_stop, DeliberateStop::Heal);
        let action = |step: Step<'_>| match step {
            Step::Try { action, .. } => Some(action),
            _ => None,
        };
        // Drifted: repair first.
        assert_eq!(action(rule.step_where(0, |_| true)), Some(Action::Repair));
        assert_eq!(action(rule.step_where(1, |_| true)), Some(Action::Restart));
        // Nothing drifted: repair does not apply.
        let no_drift = |a: Action| a != Action::Repair;
        assert_eq!(action(rule.step_where(0, no_drift)), Some(Action::Restart));
        assert_eq!(action(rule.step_where(1, no_drift)), Some(Action::Recreate));
        assert_eq!(
            rule.step_where(2, no_drift),
            Step::Exhausted {
                rule: "down",
                attempts: 2
            }
        );
        // Left alone unless the rule says otherwise.
        let default = Playbook::parse(Path::new("p.yml"), "rules: [{name: d, actions: [restart]}]").unwrap();
        assert_eq!(default.rules[0].deliberate_stop, DeliberateStop::Leave);
        let bad = Playbook::parse(
            Path::new("p.yml"),
            "rules: [{name: d, actions: [restart], deliberate_stop: x}]",
        );
        assert!(bad.unwrap_err().to_string().contains("deliberate_stop"));
    }

    #[test]
    fn matchers_follow_alertmanager() {
        let l = labels(&[("alertname", "ServiceDown"), ("severity", "page")]);
        for (text, expected) in [
            ("alertname=\"ServiceDown\"", true),
            ("alertname = ServiceDown", true),
            ("alertname!=\"ServiceDown\"", false),
            ("severity=~\"page|critical\"", true),
            ("severity=~\"pag\"", false), // anchored
            ("severity!~\"warn.*\"", true),
            ("team=\"\"", true), // a missing label is the empty string
            ("team!=\"\"", false),
        ] {
            assert_eq!(Matcher::parse(text).unwrap().matches(&l), expected, "{text}");
        }
        let quoted = Matcher::parse(r#"summary="say \"hi\"""#).unwrap();
        assert!(quoted.matches(&labels(&[("summary", "say \"hi\"")])));
        for bad in ["alertname", "=x", "1a=\"x\"", "a=~\"(\"", "a=\"open"] {
            assert!(Matcher::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn failed_attempts_escalate_through_the_rule_then_exhaust() {
        let playbook = Playbook::parse(
            Path::new("p.yml"),
            "rules:\n  - name: down\n    matchers: ['alertname=\"Down\"']\n    actions: [restart, rollback]\n  - name: any\n    actions: [notify]\n",
        )
        .unwrap();
        let down = labels(&[("alertname", "Down")]);
        let step = |failed| playbook.next_step(&down, failed);
        assert_eq!(
            step(0),
            Step::Try {
                rule: "down",
                action: Action::Restart,
                attempt: 0
            }
        );
        assert_eq!(
            step(1),
            Step::Try {
                rule: "down",
                action: Action::Rollback,
                attempt: 1
            }
        );
        assert_eq!(
            step(2),
            Step::Exhausted {
                rule: "down",
                attempts: 2
            }
        );
        let other = labels(&[("alertname", "Other")]);
        assert_eq!(
            playbook.next_step(&other, 0),
            Step::Try {
                rule: "any",
                action: Action::Notify,
                attempt: 0
            }
        );
        let empty = Playbook::parse(Path::new("p.yml"), "rules: []\n").unwrap();
        assert_eq!(empty.next_step(&other, 0), Step::NoRule);
    }

    #[test]
    fn health_queries_are_filled_from_the_labels() {
        let playbook = Playbook::parse(
            Path::new("p.yml"),
            "rules:\n  - name: up\n    actions: [restart]\n    health_query: 'up{instance=\"{{ $labels.instance }}\", x=\"{{$labels.missing}}\"} == 1'\n",
        )
        .unwrap();
        assert!(playbook.has_health_queries());
        let rule = playbook.rule_for(&labels(&[("instance", "a\"b\\c")])).unwrap();
        assert_eq!(
            rule.health_query_for(&labels(&[("instance", "a\"b\\c")])).unwrap(),
            r#"up{instance="a\"b\\c", x=""} == 1"#
        );
    }

    #[test]
    fn errors_name_the_rule_and_key() {
        let cases = [
            (
                "rules:\n  - name: a\n    actions: [reboot]\n",
                "rules[0].actions[0]",
                "unknown variant `reboot`",
            ),
            (
                "rules:\n  - name: a\n    actions: []\n",
                "rules[0].actions",
                "at least one",
            ),
            (
                "rules:\n  - {name: a, actions: [notify]}\n  - {name: a, actions: [notify]}\n",
                "rules[1].name",
                "twice",
            ),
            (
                "rules:\n  - name: a\n    matchers: ['x=~\"(\"']\n    actions: [notify]\n",
                "rules[0].matchers[0]",
                "bad regex",
            ),
            (
                "rules:\n  - name: a\n    action: [notify]\n",
                "rules[0].action",
                "unknown field `action`",
            ),
            (
                "rules:\n  - name: a\n    actions: [restart]\n    needs_approval: [restart, rollback]\n",
                "rules[0].needs_approval[1]",
                "rollback is not one of the rule's actions",
            ),
        ];
        for (text, key, message) in cases {
            let err = Playbook::parse(Path::new("p.yml"), text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(message), "{err}");
        }
    }
}
