"""Telemetry: structured logs that follow a correlation id, keep personal data and secrets out, and go to
Application Insights through OpenTelemetry when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

Correlation. A correlation id (``cid``, 16 hex characters) lives in a context variable. The webhook starts one per
notification POST and writes it into every message it queues (``"cid"``); the timer and each CLI command start
one per run, and every message sent under it is stamped (``StampingQueue``); a worker pass runs under the cid of
the message that triggered it and logs the Assets execution id together with every cid its coalesced messages
carried (at most ``MAX_CIDS``). Every log record gets a ``cid`` attribute (a log record factory), so an admin can
follow one notification from the webhook to the Assets execution that carried it.

No personal data by default. Log calls in this app name object ids, counts and stages, never e-mails, names,
UPNs, tokens, ``clientState`` or URLs with their query. Third-party loggers that log request URLs at INFO (httpx,
httpcore, azure-core's HTTP logging policy) are raised to WARNING. As a second line of defence every message is
passed through ``redact`` (e-mail addresses, bearer tokens, JWTs, ``sig=``/``AccountKey=``-style secrets).

Export. With the connection string set, spans (webhook request, worker pass, Assets execution), a few counters
and the log records go to Application Insights with ``azure-monitor-opentelemetry-exporter`` (the exporter, not
the ``azure-monitor-opentelemetry`` distro: the distro adds instrumentations for Django, Flask, FastAPI, requests,
urllib and psycopg2 that this app does not use, and attaches its log handler to every logger, httpx's URLs
included). The providers are this module's own, not OpenTelemetry's process-wide globals, so a test can set them
up and tear them down. https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-configuration?tabs=python
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

log = logging.getLogger(__name__)

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
LOG_FORMAT = "LOG_FORMAT"
LOG_FORMATS = ("text", "json")
SERVICE_NAME = "entra-assets"
MAX_CIDS = 20  # correlation ids listed per execution; the rest are counted
# Loggers that log every request URL (and, at DEBUG, headers) at INFO: URLs carry `$filter=mail eq '...'`, a
# Jira `query=<e-mail>` or a SAS `sig=`. https://www.python-httpx.org/logging/ ,
# https://learn.microsoft.com/azure/developer/python/sdk/azure-sdk-logging
QUIET_LOGGERS = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy", "urllib3", "msal",
                 "azure.monitor.opentelemetry.exporter")
# Records from these never go to the exporter: a failing export logs, and its log must not be exported again.
_NOT_EXPORTED = ("azure.monitor", "azure.core", "opentelemetry", "urllib3", "requests", "msrest", "httpx",
                 "httpcore")
OUR_LOGGERS = ("shared", "functions", "function_app", "sandbox")

_CID: ContextVar[str | None] = ContextVar("entra_assets_cid", default=None)
_CID_SHAPE = re.compile(r"^[0-9A-Za-z-]{1,64}$")


# -- correlation ---------------------------------------------------------------------------------------------

def new_cid() -> str:
    """A fresh correlation id: 64 random bits as 16 hex characters."""
    return uuid.uuid4().hex[:16]


def current_cid() -> str | None:
    """The correlation id of the running notification, run or worker pass (None outside any)."""
    return _CID.get()


def valid_cid(value: object) -> str | None:
    """``value`` when it looks like a correlation id, else None: a queued ``cid`` is logged, so nothing odd."""
    return value if isinstance(value, str) and _CID_SHAPE.match(value) else None


@contextmanager
def correlation(cid: str | None = None) -> Iterator[str]:
    """Run the block under ``cid``; with None, join the current correlation or start a new one."""
    token = _CID.set(valid_cid(cid) or _CID.get() or new_cid())
    try:
        yield _CID.get()
    finally:
        _CID.reset(token)


def stamped(body: dict) -> dict:
    """``body`` with the current correlation id as ``cid`` (a copy; unchanged when it has one or none is set)."""
    cid = _CID.get()
    return body if cid is None or "cid" in body else {**body, "cid": cid}


class StampingQueue:
    """A ``ChangeQueue`` whose ``send`` stamps the current correlation id into messages that carry none; every
    other attribute is the wrapped queue's."""

    def __init__(self, queue: Any):
        self.wrapped = queue

    def send(self, body: dict, *args: Any, **kwargs: Any) -> None:
        self.wrapped.send(stamped(body), *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def carried_cids(bodies: Iterable[Mapping]) -> tuple[list[str], int]:
    """The distinct correlation ids the message bodies carry, in order, at most ``MAX_CIDS``; and how many more
    there were."""
    seen: dict[str, None] = {}
    for body in bodies:
        cid = valid_cid(body.get("cid")) if isinstance(body, Mapping) else None
        if cid:
            seen.setdefault(cid)
    cids = list(seen)
    return cids[:MAX_CIDS], max(0, len(cids) - MAX_CIDS)


# -- redaction -----------------------------------------------------------------------------------------------

_REDACTIONS = (
    # e-mail addresses and UPNs, guests' "alias_domain#EXT#@tenant" included
    (re.compile(r"[A-Za-z0-9._%+'#-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "<email>"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 <redacted>"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "<jwt>"),
    # connection strings and SAS / OAuth parameters: AccountKey=..., sig=..., client_secret=..., ?code=...
    (re.compile(r"(?i)\b(accountkey|sharedaccesskey|sharedaccesssignature|instrumentationkey|sig|client_secret|"
                r"clientstate|password|api_?token|access_token|refresh_token|validationtoken)=[^&;\s\"',]+"),
     r"\1=<redacted>"),
    (re.compile(r"(?i)([?&]code)=[^&;\s\"',]+"), r"\1=<redacted>"),
)


def redact(text: str) -> str:
    """``text`` with e-mail addresses, bearer tokens, JWTs and key=secret pairs replaced by placeholders."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


# -- log records ---------------------------------------------------------------------------------------------

_factory_state: dict[str, Any] = {"original": None, "redacting": True}


def _make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _factory_state["original"](*args, **kwargs)
    record.cid = _CID.get()
    if _factory_state["redacting"] and (record.args or isinstance(record.msg, str)):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call is logging's to report, at emit time
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
    return record


def _redacted(text: str) -> str:
    return redact(text) if _factory_state["redacting"] else text


def install_record_factory(redacting: bool | None = None) -> None:
    """Give every log record a ``cid`` attribute and a redacted message (unless ``redacting`` is False; None
    keeps the current choice, on by default). Idempotent; covers the handlers of others too (the Functions
    worker's, pytest's), which a handler filter would not."""
    if _factory_state["original"] is None:
        _factory_state["original"] = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_make_record)
    if redacting is not None:
        _factory_state["redacting"] = redacting


def quiet_third_party() -> None:
    """Raise the loggers that log request URLs at INFO to WARNING (see ``QUIET_LOGGERS``)."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "cid", "taskName"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record (what is not a standard ``LogRecord`` attribute)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``time level logger [cid] message``, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(cid)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "cid", None) is None:
            record.cid = "-"
        return _redacted(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``cid`` and the record's extras
    (``event``, ``execution``, ``cids``, counts ...), ``exception`` when there is one; redacted."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if getattr(record, "cid", None):
            document["cid"] = record.cid
        document.update(extras(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return _redacted(json.dumps(document, default=str, ensure_ascii=False))


def log_format_from(environ: Mapping[str, str]) -> str:
    """``LOG_FORMAT`` (``text`` when unset). Raises ``ValueError`` naming the setting for anything else."""
    value = (environ.get(LOG_FORMAT) or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT} must be one of {', '.join(LOG_FORMATS)} (got {environ.get(LOG_FORMAT)!r})")
    return value


def configure_logging(level: int = logging.WARNING, fmt: str = "text", stream: TextIO | None = None,
                      redacting: bool = True) -> logging.Handler:
    """The CLI's logging: one handler on the root logger writing ``fmt`` (``text`` or ``json``) to ``stream``
    (stderr), plus the record factory and the quiet third-party loggers. Calling it again replaces the handler
    it added before. Raises ``ValueError`` for an unknown ``fmt``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)} (got {fmt!r})")
    install_record_factory(redacting)
    quiet_third_party()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "entra_assets", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.entra_assets = True
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def setup_function_app(environ: Mapping[str, str] = os.environ) -> Export | None:
    """The Functions app's telemetry, once at import of ``function_app.py``: record factory, quiet third-party
    loggers, INFO for this app's loggers (the host's ``logging.logLevel`` filters further), and the export when
    ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set. Never raises: an unusable connection string is logged by
    name (not value) and the app runs without export."""
    install_record_factory()
    quiet_third_party()
    for name in OUR_LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    return export_from(environ)


def export_from(environ: Mapping[str, str]) -> Export | None:
    """``configure_export`` when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set; None otherwise or when the
    exporter refuses it (logged, naming the setting only: the string holds the instrumentation key)."""
    connection_string = (environ.get(CONNECTION_STRING) or "").strip()
    if not connection_string:
        return None
    try:
        return configure_export(connection_string)
    except Exception as err:  # noqa: BLE001 - telemetry must never stop a sync
        log.error("%s is not a usable Application Insights connection string (%s); telemetry is not exported",
                  CONNECTION_STRING, type(err).__name__)
        return None


# -- OpenTelemetry export ------------------------------------------------------------------------------------

@dataclass
class Export:
    """The OpenTelemetry providers of this process and the log handler feeding them."""

    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    handler: logging.Handler
    counters: dict[str, Any] = field(default_factory=dict)

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export everything buffered now (spans, logs, metrics); True when all three succeeded in time."""
        return all([self.tracer_provider.force_flush(timeout_millis),
                    self.logger_provider.force_flush(timeout_millis),
                    self.meter_provider.force_flush(timeout_millis)])

    def shutdown(self) -> None:
        """Flush, stop the exporters and detach the log handler (the process exports nothing more)."""
        global _export
        logging.getLogger().removeHandler(self.handler)
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            provider.shutdown()
        with _lock:
            if _export is self:
                _export = None


_export: Export | None = None
_lock = threading.Lock()
_SEVERITY = ((logging.CRITICAL, "FATAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARN"),
             (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))


class _ExportHandler(logging.Handler):
    """Sends log records to the OpenTelemetry logger provider (App Insights ``traces``; extras and ``cid`` as
    customDimensions). Skips the exporter's and the HTTP stack's own records, so an export failure can't loop."""

    def __init__(self, provider: Any):
        super().__init__(logging.INFO)
        self.provider = provider

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_NOT_EXPORTED) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.context import get_current

        try:
            attributes: dict[str, Any] = {}  # the exporter adds the logger's name itself
            if getattr(record, "cid", None):
                attributes["cid"] = record.cid
            for name, value in extras(record).items():
                attributes[name] = _attribute(value)
            if record.exc_info and record.exc_info[0] is not None:
                attributes["exception.type"] = record.exc_info[0].__name__
                attributes["exception.message"] = redact(str(record.exc_info[1]))
                attributes["exception.stacktrace"] = redact(logging.Formatter().formatException(record.exc_info))
            text = next(t for level, t in _SEVERITY if record.levelno >= level or level == logging.DEBUG)
            self.provider.get_logger(record.name).emit(
                timestamp=int(record.created * 1e9), observed_timestamp=time.time_ns(), context=get_current(),
                severity_number=getattr(SeverityNumber, text), severity_text=text,
                body=redact(record.getMessage()), attributes=attributes)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def _attribute(value: Any) -> Any:
    """An OpenTelemetry attribute value: scalars as they are, sequences of scalars comma-joined (App Insights
    properties are strings: the exporter would write a list as its Python repr), anything else as JSON."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, bool | int | float | str) for v in value):
        return ",".join(str(v) for v in value)
    return redact(json.dumps(value, default=str, ensure_ascii=False))


def configure_export(connection_string: str, *, offline_storage: bool = True,
                     metric_interval_millis: int = 60_000) -> Export:
    """Start exporting spans, metrics and INFO+ log records to Application Insights (once per process: a second
    call returns the first ``Export``). ``offline_storage`` keeps unsent telemetry on disk for retries (the
    exporter's default). Raises ``ValueError`` when the exporter refuses the connection string."""
    global _export
    with _lock:
        if _export is not None:
            return _export
        from azure.monitor.opentelemetry.exporter import (
            AzureMonitorLogExporter,
            AzureMonitorMetricExporter,
            AzureMonitorTraceExporter,
        )
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        options = {"connection_string": connection_string, "disable_offline_storage": not offline_storage}
        resource = Resource.create({"service.name": SERVICE_NAME})  # App Insights: cloud_RoleName
        tracer_provider = TracerProvider(resource=resource)
        # Given its provider, the exporter does not look for OpenTelemetry's global one (which is not set).
        tracer_provider.add_span_processor(BatchSpanProcessor(AzureMonitorTraceExporter(
            tracer_provider=tracer_provider, **options)))
        reader = PeriodicExportingMetricReader(AzureMonitorMetricExporter(**options),
                                               export_interval_millis=metric_interval_millis)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(AzureMonitorLogExporter(**options)))
        handler = _ExportHandler(logger_provider)
        logging.getLogger().addHandler(handler)
        _export = Export(tracer_provider, meter_provider, logger_provider, handler)
        return _export


def _tracer() -> trace.Tracer:
    return _export.tracer_provider.get_tracer(SERVICE_NAME) if _export else trace.NoOpTracer()


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    merged = {"cid": _CID.get(), **attributes}
    return {k: _attribute(v) for k, v in merged.items() if v is not None}


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A span around the block (a no-op without export), with the correlation id as attribute ``cid``. An
    exception marks it failed and propagates."""
    with _tracer().start_as_current_span(name, kind=kind, attributes=_attributes(attributes)) as current:
        yield current


def start_span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Span:
    """A span the caller ends (``span.end()``), for code that cannot be wrapped in a ``with`` block."""
    return _tracer().start_span(name, kind=kind, attributes=_attributes(attributes))


def failed(current: Span, error: BaseException) -> None:
    """Mark ``current`` failed with ``error``'s type (its message may hold data; the type is enough)."""
    current.set_status(Status(StatusCode.ERROR, type(error).__name__))


def count(name: str, value: int = 1, **attributes: Any) -> None:
    """Add ``value`` to the counter ``name`` (an App Insights custom metric); nothing without export."""
    export = _export
    if export is None or not value:
        return
    counter = export.counters.get(name)
    if counter is None:
        counter = export.counters[name] = export.meter_provider.get_meter(SERVICE_NAME).create_counter(name)
    counter.add(value, {k: _attribute(v) for k, v in attributes.items()})


@contextmanager
def run(name: str, kind: SpanKind = SpanKind.INTERNAL, cid: str | None = None, **attributes: Any) -> Iterator[str]:
    """``correlation(cid)`` and a span named ``name`` around the block; yields the correlation id."""
    with correlation(cid) as current, span(name, kind, **attributes):
        yield current


def invocation(name: str, kind: SpanKind = SpanKind.SERVER,
               cid_of: Callable[..., str | None] | None = None) -> Callable:
    """Decorator for a Functions handler: each invocation runs under a new correlation id (or the one
    ``cid_of(*args)`` finds, e.g. in a queue message) and a span. Put it under the binding decorators: the
    wrapper keeps the handler's signature (``functools.wraps``), which is what the host binds by."""
    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def invoke(*args: Any, **kwargs: Any) -> Any:
            found = None
            if cid_of is not None:
                try:
                    found = valid_cid(cid_of(*args, **kwargs))
                except Exception:  # noqa: BLE001 - an unreadable message still runs (and fails) normally
                    found = None
            with correlation(found or new_cid()), span(name, kind):
                return handler(*args, **kwargs)
        return invoke
    return decorate
