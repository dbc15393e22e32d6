#!/usr/bin/env bash
# Builds the static release binaries into target/static/:
#
#   --arch amd64  (default)  target/static/double-natpmp        x86_64
#   --arch arm64             target/static/double-natpmp-arm64  aarch64 (RB5009, hAP ax², CCR2004 …)
#   --arch armv7             target/static/double-natpmp-armv7  32-bit ARM, hard float (hAP ac², RB4011 …)
#   --arch all               all three
#
# Each binary is static glibc (crt-static) for the *-linux-gnu target, checked with `file` for its
# architecture and static linking, and must stay within 4 MiB; the script fails otherwise and
# leaves no binary behind. A static glibc binary resolves host names without NSS modules, so give
# MIKROTIK_API_ADDRESS as an IP address. tests/ship/ship.rs runs the binaries in an empty root and
# scripts/image.sh puts them into the container images.
#
# x86_64 is built with the machine's own Rust toolchain. The ARM binaries are built with Debian's
# rustc-web and its standard library for arm64 and armhf, which scripts/arm-toolchain.sh installs
# (with the gcc cross linkers), and the machine's cargo; both ARM targets go through one cargo
# run, so the shared build scripts are built once and the two link steps can overlap.
#
# The relocations of the x86_64 static PIE are packed (`-z pack-relative-relocs`, RELR: glibc
# 2.36, binutils 2.38): the same position-independent binary, some 170 KB smaller, since the
# table of relative relocations that glibc applies at start shrinks from ~160 KB to ~2 KB.
#
# Env: CARGO_TARGET_DIR (default: <repo>/target) is where cargo builds; the results are always
# copied to <repo>/target/static/.
set -euo pipefail

script=static-build
# shellcheck source=scripts/arches.sh
. "$(dirname "$0")/arches.sh"

repo="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="${CARGO_TARGET_DIR:-$repo/target}"
out_dir="$repo/target/static"
cd "$repo"
mkdir -p "$out_dir"

triple_of() {
    case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    esac
}
# What `file` says of each architecture's binary.
file_arch() {
    case "$1" in
    amd64) echo "x86-64" ;;
    arm64) echo "ARM aarch64" ;;
    armv7) echo "ARM, EABI5" ;;
    esac
}

# Checks a built binary and copies it to target/static/ under its name; nothing is copied when a
# check fails.
install_binary() {
    local a="$1" bin="$2" name desc size
    name="$(out_name "$a")"
    [ -f "$bin" ] || { echo "static-build: $bin was not built" >&2; exit 1; }
    desc="$(file -b "$bin")"
    case "$desc" in
    *"$(file_arch "$a")"*) ;;
    *) echo "static-build: $bin is not a $a binary: $desc" >&2; exit 1 ;;
    esac
    case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "static-build: $bin is not statically linked: $desc" >&2; exit 1 ;;
    esac
    size=$(stat -c %s "$bin")
    if [ "$size" -gt "$max_size" ]; then
        echo "static-build: $bin is $size bytes, more than 4 MiB ($max_size)" >&2
        exit 1
    fi
    cp "$bin" "$out_dir/$name.tmp"
    mv "$out_dir/$name.tmp" "$out_dir/$name"
    echo "$size" >"$out_dir/$name.size"
    echo "static-build: $out_dir/$name ($size bytes, $((size / 1024)) KiB, $(echo "$desc" | cut -d, -f1-2))"
}

arm_targets=()
for a in "${arches[@]}"; do
    if [ "$a" = amd64 ]; then
        # The release profile strips (Cargo.toml), so the binary is used as cargo leaves it.
        # No .eh_frame_hdr: with panic = "abort" nothing unwinds, and the table only served
        # backtraces (72 KB of the 4 MiB budget; a panic still prints its message).
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,--no-eh-frame-hdr" \
            cargo build --release --locked --target x86_64-unknown-linux-gnu --bin double-natpmp
        install_binary amd64 "$build_dir/x86_64-unknown-linux-gnu/release/double-natpmp"
    else
        arm_targets+=(--target "$(triple_of "$a")")
    fi
done

if ((${#arm_targets[@]})); then
    rustc_web="$("$repo/scripts/arm-toolchain.sh")" || {
        echo "static-build: the ARM toolchain could not be installed (scripts/arm-toolchain.sh, above)" >&2
        exit 1
    }
    # Per-target settings only: the build scripts run on this machine and need no linker flags.
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS RUSTC="$rustc_web" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
        CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
        CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static" \
        CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
        cargo build --release --locked "${arm_targets[@]}" --bin double-natpmp
    for a in "${arches[@]}"; do
        [ "$a" = amd64 ] && continue
        install_binary "$a" "$build_dir/$(triple_of "$a")/release/double-natpmp"
    done
fi
