#!/usr/bin/env bash
# Builds the container images from the static binaries scripts/static-build.sh made, with
# buildah, and writes each as a docker-archive file, the format RouterOS's
# `/container/add file=…` and `docker load` / `podman load` read:
#
#   --arch amd64  (default)  target/image/double-natpmp-amd64.tar  linux/amd64   (target/static/double-natpmp)
#   --arch arm64             target/image/double-natpmp-arm64.tar  linux/arm64   (target/static/double-natpmp-arm64)
#   --arch armv7             target/image/double-natpmp-armv7.tar  linux/arm/v7  (target/static/double-natpmp-armv7)
#   --arch all               the three, and target/image/double-natpmp-oci.tar: an OCI archive
#                            holding one multi-architecture manifest list of the three, for
#                            registries (`skopeo copy --all oci-archive:… docker://…`)
#
# Every image is named localhost/double-natpmp:<crate version>. Each is the Containerfile's final
# stage with BINARY=prebuilt, so it has the same user, environment, port, health check, entry
# point and labels as the published multi-arch image, which the release workflow pushes from the
# OCI archive this script writes. The final stage has no RUN step, so nothing is emulated for the
# ARM images and nothing is pulled (the base is scratch). buildah keeps its storage in a
# temporary directory, removed afterwards. Needs root (or a user namespace buildah can set up).
# Each file must stay within 4 MiB; the script fails otherwise.
#
# Env: SOURCE_DATE_EPOCH (default: the last commit's time) is the images' creation time and the
# file times in their layer, so the same commit and binaries give the same images.
set -euo pipefail

script=image
# shellcheck source=scripts/arches.sh
. "$(dirname "$0")/arches.sh"

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$repo/target/static"
out_dir="$repo/target/image"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
tag="localhost/double-natpmp:$version"

binary_of() { echo "$bin_dir/$(out_name "$1")"; }
platform_of() {
    case "$1" in
    amd64) echo linux/amd64 ;;
    arm64) echo linux/arm64 ;;
    armv7) echo linux/arm/v7 ;;
    esac
}

for a in "${arches[@]}"; do
    if [ ! -x "$(binary_of "$a")" ]; then
        echo "image: $(binary_of "$a") is missing: run scripts/static-build.sh --arch $a first" >&2
        exit 1
    fi
done
if ! command -v buildah >/dev/null; then
    echo "image: buildah is not installed (apt-get install buildah)" >&2
    exit 1
fi
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"

work="$(mktemp -d)"
bah() {
    buildah --root "$work/root" --runroot "$work/run" --storage-driver vfs "$@"
}
cleanup() {
    bah manifest rm "$tag-index" >/dev/null 2>&1 || true
    bah rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/context"
mkdir -p "$out_dir"

# Writes $1 to $2 (through a temporary name) and fails if it is larger than 4 MiB.
finish() {
    local tmp="$1" out="$2" size
    size=$(stat -c %s "$tmp")
    if [ "$size" -gt "$max_size" ]; then
        rm -f "$tmp"
        echo "image: $out would be $size bytes, more than 4 MiB ($max_size)" >&2
        exit 1
    fi
    mv "$tmp" "$out"
    echo "$size"
}

for a in "${arches[@]}"; do
    platform="$(platform_of "$a")"
    # The `static` build context holds only the binary, under the name the Containerfile copies.
    mkdir "$work/static-$a"
    cp "$(binary_of "$a")" "$work/static-$a/double-natpmp"
    # --format docker: the OCI image format has no HEALTHCHECK. The main build context is empty:
    # the final stage copies only from the `static` context.
    bah bud --quiet --pull=never --isolation chroot --format docker \
        --platform "$platform" --build-arg TARGETPLATFORM="$platform" \
        --build-arg BINARY=prebuilt --build-context "static=$work/static-$a" \
        --timestamp "$epoch" --identity-label=false \
        -f "$repo/Containerfile" -t "$tag-$a" "$work/context" >"$work/id-$a"
    out="$out_dir/double-natpmp-$a.tar"
    rm -f "$out.tmp"
    bah push --quiet "$tag-$a" "docker-archive:$out.tmp:$tag"
    size="$(finish "$out.tmp" "$out")"
    echo "image: $out ($tag, $platform, $size bytes, $((size / 1024)) KiB)"
done

if [ "$arch" = all ]; then
    out="$out_dir/double-natpmp-oci.tar"
    bah manifest create "$tag-index" >/dev/null
    for a in "${arches[@]}"; do
        bah manifest add "$tag-index" "$(cat "$work/id-$a")" >/dev/null
    done
    rm -f "$out.tmp"
    # --format v2s2: the list and its images stay in the Docker format, whose config keeps the
    # HEALTHCHECK (converting them to OCI manifests would drop it from the published image).
    bah manifest push --quiet --all --format v2s2 "$tag-index" "oci-archive:$out.tmp:$version"
    mv "$out.tmp" "$out"
    size=$(stat -c %s "$out")
    echo "image: $out (manifest list of linux/amd64, linux/arm64 and linux/arm/v7, tag $version, $size bytes, $((size / 1024)) KiB)"
fi
