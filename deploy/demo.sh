#!/usr/bin/env bash
# The local self-healing demo in one command: installs Prometheus and
# Alertmanager if missing, builds homeostat and the demo services (static
# release binaries), then runs `homeostat demo`. Extra arguments go to it,
# e.g. `deploy/demo.sh --faults crash,hang,none`. The report lands in
# ./demo-report unless --report says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/prerequisites.sh
cargo build --release --workspace --locked
report=(--report demo-report)
for arg in "$@"; do
  [[ "$arg" == --report* ]] && report=()
done
exec cargo run --release --locked --quiet -- demo "${report[@]}" "$@"
