"""Shared fixtures. Each fixtures_* module owns one kind of real part (Azurite, the emulators)."""
import pytest

from sandbox.emulators import Sandbox
from tests.fixtures_assets import assets_emulator  # noqa: F401
from tests.fixtures_azurite import app_storage, azurite  # noqa: F401
from tests.fixtures_graph import graph_emulator, tenant  # noqa: F401


@pytest.fixture
def box(tenant, graph_emulator, assets_emulator) -> Sandbox:  # noqa: F811 - the fixtures above, by name
    """This test's emulators as one ``Sandbox``: ``box.settings()`` points the app at them."""
    return Sandbox(tenant, graph_emulator, assets_emulator)


@pytest.fixture
def app_env(box, app_storage, monkeypatch) -> dict[str, str]:  # noqa: F811
    """The Functions app's settings for ``box`` on Azurite (its own queue, an emptied state container), set in
    the environment as the host would; a test adds its own with ``{**app_env, ...}`` and ``monkeypatch``."""
    env = {**box.settings(), **app_storage}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def cli(box, tmp_path, monkeypatch):
    """``cli("sync", "--full", SETTING="value")``: the ``entra-assets`` command against ``box`` with an embedded
    store in ``tmp_path``; keyword arguments are set in the environment first (and stay for later calls).
    ``cli.box`` is the sandbox."""
    from click.testing import CliRunner

    from shared.cli import main

    for name, value in {**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)

    def invoke(*args, **env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return CliRunner().invoke(main, list(args))
    invoke.box = box
    return invoke
