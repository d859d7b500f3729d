"""Fixtures: a small synthetic tenant and the Microsoft Graph emulator serving it on loopback over real HTTP."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.emulators import GRAPH_TOKEN
from sandbox.graph.emulator import GraphEmulator
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
