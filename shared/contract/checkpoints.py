"""The checkpoints producers hand to the worker (at the end of a payload, or with a catch-up's records), and how
two runs' values of one checkpoint merge. Pure.

The worker commits them only after Assets has finished the execution that carries the records they go with
(DESIGN.md: nothing acknowledged before DONE). It does not interpret them, except for the merge when two runs in
one pass set the same one, or when a stale payload's must go *under* what is stored (``merge_checkpoint``).
"""
from __future__ import annotations

import orjson

USERS_DELTA = "delta/users"       # the delta link of the last complete round of users
GROUPS_DELTA = "delta/groups"     # the same for groups
NAMES = "names"                   # names chosen for derived objects: {type: {key: name}} (records.derived)
JIRA_CACHE = "jira/cache"         # Entra id -> [Atlassian account id, looked up at] (shared.jira_links)
JIRA_LOOKUPS = "jira/lookups"     # Entra ids whose Jira lookup is pending: a JSON list
JIRA_UNMATCHED = "jira/unmatched"  # Entra ids without a Jira account: a JSON list

_BY_KEY = (NAMES, JIRA_CACHE)            # merged per key, the newer winning
_UNITED = (JIRA_LOOKUPS, JIRA_UNMATCHED)  # id lists, united


def merge_checkpoint(name: str, older: str | None, newer: str | None) -> str | None:
    """One checkpoint as two runs left it: ``older`` planned from an earlier state than ``newer`` (a full run's
    payload and the catch-up of the same pass; a stale payload and what is stored). Derived-object names and
    the Jira account cache are merged per key, the newer winning; id lists (Jira lookups pending, users
    unmatched) are united - an id kept once too often costs a cache read or one stale line in ``status``, while
    an id dropped would be lost until the next full run. Anything else (delta links ...): the newer value, or
    the older when there is no newer."""
    if newer is None or not older:  # a list left empty (None) by the newer run keeps the older run's ids
        return older if newer is None else newer
    if name not in _BY_KEY + _UNITED:
        return newer
    old, new = orjson.loads(older), orjson.loads(newer)
    if name == NAMES:
        for type_key, names in new.items():
            old.setdefault(type_key, {}).update(names)
        return orjson.dumps(old).decode()
    if name == JIRA_CACHE:
        return orjson.dumps({**old, **new}).decode()
    return orjson.dumps(sorted(set(old) | set(new))).decode()
