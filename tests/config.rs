//! The shipped example config, read as a user would: from the repository's
//! root, where its relative paths (the playbook) resolve.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use homeostat_core::config::{Config, DockerConfig};

#[test]
fn the_shipped_example_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/homeostat.example.yaml");
    let config = Config::load(&path).unwrap();
    assert!(config.server.listen.ip().is_loopback());
    assert_eq!(config.journal.path, PathBuf::from("homeostat.db"));
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
