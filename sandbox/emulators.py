"""The sandbox: a synthetic tenant plus both emulators on loopback, and the settings that point at them."""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.assets.emulator import AssetsEmulator
from sandbox.assets.objects import AssetsObjectApi
from sandbox.graph.emulator import GraphEmulator
from sandbox.jira.emulator import SITE_EMAIL, SITE_TOKEN, JiraEmulator, accounts_for
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.model import Tenant

GRAPH_TOKEN = "sandbox-graph-token"
IMPORT_TOKEN = "sandbox-import-token"


@dataclass
class Sandbox:
    """A running sandbox. ``settings()`` gives the environment for entra-assets; ``stop()`` ends it."""

    tenant: Tenant
    graph: GraphEmulator
    assets: AssetsEmulator
    jira: JiraEmulator | None = None   # Jira site (user search) + the Assets object API, when linking is on

    def settings(self) -> dict[str, str]:
        """App settings (environment variables) that aim entra-assets at the emulators. ``AZURE_TENANT_ID`` is
        the tenant's id, as in Azure: unused with the fixed token, but the webhook refuses notifications of
        any other tenant (``shared.produce.notifications``) and the emulated Graph names this one in each."""
        return {"AZURE_TENANT_ID": self.tenant.tenant_id, "GRAPH_BASE_URL": self.graph.base_url,
                "GRAPH_ACCESS_TOKEN": GRAPH_TOKEN,
                "ASSETS_API_URL": self.assets.url, "ASSETS_IMPORT_TOKEN": IMPORT_TOKEN} | self.jira_settings()

    def jira_settings(self) -> dict[str, str]:
        """JIRA_* settings (linking on) when the sandbox emulates a Jira site; {} otherwise."""
        if self.jira is None:
            return {}
        return {"JIRA_SITE_URL": self.jira.url, "JIRA_EMAIL": SITE_EMAIL, "JIRA_API_TOKEN": SITE_TOKEN,
                "JIRA_REQUESTS_PER_SECOND": "500"}

    def stop(self) -> None:
        self.graph.stop()
        self.assets.stop()
        if self.jira is not None:
            self.jira.stop()


def start_sandbox(users: int = 2000, seed: int = 1, graph_port: int = 0, assets_port: int = 0,
                  tenant: Tenant | None = None, jira: bool = False) -> Sandbox:
    """Generate (or take) a tenant and start both emulators; ports 0 pick free ones. With ``jira``, also a Jira
    site with Atlassian accounts for most users (``sandbox.jira.emulator``) and the Assets object API."""
    tenant = tenant or generate_tenant(users=users, seed=seed)
    graph = GraphEmulator(tenant, token=GRAPH_TOKEN).start(port=graph_port)
    assets = AssetsEmulator(token=IMPORT_TOKEN).start(port=assets_port)
    site = None
    if jira:
        site = JiraEmulator(accounts_for(tenant, seed), assets.workspace_id).start()
        assets.object_api = AssetsObjectApi(assets, SITE_EMAIL, SITE_TOKEN, site.is_active_account)
    return Sandbox(tenant, graph, assets, site)
