"""Pure functions of (seed, collection, index): the hashes and object ids the lazy tenant is generated from.

A generated object is never stored: object ``i`` of a collection is recomputed from the tenant's seed and
``i`` whenever it is read (``sandbox/tenant/generator.py``). Two tools make that cheap:
- ``Seeded.unit``/``Seeded.bits``: a SplitMix64 hash of (seed, salt, index) for the few per-object draws that
  relationships depend on (is user ``i`` a guest, enabled, who manages it, which users a group holds), so a
  reverse lookup can evaluate them for many objects without building any object (~0.5 µs each);
- ``Seeded.rng(salt, i)``: a ``Draws`` stream of its own for everything else of one object (``random.Random``
  would do, but seeding one costs ~12 µs, more than building the object).

Object ids are version-4 GUIDs that carry their index: the last 48 bits (the GUID's "node") are an affine
bijection of the index, the other 80 bits a hash of (seed, collection, index). ``index(salt, oid)`` inverts
the bijection and re-derives the id, so a foreign or mistyped id is never taken for an object. Ids sort in
an order unrelated to the index, as real GUIDs do.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment
_MISSING = object()
_UNIT = 1.0 / (1 << 53)
_DECODED_KEPT = 4096
_NODE_BITS = 48
_NODE_MASK = (1 << _NODE_BITS) - 1
_ODD = 0x9E3779B97F4B  # odd, so ``i * _ODD`` is a bijection modulo 2**48
_ODD_INVERSE = pow(_ODD, -1, 1 << _NODE_BITS)
MAX_INDEX = 1 << 40  # far above any tenant the sandbox generates; indices above it would still round-trip
# The variant and version bits of a GUID (RFC 9562 §4.1-4.2): version 4 in bits 76-79, variant 10 in 62-63.
_VERSION_CLEAR, _VERSION_4 = ~(0xF << 76), 4 << 76
_VARIANT_CLEAR, _VARIANT_10 = ~(0x3 << 62), 0x2 << 62


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of a 64-bit integer (Steele et al., 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def format_guid(value: int) -> str:
    """A 128-bit integer as a lowercase GUID string with version 4 and the RFC variant set."""
    value = (value & _VERSION_CLEAR | _VERSION_4) & _VARIANT_CLEAR | _VARIANT_10
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Seeded:
    """Hashes and ids of one seed. ``salt`` names a stream (a collection, or one draw of an object)."""

    def __init__(self, seed: object):
        digest = hashlib.blake2b(repr(seed).encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big")
        self._salts: dict[str, int] = {}
        self._decoded: dict[tuple[str, object], int | None] = {}

    def salt(self, name: str) -> int:
        """The 64-bit key of stream ``name`` (cached: names are a small fixed set)."""
        found = self._salts.get(name)
        if found is None:
            digest = hashlib.blake2b(name.encode(), digest_size=8, key=self.key.to_bytes(8, "big")).digest()
            found = self._salts[name] = int.from_bytes(digest, "big")
        return found

    def bits(self, name: str, index: int) -> int:
        """64 hash bits of draw ``name`` of object ``index``: SplitMix64's output for the stream's key plus
        ``index`` gammas, one multiply-xorshift round per draw."""
        return mix64((self.salt(name) + index * _GAMMA) & _MASK64)

    def unit(self, name: str, index: int) -> float:
        """A uniform float in [0, 1) for draw ``name`` of object ``index``."""
        return (self.bits(name, index) >> 11) * (1.0 / (1 << 53))

    def below(self, name: str, index: int, n: int) -> int:
        """A uniform integer in [0, n) for draw ``name`` of object ``index`` (n > 0)."""
        return (self.bits(name, index) * n) >> 64

    def rng(self, name: str, index: int) -> Draws:
        """A generator of its own for object ``index`` of stream ``name``."""
        return Draws(self.bits(name, index))

    def guid(self, name: str, index: int) -> str:
        """The id of object ``index`` of collection ``name``; ``index(name, id)`` gives ``index`` back."""
        salt = self.salt(name)
        node = (index * _ODD + salt) & _NODE_MASK
        first = mix64((salt + index * _GAMMA) & _MASK64)
        high = first << 16 | (mix64(first) & 0xFFFF)
        oid = format_guid(high << _NODE_BITS | node)
        self._remember(name, oid, index)  # an id just handed out is soon looked up again
        return oid

    def _remember(self, name: str, oid: str, index: int | None) -> None:
        if len(self._decoded) >= _DECODED_KEPT:
            self._decoded.clear()
        self._decoded[(name, oid)] = index

    def index(self, name: str, oid: object) -> int | None:
        """The index whose ``guid(name, index)`` is ``oid``, or None for any other string."""
        key = (name, oid)
        found = self._decoded.get(key, _MISSING)
        if found is not _MISSING:
            return found
        found = None
        if isinstance(oid, str) and len(oid) == 36:
            try:
                index = ((int(oid[24:], 16) - self.salt(name)) * _ODD_INVERSE) & _NODE_MASK
            except ValueError:
                index = MAX_INDEX
            found = index if index < MAX_INDEX and self.guid(name, index) == oid else None
        self._remember(name, oid, found)  # the ids of the last pages: each is looked up several times
        return found


class Draws:
    """A SplitMix64 stream with the few ``random.Random`` methods the generator uses (same meanings)."""

    __slots__ = ("_state",)

    def __init__(self, state: int):
        self._state = state

    def bits(self) -> int:
        # mix64 inlined: a draw is the generator's innermost loop.
        x = self._state = (self._state + _GAMMA) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return x ^ (x >> 31)

    def random(self) -> float:
        x = self._state = (self._state + _GAMMA) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((x ^ (x >> 31)) >> 11) * _UNIT

    def randrange(self, n: int) -> int:
        """Uniform in [0, n), n > 0 (the 64-bit multiply-shift bias is far below anything measured here)."""
        x = self._state = (self._state + _GAMMA) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((x ^ (x >> 31)) * n) >> 64

    def randint(self, low: int, high: int) -> int:
        return low + self.randrange(high - low + 1)

    def choice(self, seq: Sequence):
        return seq[self.randrange(len(seq))]

    def choices(self, population: Sequence, weights: Sequence[float] | None = None, k: int = 1) -> list:
        if weights is None:
            return [population[self.randrange(len(population))] for _ in range(k)]
        cumulative = list(itertools.accumulate(weights))
        total = cumulative[-1]
        return [population[bisect.bisect(cumulative, self.random() * total)] for _ in range(k)]

    def sample(self, population: Sequence, k: int) -> list:
        """``k`` distinct elements in random order; cheap for a big ``range`` (only ``k`` draws)."""
        if not 0 <= k <= len(population):
            raise ValueError("sample larger than population")
        picked: dict[int, None] = {}
        while len(picked) < k:
            picked.setdefault(self.randrange(len(population)))
        return [population[i] for i in picked]


class Collection:
    """The ``count`` generated objects of one kind (``KIND``, the name their GUIDs are drawn under): object
    ``index`` <-> its id."""

    KIND = ""

    def __init__(self, seeded: Seeded, count: int):
        self.seeded, self.count = seeded, count

    def id(self, index: int) -> str:
        return self.seeded.guid(self.KIND, index)

    def index(self, oid: object) -> int | None:
        """The index of a generated id of this kind (None for any other id)."""
        index = self.seeded.index(self.KIND, oid)
        return index if index is not None and index < self.count else None
