"""Fixtures: a small synthetic tenant, the Microsoft Graph emulator serving it on loopback over real HTTP, and the
identity emulator whose tokens it accepts by their roles (``identity``, ``app_token``)."""
from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator

import httpx
import pytest

from sandbox.emulators import GRAPH_TOKEN
from sandbox.graph.emulator import GraphEmulator
from sandbox.identity.emulator import SYNC_APP_ROLES, IdentityEmulator
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.model import Tenant


@pytest.fixture
def tenant() -> Tenant:
    """300 users (seed 7) with 15 groups, 240 devices and 6 service principals (the default scaling): small
    enough to keep tests fast, still with every odd case of the generator (All Staff split over delta pages,
    the nested group, device and contact members, devices and apps without owners, ...)."""
    return generate_tenant(users=300, seed=7)


@pytest.fixture
def graph_emulator(tenant: Tenant) -> Iterator[GraphEmulator]:
    """The emulator serving ``tenant`` with the sandbox token ``sandbox-graph-token``; stopped after the test."""
    emulator = GraphEmulator(tenant, token=GRAPH_TOKEN).start(port=0)
    yield emulator
    emulator.stop()


@pytest.fixture
def identity(tenant: Tenant, graph_emulator: GraphEmulator) -> Iterator[IdentityEmulator]:
    """The identity emulator of ``tenant`` over TLS, attached to ``graph_emulator`` (which then accepts its
    tokens by their roles); the sync app is granted ``SYNC_APP_ROLES``. Stopped after the test."""
    emulator = IdentityEmulator(tenant).start()
    emulator.attach(graph_emulator)
    emulator.grant(emulator.sync_app_id(), *SYNC_APP_ROLES)
    yield emulator
    emulator.stop()


def app_token(identity: IdentityEmulator, graph: GraphEmulator, app_id: str | None = None) -> str:
    """A client-credentials token for ``app_id`` (default: the sync app) from ``identity`` for ``graph``,
    carrying the roles granted at this moment: POSTed to the token endpoint over TLS as MSAL would."""
    app_id = app_id or identity.sync_app_id()
    secret = identity.add_secret(app_id, dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    response = httpx.post(f"{identity.url}/{identity.tenant.tenant_id}/oauth2/v2.0/token",
                          data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
                                "scope": graph.base_url.removesuffix("/v1.0") + "/.default"},
                          verify=ssl.create_default_context(cafile=str(identity.ca_file)), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]
