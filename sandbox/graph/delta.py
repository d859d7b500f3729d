"""Delta rounds of the Graph emulator: ``GET /{c}/delta`` for users, groups, devices and servicePrincipals.

A ``GraphEmulator`` mixin. ``GET /{c}/delta`` round trips: an initial round in pages with ``@odata.nextLink``
(``$skiptoken``) ending in ``@odata.deltaLink`` (``$deltatoken``), later rounds with only the changed objects,
``@removed`` reasons, ``manager@delta`` (users), ``members@delta`` (groups; a large group's members are split
over consecutive pages, the group repeated on each, reference §2.5), ``$deltatoken=latest`` and
``Prefer: return=minimal``. Knobs (on the emulator): ``expire_delta_tokens``, ``token_ttl``, ``page_size``
(users delta) and ``page_sizes`` (every delta).

Page sizes: users delta ``DEFAULT_PAGE_SIZE`` (200 users); groups delta ``GROUP_DELTA_PAGE_SIZE`` (200 group
objects + ``members@delta`` entries together); devices and servicePrincipals delta 200 objects.

An initial round pages the tenant's insertion order by index up to the length it had when the round started;
its deltaLink carries the tenant version at that start, so objects changed or added mid-round show up (again)
in the next round and none is ever skipped. A later round pages the change-log slice between the two versions
(``Tenant.changes_since``). Token format: ``sandbox/graph/paging.py``.

Sources: /work/shared/reference/graph.md §2.1-2.6 (delta round trip, tokens and query options, change shapes,
``members@delta`` paging, expiry); https://learn.microsoft.com/en-us/graph/api/user-delta,
https://learn.microsoft.com/en-us/graph/api/group-delta, https://learn.microsoft.com/en-us/graph/delta-query-overview.

UNCONFIRMED behaviours (emulator choices):
- 200 users per users-delta page (community reports, reference §2.3); every page but the last is full. Groups
  delta pages hold at most 200 objects + member entries; devices/servicePrincipals delta 200 objects.
- A split group repeats all its selected properties on every page that carries a slice of its members; a group
  without members has no ``members@delta``. Without ``$select`` groups delta tracks ``members`` (reference
  §2.5). A later round lists only added members and removed ones (``"@removed": {"reason": "deleted"}``);
  a group created in the range lists all its members.
- The 400 code/message for properties outside the main store in a delta ``$select`` (``Request_UnsupportedQuery``),
  for ``$orderby``/``$filter``/``$count``/``$search`` on delta and for ``$select`` with ``$skiptoken``;
  ``$select`` is case-sensitive here and may contain spaces around commas.
- The shape of a removed manager link: ``{"@odata.type", "id": <old manager>, "@removed": {"reason": "deleted"}}``,
  sent in the round where the link was removed; a manager change reports only the new manager.
- Deleting a user (soft or permanent) removes its reports' manager links and its memberships and ownerships
  (see ``sandbox/tenant/model.py``); devices are deleted permanently (reason "deleted").
- ``$select`` with ``$deltatoken`` replaces the tracked properties of the new round (reference §2.2: "supported
  for some Entra resources").
- 410 (forced resync, ``expire_delta_tokens(gone=True)``) uses code ``resyncRequired``; expired or foreign
  skiptokens answer like delta tokens (400 ``syncStateNotFound``).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import (
    RESOURCES,
    GraphError,
    Resource,
    View,
    bad_request,
    link_entry,
    parse_select,
    sync_state_not_found,
    view,
)
from sandbox.graph.paging import Page, Tokens, json_response, select_from_token, select_to_token, version_base
from sandbox.tenant.model import Change, Tenant

DEFAULT_PAGE_SIZE = 200          # users per /users/delta page (UNCONFIRMED, reference §2.3)
GROUP_DELTA_PAGE_SIZE = 200      # group objects + members@delta entries per /groups/delta page (reference §2.5)
DEVICE_DELTA_PAGE_SIZE = 200     # devices per /devices/delta page (UNCONFIRMED)
SERVICE_PRINCIPAL_DELTA_PAGE_SIZE = 200  # per /servicePrincipals/delta page (UNCONFIRMED)
DELTA_PAGE_SIZES = {"users": DEFAULT_PAGE_SIZE, "groups": GROUP_DELTA_PAGE_SIZE, "devices": DEVICE_DELTA_PAGE_SIZE,
                    "servicePrincipals": SERVICE_PRINCIPAL_DELTA_PAGE_SIZE}
TOKEN_TTL_SECONDS = 7 * 24 * 3600  # delta links of directory objects last 7 days (reference §2.6)


class DeltaRounds:
    """``GET /{c}/delta``; mixed into ``GraphEmulator``, which owns the state below (see its ``__init__``)."""

    tenant: Tenant
    base_url: str
    page_sizes: dict[str, int]
    token_ttl: float
    _tokens: Tokens
    _epoch: int
    _gone_epochs: set[int]
    _lock: threading.RLock
    _change_cache: OrderedDict[tuple, list[Change]]

    def _delta(self, request: Request, res: Resource) -> Response:
        """``GET /{c}/delta``: an initial round, a page of a round (``$skiptoken``) or a later round."""
        args = request.args
        for option in ("$orderby", "$filter", "$count", "$search", "$skip"):
            if option in args:
                raise bad_request(f"Invalid request for delta query: {option} is not supported.",
                                  "Request_UnsupportedQuery")
        skip, delta = args.get("$skiptoken"), args.get("$deltatoken")
        if skip is not None and delta is not None:
            raise bad_request("$skiptoken and $deltatoken cannot be used together.")
        if skip is not None:
            if "$select" in args:  # reference §2.2: $select with a $skiptoken is not supported
                raise bad_request("$select is not supported together with $skiptoken; follow the nextLink as is.")
            return self._delta_page(request, self._decode_round(skip, ("i", "c"), res))
        raw = args.get("$select")  # $top and $expand are ignored on delta (reference §1.5, §2.2)
        select = parse_select(raw, res, where="delta") if raw is not None else None
        indices = select_to_token(res, select)
        with self.tenant.lock:
            now, version, end = int(time.time()), self.tenant.version, len(self.tenant.orders[res.name])
            lagged = self.tenant.version_at(time.monotonic() - self.delta_lag) if self.delta_lag else version
        if not delta:
            return self._delta_page(request, ["i", self._epoch, now, res.name, version, end, 0, 0, indices])
        if delta == "latest":
            return self._delta_page(request, ["c", self._epoch, now, res.name, version, version, 0, 0, indices])
        fields = self._decode_round(delta, ("d",), res)
        indices = indices if raw is not None else fields[5]
        # Knob ``delta_lag``: a later round sees the tenant as it was that many seconds ago - Graph's delta can
        # lag its change notifications (the notification arrives before delta shows the change).
        until = max(fields[4], lagged)
        return self._delta_page(request, ["c", self._epoch, now, res.name, fields[4], until, 0, 0, indices])

    def _decode_round(self, token: str, kinds: tuple[str, ...], res: Resource) -> list:
        """The fields of a delta/skip token of this emulator for ``res``; 400 syncStateNotFound (or 410)."""
        fields = self._tokens.decode(token, kinds)
        if fields is None or fields[3] != res.name:
            raise sync_state_not_found()
        with self._lock:
            epoch, gone = self._epoch, fields[1] in self._gone_epochs
        if gone:
            select = select_from_token(res, fields[-1])
            query = f"$select={','.join(select)}&" if select else ""
            raise GraphError(410, "resyncRequired", "The delta token is no longer valid; synchronize again.",
                             {"Location": f"{self.base_url}/{res.name}/delta?{query}$deltatoken="})
        if fields[1] != epoch or time.time() - fields[2] > self.token_ttl:
            raise sync_state_not_found()
        return fields

    def _delta_page(self, request: Request, state: list) -> Response:
        """One page of a round. ``state``: [kind, epoch, issued, resource, from, to, position, link offset,
        select]; kind "i" pages ``tenant.orders[resource][position:to]`` (``from`` = the version at the
        round's start), kind "c" pages the changes between versions ``from`` and ``to``. A page holds at most
        ``page_sizes[resource]`` objects plus split link entries (groups' ``members@delta``)."""
        kind, epoch, issued, name, start, end, pos, sub, indices = state
        res = RESOURCES[name]
        rendering = view(self.tenant, res, select_from_token(res, indices))
        minimal = "return=minimal" in request.headers.get("Prefer", "").replace(" ", "")
        budget, value = self.page_sizes[name], []
        with self.tenant.lock:
            if kind == "i":
                objects, order = self.tenant.objects[name], self.tenant.orders[name]
                items: Sequence = order
                entry, links = (lambda oid: rendering.entry(objects[oid])), \
                    (lambda oid: rendering.links(objects[oid]))
                live = objects.__contains__
            else:
                items = self._changes(res, start, end, rendering)
                end = len(items)
                entry, links = (lambda c: rendering.change(c, minimal)), rendering.change_links
                live = None
            while pos < end:
                item = items[pos]
                if live is not None and not live(item):
                    pos, sub = pos + 1, 0
                    continue
                if budget <= 0:
                    break
                out, budget = entry(item), budget - 1
                pending = links(item)
                if pending:
                    part = pending[sub:sub + max(budget, 0)]
                    if part:
                        out[f"{res.delta_nav}@delta"] = [link_entry(link) for link in part]
                    budget -= len(part)
                    if sub + len(part) < len(pending):
                        value.append(out)
                        sub += len(part)
                        break
                value.append(out)
                pos, sub = pos + 1, 0
        base = version_base(request)
        context = f"{base}/$metadata#{rendering.context_list}"
        if pos < end:
            token = self._tokens.encode([kind, epoch, issued, name, start, state[5], pos, sub, indices])
            return json_response(Page(context, value, next_link=f"{base}/{name}/delta?$skiptoken={token}").body())
        delta_version = start if kind == "i" else state[5]
        token = self._tokens.encode(["d", epoch, int(time.time()), name, delta_version, indices])
        return json_response(Page(context, value, delta_link=f"{base}/{name}/delta?$deltatoken={token}").body())

    def _changes(self, res: Resource, since: int, until: int, rendering: View) -> list[Change]:
        """The tenant's changes of ``res`` in (since, until] that touch the tracked properties; cached, because
        every page of a round needs the same list and the log slice between two versions never changes."""
        tracked = rendering.tracked()
        key = (res.name, since, until, tracked)
        with self._lock:
            if key not in self._change_cache:
                self._change_cache[key] = self.tenant.changes_since(since, until, tracked, kind=res.name)
                while len(self._change_cache) > 8:
                    self._change_cache.popitem(last=False)
            self._change_cache.move_to_end(key)
            return self._change_cache[key]
