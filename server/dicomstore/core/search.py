"""QIDO-RS search (PS3.18 10.6): read the query under the mode's policy, ask the catalog, build
the results.

Query parameters (PS3.18 8.3.4; Google's DICOM conformance statement; docs/google-behaviour.md,
section "QIDO-RS (search)"):
- `{attribute}={value}`: the attribute by keyword or tag. google mode: only the keys Google
  lists for the level (`DicomWebPolicy.searchable_keys`); standard mode: every indexed attribute
  (`dicomstore.dicom.header.INDEX_KEYWORDS`) and ModalitiesInStudy, at every level. Any other
  key, or the same key twice, is INVALID_ARGUMENT naming it. Matching rules:
  `_condition`.
- `fuzzymatching=true|false`; `includefield=` keywords or tags, comma-separated or repeated,
  or `all`.
- `limit`: default 100 for studies and series, 1,000 for instances; a limit above the maximum
  (5,000 / 50,000) is lowered to it, as PS3.18 8.3.4.4 lets a server do (without the Warning
  header, as Google sends none); 0, negative or not a number is INVALID_ARGUMENT.
- `offset`: 0 to 1,000,000; anything else is INVALID_ARGUMENT (a lowered offset would return
  other results than the ones asked for).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dicomstore.core.errors import InvalidArgument
from dicomstore.core.names import DicomStoreName
from dicomstore.core.policy import DicomWebPolicy
from dicomstore.core.ports import Catalog
from dicomstore.core.queries import Condition, Level, Match, MatchKind, Query
from dicomstore.dicom import qido
from dicomstore.dicom.header import INDEX_KEYWORDS
from dicomstore.dicom.qido import Attribute, InvalidQuery, Selection

#: (default, maximum) of `limit` per level (docs/google-behaviour.md#qido-limit-offset).
LIMITS: Final = {
    Level.STUDIES: (100, 5_000),
    Level.SERIES: (100, 5_000),
    Level.INSTANCES: (1_000, 50_000),
}
MAX_OFFSET: Final = 1_000_000

_STANDARD_KEYS: Final = frozenset(INDEX_KEYWORDS) | frozenset(qido.KEY_ALIASES)
_CONTROLS: Final = frozenset({"limit", "offset", "fuzzymatching"})
_IN_THREAD_ABOVE: Final = 200  # results to build before it is worth leaving the event loop


@dataclass(frozen=True)
class SearchRequest:
    """A parsed QIDO-RS request: what to ask the catalog and what to show of each match."""

    query: Query
    selection: Selection


def parse_request(
    level: Level,
    params: Sequence[tuple[str, str]],
    policy: DicomWebPolicy,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> SearchRequest:
    """Read the query parameters of a search at `level` within a study or series.

    Raise InvalidArgument naming the offending parameter.
    """
    try:
        return _parse(level, params, policy, study_uid, series_uid)
    except InvalidQuery as exc:
        raise InvalidArgument(exc.message, field=exc.key) from None


def _parse(
    level: Level,
    params: Sequence[tuple[str, str]],
    policy: DicomWebPolicy,
    study_uid: str | None,
    series_uid: str | None,
) -> SearchRequest:
    controls: dict[str, str] = {}
    includes: list[str] = []
    keys: dict[str, tuple[str, Attribute, str]] = {}
    for name, value in params:
        if name in _CONTROLS:
            if name in controls:
                raise InvalidQuery(name, f"{name}: given more than once")
            controls[name] = value
        elif name == "includefield":
            includes += (part.strip() for part in value.split(","))
        else:
            attr = _search_key(name, level, policy)
            if attr.tag in keys:
                raise InvalidQuery(name, f"{name}: given more than once")
            keys[attr.tag] = (name, attr, value)
    requested = [_includefield(item) for item in includes if item != "all"]
    default_limit, max_limit = LIMITS[level]
    limit = default_limit
    if "limit" in controls:
        limit = min(_integer("limit", controls["limit"], low=1), max_limit)
    offset = _integer("offset", controls.get("offset", "0"), low=0, high=MAX_OFFSET)
    fuzzy = controls.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise InvalidQuery("fuzzymatching", f"fuzzymatching: {fuzzy!r} is neither true nor false")
    conditions: list[Condition] = []
    for name, attr, value in keys.values():
        found = _condition(
            name, attr, value, wildcards=policy.qido_wildcards, fuzzy=fuzzy == "true"
        )
        if found is not None:
            conditions.append(found)
    chosen = qido.selection(
        level,
        study_scoped=study_uid is not None,
        series_scoped=series_uid is not None,
        # Matching keys are returned too (PS3.18 10.6.3.3.1), an alias as itself.
        requested=[*requested, *(attr.tag for _, attr, _ in keys.values())],
        include_all="all" in includes,
    )
    shown = None if chosen.include_all or level is not Level.INSTANCES else chosen.tags
    query = Query(level, study_uid, series_uid, tuple(conditions), limit, offset, shown)
    return SearchRequest(query, chosen)


def _integer(name: str, value: str, *, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise InvalidQuery(name, f"{name}: {value!r} is not an integer {bounds}")
    return number


def _includefield(item: str) -> str:
    attr = qido.attribute(item)
    if attr is None:
        raise InvalidQuery("includefield", f"includefield: {item!r} is not a keyword or tag")
    if attr.tag in qido.UNSUPPORTED_INCLUDEFIELDS:
        raise InvalidQuery("includefield", f"includefield: {item} is not supported")
    return attr.tag


def _search_key(name: str, level: Level, policy: DicomWebPolicy) -> Attribute:
    attr = qido.attribute(name)
    if attr is None:
        raise InvalidQuery(name, f"unknown query parameter {name!r}: not a keyword or tag")
    if policy.searchable_keys is None:
        if attr.keyword not in _STANDARD_KEYS:
            raise InvalidQuery(name, f"{name} is not an indexed attribute: it cannot be searched")
        return attr
    allowed = policy.searchable_keys[level.value]
    if attr.keyword not in allowed:
        raise InvalidQuery(
            name,
            f"{name} is not a supported search key for {level.value}"
            f" (supported: {', '.join(sorted(allowed))})",
        )
    return attr


class Search:
    """QIDO-RS over the catalog's index."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def search(self, store: DicomStoreName, request: SearchRequest) -> list[dict[str, Any]]:
        """The DICOM JSON result of each match of `request` (PS3.18 10.6.3.3).

        Raise NotFound when the store is missing; no match is an empty list.
        """
        matches = await self._catalog.search(store, request.query)
        if len(matches) > _IN_THREAD_ABOVE:
            return await asyncio.to_thread(_results, matches, request.selection)
        return _results(matches, request.selection)


def _results(matches: Sequence[Match], chosen: Selection) -> list[dict[str, Any]]:
    return [qido.result(match, chosen) for match in matches]


def _condition(
    key: str, attr: Attribute, value: str, *, wildcards: bool, fuzzy: bool
) -> Condition | None:
    """The condition `key=value` sets on the indexed attribute `attr`; None matches anything.

    `wildcards` enables PS3.4 wildcard and UID-list matching (standard mode); without it `*`,
    `?`, `,` and `\\` are literal characters. Raise InvalidQuery for a malformed value.
    """
    keyword = qido.KEY_ALIASES.get(attr.keyword, attr.keyword)
    text = value.strip()
    if not text or (wildcards and set(text) == {"*"}):
        return None  # universal matching (PS3.4 C.2.2.2.3)
    if attr.vr == "PN" and fuzzy:
        tokens = tuple(dict.fromkeys(qido.name_tokens(text)))
        return Condition(keyword, MatchKind.TOKENS, tokens) if tokens else None
    if wildcards and ("*" in text or "?" in text):
        if attr.vr not in qido.WILDCARD_VRS:
            raise InvalidQuery(key, f"{key}: wildcards are not allowed on VR {attr.vr}")
        return Condition(keyword, MatchKind.WILDCARD, (text,))
    if attr.vr in qido.RANGE_VRS and "-" in text:
        return Condition(keyword, MatchKind.RANGE, qido.range_values(key, attr.vr, text))
    if wildcards and attr.vr == "UI" and ("," in text or "\\" in text):
        uids = tuple(dict.fromkeys(u.strip() for u in re.split(r"[,\\]", text) if u.strip()))
        return Condition(keyword, MatchKind.ANY_OF, uids)
    return Condition(keyword, MatchKind.EXACT, (qido.single_value(key, attr.vr, text),))
