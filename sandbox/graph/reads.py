"""Reads of the Graph emulator: single objects, lists, ``$count`` and relationships (``GraphEmulator`` mixin).

Endpoints (below ``/v1.0``, routed by ``sandbox/graph/emulator.py``), for users, groups, devices and
servicePrincipals (``{c}``):
- ``GET /{c}`` lists: ``$select``, ``$top`` (1-999, default 100), ``$filter`` (``sandbox/graph/odata.py``),
  ``$count=true`` with ``ConsistencyLevel: eventual`` (advanced queries: ``@odata.count`` on the first page,
  ``ne``/``not``/``endsWith``), ``$expand`` of one relationship (users: ``manager``; groups: ``members``,
  ``owners``; devices: ``registeredOwners``, ``registeredUsers``; servicePrincipals: ``owners``) with at most
  ``EXPAND_PAGE_SIZE`` (100) objects per page and ``EXPAND_ITEMS`` (20) per expanded list (reference §1.5),
  ``$skiptoken`` paging; ``GET /{c}/$count`` (text/plain, needs ``ConsistencyLevel: eventual``).
- ``GET /{c}/{id}`` (users also by userPrincipalName), ``GET /users/{id}/manager``, ``GET /groups/{id}/members``,
  ``/owners``, ``/transitiveMembers`` (flattened through nested groups, deduplicated), the type casts
  ``…/members/microsoft.graph.user`` and ``…/transitiveMembers/microsoft.graph.user`` (also ``group``,
  ``device``, ``orgContact``), ``GET /devices/{id}/registeredOwners`` (and ``registeredUsers``),
  ``GET /servicePrincipals/{id}/owners``: ``$select``, ``$top``, paging, ``@odata.type`` on every item.
- ``GET /organization``.
Reads returning or filtering on users' ``signInActivity`` pass the checks of ``sandbox/graph/signins.py`` first.
Page sizes: lists and relationships ``$top`` (default 100, max 999), with ``$expand`` at most 100.

Sources: /work/shared/reference/graph.md §1.1-1.6 (endpoints, paging, ``$select`` and default properties,
``$filter`` and advanced queries, ``$expand`` limits, members); https://learn.microsoft.com/en-us/graph/paging,
https://learn.microsoft.com/en-us/graph/aad-advanced-queries.

UNCONFIRMED behaviours (emulator choices):
- The 400 for a bad list skiptoken ("The specified page token value has expired or is invalid.").
- ``$filter``: string comparisons are case-insensitive; ``eq null`` works without advanced query; error wording
  for ``ne``/``not``/``endsWith`` without advanced query ("Operator 'ne' is not supported because the required
  parameters might be missing…"), for more than 15 ``in`` values, for incompatible literal types and for
  syntax errors ("Invalid filter clause: …"). ``$filter`` on delta (Graph allows ``id eq`` only) and on
  relationships, ``$orderby``, ``$search`` and ``$skip`` are 400 ``Request_UnsupportedQuery`` here.
- ``$count=true`` without ``ConsistencyLevel: eventual`` is 400 "$count is not currently supported."; an OData
  cast (``…/microsoft.graph.user``) combined with any query option other than ``$skiptoken`` needs an advanced
  query (reference §1.4 "OData casts combined with other query options"); ``$expand`` with a
  ``ConsistencyLevel`` header is 400 (reference §1.4/§1.5).
- ``$expand``: one relationship per request; nested options (``owners($select=id)``) are 400
  ``Request_UnsupportedQuery`` (the 2026 known issue in reference §1.5; examples with nested options exist only
  for a single user); expanded objects carry their type's default properties and ``@odata.type``; a user
  without a manager has no ``manager`` key.
- Relationship items: orgContacts are id-only stubs (``@odata.type`` + ``id``); ``$select`` on a relationship is
  validated against the union of user, group and device properties (one type after a cast) and each item gets
  the selected properties its type has.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import quote

from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import (
    EXPAND_ITEMS,
    EXPAND_PAGE_SIZE,
    RESOURCES,
    USERS,
    Resource,
    bad_request,
    compile_where,
    not_found,
    parse_expand,
    parse_related_select,
    parse_select,
    parse_top,
    related,
    render_related,
    structural,
    transitive_members,
    unknown_property,
    view,
)
from sandbox.graph.paging import Page, Tokens, json_response, select_from_token, select_to_token, version_base
from sandbox.graph.signins import SIGN_IN, mentions_sign_in
from sandbox.tenant.model import Tenant

RESOURCES_BY_TYPE = {r.type: r.name for r in RESOURCES.values()}


class DirectoryReads:
    """``GET`` of objects, lists, ``$count`` and relationships; mixed into ``GraphEmulator``, which owns the
    state below (see its ``__init__``)."""

    tenant: Tenant
    _tokens: Tokens
    _lock: threading.RLock
    _transitive_cache: OrderedDict[tuple, list[tuple[str, str]]]
    _check_sign_ins: Callable[..., None]   # sandbox/graph/signins.py: reads that return signInActivity

    @staticmethod
    def _count_mode(request: Request) -> tuple[bool, bool]:
        """(``$count=true`` given, advanced query) — advanced = ``ConsistencyLevel: eventual`` + ``$count=true``."""
        raw = request.args.get("$count")
        if raw is not None and raw.lower() not in ("true", "false"):
            raise bad_request(f"Invalid value '{raw}' for $count; expected true or false.", "BadRequest")
        count = raw is not None and raw.lower() == "true"
        eventual = request.headers.get("ConsistencyLevel", "").strip().lower() == "eventual"
        if count and not eventual:
            raise bad_request("$count is not currently supported.")
        return count, count and eventual

    # -- plain reads --------------------------------------------------------------------------------------

    def _organization(self, request: Request) -> Response:
        return json_response({"@odata.context": f"{version_base(request)}/$metadata#organization",
                               "value": [{"id": self.tenant.tenant_id, "displayName": "Sandbox"}]})

    def _subscribed_skus(self, request: Request) -> Response:
        """``GET /subscribedSkus``: the tenant's SKUs in one answer, ``$select`` checked against the v1.0 model
        and no other query option (both UNCONFIRMED: Graph documents no paging and no other option for it)."""
        other = [k for k in request.args if k != "$select"]
        if other:
            raise bad_request(f"Query option '{other[0]}' is not supported.", "BadRequest")
        skus = list(self.tenant.skus.values())
        if "$select" in request.args:
            known = structural("subscribedSku")
            names = [n.strip() for n in request.args["$select"].split(",")]
            if unknown := [n for n in names if n not in known]:
                raise unknown_property(unknown[0], "microsoft.graph.subscribedSku")
            skus = [{n: sku.get(n) for n in ("id", *names)} for sku in skus]
        return json_response({"@odata.context": f"{version_base(request)}/$metadata#subscribedSkus", "value": skus})

    def _find(self, res: Resource, key: str) -> dict | None:
        """An object by id; users also by userPrincipalName (case-insensitive), as ``/users/{id | upn}``."""
        obj = self.tenant.objects[res.name].get(key)
        if obj is None and res is USERS and "@" in key:
            folded = key.casefold()
            obj = next((u for u in self.tenant.users.values()
                        if (u.get("userPrincipalName") or "").casefold() == folded), None)
        return obj

    def _expanded(self, out: dict, res: Resource, obj: dict, expand: tuple[str, ...]) -> dict:
        """``out`` with the ``$expand``-ed relationship: at most ``EXPAND_ITEMS`` objects (reference §1.5)."""
        for relation in expand:
            links = related(self.tenant, res, obj["id"], relation)
            items = []
            for odata_type, oid in links:
                rendered = render_related(self.tenant, odata_type, oid, None)
                if rendered is not None:
                    items.append(rendered)
                    if len(items) == EXPAND_ITEMS:
                        break
            if relation == "manager":
                if items:
                    out["manager"] = items[0]
            else:
                out[relation] = items
        return out

    def _get(self, request: Request, res: Resource, key: str) -> Response:
        args = request.args
        select = parse_select(args["$select"], res, where="single") if "$select" in args else None
        expand = parse_expand(args.get("$expand"), res)
        if res is USERS and select and SIGN_IN in select:
            self._check_sign_ins(request, key=key)
        with self.tenant.lock:
            obj = self._find(res, key)
            if obj is None:
                raise not_found(key)
            body = {"@odata.context": f"{version_base(request)}/$metadata#{res.name}/$entity"}
            return json_response({**body, **self._expanded(view(self.tenant, res, select).object(obj), res, obj, expand)})

    def _get_manager(self, request: Request, key: str) -> Response:
        raw = request.args.get("$select")
        select = parse_select(raw, USERS, where="single") if raw is not None else None
        if select and SIGN_IN in select:
            self._check_sign_ins(request)
        with self.tenant.lock:
            user = self._find(USERS, key)
            if user is None:
                raise not_found(key)
            manager = self.tenant.users.get(self.tenant.managers.get(user["id"], ""))
            if manager is None:
                raise not_found("manager")
            body = {"@odata.context": f"{version_base(request)}/$metadata#directoryObjects/$entity",
                    "@odata.type": USERS.odata_type}
            return json_response({**body, **view(self.tenant, USERS, select).object(manager)})

    def _list(self, request: Request, res: Resource) -> Response:
        """``GET /{c}``: pages of ``$top`` objects in insertion order; the nextLink repeats the options."""
        args = request.args
        for option in ("$orderby", "$search", "$skip", "$deltatoken"):
            if option in args:
                raise bad_request(f"Query option '{option}' is not supported by this emulator on /{res.name}.",
                                  "Request_UnsupportedQuery")
        count, advanced = self._count_mode(request)
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("l",))
            if fields is None or fields[1] != res.name:
                raise bad_request("The specified page token value has expired or is invalid.")
            _, _, pos, top, indices, raw_filter, expand, advanced = fields
            select, expand, count = select_from_token(res, indices), tuple(expand), False
        else:
            pos, top = 0, parse_top(args.get("$top"))
            select = parse_select(args["$select"], res, where="list") if "$select" in args else None
            expand = parse_expand(args.get("$expand"), res)
            if expand and "ConsistencyLevel" in request.headers:
                raise bad_request("$expand is not supported together with advanced queries "
                                  "(ConsistencyLevel: eventual).", "Request_UnsupportedQuery")
            raw_filter = args.get("$filter")
        where = compile_where(raw_filter, res, advanced)
        if res is USERS and mentions_sign_in(select, raw_filter):  # its own rules and throttle, every page
            self._check_sign_ins(request, top=None if "$skiptoken" in args else top)
        limit = min(top, EXPAND_PAGE_SIZE) if expand else top
        rendering = view(self.tenant, res, select)
        with self.tenant.lock:
            order, objects = self.tenant.orders[res.name], self.tenant.objects[res.name]
            found, pos = self._scan(order, objects, pos, len(order), limit, where)
            value = [self._expanded(rendering.object(o), res, o, expand) for o in found]
            total = sum(1 for oid in order if (o := objects.get(oid)) is not None and (where is None or where(o))) \
                if count else None
        next_link = None
        if pos is not None:
            token = self._tokens.encode(["l", res.name, pos, top, select_to_token(res, select), raw_filter,
                                         list(expand), advanced])
            options = "".join(f"{k}={quote(args[k], safe=',$()')}&" for k in ("$select", "$filter", "$expand", "$top")
                              if k in args)
            next_link = f"{version_base(request)}/{res.name}?{options}$skiptoken={token}"
        page = Page(f"{version_base(request)}/$metadata#{rendering.context_list}", value, next_link=next_link,
                    count=total)
        return json_response(page.body())

    def _count(self, request: Request, res: Resource) -> Response:
        """``GET /{c}/$count``: the number of (filtered) objects as text/plain; needs ConsistencyLevel."""
        if request.headers.get("ConsistencyLevel", "").strip().lower() != "eventual":
            raise bad_request("Count is not currently supported without the ConsistencyLevel:eventual header.")
        where = compile_where(request.args.get("$filter"), res, True)
        with self.tenant.lock:
            total = sum(1 for o in self.tenant.objects[res.name].values() if where is None or where(o))
        return Response(str(total), 200, content_type="text/plain;charset=utf-8")

    @staticmethod
    def _scan(order: Sequence[str], objects: dict, pos: int, end: int, limit: int,
              keep: Callable[[dict], bool] | None = None) -> tuple[list[dict], int | None]:
        """Up to ``limit`` live objects from ``order[pos:end]`` (those ``keep`` accepts) and the position of the
        next one, or None when none is left: so every page but the last is full and no page is empty."""
        found = []
        while pos < end:
            obj = objects.get(order[pos])
            if obj is not None and (keep is None or keep(obj)):
                if len(found) == limit:
                    return found, pos
                found.append(obj)
            pos += 1
        return found, None

    # -- relationships ------------------------------------------------------------------------------------

    def _links(self, res: Resource, oid: str, relation: str) -> Sequence[tuple[str, str]]:
        """The links of a relationship; transitive members are cached per (group, tenant version)."""
        if relation != "transitiveMembers":
            return related(self.tenant, res, oid, relation)
        key = (oid, self.tenant.version)
        with self._lock:
            if key not in self._transitive_cache:
                self._transitive_cache[key] = transitive_members(self.tenant, oid)
                while len(self._transitive_cache) > 16:
                    self._transitive_cache.popitem(last=False)
            self._transitive_cache.move_to_end(key)
            return self._transitive_cache[key]

    def _relation(self, request: Request, res: Resource, key: str, relation: str, cast: str | None = None) -> Response:
        """``GET /{c}/{id}/{relation}[/microsoft.graph.{type}]``: directoryObjects with ``@odata.type``."""
        args = request.args
        for option in ("$orderby", "$search", "$skip", "$deltatoken", "$expand", "$filter"):
            if option in args:
                raise bad_request(f"Query option '{option}' is not supported by this emulator on relationships.",
                                  "Request_UnsupportedQuery")
        count, advanced = self._count_mode(request)
        if cast and not advanced and any(k.startswith("$") and k != "$skiptoken" for k in args):
            raise bad_request("An OData cast combined with other query options requires an advanced query: add "
                              "$count=true and the ConsistencyLevel:eventual header.", "Request_UnsupportedQuery")
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("r",))
            if fields is None or fields[1:5] != [res.name, key, relation, cast]:
                raise bad_request("The specified page token value has expired or is invalid.")
            pos, top, select, count = fields[5], fields[6], fields[7] and tuple(fields[7]), False
        else:
            pos, top = 0, parse_top(args.get("$top"))
            select = parse_related_select(args["$select"], cast) if "$select" in args else None
        if select and SIGN_IN in select:
            self._check_sign_ins(request)
        with self.tenant.lock:
            obj = self._find(res, key)
            if obj is None:
                raise not_found(key)
            links = self._links(res, obj["id"], relation)
            value, next_pos, total = [], None, 0
            for index in range(pos, len(links)):
                odata_type, oid = links[index]
                if cast and odata_type != cast:
                    continue
                rendered = render_related(self.tenant, odata_type, oid, select)
                if rendered is None:
                    continue
                if len(value) == top:
                    next_pos = index
                    break
                value.append(rendered)
            if count:
                total = sum(1 for t, m in links if (not cast or t == cast)
                            and (t == "orgContact" or m in self.tenant.objects[RESOURCES_BY_TYPE[t]]))
        base = version_base(request)
        next_link = None
        if next_pos is not None:
            token = self._tokens.encode(["r", res.name, key, relation, cast, next_pos, top,
                                         list(select) if select else None])
            path = f"{res.name}/{key}/{relation}" + (f"/microsoft.graph.{cast}" if cast else "")
            next_link = f"{base}/{path}?$skiptoken={token}"
        context = f"{base}/$metadata#{RESOURCES_BY_TYPE.get(cast, 'directoryObjects')}"
        return json_response(Page(context, value, next_link=next_link, count=total if count else None).body())
