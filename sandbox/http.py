"""Run a WSGI app on loopback over real HTTP/1.1, in a background thread.

Both emulators use this so that tests, the demo and `entra-assets sandbox` talk to them through real
sockets, exactly as the product talks to Microsoft Graph and Atlassian. The server is cheroot (CherryPy's
WSGI server): unlike werkzeug's development server, which closes the connection after every response, it
keeps connections alive as the real services do, so a 100,000-user sync reuses a handful of connections
instead of opening ~4,000 - and the client CPU the benchmark reports is the product's, not TCP set-up.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Self

from cheroot import wsgi


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached an emulator (throttled and rejected ones included). ``json`` is the parsed
    body, None when there is none or it is not JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    json: object = None


@dataclass
class RunningServer:
    """A server started by :func:`serve`; ``url`` is ``http://127.0.0.1:<port>`` (no trailing slash)."""

    url: str
    server: wsgi.Server
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Stop accepting requests, close open connections and wait for the serving thread (idempotent)."""
        self.server.stop()
        self.thread.join(timeout=10)


def serve(app, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> RunningServer:
    """Start ``app`` (a WSGI callable) on ``host:port`` (0 = any free port) and return once it listens."""
    server = wsgi.Server((host, port), app, numthreads=threads, shutdown_timeout=1)
    server.expiration_interval = 0.02  # the serve loop checks its stop flag this often: fast test teardown
    server.prepare()  # binds: the port is known and connections are accepted from here on
    bound_port = server.bind_addr[1]
    thread = threading.Thread(target=server.serve, name=f"sandbox-{bound_port}", daemon=True)
    thread.start()
    return RunningServer(url=f"http://{host}:{bound_port}", server=server, thread=thread)


class Served:
    """``start``/``stop`` for an emulator that is its own WSGI app (it defines ``__call__``)."""

    url: str = ""
    _server: RunningServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        """Serve on ``host:port`` (0 = a free port) in a background thread; sets ``url``. Returns self."""
        self._server = serve(self, host, port)
        self.url = self._server.url
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server:
            self._server.stop()
            self._server = None
