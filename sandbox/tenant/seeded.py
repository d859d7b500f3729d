"""Pure functions of (seed, collection, index): the hashes and object ids the lazy tenant is generated from.

A generated object is never stored: object ``i`` of a collection is recomputed from the tenant's seed and
``i`` whenever it is read (``sandbox/tenant/generator.py``). Two tools make that cheap:
- ``Seeded.unit``/``Seeded.bits``: a SplitMix64 hash of (seed, salt, index) for the few per-object draws that
  relationships depend on (is user ``i`` a guest, enabled, who manages it, which users a group holds), so a
  reverse lookup can evaluate them for many objects without building any object (~0.5 µs each);
- ``Seeded.rng(salt, i)``: a ``random.Random`` of its own for everything else of one object (~7 µs).

Object ids are version-4 GUIDs that carry their index: the last 48 bits (the GUID's "node") are an affine
bijection of the index, the other 80 bits a hash of (seed, collection, index). ``index(salt, oid)`` inverts
the bijection and re-derives the id, so a foreign or mistyped id is never taken for an object. Ids sort in
an order unrelated to the index, as real GUIDs do.
"""
from __future__ import annotations

import hashlib
import random

_MASK64 = (1 << 64) - 1
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

    def salt(self, name: str) -> int:
        """The 64-bit key of stream ``name`` (cached: names are a small fixed set)."""
        found = self._salts.get(name)
        if found is None:
            digest = hashlib.blake2b(name.encode(), digest_size=8, key=self.key.to_bytes(8, "big")).digest()
            found = self._salts[name] = int.from_bytes(digest, "big")
        return found

    def bits(self, name: str, index: int) -> int:
        """64 hash bits of draw ``name`` of object ``index``."""
        return mix64(self.salt(name) ^ mix64(index))

    def unit(self, name: str, index: int) -> float:
        """A uniform float in [0, 1) for draw ``name`` of object ``index``."""
        return (self.bits(name, index) >> 11) * (1.0 / (1 << 53))

    def below(self, name: str, index: int, n: int) -> int:
        """A uniform integer in [0, n) for draw ``name`` of object ``index`` (n > 0)."""
        return (self.bits(name, index) * n) >> 64

    def rng(self, name: str, index: int) -> random.Random:
        """A generator of its own for object ``index`` of stream ``name``."""
        return random.Random(self.bits(name, index))

    def guid(self, name: str, index: int) -> str:
        """The id of object ``index`` of collection ``name``; ``index(name, id)`` gives ``index`` back."""
        node = (index * _ODD + self.salt(name)) & _NODE_MASK
        high = mix64(self.salt(name) ^ mix64(index ^ 0x5DEECE66D)) << 16 | (self.bits(name, index) & 0xFFFF)
        return format_guid(high << _NODE_BITS | node)

    def index(self, name: str, oid: object) -> int | None:
        """The index whose ``guid(name, index)`` is ``oid``, or None for any other string."""
        if not isinstance(oid, str) or len(oid) != 36:
            return None
        try:
            node = int(oid[24:], 16)
        except ValueError:
            return None
        index = ((node - self.salt(name)) * _ODD_INVERSE) & _NODE_MASK
        return index if index < MAX_INDEX and self.guid(name, index) == oid else None
