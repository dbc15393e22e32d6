#!/usr/bin/env python3
"""Drive the RouterOS API emulator with the independent librouteros client.

Usage: librouteros_check.py <port> <step> [arg]

Steps (each prints one JSON object on stdout; every value is a string or a list of
objects whose values are strings, so the Rust side can compare them exactly):
  add                 login, add two dst-nat rules (wg-proton and ether1) -> {"ids": [...]}
  query               print with ?in-interface=wg-proton, with a query nothing matches
                      (RouterOS 7.18+ answers !empty), with "not wg-proton", and all rows
  remove <id>         remove that rule, then print everything
  remove_missing <id> remove an id that does not exist -> {"error", "type"}
  badlogin            connect with a wrong password -> {"error", "type"}
  identity            /system/identity/print
  addresses           /ip/address/print, every row, then the rows of ?interface=bridge

Only ever connects to 127.0.0.1.
"""

import json
import sys

from librouteros import connect
from librouteros.exceptions import LibRouterosError
from librouteros.query import Key

HOST = "127.0.0.1"
USER = "admin"
PASSWORD = "admin"
PROPS = (".id", "chain", "action", "protocol", "in-interface", "dst-port",
         "to-addresses", "to-ports", "comment", "disabled", "dynamic")


def text(value):
    """librouteros turns true/yes into True and digits into int; give the wire text back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows(it):
    return [{k: text(v) for k, v in row.items()} for row in it]


def login(port, password=PASSWORD):
    return connect(HOST, USER, password, port=port, timeout=10)


def main():
    port = int(sys.argv[1])
    step = sys.argv[2]
    arg = sys.argv[3] if len(sys.argv) > 3 else None
    out = {}
    if step == "badlogin":
        try:
            login(port, "wrong-password").close()
            out = {"error": "", "type": "none"}
        except LibRouterosError as e:
            out = {"error": str(e), "type": type(e).__name__}
        print(json.dumps(out, sort_keys=True))
        return

    api = login(port)
    nat = api.path("ip", "firewall", "nat")
    if step == "add":
        first = nat.add(**{
            "chain": "dstnat", "action": "dst-nat", "protocol": "udp",
            "in-interface": "wg-proton", "dst-port": 40001,
            "to-addresses": "192.168.88.23", "to-ports": 6881,
            "comment": "natpmp:udp:192.168.88.23:6881", "disabled": False,
        })
        second = nat.add(**{
            "chain": "dstnat", "action": "dst-nat", "protocol": "tcp",
            "in-interface": "ether1", "dst-port": 8080,
            "to-addresses": "192.168.88.40", "to-ports": 80,
            "comment": "admin web",
        })
        out = {"ids": [first, second]}
    elif step == "query":
        sel = lambda: nat.select(*(Key(p) for p in PROPS))  # noqa: E731
        out = {
            "wg": rows(sel().where(Key("in-interface") == "wg-proton")),
            "none": rows(sel().where(Key("comment") == "no-such-comment")),
            "not_wg": rows(sel().where(Key("in-interface") != "wg-proton")),
            "all": rows(nat),
        }
    elif step == "remove":
        nat.remove(arg)
        out = {"removed": arg, "all": rows(nat)}
    elif step == "remove_missing":
        try:
            nat.remove(arg)
            out = {"error": "", "type": "none"}
        except LibRouterosError as e:
            out = {"error": str(e), "type": type(e).__name__}
    elif step == "identity":
        out = {"rows": rows(api.path("system", "identity"))}
    elif step == "addresses":
        addresses = api.path("ip", "address")
        bridge = addresses.select(Key("address"), Key("network")).where(
            Key("interface") == "bridge")
        out = {"rows": rows(addresses), "bridge": rows(bridge)}
    else:
        raise SystemExit(f"unknown step {step!r}")
    api.close()
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
