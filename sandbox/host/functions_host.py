"""A local stand-in for the Azure Functions host: runs the app's own functions on this machine.

The Functions host (`func`, Core Tools) cannot be installed without internet, so ``entra-assets serve``, the
demo and the end-to-end tests run the functions registered in ``function_app.py`` - the same handlers Azure
runs - with what the host would do around them:

- HTTP functions over real HTTP on loopback (cheroot), at ``/api/<route>``. A path that is no function's
  route, or a method the function does not declare in its ``methods=[...]``, is answered 404 with an empty
  body before any key check, and the function is not called. 404 and not 405 for a wrong method: that is
  what the real host's routing layer answers (reported in azure-functions-host issues #10098, 2024, and
  #11625, 2026, both open; not documented, so UNCONFIRMED for every hosting plan). Routes whose auth level is
  not anonymous need the host's function key, as in Azure: the ``code`` query parameter or the
  ``x-functions-key`` header, else 401 with an empty body and the function is not called
  (https://learn.microsoft.com/azure/azure-functions/function-keys-how-to);
- the queue triggers (the worker's queue and the run queue): poll each queue (Azurite or the embedded one),
  call its function with one message, delete it on success, leave it to reappear after the visibility timeout on failure, and move it to
  ``<queue>-poison`` after ``maxDequeueCount`` (5) deliveries, as host.json says;
- the timer: on its NCRONTAB schedule (``%TIMER_SYNC_SCHEDULE%`` resolved from the settings).

Settings come from ``os.environ``, as in Azure; the caller sets them before ``start``.
https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from sandbox.http import RunningServer, serve
from shared.app import open_backend, open_run_queue
from shared.settings import load_settings
from shared.store.ports import MAX_DEQUEUE_COUNT

log = logging.getLogger(__name__)
VISIBILITY_SECONDS = 60   # host.json extensions.queues.visibilityTimeout
POLL_SECONDS = 0.05       # the host polls an empty queue with back-off up to maxPollingInterval (2 s); we poll fast


def app_functions() -> dict[str, func.FunctionBuilder]:
    """The app's functions by name, from a fresh ``FunctionApp`` built by the real ``function_app.py``:
    ``FunctionApp.get_functions`` validates names against what it indexed before, so it runs once per app."""
    import runpy

    app = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "function_app.py"))["app"]
    return {f.get_function_name(): f for f in app.get_functions()}


def http_routes(functions: dict[str, func.FunctionBuilder]) -> dict[str, tuple[func.FunctionBuilder, HttpTrigger]]:
    """Each HTTP function's route (without the ``/api/`` prefix; the function's name when the decorator gives
    none, as in the host), with the function and its trigger binding."""
    return {b.route or f.get_function_name(): (f, b) for f in functions.values() for b in f.get_bindings()
            if isinstance(b, HttpTrigger)}


def allows(trigger: HttpTrigger, method: str) -> bool:
    """True when the trigger declares ``method`` (case-insensitive; no ``methods`` at all: every method)."""
    declared = trigger.methods
    return declared is None or method.upper() in {str(getattr(m, "value", m)).upper() for m in declared}


class FunctionsHost:
    """Runs the HTTP, queue and timer functions until ``stop``. ``url`` is the HTTP base (``…/api``);
    ``function_key`` the key of every function (random unless given); ``function_url(route)`` a URL with it."""

    def __init__(self, run_timer: bool = True, function_key: str | None = None):
        self.functions = app_functions()
        self.routes = http_routes(self.functions)
        self.run_timer = run_timer
        self.function_key = function_key or secrets.token_urlsafe(32)
        self.url = ""
        self.invocations: list[tuple[str, float, str]] = []   # (function, seconds, "ok" or the error type)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: RunningServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> FunctionsHost:
        self._server = serve(self._wsgi, host, port)
        self.url = f"{self._server.url}/api"
        loops = [(f"functions-{name}", self._queue_loop, (name, queue)) for name, queue in self.queue_functions().items()]
        loops += [("functions-timer", self._timer_loop, ())] if self.run_timer else []
        for thread_name, loop, args in loops:
            thread = threading.Thread(target=loop, args=args, name=thread_name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def function_url(self, route: str) -> str:
        """``{url}/{route}?code={function_key}``: what Azure's portal shows as a function's URL."""
        return f"{self.url}/{route}?code={self.function_key}"

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._server:
            self._server.stop()
            self._server = None

    def _invoke(self, name: str, *args):
        started = time.monotonic()
        try:
            result = self.functions[name].get_user_function()(*args)
        except Exception as error:
            self.invocations.append((name, time.monotonic() - started, type(error).__name__))
            raise
        self.invocations.append((name, time.monotonic() - started, "ok"))
        return result

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict, start_response):
        route = environ.get("PATH_INFO", "").removeprefix("/api/")
        method = environ["REQUEST_METHOD"]
        found = self.routes.get(route)
        if found is None or not allows(found[1], method):  # the host's routing: neither key check nor call
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        target, trigger = found
        length = int(environ.get("CONTENT_LENGTH") or 0)
        query = environ.get("QUERY_STRING", "")
        if not self._authorized(trigger, environ, query):
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        request = func.HttpRequest(
            method, f"http://localhost{environ['PATH_INFO']}?{query}",
            headers={k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
            | {"Content-Type": environ.get("CONTENT_TYPE", "")},
            params=dict(parse_qsl(query, keep_blank_values=True)), body=environ["wsgi.input"].read(length) if length else b"")
        try:
            response = self._invoke(target.get_function_name(), request)
        except Exception:  # the host answers 500 for an unhandled exception
            log.exception("HTTP function %s failed", target.get_function_name())
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"function failed"]
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-type"]
        content_type = response.mimetype + (f"; charset={response.charset}" if response.charset else "")
        start_response(f"{response.status_code} X", headers + [("Content-Type", content_type)])
        return [response.get_body()]

    def _authorized(self, trigger: HttpTrigger, environ: dict, query: str) -> bool:
        """True for an anonymous route, or when the request carries the function key (compared in constant
        time)."""
        if trigger.auth_level in (None, func.AuthLevel.ANONYMOUS):
            return True
        given = dict(parse_qsl(query, keep_blank_values=True)).get("code") or environ.get("HTTP_X_FUNCTIONS_KEY")
        return bool(given) and hmac.compare_digest(given.encode(), self.function_key.encode())

    # -- queue trigger --------------------------------------------------------------------------------------

    def queue_functions(self) -> dict[str, str]:
        """Queue-triggered function name -> its queue, ``%SETTING%`` resolved as the host does from the app
        settings (the environment); a setting left unset takes the product's default (``shared.settings``),
        where the real host would refuse to start - the stand-in runs the tests without every setting."""
        settings = load_settings(os.environ)
        defaults = {"SYNC_QUEUE_NAME": settings.queue_name, "RUN_QUEUE_NAME": settings.run_queue_name}
        found = {}
        for name, function in self.functions.items():
            for binding in function.get_bindings():
                if binding.type == "queueTrigger":
                    queue = binding.queue_name
                    if queue.startswith("%") and queue.endswith("%"):
                        setting = queue.strip("%")
                        queue = os.environ.get(setting) or defaults[setting]
                    found[name] = queue
        return found

    def _queue_loop(self, function: str, queue_name: str) -> None:
        settings = load_settings(os.environ)
        queue = open_backend(settings).queue if queue_name == settings.queue_name else open_run_queue(settings)
        while not self._stop.is_set():
            [message, *_] = queue.receive(max_messages=1, visibility_timeout=VISIBILITY_SECONDS) or [None]
            if message is None:
                self._stop.wait(POLL_SECONDS)
                continue
            trigger = QueueMessage(id=message.id, body=json.dumps(message.body).encode(),
                                   dequeue_count=message.dequeue_count, pop_receipt="local")
            try:
                self._invoke(function, trigger)
            except Exception:  # the host leaves the message for redelivery, then poisons it
                log.exception("%s failed (delivery %d)", function, message.dequeue_count)
                if message.dequeue_count >= MAX_DEQUEUE_COUNT:
                    queue.poison(message)
                continue
            queue.delete(message)

    # -- timer ------------------------------------------------------------------------------------------

    def _timer_loop(self) -> None:
        schedule = croniter(load_settings(os.environ).timer_schedule, datetime.now(UTC), second_at_beginning=True)
        while not self._stop.is_set():
            due = schedule.get_next(datetime)
            if self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            try:
                self._invoke("timer_sync", TimerRequest(past_due=False))
            except Exception:  # a failed tick shows in the log; the next one runs anyway
                log.exception("timer_sync failed")
