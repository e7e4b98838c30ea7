"""Real alert receivers on loopback: an aiosmtpd SMTP server (STARTTLS + AUTH), an HTTP
webhook server and a UDP syslog listener. Each can be stopped and started again on the same
port, to test that the watcher keeps undeliverable alerts and delivers them later."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "alerts", "s3cret-pw"


def self_signed(workdir: Path, ip: str) -> tuple[Path, Path]:
    """A certificate for `ip` (its own CA) and its key, made with the openssl CLI."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={ip}", "-addext", f"subjectAltName=IP:{ip}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class _Collect:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.content.decode("utf-8", "replace"),
                              "tls": session.ssl is not None,
                              "auth": bool(getattr(session, "authenticated", False))})
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and \
        auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok)


class SmtpReceiver:
    """aiosmtpd requiring STARTTLS before AUTH; `messages` survive stop/start."""

    def __init__(self, host: str, port: int, cert: Path, key: Path) -> None:
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.handler = _Collect()
        self.controller: Controller | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.handler.messages

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname=self.host, port=self.port,
                                     tls_context=self.ctx, require_starttls=True,
                                     authenticator=_auth, auth_required=True,
                                     auth_require_tls=True, ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class WebhookReceiver:
    """POST bodies (parsed JSON) collected in `posts`; 200 for each."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.posts: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                posts.append({"body": json.loads(self.rfile.read(n)),
                              "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def alerts(self) -> list[dict[str, Any]]:
        return [a for p in self.posts for a in p["body"]["alerts"]]


class SyslogReceiver:
    """UDP datagrams collected in `messages` by a thread (bounded by `stop`)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode("utf-8", "replace"))

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()
