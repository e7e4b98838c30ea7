"""Real Debian daemons on loopback for tests: start with a test-written config, always stop.

Every launcher is a context manager yielding a `Daemon` (base.py): `.host`, `.port`,
`.config` (main config path), `.workdir`, `.logs` (name -> Path; `.log(name)` reads one,
`.wait_log(name, needle)` waits for a line: daemons write logs after they reply),
`.diagnostics()` (stderr + log tails, for assertion messages), `.extra` (launcher specifics).
It writes the config into a fresh 0755 dir under /tmp (daemons drop privileges and cannot
enter pytest's 0700 tmp dirs; pass `workdir=` to choose), starts the daemon in its own
session, waits (bounded, 15 s) until host:port accepts, and on exit kills the whole process
group — also when the test fails. Use a module- or session-scoped fixture per config:

    @pytest.fixture(scope="module")
    def open_proxy():
        with apache("127.0.4.10", 8080, "ProxyRequests On\\n", modules=PROXY_MODULES) as d:
            yield d

Launchers (each takes the address, port, and config text or options):
- apache(host, port, body, modules=(), extra_listen=())     apache.py
    body = your directives, written to `extra["body"]` (its own file, so line numbers are
    yours) and included at the end of a minimal preamble; BASE_MODULES always loaded,
    PROXY_MODULES = proxy, proxy_http, proxy_connect. Logs: "error", "access".
- squid(host, port, access=STOCK_ACCESS)       squid.py  (access = acl/http_access lines)
- nginx(host, port, body="")                  nginx.py  (body = server-block lines;
    logs "access" (combined), "error")
- tinyproxy(host, port, body=STOCK_BODY)       tinyproxy.py  ("" = no Allow: open)
- privoxy(host, port, body="")                 privoxy.py  (stock actions, no permit-access)
- danted(host, port, rules=OPEN_RULES)         dante.py  (restricted_rules("127.0.0.1/32"))
- microsocks(host, port, user=, password=)     microsocks.py
- postfix(host, port, main_cf="", files={})    postfix.py  (root: adds host/32 to lo;
    main_cf lines override a stock-like base; files = maps beside main.cf; log "mail")

Client side (http.py):
- http_request(host, port, raw, source="127.0.4.99") -> HttpReply(status_line, headers,
  body, raw; .status, .text): sends the bytes exactly as given from that source address.
- http_get(host, port, target, method=, host_header=, headers=, source=)
- http_canary(host, port=0) -> HttpCanary: answers `200 canary <target>` and records each
  request as Hit(peer, data, method, target, headers); `.saw(nonce)`, `.wait_for(nonce)`.
- tcp_canary(host, port=0, banner=b"220 …") -> TcpCanary: a raw/SMTP-like listener.
- socks.socks5_connect / socks4_connect(host, port, dst_host, dst_port, source=) ->
  (code, socket | None): does the SOCKS daemon grant a stranger a tunnel?
- base.free_port(host), base.port_open(host, port), base.wait_port(...).

Importing `tests.servers` needs `tests/__init__.py` (present) and an `__init__.py` in your
own test directory, so pytest puts the repository root on sys.path.
"""

from tests.servers.apache import BASE_MODULES, PROXY_MODULES, apache
from tests.servers.base import Daemon, DaemonError, free_port, port_open, wait_port
from tests.servers.http import (
    HttpCanary,
    HttpReply,
    TcpCanary,
    http_canary,
    http_get,
    http_request,
    tcp_canary,
)

__all__ = [
    "BASE_MODULES",
    "PROXY_MODULES",
    "Daemon",
    "DaemonError",
    "HttpCanary",
    "HttpReply",
    "TcpCanary",
    "apache",
    "free_port",
    "http_canary",
    "http_get",
    "http_request",
    "port_open",
    "tcp_canary",
    "wait_port",
]
