//! Executors carry out planned [`Operation`]s on a backend.
//!
//! Each backend implements [`Executor`]: [`docker::DockerExecutor`] on a
//! Docker Engine through bollard, [`kubernetes::KubernetesExecutor`] on an
//! API server through kube-rs; [`AnyExecutor`] is whichever of them the
//! config chooses. [`DryRun`] wraps any executor: it reads through it
//! (readiness, so the guard sees what is real) and records, instead of
//! performing, what it would have done.

pub mod docker;
pub mod kubernetes;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use homeostat_core::action::{Action, Backend, Operation, Target};
use homeostat_core::condition::{Condition, Observed};
use homeostat_core::config::ActionsConfig;
use homeostat_core::guard::Readiness;

/// Why an executor could not carry out an operation.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ExecError {
    /// The backend could not be reached (socket, API server, network).
    #[error("{backend:?} is unreachable: {message}")]
    Unreachable { backend: Backend, message: String },
    /// What the operation names does not exist (any more).
    #[error("target gone: {0}")]
    NotFound(String),
    /// The backend refused: permissions, conflicts, invalid state.
    #[error("{backend:?} refused: {message}")]
    Refused { backend: Backend, message: String },
    /// The operation has no meaning on this executor.
    #[error("{0}")]
    Unsupported(String),
    /// The backend did not answer in time; what the call did is unknown.
    #[error("{what} did not answer within {after:?}; what it did is unknown")]
    TimedOut { what: &'static str, after: Duration },
}

/// What an executor did, in words for the journal.
pub type Done = String;

/// What a target runs, as a rollback would undo it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    /// The image(s) or revision, as the backend names them.
    pub what: String,
    /// When it was deployed, if the backend tells: a rollback undoes only
    /// what was deployed before the alert started.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether what runs is itself known good (it ran long enough before,
    /// by the backend's history): rolling it back would undo a fix.
    pub known_good: bool,
}

/// A backend that performs operations.
pub trait Executor: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// How much of the target's workload serves; `None` when it cannot tell.
    fn readiness(&self, target: &Target) -> impl Future<Output = Result<Option<Readiness>, ExecError>> + Send;

    /// Performs the operation and says what was done.
    fn execute(&self, operation: &Operation) -> impl Future<Output = Result<Done, ExecError>> + Send;

    /// What the target runs now, as a rollback would undo it: the images of
    /// a Compose service, a Deployment's revision. `None` when the backend
    /// or the target has no such notion.
    fn deployed(&self, target: &Target) -> impl Future<Output = Result<Option<Deployed>, ExecError>> + Send {
        let _ = target;
        std::future::ready(Ok(None))
    }

    /// What the target is like right before acting: stopped on purpose,
    /// being restarted by the runtime, its spec. `None` when the backend
    /// cannot tell or the target names no single instance.
    fn condition(&self, target: &Target) -> impl Future<Output = Result<Option<Condition>, ExecError>> + Send {
        let _ = target;
        std::future::ready(Ok(None))
    }

    /// Every instance the backend runs that homeostat could act on, with
    /// its spec and readiness: what known good specs are recorded from.
    fn observe(&self) -> impl Future<Output = Result<Vec<Observed>, ExecError>> + Send {
        std::future::ready(Ok(Vec::new()))
    }

    /// How spec `now` differs from the `known_good` one, each difference in
    /// words ("memory limit 8 MiB, was 256 MiB"); empty when it does not.
    fn drift(&self, known_good: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
        let _ = (known_good, now);
        Vec::new()
    }

    /// Changes to the target's configuration made from outside between
    /// `since` and `until`, oldest first, each in words with its time
    /// ("network demo: container web-1 connected at 20:31:02 UTC"): a
    /// network connected or disconnected, a limit changed, a redeploy by
    /// someone else. Verification asks, from when its action's call
    /// returned, so that a recovery that came with such a change is not
    /// credited to the action. What the runtime does by itself (restarts by
    /// its restart policy, crashes) is no such change. Empty when the
    /// backend cannot tell.
    fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>, ExecError>> + Send {
        let _ = (target, since, until);
        std::future::ready(Ok(Vec::new()))
    }

    /// Why `action` on `target` would not do what it is for on this
    /// backend, read right before acting: a Docker clone that no traffic
    /// and no scrape would reach, say. The pipeline records `Some(why)` as
    /// unplannable instead of trying the action (a failed action would move
    /// the playbook on to its next step, against a target that may be
    /// serving). `None` when it fits, or the backend has nothing to say.
    fn unfit(&self, target: &Target, action: Action) -> impl Future<Output = Result<Option<String>, ExecError>> + Send {
        let _ = (target, action);
        std::future::ready(Ok(None))
    }
}

/// A time as outside changes name it: the window is minutes long, so the
/// time of day says when.
pub fn time_of_day(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S UTC").to_string()
}

/// The backend chosen in the config (`actions.backend`).
pub enum AnyExecutor {
    Docker(docker::DockerExecutor),
    Kubernetes(kubernetes::KubernetesExecutor),
}

impl AnyExecutor {
    /// Connects to `actions.backend` with its settings (`actions.docker` or
    /// `actions.kubernetes`).
    pub async fn connect(actions: &ActionsConfig) -> Result<AnyExecutor, ExecError> {
        match actions.backend {
            Backend::Docker => docker::DockerExecutor::connect(actions.docker.clone())
                .await
                .map(AnyExecutor::Docker),
            Backend::Kubernetes => kubernetes::KubernetesExecutor::connect(actions.kubernetes.clone())
                .await
                .map(AnyExecutor::Kubernetes),
        }
    }
}

impl Executor for AnyExecutor {
    fn backend(&self) -> Backend {
        match self {
            AnyExecutor::Docker(e) => e.backend(),
            AnyExecutor::Kubernetes(e) => e.backend(),
        }
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.readiness(target).await,
            AnyExecutor::Kubernetes(e) => e.readiness(target).await,
        }
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.execute(operation).await,
            AnyExecutor::Kubernetes(e) => e.execute(operation).await,
        }
    }

    async fn deployed(&self, target: &Target) -> Result<Option<Deployed>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.deployed(target).await,
            AnyExecutor::Kubernetes(e) => e.deployed(target).await,
        }
    }

    async fn condition(&self, target: &Target) -> Result<Option<Condition>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.condition(target).await,
            AnyExecutor::Kubernetes(e) => e.condition(target).await,
        }
    }

    async fn observe(&self) -> Result<Vec<Observed>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.observe().await,
            AnyExecutor::Kubernetes(e) => e.observe().await,
        }
    }

    fn drift(&self, known_good: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
        match self {
            AnyExecutor::Docker(e) => e.drift(known_good, now),
            AnyExecutor::Kubernetes(e) => e.drift(known_good, now),
        }
    }

    async fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.changes(target, since, until).await,
            AnyExecutor::Kubernetes(e) => e.changes(target, since, until).await,
        }
    }

    async fn unfit(&self, target: &Target, action: Action) -> Result<Option<String>, ExecError> {
        match self {
            AnyExecutor::Docker(e) => e.unfit(target, action).await,
            AnyExecutor::Kubernetes(e) => e.unfit(target, action).await,
        }
    }
}

/// Bounds every call to `inner` in time, so that one stalled backend call
/// (a Docker socket that accepts and never answers, an API server that
/// hangs) cannot hold the pipeline: reads get `read`, operations `execute`
/// (`actions.execute_timeout`). A call past its bound is abandoned with
/// [`ExecError::TimedOut`]; an operation abandoned so may still be running.
pub struct Bounded<E> {
    pub inner: E,
    pub read: Duration,
    pub execute: Duration,
}

/// How long a read of the backend (readiness) may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl<E> Bounded<E> {
    /// `inner` with reads bounded by [`READ_TIMEOUT`] and operations by
    /// `actions.execute_timeout`.
    pub fn new(inner: E, actions: &ActionsConfig) -> Bounded<E> {
        Bounded {
            inner,
            read: READ_TIMEOUT,
            execute: actions.execute_timeout.0,
        }
    }
}

impl<E: Executor> Executor for Bounded<E> {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        tokio::time::timeout(self.read, self.inner.readiness(target))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the readiness read",
                after: self.read,
            }))
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        tokio::time::timeout(self.execute, self.inner.execute(operation))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the call",
                after: self.execute,
            }))
    }

    async fn deployed(&self, target: &Target) -> Result<Option<Deployed>, ExecError> {
        tokio::time::timeout(self.read, self.inner.deployed(target))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the read of what is deployed",
                after: self.read,
            }))
    }

    async fn condition(&self, target: &Target) -> Result<Option<Condition>, ExecError> {
        tokio::time::timeout(self.read, self.inner.condition(target))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the read of the target's condition",
                after: self.read,
            }))
    }

    async fn observe(&self) -> Result<Vec<Observed>, ExecError> {
        tokio::time::timeout(self.read, self.inner.observe())
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the read of what runs",
                after: self.read,
            }))
    }

    fn drift(&self, known_good: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
        self.inner.drift(known_good, now)
    }

    async fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, ExecError> {
        tokio::time::timeout(self.read, self.inner.changes(target, since, until))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the read of outside changes",
                after: self.read,
            }))
    }

    async fn unfit(&self, target: &Target, action: Action) -> Result<Option<String>, ExecError> {
        tokio::time::timeout(self.read, self.inner.unfit(target, action))
            .await
            .unwrap_or(Err(ExecError::TimedOut {
                what: "the read of whether the action fits the target",
                after: self.read,
            }))
    }
}

/// Reads through `inner`, performs nothing, says exactly what it would have done.
pub struct DryRun<E>(pub E);

impl<E: Executor> Executor for DryRun<E> {
    fn backend(&self) -> Backend {
        self.0.backend()
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        self.0.readiness(target).await
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        let json = serde_json::to_string(operation).unwrap_or_else(|e| format!("<unprintable: {e}>"));
        Ok(format!("dry run: would perform {json}"))
    }

    async fn deployed(&self, target: &Target) -> Result<Option<Deployed>, ExecError> {
        self.0.deployed(target).await
    }

    async fn condition(&self, target: &Target) -> Result<Option<Condition>, ExecError> {
        self.0.condition(target).await
    }

    async fn observe(&self) -> Result<Vec<Observed>, ExecError> {
        self.0.observe().await
    }

    fn drift(&self, known_good: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
        self.0.drift(known_good, now)
    }

    async fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, ExecError> {
        self.0.changes(target, since, until).await
    }

    async fn unfit(&self, target: &Target, action: Action) -> Result<Option<String>, ExecError> {
        self.0.unfit(target, action).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts what reaches it.
    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        executions: AtomicUsize,
    }

    impl Executor for &'static Counting {
        fn backend(&self) -> Backend {
            Backend::Docker
        }

        async fn readiness(&self, _target: &Target) -> Result<Option<Readiness>, ExecError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(Some(Readiness {
                ready: 2,
                total: 2,
                instance_ready: None,
            }))
        }

        async fn execute(&self, _operation: &Operation) -> Result<Done, ExecError> {
            self.executions.fetch_add(1, Ordering::SeqCst);
            Ok("did it".into())
        }

        async fn changes(
            &self,
            _target: &Target,
            _since: DateTime<Utc>,
            _until: DateTime<Utc>,
        ) -> Result<Vec<String>, ExecError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(vec!["network demo: container web-1 connected at 20:31:02 UTC".into()])
        }
    }

    #[tokio::test]
    async fn dry_run_reads_through_and_never_executes() {
        let inner: &'static Counting = Box::leak(Box::default());
        let dry = DryRun(inner);
        assert_eq!(
            dry.readiness(&Target::default()).await.unwrap().map(|r| r.ready),
            Some(2)
        );
        let op = Operation::RestartContainer {
            container: Some("web-1".into()),
            project: None,
            service: None,
        };
        let done = dry.execute(&op).await.unwrap();
        assert_eq!(
            done,
            r#"dry run: would perform {"operation":"restart_container","container":"web-1","project":null,"service":null}"#
        );
        // Outside changes are a read: through to the backend as well.
        let now = Utc::now();
        assert_eq!(dry.changes(&Target::default(), now, now).await.unwrap().len(), 1);
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2);
        assert_eq!(inner.executions.load(Ordering::SeqCst), 0);
    }
}
