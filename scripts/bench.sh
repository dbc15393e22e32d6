#!/usr/bin/env bash
# The full mapping benchmark, reproducibly: a release build of the daemon (the profile in
# Cargo.toml: opt-level s, lto, codegen-units 1, panic abort, strip), then
# `cargo bench --bench mapping` against the in-process RouterOS and NAT-PMP emulators on
# loopback, with 0/0 and 5/20 ms injected router/upstream RTT.
# The table is printed and written to <target dir>/bench-mapping.md; paste it into BENCHMARKS.md.
#   scripts/bench.sh             full run (about 70 s on 2 cores, plus the build)
#   scripts/bench.sh --quick     short run (seconds)
#   scripts/bench.sh --rtt 2/10  other scenarios (repeatable), --pool N for the router pool
#   scripts/bench.sh --calibrate inject each RTT minus the emulators' timer overshoot
#                                (table in <target dir>/bench-mapping-calibrated.md)
#   scripts/bench.sh --throughput-only --rtt 5/20 --clients 256
#                                where the concurrent phase spends its time (bench-throughput.md);
#                                BENCH_DAEMON_ENV="MAX_INFLIGHT=1024" passes settings to the daemon
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
exec cargo bench --locked --bench mapping -- "$@"
