# double-natpmp (2/3): the container on the router: veth, bridge, environment, container.
# Target: RouterOS 7.19 to 7.24 (tests/routeros_commands.rs checks every command against the
# command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24). Needs ARM, ARM64 or x86
# and a disk for the image.
#
# Before this script, once (it needs physical access, so it cannot be scripted):
#   1. System > Packages: install the "container" package and reboot.
#   2. /system/device-mode/update container=yes
#      then confirm within the activation timeout by pressing the reset button (or by a cold
#      reboot / power cycle on x86 and CHR).
#   3. Import 01-api-user.rsc.
# Then edit the variables below and:  /import file-name=02-container.rsc
# then import 03-firewall.rsc.
#
# Changes: adds the veth, the bridge, its address and port, the environment list and the
# container (comments start with "natpmp:"). The only global setting it touches is the
# container pull directory (/container config tmpdir), and only when it is empty; then the
# script natpmp-undo (see 01-api-user.rsc) empties it again at uninstall. The registry is not
# changed: the image is a full remote-image path.
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
# --- Image (with its registry, so the router's default registry stays as it is) and storage.
:local image "ghcr.io/OWNER/double-natpmp:latest"
# --- Or an image file on the router's disk to load instead of pulling (e.g.
#     "usb1/double-natpmp-amd64.tar"); empty: pull image.
:local imageFile ""
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

# --- The RouterOS version as major * 100 + minor (7.22.3 -> 722). RouterOS compiles a whole
#     script before it runs any of it, so a command with an argument that only some versions
#     have sits in a :parse string (compiled only when it runs) under an :if on $rosVersion.
:local ver [/system resource get version]
:local dot [:find $ver "."]
:local minor 0
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minor ($minor * 10 + [:tonum [:pick $ver $i]])
    :set i ($i + 1)
}
:local rosVersion ([:tonum [:pick $ver 0 $dot]] * 100 + $minor)
:if ($rosVersion < 719) do={
    :error ("double-natpmp: these scripts need RouterOS 7.19 or newer; this router runs " . $ver)
}
:if ($rosVersion > 724) do={
    :put ("double-natpmp: RouterOS " . $ver . " is newer than 7.24, the newest these scripts were checked against; using the 7.24 commands")
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

# --- Environment: the list is list= from 7.20, name= on 7.19.
:local envAdd
:local envRemove
:if ($rosVersion >= 720) do={
    :set envRemove [:parse "/container envs remove [find list=\$envName]"]
    :set envAdd [:parse "/container envs add list=\$envName key=\$envKey value=\$envValue comment=\"natpmp: double-natpmp\""]
} else={
    :set envRemove [:parse "/container envs remove [find name=\$envName]"]
    :set envAdd [:parse "/container envs add name=\$envName key=\$envKey value=\$envValue comment=\"natpmp: double-natpmp\""]
}
$envRemove envName=$envList
$envAdd envName=$envList envKey=VPN_GATEWAY envValue=$vpnGateway
$envAdd envName=$envList envKey=MIKROTIK_API_ADDRESS envValue=($routerIp . ":8728")
$envAdd envName=$envList envKey=MIKROTIK_API_USER envValue=$apiUser
$envAdd envName=$envList envKey=MIKROTIK_API_PASSWORD envValue=$apiPassword
$envAdd envName=$envList envKey=MIKROTIK_IN_INTERFACE envValue=$vpnInterface
# Bind the exact address the router forwards to: replies must come from it.
$envAdd envName=$envList envKey=LISTEN_ADDR envValue=($containerIp . ":5351")
$envAdd envName=$envList envKey=ALLOWED_CLIENTS envValue=$lanNetworks
$envAdd envName=$envList envKey=LOG_LEVEL envValue="INFO"

# --- The pull directory is a setting of all containers: set only when none is set.
:if ([/container config get tmpdir] = "") do={
    $undoRecord key="/container config set tmpdir" line="/container config set tmpdir=\"\""
    /container config set tmpdir=$tmpDir
} else={
    :put ("double-natpmp: keeping the container pull directory " . [/container config get tmpdir])
}

# --- The container: pulled from the registry (or loaded from imageFile), started on boot,
#     logging to /log. Its version-specific settings follow once it is extracted.
:if ([:len [/container find name=$containerName]] = 0) do={
    :if ([:len $imageFile] = 0) do={
        /container add name=$containerName remote-image=$image interface=$vethName root-dir=$rootDir dns=$dns logging=yes start-on-boot=yes comment="natpmp: double-natpmp"
    } else={
        /container add name=$containerName file=$imageFile interface=$vethName root-dir=$rootDir dns=$dns logging=yes start-on-boot=yes comment="natpmp: double-natpmp"
    }
}

# --- The container's state: from 7.20 the booleans running, stopped, starting, stopping
#     (status is gone); on 7.19 the text property status.
:local stateOf
:if ($rosVersion >= 720) do={
    :set stateOf [:parse ":if ([/container get \$cid running]) do={:return \"running\"}; :if ([/container get \$cid starting]) do={:return \"starting\"}; :if ([/container get \$cid stopping]) do={:return \"stopping\"}; :if ([/container get \$cid stopped]) do={:return \"stopped\"}; :return \"busy\""]
} else={
    :set stateOf [:parse ":return [/container get \$cid status]"]
}

# --- Settings per version, made while the container is stopped (before it first starts):
#     the environment list (envlists= from 7.20, envlist= on 7.19); 7.23+: restart-policy and
#     RouterOS's healthcheck running double-natpmp health (as the image's HEALTHCHECK); 7.22:
#     auto-restart-interval and the healthcheck; 7.20 and 7.21: auto-restart-interval.
:local configure
:if ($rosVersion >= 723) do={
    :set configure [:parse "/container set \$cid envlists=\$cEnvs restart-policy=on-failure restart-interval=30s healthcheck-cmd=\"/double-natpmp health --timeout 3s\" healthcheck-interval=30s healthcheck-timeout=5s healthcheck-start-period=30s healthcheck-retries=3"]
}
:if ($rosVersion = 722) do={
    :set configure [:parse "/container set \$cid envlists=\$cEnvs auto-restart-interval=30s healthcheck-cmd=\"/double-natpmp health --timeout 3s\" healthcheck-interval=30s healthcheck-timeout=5s healthcheck-start-period=30s healthcheck-retries=3"]
}
:if (($rosVersion >= 720) && ($rosVersion < 722)) do={
    :set configure [:parse "/container set \$cid envlists=\$cEnvs auto-restart-interval=30s"]
}
:if ($rosVersion < 720) do={
    :set configure [:parse "/container set \$cid envlist=\$cEnvs"]
}

# /container add only pulls and extracts the image; start it the first time by hand.
:local cid [/container find name=$containerName]
:local tries 0
:while (([$stateOf cid=$cid] != "stopped") && ([$stateOf cid=$cid] != "running") && ($tries < 120)) do={
    :delay 5s
    :set tries ($tries + 1)
}
:local state [$stateOf cid=$cid]
:if ($state = "stopped") do={
    $configure cid=$cid cEnvs=$envList
    /container start $cid
    :put "double-natpmp: container started; watch it with /log print where topics~\"container\""
}
:if ($state = "running") do={
    :put "double-natpmp: the container is running already (its settings are kept; stop it and run this file again to renew them)"
}
:if (($state != "stopped") && ($state != "running")) do={
    :put ("double-natpmp: the container is " . $state . " (the image is still being pulled?); when /container print shows it stopped, run this file again")
}
}
