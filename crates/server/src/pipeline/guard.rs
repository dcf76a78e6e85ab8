//! The guard stage: gathers what the safety limits need — silences, the
//! target's history, its readiness, the pause switch — into a
//! [`Situation`]; `homeostat_core::guard::check` then judges it.

use homeostat_adapters::alertmanager;
use homeostat_adapters::executor::Executor;
use homeostat_core::action::{Action, Target};
use homeostat_core::config::ActionsConfig;
use homeostat_core::decision::Verdict;
use homeostat_core::guard::{Readiness, Situation};
use homeostat_core::incident::Incident;
use homeostat_journal::Journal;

use super::decide::Stop;

/// The target's readiness as the context stage read it, if it did: the
/// guard reuses it instead of reading again.
pub type ReadinessRead = Option<Result<Option<Readiness>, String>>;

/// What the guard stage reads from.
pub struct Sources<'a, E> {
    pub http: &'a reqwest::Client,
    pub journal: &'a Journal,
    pub executor: &'a E,
    pub config: &'a ActionsConfig,
    pub paused: bool,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// The situation `action` on `target` would act in; a [`Stop`] when it
/// cannot be told safely (a silence check that failed defers; readiness
/// that cannot be read refuses an action taking capacity away). `readiness`
/// is the one the context stage read, if it did.
pub async fn situation<E: Executor>(
    sources: Sources<'_, E>,
    incident: &Incident,
    target_key: &str,
    target: &Target,
    action: Action,
    readiness: ReadinessRead,
) -> homeostat_journal::Result<Result<Situation, Stop>> {
    let Sources {
        http,
        journal,
        executor,
        config,
        paused,
        now,
    } = sources;
    let silenced = match &config.alertmanager_url {
        None => false,
        Some(url) => match alertmanager::silenced(http, url, incident).await {
            Ok(silenced) => silenced,
            Err(why) => {
                let reason = format!("cannot tell whether the alert is silenced, so not acting: {why}");
                return Ok(Err(Stop::new(action, Verdict::Defer, reason)));
            }
        },
    };
    let since = now - config.guard.budget.window.as_delta();
    let history = journal.history(target_key.to_owned(), since).await?;
    let readiness = if action.removes_capacity() {
        let read = match readiness {
            Some(read) => read,
            None => executor.readiness(target).await.map_err(|e| e.to_string()),
        };
        match read {
            Ok(readiness) => readiness,
            // Taking capacity away from something that cannot be seen is never safe.
            Err(err) => {
                let reason = format!("{action} takes capacity away and the target's readiness cannot be read: {err}");
                return Ok(Err(Stop::new(action, Verdict::Refuse, reason)));
            }
        }
    } else {
        None
    };
    Ok(Ok(Situation {
        now,
        paused,
        silenced,
        namespace: target.namespace.clone(),
        last_action_on_target: history.last_action_on_target,
        consecutive_failures: history.consecutive_failures,
        recent_actions: history.recent_actions,
        in_flight: history.in_flight,
        readiness,
    }))
}
