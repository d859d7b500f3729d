"""The sandbox: a synthetic tenant plus the emulators on loopback, and the settings that point at them."""
from __future__ import annotations

from dataclasses import dataclass

from sandbox.assets.emulator import AssetsEmulator
from sandbox.assets.objects import AssetsObjectApi
from sandbox.eventgrid.emulator import EventGridEmulator
from sandbox.graph.emulator import GraphEmulator
from sandbox.jira.emulator import SITE_EMAIL, SITE_TOKEN, JiraEmulator, accounts_for
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.model import Tenant

GRAPH_TOKEN = "sandbox-graph-token"
IMPORT_TOKEN = "sandbox-import-token"
MANAGEMENT_TOKEN = "sandbox-management-token"
# ASSETS_OBJECT_LIMIT of the emulated site: it bought extra objects, enough for the million-user bench tenant
# (1.9 million objects); the allowance's own tests set theirs.
OBJECT_ALLOWANCE = "5000000"
AZURE_SUBSCRIPTION = "8a8a8a8a-4b4b-4c4c-4d4d-12e12e12e12e"   # the emulated Azure subscription of Event Grid
RESOURCE_GROUP = "rg-entra-assets"
PARTNER_TOPIC = "entra-assets-sandbox"
DELIVERY_IDENTITY = (f"/subscriptions/{AZURE_SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                     "Microsoft.ManagedIdentity/userAssignedIdentities/id-eventgrid-sandbox")


@dataclass
class Sandbox:
    """A running sandbox. ``settings()`` gives the environment for entra-assets; ``stop()`` ends it."""

    tenant: Tenant
    graph: GraphEmulator
    assets: AssetsEmulator
    jira: JiraEmulator | None = None   # Jira site (user search) + the Assets object API, when linking is on
    event_grid: EventGridEmulator | None = None  # Azure Resource Manager's Event Grid + delivery to the queue

    def settings(self) -> dict[str, str]:
        """App settings (environment variables) that aim entra-assets at the emulators. ``AZURE_TENANT_ID`` is
        the tenant's id, as in Azure: unused with the fixed token, but the webhook refuses notifications of
        any other tenant (``shared.produce.notifications``) and the emulated Graph names this one in each."""
        return {"AZURE_TENANT_ID": self.tenant.tenant_id, "GRAPH_BASE_URL": self.graph.base_url,
                "GRAPH_ACCESS_TOKEN": GRAPH_TOKEN, "ASSETS_API_URL": self.assets.url,
                "ASSETS_IMPORT_TOKEN": IMPORT_TOKEN, "ASSETS_OBJECT_LIMIT": OBJECT_ALLOWANCE} | self.jira_settings()

    def jira_settings(self) -> dict[str, str]:
        """JIRA_* settings (linking on) when the sandbox emulates a Jira site; {} otherwise."""
        if self.jira is None:
            return {}
        return {"JIRA_SITE_URL": self.jira.url, "JIRA_EMAIL": SITE_EMAIL, "JIRA_API_TOKEN": SITE_TOKEN,
                "JIRA_REQUESTS_PER_SECOND": "500"}

    def event_grid_settings(self) -> dict[str, str]:
        """NOTIFICATION_DELIVERY=eventgrid and where the partner topic lives in the emulated Azure subscription
        (the app settings infra/main.bicep sets, plus the emulator's Resource Manager and token)."""
        if self.event_grid is None:
            raise RuntimeError("this sandbox was started without Event Grid (start_sandbox(event_grid=True))")
        return {"NOTIFICATION_DELIVERY": "eventgrid", "EVENTGRID_PARTNER_TOPIC": PARTNER_TOPIC,
                "EVENTGRID_SUBSCRIPTION_ID": AZURE_SUBSCRIPTION, "EVENTGRID_RESOURCE_GROUP": RESOURCE_GROUP,
                "EVENTGRID_LOCATION": "westeurope", "AZURE_RESOURCE_MANAGER_URL": self.event_grid.url,
                "EVENTGRID_DELIVERY_IDENTITY": DELIVERY_IDENTITY,
                "AZURE_MANAGEMENT_TOKEN": MANAGEMENT_TOKEN}

    def stop(self) -> None:
        if self.event_grid is not None:
            self.event_grid.stop()
        self.graph.stop()
        self.assets.stop()
        if self.jira is not None:
            self.jira.stop()


def start_sandbox(users: int = 2000, seed: int = 1, graph_port: int = 0, assets_port: int = 0,
                  tenant: Tenant | None = None, jira: bool = False, event_grid: bool = False) -> Sandbox:
    """Generate (or take) a tenant and start both emulators; ports 0 pick free ones. With ``jira``, also a Jira
    site with Atlassian accounts for most users (``sandbox.jira.emulator``) and the Assets object API. With
    ``event_grid``, also Event Grid (``sandbox.eventgrid.emulator``): the Graph emulator publishes the events of
    EventGrid: subscriptions to it, and the Microsoft Graph API partner is authorized on ``RESOURCE_GROUP``."""
    tenant = tenant or generate_tenant(users=users, seed=seed)
    graph = GraphEmulator(tenant, token=GRAPH_TOKEN).start(port=graph_port)
    assets = AssetsEmulator(token=IMPORT_TOKEN).start(port=assets_port)
    site = None
    if jira:
        site = JiraEmulator(accounts_for(tenant, seed), assets.workspace_id).start()
        assets.object_api = AssetsObjectApi(assets, SITE_EMAIL, SITE_TOKEN, site.is_active_account)
    grid = None
    if event_grid:
        grid = EventGridEmulator(AZURE_SUBSCRIPTION, MANAGEMENT_TOKEN).start()
        grid.authorize_graph(RESOURCE_GROUP)  # what infra/eventgrid.bicep's partner configuration does
        graph.subscriptions.event_grid = grid
    return Sandbox(tenant, graph, assets, site, grid)
