"""`meddx.load(RUN).predict(meddx.read_image(path))` gives what `meddx predict RUN path` writes, for every kind
of input, with heatmaps / masks in the input's shape (RUN fixtures in tests/fixtures/runs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import meddx
from meddx.cli import main
from meddx.infer import Classifier

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "tests" / "fixtures" / "runs"
SHARED = ROOT.parent / "shared" / "data"
INPUTS = {
    "dicom_series": SHARED / "dicom" / "ct_abdomen_ircadb",
    "nifti_volume": SHARED / "nifti" / "nifti" / "brain2_image.nii.gz",
    "video": SHARED / "pocus" / "convex" / "Pneu_from_article_rippey.mp4",
}


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meddx.data.synthetic import write_synthetic_folder

    manifest = write_synthetic_folder(tmp_path_factory.mktemp("demo"), n=24, size=64, seed=3)
    return sorted((manifest.parent / "lesion").glob("*[0-9].png"))[0]


def _input(kind: str, png: Path) -> Path:
    if kind == "png":
        return png
    path = INPUTS[kind]
    if not path.exists():
        pytest.skip(f"{path} absent (../shared/data)")
    return path


def _cli_row(run: Path, path: Path, out: Path) -> dict[str, str]:
    # --allow-ood: the numbers are compared; the CT, NIfTI and video are outside demo_cls's training distribution
    assert main(["predict", str(run), str(path), "--out", str(out), "--allow-ood"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("kind", ["png", "dicom_series", "nifti_volume", "video"])
def test_classifier_matches_the_cli(kind: str, png: Path, tmp_path: Path) -> None:
    path = _input(kind, png)
    clf = meddx.load(RUNS / "demo_cls")
    assert isinstance(clf, Classifier)
    image = meddx.read_image(path)
    pred = clf.predict(image)
    row = _cli_row(RUNS / "demo_cls", path, tmp_path / "cli")
    assert row["predicted"] == pred.label
    for name, p in pred.probabilities.items():
        assert abs(round(p, 6) - float(row[f"p_{name}"])) <= 1e-6, (name, p, row)
    spatial = tuple(image.array.shape[: image.spatial_ndim + int(image.is_sequence)])
    assert pred.heatmap is not None and pred.heatmap.shape == spatial
    assert 0.0 <= float(pred.heatmap.min()) and float(pred.heatmap.max()) <= 1.0 + 1e-6
    for les in pred.lesions:
        if "mask" in les:
            assert les["mask"].shape == spatial
    batch = clf.predict_batch([image, image], heatmap=False)
    for b in batch:
        for name, p in pred.probabilities.items():
            assert abs(b.probabilities[name] - p) <= 1e-5


@pytest.mark.parametrize("kind", ["png", "nifti_volume"])
def test_segmenter_matches_the_cli(kind: str, png: Path, tmp_path: Path) -> None:
    path = _input(kind, png)
    seg = meddx.load(RUNS / "demo_seg")
    image = meddx.read_image(path)
    pred = seg.predict(image)
    spatial = tuple(image.spatial_shape)
    assert pred.mask.shape == spatial and pred.mask.dtype == bool
    assert pred.probability_map.shape == spatial
    row = _cli_row(RUNS / "demo_seg", path, tmp_path / "cli")
    assert int(row["n_voxels"]) == int(pred.mask.sum()) == pred.details["n_voxels"]
    assert int(row["n_lesions"]) == pred.details["n_lesions"] == len(pred.lesions)
    saved = np.load(row["mask"]).astype(bool)
    assert np.array_equal(saved, pred.mask)


def test_segmenter_refuses_a_video(png: Path) -> None:
    path = _input("video", png)
    seg = meddx.load(RUNS / "demo_seg")
    with pytest.raises(meddx.MeddxError, match="sequence"):
        seg.predict(meddx.read_image(path))


def test_options_are_constructor_arguments() -> None:
    from meddx.errors import ConfigError

    seg = meddx.load(RUNS / "demo_seg", stack_min_fraction=0.5)
    assert seg.settings.stack_min_fraction == 0.5
    assert seg.info.segmentation.stack_min_fraction == 0.25  # the RUN's own setting is not edited
    with pytest.raises(ConfigError, match="segmentation runs only"):
        meddx.load(RUNS / "demo_cls", tta=True)
    with pytest.raises(ConfigError, match="2D segmentation"):
        meddx.load(RUNS / "demo_cls", stack_min_fraction=0.5)
