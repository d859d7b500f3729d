"""infra/main.bicep, checked as far as this machine allows (no Bicep CLI, no Azure).

The template is parsed with pycep-parser and its structure asserted: the resources of SPEC §6, storage reached
by identity only, least-privilege role assignments, secrets only as Key Vault references. Then two lists are
compared - the app settings the code reads (derived from the code itself, so a setting added anywhere shows up
here) and the app settings the template sets - in both directions, so a forgotten setting and a misspelt one
both fail.
"""
from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

from pycep import BicepParser

from shared.errors import SettingsError
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "main.bicep"
EXAMPLE_PARAMETERS = ROOT / "infra" / "main.parameters.example.json"
README = ROOT / "README.md"

# An environment variable name as the code spells them (AZURE_TENANT_ID, AzureWebJobsStorage__accountName).
_ENV_NAME = re.compile(r"^(?:[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|AzureWebJobs[A-Za-z]*(?:__[A-Za-z]+)?)$")
_BINDING_EXPRESSION = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")

# Read by the code, deliberately not set by the template - each with the reason.
NOT_IN_AZURE = {
    "GRAPH_ACCESS_TOKEN": "a fixed bearer token for sandboxes and tests; in Azure an identity signs in",
    "ENTRA_ASSETS_HOME": "state of CLI runs without a storage account; the app uses the storage account",
    "AzureWebJobsStorage": "the connection-string form; the template connects by identity "
                           "(AzureWebJobsStorage__accountName, shared key access is off)",
    "AZURE_CLIENT_CERTIFICATE_PATH": "a certificate file on disk; the template offers a client secret in Key "
                                     "Vault or the app's managed identity instead",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "goes with AZURE_CLIENT_CERTIFICATE_PATH",
    "AzureWebJobsStorage__clientId": "a user-assigned identity; the template gives the app a system-assigned one",
    "AZURE_RESOURCE_MANAGER_URL": "Azure's own Resource Manager is the default; set only for a national cloud or "
                                  "the sandbox's emulator",
    "AZURE_MANAGEMENT_TOKEN": "a fixed Resource Manager token for sandboxes; in Azure the app's managed identity "
                              "signs in",
}
# Set by the template for the Functions platform (host, Application Insights), not read by our code.
PLATFORM = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Masked by the code but not a credential: "Ikey unique identifiers aren't security tokens or security keys, and
# aren't considered secrets" (https://learn.microsoft.com/azure/azure-monitor/app/connection-strings); with
# appInsightsEntraOnly ingestion needs the identity anyway. Read by the host too, so it stays a plain setting.
NOT_A_CREDENTIAL = {"APPLICATIONINSIGHTS_CONNECTION_STRING"}
# Built-in roles that must never be granted by this template (management-plane superpowers).
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}
APP_ROLES = {  # what the app's identity gets, and on which resource
    ("storage", "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"),  # Storage Blob Data Owner
    ("storage", "974c5e8b-45b9-4653-ba55-5f855dd0fb88"),  # Storage Queue Data Contributor
    ("vault", "4633458b-17de-408a-b874-0445c86b69e6"),  # Key Vault Secrets User
    ("appInsights", "3913510d-42f4-4e42-8a64-420c390055eb"),  # Monitoring Metrics Publisher
}
_KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{vaultUri\}secrets/[a-z0-9-]+/\)$")


@cache
def template() -> dict:
    return BicepParser().parse(file_path=TEMPLATE)


def _resources_of_type(kind: str) -> dict[str, dict]:
    return {name: r for name, r in template()["resources"].items() if r["type"] == kind}


def _config(resource: dict) -> dict:
    """The body of a resource, also when it is conditional (`= if (...) {...}`)."""
    config = resource["config"]
    return config["config"] if "condition" in config else config


def _resolve(node, variables: dict):
    """Follow a variable reference to its value (pycep keeps identifiers as plain strings)."""
    while isinstance(node, str) and node in variables:
        node = variables[node]["value"]
    return node


def _setting_values(node, variables: dict) -> dict[str, list]:
    """Every app setting an object expression may produce, with each value it may have: a union() of
    variables, a ternary of objects (both branches count), or an object literal."""
    node = _resolve(node, variables)
    out: dict[str, list] = {}
    if isinstance(node, dict) and node.get("function", {}).get("type") == "union":
        for arg in node["function"]["parameters"].values():
            for name, values in _setting_values(arg, variables).items():
                out.setdefault(name, []).extend(values)
    elif isinstance(node, dict) and node.get("operator", {}).get("type") == "conditional":
        operands = node["operator"]["operands"]
        for branch in (operands["true_value"], operands["false_value"]):
            for name, values in _setting_values(branch, variables).items():
                out.setdefault(name, []).extend(values)
    elif isinstance(node, dict) and not ({"function", "operator"} & node.keys()):
        out = {name: [value] for name, value in node.items()}
    else:
        raise AssertionError(f"app settings built from an expression this test cannot read: {node!r}")
    return out


@cache
def template_settings() -> dict[str, list]:
    """App setting name -> the values the template may give it."""
    configs = [r for r in _resources_of_type("Microsoft.Web/sites/config").values()
               if _config(r)["name"] == "appsettings"]
    assert len(configs) == 1, "expected one Microsoft.Web/sites/config 'appsettings' resource"
    settings = _setting_values(_config(configs[0])["properties"], template()["variables"])
    inline = _config(_resources_of_type("Microsoft.Web/sites")["functionApp"])["properties"]["siteConfig"]
    assert "appSettings" not in inline, "keep every app setting in the one 'appsettings' config resource"
    return settings


def _python_files() -> list[Path]:
    files = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py")),
             *sorted((ROOT / "functions").rglob("*.py"))]
    return [f for f in files if f.is_file()]


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id in {"environ", "env"})


def _literal(node: ast.AST, constants: dict[str, str]) -> str | None:
    """A string literal, or a module-level constant holding one (``environ.get(CONNECTION_STRING)``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return constants.get(node.id) if isinstance(node, ast.Name) else None


def _names_read_in(path: Path) -> set[str]:
    """Setting names read in one module: os.environ[...] / os.environ.get(...) / os.getenv(...) / env.get(...)
    and get(...) with a literal; in a module that loads settings (defines load_settings, or calls a local
    ``get`` helper) every literal spelt like a setting name, because names also travel through tuples
    (``for name, key in (("ASSETS_IMPORT_TOKEN", ...), ...): get(name)``); %NAME% binding expressions and
    ``connection=`` of trigger decorators, which the Functions host resolves from the app settings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value.value, str)}
    names: set[str] = set()
    settings_loader = any(isinstance(n, ast.FunctionDef) and n.name == "load_settings" for n in ast.walk(tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value) and _literal(node.slice, constants):
            names.add(_literal(node.slice, constants))
        elif isinstance(node, ast.Call):
            func = node.func
            literal = _literal(node.args[0], constants) if node.args else None
            getenv = isinstance(func, ast.Attribute) and func.attr == "getenv"
            environ_get = isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)
            local_get = isinstance(func, ast.Name) and func.id == "get"
            if isinstance(literal, str) and (getenv or environ_get or local_get):
                names.add(literal)
            settings_loader |= local_get
            for keyword in node.keywords:
                if keyword.arg == "connection" and isinstance(keyword.value, ast.Constant):
                    names.add(keyword.value.value)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(n for n in _BINDING_EXPRESSION.findall(node.value) if _ENV_NAME.match(n))
    if settings_loader:
        names.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                     and _ENV_NAME.match(n.value))
    return names


@cache
def code_settings() -> frozenset[str]:
    names: set[str] = set()
    for path in _python_files():
        names |= _names_read_in(path)
    return frozenset(names)


def _satisfied_by_template(name: str, template_names: set[str]) -> bool:
    """A connection name (AzureWebJobsStorage) is also satisfied by its identity form (<name>__accountName)."""
    return name in template_names or f"{name}__accountName" in template_names


# ---------------------------------------------------------------- the scan itself


def test_the_code_scan_finds_settings_of_every_kind():
    """Guards the comparison below against an empty or partial scan: one setting of each way of reading."""
    names = code_settings()
    assert {"ASSETS_IMPORT_TOKEN", "GRAPH_ACCESS_TOKEN"} <= names  # via a tuple in shared/settings.py
    assert {"AZURE_TENANT_ID", "WEBHOOK_URL", "MAX_DEACTIVATIONS"} <= names  # get("...") literals
    assert {"SYNC_QUEUE_NAME", "TIMER_SYNC_SCHEDULE"} <= names  # %...% of the trigger bindings
    assert "AzureWebJobsStorage" in names  # connection= of the queue trigger
    assert "AzureWebJobsStorage__accountName" in names


def test_the_scan_reads_environ_getenv_and_get_forms(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom os import environ\n"
                      "a = os.environ['ONE_A']\nb = os.environ.get('TWO_B')\nc = os.getenv('THREE_C')\n"
                      "d = environ.get('FOUR_D', 'x')\nmessage = 'NOT_A_READ but a string'\n")
    module.write_text(module.read_text() + "NAME = 'FIVE_E'\ne = os.environ.get(NAME)\n"
                      "when = dt.strftime('%Y-%m-%dT%H')\n")
    assert _names_read_in(module) == {"ONE_A", "TWO_B", "THREE_C", "FOUR_D", "FIVE_E"}


# ---------------------------------------------------------------- the two lists


def test_every_setting_the_code_reads_is_set_by_the_template():
    template_names = set(template_settings())
    missing = sorted(n for n in code_settings() - NOT_IN_AZURE.keys()
                     if not _satisfied_by_template(n, template_names))
    assert not missing, f"read by the code but not set by infra/main.bicep (add a parameter and the setting, " \
                        f"or add the name to NOT_IN_AZURE with a reason): {missing}"


def test_the_not_in_azure_list_is_current():
    stale = sorted(NOT_IN_AZURE.keys() - code_settings())
    assert not stale, f"NOT_IN_AZURE names settings the code no longer reads: {stale}"
    set_anyway = sorted(NOT_IN_AZURE.keys() & set(template_settings()))
    assert not set_anyway, f"NOT_IN_AZURE names settings the template sets: {set_anyway}"


def test_the_template_sets_no_setting_the_code_does_not_read():
    unknown = sorted(set(template_settings()) - code_settings() - PLATFORM)
    assert not unknown, f"infra/main.bicep sets app settings nothing reads (a typo?): {unknown}"


# ---------------------------------------------------------------- secrets


def _hidden_by_the_code(name: str) -> bool | None:
    """True when load_settings keeps the value of ``name`` as a Secret (a field of ``describe()`` becomes
    '***'), False when it shows it, None when the probe value is not valid for the setting or the settings
    do not hold it (read elsewhere)."""
    sentinel = "probe-3f9c2a7e41d85b06"
    env = {"AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
           "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000002"}
    try:
        before, after = load_settings(env).describe(), load_settings({**env, name: sentinel}).describe()
    except SettingsError:
        return None
    if any(sentinel in value for value in after.values()):
        return False
    return True if any(after[k] == "***" != before[k] for k in after) else None


def test_every_secret_is_a_key_vault_reference():
    secrets = {n for n in code_settings() if _hidden_by_the_code(n)}
    assert {"ASSETS_IMPORT_TOKEN", "AZURE_CLIENT_SECRET", "WEBHOOK_CLIENT_STATE"} <= secrets  # the probe works
    assert _hidden_by_the_code("USER_FILTER") is False
    settings = template_settings()
    # WEBHOOK_URL is not secret to the code, but in Azure it carries the function key of graph_webhook.
    for name in sorted((secrets - NOT_A_CREDENTIAL | {"WEBHOOK_URL"}) & settings.keys()):
        for value in settings[name]:
            assert isinstance(value, str) and _KEY_VAULT_REFERENCE.match(value), \
                f"{name} must be set only as a Key Vault reference, not {value!r}"


def test_key_vault_references_point_at_secrets_the_template_creates():
    created = {_config(r)["name"] for r in _resources_of_type("Microsoft.KeyVault/vaults/secrets").values()}
    referenced = {re.search(r"secrets/([a-z0-9-]+)/", v).group(1)
                  for values in template_settings().values() for v in values
                  if isinstance(v, str) and v.startswith("@Microsoft.KeyVault")}
    assert referenced == created


def test_secret_parameters_are_secure_and_have_no_default_value():
    secure = set()
    for name, param in template()["parameters"].items():
        decorators = {d["type"]: d.get("argument") for d in param["decorators"]}
        assert decorators.get("description"), f"parameter {name} has no @description"
        if "stored in Key Vault" in decorators["description"] or "secure" in decorators:
            assert "secure" in decorators, f"parameter {name} is stored in Key Vault: mark it @secure()"
            assert param["default"] in (None, ""), f"@secure parameter {name} must not have a default value"
            secure.add(name)
    assert {"graphClientSecret", "assetsImportToken", "webhookClientState", "webhookFunctionKey",
            "jiraApiToken"} <= secure


# ---------------------------------------------------------------- resources


def test_the_resources_of_spec_6():
    kinds = {r["type"] for r in template()["resources"].values()}
    assert {"Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/blobServices/containers",
            "Microsoft.Web/serverfarms", "Microsoft.Web/sites", "Microsoft.KeyVault/vaults",
            "Microsoft.KeyVault/vaults/secrets", "Microsoft.OperationalInsights/workspaces",
            "Microsoft.Insights/components", "Microsoft.Authorization/roleAssignments"} <= kinds
    plan = _config(_resources_of_type("Microsoft.Web/serverfarms")["plan"])
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"} and plan["properties"]["reserved"] is True
    app = _config(_resources_of_type("Microsoft.Web/sites")["functionApp"])
    assert app["kind"] == "functionapp,linux" and app["identity"] == {"type": "SystemAssigned"}
    assert app["properties"]["httpsOnly"] is True
    flex = app["properties"]["functionAppConfig"]
    assert flex["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    assert set(flex["scaleAndConcurrency"]) == {"maximumInstanceCount", "instanceMemoryMB"}


def test_storage_is_reached_by_identity_only():
    props = _config(_resources_of_type("Microsoft.Storage/storageAccounts")["storage"])["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    settings = template_settings()
    assert "AzureWebJobsStorage" not in settings  # no connection string, no key
    assert settings["AzureWebJobsStorage__credential"] == ["managedidentity"]


def test_key_vault_uses_rbac_soft_delete_and_purge_protection():
    props = _config(_resources_of_type("Microsoft.KeyVault/vaults")["vault"])["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True  # checkov CKV_AZURE_110/42; irreversible, as the README says


def _role_id(assignment: dict) -> str:
    ref = _config(assignment)["properties"]["roleDefinitionId"]["function"]
    assert ref["type"] == "subscription_resource_id"
    assert ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    accessor = ref["parameters"]["resource_name_1"]["operator"]["operands"]
    return _resolve(accessor["operand_1"], template()["variables"])[accessor["operand_2"]]


def _is_the_app(principal) -> bool:
    return isinstance(principal, dict) and principal["operator"]["operands"]["operand_1"] == "functionApp"


def test_least_privilege_role_assignments():
    assignments = _resources_of_type("Microsoft.Authorization/roleAssignments")
    granted = {(_config(a)["scope"], _role_id(a)) for a in assignments.values()
               if _is_the_app(_config(a)["properties"]["principalId"])}
    assert granted == APP_ROLES
    all_roles = {_role_id(a) for a in assignments.values()}
    assert not all_roles & FORBIDDEN_ROLES.keys()
    text = TEMPLATE.read_text(encoding="utf-8")
    assert not [role for guid, role in FORBIDDEN_ROLES.items() if guid in text]
    # everyone else's assignments (the operator's) are conditional on a principal being given
    for name, assignment in assignments.items():
        if not _is_the_app(_config(assignment)["properties"]["principalId"]):
            assert "condition" in assignment["config"], f"{name} is granted unconditionally"


def test_app_settings_wait_for_roles_and_secrets():
    config = next(r for r in _resources_of_type("Microsoft.Web/sites/config").values()
                  if _config(r)["name"] == "appsettings")
    depends = set(_config(config)["dependsOn"])
    roles = {n for n, a in _resources_of_type("Microsoft.Authorization/roleAssignments").items()
             if _is_the_app(_config(a)["properties"]["principalId"])}
    secrets = set(_resources_of_type("Microsoft.KeyVault/vaults/secrets"))
    assert roles | secrets <= depends


# ---------------------------------------------------------------- parameters, README, package


def test_example_parameters_match_the_template():
    params = template()["parameters"]
    example = json.loads(EXAMPLE_PARAMETERS.read_text(encoding="utf-8"))["parameters"]
    assert not example.keys() - params.keys(), "the example names parameters the template does not have"
    secure = {n for n, p in params.items() if any(d["type"] == "secure" for d in p["decorators"])}
    assert not example.keys() & secure, "secrets belong on the command line (-p name=value), not in a file"
    required = {n for n, p in params.items() if p["default"] is None} - secure
    assert required <= example.keys()


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Deploy to Azure\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Deploy to Azure' section"
    return match.group(1)


def test_readme_walkthrough_names_every_parameter_and_setting():
    section = _readme_section()
    missing = [f"parameter {p}" for p in template()["parameters"] if f"`{p}`" not in section]
    missing += [f"setting {s}" for s in template_settings() if f"`{s}`" not in section]
    assert not missing, f"README 'Deploy to Azure' does not mention: {missing}"


def _first_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found |= {m for m in modules if m.split(".")[0] in {"shared", "functions", "sandbox", "tests"}}
    return found


def test_the_published_package_needs_only_shared_and_functions():
    """The README zips function_app.py, host.json, requirements.txt, shared/ and functions/: everything the
    functions import (transitively, at module level or inside functions) must be in there."""
    seen, todo = set(), ["function_app"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = ROOT / (module.replace(".", "/") + ".py")
        path = path if path.is_file() else ROOT / module.replace(".", "/") / "__init__.py"
        if not path.is_file():  # `from shared.x import name` where name is not a module
            continue
        todo.extend(_first_party_imports(path))
    outside = sorted(m for m in seen if m.split(".")[0] not in {"shared", "functions", "function_app"})
    assert not outside, f"the functions import modules the package leaves out: {outside}"
    assert "shared.settings" in seen

