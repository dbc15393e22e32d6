#!/usr/bin/env bash
# Installs the Rust compiler that builds the ARM binaries (aarch64 and armv7) and prints the path
# of a `rustc` wrapper for it on stdout (everything else goes to stderr). Called by
# scripts/static-build.sh; safe to run again (a finished install is reused).
#
# rustup cannot fetch other targets on the build machines, but Debian ships a second Rust
# compiler, `rustc-web`, together with its standard library for arm64 and armhf. The compiler and
# each target's standard library must be the same version, and the security suite may carry a
# newer amd64 compiler before the arm64/armhf libraries of that version exist, so this picks the
# newest version present for all three architectures. `apt-get install libstd-rust-web-dev:arm64`
# fails when the per-architecture indexes carry different point releases of shared libraries, so
# the `.deb` files are downloaded and unpacked with `dpkg-deb -x` into a private prefix instead,
# which needs no dependency resolution and leaves the machine's package set alone: the indexes for
# arm64 and armhf are read into a private apt state directory, not the machine's.
#
# Installed into the machine (root, apt-get): the compiler's LLVM library (libllvmNN, read from
# rustc-web's dependencies) and the gcc cross linkers gcc-aarch64-linux-gnu and
# gcc-arm-linux-gnueabihf, whose libc6-dev-*-cross packages carry the libc.a that a static
# (+crt-static) binary links.
#
# Env: ARM_TOOLCHAIN_DIR (default: <repo>/target/arm-toolchain) holds the apt state and one
# prefix per compiler version.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
base="${ARM_TOOLCHAIN_DIR:-$repo/target/arm-toolchain}"

fail() {
    echo "arm-toolchain: $*" >&2
    exit 1
}
log() { echo "arm-toolchain: $*" >&2; }

for tool in apt-get apt-cache dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || fail "$tool is missing: this script needs Debian's apt and dpkg"
done

# The machine's own packages: the cross linkers (with their static libc).
need=()
for p in gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done

# A private apt state that knows arm64 and armhf, without `dpkg --add-architecture`.
state="$base/apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
apt_opts=(
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
    -o "Dir::Cache::pkgcache=$state/cache/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$state/cache/srcpkgcache.bin"
    -o "APT::Architectures::=amd64" -o "APT::Architectures::=arm64" -o "APT::Architectures::=armhf"
    -o "APT::Sandbox::User=root"
)
# The indexes are read again when they are older than a day (or missing).
if [ -z "$(find "$state/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit)" ]; then
    log "reading the package indexes for amd64, arm64 and armhf"
    # A mirror in mid-sync can fail one index; the versions the others list are still usable,
    # and the check below refuses a version missing for any architecture.
    if ! apt-get "${apt_opts[@]}" -o Debug::NoLocking=1 -qq update >"$state/update.log" 2>&1; then
        log "some package indexes failed to download (see $state/update.log); using the rest"
    fi
fi

versions() { # package[:arch] -> its versions, one a line
    apt-cache "${apt_opts[@]}" madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -u
}
common="$(comm -12 <(versions rustc-web) <(versions libstd-rust-web-dev:arm64) | comm -12 - <(versions libstd-rust-web-dev:armhf))"
[ -n "$common" ] || fail "no rustc-web version is listed for amd64 with libstd-rust-web-dev for both arm64 and armhf (amd64: $(versions rustc-web | tr '\n' ' ')arm64: $(versions libstd-rust-web-dev:arm64 | tr '\n' ' ')armhf: $(versions libstd-rust-web-dev:armhf | tr '\n' ' '))"
version=""
while read -r v; do
    if [ -z "$version" ] || dpkg --compare-versions "$v" gt "$version"; then version="$v"; fi
done <<<"$common"
short="$(echo "$version" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')"

prefix="$base/$version"
wrapper="$prefix/rustc"
# The compiler's LLVM, a dependency of its amd64 library package (librustc_driver).
llvm="$(apt-cache "${apt_opts[@]}" show "rustc-web=$version" "libstd-rust-web-$short=$version" 2>/dev/null \
    | sed -n 's/^Depends: //p' | tr ',' '\n' | grep -o 'libllvm[0-9]*' | head -n 1 || true)"
if [ -n "$llvm" ] && ! dpkg-query -W -f='${Status}' "$llvm" 2>/dev/null | grep -q "install ok installed"; then
    need+=("$llvm")
fi
if ((${#need[@]})); then
    [ "$(id -u)" -eq 0 ] || fail "not root: cannot install ${need[*]} (apt-get install ${need[*]})"
    log "installing ${need[*]}"
    apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
        || fail "apt-get install ${need[*]} failed"
fi

if [ ! -f "$prefix/.complete" ]; then
    log "installing rustc-web $version with the standard library for amd64, arm64 and armhf into $prefix"
    rm -rf "$prefix"
    mkdir -p "$prefix/debs"
    pkgs=("rustc-web=$version" "libstd-rust-web-$short=$version" "libstd-rust-web-dev=$version"
        "libstd-rust-web-$short:arm64=$version" "libstd-rust-web-dev:arm64=$version"
        "libstd-rust-web-$short:armhf=$version" "libstd-rust-web-dev:armhf=$version")
    (cd "$prefix/debs" && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" >&2) \
        || fail "apt-get download ${pkgs[*]} failed"
    for deb in "$prefix"/debs/*.deb; do
        dpkg-deb -x "$deb" "$prefix/root" || fail "dpkg-deb -x $deb failed"
    done
    rm -rf "$prefix/debs"
    cat >"$wrapper" <<EOF
#!/bin/sh
# rustc-web $version from unpacked Debian packages; librustc_driver lives beside its libraries.
LD_LIBRARY_PATH="$prefix/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$prefix/root/usr/bin/rustc" "\$@"
EOF
    chmod +x "$wrapper"
    sysroot="$("$wrapper" --print sysroot)" || fail "the unpacked rustc $version does not run (is $llvm installed?)"
    for triple in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
        [ -d "$sysroot/lib/rustlib/$triple/lib" ] || fail "rustc $version has no standard library for $triple under $sysroot/lib/rustlib"
    done
    touch "$prefix/.complete"
fi
log "rustc $("$wrapper" --version)"
echo "$wrapper"
