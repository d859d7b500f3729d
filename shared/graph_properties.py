"""What a ``source:`` of the MAPPING_FILE may name: the Graph v1.0 properties of each resource an object type
is read from (user, group, device, servicePrincipal), the ones entra-assets refuses and why, and the
directory-extension form. ``source_problem`` checks a source path against them. Pure.

A source is a dot path whose first segment is a v1.0 property of the resource or a directory extension
``extension_<app id, 32 hex digits without dashes>_<name>``. ``onPremisesExtensionAttributes.`` (users) and
``extensionAttributes.`` (devices) take ``extensionAttribute1``..``15``; ``employeeOrgData.`` takes
``costCenter`` or ``division``; the complex properties in ``_COMPLEX`` take any sub-path (checked for syntax
only); plain properties take no sub-path. Refused, with the reason: properties Graph refuses in a delta
``$select`` (for users those stored outside the main directory store: skills, aboutMe, birthday, ...;
``signInActivity``), properties Graph only returns when reading a single object, and properties that need
permissions entra-assets does not ask for.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from shared.schema import ObjectType

# The Graph resource each primary object type is read from.
RESOURCES = {"user": "user", "group": "group", "device": "device", "application": "servicePrincipal"}


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
# Relationships per resource: named so that a source naming one is told why it cannot be used.
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


# ------------------------------------------------------------------------------------------------------------
# Wording shared with the MAPPING_FILE validator


def show(value: Any) -> str:
    """``value`` as it is quoted in a problem: text in single quotes, anything else as its repr; at most 80
    characters."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def suggest(word: str, choices: Iterable[str], close: bool = True) -> str:
    """A ``(did you mean ...?)`` hint: the same word in another case, else (when ``close``) a near one."""
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded:
        return f" (did you mean '{folded[word.casefold()]}'? names are case-sensitive)"
    if not close:
        return ""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


# ------------------------------------------------------------------------------------------------------------
# Checking a source


def source_problem(source: Any, object_type: ObjectType) -> str | None:
    """Why ``source`` is not a usable Graph property path for ``object_type`` (None when it is)."""
    resource = RESOURCES.get(object_type.key)
    if resource is None:
        return f"{object_type.name} is not read from a Graph resource"
    if not isinstance(source, str) or not source.strip():
        return (f"the source {show(source)} must be a Graph property path such as "
                "'employeeOrgData.costCenter'")
    segments = source.split(".")
    if not all(_SEGMENT.match(s) for s in segments):
        return (f"the source '{source}' is not a property path: use Graph property names separated by dots, "
                "e.g. onPremisesExtensionAttributes.extensionAttribute1")
    first, rest = segments[0], segments[1:]
    if first.startswith("extension_"):
        return _extension_problem(source, first, rest)
    problem = _property_problem(source, first, resource)
    if problem:
        return problem
    return _sub_path_problem(source, first, rest, resource)


def _extension_problem(source: str, first: str, rest: list[str]) -> str | None:
    if not _EXTENSION.match(first):
        return (f"the source '{source}' is not a directory extension: the form is "
                "extension_<app id: 32 hex digits without dashes>_<name>")
    if rest:
        return f"the directory extension '{first}' is a single value; it has no '{'.'.join(rest)}'"
    return None


def _property_problem(source: str, first: str, resource: str) -> str | None:
    """Why ``first`` is not a property of ``resource`` entra-assets can read (None when it is)."""
    properties = _PROPERTIES[resource]
    if first not in properties:
        if first in _RELATIONSHIPS[resource]:
            return f"'{first}' is a relationship of a Graph {resource}, not a property; it cannot be a source"
        return (f"the source '{source}': '{first}' is not a property of a Graph {resource}"
                f"{suggest(first, properties)}")
    refused = _REFUSED[resource].get(first)
    if refused:
        return f"the source '{source}': {first} {refused}"
    return None


def _sub_path_problem(source: str, first: str, rest: list[str], resource: str) -> str | None:
    """Why ``rest`` cannot follow the property ``first`` (None when it can)."""
    fixed = _FIXED.get(resource, {}).get(first)
    if fixed is not None:
        if len(rest) == 1 and rest[0] in fixed:
            return None
        allowed = (f".{fixed[0]}...{fixed[-1]}" if fixed == _EXTENSION_ATTRIBUTES
                   else " or ".join(f".{f}" for f in fixed))
        got = f"'{'.'.join(rest)}'" if rest else "nothing"
        return f"the source '{source}': {first} must be followed by {allowed}, not {got}" + (
            suggest(rest[0], fixed, close=False) if len(rest) == 1 else "")
    if rest and first not in _COMPLEX[resource]:
        return f"the source '{source}': {first} is a plain value; it has no '{'.'.join(rest)}'"
    return None
