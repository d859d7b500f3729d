"""Is Event Grid delivery ready (NOTIFICATION_DELIVERY=eventgrid)? ``setup`` makes it so (``ensure_event_grid``:
activates the partner topic Graph created and, with EVENTGRID_DELIVERY_IDENTITY, delivers it to the sync queue);
``check`` and ``status`` only look (``event_grid_status``). Both say, one line each, what an admin must do about
what is missing:

- the topic does not exist: Graph creates it with the first subscription (``setup``), if the Microsoft Graph API
  partner is authorized on the resource group (infra/eventgrid.bicep);
- the topic is not activated: events do not flow until it is (``setup`` activates it);
- no event subscription of the topic delivers to SYNC_QUEUE_NAME: ``setup`` creates it when it knows the
  delivery identity (EVENTGRID_DELIVERY_IDENTITY) and the storage account; else the second deployment of
  README step 3b;
- the app's identity lacks the EventGrid Contributor role (``shared.clients.event_grid``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.clients.event_grid import ACTIVATED, DELIVERY, PartnerTopic
from shared.errors import EventGridError
from shared.settings import Settings


@dataclass
class EventGridReport:
    """``ready`` when events reach the sync queue; ``lines`` say what was found and done, ``problems`` what an
    admin must fix (empty when ready)."""

    topic: str
    activation: str | None = None          # the topic's activationState; None: the topic does not exist
    queues: list[str] = field(default_factory=list)   # the queues its event subscriptions deliver to
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"partner_topic": self.topic, "activation": self.activation, "queues": self.queues,
                "ready": self.ready, "problems": self.problems}


def ensure_event_grid(settings: Settings, topic: PartnerTopic | None = None) -> EventGridReport:
    """``setup``: activate the partner topic when it is not, deliver it to the sync queue when no event
    subscription does and the delivery identity and storage account are known, then report as
    ``event_grid_status``. Raises ``EventGridError`` when a step is refused (a missing role, a credential)."""
    topic = topic or PartnerTopic(settings)
    found, done = topic.get(), []
    deliveries = topic.deliveries() if found is not None else []
    if found is not None and found["activationState"] != ACTIVATED:
        found = {**found, "activationState": topic.activate()}
        done.append(f"Event Grid: partner topic {settings.eventgrid_partner_topic} activated")
    account = queue_account_id(settings)
    if found is not None and settings.eventgrid_delivery_identity and account and not _ours(settings, deliveries):
        topic.deliver_to_queue(settings.eventgrid_delivery_identity, account, settings.queue_name)
        deliveries = topic.deliveries()  # as ARM now has them
        done.append(f"Event Grid: event subscription {DELIVERY} created: partner topic "
                    f"{settings.eventgrid_partner_topic} delivers to {settings.queue_name}")
    report = _report(settings, found, deliveries)
    report.lines[:0] = done
    return report


def queue_account_id(settings: Settings) -> str | None:
    """The resource id of the storage account holding the sync queue: the one AzureWebJobsStorage names, in the
    partner topic's subscription and resource group (where infra/main.bicep deploys both); None for the
    embedded store, which Event Grid cannot reach."""
    name = settings.storage_account_name
    if name is None and settings.storage_connection_string:
        fields = dict(part.split("=", 1) for part in settings.storage_connection_string.reveal().split(";")
                      if "=" in part)
        name = fields.get("AccountName")
    if not name:
        return None
    return (f"/subscriptions/{settings.eventgrid_subscription_id}/resourceGroups/{settings.eventgrid_resource_group}"
            f"/providers/Microsoft.Storage/storageAccounts/{name}")


def _ours(settings: Settings, deliveries: list) -> list:
    """The event subscriptions that deliver to the sync queue (of AzureWebJobsStorage's account, when named)."""
    account = settings.storage_account_name
    return [d for d in deliveries if d.queue == settings.queue_name
            and (account is None or (d.storage_account or "").casefold() == account.casefold())]


def event_grid_status(settings: Settings, topic: PartnerTopic | None = None) -> EventGridReport:
    """``check``/``status``: what is there, changing nothing; a refusal is one of the report's problems."""
    topic = topic or PartnerTopic(settings)
    try:
        found = topic.get()
        return _report(settings, found, topic.deliveries() if found is not None else [])
    except EventGridError as error:
        return EventGridReport(settings.eventgrid_partner_topic or "", problems=[str(error)])


def _report(settings: Settings, found: dict | None, deliveries: list) -> EventGridReport:
    """What ``found`` (the topic, None: not created) and its ``deliveries`` mean for the app. Pure."""
    name, group = settings.eventgrid_partner_topic or "", settings.eventgrid_resource_group
    report = EventGridReport(name)
    if found is None:
        report.problems.append(
            f"Event Grid: partner topic {name} does not exist in resource group {group} yet: `entra-assets setup` "
            "has Graph create it (the Microsoft Graph API partner must be authorized there: infra/eventgrid.bicep)")
        return report
    report.activation = found["activationState"]
    if report.activation != ACTIVATED:
        report.problems.append(f"Event Grid: partner topic {name} is {report.activation}, so no events flow: run "
                               "`entra-assets setup` to activate it")
    report.queues = sorted({d.queue for d in deliveries if d.queue})
    ours = _ours(settings, deliveries)
    if not ours:
        account = settings.storage_account_name
        fix = ("run `entra-assets setup` (it creates it)" if settings.eventgrid_delivery_identity
               and queue_account_id(settings) else "set EVENTGRID_DELIVERY_IDENTITY (the template's output "
               f"eventGridDeliveryIdentityId) and run `entra-assets setup`, or deploy infra/main.bicep again with "
               f"partnerTopicName={name} (README, Deploy to Azure, step 3b)")
        report.problems.append(
            f"Event Grid: no event subscription of partner topic {name} delivers to the queue {settings.queue_name}"
            + (f" of storage account {account}" if account else "") + f": {fix}")
    if report.ready:
        report.lines.append(f"Event Grid: partner topic {name} {ACTIVATED}, delivering to {settings.queue_name} "
                            f"({', '.join(d.name for d in ours)})")
    return report
