# double-natpmp (1/3): a RouterOS API user whose group has the least policy the daemon needs.
# Target: RouterOS 7.19 to 7.24 (tests/routeros_commands.rs checks every command against the
# command trees of 7.19.6, 7.20.8, 7.21.5, 7.22.3, 7.23.3 and 7.24).
#
# Edit the variables below, then:  /import file-name=01-api-user.rsc
# (or paste the whole { ... } block into a terminal at once).
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
        :error ("double-natpmp: a group named " . $apiGroup . " exists and was not made by these scripts; set apiGroup to another name")
    }
    /user group set $grp policy=read,write,api,test
}

:local usr [/user find name=$apiUser]
:if ([:len $usr] = 0) do={
    /user add name=$apiUser group=$apiGroup password=$apiPassword address=($clientIp . "/32") comment="natpmp: double-natpmp API user"
} else={
    :if (!([/user get $usr comment] ~ "^natpmp: ")) do={
        :error ("double-natpmp: a user named " . $apiUser . " exists and was not made by these scripts; set apiUser to another name")
    }
    /user set $usr group=$apiGroup password=$apiPassword address=($clientIp . "/32")
}

# The API service as it was (address list and disabled), for 99-uninstall.rsc.
:local was ""
:foreach a in=[/ip service get api address] do={
    :if ([:len $was] > 0) do={ :set was ($was . ",") }
    :set was ($was . $a)
}
$undoRecord key="/ip service set api " line=("/ip service set api address=\"" . $was . "\" disabled=" . [/ip service get api disabled])
:if ($restrictService = "yes") do={
    /ip service set api address=($clientIp . "/32") disabled=no
} else={
    /ip service set api disabled=no
}
# api-ssl instead (then MIKROTIK_API_TLS=true and MIKROTIK_API_ADDRESS=<router>:8729, and give
# the container the CA file or the certificate's SHA-256 fingerprint):
#   /certificate add name=natpmp-ca common-name=natpmp-ca key-usage=key-cert-sign,crl-sign days-valid=3650
#   /certificate sign natpmp-ca
#   /certificate add name=natpmp-api common-name=172.30.254.1 subject-alt-name=IP:172.30.254.1 days-valid=3650
#   /certificate sign natpmp-api ca=natpmp-ca
#   /ip service set api-ssl certificate=natpmp-api address=172.30.254.2/32 disabled=no

:put ("double-natpmp: API user '" . $apiUser . "' in group '" . $apiGroup . "' (read,write,api,test), allowed from " . $clientIp)
}
