#!/usr/bin/env bash
# Lets this machine run the ARM binaries and images as they are: registers Debian's qemu-user
# (package qemu-user-static) for aarch64 and 32-bit ARM with the kernel's binfmt_misc, mounting
# binfmt_misc first if it is not. The entries' `F` flag opens the interpreter at registration,
# so it also serves binaries in an empty root or a container. An entry already registered is
# left as it is. Needs root. The registration lasts until the machine restarts.
set -euo pipefail

dir=/proc/sys/fs/binfmt_misc
if [ "$(id -u)" -ne 0 ]; then
    echo "qemu-binfmt: not root: cannot register qemu-user with binfmt_misc" >&2
    exit 1
fi
if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir" \
        || { echo "qemu-binfmt: cannot mount binfmt_misc on $dir" >&2; exit 1; }
fi
for entry in qemu-aarch64 qemu-arm; do
    conf="/usr/lib/binfmt.d/$entry.conf"
    [ -f "$conf" ] || { echo "qemu-binfmt: $conf is missing (apt-get install qemu-user-static)" >&2; exit 1; }
    if [ ! -e "$dir/$entry" ]; then
        # The file is one registration line; the kernel takes it written in one go.
        cat "$conf" >"$dir/register" || { echo "qemu-binfmt: the kernel refused $conf" >&2; exit 1; }
    fi
    grep -q '^enabled' "$dir/$entry" || { echo "qemu-binfmt: $dir/$entry is not enabled" >&2; exit 1; }
    echo "qemu-binfmt: $entry -> $(sed -n 's/^interpreter //p' "$dir/$entry")"
done
