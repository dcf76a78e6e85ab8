//! The workspace's layering, as docs/ARCHITECTURE.md states it, checked on
//! the manifests: which homeostat crate may depend on which, that the core
//! stays free of runtime, database and HTTP crates, and that the service
//! build carries none of the lab's or the demo's tooling.
//!
//! Nothing is compiled: `cargo metadata` and `cargo tree` only read the
//! manifests and the lock file. Each check lists every violation at once.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
const DOC: &str = "docs/ARCHITECTURE.md";

/// The homeostat crates each workspace crate may depend on (normal, build
/// or dev dependencies): the table "Dependency rules" in docs/ARCHITECTURE.md.
/// Workspace members not named here (the demo's microservices) may depend
/// on none.
const ALLOWED: &[(&str, &[&str])] = &[
    ("homeostat-core", &[]),
    ("homeostat-journal", &["homeostat-core"]),
    ("homeostat-adapters", &["homeostat-core"]),
    (
        "homeostat-server",
        &["homeostat-core", "homeostat-journal", "homeostat-adapters"],
    ),
    ("homeostat-lab", &["homeostat-core"]),
    (
        "homeostat-demo",
        &["homeostat-core", "homeostat-journal", "homeostat-adapters"],
    ),
    (
        "homeostat",
        &[
            "homeostat-core",
            "homeostat-journal",
            "homeostat-adapters",
            "homeostat-server",
            "homeostat-lab",
            "homeostat-demo",
        ],
    ),
];

/// No async runtime, database or HTTP in the core, directly or through
/// another crate ("Forbidden dependencies" in docs/ARCHITECTURE.md).
const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio",
    "rusqlite",
    "reqwest",
    "axum",
    "hyper",
    "bollard",
    "kube",
    "prometheus-http-query",
];

/// The lab's and the demo's tooling, kept out of the service build.
const FORBIDDEN_IN_SERVICE: &[&str] = &["plotters", "indicatif", "tar", "tempfile"];

/// The service build: the binary without its default features, and the
/// crates it is made of.
const SERVICE_CRATES: &[&str] = &[
    "homeostat",
    "homeostat-server",
    "homeostat-journal",
    "homeostat-adapters",
    "homeostat-core",
];

fn cargo(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "cargo {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo's output is UTF-8")
}

/// The workspace's members, each with its declared dependencies as
/// (package name, kind): kind is "normal", "build" or "dev".
fn workspace() -> BTreeMap<String, Vec<(String, String)>> {
    let text = cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--manifest-path",
        MANIFEST,
    ]);
    let metadata: Value = serde_json::from_str(&text).expect("cargo metadata prints JSON");
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        if !members.contains(package["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .map(|d| {
                let name = d["name"].as_str().expect("dependency name").to_owned();
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                (name, kind)
            })
            .collect();
        crates.insert(package["name"].as_str().expect("package name").to_owned(), dependencies);
    }
    crates
}

/// `cargo tree` of `package` with `--no-default-features`, through normal
/// dependencies on any target, with `extra` arguments.
fn tree(package: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "tree",
        "--manifest-path",
        MANIFEST,
        "-p",
        package,
        "--no-default-features",
        "-e",
        "normal",
        "--target",
        "all",
    ];
    args.extend_from_slice(extra);
    cargo(&args)
}

/// The packages `package` pulls in through normal dependencies, directly or
/// not, on any target, with `--no-default-features`.
fn normal_closure(package: &str) -> BTreeSet<String> {
    tree(package, &["--prefix", "none", "--format", "{p}"])
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// How `package` comes to depend on `dependency` (`cargo tree -i`), indented
/// for the failure message.
fn path_to(package: &str, dependency: &str) -> String {
    tree(package, &["-i", dependency])
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect()
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let crates = workspace();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (name, dependencies) in &crates {
        let may = allowed.get(name.as_str()).copied();
        if may.is_none() && name.starts_with("homeostat") {
            violations.push(format!(
                "{name} is a workspace crate without a row in the dependency rules of {DOC}; \
                 add one there and to ALLOWED in tests/architecture.rs"
            ));
            continue;
        }
        let may = may.unwrap_or(&[]);
        for (dependency, kind) in dependencies {
            if dependency.starts_with("homeostat") && !may.contains(&dependency.as_str()) {
                let rule = if may.is_empty() {
                    "no homeostat crate".to_owned()
                } else {
                    may.join(", ")
                };
                violations.push(format!(
                    "{name} depends on {dependency} ({kind} dependency); the dependency rules of {DOC} \
                     allow {name} only: {rule}"
                ));
            }
        }
    }
    for name in allowed.keys() {
        if !crates.contains_key(*name) {
            violations.push(format!(
                "{name} has a row in the dependency rules of {DOC} but is not in the workspace"
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "layering violated:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn the_core_has_no_runtime_database_or_http() {
    let crates = workspace();
    let core = crates
        .get("homeostat-core")
        .expect("homeostat-core is in the workspace");
    let direct = |forbidden: &str| core.iter().any(|(name, kind)| kind == "normal" && name == forbidden);
    let closure = normal_closure("homeostat-core");
    let mut violations = Vec::new();
    for forbidden in FORBIDDEN_IN_CORE {
        if direct(forbidden) {
            violations.push(format!(
                "homeostat-core depends on {forbidden} directly (crates/core/Cargo.toml)"
            ));
        } else if closure.contains(*forbidden) {
            violations.push(format!(
                "homeostat-core pulls in {forbidden} through another crate:\n{}",
                path_to("homeostat-core", forbidden)
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "the core must stay pure: no async runtime, database or HTTP crate among its normal \
         dependencies, directly or not (forbidden: {}; see \"Forbidden dependencies\" in {DOC}):\n  {}",
        FORBIDDEN_IN_CORE.join(", "),
        violations.join("\n  ")
    );
}

#[test]
fn the_service_build_carries_no_lab_or_demo_tooling() {
    let mut violations = Vec::new();
    for package in SERVICE_CRATES {
        let closure = normal_closure(package);
        for forbidden in FORBIDDEN_IN_SERVICE {
            if closure.contains(*forbidden) {
                violations.push(format!(
                    "{package} (--no-default-features) pulls in {forbidden}:\n{}",
                    path_to(package, forbidden)
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the service build must not carry the lab's or the demo's tooling ({}) as normal \
         dependencies, directly or not; dev-dependencies are fine (see \"Forbidden dependencies\" \
         in {DOC}):\n  {}",
        FORBIDDEN_IN_SERVICE.join(", "),
        violations.join("\n  ")
    );
}
