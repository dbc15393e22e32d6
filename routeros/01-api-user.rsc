# double-natpmp (1/3): a RouterOS API user whose group has the least policy the daemon needs.
# Target: RouterOS 7.19 to 7.24 (tests/component/routeros_commands.rs checks every command against
# the command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24).
#
# Edit the variables below, then:  /import file-name=01-api-user.rsc
# (or paste the whole { ... } block into a terminal at once).
#
# The password is a RouterOS string: inside its double quotes write \" for a double quote,
# \\ for a backslash, \$ for a dollar sign and \? for a question mark (typed or pasted into a
# terminal, a bare question mark opens the help instead). So the password  a"b\c$d  is written
# "a\"b\\c\$d", and one that ends in a question mark ends in \?". Use the same password, written
# the same way, in 02-container.rsc.
#
# Policies (docs/routeros-api.md section 2.6):
#   read  - print the NAT table, identity and version
#   write - add and remove the daemon's dst-nat rules
#   api   - log in through the API
#   test  - /ip/route/check, to find the VPN interface; not needed when the container sets
#           MIKROTIK_IN_INTERFACE, so you may drop it then.
# Nothing else: no sensitive, policy, password, ftp, reboot, ssh, winbox or web.
#
# Changes: adds the group and the user (comments start with "natpmp:"; a group or user of that
# name that these scripts did not make is left alone and the script stops), and enables the
# plain API service, restricted to clientIp. The service's previous address list and state
# are written into the script natpmp-undo, which 99-uninstall.rsc runs to put them back.
# The service is the configured row (dynamic=no): since 7.19 /ip service also lists a dynamic
# row named api for each open API session, which "set api" would trip over. Its address list
# is available-from from 7.24, address before.
{
:local apiGroup "natpmp"
:local apiUser "natpmp"
:local apiPassword "CHANGE-ME"
# The only address the user may log in from: the container's (02-container.rsc), or for
# Docker on a LAN host, that host's LAN address.
:local clientIp "172.30.254.2"
# Also restrict the router's plain API service (port 8728) to that address. Set to "no" if
# other tools use the API; then add clientIp to the service's address list yourself.
:local restrictService "yes"

:if ($apiPassword = "CHANGE-ME") do={
    :error "double-natpmp: set apiPassword at the top of 01-api-user.rsc first"
}

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
:if ($rosVersion < 719) do={
    :error ("double-natpmp: these scripts need RouterOS 7.19 or newer; this router runs " . $ver)
}

# Settings this script changes are written, as the commands that put them back, into the
# script natpmp-undo, which 99-uninstall.rsc runs. A setting is recorded once (the first
# install), so running this file again keeps the value from before the first install.
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

:local grp [/user group find name=$apiGroup]
:if ([:len $grp] = 0) do={
    /user group add name=$apiGroup policy=read,write,api,test comment="natpmp: least privilege for double-natpmp"
} else={
    :if (!([/user group get $grp comment] ~ "^natpmp: ")) do={
        :error ("double-natpmp: a group named " . $apiGroup . " exists and was not made by these scripts (the original mikrotik-double-natpmp's setup makes one); set apiGroup to another name, or remove it and its user:  /user remove [find group=" . $apiGroup . "]  /user group remove [find name=" . $apiGroup . "]")
    }
    /user group set $grp policy=read,write,api,test
}

:local usr [/user find name=$apiUser]
:if ([:len $usr] = 0) do={
    /user add name=$apiUser group=$apiGroup password=$apiPassword address=($clientIp . "/32") comment="natpmp: double-natpmp API user"
} else={
    :if (!([/user get $usr comment] ~ "^natpmp: ")) do={
        :error ("double-natpmp: a user named " . $apiUser . " exists and was not made by these scripts (the original mikrotik-double-natpmp's setup makes one); set apiUser to another name, or remove it:  /user remove [find name=" . $apiUser . "]")
    }
    /user set $usr group=$apiGroup password=$apiPassword address=($clientIp . "/32")
}

# --- The API service as it was (address list and disabled), for 99-uninstall.rsc. Only the
#     configured row (dynamic=no), never a session's dynamic row of the same name.
:local svc [/ip service find name="api" dynamic=no]
:if ([:len $svc] != 1) do={
    :error "double-natpmp: found no configured api service (/ip service print where name=\"api\" and dynamic=no)"
}
:local fromName "address"
:local fromOf
:local setService
:if ($rosVersion >= 724) do={
    :set fromName "available-from"
    :set fromOf [:parse ":return [/ip service get \$svc available-from]"]
    :set setService [:parse "/ip service set \$svc available-from=\$from disabled=no"]
} else={
    :set fromOf [:parse ":return [/ip service get \$svc address]"]
    :set setService [:parse "/ip service set \$svc address=\$from disabled=no"]
}
:local was ""
:foreach a in=[$fromOf svc=$svc] do={
    :if ([:len $was] > 0) do={ :set was ($was . ",") }
    :set was ($was . $a)
}
# The undo line catches its own error, so 99-uninstall.rsc goes on if it fails (the key also
# matches the line older scripts wrote, so a re-run never records the restricted state).
$undoRecord key="/ip service set " line=(":do { /ip service set [find name=\"api\" dynamic=no] " . $fromName . "=\"" . $was . "\" disabled=" . [/ip service get $svc disabled] . " } on-error={ :put \"double-natpmp: could not put the api service back; see /ip service print where name=api and dynamic=no\" }")
:if ($restrictService = "yes") do={
    $setService svc=$svc from=($clientIp . "/32")
} else={
    /ip service set $svc disabled=no
}
# api-ssl instead (then MIKROTIK_API_TLS=true and MIKROTIK_API_ADDRESS=<router>:8729, and give
# the container the CA file or the certificate's SHA-256 fingerprint):
#   /certificate add name=natpmp-ca common-name=natpmp-ca key-usage=key-cert-sign,crl-sign days-valid=3650
#   /certificate sign natpmp-ca
#   /certificate add name=natpmp-api common-name=172.30.254.1 subject-alt-name=IP:172.30.254.1 days-valid=3650
#   /certificate sign natpmp-api ca=natpmp-ca
#   /ip service set [find name=api-ssl dynamic=no] certificate=natpmp-api address=172.30.254.2/32 disabled=no
#   (on 7.24 and later: available-from=172.30.254.2/32 instead of address=)

:put ("double-natpmp: API user '" . $apiUser . "' in group '" . $apiGroup . "' (read,write,api,test), allowed from " . $clientIp)
}
