"""Sequence studies beyond slice folders: a 4D NIfTI (time last) is a sequence of 2D frames for train / predict /
report, and predicting or reporting a long video decodes only the frames the model samples (never the whole clip).

Synthetic data: 4D NIfTIs of 20 x 20 x 3 voxels x 5 time points (noise; "present" adds a bright square on the middle
slice at time points 1-3), 6 patients x {absent, present}; an mp4 of 120 frames for the decoding checks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from meddx.transforms.frames import read_study, sampled_display  # noqa: E402

T, Z = 5, 3
SMALL = ["--frames", "4", "--image-size", "16", "--epochs", "1", "--seed", "0"]


def _nifti4d(path: Path, present: bool, rng: np.random.Generator, z: int = Z, spacing: float = 2.0) -> Path:
    a = (60 + 10 * rng.standard_normal((20, 20, z, T))).astype(np.float32)  # NIfTI order (x, y, z, t)
    if present:
        a[6:14, 6:14, z // 2, 1:4] += 120
    nib.save(nib.Nifti1Image(a, np.diag([0.8, 0.7, spacing, 1.0])), path)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _mp4(path: Path, n: int, h: int = 32, w: int = 40) -> Path:
    av = pytest.importorskip("av")
    rng = np.random.default_rng(n)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            f = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
            f[:, (3 * i) % w] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _no_full_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything decodes a whole video (`VideoStudy.array`, `read_video`, `read_frames`)."""
    import meddx.io.video as video

    def boom(*_a, **_k):
        raise AssertionError("the whole video was decoded")

    monkeypatch.setattr(video, "_read", boom)


# -- no TensorFlow ----------------------------------------------------------------------------------------------

def test_4d_nifti_reads_as_2d_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = _nifti4d(tmp_path / "s.nii.gz", True, rng, z=5, spacing=2.5)
    raw = np.asanyarray(nib.load(str(p)).dataobj)  # (x, y, z, t)
    study = read_study(p)
    assert study.is_sequence and study.spatial_ndim == 2 and study.array.shape == (T, 20, 20)
    assert np.array_equal(study.array, raw[:, :, 2, :].transpose(2, 1, 0))  # middle slice of each time point
    assert study.spacing == pytest.approx((0.7, 0.8)) and study.metadata["frames_from"].startswith("slice 2 of 5")
    # the slice's own position: origin moved 2 slices x 2.5 mm along z
    assert study.origin[2] == pytest.approx(5.0)
    one = read_study(_nifti4d(tmp_path / "one.nii.gz", False, rng, z=1))  # (x, y, 1, t): its only slice
    assert one.array.shape == (T, 20, 20) and one.spatial_ndim == 2
    vol = tmp_path / "vol.nii.gz"  # a 3D volume stays a volume (a stack of slices), not a time series
    nib.save(nib.Nifti1Image(raw[..., 0], np.eye(4)), vol)
    assert read_study(vol).spatial_ndim == 3 and not read_study(vol).is_sequence


def test_lazy_video_knows_its_shape_and_reuses_its_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.io import read_image
    from meddx.io.video import VideoStudy

    path = _mp4(tmp_path / "clip.mp4", 60)
    full = read_image(path).array
    study = read_study(path)
    assert isinstance(study, VideoStudy)
    assert study.shape == full.shape and study.nbytes == full.nbytes and not study.decoded
    sampled = study.sample(lambda n: np.linspace(0, n - 1, 6).round().astype(int))
    assert np.array_equal(sampled.frames, full[sampled.indices])
    import meddx.io.video as video

    monkeypatch.setattr(video, "read_frames_at", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    again = study.sample(sampled.indices[::-1])  # the frames just sampled: no second decode
    assert np.array_equal(again.frames, full[sampled.indices[::-1]])
    disp = sampled_display(study, sampled.indices)
    assert disp.shape == full.shape[:3] and disp.dtype == np.float32 and not study.decoded
    idx = np.unique(sampled.indices)
    others = np.setdiff1d(np.arange(len(full)), idx)
    assert (disp[others] == 0).all() and (disp[idx].reshape(len(idx), -1).max(axis=1) > 0.5).all()
    grey = full[idx].astype(np.float32).mean(axis=-1)
    lo, hi = np.percentile(grey, [0.5, 99.5])
    assert np.allclose(disp[idx], np.clip((grey - lo) / (hi - lo), 0, 1), atol=1e-5)
    assert sampled_display(read_image(path), idx) is None  # a decoded study keeps the whole-array display


# -- a tiny sequence RUN trained on 4D NIfTIs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def run4d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("keras")
    from meddx.cli import main

    root = tmp_path_factory.mktemp("nifti4d")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(6):
        for label in ("absent", "present"):
            name = f"p{p}_{label}.nii.gz"
            _nifti4d(root / name, label == "present", rng)
            rows.append({"path": name, "label": label, "patient_id": f"P{p}"})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    run = root / "RUN"
    assert main(["train", str(root / "manifest.csv"), "--model", "gru", *SMALL, "--out", str(run)]) == 0
    return run, root


def test_train_predict_report_on_4d_nifti(run4d: tuple[Path, Path], tmp_path: Path) -> None:
    import json

    from meddx.cli import main

    run, _ = run4d
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "sequence_classifier" and info["model"] == "gru"
    rng = np.random.default_rng(7)
    new = _nifti4d(tmp_path / "new.nii.gz", True, rng)
    single = _nifti4d(tmp_path / "single.nii.gz", False, rng, z=1)
    assert main(["predict", str(run), str(new), str(single), "--out", str(tmp_path / "pred")]) == 0
    rows = _rows(tmp_path / "pred" / "predictions.csv")
    assert len(rows) == 2 and all(r["predicted"] in ("absent", "present") for r in rows)
    assert all(int(r["n_slices"]) == T for r in rows)  # one frame per time point
    assert main(["report", str(run), str(new), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Frame importance" in html and "sequence of 2D image" in html
    assert (tmp_path / "rep" / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_long_video_is_never_decoded_whole(run4d: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from meddx.cli import main
    from meddx.infer import load
    from meddx.io import read_image

    run, _ = run4d
    clip = _mp4(tmp_path / "long.mp4", 120)
    reference = load(run).predict(read_image(clip))  # the whole clip decoded: what sampling must reproduce
    monkeypatch.setenv("MEDDX_CACHE", str(tmp_path / "cache"))
    _no_full_decode(monkeypatch)
    study = read_study(clip)
    pred = load(run).predict(study)
    assert not study.decoded
    assert pred.probabilities == pytest.approx(reference.probabilities, abs=1e-6)
    assert np.array_equal(pred.frame_importance, reference.frame_importance)
    assert pred.key_slices == reference.key_slices and pred.display.shape == (120, 32, 40)
    for k in pred.key_slices:  # the key frames the report shows are the real frames
        assert np.allclose(pred.display[k], reference.display[k], atol=0.02)
    # the commands: read-ahead, prediction and the report never decode the whole clip either
    assert main(["predict", str(run), str(clip), "--out", str(tmp_path / "pred")]) == 0
    assert int(_rows(tmp_path / "pred" / "predictions.csv")[0]["n_slices"]) == 120
    assert main(["report", str(run), str(clip), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "120 × 32 × 40 × 3" in html and "Frame importance" in html
