//! What the learning policy has learned, and why it decided as it did, read
//! from the journal: `homeostat policy show | explain | export | import |
//! evaluate`. Reading is read-only and safe beside a running homeostat;
//! an import is picked up by a running homeostat at its next decision.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::decisions::Decision;
use crate::policy::{JournalReader, Reward, StoredPolicy};
use crate::JournalError;
use homeostat_core::action::Action;
use homeostat_core::policy::{
    evaluate, Choice, Logged, OffPolicyEstimate, Policy, PolicyConfig, PolicyError, PolicyState,
};

#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    State {
        path: String,
        #[source]
        source: PolicyError,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("incident {0} has no decisions in the journal")]
    NoDecisions(i64),
}

pub type Result<T, E = LearnedError> = std::result::Result<T, E>;

/// The stored state as a policy, or a fresh one when nothing is stored.
fn stored_policy(stored: Option<&StoredPolicy>, config: &PolicyConfig) -> Result<Policy> {
    let Some(stored) = stored else {
        return Ok(Policy::new(config.clone()));
    };
    let state_error = |source| LearnedError::State {
        path: format!("the journal's stored policy (revision {})", stored.revision),
        source,
    };
    let state = PolicyState::from_json(&stored.state).map_err(state_error)?;
    Policy::restore(config.clone(), state).map_err(state_error)
}

/// Every reward the policy learned, by the decision it rewarded.
fn rewards_by_decision(reader: &JournalReader) -> Result<HashMap<i64, Reward>> {
    Ok(reader.rewards()?.into_iter().map(|r| (r.decision_id, r)).collect())
}

/// `policy show`: per alert and service, what each action earned.
pub fn show(reader: &JournalReader, config: &PolicyConfig) -> Result<String> {
    let stored = reader.policy()?;
    let policy = stored_policy(stored.as_ref(), config)?;
    let state = policy.state();
    let mut out = match &stored {
        None => "Nothing learned yet: no verified outcome is in the journal.\n".to_owned(),
        Some(s) => format!(
            "Learned policy: revision {}, {} (updated {}), {} key(s).\n",
            s.revision,
            s.source,
            s.updated_at.to_rfc3339(),
            state.keys.len()
        ),
    };
    for key in &state.keys {
        let explore = if config.explores(&key.key.service) {
            if key.disappointments > 0 {
                "exploring"
            } else {
                "greedy until an outcome disappoints"
            }
        } else {
            "exploration off"
        };
        let _ = write!(
            out,
            "\n## {} — {} disappointing outcome(s); {explore}\n\n| action | outcomes | mean reward | contexts |\n|---|---|---|---|\n",
            key.key, key.disappointments
        );
        for (action, arm) in &key.actions {
            let contexts: Vec<String> = key
                .contexts
                .iter()
                .filter_map(|(context, arms)| {
                    let arm = arms.get(action)?;
                    Some(format!(
                        "{context}: {} × {:.2}",
                        arm.n,
                        arm.mean_reward().unwrap_or(0.0)
                    ))
                })
                .collect();
            let _ = writeln!(
                out,
                "| {action} | {} | {} | {} |",
                arm.n,
                arm.mean_reward().map_or("—".to_owned(), |m| format!("{m:.3}")),
                contexts.join("; ")
            );
        }
    }
    Ok(out)
}

/// `policy export`: the learned state as JSON (an empty state when nothing
/// is stored), for `policy import` elsewhere.
pub fn export(reader: &JournalReader, config: &PolicyConfig) -> Result<String> {
    Ok(stored_policy(reader.policy()?.as_ref(), config)?.state().to_json())
}

/// `policy import FILE`: validates the file and stores it as the learned
/// state; returns the new revision.
pub fn import(journal: &Path, file: &Path, config: &PolicyConfig) -> Result<i64> {
    let text = std::fs::read_to_string(file).map_err(|source| LearnedError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let state_error = |source| LearnedError::State {
        path: file.display().to_string(),
        source,
    };
    let state = PolicyState::from_json(&text).map_err(state_error)?;
    let policy = Policy::restore(config.clone(), state).map_err(state_error)?;
    let source = format!("imported from {}", file.display());
    Ok(crate::policy::import(journal, &policy.state().to_json(), &source)?)
}

/// `policy explain INCIDENT`: every decision on the incident, and for those
/// the policy took part in, its candidates and why the winner won.
pub fn explain(reader: &JournalReader, incident: i64) -> Result<String> {
    let decisions = reader.decisions(incident)?;
    if decisions.is_empty() {
        return Err(LearnedError::NoDecisions(incident));
    }
    let rewards = rewards_by_decision(reader)?;
    let mut out = format!("Incident {incident}: {} decision(s).\n", decisions.len());
    for d in &decisions {
        let n = &d.new;
        let _ = write!(
            out,
            "\n## Decision {} at {}: {} → {} (rule {})\n\n{}\n",
            d.id,
            n.decided_at.to_rfc3339(),
            n.action,
            n.verdict,
            n.rule.as_deref().unwrap_or("none"),
            n.reason
        );
        if let Some(result) = &d.result {
            let _ = writeln!(
                out,
                "Result: {result}{}",
                d.outcome.as_ref().map_or(String::new(), |o| format!("; outcome: {o}"))
            );
        }
        if let Some(r) = rewards.get(&d.id) {
            let _ = writeln!(
                out,
                "Learned reward {:.3} for {} on {} ({}).",
                r.reward, r.action, r.policy_key, r.outcome
            );
        }
        let Some(policy) = n.record.get("policy") else {
            let _ = writeln!(
                out,
                "The learning policy was not consulted (actions.policy.mode: playbook)."
            );
            continue;
        };
        let view = &policy["view"];
        let choice = &view["choice"];
        let acted = policy["acted"].as_bool().unwrap_or(false);
        let _ = writeln!(
            out,
            "Policy ({}): {} {} — {}",
            policy["mode"].as_str().unwrap_or("?"),
            if acted { "chose" } else { "would have chosen" },
            choice["action"].as_str().unwrap_or("nothing (escalate)"),
            choice["why"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            out,
            "Context {}; features {}",
            choice["context"].as_str().unwrap_or("?"),
            choice["features"]
        );
        if let Some(missing) = view["missing"].as_object() {
            for (name, why) in missing {
                let _ = writeln!(out, "  {name} unknown: {}", why.as_str().unwrap_or("?"));
            }
        }
        out.push_str(
            "\n| action | value ± sd | draw | prior | playbook rank | outcomes (key/context) | propensity | masked |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for c in choice["candidates"].as_array().into_iter().flatten() {
            let number = |v: &Value| v.as_f64().map_or("—".to_owned(), |x| format!("{x:.2}"));
            let _ = writeln!(
                out,
                "| {} | {} ± {} | {} | {} | {} | {}/{} | {} | {} |",
                c["action"].as_str().unwrap_or("?"),
                number(&c["value"]),
                number(&c["uncertainty"]),
                number(&c["sample"]),
                number(&c["prior"]),
                c["playbook_rank"]
                    .as_u64()
                    .map_or("—".to_owned(), |r| (r + 1).to_string()),
                c["outcomes_key"],
                c["outcomes_context"],
                number(&c["propensity"]),
                c["masked"].as_str().unwrap_or("")
            );
        }
    }
    Ok(out)
}

/// One candidate policy's off-policy estimate.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    pub policy: &'static str,
    #[serde(flatten)]
    pub estimate: OffPolicyEstimate,
}

/// `policy evaluate`: from the decisions the policy saw and the rewards
/// verified after them, the mean reward the logged decisions earned, and
/// inverse-propensity estimates of what the learned policy (greedy) and the
/// playbook would have earned on the same incidents.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub logged: usize,
    pub logged_mean_reward: Option<f64>,
    pub candidates: Vec<Evaluated>,
}

/// A logged decision as off-policy evaluation needs it, and the action the
/// playbook chose then. The logger is the policy when it acted, and the
/// playbook, which is deterministic (propensity 1), when it did.
fn logged(decision: &Decision, reward: f64) -> Option<(Logged, Option<Action>)> {
    let policy = decision.new.record.get("policy")?;
    let choice: Choice = serde_json::from_value(policy["view"]["choice"].clone()).ok()?;
    let mut entry = Logged::from_choice(&choice, reward)?;
    if policy["acted"].as_bool() != Some(true) {
        entry.action = Action::parse(&decision.new.action)?;
        entry.propensity = 1.0;
    }
    let playbook_action = policy["playbook_action"].as_str().and_then(Action::parse);
    Some((entry, playbook_action))
}

pub fn evaluate_journal(reader: &JournalReader, config: &PolicyConfig) -> Result<Evaluation> {
    let policy = stored_policy(reader.policy()?.as_ref(), config)?;
    let rewards = rewards_by_decision(reader)?;
    let mut log = Vec::new();
    for decision in reader.policy_decisions()? {
        let Some(reward) = rewards.get(&decision.id) else {
            continue;
        };
        if let Some(entry) = logged(&decision, reward.reward) {
            log.push(entry);
        }
    }
    let entries: Vec<Logged> = log.iter().map(|(e, _)| e.clone()).collect();
    let mean = (!entries.is_empty()).then(|| entries.iter().map(|e| e.reward).sum::<f64>() / entries.len() as f64);
    let learned = evaluate(&entries, |e| policy.greedy_target(e));
    // The playbook is deterministic: probability 1 for the action it chose then.
    let chose: HashMap<*const Logged, Option<Action>> = entries
        .iter()
        .zip(&log)
        .map(|(e, (_, chose))| (e as *const Logged, *chose))
        .collect();
    let playbook = evaluate(&entries, |e| {
        let chose = chose.get(&(e as *const Logged)).copied().flatten();
        f64::from(u8::from(chose == Some(e.action)))
    });
    Ok(Evaluation {
        logged: entries.len(),
        logged_mean_reward: mean,
        candidates: vec![
            Evaluated {
                policy: "learned (greedy)",
                estimate: learned,
            },
            Evaluated {
                policy: "playbook",
                estimate: playbook,
            },
        ],
    })
}

pub fn evaluation_table(e: &Evaluation) -> String {
    let mut out = format!(
        "{} logged decision(s) with a verified reward; their mean reward {}.\n\n\
         | policy | matched | IPS | SNIPS | effective sample size |\n|---|---|---|---|---|\n",
        e.logged,
        e.logged_mean_reward.map_or("—".to_owned(), |m| format!("{m:.3}"))
    );
    for c in &e.candidates {
        let s = &c.estimate;
        let _ = writeln!(
            out,
            "| {} | {}/{} | {:.3} | {} | {:.1} |",
            c.policy,
            s.matched,
            s.decisions,
            s.ips,
            s.snips.map_or("—".to_owned(), |v| format!("{v:.3}")),
            s.effective_sample_size
        );
    }
    out
}
