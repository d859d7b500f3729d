"""Users' sign-in activity (Graph v1.0 ``user.signInActivity``) as a pure function of the user's index.

Each generated user's ``signInActivity`` comes from a draw stream of its own (``Seeded.rng("sign-in", i)``), never
from the user's stream, so every other generated value of a user stays what it was before sign-ins existed (as
``sandbox/tenant/licences.py`` does for ``assignedLicenses``). Times are ISO 8601 UTC with a "Z", as Graph gives
them, counted back from ``SIGN_IN_BASE`` (the moment the generated tenant is seen at, the devices' too).

Shares: members sign in within the last 30 days, 3 % never did and 5 % are stale (more than ``STALE_DAYS`` ago);
guests sign in rarer (20 % never, 35 % stale); disabled accounts are stale. The non-interactive sign-in (token
refreshes) is at or after the interactive one; ``lastSuccessfulSignInDateTime`` is the later of the two, except
for the 3 % whose latest attempts failed. Fixed cases below ``_FIXED`` (so a 300-user tenant has each):
``NEVER`` (all six values null), ``STALE``, ``ONLY_NON_INTERACTIVE`` (no interactive sign-in),
``FAILED_LAST`` (the latest attempts failed: the last success is older) and ``NOT_RETURNED`` (no
``signInActivity`` at all: Graph "isn't returned for a user who never signed in or last signed in before April
2020", msgraph-sdk's v1.0 user model; a selected property the user lacks is null in the emulator).

Sign-ins are not directory changes: ``Tenant.update_user(uid, signInActivity=...)`` sets them without a change-log
entry, so delta and change notifications never report them (sandbox/tenant/model.py).
"""
from __future__ import annotations

import calendar
import time

from sandbox.tenant.seeded import Seeded, format_guid

SIGN_IN_BASE = calendar.timegm((2026, 11, 20, 8, 15, 0))  # = sandbox/tenant/fleet.py LAST_SIGN_IN_BASE
STALE_DAYS = 90
KEYS = ("lastSignInDateTime", "lastSignInRequestId", "lastNonInteractiveSignInDateTime",
        "lastNonInteractiveSignInRequestId", "lastSuccessfulSignInDateTime", "lastSuccessfulSignInRequestId")
NEVER, STALE, ONLY_NON_INTERACTIVE, FAILED_LAST, NOT_RETURNED = 8, 9, 10, 12, 14
_FIXED = 30  # as sandbox/tenant/users.py: below it only the fixed cases differ from a recent sign-in
_DAY = 86400


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def activity(seeded: Seeded, index: int, guest: bool, enabled: bool) -> dict | None:
    """``signInActivity`` of generated user ``index`` (None: the user has none, ``NOT_RETURNED``)."""
    if index == NOT_RETURNED:
        return None
    rng = seeded.rng("sign-in", index)
    roll = rng.random()
    drawn = index > _FIXED
    if index == NEVER or (drawn and roll < (0.20 if guest else 0.03)):
        return dict.fromkeys(KEYS)
    stale = index == STALE or not enabled or (drawn and roll < (0.55 if guest else 0.08))
    age = rng.randint((STALE_DAYS + 1) * _DAY, 700 * _DAY) if stale else rng.randint(0, 30 * _DAY)
    interactive = SIGN_IN_BASE - age
    non_interactive = interactive + rng.randint(0, min(age, 3 * _DAY))
    ids = [format_guid(rng.bits() << 64 | rng.bits()) for _ in range(3)]
    failed = index == FAILED_LAST or (drawn and rng.random() < 0.03)
    if failed:  # the latest attempts (both kinds) failed: the last success is days older
        non_interactive = interactive - rng.randint(60, 3600)
        success, success_id = interactive - rng.randint(2 * _DAY, 20 * _DAY), ids[2]
    else:
        success, success_id = (non_interactive, ids[1]) if non_interactive >= interactive else (interactive, ids[0])
    out = {"lastSignInDateTime": _iso(interactive), "lastSignInRequestId": ids[0],
           "lastNonInteractiveSignInDateTime": _iso(non_interactive), "lastNonInteractiveSignInRequestId": ids[1],
           "lastSuccessfulSignInDateTime": _iso(success), "lastSuccessfulSignInRequestId": success_id}
    if index == ONLY_NON_INTERACTIVE:
        out.update(lastSignInDateTime=None, lastSignInRequestId=None,
                   lastSuccessfulSignInDateTime=out["lastNonInteractiveSignInDateTime"],
                   lastSuccessfulSignInRequestId=ids[1])
    return out
