"""Client of the JSM Assets Imports REST API (External import), driven only by the links Assets hands out.

Flow (reference/assets-imports-api.md §1.5, §3, §4): ``GET {ASSETS_API_URL}/jsm/assets/v1/imports/info`` with
the import token gives the ``getStatus``/``start``/``mapping`` links; ``start`` gives the links of one
execution. Links are opaque - Atlassian asks clients not to build or store them - so nothing here constructs
a URL except the ``imports/info`` entry point.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson

from shared.clients.transport import Failure, GaveUp, Origin, Transport, classify
from shared.errors import AssetsTokenError, ExecutionFailed, ImportSourceError, RemoteError

log = logging.getLogger(__name__)

CONFIG_STATUSES = ("IDLE", "RUNNING", "DISABLED", "MISSING_MAPPING")
_SOURCE_IN_LINK = re.compile(r"/importsource/([^/]+)/mapping/?$")
_START_HINTS = {
    "DISABLED": "enable the import in Assets (Schema configuration > Import)",
    "MISSING_MAPPING": "the import has no mapping yet: run `entra-assets setup`",
    "INVALID_IMPORT_MODULE_KEY": "the token belongs to an import that is not an External import",
}


@dataclass(frozen=True)
class Execution:
    """The links of one running execution (returned by ``start``)."""

    submit_results: str
    status: str
    cancel: str
    progress: str | None = None


class AssetsClient:
    """Talks to one import source. Raises ``AssetsTokenError`` (NO_TOKEN / INVALID_TOKEN), ``ImportSourceError``,
    ``ExecutionFailed`` and ``RemoteError``; transient failures are retried by ``transport``. The import token
    goes only to the origin of ``api_url``: a link Assets hands out to another host raises ``ForeignLink``
    before it is requested (the transport is bound to that origin)."""

    def __init__(self, transport: Transport, api_url: str, token: str | None, sleep: Callable = time.sleep):
        self.transport = transport
        transport.allow(Origin.of(api_url, "ASSETS_API_URL", "Assets"))
        self.api_url = api_url.rstrip("/")
        self._token = token
        self._links: dict[str, str] | None = None
        self._sleep = sleep

    # -- plumbing ---------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, body=None, params=None, **send_options) -> httpx.Response:
        if not self._token:
            raise AssetsTokenError("ASSETS_IMPORT_TOKEN is not set: create an External import in the Assets schema "
                                   "and generate its token", status="NO_TOKEN")
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = orjson.dumps(body)
        try:
            response = self.transport.send(method, url, content=content, headers=headers, params=params,
                                           **send_options)
        except GaveUp as exc:
            raise RemoteError(f"Assets kept failing ({exc.answer}) after retries: {exc}") from None
        if classify(response.status_code) in (Failure.CREDENTIALS, Failure.PERMISSION):
            # A regenerated token silently invalidates the old one (401, reference/assets-imports-api.md §1)
            raise AssetsTokenError(f"Assets rejected the import token ({response.status_code}): it was revoked (a "
                                   "newer token was generated) or is wrong - generate a new one in Assets > (the "
                                   "schema) > Import > External import > Generate new token and update "
                                   "ASSETS_IMPORT_TOKEN")
        return response

    def _json(self, method: str, url: str, body=None, expect=(200,), params=None, **send_options) -> dict:
        response = self._request(method, url, body, params, **send_options)
        if response.status_code not in expect:
            error = RemoteError(f"Assets answered {response.status_code} to {method} {_path(url)}: "
                                f"{response.text[:300]}")
            error.http_status = response.status_code
            raise error
        return orjson.loads(response.content) if response.content else {}

    # -- import source ----------------------------------------------------------------------------------

    def links(self) -> dict[str, str]:
        """The ``getStatus``/``start``/``mapping`` links of the import source (fetched once)."""
        if self._links is None:
            body = self._json("GET", f"{self.api_url}/jsm/assets/v1/imports/info")
            links = body.get("links") or {}
            missing = {"getStatus", "start", "mapping"} - set(links)
            if missing:
                raise RemoteError(f"imports/info did not return the links {sorted(missing)}")
            self._links = links
        return self._links

    def source_key(self) -> str:
        """A stable, non-secret name of the import source (for the writer lease and state keys)."""
        return hashlib.sha256(self.links()["start"].encode()).hexdigest()[:16]

    def import_source_id(self) -> str:
        """The id of the import source, read from its ``mapping`` link (``…/importsource/{id}/mapping``) - as
        public clients do (reference §1.4, CLIENT), though Atlassian calls links opaque: it is only used to ask
        the object API about the import source (``ObjectApi.import_source``), never to build an import URL.
        Raises ``RemoteError`` when the link has no such shape."""
        found = _SOURCE_IN_LINK.search(httpx.URL(self.links()["mapping"]).path)
        if found is None:
            raise RemoteError("the import's mapping link does not name its import source "
                              "(…/importsource/{id}/mapping)")
        return found.group(1)

    def config_status(self) -> str:
        """IDLE, RUNNING, DISABLED or MISSING_MAPPING."""
        status = self._json("GET", self.links()["getStatus"]).get("status")
        if status not in CONFIG_STATUSES:
            raise RemoteError(f"configstatus returned an unknown status {status!r}")
        return status

    def ensure_ready(self) -> str:
        """The config status, raising ``ImportSourceError`` when the source cannot take an import."""
        status = self.config_status()
        if status in ("DISABLED", "MISSING_MAPPING"):
            raise ImportSourceError(f"the Assets import source is {status}: {_START_HINTS[status]}", status=status)
        return status

    def schema_and_mapping(self) -> dict:
        """The live schema-and-mapping document (``…/schema-and-mapping`` is not among the info links, so
        it is derived from the mapping link - the one place this client extends a link; UNCONFIRMED)."""
        return self._json("GET", self.links()["mapping"].rsplit("/mapping", 1)[0] + "/schema-and-mapping")

    def submit_document(self, document: dict, first: bool | None = None) -> str:
        """Send the schema-and-mapping document: PUT the first time (MISSING_MAPPING), PATCH afterwards.

        Whether a second PUT is refused with 409 is UNCONFIRMED (reference §3.4), so PUT is used only when
        Assets says there is no mapping. Returns "created" or "updated". Raises ``RemoteError`` with Assets'
        validation errors on 400.
        """
        if first is None:  # callers that just read the config status pass it, saving a request
            first = self.config_status() == "MISSING_MAPPING"
        method = "PUT" if first else "PATCH"
        response = self._request(method, self.links()["mapping"], document)
        if response.status_code == 303:  # async processing: follow the progress link (reference §3.6)
            self._wait_mapping(response.headers["Location"])
        elif response.status_code not in (200, 204):
            raise RemoteError(f"Assets refused the schema-and-mapping document ({response.status_code}): "
                              f"{_validation_errors(response)}")
        return "created" if first else "updated"

    def _wait_mapping(self, url: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self._json("GET", url)
            if body.get("progressStatus") == "FINISHED":
                if body.get("result") != "OK":
                    raise RemoteError(f"Assets could not apply the mapping: {body.get('resultMessage')}")
                return
            self._sleep(1)
        raise RemoteError("Assets did not finish applying the mapping in time")

    # -- executions -------------------------------------------------------------------------------------

    def start(self, wait_seconds: float = 600, poll: float = 5) -> Execution:
        """Start an execution. 409 IN_PROGRESS (another execution runs: not ours, since the writer cancels what
        it left itself, ``shared.deliver.open_executions``) is waited out up to ``wait_seconds``; the other 409 reasons
        raise ``ImportSourceError`` naming what the admin must do.

        A ``start`` that failed in transit (5xx, a dropped connection) may have created an execution anyway, and
        a blind retry would then meet 409 IN_PROGRESS from our own execution. So before it is retried, the
        import source's status is asked, and an execution found RUNNING is cancelled (``cancel_running``)."""
        deadline = time.monotonic() + wait_seconds
        waiting_logged = False
        while True:
            response = self._request("POST", self.links()["start"], before_retry=self.cancel_running)
            if response.status_code == 200:
                links = orjson.loads(response.content).get("links") or {}
                try:
                    return Execution(links["submitResults"], links["getExecutionStatus"], links["cancel"],
                                     links.get("submitProgress"))
                except KeyError as exc:
                    raise RemoteError(f"start did not return the link {exc}") from None
            reason = _error_code(response)
            if response.status_code == 409 and reason == "IN_PROGRESS" and time.monotonic() < deadline:
                if not waiting_logged:
                    log.warning("another import is running on the Assets import source (not one entra-assets left "
                                "open); waiting up to %.0f s for it to finish", wait_seconds)
                    waiting_logged = True
                self._sleep(poll)
                continue
            if response.status_code == 409:
                hint = _START_HINTS.get(reason, f"another import kept running for {wait_seconds:.0f} s: if it is "
                                        "stuck, cancel it in Assets (the schema > Import)" if reason == "IN_PROGRESS"
                                        else "see the import source in Assets")
                raise ImportSourceError(f"Assets cannot start an import ({reason}): {hint}", status=reason or "ERROR")
            raise RemoteError(f"Assets answered {response.status_code} to start: {response.text[:300]}")

    def submit(self, execution: Execution, data: dict, chunk_id: str, completed: bool) -> None:
        """Send one chunk of records. ``completed`` is set on the last chunk only: it means "sending finished"
        and starts processing (reference §4.3). A chunk whose answer was lost is sent again as it was (same
        ``clientGeneratedId``; its records are keyed by their external ids, so a double is harmless) - except
        the last: once Assets took it the execution is no longer INGESTING and refuses more data, so before it
        is sent again the execution's status is asked, and a chunk already taken is not resent."""
        def taken_already() -> None:
            if completed and self.execution_status(execution).get("status") != "INGESTING":
                raise _ChunkTaken
        try:
            self._json("POST", execution.submit_results,
                       {"data": data, "clientGeneratedId": chunk_id, "completed": completed},
                       expect=(200, 201, 204), before_retry=taken_already)
        except _ChunkTaken:
            log.info("Assets took the last chunk %s before its answer was lost; not sent again", chunk_id)

    def execution_status(self, execution: Execution) -> dict:
        """``{"status": INGESTING|PROCESSING|DONE|CANCELLED, "progressResult": {...}}``."""
        return self._json("GET", execution.status)

    def wait(self, execution: Execution, timeout: float = 3600, poll: float = 0.2, max_poll: float = 5,
             tick: Callable[[], None] = lambda: None, until: float | None = None) -> dict | None:
        """Poll until DONE or CANCELLED; ``tick`` runs between polls (lease renewal). Raises ``ExecutionFailed``
        on CANCELLED or timeout. The poll interval grows from ``poll`` to ``max_poll``. With ``until`` (a
        ``time.monotonic()`` value) the wait stops there and returns None: the caller asks again later (at
        least one poll is made, whatever ``until``)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.execution_status(execution)
            status = body.get("status")
            if status == "DONE":
                return body
            if status == "CANCELLED":
                raise ExecutionFailed("the Assets execution was cancelled (in Assets, or by another client)")
            if until is not None and time.monotonic() >= until:
                return None
            if time.monotonic() > deadline:
                raise ExecutionFailed(f"the Assets execution did not finish within {timeout:.0f} s")
            tick()
            self._sleep(poll)
            poll = min(max_poll, poll * 1.5)

    def cancel_running(self) -> bool:
        """Cancel the execution the import source reports RUNNING, through the links its status carries while
        one runs (two public clients read them; UNCONFIRMED, reference §3.2). Returns True when one was
        cancelled, False when none runs or the status has no cancel link. Raises like ``config_status``."""
        body = self._json("GET", self.links()["getStatus"])
        link = (body.get("links") or {}).get("cancel") if body.get("status") == "RUNNING" else None
        if not link:
            return False
        self._request("DELETE", link)
        log.warning("cancelled an Assets execution found running on the import source")
        return True

    def cancel(self, execution: Execution) -> None:
        """Cancel an execution (best effort: errors are logged, not raised - we are already failing)."""
        try:
            self._request("DELETE", execution.cancel)
        except Exception as exc:  # noqa: BLE001 - cancelling is the cleanup of another failure
            log.warning("could not cancel the Assets execution: %s", exc)


class _ChunkTaken(Exception):
    """The last chunk reached Assets although its answer did not (``submit``)."""


def _path(url: str) -> str:
    return httpx.URL(url).path


def _error_code(response: httpx.Response) -> str:
    try:
        return str(orjson.loads(response.content).get("errorCode") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _validation_errors(response: httpx.Response) -> str:
    """Assets' ``dataValidationErrors`` as one readable line."""
    try:
        errors = orjson.loads(response.content).get("dataValidationErrors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message', '')}".strip() for e in errors) or response.text[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:300]
