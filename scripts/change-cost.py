#!/usr/bin/env python3
"""How many files of the daemon a change would touch, counted from the names they import, at
one or more commits: the figures of docs/architecture.md §9 and of the architecture step's
closing note.

    scripts/change-cost.py 53e712b HEAD        # counts
    V=1 scripts/change-cost.py HEAD            # and the files

It reads the non-test code (each file up to its first `#[cfg(test)]`, comment lines left out) of
src/ and of the crates the daemon builds from (crates/codec, crates/emulators) as git has it at
each commit, and counts, per change, the files whose code names what that change alters:

- a PCP front end: files of the mapping core, the status services and the static keeper that
  name NAT-PMP's packet format (`natpmp::wire`, `MapRequest`): each would have to take PCP's too;
- a second router kind: mapping files that import `crate::routeros`, and every file outside
  src/routeros/ that names the RouterOS client or its types;
- a new rule kind: files that name the rule kinds (`RuleKind`, `DstNatRule`, `SrcNatRule`);
- IPv6 clients: files of the client's path (the mapping core, NAT-PMP, status, refused sources,
  cidr, the codec) that name `Ipv4Addr`;
- and the files outside the mapping core that carry its type parameters (`<R, U>`).
"""

import os
import re
import subprocess
import sys

VERBOSE = os.environ.get("V") == "1"

CHECKS = {
    "PCP front end: core and front-end files naming NAT-PMP packets": (
        lambda f: f.startswith(("src/mapping/", "src/status/")) or f == "src/static_keeper.rs",
        r"natpmp::wire|MapRequest\b",
    ),
    "second router kind: mapping files importing crate::routeros": (
        lambda f: f.startswith("src/mapping/"),
        r"crate::routeros",
    ),
    "second router kind: files outside routeros/ naming the RouterOS client or its types": (
        lambda f: not f.startswith(("src/routeros/", "crates/")),
        r"crate::routeros::(api|conn|pool|tls|nat|address|error)|routeros::api::",
    ),
    "new rule kind: files naming the rule kinds": (
        lambda f: not f.startswith("crates/emulators"),
        r"\bRuleKind\b|\bDstNatRule\b|\bSrcNatRule\b",
    ),
    "IPv6 clients: client-path files naming Ipv4Addr": (
        lambda f: f.startswith(("src/mapping/", "src/natpmp/", "src/status/", "src/refused",
                                "src/cidr", "src/static_keeper", "crates/codec/")),
        r"\bIpv4Addr\b",
    ),
    "type parameters <R, U> outside the mapping core": (
        lambda f: not f.startswith("src/mapping/"),
        r"<R: Router|<R, U>|R: Router",
    ),
}


def git(*args):
    return subprocess.check_output(["git", *args]).decode()


def sources(commit):
    names = git("ls-tree", "-r", "--name-only", commit).split()
    return [
        n for n in names
        if n.endswith(".rs")
        and (n.startswith("src/") or re.match(r"crates/(codec|emulators)/src/", n))
        and not n.endswith("tests.rs") and "/tests/" not in n
    ]


def code(commit, name):
    text = git("show", f"{commit}:{name}")
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def main(commits):
    for commit in commits:
        files = sources(commit)
        print(f"== {commit}: {len(files)} source files")
        for what, (select, pattern) in CHECKS.items():
            hits = [f for f in files if select(f) and re.search(pattern, code(commit, f))]
            print(f"{len(hits):4}  {what}")
            if VERBOSE:
                print("      " + " ".join(hits))


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
