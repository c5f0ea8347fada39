"""The search port's types: what a QIDO-RS search asks of a catalog, and what it finds.

`search.Search` builds a `Query` from the request (`dicom.qido` knows the DICOM side: attribute
ids, value syntax, levels); a catalog answers it with `Match`es (`ports.Catalog.search`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomstore.dicom.qido import Level

__all__ = ["Condition", "Level", "Match", "MatchKind", "Query"]


class MatchKind(enum.Enum):
    EXACT = "exact"
    ANY_OF = "any_of"
    """List of UID matching: any of `values`."""
    RANGE = "range"
    """`values` are (lowest, highest), inclusive; "" for an open end."""
    WILDCARD = "wildcard"
    """`values` is one pattern with `*` (any run) and `?` (any one character)."""
    TOKENS = "tokens"
    """Fuzzy Person Name: any of `values` is a prefix of a stored token (`name_tokens`)."""


@dataclass(frozen=True)
class Condition:
    """One matching key: the instances whose attribute `keyword` matches."""

    keyword: str
    kind: MatchKind
    values: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """A search: what to return, within which study or series, matching every condition."""

    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    conditions: tuple[Condition, ...] = ()
    limit: int = 100
    offset: int = 0
    attributes: tuple[str, ...] | None = None
    """Tags of the instance attributes the results show: a catalog may read only these of each
    instance's metadata. None: all of them (`includefield=all`)."""


@dataclass(frozen=True)
class Match:
    """One study, series or instance found, with what its result is built from.

    Studies carry `study_attributes` and their counts; series `study_attributes`,
    `series_attributes` and `instance_count`; instances their `metadata` (DICOM JSON).
    Counts and modalities cover visible instances only.
    """

    study_uid: str
    series_uid: str = ""
    sop_uid: str = ""
    study_attributes: Mapping[str, Any] = field(default_factory=dict)
    series_attributes: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    series_count: int = 0
    instance_count: int = 0
    modalities: tuple[str, ...] = ()
