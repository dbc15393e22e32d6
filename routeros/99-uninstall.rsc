# double-natpmp: remove everything 01-api-user.rsc, 02-container.rsc and 03-firewall.rsc made,
# and any dst-nat rule the daemon left behind (comments starting with "double-natpmp").
# Target: RouterOS 7.20 or newer. Use the same names as in the install scripts.
#
#   /import file-name=99-uninstall.rsc
#
# The container package and device-mode stay as they are; the api service is left enabled
# (set its address list back yourself: /ip service set api address="").
{
:local containerName "natpmp"
:local envList "natpmp"
:local vethName "veth-natpmp"
:local bridgeName "br-natpmp"
:local apiUser "natpmp"
:local apiGroup "natpmp"

# Stop the container first: on SIGTERM the daemon removes its own mappings from both layers.
:if ([:len [/container find name=$containerName]] > 0) do={
    :if ([/container get [find name=$containerName] status] = "running") do={
        /container stop [find name=$containerName]
    }
    :local tries 0
    :while (([/container get [find name=$containerName] status] != "stopped") && ($tries < 30)) do={
        :delay 1s
        :set tries ($tries + 1)
    }
    /container remove [find name=$containerName]
}
/container envs remove [find list=$envList]

# Firewall, NAT, mangle, routes and the routing table of 03-firewall.rsc.
/ip firewall filter remove [find comment~"^natpmp: "]
/ip firewall nat remove [find comment~"^natpmp: "]
/ip firewall mangle remove [find comment~"^natpmp: "]
/ip route remove [find comment="natpmp: return path"]
/routing table remove [find name="via-natpmp"]
# Rules the daemon made and could not remove (it removes them itself when stopped cleanly).
/ip firewall nat remove [find comment~"^double-natpmp"]

# Container network of 02-container.rsc.
/interface bridge port remove [find interface=$vethName]
/ip address remove [find comment="natpmp: router side of the container network"]
/interface bridge remove [find name=$bridgeName]
/interface veth remove [find name=$vethName]

# API user and group of 01-api-user.rsc.
/user remove [find name=$apiUser]
/user group remove [find name=$apiGroup]

:put "double-natpmp: removed"
}
