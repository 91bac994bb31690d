"""DICOM SEG / SR / Secondary Capture for the real CT series: read back, reference the source, validate."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from meddx.report import read_png_rgb, write_dicom_seg, write_dicom_sr, write_secondary_capture


@pytest.fixture(scope="module")
def sphere_mask(ct_image):
    """Soft-tissue voxels (HU > 0) inside a 12 mm sphere: a small synthetic lesion over ~15 slices."""
    z, y, x = np.ogrid[: ct_image.array.shape[0], :512, :512]
    sz, sy, sx = ct_image.spacing
    sphere = ((z - 64) * sz) ** 2 + ((y - 300) * sy) ** 2 + ((x - 200) * sx) ** 2 < 12.0**2
    mask = sphere & (ct_image.array > 0)
    assert mask.sum() > 1000
    return mask


def _dciodvfy_errors(path) -> list[str]:
    if not shutil.which("dciodvfy"):
        return []
    res = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [l for l in (res.stdout + res.stderr).splitlines() if l.startswith("Error")]


def test_seg_references_source(ct_image, ct_dir, sphere_mask, tmp_path):
    import highdicom as hd

    refs = ct_image.metadata["dicom_refs"]
    with pytest.warns(UserWarning, match="FrameOfReferenceUID"):
        path = write_dicom_seg(ct_image, sphere_mask, ct_dir, tmp_path / "lesion_seg.dcm")
    seg = hd.seg.segread(path)
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == refs["SeriesInstanceUID"]
    assert seg.StudyInstanceUID == refs["StudyInstanceUID"]
    ref_uids = [i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    slices = np.nonzero(sphere_mask.any(axis=(1, 2)))[0]
    assert set(refs["SOPInstanceUIDs"][z] for z in slices) <= set(ref_uids)
    # the mask comes back voxel for voxel in the source's slice order
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=[refs["SOPInstanceUIDs"][z] for z in slices],
                                            segment_numbers=[1])
    assert np.array_equal(arr[..., 0] != 0, sphere_mask[slices])
    assert seg.SegmentSequence[0].SegmentLabel == "Lesion"
    assert _dciodvfy_errors(path) == []


def test_sr_holds_finding_and_measurements(ct_image, ct_dir, sphere_mask, tmp_path):
    import highdicom as hd

    from meddx.explain import mask_to_lesions

    refs = ct_image.metadata["dicom_refs"]
    lesions = mask_to_lesions(sphere_mask, spacing=ct_image)
    path = write_dicom_sr(ct_image, {"predicted": "liver lesion", "probability": 0.87, "threshold": 0.4, "model": "cnn3d",
                                     "positive_class": "liver lesion"},
                          lesions, ct_dir, tmp_path / "report_sr.dcm")
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert ev.StudyInstanceUID == refs["StudyInstanceUID"]
    series = ev.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == refs["SeriesInstanceUID"]
    assert sorted(s.ReferencedSOPInstanceUID for s in series.ReferencedSOPSequence) == sorted(refs["SOPInstanceUIDs"])
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.PatientID == pydicom_header(ct_dir).PatientID  # derived objects keep the patient module
    groups = sr.content.get_image_measurement_groups()
    first = groups[0]
    assert first.tracking_identifier == "meddx finding: liver lesion"
    assert (first.finding_type.value, first.finding_type.scheme_designator) == ("52988006", "SCT")  # Lesion
    assert [g.finding_type.value for g in groups[1:]] == ["52988006"] * len(lesions)
    assert all(it.ConceptNameCodeSequence[0].CodingSchemeDesignator in ("SCT", "DCM", "UCUM")
               for it in _items(sr.ContentSequence))
    algo = [it for it in _items(sr.ContentSequence) if it.ConceptNameCodeSequence[0].CodeValue == "111001"]
    assert algo and algo[0].TextValue == "cnn3d"  # Algorithm Name
    params = [it.TextValue for it in _items(sr.ContentSequence)
              if it.ConceptNameCodeSequence[0].CodeValue == "111002"]  # Algorithm Parameters
    assert "threshold=0.4" in params
    # measurements: finding probability, lesion diameter (mm) and volume (mL)
    values = {}
    def walk(items):
        for it in items:
            if it.ValueType == "NUM":
                values.setdefault(it.ConceptNameCodeSequence[0].CodeMeaning, []).append(
                    (float(it.MeasuredValueSequence[0].NumericValue),
                     it.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue))
            if "ContentSequence" in it:
                walk(it.ContentSequence)
    walk(sr.ContentSequence)
    assert values["Probability"][0] == (pytest.approx(0.87), "1")
    assert values["Volume"][0][1] == "ml"
    assert values["Volume"][0][0] == pytest.approx(lesions[0]["volume_ml"], rel=1e-6)
    assert values["Diameter"][0] == (pytest.approx(max(lesions[0]["extent_mm"]), rel=1e-6), "mm")
    assert _dciodvfy_errors(path) == []


def _items(seq):
    for it in seq:
        yield it
        if "ContentSequence" in it:
            yield from _items(it.ContentSequence)


def pydicom_header(ct_dir):
    import pydicom

    return pydicom.dcmread(sorted(ct_dir.iterdir())[0], stop_before_pixels=True)


@pytest.mark.parametrize("name,positive,code", [
    ("normal", None, "17621005"), ("Lesion", None, "52988006"), ("tumour", None, "108369006"),
    ("malignant", None, "21594007"), ("no_tumor", None, "17621005"), ("glioma_grade_x", "glioma_grade_x", "263654008"),
    ("other", "glioma_grade_x", "17621005"), ("class 7", None, "404684003"),
])
def test_finding_code_is_standard(name, positive, code):
    from meddx.report.dicom_out import finding_code

    c = finding_code(name, positive)
    assert c.value == code and c.scheme_designator == "SCT"


def test_sr_out_of_distribution(ct_image, ct_dir, tmp_path):
    import highdicom as hd

    from meddx.report.dicom_out import OOD_TEXT

    lesion = {"id": 1, "extent_mm": (5.0, 6.0, 7.0), "volume_ml": 0.1, "bbox_px": ((3, 5), (0, 1), (0, 1))}
    path = write_dicom_sr(ct_image, {"predicted": "lesion", "probability": 0.9, "in_distribution": False},
                          [lesion], ct_dir, tmp_path / "ood_sr.dcm")
    sr = hd.sr.srread(path)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 and OOD_TEXT in groups[0].tracking_identifier
    assert groups[0].finding_type.value == "82334004"  # SCT Indeterminate: no diagnosis
    assert not [it for it in _items(sr.ContentSequence) if it.ValueType == "NUM"]


def test_encapsulated_pdf(ct_dir, tmp_path):
    import pydicom

    from meddx.errors import InputError
    from meddx.report.dicom_out import write_encapsulated_pdf

    pdf = b"%PDF-1.4\n%minimal test document\n%%EOF"  # odd length: padded in DICOM, length recorded
    src = pydicom_header(ct_dir)
    path = write_encapsulated_pdf(pdf, src, tmp_path / "report.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength] == pdf
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.PatientID == src.PatientID and ds.PatientName == src.PatientName
    assert ds.SourceInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert _dciodvfy_errors(path) == []
    with pytest.raises(InputError, match="not a PDF"):
        write_encapsulated_pdf(b"<html>", src, tmp_path / "x.dcm")


def test_secondary_capture(ct_image, ct_dir, tmp_path):
    import pydicom

    from meddx.explain import save_overlay

    z = 64
    heat = np.zeros((512, 512))
    heat[280:320, 180:220] = 1.0
    png = save_overlay(ct_image.array[z], heat, tmp_path / "overlay.png")
    src = pydicom.dcmread(sorted(ct_dir.iterdir())[0], stop_before_pixels=True)
    path = write_secondary_capture(read_png_rgb(png), src, tmp_path / "overlay_sc.dcm")
    sc = pydicom.dcmread(path)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.SeriesInstanceUID != src.SeriesInstanceUID
    assert sc.PhotometricInterpretation == "RGB"
    assert np.array_equal(sc.pixel_array, read_png_rgb(png))
    assert _dciodvfy_errors(path) == []


def test_seg_rejects_wrong_shape(ct_image, ct_dir, tmp_path):
    from meddx.errors import InputError

    with pytest.warns(UserWarning), pytest.raises(InputError, match="does not match"):
        write_dicom_seg(ct_image, np.ones((3, 4, 5), bool), ct_dir, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_sr_and_seg_from_sources_without_type2_attributes(ct_image, ct_dir, sphere_mask, tmp_path):
    """A source may legally lack type-2 patient/study attributes (PatientSex, StudyID ...); the derived SR and SEG
    are still written, with those attributes present and empty."""
    import highdicom as hd
    import pydicom

    dropped = ("PatientSex", "StudyID", "PatientBirthDate", "ReferringPhysicianName", "AccessionNumber")
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted(p for p in ct_dir.iterdir() if p.is_file()):
        ds = pydicom.dcmread(f)
        for kw in dropped:
            if kw in ds:
                delattr(ds, kw)
        ds.save_as(src / f.name)
    sr = hd.sr.srread(write_dicom_sr(ct_image, {"predicted": "lesion", "probability": 0.9}, [], src,
                                     tmp_path / "sr.dcm"))
    assert all(kw in sr and not sr[kw].value for kw in dropped)
    with pytest.warns(UserWarning, match="FrameOfReferenceUID"):
        seg = hd.seg.segread(write_dicom_seg(ct_image, sphere_mask, src, tmp_path / "seg.dcm"))
    assert "PatientSex" in seg and not seg.PatientSex
