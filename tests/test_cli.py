"""The CLI contract end to end on small generated data, and one clear line for each kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from meddx.cli import main


def _one_error_line(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("meddx: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """Folder-per-class PNGs: 'lesion' slices carry a bright blob, 'normal' ones do not."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for label in ("lesion", "normal"):
        (root / label).mkdir()
        for i in range(60):
            img = rng.integers(20, 90, size=(24, 24)).astype(np.uint8)
            if label == "lesion":
                r, c = rng.integers(3, 15, size=2)
                img[r:r + 6, c:c + 6] = 230
            PILImage.fromarray(img).save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained_run(folder_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(folder_data), "--out", str(run), "--epochs", "8", "--batch-size", "32"]) == 0
    return run


def test_train_evaluate_predict(trained_run, folder_data, tmp_path):
    info = json.loads((trained_run / "run.json").read_text())
    assert info["class_names"] == ["lesion", "normal"]
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run), str(folder_data), "--split", "test", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("auc", "accuracy", "auc_ci", "n", "per_class", "threshold", "ece", "brier"):
        assert key in m
    assert m["n"] == 18 and m["auc"] > 0.8 and m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]
    for plot in ("roc.png", "pr.png", "confusion.png", "calibration.png"):
        with PILImage.open(out / plot) as im:
            assert im.size[0] > 300
    # the test split never overlaps training: splits.csv of the RUN says so
    rows = (trained_run / "splits.csv").read_text().splitlines()[1:]
    test_items = {r.split(",")[0] for r in rows if r.split(",")[2] == "test"}
    train_items = {r.split(",")[0] for r in rows if r.split(",")[2] in ("train", "val")}
    assert len(test_items) == 18 and not test_items & train_items

    pred = tmp_path / "pred"
    files = sorted((folder_data / "lesion").glob("*.png"))[:3]
    assert main(["predict", str(trained_run), *map(str, files), "--out", str(pred), "--heatmaps"]) == 0
    lines = (pred / "predictions.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("input,predicted,probability")
    assert len(list((pred / "heatmaps").glob("*_overlay.png"))) == 3
    assert (pred / "lesions.csv").is_file()


def test_info_prints_geometry(shared_data, capsys):
    assert main(["info", str(shared_data / "dicom" / "ct_abdomen_ircadb")]) == 0
    out = capsys.readouterr().out
    assert "129 x 512 x 512" in out and "1.6, 0.57, 0.57" in out and "CT" in out


def test_missing_split_is_one_line(trained_run, tmp_path, capsys, shared_data):
    rc = main(["evaluate", str(trained_run), str(shared_data / "medmnist" / "breastmnist_trainval.npz"),
               "--out", str(tmp_path / "e")])
    _one_error_line(capsys, rc, "no 'test' split", "available: train, val")
    assert not (tmp_path / "e" / "metrics.json").exists()


# -- bad input: one clear line naming the file, non-zero exit, nothing half-written ----------

def test_truncated_dicom(tmp_path, capsys):
    import pydicom.data

    src = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    bad = tmp_path / "trunc.dcm"
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    _one_error_line(capsys, main(["info", str(bad)]), str(bad))


def test_text_file_named_dcm(tmp_path, capsys):
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is not an image\n")
    _one_error_line(capsys, main(["info", str(bad)]), str(bad), "not a DICOM")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["train", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    _one_error_line(capsys, rc, str(tmp_path / "empty"), "empty")
    assert not (tmp_path / "run" / "run.json").exists()


def test_csv_naming_missing_file(tmp_path, capsys):
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\ngone.png,y\n")
    rc = main(["train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "run")])
    _one_error_line(capsys, rc, "m.csv", "gone.png")


def test_npz_without_keys(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8)))
    rc = main(["train", str(tmp_path / "x.npz"), "--out", str(tmp_path / "run")])
    _one_error_line(capsys, rc, "x.npz", "train_images")


def test_image_with_nans(tmp_path, capsys):
    import nibabel as nib

    arr = np.ones((8, 8, 4), dtype=np.float32)
    arr[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    (tmp_path / "run").mkdir()
    rc = main(["predict", str(tmp_path / "run"), str(tmp_path / "nan.nii.gz"), "--out", str(tmp_path / "p")])
    _one_error_line(capsys, rc, "run.json is missing")
    from meddx.io import read_image
    from meddx.errors import InputError

    with pytest.raises(InputError, match="NaN"):
        read_image(tmp_path / "nan.nii.gz")


def test_3d_model_given_2d_data(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(24, 12, 12, 12)).astype(np.uint8)
    y = (np.arange(24) % 2).astype(np.uint8)[:, None]
    np.savez(tmp_path / "vol.npz", train_images=x[:16], train_labels=y[:16], val_images=x[16:], val_labels=y[16:])
    assert main(["train", str(tmp_path / "vol.npz"), "--out", str(tmp_path / "run3d"), "--epochs", "1"]) == 0
    capsys.readouterr()
    png = tmp_path / "slice.png"
    PILImage.fromarray(np.zeros((12, 12), np.uint8)).save(png)
    rc = main(["predict", str(tmp_path / "run3d"), str(png), "--out", str(tmp_path / "p")])
    _one_error_line(capsys, rc, str(png), "is a 2D image", "this model reads 3D volumes")
    assert not (tmp_path / "p" / "predictions.csv").exists()


def test_unknown_label_at_evaluate(trained_run, folder_data, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(folder_data, data)
    (data / "lesion").rename(data / "tumour")
    rc = main(["evaluate", str(trained_run), str(data), "--out", str(tmp_path / "e")])
    _one_error_line(capsys, rc, "tumour")
