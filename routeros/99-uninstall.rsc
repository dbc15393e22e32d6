# double-natpmp: remove everything 01-api-user.rsc, 02-container.rsc and 03-firewall.rsc made,
# put back the settings they changed, and remove any dst-nat rule the daemon left behind
# (comments starting with "double-natpmp").
# Target: RouterOS 7.19 to 7.24 (tests/component/routeros_commands.rs checks every command against
# the command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24). Use the same names as in
# the install scripts.
#
#   /import file-name=99-uninstall.rsc
#
# Order: the container stops (the daemon then removes its mappings from both layers) and is
# removed; the script waits until it is gone, since the removal runs in the background and
# its veth must outlive it. Then the settings recorded in the script natpmp-undo are put back
# (the API service's address list and state, RouterOS's NAT-PMP service, the container pull
# directory), inside an error handler, so that a line that fails is reported and the rest of
# the uninstall still runs; and everything with a comment starting with "natpmp:" is removed:
# firewall, NAT and mangle rules, routes (the return path and the /32 to the VPN gateway), the
# routing table, the container network, the environment list, the API user and group.
# What stays: the files you uploaded (the image .tar) and what the pulls left in the pull
# directory (/file print; the tmpdir setting itself is emptied when the install set it), the
# certificate trust settings (/certificate settings, which the install never changes), the
# container package and device-mode, the LAN interface list, and the defconf rules (none was
# changed).
{
:local containerName "natpmp"
:local envList "natpmp"
:local apiUser "natpmp"
:local apiGroup "natpmp"

# --- The RouterOS version as major * 100 + minor (as in 02-container.rsc).
:local ver [/system resource get version]
:local dot [:find $ver "."]
:local minor 0
:local i ($dot + 1)
:while (($i < [:len $ver]) && ([:pick $ver $i] ~ "[0-9]")) do={
    :set minor ($minor * 10 + [:tonum [:pick $ver $i]])
    :set i ($i + 1)
}
:local rosVersion ([:tonum [:pick $ver 0 $dot]] * 100 + $minor)

# The container's state and the environment list, per version (as in 02-container.rsc).
:local stateOf
:local envRemove
:if ($rosVersion >= 720) do={
    :set stateOf [:parse ":if ([/container get \$cid running]) do={:return \"running\"}; :if ([/container get \$cid starting]) do={:return \"starting\"}; :if ([/container get \$cid stopping]) do={:return \"stopping\"}; :if ([/container get \$cid stopped]) do={:return \"stopped\"}; :return \"busy\""]
    :set envRemove [:parse "/container envs remove [find list=\$envName]"]
} else={
    :set stateOf [:parse ":return [/container get \$cid status]"]
    :set envRemove [:parse "/container envs remove [find name=\$envName]"]
}

# --- 1. Stop the container first: on SIGTERM the daemon removes its own mappings from both
#        layers. Then remove it and wait until it is gone.
:local cid [/container find name=$containerName]
:if ([:len $cid] > 0) do={
    :local state [$stateOf cid=$cid]
    :if (($state = "running") || ($state = "starting")) do={
        /container stop $cid
    }
    :local tries 0
    :set state [$stateOf cid=$cid]
    :while ((($state = "running") || ($state = "starting") || ($state = "stopping")) && ($tries < 30)) do={
        :delay 1s
        :set tries ($tries + 1)
        :set state [$stateOf cid=$cid]
    }
    :if (($state = "running") || ($state = "starting") || ($state = "stopping")) do={
        :error ("double-natpmp: the container is still " . $state . " after 30 s; nothing was removed yet, run 99-uninstall.rsc again")
    }
    /container remove $cid
    :set tries 0
    :while (([:len [/container find name=$containerName]] > 0) && ($tries < 120)) do={
        :delay 1s
        :set tries ($tries + 1)
    }
    :if ([:len [/container find name=$containerName]] > 0) do={
        :error "double-natpmp: the container is still being removed after 120 s; run 99-uninstall.rsc again (its network is kept until it is gone)"
    }
    :put "double-natpmp: container removed"
}
$envRemove envName=$envList

# --- 2. The settings the install changed, as recorded in natpmp-undo.
:local undo [/system script find name="natpmp-undo"]
:if ([:len $undo] > 0) do={
    :put ("double-natpmp: putting back:\n" . [/system script get $undo source])
    :local undone true
    :do { /system script run $undo } on-error={ :set undone false }
    :if ($undone) do={
        /system script remove $undo
    } else={
        :put "double-natpmp: a setting could not be put back (see the lines above); the script natpmp-undo is kept, so you can do the rest by hand: /system script print where name=natpmp-undo"
    }
} else={
    :local from "address"
    :if ($rosVersion >= 724) do={ :set from "available-from" }
    :put ("double-natpmp: no natpmp-undo script (installed by older scripts): set the API service's address list back yourself (/ip service set [find name=api dynamic=no] " . $from . "=\"\"), and turn RouterOS's NAT-PMP on again if you used it (/ip nat-pmp set enabled=yes)")
}

# --- 3. Firewall, NAT and mangle rules, routes and the routing table of 03-firewall.rsc.
/ip firewall filter remove [find comment~"^natpmp: "]
/ip firewall nat remove [find comment~"^natpmp: "]
/ip firewall mangle remove [find comment~"^natpmp: "]
/ip route remove [find comment~"^natpmp: "]
/routing table remove [find comment~"^natpmp: "]
# Rules the daemon made and could not remove (it removes them itself when stopped cleanly).
/ip firewall nat remove [find comment~"^double-natpmp"]

# --- 4. Container network of 02-container.rsc (the container is gone by now).
/interface bridge port remove [find comment~"^natpmp: "]
/ip address remove [find comment~"^natpmp: "]
/interface bridge remove [find comment~"^natpmp: "]
/interface veth remove [find comment~"^natpmp: "]

# --- 5. API user and group of 01-api-user.rsc.
/user remove [find name=$apiUser comment~"^natpmp: "]
/user group remove [find name=$apiGroup comment~"^natpmp: "]

:put "double-natpmp: removed. Still there, as the install found or left them: the uploaded image file and the pull directory (/file print), the certificate trust settings, the container package and device-mode"
}
