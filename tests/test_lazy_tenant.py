"""The lazy tenant: generated on demand from the seed, mutations in an overlay, a million users in little memory.

``generate_tenant`` stores nothing up front (``sandbox/tenant/generated.py``); object ``i`` of each collection
is a pure function of (seed, i), and what changes afterwards is kept in an overlay (``sandbox/tenant/
overlay.py``). These tests check that the pages stay deterministic, that the overlay merges as the old dicts
did (reads, deletes, delta rounds), that the reverse lookups a deletion relies on match brute-force scans,
and that an emulator serving a million-user tenant stays small.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandbox.graph.emulator import GraphEmulator
from sandbox.tenant.generator import generate_tenant
from sandbox.tenant.overlay import PatchedLinks
from sandbox.tenant.seeded import Seeded
from tests.fixtures_graph import GRAPH_TOKEN

AUTH = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MILLION = 1_000_000
# Peak RSS of the process serving the first /users/delta page, a page in the middle of the round, the first
# /groups/delta page (All Staff's 900,000 members indexed) and one of All Staff's member pages of a
# million-user tenant: measured 47 MB (43 MB at 100,000 users; Python 3.11). The eager tenant held 296 MB
# after serving a 100,000-user crawl, about 2.9 GB at a million. The bound leaves room for allocator and
# library differences and still fails long before anything stores a collection.
MILLION_RSS_BOUND_MB = 120


def _pages(base: str, path: str, limit: int = 10_000) -> list[dict]:
    """The bodies of a paged read, following nextLinks (at most ``limit`` pages)."""
    out, url = [], f"{base}/{path}"
    with httpx.Client(headers=AUTH, timeout=60) as client:
        while url and len(out) < limit:
            out.append(client.get(url).raise_for_status().json())
            url = out[-1].get("@odata.nextLink")
    return out


def _values(pages: list[dict]) -> list[dict]:
    return [item for page in pages for item in page["value"]]


@pytest.fixture
def emulators():
    """Start GraphEmulators over tenants; every one is stopped after the test."""
    started: list[GraphEmulator] = []

    def start(tenant) -> str:
        started.append(GraphEmulator(tenant, token=GRAPH_TOKEN).start(port=0))
        return started[-1].base_url
    yield start
    for emulator in started:
        emulator.stop()


# -- determinism ------------------------------------------------------------------------------------------

def test_same_seed_serves_the_same_pages_and_another_seed_other_ones(emulators):
    one, two, other = (emulators(generate_tenant(3000, seed)) for seed in (11, 11, 12))
    for path in ("users/delta", "groups/delta", "devices/delta", "servicePrincipals/delta"):
        a, b = _values(_pages(one, path)), _values(_pages(two, path))
        assert a == b and len(a) > 0, path
        assert {x["id"] for x in a}.isdisjoint(x["id"] for x in _values(_pages(other, path))), path
    assert _pages(one, "users?$top=999")[1]["value"] == _pages(two, "users?$top=999")[1]["value"]


def test_object_i_does_not_depend_on_the_size_of_the_tenant():
    small, big = generate_tenant(500, 3), generate_tenant(50_000, 3)
    assert [small.users[u] for u in small.order[:100]] == [big.users[u] for u in big.order[:100]]
    assert [small.groups[g] for g in small.orders["groups"]] == [big.groups[g] for g in big.orders["groups"][:25]]


def test_ids_are_version_4_guids_that_carry_their_index_and_foreign_ids_are_refused():
    seeded = Seeded(5)
    ids = [seeded.guid("users", i) for i in range(2000)]
    assert all(GUID.match(i) for i in ids) and len(set(ids)) == 2000
    assert [seeded.index("users", i) for i in ids] == list(range(2000))
    assert sorted(ids) != ids  # GUID order is unrelated to the index, as in a real directory
    assert seeded.index("groups", ids[7]) is None and Seeded(6).index("users", ids[7]) is None
    tampered = ids[7][:-1] + ("0" if ids[7][-1] != "0" else "1")
    assert seeded.index("users", tampered) is None
    assert seeded.index("users", "not-a-guid") is None and seeded.index("users", 42) is None


# -- the overlay ---------------------------------------------------------------------------------------

def test_an_update_is_stored_and_read_back_and_only_it_is_in_the_next_round(emulators):
    tenant = generate_tenant(1000, 21)
    base = emulators(tenant)
    first = _pages(base, "users/delta?$select=id,jobTitle")
    link = first[-1]["@odata.deltaLink"]
    uid = tenant.order[400]
    before = dict(tenant.users[uid])
    tenant.update_user(uid, jobTitle="Lazy Tester", mobilePhone=None)
    assert tenant.users.stored() == 1 and tenant.users[uid] is tenant.users[uid]  # materialised once
    assert tenant.users[uid] == {k: v for k, v in {**before, "jobTitle": "Lazy Tester"}.items()
                                 if k != "mobilePhone"}
    got = httpx.get(f"{base}/users/{uid}?$select=jobTitle,mobilePhone,displayName", headers=AUTH).json()
    assert (got["jobTitle"], got["mobilePhone"], got["displayName"]) == \
        ("Lazy Tester", None, before.get("displayName"))
    later = _values(_pages(base, link.split("/v1.0/", 1)[1]))
    assert later == [{"id": uid, "jobTitle": "Lazy Tester"}]
    again = _values(_pages(base, "users/delta?$select=id,jobTitle"))
    assert len(again) == 1000 and {u["id"]: u["jobTitle"] for u in again}[uid] == "Lazy Tester"


def test_a_deleted_user_leaves_reads_rounds_groups_and_its_reports(emulators):
    tenant = generate_tenant(1000, 22)
    base = emulators(tenant)
    link = _pages(base, "groups/delta")[-1]["@odata.deltaLink"]
    uid = next(u for u in tenant.order[10:] if tenant.directory.reports(u))
    reports = [r for r, m in tenant.managers.items() if m == uid]
    groups = [g for g, links in tenant.members.items() if ("user", uid) in links]
    owned = {g for g, owners in tenant.group_owners.items() if uid in owners}
    assert reports and len(groups) >= 2  # All Staff and some other group
    tenant.delete_user(uid)
    assert httpx.get(f"{base}/users/{uid}", headers=AUTH).status_code == 404
    users = _values(_pages(base, "users/delta?$select=id"))
    assert len(users) == 999 and uid not in {u["id"] for u in users}
    assert all(r not in tenant.managers and tenant.former_manager(r) == uid for r in reports)
    assert not any(("user", uid) in links for links in tenant.members.values())
    all_staff = next(g for g, p in tenant.groups.items() if p["displayName"] == "All Staff")
    members = _values(_pages(base, f"groups/{all_staff}/members?$select=id"))
    assert uid not in {m["id"] for m in members} and len(members) == len(tenant.members[all_staff])
    assert isinstance(tenant.members[all_staff], PatchedLinks)  # 900 members not copied for one removal
    later = {g["id"]: g for g in _values(_pages(base, link.split("/v1.0/", 1)[1]))}
    assert set(later) == set(groups) | owned  # every group that held it or was owned by it, nothing else
    assert all({"@odata.type": "#microsoft.graph.user", "id": uid, "@removed": {"reason": "deleted"}}
               in later[g]["members@delta"] for g in groups)


def test_patched_member_lists_page_like_the_list_they_stand_for(emulators):
    tenant = generate_tenant(2000, 23)
    base = emulators(tenant)
    all_staff = next(g for g, p in tenant.groups.items() if p["displayName"] == "All Staff")
    expected = list(tenant.members[all_staff])
    leaving = [expected[i][1] for i in (0, 5, 6, 700, len(expected) - 1)]
    joining = [u for u in tenant.order if ("user", u) not in tenant.members[all_staff]][:3]
    for uid in leaving:
        tenant.remove_member(all_staff, uid)
    for uid in joining:
        tenant.add_member(all_staff, uid)
    expected = [m for m in expected if m[1] not in leaving] + [("user", u) for u in joining]
    assert tenant.members[all_staff] == expected and expected == tenant.members[all_staff]
    assert tenant.members[all_staff][-3:] == expected[-3:] and tenant.members[all_staff][700] == expected[700]
    got = _values(_pages(base, f"groups/{all_staff}/members?$select=id&$top=100"))
    assert [m["id"] for m in got] == [m for _, m in expected]
    tenant.remove_member(all_staff, joining[1])
    with pytest.raises(KeyError):
        tenant.remove_member(all_staff, leaving[0])
    assert [m for _, m in tenant.members[all_staff]][-2:] == [joining[0], joining[2]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reverse_lookups_match_a_scan_of_the_generated_tenant(seed):
    tenant = generate_tenant(1500, seed)
    directory = tenant.directory
    managed: dict[str, list[str]] = {}
    for uid, manager in tenant.managers.items():
        managed.setdefault(manager, []).append(uid)
    holding: dict[str, list[str]] = {}
    for gid, links in tenant.members.items():
        for _, mid in links:
            holding.setdefault(mid, []).append(gid)
    owning = {kind: {} for kind in ("groups", "devices", "servicePrincipals")}
    for kind, relation in (("groups", tenant.group_owners), ("devices", tenant.device_owners),
                           ("servicePrincipals", tenant.sp_owners)):
        for oid, owners in relation.items():
            for uid in owners:
                owning[kind].setdefault(uid, []).append(oid)
    for uid in tenant.order:
        assert directory.reports(uid) == managed.get(uid, []), uid
        assert sorted(directory.groups_with_member("user", uid)) == sorted(holding.get(uid, [])), uid
        owned = directory.owned_by(uid)
        assert {k: sorted(v) for k, v in owned.items()} == {k: sorted(v.get(uid, [])) for k, v in owning.items()}
    for did in tenant.orders["devices"][:400]:
        assert directory.groups_with_member("device", did) == holding.get(did, [])
    assert sum(map(len, holding.values())) > 1500 and sum(map(len, owning["groups"].values())) > 40  # many checked


def test_a_million_user_tenant_is_free_to_generate_and_has_the_shapes_of_a_small_one():
    tenant = generate_tenant(MILLION, 1)
    assert (len(tenant.users), len(tenant.groups), len(tenant.devices), len(tenant.service_principals)) == \
        (MILLION, 50_000, 800_000, 20_000)
    assert tenant.users.stored() == 0 and len(tenant.order) == MILLION
    last = next(u for u in reversed(tenant.order) if u in tenant.managers)
    assert tenant.users[last]["id"] == last and tenant.managers[last] in tenant.users
    assert last in tenant.directory.reports(tenant.managers[last])
    sizes = [len(tenant.members[tenant.orders["groups"][g]]) for g in (1, 2, 4, 8, 12)]
    assert 1000 <= sizes[0] <= 2500 and 1000 <= sizes[1] <= 2500 and sizes[3] == 0
    nested = tenant.members[tenant.orders["groups"][4]][-1]
    assert nested == ("group", tenant.orders["groups"][5])


# -- a million users in the emulator ----------------------------------------------------------------------

_SERVE = """
import json, sys, httpx
def peak_mb():  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (big) parent through fork and exec
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
from sandbox.graph.emulator import GraphEmulator
from sandbox.tenant.generator import generate_tenant
tenant = generate_tenant(int(sys.argv[1]), 1)
emulator = GraphEmulator(tenant, token=sys.argv[2]).start(port=0)
auth = {"Authorization": "Bearer " + sys.argv[2]}
with httpx.Client(headers=auth, timeout=120) as http:
    first = http.get(emulator.base_url + "/users/delta").raise_for_status().json()
    token = first["@odata.nextLink"].split("$skiptoken=")[1]
    fields = emulator._tokens.decode(token, ("i",))
    fields[6] = len(tenant.order) // 2          # the skiptoken is a position: jump to the middle of the round
    middle = http.get(emulator.base_url + "/users/delta?$skiptoken=" + emulator._tokens.encode(fields))
    groups = http.get(emulator.base_url + "/groups/delta").raise_for_status().json()
    staff = groups["value"][0]["id"]
    members = http.get(emulator.base_url + f"/groups/{staff}/members?$select=id").raise_for_status().json()
emulator.stop()
print(json.dumps({"first": [u["id"] for u in first["value"]], "middle": [u["id"] for u in middle.json()["value"]],
                  "staff_entries": len(groups["value"][0].get("members@delta", [])),
                  "members": len(members["value"]), "staff": staff,
                  "peak_mb": peak_mb()}))
"""


def test_a_million_user_tenant_is_served_from_a_small_process():
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", _SERVE, str(MILLION), GRAPH_TOKEN], check=False, env=env,
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    tenant = generate_tenant(MILLION, 1)  # the same seed in this process: the same ids, nothing generated
    assert report["first"] == tenant.order[:200]
    assert report["middle"] == tenant.order[MILLION // 2:MILLION // 2 + 200]
    assert report["staff"] == tenant.orders["groups"][0] and report["staff_entries"] == 199
    assert report["members"] == 100
    assert report["peak_mb"] < MILLION_RSS_BOUND_MB, report["peak_mb"]
