//! The Kubernetes executor: operations through the API server with kube-rs.
//!
//! Every request it can make is listed in [`API_CALLS`], which the RBAC
//! manifest under deploy/kubernetes must cover, and nothing more.
//! Writes that read-modify-write (rollback) send the read resourceVersion
//! and retry on 409 Conflict. Every write names [`FIELD_MANAGER`], so that
//! a Deployment's managedFields tell homeostat's changes from others'.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
pub use homeostat_core::config::KubernetesConfig;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use super::{time_of_day, Deployed, Done, ExecError, Executor};
use homeostat_core::action::{Backend, Operation, Target};
use homeostat_core::condition::Condition;
use homeostat_core::guard::Readiness;

/// kubectl's rollout-restart annotation; kube's own `restart()` uses another key.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const REVISION: &str = "deployment.kubernetes.io/revision";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The field manager homeostat's writes name (`fieldManager`): its entry in
/// an object's managedFields.
pub const FIELD_MANAGER: &str = "homeostat";
/// The control plane's field manager: it records a Deployment's revision
/// and status after whoever changed its spec, who has an entry of their own.
const CONTROL_PLANE: &str = "kube-controller-manager";
/// The replicas homeostat last scaled a Deployment to: it scales one back
/// after the incident that scaled it out resolves only while `spec.replicas`
/// still is that (no one scaled it since).
pub const SCALED_TO: &str = "homeostat.io/scaled-to";
/// Attempts at a read-modify-write that meets a 409 Conflict.
const CONFLICT_ATTEMPTS: usize = 3;

/// Every API call this executor makes: (API group, resource, verb).
pub const API_CALLS: &[(&str, &str, &str)] = &[
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "delete"),
    ("", "pods/eviction", "create"),
    ("", "nodes", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "patch"),
    ("apps", "deployments", "update"),
    ("apps", "replicasets", "list"),
];

pub struct KubernetesExecutor {
    client: Client,
    config: KubernetesConfig,
}

fn api_error(err: kube::Error, what: &str) -> ExecError {
    match err {
        kube::Error::Api(status) if status.code == 404 => ExecError::NotFound(format!("{what}: {}", status.message)),
        kube::Error::Api(status) if status.code == 403 => ExecError::Refused {
            backend: Backend::Kubernetes,
            message: format!(
                "{what}: forbidden ({}); the service account lacks a permission deploy/kubernetes grants",
                status.message
            ),
        },
        kube::Error::Api(status) => ExecError::Refused {
            backend: Backend::Kubernetes,
            message: format!("{what}: HTTP {}: {}", status.code, status.message),
        },
        other => ExecError::Unreachable {
            backend: Backend::Kubernetes,
            message: format!("{what}: {other}"),
        },
    }
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

fn refused(message: String) -> ExecError {
    ExecError::Refused {
        backend: Backend::Kubernetes,
        message,
    }
}

/// A patch by homeostat's field manager.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// A replace by homeostat's field manager.
fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

impl KubernetesExecutor {
    /// In-cluster configuration, else KUBECONFIG.
    pub async fn connect(config: KubernetesConfig) -> Result<KubernetesExecutor, ExecError> {
        let client = Client::try_default().await.map_err(|e| ExecError::Unreachable {
            backend: Backend::Kubernetes,
            message: format!("no in-cluster config and no usable KUBECONFIG: {e}"),
        })?;
        Ok(KubernetesExecutor::with_client(client, config))
    }

    /// An executor over a given client (tests pass one on a mocked API server).
    pub fn with_client(client: Client, config: KubernetesConfig) -> KubernetesExecutor {
        KubernetesExecutor { client, config }
    }

    fn deployments(&self, namespace: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn deployment(&self, namespace: &str, name: &str) -> Result<Deployment, ExecError> {
        self.deployments(namespace)
            .get(name)
            .await
            .map_err(|e| api_error(e, &format!("deployment {namespace}/{name}")))
    }

    async fn delete_pod(
        &self,
        namespace: &str,
        pod: Option<&str>,
        deployment: Option<&str>,
    ) -> Result<Done, ExecError> {
        let pod = match (pod, deployment) {
            (Some(pod), _) => pod.to_owned(),
            (None, Some(deployment)) => self.worst_pod(namespace, deployment).await?,
            (None, None) => return Err(ExecError::Unsupported("no pod or deployment named".into())),
        };
        self.pods(namespace)
            .delete(&pod, &DeleteParams::default())
            .await
            .map_err(|e| api_error(e, &format!("pod {namespace}/{pod}")))?;
        Ok(format!("deleted pod {namespace}/{pod}"))
    }

    /// The deployment's pod most in need of a restart: not ready first, else the oldest.
    async fn worst_pod(&self, namespace: &str, deployment: &str) -> Result<String, ExecError> {
        let d = self.deployment(namespace, deployment).await?;
        let selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        let match_labels = selector.match_labels.unwrap_or_default();
        // Only matchLabels is turned into a query; anything else could select pods that are not the deployment's.
        if selector.match_expressions.is_some_and(|e| !e.is_empty()) || match_labels.is_empty() {
            return Err(refused(format!(
                "deployment {namespace}/{deployment} selects its pods with matchExpressions; name the pod in the alert instead"
            )));
        }
        let labels: Vec<String> = match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let list = self
            .pods(namespace)
            .list(&ListParams::default().labels(&labels.join(",")))
            .await
            .map_err(|e| api_error(e, &format!("pods of {namespace}/{deployment}")))?;
        // Pods already going away or finished are not candidates.
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect();
        pods.sort_by_key(|p| (pod_ready(p), p.metadata.creation_timestamp.clone().map(|t| t.0)));
        pods.into_iter()
            .find_map(|p| p.metadata.name)
            .ok_or_else(|| ExecError::NotFound(format!("deployment {namespace}/{deployment} has no pods")))
    }

    async fn rollout_restart(&self, namespace: &str, deployment: &str) -> Result<Done, ExecError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
        self.deployments(namespace)
            .patch(deployment, &patch_params(), &Patch::Strategic(patch))
            .await
            .map_err(|e| api_error(e, &format!("deployment {namespace}/{deployment}")))?;
        Ok(format!(
            "rollout restart of deployment {namespace}/{deployment} at {now}"
        ))
    }

    async fn scale(&self, namespace: &str, deployment: &str, delta: i32) -> Result<Done, ExecError> {
        let d = self.deployment(namespace, deployment).await?;
        let current = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let wanted = current.saturating_add(delta);
        // Outside the bounds, refuse rather than clamp: clamping could turn a
        // scale out into a scale in (or the reverse) past the guard.
        if !(self.config.min_replicas..=self.config.max_replicas).contains(&wanted) {
            return Err(refused(format!(
                "scaling deployment {namespace}/{deployment} from {current} replicas by {delta} would leave the bounds \
                 (executor.kubernetes.min_replicas {}, max_replicas {})",
                self.config.min_replicas, self.config.max_replicas
            )));
        }
        let patch = json!({
            "metadata": {"annotations": {SCALED_TO: wanted.to_string()}},
            "spec": {"replicas": wanted},
        });
        self.deployments(namespace)
            .patch(deployment, &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|e| api_error(e, &format!("deployment {namespace}/{deployment}")))?;
        Ok(format!(
            "scaled deployment {namespace}/{deployment} from {current} to {wanted} replicas"
        ))
    }

    /// Scales the deployment back by one replica after an incident that
    /// scaled it out resolved, only while its replicas are what homeostat
    /// set ([`SCALED_TO`]): the patch carries the resourceVersion read, so
    /// a change meanwhile is a conflict, not overwritten.
    async fn scale_back(&self, namespace: &str, name: &str) -> Result<Done, ExecError> {
        let what = format!("deployment {namespace}/{name}");
        let d = self.deployment(namespace, name).await?;
        let current = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let set = d.metadata.annotations.as_ref().and_then(|a| a.get(SCALED_TO));
        let Some(set) = set.and_then(|s| s.parse::<i32>().ok()) else {
            return Err(refused(format!(
                "{what} carries no {SCALED_TO} annotation: homeostat did not scale it, so it does not scale it back"
            )));
        };
        if set != current {
            return Err(refused(format!(
                "{what} runs {current} replicas, not the {set} homeostat set: someone scaled it since, so it is left \
                 as it is"
            )));
        }
        let wanted = current - 1;
        if wanted < self.config.min_replicas {
            return Err(refused(format!(
                "scaling {what} back from {current} replicas would leave the bounds (executor.kubernetes.min_replicas \
                 {})",
                self.config.min_replicas
            )));
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": d.metadata.resource_version,
                "annotations": {SCALED_TO: wanted.to_string()},
            },
            "spec": {"replicas": wanted},
        });
        self.deployments(namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| api_error(e, &what))?;
        Ok(format!(
            "scaled {what} back from {current} to {wanted} replicas, as homeostat had set them"
        ))
    }

    /// kubectl's rollout undo, to the last known good revision: the
    /// template of the deployment's newest ReplicaSet below the current
    /// revision that ran `known_good_after` before the next revision's
    /// ReplicaSet was created, without its pod-template-hash label,
    /// replaces the deployment's template. Refused when there is none.
    async fn rollback(&self, namespace: &str, name: &str) -> Result<Done, ExecError> {
        let what = format!("deployment {namespace}/{name}");
        let known_good_after = self.config.known_good_after.as_delta();
        for _ in 0..CONFLICT_ATTEMPTS {
            let mut deployment = self.deployment(namespace, name).await?;
            let current: u64 = revision(&deployment.metadata.annotations);
            let uid = deployment.metadata.uid.clone().unwrap_or_default();
            let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
            let owned: Vec<ReplicaSet> = replica_sets
                .list(&ListParams::default())
                .await
                .map_err(|e| api_error(e, &format!("replicasets of {what}")))?
                .items
                .into_iter()
                .filter(|rs| {
                    rs.metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|owners| owners.iter().any(|o| o.uid == uid))
                })
                .collect();
            let earlier = lifetimes(owned, current);
            if earlier.is_empty() {
                return Err(refused(format!("{what} has no previous revision to roll back to")));
            }
            let Some(previous) = earlier
                .iter()
                .find(|(_, ran)| ran.is_some_and(|ran| ran >= known_good_after))
                .map(|(rs, _)| rs.clone())
            else {
                let tried: Vec<String> = earlier
                    .iter()
                    .map(|(rs, ran)| match ran {
                        Some(ran) => format!(
                            "revision {} ran {}s",
                            revision(&rs.metadata.annotations),
                            ran.num_seconds()
                        ),
                        None => format!(
                            "revision {} ran for an unknown time",
                            revision(&rs.metadata.annotations)
                        ),
                    })
                    .collect();
                return Err(refused(format!(
                    "{what}: no revision below {current} ran {} or longer (known_good_after) before the next \
                     replaced it: {}; nothing known good to roll back to",
                    self.config.known_good_after,
                    tried.join(", ")
                )));
            };
            let rs_name = previous.metadata.name.clone().unwrap_or_default();
            let from_revision = revision(&previous.metadata.annotations);
            let mut template = previous
                .spec
                .and_then(|s| s.template)
                .ok_or_else(|| refused(format!("replicaset {namespace}/{rs_name} has no pod template")))?;
            if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
                labels.remove(POD_TEMPLATE_HASH);
            }
            let Some(spec) = deployment.spec.as_mut() else {
                return Err(refused(format!("{what} has no spec")));
            };
            spec.template = template;
            // Replace carries the resourceVersion just read: a concurrent change gets 409, and a fresh read.
            match self
                .deployments(namespace)
                .replace(name, &post_params(), &deployment)
                .await
            {
                Ok(_) => {
                    return Ok(format!(
                        "rolled back {what} from revision {current} to revision {from_revision} (replicaset {rs_name})"
                    ))
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(api_error(e, &what)),
            }
        }
        Err(refused(format!(
            "{what} kept changing: {CONFLICT_ATTEMPTS} conflicts in a row"
        )))
    }

    async fn cordon(&self, node: &str, drain: bool) -> Result<Done, ExecError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch(
                node,
                &patch_params(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .map_err(|e| api_error(e, &format!("node {node}")))?;
        if !drain {
            return Ok(format!("cordoned node {node}"));
        }
        let pods: Api<Pod> = Api::all(self.client.clone());
        let on_node = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| api_error(e, &format!("pods on node {node}")))?;
        let mut evicted = Vec::new();
        for pod in on_node.items {
            // DaemonSet pods would come straight back; mirror pods cannot be evicted.
            let owned_by_daemonset = pod
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
            let mirror = pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
            let (Some(name), Some(namespace)) = (pod.metadata.name, pod.metadata.namespace) else {
                continue;
            };
            if owned_by_daemonset || mirror {
                continue;
            }
            match self.pods(&namespace).evict(&name, &EvictParams::default()).await {
                Ok(_) => evicted.push(format!("{namespace}/{name}")),
                // 429: a PodDisruptionBudget forbids it now. Respect it and stop here.
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    return Ok(format!(
                        "cordoned node {node}; drain stopped at {namespace}/{name}, which a PodDisruptionBudget protects; evicted: [{}]",
                        evicted.join(", ")
                    ))
                }
                Err(e) => return Err(api_error(e, &format!("evict {namespace}/{name}"))),
            }
        }
        Ok(format!(
            "cordoned and drained node {node}; evicted: [{}]",
            evicted.join(", ")
        ))
    }
}

impl Executor for KubernetesExecutor {
    fn backend(&self) -> Backend {
        Backend::Kubernetes
    }

    /// The Deployment's managedFields entries of other managers than
    /// homeostat's written in the window (kubectl edit, apply, scale, a
    /// rollout restart or undo by hand, a CD tool). Not the control plane's
    /// (the revision and status it records after any change), nor any
    /// status update. Targets without a Deployment have none.
    async fn changes(
        &self,
        target: &Target,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, ExecError> {
        let (Some(namespace), Some(name)) = (&target.namespace, &target.deployment) else {
            return Ok(Vec::new());
        };
        let deployment = self.deployment(namespace, name).await?;
        Ok(outside_updates(&deployment, since, until))
    }

    async fn deployed(&self, target: &Target) -> Result<Option<Deployed>, ExecError> {
        let (Some(namespace), Some(name)) = (&target.namespace, &target.deployment) else {
            return Ok(None);
        };
        let deployment = self.deployment(namespace, name).await?;
        Ok(Some(Deployed {
            what: format!("revision {}", revision(&deployment.metadata.annotations)),
            since: None,
            known_good: false,
        }))
    }

    /// A Deployment scaled to zero was stopped on purpose; the runtime's
    /// restarts are the Deployment controller's own, and specs are its
    /// revisions (`rollback`), so neither is told here.
    async fn condition(&self, target: &Target) -> Result<Option<Condition>, ExecError> {
        let (Some(namespace), Some(name)) = (&target.namespace, &target.deployment) else {
            return Ok(None);
        };
        let deployment = self.deployment(namespace, name).await?;
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
        Ok(Some(Condition {
            instance: format!("k8s/{namespace}/deployment/{name}"),
            stopped_deliberately: (replicas == Some(0))
                .then(|| format!("Deployment {namespace}/{name} is scaled to zero (spec.replicas: 0)")),
            ..Condition::default()
        }))
    }

    async fn readiness(&self, target: &Target) -> Result<Option<Readiness>, ExecError> {
        let Some(namespace) = &target.namespace else {
            return Ok(None);
        };
        let instance_ready = match &target.pod {
            Some(pod) => {
                let p = self
                    .pods(namespace)
                    .get(pod)
                    .await
                    .map_err(|e| api_error(e, &format!("pod {namespace}/{pod}")))?;
                Some(pod_ready(&p))
            }
            None => None,
        };
        if let Some(deployment) = &target.deployment {
            let d = self.deployment(namespace, deployment).await?;
            let count = |n: Option<i32>| u32::try_from(n.unwrap_or(0)).unwrap_or(0);
            let status = d.status.unwrap_or_default();
            return Ok(Some(Readiness {
                ready: count(status.ready_replicas),
                total: count(status.replicas),
                instance_ready,
            }));
        }
        Ok(instance_ready.map(Readiness::single))
    }

    async fn execute(&self, operation: &Operation) -> Result<Done, ExecError> {
        match operation {
            Operation::Notify => Ok("notified".into()),
            Operation::DeletePod {
                namespace,
                pod,
                deployment,
            } => self.delete_pod(namespace, pod.as_deref(), deployment.as_deref()).await,
            Operation::RolloutRestart { namespace, deployment } => self.rollout_restart(namespace, deployment).await,
            Operation::ScaleDeployment {
                namespace,
                deployment,
                delta,
            } => self.scale(namespace, deployment, *delta).await,
            Operation::RollbackDeployment { namespace, deployment } => self.rollback(namespace, deployment).await,
            Operation::ScaleDeploymentBack { namespace, deployment } => self.scale_back(namespace, deployment).await,
            Operation::CordonNode { node, drain } => self.cordon(node, *drain).await,
            other => Err(ExecError::Unsupported(format!(
                "the Kubernetes executor cannot perform {}",
                serde_json::to_string(other).unwrap_or_default()
            ))),
        }
    }
}

/// The ReplicaSets of revisions below `current`, newest first, each with
/// how long its revision ran: from its creation to the creation of the
/// ReplicaSet of the next revision up. `None` when that cannot be told (a
/// ReplicaSet reused by an earlier rollback was created before the one it
/// replaced, so its revision's start is unknown).
fn lifetimes(mut owned: Vec<ReplicaSet>, current: u64) -> Vec<(ReplicaSet, Option<chrono::Duration>)> {
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(&rs.metadata.annotations)));
    let created = |rs: &ReplicaSet| {
        let time = rs.metadata.creation_timestamp.as_ref()?;
        chrono::DateTime::<Utc>::from_timestamp_millis(time.0.as_millisecond())
    };
    let mut out = Vec::new();
    let mut next_created = None;
    for rs in owned {
        let from = created(&rs);
        if revision(&rs.metadata.annotations) < current {
            let ran = match (from, next_created) {
                (Some(from), Some(until)) if until >= from => Some(until - from),
                _ => None,
            };
            out.push((rs, ran));
        }
        next_created = from;
    }
    out
}

/// The managedFields entries of `deployment` that others than homeostat
/// and the control plane wrote within `since..=until`, oldest first. Their
/// times are whole seconds: the window starts at the second `since` falls in.
fn outside_updates(deployment: &Deployment, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    let namespace = deployment.metadata.namespace.as_deref().unwrap_or_default();
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let from = DateTime::<Utc>::from_timestamp(since.timestamp(), 0).unwrap_or(since);
    let mut updates: Vec<(DateTime<Utc>, String)> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.subresource.as_deref() != Some("status"))
        .filter_map(|entry| {
            let manager = entry.manager.as_deref().unwrap_or("an unnamed manager");
            if [FIELD_MANAGER, CONTROL_PLANE].contains(&manager) {
                return None;
            }
            let at = entry.time.as_ref()?;
            let at = DateTime::<Utc>::from_timestamp_millis(at.0.as_millisecond())?;
            if !(from..=until).contains(&at) {
                return None;
            }
            let did = match entry.operation.as_deref() {
                Some("Apply") => "applied a change to",
                Some("Update") => "updated",
                _ => "changed",
            };
            let part = match entry.subresource.as_deref() {
                Some(sub) if !sub.is_empty() => format!(" (its {sub})"),
                _ => String::new(),
            };
            let when = time_of_day(at);
            Some((
                at,
                format!("{manager} {did} deployment {namespace}/{name}{part} at {when}"),
            ))
        })
        .collect();
    updates.sort();
    updates.into_iter().map(|(_, words)| words).collect()
}

fn revision(annotations: &Option<BTreeMap<String, String>>) -> u64 {
    annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
