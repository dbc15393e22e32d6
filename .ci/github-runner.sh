#!/usr/bin/env bash
# Turns the bare Debian 12 container of a hosted CI runner (.github/workflows/) into what the
# project's own machines already are: Rust (the toolchain below, with cargo), a C compiler and
# the static glibc for the x86_64 binary, git, and Python's venv module. Everything the tests
# need beyond that, the test command (scripts/test.sh) installs itself, as on any fresh machine.
# Needs root.
set -euo pipefail

RUST_TOOLCHAIN=1.95.0

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential ca-certificates curl file git procps python3 python3-venv >/dev/null
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --default-toolchain "$RUST_TOOLCHAIN"
fi
# The checkout belongs to another user than the container's root.
git config --global --add safe.directory "$(pwd)"
