//! deploy/helm/homeostat, rendered as Helm 3 renders it, without helm: Go's
//! text/template (gtmpl) with the Helm and Sprig functions the chart uses,
//! written here to behave as theirs do, over the objects Helm gives a
//! template (`.Values` coalesced from values.yaml and the release's values,
//! `.Release`, `.Chart`, `.Files`, `.Template`).
//!
//! The chart is a Helm 3 chart, its values all read and all defined; every
//! object it renders parses into its Kubernetes type; with the defaults it
//! renders the kustomize base of deploy/kubernetes (the same pod, probes,
//! strategy, RBAC, NetworkPolicy, budget, config and playbook); replicas set
//! the Deployment's and a budget only above one; the config parses, validates
//! with the Secrets the pod mounts and follows the values; `namespaces`
//! switches the cluster-wide role for Roles in those namespaces and the
//! guard's allow-list; monitoring adds the ServiceMonitor and homeostat's
//! own rules; the chart's copies of the playbook and the rules are the
//! repository's.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::k8s::{
    alert_rule, all_in, assert_monitors, base_dir, egress_ports, granted, keys_by_secret, labelled, mount_of, needed,
    one_document, one_in, parse, pod_config_in, pod_in, read_yaml, root, secret_mounted_at, stand_in_for_secrets,
    volume_secret, Documents,
};
use gtmpl::{Context, Func, FuncError, Template, Value as Tv};
use homeostat_core::action::Backend;
use homeostat_core::config::Config;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

fn chart_dir() -> PathBuf {
    root().join("deploy/helm/homeostat")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file.
fn read_documents(path: &Path) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

// ---- the chart, as Helm's loader splits it ----

/// A chart's files as Helm 3's loader sorts them: Chart.yaml, values.yaml,
/// the templates (named `<chart>/templates/...`), and every other file
/// (`.Files`, by its path in the chart).
struct Chart {
    metadata: Mapping,
    values: Value,
    templates: Vec<(String, String)>,
    files: BTreeMap<String, String>,
}

fn chart() -> &'static Chart {
    static CHART: OnceLock<Chart> = OnceLock::new();
    CHART.get_or_init(load_chart)
}

fn load_chart() -> Chart {
    let dir = chart_dir();
    let mut paths = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let metadata = read_yaml(&dir.join("Chart.yaml"));
    let name = metadata["name"].as_str().expect("Chart.yaml: name").to_owned();
    let (mut templates, mut files) = (Vec::new(), BTreeMap::new());
    for path in paths {
        let relative = path.strip_prefix(&dir).unwrap().to_str().unwrap().replace('\\', "/");
        match relative.as_str() {
            "Chart.yaml" | "values.yaml" => {}
            r if r.starts_with("templates/") => templates.push((format!("{name}/{r}"), read(&path))),
            r if r.starts_with("charts/") => panic!("{r}: the chart has no subcharts"),
            r => drop(files.insert(r.to_owned(), read(&path))),
        }
    }
    Chart {
        metadata: metadata.as_mapping().unwrap().clone(),
        values: read_yaml(&dir.join("values.yaml")),
        templates,
        files,
    }
}

// ---- Helm's functions, as gtmpl functions ----

/// The Helm and Sprig functions the chart may use, each written to do what
/// Helm's does (Sprig v3, Helm 3's engine). gtmpl brings Go's builtins
/// (`and`, `or`, `not`, `eq`, `gt`, `index`, `len`, `print`, `printf`, ...);
/// any other function is a parse error, so the chart can use no function
/// that is not here.
fn helm_functions() -> Vec<(&'static str, Func)> {
    vec![
        ("include", include as Func),
        ("required", required),
        ("toYaml", to_yaml),
        ("indent", indent),
        ("nindent", nindent),
        ("quote", quote),
        ("default", default),
        ("toString", to_string),
        ("int", int),
        ("trunc", trunc),
        ("trimSuffix", trim_suffix),
        ("replace", replace),
        ("contains", contains),
        ("join", join),
        ("sha256sum", sha256sum),
    ]
}

fn fail(message: String) -> FuncError {
    FuncError::Generic(message)
}

fn string_arg<'a>(function: &str, value: &'a Tv) -> Result<&'a str, FuncError> {
    match value {
        Tv::String(s) => Ok(s),
        other => Err(fail(format!(
            "{function}: wrong type for value; expected string; got {other:?}"
        ))),
    }
}

fn int_arg(function: &str, value: &Tv) -> Result<i64, FuncError> {
    match value {
        Tv::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| fail(format!("{function}: {n} is not an int"))),
        other => Err(fail(format!(
            "{function}: wrong type for value; expected int; got {other:?}"
        ))),
    }
}

fn args<'a, const N: usize>(function: &str, args: &'a [Tv]) -> Result<&'a [Tv; N], FuncError> {
    args.try_into().map_err(|_| FuncError::ExactlyXArgs(function.into(), N))
}

/// Helm's `include`: executes the named template (a `define`, or a
/// template file by its name) with `data`, as a string.
fn include(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [name, data] = args::<2>("include", arguments)?;
    let name = string_arg("include", name)?;
    let template = template_set(name);
    if !template.tree_set.contains_key(name) {
        return Err(fail(format!("include: no template \"{name}\"")));
    }
    let output = template
        .render(&Context::from(data.clone()))
        .map_err(|e| fail(format!("include \"{name}\": {e}")))?;
    Ok(Tv::String(output))
}

/// Helm's `required`: the value, or the message as an error when it is
/// nil or the empty string.
fn required(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [message, value] = args::<2>("required", arguments)?;
    match value {
        Tv::Nil | Tv::NoValue => Err(fail(string_arg("required", message)?.to_owned())),
        Tv::String(s) if s.is_empty() => Err(fail(string_arg("required", message)?.to_owned())),
        other => Ok(other.clone()),
    }
}

/// Sprig's `empty`, which `default` uses.
fn empty(value: &Tv) -> bool {
    match value {
        Tv::Nil | Tv::NoValue => true,
        Tv::Bool(b) => !b,
        Tv::String(s) => s.is_empty(),
        Tv::Array(a) => a.is_empty(),
        Tv::Map(m) | Tv::Object(m) => m.is_empty(),
        Tv::Number(n) => n
            .as_f64()
            .map_or_else(|| n.as_i64() == Some(0) || n.as_u64() == Some(0), |f| f == 0.0),
        Tv::Function(_) => false,
    }
}

/// Sprig's `default DEFAULT VALUE`: VALUE unless it is empty.
fn default(arguments: &[Tv]) -> Result<Tv, FuncError> {
    match arguments {
        [fallback] => Ok(fallback.clone()),
        [fallback, given, ..] => Ok(if empty(given) { fallback.clone() } else { given.clone() }),
        [] => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

/// Go's `%v` of a float64: strconv's shortest 'g', with an exponent from
/// 1e+06 on or below 1e-04 (`1e+06`, `1.5e-05`).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap();
    let exponent: i32 = exponent.parse().unwrap();
    if !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{f}")
    }
}

/// Sprig's `strval`: Go's `%v` of a value (a string as it is).
fn strval(value: &Tv) -> String {
    match value {
        Tv::String(s) => s.clone(),
        Tv::Bool(b) => b.to_string(),
        Tv::Number(n) => match n.as_f64() {
            Some(f) => go_float(f),
            None => n.to_string(),
        },
        Tv::Nil | Tv::NoValue => "<nil>".into(),
        Tv::Array(items) => format!("[{}]", items.iter().map(strval).collect::<Vec<_>>().join(" ")),
        Tv::Map(map) | Tv::Object(map) => {
            let sorted: BTreeMap<_, _> = map.iter().collect();
            let pairs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}:{}", strval(v))).collect();
            format!("map[{}]", pairs.join(" "))
        }
        Tv::Function(_) => "<func>".into(),
    }
}

fn to_string(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [value] = args::<1>("toString", arguments)?;
    Ok(Tv::String(strval(value)))
}

/// Go's `%q` (strconv.Quote): a double-quoted string with Go's escapes,
/// which are YAML's too.
fn go_quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() && (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sprig's `quote`: each non-nil argument `%q`-quoted, joined by spaces.
fn quote(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let quoted: Vec<String> = arguments
        .iter()
        .filter(|a| !matches!(a, Tv::Nil | Tv::NoValue))
        .map(|a| go_quote(&strval(a)))
        .collect();
    Ok(Tv::String(quoted.join(" ")))
}

/// Sprig's `int` (cast.ToInt): a number truncated, a string parsed (0 when
/// it is not a number), a bool as 1 or 0, nil as 0.
fn int(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [value] = args::<1>("int", arguments)?;
    let n = match value {
        Tv::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        Tv::String(s) => s.trim_end_matches(".0").parse().unwrap_or(0),
        Tv::Bool(b) => i64::from(*b),
        _ => 0,
    };
    Ok(Tv::from(n))
}

/// Sprig's `trunc N S`: the first N bytes (the last -N when negative).
fn trunc(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [n, s] = args::<2>("trunc", arguments)?;
    let (n, s) = (int_arg("trunc", n)?, string_arg("trunc", s)?);
    let len = s.len() as i64;
    let out = if n < 0 && len + n > 0 {
        &s[(len + n) as usize..]
    } else if n >= 0 && len > n {
        &s[..n as usize]
    } else {
        s
    };
    Ok(Tv::String(out.to_owned()))
}

/// Sprig's `trimSuffix SUFFIX S`.
fn trim_suffix(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [suffix, s] = args::<2>("trimSuffix", arguments)?;
    let (suffix, s) = (string_arg("trimSuffix", suffix)?, string_arg("trimSuffix", s)?);
    Ok(Tv::String(s.strip_suffix(suffix).unwrap_or(s).to_owned()))
}

/// Sprig's `replace OLD NEW S`: every OLD in S.
fn replace(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [old, new, s] = args::<3>("replace", arguments)?;
    let s = string_arg("replace", s)?;
    Ok(Tv::String(
        s.replace(string_arg("replace", old)?, string_arg("replace", new)?),
    ))
}

/// Sprig's `contains SUBSTRING S`.
fn contains(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [substring, s] = args::<2>("contains", arguments)?;
    Ok(Tv::Bool(
        string_arg("contains", s)?.contains(string_arg("contains", substring)?),
    ))
}

/// Sprig's `join SEPARATOR LIST`: the items' `strval`, nil ones left out.
fn join(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [separator, list] = args::<2>("join", arguments)?;
    let items: Vec<String> = match list {
        Tv::Array(items) => items
            .iter()
            .filter(|i| !matches!(i, Tv::Nil | Tv::NoValue))
            .map(strval)
            .collect(),
        Tv::Nil | Tv::NoValue => Vec::new(),
        other => vec![strval(other)],
    };
    Ok(Tv::String(items.join(string_arg("join", separator)?)))
}

/// Sprig's `sha256sum`: the hex SHA-256 of a string.
fn sha256sum(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [s] = args::<1>("sha256sum", arguments)?;
    Ok(Tv::String(hex_sha256(string_arg("sha256sum", s)?)))
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn indent_by(spaces: i64, s: &str) -> String {
    let pad = " ".repeat(spaces.max(0) as usize);
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

/// Sprig's `indent N S`: every line of S indented by N spaces.
fn indent(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [n, s] = args::<2>("indent", arguments)?;
    Ok(Tv::String(indent_by(int_arg("indent", n)?, string_arg("indent", s)?)))
}

/// Sprig's `nindent N S`: a newline, then `indent N S`.
fn nindent(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [n, s] = args::<2>("nindent", arguments)?;
    Ok(Tv::String(format!(
        "\n{}",
        indent_by(int_arg("nindent", n)?, string_arg("nindent", s)?)
    )))
}

/// A template value as Go's JSON encoding (then YAML) sees it: maps with
/// their keys sorted, a float64 without a fraction as an integer.
fn to_yaml_value(value: &Tv) -> Value {
    match value {
        Tv::Nil | Tv::NoValue => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::String(s) => Value::String(s.clone()),
        Tv::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Value::from(f as i64),
            (_, _, f) => Value::from(f.unwrap()),
        },
        Tv::Array(items) => Value::Sequence(items.iter().map(to_yaml_value).collect()),
        Tv::Map(map) | Tv::Object(map) => {
            let sorted: BTreeMap<_, _> = map.iter().collect();
            Value::Mapping(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.as_str().into(), to_yaml_value(v)))
                    .collect(),
            )
        }
        Tv::Function(_) => Value::Null,
    }
}

/// Helm's `toYaml`: the YAML of a value, without its last newline.
fn to_yaml(arguments: &[Tv]) -> Result<Tv, FuncError> {
    let [value] = args::<1>("toYaml", arguments)?;
    let text = serde_yaml::to_string(&to_yaml_value(value)).unwrap_or_default();
    Ok(Tv::String(text.strip_suffix('\n').unwrap_or(&text).to_owned()))
}

// ---- Helm's engine ----

/// Every template of the chart parsed into one set, as Helm's engine does,
/// to execute `entry` (a file's name or a `define`'s).
fn template_set(entry: &str) -> Template {
    let mut template = Template::with_name(entry);
    template.add_funcs(&helm_functions());
    for (name, text) in &chart().templates {
        template
            .add_template(name.clone(), text.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    template
}

/// YAML (values, Chart.yaml) as a template value. Helm reads the values'
/// numbers as float64 (through JSON); gtmpl keeps a float without a fraction
/// as an integer, so here `gt .Values.replicas 1` would work where Go refuses
/// to compare a float64 with an int: the chart's test refuses it instead.
fn template_value(value: &Value) -> Tv {
    match value {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => Tv::from(n.as_f64().unwrap()),
        Value::String(s) => Tv::String(s.clone()),
        Value::Sequence(items) => Tv::Array(items.iter().map(template_value).collect()),
        Value::Mapping(map) => Tv::Map(
            map.iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), template_value(v)))
                .collect(),
        ),
        Value::Tagged(t) => panic!("a tagged value: {t:?}"),
    }
}

/// Helm's coalescing of the release's values over the chart's: maps merge
/// key by key, anything else replaces, and null deletes the key.
fn coalesce(defaults: &Value, over: &Value) -> Value {
    match (defaults, over) {
        (Value::Mapping(defaults), Value::Mapping(over)) => {
            let mut merged = defaults.clone();
            for (key, value) in over {
                if value.is_null() {
                    merged.remove(key);
                } else {
                    let merged_value = match merged.get(key) {
                        Some(default) => coalesce(default, value),
                        None => value.clone(),
                    };
                    merged.insert(key.clone(), merged_value);
                }
            }
            Value::Mapping(merged)
        }
        (_, over) => over.clone(),
    }
}

/// `.Chart`: Chart.yaml's fields under the names of Helm's chart.Metadata.
fn chart_object() -> Tv {
    let fields = chart()
        .metadata
        .iter()
        .map(|(k, v)| {
            let key = match k.as_str().unwrap() {
                "apiVersion" => "APIVersion".to_owned(),
                other => {
                    let mut chars = other.chars();
                    let first = chars.next().unwrap().to_ascii_uppercase();
                    format!("{first}{}", chars.as_str())
                }
            };
            (key, template_value(v))
        })
        .collect();
    Tv::Map(fields)
}

/// What `helm install <release> deploy/helm/homeostat -n <namespace> -f
/// <overrides>` renders.
struct Rendered {
    /// Every object, labelled `Kind/name`.
    documents: Documents,
    /// Each template file's output, by its name in the chart.
    outputs: BTreeMap<String, String>,
    notes: String,
    values: Value,
}

fn render_as(release: &str, namespace: &str, overrides: &str) -> Result<Rendered, String> {
    let chart = chart();
    let overrides: Value = serde_yaml::from_str(overrides).unwrap();
    let overrides = if overrides.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        overrides
    };
    let values = coalesce(&chart.values, &overrides);
    let release_object = Tv::Map(HashMap::from([
        ("Name".to_owned(), Tv::from(release.to_owned())),
        ("Namespace".to_owned(), Tv::from(namespace.to_owned())),
        ("Service".to_owned(), Tv::from("Helm".to_owned())),
        ("IsInstall".to_owned(), Tv::Bool(true)),
        ("IsUpgrade".to_owned(), Tv::Bool(false)),
        ("Revision".to_owned(), Tv::from(1i64)),
    ]));
    let files: HashMap<String, Tv> = chart
        .files
        .iter()
        .map(|(k, v)| (k.clone(), Tv::String(v.clone())))
        .collect();
    let chart_name = chart.metadata["name"].as_str().unwrap();
    let (mut documents, mut outputs, mut notes) = (Vec::new(), BTreeMap::new(), String::new());
    for (name, _) in &chart.templates {
        let base = name.rsplit('/').next().unwrap();
        if base.starts_with('_') {
            continue;
        }
        let top = Tv::Map(HashMap::from([
            ("Values".to_owned(), template_value(&values)),
            ("Release".to_owned(), release_object.clone()),
            ("Chart".to_owned(), chart_object()),
            ("Files".to_owned(), Tv::Map(files.clone())),
            (
                "Template".to_owned(),
                Tv::Map(HashMap::from([
                    ("Name".to_owned(), Tv::from(name.clone())),
                    ("BasePath".to_owned(), Tv::from(format!("{chart_name}/templates"))),
                ])),
            ),
        ]));
        let output = template_set(name)
            .render(&Context::from(top))
            .map_err(|e| format!("{name}: {e}"))?;
        // Stricter than Helm, which prints a missing value as nothing: a
        // template that reads a value the values do not have is a mistake.
        assert!(
            !output.contains("<no value>"),
            "{name} reads a missing value:\n{output}"
        );
        if base == "NOTES.txt" {
            notes = output;
            continue;
        }
        for document in serde_yaml::Deserializer::from_str(&output) {
            let document = Value::deserialize(document).map_err(|e| format!("{name}: {e}\n{output}"))?;
            if document.is_null() {
                continue;
            }
            documents.push(labelled(document));
        }
        outputs.insert(name.clone(), output);
    }
    Ok(Rendered {
        documents,
        outputs,
        notes,
        values,
    })
}

/// `helm install homeostat deploy/helm/homeostat -n homeostat` with `overrides` as values.
fn render(overrides: &str) -> Rendered {
    render_as("homeostat", "homeostat", overrides).unwrap_or_else(|e| panic!("{e}"))
}

/// Every object of `kind`.
fn all_of<T: serde::de::DeserializeOwned>(rendered: &Rendered, kind: &str) -> Vec<T> {
    all_in(&rendered.documents, kind)
}

/// The one object of `kind`.
fn one<T: serde::de::DeserializeOwned>(rendered: &Rendered, kind: &str) -> T {
    one_in(&rendered.documents, kind)
}

/// The one object of `kind`, as rendered.
fn raw<'a>(rendered: &'a Rendered, kind: &str) -> &'a Value {
    &one_document(&rendered.documents, kind).1
}

fn kinds(rendered: &Rendered) -> BTreeSet<String> {
    rendered
        .documents
        .iter()
        .map(|(_, d)| d["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The Deployment's pod and its one container.
fn pod_of(rendered: &Rendered) -> (PodSpec, Container) {
    pod_in(&rendered.documents)
}

/// The config as the pod reads it: the file `--config` names, from the
/// ConfigMap mounted there, with its paths anchored as the pod sees them;
/// and the ConfigMap's data.
fn pod_config(rendered: &Rendered) -> (PathBuf, Config, BTreeMap<String, String>) {
    pod_config_in(&rendered.documents)
}

/// Validates the config as the pod runs it: each secret file it names is
/// a key of a Secret the pod mounts there (here a file holding something),
/// the playbook the ConfigMap's. Returns the keys read, by Secret.
fn validate_as_the_pod(rendered: &Rendered) -> BTreeMap<String, Vec<String>> {
    let (path, mut config, data) = pod_config(rendered);
    let (pod, container) = pod_of(rendered);
    let secrets = tempfile::tempdir().unwrap();
    let keys = stand_in_for_secrets(&mut config, secrets.path(), |file, _| {
        secret_mounted_at(&pod, &container, file.parent().unwrap())
    });
    let actions = config.actions.as_mut().expect("the config acts");
    assert_eq!(
        actions.playbook.parent(),
        path.parent(),
        "the playbook beside the config"
    );
    let playbook = secrets.path().join("playbook.yml");
    std::fs::write(
        &playbook,
        &data[actions.playbook.file_name().unwrap().to_str().unwrap()],
    )
    .unwrap();
    actions.playbook = playbook;
    let credentials = config
        .validate(&path, &HashMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(credentials.tokens.len(), 2);
    keys
}

// ---- the functions ----

/// The functions give what Helm's give (outputs of Helm 3.x / Sprig 3).
#[test]
fn the_functions_behave_as_helms() {
    let call = |f: Func, arguments: Vec<Tv>| f(&arguments).unwrap_or_else(|e| panic!("{e}"));
    let s = |s: &str| Tv::String(s.to_owned());
    assert_eq!(
        call(nindent, vec![Tv::from(2u64), s("a: 1\nb: 2")]),
        s("\n  a: 1\n  b: 2")
    );
    assert_eq!(call(indent, vec![Tv::from(4u64), s("x\n")]), s("    x\n    "));
    assert_eq!(call(quote, vec![s("a\"b\\c\n")]), s(r#""a\"b\\c\n""#));
    assert_eq!(
        call(quote, vec![Tv::from(2.0f64), Tv::Nil, Tv::Bool(true)]),
        s(r#""2" "true""#)
    );
    assert_eq!(go_float(1e6), "1e+06");
    assert_eq!(go_float(123456.0), "123456");
    assert_eq!(go_float(1.5e-5), "1.5e-05");
    assert_eq!(call(to_string, vec![Tv::from(0.5f64)]), s("0.5"));
    assert_eq!(call(default, vec![s("d"), s("")]), s("d"));
    assert_eq!(call(default, vec![s("d"), Tv::from(0.0f64)]), s("d"));
    assert_eq!(call(default, vec![s("d"), Tv::NoValue]), s("d"));
    assert_eq!(call(default, vec![s("d"), s("v")]), s("v"));
    assert_eq!(call(default, vec![s("d"), Tv::Bool(false)]), s("d"));
    assert_eq!(call(int, vec![Tv::from(2.9f64)]), Tv::from(2i64));
    assert_eq!(call(trunc, vec![Tv::from(3u64), s("abcdef")]), s("abc"));
    assert_eq!(call(trunc, vec![Tv::from(-2i64), s("abcdef")]), s("ef"));
    assert_eq!(call(trim_suffix, vec![s("-"), s("a-b-")]), s("a-b"));
    assert_eq!(call(replace, vec![s("+"), s("_"), s("0.1.0+a+b")]), s("0.1.0_a_b"));
    assert_eq!(call(contains, vec![s("stat"), s("homeostat")]), Tv::Bool(true));
    assert_eq!(
        call(join, vec![s(", "), Tv::Array(vec![s("a"), Tv::Nil, s("b")])]),
        s("a, b")
    );
    assert_eq!(
        call(sha256sum, vec![s("abc")]),
        s("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    let map = Tv::Map(HashMap::from([
        ("b".to_owned(), Tv::from(2.0f64)),
        ("a".to_owned(), Tv::Array(vec![s("1"), s("x")])),
    ]));
    assert_eq!(call(to_yaml, vec![map]), s("a:\n- '1'\n- x\nb: 2"));
    assert!(required(&[s("need it"), s("")]).is_err());
    assert!(required(&[s("need it"), Tv::NoValue]).is_err());
    assert_eq!(call(required, vec![s("need it"), s("x")]), s("x"));
    // Go's text/template as Helm runs it: trimming, `else if`, `with`,
    // `range` with `$`, a `define` through `include`.
    let mut template = Template::with_name("t");
    template.add_funcs(&helm_functions());
    template
        .add_template(
            "t",
            "{{- range .l }}[{{ . }}{{ if eq . \"b\" }}!{{ else if eq . \"c\" }}?{{ end }}]{{ end -}}\n  {{ with .m }}{{ .k }}{{ end }}",
        )
        .unwrap();
    let data = Tv::Map(HashMap::from([
        ("l".to_owned(), Tv::Array(vec![s("a"), s("b"), s("c")])),
        ("m".to_owned(), Tv::Map(HashMap::from([("k".to_owned(), s("v"))]))),
    ]));
    assert_eq!(template.render(&Context::from(data)).unwrap(), "[a][b!][c?]v");
}

// ---- the chart ----

#[test]
fn the_chart_is_a_helm_3_chart_whose_values_are_all_defined_and_read() {
    let chart = chart();
    let metadata = &chart.metadata;
    let field = |key: &str| metadata.get(key).and_then(Value::as_str);
    assert_eq!(field("apiVersion"), Some("v2"), "Helm 3's charts are apiVersion v2");
    assert_eq!(field("name"), Some("homeostat"));
    assert_eq!(
        chart_dir().file_name().unwrap().to_str(),
        field("name"),
        "the chart's directory is its name"
    );
    assert_eq!(field("version"), Some("0.1.0"));
    assert_eq!(
        field("appVersion"),
        Some(env!("CARGO_PKG_VERSION")),
        "the image homeostat:<version>"
    );
    assert_eq!(field("type"), Some("application"));
    assert!(field("description").is_some_and(|d| !d.is_empty()));
    // Only chart.Metadata's fields (Helm refuses others, or ignores them).
    let known = [
        "apiVersion",
        "name",
        "version",
        "kubeVersion",
        "description",
        "type",
        "keywords",
        "home",
        "sources",
        "dependencies",
        "maintainers",
        "icon",
        "appVersion",
        "deprecated",
        "annotations",
    ];
    for key in metadata.keys() {
        assert!(
            known.contains(&key.as_str().unwrap()),
            "Chart.yaml: unknown field {key:?}"
        );
    }
    assert!(chart_dir().join("README.md").is_file());
    assert!(chart
        .templates
        .iter()
        .any(|(n, _)| n == "homeostat/templates/_helpers.tpl"));
    for (name, _) in &chart.templates {
        let base = name.rsplit('/').next().unwrap();
        assert!(
            base.ends_with(".yaml") || base.ends_with(".tpl") || base == "NOTES.txt",
            "{name}: not a template Helm renders"
        );
    }

    // Go's ordering comparisons refuse a float64 (every number of the
    // values) beside an int: a value compared goes through `int` first.
    for (name, text) in &chart.templates {
        for action in text.split("{{").skip(1).map(|a| a.split("}}").next().unwrap()) {
            let words: Vec<&str> = action.split_whitespace().collect();
            if !words
                .iter()
                .any(|w| ["gt", "lt", "ge", "le", "(gt", "(lt", "(ge", "(le"].contains(w))
            {
                continue;
            }
            for (i, word) in words.iter().enumerate() {
                if word.contains(".Values.") {
                    assert!(
                        i > 0 && ["(int", "(float64"].contains(&words[i - 1]),
                        "{name}: {{{{{action}}}}} compares a value that is a float64 in Helm"
                    );
                }
            }
        }
    }

    // Every `.Values.x.y` the templates read is in values.yaml, and every
    // value there is read (itself or a map above it).
    let values = &chart.values;
    assert!(values.is_mapping(), "values.yaml is a map");
    let mut read_paths = BTreeSet::new();
    for (name, text) in &chart.templates {
        for (at, _) in text.match_indices(".Values.") {
            let path: String = text[at + ".Values.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let path = path.trim_end_matches('.').to_owned();
            let mut value = values;
            for key in path.split('.') {
                value = value
                    .get(key)
                    .unwrap_or_else(|| panic!("{name} reads .Values.{path}, which values.yaml does not define"));
            }
            read_paths.insert(path);
        }
    }
    fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value.as_mapping() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = k.as_str().unwrap();
                    let path = if prefix.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(v, &path, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut defined = Vec::new();
    leaves(values, "", &mut defined);
    for leaf in defined {
        assert!(
            read_paths
                .iter()
                .any(|p| leaf == *p || leaf.starts_with(&format!("{p}."))),
            "values.yaml defines {leaf}, which no template reads"
        );
    }
}

#[test]
fn the_charts_playbook_and_rules_are_the_repositorys() {
    let files = &chart().files;
    assert!(
        files["files/playbook.yml"] == read(&root().join("rules/playbook.yml")),
        "deploy/helm/homeostat/files/playbook.yml differs from rules/playbook.yml: copy it over"
    );
    assert!(
        files["files/homeostat.rules.yml"] == read(&root().join("rules/homeostat.rules.yml")),
        "deploy/helm/homeostat/files/homeostat.rules.yml differs from rules/homeostat.rules.yml: copy it over"
    );
}

/// Cluster-scoped kinds carry no namespace.
const CLUSTER_SCOPED: [&str; 2] = ["ClusterRole", "ClusterRoleBinding"];

#[test]
fn every_object_is_a_valid_object_of_its_kind_labelled_by_helm() {
    let renderings = [
        (
            "homeostat",
            "homeostat",
            render_as("homeostat", "homeostat", "").unwrap(),
        ),
        (
            "prod",
            "ops",
            render_as(
                "prod",
                "ops",
                r#"
replicas: 1
namespaces: [a, b]
monitoring: {enabled: true}
tokens: {create: true, alertmanager: am-token, operator: op-token}
journal: {password: {secretName: ""}}
networkPolicy: {enabled: false}
imagePullSecrets: [{name: registry}]
"#,
            )
            .unwrap(),
        ),
    ];
    let mut all_kinds = BTreeSet::new();
    for (release, namespace, rendered) in &renderings {
        let fullname = if release.contains("homeostat") {
            release.to_string()
        } else {
            format!("{release}-homeostat")
        };
        for (label, document) in &rendered.documents {
            let kind = document["kind"].as_str().unwrap_or_else(|| panic!("{label}: no kind"));
            match kind {
                "ServiceAccount" => drop(parse::<ServiceAccount>(label, document)),
                "ClusterRole" => drop(parse::<ClusterRole>(label, document)),
                "ClusterRoleBinding" => drop(parse::<ClusterRoleBinding>(label, document)),
                "Role" => drop(parse::<Role>(label, document)),
                "RoleBinding" => drop(parse::<RoleBinding>(label, document)),
                "ConfigMap" => drop(parse::<ConfigMap>(label, document)),
                "Secret" => drop(parse::<Secret>(label, document)),
                "Deployment" => drop(parse::<Deployment>(label, document)),
                "Service" => drop(parse::<Service>(label, document)),
                "PodDisruptionBudget" => drop(parse::<PodDisruptionBudget>(label, document)),
                "NetworkPolicy" => drop(parse::<NetworkPolicy>(label, document)),
                // The Prometheus Operator's kinds, which k8s-openapi lacks.
                "ServiceMonitor" | "PrometheusRule" => {
                    assert_eq!(document["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
                }
                other => panic!("{label}: unexpected kind {other}"),
            }
            let metadata: ObjectMeta = parse(label, &document["metadata"]);
            let name = metadata.name.clone().unwrap();
            if kind == "Secret" {
                assert_eq!(name, "homeostat-tokens", "{label}: the value tokens.secretName");
            } else {
                assert!(name.starts_with(&fullname), "{label}: not named after the release");
            }
            match kind {
                k if CLUSTER_SCOPED.contains(&k) => assert_eq!(metadata.namespace, None, "{label}"),
                "Role" | "RoleBinding" => {
                    assert!(["a", "b"].contains(&metadata.namespace.as_deref().unwrap()), "{label}")
                }
                _ => assert_eq!(metadata.namespace.as_deref(), Some(*namespace), "{label}"),
            }
            let labels = metadata.labels.unwrap_or_default();
            assert_eq!(
                labels.get("app.kubernetes.io/managed-by").map(String::as_str),
                Some("Helm")
            );
            assert_eq!(labels.get("app.kubernetes.io/instance"), Some(&release.to_string()));
            assert_eq!(labels.get("helm.sh/chart").map(String::as_str), Some("homeostat-0.1.0"));
            all_kinds.insert(kind.to_owned());
        }
    }
    assert_eq!(all_kinds.len(), 13, "{all_kinds:?}");
    // The other release's objects name each other by its names.
    let rendered = &renderings[1].2;
    let (pod, _) = pod_of(rendered);
    assert_eq!(pod.service_account_name.as_deref(), Some("prod-homeostat"));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry", "imagePullSecrets");
    assert!(!kinds(rendered).contains("NetworkPolicy"));
    let map: ConfigMap = one(rendered, "ConfigMap");
    assert_eq!(map.metadata.name.as_deref(), Some("prod-homeostat"));
    let service: Service = one(rendered, "Service");
    let selector = service.spec.unwrap().selector.unwrap();
    let deployment: Deployment = one(rendered, "Deployment");
    let pod_labels = deployment.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "the Service does not select the pods");
    }
    let binding: RoleBinding = all_of(rendered, "RoleBinding").remove(0);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("prod-homeostat", Some("ops"))
    );
}

// ---- the defaults are the kustomize base ----

/// Replaces, anywhere in `value`, a map equal to `from` with `to`.
fn replace_maps(value: &mut Value, from: &Value, to: &Value) {
    if value == from {
        *value = to.clone();
        return;
    }
    match value {
        Value::Mapping(map) => map.values_mut().for_each(|v| replace_maps(v, from, to)),
        Value::Sequence(items) => items.iter_mut().for_each(|v| replace_maps(v, from, to)),
        _ => {}
    }
}

/// A chart's object next to the base's of the same kind and name: equal
/// but for the chart's extra labels, with the chart's selector labels (the
/// release's instance beside the name) for the base's.
fn assert_like_base(ours: &Value, base: &Value, fields: &[&str]) {
    let label = format!(
        "{}/{}",
        base["kind"].as_str().unwrap(),
        base["metadata"]["name"].as_str().unwrap()
    );
    for key in ["apiVersion", "kind"] {
        assert_eq!(ours[key], base[key], "{label}: {key}");
    }
    for key in ["name", "namespace"] {
        assert_eq!(ours["metadata"][key], base["metadata"][key], "{label}: metadata.{key}");
    }
    let ours_labels = ours["metadata"]["labels"].as_mapping().cloned().unwrap_or_default();
    for (k, v) in base["metadata"]["labels"].as_mapping().into_iter().flatten() {
        assert_eq!(ours_labels.get(k), Some(v), "{label}: label {k:?}");
    }
    let selector: Value =
        serde_yaml::from_str("{app.kubernetes.io/name: homeostat, app.kubernetes.io/instance: homeostat}").unwrap();
    let base_selector: Value = serde_yaml::from_str("{app.kubernetes.io/name: homeostat}").unwrap();
    for field in fields {
        let mut ours = ours[*field].clone();
        replace_maps(&mut ours, &selector, &base_selector);
        assert!(
            ours == base[*field],
            "{label}: {field} differs from the base's:\n{}\nbase:\n{}",
            serde_yaml::to_string(&ours).unwrap(),
            serde_yaml::to_string(&base[*field]).unwrap()
        );
    }
}

fn base_object(file: &str, kind: &str) -> Value {
    let documents = read_documents(&base_dir().join(file));
    let mut of_kind = documents.into_iter().filter(|d| d["kind"] == kind);
    let object = of_kind.next().unwrap_or_else(|| panic!("{file}: no {kind}"));
    assert!(of_kind.next().is_none());
    object
}

/// `helm install homeostat deploy/helm/homeostat -n homeostat` with the
/// defaults makes deploy/kubernetes's objects, with Helm's labels.
#[test]
fn the_defaults_render_the_kustomize_base() {
    let rendered = render("monitoring: {enabled: true}");
    assert_eq!(
        kinds(&rendered),
        BTreeSet::from(
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "ServiceMonitor",
                "PrometheusRule",
            ]
            .map(String::from)
        )
    );
    // The pod: everything but the checksum of the config it carries.
    let mut deployment = raw(&rendered, "Deployment").clone();
    let annotations = deployment["spec"]["template"]["metadata"]
        .as_mapping_mut()
        .unwrap()
        .remove("annotations")
        .expect("the config's checksum");
    assert_eq!(annotations.as_mapping().unwrap().len(), 1, "{annotations:?}");
    assert!(annotations["checksum/config"].is_string());
    let base = base_object("deployment.yaml", "Deployment");
    assert_like_base(&deployment, &base, &["spec"]);
    for (file, kind) in [
        ("serviceaccount.yaml", "ServiceAccount"),
        ("service.yaml", "Service"),
        ("poddisruptionbudget.yaml", "PodDisruptionBudget"),
        ("networkpolicy.yaml", "NetworkPolicy"),
    ] {
        let fields: &[&str] = if kind == "ServiceAccount" { &[] } else { &["spec"] };
        assert_like_base(raw(&rendered, kind), &base_object(file, kind), fields);
    }
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        let fields: &[&str] = if kind == "ClusterRole" {
            &["rules"]
        } else {
            &["roleRef", "subjects"]
        };
        assert_like_base(raw(&rendered, kind), &base_object("rbac.yaml", kind), fields);
    }
    // The ServiceMonitor names its job after the Service's name label,
    // which is the base's job (its Service's name).
    let mut monitor = raw(&rendered, "ServiceMonitor").clone();
    let job_label = monitor["spec"].as_mapping_mut().unwrap().remove("jobLabel").unwrap();
    assert_eq!(job_label.as_str(), Some("app.kubernetes.io/name"));
    assert_like_base(
        &monitor,
        &base_object("monitoring/servicemonitor.yaml", "ServiceMonitor"),
        &["spec"],
    );
    assert_like_base(
        raw(&rendered, "PrometheusRule"),
        &base_object("monitoring/prometheusrule.yaml", "PrometheusRule"),
        &["spec"],
    );

    // The config is the base's homeostat.yaml, and the playbook its playbook.
    let map: ConfigMap = one(&rendered, "ConfigMap");
    assert_eq!(map.metadata.name.as_deref(), Some("homeostat"));
    let data = map.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["homeostat.yaml", "playbook.yml"]);
    let path = Path::new("/etc/homeostat/config/homeostat.yaml");
    let ours = Config::parse(path, &data["homeostat.yaml"]).unwrap_or_else(|e| panic!("{e}"));
    let base = Config::parse(path, &read(&base_dir().join("homeostat.yaml"))).unwrap();
    assert_eq!(
        ours, base,
        "the chart's default config differs from deploy/kubernetes/homeostat.yaml"
    );
    assert!(data["playbook.yml"] == read(&base_dir().join("playbook.yml")));
}

// ---- replicas ----

#[test]
fn replicas_are_the_values_and_a_budget_keeps_one_only_above_one() {
    for replicas in [1, 2, 3] {
        let rendered = render(&format!("replicas: {replicas}"));
        let deployment: Deployment = one(&rendered, "Deployment");
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(replicas));
        let budgets: Vec<PodDisruptionBudget> = all_of(&rendered, "PodDisruptionBudget");
        if replicas > 1 {
            let [budget] = &budgets[..] else {
                panic!("one budget with {replicas} replicas")
            };
            let budget = budget.spec.clone().unwrap();
            assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
            assert!(budget.max_unavailable.is_none());
            let labels = spec.template.metadata.unwrap().labels.unwrap();
            let wanted = budget.selector.unwrap().match_labels.unwrap();
            assert!(
                wanted.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "the budget does not select the pods"
            );
        } else {
            assert!(budgets.is_empty(), "a budget with one replica blocks every node drain");
        }
    }
    assert_eq!(chart().values["replicas"].as_u64(), Some(2), "two replicas by default");
}

// ---- the config ----

#[test]
fn the_config_validates_as_the_pod_runs_it_and_follows_the_values() {
    // The defaults: dry run, the base's journal, the tokens and password
    // from the Secrets the README says to make.
    let rendered = render("");
    let keys = validate_as_the_pod(&rendered);
    assert_eq!(
        keys,
        keys_by_secret(&[
            ("homeostat-postgres", &["password"]),
            ("homeostat-tokens", &["alertmanager", "operator"]),
        ])
    );
    let (_, config, _) = pod_config(&rendered);
    let actions = config.actions.as_ref().unwrap();
    assert_eq!(actions.backend, Backend::Kubernetes);
    assert!(actions.dry_run, "dry run by default");
    assert_eq!(chart().values["dryRun"].as_bool(), Some(true));
    assert!(actions.guard.allow_namespaces.is_empty());
    assert!(
        actions.guard.deny_namespaces.contains(&"homeostat".to_owned()),
        "never acts on itself"
    );
    assert_eq!(config.journal.lease.0, std::time::Duration::from_secs(15));

    // Every value it follows, changed.
    let rendered = render_as(
        "homeostat",
        "selfheal",
        r#"
dryRun: false
tokens: {secretName: my-tokens}
journal:
  url: postgres://healer@db.example.com:5433/healing
  password: {secretName: my-db, key: pg-pass}
  lease: 30s
prometheus: {url: "http://prometheus.example:9091"}
alertmanager: {url: "http://alertmanager.example:9094"}
playbook: |
  rules:
    - name: everything
      actions: [notify]
"#,
    )
    .unwrap();
    let keys = validate_as_the_pod(&rendered);
    assert_eq!(
        keys,
        keys_by_secret(&[("my-db", &["pg-pass"]), ("my-tokens", &["alertmanager", "operator"])])
    );
    let (_, config, data) = pod_config(&rendered);
    let (pod, container) = pod_of(&rendered);
    let actions = config.actions.as_ref().unwrap();
    assert!(!actions.dry_run, "dryRun: false acts");
    assert_eq!(
        config.journal.url.as_deref(),
        Some("postgres://healer@db.example.com:5433/healing")
    );
    // The password is the key of the Secret's volume, where it is mounted.
    let mounted = mount_of(&pod, &container, |v| volume_secret(v) == Some("my-db"));
    assert_eq!(
        config.journal.password.as_ref().unwrap().file.as_deref(),
        Some(mounted.join("pg-pass").as_path())
    );
    assert_eq!(config.journal.lease.0, std::time::Duration::from_secs(30));
    assert_eq!(
        actions.prometheus_url.as_deref(),
        Some("http://prometheus.example:9091")
    );
    assert_eq!(
        actions.alertmanager_url.as_deref(),
        Some("http://alertmanager.example:9094")
    );
    assert_eq!(
        actions.notifications.sinks[0].url.as_deref(),
        Some("http://alertmanager.example:9094")
    );
    assert_eq!(
        actions.guard.deny_namespaces,
        ["kube-system", "selfheal"],
        "the release's namespace"
    );
    assert_eq!(
        data["playbook.yml"],
        "rules:\n  - name: everything\n    actions: [notify]\n"
    );

    // Without a password: no Secret for it, nothing mounted.
    let rendered = render("journal: {password: {secretName: ''}}");
    let keys = validate_as_the_pod(&rendered);
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["homeostat-tokens"]);
    let (_, config, _) = pod_config(&rendered);
    assert!(config.journal.password.is_none());
    let (pod, container) = pod_of(&rendered);
    assert_eq!(pod.volumes.unwrap().len(), 2);
    assert_eq!(container.volume_mounts.unwrap().len(), 2);
}

#[test]
fn the_image_and_resources_are_the_values() {
    let (_, container) = pod_of(&render(""));
    assert_eq!(
        container.image.as_deref(),
        Some(concat!("homeostat:", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let rendered = render(
        r#"
image: {repository: registry.example/homeostat, tag: "9.9.9", pullPolicy: Always}
resources: {requests: {cpu: 100m}, limits: {memory: 1Gi}}
"#,
    );
    let (_, container) = pod_of(&rendered);
    assert_eq!(container.image.as_deref(), Some("registry.example/homeostat:9.9.9"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    let resources = container.resources.unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "100m");
    // Maps merge as Helm merges values: the default limits' cpu stays.
    let limits = resources.limits.unwrap();
    assert_eq!((limits["memory"].0.as_str(), limits["cpu"].0.as_str()), ("1Gi", "1"));
}

/// The Deployment carries the ConfigMap's checksum, so a new config rolls
/// the pods (the base's generated ConfigMap name does that).
#[test]
fn a_new_config_rolls_the_pods() {
    let checksum = |rendered: &Rendered| {
        let deployment: Deployment = one(rendered, "Deployment");
        let annotations = deployment.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
        let checksum = annotations["checksum/config"].clone();
        assert_eq!(
            checksum,
            hex_sha256(&rendered.outputs["homeostat/templates/configmap.yaml"]),
            "not the ConfigMap's checksum"
        );
        checksum
    };
    let dry = checksum(&render(""));
    assert_ne!(dry, checksum(&render("dryRun: false")));
    assert_ne!(dry, checksum(&render("playbook: 'rules: []'")));
    assert_eq!(dry, checksum(&render("replicas: 3")), "the config did not change");
}

// ---- RBAC ----

#[test]
fn namespaces_switch_the_cluster_role_for_roles_and_the_guards_allow_list() {
    let base_rbac = read_documents(&base_dir().join("rbac.yaml"));
    let base_cluster: ClusterRole = parse("rbac.yaml", &base_rbac[0]);
    let roles = read_documents(&base_dir().join("namespaced/roles.yaml"));
    let find = |kind: &str| roles.iter().find(|d| d["kind"] == kind).unwrap();
    let base_role: Role = parse("roles.yaml", find("Role"));
    let base_nodes: ClusterRole = parse("roles.yaml", find("ClusterRole"));

    // Cluster-wide: one ClusterRole, the base's, bound to the account.
    let rendered = render("namespaces: []");
    let role: ClusterRole = one(&rendered, "ClusterRole");
    assert_eq!(role.rules, base_cluster.rules, "deploy/kubernetes/rbac.yaml's rules");
    assert_eq!(granted(role.rules.as_deref().unwrap()), needed());
    let binding: ClusterRoleBinding = one(&rendered, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let account: ServiceAccount = one(&rendered, "ServiceAccount");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), &subject.name, &subject.namespace),
        (
            "ServiceAccount",
            account.metadata.name.as_ref().unwrap(),
            &account.metadata.namespace
        )
    );
    assert!(all_of::<Role>(&rendered, "Role").is_empty());
    let (_, config, _) = pod_config(&rendered);
    assert!(config.actions.unwrap().guard.allow_namespaces.is_empty());

    // An allow-list: a Role in each namespace, the nodes' ClusterRole.
    let rendered = render("namespaces: [a, b]");
    let roles: Vec<Role> = all_of(&rendered, "Role");
    let namespaces: Vec<_> = roles.iter().map(|r| r.metadata.namespace.clone().unwrap()).collect();
    assert_eq!(namespaces, ["a", "b"]);
    for role in &roles {
        assert_eq!(
            role.rules, base_role.rules,
            "deploy/kubernetes/namespaced's Role's rules"
        );
    }
    let bindings: Vec<RoleBinding> = all_of(&rendered, "RoleBinding");
    assert_eq!(bindings.len(), 2);
    for (binding, role) in bindings.iter().zip(&roles) {
        assert_eq!(binding.metadata.namespace, role.metadata.namespace);
        assert_eq!(
            (binding.role_ref.kind.as_str(), &binding.role_ref.name),
            ("Role", role.metadata.name.as_ref().unwrap())
        );
        let subject = &binding.subjects.clone().unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("homeostat", Some("homeostat"))
        );
    }
    let nodes: ClusterRole = one(&rendered, "ClusterRole");
    assert_eq!(
        nodes.rules, base_nodes.rules,
        "the nodes' ClusterRole of namespaced/roles.yaml"
    );
    assert_eq!(nodes.metadata.name.as_deref(), Some("homeostat-nodes"));
    let node_binding: ClusterRoleBinding = one(&rendered, "ClusterRoleBinding");
    assert_eq!(node_binding.role_ref.name, "homeostat-nodes");
    let mut all = granted(roles[0].rules.as_deref().unwrap());
    all.extend(granted(nodes.rules.as_deref().unwrap()));
    assert_eq!(all, needed(), "together exactly the executor's calls");
    let (_, config, _) = pod_config(&rendered);
    assert_eq!(config.actions.unwrap().guard.allow_namespaces, ["a", "b"]);
    validate_as_the_pod(&rendered);
}

// ---- tokens ----

#[test]
fn the_tokens_secret_is_the_named_one_or_made_from_the_values() {
    // By default the chart makes no Secret: the pod mounts an existing one.
    let rendered = render("");
    assert!(all_of::<Secret>(&rendered, "Secret").is_empty());

    let rendered = render("tokens: {create: true, secretName: made, alertmanager: am-token, operator: 'op \"token\"'}");
    let secret: Secret = one(&rendered, "Secret");
    assert_eq!(secret.metadata.name.as_deref(), Some("made"));
    assert_eq!(
        secret.string_data.unwrap(),
        BTreeMap::from([
            ("alertmanager".to_owned(), "am-token".to_owned()),
            ("operator".to_owned(), "op \"token\"".to_owned()),
        ])
    );
    let keys = validate_as_the_pod(&rendered);
    assert_eq!(keys["made"], ["alertmanager", "operator"]);

    // Asked to make it without the tokens: refused, naming the value.
    let error = render_as("homeostat", "homeostat", "tokens: {create: true, operator: x}")
        .err()
        .expect("a Secret without its alertmanager token");
    assert!(error.contains("tokens.alertmanager"), "{error}");
}

// ---- network ----

#[test]
fn the_network_policy_lets_through_what_the_config_reaches() {
    let rendered = render("networkPolicy: {monitoringNamespace: observability}");
    let (_, config, _) = pod_config(&rendered);
    let policy: NetworkPolicy = one(&rendered, "NetworkPolicy");
    let egress = egress_ports(&policy);
    let spec = policy.spec.unwrap();
    let actions = config.actions.unwrap();
    for url in [&actions.prometheus_url, &actions.alertmanager_url, &config.journal.url] {
        let url = reqwest::Url::parse(url.as_deref().unwrap()).unwrap();
        let number = url.port_or_known_default().unwrap_or(5432).to_string();
        assert!(egress.contains(&number), "{url}: port {number} is not let out");
    }
    for number in ["53", "443", "6443"] {
        assert!(egress.contains(number), "port {number} is not let out");
    }
    // In and out of the monitoring namespace the value names.
    let ingress = spec.ingress.unwrap();
    let from = ingress[0].from.clone().unwrap()[0].namespace_selector.clone().unwrap();
    let to = spec.egress.unwrap()[1].to.clone().unwrap()[0]
        .namespace_selector
        .clone()
        .unwrap();
    for selector in [from, to] {
        assert_eq!(
            selector.match_labels.unwrap()["kubernetes.io/metadata.name"],
            "observability"
        );
    }
}

// ---- monitoring ----

#[test]
fn monitoring_adds_a_service_monitor_of_the_rules_job_and_the_rules() {
    let rendered = render("");
    let kinds_off = kinds(&rendered);
    assert!(!kinds_off.contains("ServiceMonitor") && !kinds_off.contains("PrometheusRule"));

    // Under another release's name, the job is still "homeostat".
    let rendered = render_as(
        "selfheal",
        "ops",
        "monitoring: {enabled: true, labels: {release: prom}}",
    )
    .unwrap();
    let service: Service = one(&rendered, "Service");
    assert_eq!(service.metadata.name.as_deref(), Some("selfheal-homeostat"));
    let monitor = raw(&rendered, "ServiceMonitor");
    assert_monitors(monitor, &service);
    // The operator names the job after the Service's label jobLabel names.
    let labels = service.metadata.labels.unwrap();
    let job = &labels[monitor["spec"]["jobLabel"].as_str().expect("jobLabel")];
    let rules = read_yaml(&root().join("rules/homeostat.rules.yml"));
    let down = alert_rule(&rules, "HomeostatDown");
    assert!(
        down["expr"].as_str().unwrap().contains(&format!("up{{job=\"{job}\"}}")),
        "{:?}",
        down["expr"]
    );
    let rule = raw(&rendered, "PrometheusRule");
    assert!(
        rule["spec"]["groups"] == rules["groups"],
        "the PrometheusRule is not rules/homeostat.rules.yml"
    );
    for object in [monitor, rule] {
        assert_eq!(object["metadata"]["labels"]["release"].as_str(), Some("prom"));
    }
}

#[test]
fn the_notes_say_what_was_installed() {
    let rendered = render("");
    assert!(rendered.notes.contains("DRY RUN"), "{}", rendered.notes);
    assert!(
        rendered.notes.contains("the Secret homeostat-tokens"),
        "{}",
        rendered.notes
    );
    assert!(rendered
        .notes
        .contains("http://homeostat.homeostat.svc:9095/api/v1/alerts"));
    let rendered = render("dryRun: false\nnamespaces: [a, b]");
    assert!(
        rendered.notes.contains("ACTING on namespaces a, b"),
        "{}",
        rendered.notes
    );
    assert_eq!(rendered.values["namespaces"][1].as_str(), Some("b"));
}
