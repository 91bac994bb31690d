"""Standard DICOM outputs for PACS: SEG (lesion mask), SR TID 1500 Measurement Report (finding,
probability, lesion sizes; SNOMED CT / DCM / UCUM codes), a Secondary Capture of the overlay (highdicom)
and the PDF report as Encapsulated PDF (pydicom).

Every object references the source series (Study/Series/SOP Instance UIDs) and, as DICOM
requires, carries the patient module copied from the source; nothing else identifying is added,
and callers choose the file names (never derived from patient data here).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.errors import InputError
from meddx.io.image import Image
from meddx.utils import atomic_path

MANUFACTURER = "meddx"
_UID_ROOT_ENTROPY = "meddx-derived-frame-of-reference"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("meddx")
    except Exception:  # noqa: BLE001 -- metadata may be missing in a source checkout
        return "0"


def _refs(image: Image) -> dict[str, Any]:
    refs = image.metadata.get("dicom_refs") or {}
    if not refs.get("SOPInstanceUIDs"):
        raise InputError("image has no DICOM references (dicom_refs): SEG/SR need a DICOM source", image.source)
    return refs


def load_source_datasets(image: Image, sources: Any, pixels: bool = False) -> list[Any]:
    """Source pydicom datasets in the image's slice order (dicom_refs SOPInstanceUIDs).

    `sources`: a series folder, or a list of file paths and/or pydicom Datasets. Headers only
    unless `pixels`; instances not in the image's series are ignored.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    refs = _refs(image)
    wanted = [str(u) for u in refs["SOPInstanceUIDs"]]
    if isinstance(sources, (str, Path)):
        p = Path(sources)
        if not p.exists():
            raise InputError("no such DICOM file or folder", p)
        items: list[Any] = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    elif isinstance(sources, Dataset):
        items = [sources]
    else:
        items = list(sources)
    found: dict[str, Any] = {}
    for item in items:
        if isinstance(item, Dataset):
            ds = item
        else:
            try:
                ds = pydicom.dcmread(item, stop_before_pixels=not pixels)
            except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                if Path(item).suffix.lower() in (".txt", ".json", ".md"):
                    continue
                raise InputError(f"cannot read source DICOM: {exc}", item) from exc
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid in wanted and uid not in found:
            found[uid] = ds
    order: list[str] = []
    for u in wanted:  # multi-frame sources repeat their UID per frame
        if u not in order:
            order.append(u)
    missing = [u for u in order if u not in found]
    if missing:
        raise InputError(f"{len(missing)} of {len(order)} source instances not found among the given DICOM files",
                         str(sources) if isinstance(sources, (str, Path)) else image.source)
    return [_with_type2_attributes(found[u]) for u in order]


# Patient/study attributes of type 2 (must be present, may be empty) that highdicom copies from the evidence into
# a derived SR/SEG; a source may legally lack them, so copies carry them empty instead.
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_type2_attributes(ds: Any) -> Any:
    """`ds`, or a copy with the absent type-2 patient/study attributes present and empty."""
    import copy

    absent = [kw for kw in TYPE2_PATIENT_STUDY if kw not in ds]
    if not absent:
        return ds
    ds = copy.deepcopy(ds)
    for kw in absent:
        setattr(ds, kw, None)
    return ds


def _with_frame_of_reference(datasets: list[Any]) -> list[Any]:
    """Copies that carry a FrameOfReferenceUID when the source lacks one (required by SEG).

    The UID is derived deterministically from the SeriesInstanceUID, so the SEG and SR written
    for one series agree; a warning says so. Sources that have one are returned unchanged.
    """
    if all(ds.get("FrameOfReferenceUID") for ds in datasets):
        return datasets
    from copy import copy

    from pydicom.uid import generate_uid

    series = str(datasets[0].get("SeriesInstanceUID", ""))
    uid = generate_uid(entropy_srcs=[_UID_ROOT_ENTROPY, series])
    warnings.warn("source series has no FrameOfReferenceUID; the DICOM output uses one derived from "
                  "the SeriesInstanceUID", stacklevel=3)
    out = []
    for ds in datasets:
        if not ds.get("FrameOfReferenceUID"):
            ds = copy(ds)  # shallow: new element dict, the source dataset is left untouched
            ds.FrameOfReferenceUID = uid
            if not ds.get("PositionReferenceIndicator"):
                ds.PositionReferenceIndicator = ""
        out.append(ds)
    return out


def _save_dataset(ds: Any, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _frames_mask(image: Image, mask: Any, n_sources: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 2:
        m = m[None]
    spatial = image.spatial_shape if image.spatial_ndim == 3 else (1, *image.spatial_shape)
    if tuple(m.shape) != tuple(spatial):
        raise InputError(f"mask of shape {np.shape(mask)} does not match the image's spatial shape "
                         f"{image.spatial_shape}", image.source)
    return m != 0


def write_dicom_seg(image: Image, mask: Any, source_datasets_or_paths: Any, path: str | Path,
                    label: str = "Lesion") -> Path:
    """Write a binary DICOM SEG of `mask` (same spatial shape as `image`, (z, y, x)) referencing the source series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _with_frame_of_reference(load_source_datasets(image, source_datasets_or_paths))
    frames = _frames_mask(image, mask, len(sources))
    if not frames.any():
        raise InputError("mask is empty: nothing to segment", image.source)
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1:
        pixel = frames  # one multi-frame source: frames in its own order
    elif len(sources) != frames.shape[0]:
        raise InputError(f"mask has {frames.shape[0]} slices but the source series has {len(sources)} instances",
                         image.source)
    else:
        pixel = frames
    algo = hd.AlgorithmIdentificationSequence(name="meddx", family=codes.DCM.ArtificialIntelligence,
                                              version=_version())
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=str(label)[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion, algorithm_type="AUTOMATIC", algorithm_identification=algo)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="meddx", software_versions=_version(),
        device_serial_number="0", series_description=f"meddx {label} segmentation"[:64],
    )
    return _save_dataset(seg, path)


# Common class names that are not a SNOMED CT concept name as written (lower case, no punctuation).
_SYNONYMS = {
    "tumour": "Tumor", "healthy": "Normal", "negative": "Normal", "no finding": "Normal", "nofinding": "Normal",
    "no tumor": "Normal", "notumor": "Normal", "no lesion": "Normal", "positive": "Abnormal", "abnormality": "Abnormal",
    "malignancy": "Malignant", "cancer": "Malignant", "benign lesion": "Benign", "malignant lesion": "Malignant",
    "lesions": "Lesion", "nodules": "Nodule", "masses": "Mass", "cysts": "Cyst",
}


def finding_code(text: str, positive_class: str | None = None) -> Any:
    """A standard SNOMED CT coded concept for a class name.

    Looks the name up in pydicom's SNOMED CT dictionary (e.g. "lesion" -> SCT 52988006 Lesion, "normal" -> SCT
    17621005 Normal) after a few synonyms, then without its leading words ("liver lesion" -> Lesion). A name
    with no standard concept is coded SCT 263654008 Abnormal when it is the positive class, SCT 17621005 Normal
    when it is the other class of a binary task, else SCT 404684003 Finding (callers keep the class name as
    text beside it: the SR's tracking identifier).
    """
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    key = re.sub(r"[^a-z0-9]+", " ", str(text).lower()).strip()
    key = _SYNONYMS.get(key, _SYNONYMS.get(key.replace(" ", ""), key))
    words = [w for w in re.split(r"[^A-Za-z0-9]+", key) if w]
    # the whole name, then without its leading qualifiers ("liver lesion" -> Lesion)
    for k in range(len(words)):
        camel = "".join(w[:1].upper() + w[1:] for w in words[k:])
        if k and len(camel) < 4:
            break
        try:
            code = getattr(codes.SCT, camel)
        except AttributeError:
            continue
        return CodedConcept(code.value, code.scheme_designator, code.meaning)
    if positive_class is not None:
        code = codes.SCT.Abnormal if str(text) == str(positive_class) else codes.SCT.Normal
    else:
        code = codes.SCT.Finding
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


def _ml() -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")


def _lesion_slices(lesion: dict[str, Any], n_sources: int) -> list[int]:
    bbox = lesion.get("bbox_px")
    if bbox is None or len(bbox) != 3:
        return [0] if n_sources == 1 else []
    lo, hi = int(bbox[0][0]), int(bbox[0][1])
    return [z for z in range(max(0, lo), min(n_sources - 1, hi) + 1)]


def _finding_sites(sources: list[Any]) -> list[Any] | None:
    """The body part examined (source header) as a SNOMED CT finding site, when pydicom knows the concept."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    part = str(sources[0].get("BodyPartExamined", "") or "").strip()
    camel = "".join(w[:1].upper() + w[1:].lower() for w in re.split(r"[^A-Za-z0-9]+", part) if w)
    try:
        code = getattr(codes.SCT, camel) if camel else None
    except AttributeError:
        code = None
    return [hd.sr.FindingSite(anatomic_location=code)] if code is not None else None


OOD_TEXT = "out of distribution, no diagnosis"


def write_dicom_sr(image: Image, finding: dict[str, Any], lesions: Sequence[dict[str, Any]], source_datasets: Any,
                   path: str | Path, series_description: str = "meddx measurement report") -> Path:
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) with the finding, its probability
    and each lesion's size (mm) and volume (mL), referencing the source series and instances.

    `finding`: {"predicted": str, "probability": float, optional "threshold", "model", "version",
    "positive_class", "in_distribution" (False: the SR states "out of distribution, no diagnosis", coded
    SCT 82334004 Indeterminate, with no probability and no lesions)}. The first measurement group's Finding
    (DCM 121071) is the predicted class's code (`finding_code`; the class name is its tracking identifier) with
    its Probability (DCM 122157); one group per lesion (SCT Lesion) holds Diameter / Volume / Area. Codes are
    SNOMED CT / DCM / UCUM; the algorithm (name, version, threshold as a parameter) is in every group.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = load_source_datasets(image, source_datasets)
    if "predicted" not in finding:
        raise InputError("finding needs a 'predicted' diagnosis", image.source)
    name = str(finding.get("model") or "meddx")[:64]
    params = [f"threshold={float(finding['threshold']):.6g}"] if finding.get("threshold") is not None else None
    algo = hd.sr.AlgorithmIdentification(name=name, version=str(finding.get("version") or _version())[:64],
                                         parameters=params, family=codes.DCM.ArtificialIntelligence,
                                         manufacturer=MANUFACTURER)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="meddx", manufacturer_name=MANUFACTURER, model_name=name))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    in_dist = finding.get("in_distribution", True) is not False
    sites = _finding_sites(sources)
    source_refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources]
    if in_dist:
        value = finding_code(finding["predicted"], finding.get("positive_class"))
        label = f"meddx finding: {finding['predicted']}"
        measurements = []
        if finding.get("probability") is not None:
            measurements.append(hd.sr.Measurement(name=codes.DCM.Probability, value=float(finding["probability"]),
                                                  unit=codes.UCUM.NoUnits, algorithm_id=algo))
    else:
        value, label, measurements, lesions = codes.SCT.Indeterminate, f"meddx: {OOD_TEXT}", [], []
    groups: list[Any] = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64]),
        finding_type=value, algorithm_id=algo, finding_sites=sites,
        measurements=measurements or None, source_images=source_refs,
    )]
    for k, lesion in enumerate(lesions, start=1):
        lm = []
        extent = lesion.get("extent_mm")
        if extent:
            lm.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=float(max(extent)), unit=codes.UCUM.Millimeter,
                                        algorithm_id=algo))
        if lesion.get("volume_ml") is not None:
            lm.append(hd.sr.Measurement(name=codes.SCT.Volume, value=float(lesion["volume_ml"]), unit=_ml(),
                                        algorithm_id=algo))
        if lesion.get("area_mm2") is not None:
            lm.append(hd.sr.Measurement(name=codes.SCT.Area, value=float(lesion["area_mm2"]),
                                        unit=hd.sr.CodedConcept("mm2", "UCUM", "square millimeter"), algorithm_id=algo))
        slices = _lesion_slices(lesion, len(sources)) or list(range(len(sources)))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {lesion.get('id', k)}"),
            finding_type=codes.SCT.Lesion, algorithm_id=algo, finding_sites=sites, measurements=lm or None,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(sources[z]) for z in slices],
        ))
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources, content=report[0], series_instance_uid=hd.UID(), series_number=902,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=series_description[:64],
    )
    return _save_dataset(sr, path)


def write_encapsulated_pdf(pdf: str | Path | bytes, source_dataset: Any, path: str | Path,
                           title: str = "meddx report", series_description: str = "meddx PDF report") -> Path:
    """Write a PDF (file or bytes) as a DICOM Encapsulated PDF in the source's study, for PACS viewers.

    Patient and study modules are copied from `source_dataset` (a derived object must carry them); the PDF
    itself should be rendered without identifiers (BurnedInAnnotation NO)."""
    import datetime as _dt

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    data = pdf if isinstance(pdf, bytes) else Path(pdf).read_bytes()
    if not data.startswith(b"%PDF"):
        raise InputError("not a PDF document", None if isinstance(pdf, bytes) else pdf)
    src = source_dataset if isinstance(source_dataset, Dataset) else pydicom.dcmread(source_dataset,
                                                                                      stop_before_pixels=True)
    sop_class = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    ds = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "IssuerOfPatientID",
               "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
               "AccessionNumber", "StudyDescription"):
        if kw in src:
            setattr(ds, kw, src[kw].value)
        elif kw in TYPE2_PATIENT_STUDY:
            setattr(ds, kw, None)  # type 2: present, empty
    if "StudyInstanceUID" not in ds:
        raise InputError("source has no StudyInstanceUID")
    now = _dt.datetime.now()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 904
    ds.SeriesDescription = series_description[:64]
    ds.InstanceNumber = 1
    ds.ConversionType = "SYN"
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = _version()
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ds.SourceInstanceSequence = [ref]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(data)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return _save_dataset(ds, path)


def _rgb_uint8(overlay: Any) -> np.ndarray:
    a = np.asarray(overlay)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise InputError(f"overlay must be an (H, W, 3) RGB array, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        af = a.astype(np.float64)
        if af.max(initial=0.0) <= 1.0:
            af = af * 255.0
        a = np.clip(np.round(af), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def write_secondary_capture(overlay_rgb: Any, source_dataset: Any, path: str | Path,
                            description: str = "meddx heatmap overlay") -> Path:
    """Write an RGB Secondary Capture (e.g. the heatmap overlay PNG) in the source's study, for
    PACS viewers that cannot show SEG. `overlay_rgb`: (H, W, 3) uint8 or float in [0, 1]."""
    import highdicom as hd
    import pydicom
    from pydicom.dataset import Dataset

    ds = source_dataset if isinstance(source_dataset, Dataset) else pydicom.dcmread(source_dataset,
                                                                                     stop_before_pixels=True)
    pixels = _rgb_uint8(overlay_rgb)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ds, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=hd.UID(), series_number=903, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, patient_orientation=("L", "P"),
        series_description=description[:64],
    )
    if "Laterality" not in sc:
        sc.Laterality = None  # type 2C: present, empty (the source did not state a laterality)
    return _save_dataset(sc, path)


def read_png_rgb(path: str | Path) -> np.ndarray:
    """An overlay PNG as an (H, W, 3) uint8 array (for `write_secondary_capture`)."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return np.asarray(im.convert("RGB"))
