"""The sandbox: a synthetic tenant plus both emulators on loopback, and the settings that point at them."""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.assets_emulator import AssetsEmulator
from sandbox.graph_emulator import GraphEmulator
from sandbox.tenant import Tenant, generate_tenant

GRAPH_TOKEN = "sandbox-graph-token"
IMPORT_TOKEN = "sandbox-import-token"


@dataclass
class Sandbox:
    """A running sandbox. ``settings()`` gives the environment for entra-assets; ``stop()`` ends it."""

    tenant: Tenant
    graph: GraphEmulator
    assets: AssetsEmulator

    def settings(self) -> dict[str, str]:
        """App settings (environment variables) that aim entra-assets at the emulators."""
        return {"GRAPH_BASE_URL": self.graph.base_url, "GRAPH_ACCESS_TOKEN": GRAPH_TOKEN,
                "ASSETS_API_URL": self.assets.url, "ASSETS_IMPORT_TOKEN": IMPORT_TOKEN}

    def stop(self) -> None:
        self.graph.stop()
        self.assets.stop()


def start_sandbox(users: int = 2000, seed: int = 1, graph_port: int = 0, assets_port: int = 0,
                  tenant: Tenant | None = None) -> Sandbox:
    """Generate (or take) a tenant and start both emulators; ports 0 pick free ones."""
    tenant = tenant or generate_tenant(users=users, seed=seed)
    graph = GraphEmulator(tenant, token=GRAPH_TOKEN).start(port=graph_port)
    assets = AssetsEmulator(token=IMPORT_TOKEN).start(port=assets_port)
    return Sandbox(tenant, graph, assets)
