"""The value a MAPPING_FILE yields: ``MappingFile`` (attributes added, renames, omissions per object type),
its ``CustomAttr`` entries with the record key and external id an added attribute gets, and ``EMPTY``.

Kept apart so that ``shared.records.mapping_file`` (which builds these) and ``shared.records.mapping_file_apply`` (which applies
them) both import it without importing each other in a cycle. Pure.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CustomAttr:
    """One attribute added by the file: its Assets name, Graph source path, Assets type and description."""

    name: str
    source: str
    type: str = "text"
    description: str = ""

    @property
    def locator(self) -> str:
        """The record key it is pushed under: ``x_`` + the source with ``.`` written as ``__``."""
        return "x_" + self.source.replace(".", "__")

    @property
    def xid(self) -> str:
        """External-id key: ``custom-<slug of the name>`` (a short hash for a name without ASCII letters)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        if not slug:
            slug = hashlib.blake2b(self.name.encode(), digest_size=5).hexdigest()
        return f"custom-{slug}"


@dataclass(frozen=True)
class MappingFile:
    """What a MAPPING_FILE changes, keyed by object-type key (``user``, ``office``, ...): attributes added,
    renames (default name -> new name) and omissions (default names). Hashable; ``EMPTY`` changes nothing."""

    attributes: dict[str, tuple[CustomAttr, ...]] = field(default_factory=dict)
    renames: dict[str, dict[str, str]] = field(default_factory=dict)
    omit: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def _canonical(self) -> tuple:
        return (tuple(sorted((k, v) for k, v in self.attributes.items() if v)),
                tuple(sorted((k, tuple(sorted(v.items()))) for k, v in self.renames.items() if v)),
                tuple(sorted((k, tuple(sorted(v))) for k, v in self.omit.items() if v)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MappingFile) and self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self._canonical())

    def __bool__(self) -> bool:
        return any(self._canonical())


EMPTY = MappingFile()
