#!/usr/bin/env bash
# Builds the production image `homeostat:<version>`: the service alone
# (`homeostat` without the lab and demo commands: no plotting, progress bars
# or archive code), as a static binary in an empty (`FROM scratch`) image.
# Nothing is pulled, so no registry is needed. The binary is built in its own
# target directory (target/service), so it never replaces the full
# `homeostat` that `cargo build --release` makes; the first build compiles
# the dependencies once (10-15 minutes on two cores).
# Usage: deploy/image.sh [TAG]   (default homeostat:<version of Cargo.toml>)
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-homeostat:$version}
target_dir=target/service
cargo build --release --locked -p homeostat --no-default-features --target-dir "$target_dir"
binary=$target_dir/x86_64-unknown-linux-gnu/release/homeostat

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp deploy/Dockerfile "$binary" "$context/"
docker build --quiet --build-arg "VERSION=$version" --tag "$tag" "$context" >/dev/null
echo "built $tag ($(du -h "$binary" | cut -f1) binary: homeostat serve, check-config, policy, thresholds)"
