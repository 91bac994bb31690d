"""What the watcher sends back for a real CT series: TID 1500 SR, SEG and Encapsulated PDF (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest


class _Info:
    def to_dict(self):
        return {"model": "cnn", "meddx_version": "0.1.0", "created": "2026-01-01T00:00:00", "task": "binary",
                "class_names": ["normal", "lesion"], "positive_class": "lesion", "threshold": 0.4,
                "val_metrics": {"auc": 0.9}}


class _Predictor:
    kind = "segmenter"
    info = _Info()


@pytest.fixture(scope="module")
def ct(ct_dir):
    import pydicom

    from meddx.io import read_image

    image = read_image(ct_dir)
    datasets = [pydicom.dcmread(f) for f in sorted(ct_dir.iterdir()) if f.is_file()]
    return image, datasets


def _prediction(image, in_distribution=None):
    from meddx.explain import mask_to_lesions
    from meddx.infer.prediction import Prediction

    z, y, x = np.ogrid[: image.array.shape[0], :512, :512]
    sz, sy, sx = image.spacing
    mask = (((z - 64) * sz) ** 2 + ((y - 300) * sy) ** 2 + ((x - 200) * sx) ** 2 < 12.0**2) & (image.array > 0)
    display = np.clip((image.array[:, ::4, ::4].astype(np.float32) + 200) / 500, 0, 1)
    return Prediction(probabilities={"normal": 0.2, "lesion": 0.8}, label="lesion", probability=0.8, threshold=0.4,
                      image=image, display=display, kind="segmenter", positive_class="lesion", mask=mask,
                      lesions=mask_to_lesions(mask, spacing=image), in_distribution=in_distribution)


def _dciodvfy_errors(path) -> list[str]:
    import shutil
    import subprocess

    if not shutil.which("dciodvfy"):
        return []
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def _items(seq):
    for it in seq:
        yield it
        if "ContentSequence" in it:
            yield from _items(it.ContentSequence)


@pytest.mark.slow
def test_derived_objects_for_a_segmenter(ct, tmp_path):
    import highdicom as hd
    import pydicom

    from meddx.pacs.derive import Model, derived_objects

    image, datasets = ct
    refs = image.metadata["dicom_refs"]
    model = Model("liver_seg", "0.1.0-abc", _Predictor(), tmp_path)
    with pytest.warns(UserWarning, match="FrameOfReferenceUID"):
        paths = derived_objects(model, _prediction(image), datasets, tmp_path / "out")
    assert {"seg", "pdf", "sr"} <= set(paths)
    src = datasets[0]
    sr = hd.sr.srread(paths["sr"])
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.SeriesDescription == model.sr_description(refs["SeriesInstanceUID"])
    assert len(sr.SeriesDescription) <= 64 and "liver_seg" in sr.SeriesDescription
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.PatientName == src.PatientName and sr.PatientBirthDate == src.PatientBirthDate  # patient module kept
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.SeriesInstanceUID == refs["SeriesInstanceUID"]
    groups = sr.content.get_image_measurement_groups()
    assert groups[0].finding_type.value == "52988006"  # SCT Lesion
    assert [m.value for m in groups[0].get_measurements()] == [pytest.approx(0.8)]
    assert len(groups) >= 2 and groups[1].get_measurements()  # lesion sizes
    names = {it.ConceptNameCodeSequence[0].CodeValue: it for it in _items(sr.ContentSequence)}
    assert names["111001"].TextValue == "liver_seg" and names["111003"].TextValue == "0.1.0-abc"  # algorithm
    assert all(it.ConceptNameCodeSequence[0].CodingSchemeDesignator in ("SCT", "DCM", "UCUM")
               for it in _items(sr.ContentSequence))
    seg = hd.seg.segread(paths["seg"])
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientName == src.PatientName
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == refs["SeriesInstanceUID"]
    doc = pydicom.dcmread(paths["pdf"])
    assert doc.Modality == "DOC" and doc.StudyInstanceUID == src.StudyInstanceUID
    assert bytes(doc.EncapsulatedDocument[:4]) == b"%PDF"
    for k in ("sr", "seg", "pdf"):
        assert _dciodvfy_errors(paths[k]) == [], k


@pytest.mark.slow
def test_out_of_distribution_gives_no_diagnosis(ct, tmp_path):
    import highdicom as hd

    from meddx.pacs.derive import Model, derived_objects
    from meddx.report.dicom_out import OOD_TEXT

    image, datasets = ct
    paths = derived_objects(Model("m", "1", _Predictor(), tmp_path), _prediction(image, in_distribution=False),
                            datasets, tmp_path / "out")
    assert "seg" not in paths
    groups = hd.sr.srread(paths["sr"]).content.get_image_measurement_groups()
    assert len(groups) == 1 and OOD_TEXT in groups[0].tracking_identifier
    assert groups[0].finding_type.value == "82334004"  # SCT Indeterminate
