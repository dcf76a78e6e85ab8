#!/usr/bin/env bash
# Runs every test of the workspace. Installs first what the tests need and a
# fresh Debian machine lacks: Prometheus (promtool), Alertmanager and
# PostgreSQL's server binaries (deploy/prerequisites.sh). The Docker tests
# use the running Docker Engine; no image is pulled.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh --test alertmanager`.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/prerequisites.sh

# The end-to-end demo test runs the services' binaries, which `cargo test`
# does not build (they belong to other workspace members).
cargo build --workspace --bins --locked
exec cargo test --workspace --locked "$@"
