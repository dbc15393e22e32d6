#!/usr/bin/env bash
# The full mapping benchmark, reproducibly: a release build of the daemon (the profile in
# Cargo.toml: opt-level z, lto, codegen-units 1, panic abort, strip), then
# `cargo bench --bench mapping` (benches/mapping/) against the in-process RouterOS and NAT-PMP
# emulators on loopback: the proton and bulk gateway profiles at 0/0, 5/20 and 20/5 ms injected
# router/upstream RTT (new mappings, renewals, and the proton profile's deletes), 10,000
# mappings (memory, reconcile, a start with their rules), and 100 idle leases renewing every
# 30 s (CPU time and wake-ups from /proc).
# The tables are printed and written to <target dir>/bench-mapping.md; BENCHMARKS.md holds the
# last full run (the bench reads its "measured" column as the previous run's figures).
#   scripts/bench.sh             full run (about 7 minutes on 2 cores, plus the build)
#   scripts/bench.sh --quick     short run (about 2 minutes)
#   scripts/bench.sh --rtt 2/10  other scenarios (repeatable), --pool N for the router pool
#   scripts/bench.sh --profile proton|bulk --only latency|scale|idle
#                                one profile, one part (both repeatable); the delete rows alone:
#                                --profile proton --only latency --rtt 5/20 --rtt 20/5
#   scripts/bench.sh --throughput-only --rtt 5/20 --clients 256
#                                where the concurrent phase spends its time (bench-throughput.md);
#                                BENCH_DAEMON_ENV="MAX_INFLIGHT=1024" passes settings to the daemon
#
# The daemon measured is the static build that ships (scripts/static-build.sh, the binary of
# the container image the tests build), unless BENCH_DAEMON names another: a static binary maps
# no shared libraries, so its RSS is what a router runs. The dynamic build cargo makes for the
# bench measures 1.4 MiB more file-backed RSS (glibc and the loader's pages):
#   BENCH_DAEMON=target/release/double-natpmp scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
if [ -z "${BENCH_DAEMON:-}" ]; then
    scripts/static-build.sh
    BENCH_DAEMON="$PWD/target/static/double-natpmp"
    export BENCH_DAEMON
fi
exec cargo bench --locked --bench mapping -- "$@"
