"""Sequence classifiers end to end through the CLI: train on videos, evaluate, predict, and the dispatch rules.

Synthetic data: short mp4 clips of noise, half with a bright blob moving across ("present"), each patient
holding one clip of each class, so every patient-grouped split has both classes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from meddx.cli import main  # noqa: E402

POCUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "pocus" / "manifest.csv"


def _clip(present: bool, rng: np.random.Generator, n: int, size: int = 48) -> list[np.ndarray]:
    """`n` grey frames of noise; with `present`, a Gaussian blob moving left to right."""
    y, x = np.mgrid[:size, :size]
    x0, y0, vx = rng.uniform(8, 16), rng.uniform(10, size - 10), rng.uniform(1.5, 2.5)
    frames = []
    for t in range(n):
        f = 60 + rng.normal(0, 12, (size, size))
        if present:
            f += 150 * np.exp(-((x - x0 - vx * t) ** 2 + (y - y0) ** 2) / 18.0)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def _write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            rgb = np.repeat(f[..., None], 3, axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """manifest.csv of 48 clips (24 patients x {absent, present}), 10-15 frames of 48 x 48 each."""
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(24):
        for label in ("absent", "present"):
            name = f"p{p:02d}_{label}.mp4"
            _write_mp4(root / name, _clip(label == "present", rng, int(rng.integers(10, 16))))
            rows.append({"path": name, "label": label, "patient_id": f"P{p:02d}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def run(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seq") / "RUN"
    code = main(["train", str(videos), "--model", "lstm", "--frames", "8", "--image-size", "32", "--epochs", "15",
                 "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_a_sequence_run(run: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "sequence_classifier" and info["model"] == "lstm" and info["task"] == "binary"
    assert info["sequence"] == {"frames": 8, "sampling": "uniform", "frame_size": 32}
    assert info["input_shape"] == [8, 32, 32, 3]
    assert info["positive_class"] == "present" and info["threshold"] is not None
    assert info["val_metrics"]["n"] > 0
    for name in ("model.keras", "history.csv", "splits.csv", "val_metrics.json"):
        assert (run / name).is_file(), name


def test_evaluate_on_the_test_split(run: Path, videos: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(run), str(videos), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] >= 4
    assert metrics["auc"] > 0.8
    assert len(metrics["auc_ci"]) == 2 and "ece" in metrics
    assert (tmp_path / "roc.png").is_file()


def test_predict_agrees_with_the_python_api(run: Path, videos: Path, tmp_path: Path) -> None:
    import meddx

    clip = videos.parent / "p00_present.mp4"
    assert main(["predict", str(run), str(clip), "--out", str(tmp_path)]) == 0
    with open(tmp_path / "predictions.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    image = meddx.read_image(clip)
    pred = meddx.load(run).predict(image)
    assert abs(float(row["p_present"]) - pred.probabilities["present"]) < 1e-6
    assert row["predicted"] == pred.label
    assert int(row["n_slices"]) == image.n_frames
    assert [int(k) for k in row["key_slices"].split()] == pred.key_slices


def test_training_and_inference_share_the_frame_input(run: Path, videos: Path) -> None:
    import meddx
    from meddx.train.config import TrainConfig
    from meddx.train.sequence import read_sequences
    from meddx.data.datasets import load_dataset

    predictor = meddx.load(run)
    ds = load_dataset(videos)
    cfg = TrainConfig(model="lstm", frames=8)
    x_train = read_sequences(ds, np.arange(2), predictor.preprocessing, cfg)
    x_infer = np.concatenate([predictor.frames_of(meddx.read_image(ds.items[i]))[0] for i in range(2)])
    np.testing.assert_array_equal(x_train, x_infer)


def test_sequence_model_names_match_the_models_package() -> None:
    from meddx.models.sequence import SEQUENCE_MODELS
    from meddx.train.sequence import sequence_model_names

    assert set(sequence_model_names()) == set(SEQUENCE_MODELS)


def test_no_model_on_sequences_picks_the_default(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "RUN"
    assert main(["train", str(videos), "--frames", "4", "--image-size", "16", "--epochs", "1", "--out", str(out)]) == 0
    assert "using --model lstm (default for sequences)" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["model"] == "lstm"


def test_all_frames_with_padding(videos: Path, tmp_path: Path) -> None:
    import meddx

    out = tmp_path / "RUN"
    assert main(["train", str(videos), "--model", "gru", "--frame-sampling", "all", "--image-size", "16",
                 "--epochs", "1", "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["sequence"]["sampling"] == "all" and info["input_shape"][0] is None
    pred = meddx.load(out).predict(meddx.read_image(videos.parent / "p01_absent.mp4"))
    assert (pred.frame_importance > 0).sum() == pred.frame_importance.size  # every frame is used


def test_image_model_on_videos_is_one_clear_error(videos: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    code = main(["train", str(videos), "--model", "cnn", "--epochs", "1", "--out", str(tmp_path / "RUN")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("meddx: error: ") and "\n" not in err
    assert "is a sequence" in err and "--model lstm" in err


def test_bad_frame_options_are_config_errors(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", str(videos), "--model", "lstm", "--frames", "0", "--out", str(tmp_path / "RUN")])
    assert code == 2 and "frames must be" in capsys.readouterr().err
    code = main(["train", str(videos), "--model", "cnn25d", "--frame-sampling", "all", "--out", str(tmp_path / "R2")])
    assert code == 2 and "cnn25d needs a fixed number of frames" in capsys.readouterr().err


@pytest.mark.parametrize("finished_run", [False, True], ids=["new", "overwrite"])
def test_a_damaged_video_is_one_error_and_no_run_folder(videos: Path, tmp_path: Path, finished_run: bool,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A truncated mp4 in the manifest: one error line, and the RUN folder as it was (none, or a finished run
    that --overwrite would have replaced: it is kept, not cleared before the videos were read)."""
    rows = list(csv.DictReader(open(videos, newline="")))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes((videos.parent / rows[5]["path"]).read_bytes()[:600])  # truncated mid-stream
    rows[5] = {**rows[5], "path": str(damaged)}
    rows = [{**r, "path": r["path"] if Path(r["path"]).is_absolute() else str(videos.parent / r["path"])}
            for r in rows]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "RUN"
    before = {}
    if finished_run:
        run.mkdir()
        before = {"run.json": b'{"kind": "sequence_classifier"}', "model.keras": b"the finished model"}
        for name, data in before.items():
            (run / name).write_bytes(data)
    code = main(["train", str(manifest), "--model", "lstm", "--frames", "4", "--image-size", "16", "--epochs", "1",
                 "--out", str(run)] + (["--overwrite"] if finished_run else []))
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("meddx: error: ")]
    assert code == 2 and len(errors) == 1 and "damaged.mp4" in errors[0], errors
    if finished_run:
        assert {f.name: f.read_bytes() for f in run.iterdir()} == before
    else:
        assert not run.exists()  # not even resume.json


@pytest.mark.slow
@pytest.mark.skipif(not POCUS.is_file(), reason="POCUS videos not available")
def test_pocus_smoke(tmp_path: Path) -> None:
    """Six real lung-ultrasound videos (the smallest 3 covid, 3 regular): trains 2 epochs and predicts."""
    with open(POCUS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked: list[dict[str, str]] = []
    for label in ("covid", "regular"):
        files = sorted((r for r in rows if r["label"] == label),
                       key=lambda r: (POCUS.parent / r["path"]).stat().st_size)
        for split, n in (("train", 2), ("val", 1)):  # one new patient per split, so the splits share no patient
            used = {q["patient_id"] for q in picked}
            patient = next(r["patient_id"] for r in files if r["patient_id"] not in used)
            picked += [{**r, "path": str(POCUS.parent / r["path"]), "split": split}
                       for r in files if r["patient_id"] == patient][:n]
    manifest = tmp_path / "pocus6.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "patient_id", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picked)
    out = tmp_path / "RUN"
    assert main(["train", str(manifest), "--model", "lstm", "--frames", "8", "--image-size", "32", "--epochs", "2",
                 "--allow-rare-classes", "--out", str(out)]) == 0  # 6 videos: 2-3 per class, a smoke test
    assert main(["predict", str(out), picked[0]["path"], "--out", str(tmp_path / "pred")]) == 0
    with open(tmp_path / "pred" / "predictions.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["predicted"] in ("covid", "regular")
