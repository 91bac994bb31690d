"""Per-study report on real data: HTML + PDF open, carry the finding/images/lesion table, no PHI by default."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from meddx.report import confidence_statement, render_batch, render_study_report

from .conftest import pdf_first_page_nonblank, pdf_text, phi_strings, run_info


def _all_names(folder: Path) -> str:
    return "\n".join(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _check_images(html: str, out: Path) -> list[str]:
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert srcs
    for s in srcs:
        assert not s.startswith(("/", "file:", "data:")), s
        p = out / s
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", s
    return srcs


def test_confidence_statement_levels():
    assert confidence_statement(0.95, 0.5)[0] == "high"
    assert confidence_statement(0.05, 0.5)[0] == "high"
    assert confidence_statement(0.65, 0.5)[0] == "moderate"
    level, text = confidence_statement(0.46, 0.42)
    assert level == "borderline" and "review carefully" in text
    assert confidence_statement(0.5, None, 0.45)[0] == "borderline"
    assert confidence_statement(0.8, None, 0.1)[0] == "high"


def test_a_model_validated_near_chance_backs_no_confidence(small_study, tmp_path):
    from meddx.report.study import study_confidence

    good = run_info()
    weak = dict(good, val_metrics={**good["val_metrics"], "auc": 0.43, "auc_ci": [None, None],
                                   "warnings": ["all 15 cases come from one patient/source"]})
    study = {**small_study, "probability": 0.99, "probs": [0.01, 0.99], "predicted": "abnormal"}
    assert study_confidence(study, good)[0] == "high"
    level, text = study_confidence(study, weak)
    assert level == "borderline" and text.startswith("Unreliable model: it scored a validation AUC of 0.43")
    assert "confidence" not in text and text.endswith("the probability is 0.49 from the operating threshold 0.50.")
    assert study_confidence(study, dict(weak, kind="segmenter"))[0] == "high"  # a segmenter's check is its Dice
    res = render_batch([study], weak, tmp_path / "weak")
    html = res["reports"][0]["html"].read_text()
    assert "Unreliable model" in html and "Validation caveats" in html and "one patient/source" in html
    assert "<td>borderline</td>" in res["index"].read_text()


def test_ct_series_report_deidentified(ct_study, ct_phi_values, tmp_path):
    out = tmp_path / "rep"
    paths = render_study_report(ct_study, run_info(), out)
    html = paths["html"].read_text()
    assert paths["pdf"].is_file() and paths["pdf"].read_bytes()[:5] == b"%PDF-"
    # the finding, threshold statistics, confidence, model card, disclaimer
    assert "Predicted: lesion (probability 0.910)" in html
    assert "sensitivity 0.889" in html and "specificity 0.800" in html
    assert "High confidence" in html
    assert "0.913 (0.850–0.960)" in html and "cnn3d" in html
    assert "not replace" in html
    # geometry header
    assert "129 × 512 × 512" in html and "z 1.6" in html
    # key images: key slices, overview, per-slice chart
    srcs = _check_images(html, out)
    assert "key_slice_070.png" in srcs and "volume_overview.png" in srcs and "slice_probabilities.png" in srcs
    # lesion table: both blobs, volume in mL
    assert "Volume (mL)" in html
    n_rows = len(re.findall(r"<tr><td>\d+</td><td>slices ", html))
    assert n_rows == len(ct_study["lesions"]) == 2
    vol = ct_study["lesions"][0]["volume_ml"]
    assert f"{vol:.2f}" in html
    # no identifiers anywhere: HTML, PDF text, file names, no source path
    text = pdf_text(paths["pdf"])
    assert "Predicted: lesion" in text and "Candidate lesions" in text
    names = _all_names(out)
    for v in ct_phi_values:
        assert v not in html, v
        assert v not in text, v
        assert v not in names, v
    assert str(ct_study["source"]) not in html
    pdf_first_page_nonblank(paths["pdf"], tmp_path)


def test_ct_series_report_with_phi(ct_study, ct_dir, ct_phi_values, tmp_path):
    from meddx.io.deid import read_phi

    study = dict(ct_study, phi=read_phi(ct_dir))
    paths = render_study_report(study, run_info(), tmp_path / "phi", include_phi=True)
    html = paths["html"].read_text()
    text = pdf_text(paths["pdf"])
    for v in ct_phi_values:
        assert v in html, v
    assert study["phi"]["PatientName"] in text


def test_2d_dicom_report(small_study, small_dcm, tmp_path):
    import pydicom

    phi = phi_strings(pydicom.dcmread(small_dcm, stop_before_pixels=True))
    paths = render_study_report(small_study, run_info("abnormal", 0.5), tmp_path / "r2d")
    html = paths["html"].read_text()
    assert "Predicted: normal (probability 0.550)" in html
    assert "Borderline, review carefully" in html
    assert _check_images(html, tmp_path / "r2d") == ["key_image.png"]
    assert "Area (mm²)" in html and len(re.findall(r"<tr><td>1</td><td>centre", html)) == 1
    text = pdf_text(paths["pdf"])
    assert "Predicted: normal" in text and "Borderline" in text
    for v in phi:
        assert v not in html and v not in text and v not in _all_names(tmp_path / "r2d"), v
    pdf_first_page_nonblank(paths["pdf"], tmp_path)


def test_mednist_jpeg_without_heatmap_and_batch(shared_data, small_study, tmp_path):
    from meddx.io import read_image

    jpgs = sorted((shared_data / "mednist" / "Hand").glob("*.jpeg"))[:1]
    if not jpgs:
        pytest.skip("MedNIST JPEGs absent")
    img = read_image(jpgs[0])
    disp = img.array.astype(np.float32)
    s1 = {"source": str(jpgs[0]), "image": img, "display": disp, "probs": [0.02, 0.9, 0.08],
          "class_names": ["CXR", "Hand", "HeadCT"], "predicted": "Hand", "probability": 0.9,
          "positive_class": None, "threshold": None, "heatmap": None, "lesions": [], "slice_scores": None,
          "key_slices": None, "spacing": img.spacing}
    info = dict(run_info(), positive_class=None, threshold=None, class_names=["CXR", "Hand", "HeadCT"])
    res = render_batch([s1, small_study], info, tmp_path / "batch")
    assert [p["html"].parent.name for p in res["reports"]] == ["study_001", "study_002"]
    index = res["index"].read_text()
    assert 'href="study_001/report.html"' in index and 'href="study_002/report.pdf"' in index
    assert str(jpgs[0]) not in index and "CT_small" not in index
    h1 = res["reports"][0]["html"].read_text()
    assert "High confidence" in h1 and "No candidate lesion" in h1
    for p in res["reports"]:
        assert p["pdf"].read_bytes()[:5] == b"%PDF-"


def test_reportlab_pdf_is_used_when_forced(small_study, tmp_path):
    paths = render_study_report(small_study, run_info("abnormal", 0.5), tmp_path / "m", pdf_engine="reportlab")
    assert paths["pdf_engine"] == "reportlab"
    assert not list((tmp_path / "m").glob(".*")), "temporary files left behind"
