"""The `logs` rules: what each log finding means, declared once for docs and `relayguard rules`."""

from __future__ import annotations

from relayguard.catalogue import Rule
from relayguard.findings import Category, Severity

_PROXY_FIX = ("Turn forward proxying off (`ProxyRequests Off`; no `proxy_pass $scheme://$host` "
              "for arbitrary hosts; Squid `http_access deny all` for outside clients), or "
              "restrict it to your own networks, then check the mail side and the blocklists "
              "for what was sent through it.")
_APACHE_REF = "https://httpd.apache.org/docs/2.4/mod/mod_proxy.html#access"
_POSTFIX_REF = "https://www.postfix.org/SMTPD_ACCESS_README.html"

LOGS_PROXY_SMTP = Rule(
    id="LOGS-PROXY-SMTP", server="logs", category=Category.PROXY_ABUSE,
    severity=Severity.CRITICAL,
    title="Proxy requests to SMTP ports were relayed",
    description="The access log shows CONNECT (or absolute-URI) requests to port 25/465/587 of "
                "other hosts that the server answered as a working tunnel.",
    why="This is how spammers send mail through an open proxy: the mail comes from your IP, "
        "which then lands on blocklists.",
    fix=_PROXY_FIX, reference=_APACHE_REF,
    bad='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "CONNECT mx.example.net:25 HTTP/1.0" '
        '200 1450 "-" "-"',
    good='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "CONNECT mx.example.net:25 HTTP/1.0" '
         '405 225 "-" "-"')
LOGS_PROXY_CONNECT = Rule(
    id="LOGS-PROXY-CONNECT", server="logs", category=Category.PROXY_ABUSE,
    severity=Severity.HIGH,
    title="CONNECT tunnels to other hosts were opened",
    description="The access log shows CONNECT requests to third-party hosts answered with 200.",
    why="Anyone can hide behind the server for any TCP traffic, and its IP takes the blame.",
    fix=_PROXY_FIX, reference=_APACHE_REF,
    bad='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "CONNECT www.example.org:443 HTTP/1.1" '
        '200 5120 "-" "-"',
    good='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "CONNECT www.example.org:443 HTTP/1.1" '
         '403 199 "-" "-"')
LOGS_PROXY_HTTP = Rule(
    id="LOGS-PROXY-HTTP", server="logs", category=Category.PROXY_ABUSE,
    severity=Severity.HIGH,
    title="Absolute-URI requests for other sites were relayed",
    description="The access log shows `GET http://other.site/…` requests answered with pages "
                "that are not the site's own (their sizes differ from the local pages).",
    why="The server is an open HTTP proxy: click fraud, scraping and attacks leave from its IP.",
    fix=_PROXY_FIX, reference=_APACHE_REF,
    bad='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "GET http://www.example.org/ HTTP/1.1" '
        '200 48213 "-" "-"',
    good='203.0.113.9 - - [01/Mar/2026:10:00:00 +0000] "GET http://www.example.org/ HTTP/1.1" '
         '403 199 "-" "-"')
LOGS_PROXY_HOST_HEADER = Rule(
    id="LOGS-PROXY-HOST-HEADER", server="logs", category=Category.PROXY_ABUSE,
    severity=Severity.HIGH,
    title="Requests for foreign Host headers were answered",
    description="The log records the Host header, and requests naming hosts that are not the "
                "server's own names were answered with 2xx pages that are not the local ones.",
    why="A reverse proxy that forwards by Host header to anything is an open proxy too.",
    fix=_PROXY_FIX, reference=_APACHE_REF)
LOGS_PROXY_SCAN = Rule(
    id="LOGS-PROXY-SCAN", server="logs", category=Category.PROXY_ABUSE,
    severity=Severity.LOW,
    title="Open-proxy probing, refused or answered locally",
    description="Clients sent CONNECT or absolute-URI requests, and the server refused them or "
                "answered with its own pages: somebody is looking for an open proxy.",
    why="Not a relay by itself, but scanners come back; make sure the refusal is by design.",
    fix="Nothing to fix if the refusals are intended; keep forward proxying off.",
    reference=_APACHE_REF)
LOGS_SMTP_RELAYED = Rule(
    id="LOGS-SMTP-RELAYED", server="logs", category=Category.RELAY_ABUSE,
    severity=Severity.CRITICAL,
    title="Mail from an unauthenticated outside client was relayed to foreign domains",
    description="The mail log shows messages received from a client that neither "
                "authenticated nor is trusted, delivered out to several foreign domains.",
    why="An open relay sends spam under your IP; blocklisting and bounces follow.",
    fix="Relay only for `mynetworks` and SASL-authenticated users: "
        "`smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
        "reject_unauth_destination`, and remove over-broad `check_client_access` entries.",
    reference=_POSTFIX_REF)
LOGS_SMTP_RELAY_DENIED = Rule(
    id="LOGS-SMTP-RELAY-DENIED", server="logs", category=Category.RELAY_ABUSE,
    severity=Severity.LOW,
    title="Relay attempts were refused",
    description="Clients tried to relay through the MTA and got `Relay access denied`.",
    why="The refusal is working; the attempts show someone testing the server as a relay.",
    fix="Nothing to fix; the MTA refused.", reference=_POSTFIX_REF,
    bad="Oct 22 02:13:42 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.7]: 554 "
        "5.7.1 <a@example.org>: Relay access denied; from=<s@example.net> to=<a@example.org> "
        "proto=ESMTP helo=<x>")
LOGS_SMTP_SASL_BURST = Rule(
    id="LOGS-SMTP-SASL-BURST", server="logs", category=Category.RELAY_ABUSE,
    severity=Severity.MEDIUM,
    title="Bursts of failed SMTP logins",
    description="A client failed SMTP authentication many times within minutes "
                "(>= 10 in 10 minutes).",
    why="Password guessing against submission: a guessed account becomes a relay for spam.",
    fix="Rate-limit or block the client (fail2ban postfix-sasl jail), enforce strong passwords.",
    reference="https://www.postfix.org/SASL_README.html")
LOGS_SMTP_SENDER_VOLUME = Rule(
    id="LOGS-SMTP-SENDER-VOLUME", server="logs", category=Category.RELAY_ABUSE,
    severity=Severity.HIGH,
    title="An account or local sender suddenly mailed many foreign domains",
    description="Mail from a SASL-authenticated user, or handed in locally (pickup, a trusted "
                "client such as a web application on 127.0.0.1), went out within one hour to "
                "ten times the foreign domains (at least 20) or deliveries (at least 100) of "
                "its usual hour; with no earlier hours in the log, to 100 foreign domains or "
                "1000 deliveries.",
    why="A guessed or stolen password, or a hacked contact form, turns the server into a "
        "spam source without any open relay: the MTA does what an allowed sender asks.",
    fix="Lock the account (change its password, end its sessions) or stop the local script, "
        "remove its queued mail (`postqueue -p`, `postsuper -d`), and rate-limit senders "
        "(Postfix `smtpd_client_message_rate_limit`, policyd) before the blocklists react.",
    reference="https://www.postfix.org/SASL_README.html")
LOGS_SMTP_BLOCKLISTED = Rule(
    id="LOGS-SMTP-BLOCKLISTED", server="logs", category=Category.BLOCKLISTED,
    severity=Severity.HIGH,
    title="Remote mail servers refuse our mail because our IP is blocklisted",
    description="Outbound delivery lines carry remote replies saying the sending IP is listed "
                "(`blocked using zen.spamhaus.org`, `listed at …`, Microsoft S3150…).",
    why="Legitimate mail is bouncing; it usually follows relaying through an open proxy or relay.",
    fix="Stop the relaying first (see the other findings), then request delisting from each "
        "list named in the bounces.",
    reference="https://www.spamhaus.org/lookup/")

LOGS_VOLUME_SPIKE = Rule(
    id="LOGS-VOLUME-SPIKE", server="logs", category=Category.VOLUME_ANOMALY,
    severity=Severity.MEDIUM,
    title="Requests per minute jumped far above the site's usual rate",
    description="A minute of the access log holds at least 300 requests and ten times the "
                "median of the 60 busy minutes before it.",
    why="Proxy abuse and floods show up first as a server that slows down; the spike says when "
        "to look, even where no single line names a relayed request.",
    fix="Look at what the spike's minutes hold (clients, CONNECT and absolute-URI requests); "
        "the other findings name the relaying if there was any.",
    reference="https://httpd.apache.org/docs/2.4/logs.html#accesslog")
LOGS_MAIL_FAILURE_SPIKE = Rule(
    id="LOGS-MAIL-FAILURE-SPIKE", server="logs", category=Category.VOLUME_ANOMALY,
    severity=Severity.MEDIUM,
    title="Deferred and bounced deliveries jumped far above their usual rate",
    description="A minute of the mail log holds at least 30 deferred or bounced deliveries and "
                "ten times the median of the 60 minutes with failures before it.",
    why="Spam sent through a relay or a stolen account bounces: remote servers refuse it, and "
        "soon refuse the server's legitimate mail too.",
    fix="Find what was sent (the relaying and sender-volume findings, `postqueue -p`), stop "
        "it, and check the blocklists.",
    reference="https://www.postfix.org/QSHAPE_README.html")

RULES: tuple[Rule, ...] = (
    LOGS_PROXY_SMTP, LOGS_PROXY_CONNECT, LOGS_PROXY_HTTP, LOGS_PROXY_HOST_HEADER, LOGS_PROXY_SCAN,
    LOGS_SMTP_RELAYED, LOGS_SMTP_RELAY_DENIED, LOGS_SMTP_SASL_BURST, LOGS_SMTP_SENDER_VOLUME,
    LOGS_SMTP_BLOCKLISTED, LOGS_VOLUME_SPIKE, LOGS_MAIL_FAILURE_SPIKE,
)
