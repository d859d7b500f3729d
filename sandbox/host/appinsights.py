"""An Application Insights ingestion endpoint ("Breeze") on loopback, for the telemetry export tests.

The Azure Monitor exporter posts batches of envelopes to ``{IngestionEndpoint}/v2.1/track`` (``v2/track`` is the
older path): a JSON array (or newline-delimited JSON objects), optionally gzip'd, each envelope
``{"ver", "name", "time", "iKey", "tags", "data": {"baseType": ..., "baseData": {...}}}``. The answer is
``{"itemsReceived": n, "itemsAccepted": m, "errors": [{"index", "statusCode", "message"}]}``: 200 when all were
accepted, 206 when some were refused (the exporter retries the retriable ones), 400 when none was.

Strict where the real service is: only POST to a track path, only JSON, every envelope must name the resource's
instrumentation key and carry ``name``, ``time`` and ``data.baseType``. The per-item status codes for a wrong
key or a missing field are UNCONFIRMED (the service documents the response shape, not each code); 400 is what
the exporter treats as "drop, don't retry".
https://learn.microsoft.com/azure/azure-monitor/app/api-custom-events-metrics (envelopes),
https://github.com/Azure/azure-sdk-for-python/tree/main/sdk/monitor/azure-monitor-opentelemetry-exporter

Served by the standard library's HTTP server, not cheroot like the other emulators: connection strings end in
``/`` (``IngestionEndpoint=https://<region>.in.applicationinsights.azure.com/``), so the exporter asks for
``//v2.1/track``, which cheroot refuses as an absolute URI while the real service accepts it.
"""
from __future__ import annotations

import gzip
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from sandbox.http import RecordedRequest

TRACK_PATHS = ("/v2.1/track", "/v2/track")
INSTRUMENTATION_KEY = "00000000-0000-0000-0000-000000000000"
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class AppInsightsEmulator:
    """Accepts telemetry for ``instrumentation_key``; ``envelopes`` holds every accepted envelope, ``requests``
    every request as it arrived."""

    instrumentation_key: str = INSTRUMENTATION_KEY
    envelopes: list[dict] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connection_string(self) -> str:
        """What ``APPLICATIONINSIGHTS_CONNECTION_STRING`` must say to send telemetry here."""
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.url}/"

    def start(self, port: int = 0) -> AppInsightsEmulator:
        """Listen on 127.0.0.1:``port`` (0 = a free one) in a background thread."""
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="appinsights-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def named(self, kind: str) -> list[dict]:
        """Accepted envelopes whose ``data.baseType`` is ``kind`` (RequestData, MessageData, MetricData ...)."""
        with self._lock:
            return [e for e in self.envelopes if e["data"]["baseType"] == kind]

    # -- the track endpoint ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict]:
        """Record one request and answer it: (HTTP status, JSON body)."""
        parts = urlsplit(target)
        path = re.sub("/{2,}", "/", parts.path)
        with self._lock:
            self.requests.append(RecordedRequest(method, path, dict(parse_qsl(parts.query)), headers, raw))
        if path not in TRACK_PATHS:
            return 404, _refused(404, f"no such endpoint {path}")
        if method != "POST":
            return 405, _refused(405, "only POST")
        content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in ("application/json", "application/x-json-stream"):
            return 415, _refused(415, f"unsupported Content-Type {content_type!r}")
        try:
            if headers.get("Content-Encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            items = _parse(raw)
        except (OSError, ValueError) as err:
            return 400, _refused(400, f"invalid body: {err}")
        errors = []
        accepted = []
        for index, item in enumerate(items):
            problem = self._problem(item)
            if problem:
                errors.append({"index": index, "statusCode": 400, "message": problem})
            else:
                accepted.append(item)
        with self._lock:
            self.envelopes.extend(accepted)
        body = {"itemsReceived": len(items), "itemsAccepted": len(accepted), "appId": None, "errors": errors}
        return (200 if not errors else 206 if accepted else 400), body

    def _problem(self, item: object) -> str | None:
        if not isinstance(item, dict):
            return "an envelope must be a JSON object"
        if item.get("iKey") != self.instrumentation_key:
            return "Invalid instrumentation key"
        for name in ("name", "time"):
            if not isinstance(item.get(name), str) or not item[name]:
                return f"Field '{name}' on type 'Envelope' is required but missing or empty"
        data = item.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("baseType"), str) or "baseData" not in data:
            return "Field 'data' must carry 'baseType' and 'baseData'"
        return None


def _parse(raw: bytes) -> list:
    """A JSON array, or newline-delimited JSON objects (both accepted by the service)."""
    text = raw.decode("utf-8").strip()
    if not text:
        raise ValueError("empty body")
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("not a JSON array")
        return items
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _refused(status: int, message: str) -> dict:
    return {"itemsReceived": 0, "itemsAccepted": 0, "errors": [{"index": 0, "statusCode": status,
                                                                "message": message}]}


def _handler(emulator: AppInsightsEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the service

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                status, body = 413, _refused(413, "body too large")
                self.close_connection = True
            else:
                raw = self.rfile.read(length) if length else b""
                status, body = emulator.handle(self.command, self.path, {k.title(): v for k, v in self.headers.items()}, raw)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests are recorded in ``emulator.requests``; stderr stays quiet

    return Handler
