# Sourced by scripts/static-build.sh and scripts/image.sh: reads their one option,
# `--arch amd64|arm64|armv7|all` (default amd64), into `arch` and the list `arches`; a wrong
# argument exits with the usage ($script names the caller in the messages). Also what both
# agree on: each architecture's binary name in target/static (`out_name`) and the 4 MiB limit
# of a binary and of an image (`max_size`).
arches_usage() {
    echo "usage: $0 [--arch amd64|arm64|armv7|all]" >&2
    exit 2
}
arch=amd64
while (($#)); do
    case "$1" in
    --arch) [ $# -ge 2 ] || arches_usage; arch="$2"; shift 2 ;;
    --arch=*) arch="${1#--arch=}"; shift ;;
    -h | --help) arches_usage ;;
    *) echo "$script: unknown argument '$1'" >&2; arches_usage ;;
    esac
done
case "$arch" in
amd64 | arm64 | armv7) arches=("$arch") ;;
all) arches=(amd64 arm64 armv7) ;;
*) echo "$script: --arch is '$arch'; expected amd64, arm64, armv7 or all" >&2; exit 2 ;;
esac

max_size=$((4 * 1024 * 1024))
out_name() {
    case "$1" in
    amd64) echo double-natpmp ;;
    *) echo "double-natpmp-$1" ;;
    esac
}
