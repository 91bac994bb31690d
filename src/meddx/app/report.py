"""`meddx report`: report.html + report.pdf per study (a batch: one folder each plus index.html), and for a
DICOM series a DICOM SEG of the lesions and a TID 1500 SR."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meddx.app.common import Log, expand_inputs, logger_or, read_input, reads_sequences
from meddx.app.outputs import writes_output_folder
from meddx.errors import ConfigError, InputError, MeddxError, naming


@writes_output_folder("report", "run_dir", "inputs")
def report_studies(run_dir: str | Path, inputs: Sequence[str | Path], out: str | Path, include_phi: bool = False,
                   dicom: bool = True, tta: bool = False, log: Log | None = None, allow_ood: bool = False,
                   deidentify_dicom: bool = False, coverage: float = 0.9) -> dict[str, Any]:
    """report.html + report.pdf per study (batch: one folder each plus index.html), DICOM SEG/SR when DICOM.

    A classifier RUN reports its decision with a Grad-CAM heatmap; a segmentation RUN its lesion mask,
    probability map and lesion sizes (`tta`: flip test-time augmentation); a sequence RUN its frame importance
    and key frames (a folder of numbered slice images is one study)."""
    from meddx.infer import load
    from meddx.report import render_batch, render_study_report

    log = logger_or(log)
    if deidentify_dicom and dicom:
        _anonymizer()  # a missing package is a clear error before any work
    predictor = load(run_dir, tta=tta)
    if hasattr(predictor, "set_coverage"):  # conformal prediction sets at this target coverage
        predictor.set_coverage(coverage)
    if predictor.kind == "slice_labeller":  # each INPUT is one stack (a folder of slices is not expanded)
        from meddx.app.slice_labelling import report_stacks

        return report_stacks(predictor, inputs, out, include_phi=include_phi, log=log)
    sequences = reads_sequences(predictor)
    files = expand_inputs(inputs, sequences=sequences)
    studies = []
    for f in files:
        with naming(f):
            s = predictor.predict(read_input(f, sequences)).to_study(str(f))
        s["diagnosis_withheld"] = s.get("in_distribution") is False and not allow_ood  # OOD: no diagnosis
        if include_phi:
            try:
                from meddx.io.deid import read_phi
                s["phi"] = read_phi(f)
            except (InputError, OSError, ValueError):
                s["phi"] = {}
        studies.append(s)
    out = Path(out)
    info = _report_info(predictor)
    if len(studies) == 1:
        paths = render_study_report(studies[0], info, out, include_phi=include_phi)
        if dicom:
            paths.update(_dicom_outputs(studies[0], out, log, deidentify=deidentify_dicom))
        log(f"wrote {paths['html']} and {paths['pdf']}")
        return paths
    res = render_batch(studies, info, out, include_phi=include_phi)
    log(f"wrote {len(studies)} reports and {res['index']}")
    return res


def _report_info(predictor: Any) -> dict[str, Any]:
    """The RUN description the report's model card reads (task shown as the kind of model for a segmenter)."""
    info = predictor.info.to_dict()
    if predictor.kind == "segmenter":
        info["task"] = "segmentation"
    return info


def _dicom_outputs(study: dict[str, Any], out: Path, log: Log, deidentify: bool = False) -> dict[str, Any]:
    """DICOM SEG of the lesions and a TID 1500 SR, when the input was a DICOM series. They keep the source's
    patient and study modules (a derived object going back to the PACS must file with its study); `deidentify`
    applies the DICOM PS3.15 basic confidentiality profile to them instead."""
    from meddx.infer.classifier import full_size_mask

    image = study["image"]
    refs = image.metadata.get("dicom_refs")
    if not refs or image.spatial_ndim != 3 or image.is_sequence:
        return {}
    from meddx.report import write_dicom_seg, write_dicom_sr

    mask = np.zeros(image.array.shape[:3], dtype=np.uint8)
    for les in study["lesions"]:
        if "mask" in les:
            mask |= full_size_mask(les, mask.shape).astype(np.uint8)
    paths: dict[str, Any] = {}
    try:
        if study.get("diagnosis_withheld"):  # out of distribution: no lesion SEG; the SR says indeterminate
            mask[:] = 0
        finding = {"predicted": study["predicted"], "probability": study["probability"],
                   "in_distribution": not study.get("diagnosis_withheld"),
                   "threshold": study["threshold"], "model": "meddx"}
        if mask.any():
            paths["seg"] = str(write_dicom_seg(image, mask, study["source"], out / "lesions_seg.dcm"))
        paths["sr"] = str(write_dicom_sr(image, finding, study["lesions"], study["source"], out / "finding_sr.dcm"))
    except MeddxError:
        raise  # the user's input is the problem: one clear error, not a warning
    except (ValueError, TypeError, AttributeError) as exc:
        log(f"warning: could not write DICOM SEG/SR: {exc}")
    if deidentify:
        for key in ("seg", "sr"):
            if key in paths:
                deidentify_dicom_file(paths[key])
    return paths


ANONYMIZER = "dicom-anonymizer"


def _anonymizer() -> tuple[Any, Any]:
    """(anonymize_dataset, actions for the newest PS3.15 Table E.1-1 it ships) from the dicom-anonymizer package
    (KitwareMedical), a maintained implementation of the basic application level confidentiality profile."""
    try:
        from dicomanonymizer import anonymize_dataset
        from dicomanonymizer.simpledicomanonymizer import initialize_actions
    except ImportError:
        raise ConfigError(f"--deidentify-dicom needs the {ANONYMIZER} package (pip install {ANONYMIZER}), which "
                          "implements the DICOM PS3.15 basic confidentiality profile") from None
    for version in ("dicomfields_2026c", "dicomfields_2024b", "dicomfields_2023"):
        try:
            initialize_actions(version)
        except (ValueError, ImportError):
            continue
        return anonymize_dataset, version
    return anonymize_dataset, "dicomfields_2023"


def deidentify_dicom_file(path: str | Path) -> Path:
    """Apply the DICOM PS3.15 basic application level confidentiality profile (Table E.1-1, via dicom-anonymizer)
    to a written SEG/SR in place: patient and study identifiers, dates, descriptions and private tags removed or
    replaced, UIDs replaced consistently within the process (the SR still references the SEG). The content
    tree of an SR (ContentSequence) is the model's finding, written by meddx with coded concepts only, so it is
    kept (the profile would replace it); the result says so in DeidentificationMethod."""
    import pydicom
    from pydicom.dataset import Dataset
    from dicomanonymizer.simpledicomanonymizer import keep

    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from dicomanonymizer.simpledicomanonymizer import dictionary as uid_map
    from dicomanonymizer.simpledicomanonymizer import initialize_actions, replace_element_UID

    anonymize, version = _anonymizer()
    ds = pydicom.dcmread(str(path))
    with _quiet_stdout():  # the package prints skipped tags
        anonymize(ds, extra_anonymization_rules={(0x0040, 0xA730): keep}, delete_private_tags=True,
                  base_rules_gen=lambda: initialize_actions(version))
    tables = dicom_anonymization_database_selector(version)
    uid_tags = {t for t in tables["U_TAGS"] + tables["X_Z_U_STAR_TAGS"] if len(t) == 2}

    new_uids = set(uid_map.values())

    def same_uids(_: Any, elem: Any) -> None:  # nested references (evidence, content tree) get the same new UIDs
        if elem.VR != "UI" or not isinstance(elem.value, str) or not elem.value or elem.value in new_uids:
            return
        if elem.value in uid_map or (elem.tag.group, elem.tag.element) in uid_tags:
            replace_element_UID(elem)
            new_uids.add(elem.value)

    ds.walk(same_uids)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 basic profile (dicom-anonymizer); SR content kept"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    if getattr(ds, "file_meta", None) is not None and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def _quiet_stdout() -> Any:
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())
