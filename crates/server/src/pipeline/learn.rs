//! The learn stage: a verified outcome becomes a reward, folded into the
//! learning policy and saved with it; and the policy as the pipeline holds
//! it, reloaded whenever the journal's copy moves on (an import).

use homeostat_core::action::Action;
use homeostat_core::clock::Clock;
use homeostat_core::policy::{self, Features, Outcome, Policy, PolicyKey, PolicyState};
use homeostat_journal::policy::{Learned, Reward};
use homeostat_journal::Journal;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::metrics::Metrics;

/// Saves of learned state refused because the stored state moved on (an
/// import) are retried on top of it this many times.
const LEARN_ATTEMPTS: usize = 3;

/// The learning policy as the pipeline holds it: the journal's state at
/// `revision`, reloaded whenever the journal's revision moves (an import
/// from the command line).
pub struct Learner {
    /// The journal revision `policy` was loaded from; -1 before the first load.
    revision: i64,
    pub(super) policy: Policy,
    pub(super) rng: StdRng,
    /// Why the stored state could not be loaded: nothing is saved over it
    /// until it is replaced (`homeostat policy import`).
    broken: Option<String>,
}

impl Learner {
    pub fn new(config: policy::PolicyConfig) -> Learner {
        Learner {
            revision: -1,
            policy: Policy::new(config),
            rng: StdRng::from_entropy(),
            broken: None,
        }
    }
}

/// What verification needs in order to learn from an outcome.
#[derive(Clone, Debug)]
pub struct Lesson {
    pub key: PolicyKey,
    pub features: Features,
}

/// Reloads `learner` from the journal when the journal's revision moved.
pub async fn refresh(journal: &Journal, metrics: &Metrics, config: &policy::PolicyConfig, learner: &mut Learner) {
    let revision = match journal.policy_revision().await {
        Ok(revision) => revision,
        Err(err) => {
            metrics.policy_errors.inc();
            tracing::error!(error = %err, "Cannot read the learned policy's revision; deciding with the one in memory.");
            return;
        }
    };
    if revision == learner.revision {
        return;
    }
    let stored = match journal.policy().await {
        Ok(stored) => stored,
        Err(err) => {
            metrics.policy_errors.inc();
            tracing::error!(error = %err, "Cannot read the learned policy; deciding with the one in memory.");
            return;
        }
    };
    let Some(stored) = stored else {
        learner.revision = 0;
        return;
    };
    let restored = PolicyState::from_json(&stored.state).and_then(|state| Policy::restore(config.clone(), state));
    match restored {
        Ok(policy) => {
            learner.policy = policy;
            learner.broken = None;
            tracing::info!(revision, source = %stored.source, "Learned policy loaded.");
        }
        Err(err) => {
            metrics.policy_errors.inc();
            let why = format!("the stored policy (revision {revision}) cannot be read: {err}");
            tracing::error!(%why, "Deciding with the playbook's priors; nothing is saved over it until `homeostat policy import` replaces it.");
            learner.policy = Policy::new(config.clone());
            learner.broken = Some(why);
        }
    }
    learner.revision = revision;
}

/// What [`learn`] works with.
pub struct Sources<'a> {
    pub journal: &'a Journal,
    pub metrics: &'a Metrics,
    pub clock: &'a dyn Clock,
    pub config: &'a policy::PolicyConfig,
}

/// Folds a verified outcome into the policy and saves it with its reward.
/// A save refused because the stored state moved on (an import) reloads
/// that state and learns again on top of it.
pub async fn learn(
    sources: Sources<'_>,
    learner: &mut Learner,
    decision_id: i64,
    lesson: Lesson,
    action: Action,
    outcome: Outcome,
) {
    let Sources {
        journal,
        metrics,
        clock,
        config,
    } = sources;
    let reward = policy::reward(&config.reward, action, &outcome);
    for _ in 0..LEARN_ATTEMPTS {
        refresh(journal, metrics, config, learner).await;
        if let Some(why) = &learner.broken {
            tracing::error!(decision = decision_id, %why, "Not learning from this outcome.");
            metrics.policy_errors.inc();
            return;
        }
        let mut next = learner.policy.clone();
        next.learn(&lesson.key, &lesson.features, action, reward);
        let learned = Learned {
            reward: Reward {
                decision_id,
                at: clock.now(),
                policy_key: lesson.key.to_string(),
                action: action.as_str().to_owned(),
                reward,
                outcome: json!(outcome),
            },
            base_revision: learner.revision.max(0),
            state: next.state().to_json(),
        };
        match journal.record_learned(learned).await {
            Ok(Some(revision)) => {
                learner.policy = next;
                learner.revision = revision;
                metrics.policy_learned.inc();
                tracing::info!(decision = decision_id, key = %lesson.key, %action, reward, "Learned.");
                return;
            }
            Ok(None) => continue,
            Err(err) => {
                metrics.policy_errors.inc();
                tracing::error!(decision = decision_id, error = %err, "Cannot save what was learned.");
                return;
            }
        }
    }
    metrics.policy_errors.inc();
    tracing::error!(
        decision = decision_id,
        "The stored policy kept changing; this outcome was not learned."
    );
}
