"""Probe rules: what `relayguard probe` proved a stranger can make a target relay.

Each id is raised only by the check named in its description, and a finding is `confirmed`
only when the scanner's canary received the probe's nonce from the target.
"""

from __future__ import annotations

from relayguard.catalogue import Rule
from relayguard.findings import Category, Severity

_PROXY_FIX = (
    "Allow proxying only for your own clients, or turn it off. Apache: `ProxyRequests Off`, "
    "or `<Proxy \"*\"> Require ip 192.0.2.0/24 </Proxy>`; Squid: `http_access allow localnet` "
    "then `http_access deny all`; tinyproxy: `Allow 192.0.2.0/24`; Privoxy: `permit-access`."
)
_CONNECT_FIX = (
    "Restrict CONNECT to 443 and to your own clients. Apache: `AllowCONNECT 443` plus a "
    "`<Proxy \"*\">` ACL; Squid: `http_access deny CONNECT !SSL_ports`; tinyproxy: "
    "`ConnectPort 443`; Privoxy: `+limit-connect{443}`."
)
_SOCKS_FIX = (
    "Require authentication or restrict clients. Dante: `client pass { from: 192.0.2.0/24 }` "
    "and `socksmethod: username`; microsocks: `-u USER -P PASS` and `-i` on an internal address."
)

HTTP_ABSOLUTE_URI = Rule(
    id="PROBE-HTTP-ABSOLUTE-URI", server="probe", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="Target forwards absolute-URI HTTP requests to third-party hosts",
    description="`GET http://<canary>/<nonce>` (and HEAD) sent to the target reached the "
    "scanner's canary: the target is a forward HTTP proxy for this client.",
    why="Open proxies are used to hide the origin of attacks, scraping and spam; the proxy's "
    "address takes the blame and lands on blocklists.",
    fix=_PROXY_FIX,
    reference="https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#access",
)
HTTP_HOST_HEADER = Rule(
    id="PROBE-HTTP-HOST-HEADER", server="probe", category=Category.OPEN_HTTP_PROXY,
    severity=Severity.HIGH,
    title="Target proxies to whatever host the Host header names",
    description="`GET /<nonce>` with `Host: <canary>` reached the canary: a reverse proxy "
    "builds its upstream from the client's Host header (e.g. Apache "
    "`RewriteRule ^/(.*) http://%{HTTP_HOST}/$1 [P]`, nginx `proxy_pass http://$host`).",
    why="It is an open proxy in disguise: any client can make it fetch any host.",
    fix="Proxy only to fixed upstreams; never build the upstream from the Host header.",
    reference="https://httpd.apache.org/docs/2.4/rewrite/flags.html#flag_p",
)
CONNECT = Rule(
    id="PROBE-CONNECT", server="probe", category=Category.OPEN_CONNECT_PROXY,
    severity=Severity.HIGH,
    title="Target opens CONNECT tunnels to third-party hosts",
    description="`CONNECT <canary>:443` was granted and the nonce sent through the tunnel "
    "reached the canary.",
    why="A CONNECT tunnel carries any TCP protocol; with a wider port list it reaches mail "
    "servers (see PROBE-CONNECT-SMTP).",
    fix=_CONNECT_FIX,
    reference="https://httpd.apache.org/docs/2.4/mod/mod_proxy_connect.html#allowconnect",
)
CONNECT_SMTP = Rule(
    id="PROBE-CONNECT-SMTP", server="probe", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Target tunnels CONNECT to SMTP ports of third-party hosts",
    description="`CONNECT <canary>:25` (or 465/587) was granted and the canary's SMTP "
    "listener received `EHLO <nonce>` through the tunnel.",
    why="This is the spam vector of the founding incident: spammers deliver mail through the "
    "proxy, and the proxy's address gets blocklisted.",
    fix=_CONNECT_FIX,
    reference="https://httpd.apache.org/docs/2.4/mod/mod_proxy_connect.html#allowconnect",
)
HTTP_SMTP = Rule(
    id="PROBE-HTTP-SMTP", server="probe", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Target forwards HTTP requests to SMTP ports of third-party hosts",
    description="An absolute-URI (or Host-header) request for `http://<canary>:25/<nonce>` "
    "made the target connect to the canary's SMTP port and send the nonce. The "
    "cross-protocol path works even where CONNECT to port 25 is refused (Apache's default "
    "`AllowCONNECT 443 563` does not limit it).",
    why="A POST body relayed to port 25 is read line by line by many MTAs: SMTP commands "
    "smuggled in it send mail from the proxy's address.",
    fix=_PROXY_FIX + " Squid's stock `http_access deny !Safe_ports` also blocks port 25.",
    reference="https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#access",
)
SOCKS4 = Rule(
    id="PROBE-SOCKS4", server="probe", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.HIGH,
    title="Target is an open SOCKS4/4a proxy",
    description="A SOCKS4 or SOCKS4a CONNECT to the canary was granted (0x5A) without "
    "credentials and the nonce reached the canary through the tunnel.",
    why="SOCKS tunnels carry any TCP protocol for anyone, including SMTP.",
    fix=_SOCKS_FIX,
    reference="https://www.openssh.com/txt/socks4.protocol",
)
SOCKS5 = Rule(
    id="PROBE-SOCKS5", server="probe", category=Category.OPEN_SOCKS_PROXY,
    severity=Severity.HIGH,
    title="Target is an open SOCKS5 proxy",
    description="A SOCKS5 greeting offering only 'no authentication' was accepted, CONNECT to "
    "the canary was granted, and the nonce reached the canary through the tunnel.",
    why="SOCKS tunnels carry any TCP protocol for anyone, including SMTP.",
    fix=_SOCKS_FIX,
    reference="https://www.rfc-editor.org/rfc/rfc1928",
)
SOCKS_SMTP = Rule(
    id="PROBE-SOCKS-SMTP", server="probe", category=Category.SMTP_VIA_PROXY,
    severity=Severity.CRITICAL,
    title="Target tunnels SOCKS connections to SMTP ports of third-party hosts",
    description="A SOCKS CONNECT to the canary's port 25 (or 465/587) was granted without "
    "credentials and the canary's SMTP listener received `EHLO <nonce>`.",
    why="Open SOCKS proxies are the classic spam delivery path; the proxy's address gets "
    "blocklisted.",
    fix=_SOCKS_FIX,
    reference="https://www.rfc-editor.org/rfc/rfc1928",
)
SMTP_RELAY = Rule(
    id="PROBE-SMTP-RELAY", server="probe", category=Category.OPEN_SMTP_RELAY,
    severity=Severity.CRITICAL,
    title="MTA accepts mail for foreign domains from an unauthenticated stranger",
    description="Without AUTH, RCPT TO a foreign domain was answered 250/251 (one or more of "
    "nmap's 16 relay tricks and a few more). `likely` at RCPT (no DATA is sent); `confirmed` "
    "only with `--confirm-delivery`, when one tiny message reached the canary.",
    why="An open relay sends spam for anyone and is blocklisted within hours.",
    fix="Postfix: `smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
    "reject_unauth_destination` and a `mynetworks` that lists only your own hosts; "
    "no `check_client_access` map that says OK for whole networks.",
    reference="https://www.postfix.org/SMTPD_ACCESS_README.html",
)

RULES: tuple[Rule, ...] = (
    HTTP_ABSOLUTE_URI, HTTP_HOST_HEADER, CONNECT, CONNECT_SMTP, HTTP_SMTP,
    SOCKS4, SOCKS5, SOCKS_SMTP, SMTP_RELAY,
)
