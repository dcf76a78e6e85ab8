//! deploy/kubernetes, as `kubectl kustomize` renders it: every object (the
//! components' too) parses into its Kubernetes type; the base runs two
//! replicas on the PostgreSQL journal, rolling, spread over nodes, with a
//! disruption budget, locked down, on the config kustomize generates, which
//! acts in dry run with the playbook, tokens and journal password the pod
//! mounts; the sqlite component makes that one replica on a volume, with
//! the same config but for the journal; the RBAC rules grant exactly the API
//! calls the Kubernetes executor makes, nothing broader; the NetworkPolicy
//! lets through what the config reaches; the ServiceMonitor scrapes the job
//! homeostat's own rules watch, and the PrometheusRule holds those rules.
//!
//! deploy/kubernetes/demo: the demo services' manifests parse, probe the
//! right ports, and agree with the Prometheus scrape snippet the rules rely on.
//!
//! deploy/compose: the Compose file runs the pinned images, mounts what its
//! configurations name, and homeostat's, Prometheus' and Alertmanager's
//! configurations pass their own validators.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::k8s::{
    alert_rule, assert_monitors, base_dir, egress_ports, granted, keys_by_secret, labelled, mount_of, needed, one_in,
    parse, pod_config_in, pod_in, port_text, read_yaml, root, stand_in_for_secrets, volume_secret, Documents,
    SecretFile,
};
use homeostat_core::action::Backend;
use homeostat_core::config::{Config, Credentials};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_yaml::Value;

fn demo_dir() -> PathBuf {
    root().join("deploy/kubernetes/demo")
}

fn compose_dir() -> PathBuf {
    root().join("deploy/compose")
}

/// Every document of every resource the kustomization in `dir` lists, and
/// the ConfigMaps its generator makes.
fn documents_in(dir: &Path) -> Vec<(String, Value)> {
    let kustomization = read_yaml(&dir.join("kustomization.yaml"));
    let mut documents = Vec::new();
    for file in kustomization["resources"].as_sequence().unwrap() {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            documents.push((file.to_owned(), Value::deserialize(document).unwrap()));
        }
    }
    let generators = kustomization["configMapGenerator"].as_sequence();
    for generator in generators.map(|g| g.as_slice()).unwrap_or_default() {
        let data = generator["files"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|file| {
                let file = file.as_str().unwrap();
                (file.to_owned(), std::fs::read_to_string(dir.join(file)).unwrap())
            })
            .collect();
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: generator["name"].as_str().map(str::to_owned),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        documents.push(("configMapGenerator".to_owned(), serde_yaml::to_value(map).unwrap()));
    }
    documents
}

/// deploy/kubernetes with `components` switched on, as `kubectl kustomize`
/// renders it (once per set of components).
fn rendered(components: &[&str]) -> Documents {
    static RENDERED: Mutex<BTreeMap<Vec<String>, Documents>> = Mutex::new(BTreeMap::new());
    let key = components.iter().map(|c| (*c).to_owned()).collect();
    let mut rendered = RENDERED.lock().unwrap_or_else(|e| e.into_inner());
    rendered.entry(key).or_insert_with(|| render(components)).clone()
}

fn render(components: &[&str]) -> Documents {
    let (program, verb) = [("kubectl", "kustomize"), ("kustomize", "build")]
        .into_iter()
        .find_map(|(program, verb)| {
            homeostat_demo::stack::find_program(&[program], program)
                .ok()
                .map(|p| (p, verb))
        })
        .expect("neither kubectl nor kustomize is on PATH: these tests render deploy/kubernetes with it");
    // An overlay of the base with the components on. kustomize takes no
    // absolute path there: it names them relative to itself.
    let overlay = tempfile::tempdir().unwrap();
    let here = overlay.path().canonicalize().unwrap();
    let up = "../".repeat(here.components().count() - 1);
    let base = format!(
        "{up}{}",
        base_dir().canonicalize().unwrap().strip_prefix("/").unwrap().display()
    );
    let mut kustomization = serde_yaml::Mapping::new();
    kustomization.insert("apiVersion".into(), "kustomize.config.k8s.io/v1beta1".into());
    kustomization.insert("kind".into(), "Kustomization".into());
    kustomization.insert("resources".into(), Value::Sequence(vec![base.as_str().into()]));
    let components = components.iter().map(|c| format!("{base}/{c}").into()).collect();
    kustomization.insert("components".into(), Value::Sequence(components));
    let text = serde_yaml::to_string(&kustomization).unwrap();
    std::fs::write(here.join("kustomization.yaml"), text).unwrap();
    let output = Command::new(&program).arg(verb).arg(&here).output().unwrap();
    assert!(
        output.status.success(),
        "{} {verb} failed:\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| labelled(Value::deserialize(document).unwrap()))
        .collect()
}

/// deploy/kubernetes with its monitoring component, as rendered.
fn documents() -> Vec<(String, Value)> {
    let base = read_yaml(&base_dir().join("kustomization.yaml"));
    assert!(
        base["components"].is_null(),
        "the monitoring component is off by default"
    );
    let text = std::fs::read_to_string(base_dir().join("kustomization.yaml")).unwrap();
    assert!(
        text.contains("\n# components: [monitoring]\n"),
        "the line that switches it on"
    );
    let component = read_yaml(&base_dir().join("monitoring/kustomization.yaml"));
    assert_eq!(component["kind"].as_str(), Some("Component"));
    rendered(&["monitoring"])
}

#[test]
fn every_manifest_is_a_valid_object_of_its_kind() {
    let mut kinds = BTreeSet::new();
    // With the monitoring component; with the sqlite one; with all three.
    let renderings = [
        documents(),
        rendered(&["sqlite"]),
        rendered(&["monitoring", "namespaced", "sqlite"]),
    ];
    for (file, document) in renderings.into_iter().flatten() {
        let kind = document["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"))
            .to_owned();
        match kind.as_str() {
            "Namespace" => drop(parse::<Namespace>(&file, &document)),
            "ServiceAccount" => drop(parse::<ServiceAccount>(&file, &document)),
            "ClusterRole" => drop(parse::<ClusterRole>(&file, &document)),
            "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(&file, &document)),
            "Role" => drop(parse::<Role>(&file, &document)),
            "RoleBinding" => drop(parse::<RoleBinding>(&file, &document)),
            "PodDisruptionBudget" => drop(parse::<PodDisruptionBudget>(&file, &document)),
            "ConfigMap" => drop(parse::<ConfigMap>(&file, &document)),
            "PersistentVolumeClaim" => drop(parse::<PersistentVolumeClaim>(&file, &document)),
            "Deployment" => drop(parse::<Deployment>(&file, &document)),
            "Service" => drop(parse::<Service>(&file, &document)),
            "NetworkPolicy" => drop(parse::<NetworkPolicy>(&file, &document)),
            // The Prometheus Operator's kinds, which k8s-openapi does not
            // have: checked field by field below.
            "ServiceMonitor" | "PrometheusRule" => {
                assert_eq!(
                    document["apiVersion"].as_str(),
                    Some("monitoring.coreos.com/v1"),
                    "{file}"
                );
                drop(parse::<ObjectMeta>(&file, &document["metadata"]));
            }
            other => panic!("{file}: unexpected kind {other}"),
        }
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 14, "{kinds:?}");
}

/// The one object of `kind` in [`documents`].
fn one<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    one_in(&documents(), kind)
}

#[test]
fn rbac_grants_exactly_what_the_executor_calls() {
    let role: ClusterRole = one("ClusterRole");
    let granted = granted(role.rules.as_deref().unwrap_or_default());
    let needed = needed();
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

/// The namespaced component: a Role (in a namespace homeostat acts in) with
/// the namespaced calls and a ClusterRole with the cluster-scoped one, bound
/// to homeostat's service account, together exactly the executor's calls;
/// and it deletes the cluster-wide role and its binding.
#[test]
fn the_namespaced_rbac_grants_exactly_what_the_executor_calls_and_replaces_the_cluster_role() {
    let component = base_dir().join("namespaced");
    let documents = documents_in(&component);
    let find = |kind: &str| {
        documents
            .iter()
            .find(|(_, d)| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (file, role) = find("Role");
    let role: Role = parse(file, role);
    let (file, nodes) = find("ClusterRole");
    let nodes: ClusterRole = parse(file, nodes);
    let in_namespace = granted(role.rules.as_deref().unwrap_or_default());
    let cluster_wide = granted(nodes.rules.as_deref().unwrap_or_default());
    assert!(
        cluster_wide.iter().all(|(_, resource, _)| resource == "nodes"),
        "{cluster_wide:?}"
    );
    assert!(
        in_namespace.iter().all(|(_, resource, _)| resource != "nodes"),
        "{in_namespace:?}"
    );
    let all: BTreeSet<_> = in_namespace.union(&cluster_wide).cloned().collect();
    assert_eq!(all, needed());
    assert_ne!(
        role.metadata.namespace.as_deref(),
        Some("homeostat"),
        "a namespace homeostat acts in"
    );

    let (file, binding) = find("RoleBinding");
    let binding: RoleBinding = parse(file, binding);
    assert_eq!(binding.metadata.namespace, role.metadata.namespace);
    assert_eq!(
        (binding.role_ref.kind.as_str(), &binding.role_ref.name),
        ("Role", role.metadata.name.as_ref().unwrap())
    );
    let (file, node_binding) = find("ClusterRoleBinding");
    let node_binding: ClusterRoleBinding = parse(file, node_binding);
    assert_eq!(node_binding.role_ref.name, nodes.metadata.name.clone().unwrap());
    let account: ServiceAccount = one("ServiceAccount");
    for subjects in [binding.subjects.unwrap(), node_binding.subjects.unwrap()] {
        assert_eq!(subjects[0].name, account.metadata.name.clone().unwrap());
        assert_eq!(subjects[0].namespace, account.metadata.namespace);
    }

    // The cluster-wide role and its binding are deleted by name.
    let base_role: ClusterRole = one("ClusterRole");
    let base_binding: ClusterRoleBinding = one("ClusterRoleBinding");
    let kustomization = read_yaml(&component.join("kustomization.yaml"));
    let deleted: BTreeSet<(String, String)> = kustomization["patches"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| serde_yaml::from_str::<Value>(p["patch"].as_str().unwrap()).unwrap())
        .inspect(|patch| assert_eq!(patch["$patch"].as_str(), Some("delete"), "{patch:?}"))
        .map(|patch| {
            let field = |f: &str| patch[f].as_str().unwrap().to_owned();
            (field("kind"), patch["metadata"]["name"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            ("ClusterRole".to_owned(), base_role.metadata.name.unwrap()),
            ("ClusterRoleBinding".to_owned(), base_binding.metadata.name.unwrap()),
        ])
    );
    let text = std::fs::read_to_string(base_dir().join("kustomization.yaml")).unwrap();
    assert!(
        text.contains("\n# components: [namespaced]\n"),
        "the line that switches it on"
    );
}

/// The Deployment's pod and its one container, in [`documents`].
fn pod() -> (PodSpec, Container) {
    pod_in(&documents())
}

#[test]
fn the_deployment_runs_locked_down_with_probes_and_limits() {
    let deployment: Deployment = one("Deployment");
    let spec = deployment.spec.unwrap();
    assert_eq!(
        spec.replicas,
        Some(2),
        "a leader and a follower on the PostgreSQL journal"
    );
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    // A rollout starts a new pod before it stops an old one: two pods take
    // webhooks throughout, and one is always there to take the lease.
    let rolling = strategy.rolling_update.unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    let (pod, container) = pod();
    assert_eq!(pod.service_account_name.as_deref(), Some("homeostat"));
    assert_eq!(pod.security_context.and_then(|s| s.run_as_non_root), Some(true));
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
    // A slow start (the journal's integrity check) is not a failed liveness probe.
    assert_eq!(path(&container.startup_probe).as_deref(), Some("/healthz"));
    // The journal is in PostgreSQL: nothing is written in the pod.
    let mounts = container.volume_mounts.clone().unwrap();
    assert!(mounts.iter().all(|m| m.read_only == Some(true)), "{mounts:?}");
    let volumes = pod.volumes.clone().unwrap();
    for mount in &mounts {
        assert!(volumes.iter().any(|v| v.name == mount.name), "no volume for {mount:?}");
    }
}

/// Whether `selector` (labels only) selects a pod with `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "{selector:?}");
    let wanted = selector.match_labels.clone().unwrap_or_default();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A drain leaves one replica running, to take the lease; the scheduler
/// puts the replicas on different nodes where it can.
#[test]
fn the_replicas_spread_over_nodes_and_a_drain_leaves_one_running() {
    let deployment: Deployment = one("Deployment");
    let spec = deployment.spec.unwrap();
    let labels = spec.template.metadata.clone().unwrap().labels.unwrap();
    let budget: PodDisruptionBudget = one("PodDisruptionBudget");
    assert_eq!(budget.metadata.namespace, deployment.metadata.namespace);
    let budget = budget.spec.unwrap();
    assert!(
        selects(budget.selector.as_ref().unwrap(), &labels),
        "the budget does not select homeostat's pods"
    );
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert!(budget.max_unavailable.is_none());

    let anti = spec.template.spec.unwrap().affinity.and_then(|a| a.pod_anti_affinity);
    let anti = anti.expect("no podAntiAffinity");
    assert!(
        anti.required_during_scheduling_ignored_during_execution.is_none(),
        "preferred only: a one-node cluster runs both replicas too"
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap_or_default();
    assert!(
        preferred.iter().any(|term| {
            let term = &term.pod_affinity_term;
            term.topology_key == "kubernetes.io/hostname"
                && term.label_selector.as_ref().is_some_and(|s| selects(s, &labels))
        }),
        "{preferred:?}"
    );
}

/// The config the pod runs, as it reads it: the file its `--config` names,
/// from the generated ConfigMap mounted there, with paths anchored as the
/// pod sees them.
fn pod_config() -> (PathBuf, Config, BTreeMap<String, String>) {
    pod_config_in(&documents())
}

/// Validates `config` as the pod runs it: each secret file it names is a
/// key of a Secret the pod mounts there (the tokens of `homeostat-tokens`,
/// the journal's password of `homeostat-postgres`), here a file holding
/// something, and the playbook is the repository's copy. Returns the
/// credentials and the keys read, by Secret.
fn validate_as_the_pod(
    path: &Path,
    mut config: Config,
    documents: &[(String, Value)],
) -> (Credentials, BTreeMap<String, Vec<String>>) {
    let (pod, container) = pod_in(documents);
    let secrets = tempfile::tempdir().unwrap();
    let keys = stand_in_for_secrets(&mut config, secrets.path(), |file, what| {
        let secret = match what {
            SecretFile::Token => "homeostat-tokens",
            SecretFile::JournalPassword => "homeostat-postgres",
        };
        let mounted = mount_of(&pod, &container, |v| volume_secret(v) == Some(secret));
        assert_eq!(file.parent(), Some(mounted.as_path()), "{}", file.display());
        secret.to_owned()
    });
    let actions = config.actions.as_mut().expect("the config acts");
    actions.playbook = base_dir().join(actions.playbook.file_name().unwrap());
    let credentials = config.validate(path, &std::collections::HashMap::<String, String>::new());
    (credentials.unwrap_or_else(|e| panic!("{e}")), keys)
}

#[test]
fn the_config_acts_in_dry_run_with_the_playbook_tokens_and_journal_password_the_pod_mounts() {
    let (path, config, data) = pod_config();
    let actions = config.actions.as_ref().expect("the config acts");
    assert_eq!(actions.backend, Backend::Kubernetes);
    assert!(actions.dry_run, "it starts in dry run");
    // The playbook is the ConfigMap's, which is the repository's.
    assert_eq!(actions.playbook.parent(), path.parent());
    let playbook = &data[actions.playbook.file_name().unwrap().to_str().unwrap()];
    let rules = std::fs::read_to_string(root().join("rules/playbook.yml")).unwrap();
    assert!(
        *playbook == rules,
        "deploy/kubernetes/playbook.yml differs from rules/playbook.yml: copy it over"
    );
    assert!(
        actions.guard.deny_namespaces.contains(&"homeostat".to_owned()),
        "never acts on itself"
    );

    // The journal is PostgreSQL's, named by a URL without a password.
    let url = reqwest::Url::parse(config.journal.url.as_deref().expect("journal.url")).unwrap();
    assert_eq!(
        (url.scheme(), url.username(), url.password()),
        ("postgres", "homeostat", None)
    );
    assert_eq!(url.path(), "/homeostat");

    // Every token and the password are files of the Secrets the pod
    // mounts, under their keys, and the kustomization says how to make them.
    let (credentials, keys) = validate_as_the_pod(&path, config, &documents());
    assert_eq!(credentials.tokens.len(), 2);
    assert_eq!(
        keys,
        keys_by_secret(&[
            ("homeostat-postgres", &["password"]),
            ("homeostat-tokens", &["alertmanager", "operator"]),
        ])
    );
    let kustomization = std::fs::read_to_string(base_dir().join("kustomization.yaml")).unwrap();
    for (secret, keys) in &keys {
        assert!(
            kustomization.contains(&format!("create secret generic {secret} ")),
            "how to make {secret}"
        );
        for key in keys {
            assert!(
                kustomization.contains(&format!("--from-literal={key}=")),
                "how to make {key}"
            );
        }
    }
}

#[test]
fn the_network_policy_lets_through_what_the_config_reaches() {
    let (_, config, _) = pod_config();
    let (_, container) = pod();
    let policy: NetworkPolicy = one("NetworkPolicy");
    let spec = policy.spec.unwrap();
    let deployment: Deployment = one("Deployment");
    let labels = deployment.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for (k, v) in spec.pod_selector.clone().unwrap().match_labels.unwrap() {
        assert_eq!(labels.get(&k), Some(&v), "the policy does not select homeostat's pod");
    }
    let ports = |rules: Vec<Vec<NetworkPolicyPort>>| -> BTreeSet<String> {
        rules
            .into_iter()
            .flatten()
            .filter_map(|p| p.port.as_ref().map(port_text))
            .collect()
    };
    let ingress = ports(spec.ingress.unwrap().into_iter().map(|r| r.ports.unwrap()).collect());
    let http = container
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.container_port == 9095)
        .unwrap();
    assert_eq!(ingress, BTreeSet::from([http.name.unwrap()]));
    assert_eq!(config.server.listen.port(), 9095);
    let egress = egress_ports(&one("NetworkPolicy"));
    let actions = config.actions.unwrap();
    for url in [&actions.prometheus_url, &actions.alertmanager_url] {
        let url = reqwest::Url::parse(url.as_deref().unwrap()).unwrap();
        let port = url.port_or_known_default().unwrap().to_string();
        assert!(egress.contains(&port), "{url}: port {port} is not let out");
    }
    for port in ["53", "443"] {
        assert!(egress.contains(port), "port {port} is not let out");
    }
    let journal = reqwest::Url::parse(config.journal.url.as_deref().unwrap()).unwrap();
    let port = journal.port().unwrap_or(5432).to_string();
    assert_eq!(port, "5432");
    assert!(egress.contains(&port), "the journal's port {port} is not let out");
}

/// The sqlite component: one replica, Recreate, the journal on the
/// PersistentVolumeClaim it adds, no disruption budget (with one replica it
/// would block every node drain), nothing of PostgreSQL, and the base's
/// config but for the journal.
#[test]
fn the_sqlite_component_runs_one_replica_on_its_volume_with_the_bases_config() {
    let component = read_yaml(&base_dir().join("sqlite/kustomization.yaml"));
    assert_eq!(component["kind"].as_str(), Some("Component"));
    let text = std::fs::read_to_string(base_dir().join("kustomization.yaml")).unwrap();
    assert!(
        text.contains("\n# components: [sqlite]\n"),
        "the line that switches it on"
    );
    let documents = rendered(&["sqlite"]);
    let deployment: Deployment = one_in(&documents, "Deployment");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(1), "one writer for the SQLite journal");
    let strategy = spec.strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("Recreate"));
    assert!(strategy.rolling_update.is_none(), "refused beside Recreate");
    assert!(
        documents.iter().all(|(_, d)| d["kind"] != "PodDisruptionBudget"),
        "a budget of one pod with one replica blocks every node drain"
    );

    // The journal is in the claim's volume, the only writable mount.
    let (path, config, data) = pod_config_in(&documents);
    let (pod, container) = pod_in(&documents);
    assert!(config.journal.url.is_none() && config.journal.password.is_none());
    let claim: PersistentVolumeClaim = one_in(&documents, "PersistentVolumeClaim");
    let volume = mount_of(&pod, &container, |v| {
        v.persistent_volume_claim.as_ref().map(|c| &c.claim_name) == claim.metadata.name.as_ref()
    });
    assert_eq!(config.journal.path.parent(), Some(volume.as_path()));
    let mounts = container.volume_mounts.clone().unwrap();
    for mount in &mounts {
        let writable = mount.read_only != Some(true);
        assert_eq!(writable, Path::new(&mount.mount_path) == volume, "{mount:?}");
    }
    // Nothing of PostgreSQL: its Secret (which need not exist), its port.
    let (_, keys) = validate_as_the_pod(&path, config.clone(), &documents);
    assert_eq!(keys.into_keys().collect::<Vec<_>>(), ["homeostat-tokens"]);
    let volumes = pod.volumes.clone().unwrap();
    for mount in &mounts {
        assert!(volumes.iter().any(|v| v.name == mount.name), "no volume for {mount:?}");
    }
    assert!(
        volumes.iter().all(|v| volume_secret(v) != Some("homeostat-postgres")),
        "{volumes:?}"
    );
    let egress = egress_ports(&one_in(&documents, "NetworkPolicy"));
    assert!(!egress.contains("5432") && egress.contains("443"), "{egress:?}");

    // The component's homeostat.yaml, which is the base's but for the
    // journal, beside the base's playbook.
    let key = path.file_name().unwrap().to_str().unwrap();
    let own = std::fs::read_to_string(base_dir().join("sqlite").join(key)).unwrap();
    assert!(data[key] == own, "the ConfigMap does not hold sqlite/{key}");
    let (_, base_config, base_data) = pod_config();
    assert_eq!(data.keys().collect::<Vec<_>>(), base_data.keys().collect::<Vec<_>>());
    assert!(data["playbook.yml"] == base_data["playbook.yml"]);
    let without_journal = |text: &str| {
        let mut config: Value = serde_yaml::from_str(text).unwrap();
        config
            .as_mapping_mut()
            .unwrap()
            .remove("journal")
            .expect("a journal section");
        config
    };
    assert!(
        without_journal(&data[key]) == without_journal(&base_data[key]),
        "sqlite/{key} differs from {key} beyond the journal: copy it over"
    );
    assert!(config.actions.unwrap().dry_run && base_config.actions.unwrap().dry_run);
}

#[test]
fn the_service_monitor_scrapes_the_job_homeostats_rules_watch_and_the_rule_is_the_rules_file() {
    let service: Service = one("Service");
    let monitor: Value = one("ServiceMonitor");
    assert_monitors(&monitor, &service);

    // The operator names the job after the Service; the rules watch that job.
    let rules = read_yaml(&root().join("rules/homeostat.rules.yml"));
    let job = format!("up{{job=\"{}\"}}", service.metadata.name.unwrap());
    let down = alert_rule(&rules, "HomeostatDown");
    assert!(down["expr"].as_str().unwrap().contains(&job), "{:?}", down["expr"]);
    let rule: Value = one("PrometheusRule");
    assert!(
        rule["spec"]["groups"] == rules["groups"],
        "monitoring/prometheusrule.yaml differs from rules/homeostat.rules.yml"
    );
    for object in [&monitor, &rule] {
        assert_eq!(
            object["metadata"]["labels"]["release"].as_str(),
            Some("kube-prometheus-stack")
        );
    }
}

// ---- deploy/kubernetes/demo ----

/// The demo services' Deployments and Services, by name.
fn demo_objects() -> (BTreeMap<String, Deployment>, BTreeMap<String, Service>) {
    let (mut deployments, mut services) = (BTreeMap::new(), BTreeMap::new());
    let mut namespaces = Vec::new();
    for (file, document) in documents_in(&demo_dir()) {
        match document["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind")) {
            "Namespace" => namespaces.push(parse::<Namespace>(&file, &document)),
            "Deployment" => {
                let d: Deployment = parse(&file, &document);
                deployments.insert(d.metadata.name.clone().unwrap(), d);
            }
            "Service" => {
                let s: Service = parse(&file, &document);
                services.insert(s.metadata.name.clone().unwrap(), s);
            }
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
    assert_eq!(namespaces.len(), 1);
    assert_eq!(namespaces[0].metadata.name.as_deref(), Some("homeostat-demo"));
    let names: Vec<&str> = deployments.keys().map(String::as_str).collect();
    assert_eq!(names, ["service-a", "service-b"]);
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, ["service-a", "service-b"]);
    (deployments, services)
}

/// The pod label the scrape snippet takes the `service` label from.
const SERVICE_POD_LABEL: &str = "demo.homeostat.io/service";

#[test]
fn the_demo_deployments_run_the_images_with_probes_on_both_ports_and_a_memory_limit() {
    let (deployments, services) = demo_objects();
    let kustomization = read_yaml(&demo_dir().join("kustomization.yaml"));
    for (name, deployment) in deployments {
        assert_eq!(
            deployment.metadata.namespace.as_deref(),
            kustomization["namespace"].as_str()
        );
        let spec = deployment.spec.unwrap();
        let template_labels = spec.template.metadata.clone().unwrap().labels.unwrap();
        let service = &template_labels[SERVICE_POD_LABEL];
        assert_eq!(service, &name.replace('-', "_"), "{name}: {SERVICE_POD_LABEL}");
        for (k, v) in spec.selector.match_labels.clone().unwrap() {
            assert_eq!(
                template_labels.get(&k),
                Some(&v),
                "{name}: the selector does not select the pods"
            );
        }
        let annotations = spec.template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["prometheus.io/port"], "8080", "{name}");

        let pod = spec.template.spec.unwrap();
        let [container] = &pod.containers[..] else {
            panic!("{name}: one container expected")
        };
        assert_eq!(
            container.image.as_deref(),
            Some(format!("homeostat-demo/{service}:1.0.0").as_str())
        );
        assert_eq!(
            container.image_pull_policy.as_deref(),
            Some("IfNotPresent"),
            "{name}: images are not pulled"
        );
        let ports: BTreeMap<String, i32> = container
            .ports
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            BTreeMap::from([("http".into(), 8080), ("admin".into(), 8081)]),
            "{name}"
        );
        let probe = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
            let get = probe.clone().and_then(|p| p.http_get).unwrap();
            (get.path.unwrap(), get.port)
        };
        // Ready while the main port answers; alive while the admin port does,
        // so a hang is left to homeostat.
        assert_eq!(
            probe(&container.readiness_probe),
            ("/healthz".to_owned(), IntOrString::String("http".into()))
        );
        assert_eq!(
            probe(&container.liveness_probe),
            ("/healthz".to_owned(), IntOrString::String("admin".into()))
        );
        let resources = container.resources.clone().unwrap();
        assert!(resources.requests.is_some(), "{name}: no requests");
        assert_eq!(resources.limits.unwrap()["memory"].0, "256Mi", "{name}");

        let svc = services[&name].spec.clone().unwrap();
        let selector = svc.selector.unwrap();
        for (k, v) in &selector {
            assert_eq!(
                template_labels.get(k),
                Some(v),
                "Service {name} does not select its pods"
            );
        }
        let svc_ports: BTreeMap<String, (i32, IntOrString)> = svc
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), (p.port, p.target_port.unwrap())))
            .collect();
        assert_eq!(
            svc_ports["http"],
            (8080, IntOrString::String("http".into())),
            "Service {name}"
        );
        assert_eq!(
            svc_ports["admin"],
            (8081, IntOrString::String("admin".into())),
            "Service {name}"
        );
    }
}

#[test]
fn service_a_reaches_service_b_through_its_kubernetes_service() {
    let (deployments, services) = demo_objects();
    let pod = deployments["service-a"].spec.clone().unwrap().template.spec.unwrap();
    let env = pod.containers[0].env.clone().unwrap();
    let url = env
        .iter()
        .find(|e| e.name == "SERVICE_B_URL")
        .and_then(|e| e.value.clone())
        .expect("service_a has SERVICE_B_URL");
    let url = reqwest::Url::parse(&url).unwrap();
    let host = url.host_str().unwrap();
    let service = &services["service-b"];
    let expected = format!(
        "{}.{}.svc",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap()
    );
    assert_eq!(host, expected);
    let ports = service.spec.clone().unwrap().ports.unwrap();
    assert!(
        ports
            .iter()
            .any(|p| Some(p.port as u16) == url.port() && p.name.as_deref() == Some("http")),
        "{url} is not service-b's http port"
    );
}

/// Prometheus' relabelling of a pod label name into a meta label.
fn pod_label_meta(label: &str) -> String {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{sanitized}")
}

#[test]
fn the_demo_scrape_snippet_labels_targets_as_the_rules_and_homeostat_expect() {
    let snippet = read_yaml(&demo_dir().join("prometheus-scrape.snippet.yml"));
    let (deployments, _) = demo_objects();
    let jobs = snippet["scrape_configs"].as_sequence().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["job_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["services", "services-admin"]);
    for (job, port) in jobs.iter().zip(["http", "admin"]) {
        let name = job["job_name"].as_str().unwrap();
        let relabels = job["relabel_configs"].as_sequence().unwrap();
        let targets: BTreeSet<&str> = relabels.iter().filter_map(|r| r["target_label"].as_str()).collect();
        for label in ["service", "namespace", "deployment", "pod", "container"] {
            assert!(targets.contains(label), "{name}: no relabelling sets `{label}`");
        }
        // `service` comes from the pod label the Deployments set.
        let service = relabels.iter().find(|r| r["target_label"] == "service").unwrap();
        assert_eq!(
            service["source_labels"][0].as_str(),
            Some(pod_label_meta(SERVICE_POD_LABEL).as_str())
        );
        // The job keeps the container port the Deployments name for it.
        let keep_port = relabels
            .iter()
            .find(|r| r["action"] == "keep" && r["source_labels"][0] == "__meta_kubernetes_pod_container_port_name")
            .unwrap_or_else(|| panic!("{name}: keeps no port"));
        assert_eq!(keep_port["regex"].as_str(), Some(port), "{name}");
        for deployment in deployments.values() {
            let pod = deployment.spec.clone().unwrap().template.spec.unwrap();
            let ports = pod.containers[0].ports.clone().unwrap();
            assert!(ports.iter().any(|p| p.name.as_deref() == Some(port)));
        }
    }
}

// ---- deploy/compose ----

fn compose() -> Value {
    read_yaml(&compose_dir().join("docker-compose.yml"))
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => assert!(out.pop(), "{} leaves the root", path.display()),
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A Compose service's bind mounts from this repository: (host path, path in the container).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, PathBuf)> {
    service["volumes"]
        .as_sequence()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            source
                .starts_with('.')
                .then(|| (normalize(&compose_dir().join(source)), PathBuf::from(target)))
        })
        .collect()
}

/// Where a path inside a service's container is in this repository.
fn host_path(service: &Value, inside: &Path) -> PathBuf {
    bind_mounts(service)
        .into_iter()
        .find_map(|(source, target)| inside.strip_prefix(&target).ok().map(|rest| source.join(rest)))
        .map(|p| normalize(&p))
        .unwrap_or_else(|| panic!("{} is not mounted from the repository", inside.display()))
}

/// The value of `--flag=value` or `--flag value` in a service's command.
fn flag(service: &Value, name: &str) -> String {
    let args: Vec<&str> = service["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(name) {
            Some(v) if v.starts_with('=') => Some(v[1..].to_owned()),
            Some("") => args.get(i + 1).map(|v| (*v).to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {name} in {:?}", args))
}

#[test]
fn the_compose_file_runs_the_pinned_images_and_mounts_what_exists() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let images: BTreeMap<&str, &str> = services
        .iter()
        .map(|(k, v)| (k.as_str().unwrap(), v["image"].as_str().unwrap()))
        .collect();
    let homeostat = format!("homeostat:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        images,
        BTreeMap::from([
            ("alertmanager", "prom/alertmanager:v0.27.0"),
            ("grafana", "grafana/grafana:11.1.0"),
            ("homeostat", homeostat.as_str()),
            ("prometheus", "prom/prometheus:v2.53.0"),
            ("service_a", "homeostat-demo/service_a:1.0.0"),
            ("service_b", "homeostat-demo/service_b:1.0.0"),
        ])
    );
    assert_eq!(
        compose["services"]["service_a"]["environment"]["SERVICE_B_URL"].as_str(),
        Some("http://service_b:8080")
    );
    for (name, service) in services {
        for (source, _) in bind_mounts(service) {
            assert!(
                source.exists(),
                "{name:?} mounts {}, which does not exist",
                source.display()
            );
        }
        for port in service["ports"].as_sequence().map(|p| p.as_slice()).unwrap_or_default() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port} beyond loopback"
            );
        }
    }
    // Grafana finds the provisioning, the dashboards where the provider
    // looks, and the URL the datasource reads from the environment.
    let grafana = &compose["services"]["grafana"];
    let provider = read_yaml(&root().join("grafana/provisioning/dashboards/homeostat.yml"));
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap();
    assert_eq!(host_path(grafana, Path::new(path)), root().join("grafana/dashboards"));
    assert_eq!(
        host_path(grafana, Path::new("/etc/grafana/provisioning/datasources")),
        root().join("grafana/provisioning/datasources")
    );
    assert!(grafana["environment"]["PROMETHEUS_URL"].is_string());

    // The bad deploy override: the bad build, remembering the good one for rollback.
    let bad = read_yaml(&compose_dir().join("docker-compose.bad-deploy.yml"));
    let service_b = &bad["services"]["service_b"];
    assert_eq!(service_b["image"].as_str(), Some("homeostat-demo/service_b:2.0.0"));
    assert_eq!(
        service_b["labels"][homeostat_adapters::executor::docker::PREVIOUS_IMAGE_LABEL].as_str(),
        Some(images["service_b"])
    );
}

#[test]
fn the_compose_homeostat_config_is_valid_and_reaches_the_stack() {
    let compose = compose();
    let service = &compose["services"]["homeostat"];
    let inside = flag(service, "--config");
    let path = host_path(service, Path::new(&inside));
    assert_eq!(path, compose_dir().join("homeostat.yaml"));
    let mut config = Config::load(&path).unwrap();
    let actions = config.actions.as_mut().expect("the demo acts");
    assert_eq!(actions.backend, Backend::Docker);
    // The playbook as the container sees it is rules/playbook.yml.
    actions.playbook = host_path(service, &actions.playbook);
    assert_eq!(actions.playbook, root().join("rules/playbook.yml"));
    // The Docker socket it talks to is mounted.
    let socket = (actions.docker.host.clone()).unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    let socket = socket.strip_prefix("unix://").expect("a unix socket");
    let volumes: Vec<&str> = service["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.iter().any(|v| v.split(':').nth(1) == Some(socket)),
        "{socket} is not mounted"
    );
    // Prometheus and Alertmanager are reached by their Compose service names.
    for (url, name) in [
        (&actions.prometheus_url, "prometheus"),
        (&actions.alertmanager_url, "alertmanager"),
    ] {
        let url = reqwest::Url::parse(url.as_deref().unwrap()).unwrap();
        assert!(compose["services"][url.host_str().unwrap()].is_mapping(), "{url}");
        assert_eq!(url.host_str(), Some(name));
    }
    let credentials = config
        .validate(&path, &std::collections::HashMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(credentials.is_empty() && config.server.allow_unauthenticated);
    // The journal is on a named volume, not in the container's layer.
    let journal = config.journal.path.parent().unwrap().to_str().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| !v.starts_with(['.', '/']) && v.split(':').nth(1) == Some(journal)),
        "the journal's directory {journal} is not a volume"
    );

    // Alertmanager posts to homeostat's Compose name and listening port.
    let alertmanager = read_yaml(&compose_dir().join("alertmanager.yml"));
    let webhook = &alertmanager["receivers"][0]["webhook_configs"][0];
    let url = reqwest::Url::parse(webhook["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.host_str(), Some("homeostat"));
    assert_eq!(url.port(), Some(config.server.listen.port()));
    assert_eq!(url.path(), "/api/v1/alerts");
    assert_eq!(webhook["send_resolved"].as_bool(), Some(true));
}

fn check(program: &str, package: &str, args: &[&str], file: &Path) {
    let program = common::require_program(program, package);
    let output = Command::new(&program).args(args).arg(file).output().unwrap();
    assert!(
        output.status.success(),
        "{} {} {} failed:\n{}{}",
        program.display(),
        args.join(" "),
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_compose_prometheus_and_alertmanager_configs_pass_their_validators() {
    let compose = compose();
    let prometheus = &compose["services"]["prometheus"];
    let inside = PathBuf::from(flag(prometheus, "--config.file"));
    let path = host_path(prometheus, &inside);
    assert_eq!(path, compose_dir().join("prometheus.yml"));
    let config = read_yaml(&path);
    // Rule files resolve relative to the config file: to the same files in
    // the container as here, and those are the repository's rules.
    for pattern in config["rule_files"].as_sequence().unwrap() {
        let pattern = Path::new(pattern.as_str().unwrap());
        let here = normalize(&path.parent().unwrap().join(pattern));
        let there = host_path(prometheus, &normalize(&inside.parent().unwrap().join(pattern)));
        assert_eq!(here, there);
        assert_eq!(here.parent().unwrap(), root().join("rules"));
    }
    // Also checks every rule file it names.
    check("promtool", "prometheus", &["check", "config"], &path);
    check(
        "amtool",
        "prometheus-alertmanager",
        &["check-config"],
        &compose_dir().join("alertmanager.yml"),
    );

    // The services' targets are the containers Compose names
    // <project>-<service>-1, labelled with what homeostat acts on.
    let project = compose["name"].as_str().unwrap();
    let mut jobs = BTreeSet::new();
    for job in config["scrape_configs"].as_sequence().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        let port = match name {
            "services" => "8080",
            "services-admin" => "8081",
            _ => continue,
        };
        jobs.insert(name);
        let mut services = BTreeSet::new();
        for group in job["static_configs"].as_sequence().unwrap() {
            let labels = &group["labels"];
            let service = labels["compose_service"].as_str().unwrap();
            assert!(
                compose["services"][service].is_mapping(),
                "{name}: no Compose service {service}"
            );
            assert_eq!(labels["service"].as_str(), Some(service));
            assert_eq!(labels["compose_project"].as_str(), Some(project));
            let container = format!("{project}-{service}-1");
            assert_eq!(labels["container"].as_str(), Some(container.as_str()));
            assert_eq!(
                group["targets"][0].as_str(),
                Some(format!("{container}:{port}").as_str())
            );
            services.insert(service);
        }
        assert_eq!(services, BTreeSet::from(["service_a", "service_b"]), "{name}");
    }
    assert_eq!(jobs, BTreeSet::from(["services", "services-admin"]));
}
