#!/usr/bin/env bash
# Runs every test of the workspace. Installs first what the tests need and a
# fresh Debian machine lacks: Prometheus (promtool) and Alertmanager. The
# Docker tests use the running Docker Engine; no image is pulled.
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

# Docker Engine is not installed here: the machines this project targets run
# it already. Say so plainly rather than fail deep inside a test.
if ! docker info >/dev/null 2>&1; then
  echo "tests/run.sh: the Docker tests need a running Docker Engine and the docker CLI (docker info failed)" >&2
  exit 1
fi

exec cargo test --workspace --locked "$@"
