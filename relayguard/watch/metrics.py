"""Prometheus metrics in the text exposition format, served by a tiny stdlib HTTP server.

A dozen counters and gauges do not justify prometheus_client as a dependency; the format
(`# HELP`, `# TYPE`, `name{label="v"} value`) is simple and stable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from relayguard.digits import is_digits
from relayguard.errors import InputError

HELP = {
    "lines_read": ("counter", "Log lines read"),
    "parse_errors": ("counter", "Log lines no known format parsed"),
    "unparsable_files": ("gauge", "Followed files whose format parses (nearly) none of their "
                                  "lines (they are not being watched)"),
    "incidents": ("counter", "Incidents opened"),
    "alerts_created": ("counter", "Alerts created (queued to every channel)"),
    "alerts_sent": ("counter", "Alerts delivered, per channel"),
    "alerts_failed": ("counter", "Alert delivery failures (they are retried), per channel"),
    "alerts_pending": ("gauge", "Alerts waiting in the outbox, per channel"),
    "lag_bytes": ("gauge", "Bytes written to followed files but not read yet"),
    "lag_seconds": ("gauge", "Seconds since the followed files were last read up to their end"),
    "blocks": ("counter", "Block actions (dry-run included)"),
    "blocked": ("gauge", "Addresses currently blocked"),
    "blocklist_checks": ("counter", "Blocklist re-checks run"),
}


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"'.replace("\n", " ") for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters and gauges keyed by (name, labels)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.collectors: list[Callable[[Metrics], None]] = []

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self.values[(name, tuple(sorted(labels.items())))] = value

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def render(self) -> str:
        for collect in self.collectors:
            collect(self)
        with self._lock:
            items = sorted(self.values.items())
        out: list[str] = []
        seen: set[str] = set()
        for (name, labels), value in items:
            full = f"relayguard_watch_{name}" + ("_total" if HELP.get(name, ("gauge",))[0]
                                                 == "counter" else "")
            if name not in seen:
                seen.add(name)
                kind, text = HELP.get(name, ("gauge", name))
                out += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
            num = repr(float(value)) if value != int(value) else str(int(value))
            out.append(f"{full}{_labels(dict(labels))} {num}")
        return "\n".join(out) + "\n"


def parse_listen(text: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[v6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not is_digits(port) or not 0 < int(port) < 65536:
        raise InputError("--metrics", f"expected ADDR:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class MetricsServer:
    """`GET /metrics` on ADDR:PORT in a daemon thread."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        host, port = parse_listen(listen)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise InputError("--metrics", f"cannot listen on {listen}: {exc.strerror}") \
                from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
