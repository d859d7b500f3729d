"""The errors an admin can act on, each with the importer status it maps to (SPEC §3).

Every message is one line that names the setting, the object or the permission to fix, and never contains a
secret or personal data. The CLI prints ``str(error)`` and exits with ``exit_code``.
"""
from __future__ import annotations


class EntraAssetsError(Exception):
    """Base class: ``status`` is the importer status shown by ``check``/``status`` (or None)."""

    status: str | None = None
    exit_code: int = 1


class SettingsError(EntraAssetsError):
    """One or more settings are missing or invalid; ``problems`` lists each one."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings: " + "; ".join(problems))


class GraphCredentialsError(EntraAssetsError):
    """Microsoft Graph answered 401 (or no token could be obtained)."""

    status = "INVALID_CREDENTIALS"


class GraphPermissionError(EntraAssetsError):
    """Microsoft Graph answered 403: the app registration lacks an application permission."""

    status = "MISSING_PERMISSIONS"


class DeltaExpired(EntraAssetsError):
    """A stored delta link is no longer valid (410, or 400 syncStateNotFound): start a fresh round."""


class AssetsTokenError(EntraAssetsError):
    """The import token is missing (NO_TOKEN) or rejected (INVALID_TOKEN)."""

    def __init__(self, message: str, status: str = "INVALID_TOKEN"):
        super().__init__(message)
        self.status = status


class ImportSourceError(EntraAssetsError):
    """The import source cannot run: DISABLED, MISSING_MAPPING or another 409 reason from `start`."""

    def __init__(self, message: str, status: str):
        super().__init__(message)
        self.status = status


class ExecutionFailed(EntraAssetsError):
    """An Assets execution ended CANCELLED, reported errors, or did not finish in time."""


class RemoteError(EntraAssetsError):
    """An API answered something this client does not expect (after retries, if they applied).

    ``http_status``, ``code`` and ``detail`` carry the API's answer when there was one (Graph sets them)."""

    http_status: int | None = None
    code: str = ""
    detail: str = ""


class ScopeError(EntraAssetsError):
    """A scoping setting (USER_FILTER, GROUP_FILTER, SCOPE_GROUP_ID) was refused by Graph or names nothing."""

    exit_code = 2


class MassDeactivation(EntraAssetsError):
    """A full run would mark more objects Deleted than MAX_DEACTIVATIONS allows (the accidental-deletion
    guard). The other changes were pushed; the deactivations were not."""

    exit_code = 3


class ObjectLimitReached(EntraAssetsError):
    """A full run's new objects would take what entra-assets keeps in Assets past ASSETS_OBJECT_LIMIT (the
    site's object allowance): the run was held whole, nothing was pushed."""

    exit_code = 3


class IncompatibleSchema(EntraAssetsError):
    """The schema change asked for (a MAPPING_FILE rename or retype) cannot be made by Assets' add-only
    mapping PATCH; nothing was sent."""

    exit_code = 2


class WriterBusy(EntraAssetsError):
    """Another entra-assets writer kept the writer lease of the import source for longer than this run waits."""


class TypesNotRead(EntraAssetsError):
    """Object types that could not be read from Graph (a missing permission, an unlicensed feature): the run
    pushed the other types and marked nothing of these Deleted (SPEC §7)."""


class ForeignLink(RemoteError):
    """A server handed out a link (a nextLink, a deltaLink, an import link) to an origin other than the one
    configured for its credentials (SPEC §7): refused before any request, so no credential went there.
    ``host`` names where it pointed."""

    def __init__(self, message: str, host: str):
        super().__init__(message)
        self.host = host


class StorageUnreachable(EntraAssetsError):
    """The storage account of AzureWebJobsStorage (or AzureWebJobsStorage__accountName) did not answer, or
    refused the credential, when the store was opened: nothing was read or written."""


class EventGridError(EntraAssetsError):
    """Event Grid delivery is not ready: the partner topic is missing or not activated, its event subscription
    does not deliver to the sync queue, or the app's identity lacks the role to look (NOTIFICATION_DELIVERY)."""

    status = "MISSING_PERMISSIONS"


class ForeignObjectTypes(EntraAssetsError):
    """Before the first mapping, or a later one that adds object types: the target schema already holds object
    types with the names about to be mapped that entra-assets did not create (no external id, or one without the
    installation's prefix), or setup could not read the schema's object types. The mapping would take them
    over, so nothing was sent; ``setup --adopt`` takes them over explicitly (a guard with an override, like
    ``MassDeactivation``). ``names`` lists the types."""

    exit_code = 3

    def __init__(self, message: str, names: list[str]):
        super().__init__(message)
        self.names = names
