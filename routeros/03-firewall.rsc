# double-natpmp (3/3): the firewall pieces the double NAT needs.
# Target: RouterOS 7.19 to 7.24 (tests/component/routeros_commands.rs checks every command against
# the command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24).
#
#   1. input: the container may reach the RouterOS API (the default firewall drops input that
#      does not come from the LAN list, and the container bridge is not in it).
#   2. dstnat: LAN clients' NAT-PMP (UDP 5351 to any router address) goes to the container.
#      Only packets arriving on the LAN interface list match, so nothing from the VPN side
#      can ask for mappings (RFC 6886 3.3, docs/conformance.md C-39); the container's own
#      packets never match (they come from the container address, not from the LAN list).
#   3. srcnat: the container's NAT-PMP toward the VPN gateway leaves the tunnel as the
#      tunnel's address (the provider answers only that address).
#   4. forward: accept new connections that the daemon's dst-nat rules forward from the VPN.
#   5. optional: replies to those connections go back into the tunnel (only needed when the
#      LAN's default route is not the tunnel); also optional (containerViaVpn): the container's
#      own traffic to the internet through the tunnel, when the daemon's reachability check
#      says "outside the tunnel" (docs/reachability.md §5).
#   6. RouterOS's own NAT-PMP service off (if it was on, 99-uninstall.rsc turns it on again).
#   7. a /32 route to the VPN gateway through the VPN interface, when there is no /32 route to
#      it (a WireGuard tunnel address such as ProtonVPN's 10.2.0.2/32 gives no route to
#      10.2.0.1, which would then go out the WAN, where NAT-PMP is refused or lost).
#
# The rules of 1 and 4 go before the chain's defconf drop, found by its comment compared
# loosely, else before the chain's first drop rule; the script says (:put) where each went,
# and when it found no drop rule at all (then the rule is at the end of the chain).
# Every rule and route here has a comment starting with "natpmp:"; no existing rule is
# changed (FastTrack included: marked connections are accepted just before it instead).
#
# For Docker on a LAN host instead of the router container: set containerIp to the host's LAN
# address and hostMode to "yes" (no input rule: the host is on the LAN and may reach the API
# already). The redirect then exempts the host itself (src-address=!containerIp), so the
# daemon's own upstream traffic is never sent back to it; the srcnat rule still applies, since
# the host's traffic to the VPN gateway is routed by this router. The host must sit on its own
# subnet, not the clients': otherwise its replies reach the clients directly from its own
# address instead of through this router's un-DNAT, and the clients drop them.
#
# It stops, with the command that removes it, when another dst-nat rule (not ours) already
# redirects UDP 5351, such as the original mikrotik-double-natpmp's.
#
# Edit the variables, then:  /import file-name=03-firewall.rsc
{
:local containerIp "172.30.254.2"
:local bridgeName "br-natpmp"
:local lanList "LAN"
:local vpnInterface "wg-proton"
# The daemon's VPN_GATEWAY (02-container.rsc).
:local vpnGateway "10.2.0.1"
:local hostMode "no"
:local returnPath "no"
# "yes": the container's own traffic (not to the router itself) is routed through the tunnel.
:local containerViaVpn "no"

:if ([:len [/interface find name=$vpnInterface]] = 0) do={
    :error ("double-natpmp: there is no interface named " . $vpnInterface . "; set vpnInterface to your VPN interface")
}
:if ([:len [/interface list find name=$lanList]] = 0) do={
    :error ("double-natpmp: there is no interface list named " . $lanList . "; set lanList to the list of your LAN interfaces")
}

# Another redirect of NAT-PMP (UDP 5351) that these scripts did not make, such as the one the
# original mikrotik-double-natpmp's README adds: placed above ours, it would catch the clients'
# requests first and send them to the old container. Stop before anything is changed.
:local other ""
:foreach r in=[/ip firewall nat find chain=dstnat protocol=udp dst-port=5351] do={
    :local c [/ip firewall nat get $r comment]
    :if (!($c ~ "^natpmp: ")) do={
        :if ([:len $c] > 0) do={
            :set other ($other . "\n  /ip firewall nat remove [find chain=dstnat comment=\"" . $c . "\"]")
        } else={
            :set other ($other . "\n  /ip firewall nat remove <the number that print shows for the rule without a comment>")
        }
    }
}
:if ([:len $other] > 0) do={
    :error ("double-natpmp: another dst-nat rule already redirects NAT-PMP (UDP 5351), e.g. the original mikrotik-double-natpmp's; nothing was changed. Look at it with  /ip firewall nat print where chain=dstnat and dst-port=5351  and remove it:" . $other . "\nthen import this file again.")
}

# Settings this script changes go into the script natpmp-undo (as in 01-api-user.rsc).
:local undoRecord do={
    :local s [/system script find name="natpmp-undo"]
    :if ([:len $s] = 0) do={
        /system script add name="natpmp-undo" comment="natpmp: settings 99-uninstall.rsc puts back" source=""
        :set s [/system script find name="natpmp-undo"]
    }
    :local src [/system script get $s source]
    :if ([:typeof [:find $src $key]] != "num") do={
        /system script set $s source=($src . $line . "\n")
    }
}

# The rules to place ours before: the chain's defconf drop by its comment (a regular
# expression, so a comment with other words around it still matches), else its first drop.
:local dropBefore do={
    :local ids [/ip firewall filter find chain=$inChain comment~$pattern]
    :if ([:len $ids] = 0) do={
        :set ids [/ip firewall filter find chain=$inChain action=drop]
    }
    :return $ids
}
# A rule for the messages: its comment, else its id.
:local describe do={
    :local c [/ip firewall filter get $1 comment]
    :if ([:len $c] = 0) do={ :return ("rule " . $1) }
    :return ("\"" . $c . "\"")
}

# --- 1. The container may reach the API (plain 8728 and api-ssl 8729).
:if ($hostMode = "no") do={
    /ip firewall filter remove [find comment="natpmp: container -> RouterOS API"]
    :local before [$dropBefore inChain=input pattern="drop all not coming from LAN"]
    :if ([:len $before] > 0) do={
        /ip firewall filter add chain=input in-interface=$bridgeName src-address=$containerIp protocol=tcp dst-port=8728,8729 action=accept comment="natpmp: container -> RouterOS API" place-before=[:pick $before 0]
        :put ("double-natpmp: input rule for the API placed before " . [$describe [:pick $before 0]])
    } else={
        /ip firewall filter add chain=input in-interface=$bridgeName src-address=$containerIp protocol=tcp dst-port=8728,8729 action=accept comment="natpmp: container -> RouterOS API"
        :put "double-natpmp: no drop rule in chain input (no defconf drop all not coming from LAN): the API rule went to the end of the chain"
    }
}

# --- 2. LAN NAT-PMP -> the daemon. Do not masquerade it: the daemon maps ports for the
#        request's source address.
/ip firewall nat remove [find comment="natpmp: LAN NAT-PMP -> double-natpmp"]
/ip firewall nat add chain=dstnat in-interface-list=$lanList src-address=("!" . $containerIp) dst-address-type=local protocol=udp dst-port=5351 action=dst-nat to-addresses=$containerIp to-ports=5351 comment="natpmp: LAN NAT-PMP -> double-natpmp"

# --- 3. The daemon's upstream NAT-PMP leaves the tunnel as the tunnel address.
/ip firewall nat remove [find comment="natpmp: double-natpmp -> VPN gateway"]
/ip firewall nat add chain=srcnat src-address=$containerIp out-interface=$vpnInterface action=masquerade comment="natpmp: double-natpmp -> VPN gateway"

# --- 4. Connections the daemon's dst-nat rules forward from the VPN are accepted.
/ip firewall filter remove [find comment="natpmp: accept forwarded VPN connections"]
:local fwdBefore [$dropBefore inChain=forward pattern="drop all from WAN not DSTNATed"]
:if ([:len $fwdBefore] > 0) do={
    /ip firewall filter add chain=forward in-interface=$vpnInterface connection-state=new connection-nat-state=dstnat action=accept comment="natpmp: accept forwarded VPN connections" place-before=[:pick $fwdBefore 0]
    :put ("double-natpmp: forward rule placed before " . [$describe [:pick $fwdBefore 0]])
} else={
    /ip firewall filter add chain=forward in-interface=$vpnInterface connection-state=new connection-nat-state=dstnat action=accept comment="natpmp: accept forwarded VPN connections"
    :put "double-natpmp: no drop rule in chain forward (no defconf drop all from WAN not DSTNATed): the forward rule went to the end of the chain"
}

# --- 5. Optional: a routing table whose default route is the tunnel, for the return path and
# for the container's own traffic.
:if (($returnPath = "yes") || ($containerViaVpn = "yes")) do={
    :if ([:len [/routing table find name="via-natpmp"]] = 0) do={
        /routing table add name=via-natpmp fib comment="natpmp: return path"
    }
    /ip route remove [find comment="natpmp: return path"]
    /ip route add dst-address=0.0.0.0/0 gateway=$vpnInterface routing-table=via-natpmp comment="natpmp: return path"
}
# The container's own traffic through the tunnel; its traffic to the router itself (the API,
# DNS) stays local. Not in host mode: it would move the whole LAN host's traffic.
/ip firewall mangle remove [find comment="natpmp: the container's traffic through the tunnel"]
:if (($containerViaVpn = "yes") && ($hostMode = "no")) do={
    /ip firewall mangle add chain=prerouting src-address=$containerIp dst-address-type=!local action=mark-routing new-routing-mark=via-natpmp passthrough=no comment="natpmp: the container's traffic through the tunnel"
    :put "double-natpmp: the container's own traffic goes through the tunnel (containerViaVpn)"
}
# The return path: replies of VPN-forwarded connections leave through the tunnel.
:if ($returnPath = "yes") do={
    /ip firewall mangle remove [find comment~"^natpmp: (mark inbound VPN connections|route replies via the tunnel)"]
    /ip firewall mangle add chain=prerouting in-interface=$vpnInterface connection-state=new action=mark-connection new-connection-mark=natpmp-in passthrough=yes comment="natpmp: mark inbound VPN connections"
    # Replies arrive from any LAN interface: the LAN interface list, not one bridge.
    /ip firewall mangle add chain=prerouting in-interface-list=$lanList connection-mark=natpmp-in action=mark-routing new-routing-mark=via-natpmp passthrough=no comment="natpmp: route replies via the tunnel"
    # FastTracked packets skip mangle, so the marked connections must not be FastTracked:
    # their packets are accepted just before the first FastTrack rule, which stays as it is.
    /ip firewall filter remove [find comment="natpmp: no FastTrack for VPN-forwarded connections"]
    :local fastTrack [/ip firewall filter find chain=forward action=fasttrack-connection]
    :if ([:len $fastTrack] > 0) do={
        /ip firewall filter add chain=forward connection-mark=natpmp-in connection-state=established,related action=accept comment="natpmp: no FastTrack for VPN-forwarded connections" place-before=[:pick $fastTrack 0]
        :put ("double-natpmp: marked connections are accepted before the FastTrack rule " . [$describe [:pick $fastTrack 0]])
    } else={
        :put "double-natpmp: no FastTrack rule in chain forward, so none to keep the marked connections from"
    }
}

# --- 6. RouterOS's own NAT-PMP service would answer on 5351 too.
:if ([/ip nat-pmp get enabled]) do={
    $undoRecord key="/ip nat-pmp set enabled" line=":do { /ip nat-pmp set enabled=yes } on-error={ :put \"double-natpmp: could not turn RouterOS's NAT-PMP service on again; see /ip nat-pmp print\" }"
    /ip nat-pmp set enabled=no
    :put "double-natpmp: RouterOS's own NAT-PMP service was on: turned off (99-uninstall.rsc turns it on again)"
}

# --- 7. The VPN gateway is reached through the tunnel.
:local gwRoutes [/ip route find dst-address=($vpnGateway . "/32")]
:if ([:len $gwRoutes] = 0) do={
    /ip route add dst-address=($vpnGateway . "/32") gateway=$vpnInterface comment="natpmp: VPN gateway through the tunnel"
    :put ("double-natpmp: added a /32 route to " . $vpnGateway . " through " . $vpnInterface)
} else={
    :put ("double-natpmp: a /32 route to " . $vpnGateway . " exists (gateway " . [/ip route get [:pick $gwRoutes 0] gateway] . "); it must lead through " . $vpnInterface)
}

:put "double-natpmp: firewall rules added (comments start with 'natpmp:')"
}
