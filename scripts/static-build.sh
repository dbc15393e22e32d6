#!/usr/bin/env bash
# Builds the static release binary for x86_64 into target/static/double-natpmp (used by
# tests/ship.rs, which runs it in an empty root).
#
# Here only the x86_64-unknown-linux-gnu target is installed, so the binary is static glibc
# (crt-static). The container images use musl instead (see Containerfile). A static glibc binary
# resolves host names without NSS modules, so give MIKROTIK_API_ADDRESS as an IP address.
#
# The relocations of the static PIE are packed (`-z pack-relative-relocs`, RELR: glibc 2.36,
# binutils 2.38): the same position-independent binary, some 170 KB smaller, since the table of
# relative relocations that glibc applies at start shrinks from ~160 KB to ~2 KB.
#
# Env: CARGO_TARGET_DIR (default: <repo>/target) is where cargo builds; the result is always
# copied to <repo>/target/static/.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
target=x86_64-unknown-linux-gnu
build_dir="${CARGO_TARGET_DIR:-$repo/target}"
out_dir="$repo/target/static"

cd "$repo"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
    cargo build --release --locked --target "$target" --bin double-natpmp

bin="$build_dir/$target/release/double-natpmp"
if ldd "$bin" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
    :
else
    echo "static-build: $bin is dynamically linked:" >&2
    ldd "$bin" >&2 || true
    exit 1
fi

mkdir -p "$out_dir"
cp "$bin" "$out_dir/double-natpmp.tmp"
# The release profile already strips; strip again in case RUSTFLAGS or the profile changed.
strip "$out_dir/double-natpmp.tmp" 2>/dev/null || true
mv "$out_dir/double-natpmp.tmp" "$out_dir/double-natpmp"
size=$(stat -c %s "$out_dir/double-natpmp")
echo "$size" > "$out_dir/double-natpmp.size"
echo "static-build: $out_dir/double-natpmp ($size bytes, $((size / 1024)) KiB, $(file -b "$out_dir/double-natpmp" 2>/dev/null | cut -d, -f1-2 || echo static))"
