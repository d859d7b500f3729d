"""Is Event Grid delivery ready (NOTIFICATION_DELIVERY=eventgrid)? ``setup`` makes it so as far as the app can
(``ensure_event_grid``: activates the partner topic Graph created); ``check`` and ``status`` only look
(``event_grid_status``). Both say, one line each, what an admin must do about what is missing:

- the topic does not exist: Graph creates it with the first subscription (``setup``), if the Microsoft Graph API
  partner is authorized on the resource group (infra/eventgrid.bicep);
- the topic is not activated: events do not flow until it is (``setup`` activates it);
- no event subscription of the topic delivers to SYNC_QUEUE_NAME: the second deployment of README step 3b;
- the app's identity lacks the EventGrid Contributor role (``shared.clients.event_grid``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.clients.event_grid import ACTIVATED, PartnerTopic
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
    """``setup``: activate the partner topic when it is not, then report as ``event_grid_status``. Raises
    ``EventGridError`` when the topic cannot be read or activated (a missing role, a refused credential)."""
    topic = topic or PartnerTopic(settings)
    found = topic.get()
    activated = False
    if found is not None and found["activationState"] != ACTIVATED:
        topic.activate()
        activated = True
    report = _report(settings, topic)
    if activated and report.activation == ACTIVATED:
        report.lines.insert(0, f"Event Grid: partner topic {settings.eventgrid_partner_topic} activated")
    return report


def event_grid_status(settings: Settings, topic: PartnerTopic | None = None) -> EventGridReport:
    """``check``/``status``: what is there, changing nothing; a refusal is one of the report's problems."""
    try:
        return _report(settings, topic or PartnerTopic(settings))
    except EventGridError as error:
        return EventGridReport(settings.eventgrid_partner_topic or "", problems=[str(error)])


def _report(settings: Settings, topic: PartnerTopic) -> EventGridReport:
    name, group = settings.eventgrid_partner_topic or "", settings.eventgrid_resource_group
    report = EventGridReport(name)
    found = topic.get()
    if found is None:
        report.problems.append(
            f"Event Grid: partner topic {name} does not exist in resource group {group} yet: `entra-assets setup` "
            "has Graph create it (the Microsoft Graph API partner must be authorized there: infra/eventgrid.bicep)")
        return report
    report.activation = found["activationState"]
    if report.activation != ACTIVATED:
        report.problems.append(f"Event Grid: partner topic {name} is {report.activation}, so no events flow: run "
                               "`entra-assets setup` to activate it")
    deliveries = topic.deliveries()
    report.queues = sorted({d.queue for d in deliveries if d.queue})
    account = settings.storage_account_name
    ours = [d for d in deliveries if d.queue == settings.queue_name
            and (account is None or (d.storage_account or "").casefold() == account.casefold())]
    if not ours:
        report.problems.append(
            f"Event Grid: no event subscription of partner topic {name} delivers to the queue {settings.queue_name}"
            + (f" of storage account {account}" if account else "")
            + f": deploy infra/main.bicep again with partnerTopicName={name} (README, Deploy to Azure, step 3b)")
    if report.ready:
        report.lines.append(f"Event Grid: partner topic {name} {ACTIVATED}, delivering to {settings.queue_name} "
                            f"({', '.join(d.name for d in ours)})")
    return report
