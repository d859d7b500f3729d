"""An emulator of the JSM Assets Imports REST API ("External import"), served over real HTTP on loopback.

Contract: /work/shared/reference/assets-imports-api.md (§10 emulator checklist) and
https://developer.atlassian.com/cloud/assets/imports-rest-api-guide/workflow/. A client starts at
``{url}/jsm/assets/v1/imports/info`` and must only follow the links it is handed.

Documents are validated and merged by ``assets_mapping``; finished executions are applied to the object store
by ``assets_apply``. Tests inspect the store (``objects``, ``find``), the executions and the request log, and
turn knobs: ``disable``, ``regenerate_token``, ``throttle``, ``set_missing_objects``, ``processing_delay``,
``fail_next`` (a 500 or a dropped connection, before or after the request took effect), ``link_origin``
(import links on another host) and ``latency`` (seconds before each answer).

The object schema exists before its import has a mapping, and may already hold object types an admin made by
hand (``create_type_by_hand``, ``create_object_by_hand``) or an earlier import left (``new_import``: the
import is deleted and a new one created in the same schema). Before the first PUT, ``schema-and-mapping``
shows those types with an empty mapping - UNCONFIRMED (``schema_before_mapping = False`` answers 400 instead,
the other plausible reading) - and a PUT or PATCH takes a same-named type over (``sandbox.assets.mapping``).

Whether Assets de-duplicates a re-sent data chunk by ``clientGeneratedId`` is UNCONFIRMED (reference §4.3):
the emulator does not - it keeps every chunk it accepted (``Execution.duplicates`` lists the ids sent more
than once) and applies them all, the later record of an object winning, as Assets applies entries keyed by
their external id.

UNCONFIRMED behaviours (emulator choices): the ``links`` in ``configstatus`` while RUNNING, the 409 body of a
second PUT, PATCH before any PUT (400), PUT with ``?async=true`` (303 like PATCH), the empty 200 body of
``data`` and ``progress``, 400 for data after ``completed:true`` or to a cancelled execution, unknown keys in
a data body (400), 413 above ``max_body_bytes``, 429 with ``Retry-After``, 404 bodies, ``progressResult``
before DONE, 400 when cancelling a DONE execution.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field, replace

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.assets.apply import AssetsObject, MissingPolicy, ObjectStore, TypeResult, apply_execution
from sandbox.assets.mapping import (
    SCHEMA_NAME,
    DocumentRejected,
    ObjectTypeDef,
    SchemaModel,
    add_hand_made_type,
    merge_document,
    to_document,
)
from sandbox.http import RecordedRequest, Served

DEFAULT_WORKSPACE_ID = "5a6f1c2e-0b1d-4c8e-9f3a-7d2e4b6a8c10"
DEFAULT_IMPORT_SOURCE_ID = "3e9f7a52-64d1-4b0c-a8e2-1f5c9d7b3a46"
OBJECT_SCHEMA_ID = 7
_SOURCE = "/jsm/assets/workspace/<ws>/v1/importsource/<src>"
_DATA_KEYS = {"data", "clientGeneratedId", "completed"}
_ROUTES = Map([
    Rule("/jsm/assets/v1/imports/info", endpoint="info", methods=["GET"]),
    Rule(f"{_SOURCE}/configstatus", endpoint="config_status", methods=["GET"]),
    Rule(f"{_SOURCE}/mapping", endpoint="put_mapping", methods=["PUT"]),
    Rule(f"{_SOURCE}/mapping", endpoint="patch_mapping", methods=["PATCH"]),
    Rule(f"{_SOURCE}/mapping/progress/<rid>", endpoint="mapping_progress", methods=["GET"]),
    Rule(f"{_SOURCE}/schema-and-mapping", endpoint="schema_and_mapping", methods=["GET"]),
    Rule(f"{_SOURCE}/executions", endpoint="start", methods=["POST"]),
    Rule(f"{_SOURCE}/executions/status", endpoint="latest_status", methods=["GET"]),
    Rule(f"{_SOURCE}/executions/<eid>/data", endpoint="data", methods=["POST"]),
    Rule(f"{_SOURCE}/executions/<eid>/progress", endpoint="progress", methods=["PUT"]),
    Rule(f"{_SOURCE}/executions/<eid>/status", endpoint="status", methods=["GET"]),
    Rule(f"{_SOURCE}/executions/<eid>", endpoint="cancel", methods=["DELETE"]),
    Rule(f"{_SOURCE}/executions/<eid>/history/failed", endpoint="failed", methods=["POST"]),
])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Execution:
    """One execution: its chunks, state and (once DONE) the results it reports."""

    id: str
    number: int
    import_source_id: str
    started: str = field(default_factory=_now)
    status: str = "INGESTING"
    chunks: list[dict] = field(default_factory=list)
    client_ids: list[str | None] = field(default_factory=list)
    progress: dict | None = None
    failure_reason: str | None = None
    ended: str | None = None
    results: dict[str, TypeResult] = field(default_factory=dict)
    result_map: dict[str, dict] = field(default_factory=dict)

    @property
    def duplicates(self) -> list[str]:
        """The ``clientGeneratedId`` of every chunk accepted more than once (a client re-sent it)."""
        ids = [i for i in self.client_ids if i is not None]
        return sorted({i for i in ids if ids.count(i) > 1})

    @property
    def progress_result(self) -> dict:
        """``progressResult`` in the shape of reference §4.6; before DONE a partial one (UNCONFIRMED)."""
        done = self.status == "DONE"
        total = sum(r.entries for r in self.results.values())
        return {"type": "IMPORT", "id": self.number, "started": self.started, "ended": self.ended,
                "objectSchemaId": OBJECT_SCHEMA_ID, "result": "OK" if done else None,
                "status": {"DONE": "FINISHED", "CANCELLED": "CANCELLED"}.get(self.status, "IN_PROGRESS"),
                "infoMessage": "No data to import" if done and not total else None, "jobId": self.id,
                "importSourceId": self.import_source_id, "populatedObjectTypes": [m["objectTypeName"] for m in self.result_map.values()
                                                                 if m["entriesInSource"]],
                "onlyExecutedForObjectTypes": [], "objectTypeResultMap": self.result_map, "errorMessages": None,
                "totalNumberEntriesInImport": total}


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, mimetype="application/json")


def _invalid(code: str, message: str) -> Response:
    return _json({"dataValidationErrors": [{"code": code, "message": message}]}, 400)


@dataclass
class Fault:
    """``fail_next``: the next ``count`` requests whose path ends with ``path`` get ``status`` (None: the
    connection is dropped mid-answer); with ``after_accept`` the request is handled first."""

    path: str
    count: int
    status: int | None
    after_accept: bool


def _faulty(fault: Fault, environ: dict, start_response):
    """The broken answer of ``fault``: an error status with Atlassian's body, or a connection reset after one
    byte of a longer body (the client sees the connection drop; cheroot closes it without logging)."""
    if fault.status is not None:
        return _json({"code": fault.status, "message": "Internal server error"}, fault.status)(environ,
                                                                                               start_response)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "100")])

    def body():
        yield b"{"
        raise ConnectionResetError(errno.ECONNRESET, "connection dropped by the emulator (fail_next)")
    return body()


class AssetsEmulator(Served):
    """A WSGI app emulating one External import source of one workspace. Thread-safe."""

    def __init__(self, *, token: str = "sandbox-import-token", workspace_id: str = DEFAULT_WORKSPACE_ID,
                 import_source_id: str = DEFAULT_IMPORT_SOURCE_ID, missing_objects: MissingPolicy = "IGNORE",
                 processing_delay: float = 0.0, max_body_bytes: int = 10_000_000):
        self.token = token
        self.workspace_id = workspace_id
        self.import_source_id = import_source_id
        self.missing_objects = _check_policy(missing_objects)
        self.processing_delay = processing_delay
        self.latency = 0.0  # knob: seconds every HTTP request waits before it is answered (bench_latency.py)
        self.max_body_bytes = max_body_bytes
        self.requests: list[RecordedRequest] = []
        self.executions: list[Execution] = []
        self._model: SchemaModel | None = None   # the schema's object types (None: none yet)
        self._mapped = False                      # the import source has a mapping (not MISSING_MAPPING)
        self.schema_before_mapping = True         # knob: schema-and-mapping before the first PUT (see above)
        self._store = ObjectStore()
        self._enabled = True
        self._throttle = (0, "1")
        self._faults: list[Fault] = []
        self.link_origin: str | None = None  # "http://host:port": the links of info and start point there
        self._policies: dict[str, MissingPolicy] = {}
        self._mapping_jobs: dict[str, dict] = {}
        self._lock = threading.RLock()
        # Held while an execution is applied and by whoever reads the objects, taken before ``_lock``: the import
        # endpoints do not wait for it, so status is answered while an execution processes, as Assets does
        # (a million records take minutes here).
        self._store_lock = threading.RLock()
        self.object_api = None  # sandbox.assets.objects.AssetsObjectApi when Jira linking is emulated

    # -- lifecycle and knobs ------------------------------------------------------------------------------


    def reset_log(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def disable(self) -> None:
        """The admin disables the import source: configstatus DISABLED, start → 409 DISABLED."""
        self._enabled = False

    def enable(self) -> None:
        """Undo :meth:`disable`."""
        self._enabled = True

    def regenerate_token(self) -> str:
        """A new import token; the previous one gets 401 from now on (reference §1.2, OBS)."""
        self.token = "ATCTT3x" + secrets.token_urlsafe(24)
        return self.token

    def throttle(self, count: int, retry_after: str = "1") -> None:
        """Answer the next ``count`` requests with 429 and ``Retry-After`` (header presence UNCONFIRMED)."""
        with self._lock:
            self._throttle = (count, retry_after)

    def fail_next(self, path: str, count: int = 1, *, status: int | None = 500, after_accept: bool = False) -> None:
        """Answer the next ``count`` requests whose path ends with ``path`` (``/data``, ``/executions``,
        ``/status``...) with ``status``, or with ``status=None`` drop the connection instead of answering. With
        ``after_accept`` the request is handled first - a chunk is kept, an execution started - and only its
        answer is lost, as when Assets fails after committing."""
        with self._lock:
            self._faults.append(Fault(path, count, status, after_accept))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and path.endswith(fault.path):
                    fault.count -= 1
                    return fault
        return None

    def set_missing_objects(self, type_name: str, policy: MissingPolicy) -> None:
        """The *Missing objects* setting of one object type: "IGNORE", "REMOVE" or ("UPDATE", attr, value)."""
        with self._lock:
            self._policies[type_name] = _check_policy(policy)

    def create_type_by_hand(self, name: str, external_id: str | None = None,
                            attributes: tuple[str, ...] = ("Name",)) -> ObjectTypeDef:
        """An object type made in the Assets UI, outside any import: text ``attributes`` (the first is the
        label), no external id unless ``external_id`` is given (as another import would leave one). Raises
        ValueError for a name the schema already has."""
        with self._store_lock, self._lock:
            self._model = add_hand_made_type(self._model, name, external_id, attributes, SCHEMA_NAME)
            created = self._model.type_named(name)
            assert created is not None
            return created

    def create_object_by_hand(self, type_name: str, attributes: dict[str, list]) -> AssetsObject:
        """An object created in the Assets UI in the type called ``type_name`` (KeyError when there is none)."""
        with self._store_lock, self._lock:
            object_type = self._model.type_named(type_name) if self._model else None
            if object_type is None:
                raise KeyError(type_name)
            return self._store.create(object_type, attributes)

    def object_type(self, name: str) -> ObjectTypeDef | None:
        """The schema's object type called ``name`` (mapped or not), or None."""
        with self._lock:
            return self._model.type_named(name) if self._model else None

    def new_import(self) -> str:
        """The admin deletes this External import and creates a new one in the same schema: the object types
        and objects stay, the mapping and the executions go (MISSING_MAPPING), the import source has a new id
        and a new token, which is returned."""
        with self._store_lock, self._lock:
            self._mapped = False
            if self._model is not None:
                self._model = replace(self._model, mappings={})
            self.executions.clear()
            self.import_source_id = str(uuid.uuid4())
            return self.regenerate_token()

    # -- inspection -----------------------------------------------------------------------------------

    @property
    def document(self) -> dict | None:
        """The current schema-and-mapping document, or None before the first PUT."""
        with self._lock:
            return to_document(self._model) if self._model and self._mapped else None

    def objects(self, type_name: str) -> list[AssetsObject]:
        """The objects of the type with this name (oldest first; empty for an unknown type)."""
        with self._store_lock, self._lock:
            object_type = self._model.type_named(type_name) if self._model else None
            return self._store.of_type(object_type.external_id) if object_type else []

    def find(self, type_name: str, attribute: str, value: object) -> AssetsObject | None:
        """The first object of the type whose ``attribute`` holds ``value`` (exact match), or None."""
        return next((o for o in self.objects(type_name) if value in o.attributes.get(attribute, [])), None)

    def edit_by_hand(self, obj: AssetsObject, attribute: str, values: list) -> None:
        """Change one attribute of ``obj`` as an Assets user would in the UI, outside any import (``[]``
        clears it): entra-assets never sees it, so only a repair run puts it back."""
        with self._store_lock, self._lock:
            self._store.set(obj, attribute, values)

    def delete_by_hand(self, obj: AssetsObject) -> None:
        """Delete ``obj`` as an Assets user would: the next import that carries its record creates it again."""
        with self._store_lock, self._lock:
            self._store.delete(obj)

    # -- WSGI ---------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response):
        request = Request(environ)
        body, too_large = self._read_body(request)
        self._record(request, body)
        if self.latency > 0:
            time.sleep(self.latency)
        fault = self._take_fault(request.path)
        if fault is not None and not fault.after_accept:
            return _faulty(fault, environ, start_response)
        response = self._respond(request, body, too_large)
        if fault is not None:
            return _faulty(fault, environ, start_response)
        return response(environ, start_response)

    def _read_body(self, request: Request) -> tuple[bytes, bool]:
        """The body, up to ``max_body_bytes``; the rest is drained (so the client reads our 413, not a reset)."""
        parts, size = [], 0
        while chunk := request.stream.read(65536):
            size += len(chunk)
            if size <= self.max_body_bytes:
                parts.append(chunk)
        return b"".join(parts), size > self.max_body_bytes

    def _record(self, request: Request, body: bytes) -> None:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers), body, parsed))

    def _respond(self, request: Request, body: bytes, too_large: bool) -> Response:
        with self._lock:
            count, retry_after = self._throttle
            if count > 0:
                self._throttle = (count - 1, retry_after)
                return _json({"code": 429, "message": "Rate limit exceeded"}, 429, {"Retry-After": retry_after})
        if too_large:
            return _json({"code": 413, "message": "Request entity too large"}, 413)
        if self.object_api is not None and self.object_api.handles(request.path):  # object API: basic auth
            return self.object_api.respond(request, body)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json({"code": 401, "message": "Unauthorized"}, 401)
        try:
            endpoint, params = _ROUTES.bind_to_environ(request.environ).match()
        except HTTPException as exc:
            return _json({"code": exc.code, "message": exc.description}, exc.code or 500)
        if params.pop("ws", self.workspace_id) != self.workspace_id or \
                params.pop("src", self.import_source_id) != self.import_source_id:
            return _json({"code": 404, "message": "Import source not found"}, 404)
        # A PUT or PATCH may move objects to an adopted type's new external id: it takes the store lock first
        # (the lock order), so no reader sees the model and the store disagree.
        with self._store_lock if endpoint == "put_mapping" else contextlib.nullcontext(), self._lock:
            return getattr(self, f"_{endpoint}")(request, body, **params)

    def _base(self, request: Request) -> str:
        host = self.link_origin or request.host_url.rstrip("/")
        return f"{host}/jsm/assets/workspace/{self.workspace_id}/v1/importsource/{self.import_source_id}"

    # -- import source and mapping --------------------------------------------------------------------------

    def _info(self, request: Request, body: bytes) -> Response:
        base = self._base(request)
        return _json({"links": {"getStatus": f"{base}/configstatus", "start": f"{base}/executions",
                                "mapping": f"{base}/mapping"}})

    def _running(self) -> Execution | None:
        return next((e for e in self.executions if e.status in ("INGESTING", "PROCESSING")), None)

    def _config_status(self, request: Request, body: bytes) -> Response:
        running = self._running()
        if not self._enabled:
            return _json({"status": "DISABLED"})
        if not self._mapped:
            return _json({"status": "MISSING_MAPPING"})
        if running:
            # The links are not in the spec example; two public clients read them (UNCONFIRMED).
            links = self._execution_links(request, running)
            return _json({"status": "RUNNING", "links": {k: links[k] for k in ("getExecutionStatus", "cancel")}})
        return _json({"status": "IDLE"})

    def _put_mapping(self, request: Request, body: bytes) -> Response:
        if self._mapped:
            return _json({"code": 409, "message": "A mapping already exists for this import"}, 409)
        return self._submit(request, body, "created")

    def _patch_mapping(self, request: Request, body: bytes) -> Response:
        if not self._mapped:
            return _invalid("MISSING_MAPPING", "there is no mapping to update yet: PUT the first document")
        return self._submit(request, body, "updated")

    def _submit(self, request: Request, body: bytes, verb: str) -> Response:
        before = self._model
        try:
            model = merge_document(before, orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            return _invalid("INVALID_JSON", f"the body is not JSON: {exc}")
        except DocumentRejected as exc:
            return _json({"dataValidationErrors": exc.errors}, 400)
        self._model, self._mapped = model, True
        self._follow_adoptions(before, model)
        if request.args.get("async") != "true":
            return Response(status=204)
        resource = str(uuid.uuid4())
        self._mapping_jobs[resource] = {"progressStatus": "FINISHED", "result": "OK",
                                    "resultMessage": f"Schema and mapping successfully {verb}"}
        return Response(status=303, headers={"Location": f"{self._base(request)}/mapping/progress/{resource}"})

    def _follow_adoptions(self, before: SchemaModel | None, after: SchemaModel) -> None:
        """Objects (and object-API attributes) of a type the document adopted move to its new external id; a type
        keeps its numeric id through an adoption, which is how one is recognised."""
        old_keys = {t.id: t.external_id for t in (before.types.values() if before else ())}
        for object_type in after.types.values():
            old = old_keys.get(object_type.id)
            if old is not None and old != object_type.external_id:
                self._store.rename_type(old, object_type.external_id)
                if self.object_api is not None and old in self.object_api.extra:
                    self.object_api.extra[object_type.external_id] = self.object_api.extra.pop(old)

    def _mapping_progress(self, request: Request, body: bytes, rid: str) -> Response:
        if rid not in self._mapping_jobs:
            return _json({"code": 404, "message": f"No mapping progress {rid}"}, 404)
        return _json(self._mapping_jobs[rid])

    def _schema_and_mapping(self, request: Request, body: bytes) -> Response:
        if not self._mapped and not self.schema_before_mapping:
            return _invalid("MISSING_MAPPING", "the import source has no schema and mapping yet")
        # Before the first PUT: the schema's object types (made by hand, left by an earlier import) and an
        # empty mapping - UNCONFIRMED (module docstring).
        return _json(to_document(self._model or SchemaModel(SCHEMA_NAME, "")))

    # -- executions -------------------------------------------------------------------------------------

    def _execution_links(self, request: Request, execution: Execution) -> dict[str, str]:
        url = f"{self._base(request)}/executions/{execution.id}"
        return {"submitProgress": f"{url}/progress", "submitResults": f"{url}/data",
                "getExecutionStatus": f"{url}/status", "cancel": url}

    def _start(self, request: Request, body: bytes) -> Response:
        reason = ("DISABLED" if not self._enabled else "MISSING_MAPPING" if not self._mapped
                  else "IN_PROGRESS" if self._running() else None)
        if reason:
            return _json({"result": "error", "errorCode": reason}, 409)
        execution = Execution(str(uuid.uuid4()), len(self.executions) + 1, self.import_source_id)
        self.executions.append(execution)
        return _json({"links": self._execution_links(request, execution), "result": "success"})

    def _execution(self, eid: str) -> Execution | None:
        return next((e for e in self.executions if e.id == eid), None)

    def _data(self, request: Request, body: bytes, eid: str) -> Response:
        execution = self._execution(eid)
        if execution is None:
            return _json({"code": 404, "message": f"No execution {eid}"}, 404)
        problem = _data_problem(body)
        if problem:
            return _invalid("INVALID_DATA", problem)
        if execution.status != "INGESTING":
            return _invalid("EXECUTION_NOT_INGESTING", f"the execution is {execution.status}: no more data")
        payload = orjson.loads(body)
        execution.chunks.append(payload["data"])
        execution.client_ids.append(payload.get("clientGeneratedId"))
        if payload["completed"]:
            execution.status = "PROCESSING"
            threading.Thread(target=self._process, args=(execution,), daemon=True,
                             name=f"assets-execution-{execution.number}").start()
        return Response(status=200)

    def _process(self, execution: Execution) -> None:
        """PROCESSING → DONE after ``processing_delay``, unless cancelled meanwhile (a cancel while the records
        are applied leaves what was applied: Assets may have applied part of a cancelled execution)."""
        time.sleep(self.processing_delay)
        with self._lock:
            if execution.status != "PROCESSING" or self._model is None or not self._mapped:
                return
            model = self._model
        with self._store_lock:
            results = apply_execution(model, self._store, execution.chunks, self._policy)
        with self._lock:
            if execution.status != "PROCESSING":
                return
            execution.results = results
            execution.result_map = {str(model.types[t].id): r.to_json(model.types[t]) for t, r in results.items()}
            execution.status, execution.ended = "DONE", _now()

    def _policy(self, object_type: ObjectTypeDef) -> MissingPolicy:
        return self._policies.get(object_type.name, self.missing_objects)

    def _progress(self, request: Request, body: bytes, eid: str) -> Response:
        execution = self._execution(eid)
        if execution is None:
            return _json({"code": 404, "message": f"No execution {eid}"}, 404)
        try:
            progress = orjson.loads(body)
        except orjson.JSONDecodeError:
            progress = None
        if not isinstance(progress, dict):
            return _invalid("INVALID_PROGRESS", "the body must be a JSON object {steps, objects}")
        execution.progress = progress
        return Response(status=200)

    def _status_body(self, execution: Execution) -> dict:
        return {"status": execution.status, "progressResult": execution.progress_result}

    def _status(self, request: Request, body: bytes, eid: str) -> Response:
        execution = self._execution(eid)
        if execution is None:
            return _json({"code": 404, "message": f"No execution {eid}"}, 404)
        return _json(self._status_body(execution))

    def _latest_status(self, request: Request, body: bytes) -> Response:
        if not self.executions:  # observed: 404 before the first ever execution (reference §4.6)
            return _json({"code": 404, "message": "No execution found for this import source"}, 404)
        latest = self.executions[-1]
        return _json({"executionId": latest.id, **self._status_body(latest)})

    def _cancel(self, request: Request, body: bytes, eid: str) -> Response:
        execution = self._execution(eid)
        if execution is None:
            return _json({"code": 404, "message": f"No execution {eid}"}, 404)
        if execution.status == "DONE":
            return _invalid("EXECUTION_FINISHED", "the execution is DONE and cannot be cancelled")
        if execution.status != "CANCELLED":
            execution.status, execution.ended = "CANCELLED", _now()
        return Response(status=200)

    def _failed(self, request: Request, body: bytes, eid: str) -> Response:
        execution = self._execution(eid)
        if execution is None:
            return _json({"code": 404, "message": f"No execution {eid}"}, 404)
        try:
            reason = orjson.loads(body).get("failureReason")
        except (orjson.JSONDecodeError, AttributeError):
            reason = None
        if not isinstance(reason, str):
            return _invalid("INVALID_FAILURE", 'the body must be {"failureReason": "<text>"}')
        execution.failure_reason = reason
        return Response(status=204)


def _data_problem(body: bytes) -> str | None:
    """Why a ``data`` body is malformed, or None. Keys are case-sensitive (reference §2: "Data" ≠ "data")."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"the body is not JSON: {exc}"
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(payload) - _DATA_KEYS)
    if unknown:
        return f"unknown fields {unknown}: the body is {{data, clientGeneratedId?, completed}} (case-sensitive)"
    if not isinstance(payload.get("data"), dict):
        return "'data' must be a JSON object keyed by selector roots"
    if not isinstance(payload.get("completed"), bool):
        return "'completed' must be true or false"
    if "clientGeneratedId" in payload and not isinstance(payload["clientGeneratedId"], str):
        return "'clientGeneratedId' must be a string"
    return None


def _check_policy(policy: MissingPolicy) -> MissingPolicy:
    """``policy`` if it is "IGNORE", "REMOVE" or ("UPDATE", attribute name, value); raises ValueError."""
    if policy in ("IGNORE", "REMOVE"):
        return policy
    if isinstance(policy, tuple) and len(policy) == 3 and policy[0] == "UPDATE" and isinstance(policy[1], str):
        return policy
    raise ValueError(f"missing-objects policy must be IGNORE, REMOVE or ('UPDATE', attribute, value): {policy!r}")
