"""MAPPING_FILE: the admin's changes to the default schema (SPEC §2, §4), read and validated on load. Pure.

The file is YAML (``.yaml``/``.yml``) or JSON (``.json``) with up to three sections; each is optional and an
empty file changes nothing::

    attributes:            # add attributes read from any Graph property
      User:
        - name: Cost Center
          source: employeeOrgData.costCenter
          type: text       # optional, default text
        - name: Extension 1
          source: onPremisesExtensionAttributes.extensionAttribute1
        - name: Badge Number
          source: extension_0123456789abcdef0123456789abcdef_badgeNumber   # directory extension
          description: Badge number from the HR system                      # optional
      Device:
        - {name: Manufacturer, source: manufacturer}
    rename:                # attribute -> new name (its external id stays the same)
      User: {Mobile Phone: Mobile}
    omit:                  # leave optional attributes out
      User: [Employee Type, Business Phone]

The same in JSON: ``{"attributes": {"User": [{"name": "Cost Center", "source": "employeeOrgData.costCenter",
"type": "text"}]}, "rename": {"User": {"Mobile Phone": "Mobile"}}, "omit": {"User": ["Employee Type"]}}``.

What ``load_customization`` checks (every problem is reported at once, each with its place: ``line L, column C
(key.path)`` for YAML, ``key.path (line L)`` for JSON):

- only the sections ``attributes``, ``rename``, ``omit``; object types by their Assets name (``User``,
  ``Office Location``; case-insensitive, the type key ``office`` works too). Only the primary types (User,
  Group, Device, Application) can get added attributes: Department, Office Location, Address, City and Country
  are derived from user attributes, so they can be renamed/omitted in but get no Graph-sourced attributes.
- added attributes: keys ``name``, ``source``, ``type`` (optional, default ``text``), ``description``
  (optional). ``type`` is one of ``ALLOWED_TYPES`` (no references, status or select).
- names (added or renamed): not empty, at most ``NAME_LIMIT`` characters, none of Assets' reserved characters
  ``= ; : ? . "``, no control characters, not a system attribute (Key, Created, Updated), and no clash
  (case-insensitively) with another attribute the type ends up with or with an omitted one (Assets keeps an
  omitted attribute, so its name stays taken).
- ``source``: a dot path whose first segment is a v1.0 property of the Graph resource behind the type (user,
  group, device, servicePrincipal; lists below) or a directory extension ``extension_<app id, 32 hex digits
  without dashes>_<name>``. ``onPremisesExtensionAttributes.`` (users) and ``extensionAttributes.`` (devices)
  take ``extensionAttribute1``..``15``; ``employeeOrgData.`` takes ``costCenter`` or ``division``; plain
  properties take no sub-path. Properties Graph refuses in a delta ``$select`` (for users those stored outside
  the main directory store: skills, aboutMe, birthday, ...; ``signInActivity``), properties Graph only returns
  when reading a single object, and properties that need permissions entra-assets does not ask for, are
  refused with the reason. A source is mapped at most once per type.
- ``rename``/``omit`` name existing attributes of the type; the label, the identity and ``Status``
  (``required``) can be neither renamed nor omitted; one attribute cannot be both renamed and omitted.

``customize`` applies a ``Customization`` to the object types of ``shared.schema``: renamed attributes keep
their external id (``xid`` = the old key); an added attribute gets the record key (locator) ``x_<source>``
with ``.`` written as ``__`` (no dots: how Assets reads a dotted locator is UNCONFIRMED, reference §4.4) and
the external id key ``custom-<slug of its name>`` - so changing an added attribute's *name* in the file makes
a new attribute (the old one stays in Assets, unmapped; see ``unmapped_attributes``).
``incompatible_changes`` lists what the add-only PATCH cannot do (reference §3.4) when the file renames
something that already exists in Assets.

UNCONFIRMED:
- the reserved characters ``= ; : ? . "`` were measured on Data Center (reference §7); cloud may accept more.
- ``NAME_LIMIT`` (100) is our choice; Assets' own limit for attribute names is not documented.
- list values: a Graph list (``proxyAddresses``, ``otherMails``, a path through a list such as
  ``identities.issuer``) is pushed as one text value joined with ``", "`` (text/textarea), or its first value
  (email, url, date, date_time); Assets' own handling of list values for a single-valued attribute is not
  documented. Text is trimmed to ``TEXT_LIMIT`` (255) characters like the default attributes.
- date and date_time values are passed as Graph gives them (ISO 8601); cloud date parsing rules are
  UNCONFIRMED (reference §4.4).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import yaml

from shared.errors import EntraAssetsError
from shared.schema import OBJECT_TYPES, TEXT_LIMIT, Attr, ObjectType

ALLOWED_TYPES = ("text", "textarea", "integer", "double", "boolean", "date", "date_time", "url", "email")
NAME_LIMIT = 100
RESERVED_CHARACTERS = '=;:?."'
# Attributes every Assets object type has; a custom attribute of the same name would clash.
SYSTEM_ATTRIBUTES = ("Key", "Created", "Updated")
SECTIONS = ("attributes", "rename", "omit")
ATTRIBUTE_KEYS = ("name", "source", "type", "description")
# The Graph resource each primary object type is read from.
RESOURCES = {"user": "user", "group": "group", "device": "device", "application": "servicePrincipal"}
_INT32 = (-(2 ** 31), 2 ** 31 - 1)  # Assets integers (UNCONFIRMED: assumed 32-bit)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# v1.0 properties per Graph resource (learn.microsoft.com/graph/api/resources/<resource>; reference/graph.md
# §1.3). Relationships (manager, members, owners, ...) are not properties and cannot be a source.
_PROPERTIES = {
    "user": _words(
        "aboutMe accountEnabled ageGroup assignedLicenses assignedPlans authorizationInfo birthday "
        "businessPhones city companyName consentProvidedForMinor country createdDateTime creationType "
        "customSecurityAttributes deletedDateTime department displayName employeeHireDate employeeId "
        "employeeLeaveDateTime employeeOrgData employeeType externalUserState "
        "externalUserStateChangeDateTime faxNumber givenName hireDate id identities imAddresses interests "
        "isManagementRestricted isResourceAccount jobTitle lastPasswordChangeDateTime "
        "legalAgeGroupClassification licenseAssignmentStates mail mailboxSettings mailNickname "
        "mobilePhone mySite officeLocation onPremisesDistinguishedName onPremisesDomainName "
        "onPremisesExtensionAttributes onPremisesImmutableId onPremisesLastSyncDateTime "
        "onPremisesProvisioningErrors onPremisesSamAccountName onPremisesSecurityIdentifier "
        "onPremisesSyncEnabled onPremisesUserPrincipalName otherMails passwordPolicies passwordProfile "
        "pastProjects postalCode preferredDataLocation preferredLanguage preferredName provisionedPlans "
        "proxyAddresses responsibilities schools securityIdentifier serviceProvisioningErrors "
        "showInAddressList signInActivity signInSessionsValidFromDateTime skills state streetAddress "
        "surname usageLocation userPrincipalName userType"),
    "group": _words(
        "allowExternalSenders assignedLabels assignedLicenses autoSubscribeNewMembers classification "
        "createdDateTime deletedDateTime description displayName expirationDateTime groupTypes "
        "hasMembersWithLicenseErrors hideFromAddressLists hideFromOutlookClients id isArchived "
        "isAssignableToRole isManagementRestricted isSubscribedByMail licenseProcessingState mail "
        "mailEnabled mailNickname membershipRule membershipRuleProcessingState onPremisesDomainName "
        "onPremisesLastSyncDateTime onPremisesNetBiosName onPremisesProvisioningErrors "
        "onPremisesSamAccountName onPremisesSecurityIdentifier onPremisesSyncEnabled "
        "preferredDataLocation preferredLanguage proxyAddresses renewedDateTime securityEnabled "
        "securityIdentifier serviceProvisioningErrors theme uniqueName unseenCount visibility"),
    "device": _words(
        "accountEnabled alternativeSecurityIds approximateLastSignInDateTime complianceExpirationDateTime "
        "deletedDateTime deviceCategory deviceId deviceMetadata deviceOwnership deviceVersion displayName "
        "enrollmentProfileName enrollmentType extensionAttributes id isCompliant isManaged "
        "isManagementRestricted isRooted managementType manufacturer mdmAppId model "
        "onPremisesLastSyncDateTime onPremisesSecurityIdentifier onPremisesSyncEnabled operatingSystem "
        "operatingSystemVersion physicalIds profileType registrationDateTime systemLabels trustType"),
    "servicePrincipal": _words(
        "accountEnabled addIns alternativeNames appDescription appDisplayName appId applicationTemplateId "
        "appOwnerOrganizationId appRoleAssignmentRequired appRoles customSecurityAttributes "
        "deletedDateTime description disabledByMicrosoftStatus displayName homepage id info "
        "keyCredentials loginUrl logoutUrl notes notificationEmailAddresses oauth2PermissionScopes "
        "passwordCredentials preferredSingleSignOnMode preferredTokenSigningKeyThumbprint publisherName "
        "replyUrls resourceSpecificApplicationPermissions samlSingleSignOnSettings servicePrincipalNames "
        "servicePrincipalType signInAudience tags tokenEncryptionKeyId verifiedPublisher"),
}
# Complex properties whose sub-paths are free (checked for syntax only).
_COMPLEX = {
    "user": {"assignedLicenses", "assignedPlans", "authorizationInfo", "identities",
             "licenseAssignmentStates", "onPremisesProvisioningErrors", "provisionedPlans",
             "serviceProvisioningErrors"},
    "group": {"assignedLabels", "assignedLicenses", "onPremisesProvisioningErrors",
              "serviceProvisioningErrors"},
    "device": {"alternativeSecurityIds"},
    "servicePrincipal": {"addIns", "appRoles", "info", "keyCredentials", "oauth2PermissionScopes",
                         "passwordCredentials", "resourceSpecificApplicationPermissions",
                         "samlSingleSignOnSettings", "verifiedPublisher"},
}
# Complex properties with a fixed set of sub-properties.
_EXTENSION_ATTRIBUTES = tuple(f"extensionAttribute{i}" for i in range(1, 16))
_FIXED = {
    "user": {"onPremisesExtensionAttributes": _EXTENSION_ATTRIBUTES,
             "employeeOrgData": ("costCenter", "division")},
    "device": {"extensionAttributes": _EXTENSION_ATTRIBUTES},
}
_OUTSIDE_MAIN_STORE = ("is stored outside the directory's main store: Graph refuses it in a delta $select "
                       "(400 'Invalid request for delta query', reference/graph.md §1.3)")
_SINGLE_GROUP = "is returned only when reading one group (GET /groups/{id}), not in a list or delta query"
_CUSTOM_SECURITY = ("needs the CustomSecAttributeAssignment.Read.All permission, which entra-assets "
                    "does not ask for")
# Properties refused, with the reason.
_REFUSED = {
    "user": {
        **{p: _OUTSIDE_MAIN_STORE for p in ("aboutMe", "birthday", "hireDate", "interests", "mySite",
                                            "pastProjects", "preferredName", "responsibilities", "schools",
                                            "skills", "mailboxSettings")},
        "signInActivity": ("is refused by Graph in a delta $select (400 '$expand/$select is not supported "
                           "for the following properties: signInActivity') and needs AuditLog.Read.All"),
        "employeeLeaveDateTime": ("needs the User-LifeCycleInfo.Read.All permission, which entra-assets does "
                                  "not ask for (reference/graph.md §1.3)"),
        "customSecurityAttributes": _CUSTOM_SECURITY,
        "passwordProfile": "is never returned when reading users",
    },
    "group": {
        **{p: _SINGLE_GROUP for p in ("allowExternalSenders", "autoSubscribeNewMembers",
                                      "hideFromAddressLists", "hideFromOutlookClients", "isSubscribedByMail",
                                      "unseenCount")},
        **{p: "is never returned in a $select (Graph documents it as an exception)"
           for p in ("hasMembersWithLicenseErrors", "isArchived")},
    },
    "device": {},
    "servicePrincipal": {"customSecurityAttributes": _CUSTOM_SECURITY},
}
_RELATIONSHIPS = {
    "user": {"manager", "directReports", "memberOf", "transitiveMemberOf", "ownedDevices",
             "registeredDevices", "ownedObjects", "createdObjects", "photo", "extensions",
             "appRoleAssignments"},
    "group": {"members", "transitiveMembers", "owners", "memberOf", "transitiveMemberOf", "photo",
              "extensions", "appRoleAssignments"},
    "device": {"registeredOwners", "registeredUsers", "memberOf", "transitiveMemberOf", "extensions"},
    "servicePrincipal": {"owners", "appRoleAssignedTo", "appRoleAssignments", "memberOf",
                         "transitiveMemberOf", "oauth2PermissionGrants", "ownedObjects", "createdObjects"},
}
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER = re.compile(r"^[+-]?\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class MappingFileError(EntraAssetsError):
    """The MAPPING_FILE cannot be used; ``problems`` lists every problem, each with its place in the file."""

    exit_code = 2

    def __init__(self, problems: list[str], path: Path | str | None = None):
        self.problems = problems
        self.path = path
        where = f"MAPPING_FILE {path}" if path else "MAPPING_FILE"
        super().__init__(f"{where} is invalid: " + "; ".join(problems))


@dataclass(frozen=True)
class CustomAttr:
    """One attribute added by the file: its Assets name, Graph source path, Assets type and description."""

    name: str
    source: str
    type: str = "text"
    description: str = ""

    @property
    def locator(self) -> str:
        """The record key it is pushed under: ``x_`` + the source with ``.`` written as ``__``."""
        return "x_" + self.source.replace(".", "__")

    @property
    def xid(self) -> str:
        """External-id key: ``custom-<slug of the name>`` (a short hash for a name without ASCII letters)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        if not slug:
            slug = hashlib.blake2b(self.name.encode(), digest_size=5).hexdigest()
        return f"custom-{slug}"


@dataclass(frozen=True)
class Customization:
    """What a MAPPING_FILE changes, keyed by object-type key (``user``, ``office``, ...): attributes added,
    renames (default name -> new name) and omissions (default names). Hashable; ``EMPTY`` changes nothing."""

    attributes: dict[str, tuple[CustomAttr, ...]] = field(default_factory=dict)
    renames: dict[str, dict[str, str]] = field(default_factory=dict)
    omit: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def _canonical(self) -> tuple:
        return (tuple(sorted((k, v) for k, v in self.attributes.items() if v)),
                tuple(sorted((k, tuple(sorted(v.items()))) for k, v in self.renames.items() if v)),
                tuple(sorted((k, tuple(sorted(v))) for k, v in self.omit.items() if v)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Customization) and self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    def __bool__(self) -> bool:
        return any(self._canonical())


EMPTY = Customization()


# ------------------------------------------------------------------------------------------------------------
# Reading the file into located nodes


@dataclass
class _Node:
    """A value of the file with where it starts (1-based; None when unknown). Mappings hold
    ``{key: (key node, value node)}``, sequences a list of nodes, scalars the value."""

    value: Any
    line: int | None = None
    column: int | None = None

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        if self.is_map:
            return {k: v.plain() for k, (_, v) in self.value.items()}
        if self.is_list:
            return [v.plain() for v in self.value]
        return self.value


class _Reader:
    """Problems with their places, in the style of the file's format."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self._found: list[tuple[int, int, str]] = []

    @property
    def problems(self) -> list[str]:
        """In file order (problems without a line first)."""
        return [text for _, _, text in sorted(self._found, key=lambda p: (p[0], p[1]))]

    def note(self, text: str, line: int | None = None, column: int | None = None) -> None:
        self._found.append((line or 0, column or 0, text))

    def where(self, node: _Node | None, path: str) -> str:
        line = node.line if node else None
        if self.fmt == "yaml":
            if line is None:
                return path or "(top level)"
            return f"line {line}, column {node.column}" + (f" ({path})" if path else "")
        return (path or "(top level)") + (f" (line {line})" if line else "")

    def add(self, node: _Node | None, path: str, message: str) -> None:
        self.note(f"{self.where(node, path)}: {message}", node.line if node else None,
                  node.column if node else None)


_MAX_NODES = 100_000
_STANDARD_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _from_yaml(root: yaml.Node, reader: _Reader) -> _Node:
    """Located nodes from a composed YAML document (scalars built by PyYAML's safe constructor)."""
    constructor = yaml.SafeLoader("")
    count = 0
    active: set[int] = set()

    def convert(node: yaml.Node, path: str) -> _Node:
        nonlocal count
        count += 1
        mark = node.start_mark
        here = _Node(None, mark.line + 1, mark.column + 1)
        if count > _MAX_NODES or id(node) in active:
            reader.add(here, path, "too many nested or recursive aliases")
            return here
        if isinstance(node, yaml.ScalarNode):
            try:
                here.value = constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                reader.add(here, path, f"unsupported value ({getattr(exc, 'problem', None) or exc})")
            return here
        if node.tag not in _STANDARD_TAGS:
            reader.add(here, path, f"unsupported tag {node.tag}")
            return here
        active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                here.value = [convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
                return here
            here.value = {}
            for key_node, value_node in node.value:
                key = _Node(None, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    reader.add(key, path, "unsupported key (use plain names as keys)")
                    continue
                try:
                    key.value = str(constructor.construct_object(key_node))
                except yaml.YAMLError:
                    key.value = str(key_node.value)
                sub = _join(path, key.value)
                if key.value in here.value:
                    reader.add(key, sub, f"duplicate key '{key.value}'")
                    continue
                here.value[key.value] = (key, convert(value_node, sub))
            return here
        finally:
            active.discard(id(node))

    return convert(root, "")


def _from_plain(value: Any) -> _Node:
    if isinstance(value, dict):
        return _Node({str(k): (_Node(str(k)), _from_plain(v)) for k, v in value.items()})
    if isinstance(value, list):
        return _Node([_from_plain(v) for v in value])
    return _Node(value)


def _parse(text: str, fmt: str, reader: _Reader) -> _Node | None:
    """The file's top node, or None (after recording the problem) when it cannot be parsed."""
    if not text.strip():
        return None
    if fmt == "json":
        duplicates: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict:
            seen: dict = {}
            for k, v in items:
                if k in seen:
                    duplicates.append(k)
                seen[k] = v
            return seen

        try:
            data = json.loads(text, object_pairs_hook=pairs)
        except json.JSONDecodeError as exc:
            reader.note(f"line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})",
                        exc.lineno, exc.colno)
            return None
        # JSON is (nearly) YAML: compose it again only to learn the line of each value. When PyYAML reads it
        # differently (rare escapes, tabs), fall back to key paths without lines.
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            located = _from_yaml(node, _Reader("json")) if node is not None else None
        except yaml.YAMLError:
            located = None
        if located is None or located.plain() != data or duplicates:
            located = _from_plain(data)
            for key in sorted(set(duplicates)):
                reader.add(None, "", f"duplicate key '{key}'")
        return located
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reader.note(f"{place}invalid YAML ({exc.problem or exc.context})", mark.line + 1 if mark else None)
        return None
    except yaml.YAMLError as exc:
        reader.note(f"invalid YAML ({exc})")
        return None
    return _from_yaml(node, reader) if node is not None else None


# ------------------------------------------------------------------------------------------------------------
# Validation


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def _names(items: Iterable[str]) -> str:
    return ", ".join(items)


def _find_type(name: Any, types: tuple[ObjectType, ...]) -> ObjectType | None:
    if not isinstance(name, str):
        return None
    folded = name.strip().casefold()
    for t in types:
        if folded in (t.name.casefold(), t.key.casefold()):
            return t
    return None


def _find_attr(name: Any, t: ObjectType) -> Attr | None:
    if not isinstance(name, str):
        return None
    for a in t.attributes:
        if a.name == name.strip():
            return a
    folded = name.strip().casefold()
    for a in t.attributes:
        if a.name.casefold() == folded:
            return a
    return None


def _suggest(word: str, choices: Iterable[str], close: bool = True) -> str:
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded:
        return f" (did you mean '{folded[word.casefold()]}'? names are case-sensitive)"
    if not close:
        return ""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be an Assets attribute name (None when it can)."""
    if not isinstance(name, str):
        return f"the name {_show(name)} must be text (quote it)"
    if not name.strip():
        return "the name is empty"
    if len(name) > NAME_LIMIT:
        return f"the name '{name[:40]}...' is {len(name)} characters long; at most {NAME_LIMIT} are allowed"
    bad = sorted({c for c in name if c in RESERVED_CHARACTERS})
    if bad:
        return (f"the name '{name}' contains {' '.join(bad)}: Assets does not allow the characters "
                f"{' '.join(RESERVED_CHARACTERS)} in names")
    if _CONTROL.search(name):
        return f"the name {_show(name)} contains control characters"
    if name != name.strip():
        return f"the name '{name}' starts or ends with spaces"
    if name.casefold() in (s.casefold() for s in SYSTEM_ATTRIBUTES):
        return f"'{name}' is a system attribute of every Assets object type ({_names(SYSTEM_ATTRIBUTES)})"
    return None


def source_problem(source: Any, object_type: ObjectType) -> str | None:
    """Why ``source`` is not a usable Graph property path for ``object_type`` (None when it is)."""
    resource = RESOURCES.get(object_type.key)
    if resource is None:
        return f"{object_type.name} is not read from a Graph resource"
    if not isinstance(source, str) or not source.strip():
        return (f"the source {_show(source)} must be a Graph property path such as "
                "'employeeOrgData.costCenter'")
    segments = source.split(".")
    if not all(_SEGMENT.match(s) for s in segments):
        return (f"the source '{source}' is not a property path: use Graph property names separated by dots, "
                "e.g. onPremisesExtensionAttributes.extensionAttribute1")
    first, rest = segments[0], segments[1:]
    if first.startswith("extension_"):
        if not _EXTENSION.match(first):
            return (f"the source '{source}' is not a directory extension: the form is "
                    "extension_<app id: 32 hex digits without dashes>_<name>")
        if rest:
            return f"the directory extension '{first}' is a single value; it has no '{'.'.join(rest)}'"
        return None
    properties = _PROPERTIES[resource]
    if first not in properties:
        if first in _RELATIONSHIPS[resource]:
            return f"'{first}' is a relationship of a Graph {resource}, not a property; it cannot be a source"
        return (f"the source '{source}': '{first}' is not a property of a Graph {resource}"
                f"{_suggest(first, properties)}")
    refused = _REFUSED[resource].get(first)
    if refused:
        return f"the source '{source}': {first} {refused}"
    fixed = _FIXED.get(resource, {}).get(first)
    if fixed is not None:
        if len(rest) != 1 or rest[0] not in fixed:
            allowed = (f".{fixed[0]}...{fixed[-1]}" if fixed == _EXTENSION_ATTRIBUTES
                       else " or ".join(f".{f}" for f in fixed))
            got = f"'{'.'.join(rest)}'" if rest else "nothing"
            return f"the source '{source}': {first} must be followed by {allowed}, not {got}" + (
                _suggest(rest[0], fixed, close=False) if len(rest) == 1 else "")
        return None
    if rest and first not in _COMPLEX[resource]:
        return f"the source '{source}': {first} is a plain value; it has no '{'.'.join(rest)}'"
    return None


def _validate(top: _Node | None, reader: _Reader, types: tuple[ObjectType, ...]) -> Customization:
    if top is None or top.value is None:
        return EMPTY
    if not top.is_map:
        reader.add(top, "", f"the file must be a mapping with the sections {_names(SECTIONS)}, "
                            f"not {_show(top.plain())}")
        return EMPTY
    for key, (key_node, _) in top.value.items():
        if key not in SECTIONS:
            reader.add(key_node, key,
                       f"unknown section '{key}': use {_names(SECTIONS)}{_suggest(key, SECTIONS)}")

    def sections(name: str) -> list[tuple[ObjectType, _Node, str]]:
        """(object type, value node, path) of each object type listed in the section."""
        entry = top.value.get(name)
        if entry is None or entry[1].value is None:
            return []
        node = entry[1]
        if not node.is_map:
            reader.add(node, name, f"'{name}' must map object type names (User, Group, ...) to entries")
            return []
        out = []
        for type_name, (key_node, value) in node.value.items():
            t = _find_type(type_name, types)
            path = _join(name, type_name)
            if t is None:
                reader.add(key_node, path, f"unknown object type '{type_name}': use one of "
                                           f"{_names(x.name for x in types)}")
                continue
            if any(t is seen for seen, _, _ in out):
                reader.add(key_node, path, f"{t.name} is listed twice in '{name}'")
                continue
            out.append((t, value, path))
        return out

    renames: dict[str, dict[str, str]] = {}
    rename_nodes: dict[tuple[str, str], _Node] = {}
    for t, node, path in sections("rename"):
        if node.value is None:
            continue
        if not node.is_map:
            reader.add(node, path, "must map attribute names to new names, e.g. {Mobile Phone: Mobile}")
            continue
        for old, (key_node, new_node) in node.value.items():
            sub = _join(path, old)
            attr = _find_attr(old, t)
            if attr is None:
                reader.add(key_node, sub, f"{t.name} has no attribute '{old}'; its attributes are "
                                          f"{_names(a.name for a in t.attributes)}")
                continue
            if attr.required:
                reader.add(key_node, sub,
                           f"'{attr.name}' is the {_role(attr)} of {t.name}; it cannot be renamed")
                continue
            problem = name_problem(new_node.value)
            if problem:
                reader.add(new_node, sub, problem)
                continue
            if attr.name in renames.get(t.key, {}):
                reader.add(key_node, sub, f"'{attr.name}' is renamed twice")
                continue
            renames.setdefault(t.key, {})[attr.name] = new_node.value
            rename_nodes[(t.key, attr.name)] = new_node

    omit: dict[str, list[str]] = {}
    for t, node, path in sections("omit"):
        if node.value is None:
            continue
        if not node.is_list:
            reader.add(node, path,
                       f"must be a list of attribute names, e.g. [Employee Type], not {_show(node.plain())}")
            continue
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            attr = _find_attr(item.value, t)
            if attr is None:
                reader.add(item, sub, f"{t.name} has no attribute {_show(item.value)}; its attributes are "
                                      f"{_names(a.name for a in t.attributes)}")
                continue
            if attr.required:
                reader.add(item, sub,
                           f"'{attr.name}' is the {_role(attr)} of {t.name}; it cannot be left out")
                continue
            if attr.name in renames.get(t.key, {}):
                line = rename_nodes[(t.key, attr.name)].line
                at = f" (line {line})" if line else ""
                reader.add(item, sub, f"'{attr.name}' is both omitted and renamed to "
                                      f"'{renames[t.key][attr.name]}'{at}; keep one of the two")
                continue
            if attr.name in omit.get(t.key, []):
                reader.add(item, sub, f"'{attr.name}' is omitted twice")
                continue
            omit.setdefault(t.key, []).append(attr.name)

    added: dict[str, list[tuple[CustomAttr, _Node, str]]] = {}  # with the node and path of its name
    for t, node, path in sections("attributes"):
        if t.derived or t.key not in RESOURCES:
            reader.add(node, path, f"{t.name} is derived from user attributes, not read from a Graph "
                                   "resource: it cannot get Graph-sourced attributes (add them to User "
                                   "instead)")
            continue
        if node.value is None:
            continue
        if not node.is_list:
            reader.add(node, path,
                       "must be a list of attributes, each with name and source (and optional type)")
            continue
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            custom = _custom_attr(item, sub, t, reader)
            if custom is None:
                continue
            for other, other_node, _ in added.get(t.key, []):
                if other.source == custom.source:
                    at = f" (line {other_node.line})" if other_node.line else ""
                    reader.add(item.value["source"][1], _join(sub, "source"),
                               f"the source '{custom.source}' is already mapped to '{other.name}'{at}")
                    break
            else:
                added.setdefault(t.key, []).append((custom, item.value["name"][1], _join(sub, "name")))

    # Names each type ends up with must be unique (case-insensitively), and stay clear of omitted ones.
    result: dict[str, tuple[CustomAttr, ...]] = {}
    for t in types:
        taken: dict[str, str] = {}
        type_renames = renames.get(t.key, {})
        for a in t.attributes:
            final = type_renames.get(a.name, a.name)
            if a.name in omit.get(t.key, []):
                taken.setdefault(final.casefold(), f"the omitted attribute '{a.name}' (Assets keeps it)")
            elif a.name not in type_renames:
                taken.setdefault(final.casefold(), f"the attribute '{a.name}'")
        for old, new in type_renames.items():
            node = rename_nodes[(t.key, old)]
            clash = taken.get(new.casefold())
            if clash:
                reader.add(node, _join(_join("rename", t.name), old),
                           f"'{new}' clashes with {clash} of {t.name}")
            else:
                taken[new.casefold()] = f"'{old}' renamed to '{new}'"
        keys = {a.key for a in t.attributes}
        kept = []
        for custom, node, path in added.get(t.key, []):
            clash = taken.get(custom.name.casefold())
            if clash:
                reader.add(node, path, f"the name '{custom.name}' clashes with {clash} of {t.name}")
            elif custom.xid in keys:
                reader.add(node, path, f"the name '{custom.name}' gives the external id key '{custom.xid}', "
                                       "already used by another added attribute; choose a more distinct name")
            else:
                taken[custom.name.casefold()] = f"the added attribute '{custom.name}'"
                keys.add(custom.xid)
                kept.append(custom)
        if kept:
            result[t.key] = tuple(kept)

    return Customization(result, {k: v for k, v in renames.items() if v},
                         {k: tuple(v) for k, v in omit.items() if v})


def _role(attr: Attr) -> str:
    if attr.label:
        return "label"
    if attr.identity:
        return "identity"
    return "status" if attr.type == "status" else "required attribute"


def _custom_attr(item: _Node, path: str, t: ObjectType, reader: _Reader) -> CustomAttr | None:
    if not item.is_map:
        reader.add(item, path,
                   f"each attribute must be a mapping with name and source, not {_show(item.plain())}")
        return None
    ok = True
    for key, (key_node, _) in item.value.items():
        if key not in ATTRIBUTE_KEYS:
            reader.add(key_node, _join(path, key), f"unknown key '{key}': an attribute has "
                                                   f"{_names(ATTRIBUTE_KEYS)}{_suggest(key, ATTRIBUTE_KEYS)}")
            ok = False
    values = {k: v.value for k, (_, v) in item.value.items()}
    nodes = {k: v for k, (_, v) in item.value.items()}
    for required in ("name", "source"):
        if required not in values:
            reader.add(item, path, f"the attribute has no '{required}'")
            ok = False
    if "name" in values:
        problem = name_problem(values["name"])
        if problem:
            reader.add(nodes["name"], _join(path, "name"), problem)
            ok = False
    if "source" in values:
        problem = source_problem(values["source"], t)
        if problem:
            reader.add(nodes["source"], _join(path, "source"), problem)
            ok = False
    kind = values.get("type", "text")
    if kind not in ALLOWED_TYPES:
        hint = " (did you mean 'date_time'?)" if isinstance(kind, str) and kind.casefold() in (
            "datetime", "date-time", "timestamp") else ""
        reader.add(nodes["type"], _join(path, "type"),
                   f"unknown type {_show(kind)}{hint}: use one of {_names(ALLOWED_TYPES)} "
                   "(references, status and select cannot be added)")
        ok = False
    description = values.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        reader.add(nodes["description"], _join(path, "description"), "the description must be text")
        ok = False
    if not ok:
        return None
    return CustomAttr(values["name"], values["source"], kind, description.strip())


def load_customization(path: Path, types: tuple[ObjectType, ...] = OBJECT_TYPES) -> Customization:
    """Read and validate a MAPPING_FILE (YAML or JSON by extension). Raises ``MappingFileError`` listing every
    problem; an empty file gives ``EMPTY``."""
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(suffix)
    if fmt is None:
        raise MappingFileError(
            [f"the file name must end in .yaml, .yml or .json (got '{suffix or path.name}')"], path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MappingFileError([f"cannot read the file ({reason})"], path) from None
    except UnicodeDecodeError:
        raise MappingFileError(["the file is not UTF-8 text"], path) from None
    reader = _Reader(fmt)
    top = _parse(text, fmt, reader)
    customization = _validate(top, reader, types) if not reader.problems else EMPTY
    if reader.problems:
        raise MappingFileError(reader.problems, path)
    return customization


# ------------------------------------------------------------------------------------------------------------
# Applying it


def customize(types: tuple[ObjectType, ...], c: Customization) -> tuple[ObjectType, ...]:
    """``types`` with ``c`` applied: renames (keeping each external id), omissions, added attributes appended.
    Pure; same input, same output. Types ``c`` does not mention come back unchanged."""
    if not c:
        return tuple(types)
    out = []
    for t in types:
        renames = c.renames.get(t.key, {})
        omitted = set(c.omit.get(t.key, ()))
        attributes = []
        for a in t.attributes:
            if a.name in omitted:
                continue
            if a.name in renames:
                a = replace(a, name=renames[a.name], xid=a.key)
            if a.ref and a.ref_attr in c.renames.get(a.ref, {}):
                # objectMappingIQL names the referenced type's attribute: follow its rename.
                a = replace(a, ref_attr=c.renames[a.ref][a.ref_attr])
            attributes.append(a)
        for custom in c.attributes.get(t.key, ()):
            attributes.append(Attr(custom.name, custom.locator, custom.type,
                                   description=custom.description or f"{custom.source} from Microsoft Graph",
                                   source=custom.source, xid=custom.xid))
        out.append(replace(t, attributes=tuple(attributes)))
    return tuple(out)


def graph_select(object_type: ObjectType) -> list[str]:
    """The Graph ``$select`` properties the type's added attributes need (first path segment, in order)."""
    out: list[str] = []
    for a in object_type.attributes:
        if a.source:
            first = a.source.split(".", 1)[0]
            if first not in out:
                out.append(first)
    return out


def _walk(value: Any, segments: list[str]) -> Any:
    """Follow ``segments``; through a list, follow each element and collect the values found."""
    for i, segment in enumerate(segments):
        if isinstance(value, list):
            found = []
            for element in value:
                got = _walk(element, segments[i:])
                if isinstance(got, list):
                    found.extend(got)
                elif got is not None:
                    found.append(got)
            return found or None
        if not isinstance(value, dict):
            return None
        value = value.get(segment)
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        parts = [t for t in (_text(v) for v in value) if t]
        return ", ".join(parts) or None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None


def _first(value: Any) -> Any:
    if isinstance(value, list):
        for v in value:
            if v is not None and v != "":
                return v
        return None
    return value


def _single(value: Any) -> Any:
    if isinstance(value, list):
        values = [v for v in value if v is not None]
        return values[0] if len(values) == 1 else None
    return value


def _boolean(value: Any) -> bool | None:
    value = _single(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEANS.get(value.strip().lower())
    return None


def _integer(value: Any) -> int | None:
    value = _single(value)
    if isinstance(value, bool) or value is None:
        return None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip().replace("_", "x")  # int()/float() accept "1_000"; Graph data means no number
        if _INTEGER.match(text):
            number = int(text)
        else:
            as_float = _double(text)
            if as_float is not None and as_float.is_integer():
                number = int(as_float)
    if number is None or not _INT32[0] <= number <= _INT32[1]:
        return None
    return number


def _double(value: Any) -> float | None:
    value = _single(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.strip().replace("_", "x")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def extract(raw: dict, attr: Attr) -> object:
    """The value of a custom attribute (``attr.source``) in a raw Graph object, as Assets accepts it for
    ``attr.type``; None when missing or unusable. Never raises on odd data."""
    if not attr.source or not isinstance(raw, dict):
        return None
    try:
        value = _walk(raw, attr.source.split("."))
        kind = attr.type
        if kind == "boolean":
            return _boolean(value)
        if kind == "integer":
            return _integer(value)
        if kind == "double":
            return _double(value)
        if kind in ("date", "date_time"):
            text = _text(_first(value))
            return text if text and _TIMESTAMP.match(text) else None
        if kind == "email":
            text = _text(_first(value))
            return text if text and _EMAIL.match(text) else None
        if kind == "url":
            text = _text(_first(value))
            return text if text and _URL.match(text) else None
        text = _text(value)
        if text is not None and kind == "text" and len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT]
        return text
    except Exception:  # noqa: BLE001 - odd data gives no value, never a failed run
        return None


# ------------------------------------------------------------------------------------------------------------
# Comparing with the live schema


def _object_types(document: dict) -> list[dict]:
    """Every object type of a schema-and-mapping document, children included, in document order."""
    try:
        roots = document["schema"]["objectSchema"]["objectTypes"]
    except (KeyError, TypeError):
        return []
    out: list[dict] = []
    stack = [t for t in reversed(roots or []) if isinstance(t, dict)]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(c for c in reversed(t.get("children") or []) if isinstance(c, dict))
    return out


def _attributes(document: dict) -> dict[str, tuple[dict, dict]]:
    """``{attribute externalId: (object type, attribute)}``."""
    out: dict[str, tuple[dict, dict]] = {}
    for t in _object_types(document):
        for a in t.get("attributes") or []:
            if isinstance(a, dict) and a.get("externalId"):
                out.setdefault(a["externalId"], (t, a))
    return out


_FIX = "rename it in Assets first (Schema › {type} › attributes) or revert the MAPPING_FILE change"


def incompatible_changes(live: dict, new: dict) -> list[str]:
    """What sending ``new`` over ``live`` (both schema-and-mapping documents, matched by external id) would
    need but the add-only PATCH cannot do: renamed object types or attributes, retyped attributes, retargeted
    references, changed cardinality. One readable line each, saying what to do instead. Additions and
    attributes no longer mapped are not incompatible (see ``unmapped_attributes``)."""
    problems: list[str] = []
    live_types = {t.get("externalId"): t for t in _object_types(live) if t.get("externalId")}
    for t in _object_types(new):
        old = live_types.get(t.get("externalId"))
        if old is not None and old.get("name") != t.get("name"):
            problems.append(f"object type '{old.get('name')}' ({t['externalId']}) would be renamed to "
                            f"'{t.get('name')}', which Assets imports cannot do: rename the object type in "
                            "Assets first (Schema › object type › Edit) or keep its name")
    live_attributes = _attributes(live)
    for xid, (t, a) in _attributes(new).items():
        if xid not in live_attributes:
            continue
        live_type, old = live_attributes[xid]
        where = f"{t.get('name')}: attribute '{old.get('name')}' ({xid})"
        if old.get("name") != a.get("name"):
            problems.append(f"{where} would be renamed to '{a.get('name')}', which Assets imports cannot do: "
                            + _FIX.format(type=live_type.get("name")))
        if old.get("type") and a.get("type") and old.get("type") != a.get("type"):
            problems.append(f"{where} is {old.get('type')} in Assets but {a.get('type')} in the new mapping, "
                            "and Assets imports cannot change an attribute's type: revert the type in the "
                            "MAPPING_FILE, or give the attribute a new name (a new attribute) and delete the "
                            "old one in Assets")
        old_target = old.get("referenceObjectTypeExternalId")
        new_target = a.get("referenceObjectTypeExternalId")
        if old_target and new_target and old_target != new_target:
            problems.append(f"{where} refers to {old_target} in Assets but to {new_target} in the new "
                            "mapping, and Assets imports cannot change a reference's target: delete the "
                            "attribute in Assets first or revert the change")
        old_max, new_max = old.get("maximumCardinality"), a.get("maximumCardinality")
        if old_max is not None and new_max is not None and old_max != new_max:
            problems.append(f"{where} holds {_cardinality(old_max)} in Assets but {_cardinality(new_max)} in "
                            "the new mapping, which Assets imports cannot change: change it in Assets first "
                            f"(Schema › {live_type.get('name')} › attributes) or revert the change")
    return problems


def _cardinality(n: Any) -> str:
    return "any number of values" if n == -1 else f"at most {n} value" + ("" if n == 1 else "s")


def unmapped_attributes(live: dict, new: dict) -> list[str]:
    """Attributes (and object types) that entra-assets created in Assets but the new document no longer maps:
    Assets keeps them and their values, which stop being updated. One note line each."""
    new_types = {t.get("externalId") for t in _object_types(new) if t.get("externalId")}
    prefixes = {x.rsplit("/", 1)[0] + "/" for x in new_types if "/" in x}
    new_attributes = _attributes(new)
    notes: list[str] = []
    for t in _object_types(live):
        xid = t.get("externalId")
        if not xid:
            continue
        if xid not in new_types:
            if any(xid.startswith(p) for p in prefixes):
                notes.append(f"object type '{t.get('name')}' ({xid}) is no longer synchronised; Assets keeps "
                             "it and its objects")
            continue
        for a in t.get("attributes") or []:
            axid = a.get("externalId") if isinstance(a, dict) else None
            if axid and axid.startswith(xid + "/") and axid not in new_attributes:
                notes.append(f"{t.get('name')}: attribute '{a.get('name')}' ({axid}) is no longer mapped; "
                             "Assets keeps it and its values, which stop being updated (delete it in "
                             "Assets if unwanted)")
    return notes
