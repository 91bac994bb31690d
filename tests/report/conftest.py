"""Fixtures for report tests: real CT series / 2D DICOM made into the `study` dict predict gives."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

def gaussian_blob(shape, centre, sigma):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma))
    return np.exp(-0.5 * d2)


@pytest.fixture(scope="session")
def ct_image(ct_dir):
    from meddx.io import read_image

    return read_image(ct_dir)


@pytest.fixture(scope="session")
def ct_phi_values(ct_dir) -> list[str]:
    """The source's PatientName/PatientID/PatientBirthDate values (non-empty), read with pydicom."""
    import pydicom

    f = sorted(p for p in ct_dir.iterdir() if p.is_file())[0]
    ds = pydicom.dcmread(f, stop_before_pixels=True)
    return phi_strings(ds)


def phi_strings(ds) -> list[str]:
    vals = []
    for kw in ("PatientName", "PatientID", "PatientBirthDate"):
        v = str(ds.get(kw, "") or "")
        if v:
            vals.append(v)
            if kw == "PatientName":
                vals += [c for c in v.split("^") if len(c) > 3 and c.lower() != "patient"]
            if kw == "PatientBirthDate" and len(v) == 8:
                vals.append(f"{v[:4]}-{v[4:6]}-{v[6:]}")
    assert vals, "test data should carry identifiers"
    return vals


def run_info(positive="lesion", threshold=0.42):
    return {"model": "cnn3d", "meddx_version": "0.1.0", "created": "2024-03-05T10:00:00", "task": "binary",
            "class_names": ["normal", positive], "positive_class": positive, "threshold": threshold,
            "data": {"source": "demo.npz", "summary": {"train": {"normal": 40, positive: 38},
                                                        "val": {"normal": 10, positive: 9}}},
            "val_metrics": {"auc": 0.913, "auc_ci": [0.85, 0.96], "n": 19, "sensitivity": 0.889,
                            "specificity": 0.8, "per_class": []}}


@pytest.fixture(scope="session")
def ct_study(ct_image, ct_dir):
    """A 3D study dict: display downsampled 4x in-plane, a blob heatmap, lesions in mm/mL."""
    from meddx.explain import heatmap_to_lesions

    disp = np.clip(ct_image.array[:, ::4, ::4].astype(np.float32), -200, 300)
    sp = (ct_image.spacing[0], ct_image.spacing[1] * 4, ct_image.spacing[2] * 4)
    heat = gaussian_blob(disp.shape, (70, 70, 50), (6, 8, 8))
    heat += 0.8 * gaussian_blob(disp.shape, (30, 40, 90), (4, 5, 5))
    heat = (heat / heat.max()).astype(np.float32)
    lesions = heatmap_to_lesions(heat, 0.5, spacing=sp)
    scores = list(0.1 + 0.85 * heat.reshape(heat.shape[0], -1).max(axis=1))
    return {"source": str(ct_dir), "image": ct_image, "display": disp, "probs": [0.09, 0.91],
            "class_names": ["normal", "lesion"], "predicted": "lesion", "probability": 0.91,
            "positive_class": "lesion", "threshold": 0.42, "heatmap": heat, "lesions": lesions,
            "slice_scores": scores, "key_slices": [70, 68, 30], "spacing": sp}


@pytest.fixture(scope="session")
def small_dcm():
    pydicom_data = pytest.importorskip("pydicom.data")
    try:
        return Path(pydicom_data.get_testdata_file("CT_small.dcm"))
    except (ValueError, OSError) as exc:
        pytest.skip(f"pydicom test file CT_small.dcm unavailable: {exc}")


def pdf_text(pdf: Path) -> str:
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (Debian poppler-utils) not installed")
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def pdf_first_page_nonblank(pdf: Path, tmp: Path) -> None:
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm (Debian poppler-utils) not installed")
    from PIL import Image as PILImage

    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "2", str(pdf), str(tmp / "page")], check=True)
    pages = sorted(tmp.glob("page*.png"))
    assert pages, "pdftoppm produced no page"
    for page in pages:
        a = np.asarray(PILImage.open(page).convert("L"))
        assert a.std() > 5 and (a < 128).mean() > 0.002, f"{page.name} looks blank"


@pytest.fixture
def small_study(small_dcm):
    """A one-image (2D DICOM) study with a heatmap and one candidate lesion."""
    from meddx.explain import heatmap_to_lesions
    from meddx.io import read_image

    img = read_image(small_dcm)
    disp = img.array.astype(np.float32)
    if disp.ndim == 3:
        disp = disp[..., 0]
    heat = gaussian_blob(disp.shape, (40, 70), (6, 6)).astype(np.float32)
    return {"source": str(small_dcm), "image": img, "display": disp, "probs": [0.55, 0.45],
            "class_names": ["normal", "abnormal"], "predicted": "normal", "probability": 0.55,
            "positive_class": "abnormal", "threshold": 0.5, "heatmap": heat,
            "lesions": heatmap_to_lesions(heat, 0.5, spacing=img.spacing), "slice_scores": None,
            "key_slices": None, "spacing": img.spacing}
