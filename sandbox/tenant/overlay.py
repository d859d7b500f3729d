"""The overlay of the lazy tenant: generated objects merged with the ones that changed since generation.

``sandbox/tenant/model.py`` keeps its public attributes (``users``, ``members``, ``managers``, ``orders``...)
as read-only mappings and sequences with the interface of the dicts and lists they used to be. Each merges
a generated base (a function of the index, ``sandbox/tenant/generated.py``) with an overlay:
- ``IdOrder``: the ids of a collection in insertion order - the generated ones by index, then those added;
- ``Objects``: id → properties; a changed base object is materialised (stored) in the overlay, a deleted one
  is remembered by id; added objects live in the overlay only;
- ``Relation``: object id → its links (members, owners), keyed by the live objects of its collection;
- ``Managers``: user id → manager id, for the users that have one;
- ``Links``/``PatchedLinks``: member lists; a changed base group keeps its generated members plus the
  positions removed and the links added, so changing All Staff of a million users stores a few entries.

Only the tenant mutates these (through the methods named in each class); readers hold ``Tenant.lock``.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping, Sequence

Link = tuple[str, str]
_BUILT_KEPT = 1024  # generated objects an ``Objects`` keeps after reading them (about two pages)


class Links(Sequence):
    """A member list computed on demand: compares equal to a list of the same links, concatenates to a list."""

    def position(self, member_id: str) -> int | None:
        """The position of the member with this id, or None. Subclasses answer without scanning."""
        return next((i for i, link in enumerate(self) if link[1] == member_id), None)

    def _at(self, index: int) -> Link:
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(index)
        return self._at(index)

    def __iter__(self) -> Iterator[Link]:
        return map(self._at, range(len(self)))

    def __contains__(self, link: object) -> bool:
        if not (isinstance(link, tuple) and len(link) == 2):
            return False
        found = self.position(link[1])
        return found is not None and self._at(found) == link

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, Links)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __add__(self, other: Sequence[Link]) -> list[Link]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Link]) -> list[Link]:
        return [*other, *self]

    __hash__ = None  # mutable in spirit, like the list it stands for

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} links)"


def position_in(links: Sequence[Link], member_id: str) -> int | None:
    """The position of ``member_id`` in a member list (a plain list or ``Links``)."""
    if isinstance(links, Links):
        return links.position(member_id)
    return next((i for i, link in enumerate(links) if link[1] == member_id), None)


class PatchedLinks(Links):
    """Generated members minus removed positions plus added links, in that order (what a list would hold
    after ``del`` and ``append``). Reads cost O(removals) per link, so many removals compact into a list."""

    COMPACT_AFTER = 2000  # removed positions kept before the model stores a plain list instead

    def __init__(self, base: Sequence[Link]):
        self.base = base
        self.removed: list[int] = []   # base positions, ascending
        self.added: list[Link] = []

    def __len__(self) -> int:
        return len(self.base) - len(self.removed) + len(self.added)

    def _at(self, index: int) -> Link:
        kept = len(self.base) - len(self.removed)
        if index >= kept:
            return self.added[index - kept]
        for gone in self.removed:  # the index-th surviving base position
            if gone > index:
                break
            index += 1
        return self.base[index]

    def position(self, member_id: str) -> int | None:
        for i, link in enumerate(self.added):
            if link[1] == member_id:
                return len(self.base) - len(self.removed) + i
        found = position_in(self.base, member_id)
        if found is None:
            return None
        shift = bisect.bisect_left(self.removed, found)
        if shift < len(self.removed) and self.removed[shift] == found:
            return None
        return found - shift

    def append(self, link: Link) -> None:
        self.added.append(link)

    def pop(self, index: int) -> Link:
        """Remove and return the link at ``index`` (a live position)."""
        link = self._at(index)
        kept = len(self.base) - len(self.removed)
        if index >= kept:
            del self.added[index - kept]
        else:
            base = position_in(self.base, link[1])
            bisect.insort(self.removed, base)
        return link

    def __delitem__(self, index: int) -> None:
        self.pop(index)

    def crowded(self) -> bool:
        return len(self.removed) > self.COMPACT_AFTER


class IdOrder(Sequence):
    """Every id a collection ever had, in insertion order: ``count`` generated ids by index, then added ones."""

    def __init__(self, count: int, make_id: Callable[[int], str]):
        self.count, self._make_id = count, make_id
        self._added: list[str] = []

    def __len__(self) -> int:
        return self.count + len(self._added)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._make_id(index) if index < self.count else self._added[index - self.count]

    def __iter__(self) -> Iterator[str]:
        yield from map(self._make_id, range(self.count))
        yield from self._added

    def append(self, oid: str) -> None:
        self._added.append(oid)


class Objects(Mapping):
    """id → properties of one collection: generated objects merged with the overlay, in insertion order.

    ``index(oid)`` is the generated position of a base id (None for added or foreign ids); ``build(i)`` makes
    generated object ``i`` when it is read (the last ``_BUILT_KEPT`` are kept). Readers must not change what
    they get: only ``materialise``-d objects are the tenant's state."""

    def __init__(self, order: IdOrder, index: Callable[[object], int | None], build: Callable[[int], dict]):
        self.order, self.index, self._build = order, index, build
        self._stored: dict[str, dict] = {}   # materialised base objects and added ones
        self._gone: set[str] = set()         # removed ids (base or added)
        self._stored_base = 0                # how many of _stored are base objects
        self._built: dict[int, dict] = {}    # the last generated objects read (never the stored ones)
        self._gone_base = 0

    def __getitem__(self, oid: str) -> dict:
        found = self._stored.get(oid)
        if found is not None:
            return found
        if oid in self._gone:
            raise KeyError(oid)
        index = self.index(oid)
        if index is None:
            raise KeyError(oid)
        found = self._built.get(index)
        if found is None:
            # A page reads each object two or three times (filter, entry, links): keep the last few built.
            if len(self._built) >= _BUILT_KEPT:
                self._built.clear()
            found = self._built[index] = self._build(index)
        return found

    def live_index(self, oid: object) -> int | None:
        """The generated index of a live generated object (None for added, removed or foreign ids)."""
        if oid in self._gone:
            return None
        return self.index(oid)

    def __contains__(self, oid: object) -> bool:
        return oid in self._stored or (oid not in self._gone and self.index(oid) is not None)

    def __iter__(self) -> Iterator[str]:
        gone = self._gone
        for oid in self.order:
            if oid not in gone:
                yield oid

    def __len__(self) -> int:
        return self.order.count - self._gone_base + len(self._stored) - self._stored_base

    def materialise(self, oid: str) -> dict:
        """The stored (mutable) properties of a live object; a generated one is stored first. KeyError."""
        found = self._stored.get(oid)
        if found is None:
            found = self[oid]
            self._stored[oid] = found
            self._stored_base += 1
        return found

    def add(self, oid: str, props: dict) -> None:
        self._stored[oid] = props
        self.order.append(oid)

    def remove(self, oid: str) -> None:
        """Forget a live object (KeyError if absent); its id stays in ``order``."""
        base = self.index(oid) is not None
        if oid in self._stored:
            del self._stored[oid]
            self._stored_base -= base
        elif oid in self._gone or not base:
            raise KeyError(oid)
        self._gone.add(oid)
        self._gone_base += base

    def stored(self) -> int:
        """How many objects the overlay holds (changed and added ones)."""
        return len(self._stored)

    def stored_items(self):
        """(id, properties) of the live objects the overlay holds: changed generated ones and added ones."""
        return self._stored.items()


class Relation(Mapping):
    """object id → links (member links or owner ids) for the live objects of ``objects``: the overlay's value
    if the object's links changed, else the generated ones (``base(index)``); [] for added objects."""

    def __init__(self, objects: Objects, base: Callable[[int], Sequence]):
        self.objects, self._base = objects, base
        self._stored: dict[str, Sequence] = {}

    def __getitem__(self, oid: str) -> Sequence:
        if oid not in self.objects:
            raise KeyError(oid)
        found = self._stored.get(oid)
        if found is not None:
            return found
        index = self.objects.index(oid)
        return self._base(index) if index is not None else []

    def __contains__(self, oid: object) -> bool:
        return oid in self.objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def changed(self, oid: str) -> bool:
        return oid in self._stored

    def stored_items(self):
        return self._stored.items()

    def set(self, oid: str, links: Sequence) -> None:
        self._stored[oid] = links

    def forget(self, oid: str) -> None:
        self._stored.pop(oid, None)


class Managers(Mapping):
    """user id → manager id, for the live users that have a manager (generated link unless overridden)."""

    def __init__(self, users: Objects, base: Callable[[int], str | None]):
        self.users, self._base = users, base
        self._stored: dict[str, str | None] = {}   # None: the link was removed

    def get(self, uid, default=None):
        if uid in self._stored:
            found = self._stored[uid]
            return default if found is None or uid not in self.users else found
        index = self.users.live_index(uid)
        if index is None:
            return default
        found = self._base(index)
        return default if found is None else found

    def __getitem__(self, uid: str) -> str:
        found = self.get(uid)
        if found is None:
            raise KeyError(uid)
        return found

    def __contains__(self, uid: object) -> bool:
        return self.get(uid) is not None

    def __iter__(self) -> Iterator[str]:
        return (uid for uid in self.users if self.get(uid) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def overridden(self):
        """(user id, manager id or None) of every link set since generation."""
        return self._stored.items()

    def is_overridden(self, uid: str) -> bool:
        return uid in self._stored

    def set(self, uid: str, manager_id: str | None) -> None:
        self._stored[uid] = manager_id
