"""The Azure Storage store of the Functions app: a Storage queue for changes, Blob for state and payloads.

Why Blob and not Table for state: the hashes of a whole object type are read once per full run and written
once per Assets execution. They are kept in 16 shards of ids per type (``shared.store.ports.shard_of``;
``state/hashes/<type>/<shard>.json.gz``, gzip'd JSON): 16 requests each way, where Table storage would need
~1,000 batch transactions of 100 entities for 100,000 users; and the worker commits one shard at a time, so
neither it nor this store holds a whole type of a million users (issue 11). Checkpoints are small blobs
(``state/checkpoints/<name>``). The writer lease is a native blob lease on ``leases/<name>`` (an empty blob
created on first use), which Azure expires by itself when its holder dies: exactly the "one writer under a
lease that expires" invariant of DESIGN.md. Hash merges are read-modify-write guarded by the blob's ETag,
retried on 412, so two committers never lose each other's hashes.

The data of the pushed records lives next to the hashes in ``state/records/<type>/<shard>.jsonl.gz``: gzip'd
JSON lines ``{"id": ..., "d": {...}}`` in no particular order, one line per id. It is far bigger than the
hashes (a group's data can hold thousands of member ids), so it is never loaded whole: ``records`` streams the
blobs holding the wanted ids, keeping only those, and a merge streams the old blob into a new one (staged
blocks), replacing the lines of the given ids and appending the new ones, under the old blob's ETag (redone on
412 like the hashes); memory stays bounded by the new records plus one block. A commit writes records, then
hashes, then checkpoints, so a hash never exists without its data.

Releases before the shards kept one blob per type (``state/hashes/<type>.json.gz``, ``state/records/<type>.jsonl.gz``).
It is read as the layer under the shards and never written again: every commit goes to the shards, whose
entries win, so it ages out as the objects are pushed again. (A read time confirmed for an object only that
blob holds is not kept: the next push of the object stores one.)

Everything lives in one container (``entra-assets``) of the ``AzureWebJobsStorage`` account. Queue messages
are base64 text because host.json sets ``messageEncoding: base64`` (the queue trigger reads what we send).
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import random
import socket
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import orjson
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobLeaseClient, ContainerClient, ContentSettings
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.errors import StorageUnreachable
from shared.store.ports import (
    SHARDS,
    LeaseBusy,
    QueueDepth,
    QueuedMessage,
    encode_message,
    in_flight_lines,
    joined,
    parse_in_flight,
    shard_of,
)

log = logging.getLogger(__name__)

CONTAINER = "entra-assets"
BLOCK_BYTES = 4 * 1024 * 1024      # compressed bytes per staged block / per download chunk
INFLATE_BYTES = 1024 * 1024        # decompressed bytes produced per step while reading
MERGE_ATTEMPTS = 20
APPEND_BYTES = 4 * 1024 * 1024     # the most one Append Block takes (4 MiB before service version 2022-11-02)
# Blob leases last 15-60 s (or forever); https://learn.microsoft.com/rest/api/storageservices/lease-blob
LEASE_MIN, LEASE_MAX = 15, 60


# Client options of the webhook's storage clients (azure-core's retry and transport keywords).
# https://learn.microsoft.com/python/api/overview/azure/storage-blob-readme#optional-configuration
QUICK = {"retry_total": 0, "connection_timeout": 1, "read_timeout": 2}
# Options of the first requests of every other open (create the container and the queue when missing), which
# double as a reachability probe: one attempt, short timeouts (a create answers in milliseconds). The SDK's
# default policy (three retries after 15, 18 and 24 s of back-off) took 93 s for `entra-assets status` to give
# up on a closed port, ending in a traceback; the requests after the probe keep that policy, since an account
# that has just answered is worth waiting for. A failed probe is retried by whoever runs again: the admin, the
# next timer tick, the queue's next delivery.
PROBE = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 2}


def azure_clients(connection_string: str | None, *, account_name: str | None = None, credential: Any = None,
                  queue_name: str, container_name: str = CONTAINER, quick: bool = False
                  ) -> tuple[ContainerClient, QueueClient, QueueClient]:
    """The container, the change queue and its ``<queue>-poison`` queue, from a connection string or else from
    ``account_name`` + ``credential`` (managed identity). Creates the container and the queue when missing
    (idempotent); the poison queue is left to the Functions host, which creates it on the first poison.

    ``quick`` (the webhook): no SDK retries and short timeouts (``QUICK``) for every request, so that an
    unreachable storage account fails in seconds - the SDK's default policy (exponential back-off from 15 s)
    took 82 s to give up here, and Graph wants an answer within 3 s; the webhook then answers 503 and Graph
    delivers again later. Otherwise only the creating requests are quick (``PROBE``).

    Raises ``StorageUnreachable`` (one line naming the setting and the endpoint, never a key or a SAS) when
    those first requests fail: no connection, no answer, or the credential refused."""
    common = QUICK if quick else {}
    blob_options = {"max_single_get_size": BLOCK_BYTES, "max_chunk_get_size": BLOCK_BYTES, **common}
    queue_options = {"message_encode_policy": TextBase64EncodePolicy(),
                     "message_decode_policy": _LenientBase64DecodePolicy(), **common}
    if connection_string:
        container = ContainerClient.from_connection_string(connection_string, container_name, **blob_options)
        queue, poison = (QueueClient.from_connection_string(connection_string, name, **queue_options)
                         for name in (queue_name, f"{queue_name}-poison"))
    else:
        if not account_name:
            raise ValueError("a storage connection string or an account name is required")
        container = ContainerClient(f"https://{account_name}.blob.core.windows.net", container_name,
                                    credential=credential, **blob_options)
        queue, poison = (QueueClient(f"https://{account_name}.queue.core.windows.net", name,
                                     credential=credential, **queue_options)
                         for name in (queue_name, f"{queue_name}-poison"))
    setting = "AzureWebJobsStorage" if connection_string else "AzureWebJobsStorage__accountName"
    probe = QUICK if quick else PROBE
    for client, create in ((container, container.create_container), (queue, queue.create_queue)):
        try:
            create(**probe)
        except ResourceExistsError:
            pass
        except AzureError as err:
            raise StorageUnreachable(_unreachable_message(setting, client.url, err, probe)) from None
    return container, queue, poison


def _unreachable_message(setting: str, url: str, err: AzureError, probe: dict[str, Any]) -> str:
    """One line for a storage account that failed its first request: the setting, the account's endpoint
    (``url`` without its container or queue name and without any query, where a SAS would be), what happened
    and what to check. Never the exception's text, which can carry the request's URL."""
    parts = urlsplit(url)
    endpoint = f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}"
    advice = "check the setting and the network"
    causes = _causes(err)
    if isinstance(err, ServiceResponseError):
        if any(isinstance(c, TimeoutError) for c in causes):
            reason = f"does not answer (nothing within {probe['read_timeout']} s)"
        else:
            reason = "cannot be reached: the connection was dropped"
    elif isinstance(err, ServiceRequestError):
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            reason = "cannot be reached: connection refused"
        elif any(isinstance(c, socket.gaierror) for c in causes):
            reason = "cannot be reached: the host name does not resolve"
        elif any(isinstance(c, TimeoutError) for c in causes):
            reason = f"cannot be reached: no connection within {probe['connection_timeout']} s"
        else:
            reason = f"cannot be reached ({type(causes[-1]).__name__})"
    elif isinstance(err, ClientAuthenticationError) and err.response is None:  # no token to send at all
        reason = "cannot be reached: no identity could sign in to it"
        advice = ("sign in with az login, or in Azure set AzureWebJobsStorage__credential=managedidentity "
                  "(AzureWebJobsStorage__clientId for a user-assigned identity)")
    elif isinstance(err, HttpResponseError) and err.status_code in (401, 403):
        reason, advice = _refusal(err, setting)
    else:
        status = getattr(err, "status_code", None)
        reason = f"answered {status} {_code(err)}".rstrip() if status else f"failed ({type(err).__name__})"
    return f"the storage account of {setting} ({endpoint}) {reason} - {advice}"


def _refusal(err: HttpResponseError, setting: str) -> tuple[str, str]:
    """(reason, advice) for a 401/403, by the storage error code.
    https://learn.microsoft.com/rest/api/storageservices/common-rest-api-error-codes"""
    code = _code(err) or str(err.status_code)
    if isinstance(err, ClientAuthenticationError):  # AuthenticationFailed, InvalidAuthenticationInfo: the signature
        check = f"the AccountKey or SAS in {setting}" if setting == "AzureWebJobsStorage" else "the identity's tenant"
        return f"refused the credential ({code})", f"check {check}"
    if code == "AuthorizationPermissionMismatch":  # signed in fine, no data role (RBAC)
        return (f"refused access ({code}): the identity lacks a storage role",
                "it needs Storage Blob Data Owner and Storage Queue Data Contributor on the account")
    # AuthorizationFailure (also the account's firewall), the SAS mismatches, AuthorizationSourceIPMismatch, ...
    advice = "check the account's Networking (firewall) settings and what the credential may do: it needs to " \
             "create containers, queues and blobs"
    return f"refused access ({code})", advice


def _code(err: AzureError) -> str:
    """The storage error code as the service spelt it ("AuthenticationFailed"; the SDK may hand an enum)."""
    code = getattr(err, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions behind it (azure-core wraps urllib3's, which wrap the socket's)."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__ or getattr(err, "inner_exception", None)
    return chain


class _LenientBase64DecodePolicy(TextBase64DecodePolicy):
    """Base64 like the Functions host, but a message that is not base64 comes back as its raw text (it then
    fails JSON parsing and becomes ``{"_raw": ...}``) instead of failing the whole receive."""

    def decode(self, content: str, response: Any) -> str:
        # Not super().decode: its DecodeError cannot even be constructed with this response (AttributeError
        # in azure-core 1.41), which would fail the whole receive.
        try:
            return base64.b64decode(content.encode(), validate=True).decode()
        except (ValueError, TypeError):
            return content


class AzureLease:
    """A native blob lease on ``leases/<name>``; see ``shared.store.ports.Lease``. The ttl is clamped into the 15-60 s
    Azure allows."""

    def __init__(self, container: ContainerClient, name: str, ttl: float):
        self.name = name
        self.duration = int(min(LEASE_MAX, max(LEASE_MIN, math.ceil(ttl))))
        self._blob = container.get_blob_client(f"leases/{name}")
        self._id = str(uuid.uuid4())  # our own id: the SDK forgets it on release, and a lost lease must stay lost
        self._client = BlobLeaseClient(self._blob, lease_id=self._id)

    def __enter__(self) -> Self:
        """Acquire; raises ``LeaseBusy`` on 409 LeaseAlreadyPresent."""
        try:
            self._acquire()
        except ResourceNotFoundError:
            try:
                self._blob.upload_blob(b"", overwrite=False)  # first use: the blob the lease sits on
            except (ResourceExistsError, ResourceModifiedError):
                pass  # another process created it at the same time
            self._acquire()
        return self

    def _acquire(self) -> None:
        try:
            self._client.acquire(lease_duration=self.duration)
        except HttpResponseError as err:
            if err.status_code == 409:
                raise LeaseBusy(f"lease {self.name!r} is held by another writer") from err
            raise

    def renew(self) -> None:
        """Extend by the lease duration. Raises ``LeaseBusy`` when the lease was lost to another holder."""
        self._client.id = self._id
        try:
            self._client.renew()
        except HttpResponseError as err:
            if err.status_code == 409:
                raise LeaseBusy(f"lease {self.name!r} was lost to another holder") from err
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Release; never raises (a lease that is gone expires or has expired on its own)."""
        self._client.id = self._id
        try:
            self._client.release()
        except AzureError as err:
            log.warning("could not release lease %s (%s); it expires by itself", self.name,
                        getattr(err, "error_code", None) or type(err).__name__)


class AzureStateStore:
    """``shared.store.ports.StateStore`` as blobs; a commit merges each type atomically (ETag), not all together."""

    def __init__(self, container: ContainerClient):
        self._container = container
        self._absent: set[str] = set()  # unsharded blobs found missing: none is written again, nor asked for again

    def _state_blob(self, kind: str, type_key: str, shard: int | None):
        """One shard's ``kind`` ("hashes" or "records") of a type; shard None: the whole type's blob that releases
        before the shards wrote (read as the layer under the shards, never written)."""
        name = type_key if shard is None else f"{type_key}/{shard:02d}"
        return self._container.get_blob_client(f"state/{kind}/{name}{_SUFFIX[kind]}")

    def _download(self, kind: str, type_key: str, shard: int | None) -> Any | None:
        """The blob's download (``StorageStreamDownloader``), or None when there is no blob."""
        blob = self._state_blob(kind, type_key, shard)
        if blob.blob_name in self._absent:
            return None
        try:
            return blob.download_blob()
        except ResourceNotFoundError:
            if shard is None:
                self._absent.add(blob.blob_name)
            return None

    def _checkpoint_blob(self, name: str):
        return self._container.get_blob_client(f"state/checkpoints/{name}")

    def _load(self, type_key: str, shard: int | None) -> tuple[dict[str, str], str | None]:
        """The stored hashes of one shard of a type and the ETag they were read at (None when there is no blob)."""
        download = self._download("hashes", type_key, shard)
        if download is None:
            return {}, None
        return json.loads(zlib.decompress(download.readall(), wbits=31)), download.properties.etag

    def hashes(self, type_key: str) -> Iterator[tuple[str, str]]:
        for shard in (None, *range(SHARDS)):  # a shard's hash wins over the unsharded blob's: it comes later
            yield from self._load(type_key, shard)[0].items()

    def _open_records(self, type_key: str, shard: int | None) -> tuple[Iterator[bytes], str | None]:
        """The stored record lines of one shard of a type, streamed, and the ETag they are read at (None: no
        blob). A later chunk is fetched under that ETag, so a blob replaced meanwhile raises
        ResourceModifiedError."""
        download = self._download("records", type_key, shard)
        if download is None:
            return iter(()), None
        return _inflate_lines(download.chunks()), download.properties.etag

    def records(self, type_key: str, ids: Iterable[str]) -> dict[str, dict]:
        """One streaming pass over each records blob holding wanted ids; only their lines are parsed."""
        return self._scan(type_key, ids, "d")

    def read_times(self, type_key: str, ids: Iterable[str]) -> dict[str, float]:
        """The same passes as ``records``, keeping each wanted line's read time."""
        return self._scan(type_key, ids, "t")

    def _scan(self, type_key: str, ids: Iterable[str], field: str) -> dict[str, Any]:
        """Record id -> ``field`` of its line, for the wanted ids whose line has it: the unsharded blob first,
        then the shards of the wanted ids, which win."""
        wanted = set(ids)
        found: dict[str, Any] = {}
        if wanted:
            for shard in (None, *sorted({shard_of(i) for i in wanted})):
                found.update(self._scan_blob(type_key, shard, wanted, field))
        return found

    def _scan_blob(self, type_key: str, shard: int | None, wanted: set[str], field: str) -> dict[str, Any]:
        """``_scan`` over one blob, read again from the start if a committer replaces it meanwhile."""
        for attempt in range(MERGE_ATTEMPTS):
            found: dict[str, Any] = {}
            try:
                lines, _ = self._open_records(type_key, shard)
                for line in lines:
                    if line and _line_id(line) in wanted:
                        record = orjson.loads(line)
                        if field in record:
                            found[record["id"]] = record[field]
                return found
            except ResourceModifiedError:
                log.info("records of %s changed while reading; reading again (%d)", type_key, attempt + 1)
        raise RuntimeError(f"could not read the records of {type_key} after {MERGE_ATTEMPTS} attempts")

    def checkpoint(self, name: str) -> str | None:
        try:
            return self._checkpoint_blob(name).download_blob().readall().decode()
        except ResourceNotFoundError:
            return None

    def commit(self, hashes: dict[str, dict[str, str]], checkpoints: dict[str, str | None],
               records: dict[str, dict[str, dict]] | None = None,
               read: dict[str, dict[str, float]] | None = None) -> None:
        """Records first, then hashes, then checkpoints (see ``shared.store.ports.StateStore.commit``)."""
        records, read = records or {}, read or {}
        for type_key in records.keys() | read.keys():
            data, times = _by_shard(records.get(type_key, {})), _by_shard(read.get(type_key, {}))
            for shard in sorted(data.keys() | times.keys()):
                self._merge_records(type_key, shard, data.get(shard, {}), times.get(shard, {}))
        for type_key, by_id in hashes.items():
            for shard, part in sorted(_by_shard(by_id).items()):
                self._merge(type_key, shard, part)
        for name, value in checkpoints.items():
            blob = self._checkpoint_blob(name)
            if value is not None:
                blob.upload_blob(value.encode(), overwrite=True)
                continue
            try:
                blob.delete_blob()
            except ResourceNotFoundError:
                pass

    def _merge(self, type_key: str, shard: int, by_id: dict[str, str]) -> None:
        """Read-modify-write under the ETag; on 412 (or 409 when two create the blob) another committer won
        the race: read again and merge again. https://learn.microsoft.com/azure/storage/blobs/concurrency-manage"""
        for attempt in range(MERGE_ATTEMPTS):
            stored, etag = self._load(type_key, shard)
            stored.update(by_id)
            data = zlib.compress(json.dumps(stored, separators=(",", ":")).encode(), 6, wbits=31)
            condition = ({"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag
                         else {"match_condition": MatchConditions.IfMissing})
            try:
                self._state_blob("hashes", type_key, shard).upload_blob(data, overwrite=True, **condition)
                return
            except (ResourceModifiedError, ResourceExistsError):
                log.info("hashes of %s changed while merging; retrying (%d)", type_key, attempt + 1)
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise RuntimeError(f"could not merge the hashes of {type_key} after {MERGE_ATTEMPTS} attempts")

    def _merge_records(self, type_key: str, shard: int, by_id: dict[str, Any], read: dict[str, float]) -> None:
        """Stream the old blob into a new one under its ETag; on 412 (409 when two create it; 400
        InvalidBlockList when the winner's commit discarded our staged blocks) read and merge again."""
        blob = self._state_blob("records", type_key, shard)
        for attempt in range(MERGE_ATTEMPTS):
            try:
                lines, etag = self._open_records(type_key, shard)
                condition = ({"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag
                             else {"match_condition": MatchConditions.IfMissing})
                _upload_lines(blob, _merged(lines, by_id, read), **condition)
                return
            except (ResourceModifiedError, ResourceExistsError):
                pass
            except HttpResponseError as err:
                if err.error_code != "InvalidBlockList":
                    raise
            log.info("records of %s changed while merging; retrying (%d)", type_key, attempt + 1)
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
        raise RuntimeError(f"could not merge the records of {type_key} after {MERGE_ATTEMPTS} attempts")

    def _in_flight_blob(self):
        return self._container.get_blob_client("state/in-flight.jsonl")

    def note_in_flight(self, records: dict[str, dict[str, bytes]]) -> None:
        """Appended to an append blob (created on first use): one request per chunk sent, or a few for a chunk
        over the 4 MiB an append takes."""
        block = in_flight_lines(records)
        blob = self._in_flight_blob()
        for start in range(0, len(block), APPEND_BYTES):
            try:
                blob.append_block(block[start:start + APPEND_BYTES])
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    blob.create_append_blob(match_condition=MatchConditions.IfMissing)
                blob.append_block(block[start:start + APPEND_BYTES])

    def in_flight(self) -> Iterator[tuple[str, str, bytes]]:
        try:
            download = self._in_flight_blob().download_blob()
        except ResourceNotFoundError:
            return
        yield from parse_in_flight(download.chunks())

    def clear_in_flight(self) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._in_flight_blob().delete_blob()

    def lease(self, name: str, ttl: float) -> AzureLease:
        return AzureLease(self._container, name, ttl)


_ID_PREFIX = b'{"id":"'
_SUFFIX = {"hashes": ".json.gz", "records": ".jsonl.gz"}


def _by_shard(by_id: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """``by_id`` split by the shard of its ids (``shard_of``)."""
    parts: dict[int, dict[str, Any]] = {}
    for record_id, value in by_id.items():
        parts.setdefault(shard_of(record_id), {})[record_id] = value
    return parts


def _record_line(record_id: str, data: Any, read: float | None) -> bytes:
    """One line of a records blob; the id comes first so ``_line_id`` finds it without parsing the data, then
    the read time ``t`` when known."""
    time_field = b',"t":' + orjson.dumps(read) if read is not None else b""
    return b'{"id":' + orjson.dumps(record_id) + time_field + b',"d":' + orjson.dumps(data) + b"}"


def _line_id(line: bytes) -> str:
    """The id of a records line: sliced from its start when it holds no escape, else parsed."""
    if line.startswith(_ID_PREFIX):
        end = line.find(b'"', len(_ID_PREFIX))
        raw = line[len(_ID_PREFIX):end]
        if end > 0 and b"\\" not in raw:  # no backslash: that quote closes the id, and the bytes are literal
            return raw.decode()
    return orjson.loads(line)["id"]


def _merged(lines: Iterable[bytes], by_id: dict[str, Any], read: dict[str, float]) -> Iterator[bytes]:
    """The old lines with those of ``by_id``'s ids replaced, then the lines of its ids that were not there. A
    replaced line without a new read time keeps its old one; a line whose id is only in ``read`` (read again
    and found unchanged) keeps its data and takes the later of the two times."""
    written: set[str] = set()
    for line in lines:
        if not line:
            continue
        record_id = _line_id(line)
        if record_id not in by_id and record_id not in read:
            yield line
        elif record_id not in by_id:
            old = orjson.loads(line)
            yield _record_line(record_id, orjson.Fragment(orjson.dumps(old["d"])),
                               max(old.get("t", read[record_id]), read[record_id]))
        elif record_id not in written:
            written.add(record_id)
            when = read.get(record_id)
            if when is None:
                when = orjson.loads(line).get("t")
            yield _record_line(record_id, by_id[record_id], when)
    for record_id, data in by_id.items():
        if record_id not in written:
            yield _record_line(record_id, data, read.get(record_id))


class AzureQueue:
    """``shared.store.ports.ChangeQueue`` on a Storage queue (base64 text, like the Functions host expects)."""

    def __init__(self, queue: QueueClient, poison: QueueClient):
        self._queue, self._poison = queue, poison

    def send(self, body: dict, delay: float = 0) -> None:
        text = encode_message(body)
        self._queue.send_message(text, visibility_timeout=math.ceil(delay) if delay > 0 else None)

    def receive(self, max_messages: int, visibility_timeout: float) -> list[QueuedMessage]:
        """The visibility timeout is rounded up to whole seconds (at least 1): the service takes integers."""
        timeout = max(1, math.ceil(visibility_timeout))
        pages = self._queue.receive_messages(messages_per_page=min(32, max_messages), max_messages=max_messages,
                                             visibility_timeout=timeout)
        return [QueuedMessage(id=m.id, body=_decode(m.content), dequeue_count=m.dequeue_count or 1,
                              receipt=m.pop_receipt) for m in pages]

    def poison(self, message: QueuedMessage) -> None:
        """Move ``message`` to ``<queue>-poison``, as the Functions host does after maxDequeueCount failures
        (used by the local stand-in of the host, ``sandbox/host/functions_host.py``)."""
        with contextlib.suppress(ResourceExistsError):
            self._poison.create_queue()
        self._poison.send_message(encode_message(message.body))
        self.delete(message)

    def delete(self, message: QueuedMessage) -> None:
        """Delete by id and pop receipt; a host-delivered message (receipt None) is the host's to complete."""
        if message.receipt is None:
            log.debug("message %s was delivered by the host, which completes it", message.id)
            return
        try:
            self._queue.delete_message(message.id, pop_receipt=message.receipt)
        except ResourceNotFoundError:
            log.info("message %s was already deleted", message.id)
        except HttpResponseError as err:
            # 400 PopReceiptMismatch: another receiver took the message after our visibility timeout.
            # https://learn.microsoft.com/rest/api/storageservices/delete-message2
            if err.error_code != "PopReceiptMismatch":
                raise
            log.warning("message %s was received again by someone else; not deleted", message.id)

    def depth(self) -> QueueDepth:
        messages = self._queue.get_queue_properties().approximate_message_count or 0
        try:
            poison = self._poison.get_queue_properties().approximate_message_count or 0
        except ResourceNotFoundError:
            poison = 0  # the host creates it on the first poison message
        return QueueDepth(messages=messages, poison=poison)


def _decode(text: str | None) -> dict:
    try:
        body = json.loads(text or "")
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"_raw": (text or "")[:200]}


class PayloadNotFound(LookupError):
    """The payload blob does not exist (deleted after an earlier, successful push)."""


class AzurePayloadStore:
    """``shared.store.ports.PayloadStore`` as gzip blobs ``payloads/<name>``, streamed both ways. A payload appears
    atomically when its block list is committed."""

    def __init__(self, container: ContainerClient):
        self._container = container

    def _blob(self, name: str):
        return self._container.get_blob_client(f"payloads/{name}")

    def write(self, name: str, lines: Iterable[bytes]) -> None:
        _upload_lines(self._blob(name), lines)

    def read(self, name: str) -> Iterator[bytes]:
        """Raises ``PayloadNotFound`` (a LookupError) when the payload does not exist (on the first ``next``)."""
        try:
            download = self._blob(name).download_blob()
        except ResourceNotFoundError as err:
            raise PayloadNotFound(f"payload {name!r} does not exist") from err
        yield from _inflate_lines(download.chunks())

    def delete(self, name: str) -> None:
        try:
            self._blob(name).delete_blob()
        except ResourceNotFoundError:
            pass

    def sweep(self, before: float) -> int:
        """Payload blobs last modified before ``before``. A writer killed mid-upload leaves only uncommitted
        blocks, which Azure discards by itself after a week (no blob to delete).
        https://learn.microsoft.com/rest/api/storageservices/put-block#remarks"""
        swept = 0
        for blob in self._container.list_blobs(name_starts_with="payloads/"):
            if blob.last_modified.timestamp() < before:
                with contextlib.suppress(ResourceNotFoundError):
                    self._container.delete_blob(blob.name)
                    swept += 1
        return swept


def _upload_lines(blob: Any, lines: Iterable[bytes], **condition: Any) -> None:
    """Write ``lines`` (newline-terminated) as one gzip blob, streaming: blocks of ``BLOCK_BYTES`` compressed
    bytes are staged and committed together, so the blob appears atomically. ``condition`` (etag /
    match_condition) guards the final request; without one an existing blob is replaced."""
    # Level 1: these blobs are rewritten often and read soon; level 6 cost ~3x the CPU for ~20% less size.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)   # wbits 31: gzip framing
    prefix = uuid.uuid4().hex                             # block ids of one blob must have equal length
    blocks: list[str] = []
    buffer = bytearray()
    for block in joined(lines):
        buffer += compressor.compress(block)
        if len(buffer) >= BLOCK_BYTES:
            blocks.append(f"{prefix}-{len(blocks):06d}")
            blob.stage_block(blocks[-1], bytes(buffer))
            buffer.clear()
    buffer += compressor.flush()
    settings = ContentSettings(content_type="application/x-ndjson+gzip")
    if not blocks:  # small: one request
        blob.upload_blob(bytes(buffer), overwrite=True, content_settings=settings, **condition)
        return
    blocks.append(f"{prefix}-{len(blocks):06d}")
    blob.stage_block(blocks[-1], bytes(buffer))
    blob.commit_block_list(blocks, content_settings=settings, **condition)


def _inflate_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines (without newline) of a gzip stream given in chunks, inflated in bounded steps."""
    inflater = zlib.decompressobj(wbits=31)
    rest = b""
    for chunk in chunks:
        data = chunk
        while data:  # bounded steps: 4 MiB of gzip'd JSON can inflate to tens of MB
            out = inflater.decompress(data, INFLATE_BYTES)
            data = inflater.unconsumed_tail
            lines = (rest + out).split(b"\n")
            rest = lines.pop()
            yield from lines
    lines = (rest + inflater.flush()).split(b"\n")
    rest = lines.pop()
    yield from lines
    if rest:
        yield rest
