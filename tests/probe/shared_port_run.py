"""Run inside a network namespace whose ephemeral range is ONE port (see test_source_ports):
the scanner connects from 127.0.0.1 to a target, then a local "relay" connects to the canary
without binding, so the kernel must give it the scanner's very local end. Prints, as JSON,
both local ends and what the canary made of the relay's nonce. Not collected by pytest.
"""

from __future__ import annotations

import asyncio
import json
import socket

from relayguard.probe.canary import Canary, new_nonce
from relayguard.probe.context import ProbeContext, ProbeOptions
from relayguard.probe.net import Transcript, endpoint

TARGET = ("127.0.0.2", 8080)


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The target: keeps the scanner's connection open until the scanner closes it."""
    async with asyncio.timeout(10):
        await reader.read()
    writer.close()


async def main() -> dict[str, object]:
    # Fixed ports: a listener on port 0 would take the namespace's only ephemeral port.
    canary = Canary("127.0.0.1", http_port=80, raw_port=443, smtp_ports=())
    await canary.start()
    server = await asyncio.start_server(_hold, *TARGET)
    loop = asyncio.get_running_loop()
    try:
        ctx = ProbeContext(ProbeOptions(timeout=2.0, source="127.0.0.1"), canary)
        async with ctx.connection(*TARGET, Transcript()) as conn:
            with socket.socket() as relay:
                relay.setblocking(False)
                async with asyncio.timeout(5):
                    await loop.sock_connect(relay, ("127.0.0.1", canary.http_port))
                nonce = new_nonce()
                # Half a request: the canary's conversation with the relay stays open while
                # the scanner asks whether its own socket is talking to the canary.
                await loop.sock_sendall(relay, f"GET /{nonce} HTTP/1.0\r\n".encode())
                await asyncio.sleep(0.2)
                serving = canary.serving(conn.local_endpoint, conn.remote_endpoint)
                await loop.sock_sendall(relay, b"\r\n")
                hits = await canary.wait(nonce, 3.0)
                return {"scanner": conn.local_endpoint,
                        "relay": endpoint(relay.getsockname()),
                        "serving": serving, "own": [h.own for h in hits]}
    finally:
        server.close()
        await canary.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
