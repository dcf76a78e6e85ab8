//! The recovery actions homeostat can take, what each means on each backend,
//! and the target an alert's labels point at.
//!
//! The catalog is closed and the same on every backend, so the policy
//! learns one action space; [`plan`] turns an action and a target into the
//! exact operation an executor will perform (or a refusal saying why), with
//! no I/O, so dry-run records precisely what would have been done.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::alert::LabelSet;

/// A recovery action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Act on nothing; record the decision and notify.
    Notify,
    /// Kubernetes: delete one pod (its controller starts another).
    /// Docker: restart the container.
    Restart,
    /// Kubernetes: rollout restart of the deployment (kubectl-compatible).
    /// Docker: recreate the container from its own configuration.
    Recreate,
    /// One more replica, within the configured bounds.
    /// Kubernetes: `spec.replicas` + 1 (the Service routes to the new pod,
    /// Prometheus discovers it), recorded in `homeostat.io/scaled-to`.
    /// Docker: a clone of the Compose service's highest-numbered container,
    /// labelled `homeostat.added-at`. On Docker
    /// a clone serves only where the service is reached by a network alias
    /// on a user-defined network (the clone shares it, as with Compose's own
    /// scaling) and publishes no fixed host port (what reaches the service
    /// through one, traffic or a scrape, never reaches a clone); elsewhere
    /// scale-out is unplannable, refused before anything is created. What
    /// homeostat added is undone when the incident that added it resolves
    /// (a `scale_in` decision of its own, [`plan_retire`]).
    ScaleOut,
    /// One replica fewer, within the configured bounds.
    /// Kubernetes: `spec.replicas` - 1. Docker: removes the highest-numbered
    /// container of the Compose service. Taking capacity away, it is
    /// guarded by the minimum of ready replicas, and the learning policy
    /// may choose it only where the playbook rule names it.
    ScaleIn,
    /// Kubernetes: back to the previous revision (kubectl's rollout undo).
    /// Docker: back to the previous image recorded in a label.
    Rollback,
    /// Kubernetes: mark the node unschedulable, and drain it by eviction
    /// when configured. No meaning on Docker.
    Cordon,
    /// Docker: recreate the container from its last known good spec (what
    /// it ran healthy with), undoing drift that `restart` and `recreate`
    /// would keep (a lowered memory limit, a detached network). Only
    /// planned when the target drifted from a recorded known good spec.
    /// Not built on Kubernetes yet, where `rollback` goes to the last
    /// known good revision.
    Repair,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Notify,
        Action::Restart,
        Action::Recreate,
        Action::ScaleOut,
        Action::ScaleIn,
        Action::Rollback,
        Action::Cordon,
        Action::Repair,
    ];

    /// The action named `name` (as [`Action::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Notify => "notify",
            Action::Restart => "restart",
            Action::Recreate => "recreate",
            Action::ScaleOut => "scale_out",
            Action::ScaleIn => "scale_in",
            Action::Rollback => "rollback",
            Action::Cordon => "cordon",
            Action::Repair => "repair",
        }
    }

    /// Whether the action takes serving capacity away while it runs, so the
    /// guard must check that enough ready replicas remain. Cordoning only
    /// stops new pods landing on a node; its optional drain evicts through
    /// the Eviction API, where PodDisruptionBudgets guard capacity.
    pub fn removes_capacity(self) -> bool {
        matches!(self, Action::Restart | Action::ScaleIn)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where actions are carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Kubernetes,
    Docker,
}

/// Which alert labels name the parts of a target. Defaults follow the
/// labels kube-state-metrics and cAdvisor put on series, and Compose's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetLabels {
    pub namespace: String,
    pub deployment: String,
    pub pod: String,
    pub node: String,
    pub container: String,
    pub compose_project: String,
    pub compose_service: String,
}

impl Default for TargetLabels {
    fn default() -> Self {
        TargetLabels {
            namespace: "namespace".into(),
            deployment: "deployment".into(),
            pod: "pod".into(),
            node: "node".into(),
            container: "container".into(),
            compose_project: "compose_project".into(),
            compose_service: "compose_service".into(),
        }
    }
}

/// What an alert points at; every part optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
}

impl Target {
    /// Reads the target from an alert's labels; empty label values count as absent.
    pub fn from_labels(labels: &LabelSet, names: &TargetLabels) -> Target {
        let get = |name: &str| labels.get(name).filter(|v| !v.is_empty()).cloned();
        Target {
            namespace: get(&names.namespace),
            deployment: get(&names.deployment),
            pod: get(&names.pod),
            node: get(&names.node),
            container: get(&names.container),
            compose_project: get(&names.compose_project),
            compose_service: get(&names.compose_service),
        }
    }

    /// Whether the labels named nothing to act on.
    pub fn is_empty(&self) -> bool {
        *self == Target::default()
    }

    /// A stable name for the thing acted on, for cooldowns and circuit
    /// breakers: the workload rather than the pod, so that restarting a
    /// pod and then its replacement counts against the same deployment.
    pub fn key(&self, backend: Backend) -> String {
        let part = |v: &Option<String>| v.as_deref().unwrap_or("-").to_owned();
        match backend {
            Backend::Kubernetes => match (&self.deployment, &self.pod, &self.node) {
                (Some(_), _, _) => format!("k8s/{}/deployment/{}", part(&self.namespace), part(&self.deployment)),
                (None, Some(_), _) => format!("k8s/{}/pod/{}", part(&self.namespace), part(&self.pod)),
                (None, None, Some(node)) => format!("k8s/node/{node}"),
                (None, None, None) => "k8s/-".to_owned(),
            },
            Backend::Docker => match (&self.compose_service, &self.container) {
                (Some(service), _) => format!("docker/{}/{service}", part(&self.compose_project)),
                (None, Some(container)) => format!("docker/container/{container}"),
                (None, None) => "docker/-".to_owned(),
            },
        }
    }
}

/// The exact operation an executor performs; what dry-run records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    /// Record and notify only.
    Notify,
    /// Delete `pod`, or one pod of `deployment` chosen at execution (unready first).
    DeletePod {
        namespace: String,
        pod: Option<String>,
        deployment: Option<String>,
    },
    /// Patch `spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`.
    RolloutRestart { namespace: String, deployment: String },
    /// Change `spec.replicas` by `delta`, within the configured bounds.
    ScaleDeployment {
        namespace: String,
        deployment: String,
        delta: i32,
    },
    /// Copy the template of the ReplicaSet with the previous revision.
    RollbackDeployment { namespace: String, deployment: String },
    /// `spec.replicas` - 1, only while it is what homeostat last set (the
    /// `homeostat.io/scaled-to` annotation): undoing its own scale-out once
    /// the incident that needed it resolved.
    ScaleDeploymentBack { namespace: String, deployment: String },
    /// Set `spec.unschedulable`, then evict the node's pods if `drain`.
    CordonNode { node: String, drain: bool },
    /// Restart `container`, or every container of the Compose service.
    RestartContainer {
        container: Option<String>,
        project: Option<String>,
        service: Option<String>,
    },
    /// Remove and create again from the container's own configuration.
    RecreateContainer {
        container: Option<String>,
        project: Option<String>,
        service: Option<String>,
    },
    /// Clone (`delta` > 0) or remove (`delta` < 0) replicas of a Compose service.
    ScaleComposeService {
        project: String,
        service: String,
        delta: i32,
    },
    /// Recreate the service's containers from the image recorded as previous.
    RollbackComposeService { project: String, service: String },
    /// Recreate `container` from `spec`, the last known good spec recorded
    /// for it (as the executor reads specs). [`plan`] leaves `spec` null;
    /// the pipeline fills it in from the journal before acting, so the
    /// decision (and a dry run) records exactly what is restored.
    RepairContainer {
        container: String,
        #[serde(default)]
        spec: serde_json::Value,
    },
    /// Remove the highest-numbered replica homeostat added to a Compose
    /// service (labelled `homeostat.added-at`), never one it did not add:
    /// undoing its own scale-out once the incident that needed it resolved.
    RemoveAddedReplica { project: String, service: String },
}

/// Why an action cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{action} has no meaning on {backend:?}")]
    Unsupported { action: Action, backend: Backend },
    #[error("{action} on {backend:?} needs the alert label(s) {needs}; the alert has none of them")]
    NoTarget {
        action: Action,
        backend: Backend,
        needs: &'static str,
    },
    #[error("the alert label for the {part} is {value:?}, which is not a valid {backend:?} name")]
    InvalidName {
        backend: Backend,
        part: &'static str,
        value: String,
    },
}

/// Checks every name the target gives, before any of it goes into an API
/// path: Kubernetes names are DNS subdomains, Docker names a safe charset.
fn check_names(backend: Backend, target: &Target) -> Result<(), Refusal> {
    let parts = [
        ("namespace", &target.namespace),
        ("deployment", &target.deployment),
        ("pod", &target.pod),
        ("node", &target.node),
        ("container", &target.container),
        ("compose project", &target.compose_project),
        ("compose service", &target.compose_service),
    ];
    for (part, value) in parts {
        let Some(value) = value else { continue };
        let valid = match backend {
            Backend::Kubernetes => {
                value.len() <= 253
                    && value.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && value.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            }
            Backend::Docker => {
                value.len() <= 255
                    && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            }
        };
        if !valid {
            return Err(Refusal::InvalidName {
                backend,
                part,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Turns an action on a target into the operation to perform.
pub fn plan(action: Action, backend: Backend, target: &Target, drain_on_cordon: bool) -> Result<Operation, Refusal> {
    check_names(backend, target)?;
    let no_target = |needs| Refusal::NoTarget { action, backend, needs };
    let deployment = || match (&target.namespace, &target.deployment) {
        (Some(namespace), Some(deployment)) => Ok((namespace.clone(), deployment.clone())),
        _ => Err(no_target("namespace and deployment")),
    };
    let service = || match (&target.compose_project, &target.compose_service) {
        (Some(project), Some(service)) => Ok((project.clone(), service.clone())),
        _ => Err(no_target("compose_project and compose_service")),
    };
    let container = || {
        if target.container.is_none() && (target.compose_project.is_none() || target.compose_service.is_none()) {
            return Err(no_target("container, or compose_project and compose_service"));
        }
        Ok((
            target.container.clone(),
            target.compose_project.clone(),
            target.compose_service.clone(),
        ))
    };
    match (backend, action) {
        (_, Action::Notify) => Ok(Operation::Notify),
        (Backend::Kubernetes, Action::Restart) => match (&target.namespace, &target.pod, &target.deployment) {
            (Some(namespace), pod @ Some(_), _) | (Some(namespace), pod @ None, Some(_)) => Ok(Operation::DeletePod {
                namespace: namespace.clone(),
                pod: pod.clone(),
                deployment: target.deployment.clone(),
            }),
            _ => Err(no_target("namespace and pod (or deployment)")),
        },
        (Backend::Kubernetes, Action::Recreate) => {
            deployment().map(|(namespace, deployment)| Operation::RolloutRestart { namespace, deployment })
        }
        (Backend::Kubernetes, Action::ScaleOut | Action::ScaleIn) => {
            deployment().map(|(namespace, deployment)| Operation::ScaleDeployment {
                namespace,
                deployment,
                delta: if action == Action::ScaleOut { 1 } else { -1 },
            })
        }
        (Backend::Kubernetes, Action::Rollback) => {
            deployment().map(|(namespace, deployment)| Operation::RollbackDeployment { namespace, deployment })
        }
        (Backend::Kubernetes, Action::Cordon) => match &target.node {
            Some(node) => Ok(Operation::CordonNode {
                node: node.clone(),
                drain: drain_on_cordon,
            }),
            None => Err(no_target("node")),
        },
        (Backend::Docker, Action::Restart) => {
            container().map(|(container, project, service)| Operation::RestartContainer {
                container,
                project,
                service,
            })
        }
        (Backend::Docker, Action::Recreate) => {
            container().map(|(container, project, service)| Operation::RecreateContainer {
                container,
                project,
                service,
            })
        }
        (Backend::Docker, Action::ScaleOut | Action::ScaleIn) => {
            service().map(|(project, service)| Operation::ScaleComposeService {
                project,
                service,
                delta: if action == Action::ScaleOut { 1 } else { -1 },
            })
        }
        (Backend::Docker, Action::Rollback) => {
            service().map(|(project, service)| Operation::RollbackComposeService { project, service })
        }
        (Backend::Docker, Action::Repair) => match &target.container {
            Some(container) => Ok(Operation::RepairContainer {
                container: container.clone(),
                spec: serde_json::Value::Null,
            }),
            None => Err(no_target("container")),
        },
        (Backend::Docker, Action::Cordon) | (Backend::Kubernetes, Action::Repair) => {
            Err(Refusal::Unsupported { action, backend })
        }
    }
}

/// The operation that undoes one scale-out homeostat made for an incident
/// that has since resolved: on Docker, removing a replica homeostat added
/// (never one it did not); on Kubernetes, one replica fewer while the
/// Deployment's replicas are still what homeostat set.
pub fn plan_retire(backend: Backend, target: &Target) -> Result<Operation, Refusal> {
    check_names(backend, target)?;
    let no_target = |needs| Refusal::NoTarget {
        action: Action::ScaleIn,
        backend,
        needs,
    };
    match backend {
        Backend::Docker => match (&target.compose_project, &target.compose_service) {
            (Some(project), Some(service)) => Ok(Operation::RemoveAddedReplica {
                project: project.clone(),
                service: service.clone(),
            }),
            _ => Err(no_target("compose_project and compose_service")),
        },
        Backend::Kubernetes => match (&target.namespace, &target.deployment) {
            (Some(namespace), Some(deployment)) => Ok(Operation::ScaleDeploymentBack {
                namespace: namespace.clone(),
                deployment: deployment.clone(),
            }),
            _ => Err(no_target("namespace and deployment")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn targets_come_from_configurable_labels() {
        let names = TargetLabels {
            deployment: "app".into(),
            ..TargetLabels::default()
        };
        let target = Target::from_labels(
            &labels(&[
                ("namespace", "shop"),
                ("app", "checkout"),
                ("pod", ""),
                ("alertname", "X"),
            ]),
            &names,
        );
        assert_eq!(target.namespace.as_deref(), Some("shop"));
        assert_eq!(target.deployment.as_deref(), Some("checkout"));
        assert_eq!(target.pod, None, "an empty label value is no target");
        assert!(Target::from_labels(&labels(&[("alertname", "X")]), &names).is_empty());
    }

    #[test]
    fn target_keys_name_the_workload() {
        let t = Target {
            namespace: Some("shop".into()),
            deployment: Some("checkout".into()),
            pod: Some("checkout-7d9f-abcde".into()),
            ..Target::default()
        };
        assert_eq!(t.key(Backend::Kubernetes), "k8s/shop/deployment/checkout");
        let c = Target {
            compose_project: Some("demo".into()),
            compose_service: Some("service_b".into()),
            container: Some("demo-service_b-1".into()),
            ..Target::default()
        };
        assert_eq!(c.key(Backend::Docker), "docker/demo/service_b");
    }

    #[test]
    fn every_action_but_repair_plans_on_kubernetes_with_a_full_target() {
        let t = Target {
            namespace: Some("shop".into()),
            deployment: Some("checkout".into()),
            pod: Some("checkout-1".into()),
            node: Some("node-a".into()),
            ..Target::default()
        };
        for action in Action::ALL.into_iter().filter(|a| *a != Action::Repair) {
            plan(action, Backend::Kubernetes, &t, false).unwrap();
        }
        assert_eq!(
            plan(Action::Repair, Backend::Kubernetes, &t, false),
            Err(Refusal::Unsupported {
                action: Action::Repair,
                backend: Backend::Kubernetes
            })
        );
        assert_eq!(
            plan(Action::ScaleIn, Backend::Kubernetes, &t, false),
            Ok(Operation::ScaleDeployment {
                namespace: "shop".into(),
                deployment: "checkout".into(),
                delta: -1
            })
        );
        assert_eq!(
            plan(Action::Cordon, Backend::Kubernetes, &t, true),
            Ok(Operation::CordonNode {
                node: "node-a".into(),
                drain: true
            })
        );
    }

    #[test]
    fn cordon_has_no_meaning_on_docker() {
        let t = Target {
            node: Some("host".into()),
            container: Some("c".into()),
            ..Target::default()
        };
        let refusal = plan(Action::Cordon, Backend::Docker, &t, false).unwrap_err();
        assert_eq!(refusal.to_string(), "cordon has no meaning on Docker");
    }

    #[test]
    fn a_repair_names_the_container_and_leaves_its_spec_to_the_journal() {
        let t = Target {
            compose_project: Some("demo".into()),
            compose_service: Some("web".into()),
            container: Some("demo-web-1".into()),
            ..Target::default()
        };
        assert_eq!(
            plan(Action::Repair, Backend::Docker, &t, false),
            Ok(Operation::RepairContainer {
                container: "demo-web-1".into(),
                spec: serde_json::Value::Null
            })
        );
        let service_only = Target { container: None, ..t };
        let refusal = plan(Action::Repair, Backend::Docker, &service_only, false).unwrap_err();
        assert!(
            refusal.to_string().contains("needs the alert label(s) container"),
            "{refusal}"
        );
    }

    #[test]
    fn missing_labels_are_named() {
        let only_namespace = Target {
            namespace: Some("shop".into()),
            ..Target::default()
        };
        let refusal = plan(Action::Rollback, Backend::Kubernetes, &only_namespace, false).unwrap_err();
        assert!(refusal.to_string().contains("namespace and deployment"), "{refusal}");
        let refusal = plan(Action::Restart, Backend::Docker, &Target::default(), false).unwrap_err();
        assert!(
            refusal.to_string().contains("container, or compose_project"),
            "{refusal}"
        );
        assert_eq!(
            plan(Action::Notify, Backend::Docker, &Target::default(), false),
            Ok(Operation::Notify)
        );
    }

    #[test]
    fn names_that_could_change_an_api_path_are_refused() {
        let sneaky = Target {
            namespace: Some("kube-system/deployments/coredns?".into()),
            deployment: Some("x".into()),
            ..Target::default()
        };
        let refusal = plan(Action::Recreate, Backend::Kubernetes, &sneaky, false).unwrap_err();
        assert!(
            matches!(refusal, Refusal::InvalidName { part: "namespace", .. }),
            "{refusal}"
        );
        let upper = Target {
            namespace: Some("Shop".into()),
            deployment: Some("x".into()),
            ..Target::default()
        };
        assert!(plan(Action::Recreate, Backend::Kubernetes, &upper, false).is_err());
        let docker = Target {
            container: Some("../../containers/x".into()),
            ..Target::default()
        };
        assert!(plan(Action::Restart, Backend::Docker, &docker, false).is_err());
        let fine = Target {
            container: Some("demo-service_b-1".into()),
            ..Target::default()
        };
        assert!(plan(Action::Restart, Backend::Docker, &fine, false).is_ok());
    }

    #[test]
    fn a_kubernetes_restart_takes_a_pod_or_a_deployment() {
        let by_deployment = Target {
            namespace: Some("shop".into()),
            deployment: Some("checkout".into()),
            ..Target::default()
        };
        assert_eq!(
            plan(Action::Restart, Backend::Kubernetes, &by_deployment, false),
            Ok(Operation::DeletePod {
                namespace: "shop".into(),
                pod: None,
                deployment: Some("checkout".into())
            })
        );
    }

    #[test]
    fn a_scale_out_is_undone_by_removing_a_replica_homeostat_added() {
        let service = Target {
            compose_project: Some("demo".into()),
            compose_service: Some("service_a".into()),
            ..Target::default()
        };
        assert_eq!(
            plan_retire(Backend::Docker, &service),
            Ok(Operation::RemoveAddedReplica {
                project: "demo".into(),
                service: "service_a".into()
            })
        );
        let container = Target {
            container: Some("demo-service_a-1".into()),
            ..Target::default()
        };
        assert!(plan_retire(Backend::Docker, &container).is_err());
        let deployment = Target {
            namespace: Some("shop".into()),
            deployment: Some("checkout".into()),
            ..Target::default()
        };
        assert_eq!(
            plan_retire(Backend::Kubernetes, &deployment),
            Ok(Operation::ScaleDeploymentBack {
                namespace: "shop".into(),
                deployment: "checkout".into()
            })
        );
        assert!(plan_retire(Backend::Kubernetes, &container).is_err());
    }

    #[test]
    fn operations_serialize_with_their_name() {
        let op = Operation::RolloutRestart {
            namespace: "shop".into(),
            deployment: "checkout".into(),
        };
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(json["operation"], "rollout_restart");
        assert_eq!(serde_json::from_value::<Operation>(json).unwrap(), op);
    }
}
