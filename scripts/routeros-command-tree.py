#!/usr/bin/env python3
"""Rebuilds crates/emulators/src/routeros/command_tree.txt, the RouterOS command trees that
tests/component/routeros_commands.rs checks the scripts and the daemon against and that the
emulator (crates/emulators/src/routeros/schema.rs) uses to answer `unknown parameter <name>`.

Input: a JSON file of this shape (RouterOS's /console/inspect output reduced to command paths
and argument names, as in tikoci/restraml's docs/<version>/extra/inspect.json):

    {"_source": "<where the trees come from, with the commit>",
     "versions": {"7.19.6": {"/": ["beep", "delay", ...],
                             "/container/add": ["cmd", "comment", ...], ...}, ...}}

Only the menus in MENUS (and their commands) are kept, plus "/" (the root scripting commands).
Versions whose argument lists are the same are folded into one line, FIRST..LAST.

    scripts/routeros-command-tree.py routeros-commands.json > crates/emulators/src/routeros/command_tree.txt
"""

import json
import sys

# The menus routeros/*.rsc and the daemon (src/routeros, src/cli) use. A command the checker
# cannot find fails the test; add its menu here and regenerate.
MENUS = [
    "/certificate/settings",
    "/container",
    "/container/config",
    "/container/envs",
    "/file",
    "/interface",
    "/interface/bridge",
    "/interface/bridge/port",
    "/interface/list",
    "/interface/list/member",
    "/interface/veth",
    "/ip/address",
    "/ip/dns",
    "/ip/firewall/filter",
    "/ip/firewall/mangle",
    "/ip/firewall/nat",
    "/ip/nat-pmp",
    "/ip/route",
    "/ip/service",
    "/log",
    "/routing/table",
    "/system/device-mode",
    "/system/identity",
    "/system/resource",
    "/system/script",
    "/user",
    "/user/group",
]


def version_key(v):
    return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: routeros-command-tree.py <routeros-commands.json>\n")
        return 2
    with open(argv[1], encoding="utf-8") as f:
        data = json.load(f)
    versions = sorted(data["versions"], key=version_key)
    trees = data["versions"]

    def wanted(path):
        return path == "/" or path.rsplit("/", 1)[0] in MENUS

    paths = sorted({p for v in versions for p in trees[v] if wanted(p)})
    out = [
        "# RouterOS command trees for the menus double-natpmp's scripts and daemon use: for each",
        "# command path, the names of the arguments RouterOS accepts; the path / lists the root",
        "# scripting commands (:local, :if, ...).",
        "# source: " + data["_source"],
        "# made by: scripts/routeros-command-tree.py from a JSON of those trees (command path ->",
        "# sorted argument names per version), keeping only the menus listed in that script.",
        "# line: <version, or FIRST..LAST of the versions line> <path> <argument>...",
        "versions " + " ".join(versions),
    ]
    for path in paths:
        i = 0
        while i < len(versions):
            tree = trees[versions[i]]
            if path not in tree:
                i += 1
                continue
            args = sorted(tree[path])
            j = i
            while (
                j + 1 < len(versions)
                and path in trees[versions[j + 1]]
                and sorted(trees[versions[j + 1]][path]) == args
            ):
                j += 1
            span = versions[i] if i == j else versions[i] + ".." + versions[j]
            out.append(" ".join([span, path] + args))
            i = j + 1
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
