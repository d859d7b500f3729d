"""The ``azurite`` fixture: a real Azurite (blob, queue, table) on free loopback ports, one per test process.

Under pytest-xdist each worker starts its own on its own ports. Reference: shared/reference/azure-functions.md
§5 ("Azurite recipe"): ``--skipApiVersionCheck`` is required because azure-storage-queue 12.18 sends an API
version newer than Azurite 3.35 knows.
"""
from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.storage.blob import BlobLeaseClient, ContainerClient

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# The documented, public development-storage key (not a secret):
# https://learn.microsoft.com/azure/storage/common/storage-use-azurite#well-known-storage-account-and-key
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Azurite:
    """A running Azurite: its ports and an explicit connection string for the Azure SDKs."""

    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1:{}/" + ACCOUNT
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={base.format(self.blob_port)};QueueEndpoint={base.format(self.queue_port)};"
                f"TableEndpoint={base.format(self.table_port)};")


@pytest.fixture
def app_storage(azurite: Azurite) -> dict[str, str]:
    """App settings for a test of the Functions app on Azurite: its own queues, and the app's state container
    ("entra-assets") emptied first - Azurite lives for the whole session, the state must not."""
    container = ContainerClient.from_connection_string(azurite.connection_string, "entra-assets")
    if container.exists():
        blobs = list(container.list_blobs())
        for blob in blobs:  # a lease a killed holder left (a segment's, a writer's) would refuse the delete
            if blob.lease.state == "leased":
                BlobLeaseClient(container.get_blob_client(blob.name)).break_lease(lease_break_period=0)
        names = [blob.name for blob in blobs]
        for i in range(0, len(names), 250):  # a batch delete takes at most 256 blobs
            container.delete_blobs(*names[i:i + 250])
    return {"AzureWebJobsStorage": azurite.connection_string, "SYNC_QUEUE_NAME": f"q{uuid.uuid4().hex[:12]}",
            "RUN_QUEUE_NAME": f"r{uuid.uuid4().hex[:12]}"}


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out; held open together so the three differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Start Azurite (in-memory) and yield it; fails with a hint when ``make install`` has not been run."""
    if not AZURITE.exists():
        pytest.fail(f"{AZURITE} is missing: run `make install` (it runs `npm install`, which installs Azurite)",
                    pytrace=False)
    blob, queue, table = _free_ports(3)
    log_path = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(blob), "--queueHost", "127.0.0.1",
             "--queuePort", str(queue), "--tableHost", "127.0.0.1", "--tablePort", str(table),
             "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=log_path.parent)
    try:
        _wait_until_up(process, (blob, queue, table), log_path)
        yield Azurite(blob, queue, table)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(process: subprocess.Popen, ports: tuple[int, ...], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not all(_answers(p) for p in ports):
        if process.poll() is not None:
            pytest.fail(f"Azurite exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}",
                        pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"Azurite did not answer on {ports} within {START_TIMEOUT}s", pytrace=False)
        time.sleep(0.05)
