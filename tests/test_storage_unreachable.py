"""A storage account that cannot be reached, or refuses the credential: one line naming AzureWebJobsStorage in
seconds (shared/store/azure.py ``PROBE``), not a traceback after the SDK's 90 s of back-off.

The CLI runs as a real subprocess (``python -m shared.cli`` from this worktree) against peers on loopback
that fail in each way a network does: a closed port (refused), a peer that accepts and never answers (a hung
or overloaded endpoint), a listener whose backlog is full (SYNs dropped, as by a firewall), and a host name
that cannot resolve (``.invalid``, RFC 6761).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from shared.app import open_backend, timer_tick
from shared.errors import StorageUnreachable
from shared.settings import load_settings
from shared.store.azure import azure_clients
from tests.fixtures_azurite import ACCOUNT, KEY

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 10.0  # seconds from starting the command (its imports done) to its answer


def connection_string(base: str, key: str = KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={base};QueueEndpoint={base};")


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, tuple[str, str]]]:
    """Storage endpoints that fail, each with what the one line must say about it."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)  # never accepted: once one connection waits, the kernel drops further SYNs
    waiting = socket.create_connection(full.getsockname())
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    yield {
        "refused": (f"http://127.0.0.1:{closed.getsockname()[1]}/{ACCOUNT}", "cannot be reached: connection refused"),
        "silent": (f"http://127.0.0.1:{silent.getsockname()[1]}/{ACCOUNT}", "does not answer (nothing within 2 s)"),
        "dropped": (f"http://127.0.0.1:{full.getsockname()[1]}/{ACCOUNT}", "cannot be reached: no connection within 2 s"),
        "unresolvable": (f"http://storage.entra-assets.invalid/{ACCOUNT}",
                         "cannot be reached: the host name does not resolve"),
    }
    for sock in (silent, waiting, full, closed, *held):
        sock.close()


# The CLI's own entry point in a fresh process, timed from after the imports: on this 2-core machine, shared
# with other test runs, importing alone took 2-8 s, which says nothing about how long the command waits.
LAUNCHER = """
import atexit, sys, time
import shared.app, shared.admin.status, shared.store.azure  # what the commands import on first use
from shared.cli import main
started = time.monotonic()
atexit.register(lambda: sys.stderr.write(f"\\n@seconds {time.monotonic() - started:.3f}\\n"))
main(sys.argv[1:])
"""


def run_cli(command: str, storage: str, tmp_path: Path) -> tuple[float, str, int]:
    """(seconds the command took after its imports, everything it printed, exit status)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AZURE", "AzureWebJobs"))}
    env |= {"AzureWebJobsStorage": storage, "ENTRA_ASSETS_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", LAUNCHER, command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    output, _, seconds = (done.stdout + done.stderr).rpartition("\n@seconds ")
    return float(seconds), output.strip(), done.returncode


@pytest.mark.parametrize(("command", "peer"), [("status", "refused"), ("status", "silent"), ("status", "dropped"),
                                               ("status", "unresolvable"), ("sync", "refused"), ("sync", "silent")])
def test_the_cli_answers_an_unreachable_account_in_one_line_within_seconds(peers, tmp_path, command, peer):
    endpoint, reason = peers[peer]
    seconds, output, status = run_cli(command, connection_string(endpoint), tmp_path)
    assert seconds < BUDGET, (seconds, output)
    assert status == 1
    assert output == f"error: the storage account of AzureWebJobsStorage ({endpoint}) {reason} - check the setting " \
                     "and the network"
    assert "Traceback" not in output and KEY not in output and KEY[:12] not in output


def test_a_wrong_account_key_is_named_without_showing_it(azurite, tmp_path):
    wrong = KEY[:-8] + "AAAAAAA="
    storage = connection_string(f"http://127.0.0.1:{azurite.blob_port}/{ACCOUNT}", wrong).replace(
        f"QueueEndpoint=http://127.0.0.1:{azurite.blob_port}", f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}")
    seconds, output, status = run_cli("status", storage, tmp_path)
    assert seconds < BUDGET and status == 1
    # Azurite answers a bad signature 403 AuthorizationFailure; Azure says AuthenticationFailed (the stub below).
    assert output == (f"error: the storage account of AzureWebJobsStorage (http://127.0.0.1:{azurite.blob_port}/"
                      f"{ACCOUNT}) refused access (AuthorizationFailure) - check the account's Networking (firewall) "
                      "settings and what the credential may do: it needs to create containers, queues and blobs")
    assert wrong[:12] not in output and "Traceback" not in output


def test_a_sas_without_the_rights_to_create_is_named_and_not_shown(azurite):
    sas = generate_account_sas(ACCOUNT, KEY, ResourceTypes(object=True), AccountSasPermissions(read=True),
                               expiry=time.time() + 3600)
    base = "http://127.0.0.1:{}/" + ACCOUNT
    storage = (f"BlobEndpoint={base.format(azurite.blob_port)};QueueEndpoint={base.format(azurite.queue_port)};"
               f"SharedAccessSignature={sas}")
    with pytest.raises(StorageUnreachable) as info:
        open_backend(load_settings({"AzureWebJobsStorage": storage}))
    assert str(info.value).startswith(f"the storage account of AzureWebJobsStorage ({base.format(azurite.blob_port)}) "
                                      "refused access (AuthorizationResourceTypeMismatch) - ")
    assert "sig=" not in str(info.value) and sas.split("sig=")[1][:10] not in str(info.value)


class Refusing(BaseHTTPRequestHandler):
    """A storage endpoint that answers every request as Azure refuses one: ``status`` and ``code``."""

    status, code = 403, "AuthenticationFailed"

    def do_PUT(self) -> None:  # create container / create queue
        body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{self.code}</Code><Message>refused\n'
                f'RequestId:0</Message></Error>').encode()
        self.send_response(self.status)
        self.send_header("x-ms-error-code", self.code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("status", "code", "said"), [
    (403, "AuthenticationFailed",
     "refused the credential (AuthenticationFailed) - check the AccountKey or SAS in AzureWebJobsStorage"),
    (403, "AuthorizationPermissionMismatch",
     ("refused access (AuthorizationPermissionMismatch): the identity lacks a storage role - it needs Storage Blob "
      "Data Owner and Storage Queue Data Contributor on the account")),
    (403, "AuthorizationFailure",
     ("refused access (AuthorizationFailure) - check the account's Networking (firewall) settings and what the "
      "credential may do: it needs to create containers, queues and blobs")),
    (503, "ServerBusy", "answered 503 ServerBusy - check the setting and the network"),
])
def test_refusals_of_the_service_are_named_by_their_error_code(status, code, said):
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (Refusing,), {"status": status, "code": code}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/{ACCOUNT}"
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnreachable) as info:
            azure_clients(connection_string(base), queue_name="q-x")
    finally:
        server.shutdown()
        server.server_close()
    assert str(info.value) == f"the storage account of AzureWebJobsStorage ({base}) {said}"
    assert time.monotonic() - started < 2  # a 503 is not retried by the probe either


class NoSignIn:
    """A credential that cannot get a token (no az login, no managed identity), as azure-identity fails."""

    def get_token(self, *scopes, **kwargs):
        raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token from the included "
                                        "credentials.\nAttempted credentials:\n\tAzureCliCredential: Please run 'az login'")

    def get_token_info(self, *scopes, **kwargs):
        return self.get_token(*scopes, **kwargs)


def test_an_identity_that_cannot_sign_in_is_named_with_what_to_do():
    started = time.monotonic()
    with pytest.raises(StorageUnreachable) as info:
        azure_clients(None, account_name="entraassetsstore", credential=NoSignIn(), queue_name="q-x")
    assert time.monotonic() - started < 2  # no request went out: the token is needed first
    assert str(info.value) == (
        "the storage account of AzureWebJobsStorage__accountName (https://entraassetsstore.blob.core.windows.net) "
        "cannot be reached: no identity could sign in to it - sign in with az login, or in Azure set "
        "AzureWebJobsStorage__credential=managedidentity (AzureWebJobsStorage__clientId for a user-assigned identity)")
    assert "\n" not in str(info.value)


def test_the_timer_raises_the_same_clear_error(peers):
    endpoint, reason = peers["silent"]
    started = time.monotonic()
    with pytest.raises(StorageUnreachable, match=re.escape(f"AzureWebJobsStorage ({endpoint}) {reason} - ")):
        timer_tick(load_settings({"AzureWebJobsStorage": connection_string(endpoint)}))
    assert time.monotonic() - started < 4  # one 2 s read timeout, no back-off
