//! Kubernetes objects as the tests of deploy/ read them, whoever rendered
//! them (`kubectl kustomize` in tests/manifests.rs, the Helm chart in
//! tests/helm.rs): finding and parsing objects, homeostat's pod, its mounts
//! and the config it runs, the RBAC it is granted, the ports its
//! NetworkPolicy lets out, and the ServiceMonitor that scrapes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use homeostat_adapters::executor::kubernetes::API_CALLS;
use homeostat_core::config::Config;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service, Volume};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

/// This repository.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// deploy/kubernetes: the kustomize base, with its components in folders.
pub fn base_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// Objects, each labelled for messages with its file or `Kind/name`.
pub type Documents = Vec<(String, Value)>;

pub fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A rendered object, labelled `Kind/name` for messages.
pub fn labelled(document: Value) -> (String, Value) {
    let kind = document["kind"].as_str().unwrap_or("(no kind)");
    let name = document["metadata"]["name"].as_str().unwrap_or("(no name)");
    (format!("{kind}/{name}"), document)
}

/// `document` as a `T`, failing with its `label`.
pub fn parse<T: DeserializeOwned>(label: &str, document: &Value) -> T {
    serde_yaml::from_value(document.clone()).unwrap_or_else(|e| panic!("{label}: {e}"))
}

// ---- objects by kind ----

/// The one object of `kind` in `documents`, with its label.
pub fn one_document<'a>(documents: &'a [(String, Value)], kind: &str) -> &'a (String, Value) {
    let mut of_kind = documents.iter().filter(|(_, d)| d["kind"] == kind);
    let document = of_kind.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(of_kind.next().is_none(), "more than one {kind}");
    document
}

/// The one object of `kind` in `documents`, parsed.
pub fn one_in<T: DeserializeOwned>(documents: &[(String, Value)], kind: &str) -> T {
    let (label, document) = one_document(documents, kind);
    parse(label, document)
}

/// Every object of `kind` in `documents`, parsed, in their order.
pub fn all_in<T: DeserializeOwned>(documents: &[(String, Value)], kind: &str) -> Vec<T> {
    documents
        .iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(label, d)| parse(label, d))
        .collect()
}

// ---- the pod ----

/// The pod of the one Deployment in `documents`, and its one container.
pub fn pod_in(documents: &[(String, Value)]) -> (PodSpec, Container) {
    let deployment: Deployment = one_in(documents, "Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let [container] = &pod.containers[..] else {
        panic!("one container expected")
    };
    let container = container.clone();
    (pod, container)
}

/// The name of the Secret `volume` holds, if it is a Secret's volume.
pub fn volume_secret(volume: &Volume) -> Option<&str> {
    volume.secret.as_ref().and_then(|s| s.secret_name.as_deref())
}

/// Where the container mounts the volume of `pod` that `is_it` picks.
pub fn mount_of(pod: &PodSpec, container: &Container, is_it: impl Fn(&Volume) -> bool) -> PathBuf {
    let volume = pod.volumes.iter().flatten().find(|v| is_it(v)).expect("no such volume");
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap_or_else(|| panic!("volume {} is not mounted", volume.name));
    PathBuf::from(&mount.mount_path)
}

/// The Secret the pod mounts at `dir`.
pub fn secret_mounted_at(pod: &PodSpec, container: &Container, dir: &Path) -> String {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
    let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    volume_secret(volume)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} is not a Secret's volume", dir.display()))
}

// ---- the config the pod runs ----

/// The config the pod of `documents` runs, as it reads it: the file its
/// `--config` names, from the ConfigMap mounted there, with paths anchored
/// as the pod sees them; and the ConfigMap's data.
pub fn pod_config_in(documents: &[(String, Value)]) -> (PathBuf, Config, BTreeMap<String, String>) {
    let map: ConfigMap = one_in(documents, "ConfigMap");
    let (pod, container) = pod_in(documents);
    let args = container.args.clone().unwrap();
    let config_path = PathBuf::from(&args[args.iter().position(|a| a == "--config").unwrap() + 1]);
    let mounted = mount_of(&pod, &container, |v| {
        v.config_map.as_ref().map(|c| &c.name) == map.metadata.name.as_ref()
    });
    assert_eq!(
        config_path.parent(),
        Some(mounted.as_path()),
        "--config is not in the ConfigMap's mount"
    );
    let data = map.data.unwrap();
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let mut config = Config::parse(&config_path, &data[key]).unwrap_or_else(|e| panic!("{e}"));
    config.anchor_paths(&mounted);
    (config_path, config, data)
}

/// A secret file a config names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFile {
    /// The file of one of `auth.tokens`.
    Token,
    /// The file of `journal.password`.
    JournalPassword,
}

/// Stands in for the Secrets the pod mounts, to validate `config` outside
/// it: points every secret file `config` names (each token's, then the
/// journal password's) at a file in `copies` holding something. Each file
/// is the key (its name) of the Secret `secret_of` names, given the file as
/// the config names it. Returns the keys read, by Secret.
pub fn stand_in_for_secrets(
    config: &mut Config,
    copies: &Path,
    mut secret_of: impl FnMut(&Path, SecretFile) -> String,
) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stand_in = |file: &mut PathBuf, what: SecretFile| {
        let secret = secret_of(file, what);
        let key = file.file_name().unwrap().to_str().unwrap().to_owned();
        let copy = copies.join(format!("{secret}-{key}"));
        std::fs::write(&copy, format!("{key}-of-{secret}")).unwrap();
        *file = copy;
        keys.entry(secret).or_default().push(key);
    };
    let auth = config.auth.as_mut().expect("listening on 0.0.0.0 needs tokens");
    for named in &mut auth.tokens {
        stand_in(named.token.file.as_mut().expect("tokens are files"), SecretFile::Token);
    }
    if let Some(password) = config.journal.password.as_mut() {
        let file = password.file.as_mut().expect("journal.password is a file");
        stand_in(file, SecretFile::JournalPassword);
    }
    keys
}

/// Keys by Secret, as [`stand_in_for_secrets`] returns them, from `secrets`
/// and their keys.
pub fn keys_by_secret(secrets: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    secrets
        .iter()
        .map(|(secret, keys)| (secret.to_string(), keys.iter().map(|k| k.to_string()).collect()))
        .collect()
}

// ---- RBAC ----

/// What `rules` grant, as (API group, resource, verb); no wildcards, names or URLs.
pub fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(group != "*" && resource != "*" && verb != "*", "wildcard in {rule:?}");
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted
}

/// The Kubernetes executor's API calls, as [`granted`] lists them.
pub fn needed() -> BTreeSet<(String, String, String)> {
    API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

// ---- network ----

/// A port as a NetworkPolicy names it: its number or its name.
pub fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// The ports `policy`'s egress rules let out.
pub fn egress_ports(policy: &NetworkPolicy) -> BTreeSet<String> {
    let egress = policy.spec.as_ref().unwrap().egress.as_ref().unwrap();
    egress
        .iter()
        .flat_map(|rule| rule.ports.as_ref().unwrap())
        .filter_map(|p| p.port.as_ref().map(port_text))
        .collect()
}

// ---- monitoring ----

/// Asserts that the ServiceMonitor `monitor` selects `service` and scrapes
/// `/metrics` on one of its ports.
pub fn assert_monitors(monitor: &Value, service: &Service) {
    let labels = service.metadata.labels.clone().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(labels.get(k.as_str().unwrap()).map(String::as_str), v.as_str());
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    let ports = service.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert!(ports.iter().any(|p| p.name.as_deref() == endpoint["port"].as_str()));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
}

/// The rule of the first group of `rules` (a Prometheus rules file) that
/// raises `alert`.
pub fn alert_rule<'a>(rules: &'a Value, alert: &str) -> &'a Value {
    rules["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no rule raises {alert}"))
}
