"""De-identification of metadata and `format_info`, and explicit PHI access via `read_phi`."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from meddx.io import read_image
from meddx.io.deid import PHI_KEYWORDS, read_phi
from meddx.io.info import format_info
from meddx.utils import to_jsonable

from tests.conftest import require


def _phi_values(ds: pydicom.Dataset) -> list[str]:
    values = []
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "InstitutionName",
               "ReferringPhysicianName", "AccessionNumber", "InstitutionAddress"):
        v = str(ds.get(kw, "") or "").strip()
        # StudyDate is an allowed field; in the IRCAD CT the birth date equals the study date.
        if len(v) >= 3 and v != str(ds.get("StudyDate", "")):
            values.append(v)
    return values


def _assert_clean(image, ds: pydicom.Dataset) -> None:
    meta_text = json.dumps(to_jsonable(image.metadata))
    info_text = format_info(image)
    phi = _phi_values(ds)
    assert phi, "test needs a file with identifiers to be meaningful"
    for value in phi:
        assert value not in meta_text and value not in info_text, value
    for kw in PHI_KEYWORDS:
        assert kw not in image.metadata and kw not in info_text


def test_ct_series_metadata_has_no_phi(shared_data: Path) -> None:
    folder = require(shared_data / "dicom" / "ct_abdomen_ircadb")
    image = read_image(folder)
    ds = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    _assert_clean(image, ds)
    refs = image.metadata["dicom_refs"]
    assert refs["SeriesInstanceUID"] == str(ds.SeriesInstanceUID)
    assert refs["StudyInstanceUID"] == str(ds.StudyInstanceUID)
    assert refs["SOPClassUID"] == str(ds.SOPClassUID)
    phi = read_phi(folder)
    assert phi["PatientName"] == str(ds.PatientName)


def test_ct_small_metadata_has_no_phi() -> None:
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom test data not installed")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    image = read_image(path)
    _assert_clean(image, ds)
    assert image.metadata["Modality"] == "CT"
    assert image.metadata["TransferSyntax"] == "Explicit VR Little Endian"
    phi = read_phi(path)
    assert phi["PatientName"] == str(ds.PatientName) and phi["PatientID"] == str(ds.PatientID)


def test_read_phi_non_dicom_is_empty(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    assert read_phi(tmp_path / "a.txt") == {}


def test_format_info_fmri(shared_data: Path) -> None:
    image = read_image(require(shared_data / "dicom" / "mr_fmri_ge"))
    text = format_info(image)
    lines = text.splitlines()
    assert any(line.startswith("shape") and "10 x 15 x 64 x 64" in line for line in lines)
    assert any(line.startswith("spacing (mm)") and "5, 3.75, 3.75" in line for line in lines)
    assert any(line.startswith("modality") and line.rstrip().endswith("MR") for line in lines)
    assert any(line.startswith("files skipped") and "README-Series.txt" in line for line in lines)
    assert any(line.startswith("series chosen") for line in lines)
    assert any(line.startswith("orientation") and "LPS" in line for line in lines)
    assert "intensity range" in text and "150 SOP instance" in text


def test_format_info_png(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((5, 7), 9, dtype=np.uint8)).save(tmp_path / "x.png")
    text = format_info(read_image(tmp_path / "x.png"))
    assert "5 x 7" in text and "2D image" in text and "pixel units" in text
