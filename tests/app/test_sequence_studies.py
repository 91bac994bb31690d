"""Sequence studies end to end: the Python API routes like the CLI (one shared decision), predict/report read a
folder of numbered slice images as ONE study for a sequence RUN, and bad inputs are one clear line, exit 2, with
nothing written.

Synthetic data: per study a folder of 6 numbered 24 x 24 PNG slices (noise; "present" adds a bright blob on
the middle slices), 10 patients x {absent, present}, so every patient-grouped split has both classes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from meddx.cli import main  # noqa: E402
from tests.files import write_manifest  # noqa: E402

SMALL = ["--frames", "4", "--image-size", "16", "--epochs", "2", "--seed", "0"]


def _slices(folder: Path, present: bool, rng: np.random.Generator, n: int = 6, size: int = 24) -> Path:
    from PIL import Image as PILImage

    folder.mkdir(parents=True)
    y, x = np.mgrid[:size, :size]
    cy, cx = rng.uniform(8, 16, 2)
    for t in range(n):
        f = 60 + rng.normal(0, 10, (size, size))
        if present and 1 <= t <= 4:
            f += 150 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 12.0)
        PILImage.fromarray(np.clip(f, 0, 255).astype(np.uint8)).save(folder / f"slice_{t + 1:02d}.png")
    return folder


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.csv of 20 slice folders (10 patients x {absent, present})."""
    root = tmp_path_factory.mktemp("stacks")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(10):
        for label in ("absent", "present"):
            _slices(root / f"p{p:02d}_{label}", label == "present", rng)
            rows.append({"path": f"p{p:02d}_{label}", "label": label, "patient_id": f"P{p:02d}"})
    return write_manifest(root / "manifest.csv", rows)


@pytest.fixture(scope="module")
def seq_run(stacks: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seqrun") / "RUN"
    assert main(["train", str(stacks), "--model", "gru", *SMALL, "--out", str(out)]) == 0
    return out


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("meddx: error: ") and "\n" not in err, err
    return err


# -- one decision for the CLI and the Python API -----------------------------------------------------------------

def test_choose_trainer_routes_like_the_cli(stacks: Path, tmp_path: Path) -> None:
    from meddx.app.common import choose_trainer
    from meddx.train.config import TrainConfig
    from meddx.train.fit import train as train_classifier
    from meddx.train.segmentation import train_segmenter
    from meddx.train.sequence import train_sequence_classifier

    fit, cfg = choose_trainer(stacks, TrainConfig())  # sequence data, no model named: the default head
    assert fit is train_sequence_classifier and cfg.model == "lstm"
    fit, cfg = choose_trainer(stacks, TrainConfig(model="tcn"), "tcn")
    assert fit is train_sequence_classifier and cfg.model == "tcn"
    fit, cfg = choose_trainer(stacks, TrainConfig(model="transformer"))  # e.g. from a config file
    assert fit is train_sequence_classifier and cfg.model == "transformer"
    fit, cfg = choose_trainer(stacks, TrainConfig(), "cnn")  # an image model named: its own clear error later
    assert fit is train_classifier and cfg.model == "cnn"
    fit, _ = choose_trainer(stacks, TrainConfig(task="segmentation"))
    assert fit is train_segmenter
    from PIL import Image as PILImage

    images = tmp_path / "images"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(images / label / "x1.png")
    fit, cfg = choose_trainer(images, TrainConfig())
    assert fit is train_classifier and cfg.model == "cnn"


def test_python_api_trains_and_evaluates_a_sequence_model(stacks: Path, tmp_path: Path) -> None:
    import meddx
    from meddx.infer import SequenceClassifier

    predictor = meddx.train(stacks, model="gru", frames=4, image_size=16, epochs=1, seed=0, out=tmp_path / "RUN")
    assert isinstance(predictor, SequenceClassifier) and predictor.info.to_dict()["model"] == "gru"
    metrics = meddx.evaluate(predictor, stacks)
    assert metrics["split"] == "test" and metrics["n"] >= 2
    assert metrics["frames"]["frames"] == 4  # evaluate_sequences' own field: the sequence evaluation ran
    # the same numbers as `meddx evaluate`
    assert main(["evaluate", str(tmp_path / "RUN"), str(stacks), "--out", str(tmp_path / "ev")]) == 0
    cli = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert cli["n"] == metrics["n"] and cli["auc"] == pytest.approx(metrics["auc"])


def test_python_api_picks_the_sequence_default_without_a_model(stacks: Path) -> None:
    from meddx.app.api import train

    predictor = train(stacks, frames=4, image_size=16, epochs=1)
    assert predictor.kind == "sequence_classifier" and predictor.info.to_dict()["model"] == "lstm"
    assert predictor.path is None


# -- a folder of numbered slices is one study for a sequence RUN ------------------------------------------------

def test_predict_reads_a_slice_folder_as_one_study(seq_run: Path, stacks: Path, tmp_path: Path) -> None:
    import meddx
    from meddx.transforms.frames import read_study

    folder = stacks.parent / "p03_present"
    assert main(["predict", str(seq_run), str(folder), str(stacks.parent / "p03_absent"),
                 "--out", str(tmp_path), "--include-phi"]) == 0  # rows named by their inputs
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["input"]).name for r in rows] == ["p03_present", "p03_absent"]
    assert rows[0]["n_slices"] == "6"
    pred = meddx.load(seq_run).predict(read_study(folder))
    assert abs(float(rows[0]["p_present"]) - pred.probabilities["present"]) < 1e-6
    assert [int(k) for k in rows[0]["key_slices"].split()] == pred.key_slices


def test_report_on_a_slice_folder(seq_run: Path, stacks: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    assert main(["report", str(seq_run), str(stacks.parent / "p04_present"), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "<h2>Frame importance</h2>" in html and "frame_importance.png" in html
    assert "(importance " in html and "heatmap overlay" not in html
    assert "6 × 24 × 24" in html  # one study: the folder's 6 slices
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_classifier_runs_still_expand_image_folders(stacks: Path, tmp_path: Path) -> None:
    """A classifier RUN reads a folder of PNGs as separate images, one row each (unchanged)."""
    run = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "demo_cls"
    if not (run / "run.json").is_file():
        pytest.skip("fixture RUN tests/fixtures/runs/demo_cls absent")
    assert main(["predict", str(run), str(stacks.parent / "p00_absent"), "--out", str(tmp_path),
                 "--include-phi"]) == 0  # rows named by their inputs
    with open(tmp_path / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["input"]).name for r in rows] == [f"slice_{t:02d}.png" for t in range(1, 7)]


# -- bad input: one line, exit 2, nothing written ----------------------------------------------------------------

def test_mixed_manifest_is_one_clear_error(stacks: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image as PILImage

    still = tmp_path / "still.png"
    PILImage.fromarray(np.full((24, 24), 80, np.uint8)).save(still)
    mixed = write_manifest(tmp_path / "mixed.csv",
                           [{"path": str(stacks.parent / f"p{p:02d}_{label}"), "label": label, "patient_id": f"P{p}"}
                            for p in range(3) for label in ("absent", "present")]
                           + [{"path": str(still), "label": "absent", "patient_id": "P9"}])
    for extra in ([], ["--model", "lstm"], ["--model", "cnn"]):
        out = tmp_path / f"RUN{len(extra)}{extra[-1] if extra else ''}"
        code = main(["train", str(mixed), *SMALL, "--out", str(out), *extra])
        err = _one_error_line(capsys)
        assert code == 2, extra
        assert err.startswith(f"meddx: error: {mixed}: mixes sequences and single images"), err
        assert "still.png" in err and "p00_absent" in err
        assert not out.exists(), "nothing may be written for bad input"


def test_mixed_manifest_through_the_python_api(stacks: Path, tmp_path: Path) -> None:
    import meddx
    from meddx.errors import DataError
    from meddx.train.sequence import train_sequence_classifier
    from meddx.train.config import TrainConfig

    still = tmp_path / "one.jpg"
    from PIL import Image as PILImage

    PILImage.fromarray(np.full((24, 24), 80, np.uint8)).save(still)
    mixed = write_manifest(tmp_path / "mixed.csv", [{"path": str(still), "label": "absent", "patient_id": "A"},
                                                     {"path": str(stacks.parent / "p00_present"), "label": "present",
                                                      "patient_id": "B"}])
    with pytest.raises(DataError, match="mixes sequences and single images"):
        meddx.train(mixed, epochs=1, out=tmp_path / "R1")
    with pytest.raises(DataError, match="mixes sequences and single images"):
        train_sequence_classifier(mixed, tmp_path / "R2", TrainConfig(model="lstm"))
    assert not (tmp_path / "R1").exists() and not (tmp_path / "R2").exists()


@pytest.mark.parametrize("command", ["predict", "report"])
def test_sequence_run_given_a_still_image(command: str, seq_run: Path, stacks: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    still = stacks.parent / "p00_absent" / "slice_01.png"
    out = tmp_path / "out"
    code = main([command, str(seq_run), str(stacks.parent / "p01_present"), str(still), "--out", str(out)])
    err = _one_error_line(capsys)
    assert code == 2
    assert err == (f"meddx: error: {still}: is a single image; this RUN's sequence model needs a video, cine, "
                   "DICOM series or a folder of numbered slice images")
    assert not out.exists() or not any(out.iterdir())
    assert not (out / "predictions.csv").exists() and not (out / "report.html").exists()


def test_sequence_run_given_a_2d_dicom(seq_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A single 2D image whose name does not tell (DICOM): refused when read, before anything is written."""
    pydicom_data = pytest.importorskip("pydicom.data")
    try:
        dcm = Path(pydicom_data.get_testdata_file("CT_small.dcm"))
    except (ValueError, OSError) as exc:
        pytest.skip(f"pydicom test file CT_small.dcm unavailable: {exc}")
    out = tmp_path / "out"
    code = main(["predict", str(seq_run), str(dcm), "--out", str(out)])
    err = _one_error_line(capsys)
    assert code == 2 and err.startswith(f"meddx: error: {dcm}: is not a frame sequence")
    assert not (out / "predictions.csv").exists()
