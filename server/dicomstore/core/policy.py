"""The two DICOMweb behaviours, in one object so both modes run on the same code.

`google` (the default) reproduces Google's Cloud Healthcare DICOMweb, quirks included
(docs/google-behaviour.md, sections "QIDO-RS (search)" and "STOW-RS (store)"; #stow-status,
#qido-searchable-keys, #qido-unsupported-key, #qido-no-match): 409 when any STOW instance fails,
exact-match QIDO on a narrow set of keys, 400 on an unsupported key, 204 on no match. `standard`
follows PS3.18 where Google is narrower: 202 on partial STOW failure, wildcards, every indexed
attribute, 200 with `[]`.
"""

from __future__ import annotations

from dataclasses import dataclass

# QIDO-RS keys Google's conformance statement lets one search on, per level
# (docs/google-behaviour.md#qido-searchable-keys).
_GOOGLE_STUDY_KEYS = frozenset(
    {
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDate",
    }
)
_GOOGLE_SERIES_KEYS = _GOOGLE_STUDY_KEYS | {"SeriesInstanceUID", "Modality"}
_GOOGLE_INSTANCE_KEYS = _GOOGLE_SERIES_KEYS | {"SOPInstanceUID"}


@dataclass(frozen=True)
class DicomWebPolicy:
    name: str
    stow_partial_failure_status: int
    """HTTP status of a STOW-RS request where some instances were stored and some were not."""
    qido_wildcards: bool
    qido_no_match_status: int
    """204 (Google: empty body) or 200 (PS3.18: `[]`)."""
    searchable_keys: dict[str, frozenset[str]] | None
    """Per QIDO level ("studies", "series", "instances"); None means every indexed attribute."""
    stow_xml_namespace: bool
    """Whether a STOW-RS response in XML declares PS3.19's Native DICOM Model namespace
    (PS3.18 F.3); Google's XML has none."""
    rendered_parameters: tuple[str, ...]
    """Query parameters of WADO-RS rendered resources that are honoured; others are ignored."""


GOOGLE = DicomWebPolicy(
    name="google",
    stow_partial_failure_status=409,
    qido_wildcards=False,
    qido_no_match_status=204,
    searchable_keys={
        "studies": _GOOGLE_STUDY_KEYS,
        "series": _GOOGLE_SERIES_KEYS,
        "instances": _GOOGLE_INSTANCE_KEYS,
    },
    stow_xml_namespace=False,
    rendered_parameters=("viewport",),
)

STANDARD = DicomWebPolicy(
    name="standard",
    stow_partial_failure_status=202,
    qido_wildcards=True,
    qido_no_match_status=200,
    searchable_keys=None,
    stow_xml_namespace=True,
    rendered_parameters=("viewport", "quality", "window"),
)

POLICIES = {policy.name: policy for policy in (GOOGLE, STANDARD)}
