"""Shared fixtures. Each fixtures_* module owns one kind of real part (Azurite, the emulators)."""
from tests.fixtures_assets import assets_emulator  # noqa: F401
from tests.fixtures_azurite import app_storage, azurite  # noqa: F401
from tests.fixtures_graph import graph_emulator, tenant  # noqa: F401
