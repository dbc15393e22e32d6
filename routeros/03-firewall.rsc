# double-natpmp (3/3): the firewall pieces the double NAT needs.
# Target: RouterOS 7.20 or newer (nothing here is version-specific within v7).
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
#      LAN's default route is not the tunnel).
#   6. RouterOS's own NAT-PMP service stays off.
#
# For Docker on a LAN host instead of the router container: set containerIp to the host's LAN
# address and hostMode to "yes" (no input rule: the host is on the LAN and may reach the API
# already). The redirect then exempts the host itself (src-address=!containerIp), so the
# daemon's own upstream traffic is never sent back to it; the srcnat rule still applies, since
# the host's traffic to the VPN gateway is routed by this router. The host must sit on its own
# subnet, not the clients': otherwise its replies reach the clients directly from its own
# address instead of through this router's un-DNAT, and the clients drop them.
#
# Edit the variables, then:  /import file-name=03-firewall.rsc
{
:local containerIp "172.30.254.2"
:local bridgeName "br-natpmp"
:local lanList "LAN"
:local vpnInterface "wg-proton"
:local hostMode "no"
:local returnPath "no"
:local lanBridge "bridge"

# --- 1. The container may reach the API (plain 8728 and api-ssl 8729).
:if ($hostMode = "no") do={
    /ip firewall filter remove [find comment="natpmp: container -> RouterOS API"]
    :local drop [/ip firewall filter find comment="defconf: drop all not coming from LAN"]
    :if ([:len $drop] > 0) do={
        /ip firewall filter add chain=input in-interface=$bridgeName src-address=$containerIp protocol=tcp dst-port=8728,8729 action=accept comment="natpmp: container -> RouterOS API" place-before=[:pick $drop 0]
    } else={
        /ip firewall filter add chain=input in-interface=$bridgeName src-address=$containerIp protocol=tcp dst-port=8728,8729 action=accept comment="natpmp: container -> RouterOS API"
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
:local fwdDrop [/ip firewall filter find comment="defconf: drop all from WAN not DSTNATed"]
:if ([:len $fwdDrop] > 0) do={
    /ip firewall filter add chain=forward in-interface=$vpnInterface connection-state=new connection-nat-state=dstnat action=accept comment="natpmp: accept forwarded VPN connections" place-before=[:pick $fwdDrop 0]
} else={
    /ip firewall filter add chain=forward in-interface=$vpnInterface connection-state=new connection-nat-state=dstnat action=accept comment="natpmp: accept forwarded VPN connections"
}

# --- 5. Optional return path: replies of VPN-forwarded connections leave through the tunnel.
:if ($returnPath = "yes") do={
    :if ([:len [/routing table find name="via-natpmp"]] = 0) do={
        /routing table add name=via-natpmp fib comment="natpmp: return path"
    }
    /ip route remove [find comment="natpmp: return path"]
    /ip route add dst-address=0.0.0.0/0 gateway=$vpnInterface routing-table=via-natpmp comment="natpmp: return path"
    /ip firewall mangle remove [find comment~"^natpmp: (mark inbound VPN connections|route replies via the tunnel)"]
    /ip firewall mangle add chain=prerouting in-interface=$vpnInterface connection-state=new action=mark-connection new-connection-mark=natpmp-in passthrough=yes comment="natpmp: mark inbound VPN connections"
    /ip firewall mangle add chain=prerouting in-interface=$lanBridge connection-mark=natpmp-in action=mark-routing new-routing-mark=via-natpmp passthrough=no comment="natpmp: route replies via the tunnel"
    # FastTracked packets skip mangle: keep FastTrack for unmarked connections only.
    /ip firewall filter set [find comment="defconf: fasttrack"] connection-mark=no-mark
}

# --- 6. RouterOS's own NAT-PMP service would answer on 5351 too.
/ip nat-pmp set enabled=no

:put "double-natpmp: firewall rules added (comments start with 'natpmp:')"
}
