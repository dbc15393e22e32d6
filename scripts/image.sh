#!/usr/bin/env bash
# Builds the container image from the static binary (target/static/double-natpmp, made by
# scripts/static-build.sh) with buildah, and writes it as a docker-archive file, the format
# RouterOS's `/container/add file=…` and `docker load` / `podman load` read:
#
#   target/image/double-natpmp-amd64.tar   (image localhost/double-natpmp:<crate version>)
#
# The image is the Containerfile's final stage with BINARY=prebuilt, so it has the same user,
# environment, port, health check, entry point and labels as the published multi-arch images;
# only the binary comes from here instead of the Containerfile's musl builder stage. Nothing is
# pulled (the base is scratch) and nothing runs in a container. buildah keeps its storage in a
# temporary directory, removed afterwards. Needs root (or a user namespace buildah can set up).
#
# Env: SOURCE_DATE_EPOCH (default: the last commit's time) is the image's creation time and
# the file times in its layer, so the same commit and binary give the same image.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
bin_dir="$repo/target/static"
out_dir="$repo/target/image"
out="$out_dir/double-natpmp-amd64.tar"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)"
tag="localhost/double-natpmp:$version"

if [ ! -x "$bin_dir/double-natpmp" ]; then
    echo "image: $bin_dir/double-natpmp is missing: run scripts/static-build.sh first" >&2
    exit 1
fi
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
    bah rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/context"

# --format docker: the OCI image format has no HEALTHCHECK. The main build context is empty:
# the final stage copies only from the `static` context (the binary's directory).
bah bud --quiet --pull=never --isolation chroot --format docker \
    --platform linux/amd64 --build-arg TARGETPLATFORM=linux/amd64 \
    --build-arg BINARY=prebuilt --build-context "static=$bin_dir" \
    --timestamp "$epoch" --identity-label=false \
    -f "$repo/Containerfile" -t "$tag" "$work/context" >/dev/null

mkdir -p "$out_dir"
rm -f "$out.tmp"
bah push --quiet "$tag" "docker-archive:$out.tmp:$tag"
mv "$out.tmp" "$out"
size=$(stat -c %s "$out")
echo "image: $out ($tag, linux/amd64, $size bytes, $((size / 1024)) KiB)"
