//! deploy/kubernetes: every manifest parses into its Kubernetes type, the
//! Deployment is locked down, and the RBAC rules grant exactly the API
//! calls the Kubernetes executor makes, nothing broader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use homeostat::config::Config;
use homeostat::executor::kubernetes::API_CALLS;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of every resource the kustomization lists.
fn documents() -> Vec<(String, serde_yaml::Value)> {
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap()).unwrap();
    let mut documents = Vec::new();
    for file in kustomization["resources"].as_sequence().unwrap() {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir().join(file)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            documents.push((file.to_owned(), serde_yaml::Value::deserialize(document).unwrap()));
        }
    }
    documents
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, document: &serde_yaml::Value) -> T {
    serde_yaml::from_value(document.clone()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_manifest_is_a_valid_object_of_its_kind() {
    let mut kinds = BTreeSet::new();
    for (file, document) in documents() {
        let kind = document["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"))
            .to_owned();
        match kind.as_str() {
            "Namespace" => drop(parse::<Namespace>(&file, &document)),
            "ServiceAccount" => drop(parse::<ServiceAccount>(&file, &document)),
            "ClusterRole" => drop(parse::<ClusterRole>(&file, &document)),
            "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(&file, &document)),
            "ConfigMap" => drop(parse::<ConfigMap>(&file, &document)),
            "PersistentVolumeClaim" => drop(parse::<PersistentVolumeClaim>(&file, &document)),
            "Deployment" => drop(parse::<Deployment>(&file, &document)),
            "Service" => drop(parse::<Service>(&file, &document)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 8, "{kinds:?}");
}

fn one<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let (file, document) = documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    parse(&file, &document)
}

#[test]
fn rbac_grants_exactly_what_the_executor_calls() {
    let role: ClusterRole = one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        for group in rule.api_groups.clone().unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(group != "*" && resource != "*" && verb != "*", "wildcard in {rule:?}");
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
    }
    let needed: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        missing.is_empty(),
        "the executor calls what RBAC does not grant: {missing:?}"
    );
    assert!(extra.is_empty(), "RBAC grants what the executor never calls: {extra:?}");

    let binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let account: ServiceAccount = one("ServiceAccount");
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), &subject.name),
        ("ServiceAccount", account.metadata.name.as_ref().unwrap())
    );
}

#[test]
fn the_deployment_runs_locked_down_with_probes_and_limits() {
    let deployment: Deployment = one("Deployment");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "one writer for the SQLite journal");
    assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("homeostat"));
    assert_eq!(pod.security_context.and_then(|s| s.run_as_non_root), Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
    let resources = container.resources.clone().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let path =
        |probe: &Option<k8s_openapi::api::core::v1::Probe>| probe.clone().and_then(|p| p.http_get).and_then(|h| h.path);
    assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&container.liveness_probe).as_deref(), Some("/healthz"));
    // The journal lives on the volume, the only writable path.
    let mounts = container.volume_mounts.clone().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m.mount_path == "/var/lib/homeostat" && m.read_only != Some(true)));
}

#[test]
fn the_configmap_holds_a_valid_config() {
    let map: ConfigMap = one("ConfigMap");
    let text = &map.data.unwrap()["homeostat.yaml"];
    let path = Path::new("deploy/kubernetes/configmap.yaml");
    let config = Config::parse(path, text).unwrap();
    let env = std::collections::HashMap::from([("HOMEOSTAT_WEBHOOK_TOKEN".to_owned(), "t".to_owned())]);
    let credentials = config.validate(path, &env).unwrap();
    assert!(
        credentials.bearer_token.is_some(),
        "listening on 0.0.0.0 must demand a token"
    );
    assert!(config.journal.path.starts_with("/var/lib/homeostat"));
}
