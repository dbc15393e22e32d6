# double-natpmp (2/3): the container on the router: veth, bridge, environment, container.
# Target: RouterOS 7.20 or newer (envs use list=, the container envlists=; for 7.4-7.19 see the
# notes at the envs and the container below). Needs ARM, ARM64 or x86 and a disk for the image.
#
# Before this script, once (it needs physical access, so it cannot be scripted):
#   1. System > Packages: install the "container" package and reboot.
#   2. /system/device-mode/update container=yes
#      then confirm within the activation timeout by pressing the reset button (or by a cold
#      reboot / power cycle on x86 and CHR).
#   3. Import 01-api-user.rsc.
# Then edit the variables below and:  /import file-name=02-container.rsc
# then import 03-firewall.rsc.
{
# --- Container network: a /30 between the router and the container.
:local vethName "veth-natpmp"
:local bridgeName "br-natpmp"
:local routerIp "172.30.254.1"
:local containerIp "172.30.254.2"
:local prefixLen "30"
# --- Where the daemon sends NAT-PMP (ProtonVPN: 10.2.0.1) and the router's VPN interface.
:local vpnGateway "10.2.0.1"
:local vpnInterface "wg-proton"
# --- The API user of 01-api-user.rsc.
:local apiUser "natpmp"
:local apiPassword "CHANGE-ME"
# --- LAN networks whose hosts may map ports (comma-separated).
:local lanNetworks "192.168.88.0/24"
# --- A DNS server for the container (it must have one or it will not start; the daemon itself
#     resolves nothing when MIKROTIK_API_ADDRESS is an IP address).
:local dns "192.168.88.1"
# --- Image and storage.
:local registry "https://ghcr.io"
:local image "OWNER/double-natpmp:latest"
:local rootDir "usb1/natpmp"
:local tmpDir "usb1/pull"
:local containerName "natpmp"
:local envList "natpmp"

:if ($apiPassword = "CHANGE-ME") do={
    :error "double-natpmp: set apiPassword (the one from 01-api-user.rsc) at the top of 02-container.rsc"
}
:if ([:len [/interface find name=$vpnInterface]] = 0) do={
    :error ("double-natpmp: there is no interface named " . $vpnInterface . "; set vpnInterface to your VPN interface")
}

# --- veth and its bridge. The router side of the /30 lives on the bridge.
:if ([:len [/interface veth find name=$vethName]] = 0) do={
    /interface veth add name=$vethName address=($containerIp . "/" . $prefixLen) gateway=$routerIp comment="natpmp: double-natpmp container"
}
:if ([:len [/interface bridge find name=$bridgeName]] = 0) do={
    /interface bridge add name=$bridgeName comment="natpmp: container bridge"
}
:if ([:len [/ip address find interface=$bridgeName address=($routerIp . "/" . $prefixLen)]] = 0) do={
    /ip address add address=($routerIp . "/" . $prefixLen) interface=$bridgeName comment="natpmp: router side of the container network"
}
:if ([:len [/interface bridge port find interface=$vethName]] = 0) do={
    /interface bridge port add bridge=$bridgeName interface=$vethName comment="natpmp: container port"
}

# --- Environment (RouterOS 7.20+: list=; on 7.4-7.19 write name= instead of list=).
/container envs remove [find list=$envList]
/container envs add list=$envList key=VPN_GATEWAY value=$vpnGateway
/container envs add list=$envList key=MIKROTIK_API_ADDRESS value=($routerIp . ":8728")
/container envs add list=$envList key=MIKROTIK_API_USER value=$apiUser
/container envs add list=$envList key=MIKROTIK_API_PASSWORD value=$apiPassword
/container envs add list=$envList key=MIKROTIK_IN_INTERFACE value=$vpnInterface
# Bind the exact address the router forwards to: replies must come from it.
/container envs add list=$envList key=LISTEN_ADDR value=($containerIp . ":5351")
/container envs add list=$envList key=ALLOWED_CLIENTS value=$lanNetworks
/container envs add list=$envList key=LOG_LEVEL value="INFO"

# --- The container: pulled from the registry, started on boot, logging to /log.
/container config set registry-url=$registry tmpdir=$tmpDir
:if ([:len [/container find name=$containerName]] = 0) do={
    # On 7.4-7.19 write envlist= instead of envlists= (and drop name= before 7.19).
    /container add name=$containerName remote-image=$image interface=$vethName envlists=$envList root-dir=$rootDir logging=yes start-on-boot=yes dns=$dns
}

# /container add only pulls and extracts the image; start it the first time by hand.
:local tries 0
:while (([/container get [find name=$containerName] status] != "stopped") && ($tries < 120)) do={
    :delay 5s
    :set tries ($tries + 1)
}
:if ([/container get [find name=$containerName] status] = "stopped") do={
    /container start [find name=$containerName]
    :put "double-natpmp: container started; watch it with /log print where topics~\"container\""
} else={
    :put "double-natpmp: the image is still being pulled; when /container print shows it stopped, run /container start natpmp"
}
}
