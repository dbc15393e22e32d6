#!/usr/bin/env python3
"""libtorrent itself as a NAT-PMP client (Debian's python3-libtorrent; run with the system
python3, which has it).

Starts a session that listens on a fixed address and port and maps it with NAT-PMP only (no UPnP, DHT or
LSD), and reports on standard output, one line each:

  LOG <text>            libtorrent's own port-mapping log (what it sent, what it got)
  MAPPED <proto> <port> a portmap_alert over NAT-PMP: the mapping of <proto> got external <port>
  ERROR <text>          a portmap_error_alert over NAT-PMP; the script exits 1 at once
  READY tcp=<p> udp=<p> both mappings made with no error alert; the session keeps listening
  INCOMING <ip>         an incoming TCP connection reached the session (after READY)

Exit status: 1 after an error alert, 2 when the mappings were not both made within --timeout,
0 when --hold seconds after READY have passed.
"""

import argparse
import os
import sys
import time

import libtorrent as lt


def say(line):
    print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="0.0.0.0", help="the listen address")
    parser.add_argument("--port", type=int, required=True, help="the fixed listen port")
    parser.add_argument("--save-path", required=True,
                        help="a scratch folder for the torrent (nothing is downloaded)")
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="seconds to wait for both mappings")
    parser.add_argument("--hold", type=float, default=60.0,
                        help="seconds to keep listening after both mappings are made")
    args = parser.parse_args()

    session = lt.session({
        "listen_interfaces": "%s:%d" % (args.address, args.port),
        "enable_natpmp": True,
        "enable_upnp": False,
        "enable_dht": False,
        "enable_lsd": False,
        "alert_mask": lt.alert_category.port_mapping
        | lt.alert_category.port_mapping_log
        | lt.alert_category.error
        | lt.alert_category.peer
        | lt.alert_category.connect
        | lt.alert_category.session_log,
    })
    # libtorrent turns every incoming connection away while it has no active torrent: one
    # torrent known only by a random info-hash (no tracker, no DHT) keeps it accepting.
    params = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + os.urandom(20).hex())
    params.save_path = args.save_path
    session.add_torrent(params)

    mapped = {}
    ready_at = None
    started = time.monotonic()
    while True:
        now = time.monotonic()
        if ready_at is None and now - started > args.timeout:
            say("TIMEOUT mapped=%s" % sorted(mapped))
            return 2
        if ready_at is not None and now - ready_at > args.hold:
            return 0
        session.wait_for_alert(200)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.portmap_log_alert):
                say("LOG " + alert.message())
            elif isinstance(alert, lt.portmap_error_alert):
                if alert.map_transport == lt.portmap_transport.natpmp:
                    say("ERROR " + alert.message())
                    return 1
            elif isinstance(alert, lt.portmap_alert):
                if alert.map_transport == lt.portmap_transport.natpmp:
                    proto = "udp" if alert.map_protocol == lt.portmap_protocol.udp else "tcp"
                    mapped[proto] = alert.external_port
                    say("MAPPED %s %d" % (proto, alert.external_port))
            elif isinstance(alert, lt.incoming_connection_alert):
                say("INCOMING %s" % alert.endpoint[0])
            elif isinstance(alert, lt.log_alert) and "INCOMING" in alert.message():
                say("LOG " + alert.message())
        if ready_at is None and "tcp" in mapped and "udp" in mapped:
            ready_at = time.monotonic()
            say("READY tcp=%d udp=%d" % (mapped["tcp"], mapped["udp"]))


if __name__ == "__main__":
    sys.exit(main())
