#!/usr/bin/env bash
# Runs every test of the workspace. Installs first what the tests need and a
# fresh Debian machine lacks: Prometheus (promtool) and Alertmanager.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh --test alertmanager`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "tests/run.sh: installing ${missing[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

exec cargo test --workspace --locked "$@"
