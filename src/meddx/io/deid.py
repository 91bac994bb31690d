"""De-identification: which DICOM header fields may travel with an `Image`, and which never do.

`safe_metadata(ds)` keeps an explicit allow-list of technical, non-identifying fields (an
allow-list, not a block-list, so an unexpected private or new tag can never leak).
`dicom_refs(...)` keeps the UIDs that DICOM SEG/SR outputs need to reference the source.
`read_phi(path)` is the only way to get patient identifiers, for callers that explicitly
ask for them (e.g. `meddx report --include-phi`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from meddx.errors import InputError

# Technical / descriptive fields that do not identify a person.
SAFE_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "StudyDate",
    "SeriesDate",
    "SeriesNumber",
    "ImageType",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "KVP",
    "ConvolutionKernel",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "FlipAngle",
    "ScanningSequence",
    "SequenceVariant",
    "MRAcquisitionType",
    "PatientPosition",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "FrameTime",
    "CineRate",
    "RecommendedDisplayFrameRate",
    "NumberOfFrames",
    "NumberOfTemporalPositions",
    "LossyImageCompression",
    "ContrastBolusAgent",
)

# Free text typed at the scanner or the RIS ("CT chest for J. Doe", "follow-up after ..."): may identify a person,
# so never in `Image.metadata` (reports, `meddx info`); only returned by `read_phi`.
FREE_TEXT_KEYWORDS: tuple[str, ...] = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "StudyComments",
    "AdditionalPatientHistory",
    "RequestedProcedureDescription",
    "PerformedProcedureStepDescription",
)

# Identifying fields: never in `Image.metadata`; only returned by `read_phi`.
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MilitaryRank",
    "EthnicGroup",
    "AccessionNumber",
    "StudyID",
    "StudyTime",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "StationName",
    "DeviceSerialNumber",
)

REF_KEYWORDS: tuple[str, ...] = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SOPClassUID",
)


def _plain(value: Any) -> Any:
    """DICOM element value -> JSON-friendly Python value (numbers stay numbers)."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, DSdecimal, IS, PersonName

    if isinstance(value, PersonName):  # never expected here, but never let a name through
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (DSfloat, DSdecimal)):
        return float(value)
    if isinstance(value, IS):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, bytes):
        return None
    return str(value)


def safe_metadata(ds: Any, keywords: Iterable[str] = SAFE_KEYWORDS) -> dict[str, Any]:
    """Allow-listed, non-identifying header fields of a pydicom Dataset."""
    out: dict[str, Any] = {}
    for kw in keywords:
        if kw in PHI_KEYWORDS or kw in FREE_TEXT_KEYWORDS:
            continue
        value = ds.get(kw)
        if value is None or value == "":
            continue
        plain = _plain(value)
        if plain is None or plain == "" or plain == []:
            continue
        out[kw] = plain
    meta = getattr(ds, "file_meta", None)
    tsuid = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsuid is not None:
        out["TransferSyntax"] = str(getattr(tsuid, "name", tsuid))
    return out


def dicom_refs(first: Any, sop_instance_uids: Any, frame_numbers: list[Any] | None = None) -> dict[str, Any]:
    """UIDs needed to reference the source images later (DICOM SEG/SR), in array order."""
    refs: dict[str, Any] = {}
    for kw in REF_KEYWORDS:
        value = first.get(kw)
        if value:
            refs[kw] = str(value)
    refs["SOPInstanceUIDs"] = sop_instance_uids
    if frame_numbers is not None:
        refs["ReferencedFrameNumbers"] = frame_numbers
    return refs


def read_phi(path: str | Path) -> dict[str, Any]:
    """Patient/institution identifiers of a DICOM file or series folder -- only on explicit request.

    Returns an empty dict for non-DICOM inputs. Values are plain strings.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.multival import MultiValue

    from meddx.io.dicom import looks_like_dicom

    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    candidates = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in candidates:
        if not looks_like_dicom(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True,
                                 specific_tags=list(PHI_KEYWORDS + FREE_TEXT_KEYWORDS))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            continue
        out: dict[str, Any] = {}
        for kw in PHI_KEYWORDS + FREE_TEXT_KEYWORDS:
            value = ds.get(kw)
            if value is None or value == "":
                continue
            if kw == "OtherPatientIDsSequence":
                continue
            out[kw] = [str(v) for v in value] if isinstance(value, MultiValue) else str(value)
        return out
    return {}
