# double-natpmp (2/3): the container on the router: veth, bridge, environment, container.
# Target: RouterOS 7.19 to 7.24 (tests/component/routeros_commands.rs checks every command against
# the command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24). Needs ARM, ARM64 or x86
# and a disk for the image.
#
# Before this script, once (it needs physical access, so it cannot be scripted):
#   1. System > Packages: install the "container" package and reboot. (Without it RouterOS
#      refuses this whole file with "bad command name" before it runs any of it.)
#   2. /system/device-mode/update container=yes
#      then confirm within the activation timeout by pressing the reset button (or by a cold
#      reboot / power cycle on x86 and CHR). This script checks it first, and stops with that
#      command before it creates anything.
#   3. Import 01-api-user.rsc.
# Then edit the variables below and:  /import file-name=02-container.rsc
# then import 03-firewall.rsc.
#
# The image: imageFile, the .tar for this router's architecture uploaded to its disk
# (/system resource print shows architecture-name: arm64, arm or x86_64), or else image, a
# registry path to pull (the router must then trust the registry's certificate authority: see
# the README). An image that still says OWNER is refused when imageFile is empty.
# The password is written as in 01-api-user.rsc: \" \\ \$ \? for a double quote, a backslash,
# a dollar sign and a question mark.
#
# Before it creates anything the script also stops, with the commands that remove it, when the
# original mikrotik-double-natpmp's setup is in the way: a veth of this name on another bridge
# or with another address, or the router's or the container's address on another interface.
#
# Changes: adds the veth, the bridge, its address and port, the environment list and the
# container (comments start with "natpmp:"). The only global setting it touches is the
# container pull directory (/container config tmpdir), and only when it is empty; then the
# script natpmp-undo (see 01-api-user.rsc) empties it again at uninstall. The registry is not
# changed: the image is a full remote-image path. The trust settings are left to you.
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
# --- A DNS server for the container. Empty (the default): none is set, and the container uses
#     the router's own DNS servers (/ip dns; with none there the container would not start, so
#     the script stops). The daemon resolves the STUN servers of its reachability check
#     (REACHABILITY_CHECK) and any host name in MIKROTIK_API_ADDRESS or WEBHOOK_URL. A server set here must be reachable from the container: the router's side of
#     the /30 (routerIp, with /ip dns allow-remote-requests=yes and an input rule accepting
#     UDP 53 from the container), or a server beyond the router; not the router's LAN address,
#     since the default firewall drops the container bridge's input.
:local dns ""
# --- The image file on the router's disk, for this router's architecture (amd64, arm64 or
#     armv7), uploaded beforehand, e.g. "usb1/double-natpmp-arm64.tar". Empty: pull image.
:local imageFile ""
# --- Or the image to pull, with its registry (so the router's default registry stays as it
#     is): the published one with OWNER replaced by its account, or your own.
:local image "ghcr.io/OWNER/double-natpmp:latest"
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

# --- Nothing is created before these checks pass. First: containers allowed by device-mode.
:local deviceMode [:tostr [/system device-mode get container]]
:if (($deviceMode != "true") && ($deviceMode != "yes")) do={
    :error "double-natpmp: device-mode does not allow containers; nothing was changed. Run  /system/device-mode/update container=yes  and confirm within the activation timeout by pressing the reset button (x86 and CHR: a cold reboot or power cycle), then import this file again."
}
# The image: a file that is there, or a registry path that names a real account.
:if ([:len $imageFile] = 0) do={
    :if ([:typeof [:find $image "OWNER"]] = "num") do={
        :error ("double-natpmp: image is " . $image . ", which still says OWNER; nothing was changed. Set imageFile to the uploaded .tar for this router (see the README), or put the publishing account in place of OWNER.")
    }
} else={
    :if ([:len [/file find name=$imageFile]] = 0) do={
        :error ("double-natpmp: there is no file " . $imageFile . " on the router (/file print); nothing was changed. Upload the .tar first, or fix imageFile.")
    }
    :local arch [/system resource get architecture-name]
    :local want "amd64"
    :if ($arch = "arm64") do={ :set want "arm64" }
    :if ($arch = "arm") do={ :set want "armv7" }
    :if ([:typeof [:find $imageFile $want]] != "num") do={
        :put ("double-natpmp: note: this router's architecture is " . $arch . ", which needs double-natpmp-" . $want . ".tar; imageFile is " . $imageFile)
    }
}
# A DNS server: dns, else one of the router's own.
:if (([:len $dns] = 0) && ([:len [/ip dns get servers]] = 0) && ([:len [/ip dns get dynamic-servers]] = 0)) do={
    :error "double-natpmp: the container needs a DNS server and the router has none (/ip dns print); nothing was changed. Set dns at the top of this file, or give the router one (/ip dns set servers=...)."
}
# The original mikrotik-double-natpmp's setup in the way: its veth on another bridge or with
# another address, or the router's or the container's address on another interface.
:local stale ""
:local veth [/interface veth find name=$vethName]
:if ([:len $veth] > 0) do={
    :local port [/interface bridge port find interface=$vethName]
    :local elsewhere false
    :if ([:len $port] > 0) do={
        :if ([/interface bridge port get [:pick $port 0] bridge] != $bridgeName) do={ :set elsewhere true }
    }
    :if ([:typeof [:find [:tostr [/interface veth get [:pick $veth 0] address]] ($containerIp . "/")]] != "num") do={
        :set elsewhere true
    }
    :if ($elsewhere) do={
        :set stale ($stale . "\n  /container stop [find interface=" . $vethName . "]\n  /container remove [find interface=" . $vethName . "]\n  /interface bridge port remove [find interface=" . $vethName . "]\n  /interface veth remove [find name=" . $vethName . "]")
    }
}
:foreach a in=[/ip address find] do={
    :local addr [/ip address get $a address]
    :local ip [:pick $addr 0 [:find $addr "/"]]
    :local iface [/ip address get $a interface]
    :if ((($ip = $routerIp) || ($ip = $containerIp)) && ($iface != $bridgeName)) do={
        :set stale ($stale . "\n  /ip address remove [find address=\"" . $addr . "\" interface=\"" . $iface . "\"]")
    }
}
:if ([:len $stale] > 0) do={
    :error ("double-natpmp: an older setup is in the way (the original mikrotik-double-natpmp's veth, or an address of the " . $routerIp . "/" . $prefixLen . " network on another interface); nothing was changed. Remove it with:" . $stale . "\nthen import this file again (or choose other names and addresses at its top).")
}

# What makes the pull trust the registry: builtin-trust-anchors=trusted on 7.19 and 7.20,
# builtin-trust-store (all, or a list with container) from 7.21.
:local trustCmd "/certificate settings set builtin-trust-store=all"
:if ($rosVersion < 721) do={ :set trustCmd "/certificate settings set builtin-trust-anchors=trusted" }
:if ([:len $imageFile] = 0) do={
    :local trusted
    :if ($rosVersion >= 721) do={
        :set trusted [:parse ":return ([:tostr [/certificate settings get builtin-trust-store]] ~ \"all|container\")"]
    } else={
        :set trusted [:parse ":return ([:tostr [/certificate settings get builtin-trust-anchors]] = \"trusted\")"]
    }
    :if (![$trusted]) do={
        :put ("double-natpmp: note: the router may not trust the registry's certificate; if the pull fails with a certificate error, run  " . $trustCmd . "  and import this file again")
    }
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
    $undoRecord key="/container config set tmpdir" line=":do { /container config set tmpdir=\"\" } on-error={ :put \"double-natpmp: could not empty the container pull directory; see /container config print\" }"
    /container config set tmpdir=$tmpDir
} else={
    :put ("double-natpmp: keeping the container pull directory " . [/container config get tmpdir])
}

# --- The container: pulled from the registry (or loaded from imageFile), started on boot,
#     logging to /log. Its version-specific settings follow once it is extracted. The container
#     log entries from before the add are noted, so that a failed pull is told apart. The
#     entry point is given although the image has it: 7.22 and later were seen to refuse a
#     FROM-scratch image with "no command specified, set cmd or entrypoint".
:local logBefore [/log find where topics~"container"]
:if ([:len [/container find name=$containerName]] = 0) do={
    :local added true
    :if ([:len $imageFile] = 0) do={
        :do {
            /container add name=$containerName remote-image=$image interface=$vethName root-dir=$rootDir entrypoint="/double-natpmp" logging=yes start-on-boot=yes comment="natpmp: double-natpmp"
        } on-error={ :set added false }
    } else={
        :do {
            /container add name=$containerName file=$imageFile interface=$vethName root-dir=$rootDir entrypoint="/double-natpmp" logging=yes start-on-boot=yes comment="natpmp: double-natpmp"
        } on-error={ :set added false }
    }
    :if (!$added) do={
        :error "double-natpmp: /container add failed; see why with  /log print where topics~\"container\"  (a wrong imageFile or rootDir, a full disk, or a name in use)"
    }
}

# --- The container's state: from 7.20 the booleans running, stopped, starting, stopping
#     (status is gone); on 7.19 the text property status.
:local stateOf
:if ($rosVersion >= 720) do={
    :set stateOf [:parse ":if ([/container get \$cid running]) do={:return \"running\"}; :if ([/container get \$cid starting]) do={:return \"starting\"}; :if ([/container get \$cid stopping]) do={:return \"stopping\"}; :if ([/container get \$cid stopped]) do={:return \"stopped\"}; :return \"pulling or extracting\""]
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

# /container add only pulls and extracts the image; start it the first time by hand. A pull or
# extract that fails (7.19: status error; every version: an error in the container log since
# the add) ends the wait, with what the log says.
:local cid [/container find name=$containerName]
:if ([:len $cid] = 0) do={
    :error "double-natpmp: the container is gone after /container add; see why with  /log print where topics~\"container\""
}
:local failed ""
:local tries 0
:local state [$stateOf cid=$cid]
:while (($state != "stopped") && ($state != "running") && ($state != "error") && ([:len $failed] = 0) && ($tries < 120)) do={
    :delay 5s
    :set tries ($tries + 1)
    :foreach e in=[/log find where topics~"container" and message~"unable to import|failed|error"] do={
        :if ([:typeof [:find $logBefore $e]] != "num") do={ :set failed [/log get $e message] }
    }
    :set state [$stateOf cid=$cid]
}
:if (($state = "error") || ([:len $failed] > 0)) do={
    :if ([:len $failed] = 0) do={ :set failed "status error" }
    :local hint "check that imageFile is the .tar for this router's architecture, and the free space on the disk"
    :if ([:len $imageFile] = 0) do={
        :set hint ("a certificate error means the router does not trust the registry (" . $trustCmd . "); also check the image path and the free space on the disk")
    }
    :error ("double-natpmp: pulling or extracting the image failed: " . $failed . ". See why with  /log print where topics~\"container\" ; " . $hint . ". Then  /container remove [find name=" . $containerName . "]  and import this file again.")
}
:if ($state = "stopped") do={
    $configure cid=$cid cEnvs=$envList
    :if ([:len $dns] > 0) do={ /container set $cid dns=$dns }
    /container start $cid
    :put "double-natpmp: container started; watch it with /log print where topics~\"container\""
}
:if ($state = "running") do={
    :put "double-natpmp: the container is running already (its settings are kept; stop it and run this file again to renew them)"
}
:if (($state != "stopped") && ($state != "running")) do={
    :put ("double-natpmp: the container is still " . $state . " after 10 minutes (a slow pull); watch  /log print where topics~\"container\"  and, when /container print shows it stopped, import this file again")
}
}
