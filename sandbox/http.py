"""Run a WSGI app on loopback over real HTTP, in a background thread.

Both emulators use this so that tests, the demo and `entra-assets sandbox` talk to them through real
sockets, exactly as the product talks to Microsoft Graph and Atlassian.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug logs every request to stderr; the emulators keep their own request log instead."""

    def log_request(self, *args, **kwargs) -> None:
        pass


@dataclass
class RunningServer:
    """A server started by :func:`serve`; ``url`` is ``http://127.0.0.1:<port>`` (no trailing slash)."""

    url: str
    server: BaseWSGIServer
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Stop accepting requests and wait for the serving thread (idempotent)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start ``app`` (a WSGI callable) on ``host:port`` (0 = any free port) and return at once."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{server.port}", daemon=True)
    thread.start()
    return RunningServer(url=f"http://{host}:{server.port}", server=server, thread=thread)
