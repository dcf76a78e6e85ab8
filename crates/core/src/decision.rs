//! What a decision concluded, what its action's call returned, and what
//! verification found — the states the journal persists, as enums.
//!
//! Each serializes (and is stored) as the snake_case word journals have
//! always held (`allow`, `no_rule`, `dry_run`, …), so journals written
//! before these enums existed read unchanged; [`std::str::FromStr`] reads
//! them back and refuses a word it does not know.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A decision's verdict: acted (`allow`), held back by the guard, or why
/// nothing could be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within every limit: the action is executed.
    Allow,
    /// Not now (pause, cooldown, budget, concurrency, an unanswered silence check).
    Defer,
    /// Not at all (silenced, maintenance, namespace, capacity).
    Refuse,
    /// A human must decide (circuit breaker, playbook exhausted, an interrupted action).
    Escalate,
    /// The chosen action is to tell a human; nothing is done.
    Notify,
    /// No playbook rule matches the alert.
    NoRule,
    /// The alert's labels name nothing to act on.
    NoTarget,
    /// The action has no meaning on this backend or target.
    Unplannable,
    /// Right before acting, what the action was for no longer holds: the
    /// alert is no longer active, or the implicated image or revision no
    /// longer runs. Nothing is done.
    PremiseGone,
    /// The action needs a human's approval: proposed with its exact
    /// operation, nothing done until approved (`actions.approval_timeout`).
    #[serde(rename = "proposed")]
    Propose,
}

impl Verdict {
    /// Whether the decision ends what homeostat can do for the incident, so
    /// a human is told (once per incident): escalated (circuit breaker,
    /// playbook exhausted, an interrupted action), or a step that cannot be
    /// carried out here (unplannable, or no target named), or a premise gone
    /// (what was decided no longer fits what runs). A deferral or a
    /// refusal waits instead; notify and no_rule are what the playbook says.
    pub fn escalates(self) -> bool {
        matches!(
            self,
            Verdict::Escalate | Verdict::Unplannable | Verdict::NoTarget | Verdict::PremiseGone
        )
    }

    pub const ALL: [Verdict; 10] = [
        Verdict::Allow,
        Verdict::Defer,
        Verdict::Refuse,
        Verdict::Escalate,
        Verdict::Notify,
        Verdict::NoRule,
        Verdict::NoTarget,
        Verdict::Unplannable,
        Verdict::PremiseGone,
        Verdict::Propose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Defer => "defer",
            Verdict::Refuse => "refuse",
            Verdict::Escalate => "escalate",
            Verdict::Notify => "notify",
            Verdict::NoRule => "no_rule",
            Verdict::NoTarget => "no_target",
            Verdict::Unplannable => "unplannable",
            Verdict::PremiseGone => "premise_gone",
            Verdict::Propose => "proposed",
        }
    }
}

/// What the executor's call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Performed; verification follows.
    Done,
    /// Recorded what would have been done; nothing was.
    DryRun,
    /// The call failed (the detail says why).
    Error,
    /// The call did not answer within `actions.execute_timeout`: what it did
    /// is unknown, so it is verified like a done action, and no other action
    /// follows while it may still be running.
    TimedOut,
    /// homeostat stopped before the call was confirmed; never repeated.
    Interrupted,
}

impl ActionResult {
    /// The call may have changed the target: verify it before anything else acts.
    pub fn needs_verifying(self) -> bool {
        matches!(self, ActionResult::Done | ActionResult::TimedOut)
    }

    pub const ALL: [ActionResult; 5] = [
        ActionResult::Done,
        ActionResult::DryRun,
        ActionResult::Error,
        ActionResult::TimedOut,
        ActionResult::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionResult::Done => "done",
            ActionResult::DryRun => "dry_run",
            ActionResult::Error => "error",
            ActionResult::TimedOut => "timed_out",
            ActionResult::Interrupted => "interrupted",
        }
    }
}

/// What verification said about an action: the reward's input, and the
/// decision's stored outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// The alert resolved (and the health query held).
    Success,
    /// The action ran but the alert still fired (or its health query failed).
    Failure,
    /// No verdict within the deadline.
    Timeout,
    /// The alert resolved, but the target was also changed from outside
    /// after the action (a network reconnected, a limit restored, a
    /// redeploy by someone else): the recovery may not follow from the
    /// action, so it is credited neither way and nothing is learned from it.
    Confounded,
}

impl Verification {
    pub const ALL: [Verification; 4] = [
        Verification::Success,
        Verification::Failure,
        Verification::Timeout,
        Verification::Confounded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verification::Success => "success",
            Verification::Failure => "failure",
            Verification::Timeout => "timeout",
            Verification::Confounded => "confounded",
        }
    }

    /// The action did not fix the incident: the playbook moves to its next
    /// step and the circuit breaker counts it.
    pub fn failed(self) -> bool {
        matches!(self, Verification::Failure | Verification::Timeout)
    }

    /// The alert resolved, whoever fixed it: the incident is quiet, as after
    /// a success, though only [`Verification::Success`] credits the action.
    pub fn recovered(self) -> bool {
        matches!(self, Verification::Success | Verification::Confounded)
    }

    /// Whether the outcome says what the action did, so that the learning
    /// policy may learn from it: not when an outside change came with the
    /// recovery.
    pub fn teaches(self) -> bool {
        self != Verification::Confounded
    }
}

/// A stored word that names none of an enum's states.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?} (known: {known})")]
pub struct UnknownState {
    pub what: &'static str,
    pub found: String,
    pub known: String,
}

macro_rules! stored_as_words {
    ($($ty:ident: $what:literal),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;

            fn from_str(word: &str) -> Result<Self, UnknownState> {
                $ty::ALL.into_iter().find(|s| s.as_str() == word).ok_or_else(|| UnknownState {
                    what: $what,
                    found: word.to_owned(),
                    known: $ty::ALL.map(|s| s.as_str()).join(", "),
                })
            }
        }
    )*};
}

stored_as_words!(Verdict: "verdict", ActionResult: "result", Verification: "outcome");

#[cfg(test)]
mod tests {
    use super::*;

    /// The words journals hold: serde, `as_str` and `FromStr` agree on each.
    #[test]
    fn every_state_round_trips_through_its_stored_word() {
        fn check<T>(states: &[T], words: &[&str])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownState> + Serialize,
        {
            assert_eq!(states.len(), words.len());
            for (state, word) in states.iter().zip(words) {
                assert_eq!(state.to_string(), *word);
                assert_eq!(serde_json::to_value(state).unwrap(), *word);
                assert_eq!(word.parse::<T>().unwrap(), *state);
            }
        }
        check(
            &Verdict::ALL,
            &[
                "allow",
                "defer",
                "refuse",
                "escalate",
                "notify",
                "no_rule",
                "no_target",
                "unplannable",
                "premise_gone",
                "proposed",
            ],
        );
        check(
            &ActionResult::ALL,
            &["done", "dry_run", "error", "timed_out", "interrupted"],
        );
        check(&Verification::ALL, &["success", "failure", "timeout", "confounded"]);
    }

    /// A confounded outcome quiets the incident like a success, is no
    /// failure, and is the one outcome nothing is learned from.
    #[test]
    fn a_confounded_outcome_is_recovered_but_neither_failed_nor_taught() {
        let recovered: Vec<_> = Verification::ALL.into_iter().filter(|v| v.recovered()).collect();
        assert_eq!(recovered, [Verification::Success, Verification::Confounded]);
        let failed: Vec<_> = Verification::ALL.into_iter().filter(|v| v.failed()).collect();
        assert_eq!(failed, [Verification::Failure, Verification::Timeout]);
        let silent: Vec<_> = Verification::ALL.into_iter().filter(|v| !v.teaches()).collect();
        assert_eq!(silent, [Verification::Confounded]);
    }

    #[test]
    fn an_unknown_word_is_refused_with_the_known_ones() {
        let err = "maybe".parse::<Verdict>().unwrap_err();
        assert_eq!(err.what, "verdict");
        assert!(err.to_string().contains("\"maybe\""), "{err}");
        assert!(err.to_string().contains("no_target"), "{err}");
        assert!("Done".parse::<ActionResult>().is_err(), "words are case-sensitive");
    }
}
