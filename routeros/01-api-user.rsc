# double-natpmp (1/3): a RouterOS API user whose group has the least policy the daemon needs.
# Target: RouterOS 7.20 or newer (7.x older than that works too for this file).
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

:if ([:len [/user group find name=$apiGroup]] = 0) do={
    /user group add name=$apiGroup policy=read,write,api,test comment="natpmp: least privilege for double-natpmp"
} else={
    /user group set [find name=$apiGroup] policy=read,write,api,test
}

:if ([:len [/user find name=$apiUser]] = 0) do={
    /user add name=$apiUser group=$apiGroup password=$apiPassword address=($clientIp . "/32") comment="natpmp: double-natpmp API user"
} else={
    /user set [find name=$apiUser] group=$apiGroup password=$apiPassword address=($clientIp . "/32")
}

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
