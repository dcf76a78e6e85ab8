//! The Kubernetes executor against a mocked API server that asserts the
//! method, path and body of every request, and answers as Kubernetes does.
//! Live-cluster tests are at the end, behind `#[ignore]`.

use std::time::Duration;

use homeostat_adapters::executor::kubernetes::{
    KubernetesConfig, KubernetesExecutor, API_CALLS, FIELD_MANAGER, RESTARTED_AT, SCALED_TO,
};
use homeostat_adapters::executor::{Done, ExecError, Executor};
use homeostat_core::action::{Operation, Target};
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

/// The mocked API server's side.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Takes the next request, asserts its method and path (and query, when
    /// given), answers `status` with `answer`, and returns the request body.
    async fn expect(&mut self, method: &str, path: &str, query: Option<&str>, status: u16, answer: Value) -> Value {
        let (request, respond) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .expect("the client hung up");
        assert_eq!(request.method().as_str(), method, "method of {}", request.uri());
        assert_eq!(request.uri().path(), path);
        let call = rbac_call(method, path);
        assert!(
            API_CALLS.contains(&(call.0.as_str(), call.1.as_str(), call.2)),
            "{method} {path} is {call:?}, missing from API_CALLS (and so from the RBAC manifest)"
        );
        if let Some(query) = query {
            let actual = request.uri().query().unwrap_or_default();
            assert!(actual.contains(query), "query {actual:?} lacks {query:?}");
        }
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap();
        respond.send_response(response);
        json!({ "body": body, "content_type": content_type })
    }
}

/// The (API group, resource, verb) an API request needs in RBAC.
fn rbac_call(method: &str, path: &str) -> (String, String, &'static str) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => panic!("not an API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected API path {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("DELETE", _) => "delete",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("POST", _) => "create",
        _ => panic!("unexpected method {method}"),
    };
    (group, resource, verb)
}

fn mocked(config: KubernetesConfig) -> (KubernetesExecutor, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (KubernetesExecutor::with_client(client, config), ApiServer(handle))
}

/// Runs the operation while the test plays the API server.
fn execute(executor: KubernetesExecutor, operation: Operation) -> tokio::task::JoinHandle<Result<Done, ExecError>> {
    tokio::spawn(async move { executor.execute(&operation).await })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn deployment(replicas: i32, revision: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop", "uid": "dep-uid", "resourceVersion": "42",
                     "annotations": {"deployment.kubernetes.io/revision": revision}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"readyReplicas": replicas}
    })
}

/// A ReplicaSet of revision `revision`, created `created` (RFC 3339).
fn replica_set(name: &str, owner_uid: &str, revision: &str, image: &str, created: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created,
                     "annotations": {"deployment.kubernetes.io/revision": revision},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout",
                                          "uid": owner_uid, "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout", "pod-template-hash": format!("hash-{revision}")}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}
    })
}

fn pod(name: &str, ready: bool, created: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

/// Plays the two reads a rollback makes: the deployment at `revision`
/// running `image`, then the namespace's ReplicaSets.
async fn rollback_reads(api: &mut ApiServer, revision: &str, image: &str, replica_sets: Value) {
    api.expect("GET", DEPLOYMENT_PATH, None, 200, deployment(2, revision, image))
        .await;
    api.expect(
        "GET",
        "/apis/apps/v1/namespaces/shop/replicasets",
        None,
        200,
        replica_sets,
    )
    .await;
}

fn rollout_restart() -> Operation {
    Operation::RolloutRestart {
        namespace: "shop".into(),
        deployment: "checkout".into(),
    }
}

fn rollback() -> Operation {
    Operation::RollbackDeployment {
        namespace: "shop".into(),
        deployment: "checkout".into(),
    }
}

const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/shop/deployments/checkout";

#[tokio::test]
async fn rollout_restart_patches_kubectls_annotation() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollout_restart());
    // Under homeostat's own field manager, which its managedFields entry
    // names: how verification tells its changes from others'.
    let request = api
        .expect(
            "PATCH",
            DEPLOYMENT_PATH,
            Some(&format!("fieldManager={FIELD_MANAGER}")),
            200,
            deployment(2, "3", "v3"),
        )
        .await;
    assert_eq!(request["content_type"], "application/strategic-merge-patch+json");
    let stamp = request["body"]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        .as_str()
        .unwrap()
        .to_owned();
    chrono::DateTime::parse_from_rfc3339(&stamp).unwrap();
    let done = done.await.unwrap().unwrap();
    assert!(done.contains("rollout restart of deployment shop/checkout"), "{done}");
}

#[tokio::test]
async fn a_restart_by_deployment_deletes_its_unready_pod() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(
        executor,
        Operation::DeletePod {
            namespace: "shop".into(),
            pod: None,
            deployment: Some("checkout".into()),
        },
    );
    api.expect("GET", DEPLOYMENT_PATH, None, 200, deployment(2, "3", "v3"))
        .await;
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        pod("checkout-old", true, "2026-11-27T00:00:00Z"),
        pod("checkout-sick", false, "2026-11-28T00:00:00Z"),
    ]});
    api.expect(
        "GET",
        "/api/v1/namespaces/shop/pods",
        Some("labelSelector=app%3Dcheckout"),
        200,
        pods,
    )
    .await;
    api.expect(
        "DELETE",
        "/api/v1/namespaces/shop/pods/checkout-sick",
        None,
        200,
        pod("checkout-sick", false, "2026-11-28T00:00:00Z"),
    )
    .await;
    assert_eq!(done.await.unwrap().unwrap(), "deleted pod shop/checkout-sick");
}

#[tokio::test]
async fn scaling_patches_replicas_within_bounds() {
    let config = KubernetesConfig {
        min_replicas: 1,
        max_replicas: 3,
        ..KubernetesConfig::default()
    };
    let scale = |delta| Operation::ScaleDeployment {
        namespace: "shop".into(),
        deployment: "checkout".into(),
        delta,
    };
    let (out, mut api) = mocked(config.clone());
    let done = execute(out, scale(1));
    api.expect("GET", DEPLOYMENT_PATH, None, 200, deployment(2, "3", "v3"))
        .await;
    let request = api
        .expect("PATCH", DEPLOYMENT_PATH, None, 200, deployment(3, "3", "v3"))
        .await;
    assert_eq!(request["content_type"], "application/merge-patch+json");
    assert_eq!(
        request["body"],
        json!({"metadata": {"annotations": {SCALED_TO: "3"}}, "spec": {"replicas": 3}})
    );
    assert_eq!(
        done.await.unwrap().unwrap(),
        "scaled deployment shop/checkout from 2 to 3 replicas"
    );

    // At the bound: refused, and nothing is written.
    let (at_max, mut api) = mocked(config);
    let done = execute(at_max, scale(1));
    api.expect("GET", DEPLOYMENT_PATH, None, 200, deployment(3, "3", "v3"))
        .await;
    let err = done.await.unwrap().unwrap_err();
    assert!(
        matches!(err, ExecError::Refused { .. }) && err.to_string().contains("max_replicas 3"),
        "{err}"
    );
}

/// A deployment at `replicas` that homeostat last scaled to `scaled_to`.
fn scaled(replicas: i32, scaled_to: Option<&str>) -> Value {
    let mut d = deployment(replicas, "3", "v3");
    if let Some(to) = scaled_to {
        d["metadata"]["annotations"][SCALED_TO] = to.into();
    }
    d
}

/// After its incident resolved, homeostat scales a deployment back only
/// while its replicas are what homeostat set, with the resourceVersion it
/// read (a change meanwhile is a conflict, not overwritten).
#[tokio::test]
async fn a_deployment_is_scaled_back_only_while_its_replicas_are_what_homeostat_set() {
    let back = || Operation::ScaleDeploymentBack {
        namespace: "shop".into(),
        deployment: "checkout".into(),
    };
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, back());
    api.expect("GET", DEPLOYMENT_PATH, None, 200, scaled(3, Some("3")))
        .await;
    let request = api
        .expect("PATCH", DEPLOYMENT_PATH, None, 200, scaled(2, Some("2")))
        .await;
    assert_eq!(
        request["body"],
        json!({"metadata": {"resourceVersion": "42", "annotations": {SCALED_TO: "2"}}, "spec": {"replicas": 2}})
    );
    assert_eq!(
        done.await.unwrap().unwrap(),
        "scaled deployment shop/checkout back from 3 to 2 replicas, as homeostat had set them"
    );

    // Scaled by someone since, or never by homeostat: left alone, nothing written.
    for (answer, says) in [
        (scaled(4, Some("3")), "runs 4 replicas, not the 3 homeostat set"),
        (scaled(3, None), "carries no homeostat.io/scaled-to annotation"),
    ] {
        let (executor, mut api) = mocked(KubernetesConfig::default());
        let done = execute(executor, back());
        api.expect("GET", DEPLOYMENT_PATH, None, 200, answer).await;
        let err = tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("it wrote something")
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, ExecError::Refused { .. }), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[tokio::test]
async fn rollback_takes_the_previous_owned_revision_and_retries_a_conflict() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollback());
    let replica_sets = json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [
        replica_set("checkout-1", "dep-uid", "1", "shop/checkout:v1", "2026-01-01T00:00:00Z"),
        replica_set("checkout-2", "dep-uid", "2", "shop/checkout:v2", "2026-01-02T00:00:00Z"),
        replica_set("checkout-3", "dep-uid", "3", "shop/checkout:v3", "2026-01-03T00:00:00Z"),
        replica_set("other-9", "other-uid", "2", "shop/other:v9", "2026-01-02T00:05:00Z"),
    ]});
    for attempt in 0..2 {
        rollback_reads(&mut api, "3", "shop/checkout:v3", replica_sets.clone()).await;
        let (code, answer) = if attempt == 0 {
            (
                409,
                status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                ),
            )
        } else {
            (200, deployment(2, "4", "shop/checkout:v2"))
        };
        let request = api.expect("PUT", DEPLOYMENT_PATH, None, code, answer).await;
        let sent = &request["body"];
        assert_eq!(
            sent["metadata"]["resourceVersion"], "42",
            "the write must carry what it read"
        );
        let template = &sent["spec"]["template"];
        assert_eq!(template["spec"]["containers"][0]["image"], "shop/checkout:v2");
        assert_eq!(
            template["metadata"]["labels"],
            json!({"app": "checkout"}),
            "pod-template-hash must go"
        );
    }
    let done = done.await.unwrap().unwrap();
    assert_eq!(
        done,
        "rolled back deployment shop/checkout from revision 3 to revision 2 (replicaset checkout-2)"
    );
}

#[tokio::test]
async fn cordon_and_drain_respects_pod_disruption_budgets() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(
        executor,
        Operation::CordonNode {
            node: "node-a".into(),
            drain: true,
        },
    );
    let request = api
        .expect(
            "PATCH",
            "/api/v1/nodes/node-a",
            None,
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
        )
        .await;
    assert_eq!(request["body"], json!({"spec": {"unschedulable": true}}));
    let mut daemon = pod("logs-x", true, "2026-11-28T00:00:00Z");
    daemon["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "logs", "uid": "ds"}]);
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        daemon, pod("web-a", true, "2026-11-28T00:00:00Z"), pod("db-0", true, "2026-11-28T00:00:00Z"),
    ]});
    api.expect(
        "GET",
        "/api/v1/pods",
        Some("fieldSelector=spec.nodeName%3Dnode-a"),
        200,
        pods,
    )
    .await;
    let eviction = api
        .expect(
            "POST",
            "/api/v1/namespaces/shop/pods/web-a/eviction",
            None,
            201,
            status(201, "", ""),
        )
        .await;
    assert_eq!(eviction["body"]["metadata"]["name"], "web-a", "{eviction}");
    api.expect(
        "POST",
        "/api/v1/namespaces/shop/pods/db-0/eviction",
        None,
        429,
        status(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        ),
    )
    .await;
    let done = done.await.unwrap().unwrap();
    assert!(
        done.contains("drain stopped at shop/db-0") && done.contains("evicted: [shop/web-a]"),
        "{done}"
    );
}

/// A rollback goes to the last known good revision: revision 2 ran 30 s
/// before revision 3 replaced it, so revision 1 (a day) is the one. With
/// nothing that ran `known_good_after` (10m), it is refused, nothing written.
#[tokio::test]
async fn rollback_skips_a_revision_that_ran_too_short_and_refuses_with_nothing_known_good() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollback());
    let replica_sets = json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [
        replica_set("checkout-1", "dep-uid", "1", "shop/checkout:v1", "2026-01-01T00:00:00Z"),
        replica_set("checkout-2", "dep-uid", "2", "shop/checkout:v2", "2026-01-02T00:00:00Z"),
        replica_set("checkout-3", "dep-uid", "3", "shop/checkout:v3", "2026-01-02T00:00:30Z"),
    ]});
    rollback_reads(&mut api, "3", "shop/checkout:v3", replica_sets).await;
    let request = api
        .expect(
            "PUT",
            DEPLOYMENT_PATH,
            None,
            200,
            deployment(2, "4", "shop/checkout:v1"),
        )
        .await;
    assert_eq!(
        request["body"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "shop/checkout:v1"
    );
    assert_eq!(
        done.await.unwrap().unwrap(),
        "rolled back deployment shop/checkout from revision 3 to revision 1 (replicaset checkout-1)"
    );

    // Revision 1 ran 20 s; revision 2 is the current one.
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollback());
    let replica_sets = json!({"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": [
        replica_set("checkout-1", "dep-uid", "1", "shop/checkout:v1", "2026-01-01T00:00:00Z"),
        replica_set("checkout-2", "dep-uid", "2", "shop/checkout:v2", "2026-01-01T00:00:20Z"),
    ]});
    rollback_reads(&mut api, "2", "shop/checkout:v2", replica_sets).await;
    let err = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the rollback wrote something")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("revision 1 ran 20s; nothing known good"),
        "{err}"
    );
}

#[tokio::test]
async fn gone_and_forbidden_are_clear_errors() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollback());
    api.expect(
        "GET",
        DEPLOYMENT_PATH,
        None,
        404,
        status(404, "NotFound", "deployments.apps \"checkout\" not found"),
    )
    .await;
    let err = done.await.unwrap().unwrap_err();
    assert!(matches!(err, ExecError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("deployment shop/checkout"), "{err}");

    let (executor, mut api) = mocked(KubernetesConfig::default());
    let done = execute(executor, rollout_restart());
    let forbidden = "deployments.apps \"checkout\" is forbidden: User \"system:serviceaccount:homeostat:homeostat\" cannot patch resource";
    api.expect("PATCH", DEPLOYMENT_PATH, None, 403, status(403, "Forbidden", forbidden))
        .await;
    let err = done.await.unwrap().unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("forbidden") && err.to_string().contains("deploy/kubernetes"),
        "{err}"
    );
}

#[tokio::test]
async fn readiness_comes_from_the_deployment_status() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let target = Target {
        namespace: Some("shop".into()),
        deployment: Some("checkout".into()),
        ..Target::default()
    };
    let readiness = tokio::spawn(async move { executor.readiness(&target).await });
    let mut answer = deployment(3, "3", "v3");
    answer["status"] = json!({"replicas": 3, "readyReplicas": 2});
    api.expect("GET", DEPLOYMENT_PATH, None, 200, answer).await;
    let readiness = readiness.await.unwrap().unwrap().unwrap();
    assert_eq!(
        (readiness.ready, readiness.total, readiness.instance_ready),
        (2, 3, None)
    );
}

/// A Deployment scaled to zero was stopped on purpose; one with replicas was not.
#[tokio::test]
async fn a_deployment_scaled_to_zero_was_stopped_deliberately() {
    for (replicas, deliberate) in [(0, true), (2, false)] {
        let (executor, mut api) = mocked(KubernetesConfig::default());
        let target = Target {
            namespace: Some("shop".into()),
            deployment: Some("checkout".into()),
            ..Target::default()
        };
        let condition = tokio::spawn(async move { executor.condition(&target).await });
        api.expect("GET", DEPLOYMENT_PATH, None, 200, deployment(replicas, "3", "v3"))
            .await;
        let condition = condition.await.unwrap().unwrap().unwrap();
        assert_eq!(condition.instance, "k8s/shop/deployment/checkout");
        assert_eq!(condition.stopped_deliberately.is_some(), deliberate, "{condition:?}");
        if deliberate {
            assert_eq!(
                condition.stopped_deliberately.unwrap(),
                "Deployment shop/checkout is scaled to zero (spec.replicas: 0)"
            );
        }
    }
}

/// Against a real cluster: `KUBECONFIG=… cargo test --test kubernetes -- --ignored`.
/// Read-only: it asks for the readiness of a deployment named by
/// HOMEOSTAT_TEST_NAMESPACE / HOMEOSTAT_TEST_DEPLOYMENT (default kube-system/coredns).
/// What verification asks after an action: the Deployment's managedFields
/// entries written in the window by others — kubectl edit, a scale by hand
/// — are named, oldest first; homeostat's own, the control plane's
/// (revision and status after any change), and older ones are not.
#[tokio::test]
async fn outside_changes_are_other_managers_updates_of_the_deployment_in_the_window() {
    let (executor, mut api) = mocked(KubernetesConfig::default());
    let target = Target {
        namespace: Some("shop".into()),
        deployment: Some("checkout".into()),
        ..Target::default()
    };
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().to_utc();
    let (since, until) = (at("2026-12-07T20:30:00.400Z"), at("2026-12-07T20:32:00Z"));
    let changes = tokio::spawn(async move { executor.changes(&target, since, until).await });
    let entry = |manager: &str, operation: &str, subresource: Option<&str>, time: &str| {
        let mut entry = json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1",
                               "time": time, "fieldsType": "FieldsV1", "fieldsV1": {}});
        if let Some(subresource) = subresource {
            entry["subresource"] = subresource.into();
        }
        entry
    };
    let mut answer = deployment(2, "4", "v4");
    answer["metadata"]["managedFields"] = json!([
        // Before the window: a deploy long ago.
        entry("kubectl-client-side-apply", "Update", None, "2026-12-07T19:00:00Z"),
        // homeostat's own rollout restart, and what the control plane did after it.
        entry(FIELD_MANAGER, "Update", None, "2026-12-07T20:30:00Z"),
        entry("kube-controller-manager", "Update", None, "2026-12-07T20:30:01Z"),
        entry(
            "kube-controller-manager",
            "Update",
            Some("status"),
            "2026-12-07T20:31:30Z"
        ),
        // By hand, within the window (listed newest first: named oldest first).
        entry("kubectl", "Update", Some("scale"), "2026-12-07T20:31:40Z"),
        entry("kubectl-edit", "Update", None, "2026-12-07T20:31:02Z"),
        // After the window.
        entry("argocd-controller", "Apply", None, "2026-12-07T20:33:00Z"),
    ]);
    api.expect("GET", DEPLOYMENT_PATH, None, 200, answer).await;
    assert_eq!(
        changes.await.unwrap().unwrap(),
        [
            "kubectl-edit updated deployment shop/checkout at 20:31:02 UTC",
            "kubectl updated deployment shop/checkout (its scale) at 20:31:40 UTC",
        ]
    );

    // A target without a Deployment asks nothing: with the API server gone,
    // any request would fail.
    let (executor, api) = mocked(KubernetesConfig::default());
    drop(api);
    let pod = Target {
        namespace: Some("shop".into()),
        pod: Some("checkout-1".into()),
        ..Target::default()
    };
    assert_eq!(
        executor.changes(&pod, since, until).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG)"]
async fn live_cluster_reports_readiness() {
    let executor = KubernetesExecutor::connect(KubernetesConfig::default()).await.unwrap();
    let target = Target {
        namespace: Some(std::env::var("HOMEOSTAT_TEST_NAMESPACE").unwrap_or_else(|_| "kube-system".into())),
        deployment: Some(std::env::var("HOMEOSTAT_TEST_DEPLOYMENT").unwrap_or_else(|_| "coredns".into())),
        ..Target::default()
    };
    let readiness = executor.readiness(&target).await.unwrap();
    assert!(readiness.is_some_and(|r| r.ready > 0), "{readiness:?}");
}
