"""notificationDelivery = eventgrid in infra/: the parameter and its switches in main.bicep, and eventgrid.bicep's
partner authorization, roles (least privilege, each on the narrowest scope that exists in time) and the event
subscription from the partner topic to the sync queue."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "infra" / "main.bicep"
EVENTGRID = ROOT / "infra" / "eventgrid.bicep"
GRAPH_PARTNER = "c02e0126-707c-436d-b6a1-175d2748fb58"  # UNCONFIRMED, see eventgrid.bicep
EVENTGRID_CONTRIBUTOR = "1e241071-0855-49ea-94dc-649edcd759de"
QUEUE_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"


@cache
def parse(path: Path) -> dict:
    return BicepParser().parse(file_path=path)


def _body(resource: dict) -> dict:
    config = resource["config"]
    return config["config"] if "condition" in config else config


def _accessor(node) -> tuple:
    operands = node["operator"]["operands"]
    return operands["operand_1"], operands["operand_2"]


def _dotted(node) -> str | None:
    """``a.b.c`` of a property accessor chain, ``a::b::c`` of a nested resource accessor (pycep nests both), or
    the identifier itself."""
    if node is None or isinstance(node, str):
        return node
    first, last = _accessor(node)
    separator = "::" if node["operator"]["type"] == "nested_resource_accessor" else "."
    return f"{_dotted(first)}{separator}{_dotted(last)}"


def test_the_parameter_and_the_module():
    main = parse(MAIN)
    param = main["parameters"]["notificationDelivery"]
    assert param["default"] == "webhook"
    assert {"type": "allowed", "argument": ["webhook", "eventgrid"]} in param["decorators"]
    assert main["variables"]["useEventGrid"]["value"] == {"operator": {"type": "equals", "operands": {
        "operand_1": "notificationDelivery", "operand_2": "eventgrid"}}}
    module = main["modules"]["eventGrid"]["config"]
    assert module["condition"] == "useEventGrid" and module["config"]["params"]["queueName"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "syncQueue", "operand_2": "name"}}}
    assert _body(main["resources"]["syncQueue"])["name"] == "syncQueueName"
    assert main["parameters"]["partnerTopicName"]["default"] == ""


def test_the_app_settings_of_each_mode():
    variables = parse(MAIN)["variables"]
    assert variables["appSettingsCommon"]["value"]["NOTIFICATION_DELIVERY"] == "notificationDelivery"
    eventgrid = variables["appSettingsEventGrid"]["value"]["operator"]["operands"]
    assert eventgrid["condition"] == "useEventGrid" and eventgrid["false_value"] == {}
    assert set(eventgrid["true_value"]) == {"EVENTGRID_PARTNER_TOPIC", "EVENTGRID_SUBSCRIPTION_ID",
                                            "EVENTGRID_RESOURCE_GROUP", "EVENTGRID_LOCATION",
                                            "EVENTGRID_DELIVERY_IDENTITY"}
    assert eventgrid["true_value"]["EVENTGRID_DELIVERY_IDENTITY"] == {"operator": {
        "type": "property_accessor", "operands": {"operand_1": "eventGrid", "operand_2": {"operator": {
            "type": "property_accessor", "operands": {"operand_1": "outputs", "operand_2": "deliveryIdentityId"}}}}}}
    # the webhook's URL only in webhook mode; the client state in both (the worker checks every event's)
    webhook = variables["appSettingsWebhook"]["value"]["operator"]["operands"]
    assert webhook["condition"] == "useWebhook" and set(webhook["true_value"]) == {"WEBHOOK_URL"}
    assert variables["useWebhook"]["value"]["operator"]["type"] == "and"
    assert parse(MAIN)["resources"]["webhookUrlSecret"]["config"]["condition"] == "useWebhook"
    state = variables["appSettingsClientState"]["value"]["operator"]["operands"]
    assert state["condition"] == "useClientState" and set(state["true_value"]) == {"WEBHOOK_CLIENT_STATE"}
    assert variables["useClientState"]["value"]["operator"] == {"type": "or", "operands": {
        "operand_1": "useWebhook", "operand_2": "useEventGrid"}}
    assert parse(MAIN)["resources"]["clientStateSecret"]["config"]["condition"] == "useClientState"


def test_no_public_network_access_with_eventgrid():
    main = parse(MAIN)
    default = main["parameters"]["appPublicNetworkAccess"]["default"]["operator"]
    assert default["type"] == "conditional"
    assert default["operands"]["condition"]["operator"]["operands"] == {
        "operand_1": "notificationDelivery", "operand_2": "eventgrid"}
    assert (default["operands"]["true_value"], default["operands"]["false_value"]) == ("Disabled", "Enabled")
    site = _body(main["resources"]["functionApp"])["properties"]
    assert site["publicNetworkAccess"] == "appPublicNetworkAccess"


def test_app_service_authentication_lets_only_the_webhook_through():
    auth = _body(parse(MAIN)["resources"]["authSettings"])
    assert auth["name"] == "authsettingsV2"
    branches = auth["properties"]["operator"]["operands"]
    on = branches["false_value"]
    assert on["platform"] == {"enabled": True} and on["globalValidation"]["requireAuthentication"] is True
    excluded = on["globalValidation"]["excludedPaths"]["operator"]["operands"]
    assert excluded == {"condition": "useWebhook", "true_value": ["/api/graph-webhook"], "false_value": []}
    assert on["identityProviders"]["azureActiveDirectory"]["registration"]["clientId"] == "authClientId"
    assert parse(MAIN)["variables"]["authOff"]["value"] == {"platform": {"enabled": False}}


def test_the_microsoft_graph_partner_is_authorized():
    config = _body(parse(EVENTGRID)["resources"]["partnerConfiguration"])
    assert (config["name"], config["location"]) == ("default", "global")
    (partner,) = config["properties"]["partnerAuthorization"]["authorizedPartnersList"]
    assert partner["partnerRegistrationImmutableId"] == "graphPartnerRegistrationId"
    assert parse(EVENTGRID)["variables"]["graphPartnerRegistrationId"]["value"] == GRAPH_PARTNER
    assert partner["partnerName"] == "MicrosoftGraphAPI"
    assert partner["authorizationExpirationTimeInUtc"] == "partnerAuthorizationExpires"


def _roles() -> dict[str, tuple]:
    """Role assignment name -> (role id, principal, scope) of eventgrid.bicep."""
    template = parse(EVENTGRID)
    out = {}
    for name, resource in template["resources"].items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        body = _body(resource)
        role = body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        role_id = template["variables"]["roles"]["value"][_accessor(role)[1]]
        principal = body["properties"]["principalId"]
        out[name] = (role_id, _dotted(principal), _dotted(body.get("scope")))
    return out


def test_least_privilege_roles_of_the_eventgrid_branch():
    roles = _roles()
    assert set(roles.values()) == {
        # the app activates the topic Graph creates: its name is unknown until then, so the resource group
        (EVENTGRID_CONTRIBUTOR, "appPrincipalId", None),
        # Event Grid's delivery identity adds messages to the sync queue, nothing else
        (QUEUE_MESSAGE_SENDER, "deliveryIdentity.properties.principalId", "storage::queueService::queue"),
    }
    text = EVENTGRID.read_text(encoding="utf-8")
    for forbidden in ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c",
                      "974c5e8b-45b9-4653-ba55-5f855dd0fb88"):  # Owner, Contributor, Queue Data Contributor
        assert forbidden not in text


def test_the_event_subscription_delivers_to_the_sync_queue_by_identity():
    resource = parse(EVENTGRID)["resources"]["toSyncQueue"]
    assert resource["config"]["condition"]["operator"]["type"] == "not"  # only once partnerTopicName is given
    body = _body(resource)
    assert body["parent"] == "partnerTopic"
    delivery = body["properties"]["deliveryWithResourceIdentity"]
    assert delivery["identity"]["type"] == "UserAssigned"
    assert _accessor(delivery["identity"]["userAssignedIdentity"]) == ("deliveryIdentity", "id")
    assert delivery["destination"]["endpointType"] == "StorageQueue"
    assert delivery["destination"]["properties"]["queueName"] == "queueName"
    assert body["properties"]["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    assert "deliverySender" in body["dependsOn"]
    topic = parse(EVENTGRID)["resources"]["partnerTopic"]
    assert topic["existing"] is True and _body(topic)["name"] == "partnerTopicName"
