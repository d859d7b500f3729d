"""The Event Grid partner topic Graph delivers to (NOTIFICATION_DELIVERY=eventgrid), through Azure Resource
Manager with ``azure-mgmt-eventgrid`` (api-version 2025-02-15).

Graph creates the partner topic when the first subscription names it (``shared.produce.subscriptions``); it
must then be activated before events flow, and an event subscription on it delivers them to the sync queue
(deployed by ``infra/eventgrid.bicep``: https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events).
``PartnerTopic`` reads the topic and its event subscriptions, activates it, and delivers it to the queue (the
delivery identity attached to the topic, then the event subscription); every refusal becomes an
``EventGridError`` that names the role, the resource group or the topic to fix.

The credential is the app's own Azure identity, not the Graph app registration: the EventGrid Contributor role
is the function app's managed identity's (infra/eventgrid.bicep). So: AZURE_MANAGEMENT_TOKEN when set (a fixed
token: sandboxes, ``az account get-access-token``), else the managed identity (in Azure), else the Azure CLI
login of the admin running ``setup`` or ``status``. Tokens go to AZURE_RESOURCE_MANAGER_URL only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.errors import EventGridError
from shared.settings import Settings

ACTIVATED = "Activated"
DELIVERY = "entra-assets-queue"   # the event subscription's name, as infra/eventgrid.bicep names it
QUEUE_MESSAGE_TTL = 86400         # a day, like Event Grid's own retry horizon (infra/eventgrid.bicep)


@dataclass(frozen=True)
class QueueDelivery:
    """Where one event subscription of the topic delivers: a storage account's queue, or elsewhere (``queue``
    None: not a storage queue)."""

    name: str
    queue: str | None
    storage_account: str | None     # the account's name, from its resource id


class _FixedToken:
    """A ``TokenCredential`` for AZURE_MANAGEMENT_TOKEN."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes: str, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def management_credential(settings: Settings):
    """The credential for Azure Resource Manager (module docstring)."""
    if settings.management_access_token:
        return _FixedToken(settings.management_access_token.reveal())
    from azure.identity import AzureCliCredential, ChainedTokenCredential, ManagedIdentityCredential

    # ManagedIdentityCredential without client_id is the system-assigned identity; it does not read
    # AZURE_CLIENT_ID (the Graph app registration's id), which DefaultAzureCredential would take for a
    # user-assigned identity.
    return ChainedTokenCredential(ManagedIdentityCredential(), AzureCliCredential())


class PartnerTopic:
    """The partner topic EVENTGRID_PARTNER_TOPIC in EVENTGRID_RESOURCE_GROUP of EVENTGRID_SUBSCRIPTION_ID."""

    def __init__(self, settings: Settings, credential=None):
        from azure.mgmt.eventgrid import EventGridManagementClient

        self.settings = settings
        self.name, self.group = settings.eventgrid_partner_topic, settings.eventgrid_resource_group
        base = settings.resource_manager_url
        parts = urlsplit(base)
        self._client = EventGridManagementClient(
            credential or management_credential(settings), settings.eventgrid_subscription_id, base_url=base,
            credential_scopes=[f"{parts.scheme}://{parts.netloc}/.default"], retry_total=2)
        # azure-core refuses a bearer token over plain http; settings allow http only on loopback (emulators).
        self._options = {"enforce_https": False} if parts.scheme == "http" else {}

    def get(self) -> dict | None:
        """The topic as ARM returns it ({"activationState", "provisioningState", ...}); None when Graph has not
        created it (yet)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            topic = self._call("Microsoft.EventGrid/partnerTopics/read",
                               lambda: self._client.partner_topics.get(self.group, self.name, **self._options))
        except ResourceNotFoundError:
            return None
        return {"activationState": topic.activation_state, "provisioningState": topic.provisioning_state,
                "source": topic.source}

    def activate(self) -> str:
        """Activate the topic; returns its activation state afterwards."""
        topic = self._call("Microsoft.EventGrid/partnerTopics/activate/action",
                           lambda: self._client.partner_topics.activate(self.group, self.name, **self._options))
        return topic.activation_state

    def deliver_to_queue(self, identity: str, account_id: str, queue: str) -> None:
        """Deliver every event of the topic as CloudEvents to ``queue`` of the storage account ``account_id``,
        authenticated as the user-assigned ``identity``: first attach it to the topic (Event Grid delivers with
        "the managed identity setup on the parent resource"), then create or update the event subscription
        ``DELIVERY``, as infra/eventgrid.bicep does (https://learn.microsoft.com/azure/event-grid/
        handler-storage-queues). No event-type filter: the lifecycle type names are UNCONFIRMED, and the worker
        refuses any type it does not know."""
        from azure.mgmt.eventgrid import models

        topic = self._call("Microsoft.EventGrid/partnerTopics/read",
                           lambda: self._client.partner_topics.get(self.group, self.name, **self._options))
        attached = dict((topic.identity.user_assigned_identities or {}) if topic.identity else {})
        if identity.casefold() not in {k.casefold() for k in attached}:
            attached[identity] = models.UserIdentityProperties()
            self._call("Microsoft.ManagedIdentity/userAssignedIdentities/assign/action", lambda: (
                self._client.partner_topics.update(self.group, self.name, models.PartnerTopicUpdateParameters(
                    identity=models.IdentityInfo(type="UserAssigned", user_assigned_identities=attached)),
                    **self._options)))
        subscription = models.EventSubscription(
            event_delivery_schema="CloudEventSchemaV1_0",
            delivery_with_resource_identity=models.DeliveryWithResourceIdentity(
                identity=models.EventSubscriptionIdentity(type="UserAssigned", user_assigned_identity=identity),
                destination=models.StorageQueueEventSubscriptionDestination(
                    resource_id=account_id, queue_name=queue, queue_message_time_to_live_in_seconds=QUEUE_MESSAGE_TTL)))
        self._call("Microsoft.EventGrid/partnerTopics/eventSubscriptions/write", lambda: (
            self._client.partner_topic_event_subscriptions.begin_create_or_update(
                self.group, self.name, DELIVERY, subscription, **self._options).result()))

    def deliveries(self) -> list[QueueDelivery]:
        """Every event subscription of the topic and where it delivers."""
        found = self._call("Microsoft.EventGrid/partnerTopics/eventSubscriptions/read", lambda: list(
            self._client.partner_topic_event_subscriptions.list_by_partner_topic(self.group, self.name,
                                                                                 **self._options)))
        out = []
        for sub in found:
            destination = sub.delivery_with_resource_identity.destination \
                if sub.delivery_with_resource_identity else sub.destination
            queue = getattr(destination, "queue_name", None)
            account = getattr(destination, "resource_id", None)
            out.append(QueueDelivery(sub.name, queue, account.rstrip("/").rsplit("/", 1)[-1] if account else None))
        return out

    def _call(self, action: str, call):
        """``call()``, with ARM's refusals as one actionable ``EventGridError`` each."""
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        try:
            return call()
        except ResourceNotFoundError:
            raise
        except ClientAuthenticationError as error:
            if getattr(error, "status_code", None) == 403:
                raise self._denied(action) from None
            raise EventGridError(f"Azure Resource Manager refused the app's credential ({_reason(error)}): in "
                                 "Azure the function app's managed identity signs in; from a shell, `az login` "
                                 "(or set AZURE_MANAGEMENT_TOKEN)") from None
        except HttpResponseError as error:
            if error.status_code == 403:
                raise self._denied(action) from None
            raise EventGridError(f"Azure Resource Manager answered {error.status_code} for partner topic "
                                 f"{self.name} ({_reason(error)})") from None

    def _denied(self, action: str) -> EventGridError:
        if action.startswith("Microsoft.ManagedIdentity/"):
            return EventGridError(
                f"the signed-in Azure identity may not attach the delivery identity to partner topic {self.name} "
                f"({action}): run `entra-assets setup` as an Owner of resource group {self.group}, or give your "
                "identity the Managed Identity Operator role on the delivery identity")
        return EventGridError(
            f"the app's Azure identity may not {action} on resource group {self.group}: assign it the "
            "EventGrid Contributor role there (infra/eventgrid.bicep does; a new role assignment can take a few "
            "minutes to apply)")


def _reason(error) -> str:
    """ARM's error code, or the exception's type: never the message, which may quote a token's claims."""
    code = getattr(getattr(error, "error", None), "code", None)
    return str(code) if code else type(error).__name__
