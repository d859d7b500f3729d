"""Jira user links (SPEC §5): which Atlassian account each user is, pushed with the import, then ``Jira User``.

How it fits the pipeline (a deviation from SPEC §5's "the worker resolves": the *producers* resolve):
1. Where User records are built - the full run's planner and the delta catch-up - each batch of users is
   resolved through a ``JiraDirectory`` (cache + rate-limited searches, ``shared.clients.jira``) *before* mapping, and
   the pure ``shared.records.build.map_user`` gets a plain lookup {Entra id: account id}. ``Atlassian Account
   ID`` and ``Manager Atlassian Account ID`` (added to User by ``shared.records.schema.with_link_attributes``)
   are then part of the record and of its hash: a new match changes the hash and is
   pushed by the usual diff; nothing changes, nothing is pushed.
2. After the execution is DONE, the worker (``apply_links``) sets the Assets *User* attribute ``Jira User``
   through the object API for the users of that execution whose account differs from the link last set (kept
   in the state), and clears it when the match is gone. Failures are reported and retried on the next pass;
   they never undo the execution.

3. Lookups the budget left for later are not left for the next *full* run (daily: a 100,000-user directory
   would take 20 days at 5,000 a run). Every catch-up spends its own budget (``CATCH_UP_LOOKUPS`` searches,
   ``CATCH_UP_SECONDS`` of searching) in ``AccountLinker.sweep`` on users whose lookup is pending (their ids
   wait in ``jira/lookups``) or due (their cache entry expired: ``AccountCache.due``), reading only those
   users' stored records, and emits their stored record with the new account where it changed.

4. Jira failing - a wrong or revoked token, a missing permission, a site that keeps failing or times out -
   degrades linking only (DESIGN "fail apart"): the run's lookups stop at the first failure
   (``JiraDirectory.failure``), its users keep the account they were last pushed with (never an empty one,
   which would change every hash and unlink everyone), stay pending for the next runs, and the run's
   warnings say why in one line (``degraded``; ``shared.store.history`` keeps it as the run's ``linking``).
   ``apply_links`` keeps its links pending the same way. The directory data is pushed as usual.

The manager's account comes from the accounts resolved in this run, else from the manager's stored record.
In a full run, a user whose manager comes later in the listing is held back until the manager is resolved
(at most ``MAX_DEFERRED`` users; past that, and in a catch-up, the stored value is used): a manager whose
account changed reaches the reports' ``Manager Atlassian Account ID`` by the next full run at the latest. A
sweep sets it only between users of the same sweep (finding a user's reports would mean reading every record).

State (checkpoints): ``jira/cache`` (e-mail hash → account, ``shared.clients.jira``), ``jira/lookups`` (sorted ids of
users whose lookup is pending), ``jira/links`` (Entra id → the account ``Jira User`` holds), ``jira/pending``
(links still to write), ``jira/unmatched`` (ids of users with an e-mail and no account, for ``status``),
``jira/target`` (object type and attribute ids in Assets). Like every checkpoint they are committed with the
run's records, after the execution is DONE.
"""
from __future__ import annotations

import itertools
import logging
import re
from collections import ChainMap
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import orjson

from shared.clients.assets_objects import USER_ATTRIBUTE_TYPE, ObjectApi
from shared.clients.jira import PENDING, AccountCache, JiraDirectory, email_key, jira_client, problem
from shared.clients.transport import RetryPolicy, http_client
from shared.contract.checkpoints import JIRA_CACHE, JIRA_LOOKUPS, JIRA_UNMATCHED
from shared.errors import EntraAssetsError, RemoteError
from shared.records.build import Record, Warnings, clean, is_deactivated, make_record, manager_of
from shared.records.schema import ACCOUNT, MANAGER_ACCOUNT
from shared.store.ports import StateStore

if TYPE_CHECKING:  # the worker calls the hook; importing it at run time is not needed
    from shared.deliver.worker import AfterDone

log = logging.getLogger(__name__)

JIRA_USER = "Jira User"
IDENTITY = "Entra Object ID"
LINKS, PENDING_LINKS, TARGET = "jira/links", "jira/pending", "jira/target"  # the after-DONE hook's own state
UNMATCHED_KIND = "no Jira account with the user's e-mail"
NOT_LOOKED_UP = "Jira account not looked up yet (lookup budget of the run reached; the next catch-ups do it)"
DEGRADED = "Jira linking degraded"   # the start of the warning kind of users whose lookup Jira failed
# A catch-up plans inside the worker's pass, under the writer lease (60 s, renewed only between chunks sent
# to Assets), so its searches are bounded in number and in time: at the default 10 requests a second, about
# 200 searches a catch-up, i.e. some 19,000 a day from the 15-minute timer alone (plus one catch-up per change
# notification) - a 100,000-user directory is linked in days, not weeks. The count cap keeps a fast site
# from turning one catch-up into a long one; JIRA_LOOKUPS_PER_RUN still applies when it is smaller.
CATCH_UP_LOOKUPS = 1000
CATCH_UP_SECONDS = 20.0
BATCH = 200                 # users resolved together (one stored-records read for their managers)
MAX_DEFERRED = 50_000       # users held back in a full run until their manager is resolved
AQL_BATCH = 50              # Entra ids per AQL "IN (...)" query
WRITES_PER_PASS = 2000      # Jira User writes per worker pass; the rest stays pending for the next pass
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def user_email(user: dict) -> str | None:
    """The e-mail a user is matched by: ``mail`` as the record carries it (cleaned, valid), else None."""
    email = clean(user.get("mail"))
    return email if email and _EMAIL.match(email) else None


def degraded(reason: str) -> str:
    """The warning kind of the users a Jira failure left unlooked-up (counted, with sample ids, per run)."""
    return f"{DEGRADED} ({reason}): Jira account kept as last pushed, looked up again by the next runs"


def degraded_reason(warnings: Warnings) -> str | None:
    """The linking problem a run's warnings report (``degraded``), as one line without the count, or None."""
    return next((kind for kind in sorted(warnings.counts) if kind.startswith(DEGRADED)), None)


class AccountLinker:
    """One run's account resolution: ``users()`` passes Graph users through, resolving them in batches;
    ``accounts`` is the lookup to map them with; ``sweep()`` (catch-ups) resolves pending and due users from
    their stored records; ``checkpoints()`` what to commit with the run."""

    def __init__(self, directory: JiraDirectory, state: StateStore, warnings: Warnings, unmatched: Warnings):
        self.directory, self.state, self.warnings, self.unmatched = directory, state, warnings, unmatched
        self.resolved: dict[str, str | None] = {}
        self.stored: dict[str, str | None] = {}
        self.accounts = ChainMap(self.resolved, self.stored)
        self.unmatched_ids: set[str] = set()
        self.waiting: set[str] = set()    # users whose lookup the budget left for later (-> jira/lookups)
        self.settled: set[str] = set()    # pending users a sweep found nothing to look up for (left, no e-mail)
        self._lookups: list[str] | None = None  # jira/lookups as read by this run (catch-ups only)

    def for_catch_up(self) -> AccountLinker:
        """Bound this run's searches as a catch-up's (``CATCH_UP_LOOKUPS``, ``CATCH_UP_SECONDS``)."""
        self.directory.budget = min(self.directory.budget, CATCH_UP_LOOKUPS)
        self.directory.time_limit = CATCH_UP_SECONDS
        return self

    def users(self, objects: Iterable[dict], scope, defer: bool) -> Iterator[dict]:
        """``objects`` again, each user resolved before it is yielded. With ``defer`` (full runs), users whose
        manager is not resolved yet come at the end (or when ``MAX_DEFERRED`` is reached)."""
        deferred: list[dict] = []
        objects = iter(objects)
        for batch in iter(lambda: list(itertools.islice(objects, BATCH)), []):
            live = [u for u in batch if "@removed" not in u and (scope is None or u["id"] in scope)]
            if len(live) < len(batch):  # departures of this run: no lookup, and none by a sweep of the same run
                self.settled.update({u["id"] for u in batch} - {u["id"] for u in live})
            self._resolve(live)
            if not defer:
                self._stored_managers(live)
                yield from batch
                continue
            for user in batch:
                manager = manager_of(user)
                if manager and manager not in self.resolved and "@removed" not in user:
                    deferred.append(user)
                else:
                    yield user
            if len(deferred) >= MAX_DEFERRED:
                self._stored_managers(deferred)
                yield from deferred
                deferred = []
        self._stored_managers([u for u in deferred if manager_of(u) not in self.resolved])
        yield from deferred

    def _resolve(self, users: list[dict]) -> None:
        emails = {u["id"]: e for u in users if (e := user_email(u))}
        found = self.directory.resolve(set(emails.values()), {e: uid for uid, e in emails.items()})
        waiting = [uid for uid, e in emails.items() if found[e] is PENDING]
        previous = self.state.records("user", waiting) if waiting else {}
        for user in users:
            uid = user["id"]
            email = emails.get(uid)
            account = found[email] if email else None
            if account is PENDING:
                self._not_looked_up(uid)
                self.waiting.add(uid)
                account = (previous.get(uid) or {}).get(ACCOUNT.locator)
            else:
                self._note(uid, email, account)
            self.resolved[uid] = account

    def _not_looked_up(self, uid: str) -> None:
        failure = self.directory.failure
        self.warnings.add(degraded(failure) if failure else NOT_LOOKED_UP, uid)

    def _note(self, uid: str, email: str | None, account: str | None) -> None:
        if email and account is None:
            self.unmatched.add(UNMATCHED_KIND, uid)
            self.unmatched_ids.add(uid)

    def _stored_managers(self, users: list[dict]) -> None:
        wanted = {manager_of(u) for u in users} - self.resolved.keys() - self.stored.keys() - {None}
        if wanted:
            records = self.state.records("user", wanted)
            for manager in wanted:
                self.stored[manager] = (records.get(manager) or {}).get(ACCOUNT.locator)

    def sweep(self, scope: Container[str] | None, hashes: Mapping[str, Mapping[str, str]]) -> Iterator[Record]:
        """A catch-up's use of the searches its user round left: the users whose lookup is pending
        (``jira/lookups``, in id order), then those whose cache entry expired longest ago, at most as
        many as searches remain, read from the state in one ``records`` call. Yields, for each whose account
        (or manager's account, when the manager was swept too) changed, the stored record with the new values.

        Users the round mapped are left to it; users not in ``scope``, departed (``D`` hash, ``hashes["user"]``
        read only when there is someone to look up), never pushed, without an e-mail or pushed without link
        attributes leave the pending list (a full run puts them back if they still need a lookup) and their
        expired cache entry is dropped. Does no search and reads no record when nothing is pending or due."""
        remaining = self.directory.remaining()
        if remaining <= 0:
            return
        self._lookups = orjson.loads(self.state.checkpoint(JIRA_LOOKUPS) or "[]")
        done = self.resolved.keys() | self.settled  # mapped or departed in this catch-up's round
        wanted = [uid for uid in self._lookups if uid not in done][:remaining]
        due: dict[str, str] = {}  # Entra id -> key of its expired cache entry
        if len(wanted) < remaining:
            taken = set(wanted)
            for key, uid in self.directory.cache.due(self.directory.clock()):
                if uid not in taken and uid not in done and uid not in due:
                    due[uid] = key
                    if len(wanted) + len(due) >= remaining:
                        break
        if not wanted and not due:
            return
        log.info("Jira lookups in this catch-up: %d pending, %d due again", len(wanted), len(due))
        live = self._live([*wanted, *due], due, scope, hashes)
        found = self.directory.resolve({e for _, e in live.values()}, {e: uid for uid, (_, e) in live.items()})
        accounts: dict[str, str | None] = {}
        for uid, (_, email) in live.items():
            if found[email] is not PENDING:  # PENDING: the time limit struck, or Jira failed; pending next time
                accounts[uid] = self.resolved[uid] = found[email]
                self._note(uid, email, accounts[uid])
            elif self.directory.failure:
                self._not_looked_up(uid)
        for uid, account in accounts.items():
            data = live[uid][0]
            new = {**data, ACCOUNT.locator: account}
            manager = data.get("managerId")
            if manager in accounts and MANAGER_ACCOUNT.locator in data:
                new[MANAGER_ACCOUNT.locator] = accounts[manager]
            if new != data:
                yield make_record("user", uid, new)

    def _live(self, ids: list[str], due: dict[str, str], scope: Container[str] | None,
              hashes: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[dict, str]]:
        """{Entra id: (stored data, e-mail)} of ``ids`` worth a lookup; the others are settled, and expired
        cache entries that no longer belong to their user are dropped."""
        stored, pushed = self.state.records("user", ids), hashes["user"]
        live: dict[str, tuple[dict, str]] = {}
        for uid in ids:
            data, digest = stored.get(uid), pushed.get(uid)
            email = user_email({"mail": data.get("email")}) if data else None
            if data is None or digest is None or is_deactivated(digest) or (scope is not None and uid not in scope) \
                    or email is None or ACCOUNT.locator not in data:
                self.settled.add(uid)
                email = None
            if uid in due and (email is None or email_key(email) != due[uid]):
                self.directory.cache.forget(due[uid])  # the user left or changed address: an orphan entry
            if email is not None:
                live[uid] = (data, email)
        return live

    def checkpoints(self, full: bool) -> dict[str, str | None]:
        """The cache (when searches changed it), the unmatched ids and the pending lookups: replaced by a full
        run, merged by a catch-up (users it mapped or swept leave the lists unless still unmatched or pending).
        A catch-up that changed nothing returns nothing."""
        out: dict[str, str | None] = {}
        if self.directory.cache.changed:
            out[JIRA_CACHE] = self.directory.cache.dump()
        if self.resolved:
            ids = set(self.unmatched_ids)
            if not full:
                ids |= set(orjson.loads(self.state.checkpoint(JIRA_UNMATCHED) or "[]")) - self.resolved.keys()
            out[JIRA_UNMATCHED] = orjson.dumps(sorted(ids)).decode()
        if full:
            out[JIRA_LOOKUPS] = orjson.dumps(sorted(self.waiting)).decode() if self.waiting else None
        elif self.resolved or self.settled:
            before = set(orjson.loads(self.state.checkpoint(JIRA_LOOKUPS) or "[]") if self._lookups is None
                         else self._lookups)
            after = (before - self.resolved.keys() - self.settled) | self.waiting
            if after != before:
                out[JIRA_LOOKUPS] = orjson.dumps(sorted(after)).decode() if after else None
        return out


@dataclass(frozen=True)
class Linking:
    """What a run needs to link users (``RunOptions.linking``); None there when JIRA_* are unset."""

    settings: object = field(repr=False)

    def linker(self, state: StateStore, warnings: Warnings, unmatched: Warnings) -> AccountLinker:
        client = jira_client(self.settings, http_client(30.0))
        directory = JiraDirectory(client, AccountCache(state.checkpoint(JIRA_CACHE)), self.settings.jira_lookups_per_run)
        return AccountLinker(directory, state, warnings, unmatched)


def linking_for(settings) -> Linking | None:
    return Linking(settings) if settings.jira_enabled else None


# ------------------------------------------------------------------------------------------------------------
# After the execution: the Jira User attribute


@dataclass
class LinkOutcome:
    """What one pass did to ``Jira User``: links set, cleared, users not found in Assets, left for later;
    ``error`` the failure that stopped it (what to do, for the CLI), ``reason`` its one line for the history."""

    set: int = 0
    cleared: int = 0
    missing: int = 0
    left: int = 0
    error: str | None = None
    reason: str | None = None

    def lines(self) -> list[str]:
        out = [f"Jira User links: {self.set} set, {self.cleared} cleared"
               + (f", {self.left} left for the next pass" if self.left else "")] if self.set or self.cleared or \
            self.left else []
        if self.error:
            out.append(f"Jira User links not written (retried next pass): {self.error}")
        return out


def object_api(settings, http: httpx.Client | None = None) -> ObjectApi:
    """The object API of the site's Assets workspace (workspace id from the Jira site)."""
    http = http or http_client(30.0)
    site = jira_client(settings, http)
    return ObjectApi(site.transport, settings.assets_api_url, site.workspace_id(), settings.jira_email,
                     settings.jira_api_token.reveal(), site.bucket)


CHECK_POLICY = RetryPolicy(attempts=3, total_seconds=15.0, request_seconds=10.0)  # status pages wait for it


def check_linking(settings) -> str:
    """``check``: the site user's credentials (``GET /rest/api/3/myself``) and the site's Assets workspace,
    within ``CHECK_POLICY`` (``status`` and the status page run it too). Returns the line to print; raises
    ``JiraError`` (401/403) or ``RemoteError`` saying what to fix."""
    site = jira_client(settings, http_client(30.0), policy=CHECK_POLICY)
    site.myself()
    site.workspace_id()
    return f"Jira linking: ok (JIRA_EMAIL signs in to {site.site_url}, which has an Assets workspace)"


def find_target(api: ObjectApi, schema_key: str, create: bool) -> dict[str, str]:
    """The ids of entra-assets' User object type, its identity attribute and its ``Jira User`` attribute,
    creating that attribute (type User) when ``create``. Schemas whose key is ``schema_key`` are tried first.
    Raises ``RemoteError`` naming what is missing."""
    schemas = sorted(api.schemas(), key=lambda s: s.get("objectSchemaKey") != schema_key)
    for schema in schemas:
        for object_type in api.object_types(str(schema["id"])):
            if object_type.get("name") != "User":
                continue
            type_id = str(object_type["id"])
            by_name = {a.get("name"): a for a in api.attributes(type_id)}
            if IDENTITY not in by_name:
                continue
            jira = by_name.get(JIRA_USER)
            if jira is None:
                if not create:
                    raise RemoteError(f"the User object type has no '{JIRA_USER}' attribute: run `entra-assets setup`")
                jira = api.create_user_attribute(type_id, JIRA_USER, "Jira user of this person (set by entra-assets)")
            elif jira.get("type") != USER_ATTRIBUTE_TYPE:
                raise RemoteError(f"User already has an attribute '{JIRA_USER}' that is not of type User: rename or "
                                  "delete it in Assets (Schema › User › Attributes), then run `entra-assets setup`")
            return {"type": type_id, "identity": str(by_name[IDENTITY]["id"]), "jira": str(jira["id"])}
    raise RemoteError("no object schema of the Assets workspace has entra-assets' User object type (with "
                      f"'{IDENTITY}'): run `entra-assets setup` with ASSETS_IMPORT_TOKEN of that schema's import first")


def ensure_jira_user_attribute(settings, state: StateStore) -> list[str]:
    """``setup``: make sure User has the ``Jira User`` attribute (type User); remember the ids. Returns notes."""
    target = find_target(object_api(settings), settings.schema_key, create=True)
    state.commit({}, {TARGET: orjson.dumps(target).decode()})
    note = (f"Jira user linking on: User attribute '{JIRA_USER}' is set through the Assets object API after "
            "each import (it needs the account of JIRA_EMAIL to be an Assets schema manager)")
    return [note]


def wanted_links(user_records: Iterable[tuple[str, bytes]]) -> dict[str, str | None]:
    """{Entra id: account id or None} of the User records pushed, given as (id, data as JSON) pairs, a later pair
    of an id winning (records pushed without linking: none)."""
    wanted: dict[str, str | None] = {}
    for uid, data in user_records:
        record = orjson.loads(data)
        if ACCOUNT.locator in record:
            wanted[uid] = record[ACCOUNT.locator]
    return wanted


def apply_links(state: StateStore, user_records: Iterable[tuple[str, bytes]], api: Callable[[], ObjectApi], schema_key: str,
                renew: Callable[[], None] = lambda: None) -> LinkOutcome:
    """Set ``Jira User`` on the objects whose account differs from the last link set: the users of this
    execution, plus links left pending by an earlier pass. Commits the new links and what is left pending.
    Never raises for an API failure: it is in ``outcome.error`` and the links stay pending."""
    outcome = LinkOutcome()
    pending = orjson.loads(state.checkpoint(PENDING_LINKS) or "{}")
    wanted = pending | wanted_links(user_records)
    if not wanted:
        return outcome
    links: dict[str, str] = orjson.loads(state.checkpoint(LINKS) or "{}")
    todo = {uid: account for uid, account in wanted.items() if links.get(uid) != account}
    if not todo:  # the usual pass: every link already as wanted - the links checkpoint is not rewritten
        if pending:
            state.commit({}, {PENDING_LINKS: None})
        return outcome
    try:
        _write(api(), state, schema_key, todo, links, outcome, renew)
    except EntraAssetsError as error:
        outcome.error, outcome.reason = str(error), problem(error)
        if isinstance(error, RemoteError):
            state.commit({}, {TARGET: None})  # ids may be stale (attribute deleted...): look them up again
    outcome.left = len(todo)
    state.commit({}, {LINKS: orjson.dumps(links).decode() if links else None,
                      PENDING_LINKS: orjson.dumps(todo).decode() if todo else None})
    log.info("Jira User: %d set, %d cleared, %d not in Assets, %d pending", outcome.set, outcome.cleared,
             outcome.missing, outcome.left)
    return outcome


def _write(api: ObjectApi, state: StateStore, schema_key: str, todo: dict, links: dict, outcome: LinkOutcome,
           renew: Callable[[], None]) -> None:
    """Write ``todo`` links in batches (AQL to find the objects, one PUT each), moving each done one from
    ``todo`` into ``links``; at most ``WRITES_PER_PASS``."""
    raw = state.checkpoint(TARGET)
    target = orjson.loads(raw) if raw else find_target(api, schema_key, create=False)
    if not raw:
        state.commit({}, {TARGET: orjson.dumps(target).decode()})
    uids = sorted(todo)[:WRITES_PER_PASS]
    for start in range(0, len(uids), AQL_BATCH):
        chunk = uids[start:start + AQL_BATCH]
        quoted = ", ".join('"' + u.replace("\\", "\\\\").replace('"', '\\"') + '"' for u in chunk)
        found = {}
        for obj in api.find(f'objectTypeId = {target["type"]} AND "{IDENTITY}" IN ({quoted})'):
            for attribute in obj.get("attributes") or ():
                if str(attribute.get("objectTypeAttributeId")) == target["identity"]:
                    for value in attribute.get("objectAttributeValues") or ():
                        found[str(value.get("value"))] = str(obj["id"])
        for uid in chunk:
            account = todo[uid]
            if uid not in found:  # not in Assets (its record failed there): nothing to link, drop it
                outcome.missing += 1
                del todo[uid]
                continue
            api.set_values(found[uid], target["type"], target["jira"], [account] if account else [])
            del todo[uid]
            if account:
                links[uid] = account
                outcome.set += 1
            else:
                links.pop(uid, None)
                outcome.cleared += 1
        renew()


def link_hook(settings) -> AfterDone | None:
    """The worker's after-DONE step for these settings, or None when linking is off."""
    if not settings.jira_enabled:
        return None
    return lambda state, pushed, renew: apply_links(state, pushed.records_of("user"), lambda: object_api(settings),
                                                    settings.schema_key, renew)


def unmatched_ids(state: StateStore) -> list[str]:
    """The object ids (never e-mails) of the users whose e-mail matched no Jira account in the last runs (for
    ``status``). Empty when linking is off or has not run."""
    return orjson.loads(state.checkpoint(JIRA_UNMATCHED) or "[]")


def linked_count(state: StateStore) -> int:
    """How many users have ``Jira User`` set by entra-assets."""
    return len(orjson.loads(state.checkpoint(LINKS) or "{}"))
