#!/usr/bin/env bash
# Fuzz one target for a fixed time, single core, and print the execution count.
#
# usage: fuzz/run.sh <natpmp_request|natpmp_response|routeros_decode> <seconds>
#
# Environment: SANITIZER (default "address"; "none" if the ASan runtime is missing),
# CARGO_TARGET_DIR (default fuzz/target). Only a stable toolchain is needed: cargo-fuzz's
# nightly flags are unlocked with RUSTC_BOOTSTRAP=1.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <natpmp_request|natpmp_response|routeros_decode> <seconds>" >&2
    exit 2
fi
target=$1
secs=$2
here=$(cd "$(dirname "$0")" && pwd)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
sanitizer=${SANITIZER:-address}
corpus=$here/corpus/$target
logs=$here/logs
mkdir -p "$corpus" "$logs"

# --- seed corpus: the test vectors of docs/conformance.md (appendix) and docs/routeros-api.md §1.1 --
seed() { # seed <name> <printf-format>
    printf "$2" >"$corpus/seed-$1"
}
word() { # one RouterOS API word (< 128 bytes: a one-byte length prefix)
    printf "\\x$(printf %02x "${#1}")%s" "$1"
}
sentence() { # words and the zero-length terminator
    local w
    for w in "$@"; do word "$w"; done
    printf '\x00'
}
epoch='\x00\xbc\x61\x4e' # natpmp_request reads a 4-byte SSSoE before the datagram
case $target in
natpmp_request)
    seed op0 "$epoch\x00\x00"
    seed op0-trailing "$epoch\x00\x00\xde\xad"
    seed map-tcp "$epoch\x00\x02\x00\x00\x1a\xe1\x1a\xe1\x00\x00\x0e\x10"
    seed map-reserved "$epoch\x00\x01\xff\xff\x1a\xe1\x1a\xe1\x00\x00\x0e\x10"
    seed delete-one "$epoch\x00\x01\x00\x00\x1a\xe1\x00\x00\x00\x00\x00\x00"
    seed delete-all "$epoch\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    seed proton-default "$epoch\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x00\x3c"
    seed op7 "$epoch\x00\x07\x00\x00\x1a\xe1\x1a\xe1\x00\x00\x0e\x10"
    seed op7-short "$epoch\x00\x07"
    seed response "$epoch\x00\x81\x00\x00\x00\x00\x00\x01\x1a\xe1\x1a\xe1\x00\x00\x00\x3c"
    seed short "$epoch\x00"
    seed map-short "$epoch\x00\x02\x00\x00\x1a\xe1\x1a\xe1\x00\x00\x0e"
    seed v1 "$epoch\x01\x00"
    pcp="\x02\x01\x00\x00\x00\x00\x0e\x10$(printf '\\x00%.0s' {1..10})\xff\xff\xc0\xa8\x58\x0a"
    pcp="$pcp$(printf '\\x5a%.0s' {1..12})\x11\x00\x00\x00\x1a\xe1\x1a\xe1$(printf '\\x00%.0s' {1..16})"
    seed pcp-map "$epoch$pcp"
    ;;
natpmp_response)
    seed address '\x00\x80\x00\x00\x00\xbc\x61\x4e\xcb\x00\x71\x09'
    seed address-fail '\x00\x80\x00\x03\x00\xbc\x61\x4e\x0a\x02\x00\x01'
    seed map-tcp '\x00\x82\x00\x00\x00\xbc\x61\x4e\x1a\xe1\xc8\x22\x00\x00\x00\x3c'
    seed delete-one '\x00\x81\x00\x00\x00\xbc\x61\x4e\x1a\xe1\x00\x00\x00\x00\x00\x00'
    seed delete-all '\x00\x81\x00\x00\x00\xbc\x61\x4e\x00\x00\x00\x00\x00\x00\x00\x00'
    seed unsupported-version '\x00\x80\x00\x01\x00\xbc\x61\x4e'
    seed miniupnpd-short '\x00\x81\x00\x05\x00\xbc\x61\x4e'
    seed pre-erratum '\x00\x00\x00\x01\x00\xbc\x61\x4e'
    seed unknown-result '\x00\x80\x00\x06\x00\xbc\x61\x4e\x01\x02\x03\x04'
    ;;
routeros_decode)
    sentence '!done' '=ret=*1' >"$corpus/seed-done-ret"
    sentence '!re' '.tag=3' '=.id=*A' '=chain=dstnat' '=comment=double-natpmp a=b' \
        >"$corpus/seed-re"
    sentence '!trap' '=message=failure: already have such entry' >"$corpus/seed-trap"
    sentence '!fatal' 'not logged in' >"$corpus/seed-fatal"
    { sentence '!empty'; sentence '!done'; } >"$corpus/seed-empty-done"
    sentence '/login' '=name=natpmp' '=password=secret' >"$corpus/seed-login"
    sentence '/ip/firewall/nat/print' '?chain=dstnat' '?#|' '.tag=7' >"$corpus/seed-print"
    # A 256-byte word: its length prefix 81 00 contains a zero byte.
    { printf '\x02/x\x81\x00'; printf 'a%.0s' {1..256}; printf '\x00'; } >"$corpus/seed-256"
    printf '\xf0\x00\x00\x00\x05hello\x00' >"$corpus/seed-5byte-len"
    ;;
*)
    echo "unknown target $target" >&2
    exit 2
    ;;
esac

cd "$here"
cargo fuzz build -O -s "$sanitizer" "$target"
log=$logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log
echo "fuzzing $target for $secs s (sanitizer $sanitizer), log $log"
# -jobs=1 -workers=1: one fuzzing process on one core; libFuzzer writes its output to
# fuzz-0.log in the working directory, hence the cd.
status=0
(cd "$logs" && rm -f fuzz-0.log && cargo fuzz run --fuzz-dir "$here" -O -s "$sanitizer" \
    "$target" "$corpus" -- -max_total_time="$secs" -jobs=1 -workers=1 \
    -print_final_stats=1) >"$log.driver" 2>&1 || status=$?
cat "$logs/fuzz-0.log" >"$log" 2>/dev/null || true
cat "$log.driver" >>"$log"
rm -f "$log.driver" "$logs/fuzz-0.log"

execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
if [ -z "$execs" ]; then
    execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
fi
files=$(find "$corpus" -type f | wc -l)
bytes=$(du -sb "$corpus" | cut -f1)
echo "target:     $target"
echo "duration:   $secs s"
echo "executions: ${execs:-unknown}"
echo "corpus:     $files files, $bytes bytes"
if [ "$status" -ne 0 ] || grep -qE '^==[0-9]+==|panicked at|SUMMARY: ' "$log"; then
    echo "result:     CRASH (exit $status), see $log and $here/artifacts/$target" >&2
    exit 1
fi
echo "result:     no crash"
