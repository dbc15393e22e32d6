#!/usr/bin/env bash
# Fuzz one target for a fixed time, single core, and print the execution count.
#
# usage: fuzz/run.sh <natpmp_request|natpmp_response|routeros_decode|stun_decode> <seconds>
#
# Environment: SANITIZER (default "address"; "none" if the ASan runtime is missing),
# CARGO_TARGET_DIR (default fuzz/target). Only a stable toolchain is needed: cargo-fuzz's
# nightly flags are unlocked with RUSTC_BOOTSTRAP=1.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 <natpmp_request|natpmp_response|routeros_decode|stun_decode> <seconds>" >&2
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
stun_decode)
    # RFC 5769 §2.1-§2.3 (docs/stun.md §5): the sample request and the IPv4 and IPv6 responses.
    txid='\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae'
    sw='\x80\x22\x00\x0b\x74\x65\x73\x74\x20\x76\x65\x63\x74\x6f\x72\x20'
    seed rfc5769-request "\x00\x01\x00\x58\x21\x12\xa4\x42$txid\
\x80\x22\x00\x10\x53\x54\x55\x4e\x20\x74\x65\x73\x74\x20\x63\x6c\x69\x65\x6e\x74\
\x00\x24\x00\x04\x6e\x00\x01\xff\x80\x29\x00\x08\x93\x2f\xf9\xb1\x51\x26\x3b\x36\
\x00\x06\x00\x09\x65\x76\x74\x6a\x3a\x68\x36\x76\x59\x20\x20\x20\
\x00\x08\x00\x14\x9a\xea\xa7\x0c\xbf\xd8\xcb\x56\x78\x1e\xf2\xb5\xb2\xd3\xf2\x49\xc1\xb5\x71\xa2\
\x80\x28\x00\x04\xe5\x7a\x3b\xcf"
    seed rfc5769-ipv4 "\x01\x01\x00\x3c\x21\x12\xa4\x42$txid$sw\
\x00\x20\x00\x08\x00\x01\xa1\x47\xe1\x12\xa6\x43\
\x00\x08\x00\x14\x2b\x91\xf5\x99\xfd\x9e\x90\xc3\x8c\x74\x89\xf9\x2a\xf9\xba\x53\xf0\x6b\xe7\xd7\
\x80\x28\x00\x04\xc0\x7d\x4c\x96"
    seed rfc5769-ipv6 "\x01\x01\x00\x48\x21\x12\xa4\x42$txid$sw\
\x00\x20\x00\x14\x00\x02\xa1\x47\x01\x13\xa9\xfa\xa5\xd3\xf1\x79\xbc\x25\xf4\xb5\xbe\xd2\xb9\xd9\
\x00\x08\x00\x14\xa3\x82\x95\x4e\x4b\xe6\x7b\xf1\x17\x84\xc9\x7c\x82\x92\xc2\x75\xbf\xe3\xed\x41\
\x80\x28\x00\x04\xc8\xfb\x0b\x4c"
    # A Binding Request with CHANGE-REQUEST (IP and port) and RESPONSE-PORT 40000, no FINGERPRINT.
    seed change-request "\x00\x01\x00\x10\x21\x12\xa4\x42$txid\
\x00\x03\x00\x04\x00\x00\x00\x06\x00\x27\x00\x04\x9c\x40\x00\x00"
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
