"""Fixture: the JSM Assets Imports REST API emulator, on loopback over real HTTP."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.assets.emulator import AssetsEmulator


@pytest.fixture
def assets_emulator() -> Iterator[AssetsEmulator]:
    """A started emulator with the default token ``sandbox-import-token``; stopped after the test."""
    emulator = AssetsEmulator().start()
    yield emulator
    emulator.stop()
