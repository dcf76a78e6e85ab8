//! The shipped example config, read as a user would, and where relative
//! paths in a config resolve: next to the config file, wherever homeostat
//! is started from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use homeostat_core::config::{Config, DockerConfig};

#[test]
fn the_shipped_example_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/homeostat.example.yaml");
    let config = Config::load(&path).unwrap();
    assert!(config.server.listen.ip().is_loopback());
    assert_eq!(config.journal.path, path.parent().unwrap().join("homeostat.db"));
    let actions = config.actions.as_ref().unwrap();
    assert!(actions.dry_run, "the shipped example must not act");
    assert_eq!(
        actions.guard,
        homeostat_core::guard::GuardConfig::default(),
        "documented guard defaults drifted"
    );
    assert_eq!(actions.docker, DockerConfig::default());
    assert_eq!(actions.target_labels, homeostat_core::action::TargetLabels::default());
    config.validate(&path, &HashMap::<String, String>::new()).unwrap();
}

/// A config copied elsewhere finds its playbook next to itself, whatever
/// the working directory; a missing one is named by its resolved path.
#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("etc");
    std::fs::create_dir(&nested).unwrap();
    std::fs::write(
        nested.join("playbook.yml"),
        "rules:\n  - {name: a, actions: [notify]}\n",
    )
    .unwrap();
    let file = nested.join("homeostat.yaml");
    std::fs::write(
        &file,
        "journal:\n  path: data/j.db\nactions:\n  backend: docker\n  playbook: playbook.yml\n",
    )
    .unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.journal.path, nested.join("data/j.db"));
    assert_eq!(config.actions.as_ref().unwrap().playbook, nested.join("playbook.yml"));
    config.validate(&file, &HashMap::<String, String>::new()).unwrap();

    std::fs::write(&file, "actions:\n  backend: docker\n  playbook: missing.yml\n").unwrap();
    let err = Config::load(&file)
        .unwrap()
        .validate(&file, &HashMap::<String, String>::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&nested.join("missing.yml").display().to_string()), "{err}");
    // An empty config file (every default) keeps the working directory.
    std::fs::write(&file, "").unwrap();
    assert_eq!(Config::load(&file).unwrap().journal.path, PathBuf::from("homeostat.db"));
}
